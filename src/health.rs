//! Health beyond structure: what makes a delayed message arrive early, late,
//! twice or never even where every entity is present — policies that
//! override the level queues' arguments, broker requirements, quorum
//! membership, jammed levels, endpoint addresses that receive each other's
//! messages — and what each level holds. Pure: verify does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cascade::{Desired, Role};
use crate::diff::{Finding, Severity, Structure};
use crate::observe::{BrokerInfo, Observed, ObservedQueue};
use crate::topology::QueueType;
use crate::versions;
use crate::{capacity, deprecations};

mod cluster;
mod jams;
mod policies;
mod staging;
pub use cluster::{alarm_findings, quorum_findings, unsafe_to_write, WriteHazard};
pub use jams::{backlogged_levels, history_query, jam_findings};
pub use policies::policy_findings;
pub use staging::staging_findings;

/// One level queue as verify reports it (JSON `levels`, the text table's rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelState {
    pub level: u8,
    pub queue: String,
    /// Delayed messages held; `None` when the queue is missing.
    pub messages: Option<u64>,
    pub members: usize,
    pub online: usize,
    /// The node the quorum queue's leader (and dead-letter worker) runs on.
    #[serde(default)]
    pub leader: Option<String>,
}

/// Queues by name, as `/api/queues/{vhost}` lists them.
pub type Queues = BTreeMap<String, ObservedQueue>;

/// Delayed messages a level queue holds per the statistics, backlog included.
pub fn delayed_messages(queue: &ObservedQueue) -> u64 {
    queue.held_messages()
}

/// Every level queue, highest level first, with what it holds and its members.
pub fn levels(desired: &Desired, queues: &Queues) -> Vec<LevelState> {
    desired
        .queues
        .iter()
        .map(|q| {
            let found = queues.get(&q.name);
            LevelState {
                level: q.level,
                queue: q.name.clone(),
                messages: found.map(delayed_messages),
                members: found.map_or(0, |f| f.members.len()),
                online: found.map_or(0, |f| f.online.len()),
                leader: found.and_then(|f| f.leader.clone()),
            }
        })
        .collect()
}

/// Every health finding one look at the broker gives (a jam needs a second look).
pub fn findings(desired: &Desired, observed: &Observed, structure: &Structure) -> Vec<Finding> {
    let mut found = policy_findings(desired, observed);
    found.extend(crate::loss_guard::findings(desired, &observed.queues));
    found.extend(staging_findings(desired, &observed.queues));
    if let Some(broker) = &observed.broker {
        found.extend(broker_findings(desired, broker));
        found.extend(versions::findings(desired, &broker.rabbitmq_version));
        found.extend(deprecations::findings(
            desired,
            &observed.queues,
            broker.deprecated_used.as_deref(),
        ));
        // Room for one more cascade on each node.
        found.extend(capacity::headroom_findings(
            &broker.nodes,
            desired.levels,
            capacity::Needs::default(),
        ));
        found.extend(quorum_findings(
            desired,
            &observed.queues,
            broker.cluster_nodes,
        ));
        found.extend(alarm_findings(broker));
    }
    found.extend(address_suffix_findings(desired, structure));
    found.extend(information(desired, &observed.queues, structure));
    found
}

fn finding(
    severity: Severity,
    entity: String,
    kind: &str,
    (expected, actual): (String, String),
    message: String,
    level: Option<u8>,
) -> Finding {
    Finding {
        severity,
        entity,
        kind: kind.to_string(),
        expected: Some(expected),
        actual: Some(actual),
        message,
        level,
    }
}

/// Broker version, feature flags and statistics.
pub fn broker_findings(desired: &Desired, broker: &BrokerInfo) -> Vec<Finding> {
    let mut found = Vec::new();
    if broker.statistics_disabled {
        found.push(finding(
            Severity::Warning,
            "broker".into(),
            "statistics_disabled",
            ("enabled".into(), "disabled".into()),
            "management statistics are disabled: delayed-message counts are unknown and a \
             jammed level cannot be seen"
                .into(),
            None,
        ));
    }
    // At-least-once dead-lettering between quorum queues is what needs a new broker.
    if desired.queue_type != QueueType::Quorum {
        return found;
    }
    // 4.x has every 3.x flag on, and no longer lists some of them.
    if versions::flags_always_on(&broker.rabbitmq_version) {
        return found;
    }
    let flags_unreadable = broker.unreadable.contains(&"feature-flags");
    if flags_unreadable {
        found.push(finding(
            Severity::Info,
            "broker".into(),
            "unchecked",
            ("feature flags read".into(), "refused".into()),
            "feature flags quorum_queue and stream_queue not checked: reading them needs the \
             administrator tag"
                .into(),
            None,
        ));
    }
    if versions::Version::parse(&broker.rabbitmq_version).is_some_and(|v| v.series() < (3, 10)) {
        found.push(finding(
            Severity::Error,
            "broker".into(),
            "broker_version",
            ("3.10 or newer".into(), broker.rabbitmq_version.clone()),
            format!(
                "RabbitMQ {} is older than 3.10: quorum queues dead-letter at most once there, \
                 so delayed messages can be lost between levels",
                broker.rabbitmq_version
            ),
            None,
        ));
    }
    for flag in ["quorum_queue", "stream_queue"]
        .into_iter()
        .filter(|_| !flags_unreadable)
    {
        let state = broker
            .feature_flags
            .get(flag)
            .map_or("absent", String::as_str);
        if state != "enabled" {
            found.push(finding(
                Severity::Error,
                format!("feature flag {flag}"),
                "feature_flag",
                ("enabled".into(), state.into()),
                format!(
                    "feature flag `{flag}` is {state}: at-least-once dead-lettering between \
                     quorum level queues needs it (`rabbitmqctl enable_feature_flag {flag}`)"
                ),
                None,
            ));
        }
    }
    found
}

