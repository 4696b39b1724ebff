//! Issue 10 through the real command line: every simulator fault in a `tracebench replay
//! --sim` run ends in its own outcome and the run goes on (issue 5's last check), refused
//! connections and `--max-failed-ratio`, latency statistics over successes only, a SIGKILLed
//! run recovered by `tracebench report`, exit within the grace period, output problems found
//! before any load, and no credential written anywhere. docs/RELIABILITY.md maps each case
//! of the issue to its test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracebench::replay::{Outcome, RequestRecord};

use crate::common;

/// Records in a fault run; with `every=4`, the 4th, 8th and 12th to arrive are hit.
const FAULT_RUN_RECORDS: usize = 14;

/// Requests a fault with `every=4` hits in a run of [`FAULT_RUN_RECORDS`].
const FAULT_HITS: usize = 3;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

/// A Mooncake-format trace of `n` records `gap_ms` apart, each asking `output` tokens.
fn write_trace(dir: &Path, n: usize, gap_ms: u64, output: u32) -> PathBuf {
    let path = dir.join("trace.jsonl");
    let lines: String = (0..n)
        .map(|i| {
            let at = i as u64 * gap_ms;
            format!(
                "{{\"timestamp\": {at}, \"input_length\": 32, \"output_length\": {output}, \"hash_ids\": [{i}]}}\n"
            )
        })
        .collect();
    std::fs::write(&path, lines).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// `tracebench replay` against the in-process simulator in fixed timing (10 ms TTFT, 5 ms
/// per token), without calibration, so that plan requests are the simulator's 1..N.
fn sim_replay(trace: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.args(["replay", "--sim", "--sim-timing", "fixed"])
        .args(["--sim-ttft-ms", "10", "--sim-itl-ms", "5"])
        .args(["--no-calibrate", "--no-progress", "--trace"])
        .arg(trace)
        .arg("--output")
        .arg(out);
    cmd
}

/// `tracebench replay` against `url` with a fixed model and no calibration.
fn url_replay(url: &str, trace: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.args(["replay", "--base-url", url, "--model", "m"])
        .args(["--no-calibrate", "--no-progress", "--trace"])
        .arg(trace)
        .arg("--output")
        .arg(out);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run tracebench: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every line of `requests.jsonl` (which must end in a complete line), in plan order.
fn read_records(dir: &Path) -> Vec<RequestRecord> {
    let body = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap_or_default();
    assert!(body.is_empty() || body.ends_with('\n'), "last line cut");
    let mut records: Vec<RequestRecord> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    records.sort_by_key(|r| r.index);
    records
}

fn read_json(path: &Path) -> Value {
    let body = std::fs::read_to_string(path).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Outcome name → count.
fn outcome_counts(records: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for record in records {
        *counts.entry(record.outcome.to_string()).or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// What one fault run left behind.
struct FaultRun {
    records: Vec<RequestRecord>,
    summary: Value,
    output: Output,
}

impl FaultRun {
    /// The records that ended in `outcome`.
    fn with(&self, outcome: Outcome) -> Vec<&RequestRecord> {
        self.records
            .iter()
            .filter(|r| r.outcome == outcome)
            .collect()
    }
}

/// Replays [`FAULT_RUN_RECORDS`] records of `output` tokens with `--sim-fault
/// SPEC,every=4` and checks the common shape: every record present, exit code 0.
fn fault_run(spec: &str, output: u32, extra: &[&str]) -> FaultRun {
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), FAULT_RUN_RECORDS, 10, output);
    let out = tmp.path().join("run");
    let fault = format!("{spec},every=4");
    let output = run(sim_replay(&trace, &out)
        .args(["--sim-fault", &fault])
        .args(extra));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let records = read_records(&out);
    assert_eq!(records.len(), FAULT_RUN_RECORDS, "every record is kept");
    FaultRun {
        records,
        summary: read_json(&out.join("summary.json")),
        output,
    }
}

/// Checks that exactly [`FAULT_HITS`] requests ended in `cause` and the rest were ok, in
/// `requests.jsonl` and in `summary.json`, and that the run went on after a fault.
fn assert_fault_counted(run: &FaultRun, cause: &str) {
    let ok = FAULT_RUN_RECORDS - FAULT_HITS;
    let expected = counts(&[(cause, FAULT_HITS), ("ok", ok)]);
    assert_eq!(
        outcome_counts(&run.records),
        expected,
        "{}",
        text(&run.output.stderr)
    );

    let summary = &run.summary["summary"];
    let by_cause: BTreeMap<String, usize> =
        serde_json::from_value(summary["failed_by_cause"].clone()).unwrap_or_default();
    assert_eq!(by_cause, counts(&[(cause, FAULT_HITS)]));
    assert_eq!(summary["sent"], FAULT_RUN_RECORDS);
    assert_eq!(summary["completed"], ok);
    assert_eq!(summary["failed"], FAULT_HITS);
    assert_eq!(run.summary["partial"], false);
    // The run went on: requests sent after the first faulted one are ok. (The simulator
    // numbers requests by arrival, which a loaded machine may reorder: no plan index is
    // sure to be hit.)
    let first_fault_sent = run
        .records
        .iter()
        .filter(|r| r.outcome != Outcome::Ok)
        .filter_map(|r| r.sent_s)
        .fold(f64::INFINITY, f64::min);
    let later_ok = run
        .records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok && r.sent_s > Some(first_fault_sent))
        .count();
    assert!(
        later_ok >= 2,
        "{later_ok} ok requests after the first fault"
    );
}

#[test]
fn sim_fault_http_status_with_a_body_is_counted_with_the_body() {
    for code in [429, 500, 503] {
        let run = fault_run(&format!("status:{code}"), 4, &[]);
        assert_fault_counted(&run, &format!("http_{code}"));
        for record in run.with(Outcome::Http(code)) {
            let error = record.error.as_deref().unwrap_or_default();
            assert!(error.starts_with(&format!("http {code}: {{")), "{error}");
            assert!(error.contains("simulated fault"), "{error}");
        }
    }
}

#[test]
fn sim_fault_http_status_without_a_body_is_counted() {
    for code in [429, 500, 503] {
        let run = fault_run(&format!("status-empty:{code}"), 4, &[]);
        assert_fault_counted(&run, &format!("http_{code}"));
        for record in run.with(Outcome::Http(code)) {
            assert_eq!(
                record.error.as_deref(),
                Some(format!("http {code}").as_str())
            );
        }
    }
}

#[test]
fn sim_fault_stream_cut_after_k_tokens_is_a_stream_cut_with_k_chunks() {
    let run = fault_run("cut:2", 6, &[]);
    assert_fault_counted(&run, "stream_cut");
    for record in run.with(Outcome::StreamCut) {
        assert_eq!(record.chunk_s.len(), 2, "{record:?}");
    }
}

#[test]
fn sim_fault_in_band_error_is_an_in_band_error() {
    let run = fault_run("error:2", 6, &[]);
    assert_fault_counted(&run, "in_band_error");
    for record in run.with(Outcome::InBand) {
        assert_eq!(record.chunk_s.len(), 2, "{record:?}");
    }
}

#[test]
fn sim_fault_stall_beyond_the_first_token_timeout_times_out() {
    let run = fault_run("stall:4", 4, &["--first-token-timeout", "1"]);
    assert_fault_counted(&run, "timeout_first_token");
    for record in run.with(Outcome::Timeout(
        tracebench::replay::TimeoutKind::FirstToken,
    )) {
        assert!(record.chunk_s.is_empty() && record.first_token_s.is_none());
        let waited_ms = record.e2e_ms().unwrap_or_default();
        assert!(waited_ms >= 1000.0, "gave up after {waited_ms} ms");
    }
}

#[test]
fn sim_fault_malformed_chunk_is_a_protocol_error() {
    let run = fault_run("malformed:1", 4, &[]);
    assert_fault_counted(&run, "protocol_error");
}

#[test]
fn sim_fault_keep_alive_comments_leave_every_request_ok() {
    let run = fault_run("keepalive", 4, &[]);
    let ok = counts(&[("ok", FAULT_RUN_RECORDS)]);
    assert_eq!(outcome_counts(&run.records), ok);
    assert!(run.records.iter().all(|r| r.chunk_s.len() == 4));
    assert_eq!(run.summary["summary"]["failed"], 0);
}

#[test]
fn sim_fault_first_content_delay_is_ok_and_counted_in_ttft() {
    // The role chunk comes at once; TTFT waits for the first content chunk.
    let run = fault_run("first-delay:0.6", 3, &[]);
    assert_eq!(
        outcome_counts(&run.records),
        counts(&[("ok", FAULT_RUN_RECORDS)])
    );
    let slow: Vec<f64> = run
        .records
        .iter()
        .filter_map(RequestRecord::ttft_ms)
        .collect();
    let slow = slow.iter().filter(|ttft| **ttft >= 600.0).count();
    assert_eq!(slow, FAULT_HITS);
    let max_ttft = run.summary["summary"]["ttft_ms"]["max"]
        .as_f64()
        .unwrap_or_default();
    assert!(max_ttft >= 600.0, "{max_ttft}");
}

#[test]
fn sim_fault_first_content_delay_beyond_the_first_token_timeout_times_out() {
    let run = fault_run("first-delay:4", 3, &["--first-token-timeout", "1"]);
    assert_fault_counted(&run, "timeout_first_token");
}

/// A loopback port with nothing listening (bound, then released).
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    drop(listener);
    format!("http://{addr}")
}

#[test]
fn refused_connection_is_counted_and_the_exit_code_follows_max_failed_ratio() {
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), 5, 10, 4);
    let url = closed_port_url();
    for (ratio, code) in [(None, 1), (Some("0.5"), 1), (Some("1"), 0)] {
        let out = tmp.path().join(format!("run-{ratio:?}"));
        let mut cmd = url_replay(&url, &trace, &out);
        if let Some(ratio) = ratio {
            cmd.args(["--max-failed-ratio", ratio]);
        }
        let output = run(&mut cmd);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{ratio:?}: {}",
            text(&output.stderr)
        );

        let records = read_records(&out);
        assert_eq!(outcome_counts(&records), counts(&[("connect_error", 5)]));
        let summary = read_json(&out.join("summary.json"));
        assert_eq!(summary["summary"]["failure_share"], 1.0);
        // No success: latencies do not exist, and are null rather than 0.
        assert_eq!(summary["summary"]["ttft_ms"]["count"], 0);
        assert_eq!(summary["mean_ttft_ms"], Value::Null);
        assert_eq!(summary["median_e2el_ms"], Value::Null);
    }
}

