//! Management API -> Observed: what one vhost holds now, read in bulk.
//!
//! `Depth::Definitions` reads exchanges, queues and bindings (what install and
//! teardown need); `Depth::Full` adds policies, operator policies, the
//! overview, feature flags and nodes (what verify needs). All requests of a
//! depth are issued at once, so a look costs about one round trip.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::capacity::{NodeResources, VhostLimits};
use crate::cascade::{Arguments, DestinationKind};
use crate::deprecations::DeprecatedFeature;
use crate::mgmt::Management;
use crate::topology::ArgValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Definitions,
    Full,
}

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub exchanges: BTreeMap<String, ObservedExchange>,
    pub queues: BTreeMap<String, ObservedQueue>,
    pub bindings: Vec<ObservedBinding>,
    pub policies: Vec<Policy>,
    pub operator_policies: Vec<Policy>,
    /// Present with `Depth::Full`.
    pub broker: Option<BrokerInfo>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ObservedExchange {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    #[serde(deserialize_with = "arguments")]
    pub arguments: Arguments,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ObservedQueue {
    pub name: String,
    pub durable: bool,
    #[serde(default)]
    pub exclusive: bool,
    pub auto_delete: bool,
    #[serde(deserialize_with = "arguments")]
    pub arguments: Arguments,
    /// `quorum`, `classic`, `stream`.
    #[serde(rename = "type", default)]
    pub queue_type: String,
    /// Ready + unacknowledged (+ dead-letter backlog, not always at once); lags.
    pub messages: Option<u64>,
    pub messages_ready: Option<u64>,
    pub messages_unacknowledged: Option<u64>,
    /// Quorum queues' at-least-once dead-letter backlog: invisible to AMQP.
    pub messages_dlx: Option<u64>,
    /// Consumers: a staging queue has one while a move releases from it.
    #[serde(default)]
    pub consumers: Option<u64>,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default)]
    pub online: Vec<String>,
    /// The quorum queue's leader node (where its dead-letter worker runs).
    pub leader: Option<String>,
    pub policy: Option<String>,
    pub operator_policy: Option<String>,
    #[serde(default, deserialize_with = "policy_definition")]
    pub effective_policy_definition: Option<Map<String, Value>>,
    pub state: Option<String>,
    /// With `?lengths_age=…&lengths_incr=…`: `messages` over recent seconds.
    #[serde(default)]
    pub messages_details: Option<LengthHistory>,
}

/// A queue length's recent history, newest sample first.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct LengthHistory {
    #[serde(default)]
    pub samples: Vec<LengthSample>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LengthSample {
    pub sample: u64,
    /// Milliseconds since the epoch.
    pub timestamp: u64,
}

impl ObservedQueue {
    /// Messages the statistics say the queue holds, counting the dead-letter backlog.
    /// `messages` counts the backlog too, but not always at the same moment
    /// as `messages_dlx` (SPEC §1): take the larger reading, never the sum.
    pub fn held_messages(&self) -> u64 {
        let parts = self.messages_ready.unwrap_or(0)
            + self.messages_unacknowledged.unwrap_or(0)
            + self.messages_dlx.unwrap_or(0);
        parts.max(self.messages.unwrap_or(0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct ObservedBinding {
    pub source: String,
    pub destination: String,
    pub destination_type: DestinationKind,
    pub routing_key: String,
    #[serde(deserialize_with = "arguments")]
    pub arguments: Arguments,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Policy {
    pub name: String,
    pub pattern: String,
    #[serde(rename = "apply-to")]
    pub apply_to: String,
    pub definition: Map<String, Value>,
    pub priority: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BrokerInfo {
    pub rabbitmq_version: String,
    /// Feature flag name -> state (`enabled`, `disabled`, ...).
    pub feature_flags: BTreeMap<String, String>,
    pub statistics_disabled: bool,
    pub cluster_nodes: usize,
    /// Resource alarms in force, as `node: memory` / `node: disk` (every
    /// publish, dead-lettering included, is blocked while one is).
    pub alarms: Vec<String>,
    /// The API paths the user was refused (`feature-flags` needs the
    /// administrator tag, `nodes` monitoring): what they tell was not checked.
    pub unreadable: Vec<&'static str>,
    /// Each node's file handles and sockets, when `/api/nodes` was readable.
    pub nodes: Vec<NodeResources>,
    /// What the broker reports in use; `None` before 3.13 (no such endpoint).
    pub deprecated_used: Option<Vec<DeprecatedFeature>>,
}

#[derive(Deserialize)]
struct Overview {
    rabbitmq_version: String,
    #[serde(default)]
    disable_stats: bool,
}

#[derive(Deserialize)]
struct FeatureFlag {
    name: String,
    state: String,
}

#[derive(Deserialize)]
struct Node {
    name: String,
    #[serde(default)]
    mem_alarm: bool,
    #[serde(default)]
    disk_free_alarm: bool,
}

impl<'de> Deserialize<'de> for DestinationKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "queue" => Ok(DestinationKind::Queue),
            "exchange" => Ok(DestinationKind::Exchange),
            other => Err(serde::de::Error::custom(format!(
                "destination_type `{other}`"
            ))),
        }
    }
}

/// Management API argument tables, as the values the broker holds.
fn arguments<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arguments, D::Error> {
    let map = Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default();
    Ok(map.into_iter().map(|(k, v)| (k, arg_value(v))).collect())
}

/// The policy keys in effect on a queue. Brokers say "none" as `{}`, `[]`
/// (an empty Erlang proplist) or `""`, depending on the version; all three
/// mean no key.
fn policy_definition<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(map) => Some(map),
        Value::Null => None,
        _ => Some(Map::new()),
    })
}

