//! Moving delayed messages from one cascade to another without losing one:
//! `migrate` (another cascade on the same broker, e.g. NServiceBus v1 -> v2)
//! and `transfer` (the same cascade on another broker).
//!
//! A message's due time lives in its headers, so it can be recomputed
//! anywhere: each message taken from a source level queue is republished to
//! the target cascade with the delay it still has, and acknowledged at the
//! source only once the target confirmed it. Levels are drained from the
//! highest down, so what expires out of a level while it waits falls into one
//! that is drained later. A lost connection is re-established (with backoff,
//! for `--reconnect-for` seconds without progress) and the run goes on;
//! anything unacknowledged went back to its source queue, and what had
//! landed is recognised when it comes back (the ledger within a run, the
//! journal across runs). SIGINT or SIGTERM stops the taking, settles what is
//! in flight and reports; a second one exits at once.

mod backlog;
pub mod broker;
mod celery_eta;
pub mod classify;
pub mod headers;
pub mod identity;
pub mod journal;
pub mod ledger;
mod pump;
pub mod routes;
mod settle;
mod summary;
pub mod target_cascade;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use lapin::options::{BasicQosOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};

use crate::amqp::{self, bounded};
use crate::cascade::Desired;
use crate::cli::MoveArgs;
use crate::commands::fanout::VhostOutcome;
use crate::exit::bad_input;
use crate::interrupt::Interrupt;
use crate::progress::Progress;
use crate::target::Target;
use journal::Journal;
use ledger::Ledger;
use pump::PassEnd;
use routes::Routes;
use target_cascade::{ensure_target_cascade, CascadeCheck};
use watch::{short_duration, Watch};

/// Passes over the source levels before the run gives up on stragglers
/// (messages that arrive in a level after it was drained).
const MAX_PASSES: usize = 3;
/// The first pause before reconnecting; it doubles up to `LONGEST_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// What a second SIGINT or SIGTERM prints before the process exits, when no
/// listener runs yet (the command line starts one first: its words win).
const ON_SECOND_SIGNAL: &str =
    "exiting at once; messages not yet acknowledged go back to their source queue";

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
    /// Directory of the journals; `None`: no journal.
    pub journal: Option<PathBuf>,
    /// How long to keep reconnecting without progress.
    pub reconnect_for: Duration,
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
            journal: (!args.no_journal).then(|| args.journal.clone()),
            reconnect_for: Duration::from_secs(args.reconnect_for),
        }
    }

    /// Names the move (both ends, passwords masked): the journal's key.
    fn name(&self) -> String {
        format!(
            "{} {} -> {}",
            self.command,
            summary::describe(&self.from),
            summary::describe(&self.to)
        )
    }
}

/// The progress a move shows: one bar per vhost would interleave on the
/// terminal, so bars only when there is one vhost (plain lines carry their vhost).
pub fn progress(context: &crate::context::Context) -> Progress {
    if context.targets.len() == 1 {
        context.progress
    } else {
        context.progress.without_bars()
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
    /// The signal that stopped the run early.
    interrupted: Option<&'static str>,
    /// Whether `left` was counted after the last message was taken (not when
    /// the run was stopped while the broker was unreachable).
    left_counted: bool,
    /// The journal: where it is, whether an earlier run left it, how many
    /// messages it knew, and whether this run removed it.
    journal: Option<JournalState>,
}

#[derive(Debug)]
struct JournalState {
    path: PathBuf,
    existed: bool,
    earlier: usize,
    removed: bool,
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
            interrupted: None,
            left_counted: false,
            journal: None,
        }
    }
}

