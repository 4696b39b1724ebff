//! The trace flags shared by `replay`, `prompts` and `sweep` (`#[command(flatten)]`):
//! which trace, how to read it, and the timeline transforms.
//!
//! [`TraceInputArgs::load`] resolves `--trace` (a file, or a public trace name fetched into
//! the cache on first use), loads it, applies the transforms, logs what was skipped,
//! dropped, reordered or clamped, and returns everything the replay report needs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::trace::timeline::{self, TimeScale, TimelineOptions, TransformReport};
use crate::trace::{self, LoadOptions, LoadReport, OnInvalid, TraceFormat, TraceRecord};
use crate::tracetools::fetch::{self, FetchOptions};

/// Which trace to replay and how to read and reshape it.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceInputArgs {
    /// Trace file (JSONL or CSV, optionally .gz), or a public trace name from
    /// `tracebench trace list`, downloaded into the cache on first use.
    #[arg(long, value_name = "FILE|NAME")]
    pub trace: String,

    /// Read the trace as this format instead of detecting it.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<TraceFormat>,

    /// Tokens per `hash_ids` block (default: the format's, 16 for Bailian, 512 for Mooncake).
    #[arg(long, value_name = "TOKENS")]
    pub block_size: Option<u32>,

    /// What to do with an invalid record: stop with its FILE:LINE error, or skip and count it.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = OnInvalid::Fail)]
    pub on_invalid: OnInvalid,

    /// Keep BurstGPT rows with `Response tokens` 0 (failed requests; dropped by default).
    #[arg(long)]
    pub keep_failed: bool,

    /// Keep only the first N records (after --start/--end).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Drop records earlier than this many seconds after the first record.
    #[arg(long, value_name = "SECONDS")]
    pub start: Option<f64>,

    /// Drop records at or after this many seconds after the first record.
    #[arg(long, value_name = "SECONDS")]
    pub end: Option<f64>,

    /// Multiply every gap between arrivals by F (0.5 replays twice as fast).
    #[arg(long, value_name = "F", conflicts_with_all = ["speedup", "target_rate"])]
    pub time_scale: Option<f64>,

    /// Replay X times as fast (same as --time-scale 1/X).
    #[arg(long, value_name = "X", conflicts_with = "target_rate")]
    pub speedup: Option<f64>,

    /// Rescale the timeline so the mean arrival rate is R requests/s, its shape kept.
    #[arg(long, value_name = "R")]
    pub target_rate: Option<f64>,

    /// Clamp prompts to N tokens (keeping the hash_ids that still fit); clamps are counted.
    #[arg(long, value_name = "N")]
    pub max_input_tokens: Option<u32>,

    /// Clamp generated lengths to N tokens; clamps are counted.
    #[arg(long, value_name = "N")]
    pub max_output_tokens: Option<u32>,

    /// Where public traces are cached.
    #[arg(long, value_name = "DIR", env = "TRACEBENCH_TRACE_DIR")]
    pub trace_dir: Option<PathBuf>,

    /// Download public traces from this base URL instead of their public addresses.
    #[arg(long, value_name = "URL", env = "TRACEBENCH_TRACE_BASE_URL")]
    pub trace_base_url: Option<String>,
}

/// A loaded and transformed trace, ready to plan a replay from.
#[derive(Debug, Clone)]
pub struct PreparedTrace {
    /// The records after every transform, first at offset zero.
    pub records: Vec<TraceRecord>,
    /// The format the file was read as.
    pub format: TraceFormat,
    /// The file read (the cache file for a public trace name).
    pub path: PathBuf,
    /// What loading skipped, dropped, warned about or reordered.
    pub load: LoadReport,
    /// What the timeline transforms did.
    pub transform: TransformReport,
}

/// The counts of a [`PreparedTrace`], for the run's JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct PreparedTraceSummary<'a> {
    /// The file read.
    pub path: &'a PathBuf,
    /// The format it was read as.
    pub format: TraceFormat,
    /// Loading counts.
    pub load: &'a LoadReport,
    /// Transform counts.
    pub transform: &'a TransformReport,
}

impl PreparedTrace {
    /// Every noteworthy count as a human-readable line (loading first, then transforms).
    pub fn report_lines(&self) -> Vec<String> {
        let mut lines = self.load.lines();
        lines.extend(self.transform.lines());
        lines
    }

    /// The counts, serializable.
    pub fn summary(&self) -> PreparedTraceSummary<'_> {
        PreparedTraceSummary {
            path: &self.path,
            format: self.format,
            load: &self.load,
            transform: &self.transform,
        }
    }
}

impl TraceInputArgs {
    /// Arguments for a trace file with every other flag at its default (for tests and tools).
    pub fn for_file(trace: impl Into<String>) -> Self {
        Self {
            trace: trace.into(),
            format: None,
            block_size: None,
            on_invalid: OnInvalid::Fail,
            keep_failed: false,
            limit: None,
            start: None,
            end: None,
            time_scale: None,
            speedup: None,
            target_rate: None,
            max_input_tokens: None,
            max_output_tokens: None,
            trace_dir: None,
            trace_base_url: None,
        }
    }

    /// Resolves, loads and transforms the trace, logging what was not taken as is.
    pub fn load(&self) -> anyhow::Result<PreparedTrace> {
        let path = self.resolve()?;
        let loaded = trace::load(&path, &self.load_options())?;
        let timeline = self.timeline_options()?;
        let (records, transform) = timeline::apply(loaded.records, &timeline)?;

        let prepared = PreparedTrace {
            records,
            format: loaded.format,
            path,
            load: loaded.report,
            transform,
        };
        log_report(&prepared);
        Ok(prepared)
    }

    /// The path of `--trace`: an existing file as is, a public name fetched into the cache.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        let opts = FetchOptions {
            cache_dir: self.trace_dir.clone(),
            base_url: self.trace_base_url.clone(),
            quiet: false,
        };
        fetch::resolve(&self.trace, &opts)
    }

    /// The reading options these flags ask for.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            format: self.format,
            block_size: self.block_size,
            on_invalid: self.on_invalid,
            keep_failed: self.keep_failed,
        }
    }

    /// The timeline transforms these flags ask for, with their values checked.
    pub fn timeline_options(&self) -> anyhow::Result<TimelineOptions> {
        let time_scale = match (self.time_scale, self.speedup, self.target_rate) {
            (Some(f), _, _) => Some(TimeScale::Factor(f)),
            (None, Some(x), _) => Some(TimeScale::Factor(positive("--speedup", x)?.recip())),
            (None, None, Some(r)) => Some(TimeScale::TargetRate(r)),
            (None, None, None) => None,
        };
        Ok(TimelineOptions {
            start: self.start.map(|s| seconds("--start", s)).transpose()?,
            end: self.end.map(|s| seconds("--end", s)).transpose()?,
            limit: self.limit,
            time_scale,
            max_input_tokens: self.max_input_tokens,
            max_output_tokens: self.max_output_tokens,
        })
    }
}

fn positive(flag: &str, value: f64) -> anyhow::Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        anyhow::bail!("{flag}: expected a positive finite number, found {value}")
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| {
        format!("{flag}: expected a non-negative number of seconds, found {value}")
    })
}

/// Loading problems are warnings (the measurement may differ from the trace); transforms
/// the user asked for are information.
fn log_report(prepared: &PreparedTrace) {
    for line in prepared.load.lines() {
        tracing::warn!("{line}");
    }
    for line in prepared.transform.lines() {
        tracing::info!("{line}");
    }
    tracing::info!(
        "trace {}: {} records as {}",
        prepared.path.display(),
        prepared.records.len(),
        prepared.format
    );
}
