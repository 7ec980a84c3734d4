//! The releaser: consumes a cascade's staging queues for one session,
//! holds each copy until the journal records its landing, then releases it
//! (a reject: the broker dead-letters it into the cascade), and drops any
//! other copy of a message already released.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use anyhow::Result;
use futures::stream::SelectAll;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer};
use tokio::sync::mpsc;

use super::{fate, Fate, Staging, MARKER};
use crate::amqp::{bounded, open_channel};
use crate::exit::broker;
use crate::moving::identity::Identity;
use crate::moving::journal::{Journal, Known};
use crate::moving::ledger::Ledger;
use crate::moving::settle::TargetRefusing;
use crate::target::Target;

/// Consumes the staging queues for one session, and releases what the
/// journal records.
pub struct Releaser<'a> {
    target: &'a Target,
    staging: &'a Staging,
    channel: Channel,
    consumers: SelectAll<Consumer>,
    consumer_tags: Vec<String>,
    journal: Option<&'a Journal>,
    ledger: &'a Mutex<Ledger>,
    /// This session's marker token.
    token: String,
    /// Rounds of markers published so far (one marker per staging queue).
    rounds: u64,
    /// Markers seen, per round.
    markers_seen: HashMap<u64, usize>,
    /// Copies held until their landing is journaled, by identity.
    held: HashMap<Identity, Vec<u64>>,
    /// Journaled (landed) this session and not yet seen released.
    waiting: HashSet<Identity>,
    /// Staged copies without an id: confirmed, and released.
    anonymous: (u64, u64),
}

