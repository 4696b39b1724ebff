//! `tracebench prompts`: write the prompts a replay would send, one JSON object per record,
//! without sending anything. Also [`PromptArgs`], the prompt flags `replay` flattens.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::cli::trace_input::TraceInputArgs;
use crate::prompt::{
    DEFAULT_TOKENIZER, Prompt, PromptBuilder, PromptError, PromptMode, Tokenizer, for_each_mapped,
    load_tokenizer_spec, sample_indexes,
};
use crate::replay::output;
use crate::trace::TraceRecord;

/// How prompts are made: the flags `prompts` and `replay` share.
#[derive(Debug, Clone, clap::Args)]
pub struct PromptArgs {
    /// How prompt text is made: blocks (from hash_ids, keeps production prefix sharing),
    /// random (the seed's random ids), shared (every prompt a prefix of one text), auto
    /// (blocks where a record has hash_ids, else random).
    #[arg(long = "prompt", value_enum, value_name = "MODE", default_value_t = PromptMode::Auto)]
    pub prompt: PromptMode,

    /// Tokenizer prompt lengths are measured with: o200k_base, cl100k_base, a tokenizer.json
    /// path, a hub repository id, or auto (the served model's id).
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_TOKENIZER)]
    pub tokenizer: String,

    /// Seed of every random choice; the same trace, tokenizer and seed give the same bytes.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub seed: u64,

    /// Send token ids instead of text (completions API only): no text round trip at all.
    #[arg(long)]
    pub prompt_as_tokens: bool,
}

impl PromptArgs {
    /// The tokenizer `--tokenizer` names; `model_id` resolves `auto`.
    pub fn tokenizer(&self, model_id: Option<&str>) -> anyhow::Result<Arc<dyn Tokenizer>> {
        load_tokenizer_spec(&self.tokenizer, model_id)
            .with_context(|| format!("--tokenizer {}", self.tokenizer))
    }

    /// A prompt builder for `records` with these flags.
    pub fn builder(
        &self,
        tokenizer: Arc<dyn Tokenizer>,
        records: &[TraceRecord],
    ) -> anyhow::Result<PromptBuilder> {
        let builder = PromptBuilder::new(self.prompt, tokenizer, self.seed, records)
            .with_context(|| format!("--prompt {}", self.prompt))?;
        Ok(builder.with_token_ids(self.prompt_as_tokens))
    }
}

/// Write the prompts a replay would send.
#[derive(Debug, clap::Args)]
pub struct PromptsArgs {
    /// The trace and how to read it.
    #[command(flatten)]
    pub input: TraceInputArgs,

    /// How prompts are made.
    #[command(flatten)]
    pub prompt: PromptArgs,

    /// Where to write the prompts (JSONL, one object per record); an existing file is
    /// refused unless --force.
    #[arg(long, value_name = "FILE.jsonl")]
    pub output: PathBuf,

    /// Overwrite an existing --output file.
    #[arg(long)]
    pub force: bool,

    /// Chat template overhead to leave out of every prompt, tokens (replay measures it).
    #[arg(
        long,
        value_name = "TOKENS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub overhead_tokens: u32,

    /// Threads building prompts (default: all cores); the output does not depend on it.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub threads: Option<usize>,

    /// Re-encode a seeded sample of N prompts and fail if any has another length.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub verify: usize,
}

/// One output line: a record's prompt, or why it has none.
#[derive(Debug, Serialize)]
struct PromptLine<'a> {
    /// The record's line in the trace.
    line: u64,
    /// The record's prompt length, tokens.
    input_length: u32,
    /// Tokens of `prompt`; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens: Option<u32>,
    /// The mode that made it; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<PromptMode>,
    /// The text; absent on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    /// Token ids, under --prompt-as-tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_ids: Option<&'a [u32]>,
    /// Why no prompt could be built.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl<'a> PromptLine<'a> {
    /// The line for `record` and its prompt (or error).
    fn new(record: &TraceRecord, prompt: &'a Result<Prompt, PromptError>) -> Self {
        let ok = prompt.as_ref().ok();
        Self {
            line: record.line,
            input_length: record.input_tokens,
            tokens: ok.map(|p| p.tokens),
            mode: ok.map(|p| p.mode),
            prompt: ok.map(|p| p.text.as_str()),
            token_ids: ok.and_then(|p| p.token_ids.as_deref()),
            error: prompt.as_ref().err().map(|e| e.to_string()),
        }
    }
}

