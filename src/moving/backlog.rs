//! The messages a quorum level queue has expired but not yet dead-lettered
//! (its dead-letter backlog) can be neither consumed nor counted over AMQP
//! (SPEC §1). A message whose next hop is missing waits there for ever, so a
//! move can take every ready message and still leave the source cascade not
//! empty. Only the management API sees the backlog, with a lag of a few
//! seconds, so a non-zero backlog is looked at again before it counts.
//!
//! The same look finds messages another consumer holds unacknowledged. Level
//! queues have no consumers of their own, so after a run that lost a
//! connection (or follows one that did), such messages belong to a consumer
//! that is gone: a quorum queue keeps what a consumer on a node that went
//! down had taken until that node returns (sometimes longer: 3.10.8 was seen
//! to keep them over a minute after). They are neither ready nor moved,
//! so the run is not done.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::cascade::Desired;
use crate::mgmt::Management;
use crate::target::Target;
use crate::topology::QueueType;

/// How long a backlog may take to show as gone (statistics come every ~5 s).
const SETTLE: Duration = Duration::from_secs(12);
const POLL: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
struct QueueStats {
    name: String,
    #[serde(default)]
    messages_dlx: u64,
    #[serde(default)]
    messages_unacknowledged: u64,
}

/// What a source level still holds that no pass could take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stuck {
    /// Expired, waiting in the dead-letter backlog.
    pub backlog: u64,
    /// Taken by a consumer that is gone, not yet given back.
    pub held: u64,
}

/// What each source level (only those with some) still holds: its
/// dead-letter backlog, and with `look_for_held` (this run lost a
/// connection, or an earlier run was cut off) what a gone consumer holds;
/// `Err` says why the management API could not tell.
pub async fn stuck(
    broker: &Target,
    cascade: &Desired,
    look_for_held: bool,
) -> Result<BTreeMap<u8, Stuck>, String> {
    if cascade.queue_type != QueueType::Quorum {
        // Classic queues dead-letter at most once: they have no backlog, and
        // a classic queue on a node that went down cannot be moved at all.
        return Ok(BTreeMap::new());
    }
    let started = tokio::time::Instant::now();
    loop {
        let stuck = stuck_now(broker, cascade, look_for_held).await?;
        if stuck.is_empty() || started.elapsed() >= SETTLE {
            return Ok(stuck);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn stuck_now(
    broker: &Target,
    cascade: &Desired,
    look_for_held: bool,
) -> Result<BTreeMap<u8, Stuck>, String> {
    let management = Management::new(broker).map_err(|e| format!("{e:#}"))?;
    let path = format!(
        "{}?columns=name,messages_dlx,messages_unacknowledged",
        management.vhost_path("queues")
    );
    let queues: Vec<QueueStats> = management.get(path).await.map_err(|e| format!("{e:#}"))?;
    Ok(levels_with_some(cascade, queues, look_for_held))
}

fn levels_with_some(
    cascade: &Desired,
    queues: Vec<QueueStats>,
    look_for_held: bool,
) -> BTreeMap<u8, Stuck> {
    queues
        .into_iter()
        .filter_map(|q| {
            let level = cascade.queues.iter().find(|l| l.name == q.name)?;
            let stuck = Stuck {
                backlog: q.messages_dlx,
                held: if look_for_held {
                    q.messages_unacknowledged
                } else {
                    0
                },
            };
            (stuck != Stuck::default()).then_some((level.level, stuck))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::desired;

    fn stats(name: &str, dlx: u64, unacked: u64) -> QueueStats {
        QueueStats {
            name: name.to_string(),
            messages_dlx: dlx,
            messages_unacknowledged: unacked,
        }
    }

    #[test]
    fn held_messages_count_only_when_looked_for_and_other_queues_never() {
        let cascade = desired("");
        let level_3 = cascade.level_name(3).to_string();
        let level_7 = cascade.level_name(7).to_string();
        let answer = || {
            vec![
                stats(&level_3, 0, 12),
                stats(&level_7, 4, 0),
                stats("Sales", 9, 9),
            ]
        };
        let looked = levels_with_some(&cascade, answer(), true);
        assert_eq!(
            looked,
            BTreeMap::from([
                (
                    3,
                    Stuck {
                        backlog: 0,
                        held: 12
                    }
                ),
                (
                    7,
                    Stuck {
                        backlog: 4,
                        held: 0
                    }
                ),
            ])
        );
        // Right after a clean run the statistics may still show its own
        // consumer's window: not looked for, it is not counted.
        let not_looked = levels_with_some(&cascade, answer(), false);
        assert_eq!(
            not_looked,
            BTreeMap::from([(
                7,
                Stuck {
                    backlog: 4,
                    held: 0
                }
            )])
        );
    }

    #[test]
    fn a_management_answer_without_the_columns_reads_as_nothing_stuck() {
        let queues: Vec<QueueStats> = serde_json::from_str(r#"[{"name": "x"}]"#).unwrap();
        assert_eq!(
            (queues[0].messages_dlx, queues[0].messages_unacknowledged),
            (0, 0)
        );
    }
}
