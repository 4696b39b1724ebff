//! Parsing and validating request bodies, as leniently as vLLM does (unknown fields are
//! ignored) and as strictly where it matters (counts must fit, one choice only). Every
//! failure is an [`ApiError`] that the server turns into an OpenAI-shaped error response.

use serde::Deserialize;

use super::config::{DEFAULT_MAX_TOKENS, SimConfig};

/// A request the simulator refuses, with the HTTP status it answers.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum ApiError {
    /// The body is not the JSON we expect.
    #[error("invalid request body: {0}")]
    Body(String),
    /// A field has a value we cannot serve.
    #[error("{0}")]
    Invalid(String),
    /// The `model` is not the one served.
    #[error("the model `{0}` does not exist")]
    UnknownModel(String),
}

impl ApiError {
    /// HTTP status of the error response.
    pub(crate) fn status(&self) -> u16 {
        match self {
            ApiError::UnknownModel(_) => 404,
            _ => 400,
        }
    }

    /// OpenAI error `type`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ApiError::UnknownModel(_) => "NotFoundError",
            _ => "BadRequestError",
        }
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The generation fields both endpoints share.
#[derive(Debug, Deserialize)]
struct Common {
    model: Option<String>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    min_tokens: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    /// Accepted and ignored: the simulator never stops early (see docs/SIMULATOR.md).
    #[allow(dead_code)]
    ignore_eos: Option<bool>,
}

/// One chat message's content: a string or a list of typed parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    messages: Vec<Message>,
    #[serde(flatten)]
    common: Common,
}

/// `prompt` of `/v1/completions` (and `text` / `input_ids` of SGLang's `/generate`): text
/// or token ids, alone or in a one-element list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum PromptField {
    Text(String),
    Ids(Vec<u32>),
    Texts(Vec<String>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
struct CompletionBody {
    prompt: PromptField,
    #[serde(flatten)]
    common: Common,
}

/// What the prompt is, before counting tokens.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Prompt {
    /// Chat messages: (role, text) pairs.
    Chat(Vec<(String, String)>),
    /// Completion text.
    Text(String),
    /// Completion token ids.
    Ids(Vec<u32>),
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GenRequest {
    /// The prompt.
    pub(crate) prompt: Prompt,
    /// Tokens to generate, always exactly this many.
    pub(crate) max_tokens: u32,
    /// Whether to stream.
    pub(crate) stream: bool,
    /// Whether a streamed response ends with a usage chunk.
    pub(crate) include_usage: bool,
}

/// Parses a `/v1/chat/completions` body.
pub(crate) fn parse_chat(body: &[u8], cfg: &SimConfig) -> Result<GenRequest, ApiError> {
    let chat: ChatBody = from_json(body)?;
    if chat.messages.is_empty() {
        return Err(ApiError::Invalid("messages: must not be empty".into()));
    }
    let messages = chat
        .messages
        .into_iter()
        .map(|m| (m.role, content_text(m.content)))
        .collect();
    finish(Prompt::Chat(messages), chat.common, cfg)
}

/// Parses a `/v1/completions` body.
pub(crate) fn parse_completion(body: &[u8], cfg: &SimConfig) -> Result<GenRequest, ApiError> {
    let completion: CompletionBody = from_json(body)?;
    let prompt = one_prompt(completion.prompt, "prompt")?;
    finish(prompt, completion.common, cfg)
}

/// The one prompt of a prompt field (`name` in errors): batches and empty prompts refused.
pub(crate) fn one_prompt(field: PromptField, name: &str) -> Result<Prompt, ApiError> {
    let prompt = match field {
        PromptField::Text(text) => Prompt::Text(text),
        PromptField::Ids(ids) => Prompt::Ids(ids),
        PromptField::Texts(mut v) if v.len() == 1 => Prompt::Text(v.remove(0)),
        PromptField::IdLists(mut v) if v.len() == 1 => Prompt::Ids(v.remove(0)),
        _ => {
            return Err(ApiError::Invalid(format!(
                "{name}: batches of prompts are not supported"
            )));
        }
    };
    let empty = match &prompt {
        Prompt::Text(t) => t.is_empty(),
        Prompt::Ids(ids) => ids.is_empty(),
        Prompt::Chat(_) => false,
    };
    if empty {
        return Err(ApiError::Invalid(format!("{name}: must not be empty")));
    }
    Ok(prompt)
}

/// Parses a body as `T`, mapping serde's message into a 400.
pub(crate) fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Body(e.to_string()))
}

/// The text of a message's content (text parts joined).
fn content_text(content: Option<Content>) -> String {
    match content {
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => parts.into_iter().filter_map(|p| p.text).collect(),
    }
}

