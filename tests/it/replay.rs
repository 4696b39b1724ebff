//! The replay engine end to end: sessions against a slow server (issue 11), the command
//! line against the in-process simulator, interruption by SIGINT and SIGTERM (issue 10
//! part 4), an unwritable output directory, and the API key never written anywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracebench::cli::trace_input::TraceInputArgs;
use tracebench::client::{Api, ApiKey, ChunkClock, Client, ClientConfig, Endpoint, HttpClient};
use tracebench::replay::prompts::FillerPrompts;
use tracebench::replay::{
    DispatchInput, DispatchOptions, Outcome, Pacer, RequestRecord, RunSetup, execute, execute_on,
};
use tracebench::report::{GoodputSlo, RunInfo, SCHEMA_VERSION};
use tracebench::schedule::{self, Arrivals, PlanOptions, SessionMode};

use crate::common;
use crate::sse_server::{Script, done, finish, serve, token};

/// A server that takes 300 ms before its response head, then streams 4 tokens.
fn slow_script() -> Script {
    let mut script = Script::sse(vec![token("a"), token("b"), token("c"), token("d")]);
    script.steps.extend([finish(), done()]);
    script.head_delay = Duration::from_millis(300);
    script
}

fn client(url: &str) -> Client {
    let config = ClientConfig {
        endpoint: Endpoint::parse(url).unwrap_or_else(|e| panic!("{e}")),
        api: Api::Chat,
        model: "m".into(),
        headers: vec![],
        api_key: ApiKey::default(),
        extra_body: None,
        connect_timeout: Duration::from_secs(2),
        first_token_timeout: None,
        total_timeout: Some(Duration::from_secs(20)),
        max_event_bytes: 1 << 20,
        http_client: HttpClient::Direct,
        chunk_clock: ChunkClock::Kernel,
    };
    Client::new(config).unwrap_or_else(|e| panic!("{e}"))
}

fn run_info() -> RunInfo {
    RunInfo {
        schema_version: SCHEMA_VERSION,
        tracebench_version: "test".into(),
        started_at: "now".into(),
        trace: "fixture".into(),
        base_url: "raw".into(),
        model: "m".into(),
        tokenizer: "none".into(),
        prompt_mode: "filler".into(),
        seed: 0,
        goodput: GoodputSlo::default(),
        max_concurrency: None,
        calibration: None,
        config: serde_json::Value::Null,
        connections: None,
    }
}

/// Replays a fixture through the library against `url`.
async fn replay_fixture(fixture: &str, url: &str, sessions: SessionMode) -> Vec<RequestRecord> {
    let path = common::fixture(fixture);
    let (records, partial) = replay_file(&path, url, sessions, None, None).await;
    assert!(!partial);
    records
}

/// Replays the trace at `path` against `url` with `threads` client threads (default: one
/// per core), stopped after `stop_after` if given; the records and whether it was partial.
async fn replay_file(
    path: &Path,
    url: &str,
    sessions: SessionMode,
    threads: Option<usize>,
    stop_after: Option<Duration>,
) -> (Vec<RequestRecord>, bool) {
    let how = How {
        sessions,
        threads,
        stop_after,
        warm_connections: None,
    };
    replay_with(path, Arc::new(client(url)), how).await
}

/// How [`replay_with`] replays.
pub(crate) struct How {
    pub sessions: SessionMode,
    pub threads: Option<usize>,
    pub stop_after: Option<Duration>,
    pub warm_connections: Option<usize>,
}

/// Replays the trace at `path` through `client` with filler prompts; the records and
/// whether the run was partial.
pub(crate) async fn replay_with(
    path: &Path,
    client: Arc<Client>,
    how: How,
) -> (Vec<RequestRecord>, bool) {
    let prepared = TraceInputArgs::for_file(path.display().to_string()).load();
    let prepared = prepared.unwrap_or_else(|e| panic!("{e:#}"));
    let plan_options = PlanOptions {
        arrivals: Arrivals::Trace,
        sessions: how.sessions,
        max_think: Duration::from_secs(60),
        seed: 0,
    };
    let plan = schedule::plan(&prepared.records, &plan_options).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let setup = RunSetup {
        input: DispatchInput {
            plan: Arc::new(plan),
            records: prepared.records.into(),
            prompts: Arc::new(FillerPrompts::default()),
            transport: client,
            options: DispatchOptions {
                max_concurrency: None,
                lookahead: 8,
                grace: Duration::from_secs(1),
                lead_in: Duration::from_millis(20),
                pacer: Pacer::Precise,
                tokenizer: None,
                sessions_live: false,
                warm_connections: how.warm_connections,
            },
        },
        dir: dir.path().to_path_buf(),
        run_info: run_info(),
        progress: false,
    };
    let stop = CancellationToken::new();
    if let Some(after) = how.stop_after {
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            stopper.cancel();
        });
    }
    let result = match how.threads {
        None => execute(setup, stop).await,
        Some(n) => execute_on(setup, stop, Some(n)).await,
    };
    let result = result.unwrap_or_else(|e| panic!("{e}"));
    let lines = std::fs::read_to_string(dir.path().join("requests.jsonl")).unwrap_or_default();
    assert_eq!(lines.lines().count(), result.records.len());
    (result.records, result.partial)
}

