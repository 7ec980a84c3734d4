//! `teardown` on a real broker: it removes the cascade and nothing else, and
//! never loses a delayed message it was not told to discard.

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use delaytopo::cascade::Desired;
use delaytopo::topology::Topology;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Confirmation;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use predicates::prelude::*;
use serde_json::Value;
use support::*;

const WITH_SALES: &str = "endpoints:\n  - address: Sales\n";

/// Installs the cascade of `yaml` by importing its definitions (plus the
/// endpoint queue Sales) and returns its desired state.
fn install(vhost: &TestVhost, yaml: &str) -> Desired {
    vhost.set_topology(yaml);
    let topology = Topology::parse(Path::new("t.yaml"), yaml).unwrap();
    let desired = Desired::new(&topology, &vhost.name);
    vhost.declare_queue("Sales", serde_json::json!({}));
    api(
        reqwest::Method::POST,
        &format!("definitions/{}", encode(&vhost.name)),
        Some(delaytopo::commands::render::definitions(&[&desired])),
    );
    desired
}

/// Bindings the topology does not list, that a restore must put back too:
/// a stray to a foreign queue (with arguments), an application's own endpoint
/// binding, and foreign exchanges into the delivery exchange and a level queue.
fn add_extras(vhost: &TestVhost, desired: &Desired) {
    let v = encode(&vhost.name);
    vhost.declare_queue("audit", serde_json::json!({}));
    vhost.declare_queue("Billing", serde_json::json!({}));
    vhost.declare_exchange("legacy", "topic");
    let bind = |source: &str, kind: &str, destination: &str, key: &str, arguments: Value| {
        api(
            reqwest::Method::POST,
            &format!(
                "bindings/{v}/e/{}/{kind}/{}",
                encode(source),
                encode(destination)
            ),
            Some(serde_json::json!({"routing_key": key, "arguments": arguments})),
        );
    };
    let delivery = &desired.delivery_exchange;
    bind(
        desired.level_name(3),
        "q",
        "audit",
        "#",
        serde_json::json!({"x-note": "audit"}),
    );
    bind(delivery, "q", "Billing", "#.Billing", serde_json::json!({}));
    bind("legacy", "e", delivery, "#", serde_json::json!({}));
    bind(
        "legacy",
        "q",
        desired.level_name(5),
        "x",
        serde_json::json!({}),
    );
}

/// Publishes one message delayed by `delay` seconds for Sales; returns the level queue it waits in.
fn park(vhost: &TestVhost, desired: &Desired, delay: u64) -> String {
    let route = desired.route(delay, "Sales").unwrap();
    assert!(vhost.publish(&route.exchange, &route.routing_key, "parked"));
    route.exchange
}

