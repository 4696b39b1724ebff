//! `tracebench trace ...`: stats, fetch, list, convert, synth.
//!
//! Wiring only: reading is [`crate::trace`], fetching, converting and synthesising are
//! [`crate::tracetools`]. Reports go to stdout; loading warnings to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::trace_input::{TraceCacheArgs, TraceReadArgs};
use crate::replay::output;
use crate::trace::stats::TraceStats;
use crate::trace::{self, LoadReport, TraceFormat};
use crate::tracetools::catalog::KNOWN_TRACES;
use crate::tracetools::fetch;
use crate::tracetools::synth::{self, ArrivalKind, Extent, LengthDist, Lengths, SynthParams};
use crate::tracetools::{catalog, convert};

/// Inspect, fetch, convert and synthesise trace files.
#[derive(Debug, clap::Args)]
pub struct TraceCommand {
    /// What to do with traces.
    #[command(subcommand)]
    pub action: TraceAction,
}

/// The `trace` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TraceAction {
    /// Print what a trace holds: rates, burstiness, lengths, prefix reuse, sessions.
    Stats(StatsArgs),
    /// Download a public trace by name into the cache.
    Fetch(FetchArgs),
    /// List the public traces, their sizes and what is cached.
    List(CacheArgs),
    /// Convert a trace between formats (tracebench's own JSONL by default).
    Convert(ConvertArgs),
    /// Write a seeded synthetic trace in tracebench's JSONL.
    Synth(SynthArgs),
}

/// `trace fetch` and `trace list`: where public traces are cached and come from.
/// `--base-url` is the older name of `--trace-base-url`, kept as an alias here (only here:
/// under `replay` it names the server).
#[derive(Debug, clap::Args)]
#[command(mut_arg("trace_base_url", |arg| arg.visible_alias("base-url")))]
pub struct CacheArgs {
    /// Where public traces are cached and come from.
    #[command(flatten)]
    cache: TraceCacheArgs,
}

/// `trace stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Trace file, or a public trace name.
    #[arg(value_name = "FILE|NAME")]
    pub file: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    read: TraceReadArgs,
}

/// `trace fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The trace name (see `tracebench trace list`).
    pub name: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    cache: CacheArgs,
}

/// `trace convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Input trace (any format we read), or a public trace name.
    #[arg(value_name = "IN")]
    pub input: String,
    /// Output file (`.gz` compresses); an existing one is refused unless --force.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// Output format.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = TraceFormat::Tracebench)]
    pub to: TraceFormat,
    /// Overwrite OUT if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    read: TraceReadArgs,
}

/// `trace synth`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("extent").required(true).args(["count", "duration"])))]
pub struct SynthArgs {
    /// Output file (tracebench JSONL; `.gz` compresses); an existing one is refused unless
    /// --force.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite an existing --output file.
    #[arg(long)]
    pub force: bool,
    /// RNG seed: one seed gives one trace, byte for byte.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Mean requests per second.
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub rate: f64,
    /// Number of records.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub count: Option<usize>,
    /// Seconds of arrivals.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub duration: Option<f64>,
    /// Arrival process.
    #[arg(long, value_enum, default_value_t = ArrivalKind::Poisson)]
    pub arrival: ArrivalKind,
    /// Gamma shape for --arrival gamma: 1 is Poisson, below 1 burstier (gap CV 1/sqrt(B)).
    #[arg(
        long,
        value_name = "B",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub burstiness: f64,
    /// Prompt lengths: fixed:N, uniform:MIN:MAX, normal:MEAN:STD or lognormal:MEAN:SIGMA
    /// (with sessions: new user tokens per turn).
    #[arg(long, value_name = "DIST", default_value = "lognormal:1024:0.8")]
    pub input_tokens: String,
    /// Generated lengths, same syntax as --input-tokens.
    #[arg(long, value_name = "DIST", default_value = "lognormal:256:0.8")]
    pub output_tokens: String,
    /// Smallest prompt.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub min_input_tokens: u32,
    /// Largest prompt.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 32_768,
        allow_negative_numbers = true
    )]
    pub max_input_tokens: u32,
    /// Smallest generation.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub min_output_tokens: u32,
    /// Largest generation.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4_096,
        allow_negative_numbers = true
    )]
    pub max_output_tokens: u32,
    /// Tokens per hash_ids block.
    #[arg(
        long,
        value_name = "TOKENS",
        default_value_t = 512,
        allow_negative_numbers = true
    )]
    pub block_size: u32,
    /// Number of shared-prefix groups (system prompts); 0 for none.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub prefix_groups: usize,
    /// Prefix length of each group in tokens (one value for all, or one per group,
    /// comma-separated); rounded down to whole blocks.
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "TOKENS",
        value_delimiter = ',',
        default_value = "1024"
    )]
    pub prefix_tokens: Vec<u32>,
    /// Share of requests (0–1) that start with a group's prefix.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub prefix_share: f64,
    /// Zipf exponent of group popularity (0: all groups equally popular).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub prefix_zipf: f64,
    /// Make multi-turn sessions (chat_id / parent_chat_id / turn).
    #[arg(long)]
    pub sessions: bool,
    /// Mean turns per session (geometric).
    #[arg(
        long,
        value_name = "T",
        default_value_t = 3.0,
        allow_negative_numbers = true
    )]
    pub turns_mean: f64,
    /// Mean seconds between a turn's arrival and the next turn's (exponential).
    #[arg(
        long,
        value_name = "S",
        default_value_t = 30.0,
        allow_negative_numbers = true
    )]
    pub think_time: f64,
}

