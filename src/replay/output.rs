//! The run's output directory: refused if it already holds a run (unless `--force`), made
//! and proven writable before any load is sent, `run.json` written before the first
//! request, and `requests.jsonl` appended one flushed line per finished request, so that a
//! run killed at any moment keeps every request it finished.
//!
//! The same no-overwrite rule for single output files (`trace synth`, `trace convert`,
//! `prompts`) is [`check_new_file`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::RequestRecord;
use crate::report::RunInfo;

/// Where runs go when `--output` is not given.
pub const DEFAULT_OUTPUT_ROOT: &str = "tracebench-out";

/// The per-request file.
pub const REQUESTS_FILE: &str = "requests.jsonl";

/// The run configuration file.
pub const RUN_FILE: &str = "run.json";

/// The summary, written at the end of a run.
pub const SUMMARY_FILE: &str = "summary.json";

/// Files whose presence means a directory holds a run.
const RUN_MARKERS: [&str; 3] = [RUN_FILE, REQUESTS_FILE, SUMMARY_FILE];

/// Files a run writes at its end. `--force` removes them from a reused directory, so that
/// a rerun killed before its end is not mistaken for the old, finished run.
const END_FILES: [&str; 3] = [SUMMARY_FILE, "requests.csv", "report.html"];

/// Problems with the output directory or its files.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The directory cannot be made or written.
    #[error("output directory {path}: {cause} (choose another with --output DIR)")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why (in the message, not a `source`: the chain would print it twice).
        cause: std::io::Error,
    },
    /// The directory holds a run already and `--force` was not given.
    #[error(
        "output directory {path} already holds a run ({found}): pass --force to overwrite \
         it, or choose another --output DIR"
    )]
    Used {
        /// The directory.
        path: PathBuf,
        /// The file that shows it.
        found: &'static str,
    },
    /// An output file exists already and `--force` was not given.
    #[error("{path} exists already: pass --force to overwrite it, or choose another {flag}")]
    FileExists {
        /// The file.
        path: PathBuf,
        /// The flag or argument naming it (`--output`, `OUT`).
        flag: &'static str,
    },
    /// An output file cannot be made where it is asked for (a directory, or a folder that
    /// does not exist).
    #[error("{flag} {path}: {why}")]
    FileUnwritable {
        /// The file.
        path: PathBuf,
        /// The flag or argument naming it.
        flag: &'static str,
        /// Why.
        why: &'static str,
    },
    /// A file in it cannot be written.
    #[error("{path}: {cause}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why (in the message, not a `source`: the chain would print it twice).
        cause: std::io::Error,
    },
}

/// Refuses `dir` if it holds a run (`run.json`, `requests.jsonl` or `summary.json`),
/// unless `force`. Creates nothing; `None` (a fresh default directory) always passes.
pub fn check_unused(dir: Option<&Path>, force: bool) -> Result<(), OutputError> {
    let Some(dir) = dir else {
        return Ok(());
    };
    match RUN_MARKERS.iter().find(|name| dir.join(name).exists()) {
        Some(found) if !force => Err(OutputError::Used {
            path: dir.to_path_buf(),
            found,
        }),
        _ => Ok(()),
    }
}

/// Refuses an existing regular output file unless `force`, a directory, and a file in a
/// folder that does not exist, so that the mistake shows before the work, not after it;
/// `flag` names it in the error. Devices and pipes (`/dev/null`, `/dev/stdout`) are not
/// files a run could lose.
pub fn check_new_file(path: &Path, flag: &'static str, force: bool) -> Result<(), OutputError> {
    check_new_file_in(path, flag, force, None)
}

/// [`check_new_file`] for a file that may go into `made`, a folder the command itself
/// creates (a run's `--output DIR`): that folder need not exist yet.
pub fn check_new_file_in(
    path: &Path,
    flag: &'static str,
    force: bool,
    made: Option<&Path>,
) -> Result<(), OutputError> {
    let unwritable = |why| OutputError::FileUnwritable {
        path: path.to_path_buf(),
        flag,
        why,
    };
    if path.is_dir() {
        return Err(unwritable("is a directory; expected a file name"));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|p| !p.is_dir() && Some(p) != made) {
        return Err(unwritable("its folder does not exist"));
    }
    if path.is_file() && !force {
        return Err(OutputError::FileExists {
            path: path.to_path_buf(),
            flag,
        });
    }
    Ok(())
}

/// An output directory ready for a run.
#[derive(Debug, Clone)]
pub struct PreparedDir {
    /// Its path.
    pub path: PathBuf,
    /// Whether this run made it (it did not exist before).
    pub created: bool,
}

