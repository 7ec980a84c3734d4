//! Never act on the wrong broker, never misroute, never panic: odd setups
//! and bad input are refused before anything changes.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use support::*;

/// A second broker of the run's version, its management API behind the
/// path prefix `/rabbitmq` as a reverse proxy would serve it.
fn other_broker() -> &'static Node {
    static OTHER: OnceLock<Node> = OnceLock::new();
    OTHER.get_or_init(|| {
        let version = Version::from_env();
        let slot = match version {
            Version::V3_10 => 20,
            Version::V4_0 => 21,
        };
        let name = format!("other-{}", version.label().replace('.', "-"));
        BrokerSpec::new(&name, version, slot)
            .management_path_prefix("/rabbitmq")
            .start()
    })
}

/// A vhost on `other_broker()`, deleted when dropped.
struct OtherVhost {
    encoded: String,
}

impl OtherVhost {
    fn new(name: &str) -> OtherVhost {
        let encoded = encode(name);
        other_broker().api(reqwest::Method::PUT, &format!("vhosts/{encoded}"), None);
        OtherVhost { encoded }
    }
}

impl Drop for OtherVhost {
    fn drop(&mut self) {
        let path = format!("vhosts/{}", self.encoded);
        other_broker().api(reqwest::Method::DELETE, &path, None);
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_command_refuses_a_management_api_of_another_broker_and_changes_nothing() {
    let vhost = TestVhost::new("other-mgmt");
    // The endpoint queue first: 4.x refuses to import a binding to a queue
    // that does not exist yet (400 resources_missing); 3.10 takes it.
    vhost.declare_queue("Sales", serde_json::json!({}));
    vhost.import_cascade("endpoints:\n  - address: Sales\n");
    let other = other_broker();
    // The other broker has a vhost of the same name holding the same cascade:
    // read there, install would find nothing to do and teardown nothing held.
    let twin = OtherVhost::new(&vhost.name);
    let document = delaytopo::commands::render::definitions(&[&delaytopo::cascade::Desired::new(
        &delaytopo::topology::Topology::parse(std::path::Path::new("t.yaml"), "").unwrap(),
        &vhost.name,
    )]);
    other.api(
        reqwest::Method::POST,
        &format!("definitions/{}", twin.encoded),
        Some(document),
    );
    // A message parked at level 05 on the broker the AMQP URL names.
    assert!(vhost.publish(
        "nsb.v2.delay-level-05",
        &delaytopo::cascade::routing_key(28, 40, "Sales").unwrap(),
        "parked"
    ));
    let before = vhost.definitions();

    for command in [
        &["install"][..],
        &["verify"],
        &["plan"],
        &["teardown"],
        &["teardown", "--force"],
    ] {
        let output = vhost
            .delaytopo_at(&vhost.url(), &other.management_url())
            .args(command)
            .output()
            .unwrap();
        let said = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{command:?}: {said}");
        assert!(
            said.contains("refusing to act on one broker while reading another")
                && said.contains(&format!(
                    "`delaytopo-other-{}",
                    Version::from_env().label().replace('.', "-")
                )),
            "{command:?}: {said}"
        );
    }
    assert_eq!(vhost.definitions(), before);
    assert_eq!(vhost.get("nsb.v2.delay-level-05", 10), ["parked"]);
}

#[test]
fn a_management_api_behind_a_path_prefix_is_reached_with_or_without_its_api_segment() {
    let other = other_broker();
    let vhost = OtherVhost::new(&format!("delaytopo-test-prefix-{}", std::process::id()));
    let topology = tempfile::NamedTempFile::new().unwrap();
    let url = format!(
        "amqp://guest:guest@{}/{}",
        other.amqp_host_port(),
        vhost.encoded
    );
    for (command, management) in [
        ("install", other.management_url()),
        ("verify", format!("{}/api/", other.management_url())),
        ("teardown", format!("{}/", other.management_url())),
    ] {
        let output = assert_cmd::Command::cargo_bin("delaytopo")
            .unwrap()
            .env_remove("DELAYTOPO_URL")
            .env_remove("DELAYTOPO_MANAGEMENT_URL")
            .args(["--no-progress", "-f"])
            .arg(topology.path())
            .args(["--url", &url, "--management-url", &management, command])
            .timeout(Duration::from_secs(120))
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{command} via {management}: {output:?}"
        );
    }
}

#[test]
fn a_queue_argument_name_rabbitmq_would_refuse_creates_nothing() {
    let vhost = TestVhost::new("long-argument");
    vhost.set_topology(&format!(
        "cascade:\n  queue_arguments:\n    {}: 1\n",
        "x".repeat(256)
    ));
    let output = vhost.delaytopo().arg("install").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(stderr(&output).contains("256 bytes"), "{output:?}");
    assert!(vhost.list("exchanges").iter().all(|e| {
        let name = e["name"].as_str().unwrap_or("");
        name.is_empty() || name.starts_with("amq.")
    }));
}

#[test]
fn a_wildcard_address_is_a_topology_error_before_any_connection() {
    let topology = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        topology.path(),
        "endpoints:\n  - address: Sales\n  - address: \"#\"\n",
    )
    .unwrap();
    for command in ["render", "install", "verify"] {
        let output = assert_cmd::Command::cargo_bin("delaytopo")
            .unwrap()
            .args(["-f"])
            .arg(topology.path())
            .args(["--url", "amqp://guest:guest@127.0.0.1:1/", command])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{command}: {output:?}");
        let said = stderr(&output);
        assert!(
            said.contains(":3:5: endpoints[1]: address `#` contains the topic wildcard `#`"),
            "{command}: {said}"
        );
    }
}

