//! The command line: one clap struct per subcommand, each in its own file beside this one,
//! each with a `run` that returns the process exit code. Parsing and wiring only: the work
//! itself lives in the library modules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod prompts;
pub mod replay;
pub mod report;
pub mod sim;
pub mod trace;
pub mod trace_input;

/// Exit code: the run completed but a threshold (e.g. `--max-failed-ratio`) was exceeded.
pub const EXIT_THRESHOLD_FAILED: u8 = 1;
/// Exit code: usage or input error (bad flag, unreadable or invalid trace, ...).
pub const EXIT_INPUT_ERROR: u8 = 2;

/// Replay production LLM request traces against OpenAI-compatible servers.
#[derive(Debug, Parser)]
#[command(name = "tracebench", version, about, long_about = None)]
pub struct Cli {
    /// More logging on stderr (-v debug, -vv trace); RUST_LOG overrides it.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inspect, fetch, convert and synthesise trace files.
    Trace(trace::TraceCommand),
    /// Write the prompts a replay would send, without sending anything.
    Prompts(prompts::PromptsArgs),
    /// Run the built-in simulated OpenAI-compatible server.
    Sim(sim::SimArgs),
    /// Replay a trace against a server and report what it did.
    Replay(Box<replay::ReplayArgs>),
    /// Rebuild summary.json and report.html of a run from its requests.jsonl.
    Report(report::ReportArgs),
    /// Print the change of every headline metric between two runs.
    Compare(report::CompareArgs),
    /// Replay one trace at several time scales or rates, one run after another.
    Sweep(Box<report::SweepArgs>),
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Trace(args) => trace::run(args),
        Command::Prompts(args) => prompts::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Replay(args) => replay::run(*args),
        Command::Report(args) => report::run_report(args),
        Command::Compare(args) => report::run_compare(args),
        Command::Sweep(args) => report::run_sweep(*args),
    }
}
