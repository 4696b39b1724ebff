//! `load`: one trace file in, validated records sorted by arrival out, with a report of
//! everything that was skipped, dropped, warned about or reordered.
//!
//! The [`Collector`] is where every reader hands its records: it applies `--on-invalid`,
//! checks that all timestamps share one origin (all epoch-sized or all relative), counts
//! out-of-order records, and at the end rebases times to [`Duration`]s once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::error::{Problem, RecordError, TraceError};
use super::format::{self, TraceFormat};
use super::json::{self, Parsed};
use super::record::TraceRecord;
use super::{source, tabular};

/// A timestamp at or beyond this many seconds is epoch-sized (absolute) rather than an
/// offset: 10^8 s is over three years, longer than any trace, shorter than any Unix time
/// since 1973.
const EPOCH_SIZED_NS: i64 = 100_000_000 * 1_000_000_000;

/// How many skipped-record messages the report keeps verbatim.
const KEPT_MESSAGES: usize = 5;

/// Most tokens a record may ask for, in or out. Far above any served context (the public
/// traces stay under 130 k), low enough that building the prompt cannot exhaust memory: a
/// typo of a few digits is an invalid record, not a run that allocates gigabytes.
pub const MAX_RECORD_TOKENS: u32 = 16_777_216;

/// What to do with an invalid record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Stop at the first invalid record with its `FILE:LINE: FIELD` error.
    #[default]
    Fail,
    /// Skip invalid records, counting them by reason.
    Skip,
}

/// How to read a trace file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Force a format; `None` detects it from the file.
    pub format: Option<TraceFormat>,
    /// Tokens per `hash_ids` block; `None` takes the record's or the format's default.
    pub block_size: Option<u32>,
    /// What to do with invalid records.
    pub on_invalid: OnInvalid,
    /// Keep BurstGPT rows with `Response tokens` 0 (failed requests); dropped by default.
    pub keep_failed: bool,
}

/// A loaded trace: records sorted by arrival (stably), and what happened on the way.
#[derive(Debug, Clone)]
pub struct LoadedTrace {
    /// The records, sorted by arrival.
    pub records: Vec<TraceRecord>,
    /// The format they were read as.
    pub format: TraceFormat,
    /// Counts of everything skipped, dropped, warned about or reordered.
    pub report: LoadReport,
}

/// What loading did besides returning records. Every count is also shown by `lines()`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// The file read.
    pub path: PathBuf,
    /// Whether the file was gzip-compressed.
    pub gzip: bool,
    /// Records kept.
    pub records: usize,
    /// Invalid records skipped under `--on-invalid skip`.
    pub skipped: usize,
    /// Skipped records by `FIELD: problem`.
    pub skipped_by_reason: BTreeMap<String, usize>,
    /// The first few skipped records' full messages.
    pub skipped_examples: Vec<String>,
    /// BurstGPT rows with `Response tokens` 0 dropped (see `--keep-failed`).
    pub failed_dropped: usize,
    /// Bailian records whose `hash_ids` count is not `ceil(input_length / block_size)`.
    pub hash_ids_mismatch: usize,
    /// Line of the first such record; `None` when there is none.
    pub first_hash_ids_mismatch_line: Option<u64>,
    /// Records that arrived earlier than a record before them in the file.
    pub out_of_order: usize,
    /// Line of the first such record; `None` when the file is in order.
    pub first_out_of_order_line: Option<u64>,
    /// Whether timestamps were absolute (epoch-sized) and rebased to the earliest.
    pub absolute_timestamps: bool,
}

impl LoadReport {
    /// One human-readable line per noteworthy count (nothing for a clean file).
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name = self.path.display();
        if self.skipped > 0 {
            let reasons: Vec<String> = self
                .skipped_by_reason
                .iter()
                .map(|(r, n)| format!("{n} × {r}"))
                .collect();
            out.push(format!(
                "{name}: skipped {} invalid records ({})",
                self.skipped,
                reasons.join(", ")
            ));
            out.extend(
                self.skipped_examples
                    .iter()
                    .map(|e| format!("  skipped {e}")),
            );
        }
        if self.failed_dropped > 0 {
            out.push(format!(
                "{name}: dropped {} failed requests (Response tokens 0); --keep-failed keeps them",
                self.failed_dropped
            ));
        }
        if let Some(line) = self.first_hash_ids_mismatch_line {
            out.push(format!(
                "{name}: {} records have a hash_ids count other than ceil(input_length / block_size), first at line {line}",
                self.hash_ids_mismatch
            ));
        }
        if let Some(line) = self.first_out_of_order_line {
            out.push(format!(
                "{name}: {} records out of time order, first at line {line}; sorted by arrival",
                self.out_of_order
            ));
        }
        out
    }
}

/// Reads a trace file: detects (or takes) the format, validates, sorts by arrival.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<LoadedTrace, TraceError> {
    let format = match opts.format {
        Some(format) => format,
        None => detect(path)?,
    };
    let source = source::open(path)?;
    let mut collector = Collector::new(path, format, opts, source.gzip);
    if format.is_jsonl() {
        json::read(source, format, &mut collector)?;
    } else {
        tabular::read(source, format, &mut collector)?;
    }
    collector.finish()
}

