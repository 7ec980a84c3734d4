//! A RabbitMQ node that wants TLS with client certificates: AMQPS and
//! management HTTPS with `fail_if_no_peer_cert = true`, and the
//! `rabbitmq_auth_mechanism_ssl` plugin for EXTERNAL login. Plain AMQP and
//! HTTP stay open on the node too, for the fixtures' own set-up.
//!
//! The certificates are made at test time with the `openssl` command: a CA,
//! a server certificate for `localhost` only (so `127.0.0.1` is a host-name
//! mismatch), a client certificate whose CN is the broker user
//! [`CLIENT_USER`], and a second CA the node does not trust with a client
//! certificate of its own. They are made once per machine, beside the test
//! nodes, and reused (the node restarts when its files change), under a file
//! lock like the node itself.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

use crate::support::{self, BrokerSpec, Node, Version};

/// The broker user the client certificate logs in as (its CN).
pub const CLIENT_USER: &str = "delaytopo-tls-client";

/// The TLS node's slot (see tests/support/node.rs): AMQP/management on slot
/// 2's ports, AMQPS/HTTPS on slot 3's.
const SLOT: u16 = 2;
pub const AMQPS_PORT: u16 = 5713;
pub const HTTPS_PORT: u16 = 15713;

/// The certificate files, by role.
pub struct Certificates {
    pub dir: PathBuf,
}

impl Certificates {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }
    pub fn untrusted_ca(&self) -> PathBuf {
        self.path("untrusted-ca.pem")
    }
}

pub struct TlsBroker {
    pub node: Node,
    pub certs: Certificates,
}

/// The TLS node of this run, started on first use and reused afterwards.
pub fn tls_broker() -> &'static TlsBroker {
    static BROKER: std::sync::OnceLock<TlsBroker> = std::sync::OnceLock::new();
    BROKER.get_or_init(|| {
        std::thread::scope(|scope| {
            scope
                .spawn(start)
                .join()
                .expect("starting the TLS test broker failed")
        })
    })
}

fn start() -> TlsBroker {
    let certs = certificates();
    let read = |name: &str| std::fs::read(certs.path(name)).unwrap();
    let version = Version::from_env();
    let name = match version {
        Version::V3_10 => "tls-3-10",
        Version::V4_0 => "tls-4-0",
    };
    let mut spec = BrokerSpec::new(name, version, SLOT + 2 * (version == Version::V4_0) as u16)
        .amqps(AMQPS_PORT + 2 * (version == Version::V4_0) as u16)
        .https(HTTPS_PORT + 2 * (version == Version::V4_0) as u16)
        .plugin("rabbitmq_auth_mechanism_ssl")
        .file("ca.pem", read("ca.pem"))
        .file("server.pem", read("server.pem"))
        .file("server.key", read("server.key"));
    for prefix in ["ssl_options", "management.ssl"] {
        spec = spec
            .conf(&format!("{prefix}.cacertfile = {{dir}}/ca.pem"))
            .conf(&format!("{prefix}.certfile = {{dir}}/server.pem"))
            .conf(&format!("{prefix}.keyfile = {{dir}}/server.key"))
            .conf(&format!("{prefix}.verify = verify_peer"))
            .conf(&format!("{prefix}.fail_if_no_peer_cert = true"));
    }
    let spec = spec
        .conf("auth_mechanisms.1 = PLAIN")
        .conf("auth_mechanisms.2 = AMQPLAIN")
        .conf("auth_mechanisms.3 = EXTERNAL")
        .conf("ssl_cert_login_from = common_name");
    let node = spec.start();
    let broker = TlsBroker { node, certs };
    // The certificate's user, without a password: it can only log in by EXTERNAL.
    broker.api(
        "PUT",
        &format!("users/{CLIENT_USER}"),
        Some(json!({"password_hash": "", "tags": ""})),
    );
    broker
}

impl TlsBroker {
    pub fn amqps_port(&self) -> u16 {
        self.node.spec.amqps_port.unwrap()
    }

    pub fn https_port(&self) -> u16 {
        self.node.spec.https_port.unwrap()
    }

    /// A management API call as guest over the node's plain HTTP port.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/api/{path}", self.node.management_url());
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let mut request = support::http()
                        .request(method.clone(), &url)
                        .basic_auth("guest", Some("guest"));
                    if let Some(body) = body {
                        request = request.json(&body);
                    }
                    let response = request.send().unwrap_or_else(|e| panic!("{url}: {e}"));
                    let status = response.status();
                    let text = response.text().unwrap_or_default();
                    assert!(status.is_success(), "{method} {url}: {status} {text}");
                    serde_json::from_str(&text).unwrap_or(Value::Null)
                })
                .join()
                .unwrap()
        })
    }
}

