//! The replay engine: executes a [`crate::schedule`] plan with one dispatch loop on
//! absolute deadlines, streams every request through [`crate::client`], and records each
//! one as a [`RequestRecord`] appended to `requests.jsonl` as soon as it ends.
//!
//! [`mod@dispatch`] is the loop and its request tasks; [`pacer`] waits precisely for a
//! deadline; [`output`] owns the run's files; [`calibrate`] measures the chat template
//! overhead; [`run`] ties them into one replay; [`progress`] draws the bars. The loop knows
//! nothing of files or terminals.

pub mod calibrate;
pub mod dispatch;
pub mod output;
pub mod pacer;
pub mod progress;
pub mod prompts;
mod record;
pub mod run;

pub use calibrate::{Calibration, CalibrationMethod};
pub use dispatch::{
    DispatchEnd, DispatchInput, DispatchOptions, Live, PromptSource, Transport, dispatch,
};
pub use pacer::Pacer;
pub use record::{Outcome, RequestRecord, TimeoutKind, TokenSource};
pub use run::{
    RunResult, RunSetup, default_client_threads, execute, execute_on, stop_on_signals,
    termination_signal,
};
