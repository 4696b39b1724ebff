//! `tracebench report`, `compare` and `sweep`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::replay::{ReplayArgs, ReplayReport, check_args, exit_code, make_plan, replay_once};
use super::trace_input::PreparedTrace;
use crate::replay::output;
use crate::report::{self, GoodputSlo, GoodputTerm, parse_goodput_term, rebuild};
use crate::schedule::Plan;

/// The sweep's page, in its folder.
const SWEEP_HTML: &str = "sweep.html";

/// Rebuild a run's reports.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The run's output directory (holding run.json and requests.jsonl).
    pub dir: PathBuf,

    /// Goodput objectives replacing the run's, in ms: `ttft:500 tpot:50 e2el:10000`.
    #[arg(long, num_args = 1.., value_parser = parse_goodput_term, value_name = "NAME:MS")]
    pub goodput: Option<Vec<GoodputTerm>>,

    /// Also write the seed's raw result format to FILE (an existing file only with --force).
    #[arg(long, value_name = "FILE")]
    pub save_tics: Option<PathBuf>,

    /// Overwrite an existing --save-tics FILE.
    #[arg(long)]
    pub force: bool,
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
        allow_hyphen_values = true,
        required_unless_present = "target_rates",
        conflicts_with = "target_rates"
    )]
    pub time_scales: Vec<f64>,

    /// Mean arrival rates to replay at (requests/s, the trace's shape kept), in order.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "R,R,...",
        allow_hyphen_values = true
    )]
    pub target_rates: Vec<f64>,
}

/// Runs `tracebench report`: rebuilds summary.json, requests.csv and report.html from
/// run.json and requests.jsonl, and prints the console report.
pub fn run_report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    if let Some(tics) = &args.save_tics {
        output::check_new_file(tics, "--save-tics", args.force)?;
    }
    let goodput = args.goodput.as_deref().map(GoodputSlo::from_terms);
    let rebuilt = rebuild::read_run(&args.dir, goodput)?;
    if rebuilt.truncated_tail {
        tracing::warn!("requests.jsonl: the last line was cut short (killed run?) and was dropped");
    }
    if rebuilt.unrecorded > 0 {
        let recorded = rebuilt.records.len();
        tracing::warn!(
            "{} requests planned, {recorded} finished (requests.jsonl): the run did not end; \
             the {} without a record are counted as skipped",
            recorded + rebuilt.unrecorded,
            rebuilt.unrecorded
        );
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
/// Every level's flags, its directory and the trace are checked before anything is made.
pub fn run_sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let levels = sweep_levels(&args)?;
    let base = &args.replay;
    check_args(base)?;
    if base.out.save_tics.is_some() {
        anyhow::bail!(
            "--save-tics is not taken by sweep (every level would write the same file): \
             write a level's with `tracebench report LEVEL_DIR --save-tics FILE`"
        );
    }
    let root = base.out.output.as_deref();
    check_sweep_unused(root, &levels, base.out.force)?;
    let trace = base.trace.read()?;
    let mut planned = Vec::new();
    for &level in &levels {
        let args = level.apply(base);
        let prepared = args.trace.reshape(trace.clone())?;
        let plan = make_plan(&prepared.records, &args.load, args.prompt.seed)?;
        planned.push((level, args, prepared, plan));
    }

    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let root = output::prepare_dir(root, base.out.force)?;
        let stop = CancellationToken::new();
        let grace = Duration::try_from_secs_f64(base.load.grace)
            .with_context(|| format!("--grace {}: expected seconds", base.load.grace))?;
        crate::replay::stop_on_signals(stop.clone(), grace);

        let mut runs = Vec::new();
        for (level, args, prepared, plan) in planned {
            let run = LevelRun {
                level,
                args: &args,
                trace: prepared,
                plan,
            };
            let report = match sweep_one(run, &root.path, stop.clone()).await {
                Ok(report) => report,
                Err(err) => {
                    root.discard_if_empty();
                    return Err(err);
                }
            };
            let stopped = report.partial;
            runs.push((level.label(), report));
            if stopped {
                break;
            }
        }
        finish_sweep(base, &root.path, &runs)
    })
}

/// Refuses a sweep folder holding an earlier sweep (`sweep.html`) or a level directory
/// holding a run, unless `force`. Creates nothing.
fn check_sweep_unused(
    root: Option<&Path>,
    levels: &[SweepLevel],
    force: bool,
) -> anyhow::Result<()> {
    let Some(root) = root else {
        return Ok(());
    };
    if root.join(SWEEP_HTML).exists() && !force {
        anyhow::bail!(
            "output directory {} already holds a sweep ({SWEEP_HTML}): pass --force to \
             overwrite it, or choose another --output DIR",
            root.display()
        );
    }
    for level in levels {
        output::check_unused(Some(&root.join(level.dir_name())), force)?;
    }
    Ok(())
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

/// One level of a sweep, ready to run.
struct LevelRun<'a> {
    level: SweepLevel,
    args: &'a ReplayArgs,
    trace: PreparedTrace,
    plan: Plan,
}

/// Replays one level into its sub-directory and prints its console report.
async fn sweep_one(
    run: LevelRun<'_>,
    root: &Path,
    stop: CancellationToken,
) -> anyhow::Result<ReplayReport> {
    let dir_path = root.join(run.level.dir_name());
    let dir = output::prepare_dir(Some(&dir_path), run.args.out.force)?;
    eprintln!("== sweep: {} → {}", run.level.label(), dir.path.display());
    let report = replay_once(run.args, run.trace, run.plan, &dir, stop).await?;
    println!("== {}", run.level.label());
    print!("{}", report::console::render(&report.summary));
    Ok(report)
}

/// The sweep table, `sweep.html`, and the exit code.
fn finish_sweep(
    base: &ReplayArgs,
    root: &Path,
    runs: &[(String, ReplayReport)],
) -> anyhow::Result<ExitCode> {
    let rows: Vec<report::sweep::SweepRun<'_>> = runs
        .iter()
        .map(|(label, r)| (label.as_str(), &r.summary))
        .collect();
    println!("{}", report::sweep::table(&rows));
    let title = format!("tracebench sweep of {}", base.trace.trace);
    report::sweep::write_html(&root.join(SWEEP_HTML), &title, &rows)?;
    eprintln!("sweep results in {}", root.display());

    let code = runs
        .iter()
        .map(|(_, r)| exit_code(&base.out, r))
        .max()
        .unwrap_or(0);
    Ok(ExitCode::from(code))
}
