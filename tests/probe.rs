//! `probe` and `verify --probe` against a real broker: a message sent the way
//! a sender sends it arrives through a healthy cascade, and the probe cleans
//! up; a broken delivery route fails it with exit 1.

mod support;

use serde_json::Value;
use support::*;

fn probe(vhost: &TestVhost, extra: &[&str]) -> (i32, Value) {
    let output = vhost
        .delaytopo()
        .args(["-o", "json", "probe"])
        .args(extra)
        .output()
        .unwrap();
    (output.status.code().unwrap(), stdout_json(&output))
}

const SINK: &str = "delaytopo.probe.sink";

/// Queues and bindings a probe made that are still there, but for the
/// permanent sink.
fn probe_leftovers(vhost: &TestVhost) -> (Vec<Value>, Vec<Value>) {
    let queues = vhost
        .list("queues")
        .into_iter()
        .filter(|q| q["name"].as_str().unwrap().starts_with("delaytopo.probe."))
        .filter(|q| q["name"] != SINK)
        .collect();
    let bindings = vhost
        .list("bindings")
        .into_iter()
        .filter(|b| {
            b["routing_key"]
                .as_str()
                .unwrap()
                .starts_with("#.delaytopo.probe.")
        })
        .filter(|b| b["destination"] != SINK)
        .collect();
    (queues, bindings)
}

/// The vhost's definitions without the probe sink and its binding.
fn definitions_without_sink(vhost: &TestVhost) -> Value {
    let mut definitions = vhost.definitions();
    for kind in ["queues", "bindings"] {
        if let Some(items) = definitions[kind].as_array_mut() {
            items.retain(|item| item["name"] != SINK && item["destination"] != SINK);
        }
    }
    definitions
}

/// The sink: a bounded queue, bound for every probe address.
fn assert_sink_in_place(vhost: &TestVhost) {
    let sink = vhost.queue_info(SINK);
    assert_eq!(sink["arguments"]["x-max-length"], 100, "{sink:#}");
    assert!(vhost
        .list("bindings")
        .iter()
        .any(|b| b["destination"] == SINK
            && b["routing_key"] == "#.delaytopo.probe.#"
            && b["source"] == "nsb.v2.delay-delivery"));
}

#[test]
fn a_probe_arrives_through_an_installed_cascade_and_cleans_up() {
    let vhost = TestVhost::new("probe-healthy");
    vhost.import_cascade("");
    let before = vhost.definitions();
    let (code, document) = probe(&vhost, &[]);
    assert_eq!(code, 0, "{document:#}");
    let report = &document["probe"];
    assert_eq!(report["arrived"], true);
    assert_eq!(report["failure"], Value::Null);
    assert_eq!(report["exchange"], "nsb.v2.delay-level-01");
    assert!(
        report["observed_seconds"].as_f64().unwrap() >= 1.75,
        "{report:#}"
    );
    assert_eq!(probe_leftovers(&vhost), (vec![], vec![]));
    assert_sink_in_place(&vhost);
    assert_eq!(definitions_without_sink(&vhost), before);
}

#[test]
fn a_probe_fails_when_level_0_no_longer_reaches_the_delivery_exchange() {
    let vhost = TestVhost::new("probe-no-route");
    vhost.import_cascade("");
    let key = format!("{}0.#", "*.".repeat(27));
    api(
        reqwest::Method::DELETE,
        &format!(
            "bindings/{}/e/nsb.v2.delay-level-00/e/nsb.v2.delay-delivery/{}",
            encode(&vhost.name),
            encode(&key)
        ),
        None,
    );
    // A 2 s delay waits at level 1, then falls through level 0 to the delivery exchange.
    let (code, document) = probe(&vhost, &["--delay", "2", "--margin", "1"]);
    assert_eq!(code, 1, "{document:#}");
    assert_eq!(document["ok"], false);
    let report = &document["probe"];
    assert_eq!(report["arrived"], false);
    assert!(report["failure"]
        .as_str()
        .unwrap()
        .contains("did not arrive"));
    // The message waits in level 1's dead-letter backlog; once the route is
    // repaired (the broker retries after minutes), the sink takes it instead
    // of it jamming level 0 (`a_killed_probe_leaves_no_message_that_nothing_receives`).
    assert_eq!(report["sink"], SINK);
    assert_eq!(probe_leftovers(&vhost), (vec![], vec![]));
    assert_sink_in_place(&vhost);
}

/// The sink holds the probe's late message (its statistics say so), and
/// verify then finds no level holding a stranded message.
fn assert_sink_took_it_and_healthy(vhost: &TestVhost) {
    let took = vhost.wait_for(std::time::Duration::from_secs(40), || {
        let held = vhost.queue_info(SINK)["messages"].as_u64();
        (held.unwrap_or(0) >= 1).then_some(())
    });
    assert!(
        took.is_some(),
        "the sink never received the probe's message"
    );
    let output = vhost.delaytopo().arg("verify").output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn a_killed_probe_leaves_no_message_that_nothing_receives() {
    let vhost = TestVhost::new("probe-killed");
    vhost.import_cascade("");
    let mut probe = std::process::Command::new(assert_cmd::cargo::cargo_bin("delaytopo"))
        .args(["-f"])
        .arg(vhost.topology_path())
        .args(["--url", &vhost.url(), "--management-url", management()])
        .args(["--no-progress", "probe", "--delay", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed while its message waits at level 1 (bits 1 and 0 of 3).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    probe.kill().unwrap();
    probe.wait().unwrap();
    assert_sink_in_place(&vhost);
    assert_sink_took_it_and_healthy(&vhost);
    assert_eq!(probe_leftovers(&vhost), (vec![], vec![]));
}

#[test]
fn a_probe_fails_at_once_without_a_delivery_exchange() {
    let vhost = TestVhost::new("probe-no-delivery");
    vhost.import_cascade("");
    api(
        reqwest::Method::DELETE,
        &format!("exchanges/{}/nsb.v2.delay-delivery", encode(&vhost.name)),
        None,
    );
    let (code, document) = probe(&vhost, &[]);
    assert_eq!(code, 1, "{document:#}");
    let failure = document["probe"]["failure"].as_str().unwrap();
    assert!(failure.contains("delivery exchange nsb.v2.delay-delivery does not exist"));
    assert_eq!(document["probe"]["sink"], Value::Null);
    assert_eq!(probe_leftovers(&vhost), (vec![], vec![]));
}

#[test]
fn verify_with_probe_reports_the_arrival() {
    let vhost = TestVhost::new("probe-verify");
    vhost.import_cascade("");
    let output = vhost
        .delaytopo()
        .args(["-o", "json", "verify", "--probe", "--delay", "1"])
        .output()
        .unwrap();
    let document = stdout_json(&output);
    assert_eq!(output.status.code(), Some(0), "{document:#}");
    let findings = document["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "probe_arrived" && f["severity"] == "info"),
        "{findings:#?}"
    );
    assert_eq!(document["probe"]["arrived"], true);
}

#[test]
fn a_delay_beyond_the_cascade_is_bad_input() {
    let vhost = TestVhost::new("probe-bad-delay");
    vhost.set_topology("cascade:\n  levels: 4\n");
    vhost
        .delaytopo()
        .args(["probe", "--delay", "16"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("at most 15 s"));
}
