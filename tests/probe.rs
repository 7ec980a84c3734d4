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

/// Queues and bindings the probe made that are still there.
fn probe_leftovers(vhost: &TestVhost) -> (Vec<Value>, Vec<Value>) {
    let queues = vhost
        .list("queues")
        .into_iter()
        .filter(|q| q["name"].as_str().unwrap().starts_with("delaytopo.probe."))
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
        .collect();
    (queues, bindings)
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
    assert_eq!(vhost.definitions(), before);
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
    // The message is stuck at level 0; a sink keeps it from jamming once repaired.
    let sink = report["sink"].as_str().unwrap();
    assert_eq!(sink, report["address"].as_str().unwrap());
    let (queues, bindings) = probe_leftovers(&vhost);
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0]["arguments"]["x-message-ttl"], 0);
    assert_eq!(bindings[0]["destination"], sink);
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
