//! The one place that decides exit codes (SPEC §3).
//!
//! Commands return `Ok(Outcome)` when the check worked (exit 0 or 1 by
//! `ok`) and an error otherwise; the error's kind, found anywhere in its
//! chain, picks 2 (bad input) or 3 (broker unusable).

use crate::topology::TopologyError;

pub const OK: u8 = 0;
pub const NOT_OK: u8 = 1;
pub const BAD_INPUT: u8 = 2;
pub const BROKER_UNUSABLE: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Command line or topology file: exit 2.
    BadInput,
    /// Unreachable, refused, forbidden, absent or slow broker: exit 3.
    Broker,
    /// Stopped by a signal: 128 + its number, as a shell reports it.
    Interrupted(u8),
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
}

pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    Failure {
        kind: Kind::BadInput,
        message: message.into(),
    }
    .into()
}

pub fn broker(message: impl Into<String>) -> anyhow::Error {
    Failure {
        kind: Kind::Broker,
        message: message.into(),
    }
    .into()
}

/// A command stopped by SIGINT or SIGTERM (`signal` as `interrupt` names
/// it); `message` says what state it left.
pub fn interrupted(signal: &str, message: impl Into<String>) -> anyhow::Error {
    Failure {
        kind: Kind::Interrupted(signal_exit_code(signal)),
        message: format!("interrupted by {signal}: {}", message.into()),
    }
    .into()
}

/// 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
pub fn signal_exit_code(signal: &str) -> u8 {
    match signal {
        "SIGTERM" => 128 + 15,
        _ => 128 + 2,
    }
}

/// The exit code for an error that ended a command.
pub fn code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<TopologyError>() {
            return BAD_INPUT;
        }
        if let Some(failure) = cause.downcast_ref::<Failure>() {
            return match failure.kind {
                Kind::BadInput => BAD_INPUT,
                Kind::Broker => BROKER_UNUSABLE,
                Kind::Interrupted(code) => code,
            };
        }
    }
    // Anything unclassified comes from talking to the broker.
    BROKER_UNUSABLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_kind_is_found_behind_context() {
        let e = Err::<(), _>(bad_input("bad --timeout"))
            .context("reading options")
            .unwrap_err();
        assert_eq!(code_for(&e), BAD_INPUT);
        assert_eq!(code_for(&broker("down")), BROKER_UNUSABLE);
        assert_eq!(code_for(&anyhow::anyhow!("io")), BROKER_UNUSABLE);
    }
}
