//! Prompt synthesis against real tokenizers: exact lengths after re-encoding (bounded
//! property tests), prefix sharing from `hash_ids`, session children continuing their
//! parent's prompt, and byte-identical output across runs and thread counts.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use tracebench::prompt::{
    PieceVocab, Prompt, PromptBuilder, PromptError, PromptMode, Tokenizer, for_each_prompt,
    load_tokenizer,
};
use tracebench::trace::{LoadOptions, PrefixBlocks, TraceRecord};

use crate::common;

/// Longest prompt the property tests ask for, tokens (the bound).
const LONGEST: u32 = 130_000;

/// A tokenizer and its vetted pieces, loaded once for the whole test binary.
type Vetted = (Arc<dyn Tokenizer>, Arc<PieceVocab>);

/// Every tokenizer the tests cover that is available here (the files skip when absent).
fn tokenizers() -> &'static [Vetted] {
    static VETTED: OnceLock<Vec<Vetted>> = OnceLock::new();
    VETTED.get_or_init(|| {
        let files = [common::qwen3_tokenizer(), common::llama32_tokenizer()];
        let specs = ["o200k_base".to_string(), "cl100k_base".to_string()];
        let specs = specs.into_iter().chain(files.into_iter().flatten());
        specs.map(|spec| vetted(&spec)).collect()
    })
}

/// `spec` loaded and its pieces vetted.
fn vetted(spec: &str) -> Vetted {
    let tok = load_tokenizer(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let vocab = PieceVocab::build(tok.as_ref()).unwrap_or_else(|e| panic!("{spec}: {e}"));
    (tok, Arc::new(vocab))
}

/// A builder over a cached tokenizer.
fn builder(vetted: &Vetted, mode: PromptMode, seed: u64, meta: &[TraceRecord]) -> PromptBuilder {
    let (tok, vocab) = vetted.clone();
    PromptBuilder::with_vocab(mode, tok, Some(vocab), seed, meta).expect("builds")
}

/// o200k_base, the default.
fn o200k() -> &'static Vetted {
    &tokenizers()[0]
}

/// A record of `input` tokens with `hash_ids` of `block_size` (none if empty).
fn record(line: u64, input: u32, hash_ids: &[u64], block_size: u32) -> TraceRecord {
    let mut r = TraceRecord::new(Duration::ZERO, input, 1, line);
    if !hash_ids.is_empty() {
        r.prefix = Some(PrefixBlocks {
            hash_ids: hash_ids.to_vec(),
            block_size,
        });
    }
    r
}

/// A deterministic proptest runner with few cases: the suite stays fast and repeatable.
fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// Fails the case unless `prompt` re-encodes to exactly `target` tokens.
fn check_exact(tok: &dyn Tokenizer, prompt: &Prompt, target: u32) -> Result<(), TestCaseError> {
    let got = tok.count(&prompt.text) as u32;
    if got != target || prompt.tokens != target {
        let name = tok.name();
        return Err(TestCaseError::fail(format!(
            "{name}: {got} tokens, wanted {target}"
        )));
    }
    Ok(())
}

#[test]
fn blocks_prompts_reencode_to_the_exact_length() {
    for vetted in tokenizers() {
        let (tok, builder) = (&vetted.0, builder(vetted, PromptMode::Blocks, 1, &[]));
        let lengths = 1..=LONGEST;
        runner(6)
            .run(
                &(lengths, 1u32..600, 0u32..40),
                |(input, block_size, overhead)| {
                    let blocks = input.div_ceil(block_size) as u64;
                    let ids: Vec<u64> = (0..blocks).map(|i| i * 7 + 3).collect();
                    let r = record(2, input, &ids, block_size);
                    let prompt = builder
                        .build(&r, overhead)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    check_exact(tok.as_ref(), &prompt, input.saturating_sub(overhead).max(1))
                },
            )
            .unwrap_or_else(|e| panic!("{}: {e}", tok.name()));
    }
}

#[test]
fn shared_prompts_reencode_to_the_exact_length() {
    for vetted in tokenizers() {
        let meta = [record(1, LONGEST, &[], 0)];
        let (tok, builder) = (&vetted.0, builder(vetted, PromptMode::Shared, 1, &meta));
        runner(4)
            .run(&(1..=LONGEST), |input| {
                let prompt = builder.build(&record(2, input, &[], 0), 0);
                let prompt = prompt.map_err(|e| TestCaseError::fail(e.to_string()))?;
                check_exact(tok.as_ref(), &prompt, input)
            })
            .unwrap_or_else(|e| panic!("{}: {e}", tok.name()));
    }
}

