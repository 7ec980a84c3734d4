//! RabbitMQ nodes of the test run's own, so integration tests never depend
//! on whatever listens on 5672 (its plugins, its file handles, its vhosts).
//!
//! # Which broker the tests use
//!
//! Chosen when the tests RUN, by `DELAYTOPO_TEST_BROKER`:
//! - `3.10` (default): Debian 12's `rabbitmq-server`, run from the host.
//! - `4.0`: Debian 13's package, run with `chroot` from a root file system
//!   that `tests/brokers prepare 4.0` builds once (as root) and caches
//!   outside the checkout (`DELAYTOPO_ROOTFS`, default
//!   `/var/cache/delaytopo/rabbitmq-trixie`).
//! - `DELAYTOPO_TEST_AMQP=host:port` with `DELAYTOPO_TEST_MANAGEMENT=url`:
//!   a broker that already runs (guest/guest); no node is started.
//!
//! # Nodes
//!
//! A [`BrokerSpec`] describes a node: name, version, ports, extra
//! `rabbitmq.conf` lines, plugins and files (certificates). [`BrokerSpec::start`]
//! makes sure that exact node runs and returns a [`Node`]: under a file lock
//! (test binaries run one after another, tests within one in parallel), it
//! reuses the node when it answers with the same configuration, and otherwise
//! (re)starts it with fresh data. Nodes are left running for the next test
//! binary; `tests/brokers stop` stops them all (`.ci/run` does at the end).
//!
//! Everything of node NAME lives in `$TMPDIR/delaytopo-test-brokers/NAME/`
//! (or `$DELAYTOPO_TEST_BROKERS/NAME/`): `node.env`, `rabbitmq.conf`,
//! `enabled_plugins`, `advanced.config`, the extra files, `mnesia/`, `log/`
//! and `start.log`. Erlang node name: `delaytopo-NAME@localhost`.
//!
//! # Ports
//!
//! Slot `n` (0..30) is AMQP `5710+n`, management `15710+n`, Erlang
//! distribution `25710+n`. Slots 0 and 1 are the default 3.10 and 4.0 nodes;
//! 2..=9 are for TLS nodes (their AMQPS/HTTPS ports taken from further slots'
//! AMQP/management ports); 10..=29 for clusters of three (10-12 and 13-15 for
//! the 3.10 and 4.0 clusters, [`cluster`]). Nodes of one test file: 20/21
//! (safety), 22/23 (alarms), 24/25 (too_large: a small `max_message_size`),
//! 28 (migrate_faults restarts it).
//!
//! ```ignore
//! let tls = BrokerSpec::new("tls-3-10", Version::V3_10, 2)
//!     .amqps(5713)
//!     .file("ca.pem", ca_pem)
//!     .conf("ssl_options.cacertfile = {dir}/ca.pem"); // {dir}: the node's directory as it sees it
//! let node = tls.start();
//! node.amqp_host_port(); node.management_url(); node.rabbitmqctl(&["list_queues"]);
//! ```
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The RabbitMQ versions in the test matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V3_10,
    V4_0,
}

impl Version {
    /// `DELAYTOPO_TEST_BROKER` (3.10 when unset).
    pub fn from_env() -> Version {
        match std::env::var("DELAYTOPO_TEST_BROKER").as_deref() {
            Err(_) | Ok("") | Ok("3.10") => Version::V3_10,
            Ok("4.0") => Version::V4_0,
            Ok(other) => panic!("DELAYTOPO_TEST_BROKER={other}: expected 3.10 or 4.0"),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Version::V3_10 => "3.10",
            Version::V4_0 => "4.0",
        }
    }

    /// The root file system the node runs in; None for the host's own package.
    fn rootfs(self) -> Option<PathBuf> {
        match self {
            Version::V3_10 => None,
            Version::V4_0 => Some(
                std::env::var_os("DELAYTOPO_ROOTFS")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/var/cache/delaytopo/rabbitmq-trixie")),
            ),
        }
    }
}

/// Slot 0's ports; slot `n` adds `n` to each.
const AMQP_BASE: u16 = 5710;
const MANAGEMENT_BASE: u16 = 15710;
const DIST_BASE: u16 = 25710;
const SLOTS: u16 = 30;

/// What a node is: enough to start it, and to tell whether a running node is it.
#[derive(Clone, Debug)]
pub struct BrokerSpec {
    pub name: String,
    pub version: Version,
    pub amqp_port: u16,
    pub management_port: u16,
    pub dist_port: u16,
    pub amqps_port: Option<u16>,
    pub https_port: Option<u16>,
    /// `management.path_prefix`, as behind a reverse proxy ("" for none).
    pub management_path_prefix: String,
    conf: Vec<String>,
    plugins: Vec<String>,
    files: Vec<(String, Vec<u8>)>,
}