pub fn arg_value(value: Value) -> ArgValue {
    match value {
        Value::Bool(b) => ArgValue::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ArgValue::Int(i),
            None => ArgValue::Str(n.to_string()),
        },
        Value::String(s) => ArgValue::Str(s),
        other => ArgValue::Str(other.to_string()),
    }
}

/// The most queues the management API gives in one page (RabbitMQ refuses
/// a larger `page_size`, and from 4.0.6 caps unpaginated answers too).
const QUEUE_PAGE: usize = 500;

#[derive(Deserialize)]
struct Page<T> {
    items: Vec<T>,
    page_count: usize,
}

/// Every queue of the client's vhost, page by page, so a vhost with
/// thousands of endpoint queues is read whole: the first page says how many
/// pages there are, the rest are read at once. `query`: more parameters
/// (`a=1&b=2`), or "".
pub async fn queues<T: serde::de::DeserializeOwned>(
    management: &Management,
    query: &str,
) -> Result<Vec<T>> {
    let more = if query.is_empty() {
        String::new()
    } else {
        format!("&{query}")
    };
    let page = |number: usize| {
        management.get::<Page<T>>(format!(
            "{}?page={number}&page_size={QUEUE_PAGE}&sort=name{more}",
            management.vhost_path("queues")
        ))
    };
    let first = page(1).await?;
    let rest = futures::future::try_join_all((2..=first.page_count).map(page)).await?;
    let mut items = first.items;
    items.extend(rest.into_iter().flat_map(|p| p.items));
    Ok(items)
}

/// What plan and install check before creating anything: the vhost's
/// limits and the nodes' headroom.
#[derive(Debug, Clone, Default)]
pub struct Capacity {
    pub limits: VhostLimits,
    pub nodes: Vec<NodeResources>,
}

#[derive(Deserialize)]
struct LimitsEntry {
    value: VhostLimits,
}

/// Reads the vhost's limits and the nodes' resources; what the user may not
/// read counts as unlimited (install's own declares are then the check).
pub async fn capacity(management: &Management) -> Result<Capacity> {
    let limits_path = management.vhost_path("vhost-limits");
    let limits = management.get_if_permitted::<Vec<LimitsEntry>>(&limits_path);
    let nodes = management.get_if_permitted::<Vec<NodeResources>>("nodes");
    let (limits, nodes) = futures::try_join!(limits, nodes)?;
    let limits = limits
        .and_then(|entries| entries.into_iter().next())
        .map(|entry| entry.value)
        .unwrap_or_default();
    Ok(Capacity {
        limits,
        nodes: nodes.unwrap_or_default(),
    })
}

/// The resource alarms in force on any node: `None` when the user may not
/// read `/api/nodes` (it needs the `monitoring` tag).
pub async fn alarms(management: &Management) -> Result<Option<Vec<String>>> {
    let nodes = management.get_if_permitted::<Vec<Node>>("nodes").await?;
    Ok(nodes.map(|nodes| alarms_of(&nodes)))
}

fn alarms_of(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|node| {
            [
                (node.mem_alarm, format!("{}: memory", node.name)),
                (node.disk_free_alarm, format!("{}: disk", node.name)),
            ]
        })
        .filter_map(|(on, alarm)| on.then_some(alarm))
        .collect()
}

