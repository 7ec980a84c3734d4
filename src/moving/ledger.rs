//! The running account of a move: what each source level held, what was
//! moved or poisoned, and which messages came back although they had already
//! landed. A message's source acknowledgement can be lost with a connection
//! after the target confirmed it; when it comes back, the ledger (this run)
//! or the journal (earlier runs) recognises it by its identity, and it is
//! acknowledged without being published again. What cannot be recognised
//! (no id, or a confirm that never came) is counted, not hidden.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::moving::identity::Identity;
use crate::moving::journal::Known;

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct LevelCounts {
    /// Ready messages in the source level queue when the move started.
    pub found: u64,
    /// Published to the target cascade and confirmed (dry run: would be).
    pub moved: u64,
    /// Of `moved`: already due, so published for immediate delivery.
    pub delivered_now: u64,
    /// Published to the poison queue and confirmed (dry run: would be).
    pub poisoned: u64,
    /// Taken again after they had landed, and acknowledged without
    /// publishing them a second time.
    pub skipped: u64,
    /// Ready messages still in the source level queue at the end (besides
    /// `too_large`).
    pub left: u64,
    /// Messages larger than the target takes: they stay in the source level
    /// queue (the one they were last taken from).
    pub too_large: u64,
}

/// What the run knew of a message when it was taken from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not landed by this run, nor by an earlier one as far as the journal says.
    New,
    /// This run already landed it (its acknowledgement was lost with a connection).
    LandedThisRun,
    /// An earlier run landed it, says the journal.
    LandedBefore,
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub levels: BTreeMap<u8, LevelCounts>,
    /// Poisoned messages by kind of reason.
    pub reasons: BTreeMap<String, u64>,
    /// Messages taken again after this run had landed them: acknowledged at
    /// the source without being published a second time.
    pub skipped_this_run: u64,
    /// The same for messages an earlier run landed (from the journal).
    pub skipped_from_journal: u64,
    /// Redelivered messages not known as landed to this run or the journal:
    /// an earlier attempt may have landed them (the `in_doubt` ones, or any
    /// after a run without a journal).
    pub possible_duplicates: u64,
    /// Of `possible_duplicates`: published before (by this run, or by an
    /// earlier one says the journal) without a confirm arriving, and
    /// published again: these may be in the target twice.
    pub in_doubt_redelivered: u64,
    /// Publishes the target refused (publisher nack), each published again.
    pub refusals: u64,
    /// Messages without a message id: nothing can recognise them again, so
    /// for them the move is at-least-once only.
    pub without_id: u64,
    /// Copies found in the staging queue when a session began: landed by an
    /// earlier attempt whose confirm never came (no longer in doubt).
    pub found_in_staging: u64,
    /// Copies of one message that reached the staging queue twice (a killed
    /// publisher's publish that landed late): dropped there, never released.
    pub dropped_in_staging: u64,
    /// Copies left in the staging queue at the end with nothing to claim them.
    pub held_in_staging: u64,
    /// Identities released from the staging queue into the cascade.
    pub released: HashSet<Identity>,
    /// Identities of the messages landed in this run.
    landed: HashSet<Identity>,
    /// Published by this run without a confirm before the connection died.
    in_doubt: HashSet<Identity>,
    /// Messages too large for the target, by identity: the level each was
    /// taken from last (one that expired into a lower level while it was
    /// held is counted there once that level is drained).
    too_large_at: HashMap<Identity, u8>,
    /// Too large and without an id, per level: counted again each time the
    /// level is drained.
    too_large_without_id: BTreeMap<u8, u64>,
}

impl Ledger {
    /// Notes a message taken from a source queue, before anything is done
    /// with it; `journal` says what earlier runs recorded of it.
    pub fn received(
        &mut self,
        identity: Option<&Identity>,
        redelivered: bool,
        journal: Known,
    ) -> Seen {
        let Some(identity) = identity else {
            self.without_id += 1;
            self.possible_duplicates += u64::from(redelivered);
            return Seen::New;
        };
        if self.landed.contains(identity) {
            self.skipped_this_run += 1;
            Seen::LandedThisRun
        } else if journal == Known::Landed {
            self.skipped_from_journal += 1;
            Seen::LandedBefore
        } else {
            if redelivered {
                self.possible_duplicates += 1;
                self.in_doubt_redelivered +=
                    u64::from(journal == Known::InDoubt || self.in_doubt.contains(identity));
            }
            Seen::New
        }
    }

    pub fn moved(&mut self, level: u8, identity: Option<Identity>, delivered_now: bool) {
        let counts = self.levels.entry(level).or_default();
        counts.moved += 1;
        counts.delivered_now += u64::from(delivered_now);
        self.landed.extend(identity);
    }

    pub fn poisoned(&mut self, level: u8, identity: Option<Identity>, reason_kind: String) {
        self.levels.entry(level).or_default().poisoned += 1;
        *self.reasons.entry(reason_kind).or_default() += 1;
        self.landed.extend(identity);
    }

    /// Whether this run, or an earlier one says the journal, landed this message.
    pub fn landed(&self, identity: Option<&Identity>, journal: Known) -> bool {
        journal == Known::Landed || identity.is_some_and(|i| self.landed.contains(i))
    }

