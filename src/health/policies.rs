//! Policies that override the level queues' arguments (SPEC §1): which
//! user and operator policies apply to each level queue, how their keys
//! combine with the queue's arguments, and what each change does to a
//! delayed message. The patterns are matched here, at once, rather than
//! waiting for the broker's effective policy to catch up.

use std::collections::BTreeMap;

use regex::Regex;

use super::finding;
use crate::cascade::Desired;
use crate::diff::{Finding, Severity};
use crate::observe::{arg_value, Observed, ObservedQueue, Policy};
use crate::topology::ArgValue;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{desired, installed};
    use serde_json::json;

    fn policy(name: &str, pattern: &str, definition: serde_json::Value, priority: i64) -> Policy {
        serde_json::from_value(json!({
            "name": name, "pattern": pattern, "apply-to": "queues",
            "definition": definition, "priority": priority
        }))
        .unwrap()
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
}
