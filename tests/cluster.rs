//! A real 3-node cluster on a bad day: a URL list whose first node is down,
//! verify while nodes stop and start (never exit 3; degraded is a warning,
//! a lost quorum an error naming the levels), teardown under quorum loss
//! (refuses, changes nothing), leader placement, and moves while a node is
//! killed (`cluster/moves.rs`).

#[path = "cluster/moves.rs"]
mod moves;
mod moving;
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// The tests here stop and start the cluster's nodes: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cluster_nodes() -> Vec<Node> {
    let version = Version::from_env();
    let (name, first_slot) = match version {
        Version::V3_10 => ("cluster-3-10", 10),
        Version::V4_0 => ("cluster-4-0", 13),
    };
    cluster(name, version, first_slot)
}

/// A fresh vhost on the cluster, deleted when dropped.
struct ClusterVhost<'a> {
    node: &'a Node,
    name: String,
    topology: tempfile::NamedTempFile,
}

impl<'a> ClusterVhost<'a> {
    fn new(node: &'a Node, test: &str, topology: &str) -> ClusterVhost<'a> {
        let name = format!("delaytopo-test-{test}-{}", std::process::id());
        node.api(
            reqwest::Method::PUT,
            &format!("vhosts/{}", encode(&name)),
            None,
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), topology).unwrap();
        ClusterVhost {
            node,
            name,
            topology: file,
        }
    }

    fn url(&self, node: &Node) -> String {
        format!(
            "amqp://guest:guest@{}/{}",
            node.amqp_host_port(),
            encode(&self.name)
        )
    }

    /// `delaytopo` aimed at this vhost through `urls` (AMQP), each node's
    /// management API derived from its own `--management-url` entry.
    fn delaytopo(&self, nodes: &[&Node]) -> assert_cmd::Command {
        self.delaytopo_with(self.topology.path(), nodes)
    }

    /// The same with another topology file.
    fn delaytopo_with(&self, topology: &std::path::Path, nodes: &[&Node]) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::cargo_bin("delaytopo").unwrap();
        command
            .env_remove("DELAYTOPO_URL")
            .env_remove("DELAYTOPO_MANAGEMENT_URL")
            .args(self.arguments(topology, nodes))
            .timeout(Duration::from_secs(180));
        command
    }

    /// The global arguments of `delaytopo` for `nodes` and `topology`.
    fn arguments(&self, topology: &std::path::Path, nodes: &[&Node]) -> Vec<String> {
        let mut arguments = vec![
            "-f".to_string(),
            topology.display().to_string(),
            "--no-progress".to_string(),
        ];
        for node in nodes {
            arguments.extend([
                "--url".to_string(),
                self.url(node),
                "--management-url".to_string(),
                node.management_url(),
            ]);
        }
        arguments
    }

    fn definitions(&self) -> Value {
        let mut all = self.node.api(
            reqwest::Method::GET,
            &format!("definitions/{}", encode(&self.name)),
            None,
        );
        // Queue leaders move while nodes come and go; the rest must not.
        for queue in all["queues"].as_array_mut().into_iter().flatten() {
            queue.as_object_mut().unwrap().remove("node");
        }
        all
    }
}

impl Drop for ClusterVhost<'_> {
    fn drop(&mut self) {
        let url = format!(
            "{}/api/vhosts/{}",
            self.node.management_url(),
            encode(&self.name)
        );
        let _ = http().delete(url).basic_auth("guest", Some("guest")).send();
    }
}

fn stop(node: &Node) {
    let output = node.rabbitmqctl(&["stop_app"]);
    assert!(output.status.success(), "{output:?}");
}

fn start(node: &Node) {
    let output = node.rabbitmqctl(&["start_app"]);
    assert!(output.status.success(), "{output:?}");
}

/// verify's exit code and JSON document.
fn verify(vhost: &ClusterVhost, nodes: &[&Node], extra: &[&str]) -> (i32, Value) {
    let output = vhost
        .delaytopo(nodes)
        .args(["-o", "json", "verify"])
        .args(extra)
        .output()
        .unwrap();
    let document = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), document)
}

