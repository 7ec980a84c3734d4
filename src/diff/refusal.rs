//! Which of install's bindings the broker is sure to refuse, so that plan
//! shows what install would really do. Install sends every missing binding
//! and reports each refusal; plan predicts the same refusals from the
//! observed state. Pure.
//!
//! The broker accepts a binding onto an entity that merely conflicts (other
//! arguments, another exchange type); it refuses one whose end does not
//! exist and that install does not declare (404 NOT_FOUND: an endpoint's
//! queue or exchange), and one into a queue that another connection holds
//! exclusively (405 RESOURCE_LOCKED).

use crate::cascade::{Binding, Desired, DestinationKind};
use crate::observe::Observed;

/// Why install's binding would be refused, or `None` when the broker
/// takes it.
pub fn binding_refusal(
    desired: &Desired,
    observed: &Observed,
    binding: &Binding,
) -> Option<String> {
    let exchange_exists =
        |name: &str| observed.exchanges.contains_key(name) || desired.declares_exchange(name);
    if !exchange_exists(&binding.source) {
        return Some(missing_end("exchange", &binding.source));
    }
    match binding.destination_type {
        DestinationKind::Exchange if !exchange_exists(&binding.destination) => {
            Some(missing_end("exchange", &binding.destination))
        }
        DestinationKind::Exchange => None,
        DestinationKind::Queue => match observed.queues.get(&binding.destination) {
            Some(queue) if queue.exclusive => Some(format!(
                "queue `{}` is exclusive to another connection: the broker refuses to bind it \
                 (405 RESOURCE_LOCKED) until that connection closes",
                binding.destination
            )),
            Some(_) => None,
            None if desired.declares_queue(&binding.destination) => None,
            None => Some(missing_end("queue", &binding.destination)),
        },
    }
}

/// An endpoint's queue or exchange that install does not create: the
/// broker answers the binding with 404.
pub fn missing_end(kind: &str, name: &str) -> String {
    format!(
        "endpoint {kind} `{name}` does not exist (declare it before install, give the \
         endpoint `declare: true`, or change its `bind_to`): a delivery route to nowhere would \
         jam the cascade"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::Arguments;
    use crate::test_fixtures::{desired, installed, observed_queue};

    fn refusals(d: &Desired, o: &Observed) -> Vec<(String, String)> {
        d.bindings
            .iter()
            .filter_map(|b| binding_refusal(d, o, b).map(|r| (b.destination.clone(), r)))
            .collect()
    }

    #[test]
    fn a_fresh_vhost_refuses_only_the_missing_endpoint() {
        let d = desired("endpoints:\n  - address: Sales\n");
        let found = refusals(&d, &Observed::default());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "Sales");
        assert!(found[0].1.contains("endpoint queue `Sales` does not exist"));
    }

    #[test]
    fn an_existing_endpoint_queue_is_bound() {
        let d = desired("endpoints:\n  - address: Sales\n");
        let mut o = Observed::default();
        o.queues
            .insert("Sales".into(), observed_queue("Sales", Arguments::new()));
        assert!(refusals(&d, &o).is_empty());
    }

    #[test]
    fn a_declared_endpoint_is_bound_after_install_declares_it() {
        let d =
            desired("endpoints:\n  - address: Sales\n    bind_to: exchange\n    declare: true\n");
        assert!(refusals(&d, &Observed::default()).is_empty());
    }

    #[test]
    fn an_exclusive_queue_refuses_its_binding() {
        let d = desired("");
        let mut o = installed(&d);
        o.queues.get_mut("nsb.v2.delay-level-05").unwrap().exclusive = true;
        let found = refusals(&d, &o);
        assert_eq!(found.len(), 1);
        assert!(found[0].1.contains("405 RESOURCE_LOCKED"), "{found:?}");
    }

    #[test]
    fn a_missing_application_exchange_refuses_both_of_its_bindings() {
        let d = desired(
            "endpoints:\n  - queue: video\n    exchange: media\n    routing_key: media.video\n",
        );
        let mut o = Observed::default();
        o.queues
            .insert("video".into(), observed_queue("video", Arguments::new()));
        let found = refusals(&d, &o);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found
            .iter()
            .all(|(_, r)| r.contains("endpoint exchange `media` does not exist")));
    }
}
