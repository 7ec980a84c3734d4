use super::*;
use crate::test_fixtures::desired;

#[test]
fn probe_addresses_are_unique_and_endpoint_shaped() {
    let a = probe_address();
    assert!(a.starts_with("delaytopo.probe.") && a.len() == 32, "{a}");
    assert_ne!(a, probe_address());
}

#[test]
fn delays_beyond_the_cascade_and_bad_margins_are_bad_input() {
    let d = desired("cascade:\n  levels: 3\n");
    let args = |delay, margin| ProbeArgs { delay, margin };
    assert!(check_args(&d, &args(7, 3.0)).is_ok());
    let e = check_args(&d, &args(8, 3.0)).unwrap_err();
    assert_eq!(crate::exit::code_for(&e), crate::exit::BAD_INPUT);
    assert!(e.to_string().contains("at most 7 s"), "{e}");
    assert!(check_args(&d, &args(2, -1.0)).is_err());
    assert!(check_args(&d, &args(2, f64::NAN)).is_err());
}

#[test]
fn a_late_probe_is_an_error_finding_and_an_arrival_is_information() {
    let mut report = ProbeReport {
        address: "delaytopo.probe.1".into(),
        exchange: "nsb.v2.delay-level-01".into(),
        routing_key: "k".into(),
        delay_seconds: 2,
        margin_seconds: 3.0,
        arrived: true,
        observed_seconds: Some(2.04),
        lateness_seconds: Some(0.04),
        failure: None,
        sink: None,
    };
    let f = report.finding();
    assert_eq!(
        (f.severity, f.kind.as_str()),
        (Severity::Info, "probe_arrived")
    );
    assert!(
        f.message.ends_with("arrived after 2.04 s (+0.04 s)"),
        "{}",
        f.message
    );
    report.failure = Some("did not arrive".into());
    assert_eq!(report.finding().severity, Severity::Error);
}
