//! `declare:` of an endpoint, the opt-in that has install declare the
//! endpoint's own queue (and exchange) before binding it, as NServiceBus's
//! `endpoint create` does: `true` for the defaults, or a mapping that states
//! `queue_type` and `arguments`. Off when absent. Install never redeclares
//! or deletes what is there, and teardown never deletes what this makes.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::endpoint_arguments::{name_problem, type_problem, value_problem};
use super::{ArgValue, BindTo, Endpoint, EntityName, QueueType, MAX_NAME_BYTES};

/// How an endpoint's queue is declared: durable, not exclusive, not
/// auto-delete, of `queue_type`, with `arguments`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Declare {
    /// Quorum unless the file says classic.
    pub queue_type: QueueType,
    /// Checked against `queue_type`; `x-queue-type` is not among them.
    pub arguments: BTreeMap<String, ArgValue>,
}

impl Declare {
    /// The queue's arguments as declared: the type stated as `x-queue-type`
    /// (so that 3.x and 4.x record the same), then the file's.
    pub fn queue_arguments(&self) -> BTreeMap<String, ArgValue> {
        let queue_type = self.queue_type.as_str();
        let mut arguments = self.arguments.clone();
        arguments.insert("x-queue-type".into(), ArgValue::Str(queue_type.into()));
        arguments
    }
}

/// The exchange types `declare` gives an endpoint exchange.
pub const FANOUT: &str = "fanout";
pub const TOPIC: &str = "topic";

impl Endpoint {
    /// The queue `declare` makes: the application queue in the kombu form,
    /// else the queue named like the address.
    pub fn declared_queue(&self) -> Option<(&EntityName, &Declare)> {
        let declare = self.declare.as_ref()?;
        Some((self.queue.as_ref().unwrap_or(&self.address), declare))
    }

    /// The exchange `declare` makes, and its type: with `bind_to: exchange`
    /// a fanout exchange named like the address, bound to the queue of that
    /// name (NServiceBus's conventional routing topology); in the kombu form
    /// the application's topic exchange. None with `bind_to: queue`.
    pub fn declared_exchange(&self) -> Option<(&EntityName, &'static str)> {
        self.declare.as_ref()?;
        match (self.bind_to, &self.queue) {
            (BindTo::Queue, _) => None,
            (BindTo::Exchange, Some(_)) => Some((&self.destination, TOPIC)),
            (BindTo::Exchange, None) => Some((&self.destination, FANOUT)),
        }
    }
}

/// Two endpoints may declare one queue or exchange only alike: the broker
/// can hold one of each name. Points at the second endpoint.
pub(super) fn check_declarations(
    endpoints: &[Endpoint],
) -> Result<(), (&'static str, Option<String>, String)> {
    let mut queues: BTreeMap<&str, (usize, &Declare)> = BTreeMap::new();
    let mut exchanges: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let refuse = |message: String| {
            Err((
                endpoint.address_key(),
                Some(endpoint.address.to_string()),
                format!("endpoints[{index}]: {message}"),
            ))
        };
        if let Some((name, declare)) = endpoint.declared_queue() {
            let (first, earlier) = *queues.entry(name.as_str()).or_insert((index, declare));
            if earlier != declare {
                return refuse(format!(
                    "declares queue `{name}` with another queue_type or other arguments than \
                     endpoints[{first}]: one queue, one declaration"
                ));
            }
        }
        if let Some((name, kind)) = endpoint.declared_exchange() {
            let (first, earlier) = *exchanges.entry(name.as_str()).or_insert((index, kind));
            if earlier != kind {
                return refuse(format!(
                    "declares exchange `{name}` as {kind}, but endpoints[{first}] declares it \
                     as {earlier}"
                ));
            }
        }
    }
    Ok(())
}

/// The file's shape of a `declare` mapping.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeclare {
    #[serde(default)]
    queue_type: QueueType,
    #[serde(default)]
    arguments: DeclaredArguments,
}

/// `declare: true | false | {queue_type, arguments}`; absent is off. The
/// checks that need the queue type run once the mapping is read, and point
/// at its start; every other check points at its own key or value.
pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Declare>, D::Error> {
    struct Given;
    impl<'de> Visitor<'de> for Given {
        type Value = Option<Declare>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true, false, or a mapping with `queue_type` and `arguments`")
        }
        fn visit_bool<E: de::Error>(self, on: bool) -> Result<Self::Value, E> {
            Ok(on.then(Declare::default))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(E::custom(
                "`declare` is empty: give true, false, or a mapping with `queue_type` and \
                 `arguments`",
            ))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let raw = RawDeclare::deserialize(de::value::MapAccessDeserializer::new(map))?;
            if let Some(problem) = type_problem(raw.queue_type, &raw.arguments.0) {
                return Err(de::Error::custom(problem));
            }
            Ok(Some(Declare {
                queue_type: raw.queue_type,
                arguments: raw.arguments.0,
            }))
        }
    }
    d.deserialize_any(Given)
}

