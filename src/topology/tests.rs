use super::*;

pub(super) fn parse(text: &str) -> Result<Topology, TopologyError> {
    Topology::parse(Path::new("t.yaml"), text)
}

pub(super) fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn an_empty_file_means_nservicebus_v2_defaults() {
    let topology = parse("").unwrap();
    assert_eq!(topology.cascade, CascadeSection::default());
    assert_eq!(topology.level_name(5), "nsb.v2.delay-level-05");
    assert_eq!(
        topology.cascade.delivery_exchange.as_str(),
        "nsb.v2.delay-delivery"
    );
    assert!(topology.endpoints.is_empty());
    assert_eq!(parse("# nothing\n").unwrap(), topology);
}

#[test]
fn the_repository_topology_is_the_default() {
    let text = include_str!("../../topology.yaml");
    let topology = parse(text).unwrap();
    assert_eq!(
        topology.cascade.level_queue_arguments(),
        CascadeSection::default().level_queue_arguments()
    );
    assert_eq!(topology.broker, BrokerSection::default());
}

#[test]
fn malformed_yaml_is_located() {
    assert!(
        error("cascade: [\n").starts_with("t.yaml:"),
        "{}",
        error("cascade: [\n")
    );
}

#[test]
fn unknown_keys_are_refused_at_any_depth() {
    assert_eq!(error("cascde: {}\n").split(": ").next(), Some("t.yaml:1:1"));
    let e = error("cascade:\n  levles: 3\n");
    assert!(
        e.starts_with("t.yaml:2:3: cascade: unknown field `levles`"),
        "{e}"
    );
    let e = error("endpoints:\n  - address: Sales\n    bindto: queue\n");
    assert!(
        e.starts_with("t.yaml:3:5: endpoints[0]: unknown field `bindto`"),
        "{e}"
    );
}

#[test]
fn levels_outside_range_are_refused() {
    let e = error("cascade:\n  levels: 29\n");
    assert!(
        e.starts_with("t.yaml:2:") && e.contains("levels must be between 1 and 28, got 29"),
        "{e}"
    );
    assert!(error("cascade:\n  levels: 0\n").contains("got 0"));
    assert_eq!(
        parse("cascade:\n  levels: 1\n").unwrap().cascade.levels,
        Levels(1)
    );
}

#[test]
fn level_name_needs_the_placeholder() {
    let e = error("cascade:\n  level_name: fixed\n");
    assert!(
        e.contains("t.yaml:2:3") && e.contains("must contain {level}"),
        "{e}"
    );
    let t = parse("cascade:\n  level_name: \"d{level}\"\n").unwrap();
    assert_eq!(t.level_name(7), "d7");
}

#[test]
fn names_rabbitmq_refuses_are_refused() {
    assert!(error("cascade:\n  delivery_exchange: \"\"\n").contains("name is empty"));
    assert!(error("cascade:\n  delivery_exchange: amq.delay\n").contains("reserves"));
    let long = "x".repeat(256);
    assert!(error(&format!("cascade:\n  delivery_exchange: {long}\n")).contains("at most 255"));
    assert!(error("cascade:\n  level_name: \"amq.{level}\"\n").contains("reserves"));
    assert!(error("endpoints:\n  - address: \"\"\n").contains("t.yaml:2:5"));
}

#[test]
fn duplicate_endpoints_are_refused_on_the_second_line() {
    let e = error("endpoints:\n  - address: A\n  - address: B\n  - address: A\n");
    assert!(
        e.starts_with("t.yaml:4:5: endpoints[2]: address `A` is already listed"),
        "{e}"
    );
}

#[test]
fn an_address_must_leave_room_for_its_delayed_routing_key() {
    let e = error(&format!("endpoints:\n  - address: {}\n", "a".repeat(200)));
    assert!(
        e.starts_with("t.yaml:2:5: endpoints[0]: address is 200 bytes long")
            && e.contains("at most 199"),
        "{e}"
    );
    assert!(parse(&format!("endpoints:\n  - address: {}\n", "a".repeat(199))).is_ok());
    let shallow = format!(
        "cascade:\n  levels: 1\nendpoints:\n  - address: {}\n",
        "a".repeat(253)
    );
    assert!(parse(&shallow).is_ok());
}

#[test]
fn wildcard_and_empty_words_in_addresses_are_refused() {
    for address in [
        "\"#\"", "\"*\"", "Sales.#", "a.*.b", ".Sales", "Sales.", "a..b",
    ] {
        let e = error(&format!(
            "endpoints:\n  - address: Billing\n  - address: {address}\n"
        ));
        assert!(
            e.starts_with("t.yaml:3:5: endpoints[1]: address `"),
            "{address}: {e}"
        );
    }
    assert!(error("endpoints:\n  - address: \"#\"\n").contains("topic wildcard `#`"));
    assert!(parse("endpoints:\n  - address: Sales.EU#1.*x\n").is_ok());
}

