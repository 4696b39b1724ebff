//! The replay engine: executes a [`crate::schedule`] plan with one dispatch loop on
//! absolute deadlines, streams every request through [`crate::client`], and records each
//! one as a [`RequestRecord`] appended to `requests.jsonl` as soon as it ends.

mod record;

pub use record::{Outcome, RequestRecord, TimeoutKind, TokenSource};
