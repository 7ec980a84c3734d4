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

mod plan;
mod report;
mod restore;

use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::ProgressBar;

use crate::amqp;
use crate::apply::{binding_label, OpResult, Operation, Session, DEFAULT_LANES};
use crate::cascade::Desired;
use crate::cli::TeardownArgs;
use crate::commands::fanout::{each_target, VhostOutcome};
use crate::context::Context;
use crate::exit::{self, broker};
use crate::interrupt::Interrupt;
use crate::mgmt::{Management, NotProvenSameBroker};
use crate::observe::{observe, Depth, Observed, ObservedBinding, ObservedQueue};
use crate::preflight;
use crate::progress::Progress;
use crate::report::Outcome;
use crate::target::Target;

use plan::{Holding, LevelQueue, Plan};
use report::{messages, plural, Refusal, Report};
use restore::{put_back, restore};

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
    let session = session?;
    if let Some(observed) = statistics.filter(|_| !plan.is_empty()) {
        // Deletes and publishes time out without a quorum, and an alarm
        // blocks the restore's checks: refuse before changing anything.
        if let Some(reason) = unsafe_now(&desired, observed, alarms.ok().flatten()) {
            close(session).await;
            report.refusal = Some(Refusal {
                reason,
                levels: Vec::new(),
                restored: false,
            });
            return Ok(report.finish(&target.vhost));
        }
    }
    if plan.is_empty() {
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
    close(session.into_inner()).await;
    result?;
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

/// Why the broker cannot take a teardown now, if it cannot: level queues
/// without a quorum online, or a resource alarm.
fn unsafe_now(
    desired: &Desired,
    observed: &Observed,
    alarms: Option<Vec<String>>,
) -> Option<String> {
    let without_quorum: Vec<String> = crate::health::quorum_findings(desired, &observed.queues, 1)
        .into_iter()
        .filter(|f| f.kind == "quorum_unavailable")
        .map(|f| format!("{} ({})", f.entity, f.actual.unwrap_or_default()))
        .collect();
    if !without_quorum.is_empty() {
        return Some(format!(
            "{} level queue{} without a quorum online: {}; nothing was changed, run teardown \
             again once the nodes are back",
            without_quorum.len(),
            plural(without_quorum.len()),
            crate::report::first_few(&without_quorum, 3, ", ")
        ));
    }
    let alarms = alarms.unwrap_or_default();
    (!alarms.is_empty()).then(|| {
        format!(
            "resource alarm ({}): publishes are blocked, so teardown could not put the cascade \
             back if it had to; nothing was changed",
            alarms.join(", ")
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

/// The broker handles a teardown step needs.
struct Looks<'a> {
    session: tokio::sync::Mutex<Session>,
    management: Option<&'a Management>,
    bar: &'a ProgressBar,
}

impl Looks<'_> {
    async fn run(&self, ops: &[Operation], lanes: usize) -> Vec<OpResult> {
        self.bar.inc_length(ops.len() as u64);
        let mut session = self.session.lock().await;
        session.apply_on_lanes(ops, lanes, self.bar).await
    }

    /// Keeps in `plan` only the exchanges and queues a passive declare finds.
    async fn narrow_to_present(&self, plan: &mut Plan) -> Result<()> {
        let ops: Vec<Operation> = plan
            .exchanges
            .iter()
            .map(|e| Operation::InspectExchange(e.name.clone()))
            .chain(
                plan.queues
                    .iter()
                    .map(|q| Operation::InspectQueue(q.name.clone())),
            )
            .collect();
        let answers = self.run(&ops, DEFAULT_LANES).await;
        let mut found = Vec::with_capacity(ops.len());
        for (op, answer) in ops.iter().zip(&answers) {
            match answer {
                OpResult::Done { .. } => found.push(true),
                OpResult::Refused {
                    code: Some(404), ..
                } => found.push(false),
                other => return Err(failure(op, other)),
            }
        }
        let (exchanges, queues) = found.split_at(plan.exchanges.len());
        plan.retain_present(exchanges, queues);
        Ok(())
    }

    /// What every queue holds now: the AMQP ready count and, when the
    /// management API answers, fresh statistics (merged with `earlier`).
    /// `None` for a queue that no longer exists.
    async fn holdings(
        &self,
        queues: &[LevelQueue],
        earlier: Option<&[Holding]>,
    ) -> Result<Vec<Option<Holding>>> {
        let ops: Vec<Operation> = queues
            .iter()
            .map(|q| Operation::InspectQueue(q.name.clone()))
            .collect();
        let statistics = async {
            match self.management {
                Some(m) => crate::observe::queues::<ObservedQueue>(m, "")
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (answers, statistics) = futures::join!(self.run(&ops, DEFAULT_LANES), statistics);
        let statistics = statistics?;
        let mut holdings = Vec::with_capacity(queues.len());
        for (index, (queue, answer)) in queues.iter().zip(answers).enumerate() {
            let ready_now = match answer {
                OpResult::Done { messages } => u64::from(messages.unwrap_or(0)),
                OpResult::Refused {
                    code: Some(404), ..
                } => {
                    holdings.push(None);
                    continue;
                }
                other => return Err(failure(&ops[index], &other)),
            };
            let mut holding = Holding::from_statistics(
                statistics
                    .as_ref()
                    .and_then(|all| all.iter().find(|s| s.name == queue.name)),
            );
            holding.ready_now = ready_now;
            if let Some(earlier) = earlier {
                holding.merge(&earlier[index]);
            }
            holdings.push(Some(holding));
        }
        Ok(holdings)
    }
}

/// Level queues that hold messages, with what they hold.
fn occupied(queues: &[LevelQueue], holdings: &[Option<Holding>]) -> Vec<(LevelQueue, Holding)> {
    queues
        .iter()
        .zip(holdings)
        .filter_map(|(q, h)| h.clone().map(|h| (q.clone(), h)))
        .filter(|(_, h)| h.total() > 0)
        .collect()
}

/// One vhost's teardown, once the plan is made and the broker is connected.
struct Run<'a> {
    plan: &'a Plan,
    looks: &'a Looks<'a>,
    /// What the observation's statistics said each planned queue holds.
    first_statistics: Option<Vec<Holding>>,
    options: Options,
    /// SIGINT/SIGTERM: honoured between steps, each left whole or undone.
    interrupt: &'a Interrupt,
}

impl Run<'_> {
    async fn go(&self, report: &mut Report) -> Result<()> {
        if self.options.unbind_only {
            self.unbind_only(report).await
        } else {
            self.delete(report).await
        }
    }

    /// The first check: AMQP counts now, merged with the observation's statistics.
    async fn first_holdings(&self) -> Result<Vec<(LevelQueue, Holding)>> {
        let first = self
            .looks
            .holdings(&self.plan.queues, self.first_statistics.as_deref())
            .await?;
        Ok(occupied(&self.plan.queues, &first))
    }

    async fn delete(&self, report: &mut Report) -> Result<()> {
        let Run {
            plan,
            looks,
            options,
            ..
        } = *self;
        let first_statistics = &self.first_statistics;
        let started = Instant::now();
        if !options.force {
            let held = self.first_holdings().await?;
            if !held.is_empty() {
                report.refusal = Some(Refusal {
                    reason: "level queues hold delayed messages".into(),
                    levels: held,
                    restored: false,
                });
                return Ok(());
            }
            // The first check's own round trips already gave hops time to land.
            tokio::time::sleep(SETTLE.saturating_sub(started.elapsed())).await;
        }

        if let Some(signal) = self.interrupt.requested() {
            return Err(exit::interrupted(signal, "nothing was changed"));
        }
        let stop = plan.stop_inflow();
        let answers = looks.run(&stop, 1).await;
        if let Some(error) = first_failure(&stop, &answers, &[404]) {
            if !answers.iter().any(OpResult::is_done) {
                return Err(error.context("stopping the inflow failed; nothing was changed"));
            }
            return Err(match restore(plan, looks).await {
                Ok(()) => {
                    error.context("stopping the inflow failed; the cascade was put back as it was")
                }
                Err(restoring) => {
                    restoring.context(format!("stopping the inflow failed: {error:#}"))
                }
            });
        }

        if let Some(signal) = self.interrupt.requested() {
            restore(plan, looks).await?;
            return Err(exit::interrupted(
                signal,
                "the cascade was put back as it was",
            ));
        }
        if !options.force {
            let last = looks.holdings(&plan.queues, None).await?;
            let held = occupied(&plan.queues, &last);
            let window = started.elapsed();
            let too_slow = window.as_millis() >= plan.shortest_ttl_ms().max(0) as u128;
            if !held.is_empty() || too_slow {
                restore(plan, looks).await?;
                let reason = if held.is_empty() {
                    format!(
                    "the checks took {} but the shortest level TTL is {}: a message could have \
                     expired unseen in between",
                    amqp::seconds(window),
                    amqp::seconds(Duration::from_millis(plan.shortest_ttl_ms() as u64)),
                )
                } else {
                    "delayed messages arrived while teardown ran".into()
                };
                report.refusal = Some(Refusal {
                    reason,
                    levels: held,
                    restored: true,
                });
                return Ok(());
            }
        }

        let deletes: Vec<Operation> = plan
            .queues
            .iter()
            .map(|q| Operation::DeleteQueue(q.name.clone()))
            .collect();
        let mut finish = deletes.clone();
        // Nothing reaches a level queue through the delivery exchange, so it
        // goes with the queues; until now level 0 delivered through it.
        if let Some(delivery) = plan.delivery_exchange() {
            finish.push(Operation::DeleteExchange(delivery.name.clone()));
        }
        let answers = looks.run(&finish, DEFAULT_LANES).await;
        if let Some(error) =
            first_failure(&finish[deletes.len()..], &answers[deletes.len()..], &[404])
        {
            return Err(error.context("the level queues are deleted; run teardown again to finish"));
        }
        report.removed_exchanges = plan.exchanges.iter().map(|e| e.name.clone()).collect();
        report.removed_bindings = plan
            .recorded
            .iter()
            .chain(&plan.foreign_inflow)
            .cloned()
            .collect();
        for (index, (op, answer)) in deletes.iter().zip(&answers).enumerate() {
            let queue = &plan.queues[index];
            match answer {
                OpResult::Done { messages } => {
                    report.removed_queues.push(queue.name.clone());
                    // Forced: the statistics also count the backlog the delete does not report.
                    let statistics = match (&first_statistics, options.force) {
                        (Some(all), true) => all[index].total(),
                        _ => 0,
                    };
                    let count = u64::from(messages.unwrap_or(0)).max(statistics);
                    if count > 0 {
                        report.discarded.push((queue.clone(), count));
                    }
                }
                OpResult::Refused {
                    code: Some(404), ..
                } => {}
                other => {
                    return Err(failure(op, other).context(
                        "the cascade's exchanges are already deleted; run teardown again to finish",
                    ))
                }
            }
        }
        if !options.force && !report.discarded.is_empty() {
            report.lost_unforced = true;
            report.warnings.push(
                "messages reached a level queue without passing its exchange (published straight \
             into the queue) after the final check, and were discarded with it"
                    .into(),
            );
        }
        Ok(())
    }

    async fn unbind_only(&self, report: &mut Report) -> Result<()> {
        let Run {
            plan,
            looks,
            options,
            ..
        } = *self;
        let started = Instant::now();
        let held = self.first_holdings().await?;
        let (safe, endangered): (Vec<_>, Vec<_>) =
            held.into_iter().partition(|(q, _)| q.at_least_once);
        if !endangered.is_empty() && !options.force {
            report.refusal = Some(Refusal {
                reason: "these level queues drop expiring messages that cannot be routed onward \
                     (they are not at-least-once quorum queues), so unbinding would lose them"
                    .into(),
                levels: endangered,
                restored: false,
            });
            return Ok(());
        }

        let outgoing = plan.outgoing();
        let (plain, with_arguments): (Vec<&ObservedBinding>, Vec<&ObservedBinding>) =
            outgoing.into_iter().partition(|b| b.arguments.is_empty());
        for b in &with_arguments {
            report.warnings.push(format!(
                "kept {}: it has binding arguments",
                binding_label(&plan::binding(b))
            ));
        }
        let unbinds: Vec<Operation> = plain
            .iter()
            .map(|b| Operation::Unbind(plan::binding(b)))
            .collect();
        let rebinds = || -> Vec<Operation> {
            plain
                .iter()
                .rev()
                .map(|b| Operation::Bind(plan::binding(b)))
                .collect()
        };
        if let Some(signal) = self.interrupt.requested() {
            return Err(exit::interrupted(signal, "nothing was changed"));
        }
        let answers = looks.run(&unbinds, DEFAULT_LANES).await;
        if let Some(signal) = self.interrupt.requested() {
            put_back(looks, &rebinds()).await?;
            return Err(exit::interrupted(signal, "the bindings were put back"));
        }
        if let Some(error) = first_failure(&unbinds, &answers, &[]) {
            put_back(looks, &rebinds()).await?;
            return Err(error.context("unbinding failed; the bindings were put back"));
        }

        let at_most_once: Vec<LevelQueue> = plan
            .queues
            .iter()
            .filter(|q| !q.at_least_once)
            .cloned()
            .collect();
        if !options.force && !at_most_once.is_empty() {
            let last = looks.holdings(&at_most_once, None).await?;
            let held = occupied(&at_most_once, &last);
            let shortest = at_most_once
                .iter()
                .map(|q| q.ttl_ms)
                .min()
                .unwrap_or(i64::MAX);
            if !held.is_empty() || started.elapsed().as_millis() >= shortest.max(0) as u128 {
                put_back(looks, &rebinds()).await?;
                report.refusal = Some(Refusal {
                    reason: "delayed messages arrived in level queues that would drop them while \
                         unbound"
                        .into(),
                    levels: held,
                    restored: true,
                });
                return Ok(());
            }
        }
        report.removed_bindings = plain.into_iter().cloned().collect();
        for (queue, holding) in &endangered {
            report.warnings.push(format!(
                "{} in {} will be dropped when {} (--force: it does not \
                 keep messages it cannot route onward)",
                messages(holding.total()),
                queue.name,
                if holding.total() == 1 {
                    "it expires"
                } else {
                    "they expire"
                }
            ));
        }
        report.kept = safe.into_iter().chain(endangered).collect();
        Ok(())
    }
}

/// The first operation that did not succeed (a refusal with one of
/// `tolerated` codes counts as success: the entity was already gone).
fn first_failure(
    ops: &[Operation],
    answers: &[OpResult],
    tolerated: &[u16],
) -> Option<anyhow::Error> {
    ops.iter()
        .zip(answers)
        .find_map(|(op, answer)| match answer {
            OpResult::Done { .. } => None,
            OpResult::Refused {
                code: Some(code), ..
            } if tolerated.contains(code) => None,
            other => Some(failure(op, other)),
        })
}

fn failure(op: &Operation, result: &OpResult) -> anyhow::Error {
    broker(format!("{}: {}", op.describe(), result_text(result)))
}

fn result_text(result: &OpResult) -> String {
    match result {
        OpResult::Done { .. } => "done".into(),
        OpResult::Refused { text, .. } => text.clone(),
        OpResult::Unanswered { reason } => reason.clone(),
    }
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
