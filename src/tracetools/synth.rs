//! Seeded synthetic traces: arrivals, lengths, shared prefixes and optional sessions.
//!
//! Everything random draws from one `StdRng` seeded by [`SynthParams::seed`], in a fixed
//! order, so one seed gives one trace byte for byte. Records are marked `type: synthetic`.
//! Arrivals: constant gaps, Poisson, or gamma gaps with a burstiness factor `b` (shape `b`,
//! mean gap `1 / rate`: `b = 1` is Poisson, `b < 1` burstier, the gaps' CV is `1 / sqrt(b)`).
//! With sessions, `rate` is still requests per second: sessions start at `rate / turns_mean`.

use std::str::FromStr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp, Gamma, LogNormal, Normal};

use crate::trace::{PrefixBlocks, SessionLink, TraceRecord};

/// The request type every synthetic record carries.
pub const SYNTHETIC_TYPE: &str = "synthetic";

/// Parameters that cannot make a trace.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    /// A number out of its range.
    #[error("{what}: {problem}")]
    Invalid {
        /// The parameter (flag name).
        what: &'static str,
        /// What is wrong, naming the value.
        problem: String,
    },
    /// A length distribution spec that does not parse.
    #[error(
        "length distribution {spec:?}: {problem} (expected fixed:N, uniform:MIN:MAX, normal:MEAN:STD or lognormal:MEAN:SIGMA)"
    )]
    BadDistribution {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        problem: String,
    },
}

/// How gaps between arrivals are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArrivalKind {
    /// Every gap is `1 / rate`.
    Constant,
    /// Exponential gaps (Poisson arrivals).
    Poisson,
    /// Gamma gaps with shape `burstiness`.
    Gamma,
}

/// A distribution of token counts, bounded after drawing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LengthDist {
    /// Always this many.
    Fixed(u32),
    /// Uniform over `[min, max]`.
    Uniform(u32, u32),
    /// Normal with this mean and standard deviation.
    Normal(f64, f64),
    /// Log-normal with this mean and this sigma of the underlying normal.
    LogNormal(f64, f64),
}

impl FromStr for LengthDist {
    type Err = SynthError;

    fn from_str(spec: &str) -> Result<Self, SynthError> {
        let bad = |problem: &str| SynthError::BadDistribution {
            spec: spec.to_string(),
            problem: problem.to_string(),
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let num = |i: usize| -> Result<f64, SynthError> {
            let text = parts.get(i).ok_or_else(|| bad("too few numbers"))?;
            match text.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(bad(&format!("{text:?} is not a non-negative number"))),
            }
        };
        let dist = match parts[0] {
            "fixed" => LengthDist::Fixed(num(1)? as u32),
            "uniform" => LengthDist::Uniform(num(1)? as u32, num(2)? as u32),
            "normal" => LengthDist::Normal(num(1)?, num(2)?),
            "lognormal" => LengthDist::LogNormal(num(1)?, num(2)?),
            other => return Err(bad(&format!("unknown kind {other:?}"))),
        };
        let expected_parts = if matches!(dist, LengthDist::Fixed(_)) {
            2
        } else {
            3
        };
        if parts.len() != expected_parts {
            return Err(bad("wrong count of numbers"));
        }
        if let LengthDist::Uniform(lo, hi) = dist
            && lo > hi
        {
            return Err(bad("minimum above maximum"));
        }
        Ok(dist)
    }
}

/// A length distribution with its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lengths {
    /// The distribution.
    pub dist: LengthDist,
    /// Smallest allowed value (draws below are raised to it).
    pub min: u32,
    /// Largest allowed value (draws above are lowered to it).
    pub max: u32,
}

/// Shared prefixes (think system prompts).
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixParams {
    /// Each group's prefix length in tokens (rounded down to whole blocks).
    pub group_tokens: Vec<u32>,
    /// Share of requests (0–1) that start with a group's prefix.
    pub share: f64,
    /// Zipf exponent of group popularity: group `i` (0-based) has weight `1 / (i + 1)^s`;
    /// 0 makes every group equally popular.
    pub zipf: f64,
}

/// Multi-turn sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionParams {
    /// Mean turns per session (geometric, at least 1).
    pub turns_mean: f64,
    /// Mean seconds from one turn's arrival to the next (exponential).
    pub think_time_s: f64,
}

