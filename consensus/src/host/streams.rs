//! Other proposers' proposals arriving as part streams: bounded per stream, put back together, checked against
//! the proposer's signature and the header, parked while bundles are missing, and the asks and answers for them.

use std::collections::{BTreeMap, HashSet};

use malachitebft_core_consensus::ProposedValue;
use malachitebft_core_types::Round;
use tracing::{debug, warn};

use crate::context::{BatonContext, ProposalPart, Signature};
use crate::error::ConsensusError;
use crate::evidence::{Equivocation, MAX_EVIDENCE_PER_BLOCK};
use crate::hash::Hash;
use crate::store::ChainStore;
use crate::types::{Address, Block, BlockHeader, Bundle};

use super::propose::chunk_bundles;
use super::{Clock, Host};

#[derive(Default)]
pub(super) struct PartStream {
    parts: BTreeMap<u64, ProposalPart>,
    fin_seq: Option<u64>,
    bytes: usize,
}

/// One bundle of a proposal body: sent whole, or by hash.
enum Item {
    Full(Bundle),
    Ref(Hash),
}

/// A signed, well-formed proposal whose body refers to bundles this node does not hold yet.
pub(super) struct Parked {
    pub(super) height: u64,
    pub(super) round: u32,
    pub(super) pol_round: Round,
    pub(super) proposer: Address,
    pub(super) header: BlockHeader,
    pub(super) hashes: Vec<Hash>,
    pub(super) bundles: Vec<Option<Bundle>>,
    pub(super) evidence: Vec<Equivocation>,
    pub(super) asked_at_ms: u64,
}

/// How long a parked proposal waits before asking for its missing bundles again.
const REASK_MS: u64 = 250;

/// A complete proposal received for a height we have not reached yet.
pub(super) struct Assembled {
    pub(super) round: u32,
    pub(super) pol_round: Round,
    pub(super) proposer: Address,
    pub(super) block: Block,
    pub(super) hashes: Vec<Hash>,
}

impl<S: ChainStore, C: Clock> Host<S, C> {
    /// Takes in one part of a streamed proposal. `publisher` and `stream_id` identify the stream; `part` is `None`
    /// for the end-of-stream marker. Returns the proposed value once a stream for the current height completes.
    pub fn on_part(
        &mut self,
        publisher: &[u8],
        stream_id: &[u8],
        seq: u64,
        part: Option<ProposalPart>,
    ) -> Result<Option<ProposedValue<BatonContext>>, ConsensusError> {
        // Bound what one stream can hold: a full block plus Init, evidence and Fin, split into parts no smaller than one
        // bundle.
        let max_parts = self.spec.params.max_block_bundles as u64 + 4;
        let max_bytes = self.spec.params.max_block_bytes as usize + 64 * 1024;
        if seq > max_parts {
            warn!(seq, "proposal part sequence number out of range; dropping");
            return Ok(None);
        }
        let key = (publisher.to_vec(), stream_id.to_vec());
        if !self.streams.contains_key(&key) {
            if self.streams.len() >= self.limits.max_streams {
                if let Some(old) = self.stream_order.pop_front() {
                    self.streams.remove(&old);
                }
            }
            self.stream_order.push_back(key.clone());
        }
        let stream = self.streams.entry(key.clone()).or_default();
        match part {
            Some(p) => {
                stream.bytes += p.size();
                stream.parts.insert(seq, p);
            }
            None => stream.fin_seq = Some(seq),
        }
        if stream.bytes > max_bytes {
            warn!("proposal stream exceeds the block size limit; dropping it");
            self.drop_stream(&key);
            return Ok(None);
        }
        let complete = matches!(stream.fin_seq, Some(n) if stream.parts.len() as u64 == n);
        if !complete {
            return Ok(None);
        }
        let Some(stream) = self.drop_stream(&key) else {
            return Ok(None);
        };
        let value = self.assemble(stream)?;
        Ok(value.or_else(|| self.ready.pop_front()))
    }

