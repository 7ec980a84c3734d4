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

use std::time::Duration;

use futures::future::join_all;
use indicatif::ProgressBar;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::amqp;
use crate::cascade::{Arguments, Binding, Desired, DestinationKind, Exchange, Queue};
use crate::exit::broker;
use crate::target::Target;
use crate::topology::ArgValue;

/// How many channels a phase is spread over by default: enough to keep the
/// broker's per-channel processes busy in parallel, few enough to open in
/// one round trip.
pub const DEFAULT_LANES: usize = 8;

/// One broker operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    DeclareExchange(Exchange),
    DeclareQueue(Queue),
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
            Operation::DeclareQueue(q) => match q.arguments.get("x-dead-letter-exchange") {
                Some(crate::topology::ArgValue::Str(dlx)) => format!(
                    "needs `configure` on queue {}, `write` on its dead-letter exchange {dlx}",
                    q.name
                ),
                _ => format!("needs `configure` on queue {}", q.name),
            },
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
                let options = QueueDeclareOptions {
                    passive: false,
                    durable: q.durable,
                    exclusive: q.exclusive,
                    auto_delete: q.auto_delete,
                    nowait: false,
                };
                channel
                    .queue_declare(short(&q.name)?, options, field_table(&q.arguments))
                    .await?;
                Ok(None)
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

/// Declarations of every exchange and queue of `desired`: the first phase
/// of a blind install (bindings need their ends, so they come second).
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

/// Which operations go on which lane: round robin, so that every lane gets
/// a share of each kind, and no lane is empty.
pub fn split_into_lanes(count: usize, lanes: usize) -> Vec<Vec<usize>> {
    let lanes = lanes.clamp(1, count.max(1));
    let mut split = vec![Vec::with_capacity(count / lanes + 1); lanes];
    for index in 0..count {
        split[index % lanes].push(index);
    }
    split.retain(|lane| !lane.is_empty());
    split
}

/// Runs `ops` (independent of each other) over `lanes` new channels of
/// `connection` and returns one result per operation, in the same order.
/// Callers run dependent phases one after the other (exchanges and queues,
/// then bindings); a [`Session`] does so without reopening channels.
pub async fn apply(
    connection: &Connection,
    target: &Target,
    ops: &[Operation],
    lanes: usize,
    progress: &ProgressBar,
) -> Vec<OpResult> {
    let mut channels = (0..lanes.max(1)).map(|_| None).collect::<Vec<_>>();
    let results = run_phase(connection, target, &mut channels, ops, progress).await;
    // Callers that apply again and again on one connection (a move binds
    // each new address) would otherwise run into the channel limit.
    join_all(channels.into_iter().flatten().map(|channel| async move {
        let closing = channel.close(200, "OK".into());
        let _ = tokio::time::timeout(target.timeout, closing).await;
    }))
    .await;
    results
}

/// An AMQP connection with its lanes: one channel each, opened together
/// with the connection and kept from one phase to the next unless a
/// refusal closed it.
pub struct Session {
    connection: Connection,
    target: Target,
    channels: Vec<Option<Channel>>,
}

impl Session {
    /// Connects (bounded, exit 3 on failure) and opens `lanes` channels at
    /// once; a channel that fails to open is retried when first needed.
    pub async fn open(target: &Target, lanes: usize) -> anyhow::Result<Session> {
        let connection = amqp::connect(target).await?;
        let channels = join_all((0..lanes.max(1)).map(|_| amqp::open_channel(&connection, target)))
            .await
            .into_iter()
            .map(Result::ok)
            .collect();
        Ok(Session {
            connection,
            target: target.clone(),
            channels,
        })
    }

    /// Runs one phase; see [`apply`].
    pub async fn apply(&mut self, ops: &[Operation], progress: &ProgressBar) -> Vec<OpResult> {
        let lanes = self.channels.len();
        self.apply_on_lanes(ops, lanes, progress).await
    }

