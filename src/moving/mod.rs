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
mod drain;
pub mod headers;
pub mod identity;
pub mod journal;
pub mod ledger;
mod pump;
pub mod routes;
mod session;
mod settle;
pub mod size_limit;
pub mod staging;
mod summary;
pub mod target_cascade;
pub mod watch;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;

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
pub use session::Session;
use size_limit::SizeLimit;
use target_cascade::{ensure_target_cascade, CascadeCheck};
use watch::Watch;

/// Passes over the source levels before the run gives up on stragglers
/// (messages that arrive in a level after it was drained).
const MAX_PASSES: usize = 3;
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
    /// `--staging`: publish through the target cascade's staging queues.
    pub staging: bool,
    /// How long to keep reconnecting without progress.
    pub reconnect_for: Duration,
    /// `--max-message-size`: the target's limit, when not its version's default.
    pub max_message_size: Option<u64>,
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
            staging: args.staging,
            reconnect_for: Duration::from_secs(args.reconnect_for),
            max_message_size: args.max_message_size,
        }
    }

    /// Names the move (both ends, passwords masked): the journal's key. A
    /// broker is named by every node given, not by the one in use, so that a
    /// re-run served by another node of the cluster finds the same journal.
    fn name(&self) -> String {
        format!(
            "{} {} -> {}",
            self.command,
            summary::describe_at(&self.from, &self.from.broker.nodes_display()),
            summary::describe_at(&self.to, &self.to.broker.nodes_display())
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

/// What the run learned besides the ledger's counts.
#[derive(Debug)]
struct RunState {
    cascade: Option<CascadeCheck>,
    /// Source levels whose queue does not exist.
    absent: Vec<u8>,
    scanned: bool,
    passes: usize,
    reconnects: u32,
    /// What each source level still holds that no pass could take, or why
    /// that could not be seen.
    stuck: Result<BTreeMap<u8, backlog::Stuck>, String>,
    /// The source broker on the node the last attempt used.
    source_in_use: Option<Target>,
    /// Whether moved messages went through the target's staging queues.
    staged: bool,
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
            source_in_use: None,
            staged: false,
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
    let size_limit = SizeLimit::new(job.max_message_size, None);
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
        size_limit: &size_limit,
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
        let cut_off_before = state.reconnects > 0 || journal.as_ref().is_some_and(|j| j.existed);
        // Asked of the node the run ended on: the first may be gone.
        let source = state.source_in_use.as_ref().unwrap_or(&job.from.broker);
        state.stuck = backlog::stuck(source, &job.from.cascade, cut_off_before).await;
    }
    let ledger = ledger.into_inner().expect("ledger lock");
    let total = ledger.total();
    let source_empty = complete
        && state.interrupted.is_none()
        && state.left_counted
        && total.left + total.too_large == 0
        && state
            .stuck
            .as_ref()
            .map_or(true, |s| s.values().all(|s| s.held == 0));
    let finished = |j: &Journal| !job.dry_run && (source_empty || j.is_empty());
    if let Some(journal) = journal.filter(finished) {
        journal.remove()?;
        if let Some(journal) = &mut state.journal {
            journal.removed = true;
        }
    }
    Ok(summary::render(
        job,
        &ledger,
        &routes,
        &state,
        size_limit.limit(),
        elapsed,
    ))
}

/// What every step of a run uses.
struct Shared<'a> {
    job: &'a Job,
    ledger: &'a Mutex<Ledger>,
    journal: Option<&'a Journal>,
    watch: &'a Watch,
    interrupt: &'a Interrupt,
    size_limit: &'a SizeLimit,
}

impl Shared<'_> {
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
        let (check, version) = tokio::join!(
            ensure_target_cascade(&job.to.broker, &session.to, &job.to.cascade, job.dry_run),
            target_version(&job.to.broker),
        );
        let check = check?;
        self.size_limit.version_known(version.as_deref());
        let conflicts = !check.conflicts.is_empty();
        if state.cascade.is_none() || conflicts {
            state.cascade = Some(check);
        }
        if conflicts {
            return Ok(());
        }
        if !job.dry_run {
            broker::ensure_poison_queue(
                &job.to.broker,
                &session.to,
                &job.poison_queue,
                job.to.cascade.queue_type,
            )
            .await?;
        }
        if !self.staging_wanted() {
            return self.passes(session, routes, state, None).await;
        }
        state.staged = true;
        let staging = staging::Staging::of(&job.to.cascade);
        staging::lock(&job.to.broker, &session.to, &staging).await?;
        staging::declare(&job.to.broker, &session.to, &staging, &job.to.cascade).await?;
        let releaser = staging::Releaser::start(
            &job.to.broker,
            &session.to,
            &staging,
            self.journal,
            self.ledger,
        )
        .await?;
        let (staged, landed) = tokio::sync::mpsc::unbounded_channel();
        let passes = async {
            let passes = self
                .passes(session, routes, state, Some((&staging, &staged)))
                .await;
            drop(staged);
            passes
        };
        let (passes, released) = tokio::join!(passes, releaser.run(landed));
        passes?;
        released
    }

    /// Whether moved messages are staged: with `--staging`, only into a
    /// quorum cascade (a classic one is for brokers where quorum queues and
    /// at-least-once dead-lettering may not be there), and only with a
    /// journal (which says when a staged message may go on).
    fn staging_wanted(&self) -> bool {
        let job = self.job;
        !job.dry_run
            && job.staging
            && self.journal.is_some()
            && job.to.cascade.queue_type == crate::topology::QueueType::Quorum
    }

    async fn passes(
        &self,
        session: &Session,
        routes: &mut Routes,
        state: &mut RunState,
        staging: Option<(
            &staging::Staging,
            &tokio::sync::mpsc::UnboundedSender<Option<identity::Identity>>,
        )>,
    ) -> Result<()> {
        let job = self.job;
        let passes = if job.dry_run { 1 } else { MAX_PASSES };
        for _ in 0..passes {
            if let Some(signal) = self.interrupt.requested() {
                state.interrupted = Some(signal);
                break;
            }
            let counts = self.scan(session, state).await?;
            // A level holding only what is too large for the target is done.
            let levels: Vec<(u8, u64)> = {
                let ledger = self.ledger.lock().expect("ledger lock");
                let kept = |level| ledger.levels.get(&level).map_or(0, |c| c.too_large);
                counts
                    .into_iter()
                    .filter(|&(level, n)| n > kept(level))
                    .collect()
            };
            if levels.is_empty() {
                return Ok(());
            }
            let end = pump::Pump {
                job,
                session,
                ledger: self.ledger,
                journal: self.journal,
                watch: self.watch,
                interrupt: self.interrupt,
                size_limit: self.size_limit,
                staging,
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
            if job.dry_run {
                entry.left = 0;
            } else {
                ledger.counted(level, count);
            }
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

/// The target's RabbitMQ version as it announces itself, for its default
/// `max_message_size`; `None` when it cannot be asked (then the lower default applies).
async fn target_version(target: &crate::target::Target) -> Option<String> {
    match &target.identity {
        Some(identity) => Some(identity.version.clone()),
        None => crate::broker_identity::over_amqp(target)
            .await
            .ok()
            .map(|identity| identity.version),
    }
}
