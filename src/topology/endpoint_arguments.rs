//! The queue arguments an endpoint queue may be declared with (`declare:
//! arguments`), by queue type: a name RabbitMQ does not know, a value of the
//! wrong kind, or an argument the queue type ignores would leave the queue
//! other than the file says without a word from the broker, so each is an
//! error here.

use std::collections::BTreeMap;

use super::{ArgValue, QueueType};

type Arguments = BTreeMap<String, ArgValue>;

/// Which queue types an argument applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applies {
    Both,
    Classic,
    Quorum,
}

/// What an argument's value must be.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// A whole number at least this large.
    AtLeast(i64),
    /// A whole number in this range, inclusive.
    Between(i64, i64),
    /// One of these words.
    OneOf(&'static [&'static str]),
    Text,
    Flag,
}

/// Every argument RabbitMQ 3.10–4.x gives classic or quorum queues, less
/// `x-queue-type` (that is `queue_type`) and what 4.3 denies by default.
const KNOWN: [(&str, Applies, Shape); 15] = [
    ("x-message-ttl", Applies::Both, Shape::AtLeast(0)),
    ("x-expires", Applies::Both, Shape::AtLeast(1)),
    ("x-max-length", Applies::Both, Shape::AtLeast(0)),
    ("x-max-length-bytes", Applies::Both, Shape::AtLeast(0)),
    (
        "x-overflow",
        Applies::Both,
        Shape::OneOf(&["drop-head", "reject-publish", "reject-publish-dlx"]),
    ),
    ("x-dead-letter-exchange", Applies::Both, Shape::Text),
    ("x-dead-letter-routing-key", Applies::Both, Shape::Text),
    ("x-single-active-consumer", Applies::Both, Shape::Flag),
    (
        "x-queue-leader-locator",
        Applies::Both,
        Shape::OneOf(&["client-local", "balanced"]),
    ),
    ("x-max-priority", Applies::Classic, Shape::Between(1, 255)),
    // Version 1 is what 4.3 denies.
    ("x-queue-version", Applies::Classic, Shape::Between(2, 2)),
    // 4.x: -1 turns the limit off.
    ("x-delivery-limit", Applies::Quorum, Shape::AtLeast(-1)),
    (
        "x-dead-letter-strategy",
        Applies::Quorum,
        Shape::OneOf(&["at-most-once", "at-least-once"]),
    ),
    (
        "x-quorum-initial-group-size",
        Applies::Quorum,
        Shape::AtLeast(1),
    ),
    (
        "x-quorum-target-group-size",
        Applies::Quorum,
        Shape::AtLeast(1),
    ),
];

/// Arguments RabbitMQ 4.3 denies by default (SPEC §1): not declared anew.
const DEPRECATED: [&str; 2] = ["x-queue-mode", "x-queue-master-locator"];

/// Why `name` cannot be a declared queue's argument whatever the queue
/// type, if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    if name == "x-queue-type" {
        return Some(
            "`x-queue-type` is stated by `queue_type` (quorum | classic); set that instead"
                .to_string(),
        );
    }
    if DEPRECATED.contains(&name) {
        return Some(format!(
            "`{name}` is deprecated and RabbitMQ 4.3 refuses it by default; leave it out"
        ));
    }
    if KNOWN.iter().any(|(known, _, _)| *known == name) {
        return None;
    }
    let known = KNOWN.iter().map(|(known, _, _)| *known);
    if let Some(close) = known.clone().find(|known| edit_distance(known, name) <= 2) {
        return Some(format!(
            "unknown queue argument `{name}`; did you mean `{close}`?"
        ));
    }
    Some(format!(
        "unknown queue argument `{name}`, expected one of {}",
        known.collect::<Vec<_>>().join(", ")
    ))
}

/// How many single-character edits turn `a` into `b` (Levenshtein).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Why `value` cannot be the value of argument `name` (a known one), if it
/// cannot: the kind and range of value the broker takes.
pub fn value_problem(name: &str, value: &ArgValue) -> Option<String> {
    let (_, _, shape) = KNOWN.iter().find(|(known, _, _)| *known == name)?;
    let fits = match (shape, value) {
        (Shape::AtLeast(least), ArgValue::Int(n)) => n >= least,
        (Shape::Between(low, high), ArgValue::Int(n)) => (low..=high).contains(&n),
        (Shape::OneOf(words), ArgValue::Str(word)) => words.contains(&word.as_str()),
        (Shape::Text, ArgValue::Str(_)) | (Shape::Flag, ArgValue::Bool(_)) => true,
        _ => false,
    };
    if fits {
        return None;
    }
    let wanted = match shape {
        Shape::AtLeast(least) => format!("a whole number, {least} or more"),
        Shape::Between(low, high) if low == high => format!("{low}"),
        Shape::Between(low, high) => format!("a whole number from {low} to {high}"),
        Shape::OneOf(words) => format!("one of {}", words.join(", ")),
        Shape::Text => "a string".to_string(),
        Shape::Flag => "true or false".to_string(),
    };
    // The file's position names the argument; the value comes last, as
    // messages cut long quoted spans short.
    Some(format!("must be {wanted}, not {value}"))
}

