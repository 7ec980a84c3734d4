//! Names and addresses as RabbitMQ would accept them, and the bounded
//! lists of vhosts and URLs: the checks that run inside `Deserialize`, so
//! that a bad value is reported at its line and column.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::{MAX_LEVELS, MAX_NAME_BYTES};

/// A queue or exchange name RabbitMQ would accept for a user entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityName(pub String);

impl EntityName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why RabbitMQ would refuse `name` as a user-declared entity, if it would.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("name is empty".to_string())
    } else if name.len() > MAX_NAME_BYTES {
        Some(format!(
            "name is {} bytes long; RabbitMQ allows at most {MAX_NAME_BYTES}",
            name.len()
        ))
    } else if name.starts_with("amq.") {
        Some(format!(
            "name `{name}` uses the prefix `amq.`, which RabbitMQ reserves"
        ))
    } else {
        None
    }
}

/// The most vhosts one run takes: each holds a cascade of over a hundred
/// entities, and a run past this is better split into several.
pub const MAX_VHOSTS: usize = 1000;

/// Why RabbitMQ would refuse `vhost` as a vhost name (an AMQP short string).
pub fn vhost_problem(vhost: &str) -> Option<String> {
    if vhost.is_empty() {
        Some("vhost name is empty".to_string())
    } else if vhost.len() > MAX_NAME_BYTES {
        Some(format!(
            "vhost name is {} bytes long; RabbitMQ allows at most {MAX_NAME_BYTES}",
            vhost.len()
        ))
    } else {
        None
    }
}

/// `broker.vhosts`, checked entry by entry as it is read: YAML aliases can
/// repeat one node thousands of times, so nothing is collected unchecked.
pub(super) fn bounded_vhosts<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    struct Entries;
    impl<'de> de::Visitor<'de> for Entries {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of vhost names")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut vhosts = Vec::new();
            while let Some(vhost) = seq.next_element::<String>()? {
                if let Some(problem) = vhost_problem(&vhost) {
                    return Err(de::Error::custom(format!(
                        "vhosts[{}]: {problem}",
                        vhosts.len()
                    )));
                }
                if vhosts.len() == MAX_VHOSTS {
                    return Err(de::Error::custom(format!(
                        "vhosts: more than {MAX_VHOSTS} entries; split the run"
                    )));
                }
                vhosts.push(vhost);
            }
            Ok(Some(vhosts))
        }
    }
    d.deserialize_any(Entries)
}

/// The most URLs one broker may be given: a cluster's nodes, not a scan.
pub const MAX_URLS: usize = 16;

/// A URL or a non-empty list of them (a cluster's nodes, in the order tried).
pub(super) fn url_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let urls = match OneOrMany::deserialize(d)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    };
    if urls.is_empty() || urls.len() > MAX_URLS {
        return Err(de::Error::custom(format!(
            "give one URL or a list of 1 to {MAX_URLS} (one per node), not {}",
            urls.len()
        )));
    }
    Ok(urls)
}

pub(super) fn optional_url_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    url_list(d).map(Some)
}

/// Why `address` cannot be an endpoint address, if it cannot: it becomes
/// the topic binding key `#.<address>`, so a wildcard word (`#`, `*`) or an
/// empty word would bind the endpoint to other endpoints' delayed messages.
pub fn address_problem(address: &str) -> Option<String> {
    let word = address
        .split('.')
        .find(|word| word.is_empty() || *word == "#" || *word == "*")?;
    Some(if word.is_empty() {
        format!(
            "address `{address}` has an empty word (a leading, trailing or doubled `.`): \
             its binding key `#.{address}` would not match the address literally"
        )
    } else {
        format!(
            "address `{address}` contains the topic wildcard `{word}` as a word: its binding \
             key `#.{address}` would receive other endpoints' delayed messages"
        )
    })
}

/// Why a kombu-form `routing_key` cannot be bound, if it cannot. Unlike an
/// address it may be a topic pattern (`media.#`), as the application binds
/// its own queue with it; but a key of wildcards only would hand every
/// endpoint's delayed messages to this exchange, and an empty word never
/// matches.
pub fn routing_key_problem(key: &str) -> Option<String> {
    let words: Vec<&str> = key.split('.').collect();
    if words.iter().any(|word| word.is_empty()) {
        Some(format!(
            "routing_key `{key}` has an empty word (a leading, trailing or doubled `.`)"
        ))
    } else if words.iter().all(|word| *word == "#" || *word == "*") {
        Some(format!(
            "routing_key `{key}` is wildcards only: its binding key `#.{key}` would receive \
             every endpoint's delayed messages"
        ))
    } else {
        None
    }
}

impl<'de> Deserialize<'de> for EntityName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name_problem(&name) {
            Some(problem) => Err(de::Error::custom(problem)),
            None => Ok(EntityName(name)),
        }
    }
}

/// The level-name template: `{level}` or `{level:02}` is replaced by the level number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelName(pub String);

impl LevelName {
    pub fn render(&self, level: u8) -> String {
        self.0
            .replace("{level:02}", &format!("{level:02}"))
            .replace("{level}", &level.to_string())
    }
}

impl<'de> Deserialize<'de> for LevelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let template = String::deserialize(d)?;
        if !template.contains("{level}") && !template.contains("{level:02}") {
            return Err(de::Error::custom(format!(
                "level_name `{template}` must contain {{level}} or {{level:02}}"
            )));
        }
        let sample = LevelName(template.clone()).render(MAX_LEVELS - 1);
        if let Some(problem) = name_problem(&sample) {
            return Err(de::Error::custom(format!(
                "level_name renders `{sample}`: {problem}"
            )));
        }
        Ok(LevelName(template))
    }
}