/// When to stop generating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Extent {
    /// This many records.
    Count(usize),
    /// Records arriving within this many seconds.
    Duration(f64),
}

/// Everything a synthetic trace is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthParams {
    /// RNG seed.
    pub seed: u64,
    /// Mean requests per second.
    pub rate: f64,
    /// How many records, or for how long.
    pub extent: Extent,
    /// Gap distribution.
    pub arrival: ArrivalKind,
    /// Gamma shape (only for [`ArrivalKind::Gamma`]).
    pub burstiness: f64,
    /// Prompt lengths (new user tokens per turn with sessions).
    pub input: Lengths,
    /// Generated lengths.
    pub output: Lengths,
    /// Tokens per block.
    pub block_size: u32,
    /// Shared prefixes; `None` for none.
    pub prefix: Option<PrefixParams>,
    /// Sessions; `None` for single-turn requests.
    pub sessions: Option<SessionParams>,
}

/// Generates the trace, sorted by arrival, first record at zero.
pub fn generate(params: &SynthParams) -> Result<Vec<TraceRecord>, SynthError> {
    validate(params)?;
    let mut generator = Generator::new(params)?;
    let mut records = Vec::new();
    let mut start_s = 0.0;
    while !generator.done(&records, start_s) {
        generator.session(start_s, &mut records);
        start_s += generator.gap_s();
    }

    // TODO: with sessions and --count, generation stops once N records exist, so a session
    // that would have started later but sent a turn before the N-th arrival is missing; the
    // last few percent of the timeline are slightly thinner. Generating sessions until the
    // next start is past the N-th arrival would fix it.
    records.sort_by_key(|r| r.arrival);
    truncate(&mut records, params.extent);
    for (i, record) in records.iter_mut().enumerate() {
        record.line = i as u64 + 1;
    }
    Ok(records)
}

fn truncate(records: &mut Vec<TraceRecord>, extent: Extent) {
    match extent {
        Extent::Count(n) => records.truncate(n),
        Extent::Duration(s) => records.retain(|r| r.arrival.as_secs_f64() < s),
    }
}

fn validate(p: &SynthParams) -> Result<(), SynthError> {
    let invalid = |what, problem: String| Err(SynthError::Invalid { what, problem });
    if !(p.rate.is_finite() && p.rate > 0.0) {
        return invalid(
            "--rate",
            format!("expected a positive number, found {}", p.rate),
        );
    }
    if !(p.burstiness.is_finite() && p.burstiness > 0.0) {
        return invalid(
            "--burstiness",
            format!("expected a positive number, found {}", p.burstiness),
        );
    }
    if p.block_size == 0 {
        return invalid(
            "--block-size",
            "expected a positive integer, found 0".into(),
        );
    }
    match p.extent {
        Extent::Count(0) => return invalid("--count", "expected at least 1, found 0".into()),
        Extent::Duration(s) if !(s.is_finite() && s > 0.0) => {
            return invalid(
                "--duration",
                format!("expected a positive number, found {s}"),
            );
        }
        _ => {}
    }
    if let Some(prefix) = &p.prefix
        && !(0.0..=1.0).contains(&prefix.share)
    {
        return invalid(
            "--prefix-share",
            format!("expected 0 to 1, found {}", prefix.share),
        );
    }
    if let Some(s) = p.sessions
        && !(s.turns_mean >= 1.0 && s.think_time_s >= 0.0)
    {
        return invalid(
            "--turns-mean",
            format!("expected at least 1, found {}", s.turns_mean),
        );
    }
    Ok(())
}

/// The running state: RNG, next ids, group blocks.
struct Generator<'p> {
    params: &'p SynthParams,
    rng: StdRng,
    next_block: u64,
    next_chat: i64,
    groups: Vec<Vec<u64>>,
    group_weights: Vec<f64>,
    session_rate: f64,
}

impl<'p> Generator<'p> {
    fn new(params: &'p SynthParams) -> Result<Self, SynthError> {
        let mut generator = Self {
            params,
            rng: StdRng::seed_from_u64(params.seed),
            next_block: 0,
            next_chat: 1,
            groups: Vec::new(),
            group_weights: Vec::new(),
            session_rate: params.rate / params.sessions.map_or(1.0, |s| s.turns_mean),
        };
        if let Some(prefix) = &params.prefix {
            for (i, tokens) in prefix.group_tokens.iter().enumerate() {
                let blocks = (tokens / params.block_size) as usize;
                let ids = generator.fresh_blocks(blocks);
                generator.groups.push(ids);
                generator
                    .group_weights
                    .push(1.0 / ((i + 1) as f64).powf(prefix.zipf));
            }
        }
        Ok(generator)
    }

