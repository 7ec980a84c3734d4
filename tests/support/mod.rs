//! Test fixtures against the real broker: every test gets its own freshly
//! created vhost, deleted when the fixture drops, so tests run in parallel
//! and never see each other. Broker access here is synchronous (management
//! HTTP API) to keep tests short and readable. The broker itself is started
//! by the tests (`node.rs`: which version, ports, TLS and cluster nodes).
#![allow(dead_code)]

pub mod celery;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod node;
pub use node::*;
pub mod proxy;

/// An example of this repository, built with the tests (`examples/<name>.rs`).
pub fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("debug/examples")
        .join(name)
}

/// `host:port` of the broker's AMQP listener (see [`node`] for how it is chosen).
pub fn amqp_host_port() -> &'static str {
    &broker().amqp_host_port
}

/// The broker's management API base URL.
pub fn management() -> &'static str {
    &broker().management_url
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn encode(vhost: &str) -> String {
    percent_encoding::utf8_percent_encode(vhost, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs blocking HTTP on its own thread, so fixtures also work inside async tests.
fn off_runtime<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(work).join().expect("fixture thread panicked"))
}

/// A management API call as guest; panics with the response on failure.
pub fn api(method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    off_runtime(|| blocking_api(method, path, body))
}

fn blocking_api(method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = http()
        .request(method.clone(), format!("{}/api/{path}", management()))
        .basic_auth("guest", Some("guest"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    let text = response.text().unwrap_or_default();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

pub struct TestVhost {
    pub name: String,
    topology_file: tempfile::NamedTempFile,
}

impl TestVhost {
    /// A new empty vhost named after the test, with guest allowed everything.
    pub fn new(test: &str) -> TestVhost {
        let name = format!(
            "delaytopo-test-{test}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        api(
            reqwest::Method::PUT,
            &format!("vhosts/{}", encode(&name)),
            None,
        );
        api(
            reqwest::Method::PUT,
            &format!("permissions/{}/guest", encode(&name)),
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        );
        let vhost = TestVhost {
            name,
            topology_file: tempfile::NamedTempFile::new().unwrap(),
        };
        vhost.set_topology("");
        vhost
    }

    pub fn url(&self) -> String {
        format!(
            "amqp://guest:guest@{}/{}",
            amqp_host_port(),
            encode(&self.name)
        )
    }

    /// Replaces the topology file the `delaytopo` command of this fixture uses.
    pub fn set_topology(&self, yaml: &str) {
        let mut file = std::fs::File::create(self.topology_file.path()).unwrap();
        file.write_all(yaml.as_bytes()).unwrap();
    }

    pub fn topology_path(&self) -> &std::path::Path {
        self.topology_file.path()
    }

    /// `delaytopo` aimed at this vhost, with the fixture's topology file.
    pub fn delaytopo(&self) -> assert_cmd::Command {
        self.delaytopo_at(&self.url(), management())
    }

    /// `delaytopo` with the fixture's topology file aimed at other URLs
    /// (wrong credentials, a port nothing listens on).
    pub fn delaytopo_at(&self, url: &str, management: &str) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::cargo_bin("delaytopo").unwrap();
        command
            .env_remove("DELAYTOPO_URL")
            .env_remove("DELAYTOPO_MANAGEMENT_URL")
            .env_remove("DELAYTOPO_TOPOLOGY")
            .arg("-f")
            .arg(self.topology_file.path())
            .arg("--url")
            .arg(url)
            .arg("--management-url")
            .arg(management)
            .arg("--no-progress")
            .timeout(Duration::from_secs(120));
        command
    }

    /// GET /api/{kind}/{vhost}, e.g. `list("queues")`.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        match api(
            reqwest::Method::GET,
            &format!("{kind}/{}", encode(&self.name)),
            None,
        ) {
            Value::Array(items) => items,
            other => panic!("GET {kind}: not a list: {other}"),
        }
    }

    /// The vhost's definitions (exchanges, queues, bindings, policies).
    pub fn definitions(&self) -> Value {
        api(
            reqwest::Method::GET,
            &format!("definitions/{}", encode(&self.name)),
            None,
        )
    }

    pub fn declare_queue(&self, name: &str, arguments: Value) {
        api(
            reqwest::Method::PUT,
            &format!("queues/{}/{}", encode(&self.name), encode(name)),
            Some(json!({"durable": true, "auto_delete": false, "arguments": arguments})),
        );
    }

    pub fn declare_exchange(&self, name: &str, kind: &str) {
        api(
            reqwest::Method::PUT,
            &format!("exchanges/{}/{}", encode(&self.name), encode(name)),
            Some(
                json!({"type": kind, "durable": true, "auto_delete": false, "internal": false, "arguments": {}}),
            ),
        );
    }

    /// Publishes through the management API; returns whether it was routed.
    pub fn publish(&self, exchange: &str, routing_key: &str, payload: &str) -> bool {
        let exchange = if exchange.is_empty() {
            "amq.default"
        } else {
            exchange
        };
        let reply = api(
            reqwest::Method::POST,
            &format!(
                "exchanges/{}/{}/publish",
                encode(&self.name),
                encode(exchange)
            ),
            Some(
                json!({"properties": {"delivery_mode": 2}, "routing_key": routing_key,
                        "payload": payload, "payload_encoding": "string"}),
            ),
        );
        reply["routed"].as_bool().unwrap_or(false)
    }

    /// Takes up to `count` messages from a queue (acknowledged); returns their payloads.
    pub fn get(&self, queue: &str, count: usize) -> Vec<String> {
        let reply = api(
            reqwest::Method::POST,
            &format!("queues/{}/{}/get", encode(&self.name), encode(queue)),
            Some(json!({"count": count, "ackmode": "ack_requeue_false", "encoding": "auto"})),
        );
        reply
            .as_array()
            .map(|messages| {
                messages
                    .iter()
                    .map(|m| m["payload"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The queue's `messages` count as the management API reports it.
    pub fn queue_info(&self, queue: &str) -> Value {
        api(
            reqwest::Method::GET,
            &format!("queues/{}/{}", encode(&self.name), encode(queue)),
            None,
        )
    }

    /// Polls `check` every 200 ms until it returns Some or `limit` passes.
    pub fn wait_for<T>(&self, limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
        let start = Instant::now();
        loop {
            if let Some(value) = check() {
                return Some(value);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let url = format!("{}/api/vhosts/{}", management(), encode(&self.name));
        off_runtime(|| {
            let _ = http().delete(url).basic_auth("guest", Some("guest")).send();
        });
    }
}

impl TestVhost {
    /// `verify --strict` as on a broker without known defects: exit 0, and
    /// no error or warning but the broker release's own (`broker_defect`,
    /// which every release before the fixes in src/broker_versions.yaml has).
    pub fn assert_verifies_strictly(&self) {
        let output = self
            .delaytopo()
            .args(["-o", "json", "verify"])
            .output()
            .unwrap();
        let document = stdout_json(&output);
        assert_eq!(output.status.code(), Some(0), "{document:#}");
        let others: Vec<&Value> = document["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] != "info" && f["kind"] != "broker_defect")
            .collect();
        assert!(others.is_empty(), "{others:#?}");
    }
}

/// The JSON document a command printed on stdout.
pub fn stdout_json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

impl TestVhost {
    /// Sets the topology and imports its cascade as a definitions document
    /// (what `render` prints), for tests of commands other than install.
    pub fn import_cascade(&self, yaml: &str) -> delaytopo::cascade::Desired {
        self.set_topology(yaml);
        let topology =
            delaytopo::topology::Topology::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        let desired = delaytopo::cascade::Desired::new(&topology, &self.name);
        let document = delaytopo::commands::render::definitions(&[&desired]);
        api(
            reqwest::Method::POST,
            &format!("definitions/{}", encode(&self.name)),
            Some(document),
        );
        desired
    }
}
