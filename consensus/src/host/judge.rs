//! A complete proposal judged: the block rules ([`crate::block::validate_block`]), its evidence, the next
//! validator set at an epoch's end, early proposals held until their height, synced blocks, and the record of
//! every judged proposal.

use std::collections::HashSet;

use malachitebft_core_consensus::ProposedValue;
use malachitebft_core_types::{Round, Validity};
use tracing::{debug, warn};

use crate::block::{bundle_hashes, validate_block};
use crate::context::BatonContext;
use crate::epoch::next_set;
use crate::error::{BlockError, ConsensusError};
use crate::evidence::{carriable, MAX_EVIDENCE_AGE};
use crate::hash::Hash;
use crate::ids::Height;
use crate::ids::{Address, L1Origin};
use crate::origin::Certified;
use crate::signing::Value;
use crate::store::{ChainStore, Durability, UndecidedProposal};
use crate::types::Block;
use crate::validators::ValidatorSet;

use super::streams::Assembled;
use super::{Clock, Host};

/// How a synced block was judged.
#[derive(Debug)]
pub enum SyncVerdict {
    /// A verdict for the engine (the block may be valid or invalid).
    Verdict(ProposedValue<BatonContext>),
    /// The bytes do not decode: the peer sent garbage.
    PeerFault,
    /// We cannot judge it now (e.g. it is not for the next height); ask again later.
    NotNow,
}

impl<S: ChainStore, C: Clock> Host<S, C> {
    /// Checks a block's evidence: no item twice or already in the chain, about an earlier height not too long
    /// ago, and real equivocation by a member of that height's set.
    pub(super) fn check_evidence(&self, block: &Block) -> Result<(), BlockError> {
        let height = block.height();
        let mut seen = HashSet::new();
        for (index, e) in block.evidence.iter().enumerate() {
            let bad = |reason: String| BlockError::BadEvidence { index, reason };
            let hash = e.hash();
            if !seen.insert(hash) || self.included_evidence.contains(&hash) {
                return Err(bad("already in the chain or twice in the block".into()));
            }
            if !carriable(e.height, height) {
                return Err(bad(format!(
                    "about height {}, not one of the {MAX_EVIDENCE_AGE} heights before {height}",
                    e.height
                )));
            }
            let set = self
                .validators_at(e.height)
                .map_err(|err| bad(err.to_string()))?;
            e.verify(&set, &self.domain)
                .map_err(|err| bad(err.to_string()))?;
        }
        Ok(())
    }

    /// The set deciding `height + 1` for a block at `height` on L1 origin `origin`: this height's set, except in an
    /// epoch's last block on a chain with epochs, where [`next_set`] picks it from the staking table at the origin
    /// (the L1 state every validator judging the block agreed on). A view that has not read that far cannot judge
    /// ([`BlockError::StakeTableUnknown`]).
    pub fn next_validators(
        &self,
        height: u64,
        origin: &L1Origin,
    ) -> Result<ValidatorSet, BlockError> {
        let current = &self.validators;
        let (Some(rules), Some(l1)) = (&self.spec.epochs, &self.l1) else {
            return Ok(current.clone());
        };
        if !rules.is_boundary(height + 1) {
            return Ok(current.clone());
        }
        let mut table = l1
            .stake_table(origin.number)
            .ok_or(BlockError::StakeTableUnknown {
                number: origin.number,
            })?;
        // Validators with evidence in the chain are out of every later set.
        for (key, c) in table.candidates.iter_mut() {
            if self.jailed.contains(&Address::from_public_key_bytes(key)) {
                c.jailed = true;
            }
        }
        let (set, change) = next_set(&table, rules, current);
        debug!(
            height,
            origin = origin.number,
            ?change,
            validators = set.validators().len(),
            "next epoch's set"
        );
        Ok(set)
    }

    /// The next set a certified block carries: its body's set when its header names a new one (only at an epoch's
    /// end), this height's set otherwise.
    pub(super) fn carried_next_set(&self, block: &Block) -> Result<ValidatorSet, BlockError> {
        self.check_carried_set(block)?;
        Ok(block
            .next_validators
            .clone()
            .unwrap_or_else(|| self.validators.clone()))
    }

