//! The result of a move, for people (a table per level) and for machines
//! (JSON with per-level counts). The run is `ok` when every message found
//! landed in the target cascade: nothing poisoned, nothing left behind, no
//! conflict in the target cascade.

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
        && source_exists;
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        (total.moved + total.poisoned) as f64 / seconds
    } else {
        0.0
    };

    let (moved_word, poisoned_word) = if job.dry_run {
        ("would move", "would poison")
    } else {
        ("moved", "poisoned")
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
        "{:>5} {:>9} {:>10} {:>9} {:>12} {:>6}",
        "level", "found", moved_word, "due now", poisoned_word, "left"
    );
    for (level, c) in ledger.levels.iter().rev() {
        if c.found + c.moved + c.poisoned + c.left > 0 {
            let _ = writeln!(
                text,
                "{level:>5} {:>9} {:>10} {:>9} {:>12} {:>6}",
                c.found, c.moved, c.delivered_now, c.poisoned, c.left
            );
        }
    }
    let _ = writeln!(
        text,
        "{:>5} {:>9} {:>10} {:>9} {:>12} {:>6}",
        "total", total.found, total.moved, total.delivered_now, total.poisoned, total.left
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
    let _ = writeln!(
        text,
        "{moved_word} {} and {poisoned_word} {} of {} messages in {seconds:.1} s ({rate:.0} msg/s); \
         duplicates {}, reconnects {}",
        total.moved,
        total.poisoned,
        total.found,
        ledger.duplicates,
        state.reconnects
    );
    if ledger.possible_duplicates > 0 {
        let _ = writeln!(
            text,
            "{} messages were delivered before (an interrupted run, or a dry run): \
             any of them that an interrupted run had already moved is now in the target twice",
            ledger.possible_duplicates
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
        "dead_letter_backlog": stuck,
        "duplicates": ledger.duplicates,
        "possible_duplicates": ledger.possible_duplicates,
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

fn describe(side: &Side) -> String {
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
