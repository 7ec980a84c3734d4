//! The cluster under the cascade: whether each quorum level queue keeps a
//! majority (an error when it does not: the level can neither take nor pass
//! on delayed messages), whether it runs degraded or under-replicated, where
//! the leaders (and so the dead-letter workers) sit, and resource alarms,
//! which block every publish, dead-lettering included.

use std::collections::BTreeMap;

use super::{finding, Queues};
use crate::cascade::Desired;
use crate::diff::{Finding, Severity};
use crate::observe::BrokerInfo;
use crate::topology::ArgValue;

/// Per quorum level queue: lost majority (error), members offline or fewer
/// members than the cluster can hold (warnings); then, once, all leaders on
/// one node of a cluster (warning).
pub fn quorum_findings(desired: &Desired, queues: &Queues, cluster_nodes: usize) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut leaders: BTreeMap<&str, usize> = BTreeMap::new();
    for level_queue in &desired.queues {
        let Some(queue) = queues.get(&level_queue.name) else {
            continue;
        };
        if queue.queue_type != "quorum" || queue.members.is_empty() {
            continue;
        }
        if let Some(leader) = &queue.leader {
            *leaders.entry(leader.as_str()).or_default() += 1;
        }
        let members = queue.members.len();
        let online = queue
            .online
            .iter()
            .filter(|node| queue.members.contains(node))
            .count();
        let entity = format!("queue {}", queue.name);
        let level = Some(level_queue.level);
        // The group size the cluster can give: all its nodes, or fewer when
        // the topology asks for fewer.
        let wanted = match level_queue.arguments.get("x-quorum-initial-group-size") {
            Some(ArgValue::Int(size)) => (*size).max(1) as usize,
            _ => cluster_nodes,
        }
        .min(cluster_nodes);
        if online * 2 <= members {
            found.push(finding(
                Severity::Error,
                entity,
                "quorum_unavailable",
                (
                    format!("more than {} of {members} members online", members / 2),
                    format!("{online} of {members} online"),
                ),
                format!(
                    "queue {} has {online} of {members} members online, not a majority: the \
                     level can neither take nor pass on delayed messages",
                    queue.name
                ),
                level,
            ));
        } else if online < members {
            found.push(finding(
                Severity::Warning,
                entity,
                "degraded",
                (
                    format!("{members} of {members} online"),
                    format!("{online} of {members} online"),
                ),
                format!(
                    "queue {} runs degraded, {online} of {members} members online: losing {} \
                     more stops the level",
                    queue.name,
                    if online * 2 - members > 1 {
                        "nodes"
                    } else {
                        "one node"
                    }
                ),
                level,
            ));
        } else if members < wanted {
            found.push(finding(
                Severity::Warning,
                entity,
                "under_replicated",
                (format!("{wanted} members"), format!("{members} members")),
                format!(
                    "queue {} has {members} member{} on a {cluster_nodes}-node cluster: {}",
                    queue.name,
                    if members == 1 { "" } else { "s" },
                    if members == 1 {
                        format!("losing node {} stops the level", queue.members[0])
                    } else {
                        "it tolerates fewer node failures than the cluster could \
                         (`rabbitmq-queues grow`)"
                            .to_string()
                    }
                ),
                level,
            ));
        }
    }
    let single_leader_node = match leaders.iter().collect::<Vec<_>>().as_slice() {
        [(node, count)] if cluster_nodes > 1 && **count > 1 => Some((**node, **count)),
        _ => None,
    };
    if let Some((node, count)) = single_leader_node {
        found.push(finding(
            Severity::Warning,
            format!("node {node}"),
            "leaders_on_one_node",
            (
                format!("leaders spread over {cluster_nodes} nodes"),
                format!("{count} leaders on {node}"),
            ),
            format!(
                "all {count} level queue leaders, and so every dead-letter worker, run on node \
                 {node}: it carries the whole cascade and its loss moves them all at once; set \
                 `leader_locator: balanced` in the topology for new queues, or run \
                 `rabbitmq-queues rebalance quorum`"
            ),
            None,
        ));
    }
    found
}

/// Why writing to the cascade now would do harm, as the management API
/// shows it: level queues without a quorum online (deletes and publishes
/// time out, and a publish that timed out may still be committed later), and
/// resource alarms (every publish is blocked). teardown and probe refuse on
/// either, each in words of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteHazard {
    /// `queue NAME (online/members)` per level queue without a quorum.
    pub without_quorum: Vec<String>,
    /// `node: memory` / `node: disk`.
    pub alarms: Vec<String>,
}

