//! The result of a move, for people (a table per level) and for machines
//! (JSON with per-level counts). The run is `ok` when every message found
//! landed in the target cascade: nothing poisoned, nothing left behind, no
//! conflict in the target cascade, not stopped by a signal.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::commands::fanout::VhostOutcome;
use crate::counted::counted;
use crate::moving::ledger::Ledger;
use crate::moving::routes::{RouteOutcome, Routes};
use crate::moving::size_limit::Origin;
use crate::moving::{Job, RunState, Side};

pub(super) fn render(
    job: &Job,
    ledger: &Ledger,
    routes: &Routes,
    state: &RunState,
    (max_message_size, limit_origin): (u64, Origin),
    elapsed: Duration,
) -> VhostOutcome {
    let total = ledger.total();
    let conflicts = state
        .cascade
        .as_ref()
        .map_or(&[][..], |c| c.conflicts.as_slice());
    let missing = state
        .cascade
        .as_ref()
        .map_or(&[][..], |c| c.missing.as_slice());
    let warnings = warnings(job, routes, state);
    let source_exists = state.absent.len() < usize::from(job.from.cascade.levels);
    let stuck: u64 = state
        .stuck
        .as_ref()
        .map_or(0, |s| s.values().map(|s| s.backlog).sum());
    let held: u64 = state
        .stuck
        .as_ref()
        .map_or(0, |s| s.values().map(|s| s.held).sum());
    let ok = conflicts.is_empty()
        && total.poisoned == 0
        && total.left == 0
        && total.too_large == 0
        && stuck == 0
        && held == 0
        && source_exists
        && state.interrupted.is_none();
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        ledger.settled() as f64 / seconds
    } else {
        0.0
    };

    let (moved_word, poisoned_word, skipped_word) = if job.dry_run {
        ("would move", "would poison", "would skip")
    } else {
        ("moved", "poisoned", "skipped")
    };
    let mut text = header(job.command, job.dry_run, &job.from, &job.to);
    if !conflicts.is_empty() {
        let _ = writeln!(
            text,
            "the target cascade conflicts with the topology; nothing was moved:"
        );
        for conflict in conflicts {
            let _ = writeln!(text, "  {conflict}");
        }
    } else if !missing.is_empty() {
        let _ = writeln!(text, "target cascade: {}", missing_text(missing, job));
    }
    let _ = writeln!(
        text,
        "{:>5} {:>9} {:>10} {:>9} {:>12} {:>10} {:>6}",
        "level", "found", moved_word, "due now", poisoned_word, skipped_word, "left"
    );
    for (level, c) in ledger.levels.iter().rev() {
        if c.found + c.moved + c.poisoned + c.skipped + c.left > 0 {
            let _ = writeln!(
                text,
                "{level:>5} {:>9} {:>10} {:>9} {:>12} {:>10} {:>6}",
                c.found, c.moved, c.delivered_now, c.poisoned, c.skipped, c.left
            );
        }
    }
    let _ = writeln!(
        text,
        "{:>5} {:>9} {:>10} {:>9} {:>12} {:>10} {:>6}",
        "total",
        total.found,
        total.moved,
        total.delivered_now,
        total.poisoned,
        total.skipped,
        total.left
    );
    for (address, outcome) in routes.outcomes() {
        let _ = writeln!(
            text,
            "route {address}: {}",
            route_text(outcome, job.dry_run)
        );
    }
    for (reason, count) in &ledger.reasons {
        let _ = writeln!(
            text,
            "{poisoned_word} {count} to {}: {reason}",
            job.poison_queue
        );
    }
    for (level, c) in ledger.levels.iter().rev().filter(|(_, c)| c.too_large > 0) {
        let _ = writeln!(
            text,
            "{} too large for the target (max {max_message_size} bytes, {}) {} in the source: {}",
            count(c.too_large, "message"),
            limit_origin.as_str(),
            match (job.dry_run, c.too_large) {
                (true, _) => "would stay",
                (false, 1) => "stays",
                (false, _) => "stay",
            },
            job.from.cascade.level_name(*level)
        );
    }
    for warning in &warnings {
        let _ = writeln!(text, "warning: {warning}");
    }
    for note in duplicate_notes(ledger, state) {
        let _ = writeln!(text, "{note}");
    }
    let _ = writeln!(
        text,
        "{moved_word} {} and {poisoned_word} {} of {} in {seconds:.1} s ({rate:.0} msg/s)\n\
         {skipped_word} {} already landed, reconnects {}",
        total.moved,
        total.poisoned,
        counted(total.found, "message"),
        total.skipped,
        state.reconnects
    );
    if let Some(signal) = state.interrupted {
        let left = if state.left_counted {
            format!("{} still in the source", total.left + total.too_large)
        } else {
            "the source could not be counted (the broker was unreachable)".into()
        };
        let _ = writeln!(
            text,
            "stopped by {signal}: {moved_word} {}, {poisoned_word} {}, {left}; run again to finish",
            total.moved, total.poisoned
        );
    }

    let levels: Vec<Value> = ledger
        .levels
        .iter()
        .rev()
        .map(|(&level, c)| {
            json!({
                "level": level,
                "queue": job.from.cascade.level_name(level),
                "found": c.found,
                "moved": c.moved,
                "delivered_now": c.delivered_now,
                "poisoned": c.poisoned,
                "skipped": c.skipped,
                "left": c.left,
                "too_large": c.too_large,
            })
        })
        .collect();
    let route_list: Vec<Value> = routes
        .outcomes()
        .iter()
        .map(|(address, outcome)| {
            let mut entry = serde_json::to_value(outcome).unwrap_or(Value::Null);
            entry["address"] = json!(address);
            entry
        })
        .collect();
    let json = json!({
        "command": job.command,
        "dry_run": job.dry_run,
        "from": side_json(&job.from),
        "to": side_json(&job.to),
        "poison_queue": job.poison_queue,
        "target_cascade": { "missing": missing, "conflicts": conflicts },
        "found": total.found,
        "moved": total.moved,
        "delivered_now": total.delivered_now,
        "poisoned": total.poisoned,
        "left": total.left,
        "too_large": total.too_large,
        "max_message_size": { "bytes": max_message_size, "from": limit_origin.key() },
        "skipped": total.skipped,
        "dead_letter_backlog": stuck,
        "held_unacknowledged": held,
        "skipped_landed_this_run": ledger.skipped_this_run,
        "skipped_from_journal": ledger.skipped_from_journal,
        "possible_duplicates": ledger.possible_duplicates,
        "in_doubt": ledger.in_doubt_redelivered,
        "staged": state.staged,
        "found_in_staging": ledger.found_in_staging,
        "dropped_in_staging": ledger.dropped_in_staging,
        "held_in_staging": ledger.held_in_staging,
        "refusals": ledger.refusals,
        "without_id": ledger.without_id,
        "interrupted": state.interrupted,
        "left_counted": state.left_counted,
        "journal": state.journal.as_ref().map(|j| json!({
            "path": j.path.display().to_string(),
            "existed": j.existed,
            "earlier_landed": j.earlier,
            "removed": j.removed,
        })),
        "reconnects": state.reconnects,
        "passes": state.passes,
        "elapsed_seconds": seconds,
        "messages_per_second": rate,
        "levels": levels,
        "poison_reasons": ledger.reasons,
        "routes": route_list,
        "warnings": warnings,
    });
    VhostOutcome { ok, text, json }
}

