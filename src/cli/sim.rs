//! `tracebench sim`: run the simulated server in the foreground until Ctrl-C. Also the
//! `--sim-*` options that `tracebench replay --sim` flattens ([`SimReplayArgs`]); both
//! option sets come from one macro so they cannot drift apart, and both build a
//! [`SimConfig`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::prompt::{DEFAULT_TOKENIZER, Tokenizer, load_tokenizer_spec};
use crate::sim::{
    EngineConfig, EnginePreset, FaultRule, SimConfig, SimState, TimingMode, serve_state,
};

/// `--timing` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimingArg {
    /// Constant TTFT and inter-token latency, independent of load.
    Fixed,
    /// Continuous batching with a KV cache and a prefix cache.
    Engine,
}

/// `--preset` values (constants and sources in docs/SIMULATOR.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PresetArg {
    /// An 8B model on one H100-class GPU.
    #[value(name = "llama-8b-h100")]
    Llama8bH100,
    /// A 70B model on four H100-class GPUs.
    #[value(name = "llama-70b-h100x4")]
    Llama70bH100x4,
    /// A sub-1B model: fast steps, small KV cache.
    Small,
}

impl From<PresetArg> for EnginePreset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Llama8bH100 => EnginePreset::Llama8bH100,
            PresetArg::Llama70bH100x4 => EnginePreset::Llama70bH100x4,
            PresetArg::Small => EnginePreset::Small,
        }
    }
}

