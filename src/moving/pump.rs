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
//! requeues unacknowledged deliveries when the connection dies). A message
//! that comes back after it landed (its acknowledgement was lost) is
//! recognised by its identity and acknowledged without publishing it again.
//! When the source connection dies, the settler still collects the confirms
//! on its way, so that what landed is known when it comes back. A stop
//! request (SIGINT, SIGTERM) ends the taking; the settler finishes what is in
//! flight, and what the taker held unpublished goes back to its queue. Many
//! publishes are in flight at once, so throughput is not one round trip per
//! message. Messages held by the taker are out of the level's TTL race; the
//! ones still waiting in the queue may expire into the next lower level,
//! which is drained later (levels go from the highest down).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::PublisherConfirm;
use lapin::{BasicProperties, Channel};
use tokio::sync::mpsc;

use crate::amqp::bounded;
use crate::amqp::open_channel;
use crate::exit::broker;
use crate::interrupt::Interrupt;
use crate::moving::broker::close_quietly;
use crate::moving::classify::{classify, Disposition, PoisonReason};
use crate::moving::headers;
use crate::moving::identity::Identity;
use crate::moving::journal::{Journal, Known};
use crate::moving::ledger::{Ledger, Seen};
use crate::moving::routes::Routes;
use crate::moving::watch::Watch;
use crate::moving::{Job, Session};

/// How long the consumer may be quiet before the queue is checked for emptiness.
const IDLE: Duration = Duration::from_millis(250);

/// Where a message is being published.
#[derive(Debug)]
pub(super) enum Outbound {
    Move {
        exchange: String,
        routing_key: String,
        delivered_now: bool,
    },
    Poison(PoisonReason),
    /// It landed already (this run, or an earlier one says the journal):
    /// acknowledged without publishing.
    Skip,
}

/// A message handed to the settler: published but not yet confirmed (or
/// skipped), with what is needed to poison it if the target refuses it.
pub(super) struct InFlight {
    pub delivery_tag: u64,
    pub level: u8,
    pub identity: Option<Identity>,
    pub outbound: Outbound,
    /// `None` for a skipped message: nothing was published.
    pub confirm: Option<PublisherConfirm>,
    pub data: Vec<u8>,
    pub properties: BasicProperties,
    pub routing_key: String,
}

/// How a pass ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassEnd {
    /// Every level given was drained as far as the scan saw.
    Drained,
    /// A stop was requested: taking ended, what was in flight is settled.
    Stopped,
}

/// What the taker and the settler share.
pub struct Pump<'a> {
    pub job: &'a Job,
    pub session: &'a Session,
    pub ledger: &'a Mutex<Ledger>,
    pub journal: Option<&'a Journal>,
    pub watch: &'a Watch,
    pub interrupt: &'a Interrupt,
}

impl Pump<'_> {
    /// One pass: drains each `(level, ready messages seen by the scan)` in
    /// the order given; once that many have arrived a level is done for this
    /// pass (later arrivals wait for the next one).
    pub async fn pass(&self, levels: &[(u8, u64)], routes: &mut Routes) -> Result<PassEnd> {
        let (handover, settling) = mpsc::channel(usize::from(self.job.prefetch));
        let take = async move {
            for &(level, expected) in levels {
                if self.drain(level, expected, routes, &handover).await? == PassEnd::Stopped {
                    return Ok::<_, anyhow::Error>(PassEnd::Stopped);
                }
            }
            Ok(PassEnd::Drained)
            // `handover` goes here: the settler finishes what it holds, then ends.
        };
        // Not try_join: when taking fails, the settler still collects the
        // confirms already on their way.
        let (taken, settled) = tokio::join!(take, self.settle(settling));
        // The settler's failure (the target) explains the taker's ("the settler stopped").
        settled?;
        let end = taken?;
        if end == PassEnd::Stopped && !self.job.dry_run {
            // Deliveries the taker held but never handed over go back to
            // their queue now, so that the closing count sees them.
            bounded(
                &self.job.from.broker,
                "handing back the messages not moved",
                self.session.taker.basic_nack(
                    0,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                ),
            )
            .await?;
        }
        Ok(end)
    }

    async fn drain(
        &self,
        level: u8,
        expected: u64,
        routes: &mut Routes,
        handover: &mpsc::Sender<InFlight>,
    ) -> Result<PassEnd> {
        let from = &self.job.from.broker;
        let queue = self.job.from.cascade.level_name(level);
        if self.interrupt.requested().is_some() {
            return Ok(PassEnd::Stopped);
        }
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
        let end = self
            .take(level, expected, consumer, channel, routes, handover)
            .await?;
        if let Some(channel) = own {
            close_quietly(channel).await;
        }
        Ok(end)
    }

    async fn take(
        &self,
        level: u8,
        expected: u64,
        mut consumer: lapin::Consumer,
        channel: &Channel,
        routes: &mut Routes,
        handover: &mpsc::Sender<InFlight>,
    ) -> Result<PassEnd> {
        let from = &self.job.from.broker;
        let queue = self.job.from.cascade.level_name(level);
        let (mut received, mut cancelled) = (0u64, false);
        let mut interrupt = self.interrupt.clone();
        loop {
            let wait = if cancelled { from.timeout } else { IDLE };
            let next = tokio::select! {
                biased;
                _ = interrupt.wait(), if !cancelled => {
                    bounded(
                        from,
                        &format!("cancelling the consumer of queue {queue}"),
                        channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
                    )
                    .await?;
                    return Ok(PassEnd::Stopped);
                }
                next = tokio::time::timeout(wait, consumer.next()) => next,
            };
            let drained = match next {
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
                Ok(None) => return Ok(PassEnd::Drained),
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
        let identity = Identity::of(
            delivery.properties.message_id().as_ref(),
            headers,
            &delivery.data,
        );
        let known = match (&identity, self.journal) {
            (Some(identity), Some(journal)) => journal.known(identity),
            _ => Known::Unknown,
        };
        let seen = self.ledger.lock().expect("ledger lock").received(
            identity.as_ref(),
            delivery.redelivered,
            known,
        );
        let outbound = if seen != Seen::New {
            Outbound::Skip
        } else {
            self.outbound(&delivery, routes).await?
        };
        if job.dry_run {
            self.record(level, identity, &outbound);
            return Ok(());
        }
        if let (Some(journal), Some(identity), false) =
            (self.journal, &identity, matches!(outbound, Outbound::Skip))
        {
            journal.publishing(identity)?;
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
                Some(
                    self.publish(exchange, routing_key, &delivery.data, properties)
                        .await?,
                )
            }
            Outbound::Poison(reason) => Some(
                self.publish_poison(
                    level,
                    &delivery.data,
                    &delivery.properties,
                    source_key,
                    reason,
                )
                .await?,
            ),
            Outbound::Skip => None,
        };
        let routing_key = source_key.to_string();
        handover
            .send(InFlight {
                delivery_tag: delivery.delivery_tag,
                level,
                identity,
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

    /// Where a new message goes: its place in the target cascade, or the
    /// poison queue with the reason.
    async fn outbound(&self, delivery: &Delivery, routes: &mut Routes) -> Result<Outbound> {
        let job = self.job;
        Ok(
            match classify(
                delivery.routing_key.as_str(),
                delivery.properties.headers().as_ref(),
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
            },
        )
    }

    pub(super) async fn publish(
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

    pub(super) async fn publish_poison(
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