fn warnings(job: &Job, routes: &Routes, state: &RunState) -> Vec<String> {
    let mut warnings = Vec::new();
    if state.absent.len() == usize::from(job.from.cascade.levels) {
        warnings.push(format!(
            "no level queue of the source cascade exists in vhost `{}` (is the source topology right?)",
            job.from.broker.vhost
        ));
    } else if !state.absent.is_empty() {
        let names: Vec<&str> = state
            .absent
            .iter()
            .map(|&l| job.from.cascade.level_name(l))
            .collect();
        warnings.push(format!("source level queues missing: {}", names.join(", ")));
    }
    match &state.stuck {
        Ok(stuck) => {
            for (level, stuck) in stuck.iter().rev() {
                let name = job.from.cascade.level_name(*level);
                let is_are = |count: u64| if count == 1 { "is" } else { "are" };
                if stuck.backlog > 0 {
                    warnings.push(format!(
                        "{} of {name} {} stuck in its dead-letter backlog: \
                         they cannot be moved until their next hop routes again",
                        counted(stuck.backlog, "message"),
                        is_are(stuck.backlog)
                    ));
                }
                if stuck.held > 0 {
                    warnings.push(format!(
                        "{} of {name} {} held unacknowledged by a consumer that is gone \
                         (a quorum queue keeps what a consumer through a node that went \
                         down took, until that node is back and sometimes longer): run \
                         again later to move them",
                        counted(stuck.held, "message"),
                        is_are(stuck.held)
                    ));
                }
            }
        }
        Err(problem) => warnings.push(format!(
            "could not check the source levels' dead-letter backlog: {problem}"
        )),
    }
    for (short, long) in routes.overlaps() {
        warnings.push(format!(
            "address {short} is a dot-suffix of {long}: the binding #.{short} also delivers {long}'s delayed messages to {short}"
        ));
    }
    warnings
}