#[test]
fn vhost_lists_are_checked_entry_by_entry_even_through_aliases() {
    let e = error(&format!("broker:\n  vhosts: [a, {}]\n", "v".repeat(256)));
    assert!(e.contains("vhosts[1]: vhost name is 256 bytes long"), "{e}");
    let aliases = format!("broker:\n  vhosts: [&v a{}]\n", ", *v".repeat(MAX_VHOSTS));
    let e = error(&aliases);
    assert!(e.contains("more than 1000 entries"), "{e}");
    assert!(parse("broker:\n  vhosts: [&v a, *v, b]\n").is_ok());
}

#[test]
fn a_file_past_the_size_limit_is_refused_unread() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, &vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
    let e = Topology::load(file.path()).unwrap_err().to_string();
    assert!(e.contains("larger than 1024 KiB"), "{e}");
}

#[test]
fn a_kombu_routing_key_may_be_a_pattern_but_not_wildcards_only() {
    let endpoint = |key: &str| {
        format!("endpoints:\n  - queue: media\n    exchange: media\n    routing_key: \"{key}\"\n")
    };
    assert!(parse(&endpoint("media.#")).is_ok());
    assert!(parse(&endpoint("*.video")).is_ok());
    for key in ["#", "*.#", "media..video"] {
        let e = error(&endpoint(key));
        assert!(e.contains(&format!("routing_key `{key}`")), "{key}: {e}");
    }
}

#[test]
fn a_broker_url_is_one_url_or_a_list_of_nodes() {
    let one = parse("broker:\n  url: amqp://a/\n").unwrap();
    assert_eq!(one.broker.url, ["amqp://a/"]);
    let many =
        parse("broker:\n  url: [amqp://a/, amqp://b/]\n  management_url: http://lb/\n").unwrap();
    assert_eq!(many.broker.url, ["amqp://a/", "amqp://b/"]);
    assert_eq!(
        many.broker.management_url,
        Some(vec!["http://lb/".to_string()])
    );
    let e = error("broker:\n  url: []\n");
    assert!(e.starts_with("t.yaml:2:") && e.contains("not 0"), "{e}");
}

#[test]
fn messages_name_no_rust_types_and_cut_long_values() {
    let e = error("cascade:\n  queue_type: \"a\\nb\"\n");
    assert!(
        e.contains("unknown variant `a\\nb`") && e.lines().count() == 1,
        "{e}"
    );
    let e = error(&format!("\"{}\"\n", "v".repeat(5000)));
    assert!(e.len() < 200 && e.contains("(5000 bytes)"), "{e}");
    assert!(
        e.contains("expected a mapping of keys") && !e.contains("struct"),
        "{e}"
    );
}

#[test]
fn queue_argument_keys_rabbitmq_would_refuse_are_refused() {
    let e = error(&format!(
        "cascade:\n  queue_arguments:\n    {}: 1\n",
        "k".repeat(256)
    ));
    assert!(
        e.starts_with("t.yaml:2:3:") && e.contains("256 bytes"),
        "{e}"
    );
    let e = error("cascade:\n  queue_arguments:\n    \"\": 1\n");
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn colliding_names_are_refused() {
    let e = error("cascade:\n  levels: 3\n  level_name: \"x{level}\"\n  delivery_exchange: x2\n");
    assert!(
        e.starts_with("t.yaml:4:3: delivery_exchange `x2` is also the name of level 2"),
        "{e}"
    );
    let e = error("cascade:\n  level_name: \"x{level}\"\nendpoints:\n  - address: x3\n");
    assert!(
        e.starts_with("t.yaml:4:5: endpoints[0]: `x3` is the name of a cascade entity"),
        "{e}"
    );
}

#[test]
fn bind_to_and_queue_type_are_closed_sets() {
    let e = error("endpoints:\n  - address: A\n    bind_to: topic\n");
    assert!(
        e.starts_with("t.yaml:3:") && e.contains("unknown variant `topic`"),
        "{e}"
    );
    let e = error("cascade:\n  queue_type: stream\n");
    assert!(
        e.starts_with("t.yaml:2:") && e.contains("unknown variant `stream`"),
        "{e}"
    );
}

#[test]
fn computed_arguments_cannot_be_overridden() {
    let e = error("cascade:\n  queue_arguments:\n    x-message-ttl: 5\n");
    assert!(e.contains("may not set `x-message-ttl`"), "{e}");
}
