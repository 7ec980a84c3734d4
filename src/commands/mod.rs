//! One file per command, each a short script over the parts in the crate root.

pub mod fanout;
pub mod install;
pub mod migrate;
pub mod permissions;
pub mod plan;
pub mod probe;
pub mod render;
pub mod teardown;
pub mod transfer;
pub mod verify;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Command};
use crate::context::Context;
use crate::exit;
use crate::interrupt::Interrupt;
use crate::report::Outcome;

/// Runs a parsed command line; `None` means the command printed its own output.
pub fn run(cli: &Cli) -> Result<Option<Outcome>> {
    if let Command::Completions { shell } = &cli.command {
        let mut command = Cli::command();
        clap_complete::generate(*shell, &mut command, "delaytopo", &mut std::io::stdout());
        return Ok(None);
    }
    if cli.global.output == crate::cli::Output::Prometheus
        && !matches!(cli.command, Command::Verify(_))
    {
        return Err(crate::exit::bad_input(
            "--output prometheus: only `verify` has metrics; use text or json",
        ));
    }
    let context = Context::load(&cli.global)?;
    if let Command::Render = &cli.command {
        return render::run(&context).map(Some);
    }
    if let Command::Permissions(args) = &cli.command {
        return permissions::run(&context, args).map(Some);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(run_broker_command(&cli.command, &context))
        .map(Some)
}

/// What a second SIGINT/SIGTERM does, whatever the command.
const ON_SECOND_SIGNAL: &str = "exiting at once";

async fn run_broker_command(command: &Command, context: &Context) -> Result<Outcome> {
    // From here on a signal is a request to stop cleanly (`interrupt`).
    let interrupt = Interrupt::listen(ON_SECOND_SIGNAL);
    match command {
        // These stop at a step boundary themselves: teardown puts back what
        // it removed; a move finishes its confirms and acknowledgements.
        Command::Teardown(args) => teardown::run(context, args, &interrupt).await,
        Command::Migrate(args) => migrate::run(context, args).await,
        Command::Transfer(args) => transfer::run(context, args).await,
        // The rest may stop anywhere: verify and plan only read; a probe's
        // message always has the probe sink to go to; install is idempotent
        // and the next run finishes what this one declared.
        _ => {
            let mut waiting = interrupt.clone();
            tokio::select! {
                outcome = run_cancellable(command, context) => outcome,
                signal = waiting.wait() => Err(exit::interrupted(signal, match command {
                    Command::Install => "what was declared stays; run install again to finish",
                    Command::Probe(_) => "a probe message already sent goes to queue \
                        delaytopo.probe.sink, not into a jam",
                    _ => "nothing was changed",
                })),
            }
        }
    }
}

async fn run_cancellable(command: &Command, context: &Context) -> Result<Outcome> {
    match command {
        Command::Verify(args) => verify::run(context, args).await,
        Command::Plan => plan::run(context).await,
        Command::Probe(args) => probe::run(context, args).await,
        Command::Install => install::run(context).await,
        _ => unreachable!("run by run_broker_command or without a broker"),
    }
}
