//! Planning: a pure, seeded function from trace records and options to the instants at
//! which each request is sent. No clock and no tokio here.
//!
//! A [`Plan`] holds one [`PlanEntry`] per record, in send order, each with an offset from
//! the run start: the trace's own timestamps (already rebased and scaled by the trace
//! layer's timeline transforms), or synthetic arrivals (`--request-rate`, `--burstiness`).
//! An entry may also wait on an earlier entry finishing (`--sessions gate|think`): the
//! dispatcher resolves such waits at run time. Invariant: the same records, options and
//! seed give the same plan.

use std::collections::HashMap;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Gamma};
use serde::Serialize;

use crate::trace::TraceRecord;

/// Errors in the planning options.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// `--request-rate` is not a positive number (or `inf`).
    #[error("--request-rate {0}: expected a positive number of requests/s, or inf")]
    Rate(f64),
    /// `--burstiness` is not a positive finite number.
    #[error("--burstiness {0}: expected a positive number (1 = Poisson)")]
    Burstiness(f64),
}

/// When requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// At the trace's timestamps.
    Trace,
    /// Synthetic arrivals at `rate_per_s` with gamma-distributed gaps (vLLM's
    /// `--request-rate` / `--burstiness`); an infinite rate sends everything at once.
    Synthetic {
        /// Mean arrival rate, requests/s.
        rate_per_s: f64,
        /// Gamma shape: 1 is Poisson, below 1 burstier, above 1 more regular.
        burstiness: f64,
    },
}

/// How a session's follow-up turn relates to its parent (`--sessions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// Every record at its own time (the seed's behaviour).
    Ignore,
    /// A child goes at its own time or when its parent has finished, whichever is later.
    Gate,
    /// A child goes when its parent has finished plus the trace's think time.
    Think,
}

/// The planning options.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Trace timestamps or synthetic arrivals.
    pub arrivals: Arrivals,
    /// How session children wait for their parents.
    pub sessions: SessionMode,
    /// Cap on a `think` wait after the parent finished.
    pub max_think: Duration,
    /// Seed for synthetic arrivals.
    pub seed: u64,
}

/// What an entry waits for before it may be sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wait {
    /// The plan index of the parent entry.
    pub parent: usize,
    /// How the wait is resolved.
    pub kind: WaitKind,
}

/// How a wait on the parent is resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaitKind {
    /// Send at max(own offset, parent finished).
    Gate,
    /// Send at parent finished + clamp(gap − parent's response time, 0, max_think).
    Think {
        /// The trace's gap between the parent's and the child's arrivals (scaled).
        gap: Duration,
        /// The cap on the think time.
        max_think: Duration,
    },
}

/// One request of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanEntry {
    /// Index into the records the plan was made from.
    pub record: usize,
    /// When to send, from the run start (for `think` children: the trace time, a floor
    /// only if the parent failed).
    pub offset: Duration,
    /// A parent to wait on; `None` for independent requests.
    pub wait: Option<Wait>,
}

/// Counts of session links found while planning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SessionCounts {
    /// Entries that wait on a parent.
    pub children: usize,
    /// Records whose parent is not in the trace (or not earlier): planned as roots.
    pub missing_parents: usize,
}

/// The plan of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Entries in send order (ascending offsets).
    pub entries: Vec<PlanEntry>,
    /// The session mode in force.
    pub sessions: SessionMode,
    /// Session links found.
    pub session_counts: SessionCounts,
}

/// Whether any record continues an earlier turn (decides the default `--sessions`).
pub fn has_sessions(records: &[TraceRecord]) -> bool {
    records
        .iter()
        .any(|r| r.session.is_some_and(|s| s.parent_chat_id >= 0))
}

/// Plans the replay of `records` (in arrival order, first at offset zero).
pub fn plan(records: &[TraceRecord], options: &PlanOptions) -> Result<Plan, PlanError> {
    let offsets = match options.arrivals {
        Arrivals::Trace => records.iter().map(|r| r.arrival).collect(),
        Arrivals::Synthetic {
            rate_per_s,
            burstiness,
        } => synthetic_offsets(records.len(), rate_per_s, burstiness, options.seed)?,
    };
    let mut entries: Vec<PlanEntry> = offsets
        .into_iter()
        .enumerate()
        .map(|(record, offset)| PlanEntry {
            record,
            offset,
            wait: None,
        })
        .collect();
    entries.sort_by_key(|e| e.offset);

    let session_counts = link_sessions(records, &mut entries, options);
    Ok(Plan {
        entries,
        sessions: options.sessions,
        session_counts,
    })
}

