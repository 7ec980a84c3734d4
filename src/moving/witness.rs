//! The target's own record of what a move landed: closes the window the
//! journal cannot (a publish the target took whose confirm the process
//! never saw, because it was killed or the connection died).
//!
//! Each move has a witness in the target vhost: a fanout exchange and a
//! queue of one name, `delaytopo.move-witness.<the journal's key>`. The
//! exchange is bound to the witness queue and to the target cascade's
//! highest level exchange. A message is published to the witness exchange
//! with its cascade routing key: the one publish is routed to its level
//! queue (down the cascade from the top, as from its own level's exchange,
//! since a key's bits above its level are 0) and to the witness queue at
//! once, so the witness holds a copy of exactly what landed.
//!
//! Before a session takes anything, the witness is read to its end (a
//! marker published behind whatever it holds): every identity in it landed,
//! and is written to the journal as such. A witnessed publish the witness
//! does not hold did not land. Once everything published is confirmed and
//! journaled (at the end of each level, and every `PURGE_EVERY` messages),
//! the witness is purged; a run that ends removes it. A killed run leaves it
//! for the next run, which reads it first.
//!
//! Only into the cascade: the copy and the witness's must be two queues of
//! one kind, or the process's death can keep one and lose the other (seen:
//! a classic endpoint queue kept a message whose quorum witness copy was
//! lost). A message due now goes to its endpoint (a queue of any kind, or
//! an exchange that may route nowhere, which only a `mandatory` return
//! tells): it is published straight to its level exchange, and in doubt to
//! the next run if its confirm never comes.
//!
//! A publish the target refuses (a nack) may still have left a copy in one
//! of the two queues: a refused publish's copy proves nothing, and the
//! retry may land the message twice (counted as a possible duplicate).

use std::collections::HashSet;

use anyhow::Result;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

use crate::amqp::{bounded, open_channel};
use crate::cascade::Desired;
use crate::exit::broker;
use crate::moving::broker::{close_quietly, queue_exists};
use crate::moving::identity::Identity;
use crate::moving::journal::Known;
use crate::moving::{Session, Shared};
use crate::target::Target;
use crate::topology::QueueType;

/// The names of witnesses: the prefix, then the journal's 16 hex digits.
pub const PREFIX: &str = "delaytopo.move-witness.";
/// A marker's `type` property: it ends a reading of the witness.
const MARKER_TYPE: &str = "delaytopo.witness-marker";
/// Witnessed messages between two purges, at most: bounds the copies the
/// target holds twice while a large level is moved.
pub const PURGE_EVERY: u64 = 20_000;
/// Witness copies delivered at once while it is read.
const READ_PREFETCH: u16 = 1000;

#[derive(Debug, Clone)]
pub struct Witness {
    /// The exchange's and the queue's name.
    pub name: String,
    /// The target cascade's highest level exchange.
    top_exchange: String,
    queue_type: QueueType,
}

impl Witness {
    pub fn new(journal_key: &str, target: &Desired) -> Witness {
        Witness {
            name: format!("{PREFIX}{journal_key}"),
            top_exchange: target.exchanges[0].name.clone(),
            queue_type: target.queue_type,
        }
    }