/// What writing the prompts found.
#[derive(Debug, Default)]
struct Tally {
    /// Prompts written.
    written: usize,
    /// Tokens in them.
    tokens: u64,
    /// Records without a prompt, and the first reason.
    failed: usize,
    /// The first error.
    first_error: Option<String>,
    /// Prompts re-encoded.
    verified: usize,
    /// Re-encoded prompts of another length, and the first one.
    mismatched: Vec<String>,
}

/// Runs `tracebench prompts`.
pub fn run(args: PromptsArgs) -> anyhow::Result<ExitCode> {
    output::check_new_file(&args.output, "--output", args.force)?;
    let trace = args.input.load()?;
    let tokenizer = args.prompt.tokenizer(None)?;
    let builder = args.prompt.builder(tokenizer, &trace.records)?;
    let threads = args.threads.unwrap_or_else(default_threads);

    let started = Instant::now();
    let tally = write_prompts(&args, &builder, &trace.records, threads)?;
    tracing::info!(
        "wrote {} prompts ({} tokens) to {} in {:.2} s on {threads} threads",
        tally.written,
        tally.tokens,
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    check_tally(&tally)?;
    Ok(ExitCode::SUCCESS)
}

/// One record's output, made on the building thread.
struct Written {
    /// The JSON line, newline included.
    json: Vec<u8>,
    /// Tokens of the prompt; `None` on error.
    tokens: Option<u32>,
    /// Why there is no prompt.
    error: Option<String>,
    /// For a sampled record: `Some(None)` if the re-encoded length held, else what differed.
    verified: Option<Option<String>>,
}

/// Builds and writes every prompt, re-encoding the sampled ones.
fn write_prompts(
    args: &PromptsArgs,
    builder: &PromptBuilder,
    records: &[TraceRecord],
    threads: usize,
) -> anyhow::Result<Tally> {
    let mut out = create(&args.output)?;
    let sample = sample_indexes(records.len(), args.verify, args.prompt.seed);
    let sampled: HashSet<u64> = sample.iter().map(|&i| records[i].line).collect();
    let tokenizer = builder.tokenizer().as_ref();
    let mut tally = Tally::default();

    let map = |record: &TraceRecord, prompt| {
        let check = sampled
            .contains(&record.line)
            .then(|| verify(tokenizer, record, &prompt));
        written(record, prompt, check)
    };
    let visit = |_: &TraceRecord, item: Written| {
        tally.add(&item);
        out.write_all(&item.json)
    };
    for_each_mapped(builder, records, args.overhead_tokens, threads, map, visit)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(tally)
}

/// The output of one record.
fn written(
    record: &TraceRecord,
    prompt: Result<Prompt, PromptError>,
    verified: Option<Option<String>>,
) -> Written {
    let mut json = serde_json::to_vec(&PromptLine::new(record, &prompt)).unwrap_or_default();
    json.push(b'\n');
    Written {
        json,
        tokens: prompt.as_ref().ok().map(|p| p.tokens),
        error: prompt.err().map(|e| e.to_string()),
        verified,
    }
}

impl Tally {
    /// Counts one record's output.
    fn add(&mut self, item: &Written) {
        if let Some(tokens) = item.tokens {
            self.written += 1;
            self.tokens += u64::from(tokens);
        }
        if let Some(error) = &item.error {
            self.failed += 1;
            self.first_error.get_or_insert_with(|| error.clone());
        }
        if let Some(check) = &item.verified {
            self.verified += 1;
            self.mismatched.extend(check.clone());
        }
    }
}

/// Re-encodes `prompt`: `None` if it has the length it claims, else what differed.
fn verify(
    tokenizer: &dyn Tokenizer,
    record: &TraceRecord,
    prompt: &Result<Prompt, PromptError>,
) -> Option<String> {
    let prompt = prompt.as_ref().ok()?;
    let got = tokenizer.count(&prompt.text);
    (got != prompt.tokens as usize)
        .then(|| format!("line {}: {got} tokens, not {}", record.line, prompt.tokens))
}

/// Fails on records without a prompt or sampled prompts of the wrong length.
fn check_tally(tally: &Tally) -> anyhow::Result<()> {
    if tally.verified > 0 {
        tracing::info!(
            "re-encoded {} sampled prompts: {} of another length",
            tally.verified,
            tally.mismatched.len()
        );
    }
    if let Some(first) = tally.mismatched.first() {
        anyhow::bail!(
            "{} sampled prompts re-encode to another length (first: {first})",
            tally.mismatched.len()
        );
    }
    if let Some(first) = &tally.first_error {
        anyhow::bail!("{} records have no prompt (first: {first})", tally.failed);
    }
    Ok(())
}

/// The output file, buffered.
fn create(path: &Path) -> anyhow::Result<BufWriter<File>> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

/// All cores, or one if that cannot be known.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
