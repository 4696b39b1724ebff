//! What a simulated server is: its timing model, engine constants, tokenizer, faults and
//! limits. Plain data, validated once by [`SimConfig::validate`]; no tokio in here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::prompt::Tokenizer;

use super::faults::FaultRule;

/// Default model id the simulator reports in `/v1/models` and in every response.
pub const DEFAULT_MODEL_ID: &str = "tracebench-sim";

/// Default `max_tokens` when a request sets neither `max_tokens` nor
/// `max_completion_tokens` (the legacy OpenAI completions default).
pub const DEFAULT_MAX_TOKENS: u32 = 16;

/// Default request body limit: 8 MiB holds a 1M-token prompt as text, or ~1M token ids.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 8 * 1024 * 1024;

/// Chat template tokens around each message (ChatML: `<|im_start|>`, role, `\n`,
/// `<|im_end|>`, `\n`).
pub const CHAT_TOKENS_PER_MESSAGE: u32 = 5;

/// Chat template tokens of the generation prompt (ChatML: `<|im_start|>assistant\n`).
pub const CHAT_TOKENS_PER_REQUEST: u32 = 3;

/// How the simulator decides when each token is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimingMode {
    /// Constant TTFT and inter-token time, independent of load: the ground truth for
    /// accuracy benchmarks.
    Fixed,
    /// A continuous-batching engine model: step times depend on the batch.
    #[default]
    Engine,
}

/// The cost model of one engine step: `step = base + decode * n_decode +
/// prefill_token * n_prefill_tokens + context_token * decode_context_tokens`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConstants {
    /// Fixed cost of a step (weights read once per step, scheduling, sampling).
    pub step_base: Duration,
    /// Extra cost per decode request in the batch.
    pub per_decode_request: Duration,
    /// Extra cost per prefill token in the batch, in nanoseconds.
    pub per_prefill_token_ns: f64,
    /// Extra cost per context token a decode request attends to (KV read), in nanoseconds.
    pub per_context_token_ns: f64,
    /// KV cache capacity in blocks.
    pub kv_blocks: u32,
}

/// Named engine presets; their constants and sources are in docs/SIMULATOR.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnginePreset {
    /// An 8B dense model (Llama-3.1-8B class) in BF16 on one H100-class GPU.
    #[default]
    Llama8bH100,
    /// A 70B dense model (Llama-3.1-70B class) in BF16 on four H100-class GPUs (TP=4).
    Llama70bH100x4,
    /// A sub-1B model on a small GPU: fast steps, small KV cache; handy for tests.
    Small,
}

impl EnginePreset {
    /// All presets with their command-line names.
    pub const ALL: [(&'static str, EnginePreset); 3] = [
        ("llama-8b-h100", EnginePreset::Llama8bH100),
        ("llama-70b-h100x4", EnginePreset::Llama70bH100x4),
        ("small", EnginePreset::Small),
    ];

    /// The preset named `name`, if any.
    pub fn from_name(name: &str) -> Option<EnginePreset> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// The preset's command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(n, _)| n)
    }

    /// The preset's constants.
    pub fn constants(self) -> EngineConstants {
        match self {
            EnginePreset::Llama8bH100 => EngineConstants {
                step_base: Duration::from_micros(6_000),
                per_decode_request: Duration::from_micros(60),
                per_prefill_token_ns: 60_000.0,
                per_context_token_ns: 40.0,
                kv_blocks: 27_000,
            },
            EnginePreset::Llama70bH100x4 => EngineConstants {
                step_base: Duration::from_micros(14_000),
                per_decode_request: Duration::from_micros(120),
                per_prefill_token_ns: 110_000.0,
                per_context_token_ns: 25.0,
                kv_blocks: 29_000,
            },
            EnginePreset::Small => EngineConstants {
                step_base: Duration::from_micros(2_000),
                per_decode_request: Duration::from_micros(20),
                per_prefill_token_ns: 10_000.0,
                per_context_token_ns: 5.0,
                kv_blocks: 4_096,
            },
        }
    }
}

