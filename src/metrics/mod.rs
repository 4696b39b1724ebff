//! The run summary: counts, throughput and latency statistics computed from per-request
//! records, with one percentile method. Pure functions, no I/O: the reports serialize what
//! is computed here and never recompute a number themselves.

mod distribution;
mod request;
mod summary;
pub mod timeline;

pub use distribution::{Distribution, Percentile, percentile};
pub use request::{OutputCount, RequestMetrics};
pub use summary::{
    Fidelity, Goodput, OutputCountSources, SessionWait, Summary, SummaryOptions, TokenDiff,
};