/// Declares a clap struct with every simulator option, each long name prefixed by `$prefix`.
macro_rules! sim_options {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, clap::Args)]
        pub struct $name {
            /// Timing model: `engine` (continuous batching) or `fixed` (constant TTFT/ITL).
            #[arg(long = concat!($prefix, "timing"), value_enum, default_value = "engine")]
            pub timing: TimingArg,
            /// Fixed mode: time to first token, in milliseconds.
            #[arg(long = concat!($prefix, "ttft-ms"), default_value_t = 100.0,
                  allow_negative_numbers = true)]
            pub ttft_ms: f64,
            /// Fixed mode: time between tokens, in milliseconds.
            #[arg(long = concat!($prefix, "itl-ms"), default_value_t = 10.0,
                  allow_negative_numbers = true)]
            pub itl_ms: f64,
            /// Clock speed-up: 10 runs ten times faster than the modelled hardware.
            #[arg(long = concat!($prefix, "speed"), default_value_t = 1.0,
                  allow_negative_numbers = true)]
            pub speed: f64,
            /// Engine mode: hardware preset for the step-time constants and KV size.
            #[arg(long = concat!($prefix, "preset"), value_enum, default_value = "llama-8b-h100")]
            pub preset: PresetArg,
            /// Engine mode: KV cache size in blocks (default: the preset's).
            #[arg(long = concat!($prefix, "kv-blocks"), allow_negative_numbers = true)]
            pub kv_blocks: Option<u32>,
            /// Engine mode: tokens per KV block.
            #[arg(long = concat!($prefix, "block-tokens"), default_value_t = 16,
                  allow_negative_numbers = true)]
            pub block_tokens: u32,
            /// Engine mode: cap on requests running at once (vLLM max_num_seqs).
            #[arg(long = concat!($prefix, "max-running"), default_value_t = 256,
                  allow_negative_numbers = true)]
            pub max_running: u32,
            /// Engine mode: token budget per step, decode plus prefill chunks.
            #[arg(long = concat!($prefix, "max-batched-tokens"), default_value_t = 8192,
                  allow_negative_numbers = true)]
            pub max_batched_tokens: u32,
            /// Engine mode: turn the prefix cache off.
            #[arg(long = concat!($prefix, "no-prefix-cache"))]
            pub no_prefix_cache: bool,
            /// Do not tokenize prompts (cheaper under heavy load); usage then omits
            /// prompt_tokens.
            #[arg(long = concat!($prefix, "no-tokenize"))]
            pub no_tokenize: bool,
            /// Model id to serve; requests naming another model get 404.
            #[arg(long = concat!($prefix, "model"), default_value = crate::sim::DEFAULT_MODEL_ID)]
            pub model: String,
            /// Longest prompt plus output accepted, in tokens.
            #[arg(long = concat!($prefix, "max-model-len"), default_value_t = 131_072,
                  allow_negative_numbers = true)]
            pub max_model_len: u32,
            /// Request body limit in MiB; larger bodies get HTTP 413.
            #[arg(long = concat!($prefix, "body-limit-mib"), default_value_t = 8,
                  allow_negative_numbers = true)]
            pub body_limit_mib: usize,
            /// Inject a fault: `KIND[:ARGS][,every=N|,rate=P]`; KIND is `status:CODE`,
            /// `status-empty:CODE`, `cut:K`, `error:K`, `stall:SECS[:K]`, `malformed:K`,
            /// `keepalive`, `first-delay:SECS`. Repeatable; the first matching rule wins.
            #[arg(long = concat!($prefix, "fault"), value_name = "SPEC")]
            pub fault: Vec<FaultRule>,
            /// Seed for rate-based faults.
            #[arg(long = concat!($prefix, "fault-seed"), default_value_t = 0,
                  allow_negative_numbers = true)]
            pub fault_seed: u64,
            /// Append every chunk's send time (Unix ns) to this JSONL file.
            #[arg(long = concat!($prefix, "chunk-log"), value_name = "FILE")]
            pub chunk_log: Option<PathBuf>,
        }

        impl $name {
            /// The simulator settings these options describe, counting prompt tokens with
            /// `tokenizer` (ignored under the no-tokenize option).
            pub fn to_config(&self, tokenizer: Option<Arc<dyn Tokenizer>>) -> anyhow::Result<SimConfig> {
                let preset = EnginePreset::from(self.preset);
                let mut constants = preset.constants();
                if let Some(blocks) = self.kv_blocks {
                    constants.kv_blocks = blocks;
                }
                let engine = EngineConfig {
                    preset,
                    constants,
                    block_tokens: self.block_tokens,
                    max_running: self.max_running,
                    max_batched_tokens: self.max_batched_tokens,
                    prefix_cache: !self.no_prefix_cache,
                };
                let config = SimConfig {
                    model_id: self.model.clone(),
                    timing: match self.timing {
                        TimingArg::Fixed => TimingMode::Fixed,
                        TimingArg::Engine => TimingMode::Engine,
                    },
                    ttft: millis(concat!("--", $prefix, "ttft-ms"), self.ttft_ms)?,
                    itl: millis(concat!("--", $prefix, "itl-ms"), self.itl_ms)?,
                    engine,
                    speed: self.speed,
                    tokenizer: if self.no_tokenize { None } else { tokenizer },
                    max_model_len: self.max_model_len,
                    body_limit_bytes: self.body_limit_mib.saturating_mul(1024 * 1024),
                    faults: self.fault.clone(),
                    fault_seed: self.fault_seed,
                    record_chunks: false,
                    chunk_log: self.chunk_log.clone(),
                };
                config.validate()?;
                Ok(config)
            }
        }
    };
}

sim_options!(
    /// The simulator options of `tracebench sim`.
    SimOptions, ""
);

sim_options!(
    /// The simulator options of `tracebench replay --sim`, each prefixed `--sim-`; replay's
    /// own `--tokenizer` supplies the tokenizer.
    SimReplayArgs, "sim-"
);

/// Run the simulated server.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Address to listen on; only loopback unless you change it.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8000, allow_negative_numbers = true)]
    pub port: u16,
    /// Tokenizer counting prompt tokens: o200k_base, cl100k_base, a tokenizer.json path, a
    /// hub repository id, or auto (from --model).
    #[arg(long, default_value = DEFAULT_TOKENIZER)]
    pub tokenizer: String,
    /// The simulator's settings.
    #[command(flatten)]
    pub options: SimOptions,
}