pub fn unsafe_to_write(
    desired: &Desired,
    queues: &Queues,
    alarms: &[String],
) -> Option<WriteHazard> {
    let without_quorum: Vec<String> = quorum_findings(desired, queues, 1)
        .into_iter()
        .filter(|f| f.kind == "quorum_unavailable")
        .map(|f| format!("{} ({})", f.entity, f.actual.unwrap_or_default()))
        .collect();
    (!without_quorum.is_empty() || !alarms.is_empty()).then(|| WriteHazard {
        without_quorum,
        alarms: alarms.to_vec(),
    })
}

/// A resource alarm on any node blocks every publish, so no delayed message
/// can be sent, and none can be dead-lettered to the next level.
pub fn alarm_findings(broker: &BrokerInfo) -> Vec<Finding> {
    broker
        .alarms
        .iter()
        .map(|alarm| {
            finding(
                Severity::Error,
                "broker".into(),
                "resource_alarm",
                ("no alarm".into(), alarm.clone()),
                format!(
                    "resource alarm ({alarm}): every publish is blocked, so no delayed message \
                     can be sent or passed on to the next level until it clears"
                ),
                None,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{desired, installed};

    #[test]
    fn a_minority_online_is_an_error_fewer_online_or_fewer_members_warnings() {
        let d = desired("");
        let mut observed = installed(&d);
        let q = observed.queues.get_mut("nsb.v2.delay-level-03").unwrap();
        q.members = vec!["a".into(), "b".into(), "c".into()];
        q.online = vec!["a".into()];
        let found = quorum_findings(&d, &observed.queues, 1);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, "quorum_unavailable");
        assert_eq!(found[0].actual.as_deref(), Some("1 of 3 online"));
        let q = observed.queues.get_mut("nsb.v2.delay-level-03").unwrap();
        q.online = vec!["a".into(), "c".into()];
        let found = quorum_findings(&d, &observed.queues, 1);
        assert_eq!(
            (found[0].kind.as_str(), found[0].severity),
            ("degraded", Severity::Warning)
        );
        // Two of four is not a majority.
        let q = observed.queues.get_mut("nsb.v2.delay-level-03").unwrap();
        q.members.push("d".into());
        let found = quorum_findings(&d, &observed.queues, 1);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].expected.as_deref(),
            Some("more than 2 of 4 members online")
        );

        // One member each on a 3-node cluster, every leader on rabbit@a.
        let on_cluster = quorum_findings(&d, &installed(&d).queues, 3);
        assert_eq!(on_cluster.len(), 29);
        assert!(on_cluster[..28]
            .iter()
            .all(|f| f.kind == "under_replicated" && f.severity == Severity::Warning));
        assert_eq!(on_cluster[28].kind, "leaders_on_one_node");
    }

    #[test]
    fn spread_leaders_full_membership_and_no_alarm_are_quiet() {
        let d = desired("");
        let mut observed = installed(&d);
        let nodes = ["a", "b", "c"];
        for (index, queue) in observed.queues.values_mut().enumerate() {
            queue.members = nodes.iter().map(|n| n.to_string()).collect();
            queue.online = queue.members.clone();
            queue.leader = Some(nodes[index % 3].to_string());
        }
        assert!(quorum_findings(&d, &observed.queues, 3).is_empty());
        let broker = observed
            .broker
            .clone()
            .unwrap_or_else(|| installed(&d).broker.unwrap());
        assert!(alarm_findings(&broker).is_empty());
    }

    #[test]
    fn a_smaller_initial_group_size_is_what_the_topology_asked_for() {
        let d = desired("cascade:\n  initial_group_size: 1\n");
        let found = quorum_findings(&d, &installed(&d).queues, 3);
        assert!(
            found.iter().all(|f| f.kind != "under_replicated"),
            "{found:#?}"
        );
    }

    #[test]
    fn every_alarm_is_an_error_naming_node_and_resource() {
        let d = desired("");
        let mut broker = installed(&d).broker.unwrap();
        broker.alarms = vec!["rabbit@b: memory".into(), "rabbit@c: disk".into()];
        let found = alarm_findings(&broker);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|f| f.severity == Severity::Error));
        assert!(found[0].message.contains("rabbit@b: memory"));
    }
}