/// Exchanges, queues and bindings of the vhost, sorted: what "unchanged" compares.
fn shape(vhost: &TestVhost) -> Value {
    let definitions = vhost.definitions();
    let sorted = |kind: &str| {
        let mut items: Vec<String> = definitions[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(Value::to_string)
            .collect();
        items.sort();
        items
    };
    serde_json::json!({
        "exchanges": sorted("exchanges"),
        "queues": sorted("queues"),
        "bindings": sorted("bindings"),
    })
}

/// Runs delaytopo with JSON output, checks its exit code and returns the report.
fn teardown_json(vhost: &TestVhost, args: &[&str], exit_code: i32) -> Value {
    let output = vhost
        .delaytopo()
        .args(["-o", "json"])
        .args(args)
        .output()
        .unwrap();
    let report = stdout_json(&output);
    assert_eq!(output.status.code(), Some(exit_code), "{report}");
    report
}

fn names(vhost: &TestVhost, kind: &str) -> Vec<String> {
    let mut names: Vec<String> = vhost
        .list(kind)
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .filter(|n| !n.is_empty() && !n.starts_with("amq."))
        .collect();
    names.sort();
    names
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(vhost: &TestVhost) -> Connection {
    Connection::connect(&vhost.url(), ConnectionProperties::default())
        .await
        .unwrap()
}

/// Ready messages in a queue now, as AMQP counts them (not the backlog).
fn ready_now(vhost: &TestVhost, queue: &str) -> u32 {
    runtime().block_on(async {
        let connection = connect(vhost).await;
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let count = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .unwrap()
            .message_count();
        let _ = connection.close(200, "done".into()).await;
        count
    })
}

#[test]
fn teardown_removes_the_cascade_and_keeps_endpoint_queues() {
    let vhost = TestVhost::new("teardown-all");
    install(&vhost, WITH_SALES);
    let report = teardown_json(&vhost, &["teardown"], 0);
    assert_eq!(report["ok"], true);
    assert_eq!(report["removed"]["exchanges"].as_array().unwrap().len(), 29);
    assert_eq!(report["removed"]["queues"].as_array().unwrap().len(), 28);
    // 56 cascade bindings and the endpoint's delivery binding.
    assert_eq!(report["removed"]["bindings"].as_array().unwrap().len(), 57);
    assert_eq!(report["discarded"]["total"], 0);
    assert_eq!(names(&vhost, "queues"), vec!["Sales"]);
    assert!(names(&vhost, "exchanges").is_empty());
    assert!(vhost.list("bindings").iter().all(|b| b["source"] == ""));
}

#[test]
fn teardown_twice_is_fine() {
    let vhost = TestVhost::new("teardown-twice");
    install(&vhost, WITH_SALES);
    vhost
        .delaytopo()
        .arg("teardown")
        .assert()
        .success()
        .stdout(predicate::str::contains("removed 29 exchanges, 28 queues"));
    vhost
        .delaytopo()
        .arg("teardown")
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to remove"));
}

#[test]
fn teardown_refuses_when_a_level_holds_messages() {
    let vhost = TestVhost::new("teardown-parked");
    let desired = install(&vhost, WITH_SALES);
    let queue = park(&vhost, &desired, 3600);
    let before = shape(&vhost);
    let report = teardown_json(&vhost, &["teardown"], 1);
    assert_eq!(report["refused"]["restored"], false);
    assert_eq!(report["refused"]["total"], 1);
    assert_eq!(report["refused"]["levels"][0]["level"], 11);
    assert_eq!(report["refused"]["levels"][0]["queue"], queue.as_str());
    assert!(report["removed"]["queues"].as_array().unwrap().is_empty());
    assert_eq!(shape(&vhost), before);
    assert_eq!(ready_now(&vhost, &queue), 1);

    vhost.delaytopo().arg("teardown").assert().code(1).stdout(
        predicate::str::contains("refused")
            .and(predicate::str::contains("level 11"))
            .and(predicate::str::contains("--force discards them")),
    );
}

#[test]
fn teardown_refuses_on_a_jam_only_the_management_api_sees() {
    let vhost = TestVhost::new("teardown-jam");
    let desired = install(&vhost, WITH_SALES);
    // Sales' queue goes, and its delivery binding with it: a message due at
    // level 0 expires into nowhere and waits in level 0's dead-letter backlog.
    api(
        reqwest::Method::DELETE,
        &format!("queues/{}/Sales", encode(&vhost.name)),
        None,
    );
    let level_0 = park(&vhost, &desired, 1);
    assert_eq!(level_0, desired.level_name(0));
    let backlog = vhost.wait_for(Duration::from_secs(60), || {
        let info = vhost.queue_info(&level_0);
        (info["messages_dlx"].as_u64().unwrap_or(0) > 0).then_some(info)
    });
    assert!(backlog.is_some(), "the jam never showed in the statistics");
    // Broker fact: AMQP cannot see the backlog.
    assert_eq!(ready_now(&vhost, &level_0), 0);

    let before = shape(&vhost);
    let report = teardown_json(&vhost, &["teardown"], 1);
    let level = &report["refused"]["levels"][0];
    assert_eq!(level["level"], 0);
    assert_eq!(level["ready"], 0);
    assert_eq!(level["dead_letter_backlog"], 1);
    // The statistics' `messages` count the backlog too: one message, not two.
    assert_eq!(level["messages"], 1);
    assert_eq!(shape(&vhost), before);
}

#[test]
fn unbind_only_keeps_queues_exchanges_and_messages() {
    let vhost = TestVhost::new("teardown-unbind");
    let desired = install(&vhost, WITH_SALES);
    let queue = park(&vhost, &desired, 3600);
    let report = teardown_json(&vhost, &["teardown", "--unbind-only"], 0);
    assert_eq!(report["removed"]["bindings"].as_array().unwrap().len(), 57);
    assert!(report["removed"]["queues"].as_array().unwrap().is_empty());
    assert_eq!(report["kept"][0]["queue"], queue.as_str());
    assert_eq!(names(&vhost, "queues").len(), 29);
    assert_eq!(names(&vhost, "exchanges").len(), 29);
    assert!(vhost.list("bindings").iter().all(|b| b["source"] == ""));
    assert_eq!(ready_now(&vhost, &queue), 1);
}

#[test]
fn unbind_only_refuses_for_at_most_once_queues_with_messages_unless_forced() {
    let vhost = TestVhost::new("teardown-unbind-classic");
    let v1 = std::fs::read_to_string("examples/nservicebus-v1.yaml").unwrap();
    let desired = install(&vhost, &format!("{v1}\n{WITH_SALES}"));
    let queue = park(&vhost, &desired, 3600);
    let before = shape(&vhost);
    vhost
        .delaytopo()
        .args(["teardown", "--unbind-only"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(queue.as_str()));
    assert_eq!(shape(&vhost), before);
    vhost
        .delaytopo()
        .args(["teardown", "--unbind-only", "--force"])
        .assert()
        .success();
    assert_eq!(ready_now(&vhost, &queue), 1);
}

#[test]
fn force_deletes_and_reports_what_it_discarded() {
    let vhost = TestVhost::new("teardown-force");
    let desired = install(&vhost, WITH_SALES);
    park(&vhost, &desired, 3600);
    park(&vhost, &desired, 3600);
    park(&vhost, &desired, 100_000);
    let report = teardown_json(&vhost, &["teardown", "--force"], 0);
    assert_eq!(report["discarded"]["total"], 3);
    assert_eq!(report["discarded"]["levels"].as_array().unwrap().len(), 2);
    assert_eq!(names(&vhost, "queues"), vec!["Sales"]);

    let vhost = TestVhost::new("teardown-force-text");
    let desired = install(&vhost, WITH_SALES);
    park(&vhost, &desired, 3600);
    vhost
        .delaytopo()
        .args(["teardown", "--force"])
        .assert()
        .success()
        .stdout(predicate::str::contains("discarded 1 message in total"));
}

#[test]
fn teardown_restores_and_refuses_when_its_checks_outlast_the_shortest_ttl() {
    let vhost = TestVhost::new("teardown-slow");
    let desired = install(&vhost, WITH_SALES);
    add_extras(&vhost, &desired);
    // A policy shortens every level's TTL to 50 ms: no teardown checks that fast.
    api(
        reqwest::Method::PUT,
        &format!("policies/{}/short", encode(&vhost.name)),
        Some(
            serde_json::json!({"pattern": "^nsb\\.", "apply-to": "queues",
                                "definition": {"message-ttl": 50}}),
        ),
    );
    let level_0 = desired.level_name(0).to_string();
    let applied = vhost.wait_for(Duration::from_secs(30), || {
        let info = vhost.queue_info(&level_0);
        (info["effective_policy_definition"]["message-ttl"] == 50).then_some(())
    });
    assert!(applied.is_some(), "the policy never showed");
    let before = shape(&vhost);
    let report = teardown_json(&vhost, &["teardown"], 1);
    assert_eq!(report["refused"]["restored"], true, "{report}");
    assert!(report["refused"]["reason"]
        .as_str()
        .unwrap()
        .contains("shortest level TTL"));
    assert_eq!(shape(&vhost), before);
}

/// `delaytopo` aimed at the vhost, with a management API that does not answer.
fn without_management(vhost: &TestVhost) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("delaytopo").unwrap();
    command
        .env_remove("DELAYTOPO_MANAGEMENT_URL")
        .arg("-f")
        .arg(vhost.topology_path())
        .args(["--url", &vhost.url()])
        .args(["--management-url", "http://127.0.0.1:1", "--timeout", "5"])
        .arg("--no-progress")
        .timeout(Duration::from_secs(60));
    command
}

#[test]
fn teardown_needs_the_management_api_unless_forced() {
    let vhost = TestVhost::new("teardown-no-management");
    install(&vhost, WITH_SALES);
    without_management(&vhost)
        .arg("teardown")
        .assert()
        .code(3)
        .stderr(predicate::str::contains(
            "teardown needs the management API",
        ));
    assert_eq!(names(&vhost, "queues").len(), 29);
    without_management(&vhost)
        .args(["teardown", "--force"])
        .assert()
        .success()
        .stdout(predicate::str::contains("warning"));
    assert_eq!(names(&vhost, "queues"), vec!["Sales"]);
    // Deleting a missing exchange or queue succeeds on the broker, so the
    // second run finds out by passive declares that nothing is left.
    without_management(&vhost)
        .args(["teardown", "--force"])
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to remove"));
}

/// What a publisher saw: confirmed and routed, or refused (404, returned, nacked).
#[derive(Default)]
struct Tally {
    accepted: AtomicUsize,
    refused: AtomicUsize,
}

/// Publishes to `exchange` in a loop with confirms and `mandatory` until `stop`.
async fn publish_until(
    vhost_url: String,
    exchange: String,
    key: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let connection = Connection::connect(&vhost_url, ConnectionProperties::default())
        .await
        .unwrap();
    let mut channel = None;
    while !stop.load(Ordering::SeqCst) {
        if channel.is_none() {
            let fresh = connection.create_channel().await.unwrap();
            fresh
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            channel = Some(fresh);
        }
        let publish = channel.as_ref().unwrap().basic_publish(
            exchange.as_str().into(),
            key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"racing",
            BasicProperties::default().with_delivery_mode(2),
        );
        let outcome = match publish.await {
            Ok(confirm) => confirm.await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(Confirmation::Ack(None)) => {
                tally.accepted.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {
                tally.refused.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                tally.refused.fetch_add(1, Ordering::SeqCst);
                channel = None;
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
}

#[test]
fn a_message_published_while_teardown_runs_is_never_lost() {
    // The publisher starts at different moments of the teardown, so that
    // runs hit the first check, the window before the stop, and the stop.
    for start_after_ms in [0u64, 60, 120, 180, 240, 300, 450, 600] {
        let vhost = TestVhost::new("teardown-race");
        let desired = install(&vhost, WITH_SALES);
        add_extras(&vhost, &desired);
        let route = desired.route(3600, "Sales").unwrap();
        let before = shape(&vhost);
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let runtime = runtime();
        let publisher = runtime.spawn({
            let (url, stop, tally) = (vhost.url(), stop.clone(), tally.clone());
            let (exchange, key) = (route.exchange.clone(), route.routing_key.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(start_after_ms)).await;
                publish_until(url, exchange, key, stop, tally).await
            }
        });
        let output = vhost
            .delaytopo()
            .args(["-o", "json", "teardown"])
            .output()
            .unwrap();
        // Let the publisher try at least once after the teardown, then stop it.
        let tried =
            |t: &Tally| t.accepted.load(Ordering::SeqCst) + t.refused.load(Ordering::SeqCst);
        let after_teardown = tried(&tally);
        vhost.wait_for(Duration::from_secs(10), || {
            (tried(&tally) > after_teardown).then_some(())
        });
        stop.store(true, Ordering::SeqCst);
        runtime.block_on(publisher).unwrap();
        let report = stdout_json(&output);
        let accepted = tally.accepted.load(Ordering::SeqCst);
        let refused = tally.refused.load(Ordering::SeqCst);
        match output.status.code() {
            Some(0) => {
                // Deleted: nothing may have been accepted into the cascade.
                assert_eq!(accepted, 0, "start {start_after_ms} ms: {report}");
                assert!(refused > 0, "the publisher never ran: {report}");
                assert_eq!(names(&vhost, "queues"), vec!["Billing", "Sales", "audit"]);
                assert_eq!(names(&vhost, "exchanges"), vec!["legacy"]);
            }
            Some(1) => {
                // Refused: every accepted message is in its level queue, and
                // the cascade is as it was.
                assert!(report["refused"].is_object(), "{report}");
                assert_eq!(
                    ready_now(&vhost, &route.exchange) as usize,
                    accepted,
                    "start {start_after_ms} ms: {report}"
                );
                assert_eq!(shape(&vhost), before, "start {start_after_ms} ms");
            }
            other => panic!("exit {other:?}: {report}"),
        }
        eprintln!(
            "start {start_after_ms} ms: exit {:?}, restored {}, accepted {accepted}, refused {refused}",
            output.status.code(),
            report["refused"]["restored"]
        );
    }
}
