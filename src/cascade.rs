//! Topology -> Desired: the exact exchanges, queues and bindings of the cascade
//! (SPEC §1), and the routing key a sender uses for a delay. Pure: no I/O.

use serde::Serialize;

use crate::topology::{ArgValue, BindTo, QueueType, Topology};

mod declared;

pub use crate::topology::ArgValue as Value;
pub use declared::EndpointQueue;

/// Queue or exchange arguments, sorted by key so that comparisons are stable.
pub type Arguments = std::collections::BTreeMap<String, ArgValue>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    Queue,
    Exchange,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Queue => "queue",
            DestinationKind::Exchange => "exchange",
        }
    }
}

impl From<BindTo> for DestinationKind {
    fn from(bind_to: BindTo) -> Self {
        match bind_to {
            BindTo::Queue => DestinationKind::Queue,
            BindTo::Exchange => DestinationKind::Exchange,
        }
    }
}

/// Why an entity is part of the cascade; reports group findings by it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "role", content = "of")]
pub enum Role {
    /// Level exchange or queue `L`.
    Level(u8),
    /// Exchange `L` -> queue `L`: bit L set, wait here.
    LevelQueueBinding(u8),
    /// Exchange `L` -> exchange `L-1` (or the delivery exchange for 0): bit L clear.
    FallThroughBinding(u8),
    DeliveryExchange,
    /// Delivery exchange -> the endpoint with this address.
    EndpointBinding(String),
    /// Endpoint exchange -> its application queue, for this address (the
    /// queue-on-exchange endpoint form, or a declared conventional-routing
    /// endpoint): the second hop of a delivery.
    EndpointQueueBinding(String),
    /// An endpoint's own exchange, declared for this address (`declare:`).
    EndpointExchange(String),
}

