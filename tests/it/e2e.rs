//! End to end over real sockets: the `tracebench` binary replays real traces against the
//! built-in simulator and against llama.cpp's `llama-server` generating real tokens, and the
//! files it writes are checked against the trace and against each other.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common;

/// Runs `tracebench ARGS`, asserting exit code 0, and returns stdout.
fn run_ok(args: &[&str]) -> String {
    let out = Command::new(common::bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the tracebench binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tracebench {args:?} exited with {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    stdout
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let file = std::fs::File::open(path).expect("requests.jsonl exists");
    BufReader::new(file)
        .lines()
        .map(|line| serde_json::from_str(&line.expect("readable line")).expect("a JSON line"))
        .collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("summary.json exists");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// The first `n` records of a JSONL trace, as JSON values, in file order.
fn trace_head(path: &Path, n: usize) -> Vec<Value> {
    let file = std::fs::File::open(path).expect("trace readable");
    BufReader::new(file)
        .lines()
        .take(n)
        .map(|line| serde_json::from_str(&line.expect("line")).expect("trace line is JSON"))
        .collect()
}

/// A request line without its chunk times, for assertion messages.
fn brief(request: &Value) -> Value {
    let mut short = request.clone();
    if let Some(map) = short.as_object_mut() {
        map.remove("chunk_s");
    }
    short
}

fn u64_of(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not an integer in {value}"))
}

fn f64_of(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {value}"))
}

/// Every request finished `ok`; returns them sorted by plan index.
fn all_ok(requests: &mut [Value], expected: usize) {
    assert_eq!(requests.len(), expected, "one line per request");
    requests.sort_by_key(|r| u64_of(r, "index"));
    for request in requests.iter() {
        assert_eq!(
            request["outcome"],
            "ok",
            "request failed: {}",
            brief(request)
        );
    }
}

/// TTFT ≤ E2E, every ITL ≥ 0, and E2E within 5 % of TTFT plus the sum of the ITLs.
fn check_timing_consistency(request: &Value) {
    let sent = f64_of(request, "sent_s");
    let first = f64_of(request, "first_token_s");
    let end = f64_of(request, "end_s");
    let chunks: Vec<f64> = request["chunk_s"]
        .as_array()
        .expect("chunk_s")
        .iter()
        .map(|v| v.as_f64().expect("chunk time"))
        .collect();
    let ttft = first - sent;
    let e2e = end - sent;
    assert!(ttft <= e2e, "TTFT {ttft} > E2E {e2e}: {request}");
    assert_eq!(
        chunks.first().copied(),
        Some(first),
        "first chunk is the first token"
    );
    let itl_sum: f64 = chunks.windows(2).map(|w| w[1] - w[0]).sum();
    assert!(
        chunks.windows(2).all(|w| w[1] >= w[0]),
        "negative ITL: {request}"
    );
    let rebuilt = ttft + itl_sum;
    assert!(
        (e2e - rebuilt).abs() <= 0.05 * e2e,
        "E2E {e2e} vs TTFT + ΣITL {rebuilt}: {request}"
    );
}

/// The summary's totals and means agree with the per-request lines.
fn check_summary_matches(summary: &Value, requests: &[Value]) {
    let prompt_total: u64 = requests.iter().map(|r| u64_of(r, "prompt_tokens")).sum();
    let output_total: u64 = requests
        .iter()
        .map(|r| u64_of(r, "completion_tokens"))
        .sum();
    assert_eq!(u64_of(summary, "completed"), requests.len() as u64);
    assert_eq!(u64_of(summary, "failed"), 0);
    assert_eq!(u64_of(summary, "total_input_tokens"), prompt_total);
    assert_eq!(u64_of(summary, "total_output_tokens"), output_total);

    let ttfts: Vec<f64> = requests
        .iter()
        .map(|r| (f64_of(r, "first_token_s") - f64_of(r, "sent_s")) * 1e3)
        .collect();
    let mean = ttfts.iter().sum::<f64>() / ttfts.len() as f64;
    let reported = f64_of(summary, "mean_ttft_ms");
    assert!(
        (reported - mean).abs() <= 1e-6 * mean.max(1.0),
        "mean_ttft_ms {reported} vs {mean} from requests.jsonl"
    );
    let max_e2e = requests
        .iter()
        .map(|r| (f64_of(r, "end_s") - f64_of(r, "sent_s")) * 1e3)
        .fold(0.0, f64::max);
    let duration_s = f64_of(summary, "duration");
    assert!(
        duration_s * 1e3 >= max_e2e,
        "duration {duration_s} s shorter than one request"
    );
}

#[test]
fn mooncake_300_records_against_the_simulator_are_exact() {
    let Some(trace) = common::shared_trace("mooncake_conversation_trace.jsonl") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let trace_arg = trace.to_string_lossy();
    let stdout = run_ok(&[
        "replay",
        "--trace",
        &trace_arg,
        "--limit",
        "300",
        "--speedup",
        "20",
        "--prompt",
        "blocks",
        "--sim",
        "--sim-timing",
        "engine",
        "--sim-speed",
        "20",
        "--no-progress",
        "--output",
        &out.to_string_lossy(),
    ]);
    assert!(
        stdout.contains("Serving Benchmark Result"),
        "report printed:\n{stdout}"
    );

    let mut requests = read_jsonl(&out.join("requests.jsonl"));
    all_ok(&mut requests, 300);
    let records = trace_head(&trace, 300);
    for (request, record) in requests.iter().zip(&records) {
        let input = u64_of(record, "input_length");
        let output = u64_of(record, "output_length");
        assert_eq!(u64_of(request, "input_tokens"), input, "{}", brief(request));
        assert_eq!(
            u64_of(request, "prompt_tokens"),
            input,
            "server saw {}",
            brief(request)
        );
        assert_eq!(
            u64_of(request, "completion_tokens"),
            output,
            "{}",
            brief(request)
        );
        assert_eq!(request["completion_source"], "usage");
        check_timing_consistency(request);
    }
    check_summary_matches(&read_json(&out.join("summary.json")), &requests);
    assert!(out.join("report.html").is_file());
}

#[test]
fn mooncake_50_records_against_llama_server_tiny_qwen2_are_exact() {
    let Some(trace) = common::shared_trace("mooncake_conversation_trace.jsonl") else {
        return;
    };
    let (Some(url), Some(tokenizer)) = (common::llama_url(), common::qwen3_tokenizer()) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    // Each of llama-server's 4 slots has 2048 tokens of context: prompt + output must fit.
    let max_input = 1900;
    let max_output = 16;
    run_ok(&[
        "replay",
        "--trace",
        &trace.to_string_lossy(),
        "--limit",
        "50",
        "--speedup",
        "10",
        "--max-input-tokens",
        &max_input.to_string(),
        "--max-output-tokens",
        &max_output.to_string(),
        "--tokenizer",
        &tokenizer,
        "--base-url",
        &url,
        "--no-progress",
        "--output",
        &out.to_string_lossy(),
    ]);

    let mut requests = read_jsonl(&out.join("requests.jsonl"));
    all_ok(&mut requests, 50);
    let records = trace_head(&trace, 50);
    let mut clamped = 0;
    for (request, record) in requests.iter().zip(&records) {
        let input = u64_of(record, "input_length").min(max_input);
        let output = u64_of(record, "output_length").min(max_output);
        let was_clamped = u64_of(record, "input_length") > max_input
            || u64_of(record, "output_length") > max_output;
        assert_eq!(
            request["clamped"].as_bool(),
            Some(was_clamped),
            "{}",
            brief(request)
        );
        clamped += usize::from(was_clamped);
        assert_eq!(
            u64_of(request, "prompt_tokens"),
            input,
            "llama-server saw {}",
            brief(request)
        );
        assert_eq!(
            u64_of(request, "completion_tokens"),
            output,
            "{}",
            brief(request)
        );
        assert_eq!(request["completion_source"], "usage");
        check_timing_consistency(request);
    }
    assert!(
        clamped > 0,
        "the first 50 records include prompts over {max_input} tokens"
    );
    let summary = read_json(&out.join("summary.json"));
    check_summary_matches(&summary, &requests);
    let run = read_json(&out.join("run.json"));
    assert_eq!(
        run["calibration"]["method"], "usage",
        "calibrated against the server: {run}"
    );
}

#[test]
fn smollm2_replay_generates_the_requested_output_lengths() {
    let Some(url) = common::smollm_url() else {
        return;
    };
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-mooncake.jsonl");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    run_ok(&[
        "replay",
        "--trace",
        &sample.to_string_lossy(),
        "--limit",
        "6",
        "--speedup",
        "10",
        "--max-input-tokens",
        "300",
        "--max-output-tokens",
        "24",
        "--base-url",
        &format!("{url}/v1"),
        "--no-progress",
        "--output",
        &out.to_string_lossy(),
    ]);

    let mut requests = read_jsonl(&out.join("requests.jsonl"));
    all_ok(&mut requests, 6);
    let records = trace_head(&sample, 6);
    for (request, record) in requests.iter().zip(&records) {
        let output = u64_of(record, "output_length").min(24);
        assert_eq!(
            u64_of(request, "completion_tokens"),
            output,
            "{}",
            brief(request)
        );
        assert_eq!(request["completion_source"], "usage");
    }
}

#[test]
fn sweep_of_three_time_scales_writes_three_runs_and_the_table() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sample-mooncake.jsonl");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("sweep");
    let stdout = run_ok(&[
        "sweep",
        "--trace",
        &sample.to_string_lossy(),
        "--limit",
        "40",
        "--time-scales",
        "0.1,0.2,0.4",
        "--sim",
        "--sim-speed",
        "10",
        "--no-progress",
        "--output",
        &out.to_string_lossy(),
    ]);

    let runs: BTreeSet<String> = std::fs::read_dir(&out)
        .expect("sweep dir")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("summary.json").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 3, "one run per time scale: {runs:?}");
    for run in &runs {
        let summary = read_json(&out.join(run).join("summary.json"));
        assert_eq!(u64_of(&summary, "completed"), 40, "{run}");
    }
    assert!(out.join("sweep.html").is_file());
    for scale in ["0.1", "0.2", "0.4"] {
        assert!(
            stdout.contains(scale),
            "sweep table names scale {scale}:\n{stdout}"
        );
    }
}
