//! Byzantine behaviours a simulated validator can run, reusable by any simulation:
//!
//! - [`Behaviour::EquivocatingProposer`]: when it proposes, it signs two different blocks for the same height
//!   and round (the second differs in its timestamp) and sends one to half of its peers and the other to the rest.
//! - [`Behaviour::DoubleVoter`]: every vote it casts is sent to half of its peers; the other half get a
//!   conflicting vote for the same height, round and type (nil instead of the value, or another value instead
//!   of nil), both validly signed.
//! - [`Behaviour::LoudDoubleVoter`]: every vote it casts goes to every peer followed by the conflicting one, so
//!   every honest validator holds the proof of its equivocation.
//!
//! Neither may make honest validators fork, and with fewer than a third of the power Byzantine, the honest ones
//! keep deciding.

use malachitebft_core_types::{NilOrVal, SignedMessage};

use super::{Msg, Sim};
use crate::context::Vote;
use crate::hash::Hash;
use crate::parts::ProposalPart;

/// What a simulated validator does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    EquivocatingProposer,
    DoubleVoter,
    LoudDoubleVoter,
}

/// Sends `parts` (the block the node's host built) to the even peers and a conflicting block to the odd ones;
/// returns the conflicting block's value (its proposal message goes out in [`equivocate_proposal`]).
pub(crate) fn equivocate(
    sim: &mut Sim,
    node: usize,
    height: u64,
    round: u32,
    parts: &[ProposalPart],
) -> Option<crate::signing::Value> {
    let mut other = parts.to_vec();
    let mut other_hash = None;
    for p in other.iter_mut() {
        if let ProposalPart::Init { header, .. } = p {
            header.timestamp_ms += 1;
            other_hash = Some(header.hash());
        }
    }
    let Some(other_hash) = other_hash else {
        sim.publish_parts(node, parts.to_vec());
        return None;
    };
    let signature = sim.signer(node).sign_parts(height, round, &other_hash);
    for p in other.iter_mut() {
        if let ProposalPart::Fin { signature: s } = p {
            *s = signature.clone();
        }
    }
    debug_assert_ne!(Sim::value_of(parts), Sim::value_of(&other));
    for to in 0..sim.nodes() {
        if to == node {
            continue;
        }
        if to % 2 == 0 {
            sim.stream_to(node, to, parts);
        } else {
            sim.stream_to(node, to, &other);
        }
    }
    Some(crate::signing::Value(other_hash))
}

/// The proposal message that goes with [`equivocate`]: the signed proposal for the node's own block to the even
/// peers, a signed proposal for the conflicting block to the odd ones.
pub(crate) fn equivocate_proposal(
    sim: &mut Sim,
    node: usize,
    proposal: &SignedMessage<crate::context::BatonContext, crate::signing::Proposal>,
) {
    use malachitebft_core_consensus::SignedConsensusMsg;
    let p = &proposal.message;
    let twin = match sim.twin(node) {
        Some((h, r, v)) if h == p.height.0 && Some(r) == p.round.as_u32() => {
            let mut q = p.clone();
            q.value = v;
            let signature = sim.signer(node).sign(&sim.domain().proposal_bytes(&q));
            Some(SignedMessage::new(q, signature))
        }
        _ => None,
    };
    for to in 0..sim.nodes() {
        if to == node {
            continue;
        }
        let m = match &twin {
            Some(t) if to % 2 == 1 => t.clone(),
            _ => proposal.clone(),
        };
        sim.send(node, to, Msg::Consensus(SignedConsensusMsg::Proposal(m)));
    }
}

/// Sends `vote` to half the peers and a validly signed conflicting vote to the others; `loud`: both to everyone.
pub(crate) fn double_vote(
    sim: &mut Sim,
    node: usize,
    vote: &SignedMessage<crate::context::BatonContext, Vote>,
    loud: bool,
) {
    let mut twin = vote.message.clone();
    twin.value = match twin.value {
        NilOrVal::Nil => NilOrVal::Val(Hash::digest(&[
            b"double vote",
            &twin.height.0.to_be_bytes(),
        ])),
        NilOrVal::Val(_) => NilOrVal::Nil,
    };
    let signature = sim
        .signer(node)
        .sign(&sim.domain().signed_vote_bytes(&twin));
    let twin = SignedMessage::new(twin, signature);
    for to in 0..sim.nodes() {
        if to == node {
            continue;
        }
        let votes = if loud {
            vec![vote.clone(), twin.clone()]
        } else if to % 2 == 0 {
            vec![vote.clone()]
        } else {
            vec![twin.clone()]
        };
        for v in votes {
            sim.send(
                node,
                to,
                Msg::Consensus(malachitebft_core_consensus::SignedConsensusMsg::Vote(v)),
            );
        }
    }
}
