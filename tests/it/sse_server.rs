//! A raw HTTP/1.1 test server on 127.0.0.1:0 that answers every request with a script of
//! exact bytes and exact delays, so each SSE case reaches the client as a real server would
//! send it (chunked transfer encoding, one TCP segment per step, abrupt closes).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One step of a scripted response body.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Write these bytes as one chunk and flush.
    Bytes(Vec<u8>),
    /// Wait this long.
    Sleep(Duration),
    /// Close the connection at once, without ending the chunked body.
    Cut,
}

/// A scripted response.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    /// Status code.
    pub(crate) status: u16,
    /// `Content-Type`.
    pub(crate) content_type: &'static str,
    /// Delay before the response head.
    pub(crate) head_delay: Duration,
    /// The body.
    pub(crate) steps: Vec<Step>,
}

impl Script {
    /// A 200 event stream with these steps.
    pub(crate) fn sse(steps: Vec<Step>) -> Self {
        Self {
            status: 200,
            content_type: "text/event-stream",
            head_delay: Duration::ZERO,
            steps,
        }
    }
}

/// `data: JSON\n\n` bytes.
pub(crate) fn data(json: &str) -> Step {
    Step::Bytes(format!("data: {json}\n\n").into_bytes())
}

/// A content chunk with `text`.
pub(crate) fn token(text: &str) -> Step {
    data(&format!(
        r#"{{"choices":[{{"index":0,"delta":{{"content":"{text}"}}}}]}}"#
    ))
}

/// The role-only first chunk many servers send.
pub(crate) fn role() -> Step {
    data(r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#)
}

/// A finish chunk.
pub(crate) fn finish() -> Step {
    data(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#)
}

/// `data: [DONE]`.
pub(crate) fn done() -> Step {
    Step::Bytes(b"data: [DONE]\n\n".to_vec())
}

/// A pause of `ms` milliseconds.
pub(crate) fn sleep_ms(ms: u64) -> Step {
    Step::Sleep(Duration::from_millis(ms))
}

/// Serves `script` to every connection until the test ends; returns the base URL.
pub(crate) async fn serve(script: Script) -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr: SocketAddr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer(socket, script.clone()));
        }
    });
    format!("http://{addr}/v1")
}

/// One request per connection, announced with `connection: close`: without it the client
/// may pool the connection and reuse it while this side shuts it down (a race that fails
/// the next request with "connection closed before message completed").
async fn answer(mut socket: TcpStream, script: Script) {
    let _ = socket.set_nodelay(true);
    if read_request(&mut socket).await.is_none() {
        return;
    }
    tokio::time::sleep(script.head_delay).await;
    let head = format!(
        "HTTP/1.1 {} X\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        script.status, script.content_type
    );
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for step in &script.steps {
        match step {
            Step::Sleep(d) => tokio::time::sleep(*d).await,
            Step::Cut => return,
            Step::Bytes(bytes) if bytes.is_empty() => {}
            Step::Bytes(bytes) => {
                let mut chunk = format!("{:x}\r\n", bytes.len()).into_bytes();
                chunk.extend_from_slice(bytes);
                chunk.extend_from_slice(b"\r\n");
                if socket.write_all(&chunk).await.is_err() || socket.flush().await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let _ = socket.shutdown().await;
}

/// Reads one request (head and `content-length` body); `None` if the peer went away.
async fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = socket.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf[end + 4..].to_vec());
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
