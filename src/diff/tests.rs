use super::*;
use crate::test_fixtures::{desired, installed, observed_queue};

#[test]
fn an_empty_vhost_misses_everything() {
    let d = desired("");
    let s = structure(&d, &Observed::default());
    assert_eq!(
        (
            s.missing_exchanges.len(),
            s.missing_queues.len(),
            s.missing_bindings.len()
        ),
        (29, 28, 56)
    );
    assert!(!s.is_complete());
    assert_eq!(s.findings().len(), 113);
}

#[test]
fn a_correct_install_is_complete() {
    let d = desired("endpoints:\n  - address: Sales\n");
    let mut observed = installed(&d);
    observed
        .queues
        .insert("Sales".into(), observed_queue("Sales", Arguments::new()));
    let s = structure(&d, &observed);
    assert!(s.is_complete(), "{:?}", s.findings());
    assert!(s.findings().is_empty());
    assert_eq!(s.matching, 29 + 28 + 57);
}

#[test]
fn a_different_ttl_is_a_conflict_with_expected_and_actual() {
    let d = desired("");
    let mut observed = installed(&d);
    let q = observed.queues.get_mut("nsb.v2.delay-level-05").unwrap();
    q.arguments
        .insert("x-message-ttl".into(), ArgValue::Int(1000));
    q.arguments.remove("x-overflow");
    let s = structure(&d, &observed);
    assert_eq!(s.conflicts.len(), 1, "one queue is one conflict");
    let differences = &s.conflicts[0].differences;
    assert_eq!(differences.len(), 2);
    let ttl = differences
        .iter()
        .find(|f| f.message.contains("x-message-ttl"))
        .unwrap();
    assert_eq!(ttl.entity, "queue nsb.v2.delay-level-05");
    assert_eq!(ttl.expected.as_deref(), Some("x-message-ttl=32000"));
    assert_eq!(ttl.actual.as_deref(), Some("x-message-ttl=1000"));
    assert_eq!(ttl.level, Some(5));
    assert!(differences
        .iter()
        .any(|f| f.actual.as_deref() == Some("x-overflow=(absent)")));
    assert_eq!(s.findings().len(), 1);
}

#[test]
fn exchange_properties_are_compared() {
    let d = desired("");
    let mut observed = installed(&d);
    observed
        .exchanges
        .get_mut("nsb.v2.delay-delivery")
        .unwrap()
        .kind = "direct".into();
    let s = structure(&d, &observed);
    assert_eq!(
        s.conflicts[0].message(),
        "exchange nsb.v2.delay-delivery: type is direct, expected topic"
    );
}

#[test]
fn a_stray_binding_on_a_cascade_exchange_is_an_error() {
    let d = desired("");
    let mut observed = installed(&d);
    observed.bindings.push(ObservedBinding {
        source: "nsb.v2.delay-level-03".into(),
        destination: "other".into(),
        destination_type: DestinationKind::Queue,
        routing_key: "#".into(),
        arguments: Arguments::new(),
    });
    let s = structure(&d, &observed);
    assert_eq!(s.strays.len(), 1);
    assert_eq!(s.strays[0].1.kind, "stray_binding");
    assert!(s.is_complete(), "a stray does not stop install");
    assert_eq!(s.findings().len(), 1);
}

#[test]
fn a_binding_into_a_cascade_queue_from_elsewhere_is_stray() {
    let d = desired("");
    let mut observed = installed(&d);
    observed.bindings.push(ObservedBinding {
        source: "amq.topic".into(),
        destination: "nsb.v2.delay-level-00".into(),
        destination_type: DestinationKind::Queue,
        routing_key: "x".into(),
        arguments: Arguments::new(),
    });
    assert_eq!(structure(&d, &observed).strays.len(), 1);
}

#[test]
fn the_probe_sink_binding_is_neither_stray_nor_endpoint() {
    let d = desired("");
    let mut o = installed(&d);
    o.bindings.push(ObservedBinding {
        source: d.delivery_exchange.clone(),
        destination: crate::cascade::PROBE_SINK_QUEUE.to_string(),
        destination_type: DestinationKind::Queue,
        routing_key: crate::cascade::probe_sink_binding_key(),
        arguments: Arguments::new(),
    });
    let s = structure(&d, &o);
    assert!(s.strays.is_empty() && s.unlisted_endpoints.is_empty());
}

#[test]
fn a_wildcard_endpoint_binding_found_on_the_broker_is_a_stray() {
    let d = desired("");
    let mut o = installed(&d);
    for wildcard in ["#", "*"] {
        o.bindings.push(ObservedBinding {
            source: d.delivery_exchange.clone(),
            destination: wildcard.to_string(),
            destination_type: DestinationKind::Queue,
            routing_key: format!("#.{wildcard}"),
            arguments: Arguments::new(),
        });
    }
    let s = structure(&d, &o);
    assert_eq!(s.strays.len(), 2);
    assert!(s.unlisted_endpoints.is_empty());
}

#[test]
fn unlisted_endpoint_bindings_are_noted_and_checked() {
    let d = desired("");
    let mut observed = installed(&d);
    observed.bindings.push(ObservedBinding {
        source: "nsb.v2.delay-delivery".into(),
        destination: "Billing".into(),
        destination_type: DestinationKind::Queue,
        routing_key: "#.Billing".into(),
        arguments: Arguments::new(),
    });
    let s = structure(&d, &observed);
    assert!(s.strays.is_empty());
    assert_eq!(s.unlisted_endpoints.len(), 1);
    assert_eq!(s.dangling_endpoints[0].entity, "queue Billing");
}

#[test]
fn a_listed_endpoint_without_its_queue_is_dangling() {
    let d = desired("endpoints:\n  - address: Sales\n");
    let observed = installed(&d);
    let s = structure(&d, &observed);
    assert_eq!(s.dangling_endpoints.len(), 1);
    assert_eq!(s.dangling_endpoints[0].kind, "endpoint_missing");
}
