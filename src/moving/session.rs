//! The connections of one attempt at a move, and the loop that opens them
//! again after a connection loss: with backoff, for `--reconnect-for`
//! without progress, each time through the first node of the broker's list
//! that answers.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};

use crate::amqp::{self, bounded};
use crate::exit;
use crate::failover;
use crate::moving::routes::Routes;
use crate::moving::settle::TargetRefusing;
use crate::moving::size_limit::TooLargeForTarget;
use crate::moving::staging::StagingLocked;
use crate::moving::watch::short_duration;
use crate::moving::{Job, RunState, Shared};

/// The first pause before reconnecting; it doubles up to `LONGEST_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// How long a connection's state may lag behind the failure that killed it.
const LOSS_SHOWS_WITHIN: Duration = Duration::from_secs(1);

/// The connections of one attempt; a new one after a connection loss.
pub struct Session {
    pub from: Connection,
    pub to: Connection,
    /// On `from`, with the prefetch set: consumes the level queues one by one.
    pub taker: Channel,
    /// On `to`, in publisher-confirm mode.
    pub publisher: Channel,
}

impl Session {
    async fn open(job: &Job) -> Result<Session> {
        let from = amqp::connect(&job.from.broker).await?;
        let taker = amqp::open_channel(&from, &job.from.broker).await?;
        bounded(
            &job.from.broker,
            "setting the prefetch",
            taker.basic_qos(job.prefetch, BasicQosOptions::default()),
        )
        .await?;
        let to = amqp::connect(&job.to.broker).await?;
        let publisher = amqp::open_channel(&to, &job.to.broker).await?;
        bounded(
            &job.to.broker,
            "enabling publisher confirms",
            publisher.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(Session {
            from,
            to,
            taker,
            publisher,
        })
    }

    /// Whether a connection (or the publishing channel) died under us.
    fn lost(&self) -> bool {
        !(self.from.status().connected()
            && self.to.status().connected()
            && self.taker.status().connected()
            && self.publisher.status().connected())
    }

    /// Whether a connection died under this attempt, once it ended with
    /// `result`. A broker failure can come before the connection's state
    /// says so (a reset seen first by a publish): it gets a moment for the
    /// state to catch up.
    async fn lost_after(&self, result: &Result<()>) -> bool {
        let Err(error) = result else {
            return self.lost();
        };
        if exit::code_for(error) != exit::BROKER_UNUSABLE {
            return self.lost();
        }
        let deadline = Instant::now() + LOSS_SHOWS_WITHIN;
        while !self.lost() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.lost()
    }

    async fn close(self, job: &Job) {
        for (connection, broker) in [(&self.from, &job.from.broker), (&self.to, &job.to.broker)] {
            if connection.status().connected() {
                amqp::close(connection, broker).await;
            }
        }
    }
}

impl Shared<'_> {
    /// Moves, reconnecting after a lost connection with backoff until
    /// `--reconnect-for` passes without progress; returns when the move is
    /// done or stopped.
    pub(super) async fn keep_moving(
        &self,
        routes: &mut Routes,
        state: &mut RunState,
    ) -> Result<()> {
        let mut down_since: Option<Instant> = None;
        let mut pause = FIRST_PAUSE;
        // The nodes in use; a reconnect may move to another node of the list.
        let mut current = self.job.clone();
        loop {
            let this = Shared {
                job: &current,
                ..*self
            };
            state.source_in_use = Some(current.from.broker.clone());
            let settled_before = self.ledger.lock().expect("ledger lock").settled();
            let error = match Session::open(&current).await {
                Ok(session) => {
                    let result = this.move_all(&session, routes, state).await;
                    let lost = session.lost_after(&result).await;
                    session.close(&current).await;
                    match result {
                        Ok(()) => return Ok(()),
                        // The target closed the publishing channel on a
                        // message over its limit, with nothing else in
                        // flight there: go on at once, keeping such messages.
                        Err(error)
                            if error
                                .downcast_ref::<TooLargeForTarget>()
                                .is_some_and(|refusal| self.size_limit.learn(refusal)) =>
                        {
                            self.watch
                                .note(&format!("{error}; larger messages stay in the source"));
                            continue;
                        }
                        // Refused on every quick try: a new session (a
                        // new channel) may be taken where this one is not.
                        Err(error) if lost || error.is::<TargetRefusing>() => error,
                        // After a reconnect, the lock may still be held by
                        // this run's old connection, until the broker sees it die.
                        Err(error) if state.reconnects > 0 && error.is::<StagingLocked>() => error,
                        Err(error) => return Err(error),
                    }
                }
                Err(error) if state.reconnects > 0 => error,
                Err(error) => return Err(error),
            };
            if self.ledger.lock().expect("ledger lock").settled() > settled_before {
                down_since = None;
                pause = FIRST_PAUSE;
            }
            let since = *down_since.get_or_insert_with(Instant::now);
            if let Some(signal) = self.interrupt.requested() {
                // Stopped while the broker is away: nothing is in flight any more.
                state.interrupted = Some(signal);
                state.left_counted = false;
                return Ok(());
            }
            if since.elapsed() >= self.job.reconnect_for {
                return Err(error).context(format!(
                    "gave up after {} of reconnecting without progress (--reconnect-for)",
                    short_duration(since.elapsed())
                ));
            }
            state.reconnects += 1;
            let what = if error.is::<TargetRefusing>() {
                "target refusing"
            } else {
                "connection lost"
            };
            self.watch.note(&format!(
                "{what} ({error:#}); reconnecting in {:.1} s",
                pause.as_secs_f64()
            ));
            let mut waiting = self.interrupt.clone();
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                signal = waiting.wait() => {
                    state.interrupted = Some(signal);
                    state.left_counted = false;
                    return Ok(());
                }
            }
            pause = (pause * 2).min(LONGEST_PAUSE);
            // A cluster's node that went away is not waited for: the first
            // node of the list that answers serves the next attempt.
            current.from.broker = failover::reachable(current.from.broker.clone())
                .await
                .unwrap_or(current.from.broker);
            current.to.broker = failover::reachable(current.to.broker.clone())
                .await
                .unwrap_or(current.to.broker);
        }
    }
}