impl PreparedDir {
    /// Removes the directory if this run made it and nothing was written into it, so that
    /// a run failing before its first file leaves no empty folder behind.
    pub fn discard_if_empty(&self) {
        if self.created {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Makes the output directory (`dir`, or a new time-stamped one under `tracebench-out/`)
/// and proves it writable by creating and removing a probe file. A directory holding a
/// run is refused ([`check_unused`]) unless `force`, which removes the old run's end files.
pub fn prepare_dir(dir: Option<&Path>, force: bool) -> Result<PreparedDir, OutputError> {
    check_unused(dir, force)?;
    let path = match dir {
        Some(dir) => dir.to_path_buf(),
        None => fresh_default_dir(),
    };
    let fail = |cause| OutputError::Dir {
        path: path.clone(),
        cause,
    };
    let created = !path.exists();
    std::fs::create_dir_all(&path).map_err(fail)?;
    let prepared = PreparedDir {
        path: path.clone(),
        created,
    };

    let probe = prepared.path.join(".tracebench-write-probe");
    let written = File::create(&probe).and_then(|mut f| f.write_all(b"probe\n"));
    let _ = std::fs::remove_file(&probe);
    let cleared = match force {
        true => written.and_then(|()| remove_end_files(&prepared.path)),
        false => written,
    };
    if let Err(cause) = cleared {
        prepared.discard_if_empty();
        return Err(fail(cause));
    }
    Ok(prepared)
}

/// Removes an earlier run's end files (absent ones are fine).
fn remove_end_files(dir: &Path) -> std::io::Result<()> {
    for name in END_FILES {
        match std::fs::remove_file(dir.join(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    Ok(())
}

/// `tracebench-out/YYYYmmdd-HHMMSS`, with `-2`, `-3`, ... when that exists already.
fn fresh_default_dir() -> PathBuf {
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let root = Path::new(DEFAULT_OUTPUT_ROOT);
    let mut path = root.join(&stamp);
    let mut n = 2;
    while path.exists() {
        path = root.join(format!("{stamp}-{n}"));
        n += 1;
    }
    path
}

/// Writes `run.json` in place, before the first request: a `run.json` that cannot be
/// written (a full disk, a path to `/dev/full`) fails here, before any load.
pub fn write_run_info(dir: &Path, run: &RunInfo) -> Result<(), OutputError> {
    let path = dir.join(RUN_FILE);
    std::fs::write(&path, run_json(run)).map_err(|cause| OutputError::File { path, cause })
}

/// Writes `run.json` again at the end of a run: into a temporary file first, renamed over
/// the old one, so a run killed meanwhile keeps a whole `run.json` (the old or the new).
pub fn rewrite_run_info(dir: &Path, run: &RunInfo) -> Result<(), OutputError> {
    let path = dir.join(RUN_FILE);
    let temporary = dir.join(format!("{RUN_FILE}.tmp"));
    let written =
        std::fs::write(&temporary, run_json(run)).and_then(|()| std::fs::rename(&temporary, &path));
    written.map_err(|cause| {
        let _ = std::fs::remove_file(&temporary);
        OutputError::File { path, cause }
    })
}

/// `run.json`'s text.
fn run_json(run: &RunInfo) -> String {
    let mut text = serde_json::to_string_pretty(run).unwrap_or_default();
    text.push('\n');
    text
}

/// Appends records to `requests.jsonl`, one flushed line each.
#[derive(Debug)]
pub struct RequestsWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl RequestsWriter {
    /// Creates (truncates) `DIR/requests.jsonl`.
    pub fn create(dir: &Path) -> Result<Self, OutputError> {
        let path = dir.join(REQUESTS_FILE);
        let file = File::create(&path).map_err(|cause| OutputError::File {
            path: path.clone(),
            cause,
        })?;
        Ok(Self {
            path,
            file: BufWriter::new(file),
        })
    }

    /// Writes one record as one line and flushes it to the file.
    pub fn append(&mut self, record: &RequestRecord) -> Result<(), OutputError> {
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        let written = self.file.write_all(&line).and_then(|()| self.file.flush());
        written.map_err(|cause| OutputError::File {
            path: self.path.clone(),
            cause,
        })
    }
}

/// Drains `records` into `writer` until every sender is gone. Returns every record
/// received (written or not) and the first write error; after an error, `on_error` runs
/// once and later records are kept in memory only.
pub async fn collect(
    mut records: mpsc::UnboundedReceiver<RequestRecord>,
    mut writer: RequestsWriter,
    on_error: impl FnOnce(),
) -> (Vec<RequestRecord>, Option<OutputError>) {
    let mut all = Vec::new();
    let mut error = None;
    let mut on_error = Some(on_error);
    while let Some(record) = records.recv().await {
        if error.is_none() {
            if let Err(err) = writer.append(&record) {
                tracing::error!("{err}: stopping the run, later requests are not recorded");
                error = Some(err);
                if let Some(stop) = on_error.take() {
                    stop();
                }
            }
        }
        all.push(record);
    }
    (all, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::Outcome;

    fn record(index: usize) -> RequestRecord {
        RequestRecord {
            index,
            line: index as u64 + 1,
            scheduled_s: 0.5,
            sent_s: Some(0.5),
            first_token_s: None,
            end_s: Some(1.0),
            queue_wait_ms: None,
            session_wait_ms: None,
            input_tokens: 10,
            output_tokens: 2,
            prompt_tokens: None,
            completion_tokens: None,
            completion_source: None,
            cached_tokens: None,
            chunk_s: vec![],
            outcome: Outcome::Http(503),
            error: Some("http 503".into()),
            clamped: false,
            parent_failed: false,
            live_tokens: None,
        }
    }

    #[tokio::test]
    async fn every_record_is_one_complete_line_as_soon_as_written() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let writer = RequestsWriter::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let (tx, rx) = mpsc::unbounded_channel();
        let collector = tokio::spawn(collect(rx, writer, || {}));
        for i in 0..3 {
            tx.send(record(i)).ok();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Readable before the run ends: nothing waits in a buffer.
        let text = std::fs::read_to_string(dir.path().join(REQUESTS_FILE)).unwrap_or_default();
        assert_eq!(text.lines().count(), 3);
        drop(tx);
        let (all, error) = collector.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all.len(), 3);
        assert!(error.is_none());
        let back: RequestRecord = serde_json::from_str(text.lines().nth(2).unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, record(2));
    }

    #[test]
    fn run_json_rewritten_at_the_end_replaces_the_first_whole() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut run: RunInfo = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "tracebench_version": "t", "started_at": "now",
            "trace": "t", "base_url": "b", "model": "m", "tokenizer": "none",
            "prompt_mode": "blocks", "seed": 0, "max_concurrency": null, "calibration": null
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        write_run_info(dir.path(), &run).unwrap_or_else(|e| panic!("{e}"));
        run.connections = Some(crate::report::Connections {
            opened_ahead: 4,
            opened_on_send: 1,
        });
        rewrite_run_info(dir.path(), &run).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(dir.path().join(RUN_FILE)).unwrap_or_default();
        let back: RunInfo = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, run);
        assert!(!dir.path().join("run.json.tmp").exists());

        let gone = dir.path().join("gone");
        let err = rewrite_run_info(&gone, &run).err().map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("run.json"));
    }

    #[test]
    fn unwritable_output_dir_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("a-file");
        std::fs::write(&file, "x").ok();
        let err = prepare_dir(Some(&file.join("sub")), false)
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("a-file") && err.contains("--output"), "{err}");
    }

    #[test]
    fn a_directory_holding_a_run_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let run = dir.path().join("run");
        std::fs::create_dir(&run).ok();
        std::fs::write(run.join(REQUESTS_FILE), "{}\n").ok();
        std::fs::write(run.join(SUMMARY_FILE), "{}\n").ok();

        let err = prepare_dir(Some(&run), false).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains(&run.display().to_string()) && err.contains("--force"),
            "{err}"
        );

