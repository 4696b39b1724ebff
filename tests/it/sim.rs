//! The simulator over HTTP with a plain client: every endpoint's exact shape, token counts
//! and usage, and survival of garbage requests. Helpers here are shared by `sim_timing`
//! and `sim_faults`.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::sync::Arc;

use serde_json::{Value, json};
use tracebench::prompt::{Tokenizer, load_tokenizer};
use tracebench::sim::{self, SimConfig, SimHandle, TimingMode, chat_prompt_tokens};

/// The built-in o200k_base tokenizer (no files, no network).
pub(crate) fn o200k() -> Arc<dyn Tokenizer> {
    load_tokenizer("o200k_base").expect("o200k_base is built in")
}

/// Fixed timing with (almost) no delays, counting with o200k_base.
pub(crate) fn quick_config() -> SimConfig {
    SimConfig {
        timing: TimingMode::Fixed,
        ttft: std::time::Duration::from_millis(1),
        itl: std::time::Duration::ZERO,
        tokenizer: Some(o200k()),
        ..SimConfig::default()
    }
}

/// A simulator on 127.0.0.1:0.
pub(crate) fn start(config: SimConfig) -> SimHandle {
    sim::spawn(config).expect("simulator starts")
}

/// POSTs `body` as JSON to `path`.
pub(crate) async fn post(sim: &SimHandle, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

/// GETs `path` and returns status and body text.
pub(crate) async fn get(sim: &SimHandle, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{}{path}", sim.base_url()))
        .await
        .expect("request sent");
    (
        resp.status().as_u16(),
        resp.text().await.expect("body read"),
    )
}

/// The SSE events of a complete body (the text between blank lines), in order.
pub(crate) fn events(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "stream must end with a blank line: {body:?}"
    );
    body.trim_end_matches("\n\n")
        .split("\n\n")
        .map(str::to_owned)
        .collect()
}

/// The JSON of a `data:` event.
pub(crate) fn data(event: &str) -> Value {
    let payload = event
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("not data: {event:?}"));
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {payload:?}"))
}

/// A metric's value from Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in {text}"))
}

