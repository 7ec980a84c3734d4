//! `install` on a real broker: exact cascade, idempotent re-runs, conflicts
//! reported with expected vs actual, endpoints that must exist; and the
//! operation executor it runs on.

mod support;

use std::path::Path;

use delaytopo::apply::{self, OpResult, Operation};
use delaytopo::cascade::Desired;
use delaytopo::target::{self, Target};
use delaytopo::topology::Topology;
use indicatif::ProgressBar;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use support::*;

fn target_and_desired(vhost: &TestVhost, topology: &str) -> (Target, Desired) {
    let topology = Topology::parse(Path::new("t.yaml"), topology).unwrap();
    let url = vhost.url();
    let targets = target::resolve(
        &topology,
        &target::Overrides {
            url: std::slice::from_ref(&url),
            management_url: &[management().to_string()],
            vhosts: &[],
            timeout_seconds: 30.0,
            ..Default::default()
        },
    )
    .unwrap();
    let desired = Desired::new(&topology, &vhost.name);
    (targets[0].clone(), desired)
}

/// Level 05 as the cascade wants it, except for its TTL.
fn declare_level_5_with_ttl_99_s(vhost: &TestVhost) {
    vhost.declare_queue(
        "nsb.v2.delay-level-05",
        json!({"x-queue-type": "quorum", "x-message-ttl": 99000,
               "x-dead-letter-exchange": "nsb.v2.delay-level-04",
               "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}),
    );
}

async fn declare_level_queues_with_level_5_taken(lanes: usize) {
    let vhost = TestVhost::new(&format!("apply-conflict-{lanes}"));
    let (target, desired) = target_and_desired(&vhost, "");
    declare_level_5_with_ttl_99_s(&vhost);
    let ops: Vec<Operation> = desired
        .queues
        .iter()
        .cloned()
        .map(Operation::DeclareQueue)
        .collect();
    let connection = delaytopo::amqp::connect(&target).await.unwrap();
    let results = apply::apply(&connection, &target, &ops, lanes, &ProgressBar::hidden()).await;
    delaytopo::amqp::close(&connection, &target).await;

    assert_eq!(results.len(), 28);
    for (queue, result) in desired.queues.iter().zip(&results) {
        if queue.level == 5 {
            match result {
                OpResult::Refused { code, text } => {
                    assert_eq!(*code, Some(406));
                    assert!(text.contains("x-message-ttl"), "{text}");
                }
                other => panic!("level 5: expected a 406, got {other:?}"),
            }
        } else {
            assert_eq!(result, &OpResult::Done { messages: None }, "{}", queue.name);
        }
    }
    let queues = vhost.list("queues");
    assert_eq!(queues.len(), 28);
    let level_5 = queues
        .iter()
        .find(|q| q["name"] == "nsb.v2.delay-level-05")
        .unwrap();
    assert_eq!(level_5["arguments"]["x-message-ttl"], json!(99000));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_on_one_pipelined_channel_leaves_no_other_queue_undeclared() {
    declare_level_queues_with_level_5_taken(1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_among_eight_lanes_names_only_its_own_queue() {
    declare_level_queues_with_level_5_taken(8).await;
}

/// Exchanges, queues and bindings of a vhost as comparable sets, read
/// through the management API; built-in `amq.*` exchanges, the default
/// exchange and its implicit bindings are left out.
fn read_back(vhost: &TestVhost) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let exchanges = vhost
        .list("exchanges")
        .into_iter()
        .filter(|e| e["name"] != "" && !e["name"].as_str().unwrap().starts_with("amq."))
        .map(|e| {
            json!([
                e["name"],
                e["type"],
                e["durable"],
                e["auto_delete"],
                e["internal"],
                e["arguments"]
            ])
            .to_string()
        })
        .collect();
    let queues = vhost
        .list("queues")
        .into_iter()
        .map(|q| {
            json!([
                q["name"],
                q["durable"],
                q["exclusive"],
                q["auto_delete"],
                q["arguments"]
            ])
            .to_string()
        })
        .collect();
    let bindings = vhost
        .list("bindings")
        .into_iter()
        .filter(|b| b["source"] != "")
        .map(|b| {
            json!([
                b["source"],
                b["destination"],
                b["destination_type"],
                b["routing_key"],
                b["arguments"]
            ])
            .to_string()
        })
        .collect();
    (exchanges, queues, bindings)
}

/// The same sets as `read_back`, computed from the desired cascade plus
/// the endpoint entities a test declared itself.
fn expected(
    desired: &Desired,
    endpoint_queues: &[&str],
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let arguments = |arguments: &delaytopo::cascade::Arguments| -> Value {
        serde_json::to_value(arguments).unwrap()
    };
    let exchanges = desired
        .exchanges
        .iter()
        .map(|e| {
            json!([
                e.name,
                e.kind,
                e.durable,
                e.auto_delete,
                e.internal,
                arguments(&e.arguments)
            ])
            .to_string()
        })
        .collect();
    let queues = desired
        .queues
        .iter()
        .map(|q| {
            json!([
                q.name,
                q.durable,
                q.exclusive,
                q.auto_delete,
                arguments(&q.arguments)
            ])
            .to_string()
        })
        .chain(endpoint_queues.iter().map(|name| {
            // RabbitMQ 4.x records the queue type of a queue declared
            // without one (SPEC §1); 3.x leaves the arguments empty.
            let recorded = if broker_version().starts_with('3') {
                json!({})
            } else {
                json!({"x-queue-type": "classic"})
            };
            json!([name, true, false, false, recorded]).to_string()
        }))
        .collect();
    let bindings = desired
        .bindings
        .iter()
        .map(|b| {
            json!([
                b.source,
                b.destination,
                b.destination_type.as_str(),
                b.routing_key,
                {}
            ])
            .to_string()
        })
        .collect();
    (exchanges, queues, bindings)
}

/// Runs `install --output json`, checks its exit code, returns the report.
fn install_json(vhost: &TestVhost, exit_code: i32) -> Value {
    let output = vhost
        .delaytopo()
        .args(["--output", "json", "install"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit_code), "{output:?}");
    stdout_json(&output)
}

fn sales_topology() -> &'static str {
    "endpoints:\n  - address: Sales\n"
}

#[test]
fn install_creates_exactly_the_desired_cascade() {
    let vhost = TestVhost::new("install-exact");
    vhost.set_topology(sales_topology());
    vhost.declare_queue("Sales", json!({}));
    let output = vhost.delaytopo().arg("install").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("114 missing and now declared, 0 present"),
        "{stdout}"
    );
    assert!(stdout.starts_with("declared 114:\n"), "{stdout}");
    assert!(
        stdout.contains("\n  + queue nsb.v2.delay-level-05\n"),
        "{stdout}"
    );

    let (_, desired) = target_and_desired(&vhost, sales_topology());
    let (exchanges, queues, bindings) = read_back(&vhost);
    let (want_exchanges, want_queues, want_bindings) = expected(&desired, &["Sales"]);
    assert_eq!(exchanges, want_exchanges);
    assert_eq!(queues, want_queues);
    assert_eq!(bindings, want_bindings);
    assert_eq!(
        (exchanges.len(), queues.len(), bindings.len()),
        (29, 29, 57)
    );
    // An integer, not a string or a float: x-message-ttl of level 27 in full.
    let level_27 = vhost.queue_info("nsb.v2.delay-level-27");
    assert_eq!(
        level_27["arguments"]["x-message-ttl"].as_i64(),
        Some(134_217_728_000)
    );
}

#[test]
fn a_second_install_changes_nothing_and_says_so() {
    let vhost = TestVhost::new("install-twice");
    vhost.set_topology(sales_topology());
    vhost.declare_queue("Sales", json!({}));
    vhost.delaytopo().arg("install").assert().code(0);
    let before = read_back(&vhost);

    let output = vhost.delaytopo().arg("install").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "nothing to do on vhost `{}`: 114 entities present and matching\n",
            vhost.name
        )
    );
    let report = install_json(&vhost, 0);
    assert_eq!(report["ok"], true);
    assert_eq!(report["declared"], json!([]));
    assert_eq!(report["existing"].as_array().unwrap().len(), 114);
    assert_eq!(read_back(&vhost), before);
}

