//! `verify` against a real broker: a healthy cascade passes, every defect
//! injected through the management API or AMQP fails it with the entity
//! named, and the broker's definitions and policies are the same before and
//! after every run, broken cases included.

mod support;

use std::time::Duration;

use predicates::prelude::*;
use serde_json::{json, Value};
use support::*;

const SALES: &str = "endpoints:\n  - address: Sales\n";

/// What verify must never change: the vhost's definitions (exchanges, queues,
/// bindings, policies) and its operator policies.
fn snapshot(vhost: &TestVhost) -> Value {
    json!({
        "definitions": vhost.definitions(),
        "operator_policies": vhost.list("operator-policies"),
    })
}

/// Runs `verify -o json` (plus `extra`), checks that it changed nothing, and
/// returns its exit code and document.
fn verify(vhost: &TestVhost, extra: &[&str]) -> (i32, Value) {
    let before = snapshot(vhost);
    let output = vhost
        .delaytopo()
        .args(["-o", "json", "verify"])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(snapshot(vhost), before, "verify changed the broker");
    (output.status.code().unwrap(), stdout_json(&output))
}

/// The findings of `kind` about `entity`.
fn findings<'a>(document: &'a Value, kind: &str, entity: &str) -> Vec<&'a Value> {
    document["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind && f["entity"] == entity)
        .collect()
}

fn assert_finding(document: &Value, kind: &str, entity: &str, severity: &str) -> Value {
    let found = findings(document, kind, entity);
    assert!(
        found.iter().any(|f| f["severity"] == severity),
        "no {severity} {kind} on {entity} in {:#}",
        document["findings"]
    );
    found[0].clone()
}

/// A cascade with a Sales endpoint whose queue exists.
fn installed_with_sales(test: &str) -> (TestVhost, delaytopo::cascade::Desired) {
    let vhost = TestVhost::new(test);
    vhost.declare_queue("Sales", json!({}));
    let desired = vhost.import_cascade(SALES);
    (vhost, desired)
}

fn delete(path: &str) {
    api(reqwest::Method::DELETE, path, None);
}

#[test]
fn a_healthy_cascade_verifies_with_nine_requests() {
    let (vhost, _) = installed_with_sales("verify-healthy");
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 0, "{document:#}");
    assert_eq!(document["ok"], true);
    assert_eq!(document["summary"]["errors"], 0);
    // Nine reads, all at once; the overview that proves the broker is one
    // of them (read once, used twice).
    assert_eq!(document["http_requests"], 9);
    let levels = document["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 28);
    let mut level_0 = levels[27].clone();
    let leader = level_0.as_object_mut().unwrap().remove("leader");
    assert_eq!(
        level_0,
        json!({"level": 0, "queue": "nsb.v2.delay-level-00", "messages": 0, "members": 1, "online": 1})
    );
    assert!(leader.unwrap().as_str().unwrap().contains('@'));
    vhost.delaytopo().arg("verify").assert().code(0).stdout(
        predicate::str::contains("nsb.v2.delay-level-27").and(predicate::str::contains("healthy")),
    );
}

#[test]
fn a_parked_message_is_counted_and_still_healthy() {
    let (vhost, desired) = installed_with_sales("verify-parked");
    let route = desired.route((1 << 20) + 3, "Sales").unwrap();
    assert_eq!(route.exchange, "nsb.v2.delay-level-20");
    assert!(vhost.publish(&route.exchange, &route.routing_key, "later"));
    let counted = vhost.wait_for(Duration::from_secs(20), || {
        (vhost.queue_info("nsb.v2.delay-level-20")["messages"] == 1).then_some(())
    });
    assert!(counted.is_some(), "statistics never showed the message");
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 0, "{document:#}");
    let level_20 = &document["levels"][7];
    assert_eq!(level_20["level"], 20);
    assert_eq!(level_20["messages"], 1);
    let note = assert_finding(
        &document,
        "delayed_messages",
        "queue nsb.v2.delay-level-20",
        "info",
    );
    assert_eq!(note["actual"], "1");
}

#[test]
fn a_missing_level_queue_fails() {
    let (vhost, _) = installed_with_sales("verify-missing-queue");
    delete(&format!(
        "queues/{}/nsb.v2.delay-level-03",
        encode(&vhost.name)
    ));
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 1);
    assert_eq!(document["ok"], false);
    assert_finding(&document, "missing", "queue nsb.v2.delay-level-03", "error");
    assert_eq!(document["levels"][24]["messages"], Value::Null);
}

