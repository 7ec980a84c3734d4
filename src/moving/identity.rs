//! What makes two deliveries "the same message", so that a move can tell a
//! message it has already landed from a new one.
//!
//! The message id alone is not enough: a sender may reuse an id for a
//! distinct send (Celery retries a task under its task id with a new
//! countdown; a saga may re-defer a timeout it already sent). Such a send
//! differs in its body or in when it is due. So the identity is the id
//! together with a SHA-256 digest of the body and the headers that say when
//! the message is due (`NServiceBus.TimeSent`,
//! `NServiceBus.Transport.RabbitMQ.DelayInSeconds`; Celery's `eta`, and its
//! `retries`, which a retry counts up): two deliveries with the same identity
//! are copies of one send, and landing the second would be a duplicate. Headers the broker adds on the way (`x-death` and the like)
//! change from hop to hop and are left out.
//!
//! A message without an id has no identity: nothing can recognise it again,
//! so for it a move is at-least-once only.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use sha2::{Digest, Sha256};

use crate::moving::celery_eta::ETA;
use crate::moving::headers::{self, DELAY_IN_SECONDS, TIME_SENT};

/// The headers that make two sends of one id different messages.
const DUE_TIME_HEADERS: [&str; 4] = [TIME_SENT, DELAY_IN_SECONDS, ETA, "retries"];

/// A message's identity, as a fixed-size key: 128 bits of the SHA-256 of the
/// id, the body and the due-time headers. Kept in memory for every landed
/// message and written to the journal, so it is small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity([u8; 16]);

impl Identity {
    /// The identity of a delivery, or `None` when it carries no message id
    /// (neither the `message-id` property nor the `NServiceBus.MessageId` header).
    pub fn of(
        message_id: Option<&ShortString>,
        headers: Option<&FieldTable>,
        body: &[u8],
    ) -> Option<Identity> {
        let id = headers::message_id(message_id, headers)?;
        let mut digest = Sha256::new();
        // Each part with its length first: no two different tuples hash the same bytes.
        feed(&mut digest, id.as_bytes());
        feed(&mut digest, body);
        for name in DUE_TIME_HEADERS {
            let value = headers.and_then(|h| h.inner().get(name));
            feed(&mut digest, canonical(value).as_bytes());
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest.finalize()[..16]);
        Some(Identity(key))
    }

    /// The identity as 32 lowercase hex digits (the journal's line format).
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An identity of one repeated byte, for tests of what holds identities.
    #[cfg(test)]
    pub(crate) fn repeated(byte: u8) -> Identity {
        Identity([byte; 16])
    }

    /// Parses what `to_hex` wrote; `None` for anything else (a torn line).
    pub fn from_hex(text: &str) -> Option<Identity> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut key = [0u8; 16];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Identity(key))
    }
}

fn feed(digest: &mut Sha256, bytes: &[u8]) {
    digest.update((bytes.len() as u64).to_be_bytes());
    digest.update(bytes);
}

/// A header value as text that does not depend on how it was encoded
/// (a long or a short string, any integer width): the same due time is the
/// same whichever client library sent it.
fn canonical(value: Option<&AMQPValue>) -> String {
    match value {
        None => "-".into(),
        Some(AMQPValue::LongString(s)) => format!("s:{}", String::from_utf8_lossy(s.as_bytes())),
        Some(AMQPValue::ShortString(s)) => format!("s:{}", s.as_str()),
        Some(other) => match headers::integer(other) {
            Some(n) => format!("i:{n}"),
            None => format!("?:{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    fn headers(time_sent: &str, delay: AMQPValue) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert(
            TIME_SENT.into(),
            AMQPValue::LongString(LongString::from(time_sent)),
        );
        headers.insert(DELAY_IN_SECONDS.into(), delay);
        headers
    }

    fn identity(id: Option<&str>, headers: &FieldTable, body: &[u8]) -> Option<Identity> {
        let id = id.map(ShortString::from);
        Identity::of(id.as_ref(), Some(headers), body)
    }

    #[test]
    fn copies_of_one_send_are_the_same_message_however_the_delay_is_encoded() {
        let sent = "2024-05-06 12:00:00:000000 Z";
        let one = identity(Some("a"), &headers(sent, AMQPValue::LongInt(60)), b"x");
        let other = identity(Some("a"), &headers(sent, AMQPValue::LongLongInt(60)), b"x");
        assert!(one.is_some());
        assert_eq!(one, other);
    }

    #[test]
    fn the_same_id_with_another_body_or_due_time_is_another_message() {
        let sent = "2024-05-06 12:00:00:000000 Z";
        let base = identity(Some("a"), &headers(sent, AMQPValue::LongInt(60)), b"x");
        let body = identity(Some("a"), &headers(sent, AMQPValue::LongInt(60)), b"y");
        let delay = identity(Some("a"), &headers(sent, AMQPValue::LongInt(61)), b"x");
        let later = "2024-05-06 12:00:01:000000 Z";
        let time = identity(Some("a"), &headers(later, AMQPValue::LongInt(60)), b"x");
        let id = identity(Some("b"), &headers(sent, AMQPValue::LongInt(60)), b"x");
        for other in [body, delay, time, id] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_celery_retry_under_the_same_task_id_is_another_message() {
        let text = |s: &str| AMQPValue::LongString(LongString::from(s));
        let mut first = FieldTable::default();
        first.insert(ETA.into(), text("2026-12-01T03:52:42.020129+00:00"));
        first.insert("retries".into(), AMQPValue::LongInt(0));
        let mut retry = first.clone();
        retry.insert("retries".into(), AMQPValue::LongInt(1));
        let one = identity(Some("task-1"), &first, b"[[], {}, {}]");
        let again = identity(Some("task-1"), &first, b"[[], {}, {}]");
        assert_eq!(one, again);
        assert_ne!(one, identity(Some("task-1"), &retry, b"[[], {}, {}]"));
    }

    #[test]
    fn a_message_without_an_id_has_no_identity() {
        let plain = headers("2024-05-06 12:00:00:000000 Z", AMQPValue::LongInt(60));
        assert_eq!(identity(None, &plain, b"x"), None);
        assert_eq!(identity(Some(""), &plain, b"x"), None);
    }

    #[test]
    fn the_hex_form_reads_back_and_a_torn_line_does_not() {
        let key = identity(Some("a"), &FieldTable::default(), b"x").unwrap();
        assert_eq!(Identity::from_hex(&key.to_hex()), Some(key));
        assert_eq!(Identity::from_hex(&key.to_hex()[..20]), None);
        assert_eq!(Identity::from_hex(&"zz".repeat(16)), None);
    }
}