/// Offsets of `count` synthetic arrivals: the first at zero, then gamma-distributed gaps
/// with mean `1 / rate_per_s` and shape `burstiness`.
pub fn synthetic_offsets(
    count: usize,
    rate_per_s: f64,
    burstiness: f64,
    seed: u64,
) -> Result<Vec<Duration>, PlanError> {
    if rate_per_s.is_nan() || rate_per_s <= 0.0 {
        return Err(PlanError::Rate(rate_per_s));
    }
    if !burstiness.is_finite() || burstiness <= 0.0 {
        return Err(PlanError::Burstiness(burstiness));
    }
    if rate_per_s.is_infinite() {
        return Ok(vec![Duration::ZERO; count]);
    }

    let gamma = Gamma::new(burstiness, 1.0 / (rate_per_s * burstiness))
        .map_err(|_| PlanError::Burstiness(burstiness))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut now_s = 0.0_f64;
    let mut offsets = Vec::with_capacity(count);
    for i in 0..count {
        if i > 0 {
            now_s += gamma.sample(&mut rng);
        }
        offsets.push(Duration::from_secs_f64(now_s));
    }
    Ok(offsets)
}

/// Attaches each child to its parent's entry, per the session mode.
fn link_sessions(
    records: &[TraceRecord],
    entries: &mut [PlanEntry],
    options: &PlanOptions,
) -> SessionCounts {
    let mut counts = SessionCounts::default();
    let mut by_chat_id: HashMap<i64, usize> = HashMap::new();
    for index in 0..entries.len() {
        let Some(link) = records[entries[index].record].session else {
            continue;
        };
        if link.parent_chat_id >= 0 {
            match by_chat_id.get(&link.parent_chat_id) {
                Some(&parent) => {
                    counts.children += 1;
                    entries[index].wait = wait_for(entries, parent, index, options);
                }
                None => counts.missing_parents += 1,
            }
        }
        by_chat_id.insert(link.chat_id, index);
    }
    counts
}

fn wait_for(
    entries: &[PlanEntry],
    parent: usize,
    child: usize,
    options: &PlanOptions,
) -> Option<Wait> {
    let kind = match options.sessions {
        SessionMode::Ignore => return None,
        SessionMode::Gate => WaitKind::Gate,
        SessionMode::Think => WaitKind::Think {
            gap: entries[child].offset.saturating_sub(entries[parent].offset),
            max_think: options.max_think,
        },
    };
    Some(Wait { parent, kind })
}

