//! `install`: create what is missing, never override, never delete (SPEC §4).
//!
//! The management API is read while the AMQP connection opens. When it
//! answers, only what is missing is declared, every conflict is reported
//! with expected vs actual from the comparison, and a vhost that already
//! matches costs no AMQP work at all. When it does not answer, everything is
//! declared over AMQP (install needs only AMQP) and the report says what
//! could not be checked. Either way a conflict (406) names its entity, the
//! rest of the cascade is still created, and the answer is exit 1.

use anyhow::Result;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

mod inequivalence;

use crate::apply::{self, OpResult, Operation, Session};
use crate::capacity;
use crate::cascade::Desired;
use crate::commands::fanout::{self, VhostOutcome};
use crate::context::Context;
use crate::counted::counted;
use crate::diff::conflict::{self, Conflict};
use crate::diff::{self, binding_entity, Finding, Structure};
use crate::exit::broker;
use crate::mgmt::{Management, NotProvenSameBroker};
use crate::observe::{self, observe, Depth, Observed};
use crate::preflight;
use crate::progress::Progress;
use crate::report::Outcome;
use crate::target::Target;

pub async fn run(context: &Context) -> Result<Outcome> {
    let progress = context.progress;
    fanout::each_target(context, |target, desired| {
        install_vhost(target, desired, progress)
    })
    .await
}

async fn install_vhost(
    target: Target,
    desired: Desired,
    progress: Progress,
) -> Result<VhostOutcome> {
    // Connect and open the lanes while the management API is read.
    let connecting: JoinHandle<Result<Session>> = {
        let target = target.clone();
        tokio::spawn(async move { Session::open(&target, apply::DEFAULT_LANES).await })
    };
    let (observed, capacity) = match Management::new(&target) {
        Ok(management) => {
            let (observed, capacity, allowed) = futures::join!(
                observe(&management, Depth::Definitions),
                observe::capacity(&management),
                preflight::check(&management, &target, "install", &desired)
            );
            if let Err(refused) = allowed {
                connecting.abort();
                return Err(refused);
            }
            (observed, capacity.ok())
        }
        Err(error) => (Err(error), None),
    };
    // A cascade that cannot all fit is refused before anything is created.
    if let (Ok(observed), Some(capacity)) = (&observed, &capacity) {
        let structure = diff::structure(&desired, observed);
        let refusals = capacity::limit_findings(
            &target.vhost,
            &capacity.limits,
            observed.queues.len(),
            capacity::Needs::missing(&desired, &structure),
        );
        if !refusals.is_empty() {
            dismiss(connecting).await;
            return Ok(refused(&target, &refusals));
        }
    }
    let plan = match &observed {
        Ok(observed) => Plan::observed(&desired, observed),
        // Another broker's management API is refused, never worked around.
        Err(error) if NotProvenSameBroker::is(error) => {
            dismiss(connecting).await;
            return Err(observed.unwrap_err());
        }
        Err(error) => Plan::blind(&desired, error),
    };
    if plan.declarations.is_empty() && plan.bindings.is_empty() {
        dismiss(connecting).await;
        return Ok(plan.report(&target, Applied::default()));
    }

    let mut session = connecting
        .await
        .map_err(|e| broker(format!("connecting to {}: {e}", target.amqp_display())))??;
    let bar = progress.bar(
        (plan.declarations.len() + plan.bindings.len()) as u64,
        &format!("install {}", target.vhost),
    );
    let mut applied = Applied::default();
    // Bindings need their exchanges and queues: two phases, each all at once.
    for phase in [&plan.declarations, &plan.bindings] {
        let results = session.apply(phase, &bar).await;
        if let Some(error) = apply::connection_failure(phase, &results) {
            return Err(error);
        }
        applied.record(phase, results)?;
    }
    bar.finish_and_clear();
    session.close().await;
    Ok(plan.report(&target, applied))
}

/// The report of an install refused before it started (exit 1).
fn refused(target: &Target, refusals: &[Finding]) -> VhostOutcome {
    let mut text = String::new();
    for refusal in refusals {
        text.push_str(&format!("refused {}\n", refusal.message));
    }
    text.push_str(&format!(
        "install on vhost `{}`: nothing created, the cascade would not fit\n",
        target.vhost
    ));
    VhostOutcome {
        ok: false,
        text,
        json: json!({ "created": [], "refused": refusals }),
    }
}

/// Closes the AMQP connection that turned out not to be needed, or stops
/// it opening.
async fn dismiss(connecting: JoinHandle<Result<Session>>) {
    if connecting.is_finished() {
        if let Ok(Ok(session)) = connecting.await {
            session.close().await;
        }
    } else {
        connecting.abort();
    }
}

/// What install will do in one vhost, and what it knows beforehand.
struct Plan {
    /// Exchanges and queues to declare (phase 1).
    declarations: Vec<Operation>,
    /// Bindings to declare (phase 2).
    bindings: Vec<Operation>,
    /// Present and matching, when the management API answered.
    existing: Option<Vec<String>>,
    /// Present with other properties or arguments: not declared, reported.
    conflicts: Vec<Conflict>,
    /// Bindings touching the cascade that the topology does not contain.
    strays: Vec<String>,
    /// Why the management API could not be read, when it could not.
    management_error: Option<String>,
    /// What could not be checked without it.
    unchecked: Vec<String>,
}