#[test]
fn a_conflicting_level_queue_is_reported_and_the_other_levels_are_created() {
    let vhost = TestVhost::new("install-conflict");
    declare_level_5_with_ttl_99_s(&vhost);
    let report = install_json(&vhost, 1);
    assert_eq!(report["ok"], false);
    let conflicts = report["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    assert_eq!(conflicts[0]["entity"], "queue nsb.v2.delay-level-05");
    assert_eq!(conflicts[0]["level"], 5);
    assert_eq!(
        conflicts[0]["differences"],
        json!([{
            "severity": "error", "entity": "queue nsb.v2.delay-level-05", "kind": "different",
            "expected": "x-message-ttl=32000", "actual": "x-message-ttl=99000",
            "message": "queue nsb.v2.delay-level-05: x-message-ttl is 99000, expected 32000",
            "level": 5
        }])
    );
    let remedy = conflicts[0]["remedy"].as_str().unwrap();
    assert!(remedy.contains("`delaytopo teardown`"), "{remedy}");
    assert_eq!(report["declared"].as_array().unwrap().len(), 112);
    let queues = vhost.list("queues");
    assert_eq!(queues.len(), 28);
    let level_5 = vhost.queue_info("nsb.v2.delay-level-05");
    assert_eq!(level_5["arguments"]["x-message-ttl"], json!(99000));

    let output = vhost.delaytopo().arg("install").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "conflict queue nsb.v2.delay-level-05: x-message-ttl is 99000, expected 32000\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 missing and now declared, 112 present, 1 conflict\n"),
        "{stdout}"
    );
    assert!(stdout.contains("\nnext: install never changes"), "{stdout}");
}