/// Runs `tracebench trace`.
pub fn run(args: TraceCommand) -> anyhow::Result<ExitCode> {
    match args.action {
        TraceAction::Stats(args) => stats(args),
        TraceAction::Fetch(args) => fetch_one(args),
        TraceAction::List(args) => list(args),
        TraceAction::Convert(args) => convert_one(args),
        TraceAction::Synth(args) => synthesise(args),
    }
}

/// Loads `trace` as `read` says, warnings on stderr.
fn load(read: &TraceReadArgs, trace: &str) -> anyhow::Result<trace::LoadedTrace> {
    Ok(read.read(trace)?.loaded)
}

/// `trace stats --json` output.
#[derive(Serialize)]
struct StatsJson<'a> {
    schema_version: u32,
    format: TraceFormat,
    #[serde(flatten)]
    stats: &'a TraceStats,
    load: &'a LoadReport,
}

fn stats(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let loaded = load(&args.read, &args.file)?;
    let stats = TraceStats::compute(&loaded.records);
    if args.json {
        let json = StatsJson {
            schema_version: 1,
            format: loaded.format,
            stats: &stats,
            load: &loaded.report,
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print!("{}", render_text(&stats, &loaded.report, loaded.format));
    }
    Ok(ExitCode::SUCCESS)
}

fn fetch_one(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let opts = args.cache.cache.fetch_options(args.quiet);
    let Some(known) = catalog::find(&args.name) else {
        anyhow::bail!(
            "{}: not a known trace name (known: {})",
            args.name,
            catalog::known_names()
        );
    };
    let path = fetch::fetch(known, &opts)?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn list(args: CacheArgs) -> anyhow::Result<ExitCode> {
    let opts = args.cache.fetch_options(true);
    println!("cache: {}", fetch::cache_dir(&opts).display());
    for known in &KNOWN_TRACES {
        let cached = fetch::cached_path(known, &opts).is_file();
        let size = known.size_bytes.map_or_else(
            || "size unknown".to_string(),
            |b| format!("{:.1} MB", b as f64 / 1e6),
        );
        let state = if cached { "cached" } else { "-" };
        println!(
            "{:<22} {:>12}  {:<6}  {}",
            known.name, size, state, known.about
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn convert_one(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    output::check_new_file(&args.output, "OUT", args.force)?;
    let loaded = load(&args.read, &args.input)?;
    convert::write_file(&loaded.records, args.to, &args.output)?;
    eprintln!(
        "wrote {} records as {} to {}",
        loaded.records.len(),
        args.to,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn synthesise(args: SynthArgs) -> anyhow::Result<ExitCode> {
    output::check_new_file(&args.output, "--output", args.force)?;
    let params = synth_params(&args)?;
    let records = synth::generate(&params)?;
    convert::write_file(&records, TraceFormat::Tracebench, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "wrote {} synthetic records to {}",
        records.len(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn synth_params(args: &SynthArgs) -> anyhow::Result<SynthParams> {
    let extent = match (args.count, args.duration) {
        (Some(n), _) => Extent::Count(n),
        (None, Some(s)) => Extent::Duration(s),
        (None, None) => anyhow::bail!("give --count N or --duration S"),
    };
    let input = Lengths {
        dist: args.input_tokens.parse::<LengthDist>()?,
        min: args.min_input_tokens,
        max: args.max_input_tokens,
    };
    let output = Lengths {
        dist: args.output_tokens.parse::<LengthDist>()?,
        min: args.min_output_tokens,
        max: args.max_output_tokens,
    };
    Ok(SynthParams {
        seed: args.seed,
        rate: args.rate,
        extent,
        arrival: args.arrival,
        burstiness: args.burstiness,
        input,
        output,
        block_size: args.block_size,
        prefix: prefix_params(args)?,
        sessions: args.sessions.then_some(synth::SessionParams {
            turns_mean: args.turns_mean,
            think_time_s: args.think_time,
        }),
    })
}

fn prefix_params(args: &SynthArgs) -> anyhow::Result<Option<synth::PrefixParams>> {
    if args.prefix_groups == 0 {
        return Ok(None);
    }
    let group_tokens = match args.prefix_tokens.as_slice() {
        [one] => vec![*one; args.prefix_groups],
        many if many.len() == args.prefix_groups => many.to_vec(),
        many => anyhow::bail!(
            "--prefix-tokens: {} values for {} groups (give one, or one per group)",
            many.len(),
            args.prefix_groups
        ),
    };
    Ok(Some(synth::PrefixParams {
        group_tokens,
        share: args.prefix_share,
        zipf: args.prefix_zipf,
    }))
}

/// `trace stats` as aligned text, numbers grouped by thousands.
fn render_text(stats: &TraceStats, report: &LoadReport, format: TraceFormat) -> String {
    let mut out = String::new();
    let mut row = |label: &str, value: String| out.push_str(&format!("{label:<16}{value}\n"));
    row("trace", format!("{} ({format})", report.path.display()));
    row("records", grouped(stats.records as f64, 0));
    row("duration", format!("{} s", grouped(stats.duration_s, 3)));
    let mean_rate = stats
        .mean_rate_per_s
        .map_or("-".into(), |r| format!("{r:.3} req/s"));
    row("mean rate", mean_rate);
    row(
        "peak rate",
        format!(
            "{:.0} req/s over 1 s, {:.3} req/s over 60 s",
            stats.peak_rate_1s_per_s, stats.peak_rate_60s_per_s
        ),
    );
    let cv = stats
        .interarrival_cv
        .map_or("-".into(), |cv| format!("{cv:.3}"));
    row(
        "burstiness",
        format!("{cv} (CV of inter-arrival gaps; 1 = Poisson)"),
    );
    row("input tokens", lengths(&stats.input_tokens));
    row("output tokens", lengths(&stats.output_tokens));
    if let Some(p) = &stats.prefix {
        row(
            "prefix blocks",
            format!(
                "{} total, {} distinct, reuse {:.1} % ({}-token blocks)",
                grouped(p.blocks_total as f64, 0),
                grouped(p.blocks_distinct as f64, 0),
                p.reuse_ratio * 100.0,
                p.block_size
            ),
        );
    }
    if let Some(s) = &stats.sessions {
        row("sessions", sessions_text(s));
    }
    if !stats.types.is_empty() {
        let types: Vec<String> = stats
            .types
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        row("types", types.join(", "));
    }
    out
}

fn lengths(l: &trace::stats::LengthStats) -> String {
    format!(
        "mean {}  p50 {}  p90 {}  p99 {}  min {}  max {}",
        grouped(l.mean, 0),
        grouped(l.p50, 0),
        grouped(l.p90, 0),
        grouped(l.p99, 0),
        grouped(f64::from(l.min), 0),
        grouped(f64::from(l.max), 0)
    )
}

fn sessions_text(s: &trace::sessions::SessionStats) -> String {
    let gap = |g: Option<f64>| g.map_or("-".into(), |g| format!("{g:.1} s"));
    format!(
        "{} sessions, turns mean {:.2} p50 {:.0} max {}; parent→child gap p50 {} p90 {} max {}; {} children with missing parent, {} not extending the parent's blocks",
        grouped(s.sessions as f64, 0),
        s.turns_mean,
        s.turns_p50,
        s.turns_max,
        gap(s.parent_child_gap_p50_s),
        gap(s.parent_child_gap_p90_s),
        gap(s.parent_child_gap_max_s),
        s.missing_parent,
        s.not_extending_parent
    )
}

/// `value` with `decimals` decimals and commas between thousands (`3,536.999`).
fn grouped(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

#[cfg(test)]
mod tests {
    use super::grouped;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(grouped(3536.999, 3), "3,536.999");
        assert_eq!(grouped(12031.0, 0), "12,031");
        assert_eq!(grouped(288500.0, 0), "288,500");
        assert_eq!(grouped(-1234567.5, 1), "-1,234,567.5");
        assert_eq!(grouped(999.0, 0), "999");
    }
}
