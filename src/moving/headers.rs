//! The NServiceBus headers that say when a delayed message is due, and the
//! broker's dead-letter bookkeeping that must not follow a message into
//! another cascade. Pure: the clock is a parameter.
//!
//! A delayed message carries `NServiceBus.TimeSent` (`yyyy-MM-dd
//! HH:mm:ss:ffffff Z`, UTC) and `NServiceBus.Transport.RabbitMQ.DelayInSeconds`
//! (an integer); its due time is their sum. The routing key only says where
//! the message is in its cascade, not how long it has already waited there.

use std::collections::BTreeMap;
use std::fmt;

use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::celery_eta;

pub const TIME_SENT: &str = "NServiceBus.TimeSent";
pub const DELAY_IN_SECONDS: &str = "NServiceBus.Transport.RabbitMQ.DelayInSeconds";
pub const MESSAGE_ID: &str = "NServiceBus.MessageId";

/// Headers a poisoned message gets: why, and where it was (the routing key
/// is lost once it is published to the poison queue).
pub const POISON_REASON: &str = "x-delaytopo-poison-reason";
pub const POISON_SOURCE_QUEUE: &str = "x-delaytopo-source-queue";
pub const POISON_SOURCE_ROUTING_KEY: &str = "x-delaytopo-source-routing-key";

/// Headers the broker adds when it dead-letters or redelivers a message. They
/// describe the source cascade's queues, so they are dropped when a message
/// moves: the target cascade writes its own.
const BROKER_BOOKKEEPING: [&str; 8] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

const MICROS_PER_SECOND: i64 = 1_000_000;

/// Why a message's headers cannot say when it is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderProblem {
    Missing(&'static str),
    WrongType {
        header: &'static str,
        found: &'static str,
    },
    Unparsable {
        header: &'static str,
        value: String,
    },
}

impl HeaderProblem {
    /// The problem without the offending value, to count alike problems together.
    pub fn kind(&self) -> String {
        match self {
            HeaderProblem::Missing(header) => format!("missing header {header}"),
            HeaderProblem::WrongType { header, .. } => format!("wrong type of header {header}"),
            HeaderProblem::Unparsable { header, .. } => format!("unparsable header {header}"),
        }
    }
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderProblem::Missing(header) => write!(f, "missing header {header}"),
            HeaderProblem::WrongType { header, found } => {
                write!(f, "header {header} is a {found}, not the expected type")
            }
            HeaderProblem::Unparsable { header, value } => {
                write!(f, "header {header} cannot be parsed: {value:?}")
            }
        }
    }
}

/// When the message is due, in microseconds since the Unix epoch (UTC):
/// NServiceBus's headers, or else Celery's `eta`.
pub fn due_time(headers: Option<&FieldTable>) -> Result<i64, HeaderProblem> {
    let lookup = |name: &'static str| {
        headers
            .and_then(|h| h.inner().get(name))
            .ok_or(HeaderProblem::Missing(name))
    };
    if let (Err(_), Ok(eta)) = (lookup(TIME_SENT), lookup(celery_eta::ETA)) {
        return celery_eta::due_time(eta);
    }
    let sent = match lookup(TIME_SENT)? {
        AMQPValue::LongString(text) => text_of(TIME_SENT, text.as_bytes())?,
        AMQPValue::ShortString(text) => text.as_str().to_string(),
        AMQPValue::ByteArray(bytes) => text_of(TIME_SENT, bytes.as_slice())?,
        other => {
            return Err(HeaderProblem::WrongType {
                header: TIME_SENT,
                found: type_name(other),
            })
        }
    };
    let sent_micros = parse_time_sent(&sent).ok_or_else(|| HeaderProblem::Unparsable {
        header: TIME_SENT,
        value: sent.clone(),
    })?;
    let delay = lookup(DELAY_IN_SECONDS)?;
    let delay_seconds = integer(delay).ok_or(HeaderProblem::WrongType {
        header: DELAY_IN_SECONDS,
        found: type_name(delay),
    })?;
    delay_seconds
        .checked_mul(MICROS_PER_SECOND)
        .and_then(|micros| sent_micros.checked_add(micros))
        .ok_or_else(|| HeaderProblem::Unparsable {
            header: DELAY_IN_SECONDS,
            value: delay_seconds.to_string(),
        })
}

