//! Every injected fault, seen from a plain client: the status codes, the cut stream, the
//! in-band error, the stall, the malformed chunk, keep-alive comments, the delayed first
//! token, and which requests the every-Nth trigger picks.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use futures::StreamExt;
use serde_json::{Value, json};
use tracebench::sim::{ChunkKind, FaultRule, SimConfig, SimHandle};

use super::sim::{data, events, post, quick_config, start};

fn with_fault(spec: &str) -> SimHandle {
    let rule: FaultRule = spec.parse().unwrap();
    start(SimConfig {
        faults: vec![rule],
        record_chunks: true,
        ..quick_config()
    })
}

fn streaming(max_tokens: u32) -> Value {
    json!({"prompt": "fault test", "max_tokens": max_tokens, "stream": true})
}

#[tokio::test]
async fn status_faults_with_and_without_body() {
    let sim = with_fault("status:429");
    let resp = post(&sim, "/v1/completions", &streaming(3)).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429);

    let sim = with_fault("status-empty:503");
    let resp = post(
        &sim,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.text().await.unwrap(), "");
}

#[tokio::test]
async fn cut_aborts_the_body_after_k_tokens() {
    let sim = with_fault("cut:2");
    let resp = post(&sim, "/v1/completions", &streaming(5)).await;
    assert_eq!(resp.status(), 200);
    let mut body = Vec::new();
    let mut failed = false;
    let mut stream = resp.bytes_stream();
    while let Some(part) = stream.next().await {
        match part {
            Ok(bytes) => body.extend_from_slice(&bytes),
            Err(_) => failed = true,
        }
    }
    assert!(failed, "the body must end in an error, not cleanly");
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.matches("data: ").count(), 2, "{text}");
    assert!(!text.contains("[DONE]"));

    // Non-streaming: the connection drops before the response is complete.
    let sent = reqwest::Client::new()
        .post(format!("{}/v1/completions", sim.base_url()))
        .json(&json!({"prompt": "x", "max_tokens": 5}))
        .send()
        .await;
    match sent {
        Err(_) => {}
        Ok(resp) => assert!(
            resp.bytes().await.is_err(),
            "non-streaming cut aborts the body"
        ),
    }
}

#[tokio::test]
async fn error_event_comes_in_band_then_done() {
    let sim = with_fault("error:2");
    let text = post(&sim, "/v1/completions", &streaming(5))
        .await
        .text()
        .await
        .unwrap();
    let events = events(&text);
    assert_eq!(events.len(), 4, "{events:#?}");
    assert_eq!(data(&events[2])["error"]["code"], 500);
    assert_eq!(events[3], "data: [DONE]");
}

#[tokio::test]
async fn malformed_chunk_is_not_json_and_the_stream_goes_on() {
    let sim = with_fault("malformed:1");
    let text = post(&sim, "/v1/completions", &streaming(3))
        .await
        .text()
        .await
        .unwrap();
    let events = events(&text);
    assert_eq!(events.len(), 5, "{events:#?}");
    let payload = events[1].strip_prefix("data: ").unwrap();
    assert!(serde_json::from_str::<Value>(payload).is_err());
    assert_eq!(data(&events[3])["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn keep_alive_comments_precede_events() {
    let sim = with_fault("keepalive");
    let text = post(&sim, "/v1/completions", &streaming(2))
        .await
        .text()
        .await
        .unwrap();
    let events = events(&text);
    let comments = events.iter().filter(|e| e.starts_with(':')).count();
    assert_eq!(comments, 3, "{events:#?}");
    assert_eq!(events.last().unwrap(), "data: [DONE]");
}

/// Seconds between the first records of two kinds/indices for the only request.
fn gap_s(sim: &SimHandle, from: (ChunkKind, u32), to: (ChunkKind, u32)) -> f64 {
    let records = sim.state().chunk_records();
    let at = |(kind, index): (ChunkKind, u32)| {
        records
            .iter()
            .find(|r| r.kind == kind && r.token_index == index)
            .unwrap()
            .unix_ns
    };
    (at(to) - at(from)) as f64 / 1e9
}

#[tokio::test]
async fn stall_silences_the_stream_after_k_tokens() {
    let sim = with_fault("stall:0.3:1");
    let text = post(&sim, "/v1/completions", &streaming(3))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(events(&text).len(), 4);
    assert!(gap_s(&sim, (ChunkKind::Token, 1), (ChunkKind::Token, 2)) >= 0.29);
}

#[tokio::test]
async fn first_delay_separates_role_and_first_content() {
    let sim = with_fault("first-delay:0.3");
    let body =
        json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "stream": true});
    let text = post(&sim, "/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(events(&text).len(), 4);
    assert!(gap_s(&sim, (ChunkKind::Role, 0), (ChunkKind::Token, 1)) >= 0.29);
}

#[tokio::test]
async fn every_nth_trigger_hits_exactly_those_requests() {
    let sim = with_fault("status:500,every=3");
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            post(&sim, "/v1/completions", &streaming(1))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, vec![200, 200, 500, 200, 200, 500, 200]);
}
