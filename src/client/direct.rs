//! The direct transport for plain `http://` endpoints: keep-alive HTTP/1.1 connections the
//! client owns (hyper's connection API, without reqwest's layers), opened before the run
//! and topped up by a keeper task between sends, so that a request rarely pays a `connect`
//! on its way out and the server rarely pays an `accept` inside the measured time.
//!
//! A connection goes back to the pool only after its response body was read to its end;
//! one whose server closed it is dropped when next looked at. A request that a closing
//! connection refused before writing anything is sent again on another connection (the
//! same rule reqwest's pool follows); anything later is the request's outcome.
//!
//! `https://` endpoints, URLs with `user:password@` and runs with a proxy set in the
//! environment go through reqwest instead (see [`Pool::for_endpoint`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use super::arrival::{Arrivals, StampedStream};
use super::http::REQUEST_ID_HEADER;
use crate::replay::{Outcome, TimeoutKind};

/// How often the keeper looks for connections the server closed while idle.
const KEEPER_TICK: Duration = Duration::from_millis(250);

/// How long the keeper waits after a checkout before opening replacements, so that the
/// rest of a burst leaves before it competes for the thread.
const KEEPER_SETTLE: Duration = Duration::from_millis(2);

/// How many connections are opened ahead at the same time.
pub const OPEN_AT_ONCE: usize = 16;

/// How long a new connection's probe may take to be answered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest probe answer read (the model list).
const PROBE_BODY_BYTES: usize = 1 << 20;

/// How many connections one request may try when each refuses it unsent.
const SEND_ATTEMPTS: usize = 4;

/// Environment variables that make reqwest use a proxy for plain http.
const PROXY_VARS: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

/// One owned connection: its sending half and the receive stamps of its reads.
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    arrivals: Arc<Arrivals>,
}

impl Conn {
    /// The kernel's receive stamps of this connection's reads (none when off).
    pub fn arrivals(&self) -> &Arrivals {
        &self.arrivals
    }

    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    fn is_ready(&self) -> bool {
        self.sender.is_ready()
    }
}

/// Connections opened, by whom.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCounts {
    /// Opened before the run or by the keeper, off the send path.
    pub ahead: usize,
    /// Opened by a request that found no idle connection.
    pub on_send: usize,
}

/// The owned keep-alive connections to one `host:port`.
#[derive(Debug)]
pub struct Pool {
    host: String,
    port: u16,
    addrs: OnceCell<Vec<SocketAddr>>,
    path: Uri,
    probe_path: Uri,
    headers: HeaderMap,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    /// Whether reads are stamped by the kernel (`--chunk-clock kernel`).
    stamp_reads: bool,
    /// A connection's socket refused the kernel's receive stamps.
    unstamped: AtomicBool,
    taken: Notify,
    opened_ahead: AtomicUsize,
    opened_on_send: AtomicUsize,
    /// A connection could not be opened ahead: stop trying for this run.
    gave_up: AtomicBool,
}

/// Why a request could not be sent: an outcome and its text.
pub type SendFailure = (Outcome, String);

