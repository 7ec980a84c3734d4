//! `teardown`: removes the cascade from a vhost without ever dropping a
//! delayed message unless told to (SPEC §4).
//!
//! Why it goes the way it does:
//! - Quorum queues answer `queue.delete` with `if-empty` by killing the whole
//!   connection (540), so emptiness is checked here, from two sources: the
//!   AMQP passive declare counts ready messages *now*; the management API's
//!   statistics lag by seconds but see the at-least-once dead-letter backlog
//!   (a jam), which AMQP cannot. Either one above zero refuses.
//! - A check is only worth something if nothing can arrive after it. Senders
//!   and higher levels reach a level queue only through the level exchanges,
//!   so the exchanges are deleted (upstream first, in one pipelined ordered
//!   phase, so no remaining exchange ever routes into a deleted one) before
//!   the final check: a late publisher gets a loud 404, never a silent drop
//!   on an unbound exchange. Bindings from other exchanges straight into a
//!   level queue are unbound in the same phase. Every binding touching the
//!   cascade's exchanges was recorded from the observation first, so a
//!   refusal after this point puts back exactly what was there (properties,
//!   strays and endpoint bindings the topology does not list included;
//!   bindings with arguments, which the AMQP executor does not carry, go
//!   back through the management API). Exchanges come back downstream
//!   first, each with its bindings right after it on the same channel.
//! - Once the exchanges are gone, a message that expires has nowhere to go
//!   and moves into its queue's dead-letter backlog, out of sight of the
//!   AMQP count. A message that arrived after the first check cannot have
//!   expired before the final one if the two are less than the shortest
//!   TTL of a level whose next hop is gone apart: that window is measured,
//!   and a longer one restores and refuses rather than guess. The delivery
//!   exchange is no way into a level queue, so it is deleted last, with the
//!   queues: level 0 keeps delivering meanwhile, and the bound is level 1's
//!   2 s rather than level 0's 1 s (room for about 150 ms of round trip).
//! - A dead-letter hop in flight at the first check (a message that just
//!   expired, on its way to the next level) is given a short pause to land
//!   before the exchanges go (the first check's own round trips count
//!   towards it); it then sits ready in the next level queue.
//! - What this cannot see: a jam younger than the statistics interval (about
//!   5 s), and a message published straight into a level queue through the
//!   default exchange between the final check and the delete. The second is
//!   not lost silently: the delete's own count reports it as discarded.
//! - `--unbind-only` keeps every queue: at-least-once quorum queues keep
//!   expiring messages in their backlog until the bindings return, but
//!   at-most-once queues (classic, v1, or an `overflow: drop-head` policy)
//!   would drop them, so those must be empty (checked the same way) unless
//!   `--force`. Bindings with arguments are kept there, with a warning.
//! - Without the management API only `--force` goes ahead, by name; since
//!   deleting a missing exchange or queue succeeds, passive declares find
//!   first what is really there, so a second run reports nothing removed.

mod looks;
mod plan;
mod report;
mod restore;
mod run;
mod staging;

use std::time::Duration;

use anyhow::Result;

use crate::apply::{Session, DEFAULT_LANES};
use crate::cascade::Desired;
use crate::cli::TeardownArgs;
use crate::commands::fanout::{each_target, VhostOutcome};
use crate::context::Context;
use crate::exit::{self};
use crate::interrupt::Interrupt;
use crate::mgmt::{Management, NotProvenSameBroker};
use crate::observe::{observe, Depth, Observed};
use crate::preflight;
use crate::progress::Progress;
use crate::report::Outcome;
use crate::target::Target;

use crate::counted::counted;
use looks::Looks;
use plan::{Holding, Plan};
use report::{plural, Refusal, Report};
use run::{failure, result_text, Run};
use staging::Staged;

/// Time given to a dead-letter hop in flight at the first check to land in
/// the next level before the exchanges are deleted.
const SETTLE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Options {
    unbind_only: bool,
    force: bool,
}

/// On a terminal, `--force` asks first (as terraform does before it
/// destroys); `--yes`, or input that is not a terminal, skips the question.
fn confirmed(args: &TeardownArgs, vhosts: usize) -> Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !args.force || args.yes || !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    let mut stderr = std::io::stderr();
    write!(
        stderr,
        "teardown --force discards the delayed messages in the level queues of {vhosts} vhost{}.\n\
         Type yes to go on: ",
        plural(vhosts)
    )?;
    stderr.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

