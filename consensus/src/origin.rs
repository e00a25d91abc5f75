//! L1 origin and forced inclusion: the rules that tie Baton blocks to L1.
//!
//! Every header names an L1 block, its [`L1Origin`]. The proposer takes the newest L1 block its node has seen at
//! the chain's configured safety (latest / safe / finalized) for a while ([`L1View::proposal_origin`]); a
//! validator accepts a header only if its origin is not below the parent's and, when it moves, is a block the
//! validator itself has seen canonical at that safety and not too far behind what it has seen
//! ([`L1View::check_origin`]). A chain without L1 keeps the zero origin.
//!
//! Forced inclusion: anyone can queue a signed Baton bundle for a shared rollup in the L1 inbox; the entry carries
//! a deadline (an L1 block number). Once a block's origin reaches the deadline, the entry is *owed*: the block must
//! contain it unless it can never be included (already included, expired, or its nonce is taken). [`owed_forced`]
//! computes what a block owes from the entries due by its origin, in queue order, so proposer and validators agree
//! on it from the same L1 events; a block that leaves out an owed entry is invalid
//! ([`crate::error::BlockError::ForcedOmitted`]). A proposer cannot dodge the queue by keeping an old origin:
//! validators refuse an origin (moved or kept from the parent) more than a configured number of blocks behind their
//! own view.
//!
//! Forgetting resolved entries: an entry is *resolved* once the decided chain makes it impossible to owe at any
//! later height ([`forced_resolved`]: its bundle expired by the last decided height, or its sender's next nonce has
//! passed the bundle's, which includes the bundle having been included). [`owed_forced`] skips such an entry at every
//! height above the decided one, whatever else the list holds (it takes no nonce, no bytes and no place from the
//! others; a duplicate of it is resolved too, the rule looks at the bundle only), so a view may drop it once that
//! height is decided ([`L1View::decided`]) without changing what any height still to be decided owes. Views share
//! the due list ([`L1View::forced_due`] returns an `Arc`) instead of copying it for every proposal and check.
//!
//! The node implements [`L1View`] over its L1 watcher; [`MemL1`] is an in-memory one for tests and simulations.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::bundle::Bundle;
use crate::bundle::Sender;
use crate::epoch::{CandidateTable, PositionedEvent};
use crate::error::{BlockError, ConsensusError};
use crate::hash::Hash;
use crate::ids::L1Origin;
use crate::params::ConsensusParams;
use crate::view::ChainView;

/// A forced-inclusion entry of the L1 inbox whose payload is a well-formed, validly signed bundle for shared
/// rollups (the node's watcher checks that once, when it reads the entry; other payloads are never owed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedBundle {
    /// Position in the inbox's forced queue.
    pub index: u64,
    /// The L1 block by which it must be included.
    pub deadline: u64,
    pub hash: Hash,
    pub bundle: Bundle,
}

/// What the core needs to know about L1, from the node's watcher.
pub trait L1View: Send + Sync {
    /// The origin this node would propose now: the newest L1 block it has seen at the configured safety for long
    /// enough that other validators have seen it too. `None` until it has seen one.
    fn proposal_origin(&self) -> Option<L1Origin>;
    /// Whether a header may name `origin`: a block seen canonical at the configured safety
    /// ([`BlockError::L1OriginUnknown`] otherwise; a header keeping its parent's origin is excused that) and not
    /// too far behind this node's newest ([`BlockError::L1OriginStale`]).
    fn check_origin(&self, origin: &L1Origin) -> Result<(), BlockError>;
    /// Forced entries whose deadline is at or before L1 block `number`, in queue order, shared (a view may hand
    /// the same list to every caller until its queue changes). Entries resolved by the decided chain
    /// ([`forced_resolved`]) may be left out: they are never owed.
    fn forced_due(&self, number: u64) -> Arc<[ForcedBundle]>;
    /// The block at `height` was decided and committed; `view` is the chain after it. A view may forget the
    /// entries [`forced_resolved`] at `height` (no later block owes them).
    fn decided(&self, _height: u64, _view: &dyn ChainView) {}
    /// The staking candidate table after every staking event in L1 blocks up to `number` ([`crate::epoch`]);
    /// `None` when this view has not read that far (or the chain has no staking contract).
    fn stake_table(&self, _number: u64) -> Option<CandidateTable> {
        None
    }
}

/// The rule behind [`L1View::check_origin`], for a view whose newest block is `head` and which has `seen` as the
/// canonical hash at `origin.number` (if it has that block): not more than `max_lag` blocks behind `head`, and
/// the same block.
pub fn judge_origin(
    origin: &L1Origin,
    head: u64,
    seen: Option<Hash>,
    max_lag: u64,
) -> Result<(), BlockError> {
    let behind = head.saturating_sub(origin.number);
    if behind > max_lag {
        return Err(BlockError::L1OriginStale {
            number: origin.number,
            behind,
            limit: max_lag,
        });
    }
    if seen != Some(origin.hash) {
        return Err(BlockError::L1OriginUnknown {
            number: origin.number,
            hash: origin.hash,
        });
    }
    Ok(())
}

