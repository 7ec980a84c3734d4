use super::*;
use crate::test_fixtures::{desired, installed};
use serde_json::json;

fn queue(name: &str, arguments: serde_json::Value, policy: serde_json::Value) -> ObservedQueue {
    serde_json::from_value(json!({
        "name": name, "durable": true, "exclusive": false, "auto_delete": false,
        "arguments": arguments, "type": if arguments.get("x-queue-type").is_some() { "quorum" } else { "classic" },
        "effective_policy_definition": policy,
    }))
    .unwrap()
}

fn observed_binding(
    source: &str,
    destination: &str,
    kind: DestinationKind,
    key: &str,
) -> ObservedBinding {
    ObservedBinding {
        source: source.into(),
        destination: destination.into(),
        destination_type: kind,
        routing_key: key.into(),
        arguments: Arguments::new(),
    }
}

#[test]
fn an_installed_cascade_is_planned_whole_upstream_first() {
    let d = desired("endpoints:\n  - address: Sales\n");
    let plan = Plan::observed(&d, &installed(&d));
    assert_eq!(plan.exchanges.len(), 29);
    assert_eq!(plan.exchanges[0].name, "nsb.v2.delay-level-27");
    assert_eq!(plan.exchanges[28].name, "nsb.v2.delay-delivery");
    assert_eq!(plan.queues.len(), 28);
    assert!(plan.queues.iter().all(|q| q.at_least_once));
    // Level 0 delivers through the delivery exchange, which stays until
    // the end: level 1's TTL is the one that bounds the checks.
    assert_eq!(plan.shortest_ttl_ms(), 2000);
    assert_eq!(plan.recorded.len(), 57);
    assert!(plan.foreign_inflow.is_empty());
    let stop = plan.stop_inflow();
    assert_eq!(stop.len(), 28);
    assert_eq!(
        plan.delivery_exchange().unwrap().name,
        "nsb.v2.delay-delivery"
    );
    assert_eq!(
        stop[0],
        Operation::DeleteExchange("nsb.v2.delay-level-27".into())
    );
}

#[test]
fn the_gap_after_a_stop_counts_what_a_fresh_look_lacks() {
    let d = desired("endpoints:\n  - address: Sales\n");
    let observed = installed(&d);
    let plan = Plan::observed(&d, &observed);
    let whole = plan.missing_after_stop(&observed);
    assert_eq!(whole.exchanges, (0, 28));
    assert_eq!(whole.bindings.0, 0);
    let mut after = observed.clone();
    after.exchanges.remove("nsb.v2.delay-level-27");
    after
        .bindings
        .retain(|b| b.source != "nsb.v2.delay-level-27");
    let gap = plan.missing_after_stop(&after);
    assert_eq!(gap.exchanges, (1, 28));
    assert_eq!(gap.bindings, (2, whole.bindings.1));
}

