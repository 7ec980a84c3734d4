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

use crate::apply::{self, OpResult, Operation, Session};
use crate::capacity;
use crate::cascade::{Desired, Role};
use crate::commands::fanout::{self, VhostOutcome};
use crate::context::Context;
use crate::diff::{self, binding_entity, Finding, Severity, Structure};
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
    conflicts: Vec<Finding>,
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
        let declarations = apply::declare_all(desired);
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
        conflicts.extend(applied.conflicts);
        let ok = conflicts.is_empty() && applied.errors.is_empty();
        let vhost = &target.vhost;

        let mut text = String::new();
        // AMQP's declare-ok does not say who created an entity: one missing
        // when read may have been made by a concurrent install meanwhile.
        if self.existing.is_some() {
            for entity in &applied.done {
                text.push_str(&format!("declared {entity}\n"));
            }
        }
        for conflict in &conflicts {
            text.push_str(&format!("conflict {}\n", conflict.message));
        }
        for (_, message) in &applied.errors {
            text.push_str(&format!("error {message}\n"));
        }
        let problems = match (conflicts.len(), applied.errors.len()) {
            (0, 0) => String::new(),
            (c, 0) => format!(", {}", plural(c, "conflict")),
            (0, e) => format!(", {}", plural(e, "error")),
            (c, e) => format!(", {}, {}", plural(c, "conflict"), plural(e, "error")),
        };
        match &self.existing {
            Some(existing) if applied.done.is_empty() && ok => text.push_str(&format!(
                "nothing to do on vhost `{vhost}`: {} present and matching\n",
                plural(existing.len(), "entity")
            )),
            Some(existing) => text.push_str(&format!(
                "install on vhost `{vhost}`: {} missing and now declared, {} already \
                 present{problems}\n",
                applied.done.len(),
                existing.len()
            )),
            None => text.push_str(&format!(
                "install on vhost `{vhost}`: {} declared (created or already \
                 present){problems}\n",
                plural(applied.done.len(), "entity")
            )),
        }
        if !self.strays.is_empty() {
            text.push_str(&format!(
                "note: {} not in the topology touch the cascade (install never deletes; \
                 `delaytopo verify` lists them)\n",
                plural(self.strays.len(), "binding")
            ));
        }
        if let Some(reason) = &self.management_error {
            text.push_str(&format!(
                "warning: {reason}\nnot checked without the management API: {}\n",
                self.unchecked.join("; ")
            ));
        }

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
        .chain(desired.bindings.iter().map(|b| binding_entity(b.key())))
}