#[test]
fn fault_share_over_max_failed_ratio_exits_one() {
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), FAULT_RUN_RECORDS, 10, 4);
    for (ratio, code) in [("0.2", 1), ("0.25", 0)] {
        let out = tmp.path().join(format!("run-{ratio}"));
        let mut cmd = sim_replay(&trace, &out);
        cmd.args([
            "--sim-fault",
            "status:500,every=4",
            "--max-failed-ratio",
            ratio,
        ]);
        let output = run(&mut cmd);
        // 3 of 14 failed: 21.4 %.
        assert_eq!(
            output.status.code(),
            Some(code),
            "{ratio}: {}",
            text(&output.stderr)
        );
    }
}

/// Latency statistics of the `ok` records: (count, min, max) of one latency.
fn stats_of(
    records: &[RequestRecord],
    latency: fn(&RequestRecord) -> Option<f64>,
) -> (usize, f64, f64) {
    let values: Vec<f64> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Ok)
        .filter_map(latency)
        .collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (values.len(), min, max)
}

fn assert_distribution(summary: &Value, key: &str, expected: (usize, f64, f64)) {
    let dist = &summary["summary"][key];
    assert_eq!(dist["count"], expected.0, "{key}");
    for (stat, value) in [("min", expected.1), ("max", expected.2)] {
        let got = dist[stat].as_f64().unwrap_or(f64::NAN);
        assert!((got - value).abs() < 1e-6, "{key}.{stat}: {got} vs {value}");
    }
}