impl Pool {
    /// The pool for `url` (the streaming endpoint), or `None` when the request must go
    /// through reqwest: not plain http, credentials in the URL, or a proxy configured.
    /// `probe` (the model list) is asked on each connection opened ahead; `headers` are
    /// sent with every request (the user's and the API key).
    pub fn for_endpoint(
        url: &reqwest::Url,
        probe: &reqwest::Url,
        headers: &HeaderMap,
        connect_timeout: Duration,
        stamp_reads: bool,
    ) -> Option<Self> {
        let plain = url.scheme() == "http" && url.username().is_empty() && url.password().is_none();
        let proxied = PROXY_VARS
            .iter()
            .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
        if !plain || proxied {
            return None;
        }
        let host = url
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = url.port_or_known_default()?;
        let path = Uri::try_from(url.path()).ok()?;
        let probe_path = Uri::try_from(probe.path()).ok()?;
        let authority = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str()?),
            None => url.host_str()?.to_string(),
        };
        let authority = HeaderValue::from_str(&authority).ok()?;

        let mut all = HeaderMap::new();
        all.insert(HOST, authority);
        all.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        all.insert(ACCEPT, HeaderValue::from_static("*/*"));
        for (name, value) in headers {
            all.insert(name.clone(), value.clone());
        }
        Some(Self {
            host: host.to_string(),
            port,
            addrs: OnceCell::new(),
            path,
            probe_path,
            headers: all,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            stamp_reads,
            unstamped: AtomicBool::new(false),
            taken: Notify::new(),
            opened_ahead: AtomicUsize::new(0),
            opened_on_send: AtomicUsize::new(0),
            gave_up: AtomicBool::new(false),
        })
    }

    /// Connections opened so far.
    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            ahead: self.opened_ahead.load(Ordering::Relaxed),
            on_send: self.opened_on_send.load(Ordering::Relaxed),
        }
    }

    /// Whether every connection so far has its reads stamped by the kernel.
    pub fn stamps_reads(&self) -> bool {
        self.stamp_reads && !self.unstamped.load(Ordering::Relaxed)
    }

    /// Idle connections that are still open.
    pub fn idle_open(&self) -> usize {
        let mut idle = self.lock_idle();
        idle.retain(|conn| !conn.is_closed());
        idle.len()
    }

    /// Opens connections until `count` are idle, each one answered on (see
    /// `connect_served`). After a failure, the pool stops opening connections ahead
    /// for the rest of the run (requests then connect when they find none idle), and the
    /// failure is returned.
    /// Returns how many it opened. Connections are opened [`OPEN_AT_ONCE`] at a time.
    pub async fn fill(&self, count: usize) -> Result<usize, SendFailure> {
        let mut opened = 0;
        while !self.gave_up.load(Ordering::Relaxed) {
            let missing = count.saturating_sub(self.idle_open()).min(OPEN_AT_ONCE);
            if missing == 0 {
                break;
            }
            let batch = (0..missing).map(|_| self.connect_served());
            let mut failure = None;
            for result in futures::future::join_all(batch).await {
                match result {
                    Ok(conn) => {
                        opened += 1;
                        self.opened_ahead.fetch_add(1, Ordering::Relaxed);
                        self.give_back(conn);
                    }
                    Err(error) => failure = Some(error),
                }
            }
            if let Some(failure) = failure {
                self.gave_up.store(true, Ordering::Relaxed);
                return Err(failure);
            }
        }
        Ok(opened)
    }

    /// Keeps `count` idle connections open until `stop`: after each checkout (once the
    /// burst it belongs to has left) and every 250 ms for those the server closed.
    pub async fn keep(&self, count: usize, stop: CancellationToken) {
        loop {
            if let Err((_, error)) = self.fill(count).await {
                tracing::info!("connections are opened on demand from here on: {error}");
            }
            if self.gave_up.load(Ordering::Relaxed) {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.taken.notified() => {
                    tokio::time::sleep(KEEPER_SETTLE).await;
                }
                _ = tokio::time::sleep(KEEPER_TICK) => {}
            }
        }
    }

    /// Sends `request` on an idle connection, or on a new one when none is ready. Returns the
    /// response head and body, and the connection to give back once the body has ended.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Conn), SendFailure> {
        for _ in 0..SEND_ATTEMPTS {
            let mut conn = match self.take_idle() {
                Some(conn) => conn,
                None => {
                    let conn = self.connect().await?;
                    self.opened_on_send.fetch_add(1, Ordering::Relaxed);
                    conn
                }
            };
            match conn.sender.try_send_request(request).await {
                Ok(response) => return Ok((response, conn)),
                Err(mut refused) => match refused.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err((Outcome::Connect, error_chain(refused.error()))),
                },
            }
        }
        let text = format!("{SEND_ATTEMPTS} connections in a row closed before the request");
        Err((Outcome::Connect, text))
    }

    /// Returns a connection whose response body was read to its end.
    pub fn give_back(&self, conn: Conn) {
        if !conn.is_closed() {
            self.lock_idle().push(conn);
        }
    }

    /// The request carrying `body`, with the endpoint's headers and `x-request-id`.
    pub fn request(&self, body: Bytes, request_id: Option<&str>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.path.clone();
        *request.headers_mut() = self.headers.clone();
        if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            let name = HeaderName::from_static(REQUEST_ID_HEADER);
            request.headers_mut().insert(name, value);
        }
        request
    }

    /// The most recently returned connection that is ready for a request; closed ones met
    /// on the way are dropped.
    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.lock_idle();
        while let Some(at) = idle.iter().rposition(|c| c.is_ready() || c.is_closed()) {
            let conn = idle.swap_remove(at);
            if !conn.is_closed() {
                self.taken.notify_one();
                return Some(conn);
            }
        }
        None
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new connection on which the server has answered a `GET` of the model list, so
    /// that it is known to be served: a server with a thread per connection (llama.cpp's)
    /// may accept more connections than it has threads and leave the rest unread, and a
    /// request sent on one of those would wait for a thread to free up.
    async fn connect_served(&self) -> Result<Conn, SendFailure> {
        let mut conn = self.connect().await?;
        let sender = &mut conn.sender;
        let mut probe = Request::new(Full::new(Bytes::new()));
        *probe.uri_mut() = self.probe_path.clone();
        *probe.headers_mut() = self.headers.clone();
        probe.headers_mut().remove(CONTENT_TYPE);
        let answered = async {
            let response = sender.send_request(probe).await.ok()?;
            let mut body = response.into_body();
            let mut read = 0;
            while let Some(data) = next_data(&mut body).await.ok()? {
                read += data.len();
                if read > PROBE_BODY_BYTES {
                    return None;
                }
            }
            sender.ready().await.ok()
        };
        match tokio::time::timeout(PROBE_TIMEOUT, answered).await {
            Ok(Some(())) => Ok(conn),
            _ => {
                let text = format!(
                    "{}:{} did not answer GET {} on a new connection and keep it open",
                    self.host, self.port, self.probe_path
                );
                Err((Outcome::Connect, text))
            }
        }
    }

    /// Opens one connection (bounded by the connect timeout) and starts its task.
    async fn connect(&self) -> Result<Conn, SendFailure> {
        let addrs = self.addrs().await?;
        let stream = tokio::time::timeout(self.connect_timeout, connect_any(addrs)).await;
        let stream = match stream {
            Err(_) => {
                let text = format!(
                    "connecting to {}:{}: no connection within the connect timeout",
                    self.host, self.port
                );
                return Err((Outcome::Timeout(TimeoutKind::Connect), text));
            }
            Ok(stream) => stream.map_err(|e| {
                let text = format!("connecting to {}:{}: {e}", self.host, self.port);
                (Outcome::Connect, text)
            })?,
        };
        let _ = stream.set_nodelay(true);
        let stream = match self.stamp_reads {
            true => StampedStream::new(stream),
            false => StampedStream::plain(stream),
        };
        if self.stamp_reads && !stream.is_stamping() {
            self.unstamped.store(true, Ordering::Relaxed);
        }
        let arrivals = stream.arrivals();

        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await;
        let (sender, connection) = handshake.map_err(|e| (Outcome::Connect, error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::trace!("connection ended: {error}");
            }
        });
        Ok(Conn { sender, arrivals })
    }

    /// The server's addresses, looked up once.
    async fn addrs(&self) -> Result<&[SocketAddr], SendFailure> {
        let lookup = self.addrs.get_or_try_init(|| async {
            let found = tokio::net::lookup_host((self.host.as_str(), self.port)).await;
            let found: Vec<SocketAddr> = found.map(Iterator::collect).unwrap_or_default();
            match found.is_empty() {
                true => Err(()),
                false => Ok(found),
            }
        });
        match lookup.await {
            Ok(addrs) => Ok(addrs),
            Err(()) => {
                let text = format!("cannot resolve {}:{}", self.host, self.port);
                Err((Outcome::Connect, text))
            }
        }
    }
}

/// Connects to the first of `addrs` that accepts.
async fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

/// Reads the next data frame of `body`; trailers are skipped.
pub async fn next_data(body: &mut Incoming) -> Result<Option<Bytes>, String> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(error)) => return Err(error_chain(&error)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// An error and its sources on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
