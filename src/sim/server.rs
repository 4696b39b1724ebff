//! The HTTP side of the simulator: shared state, the axum router and one handler per
//! endpoint. Handlers parse and validate, count prompt tokens, pick the request's fault and
//! hand the response to `stream`; no timing logic lives here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;
use tokio::time::Instant;

use super::api::{self, ApiError, GenRequest, Prompt, TokenizeBody};
use super::chunk_log::{ChunkKind, ChunkLog, ChunkRecord};
use super::config::{SimConfig, SimConfigError};
use super::engine::EngineHandle;
use super::faults::{self, FaultKind};
use super::metrics::SimMetrics;
use super::sse::{self, ChunkHeader, Endpoint};
use super::stream::{Job, RunningGuard, SseStream, TokenSource, collect};
use crate::client::arrival::Arrivals;
use crate::prompt::Tokenizer;

/// Token texts tried, in order, for the one every chunk carries: the first that encodes as
/// exactly one token, also when repeated, so re-tokenizing the output counts it exactly.
const WORD_CANDIDATES: [&str; 5] = [" the", " of", " and", " a", "a"];

/// Placeholder ids for the chat template tokens (above any real vocabulary).
const TEMPLATE_IDS: [u32; 3] = [u32::MAX - 1, u32::MAX - 2, u32::MAX - 3];

