//! What happens to one message taken from a source level queue: where it goes
//! in the target cascade, or why it goes to the poison queue. Pure: the
//! clock and both cascades are parameters.

use std::fmt;

use lapin::types::FieldTable;

use crate::cascade::{parse_routing_key, Desired, Route};
use crate::moving::headers::{self, HeaderProblem};

/// RabbitMQ's limit on a routing key (a short string).
const MAX_ROUTING_KEY_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Publish to `route` in the target cascade.
    Move {
        address: String,
        /// Whole seconds left; 0 when the message is already due.
        delay_seconds: u64,
        route: Route,
    },
    Poison(PoisonReason),
}

/// Why a message goes to the poison queue (its `x-delaytopo-poison-reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoisonReason {
    NotACascadeKey {
        routing_key: String,
    },
    Headers(HeaderProblem),
    DelayTooLong {
        remaining_seconds: i64,
        max_seconds: u64,
    },
    RoutingKeyTooLong {
        routing_key_bytes: usize,
    },
    /// The target's delivery exchange cannot be made to route to the address.
    NoDestination {
        address: String,
        detail: String,
    },
    /// The target broker returned the message as unroutable.
    Unroutable {
        exchange: String,
        reply: String,
    },
}

impl PoisonReason {
    /// The reason without message-specific values, to count alike reasons together.
    pub fn kind(&self) -> String {
        match self {
            PoisonReason::NotACascadeKey { .. } => "routing key is not a cascade key".into(),
            PoisonReason::Headers(problem) => problem.kind(),
            PoisonReason::DelayTooLong { .. } => "delay too long for the target cascade".into(),
            PoisonReason::RoutingKeyTooLong { .. } => {
                "routing key too long for the target cascade".into()
            }
            PoisonReason::NoDestination { address, .. } => {
                format!("no destination for address {address}")
            }
            PoisonReason::Unroutable { .. } => "unroutable in the target cascade".into(),
        }
    }
}

impl fmt::Display for PoisonReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoisonReason::NotACascadeKey { routing_key } => {
                write!(f, "routing key {routing_key:?} is not a cascade key of the source cascade")
            }
            PoisonReason::Headers(problem) => problem.fmt(f),
            PoisonReason::DelayTooLong {
                remaining_seconds,
                max_seconds,
            } => write!(
                f,
                "remaining delay {remaining_seconds} s exceeds the target cascade's maximum {max_seconds} s"
            ),
            PoisonReason::RoutingKeyTooLong { routing_key_bytes } => write!(
                f,
                "the target cascade's routing key would be {routing_key_bytes} bytes, over RabbitMQ's {MAX_ROUTING_KEY_BYTES}"
            ),
            PoisonReason::NoDestination { address, detail } => {
                write!(f, "no destination for address {address}: {detail}")
            }
            PoisonReason::Unroutable { exchange, reply } => {
                write!(f, "unroutable from exchange {exchange}: {reply}")
            }
        }
    }
}

