//! `plan`: what `install` would create, the bindings the broker would refuse
//! it, the conflicts it would meet, whether the vhost's limits would refuse
//! it, which nodes are short of file handles, and what `teardown` would
//! remove, from one read-only look at the broker (five GETs per vhost, at
//! once). Exit 0 when install has nothing to do, 1 when changes are pending
//! or install would meet a refusal, a conflict or a limit (as `kubectl diff`).

use std::fmt::Write;

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use crate::capacity::{self, Needs};
use crate::cascade::Desired;
use crate::commands::fanout::{each_target, VhostOutcome};
use crate::context::Context;
use crate::counted::counted;
use crate::diff::refusal::binding_refusal;
use crate::diff::{self, binding_entity, conflict, Finding, Structure};
use crate::health::delayed_messages;
use crate::mgmt::Management;
use crate::observe::{self, observe, Capacity, Depth, Observed};
use crate::report::{short_binding_keys, Layout, Outcome};
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

/// One binding install would send and the broker would refuse.
#[derive(Debug, Serialize)]
struct Refusal {
    entity: String,
    reason: String,
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

/// What install would create, and the bindings it would send in vain.
fn creations(
    desired: &Desired,
    observed: &Observed,
    structure: &Structure,
) -> (Vec<Creation>, Vec<Refusal>) {
    let exchanges = (structure.missing_exchanges.iter())
        .chain(&structure.missing_endpoint_exchanges)
        .map(|e| Creation {
            kind: "exchange",
            entity: format!("exchange {}", e.name),
            level: None,
        });
    // Level queues, then the endpoint queues the topology declares.
    let queues = (structure.missing_queues.iter())
        .map(|q| (&q.name, Some(q.level)))
        .chain(
            structure
                .missing_endpoint_queues
                .iter()
                .map(|q| (&q.name, None)),
        )
        .map(|(name, level)| Creation {
            kind: "queue",
            entity: format!("queue {name}"),
            level,
        });
    let mut create: Vec<Creation> = exchanges.chain(queues).collect();
    let mut refused = Vec::new();
    for binding in &structure.missing_bindings {
        let entity = binding_entity(binding.key());
        match binding_refusal(desired, observed, binding) {
            Some(reason) => refused.push(Refusal { entity, reason }),
            None => create.push(Creation {
                kind: "binding",
                entity,
                level: None,
            }),
        }
    }
    (create, refused)
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
    let mut outcome = render(&target.vhost, desired, &observed, &capacity);
    outcome.json["http_requests"] = management.request_count().into();
    Ok(outcome)
}

/// The plan for one vhost, from what was observed there. Pure.
pub(crate) fn render(
    vhost: &str,
    desired: &Desired,
    observed: &Observed,
    capacity: &Capacity,
) -> VhostOutcome {
    let structure = diff::structure(desired, observed);
    let (create, refused) = creations(desired, observed, &structure);
    let needs = Needs::missing(desired, &structure);
    let refusals = capacity::limit_findings(vhost, &capacity.limits, observed.queues.len(), needs);
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
    let teardown = removal(desired, observed);
    let ok = structure.is_complete() && blocked.is_empty() && refusals.is_empty();

    let mut text = String::new();
    let _ = writeln!(text, "plan for vhost {vhost}");
    if create.is_empty() {
        let _ = writeln!(text, "install would create nothing");
    } else {
        // A refusal to start creates nothing: the list is what is missing.
        let heading = if refusals.is_empty() {
            "install would create"
        } else {
            "install would refuse to start (see below); missing"
        };
        let _ = writeln!(text, "{heading} {}:", create.len());
        for c in &create {
            let _ = writeln!(text, "  + {}", c.entity);
        }
    }
    if !refused.is_empty() {
        let _ = writeln!(
            text,
            "install would be refused {}:",
            counted(refused.len() as u64, "binding")
        );
        for r in &refused {
            let reason = Layout {
                start: 18,
                wrapped: 6,
                next_line: 6,
            };
            let _ = writeln!(
                text,
                "  ! {}\n    would refuse: {}",
                r.entity,
                reason.apply(&r.reason)
            );
        }
    }
    let mut section = |title: String, items: &[&Finding]| {
        if !items.is_empty() {
            let _ = writeln!(text, "{title}");
            for f in items {
                let message = Layout {
                    start: 4,
                    wrapped: 4,
                    next_line: 4,
                };
                let shown = message.apply(&short_binding_keys(&f.message));
                let _ = writeln!(text, "  ! {shown}");
            }
        }
    };
    let conflicts: Vec<Finding> = structure.conflicts.iter().map(|c| c.finding()).collect();
    section(
        format!(
            "install would meet {} (it does not override them):",
            counted(conflicts.len() as u64, "conflict")
        ),
        &conflicts.iter().collect::<Vec<_>>(),
    );
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
        "teardown would remove {}, {} ({}), {}",
        counted(teardown.exchanges.len() as u64, "exchange"),
        counted(teardown.queues.len() as u64, "queue"),
        counted(teardown.messages, "delayed message"),
        counted(teardown.bindings.len() as u64, "binding")
    );
    for q in teardown.queues.iter().filter(|q| q.messages > 0) {
        let _ = writeln!(
            text,
            "  - queue {} holds {}",
            q.name,
            counted(q.messages, "message")
        );
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
    text.push_str(&conflict::next_steps(&structure.conflicts));
    VhostOutcome {
        ok,
        text,
        json: json!({
            "create": create,
            "would_refuse": refused,
            "conflicts": structure.conflicts,
            "blocked": blocked,
            "refused": refusals,
            "warnings": headroom,
            "strays": strays,
            "teardown": teardown,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{assert_fits_80_columns, desired, installed_with_hand_made_level_5};

    #[test]
    fn a_fresh_vhost_and_a_conflict_fit_80_columns() {
        let d = desired("");
        let fresh = render("/", &d, &Observed::default(), &Capacity::default());
        assert!(
            fresh.text.contains("install would create 113:"),
            "{}",
            fresh.text
        );
        assert_fits_80_columns("plan, fresh vhost", &fresh.text);
        let conflict = render(
            "/",
            &d,
            &installed_with_hand_made_level_5(&d),
            &Capacity::default(),
        );
        assert!(
            conflict
                .text
                .contains("install would meet 1 conflict (it does not override them):"),
            "{}",
            conflict.text
        );
        assert_fits_80_columns("plan, a conflict", &conflict.text);
    }

    #[test]
    fn a_binding_to_a_missing_endpoint_is_listed_as_refused_not_created() {
        let d = desired("endpoints:\n  - address: Sales\n");
        let plan = render("/", &d, &Observed::default(), &Capacity::default());
        assert!(!plan.ok);
        assert_eq!(plan.json["create"].as_array().unwrap().len(), 113);
        let refused = plan.json["would_refuse"].as_array().unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused[0]["entity"],
            "binding nsb.v2.delay-delivery -> queue Sales (#.Sales)"
        );
        assert!(plan.text.contains(
            "install would be refused 1 binding:\n  \
             ! binding nsb.v2.delay-delivery -> queue Sales (#.Sales)\n    \
             would refuse: endpoint queue `Sales` does not exist"
        ));
        assert_fits_80_columns("plan, a refused binding", &plan.text);
    }
}
