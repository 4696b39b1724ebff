//! The simulator's timing models from the outside: fixed mode keeps its schedule (checked
//! loosely, from the simulator's own chunk records), engine mode slows down under load and
//! speeds up on cached prefixes, and its prefix-cache hit ratio in `/metrics` equals the
//! reuse a workload was built with, including the first 2,000 Mooncake records.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::collections::HashSet;
use std::io::BufRead;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracebench::sim::{ChunkKind, EngineConfig, EnginePreset, SimConfig, SimHandle, TimingMode};

use super::sim::{get, metric, post, quick_config, start};

#[tokio::test]
async fn fixed_mode_sends_each_chunk_on_schedule() {
    let ttft = Duration::from_millis(80);
    let itl = Duration::from_millis(20);
    let config = SimConfig {
        ttft,
        itl,
        record_chunks: true,
        ..quick_config()
    };
    let sim = start(config);
    let body =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "stream": true});
    let requests = (0..4).map(|_| post(&sim, "/v1/chat/completions", &body));
    for resp in futures::future::join_all(requests).await {
        resp.text().await.unwrap();
    }

    let records = sim.state().chunk_records();
    let ids: HashSet<_> = records.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(ids.len(), 4);
    for id in ids {
        let mine: Vec<_> = records.iter().filter(|r| r.request_id == id).collect();
        let received = mine
            .iter()
            .find(|r| r.kind == ChunkKind::Received)
            .unwrap()
            .unix_ns;
        let tokens: Vec<u64> = mine
            .iter()
            .filter(|r| r.kind == ChunkKind::Token)
            .map(|r| r.unix_ns)
            .collect();
        assert_eq!(tokens.len(), 10);
        for (i, at) in tokens.iter().enumerate() {
            let due = ttft + itl * i as u32;
            let offset = Duration::from_nanos(at - received);
            // Never early (1 ms for clock reads); late only by scheduling noise.
            assert!(
                offset + Duration::from_millis(1) >= due,
                "token {i} at {offset:?} < {due:?}"
            );
            assert!(
                offset < due + Duration::from_millis(500),
                "token {i} at {offset:?}"
            );
        }
    }
}

fn engine_config(prefix_cache: bool) -> SimConfig {
    let engine = EngineConfig {
        preset: EnginePreset::Small,
        constants: EnginePreset::Small.constants(),
        prefix_cache,
        ..EngineConfig::default()
    };
    SimConfig {
        timing: TimingMode::Engine,
        engine,
        tokenizer: None,
        ..SimConfig::default()
    }
}

/// Client-side TTFT and usage of one streamed completion of `ids`.
async fn ttft_of(sim: &SimHandle, ids: &[u32], max_tokens: u32) -> (Duration, Value) {
    let body = json!({"prompt": ids, "max_tokens": max_tokens, "stream": true,
                      "stream_options": {"include_usage": true}});
    let start = Instant::now();
    let mut resp = post(sim, "/v1/completions", &body).await;
    let mut ttft = None;
    let mut text = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        ttft.get_or_insert_with(|| start.elapsed());
        text.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(text).unwrap();
    let usage_event = text
        .split("\n\n")
        .find(|e| e.contains("\"usage\""))
        .unwrap();
    let usage: Value = serde_json::from_str(usage_event.trim_start_matches("data: ")).unwrap();
    (ttft.unwrap(), usage["usage"].clone())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn engine_ttft_rises_with_load() {
    let sim = start(engine_config(false));
    let prompt = |seed: u32| (0..2_000).map(|i| seed * 10_000 + i).collect::<Vec<u32>>();
    let alone = median(vec![
        ttft_of(&sim, &prompt(1), 1).await.0,
        ttft_of(&sim, &prompt(2), 1).await.0,
        ttft_of(&sim, &prompt(3), 1).await.0,
    ]);

    // 32 prompts of 2,000 tokens at once: ~8 budget-limited prefill steps to get through.
    let prompts: Vec<Vec<u32>> = (10..42).map(prompt).collect();
    let loaded = futures::future::join_all(prompts.iter().map(|p| ttft_of(&sim, p, 1))).await;
    let loaded = median(loaded.into_iter().map(|(t, _)| t).collect());
    assert!(loaded > alone * 4, "alone {alone:?}, loaded {loaded:?}");
}

#[tokio::test]
async fn engine_cached_prefix_gets_shorter_ttft_and_reports_cached_tokens() {
    let sim = start(engine_config(true));
    let shared: Vec<u32> = (0..8_000).collect();
    let (cold, usage) = ttft_of(&sim, &shared, 1).await;
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);

    let mut longer = shared.clone();
    longer.extend(50_000..50_016);
    let (warm, usage) = ttft_of(&sim, &longer, 1).await;
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 8_000);
    assert_eq!(usage["prompt_tokens"], 8_016);
    assert!(warm * 2 < cold, "cold {cold:?}, warm {warm:?}");
}