/// A duration from a millisecond flag, refusing negatives and NaN.
fn millis(flag: &str, ms: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .with_context(|| format!("{flag}: must be a non-negative number of milliseconds, got {ms}"))
}

/// Runs `tracebench sim`.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let tokenizer = if args.options.no_tokenize {
        None
    } else {
        Some(load_tokenizer_spec(
            &args.tokenizer,
            Some(&args.options.model),
        )?)
    };
    let config = args.options.to_config(tokenizer)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(serve_until_ctrl_c(
        SocketAddr::new(args.host, args.port),
        config,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Raises the soft open-files limit to the hard one: every open stream holds a socket.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("open-files limit: {limit}"),
        Err(err) => tracing::warn!("cannot raise the open-files limit: {err}"),
    }
}

/// Binds, logs the address, serves until Ctrl-C or SIGTERM.
async fn serve_until_ctrl_c(addr: SocketAddr, config: SimConfig) -> anyhow::Result<()> {
    // Before anything is written: whoever reads the first line (a log line with -v, the
    // address without) may signal at once.
    let signal = crate::replay::termination_signal();
    if !addr.ip().is_loopback() {
        tracing::warn!("sim: listening on {addr}, reachable from other machines");
    }
    raise_open_files_limit();
    let listener = crate::sim::listen(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr()?;
    let state = SimState::new(config)?;
    tracing::info!(
        "sim: serving {} on http://{bound}/v1 ({:?} timing)",
        state.config().model_id,
        state.config().timing
    );
    eprintln!("tracebench sim listening on http://{bound}/v1 (Ctrl-C to stop)");
    let shutdown = async {
        signal.await;
        tracing::info!("sim: shutting down");
    };
    serve_state(listener, state, shutdown)
        .await
        .context("sim server failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Replay {
        #[command(flatten)]
        sim: SimReplayArgs,
    }

    #[test]
    fn replay_flags_are_prefixed_and_build_a_config() {
        let args = Replay::parse_from([
            "x",
            "--sim-timing",
            "fixed",
            "--sim-speed",
            "10",
            "--sim-ttft-ms",
            "50",
            "--sim-fault",
            "cut:3,every=2",
            "--sim-fault",
            "keepalive,rate=0.5",
            "--sim-kv-blocks",
            "99",
        ]);
        let config = args.sim.to_config(None).unwrap();
        assert_eq!(config.timing, TimingMode::Fixed);
        assert_eq!(config.speed, 10.0);
        assert_eq!(config.ttft, Duration::from_millis(50));
        assert_eq!(config.faults.len(), 2);
        assert_eq!(config.engine.constants.kv_blocks, 99);
        assert!(config.tokenizer.is_none());
    }

    #[derive(Debug, Parser)]
    struct Standalone {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn sim_binds_loopback_by_default() {
        let args = Standalone::parse_from(["x"]);
        assert!(args.sim.host.is_loopback());
        assert_eq!(args.sim.tokenizer, DEFAULT_TOKENIZER);
        let config = args.sim.options.to_config(None).unwrap();
        assert_eq!(
            config.body_limit_bytes,
            crate::sim::DEFAULT_BODY_LIMIT_BYTES
        );
        assert_eq!(config.timing, TimingMode::Engine);
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let args = Replay::parse_from(["x", "--sim-ttft-ms=-5"]);
        let err = args.sim.to_config(None).unwrap_err().to_string();
        assert!(err.contains("--sim-ttft-ms"), "{err}");
        let args = Replay::parse_from(["x", "--sim-speed", "0"]);
        assert!(args.sim.to_config(None).is_err());
        assert!(Replay::try_parse_from(["x", "--sim-fault", "nope"]).is_err());
    }
}
