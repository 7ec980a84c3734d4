//! JSON from the management API, read as the broker writes it rather than
//! as JSON should be: for about 5 s after a cluster node stops or starts,
//! RabbitMQ (seen on 3.10.8) sends two `"online"` keys in one queue object.
//! A strict decoder fails exactly when a health check matters most, so
//! answers are first read into a `Value` that tolerates repeated keys.
//!
//! Which one wins: for two lists, the shorter (for `online`, the fewer
//! members online: a health check may err towards unhealthy, never towards
//! healthy); otherwise the later one, as most JSON readers do.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Decodes `bytes` into `T`, tolerating repeated keys in any object.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Lenient.deserialize(&mut deserializer)?;
    deserializer.end()?;
    serde_json::from_value(value)
}

/// Reads any JSON value; objects keep one value per key (see the module doc).
struct Lenient;

impl<'de> DeserializeSeed<'de> for Lenient {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Lenient {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Lenient)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Lenient)?;
            let keep = match (object.get(&key), &value) {
                (Some(Value::Array(earlier)), Value::Array(later))
                    if earlier.len() < later.len() =>
                {
                    continue;
                }
                _ => value,
            };
            object.insert(key, keep);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::ObservedQueue;

    const IN_FLUX: &str = r#"[{"name": "q", "durable": true, "auto_delete": false,
        "arguments": {}, "members": ["a", "b", "c"],
        "online": ["a", "b", "c"], "online": ["a", "b"]}]"#;

    #[test]
    fn a_strict_decoder_fails_on_a_queue_of_a_cluster_in_flux() {
        assert!(serde_json::from_str::<Vec<ObservedQueue>>(IN_FLUX)
            .unwrap_err()
            .to_string()
            .contains("duplicate field `online`"));
    }

    #[test]
    fn a_repeated_online_list_decodes_to_the_fewer_members_online_whichever_comes_first() {
        let queues: Vec<ObservedQueue> = from_slice(IN_FLUX.as_bytes()).unwrap();
        assert_eq!(queues[0].online, ["a", "b"]);
        let swapped = IN_FLUX.replace(
            r#""online": ["a", "b", "c"], "online": ["a", "b"]"#,
            r#""online": ["a", "b"], "online": ["a", "b", "c"]"#,
        );
        let queues: Vec<ObservedQueue> = from_slice(swapped.as_bytes()).unwrap();
        assert_eq!(queues[0].online, ["a", "b"]);
    }

    #[test]
    fn other_repeated_keys_keep_the_later_value_and_bad_json_still_fails() {
        let value: Value =
            from_slice(br#"{"state": "running", "state": "down", "n": 1.5}"#).unwrap();
        assert_eq!(value, serde_json::json!({"state": "down", "n": 1.5}));
        assert!(from_slice::<Value>(b"{\"a\": 1} trailing").is_err());
        assert!(from_slice::<Value>(b"{\"a\": ").is_err());
    }
}
