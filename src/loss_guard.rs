//! The two arguments without which a quorum cascade loses delayed messages,
//! checked whatever the topology file asks for: at-least-once dead-lettering
//! (at-most-once drops a message whose next hop refuses it) and
//! `reject-publish` overflow (the other modes discard to make room). The
//! structural diff only sees a topology that removes them as "matching", so
//! this check looks at what the broker's level queues actually do. Pure.

use std::collections::BTreeMap;

use crate::cascade::Desired;
use crate::diff::{Finding, Severity};
use crate::health::Queues;
use crate::observe::{arg_value, ObservedQueue};
use crate::topology::{ArgValue, DEFAULT_QUORUM_ARGUMENTS};

/// The policy key that can stand in for each argument where it is absent.
fn policy_key(argument: &str) -> &str {
    argument.trim_start_matches("x-")
}

/// What a quorum level queue does for `argument`: its own argument, else the
/// policy in effect (arguments win over user policies for both keys, and a
/// policy that overrides `overflow` is reported by the policy check).
fn effective(queue: &ObservedQueue, argument: &str) -> Option<ArgValue> {
    queue.arguments.get(argument).cloned().or_else(|| {
        queue
            .effective_policy_definition
            .as_ref()
            .and_then(|d| d.get(policy_key(argument)))
            .cloned()
            .map(arg_value)
    })
}

/// One error per missing safeguard, naming the levels that lack it. Levels
/// whose argument differs from the topology's are left to the structural
/// diff, which already reports them as conflicts.
pub fn findings(desired: &Desired, queues: &Queues) -> Vec<Finding> {
    let mut lacking: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for level_queue in &desired.queues {
        let Some(queue) = queues.get(&level_queue.name) else {
            continue;
        };
        if queue.queue_type != "quorum" {
            continue;
        }
        for (argument, required) in DEFAULT_QUORUM_ARGUMENTS {
            let required = ArgValue::Str(required.to_string());
            let asked = level_queue.arguments.get(argument);
            if asked != Some(&required) && effective(queue, argument).as_ref() != Some(&required) {
                lacking.entry(argument).or_default().push(level_queue.level);
            }
        }
    }
    lacking
        .into_iter()
        .map(|(argument, levels)| {
            let required = DEFAULT_QUORUM_ARGUMENTS
                .iter()
                .find(|(k, _)| *k == argument)
                .map_or("", |(_, v)| *v);
            let consequence = if argument == "x-dead-letter-strategy" {
                "dead-lettering is at-most-once, so a delayed message whose next hop refuses it \
                 is dropped"
            } else {
                "a full level discards delayed messages instead of refusing new ones"
            };
            Finding {
                severity: Severity::Error,
                entity: format!("level queues ({} of them)", levels.len()),
                kind: "losable_messages".into(),
                expected: Some(format!("{argument}={required}")),
                actual: Some(format!("{argument}=(not {required})")),
                message: format!(
                    "quorum level queue{} {} lack{} {argument}: {required}: {consequence} (the \
                     topology file's queue_arguments or remove_default_arguments ask for this; \
                     restore it and recreate the levels with migrate)",
                    if levels.len() == 1 { "" } else { "s" },
                    levels
                        .iter()
                        .map(|l| desired.level_name(*l))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if levels.len() == 1 { "s" } else { "" },
                ),
                level: (levels.len() == 1).then(|| levels[0]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{desired, installed};

    #[test]
    fn the_default_quorum_cascade_is_safe() {
        let d = desired("");
        assert!(findings(&d, &installed(&d).queues).is_empty());
    }

    #[test]
    fn a_topology_that_removes_at_least_once_is_an_error_anyway() {
        let d = desired(
            "cascade:\n  levels: 3\n  remove_default_arguments: [x-dead-letter-strategy]\n",
        );
        let found = findings(&d, &installed(&d).queues);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Error);
        assert_eq!(
            found[0].expected.as_deref(),
            Some("x-dead-letter-strategy=at-least-once")
        );
        assert!(found[0]
            .message
            .contains("nsb.v2.delay-level-02, nsb.v2.delay-level-01"));
    }

    #[test]
    fn another_overflow_in_queue_arguments_is_an_error() {
        let d = desired("cascade:\n  levels: 1\n  queue_arguments:\n    x-overflow: drop-head\n");
        let found = findings(&d, &installed(&d).queues);
        assert_eq!(
            found[0].expected.as_deref(),
            Some("x-overflow=reject-publish")
        );
        assert_eq!(found[0].level, Some(0));
    }

    #[test]
    fn a_policy_that_supplies_the_strategy_counts() {
        let d = desired(
            "cascade:\n  levels: 1\n  remove_default_arguments: [x-dead-letter-strategy]\n",
        );
        let mut queues = installed(&d).queues;
        for queue in queues.values_mut() {
            queue.effective_policy_definition = Some(
                serde_json::json!({"dead-letter-strategy": "at-least-once"})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
        }
        assert!(findings(&d, &queues).is_empty());
    }

    #[test]
    fn classic_cascades_are_not_judged_by_quorum_arguments() {
        let d = desired(include_str!("../examples/nservicebus-v1.yaml"));
        let mut queues = installed(&d).queues;
        queues
            .values_mut()
            .for_each(|q| q.queue_type = "classic".into());
        assert!(findings(&d, &queues).is_empty());
    }
}