/// What was missing of the target cascade and what the run made of it:
/// its exchanges and queues are known missing (a passive declare says so);
/// its bindings cannot be seen over AMQP, so all of them are declared.
fn missing_text(missing: &[String], job: &Job) -> String {
    let exchanges = missing
        .iter()
        .filter(|m| m.starts_with("exchange "))
        .count();
    let entities = format!(
        "{} and {}",
        counted(exchanges as u64, "exchange"),
        counted((missing.len() - exchanges) as u64, "queue")
    );
    let bindings = counted(job.to.cascade.cascade_bindings().count() as u64, "binding");
    if job.dry_run {
        format!("{entities} missing; would create them and declare its {bindings}")
    } else {
        format!("{entities} were missing: created them and declared its {bindings}")
    }
}

/// "1 message has" / "2 messages have".
fn has(count: u64) -> String {
    let verb = if count == 1 { "has" } else { "have" };
    format!("{} {verb}", counted(count, "message"))
}

/// "1 message had" / "2 messages had".
fn had(count: u64) -> String {
    format!("{} had", counted(count, "message"))
}

/// What the run can say about messages that may have landed twice: as
/// precisely as the journal allows, and without alarm where nothing points
/// to an earlier run (a dry run hands every message back redelivered).
fn duplicate_notes(ledger: &Ledger, state: &RunState) -> Vec<String> {
    let mut notes = Vec::new();
    if ledger.without_id > 0 {
        notes.push(format!(
            "note: {} no message id: they cannot be recognised if they come back, \
             so for them the move is at-least-once",
            has(ledger.without_id)
        ));
    }
    if ledger.refusals > 0 {
        notes.push(format!(
            "note: the target refused a publish {} (publisher nack: a queue without a \
             leader for a moment, or full); each refused message was published again",
            counted(ledger.refusals, "time")
        ));
    }
    if ledger.found_in_staging > 0 {
        notes.push(format!(
            "note: {} found in the staging queues: an interrupted run had landed them \
             without seeing the confirm, so they were not published again",
            counted(ledger.found_in_staging, "message")
        ));
    }
    if ledger.held_in_staging > 0 {
        notes.push(format!(
            "warning: {} in the staging queues that this run did not publish: \
             another run's, landed late; the next run releases them into the cascade",
            counted(ledger.held_in_staging, "copy")
        ));
    }
    if ledger.in_doubt_redelivered > 0 && state.staged {
        notes.push(format!(
            "note: {} been published before without a confirm and published again; \
             the staging queues let one copy of each into the cascade ({} dropped)",
            had(ledger.in_doubt_redelivered),
            counted(ledger.dropped_in_staging, "copy")
        ));
    } else if ledger.in_doubt_redelivered > 0 {
        notes.push(format!(
            "warning: {} been published before without a confirm (by this run \
             before a connection was lost, or by an interrupted run, says the journal) and \
             published again: they may now be in the target twice",
            had(ledger.in_doubt_redelivered)
        ));
    }
    let redelivered = ledger.possible_duplicates - ledger.in_doubt_redelivered;
    if redelivered > 0 {
        notes.push(if state.journal.is_some() {
            format!(
                "note: {} been delivered before (a dry run, a stopped \
                 run, another consumer); the journal records no publish of them, so none is a \
                 duplicate",
                had(redelivered)
            )
        } else {
            format!(
                "note: {} been delivered before (an interrupted run, a \
                 dry run, another consumer); without a journal this run cannot tell whether an \
                 interrupted run had already moved them: any it had is now in the target twice",
                had(redelivered)
            )
        });
    }
    notes
}

