//! The level queues' arguments beyond the computed TTL and dead-letter
//! exchange: the quorum defaults that keep delayed messages safe, the quorum
//! placement keys, and `queue_arguments` on top — and the checks that need
//! the queue type to judge them.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use super::{ArgValue, CascadeSection, QueueType, Topology};

/// The level queues' arguments every quorum cascade gets unless removed by
/// name: without them a level drops delayed messages (at-most-once
/// dead-lettering, or overflow that discards). Classic queues get none.
pub const DEFAULT_QUORUM_ARGUMENTS: [(&str, &str); 2] = [
    ("x-dead-letter-strategy", "at-least-once"),
    ("x-overflow", "reject-publish"),
];

impl CascadeSection {
    /// Every level queue's arguments except the computed TTL and dead-letter
    /// exchange: the type's defaults (minus those removed), the placement
    /// keys, then `queue_arguments` on top.
    pub fn level_queue_arguments(&self) -> BTreeMap<String, ArgValue> {
        let mut arguments = BTreeMap::new();
        if self.queue_type == QueueType::Quorum {
            arguments.insert("x-queue-type".to_string(), ArgValue::Str("quorum".into()));
            for (key, value) in DEFAULT_QUORUM_ARGUMENTS {
                if !self.remove_default_arguments.iter().any(|k| k == key) {
                    arguments.insert(key.to_string(), ArgValue::Str(value.to_string()));
                }
            }
        }
        if let Some(size) = self.initial_group_size {
            arguments.insert(INITIAL_GROUP_SIZE.to_string(), ArgValue::Int(size.0.into()));
        }
        if let Some(locator) = self.leader_locator {
            arguments.insert(
                LEADER_LOCATOR.to_string(),
                ArgValue::Str(locator.as_str().to_string()),
            );
        }
        arguments.extend(self.queue_arguments.0.clone());
        arguments
    }
}

const INITIAL_GROUP_SIZE: &str = "x-quorum-initial-group-size";
const LEADER_LOCATOR: &str = "x-queue-leader-locator";

/// How many members a new quorum level queue gets (the broker caps it at the cluster size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialGroupSize(pub u32);

impl<'de> Deserialize<'de> for InitialGroupSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(size) if size >= 1 => Ok(InitialGroupSize(size)),
            _ => Err(de::Error::custom(format!(
                "initial_group_size must be 1 or more, got {n}"
            ))),
        }
    }
}

/// Where new quorum level queues put their leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeaderLocator {
    /// On the node the declaring connection uses (RabbitMQ's default).
    ClientLocal,
    /// Spread over the cluster's nodes.
    Balanced,
}

impl LeaderLocator {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaderLocator::ClientLocal => "client-local",
            LeaderLocator::Balanced => "balanced",
        }
    }
}

impl Topology {
    /// The arguments checks that need the queue type: a type argument that
    /// contradicts it, placement keys on classic queues, keys given twice.
    pub(super) fn check_queue_arguments(
        &self,
    ) -> Result<(), (&'static str, Option<String>, String)> {
        let cascade = &self.cascade;
        let queue_type = cascade.queue_type.as_str();
        let given = &cascade.queue_arguments.0;
        if let Some(other) = given.get("x-queue-type") {
            if *other != ArgValue::Str(queue_type.to_string()) {
                return Err((
                    "x-queue-type",
                    None,
                    format!(
                        "queue_arguments sets `x-queue-type` to {other} but queue_type is \
                         {queue_type}: set queue_type instead"
                    ),
                ));
            }
        }
        for key in &cascade.remove_default_arguments {
            if !DEFAULT_QUORUM_ARGUMENTS.iter().any(|(k, _)| k == key) {
                return Err((
                    "remove_default_arguments",
                    None,
                    format!(
                        "remove_default_arguments lists `{key}`, which is not a default \
                         (the defaults are x-dead-letter-strategy and x-overflow)"
                    ),
                ));
            }
            if cascade.queue_type == QueueType::Classic {
                return Err((
                    "remove_default_arguments",
                    None,
                    "remove_default_arguments applies to quorum queues only: classic level \
                     queues get no default arguments"
                        .to_string(),
                ));
            }
        }
        let placement = [
            (
                "initial_group_size",
                INITIAL_GROUP_SIZE,
                cascade.initial_group_size.is_some(),
            ),
            (
                "leader_locator",
                LEADER_LOCATOR,
                cascade.leader_locator.is_some(),
            ),
        ];
        for (key, argument, set) in placement {
            if !set {
                continue;
            }
            if cascade.queue_type == QueueType::Classic {
                return Err((
                    key,
                    None,
                    format!("{key} applies to quorum queues only, and queue_type is classic"),
                ));
            }
            if given.contains_key(argument) {
                return Err((
                    key,
                    None,
                    format!("{key} and queue_arguments `{argument}` say the same thing: keep one"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, parse};

    fn arguments(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap()
            .cascade
            .level_queue_arguments()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn queue_arguments_add_to_the_quorum_defaults() {
        assert_eq!(
            arguments("cascade:\n  queue_arguments:\n    x-quorum-initial-group-size: 3\n"),
            pairs(&[
                ("x-dead-letter-strategy", "\"at-least-once\""),
                ("x-overflow", "\"reject-publish\""),
                ("x-queue-type", "\"quorum\""),
                ("x-quorum-initial-group-size", "3"),
            ])
        );
    }

    #[test]
    fn removing_a_default_takes_its_name() {
        assert_eq!(
            arguments("cascade:\n  remove_default_arguments: [x-overflow]\n"),
            pairs(&[
                ("x-dead-letter-strategy", "\"at-least-once\""),
                ("x-queue-type", "\"quorum\""),
            ])
        );
        let e = error("cascade:\n  remove_default_arguments: [x-queue-mode]\n");
        assert!(
            e.starts_with("t.yaml:2:3: ") && e.contains("not a default"),
            "{e}"
        );
    }

    #[test]
    fn classic_queues_get_no_quorum_defaults() {
        assert_eq!(
            arguments(
                "cascade:\n  queue_type: classic\n  queue_arguments:\n    x-queue-mode: lazy\n"
            ),
            pairs(&[("x-queue-mode", "\"lazy\"")])
        );
        let e = error("cascade:\n  queue_type: classic\n  leader_locator: balanced\n");
        assert!(
            e.starts_with("t.yaml:3:3: leader_locator applies to quorum"),
            "{e}"
        );
    }

    #[test]
    fn the_type_argument_may_only_restate_queue_type() {
        assert_eq!(
            arguments(
                "cascade:\n  queue_type: classic\n  queue_arguments:\n    x-queue-type: classic\n"
            ),
            pairs(&[("x-queue-type", "\"classic\"")])
        );
        let e = error("cascade:\n  queue_arguments:\n    x-queue-type: classic\n");
        assert!(
            e.starts_with("t.yaml:3:5: ") && e.contains("set queue_type instead"),
            "{e}"
        );
    }

    #[test]
    fn placement_keys_become_quorum_arguments() {
        let args = arguments("cascade:\n  initial_group_size: 3\n  leader_locator: balanced\n");
        assert!(args.contains(&("x-quorum-initial-group-size".into(), "3".into())));
        assert!(args.contains(&("x-queue-leader-locator".into(), "\"balanced\"".into())));
        assert!(error("cascade:\n  initial_group_size: 0\n").contains("1 or more"));
        let e = error(
            "cascade:\n  initial_group_size: 3\n  queue_arguments:\n    x-quorum-initial-group-size: 5\n",
        );
        assert!(e.contains("say the same thing"), "{e}");
    }
}
