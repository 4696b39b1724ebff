//! The trace flags, declared once and flattened (`#[command(flatten)]`) wherever a trace
//! is read: [`TraceReadArgs`] (how to read a file, with [`TraceCacheArgs`], where public
//! traces come from) for `trace stats` and `trace convert`, and [`TraceInputArgs`] (which
//! trace, how to read it, and the timeline transforms) for `replay`, `prompts` and `sweep`.
//!
//! [`TraceInputArgs::load`] resolves `--trace` (a file, or a public trace name fetched into
//! the cache on first use), loads it, applies the transforms, logs what was skipped,
//! dropped, reordered or clamped, and returns everything the replay report needs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::trace::timeline::{self, TimeScale, TimelineOptions, TransformReport};
use crate::trace::{
    self, LoadOptions, LoadReport, LoadedTrace, OnInvalid, TraceFormat, TraceRecord,
};
use crate::tracetools::fetch::{self, FetchOptions};

/// Where public traces are cached and downloaded from: part of [`TraceReadArgs`], and all
/// that `trace fetch` and `trace list` take.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TraceCacheArgs {
    /// Where public traces are cached (default: ~/.cache/tracebench/traces).
    #[arg(long, value_name = "DIR", env = fetch::TRACE_DIR_ENV)]
    pub trace_dir: Option<PathBuf>,

    /// Download public traces from URL/FILE_NAME instead of their public addresses.
    #[arg(long, value_name = "URL", env = fetch::BASE_URL_ENV)]
    pub trace_base_url: Option<String>,
}

/// How to read a trace file: the flags every command that reads one shares (`replay`,
/// `prompts`, `sweep` through [`TraceInputArgs`]; `trace stats` and `trace convert`).
#[derive(Debug, Clone, clap::Args)]
pub struct TraceReadArgs {
    /// Read the trace as this format instead of detecting it.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<TraceFormat>,

    /// Tokens per `hash_ids` block (default: the format's, 16 for Bailian, 512 for Mooncake).
    #[arg(long, value_name = "TOKENS", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub block_size: Option<u32>,

    /// What to do with an invalid record: stop with its FILE:LINE error, or skip and count it.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = OnInvalid::Fail)]
    pub on_invalid: OnInvalid,

    /// Keep BurstGPT rows with `Response tokens` 0 (failed requests; dropped by default).
    #[arg(long)]
    pub keep_failed: bool,

    /// Where public traces come from and are cached.
    #[command(flatten)]
    pub cache: TraceCacheArgs,
}

/// Which trace to replay and how to read and reshape it.
#[derive(Debug, Clone, clap::Args)]
pub struct TraceInputArgs {
    /// Trace file (JSONL or CSV, optionally .gz), or a public trace name from
    /// `tracebench trace list`, downloaded into the cache on first use.
    #[arg(long, value_name = "FILE|NAME")]
    pub trace: String,

    /// How to read it.
    #[command(flatten)]
    pub read: TraceReadArgs,

    /// Keep only the first N records (after --start/--end).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub limit: Option<usize>,

    /// Drop records earlier than this many seconds after the first record.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub start: Option<f64>,

    /// Drop records at or after this many seconds after the first record.
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub end: Option<f64>,

    /// Multiply every gap between arrivals by F (0.5 replays twice as fast).
    #[arg(long, value_name = "F", allow_negative_numbers = true,
          conflicts_with_all = ["speedup", "target_rate"])]
    pub time_scale: Option<f64>,

    /// Replay X times as fast (same as --time-scale 1/X).
    #[arg(
        long,
        value_name = "X",
        allow_negative_numbers = true,
        conflicts_with = "target_rate"
    )]
    pub speedup: Option<f64>,

    /// Rescale the timeline so the mean arrival rate is R requests/s, its shape kept.
    #[arg(long, value_name = "R", allow_negative_numbers = true)]
    pub target_rate: Option<f64>,

    /// Clamp prompts to N tokens (keeping the hash_ids that still fit); clamps are counted.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_input_tokens: Option<u32>,

    /// Clamp generated lengths to N tokens; clamps are counted.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_output_tokens: Option<u32>,
}

/// A trace read from its file, before the timeline transforms.
#[derive(Debug, Clone)]
pub struct ReadTrace {
    /// The file read (the cache file for a public trace name).
    pub path: PathBuf,
    /// Its records and what loading reported.
    pub loaded: LoadedTrace,
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
    /// Records asking for 0 output tokens, sent asking for 1 (marked clamped).
    pub zero_output_raised: usize,
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
    /// Records asking for 0 output tokens, sent asking for 1.
    pub zero_output_raised: usize,
}

impl PreparedTrace {
    /// Every noteworthy count as a human-readable line (loading first, then transforms).
    pub fn report_lines(&self) -> Vec<String> {
        let mut lines = self.load.lines();
        lines.extend(self.transform.lines());
        lines.extend(self.zero_output_line());
        lines
    }