/// `declare.arguments`, each name and value checked as it is read.
#[derive(Default)]
struct DeclaredArguments(BTreeMap<String, ArgValue>);

impl<'de> Deserialize<'de> for DeclaredArguments {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = DeclaredArguments;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of queue arguments")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(DeclaredArguments::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut arguments = BTreeMap::new();
                while let Some(name) = map.next_key_seed(ArgumentName)? {
                    let value = map.next_value_seed(ArgumentValue { name: &name })?;
                    if arguments.insert(name.clone(), value).is_some() {
                        return Err(de::Error::custom(format!("`{name}` is given twice")));
                    }
                }
                Ok(DeclaredArguments(arguments))
            }
        }
        d.deserialize_any(Entries)
    }
}

/// An argument name, refused at its own position when unknown.
struct ArgumentName;

impl<'de> DeserializeSeed<'de> for ArgumentName {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for ArgumentName {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a queue argument name")
    }
    fn visit_str<E: de::Error>(self, name: &str) -> Result<String, E> {
        if name.len() > MAX_NAME_BYTES {
            return Err(E::custom(format!(
                "an argument name is {} bytes long; AMQP allows at most {MAX_NAME_BYTES}",
                name.len()
            )));
        }
        match name_problem(name) {
            Some(problem) => Err(E::custom(problem)),
            None => Ok(name.to_string()),
        }
    }
}

/// The value of argument `name`, refused at its own position when it has
/// the wrong kind or range.
struct ArgumentValue<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for ArgumentValue<'_> {
    type Value = ArgValue;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ArgValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl ArgumentValue<'_> {
    fn checked<E: de::Error>(&self, value: ArgValue) -> Result<ArgValue, E> {
        match value_problem(self.name, &value) {
            Some(problem) => Err(E::custom(problem)),
            None => Ok(value),
        }
    }
}