impl Plan {
    /// Declare only what the management API shows missing.
    fn observed(desired: &Desired, observed: &Observed) -> Plan {
        let structure = diff::structure(desired, observed);
        let declarations = structure
            .missing_exchanges
            .iter()
            .map(|e| Operation::DeclareExchange((*e).clone()))
            .chain(
                structure
                    .missing_queues
                    .iter()
                    .map(|q| Operation::DeclareQueue((*q).clone())),
            )
            .chain(
                (structure.missing_endpoint_exchanges.iter())
                    .map(|e| Operation::DeclareExchange((*e).clone())),
            )
            .chain(
                (structure.missing_endpoint_queues.iter())
                    .map(|q| Operation::DeclareEndpointQueue((*q).clone())),
            )
            .collect();
        let bindings = structure
            .missing_bindings
            .iter()
            .map(|b| Operation::Bind((*b).clone()))
            .collect();
        Plan {
            declarations,
            bindings,
            existing: Some(existing_entities(desired, &structure)),
            conflicts: structure.conflicts.clone(),
            strays: structure
                .strays
                .iter()
                .map(|(_, f)| f.entity.clone())
                .collect(),
            management_error: None,
            unchecked: Vec::new(),
        }
    }

    /// Declare everything: without the management API, AMQP cannot tell
    /// what exists, and a redeclare of an equal entity changes nothing.
    fn blind(desired: &Desired, management_error: &anyhow::Error) -> Plan {
        let mut declarations = apply::declare_all(desired);
        declarations.extend(apply::declare_endpoints(desired));
        let bindings = desired
            .bindings
            .iter()
            .cloned()
            .map(Operation::Bind)
            .collect();
        Plan {
            declarations,
            bindings,
            existing: None,
            conflicts: Vec::new(),
            strays: Vec::new(),
            management_error: Some(format!("{management_error:#}")),
            unchecked: vec![
                "which entities were created and which were already present".to_string(),
                "bindings on the cascade that the topology does not contain".to_string(),
                "every difference of a conflicting entity (the broker names only the first)"
                    .to_string(),
            ],
        }
    }

    fn report(self, target: &Target, applied: Applied) -> VhostOutcome {
        let mut conflicts = self.conflicts;
        conflicts.extend(conflict::group(applied.conflicts));
        let ok = conflicts.is_empty() && applied.errors.is_empty();
        let vhost = &target.vhost;

        let mut text = String::new();
        // AMQP's declare-ok does not say who created an entity: one missing
        // when read may have been made by a concurrent install meanwhile.
        if self.existing.is_some() && !applied.done.is_empty() {
            text.push_str(&format!("declared {}:\n", applied.done.len()));
            for entity in &applied.done {
                text.push_str(&format!("  + {entity}\n"));
            }
        }
        for found in &conflicts {
            text.push_str(&format!("conflict {}\n", found.message()));
        }
        for (_, message) in &applied.errors {
            text.push_str(&format!("error {message}\n"));
        }
        let problems = match (conflicts.len(), applied.errors.len()) {
            (0, 0) => String::new(),
            (c, 0) => format!(", {}", counted(c as u64, "conflict")),
            (0, e) => format!(", {}", counted(e as u64, "error")),
            (c, e) => format!(
                ", {}, {}",
                counted(c as u64, "conflict"),
                counted(e as u64, "error")
            ),
        };
        match &self.existing {
            Some(existing) if applied.done.is_empty() && ok => text.push_str(&format!(
                "nothing to do on vhost `{vhost}`: {} present and matching\n",
                counted(existing.len() as u64, "entity")
            )),
            Some(existing) => text.push_str(&format!(
                "install on vhost `{vhost}`: {} missing and now declared, {} \
                 present{problems}\n",
                applied.done.len(),
                existing.len()
            )),
            None => text.push_str(&format!(
                "install on vhost `{vhost}`: {} declared (created or already \
                 present){problems}\n",
                counted(applied.done.len() as u64, "entity")
            )),
        }
        if !self.strays.is_empty() {
            text.push_str(&format!(
                "note: {} not in the topology touch the cascade (install never deletes; \
                 `delaytopo verify` lists them)\n",
                counted(self.strays.len() as u64, "binding")
            ));
        }
        if let Some(reason) = &self.management_error {
            text.push_str(&format!(
                "warning: {reason}\nnot checked without the management API: {}\n",
                self.unchecked.join("; ")
            ));
        }
        text.push_str(&conflict::next_steps(&conflicts));

        let errors: Vec<Value> = applied
            .errors
            .iter()
            .map(|(entity, message)| json!({ "entity": entity, "message": message }))
            .collect();
        let json = match &self.existing {
            Some(existing) => json!({
                "declared": applied.done,
                "existing": existing,
                "conflicts": conflicts,
                "errors": errors,
                "stray_bindings": self.strays,
                "unchecked": self.unchecked,
            }),
            None => json!({
                "existing": null,
                "declared": applied.done,
                "conflicts": conflicts,
                "errors": errors,
                "management_error": self.management_error,
                "unchecked": self.unchecked,
            }),
        };
        VhostOutcome { ok, text, json }
    }
}

