//! `plan`: what `install` would create, the conflicts it would meet, whether
//! the vhost's limits would refuse it, which nodes are short of file handles,
//! and what `teardown` would remove, from one read-only look at the broker
//! (five GETs per vhost, at once). Exit 0 when install has nothing to do, 1
//! when changes are pending or install would meet a conflict or a limit
//! (terraform's `-detailed-exitcode` idea).

use std::fmt::Write;

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use crate::capacity::{self, Needs};
use crate::cascade::Desired;
use crate::commands::fanout::{each_target, VhostOutcome};
use crate::context::Context;
use crate::diff::{self, binding_entity, Finding, Structure};
use crate::health::delayed_messages;
use crate::mgmt::Management;
use crate::observe::{self, observe, Depth, Observed};
use crate::report::Outcome;
use crate::target::Target;

pub async fn run(context: &Context) -> Result<Outcome> {
    each_target(context, |target, desired| async move {
        plan_vhost(&target, &desired).await
    })
    .await
}

/// One entity install would create.
#[derive(Debug, Serialize)]
struct Creation {
    kind: &'static str,
    entity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<u8>,
}

#[derive(Debug, Serialize)]
struct QueueRemoval {
    name: String,
    level: u8,
    messages: u64,
}

/// What teardown would remove: the cascade entities present and every
/// binding that touches them (deleting an exchange or queue takes those too).
#[derive(Debug, Default, Serialize)]
struct Removal {
    exchanges: Vec<String>,
    queues: Vec<QueueRemoval>,
    bindings: Vec<String>,
    messages: u64,
}

fn creations(structure: &Structure) -> Vec<Creation> {
    let exchanges = structure.missing_exchanges.iter().map(|e| Creation {
        kind: "exchange",
        entity: format!("exchange {}", e.name),
        level: None,
    });
    let queues = structure.missing_queues.iter().map(|q| Creation {
        kind: "queue",
        entity: format!("queue {}", q.name),
        level: Some(q.level),
    });
    let bindings = structure.missing_bindings.iter().map(|b| Creation {
        kind: "binding",
        entity: binding_entity(b.key()),
        level: None,
    });
    exchanges.chain(queues).chain(bindings).collect()
}

fn removal(desired: &Desired, observed: &Observed) -> Removal {
    let mut removal = Removal::default();
    for exchange in &desired.exchanges {
        if observed.exchanges.contains_key(&exchange.name) {
            removal.exchanges.push(exchange.name.clone());
        }
    }
    for queue in &desired.queues {
        if let Some(found) = observed.queues.get(&queue.name) {
            let messages = delayed_messages(found);
            removal.messages += messages;
            removal.queues.push(QueueRemoval {
                name: queue.name.clone(),
                level: queue.level,
                messages,
            });
        }
    }
    for b in &observed.bindings {
        let touches = desired.binding_touches(&b.source, &b.destination, b.destination_type);
        if touches {
            removal.bindings.push(binding_entity((
                &b.source,
                &b.destination,
                b.destination_type,
                &b.routing_key,
            )));
        }
    }
    removal
}

async fn plan_vhost(target: &Target, desired: &Desired) -> Result<VhostOutcome> {
    let management = Management::new(target)?;
    let (observed, capacity) = futures::try_join!(
        observe(&management, Depth::Definitions),
        observe::capacity(&management)
    )?;
    let structure = diff::structure(desired, &observed);
    let create = creations(&structure);
    let needs = Needs::missing(desired, &structure);
    let refusals = capacity::limit_findings(
        &target.vhost,
        &capacity.limits,
        observed.queues.len(),
        needs,
    );
    let refusals: Vec<&Finding> = refusals.iter().collect();
    let headroom = capacity::headroom_findings(&capacity.nodes, desired.levels, needs);
    let headroom: Vec<&Finding> = headroom.iter().collect();
    // A listed endpoint whose queue or exchange is absent: install cannot bind it.
    let blocked: Vec<&Finding> = structure
        .dangling_endpoints
        .iter()
        .filter(|f| {
            desired
                .endpoint_bindings()
                .any(|b| f.entity == format!("{} {}", b.destination_type.as_str(), b.destination))
        })
        .collect();
    let strays: Vec<&Finding> = structure.strays.iter().map(|(_, f)| f).collect();
    let teardown = removal(desired, &observed);
    let ok = structure.is_complete() && blocked.is_empty() && refusals.is_empty();

    let mut text = String::new();
    let _ = writeln!(text, "plan for vhost {}", target.vhost);
    if create.is_empty() {
        let _ = writeln!(text, "install would create nothing");
    } else {
        let _ = writeln!(text, "install would create {}:", create.len());
        for c in &create {
            let _ = writeln!(text, "  + {}", c.entity);
        }
    }
    let mut section = |title: String, items: &[&Finding]| {
        if !items.is_empty() {
            let _ = writeln!(text, "{title}");
            for f in items {
                let _ = writeln!(text, "  ! {}", f.message);
            }
        }
    };
    let conflicts: Vec<&Finding> = structure.conflicts.iter().collect();
    section(
        format!(
            "install would meet {} conflict{} (it does not override them):",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" }
        ),
        &conflicts,
    );
    section("install cannot bind these endpoints:".into(), &blocked);
    section(
        "install would refuse to start (nothing would be created):".into(),
        &refusals,
    );
    section("warning:".into(), &headroom);
    section(
        "install leaves these stray bindings alone (verify reports them):".into(),
        &strays,
    );
    let _ = writeln!(
        text,
        "teardown would remove {} exchanges, {} queues holding {} delayed messages, {} bindings",
        teardown.exchanges.len(),
        teardown.queues.len(),
        teardown.messages,
        teardown.bindings.len()
    );
    for q in teardown.queues.iter().filter(|q| q.messages > 0) {
        let _ = writeln!(text, "  - queue {} holds {} messages", q.name, q.messages);
    }
    let _ = writeln!(
        text,
        "plan: {}",
        if ok {
            "nothing to do"
        } else {
            "changes pending"
        }
    );
    Ok(VhostOutcome {
        ok,
        text,
        json: json!({
            "create": create,
            "conflicts": conflicts,
            "blocked": blocked,
            "refused": refusals,
            "warnings": headroom,
            "strays": strays,
            "teardown": teardown,
            "http_requests": management.request_count(),
        }),
    })
}