/// Checks the shared fields and builds the request.
fn finish(prompt: Prompt, common: Common, cfg: &SimConfig) -> Result<GenRequest, ApiError> {
    if let Some(model) = &common.model
        && *model != cfg.model_id
    {
        return Err(ApiError::UnknownModel(model.clone()));
    }
    if common.n.is_some_and(|n| n != 1) {
        return Err(ApiError::Invalid("n: only n=1 is supported".into()));
    }
    let requested = common.max_completion_tokens.or(common.max_tokens);
    let max_tokens = output_budget(
        requested.unwrap_or(u64::from(DEFAULT_MAX_TOKENS)),
        common.min_tokens,
        ("max_tokens", "min_tokens"),
        cfg,
    )?;
    Ok(GenRequest {
        prompt,
        max_tokens,
        stream: common.stream.unwrap_or(false),
        include_usage: common.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// Checks a requested output length (from 1 to the context) and its minimum; `names` are
/// the two fields' names in errors.
pub(crate) fn output_budget(
    max_tokens: u64,
    min_tokens: Option<u64>,
    names: (&str, &str),
    cfg: &SimConfig,
) -> Result<u32, ApiError> {
    let (max_name, min_name) = names;
    if max_tokens == 0 || max_tokens > u64::from(cfg.max_model_len) {
        let limit = cfg.max_model_len;
        return Err(ApiError::Invalid(format!(
            "{max_name}: must be from 1 to {limit}, got {max_tokens}"
        )));
    }
    if let Some(min) = min_tokens
        && min > max_tokens
    {
        return Err(ApiError::Invalid(format!(
            "{min_name}: must be at most {max_name} ({max_tokens}), got {min}"
        )));
    }
    Ok(max_tokens as u32)
}

/// A `/tokenize` request: `prompt` text, or chat `messages`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenizeBody {
    /// Text to tokenize.
    pub(crate) prompt: Option<String>,
    /// Chat messages to tokenize (content plus the fixed template overhead).
    messages: Option<Vec<Message>>,
    /// Ignored beyond the model check.
    pub(crate) model: Option<String>,
}

impl TokenizeBody {
    /// The messages as (role, text) pairs, if given.
    pub(crate) fn messages(self) -> Option<Vec<(String, String)>> {
        self.messages.map(|ms| {
            ms.into_iter()
                .map(|m| (m.role, content_text(m.content)))
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_prompt_forms() {
        let cfg = SimConfig::default();
        let r = parse_completion(
            br#"{"prompt":[[1,2,3]],"max_tokens":4,"stream":true}"#,
            &cfg,
        )
        .unwrap();
        assert_eq!(r.prompt, Prompt::Ids(vec![1, 2, 3]));
        assert_eq!(r.max_tokens, 4);
        let r = parse_completion(
            br#"{"prompt":"hi","max_completion_tokens":9,"max_tokens":2}"#,
            &cfg,
        )
        .unwrap();
        assert_eq!(r.max_tokens, 9);
        assert_eq!(
            parse_completion(br#"{"prompt":"x"}"#, &cfg)
                .unwrap()
                .max_tokens,
            DEFAULT_MAX_TOKENS
        );
        assert!(parse_completion(br#"{"prompt":["a","b"]}"#, &cfg).is_err());
    }

    #[test]
    fn refuses_huge_negative_and_inconsistent_counts() {
        let cfg = SimConfig::default();
        for body in [
            r#"{"prompt":"x","max_tokens":1e30}"#,
            r#"{"prompt":"x","max_tokens":-1}"#,
            r#"{"prompt":"x","max_tokens":0}"#,
            r#"{"prompt":"x","max_tokens":99999999999}"#,
            r#"{"prompt":"x","max_tokens":3,"min_tokens":4}"#,
            r#"{"prompt":[4294967296]}"#,
            r#"{"prompt":"x","n":2}"#,
            r#"{"prompt":""}"#,
        ] {
            let err = parse_completion(body.as_bytes(), &cfg).unwrap_err();
            assert_eq!(err.status(), 400, "{body}");
        }
        let err = parse_completion(br#"{"prompt":"x","model":"other"}"#, &cfg).unwrap_err();
        assert_eq!(err.status(), 404);
    }

    #[test]
    fn chat_content_parts_are_joined() {
        let cfg = SimConfig::default();
        let body = br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"stream_options":{"include_usage":true}}"#;
        let r = parse_chat(body, &cfg).unwrap();
        assert_eq!(r.prompt, Prompt::Chat(vec![("user".into(), "ab".into())]));
        assert!(r.include_usage);
    }
}
