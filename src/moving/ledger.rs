//! The running account of a move: what each source level held, what was
//! moved or poisoned, and which messages came back although they had already
//! landed (duplicates). At-least-once means a message can be moved twice when
//! the source's acknowledgement is lost with the connection; the ledger
//! counts those instead of hiding them.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

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
    /// Ready messages still in the source level queue at the end.
    pub left: u64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub levels: BTreeMap<u8, LevelCounts>,
    /// Poisoned messages by kind of reason.
    pub reasons: BTreeMap<String, u64>,
    /// Messages received again after this run had already landed them.
    pub duplicates: u64,
    /// Redelivered messages this run had not landed: an interrupted earlier
    /// attempt (or run) may or may not have landed them too.
    pub possible_duplicates: u64,
    /// Ids of the messages landed in this run.
    landed: HashSet<String>,
}

impl Ledger {
    /// Notes a message taken from a source queue, before anything is done with it.
    pub fn received(&mut self, id: Option<&str>, redelivered: bool) {
        if id.is_some_and(|id| self.landed.contains(id)) {
            self.duplicates += 1;
        } else if redelivered {
            self.possible_duplicates += 1;
        }
    }

    pub fn moved(&mut self, level: u8, id: Option<String>, delivered_now: bool) {
        let counts = self.levels.entry(level).or_default();
        counts.moved += 1;
        counts.delivered_now += u64::from(delivered_now);
        self.landed.extend(id);
    }

    pub fn poisoned(&mut self, level: u8, id: Option<String>, reason_kind: String) {
        self.levels.entry(level).or_default().poisoned += 1;
        *self.reasons.entry(reason_kind).or_default() += 1;
        self.landed.extend(id);
    }

    pub fn total(&self) -> LevelCounts {
        self.levels
            .values()
            .fold(LevelCounts::default(), |sum, c| LevelCounts {
                found: sum.found + c.found,
                moved: sum.moved + c.moved,
                delivered_now: sum.delivered_now + c.delivered_now,
                poisoned: sum.poisoned + c.poisoned,
                left: sum.left + c.left,
            })
    }

    /// Messages moved or poisoned so far.
    pub fn settled(&self) -> u64 {
        let total = self.total();
        total.moved + total.poisoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_landed_twice_is_a_duplicate() {
        let mut ledger = Ledger::default();
        ledger.received(Some("a"), false);
        ledger.moved(5, Some("a".into()), false);
        ledger.received(Some("a"), true);
        ledger.moved(5, Some("a".into()), false);
        ledger.received(Some("b"), true);
        ledger.poisoned(3, Some("b".into()), "missing header X".into());
        ledger.received(None, true);
        assert_eq!((ledger.duplicates, ledger.possible_duplicates), (1, 2));
        assert_eq!(ledger.levels[&5].moved, 2);
        assert_eq!(ledger.reasons["missing header X"], 1);
        assert_eq!(ledger.settled(), 3);
    }
}
