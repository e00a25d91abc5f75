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
//! ([`crate::BlockError::ForcedOmitted`]). A proposer cannot dodge the queue by keeping an old origin: validators
//! refuse an origin (moved or kept from the parent) more than a configured number of blocks behind their own view.
//!
//! The node implements [`L1View`] over its L1 watcher; [`MemL1`] is an in-memory one for tests and simulations.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::block::ChainView;
use crate::bundle::Sender;
use crate::epoch::{CandidateTable, PositionedEvent};
use crate::error::{BlockError, ConsensusError};
use crate::hash::Hash;
use crate::params::ConsensusParams;
use crate::types::{Bundle, L1Origin};

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
    /// Forced entries whose deadline is at or before L1 block `number`, in queue order. Entries known to be
    /// included long ago may be left out (they are never owed).
    fn forced_due(&self, number: u64) -> Vec<ForcedBundle>;
    /// A block with these bundles was decided (a view may forget forced entries among them).
    fn included(&self, _bundles: &[Hash]) {}
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

    fn forced_due(&self, _: u64) -> Vec<ForcedBundle> {
        Vec::new()
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

    fn forced_due(&self, number: u64) -> Vec<ForcedBundle> {
        self.state()
            .forced
            .iter()
            .filter(|f| f.deadline <= number)
            .cloned()
            .collect()
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
