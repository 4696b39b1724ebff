//! Chat template calibration: how many tokens the server adds around a prompt (chat
//! template, BOS), measured once before the run so that every prompt can be built that much
//! shorter and the server counts exactly the trace's `input_length`.
//!
//! First choice: one request with a prompt of known length and `max_tokens` 1, reading
//! `usage.prompt_tokens`. Fallback: the server's `/tokenize` (vLLM and SGLang accept chat
//! messages there). If neither answers, no correction is applied and the run says so, with
//! what each attempt got (`error`).

use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::client::{Api, Client, PromptBody};

/// How the overhead was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// `usage.prompt_tokens` of a probe request.
    Usage,
    /// The server's `/tokenize`.
    Tokenize,
    /// Not measured (turned off, or the server told nothing): no correction.
    None,
}

/// The result, written to `run.json` as `calibration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// How it was measured.
    pub method: CalibrationMethod,
    /// Tokens subtracted from every prompt.
    pub overhead_tokens: u32,
    /// Length of the probe prompt by our tokenizer.
    pub probe_tokens: u32,
    /// What the server counted for the probe; `None` when it told nothing.
    pub server_prompt_tokens: Option<u32>,
    /// Why both the probe and `/tokenize` failed; `None` when not tried or measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Longest server error kept in the calibration's `error`, characters.
const ERROR_CHARS: usize = 300;

impl Calibration {
    /// No calibration: no correction.
    pub fn none(probe_tokens: u32) -> Self {
        Self {
            method: CalibrationMethod::None,
            overhead_tokens: 0,
            probe_tokens,
            server_prompt_tokens: None,
            error: None,
        }
    }

    /// No calibration because the server told nothing: `error` says what it answered.
    pub fn failed(probe_tokens: u32, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::none(probe_tokens)
        }
    }

    /// One line for stderr.
    pub fn describe(&self) -> String {
        match (self.method, self.server_prompt_tokens) {
            (CalibrationMethod::None, _) => match &self.error {
                None => {
                    "calibration: none, prompts are not corrected for the chat template".to_string()
                }
                Some(error) => format!(
                    "calibration: none ({error}), prompts are not corrected for the chat template"
                ),
            },
            (method, server) => format!(
                "calibration: {} tokens of template overhead (method {:?}: server counted {} \
                 for a {}-token probe)",
                self.overhead_tokens,
                method,
                server.unwrap_or(0),
                self.probe_tokens
            )
            .to_lowercase(),
        }
    }
}

/// Measures the overhead with `probe`, a prompt our tokenizer counts as `probe_tokens`.
pub async fn calibrate(client: &Client, probe: &PromptBody, probe_tokens: u32) -> Calibration {
    let from_usage = probe_usage(client, probe).await;
    let (method, server) = match from_usage {
        Ok(count) => (CalibrationMethod::Usage, Some(count)),
        Err(probe_error) => match tokenize(client, probe).await {
            Ok(count) => (CalibrationMethod::Tokenize, Some(count)),
            Err(tokenize_error) => {
                let error = format!("probe request: {probe_error}; /tokenize: {tokenize_error}");
                return Calibration::failed(probe_tokens, error);
            }
        },
    };
    let overhead = server.unwrap_or(probe_tokens).saturating_sub(probe_tokens);
    if server.is_some_and(|s| s < probe_tokens) {
        tracing::warn!(
            "the server counts the {probe_tokens}-token probe as {} tokens: its tokenizer \
             differs from ours (pass the server's with --tokenizer)",
            server.unwrap_or(0)
        );
    }
    Calibration {
        method,
        overhead_tokens: overhead,
        probe_tokens,
        server_prompt_tokens: server,
        error: None,
    }
}

/// The probe's `usage.prompt_tokens`, or why there is none.
async fn probe_usage(client: &Client, probe: &PromptBody) -> Result<u32, String> {
    let body = client.body(probe, 1);
    let exchange = client.stream(&body, &CancellationToken::new()).await;
    let result = exchange.result;
    if let Some(count) = result.usage.and_then(|u| u.prompt_tokens) {
        return Ok(count);
    }
    Err(match result.error {
        Some(error) => shorten(&format!("{}: {error}", result.outcome)),
        None => format!(
            "{}, but no usage.prompt_tokens in the answer",
            result.outcome
        ),
    })
}

/// `POST ROOT/tokenize`: vLLM answers `count`, others a `tokens` list; or why it did not.
async fn tokenize(client: &Client, probe: &PromptBody) -> Result<u32, String> {
    let config = client.config();
    let prompt = match probe {
        PromptBody::Text(text) => json!(text),
        PromptBody::TokenIds(ids) => json!(ids),
    };
    let body = match config.api {
        Api::Chat => {
            json!({"model": config.model, "messages": [{"role": "user", "content": prompt}]})
        }
        Api::Completions => json!({"model": config.model, "prompt": prompt}),
    };
    let url = config.endpoint.server("tokenize");
    let response = client
        .http()
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| shorten(&e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("http {}", status.as_u16()));
    }
    let answer: Value = response
        .json()
        .await
        .map_err(|e| shorten(&format!("not JSON: {e}")))?;
    let count = match answer.get("count").and_then(Value::as_u64) {
        Some(count) => Some(count),
        None => answer
            .get("tokens")
            .and_then(Value::as_array)
            .map(|t| t.len() as u64),
    };
    let count = count.ok_or_else(|| "no count or tokens in the answer".to_string())?;
    u32::try_from(count).map_err(|_| format!("count {count} out of range"))
}

/// `text` cut to [`ERROR_CHARS`] characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(ERROR_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}