    /// A level is being drained: its too-large messages without an id are
    /// counted again.
    pub fn draining(&mut self, level: u8) {
        self.too_large_without_id.remove(&level);
        self.count_too_large();
    }

    /// A message too large for the target, given back to its source queue.
    pub fn too_large(&mut self, level: u8, identity: Option<Identity>) {
        match identity {
            Some(identity) => {
                self.too_large_at.insert(identity, level);
            }
            None => *self.too_large_without_id.entry(level).or_default() += 1,
        }
        self.count_too_large();
    }

    fn count_too_large(&mut self) {
        for counts in self.levels.values_mut() {
            counts.too_large = 0;
        }
        let levels = self.too_large_at.values().map(|&level| (level, 1));
        let without_id = self.too_large_without_id.iter().map(|(&l, &n)| (l, n));
        for (level, n) in levels.chain(without_id) {
            self.levels.entry(level).or_default().too_large += n;
        }
    }

    /// The latest count of a level's ready messages: what is not too large is `left`.
    pub fn counted(&mut self, level: u8, ready: u64) {
        let counts = self.levels.entry(level).or_default();
        counts.left = ready.saturating_sub(counts.too_large);
    }

    /// A message acknowledged without publishing: it had landed already.
    pub fn skipped(&mut self, level: u8) {
        self.levels.entry(level).or_default().skipped += 1;
    }

    /// A copy found in the staging queue: it landed, whatever the journal says.
    pub fn found_staged(&mut self, identity: Identity) {
        self.found_in_staging += 1;
        self.landed.insert(identity);
    }

    /// Notes messages published without a confirm when the connection died.
    pub fn in_doubt(&mut self, identities: impl IntoIterator<Item = Identity>) {
        self.in_doubt.extend(identities);
    }

    pub fn total(&self) -> LevelCounts {
        self.levels
            .values()
            .fold(LevelCounts::default(), |sum, c| LevelCounts {
                found: sum.found + c.found,
                moved: sum.moved + c.moved,
                delivered_now: sum.delivered_now + c.delivered_now,
                poisoned: sum.poisoned + c.poisoned,
                skipped: sum.skipped + c.skipped,
                left: sum.left + c.left,
                too_large: sum.too_large + c.too_large,
            })
    }

    /// Messages moved, poisoned or skipped so far: taken off the source for good.
    pub fn settled(&self) -> u64 {
        let total = self.total();
        total.moved + total.poisoned + total.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Identity {
        Identity::repeated(n)
    }

    #[test]
    fn a_message_that_comes_back_after_landing_is_recognised() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.received(Some(&key(1)), false, Known::Unknown),
            Seen::New
        );
        ledger.moved(5, Some(key(1)), false);
        assert_eq!(
            ledger.received(Some(&key(1)), true, Known::Unknown),
            Seen::LandedThisRun
        );
        ledger.skipped(5);
        assert_eq!(
            ledger.received(Some(&key(2)), true, Known::Landed),
            Seen::LandedBefore
        );
        ledger.skipped(5);
        ledger.in_doubt([key(3)]);
        assert_eq!(
            ledger.received(Some(&key(3)), true, Known::Unknown),
            Seen::New
        );
        ledger.poisoned(3, Some(key(3)), "missing header X".into());
        assert_eq!(
            ledger.received(Some(&key(4)), true, Known::InDoubt),
            Seen::New
        );
        assert_eq!(
            ledger.received(Some(&key(5)), true, Known::Unknown),
            Seen::New
        );
        assert_eq!(ledger.received(None, true, Known::Unknown), Seen::New);
        assert_eq!(
            (ledger.skipped_this_run, ledger.skipped_from_journal),
            (1, 1)
        );
        assert_eq!(ledger.possible_duplicates, 4);
        assert_eq!(ledger.in_doubt_redelivered, 2);
        assert_eq!(ledger.without_id, 1);
        assert_eq!(ledger.levels[&5].moved, 1);
        assert_eq!(ledger.levels[&5].skipped, 2);
        assert_eq!(ledger.reasons["missing header X"], 1);
        assert_eq!(ledger.settled(), 4);
    }

    #[test]
    fn too_large_messages_are_counted_where_they_were_taken_last() {
        let mut ledger = Ledger::default();
        ledger.draining(20);
        ledger.too_large(20, Some(key(1)));
        ledger.too_large(20, Some(key(2)));
        ledger.too_large(20, None);
        ledger.counted(20, 4);
        // Given back, one has expired into level 19, and level 20 is drained again.
        ledger.draining(19);
        ledger.too_large(19, Some(key(2)));
        ledger.draining(20);
        ledger.too_large(20, None);
        ledger.counted(20, 2);
        ledger.counted(19, 1);
        let (at_20, at_19) = (&ledger.levels[&20], &ledger.levels[&19]);
        assert_eq!((at_20.too_large, at_20.left), (2, 0));
        assert_eq!((at_19.too_large, at_19.left), (1, 0));
        assert_eq!(ledger.total().too_large, 3);
        assert!(ledger.landed(None, Known::Landed));
        assert!(!ledger.landed(Some(&key(3)), Known::Unknown));
        ledger.moved(20, Some(key(3)), false);
        assert!(ledger.landed(Some(&key(3)), Known::Unknown));
    }
}
