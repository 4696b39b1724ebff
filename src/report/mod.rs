//! Reports: pure serializers from a summary and records to bytes (console text,
//! `summary.json`, `requests.csv`, `report.html`, the seed's tics file), plus compare and
//! sweep tables. Numbers come from [`crate::metrics`]; nothing here recomputes them.
//! [`write_run_reports`] is what a replay calls at its end.

pub mod chart;
pub mod compare;
pub mod console;
pub mod goodput;
pub mod html;
pub mod plots;
pub mod rebuild;
pub mod requests_csv;
pub mod requests_jsonl;
mod run_info;
pub mod summary_json;
pub mod sweep;
pub mod tics;
pub mod warnings;

use std::path::{Path, PathBuf};

pub use goodput::{GoodputError, GoodputMetric, GoodputTerm, parse_goodput_term};
pub use run_info::{Connections, GoodputSlo, PLANNED_REQUESTS_KEY, RunInfo, SCHEMA_VERSION};

use crate::metrics::{Summary, SummaryOptions};
use crate::replay::RequestRecord;

/// A report that could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Writing or reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Serializing `requests.csv` failed.
    #[error("{path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// `requests.jsonl` could not be read.
    #[error(transparent)]
    Requests(#[from] requests_jsonl::ReadError),
}

/// Writes `bytes` to `path`.
pub fn write_file(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), ReportError> {
    std::fs::write(path, bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Computes the summary of a run and writes `summary.json`, `requests.csv` and
/// `report.html` into `dir`. Returns the summary (for the console report).
pub fn write_run_reports(
    dir: &Path,
    run: &RunInfo,
    records: &[RequestRecord],
    partial: bool,
) -> Result<Summary, ReportError> {
    let summary = summarize(run, records, partial);
    let warnings = warnings::collect(&summary);

    write_file(
        &dir.join("summary.json"),
        summary_json::render(run, &summary, &warnings),
    )?;

    let csv_path = dir.join("requests.csv");
    let csv = requests_csv::render(records).map_err(|source| ReportError::Csv {
        path: csv_path.clone(),
        source,
    })?;
    write_file(&csv_path, csv)?;

    let plots = plots::run_plots(records);
    write_file(
        &dir.join("report.html"),
        html::render(run, &summary, &warnings, &plots),
    )?;
    Ok(summary)
}

/// The summary of a run's records. Plan entries without a record (`run.json`'s
/// `planned_requests` above the records: the run was killed) count as requests, skipped,
/// and make the run partial.
pub fn summarize(run: &RunInfo, records: &[RequestRecord], partial: bool) -> Summary {
    let missing = unrecorded(run, records);
    let options = SummaryOptions::from_run(run, partial || missing > 0);
    let mut summary = Summary::compute(records, &options);
    summary.requests += missing;
    summary.skipped += missing;
    summary
}

/// Plan entries of `run` without a record in `records`.
pub fn unrecorded(run: &RunInfo, records: &[RequestRecord]) -> usize {
    run.planned_requests()
        .map_or(0, |planned| planned.saturating_sub(records.len()))
}

/// Writes the seed's raw result format (`--save-tics FILE`).
pub fn write_tics(path: &Path, records: &[RequestRecord]) -> Result<(), ReportError> {
    write_file(path, tics::render(records))
}