impl BrokerSpec {
    /// Node `name` of `version` on the ports of `slot` (see the module doc).
    pub fn new(name: &str, version: Version, slot: u16) -> BrokerSpec {
        assert!(
            slot < SLOTS,
            "slot {slot}: the test nodes have slots 0..{SLOTS}"
        );
        BrokerSpec {
            name: name.to_string(),
            version,
            amqp_port: AMQP_BASE + slot,
            management_port: MANAGEMENT_BASE + slot,
            dist_port: DIST_BASE + slot,
            amqps_port: None,
            https_port: None,
            management_path_prefix: String::new(),
            conf: Vec::new(),
            plugins: vec!["rabbitmq_management".to_string()],
            files: Vec::new(),
        }
    }

    /// An AMQPS listener; its `ssl_options.*` go in through [`BrokerSpec::conf`].
    pub fn amqps(mut self, port: u16) -> BrokerSpec {
        self.amqps_port = Some(port);
        self
    }

    /// An HTTPS listener for the management API; `management.ssl.*` through `conf`.
    pub fn https(mut self, port: u16) -> BrokerSpec {
        self.https_port = Some(port);
        self
    }

    /// Serves the management API under `prefix` (e.g. `/rabbitmq`).
    pub fn management_path_prefix(mut self, prefix: &str) -> BrokerSpec {
        self.management_path_prefix = prefix.to_string();
        self.conf(&format!("management.path_prefix = {prefix}"))
    }

    /// A `rabbitmq.conf` line; `{dir}` stands for the node's directory as the
    /// node sees it (where [`BrokerSpec::file`] puts files).
    pub fn conf(mut self, line: &str) -> BrokerSpec {
        self.conf.push(line.to_string());
        self
    }

    /// A plugin besides the management plugin.
    pub fn plugin(mut self, name: &str) -> BrokerSpec {
        self.plugins.push(name.to_string());
        self
    }

    /// A file in the node's directory (e.g. a certificate).
    pub fn file(mut self, name: &str, contents: impl Into<Vec<u8>>) -> BrokerSpec {
        self.files.push((name.to_string(), contents.into()));
        self
    }

    pub fn node_name(&self) -> String {
        format!("delaytopo-{}@localhost", self.name)
    }

    /// The node's directory as the node sees it (inside its root file system).
    fn dir_seen_by_node(&self, dir: &Path) -> String {
        match self.version.rootfs() {
            Some(_) => format!("/run/delaytopo-test/{}", self.name),
            None => dir.display().to_string(),
        }
    }

    /// Every file `tests/brokers start` needs, by name relative to the node's directory.
    fn render(&self, dir: &Path) -> Vec<(String, Vec<u8>)> {
        let seen = self.dir_seen_by_node(dir);
        let rootfs = self
            .version
            .rootfs()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let env = format!(
            "node={}\nversion={}\nrootfs={rootfs}\namqp_port={}\nmanagement_port={}\ndist_port={}\n",
            self.node_name(),
            self.version.label(),
            self.amqp_port,
            self.management_port,
            self.dist_port
        );
        let mut conf = format!(
            "listeners.tcp.default = 127.0.0.1:{}\nmanagement.tcp.port = {}\nmanagement.tcp.ip = 127.0.0.1\n",
            self.amqp_port, self.management_port
        );
        if let Some(port) = self.amqps_port {
            conf.push_str(&format!("listeners.ssl.default = 127.0.0.1:{port}\n"));
        }
        if let Some(port) = self.https_port {
            conf.push_str(&format!(
                "management.ssl.port = {port}\nmanagement.ssl.ip = 127.0.0.1\n"
            ));
        }
        for line in &self.conf {
            conf.push_str(&line.replace("{dir}", &seen));
            conf.push('\n');
        }
        let plugins = format!("[{}].\n", self.plugins.join(","));
        let mut files = vec![
            ("node.env".to_string(), env.into_bytes()),
            ("rabbitmq.conf".to_string(), conf.into_bytes()),
            ("enabled_plugins".to_string(), plugins.into_bytes()),
        ];
        files.extend(self.files.iter().cloned());
        files
    }

