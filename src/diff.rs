//! Desired x Observed -> Structure: what is missing, what differs, what is in
//! the way. Pure and heavily unit-tested; install, plan, verify and teardown
//! all read the broker through this one comparison.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::cascade::{
    Arguments, Binding, Desired, DestinationKind, EndpointQueue, Exchange, Queue, Role,
};
use crate::observe::{Observed, ObservedBinding, ObservedExchange, ObservedQueue};
use crate::topology::ArgValue;

pub mod conflict;
mod declared;
mod endpoints;
pub mod refusal;

pub use conflict::Conflict;
use endpoints::{direct_exchanges, is_endpoint_binding};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One thing found while comparing; JSON: {severity, entity, kind, expected, actual, message}.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `queue nsb.v2.delay-level-05`, `binding a -> b (1.#)`, `policy p`, `broker`.
    pub entity: String,
    /// Machine-readable: `missing`, `different`, `stray_binding`, `endpoint_missing`, ...
    pub kind: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub message: String,
    /// The cascade level concerned, for grouping reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<u8>,
}

/// The structural comparison of one vhost.
#[derive(Debug, Default)]
pub struct Structure<'a> {
    pub missing_exchanges: Vec<&'a Exchange>,
    pub missing_queues: Vec<&'a Queue>,
    pub missing_bindings: Vec<&'a Binding>,
    /// Endpoint exchanges and queues the topology declares, absent.
    pub missing_endpoint_exchanges: Vec<&'a Exchange>,
    pub missing_endpoint_queues: Vec<&'a EndpointQueue>,
    /// Desired entities present and equal.
    pub matching: usize,
    /// Present with other properties or arguments: install will not override
    /// them. One per entity, with each of its differences.
    pub conflicts: Vec<Conflict>,
    /// Bindings touching the cascade that the topology does not contain.
    pub strays: Vec<(ObservedBinding, Finding)>,
    /// Well-formed endpoint bindings (`#.X` -> X) not listed in the topology:
    /// applications create these themselves, so they are noted, not condemned.
    pub unlisted_endpoints: Vec<ObservedBinding>,
    /// Endpoint bindings (listed or not) whose destination does not exist.
    pub dangling_endpoints: Vec<Finding>,
    /// Endpoint bindings (listed or not) to a direct exchange: it compares the
    /// whole delayed key with its bindings' keys, so nothing gets through.
    pub direct_endpoints: Vec<Finding>,
}

impl Structure<'_> {
    /// Nothing for install to create and nothing in conflict.
    pub fn is_complete(&self) -> bool {
        self.missing_exchanges.is_empty()
            && self.missing_queues.is_empty()
            && self.missing_bindings.is_empty()
            && self.missing_endpoint_exchanges.is_empty()
            && self.missing_endpoint_queues.is_empty()
            && self.conflicts.is_empty()
    }

    /// Error findings of the structure, for verify and plan.
    pub fn findings(&self) -> Vec<Finding> {
        let mut findings = Vec::new();
        for e in &self.missing_exchanges {
            findings.push(missing(format!("exchange {}", e.name), level_of(&e.role)));
        }
        for q in &self.missing_queues {
            findings.push(missing(format!("queue {}", q.name), Some(q.level)));
        }
        for b in &self.missing_bindings {
            findings.push(missing(binding_entity(b.key()), level_of(&b.role)));
        }
        for e in &self.missing_endpoint_exchanges {
            findings.push(missing(format!("exchange {}", e.name), None));
        }
        for q in &self.missing_endpoint_queues {
            findings.push(missing(format!("queue {}", q.name), None));
        }
        findings.extend(self.conflicts.iter().map(Conflict::finding));
        findings.extend(self.strays.iter().map(|(_, f)| f.clone()));
        findings.extend(self.dangling_endpoints.iter().cloned());
        findings.extend(self.direct_endpoints.iter().cloned());
        findings
    }
}

/// `binding source -> queue destination (key)`.
pub fn binding_entity(
    (source, destination, kind, key): (&str, &str, DestinationKind, &str),
) -> String {
    format!(
        "binding {source} -> {} {destination} ({key})",
        kind.as_str()
    )
}

