//! A decision committed: the block with its batches, namespace table and certificate in one store commit, the
//! mempool settled, evidence jailed, the next set taken; and decided blocks served to peers that sync.

use malachitebft_core_types::{CommitCertificate, CommitSignature, Round};
use tracing::{debug, info, warn};

use crate::block::bundle_hashes;
use crate::bundle::Sender;
use crate::context::BatonContext;
use crate::error::ConsensusError;
use crate::evidence::carriable;
use crate::hash::Hash;
use crate::ids::Height;
use crate::signing::{round_u32, Signature};
use crate::store::{ChainStore, UndecidedProposal};
use crate::types::{batches_of, block_table, Block, Certificate};

use super::{Clock, Host};

impl<S: ChainStore, C: Clock> Host<S, C> {
    /// Commits a decision. Returns the decided block.
    pub fn decided(&mut self, cert: Certificate) -> Result<Block, ConsensusError> {
        let height = cert.height;
        let mut found: Vec<UndecidedProposal> = self
            .store
            .undecided(height)?
            .into_iter()
            .filter(|p| p.block.hash() == cert.block_hash)
            .collect();
        // A copy judged valid here carries the next set this node computed; a carried set must match the header.
        found.sort_by_key(|p| !p.valid);
        let current = self.validators.hash();
        let carries_named_set = |b: &Block| self.check_carried_set(b).is_ok();
        let mut block = found
            .into_iter()
            .map(|p| p.block)
            .reduce(|best, b| {
                if !carries_named_set(&best) && carries_named_set(&b) {
                    b
                } else {
                    best
                }
            })
            .ok_or(ConsensusError::UnknownBlock(cert.block_hash))?;
        if !carries_named_set(&block) {
            block.next_validators = None;
        }
        if block.header.next_validator_set_hash != current && block.next_validators.is_none() {
            // Decided by the others while this node could not judge it (its L1 view was behind): compute the set
            // now, or take the block with its set through sync.
            match self.next_validators(height, &block.header.l1_origin) {
                Ok(set) if set.hash() == block.header.next_validator_set_hash => {
                    block.next_validators = Some(set)
                }
                _ => return Err(ConsensusError::UnknownBlock(cert.block_hash)),
            }
        }
        let hashes = self
            .known_hashes
            .remove(&cert.block_hash)
            .unwrap_or_else(|| bundle_hashes(&block));
        let batches = batches_of(&block.bundles, &hashes);
        let table = self
            .known_tables
            .remove(&cert.block_hash)
            .unwrap_or_else(|| block_table(self.spec.rollups.ids(), &block.bundles, &hashes));
        self.store
            .commit(&block, &hashes, &batches, &table, &cert)?;
        self.nonces
            .decided(block.bundles.iter().map(|b| (&b.sender, b.nonce)));
        let done: Vec<(Hash, Sender, u64)> = block
            .bundles
            .iter()
            .zip(&hashes)
            .map(|(b, h)| (*h, b.sender, b.nonce))
            .collect();
        if let Some(l1) = &self.l1 {
            // The decided chain now resolves some forced entries for good: the view forgets them.
            l1.decided(height, &self.view());
        }
        let waited = self.mempool.expire_waiting(self.clock.now_ms());
        self.record_waiting_dropped(waited)?;
        let dropped = self.mempool.on_decided(height, &done);
        for (_, d) in &dropped {
            match d {
                crate::types::Dropped::Expired { .. } => self.stats.dropped_expired += 1,
                crate::types::Dropped::Rejected { .. } => self.stats.dropped_rejected += 1,
            }
        }
        if !dropped.is_empty() {
            debug!(
                height,
                dropped = dropped.len(),
                "pending bundles expired or lost their nonce"
            );
            self.store.record_dropped(&dropped)?;
        }
        self.verified.clear();
        self.known_hashes.clear();
        self.known_tables.clear();
        self.own_proposals.clear();
        self.answered.clear();
        self.parked.retain(|p| p.height > height);
        for e in &block.evidence {
            warn!(validator = %e.validator, height = e.height, included_at = height, "evidence of equivocation decided; the validator is jailed");
            self.included_evidence.insert(e.hash());
            self.jailed.insert(e.validator);
        }
        // Evidence leaves the queue once in the chain or too old to carry (it would keep idle heights busy).
        let included = &self.included_evidence;
        self.pending_evidence
            .retain(|e| !included.contains(&e.hash()) && carriable(e.height, height + 1));
        if let Some(set) = &block.next_validators {
            info!(
                height = height + 1,
                validators = set.validators().len(),
                power = set.total_power(),
                set = %set.hash(),
                "new validator set"
            );
            self.validators = set.clone();
        }
        self.note_voters(&cert, block.header.timestamp_ms);
        self.tip = Some(block.header.clone());
        self.current = height + 1;
        self.future.retain(|h, _| *h > height);
        Ok(block)
    }

    /// Presence memory: the certificate's signers voted at chain time `timestamp_ms`. Kept to the current set.
    fn note_voters(&mut self, cert: &Certificate, timestamp_ms: u64) {
        for (v, _) in &cert.signatures {
            if self.validators.get(v).is_some() {
                self.last_voted_ms.insert(*v, timestamp_ms);
            }
        }
        if self.last_voted_ms.len() > self.validators.validators().len() {
            let set = &self.validators;
            self.last_voted_ms.retain(|v, _| set.get(v).is_some());
        }
    }

    /// A decided block with its certificate, for peers that sync from us.
    pub fn decided_value(
        &self,
        height: u64,
    ) -> Result<Option<(Certificate, Block)>, ConsensusError> {
        match (self.store.certificate(height)?, self.store.block(height)?) {
            (Some(c), Some(b)) => Ok(Some((c, b))),
            _ => Ok(None),
        }
    }
}

/// Converts the engine's commit certificate into Baton's.
pub fn certificate_from_engine(c: &CommitCertificate<BatonContext>) -> Certificate {
    Certificate {
        height: c.height.0,
        round: round_u32(c.round),
        block_hash: c.value_id,
        signatures: c
            .commit_signatures
            .iter()
            .map(|s| (s.address, s.signature.0))
            .collect(),
    }
}

/// Converts Baton's certificate into the engine's.
pub fn certificate_to_engine(c: &Certificate) -> CommitCertificate<BatonContext> {
    CommitCertificate {
        height: Height(c.height),
        round: Round::new(c.round),
        value_id: c.block_hash,
        commit_signatures: c
            .signatures
            .iter()
            .map(|(a, s)| CommitSignature::new(*a, Signature(*s)))
            .collect(),
    }
}