    /// Makes sure this node runs with this configuration, and returns it.
    pub fn start(self) -> Node {
        let brokers = test_brokers_dir();
        let dir = brokers.join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        let lock_file = std::fs::File::create(brokers.join(format!("{}.lock", self.name))).unwrap();
        let mut lock = fd_lock::RwLock::new(lock_file);
        let _held = lock.write().unwrap();

        let node = Node { spec: self, dir };
        let files = node.spec.render(&node.dir);
        let same_files = files.iter().all(|(name, contents)| {
            std::fs::read(node.dir.join(name)).ok().as_ref() == Some(contents)
        });
        // A node of this name that this directory did not start (another
        // checkout, an older harness) is shared as it is, never stopped
        // under whoever started it.
        let started_here = node.dir.join("node.env").exists();
        match node.running_node_name() {
            Some(running) if running == node.spec.node_name() && (same_files || !started_here) => {
                return node
            }
            Some(running) if running == node.spec.node_name() => node.brokers_script("stop", &[]),
            Some(other) => panic!(
                "management port {} answers as node {other}, not {}: stop it, or choose \
                 another broker (DELAYTOPO_TEST_BROKER, DELAYTOPO_TEST_AMQP)",
                node.spec.management_port,
                node.spec.node_name()
            ),
            None => {}
        }
        if std::net::TcpStream::connect(("127.0.0.1", node.spec.amqp_port)).is_ok() {
            panic!(
                "port {} is taken by something that is not node {}",
                node.spec.amqp_port,
                node.spec.node_name()
            );
        }
        for (name, contents) in &files {
            std::fs::write(node.dir.join(name), contents).unwrap();
        }
        // A node that fails to come up (seen once for a 4.0 node in its
        // chroot on a loaded machine) gets one more try from a clean stop.
        if let Err(first) = node.try_brokers_script("start", &[]) {
            eprintln!(
                "node {}: start failed, trying once more:\n{first}",
                node.spec.name
            );
            let _ = node.try_brokers_script("stop", &[]);
            node.brokers_script("start", &[]);
        }
        node.wait_for_management(Duration::from_secs(120));
        node
    }
}

/// A running node of the test run.
#[derive(Debug)]
pub struct Node {
    pub spec: BrokerSpec,
    pub dir: PathBuf,
}

impl Node {
    pub fn amqp_host_port(&self) -> String {
        format!("127.0.0.1:{}", self.spec.amqp_port)
    }

