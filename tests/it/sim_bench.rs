//! How closely fixed mode keeps its schedule under load: many concurrent streams against
//! one in-process simulator, each chunk's send time (from the simulator's own chunk log)
//! compared with when it was due. Ignored by default; run it in release mode:
//!
//! ```text
//! SIM_BENCH_STREAMS=1000 SIM_BENCH_TOKENS=100 SIM_BENCH_ITL_MS=10 \
//!   cargo test --release --test it sim_bench -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use tracebench::sim::{ChunkKind, ChunkRecord, SimConfig, TimingMode};

use super::sim::start;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Per content chunk: how late it was written (ns) relative to received + ttft + i*itl.
fn lateness_ns(records: &[ChunkRecord], ttft: Duration, itl: Duration) -> Vec<i64> {
    let mut received: HashMap<&str, u64> = HashMap::new();
    for r in records.iter().filter(|r| r.kind == ChunkKind::Received) {
        received.insert(&r.request_id, r.unix_ns);
    }
    records
        .iter()
        .filter(|r| r.kind == ChunkKind::Token)
        .map(|r| {
            let due = received[&*r.request_id] as i64
                + (ttft + itl * (r.token_index - 1)).as_nanos() as i64;
            r.unix_ns as i64 - due
        })
        .collect()
}

fn percentile_ms(sorted: &[i64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture in release mode"]
async fn sim_bench_fixed_mode_timing_under_load() {
    let _ = rlimit::increase_nofile_limit(20_000);
    let streams = env_or("SIM_BENCH_STREAMS", 1_000) as usize;
    let tokens = env_or("SIM_BENCH_TOKENS", 100) as u32;
    let ttft = Duration::from_millis(env_or("SIM_BENCH_TTFT_MS", 100));
    let itl = Duration::from_millis(env_or("SIM_BENCH_ITL_MS", 10));
    let config = SimConfig {
        timing: TimingMode::Fixed,
        ttft,
        itl,
        tokenizer: None,
        record_chunks: true,
        ..SimConfig::default()
    };
    let sim = start(config);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/v1/completions", sim.base_url());

    let started = Instant::now();
    // One task per stream, as a real client runs them (not one task polling them all).
    let requests = (0..streams).map(|_| {
        let body = json!({"prompt": "benchmark", "max_tokens": tokens, "stream": true});
        let request = client.post(&url).json(&body).send();
        tokio::spawn(async move {
            let text = request.await.unwrap().text().await.unwrap();
            text.matches("data: ").count()
        })
    });
    let events: Vec<usize> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let wall = started.elapsed();
    assert!(
        events.iter().all(|n| *n == tokens as usize + 1),
        "every stream complete"
    );

    let mut late = lateness_ns(&sim.state().chunk_records(), ttft, itl);
    late.sort_unstable();
    println!(
        "streams {streams}, tokens {tokens}, ttft {ttft:?}, itl {itl:?}: wall {wall:.2?}; \
         chunk lateness ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3} min {:.3} ({} chunks)",
        percentile_ms(&late, 0.5),
        percentile_ms(&late, 0.9),
        percentile_ms(&late, 0.99),
        percentile_ms(&late, 1.0),
        percentile_ms(&late, 0.0),
        late.len()
    );
}