#[test]
fn failed_requests_never_lower_a_reported_latency() {
    // A stream cut after its first token is fast and has a TTFT: it must count as a
    // failure, not as a quick success.
    let run = fault_run("cut:1", 8, &[]);
    assert_fault_counted(&run, "stream_cut");
    let cut = run.with(Outcome::StreamCut);
    assert!(cut.iter().all(|r| r.first_token_s.is_some()));

    assert_distribution(
        &run.summary,
        "ttft_ms",
        stats_of(&run.records, RequestRecord::ttft_ms),
    );
    assert_distribution(
        &run.summary,
        "e2el_ms",
        stats_of(&run.records, RequestRecord::e2e_ms),
    );
    let share = run.summary["summary"]["failure_share"]
        .as_f64()
        .unwrap_or_default();
    assert!((share - 3.0 / 14.0).abs() < 1e-9, "{share}");

    // The console report shows the failure share beside the latencies.
    let stdout = text(&run.output.stdout);
    assert!(
        stdout.contains("Failed requests:                         3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Failed share of sent (%):                21.4"),
        "{stdout}"
    );
}

/// Waits (at most 60 s, startup included) until `path` holds `lines` lines.
fn wait_for_lines(path: &Path, lines: usize) {
    for _ in 0..600 {
        let body = std::fs::read_to_string(path).unwrap_or_default();
        if body.lines().count() >= lines {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} never reached {lines} lines", path.display());
}

fn signal(child: &std::process::Child, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {signal} failed");
}

#[test]
fn sigkill_mid_run_leaves_what_report_recovers() {
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), 40, 100, 4);
    let out = tmp.path().join("run");
    let mut child = sim_replay(&trace, &out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_lines(&out.join("requests.jsonl"), 5);
    signal(&child, "-KILL");
    let _ = child.wait();
    assert!(
        !out.join("summary.json").exists(),
        "a killed run writes no summary"
    );

    let finished = read_records(&out);
    let ok = finished.iter().filter(|r| r.outcome == Outcome::Ok).count();
    assert!(ok >= 5 && finished.len() < 40, "{} lines", finished.len());
    let output = run(Command::new(common::bin()).arg("report").arg(&out));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("40 requests planned, {} finished", finished.len())),
        "{stderr}"
    );
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["partial"], true);
    // run.json, written before the first request, holds the plan's size: the requests
    // never recorded are counted, not forgotten.
    assert_eq!(summary["num_prompts"], 40);
    assert_eq!(summary["summary"]["requests"], 40);
    assert_eq!(summary["summary"]["skipped"], 40 - finished.len());
    assert_eq!(summary["summary"]["completed"], ok);
    assert!(out.join("report.html").is_file());
}

