//! The largest message the target takes. RabbitMQ refuses a publish whose
//! body is larger than its `max_message_size` by closing the publishing
//! channel (406 PRECONDITION_FAILED, "message size N is larger than
//! configured max size M"), and every confirm in flight on that channel is
//! lost with it. So each body is checked before it is published: against
//! `--max-message-size`, or else the target version's default (128 MiB up
//! to 3.x, 16 MiB from 4.0), lowered when a refusal names the real limit. A
//! message over the limit stays in its source queue and is reported.
//!
//! A body larger than any the target has confirmed in this run (and larger
//! than [`FENCE_FLOOR`]) is published behind a fence: what was published
//! before it is confirmed first, and nothing follows it until its own
//! confirm. If the target refuses it, nothing else was in flight on the
//! closed channel: nothing is in doubt.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::versions::Version;

const MIB: u64 = 1024 * 1024;
/// RabbitMQ's default `max_message_size` from 4.0, and before it (3.8 to 3.13).
pub const DEFAULT_FROM_4_0: u64 = 16 * MIB;
pub const DEFAULT_BEFORE_4_0: u64 = 128 * MIB;
/// Bodies up to this size are never fenced: no broker is configured to
/// refuse them in practice, and fencing each new largest small body would
/// cost a round trip for every one of a run of growing bodies.
pub const FENCE_FLOOR: u64 = 64 * 1024;

/// Where the limit in force comes from, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The default of the target's RabbitMQ version (`None`: unknown version).
    VersionDefault,
    /// `--max-message-size`.
    Option,
    /// The target refused a larger message and said its limit.
    Refusal,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::VersionDefault => "the target version's default",
            Origin::Option => "--max-message-size",
            Origin::Refusal => "learned from the target's refusal",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Origin::VersionDefault => "version_default",
            Origin::Option => "option",
            Origin::Refusal => "refusal",
        }
    }
}

#[derive(Debug)]
pub struct SizeLimit {
    limit: Mutex<(u64, Origin)>,
    /// The largest body the target confirmed in this run.
    proven: AtomicU64,
}

impl SizeLimit {
    /// `option` (`--max-message-size`) wins over the default of `version`
    /// (as the broker announces it; `None` until it is known).
    pub fn new(option: Option<u64>, version: Option<&str>) -> SizeLimit {
        let limit = match option {
            Some(bytes) => (bytes, Origin::Option),
            None => (version_default(version), Origin::VersionDefault),
        };
        SizeLimit {
            limit: Mutex::new(limit),
            proven: AtomicU64::new(0),
        }
    }

    /// The target's version became known (`None`: it could not be asked):
    /// its default applies, unless the option or a refusal said otherwise.
    pub fn version_known(&self, version: Option<&str>) {
        let mut limit = self.limit.lock().expect("size limit lock");
        if limit.1 == Origin::VersionDefault {
            limit.0 = version_default(version);
        }
    }

    pub fn limit(&self) -> (u64, Origin) {
        *self.limit.lock().expect("size limit lock")
    }

    pub fn too_large(&self, body: usize) -> bool {
        body as u64 > self.limit().0
    }

    /// Whether this body is published behind a fence (see the module doc).
    pub fn fenced(&self, body: usize) -> bool {
        let body = body as u64;
        body > FENCE_FLOOR && body > self.proven.load(Ordering::Relaxed)
    }

    /// The target confirmed a body of this size.
    pub fn confirmed(&self, body: usize) {
        self.proven.fetch_max(body as u64, Ordering::Relaxed);
    }

    /// Takes the limit a refusal named; `false` when it teaches nothing new
    /// (not lower than the limit in force: the broker measures otherwise,
    /// and going on would refuse the same message again and again).
    pub fn learn(&self, refusal: &TooLargeForTarget) -> bool {
        let mut limit = self.limit.lock().expect("size limit lock");
        if refusal.max < limit.0 {
            *limit = (refusal.max, Origin::Refusal);
            true
        } else {
            false
        }
    }
}

/// The default `max_message_size` of a RabbitMQ version; the lower one when
/// the version is unknown.
pub fn version_default(version: Option<&str>) -> u64 {
    match version.and_then(Version::parse) {
        Some(v) if v.major < 4 => DEFAULT_BEFORE_4_0,
        _ => DEFAULT_FROM_4_0,
    }
}

/// The target closed the publishing channel because a body was over its
/// `max_message_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLargeForTarget {
    pub size: u64,
    pub max: u64,
}

impl TooLargeForTarget {
    /// Reads the broker's words: "message size N is larger than [configured]
    /// max size M" (RabbitMQ 3.8 to 4.x).
    pub fn parse(text: &str) -> Option<TooLargeForTarget> {
        let number_after = |marker: &str| -> Option<u64> {
            let rest = &text[text.find(marker)? + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some(TooLargeForTarget {
            size: number_after("message size ")?,
            max: number_after("max size ")?,
        })
    }
}

impl fmt::Display for TooLargeForTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the target refused a message of {} bytes: its max_message_size is {} bytes",
            self.size, self.max
        )
    }
}

impl std::error::Error for TooLargeForTarget {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_follows_the_version_and_the_option_wins() {
        assert_eq!(version_default(Some("3.10.8")), 128 * MIB);
        assert_eq!(version_default(Some("4.0.5")), 16 * MIB);
        assert_eq!(version_default(Some("4.3.3")), 16 * MIB);
        assert_eq!(version_default(None), 16 * MIB);
        let limit = SizeLimit::new(Some(1000), Some("3.10.8"));
        assert_eq!(limit.limit(), (1000, Origin::Option));
        assert!(limit.too_large(1001) && !limit.too_large(1000));
    }

    #[test]
    fn the_brokers_refusal_is_read_and_only_a_lower_limit_is_learned() {
        let text = "406 PRECONDITION_FAILED - message size 2097152 is larger than configured max size 1048576";
        let refusal = TooLargeForTarget::parse(text).unwrap();
        assert_eq!(
            refusal,
            TooLargeForTarget {
                size: 2_097_152,
                max: 1_048_576
            }
        );
        let plain = "message size 600000000 is larger than max size 536870912";
        assert_eq!(TooLargeForTarget::parse(plain).unwrap().max, 536_870_912);
        assert_eq!(
            TooLargeForTarget::parse("406 PRECONDITION_FAILED - inequivalent arg"),
            None
        );

        let limit = SizeLimit::new(None, None);
        limit.version_known(Some("3.10.8"));
        assert_eq!(limit.limit(), (128 * MIB, Origin::VersionDefault));
        assert!(limit.learn(&refusal));
        limit.version_known(Some("3.10.8"));
        assert_eq!(limit.limit(), (1_048_576, Origin::Refusal));
        assert!(
            !limit.learn(&refusal),
            "the same limit again teaches nothing"
        );
    }

    #[test]
    fn only_a_new_largest_body_above_the_floor_is_fenced() {
        let limit = SizeLimit::new(None, Some("4.0.5"));
        assert!(!limit.fenced(1000));
        assert!(limit.fenced(100_000));
        limit.confirmed(100_000);
        assert!(!limit.fenced(100_000));
        assert!(limit.fenced(100_001));
    }
}
