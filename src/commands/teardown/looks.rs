//! The looks a teardown takes at the broker between its steps: what each
//! level queue holds now (AMQP's ready count and the management API's
//! dead-letter backlog), over channels kept open between the checks.

use anyhow::Result;
use indicatif::ProgressBar;

use crate::apply::{OpResult, Operation, Session, DEFAULT_LANES};
use crate::mgmt::Management;
use crate::observe::ObservedQueue;

use super::plan::{Holding, LevelQueue, Plan};
use super::*;

/// The broker handles a teardown step needs.
pub(super) struct Looks<'a> {
    pub(super) session: tokio::sync::Mutex<Session>,
    pub(super) management: Option<&'a Management>,
    pub(super) bar: &'a ProgressBar,
}

impl Looks<'_> {
    pub(super) async fn run(&self, ops: &[Operation], lanes: usize) -> Vec<OpResult> {
        self.bar.inc_length(ops.len() as u64);
        let mut session = self.session.lock().await;
        session.apply_on_lanes(ops, lanes, self.bar).await
    }

    /// Keeps in `plan` only the exchanges and queues a passive declare finds.
    pub(super) async fn narrow_to_present(&self, plan: &mut Plan) -> Result<()> {
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
    pub(super) async fn holdings(
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
