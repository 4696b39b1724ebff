//! HTTP for the streaming client: the endpoint URLs derived from `--base-url`, request
//! bodies as the seed sends them, and one streamed exchange with connect / first-token /
//! total timeouts. Streaming requests to plain `http://` go over the client's own keep-alive
//! connections ([`super::direct`]); the rest (https, the model list, `/metrics`) over one
//! pooled reqwest client (HTTP/1.1, keep-alive, `TCP_NODELAY`, rustls).
//!
//! The API key goes into a header marked sensitive and is never formatted anywhere: its
//! `Debug` is redacted and no error message includes request headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Request, Response};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use super::arrival::Arrivals;
use super::direct::{ConnectionCounts, Pool, error_chain, next_data};
use super::stream::{Flow, OutputHook, StreamResult, StreamTimer};
use crate::replay::{Outcome, TimeoutKind};

/// The header carrying each request's plan index (`tracebench-INDEX`).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest excerpt of an error response body kept in the record, bytes.
const ERROR_BODY_BYTES: usize = 512;

/// Opening connections ahead for longer than this is worth telling the user.
const SLOW_OPENING: Duration = Duration::from_secs(1);

/// How long to read an error response's body before giving up on it.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors setting up the client or asking the server about itself.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--base-url` is not an http(s) URL.
    #[error("--base-url {url:?}: {reason}")]
    BaseUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--header` is not `NAME:VALUE` or not a valid header.
    #[error("--header {0:?}: expected NAME:VALUE with a valid header name and value")]
    Header(String),
    /// The API key holds characters a header cannot carry (the key itself is not shown).
    #[error("the API key is not a valid header value")]
    ApiKey,
    /// reqwest could not build the client.
    #[error("cannot build the http client: {0}")]
    Build(String),
    /// `GET /v1/models` failed or listed no model.
    #[error("cannot read the model from {url}: {reason} (pass --model)")]
    Models {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Which HTTP stack carries the streaming requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpClient {
    /// The client's own keep-alive connections, opened ahead of the sends, for plain
    /// `http://` without a proxy or credentials in the URL; reqwest otherwise.
    #[default]
    Direct,
    /// reqwest for every request (connections opened when a request finds none idle).
    Reqwest,
}

/// Which clock times the streamed chunks (TTFT, ITL, the end of the stream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkClock {
    /// When the kernel received the chunk's bytes (`SO_TIMESTAMPNS`), so that the client's
    /// own lag in reading them is not counted; the read time where that is not available
    /// (reqwest, a socket refusing the option).
    #[default]
    Kernel,
    /// When the client read the chunk.
    Read,
}

/// Which OpenAI endpoint requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `/v1/chat/completions` with one user message.
    Chat,
    /// `/v1/completions` with the prompt as text or token ids.
    Completions,
}

/// A prompt as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptBody {
    /// Text.
    Text(String),
    /// Token ids (`/v1/completions` only; chat requests send them decoded by the caller).
    TokenIds(Vec<u32>),
}

/// The URLs derived from `--base-url`, which may or may not end in `/v1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The server root, without a trailing slash: `/metrics`, `/tokenize`, `/health`.
    pub root: String,
}

