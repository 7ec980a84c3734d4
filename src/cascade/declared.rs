//! The endpoint entities a topology declares (`declare:` on an endpoint):
//! queues, exchanges and the exchange -> queue binding of conventional
//! routing. Not part of the cascade: install declares them before binding,
//! verify and plan compare them, teardown never deletes them. Pure.

use serde::Serialize;

use super::{Arguments, Binding, Desired, DestinationKind, Exchange, Role};
use crate::topology::{Topology, FANOUT};

/// An endpoint's queue as the topology declares it: durable, not
/// exclusive, not auto-delete, its type stated in `x-queue-type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointQueue {
    pub name: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: Arguments,
    /// The address (or kombu routing key) of the first endpoint declaring it.
    #[serde(skip)]
    pub address: String,
}

/// What the endpoints' `declare` keys add to the desired state.
#[derive(Debug, Default)]
pub(super) struct Declared {
    pub exchanges: Vec<Exchange>,
    pub queues: Vec<EndpointQueue>,
    /// Conventional routing's fanout exchange -> queue of the same name.
    pub bindings: Vec<Binding>,
}

/// Every declared endpoint entity, once each, in the file's order.
/// (Validation made sure that two endpoints declaring one name agree.)
pub(super) fn declared(topology: &Topology) -> Declared {
    let mut declared = Declared::default();
    for endpoint in &topology.endpoints {
        let address = endpoint.address.to_string();
        if let Some((name, kind)) = endpoint.declared_exchange() {
            if !declared.exchanges.iter().any(|e| e.name == name.as_str()) {
                declared.exchanges.push(Exchange {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: Arguments::new(),
                    role: Role::EndpointExchange(address.clone()),
                });
            }
            // The kombu form's exchange -> queue binding is an endpoint
            // binding of its own; conventional routing binds the fanout
            // exchange to the queue of its name with an empty key.
            if kind == FANOUT {
                declared.bindings.push(Binding {
                    source: name.to_string(),
                    destination: name.to_string(),
                    destination_type: DestinationKind::Queue,
                    routing_key: String::new(),
                    role: Role::EndpointQueueBinding(address.clone()),
                });
            }
        }
        if let Some((name, declare)) = endpoint.declared_queue() {
            if !declared.queues.iter().any(|q| q.name == name.as_str()) {
                declared.queues.push(EndpointQueue {
                    name: name.to_string(),
                    durable: true,
                    exclusive: false,
                    auto_delete: false,
                    arguments: declare.queue_arguments(),
                    address,
                });
            }
        }
    }
    declared
}

impl Desired {
    /// Whether the topology declares this endpoint queue or exchange.
    pub fn declares(&self, kind: DestinationKind, name: &str) -> bool {
        match kind {
            DestinationKind::Queue => self.endpoint_queues.iter().any(|q| q.name == name),
            DestinationKind::Exchange => self.endpoint_exchanges.iter().any(|e| e.name == name),
        }
    }

    /// The declared endpoint entities, as the comparison names them.
    pub fn declared_endpoint_entities(&self) -> impl Iterator<Item = String> + '_ {
        let exchanges = self.endpoint_exchanges.iter();
        exchanges.map(|e| format!("exchange {}", e.name)).chain(
            self.endpoint_queues
                .iter()
                .map(|q| format!("queue {}", q.name)),
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::cascade::{Desired, DestinationKind, Value};
    use crate::test_fixtures::desired;

    fn declared_names(d: &Desired) -> (Vec<String>, Vec<String>) {
        (
            d.endpoint_exchanges
                .iter()
                .map(|e| format!("{} {}", e.kind, e.name))
                .collect(),
            d.endpoint_queues.iter().map(|q| q.name.clone()).collect(),
        )
    }

    #[test]
    fn without_declare_no_endpoint_entity_is_desired() {
        let d = desired("endpoints:\n  - address: Sales\n    bind_to: exchange\n");
        assert!(d.endpoint_exchanges.is_empty() && d.endpoint_queues.is_empty());
        assert_eq!(d.bindings.len(), 57);
    }

    #[test]
    fn a_declared_queue_endpoint_is_a_durable_quorum_queue() {
        let d = desired("endpoints:\n  - address: Sales\n    declare: true\n");
        assert_eq!(declared_names(&d), (vec![], vec!["Sales".to_string()]));
        let q = &d.endpoint_queues[0];
        assert!(q.durable && !q.exclusive && !q.auto_delete);
        assert_eq!(q.arguments["x-queue-type"], Value::Str("quorum".into()));
        assert_eq!(q.address, "Sales");
        assert!(
            !d.owns_queue("Sales"),
            "an endpoint queue is not the cascade's"
        );
    }

    #[test]
    fn a_declared_exchange_endpoint_is_conventional_routing() {
        let d = desired(
            "endpoints:\n  - address: Sales\n    bind_to: exchange\n    declare: {queue_type: \
             classic}\n",
        );
        assert_eq!(
            declared_names(&d),
            (vec!["fanout Sales".to_string()], vec!["Sales".to_string()])
        );
        let bindings: Vec<_> = d.endpoint_bindings().map(|b| b.key()).collect();
        assert_eq!(
            bindings,
            [
                (
                    "nsb.v2.delay-delivery",
                    "Sales",
                    DestinationKind::Exchange,
                    "#.Sales"
                ),
                ("Sales", "Sales", DestinationKind::Queue, ""),
            ]
        );
        assert!(!d.owns_exchange("Sales"));
    }

    #[test]
    fn kombu_queues_on_one_exchange_declare_it_once() {
        let d = desired(
            "endpoints:\n  - queue: video\n    exchange: media\n    routing_key: media.video\n    \
             declare: true\n  - queue: audio\n    exchange: media\n    routing_key: media.audio\n    \
             declare: true\n",
        );
        assert_eq!(
            declared_names(&d),
            (
                vec!["topic media".to_string()],
                vec!["video".to_string(), "audio".to_string()]
            )
        );
        assert_eq!(d.endpoint_bindings().count(), 4);
    }
}
