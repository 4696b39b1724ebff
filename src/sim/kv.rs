//! The engine's KV cache: a pool of blocks, some private to a running request, some in the
//! prefix cache (keyed by chained hashes of prompt token blocks). Cached blocks that no
//! running request uses are evictable, least recently released first. Pure data, no time.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The chained hashes of the full `block_tokens`-sized blocks of `tokens`: block i's hash
/// covers block i and, through block i-1's hash, everything before it.
pub(crate) fn block_hashes(tokens: &[u32], block_tokens: u32) -> Vec<u64> {
    let mut parent = 0u64;
    tokens
        .chunks_exact(block_tokens as usize)
        .map(|block| {
            let mut h = DefaultHasher::new();
            parent.hash(&mut h);
            block.hash(&mut h);
            parent = h.finish();
            parent
        })
        .collect()
}

/// One cached block: how many running requests use it, and when it was last released.
#[derive(Debug, Clone, Copy)]
struct Cached {
    refs: u32,
    released_tick: u64,
}

/// A pool of `total` KV blocks with a prefix cache.
#[derive(Debug)]
pub(crate) struct KvPool {
    total: u32,
    private: u32,
    pinned: u32,
    entries: HashMap<u64, Cached>,
    evictable: BTreeMap<u64, u64>,
    tick: u64,
}

impl KvPool {
    /// An empty pool of `total` blocks.
    pub(crate) fn new(total: u32) -> Self {
        KvPool {
            total,
            private: 0,
            pinned: 0,
            entries: HashMap::new(),
            evictable: BTreeMap::new(),
            tick: 0,
        }
    }

    /// Capacity in blocks.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// Blocks in use by running requests (private or pinned cached ones), as vLLM's
    /// `kv_cache_usage_perc` counts them (evictable cached blocks count as free).
    pub(crate) fn used(&self) -> u32 {
        self.private + self.pinned
    }

    /// Blocks neither used nor cached.
    fn free(&self) -> u32 {
        self.total - self.private - self.entries.len() as u32
    }

    /// How many leading `hashes` are cached, pinning them for the caller. At most `limit`.
    pub(crate) fn pin_prefix(&mut self, hashes: &[u64], limit: usize) -> usize {
        let hits = hashes
            .iter()
            .take(limit)
            .take_while(|h| self.entries.contains_key(h))
            .count();
        for h in &hashes[..hits] {
            self.pin(*h);
        }
        hits
    }

    /// Takes `n` private blocks, evicting cached ones if needed; false (nothing taken) if
    /// even eviction cannot free enough.
    pub(crate) fn reserve(&mut self, n: u32) -> bool {
        if (self.free() + self.evictable.len() as u32) < n {
            return false;
        }
        while self.free() < n {
            self.evict_one();
        }
        self.private += n;
        true
    }

    /// Gives back `n` private blocks.
    pub(crate) fn release_private(&mut self, n: u32) {
        self.private -= n;
    }

    /// Turns one private block holding the block hashed `h` into a pinned cache entry (or
    /// pins the existing entry and frees the private block).
    pub(crate) fn promote(&mut self, h: u64) {
        self.private -= 1;
        match self.entries.entry(h) {
            Entry::Occupied(_) => self.pin(h),
            Entry::Vacant(slot) => {
                slot.insert(Cached {
                    refs: 1,
                    released_tick: 0,
                });
                self.pinned += 1;
            }
        }
    }

    /// Releases one use of cached block `h`; at zero uses it becomes evictable.
    pub(crate) fn unpin(&mut self, h: u64) {
        let Some(entry) = self.entries.get_mut(&h) else {
            return;
        };
        entry.refs -= 1;
        if entry.refs == 0 {
            self.tick += 1;
            entry.released_tick = self.tick;
            self.evictable.insert(self.tick, h);
            self.pinned -= 1;
        }
    }

    /// Adds one use of cached block `h` (which must exist).
    fn pin(&mut self, h: u64) {
        let Some(entry) = self.entries.get_mut(&h) else {
            return;
        };
        if entry.refs == 0 {
            self.evictable.remove(&entry.released_tick);
            self.pinned += 1;
        }
        entry.refs += 1;
    }

    /// Drops the least recently released evictable block.
    fn evict_one(&mut self) {
        if let Some((_, h)) = self.evictable.pop_first() {
            self.entries.remove(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_chain_so_equal_blocks_after_different_prefixes_differ() {
        let a = block_hashes(&[1, 2, 3, 4, 9, 9], 2);
        let b = block_hashes(&[1, 2, 5, 6, 9, 9], 2);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0], b[0]);
        assert_ne!(a[2], b[2]);
        assert_eq!(block_hashes(&[1, 2, 3], 2).len(), 1);
    }

    #[test]
    fn released_blocks_are_reused_then_evicted_lru() {
        let mut kv = KvPool::new(4);
        assert!(kv.reserve(2));
        kv.promote(10);
        kv.promote(11);
        assert_eq!(kv.used(), 2);
        kv.unpin(11);
        kv.unpin(10);
        assert_eq!(kv.used(), 0);

        assert_eq!(kv.pin_prefix(&[10, 11, 12], 3), 2);
        kv.unpin(11);
        kv.unpin(10);

        // 2 free + 2 evictable: reserving 3 evicts the least recently released (11).
        assert!(kv.reserve(3));
        assert_eq!(kv.pin_prefix(&[10, 11], 2), 1);
        assert!(!kv.reserve(1));
    }
}
