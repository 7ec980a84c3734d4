//! Several nodes for one broker (a cluster's `--url` list): each is tried in
//! order, each attempt bounded by `--timeout`, and the first whose AMQP
//! listener answers and opens the vhost serves the whole command, AMQP and
//! management API alike. Which node served, and why the ones before did not,
//! is said on stderr.

use anyhow::Result;

use crate::broker_identity;
use crate::exit::broker;
use crate::report::first_few;
use crate::target::Target;

/// `target` on its first node that answers; unchanged when it has one node
/// (the same-broker proof then makes the only handshake).
pub async fn reachable(target: Target) -> Result<Target> {
    if target.nodes.len() <= 1 {
        return Ok(target);
    }
    let mut passed_over = Vec::new();
    for index in 0..target.nodes.len() {
        let mut candidate = target.on_node(index);
        match broker_identity::over_amqp(&candidate).await {
            Ok(identity) => {
                if !passed_over.is_empty() {
                    eprintln!(
                        "note: vhost {}: using node {} ({})",
                        candidate.vhost,
                        candidate.amqp_display(),
                        first_few(&passed_over, 3, "; ")
                    );
                }
                candidate.identity = Some(identity);
                return Ok(candidate);
            }
            Err(error) => passed_over.push(format!("{error:#}")),
        }
    }
    Err(broker(format!(
        "none of the {} nodes answered: {}",
        target.nodes.len(),
        first_few(&passed_over, 3, "; ")
    )))
}
