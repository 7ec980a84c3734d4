//! Conflicting entities: present on the broker with other properties or
//! arguments than the topology wants. One entity is one conflict, however
//! many of its properties differ; each difference is kept for JSON, and the
//! report ends with what to do about them.

use serde::Serialize;

use super::{Finding, Severity};

/// One entity that differs from the topology, with each difference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// `queue nsb.v2.delay-level-05`, `exchange nsb.v2.delay-delivery`.
    pub entity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<u8>,
    /// One finding per differing property, with its expected and actual value.
    pub differences: Vec<Finding>,
    /// What to do about it, in a sentence.
    pub remedy: String,
}

impl Conflict {
    fn new(first: Finding) -> Conflict {
        Conflict {
            entity: first.entity.clone(),
            level: first.level,
            remedy: remedy(&first.entity),
            differences: vec![first],
        }
    }

    /// `queue X: a is 1, expected 2` for one difference; for several, the
    /// entity and then each difference on an indented line of its own.
    pub fn message(&self) -> String {
        match self.differences.as_slice() {
            [only] => only.message.clone(),
            several => {
                let prefix = format!("{}: ", self.entity);
                let mut message =
                    format!("{} differs in {} properties:", self.entity, several.len());
                for difference in several {
                    let line = difference
                        .message
                        .strip_prefix(&prefix)
                        .unwrap_or(&difference.message);
                    message.push_str("\n  ");
                    message.push_str(line);
                }
                message
            }
        }
    }

    /// The whole entity as one finding: verify counts conflicting entities,
    /// not properties. One difference stays exactly that difference.
    pub fn finding(&self) -> Finding {
        if let [only] = self.differences.as_slice() {
            return only.clone();
        }
        let joined = |value: fn(&Finding) -> Option<&String>| {
            let values: Vec<&str> = self
                .differences
                .iter()
                .filter_map(|d| value(d).map(String::as_str))
                .collect();
            Some(values.join(", "))
        };
        Finding {
            severity: Severity::Error,
            entity: self.entity.clone(),
            kind: "different".into(),
            expected: joined(|d| d.expected.as_ref()),
            actual: joined(|d| d.actual.as_ref()),
            message: self.message(),
            level: self.level,
        }
    }
}

/// Groups per-property differences by entity, in the order found.
pub fn group(differences: impl IntoIterator<Item = Finding>) -> Vec<Conflict> {
    let mut conflicts: Vec<Conflict> = Vec::new();
    for difference in differences {
        match conflicts.iter_mut().find(|c| c.entity == difference.entity) {
            Some(conflict) => conflict.differences.push(difference),
            None => conflicts.push(Conflict::new(difference)),
        }
    }
    conflicts
}

/// What to do about a conflicting cascade entity: install never changes an
/// existing one, so either the topology moves to it or it is replaced.
fn remedy(entity: &str) -> String {
    let keep_messages = if entity.starts_with("queue ") {
        " (teardown refuses while level queues hold delayed messages; to keep them, \
         install the topology under other level names and move them with \
         `delaytopo migrate --from <the old topology>`)"
    } else {
        ""
    };
    format!(
        "{entity} is not what the topology describes and install never changes it: change the \
         topology to match it, or replace it with `delaytopo teardown`, then `delaytopo \
         install`{keep_messages}"
    )
}

/// What to do about a conflicting endpoint queue or exchange the topology
/// declares: install never changes it, and teardown never deletes endpoints.
pub fn endpoint_remedy(entity: &str) -> String {
    format!(
        "{entity} is an endpoint's, declared by the topology, and differs from its `declare:`; \
         install never changes it and teardown never deletes endpoints: change `declare:` to \
         match it, or recreate it yourself once its messages are consumed"
    )
}

