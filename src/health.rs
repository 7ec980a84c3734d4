//! Health beyond structure: what makes a delayed message arrive early, late,
//! twice or never even where every entity is present — policies that
//! override the level queues' arguments, broker requirements, quorum
//! membership, jammed levels, endpoint addresses that receive each other's
//! messages — and what each level holds. Pure: verify does the I/O.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::cascade::{Desired, Role};
use crate::diff::{Finding, Severity, Structure};
use crate::observe::{arg_value, BrokerInfo, Observed, ObservedQueue, Policy};
use crate::topology::{ArgValue, QueueType};
use crate::versions;
use crate::{capacity, deprecations};

mod cluster;
mod jams;
pub use cluster::{alarm_findings, quorum_findings};
pub use jams::{backlogged_levels, history_query, jam_findings};

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

/// How a policy key and a queue argument combine on the broker (SPEC §1,
/// and seen on 3.10.8: a user policy's lower `message-ttl` wins over the
/// queue argument too — RabbitMQ takes the lesser of all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Precedence {
    /// The lesser of the argument and the policies' values applies.
    Lesser,
    /// The argument beats a user policy; an operator policy beats both.
    Argument,
    /// As `Argument`, except that on quorum queues the user policy wins.
    ArgumentUnlessQuorum,
}

/// The policy keys that change how a level queue delays, with their
/// precedence, and whether only quorum queues know them.
const WATCHED_KEYS: [(&str, Precedence, bool); 8] = [
    ("message-ttl", Precedence::Lesser, false),
    ("expires", Precedence::Lesser, false),
    ("max-length", Precedence::Lesser, false),
    ("max-length-bytes", Precedence::Lesser, false),
    ("delivery-limit", Precedence::Lesser, true),
    ("overflow", Precedence::ArgumentUnlessQuorum, false),
    ("dead-letter-exchange", Precedence::Argument, false),
    ("dead-letter-strategy", Precedence::Argument, true),
];

/// A set of policies (user or operator) ready to be matched against queue names.
struct PolicySet<'a> {
    operator: bool,
    /// Each policy with its pattern, or `None` when the pattern is not a
    /// regex this program understands (then the broker's word is taken).
    policies: Vec<(&'a Policy, Option<Regex>)>,
}

impl<'a> PolicySet<'a> {
    fn new(policies: &'a [Policy], operator: bool) -> PolicySet<'a> {
        PolicySet {
            operator,
            policies: policies
                .iter()
                .map(|p| (p, Regex::new(&p.pattern).ok()))
                .collect(),
        }
    }

    /// The policy in effect on `queue`: the highest priority among those
    /// whose pattern matches its name now, or that the broker reports on the
    /// queue (its report lags 5–10 s, SPEC §1, but speaks the broker's regex
    /// dialect). Ties go to the first name, to be deterministic.
    fn in_effect(&self, queue: &ObservedQueue) -> Option<&'a Policy> {
        let reported = if self.operator {
            queue.operator_policy.as_deref()
        } else {
            queue.policy.as_deref()
        };
        self.policies
            .iter()
            .filter(|(policy, pattern)| {
                applies_to(&policy.apply_to, &queue.queue_type)
                    && (pattern.as_ref().is_some_and(|p| p.is_match(&queue.name))
                        || reported == Some(policy.name.as_str()))
            })
            .map(|(policy, _)| *policy)
            .min_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)))
    }
}

fn applies_to(apply_to: &str, queue_type: &str) -> bool {
    match apply_to {
        "all" | "queues" => true,
        "quorum_queues" => queue_type == "quorum",
        "classic_queues" => queue_type == "classic" || queue_type.is_empty(),
        "streams" => queue_type == "stream",
        _ => false,
    }
}

fn as_int(value: &ArgValue) -> Option<i64> {
    match value {
        ArgValue::Int(i) => Some(*i),
        _ => None,
    }
}

/// One key a policy changes on one queue.
struct Change {
    key: &'static str,
    argument: Option<ArgValue>,
    value: ArgValue,
}

