//! The settling half of a pass, in two tasks side by side:
//!
//! - the collector waits for the target's confirm of each message in
//!   delivery order (a return sends it to the poison queue instead, and
//!   waits for that confirm; a nack is the target's passing state: the
//!   message is published again, and the session reopened if the refusal
//!   lasts) and records what landed, in the ledger and in the journal;
//! - the acknowledger fsyncs the journal, then acknowledges at the source,
//!   with one multiple ack, everything collected so far.
//!
//! Settling in delivery-tag order is what makes a multiple ack safe. A
//! message kept in the source (too large for the target) stays
//! unacknowledged until the pass ends: from the first one on, a multiple ack
//! would cover it, so each later message is acknowledged alone. The
//! fsync never holds up the confirms: while one runs, the collector goes on,
//! and the next fsync and ack cover all it collected meanwhile.
//!
//! When the source connection dies, acknowledging is impossible but the
//! confirms still come: they are collected and recorded, so the messages
//! that come back are recognised. When the target connection dies, the
//! messages whose confirm never came are "in doubt": they may have landed.

use std::time::Duration;

use anyhow::Result;
use lapin::options::BasicAckOptions;
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use tokio::sync::{mpsc, watch};

use crate::amqp::{bounded, describe};
use crate::exit::broker;
use crate::moving::classify::PoisonReason;
use crate::moving::identity::Identity;
use crate::moving::pump::{moved_properties, InFlight, Outbound, Pump};
use crate::moving::size_limit::TooLargeForTarget;

/// The target refused a message (publisher nack) on every quick try: the
/// session is opened again, and the message stays in its source meanwhile.
#[derive(Debug, thiserror::Error)]
#[error(
    "the target refuses messages published to exchange {exchange} (publisher nack: a \
     level queue without a leader, or full with reject-publish)"
)]
pub struct TargetRefusing {
    pub exchange: String,
}

/// A message the collector is done with, for the acknowledger.
#[derive(Debug, Clone, Copy)]
enum Settled {
    /// Safe in the target (or the poison queue), or landed before.
    Landed(u64),
    /// Kept in the source: never to be acknowledged.
    Kept(u64),
}

impl Settled {
    fn tag(self) -> u64 {
        match self {
            Settled::Landed(tag) | Settled::Kept(tag) => tag,
        }
    }
}

