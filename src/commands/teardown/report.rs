//! What one vhost's teardown did or found, and its two renderings: the
//! lines an operator reads and the JSON document a pipeline parses.

use serde_json::{json, Value};

use super::plan::{Holding, LevelQueue};
use crate::cascade::Desired;
use crate::commands::fanout::VhostOutcome;
use crate::counted::counted;
use crate::observe::{Observed, ObservedBinding};

/// Everything one vhost's teardown did or found, for both renderings.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) unbind_only: bool,
    pub(super) removed_exchanges: Vec<String>,
    pub(super) removed_queues: Vec<String>,
    pub(super) removed_bindings: Vec<ObservedBinding>,
    pub(super) refusal: Option<Refusal>,
    pub(super) discarded: Vec<(LevelQueue, u64)>,
    pub(super) kept: Vec<(LevelQueue, Holding)>,
    pub(super) warnings: Vec<String>,
    /// Messages were discarded without --force (they slipped past the exchanges).
    pub(super) lost_unforced: bool,
    /// Cascade entities a last look found after the deletes (a concurrent install).
    pub(super) still_present: Vec<String>,
    /// Endpoint queues and exchanges the topology declares, left in place.
    pub(super) kept_endpoints: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) reason: String,
    pub(super) levels: Vec<(LevelQueue, Holding)>,
    /// The cascade was stopped, then put back as it was.
    pub(super) restored: bool,
}

impl Report {
    /// Notes the declared endpoint entities teardown leaves alone: those the
    /// management API shows, or all of them when it could not be read.
    pub(super) fn keep_endpoints(&mut self, desired: &Desired, observed: Option<&Observed>) {
        let present = |entity: &String| match (observed, entity.split_once(' ')) {
            (Some(o), Some(("queue", name))) => o.queues.contains_key(name),
            (Some(o), Some((_, name))) => o.exchanges.contains_key(name),
            (None, _) => true,
            (Some(_), None) => false,
        };
        self.kept_endpoints = desired
            .declared_endpoint_entities()
            .filter(present)
            .collect();
    }

    pub(super) fn finish(self, vhost: &str) -> VhostOutcome {
        let ok = self.refusal.is_none() && !self.lost_unforced && self.still_present.is_empty();
        let text = self.text(vhost);
        let json = self.json();
        VhostOutcome { ok, text, json }
    }