/// A vhost of its own on the TLS node, deleted on drop; guest and the
/// certificate's user may do everything in it.
pub struct TlsVhost {
    pub name: String,
    pub broker: &'static TlsBroker,
    topology: tempfile::NamedTempFile,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TlsVhost {
    pub fn new(test: &str) -> TlsVhost {
        let broker = tls_broker();
        let name = format!(
            "delaytopo-test-{test}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        broker.api("PUT", &format!("vhosts/{}", support::encode(&name)), None);
        for user in ["guest", CLIENT_USER] {
            broker.api(
                "PUT",
                &format!("permissions/{}/{user}", support::encode(&name)),
                Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
            );
        }
        TlsVhost {
            name,
            broker,
            topology: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    /// `amqps://USERINFO@HOST:port/vhost?QUERY`.
    pub fn amqps_url(&self, userinfo: &str, host: &str, query: &str) -> String {
        format!(
            "amqps://{userinfo}@{host}:{}/{}{query}",
            self.broker.amqps_port(),
            support::encode(&self.name)
        )
    }

    pub fn https_url(&self, host: &str) -> String {
        format!("https://{host}:{}", self.broker.https_port())
    }

    /// `delaytopo` with the given TLS options, aimed at this vhost over AMQPS
    /// (guest, host `localhost`) and HTTPS.
    pub fn delaytopo(&self, tls: &[(&str, PathBuf)]) -> assert_cmd::Command {
        self.delaytopo_at(
            &self.amqps_url("guest:guest", "localhost", ""),
            Some(&self.https_url("localhost")),
            tls,
        )
    }

    pub fn delaytopo_at(
        &self,
        url: &str,
        management: Option<&str>,
        tls: &[(&str, PathBuf)],
    ) -> assert_cmd::Command {
        let mut command = self.delaytopo_without_url();
        command.args(["--url", url]);
        if let Some(management) = management {
            command.args(["--management-url", management]);
        }
        for (option, path) in tls {
            command.arg(option).arg(path);
        }
        command
    }

    /// `delaytopo` with only the fixture's topology file: its `broker:` keys decide.
    pub fn delaytopo_without_url(&self) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::cargo_bin("delaytopo").unwrap();
        command
            .env_clear()
            .arg("-f")
            .arg(self.topology.path())
            .args(["--no-progress", "--timeout", "15"]);
        command
    }

    /// The trusted CA and the client certificate, as options.
    pub fn client_identity(&self) -> Vec<(&'static str, PathBuf)> {
        self.identity("ca.pem", "client")
    }

    /// `--tls-ca-cert-file CA --tls-cert-file CLIENT.pem --tls-key-file CLIENT.key`.
    pub fn identity(&self, ca: &str, client: &str) -> Vec<(&'static str, PathBuf)> {
        let certs = &self.broker.certs;
        vec![
            ("--tls-ca-cert-file", certs.path(ca)),
            ("--tls-cert-file", certs.path(&format!("{client}.pem"))),
            ("--tls-key-file", certs.path(&format!("{client}.key"))),
        ]
    }

    pub fn set_topology(&self, yaml: &str) {
        std::fs::write(self.topology.path(), yaml).unwrap();
    }
}

impl Drop for TlsVhost {
    fn drop(&mut self) {
        self.broker.api(
            "DELETE",
            &format!("vhosts/{}", support::encode(&self.name)),
            None,
        );
    }
}

/// The certificate files, made once per machine.
fn certificates() -> Certificates {
    // Beside the nodes (one set per machine, like the nodes): every checkout's
    // tests then give the TLS node the same files and never restart it.
    let dir = support::test_brokers_dir().join("tls-certificates");
    std::fs::create_dir_all(&dir).unwrap();
    let lock_file = std::fs::File::create(dir.join(".lock")).unwrap();
    let mut lock = fd_lock::RwLock::new(lock_file);
    let _held = lock.write().unwrap();
    let certs = Certificates { dir: dir.clone() };
    // Valid for 30 days: a day before they expire, new ones are made.
    let fresh = openssl(
        &dir,
        &["x509", "-checkend", "86400", "-noout", "-in", "ca.pem"],
    );
    if fresh && dir.join("untrusted-client.pem").exists() {
        return certs;
    }
    for (ca, subject) in [
        ("ca", "delaytopo test CA"),
        ("untrusted-ca", "delaytopo untrusted CA"),
    ] {
        assert!(openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                &format!("/CN={subject}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        ));
    }
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, subject, ca, ext) in [
        ("server", "localhost", "ca", "server.ext"),
        ("client", CLIENT_USER, "ca", "client.ext"),
        (
            "untrusted-client",
            CLIENT_USER,
            "untrusted-ca",
            "client.ext",
        ),
    ] {
        assert!(openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={subject}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        ));
        assert!(openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-days",
                "30",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.pem"),
            ],
        ));
    }
    certs
}

/// Runs `openssl ARGS` in `dir`; whether it succeeded.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("the TLS tests need the openssl command: {e}"))
        .status
        .success()
}