#[test]
fn a_missing_binding_fails() {
    let (vhost, _) = installed_with_sales("verify-missing-binding");
    let key = format!("{}0.#", "*.".repeat(20));
    delete(&format!(
        "bindings/{}/e/nsb.v2.delay-level-07/e/nsb.v2.delay-level-06/{}",
        encode(&vhost.name),
        encode(&key)
    ));
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 1);
    assert_finding(
        &document,
        "missing",
        &format!(
            "binding nsb.v2.delay-level-07 -> exchange nsb.v2.delay-level-06 ({}0.#)",
            "*.".repeat(20)
        ),
        "error",
    );
}

#[test]
fn a_different_argument_fails_with_expected_and_actual() {
    let (vhost, _) = installed_with_sales("verify-different");
    delete(&format!(
        "queues/{}/nsb.v2.delay-level-04",
        encode(&vhost.name)
    ));
    vhost.declare_queue(
        "nsb.v2.delay-level-04",
        json!({"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
               "x-overflow": "reject-publish", "x-message-ttl": 1000,
               "x-dead-letter-exchange": "nsb.v2.delay-level-03"}),
    );
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 1);
    let different = assert_finding(
        &document,
        "different",
        "queue nsb.v2.delay-level-04",
        "error",
    );
    assert_eq!(different["expected"], "x-message-ttl=16000");
    assert_eq!(different["actual"], "x-message-ttl=1000");
}

#[test]
fn a_stray_binding_fails() {
    let (vhost, _) = installed_with_sales("verify-stray");
    api(
        reqwest::Method::POST,
        &format!(
            "bindings/{}/e/nsb.v2.delay-level-03/q/nsb.v2.delay-level-02",
            encode(&vhost.name)
        ),
        Some(json!({"routing_key": "#"})),
    );
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 1);
    assert_finding(
        &document,
        "stray_binding",
        "binding nsb.v2.delay-level-03 -> queue nsb.v2.delay-level-02 (#)",
        "error",
    );
}

#[test]
fn an_endpoint_whose_queue_is_gone_fails() {
    let (vhost, _) = installed_with_sales("verify-endpoint-gone");
    delete(&format!("queues/{}/Sales", encode(&vhost.name)));
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 1);
    assert_finding(&document, "endpoint_missing", "queue Sales", "error");
}

#[test]
fn an_unlisted_endpoint_binding_is_noted_and_a_dot_suffix_warns() {
    let vhost = TestVhost::new("verify-suffix");
    vhost.declare_queue("Sales", json!({}));
    vhost.declare_queue("Big.Sales", json!({}));
    vhost.import_cascade(SALES);
    api(
        reqwest::Method::POST,
        &format!(
            "bindings/{}/e/nsb.v2.delay-delivery/q/Big.Sales",
            encode(&vhost.name)
        ),
        Some(json!({"routing_key": "#.Big.Sales"})),
    );
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 0, "{document:#}");
    assert_finding(&document, "address_suffix", "endpoint Sales", "warning");
    assert_finding(
        &document,
        "unlisted_endpoint",
        "binding nsb.v2.delay-delivery -> queue Big.Sales (#.Big.Sales)",
        "info",
    );
    let (code, _) = verify(&vhost, &["--strict"]);
    assert_eq!(code, 1, "--strict fails on warnings");
}

#[test]
fn a_harmful_user_policy_fails_at_once_naming_policy_and_queue() {
    let (vhost, _) = installed_with_sales("verify-policy");
    let name = format!("delaytopo-test-{}-short-ttl", std::process::id());
    api(
        reqwest::Method::PUT,
        &format!("policies/{}/{name}", encode(&vhost.name)),
        Some(
            json!({"pattern": r"^nsb\.v2\.delay-level-1[0-2]$", "apply-to": "queues",
                    "definition": {"message-ttl": 1000}, "priority": 0}),
        ),
    );
    // No waiting: the queues' own policy fields lag, the patterns do not.
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 1);
    let harmful = assert_finding(
        &document,
        "harmful_policy",
        "queue nsb.v2.delay-level-11",
        "error",
    );
    assert!(
        harmful["message"].as_str().unwrap().contains(&name),
        "{harmful:#}"
    );
    assert!(harmful["message"]
        .as_str()
        .unwrap()
        .contains("arrive early"));
    assert_eq!(
        document["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "harmful_policy")
            .count(),
        3
    );
}

