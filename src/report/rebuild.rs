//! Reading a run directory back: `run.json` plus `requests.jsonl` give the summary again
//! (`tracebench report`), and `summary.json`, or failing that the records, give the summary
//! a comparison needs (`tracebench compare`). A run killed before it wrote its summary is
//! reported as partial.

use std::path::{Path, PathBuf};

use super::requests_jsonl;
use super::summary_json::SummaryFile;
use super::{GoodputSlo, ReportError, RunInfo};
use crate::metrics::Summary;
use crate::replay::RequestRecord;

/// A run rebuilt from its directory.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The run's configuration (`run.json`, goodput possibly overridden).
    pub run: RunInfo,
    /// The records of `requests.jsonl`.
    pub records: Vec<RequestRecord>,
    /// The last line of `requests.jsonl` was cut short and dropped.
    pub truncated_tail: bool,
    /// The run did not finish: its summary said so, it has none, its records end cut, or
    /// they are fewer than its plan.
    pub partial: bool,
    /// Plan entries (`run.json`'s `planned_requests`) without a record.
    pub unrecorded: usize,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a `run.json`.
pub fn read_run_info(path: &Path) -> Result<RunInfo, ReportError> {
    read_json(path)
}

/// Reads a `summary.json`.
pub fn read_summary_file(path: &Path) -> Result<SummaryFile, ReportError> {
    read_json(path)
}

/// Reads `dir`'s `run.json` and `requests.jsonl`; `goodput` replaces the run's objectives.
pub fn read_run(dir: &Path, goodput: Option<GoodputSlo>) -> Result<Rebuilt, ReportError> {
    let mut run = read_run_info(&dir.join("run.json"))?;
    if let Some(slo) = goodput {
        run.goodput = slo;
    }
    let mut read = requests_jsonl::read(&dir.join("requests.jsonl"))?;
    // Plan order, as after a run: `requests.jsonl` has them in the order they ended.
    read.records.sort_by_key(|r| r.index);

    // An earlier summary says whether the run finished; without one, it did not.
    let earlier: Result<serde_json::Value, _> = read_json(&dir.join("summary.json"));
    let finished = earlier.is_ok_and(|json| json["partial"] == serde_json::Value::Bool(false));
    let unrecorded = super::unrecorded(&run, &read.records);
    let partial = read.truncated_tail || !finished || unrecorded > 0;
    Ok(Rebuilt {
        run,
        records: read.records,
        truncated_tail: read.truncated_tail,
        partial,
        unrecorded,
    })
}

/// The summary of a run for comparison: from `summary.json` (a directory's, or the file
/// itself), else recomputed from the directory's records.
pub fn load_summary(path: &Path) -> Result<Summary, ReportError> {
    if !path.exists() {
        return Err(ReportError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such run directory or summary.json",
            ),
        });
    }
    let (dir, file) = if path.is_dir() {
        (path.to_path_buf(), path.join("summary.json"))
    } else {
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        (dir, path.to_path_buf())
    };
    // Only the `summary` object is needed, so an older or newer `config` does not matter.
    if file.is_file() {
        let json: serde_json::Value = read_json(&file)?;
        return serde_json::from_value(json["summary"].clone()).map_err(|source| {
            ReportError::Json {
                path: file.clone(),
                source,
            }
        });
    }
    let rebuilt = read_run(&dir, None)?;
    Ok(super::summarize(
        &rebuilt.run,
        &rebuilt.records,
        rebuilt.partial,
    ))
}
