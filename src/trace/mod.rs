//! Trace files in, [`TraceRecord`]s out.
//!
//! Every reader (Qwen-Bailian, Mooncake, tracebench JSONL, Azure CSV, BurstGPT CSV, gzip
//! or not) produces the same record type with the arrival converted once, at load time, to a
//! [`std::time::Duration`] from the trace start. Validation names file, line and field.
//! Timeline transforms, statistics and session links work on records, never on raw lines.
//! No tokio here: reading a trace is synchronous.

mod record;

pub use record::{PrefixBlocks, SessionLink, TraceRecord};
