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

/// `tracebench ARGS`, run in `cwd` (where the default `tracebench-out/` would go).
fn run_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("TRACEBENCH_TRACE_BASE_URL")
        .output()
        .expect("the tracebench binary runs")
}

/// A Mooncake-format trace of `outputs.len()` records 10 ms apart with these output lengths.
fn small_trace(dir: &Path, outputs: &[u32]) -> String {
    let path = dir.join("small.jsonl");
    let lines: String = outputs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            format!(
                "{{\"timestamp\": {}, \"input_length\": 32, \"output_length\": {out}, \
                 \"hash_ids\": [{i}]}}\n",
                i * 10
            )
        })
        .collect();
    std::fs::write(&path, lines).expect("trace written");
    path.display().to_string()
}

/// `replay` of `trace` against the in-process simulator in fixed timing, uncalibrated.
fn sim_args<'a>(trace: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "replay",
        "--sim",
        "--sim-timing",
        "fixed",
        "--sim-ttft-ms",
        "5",
        "--sim-itl-ms",
        "1",
        "--no-calibrate",
        "--no-progress",
        "--trace",
        trace,
        "--output",
        out,
    ]
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn replay_refuses_a_directory_holding_a_run_unless_forced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2, 2, 2]);
    let out = dir.path().join("run");
    let out_arg = out.display().to_string();
    let first = run_in(dir.path(), &sim_args(&trace, &out_arg));
    assert_eq!(first.status.code(), Some(0), "{}", stderr_of(&first));
    let run_json = std::fs::read(out.join("run.json")).expect("run.json");

    let again = run_in(dir.path(), &sim_args(&trace, &out_arg));
    let stderr = stderr_of(&again);
    assert_eq!(again.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("output directory {out_arg} already holds a run"))
            && stderr.contains("--force")
            && stderr.contains("another --output"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("run.json")).expect("kept"), run_json);

    let mut forced = sim_args(&trace, &out_arg);
    forced.push("--force");
    let forced = run_in(dir.path(), &forced);
    assert_eq!(forced.status.code(), Some(0), "{}", stderr_of(&forced));
    assert_ne!(
        std::fs::read(out.join("run.json")).expect("rewritten"),
        run_json
    );
}

#[test]
fn replay_refuses_an_existing_save_tics_file_unless_forced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2, 2]);
    let tics = dir.path().join("tics.json");
    std::fs::write(&tics, "keep me").expect("write");
    let tics_arg = tics.display().to_string();
    let out_arg = dir.path().join("run").display().to_string();
    let mut args = sim_args(&trace, &out_arg);
    args.extend(["--save-tics", &tics_arg]);

    let refused = run_in(dir.path(), &args);
    let stderr = stderr_of(&refused);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{tics_arg} exists already")) && stderr.contains("--save-tics"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&tics).expect("kept"), "keep me");
    assert!(
        !dir.path().join("run").exists(),
        "nothing is made before the checks"
    );

    args.push("--force");
    let forced = run_in(dir.path(), &args);
    assert_eq!(forced.status.code(), Some(0), "{}", stderr_of(&forced));
    let written = std::fs::read_to_string(&tics).expect("rewritten");
    let value: Value = serde_json::from_str(&written).expect("tics are JSON");
    assert_eq!(
        value.as_array().map(Vec::len),
        Some(2),
        "one row per request: {written}"
    );
}

