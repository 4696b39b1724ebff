//! SSE conformance of the streaming client: one test per case of issue 6 and issue 10
//! part 2, each against a raw server writing exact bytes with exact delays. Asserts the
//! outcome, the output count and TTFT/ITL within loose bounds (never tight timings).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracebench::client::{
    Api, ApiKey, ChunkClock, Client, ClientConfig, Endpoint, Exchange, HttpClient, PromptBody,
    StreamTimer,
};
use tracebench::replay::{Outcome, TimeoutKind, TokenSource};

use crate::sse_server::{Script, Step, data, done, finish, role, serve, sleep_ms, token};

fn config(base_url: &str) -> ClientConfig {
    ClientConfig {
        endpoint: Endpoint::parse(base_url).unwrap_or_else(|e| panic!("{e}")),
        api: Api::Chat,
        model: "m".into(),
        headers: vec![],
        api_key: ApiKey::default(),
        extra_body: None,
        connect_timeout: Duration::from_secs(2),
        first_token_timeout: Some(Duration::from_secs(5)),
        total_timeout: Some(Duration::from_secs(10)),
        max_event_bytes: 64 << 20,
        http_client: HttpClient::Direct,
        chunk_clock: ChunkClock::Kernel,
    }
}

async fn exchange_with(config: ClientConfig) -> Exchange {
    let client = Client::new(config).unwrap_or_else(|e| panic!("{e}"));
    let body = client.body(&PromptBody::Text("hello".into()), 4);
    client.stream(&body, &CancellationToken::new()).await
}

/// The exchange of `script` over the direct transport, after checking that reqwest reads
/// the same script the same way (outcome, text, chunks).
async fn exchange(script: Script) -> Exchange {
    let direct = exchange_with(config(&serve(script.clone()).await)).await;
    let mut other = config(&serve(script).await);
    other.http_client = HttpClient::Reqwest;
    let other = exchange_with(other).await;
    let seen = |ex: &Exchange| {
        let r = &ex.result;
        (r.outcome, r.text.clone(), r.chunk_times.len(), r.usage)
    };
    assert_eq!(seen(&direct), seen(&other), "direct vs reqwest");
    direct
}

fn ttft(ex: &Exchange) -> Option<Duration> {
    Some(*ex.result.chunk_times.first()? - ex.sent)
}

#[tokio::test]
async fn sse_role_only_first_chunk_does_not_start_ttft() {
    let steps = vec![
        role(),
        sleep_ms(150),
        token("a"),
        sleep_ms(50),
        token("b"),
        done(),
    ];
    let ex = exchange(Script::sse(steps)).await;
    assert_eq!(ex.result.outcome, Outcome::Ok);
    assert_eq!(ex.result.chunk_times.len(), 2);
    assert!(
        ttft(&ex) >= Some(Duration::from_millis(150)),
        "{:?}",
        ttft(&ex)
    );
    let itl = ex.result.chunk_times[1] - ex.result.chunk_times[0];
    assert!(itl >= Duration::from_millis(45), "{itl:?}");
}

#[tokio::test]
async fn sse_keep_alive_comments_are_ignored() {
    let comment = || Step::Bytes(b": keep-alive\n\n".to_vec());
    let steps = vec![
        comment(),
        token("a"),
        comment(),
        comment(),
        token("b"),
        done(),
    ];
    let ex = exchange(Script::sse(steps)).await;
    assert_eq!(ex.result.outcome, Outcome::Ok);
    assert_eq!(ex.result.text, "ab");
}

#[tokio::test]
async fn sse_error_event_mid_stream_is_in_band() {
    let error = Step::Bytes(b"event: error\ndata: {\"message\":\"engine died\"}\n\n".to_vec());
    let steps = vec![token("a"), token("b"), error, token("c"), done()];
    let ex = exchange(Script::sse(steps)).await;
    assert_eq!(ex.result.outcome, Outcome::InBand);
    assert_eq!(ex.result.chunk_times.len(), 2);
    assert!(ex.result.error.unwrap_or_default().contains("engine died"));
}