#[test]
fn inputs_too_large_for_the_tool_or_the_broker_are_bad_input_never_a_panic() {
    let topology = tempfile::NamedTempFile::new().unwrap();
    let long_vhost = "v".repeat(300);
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (vec!["--timeout", "1e20", "render"], vec![]),
        (vec!["render"], vec![("DELAYTOPO_TIMEOUT", "1e20")]),
        (vec!["--vhost", &long_vhost, "teardown"], vec![]),
        (vec!["--vhost", &long_vhost, "probe"], vec![]),
        (vec!["--vhost", &long_vhost, "install"], vec![]),
        (
            vec!["--vhost", &long_vhost, "migrate", "--from", "/dev/null"],
            vec![],
        ),
    ];
    for (args, env) in cases {
        let output = assert_cmd::Command::cargo_bin("delaytopo")
            .unwrap()
            .env_remove("DELAYTOPO_TIMEOUT")
            .envs(env.clone())
            .arg("-f")
            .arg(topology.path())
            .args(["--url", "amqp://guest:guest@127.0.0.1:1/"])
            .args(&args)
            .timeout(Duration::from_secs(30))
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} {env:?}: {output:?}"
        );
        assert_eq!(stderr(&output).lines().count(), 1, "{args:?}: {output:?}");
    }
}

#[test]
fn a_vhost_named_twice_is_handled_once() {
    let vhost = TestVhost::new("twice");
    let output = vhost
        .delaytopo()
        .args([
            "--vhost",
            &vhost.name,
            "--vhost",
            &vhost.name,
            "-o",
            "json",
            "install",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report = stdout_json(&output);
    assert_eq!(report["vhost"], vhost.name.as_str(), "{report}");
    assert!(report.get("vhosts").is_none(), "{report}");
}

#[test]
fn teardown_of_an_idle_cascade_goes_through_at_a_300_ms_round_trip() {
    let vhost = TestVhost::new("slow-teardown");
    vhost.import_cascade("");
    let slow = vhost.through_latency(150);
    let output = vhost
        .delaytopo_at(&slow.url, &slow.management)
        .arg("teardown")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(vhost.list("queues").is_empty());
}