impl Endpoint {
    /// Parses `--base-url`.
    pub fn parse(base_url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BaseUrl {
            url: redact_url(base_url),
            reason: reason.to_string(),
        };
        let url = reqwest::Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("expected http://HOST[:PORT][/v1] or https://..."));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a base URL takes no query or fragment"));
        }
        let text = url.as_str().trim_end_matches('/');
        let root = text.strip_suffix("/v1").unwrap_or(text).to_string();
        Ok(Self { root })
    }

    /// The root as it may be shown: a password in the URL is replaced by `***`.
    pub fn shown(&self) -> String {
        redact_url(&self.root)
    }

    /// `ROOT/v1/PATH`.
    pub fn api(&self, path: &str) -> String {
        format!("{}/v1/{}", self.root, path.trim_start_matches('/'))
    }

    /// `ROOT/PATH`, for server endpoints outside `/v1`.
    pub fn server(&self, path: &str) -> String {
        format!("{}/{}", self.root, path.trim_start_matches('/'))
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`, for messages and
/// reports (reqwest sends those credentials as basic auth; they must not be written).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A `--header NAME:VALUE` as it may be shown in an error: the value may be a credential.
fn redact_header(spec: &str) -> String {
    match spec.split_once(':') {
        Some((name, _)) => format!("{name}: <value hidden>"),
        None => spec.to_string(),
    }
}

/// An API key that never shows in `Debug` output.
#[derive(Clone, Default)]
pub struct ApiKey(Option<String>);

impl ApiKey {
    /// Reads the key from the environment variable `var`; `None` when unset or empty.
    pub fn from_env(var: &str) -> Self {
        Self(std::env::var(var).ok().filter(|k| !k.is_empty()))
    }

    /// Whether a key is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_set() {
            "ApiKey(<redacted>)"
        } else {
            "ApiKey(None)"
        })
    }
}

/// What the client needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Where the server is.
    pub endpoint: Endpoint,
    /// Chat or completions.
    pub api: Api,
    /// The model id sent in every request.
    pub model: String,
    /// Extra headers, `NAME:VALUE`.
    pub headers: Vec<String>,
    /// Sent as `Authorization: Bearer KEY` when set.
    pub api_key: ApiKey,
    /// Merged last into every request body (top-level keys replace ours).
    pub extra_body: Option<serde_json::Map<String, Value>>,
    /// Limit on establishing a connection.
    pub connect_timeout: Duration,
    /// Limit from the send to the first output-bearing chunk; `None` for none.
    pub first_token_timeout: Option<Duration>,
    /// Limit from the send to the end of the stream; `None` for none.
    pub total_timeout: Option<Duration>,
    /// Bound on one SSE event, bytes.
    pub max_event_bytes: usize,
    /// Which HTTP stack carries the streaming requests.
    pub http_client: HttpClient,
    /// Which clock times the streamed chunks.
    pub chunk_clock: ChunkClock,
}

/// The pooled client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    config: std::sync::Arc<ClientConfig>,
    /// The endpoint requests go to, parsed once: parsing it per request cost ~20,000
    /// instructions on the send path (callgrind; docs/PERFORMANCE.md, "Send path").
    stream_url: reqwest::Url,
    /// The owned connections, when streaming requests bypass reqwest.
    direct: Option<Arc<Pool>>,
}

/// What identifies and observes one exchange.
#[derive(Debug, Clone, Default)]
pub struct Tag {
    /// Sent as `x-request-id`.
    pub request_id: Option<String>,
    /// Told of output chunks as they arrive.
    pub on_output: Option<OutputHook>,
}

/// One streamed exchange as measured.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// When the request was handed to the connection.
    pub sent: Instant,
    /// When the stream ended or failed.
    pub end: Instant,
    /// What the stream did.
    pub result: StreamResult,
}

impl Client {
    /// Builds the pooled client.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let headers = default_headers(&config)?;
        let stream_url = stream_url(&config)?;
        let direct = match config.http_client {
            HttpClient::Direct => {
                let probe = reqwest::Url::parse(&config.endpoint.api("models"));
                let timeout = config.connect_timeout;
                let stamp = config.chunk_clock == ChunkClock::Kernel;
                let pool = probe.ok().and_then(|probe| {
                    Pool::for_endpoint(&stream_url, &probe, &headers, timeout, stamp)
                });
                pool.map(Arc::new)
            }
            HttpClient::Reqwest => None,
        };
        let http = reqwest::Client::builder()
            .http1_only()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(config.connect_timeout)
            .default_headers(headers)
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            http,
            config: Arc::new(config),
            stream_url,
            direct,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Whether streaming requests go over the client's own connections.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The clock that timed the chunks so far: the kernel's only on the direct transport,
    /// with every connection's socket stamping its reads.
    pub fn chunk_clock_used(&self) -> ChunkClock {
        match &self.direct {
            Some(pool) if pool.stamps_reads() => ChunkClock::Kernel,
            _ => ChunkClock::Read,
        }
    }

    /// Connections the direct transport opened so far (zero with reqwest).
    pub fn connection_counts(&self) -> ConnectionCounts {
        self.direct.as_ref().map(|p| p.counts()).unwrap_or_default()
    }

    /// Opens connections until `count` are idle (direct transport only). A connect failure
    /// is logged, not returned: the requests will meet and record it.
    pub async fn open_connections(&self, count: usize) {
        let Some(pool) = &self.direct else { return };
        let started = Instant::now();
        match pool.fill(count).await {
            Ok(opened) if started.elapsed() > SLOW_OPENING => {
                let took = started.elapsed().as_secs_f64();
                tracing::info!("{opened} connections opened before the start in {took:.1} s");
            }
            Ok(opened) => {
                tracing::debug!(
                    "{opened} connections opened ahead in {:?}",
                    started.elapsed()
                )
            }
            Err((_, error)) => tracing::info!("connections are opened on demand: {error}"),
        }
    }

    /// Keeps `count` connections idle until `stop` (direct transport only).
    pub fn keep_connections(
        &self,
        count: usize,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let pool = self.direct.clone();
        async move {
            if let Some(pool) = pool {
                pool.keep(count, stop).await;
            }
        }
    }

    /// The underlying reqwest client (for `/tokenize`, `/metrics` and the like).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The first model id of `GET /v1/models`.
    pub async fn first_model(&self) -> Result<String, ClientError> {
        let url = self.config.endpoint.api("models");
        let fail = |reason: String| ClientError::Models {
            url: redact_url(&url),
            reason,
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("http {}", status.as_u16())));
        }
        let body: Value = response.json().await.map_err(|e| fail(e.to_string()))?;
        let id = body.pointer("/data/0/id").and_then(Value::as_str);
        id.map(str::to_string)
            .ok_or_else(|| fail("no model listed".to_string()))
    }

    /// The request body for `prompt` asking for exactly `max_tokens` tokens.
    pub fn body(&self, prompt: &PromptBody, max_tokens: u32) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": true,
            "top_k": 1,
        });
        let prompt_value = match prompt {
            PromptBody::Text(text) => json!(text),
            PromptBody::TokenIds(ids) => json!(ids),
        };
        match self.config.api {
            Api::Chat => body["messages"] = json!([{"role": "user", "content": prompt_value}]),
            Api::Completions => body["prompt"] = prompt_value,
        }
        if let (Some(extra), Some(map)) = (&self.config.extra_body, body.as_object_mut()) {
            map.extend(extra.clone());
        }
        body
    }

    fn url(&self) -> &reqwest::Url {
        &self.stream_url
    }

    /// Sends `body` and reads the stream to its end, a timeout, or `cancel`.
    pub async fn stream(&self, body: &Value, cancel: &CancellationToken) -> Exchange {
        self.stream_tagged(body, Tag::default(), cancel).await
    }

    /// [`Client::stream`] with an `x-request-id` header (so that server logs, and the
    /// simulator's chunk log, can be matched with `requests.jsonl`) and a progress hook.
    pub async fn stream_tagged(
        &self,
        body: &Value,
        tag: Tag,
        cancel: &CancellationToken,
    ) -> Exchange {
        let encoded = serde_json::to_vec(body).unwrap_or_default();
        self.stream_encoded(encoded.into(), tag, cancel).await
    }

    /// `body` as JSON bytes, ready for [`Client::stream_encoded`]: serializing a long
    /// prompt takes time that should not fall between the deadline and the send.
    pub fn encode_body(&self, prompt: &PromptBody, max_tokens: u32) -> bytes::Bytes {
        serde_json::to_vec(&self.body(prompt, max_tokens))
            .unwrap_or_default()
            .into()
    }

    /// [`Client::stream_tagged`] with a body already encoded by [`Client::encode_body`].
    pub async fn stream_encoded(
        &self,
        body: Bytes,
        tag: Tag,
        cancel: &CancellationToken,
    ) -> Exchange {
        let request_id = tag.request_id.as_deref();
        let timer = StreamTimer::new(self.config.max_event_bytes).with_hook(tag.on_output);
        match &self.direct {
            Some(pool) => {
                self.exchange_direct(pool, body, request_id, timer, cancel)
                    .await
            }
            None => self.exchange_reqwest(body, request_id, timer, cancel).await,
        }
    }

    /// One exchange over the client's own connections.
    async fn exchange_direct(
        &self,
        pool: &Pool,
        body: Bytes,
        request_id: Option<&str>,
        mut timer: StreamTimer,
        cancel: &CancellationToken,
    ) -> Exchange {
        let request = pool.request(body, request_id);
        let sent = Instant::now();
        let deadlines = Deadlines::new(&self.config, sent);

        let response = response_head(pool.send(request), &deadlines, cancel).await;
        let mut reusable = None;
        let mut ended = None;
        match response {
            Err((outcome, error)) => timer.set_failure(outcome, error),
            Ok((response, _)) if !response.status().is_success() => {
                let status = response.status().as_u16();
                let (outcome, error) = http_failure(status, response.into_body()).await;
                timer.set_failure(outcome, error);
            }
            Ok((response, conn)) => {
                let mut body = StampedBody {
                    body: response.into_body(),
                    arrivals: conn.arrivals(),
                    floor: sent,
                };
                let read = read_body(&mut body, &mut timer, &deadlines, cancel).await;
                if read != BodyEnd::Failed {
                    ended = Some(body.arrivals.arrived(Instant::now()).max(body.floor));
                }
                let body = body.body;
                reusable = (read != BodyEnd::Failed).then_some((read, body, conn));
            }
        }

        let end = ended.unwrap_or_else(Instant::now);
        if let Some((read, mut body, conn)) = reusable
            && (read == BodyEnd::Ended || drain(&mut body).await)
        {
            pool.give_back(conn);
        }
        Exchange {
            sent,
            end,
            result: timer.finish(),
        }
    }

    /// One exchange through reqwest.
    async fn exchange_reqwest(
        &self,
        body: Bytes,
        request_id: Option<&str>,
        mut timer: StreamTimer,
        cancel: &CancellationToken,
    ) -> Exchange {
        let request = self.request(body, request_id);
        let sent = Instant::now();
        let deadlines = Deadlines::new(&self.config, sent);

        let send = async { self.send(request).await.map_err(send_failure) };
        let response = response_head(send, &deadlines, cancel).await;
        match response {
            Err((outcome, error)) => timer.set_failure(outcome, error),
            Ok(response) if !response.status().is_success() => {
                let status = response.status().as_u16();
                let (outcome, error) = http_failure(status, response).await;
                timer.set_failure(outcome, error);
            }
            Ok(mut response) => {
                read_body(&mut response, &mut timer, &deadlines, cancel).await;
            }
        }

        let end = Instant::now();
        Exchange {
            sent,
            end,
            result: timer.finish(),
        }
    }
}

impl Client {
    /// The streaming request for `body`, built without parsing anything: the URL was
    /// parsed once and the header values are static or copied. (reqwest's builder moves a
    /// `user:password@` of the URL into basic auth, so no password reaches an error text.)
    fn request(&self, body: Bytes, request_id: Option<&str>) -> reqwest::Result<Request> {
        let mut builder = self
            .http
            .post(self.url().clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            builder = builder.header(HeaderName::from_static(REQUEST_ID_HEADER), value);
        }
        builder.build()
    }

    /// Sends a request built by [`Client::request`].
    async fn send(&self, request: reqwest::Result<Request>) -> reqwest::Result<Response> {
        self.http.execute(request?).await
    }
}

/// The streaming endpoint of `config`, parsed.
fn stream_url(config: &ClientConfig) -> Result<reqwest::Url, ClientError> {
    let text = match config.api {
        Api::Chat => config.endpoint.api("chat/completions"),
        Api::Completions => config.endpoint.api("completions"),
    };
    reqwest::Url::parse(&text).map_err(|e| ClientError::BaseUrl {
        url: redact_url(&text),
        reason: e.to_string(),
    })
}

/// The two timeouts of one exchange as instants.
struct Deadlines {
    first_token: Option<Instant>,
    total: Option<Instant>,
}

/// Stands for "no deadline": far enough away to never fire in a run.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

impl Deadlines {
    fn new(config: &ClientConfig, sent: Instant) -> Self {
        Self {
            first_token: config.first_token_timeout.map(|t| sent + t),
            total: config.total_timeout.map(|t| sent + t),
        }
    }

    fn after_output(&self) -> Instant {
        self.total.unwrap_or_else(|| Instant::now() + FAR_FUTURE)
    }

    fn before_output(&self) -> Instant {
        match self.first_token {
            Some(first) => first.min(self.after_output()),
            None => self.after_output(),
        }
    }

    /// The deadline while reading, given whether output has arrived.
    fn reading(&self, has_output: bool) -> Instant {
        match has_output {
            true => self.after_output(),
            false => self.before_output(),
        }
    }

    /// The outcome of a timeout that fired, given whether output had arrived.
    fn expired(&self, has_output: bool) -> (Outcome, String) {
        let first_fired = !has_output
            && self
                .first_token
                .is_some_and(|f| self.total.is_none_or(|t| f <= t));
        if first_fired {
            let text = "no output before the first-token timeout (--first-token-timeout)";
            (Outcome::Timeout(TimeoutKind::FirstToken), text.to_string())
        } else {
            let text = "stream not finished before the total timeout (--timeout)";
            (Outcome::Timeout(TimeoutKind::Total), text.to_string())
        }
    }
}

/// Waits for `send` to give the response head, until the first deadline or `cancel`.
async fn response_head<R>(
    send: impl std::future::Future<Output = Result<R, (Outcome, String)>>,
    deadlines: &Deadlines,
    cancel: &CancellationToken,
) -> Result<R, (Outcome, String)> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err((Outcome::Cancelled, "cancelled".to_string())),
        r = timeout_at(deadlines.before_output(), send) => {
            r.unwrap_or_else(|_| Err(deadlines.expired(false)))
        }
    }
}

/// A response body read chunk by chunk: reqwest's, or hyper's on the direct transport.
trait ChunkSource {
    /// The next chunk of the body and when it arrived, `None` at its end, or why it broke
    /// off.
    async fn next_chunk(&mut self) -> Result<Option<(Bytes, Instant)>, String>;
}

impl ChunkSource for reqwest::Response {
    async fn next_chunk(&mut self) -> Result<Option<(Bytes, Instant)>, String> {
        let chunk = self.chunk().await.map_err(|e| error_chain(&e))?;
        Ok(chunk.map(|bytes| (bytes, Instant::now())))
    }
}

impl ChunkSource for hyper::body::Incoming {
    async fn next_chunk(&mut self) -> Result<Option<(Bytes, Instant)>, String> {
        let chunk = next_data(self).await?;
        Ok(chunk.map(|bytes| (bytes, Instant::now())))
    }
}

/// A body on one of the client's own connections, whose chunks are timed by the kernel's
/// receive stamp of the connection's last read when there is one.
struct StampedBody<'a> {
    body: hyper::body::Incoming,
    arrivals: &'a Arrivals,
    /// No chunk arrived before the request was sent or before the chunk ahead of it.
    floor: Instant,
}

impl ChunkSource for StampedBody<'_> {
    async fn next_chunk(&mut self) -> Result<Option<(Bytes, Instant)>, String> {
        let Some(bytes) = next_data(&mut self.body).await? else {
            return Ok(None);
        };
        let at = self.arrivals.arrived(Instant::now()).max(self.floor);
        self.floor = at;
        Ok(Some((bytes, at)))
    }
}

/// How reading a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// The body ended.
    Ended,
    /// The stream said it was done (`[DONE]`) or the timer gave up on it; the body may
    /// hold more.
    Stopped,
    /// A timeout, a cancellation or a broken body.
    Failed,
}

/// Reads the body to its end, a timeout or `cancel`. The cancellation and timeout futures
/// are made once per exchange (the timeout is moved when the first output arrives), not per
/// read: per read they cost a timer registration and a waiter on the shared token for every
/// streamed chunk.
async fn read_body(
    body: &mut impl ChunkSource,
    timer: &mut StreamTimer,
    deadlines: &Deadlines,
    cancel: &CancellationToken,
) -> BodyEnd {
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    let mut has_output = timer.has_output();
    let expiry = tokio::time::sleep_until(deadlines.reading(has_output));
    tokio::pin!(expiry);
    loop {
        let read = tokio::select! {
            biased;
            _ = &mut cancelled => {
                timer.set_failure(Outcome::Cancelled, "cancelled".to_string());
                return BodyEnd::Failed;
            }
            r = body.next_chunk() => r,
            _ = &mut expiry => {
                set_failure(timer, deadlines.expired(timer.has_output()));
                return BodyEnd::Failed;
            }
        };
        match read {
            Err(error) => {
                set_failure(timer, (Outcome::StreamCut, error));
                return BodyEnd::Failed;
            }
            Ok(None) => return BodyEnd::Ended,
            Ok(Some((bytes, at))) => {
                if timer.on_bytes(&bytes, at) == Flow::Stop {
                    return BodyEnd::Stopped;
                }
            }
        }
        if !has_output && timer.has_output() {
            has_output = true;
            expiry.as_mut().reset(deadlines.reading(true));
        }
    }
}

/// Most of a body read after the stream said it was done, to reuse its connection.
const DRAIN_BYTES: usize = 64 * 1024;

/// How long that read may take.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(200);

/// Reads what follows `[DONE]` (usually only the end of the chunked body) so that the
/// connection can serve another request. False when the body did not end soon.
async fn drain(body: &mut hyper::body::Incoming) -> bool {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut read = 0;
    while read <= DRAIN_BYTES {
        match timeout_at(deadline, next_data(body)).await {
            Ok(Ok(Some(bytes))) => read += bytes.len(),
            Ok(Ok(None)) => return true,
            _ => return false,
        }
    }
    false
}

fn set_failure(timer: &mut StreamTimer, (outcome, error): (Outcome, String)) {
    timer.set_failure(outcome, error);
}

/// A failure before any response: connect timeout, refused, reset.
fn send_failure(err: reqwest::Error) -> (Outcome, String) {
    let text = error_chain(&err);
    if err.is_timeout() && err.is_connect() {
        (Outcome::Timeout(TimeoutKind::Connect), text)
    } else {
        (Outcome::Connect, text)
    }
}

/// A non-2xx status, with the start of its body.
async fn http_failure(status: u16, mut body: impl ChunkSource) -> (Outcome, String) {
    let mut excerpt = Vec::new();
    let deadline = Instant::now() + ERROR_BODY_TIMEOUT;
    while excerpt.len() < ERROR_BODY_BYTES {
        match timeout_at(deadline, body.next_chunk()).await {
            Ok(Ok(Some((bytes, _)))) => excerpt.extend_from_slice(&bytes),
            _ => break,
        }
    }
    excerpt.truncate(ERROR_BODY_BYTES);
    let text = String::from_utf8_lossy(&excerpt);
    let text = text.trim();
    let error = match text.is_empty() {
        true => format!("http {status}"),
        false => format!("http {status}: {text}"),
    };
    (Outcome::Http(status), error)
}

fn default_headers(config: &ClientConfig) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    for spec in &config.headers {
        let bad = || ClientError::Header(redact_header(spec));
        let (name, value) = spec.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        headers.insert(name, value);
    }
    if let Some(key) = &config.api_key.0 {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| ClientError::ApiKey)?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_with_or_without_v1_gives_one_root() {
        for url in [
            "http://127.0.0.1:1919/v1",
            "http://127.0.0.1:1919/v1/",
            "http://127.0.0.1:1919",
            "http://127.0.0.1:1919/",
        ] {
            let endpoint = Endpoint::parse(url).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(endpoint.root, "http://127.0.0.1:1919", "{url}");
            assert_eq!(endpoint.api("models"), "http://127.0.0.1:1919/v1/models");
            assert_eq!(endpoint.server("/metrics"), "http://127.0.0.1:1919/metrics");
        }
        let prefixed = Endpoint::parse("https://h/proxy/v1").map(|e| e.root).ok();
        assert_eq!(prefixed.as_deref(), Some("https://h/proxy"));
        assert!(Endpoint::parse("ftp://h").is_err());
        assert!(Endpoint::parse("127.0.0.1:8000").is_err());
    }

    #[test]
    fn passwords_in_urls_are_redacted() {
        let url = "http://me:pw-1@h:8000/v1";
        assert_eq!(redact_url(url), "http://me:***@h:8000/v1");
        let root = Endpoint::parse(url).map(|e| e.shown()).ok();
        assert_eq!(root.as_deref(), Some("http://me:***@h:8000"));
        assert_eq!(redact_url("http://h/a@b:c"), "http://h/a@b:c");
        assert_eq!(redact_url("http://me@h"), "http://me@h");
        let err = Endpoint::parse("http://me:pw-1@[bad/v1").err();
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(!err.contains("pw-1") && err.contains("me:***@"), "{err}");
    }

    fn config(api: Api, extra: Option<&str>) -> ClientConfig {
        ClientConfig {
            endpoint: Endpoint {
                root: "http://h".into(),
            },
            api,
            model: "m".into(),
            headers: vec!["X-Team: bench".into()],
            api_key: ApiKey(Some("sk-secret".into())),
            extra_body: extra.and_then(|e| serde_json::from_str(e).ok()),
            connect_timeout: Duration::from_secs(1),
            first_token_timeout: None,
            total_timeout: None,
            max_event_bytes: 1024,
            http_client: HttpClient::Direct,
            chunk_clock: ChunkClock::Kernel,
        }
    }

    #[test]
    fn chat_body_is_the_seeds_and_extra_body_merges_last() {
        let client = Client::new(config(Api::Chat, Some(r#"{"top_k": 5, "seed": 1}"#)));
        let client = client.unwrap_or_else(|e| panic!("{e}"));
        let body = client.body(&PromptBody::Text("hello".into()), 7);
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["messages"][0]["content"], "hello");
        assert_eq!(body["max_tokens"], 7);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["ignore_eos"], true);
        assert_eq!(body["temperature"], 0);
        assert_eq!(body["top_k"], 5);
        assert_eq!(body["seed"], 1);
    }

    #[test]
    fn completions_body_takes_token_ids() {
        let client = Client::new(config(Api::Completions, None));
        let client = client.unwrap_or_else(|e| panic!("{e}"));
        let body = client.body(&PromptBody::TokenIds(vec![1, 2]), 3);
        assert_eq!(body["prompt"], json!([1, 2]));
        assert!(body.get("messages").is_none());
        assert_eq!(client.url().as_str(), "http://h/v1/completions");
    }

    #[test]
    fn api_key_is_redacted_in_debug() {
        let text = format!("{:?}", config(Api::Chat, None));
        assert!(!text.contains("sk-secret"), "{text}");
        let client = Client::new(config(Api::Chat, None)).map(|c| format!("{c:?}"));
        assert!(!client.unwrap_or_default().contains("sk-secret"));
    }

    #[test]
    fn bad_header_is_named() {
        let mut bad = config(Api::Chat, None);
        bad.headers = vec!["no-colon".into()];
        let err = Client::new(bad.clone())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no-colon"), "{err}");
        bad.headers = vec!["X-Api-Key: sk-1\u{7f}".into()];
        let err = Client::new(bad).err().map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(err.contains("X-Api-Key") && !err.contains("sk-1"), "{err}");
    }
}
