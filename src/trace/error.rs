//! What can go wrong reading a trace: a whole-file [`TraceError`], or one bad record
//! ([`RecordError`], shown as `FILE:LINE: FIELD: what is wrong`).
//!
//! A record error names the field and the offending value; its [`Problem`] also has a short
//! label without the value, used to count skipped records by reason.

use std::fmt;

/// A trace that cannot be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file cannot be opened or read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file as the user named it.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A directory was given where a trace file was expected.
    #[error("{path}: is a directory, expected a trace file")]
    IsDirectory {
        /// The directory as the user named it.
        path: String,
    },
    /// The file holds no bytes (or only blank lines, or only a header).
    #[error("{path}: empty file, no records")]
    Empty {
        /// The file as the user named it.
        path: String,
    },
    /// Every record was invalid and skipped.
    #[error("{path}: no valid record ({skipped} invalid records skipped)")]
    NoValidRecord {
        /// The file as the user named it.
        path: String,
        /// How many invalid records were skipped.
        skipped: usize,
    },
    /// The gzip stream ends early or is corrupt.
    #[error("{path}: truncated or corrupt gzip data: {source}")]
    Gzip {
        /// The file as the user named it.
        path: String,
        /// The decompressor's error.
        source: std::io::Error,
    },
    /// The format cannot be told from the file.
    #[error("{path}: cannot tell the trace format ({why}); pass --format")]
    UnknownFormat {
        /// The file as the user named it.
        path: String,
        /// What was seen instead of a known header or record.
        why: String,
    },
    /// A record is invalid and `--on-invalid fail` is in force (or the CSV header is bad).
    #[error(transparent)]
    Invalid(#[from] RecordError),
}

/// One bad record: `FILE:LINE: FIELD: what is wrong`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {field}: {problem}")]
pub struct RecordError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line number (the header of a CSV is line 1).
    pub line: u64,
    /// The field at fault (`record` when the whole line is unreadable).
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with one field of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The field is absent.
    Missing,
    /// The field has another JSON type or text than expected.
    WrongType {
        /// What was expected (`a non-negative integer`, ...).
        expected: &'static str,
        /// What was found, shortened.
        found: String,
    },
    /// `NaN` or an infinity.
    NotFinite(String),
    /// A negative number where only zero or more makes sense.
    Negative(String),
    /// A number beyond what the field can hold.
    TooLarge(String),
    /// `hash_ids` does not hold `ceil(input_length / block_size)` ids.
    HashIdsCount {
        /// Ids found.
        found: usize,
        /// Ids expected.
        expected: u64,
        /// The record's `input_length`.
        input_tokens: u32,
        /// Tokens per block.
        block_size: u32,
    },
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is not a JSON object.
    InvalidJson(String),
    /// An epoch-sized timestamp among relative ones, or the reverse.
    MixedOrigin {
        /// The timestamp, in seconds.
        value_s: f64,
        /// Whether the earlier records were epoch-sized.
        first_was_epoch: bool,
    },
}

impl Problem {
    /// A short label without the offending value, for counting by reason.
    pub fn label(&self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::WrongType { .. } => "wrong type",
            Problem::NotFinite(_) => "not a finite number",
            Problem::Negative(_) => "negative",
            Problem::TooLarge(_) => "too large",
            Problem::HashIdsCount { .. } => "count does not match input_length",
            Problem::InvalidUtf8 => "invalid UTF-8",
            Problem::InvalidJson(_) => "invalid JSON",
            Problem::MixedOrigin { .. } => "epoch-sized and relative timestamps mixed",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => write!(f, "missing"),
            Problem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            Problem::NotFinite(v) => write!(f, "not a finite number ({v})"),
            Problem::Negative(v) => write!(f, "negative ({v})"),
            Problem::TooLarge(v) => write!(f, "too large ({v})"),
            Problem::HashIdsCount {
                found,
                expected,
                input_tokens,
                block_size,
            } => write!(
                f,
                "{found} blocks, expected {expected} (ceil({input_tokens} / {block_size}))"
            ),
            Problem::InvalidUtf8 => write!(f, "invalid UTF-8"),
            Problem::InvalidJson(why) => write!(f, "invalid JSON: {why}"),
            Problem::MixedOrigin {
                value_s,
                first_was_epoch: false,
            } => write!(
                f,
                "epoch-sized value ({value_s} s) among relative timestamps: no single origin fits"
            ),
            Problem::MixedOrigin {
                value_s,
                first_was_epoch: true,
            } => write!(
                f,
                "relative value ({value_s} s) among epoch-sized timestamps: no single origin fits"
            ),
        }
    }
}