/// `1 message`, `2 messages`.
fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn route_text(outcome: &RouteOutcome, dry_run: bool) -> String {
    match outcome {
        RouteOutcome::Bound {
            destination,
            listed,
        } => format!(
            "{} {} {}{}",
            if dry_run { "would bind" } else { "bound" },
            destination.as_str(),
            "of the same name",
            if *listed { " (from the topology)" } else { "" }
        ),
        RouteOutcome::Nowhere { detail } => format!("none, messages poisoned: {detail}"),
    }
}

/// Where the messages come from and go to, a few short lines:
///
/// ```text
/// migrate (dry run)
///   from  vhost `shop`, 28 levels from nsb.delay-level-27
///         amqp://guest:****@localhost:5672/shop
///   to    vhost `shop`, 28 levels from nsb.v2.delay-level-27
///         amqp://guest:****@localhost:5672/shop
/// ```
pub(crate) fn header(command: &str, dry_run: bool, from: &Side, to: &Side) -> String {
    let side = |label: &str, side: &Side| {
        format!(
            "  {label:<4}  vhost `{}`, {} levels from {}\n        {}\n",
            side.broker.vhost,
            side.cascade.levels,
            side.cascade.level_name(side.cascade.levels - 1),
            side.broker.amqp_display()
        )
    };
    format!(
        "{command}{}\n{}{}",
        if dry_run { " (dry run)" } else { "" },
        side("from", from),
        side("to", to)
    )
}

/// One end of the move on one line, its broker named by `url`: part of the
/// journal's key, so its form never changes.
pub(super) fn describe_at(side: &Side, url: &str) -> String {
    format!(
        "{} vhost `{}` ({} levels from {})",
        url,
        side.broker.vhost,
        side.cascade.levels,
        side.cascade.level_name(side.cascade.levels - 1)
    )
}

fn side_json(side: &Side) -> Value {
    json!({
        "url": side.broker.amqp_display(),
        "vhost": side.broker.vhost,
        "levels": side.cascade.levels,
        "highest_level": side.cascade.level_name(side.cascade.levels - 1),
        "delivery_exchange": side.cascade.delivery_exchange,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{assert_fits_80_columns, desired, target};

    #[test]
    fn the_header_names_both_ends_within_80_columns() {
        let from = Side {
            broker: target(),
            cascade: desired(include_str!("../../examples/nservicebus-v1.yaml")),
        };
        let to = Side {
            broker: target(),
            cascade: desired(""),
        };
        let text = header("migrate", true, &from, &to);
        assert_eq!(
            text,
            "migrate (dry run)\n  \
             from  vhost `/`, 28 levels from nsb.delay-level-27\n        \
             amqp://guest:****@localhost:5672/%2F\n  \
             to    vhost `/`, 28 levels from nsb.v2.delay-level-27\n        \
             amqp://guest:****@localhost:5672/%2F\n"
        );
        assert_fits_80_columns("migrate header", &text);
    }
}
