//! The staging queues of migrate and transfer (`moving::staging`). A move
//! holds each message there until its landing is journaled, then releases
//! it into the cascade; a move that was interrupted leaves what it had not
//! released yet, and nothing else will: those delayed messages are not on
//! their way until the move is run again. Pure.

use super::{finding, Queues};
use crate::cascade::Desired;
use crate::counted::counted;
use crate::diff::{Finding, Severity};

pub fn staging_findings(desired: &Desired, queues: &Queues) -> Vec<Finding> {
    desired
        .staging_names()
        .iter()
        .filter_map(|name| {
            let queue = queues.get(name)?;
            let waiting =
                queue.messages_ready.unwrap_or(0) + queue.messages_unacknowledged.unwrap_or(0);
            if waiting == 0 {
                return None;
            }
            let entity = format!("queue {name}");
            let messages = counted(waiting, "message");
            Some(if queue.consumers.unwrap_or(0) > 0 {
                finding(
                    Severity::Info,
                    entity,
                    "staging_releasing",
                    ("0 messages".into(), messages.clone()),
                    format!(
                        "a migrate or transfer is running: {messages} staged, not yet released"
                    ),
                    None,
                )
            } else {
                finding(
                    Severity::Error,
                    entity,
                    "staged_not_released",
                    ("0 messages".into(), messages.clone()),
                    format!(
                        "{messages} staged by a migrate or transfer that was interrupted: \
                         they reach the cascade only when it is run again"
                    ),
                    None,
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{desired, installed, observed_queue};

    #[test]
    fn staged_messages_without_a_releaser_are_an_error() {
        let d = desired("");
        let mut observed = installed(&d);
        assert!(staging_findings(&d, &observed.queues).is_empty());
        let name = d.staging_names()[2].clone();
        let mut queue = observed_queue(&name, Default::default());
        observed.queues.insert(name.clone(), queue.clone());
        assert!(
            staging_findings(&d, &observed.queues).is_empty(),
            "empty: nothing to say"
        );
        queue.messages_ready = Some(3);
        observed.queues.insert(name.clone(), queue.clone());
        let found = staging_findings(&d, &observed.queues);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].severity, Severity::Error);
        assert_eq!(found[0].entity, format!("queue {name}"));
        assert!(
            found[0].message.starts_with("3 messages staged"),
            "{}",
            found[0].message
        );
        queue.consumers = Some(1);
        observed.queues.insert(name, queue);
        assert_eq!(
            staging_findings(&d, &observed.queues)[0].severity,
            Severity::Info
        );
    }
}
