//! The broker states (and files) a README block can ask for with
//! `given=NAME`, prepared in its scene before its commands run.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::moving;
use crate::support::*;
use crate::{Scene, SHIPPED_TOPOLOGY};

/// Prepares what a block's `given=NAME` names.
pub fn prepare(given: &str, scene: &Scene) {
    let (vhost, dir) = (&scene.vhost, scene.dir.path());
    match given {
        "cascade" => {
            vhost.import_cascade(SHIPPED_TOPOLOGY);
        }
        "level-05-by-hand" => vhost.declare_queue(
            "nsb.v2.delay-level-05",
            json!({"x-queue-type": "quorum", "x-message-ttl": 1000}),
        ),
        "message-in-level-20" => message_in_level_20(vhost),
        "short-ttl-policy" => {
            api(
                reqwest::Method::PUT,
                &format!("policies/{}/short-ttl", encode(&vhost.name)),
                Some(json!({"pattern": "^nsb\\.v2\\.delay-level-03$",
                            "definition": {"message-ttl": 500}, "apply-to": "queues"})),
            );
        }
        "bad-topology" => std::fs::write(dir.join("bad.yaml"), "cascade:\n  levles: 3\n").unwrap(),
        "v1-cascade-with-messages" => v1_cascade_with_messages(vhost, dir),
        "orders-for-sales" => orders_for_sales(scene),
        "sales-declared-differently" => {
            let yaml =
                "endpoints:\n  - address: Sales\n    declare: {arguments: {x-delivery-limit: 5}}\n";
            std::fs::write(dir.join("sales.yaml"), yaml).unwrap();
            vhost.declare_queue(
                "Sales",
                json!({"x-queue-type": "quorum", "x-delivery-limit": 20}),
            );
        }
        "billing-without-queue" => {
            let yaml = "endpoints:\n  - address: Billing\n";
            std::fs::write(dir.join("billing.yaml"), yaml).unwrap();
        }
        other => {
            panic!("README.md: given={other} is not a state tests/readme/givens.rs knows how to prepare")
        }
    }
}

/// One delayed message (2^20 s) for address Sales, waiting in level 20, and
/// the management statistics caught up with it (they lag by seconds).
fn message_in_level_20(vhost: &TestVhost) {
    let bits: Vec<&str> = (0..28)
        .rev()
        .map(|bit| if bit == 20 { "1" } else { "0" })
        .collect();
    let key = format!("{}.Sales", bits.join("."));
    assert!(vhost.publish("nsb.v2.delay-level-20", &key, "order 1"));
    let counted = vhost.wait_for(Duration::from_secs(60), || {
        (vhost.queue_info("nsb.v2.delay-level-20")["messages"] == 1).then_some(())
    });
    assert!(counted.is_some(), "the statistics never showed the message");
}

/// The NServiceBus v1 cascade (`v1.yaml`, vhost `shop`) holding four delayed
/// messages: three for the queue Sales, one for Ghost, which has none.
fn v1_cascade_with_messages(vhost: &TestVhost, dir: &Path) {
    std::fs::write(dir.join("v1.yaml"), moving::V1).unwrap();
    moving::install_from_render(vhost, moving::V1);
    vhost.declare_queue("Sales", json!({}));
    let orders = orders(&[
        ("Sales", 1500),
        ("Sales", 1600),
        ("Sales", 3000),
        ("Ghost", 3100),
    ]);
    moving::Client::new(vhost).publish_delayed(&moving::cascade(moving::V1, vhost), &orders);
}

/// Three delayed orders for Sales in the scene's cascade (`given=cascade`),
/// and the queue Sales in every vhost of the scene, so they can be delivered.
fn orders_for_sales(scene: &Scene) {
    for vhost in std::iter::once(&scene.vhost).chain(&scene.to_vhost) {
        vhost.declare_queue("Sales", json!({}));
    }
    let orders = orders(&[("Sales", 1500), ("Sales", 3000), ("Sales", 70000)]);
    let cascade = moving::cascade(SHIPPED_TOPOLOGY, &scene.vhost);
    moving::Client::new(&scene.vhost).publish_delayed(&cascade, &orders);
}

/// NServiceBus delayed messages `order-0`, `order-1`, … sent now, each for
/// (address, delay in seconds).
fn orders(specs: &[(&str, u64)]) -> Vec<moving::Delayed> {
    let now = moving::now_micros();
    specs
        .iter()
        .enumerate()
        .map(|(k, (address, delay_seconds))| moving::Delayed {
            id: format!("order-{k}"),
            address: address.to_string(),
            delay_seconds: *delay_seconds,
            sent_micros: now,
            broken_headers: None,
        })
        .collect()
}
