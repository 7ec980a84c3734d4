//! The settling half of a pass: waits for the target's confirm of each
//! message in delivery order (a nack or a return sends it to the poison
//! queue instead, and waits for that confirm), records what landed (in the
//! ledger, then in the journal, fsynced), and only then acknowledges the
//! batch at the source with one multiple ack. Settling in delivery-tag order
//! is what makes a multiple ack safe.
//!
//! When the source connection dies, acknowledging is impossible but the
//! confirms still come: they are collected and recorded, so the messages
//! that come back are recognised. When the target connection dies, the
//! messages whose confirm never came are "in doubt": they may have landed.

use anyhow::Result;
use lapin::options::BasicAckOptions;
use lapin::Confirmation;
use tokio::sync::mpsc;

use crate::amqp::bounded;
use crate::exit::broker;
use crate::moving::classify::PoisonReason;
use crate::moving::identity::Identity;
use crate::moving::pump::{InFlight, Outbound, Pump};

/// At most this many deliveries are acknowledged by one multiple ack (after
/// one fsync of the journal).
const ACK_BATCH: usize = 256;

impl Pump<'_> {
    pub(super) async fn settle(&self, mut settling: mpsc::Receiver<InFlight>) -> Result<()> {
        let mut ack_failure = None;
        while let Some(first) = settling.recv().await {
            let mut batch = vec![first];
            while batch.len() < ACK_BATCH {
                match settling.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let mut last_tag = None;
            let mut failure = None;
            let mut items = batch.into_iter();
            for item in items.by_ref() {
                let identity = item.identity;
                match self.settle_one(item).await {
                    Ok(tag) => {
                        if let (Some(journal), Some(identity)) = (self.journal, identity) {
                            journal.append(&identity)?;
                        }
                        last_tag = Some(tag);
                    }
                    Err(error) => {
                        self.in_doubt(identity);
                        failure = Some(error);
                        break;
                    }
                }
            }
            // What landed is on disk before the source forgets it.
            if let (Some(journal), Some(_)) = (self.journal, last_tag) {
                tokio::task::block_in_place(|| journal.sync())?;
            }
            if let (Some(tag), None) = (last_tag, &ack_failure) {
                if let Err(error) = self.acknowledge(tag).await {
                    // The source is gone; keep collecting confirms.
                    ack_failure = Some(error);
                }
            }
            if let Some(error) = failure {
                for item in items {
                    self.in_doubt(item.identity);
                }
                while let Ok(item) = settling.try_recv() {
                    self.in_doubt(item.identity);
                }
                return Err(error);
            }
        }
        ack_failure.map_or(Ok(()), Err)
    }

    async fn acknowledge(&self, last_tag: u64) -> Result<()> {
        bounded(
            &self.job.from.broker,
            "acknowledging source messages",
            self.session
                .taker
                .basic_ack(last_tag, BasicAckOptions { multiple: true }),
        )
        .await
    }

    /// A message published whose confirm will never be seen: it may have landed.
    fn in_doubt(&self, identity: Option<Identity>) {
        self.ledger.lock().expect("ledger lock").in_doubt(identity);
    }

    /// Waits until one message is safe in the target or the poison queue.
    async fn settle_one(&self, item: InFlight) -> Result<u64> {
        let to = &self.job.to.broker;
        let Some(confirm) = item.confirm else {
            self.record(item.level, item.identity, &item.outbound);
            return Ok(item.delivery_tag);
        };
        let confirmation = bounded(to, "waiting for the target's confirm", confirm).await?;
        let exchange = match &item.outbound {
            Outbound::Move { exchange, .. } => exchange.clone(),
            Outbound::Poison(_) | Outbound::Skip => String::new(),
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
            (_, Some(reason)) => {
                return Err(broker(format!(
                    "the poison queue {} did not take a message: {reason}",
                    self.job.poison_queue
                )))
            }
        };
        self.record(item.level, item.identity, &outbound);
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

    /// Counts one settled message (a dry run: one classified message).
    pub(super) fn record(&self, level: u8, identity: Option<Identity>, outbound: &Outbound) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        match outbound {
            Outbound::Move { delivered_now, .. } => ledger.moved(level, identity, *delivered_now),
            Outbound::Poison(reason) => ledger.poisoned(level, identity, reason.kind()),
            Outbound::Skip => ledger.skipped(level),
        }
        let total = ledger.total();
        drop(ledger);
        self.watch.advance(&total);
    }
}
