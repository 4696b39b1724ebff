//! `trace fetch` against a local HTTP server on 127.0.0.1: a complete download, one cut
//! off mid-body then resumed with a range request (or restarted by a server that ignores
//! ranges), a checksum mismatch, an unknown name, and `--trace NAME` fetching on first use.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tracebench::cli::trace_input::TraceInputArgs;
use tracebench::tracetools::catalog;
use tracebench::tracetools::fetch::{self, FetchError, FetchOptions};

use crate::common;

/// What the test server holds and does.
#[derive(Default)]
struct ServerState {
    files: HashMap<String, Vec<u8>>,
    /// Cut the next response's body after this many bytes.
    cut_next_at: Option<usize>,
    /// Serve `Range` requests with 206 (else ignore them and send the whole file).
    honour_ranges: bool,
    /// The `Range` header of every request, in order.
    ranges_seen: Vec<Option<String>>,
}

type Shared = Arc<Mutex<ServerState>>;

/// Starts the server on a thread of its own; returns its base URL.
fn start_server(state: Shared) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new()
                .route("/{file}", axum::routing::get(serve))
                .with_state(state);
            let _ = axum::serve(listener, app).await;
        });
    });
    format!("http://{addr}")
}

async fn serve(
    UrlPath(file): UrlPath<String>,
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut state = state.lock().expect("lock");
    state.ranges_seen.push(range.clone());
    let Some(body) = state.files.get(&file).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };

    let start = range.filter(|_| state.honour_ranges).and_then(|r| {
        r.strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse::<usize>()
            .ok()
    });
    let (status, slice) = match start {
        Some(start) if start < body.len() => (StatusCode::PARTIAL_CONTENT, body[start..].to_vec()),
        Some(_) => return StatusCode::RANGE_NOT_SATISFIABLE.into_response(),
        None => (StatusCode::OK, body),
    };
    let length = slice.len();
    let body = match state.cut_next_at.take() {
        Some(cut) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                Ok(Bytes::from(slice[..cut].to_vec())),
                Err(std::io::Error::other("connection cut by the test")),
            ];
            // A pause before each chunk lets the first one reach the client before the cut.
            let paced =
                futures::StreamExt::then(futures::stream::iter(chunks), |chunk| async move {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    chunk
                });
            Body::from_stream(paced)
        }
        None => Body::from(slice),
    };
    (status, [(header::CONTENT_LENGTH, length.to_string())], body).into_response()
}

fn state_with(file: &str, body: Vec<u8>) -> Shared {
    let mut state = ServerState {
        honour_ranges: true,
        ..ServerState::default()
    };
    state.files.insert(file.to_string(), body);
    Arc::new(Mutex::new(state))
}

fn options(dir: &Path, url: &str) -> FetchOptions {
    FetchOptions {
        cache_dir: Some(dir.to_path_buf()),
        base_url: Some(url.to_string()),
        quiet: true,
    }
}

/// A trace without a recorded checksum, large enough to be cut in the middle.
fn synthetic_body() -> Vec<u8> {
    let mut body = Vec::new();
    for i in 0..3000 {
        body.extend_from_slice(
            format!("{{\"timestamp\": {i}, \"input_length\": 600, \"output_length\": 3, \"hash_ids\": [{i}, 7]}}\n")
                .as_bytes(),
        );
    }
    body
}

const SYNTHETIC: &str = "mooncake-synthetic";

fn known(name: &str) -> &'static catalog::KnownTrace {
    catalog::find(name).expect("known trace")
}

#[test]
fn trace_fetch_complete_download_lands_in_the_cache() {
    let trace = known(SYNTHETIC);
    let body = synthetic_body();
    let state = state_with(trace.file_name, body.clone());
    let url = start_server(state);
    let dir = tempfile::tempdir().expect("tempdir");

    let path = fetch::fetch(trace, &options(dir.path(), &url)).expect("fetches");
    assert_eq!(path, dir.path().join(trace.file_name));
    assert_eq!(std::fs::read(&path).expect("cached"), body);
    assert!(!fetch::part_path(&path).exists());
}

#[test]
fn trace_fetch_interrupted_download_resumes_with_a_range_request() {
    let trace = known(SYNTHETIC);
    let body = synthetic_body();
    let state = state_with(trace.file_name, body.clone());
    state.lock().expect("lock").cut_next_at = Some(body.len() / 3);
    let url = start_server(state.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path(), &url);

    let err = fetch::fetch(trace, &opts).expect_err("cut off");
    assert!(
        matches!(
            err,
            FetchError::Network { .. } | FetchError::Incomplete { .. }
        ),
        "{err}"
    );
    let dest = dir.path().join(trace.file_name);
    assert!(
        !dest.exists(),
        "a half file must never be taken for a whole one"
    );
    let part_len = std::fs::metadata(fetch::part_path(&dest))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(part_len > 0 && part_len < body.len() as u64, "{part_len}");

    let path = fetch::fetch(trace, &opts).expect("resumes");
    assert_eq!(std::fs::read(path).expect("cached"), body);
    let ranges = state.lock().expect("lock").ranges_seen.clone();
    assert_eq!(ranges, vec![None, Some(format!("bytes={part_len}-"))]);
}

#[test]
fn trace_fetch_restarts_when_the_server_ignores_ranges() {
    let trace = known(SYNTHETIC);
    let body = synthetic_body();
    let state = state_with(trace.file_name, body.clone());
    {
        let mut s = state.lock().expect("lock");
        s.cut_next_at = Some(body.len() / 2);
        s.honour_ranges = false;
    }
    let url = start_server(state);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path(), &url);

    assert!(fetch::fetch(trace, &opts).is_err());
    let path = fetch::fetch(trace, &opts).expect("restarts");
    assert_eq!(std::fs::read(path).expect("cached"), body);
}

