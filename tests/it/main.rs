//! Integration tests, in one binary so the suite links once. One module per area; shared
//! helpers (where the real traces, tokenizer files and llama-server are) in `common`.

mod common;
mod direct;
mod e2e;
mod prefix_fidelity;
mod prompt;
mod reliability;
mod replay;
mod replay_bench;
mod report;
mod sim;
mod sim_bench;
mod sim_faults;
mod sim_generate;
mod sim_timing;
mod sse;
mod sse_server;
mod trace;
mod trace_fetch;
mod trace_props;
mod trace_tools;
