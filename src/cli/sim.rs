//! `tracebench sim`: run the simulated server in the foreground.

use std::process::ExitCode;

/// Run the simulated server.
#[derive(Debug, clap::Args)]
pub struct SimArgs {}

/// Runs `tracebench sim`.
pub fn run(_args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("sim: not built yet")
}
