//! An endpoint of the topology file: a destination the delivery exchange
//! routes delayed messages to, in the NServiceBus form (`address`) or the
//! kombu form (`queue` on `exchange` with `routing_key`).

use serde::Deserialize;

use super::declare::{self, Declare};
use super::{BindTo, EntityName};

/// A destination on the delivery exchange. Two forms in the file:
/// `address` (+ `bind_to`): the queue or exchange named like the address;
/// `queue` + `exchange` + `routing_key`: an application queue bound to a
/// topic exchange, as Celery and other kombu users route (both bindings get
/// the key `#.<routing_key>`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawEndpoint")]
pub struct Endpoint {
    /// The tail of a delayed routing key; the delivery exchange binds `#.<address>`.
    pub address: EntityName,
    /// What the delivery exchange is bound to.
    pub bind_to: BindTo,
    /// Name of that queue or exchange: the address itself in the `address` form.
    pub destination: EntityName,
    /// In the queue-on-exchange form, the application queue that
    /// `destination` (an exchange) routes `#.<address>` to.
    pub queue: Option<EntityName>,
    /// Whether install declares the endpoint's queue (and exchange) too.
    pub declare: Option<Declare>,
}

impl Endpoint {
    /// The file's key that holds the address, to point errors at its line.
    pub fn address_key(&self) -> &'static str {
        if self.queue.is_some() {
            "routing_key"
        } else {
            "address"
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    address: Option<EntityName>,
    bind_to: Option<BindTo>,
    queue: Option<EntityName>,
    exchange: Option<EntityName>,
    routing_key: Option<EntityName>,
    #[serde(default, deserialize_with = "declare::optional")]
    declare: Option<Declare>,
}

impl TryFrom<RawEndpoint> for Endpoint {
    type Error = String;

    fn try_from(raw: RawEndpoint) -> Result<Endpoint, String> {
        match raw {
            RawEndpoint {
                address: Some(address),
                bind_to,
                queue: None,
                exchange: None,
                routing_key: None,
                declare,
            } => Ok(Endpoint {
                destination: address.clone(),
                address,
                bind_to: bind_to.unwrap_or_default(),
                queue: None,
                declare,
            }),
            RawEndpoint {
                address: None,
                bind_to: None,
                queue: Some(queue),
                exchange: Some(exchange),
                routing_key: Some(routing_key),
                declare,
            } => Ok(Endpoint {
                address: routing_key,
                bind_to: BindTo::Exchange,
                destination: exchange,
                queue: Some(queue),
                declare,
            }),
            _ => Err(
                "an endpoint is either `address` (with an optional `bind_to`) or \
                      `queue`, `exchange` and `routing_key` together (either with an \
                      optional `declare`)"
                    .to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, parse};
    use super::super::*;

    #[test]
    fn an_endpoint_names_a_queue_on_an_exchange_with_a_routing_key() {
        let t = parse(
            "endpoints:\n  - queue: video\n    exchange: media\n    routing_key: media.video\n",
        )
        .unwrap();
        let endpoint = &t.endpoints[0];
        assert_eq!(endpoint.address.as_str(), "media.video");
        assert_eq!(endpoint.destination.as_str(), "media");
        assert_eq!(endpoint.bind_to, BindTo::Exchange);
        assert_eq!(
            endpoint.queue.as_ref().map(EntityName::as_str),
            Some("video")
        );
        let e = error("endpoints:\n  - queue: v\n    exchange: media\n    routing_key: \"#\"\n");
        assert!(
            e.starts_with("t.yaml:4:5: endpoints[0]: routing_key `#` is wildcards only"),
            "{e}"
        );
        let e = error("endpoints:\n  - queue: video\n    address: media\n");
        assert!(e.contains("either `address`"), "{e}");
        let e = error("endpoints:\n  - queue: celery_delayed_3\n    exchange: x\n    routing_key: x\n    # pad\ncascade:\n  level_name: \"celery_delayed_{level}\"\n");
        assert!(
            e.contains("`celery_delayed_3` is the name of a cascade entity"),
            "{e}"
        );
    }
}
