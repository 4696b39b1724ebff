//! Prefix sharing survives the whole path: `tracebench replay --prompt blocks` against a
//! separate `tracebench sim` process, and the simulator's prefix-cache hit ratio read from
//! `/metrics` matches the block reuse of the trace's `hash_ids` — for the first 2,000
//! Mooncake records, and for a synthetic Bailian-format trace with sessions.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::common;

/// A `tracebench sim` process, killed on drop.
struct SimProcess {
    child: Child,
    url: String,
}

impl SimProcess {
    /// Starts `tracebench sim --port 0 ARGS` and waits for its "listening on" line.
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(common::bin())
            .args(["sim", "--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tracebench sim starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("sim printed its address before exiting")
                .expect("readable stderr");
            if let Some(rest) = line.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().expect("an address");
                break url.trim_end_matches("/v1").to_string();
            }
        };
        // Keep draining stderr so the simulator never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, url }
    }

    /// `vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total` from `/metrics`.
    fn hit_ratio(&self) -> f64 {
        let mut body = String::new();
        ureq::get(&format!("{}/metrics", self.url))
            .call()
            .expect("GET /metrics")
            .into_reader()
            .read_to_string(&mut body)
            .expect("metrics text");
        let hits = metric(&body, "vllm:prefix_cache_hits_total");
        let queries = metric(&body, "vllm:prefix_cache_queries_total");
        assert!(queries > 0.0, "the simulator saw prompt tokens:\n{body}");
        hits / queries
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an unlabelled (or first labelled) sample of `name`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .and_then(|line| line.split_whitespace().last())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// Share of blocks whose id already appeared in an earlier record, over a JSONL trace.
fn reuse_ratio(path: &Path, limit: usize) -> f64 {
    let file = std::fs::File::open(path).expect("trace readable");
    let mut seen = HashSet::new();
    let (mut reused, mut total) = (0usize, 0usize);
    for line in BufReader::new(file).lines().take(limit) {
        let record: Value = serde_json::from_str(&line.expect("line")).expect("JSON line");
        let ids: Vec<u64> = record["hash_ids"]
            .as_array()
            .expect("hash_ids")
            .iter()
            .map(|id| id.as_u64().expect("integer id"))
            .collect();
        reused += ids.iter().filter(|id| seen.contains(*id)).count();
        total += ids.len();
        seen.extend(ids);
    }
    reused as f64 / total as f64
}

/// Runs `tracebench ARGS` to success.
fn tracebench(args: &[&str]) {
    let out = Command::new(common::bin())
        .args(args)
        .output()
        .expect("tracebench runs");
    assert!(
        out.status.success(),
        "tracebench {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replays `trace` one request at a time (so every earlier prefix is cached when the next
/// request arrives) against `sim`, with one-token outputs.
fn replay_serially(trace: &Path, extra: &[&str], sim: &SimProcess, out: &Path) {
    let mut args = vec![
        "replay",
        "--trace",
        trace.to_str().expect("UTF-8 path"),
        "--base-url",
        &sim.url,
        "--prompt",
        "blocks",
        "--max-concurrency",
        "1",
        "--max-output-tokens",
        "1",
        "--speedup",
        "10000",
        "--no-progress",
        "--output",
        out.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    tracebench(&args);
}

#[test]
fn mooncake_first_2000_hit_ratio_matches_hash_ids_reuse() {
    let Some(trace) = common::shared_trace("mooncake_conversation_trace.jsonl") else {
        return;
    };
    let sim = SimProcess::start(&[
        "--speed",
        "1000",
        "--kv-blocks",
        "4000000",
        "--max-model-len",
        "1000000",
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    replay_serially(&trace, &["--limit", "2000"], &sim, &dir.path().join("run"));

    let hit = sim.hit_ratio();
    let reuse = reuse_ratio(&trace, 2000);
    eprintln!("mooncake 2,000: prefix-cache hit ratio {hit:.4}, hash_ids reuse {reuse:.4}");
    assert!(
        (hit - reuse).abs() <= 0.02,
        "hit ratio {hit:.4} vs hash_ids reuse {reuse:.4}"
    );
}

#[test]
fn synthetic_bailian_sessions_hit_ratio_matches_hash_ids_reuse() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = dir.path().join("synth.jsonl");
    let bailian = dir.path().join("synth-bailian.jsonl");
    tracebench(&[
        "trace",
        "synth",
        "--output",
        ours.to_str().expect("UTF-8 path"),
        "--seed",
        "11",
        "--rate",
        "20",
        "--count",
        "400",
        "--sessions",
        "--turns-mean",
        "4",
        "--think-time",
        "5",
        "--block-size",
        "16",
        "--input-tokens",
        "lognormal:300:0.5",
        "--max-input-tokens",
        "4000",
        "--prefix-groups",
        "4",
        "--prefix-tokens",
        "256",
    ]);
    tracebench(&[
        "trace",
        "convert",
        ours.to_str().expect("UTF-8 path"),
        bailian.to_str().expect("UTF-8 path"),
        "--to",
        "bailian",
    ]);
    let sim = SimProcess::start(&["--speed", "1000", "--kv-blocks", "4000000"]);
    let out = dir.path().join("run");
    replay_serially(&bailian, &["--sessions", "gate"], &sim, &out);

    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).expect("run.json"))
            .expect("run.json is JSON");
    assert_eq!(run["config"]["sessions"], "gate", "{run}");
    let hit = sim.hit_ratio();
    let reuse = reuse_ratio(&bailian, usize::MAX);
    eprintln!("synthetic sessions: prefix-cache hit ratio {hit:.4}, hash_ids reuse {reuse:.4}");
    assert!(
        reuse > 0.3,
        "the synthetic sessions share prefixes: {reuse:.4}"
    );
    assert!(
        (hit - reuse).abs() <= 0.02,
        "hit ratio {hit:.4} vs hash_ids reuse {reuse:.4}"
    );
}