    pub fn management_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}{}",
            self.spec.management_port, self.spec.management_path_prefix
        )
    }

    /// A management API call as guest on this node; panics on failure. The
    /// answer as JSON (Null when empty).
    pub fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/api/{path}", self.management_url());
        let mut request = super::http()
            .request(method.clone(), &url)
            .basic_auth("guest", Some("guest"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().unwrap();
        assert!(
            response.status().is_success(),
            "{method} {url}: {response:?}"
        );
        response.json().unwrap_or(Value::Null)
    }

    /// `rabbitmqctl` aimed at this node (in its root file system for 4.0).
    pub fn rabbitmqctl(&self, args: &[&str]) -> Output {
        let mut all = vec![self.spec.name.as_str()];
        all.extend_from_slice(args);
        script("ctl", &all).output().unwrap()
    }

    /// Kills the node's Erlang VM with SIGKILL, as a crash or the kernel's
    /// OOM killer would: no goodbye to its peers or its clients.
    pub fn kill(&self) {
        let pid_file = self.dir.join("pid");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let status = std::process::Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -KILL {pid}");
        // `resume` waits for the pid file the new VM writes.
        std::fs::remove_file(&pid_file).unwrap();
        let start = Instant::now();
        while self.running_node_name().is_some() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node {} outlived SIGKILL",
                self.spec.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts a killed node again on its data (its cluster membership and
    /// its replicas), and waits for its management API.
    pub fn resume(&self) {
        self.brokers_script("resume", &[]);
        self.wait_for_management(Duration::from_secs(120));
    }

    /// The node name the management port answers with, if it answers.
    fn running_node_name(&self) -> Option<String> {
        let overview = super::http()
            .get(format!("{}/api/overview", self.management_url()))
            .basic_auth("guest", Some("guest"))
            .timeout(Duration::from_secs(10))
            .send()
            .ok()?
            .json::<Value>()
            .ok()?;
        overview["node"].as_str().map(str::to_string)
    }

    fn wait_for_management(&self, limit: Duration) {
        let start = Instant::now();
        while self.running_node_name().as_deref() != Some(self.spec.node_name().as_str()) {
            assert!(
                start.elapsed() < limit,
                "node {} started but its management API does not answer on {}; see {}",
                self.spec.node_name(),
                self.management_url(),
                self.dir.join("log").display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `tests/brokers COMMAND NAME`, its output in the node's `start.log`.
    fn brokers_script(&self, command: &str, args: &[&str]) {
        if let Err(failure) = self.try_brokers_script(command, args) {
            panic!("{failure}");
        }
    }

    /// `tests/brokers COMMAND NAME`; on failure, what it said.
    fn try_brokers_script(&self, command: &str, args: &[&str]) -> Result<(), String> {
        let log_path = self.dir.join("start.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut all = vec![self.spec.name.as_str()];
        all.extend_from_slice(args);
        let status = script(command, &all)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap();
        if status.success() {
            return Ok(());
        }
        let said = std::fs::read_to_string(&log_path).unwrap_or_default();
        Err(format!(
            "tests/brokers {command} {}: {status}\n{said}(more in {})",
            self.spec.name,
            self.dir.join("log").display()
        ))
    }
}

/// Three nodes of `version` on slots `first_slot..first_slot + 3`, named
/// `{name}-1..3`, joined into one cluster (`rabbitmqctl join_cluster`).
pub fn cluster(name: &str, version: Version, first_slot: u16) -> Vec<Node> {
    let nodes: Vec<Node> = (0..3)
        .map(|i| BrokerSpec::new(&format!("{name}-{}", i + 1), version, first_slot + i).start())
        .collect();
    let lock_file =
        std::fs::File::create(test_brokers_dir().join(format!("{name}.cluster.lock"))).unwrap();
    let mut lock = fd_lock::RwLock::new(lock_file);
    let _held = lock.write().unwrap();
    let wanted: Vec<String> = nodes.iter().map(|n| n.spec.node_name()).collect();
    let members = |node: &Node| -> Vec<String> {
        let listed = super::http()
            .get(format!("{}/api/nodes", node.management_url()))
            .basic_auth("guest", Some("guest"))
            .send()
            .and_then(|r| r.json::<Value>())
            .unwrap_or(Value::Null);
        let mut running: Vec<String> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["running"].as_bool() == Some(true))
            .filter_map(|n| n["name"].as_str().map(str::to_string))
            .collect();
        running.sort();
        running
    };
    if members(&nodes[0]) == wanted {
        return nodes;
    }
    for node in &nodes[1..] {
        // A node restarted with fresh data, or one still in an old cluster:
        // force_reset forgets whatever it knew.
        for args in [
            vec!["stop_app"],
            vec!["force_reset"],
            vec!["join_cluster", wanted[0].as_str()],
            vec!["start_app"],
        ] {
            let output = node.rabbitmqctl(&args);
            assert!(
                output.status.success(),
                "rabbitmqctl {args:?} on {}: {}",
                node.spec.node_name(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    let start = Instant::now();
    while members(&nodes[0]) != wanted {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "cluster {name} did not form: {:?}",
            members(&nodes[0])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    nodes
}

/// Where the nodes' directories live: one place per machine, not per
/// checkout, because their ports are the machine's (two checkouts share the
/// running nodes instead of fighting over the ports).
pub fn test_brokers_dir() -> PathBuf {
    let dir = std::env::var_os("DELAYTOPO_TEST_BROKERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("delaytopo-test-brokers"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `tests/brokers COMMAND ARGS`, aimed at the machine's test-broker directory.
fn script(command: &str, args: &[&str]) -> Command {
    let mut script = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/brokers"));
    script
        .env("DELAYTOPO_TEST_BROKERS", test_brokers_dir())
        .arg(command)
        .args(args);
    script
}

/// The broker every [`super::TestVhost`] lives on.
pub struct Broker {
    pub amqp_host_port: String,
    pub management_url: String,
}

/// The broker of this run: an external one, or the default node of the
/// version `DELAYTOPO_TEST_BROKER` names, started if it is not running.
pub fn broker() -> &'static Broker {
    static BROKER: std::sync::OnceLock<Broker> = std::sync::OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(amqp_host_port) = std::env::var("DELAYTOPO_TEST_AMQP") {
            let management_url = std::env::var("DELAYTOPO_TEST_MANAGEMENT").unwrap_or_else(|_| {
                panic!("DELAYTOPO_TEST_AMQP is set: set DELAYTOPO_TEST_MANAGEMENT too")
            });
            return Broker {
                amqp_host_port,
                management_url,
            };
        }
        let version = Version::from_env();
        let (name, slot) = match version {
            Version::V3_10 => ("3-10", 0),
            Version::V4_0 => ("4-0", 1),
        };
        // Off the async runtime: the fixtures' blocking HTTP client cannot run on it.
        let node = std::thread::scope(|scope| {
            scope
                .spawn(|| BrokerSpec::new(name, version, slot).start())
                .join()
                .expect("starting the test broker failed")
        });
        Broker {
            amqp_host_port: node.amqp_host_port(),
            management_url: node.management_url(),
        }
    })
}

/// `major.minor.patch` of the broker under test, as its management API says.
pub fn broker_version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        super::api(reqwest::Method::GET, "overview", None)["rabbitmq_version"]
            .as_str()
            .expect("overview without rabbitmq_version")
            .to_string()
    })
}

/// Whether the broker under test is of `series` ("3.10", "4.", ...); when it
/// is not, prints that `test` is skipped, so a version-only test says so.
pub fn runs_on(series: &str, test: &str) -> bool {
    let version = broker_version();
    let matches = version.starts_with(series);
    if !matches {
        // Straight to the handle: the test harness captures `eprintln!` of
        // passing tests, and a skip should show in the run's output.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped, it holds on RabbitMQ {series}* and the broker is {version}"
        );
    }
    matches
}
