//! SGLang's native `POST /generate` on the simulator over a real socket: the exact field
//! shapes SGLang's `bench_serving` reads (cumulative `text`, `meta_info` counts, the
//! `length` finish reason, `[DONE]`), the fixed-mode schedule, the chunk log file with the
//! client's `x-request-id`, the non-streaming body, and the shared metrics and errors.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::time::Duration;

use serde_json::{Value, json};
use tracebench::sim::{ChunkKind, SGLANG_DEFAULT_MAX_NEW_TOKENS, SimConfig};

use super::sim::{data, events, get, metric, o200k, post, quick_config, start};

/// The request body bench_serving's `sglang` backend sends (serving.py, 0.5.x).
fn bench_serving_body(text: &str, max_new_tokens: u32, stream: bool) -> Value {
    json!({
        "text": text,
        "sampling_params": {"temperature": 0.0, "max_new_tokens": max_new_tokens,
            "ignore_eos": true},
        "stream": stream, "lora_path": null, "return_logprob": false,
        "return_routed_experts": false, "logprob_start_len": -1,
    })
}

#[tokio::test]
async fn streamed_generate_has_sglang_shapes_schedule_and_chunk_log() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("chunks.jsonl");
    let (ttft, itl) = (Duration::from_millis(80), Duration::from_millis(20));
    let config = SimConfig {
        ttft,
        itl,
        record_chunks: true,
        chunk_log: Some(log_path.clone()),
        ..quick_config()
    };
    let sim = start(config);
    let prompt = "Tell me a story about a lighthouse keeper.";
    let resp = reqwest::Client::new()
        .post(format!("{}/generate", sim.base_url()))
        .header("x-request-id", "sgl-7")
        .json(&bench_serving_body(prompt, 6, true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = resp.text().await.unwrap();

    let events = events(&body);
    assert_eq!(events.len(), 7, "{body}");
    assert_eq!(events[6], "data: [DONE]");
    let word = sim.state().word().to_owned();
    let word_id = o200k().encode(&word)[0];
    let prompt_tokens = o200k().encode(prompt).len();
    for (i, event) in events[..6].iter().enumerate() {
        let count = i + 1;
        let value = data(event);
        assert_eq!(value["text"], word.repeat(count), "event {count}");
        assert_eq!(value["output_ids"], json!(vec![word_id; count]));
        let meta = &value["meta_info"];
        assert_eq!(meta["completion_tokens"], count);
        assert_eq!(meta["prompt_tokens"], prompt_tokens);
        assert_eq!(meta["cached_tokens"], 0);
        assert_eq!(meta["id"], "generate-1");
        let finish = if count == 6 {
            json!({"type": "length", "length": 6})
        } else {
            Value::Null
        };
        assert_eq!(meta["finish_reason"], finish, "event {count}");
    }

    let records = sim.state().chunk_records();
    let at = |kind: ChunkKind| -> Vec<u64> {
        records
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.unix_ns)
            .collect()
    };
    let received = at(ChunkKind::Received)[0];
    let tokens = at(ChunkKind::Token);
    assert_eq!(tokens.len(), 6);
    assert_eq!(at(ChunkKind::Done).len(), 1);
    assert!(at(ChunkKind::Role).is_empty() && at(ChunkKind::Usage).is_empty());
    for (i, ns) in tokens.iter().enumerate() {
        let due = ttft + itl * i as u32;
        let offset = Duration::from_nanos(ns - received);
        // Never early (1 ms for clock reads); late only by scheduling noise.
        assert!(offset + Duration::from_millis(1) >= due, "token {i}");
        assert!(offset < due + Duration::from_millis(500), "token {i}");
    }

    sim.shutdown().await.unwrap();
    let lines: Vec<Value> = std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10, "arrived, head, received, 6 tokens, done");
    assert!(lines.iter().all(|l| l["client_request_id"] == "sgl-7"));
    let events: Vec<&str> = lines[..3]
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["arrived", "head", "received"]);
    let at = |i: usize| lines[i]["unix_ns"].as_u64().unwrap();
    assert!(at(0) <= at(1) && at(1) <= at(2));
    let token_indexes: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"] == "token")
        .map(|l| l["token_index"].as_u64().unwrap())
        .collect();
    assert_eq!(token_indexes, vec![1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn non_streamed_generate_returns_one_body_with_every_token() {
    let sim = start(SimConfig {
        record_chunks: true,
        ..quick_config()
    });
    let body = json!({"input_ids": [11, 12, 13], "sampling_params": {"max_new_tokens": 4}});
    let resp = post(&sim, "/generate", &body).await;
    assert_eq!(resp.status(), 200);
    let value: Value = resp.json().await.unwrap();

    let word = sim.state().word();
    assert_eq!(value["text"], word.repeat(4));
    assert_eq!(value["output_ids"].as_array().unwrap().len(), 4);
    let meta = &value["meta_info"];
    assert_eq!(meta["prompt_tokens"], 3);
    assert_eq!(meta["completion_tokens"], 4);
    assert_eq!(
        meta["finish_reason"],
        json!({"type": "length", "length": 4})
    );
    let done: Vec<_> = sim
        .state()
        .chunk_records()
        .into_iter()
        .filter(|r| r.kind == ChunkKind::Done)
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].token_index, 4);

    let (_, text) = get(&sim, "/metrics").await;
    assert_eq!(metric(&text, "vllm:generation_tokens_total"), 4.0);
    assert_eq!(metric(&text, "vllm:prompt_tokens_total"), 3.0);
}

#[tokio::test]
async fn generate_defaults_to_sglang_length_and_omits_uncounted_prompt_tokens() {
    let sim = start(SimConfig {
        tokenizer: None,
        ..quick_config()
    });
    let resp = post(&sim, "/generate", &json!({"text": "hello"})).await;
    let value: Value = resp.json().await.unwrap();
    let meta = &value["meta_info"];
    assert_eq!(meta["completion_tokens"], SGLANG_DEFAULT_MAX_NEW_TOKENS);
    assert!(meta.get("prompt_tokens").is_none(), "{meta}");
    assert_eq!(value["output_ids"][0], 0);
}

#[tokio::test]
async fn bad_generate_requests_get_400_and_the_server_goes_on() {
    let sim = start(quick_config());
    for body in [
        json!({"sampling_params": {"max_new_tokens": 2}}),
        json!({"text": "a", "input_ids": [1]}),
        json!({"text": ["a", "b"]}),
        json!({"text": "a", "sampling_params": {"max_new_tokens": 0}}),
        json!({"text": "a", "return_logprob": true}),
        json!({"text": 5}),
    ] {
        let resp = post(&sim, "/generate", &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let error: Value = resp.json().await.unwrap();
        assert!(error["error"]["message"].is_string(), "{error}");
    }
    let resp = post(&sim, "/generate", &bench_serving_body("ok", 2, false)).await;
    assert_eq!(resp.status(), 200);
}