/// Decides where a message from a source level queue goes, `now_micros`
/// being the current time in microseconds since the epoch.
pub fn classify(
    routing_key: &str,
    headers: Option<&FieldTable>,
    source: &Desired,
    target: &Desired,
    now_micros: i64,
) -> Disposition {
    let address = match parse_routing_key(source.levels, routing_key) {
        Some((_, address)) if !address.is_empty() => address,
        _ => {
            return Disposition::Poison(PoisonReason::NotACascadeKey {
                routing_key: routing_key.to_string(),
            })
        }
    };
    let due = match headers::due_time(headers) {
        Ok(due) => due,
        Err(problem) => return Disposition::Poison(PoisonReason::Headers(problem)),
    };
    let remaining = headers::remaining_seconds(due, now_micros);
    let delay_seconds = remaining.max(0) as u64;
    let Some(route) = target.route(delay_seconds, address) else {
        return Disposition::Poison(PoisonReason::DelayTooLong {
            remaining_seconds: remaining,
            max_seconds: crate::cascade::max_delay_seconds(target.levels),
        });
    };
    if route.routing_key.len() > MAX_ROUTING_KEY_BYTES {
        return Disposition::Poison(PoisonReason::RoutingKeyTooLong {
            routing_key_bytes: route.routing_key.len(),
        });
    }
    Disposition::Move {
        address: address.to_string(),
        delay_seconds,
        route,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::routing_key;
    use crate::moving::headers::{format_time_sent, parse_time_sent, DELAY_IN_SECONDS, TIME_SENT};
    use crate::topology::Topology;
    use lapin::types::{AMQPValue, LongString};
    use std::path::Path;

    fn cascade(yaml: &str) -> Desired {
        Desired::new(&Topology::parse(Path::new("t.yaml"), yaml).unwrap(), "/")
    }

    fn v1() -> Desired {
        cascade(include_str!("../../examples/nservicebus-v1.yaml"))
    }

    fn nsb_headers(sent_micros: i64, delay: i32) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert(
            TIME_SENT.into(),
            AMQPValue::LongString(LongString::from(format_time_sent(sent_micros))),
        );
        h.insert(DELAY_IN_SECONDS.into(), AMQPValue::LongInt(delay));
        h
    }

    fn at(text: &str) -> i64 {
        parse_time_sent(text).unwrap()
    }

    #[test]
    fn a_message_keeps_its_due_time_and_dotted_address() {
        // Sent at 12:00:00 with 3600 s; now 12:10:00.4 -> 3000 s (rounded) left.
        let sent = at("2022-05-06 12:00:00:000000 Z");
        let key = routing_key(28, 3600, "Big.Sales").unwrap();
        let now = at("2022-05-06 12:10:00:400000 Z");
        let d = classify(
            &key,
            Some(&nsb_headers(sent, 3600)),
            &v1(),
            &cascade(""),
            now,
        );
        assert_eq!(
            d,
            Disposition::Move {
                address: "Big.Sales".into(),
                delay_seconds: 3000,
                route: cascade("").route(3000, "Big.Sales").unwrap(),
            }
        );
        let Disposition::Move { route, .. } = d else {
            unreachable!()
        };
        assert_eq!(route.exchange, "nsb.v2.delay-level-11");
    }

    #[test]
    fn an_overdue_message_is_delivered_now() {
        let sent = at("2022-05-06 12:00:00:000000 Z");
        let key = routing_key(28, 10, "Sales").unwrap();
        let now = at("2022-05-06 13:00:00:000000 Z");
        let Disposition::Move {
            delay_seconds,
            route,
            ..
        } = classify(&key, Some(&nsb_headers(sent, 10)), &v1(), &cascade(""), now)
        else {
            panic!("not moved")
        };
        assert_eq!(delay_seconds, 0);
        assert_eq!(route.exchange, "nsb.v2.delay-level-00");
        assert_eq!(route.routing_key, format!("{}Sales", "0.".repeat(28)));
    }

    #[test]
    fn unusable_messages_are_poison_with_a_reason() {
        let now = at("2022-05-06 12:00:00:000000 Z");
        let target = cascade("");
        let poison = |key: &str, headers: Option<&FieldTable>| match classify(
            key,
            headers,
            &v1(),
            &target,
            now,
        ) {
            Disposition::Poison(reason) => reason.kind(),
            other => panic!("{other:?}"),
        };
        let good = nsb_headers(now, 10);
        assert_eq!(
            poison("Sales", Some(&good)),
            "routing key is not a cascade key"
        );
        assert_eq!(
            poison(&"0.".repeat(28), Some(&good)),
            "routing key is not a cascade key"
        );
        let key = routing_key(28, 10, "Sales").unwrap();
        assert_eq!(poison(&key, None), "missing header NServiceBus.TimeSent");
        let short = cascade("cascade:\n  levels: 4\n");
        let reason = match classify(&key, Some(&nsb_headers(now, 100)), &v1(), &short, now) {
            Disposition::Poison(reason) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason.to_string(),
            "remaining delay 100 s exceeds the target cascade's maximum 15 s"
        );
    }

    #[test]
    fn a_target_key_over_255_bytes_is_poison() {
        let now = at("2022-05-06 12:00:00:000000 Z");
        let address = "a".repeat(200);
        let source = cascade("cascade:\n  levels: 2\n");
        let key = routing_key(2, 1, &address).unwrap();
        match classify(&key, Some(&nsb_headers(now, 1)), &source, &cascade(""), now) {
            Disposition::Poison(PoisonReason::RoutingKeyTooLong { routing_key_bytes }) => {
                assert_eq!(routing_key_bytes, 256)
            }
            other => panic!("{other:?}"),
        }
    }
}
