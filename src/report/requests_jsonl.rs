//! Reading `requests.jsonl` back for `tracebench report`. A run killed mid-write leaves a
//! last line without its newline; that one line is dropped (with a note), while a bad line
//! anywhere else is an error naming it.

use std::path::{Path, PathBuf};

use crate::replay::RequestRecord;

/// What reading `requests.jsonl` found.
#[derive(Debug, Clone)]
pub struct ReadRequests {
    /// The complete records, in file order.
    pub records: Vec<RequestRecord>,
    /// The last line was cut short and was dropped.
    pub truncated_tail: bool,
}

/// A `requests.jsonl` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A complete line is not a request record.
    #[error("{path}:{line}: {source}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        source: serde_json::Error,
    },
    /// A line is not UTF-8 text.
    #[error("{path}:{line}: not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the first bad byte.
        line: usize,
    },
}

/// Reads `path`, tolerating a truncated last line.
pub fn read(path: &Path) -> Result<ReadRequests, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let good = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        ReadError::NotUtf8 {
            path: path.to_path_buf(),
            line: 1 + good.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    parse(path, &text)
}

/// Parses the text of `requests.jsonl` (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<ReadRequests, ReadError> {
    let mut records = Vec::new();
    let mut truncated_tail = false;
    let ends_complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RequestRecord>(line) {
            Ok(record) => records.push(record),
            // Only the unterminated last line may be cut short.
            Err(_) if i + 1 == lines.len() && !ends_complete => truncated_tail = true,
            Err(source) => {
                return Err(ReadError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                });
            }
        }
    }
    Ok(ReadRequests {
        records,
        truncated_tail,
    })
}