#[tokio::test]
async fn models_health_and_metrics_answer() {
    let sim = start(quick_config());
    let (status, body) = get(&sim, "/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], sim::DEFAULT_MODEL_ID);
    assert_eq!(models["data"][0]["object"], "model");

    assert_eq!(get(&sim, "/health").await.0, 200);
    let (status, text) = get(&sim, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
    ] {
        assert_eq!(metric(&text, name), 0.0, "{name}");
    }
    assert_eq!(get(&sim, "/v1/nothing").await.0, 404);
}

#[tokio::test]
async fn chat_stream_has_role_chunk_tokens_usage_and_done() {
    let sim = start(quick_config());
    let content = "Tell me a story about a lighthouse keeper.";
    let body = json!({
        "model": sim::DEFAULT_MODEL_ID,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true},
    });
    let resp = post(&sim, "/v1/chat/completions", &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = events(&resp.text().await.unwrap());
    assert_eq!(events.len(), 1 + 5 + 1 + 1, "{events:#?}");

    // Role chunk: role only, no content, no finish reason.
    let role = data(&events[0]);
    assert_eq!(role["object"], "chat.completion.chunk");
    assert_eq!(
        role["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(role["choices"][0]["finish_reason"], Value::Null);

    // Five content chunks, one token each; the last says why it stopped.
    let word = sim.state().word().to_owned();
    for (i, event) in events[1..6].iter().enumerate() {
        let chunk = data(event);
        assert_eq!(chunk["id"], role["id"]);
        assert_eq!(chunk["choices"][0]["delta"], json!({"content": word}));
        let finish = if i == 4 { json!("length") } else { Value::Null };
        assert_eq!(chunk["choices"][0]["finish_reason"], finish);
    }
    assert_eq!(o200k().encode(&word.repeat(5)).len(), 5);

    // Usage chunk: empty choices, prompt = content tokens + template overhead.
    let usage = data(&events[6]);
    assert_eq!(usage["choices"], json!([]));
    let prompt_tokens = chat_prompt_tokens(o200k().encode(content).len() as u32, 1);
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": prompt_tokens, "completion_tokens": 5,
               "total_tokens": prompt_tokens + 5,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );
    assert_eq!(events[7], "data: [DONE]");
}

#[tokio::test]
async fn completion_stream_with_token_ids_counts_them_and_has_no_role_chunk() {
    let sim = start(quick_config());
    let ids: Vec<u32> = (1000..1037).collect();
    let body = json!({"prompt": ids, "max_tokens": 3, "stream": true,
                      "stream_options": {"include_usage": true}, "ignore_eos": true, "min_tokens": 3});
    let events = events(
        &post(&sim, "/v1/completions", &body)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(events.len(), 3 + 1 + 1);
    for event in &events[..3] {
        let chunk = data(event);
        assert_eq!(chunk["object"], "text_completion");
        assert_eq!(chunk["choices"][0]["text"], sim.state().word());
    }
    assert_eq!(data(&events[3])["usage"]["prompt_tokens"], 37);
    assert_eq!(data(&events[3])["usage"]["completion_tokens"], 3);
    assert_eq!(events[4], "data: [DONE]");
}

#[tokio::test]
async fn stream_without_include_usage_ends_with_the_last_token() {
    let sim = start(quick_config());
    let body = json!({"prompt": "hello", "max_completion_tokens": 2, "stream": true});
    let events = events(
        &post(&sim, "/v1/completions", &body)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(events.len(), 3);
    assert_eq!(data(&events[1])["choices"][0]["finish_reason"], "length");
    assert_eq!(events[2], "data: [DONE]");
}

#[tokio::test]
async fn non_streaming_bodies_carry_all_tokens_and_usage() {
    let sim = start(quick_config());
    let word = sim.state().word().to_owned();

    let body = json!({"messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "Hi there"}], "max_tokens": 4});
    let resp: Value = post(&sim, "/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["object"], "chat.completion");
    assert_eq!(resp["choices"][0]["message"]["role"], "assistant");
    assert_eq!(resp["choices"][0]["message"]["content"], word.repeat(4));
    assert_eq!(resp["choices"][0]["finish_reason"], "length");
    let content_tokens = (o200k().count("Be brief.") + o200k().count("Hi there")) as u32;
    assert_eq!(
        resp["usage"]["prompt_tokens"],
        chat_prompt_tokens(content_tokens, 2)
    );
    assert_eq!(resp["usage"]["completion_tokens"], 4);

    let body = json!({"prompt": ["one two three"], "max_tokens": 2});
    let resp: Value = post(&sim, "/v1/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["object"], "text_completion");
    assert_eq!(resp["choices"][0]["text"], word.repeat(2));
    assert_eq!(
        resp["usage"]["prompt_tokens"],
        o200k().count("one two three")
    );

    let (_, text) = get(&sim, "/metrics").await;
    assert_eq!(metric(&text, "vllm:generation_tokens_total"), 6.0);
    assert_eq!(metric(&text, "vllm:num_requests_running"), 0.0);
}

#[tokio::test]
async fn without_tokenizer_usage_omits_prompt_tokens() {
    let sim = start(SimConfig {
        tokenizer: None,
        ..quick_config()
    });
    let body = json!({"prompt": "some text", "max_tokens": 2, "stream": true,
                      "stream_options": {"include_usage": true}});
    let events = events(
        &post(&sim, "/v1/completions", &body)
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(data(&events[2])["usage"], json!({"completion_tokens": 2}));
    let resp = post(&sim, "/tokenize", &json!({"prompt": "x"})).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn tokenize_matches_vllm_shape_and_the_real_tokenizer() {
    let sim = start(quick_config());
    let text = "The quick brown fox jumps over the lazy dog.";
    let resp: Value = post(&sim, "/tokenize", &json!({"prompt": text}))
        .await
        .json()
        .await
        .unwrap();
    let expected = o200k().encode(text);
    assert_eq!(resp["count"], expected.len());
    assert_eq!(resp["tokens"], json!(expected));
    assert_eq!(resp["max_model_len"], 131_072);
    assert_eq!(resp["token_strs"], Value::Null);

    let messages = json!({"messages": [{"role": "user", "content": text}]});
    let resp: Value = post(&sim, "/tokenize", &messages)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(resp["count"], chat_prompt_tokens(expected.len() as u32, 1));
}

/// Status and parsed error body of a POST with raw bytes.
async fn post_raw(sim: &SimHandle, path: &str, body: Vec<u8>) -> (u16, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", sim.base_url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_the_server_survives() {
    let sim = start(SimConfig {
        body_limit_bytes: 64 * 1024,
        ..quick_config()
    });
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("/v1/completions", b"{not json".to_vec(), 400),
        (
            "/v1/completions",
            br#"{"prompt": "x", "max_tokens": 1e300}"#.to_vec(),
            400,
        ),
        (
            "/v1/completions",
            br#"{"prompt": "x", "max_tokens": 18446744073709551616}"#.to_vec(),
            400,
        ),
        (
            "/v1/completions",
            br#"{"prompt": "x", "max_tokens": 200000}"#.to_vec(),
            400,
        ),
        (
            "/v1/completions",
            br#"{"prompt": [99999999]}"#.to_vec(),
            400,
        ),
        (
            "/v1/completions",
            br#"{"prompt": "x", "model": "gpt-9"}"#.to_vec(),
            404,
        ),
        ("/v1/chat/completions", br#"{"messages": []}"#.to_vec(), 400),
        (
            "/v1/chat/completions",
            br#"{"messages": "hi"}"#.to_vec(),
            400,
        ),
        ("/v1/chat/completions", vec![0xff, 0xfe, 0x00], 400),
        ("/tokenize", b"[]".to_vec(), 400),
    ];
    for (path, body, status) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (got, text) = post_raw(&sim, path, body).await;
        assert_eq!(got, status, "{path} {shown}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        assert_eq!(error["error"]["code"], status, "{text}");
    }

    // Oversize body: 413 before any parsing.
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(100 * 1024));
    assert_eq!(
        post_raw(&sim, "/v1/completions", huge.into_bytes()).await.0,
        413
    );

    let ok = post(
        &sim,
        "/v1/completions",
        &json!({"prompt": "still alive", "max_tokens": 1}),
    )
    .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn mutated_request_bodies_never_get_a_server_error() {
    let sim = start(quick_config());
    let valid = br#"{"model":"tracebench-sim","messages":[{"role":"user","content":"hi"}],"max_tokens":2,"stream":true,"stream_options":{"include_usage":true}}"#;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let mut body = valid.to_vec();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() % body.len() as u64) as usize;
            match next() % 3 {
                0 => body[at] = (next() % 256) as u8,
                1 => body.truncate(at),
                _ => body.insert(at, b"{[\"9e99,:"[(next() % 9) as usize]),
            }
            if body.is_empty() {
                break;
            }
        }
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (status, _) = post_raw(&sim, "/v1/chat/completions", body).await;
        assert!(status < 500, "{status} for {shown}");
    }
    assert_eq!(get(&sim, "/health").await.0, 200);
}

#[tokio::test]
async fn raw_garbage_on_the_socket_does_not_stop_the_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = start(quick_config());
    for garbage in [
        &b"\x00\x01\x02\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        let mut socket = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
        socket.write_all(garbage).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            socket.read_to_end(&mut reply),
        )
        .await;
    }
    assert_eq!(get(&sim, "/health").await.0, 200);
}

#[tokio::test]
async fn binds_loopback_and_shuts_down_cleanly() {
    let sim = start(quick_config());
    assert!(sim.addr().ip().is_loopback());
    let url = sim.base_url();
    sim.shutdown().await.unwrap();
    assert!(reqwest::get(format!("{url}/health")).await.is_err());
}

#[test]
fn sim_command_serves_until_interrupted() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(crate::common::bin())
        .args(["sim", "--port", "0", "--timing", "fixed", "--no-tokenize"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .expect("address printed");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches("/v1");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let status = runtime.block_on(async {
        reqwest::get(format!("{url}/health"))
            .await
            .map(|r| r.status())
    });
    assert_eq!(status.unwrap(), 200);

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}
