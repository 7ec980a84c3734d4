//! The target cascade must exist before messages are published into it:
//! `ensure_target_cascade` declares its exchanges, queues and cascade
//! bindings through `apply` (pipelined, a refusal names its entity). Every
//! entity is declared, not only the missing ones: a redeclare of an equal
//! entity changes nothing, and one with other arguments is refused (406),
//! which is how a conflicting target is caught before any message moves.
//! Endpoint bindings are made per address by `routes`.

use anyhow::Result;
use indicatif::ProgressBar;
use lapin::Connection;

use crate::apply::{self, OpResult, Operation};
use crate::cascade::Desired;
use crate::moving::broker::NOT_FOUND;
use crate::target::Target;

/// What the target cascade looked like, and what could not be made to match.
#[derive(Debug, Default)]
pub struct CascadeCheck {
    /// Exchanges and queues that did not exist (created, unless a dry run).
    pub missing: Vec<String>,
    /// Entities the broker refused to declare as the topology says.
    pub conflicts: Vec<String>,
}

/// Creates what is missing of `desired` on the target; with `dry_run`, only
/// finds out what is missing.
pub async fn ensure_target_cascade(
    broker: &Target,
    connection: &Connection,
    desired: &Desired,
    dry_run: bool,
) -> Result<CascadeCheck> {
    let inspections: Vec<Operation> = desired
        .exchanges
        .iter()
        .map(|e| Operation::InspectExchange(e.name.clone()))
        .chain(
            desired
                .queues
                .iter()
                .map(|q| Operation::InspectQueue(q.name.clone())),
        )
        .collect();
    let mut check = CascadeCheck::default();
    for (operation, result) in run(broker, connection, &inspections).await? {
        if let OpResult::Refused {
            code: Some(NOT_FOUND),
            ..
        } = result
        {
            check.missing.push(match operation {
                Operation::InspectExchange(name) => format!("exchange {name}"),
                Operation::InspectQueue(name) => format!("queue {name}"),
                other => other.describe(),
            });
        }
    }
    if dry_run {
        return Ok(check);
    }
    let declarations = apply::declare_all(desired);
    let bindings: Vec<Operation> = desired
        .cascade_bindings()
        .cloned()
        .map(Operation::Bind)
        .collect();
    // Bindings need their exchanges and queues: two phases.
    for phase in [declarations, bindings] {
        for (operation, result) in run(broker, connection, &phase).await? {
            if let OpResult::Refused { text, .. } = result {
                check
                    .conflicts
                    .push(format!("{}: {text}", operation.describe()));
            }
        }
        if !check.conflicts.is_empty() {
            break;
        }
    }
    Ok(check)
}

/// Runs one phase; a connection failure ends the move (it is retried).
async fn run<'a>(
    broker: &Target,
    connection: &Connection,
    operations: &'a [Operation],
) -> Result<Vec<(&'a Operation, OpResult)>> {
    let results = apply::apply(
        connection,
        broker,
        operations,
        apply::DEFAULT_LANES,
        &ProgressBar::hidden(),
    )
    .await;
    if let Some(error) = apply::connection_failure(operations, &results) {
        return Err(error);
    }
    Ok(operations.iter().zip(results).collect())
}
