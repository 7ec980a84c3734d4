//! Levels with a dead-letter backlog (SPEC §1): at-least-once dead-lettering
//! keeps a message that cannot be passed on in its level's backlog, retried
//! forever and holding up the level. Told apart here, from two looks 2 s
//! apart and the queue's recent length history:
//! - draining: the backlog shrank between the looks;
//! - waiting: it stands still, every route below is in place, and the level
//!   was empty within the last few minutes: RabbitMQ retries dead-lettering
//!   some minutes after a failure (seen on 3.10.8: about 3 minutes), so a
//!   route repaired meanwhile (an `install` after `teardown --unbind-only`)
//!   drains it then;
//! - jammed: a route below is missing, or it has stood longer than that.

use super::{finding, Queues};
use crate::cascade::Desired;
use crate::counted::counted;
use crate::diff::{Finding, Severity};
use crate::observe::ObservedQueue;

/// How far back the length history must show an empty level for a standing
/// backlog to count as waiting for the broker's retry, not as a jam.
pub const RETRY_WINDOW_SECONDS: u64 = 240;

/// The query that asks `/api/queues` for the length history this needs.
pub fn history_query() -> String {
    format!("lengths_age={RETRY_WINDOW_SECONDS}&lengths_incr=30")
}

/// Levels whose dead-letter backlog is above 0: a jam, if it is still there later.
pub fn backlogged_levels(desired: &Desired, queues: &Queues) -> Vec<u8> {
    desired
        .queues
        .iter()
        .filter(|q| {
            queues
                .get(&q.name)
                .is_some_and(|found| found.messages_dlx.unwrap_or(0) > 0)
        })
        .map(|q| q.level)
        .collect()
}

/// Levels whose dead-letter backlog was above 0 at the first look and still
/// is at the second, judged as draining, waiting or jammed (module doc).
/// `known` (the other findings) names the likely cause.
pub fn jam_findings(
    desired: &Desired,
    first: &Queues,
    again: &Queues,
    known: &[Finding],
) -> Vec<Finding> {
    let still = backlogged_levels(desired, again);
    backlogged_levels(desired, first)
        .into_iter()
        .filter(|level| still.contains(level))
        .map(|level| {
            let name = desired.level_name(level);
            let before = first[name].messages_dlx.unwrap_or(0);
            let now = again[name].messages_dlx.unwrap_or(0);
            let messages = counted(now, "message");
            let entity = format!("queue {name}");
            let actual = ("messages_dlx=0".to_string(), format!("messages_dlx={now}"));
            let defects = defects_below(desired, level, known);
            if now < before {
                return finding(
                    Severity::Warning,
                    entity,
                    "draining",
                    actual,
                    format!(
                        "level {level:02}'s dead-letter backlog is draining: {messages} \
                         ({before} a moment before)"
                    ),
                    Some(level),
                );
            }
            if defects.is_empty() && empty_within_window(&again[name]) {
                return finding(
                    Severity::Warning,
                    entity,
                    "backlog_waiting",
                    actual,
                    format!(
                        "level {level:02} holds {messages} in its dead-letter backlog that did \
                         not move in 2 s, though every route below it is in place and the level \
                         was empty within the last {} minutes: RabbitMQ retries dead-lettering \
                         some minutes after a failure, so it should drain by then. Still there \
                         after that, it is a jam: {}",
                        RETRY_WINDOW_SECONDS / 60,
                        unbound_address(desired)
                    ),
                    Some(level),
                );
            }
            finding(
                Severity::Error,
                entity,
                "jammed",
                actual,
                format!(
                    "level {level:02} is jammed: its dead-letter backlog of {messages} \
                     ({before} a moment before) cannot be passed on and is retried forever, \
                     holding up the delayed messages behind it; AMQP counts do not show it. \
                     Likely cause: {}",
                    if defects.is_empty() {
                        format!(
                            "nothing on the way down is missing, so {}",
                            unbound_address(desired)
                        )
                    } else {
                        defects.join("; ")
                    }
                ),
                Some(level),
            )
        })
        .collect()
}

/// Whether the queue's length history (newest first) shows it empty at
/// some point; without a history, no.
fn empty_within_window(queue: &ObservedQueue) -> bool {
    queue
        .messages_details
        .as_ref()
        .is_some_and(|history| history.samples.iter().any(|s| s.sample == 0))
}

fn unbound_address(desired: &Desired) -> String {
    format!(
        "a message is probably addressed to an endpoint that no binding on {} matches \
         (`#.<address>`), or a lower level refuses it; bind that endpoint and the level drains",
        desired.delivery_exchange
    )
}