pub async fn run(context: &Context, args: &TeardownArgs, interrupt: &Interrupt) -> Result<Outcome> {
    if !confirmed(args, context.targets.len())? {
        return Ok(Outcome::new(
            false,
            "teardown cancelled: nothing was changed (--yes skips the question)\n".into(),
            serde_json::json!({ "cancelled": true }),
        ));
    }
    let options = Options {
        unbind_only: args.unbind_only,
        force: args.force,
    };
    let progress = context.progress;
    each_target(context, move |target, desired| {
        teardown(target, desired, options, progress, interrupt.clone())
    })
    .await
}

async fn teardown(
    target: Target,
    desired: Desired,
    options: Options,
    progress: Progress,
    interrupt: Interrupt,
) -> Result<VhostOutcome> {
    let management = Management::new(&target)?;
    let mut report = Report {
        unbind_only: options.unbind_only,
        ..Report::default()
    };
    // Connecting costs several round trips: it overlaps the observation.
    // Channels stay open from one check to the next: at long round trips,
    // opening them for each step would stretch the safety window.
    let (observation, alarms, session, allowed) = futures::join!(
        observe(&management, Depth::Definitions),
        crate::observe::alarms(&management),
        Session::open(&target, DEFAULT_LANES),
        preflight::check(&management, &target, "teardown", &desired)
    );
    if let Err(refused) = allowed {
        if let Ok(session) = session {
            close(session).await;
        }
        return Err(refused);
    }
    let (plan, management) = match observation {
        Ok(observed) => (Plan::observed(&desired, &observed), Some((management, observed))),
        // A management API of another broker is refused outright, --force or not.
        Err(error) if options.force && !NotProvenSameBroker::is(&error) => {
            report.warnings.push(format!(
                "{error:#}; going ahead by name (--force): bindings the topology does not \
                 list and the dead-letter backlog could not be seen"
            ));
            (Plan::assumed(&desired), None)
        }
        Err(error) => {
            return Err(error.context(
                "teardown needs the management API: only it shows the bindings to put back \
                 and the dead-letter backlog that AMQP cannot count (--force goes ahead without it)",
            ))
        }
    };
    let statistics = management.as_ref().map(|(_, observed)| observed);
    report.keep_endpoints(&desired, statistics);
    let session = session?;
    if let Some(observed) = statistics.filter(|_| !plan.is_empty()) {
        // Deletes and publishes time out without a quorum, and an alarm
        // blocks the restore's checks: refuse before changing anything.
        if let Some(reason) = unsafe_now(&desired, observed, alarms.ok().flatten()) {
            return Ok(refuse_unchanged(session, report, reason, &target.vhost).await);
        }
    }
    let mut session = session;
    let staged = if options.unbind_only {
        // Queues stay: a staged message is released into the exchanges
        // that stay, and waits in the backlog until the bindings return.
        Staged::default()
    } else {
        match staging::check(&mut session, &target, &desired, statistics, options.force).await {
            Ok(Ok(staged)) => staged,
            Ok(Err(reason)) => {
                return Ok(refuse_unchanged(session, report, reason, &target.vhost).await)
            }
            Err(error) => {
                close(session).await;
                return Err(error);
            }
        }
    };
    if plan.is_empty() && staged.is_empty() {
        close(session).await;
        return Ok(report.finish(&target.vhost));
    }

    let bar = progress.bar(0, &format!("teardown {}", target.vhost));
    let looks = Looks {
        session: tokio::sync::Mutex::new(session),
        management: management.as_ref().map(|(m, _)| m),
        bar: &bar,
    };
    let mut plan = plan;
    if management.is_none() {
        // Deleting a missing exchange or queue succeeds, so only what a
        // passive declare finds is reported as removed.
        looks.narrow_to_present(&mut plan).await?;
    }
    let result = if plan.is_empty() {
        Ok(())
    } else {
        Run {
            first_statistics: statistics.map(|o| {
                plan.queues
                    .iter()
                    .map(|q| Holding::from_statistics(o.queues.get(&q.name)))
                    .collect()
            }),
            plan: &plan,
            looks: &looks,
            options,
            interrupt: &interrupt,
        }
        .go(&mut report)
        .await
    };
    bar.finish_and_clear();
    let Looks { session, .. } = looks;
    let mut session = session.into_inner();
    // The cascade is gone: nothing is left for the staging queues to release into.
    let removed = if result.is_ok() && report.refusal.is_none() && !staged.is_empty() {
        Some(staging::remove(&mut session, &staged).await)
    } else {
        None
    };
    close(session).await;
    result?;
    if let Some(removed) = removed {
        let (exchanges, queues) = removed?;
        report.removed_exchanges.extend(exchanges);
        report.removed_queues.extend(queues);
        if staged.messages() > 0 {
            report.warnings.push(format!(
                "discarded {} staged by an interrupted migrate or transfer (--force)",
                counted(staged.messages(), "message")
            ));
        }
    }
    if let Some(management) = looks.management {
        if !options.unbind_only && report.refusal.is_none() {
            report.still_present = still_present(management, &desired).await?;
        }
    }
    if let Some(signal) = interrupt.requested() {
        // It came once the deletes were under way: they were finished.
        let outcome = report.finish(&target.vhost);
        return Err(exit::interrupted(
            signal,
            format!(
                "finished the step under way: {}",
                outcome.text.lines().last().unwrap_or_default()
            ),
        ));
    }
    Ok(report.finish(&target.vhost))
}

