//! `tracebench report`, `compare` and `sweep`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::replay::{ReplayArgs, ReplayReport, exit_code, replay_once};
use crate::replay::output;

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

/// Replay one trace at several time scales or target rates, one run after another.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Every replay option; `--output DIR` is the sweep's folder, one sub-directory per run.
    #[command(flatten)]
    pub replay: ReplayArgs,

    /// Time scales to replay at, in order (the seed's 0.4,0.5,0.6,0.7,0.8,1.6).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "F,F,...",
        required_unless_present = "target_rates",
        conflicts_with = "target_rates"
    )]
    pub time_scales: Vec<f64>,

    /// Mean arrival rates to replay at (requests/s, the trace's shape kept), in order.
    #[arg(long, value_delimiter = ',', value_name = "R,R,...")]
    pub target_rates: Vec<f64>,
}

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

/// One load level of a sweep.
#[derive(Debug, Clone, Copy)]
enum SweepLevel {
    /// `--time-scale F`.
    TimeScale(f64),
    /// `--target-rate R`.
    TargetRate(f64),
}

impl SweepLevel {
    /// The table's label.
    fn label(self) -> String {
        match self {
            SweepLevel::TimeScale(f) => format!("scale {f}"),
            SweepLevel::TargetRate(r) => format!("rate {r}"),
        }
    }

    /// The run's sub-directory.
    fn dir_name(self) -> String {
        match self {
            SweepLevel::TimeScale(f) => format!("time-scale-{f}"),
            SweepLevel::TargetRate(r) => format!("target-rate-{r}"),
        }
    }

    /// The replay options of this level's run.
    fn apply(self, base: &ReplayArgs) -> ReplayArgs {
        let mut args = base.clone();
        args.trace.speedup = None;
        match self {
            SweepLevel::TimeScale(f) => {
                args.trace.time_scale = Some(f);
                args.trace.target_rate = None;
            }
            SweepLevel::TargetRate(r) => {
                args.trace.time_scale = None;
                args.trace.target_rate = Some(r);
            }
        }
        args
    }
}

/// Runs `tracebench sweep`: one replay per level, each saved in its own sub-directory as
/// soon as it ends, then the sweep table on stdout and `sweep.html` in the sweep's folder.
pub fn run_sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let levels = sweep_levels(&args)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let root = output::prepare_dir(args.replay.out.output.as_deref())?;
        let stop = CancellationToken::new();
        let grace = Duration::try_from_secs_f64(args.replay.load.grace)
            .with_context(|| format!("--grace {}: expected seconds", args.replay.load.grace))?;
        crate::replay::stop_on_signals(stop.clone(), grace);

        let mut runs = Vec::new();
        for level in levels {
            let report = sweep_one(&args.replay, level, &root, stop.clone()).await?;
            let stopped = report.partial;
            runs.push((level.label(), report));
            if stopped {
                break;
            }
        }
        finish_sweep(&args.replay, &root, &runs)
    })
}

fn sweep_levels(args: &SweepArgs) -> anyhow::Result<Vec<SweepLevel>> {
    let trace = &args.replay.trace;
    if trace.time_scale.is_some() || trace.speedup.is_some() || trace.target_rate.is_some() {
        anyhow::bail!(
            "sweep sets the timeline itself: use --time-scales or --target-rates, not \
             --time-scale, --speedup or --target-rate"
        );
    }
    let levels: Vec<SweepLevel> = match args.time_scales.is_empty() {
        false => args
            .time_scales
            .iter()
            .map(|&f| SweepLevel::TimeScale(f))
            .collect(),
        true => args
            .target_rates
            .iter()
            .map(|&r| SweepLevel::TargetRate(r))
            .collect(),
    };
    if let Some(bad) = levels.iter().find(|l| {
        let (SweepLevel::TimeScale(v) | SweepLevel::TargetRate(v)) = **l;
        !(v.is_finite() && v > 0.0)
    }) {
        anyhow::bail!("sweep level {}: expected a positive number", bad.label());
    }
    Ok(levels)
}

/// Replays one level into its sub-directory and prints its console report.
async fn sweep_one(
    base: &ReplayArgs,
    level: SweepLevel,
    root: &std::path::Path,
    stop: CancellationToken,
) -> anyhow::Result<ReplayReport> {
    let dir = output::prepare_dir(Some(&root.join(level.dir_name())))?;
    eprintln!("== sweep: {} → {}", level.label(), dir.display());
    let report = replay_once(&level.apply(base), &dir, stop).await?;
    println!("== {}", level.label());
    print!("{}", report::console::render(&report.summary));
    Ok(report)
}

/// The sweep table, `sweep.html`, and the exit code.
fn finish_sweep(
    base: &ReplayArgs,
    root: &std::path::Path,
    runs: &[(String, ReplayReport)],
) -> anyhow::Result<ExitCode> {
    let rows: Vec<report::sweep::SweepRun<'_>> = runs
        .iter()
        .map(|(label, r)| (label.as_str(), &r.summary))
        .collect();
    println!("{}", report::sweep::table(&rows));
    let title = format!("tracebench sweep of {}", base.trace.trace);
    report::sweep::write_html(&root.join("sweep.html"), &title, &rows)?;
    eprintln!("sweep results in {}", root.display());

    let code = runs
        .iter()
        .map(|(_, r)| exit_code(&base.out, r))
        .max()
        .unwrap_or(0);
    Ok(ExitCode::from(code))
}
