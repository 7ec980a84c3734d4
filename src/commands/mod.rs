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

async fn run_broker_command(command: &Command, context: &Context) -> Result<Outcome> {
    match command {
        Command::Verify(args) => verify::run(context, args).await,
        Command::Plan => plan::run(context).await,
        Command::Probe(args) => probe::run(context, args).await,
        Command::Teardown(args) => teardown::run(context, args).await,
        Command::Completions { .. } | Command::Render | Command::Permissions(_) => {
            unreachable!("handled without a broker")
        }
        Command::Install => install::run(context).await,
        Command::Migrate(args) => migrate::run(context, args).await,
        Command::Transfer(args) => transfer::run(context, args).await,
    }
}