/// Starts a replay of 2 short and 8 twenty-second streams with `--grace GRACE_S`, signals
/// it `times` (half a second apart) once the short ones finished, and returns how long it
/// took to exit after the first signal; checks the exit code and the records.
fn interrupt_long_streams(sig: &str, grace_s: &str, times: usize) -> Duration {
    let tmp = tempdir();
    let path = tmp.path().join("trace.jsonl");
    let lines: String = (0..10)
        .map(|i| {
            let output = if i < 2 { 2 } else { 2000 };
            format!("{{\"timestamp\": 0, \"input_length\": 16, \"output_length\": {output}}}\n")
        })
        .collect();
    std::fs::write(&path, lines).unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("run");
    let child = sim_replay(&path, &out)
        .args(["--grace", grace_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_lines(&out.join("requests.jsonl"), 2);

    let signalled = Instant::now();
    for time in 0..times {
        if time > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        signal(&child, sig);
    }
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let took = signalled.elapsed();

    assert_eq!(output.status.code(), Some(130), "{}", text(&output.stderr));
    let records = read_records(&out);
    assert_eq!(
        outcome_counts(&records),
        counts(&[("ok", 2), ("cancelled", 8)])
    );
    assert_eq!(read_json(&out.join("summary.json"))["partial"], true);
    took
}

/// One signal: the streams (10 s more) are cancelled at the end of the 1 s grace.
fn exits_within_grace(sig: &str) {
    let took = interrupt_long_streams(sig, "1", 1);
    // A loose bound on a busy machine.
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "exit before the grace: {took:?}"
    );
}

#[test]
fn sigterm_exits_within_the_grace_period_with_a_partial_summary() {
    exits_within_grace("-TERM");
}

#[test]
fn sigint_exits_within_the_grace_period_with_a_partial_summary() {
    exits_within_grace("-INT");
}

#[test]
fn a_second_sigint_cancels_the_streams_without_waiting_for_the_grace() {
    // The grace (60 s) outlasts the streams (10 s more): only the second signal can end
    // the run in a few seconds.
    let took = interrupt_long_streams("-INT", "60", 2);
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
}

/// A listener that must see no connection: the run should fail before any load.
struct Sentinel(std::net::TcpListener);

impl Sentinel {
    fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        Self(listener)
    }

    fn url(&self) -> String {
        let addr = self.0.local_addr().unwrap_or_else(|e| panic!("{e}"));
        format!("http://{addr}")
    }

    fn assert_untouched(&self) {
        assert!(self.0.accept().is_err(), "a connection was made");
    }
}

