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
//!
//! A message larger than the target takes (`size_limit`) is not published:
//! it is handed over as kept, held unacknowledged until the pass ends, and
//! then given back to its queue. From the first kept message on, the settler
//! acknowledges one message at a time, so that no multiple ack covers it.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use lapin::message::Delivery;
use lapin::options::{BasicNackOptions, BasicPublishOptions};
use lapin::BasicProperties;
use lapin::PublisherConfirm;
use tokio::sync::{mpsc, watch};

use crate::amqp::bounded;
use crate::exit::broker;
use crate::interrupt::Interrupt;
use crate::moving::classify::{classify, Disposition, PoisonReason};
use crate::moving::headers;
use crate::moving::identity::Identity;
use crate::moving::journal::{Journal, Known};
use crate::moving::ledger::{Ledger, Seen};
use crate::moving::routes::Routes;
use crate::moving::size_limit::SizeLimit;
use crate::moving::watch::Watch;
use crate::moving::{Job, Session};

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
    /// Too large for the target: not published, held until the pass ends
    /// and then given back to its source queue.
    Keep,
}

/// A message handed to the settler: published but not yet confirmed (or
/// skipped), with what is needed to poison it if the target refuses it.
pub(super) struct InFlight {
    pub delivery_tag: u64,
    pub level: u8,
    pub identity: Option<Identity>,
    pub outbound: Outbound,
    /// `None` for a skipped or kept message: nothing was published.
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
    pub size_limit: &'a SizeLimit,
    /// The staging exchange moved messages are published to, and where the
    /// collector tells the releaser each one's landing is journaled.
    pub staging: Option<(
        &'a crate::moving::staging::Staging,
        &'a mpsc::UnboundedSender<Option<Identity>>,
    )>,
}

/// The taker's end of a pass's hand-over to the settler.
pub(super) struct Handover {
    to_settler: mpsc::Sender<InFlight>,
    /// The delivery tag the settler settled last.
    settled: watch::Receiver<Option<u64>>,
    /// The delivery tag acknowledged at the source (or kept) last.
    acknowledged: watch::Receiver<Option<u64>>,
    /// The delivery tag handed over last.
    last: Option<u64>,
    /// Messages kept (too large) in this pass.
    kept: u64,
}

impl Handover {
    async fn send(&mut self, item: InFlight) -> Result<()> {
        let tag = item.delivery_tag;
        self.to_settler
            .send(item)
            .await
            .map_err(|_| broker("the settler stopped"))?;
        self.last = Some(tag);
        Ok(())
    }

    /// Waits until everything handed over is acknowledged at the source
    /// (or kept): the consumer that took it holds none of it any more.
    pub(super) async fn acknowledged(&mut self) -> Result<()> {
        reached(&mut self.acknowledged, self.last).await
    }

    /// Waits until the settler has settled everything handed over.
    async fn settled(&mut self) -> Result<()> {
        reached(&mut self.settled, self.last).await
    }
}

/// Waits until `progress` (a delivery tag) reaches `last`, if anything was handed over.
async fn reached(progress: &mut watch::Receiver<Option<u64>>, last: Option<u64>) -> Result<()> {
    let Some(last) = last else {
        return Ok(());
    };
    progress
        .wait_for(|done| done.is_some_and(|tag| tag >= last))
        .await
        .map(|_| ())
        .map_err(|_| broker("the settler stopped"))
}