    fn text(&self, vhost: &str) -> String {
        let mut text = String::new();
        if let Some(refusal) = &self.refusal {
            let total: u64 = refusal.levels.iter().map(|(_, h)| h.total()).sum();
            text.push_str(&format!(
                "refused: {}; {}\n",
                refusal.reason,
                if refusal.restored {
                    "the cascade was put back exactly as it was"
                } else {
                    "nothing was changed"
                }
            ));
            for (queue, holding) in &refusal.levels {
                text.push_str(&format!(
                    "  level {:02}  {}  {}\n",
                    queue.level,
                    queue.name,
                    describe_holding(holding)
                ));
            }
            if !refusal.levels.is_empty() {
                text.push_str(&format!(
                    "{} in {} level{}. ",
                    messages(total),
                    refusal.levels.len(),
                    plural(refusal.levels.len())
                ));
                text.push_str(if self.unbind_only {
                    "--force unbinds anyway and loses them.\n"
                } else {
                    "--unbind-only keeps them; --force discards them.\n"
                });
            }
        } else if self.unbind_only {
            if self.removed_bindings.is_empty() {
                text.push_str(&format!("nothing to unbind in vhost {vhost}\n"));
            } else {
                text.push_str(&format!(
                    "unbound {} binding{}; kept every exchange, queue and message\n",
                    self.removed_bindings.len(),
                    plural(self.removed_bindings.len())
                ));
            }
            for (queue, holding) in &self.kept {
                text.push_str(&format!(
                    "  level {:02}  {}  kept {}\n",
                    queue.level,
                    queue.name,
                    describe_holding(holding)
                ));
            }
        } else if self.removed_exchanges.is_empty() && self.removed_queues.is_empty() {
            text.push_str(&format!("nothing to remove: no cascade in vhost {vhost}\n"));
        } else {
            text.push_str(&format!(
                "removed {} exchange{}, {} queue{} and {} binding{}; endpoint queues and \
                 exchanges are kept\n",
                self.removed_exchanges.len(),
                plural(self.removed_exchanges.len()),
                self.removed_queues.len(),
                plural(self.removed_queues.len()),
                self.removed_bindings.len(),
                plural(self.removed_bindings.len()),
            ));
        }
        if !self.discarded.is_empty() {
            for (queue, count) in &self.discarded {
                text.push_str(&format!(
                    "  level {:02}  {}  discarded {}\n",
                    queue.level,
                    queue.name,
                    messages(*count)
                ));
            }
            text.push_str(&format!(
                "discarded {} in total\n",
                messages(self.discarded.iter().map(|(_, n)| n).sum())
            ));
        }
        if self.refusal.is_none() {
            for entity in &self.kept_endpoints {
                text.push_str(&format!(
                    "kept endpoint {entity} (declared by the topology; teardown never deletes \
                     endpoints)\n"
                ));
            }
        }
        for warning in &self.warnings {
            text.push_str(&format!("warning: {warning}\n"));
        }
        if let Some(first) = self.still_present.first() {
            text.push_str(&format!(
                "error: {} entit{} of the cascade still present after the deletes ({first}, …): \
                 something re-created them meanwhile (a concurrent install?); run teardown again\n",
                self.still_present.len(),
                if self.still_present.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            ));
        }
        text
    }

    fn json(&self) -> Value {
        let level = |queue: &LevelQueue| json!({"level": queue.level, "queue": queue.name});
        let holding = |queue: &LevelQueue, h: &Holding| {
            let mut entry = level(queue);
            entry["messages"] = json!(h.total());
            entry["ready"] = json!(h.ready_now);
            entry["dead_letter_backlog"] = json!(h.dead_letter_backlog);
            entry["at_least_once"] = json!(queue.at_least_once);
            entry
        };
        let refused = self.refusal.as_ref().map(|r| {
            json!({
                "reason": r.reason,
                "restored": r.restored,
                "levels": r.levels.iter().map(|(q, h)| holding(q, h)).collect::<Vec<_>>(),
                "total": r.levels.iter().map(|(_, h)| h.total()).sum::<u64>(),
            })
        });
        json!({
            "mode": if self.unbind_only { "unbind_only" } else { "delete" },
            "removed": {
                "exchanges": self.removed_exchanges,
                "queues": self.removed_queues,
                "bindings": self.removed_bindings.iter().map(|b| json!({
                    "source": b.source,
                    "destination": b.destination,
                    "destination_type": b.destination_type.as_str(),
                    "routing_key": b.routing_key,
                })).collect::<Vec<_>>(),
            },
            "refused": refused,
            "still_present": self.still_present,
            "discarded": {
                "levels": self.discarded.iter().map(|(q, n)| {
                    let mut entry = level(q);
                    entry["messages"] = json!(n);
                    entry
                }).collect::<Vec<_>>(),
                "total": self.discarded.iter().map(|(_, n)| n).sum::<u64>(),
            },
            "kept": self.kept.iter().map(|(q, h)| holding(q, h)).collect::<Vec<_>>(),
            "kept_endpoints": self.kept_endpoints,
            "warnings": self.warnings,
        })
    }
}

fn describe_holding(holding: &Holding) -> String {
    let mut parts = Vec::new();
    if holding.ready_now > 0 {
        parts.push(format!("{} ready", holding.ready_now));
    }
    if holding.dead_letter_backlog > 0 {
        parts.push(format!(
            "{} in the dead-letter backlog: its route onward is missing",
            holding.dead_letter_backlog
        ));
    }
    if parts.is_empty() {
        parts.push("per the management statistics".into());
    }
    format!("{} ({})", messages(holding.total()), parts.join(", "))
}