/// Reads the client's vhost at the given depth.
pub async fn observe(management: &Management, depth: Depth) -> Result<Observed> {
    let exchanges = management.get::<Vec<ObservedExchange>>(management.vhost_path("exchanges"));
    let queues = queues::<ObservedQueue>(management, "");
    let bindings = management.get::<Vec<ObservedBinding>>(management.vhost_path("bindings"));
    let (exchanges, queues, bindings, extra) = match depth {
        Depth::Definitions => {
            let (e, q, b) = futures::try_join!(exchanges, queues, bindings)?;
            (e, q, b, None)
        }
        Depth::Full => {
            let policies = management.get::<Vec<Policy>>(management.vhost_path("policies"));
            let operator_policies =
                management.get::<Vec<Policy>>(management.vhost_path("operator-policies"));
            let overview = management.get::<Overview>("overview");
            let flags = management.get_if_permitted::<Vec<FeatureFlag>>("feature-flags");
            // Read once, taken two ways: resource alarms and descriptor headroom.
            let nodes = management.get_if_permitted::<Vec<Value>>("nodes");
            let deprecated =
                management.get_if_permitted::<Vec<DeprecatedFeature>>("deprecated-features/used");
            let (e, q, b, p, op, o, f, n, d) = futures::try_join!(
                exchanges,
                queues,
                bindings,
                policies,
                operator_policies,
                overview,
                flags,
                nodes,
                deprecated
            )?;
            let unreadable = [("feature-flags", f.is_none()), ("nodes", n.is_none())]
                .into_iter()
                .filter_map(|(path, refused)| refused.then_some(path))
                .collect();
            // Without /api/nodes, the nodes the queues have members on.
            let cluster_nodes = n.as_ref().map_or_else(
                || {
                    q.iter()
                        .flat_map(|q| &q.members)
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                },
                |n| n.len(),
            );
            let (alarm_states, resources): (Vec<Node>, Vec<NodeResources>) = n
                .iter()
                .flatten()
                .filter_map(|node| {
                    let alarms = serde_json::from_value(node.clone()).ok()?;
                    let resources = serde_json::from_value(node.clone()).ok()?;
                    Some((alarms, resources))
                })
                .unzip();
            let alarms = alarms_of(&alarm_states);
            let broker = BrokerInfo {
                alarms,
                rabbitmq_version: o.rabbitmq_version,
                feature_flags: f
                    .unwrap_or_default()
                    .into_iter()
                    .map(|f| (f.name, f.state))
                    .collect(),
                statistics_disabled: o.disable_stats,
                cluster_nodes,
                unreadable,
                nodes: resources,
                deprecated_used: d,
            };
            (e, q, b, Some((p, op, broker)))
        }
    };
    let (policies, operator_policies, broker) = match extra {
        Some((p, op, b)) => (p, op, Some(b)),
        None => (Vec::new(), Vec::new(), None),
    };
    Ok(Observed {
        exchanges: exchanges.into_iter().map(|e| (e.name.clone(), e)).collect(),
        queues: queues.into_iter().map(|q| (q.name.clone(), q)).collect(),
        // The default exchange's implicit bindings are not the cascade's business.
        bindings: bindings
            .into_iter()
            .filter(|b| !b.source.is_empty())
            .collect(),
        policies,
        operator_policies,
        broker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queue_answers_decode_with_integer_ttls_and_stats() {
        let queue: ObservedQueue = serde_json::from_value(json!({
            "name": "nsb.v2.delay-level-00", "durable": true, "exclusive": false, "auto_delete": false,
            "arguments": {"x-message-ttl": 1000, "x-queue-type": "quorum", "x-flag": true},
            "type": "quorum", "messages": 2, "messages_dlx": 1, "members": ["a", "b"], "online": ["a"],
            "policy": null, "operator_policy": "op", "effective_policy_definition": {"max-length": 5}
        }))
        .unwrap();
        assert_eq!(queue.arguments["x-message-ttl"], ArgValue::Int(1000));
        assert_eq!(queue.arguments["x-flag"], ArgValue::Bool(true));
        assert_eq!(queue.held_messages(), 2);
        assert_eq!(queue.operator_policy.as_deref(), Some("op"));
    }

    #[test]
    fn a_fresh_queue_without_statistics_decodes() {
        let queue: ObservedQueue = serde_json::from_value(json!({
            "name": "q", "durable": true, "exclusive": false, "auto_delete": false, "arguments": {}
        }))
        .unwrap();
        assert_eq!(queue.messages, None);
        assert_eq!(queue.held_messages(), 0);
    }

    #[test]
    fn an_empty_policy_definition_decodes_in_every_versions_spelling() {
        for empty in [json!({}), json!([]), json!("")] {
            let queue: ObservedQueue = serde_json::from_value(json!({
                "name": "q", "durable": true, "auto_delete": false, "arguments": {},
                "effective_policy_definition": empty
            }))
            .unwrap();
            assert_eq!(queue.effective_policy_definition, Some(Map::new()));
        }
    }

    #[test]
    fn policies_decode_with_apply_to() {
        let policy: Policy = serde_json::from_value(json!({
            "vhost": "v", "name": "p", "pattern": "^nsb", "apply-to": "queues",
            "definition": {"message-ttl": 5}, "priority": 3
        }))
        .unwrap();
        assert_eq!(policy.apply_to, "queues");
        assert_eq!(policy.priority, 3);
    }
}