#[test]
fn random_prompts_are_exact_or_say_they_could_not_be() {
    for vetted in tokenizers() {
        let (tok, builder) = (&vetted.0, builder(vetted, PromptMode::Random, 1, &[]));
        runner(3)
            .run(&(1..=LONGEST), |input| {
                match builder.build(&record(2, input, &[], 0), 0) {
                    Ok(prompt) => check_exact(tok.as_ref(), &prompt, input),
                    Err(PromptError::RandomGaveUp { target_tokens, .. })
                        if target_tokens == input =>
                    {
                        Ok(())
                    }
                    Err(other) => Err(TestCaseError::fail(other.to_string())),
                }
            })
            .unwrap_or_else(|e| panic!("{}: {e}", tok.name()));
    }
}

#[test]
fn shared_hash_ids_give_identical_leading_tokens_and_a_different_next_block() {
    const BLOCK: u32 = 64;
    for vetted in tokenizers() {
        let (tok, builder) = (&vetted.0, builder(vetted, PromptMode::Blocks, 5, &[]));
        for k in [1usize, 3] {
            let mut a_ids: Vec<u64> = (10..16).collect();
            let mut b_ids = a_ids.clone();
            b_ids[k..].iter_mut().for_each(|id| *id += 1000);
            a_ids.truncate(6);
            let (a, b) = (
                record(1, 6 * BLOCK, &a_ids, BLOCK),
                record(2, 6 * BLOCK, &b_ids, BLOCK),
            );

            let ea = tok.encode(&builder.build(&a, 0).expect("builds").text);
            let eb = tok.encode(&builder.build(&b, 0).expect("builds").text);
            let shared = k * BLOCK as usize;
            let next = shared..shared + BLOCK as usize;
            assert_eq!(ea[..shared], eb[..shared], "{}: k = {k}", tok.name());
            assert_ne!(ea[next.clone()], eb[next], "{}: k = {k}", tok.name());
        }
    }
}

#[test]
fn session_children_start_with_their_parents_prompt() {
    let path = common::fixture("prompt/sessions.jsonl");
    let records = tracebench::trace::load(&path, &LoadOptions::default())
        .expect("loads")
        .records;
    assert!(
        records.iter().all(|r| r.session.is_some()),
        "fixture has session links"
    );
    let (tok, builder) = (&o200k().0, builder(o200k(), PromptMode::Auto, 3, &records));
    let text = |i: usize| builder.build(&records[i], 0).expect("builds").text;

    // Turns 1 → 2 → 3 extend each other's hash_ids: each prompt starts with the previous one.
    assert!(text(1).starts_with(&text(0)));
    assert!(text(2).starts_with(&text(1)));
    assert_eq!(tok.count(&text(2)), 110);

    // Chat 4 keeps only its parent's first two blocks: 32 tokens shared, then it differs.
    let (parent, child) = (tok.encode(&text(0)), tok.encode(&text(3)));
    assert_eq!(parent[..32], child[..32]);
    assert_ne!(parent[32..40], child[32..40]);
}

#[test]
fn mooncake_records_sharing_block_zero_share_its_512_tokens() {
    let Some(path) = common::shared_trace("mooncake_conversation_trace.jsonl") else {
        return;
    };
    let mut records = tracebench::trace::load(&path, &LoadOptions::default())
        .expect("loads")
        .records;
    records.truncate(4);
    let (tok, builder) = (&o200k().0, builder(o200k(), PromptMode::Auto, 0, &records));
    let encoded: Vec<Vec<u32>> = records
        .iter()
        .map(|r| tok.encode(&builder.build(r, 0).expect("builds").text))
        .collect();
    for (r, e) in records.iter().zip(&encoded) {
        assert_eq!(e.len(), r.input_tokens as usize, "line {}", r.line);
    }
    assert_eq!(encoded[0][..512], encoded[1][..512]);
    assert_ne!(encoded[0][512..1024], encoded[1][512..1024]);
}

#[test]
fn prompts_are_identical_across_runs_and_thread_counts() {
    let path = common::fixture("prompt/mixed.jsonl");
    let records = tracebench::trace::load(&path, &LoadOptions::default())
        .expect("loads")
        .records;
    let collect = |threads: usize| {
        // A fresh tokenizer and vetting each run: nothing may carry over between runs.
        let tok = load_tokenizer("o200k_base").expect("built in");
        let builder = PromptBuilder::new(PromptMode::Auto, tok, 11, &records).expect("vets");
        let mut texts = Vec::new();
        for_each_prompt(&builder, &records, 2, threads, |_, p| {
            texts.push(p.map(|p| p.text));
            Ok::<_, ()>(())
        })
        .expect("visits");
        texts
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .expect("builds")
    };
    let one = collect(1);
    assert_eq!(one, collect(1));
    assert_eq!(one, collect(2));
    assert_eq!(one, collect(5));
}

