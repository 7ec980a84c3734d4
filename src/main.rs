//! delaytopo: provisions, verifies and tears down the binary delay cascade on
//! RabbitMQ. `main` parses, runs, and turns the result into an exit code.

use delaytopo::{cli, commands, exit, report};

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let output = cli.global.output;
    match commands::run(&cli) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(outcome)) => {
            let code = outcome
                .code
                .unwrap_or(if outcome.ok { exit::OK } else { exit::NOT_OK });
            match outcome.print(output) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: writing output: {e}");
                    ExitCode::from(exit::BROKER_UNUSABLE)
                }
                _ => ExitCode::from(code),
            }
        }
        Err(error) => {
            let code = exit::code_for(&error);
            let message = format!("{error:#}");
            eprintln!("error: {message}");
            if output == cli::Output::Json {
                println!("{}", report::error_document(&message, code));
            }
            ExitCode::from(code)
        }
    }
}