impl Role {
    /// A binding that delivers to an endpoint rather than a step of the cascade.
    pub fn is_endpoint(&self) -> bool {
        matches!(
            self,
            Role::EndpointBinding(_) | Role::EndpointQueueBinding(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exchange {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: Arguments,
    #[serde(skip)]
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Queue {
    pub name: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: Arguments,
    #[serde(skip)]
    pub level: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Binding {
    pub source: String,
    pub destination: String,
    pub destination_type: DestinationKind,
    pub routing_key: String,
    #[serde(skip)]
    pub role: Role,
}

impl Binding {
    /// Identity of a binding on the broker (arguments are always empty here).
    pub fn key(&self) -> (&str, &str, DestinationKind, &str) {
        (
            &self.source,
            &self.destination,
            self.destination_type,
            &self.routing_key,
        )
    }
}

/// Where a sender publishes a delayed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub exchange: String,
    pub routing_key: String,
}

/// The cascade a topology asks for in one vhost: the single source of truth
/// for install, verify, plan, teardown and render.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub vhost: String,
    pub levels: u8,
    pub queue_type: QueueType,
    pub delivery_exchange: String,
    /// Level exchanges from the highest level down, then the delivery exchange.
    pub exchanges: Vec<Exchange>,
    /// Level queues from the highest level down.
    pub queues: Vec<Queue>,
    /// Cascade bindings from the highest level down, then endpoint bindings.
    pub bindings: Vec<Binding>,
    /// Endpoint exchanges the topology declares (`declare:`): not the
    /// cascade's, so never deleted by teardown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoint_exchanges: Vec<Exchange>,
    /// Endpoint queues the topology declares, likewise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoint_queues: Vec<EndpointQueue>,
}

/// Level `level`'s TTL in milliseconds: 2^level seconds.
pub fn level_ttl_ms(level: u8) -> i64 {
    (1i64 << level) * 1000
}

/// `"*." * (levels-1-level)` followed by `bit` and `.#`.
pub fn level_binding_key(levels: u8, level: u8, bit: u8) -> String {
    format!("{}{bit}.#", "*.".repeat(usize::from(levels - 1 - level)))
}

/// Probe messages are sent to `delaytopo.probe.<16 hex digits>`.
pub const PROBE_ADDRESS_PREFIX: &str = "delaytopo.probe.";
/// The queue that drops every probe message its probe no longer waits for.
pub const PROBE_SINK_QUEUE: &str = "delaytopo.probe.sink";
/// What the names of a cascade's staging queues and exchanges begin with.
pub const STAGING_PREFIX: &str = "delaytopo.staging.";
/// Staging queues per cascade. The broker dead-letters out of each quorum
/// queue with one worker that keeps 32 messages in flight (seen on 3.10.8:
/// about 250 messages a second), so releases are spread over several.
pub const STAGING_SHARDS: usize = 8;

/// The probe sink's binding key on the delivery exchange: every probe address.
pub fn probe_sink_binding_key() -> String {
    format!("#.{PROBE_ADDRESS_PREFIX}#")
}

/// The delivery exchange's binding key for an endpoint: `#.` + address.
pub fn endpoint_binding_key(address: &str) -> String {
    format!("#.{address}")
}

/// The routing key for `delay` seconds to `address`: N bits MSB first, each
/// followed by `.`, then the address. `None` when the delay does not fit.
pub fn routing_key(levels: u8, delay_seconds: u64, address: &str) -> Option<String> {
    if delay_seconds > max_delay_seconds(levels) {
        return None;
    }
    let mut key = String::with_capacity(usize::from(levels) * 2 + address.len());
    for bit in (0..levels).rev() {
        key.push(if delay_seconds >> bit & 1 == 1 {
            '1'
        } else {
            '0'
        });
        key.push('.');
    }
    key.push_str(address);
    Some(key)
}

/// The largest delay a cascade of `levels` levels can hold: 2^levels - 1 s.
pub fn max_delay_seconds(levels: u8) -> u64 {
    (1u64 << levels) - 1
}

/// The level a delay starts at: its highest set bit, or 0 for no delay.
pub fn starting_level(delay_seconds: u64) -> u8 {
    if delay_seconds == 0 {
        0
    } else {
        (63 - delay_seconds.leading_zeros()) as u8
    }
}

/// Splits a cascade routing key into its delay and its address.
pub fn parse_routing_key(levels: u8, key: &str) -> Option<(u64, &str)> {
    let prefix_len = usize::from(levels) * 2;
    let (bits, address) = (key.get(..prefix_len)?, key.get(prefix_len..)?);
    let mut delay = 0u64;
    for pair in bits.as_bytes().chunks(2) {
        let bit = match pair {
            [b'0', b'.'] => 0,
            [b'1', b'.'] => 1,
            _ => return None,
        };
        delay = delay << 1 | bit;
    }
    Some((delay, address))
}

impl Desired {
    pub fn new(topology: &Topology, vhost: &str) -> Desired {
        let levels = topology.cascade.levels.0;
        let delivery = topology.cascade.delivery_exchange.to_string();
        let level_name = |level: u8| topology.level_name(level);
        let topic = |name: String, role: Role| Exchange {
            name,
            kind: "topic".to_string(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: Arguments::new(),
            role,
        };

        let mut exchanges = Vec::new();
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for level in (0..levels).rev() {
            let name = level_name(level);
            let next_hop = if level == 0 {
                delivery.clone()
            } else {
                level_name(level - 1)
            };
            exchanges.push(topic(name.clone(), Role::Level(level)));

            let mut arguments = topology.cascade.level_queue_arguments();
            arguments.insert("x-message-ttl".into(), ArgValue::Int(level_ttl_ms(level)));
            arguments.insert(
                "x-dead-letter-exchange".into(),
                ArgValue::Str(next_hop.clone()),
            );
            queues.push(Queue {
                name: name.clone(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments,
                level,
            });

            bindings.push(Binding {
                source: name.clone(),
                destination: name.clone(),
                destination_type: DestinationKind::Queue,
                routing_key: level_binding_key(levels, level, 1),
                role: Role::LevelQueueBinding(level),
            });
            bindings.push(Binding {
                source: name,
                destination: next_hop,
                destination_type: DestinationKind::Exchange,
                routing_key: level_binding_key(levels, level, 0),
                role: Role::FallThroughBinding(level),
            });
        }
        exchanges.push(topic(delivery.clone(), Role::DeliveryExchange));
        for endpoint in &topology.endpoints {
            let address = endpoint.address.to_string();
            bindings.push(Binding {
                source: delivery.clone(),
                destination: endpoint.destination.to_string(),
                destination_type: endpoint.bind_to.into(),
                routing_key: endpoint_binding_key(&address),
                role: Role::EndpointBinding(address.clone()),
            });
            if let Some(queue) = &endpoint.queue {
                bindings.push(Binding {
                    source: endpoint.destination.to_string(),
                    destination: queue.to_string(),
                    destination_type: DestinationKind::Queue,
                    routing_key: endpoint_binding_key(&address),
                    role: Role::EndpointQueueBinding(address),
                });
            }
        }
        let declared = declared::declared(topology);
        bindings.extend(declared.bindings);

        Desired {
            vhost: vhost.to_string(),
            levels,
            queue_type: topology.cascade.queue_type,
            delivery_exchange: delivery,
            exchanges,
            queues,
            bindings,
            endpoint_exchanges: declared.exchanges,
            endpoint_queues: declared.queues,
        }
    }

    /// Level `level`'s exchange (and queue) name.
    pub fn level_name(&self, level: u8) -> &str {
        &self.queues[usize::from(self.levels - 1 - level)].name
    }

    /// Where to publish `delay_seconds` for `address`; `None` when too long.
    pub fn route(&self, delay_seconds: u64, address: &str) -> Option<Route> {
        let routing_key = routing_key(self.levels, delay_seconds, address)?;
        Some(Route {
            exchange: self.level_name(starting_level(delay_seconds)).to_string(),
            routing_key,
        })
    }

    /// The staging queues migrate and transfer publish through into this
    /// cascade (`moving::staging`), each with a fanout exchange of the same
    /// name. They are not part of what install creates: a move declares
    /// them, and they stay (empty) for the next move; teardown removes them.
    pub fn staging_names(&self) -> Vec<String> {
        (0..STAGING_SHARDS)
            .map(|shard| format!("{STAGING_PREFIX}{}.{shard}", self.delivery_exchange))
            .collect()
    }

    /// The exclusive queue a move holds while it uses the staging queues:
    /// one move at a time into a cascade.
    pub fn staging_lock(&self) -> String {
        format!("{STAGING_PREFIX}{}.lock", self.delivery_exchange)
    }

    pub fn owns_exchange(&self, name: &str) -> bool {
        self.exchanges.iter().any(|e| e.name == name)
    }

    pub fn owns_queue(&self, name: &str) -> bool {
        self.queues.iter().any(|q| q.name == name)
    }

    /// Whether install declares an exchange of that name: the cascade's, or
    /// an endpoint's the topology declares.
    pub fn declares_exchange(&self, name: &str) -> bool {
        self.owns_exchange(name) || self.endpoint_exchanges.iter().any(|e| e.name == name)
    }

    /// Whether install declares a queue of that name (cascade or endpoint).
    pub fn declares_queue(&self, name: &str) -> bool {
        self.owns_queue(name) || self.endpoint_queues.iter().any(|q| q.name == name)
    }

    /// Whether a binding with these ends touches the cascade: its source is a
    /// cascade exchange, or its destination a cascade queue or exchange.
    pub fn binding_touches(&self, source: &str, destination: &str, kind: DestinationKind) -> bool {
        self.owns_exchange(source)
            || match kind {
                DestinationKind::Queue => self.owns_queue(destination),
                DestinationKind::Exchange => self.owns_exchange(destination),
            }
    }

    /// The cascade's own bindings (levels and fall-through), without endpoints.
    pub fn cascade_bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(|b| !b.role.is_endpoint())
    }

    /// The endpoints' bindings: delivery exchange -> endpoint, and endpoint
    /// exchange -> application queue where the topology names one.
    pub fn endpoint_bindings(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(|b| b.role.is_endpoint())
    }
}

#[cfg(test)]
mod tests;
