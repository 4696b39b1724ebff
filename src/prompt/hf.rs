//! HuggingFace tokenizers: a local `tokenizer.json` (the `tokenizers` crate), or one fetched
//! once from the hub into the usual HF cache (`hf-hub`). Offline, a cached copy is used; a
//! missing one is an error naming the file and how to pass a local path.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::tokenizer::{Tokenizer, TokenizerError};

/// The file every HF tokenizer spec resolves to.
const TOKENIZER_FILE: &str = "tokenizer.json";

/// A HuggingFace `tokenizer.json` behind the [`Tokenizer`] trait.
pub(crate) struct HfTokenizer {
    /// The path or repository id it was loaded from.
    name: String,
    /// The loaded tokenizer.
    inner: tokenizers::Tokenizer,
    /// Ids of added tokens marked special.
    special: HashSet<u32>,
    /// Vocabulary size including added tokens.
    vocab_size: u32,
}

impl HfTokenizer {
    /// Loads a `tokenizer.json` file.
    pub(crate) fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let special = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, _)| id)
            .collect();
        let vocab_size = u32::try_from(inner.get_vocab_size(true)).unwrap_or(u32::MAX);
        let name = path.display().to_string();
        Ok(Self {
            name,
            inner,
            special,
            vocab_size,
        })
    }

    /// The same tokenizer reported under another name (a repository id).
    pub(crate) fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }
}

impl Tokenizer for HfTokenizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn encode(&self, text: &str) -> Vec<u32> {
        // Encoding a plain &str without special tokens cannot fail for a loaded tokenizer
        // except on internal errors; an empty result then shows up as a length mismatch.
        self.inner
            .encode_fast(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .unwrap_or_default()
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    fn is_special(&self, id: u32) -> bool {
        self.special.contains(&id)
    }
}

/// The cached `tokenizer.json` of hub repository `repo`, downloading it if it is not cached
/// and `HF_HUB_OFFLINE` is not set.
pub(crate) fn hub_tokenizer_file(repo: &str) -> Result<PathBuf, TokenizerError> {
    let cache = hf_hub::Cache::from_env();
    if let Some(path) = cache.model(repo.to_string()).get(TOKENIZER_FILE) {
        return Ok(path);
    }

    let hub_error = |reason: String| TokenizerError::Hub {
        repo: repo.to_string(),
        file: TOKENIZER_FILE.to_string(),
        reason,
    };
    if hub_offline() {
        return Err(hub_error(
            "not in the HF cache and HF_HUB_OFFLINE is set".to_string(),
        ));
    }

    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| hub_error(e.to_string()))?;
    api.model(repo.to_string())
        .get(TOKENIZER_FILE)
        .map_err(|e| hub_error(e.to_string()))
}

/// Whether the user asked for no hub access (`HF_HUB_OFFLINE=1`).
fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let err = HfTokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.starts_with("cannot load tokenizer file /nonexistent/tokenizer.json"),
            "{msg}"
        );
    }
}