/// Replays 3 records to a [`Sentinel`] into `out`; expects exit code 2 and no connection.
fn assert_refused_before_load(out: &Path, expect_in_error: &[&str]) -> String {
    assert_refused_before_load_with(out, &[], expect_in_error)
}

/// [`assert_refused_before_load`] with `extra` flags.
fn assert_refused_before_load_with(out: &Path, extra: &[&str], expect_in_error: &[&str]) -> String {
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), 3, 10, 4);
    let sentinel = Sentinel::new();
    let output = run(url_replay(&sentinel.url(), &trace, out).args(extra));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in expect_in_error {
        assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
    }
    sentinel.assert_untouched();
    stderr
}

#[test]
fn output_dir_on_a_read_only_location_fails_before_any_load() {
    // /sys refuses new directories even to root; a chmod would not stop root.
    let out = Path::new("/sys/tracebench-reliability-test/run");
    assert_refused_before_load(out, &["/sys/tracebench-reliability-test", "--output"]);
}

#[test]
fn output_disk_already_full_fails_before_any_load() {
    // The writability probe (`.tracebench-write-probe`) points at /dev/full: every write
    // fails with ENOSPC, as on a full disk.
    let tmp = tempdir();
    let out = tmp.path().join("run");
    std::fs::create_dir(&out).unwrap_or_else(|e| panic!("{e}"));
    symlink("/dev/full", &out.join(".tracebench-write-probe"));
    assert_refused_before_load(&out, &["No space left on device", "--output"]);
}

#[test]
fn output_run_json_unwritable_fails_before_any_load() {
    let tmp = tempdir();
    let out = tmp.path().join("run");
    std::fs::create_dir(&out).unwrap_or_else(|e| panic!("{e}"));
    symlink("/dev/full", &out.join("run.json"));
    assert_refused_before_load(&out, &["run.json", "already holds a run", "--force"]);
    assert_refused_before_load_with(&out, &["--force"], &["run.json", "No space left on device"]);
}

