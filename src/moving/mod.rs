//! Moving delayed messages from one cascade to another without losing one:
//! `migrate` (another cascade on the same broker, e.g. NServiceBus v1 -> v2)
//! and `transfer` (the same cascade on another broker).
//!
//! A message's due time lives in its headers, so it can be recomputed
//! anywhere: each message taken from a source level queue is republished to
//! the target cascade with the delay it still has, and acknowledged at the
//! source only once the target confirmed it. Levels are drained from the
//! highest down, so what expires out of a level while it waits falls into one
//! that is drained later. A lost connection is re-established and the run
//! goes on; anything unacknowledged went back to its source queue.

mod backlog;
pub mod broker;
mod celery_eta;
pub mod classify;
pub mod headers;
pub mod ledger;
mod pump;
pub mod routes;
mod summary;
pub mod target_cascade;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use indicatif::ProgressBar;
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};

use crate::amqp::{self, bounded};
use crate::cascade::Desired;
use crate::cli::MoveArgs;
use crate::commands::fanout::VhostOutcome;
use crate::exit::bad_input;
use crate::progress::Progress;
use crate::target::Target;
use ledger::Ledger;
use routes::Routes;
use target_cascade::{ensure_target_cascade, CascadeCheck};

/// Passes over the source levels before the run gives up on stragglers
/// (messages that arrive in a level after it was drained).
const MAX_PASSES: usize = 3;
/// Connection losses in a row, without a message settled in between, before giving up.
const MAX_RECONNECTS_WITHOUT_PROGRESS: u32 = 5;
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// One end of a move: a broker vhost and the cascade in it.
#[derive(Debug, Clone)]
pub struct Side {
    pub broker: Target,
    pub cascade: Desired,
}

/// Everything one move needs, decided before connecting.
#[derive(Debug, Clone)]
pub struct Job {
    /// `migrate` or `transfer`, for messages.
    pub command: &'static str,
    pub from: Side,
    pub to: Side,
    pub dry_run: bool,
    pub poison_queue: String,
    /// Unacknowledged messages at once: deliveries held and publishes in flight.
    pub prefetch: u16,
    pub progress: Progress,
    /// Refuse to run when `to` turns out to be the very vhost of `from`.
    pub refuse_same_vhost: bool,
}

impl Job {
    pub fn new(
        command: &'static str,
        from: Side,
        to: Side,
        args: &MoveArgs,
        progress: Progress,
    ) -> Job {
        Job {
            command,
            from,
            to,
            dry_run: args.dry_run,
            poison_queue: args.poison_queue.clone(),
            prefetch: args.prefetch,
            progress,
            refuse_same_vhost: false,
        }
    }
}

/// The progress a move shows: one bar per vhost would interleave on the
/// terminal, so bars only when there is one vhost.
pub fn progress(context: &crate::context::Context) -> Progress {
    if context.targets.len() == 1 {
        context.progress
    } else {
        Progress::off()
    }
}

/// Refuses a `--poison-queue` name RabbitMQ would refuse, before connecting.
pub fn check_poison_queue(name: &str) -> Result<()> {
    match crate::topology::name_problem(name) {
        Some(problem) => Err(bad_input(format!("--poison-queue: {problem}"))),
        None => Ok(()),
    }
}

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

    async fn close(self, job: &Job) {
        for (connection, broker) in [(&self.from, &job.from.broker), (&self.to, &job.to.broker)] {
            if connection.status().connected() {
                amqp::close(connection, broker).await;
            }
        }
    }
}

/// What the run learned besides the ledger's counts.
#[derive(Debug)]
struct RunState {
    cascade: Option<CascadeCheck>,
    /// Source levels whose queue does not exist.
    absent: Vec<u8>,
    scanned: bool,
    passes: usize,
    reconnects: u32,
    /// Messages per source level stuck in the dead-letter backlog, or why
    /// that could not be seen.
    stuck: Result<BTreeMap<u8, u64>, String>,
}

impl Default for RunState {
    fn default() -> RunState {
        RunState {
            cascade: None,
            absent: Vec::new(),
            scanned: false,
            passes: 0,
            reconnects: 0,
            stuck: Ok(BTreeMap::new()),
        }
    }
}

