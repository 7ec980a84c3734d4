//! Runs many broker operations at once and answers for each one exactly.
//!
//! A cascade is ~115 operations; waiting for each answer before sending the
//! next costs one round trip apiece. Here the operations of one dependency
//! phase are spread over a few channels ("lanes") and each lane pipelines
//! its operations: all frames go out, then the answers are read in order.
//!
//! A channel-level refusal (403, 404, 405, 406) closes its channel, and the
//! broker ignores everything sent on that channel after the refused method.
//! So in each lane the first refused operation is the culprit; the lane's
//! later operations were never carried out and are run again on a fresh
//! channel. A closed channel is never reused and no operation is left
//! silently undone. A connection-level failure or a timeout leaves the rest
//! unanswered, which callers turn into exit 3.

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::cascade::{
    Arguments, Binding, Desired, DestinationKind, EndpointQueue, Exchange, Queue,
};
use crate::exit::broker;
use crate::topology::ArgValue;

mod lanes;
pub use lanes::{apply, split_into_lanes, Session};

/// How many channels a phase is spread over by default: enough to keep the
/// broker's per-channel processes busy in parallel, few enough to open in
/// one round trip.
pub const DEFAULT_LANES: usize = 8;

/// One broker operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    DeclareExchange(Exchange),
    DeclareQueue(Queue),
    /// An endpoint queue the topology declares (`declare:`).
    DeclareEndpointQueue(EndpointQueue),
    Bind(Binding),
    Unbind(Binding),
    DeleteExchange(String),
    /// A plain delete. Never `if-empty`/`if-unused`: quorum queues answer
    /// those with 540, which closes the whole connection.
    DeleteQueue(String),
    /// Passive declare: fails with 404 when the queue is missing; answers
    /// its ready-message count otherwise.
    InspectQueue(String),
    /// Passive declare: fails with 404 when the exchange is missing.
    InspectExchange(String),
}

/// What became of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The broker did it. `messages`: the count a queue delete or passive
    /// queue declare answered.
    Done { messages: Option<u32> },
    /// The broker refused this operation alone (`code` 403, 404, 405, 406,
    /// with its text, password scrubbed), or, with no code, the operation
    /// could not be sent at all (a name or key longer than AMQP allows).
    Refused { code: Option<u16>, text: String },
    /// No answer: the connection failed or the broker went silent. Exit 3.
    Unanswered { reason: String },
}

impl Operation {
    /// The permission this operation needs, in words: RabbitMQ's refusal
    /// names the entity, the vhost and the user but not always the kind.
    pub fn permission_needed(&self) -> String {
        match self {
            Operation::DeclareExchange(e) => format!("needs `configure` on exchange {}", e.name),
            Operation::DeclareQueue(q) => queue_permission(&q.name, &q.arguments),
            Operation::DeclareEndpointQueue(q) => queue_permission(&q.name, &q.arguments),
            Operation::DeleteExchange(name) => format!("needs `configure` on exchange {name}"),
            Operation::DeleteQueue(name) => format!("needs `configure` on queue {name}"),
            Operation::Bind(b) | Operation::Unbind(b) => format!(
                "needs `write` on {} {} and `read` on exchange {}",
                b.destination_type.as_str(),
                b.destination,
                b.source
            ),
            Operation::InspectQueue(name) => {
                format!("needs `configure` on queue {name} (RabbitMQ 4.3+)")
            }
            Operation::InspectExchange(name) => {
                format!("needs `configure` on exchange {name} (RabbitMQ 4.3+)")
            }
        }
    }
}

/// What declaring queue `name` needs: RabbitMQ checks `write` on its
/// dead-letter exchange when the queue is declared.
fn queue_permission(name: &str, arguments: &Arguments) -> String {
    match arguments.get("x-dead-letter-exchange") {
        Some(ArgValue::Str(dlx)) => {
            format!("needs `configure` on queue {name}, `write` on its dead-letter exchange {dlx}")
        }
        _ => format!("needs `configure` on queue {name}"),
    }
}

impl OpResult {
    pub fn is_done(&self) -> bool {
        matches!(self, OpResult::Done { .. })
    }
}

/// The first connection-level failure among `results`, as an exit-3 error.
pub fn connection_failure(ops: &[Operation], results: &[OpResult]) -> Option<anyhow::Error> {
    ops.iter()
        .zip(results)
        .find_map(|(op, result)| match result {
            OpResult::Unanswered { reason } => Some(broker(format!(
                "{}: {reason}{}",
                op.describe(),
                quorum_disabled_hint(reason)
            ))),
            _ => None,
        })
}

/// What a broker that has quorum queues turned off (`queue_types.quorum.enabled
/// = false`, RabbitMQ 4.2+) means: it answers a quorum declare with a
/// connection error naming the queue type as disabled, which the management
/// API cannot show beforehand.
fn quorum_disabled_hint(reason: &str) -> &'static str {
    let reason = reason.to_lowercase();
    if reason.contains("quorum") && (reason.contains("disabled") || reason.contains("not enabled"))
    {
        " (quorum queues are disabled on this broker, `queue_types.quorum.enabled = false`: \
         enable them, or use `queue_type: classic`)"
    } else {
        ""
    }
}

