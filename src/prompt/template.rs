//! The chat template fallback: a model's `chat_template` from its `tokenizer_config.json`,
//! rendered around a probe text to estimate how many tokens the template adds.
//!
//! The replay measures the overhead against the server itself (one calibration request);
//! this is only for servers that report no usage. Rendering follows HuggingFace's settings
//! (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`). The estimate
//! can differ from the server's count where the server adds a BOS token of its own.

use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, context};
use serde_json::Value;

use super::tokenizer::Tokenizer;

/// The file a model's chat template is read from.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Errors reading or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// The file is not a JSON object.
    #[error("{path}: not a tokenizer_config.json object: {reason}")]
    Json {
        /// The file (or `<input>` for a string).
        path: String,
        /// What went wrong.
        reason: String,
    },

    /// The template does not compile or render.
    #[error("chat template: {0}")]
    Render(String),
}

/// A model's chat template with the special token strings it refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The Jinja source.
    pub source: String,
    /// `bos_token` of the config; empty where it has none.
    pub bos_token: String,
    /// `eos_token` of the config; empty where it has none.
    pub eos_token: String,
}

impl ChatTemplate {
    /// The template of a `tokenizer_config.json` text; `None` where it has no
    /// `chat_template`. A list of named templates gives the one named `default` (or the first).
    pub fn from_config_json(json: &str) -> Result<Option<Self>, TemplateError> {
        let config: Value = serde_json::from_str(json).map_err(|e| TemplateError::Json {
            path: "<input>".to_string(),
            reason: e.to_string(),
        })?;
        let Some(source) = config.get("chat_template").and_then(template_source) else {
            return Ok(None);
        };
        Ok(Some(Self {
            source,
            bos_token: token_text(config.get("bos_token")),
            eos_token: token_text(config.get("eos_token")),
        }))
    }

    /// The template of a `tokenizer_config.json` file.
    pub fn from_config_file(path: &Path) -> Result<Option<Self>, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|e| TemplateError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_config_json(&text).map_err(|e| match e {
            TemplateError::Json { reason, .. } => TemplateError::Json {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// The text the server would tokenize for one user message `content`, with the
    /// generation prompt (the assistant turn's opening) added.
    pub fn render_user(&self, content: &str) -> Result<String, TemplateError> {
        let env = environment()?;
        let template = env.template_from_str(&self.source).map_err(render_error)?;
        let messages = [context! { role => "user", content => content }];
        let ctx = context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        template.render(ctx).map_err(render_error)
    }

    /// Tokens the template adds around `probe` (the rendered count minus the probe's own),
    /// counted with `tokenizer`, whose added special tokens must be those of the template.
    pub fn overhead_tokens(
        &self,
        tokenizer: &dyn Tokenizer,
        probe: &str,
    ) -> Result<u32, TemplateError> {
        let rendered = self.render_user(probe)?;
        let overhead = tokenizer
            .count(&rendered)
            .saturating_sub(tokenizer.count(probe));
        Ok(u32::try_from(overhead).unwrap_or(u32::MAX))
    }
}

/// The `tokenizer_config.json` beside a local `tokenizer.json` spec, if there is one.
pub fn config_beside(tokenizer_spec: &str) -> Option<PathBuf> {
    let path = Path::new(tokenizer_spec);
    let dir = if path.is_dir() { path } else { path.parent()? };
    let config = dir.join(TOKENIZER_CONFIG_FILE);
    config.is_file().then_some(config)
}

/// A Jinja environment set up as HuggingFace renders chat templates.
fn environment() -> Result<Environment<'static>, TemplateError> {
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(render_error)?;
    let mut env = Environment::new();
    env.set_syntax(syntax);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", |format: String| {
        chrono::Utc::now().format(&format).to_string()
    });
    Ok(env)
}

/// The template text of a `chat_template` value: a string, or a list of named templates.
fn template_source(value: &Value) -> Option<String> {
    match value {
        Value::String(source) => Some(source.clone()),
        Value::Array(named) => {
            let named_default = named
                .iter()
                .find(|t| t.get("name") == Some(&"default".into()));
            let chosen = named_default.or_else(|| named.first())?;
            chosen.get("template")?.as_str().map(str::to_string)
        }
        _ => None,
    }
}

/// A special token's text: a string, or an object with `content`; empty otherwise.
fn token_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Object(token)) => token
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// A minijinja error with its detail.
fn render_error(error: minijinja::Error) -> TemplateError {
    TemplateError::Render(format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ChatML template of our own, as Qwen-family configs write it.
    const CHATML: &str = r#"{"bos_token": null, "eos_token": {"content": "<|im_end|>"},
        "chat_template": "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"}"#;

    #[test]
    fn chatml_renders_around_the_user_text() -> Result<(), TemplateError> {
        let template = ChatTemplate::from_config_json(CHATML)?;
        let template = template.ok_or(TemplateError::Render("no template".into()))?;
        assert_eq!(template.eos_token, "<|im_end|>");
        assert_eq!(template.bos_token, "");
        let rendered = template.render_user(" hello")?;
        assert_eq!(
            rendered,
            "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
        );
        Ok(())
    }

    #[test]
    fn named_templates_pick_default_and_missing_is_none() -> Result<(), TemplateError> {
        let named = r#"{"chat_template": [{"name": "tool_use", "template": "T"},
                                          {"name": "default", "template": "D"}]}"#;
        let template = ChatTemplate::from_config_json(named)?.map(|t| t.source);
        assert_eq!(template.as_deref(), Some("D"));
        assert_eq!(ChatTemplate::from_config_json("{}")?, None);
        Ok(())
    }

    #[test]
    fn raise_exception_is_a_render_error() -> Result<(), TemplateError> {
        let config = r#"{"chat_template": "{{ raise_exception('only user turns') }}"}"#;
        let template = ChatTemplate::from_config_json(config)?;
        let err = template.map(|t| t.render_user("x")).and_then(Result::err);
        assert!(err.is_some_and(|e| e.to_string().contains("only user turns")));
        Ok(())
    }

    #[test]
    fn bos_token_and_strftime_now_are_available() -> Result<(), TemplateError> {
        let config = r#"{"bos_token": "<s>", "chat_template":
            "{{ bos_token }}{% set d = strftime_now('%Y') %}{{ d | length }}{% for m in messages %}[{{ m.content }}]{% endfor %}"}"#;
        let template = ChatTemplate::from_config_json(config)?;
        let rendered = template.map(|t| t.render_user("x")).transpose()?;
        assert_eq!(rendered.as_deref(), Some("<s>4[x]"));
        Ok(())
    }

    #[test]
    fn bad_json_names_the_input() {
        let err = ChatTemplate::from_config_json("{")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.starts_with("<input>: not a tokenizer_config.json object")));
    }
}
