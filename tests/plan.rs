//! `plan` against a real broker: it lists what install would create, the
//! conflicts it would meet and what teardown would remove, changes nothing,
//! and exits 0 only when install has nothing to do.

mod support;

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
    assert!(
        conflicts
            .iter()
            .any(|c| c["entity"] == "queue nsb.v2.delay-level-05"
                && c["expected"] == "x-message-ttl=32000"
                && c["actual"] == "x-message-ttl=5"),
        "{conflicts:#?}"
    );
    assert_eq!(
        document["teardown"]["queues"][0]["name"],
        "nsb.v2.delay-level-05"
    );
}

#[test]
fn a_listed_endpoint_without_its_queue_blocks_install() {
    let vhost = TestVhost::new("plan-endpoint");
    vhost.declare_queue("Sales", json!({}));
    vhost.import_cascade("endpoints:\n  - address: Sales\n");
    vhost.set_topology("endpoints:\n  - address: Sales\n  - address: Billing\n");
    let (code, document) = plan(&vhost);
    assert_eq!(code, 1);
    assert_eq!(document["create"].as_array().unwrap().len(), 1);
    assert_eq!(document["blocked"][0]["entity"], "queue Billing");
}
