//! `tracebench trace ...`: stats, fetch, list, convert, synth.

use std::process::ExitCode;

/// Inspect, fetch, convert and synthesise trace files.
#[derive(Debug, clap::Args)]
pub struct TraceCommand {}

/// Runs `tracebench trace`.
pub fn run(_args: TraceCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("trace: not built yet")
}
