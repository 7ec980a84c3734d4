//! Where the messages of a finished move are, every id counted, and where
//! a moved message must sit in the target cascade.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use delaytopo::cascade::Desired;
use delaytopo::moving::headers::{format_time_sent, TIME_SENT};

use super::{Client, Delayed, Taken};

/// Where the messages of a finished move are.
#[derive(Default)]
pub struct Inventory {
    /// In the target cascade's level queues.
    pub cascade: Vec<Taken>,
    /// In endpoint queues (they were due).
    pub delivered: Vec<Taken>,
    pub poisoned: Vec<Taken>,
}

impl Inventory {
    /// Takes every message out of the target cascade, `endpoints` and the
    /// poison queue, once what the move staged has all been released.
    pub fn take(client: &Client, target: &Desired, endpoints: &[&str]) -> Inventory {
        released(client, target, endpoints);
        Inventory {
            cascade: client.take_cascade(target),
            delivered: endpoints.iter().flat_map(|q| client.take_all(q)).collect(),
            poisoned: client.take_all("delaytopo.poison"),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Taken> {
        self.cascade
            .iter()
            .chain(&self.delivered)
            .chain(&self.poisoned)
    }

    /// How many copies of each message id landed somewhere.
    pub fn copies(&self) -> BTreeMap<&str, usize> {
        let mut copies = BTreeMap::new();
        for taken in self.all() {
            *copies.entry(taken.id.as_str()).or_default() += 1;
        }
        copies
    }

    /// Asserts that every one of `messages` landed, and nothing else; returns
    /// how many extra copies (duplicates) landed.
    pub fn assert_none_lost(&self, messages: &[Delayed]) -> usize {
        let copies = self.copies();
        let expected: BTreeSet<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        let missing: Vec<&&str> = expected
            .iter()
            .filter(|id| !copies.contains_key(**id))
            .collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        assert_eq!(copies.len(), expected.len(), "unknown messages appeared");
        copies.values().map(|n| n - 1).sum()
    }
}

/// Waits until the broker has dead-lettered everything a move released from
/// the target's staging queues (a backlog AMQP cannot count): until what the
/// target holds has not changed for 2 s, and the management API counts
/// nothing in the staging queues.
fn released(client: &Client, target: &Desired, endpoints: &[&str]) {
    let start = Instant::now();
    while staged_anywhere(client, target) > 0 && start.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_millis(500));
    }
    settled(client, target, endpoints);
}

/// Messages the management API counts in the target's staging queues
/// (ready, unacknowledged, and released but not yet dead-lettered).
fn staged_anywhere(client: &Client, target: &Desired) -> u64 {
    let Some(vhost) = client.vhost() else {
        return 0;
    };
    let queues = crate::support::api(
        reqwest::Method::GET,
        &format!(
            "queues/{}?columns=name,messages,messages_dlx",
            crate::support::encode(&vhost)
        ),
        None,
    );
    let staging = target.staging_names();
    queues
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| staging.iter().any(|s| q["name"] == s.as_str()))
        .map(|q| {
            q["messages"]
                .as_u64()
                .unwrap_or(0)
                .max(q["messages_dlx"].as_u64().unwrap_or(0))
        })
        .sum()
}

/// Until what the target holds has not changed for 2 s.
fn settled(client: &Client, target: &Desired, endpoints: &[&str]) {
    let count = || {
        client.ready_in_cascade(target)
            + endpoints.iter().map(|q| client.ready(q)).sum::<u32>()
            + client.ready("delaytopo.poison")
    };
    let start = Instant::now();
    let (mut last, mut since) = (count(), Instant::now());
    while since.elapsed() < Duration::from_secs(2) && start.elapsed() < Duration::from_secs(180) {
        std::thread::sleep(Duration::from_millis(250));
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
}

/// A message in the target cascade sits in the level of its new delay, which
/// is what was left of its delay at some moment of the run (µs bounds).
pub fn assert_remaining_delay(
    taken: &Taken,
    sent: &Delayed,
    target: &Desired,
    started: i64,
    finished: i64,
) {
    let (delay, address) = taken.cascade_key(target.levels);
    assert_eq!(address, sent.address);
    let latest = (sent.due_micros() - started + 500_000) / 1_000_000;
    let earliest = (sent.due_micros() - finished - 500_000) / 1_000_000;
    assert!(
        (earliest as u64..=latest as u64).contains(&delay),
        "{}: delay {delay} outside {earliest}..={latest}",
        sent.id
    );
    let level = target
        .queues
        .iter()
        .find(|q| q.name == taken.queue)
        .unwrap()
        .level;
    assert_eq!(level, delaytopo::cascade::starting_level(delay));
    assert_eq!(
        taken.header_text(TIME_SENT),
        Some(format_time_sent(sent.sent_micros))
    );
    assert_eq!(taken.header_text("x-custom").as_deref(), Some("kept"));
    // No death of the source's: at most the staging queue's that released it.
    let first = taken.header_text("x-first-death-queue");
    assert!(
        first
            .as_ref()
            .is_none_or(|q| target.staging_names().contains(q)),
        "{}: first death in {first:?}",
        sent.id
    );
}
