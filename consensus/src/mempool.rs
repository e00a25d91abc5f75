//! The mempool: bundles admitted by this node and not yet included, in arrival order.
//!
//! It is bounded by count and bytes (config), deduplicates by bundle hash, and hands the block builder bundles in
//! first-come order. Durability is the node's concern: a bundle reaches this structure only after it is on disk.

use std::collections::{BTreeMap, HashMap};

use crate::error::ConsensusError;
use crate::hash::Hash;
use crate::types::Bundle;

/// Outcome of offering a bundle to the mempool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Added,
    AlreadyPending,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    bundle: Bundle,
    bytes: usize,
}

/// Pending bundles in arrival order.
#[derive(Debug)]
pub struct Mempool {
    order: BTreeMap<u64, Hash>,
    slots: HashMap<Hash, Slot>,
    next_seq: u64,
    bytes: usize,
    max_bundles: usize,
    max_bytes: usize,
}

impl Mempool {
    pub fn new(max_bundles: usize, max_bytes: usize) -> Self {
        Self {
            order: BTreeMap::new(),
            slots: HashMap::new(),
            next_seq: 0,
            bytes: 0,
            max_bundles,
            max_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.slots.contains_key(hash)
    }

    /// Whether one more bundle of `bytes` would fit.
    pub fn has_room_for(&self, bytes: usize) -> bool {
        self.slots.len() < self.max_bundles && self.bytes + bytes <= self.max_bytes
    }

    /// Admits a bundle, or reports that it is already pending or that the pool is full.
    pub fn insert(&mut self, hash: Hash, bundle: Bundle) -> Result<Admission, ConsensusError> {
        if self.slots.contains_key(&hash) {
            return Ok(Admission::AlreadyPending);
        }
        let bytes = bundle.encoded_len();
        if !self.has_room_for(bytes) {
            return Err(ConsensusError::MempoolFull(format!(
                "{} bundles / {} bytes pending, limits {} / {}",
                self.slots.len(),
                self.bytes,
                self.max_bundles,
                self.max_bytes
            )));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, hash);
        self.slots.insert(hash, Slot { seq, bundle, bytes });
        self.bytes += bytes;
        Ok(Admission::Added)
    }

    /// Removes bundles (included in a decided block, or expired). Unknown hashes are ignored.
    pub fn remove(&mut self, hashes: &[Hash]) {
        for h in hashes {
            if let Some(slot) = self.slots.remove(h) {
                self.order.remove(&slot.seq);
                self.bytes -= slot.bytes;
            }
        }
    }

    /// Bundles in arrival order, as many as fit in `max_bytes` and `max_count`. A bundle that does not fit in the
    /// remaining space is skipped, so one large bundle does not hold back the small ones behind it.
    pub fn select(&self, max_bytes: u64, max_count: usize) -> Vec<(Hash, Bundle)> {
        let mut out = Vec::new();
        let mut used = 0u64;
        for hash in self.order.values() {
            if out.len() >= max_count {
                break;
            }
            let slot = &self.slots[hash];
            if used + slot.bytes as u64 > max_bytes {
                continue;
            }
            used += slot.bytes as u64;
            out.push((*hash, slot.bundle.clone()));
        }
        out
    }

    /// Whether the pending bundles would already fill a block of these limits.
    pub fn fills_block(&self, max_bytes: u64, max_count: usize) -> bool {
        self.slots.len() >= max_count || self.bytes as u64 >= max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BundleEntry;

    fn b(n: u8, size: usize) -> (Hash, Bundle) {
        let bundle = Bundle {
            entries: vec![BundleEntry {
                rollup_id: 1,
                payload: vec![n; size],
            }],
        };
        (bundle.hash(), bundle)
    }

    #[test]
    fn fifo_dedup_and_limits() {
        let mut m = Mempool::new(3, 10_000);
        let (h1, b1) = b(1, 10);
        let (h2, b2) = b(2, 10);
        assert_eq!(m.insert(h1, b1.clone()).unwrap(), Admission::Added);
        assert_eq!(m.insert(h1, b1).unwrap(), Admission::AlreadyPending);
        m.insert(h2, b2).unwrap();
        let (h3, b3) = b(3, 10);
        m.insert(h3, b3).unwrap();
        let (h4, b4) = b(4, 10);
        assert!(matches!(
            m.insert(h4, b4),
            Err(ConsensusError::MempoolFull(_))
        ));
        let sel: Vec<_> = m.select(u64::MAX, 10).into_iter().map(|(h, _)| h).collect();
        assert_eq!(sel, vec![h1, h2, h3]);
        m.remove(&[h2]);
        assert_eq!(m.len(), 2);
        let sel: Vec<_> = m.select(u64::MAX, 1).into_iter().map(|(h, _)| h).collect();
        assert_eq!(sel, vec![h1]);
    }

    #[test]
    fn byte_accounting_and_skip_of_large_bundles() {
        let mut m = Mempool::new(100, 100_000);
        let (h1, b1) = b(1, 1000);
        let (h2, b2) = b(2, 10);
        let one = b1.encoded_len();
        m.insert(h1, b1).unwrap();
        m.insert(h2, b2.clone()).unwrap();
        assert_eq!(m.bytes(), one + b2.encoded_len());
        let sel: Vec<_> = m.select(100, 10).into_iter().map(|(h, _)| h).collect();
        assert_eq!(sel, vec![h2]);
        m.remove(&[h1, h2]);
        assert_eq!(m.bytes(), 0);
        assert!(m.is_empty());
    }
}
