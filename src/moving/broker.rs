//! Small AMQP operations a move needs, each on its own short-lived channel
//! where the broker may refuse it: a refusal (404, 403, 406...) closes the
//! channel it happened on, and the channels that carry messages must not
//! die for a question like "does this queue exist?".

use std::future::Future;

use anyhow::Result;
use indicatif::ProgressBar;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::amqp::{bounded, channel_refusal_code, describe, open_channel};
use crate::apply::{self, OpResult, Operation};
use crate::exit::broker;
use crate::target::Target;
use crate::topology::QueueType;

/// A broker's "no" to one operation: the reply code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub text: String,
}

pub const NOT_FOUND: u16 = 404;

/// Runs `operation` within the target's timeout: `Ok(Err(refusal))` when the
/// broker refused it on this channel, `Err` when the connection or the time
/// failed (the move cannot go on over this connection).
pub async fn refusable<T>(
    target: &Target,
    what: &str,
    operation: impl Future<Output = lapin::Result<T>>,
) -> Result<Result<T, Refusal>> {
    match tokio::time::timeout(target.timeout, operation).await {
        Ok(Ok(value)) => Ok(Ok(value)),
        Ok(Err(error)) => match channel_refusal_code(&error) {
            Some(code) => Ok(Err(Refusal {
                code,
                text: describe(target, &error),
            })),
            None => Err(broker(format!("{what}: {}", describe(target, &error)))),
        },
        Err(_) => Err(broker(format!(
            "{what}: no answer from {} within {}",
            target.amqp_display(),
            crate::amqp::seconds(target.timeout)
        ))),
    }
}

/// Closes a channel that may already have been closed by a refusal.
pub async fn close_quietly(channel: Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "OK".into()).await;
    }
}

/// The number of ready messages in `queue`, or `None` when it does not exist.
pub async fn ready_count(
    target: &Target,
    connection: &Connection,
    queue: &str,
) -> Result<Option<u32>> {
    match passive_queue(target, connection, queue).await? {
        Ok(count) => Ok(Some(count)),
        Err(refusal) if refusal.code == NOT_FOUND => Ok(None),
        Err(refusal) => Err(broker(format!(
            "counting the messages of queue {queue}: {}",
            refusal.text
        ))),
    }
}

/// Whether a queue of that name exists (one another connection holds
/// exclusively counts as existing: it is there, just not usable).
pub async fn queue_exists(target: &Target, connection: &Connection, queue: &str) -> Result<bool> {
    let declared = passive_queue(target, connection, queue).await?;
    Ok(!matches!(declared, Err(r) if r.code == NOT_FOUND))
}

/// A passive declare: the queue's ready count, or the broker's refusal.
async fn passive_queue(
    target: &Target,
    connection: &Connection,
    queue: &str,
) -> Result<Result<u32, Refusal>> {
    let answer = inspect(target, connection, Operation::InspectQueue(queue.into())).await?;
    Ok(answer.map(|messages| messages.unwrap_or(0)))
}

pub async fn exchange_exists(
    target: &Target,
    connection: &Connection,
    exchange: &str,
) -> Result<bool> {
    let declared = inspect(
        target,
        connection,
        Operation::InspectExchange(exchange.into()),
    )
    .await?;
    Ok(!matches!(declared, Err(r) if r.code == NOT_FOUND))
}

/// Runs one passive declare through the executor, on a channel of its own.
async fn inspect(
    target: &Target,
    connection: &Connection,
    operation: Operation,
) -> Result<Result<Option<u32>, Refusal>> {
    let operations = [operation];
    let results = apply::apply(connection, target, &operations, 1, &ProgressBar::hidden()).await;
    if let Some(error) = apply::connection_failure(&operations, &results) {
        return Err(error);
    }
    match results.into_iter().next() {
        Some(OpResult::Done { messages }) => Ok(Ok(messages)),
        Some(OpResult::Refused {
            code: Some(code),
            text,
        }) => Ok(Err(Refusal { code, text })),
        Some(OpResult::Refused { code: None, text }) => {
            Err(broker(format!("{}: {text}", operations[0].describe())))
        }
        _ => Err(broker(format!("{}: no answer", operations[0].describe()))),
    }
}

/// Declares the poison queue unless it exists: a plain durable classic
/// queue, so that nothing about it (TTL, length limit) can drop a message.
pub async fn ensure_poison_queue(
    target: &Target,
    connection: &Connection,
    name: &str,
    queue_type: QueueType,
) -> Result<()> {
    if queue_exists(target, connection, name).await? {
        return Ok(());
    }
    // Of the target cascade's type: next to a quorum cascade it is
    // replicated too, and stays usable when the node that declared it goes
    // down (a classic queue on a node that is down can be neither declared
    // nor published to).
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString(queue_type.as_str().into()),
    );
    let channel = open_channel(connection, target).await?;
    let what = format!("declaring the poison queue {name}");
    let declared = refusable(
        target,
        &what,
        channel.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        ),
    )
    .await?;
    close_quietly(channel).await;
    declared
        .map(|_| ())
        .map_err(|refusal| broker(format!("{what}: {}", refusal.text)))
}

/// Declares an exclusive, auto-delete queue (server-named for ""): it lives
/// as long as the connection, and another connection cannot declare it (405).
pub fn declare_exclusive<'a>(
    channel: &'a Channel,
    name: &str,
) -> impl Future<Output = lapin::Result<lapin::Queue>> + 'a {
    channel.queue_declare(
        name.into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
}

/// Whether two connections reach the same vhost of the same broker, however
/// differently they were addressed (aliases, proxies): a queue declared
/// exclusive on one is visible, but locked (405), from the other.
pub async fn same_vhost(
    one: &Target,
    one_connection: &Connection,
    other: &Target,
    other_connection: &Connection,
) -> Result<bool> {
    let channel = open_channel(one_connection, one).await?;
    let marker = bounded(
        one,
        "declaring a temporary queue",
        declare_exclusive(&channel, ""),
    )
    .await?;
    let seen = passive_queue(other, other_connection, marker.name().as_str()).await?;
    bounded(
        one,
        "deleting the temporary queue",
        channel.queue_delete(marker.name().clone(), Default::default()),
    )
    .await?;
    close_quietly(channel).await;
    Ok(!matches!(seen, Err(r) if r.code == NOT_FOUND))
}
