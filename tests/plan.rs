//! `plan` against a real broker: it lists what install would create, the
//! conflicts it would meet and what teardown would remove, changes nothing,
//! and exits 0 only when install has nothing to do.

mod support;

use std::path::Path;

use delaytopo::topology::Topology;
use delaytopo::{amqp, target};
use serde_json::{json, Value};
use support::*;

fn plan(vhost: &TestVhost) -> (i32, Value) {
    let before = vhost.definitions();
    let output = vhost
        .delaytopo()
        .args(["-o", "json", "plan"])
        .output()
        .unwrap();
    assert_eq!(vhost.definitions(), before, "plan changed the broker");
    (output.status.code().unwrap(), stdout_json(&output))
}

/// install's JSON report, which must be exit 1.
fn install_refusing(vhost: &TestVhost) -> Value {
    let install = vhost
        .delaytopo()
        .args(["-o", "json", "install"])
        .output()
        .unwrap();
    assert_eq!(install.status.code(), Some(1), "{install:?}");
    stdout_json(&install)
}

#[test]
fn a_fresh_vhost_plans_113_creations() {
    let vhost = TestVhost::new("plan-fresh");
    let (code, document) = plan(&vhost);
    assert_eq!(code, 1);
    assert_eq!(document["ok"], false);
    let create = document["create"].as_array().unwrap();
    assert_eq!(create.len(), 113);
    assert_eq!(
        create[0],
        json!({"kind": "exchange", "entity": "exchange nsb.v2.delay-level-27"})
    );
    assert!(create
        .iter()
        .any(|c| c["entity"] == "queue nsb.v2.delay-level-00"));
    assert_eq!(document["teardown"]["queues"], json!([]));
    // Five reads (three of definitions, the vhost's limits, the nodes) and
    // the overview that proves the broker, all at once.
    assert_eq!(document["http_requests"], 6);
    let text = vhost.delaytopo().arg("plan").output().unwrap();
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("install would create 113:"), "{text}");
    assert!(text.contains("  + binding nsb.v2.delay-level-00 -> exchange nsb.v2.delay-delivery"));
}

#[test]
fn an_installed_cascade_plans_nothing_and_shows_what_teardown_removes() {
    let vhost = TestVhost::new("plan-installed");
    let desired = vhost.import_cascade("");
    let route = desired.route(1 << 25, "Sales").unwrap();
    assert!(vhost.publish(&route.exchange, &route.routing_key, "later"));
    let (code, document) = plan(&vhost);
    assert_eq!(code, 0, "{document:#}");
    assert_eq!(document["create"], json!([]));
    let teardown = &document["teardown"];
    assert_eq!(teardown["exchanges"].as_array().unwrap().len(), 29);
    assert_eq!(teardown["queues"].as_array().unwrap().len(), 28);
    assert_eq!(teardown["bindings"].as_array().unwrap().len(), 56);
    assert_eq!(teardown["queues"][2]["name"], "nsb.v2.delay-level-25");
}

#[test]
fn a_conflicting_level_queue_is_listed_and_the_rest_planned() {
    let vhost = TestVhost::new("plan-conflict");
    vhost.declare_queue("nsb.v2.delay-level-05", json!({"x-message-ttl": 5}));
    let (code, document) = plan(&vhost);
    assert_eq!(code, 1);
    assert_eq!(document["create"].as_array().unwrap().len(), 112);
    let conflicts = document["conflicts"].as_array().unwrap();
    assert_eq!(
        conflicts.len(),
        1,
        "one queue is one conflict: {conflicts:#?}"
    );
    assert_eq!(conflicts[0]["entity"], "queue nsb.v2.delay-level-05");
    assert!(
        conflicts[0]["differences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["expected"] == "x-message-ttl=32000" && c["actual"] == "x-message-ttl=5"),
        "{conflicts:#?}"
    );
    assert_eq!(
        document["teardown"]["queues"][0]["name"],
        "nsb.v2.delay-level-05"
    );
}

#[test]
fn a_binding_install_would_be_refused_is_listed_as_refused_and_install_agrees() {
    let vhost = TestVhost::new("plan-endpoint");
    vhost.declare_queue("Sales", json!({}));
    vhost.import_cascade("endpoints:\n  - address: Sales\n");
    vhost.set_topology("endpoints:\n  - address: Sales\n  - address: Billing\n");
    let (code, document) = plan(&vhost);
    assert_eq!(code, 1);
    assert_eq!(document["create"], json!([]), "{document:#}");
    let refused = document["would_refuse"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{document:#}");
    let billing = "binding nsb.v2.delay-delivery -> queue Billing (#.Billing)";
    assert_eq!(refused[0]["entity"], billing);
    assert_eq!(document["blocked"][0]["entity"], "queue Billing");
    let text = vhost.delaytopo().arg("plan").output().unwrap();
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("install would create nothing\n"), "{text}");
    assert!(
        text.contains(&format!(
            "install would be refused 1 binding:\n  ! {billing}\n    would refuse: endpoint \
             queue `Billing` does not exist"
        )),
        "{text}"
    );

    // What install then does: the same binding, refused, and nothing else.
    let report = install_refusing(&vhost);
    assert_eq!(report["declared"], json!([]), "{report:#}");
    assert_eq!(report["errors"][0]["entity"], billing, "{report:#}");
}

#[test]
fn a_binding_into_a_queue_another_connection_holds_exclusively_is_refused_as_planned() {
    let vhost = TestVhost::new("plan-exclusive");
    vhost.import_cascade("");
    vhost.set_topology("endpoints:\n  - address: Sales\n");
    let topology = Topology::parse(Path::new("t.yaml"), "").unwrap();
    let url = vhost.url();
    let target = target::resolve(
        &topology,
        &target::Overrides {
            url: std::slice::from_ref(&url),
            management_url: &[management().to_string()],
            timeout_seconds: 30.0,
            ..Default::default()
        },
    )
    .unwrap()
    .remove(0);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The endpoint queue, exclusive to a connection of the test's own.
    let holder = runtime.block_on(async {
        let connection = amqp::connect(&target).await.unwrap();
        let channel = amqp::open_channel(&connection, &target).await.unwrap();
        let options = lapin::options::QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        channel
            .queue_declare("Sales".into(), options, Default::default())
            .await
            .unwrap();
        connection
    });
    let sales = "binding nsb.v2.delay-delivery -> queue Sales (#.Sales)";
    let (code, document) = plan(&vhost);
    assert_eq!(code, 1);
    assert_eq!(document["would_refuse"][0]["entity"], sales, "{document:#}");
    let reason = document["would_refuse"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("405 RESOURCE_LOCKED"), "{reason}");

    let report = install_refusing(&vhost);
    assert_eq!(report["errors"][0]["entity"], sales, "{report:#}");
    let message = report["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("RESOURCE_LOCKED"), "{message}");
    runtime.block_on(amqp::close(&holder, &target));
}