/// Detects the format of `path` from its first line and its name.
pub fn detect(path: &Path) -> Result<TraceFormat, TraceError> {
    let shown = path.display().to_string();
    let Some(first) = source::first_line(path)? else {
        return Err(TraceError::Empty { path: shown });
    };
    format::detect(&first, path).ok_or_else(|| TraceError::UnknownFormat {
        path: shown,
        why: format!(
            "first line starts {:?}",
            first.chars().take(40).collect::<String>()
        ),
    })
}

/// Gathers the records of one file as the readers produce them.
pub(crate) struct Collector<'a> {
    path: &'a Path,
    opts: &'a LoadOptions,
    format: TraceFormat,
    timed: Vec<(i64, TraceRecord)>,
    report: LoadReport,
    /// Whether the first record was epoch-sized; `None` before the first record.
    epoch_sized: Option<bool>,
    latest_ns: i64,
}

impl<'a> Collector<'a> {
    fn new(path: &'a Path, format: TraceFormat, opts: &'a LoadOptions, gzip: bool) -> Self {
        let report = LoadReport {
            path: path.to_path_buf(),
            gzip,
            ..LoadReport::default()
        };
        Self {
            path,
            opts,
            format,
            timed: Vec::new(),
            report,
            epoch_sized: None,
            latest_ns: i64::MIN,
        }
    }

    /// The file being read.
    pub(crate) fn path(&self) -> &Path {
        self.path
    }

    /// `--block-size`, if given.
    pub(crate) fn block_size_override(&self) -> Option<u32> {
        self.opts.block_size
    }

    /// Whether BurstGPT failed rows are kept.
    pub(crate) fn keep_failed(&self) -> bool {
        self.opts.keep_failed
    }

    /// Counts one dropped failed request.
    pub(crate) fn count_failed_dropped(&mut self) {
        self.report.failed_dropped += 1;
    }

    /// Takes a parsed record, unless its timestamp's origin disagrees with the first record's
    /// or it asks for more than [`MAX_RECORD_TOKENS`].
    pub(crate) fn accept(&mut self, line: u64, parsed: Parsed) -> Result<(), TraceError> {
        let epoch_sized = parsed.time_ns >= EPOCH_SIZED_NS;
        let first_was_epoch = *self.epoch_sized.get_or_insert(epoch_sized);
        if epoch_sized != first_was_epoch {
            let value_s = parsed.time_ns as f64 / 1e9;
            let problem = Problem::MixedOrigin {
                value_s,
                first_was_epoch,
            };
            return self.reject(line, "timestamp", problem);
        }

        for (field, tokens) in [
            ("input_length", parsed.record.input_tokens),
            ("output_length", parsed.record.output_tokens),
        ] {
            if tokens > MAX_RECORD_TOKENS {
                let problem = Problem::TooLarge(format!("{tokens} > {MAX_RECORD_TOKENS} tokens"));
                return self.reject(line, field, problem);
            }
        }

        self.note_order(line, parsed.time_ns);
        if parsed.hash_ids_mismatch {
            self.report.hash_ids_mismatch += 1;
            self.report.first_hash_ids_mismatch_line.get_or_insert(line);
        }
        let mut record = parsed.record;
        record.line = line;
        self.timed.push((parsed.time_ns, record));
        Ok(())
    }

    fn note_order(&mut self, line: u64, time_ns: i64) {
        if time_ns < self.latest_ns {
            self.report.out_of_order += 1;
            self.report.first_out_of_order_line.get_or_insert(line);
        }
        self.latest_ns = self.latest_ns.max(time_ns);
    }

    /// Fails (`--on-invalid fail`) or counts and skips (`skip`) an invalid record.
    pub(crate) fn reject(
        &mut self,
        line: u64,
        field: &str,
        problem: Problem,
    ) -> Result<(), TraceError> {
        let error = RecordError {
            file: self.path.display().to_string(),
            line,
            field: field.to_string(),
            problem,
        };
        if self.opts.on_invalid == OnInvalid::Fail {
            return Err(TraceError::Invalid(error));
        }

        self.report.skipped += 1;
        let reason = format!("{}: {}", error.field, error.problem.label());
        *self.report.skipped_by_reason.entry(reason).or_default() += 1;
        if self.report.skipped_examples.len() < KEPT_MESSAGES {
            self.report.skipped_examples.push(error.to_string());
        }
        Ok(())
    }

    /// Rebases times to the earliest (absolute files) or keeps them (relative files), sorts.
    fn finish(self) -> Result<LoadedTrace, TraceError> {
        let shown = self.path.display().to_string();
        if self.timed.is_empty() {
            return Err(match self.report.skipped {
                0 => TraceError::Empty { path: shown },
                skipped => TraceError::NoValidRecord {
                    path: shown,
                    skipped,
                },
            });
        }

        let mut timed = self.timed;
        timed.sort_by_key(|(t, _)| *t);
        let absolute = self.epoch_sized == Some(true);
        let origin_ns = if absolute { timed[0].0 } else { 0 };
        let records: Vec<TraceRecord> = timed
            .into_iter()
            .map(|(t, mut record)| {
                record.arrival = Duration::from_nanos(t.saturating_sub(origin_ns).max(0) as u64);
                record
            })
            .collect();

        let mut report = self.report;
        report.records = records.len();
        report.absolute_timestamps = absolute;
        Ok(LoadedTrace {
            records,
            format: self.format,
            report,
        })
    }
}