#[test]
fn output_disk_full_mid_run_stops_sending_with_one_clear_error() {
    // requests.jsonl is /dev/full: the first record cannot be written. The run must stop
    // sending at once, say why once, and still write the summary of what it measured.
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), 40, 100, 4);
    let out = tmp.path().join("run");
    std::fs::create_dir(&out).unwrap_or_else(|e| panic!("{e}"));
    symlink("/dev/full", &out.join("requests.jsonl"));
    let output = run(sim_replay(&trace, &out).arg("--force"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default();
    assert!(error_line.contains("requests.jsonl"), "{stderr}");
    assert_eq!(
        error_line.matches("No space left on device").count(),
        1,
        "{error_line}"
    );

    let summary = read_json(&out.join("summary.json"));
    let sent = summary["summary"]["sent"].as_u64().unwrap_or(u64::MAX);
    assert!(sent <= 3, "{sent} requests sent after the write failed");
    assert_eq!(summary["partial"], true);
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap_or_else(|e| panic!("{e}"));
}

/// Every file under `dir`, as text.
fn all_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(all_files(&path));
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            files.push((path, text(&bytes)));
        }
    }
    files
}

/// Fails if any secret appears in stdout, stderr or any file under `dir`.
fn assert_no_secret(output: &Output, dir: &Path, secrets: &[&str], expected_files: &[&str]) {
    let files = all_files(dir);
    for name in expected_files {
        assert!(
            files.iter().any(|(p, _)| p.ends_with(name)),
            "{name} missing"
        );
    }
    let streams = [
        ("stdout", text(&output.stdout)),
        ("stderr", text(&output.stderr)),
    ];
    let named = streams.into_iter().map(|(n, t)| (PathBuf::from(n), t));
    for (path, body) in files.into_iter().chain(named) {
        for secret in secrets {
            assert!(
                !body.contains(secret),
                "{} holds {secret:?}",
                path.display()
            );
        }
    }
}

const OUTPUT_FILES: [&str; 6] = [
    "run.json",
    "summary.json",
    "requests.jsonl",
    "requests.csv",
    "report.html",
    "tics.json",
];

#[test]
fn secrets_never_reach_outputs_logs_or_errors() {
    const KEY: &str = "sk-reliability-key-7361";
    const HEADER: &str = "hdr-reliability-secret-9182";
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), 12, 10, 4);
    let out = tmp.path().join("run");
    let tics = out.join("tics.json");
    let header = format!("X-Api-Key: {HEADER}");
    let output = run(sim_replay(&trace, &out)
        .args(["-vv", "--header", &header, "--save-tics"])
        .arg(&tics)
        // Failures put error texts into the records; calibration adds its own requests.
        .args([
            "--sim-fault",
            "status:401,every=3",
            "--sim-fault",
            "error:1,every=5",
        ])
        .args(["--max-failed-ratio", "0"])
        .env("OPENAI_API_KEY", KEY));
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(read_records(&out).iter().any(|r| r.error.is_some()));
    assert_no_secret(&output, &out, &[KEY, HEADER], &OUTPUT_FILES);

    // The same at the most verbose level of every crate (reqwest, hyper included).
    let out = tmp.path().join("run-trace");
    let output = run(sim_replay(&trace, &out)
        .args(["--header", &header])
        .env("RUST_LOG", "trace")
        .env("OPENAI_API_KEY", KEY));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_no_secret(&output, &out, &[KEY, HEADER], &OUTPUT_FILES[..5]);
}

#[test]
fn password_in_the_base_url_is_never_written() {
    const PASSWORD: &str = "pw-reliability-4410";
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), 3, 10, 4);
    let url = closed_port_url().replace("http://", &format!("http://bench:{PASSWORD}@"));

    // Connection errors land in every record and the URL in run.json and the reports.
    let out = tmp.path().join("run");
    let output = run(url_replay(&url, &trace, &out).arg("-vv"));
    // Every request failed to connect: exit 1 without --max-failed-ratio.
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_no_secret(&output, &out, &[PASSWORD], &OUTPUT_FILES[..5]);
    let run_json = read_json(&out.join("run.json"));
    assert!(
        run_json["base_url"]
            .as_str()
            .unwrap_or_default()
            .contains("bench:***@")
    );
    // Credentials in the URL take reqwest (which sends them), and run.json says so.
    assert_eq!(run_json["config"]["http_client"], "direct");
    assert_eq!(run_json["config"]["http_client_used"], "reqwest");
    assert!(run_json.get("connections").is_none(), "{run_json}");

    // Without --model the model lookup fails, and its error names the URL.
    let out = tmp.path().join("run-models");
    let mut cmd = Command::new(common::bin());
    cmd.args(["replay", "--base-url", &url, "--no-progress", "--trace"])
        .arg(&trace)
        .arg("--output")
        .arg(&out);
    let output = run(&mut cmd);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("bench:***@"),
        "{}",
        text(&output.stderr)
    );
    assert_no_secret(&output, &out, &[PASSWORD], &[]);
}