    /// Messages to publish on the proposal-parts channel (asks for missing bundles, answers to asks).
    pub fn take_outbox(&mut self) -> Vec<ProposalPart> {
        std::mem::take(&mut self.outbox)
    }

    /// A validator asks the proposer for bundles it lacks. Only the named proposer answers (it holds every bundle
    /// of its proposal), so one ask costs one answer however many validators see it.
    pub fn on_want(
        &mut self,
        proposer: Address,
        height: u64,
        hashes: &[Hash],
    ) -> Result<(), ConsensusError> {
        if self.address() != Some(proposer)
            || hashes.len() > self.spec.params.max_block_bundles as usize
        {
            return Ok(());
        }
        let wanted: HashSet<&Hash> = hashes.iter().collect();
        let mut found: Vec<Bundle> = Vec::new();
        let mut missing: Vec<&Hash> = Vec::new();
        for h in hashes {
            match self.find_bundle(h) {
                Some(b) => found.push(b),
                None => missing.push(h),
            }
        }
        if !missing.is_empty() {
            // Bundles of an undecided proposal that already left the mempool (a restream after a restart).
            for p in self.store.undecided(height)? {
                for b in p.block.bundles {
                    let h = b.hash();
                    if wanted.contains(&h) && missing.contains(&&h) {
                        missing.retain(|m| **m != h);
                        found.push(b);
                    }
                }
            }
        }
        debug!(
            height,
            asked = hashes.len(),
            found = found.len(),
            "answering a want"
        );
        for bundles in chunk_bundles(&found, self.limits.part_bytes) {
            self.outbox.push(ProposalPart::Bundles { bundles });
        }
        Ok(())
    }

    /// Completes parked proposals whose bundles have all arrived; asks again for what is still missing.
    pub(super) fn resolve_parked(&mut self) -> Result<(), ConsensusError> {
        let now = self.clock.now_ms();
        let mut i = 0;
        while i < self.parked.len() {
            let mut complete = true;
            let mut missing = Vec::new();
            for k in 0..self.parked[i].hashes.len() {
                if self.parked[i].bundles[k].is_none() {
                    let h = self.parked[i].hashes[k];
                    match self.find_bundle(&h) {
                        Some(b) => self.parked[i].bundles[k] = Some(b),
                        None => {
                            complete = false;
                            missing.push(h);
                        }
                    }
                }
            }
            if complete {
                let p = self.parked.swap_remove(i);
                let bundles: Vec<Bundle> = p.bundles.into_iter().flatten().collect();
                let block = Block {
                    header: p.header,
                    bundles,
                    next_validators: None,
                    evidence: p.evidence,
                };
                if let Some(v) =
                    self.finish(p.height, p.round, p.pol_round, p.proposer, block, p.hashes)?
                {
                    self.ready.push_back(v);
                }
                continue;
            }
            if now.saturating_sub(self.parked[i].asked_at_ms) >= REASK_MS {
                self.parked[i].asked_at_ms = now;
                self.outbox.push(ProposalPart::Want {
                    proposer: self.parked[i].proposer,
                    height: self.parked[i].height,
                    hashes: missing,
                });
            }
            i += 1;
        }
        Ok(())
    }

    pub(super) fn drop_stream(&mut self, key: &(Vec<u8>, Vec<u8>)) -> Option<PartStream> {
        self.stream_order.retain(|k| k != key);
        self.streams.remove(key)
    }

