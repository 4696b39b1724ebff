//! SGLang's native API, `POST /generate`: its request fields and its response shapes, for
//! clients that speak only it (SGLang's `bench_serving` replays Mooncake traces through
//! it). Requests become the same [`GenRequest`] as the OpenAI endpoints, so timing, the KV
//! and prefix cache, faults, metrics and the chunk log are shared; only the bytes differ.
//! A streamed response repeats the whole text so far in every event (SGLang's default,
//! non-incremental streaming), so its events are rendered per token, not once per request.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{self, ApiError, GenRequest, PromptField};
use super::config::SimConfig;
use super::stream::Job;

/// SGLang's default `max_new_tokens`.
pub const SGLANG_DEFAULT_MAX_NEW_TOKENS: u32 = 128;

/// The `weight_version` SGLang reports when none is configured.
const WEIGHT_VERSION: &str = "default";

/// `sampling_params` of a `/generate` body (other fields are accepted and ignored).
#[derive(Debug, Default, Deserialize)]
struct SamplingParams {
    max_new_tokens: Option<u64>,
    min_new_tokens: Option<u64>,
    n: Option<u64>,
}

/// A `/generate` body: exactly one of `text` and `input_ids`.
#[derive(Debug, Deserialize)]
struct GenerateBody {
    text: Option<PromptField>,
    input_ids: Option<PromptField>,
    #[serde(default)]
    sampling_params: SamplingParams,
    stream: Option<bool>,
    #[serde(default)]
    return_logprob: bool,
}

/// Parses a `/generate` body. Refused: both or neither of `text` and `input_ids`, batches,
/// `n` other than 1, `return_logprob: true` (no logprobs are simulated) and
/// `max_new_tokens: 0` (SGLang's prefill-only request).
pub(crate) fn parse_generate(body: &[u8], cfg: &SimConfig) -> Result<GenRequest, ApiError> {
    let generate: GenerateBody = api::from_json(body)?;
    let prompt = match (generate.text, generate.input_ids) {
        (Some(text), None) => api::one_prompt(text, "text")?,
        (None, Some(ids)) => api::one_prompt(ids, "input_ids")?,
        _ => {
            return Err(ApiError::Invalid(
                "text or input_ids: exactly one is required".into(),
            ));
        }
    };

    let params = generate.sampling_params;
    if params.n.is_some_and(|n| n != 1) {
        return Err(ApiError::Invalid(
            "sampling_params.n: only n=1 is supported".into(),
        ));
    }
    if generate.return_logprob {
        return Err(ApiError::Invalid(
            "return_logprob: logprobs are not simulated".into(),
        ));
    }
    let max_tokens = api::output_budget(
        params
            .max_new_tokens
            .unwrap_or(u64::from(SGLANG_DEFAULT_MAX_NEW_TOKENS)),
        params.min_new_tokens,
        ("max_new_tokens", "min_new_tokens"),
        cfg,
    )?;
    Ok(GenRequest {
        prompt,
        max_tokens,
        stream: generate.stream.unwrap_or(false),
        include_usage: false,
    })
}

/// The `meta_info` after `completion_tokens` tokens; `finished` adds SGLang's
/// `{"type": "length", "length": N}` finish reason (else `null`). `prompt_tokens` is left
/// out when the simulator counts no tokens (`--no-tokenize`), as `usage` is.
fn meta_info(job: &Job, completion_tokens: u32, cached_tokens: u32, finished: bool) -> Value {
    let finish_reason = if finished {
        json!({"type": "length", "length": completion_tokens})
    } else {
        Value::Null
    };
    let mut meta = json!({
        "id": &*job.request_id,
        "finish_reason": finish_reason,
        "weight_version": WEIGHT_VERSION,
        "num_retractions": 0,
        "reasoning_tokens": 0,
        "completion_tokens": completion_tokens,
        "cached_tokens": cached_tokens,
    });
    if let Some(prompt_tokens) = job.prompt_tokens {
        meta["prompt_tokens"] = json!(prompt_tokens);
    }
    meta
}

/// The response object after `completion_tokens` tokens: all the text and ids so far.
fn output(job: &Job, completion_tokens: u32, cached_tokens: u32, finished: bool) -> Value {
    let count = completion_tokens as usize;
    json!({
        "text": job.word.repeat(count),
        "output_ids": vec![job.word_id; count],
        "meta_info": meta_info(job, completion_tokens, cached_tokens, finished),
    })
}

/// The SSE event after `completion_tokens` tokens; `last` marks the finishing one.
pub(crate) fn token_event(
    job: &Job,
    completion_tokens: u32,
    cached_tokens: u32,
    last: bool,
) -> Bytes {
    let value = output(job, completion_tokens, cached_tokens, last);
    super::sse::event(&value)
}

/// The whole non-streaming response body.
pub(crate) fn full_body(job: &Job, cached_tokens: u32) -> Value {
    output(job, job.max_tokens, cached_tokens, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::api::Prompt;

    fn parse(body: &str) -> Result<GenRequest, ApiError> {
        parse_generate(body.as_bytes(), &SimConfig::default())
    }

    #[test]
    fn bench_serving_body_is_accepted() {
        let body = r#"{"text": "hi there", "sampling_params": {"temperature": 0.0,
            "max_new_tokens": 32, "ignore_eos": true}, "stream": true, "lora_path": null,
            "return_logprob": false, "return_routed_experts": false, "logprob_start_len": -1}"#;
        let r = parse(body).unwrap();
        assert_eq!(r.prompt, Prompt::Text("hi there".into()));
        assert_eq!(r.max_tokens, 32);
        assert!(r.stream);
        assert!(!r.include_usage);
    }

    #[test]
    fn ids_default_length_and_one_element_batches() {
        let r = parse(r#"{"input_ids": [[4, 5, 6]]}"#).unwrap();
        assert_eq!(r.prompt, Prompt::Ids(vec![4, 5, 6]));
        assert_eq!(r.max_tokens, SGLANG_DEFAULT_MAX_NEW_TOKENS);
        assert!(!r.stream);
    }

    #[test]
    fn refuses_what_is_not_simulated() {
        for body in [
            r#"{"sampling_params": {"max_new_tokens": 3}}"#,
            r#"{"text": "a", "input_ids": [1]}"#,
            r#"{"text": ["a", "b"]}"#,
            r#"{"text": ""}"#,
            r#"{"text": "a", "sampling_params": {"max_new_tokens": 0}}"#,
            r#"{"text": "a", "sampling_params": {"max_new_tokens": 4, "min_new_tokens": 5}}"#,
            r#"{"text": "a", "sampling_params": {"n": 2}}"#,
            r#"{"text": "a", "return_logprob": true}"#,
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.status(), 400, "{body}");
        }
    }
}
