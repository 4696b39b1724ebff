//! `tracebench report`, `compare` and `sweep`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::report::{self, GoodputSlo, GoodputTerm, parse_goodput_term, rebuild};

/// Rebuild a run's reports.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run's output directory (holding run.json and requests.jsonl).
    pub dir: PathBuf,

    /// Goodput objectives replacing the run's, in ms: `ttft:500 tpot:50 e2el:10000`.
    #[arg(long, num_args = 1.., value_parser = parse_goodput_term, value_name = "NAME:MS")]
    pub goodput: Option<Vec<GoodputTerm>>,

    /// Also write the seed's raw result format to FILE.
    #[arg(long, value_name = "FILE")]
    pub save_tics: Option<PathBuf>,
}

/// Compare two runs.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The baseline run: its directory or its summary.json.
    pub a: PathBuf,

    /// The run compared with it.
    pub b: PathBuf,
}

/// Sweep time scales.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {}

/// Runs `tracebench report`: rebuilds summary.json, requests.csv and report.html from
/// run.json and requests.jsonl, and prints the console report.
pub fn run_report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let goodput = args.goodput.as_deref().map(GoodputSlo::from_terms);
    let rebuilt = rebuild::read_run(&args.dir, goodput)?;
    if rebuilt.truncated_tail {
        tracing::warn!("requests.jsonl: the last line was cut short (killed run?) and was dropped");
    }

    let summary =
        report::write_run_reports(&args.dir, &rebuilt.run, &rebuilt.records, rebuilt.partial)
            .with_context(|| format!("writing the reports of {}", args.dir.display()))?;
    if let Some(path) = &args.save_tics {
        report::write_tics(path, &rebuilt.records)?;
    }
    print!("{}", report::console::render(&summary));
    Ok(ExitCode::SUCCESS)
}

/// Runs `tracebench compare`: prints the change of every headline metric from A to B.
pub fn run_compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let a = rebuild::load_summary(&args.a)?;
    let b = rebuild::load_summary(&args.b)?;
    let text = report::compare::render(
        &args.a.display().to_string(),
        &a,
        &args.b.display().to_string(),
        &b,
    );
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Runs `tracebench sweep`.
pub fn run_sweep(_args: SweepArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("sweep: not built yet")
}