/// The closing lines of a report that met conflicts: what to do next,
/// within 80 columns.
pub fn next_steps(conflicts: &[Conflict]) -> String {
    if conflicts.is_empty() {
        return String::new();
    }
    let holds_queue = conflicts
        .iter()
        .any(|c| c.entity.starts_with("queue ") && c.level.is_some());
    let endpoint = conflicts.iter().any(|c| c.remedy.contains("an endpoint's"));
    let cascade = conflicts
        .iter()
        .any(|c| !c.remedy.contains("an endpoint's"));
    let mut text = String::from("next: install never changes an existing entity.");
    if cascade {
        text.push_str(
            " Either change the topology\n\
             \x20 to match the broker, or replace the cascade: `delaytopo teardown`, then\n\
             \x20 `delaytopo install`.\n",
        );
    } else {
        text.push('\n');
    }
    if holds_queue {
        text.push_str(
            "  teardown refuses while level queues hold delayed messages; to keep\n\
             \x20 them, install the topology under other level names and move them with\n\
             \x20 `delaytopo migrate --from <the old topology>`.\n",
        );
    }
    if endpoint {
        text.push_str(
            "  teardown never deletes an endpoint's queue or exchange: change its\n\
             \x20 `declare:` to match, or recreate it yourself once it is drained.\n",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn difference(entity: &str, property: &str, expected: &str, actual: &str) -> Finding {
        Finding {
            severity: Severity::Error,
            entity: entity.into(),
            kind: "different".into(),
            expected: Some(format!("{property}={expected}")),
            actual: Some(format!("{property}={actual}")),
            message: format!("{entity}: {property} is {actual}, expected {expected}"),
            level: Some(5),
        }
    }

    #[test]
    fn one_queue_with_four_differences_is_one_conflict() {
        let queue = "queue nsb.v2.delay-level-05";
        let conflicts = group([
            difference(queue, "x-dead-letter-exchange", "\"l-04\"", "(absent)"),
            difference("exchange e", "type", "topic", "direct"),
            difference(
                queue,
                "x-dead-letter-strategy",
                "\"at-least-once\"",
                "(absent)",
            ),
            difference(queue, "x-message-ttl", "32000", "1000"),
            difference(queue, "x-overflow", "\"reject-publish\"", "(absent)"),
        ]);
        assert_eq!(conflicts.len(), 2);
        assert_eq!(conflicts[0].entity, queue);
        assert_eq!(conflicts[0].differences.len(), 4);
        assert_eq!(conflicts[1].differences.len(), 1);
        assert_eq!(
            conflicts[0].message(),
            "queue nsb.v2.delay-level-05 differs in 4 properties:\n  \
             x-dead-letter-exchange is (absent), expected \"l-04\"\n  \
             x-dead-letter-strategy is (absent), expected \"at-least-once\"\n  \
             x-message-ttl is 1000, expected 32000\n  \
             x-overflow is (absent), expected \"reject-publish\""
        );
        let finding = conflicts[0].finding();
        assert_eq!(finding.level, Some(5));
        assert!(finding
            .expected
            .unwrap()
            .contains("x-message-ttl=32000, x-overflow="));
        assert!(conflicts[0].remedy.contains("`delaytopo migrate"));
        assert!(!conflicts[1].remedy.contains("migrate"));
    }

    #[test]
    fn one_difference_reads_as_before() {
        let only = difference("queue q", "x-message-ttl", "32000", "1000");
        let conflicts = group([only.clone()]);
        assert_eq!(conflicts[0].message(), only.message);
        assert_eq!(conflicts[0].finding(), only);
    }

    #[test]
    fn the_next_steps_fit_80_columns_and_name_the_commands() {
        let conflicts = group([difference("queue q", "x-message-ttl", "1", "2")]);
        let text = next_steps(&conflicts);
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains("`delaytopo teardown`") && text.contains("migrate --from"));
        assert_eq!(next_steps(&[]), "");
        let mut endpoint = group([difference("queue Sales", "x-max-length", "1", "2")]);
        endpoint[0].level = None;
        endpoint[0].remedy = endpoint_remedy("queue Sales");
        let text = next_steps(&endpoint);
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(
            !text.contains("teardown`, then") && text.contains("`declare:`"),
            "{text}"
        );
    }
}
