//! The `tracebench` binary: parse the command line, set up logging, run, map the result to
//! an exit code (0 completed, 1 completed but a threshold failed, 2 usage or input error).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracebench::cli::{Cli, EXIT_INPUT_ERROR};

/// mimalloc instead of the system allocator: it keeps freed memory, so a run faults no
/// new pages in (docs/PERFORMANCE.md, "Stamped reads and the allocator, A/B").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
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

/// `tracebench trace stats --json | head -1`: when the reader of stdout goes away, `print!`
/// panics with a broken pipe. That is the reader's choice, not our failure: end quietly with
/// 141 (128 + SIGPIPE, what a shell reports for a process killed by it), every other panic
/// as before.
fn quiet_on_closed_stdout() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
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
