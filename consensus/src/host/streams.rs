//! Other proposers' proposals arriving as part streams: bounded per stream, put back together, checked against
//! the proposer's signature and the header, parked while bundles are missing, and the asks and answers for them.

use std::collections::{BTreeMap, HashSet};

use malachitebft_core_consensus::ProposedValue;
use malachitebft_core_types::Round;
use tracing::{debug, warn};

use crate::bundle::Bundle;
use crate::context::BatonContext;
use crate::error::ConsensusError;
use crate::evidence::{Equivocation, MAX_EVIDENCE_PER_BLOCK};
use crate::hash::Hash;
use crate::ids::Address;
use crate::parts::ProposalPart;
use crate::signing::Signature;
use crate::store::ChainStore;
use crate::types::{Block, BlockHeader};

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
}

/// Asks answered per height at most (peers times rounds; beyond it asks go unanswered until the next height).
const MAX_ANSWERED: usize = 4_096;

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
        // Each publisher has its own few slots: a peer opening streams endlessly only ever drops its own.
        let own = self.streams.entry(publisher.to_vec()).or_default();
        let at = match own.iter().position(|(id, _)| id == stream_id) {
            Some(at) => at,
            None => {
                if own.len() >= self.limits.max_streams_per_peer.max(1) {
                    own.remove(0);
                }
                own.push((stream_id.to_vec(), PartStream::default()));
                own.len() - 1
            }
        };
        let stream = &mut own[at].1;
        match part {
            Some(p) => {
                stream.bytes += p.size();
                stream.parts.insert(seq, p);
            }
            None => stream.fin_seq = Some(seq),
        }
        let complete = matches!(stream.fin_seq, Some(n) if stream.parts.len() as u64 == n);
        let oversized = stream.bytes > max_bytes;
        if !complete && !oversized {
            return Ok(None);
        }
        let stream = own.remove(at).1;
        if own.is_empty() {
            self.streams.remove(publisher);
        }
        if oversized {
            warn!("proposal stream exceeds the block size limit; dropping it");
            return Ok(None);
        }
        let value = self.assemble(stream)?;
        Ok(value.or_else(|| self.next_ready()))
    }

    /// Messages to publish on the proposal-parts channel (asks for missing bundles, answers to asks).
    pub fn take_outbox(&mut self) -> Vec<ProposalPart> {
        std::mem::take(&mut self.outbox)
    }

    /// A validator (`peer`) asks this node for bundles of the proposal it made for `round` of the current height
    /// and that the asker lacks. Only the named proposer answers, about its own proposal of the current height,
    /// with the bundles of that proposal only, and once per peer and round: an ask costs at most one answer of at
    /// most one block, whoever sends it.
    pub fn on_want(
        &mut self,
        peer: &[u8],
        proposer: Address,
        height: u64,
        round: u32,
        hashes: &[Hash],
    ) -> Result<(), ConsensusError> {
        if self.address() != Some(proposer) || height != self.next_height() {
            return Ok(());
        }
        let Some(value) = self.own_proposals.get(&round).copied() else {
            return Ok(());
        };
        // Bounded by the peers allowed to ask (the set and configured peers) times the rounds of one height.
        if self.answered.len() >= MAX_ANSWERED || !self.answered.insert((peer.to_vec(), round)) {
            debug!(
                height,
                round, "an ask already answered (or too many asks); ignoring"
            );
            return Ok(());
        }
        let Some(block_hashes) = self.known_hashes.get(&value) else {
            return Ok(());
        };
        let wanted: HashSet<&Hash> = hashes.iter().collect();
        let mut found: Vec<Bundle> = Vec::new();
        let mut missing: Vec<usize> = Vec::new();
        for (i, h) in block_hashes.iter().enumerate() {
            if wanted.contains(h) {
                match self.find_bundle(h) {
                    Some(b) => found.push(b),
                    None => missing.push(i),
                }
            }
        }
        if !missing.is_empty() {
            // Bundles of the proposal that already left the mempool (a restream after a restart): the stored
            // block holds them in the same order as its hashes.
            if let Some(p) = self
                .store
                .undecided(height)?
                .into_iter()
                .find(|p| p.block.hash() == value)
            {
                found.extend(
                    missing
                        .iter()
                        .filter_map(|&i| p.block.bundles.get(i).cloned()),
                );
            }
        }
        debug!(
            height,
            round,
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
        let mut i = 0;
        while i < self.parked.len() {
            let mut complete = true;
            for k in 0..self.parked[i].hashes.len() {
                if self.parked[i].bundles[k].is_none() {
                    let h = self.parked[i].hashes[k];
                    match self.find_bundle(&h) {
                        Some(b) => self.parked[i].bundles[k] = Some(b),
                        None => complete = false,
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
            i += 1;
        }
        Ok(())
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
            // Asked once: the proposer answers each validator once per round (`on_want`).
            self.outbox.push(ProposalPart::Want {
                proposer,
                height,
                round: round_n,
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