#[test]
fn a_harmful_operator_policy_fails() {
    let (vhost, _) = installed_with_sales("verify-operator-policy");
    let name = format!("delaytopo-test-{}-cap", std::process::id());
    api(
        reqwest::Method::PUT,
        &format!("operator-policies/{}/{name}", encode(&vhost.name)),
        Some(json!({"pattern": "delay-level-00$", "apply-to": "queues",
                    "definition": {"max-length": 10}, "priority": 0})),
    );
    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 1);
    let harmful = assert_finding(
        &document,
        "harmful_operator_policy",
        "queue nsb.v2.delay-level-00",
        "error",
    );
    assert_eq!(
        harmful["actual"],
        format!("max-length=10 (operator policy {name})")
    );
}

/// The ready count a passive declare sees over AMQP.
async fn amqp_ready_count(vhost: &TestVhost, queue: &str) -> u32 {
    let connection =
        lapin::Connection::connect(&vhost.url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    declared.message_count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jammed_level_is_found_with_its_cause_and_stays_jammed() {
    let (vhost, desired) = installed_with_sales("verify-jam");
    delete(&format!("queues/{}/Sales", encode(&vhost.name)));
    let route = desired.route(1, "Sales").unwrap();
    assert!(vhost.publish(&route.exchange, &route.routing_key, "stuck"));
    let backlog = vhost.wait_for(Duration::from_secs(30), || {
        (vhost.queue_info("nsb.v2.delay-level-00")["messages_dlx"] == 1).then_some(())
    });
    assert!(backlog.is_some(), "the dead-letter backlog never showed");

    let (code, document) = verify(&vhost, &[]);
    assert_eq!(code, 1);
    let jam = assert_finding(&document, "jammed", "queue nsb.v2.delay-level-00", "error");
    let message = jam["message"].as_str().unwrap();
    assert!(
        message.contains("endpoint queue Sales does not exist"),
        "{message}"
    );
    assert_eq!(document["levels"][27]["messages"], 1);
    assert_eq!(document["http_requests"], 10, "one re-read of the queues");

    // Still there, and invisible to AMQP.
    assert_eq!(amqp_ready_count(&vhost, "nsb.v2.delay-level-00").await, 0);
    assert_eq!(vhost.queue_info("nsb.v2.delay-level-00")["messages_dlx"], 1);
}

/// One sample line: metric name, labels in order, value.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A strict reading of the Prometheus text exposition format: comments are
/// HELP or TYPE, every sample's family was announced by both, a family's
/// samples are contiguous, names and labels are well-formed, values numeric.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let name_ok = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut helped = std::collections::BTreeSet::new();
    let mut typed = std::collections::BTreeSet::new();
    let mut finished = std::collections::BTreeSet::new();
    let mut current = String::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest.split_once(' ').expect("comment keyword");
            let (name, detail) = rest.split_once(' ').expect("comment name");
            assert!(name_ok(name), "bad metric name in {line:?}");
            match keyword {
                "HELP" => assert!(helped.insert(name.to_string()), "second HELP: {line}"),
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&detail),
                        "bad type: {line}"
                    );
                    assert!(typed.insert(name.to_string()), "second TYPE: {line}");
                }
                _ => panic!("unexpected comment: {line}"),
            }
            if name != current {
                if !current.is_empty() {
                    finished.insert(current.clone());
                }
                assert!(!finished.contains(name), "family {name} split");
                current = name.to_string();
            }
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "bad line {line:?}"
        );
        let (name, rest) = line
            .split_once('{')
            .map(|(n, r)| (n, Some(r)))
            .unwrap_or_else(|| (line.split_once(' ').unwrap().0, None));
        assert!(name_ok(name), "bad sample name in {line:?}");
        assert_eq!(name, current, "sample outside its family: {line}");
        assert!(
            helped.contains(name) && typed.contains(name),
            "no HELP/TYPE for {name}"
        );
        let (labels, value) = match rest {
            Some(rest) => {
                let (labels, value) = rest.rsplit_once("} ").expect("closing brace");
                let mut parsed = Vec::new();
                let mut chars = labels.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert!(name_ok(&key), "bad label name {key:?} in {line}");
                    assert_eq!(chars.next(), Some('"'), "label value quoted: {line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect("unterminated label value") {
                            '\\' => match chars.next() {
                                Some('\\') => value.push('\\'),
                                Some('"') => value.push('"'),
                                Some('n') => value.push('\n'),
                                other => panic!("bad escape {other:?} in {line}"),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    parsed.push((key, value));
                    match chars.next() {
                        Some(',') | None => {}
                        other => panic!("expected , after label, got {other:?} in {line}"),
                    }
                }
                (parsed, value)
            }
            None => (Vec::new(), line.split_once(' ').unwrap().1),
        };
        let value: f64 = value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("value in {line}"));
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    samples
}

