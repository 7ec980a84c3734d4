//! The taker's work on one level queue: consume it until what the scan saw
//! has arrived (or it is empty), handing each delivery to `take_one`.
//!
//! A message too large for the target is held unacknowledged until the pass
//! ends, then given back: given back at once, it would be delivered again
//! at once (a requeued message goes to the head of its queue), for ever. Held
//! messages fill the consumer's prefetch window, so after a half window of
//! them the consumer is replaced by a fresh one: a new consumer gets a window
//! of its own, and the held messages stay with the channel.

use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Channel;

use crate::amqp::{bounded, open_channel};
use crate::exit::broker;
use crate::moving::broker::close_quietly;
use crate::moving::pump::{Handover, PassEnd, Pump};
use crate::moving::routes::Routes;

/// How long the consumer may be quiet before the queue is checked for emptiness.
const IDLE: Duration = Duration::from_millis(250);

/// How one consumer's taking ended.
enum TakeEnd {
    Drained,
    Stopped,
    /// Its window is half full of held messages: a new consumer goes on.
    Replace,
}

impl Pump<'_> {
    /// Takes a level's messages: once `expected` (the scan's count) have
    /// arrived it is done for this pass (later arrivals wait for the next one).
    pub(super) async fn drain(
        &self,
        level: u8,
        expected: u64,
        routes: &mut Routes,
        handover: &mut Handover,
    ) -> Result<PassEnd> {
        let from = &self.job.from.broker;
        if self.interrupt.requested().is_some() {
            return Ok(PassEnd::Stopped);
        }
        self.ledger.lock().expect("ledger lock").draining(level);
        // A dry run holds every message unacknowledged on a channel of its
        // own, and closing that channel hands them all back to the queue.
        let own = if self.job.dry_run {
            Some(open_channel(&self.session.from, from).await?)
        } else {
            None
        };
        let channel = own.as_ref().unwrap_or(&self.session.taker);
        let mut received = 0;
        let end = loop {
            let consumer = self.consume(level, channel).await?;
            match self
                .take(
                    level,
                    expected,
                    &mut received,
                    consumer,
                    channel,
                    routes,
                    handover,
                )
                .await?
            {
                TakeEnd::Drained => break PassEnd::Drained,
                TakeEnd::Stopped => break PassEnd::Stopped,
                TakeEnd::Replace => {}
            }
        };
        if let Some(channel) = own {
            close_quietly(channel).await;
        }
        Ok(end)
    }

    async fn consume(&self, level: u8, channel: &Channel) -> Result<lapin::Consumer> {
        let queue = self.job.from.cascade.level_name(level);
        // Exclusive: a second run on the same cascade fails instead of racing this one.
        bounded(
            &self.job.from.broker,
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
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn take(
        &self,
        level: u8,
        expected: u64,
        received: &mut u64,
        mut consumer: lapin::Consumer,
        channel: &Channel,
        routes: &mut Routes,
        handover: &mut Handover,
    ) -> Result<TakeEnd> {
        let from = &self.job.from.broker;
        let queue = self.job.from.cascade.level_name(level);
        let replace_after = (u64::from(self.job.prefetch) / 2).max(1);
        let (mut held, mut cancelled, mut replacing) = (0u64, false, false);
        let mut interrupt = self.interrupt.clone();
        loop {
            let wait = if cancelled { from.timeout } else { IDLE };
            let next = tokio::select! {
                biased;
                _ = interrupt.wait(), if !cancelled => {
                    self.cancel(queue, channel, &consumer).await?;
                    return Ok(TakeEnd::Stopped);
                }
                next = tokio::time::timeout(wait, consumer.next()) => next,
            };
            let drained = match next {
                Ok(Some(Ok(delivery))) => {
                    *received += 1;
                    if self.take_one(level, delivery, routes, handover).await? {
                        held += 1;
                    }
                    replacing |= !self.job.dry_run && held >= replace_after;
                    // All the scan saw: what arrived since waits for the next pass.
                    *received == expected
                }
                Ok(Some(Err(error))) => {
                    return Err(broker(format!(
                        "consuming from queue {queue}: {}",
                        crate::amqp::describe(from, &error)
                    )))
                }
                // The consumer is cancelled (by us, or the queue was deleted).
                Ok(None) if replacing && *received < expected => return Ok(TakeEnd::Replace),
                Ok(None) => return Ok(TakeEnd::Drained),
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
            if drained {
                replacing = false;
                if !cancelled {
                    // A quorum queue (3.10.8 seen) does not give back what a
                    // cancelled consumer holds when the consumer's node dies,
                    // not even once the node is back: everything this
                    // consumer took is acknowledged before it is cancelled
                    // (a message arriving meanwhile is taken after).
                    handover.acknowledged().await?;
                }
            }
            if (drained || replacing) && !cancelled {
                self.cancel(queue, channel, &consumer).await?;
                cancelled = true;
            }
        }
    }

    async fn cancel(
        &self,
        queue: &str,
        channel: &Channel,
        consumer: &lapin::Consumer,
    ) -> Result<()> {
        bounded(
            &self.job.from.broker,
            &format!("cancelling the consumer of queue {queue}"),
            channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
        )
        .await
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
}