#[test]
fn save_tics_mistakes_are_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2, 2]);
    let out_arg = dir.path().join("run").display().to_string();
    let nowhere = dir.path().join("nowhere").join("tics.json");
    let here = dir.path().display().to_string();
    for (tics, message) in [
        (nowhere.display().to_string(), "its folder does not exist"),
        (here, "is a directory"),
    ] {
        let mut args = sim_args(&trace, &out_arg);
        args.extend(["--save-tics", &tics, "--force"]);
        let out = run_in(dir.path(), &args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--save-tics") && stderr.contains(message),
            "{stderr}"
        );
        assert!(
            !dir.path().join("run").exists(),
            "nothing sent, nothing made"
        );
    }

    // sweep would write every level into the one file.
    let mut args = sim_args(&trace, &out_arg);
    args[0] = "sweep";
    args.extend(["--time-scales", "1,2", "--save-tics", "t.json"]);
    let out = run_in(dir.path(), &args);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--save-tics is not taken by sweep"),
        "{stderr}"
    );
    assert!(!dir.path().join("t.json").exists());

    // report keeps an existing file unless --force.
    let first = run_in(dir.path(), &sim_args(&trace, &out_arg));
    assert_eq!(first.status.code(), Some(0), "{}", stderr_of(&first));
    let tics = dir.path().join("kept.json");
    std::fs::write(&tics, "keep me").expect("write");
    let tics_arg = tics.display().to_string();
    let report = ["report", out_arg.as_str(), "--save-tics", tics_arg.as_str()];
    let refused = run_in(dir.path(), &report);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr_of(&refused));
    assert_eq!(std::fs::read_to_string(&tics).expect("kept"), "keep me");
    let mut forced = report.to_vec();
    forced.push("--force");
    let forced = run_in(dir.path(), &forced);
    assert_eq!(forced.status.code(), Some(0), "{}", stderr_of(&forced));
    let value: Value = serde_json::from_str(&std::fs::read_to_string(&tics).expect("tics"))
        .expect("tics are JSON");
    assert_eq!(value.as_array().map(Vec::len), Some(2));
}

#[test]
fn sweep_refuses_a_used_folder_before_running_anything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2, 2]);
    let root = dir.path().join("sweep");
    let level = root.join("time-scale-2");
    std::fs::create_dir_all(&level).expect("mkdir");
    std::fs::write(level.join("requests.jsonl"), "").expect("write");
    let root_arg = root.display().to_string();
    let mut args = sim_args(&trace, &root_arg);
    args[0] = "sweep";
    args.extend(["--time-scales", "1,2"]);

    let out = run_in(dir.path(), &args);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&level.display().to_string()), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    // Nothing ran: level 1, before the used one, was not made either.
    assert!(!root.join("time-scale-1").exists());

    std::fs::remove_dir_all(&level).expect("rm");
    std::fs::write(root.join("sweep.html"), "old").expect("write");
    let out = run_in(dir.path(), &args);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("already holds a sweep (sweep.html)"),
        "{stderr}"
    );
}

/// A loopback address with nothing listening (bound, then released).
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

#[test]
fn usage_and_input_errors_leave_no_output_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2, 2]);
    let url = closed_port();
    let base = ["replay", "--no-progress", "--trace", trace.as_str()];
    let cases: [&[&str]; 6] = [
        &["--sim", "--grace", "-1"],
        &["--sim", "--time-scale", "-1"],
        &["--sim", "--extra-body", "[1]"],
        &["--sim", "--max-failed-ratio", "2"],
        &["--sim", "--on-invalid", "fail", "--format", "azure"],
        &["--base-url", &url],
    ];
    for extra in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let out = run_in(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr_of(&out));
        let made: Vec<_> = std::fs::read_dir(dir.path().join("tracebench-out"))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(made.is_empty(), "{extra:?} left {made:?}");
    }
}

#[test]
fn a_closed_port_without_model_says_the_server_is_not_reachable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2]);
    let url = closed_port();
    let out_arg = dir.path().join("run").display().to_string();
    let out = run_in(
        dir.path(),
        &[
            "replay",
            "--base-url",
            &url,
            "--trace",
            &trace,
            "--output",
            &out_arg,
        ],
    );
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("the server is not reachable at {url}")),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("--model"), "{stderr}");
}

