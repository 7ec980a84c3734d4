//! The broker operations teardown runs, with one answer per operation.
//!
//! Interim: the same interface as the pipelined executor being built for
//! install (`crate::apply`), so teardown switches over by changing one `use`.
//! Here every operation of a concurrent phase gets its own channel, and an
//! ordered phase (`lanes == 1`) runs on one channel, replaced after a refusal.

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
use crate::cascade::{Arguments, Binding, DestinationKind, Exchange};
use crate::target::Target;
use crate::topology::ArgValue;

pub const DEFAULT_LANES: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    DeclareExchange(Exchange),
    Bind(Binding),
    Unbind(Binding),
    DeleteExchange(String),
    /// A plain delete, never `if-empty`/`if-unused` (540 kills the connection).
    DeleteQueue(String),
    /// Passive declare: 404 when missing, the ready count otherwise.
    InspectQueue(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    Done { messages: Option<u32> },
    Refused { code: Option<u16>, text: String },
    Unanswered { reason: String },
}

impl OpResult {
    pub fn is_done(&self) -> bool {
        matches!(self, OpResult::Done { .. })
    }
}

impl Operation {
    pub fn describe(&self) -> String {
        match self {
            Operation::DeclareExchange(e) => format!("declaring exchange `{}`", e.name),
            Operation::Bind(b) => format!("binding {}", binding_label(b)),
            Operation::Unbind(b) => format!("unbinding {}", binding_label(b)),
            Operation::DeleteExchange(name) => format!("deleting exchange `{name}`"),
            Operation::DeleteQueue(name) => format!("deleting queue `{name}`"),
            Operation::InspectQueue(name) => format!("checking queue `{name}`"),
        }
    }

    async fn run(&self, channel: &Channel) -> lapin::Result<Option<u32>> {
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
                        e.name.as_str().into(),
                        exchange_kind(&e.kind),
                        options,
                        field_table(&e.arguments),
                    )
                    .await?;
                Ok(None)
            }
            Operation::Bind(b) => {
                let (destination, source, key) = names(b);
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
                let (destination, source, key) = names(b);
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
                    .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await?;
                Ok(None)
            }
            Operation::DeleteQueue(name) => Ok(Some(
                channel
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await?,
            )),
            Operation::InspectQueue(name) => {
                let options = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                let queue = channel
                    .queue_declare(name.as_str().into(), options, FieldTable::default())
                    .await?;
                Ok(Some(queue.message_count()))
            }
        }
    }
}

pub fn binding_label(binding: &Binding) -> String {
    format!(
        "exchange `{}` -> {} `{}` (key `{}`)",
        binding.source,
        binding.destination_type.as_str(),
        binding.destination,
        binding.routing_key
    )
}

fn names(b: &Binding) -> (ShortString, ShortString, ShortString) {
    (
        b.destination.as_str().into(),
        b.source.as_str().into(),
        b.routing_key.as_str().into(),
    )
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

fn field_table(arguments: &Arguments) -> FieldTable {
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

/// Runs `ops` and answers for each, in order. `lanes == 1`: one after the
/// other on one channel (order matters); otherwise all at once.
pub async fn apply(
    connection: &Connection,
    target: &Target,
    ops: &[Operation],
    lanes: usize,
    progress: &ProgressBar,
) -> Vec<OpResult> {
    if lanes == 1 {
        let mut results = Vec::with_capacity(ops.len());
        let mut channel: Option<Channel> = None;
        for op in ops {
            if channel.is_none() {
                channel = connection.create_channel().await.ok();
            }
            let result = match &channel {
                Some(c) => classify(target, run_bounded(target, op, c).await),
                None => OpResult::Unanswered {
                    reason: "cannot open a channel".into(),
                },
            };
            if !result.is_done() {
                channel = None;
            }
            progress.inc(1);
            results.push(result);
        }
        return results;
    }
    join_all(ops.iter().map(|op| async move {
        let result = match connection.create_channel().await {
            Ok(channel) => classify(target, run_bounded(target, op, &channel).await),
            Err(error) => OpResult::Unanswered {
                reason: amqp::describe(target, &error),
            },
        };
        progress.inc(1);
        result
    }))
    .await
}

async fn run_bounded(
    target: &Target,
    op: &Operation,
    channel: &Channel,
) -> Result<lapin::Result<Option<u32>>, Duration> {
    tokio::time::timeout(target.timeout, op.run(channel))
        .await
        .map_err(|_| target.timeout)
}

fn classify(target: &Target, answer: Result<lapin::Result<Option<u32>>, Duration>) -> OpResult {
    match answer {
        Ok(Ok(messages)) => OpResult::Done { messages },
        Ok(Err(error)) => match amqp::reply_code(&error) {
            Some(code @ 403..=406) => OpResult::Refused {
                code: Some(code),
                text: amqp::describe(target, &error),
            },
            _ => OpResult::Unanswered {
                reason: amqp::describe(target, &error),
            },
        },
        Err(timeout) => OpResult::Unanswered {
            reason: format!("no answer within {}", amqp::seconds(timeout)),
        },
    }
}