    /// Whether a block carries exactly the next set its header names: none when the header names this height's
    /// set, the named (different) set at an epoch's end.
    pub(super) fn check_carried_set(&self, block: &Block) -> Result<(), BlockError> {
        let h = &block.header;
        let current = self.validators.hash();
        if h.next_validator_set_hash == current && block.next_validators.is_none() {
            return Ok(());
        }
        let at_boundary = self
            .spec
            .epochs
            .as_ref()
            .is_some_and(|r| r.is_boundary(h.height + 1));
        match &block.next_validators {
            Some(set)
                if at_boundary
                    && set.hash() == h.next_validator_set_hash
                    && set.hash() != current =>
            {
                Ok(())
            }
            carried => Err(BlockError::WrongNextValidatorSet {
                got: h.next_validator_set_hash,
                expected: carried.as_ref().map_or(current, ValidatorSet::hash),
            }),
        }
    }

    /// A new round started: returns the undecided values already known for it (after a crash, or received
    /// before the height started), validating early arrivals now that the parent is known.
    pub fn started_round(
        &mut self,
        height: u64,
        round: u32,
    ) -> Result<Vec<ProposedValue<BatonContext>>, ConsensusError> {
        self.current = height;
        self.future.retain(|h, _| *h >= height);
        if let Some(early) = self.future.remove(&height) {
            let rotation = self.height_validators();
            for a in early {
                if height != self.next_height()
                    || rotation.proposer(height, a.round).address != a.proposer
                {
                    warn!(height, round = a.round, proposer = %a.proposer, "early proposal from a validator that is not the proposer; dropping");
                    continue;
                }
                let mut block = a.block;
                let valid = self.judge(&mut block, &a.hashes, height, false)?;
                let p = UndecidedProposal {
                    round: a.round,
                    valid_round: a.pol_round.as_u32(),
                    proposer: a.proposer,
                    valid,
                    block,
                };
                self.record(height, &p)?;
            }
        }
        Ok(self
            .store
            .undecided(height)?
            .into_iter()
            .filter(|p| p.round == round)
            .map(|p| proposed_value(height, &p))
            .collect())
    }

    /// Validates `block` (whose bundle hashes are `hashes`) for `height`. Signatures of a valid block are
    /// remembered, so the same bundles re-proposed in a later round are not recovered again. A `certified` block
    /// (synced with its certificate) skips the L1 rules ([`Certified`]).
    ///
    /// The next height's validator set is computed here (an epoch's last block, [`Host::next_validators`]) and
    /// put in `block.next_validators` when it differs from this height's; a certified block brings its own, which
    /// must match its header.
    pub(super) fn judge(
        &mut self,
        block: &mut Block,
        hashes: &[Hash],
        height: u64,
        certified: bool,
    ) -> Result<bool, ConsensusError> {
        let mut ctx = self.block_context(height, block.header.round);
        let next = if certified {
            self.carried_next_set(block)
        } else {
            self.next_validators(height, &block.header.l1_origin)
        };
        match next.and_then(|set| self.check_evidence(block).map(|()| set)) {
            Ok(set) => ctx.next_validators = set,
            Err(e) => {
                warn!(height, block = %block.hash(), error = %e, "invalid proposal");
                self.stats.invalid_proposals += 1;
                return Ok(false);
            }
        }
        let now = self.clock.now_ms();
        let view = self.view();
        match validate_block(
            block,
            hashes,
            &ctx,
            &self.spec,
            &view,
            match &self.l1 {
                Some(_) if certified => Some(&Certified),
                l1 => l1.as_deref(),
            },
            now,
        ) {
            Ok(v) => {
                debug!(
                    height,
                    bundles = hashes.len(),
                    recovered = v.signatures_checked,
                    "valid proposal"
                );
                block.next_validators = (ctx.next_validators.hash() != ctx.validator_set_hash)
                    .then_some(ctx.next_validators);
                self.stats.signatures_recovered += v.signatures_checked as u64;
                self.known_hashes.insert(block.hash(), hashes.to_vec());
                self.known_tables.insert(block.hash(), v.table);
                for (b, h) in block.bundles.iter().zip(hashes) {
                    if !self.mempool.contains(h) {
                        self.verified.insert(*h, b.signature);
                    }
                }
                Ok(true)
            }
            // Not a verdict: the node could not read what the rules ask (a bundle's inclusion, a nonce). It must
            // not vote as if the answer were "not included" or "nonce 0"; the error stops the node instead.
            Err(BlockError::Unreadable(why)) => Err(ConsensusError::Storage(why.into())),
            Err(e) => {
                warn!(height, block = %block.hash(), error = %e, "invalid proposal");
                self.stats.invalid_proposals += 1;
                Ok(false)
            }
        }
    }