/// A server answering every request with HTTP 400 and `body`; returns its base URL.
fn bad_request_server(body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_failed_calibration_says_what_the_server_answered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2]);
    let url = bad_request_server(r#"{"error": "context too short for the test"}"#);
    let out_dir = dir.path().join("run");
    let out_arg = out_dir.display().to_string();
    let out = run_in(
        dir.path(),
        &[
            "replay",
            "--base-url",
            &url,
            "--model",
            "m",
            "--no-progress",
            "--trace",
            &trace,
            "--output",
            &out_arg,
        ],
    );
    let stderr = stderr_of(&out);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("calibration: none"))
        .unwrap_or_else(|| panic!("no calibration line in {stderr}"));
    assert!(line.contains("http_400"), "{line}");
    assert!(line.contains("context too short for the test"), "{line}");
    assert!(line.contains("/tokenize: http 400"), "{line}");
    let run = read_json(&out_dir.join("run.json"));
    let error = run["calibration"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("context too short for the test"), "{run}");
}

#[test]
fn zero_output_lengths_are_sent_asking_for_one_token_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[0, 3, 0]);
    let out_dir = dir.path().join("run");
    let out_arg = out_dir.display().to_string();
    let out = run_in(dir.path(), &sim_args(&trace, &out_arg));
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("2 records ask for 0 output tokens"),
        "{stderr}"
    );

    let mut requests = read_jsonl(&out_dir.join("requests.jsonl"));
    all_ok(&mut requests, 3);
    let outputs: Vec<u64> = requests
        .iter()
        .map(|r| u64_of(r, "output_tokens"))
        .collect();
    assert_eq!(outputs, vec![1, 3, 1]);
    let clamped: Vec<bool> = requests.iter().map(|r| r["clamped"] == true).collect();
    assert_eq!(clamped, vec![true, false, true]);
    let summary = read_json(&out_dir.join("summary.json"));
    assert_eq!(summary["summary"]["clamped"], 2);
    assert_eq!(
        summary["config"]["config"]["trace"]["zero_output_raised"],
        2
    );
}

#[test]
fn negative_numbers_reach_our_own_validation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2]);
    let cases: [(&[&str], &str); 4] = [
        (
            &["replay", "--sim", "--trace", &trace, "--time-scale", "-1"],
            "--time-scale: expected a positive finite number, found -1",
        ),
        (
            &[
                "replay",
                "--sim",
                "--trace",
                &trace,
                "--connect-timeout",
                "-2",
            ],
            "--connect-timeout -2: expected a non-negative number of seconds",
        ),
        (
            &["sweep", "--sim", "--trace", &trace, "--time-scales", "-1,2"],
            "sweep level scale -1: expected a positive number",
        ),
        (
            &[
                "trace", "synth", "--output", "x.jsonl", "--count", "2", "--rate", "-2",
            ],
            "--rate: expected a positive number, found -2",
        ),
    ];
    for (args, message) in cases {
        let out = run_in(dir.path(), args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn zero_limits_that_would_fail_every_request_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2]);
    let cases = [
        (
            "--timeout",
            "--timeout 0: expected a positive number of seconds",
        ),
        (
            "--connect-timeout",
            "--connect-timeout 0: expected a positive number",
        ),
        (
            "--first-token-timeout",
            "--first-token-timeout 0: expected a positive",
        ),
        ("--max-event-bytes", "'--max-event-bytes <BYTES>'"),
        ("--lookahead", "'--lookahead <N>'"),
    ];
    for (flag, message) in cases {
        let args = ["replay", "--sim", "--trace", &trace, flag, "0"];
        let out = run_in(dir.path(), &args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(message), "{flag}: {stderr}");
        assert!(
            !dir.path().join("tracebench-out").exists(),
            "{flag}: nothing created"
        );
    }
}