/// The entity an install operation acts on, as the comparison names it.
fn entity(op: &Operation) -> String {
    match op {
        Operation::DeclareExchange(e) => format!("exchange {}", e.name),
        Operation::DeclareQueue(q) => format!("queue {}", q.name),
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
                    .push(conflict_from_refusal(op, entity, &text)),
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
    let kind = binding.destination_type.as_str();
    format!(
        "{}: endpoint {kind} `{}` does not exist (declare it before install, or change the \
         endpoint's `bind_to`): a delivery route to nowhere would jam the cascade",
        entity(op),
        binding.destination
    )
}

/// A 406 as a finding: the broker names the first property that differs,
/// with the value it received and the one it holds.
fn conflict_from_refusal(op: &Operation, entity: String, text: &str) -> Finding {
    let level = match op {
        Operation::DeclareQueue(q) => Some(q.level),
        Operation::DeclareExchange(e) => match e.role {
            Role::Level(level) => Some(level),
            _ => None,
        },
        _ => None,
    };
    let (expected, actual, message) = match inequivalence(text) {
        Some(Inequivalence {
            property,
            received,
            current,
        }) => {
            let expected = expected_value(op, &property).unwrap_or(received);
            let message = format!(
                "{entity}: {property} is {current}, expected {expected} (the broker names \
                 only the first difference)"
            );
            (
                Some(format!("{property}={expected}")),
                Some(format!("{property}={current}")),
                message,
            )
        }
        None => (None, None, format!("{entity}: {text}")),
    };
    Finding {
        severity: Severity::Error,
        entity,
        kind: "different".into(),
        expected,
        actual,
        message,
        level,
    }
}

/// The value install asked for, as the comparison shows it.
fn expected_value(op: &Operation, property: &str) -> Option<String> {
    let arguments = match op {
        Operation::DeclareQueue(q) => &q.arguments,
        Operation::DeclareExchange(e) => &e.arguments,
        _ => return None,
    };
    arguments.get(property).map(ToString::to_string)
}

#[derive(Debug, PartialEq)]
struct Inequivalence {
    property: String,
    received: String,
    current: String,
}

/// Reads RabbitMQ's 406 text: `inequivalent arg 'P' for queue 'Q' in vhost
/// 'V': received X but current is Y`, where X and Y are `'v'`, `the value
/// 'v' of type 't'` or `none`.
fn inequivalence(text: &str) -> Option<Inequivalence> {
    let rest = text.split("inequivalent arg '").nth(1)?;
    let (property, rest) = rest.split_once('\'')?;
    let rest = rest.split("': received ").nth(1)?;
    let (received, current) = rest.split_once(" but current is ")?;
    Some(Inequivalence {
        property: property.to_string(),
        received: broker_value(received),
        current: broker_value(current),
    })
}

fn broker_value(text: &str) -> String {
    let text = text.trim();
    if text == "none" {
        return "(absent)".to_string();
    }
    let text = text.strip_prefix("the value ").unwrap_or(text);
    let (value, kind) = match text.rsplit_once(" of type '") {
        Some((value, kind)) => (value, Some(kind.trim_end_matches('\''))),
        None => (text, None),
    };
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    match kind {
        Some("longstr") => format!("{value:?}"),
        _ => value.to_string(),
    }
}

fn plural(count: usize, noun: &str) -> String {
    match (count, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "entity") => format!("{count} entities"),
        _ => format!("{count} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_406_text_gives_property_received_and_current() {
        let text = "406 PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue \
                    'nsb.v2.delay-level-05' in vhost 'v': received the value '32000' of type \
                    'signedint' but current is the value '99000' of type 'long'";
        assert_eq!(
            inequivalence(text),
            Some(Inequivalence {
                property: "x-message-ttl".into(),
                received: "32000".into(),
                current: "99000".into()
            })
        );
        let text = "406 PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-strategy' for \
                    queue 'q2' in vhost 'v': received the value 'at-least-once' of type \
                    'longstr' but current is none";
        let found = inequivalence(text).unwrap();
        assert_eq!(found.received, "\"at-least-once\"");
        assert_eq!(found.current, "(absent)");
        let text = "406 PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'e' in vhost \
                    'v': received 'topic' but current is 'direct'";
        let found = inequivalence(text).unwrap();
        assert_eq!(
            (found.property.as_str(), found.current.as_str()),
            ("type", "direct")
        );
        assert_eq!(
            inequivalence("406 PRECONDITION_FAILED - something else"),
            None
        );
    }

    #[test]
    fn a_406_conflict_shows_the_value_install_asked_for() {
        let topology =
            crate::topology::Topology::parse(std::path::Path::new("t.yaml"), "").unwrap();
        let desired = Desired::new(&topology, "v");
        let queue = desired
            .queues
            .iter()
            .find(|q| q.level == 5)
            .unwrap()
            .clone();
        let op = Operation::DeclareQueue(queue);
        let text = "406 PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue \
                    'nsb.v2.delay-level-05' in vhost 'v': received the value '32000' of type \
                    'long' but current is the value '99000' of type 'signedint'";
        let finding = conflict_from_refusal(&op, entity(&op), text);
        assert_eq!(finding.entity, "queue nsb.v2.delay-level-05");
        assert_eq!(finding.expected.as_deref(), Some("x-message-ttl=32000"));
        assert_eq!(finding.actual.as_deref(), Some("x-message-ttl=99000"));
        assert_eq!(finding.level, Some(5));
    }

    #[test]
    fn counts_read_as_words() {
        assert_eq!(plural(1, "entity"), "1 entity");
        assert_eq!(plural(113, "entity"), "113 entities");
        assert_eq!(plural(2, "conflict"), "2 conflicts");
    }
}