fn level_of(role: &Role) -> Option<u8> {
    match role {
        Role::Level(l) | Role::LevelQueueBinding(l) | Role::FallThroughBinding(l) => Some(*l),
        Role::DeliveryExchange
        | Role::EndpointBinding(_)
        | Role::EndpointQueueBinding(_)
        | Role::EndpointExchange(_) => None,
    }
}

fn missing(entity: String, level: Option<u8>) -> Finding {
    Finding {
        severity: Severity::Error,
        message: format!("{entity} is missing"),
        entity,
        kind: "missing".into(),
        expected: Some("present".into()),
        actual: Some("absent".into()),
        level,
    }
}

fn different(
    entity: &str,
    property: &str,
    expected: String,
    actual: String,
    level: Option<u8>,
) -> Finding {
    Finding {
        severity: Severity::Error,
        entity: entity.to_string(),
        kind: "different".into(),
        message: format!("{entity}: {property} is {actual}, expected {expected}"),
        expected: Some(format!("{property}={expected}")),
        actual: Some(format!("{property}={actual}")),
        level,
    }
}

fn show(value: Option<&ArgValue>) -> String {
    value.map_or_else(|| "(absent)".to_string(), ArgValue::to_string)
}

/// Every argument that differs by value, either way round.
fn argument_differences(
    entity: &str,
    expected: &Arguments,
    actual: &Arguments,
    level: Option<u8>,
) -> Vec<Finding> {
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    keys.into_iter()
        .filter(|k| expected.get(*k) != actual.get(*k))
        .map(|k| different(entity, k, show(expected.get(k)), show(actual.get(k)), level))
        .collect()
}

fn exchange_differences(desired: &Exchange, observed: &ObservedExchange) -> Vec<Finding> {
    let entity = format!("exchange {}", desired.name);
    let level = level_of(&desired.role);
    let mut found = Vec::new();
    let mut flag = |property: &str, expected: String, actual: String| {
        if expected != actual {
            found.push(different(&entity, property, expected, actual, level));
        }
    };
    flag("type", desired.kind.clone(), observed.kind.clone());
    flag(
        "durable",
        desired.durable.to_string(),
        observed.durable.to_string(),
    );
    flag(
        "auto_delete",
        desired.auto_delete.to_string(),
        observed.auto_delete.to_string(),
    );
    flag(
        "internal",
        desired.internal.to_string(),
        observed.internal.to_string(),
    );
    found.extend(argument_differences(
        &entity,
        &desired.arguments,
        &observed.arguments,
        level,
    ));
    found
}

fn queue_differences(desired: &Queue, observed: &ObservedQueue) -> Vec<Finding> {
    let flags = (desired.durable, desired.exclusive, desired.auto_delete);
    let (name, level) = (&desired.name, Some(desired.level));
    queue_property_differences(name, level, flags, &desired.arguments, observed)
}

/// Queue `name`'s flags (durable, exclusive, auto-delete) and arguments
/// against what the broker holds.
fn queue_property_differences(
    name: &str,
    level: Option<u8>,
    (durable, exclusive, auto_delete): (bool, bool, bool),
    arguments: &Arguments,
    observed: &ObservedQueue,
) -> Vec<Finding> {
    let entity = format!("queue {name}");
    let mut found = Vec::new();
    let mut flag = |property: &str, expected: bool, actual: bool| {
        if expected != actual {
            found.push(different(
                &entity,
                property,
                expected.to_string(),
                actual.to_string(),
                level,
            ));
        }
    };
    flag("durable", durable, observed.durable);
    flag("exclusive", exclusive, observed.exclusive);
    flag("auto_delete", auto_delete, observed.auto_delete);
    found.extend(argument_differences(
        &entity,
        arguments,
        &observed.arguments,
        level,
    ));
    found
}

/// Sorts desired entities into missing (returned), matching (counted) and
/// conflicting (findings); `differences` is None when the entity is absent.
fn compare_entities<'a, T>(
    desired: &'a [T],
    differences: impl Fn(&T) -> Option<Vec<Finding>>,
    matching: &mut usize,
    conflicts: &mut Vec<Conflict>,
) -> Vec<&'a T> {
    let mut missing = Vec::new();
    for entity in desired {
        match differences(entity) {
            None => missing.push(entity),
            Some(found) if found.is_empty() => *matching += 1,
            Some(found) => conflicts.extend(conflict::group(found)),
        }
    }
    missing
}

