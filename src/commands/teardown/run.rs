//! One vhost's teardown, step by step, once the plan is made and the broker
//! is connected: check, delete the exchanges, check again, delete the
//! queues; or put back what was removed when a check refuses. Why in this
//! order: the module above.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::amqp;
use crate::apply::{binding_label, OpResult, Operation, DEFAULT_LANES};
use crate::exit::{self, broker};
use crate::interrupt::Interrupt;
use crate::observe::ObservedBinding;

use super::plan::{Holding, LevelQueue, Plan};
use super::report::{messages, Refusal, Report};
use super::restore::{put_back, restore};
use super::*;

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
pub(super) struct Run<'a> {
    pub(super) plan: &'a Plan,
    pub(super) looks: &'a Looks<'a>,
    /// What the observation's statistics said each planned queue holds.
    pub(super) first_statistics: Option<Vec<Holding>>,
    pub(super) options: Options,
    /// SIGINT/SIGTERM: honoured between steps, each left whole or undone.
    pub(super) interrupt: &'a Interrupt,
}

impl Run<'_> {
    pub(super) async fn go(&self, report: &mut Report) -> Result<()> {
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
pub(super) fn first_failure(
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

pub(super) fn failure(op: &Operation, result: &OpResult) -> anyhow::Error {
    broker(format!("{}: {}", op.describe(), result_text(result)))
}

pub(super) fn result_text(result: &OpResult) -> String {
    match result {
        OpResult::Done { .. } => "done".into(),
        OpResult::Refused { text, .. } => text.clone(),
        OpResult::Unanswered { reason } => reason.clone(),
    }
}