    fn done(&self, records: &[TraceRecord], next_start_s: f64) -> bool {
        match self.params.extent {
            Extent::Count(n) => records.len() >= n,
            Extent::Duration(s) => next_start_s >= s,
        }
    }

    /// The gap to the next session start, in seconds.
    fn gap_s(&mut self) -> f64 {
        let mean = 1.0 / self.session_rate;
        match self.params.arrival {
            ArrivalKind::Constant => mean,
            ArrivalKind::Poisson => sample_or(&mut self.rng, Exp::new(self.session_rate), mean),
            ArrivalKind::Gamma => {
                let b = self.params.burstiness;
                sample_or(&mut self.rng, Gamma::new(b, mean / b), mean)
            }
        }
    }

    /// One session (a single record without sessions) starting at `start_s`.
    fn session(&mut self, start_s: f64, out: &mut Vec<TraceRecord>) {
        let Some(session) = self.params.sessions else {
            let record = self.first_turn(start_s);
            out.push(record);
            return;
        };
        let turns = self.turns(session.turns_mean);
        let mut record = self.first_turn(start_s);
        let chat_id = self.chat_id();
        record.session = Some(SessionLink {
            chat_id,
            parent_chat_id: -1,
            turn: Some(1),
        });
        for turn in 2..=turns {
            let think = sample_or(
                &mut self.rng,
                Exp::new(1.0 / session.think_time_s.max(1e-9)),
                0.0,
            );
            let child = self.next_turn(&record, think, turn);
            out.push(std::mem::replace(&mut record, child));
        }
        out.push(record);
    }

    /// Geometric count of turns with the given mean, at least 1.
    fn turns(&mut self, mean: f64) -> u32 {
        let p_more = 1.0 - 1.0 / mean;
        let mut turns = 1;
        while turns < MAX_TURNS && self.rng.random::<f64>() < p_more {
            turns += 1;
        }
        turns
    }

    fn first_turn(&mut self, arrival_s: f64) -> TraceRecord {
        let input = draw(&mut self.rng, self.params.input);
        let output = draw(&mut self.rng, self.params.output);
        let mut hash_ids = self.group_blocks(input);
        let total = input.div_ceil(self.params.block_size) as usize;
        let fresh = self.fresh_blocks(total.saturating_sub(hash_ids.len()));
        hash_ids.extend(fresh);
        self.record(arrival_s, input, output, hash_ids)
    }

    /// A follow-up turn: the whole history (parent prompt and answer) plus new user tokens,
    /// its blocks starting with the parent's full blocks.
    fn next_turn(&mut self, parent: &TraceRecord, think_s: f64, turn: u32) -> TraceRecord {
        let added = draw(&mut self.rng, self.params.input);
        let output = draw(&mut self.rng, self.params.output);
        let input = parent
            .input_tokens
            .saturating_add(parent.output_tokens)
            .saturating_add(added);
        let block = self.params.block_size;

        let kept = (parent.input_tokens / block) as usize;
        let mut hash_ids: Vec<u64> = parent.prefix.as_ref().map_or(Vec::new(), |p| {
            p.hash_ids[..kept.min(p.hash_ids.len())].to_vec()
        });
        let fresh =
            self.fresh_blocks((input.div_ceil(block) as usize).saturating_sub(hash_ids.len()));
        hash_ids.extend(fresh);

        let arrival_s = parent.arrival.as_secs_f64() + think_s;
        let mut record = self.record(arrival_s, input, output, hash_ids);
        let parent_chat_id = parent.session.map_or(-1, |s| s.chat_id);
        record.session = Some(SessionLink {
            chat_id: self.chat_id(),
            parent_chat_id,
            turn: Some(turn),
        });
        record
    }

