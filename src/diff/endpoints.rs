//! Which delivery-exchange bindings are endpoints (listed or made by the
//! applications themselves), and which endpoints can never receive a delayed
//! message. Pure.

use std::collections::BTreeSet;

use super::{Finding, Severity};
use crate::cascade::{Desired, DestinationKind};
use crate::observe::{Observed, ObservedBinding};
use crate::topology::address_problem;

/// The exchanges among `destinations` that are direct, as errors.
pub(super) fn direct_exchanges<'d>(
    destinations: impl Iterator<Item = (&'d str, DestinationKind)>,
    observed: &Observed,
) -> Vec<Finding> {
    let direct: BTreeSet<&str> = destinations
        .filter(|(_, kind)| *kind == DestinationKind::Exchange)
        .filter(|(name, _)| {
            observed
                .exchanges
                .get(*name)
                .is_some_and(|e| e.kind == "direct")
        })
        .map(|(name, _)| name)
        .collect();
    direct
        .into_iter()
        .map(|name| Finding {
            severity: Severity::Error,
            entity: format!("exchange {name}"),
            kind: "endpoint_direct_exchange".into(),
            expected: Some("type=topic".into()),
            actual: Some("type=direct".into()),
            message: format!(
                "endpoint exchange {name} is a direct exchange: it matches whole routing keys \
                 only, and a delayed message's key starts with its delay bits, so no delayed \
                 message reaches a queue through it (at-least-once levels keep them in level 0, \
                 jamming it; classic levels drop them). Make it a topic exchange"
            ),
            level: None,
        })
        .collect()
}

/// A delivery-exchange binding of the endpoint shape, `#.<address>` to a
/// queue or exchange outside the cascade: NServiceBus endpoints bind their
/// own name, kombu (Celery) workers their queue's exchange with its routing
/// key. A wildcard "address" (`#.#`, `#.*`) matches other endpoints'
/// messages: that one is a stray, whatever its shape.
pub(super) fn is_endpoint_binding(desired: &Desired, binding: &ObservedBinding) -> bool {
    binding.source == desired.delivery_exchange
        && binding.arguments.is_empty()
        && binding
            .routing_key
            .strip_prefix("#.")
            .is_some_and(|address| address_problem(address).is_none())
        && !desired.owns_exchange(&binding.destination)
        && !desired.owns_queue(&binding.destination)
}

#[cfg(test)]
mod tests {
    use super::super::structure;
    use super::*;
    use crate::cascade::Arguments;
    use crate::observe::ObservedExchange;
    use crate::test_fixtures::{desired, installed, observed_queue};

    #[test]
    fn a_celery_workers_own_bindings_are_endpoints() {
        let d = desired(include_str!("../../examples/celery.yaml"));
        let mut observed = installed(&d);
        for (name, kind) in [("celery", "topic"), ("media", "topic")] {
            observed.exchanges.insert(name.into(), exchange(name, kind));
        }
        observed
            .queues
            .insert("celery".into(), observed_queue("celery", Arguments::new()));
        observed
            .bindings
            .push(endpoint_binding("media", "#.media.video"));
        let s = structure(&d, &observed);
        assert!(s.findings().is_empty(), "{:?}", s.findings());
        assert_eq!(s.unlisted_endpoints.len(), 1);
    }

    #[test]
    fn a_direct_exchange_in_the_delivery_path_is_an_error() {
        let d = desired(include_str!("../../examples/celery.yaml"));
        let mut observed = installed(&d);
        observed
            .exchanges
            .insert("celery".into(), exchange("celery", "direct"));
        observed
            .exchanges
            .insert("legacy".into(), exchange("legacy", "direct"));
        observed
            .queues
            .insert("celery".into(), observed_queue("celery", Arguments::new()));
        observed
            .bindings
            .push(endpoint_binding("legacy", "#.legacy"));
        let s = structure(&d, &observed);
        let entities: Vec<_> = s
            .direct_endpoints
            .iter()
            .map(|f| f.entity.as_str())
            .collect();
        assert_eq!(entities, ["exchange celery", "exchange legacy"]);
        assert!(s.findings().iter().all(|f| f.severity == Severity::Error));
    }

    fn exchange(name: &str, kind: &str) -> ObservedExchange {
        ObservedExchange {
            name: name.into(),
            kind: kind.into(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: Arguments::new(),
        }
    }

    fn endpoint_binding(exchange: &str, key: &str) -> ObservedBinding {
        ObservedBinding {
            source: "celery_delayed_delivery".into(),
            destination: exchange.into(),
            destination_type: DestinationKind::Exchange,
            routing_key: key.into(),
            arguments: Arguments::new(),
        }
    }
}
