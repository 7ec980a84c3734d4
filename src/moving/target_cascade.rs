//! The target cascade must exist before messages are published into it:
//! `ensure_target_cascade` declares its exchanges, queues and cascade
//! bindings through `apply` (pipelined, a refusal names its entity). Every
//! entity is declared, not only the missing ones: a redeclare of an equal
//! entity changes nothing, and one with other arguments is refused (406),
//! which is how a conflicting target is caught before any message moves.
//! Endpoint bindings are made per address by `routes`; the endpoint queues
//! and exchanges the target topology declares are declared here with the
//! cascade.

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
    // The endpoints the target topology declares (`declare:`) too: their
    // bindings are made per address by `routes`, which needs them.
    let exchanges = (desired.exchanges.iter().map(|e| &e.name))
        .chain(desired.endpoint_exchanges.iter().map(|e| &e.name));
    let queues = (desired.queues.iter().map(|q| &q.name))
        .chain(desired.endpoint_queues.iter().map(|q| &q.name));
    let inspections: Vec<Operation> = exchanges
        .map(|name| Operation::InspectExchange(name.clone()))
        .chain(queues.map(|name| Operation::InspectQueue(name.clone())))
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
    let declarations: Vec<Operation> = apply::declare_all(desired)
        .into_iter()
        .chain(apply::declare_endpoints(desired))
        .collect();
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
