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
