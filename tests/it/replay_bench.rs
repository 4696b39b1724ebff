//! The replay benchmark of issue 6: the simulator in `fixed` mode on one core, tracebench
//! on the other, 1,000 arrivals/s. Reports the send lag (actual − scheduled) and how far the
//! client's TTFT and ITL are from the simulator's own chunk times (matched per request by
//! `x-request-id`). Ignored by default; run it in release mode:
//!
//! ```text
//! REPLAY_BENCH_RATE=1000 REPLAY_BENCH_SECONDS=10 \
//!   cargo test --release --test it replay_bench -- --ignored --nocapture
//! ```

#![allow(clippy::unwrap_used)] // benchmark harness: a panic is the failure report

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tracebench::replay::{Outcome, RequestRecord};

use crate::common;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `taskset -c CORE` when available (the benchmark pins each process to one core).
fn pinned(core: &str) -> Command {
    if Path::new("/usr/bin/taskset").exists() {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", core]).arg(common::bin());
        cmd
    } else {
        Command::new(common::bin())
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn start_sim(port: u16, chunk_log: &Path, tokens_ms: (u64, u64)) -> Child {
    let child = pinned("1")
        .args([
            "sim",
            "--port",
            &port.to_string(),
            "--timing",
            "fixed",
            "--no-tokenize",
        ])
        .args([
            "--ttft-ms",
            &tokens_ms.0.to_string(),
            "--itl-ms",
            &tokens_ms.1.to_string(),
        ])
        .arg("--chunk-log")
        .arg(chunk_log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = child;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the simulator did not start");
}

/// `count` records at `rate` per second, in Mooncake format (integer ms timestamps: exact
/// for rates that divide 1,000).
fn write_trace(path: &Path, count: u64, rate: u64, output_tokens: u64) {
    let lines: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"timestamp": {}, "input_length": 32, "output_length": {output_tokens}, "hash_ids": [{i}]}}"#,
                i * 1000 / rate
            )
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Per request id: the simulator's received instant and token instants, ns.
fn sim_times(chunk_log: &Path) -> HashMap<String, (u64, Vec<u64>)> {
    let mut by_id: HashMap<String, (u64, Vec<u64>)> = HashMap::new();
    let text = std::fs::read_to_string(chunk_log).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(id) = v["client_request_id"].as_str() else {
            continue;
        };
        let ns = v["unix_ns"].as_u64().unwrap();
        let entry = by_id.entry(id.to_string()).or_default();
        match v["event"].as_str() {
            Some("received") => entry.0 = ns,
            Some("token") => entry.1.push(ns),
            _ => {}
        }
    }
    by_id
}

fn stats(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "{name:<28} n {:>7}  p50 {:>7.3}  p90 {:>7.3}  p99 {:>7.3}  max {:>8.3} ms",
        ms.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        ms[ms.len() - 1]
    );
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn replay_bench_send_lag_and_timing_against_fixed_sim() {
    let rate = env_or("REPLAY_BENCH_RATE", 1000);
    let seconds = env_or("REPLAY_BENCH_SECONDS", 10);
    let tokens = env_or("REPLAY_BENCH_TOKENS", 16);
    let tmp = tempfile::tempdir().unwrap();
    let (trace, chunk_log, out) = (
        tmp.path().join("trace.jsonl"),
        tmp.path().join("chunks.jsonl"),
        tmp.path().join("run"),
    );
    write_trace(&trace, rate * seconds, rate, tokens);
    let port = free_port();
    let mut sim = start_sim(port, &chunk_log, (50, 5));

    let status = pinned("0")
        .args([
            "replay",
            "--no-progress",
            "--no-calibrate",
            "--prompt",
            "random",
        ])
        .args([
            "--model",
            "tracebench-sim",
            "--format",
            "mooncake",
            "--trace",
        ])
        .arg(&trace)
        .args([
            "--base-url",
            &format!("http://127.0.0.1:{port}/v1"),
            "--output",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-INT", &sim.id().to_string()])
        .status();
    let _ = sim.wait();
    assert!(status.success(), "replay failed: {status}");

    let text = std::fs::read_to_string(out.join("requests.jsonl")).unwrap();
    let records: Vec<RequestRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok = records.iter().filter(|r| r.outcome == Outcome::Ok).count();
    println!(
        "{rate} arrivals/s for {seconds} s, {tokens} tokens each: {ok}/{} ok",
        records.len()
    );
    stats(
        "send lag",
        records.iter().filter_map(|r| r.send_lag_ms()).collect(),
    );
    compare_with_sim(&records, &sim_times(&chunk_log));
}

/// TTFT and ITL as the client saw them minus the simulator's own.
fn compare_with_sim(records: &[RequestRecord], sim: &HashMap<String, (u64, Vec<u64>)>) {
    let (mut ttft, mut itl) = (Vec::new(), Vec::new());
    for r in records.iter().filter(|r| r.outcome == Outcome::Ok) {
        let Some((received, tokens)) = sim.get(&format!("tracebench-{}", r.index)) else {
            continue;
        };
        if let (Some(client_ttft), Some(first)) = (r.ttft_ms(), tokens.first()) {
            ttft.push(client_ttft - (first - received) as f64 / 1e6);
        }
        for (k, pair) in tokens.windows(2).enumerate() {
            if let Some(client) = r.chunk_s.get(k + 1).map(|t| t - r.chunk_s[k]) {
                itl.push((client * 1e3 - (pair[1] - pair[0]) as f64 / 1e6).abs());
            }
        }
    }
    stats("TTFT client − sim", ttft);
    stats("|ITL client − sim|", itl);
}