    /// The counts, serializable.
    pub fn summary(&self) -> PreparedTraceSummary<'_> {
        PreparedTraceSummary {
            path: &self.path,
            format: self.format,
            load: &self.load,
            transform: &self.transform,
            zero_output_raised: self.zero_output_raised,
        }
    }

    fn zero_output_line(&self) -> Option<String> {
        (self.zero_output_raised > 0).then(|| {
            format!(
                "{} records ask for 0 output tokens, which no server accepts: sent with \
                 max_tokens 1 and counted as clamped",
                self.zero_output_raised
            )
        })
    }
}

impl TraceCacheArgs {
    /// The download options these flags ask for.
    pub fn fetch_options(&self, quiet: bool) -> FetchOptions {
        FetchOptions {
            cache_dir: self.trace_dir.clone(),
            base_url: self.trace_base_url.clone(),
            quiet,
        }
    }
}

impl Default for TraceReadArgs {
    fn default() -> Self {
        Self {
            format: None,
            block_size: None,
            on_invalid: OnInvalid::Fail,
            keep_failed: false,
            cache: TraceCacheArgs::default(),
        }
    }
}

impl TraceReadArgs {
    /// The reading options these flags ask for.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            format: self.format,
            block_size: self.block_size,
            on_invalid: self.on_invalid,
            keep_failed: self.keep_failed,
        }
    }

    /// The path of `trace`: an existing file as is, a public name fetched into the cache.
    pub fn resolve(&self, trace: &str) -> anyhow::Result<PathBuf> {
        fetch::resolve(trace, &self.cache.fetch_options(false))
    }

    /// Resolves and loads `trace`, warning on stderr about what loading reported.
    pub fn read(&self, trace: &str) -> anyhow::Result<ReadTrace> {
        let path = self.resolve(trace)?;
        let loaded = trace::load(&path, &self.load_options())?;
        for line in loaded.report.lines() {
            tracing::warn!("{line}");
        }
        Ok(ReadTrace { path, loaded })
    }
}

impl TraceInputArgs {
    /// Arguments for a trace file with every other flag at its default (for tests and tools).
    pub fn for_file(trace: impl Into<String>) -> Self {
        Self {
            trace: trace.into(),
            read: TraceReadArgs::default(),
            limit: None,
            start: None,
            end: None,
            time_scale: None,
            speedup: None,
            target_rate: None,
            max_input_tokens: None,
            max_output_tokens: None,
        }
    }

    /// Checks the timeline flags, then resolves, loads and transforms the trace, logging
    /// what was not taken as is.
    pub fn load(&self) -> anyhow::Result<PreparedTrace> {
        self.timeline_options()?;
        let read = self.read()?;
        self.reshape(read)
    }

    /// Resolves and loads `--trace`, without the timeline transforms.
    pub fn read(&self) -> anyhow::Result<ReadTrace> {
        self.read.read(&self.trace)
    }

    /// Applies the timeline transforms to a trace [`read`](Self::read) before, and raises
    /// output lengths of 0 (which no server accepts as `max_tokens`) to 1.
    pub fn reshape(&self, read: ReadTrace) -> anyhow::Result<PreparedTrace> {
        let timeline = self.timeline_options()?;
        let (mut records, transform) = timeline::apply(read.loaded.records, &timeline)?;
        let zero_output_raised = raise_zero_outputs(&mut records);

        let prepared = PreparedTrace {
            records,
            format: read.loaded.format,
            path: read.path,
            load: read.loaded.report,
            transform,
            zero_output_raised,
        };
        log_report(&prepared);
        Ok(prepared)
    }

    /// The path of `--trace`: an existing file as is, a public name fetched into the cache.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        self.read.resolve(&self.trace)
    }

    /// The reading options these flags ask for.
    pub fn load_options(&self) -> LoadOptions {
        self.read.load_options()
    }

    /// The timeline transforms these flags ask for, with their values checked.
    pub fn timeline_options(&self) -> anyhow::Result<TimelineOptions> {
        let time_scale = match (self.time_scale, self.speedup, self.target_rate) {
            (Some(f), _, _) => Some(TimeScale::Factor(positive("--time-scale", f)?)),
            (None, Some(x), _) => Some(TimeScale::Factor(positive("--speedup", x)?.recip())),
            (None, None, Some(r)) => Some(TimeScale::TargetRate(positive("--target-rate", r)?)),
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

/// Sets every output length of 0 to 1, marking the record clamped; returns how many.
fn raise_zero_outputs(records: &mut [TraceRecord]) -> usize {
    let mut raised = 0;
    for record in records.iter_mut().filter(|r| r.output_tokens == 0) {
        record.output_tokens = 1;
        record.clamped = true;
        raised += 1;
    }
    raised
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

/// Loading problems were warned about when read; transforms the user asked for are
/// information; raised zero outputs change what is sent, so they are a warning.
fn log_report(prepared: &PreparedTrace) {
    for line in prepared.transform.lines() {
        tracing::info!("{line}");
    }
    if let Some(line) = prepared.zero_output_line() {
        tracing::warn!("{line}");
    }
    tracing::info!(
        "trace {}: {} records as {}",
        prepared.path.display(),
        prepared.records.len(),
        prepared.format
    );
}
