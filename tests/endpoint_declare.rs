//! `declare:` on an endpoint, on a real broker: install declares the
//! endpoint queue (and exchange) as stated, a second install changes
//! nothing, a queue that differs is a conflict left as it is, plan and
//! verify see it, and teardown keeps it with its messages.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// A quorum endpoint queue with one argument, and an endpoint without `declare`.
const SALES: &str =
    "endpoints:\n  - address: Sales\n    declare:\n      queue_type: quorum\n      \
                     arguments:\n        x-delivery-limit: 5\n";

fn run(vhost: &TestVhost, args: &[&str], exit_code: i32) -> String {
    let output = vhost.delaytopo().args(args).output().unwrap();
    assert_eq!(output.status.code(), Some(exit_code), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json_of(vhost: &TestVhost, command: &str, exit_code: i32) -> Value {
    let output = vhost
        .delaytopo()
        .args(["--output", "json", command])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(exit_code), "{output:?}");
    stdout_json(&output)
}

/// `install` with the management API on a closed port: AMQP alone, exit 0.
fn install_without_management(vhost: &TestVhost) {
    let output = vhost
        .delaytopo_at(&vhost.url(), "http://127.0.0.1:1")
        .arg("install")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

fn queue_shape(vhost: &TestVhost, name: &str) -> Value {
    let q = vhost.queue_info(name);
    json!([
        q["durable"],
        q["exclusive"],
        q["auto_delete"],
        q["arguments"]
    ])
}

#[test]
fn install_declares_the_endpoint_queue_as_stated_and_a_second_run_changes_nothing() {
    let vhost = TestVhost::new("declare-queue");
    vhost.set_topology(SALES);
    let stdout = run(&vhost, &["install"], 0);
    assert!(stdout.contains("\n  + queue Sales\n"), "{stdout}");
    assert!(
        stdout.contains("115 missing and now declared, 0 present"),
        "{stdout}"
    );
    assert_eq!(
        queue_shape(&vhost, "Sales"),
        json!([true, false, false, {"x-queue-type": "quorum", "x-delivery-limit": 5}])
    );
    assert_eq!(vhost.queue_info("Sales")["type"], "quorum");
    let bound = vhost.list("bindings").into_iter().any(|b| {
        b["source"] == "nsb.v2.delay-delivery"
            && b["destination"] == "Sales"
            && b["routing_key"] == "#.Sales"
    });
    assert!(bound);

    let stdout = run(&vhost, &["install"], 0);
    assert_eq!(
        stdout,
        format!(
            "nothing to do on vhost `{}`: 115 entities present and matching\n",
            vhost.name
        )
    );
    run(&vhost, &["plan"], 0);
    vhost.assert_verifies_strictly();
}

#[test]
fn a_conventional_endpoint_gets_its_fanout_exchange_and_a_delayed_message_arrives() {
    let vhost = TestVhost::new("declare-conventional");
    vhost.set_topology(
        "cascade:\n  levels: 2\nendpoints:\n  - address: Billing\n    bind_to: exchange\n    \
         declare:\n      queue_type: classic\n      arguments: {x-max-priority: 10}\n",
    );
    run(&vhost, &["install"], 0);
    let exchange = vhost
        .list("exchanges")
        .into_iter()
        .find(|e| e["name"] == "Billing")
        .expect("exchange Billing");
    assert_eq!(
        json!([
            exchange["type"],
            exchange["durable"],
            exchange["auto_delete"]
        ]),
        json!(["fanout", true, false])
    );
    assert_eq!(
        queue_shape(&vhost, "Billing"),
        json!([true, false, false, {"x-queue-type": "classic", "x-max-priority": 10}])
    );
    // 1 s through the cascade, then the fanout exchange, into the queue.
    assert!(vhost.publish("nsb.v2.delay-level-00", "0.1.Billing", "late"));
    let arrived = vhost.wait_for(Duration::from_secs(30), || {
        let got = vhost.get("Billing", 1);
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(arrived, Some(vec!["late".to_string()]));
    vhost.assert_verifies_strictly();
}

#[test]
fn a_differing_endpoint_queue_is_a_conflict_left_alone_and_the_rest_is_created() {
    let vhost = TestVhost::new("declare-conflict");
    vhost.set_topology(SALES);
    vhost.declare_queue(
        "Sales",
        json!({"x-queue-type": "quorum", "x-delivery-limit": 20}),
    );
    let report = json_of(&vhost, "install", 1);
    let conflicts = report["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{conflicts:#?}");
    assert_eq!(conflicts[0]["entity"], "queue Sales");
    assert_eq!(
        conflicts[0]["differences"],
        json!([{
            "severity": "error", "entity": "queue Sales", "kind": "different",
            "expected": "x-delivery-limit=5", "actual": "x-delivery-limit=20",
            "message": "queue Sales: x-delivery-limit is 20, expected 5"
        }])
    );
    // Not the cascade's advice: teardown never deletes an endpoint.
    let remedy = conflicts[0]["remedy"].as_str().unwrap();
    assert!(
        remedy.contains("teardown never deletes endpoints"),
        "{remedy}"
    );
    // The cascade and the endpoint binding: everything but the queue.
    assert_eq!(report["declared"].as_array().unwrap().len(), 114);
    assert_eq!(vhost.list("queues").len(), 29);
    assert_eq!(
        vhost.queue_info("Sales")["arguments"]["x-delivery-limit"],
        json!(20)
    );
    // As the README shows it.
    let stdout = run(&vhost, &["install"], 1);
    assert_eq!(
        stdout,
        format!(
            "conflict queue Sales: x-delivery-limit is 20, expected 5\n\
             install on vhost `{}`: 0 missing and now declared, 114 present, 1 conflict\n\
             next: install never changes an existing entity.\n\
             \x20 teardown never deletes an endpoint's queue or exchange: change its\n\
             \x20 `declare:` to match, or recreate it yourself once it is drained.\n",
            vhost.name
        )
    );
    let verify = json_of(&vhost, "verify", 1);
    assert!(verify["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["entity"] == "queue Sales" && f["kind"] == "different"));
}

#[test]
fn plan_lists_the_endpoint_queue_and_install_without_the_management_api_declares_it() {
    let vhost = TestVhost::new("declare-plan");
    vhost.set_topology(SALES);
    let stdout = run(&vhost, &["plan"], 1);
    assert!(stdout.contains("install would create 115:"), "{stdout}");
    assert!(stdout.contains("  + queue Sales\n"), "{stdout}");
    assert!(
        !stdout.contains("install cannot bind these endpoints"),
        "{stdout}"
    );

    install_without_management(&vhost);
    assert_eq!(
        vhost.queue_info("Sales")["arguments"],
        json!({"x-queue-type": "quorum", "x-delivery-limit": 5})
    );
}

#[test]
fn teardown_keeps_a_declared_queue_and_its_messages() {
    let vhost = TestVhost::new("declare-teardown");
    vhost.set_topology(SALES);
    run(&vhost, &["install"], 0);
    assert!(vhost.publish("", "Sales", "waiting"));
    // As the README shows it.
    let stdout = run(&vhost, &["teardown"], 0);
    assert_eq!(
        stdout,
        "removed 29 exchanges, 28 queues and 57 bindings; endpoint queues and exchanges are \
         kept\nkept endpoint queue Sales (declared by the topology; teardown never deletes \
         endpoints)\n"
    );
    let names: Vec<Value> = vhost
        .list("queues")
        .into_iter()
        .map(|q| q["name"].clone())
        .collect();
    assert_eq!(names, [json!("Sales")]);
    assert_eq!(vhost.get("Sales", 5), ["waiting"]);

    // Running it again keeps it again, and so does --force.
    let report = json_of(&vhost, "teardown", 0);
    assert_eq!(report["kept_endpoints"], json!(["queue Sales"]));
    vhost
        .delaytopo()
        .args(["teardown", "--force", "--yes"])
        .assert()
        .code(0);
    assert_eq!(vhost.list("queues").len(), 1);
}

#[test]
fn verify_reports_a_deleted_declared_queue_missing() {
    let vhost = TestVhost::new("declare-verify");
    vhost.set_topology(SALES);
    run(&vhost, &["install"], 0);
    api(
        reqwest::Method::DELETE,
        &format!("queues/{}/Sales", encode(&vhost.name)),
        None,
    );
    let report = json_of(&vhost, "verify", 1);
    let about_sales: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["entity"] == "queue Sales")
        .collect();
    assert_eq!(about_sales.len(), 1, "{about_sales:#?}");
    assert_eq!(about_sales[0]["kind"], "missing");
    assert_eq!(about_sales[0]["message"], "queue Sales is missing");
    // Install puts it back.
    let stdout = run(&vhost, &["install"], 0);
    assert!(stdout.contains("\n  + queue Sales\n"), "{stdout}");
}

#[test]
fn an_applications_untyped_classic_queue_is_the_declared_classic_queue() {
    let vhost = TestVhost::new("declare-untyped");
    vhost.set_topology("endpoints:\n  - address: Billing\n    declare: {queue_type: classic}\n");
    vhost.declare_queue("Billing", json!({}));
    let report = json_of(&vhost, "install", 0);
    assert!(report["existing"]
        .as_array()
        .unwrap()
        .contains(&json!("queue Billing")));
    // Declared again over AMQP alone, with the type stated: the broker agrees.
    install_without_management(&vhost);
    vhost.assert_verifies_strictly();
}
