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
use clap::{CommandFactory, ValueEnum};

use crate::cli::{Cli, Command, Output};
use crate::context::Context;
use crate::exit;
use crate::interrupt::Interrupt;
use crate::report::Outcome;

/// Runs a parsed command line; `None` means the command printed its own output.
pub fn run(cli: &Cli) -> Result<Option<Outcome>> {
    check_output(&cli.command, cli.global.output)?;
    if let Command::Completions { shell } = &cli.command {
        let mut command = Cli::command();
        clap_complete::generate(*shell, &mut command, "delaytopo", &mut std::io::stdout());
        return Ok(None);
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

/// The output formats a command has: text and JSON everywhere, Prometheus
/// metrics for verify, a shell script only for completions.
pub fn output_formats(command: &Command) -> &'static [Output] {
    match command {
        Command::Verify(_) => &[Output::Text, Output::Json, Output::Prometheus],
        Command::Completions { .. } => &[Output::Text],
        _ => &[Output::Text, Output::Json],
    }
}

/// One rule for `-o` on every command: a format the command does not have
/// is bad input (exit 2), never silently ignored.
fn check_output(command: &Command, output: Output) -> Result<()> {
    let formats = output_formats(command);
    if formats.contains(&output) {
        return Ok(());
    }
    let name = |format: &Output| {
        format
            .to_possible_value()
            .map(|value| value.get_name().to_string())
            .unwrap_or_default()
    };
    let supported: Vec<String> = formats.iter().map(name).collect();
    let why = match (output, command) {
        (Output::Prometheus, _) => "; only `verify` has metrics",
        (_, Command::Completions { .. }) => " (a shell script)",
        _ => "",
    };
    Err(exit::bad_input(format!(
        "--output {}: `{}` writes {} only{why}",
        name(&output),
        command_name(command),
        supported.join(" or ")
    )))
}

/// The subcommand's name as typed.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Install => "install",
        Command::Verify(_) => "verify",
        Command::Plan => "plan",
        Command::Teardown(_) => "teardown",
        Command::Render => "render",
        Command::Probe(_) => "probe",
        Command::Migrate(_) => "migrate",
        Command::Transfer(_) => "transfer",
        Command::Permissions(_) => "permissions",
        Command::Completions { .. } => "completions",
    }
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
            let deadline = async {
                match context.deadline {
                    Some(deadline) => tokio::time::sleep(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = run_cancellable(command, context) => outcome,
                () = deadline => Err(exit::broker(format!(
                    "gave up at the --deadline of {}: {}",
                    crate::amqp::seconds(context.deadline.unwrap_or_default()),
                    if matches!(command, Command::Install) {
                        "what was declared stays; run install again to finish"
                    } else {
                        "nothing was changed"
                    }
                ))),
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