#[test]
fn trace_fetch_rejects_a_checksum_mismatch() {
    let trace = known("mooncake-conversation");
    assert!(trace.sha256.is_some());
    let state = state_with(trace.file_name, b"{\"timestamp\": 0}\n".to_vec());
    let url = start_server(state);
    let dir = tempfile::tempdir().expect("tempdir");

    let err = fetch::fetch(trace, &options(dir.path(), &url)).expect_err("mismatch");
    let message = err.to_string();
    assert!(
        message.starts_with("mooncake-conversation: SHA-256 mismatch: expected b8cbb061"),
        "{message}"
    );
    let dest = dir.path().join(trace.file_name);
    assert!(!dest.exists() && !fetch::part_path(&dest).exists());
}

#[test]
fn trace_fetch_verifies_the_real_conversation_trace() {
    let Some(real) = common::shared_trace("mooncake_conversation_trace.jsonl") else {
        return;
    };
    let trace = known("mooncake-conversation");
    let state = state_with(trace.file_name, std::fs::read(real).expect("real trace"));
    let url = start_server(state);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fetch::fetch(trace, &options(dir.path(), &url)).expect("checksum matches");
    assert_eq!(
        fetch::sha256_file(&path).expect("hash"),
        trace.sha256.unwrap_or_default()
    );
}

#[test]
fn trace_fetch_http_error_is_reported_with_status() {
    let state = Arc::new(Mutex::new(ServerState::default()));
    let url = start_server(state);
    let dir = tempfile::tempdir().expect("tempdir");
    let err = fetch::fetch(known(SYNTHETIC), &options(dir.path(), &url)).expect_err("404");
    assert!(
        err.to_string()
            .ends_with("mooncake_synthetic_trace.jsonl: HTTP status 404"),
        "{err}"
    );
}

#[test]
fn trace_input_fetches_a_known_name_on_first_use() {
    let trace = known(SYNTHETIC);
    let state = state_with(trace.file_name, synthetic_body());
    let url = start_server(state.clone());
    let dir = tempfile::tempdir().expect("tempdir");

    let mut args = TraceInputArgs::for_file(SYNTHETIC);
    args.read.cache.trace_dir = Some(dir.path().to_path_buf());
    args.read.cache.trace_base_url = Some(url);
    args.limit = Some(10);
    let prepared = args.load().expect("fetches and loads");
    assert_eq!(prepared.records.len(), 10);
    assert_eq!(prepared.path, dir.path().join(trace.file_name));

    // Second use reads the cache: no new request.
    args.load().expect("loads from cache");
    assert_eq!(state.lock().expect("lock").ranges_seen.len(), 1);
}

#[test]
fn trace_fetch_cli_unknown_name_lists_known_ones_and_list_shows_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(common::bin())
        .args(["trace", "fetch", "mooncake-nope", "--trace-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mooncake-nope: not a known trace name (known: mooncake-conversation, mooncake-toolagent"), "{stderr}");

    std::fs::write(dir.path().join("azure_llm_2023_conv.csv"), "x").expect("write");
    let out = Command::new(common::bin())
        .args(["trace", "list", "--trace-dir"])
        .arg(dir.path())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let azure = stdout
        .lines()
        .find(|l| l.starts_with("azure-2023-conv"))
        .unwrap_or_default();
    assert!(azure.contains("cached"), "{stdout}");
    let qwen = stdout
        .lines()
        .find(|l| l.starts_with("qwen-bailian-a"))
        .unwrap_or_default();
    assert!(!qwen.contains("cached"), "{stdout}");
}

#[test]
fn trace_fetch_cli_takes_trace_base_url_and_the_older_base_url_alias() {
    let trace = known(SYNTHETIC);
    let body = synthetic_body();
    let url = start_server(state_with(trace.file_name, body.clone()));
    for flag in ["--trace-base-url", "--base-url"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new(common::bin())
            .args([
                "trace",
                "fetch",
                SYNTHETIC,
                "--quiet",
                flag,
                &url,
                "--trace-dir",
            ])
            .arg(dir.path())
            .env_remove("TRACEBENCH_TRACE_BASE_URL")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{flag}: {stderr}");
        let cached = std::fs::read(dir.path().join(trace.file_name)).unwrap_or_default();
        assert_eq!(cached, body, "{flag}");
    }
}

/// The help text of `flag` (its line and continuation lines) in `tracebench ARGS --help`.
fn help_of(args: &[&str], flag: &str) -> String {
    let out = Command::new(common::bin())
        .args(args)
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(flag));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{flag} not in {args:?} --help"));
    let rest = lines.take_while(|l| !l.trim_start().starts_with('-') && !l.trim().is_empty());
    std::iter::once(first)
        .chain(rest)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn trace_reading_flags_are_the_same_under_every_command() {
    let flags = [
        "--format",
        "--block-size",
        "--on-invalid",
        "--keep-failed",
        "--trace-dir",
        "--trace-base-url",
    ];
    let commands: [&[&str]; 5] = [
        &["trace", "stats"],
        &["trace", "convert"],
        &["replay"],
        &["prompts"],
        &["sweep"],
    ];
    for flag in flags {
        let reference = help_of(commands[0], flag);
        for command in &commands[1..] {
            assert_eq!(
                help_of(command, flag),
                reference,
                "{flag} under {command:?}"
            );
        }
    }
    // `trace fetch` names the download override like the others, the old name an alias.
    let fetch = help_of(&["trace", "fetch"], "--trace-base-url");
    assert!(fetch.contains("[alias: --base-url]"), "{fetch}");
}