/// The defects on the way from `level` down to the endpoints.
fn defects_below<'a>(desired: &Desired, level: u8, known: &'a [Finding]) -> Vec<&'a str> {
    let own_queue = format!("queue {}", desired.level_name(level));
    known
        .iter()
        .filter(|f| f.severity == Severity::Error && f.kind != "stray_binding")
        .filter(|f| match f.level {
            Some(l) => l < level || f.entity == own_queue,
            None => true,
        })
        .map(|f| f.message.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::structure;
    use crate::observe::{LengthHistory, LengthSample};
    use crate::test_fixtures::{desired, installed};
    use crate::topology::ArgValue;

    #[test]
    fn a_backlog_that_stays_is_a_jam_with_the_missing_endpoint_as_cause() {
        let d = desired("endpoints:\n  - address: Sales\n");
        let mut observed = installed(&d);
        observed
            .queues
            .get_mut("nsb.v2.delay-level-00")
            .unwrap()
            .messages_dlx = Some(2);
        observed
            .queues
            .get_mut("nsb.v2.delay-level-07")
            .unwrap()
            .messages_dlx = Some(1);
        let s = structure(&d, &observed);
        let known = s.findings();
        let mut again = observed.queues.clone();
        again.get_mut("nsb.v2.delay-level-07").unwrap().messages_dlx = Some(0);
        let jams = jam_findings(&d, &observed.queues, &again, &known);
        assert_eq!(jams.len(), 1);
        assert_eq!(jams[0].entity, "queue nsb.v2.delay-level-00");
        assert_eq!(jams[0].kind, "jammed");
        assert!(
            jams[0]
                .message
                .contains("endpoint queue Sales does not exist"),
            "{}",
            jams[0].message
        );
    }

    #[test]
    fn a_jam_without_a_visible_defect_points_at_an_unbound_address() {
        let d = desired("");
        let mut observed = installed(&d);
        observed
            .queues
            .get_mut("nsb.v2.delay-level-02")
            .unwrap()
            .messages_dlx = Some(1);
        // A defect above the jammed level is not its cause.
        observed
            .queues
            .get_mut("nsb.v2.delay-level-09")
            .unwrap()
            .arguments
            .insert("x-message-ttl".into(), ArgValue::Int(1));
        let known = structure(&d, &observed).findings();
        let jams = jam_findings(&d, &observed.queues, &observed.queues, &known);
        assert!(jams[0]
            .message
            .contains("no binding on nsb.v2.delay-delivery matches"));
    }

    fn history(samples: &[u64]) -> Option<LengthHistory> {
        Some(LengthHistory {
            samples: samples
                .iter()
                .enumerate()
                .map(|(i, &sample)| LengthSample {
                    sample,
                    timestamp: 1_000_000 - 30_000 * i as u64,
                })
                .collect(),
        })
    }

    #[test]
    fn a_shrinking_backlog_is_draining_not_jammed() {
        let d = desired("");
        let mut observed = installed(&d);
        let level_03 = observed.queues.get_mut("nsb.v2.delay-level-03").unwrap();
        level_03.messages_dlx = Some(5);
        let mut again = observed.queues.clone();
        again.get_mut("nsb.v2.delay-level-03").unwrap().messages_dlx = Some(2);
        let known = structure(&d, &observed).findings();
        let jams = jam_findings(&d, &observed.queues, &again, &known);
        assert_eq!(
            (jams[0].kind.as_str(), jams[0].severity),
            ("draining", Severity::Warning)
        );
    }

    #[test]
    fn a_standing_backlog_with_every_route_in_place_waits_for_the_retry_only_for_a_while() {
        let d = desired("");
        let mut observed = installed(&d);
        observed
            .queues
            .get_mut("nsb.v2.delay-level-01")
            .unwrap()
            .messages_dlx = Some(4);
        let known = structure(&d, &observed).findings();
        let mut again = observed.queues.clone();
        let level_01 = again.get_mut("nsb.v2.delay-level-01").unwrap();
        level_01.messages_details = history(&[4, 4, 4, 0, 0, 0, 0, 0, 0]);
        let jams = jam_findings(&d, &observed.queues, &again, &known);
        assert_eq!(
            (jams[0].kind.as_str(), jams[0].severity),
            ("backlog_waiting", Severity::Warning),
            "{}",
            jams[0].message
        );
        // Standing the whole window, or with no history to tell: a jam.
        for standing in [history(&[4; 9]), None] {
            again
                .get_mut("nsb.v2.delay-level-01")
                .unwrap()
                .messages_details = standing;
            let jams = jam_findings(&d, &observed.queues, &again, &known);
            assert_eq!(
                (jams[0].kind.as_str(), jams[0].severity),
                ("jammed", Severity::Error)
            );
        }
    }

    #[test]
    fn a_standing_backlog_with_a_route_missing_below_is_a_jam_at_once() {
        let d = desired("endpoints:\n  - address: Sales\n");
        let mut observed = installed(&d);
        observed
            .queues
            .get_mut("nsb.v2.delay-level-00")
            .unwrap()
            .messages_dlx = Some(1);
        observed.queues.remove("Sales");
        let known = structure(&d, &observed).findings();
        let mut again = observed.queues.clone();
        again
            .get_mut("nsb.v2.delay-level-00")
            .unwrap()
            .messages_details = history(&[1, 0, 0]);
        let jams = jam_findings(&d, &observed.queues, &again, &known);
        assert_eq!(
            (jams[0].kind.as_str(), jams[0].severity),
            ("jammed", Severity::Error)
        );
    }
}