/// Token ids of a prompt made of blocks: block id `b` is `block_tokens` distinct ids.
fn block_prompt(blocks: &[u64], block_tokens: u32, len: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = blocks
        .iter()
        .flat_map(|b| (0..block_tokens).map(move |k| (*b as u32) * block_tokens + k))
        .collect();
    ids.truncate(len);
    ids
}

/// Sends the prompts one after another (max_tokens 1), returns the hit ratio in `/metrics`.
async fn hit_ratio_after(sim: &SimHandle, prompts: &[Vec<u32>]) -> (f64, f64, f64) {
    for ids in prompts {
        let body = json!({"prompt": ids, "max_tokens": 1});
        let resp = post(sim, "/v1/completions", &body).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let (_, text) = get(sim, "/metrics").await;
    let queries = metric(&text, "vllm:prefix_cache_queries_total");
    let hits = metric(&text, "vllm:prefix_cache_hits_total");
    (hits / queries, queries, hits)
}

#[tokio::test]
async fn prefix_hit_ratio_in_metrics_equals_the_built_in_reuse() {
    let sim = start(SimConfig {
        speed: 100.0,
        ..engine_config(true)
    });
    let workload: [&[u64]; 4] = [&[0, 1, 2], &[0, 1, 3], &[0, 4], &[0, 1, 2, 5]];
    let prompts: Vec<Vec<u32>> = workload
        .iter()
        .map(|b| block_prompt(b, 32, b.len() * 32))
        .collect();
    let (ratio, queries, hits) = hit_ratio_after(&sim, &prompts).await;
    assert_eq!(queries, 384.0);
    assert_eq!(hits, 192.0);
    assert_eq!(ratio, 0.5);
}

/// The first `n` Mooncake records as (input_length, hash_ids).
fn mooncake_head(n: usize) -> Option<Vec<(usize, Vec<u64>)>> {
    let path = crate::common::shared_trace("mooncake_conversation_trace.jsonl")?;
    let file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let records = file
        .lines()
        .take(n)
        .map(|line| {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            let ids = v["hash_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            (v["input_length"].as_u64().unwrap() as usize, ids)
        })
        .collect();
    Some(records)
}

/// Share of blocks whose id already appeared in an earlier record.
fn reuse_ratio(records: &[(usize, Vec<u64>)]) -> f64 {
    let mut seen = HashSet::new();
    let (mut reused, mut total) = (0usize, 0usize);
    for (_, ids) in records {
        reused += ids.iter().filter(|id| seen.contains(*id)).count();
        total += ids.len();
        seen.extend(ids.iter().copied());
    }
    reused as f64 / total as f64
}

#[tokio::test]
async fn mooncake_head_hit_ratio_matches_the_trace_reuse() {
    let Some(records) = mooncake_head(2_000) else {
        return;
    };
    let mut config = SimConfig {
        speed: 1_000.0,
        ..engine_config(true)
    };
    config.engine.constants.kv_blocks = 4_000_000;
    config.max_model_len = 1_000_000;
    let sim = start(config);

    let prompts: Vec<Vec<u32>> = records
        .iter()
        .map(|(len, ids)| block_prompt(ids, 512, *len))
        .collect();
    let (ratio, _, _) = hit_ratio_after(&sim, &prompts).await;
    let expected = reuse_ratio(&records);
    eprintln!("mooncake head: hit ratio {ratio:.4}, hash_ids reuse {expected:.4}");
    assert!(
        (ratio - expected).abs() < 0.02,
        "hit {ratio:.4} vs reuse {expected:.4}"
    );
}

#[tokio::test]
async fn chunk_log_head_is_stamped_before_a_slow_body_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A client that sends the head, then the body 300 ms later: `head` must be logged
    // on arrival of the head, `received` (the timing modes' start) after the body.
    let config = SimConfig {
        record_chunks: true,
        ..quick_config()
    };
    let sim = start(config);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        "stream": true})
    .to_string();
    let addr = sim.base_url().trim_start_matches("http://").to_string();
    let addr = addr.split('/').next().unwrap().to_string();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-request-id: slow-body\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    assert!(response.contains("[DONE]"), "{response}");

    let records = sim.state().chunk_records();
    let at = |kind: ChunkKind| {
        records
            .iter()
            .find(|r| r.kind == kind && r.client_request_id.as_deref() == Some("slow-body"))
            .unwrap_or_else(|| panic!("no {kind:?} record"))
            .unix_ns
    };
    let body_wait = Duration::from_nanos(at(ChunkKind::Received) - at(ChunkKind::Head));
    assert!(body_wait >= Duration::from_millis(250), "{body_wait:?}");
    assert!(body_wait < Duration::from_secs(5), "{body_wait:?}");
}