/// The engine model's scheduler settings (vLLM-like defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// The preset the constants came from (for logs and docs).
    pub preset: EnginePreset,
    /// Step cost model and KV capacity (start from `preset.constants()`).
    pub constants: EngineConstants,
    /// Tokens per KV block (vLLM default 16).
    pub block_tokens: u32,
    /// Cap on requests running at once (vLLM `max_num_seqs`).
    pub max_running: u32,
    /// Tokens scheduled per step, decode plus prefill chunks (vLLM
    /// `max_num_batched_tokens`).
    pub max_batched_tokens: u32,
    /// Whether the prefix cache is on.
    pub prefix_cache: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let preset = EnginePreset::default();
        EngineConfig {
            preset,
            constants: preset.constants(),
            block_tokens: 16,
            max_running: 256,
            max_batched_tokens: 8192,
            prefix_cache: true,
        }
    }
}

/// Everything a simulated server needs.
#[derive(Clone)]
pub struct SimConfig {
    /// Model id served (`/v1/models`, and the only accepted `model` in requests).
    pub model_id: String,
    /// The timing model.
    pub timing: TimingMode,
    /// Time to first token in `fixed` mode (before `speed` is applied).
    pub ttft: Duration,
    /// Time between tokens in `fixed` mode (before `speed` is applied).
    pub itl: Duration,
    /// Engine-mode settings (ignored in `fixed` mode).
    pub engine: EngineConfig,
    /// Clock speed-up: 10 runs ten times faster than the modelled hardware.
    pub speed: f64,
    /// The tokenizer counting prompt tokens; `None` = `--no-tokenize` (usage then omits
    /// `prompt_tokens`, and text prompts are measured as one pseudo-token per 4 bytes).
    pub tokenizer: Option<Arc<dyn Tokenizer>>,
    /// Longest prompt plus output accepted, in tokens (vLLM `max_model_len`).
    pub max_model_len: u32,
    /// Request body limit in bytes; larger bodies get HTTP 413.
    pub body_limit_bytes: usize,
    /// Faults to inject, first matching rule wins.
    pub faults: Vec<FaultRule>,
    /// Seed of the fault RNG (rate-based faults).
    pub fault_seed: u64,
    /// Keep every chunk's send time in memory (read through [`super::SimHandle`]).
    pub record_chunks: bool,
    /// Also append every chunk's send time to this JSONL file; `None` = no file.
    pub chunk_log: Option<PathBuf>,
}

impl std::fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("model_id", &self.model_id)
            .field("timing", &self.timing)
            .field("ttft", &self.ttft)
            .field("itl", &self.itl)
            .field("engine", &self.engine)
            .field("speed", &self.speed)
            .field(
                "tokenizer",
                &self.tokenizer.as_ref().map(|t| t.name().to_owned()),
            )
            .field("max_model_len", &self.max_model_len)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("faults", &self.faults)
            .field("record_chunks", &self.record_chunks)
            .field("chunk_log", &self.chunk_log)
            .finish()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            model_id: DEFAULT_MODEL_ID.to_owned(),
            timing: TimingMode::default(),
            ttft: Duration::from_millis(100),
            itl: Duration::from_millis(10),
            engine: EngineConfig::default(),
            speed: 1.0,
            tokenizer: None,
            max_model_len: 131_072,
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            faults: Vec::new(),
            fault_seed: 0,
            record_chunks: false,
            chunk_log: None,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimConfigError {
    /// `speed` is not a positive finite number.
    #[error("speed: must be a positive number, got {0}")]
    Speed(f64),
    /// A count that must be at least 1 is 0.
    #[error("{0}: must be at least 1")]
    Zero(&'static str),
    /// The model id is empty.
    #[error("model id: must not be empty")]
    ModelId,
}

impl SimConfig {
    /// Checks the settings that would make the server misbehave.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(SimConfigError::Speed(self.speed));
        }
        if self.model_id.is_empty() {
            return Err(SimConfigError::ModelId);
        }
        let counts = [
            ("block tokens", self.engine.block_tokens),
            ("max running", self.engine.max_running),
            ("max batched tokens", self.engine.max_batched_tokens),
            ("kv blocks", self.engine.constants.kv_blocks),
            ("max model len", self.max_model_len),
        ];
        match counts.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(SimConfigError::Zero(name)),
            None => Ok(()),
        }
    }

    /// `d` of modelled time as real time at `speed`.
    pub fn scaled(&self, d: Duration) -> Duration {
        d.div_f64(self.speed)
    }
}

/// Prompt tokens of a chat request whose messages hold `content_tokens` tokens in all:
/// the content plus the fixed ChatML-shaped template overhead.
pub fn chat_prompt_tokens(content_tokens: u32, messages: u32) -> u32 {
    content_tokens + CHAT_TOKENS_PER_MESSAGE * messages + CHAT_TOKENS_PER_REQUEST
}