impl Pump<'_> {
    /// Settles what the taker hands over; `collected` tells the taker the
    /// last delivery tag settled (for its fences), `acknowledged` the last
    /// one acknowledged at the source or kept (before it cancels a consumer).
    pub(super) async fn settle(
        &self,
        settling: mpsc::Receiver<InFlight>,
        collected: watch::Sender<Option<u64>>,
        acknowledged: watch::Sender<Option<u64>>,
    ) -> Result<()> {
        let (done, acknowledging) = mpsc::unbounded_channel();
        let (collecting, acknowledging) = tokio::join!(
            self.collect(settling, collected, done),
            self.acknowledge(acknowledging, acknowledged)
        );
        // The target's failure first: it explains the rest.
        collecting?;
        acknowledging
    }

    /// Settles each message in order, and tells the acknowledger and the taker.
    async fn collect(
        &self,
        mut settling: mpsc::Receiver<InFlight>,
        collected: watch::Sender<Option<u64>>,
        done: mpsc::UnboundedSender<Settled>,
    ) -> Result<()> {
        while let Some(item) = settling.recv().await {
            let (identity, size) = (item.identity, item.data.len() as u64);
            let kept = matches!(item.outbound, Outbound::Keep);
            match self.settle_one(item).await {
                Ok((tag, _)) if kept => {
                    // A gone acknowledger (the source connection died) changes nothing here.
                    let _ = done.send(Settled::Kept(tag));
                    collected.send_replace(Some(tag));
                }
                Ok((tag, moved)) => {
                    self.journal_landed(identity)?;
                    if moved {
                        self.staged(identity);
                    }
                    let _ = done.send(Settled::Landed(tag));
                    collected.send_replace(Some(tag));
                }
                Err(error) if error.is::<TargetRefusing>() => {
                    // The refused message did not land; the channel still
                    // answers for what followed it.
                    self.not_landed(identity)?;
                    self.settle_behind_refusal(&mut settling).await?;
                    return Err(error);
                }
                Err(error) => {
                    // The message refused as too large did not land; what
                    // was in flight beside it (its confirm lost with the
                    // same channel, the same words) may have.
                    let refused = error.downcast_ref::<TooLargeForTarget>();
                    if refused.is_none_or(|refusal| refusal.size != size) {
                        self.in_doubt(identity);
                    }
                    while let Ok(item) = settling.try_recv() {
                        self.in_doubt(item.identity);
                    }
                    return Err(error);
                }
            }
        }
        Ok(())
        // `done` goes here: the acknowledger acknowledges the rest, then ends.
    }

    /// Acknowledges at the source what was collected, once it is on disk:
    /// one multiple ack for all of it until a message is kept, then each
    /// alone. When the source is gone, it stops (the collector goes on:
    /// what landed must be known when it comes back).
    async fn acknowledge(
        &self,
        mut settled: mpsc::UnboundedReceiver<Settled>,
        acknowledged: watch::Sender<Option<u64>>,
    ) -> Result<()> {
        let mut holding = false;
        while let Some(first) = settled.recv().await {
            let (mut upto, mut alone, mut through) = (None, Vec::new(), 0);
            let mut next = Some(first);
            while let Some(item) = next {
                through = item.tag();
                match item {
                    Settled::Kept(_) => holding = true,
                    Settled::Landed(tag) if holding => alone.push(tag),
                    Settled::Landed(tag) => upto = Some(tag),
                }
                next = settled.try_recv().ok();
            }
            if upto.is_none() && alone.is_empty() {
                acknowledged.send_replace(Some(through));
                continue;
            }
            if let Some(journal) = self.journal {
                journal.sync().await?;
            }
            let acks = upto.map(|tag| (tag, true)).into_iter();
            for (tag, multiple) in acks.chain(alone.into_iter().map(|tag| (tag, false))) {
                bounded(
                    &self.job.from.broker,
                    "acknowledging source messages",
                    self.session
                        .taker
                        .basic_ack(tag, BasicAckOptions { multiple }),
                )
                .await?;
            }
            acknowledged.send_replace(Some(through));
        }
        Ok(())
    }

    /// The target's answer to one publish; a channel closed because the
    /// body was too large is told apart, so that the run can learn the limit.
    async fn confirmation(&self, confirm: PublisherConfirm) -> Result<Confirmation> {
        let to = &self.job.to.broker;
        match tokio::time::timeout(to.timeout, confirm).await {
            Ok(Err(error)) => {
                let text = describe(to, &error);
                match TooLargeForTarget::parse(&text) {
                    Some(refusal) if crate::amqp::reply_code(&error) == Some(406) => {
                        Err(refusal.into())
                    }
                    _ => Err(broker(format!("waiting for the target's confirm: {text}"))),
                }
            }
            Ok(Ok(confirmation)) => Ok(confirmation),
            Err(_) => Err(broker(format!(
                "waiting for the target's confirm: no answer from {} within {}",
                to.amqp_display(),
                crate::amqp::seconds(to.timeout)
            ))),
        }
    }

    /// A message published whose confirm will never be seen: it may have landed.
    pub(super) fn in_doubt(&self, identity: Option<Identity>) {
        self.ledger.lock().expect("ledger lock").in_doubt(identity);
    }

    /// Waits until one message is safe in the target or the poison queue;
    /// with whether it was moved (published where it was meant to go).
    async fn settle_one(&self, item: InFlight) -> Result<(u64, bool)> {
        let to = &self.job.to.broker;
        let Some(confirm) = item.confirm else {
            self.record(item.level, item.identity, &item.outbound);
            return Ok((item.delivery_tag, false));
        };
        let mut confirmation = self.confirmation(confirm).await?;
        // Taken or refused for another reason: the body size passed.
        self.size_limit.confirmed(item.data.len());
        let exchange = match &item.outbound {
            Outbound::Move { exchange, .. } => exchange.clone(),
            Outbound::Poison(_) | Outbound::Skip | Outbound::Keep => String::new(),
        };
        if let (Confirmation::Nack(None), Outbound::Move { routing_key, .. }) =
            (&confirmation, &item.outbound)
        {
            confirmation = self
                .until_taken(&exchange, routing_key, &item.data, &item.properties)
                .await?;
        }
        let refused = match confirmation {
            Confirmation::Ack(None) => None,
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Some(PoisonReason::Unroutable {
                    exchange,
                    reply: format!("{} {}", returned.reply_code, returned.reply_text),
                })
            }
            // Only a poison publish gets here refused: a move is retried until taken.
            Confirmation::Nack(None) => {
                return Err(broker(format!(
                    "the poison queue {} refused a message (nack)",
                    self.job.poison_queue
                )))
            }
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
            (_, Some(reason)) => {
                return Err(broker(format!(
                    "the poison queue {} did not take a message: {reason}",
                    self.job.poison_queue
                )))
            }
        };
        self.record(item.level, item.identity, &outbound);
        Ok((item.delivery_tag, matches!(outbound, Outbound::Move { .. })))
    }

    /// Publishes a message the target refused (a publisher nack) again, a
    /// few times within a second. A quorum queue refuses while it has no
    /// leader (a node failed, an election runs) or while it is full with
    /// `reject-publish`: the refusal is the target's state, not the
    /// message's, so the message is not poisoned. A refusal that outlasts the
    /// tries ends the session with [`TargetRefusing`]: the session is opened
    /// again, as after a lost connection, because a channel that a quorum
    /// queue told to stop can go on being refused after the queue takes
    /// messages again (seen on 3.10.8 once a length limit was lifted).
    async fn until_taken(
        &self,
        exchange: &str,
        routing_key: &str,
        data: &[u8],
        properties: &BasicProperties,
    ) -> Result<Confirmation> {
        for pause in [50, 150, 400] {
            self.ledger.lock().expect("ledger lock").refusals += 1;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let confirm = self
                .publish(exchange, routing_key, data, moved_properties(properties))
                .await?;
            let confirmation = self.confirmation(confirm).await?;
            if !matches!(confirmation, Confirmation::Nack(None)) {
                return Ok(confirmation);
            }
        }
        self.ledger.lock().expect("ledger lock").refusals += 1;
        Err(TargetRefusing {
            exchange: exchange.to_string(),
        }
        .into())
    }

    /// After a refusal, what was in flight behind the refused message: each
    /// one the target confirmed is recorded as landed (it is not
    /// acknowledged at the source, since the refused one before it is not:
    /// it comes back and is recognised), a refused or returned one did not
    /// land, and one whose answer does not come is in doubt.
    async fn settle_behind_refusal(&self, settling: &mut mpsc::Receiver<InFlight>) -> Result<()> {
        while let Ok(item) = settling.try_recv() {
            let Some(confirm) = item.confirm else {
                continue;
            };
            match self.confirmation(confirm).await {
                Ok(Confirmation::Ack(None)) => {
                    self.record(item.level, item.identity, &item.outbound);
                    self.journal_landed(item.identity)?;
                    if matches!(item.outbound, Outbound::Move { .. }) {
                        self.staged(item.identity);
                    }
                }
                Ok(_) => self.not_landed(item.identity)?,
                Err(_) => self.in_doubt(item.identity),
            }
        }
        Ok(())
    }

    /// A message safe in the target, for the journal (written at once: it
    /// survives the process being killed; fsynced before its source ack).
    fn journal_landed(&self, identity: Option<Identity>) -> Result<()> {
        match (self.journal, identity) {
            (Some(journal), Some(identity)) => journal.append(&identity),
            _ => Ok(()),
        }
    }

    /// A moved message's landing is journaled: the releaser may let it go.
    fn staged(&self, identity: Option<Identity>) {
        if let Some((_, releaser)) = self.staging {
            // A gone releaser failed the session already.
            let _ = releaser.send(identity);
        }
    }

    /// A publish the target refused or returned: not in doubt to a later run.
    fn not_landed(&self, identity: Option<Identity>) -> Result<()> {
        match (self.journal, identity) {
            (Some(journal), Some(identity)) => journal.refused(&identity),
            _ => Ok(()),
        }
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

    /// Counts one settled message (a dry run: one classified message).
    pub(super) fn record(&self, level: u8, identity: Option<Identity>, outbound: &Outbound) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        match outbound {
            Outbound::Move { delivered_now, .. } => ledger.moved(level, identity, *delivered_now),
            Outbound::Poison(reason) => ledger.poisoned(level, identity, reason.kind()),
            Outbound::Skip => ledger.skipped(level),
            Outbound::Keep => ledger.too_large(level, identity),
        }
        let total = ledger.total();
        drop(ledger);
        self.watch.advance(&total);
    }
}
