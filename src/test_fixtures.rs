//! Unit-test fixtures shared by the pure modules: a desired cascade from a
//! topology text, and what a healthy single-node 3.10 broker reports right
//! after a correct install of it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cascade::{Arguments, Desired};
use crate::observe::{BrokerInfo, Observed, ObservedBinding, ObservedExchange, ObservedQueue};
use crate::topology::Topology;

pub fn desired(text: &str) -> Desired {
    Desired::new(&Topology::parse(Path::new("t.yaml"), text).unwrap(), "v")
}

/// An empty, running quorum queue with one member, online.
pub fn observed_queue(name: &str, arguments: Arguments) -> ObservedQueue {
    ObservedQueue {
        name: name.into(),
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments,
        queue_type: "quorum".into(),
        messages: Some(0),
        messages_ready: Some(0),
        messages_unacknowledged: Some(0),
        messages_dlx: Some(0),
        consumers: Some(0),
        members: vec!["rabbit@a".into()],
        online: vec!["rabbit@a".into()],
        leader: Some("rabbit@a".into()),
        policy: None,
        operator_policy: None,
        effective_policy_definition: None,
        state: Some("running".into()),
        messages_details: None,
    }
}

/// What the broker holds right after a correct install.
pub fn installed(d: &Desired) -> Observed {
    let mut observed = Observed::default();
    for e in &d.exchanges {
        observed.exchanges.insert(
            e.name.clone(),
            ObservedExchange {
                name: e.name.clone(),
                kind: e.kind.clone(),
                durable: e.durable,
                auto_delete: e.auto_delete,
                internal: e.internal,
                arguments: e.arguments.clone(),
            },
        );
    }
    for q in &d.queues {
        observed
            .queues
            .insert(q.name.clone(), observed_queue(&q.name, q.arguments.clone()));
    }
    for b in &d.bindings {
        observed.bindings.push(ObservedBinding {
            source: b.source.clone(),
            destination: b.destination.clone(),
            destination_type: b.destination_type,
            routing_key: b.routing_key.clone(),
            arguments: Arguments::new(),
        });
    }
    observed.broker = Some(BrokerInfo {
        rabbitmq_version: "3.10.8".into(),
        feature_flags: BTreeMap::from([
            ("quorum_queue".into(), "enabled".into()),
            ("stream_queue".into(), "enabled".into()),
        ]),
        statistics_disabled: false,
        cluster_nodes: 1,
        alarms: Vec::new(),
        unreadable: vec![],
        nodes: vec![],
        deprecated_used: None,
    });
    observed
}

/// The target of `amqp://guest:guest@localhost:5672/%2f`, vhost `/`.
pub fn target() -> crate::target::Target {
    let topology = Topology::parse(Path::new("t.yaml"), "").unwrap();
    crate::target::resolve(
        &topology,
        &crate::target::Overrides {
            url: &["amqp://guest:guest@localhost:5672/%2f".to_string()],
            timeout_seconds: 30.0,
            ..Default::default()
        },
    )
    .unwrap()
    .remove(0)
}

/// Asserts that human text, as printed (binding keys written short, see
/// `fanout`), stays within 80 columns.
pub fn assert_fits_80_columns(what: &str, text: &str) {
    let printed = crate::report::short_binding_keys(text);
    for line in printed.lines() {
        assert!(
            line.chars().count() <= 80,
            "{what}: a line of {} columns:\n{line}\n\n{printed}",
            line.chars().count()
        );
    }
}

/// A correct install whose level 05 queue was declared by hand with a 1 s
/// TTL and nothing else: one conflicting entity with four differences.
pub fn installed_with_hand_made_level_5(d: &Desired) -> Observed {
    let mut observed = installed(d);
    let queue = observed.queues.get_mut("nsb.v2.delay-level-05").unwrap();
    queue.arguments = Arguments::from([
        (
            "x-queue-type".into(),
            crate::topology::ArgValue::Str("quorum".into()),
        ),
        ("x-message-ttl".into(), crate::topology::ArgValue::Int(1000)),
    ]);
    observed
}
