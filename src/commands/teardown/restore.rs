//! Putting back what teardown's stop phase removed, when it must refuse or
//! failed midway; and, when even that fails, saying what is missing now and
//! what to do, in a few lines rather than one per operation.

use anyhow::Result;
use serde_json::{json, Value};

use super::plan::Plan;
use super::{result_text, Looks};
use crate::apply::Operation;
use crate::exit::broker;
use crate::observe::{observe, Depth};
use crate::target::encode_vhost;

/// Puts back everything the stop phase removed, exactly as observed. On
/// failure the error says what is missing now, from a fresh look, and what
/// to do next.
pub(super) async fn restore(plan: &Plan, looks: &Looks<'_>) -> Result<()> {
    match put_back_all(plan, looks).await {
        Ok(()) => Ok(()),
        Err(error) => Err(error.context(format!(
            "{}\nnext: run `delaytopo install` to put the cascade back (the level queues and \
             their delayed messages are kept), then teardown again",
            state_now(plan, looks).await
        ))),
    }
}

/// What the stop phase removed that is still missing, as a fresh look shows.
async fn state_now(plan: &Plan, looks: &Looks<'_>) -> String {
    let Some(management) = looks.management else {
        return "state now: unknown (no management API to look with)".into();
    };
    match observe(management, Depth::Definitions).await {
        Ok(observed) => {
            let gap = plan.missing_after_stop(&observed);
            format!(
                "state now: {} of {} level exchanges and {} of {} bindings that the stop \
                 removed are missing",
                gap.exchanges.0, gap.exchanges.1, gap.bindings.0, gap.bindings.1
            )
        }
        Err(error) => format!("state now: unknown ({error:#})"),
    }
}

async fn put_back_all(plan: &Plan, looks: &Looks<'_>) -> Result<()> {
    put_back(looks, &plan.restore_after_stop()).await?;
    if let Some(management) = looks.management {
        for b in plan.restore_by_api() {
            let kind = match b.destination_type {
                crate::cascade::DestinationKind::Queue => "q",
                crate::cascade::DestinationKind::Exchange => "e",
            };
            let path = format!(
                "bindings/{}/e/{}/{kind}/{}",
                encode_vhost(management.vhost()),
                encode_vhost(&b.source),
                encode_vhost(&b.destination)
            );
            let arguments: serde_json::Map<String, Value> = b
                .arguments
                .iter()
                .map(|(k, v)| (k.clone(), argument_json(v)))
                .collect();
            management
                .call(
                    hyper::Method::POST,
                    &path,
                    Some(&json!({"routing_key": b.routing_key, "arguments": arguments})),
                )
                .await?;
        }
    }
    Ok(())
}

fn argument_json(value: &crate::topology::ArgValue) -> Value {
    use crate::topology::ArgValue;
    match value {
        ArgValue::Bool(b) => json!(b),
        ArgValue::Int(i) => json!(i),
        ArgValue::Str(s) => json!(s),
    }
}

/// Runs restore operations in order. On failure: how many did not go
/// through, and the first of them with its reason, in one short line.
pub(super) async fn put_back(looks: &Looks<'_>, ops: &[Operation]) -> Result<()> {
    let answers = looks.run(ops, 1).await;
    let mut missed = ops.iter().zip(&answers).filter(|(_, a)| !a.is_done());
    let Some((first, answer)) = missed.next() else {
        return Ok(());
    };
    Err(broker(format!(
        "putting the cascade back failed for {} of {} steps, first {}: {}",
        missed.count() + 1,
        ops.len(),
        first.describe(),
        result_text(answer)
    )))
}
