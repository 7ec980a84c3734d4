//! Drains the source level queues into the target cascade without losing a
//! message. Two halves run side by side for a whole pass over the levels:
//!
//! - the taker consumes one level after the other (highest first) with manual
//!   acknowledgement and a bounded prefetch, decides each message's fate,
//!   publishes it (mandatory, publisher confirms) and hands it over, in
//!   delivery order;
//! - the settler waits for each confirm in that order; a nack or a return
//!   sends the message to the poison queue instead (and waits for that
//!   confirm); only then is the source delivery acknowledged, with one
//!   multiple ack for a run of settled messages. Settling in delivery-tag
//!   order is what makes a multiple ack safe, and lets the taker start on the
//!   next level while the last confirms of the previous one are on their way.
//!
//! Nothing is acknowledged before it is safe elsewhere, so a crash at any
//! point leaves every unsettled message in the source queue (the broker
//! requeues unacknowledged deliveries when the connection dies). Many
//! publishes are in flight at once, so throughput is not one round trip per
//! message. Messages held by the taker are out of the level's TTL race; the
//! ones still waiting in the queue may expire into the next lower level,
//! which is drained later (levels go from the highest down).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use futures::StreamExt;
use indicatif::ProgressBar;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::mpsc;

use crate::amqp::bounded;
use crate::amqp::open_channel;
use crate::exit::broker;
use crate::moving::broker::close_quietly;
use crate::moving::classify::{classify, Disposition, PoisonReason};
use crate::moving::headers;
use crate::moving::ledger::Ledger;
use crate::moving::routes::Routes;
use crate::moving::{Job, Session};

/// How long the consumer may be quiet before the queue is checked for emptiness.
const IDLE: Duration = Duration::from_millis(250);
/// At most this many deliveries are acknowledged by one multiple ack.
const ACK_BATCH: usize = 256;

/// Where a message is being published.
#[derive(Debug)]
enum Outbound {
    Move {
        exchange: String,
        routing_key: String,
        delivered_now: bool,
    },
    Poison(PoisonReason),
}

/// A message published but not yet confirmed, with what is needed to poison
/// it if the target refuses it.
struct InFlight {
    delivery_tag: u64,
    level: u8,
    id: Option<String>,
    outbound: Outbound,
    confirm: PublisherConfirm,
    data: Vec<u8>,
    properties: BasicProperties,
    routing_key: String,
}

/// What the taker and the settler share.
pub struct Pump<'a> {
    pub job: &'a Job,
    pub session: &'a Session,
    pub ledger: &'a Mutex<Ledger>,
    pub bar: &'a ProgressBar,
}