impl<'a> Releaser<'a> {
    /// Starts consuming the staging queues and reads them up to a marker:
    /// what they held landed, and is journaled and released.
    pub async fn start(
        target: &'a Target,
        connection: &Connection,
        staging: &'a Staging,
        journal: Option<&'a Journal>,
        ledger: &'a Mutex<Ledger>,
    ) -> Result<Releaser<'a>> {
        let channel = open_channel(connection, target).await?;
        bounded(
            target,
            "enabling publisher confirms on the staging channel",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        // Unlimited: a copy is held until its confirm is journaled, and
        // everything behind it must keep coming meanwhile.
        bounded(
            target,
            "setting the staging prefetch",
            channel.basic_qos(0, BasicQosOptions::default()),
        )
        .await?;
        let mut consumers = Vec::new();
        for name in &staging.names {
            consumers.push(
                bounded(
                    target,
                    &format!("consuming the staging queue {name}"),
                    channel.basic_consume(
                        name.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?,
            );
        }
        let mut releaser = Releaser {
            target,
            staging,
            channel,
            consumer_tags: consumers.iter().map(|c| c.tag().to_string()).collect(),
            consumers: futures::stream::select_all(consumers),
            journal,
            ledger,
            token: format!("{}-{}", std::process::id(), now_nanos()),
            rounds: 0,
            markers_seen: HashMap::new(),
            held: HashMap::new(),
            waiting: Default::default(),
            anonymous: (0, 0),
        };
        let round = releaser.publish_markers().await?;
        loop {
            let delivery = releaser.next().await?;
            match releaser.marker_of(&delivery) {
                Some(marker) => {
                    releaser.ack(delivery.delivery_tag).await?;
                    if releaser.through(marker, round) {
                        break;
                    }
                }
                None => releaser.found(delivery).await?,
            }
        }
        if let Some(journal) = journal {
            journal.sync().await?;
        }
        Ok(releaser)
    }

    /// Releases what `landed` says is journaled, until the passes end (the
    /// sender is dropped) and everything they staged is released.
    pub async fn run(
        mut self,
        mut landed: mpsc::UnboundedReceiver<Option<Identity>>,
    ) -> Result<()> {
        let mut end = None;
        loop {
            tokio::select! {
                note = landed.recv(), if end.is_none() => match note {
                    Some(identity) => self.journaled(identity).await?,
                    None => end = Some(self.publish_markers().await?),
                },
                delivery = self.next() => {
                    let delivery = delivery?;
                    match self.marker_of(&delivery) {
                        Some(marker) => {
                            self.ack(delivery.delivery_tag).await?;
                            if end.is_some_and(|end| self.through(marker, end)) {
                                return self.finish().await;
                            }
                        }
                        None => self.arrived(delivery).await?,
                    }
                }
            }
        }
    }

    /// Counts one marker of `marker`'s round; whether every staging queue's
    /// marker of round `round` is through.
    fn through(&mut self, marker: u64, round: u64) -> bool {
        let seen = self.markers_seen.entry(marker).or_default();
        *seen += 1;
        self.markers_seen.get(&round) == Some(&self.staging.names.len())
    }

    /// The end markers are through: every staged copy came before them.
    async fn finish(self) -> Result<()> {
        if !self.waiting.is_empty() || self.anonymous.0 > self.anonymous.1 {
            return Err(broker(format!(
                "the staging queues {}.. did not give back {} confirmed messages",
                self.staging.names[0],
                self.waiting.len() as u64 + self.anonymous.0.saturating_sub(self.anonymous.1)
            )));
        }
        let held: u64 = self.held.values().map(|tags| tags.len() as u64).sum();
        self.ledger.lock().expect("ledger lock").held_in_staging += held;
        for tag in &self.consumer_tags {
            bounded(
                self.target,
                "cancelling a staging consumer",
                self.channel
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
            )
            .await?;
        }
        // A clean close: the broker has handled every reject before it.
        bounded(
            self.target,
            "closing the staging channel",
            self.channel.close(200, "OK".into()),
        )
        .await
    }

    /// A copy that was in the staging queue when the session began: it landed.
    async fn found(&mut self, delivery: Delivery) -> Result<()> {
        let Some(identity) = identity_of(&delivery) else {
            return self.release(delivery.delivery_tag).await;
        };
        let (released, known) = self.knowledge(&identity);
        if !released && !known {
            if let Some(journal) = self.journal {
                journal.append(&identity)?;
            }
            self.ledger
                .lock()
                .expect("ledger lock")
                .found_staged(identity);
        }
        self.settle(
            identity,
            delivery.delivery_tag,
            released,
            true,
            delivery.redelivered,
        )
        .await
    }

    /// A copy that arrived while the passes run.
    async fn arrived(&mut self, delivery: Delivery) -> Result<()> {
        let Some(identity) = identity_of(&delivery) else {
            self.anonymous.1 += 1;
            return self.release(delivery.delivery_tag).await;
        };
        let (released, known) = self.knowledge(&identity);
        let landed = known || self.waiting.contains(&identity);
        self.settle(
            identity,
            delivery.delivery_tag,
            released,
            landed,
            delivery.redelivered,
        )
        .await
    }

    async fn settle(
        &mut self,
        identity: Identity,
        tag: u64,
        released: bool,
        landed: bool,
        redelivered: bool,
    ) -> Result<()> {
        match fate(released, landed, redelivered) {
            Fate::Drop => {
                self.ledger.lock().expect("ledger lock").dropped_in_staging += 1;
                self.ack(tag).await
            }
            Fate::Release => {
                self.released(identity);
                self.release(tag).await
            }
            Fate::Hold => {
                self.held.entry(identity).or_default().push(tag);
                Ok(())
            }
        }
    }

    /// A staged message's landing is journaled: its held copy (if it came
    /// first) is released, any other copy of it dropped.
    async fn journaled(&mut self, identity: Option<Identity>) -> Result<()> {
        let Some(identity) = identity else {
            self.anonymous.0 += 1;
            return Ok(());
        };
        let (released, _) = self.knowledge(&identity);
        if released {
            // A copy found at the start, or landed late: already on its way.
            return Ok(());
        }
        let Some(tags) = self.held.remove(&identity) else {
            self.waiting.insert(identity);
            return Ok(());
        };
        let (first, rest) = tags.split_first().expect("held copies");
        self.released(identity);
        self.release(*first).await?;
        for tag in rest {
            self.ledger.lock().expect("ledger lock").dropped_in_staging += 1;
            self.ack(*tag).await?;
        }
        Ok(())
    }

    fn released(&mut self, identity: Identity) {
        self.waiting.remove(&identity);
        self.ledger
            .lock()
            .expect("ledger lock")
            .released
            .insert(identity);
    }

    /// Whether a copy was released before, and whether an earlier run
    /// journaled it as landed or this one saw it land.
    fn knowledge(&self, identity: &Identity) -> (bool, bool) {
        let ledger = self.ledger.lock().expect("ledger lock");
        let released = ledger.released.contains(identity);
        let journaled = self
            .journal
            .is_some_and(|j| j.known(identity) == Known::Landed)
            || ledger.landed(Some(identity), Known::Unknown);
        (released, journaled)
    }

    async fn next(&mut self) -> Result<Delivery> {
        match self.consumers.next().await {
            Some(Ok(delivery)) => Ok(delivery),
            Some(Err(error)) => Err(broker(format!(
                "consuming the staging queues: {}",
                crate::amqp::describe(self.target, &error)
            ))),
            None => Err(broker("the staging queues' consumers were cancelled")),
        }
    }

    /// Rejects a copy without requeueing: the broker dead-letters it into the cascade.
    async fn release(&self, tag: u64) -> Result<()> {
        bounded(
            self.target,
            "releasing a staged message",
            self.channel.basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: false,
                },
            ),
        )
        .await
    }