pub(crate) fn write_bursts(dir: &Path, sizes: &[usize], gap_ms: u64) -> PathBuf {
    let path = dir.join("bursts.jsonl");
    let mut lines = Vec::new();
    for (burst, size) in sizes.iter().enumerate() {
        for _ in 0..*size {
            let id = lines.len();
            let at = burst as u64 * gap_ms;
            lines.push(format!(
                r#"{{"timestamp": {at}, "input_length": 16, "output_length": 4, "hash_ids": [{id}]}}"#
            ));
        }
    }
    std::fs::write(&path, lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    path
}

#[tokio::test]
async fn replay_on_one_thread_sends_each_burst_in_plan_order_after_its_deadline() {
    let url = serve(slow_script()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let trace = write_bursts(dir.path(), &[6, 1, 9], 150);
    for threads in [1, 2] {
        let (out, partial) =
            replay_file(&trace, &url, SessionMode::Ignore, Some(threads), None).await;
        assert!(!partial);
        assert_eq!(out.len(), 16, "{threads} threads");
        assert!(out.iter().all(|r| r.outcome == Outcome::Ok), "{out:?}");
        // Never early, and the burst at 0.3 s is not sent before its instant.
        assert!(
            out.iter().all(|r| sent(r) >= r.scheduled_s),
            "{threads} threads"
        );
        assert!(out[7..].iter().all(|r| sent(r) >= 0.3), "{threads} threads");
        if threads == 1 {
            // One thread sends a burst back to back in plan order.
            let sends: Vec<f64> = out.iter().map(sent).collect();
            assert!(sends.windows(2).all(|w| w[0] <= w[1]), "{sends:?}");
        }
    }
}

#[tokio::test]
async fn replay_on_one_thread_gates_sessions_as_on_many() {
    let url = serve(slow_script()).await;
    let path = common::fixture("replay/sessions_chain.jsonl");
    let (out, partial) = replay_file(&path, &url, SessionMode::Gate, Some(1), None).await;
    assert!(!partial);
    assert!(out.iter().all(|r| r.outcome == Outcome::Ok), "{out:?}");
    assert!(sent(&out[1]) >= end(&out[0]) && sent(&out[2]) >= end(&out[1]));
}

#[tokio::test]
async fn replay_on_one_thread_stops_skipping_what_was_not_sent() {
    let url = serve(slow_script()).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Bursts at 0, 0.2, 2.0 and 2.2 s; stopped at 0.6 s, with 1 s of grace.
    let trace = write_bursts(dir.path(), &[2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1], 200);
    let stop = Some(Duration::from_millis(600));
    let (out, partial) = replay_file(&trace, &url, SessionMode::Ignore, Some(1), stop).await;
    assert!(partial);
    let outcomes: Vec<Outcome> = out.iter().map(|r| r.outcome).collect();
    use Outcome::{Ok, Skipped};
    assert_eq!(outcomes, vec![Ok, Ok, Ok, Skipped, Skipped]);
}

fn sent(r: &RequestRecord) -> f64 {
    r.sent_s.unwrap_or(f64::NAN)
}

fn end(r: &RequestRecord) -> f64 {
    r.end_s.unwrap_or(f64::NAN)
}

#[tokio::test]
async fn replay_gate_delays_turns_two_and_three_until_their_parent_finished() {
    let url = serve(slow_script()).await;
    let out = replay_fixture("replay/sessions_chain.jsonl", &url, SessionMode::Gate).await;
    assert!(out.iter().all(|r| r.outcome == Outcome::Ok), "{out:?}");
    // Each turn waits for the 300 ms answer of the one before: 0, ≥ 0.3, ≥ 0.6 s.
    assert!(sent(&out[1]) >= end(&out[0]) && sent(&out[2]) >= end(&out[1]));
    assert!(sent(&out[2]) >= 0.6);
    // Turn 2 was due at 0.1 s and waited ≥ 200 ms; turn 3, due at 0.2 s, ≥ 400 ms.
    let waits: Vec<f64> = out.iter().filter_map(|r| r.session_wait_ms).collect();
    assert_eq!(waits.len(), 2);
    assert!(waits[0] >= 195.0 && waits[1] >= 395.0, "{waits:?}");
}

#[tokio::test]
async fn replay_ignore_sends_every_turn_at_its_own_time() {
    let url = serve(slow_script()).await;
    let out = replay_fixture("replay/sessions_chain.jsonl", &url, SessionMode::Ignore).await;
    assert!(out.iter().all(|r| r.outcome == Outcome::Ok));
    assert!(sent(&out[1]) < end(&out[0]) && sent(&out[2]) < end(&out[1]));
    assert!(out.iter().all(|r| r.session_wait_ms.is_none()));
}

#[tokio::test]
async fn replay_gate_two_children_of_one_parent_and_a_missing_parent() {
    let url = serve(slow_script()).await;
    let out = replay_fixture("replay/sessions_tree.jsonl", &url, SessionMode::Gate).await;
    assert!(out.iter().all(|r| r.outcome == Outcome::Ok));
    assert!(sent(&out[1]) >= end(&out[0]) && sent(&out[2]) >= end(&out[0]));
    // The child whose parent is not in the trace goes at its own time (0.15 s), unwaited.
    assert!(sent(&out[3]) < end(&out[0]));
    assert_eq!(out[3].session_wait_ms, None);
}

#[test]
fn replay_command_line_is_well_formed() {
    use clap::CommandFactory;
    tracebench::cli::Cli::command().debug_assert();
}

/// A Mooncake-format trace of `n` records every `gap_ms`, alternating short and long
/// outputs.
fn write_trace(dir: &Path, n: usize, gap_ms: u64) -> PathBuf {
    let path = dir.join("trace.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let output = if i % 2 == 0 { 4 } else { 200 };
            format!(
                r#"{{"timestamp": {}, "input_length": 32, "output_length": {output}, "hash_ids": [{i}]}}"#,
                i as u64 * gap_ms
            )
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    path
}

fn sim_replay(trace: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(common::bin());
    cmd.args([
        "replay",
        "--sim",
        "--sim-timing",
        "fixed",
        "--sim-ttft-ms",
        "20",
    ])
    .args([
        "--sim-itl-ms",
        "20",
        "--grace",
        "0.3",
        "--no-progress",
        "--trace",
    ])
    .arg(trace)
    .arg("--output")
    .arg(out);
    cmd
}

fn read_records(dir: &Path) -> Vec<RequestRecord> {
    let text = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "last line is incomplete"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("summary.json: {e}"))
}

/// Waits (at most 60 s, startup included) until `path` holds `lines` lines.
fn wait_for_lines(path: &Path, lines: usize) {
    for _ in 0..600 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} never reached {lines} lines", path.display());
}

/// Starts a replay of 40 requests over 4 s, signals it once 3 have finished, and checks
/// what it left.
fn interrupt_with(signal: &str) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let trace = write_trace(tmp.path(), 40, 100);
    let out = tmp.path().join("run");
    let child = sim_replay(&trace, &out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_lines(&out.join("requests.jsonl"), 3);
    let killed = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let records = read_records(&out);
    assert_eq!(records.len(), 40, "every plan entry is recorded once");
    let count = |o: Outcome| records.iter().filter(|r| r.outcome == o).count();
    assert!(
        count(Outcome::Ok) >= 3,
        "short requests finished before the signal"
    );
    assert!(
        count(Outcome::Skipped) >= 10,
        "requests after the signal were not sent"
    );
    assert!(
        count(Outcome::Cancelled) >= 1,
        "long requests were cancelled after the grace"
    );
    assert_eq!(summary(&out)["partial"], serde_json::Value::Bool(true));
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn replay_sigint_mid_run_keeps_complete_lines_and_a_partial_summary() {
    interrupt_with("-INT");
}

#[test]
fn replay_sigterm_mid_run_keeps_complete_lines_and_a_partial_summary() {
    interrupt_with("-TERM");
}

#[test]
fn replay_completed_run_writes_every_file_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let trace = write_trace(tmp.path(), 6, 20);
    let out = tmp.path().join("run");
    let output = sim_replay(&trace, &out)
        .args(["--max-output-tokens", "8"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for file in ["run.json", "requests.jsonl", "summary.json", "report.html"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let records = read_records(&out);
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r.outcome == Outcome::Ok));
    assert_eq!(summary(&out)["partial"], serde_json::Value::Bool(false));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Serving Benchmark Result"), "{stdout}");
}

#[test]
fn replay_unwritable_output_fails_before_sending_anything() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let trace = write_trace(tmp.path(), 3, 10);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap_or_else(|e| panic!("{e}"));

    let output = Command::new(common::bin())
        .args([
            "replay",
            "--no-progress",
            "--model",
            "m",
            "--base-url",
            &url,
            "--trace",
        ])
        .arg(&trace)
        .arg("--output")
        .arg(blocker.join("run"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--output"), "{}", stderr(&output));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(listener.accept().is_err(), "a connection was made");
}

#[test]
fn replay_api_key_is_never_written_or_logged() {
    const KEY: &str = "sk-tracebench-secret-4242";
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let trace = write_trace(tmp.path(), 4, 10);
    let out = tmp.path().join("run");
    let output = sim_replay(&trace, &out)
        .args(["--max-output-tokens", "4", "-vv"])
        .env("OPENAI_API_KEY", KEY)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!String::from_utf8_lossy(&output.stdout).contains(KEY));
    assert!(!stderr(&output).contains(KEY));
    for entry in std::fs::read_dir(&out).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !text.contains(KEY),
            "{} holds the key",
            entry.path().display()
        );
    }
}