fn kinds(document: &Value) -> Vec<String> {
    document["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["kind"].as_str().map(str::to_string))
        .collect()
}

/// Polls verify every 0.25 s until `done` says so, or `limit` passes;
/// every exit code seen on the way is recorded.
fn verify_until(
    vhost: &ClusterVhost,
    nodes: &[&Node],
    limit: Duration,
    codes: &mut Vec<i32>,
    done: impl Fn(i32, &Value) -> bool,
) -> Option<Value> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let (code, document) = verify(vhost, nodes, &[]);
        codes.push(code);
        if done(code, &document) {
            return Some(document);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

#[test]
fn a_cluster_losing_and_regaining_nodes_is_reported_right_and_teardown_refuses_without_quorum() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = cluster_nodes();
    let [one, two, three] = [&nodes[0], &nodes[1], &nodes[2]];
    let vhost = ClusterVhost::new(one, "cluster-flux", "endpoints:\n  - address: Sales\n");
    one.api(
        reqwest::Method::PUT,
        &format!("queues/{}/Sales", encode(&vhost.name)),
        Some(serde_json::json!({"durable": true})),
    );

    // The first URL names a node that is down: install goes on with the next.
    stop(three);
    let output = vhost
        .delaytopo(&[three, one, two])
        .arg("install")
        .output()
        .unwrap();
    start(three);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains(&format!(
            "using node amqp://guest:****@{}",
            one.amqp_host_port()
        )),
        "{said}"
    );

    // Healthy once all three are back; every leader on the installing node.
    let mut codes = Vec::new();
    let healthy = verify_until(
        &vhost,
        &[one, two],
        Duration::from_secs(60),
        &mut codes,
        |code, d| code == 0 && !kinds(d).iter().any(|k| k == "degraded"),
    )
    .expect("the cluster never verified healthy");
    assert!(kinds(&healthy).contains(&"leaders_on_one_node".to_string()));

    // One node down: degraded, a warning (exit 0), never "broker unusable".
    stop(three);
    let degraded = verify_until(
        &vhost,
        &[one, two],
        Duration::from_secs(60),
        &mut codes,
        |_, d| kinds(d).iter().any(|k| k == "degraded"),
    )
    .expect("verify never saw the degraded levels");
    assert_eq!(degraded["ok"], true, "{degraded:#}");
    assert_eq!(verify(&vhost, &[one, two], &["--strict"]).0, 1);

    // Two down: the quorum is lost, an error naming the levels.
    stop(two);
    let lost = verify_until(
        &vhost,
        &[one],
        Duration::from_secs(60),
        &mut codes,
        |code, _| code == 1,
    )
    .expect("verify never saw the quorum lost");
    assert!(
        kinds(&lost).contains(&"quorum_unavailable".to_string()),
        "{lost:#}"
    );

    // teardown refuses and changes nothing while the quorum is lost.
    let before = vhost.definitions();
    let output = vhost.delaytopo(&[one]).arg("teardown").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("without a quorum online"),
        "{output:?}"
    );
    assert_eq!(vhost.definitions(), before);

    // Back: healthy again.
    start(two);
    start(three);
    verify_until(
        &vhost,
        &[one, two, three],
        Duration::from_secs(90),
        &mut codes,
        |code, d| code == 0 && !kinds(d).iter().any(|k| k == "degraded"),
    )
    .expect("the cluster never recovered");
    assert!(
        !codes.contains(&3),
        "verify exited 3 during the changes: {codes:?}"
    );
}

#[test]
fn balanced_leaders_spread_over_the_cluster() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let nodes = cluster_nodes();
    let vhost = ClusterVhost::new(
        &nodes[0],
        "cluster-balanced",
        "cascade:\n  leader_locator: balanced\n",
    );
    let output = vhost
        .delaytopo(&[&nodes[0]])
        .arg("install")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let queues = nodes[0].api(
        reqwest::Method::GET,
        &format!("queues/{}", encode(&vhost.name)),
        None,
    );
    let leaders: std::collections::BTreeSet<&str> = queues
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|q| q["leader"].as_str().or(q["node"].as_str()))
        .collect();
    assert!(leaders.len() > 1, "all leaders on {leaders:?}");
    let (_, document) = verify(&vhost, &[&nodes[0]], &[]);
    assert!(!kinds(&document).contains(&"leaders_on_one_node".to_string()));
}