#[test]
fn a_queue_with_four_differing_arguments_is_one_conflict_in_install_plan_and_verify() {
    let vhost = TestVhost::new("install-four-differences");
    // Level 05 declared by hand with a 1 s TTL, as in the README.
    vhost.declare_queue(
        "nsb.v2.delay-level-05",
        json!({"x-queue-type": "quorum", "x-message-ttl": 1000}),
    );
    let output = vhost.delaytopo().arg("install").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "conflict queue nsb.v2.delay-level-05 differs in 4 properties:\n  \
             x-dead-letter-exchange is (absent), expected \"nsb.v2.delay-level-04\"\n  \
             x-dead-letter-strategy is (absent), expected \"at-least-once\"\n  \
             x-message-ttl is 1000, expected 32000\n  \
             x-overflow is (absent), expected \"reject-publish\"\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("112 missing and now declared, 0 present, 1 conflict\n"),
        "{stdout}"
    );
    let report = install_json(&vhost, 1);
    let conflicts = report["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0]["differences"].as_array().unwrap().len(), 4);

    let plan = vhost.delaytopo().arg("plan").output().unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("install would meet 1 conflict (it does not override them):"),
        "{plan}"
    );
    let verify = vhost
        .delaytopo()
        .args(["-o", "json", "verify"])
        .output()
        .unwrap();
    let verify = stdout_json(&verify);
    let differing: Vec<&Value> = verify["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "different")
        .collect();
    assert_eq!(differing.len(), 1, "{verify:#}");
    assert_eq!(
        verify["conflicts"][0]["differences"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    let text = vhost.delaytopo().arg("verify").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("verify: 1 error, "), "{text}");
    assert!(text.contains("next: install never changes"), "{text}");
}

#[test]
fn every_conflict_is_reported_in_one_run() {
    let vhost = TestVhost::new("install-conflicts");
    declare_level_5_with_ttl_99_s(&vhost);
    vhost.declare_exchange("nsb.v2.delay-level-12", "direct");
    vhost.declare_exchange("nsb.v2.delay-delivery", "fanout");
    let report = install_json(&vhost, 1);
    let entities: BTreeSet<&str> = report["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["entity"].as_str().unwrap())
        .collect();
    assert_eq!(
        entities,
        BTreeSet::from([
            "queue nsb.v2.delay-level-05",
            "exchange nsb.v2.delay-level-12",
            "exchange nsb.v2.delay-delivery"
        ])
    );
    assert_eq!(vhost.list("queues").len(), 28);
}

/// `delaytopo` aimed at the vhost with the management API on a closed port.
fn without_management(vhost: &TestVhost) -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("delaytopo").unwrap();
    command
        .env_remove("DELAYTOPO_URL")
        .env_remove("DELAYTOPO_MANAGEMENT_URL")
        .arg("-f")
        .arg(vhost.topology_path())
        .args(["--url", &vhost.url()])
        .args(["--management-url", "http://127.0.0.1:1", "--no-progress"])
        .timeout(std::time::Duration::from_secs(120));
    command
}

#[test]
fn without_the_management_api_install_declares_everything_and_says_what_it_could_not_check() {
    let vhost = TestVhost::new("install-blind");
    declare_level_5_with_ttl_99_s(&vhost);
    let output = without_management(&vhost).arg("install").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "conflict queue nsb.v2.delay-level-05: x-message-ttl is 99000, expected 32000 \
             (the broker names only the first difference)\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("112 entities declared (created or already present), 1 conflict"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: management API http://127.0.0.1:1/"),
        "{stdout}"
    );
    assert!(stdout.contains("which entities were created"), "{stdout}");
    assert_eq!(vhost.list("queues").len(), 28);
    assert_eq!(
        vhost
            .list("bindings")
            .iter()
            .filter(|b| b["source"] != "")
            .count(),
        56
    );

    let output = without_management(&vhost)
        .args(["-o", "json", "install"])
        .output()
        .unwrap();
    let report = stdout_json(&output);
    assert!(report.get("created").is_none());
    assert_eq!(report["declared"].as_array().unwrap().len(), 112);
    assert!(report["management_error"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1:1"));
    assert!(!report["unchecked"].as_array().unwrap().is_empty());
}

#[test]
fn an_endpoint_binding_to_a_missing_queue_is_an_error_naming_it() {
    let vhost = TestVhost::new("install-no-endpoint");
    vhost.set_topology("endpoints:\n  - address: Sales\n  - address: Billing\n");
    vhost.declare_queue("Billing", json!({}));
    let output = vhost.delaytopo().arg("install").output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(
            "error binding nsb.v2.delay-delivery -> queue Sales (#.Sales): endpoint queue \
             `Sales` does not exist"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("114 missing and now declared, 0 present, 1 error"),
        "{stdout}"
    );
    let bindings = vhost.list("bindings");
    assert!(bindings
        .iter()
        .any(|b| b["source"] == "nsb.v2.delay-delivery" && b["destination"] == "Billing"));
    assert_eq!(vhost.list("queues").len(), 29);
}

#[test]
fn bind_to_exchange_binds_the_endpoint_exchange() {
    let vhost = TestVhost::new("install-endpoint-exchange");
    vhost.set_topology("endpoints:\n  - address: Sales\n    bind_to: exchange\n");
    vhost.declare_exchange("Sales", "fanout");
    vhost.delaytopo().arg("install").assert().code(0);
    let endpoint: Vec<Value> = vhost
        .list("bindings")
        .into_iter()
        .filter(|b| b["source"] == "nsb.v2.delay-delivery")
        .collect();
    assert_eq!(endpoint.len(), 1);
    assert_eq!(endpoint[0]["destination"], "Sales");
    assert_eq!(endpoint[0]["destination_type"], "exchange");
    assert_eq!(endpoint[0]["routing_key"], "#.Sales");
}