    pub(super) fn assemble(
        &mut self,
        stream: PartStream,
    ) -> Result<Option<ProposedValue<BatonContext>>, ConsensusError> {
        let mut parts = stream.parts.into_values();
        let Some(ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer,
            header,
        }) = parts.next()
        else {
            warn!("proposal stream does not start with Init; dropping");
            return Ok(None);
        };
        let mut items = Vec::new();
        let mut evidence = Vec::new();
        let mut signature: Option<Signature> = None;
        for p in parts {
            match p {
                ProposalPart::Evidence { items: e }
                    if signature.is_none()
                        && evidence.is_empty()
                        && e.len() <= MAX_EVIDENCE_PER_BLOCK =>
                {
                    evidence = e
                }
                ProposalPart::Data { bundles: b } if signature.is_none() => {
                    items.extend(b.into_iter().map(Item::Full))
                }
                ProposalPart::Refs { hashes } if signature.is_none() => {
                    items.extend(hashes.into_iter().map(Item::Ref))
                }
                ProposalPart::Fin { signature: s } if signature.is_none() => signature = Some(s),
                _ => {
                    warn!("malformed proposal stream (parts after Fin, a second Init, or dissemination); dropping");
                    return Ok(None);
                }
            }
        }
        let (Some(signature), Some(round_n)) = (signature, round.as_u32()) else {
            warn!("proposal stream without Fin or with a nil round; dropping");
            return Ok(None);
        };
        let height = height.0;
        // The proposer of a round depends on the parent's bench, known once the parent is decided; an early
        // proposal is checked against the rotation when its height starts (`started_round`).
        let expected = if height == self.next_height() {
            let expected = self.height_validators().proposer(height, round_n).clone();
            if expected.address != proposer {
                warn!(height, round = round_n, %proposer, "proposal parts from a validator that is not the proposer");
                return Ok(None);
            }
            expected
        } else if let Some(v) = self.validators.get(&proposer) {
            v.clone()
        } else {
            warn!(height, round = round_n, %proposer, "proposal parts from a validator outside the set");
            return Ok(None);
        };
        // A fresh block is built for the round it is proposed in; a re-proposed one was built no later than the
        // round it was locked in.
        let round_ok = match pol_round.as_u32() {
            None => header.round == round_n,
            Some(vr) => header.round <= vr,
        };
        if !round_ok {
            warn!(
                height,
                round = round_n,
                built = header.round,
                "proposal with a header round that does not fit; dropping"
            );
            return Ok(None);
        }
        let hash = header.hash();
        if !self
            .domain
            .verify_parts(&expected.public_key, height, round_n, &hash, &signature)
        {
            warn!(
                height,
                round = round_n,
                "proposal parts with a bad signature; dropping"
            );
            return Ok(None);
        }
        // The value id is the header hash, and the header commits to the body only through `bundles_root`. A body
        // that does not match it is not the block the proposer signed (damaged or altered on the way): drop it
        // rather than judge the value id invalid, which would count against the real block.
        let hashes: Vec<Hash> = items
            .iter()
            .map(|i| match i {
                Item::Full(b) => b.hash(),
                Item::Ref(h) => *h,
            })
            .collect();
        if header.bundle_count as usize != hashes.len()
            || crate::types::bundles_root(&hashes) != header.bundles_root
            || crate::evidence::evidence_root(&evidence) != header.evidence_root
        {
            warn!(
                height,
                round = round_n,
                "proposal body does not match its header; dropping"
            );
            return Ok(None);
        }
        if height < self.current {
            return Ok(None);
        }
        let mut bundles: Vec<Option<Bundle>> = Vec::with_capacity(items.len());
        let mut missing = Vec::new();
        for (item, h) in items.into_iter().zip(&hashes) {
            match item {
                Item::Full(b) => bundles.push(Some(b)),
                Item::Ref(_) => {
                    let found = self.find_bundle(h);
                    if found.is_none() {
                        missing.push(*h);
                    }
                    bundles.push(found);
                }
            }
        }
        if !missing.is_empty() {
            debug!(
                height,
                round = round_n,
                missing = missing.len(),
                "proposal refers to bundles not held here; asking"
            );
            if self.parked.len() >= self.limits.max_parked {
                self.parked.remove(0);
            }
            self.outbox.push(ProposalPart::Want {
                proposer,
                height,
                hashes: missing,
            });
            self.parked.push(Parked {
                height,
                round: round_n,
                pol_round,
                proposer,
                header: *header,
                hashes,
                bundles,
                evidence,
                asked_at_ms: self.clock.now_ms(),
            });
            return Ok(None);
        }
        let block = Block {
            header: *header,
            bundles: bundles.into_iter().flatten().collect(),
            next_validators: None,
            evidence,
        };
        self.finish(height, round_n, pol_round, proposer, block, hashes)
    }
}