    fn record(&self, arrival_s: f64, input: u32, output: u32, hash_ids: Vec<u64>) -> TraceRecord {
        let arrival = Duration::from_secs_f64(arrival_s.max(0.0));
        let mut record = TraceRecord::new(arrival, input, output, 0);
        record.prefix = Some(PrefixBlocks {
            hash_ids,
            block_size: self.params.block_size,
        });
        record.kind = Some(SYNTHETIC_TYPE.to_string());
        record
    }

    /// The chosen group's blocks that fit in `input` tokens; empty without a group.
    fn group_blocks(&mut self, input: u32) -> Vec<u64> {
        let Some(prefix) = &self.params.prefix else {
            return Vec::new();
        };
        if self.groups.is_empty() || self.rng.random::<f64>() >= prefix.share {
            return Vec::new();
        }
        let group = pick_weighted(&mut self.rng, &self.group_weights);
        let fit = (input / self.params.block_size) as usize;
        let blocks = &self.groups[group];
        blocks[..fit.min(blocks.len())].to_vec()
    }

    fn fresh_blocks(&mut self, n: usize) -> Vec<u64> {
        let ids = (self.next_block..self.next_block + n as u64).collect();
        self.next_block += n as u64;
        ids
    }

    fn chat_id(&mut self) -> i64 {
        self.next_chat += 1;
        self.next_chat - 1
    }
}

/// A bound on turns per session, so a mean near infinity cannot loop for ever.
const MAX_TURNS: u32 = 10_000;

/// Draws from `dist`, or returns `fallback` when its parameters were invalid.
fn sample_or<D: Distribution<f64>, E>(rng: &mut StdRng, dist: Result<D, E>, fallback: f64) -> f64 {
    match dist {
        Ok(dist) => dist.sample(rng),
        Err(_) => fallback,
    }
}

fn draw(rng: &mut StdRng, lengths: Lengths) -> u32 {
    let value = match lengths.dist {
        LengthDist::Fixed(n) => f64::from(n),
        LengthDist::Uniform(lo, hi) => f64::from(rng.random_range(lo..=hi)),
        LengthDist::Normal(mean, std) => sample_or(rng, Normal::new(mean, std), mean),
        LengthDist::LogNormal(mean, sigma) => {
            let mu = mean.max(1.0).ln() - sigma * sigma / 2.0;
            sample_or(rng, LogNormal::new(mu, sigma), mean)
        }
    };
    let bounded = value.round().clamp(
        f64::from(lengths.min),
        f64::from(lengths.max.max(lengths.min)),
    );
    bounded as u32
}

fn pick_weighted(rng: &mut StdRng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut target = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return i;
        }
        target -= w;
    }
    weights.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SynthParams {
        SynthParams {
            seed: 7,
            rate: 10.0,
            extent: Extent::Count(200),
            arrival: ArrivalKind::Poisson,
            burstiness: 1.0,
            input: Lengths {
                dist: LengthDist::Fixed(2048),
                min: 1,
                max: 100_000,
            },
            output: Lengths {
                dist: LengthDist::Uniform(10, 20),
                min: 1,
                max: 100_000,
            },
            block_size: 512,
            prefix: None,
            sessions: None,
        }
    }

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert_eq!("fixed:5".parse(), Ok(LengthDist::Fixed(5)));
        assert_eq!(
            "lognormal:1000:0.5".parse(),
            Ok(LengthDist::LogNormal(1000.0, 0.5))
        );
        let err = "uniform:9:3"
            .parse::<LengthDist>()
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("minimum above maximum")));
        assert!("gauss:1:2".parse::<LengthDist>().is_err());
    }

    #[test]
    fn same_seed_same_trace() {
        let a = generate(&params()).expect("valid");
        let b = generate(&params()).expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.len(), 200);
        assert_eq!(a[0].arrival, Duration::ZERO);
        let c = generate(&SynthParams {
            seed: 8,
            ..params()
        })
        .expect("valid");
        assert_ne!(a, c);
    }

    #[test]
    fn session_turns_extend_their_parent() {
        let p = SynthParams {
            sessions: Some(SessionParams {
                turns_mean: 3.0,
                think_time_s: 5.0,
            }),
            ..params()
        };
        let records = generate(&p).expect("valid");
        let stats = crate::trace::sessions::SessionStats::compute(&records).expect("sessions");
        assert!(stats.children > 50);
        assert_eq!(stats.missing_parent, 0);
        assert_eq!(stats.not_extending_parent, 0);
    }
}
