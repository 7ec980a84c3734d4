//! Deprecated RabbitMQ features on the cascade's and the endpoints' queues.
//! RabbitMQ 4.3 denies them by default: a queue that uses one keeps working
//! until it is declared again — by the next `install` — and is then refused.
//! Verify reports them from the queues' own properties on every version,
//! and lists what the broker itself reports in use (`/api/deprecated-features/used`,
//! 3.13 and later). Pure: verify does the I/O.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::cascade::{Desired, DestinationKind};
use crate::diff::{Finding, Severity};
use crate::observe::ObservedQueue;
use crate::topology::ArgValue;

/// One entry of `/api/deprecated-features/used`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DeprecatedFeature {
    pub name: String,
    #[serde(default)]
    pub deprecation_phase: String,
}

/// A deprecated feature a queue's properties show, with the broker's name for it.
struct Feature {
    name: &'static str,
    what: &'static str,
    uses: fn(&ObservedQueue) -> bool,
}

const FEATURES: [Feature; 4] = [
    Feature {
        name: "transient_nonexcl_queues",
        what: "transient (non-durable) non-exclusive queues",
        uses: |q| !q.durable && !q.exclusive,
    },
    Feature {
        name: "queue_master_locator",
        what: "the x-queue-master-locator argument",
        uses: |q| q.arguments.contains_key("x-queue-master-locator"),
    },
    Feature {
        name: "queue_mode",
        what: "the x-queue-mode argument (lazy classic queues)",
        uses: |q| q.arguments.contains_key("x-queue-mode"),
    },
    Feature {
        name: "classic_queue_version_1",
        what: "classic queue version 1 (x-queue-version: 1)",
        uses: |q| q.arguments.get("x-queue-version") == Some(&ArgValue::Int(1)),
    },
];

/// "a, b, c and 25 more".
fn some_names(names: &[&str]) -> String {
    const SHOWN: usize = 3;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{} and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    }
}

/// One warning per deprecated feature the cascade's level queues or the
/// endpoints' queues use, and one note with what the broker reports in use.
pub fn findings(
    desired: &Desired,
    queues: &BTreeMap<String, ObservedQueue>,
    used: Option<&[DeprecatedFeature]>,
) -> Vec<Finding> {
    let ours: Vec<&ObservedQueue> = desired
        .queues
        .iter()
        .map(|q| q.name.as_str())
        .chain(
            desired
                .endpoint_bindings()
                .filter(|b| b.destination_type == DestinationKind::Queue)
                .map(|b| b.destination.as_str()),
        )
        .filter_map(|name| queues.get(name))
        .collect();
    let mut found = Vec::new();
    for feature in &FEATURES {
        let users: Vec<&str> = ours
            .iter()
            .filter(|q| (feature.uses)(q))
            .map(|q| q.name.as_str())
            .collect();
        if users.is_empty() {
            continue;
        }
        found.push(Finding {
            severity: Severity::Warning,
            entity: format!("deprecated feature {}", feature.name),
            kind: "deprecated_feature".into(),
            expected: Some("not used".into()),
            actual: Some(format!("{} queues", users.len())),
            message: format!(
                "{} use{} {}, which RabbitMQ 4.3 denies by default: there the next install's \
                 declare of {} is refused",
                some_names(&users),
                if users.len() == 1 { "s" } else { "" },
                feature.what,
                if users.len() == 1 { "it" } else { "them" },
            ),
            level: None,
        });
    }
    if let Some(used) = used.filter(|u| !u.is_empty()) {
        let listed: Vec<String> = used
            .iter()
            .map(|f| format!("{} ({})", f.name, f.deprecation_phase))
            .collect();
        found.push(Finding {
            severity: Severity::Info,
            entity: "broker".into(),
            kind: "deprecated_features_used".into(),
            expected: Some("none".into()),
            actual: Some(listed.join(", ")),
            message: format!(
                "the broker reports deprecated features in use (by anything on it): {}",
                listed.join(", ")
            ),
            level: None,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{desired, installed, observed_queue};

    #[test]
    fn the_v1_cascade_uses_lazy_queue_mode_on_every_level() {
        let d = desired(include_str!("../examples/nservicebus-v1.yaml"));
        let mut observed = installed(&d);
        for queue in observed.queues.values_mut() {
            queue.queue_type = "classic".into();
        }
        let found = findings(&d, &observed.queues, None);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].entity, "deprecated feature queue_mode");
        assert!(
            found[0].message.starts_with(
                "nsb.delay-level-27, nsb.delay-level-26, nsb.delay-level-25 and 25 more use"
            ),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_transient_endpoint_queue_is_named_and_the_brokers_list_noted() {
        let d = desired("endpoints:\n  - address: Sales\n");
        let mut observed = installed(&d);
        let mut sales = observed_queue("Sales", Default::default());
        sales.durable = false;
        observed.queues.insert("Sales".into(), sales);
        let used = [DeprecatedFeature {
            name: "transient_nonexcl_queues".into(),
            deprecation_phase: "permitted_by_default".into(),
        }];
        let found = findings(&d, &observed.queues, Some(&used));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].message.starts_with("Sales uses transient"),
            "{}",
            found[0].message
        );
        assert_eq!(found[1].kind, "deprecated_features_used");
        assert!(findings(&d, &installed(&d).queues, Some(&[])).is_empty());
    }
}