/// The addresses bound on the delivery exchange: listed endpoints and the
/// well-formed endpoint bindings applications made themselves.
fn endpoint_addresses(desired: &Desired, structure: &Structure) -> BTreeSet<String> {
    let listed = desired.endpoint_bindings().filter_map(|b| match &b.role {
        Role::EndpointBinding(address) => Some(address.clone()),
        _ => None,
    });
    let unlisted = structure
        .unlisted_endpoints
        .iter()
        .filter_map(|b| b.routing_key.strip_prefix("#.").map(str::to_string));
    listed.chain(unlisted).collect()
}

/// `#.Sales` also matches keys ending in `.Big.Sales` (SPEC §1).
pub fn address_suffix_findings(desired: &Desired, structure: &Structure) -> Vec<Finding> {
    let addresses = endpoint_addresses(desired, structure);
    let mut found = Vec::new();
    for short in &addresses {
        for long in &addresses {
            if long.ends_with(&format!(".{short}")) {
                found.push(finding(
                    Severity::Warning,
                    format!("endpoint {short}"),
                    "address_suffix",
                    (
                        format!("only messages for {short}"),
                        format!("also messages for {long}"),
                    ),
                    format!(
                        "endpoint address `{short}` is a dot-suffix of `{long}`: its binding \
                         `#.{short}` also matches `{long}`, so {short} receives {long}'s \
                         delayed messages too"
                    ),
                    None,
                ));
            }
        }
    }
    found
}

