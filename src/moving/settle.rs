//! The settling half of a pass, in two tasks side by side:
//!
//! - the collector waits for the target's confirm of each message in
//!   delivery order (a nack or a return sends it to the poison queue
//!   instead, and waits for that confirm) and records what landed, in the
//!   ledger and in the journal;
//! - the acknowledger fsyncs the journal, then acknowledges at the source,
//!   with one multiple ack, everything collected so far.
//!
//! Settling in delivery-tag order is what makes a multiple ack safe. The
//! fsync never holds up the confirms: while one runs, the collector goes on,
//! and the next fsync and ack cover all it collected meanwhile.
//!
//! When the source connection dies, acknowledging is impossible but the
//! confirms still come: they are collected and recorded, so the messages
//! that come back are recognised. When the target connection dies, the
//! messages whose confirm never came are "in doubt": they may have landed.

use anyhow::Result;
use lapin::options::BasicAckOptions;
use lapin::Confirmation;
use tokio::sync::{mpsc, watch};

use crate::amqp::bounded;
use crate::exit::broker;
use crate::moving::classify::PoisonReason;
use crate::moving::identity::Identity;
use crate::moving::pump::{InFlight, Outbound, Pump};

impl Pump<'_> {
    pub(super) async fn settle(&self, settling: mpsc::Receiver<InFlight>) -> Result<()> {
        let (collected, settled) = watch::channel(None);
        let (collecting, acknowledging) =
            tokio::join!(self.collect(settling, collected), self.acknowledge(settled));
        // The target's failure first: it explains the rest.
        collecting?;
        acknowledging
    }

    /// Settles each message in order and publishes the last settled tag.
    async fn collect(
        &self,
        mut settling: mpsc::Receiver<InFlight>,
        collected: watch::Sender<Option<u64>>,
    ) -> Result<()> {
        while let Some(item) = settling.recv().await {
            let identity = item.identity;
            match self.settle_one(item).await {
                Ok(tag) => {
                    if let (Some(journal), Some(identity)) = (self.journal, identity) {
                        journal.append(&identity)?;
                    }
                    collected.send_replace(Some(tag));
                }
                Err(error) => {
                    self.in_doubt(identity);
                    while let Ok(item) = settling.try_recv() {
                        self.in_doubt(item.identity);
                    }
                    return Err(error);
                }
            }
        }
        Ok(())
        // `collected` goes here: the acknowledger acknowledges the rest, then ends.
    }

    /// Acknowledges at the source what was collected, once it is on disk.
    /// When the source is gone, it stops (the collector goes on: what
    /// landed must be known when it comes back).
    async fn acknowledge(&self, mut settled: watch::Receiver<Option<u64>>) -> Result<()> {
        let mut acknowledged = None;
        loop {
            let open = settled.changed().await.is_ok();
            let latest = *settled.borrow_and_update();
            if let Some(tag) = latest.filter(|&tag| Some(tag) != acknowledged) {
                if let Some(journal) = self.journal {
                    journal.sync().await?;
                }
                bounded(
                    &self.job.from.broker,
                    "acknowledging source messages",
                    self.session
                        .taker
                        .basic_ack(tag, BasicAckOptions { multiple: true }),
                )
                .await?;
                acknowledged = Some(tag);
            }
            if !open {
                return Ok(());
            }
        }
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
