//! Based-mode derivation: a based rollup's batches, as L1 proposers ordered them in the inbox.
//!
//! For a rollup registered as `based`, Baton's validators do not order anything. Whoever posts to
//! `BatonInbox.post(rollupId, data)` — a Baton node forwarding bundles submitted to it, or anyone directly — puts a
//! borsh-encoded list of signed Baton bundles on L1; the L1 proposer that includes the transaction fixes its
//! place. [`Deriver`] turns the inbox events the [`crate::watcher::Watcher`] reports into the rollup's entries, in
//! (L1 block, transaction index, log index) order and, within one event, in list order. The rules are
//! deterministic, so every node derives the same batches from the same canonical chain:
//!
//! - an event whose data does not decode as a list of bundles contributes nothing;
//! - a bundle is skipped if it fails the stateless checks every bundle must pass (network id, limits,
//!   registered rollups, canonical signature), has an entry for another rollup, or its signature does not
//!   recover to its sender;
//! - a bundle already derived for this rollup (same hash) is skipped: the first occurrence on the canonical chain
//!   wins;
//! - nonces and expiry heights are not enforced: L1 order is the order (a rollup may apply its own rules).
//!
//! Each L1 block with entries becomes one batch carrying that block as its L1 origin. [`Deriver::rollback`]
//! forgets what a reorg removed, so derivation after it yields the corrected batches.
//!
//! The "first occurrence wins" rule needs every bundle ever derived. A deriver holds those of blocks not final
//! yet: the caller keeps those of final blocks ([`Deriver::derived_through`]; the node stores them), has the
//! deriver forget them ([`Deriver::finalize`]) and then answers for them through [`Deriver::apply_with`], so
//! memory holds only what L1 has not finalized.

use std::collections::HashMap;

use alloy::primitives::B256;
use baton_consensus::block::{check_stateless, OrderedBy};
use baton_consensus::bundle::Bundle;
use baton_consensus::hash::Hash;
use baton_consensus::ids::RollupId;
use baton_consensus::registry::ChainSpec;
use baton_consensus::types::BatchEntry;

use crate::watcher::{EventPosition, InboxEvent, InboxEventKind};

/// Largest list of bundles one inbox event may carry (the inbox caps calldata at 128 KiB anyway).
pub const MAX_BUNDLES_PER_EVENT: usize = 4096;

/// A based rollup's batch: the entries derived from one L1 block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasedBatch {
    pub rollup_id: RollupId,
    /// The L1 block whose inbox events carried the entries (the batch's L1 origin).
    pub l1_block_number: u64,
    pub l1_block_hash: B256,
    pub entries: Vec<BatchEntry>,
}

/// Why part of an inbox event was not derived (for logs and metrics; the rules above decide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub position: EventPosition,
    /// Index of the bundle in the event, `None` when the whole event was skipped.
    pub bundle: Option<usize>,
    pub reason: String,
}

/// Derives one based rollup's batches, incrementally, with reorg rollback.
#[derive(Clone, Debug)]
pub struct Deriver {
    rollup_id: RollupId,
    spec: ChainSpec,
    /// Bundles derived so far, with where they were derived.
    seen: HashMap<Hash, EventPosition>,
}

impl Deriver {
    pub fn new(rollup_id: RollupId, spec: ChainSpec) -> Self {
        Deriver {
            rollup_id,
            spec,
            seen: HashMap::new(),
        }
    }

    /// Derives the batches of `events` (new canonical events, in order); other rollups' events are ignored.
    pub fn apply<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a InboxEvent>,
    ) -> (Vec<BasedBatch>, Vec<Skipped>) {
        self.apply_with(events, |_| false)
    }

    /// [`Deriver::apply`], with `derived_before` telling whether a bundle was derived from a block this deriver
    /// already handed over ([`Deriver::finalize`]).
    pub fn apply_with<'a>(
        &mut self,
        events: impl IntoIterator<Item = &'a InboxEvent>,
        derived_before: impl Fn(&Hash) -> bool,
    ) -> (Vec<BasedBatch>, Vec<Skipped>) {
        let mut batches: Vec<BasedBatch> = Vec::new();
        let mut skipped = Vec::new();
        for event in events {
            let InboxEventKind::Batch {
                rollup_id, data, ..
            } = &event.kind
            else {
                continue;
            };
            if *rollup_id != self.rollup_id {
                continue;
            }
            let skip = |bundle: Option<usize>, reason: String| Skipped {
                position: event.position,
                bundle,
                reason,
            };
            let bundles: Vec<Bundle> = match borsh::from_slice(data) {
                Ok(b) => b,
                Err(e) => {
                    skipped.push(skip(None, format!("data is not a list of bundles: {e}")));
                    continue;
                }
            };
            if bundles.len() > MAX_BUNDLES_PER_EVENT {
                skipped.push(skip(
                    None,
                    format!("{} bundles, at most {MAX_BUNDLES_PER_EVENT}", bundles.len()),
                ));
                continue;
            }
            for (i, bundle) in bundles.into_iter().enumerate() {
                match self.check(&bundle, &derived_before) {
                    Err(reason) => skipped.push(skip(Some(i), reason)),
                    Ok(hash) => {
                        self.seen.insert(hash, event.position);
                        let entries =
                            bundle
                                .entries
                                .into_iter()
                                .enumerate()
                                .map(|(j, e)| BatchEntry {
                                    bundle_hash: hash,
                                    index_in_bundle: j as u32,
                                    payload: e.payload,
                                });
                        match batches.last_mut() {
                            Some(b) if b.l1_block_hash == event.block_hash => {
                                b.entries.extend(entries)
                            }
                            _ => batches.push(BasedBatch {
                                rollup_id: self.rollup_id,
                                l1_block_number: event.position.block_number,
                                l1_block_hash: event.block_hash,
                                entries: entries.collect(),
                            }),
                        }
                    }
                }
            }
        }
        (batches, skipped)
    }

    fn check(
        &self,
        bundle: &Bundle,
        derived_before: impl Fn(&Hash) -> bool,
    ) -> Result<Hash, String> {
        let mut derived = false;
        let hash = check_stateless(bundle, &self.spec, OrderedBy::Inbox(self.rollup_id), |h| {
            derived = self.seen.contains_key(h) || derived_before(h);
            derived
        })
        .map_err(|e| format!("in rollup {}'s inbox batch: {e}", self.rollup_id))?;
        if derived {
            return Err("bundle already derived".into());
        }
        Ok(hash)
    }

    /// The rollup this deriver derives.
    pub fn rollup_id(&self) -> RollupId {
        self.rollup_id
    }

    /// The bundles derived from L1 blocks up to `number`, with their block.
    pub fn derived_through(&self, number: u64) -> Vec<(Hash, u64)> {
        self.seen
            .iter()
            .filter(|(_, p)| p.block_number <= number)
            .map(|(h, p)| (*h, p.block_number))
            .collect()
    }

    /// Forgets the bundles derived from L1 blocks up to `number` (final ones; the caller has kept them, see
    /// [`Deriver::derived_through`]): from now on the caller answers for them in [`Deriver::apply_with`].
    pub fn finalize(&mut self, number: u64) {
        self.seen.retain(|_, p| p.block_number > number);
    }

    /// Bundles this deriver holds (derived from blocks not handed over).
    pub fn held(&self) -> usize {
        self.seen.len()
    }

    /// Forgets everything derived from L1 blocks `from_block` and later (a reorg removed them).
    pub fn rollback(&mut self, from_block: u64) {
        self.seen.retain(|_, p| p.block_number < from_block);
    }
}