/// Why `arguments` do not suit a queue of `queue_type`, if they do not:
/// an argument of the other type, an overflow mode it lacks, or
/// at-least-once dead-lettering the broker would quietly downgrade.
pub fn type_problem(queue_type: QueueType, arguments: &Arguments) -> Option<String> {
    let (type_name, other) = match queue_type {
        QueueType::Quorum => ("quorum", Applies::Classic),
        QueueType::Classic => ("classic", Applies::Quorum),
    };
    for name in arguments.keys() {
        let applies = KNOWN.iter().find(|(known, _, _)| known == name);
        if applies.is_some_and(|(_, applies, _)| *applies == other) {
            return Some(format!(
                "`{name}` applies to {} queues only, and queue_type is {type_name}",
                if other == Applies::Classic {
                    "classic"
                } else {
                    "quorum"
                }
            ));
        }
    }
    let word = |wanted: &str| match arguments.get(wanted) {
        Some(ArgValue::Str(word)) => Some(word.as_str()),
        _ => None,
    };
    if queue_type == QueueType::Quorum && word("x-overflow") == Some("reject-publish-dlx") {
        return Some(
            "`x-overflow: reject-publish-dlx` applies to classic queues only; quorum queues \
             take drop-head or reject-publish"
                .to_string(),
        );
    }
    if word("x-dead-letter-strategy") == Some("at-least-once")
        && word("x-overflow") != Some("reject-publish")
    {
        return Some(
            "`x-dead-letter-strategy: at-least-once` needs `x-overflow: reject-publish`: \
             without it RabbitMQ falls back to at-most-once dead-lettering"
                .to_string(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(pairs: &[(&str, ArgValue)]) -> BTreeMap<String, ArgValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn names_are_known_ones_except_the_type_and_the_deprecated() {
        assert_eq!(name_problem("x-max-length"), None);
        assert!(name_problem("x-queue-type").unwrap().contains("queue_type"));
        assert!(name_problem("x-queue-mode").unwrap().contains("deprecated"));
        assert_eq!(
            name_problem("x-max-lenght").as_deref(),
            Some("unknown queue argument `x-max-lenght`; did you mean `x-max-length`?")
        );
        let other = name_problem("x-ha-policy").unwrap();
        assert!(
            other.starts_with(
                "unknown queue argument `x-ha-policy`, expected one of x-message-ttl,"
            ),
            "{other}"
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn values_have_the_kind_and_range_the_broker_takes() {
        assert_eq!(value_problem("x-max-length", &ArgValue::Int(0)), None);
        let text = value_problem("x-max-length", &ArgValue::Str("10".into())).unwrap();
        assert_eq!(text, "must be a whole number, 0 or more, not \"10\"");
        assert!(value_problem("x-expires", &ArgValue::Int(0)).is_some());
        assert!(value_problem("x-max-priority", &ArgValue::Int(256))
            .unwrap()
            .contains("from 1 to 255"));
        assert!(value_problem("x-overflow", &ArgValue::Str("drop".into()))
            .unwrap()
            .contains("one of drop-head, reject-publish, reject-publish-dlx"));
        assert!(value_problem("x-single-active-consumer", &ArgValue::Int(1)).is_some());
        assert_eq!(value_problem("x-delivery-limit", &ArgValue::Int(-1)), None);
        assert_eq!(
            value_problem("x-queue-version", &ArgValue::Int(1)).as_deref(),
            Some("must be 2, not 1")
        );
    }

    #[test]
    fn each_type_takes_only_its_own_arguments() {
        let priority = arguments(&[("x-max-priority", ArgValue::Int(5))]);
        assert_eq!(
            type_problem(QueueType::Quorum, &priority).as_deref(),
            Some("`x-max-priority` applies to classic queues only, and queue_type is quorum")
        );
        assert_eq!(type_problem(QueueType::Classic, &priority), None);
        let limit = arguments(&[("x-delivery-limit", ArgValue::Int(5))]);
        assert!(type_problem(QueueType::Classic, &limit)
            .unwrap()
            .contains("quorum queues only"));
        let dlx = arguments(&[("x-overflow", ArgValue::Str("reject-publish-dlx".into()))]);
        assert!(type_problem(QueueType::Quorum, &dlx).is_some());
        assert_eq!(type_problem(QueueType::Classic, &dlx), None);
    }

    #[test]
    fn at_least_once_dead_lettering_needs_reject_publish() {
        let strategy = (
            "x-dead-letter-strategy",
            ArgValue::Str("at-least-once".into()),
        );
        let alone = arguments(std::slice::from_ref(&strategy));
        assert!(type_problem(QueueType::Quorum, &alone)
            .unwrap()
            .contains("falls back to at-most-once"));
        let safe = arguments(&[
            strategy,
            ("x-overflow", ArgValue::Str("reject-publish".into())),
        ]);
        assert_eq!(type_problem(QueueType::Quorum, &safe), None);
    }
}