/// A refusal before anything changed.
async fn refuse_unchanged(
    session: Session,
    mut report: Report,
    reason: String,
    vhost: &str,
) -> VhostOutcome {
    close(session).await;
    report.refusal = Some(Refusal {
        reason,
        levels: Vec::new(),
        restored: false,
    });
    report.finish(vhost)
}

/// Why the broker cannot take a teardown now, if it cannot: level queues
/// without a quorum online, or a resource alarm.
fn unsafe_now(
    desired: &Desired,
    observed: &Observed,
    alarms: Option<Vec<String>>,
) -> Option<String> {
    let hazard =
        crate::health::unsafe_to_write(desired, &observed.queues, &alarms.unwrap_or_default())?;
    let lost = &hazard.without_quorum;
    Some(if !lost.is_empty() {
        format!(
            "{} level queue{} without a quorum online: {}; nothing was changed, run teardown \
             again once the nodes are back",
            lost.len(),
            plural(lost.len()),
            crate::report::first_few(lost, 3, ", ")
        )
    } else {
        format!(
            "resource alarm ({}): publishes are blocked, so teardown could not put the cascade \
             back if it had to; nothing was changed",
            hazard.alarms.join(", ")
        )
    })
}

/// Cascade exchanges and queues a fresh look finds after the deletes: an
/// install racing this teardown re-creates them, and the run must not then
/// claim the cascade is gone.
async fn still_present(management: &Management, desired: &Desired) -> Result<Vec<String>> {
    let observed = observe(management, Depth::Definitions).await?;
    let exchanges = desired
        .exchanges
        .iter()
        .filter(|e| observed.exchanges.contains_key(&e.name))
        .map(|e| format!("exchange {}", e.name));
    let queues = desired
        .queues
        .iter()
        .filter(|q| observed.queues.contains_key(&q.name))
        .map(|q| format!("queue {}", q.name));
    Ok(exchanges.chain(queues).collect())
}

/// The work is done: a slow close-ok must not hold the result back.
async fn close(session: Session) {
    let _ = tokio::time::timeout(Duration::from_secs(2), session.close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_without_quorum_or_an_alarm_makes_teardown_refuse_before_any_change() {
        let d = crate::test_fixtures::desired("");
        let mut observed = crate::test_fixtures::installed(&d);
        assert_eq!(unsafe_now(&d, &observed, Some(vec![])), None);
        let alarm = unsafe_now(&d, &observed, Some(vec!["rabbit@b: memory".into()])).unwrap();
        assert!(alarm.contains("rabbit@b: memory") && alarm.contains("nothing was changed"));
        for level in ["00", "01", "02", "03"] {
            let q = observed
                .queues
                .get_mut(&format!("nsb.v2.delay-level-{level}"))
                .unwrap();
            q.members = vec!["a".into(), "b".into(), "c".into()];
            q.online = vec!["a".into()];
        }
        let reason = unsafe_now(&d, &observed, None).unwrap();
        assert!(
            reason.starts_with("4 level queues without a quorum online: queue nsb.v2.delay-level-03 (1 of 3 online)")
                && reason.contains("and 1 more"),
            "{reason}"
        );
    }
}