    async fn ack(&self, tag: u64) -> Result<()> {
        bounded(
            self.target,
            "acknowledging a staged copy",
            self.channel.basic_ack(tag, BasicAckOptions::default()),
        )
        .await
    }

    /// Publishes a round of markers, one through each staging exchange,
    /// and waits for their confirms: everything confirmed before is ahead
    /// of them in their queues. Returns the round's number. A staging queue
    /// that refuses (no leader for a moment, or full) is tried again a few
    /// times, then the session ends with [`TargetRefusing`], as for a
    /// message.
    async fn publish_markers(&mut self) -> Result<u64> {
        self.rounds += 1;
        let mut confirms = Vec::new();
        for name in &self.staging.names {
            confirms.push((name, self.publish_marker(name).await?));
        }
        for (name, confirm) in confirms {
            let mut confirmation = bounded(
                self.target,
                "waiting for a staging marker's confirm",
                confirm,
            )
            .await?;
            for pause in [50, 150, 400] {
                if !matches!(confirmation, Confirmation::Nack(_)) {
                    break;
                }
                self.ledger.lock().expect("ledger lock").refusals += 1;
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                let again = self.publish_marker(name).await?;
                confirmation =
                    bounded(self.target, "waiting for a staging marker's confirm", again).await?;
            }
            match confirmation {
                Confirmation::Ack(_) => {}
                Confirmation::Nack(_) => {
                    self.ledger.lock().expect("ledger lock").refusals += 1;
                    return Err(TargetRefusing {
                        exchange: name.clone(),
                    }
                    .into());
                }
                Confirmation::NotRequested => {
                    return Err(broker("publisher confirms are off on the staging channel"))
                }
            }
        }
        Ok(self.rounds)
    }

    async fn publish_marker(&self, name: &str) -> Result<lapin::PublisherConfirm> {
        let mut headers = FieldTable::default();
        headers.insert(
            MARKER.into(),
            AMQPValue::LongString(format!("{} {}", self.token, self.rounds).into()),
        );
        bounded(
            self.target,
            "publishing a staging marker",
            self.channel.basic_publish(
                name.into(),
                "".into(),
                BasicPublishOptions::default(),
                b"",
                BasicProperties::default().with_headers(headers),
            ),
        )
        .await
    }

    /// The marker number of one of this session's markers.
    fn marker_of(&self, delivery: &Delivery) -> Option<u64> {
        let headers = delivery.properties.headers().as_ref()?;
        let value = headers.inner().get(MARKER)?;
        let AMQPValue::LongString(text) = value else {
            return None;
        };
        let text = text.to_string();
        let (token, number) = text.rsplit_once(' ')?;
        (token == self.token).then(|| number.parse().ok()).flatten()
    }
}

fn identity_of(delivery: &Delivery) -> Option<Identity> {
    Identity::of(
        delivery.properties.message_id().as_ref(),
        delivery.properties.headers().as_ref(),
        &delivery.data,
    )
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