/// Moves every message of `job.from`'s level queues into `job.to`.
pub async fn run(job: &Job) -> Result<VhostOutcome> {
    let started = Instant::now();
    let interrupt = Interrupt::listen(ON_SECOND_SIGNAL);
    let journal = match &job.journal {
        Some(directory) => Some(Journal::open(directory, &job.name(), job.dry_run)?),
        None => None,
    };
    let ledger = Mutex::new(Ledger::default());
    let mut routes = Routes::new(&job.to.cascade, job.dry_run);
    let mut state = RunState {
        journal: journal.as_ref().map(|j| JournalState {
            path: j.path().to_path_buf(),
            existed: j.existed,
            earlier: j.earlier_count(),
            removed: false,
        }),
        ..RunState::default()
    };
    let watch = Watch::new(
        job.progress,
        job.command,
        format!("{} vhost `{}`", job.command, job.from.broker.vhost),
    );
    let shared = Shared {
        job,
        ledger: &ledger,
        journal: journal.as_ref(),
        watch: &watch,
        interrupt: &interrupt,
    };
    if let Err(error) = shared.keep_moving(&mut routes, &mut state).await {
        // A run that failed before landing anything leaves no journal behind.
        if let Some(journal) = journal.filter(|j| !j.existed && j.is_empty()) {
            journal.remove()?;
        }
        return Err(error);
    }
    watch.finish();
    let elapsed = started.elapsed();
    let complete = state
        .cascade
        .as_ref()
        .is_some_and(|c| c.conflicts.is_empty());
    if complete && state.interrupted.is_none() {
        state.stuck = backlog::stuck_in_backlog(&job.from).await;
    }
    let ledger = ledger.into_inner().expect("ledger lock");
    let source_empty =
        complete && state.interrupted.is_none() && state.left_counted && ledger.total().left == 0;
    let finished = |j: &Journal| !job.dry_run && (source_empty || j.is_empty());
    if let Some(journal) = journal.filter(finished) {
        journal.remove()?;
        if let Some(journal) = &mut state.journal {
            journal.removed = true;
        }
    }
    Ok(summary::render(job, &ledger, &routes, &state, elapsed))
}

/// What every step of a run uses.
struct Shared<'a> {
    job: &'a Job,
    ledger: &'a Mutex<Ledger>,
    journal: Option<&'a Journal>,
    watch: &'a Watch,
    interrupt: &'a Interrupt,
}

impl Shared<'_> {
    /// Moves, reconnecting after a lost connection with backoff until
    /// `--reconnect-for` passes without progress; returns when the move is
    /// done or stopped.
    async fn keep_moving(&self, routes: &mut Routes, state: &mut RunState) -> Result<()> {
        let mut down_since: Option<Instant> = None;
        let mut pause = FIRST_PAUSE;
        loop {
            let settled_before = self.ledger.lock().expect("ledger lock").settled();
            let error = match Session::open(self.job).await {
                Ok(session) => {
                    let result = self.move_all(&session, routes, state).await;
                    let lost = session.lost();
                    session.close(self.job).await;
                    match result {
                        Ok(()) => return Ok(()),
                        Err(error) if lost => error,
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
            self.watch.note(&format!(
                "connection lost ({error:#}); reconnecting in {:.1} s",
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
        }
    }

    async fn move_all(
        &self,
        session: &Session,
        routes: &mut Routes,
        state: &mut RunState,
    ) -> Result<()> {
        let job = self.job;
        if job.refuse_same_vhost
            && broker::same_vhost(&job.to.broker, &session.to, &job.from.broker, &session.from)
                .await?
        {
            return Err(bad_input(format!(
                "{} reaches the same broker and vhost `{}` as the source: nothing would move",
                job.to.broker.amqp_display(),
                job.from.broker.vhost
            )));
        }
        let check =
            ensure_target_cascade(&job.to.broker, &session.to, &job.to.cascade, job.dry_run)
                .await?;
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
            if let Some(signal) = self.interrupt.requested() {
                state.interrupted = Some(signal);
                break;
            }
            let counts = self.scan(session, state).await?;
            if counts.iter().all(|&(_, count)| count == 0) {
                return Ok(());
            }
            let levels: Vec<(u8, u64)> = counts.into_iter().filter(|&(_, n)| n > 0).collect();
            let end = pump::Pump {
                job,
                session,
                ledger: self.ledger,
                journal: self.journal,
                watch: self.watch,
                interrupt: self.interrupt,
            }
            .pass(&levels, routes)
            .await?;
            state.passes += 1;
            if end == PassEnd::Stopped {
                state.interrupted = self.interrupt.requested();
                break;
            }
        }
        if !job.dry_run || state.interrupted.is_some() {
            self.scan(session, state).await?;
        }
        Ok(())
    }

    /// Ready messages per source level, highest level first; the first scan is
    /// what the run found, the latest what is left.
    async fn scan(&self, session: &Session, state: &mut RunState) -> Result<Vec<(u8, u64)>> {
        let job = self.job;
        let source = &job.from.cascade;
        let counts = futures::future::join_all((0..source.levels).rev().map(|level| async move {
            let queue = source.level_name(level);
            let count = broker::ready_count(&job.from.broker, &session.from, queue).await?;
            Ok::<_, anyhow::Error>((level, count))
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let mut ledger = self.ledger.lock().expect("ledger lock");
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
            self.watch.total(ledger.total().found);
            state.scanned = true;
        }
        state.left_counted = !job.dry_run;
        Ok(counts
            .into_iter()
            .map(|(level, count)| (level, u64::from(count.unwrap_or(0))))
            .collect())
    }
}