/// Policies and operator policies that change a level queue's behaviour.
pub fn policy_findings(desired: &Desired, observed: &Observed) -> Vec<Finding> {
    let user_policies = PolicySet::new(&observed.policies, false);
    let operator_policies = PolicySet::new(&observed.operator_policies, true);
    let mut found = Vec::new();
    for level_queue in &desired.queues {
        let Some(queue) = observed.queues.get(&level_queue.name) else {
            continue;
        };
        let quorum = queue.queue_type == "quorum";
        let user = user_policies.in_effect(queue);
        let operator = operator_policies.in_effect(queue);
        let value_of = |policy: Option<&Policy>, key: &str| {
            policy.and_then(|p| p.definition.get(key).cloned().map(arg_value))
        };
        // Keyed by (operator?, policy name) so each policy gets one finding per queue.
        let mut changes: BTreeMap<(bool, &str), Vec<Change>> = BTreeMap::new();
        for (key, precedence, quorum_only) in WATCHED_KEYS {
            if quorum_only && !quorum {
                continue;
            }
            let argument = queue.arguments.get(&format!("x-{key}")).cloned();
            let user_value = value_of(user, key);
            let operator_value = value_of(operator, key);
            let effective = match precedence {
                Precedence::Lesser => [&argument, &user_value, &operator_value]
                    .into_iter()
                    .flatten()
                    .filter_map(as_int)
                    .min()
                    .map(ArgValue::Int),
                Precedence::Argument | Precedence::ArgumentUnlessQuorum => {
                    let user_wins = precedence == Precedence::ArgumentUnlessQuorum && quorum;
                    let below_operator = if user_wins {
                        user_value.clone().or(argument.clone())
                    } else {
                        argument.clone().or(user_value.clone())
                    };
                    operator_value.clone().or(below_operator)
                }
            };
            let Some(effective) = effective else { continue };
            if Some(&effective) == argument.as_ref() {
                continue;
            }
            let responsible = [(operator, true, operator_value), (user, false, user_value)];
            for (policy, is_operator, value) in responsible {
                if let (Some(policy), Some(value)) = (policy, value) {
                    if value == effective {
                        changes
                            .entry((is_operator, policy.name.as_str()))
                            .or_default()
                            .push(Change {
                                key,
                                argument: argument.clone(),
                                value,
                            });
                        if precedence != Precedence::Lesser {
                            break;
                        }
                    }
                }
            }
        }
        for ((is_operator, name), changes) in changes {
            found.push(policy_finding(
                &queue.name,
                level_queue.level,
                quorum,
                is_operator,
                name,
                &changes,
            ));
        }
    }
    found
}