#[test]
fn restore_declares_downstream_first_and_binds_once_both_ends_exist() {
    let d = desired("endpoints:\n  - address: Sales\n");
    let plan = Plan::observed(&d, &installed(&d));
    let ops = plan.restore_after_stop();
    // The delivery exchange and its endpoint binding were never removed.
    assert_eq!(ops.len(), 28 + 56);
    let mut declared = BTreeSet::from(["nsb.v2.delay-delivery".to_string()]);
    for op in &ops {
        match op {
            Operation::DeclareExchange(e) => {
                declared.insert(e.name.clone());
            }
            Operation::Bind(b) => {
                assert!(declared.contains(&b.source), "{b:?} before its source");
                if b.destination_type == DestinationKind::Exchange {
                    assert!(
                        declared.contains(&b.destination),
                        "{b:?} before its destination"
                    );
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(&ops[0], Operation::DeclareExchange(e) if e.name == "nsb.v2.delay-level-00"));
    // Level 0's bindings come right after it.
    assert!(matches!(&ops[1], Operation::Bind(b) if b.source == "nsb.v2.delay-level-00"));
}

#[test]
fn strays_and_foreign_inflow_are_recorded_and_restored() {
    let d = desired("");
    let mut observed = installed(&d);
    // A stray from level 3 to a foreign queue, a foreign exchange into
    // the delivery exchange, and a foreign exchange into a level queue.
    observed.bindings.push(observed_binding(
        "nsb.v2.delay-level-03",
        "audit",
        DestinationKind::Queue,
        "#",
    ));
    observed.bindings.push(observed_binding(
        "legacy",
        "nsb.v2.delay-delivery",
        DestinationKind::Exchange,
        "#",
    ));
    observed.bindings.push(observed_binding(
        "legacy",
        "nsb.v2.delay-level-05",
        DestinationKind::Queue,
        "x",
    ));
    let plan = Plan::observed(&d, &observed);
    assert_eq!(plan.recorded.len(), 58);
    assert_eq!(plan.foreign_inflow.len(), 1);
    assert_eq!(plan.stop_inflow().len(), 29);
    let restored: Vec<_> = plan
        .restore_after_stop()
        .into_iter()
        .filter(|op| matches!(op, Operation::Bind(_)))
        .collect();
    // The cascade's 56, the stray and the foreign inflow; legacy ->
    // delivery stays in place with the delivery exchange.
    assert_eq!(restored.len(), 56 + 2);
    assert_eq!(plan.outgoing().len(), 57);
    assert_eq!(plan.outgoing()[0].source, "nsb.v2.delay-level-27");
}

#[test]
fn a_half_installed_cascade_plans_only_what_exists() {
    let d = desired("");
    let mut observed = installed(&d);
    observed.exchanges.retain(|name, _| name.ends_with("-00"));
    observed.queues.retain(|name, _| name.ends_with("-01"));
    observed.bindings.clear();
    let plan = Plan::observed(&d, &observed);
    assert_eq!(plan.exchanges.len(), 1);
    assert_eq!(plan.queues.len(), 1);
    assert_eq!(plan.queues[0].level, 1);
    assert!(Plan::observed(&d, &Observed::default()).is_empty());
}

#[test]
fn an_assumed_plan_keeps_what_amqp_found() {
    let d = desired("endpoints:\n  - address: Sales\n");
    let mut plan = Plan::assumed(&d);
    assert_eq!(plan.recorded.len(), 57);
    let mut exchanges = vec![false; 29];
    exchanges[28] = true; // only the delivery exchange
    let mut queues = vec![false; 28];
    queues[0] = true; // only level 27
    plan.retain_present(&exchanges, &queues);
    assert_eq!(plan.exchanges.len(), 1);
    assert_eq!(plan.queues[0].level, 27);
    assert_eq!(plan.recorded.len(), 1);
    assert_eq!(plan.recorded[0].destination, "Sales");
}

#[test]
fn classic_queues_and_drop_head_policies_are_not_at_least_once() {
    let classic = queue(
        "q",
        json!({"x-message-ttl": 1000, "x-queue-mode": "lazy"}),
        json!(null),
    );
    assert!(!level_queue(0, &classic).at_least_once);
    let arguments = json!({"x-queue-type": "quorum", "x-dead-letter-strategy": "at-least-once",
                           "x-overflow": "reject-publish", "x-message-ttl": 4000});
    let quorum = queue("q", arguments.clone(), json!(null));
    assert!(level_queue(2, &quorum).at_least_once);
    let dropped = queue("q", arguments.clone(), json!({"overflow": "drop-head"}));
    assert!(!level_queue(2, &dropped).at_least_once);
    let shortened = queue("q", arguments, json!({"message-ttl": 500}));
    assert_eq!(level_queue(2, &shortened).ttl_ms, 500);
}

#[test]
fn holdings_do_not_count_the_backlog_twice() {
    let both = Holding {
        ready_now: 0,
        statistics_messages: 1,
        dead_letter_backlog: 1,
    };
    assert_eq!(both.total(), 1);
    let fresh = Holding {
        ready_now: 2,
        statistics_messages: 0,
        dead_letter_backlog: 1,
    };
    assert_eq!(fresh.total(), 3);
    let mut merged = both.clone();
    merged.merge(&fresh);
    assert_eq!(merged.total(), 3);
}