/// Whole seconds from `now` until `due` (both in µs), rounded to the nearest
/// second (halves to even, as .NET's `Convert.ToInt32` does); zero or less
/// means the message is due now.
pub fn remaining_seconds(due_micros: i64, now_micros: i64) -> i64 {
    let remaining = i128::from(due_micros) - i128::from(now_micros);
    let micros = i128::from(MICROS_PER_SECOND);
    let (whole, rest) = (remaining.div_euclid(micros), remaining.rem_euclid(micros));
    let rounded = if rest * 2 > micros || (rest * 2 == micros && whole % 2 != 0) {
        whole + 1
    } else {
        whole
    };
    rounded.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The message's identity for duplicate counting: the AMQP message id, else
/// the NServiceBus one.
pub fn message_id(
    message_id: Option<&ShortString>,
    headers: Option<&FieldTable>,
) -> Option<String> {
    if let Some(id) = message_id.filter(|id| !id.as_str().is_empty()) {
        return Some(id.as_str().to_string());
    }
    match headers?.inner().get(MESSAGE_ID)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_string()),
        _ => None,
    }
}

/// The headers without the source broker's dead-letter and delivery bookkeeping.
pub fn without_bookkeeping(headers: &FieldTable) -> FieldTable {
    let kept: BTreeMap<ShortString, AMQPValue> = headers
        .inner()
        .iter()
        .filter(|(name, _)| !BROKER_BOOKKEEPING.contains(&name.as_str()))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    FieldTable::from(kept)
}

/// The headers of a message's copy in the poison queue: all of its own,
/// untouched, plus why it is there and where it came from.
pub fn with_poison_headers(
    headers: Option<&FieldTable>,
    reason: &str,
    source_queue: &str,
    routing_key: &str,
) -> FieldTable {
    let mut table = headers.cloned().unwrap_or_default();
    for (name, value) in [
        (POISON_REASON, reason),
        (POISON_SOURCE_QUEUE, source_queue),
        (POISON_SOURCE_ROUTING_KEY, routing_key),
    ] {
        table.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    table
}

/// Parses `yyyy-MM-dd HH:mm:ss:ffffff Z` into microseconds since the epoch.
pub fn parse_time_sent(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 28 || &b[26..] != b" Z" {
        return None;
    }
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b' '),
        (13, b':'),
        (16, b':'),
        (19, b':'),
    ];
    if separators.iter().any(|&(at, c)| b[at] != c) {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = &b[from..to];
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'))
        })
    };
    let date = [number(0, 4)?, number(5, 7)?, number(8, 10)?];
    let time = [number(11, 13)?, number(14, 16)?, number(17, 19)?];
    utc_micros(date, time, number(20, 26)?)
}

/// Microseconds since the epoch of a UTC date and time of day, if both are valid.
pub(super) fn utc_micros(
    [year, month, day]: [i64; 3],
    [hour, minute, second]: [i64; 3],
    micros: i64,
) -> Option<i64> {
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some(seconds * MICROS_PER_SECOND + micros)
}

/// Formats microseconds since the epoch as NServiceBus writes `TimeSent`.
pub fn format_time_sent(micros: i64) -> String {
    let (seconds, fraction) = (
        micros.div_euclid(MICROS_PER_SECOND),
        micros.rem_euclid(MICROS_PER_SECOND),
    );
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}:{fraction:06} Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

pub(super) fn text_of(header: &'static str, bytes: &[u8]) -> Result<String, HeaderProblem> {
    String::from_utf8(bytes.to_vec()).map_err(|_| HeaderProblem::Unparsable {
        header,
        value: String::from_utf8_lossy(bytes).into_owned(),
    })
}

pub(crate) fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match *value {
        AMQPValue::ShortShortInt(n) => n.into(),
        AMQPValue::ShortShortUInt(n) => n.into(),
        AMQPValue::ShortInt(n) => n.into(),
        AMQPValue::ShortUInt(n) => n.into(),
        AMQPValue::LongInt(n) => n.into(),
        AMQPValue::LongUInt(n) => n.into(),
        AMQPValue::LongLongInt(n) => n,
        _ => return None,
    })
}

pub(super) fn type_name(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::Boolean(_) => "boolean",
        AMQPValue::Float(_) | AMQPValue::Double(_) | AMQPValue::DecimalValue(_) => "fraction",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "string",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "byte array",
        AMQPValue::Void => "void",
        _ => "integer",
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
