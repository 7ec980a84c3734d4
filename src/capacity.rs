//! Whether the cascade fits: the vhost's `max-queues`, which would make
//! install fail halfway, and each
//! node's file-handle and socket headroom, which RabbitMQ 3.x spends on
//! quorum queues (about 3 handles each) and stops accepting connections
//! without. Pure: the numbers come from the management API (observe.rs).

use serde::Deserialize;

use crate::cascade::{Desired, Value};
use crate::diff::{Finding, Severity, Structure};
use crate::topology::QueueType;

/// File handles RabbitMQ 3.x reserves per quorum queue (seen on 3.10.8).
const HANDLES_PER_QUORUM_QUEUE: u64 = 3;

/// A vhost's limits that matter here; absent or negative means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct VhostLimits {
    #[serde(rename = "max-queues")]
    pub max_queues: Option<i64>,
}

/// One node's descriptors as `/api/nodes` reports them. 4.x reports no
/// socket limit (`sockets_total` 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NodeResources {
    pub name: String,
    #[serde(default)]
    pub fd_total: Option<u64>,
    #[serde(default)]
    pub fd_used: Option<u64>,
    #[serde(default)]
    pub sockets_total: Option<u64>,
    #[serde(default)]
    pub sockets_used: Option<u64>,
}

/// What install would add to the vhost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    pub queues: usize,
    pub quorum_queues: usize,
}

impl Needs {
    /// The queues install would create: those the comparison found missing.
    pub fn missing(desired: &Desired, structure: &Structure) -> Needs {
        let levels = structure.missing_queues.len();
        let endpoints = &structure.missing_endpoint_queues;
        let quorum = desired.queue_type == QueueType::Quorum;
        let quorum_endpoints = endpoints
            .iter()
            .filter(|q| q.arguments.get("x-queue-type") == Some(&Value::Str("quorum".into())))
            .count();
        Needs {
            queues: levels + endpoints.len(),
            quorum_queues: if quorum { levels } else { 0 } + quorum_endpoints,
        }
    }
}

fn limited(limit: Option<i64>) -> Option<usize> {
    limit.and_then(|l| usize::try_from(l).ok())
}

/// An error when the queues install would create do not fit in what
/// `max-queues` leaves: install would stop halfway. (A vhost with no
/// connection left under `max-connections` refuses the connection that
/// proves which broker the management API is, so every command stops there,
/// exit 3, with the broker's own words.)
pub fn limit_findings(
    vhost: &str,
    limits: &VhostLimits,
    queues_now: usize,
    needs: Needs,
) -> Vec<Finding> {
    let mut found = Vec::new();
    if let Some(max) = limited(limits.max_queues) {
        if needs.queues > 0 && queues_now + needs.queues > max {
            found.push(Finding {
                severity: Severity::Error,
                entity: format!("vhost {vhost}"),
                kind: "vhost_limit".into(),
                expected: Some(format!("room for {} more queues", needs.queues)),
                actual: Some(format!("max-queues {max}, {queues_now} present")),
                message: format!(
                    "vhost `{vhost}` allows {max} queues (max-queues) and holds {queues_now}: the \
                     cascade needs {} more, so install would stop halfway; raise the limit \
                     (`rabbitmqctl set_vhost_limits -p {vhost} '{{\"max-queues\": {}}}'`)",
                    needs.queues,
                    queues_now + needs.queues
                ),
                level: None,
            });
        }
    }
    found
}

/// Warnings for nodes close to running out of file handles or sockets:
/// fewer free than the quorum queues to be created need (at least one
/// cascade's worth, `levels`), or less than a tenth left.
pub fn headroom_findings(nodes: &[NodeResources], levels: u8, needs: Needs) -> Vec<Finding> {
    let quorum_queues = needs.quorum_queues.max(usize::from(levels)) as u64;
    let mut found = Vec::new();
    for node in nodes {
        let checks = [
            (
                "file handles",
                node.fd_total,
                node.fd_used,
                quorum_queues * HANDLES_PER_QUORUM_QUEUE,
            ),
            ("sockets", node.sockets_total, node.sockets_used, 1),
        ];
        for (what, total, used, wanted) in checks {
            let (Some(total), Some(used)) = (total, used) else {
                continue;
            };
            if total == 0 {
                continue;
            }
            let free = total.saturating_sub(used);
            if free < wanted.max(total / 10) {
                found.push(Finding {
                    severity: Severity::Warning,
                    entity: format!("node {}", node.name),
                    kind: "node_headroom".into(),
                    expected: Some(format!("at least {} free {what}", wanted.max(total / 10))),
                    actual: Some(format!("{free} of {total} free")),
                    message: format!(
                        "node {} has {free} of {total} {what} free: {quorum_queues} quorum queues \
                         need about {wanted}, and a node out of them stops accepting \
                         connections (raise its open-files limit)",
                        node.name
                    ),
                    level: None,
                });
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(fd: (u64, u64), sockets: (u64, u64)) -> NodeResources {
        NodeResources {
            name: "rabbit@a".into(),
            fd_total: Some(fd.0),
            fd_used: Some(fd.1),
            sockets_total: Some(sockets.0),
            sockets_used: Some(sockets.1),
        }
    }

    const CASCADE: Needs = Needs {
        queues: 28,
        quorum_queues: 28,
    };

    #[test]
    fn limits_decode_from_the_management_api() {
        let limits: VhostLimits =
            serde_json::from_value(serde_json::json!({"max-queues": 5, "max-connections": 2}))
                .unwrap();
        assert_eq!(limits.max_queues, Some(5));
    }

    #[test]
    fn a_cascade_that_does_not_fit_max_queues_is_an_error() {
        let limits = VhostLimits {
            max_queues: Some(30),
        };
        let found = limit_findings("v", &limits, 3, CASCADE);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].message.contains("allows 30 queues"),
            "{}",
            found[0].message
        );
        assert!(limit_findings("v", &limits, 2, CASCADE).is_empty());
        let nothing_to_add = Needs::default();
        assert!(limit_findings("v", &limits, 40, nothing_to_add).is_empty());
        let unlimited = VhostLimits {
            max_queues: Some(-1),
        };
        assert!(limit_findings("v", &unlimited, 1000, CASCADE).is_empty());
    }

    #[test]
    fn a_node_short_of_handles_or_sockets_is_a_warning() {
        // The default 1024 descriptors after ten cascades.
        let tight = node((1024, 950), (829, 10));
        let found = headroom_findings(&[tight], 28, CASCADE);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("74 of 1024 file handles free"));
        assert!(headroom_findings(&[node((20000, 400), (17548, 3))], 28, CASCADE).is_empty());
        let sockets = headroom_findings(&[node((20000, 400), (100, 95))], 28, CASCADE);
        assert_eq!(sockets[0].actual.as_deref(), Some("5 of 100 free"));
    }

    #[test]
    fn a_4x_node_without_a_socket_limit_is_fine() {
        assert!(headroom_findings(&[node((20000, 78), (0, 0))], 28, CASCADE).is_empty());
        let unknown = NodeResources {
            name: "rabbit@b".into(),
            ..NodeResources::default()
        };
        assert!(headroom_findings(&[unknown], 28, CASCADE).is_empty());
    }
}
