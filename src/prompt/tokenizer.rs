//! One small trait over every tokenizer tracebench can use: the built-in tiktoken
//! encodings, a HuggingFace `tokenizer.json`, or a hub repository id.
//!
//! [`load_tokenizer`] turns a `--tokenizer SPEC` into a tokenizer; [`load_tokenizer_for_model`]
//! resolves `auto` from the served model's id. Loading is the only place that touches files
//! or the network; encoding and decoding are pure and thread-safe.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::hf::{HfTokenizer, hub_tokenizer_file};
use super::tiktoken::TiktokenTokenizer;

/// The `--tokenizer` value used when none is given.
pub const DEFAULT_TOKENIZER: &str = "o200k_base";

/// The `--tokenizer` value that resolves to the served model's id.
pub const AUTO_TOKENIZER: &str = "auto";

/// Errors loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// Decoding the given ids failed.
    #[error("cannot decode token ids: {0}")]
    Decode(String),

    /// A built-in tiktoken encoding could not be set up.
    #[error("cannot load built-in tokenizer {name}: {reason}")]
    Builtin {
        /// The encoding name (`o200k_base`, ...).
        name: String,
        /// What went wrong.
        reason: String,
    },

    /// A `tokenizer.json` file could not be read or parsed.
    #[error("cannot load tokenizer file {path}: {reason}")]
    File {
        /// The file given.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },

    /// A hub repository's `tokenizer.json` is not cached and could not be downloaded.
    #[error(
        "cannot get {file} of hub repository {repo}: {reason}; download it and pass the local \
         path instead (--tokenizer /path/to/tokenizer.json)"
    )]
    Hub {
        /// The repository id (`Qwen/Qwen3-8B`).
        repo: String,
        /// The file looked for (`tokenizer.json`).
        file: String,
        /// What went wrong (offline, not found, ...).
        reason: String,
    },

    /// `auto` was given where no served model id is known.
    #[error("tokenizer `auto` needs the served model id; pass --tokenizer SPEC instead")]
    AutoWithoutModel,

    /// The spec is neither a built-in name, an existing file nor a repository id.
    #[error(
        "unknown tokenizer {0:?}: expected o200k_base, cl100k_base, a tokenizer.json path or \
         a hub repository id (owner/name)"
    )]
    UnknownSpec(String),
}

/// A tokenizer: encode text to ids and back, without special tokens added.
pub trait Tokenizer: Send + Sync {
    /// A short name for reports (`o200k_base`, a file path, a repository id).
    fn name(&self) -> &str;

    /// Ids of `text`, adding no special tokens.
    fn encode(&self, text: &str) -> Vec<u32>;

    /// Text of `ids`; bytes that are not valid UTF-8 on their own become U+FFFD.
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError>;

    /// Number of ids in the vocabulary (including special tokens).
    fn vocab_size(&self) -> u32;

    /// Whether `id` is a special (control) token.
    fn is_special(&self, id: u32) -> bool;

    /// Number of tokens of `text` (the length of [`Tokenizer::encode`]).
    fn count(&self, text: &str) -> usize {
        self.encode(text).len()
    }
}

/// Loads the tokenizer a `--tokenizer SPEC` names: `o200k_base`, `cl100k_base`, a path to a
/// `tokenizer.json` (or a directory holding one), or a hub repository id. `auto` is refused
/// here: use [`load_tokenizer_for_model`] once the served model id is known.
pub fn load_tokenizer(spec: &str) -> Result<Arc<dyn Tokenizer>, TokenizerError> {
    let spec = spec.trim();
    if spec == AUTO_TOKENIZER {
        return Err(TokenizerError::AutoWithoutModel);
    }

    if let Some(builtin) = TiktokenTokenizer::builtin(spec)? {
        return Ok(Arc::new(builtin));
    }

    if let Some(file) = local_tokenizer_file(Path::new(spec)) {
        return Ok(Arc::new(HfTokenizer::from_file(&file)?));
    }

    if looks_like_repo_id(spec) {
        let file = hub_tokenizer_file(spec)?;
        return Ok(Arc::new(HfTokenizer::from_file(&file)?.named(spec)));
    }
    Err(TokenizerError::UnknownSpec(spec.to_string()))
}

/// Resolves `--tokenizer auto` from the served model's id (the first id of `GET /v1/models`):
/// an OpenAI model name maps to its tiktoken encoding, anything else is loaded as a path or
/// hub repository id.
pub fn load_tokenizer_for_model(model_id: &str) -> Result<Arc<dyn Tokenizer>, TokenizerError> {
    if let Some(name) = TiktokenTokenizer::encoding_for_model(model_id) {
        return load_tokenizer(name);
    }
    load_tokenizer(model_id)
}

/// Loads `spec`, or for `auto` the served model's tokenizer (`model_id` must then be known).
pub fn load_tokenizer_spec(
    spec: &str,
    model_id: Option<&str>,
) -> Result<Arc<dyn Tokenizer>, TokenizerError> {
    match (spec.trim(), model_id) {
        (AUTO_TOKENIZER, Some(model)) => load_tokenizer_for_model(model),
        (AUTO_TOKENIZER, None) => Err(TokenizerError::AutoWithoutModel),
        (other, _) => load_tokenizer(other),
    }
}

/// The `tokenizer.json` a local path names: the file itself, or one inside a directory.
fn local_tokenizer_file(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    let inside = path.join("tokenizer.json");
    inside.is_file().then_some(inside)
}

/// Whether `spec` has the `owner/name` shape of a hub repository id.
fn looks_like_repo_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let (Some(owner), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    ok(owner) && ok(name) && !spec.ends_with(".json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_recognised_and_paths_are_not() {
        assert!(looks_like_repo_id("Qwen/Qwen3-8B"));
        assert!(looks_like_repo_id("meta-llama/Llama-3.2-1B"));
        assert!(!looks_like_repo_id("/tmp/tokenizer.json"));
        assert!(!looks_like_repo_id("dir/tokenizer.json"));
        assert!(!looks_like_repo_id("o200k_base"));
        assert!(!looks_like_repo_id("a/b/c"));
    }

    #[test]
    fn auto_needs_a_model_id() {
        let err = load_tokenizer("auto").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("tokenizer `auto` needs the served model id; pass --tokenizer SPEC instead")
        );
    }

    #[test]
    fn unknown_spec_names_the_value() {
        let err = load_tokenizer("no-such-tokenizer")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("\"no-such-tokenizer\"")));
    }

    #[test]
    fn openai_model_ids_resolve_to_tiktoken() {
        let tok = load_tokenizer_for_model("gpt-4o-mini");
        assert_eq!(
            tok.ok().map(|t| t.name().to_string()).as_deref(),
            Some("o200k_base")
        );
    }
}