impl Visitor<'_> for ArgumentValue<'_> {
    type Value = ArgValue;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value for `{}`", self.name)
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<ArgValue, E> {
        self.checked(ArgValue::Bool(value))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<ArgValue, E> {
        self.checked(ArgValue::Int(value))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<ArgValue, E> {
        match i64::try_from(value) {
            Ok(value) => self.checked(ArgValue::Int(value)),
            Err(_) => Err(E::custom(format!(
                "{value} is too large for a queue argument"
            ))),
        }
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<ArgValue, E> {
        Err(E::custom(format!("{value} is not a whole number")))
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<ArgValue, E> {
        self.checked(ArgValue::Str(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, parse};
    use super::*;

    fn declare_of(text: &str) -> Option<Declare> {
        parse(text).unwrap().endpoints[0].declare.clone()
    }

    #[test]
    fn declare_is_off_unless_asked_for() {
        assert_eq!(declare_of("endpoints:\n  - address: Sales\n"), None);
        assert_eq!(
            declare_of("endpoints:\n  - address: Sales\n    declare: false\n"),
            None
        );
    }

    #[test]
    fn declare_true_means_a_quorum_queue_without_arguments() {
        let declare = declare_of("endpoints:\n  - address: Sales\n    declare: true\n").unwrap();
        assert_eq!(declare.queue_type, QueueType::Quorum);
        assert!(declare.arguments.is_empty());
        assert_eq!(
            declare.queue_arguments(),
            BTreeMap::from([("x-queue-type".into(), ArgValue::Str("quorum".into()))])
        );
    }

    #[test]
    fn declare_states_a_queue_type_and_arguments() {
        let declare = declare_of(
            "endpoints:\n  - address: Sales\n    declare:\n      queue_type: classic\n      \
             arguments:\n        x-max-priority: 10\n        x-single-active-consumer: true\n",
        )
        .unwrap();
        assert_eq!(declare.queue_type, QueueType::Classic);
        assert_eq!(
            declare.queue_arguments(),
            BTreeMap::from([
                ("x-max-priority".into(), ArgValue::Int(10)),
                ("x-queue-type".into(), ArgValue::Str("classic".into())),
                ("x-single-active-consumer".into(), ArgValue::Bool(true)),
            ])
        );
        assert!(declare_of("endpoints:\n  - address: S\n    declare: {arguments: }\n").is_some());
    }

    #[test]
    fn unknown_keys_and_arguments_are_refused_where_they_stand() {
        let e = error("endpoints:\n  - address: Sales\n    declare:\n      queue_typ: classic\n");
        assert!(
            e.starts_with("t.yaml:4:7: endpoints[0].declare: unknown field `queue_typ`"),
            "{e}"
        );
        let e = error(
            "endpoints:\n  - address: Sales\n    declare:\n      arguments:\n        \
             x-max-lenght: 5\n",
        );
        assert!(
            e.starts_with("t.yaml:5:9: ") && e.contains("did you mean `x-max-length`?"),
            "{e}"
        );
        let e = error(
            "endpoints:\n  - address: Sales\n    declare:\n      arguments:\n        \
             x-max-length: \"5\"\n",
        );
        assert!(
            e.starts_with("t.yaml:5:23: ")
                && e.contains(
                    "arguments.x-max-length: must be a whole number, 0 or more, not \"5\""
                ),
            "{e}"
        );
        let e = error("endpoints:\n  - address: Sales\n    declare:\n");
        assert!(
            e.contains("`declare` is empty") && !e.contains("unit"),
            "{e}"
        );
        let e = error("endpoints:\n  - address: Sales\n    declare: yes please\n");
        assert!(
            e.starts_with("t.yaml:3:14: ") && e.contains("true, false"),
            "{e}"
        );
        let e = error(
            "endpoints:\n  - address: Sales\n    declare: {queue_type: classic, arguments: \
             {x-overflow: drop}}\n",
        );
        assert!(
            e.ends_with(
                "arguments.x-overflow: must be one of drop-head, reject-publish, \
                 reject-publish-dlx, not \"drop\""
            ),
            "{e}"
        );
        let e = error("endpoints:\n  - address: Sales\n    declare: {queue_type: stream}\n");
        assert!(e.contains("unknown variant `stream`"), "{e}");
    }

    #[test]
    fn arguments_must_suit_the_queue_type() {
        let e = error(
            "endpoints:\n  - address: Sales\n    declare:\n      queue_type: quorum\n      \
             arguments:\n        x-max-priority: 5\n",
        );
        assert!(
            e.starts_with(
                "t.yaml:4:7: endpoints[0].declare: `x-max-priority` applies to \
                           classic queues only, and queue_type is quorum"
            ),
            "{e}"
        );
        let e = error(
            "endpoints:\n  - address: Sales\n    declare:\n      arguments:\n        \
             x-queue-type: classic\n",
        );
        assert!(e.contains("set that instead"), "{e}");
        let e = error(
            "endpoints:\n  - address: Sales\n    declare:\n      arguments:\n        \
             x-dead-letter-strategy: at-least-once\n",
        );
        assert!(e.contains("needs `x-overflow: reject-publish`"), "{e}");
    }

    #[test]
    fn an_exchange_endpoint_declares_a_fanout_exchange_and_its_queue() {
        let t = parse("endpoints:\n  - address: Sales\n    bind_to: exchange\n    declare: true\n")
            .unwrap();
        let endpoint = &t.endpoints[0];
        assert_eq!(
            endpoint.declared_exchange().map(|(n, k)| (n.as_str(), k)),
            Some(("Sales", FANOUT))
        );
        assert_eq!(
            endpoint.declared_queue().map(|(n, _)| n.as_str()),
            Some("Sales")
        );
        let t = parse(
            "endpoints:\n  - queue: video\n    exchange: media\n    routing_key: media.video\n    \
             declare: true\n",
        )
        .unwrap();
        let endpoint = &t.endpoints[0];
        assert_eq!(
            endpoint.declared_exchange().map(|(n, k)| (n.as_str(), k)),
            Some(("media", TOPIC))
        );
        assert_eq!(
            endpoint.declared_queue().map(|(n, _)| n.as_str()),
            Some("video")
        );
    }

    #[test]
    fn one_name_is_declared_one_way_only() {
        let kombu = |key: &str, declare: &str| {
            format!(
                "  - queue: video\n    exchange: media\n    routing_key: {key}\n    declare: \
                 {declare}\n"
            )
        };
        let same = format!(
            "endpoints:\n{}{}",
            kombu("media.video", "true"),
            kombu("media.film", "true")
        );
        assert!(parse(&same).is_ok());
        let other = format!(
            "endpoints:\n{}{}",
            kombu("media.video", "true"),
            kombu("media.film", "{queue_type: classic}")
        );
        let e = error(&other);
        assert!(
            e.starts_with(
                "t.yaml:8:5: endpoints[1]: declares queue `video` with another \
                           queue_type"
            ),
            "{e}"
        );
        let e = error(
            "endpoints:\n  - address: media\n    bind_to: exchange\n    declare: true\n  - \
             queue: video\n    exchange: media\n    routing_key: media.video\n    declare: true\n",
        );
        assert!(
            e.contains("endpoints[1]: declares exchange `media` as topic, but endpoints[0]"),
            "{e}"
        );
    }
}
