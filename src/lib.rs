//! tracebench replays production LLM request traces against OpenAI-compatible servers and
//! reports what the server did: TTFT, TPOT, ITL, end-to-end latency, throughput and goodput.
//!
//! The modules follow the data, in the order it flows:
//!
//! - [`trace`]: read trace files (Qwen-Bailian, Mooncake, Azure, BurstGPT, ours) into one
//!   [`trace::TraceRecord`] type; validation, timeline transforms, statistics, sessions.
//! - [`tracetools`]: get a trace file: fetch public traces, convert formats, synthesise.
//! - [`prompt`]: tokenizers and prompt synthesis of exact token lengths.
//! - [`schedule`]: the pure, seeded plan of when each request is sent.
//! - [`client`]: the streaming OpenAI client: HTTP, the SSE reader, per-request timing.
//! - [`replay`]: the dispatch loop that executes a plan and records every request.
//! - [`metrics`]: the run summary computed from per-request records.
//! - [`report`]: console, JSON, CSV and HTML reports; compare and sweep.
//! - [`sim`]: a simulated OpenAI-compatible server, the default target and the test bench.

pub mod cli;
pub mod client;
pub mod metrics;
pub mod prompt;
pub mod replay;
pub mod report;
pub mod schedule;
pub mod sim;
pub mod trace;
pub mod tracetools;
