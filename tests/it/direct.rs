//! The direct transport (`--http-client direct`) over real sockets: connections opened
//! ahead serve a burst without a `connect` on the send path, a connection is reused once
//! its stream has ended, connections the server closed while idle are replaced without
//! failing a request, and a replay keeps its connections topped up between bursts.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracebench::client::{
    Api, ApiKey, ChunkClock, Client, ClientConfig, ConnectionCounts, Endpoint, HttpClient,
    PromptBody,
};
use tracebench::replay::Outcome;
use tracebench::schedule::SessionMode;
use tracebench::sim::{self, SimConfig, SimHandle, TimingMode};

use crate::replay::{How, replay_with, write_bursts};

fn simulator() -> SimHandle {
    let config = SimConfig {
        timing: TimingMode::Fixed,
        ttft: Duration::from_millis(20),
        itl: Duration::from_millis(2),
        tokenizer: None,
        ..SimConfig::default()
    };
    sim::spawn(config).unwrap_or_else(|e| panic!("{e}"))
}

fn client(base_url: &str, model: &str) -> Client {
    let config = ClientConfig {
        model: model.to_string(),
        ..client_config_for(base_url)
    };
    let client = Client::new(config).unwrap_or_else(|e| panic!("{e}"));
    assert!(client.is_direct(), "plain http goes direct");
    client
}

/// One exchange asking for `tokens` tokens; its outcome and output chunks.
async fn ask(client: &Client, tokens: u32) -> (Outcome, usize) {
    let body = client.body(&PromptBody::Text("hello there".into()), tokens);
    let exchange = client.stream(&body, &CancellationToken::new()).await;
    (exchange.result.outcome, exchange.result.chunk_times.len())
}

fn counts(ahead: usize, on_send: usize) -> ConnectionCounts {
    ConnectionCounts { ahead, on_send }
}

#[tokio::test]
async fn connections_opened_ahead_serve_a_burst_and_are_reused() {
    let sim = simulator();
    let client = client(&sim.base_url(), &sim.state().config().model_id);
    client.open_connections(8).await;
    assert_eq!(client.connection_counts(), counts(8, 0));

    let burst = futures::future::join_all((0..8).map(|_| ask(&client, 5))).await;
    assert!(burst.iter().all(|r| *r == (Outcome::Ok, 5)), "{burst:?}");
    assert_eq!(
        client.connection_counts(),
        counts(8, 0),
        "no connect on a send"
    );

    // Each stream ended with [DONE]: its connection went back to the pool.
    for _ in 0..6 {
        assert_eq!(ask(&client, 3).await, (Outcome::Ok, 3));
    }
    let again = futures::future::join_all((0..8).map(|_| ask(&client, 2))).await;
    assert!(again.iter().all(|r| *r == (Outcome::Ok, 2)), "{again:?}");
    assert_eq!(
        client.connection_counts(),
        counts(8, 0),
        "every connection reused"
    );
}

#[tokio::test]
async fn reqwest_is_used_where_direct_cannot_go() {
    let with = |url: &str, http_client| {
        let config = ClientConfig {
            http_client,
            ..client_config_for(url)
        };
        Client::new(config).map(|c| c.is_direct()).ok()
    };
    assert_eq!(
        with("http://127.0.0.1:9/v1", HttpClient::Direct),
        Some(true)
    );
    assert_eq!(
        with("http://127.0.0.1:9/v1", HttpClient::Reqwest),
        Some(false)
    );
    assert_eq!(
        with("https://127.0.0.1:9/v1", HttpClient::Direct),
        Some(false)
    );
    assert_eq!(
        with("http://me:pw@127.0.0.1:9/v1", HttpClient::Direct),
        Some(false)
    );
}

/// TTFT of one 4-token exchange on a one-thread client whose thread is blocked from 20 to
/// 170 ms after the send, across the simulator's first token at 50 ms.
fn ttft_with_a_stalled_client(base_url: String, model: String, clock: ChunkClock) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async move {
        let config = ClientConfig {
            model,
            chunk_clock: clock,
            ..client_config_for(&base_url)
        };
        let client = Client::new(config).unwrap_or_else(|e| panic!("{e}"));
        client.open_connections(1).await;
        let body = client.body(&PromptBody::Text("hello".into()), 4);

        let stall = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            std::thread::sleep(Duration::from_millis(150));
        });
        let exchange = client.stream(&body, &CancellationToken::new()).await;
        stall.await.unwrap_or_else(|e| panic!("{e}"));

        assert_eq!(exchange.result.outcome, Outcome::Ok);
        assert_eq!(client.chunk_clock_used(), clock);
        let first = exchange.result.chunk_times[0];
        assert!(exchange.end >= *exchange.result.chunk_times.last().unwrap_or(&first));
        first - exchange.sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_clock_leaves_out_the_clients_own_lag() {
    let config = SimConfig {
        timing: TimingMode::Fixed,
        ttft: Duration::from_millis(50),
        itl: Duration::from_millis(2),
        tokenizer: None,
        ..SimConfig::default()
    };
    let sim = sim::spawn(config).unwrap_or_else(|e| panic!("{e}"));
    let (url, model) = (sim.base_url(), sim.state().config().model_id.clone());

    let ttft = |clock| {
        let (url, model) = (url.clone(), model.clone());
        std::thread::spawn(move || ttft_with_a_stalled_client(url, model, clock))
    };
    let kernel = ttft(ChunkClock::Kernel).join();
    let read = ttft(ChunkClock::Read).join();
    let kernel = kernel.unwrap_or_else(|_| panic!("kernel-clock client panicked"));
    let read = read.unwrap_or_else(|_| panic!("read-clock client panicked"));

    // The first token reached the socket at ~50 ms (+ 3 more 2 ms apart, read together
    // with it), and was read when the thread came back at ~170 ms.
    assert!(
        kernel >= Duration::from_millis(49) && kernel < Duration::from_millis(110),
        "kernel clock: TTFT {kernel:?}"
    );
    assert!(
        read >= Duration::from_millis(160),
        "read clock: TTFT {read:?}"
    );
}