#[test]
fn prompts_command_output_is_pinned_and_thread_independent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = |threads: &str, out: &Path| {
        let status = std::process::Command::new(common::bin())
            .args(["prompts", "--trace"])
            .arg(common::fixture("prompt/mixed.jsonl"))
            .args([
                "--seed",
                "11",
                "--threads",
                threads,
                "--verify",
                "7",
                "--output",
            ])
            .arg(out)
            .status()
            .expect("runs");
        assert!(status.success());
        std::fs::read(out).expect("output")
    };
    let (a, b) = (
        run("1", &dir.path().join("a.jsonl")),
        run("2", &dir.path().join("b.jsonl")),
    );
    assert_eq!(a, b);

    // Pinned: a change means every prompt tracebench writes has changed; say so in the log.
    let first: serde_json::Value =
        serde_json::from_slice(a.split(|&c| c == b'\n').next().expect("a line")).expect("json");
    assert_eq!(first["line"], 1);
    assert_eq!(first["input_length"], 64);
    assert_eq!(first["tokens"], 64);
    assert_eq!(first["mode"], "blocks");
    let words: Vec<&str> = first["prompt"]
        .as_str()
        .expect("text")
        .split(' ')
        .take(6)
        .collect();
    assert_eq!(
        words,
        ["", "instrument", "montant", "appointments", "jam", "d"]
    );
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&a));
    assert_eq!(
        digest,
        "a069ac3758ec255760e6aff98e2ff90143806da3432e50c6b389e1d0417af4ea"
    );
}

/// Runs `tracebench prompts` on the mixed fixture with `--tokenizer spec`, HF_HOME at `home`
/// and the hub switched off; returns (success, stderr).
fn prompts_offline(spec: &str, mode: &str, home: &Path) -> (bool, String) {
    let output = std::process::Command::new(common::bin())
        .args(["prompts", "--trace"])
        .arg(common::fixture("prompt/mixed.jsonl"))
        .args([
            "--limit",
            "1",
            "--prompt",
            mode,
            "--tokenizer",
            spec,
            "--output",
        ])
        .arg(home.join("out.jsonl"))
        .env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn offline_hub_id_without_a_cached_file_says_how_to_pass_a_path() {
    let home = tempfile::tempdir().expect("temp dir");
    let (ok, stderr) = prompts_offline("someorg/somemodel", "random", home.path());
    assert!(!ok);
    assert!(
        stderr.contains("cannot get tokenizer.json of hub repository someorg/somemodel"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--tokenizer /path/to/tokenizer.json"),
        "{stderr}"
    );
}

#[test]
fn offline_hub_id_uses_the_cached_file() {
    // The HF cache layout: refs/main names the snapshot holding the file.
    let home = tempfile::tempdir().expect("temp dir");
    let repo = home.path().join("hub/models--someorg--tiny");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::create_dir_all(repo.join("snapshots/abc123")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), "abc123").expect("write");
    let tiny = common::fixture("prompt/tiny_tokenizer.json");
    std::fs::copy(tiny, repo.join("snapshots/abc123/tokenizer.json")).expect("copy");

    let (ok, stderr) = prompts_offline("someorg/tiny", "random", home.path());
    assert!(ok, "{stderr}");
    let out = std::fs::read_to_string(home.path().join("out.jsonl")).expect("output");
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(
        (line["tokens"].as_u64(), line["input_length"].as_u64()),
        (Some(64), Some(64))
    );
    let words = line["prompt"]
        .as_str()
        .expect("text")
        .split_whitespace()
        .count();
    assert_eq!(words, 64, "a WordLevel tokenizer counts one token per word");
}

#[test]
fn a_tokenizer_without_word_pieces_is_refused_for_blocks_with_a_hint() {
    let home = tempfile::tempdir().expect("temp dir");
    let tiny = common::fixture("prompt/tiny_tokenizer.json");
    let (ok, stderr) = prompts_offline(tiny.to_str().expect("utf-8 path"), "blocks", home.path());
    assert!(!ok);
    assert!(
        stderr.contains("single-token word pieces (need 256); use --prompt random"),
        "{stderr}"
    );
}
