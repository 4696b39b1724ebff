//! Trace files in, [`TraceRecord`]s out.
//!
//! Every reader (Qwen-Bailian, Mooncake, tracebench JSONL, Azure CSV, BurstGPT CSV, gzip
//! or not) produces the same record type with the arrival converted once, at load time, to a
//! [`std::time::Duration`] from the trace start. Validation names file, line and field.
//! Timeline transforms, statistics and session links work on records, never on raw lines.
//! No tokio here: reading a trace is synchronous.

mod error;
mod format;
mod json;
mod load;
mod record;
pub mod sessions;
mod source;
pub mod stats;
mod tabular;
pub mod timeline;

pub use error::{Problem, RecordError, TraceError};
pub use format::{TRACEBENCH_DEFAULT_BLOCK_SIZE, TraceFormat};
pub use load::{LoadOptions, LoadReport, LoadedTrace, MAX_RECORD_TOKENS, OnInvalid, detect, load};
pub use record::{PrefixBlocks, SessionLink, TraceRecord};