impl Pump<'_> {
    /// One pass: drains each `(level, ready messages seen by the scan)` in
    /// the order given; once that many have arrived a level is done for this
    /// pass (later arrivals wait for the next one).
    pub async fn pass(&self, levels: &[(u8, u64)], routes: &mut Routes) -> Result<()> {
        let (handover, settling) = mpsc::channel(usize::from(self.job.prefetch));
        let take = async move {
            for &(level, expected) in levels {
                self.drain(level, expected, routes, &handover).await?;
            }
            Ok(())
        };
        tokio::try_join!(take, self.settle(settling))?;
        Ok(())
    }

    async fn drain(
        &self,
        level: u8,
        expected: u64,
        routes: &mut Routes,
        handover: &mpsc::Sender<InFlight>,
    ) -> Result<()> {
        let from = &self.job.from.broker;
        let queue = self.job.from.cascade.level_name(level);
        // A dry run holds every message unacknowledged on a channel of its
        // own, and closing that channel hands them all back to the queue.
        let own = if self.job.dry_run {
            Some(open_channel(&self.session.from, from).await?)
        } else {
            None
        };
        let channel = own.as_ref().unwrap_or(&self.session.taker);
        // Exclusive: a second run on the same cascade fails instead of racing this one.
        let consumer = bounded(
            from,
            &format!("consuming from queue {queue}"),
            channel.basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        self.take(level, expected, consumer, channel, routes, handover)
            .await?;
        if let Some(channel) = own {
            close_quietly(channel).await;
        }
        Ok(())
    }

    async fn take(
        &self,
        level: u8,
        expected: u64,
        mut consumer: lapin::Consumer,
        channel: &Channel,
        routes: &mut Routes,
        handover: &mpsc::Sender<InFlight>,
    ) -> Result<()> {
        let from = &self.job.from.broker;
        let queue = self.job.from.cascade.level_name(level);
        let (mut received, mut cancelled) = (0u64, false);
        loop {
            let wait = if cancelled { from.timeout } else { IDLE };
            let drained = match tokio::time::timeout(wait, consumer.next()).await {
                Ok(Some(Ok(delivery))) => {
                    received += 1;
                    self.take_one(level, delivery, routes, handover).await?;
                    // All the scan saw: what arrived since waits for the next pass.
                    received == expected
                }
                Ok(Some(Err(error))) => {
                    return Err(broker(format!(
                        "consuming from queue {queue}: {}",
                        crate::amqp::describe(from, &error)
                    )))
                }
                // The consumer is cancelled (by us, or the queue was deleted).
                Ok(None) => return Ok(()),
                Err(_) if cancelled => {
                    return Err(broker(format!(
                        "queue {queue}: the consumer was not cancelled within {}",
                        crate::amqp::seconds(from.timeout)
                    )))
                }
                // Quiet for a while (fewer messages than the scan saw: some
                // expired into the next level): maybe the queue is empty.
                Err(_) => self.ready_now(queue, channel).await? == 0,
            };
            if drained && !cancelled {
                bounded(
                    from,
                    &format!("cancelling the consumer of queue {queue}"),
                    channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
                )
                .await?;
                cancelled = true;
            }
        }
    }

    /// Ready messages in the queue being drained.
    async fn ready_now(&self, queue: &str, channel: &Channel) -> Result<u32> {
        let declared = bounded(
            &self.job.from.broker,
            &format!("counting the messages of queue {queue}"),
            channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ),
        )
        .await?;
        Ok(declared.message_count())
    }

    /// Decides one message's fate and publishes it (a dry run only counts it).
    async fn take_one(
        &self,
        level: u8,
        delivery: Delivery,
        routes: &mut Routes,
        handover: &mpsc::Sender<InFlight>,
    ) -> Result<()> {
        let job = self.job;
        let headers = delivery.properties.headers().as_ref();
        let id = headers::message_id(delivery.properties.message_id().as_ref(), headers);
        self.ledger
            .lock()
            .expect("ledger lock")
            .received(id.as_deref(), delivery.redelivered);
        let outbound = match classify(
            delivery.routing_key.as_str(),
            headers,
            &job.from.cascade,
            &job.to.cascade,
            now_micros(),
        ) {
            Disposition::Move {
                address,
                delay_seconds,
                route,
            } => match routes
                .ensure(&job.to.broker, &self.session.to, &address)
                .await?
            {
                Ok(()) => Outbound::Move {
                    exchange: route.exchange,
                    routing_key: route.routing_key,
                    delivered_now: delay_seconds == 0,
                },
                Err(reason) => Outbound::Poison(reason),
            },
            Disposition::Poison(reason) => Outbound::Poison(reason),
        };
        if job.dry_run {
            self.record(level, id, &outbound);
            return Ok(());
        }
        let source_key = delivery.routing_key.as_str();
        let confirm = match &outbound {
            Outbound::Move {
                exchange,
                routing_key,
                ..
            } => {
                let properties = match headers {
                    Some(h) => delivery
                        .properties
                        .clone()
                        .with_headers(headers::without_bookkeeping(h)),
                    None => delivery.properties.clone(),
                };
                self.publish(exchange, routing_key, &delivery.data, properties)
                    .await?
            }
            Outbound::Poison(reason) => {
                self.publish_poison(
                    level,
                    &delivery.data,
                    &delivery.properties,
                    source_key,
                    reason,
                )
                .await?
            }
        };
        let routing_key = source_key.to_string();
        handover
            .send(InFlight {
                delivery_tag: delivery.delivery_tag,
                level,
                id,
                outbound,
                confirm,
                data: delivery.data,
                properties: delivery.properties,
                routing_key,
            })
            .await
            .map_err(|_| broker("the settler stopped"))?;
        Ok(())
    }

    async fn settle(&self, mut settling: mpsc::Receiver<InFlight>) -> Result<()> {
        let from = &self.job.from.broker;
        while let Some(first) = settling.recv().await {
            let mut last_tag = self.settle_one(first).await?;
            for _ in 1..ACK_BATCH {
                match settling.try_recv() {
                    Ok(next) => last_tag = self.settle_one(next).await?,
                    Err(_) => break,
                }
            }
            bounded(
                from,
                "acknowledging source messages",
                self.session
                    .taker
                    .basic_ack(last_tag, BasicAckOptions { multiple: true }),
            )
            .await?;
        }
        Ok(())
    }

    /// Waits until one message is safe in the target or the poison queue.
    async fn settle_one(&self, item: InFlight) -> Result<u64> {
        let to = &self.job.to.broker;
        let confirmation = bounded(to, "waiting for the target's confirm", item.confirm).await?;
        let exchange = match &item.outbound {
            Outbound::Move { exchange, .. } => exchange.clone(),
            Outbound::Poison(_) => String::new(),
        };
        let refused = match confirmation {
            Confirmation::Ack(None) => None,
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Some(PoisonReason::Unroutable {
                    exchange,
                    reply: format!("{} {}", returned.reply_code, returned.reply_text),
                })
            }
            Confirmation::Nack(None) => Some(PoisonReason::Refused { exchange }),
            Confirmation::NotRequested => {
                return Err(broker("publisher confirms are off on the target channel"))
            }
        };
        let outbound = match (item.outbound, refused) {
            (outbound, None) => outbound,
            (Outbound::Move { .. }, Some(reason)) => {
                let poison = self
                    .publish_poison(
                        item.level,
                        &item.data,
                        &item.properties,
                        &item.routing_key,
                        &reason,
                    )
                    .await?;
                self.expect_landed(
                    bounded(to, "waiting for the poison queue's confirm", poison).await?,
                )?;
                Outbound::Poison(reason)
            }
            (Outbound::Poison(_), Some(reason)) => {
                return Err(broker(format!(
                    "the poison queue {} did not take a message: {reason}",
                    self.job.poison_queue
                )))
            }
        };
        self.record(item.level, item.id, &outbound);
        Ok(item.delivery_tag)
    }

    fn expect_landed(&self, confirmation: Confirmation) -> Result<()> {
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            other => Err(broker(format!(
                "the poison queue {} did not take a message: {other:?}",
                self.job.poison_queue
            ))),
        }
    }

    fn record(&self, level: u8, id: Option<String>, outbound: &Outbound) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        match outbound {
            Outbound::Move { delivered_now, .. } => ledger.moved(level, id, *delivered_now),
            Outbound::Poison(reason) => ledger.poisoned(level, id, reason.kind()),
        }
        let total = ledger.total();
        drop(ledger);
        self.bar.inc(1);
        self.bar.set_message(format!(
            "moved {}, poisoned {}, {:.0} msg/s",
            total.moved,
            total.poisoned,
            self.bar.per_sec()
        ));
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        data: &[u8],
        properties: BasicProperties,
    ) -> Result<PublisherConfirm> {
        bounded(
            &self.job.to.broker,
            &format!("publishing to exchange {exchange}"),
            self.session.publisher.basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                data,
                properties,
            ),
        )
        .await
    }

    async fn publish_poison(
        &self,
        level: u8,
        data: &[u8],
        properties: &BasicProperties,
        routing_key: &str,
        reason: &PoisonReason,
    ) -> Result<PublisherConfirm> {
        let headers = headers::with_poison_headers(
            properties.headers().as_ref(),
            &reason.to_string(),
            self.job.from.cascade.level_name(level),
            routing_key,
        );
        self.publish(
            "",
            &self.job.poison_queue,
            data,
            properties.clone().with_headers(headers),
        )
        .await
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
