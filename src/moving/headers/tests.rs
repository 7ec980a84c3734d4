use super::*;
use lapin::types::LongString;

fn headers(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in entries {
        table.insert((*name).into(), value.clone());
    }
    table
}

fn sent(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

#[test]
fn time_sent_parses_to_the_microsecond() {
    assert_eq!(parse_time_sent("1970-01-01 00:00:00:000000 Z"), Some(0));
    assert_eq!(
        parse_time_sent("2022-05-06 12:00:10:000001 Z"),
        Some(1_651_838_410_000_001)
    );
    assert_eq!(
        parse_time_sent("2024-02-29 23:59:59:999999 Z"),
        Some(1_709_251_199_999_999)
    );
}

#[test]
fn malformed_time_sent_is_refused() {
    for text in [
        "",
        "2022-05-06 12:00:10 Z",
        "2022-05-06T12:00:10:000000 Z",
        "2022-05-06 12:00:10:000000Z",
        "2022-05-06 12:00:10:000000 +",
        "2023-02-29 00:00:00:000000 Z",
        "2022-13-01 00:00:00:000000 Z",
        "2022-05-06 24:00:00:000000 Z",
        "2022-05-06 12:60:00:000000 Z",
        "2022-05-0x 12:00:00:000000 Z",
    ] {
        assert_eq!(parse_time_sent(text), None, "{text:?}");
    }
}

#[test]
fn time_sent_formats_back_to_itself() {
    for text in [
        "1970-01-01 00:00:00:000000 Z",
        "1999-12-31 23:59:59:999999 Z",
        "2024-02-29 08:07:06:050403 Z",
        "2100-03-01 00:00:00:000001 Z",
    ] {
        assert_eq!(format_time_sent(parse_time_sent(text).unwrap()), text);
    }
}

#[test]
fn due_time_is_time_sent_plus_the_delay() {
    let h = headers(&[
        (TIME_SENT, sent("2022-05-06 12:00:00:000000 Z")),
        (DELAY_IN_SECONDS, AMQPValue::LongInt(10)),
    ]);
    let due = due_time(Some(&h)).unwrap();
    assert_eq!(format_time_sent(due), "2022-05-06 12:00:10:000000 Z");
    let h = headers(&[
        (TIME_SENT, sent("2022-05-06 12:00:00:000000 Z")),
        (DELAY_IN_SECONDS, AMQPValue::LongLongInt(-5)),
    ]);
    assert_eq!(
        format_time_sent(due_time(Some(&h)).unwrap()),
        "2022-05-06 11:59:55:000000 Z"
    );
}

#[test]
fn unusable_headers_say_why() {
    assert_eq!(due_time(None), Err(HeaderProblem::Missing(TIME_SENT)));
    let only_sent = headers(&[(TIME_SENT, sent("2022-05-06 12:00:00:000000 Z"))]);
    assert_eq!(
        due_time(Some(&only_sent)),
        Err(HeaderProblem::Missing(DELAY_IN_SECONDS))
    );
    let string_delay = headers(&[
        (TIME_SENT, sent("2022-05-06 12:00:00:000000 Z")),
        (DELAY_IN_SECONDS, sent("10")),
    ]);
    assert_eq!(
        due_time(Some(&string_delay)),
        Err(HeaderProblem::WrongType {
            header: DELAY_IN_SECONDS,
            found: "string"
        })
    );
    let numeric_sent = headers(&[
        (TIME_SENT, AMQPValue::LongLongInt(0)),
        (DELAY_IN_SECONDS, AMQPValue::LongInt(1)),
    ]);
    assert_eq!(
        due_time(Some(&numeric_sent)).unwrap_err().kind(),
        "wrong type of header NServiceBus.TimeSent"
    );
    let bad_sent = headers(&[
        (TIME_SENT, sent("yesterday")),
        (DELAY_IN_SECONDS, AMQPValue::LongInt(1)),
    ]);
    let problem = due_time(Some(&bad_sent)).unwrap_err();
    assert_eq!(problem.kind(), "unparsable header NServiceBus.TimeSent");
    assert!(problem.to_string().contains("\"yesterday\""));
    let overflowing = headers(&[
        (TIME_SENT, sent("2022-05-06 12:00:00:000000 Z")),
        (DELAY_IN_SECONDS, AMQPValue::LongLongInt(i64::MAX)),
    ]);
    assert!(matches!(
        due_time(Some(&overflowing)),
        Err(HeaderProblem::Unparsable { .. })
    ));
}

#[test]
fn remaining_delay_rounds_to_the_nearest_second() {
    let s = MICROS_PER_SECOND;
    assert_eq!(remaining_seconds(10 * s, 0), 10);
    assert_eq!(remaining_seconds(10 * s + 499_999, 0), 10);
    assert_eq!(remaining_seconds(10 * s + 500_001, 0), 11);
    assert_eq!(remaining_seconds(10 * s + 500_000, 0), 10);
    assert_eq!(remaining_seconds(11 * s + 500_000, 0), 12);
    assert_eq!(remaining_seconds(0, 3 * s), -3);
    assert_eq!(remaining_seconds(0, 400_000), 0);
    assert_eq!(remaining_seconds(i64::MAX, i64::MIN), 18_446_744_073_710);
}

#[test]
fn bookkeeping_headers_are_dropped_and_the_rest_kept() {
    let h = headers(&[
        ("x-death", AMQPValue::FieldArray(Default::default())),
        ("x-first-death-queue", sent("nsb.delay-level-03")),
        ("x-first-death-exchange", sent("nsb.delay-level-03")),
        ("x-first-death-reason", sent("expired")),
        ("x-delivery-count", AMQPValue::LongInt(1)),
        (TIME_SENT, sent("2022-05-06 12:00:00:000000 Z")),
        ("x-custom", sent("kept")),
    ]);
    let kept = without_bookkeeping(&h);
    let names: Vec<&str> = kept.inner().keys().map(ShortString::as_str).collect();
    assert_eq!(names, [TIME_SENT, "x-custom"]);
}

#[test]
fn poison_copies_keep_every_header_and_say_why() {
    let h = headers(&[
        ("x-death", AMQPValue::LongInt(1)),
        ("x-custom", sent("kept")),
    ]);
    let poisoned = with_poison_headers(Some(&h), "missing header X", "q", "0.1.A");
    let get = |name: &str| poisoned.inner().get(name).cloned();
    assert_eq!(get(POISON_REASON), Some(sent("missing header X")));
    assert_eq!(get(POISON_SOURCE_QUEUE), Some(sent("q")));
    assert_eq!(get(POISON_SOURCE_ROUTING_KEY), Some(sent("0.1.A")));
    assert_eq!(get("x-death"), Some(AMQPValue::LongInt(1)));
    assert_eq!(poisoned.inner().len(), 5);
}

#[test]
fn the_message_id_comes_from_the_properties_or_the_headers() {
    let h = headers(&[(MESSAGE_ID, sent("nsb-id"))]);
    assert_eq!(
        message_id(Some(&"amqp-id".into()), Some(&h)).as_deref(),
        Some("amqp-id")
    );
    assert_eq!(message_id(None, Some(&h)).as_deref(), Some("nsb-id"));
    assert_eq!(message_id(Some(&"".into()), None), None);
}