        let forced = prepare_dir(Some(&run), true).unwrap_or_else(|e| panic!("{e}"));
        assert!(!forced.created);
        // The old summary would make a killed rerun look finished: it is gone.
        assert!(!run.join(SUMMARY_FILE).exists());
    }

    #[test]
    fn an_existing_file_is_refused_but_a_device_is_not() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("prompts.jsonl");
        assert!(check_new_file(&file, "--output", false).is_ok());
        std::fs::write(&file, "x").ok();
        let err = check_new_file(&file, "--output", false).err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("prompts.jsonl exists already") && err.contains("--force"));
        assert!(check_new_file(&file, "--output", true).is_ok());
        assert!(check_new_file(Path::new("/dev/null"), "--output", false).is_ok());
        assert!(check_new_file(Path::new("bare-name.json"), "--output", false).is_ok());
    }

    #[test]
    fn a_directory_or_a_missing_folder_is_refused_even_with_force() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let err = |path: &Path| {
            check_new_file(path, "--save-tics", true)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let as_dir = err(dir.path());
        assert!(as_dir.starts_with("--save-tics ") && as_dir.contains("is a directory"));
        let nowhere = dir.path().join("nowhere");
        let missing = err(&nowhere.join("x.json"));
        assert!(missing.contains("nowhere") && missing.contains("folder does not exist"));
        // Unless the command makes that folder itself.
        let made = Some(nowhere.as_path());
        assert!(check_new_file_in(&nowhere.join("x.json"), "--save-tics", false, made).is_ok());
    }

    #[test]
    fn a_failed_run_removes_only_the_directory_it_made() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let fresh =
            prepare_dir(Some(&dir.path().join("new")), false).unwrap_or_else(|e| panic!("{e}"));
        assert!(fresh.created);
        fresh.discard_if_empty();
        assert!(!dir.path().join("new").exists());

        let existing = prepare_dir(Some(dir.path()), false).unwrap_or_else(|e| panic!("{e}"));
        existing.discard_if_empty();
        assert!(dir.path().is_dir());
    }
}