/// The forced entries a block at `height` owes, in queue order: due by its origin, not included yet, not expired
/// at `height`, and whose nonce is the sender's next one once the sender's earlier owed entries are counted (an
/// entry whose nonce was taken can never be included; one whose nonce is ahead waits for the earlier ones). The
/// list stops where the block's bundle or byte limit would be passed; the rest is owed by the next block.
pub fn owed_forced<'a>(
    due: &'a [ForcedBundle],
    height: u64,
    params: &ConsensusParams,
    view: &dyn ChainView,
) -> Result<Vec<&'a ForcedBundle>, ConsensusError> {
    let mut next: HashMap<Sender, u64> = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for f in due {
        let b = &f.bundle;
        if !seen.insert(f.hash) || b.expiry_height < height || view.is_included(&f.hash)? {
            continue;
        }
        let expected = match next.entry(b.sender) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(view.next_nonce(&b.sender)?),
        };
        if b.nonce != *expected {
            continue;
        }
        let len = b.encoded_len() as u64;
        if out.len() >= params.max_block_bundles as usize || bytes + len > params.max_block_bytes {
            break;
        }
        *expected += 1;
        bytes += len;
        out.push(f);
    }
    Ok(out)
}

/// Whether a forced entry is resolved once the block at `height` is decided (`view` being the chain after it): no
/// block above `height` can owe it, because its bundle expired by `height` (blocks above skip bundles whose
/// `expiry_height` is below theirs) or its nonce is below the sender's next one (nonces only grow, so
/// [`owed_forced`] never expects it again; an included bundle took its nonce). A view dropping such entries leaves
/// [`owed_forced`] unchanged for every later height.
pub fn forced_resolved(
    f: &ForcedBundle,
    height: u64,
    view: &dyn ChainView,
) -> Result<bool, ConsensusError> {
    Ok(f.bundle.expiry_height <= height || f.bundle.nonce < view.next_nonce(&f.bundle.sender)?)
}

/// The L1 view for a block that arrives with its commit certificate: any origin is accepted and nothing is owed.
/// More than 2/3 of the set judged the block's origin and forced entries when they decided it; a node catching up
/// may not have the L1 view that was current then (its recent-block window has moved on).
#[derive(Debug, Default, Clone, Copy)]
pub struct Certified;

impl L1View for Certified {
    fn proposal_origin(&self) -> Option<L1Origin> {
        None
    }

    fn check_origin(&self, _: &L1Origin) -> Result<(), BlockError> {
        Ok(())
    }

    fn forced_due(&self, _: u64) -> Arc<[ForcedBundle]> {
        Vec::new().into()
    }
}

/// An in-memory [`L1View`]: a list of canonical blocks and forced entries set by the test.
#[derive(Debug, Default)]
pub struct MemL1 {
    inner: Mutex<MemL1State>,
}

#[derive(Debug, Default)]
struct MemL1State {
    blocks: Vec<L1Origin>,
    forced: Vec<ForcedBundle>,
    stakes: Vec<(u64, PositionedEvent)>,
    max_lag: u64,
}

impl MemL1 {
    pub fn new(max_lag: u64) -> Self {
        let l = MemL1::default();
        l.state().max_lag = max_lag;
        l
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MemL1State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a block (number one more than the last) and returns it.
    pub fn mine(&self) -> L1Origin {
        let mut s = self.state();
        let number = s.blocks.last().map_or(1, |b| b.number + 1);
        let o = L1Origin {
            number,
            hash: Hash::digest(&[b"mem-l1", &number.to_le_bytes()]),
        };
        s.blocks.push(o);
        o
    }

    pub fn force(&self, f: ForcedBundle) {
        self.state().forced.push(f);
    }

    /// Forced entries held (resolved ones are forgotten as blocks are decided).
    pub fn forced_len(&self) -> usize {
        self.state().forced.len()
    }

    /// Adds a staking event in L1 block `number`.
    pub fn stake(&self, number: u64, e: PositionedEvent) {
        self.state().stakes.push((number, e));
    }
}

impl L1View for MemL1 {
    fn proposal_origin(&self) -> Option<L1Origin> {
        self.state().blocks.last().copied()
    }

    fn check_origin(&self, origin: &L1Origin) -> Result<(), BlockError> {
        let s = self.state();
        let head = s.blocks.last().map_or(0, |b| b.number);
        let seen = s
            .blocks
            .iter()
            .find(|b| b.number == origin.number)
            .map(|b| b.hash);
        judge_origin(origin, head, seen, s.max_lag)
    }