fn client_config_for(url: &str) -> ClientConfig {
    ClientConfig {
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
    }
}

/// A keep-alive server that closes a connection on which no request arrives within
/// `idle` (as uvicorn does after its keep-alive timeout), and answers each request with
/// one token and `[DONE]`.
async fn idle_closing_server(idle: Duration) -> String {
    listen(move |socket| serve_until_idle(socket, idle)).await
}

/// A loopback server running `serve` on each connection in its own task; its base URL.
async fn listen<F, Fut>(serve: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await;
    let listener = listener.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    format!("http://{addr}/v1")
}

async fn serve_until_idle(mut socket: TcpStream, idle: Duration) {
    let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
                data: [DONE]\n\n";
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(idle, socket.read(&mut buf)).await;
        let Ok(Ok(n @ 1..)) = read else { return };
        request.extend_from_slice(&buf[..n]);
        if request_complete(&request) {
            request.clear();
            let sent = socket.write_all(format!("{head}{body}").as_bytes()).await;
            if sent.is_err() {
                return;
            }
        }
    }
}

/// Whether `bytes` hold a whole request: its head and `content-length` bytes of body.
fn request_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

#[tokio::test]
async fn connections_the_server_closed_while_idle_are_replaced() {
    let url = idle_closing_server(Duration::from_millis(50)).await;
    let client = client(&url, "m");
    client.open_connections(2).await;
    assert_eq!(ask(&client, 1).await, (Outcome::Ok, 1));
    assert_eq!(client.connection_counts(), counts(2, 0));

    // Both idle connections are closed by the server meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask(&client, 1).await, (Outcome::Ok, 1));
    assert_eq!(ask(&client, 1).await, (Outcome::Ok, 1));
    assert_eq!(client.connection_counts(), counts(2, 1));
}

#[tokio::test]
async fn a_replay_keeps_connections_ready_for_each_burst() {
    let sim = simulator();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // Bursts of 12, 3 and 12 requests, 400 ms apart: 12 kept idle by default.
    let trace = write_bursts(dir.path(), &[12, 3, 12], 400);
    let model = sim.state().config().model_id.clone();
    for warm in [None, Some(0)] {
        let client = Arc::new(client(&sim.base_url(), &model));
        let how = How {
            sessions: SessionMode::Ignore,
            threads: Some(1),
            stop_after: None,
            warm_connections: warm,
        };
        let (records, partial) = replay_with(&trace, client.clone(), how).await;
        assert!(!partial);
        assert_eq!(records.len(), 27);
        assert!(records.iter().all(|r| r.outcome == Outcome::Ok), "{warm:?}");
        let opened = client.connection_counts();
        match warm {
            // Opened before the start and topped up between bursts, never on a send.
            None => assert_eq!(opened.on_send, 0, "{opened:?}"),
            // On demand: the first burst opens its connections itself, later ones reuse.
            _ => assert_eq!(opened, counts(0, 12)),
        }
    }
}

/// A server that answers every request after `delay`, keeping the connection open.
async fn slow_server(delay: Duration) -> String {
    listen(move |mut socket| async move {
        let mut buf = [0u8; 8192];
        while let Ok(1..) = socket.read(&mut buf).await {
            tokio::time::sleep(delay).await;
            let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
            if socket.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_stop_while_connections_are_opened_ahead_ends_the_run_at_once() {
    // 64 connections whose checks take 1.5 s each, 16 at a time: 6 s of opening.
    let url = slow_server(Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let trace = write_bursts(dir.path(), &[4, 4], 100);
    let how = How {
        sessions: SessionMode::Ignore,
        threads: Some(1),
        stop_after: Some(Duration::from_millis(300)),
        warm_connections: Some(64),
    };
    let started = std::time::Instant::now();
    let (records, partial) = replay_with(&trace, Arc::new(client(&url, "m")), how).await;
    let took = started.elapsed();
    assert!(partial);
    assert!(
        records.iter().all(|r| r.outcome == Outcome::Skipped),
        "{records:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "the stop waited for the opening: {took:?}"
    );
}