    /// Declares the witness (idempotent); `true` when its queue was there
    /// already (an earlier attempt's copies may be in it).
    pub async fn declare(&self, target: &Target, connection: &Connection) -> Result<bool> {
        let existed = queue_exists(target, connection, &self.name).await?;
        let channel = open_channel(connection, target).await?;
        let name = self.name.as_str();
        let mut arguments = FieldTable::default();
        // Replicated like the cascade it stands beside.
        arguments.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(self.queue_type.as_str().into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let what = |step: &str| format!("{step} the move's witness {name}");
        bounded(
            target,
            &what("declaring"),
            channel.exchange_declare(
                name.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        bounded(
            target,
            &what("declaring"),
            channel.queue_declare(name.into(), durable, arguments),
        )
        .await?;
        bounded(
            target,
            &what("binding"),
            channel.queue_bind(
                name.into(),
                name.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        bounded(
            target,
            &what("binding the cascade to"),
            channel.exchange_bind(
                self.top_exchange.as_str().into(),
                name.into(),
                "".into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        close_quietly(channel).await;
        Ok(existed)
    }

    /// Reads the witness to its end and acknowledges what it read: the
    /// identities of messages that landed in the target. `publisher` is a
    /// channel in confirm mode (for the marker).
    pub async fn read(
        &self,
        target: &Target,
        connection: &Connection,
        publisher: &Channel,
    ) -> Result<Vec<Identity>> {
        let name = self.name.as_str();
        // Unique to this reading: an earlier one's marker may still be there.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let marker = format!("{}-{nanos}", std::process::id());
        let confirm = bounded(
            target,
            &format!("publishing a marker to the move's witness {name}"),
            publisher.basic_publish(
                "".into(),
                name.into(),
                BasicPublishOptions::default(),
                b"",
                BasicProperties::default()
                    .with_type(MARKER_TYPE.into())
                    .with_correlation_id(marker.as_str().into())
                    .with_delivery_mode(2),
            ),
        )
        .await?;
        let what = format!("reading the move's witness {name}");
        let confirmation = bounded(target, &what, confirm).await?;
        if !confirmation.is_ack() {
            return Err(broker(format!(
                "{what}: the marker was refused ({confirmation:?})"
            )));
        }
        let channel = open_channel(connection, target).await?;
        bounded(
            target,
            &what,
            channel.basic_qos(READ_PREFETCH, BasicQosOptions::default()),
        )
        .await?;
        let mut consumer = bounded(
            target,
            &what,
            channel.basic_consume(
                name.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        let mut landed = Vec::new();
        loop {
            let delivery = match tokio::time::timeout(target.timeout, consumer.next()).await {
                Ok(Some(Ok(delivery))) => delivery,
                Ok(Some(Err(error))) => {
                    return Err(broker(format!(
                        "{what}: {}",
                        crate::amqp::describe(target, &error)
                    )))
                }
                Ok(None) => return Err(broker(format!("{what}: the consumer was cancelled"))),
                Err(_) => {
                    return Err(broker(format!(
                        "{what}: its marker did not come back within {}",
                        crate::amqp::seconds(target.timeout)
                    )))
                }
            };
            let properties = &delivery.properties;
            if properties.kind().as_ref().map(|k| k.as_str()) == Some(MARKER_TYPE) {
                // An earlier reading's marker is passed over; ours ends it.
                if properties.correlation_id().as_ref().map(|c| c.as_str()) == Some(marker.as_str())
                {
                    bounded(
                        target,
                        &what,
                        channel
                            .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }),
                    )
                    .await?;
                    close_quietly(channel).await;
                    return Ok(landed);
                }
                continue;
            }
            landed.extend(Identity::of(
                properties.message_id().as_ref(),
                properties.headers().as_ref(),
                &delivery.data,
            ));
        }
    }

    /// Empties the witness: call it only when every publish made so far is
    /// confirmed and journaled.
    pub async fn purge(&self, target: &Target, channel: &Channel) -> Result<()> {
        bounded(
            target,
            &format!("emptying the move's witness {}", self.name),
            channel.queue_purge(self.name.as_str().into(), QueuePurgeOptions::default()),
        )
        .await?;
        Ok(())
    }

    /// Removes the witness at the end of a run (all it held is journaled).
    pub async fn remove(&self, target: &Target, connection: &Connection) -> Result<()> {
        let channel = open_channel(connection, target).await?;
        let what = format!("removing the move's witness {}", self.name);
        bounded(
            target,
            &what,
            channel.exchange_delete(self.name.as_str().into(), ExchangeDeleteOptions::default()),
        )
        .await?;
        bounded(
            target,
            &what,
            channel.queue_delete(self.name.as_str().into(), QueueDeleteOptions::default()),
        )
        .await?;
        close_quietly(channel).await;
        Ok(())
    }
}

impl Shared<'_> {
    /// What the witness holds landed; what was published through it and is
    /// not there did not. Both are written to the journal (and synced)
    /// before the witness is emptied.
    pub(super) async fn read_witness(&self, witness: &Witness, session: &Session) -> Result<()> {
        let to = &self.job.to.broker;
        let journal = self.journal.expect("a witness only beside a journal");
        let lost = !witness.declare(to, &session.to).await?;
        if lost {
            // Its copies went with it (removed by hand, or this is the first
            // run): what earlier runs published through it is in doubt.
            journal.witness_lost();
        }
        let held: HashSet<Identity> = (witness.read(to, &session.to, &session.publisher).await?)
            .into_iter()
            .collect();
        let (fresh, doubtful, not_landed) = {
            let ledger = self.ledger.lock().expect("ledger lock");
            let unknown = held
                .iter()
                .filter(|i| journal.known(i) != Known::Landed && !ledger.landed_this_run(i));
            // Landed, and not known so: their confirm never came. Unless a
            // publish of it was refused (the witness takes its copy even
            // when the level queue refuses): then the copy proves nothing,
            // and it is in doubt if it was published again without a
            // confirm, not landed if not.
            let refuted = |i: &Identity| journal.refuted(i) || ledger.is_refuted(i);
            let (refused, fresh): (Vec<Identity>, Vec<Identity>) =
                unknown.partition(|i| refuted(i));
            let doubtful: Vec<Identity> = refused
                .into_iter()
                .filter(|i| (!lost && journal.is_witnessed(i)) || ledger.is_witnessed_in_doubt(i))
                .collect();
            let earlier = journal.witnessed().filter(|_| !lost);
            let not_landed: Vec<Identity> = (earlier.chain(ledger.witnessed_in_doubt()))
                .filter(|i| !held.contains(i))
                .copied()
                .collect();
            (fresh, doubtful, not_landed)
        };
        for identity in &fresh {
            journal.append(identity)?;
        }
        for identity in &doubtful {
            journal.publishing(identity, false)?;
        }
        for identity in &not_landed {
            journal.not_in_witness(identity)?;
        }
        journal.sync().await?;
        self.ledger
            .lock()
            .expect("ledger lock")
            .witness_read(&fresh, &doubtful);
        witness.purge(to, &session.publisher).await?;
        journal.witness_emptied()
    }
}