/// Compares one vhost's desired cascade with what the broker holds.
pub fn structure<'a>(desired: &'a Desired, observed: &Observed) -> Structure<'a> {
    let mut result = Structure::default();
    result.missing_exchanges = compare_entities(
        &desired.exchanges,
        |e| {
            observed
                .exchanges
                .get(&e.name)
                .map(|found| exchange_differences(e, found))
        },
        &mut result.matching,
        &mut result.conflicts,
    );
    result.missing_queues = compare_entities(
        &desired.queues,
        |q| {
            observed
                .queues
                .get(&q.name)
                .map(|found| queue_differences(q, found))
        },
        &mut result.matching,
        &mut result.conflicts,
    );
    declared::compare(desired, observed, &mut result);

    let present: BTreeSet<(&str, &str, DestinationKind, &str)> = observed
        .bindings
        .iter()
        .filter(|b| b.arguments.is_empty())
        .map(|b| {
            (
                b.source.as_str(),
                b.destination.as_str(),
                b.destination_type,
                b.routing_key.as_str(),
            )
        })
        .collect();
    for binding in &desired.bindings {
        if present.contains(&binding.key()) {
            result.matching += 1;
        } else {
            result.missing_bindings.push(binding);
        }
    }

    let wanted: BTreeSet<_> = desired.bindings.iter().map(Binding::key).collect();
    for found in &observed.bindings {
        let key = (
            found.source.as_str(),
            found.destination.as_str(),
            found.destination_type,
            found.routing_key.as_str(),
        );
        if wanted.contains(&key) && found.arguments.is_empty() {
            continue;
        }
        let touches_cascade =
            desired.binding_touches(&found.source, &found.destination, found.destination_type);
        if !touches_cascade {
            continue;
        }
        if is_probe_sink_binding(desired, found) {
            continue;
        }
        if is_endpoint_binding(desired, found) {
            result.unlisted_endpoints.push(found.clone());
            continue;
        }
        let entity = binding_entity(key);
        result.strays.push((
            found.clone(),
            Finding {
                severity: Severity::Error,
                message: format!(
                    "{entity} is not part of the cascade: it duplicates or misroutes delayed messages"
                ),
                entity,
                kind: "stray_binding".into(),
                expected: Some("absent".into()),
                actual: Some("present".into()),
                level: None,
            },
        ));
    }

    let listed = desired
        .endpoint_bindings()
        .map(|b| (b.destination.as_str(), b.destination_type));
    let delivered_to = desired
        .endpoint_bindings()
        .filter(|b| b.source == desired.delivery_exchange)
        .map(|b| (b.destination.as_str(), b.destination_type))
        .chain(
            result
                .unlisted_endpoints
                .iter()
                .map(|b| (b.destination.as_str(), b.destination_type)),
        );
    result.direct_endpoints = direct_exchanges(delivered_to, observed);
    let unlisted = result
        .unlisted_endpoints
        .iter()
        .map(|b| (b.destination.as_str(), b.destination_type));
    for (destination, kind) in listed.chain(unlisted) {
        let exists = match kind {
            DestinationKind::Queue => observed.queues.contains_key(destination),
            DestinationKind::Exchange => observed.exchanges.contains_key(destination),
        };
        // A declared one that is absent is missing, which install mends.
        if !exists && !desired.declares(kind, destination) {
            let entity = format!("{} {destination}", kind.as_str());
            result.dangling_endpoints.push(Finding {
                severity: Severity::Error,
                message: format!(
                    "endpoint {entity} does not exist: delayed messages for `{destination}` \
                     cannot be delivered and would jam level 0"
                ),
                entity,
                kind: "endpoint_missing".into(),
                expected: Some("present".into()),
                actual: Some("absent".into()),
                level: None,
            });
        }
    }
    result
}

/// The probe's permanent sink (`commands::probe`): part of delaytopo's own
/// equipment, neither a stray nor an endpoint.
fn is_probe_sink_binding(desired: &Desired, binding: &ObservedBinding) -> bool {
    binding.source == desired.delivery_exchange
        && binding.destination == crate::cascade::PROBE_SINK_QUEUE
        && binding.destination_type == DestinationKind::Queue
        && binding.routing_key == crate::cascade::probe_sink_binding_key()
        && binding.arguments.is_empty()
}

#[cfg(test)]
mod tests;
