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
use serde_json::json;
use support::*;

fn target_and_desired(vhost: &TestVhost, topology: &str) -> (Target, Desired) {
    let topology = Topology::parse(Path::new("t.yaml"), topology).unwrap();
    let url = vhost.url();
    let targets = target::resolve(
        &topology,
        &target::Overrides {
            url: Some(&url),
            management_url: Some(MANAGEMENT),
            vhosts: &[],
            timeout_seconds: 30.0,
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

/// Runs async library code from a synchronous test (the fixture's HTTP
/// client is blocking and may not run inside a runtime).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn declare_level_queues_with_level_5_taken(lanes: usize) {
    let vhost = TestVhost::new(&format!("apply-conflict-{lanes}"));
    let (target, desired) = target_and_desired(&vhost, "");
    declare_level_5_with_ttl_99_s(&vhost);
    let ops: Vec<Operation> = desired
        .queues
        .iter()
        .cloned()
        .map(Operation::DeclareQueue)
        .collect();
    let results = block_on(async {
        let connection = delaytopo::amqp::connect(&target).await.unwrap();
        let results = apply::apply(&connection, &target, &ops, lanes, &ProgressBar::hidden()).await;
        delaytopo::amqp::close(&connection, &target).await;
        results
    });

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

#[test]
fn a_conflict_on_one_pipelined_channel_leaves_no_other_queue_undeclared() {
    declare_level_queues_with_level_5_taken(1);
}

#[test]
fn a_conflict_among_eight_lanes_names_only_its_own_queue() {
    declare_level_queues_with_level_5_taken(8);
}
