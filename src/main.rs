//! The `tracebench` binary: parse the command line, set up logging, run, map the result to
//! an exit code (0 completed, 1 completed but a threshold failed, 2 usage or input error).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracebench::cli::{Cli, EXIT_INPUT_ERROR};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);

    match tracebench::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::from(EXIT_INPUT_ERROR)
        }
    }
}

/// The error and its causes on one line, each once: a cause whose text its parent's message
/// already holds (a `{source}` in a thiserror message) is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    let mut parent = text.clone();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !parent.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        parent = cause;
    }
    text
}

/// Logs go to stderr; stdout carries the report only. `RUST_LOG` overrides `-v`.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,tracebench=info",
        1 => "info,tracebench=debug",
        _ => "debug,tracebench=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