fn policy_finding(
    queue: &str,
    level: u8,
    quorum: bool,
    operator: bool,
    name: &str,
    changes: &[Change],
) -> Finding {
    let what = if operator {
        "operator policy"
    } else {
        "policy"
    };
    let expected = changes
        .iter()
        .map(|c| {
            let shown = c
                .argument
                .as_ref()
                .map_or("(absent)".into(), |a| a.to_string());
            format!("x-{}={shown}", c.key)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let actual = changes
        .iter()
        .map(|c| format!("{}={}", c.key, c.value))
        .collect::<Vec<_>>()
        .join(", ");
    let effects = changes
        .iter()
        .map(|c| consequence(c, level, quorum))
        .collect::<Vec<_>>()
        .join("; ");
    finding(
        Severity::Error,
        format!("queue {queue}"),
        if operator {
            "harmful_operator_policy"
        } else {
            "harmful_policy"
        },
        (expected, format!("{actual} ({what} {name})")),
        format!("{what} `{name}` applies to queue {queue} and sets {actual}: {effects}"),
        Some(level),
    )
}

/// What a changed key does to the delayed messages of a level.
fn consequence(change: &Change, level: u8, quorum: bool) -> String {
    let value = &change.value;
    match change.key {
        "message-ttl" => format!(
            "delayed messages leave level {level:02} after {value} ms instead of {} ms and \
             arrive early",
            change
                .argument
                .as_ref()
                .map_or("its".into(), |a| a.to_string())
        ),
        "expires" => format!(
            "the broker deletes the level queue, with the delayed messages in it, after \
             {value} ms without consumers (a level queue never has any)"
        ),
        "max-length" => format!(
            "the level holds at most {value} messages; more delayed messages are refused \
             or dropped"
        ),
        "max-length-bytes" => format!(
            "the level holds at most {value} bytes; more delayed messages are refused or \
             dropped"
        ),
        "overflow" if quorum => format!(
            "overflow {value} turns at-least-once dead-lettering into at-most-once: delayed \
             messages can be lost between levels"
        ),
        "overflow" => format!("overflow {value}: a full level drops delayed messages"),
        "dead-letter-exchange" => format!(
            "expired messages go to {value} instead of the next hop: delayed messages are \
             misrouted or jam the level"
        ),
        "dead-letter-strategy" => {
            format!("dead-lettering becomes {value}: delayed messages can be lost between levels")
        }
        "delivery-limit" => {
            format!("a message returned more than {value} times is dropped or dead-lettered early")
        }
        other => format!("{other} changes to {value}"),
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
    use serde_json::json;

    fn policy(name: &str, pattern: &str, definition: serde_json::Value, priority: i64) -> Policy {
        serde_json::from_value(json!({
            "name": name, "pattern": pattern, "apply-to": "queues",
            "definition": definition, "priority": priority
        }))
        .unwrap()
    }

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
    fn a_lower_message_ttl_policy_wins_over_the_argument() {
        let d = desired("");
        let mut observed = installed(&d);
        observed.policies.push(policy(
            "short",
            r"^nsb\.v2\.delay-level-05$",
            json!({"message-ttl": 1000}),
            0,
        ));
        let found = policy_findings(&d, &observed);
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.entity, "queue nsb.v2.delay-level-05");
        assert_eq!(f.kind, "harmful_policy");
        assert_eq!(f.level, Some(5));
        assert_eq!(f.expected.as_deref(), Some("x-message-ttl=32000"));
        assert_eq!(f.actual.as_deref(), Some("message-ttl=1000 (policy short)"));
        assert!(f.message.contains("arrive early"), "{}", f.message);
    }

    #[test]
    fn a_higher_message_ttl_or_a_dead_letter_exchange_policy_changes_nothing() {
        let d = desired("");
        let mut observed = installed(&d);
        observed.policies.push(policy(
            "harmless",
            "^nsb",
            json!({"message-ttl": 999_999_999_999i64, "dead-letter-exchange": "elsewhere",
                   "dead-letter-strategy": "at-most-once", "queue-leader-locator": "balanced"}),
            0,
        ));
        assert!(policy_findings(&d, &observed).is_empty());
    }

    #[test]
    fn overflow_from_a_user_policy_wins_on_quorum_queues_only() {
        let d = desired("");
        let mut observed = installed(&d);
        observed.policies.push(policy(
            "drop",
            "level-0[0-1]$",
            json!({"overflow": "drop-head"}),
            0,
        ));
        let found = policy_findings(&d, &observed);
        assert_eq!(found.len(), 2);
        assert!(found[0].message.contains("at-most-once"));
        observed
            .queues
            .values_mut()
            .for_each(|q| q.queue_type = "classic".into());
        assert!(policy_findings(&d, &observed).is_empty());
    }

    #[test]
    fn policies_that_add_missing_limits_are_flagged_with_their_effect() {
        let d = desired("");
        let mut observed = installed(&d);
        observed.policies.push(policy(
            "limits",
            "delay-level-27",
            json!({"expires": 60000, "max-length": 10, "delivery-limit": 3}),
            0,
        ));
        let found = policy_findings(&d, &observed);
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(
            f.actual.as_deref(),
            Some("expires=60000, max-length=10, delivery-limit=3 (policy limits)")
        );
        assert!(f.message.contains("deletes the level queue"));
        assert!(f.message.contains("at most 10 messages"));
    }

    #[test]
    fn only_the_highest_priority_user_policy_applies() {
        let d = desired("");
        let mut observed = installed(&d);
        observed
            .policies
            .push(policy("bad", "^nsb", json!({"max-length": 1}), 1));
        observed
            .policies
            .push(policy("good", "^nsb", json!({"ha-mode": "all"}), 5));
        assert!(policy_findings(&d, &observed).is_empty());
        observed.policies[0].priority = 9;
        assert_eq!(policy_findings(&d, &observed).len(), 28);
    }

    #[test]
    fn apply_to_exchanges_does_not_touch_queues() {
        let d = desired("");
        let mut observed = installed(&d);
        let mut p = policy("x", ".*", json!({"max-length": 1}), 0);
        p.apply_to = "exchanges".into();
        observed.policies.push(p.clone());
        assert!(policy_findings(&d, &observed).is_empty());
        p.apply_to = "classic_queues".into();
        observed.policies[0] = p.clone();
        assert!(policy_findings(&d, &observed).is_empty());
        p.apply_to = "quorum_queues".into();
        observed.policies[0] = p;
        assert_eq!(policy_findings(&d, &observed).len(), 28);
    }

    #[test]
    fn an_operator_policy_and_a_user_policy_both_apply_the_lesser_wins() {
        let d = desired("");
        let mut observed = installed(&d);
        observed
            .policies
            .push(policy("user", "level-00$", json!({"max-length": 100}), 0));
        observed.operator_policies.push(policy(
            "ops",
            "level-00$",
            json!({"max-length": 50, "message-ttl": 500}),
            0,
        ));
        let found = policy_findings(&d, &observed);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, "harmful_operator_policy");
        assert_eq!(
            found[0].actual.as_deref(),
            Some("message-ttl=500, max-length=50 (operator policy ops)")
        );
    }

    #[test]
    fn the_brokers_report_counts_when_the_pattern_is_beyond_this_regex_dialect() {
        let d = desired("");
        let mut observed = installed(&d);
        // Look-ahead: valid for the broker's PCRE, not for the regex crate.
        observed.policies.push(policy(
            "pcre",
            "^(?=nsb).*-00$",
            json!({"expires": 1000}),
            0,
        ));
        assert!(policy_findings(&d, &observed).is_empty());
        observed
            .queues
            .get_mut("nsb.v2.delay-level-00")
            .unwrap()
            .policy = Some("pcre".into());
        assert_eq!(policy_findings(&d, &observed).len(), 1);
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
