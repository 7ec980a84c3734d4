//! The staging queues of migrate and transfer (`moving::staging`) go with the
//! cascade they release into: a staged message left there once the cascade
//! is gone would wait forever. So they are checked before anything changes
//! (teardown refuses while one holds a message, unless `--force`), under
//! the staging lock that every move takes (none can stage anything
//! meanwhile), and deleted once the cascade is gone: exchanges first, then
//! the queues.

use anyhow::Result;
use indicatif::ProgressBar;

use super::run::first_failure;
use crate::apply::{self, OpResult, Operation, Session};
use crate::cascade::Desired;
use crate::counted::counted;
use crate::moving::broker::NOT_FOUND;
use crate::moving::staging::{self, Staging, StagingLocked};
use crate::observe::Observed;
use crate::target::Target;

/// The staging exchanges and queues that exist, and what the queues hold.
#[derive(Debug, Default)]
pub(super) struct Staged {
    exchanges: Vec<String>,
    queues: Vec<Holding>,
}

/// What one staging queue holds: ready now (AMQP), and by the statistics,
/// which lag but also count the dead-letter backlog of released messages.
#[derive(Debug)]
struct Holding {
    name: String,
    ready: u64,
    statistics: u64,
}

impl Holding {
    fn held(&self) -> u64 {
        self.ready.max(self.statistics)
    }
}

impl Staged {
    pub(super) fn is_empty(&self) -> bool {
        self.exchanges.is_empty() && self.queues.is_empty()
    }

    /// Messages the staging queues hold (none once `check` passed without `--force`).
    pub(super) fn messages(&self) -> u64 {
        self.queues.iter().map(Holding::held).sum()
    }
}

/// What of the cascade's staging exists; `Ok(Err(reason))` when teardown
/// must refuse: a move is running, or a staging queue holds messages (and
/// not `--force`). The staging lock is held from here to the end of the
/// session's connection.
pub(super) async fn check(
    session: &mut Session,
    target: &Target,
    desired: &Desired,
    observed: Option<&Observed>,
    force: bool,
) -> Result<Result<Staged, String>> {
    let names = desired.staging_names();
    let ops: Vec<Operation> = names
        .iter()
        .flat_map(|n| {
            [
                Operation::InspectExchange(n.clone()),
                Operation::InspectQueue(n.clone()),
            ]
        })
        .collect();
    let answers = session.apply(&ops, &ProgressBar::hidden()).await;
    if let Some(error) = apply::connection_failure(&ops, &answers) {
        return Err(error);
    }
    if let Some(error) = first_failure(&ops, &answers, &[NOT_FOUND]) {
        return Err(error);
    }
    let mut staged = Staged::default();
    for (op, answer) in ops.iter().zip(&answers) {
        let OpResult::Done { messages } = answer else {
            continue;
        };
        match op {
            Operation::InspectExchange(name) => staged.exchanges.push(name.clone()),
            Operation::InspectQueue(name) => {
                // AMQP counts what is ready now; the statistics lag but
                // also see the dead-letter backlog of released messages.
                staged.queues.push(Holding {
                    name: name.clone(),
                    ready: u64::from(messages.unwrap_or(0)),
                    statistics: observed
                        .and_then(|o| o.queues.get(name))
                        .map_or(0, |q| q.held_messages()),
                });
            }
            _ => {}
        }
    }
    if staged.is_empty() {
        return Ok(Ok(staged));
    }
    let lock = Staging::of(desired);
    if let Err(error) = staging::lock(target, session.connection(), &lock).await {
        return match error.downcast_ref::<StagingLocked>() {
            Some(locked) => Ok(Err(locked.to_string())),
            None => Err(error),
        };
    }
    if force {
        return Ok(Ok(staged));
    }
    let holding: Vec<&Holding> = staged.queues.iter().filter(|q| q.held() > 0).collect();
    let Some(first) = holding.first() else {
        return Ok(Ok(staged));
    };
    let more = match holding.len() {
        1 => String::new(),
        more => format!(
            " (and {} in {} more)",
            counted(staged.messages() - first.held(), "message"),
            more - 1
        ),
    };
    let counted_now: u64 = staged.queues.iter().map(|q| q.ready).sum();
    Ok(Err(if counted_now > 0 {
        format!(
            "{} in staging queue {}{more}: a migrate or transfer staged them and was \
             interrupted before releasing them into the cascade; run it again to release \
             them (--force discards them)",
            counted(first.held(), "message"),
            first.name,
        )
    } else {
        // Only the statistics count them: released messages on their way
        // into the cascade (the dead-letter backlog), or figures a few
        // seconds old.
        format!(
            "{} in staging queue {}{more} by the management API's statistics, which lag \
             by seconds: a move's last releases may still be on their way into the \
             cascade; run teardown again in a moment",
            counted(first.held(), "message"),
            first.name,
        )
    }))
}

/// Deletes what `check` found: the exchanges (no way in any more), then the
/// queues. Returns the names removed, exchanges and queues.
pub(super) async fn remove(
    session: &mut Session,
    staged: &Staged,
) -> Result<(Vec<String>, Vec<String>)> {
    let ops: Vec<Operation> = staged
        .exchanges
        .iter()
        .map(|name| Operation::DeleteExchange(name.clone()))
        .chain(
            staged
                .queues
                .iter()
                .map(|q| Operation::DeleteQueue(q.name.clone())),
        )
        .collect();
    let answers = session
        .apply_on_lanes(&ops, 1, &ProgressBar::hidden())
        .await;
    if let Some(error) = apply::connection_failure(&ops, &answers) {
        return Err(error);
    }
    if let Some(error) = first_failure(&ops, &answers, &[NOT_FOUND]) {
        return Err(error);
    }
    Ok((
        staged.exchanges.clone(),
        staged.queues.iter().map(|q| q.name.clone()).collect(),
    ))
}
