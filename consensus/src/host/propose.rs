//! This node's turn: when to propose (heights follow load), which bundles go into the block, and the signed
//! parts that carry it to the other validators.

use std::collections::HashSet;

use malachitebft_core_types::Round;
use tracing::{debug, warn};

use crate::block::{build_block, bundle_hashes, BlockContext};
use crate::bundle::Bundle;
use crate::bundle::Sender;
use crate::error::ConsensusError;
use crate::evidence::{carriable, MAX_EVIDENCE_PER_BLOCK};
use crate::hash::Hash;
use crate::ids::Height;
use crate::origin::{owed_forced, ForcedBundle};
use crate::parts::ProposalPart;
use crate::signing::Value;
use crate::store::{ChainStore, Durability, UndecidedProposal};
use crate::types::Block;

use super::{Clock, Host};

impl<S: ChainStore, C: Clock> Host<S, C> {
    /// When the proposer of the next height should build (clock milliseconds), in round `round`: at once if the
    /// mempool already fills a block; `block_time_ms` after the parent if there is anything to include (a ready
    /// bundle, evidence, an owed forced entry) or the round is not the first; otherwise `max_idle_ms` after the
    /// parent. A bundle admitted while the proposer waits moves the deadline forward ([`Host::has_work`]).
    pub fn proposal_deadline_ms(&self, round: u32) -> u64 {
        let params = &self.spec.params;
        // Bundles waiting on a nonce gap count towards a full mempool but not towards a block: without a ready one
        // there is no reason to hurry.
        if self.mempool.has_ready()
            && self
                .mempool
                .fills_block(params.max_block_bytes, params.max_block_bundles as usize)
        {
            return 0;
        }
        let wait = if round > 0 || self.has_work() || self.forced_owed() {
            params.block_time_ms
        } else {
            params.max_idle_ms
        };
        self.tip.as_ref().map_or(0, |t| t.timestamp_ms + wait)
    }

    /// For a proposer waiting in round `round`: once a block would carry something ([`Host::has_work`]), when to
    /// propose instead of the idle deadline; `None` while there is nothing. Constant time when idle: the loop asks
    /// after every admission and every peer message.
    pub fn hurried_deadline_ms(&self, round: u32) -> Option<u64> {
        self.has_work().then(|| self.proposal_deadline_ms(round))
    }

    /// Whether a block now would carry something: a ready bundle in the mempool or evidence to report. Cheap
    /// enough to ask after every admission.
    pub fn has_work(&self) -> bool {
        self.mempool.has_ready() || !self.pending_evidence.is_empty()
    }

    /// Whether the L1 inbox has forced entries that a block proposed now would owe.
    pub(super) fn forced_owed(&self) -> bool {
        let Some(l1) = &self.l1 else {
            return false;
        };
        let due = l1.forced_due(self.proposal_origin().number);
        if due.is_empty() {
            return false;
        }
        let view = self.view();
        // A read failure counts as work: the proposal then reads again, and fails loudly if it still cannot.
        owed_forced(&due, self.next_height(), &self.spec.params, &view)
            .map_or(true, |o| !o.is_empty())
    }

    /// Builds (or, after a restart, rebuilds from disk) this node's proposal for `(height, round)` and returns the
    /// value with the proposal parts to publish.
    pub fn propose(
        &mut self,
        height: u64,
        round: u32,
    ) -> Result<(Value, Vec<ProposalPart>), ConsensusError> {
        let me = self
            .address()
            .ok_or(ConsensusError::NoSigningKey("propose"))?;
        let existing = self
            .store
            .undecided(height)?
            .into_iter()
            .find(|p| p.round == round && p.proposer == me);
        let block = match existing {
            Some(p) => p.block,
            None => {
                let mut ctx = self.block_context(height, round);
                match self.next_validators(height, &ctx.l1_origin) {
                    Ok(set) => ctx.next_validators = set,
                    // Validators will refuse this block as well; the round moves on.
                    Err(e) => warn!(height, error = %e, "cannot compute the next epoch's set"),
                }
                ctx.unseen = self.unseen(&ctx.parent_bench, ctx.parent_timestamp_ms);
                ctx.evidence = self
                    .pending_evidence
                    .iter()
                    .filter(|e| carriable(e.height, height))
                    .take(MAX_EVIDENCE_PER_BLOCK)
                    .cloned()
                    .collect();
                let (hashes, bundles) = self.select(&ctx)?;
                let built =
                    build_block(&ctx, &self.spec, me, self.clock.now_ms(), bundles, &hashes);
                let block = built.block;
                self.known_hashes.insert(block.hash(), hashes);
                self.known_tables.insert(block.hash(), built.table);
                let p = UndecidedProposal {
                    round,
                    valid_round: None,
                    proposer: me,
                    valid: true,
                    block,
                };
                // On disk before it is published: after a crash the restarted engine may replay this round, and
                // the proposer must then offer the same block again, never a second one.
                self.store.put_undecided(height, &p, Durability::Now)?;
                p.block
            }
        };
        debug!(height, round, bundles = block.bundles.len(), hash = %block.hash(), "proposing");
        let value = self.own_proposal(round, &block);
        let parts = self.parts_for(&block, &self.known_hashes[&value], round, Round::Nil)?;
        Ok((Value(value), parts))
    }