impl Operation {
    /// What the operation does, naming its entity: "declaring queue `x`".
    pub fn describe(&self) -> String {
        match self {
            Operation::DeclareExchange(e) => format!("declaring exchange `{}`", e.name),
            Operation::DeclareQueue(q) => format!("declaring queue `{}`", q.name),
            Operation::DeclareEndpointQueue(q) => format!("declaring endpoint queue `{}`", q.name),
            Operation::Bind(b) => format!("binding {}", binding_label(b)),
            Operation::Unbind(b) => format!("unbinding {}", binding_label(b)),
            Operation::DeleteExchange(name) => format!("deleting exchange `{name}`"),
            Operation::DeleteQueue(name) => format!("deleting queue `{name}`"),
            Operation::InspectQueue(name) => format!("checking queue `{name}`"),
            Operation::InspectExchange(name) => format!("checking exchange `{name}`"),
        }
    }

    async fn run(&self, channel: &Channel) -> Result<Option<u32>, Failure> {
        match self {
            Operation::DeclareExchange(e) => {
                let options = ExchangeDeclareOptions {
                    passive: false,
                    durable: e.durable,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    nowait: false,
                };
                channel
                    .exchange_declare(
                        short(&e.name)?,
                        exchange_kind(&e.kind),
                        options,
                        field_table(&e.arguments),
                    )
                    .await?;
                Ok(None)
            }
            Operation::DeclareQueue(q) => {
                let flags = (q.durable, q.exclusive, q.auto_delete);
                declare_queue(channel, &q.name, flags, &q.arguments).await
            }
            Operation::DeclareEndpointQueue(q) => {
                let flags = (q.durable, q.exclusive, q.auto_delete);
                declare_queue(channel, &q.name, flags, &q.arguments).await
            }
            Operation::Bind(b) => {
                let (destination, source, key) = binding_names(b)?;
                match b.destination_type {
                    DestinationKind::Queue => {
                        channel
                            .queue_bind(
                                destination,
                                source,
                                key,
                                QueueBindOptions::default(),
                                FieldTable::default(),
                            )
                            .await?
                    }
                    DestinationKind::Exchange => {
                        channel
                            .exchange_bind(
                                destination,
                                source,
                                key,
                                ExchangeBindOptions::default(),
                                FieldTable::default(),
                            )
                            .await?
                    }
                }
                Ok(None)
            }
            Operation::Unbind(b) => {
                let (destination, source, key) = binding_names(b)?;
                match b.destination_type {
                    DestinationKind::Queue => {
                        channel
                            .queue_unbind(destination, source, key, FieldTable::default())
                            .await?
                    }
                    DestinationKind::Exchange => {
                        channel
                            .exchange_unbind(
                                destination,
                                source,
                                key,
                                ExchangeUnbindOptions::default(),
                                FieldTable::default(),
                            )
                            .await?
                    }
                }
                Ok(None)
            }
            Operation::DeleteExchange(name) => {
                channel
                    .exchange_delete(short(name)?, ExchangeDeleteOptions::default())
                    .await?;
                Ok(None)
            }
            Operation::DeleteQueue(name) => {
                let discarded = channel
                    .queue_delete(short(name)?, QueueDeleteOptions::default())
                    .await?;
                Ok(Some(discarded))
            }
            Operation::InspectQueue(name) => {
                let options = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                let queue = channel
                    .queue_declare(short(name)?, options, FieldTable::default())
                    .await?;
                Ok(Some(queue.message_count()))
            }
            Operation::InspectExchange(name) => {
                let options = ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                };
                channel
                    .exchange_declare(
                        short(name)?,
                        ExchangeKind::Topic,
                        options,
                        FieldTable::default(),
                    )
                    .await?;
                Ok(None)
            }
        }
    }
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    (durable, exclusive, auto_delete): (bool, bool, bool),
    arguments: &Arguments,
) -> Result<Option<u32>, Failure> {
    let options = QueueDeclareOptions {
        passive: false,
        durable,
        exclusive,
        auto_delete,
        nowait: false,
    };
    channel
        .queue_declare(short(name)?, options, field_table(arguments))
        .await?;
    Ok(None)
}

/// Declarations of the endpoint exchanges and queues `desired` declares:
/// with the cascade's, before any binding.
pub fn declare_endpoints(desired: &Desired) -> impl Iterator<Item = Operation> + '_ {
    let exchanges = desired.endpoint_exchanges.iter().cloned();
    let queues = desired.endpoint_queues.iter().cloned();
    exchanges
        .map(Operation::DeclareExchange)
        .chain(queues.map(Operation::DeclareEndpointQueue))
}