impl Pump<'_> {
    /// One pass: drains each `(level, ready messages seen by the scan)` in
    /// the order given; once that many have arrived a level is done for this
    /// pass (later arrivals wait for the next one).
    pub async fn pass(&self, levels: &[(u8, u64)], routes: &mut Routes) -> Result<PassEnd> {
        let (to_settler, settling) = mpsc::channel(usize::from(self.job.prefetch));
        let (collected, settled) = watch::channel(None);
        let (acknowledging, acknowledged) = watch::channel(None);
        let mut handover = Handover {
            to_settler,
            settled,
            acknowledged,
            last: None,
            kept: 0,
        };
        let take = async move {
            let mut end = PassEnd::Drained;
            for &(level, expected) in levels {
                end = self.drain(level, expected, routes, &mut handover).await?;
                if end == PassEnd::Stopped {
                    break;
                }
            }
            Ok::<_, anyhow::Error>((end, handover.kept))
            // `handover` goes here: the settler finishes what it holds, then ends.
        };
        // Not try_join: when taking fails, the settler still collects the
        // confirms already on their way.
        let (taken, settled) = tokio::join!(take, self.settle(settling, collected, acknowledging));
        // The settler's failure (the target) explains the taker's ("the settler stopped").
        settled?;
        let (end, kept) = taken?;
        if (end == PassEnd::Stopped || kept > 0) && !self.job.dry_run {
            // Deliveries the taker held but never handed over, and the kept
            // ones, go back to their queue now (everything else is
            // acknowledged), so that the closing count sees them.
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

    /// Decides one message's fate and publishes it (a dry run only counts
    /// it); `true` when it is kept in the source, too large for the target.
    pub(super) async fn take_one(
        &self,
        level: u8,
        delivery: Delivery,
        routes: &mut Routes,
        handover: &mut Handover,
    ) -> Result<bool> {
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
        let size = delivery.data.len();
        let outbound = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            if !ledger.landed(identity.as_ref(), known) && self.size_limit.too_large(size) {
                Some(Outbound::Keep)
            } else if ledger.received(identity.as_ref(), delivery.redelivered, known) != Seen::New {
                Some(Outbound::Skip)
            } else {
                None
            }
        };
        let outbound = match outbound {
            Some(outbound) => outbound,
            None => self.outbound(&delivery, routes).await?,
        };
        let kept = matches!(outbound, Outbound::Keep);
        if job.dry_run {
            self.record(level, identity, &outbound);
            return Ok(kept);
        }
        let publishing = !matches!(outbound, Outbound::Skip | Outbound::Keep);
        if let (Some(journal), Some(identity), true) = (self.journal, &identity, publishing) {
            journal.publishing(identity)?;
        }
        let fenced = publishing && self.size_limit.fenced(size);
        if fenced {
            handover.settled().await?;
        }
        let source_key = delivery.routing_key.as_str();
        let confirm = match &outbound {
            Outbound::Move {
                exchange,
                routing_key,
                ..
            } => Some(
                self.publish(
                    exchange,
                    routing_key,
                    &delivery.data,
                    moved_properties(&delivery.properties),
                )
                .await?,
            ),
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
            Outbound::Skip | Outbound::Keep => None,
        };
        let routing_key = source_key.to_string();
        let published = confirm.is_some();
        let handed = handover
            .send(InFlight {
                delivery_tag: delivery.delivery_tag,
                level,
                identity,
                outbound,
                confirm,
                // A kept message's body is not needed again.
                data: if kept { Vec::new() } else { delivery.data },
                properties: delivery.properties,
                routing_key,
            })
            .await;
        if let Err(error) = handed {
            // The settler stopped: nobody waits for this publish's confirm.
            if published {
                self.in_doubt(identity);
            }
            return Err(error);
        }
        handover.kept += u64::from(kept);
        if fenced {
            // Nothing follows a fenced publish until its confirm.
            handover.settled().await?;
        }
        Ok(kept)
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
                        exchange: match self.staging {
                            Some((staging, _)) => staging.exchange().to_string(),
                            None => route.exchange,
                        },
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

/// A message's properties as it is published to the target: without the
/// source's bookkeeping headers.
pub(super) fn moved_properties(properties: &BasicProperties) -> BasicProperties {
    match properties.headers() {
        Some(h) => properties
            .clone()
            .with_headers(headers::without_bookkeeping(h)),
        None => properties.clone(),
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