#[test]
fn http_client_and_warm_connections_are_recorded_and_both_complete_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2, 3, 4]);
    // (transport, --warm-connections, calibrated first)
    let cases = [
        ("direct", None, false),
        ("direct", Some("0"), false),
        ("direct", Some("3"), false),
        ("direct", Some("3"), true),
        ("reqwest", Some("2"), false),
    ];
    for (client, warm, calibrated) in cases {
        let name = format!("{client} {} {calibrated}", warm.unwrap_or("default"));
        let out_dir = dir.path().join(name.replace(' ', "-"));
        let out_arg = out_dir.display().to_string();
        let mut args = sim_args(&trace, &out_arg);
        if calibrated {
            args.retain(|a| *a != "--no-calibrate");
        }
        args.extend(["--http-client", client]);
        if let Some(warm) = warm {
            args.extend(["--warm-connections", warm]);
        }
        // A proxy in the environment would turn the direct transport off.
        let out = Command::new(common::bin())
            .args(&args)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env_remove("TRACEBENCH_TRACE_BASE_URL")
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .env_remove("RUST_LOG")
            .output()
            .expect("the tracebench binary runs");
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));

        let mut requests = read_jsonl(&out_dir.join("requests.jsonl"));
        all_ok(&mut requests, 3);
        let completions: Vec<u64> = requests
            .iter()
            .map(|r| u64_of(r, "completion_tokens"))
            .collect();
        assert_eq!(completions, vec![2, 3, 4], "{name}");
        let run = read_json(&out_dir.join("run.json"));
        assert_eq!(run["config"]["http_client"], client, "{name}");
        // Plain http to the simulator: the transport asked for is the one used.
        assert_eq!(run["config"]["http_client_used"], client, "{name}");
        let expected_warm = warm.map_or(Value::Null, |w| w.parse::<u64>().expect("n").into());
        assert_eq!(run["config"]["warm_connections"], expected_warm, "{name}");

        // Counted by the direct transport only, written at the end of the run, and the
        // same in summary.json.
        let connections = &run["connections"];
        let summary = read_json(&out_dir.join("summary.json"));
        assert_eq!(&summary["config"]["connections"], connections, "{name}");
        if client == "reqwest" {
            assert!(run.get("connections").is_none(), "{name}: {run}");
            continue;
        }
        let ahead = connections["opened_ahead"].as_u64();
        let on_send = connections["opened_on_send"].as_u64();
        assert!(
            ahead.is_some() && on_send.is_some(),
            "{name}: {connections}"
        );
        match warm {
            // At least 4 by default, 3 when asked.
            None => assert!(ahead >= Some(4), "{name}: {connections}"),
            // Three ahead for three requests: none opens its own, and the calibration's
            // connection (opened before the run) is not counted.
            Some("3") => {
                assert!(ahead >= Some(3), "{name}: {connections}");
                assert_eq!(on_send, Some(0), "{name}: {connections}");
            }
            // None ahead: the requests open their own.
            _ => {
                assert_eq!(ahead, Some(0), "{name}: {connections}");
                assert!(on_send >= Some(1), "{name}: {connections}");
            }
        }
        assert!(
            stderr_of(&out).contains("opened ahead of the sends"),
            "{name}: the counts are logged at info level: {}",
            stderr_of(&out)
        );
    }
}

#[test]
fn client_threads_is_recorded_and_every_count_completes_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = small_trace(dir.path(), &[2, 3, 4, 5]);
    for threads in ["1", "3"] {
        let out_dir = dir.path().join(format!("run-{threads}"));
        let out_arg = out_dir.display().to_string();
        let mut args = sim_args(&trace, &out_arg);
        args.extend(["--client-threads", threads]);
        let out = run_in(dir.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));

        let mut requests = read_jsonl(&out_dir.join("requests.jsonl"));
        all_ok(&mut requests, 4);
        let completions: Vec<u64> = requests
            .iter()
            .map(|r| u64_of(r, "completion_tokens"))
            .collect();
        assert_eq!(completions, vec![2, 3, 4, 5], "{threads} threads");
        let run = read_json(&out_dir.join("run.json"));
        assert_eq!(run["config"]["client_threads"].to_string(), threads);
    }

    let refused = run_in(
        dir.path(),
        &[
            "replay",
            "--sim",
            "--trace",
            &trace,
            "--client-threads",
            "0",
        ],
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr_of(&refused).contains("--client-threads"),
        "{}",
        stderr_of(&refused)
    );
}