    /// Runs one phase on the first `lanes` channels only (1: in order).
    pub async fn apply_on_lanes(
        &mut self,
        ops: &[Operation],
        lanes: usize,
        progress: &ProgressBar,
    ) -> Vec<OpResult> {
        let lanes = lanes.clamp(1, self.channels.len());
        run_phase(
            &self.connection,
            &self.target,
            &mut self.channels[..lanes],
            ops,
            progress,
        )
        .await
    }

    pub async fn close(self) {
        amqp::close(&self.connection, &self.target).await;
    }
}

async fn run_phase(
    connection: &Connection,
    target: &Target,
    channels: &mut [Option<Channel>],
    ops: &[Operation],
    progress: &ProgressBar,
) -> Vec<OpResult> {
    let split = split_into_lanes(ops.len(), channels.len());
    let answered = join_all(
        channels
            .iter_mut()
            .zip(split)
            .map(|(channel, lane)| run_lane(connection, target, channel, ops, lane, progress)),
    )
    .await;
    let mut results = vec![None; ops.len()];
    for (index, result) in answered.into_iter().flatten() {
        results[index] = Some(result);
    }
    results
        .into_iter()
        .map(|result| result.expect("every lane answers for each of its operations"))
        .collect()
}

/// Runs one lane's operations, pipelined on its channel; after a refusal
/// the unanswered rest goes again on a new channel.
async fn run_lane(
    connection: &Connection,
    target: &Target,
    slot: &mut Option<Channel>,
    ops: &[Operation],
    mut pending: Vec<usize>,
    progress: &ProgressBar,
) -> Vec<(usize, OpResult)> {
    let mut results = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let reusable = slot.take().filter(|c| c.status().connected());
        let channel = match reusable {
            Some(channel) => channel,
            None => match amqp::open_channel(connection, target).await {
                Ok(channel) => channel,
                Err(error) => {
                    let reason = format!("{error:#}");
                    progress.inc(pending.len() as u64);
                    results.extend(pending.drain(..).map(|index| {
                        let reason = reason.clone();
                        (index, OpResult::Unanswered { reason })
                    }));
                    break;
                }
            },
        };
        // join_all polls every future once before awaiting any: each sends
        // its frame on that first poll, so the whole lane is in flight.
        let answers = join_all(
            pending
                .iter()
                .map(|&index| tokio::time::timeout(target.timeout, ops[index].run(&channel))),
        )
        .await;

        let mut rerun = Vec::new();
        let mut channel_closed = false;
        let mut lane_broken: Option<String> = None;
        for (&index, answer) in pending.iter().zip(answers) {
            let result = match answer {
                Ok(Ok(messages)) => OpResult::Done { messages },
                _ if channel_closed => {
                    rerun.push(index);
                    continue;
                }
                _ if lane_broken.is_some() => OpResult::Unanswered {
                    reason: lane_broken.clone().unwrap_or_default(),
                },
                Ok(Err(Failure::Unsendable(text))) => OpResult::Refused { code: None, text },
                Ok(Err(Failure::Broker(error))) => match amqp::channel_refusal_code(&error) {
                    Some(code) => {
                        channel_closed = true;
                        let mut text = amqp::describe(target, &error);
                        if code == 403 {
                            text.push_str(&format!(" [{}]", ops[index].permission_needed()));
                        }
                        OpResult::Refused {
                            code: Some(code),
                            text,
                        }
                    }
                    None => {
                        let reason = amqp::describe(target, &error);
                        lane_broken = Some(reason.clone());
                        OpResult::Unanswered { reason }
                    }
                },
                Err(_elapsed) => {
                    let reason = no_answer(target, target.timeout);
                    lane_broken = Some(reason.clone());
                    OpResult::Unanswered { reason }
                }
            };
            progress.inc(1);
            results.push((index, result));
        }
        if !channel_closed && lane_broken.is_none() {
            *slot = Some(channel);
        }
        pending = rerun;
    }
    results
}

fn no_answer(target: &Target, timeout: Duration) -> String {
    format!(
        "no answer from {} within {}",
        target.amqp_display(),
        amqp::seconds(timeout)
    )
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