    fn forced_due(&self, number: u64) -> Arc<[ForcedBundle]> {
        self.state()
            .forced
            .iter()
            .filter(|f| f.deadline <= number)
            .cloned()
            .collect()
    }

    fn decided(&self, height: u64, view: &dyn ChainView) {
        // A storage error keeps the entry: forgetting too little is harmless.
        self.state()
            .forced
            .retain(|f| !forced_resolved(f, height, view).unwrap_or(false));
    }

    fn stake_table(&self, number: u64) -> Option<CandidateTable> {
        let s = self.state();
        if s.blocks.last().is_none_or(|b| b.number < number) {
            return None;
        }
        Some(CandidateTable::from_blocks(
            s.stakes.iter().filter(|(n, _)| *n <= number).cloned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testing::{bundle, key, sign};
    use crate::bundle::UnsignedBundle;

    /// The decided chain: each sender's next nonce and the included bundles.
    #[derive(Default)]
    struct Chain {
        next: HashMap<Sender, u64>,
        included: HashSet<Hash>,
    }

    impl ChainView for Chain {
        fn is_included(&self, h: &Hash) -> Result<bool, ConsensusError> {
            Ok(self.included.contains(h))
        }
        fn next_nonce(&self, s: &Sender) -> Result<u64, ConsensusError> {
            Ok(self.next.get(s).copied().unwrap_or(0))
        }
        fn signature_checked(&self, _: &Hash, _: &[u8; 65]) -> bool {
            false
        }
    }

    fn forced(index: u64, deadline: u64, bundle: Bundle) -> ForcedBundle {
        ForcedBundle {
            index,
            deadline,
            hash: bundle.hash(),
            bundle,
        }
    }

    /// Forgetting resolved entries never changes what a later height owes: a view that prunes at every decision
    /// and one that keeps every entry owe the same at every height, and the pruned one ends up holding only the
    /// entries that can still be owed.
    #[test]
    fn forgetting_resolved_entries_leaves_what_is_owed_unchanged() {
        let expiring = {
            let k = key(4);
            sign(
                &k,
                UnsignedBundle {
                    network_id: 7,
                    sender: k.address(),
                    nonce: 0,
                    expiry_height: 3,
                    entries: bundle(4, 0, &[1], 9).entries,
                },
            )
        };
        let queue = [
            bundle(1, 0, &[1], 1),
            bundle(1, 1, &[1], 2),
            bundle(1, 1, &[1], 2), // the same bundle queued twice
            bundle(2, 5, &[1], 3), // a nonce far ahead: waits
            bundle(3, 0, &[1], 4), // included through the mempool first
            bundle(1, 2, &[1], 5),
            expiring,              // expires before its deadline
            bundle(2, 0, &[1], 6), // due late
        ];
        let deadlines = [1, 1, 2, 2, 2, 3, 5, 6];
        let all: Vec<ForcedBundle> = queue
            .iter()
            .zip(deadlines)
            .enumerate()
            .map(|(i, (b, d))| forced(i as u64, d, b.clone()))
            .collect();
        let pruned = MemL1::new(100);
        for f in &all {
            pruned.force(f.clone());
        }
        // Two bundles per block at most, so some owed entries wait for the next block.
        let params = ConsensusParams {
            max_block_bundles: 2,
            ..ConsensusParams::default()
        };
        let mut chain = Chain::default();
        for height in 1..=8u64 {
            let origin = height; // the block's L1 origin moves with it
            let due_all: Vec<ForcedBundle> = all
                .iter()
                .filter(|f| f.deadline <= origin)
                .cloned()
                .collect();
            let due_pruned = pruned.forced_due(origin);
            let owed = |due: &[ForcedBundle]| -> Vec<u64> {
                owed_forced(due, height, &params, &chain)
                    .expect("reads")
                    .iter()
                    .map(|f| f.index)
                    .collect()
            };
            let owed_all = owed(&due_all);
            assert_eq!(owed_all, owed(&due_pruned), "height {height}");
            // Decide the block: the owed entries, and at height 2 sender 3's bundle from the mempool.
            let mut decided: Vec<&Bundle> = owed_all.iter().map(|i| &queue[*i as usize]).collect();
            if height == 2 {
                decided.push(&queue[4]);
            }
            for b in decided {
                chain.included.insert(b.hash());
                *chain.next.entry(b.sender).or_default() += 1;
            }
            pruned.decided(height, &chain);
        }
        // Only the entry whose nonce is still ahead can ever be owed, and it is all that is left.
        let left: Vec<u64> = pruned
            .forced_due(u64::MAX)
            .iter()
            .map(|f| f.index)
            .collect();
        assert_eq!(left, vec![3]);
        assert_eq!(pruned.forced_len(), 1);
    }
}
