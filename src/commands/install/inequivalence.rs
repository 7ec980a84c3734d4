//! install's reading of a 406: RabbitMQ names the first property of an
//! entity that differs from the declare, with the value it received and the
//! one it holds; without the management API that is all install can report.

use crate::apply::Operation;
use crate::cascade::Role;
use crate::diff::{Finding, Severity};

/// A 406 as a finding: the broker names the first property that differs,
/// with the value it received and the one it holds.
pub(super) fn conflict_from_refusal(op: &Operation, entity: String, text: &str) -> Finding {
    let level = match op {
        Operation::DeclareQueue(q) => Some(q.level),
        Operation::DeclareExchange(e) => match e.role {
            Role::Level(level) => Some(level),
            _ => None,
        },
        _ => None,
    };
    let (expected, actual, message) = match inequivalence(text) {
        Some(Inequivalence {
            property,
            received,
            current,
        }) => {
            let expected = expected_value(op, &property).unwrap_or(received);
            let message = format!(
                "{entity}: {property} is {current}, expected {expected} (the broker names \
                 only the first difference)"
            );
            (
                Some(format!("{property}={expected}")),
                Some(format!("{property}={current}")),
                message,
            )
        }
        None => (None, None, format!("{entity}: {text}")),
    };
    Finding {
        severity: Severity::Error,
        entity,
        kind: "different".into(),
        expected,
        actual,
        message,
        level,
    }
}

/// The value install asked for, as the comparison shows it.
fn expected_value(op: &Operation, property: &str) -> Option<String> {
    let arguments = match op {
        Operation::DeclareQueue(q) => &q.arguments,
        Operation::DeclareEndpointQueue(q) => &q.arguments,
        Operation::DeclareExchange(e) => &e.arguments,
        _ => return None,
    };
    arguments.get(property).map(ToString::to_string)
}

#[derive(Debug, PartialEq)]
struct Inequivalence {
    property: String,
    received: String,
    current: String,
}

/// Reads RabbitMQ's 406 text: `inequivalent arg 'P' for queue 'Q' in vhost
/// 'V': received X but current is Y`, where X and Y are `'v'`, `the value
/// 'v' of type 't'` or `none`.
fn inequivalence(text: &str) -> Option<Inequivalence> {
    let rest = text.split("inequivalent arg '").nth(1)?;
    let (property, rest) = rest.split_once('\'')?;
    let rest = rest.split("': received ").nth(1)?;
    let (received, current) = rest.split_once(" but current is ")?;
    Some(Inequivalence {
        property: property.to_string(),
        received: broker_value(received),
        current: broker_value(current),
    })
}

fn broker_value(text: &str) -> String {
    let text = text.trim();
    if text == "none" {
        return "(absent)".to_string();
    }
    let text = text.strip_prefix("the value ").unwrap_or(text);
    let (value, kind) = match text.rsplit_once(" of type '") {
        Some((value, kind)) => (value, Some(kind.trim_end_matches('\''))),
        None => (text, None),
    };
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    match kind {
        Some("longstr") => format!("{value:?}"),
        _ => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::Desired;
    use crate::commands::install::entity;

    #[test]
    fn a_406_text_gives_property_received_and_current() {
        let text = "406 PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue \
                    'nsb.v2.delay-level-05' in vhost 'v': received the value '32000' of type \
                    'signedint' but current is the value '99000' of type 'long'";
        assert_eq!(
            inequivalence(text),
            Some(Inequivalence {
                property: "x-message-ttl".into(),
                received: "32000".into(),
                current: "99000".into()
            })
        );
        let text = "406 PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-strategy' for \
                    queue 'q2' in vhost 'v': received the value 'at-least-once' of type \
                    'longstr' but current is none";
        let found = inequivalence(text).unwrap();
        assert_eq!(found.received, "\"at-least-once\"");
        assert_eq!(found.current, "(absent)");
        let text = "406 PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'e' in vhost \
                    'v': received 'topic' but current is 'direct'";
        let found = inequivalence(text).unwrap();
        assert_eq!(
            (found.property.as_str(), found.current.as_str()),
            ("type", "direct")
        );
        assert_eq!(
            inequivalence("406 PRECONDITION_FAILED - something else"),
            None
        );
    }

    #[test]
    fn a_406_conflict_shows_the_value_install_asked_for() {
        let topology =
            crate::topology::Topology::parse(std::path::Path::new("t.yaml"), "").unwrap();
        let desired = Desired::new(&topology, "v");
        let queue = desired
            .queues
            .iter()
            .find(|q| q.level == 5)
            .unwrap()
            .clone();
        let op = Operation::DeclareQueue(queue);
        let text = "406 PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue \
                    'nsb.v2.delay-level-05' in vhost 'v': received the value '32000' of type \
                    'long' but current is the value '99000' of type 'signedint'";
        let finding = conflict_from_refusal(&op, entity(&op), text);
        assert_eq!(finding.entity, "queue nsb.v2.delay-level-05");
        assert_eq!(finding.expected.as_deref(), Some("x-message-ttl=32000"));
        assert_eq!(finding.actual.as_deref(), Some("x-message-ttl=99000"));
        assert_eq!(finding.level, Some(5));
    }
}