#[test]
fn bad_header_value_error_does_not_echo_the_value() {
    let tmp = tempdir();
    let trace = write_trace(tmp.path(), 1, 10, 4);
    let out = tmp.path().join("run");
    let output = run(url_replay(&closed_port_url(), &trace, &out)
        .args(["--header", "X-Api-Key: sk-bad\u{7f}-secret-3301"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("X-Api-Key") && !stderr.contains("secret-3301"),
        "{stderr}"
    );
}

#[test]
fn sim_command_binds_loopback_by_default() {
    use std::io::{BufRead, BufReader};

    let mut child = Command::new(common::bin())
        .args(["sim", "--port", "0", "--timing", "fixed", "--no-tokenize"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.unwrap_or_default();
    assert!(line.contains("http://127.0.0.1:"), "{line:?}");
}

#[test]
fn error_causes_are_printed_once() {
    // Regression: thiserror messages holding `{source}` had their cause printed twice by
    // the error chain (`unexpected end of file: unexpected end of file`).
    let tmp = tempdir();
    let gz = tmp.path().join("cut.jsonl.gz");
    std::fs::write(&gz, b"\x1f\x8b\x08\x00\x00\x00").unwrap_or_else(|e| panic!("{e}"));
    let missing = tmp.path().join("no-such-run");
    let cases: [(Vec<&std::ffi::OsStr>, &str); 2] = [
        (
            vec!["trace".as_ref(), "stats".as_ref(), gz.as_os_str()],
            "unexpected end of file",
        ),
        (
            vec!["report".as_ref(), missing.as_os_str()],
            "No such file or directory",
        ),
    ];
    for (args, cause) in cases {
        let output = run(Command::new(common::bin()).args(&args));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
    }
}

/// A `tracebench sim` process in fixed timing serving model `m`, stopped (SIGINT) on drop.
struct SimProcess {
    child: std::process::Child,
    url: String,
}

impl SimProcess {
    fn start(ttft_ms: &str, itl_ms: &str) -> Self {
        use std::io::{BufRead, BufReader};

        let mut child = Command::new(common::bin())
            .args(["sim", "--port", "0", "--timing", "fixed", "--no-tokenize"])
            .args(["--ttft-ms", ttft_ms, "--itl-ms", itl_ms, "--model", "m"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let line = lines
            .find(|l| l.contains("listening on"))
            .unwrap_or_default();
        // Keep draining its stderr so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let url = line.split_whitespace().find(|w| w.starts_with("http://"));
        let url = url
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Self { child, url }
    }

    /// Peak resident memory so far, KiB (Linux `VmHWM`).
    fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        // The process may have exited already (a test stopped it): no assertion here.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let _ = self.child.wait();
    }
}

#[test]
fn sim_command_stops_gracefully_on_sigterm() {
    // Regression: only Ctrl-C was handled; SIGTERM killed the process outright.
    let mut sim = SimProcess::start("10", "1");
    signal(&sim.child, "-TERM");
    let status = sim.child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status:?}");
}

/// Streams opened at one instant by the always-run load test (scripts/load_10k.sh does
/// 10,000).
const LOAD_STREAMS: usize = 2000;

#[test]
fn two_thousand_concurrent_streams_against_a_sim_process_all_finish() {
    // Each stream lasts 1 s + 19 × 100 ms: all of them are open together.
    let sim = SimProcess::start("1000", "100");
    let tmp = tempdir();
    let path = tmp.path().join("trace.jsonl");
    let line = "{\"timestamp\": 0, \"input_length\": 16, \"output_length\": 20}\n";
    std::fs::write(&path, line.repeat(LOAD_STREAMS)).unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("run");
    let output = run(url_replay(&sim.url, &path, &out).args(["--prompt", "random"]));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));

    let summary = read_json(&out.join("summary.json"));
    assert_eq!(
        summary["summary"]["completed"], LOAD_STREAMS,
        "{}",
        summary["summary"]
    );
    let peak = summary["max_concurrent_requests"]
        .as_u64()
        .unwrap_or_default();
    assert!(
        peak >= LOAD_STREAMS as u64 / 2,
        "only {peak} streams overlapped"
    );
    let records = read_records(&out);
    assert!(records.iter().all(|r| r.completion_tokens == Some(20)));
    eprintln!(
        "sim peak RSS: {:?} KiB, peak concurrency {peak}",
        sim.peak_rss_kib()
    );
}

/// A server that accepts connections and never answers; the listener lives as long as the
/// returned handle.
fn silent_server() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    (listener, format!("http://{addr}/v1"))
}

#[test]
fn a_server_that_never_answers_the_model_list_fails_within_the_timeout() {
    let dir = tempdir();
    let trace = write_trace(dir.path(), 3, 10, 4);
    let (_listener, url) = silent_server();
    let out = dir.path().join("run");
    let output = run(Command::new(common::bin())
        .args([
            "replay",
            "--base-url",
            &url,
            "--timeout",
            "1",
            "--no-progress",
        ])
        .arg("--trace")
        .arg(&trace)
        .arg("--output")
        .arg(&out));

    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("did not answer GET /v1/models within 1s"),
        "{stderr}"
    );
    assert!(
        !out.exists(),
        "nothing was sent, so no run directory is left"
    );
}

