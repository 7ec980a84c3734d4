//! The messages a quorum level queue has expired but not yet dead-lettered
//! (its dead-letter backlog) can be neither consumed nor counted over AMQP
//! (SPEC §1). A message whose next hop is missing waits there for ever, so a
//! move can take every ready message and still leave the source cascade not
//! empty. Only the management API sees the backlog, with a lag of a few
//! seconds, so a non-zero backlog is looked at again before it counts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::mgmt::Management;
use crate::moving::Side;
use crate::topology::QueueType;

/// How long a backlog may take to show as gone (statistics come every ~5 s).
const SETTLE: Duration = Duration::from_secs(12);
const POLL: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
struct QueueStats {
    name: String,
    #[serde(default)]
    messages_dlx: u64,
}

/// Messages per source level stuck in the dead-letter backlog (only levels
/// with some); `Err` says why the management API could not tell.
pub async fn stuck_in_backlog(source: &Side) -> Result<BTreeMap<u8, u64>, String> {
    if source.cascade.queue_type != QueueType::Quorum {
        // Classic queues dead-letter at most once: they have no backlog.
        return Ok(BTreeMap::new());
    }
    let started = tokio::time::Instant::now();
    loop {
        let stuck = backlog_now(source).await?;
        if stuck.is_empty() || started.elapsed() >= SETTLE {
            return Ok(stuck);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn backlog_now(source: &Side) -> Result<BTreeMap<u8, u64>, String> {
    let management = Management::new(&source.broker).map_err(|e| format!("{e:#}"))?;
    let path = format!(
        "{}?columns=name,messages_dlx",
        management.vhost_path("queues")
    );
    let queues: Vec<QueueStats> = management.get(path).await.map_err(|e| format!("{e:#}"))?;
    Ok(queues
        .into_iter()
        .filter(|q| q.messages_dlx > 0)
        .filter_map(|q| {
            source
                .cascade
                .queues
                .iter()
                .find(|level| level.name == q.name)
                .map(|level| (level.level, q.messages_dlx))
        })
        .collect())
}
