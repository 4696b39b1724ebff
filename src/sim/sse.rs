//! The bytes the simulator writes: SSE events and JSON bodies in vLLM's shapes, built here
//! by hand (with `serde_json::json!`), deliberately sharing no types with the client, so a
//! mistake in one cannot hide in the other. Token chunks are pre-rendered once per request.

use bytes::Bytes;
use serde_json::{Value, json};

/// Which endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
    /// SGLang's `/generate` (its events are rendered in `sglang.rs`, never here).
    Generate,
}

/// Token counts of a finished request, as `usage` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Prompt tokens; `None` without a tokenizer (then `usage` omits them).
    pub(crate) prompt_tokens: Option<u32>,
    /// Generated tokens.
    pub(crate) completion_tokens: u32,
    /// Prompt tokens served from the prefix cache.
    pub(crate) cached_tokens: u32,
}

impl Usage {
    /// The `usage` object.
    pub(crate) fn to_json(self) -> Value {
        match self.prompt_tokens {
            Some(prompt) => json!({
                "prompt_tokens": prompt,
                "total_tokens": prompt + self.completion_tokens,
                "completion_tokens": self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            }),
            None => json!({"completion_tokens": self.completion_tokens}),
        }
    }
}

/// What every chunk of one response shares: id, creation time, model, endpoint.
#[derive(Debug, Clone)]
pub(crate) struct ChunkHeader {
    /// Response id (`chatcmpl-7`, `cmpl-7`).
    pub(crate) id: String,
    /// Unix seconds.
    pub(crate) created: u64,
    /// The model id.
    pub(crate) model: String,
    /// The endpoint.
    pub(crate) endpoint: Endpoint,
}

impl ChunkHeader {
    fn object(&self, stream: bool) -> &'static str {
        match (self.endpoint, stream) {
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Completion | Endpoint::Generate, _) => "text_completion",
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The first chat chunk: the assistant role, no content.
    pub(crate) fn role_event(&self) -> Bytes {
        let choice = json!({"index": 0, "delta": {"role": "assistant", "content": ""},
            "logprobs": null, "finish_reason": null});
        event(&self.chunk(json!([choice])))
    }

    /// A chunk carrying one token's `text`; `last` sets `finish_reason: "length"`.
    pub(crate) fn token_event(&self, text: &str, last: bool) -> Bytes {
        let finish = if last { json!("length") } else { Value::Null };
        let choice = match self.endpoint {
            Endpoint::Chat => json!({"index": 0, "delta": {"content": text},
                "logprobs": null, "finish_reason": finish}),
            Endpoint::Completion | Endpoint::Generate => json!({"index": 0, "text": text,
                "logprobs": null, "finish_reason": finish, "stop_reason": null}),
        };
        event(&self.chunk(json!([choice])))
    }

    /// The `stream_options.include_usage` chunk: empty `choices`, then `usage`.
    pub(crate) fn usage_event(&self, usage: Usage) -> Bytes {
        let mut chunk = self.chunk(json!([]));
        chunk["usage"] = usage.to_json();
        event(&chunk)
    }

    /// The whole non-streaming response body.
    pub(crate) fn full_body(&self, text: &str, usage: Usage) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({"index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null, "finish_reason": "length", "stop_reason": null}),
            Endpoint::Completion | Endpoint::Generate => json!({"index": 0, "text": text,
                "logprobs": null, "finish_reason": "length", "stop_reason": null}),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage.to_json(),
        })
    }
}

/// An OpenAI-shaped error object.
pub(crate) fn error_json(status: u16, kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": status}})
}

/// One `data:` event of `value`.
pub(crate) fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The in-band error event a server sends when generation fails mid-stream.
pub(crate) fn error_event() -> Bytes {
    event(&error_json(
        500,
        "InternalServerError",
        "simulated fault: generation failed",
    ))
}

/// The end of every stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// An SSE comment line, which clients must ignore.
pub(crate) const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// A `data:` event whose payload is not JSON (cut inside a string).
pub(crate) const MALFORMED: &[u8] = b"data: {\"id\": \"cmpl-broken\", \"choices\": [{\"te\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn header(endpoint: Endpoint) -> ChunkHeader {
        ChunkHeader {
            id: "x-1".into(),
            created: 5,
            model: "m".into(),
            endpoint,
        }
    }

    #[test]
    fn chat_chunks_have_vllm_shape() {
        let h = header(Endpoint::Chat);
        let bytes = h.token_event(" the", true);
        let text = std::str::from_utf8(&bytes).unwrap();
        let payload = text
            .strip_prefix("data: ")
            .unwrap()
            .strip_suffix("\n\n")
            .unwrap();
        let value: Value = serde_json::from_str(payload).unwrap();
        let expected = json!({"id": "x-1", "object": "chat.completion.chunk", "created": 5,
            "model": "m", "choices": [{"index": 0, "delta": {"content": " the"},
            "logprobs": null, "finish_reason": "length"}]});
        assert_eq!(value, expected);
        let usage = Usage {
            prompt_tokens: Some(7),
            completion_tokens: 2,
            cached_tokens: 0,
        };
        let text = String::from_utf8(h.usage_event(usage).to_vec()).unwrap();
        assert!(text.contains("\"choices\":[]"));
        assert!(text.contains("\"prompt_tokens_details\":{\"cached_tokens\":0}"));
        assert!(text.contains("\"total_tokens\":9"));
    }

    #[test]
    fn usage_without_tokenizer_omits_prompt_tokens() {
        let usage = Usage {
            prompt_tokens: None,
            completion_tokens: 3,
            cached_tokens: 0,
        };
        assert_eq!(usage.to_json(), json!({"completion_tokens": 3}));
    }
}
