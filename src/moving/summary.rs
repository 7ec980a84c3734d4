//! The result of a move, for people (a table per level) and for machines
//! (JSON with per-level counts). The run is `ok` when every message found
//! landed in the target cascade: nothing poisoned, nothing left behind, no
//! conflict in the target cascade, not stopped by a signal.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::commands::fanout::VhostOutcome;
use crate::moving::ledger::Ledger;
use crate::moving::routes::{RouteOutcome, Routes};
use crate::moving::{Job, RunState, Side};

pub(super) fn render(
    job: &Job,
    ledger: &Ledger,
    routes: &Routes,
    state: &RunState,
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
    let stuck: u64 = state.stuck.as_ref().map_or(0, |s| s.values().sum());
    let ok = conflicts.is_empty()
        && total.poisoned == 0
        && total.left == 0
        && stuck == 0
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
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{}{}: {} -> {}",
        job.command,
        if job.dry_run { " (dry run)" } else { "" },
        describe(&job.from),
        describe(&job.to)
    );
    if !conflicts.is_empty() {
        let _ = writeln!(
            text,
            "the target cascade conflicts with the topology; nothing was moved:"
        );
        for conflict in conflicts {
            let _ = writeln!(text, "  {conflict}");
        }
    } else if !missing.is_empty() {
        let _ = writeln!(
            text,
            "target cascade: {} {} missing{}",
            missing.len(),
            if missing.len() == 1 {
                "entity"
            } else {
                "entities"
            },
            if job.dry_run {
                " (would be created)"
            } else {
                ", created"
            }
        );
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
    for warning in &warnings {
        let _ = writeln!(text, "warning: {warning}");
    }
    for note in duplicate_notes(ledger, state) {
        let _ = writeln!(text, "{note}");
    }
    let _ = writeln!(
        text,
        "{moved_word} {} and {poisoned_word} {} of {} messages in {seconds:.1} s ({rate:.0} msg/s); \
         {skipped_word} {} already landed, reconnects {}",
        total.moved,
        total.poisoned,
        total.found,
        total.skipped,
        state.reconnects
    );
    if let Some(signal) = state.interrupted {
        let left = if state.left_counted {
            format!("{} still in the source", total.left)
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
        "skipped": total.skipped,
        "dead_letter_backlog": stuck,
        "skipped_landed_this_run": ledger.skipped_this_run,
        "skipped_from_journal": ledger.skipped_from_journal,
        "possible_duplicates": ledger.possible_duplicates,
        "in_doubt": ledger.in_doubt_redelivered,
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
            for (level, count) in stuck.iter().rev() {
                warnings.push(format!(
                    "{count} messages of {} are stuck in its dead-letter backlog: \
                     they cannot be moved until their next hop routes again",
                    job.from.cascade.level_name(*level)
                ));
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

/// What the run can say about messages that may have landed twice: as
/// precisely as the journal allows, and without alarm where nothing points
/// to an earlier run (a dry run hands every message back redelivered).
fn duplicate_notes(ledger: &Ledger, state: &RunState) -> Vec<String> {
    let mut notes = Vec::new();
    if ledger.without_id > 0 {
        notes.push(format!(
            "note: {} messages have no message id: they cannot be recognised if they come back, \
             so for them the move is at-least-once",
            ledger.without_id
        ));
    }
    if ledger.in_doubt_redelivered > 0 {
        notes.push(format!(
            "warning: {} messages had been published before without a confirm (by this run \
             before a connection was lost, or by an interrupted run, says the journal) and were \
             published again: they may now be in the target twice",
            ledger.in_doubt_redelivered
        ));
    }
    let redelivered = ledger.possible_duplicates - ledger.in_doubt_redelivered;
    if redelivered > 0 {
        notes.push(if state.journal.is_some() {
            format!(
                "note: {redelivered} messages had been delivered before (a dry run, a stopped \
                 run, another consumer); the journal records no publish of them, so none is a \
                 duplicate"
            )
        } else {
            format!(
                "note: {redelivered} messages had been delivered before (an interrupted run, a \
                 dry run, another consumer); without a journal this run cannot tell whether an \
                 interrupted run had already moved them: any it had is now in the target twice"
            )
        });
    }
    notes
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

pub(super) fn describe(side: &Side) -> String {
    format!(
        "{} vhost `{}` ({} levels from {})",
        side.broker.amqp_display(),
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