fn sample(samples: &[Sample], name: &str, label: (&str, &str)) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name && s.labels.iter().any(|(k, v)| k == label.0 && v == label.1))
        .unwrap_or_else(|| panic!("no {name} with {label:?}"))
        .value
}

#[test]
fn prometheus_output_parses_as_the_text_exposition_format() {
    let (vhost, desired) = installed_with_sales("verify-prometheus");
    // The broker's own known defects are its only warnings.
    let version_warnings = delaytopo::versions::findings(&desired, broker_version())
        .iter()
        .filter(|f| f.severity == delaytopo::diff::Severity::Warning)
        .count() as f64;
    delete(&format!(
        "queues/{}/nsb.v2.delay-level-01",
        encode(&vhost.name)
    ));
    let before = snapshot(&vhost);
    let output = vhost
        .delaytopo()
        .args(["-o", "prometheus", "verify"])
        .output()
        .unwrap();
    assert_eq!(snapshot(&vhost), before);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).unwrap();
    let samples = parse_exposition(&text);
    assert!(samples
        .iter()
        .all(|s| s.labels[0] == ("vhost".to_string(), vhost.name.clone())));
    assert_eq!(
        sample(&samples, "delaytopo_up", ("vhost", &vhost.name)),
        1.0
    );
    assert!(sample(&samples, "delaytopo_findings", ("severity", "error")) >= 1.0);
    assert_eq!(
        sample(&samples, "delaytopo_findings", ("severity", "warning")),
        version_warnings
    );
    assert_eq!(
        sample(&samples, "delaytopo_level_online_members", ("level", "0")),
        1.0
    );
    assert_eq!(
        sample(&samples, "delaytopo_level_online_members", ("level", "1")),
        0.0
    );
    assert_eq!(
        sample(&samples, "delaytopo_level_messages", ("level", "27")),
        0.0
    );
}

#[test]
fn prometheus_output_says_down_when_the_broker_refuses() {
    let vhost = TestVhost::new("verify-prometheus-down");
    let wrong = vhost.url().replace("guest:guest", "guest:wrong-secret");
    let output = vhost
        .delaytopo_at(&wrong, management())
        .args(["-o", "prometheus", "verify"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let samples = parse_exposition(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(samples.len(), 1);
    assert_eq!(
        sample(&samples, "delaytopo_up", ("vhost", &vhost.name)),
        0.0
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("wrong-secret"));
}

#[test]
fn prometheus_output_is_refused_for_other_commands() {
    let vhost = TestVhost::new("verify-prometheus-plan");
    vhost
        .delaytopo()
        .args(["-o", "prometheus", "plan"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--output prometheus: `plan` writes text or json only; only `verify` has metrics",
        ));
}

#[test]
fn refused_credentials_exit_3_without_the_password() {
    let vhost = TestVhost::new("verify-refused");
    let wrong = vhost.url().replace("guest:guest", "guest:wrong-secret");
    vhost
        .delaytopo_at(&wrong, management())
        .args(["-o", "json", "verify"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("401").and(predicate::str::contains("wrong-secret").not()))
        .stdout(predicate::str::contains("wrong-secret").not());
}

#[test]
fn an_unreachable_management_api_exits_3_within_the_timeout() {
    let vhost = TestVhost::new("verify-unreachable");
    let started = std::time::Instant::now();
    vhost
        .delaytopo_at(&vhost.url(), "http://127.0.0.1:1/")
        .args(["--timeout", "3", "verify"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("management API"));
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
}