impl WaitKind {
    /// When a child may be sent, given its own offset, its parent's send and end offsets
    /// (from the run start) and whether the parent succeeded.
    pub fn release(&self, own: Duration, parent_sent: Duration, parent_end: Duration) -> Duration {
        match *self {
            WaitKind::Gate => own.max(parent_end),
            WaitKind::Think { gap, max_think } => {
                let response = parent_end.saturating_sub(parent_sent);
                parent_end + gap.saturating_sub(response).min(max_think)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::SessionLink;

    fn record(arrival_ms: u64, chat: i64, parent: i64) -> TraceRecord {
        let mut r = TraceRecord::new(Duration::from_millis(arrival_ms), 10, 5, 1);
        r.session = Some(SessionLink {
            chat_id: chat,
            parent_chat_id: parent,
            turn: None,
        });
        r
    }

    fn options(arrivals: Arrivals, sessions: SessionMode) -> PlanOptions {
        PlanOptions {
            arrivals,
            sessions,
            max_think: Duration::from_secs(60),
            seed: 7,
        }
    }

    #[test]
    fn trace_offsets_are_kept_and_ordered() {
        let records = vec![record(0, 1, -1), record(1500, 2, -1), record(250, 3, -1)];
        let plan = plan(&records, &options(Arrivals::Trace, SessionMode::Ignore));
        let plan = plan.unwrap_or_else(|e| panic!("{e}"));
        let order: Vec<_> = plan.entries.iter().map(|e| (e.record, e.offset)).collect();
        assert_eq!(
            order,
            vec![
                (0, Duration::ZERO),
                (2, Duration::from_millis(250)),
                (1, Duration::from_millis(1500))
            ]
        );
    }

    #[test]
    fn synthetic_arrivals_are_seeded_and_have_the_asked_rate() {
        let a = synthetic_offsets(20_000, 100.0, 1.0, 42).unwrap_or_default();
        let b = synthetic_offsets(20_000, 100.0, 1.0, 42).unwrap_or_default();
        let c = synthetic_offsets(20_000, 100.0, 1.0, 43).unwrap_or_default();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a[0], Duration::ZERO);
        // 19,999 gaps of mean 10 ms: the span is 200 s within a few percent.
        let span_s = a[19_999].as_secs_f64();
        assert!((span_s - 200.0).abs() < 6.0, "{span_s}");
    }

    #[test]
    fn burstiness_changes_the_spread_not_the_mean() {
        let gaps = |b: f64| {
            let o = synthetic_offsets(20_000, 50.0, b, 1).unwrap_or_default();
            let g: Vec<f64> = o.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            let var = g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / g.len() as f64;
            (mean, var.sqrt() / mean)
        };
        let (poisson_mean, poisson_cv) = gaps(1.0);
        let (bursty_mean, bursty_cv) = gaps(0.25);
        assert!((poisson_mean - 0.02).abs() < 0.001 && (bursty_mean - 0.02).abs() < 0.002);
        // Coefficient of variation of gamma gaps is 1/sqrt(shape): 1 and 2.
        assert!((poisson_cv - 1.0).abs() < 0.05, "{poisson_cv}");
        assert!((bursty_cv - 2.0).abs() < 0.15, "{bursty_cv}");
    }

    #[test]
    fn infinite_rate_sends_all_at_once_and_bad_options_are_named() {
        let all = synthetic_offsets(3, f64::INFINITY, 1.0, 0).unwrap_or_default();
        assert_eq!(all, vec![Duration::ZERO; 3]);
        assert_eq!(synthetic_offsets(3, 0.0, 1.0, 0), Err(PlanError::Rate(0.0)));
        let err = synthetic_offsets(3, 1.0, -1.0, 0)
            .err()
            .map(|e| e.to_string());
        assert!(err.unwrap_or_default().contains("--burstiness -1"));
    }

    #[test]
    fn sessions_link_children_and_count_missing_parents() {
        // 1 → 2 → 3, 1 → 4, and 6's parent 5 is absent.
        let records = vec![
            record(0, 1, -1),
            record(100, 2, 1),
            record(200, 3, 2),
            record(300, 4, 1),
            record(400, 6, 5),
        ];
        let gate = plan(&records, &options(Arrivals::Trace, SessionMode::Gate));
        let gate = gate.unwrap_or_else(|e| panic!("{e}"));
        let parents: Vec<_> = gate
            .entries
            .iter()
            .map(|e| e.wait.map(|w| w.parent))
            .collect();
        assert_eq!(parents, vec![None, Some(0), Some(1), Some(0), None]);
        assert_eq!(gate.session_counts.children, 3);
        assert_eq!(gate.session_counts.missing_parents, 1);

        let ignore = plan(&records, &options(Arrivals::Trace, SessionMode::Ignore));
        let ignore = ignore.unwrap_or_else(|e| panic!("{e}"));
        assert!(ignore.entries.iter().all(|e| e.wait.is_none()));
        assert_eq!(ignore.session_counts.children, 3);
    }

    #[test]
    fn think_gap_is_the_trace_gap_and_release_subtracts_the_response() {
        let records = vec![record(0, 1, -1), record(5000, 2, 1)];
        let think = plan(&records, &options(Arrivals::Trace, SessionMode::Think));
        let wait = think.ok().and_then(|p| p.entries[1].wait);
        let kind = wait.map(|w| w.kind);
        let s = Duration::from_secs;
        assert_eq!(
            kind,
            Some(WaitKind::Think {
                gap: s(5),
                max_think: s(60)
            })
        );
        let kind = kind.unwrap_or(WaitKind::Gate);
        // Parent sent at 0, finished at 2 s: think time 5 − 2 = 3 s after the parent's end.
        assert_eq!(kind.release(s(5), s(0), s(2)), s(5));
        // Parent took 7 s: no think time left.
        assert_eq!(kind.release(s(5), s(0), s(7)), s(7));
        assert_eq!(WaitKind::Gate.release(s(5), s(0), s(2)), s(5));
        assert_eq!(WaitKind::Gate.release(s(5), s(0), s(9)), s(9));
    }
}