/// Delayed messages per level, and endpoint bindings the topology does not list.
pub fn information(desired: &Desired, queues: &Queues, structure: &Structure) -> Vec<Finding> {
    let mut found = Vec::new();
    for level_queue in &desired.queues {
        let Some(queue) = queues.get(&level_queue.name) else {
            continue;
        };
        let held = delayed_messages(queue);
        if held == 0 {
            continue;
        }
        found.push(finding(
            Severity::Info,
            format!("queue {}", queue.name),
            "delayed_messages",
            ("-".into(), held.to_string()),
            format!(
                "level {:02} holds {held} delayed message{} ({} ready, {} dead-lettering)",
                level_queue.level,
                if held == 1 { "" } else { "s" },
                queue.messages_ready.unwrap_or(0),
                queue.messages_dlx.unwrap_or(0)
            ),
            Some(level_queue.level),
        ));
    }
    for binding in &structure.unlisted_endpoints {
        let entity = crate::diff::binding_entity((
            &binding.source,
            &binding.destination,
            binding.destination_type,
            &binding.routing_key,
        ));
        found.push(finding(
            Severity::Info,
            entity.clone(),
            "unlisted_endpoint",
            ("-".into(), "present".into()),
            format!(
                "{entity} is an endpoint binding the topology does not list (endpoints make \
                 their own); its destination is checked all the same"
            ),
            None,
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::{Arguments, DestinationKind};
    use crate::diff::structure;
    use crate::observe::ObservedBinding;
    use crate::test_fixtures::{desired, installed, observed_queue as queue};

    /// The same broker at a release without known defects.
    fn on_current_broker(mut observed: Observed) -> Observed {
        if let Some(broker) = &mut observed.broker {
            broker.rabbitmq_version = "4.3.3".into();
        }
        observed
    }

    fn all_findings(d: &Desired, observed: &Observed) -> Vec<Finding> {
        findings(d, observed, &structure(d, observed))
    }

    #[test]
    fn a_healthy_cascade_has_no_findings() {
        let d = desired("endpoints:\n  - address: Sales\n");
        let mut observed = installed(&d);
        observed
            .queues
            .insert("Sales".into(), queue("Sales", Arguments::new()));
        // 3.10.8 has known defects and is past support: only those are found.
        let on_3_10 = all_findings(&d, &observed);
        assert!(
            on_3_10
                .iter()
                .all(|f| f.kind == "broker_defect" || f.kind == "end_of_community_support"),
            "{on_3_10:?}"
        );
        assert!(all_findings(&d, &on_current_broker(observed.clone())).is_empty());
        let levels = levels(&d, &observed.queues);
        assert_eq!(levels.len(), 28);
        assert_eq!(
            levels[27],
            LevelState {
                level: 0,
                queue: "nsb.v2.delay-level-00".into(),
                messages: Some(0),
                members: 1,
                online: 1,
                leader: Some("rabbit@a".into()),
            }
        );
    }

    #[test]
    fn an_old_broker_or_disabled_flags_are_errors_for_quorum_cascades() {
        let d = desired("");
        let broker = BrokerInfo {
            rabbitmq_version: "3.9.29".into(),
            feature_flags: BTreeMap::from([("quorum_queue".into(), "enabled".into())]),
            statistics_disabled: true,
            cluster_nodes: 1,
            alarms: vec![],
            unreadable: vec![],
            nodes: vec![],
            deprecated_used: None,
        };
        let found = broker_findings(&d, &broker);
        let kinds: Vec<(&str, Severity)> = found
            .iter()
            .map(|f| (f.kind.as_str(), f.severity))
            .collect();
        assert_eq!(
            kinds,
            [
                ("statistics_disabled", Severity::Warning),
                ("broker_version", Severity::Error),
                ("feature_flag", Severity::Error)
            ]
        );
        assert_eq!(found[2].entity, "feature flag stream_queue");
        assert_eq!(found[2].actual.as_deref(), Some("absent"));
        let v1 = desired(include_str!("../examples/nservicebus-v1.yaml"));
        assert_eq!(broker_findings(&v1, &broker).len(), 1);
    }

    #[test]
    fn a_4x_broker_is_not_asked_for_the_3x_feature_flags() {
        let d = desired("");
        let mut broker = installed(&d).broker.unwrap();
        broker.rabbitmq_version = "4.3.3".into();
        broker.feature_flags.clear();
        broker.unreadable = vec!["feature-flags"];
        assert!(broker_findings(&d, &broker).is_empty());
    }

    #[test]
    fn feature_flags_a_monitoring_user_may_not_read_are_noted_as_unchecked() {
        let d = desired("");
        let mut broker = installed(&d).broker.unwrap();
        broker.feature_flags.clear();
        broker.unreadable = vec!["feature-flags"];
        let found = broker_findings(&d, &broker);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].kind.as_str(), found[0].severity),
            ("unchecked", Severity::Info)
        );
    }

    #[test]
    fn a_dot_suffix_address_is_a_warning_including_unlisted_endpoints() {
        let d = desired("endpoints:\n  - address: Sales\n  - address: Orders\n");
        let mut observed = installed(&d);
        for name in ["Sales", "Orders", "Big.Sales"] {
            observed
                .queues
                .insert(name.into(), queue(name, Arguments::new()));
        }
        observed.bindings.push(ObservedBinding {
            source: "nsb.v2.delay-delivery".into(),
            destination: "Big.Sales".into(),
            destination_type: DestinationKind::Queue,
            routing_key: "#.Big.Sales".into(),
            arguments: Arguments::new(),
        });
        let found = all_findings(&d, &on_current_broker(observed));
        let warnings: Vec<_> = found
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .collect();
        assert_eq!(warnings.len(), 1, "{found:?}");
        assert_eq!(warnings[0].entity, "endpoint Sales");
        assert_eq!(warnings[0].kind, "address_suffix");
        assert!(found.iter().any(|f| f.kind == "unlisted_endpoint"));
        // "Sales" is not a dot-suffix of "PreSales".
        let d = desired("endpoints:\n  - address: Sales\n  - address: PreSales\n");
        assert!(address_suffix_findings(&d, &structure(&d, &installed(&d))).is_empty());
    }

    #[test]
    fn held_messages_count_the_dead_letter_backlog_once() {
        let d = desired("");
        let mut observed = installed(&d);
        let q = observed.queues.get_mut("nsb.v2.delay-level-00").unwrap();
        // As seen on 3.10.8 for a jammed message: `messages` already includes it.
        (q.messages, q.messages_ready, q.messages_dlx) = (Some(1), Some(0), Some(1));
        let q = observed.queues.get_mut("nsb.v2.delay-level-04").unwrap();
        (q.messages, q.messages_ready) = (Some(3), Some(3));
        let levels = levels(&d, &observed.queues);
        assert_eq!(levels[27].messages, Some(1));
        assert_eq!(levels[23].messages, Some(3));
        let info = information(&d, &observed.queues, &structure(&d, &observed));
        assert_eq!(info.len(), 2);
        assert_eq!(
            info[0].message,
            "level 04 holds 3 delayed messages (3 ready, 0 dead-lettering)"
        );
    }
}