/// Declarations of every cascade exchange and queue of `desired`: the first
/// phase of a blind install (bindings need their ends, so they come second).
pub fn declare_all(desired: &Desired) -> Vec<Operation> {
    desired
        .exchanges
        .iter()
        .cloned()
        .map(Operation::DeclareExchange)
        .chain(desired.queues.iter().cloned().map(Operation::DeclareQueue))
        .collect()
}

/// `exchange `a` -> queue `b` (key `k`)`.
pub fn binding_label(binding: &Binding) -> String {
    format!(
        "exchange `{}` -> {} `{}` (key `{}`)",
        binding.source,
        binding.destination_type.as_str(),
        binding.destination,
        binding.routing_key
    )
}

/// Why an operation did not complete, before it is classified.
#[derive(Debug)]
enum Failure {
    /// Not sent: AMQP cannot carry the name or key.
    Unsendable(String),
    Broker(lapin::Error),
}

impl From<lapin::Error> for Failure {
    fn from(error: lapin::Error) -> Self {
        Failure::Broker(error)
    }
}

fn short(text: &str) -> Result<ShortString, Failure> {
    ShortString::try_new(text).map_err(|_| {
        Failure::Unsendable(format!(
            "`{text}` is {} bytes long; AMQP allows at most 255",
            text.len()
        ))
    })
}

fn binding_names(b: &Binding) -> Result<(ShortString, ShortString, ShortString), Failure> {
    Ok((
        short(&b.destination)?,
        short(&b.source)?,
        short(&b.routing_key)?,
    ))
}

fn exchange_kind(kind: &str) -> ExchangeKind {
    match kind {
        "topic" => ExchangeKind::Topic,
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "headers" => ExchangeKind::Headers,
        other => ExchangeKind::Custom(other.to_string()),
    }
}

/// Queue or exchange arguments as AMQP sends them. Integers go as 64-bit
/// (`l`): RabbitMQ compares argument types on redeclare, and the management
/// API and definitions imports store JSON numbers the same way.
pub fn field_table(arguments: &Arguments) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        let value = match value {
            ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
            ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            ArgValue::Bool(b) => AMQPValue::Boolean(*b),
        };
        table.insert(ShortString::from(key.as_str()), value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_declare_refused_as_disabled_says_how_to_go_on() {
        let ops = [Operation::DeclareQueue(crate::cascade::Queue {
            name: "nsb.v2.delay-level-00".into(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: Default::default(),
            level: 0,
        })];
        // The broker's words when a queue type is off (rabbit_amqqueue:declare/7).
        let reason = "541 INTERNAL_ERROR - Cannot declare a queue 'queue 'nsb.v2.delay-level-00' \
                      in vhost '/'' of type 'rabbit_quorum_queue' on node 'rabbit@a': the \
                      corresponding feature flag is disabled";
        let results = [OpResult::Unanswered {
            reason: reason.into(),
        }];
        let error = connection_failure(&ops, &results).unwrap().to_string();
        assert!(
            error.contains("`queue_types.quorum.enabled = false`"),
            "{error}"
        );
        let other = [OpResult::Unanswered {
            reason: "connection reset".into(),
        }];
        let error = connection_failure(&ops, &other).unwrap().to_string();
        assert!(!error.contains("quorum queues are disabled"), "{error}");
    }

    #[test]
    fn arguments_keep_their_amqp_types() {
        let arguments = Arguments::from([
            ("x-message-ttl".into(), ArgValue::Int(134_217_728_000)),
            ("x-queue-type".into(), ArgValue::Str("quorum".into())),
            ("x-single-active-consumer".into(), ArgValue::Bool(true)),
        ]);
        let table = field_table(&arguments);
        let inner = table.inner();
        assert_eq!(inner.len(), 3);
        assert_eq!(
            inner.get("x-message-ttl"),
            Some(&AMQPValue::LongLongInt(134_217_728_000))
        );
        assert_eq!(
            inner.get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            inner.get("x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
    }

    #[test]
    fn lanes_share_operations_round_robin() {
        assert_eq!(split_into_lanes(5, 2), vec![vec![0, 2, 4], vec![1, 3]]);
        let split = split_into_lanes(57, 8);
        assert_eq!(split.len(), 8);
        let mut all: Vec<usize> = split.concat();
        all.sort();
        assert_eq!(all, (0..57).collect::<Vec<_>>());
        assert!(split.iter().all(|lane| lane.len() == 7 || lane.len() == 8));
    }

    #[test]
    fn fewer_operations_than_lanes_make_no_empty_lanes() {
        assert_eq!(split_into_lanes(2, 8), vec![vec![0], vec![1]]);
        assert!(split_into_lanes(0, 8).is_empty());
        assert_eq!(split_into_lanes(3, 0), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn names_longer_than_amqp_allows_are_not_sent() {
        let long = "x".repeat(256);
        assert!(
            matches!(short(&long), Err(Failure::Unsendable(text)) if text.contains("256 bytes"))
        );
        assert!(short(&"x".repeat(255)).is_ok());
    }
}
