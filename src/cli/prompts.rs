//! `tracebench prompts`: write the prompts a replay would send, one JSON object per record.

use std::process::ExitCode;

/// Write the prompts a replay would send.
#[derive(Debug, clap::Args)]
pub struct PromptsArgs {}

/// Runs `tracebench prompts`.
pub fn run(_args: PromptsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("prompts: not built yet")
}
