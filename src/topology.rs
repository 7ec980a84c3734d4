//! The topology file (SPEC §2): its serde shape and its validation.
//!
//! Everything a user can get wrong is caught here, before any connection, and
//! reported as `file:line:column: what is wrong`. Field-level checks run inside
//! `Deserialize` so that serde_yaml attaches the exact position; checks that
//! span several fields run afterwards and locate the offending key in the text.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

mod declare;
mod endpoint;
mod endpoint_arguments;
mod error;
mod level_arguments;
mod names;

pub use declare::{Declare, FANOUT, TOPIC};
pub use endpoint::Endpoint;
pub use error::TopologyError;
use error::{locate_key, readable, strip_location};
pub use level_arguments::{InitialGroupSize, LeaderLocator, DEFAULT_QUORUM_ARGUMENTS};
pub use names::*;

/// The deepest cascade RabbitMQ accepts: 2^28 s is the largest TTL seen accepted.
pub const MAX_LEVELS: u8 = 28;
/// RabbitMQ's limit on exchange and queue names (a short string).
const MAX_NAME_BYTES: usize = 255;
/// The largest topology file read: far above any real one, far below
/// what could exhaust memory.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// A validated topology: what every command starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    pub broker: BrokerSection,
    pub cascade: CascadeSection,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSection {
    /// AMQP URI; its path is the vhost. A list names a cluster's nodes,
    /// tried in order.
    #[serde(deserialize_with = "url_list")]
    pub url: Vec<String>,
    /// Management API base URL (or one per `url`); derived from `url` when absent.
    #[serde(default, deserialize_with = "optional_url_list")]
    pub management_url: Option<Vec<String>>,
    /// Vhosts to manage in one run; the URL's own vhost when absent.
    #[serde(deserialize_with = "bounded_vhosts")]
    pub vhosts: Option<Vec<String>>,
    /// File holding the password (a mounted secret), so that it is in neither
    /// the URL nor this file.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificates trusted instead of the system store.
    pub tls_ca_cert_file: Option<PathBuf>,
    /// PEM client certificate (client identity), with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for BrokerSection {
    fn default() -> Self {
        BrokerSection {
            url: vec!["amqp://guest:guest@localhost:5672/%2f".to_string()],
            management_url: None,
            vhosts: None,
            password_file: None,
            tls_ca_cert_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeSection {
    pub levels: Levels,
    pub level_name: LevelName,
    pub delivery_exchange: EntityName,
    pub queue_type: QueueType,
    /// Added to the level queues' arguments, over the defaults of the queue type.
    pub queue_arguments: QueueArguments,
    /// Defaults (`DEFAULT_QUORUM_ARGUMENTS`) to leave out: the explicit word
    /// that removing one takes, since either loss makes delayed messages losable.
    pub remove_default_arguments: Vec<String>,
    /// Quorum only: `x-quorum-initial-group-size` of every level queue.
    pub initial_group_size: Option<InitialGroupSize>,
    /// Quorum only: `x-queue-leader-locator` of every level queue.
    pub leader_locator: Option<LeaderLocator>,
}

impl Default for CascadeSection {
    fn default() -> Self {
        CascadeSection {
            levels: Levels(MAX_LEVELS),
            level_name: LevelName("nsb.v2.delay-level-{level:02}".to_string()),
            delivery_exchange: EntityName("nsb.v2.delay-delivery".to_string()),
            queue_type: QueueType::Quorum,
            queue_arguments: QueueArguments::default(),
            remove_default_arguments: Vec::new(),
            initial_group_size: None,
            leader_locator: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Quorum,
    Classic,
}

impl QueueType {
    /// The `x-queue-type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BindTo {
    #[default]
    Queue,
    Exchange,
}

/// Number of cascade levels, 1..=28.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels(pub u8);

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        if !(1..=i64::from(MAX_LEVELS)).contains(&n) {
            return Err(de::Error::custom(format!(
                "levels must be between 1 and {MAX_LEVELS}, got {n} \
                 (RabbitMQ refuses the TTL a deeper level needs)"
            )));
        }
        Ok(Levels(n as u8))
    }
}

/// A queue-argument value as the broker stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ArgValue {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl fmt::Display for ArgValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgValue::Bool(b) => write!(f, "{b}"),
            ArgValue::Int(i) => write!(f, "{i}"),
            ArgValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Queue arguments added to every level queue, over the defaults. The
/// cascade's own arguments (TTL, dead-letter exchange) are computed and may
/// not be set here; `x-queue-type` only to `queue_type`'s own value, which
/// writes the type out explicitly (kombu's classic queues carry it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueArguments(pub BTreeMap<String, ArgValue>);

/// Arguments delaytopo computes itself; a file that sets them would break the chain.
pub const COMPUTED_ARGUMENTS: [&str; 2] = ["x-message-ttl", "x-dead-letter-exchange"];

impl<'de> Deserialize<'de> for QueueArguments {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = Option::<BTreeMap<String, ArgValue>>::deserialize(d)?.unwrap_or_default();
        // Argument names are AMQP short strings: longer ones cannot be sent.
        if let Some(key) = map
            .keys()
            .find(|k| k.is_empty() || k.len() > MAX_NAME_BYTES)
        {
            return Err(de::Error::custom(if key.is_empty() {
                "queue_arguments: an argument name is empty".to_string()
            } else {
                format!(
                    "queue_arguments: argument name `{}…` is {} bytes long; AMQP allows at most {MAX_NAME_BYTES}",
                    key.chars().take(20).collect::<String>(),
                    key.len()
                )
            }));
        }
        if let Some(key) = map
            .keys()
            .find(|k| COMPUTED_ARGUMENTS.contains(&k.as_str()))
        {
            return Err(de::Error::custom(format!(
                "queue_arguments may not set `{key}`: delaytopo computes it for each level \
                 (use levels and delivery_exchange)"
            )));
        }
        Ok(QueueArguments(map))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTopology {
    broker: BrokerSection,
    cascade: CascadeSection,
    endpoints: Option<Vec<Endpoint>>,
}

impl Topology {
    /// Reads and validates a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let whole_file = |message: String| TopologyError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| {
                // One byte past the limit tells a file that is too large.
                std::io::Read::take(file, MAX_FILE_BYTES + 1).read_to_string(&mut text)
            })
            .map_err(|e| whole_file(format!("cannot read the topology file: {e}")))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(whole_file(format!(
                "the topology file is larger than {} KiB; a topology is a few lines",
                MAX_FILE_BYTES / 1024
            )));
        }
        Topology::parse(path, &text)
    }

    /// Parses and validates topology text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Topology, TopologyError> {
        let raw: Option<RawTopology> = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            TopologyError {
                path: path.to_path_buf(),
                line,
                column,
                message: readable(&strip_location(&e.to_string())),
            }
        })?;
        let raw = raw.unwrap_or_default();
        let topology = Topology {
            broker: raw.broker,
            cascade: raw.cascade,
            endpoints: raw.endpoints.unwrap_or_default(),
        };
        topology
            .check_across_fields()
            .map_err(|(key, value, message)| {
                let (line, column) = locate_key(text, key, value);
                TopologyError {
                    path: path.to_path_buf(),
                    line,
                    column,
                    message: readable(&message),
                }
            })?;
        Ok(topology)
    }

    /// Level `level`'s exchange and queue name.
    pub fn level_name(&self, level: u8) -> String {
        self.cascade.level_name.render(level)
    }

    /// Checks that span fields. On failure: the key (and value, if it helps
    /// find the right line) to point at, and the message.
    fn check_across_fields(&self) -> Result<(), (&'static str, Option<String>, String)> {
        let cascade = &self.cascade;
        let mut seen: BTreeMap<String, u8> = BTreeMap::new();
        for level in 0..cascade.levels.0 {
            let name = self.level_name(level);
            if let Some(other) = seen.insert(name.clone(), level) {
                return Err((
                    "level_name",
                    None,
                    format!("level_name gives levels {other} and {level} the same name `{name}`"),
                ));
            }
        }
        self.check_queue_arguments()?;
        let delivery = cascade.delivery_exchange.as_str();
        if let Some(level) = seen.get(delivery) {
            return Err((
                "delivery_exchange",
                None,
                format!("delivery_exchange `{delivery}` is also the name of level {level}"),
            ));
        }
        let mut addresses: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, endpoint) in self.endpoints.iter().enumerate() {
            let address = endpoint.address.as_str();
            let key = endpoint.address_key();
            let problem = match endpoint.queue {
                Some(_) => routing_key_problem(address),
                None => address_problem(address),
            };
            if let Some(problem) = problem {
                return Err((
                    key,
                    Some(address.to_string()),
                    format!("endpoints[{index}]: {problem}"),
                ));
            }
            // A delayed message's routing key is one digit and a dot per
            // level, then the address; the broker refuses keys over 255 bytes.
            let longest = MAX_NAME_BYTES - 2 * usize::from(cascade.levels.0);
            if address.len() > longest {
                return Err((
                    key,
                    Some(address.to_string()),
                    format!(
                        "endpoints[{index}]: address is {} bytes long; a delayed message's routing \
                         key is 2 bytes per level ({} levels) plus the address and must fit in \
                         {MAX_NAME_BYTES} bytes, so at most {longest} are allowed",
                        address.len(),
                        cascade.levels.0
                    ),
                ));
            }
            if let Some(first) = addresses.insert(address, index) {
                return Err((
                    key,
                    Some(address.to_string()),
                    format!(
                        "endpoints[{index}]: address `{address}` is already listed as endpoints[{first}]"
                    ),
                ));
            }
            let names = [Some(&endpoint.destination), endpoint.queue.as_ref()];
            if let Some(name) = names
                .into_iter()
                .flatten()
                .map(EntityName::as_str)
                .find(|name| seen.contains_key(*name) || *name == delivery)
            {
                return Err((
                    key,
                    Some(address.to_string()),
                    format!("endpoints[{index}]: `{name}` is the name of a cascade entity"),
                ));
            }
        }
        declare::check_declarations(&self.endpoints)
    }
}

#[cfg(test)]
mod tests;