#[test]
fn ctrl_c_while_the_server_is_asked_about_itself_exits_130_and_leaves_nothing() {
    let dir = tempdir();
    let trace = write_trace(dir.path(), 3, 10, 4);
    let (_listener, url) = silent_server();
    let out = dir.path().join("run");
    let child = Command::new(common::bin())
        .args(["replay", "--base-url", &url, "--no-progress", "--trace"])
        .arg(&trace)
        .arg("--output")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // The model lookup waits on the silent server (up to a minute) when the signal comes.
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "-INT");

    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted before the first request"),
        "{stderr}"
    );
    assert!(
        !out.exists(),
        "nothing was sent, so no run directory is left"
    );
}

#[test]
fn absurd_token_counts_and_a_zero_block_size_are_input_errors() {
    let dir = tempdir();
    let trace = dir.path().join("big.jsonl");
    let lines = "{\"timestamp\": 0, \"input_length\": 100, \"output_length\": 5}\n\
                 {\"timestamp\": 1, \"input_length\": 4000000000, \"output_length\": 5}\n";
    std::fs::write(&trace, lines).unwrap_or_else(|e| panic!("{e}"));

    let output = run(Command::new(common::bin())
        .args(["trace", "stats"])
        .arg(&trace));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("big.jsonl:2: input_length: too large (4000000000 > 16777216 tokens)"),
        "{stderr}"
    );

    let small = write_trace(dir.path(), 2, 10, 4);
    let output = run(Command::new(common::bin())
        .args(["trace", "stats", "--block-size", "0"])
        .arg(&small));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("--block-size"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let dir = tempdir();
    let trace = write_trace(dir.path(), 2, 10, 4);
    // `true` exits at once; tracebench starts writing to a pipe nobody reads.
    let script = format!(
        "(sleep 0.3; exec '{}' trace stats '{}' --json) | true; echo \"exit ${{PIPESTATUS[0]}}\"",
        common::bin().display(),
        trace.display()
    );
    let output = run(Command::new("bash").args(["-c", &script]));
    let stderr = text(&output.stderr);
    assert_eq!(text(&output.stdout).trim(), "exit 141", "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