    /// A complete, signed proposal: keep it for later if its height has not started, else judge and record it.
    pub(super) fn finish(
        &mut self,
        height: u64,
        round_n: u32,
        pol_round: Round,
        proposer: Address,
        block: Block,
        hashes: Vec<Hash>,
    ) -> Result<Option<ProposedValue<BatonContext>>, ConsensusError> {
        if height < self.current {
            return Ok(None);
        }
        if height > self.current {
            if height <= self.current + self.limits.future_heights {
                let list = self.future.entry(height).or_default();
                if list.len() < 16 {
                    list.push(Assembled {
                        round: round_n,
                        pol_round,
                        proposer,
                        block,
                        hashes,
                    });
                }
            }
            return Ok(None);
        }
        let mut block = block;
        let valid = self.judge(&mut block, &hashes, height, false)?;
        let p = UndecidedProposal {
            round: round_n,
            valid_round: pol_round.as_u32(),
            proposer,
            valid,
            block,
        };
        self.record(height, &p)?;
        Ok(Some(proposed_value(height, &p)))
    }

    /// Stores a judged proposal, unless it is an invalid copy of a block already stored as valid for that round (a
    /// forged sync copy must not replace the good one: the hash does not cover the carried next set).
    pub(super) fn record(&self, height: u64, p: &UndecidedProposal) -> Result<(), ConsensusError> {
        if !p.valid
            && self
                .store
                .undecided(height)?
                .iter()
                .any(|q| q.valid && q.round == p.round && q.block.hash() == p.block.hash())
        {
            return Ok(());
        }
        // Not synced on its own: another validator's proposal is not this node's promise. Losing it in a crash
        // costs liveness only (the restarted node asks for it again, or syncs the decided block), never safety:
        // the engine's own write-ahead log keeps this node's votes and its verdict on the value (`ProposedValue`).
        // It reaches the disk with the next synced write (an acknowledgement or a decision), which saves an fsync
        // between a proposal's arrival and the prevote.
        self.store.put_undecided(height, p, Durability::Lazy)
    }

    /// Judges a block received through value sync (its certificate is checked by the engine).
    pub fn synced_value(
        &mut self,
        height: u64,
        round: u32,
        proposer: Address,
        bytes: &[u8],
    ) -> Result<SyncVerdict, ConsensusError> {
        let Ok(mut block) = Block::decode(bytes) else {
            return Ok(SyncVerdict::PeerFault);
        };
        if height != self.next_height() || block.height() != height {
            return Ok(SyncVerdict::NotNow);
        }
        // Certified by more than 2/3 of the set: its L1 origin was checked when it was decided, and this node's
        // own L1 view (catching up, or moved on) is no judge of it now.
        let hashes = bundle_hashes(&block);
        let valid = self.judge(&mut block, &hashes, height, true)?;
        let p = UndecidedProposal {
            round,
            valid_round: None,
            proposer,
            valid,
            block,
        };
        self.record(height, &p)?;
        Ok(SyncVerdict::Verdict(proposed_value(height, &p)))
    }
}

fn proposed_value(height: u64, p: &UndecidedProposal) -> ProposedValue<BatonContext> {
    ProposedValue {
        height: Height(height),
        round: Round::new(p.round),
        valid_round: p.valid_round.map_or(Round::Nil, Round::new),
        proposer: p.proposer,
        value: Value(p.block.hash()),
        validity: if p.valid {
            Validity::Valid
        } else {
            Validity::Invalid
        },
    }
}