/// Moves every message of `job.from`'s level queues into `job.to`.
pub async fn run(job: &Job) -> Result<VhostOutcome> {
    let started = Instant::now();
    let ledger = Mutex::new(Ledger::default());
    let mut routes = Routes::new(&job.to.cascade, job.dry_run);
    let mut state = RunState::default();
    let bar = job.progress.bar(0, job.command);
    let mut losses_without_progress = 0;
    loop {
        let settled_before = ledger.lock().expect("ledger lock").settled();
        let error = match Session::open(job).await {
            Ok(session) => {
                let result = move_all(job, &session, &ledger, &mut routes, &mut state, &bar).await;
                let lost = session.lost();
                session.close(job).await;
                match result {
                    Ok(()) => break,
                    Err(error) if lost => error,
                    Err(error) => return Err(error),
                }
            }
            Err(error) if state.reconnects > 0 => error,
            Err(error) => return Err(error),
        };
        if ledger.lock().expect("ledger lock").settled() > settled_before {
            losses_without_progress = 0;
        }
        losses_without_progress += 1;
        if losses_without_progress > MAX_RECONNECTS_WITHOUT_PROGRESS {
            return Err(error).context(format!(
                "gave up after {} connection losses without progress",
                MAX_RECONNECTS_WITHOUT_PROGRESS
            ));
        }
        state.reconnects += 1;
        let notice = format!("connection lost ({error:#}); reconnecting");
        if bar.is_hidden() {
            eprintln!("{notice}");
        } else {
            bar.println(notice);
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    if state
        .cascade
        .as_ref()
        .is_some_and(|c| c.conflicts.is_empty())
    {
        state.stuck = backlog::stuck_in_backlog(&job.from).await;
    }
    let ledger = ledger.into_inner().expect("ledger lock");
    Ok(summary::render(job, &ledger, &routes, &state, elapsed))
}

async fn move_all(
    job: &Job,
    session: &Session,
    ledger: &Mutex<Ledger>,
    routes: &mut Routes,
    state: &mut RunState,
    bar: &ProgressBar,
) -> Result<()> {
    if job.refuse_same_vhost
        && broker::same_vhost(&job.to.broker, &session.to, &job.from.broker, &session.from).await?
    {
        return Err(bad_input(format!(
            "{} reaches the same broker and vhost `{}` as the source: nothing would move",
            job.to.broker.amqp_display(),
            job.from.broker.vhost
        )));
    }
    let check =
        ensure_target_cascade(&job.to.broker, &session.to, &job.to.cascade, job.dry_run).await?;
    let conflicts = !check.conflicts.is_empty();
    if state.cascade.is_none() || conflicts {
        state.cascade = Some(check);
    }
    if conflicts {
        return Ok(());
    }
    if !job.dry_run {
        broker::ensure_poison_queue(&job.to.broker, &session.to, &job.poison_queue).await?;
    }
    let passes = if job.dry_run { 1 } else { MAX_PASSES };
    for _ in 0..passes {
        let counts = scan(job, session, ledger, state, bar).await?;
        if counts.iter().all(|&(_, count)| count == 0) {
            return Ok(());
        }
        let levels: Vec<(u8, u64)> = counts.into_iter().filter(|&(_, n)| n > 0).collect();
        pump::Pump {
            job,
            session,
            ledger,
            bar,
        }
        .pass(&levels, routes)
        .await?;
        state.passes += 1;
    }
    if !job.dry_run {
        scan(job, session, ledger, state, bar).await?;
    }
    Ok(())
}

/// Ready messages per source level, highest level first; the first scan is
/// what the run found, the latest what is left.
async fn scan(
    job: &Job,
    session: &Session,
    ledger: &Mutex<Ledger>,
    state: &mut RunState,
    bar: &ProgressBar,
) -> Result<Vec<(u8, u64)>> {
    let source = &job.from.cascade;
    let counts = futures::future::join_all((0..source.levels).rev().map(|level| async move {
        let queue = source.level_name(level);
        let count = broker::ready_count(&job.from.broker, &session.from, queue).await?;
        Ok::<_, anyhow::Error>((level, count))
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let mut ledger = ledger.lock().expect("ledger lock");
    for &(level, count) in &counts {
        let count = u64::from(count.unwrap_or(0));
        let entry = ledger.levels.entry(level).or_default();
        if !state.scanned {
            entry.found = count;
        }
        entry.left = if job.dry_run { 0 } else { count };
    }
    if !state.scanned {
        state.absent = counts
            .iter()
            .filter(|(_, count)| count.is_none())
            .map(|&(level, _)| level)
            .collect();
        bar.set_length(ledger.total().found);
        state.scanned = true;
    }
    Ok(counts
        .into_iter()
        .map(|(level, count)| (level, u64::from(count.unwrap_or(0))))
        .collect())
}