/// Why a simulator cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A setting is invalid.
    #[error("simulator settings: {0}")]
    Config(#[from] SimConfigError),
    /// The chunk log file cannot be created.
    #[error("chunk log {path}: {source}")]
    ChunkLog {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Shared by every handler (cheap to clone).
#[derive(Clone)]
pub struct SimState {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimConfig,
    metrics: Arc<SimMetrics>,
    engine: Option<EngineHandle>,
    log: Option<Arc<ChunkLog>>,
    next_request: AtomicU64,
    word: Arc<str>,
    word_id: u32,
    created: u64,
}

impl SimState {
    /// Validates `config` and starts the engine task (engine mode) on the current runtime.
    pub fn new(config: SimConfig) -> Result<SimState, SimError> {
        config.validate()?;
        let log = ChunkLog::open(config.record_chunks, config.chunk_log.as_deref()).map_err(
            |source| SimError::ChunkLog {
                path: config
                    .chunk_log
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                source,
            },
        )?;
        let metrics = Arc::new(SimMetrics::default());
        let engine = match config.timing {
            super::TimingMode::Engine => Some(EngineHandle::spawn(
                config.engine.clone(),
                config.speed,
                metrics.clone(),
            )),
            super::TimingMode::Fixed => None,
        };
        let word: Arc<str> = pick_word(config.tokenizer.as_deref()).into();
        let word_id = config
            .tokenizer
            .as_deref()
            .and_then(|tok| tok.encode(&word).first().copied())
            .unwrap_or(0);
        let created = super::chunk_log::unix_ns_now() / 1_000_000_000;
        let inner = Inner {
            config,
            metrics,
            engine,
            log: log.map(Arc::new),
            next_request: AtomicU64::new(0),
            word,
            word_id,
            created,
        };
        Ok(SimState {
            inner: Arc::new(inner),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// The live counters.
    pub fn metrics(&self) -> &SimMetrics {
        &self.inner.metrics
    }

    /// The text of every generated token.
    pub fn word(&self) -> &str {
        &self.inner.word
    }

    /// Chunk times kept in memory (empty unless `record_chunks`).
    pub fn chunk_records(&self) -> Vec<ChunkRecord> {
        self.inner
            .log
            .as_ref()
            .map(|l| l.records())
            .unwrap_or_default()
    }

    /// Flushes the chunk log file, if any.
    pub fn flush_chunk_log(&self) -> std::io::Result<()> {
        self.inner.log.as_ref().map_or(Ok(()), |l| l.flush())
    }
}

/// The simulator's router.
pub fn app(state: SimState) -> Router {
    let limit = state.config().body_limit_bytes;
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/generate", post(sglang_generate))
        .route("/tokenize", post(tokenize))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(stamp_head))
        .with_state(state)
}

/// When a request's head was read, in Unix ns: stamped before any handler reads the body;
/// and when its first bytes reached the socket, by the kernel's stamp, where known.
#[derive(Debug, Clone, Copy)]
struct HeadRead {
    read_unix_ns: u64,
    arrived_unix_ns: Option<u64>,
}

/// The receive stamps of the connection a request came on (see `sim::serve_state`).
#[derive(Debug, Clone)]
pub(crate) struct ConnArrivals(pub(crate) Arc<Arrivals>);

/// Stamps [`HeadRead`] on every request as it comes in. The connection's stamps are taken
/// again once the handler has returned, so that the reads of this request's body do not
/// count as the next request's arrival (clients send the next request on a connection only
/// after this one's response).
async fn stamp_head(mut request: Request, next: Next) -> Response {
    let read_unix_ns = super::chunk_log::unix_ns_now();
    let conn = request
        .extensions()
        .get::<ConnectInfo<ConnArrivals>>()
        .map(|info| info.0.0.clone());
    let arrived_unix_ns = conn
        .as_ref()
        .and_then(|arrivals| arrivals.take_first())
        .map(|stamp| stamp.min(read_unix_ns));
    request.extensions_mut().insert(HeadRead {
        read_unix_ns,
        arrived_unix_ns,
    });

    let response = next.run(request).await;
    if let Some(arrivals) = conn {
        arrivals.take_first();
    }
    response
}

/// An OpenAI-shaped error response.
fn error_response(status: u16, kind: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(sse::error_json(status, kind, message))).into_response()
}

fn api_error(err: &ApiError) -> Response {
    error_response(err.status(), err.kind(), &err.to_string())
}

async fn not_found() -> Response {
    error_response(404, "NotFoundError", "no such endpoint")
}

async fn health() -> StatusCode {
    StatusCode::OK
}

async fn models(State(state): State<SimState>) -> Response {
    let cfg = state.config();
    let model = json!({
        "id": cfg.model_id, "object": "model", "created": state.inner.created,
        "owned_by": "tracebench", "root": cfg.model_id, "parent": null,
        "max_model_len": cfg.max_model_len,
    });
    axum::Json(json!({"object": "list", "data": [model]})).into_response()
}

async fn metrics(State(state): State<SimState>) -> Response {
    let text = state.metrics().render(&state.config().model_id);
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn chat(
    State(state): State<SimState>,
    Extension(head): Extension<HeadRead>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(state, &headers, head, Endpoint::Chat, &body).await
}

async fn completions(
    State(state): State<SimState>,
    Extension(head): Extension<HeadRead>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(state, &headers, head, Endpoint::Completion, &body).await
}

/// SGLang's native `/generate` (see `sglang.rs`).
async fn sglang_generate(
    State(state): State<SimState>,
    Extension(head): Extension<HeadRead>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generate(state, &headers, head, Endpoint::Generate, &body).await
}

/// Every generation endpoint: validate, count, pick the fault, then stream or collect.
async fn generate(
    state: SimState,
    headers: &HeaderMap,
    head: HeadRead,
    endpoint: Endpoint,
    body: &[u8],
) -> Response {
    let (arrived, arrived_unix_ns) = (Instant::now(), super::chunk_log::unix_ns_now());
    let cfg = state.config();
    let parsed = match endpoint {
        Endpoint::Chat => api::parse_chat(body, cfg),
        Endpoint::Completion => api::parse_completion(body, cfg),
        Endpoint::Generate => super::sglang::parse_generate(body, cfg),
    };
    let request = match parsed {
        Ok(r) => r,
        Err(err) => return api_error(&err),
    };
    let (prompt_tokens, tokens) = match count_prompt(&state, request.prompt.clone()).await {
        Ok(counted) => counted,
        Err(err) => return api_error(&err),
    };
    if let Err(err) = check_fits(&state, tokens.len(), request.max_tokens) {
        return api_error(&err);
    }

    let n = state.inner.next_request.fetch_add(1, Ordering::Relaxed) + 1;
    let fault = faults::pick(&cfg.faults, cfg.fault_seed, n).cloned();
    if let Some(FaultKind::Status { code, body }) = fault {
        return status_fault(code, body);
    }

    let job = new_job(&state, headers, endpoint, n, &request, prompt_tokens, fault);
    if let Some(arrived) = head.arrived_unix_ns {
        job.log_at(ChunkKind::Arrived, 0, arrived);
    }
    job.log_at(ChunkKind::Head, 0, head.read_unix_ns);
    job.log_at(ChunkKind::Received, 0, arrived_unix_ns);
    let source = start_source(&state, arrived, tokens, request.max_tokens);
    if request.stream {
        SseStream::new(job, source).into_response()
    } else {
        collect(job, source).await
    }
}

/// The response of a status-code fault.
fn status_fault(code: u16, body: bool) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if body {
        error_response(
            code,
            "SimulatedFault",
            &format!("simulated fault: HTTP {code}"),
        )
    } else {
        status.into_response()
    }
}

/// Refuses requests longer than the context or the whole KV cache.
fn check_fits(state: &SimState, prompt_len: usize, max_tokens: u32) -> Result<(), ApiError> {
    let cfg = state.config();
    let total = prompt_len as u64 + u64::from(max_tokens);
    if total > u64::from(cfg.max_model_len) {
        return Err(ApiError::Invalid(format!(
            "this model's maximum context length is {} tokens; the request asks for {total} \
             ({prompt_len} in the prompt, {max_tokens} in the completion)",
            cfg.max_model_len
        )));
    }
    match &state.inner.engine {
        Some(engine) if !engine.fits(prompt_len as u32, max_tokens) => Err(ApiError::Invalid(
            format!("the request ({total} tokens) does not fit in the simulated KV cache"),
        )),
        _ => Ok(()),
    }
}

fn new_job(
    state: &SimState,
    headers: &HeaderMap,
    endpoint: Endpoint,
    n: u64,
    request: &GenRequest,
    prompt_tokens: Option<u32>,
    fault: Option<FaultKind>,
) -> Job {
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
        Endpoint::Generate => "generate",
    };
    let id = format!("{prefix}-{n}");
    let client_request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(Arc::from);
    let fixed = state.inner.engine.is_none();
    let header = ChunkHeader {
        id: id.clone(),
        created: super::chunk_log::unix_ns_now() / 1_000_000_000,
        model: state.config().model_id.clone(),
        endpoint,
    };
    Job {
        header,
        request_id: id.into(),
        client_request_id,
        prompt_tokens,
        max_tokens: request.max_tokens,
        include_usage: request.include_usage,
        fault,
        word: state.inner.word.clone(),
        word_id: state.inner.word_id,
        metrics: state.inner.metrics.clone(),
        log: state.inner.log.clone(),
        _running: fixed.then(|| RunningGuard::new(state.inner.metrics.clone())),
    }
}

/// Fixed mode: a schedule from the arrival time. Engine mode: a queued engine request.
fn start_source(
    state: &SimState,
    arrived: Instant,
    tokens: Vec<u32>,
    max_tokens: u32,
) -> TokenSource {
    let cfg = state.config();
    match &state.inner.engine {
        Some(engine) => TokenSource::Engine {
            rx: engine.submit(tokens, max_tokens),
            cached_tokens: 0,
        },
        None => {
            let m = &state.inner.metrics;
            SimMetrics::add(&m.prompt_tokens, tokens.len() as u64);
            SimMetrics::add(&m.prefix_cache_queries, tokens.len() as u64);
            TokenSource::Fixed {
                first_at: arrived + cfg.scaled(cfg.ttft),
                itl: cfg.scaled(cfg.itl),
                produced: 0,
            }
        }
    }
}

/// The prompt's token count (for `usage`; `None` without a tokenizer) and the token ids
/// (pseudo-tokens without a tokenizer) the engine's prefix cache sees.
async fn count_prompt(
    state: &SimState,
    prompt: Prompt,
) -> Result<(Option<u32>, Vec<u32>), ApiError> {
    let Some(tokenizer) = state.config().tokenizer.clone() else {
        let exact = matches!(prompt, Prompt::Ids(_));
        let ids = pseudo_tokens(prompt);
        return Ok((exact.then_some(ids.len() as u32), ids));
    };
    // Tokenizing a long prompt takes milliseconds of CPU: keep it off the async workers.
    let ids = tokio::task::spawn_blocking(move || encode_prompt(&*tokenizer, prompt))
        .await
        .map_err(|e| ApiError::Invalid(format!("tokenizer failed: {e}")))??;
    Ok((Some(ids.len() as u32), ids))
}

/// Token ids of a prompt, with the chat template as placeholder ids.
fn encode_prompt(tok: &dyn Tokenizer, prompt: Prompt) -> Result<Vec<u32>, ApiError> {
    match prompt {
        Prompt::Text(text) => Ok(tok.encode(&text)),
        Prompt::Ids(ids) => {
            let vocab = tok.vocab_size();
            match ids.iter().find(|id| **id >= vocab) {
                Some(bad) => Err(ApiError::Invalid(format!(
                    "prompt: token id {bad} is outside the vocabulary (size {vocab})"
                ))),
                None => Ok(ids),
            }
        }
        Prompt::Chat(messages) => Ok(chat_ids(&messages, |text| tok.encode(text))),
    }
}

/// Chat messages as ids: per message `[start, role, nl] content [end, nl]`, then the
/// generation prompt `[start, assistant, nl]`; the length is [`chat_prompt_tokens`].
fn chat_ids(messages: &[(String, String)], encode: impl Fn(&str) -> Vec<u32>) -> Vec<u32> {
    let [start, end, nl] = TEMPLATE_IDS;
    let role_id = |role: &str| u32::MAX - 16 - (role.bytes().map(u32::from).sum::<u32>() % 1024);
    let mut ids = Vec::new();
    for (role, content) in messages {
        ids.extend([start, role_id(role), nl]);
        ids.extend(encode(content));
        ids.extend([end, nl]);
    }
    ids.extend([start, role_id("assistant"), nl]);
    ids
}

/// Without a tokenizer: token-id prompts as they are, text as one pseudo-token per 4 bytes.
fn pseudo_tokens(prompt: Prompt) -> Vec<u32> {
    let text_ids = |text: &str| -> Vec<u32> {
        text.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
            .collect()
    };
    match prompt {
        Prompt::Ids(ids) => ids,
        Prompt::Text(text) => text_ids(&text),
        Prompt::Chat(messages) => chat_ids(&messages, text_ids),
    }
}

/// The token text every chunk carries (see [`WORD_CANDIDATES`]).
fn pick_word(tokenizer: Option<&dyn Tokenizer>) -> &'static str {
    let Some(tok) = tokenizer else {
        return WORD_CANDIDATES[0];
    };
    WORD_CANDIDATES
        .into_iter()
        .find(|w| tok.encode(w).len() == 1 && tok.encode(&w.repeat(4)).len() == 4)
        .unwrap_or(WORD_CANDIDATES[0])
}

/// `POST /tokenize` in vLLM's shape: `{"count", "max_model_len", "tokens", "token_strs"}`.
async fn tokenize(State(state): State<SimState>, body: Bytes) -> Response {
    let cfg = state.config();
    let request: TokenizeBody = match api::from_json(&body) {
        Ok(r) => r,
        Err(err) => return api_error(&err),
    };
    if let Some(model) = &request.model
        && *model != cfg.model_id
    {
        return api_error(&ApiError::UnknownModel(model.clone()));
    }
    let prompt = match (request.prompt.clone(), request.messages()) {
        (Some(text), _) => Prompt::Text(text),
        (None, Some(messages)) => Prompt::Chat(messages),
        (None, None) => {
            return api_error(&ApiError::Invalid(
                "prompt or messages: one is required".into(),
            ));
        }
    };
    if cfg.tokenizer.is_none() {
        return api_error(&ApiError::Invalid(
            "tokenization is disabled (--no-tokenize)".into(),
        ));
    }
    match count_prompt(&state, prompt).await {
        Ok((_, ids)) => axum::Json(json!({
            "count": ids.len(), "max_model_len": cfg.max_model_len, "tokens": ids, "token_strs": null,
        }))
        .into_response(),
        Err(err) => api_error(&err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::chat_prompt_tokens;

    #[test]
    fn chat_ids_have_the_documented_overhead() {
        let messages = vec![
            ("system".to_owned(), "ab".to_owned()),
            ("user".to_owned(), "cdef".to_owned()),
        ];
        let ids = chat_ids(&messages, |t| t.bytes().map(u32::from).collect());
        assert_eq!(ids.len() as u32, chat_prompt_tokens(6, 2));
    }

    #[test]
    fn pseudo_tokens_are_a_quarter_of_the_bytes() {
        assert_eq!(pseudo_tokens(Prompt::Text("abcdefghi".into())).len(), 3);
        assert_eq!(pseudo_tokens(Prompt::Ids(vec![5, 6])), vec![5, 6]);
    }
}
