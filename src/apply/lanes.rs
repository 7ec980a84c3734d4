//! The lanes of `apply` (see the module above): each phase's operations
//! spread over a few channels, pipelined on each, with a refused channel's
//! unanswered rest run again on a fresh one; and the `Session` that keeps
//! the channels from one phase to the next.

use std::time::Duration;

use futures::future::join_all;
use indicatif::ProgressBar;
use lapin::{Channel, Connection};

use super::{Failure, OpResult, Operation};
use crate::amqp;
use crate::target::Target;

/// Which operations go on which lane: round robin, so that every lane gets
/// a share of each kind, and no lane is empty.
pub fn split_into_lanes(count: usize, lanes: usize) -> Vec<Vec<usize>> {
    let lanes = lanes.clamp(1, count.max(1));
    let mut split = vec![Vec::with_capacity(count / lanes + 1); lanes];
    for index in 0..count {
        split[index % lanes].push(index);
    }
    split.retain(|lane| !lane.is_empty());
    split
}

/// Runs `ops` (independent of each other) over `lanes` new channels of
/// `connection` and returns one result per operation, in the same order.
/// Callers run dependent phases one after the other (exchanges and queues,
/// then bindings); a [`Session`] does so without reopening channels.
pub async fn apply(
    connection: &Connection,
    target: &Target,
    ops: &[Operation],
    lanes: usize,
    progress: &ProgressBar,
) -> Vec<OpResult> {
    let mut channels = (0..lanes.max(1)).map(|_| None).collect::<Vec<_>>();
    let results = run_phase(connection, target, &mut channels, ops, progress).await;
    // Callers that apply again and again on one connection (a move binds
    // each new address) would otherwise run into the channel limit.
    join_all(channels.into_iter().flatten().map(|channel| async move {
        let closing = channel.close(200, "OK".into());
        let _ = tokio::time::timeout(target.timeout, closing).await;
    }))
    .await;
    results
}

/// An AMQP connection with its lanes: one channel each, opened together
/// with the connection and kept from one phase to the next unless a
/// refusal closed it.
pub struct Session {
    connection: Connection,
    target: Target,
    channels: Vec<Option<Channel>>,
}

impl Session {
    /// Connects (bounded, exit 3 on failure) and opens `lanes` channels at
    /// once; a channel that fails to open is retried when first needed.
    pub async fn open(target: &Target, lanes: usize) -> anyhow::Result<Session> {
        let connection = amqp::connect(target).await?;
        let channels = join_all((0..lanes.max(1)).map(|_| amqp::open_channel(&connection, target)))
            .await
            .into_iter()
            .map(Result::ok)
            .collect();
        Ok(Session {
            connection,
            target: target.clone(),
            channels,
        })
    }

    /// The connection itself: what lives as long as it does (an exclusive queue).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Runs one phase; see [`apply`].
    pub async fn apply(&mut self, ops: &[Operation], progress: &ProgressBar) -> Vec<OpResult> {
        let lanes = self.channels.len();
        self.apply_on_lanes(ops, lanes, progress).await
    }

    /// Runs one phase on the first `lanes` channels only (1: in order).
    pub async fn apply_on_lanes(
        &mut self,
        ops: &[Operation],
        lanes: usize,
        progress: &ProgressBar,
    ) -> Vec<OpResult> {
        let lanes = lanes.clamp(1, self.channels.len());
        run_phase(
            &self.connection,
            &self.target,
            &mut self.channels[..lanes],
            ops,
            progress,
        )
        .await
    }

    pub async fn close(self) {
        amqp::close(&self.connection, &self.target).await;
    }
}

async fn run_phase(
    connection: &Connection,
    target: &Target,
    channels: &mut [Option<Channel>],
    ops: &[Operation],
    progress: &ProgressBar,
) -> Vec<OpResult> {
    let split = split_into_lanes(ops.len(), channels.len());
    let answered = join_all(
        channels
            .iter_mut()
            .zip(split)
            .map(|(channel, lane)| run_lane(connection, target, channel, ops, lane, progress)),
    )
    .await;
    let mut results = vec![None; ops.len()];
    for (index, result) in answered.into_iter().flatten() {
        results[index] = Some(result);
    }
    results
        .into_iter()
        .map(|result| result.expect("every lane answers for each of its operations"))
        .collect()
}

/// Runs one lane's operations, pipelined on its channel; after a refusal
/// the unanswered rest goes again on a new channel.
async fn run_lane(
    connection: &Connection,
    target: &Target,
    slot: &mut Option<Channel>,
    ops: &[Operation],
    mut pending: Vec<usize>,
    progress: &ProgressBar,
) -> Vec<(usize, OpResult)> {
    let mut results = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let reusable = slot.take().filter(|c| c.status().connected());
        let channel = match reusable {
            Some(channel) => channel,
            None => match amqp::open_channel(connection, target).await {
                Ok(channel) => channel,
                Err(error) => {
                    let reason = format!("{error:#}");
                    progress.inc(pending.len() as u64);
                    results.extend(pending.drain(..).map(|index| {
                        let reason = reason.clone();
                        (index, OpResult::Unanswered { reason })
                    }));
                    break;
                }
            },
        };
        // join_all polls every future once before awaiting any: each sends
        // its frame on that first poll, so the whole lane is in flight.
        let answers = join_all(
            pending
                .iter()
                .map(|&index| tokio::time::timeout(target.timeout, ops[index].run(&channel))),
        )
        .await;

        let mut rerun = Vec::new();
        let mut channel_closed = false;
        let mut lane_broken: Option<String> = None;
        for (&index, answer) in pending.iter().zip(answers) {
            let result = match answer {
                Ok(Ok(messages)) => OpResult::Done { messages },
                _ if channel_closed => {
                    rerun.push(index);
                    continue;
                }
                _ if lane_broken.is_some() => OpResult::Unanswered {
                    reason: lane_broken.clone().unwrap_or_default(),
                },
                Ok(Err(Failure::Unsendable(text))) => OpResult::Refused { code: None, text },
                Ok(Err(Failure::Broker(error))) => match amqp::channel_refusal_code(&error) {
                    Some(code) => {
                        channel_closed = true;
                        let mut text = amqp::describe(target, &error);
                        if code == 403 {
                            text.push_str(&format!(" [{}]", ops[index].permission_needed()));
                        }
                        OpResult::Refused {
                            code: Some(code),
                            text,
                        }
                    }
                    None => {
                        let reason = amqp::describe(target, &error);
                        lane_broken = Some(reason.clone());
                        OpResult::Unanswered { reason }
                    }
                },
                Err(_elapsed) => {
                    let reason = no_answer(target, target.timeout);
                    lane_broken = Some(reason.clone());
                    OpResult::Unanswered { reason }
                }
            };
            progress.inc(1);
            results.push((index, result));
        }
        if !channel_closed && lane_broken.is_none() {
            *slot = Some(channel);
        }
        pending = rerun;
    }
    results
}

fn no_answer(target: &Target, timeout: Duration) -> String {
    format!(
        "no answer from {} within {}",
        target.amqp_display(),
        amqp::seconds(timeout)
    )
}