pub(super) fn messages(count: u64) -> String {
    counted(count, "message")
}

pub(super) fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{desired, installed, observed_queue};

    #[test]
    fn declared_endpoints_present_are_reported_kept() {
        let d =
            desired("endpoints:\n  - address: Sales\n    bind_to: exchange\n    declare: true\n");
        let mut observed = installed(&d);
        observed
            .queues
            .insert("Sales".into(), observed_queue("Sales", Default::default()));
        let mut report = Report {
            removed_queues: vec!["a".into()],
            ..Report::default()
        };
        report.keep_endpoints(&d, Some(&observed));
        let outcome = report.finish("v");
        assert!(
            outcome.text.contains(
                "kept endpoint queue Sales (declared by the topology; teardown never deletes \
                 endpoints)\n"
            ) && !outcome.text.contains("exchange Sales"),
            "{}",
            outcome.text
        );
        assert_eq!(outcome.json["kept_endpoints"], json!(["queue Sales"]));
        let mut blind = Report::default();
        blind.keep_endpoints(&d, None);
        assert_eq!(blind.kept_endpoints, ["exchange Sales", "queue Sales"]);
    }

    fn level(level: u8) -> LevelQueue {
        LevelQueue {
            level,
            name: format!("nsb.v2.delay-level-{level:02}"),
            at_least_once: true,
            ttl_ms: 1000 << level,
            dead_letter_exchange: None,
        }
    }

    #[test]
    fn a_refusal_lists_each_level_and_the_total() {
        let report = Report {
            refusal: Some(Refusal {
                reason: "level queues hold delayed messages".into(),
                levels: vec![
                    (
                        level(11),
                        Holding {
                            ready_now: 2,
                            ..Holding::default()
                        },
                    ),
                    (
                        level(0),
                        Holding {
                            statistics_messages: 1,
                            dead_letter_backlog: 1,
                            ..Holding::default()
                        },
                    ),
                ],
                restored: false,
            }),
            ..Report::default()
        };
        let outcome = report.finish("v");
        assert!(!outcome.ok);
        assert!(
            outcome.text.contains("nothing was changed"),
            "{}",
            outcome.text
        );
        assert!(outcome
            .text
            .contains("level 11  nsb.v2.delay-level-11  2 messages (2 ready)"));
        assert!(outcome
            .text
            .contains("1 message (1 in the dead-letter backlog"));
        assert!(outcome.text.contains("3 messages in 2 levels"));
        assert_eq!(outcome.json["refused"]["total"], 3);
        assert_eq!(
            outcome.json["refused"]["levels"][1]["dead_letter_backlog"],
            1
        );
        assert_eq!(outcome.json["discarded"]["total"], 0);
    }

    #[test]
    fn a_forced_delete_reports_what_it_discarded() {
        let report = Report {
            removed_exchanges: vec!["a".into(), "b".into()],
            removed_queues: vec!["a".into()],
            discarded: vec![(level(3), 2), (level(5), 1)],
            ..Report::default()
        };
        let outcome = report.finish("v");
        assert!(outcome.ok);
        assert!(outcome
            .text
            .contains("removed 2 exchanges, 1 queue and 0 bindings"));
        assert!(outcome.text.contains("discarded 3 messages in total"));
        assert_eq!(outcome.json["discarded"]["levels"][0]["messages"], 2);
        assert_eq!(outcome.json["mode"], "delete");
    }

    #[test]
    fn messages_lost_without_force_are_not_ok() {
        let report = Report {
            removed_queues: vec!["a".into()],
            discarded: vec![(level(3), 1)],
            lost_unforced: true,
            ..Report::default()
        };
        assert!(!report.finish("v").ok);
    }
}
