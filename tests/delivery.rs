//! End to end: a message published in the routing-key format with a delay
//! travels the installed cascade and reaches its endpoint on time.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use delaytopo::cascade::Desired;
use delaytopo::topology::Topology;
use serde_json::json;
use support::*;

#[test]
fn a_message_delayed_2_s_reaches_its_endpoint_after_2_s() {
    let vhost = TestVhost::new("delivery");
    let yaml = "endpoints:\n  - address: Sales\n";
    vhost.set_topology(yaml);
    vhost.declare_queue("Sales", json!({}));
    vhost.delaytopo().arg("install").assert().code(0);

    let topology = Topology::parse(Path::new("t.yaml"), yaml).unwrap();
    let route = Desired::new(&topology, &vhost.name)
        .route(2, "Sales")
        .unwrap();
    assert_eq!(route.exchange, "nsb.v2.delay-level-01");

    let published = Instant::now();
    assert!(vhost.publish(&route.exchange, &route.routing_key, "delayed hello"));
    let arrived = vhost.wait_for(Duration::from_secs(10), || {
        let messages = vhost.get("Sales", 1);
        (!messages.is_empty()).then(|| (published.elapsed(), messages))
    });
    let (after, messages) = arrived.expect("the message never reached Sales");
    assert_eq!(messages, ["delayed hello"]);
    assert!(
        after >= Duration::from_secs(2),
        "arrived early, after {after:?}"
    );
    assert!(
        after <= Duration::from_secs(4),
        "arrived late, after {after:?}"
    );
}