/// Reads a chunked response from `socket` up to its last chunk.
async fn read_chunked_response(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.ends_with(b"0\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn chunk_log_arrived_is_when_the_bytes_reached_a_busy_simulator() {
    use std::io::Write;
    use tokio::io::AsyncWriteExt;

    // The request is written while the simulator's (this test's) only thread is blocked
    // for 150 ms: `arrived` is the kernel's receive stamp, `head` when the simulator read
    // it. A second request on the same keep-alive connection gets its own `arrived`, not
    // a stamp left over from the first request's reads.
    let config = SimConfig {
        record_chunks: true,
        ..quick_config()
    };
    let sim = start(config);
    let addr = sim.addr();
    let request = |id: &str| {
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "stream": true})
        .to_string();
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\n\
             content-type: application/json\r\nx-request-id: {id}\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut blocking = std::net::TcpStream::connect(addr).unwrap();
    blocking.write_all(request("busy-1").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    blocking.set_nonblocking(true).unwrap();
    let mut socket = tokio::net::TcpStream::from_std(blocking).unwrap();
    let first = read_chunked_response(&mut socket).await;
    assert!(first.contains("[DONE]"), "{first}");

    tokio::time::sleep(Duration::from_millis(60)).await;
    socket
        .write_all(request("busy-2").as_bytes())
        .await
        .unwrap();
    let second = read_chunked_response(&mut socket).await;
    assert!(second.contains("[DONE]"), "{second}");

    let records = sim.state().chunk_records();
    let at = |id: &str, kind: ChunkKind| {
        records
            .iter()
            .find(|r| r.kind == kind && r.client_request_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no {kind:?} record of {id}"))
            .unix_ns
    };
    let waited = at("busy-1", ChunkKind::Head) - at("busy-1", ChunkKind::Arrived);
    assert!(
        Duration::from_nanos(waited) >= Duration::from_millis(140),
        "the bytes waited for the blocked simulator: {waited} ns"
    );
    let arrived = at("busy-2", ChunkKind::Arrived);
    assert!(
        arrived >= at("busy-1", ChunkKind::Done) + 50_000_000,
        "the second request's own arrival, 60 ms after the first ended"
    );
    assert!(arrived <= at("busy-2", ChunkKind::Head));
}

#[tokio::test]
async fn chunk_log_file_is_appended_to_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chunks.jsonl");
    std::fs::write(&path, "{\"earlier\": true}\n").unwrap();
    let config = SimConfig {
        chunk_log: Some(path.clone()),
        ..quick_config()
    };
    let sim = start(config);
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
        "stream": true});
    post(&sim, "/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    sim.shutdown().await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "{\"earlier\": true}", "{text}");
    assert!(lines.len() > 4, "the new run's events follow: {text}");
}
