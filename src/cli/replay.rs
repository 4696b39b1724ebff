//! `tracebench replay`: replay a trace against a server.

use std::process::ExitCode;

/// Replay a trace.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {}

/// Runs `tracebench replay`.
pub fn run(_args: ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("replay: not built yet")
}
