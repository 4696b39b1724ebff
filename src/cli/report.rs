//! `tracebench report`, `compare` and `sweep`.

use std::process::ExitCode;

/// Rebuild a run's reports.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {}

/// Compare two runs.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {}

/// Sweep time scales.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {}

/// Runs `tracebench report`.
pub fn run_report(_args: ReportArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("report: not built yet")
}

/// Runs `tracebench compare`.
pub fn run_compare(_args: CompareArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("compare: not built yet")
}

/// Runs `tracebench sweep`.
pub fn run_sweep(_args: SweepArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("sweep: not built yet")
}