    /// The bundles of a new block: the forced entries its origin makes owed, first, then the mempool's pick within
    /// what is left of the limits (without the owed senders' other bundles, whose nonces the owed ones take).
    /// Owed bundles are kept aside so that validators missing them can ask for them.
    pub(super) fn select(
        &mut self,
        ctx: &BlockContext,
    ) -> Result<(Vec<Hash>, Vec<Bundle>), ConsensusError> {
        let params = &self.spec.params;
        let due = match &self.l1 {
            Some(l1) => l1.forced_due(ctx.l1_origin.number),
            None => Vec::new().into(),
        };
        let view = self.view();
        let owed: Vec<ForcedBundle> = owed_forced(&due, ctx.height, params, &view)?
            .into_iter()
            .cloned()
            .collect();
        let owed_bytes: u64 = owed.iter().map(|f| f.bundle.encoded_len() as u64).sum();
        let senders: HashSet<Sender> = owed.iter().map(|f| f.bundle.sender).collect();
        let owed_hashes: HashSet<Hash> = owed.iter().map(|f| f.hash).collect();
        let picked = self.mempool.select(
            params.max_block_bytes.saturating_sub(owed_bytes),
            (params.max_block_bundles as usize).saturating_sub(owed.len()),
        );
        let mut hashes = Vec::with_capacity(owed.len() + picked.len());
        let mut bundles = Vec::with_capacity(owed.len() + picked.len());
        if !owed.is_empty() {
            debug!(
                height = ctx.height,
                owed = owed.len(),
                "including overdue forced entries"
            );
        }
        for f in owed {
            hashes.push(f.hash);
            bundles.push(f.bundle.clone());
            self.keep_aside(f.hash, f.bundle);
        }
        for (h, b) in picked {
            if !senders.contains(&b.sender) && !owed_hashes.contains(&h) {
                hashes.push(h);
                bundles.push(b);
            }
        }
        Ok((hashes, bundles))
    }

    /// Parts to re-publish a known value (the engine asks when it re-proposes a locked value).
    pub fn restream(
        &mut self,
        height: u64,
        round: u32,
        valid_round: Round,
        value_id: &Hash,
    ) -> Result<Option<Vec<ProposalPart>>, ConsensusError> {
        let found = self
            .store
            .undecided(height)?
            .into_iter()
            .find(|p| p.block.hash() == *value_id);
        match found {
            Some(p) => {
                let value = self.own_proposal(round, &p.block);
                Ok(Some(self.parts_for(
                    &p.block,
                    &self.known_hashes[&value],
                    round,
                    valid_round,
                )?))
            }
            None => Ok(None),
        }
    }

    /// Notes `block` as this node's proposal for `round` of the current height (the one asks for bundles are
    /// answered about).
    /// Its hashes stay in `known_hashes` under the returned value id (computed only if this node neither built
    /// nor judged the block, e.g. after a restart), so callers borrow them instead of copying a block's worth.
    fn own_proposal(&mut self, round: u32, block: &Block) -> Hash {
        let value = block.hash();
        self.known_hashes
            .entry(value)
            .or_insert_with(|| bundle_hashes(block));
        self.own_proposals.insert(round, value);
        value
    }

    pub(super) fn parts_for(
        &self,
        block: &Block,
        hashes: &[Hash],
        round: u32,
        pol_round: Round,
    ) -> Result<Vec<ProposalPart>, ConsensusError> {
        let signer = self
            .signer
            .as_ref()
            .ok_or(ConsensusError::NoSigningKey("sign proposal parts"))?;
        let height = block.height();
        let mut parts = vec![ProposalPart::Init {
            height: Height(height),
            round: Round::new(round),
            pol_round,
            proposer: signer.address(),
            header: Box::new(block.header.clone()),
        }];
        if !block.evidence.is_empty() {
            parts.push(ProposalPart::Evidence {
                items: block.evidence.clone(),
            });
        }
        if self.limits.compact_proposals {
            let per_part = (self.limits.part_bytes / 32).max(1);
            for chunk in hashes.chunks(per_part) {
                parts.push(ProposalPart::Refs {
                    hashes: chunk.to_vec(),
                });
            }
        } else {
            parts.extend(
                chunk_bundles(&block.bundles, self.limits.part_bytes)
                    .into_iter()
                    .map(|bundles| ProposalPart::Data { bundles }),
            );
        }
        let signature = signer.sign_parts(height, round, &block.hash());
        parts.push(ProposalPart::Fin { signature });
        Ok(parts)
    }
}

/// Splits bundles into runs of at most `max_bytes` encoded bytes (a bundle larger than that gets a run of its own).
pub fn chunk_bundles(bundles: &[Bundle], max_bytes: usize) -> Vec<Vec<Bundle>> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    for b in bundles {
        let len = b.encoded_len();
        if !chunk.is_empty() && chunk_bytes + len > max_bytes {
            out.push(std::mem::take(&mut chunk));
            chunk_bytes = 0;
        }
        chunk_bytes += len;
        chunk.push(b.clone());
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}
