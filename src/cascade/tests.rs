use super::*;
use std::path::Path;

fn desired(text: &str) -> Desired {
    Desired::new(&Topology::parse(Path::new("t.yaml"), text).unwrap(), "/")
}

#[test]
fn default_cascade_has_28_levels_56_bindings_and_a_delivery_exchange() {
    let d = desired("");
    assert_eq!(d.exchanges.len(), 29);
    assert_eq!(d.queues.len(), 28);
    assert_eq!(d.bindings.len(), 56);
    assert_eq!(d.exchanges[0].name, "nsb.v2.delay-level-27");
    assert_eq!(d.exchanges[28].name, "nsb.v2.delay-delivery");
    assert!(d.exchanges.iter().all(|e| e.kind == "topic"
        && e.durable
        && !e.auto_delete
        && !e.internal
        && e.arguments.is_empty()));
}

#[test]
fn level_queue_arguments_are_exactly_the_v2_set() {
    let d = desired("");
    let q27 = &d.queues[0];
    assert_eq!(q27.name, "nsb.v2.delay-level-27");
    assert!(q27.durable && !q27.exclusive && !q27.auto_delete);
    let expected = Arguments::from([
        ("x-queue-type".into(), Value::Str("quorum".into())),
        (
            "x-dead-letter-strategy".into(),
            Value::Str("at-least-once".into()),
        ),
        ("x-overflow".into(), Value::Str("reject-publish".into())),
        ("x-message-ttl".into(), Value::Int(134_217_728_000)),
        (
            "x-dead-letter-exchange".into(),
            Value::Str("nsb.v2.delay-level-26".into()),
        ),
    ]);
    assert_eq!(q27.arguments, expected);
    let q0 = &d.queues[27];
    assert_eq!(q0.arguments["x-message-ttl"], Value::Int(1000));
    assert_eq!(
        q0.arguments["x-dead-letter-exchange"],
        Value::Str("nsb.v2.delay-delivery".into())
    );
}

#[test]
fn binding_keys_follow_the_bit_positions() {
    assert_eq!(level_binding_key(28, 27, 1), "1.#");
    assert_eq!(level_binding_key(28, 27, 0), "0.#");
    assert_eq!(
        level_binding_key(28, 0, 1),
        format!("{}1.#", "*.".repeat(27))
    );
    let d = desired("");
    let b = &d.bindings[54..];
    assert_eq!(
        (b[0].source.as_str(), b[0].destination.as_str()),
        ("nsb.v2.delay-level-00", "nsb.v2.delay-level-00")
    );
    assert_eq!(b[1].destination, "nsb.v2.delay-delivery");
    assert_eq!(b[1].destination_type, DestinationKind::Exchange);
    assert_eq!(b[1].routing_key, format!("{}0.#", "*.".repeat(27)));
    assert_eq!(d.bindings[1].destination, "nsb.v2.delay-level-26");
}

#[test]
fn delay_10_to_sales_starts_at_level_3() {
    let route = desired("").route(10, "Sales").unwrap();
    assert_eq!(route.exchange, "nsb.v2.delay-level-03");
    assert_eq!(
        route.routing_key,
        "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.1.0.Sales"
    );
    assert_eq!(
        desired("").route(0, "A").unwrap().exchange,
        "nsb.v2.delay-level-00"
    );
}

#[test]
fn delays_beyond_the_cascade_have_no_route() {
    let d = desired("");
    assert!(d.route(max_delay_seconds(28), "A").is_some());
    assert!(d.route(1 << 28, "A").is_none());
}

#[test]
fn routing_keys_parse_back_with_dotted_addresses() {
    let key = routing_key(28, 268_435_455, "Big.Sales").unwrap();
    assert_eq!(
        parse_routing_key(28, &key),
        Some((268_435_455, "Big.Sales"))
    );
    assert_eq!(parse_routing_key(28, "0.1.garbage"), None);
}

#[test]
fn endpoints_bind_by_kind() {
    let d =
        desired("endpoints:\n  - address: Sales\n  - address: Billing\n    bind_to: exchange\n");
    let endpoints: Vec<_> = d.endpoint_bindings().collect();
    assert_eq!(endpoints[0].routing_key, "#.Sales");
    assert_eq!(endpoints[0].destination_type, DestinationKind::Queue);
    assert_eq!(endpoints[1].destination, "Billing");
    assert_eq!(endpoints[1].destination_type, DestinationKind::Exchange);
    assert_eq!(d.cascade_bindings().count(), 56);
}

#[test]
fn a_queue_on_an_exchange_gets_both_of_kombus_bindings() {
    let d = desired(
        "endpoints:\n  - queue: video\n    exchange: media\n    routing_key: media.video\n",
    );
    let endpoints: Vec<_> = d.endpoint_bindings().map(|b| b.key()).collect();
    assert_eq!(
        endpoints,
        [
            (
                "nsb.v2.delay-delivery",
                "media",
                DestinationKind::Exchange,
                "#.media.video"
            ),
            ("media", "video", DestinationKind::Queue, "#.media.video"),
        ]
    );
    assert_eq!(d.cascade_bindings().count(), 56);
}

#[test]
fn the_celery_example_is_kombus_cascade() {
    let d = desired(include_str!("../../examples/celery.yaml"));
    assert_eq!(d.exchanges[0].name, "celery_delayed_27");
    assert_eq!(d.delivery_exchange, "celery_delayed_delivery");
    let q0 = &d.queues[27];
    assert_eq!(q0.name, "celery_delayed_0");
    assert_eq!(
        q0.arguments,
        Arguments::from([
            ("x-queue-type".into(), Value::Str("quorum".into())),
            (
                "x-dead-letter-strategy".into(),
                Value::Str("at-least-once".into())
            ),
            ("x-overflow".into(), Value::Str("reject-publish".into())),
            ("x-message-ttl".into(), Value::Int(1000)),
            (
                "x-dead-letter-exchange".into(),
                Value::Str("celery_delayed_delivery".into())
            ),
        ])
    );
}

#[test]
fn v1_cascade_uses_lazy_classic_queues() {
    let d = desired(include_str!("../../examples/nservicebus-v1.yaml"));
    let q = &d.queues[0];
    assert_eq!(q.name, "nsb.delay-level-27");
    assert_eq!(
        q.arguments.keys().map(String::as_str).collect::<Vec<_>>(),
        ["x-dead-letter-exchange", "x-message-ttl", "x-queue-mode"]
    );
    assert_eq!(d.delivery_exchange, "nsb.delay-delivery");
}