#[tokio::test]
async fn sse_in_band_error_object_is_in_band() {
    let steps = vec![token("a"), data(r#"{"error":{"message":"kv cache full"}}"#)];
    let ex = exchange(Script::sse(steps)).await;
    assert_eq!(ex.result.outcome, Outcome::InBand);
    assert_eq!(ex.result.error.as_deref(), Some("kv cache full"));
}

#[tokio::test]
async fn sse_stream_cut_mid_stream() {
    let steps = vec![role(), token("a"), sleep_ms(20), Step::Cut];
    let ex = exchange(Script::sse(steps)).await;
    assert_eq!(ex.result.outcome, Outcome::StreamCut);
    assert_eq!(ex.result.chunk_times.len(), 1);
}

#[tokio::test]
async fn sse_clean_end_without_done_after_finish_is_ok() {
    let steps = vec![token("a"), finish()];
    assert_eq!(
        exchange(Script::sse(steps)).await.result.outcome,
        Outcome::Ok
    );
    let cut = vec![token("a"), token("b")];
    assert_eq!(
        exchange(Script::sse(cut)).await.result.outcome,
        Outcome::StreamCut
    );
}

#[tokio::test]
async fn sse_done_only_is_no_output() {
    let ex = exchange(Script::sse(vec![done()])).await;
    assert_eq!(ex.result.outcome, Outcome::NoOutput);
    assert!(ex.result.chunk_times.is_empty());
}

#[tokio::test]
async fn sse_html_200_is_a_protocol_error() {
    let mut script = Script::sse(vec![Step::Bytes(
        b"<html><body>Bad gateway</body></html>".to_vec(),
    )]);
    script.content_type = "text/html";
    let ex = exchange(script).await;
    assert_eq!(ex.result.outcome, Outcome::Protocol);
    assert!(ex.result.error.unwrap_or_default().contains("Bad gateway"));
}

#[tokio::test]
async fn sse_json_error_body_with_status_200_is_in_band() {
    let bodies = [
        r#"{"error":{"message":"context length exceeded","code":400}}"#,
        "{\n  \"object\": \"error\",\n  \"message\": \"context length exceeded\"\n}\n",
    ];
    for body in bodies {
        let script = Script {
            status: 200,
            content_type: "application/json",
            head_delay: Duration::ZERO,
            steps: vec![Step::Bytes(body.as_bytes().to_vec())],
        };
        let ex = exchange(script).await;
        assert_eq!(ex.result.outcome, Outcome::InBand, "{body}");
        assert_eq!(
            ex.result.error.as_deref(),
            Some("context length exceeded"),
            "{body}"
        );
        assert!(ex.result.chunk_times.is_empty());
    }
}

#[tokio::test]
async fn sse_http_errors_with_and_without_body() {
    for status in [429, 500, 503] {
        let with_body = Script {
            status,
            content_type: "application/json",
            head_delay: Duration::ZERO,
            steps: vec![Step::Bytes(br#"{"error":"busy, retry later"}"#.to_vec())],
        };
        let ex = exchange(with_body).await;
        assert_eq!(ex.result.outcome, Outcome::Http(status));
        assert!(
            ex.result
                .error
                .unwrap_or_default()
                .contains("busy, retry later")
        );

        let without = Script {
            status,
            content_type: "text/plain",
            head_delay: Duration::ZERO,
            steps: vec![],
        };
        let ex = exchange(without).await;
        assert_eq!(ex.result.outcome, Outcome::Http(status));
        assert_eq!(ex.result.error, Some(format!("http {status}")));
    }
}

#[tokio::test]
async fn sse_non_json_chunk_is_a_protocol_error() {
    let steps = vec![
        token("a"),
        Step::Bytes(b"data: {not json\n\n".to_vec()),
        done(),
    ];
    let ex = exchange(Script::sse(steps)).await;
    assert_eq!(ex.result.outcome, Outcome::Protocol);
    assert!(ex.result.error.unwrap_or_default().contains("{not json"));
}

#[tokio::test]
async fn sse_two_mib_event_is_read() {
    let big = "x".repeat(2 << 20);
    let steps = vec![token(&big), done()];
    let ex = exchange(Script::sse(steps)).await;
    assert_eq!(ex.result.outcome, Outcome::Ok);
    assert_eq!(ex.result.text.len(), 2 << 20);
}

#[tokio::test]
async fn sse_event_beyond_the_bound_fails_naming_it() {
    let url = serve(Script::sse(vec![token(&"x".repeat(4096)), done()])).await;
    let mut small = config(&url);
    small.max_event_bytes = 1024;
    let ex = exchange_with(small).await;
    assert_eq!(ex.result.outcome, Outcome::Protocol);
    let error = ex.result.error.unwrap_or_default();
    assert!(
        error.contains("1024 bytes") && error.contains("--max-event-bytes"),
        "{error}"
    );
}

#[tokio::test]
async fn sse_stall_beyond_first_token_timeout() {
    let url = serve(Script::sse(vec![
        role(),
        sleep_ms(3000),
        token("late"),
        done(),
    ]))
    .await;
    let mut cfg = config(&url);
    cfg.first_token_timeout = Some(Duration::from_millis(200));
    let ex = exchange_with(cfg).await;
    assert_eq!(ex.result.outcome, Outcome::Timeout(TimeoutKind::FirstToken));
    assert!(ex.end - ex.sent < Duration::from_millis(2500));
}

#[tokio::test]
async fn sse_total_timeout_after_output() {
    let url = serve(Script::sse(vec![token("a"), sleep_ms(3000), done()])).await;
    let mut cfg = config(&url);
    cfg.total_timeout = Some(Duration::from_millis(300));
    let ex = exchange_with(cfg).await;
    assert_eq!(ex.result.outcome, Outcome::Timeout(TimeoutKind::Total));
    assert_eq!(ex.result.chunk_times.len(), 1);
}

#[tokio::test]
async fn sse_usage_chunk_with_empty_choices_gives_the_counts() {
    let usage = data(
        r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":8}}}"#,
    );
    let steps = vec![token("a"), token("b"), token("c"), finish(), usage, done()];
    let ex = exchange(Script::sse(steps)).await;
    assert_eq!(ex.result.outcome, Outcome::Ok);
    assert_eq!(
        ex.result.completion_tokens(None),
        Some((3, TokenSource::Usage))
    );
    let usage = ex.result.usage.unwrap_or_default();
    assert_eq!(usage.prompt_tokens, Some(12));
}

#[tokio::test]
async fn sse_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    drop(listener);
    let ex = exchange_with(config(&format!("http://{addr}"))).await;
    assert_eq!(ex.result.outcome, Outcome::Connect);
}

#[tokio::test]
async fn sse_cancel_ends_the_stream_as_cancelled() {
    let url = serve(Script::sse(vec![token("a"), sleep_ms(5000), done()])).await;
    let client = Client::new(config(&url)).unwrap_or_else(|e| panic!("{e}"));
    let body = client.body(&PromptBody::Text("x".into()), 2);
    let cancel = CancellationToken::new();
    let canceller = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        canceller.cancel();
    });
    let ex = client.stream(&body, &cancel).await;
    assert_eq!(ex.result.outcome, Outcome::Cancelled);
    assert_eq!(ex.result.chunk_times.len(), 1);
}

/// A stream as vLLM sends it (role chunk, content, finish, usage, `[DONE]`), with CRLF
/// line ends, a comment and multi-byte characters.
const RECORDED: &str = "tests/data/sse/vllm_chat_stream.txt";

fn recorded() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(RECORDED);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn sse_recorded_stream_split_at_every_offset_gives_identical_results() {
    let bytes = recorded();
    let at = tokio::time::Instant::now();
    let whole = {
        let mut timer = StreamTimer::new(1 << 20);
        timer.on_bytes(&bytes, at);
        timer.finish()
    };
    assert_eq!(whole.outcome, Outcome::Ok);
    assert_eq!(whole.chunk_times.len(), 5);
    assert_eq!(whole.text, "Héllo, 世界! ok");
    for cut in 0..=bytes.len() {
        let mut timer = StreamTimer::new(1 << 20);
        timer.on_bytes(&bytes[..cut], at);
        timer.on_bytes(&bytes[cut..], at);
        assert_eq!(timer.finish(), whole, "split at byte {cut}");
    }
}

#[tokio::test]
async fn sse_recorded_stream_split_over_tcp_gives_identical_results() {
    let bytes = recorded();
    for cut in (0..=bytes.len()).step_by(13) {
        let steps = vec![
            Step::Bytes(bytes[..cut].to_vec()),
            sleep_ms(2),
            Step::Bytes(bytes[cut..].to_vec()),
        ];
        let ex = exchange(Script::sse(steps)).await;
        assert_eq!(ex.result.outcome, Outcome::Ok, "cut {cut}");
        assert_eq!(ex.result.text, "Héllo, 世界! ok", "cut {cut}");
        assert_eq!(ex.result.chunk_times.len(), 5, "cut {cut}");
        assert_eq!(
            ex.result.completion_tokens(None),
            Some((5, TokenSource::Usage))
        );
    }
}