/// Labels of the desired entities that are present and equal.
fn existing_entities(desired: &Desired, structure: &Structure<'_>) -> Vec<String> {
    let absent: Vec<String> = structure
        .missing_exchanges
        .iter()
        .map(|e| format!("exchange {}", e.name))
        .chain(
            structure
                .missing_queues
                .iter()
                .map(|q| format!("queue {}", q.name)),
        )
        .chain(
            structure
                .missing_bindings
                .iter()
                .map(|b| binding_entity(b.key())),
        )
        .chain(missing_endpoint_entities(structure))
        .chain(structure.conflicts.iter().map(|f| f.entity.clone()))
        .collect();
    desired_entities(desired)
        .filter(|entity| !absent.contains(entity))
        .collect()
}

fn desired_entities(desired: &Desired) -> impl Iterator<Item = String> + '_ {
    desired
        .exchanges
        .iter()
        .map(|e| format!("exchange {}", e.name))
        .chain(desired.queues.iter().map(|q| format!("queue {}", q.name)))
        .chain(desired.declared_endpoint_entities())
        .chain(desired.bindings.iter().map(|b| binding_entity(b.key())))
}

fn missing_endpoint_entities<'a>(
    structure: &'a Structure<'_>,
) -> impl Iterator<Item = String> + 'a {
    let exchanges = structure.missing_endpoint_exchanges.iter();
    exchanges
        .map(|e| format!("exchange {}", e.name))
        .chain((structure.missing_endpoint_queues.iter()).map(|q| format!("queue {}", q.name)))
}

/// The entity an install operation acts on, as the comparison names it.
fn entity(op: &Operation) -> String {
    match op {
        Operation::DeclareExchange(e) => format!("exchange {}", e.name),
        Operation::DeclareQueue(q) => format!("queue {}", q.name),
        Operation::DeclareEndpointQueue(q) => format!("queue {}", q.name),
        Operation::Bind(b) => binding_entity(b.key()),
        other => other.describe(),
    }
}

/// What the broker answered to install's operations.
#[derive(Default)]
struct Applied {
    /// Entities the broker declared (created, or already present and equal).
    done: Vec<String>,
    /// Refused with 406: present with other properties.
    conflicts: Vec<Finding>,
    /// Other refusals: (entity, message).
    errors: Vec<(String, String)>,
}

impl Applied {
    /// What was in place before a refusal stopped install, briefly.
    fn already_done(&self) -> String {
        match self.done.len() {
            0 => "; nothing was declared".to_string(),
            n => format!(
                "; {n} declared before it stopped: {}",
                crate::report::first_few(&self.done, 5, ", ")
            ),
        }
    }

    /// Sorts one phase's answers; a 403 means the user may not do install's
    /// work at all, which is exit 3 (SPEC §3), not a finding.
    fn record(&mut self, ops: &[Operation], results: Vec<OpResult>) -> Result<()> {
        for (op, result) in ops.iter().zip(results) {
            let entity = entity(op);
            match result {
                OpResult::Done { .. } => self.done.push(entity),
                OpResult::Refused {
                    code: Some(403),
                    text,
                } => {
                    return Err(broker(format!(
                        "{}: {text} (see `delaytopo permissions install`){}",
                        op.describe(),
                        self.already_done()
                    )));
                }
                OpResult::Refused {
                    code: Some(406),
                    text,
                } => self
                    .conflicts
                    .push(inequivalence::conflict_from_refusal(op, entity, &text)),
                OpResult::Refused {
                    code: Some(404),
                    text,
                } if matches!(op, Operation::Bind(b) if b.role.is_endpoint()) => {
                    let message = endpoint_missing(op, &text);
                    self.errors.push((entity, message));
                }
                OpResult::Refused { text, .. } => {
                    let message = format!("{entity}: {text}");
                    self.errors.push((entity, message));
                }
                OpResult::Unanswered { reason } => {
                    return Err(broker(format!("{}: {reason}", op.describe())))
                }
            }
        }
        Ok(())
    }
}

fn endpoint_missing(op: &Operation, broker_text: &str) -> String {
    let Operation::Bind(binding) = op else {
        return format!("{}: {broker_text}", entity(op));
    };
    // The broker names the end it did not find: the source, for an
    // application queue's binding whose exchange is missing.
    let (kind, name) = if broker_text.contains(&format!("no exchange '{}'", binding.source)) {
        ("exchange", &binding.source)
    } else {
        (binding.destination_type.as_str(), &binding.destination)
    };
    format!("{}: {}", entity(op), diff::refusal::missing_end(kind, name))
}

#[cfg(test)]
mod tests;
