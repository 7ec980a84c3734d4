//! The move's staging queue: the one place that tells a re-run whether a
//! publish whose confirm never came has landed.
//!
//! A publish is not idempotent and its confirm can be lost (the process is
//! killed, the connection drops). Publishing straight into the cascade, a
//! re-run cannot tell "landed" from "not landed" for such a message, and
//! landing it again may land it twice. So a move into a quorum cascade
//! publishes each message into a quorum queue of its own in the target vhost
//! (through a fanout exchange, which keeps the cascade routing key), where
//! the releaser holds it until the journal records it; then it rejects it,
//! and the broker dead-letters it, at-least-once, into the cascade's highest
//! level exchange, which routes it on by its key as if it had been published
//! there. One publish, one queue: what the staging queue holds has landed.
//!
//! A session begins by reading the staging queue up to a marker it
//! publishes: whatever is there landed, and is journaled as such (its source
//! copy is then acknowledged without publishing it again). A killed
//! publisher's last publishes can land after that read; a copy whose
//! identity is already released is dropped, never released twice.

mod releaser;

pub use releaser::Releaser;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use crate::amqp::{bounded, open_channel};
use crate::cascade::Desired;
use crate::exit::broker;
use crate::moving::broker::{close_quietly, declare_exclusive, refusable};
use crate::target::Target;

const RESOURCE_LOCKED: u16 = 405;
/// The header that marks the releaser's own markers.
pub(super) const MARKER: &str = "x-delaytopo-staging-marker";
/// Staging queues per move. The broker dead-letters from each quorum queue
/// with one worker that has 32 messages in flight (seen on 3.10.8: about
/// 250 messages a second), so releases are spread over several.
pub const SHARDS: usize = 8;

/// A cascade's staging exchanges and queues (each pair shares a name), and
/// which one the next publish goes through.
#[derive(Debug)]
pub struct Staging {
    pub names: Vec<String>,
    pub lock: String,
    next: AtomicUsize,
}

impl Staging {
    pub fn of(cascade: &Desired) -> Staging {
        Staging {
            names: cascade.staging_names(),
            lock: cascade.staging_lock(),
            next: AtomicUsize::new(0),
        }
    }

    /// The exchange the next message is published to.
    pub fn exchange(&self) -> &str {
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.names.len();
        &self.names[shard]
    }
}

/// The staging queue's arguments: dead-lettering into the cascade's highest
/// level exchange, at-least-once (so a release is never lost on the way).
pub fn queue_arguments(cascade: &Desired) -> FieldTable {
    let mut arguments = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    arguments.insert("x-queue-type".into(), text("quorum"));
    arguments.insert(
        "x-dead-letter-exchange".into(),
        text(cascade.level_name(cascade.levels - 1)),
    );
    arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    arguments.insert("x-overflow".into(), text("reject-publish"));
    arguments
}

/// Another connection holds the staging lock: another move into the same
/// cascade, or (after a reconnect) this run's old connection, which the
/// broker has not yet seen die.
#[derive(Debug, thiserror::Error)]
#[error(
    "another migrate or transfer into this cascade is running (it holds queue {lock}): \
     run one at a time"
)]
pub struct StagingLocked {
    pub lock: String,
}

/// How long a lock held by another connection is waited for: a killed
/// run's connection holds it until the broker has closed that connection
/// (and handled the publishes it had sent), which takes a moment.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Takes the cascade's staging lock for as long as `connection` lives: an
/// exclusive queue, which another connection cannot declare (405). Two
/// releasers on the same staging queues would each hold copies the other
/// waits for.
pub async fn lock(target: &Target, connection: &Connection, staging: &Staging) -> Result<()> {
    let what = format!("declaring the staging lock queue {}", staging.lock);
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let channel = open_channel(connection, target).await?;
        let declared = refusable(target, &what, declare_exclusive(&channel, &staging.lock)).await?;
        close_quietly(channel).await;
        match declared {
            Ok(_) => return Ok(()),
            Err(refusal) if refusal.code == RESOURCE_LOCKED && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(refusal) if refusal.code == RESOURCE_LOCKED => {
                return Err(StagingLocked {
                    lock: staging.lock.clone(),
                }
                .into())
            }
            Err(refusal) => return Err(broker(format!("{what}: {}", refusal.text))),
        }
    }
}

/// Declares the staging exchanges, queues and bindings (idempotent).
pub async fn declare(
    target: &Target,
    connection: &Connection,
    staging: &Staging,
    cascade: &Desired,
) -> Result<()> {
    let channel = open_channel(connection, target).await?;
    for name in &staging.names {
        declare_one(target, &channel, name, cascade).await?;
    }
    close_quietly(channel).await;
    Ok(())
}

async fn declare_one(
    target: &Target,
    channel: &Channel,
    name: &str,
    cascade: &Desired,
) -> Result<()> {
    let durable = |what| format!("declaring the staging {what} {name}");
    bounded(
        target,
        &durable("exchange"),
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
        &durable("queue"),
        channel.queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            queue_arguments(cascade),
        ),
    )
    .await?;
    bounded(
        target,
        &format!("binding the staging queue {name}"),
        channel.queue_bind(
            name.into(),
            name.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    Ok(())
}

/// What the releaser does with one copy it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Release,
    Drop,
    Hold,
}

/// Decides one copy's fate: `released` whether a copy of its identity was
/// released before, `landed` whether its landing is journaled, `redelivered`
/// whether the broker gave it back after a consumer died holding it (a
/// release that may not have happened: released again rather than lost).
pub(super) fn fate(released: bool, landed: bool, redelivered: bool) -> Fate {
    if released && !redelivered {
        Fate::Drop
    } else if released || landed {
        Fate::Release
    } else {
        Fate::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_released_once_and_held_until_journaled() {
        assert_eq!(fate(false, false, false), Fate::Hold);
        assert_eq!(fate(false, true, false), Fate::Release);
        assert_eq!(fate(true, true, false), Fate::Drop);
        // Given back after a consumer died: its release may not have happened.
        assert_eq!(fate(true, true, true), Fate::Release);
    }

    #[test]
    fn the_staging_exchanges_are_taken_in_turn() {
        let cascade = crate::test_fixtures::desired("");
        let staging = Staging::of(&cascade);
        assert_eq!(
            staging.names[3],
            "delaytopo.staging.nsb.v2.delay-delivery.3"
        );
        assert_eq!(staging.lock, "delaytopo.staging.nsb.v2.delay-delivery.lock");
        let shards = crate::cascade::STAGING_SHARDS;
        let taken: Vec<String> = (0..shards + 1)
            .map(|_| staging.exchange().to_string())
            .collect();
        assert_eq!(taken[..shards], staging.names[..]);
        assert_eq!(taken[shards], staging.names[0]);
    }
}