#[test]
fn sweep_saves_each_run_in_its_own_directory_and_writes_the_table() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let trace = write_trace(tmp.path(), 4, 50);
    let out = tmp.path().join("sweep");
    let output = Command::new(common::bin())
        .args([
            "sweep",
            "--sim",
            "--sim-timing",
            "fixed",
            "--sim-ttft-ms",
            "5",
        ])
        .args([
            "--sim-itl-ms",
            "1",
            "--no-progress",
            "--max-output-tokens",
            "4",
        ])
        .args(["--time-scales", "1,0.5", "--trace"])
        .arg(&trace)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    for run in ["time-scale-1", "time-scale-0.5"] {
        assert_eq!(read_records(&out.join(run)).len(), 4, "{run}");
        assert_eq!(
            summary(&out.join(run))["partial"],
            serde_json::Value::Bool(false)
        );
    }
    assert!(out.join("sweep.html").is_file());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rows: Vec<&str> = stdout
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("scale "))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].starts_with("scale 1 ") && rows[1].starts_with("scale 0.5 "));
}

#[test]
fn sweep_refuses_a_fixed_time_scale() {
    let output = Command::new(common::bin())
        .args(["sweep", "--sim", "--trace", "x.jsonl", "--time-scale", "2"])
        .args(["--time-scales", "1,2"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--time-scales"),
        "{}",
        stderr(&output)
    );
}

/// `--sessions-live` (issue 11, its optional part): a child's prompt carries its parent's
/// generated text, still of the child's exact length, against the simulator.
mod sessions_live {
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;
    use tracebench::cli::trace_input::TraceInputArgs;
    use tracebench::client::PromptBody;
    use tracebench::client::{
        Api, ApiKey, ChunkClock, Client, ClientConfig, Endpoint, Exchange, HttpClient, Tag,
    };
    use tracebench::prompt::{PromptBuilder, PromptMode, load_tokenizer};
    use tracebench::replay::prompts::BuilderPrompts;
    use tracebench::replay::{
        DispatchInput, DispatchOptions, Outcome, Pacer, RequestRecord, RunSetup, Transport, execute,
    };
    use tracebench::schedule::{self, Arrivals, PlanOptions, SessionMode};
    use tracebench::sim::{self, FaultRule, SimConfig, SimHandle, TimingMode};

    use super::{read_records, run_info, stderr};

    /// Output tokens of every turn.
    const OUTPUT: usize = 8;

    /// The client, keeping every request body it sends by request id.
    struct Recording {
        client: Client,
        bodies: Mutex<Vec<(String, String)>>,
    }

    impl Transport for Recording {
        type Request = bytes::Bytes;

        fn prepare(&self, prompt: PromptBody, max_tokens: u32) -> bytes::Bytes {
            self.client.prepare(prompt, max_tokens)
        }

        async fn exchange(
            &self,
            request: bytes::Bytes,
            tag: Tag,
            cancel: CancellationToken,
        ) -> Exchange {
            let id = tag.request_id.clone().unwrap_or_default();
            let body = String::from_utf8_lossy(&request).into_owned();
            if let Ok(mut bodies) = self.bodies.lock() {
                bodies.push((id, body));
            }
            self.client.exchange(request, tag, cancel).await
        }
    }

    impl Recording {
        /// The body of plan entry `index`.
        fn body(&self, index: usize) -> String {
            let id = format!("tracebench-{index}");
            let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
            let found = bodies.iter().find(|(i, _)| *i == id);
            found.map(|(_, b)| b.clone()).unwrap_or_default()
        }
    }

    /// Writes Bailian-format `lines` (chat id, parent, timestamp s, input length, hash ids).
    fn write_bailian(dir: &Path, lines: &[(i64, i64, f64, u32, &[u64])]) -> PathBuf {
        let path = dir.join("trace.jsonl");
        let text: String = lines
            .iter()
            .map(|(chat, parent, at, input, ids)| {
                format!(
                    r#"{{"chat_id": {chat}, "parent_chat_id": {parent}, "timestamp": {at}, "input_length": {input}, "output_length": {OUTPUT}, "type": "text", "turn": 1, "hash_ids": {ids:?}}}"#
                ) + "\n"
            })
            .collect();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// A chain of three turns, each extending its parent's blocks.
    fn chain(dir: &Path) -> PathBuf {
        write_bailian(
            dir,
            &[
                (1, -1, 0.0, 40, &[1, 2, 3]),
                (2, 1, 0.05, 70, &[1, 2, 4, 5, 6]),
                (3, 2, 0.1, 100, &[1, 2, 4, 5, 7, 8, 9]),
            ],
        )
    }

    fn simulator(faults: &[&str]) -> SimHandle {
        let config = SimConfig {
            timing: TimingMode::Fixed,
            ttft: Duration::from_millis(20),
            itl: Duration::from_millis(2),
            tokenizer: Some(load_tokenizer("o200k_base").unwrap_or_else(|e| panic!("{e}"))),
            faults: faults
                .iter()
                .map(|f| f.parse::<FaultRule>().unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            ..SimConfig::default()
        };
        sim::spawn(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Plain completions (no chat template): the simulator's `prompt_tokens` is the
    /// prompt's own token count.
    fn completions_client(sim: &SimHandle) -> Client {
        let config = ClientConfig {
            endpoint: Endpoint::parse(&sim.base_url()).unwrap_or_else(|e| panic!("{e}")),
            api: Api::Completions,
            model: sim.state().config().model_id.clone(),
            headers: vec![],
            api_key: ApiKey::default(),
            extra_body: None,
            connect_timeout: Duration::from_secs(2),
            first_token_timeout: None,
            total_timeout: Some(Duration::from_secs(20)),
            max_event_bytes: 1 << 20,
            http_client: HttpClient::Direct,
            chunk_clock: ChunkClock::Kernel,
        };
        Client::new(config).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Replays `path` with `--sessions gate --sessions-live` and blocks prompts against
    /// `sim`; the records in plan order and the client that kept the bodies.
    async fn replay_live(path: &Path, sim: &SimHandle) -> (Vec<RequestRecord>, Arc<Recording>) {
        let prepared = TraceInputArgs::for_file(path.display().to_string()).load();
        let prepared = prepared.unwrap_or_else(|e| panic!("{e:#}"));
        let plan_options = PlanOptions {
            arrivals: Arrivals::Trace,
            sessions: SessionMode::Gate,
            max_think: Duration::from_secs(60),
            seed: 0,
        };
        let plan = schedule::plan(&prepared.records, &plan_options);
        let plan = plan.unwrap_or_else(|e| panic!("{e}"));
        let tokenizer = load_tokenizer("o200k_base").unwrap_or_else(|e| panic!("{e}"));
        let builder =
            PromptBuilder::new(PromptMode::Blocks, tokenizer.clone(), 0, &prepared.records);
        let builder = builder.unwrap_or_else(|e| panic!("{e}"));
        let transport = Arc::new(Recording {
            client: completions_client(sim),
            bodies: Mutex::new(Vec::new()),
        });
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let setup = RunSetup {
            input: DispatchInput {
                plan: Arc::new(plan),
                records: prepared.records.into(),
                prompts: Arc::new(BuilderPrompts {
                    builder,
                    overhead_tokens: 0,
                }),
                transport: transport.clone(),
                options: DispatchOptions {
                    max_concurrency: None,
                    lookahead: 8,
                    grace: Duration::from_secs(1),
                    lead_in: Duration::from_millis(20),
                    pacer: Pacer::Precise,
                    tokenizer: Some(tokenizer),
                    sessions_live: true,
                    warm_connections: None,
                },
            },
            dir: dir.path().to_path_buf(),
            run_info: run_info(),
            progress: false,
        };
        let result = execute(setup, CancellationToken::new()).await;
        let mut records = result.unwrap_or_else(|e| panic!("{e}")).records;
        records.sort_by_key(|r| r.index);
        (records, transport)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_turn_carries_its_parents_output_at_its_exact_length() {
        let sim = simulator(&[]);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (out, bodies) = replay_live(&chain(dir.path()), &sim).await;

        let generated = sim.state().word().repeat(OUTPUT);
        let live: Vec<_> = out.iter().map(|r| r.live_tokens).collect();
        assert_eq!(live, vec![None, Some(OUTPUT as u32), Some(OUTPUT as u32)]);
        for r in &out {
            assert_eq!(r.outcome, Outcome::Ok, "{r:?}");
            assert_eq!(r.prompt_tokens, Some(r.input_tokens), "{r:?}");
        }
        assert!(!bodies.body(0).contains(&generated), "{}", bodies.body(0));
        for child in [1, 2] {
            assert!(
                bodies.body(child).contains(&generated),
                "{}",
                bodies.body(child)
            );
        }
        let _ = sim.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_parent_leaves_its_child_built_the_usual_way() {
        // Request 2 (the parent) fails after two tokens of text; its child is request 3.
        let sim = simulator(&["error:2,every=2"]);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let trace = write_bailian(
            dir.path(),
            &[
                (1, -1, 0.0, 40, &[1, 2, 3]),
                (2, -1, 0.05, 40, &[11, 12, 13]),
                (3, 2, 0.1, 70, &[11, 12, 14, 15, 16]),
            ],
        );
        let (out, bodies) = replay_live(&trace, &sim).await;

        assert_eq!(out[1].outcome, Outcome::InBand, "{:?}", out[1]);
        let child = &out[2];
        assert!(child.parent_failed, "{child:?}");
        assert_eq!((child.outcome, child.live_tokens), (Outcome::Ok, None));
        assert_eq!(child.prompt_tokens, Some(70));
        let partial = sim.state().word().repeat(2);
        assert!(!bodies.body(2).contains(&partial), "{}", bodies.body(2));
        let _ = sim.shutdown().await;
    }

    #[test]
    fn the_command_line_records_live_tokens_per_child_under_gate_and_think() {
        for mode in ["gate", "think"] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let out = dir.path().join("run");
            let output = super::sim_replay(&chain(dir.path()), &out)
                .args(["--sessions", mode, "--sessions-live"])
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
            assert!(
                stderr(&output).contains("2 follow-up turns carried their parent's output, 0"),
                "{}",
                stderr(&output)
            );

            let records = read_records(&out);
            let live: Vec<_> = records.iter().map(|r| (r.index, r.live_tokens)).collect();
            assert_eq!(live, vec![(0, None), (1, Some(8)), (2, Some(8))], "{mode}");
            // The simulator counts the chat template too; calibration took it out.
            for r in &records {
                assert_eq!(r.prompt_tokens, Some(r.input_tokens), "{mode}: {r:?}");
            }
        }
    }

    #[test]
    fn sessions_live_is_refused_with_sessions_ignore_and_without_sessions() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("run");
        let output = super::sim_replay(&chain(dir.path()), &out)
            .args(["--sessions", "ignore", "--sessions-live"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(output.status.code(), Some(2));
        assert!(
            stderr(&output).contains("--sessions-live needs --sessions gate or think"),
            "{}",
            stderr(&output)
        );
        assert!(!out.join("requests.jsonl").exists());

        let plain = super::write_trace(dir.path(), 2, 10);
        let output = super::sim_replay(&plain, &out)
            .arg("--sessions-live")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("the trace has no sessions"),
            "{}",
            stderr(&output)
        );
    }
}
