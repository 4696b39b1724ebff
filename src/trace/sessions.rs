//! Multi-turn sessions: each record linked to its parent by `parent_chat_id`, and the
//! statistics `trace stats` shows about them.
//!
//! A record whose `parent_chat_id` is negative (`-1`) is the first turn of a session. A
//! record whose parent is not in the file (the trace was cut) is treated as a root and
//! counted. The replay gates a child on its parent through [`parent_indices`].

use std::collections::HashMap;

use serde::Serialize;

use super::record::TraceRecord;
use crate::metrics::percentile;

/// Each record's parent and session root, by index into the record slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIndex {
    /// The parent's index; `None` for roots, records without session fields, and children
    /// whose parent is missing.
    pub parent: Vec<Option<usize>>,
    /// The index of the first turn of each record's session (itself for a root).
    pub root: Vec<usize>,
    /// Indices of children whose `parent_chat_id` names no record in the file.
    pub missing_parent: Vec<usize>,
}

/// The parent of each record (by index), `None` where it has none or it is missing.
pub fn parent_indices(records: &[TraceRecord]) -> Vec<Option<usize>> {
    SessionIndex::build(records).parent
}

impl SessionIndex {
    /// Links every record to its parent and its session root.
    pub fn build(records: &[TraceRecord]) -> Self {
        let mut by_chat_id: HashMap<i64, usize> = HashMap::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            if let Some(link) = &record.session {
                by_chat_id.entry(link.chat_id).or_insert(i);
            }
        }

        let mut parent = vec![None; records.len()];
        let mut missing_parent = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let Some(link) = record.session.filter(|l| l.parent_chat_id >= 0) else {
                continue;
            };
            match by_chat_id.get(&link.parent_chat_id) {
                Some(&p) if p != i => parent[i] = Some(p),
                _ => missing_parent.push(i),
            }
        }
        let root = roots(&parent);
        Self {
            parent,
            root,
            missing_parent,
        }
    }
}

/// Follows parents up to a root; a cycle (malformed ids) ends at the record it loops on.
fn roots(parent: &[Option<usize>]) -> Vec<usize> {
    const UNKNOWN: usize = usize::MAX;
    let mut root = vec![UNKNOWN; parent.len()];
    let mut path = Vec::new();
    for start in 0..parent.len() {
        path.clear();
        let mut current = start;
        let found = loop {
            if root[current] != UNKNOWN {
                break root[current];
            }
            path.push(current);
            match parent[current] {
                Some(p) if path.len() <= parent.len() => current = p,
                _ => break current,
            }
        };
        for &i in &path {
            root[i] = found;
        }
    }
    root
}

/// What `trace stats` says about sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionStats {
    /// Sessions (roots, including children whose parent is missing).
    pub sessions: usize,
    /// Records with session fields.
    pub records: usize,
    /// Mean turns per session.
    pub turns_mean: f64,
    /// Median turns per session.
    pub turns_p50: f64,
    /// Most turns in one session.
    pub turns_max: usize,
    /// Children linked to a parent present in the file.
    pub children: usize,
    /// Median seconds from a parent's arrival to its child's; `None` without children.
    pub parent_child_gap_p50_s: Option<f64>,
    /// 90th percentile of the same gap.
    pub parent_child_gap_p90_s: Option<f64>,
    /// Longest such gap.
    pub parent_child_gap_max_s: Option<f64>,
    /// Children whose parent is not in the file (counted as roots).
    pub missing_parent: usize,
    /// Children whose `hash_ids` do not start with their parent's full blocks.
    pub not_extending_parent: usize,
}

impl SessionStats {
    /// Session statistics; `None` when no record has session fields.
    pub fn compute(records: &[TraceRecord]) -> Option<Self> {
        let with_session = records.iter().filter(|r| r.session.is_some()).count();
        if with_session == 0 {
            return None;
        }
        let index = SessionIndex::build(records);
        let turns = turns_per_session(records, &index);
        let gaps = sorted_gaps(records, &index);
        let children = gaps.len();

        Some(Self {
            sessions: turns.len(),
            records: with_session,
            turns_mean: turns.iter().sum::<f64>() / turns.len() as f64,
            turns_p50: percentile(&turns, 50.0).unwrap_or(0.0),
            turns_max: turns.last().map_or(0, |t| *t as usize),
            children,
            parent_child_gap_p50_s: percentile(&gaps, 50.0),
            parent_child_gap_p90_s: percentile(&gaps, 90.0),
            parent_child_gap_max_s: gaps.last().copied(),
            missing_parent: index.missing_parent.len(),
            not_extending_parent: count_not_extending(records, &index),
        })
    }
}

