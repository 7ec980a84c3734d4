//! Celery's due time. A delayed Celery task carries none of NServiceBus's
//! headers; Celery's message protocol 2 puts the absolute due time in the
//! `eta` header instead, as Python's `datetime.isoformat()` writes it
//! (`2026-12-01T03:52:42.020129+00:00`). A time without an offset is refused:
//! its zone is the sender's guess. Pure.

use lapin::types::AMQPValue;

use super::headers::{text_of, type_name, utc_micros, HeaderProblem};

pub const ETA: &str = "eta";

/// The `eta` header's time in microseconds since the epoch (UTC).
pub fn due_time(eta: &AMQPValue) -> Result<i64, HeaderProblem> {
    let text = match eta {
        AMQPValue::LongString(text) => text_of(ETA, text.as_bytes())?,
        AMQPValue::ShortString(text) => text.as_str().to_string(),
        AMQPValue::Void => return Err(HeaderProblem::Missing(ETA)),
        other => {
            return Err(HeaderProblem::WrongType {
                header: ETA,
                found: type_name(other),
            })
        }
    };
    parse_iso8601(&text).ok_or(HeaderProblem::Unparsable {
        header: ETA,
        value: text,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)` in microseconds since the epoch.
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let (date, rest) = (text.get(..10)?, text.get(10..)?);
    let rest = rest.strip_prefix('T').or_else(|| rest.strip_prefix(' '))?;
    let (clock, offset_seconds) = split_offset(rest)?;
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = format!("{fraction:0<6}").parse().ok()?;
    let date = fields(date, '-', [4, 2, 2])?;
    let time = fields(hms, ':', [2, 2, 2])?;
    Some(utc_micros(date, time, micros)? - offset_seconds * 1_000_000)
}

/// The clock part and the offset from UTC in seconds (`Z` or `±HH:MM`).
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(clock) = text.strip_suffix('Z') {
        return Some((clock, 0));
    }
    let at = text.len().checked_sub(6)?;
    let (clock, offset) = text.split_at(at);
    let sign = match offset.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let [hours, minutes] = fields(&offset[1..], ':', [2, 2])?;
    Some((clock, sign * (hours * 3600 + minutes * 60)))
}

/// `N` all-digit fields of the given widths, separated by `separator`.
fn fields<const N: usize>(text: &str, separator: char, widths: [usize; N]) -> Option<[i64; N]> {
    let mut parts = text.split(separator);
    let mut out = [0; N];
    for (slot, width) in out.iter_mut().zip(widths) {
        let part = parts.next()?;
        if part.len() != width || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moving::headers::{due_time as headers_due_time, parse_time_sent};
    use lapin::types::{FieldTable, LongString};

    #[test]
    fn isoformat_times_parse_with_their_offset() {
        let utc = parse_time_sent("2026-12-01 03:52:42:020129 Z").unwrap();
        assert_eq!(parse_iso8601("2026-12-01T03:52:42.020129+00:00"), Some(utc));
        assert_eq!(parse_iso8601("2026-12-01T04:52:42.020129+01:00"), Some(utc));
        assert_eq!(parse_iso8601("2026-12-01T03:52:42.020129Z"), Some(utc));
        let whole = parse_time_sent("2026-12-01 03:52:42:000000 Z").unwrap();
        assert_eq!(parse_iso8601("2026-12-01T01:22:42-02:30"), Some(whole));
        assert_eq!(
            parse_iso8601("2026-12-01T03:52:42.5+00:00"),
            Some(whole + 500_000)
        );
    }

    #[test]
    fn times_without_an_offset_or_out_of_range_are_refused() {
        for text in [
            "2026-12-01T03:52:42.020129",
            "2026-02-30T03:52:42+00:00",
            "2026-12-01T24:00:00+00:00",
            "2026-12-01T03:52:42.1234567+00:00",
            "2026-12-01",
            "",
        ] {
            assert_eq!(parse_iso8601(text), None, "{text}");
        }
    }

    #[test]
    fn a_celery_task_is_due_at_its_eta() {
        let mut headers = FieldTable::default();
        let eta = "2026-12-01T03:52:42.020129+00:00";
        headers.insert(ETA.into(), AMQPValue::LongString(LongString::from(eta)));
        assert_eq!(
            headers_due_time(Some(&headers)),
            Ok(parse_iso8601(eta).unwrap())
        );
        headers.insert(ETA.into(), AMQPValue::Void);
        assert_eq!(
            headers_due_time(Some(&headers)),
            Err(HeaderProblem::Missing(ETA))
        );
    }
}
