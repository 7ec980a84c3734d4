//! The management API reads back an imported cascade as complete, and a
//! damaged one with exactly what was damaged.

mod support;

use std::path::Path;

use delaytopo::cascade::Desired;
use delaytopo::diff::structure;
use delaytopo::mgmt::Management;
use delaytopo::observe::{observe, Depth};
use delaytopo::target::{resolve, Overrides};
use delaytopo::topology::Topology;
use support::*;

fn setup(vhost: &TestVhost, yaml: &str) -> (delaytopo::target::Target, Desired) {
    let topology = Topology::parse(Path::new("t.yaml"), yaml).unwrap();
    let url = vhost.url();
    let target = resolve(
        &topology,
        &Overrides {
            url: std::slice::from_ref(&url),
            management_url: &[management().to_string()],
            vhosts: &[],
            timeout_seconds: 10.0,
            ..Default::default()
        },
    )
    .unwrap()
    .remove(0);
    let desired = Desired::new(&topology, &vhost.name);
    let document = delaytopo::commands::render::definitions(&[&desired]);
    api(
        reqwest::Method::POST,
        &format!("definitions/{}", encode(&vhost.name)),
        Some(document),
    );
    (target, desired)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_imported_cascade_observes_as_complete() {
    let vhost = TestVhost::new("observe-complete");
    let (target, desired) = setup(&vhost, "");
    let management = Management::new(&target).unwrap();
    let observed = observe(&management, Depth::Full).await.unwrap();
    let s = structure(&desired, &observed);
    assert!(s.is_complete(), "{:?}", s.findings());
    assert!(s.findings().is_empty());
    // Nine reads at once; the overview among them is also the proof of the
    // broker (it is read once).
    assert_eq!(management.request_count(), 9);
    let broker = observed.broker.unwrap();
    assert_eq!(broker.rabbitmq_version, broker_version());
    assert_eq!(broker.feature_flags["quorum_queue"], "enabled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_binding_and_an_extra_one_are_found() {
    let vhost = TestVhost::new("observe-damaged");
    let (target, desired) = setup(&vhost, "");
    let v = encode(&vhost.name);
    api(
        reqwest::Method::DELETE,
        &format!(
            "bindings/{v}/e/nsb.v2.delay-level-03/q/nsb.v2.delay-level-03/{}",
            encode(&"*.".repeat(24)).to_string() + "1.%23"
        ),
        None,
    );
    api(
        reqwest::Method::POST,
        &format!("bindings/{v}/e/nsb.v2.delay-level-03/q/nsb.v2.delay-level-02"),
        Some(serde_json::json!({"routing_key": "#"})),
    );
    let observed = observe(&Management::new(&target).unwrap(), Depth::Definitions)
        .await
        .unwrap();
    let s = structure(&desired, &observed);
    assert_eq!(s.missing_bindings.len(), 1, "{:?}", s.findings());
    assert_eq!(s.missing_bindings[0].source, "nsb.v2.delay-level-03");
    assert_eq!(s.strays.len(), 1);
}
