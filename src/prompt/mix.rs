//! Portable, seeded pseudo-randomness for prompts: pure functions of `(seed, key, index)`, so
//! a prompt never depends on the order or the thread it was built on, nor on an RNG crate's
//! version. Not cryptographic; statistically plenty for choosing words.

/// Golden-ratio increment (2^64 / φ) spreading consecutive indexes apart.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Keys of independent streams drawn from one seed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Domain {
    /// Block texts, keyed by block id.
    Block = 1,
    /// Text past the last `hash_ids` block, keyed by record line.
    Fill = 2,
    /// `random` mode ids, keyed by record line.
    Random = 3,
    /// The one `shared` mode text.
    Shared = 4,
}

/// MurmurHash3's 64-bit finaliser: a bijection on `u64` with good avalanche.
pub(crate) fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

/// The key of stream `domain` for `seed`; combine with an item key by adding it.
pub(crate) fn stream_key(seed: u64, domain: Domain) -> u64 {
    fmix64(seed ^ fmix64(domain as u64))
}

/// A key for `item` (block id, record line) in a stream: a bijection of `item` for a fixed
/// stream, so distinct items get distinct keys.
pub(crate) fn item_key(stream: u64, item: u64) -> u64 {
    fmix64(item.wrapping_add(stream))
}

/// The `index`-th value of the sequence keyed `key`.
pub(crate) fn nth(key: u64, index: u64) -> u64 {
    fmix64(key ^ index.wrapping_add(1).wrapping_mul(GOLDEN))
}

/// `value` mapped onto `0..bound` (Lemire's multiply-shift; bias below 2^-40 for our bounds).
pub(crate) fn below(value: u64, bound: usize) -> usize {
    ((u128::from(value) * bound as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_fixed_across_versions() {
        // Pinned: a change here changes every prompt tracebench has ever written.
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xB456_BCFC_34C2_CB2C);
        assert_eq!(below(u64::MAX, 10), 9);
        assert_eq!(below(0, 10), 0);
    }

    #[test]
    fn item_keys_differ_for_different_items() {
        let stream = stream_key(42, Domain::Block);
        let keys: std::collections::HashSet<u64> =
            (0..10_000).map(|i| item_key(stream, i)).collect();
        assert_eq!(keys.len(), 10_000);
    }
}