/// Records per session (sorted ascending, as `f64` for percentiles).
fn turns_per_session(records: &[TraceRecord], index: &SessionIndex) -> Vec<f64> {
    let mut counts: HashMap<usize, usize> = HashMap::new();
    for (i, record) in records.iter().enumerate() {
        if record.session.is_some() {
            *counts.entry(index.root[i]).or_default() += 1;
        }
    }
    let mut turns: Vec<f64> = counts.into_values().map(|c| c as f64).collect();
    turns.sort_by(f64::total_cmp);
    turns
}

/// Seconds from each parent's arrival to its child's (negative if the child came first).
fn sorted_gaps(records: &[TraceRecord], index: &SessionIndex) -> Vec<f64> {
    let mut gaps: Vec<f64> = index
        .parent
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let p = (*p)?;
            Some(records[i].arrival.as_secs_f64() - records[p].arrival.as_secs_f64())
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    gaps
}

/// Children with blocks whose parent has blocks, but whose ids do not begin with the
/// parent's full blocks (its last, partial block may differ).
fn count_not_extending(records: &[TraceRecord], index: &SessionIndex) -> usize {
    index
        .parent
        .iter()
        .enumerate()
        .filter(|(i, p)| p.is_some_and(|p| !extends(&records[p], &records[*i])))
        .count()
}

/// Whether `child`'s blocks start with `parent`'s full blocks (true when either has none).
pub fn extends(parent: &TraceRecord, child: &TraceRecord) -> bool {
    let (Some(pp), Some(cp)) = (&parent.prefix, &child.prefix) else {
        return true;
    };
    let full = (parent.input_tokens / pp.block_size.max(1)) as usize;
    let full = full.min(pp.hash_ids.len());
    cp.hash_ids.len() >= full && cp.hash_ids[..full] == pp.hash_ids[..full]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::trace::{PrefixBlocks, SessionLink};

    fn turn(t_s: u64, chat_id: i64, parent: i64, hash_ids: Vec<u64>) -> TraceRecord {
        let mut r = TraceRecord::new(Duration::from_secs(t_s), 16 * hash_ids.len() as u32, 10, 0);
        r.session = Some(SessionLink {
            chat_id,
            parent_chat_id: parent,
            turn: None,
        });
        r.prefix = Some(PrefixBlocks {
            hash_ids,
            block_size: 16,
        });
        r
    }

    #[test]
    fn tree_with_missing_parent_and_divergent_child() {
        let records = vec![
            turn(0, 10, -1, vec![1, 2]),
            turn(5, 11, 10, vec![1, 2, 3]),
            turn(7, 12, 10, vec![9, 2, 3]),
            turn(9, 13, 99, vec![4]),
            turn(20, 14, 11, vec![1, 2, 3, 5]),
        ];
        assert_eq!(
            parent_indices(&records),
            vec![None, Some(0), Some(0), None, Some(1)]
        );

        let stats = SessionStats::compute(&records).expect("has sessions");
        assert_eq!(stats.sessions, 2);
        assert_eq!(stats.turns_max, 4);
        assert_eq!(stats.children, 3);
        assert_eq!(stats.missing_parent, 1);
        assert_eq!(stats.not_extending_parent, 1);
        assert_eq!(stats.parent_child_gap_max_s, Some(15.0));
        assert_eq!(stats.parent_child_gap_p50_s, Some(7.0));
    }

    #[test]
    fn cycles_do_not_hang() {
        let records = vec![turn(0, 1, 2, vec![1]), turn(1, 2, 1, vec![1])];
        let index = SessionIndex::build(&records);
        assert_eq!(index.parent, vec![Some(1), Some(0)]);
        assert_eq!(index.root.len(), 2);
    }
}
