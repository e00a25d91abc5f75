//! Misbehaviour evidence: a validator's two conflicting signed messages for one height and round.
//!
//! The engine notices equivocation (two different prevotes, precommits or proposals from one validator for the
//! same height and round) and reports it when a height is finalized; [`crate::context::evidence_from_engine`] turns
//! its report into [`Equivocation`]s. Each one proves itself: both signatures verify under the validator's key, over
//! messages that differ only where they must not ([`Equivocation::verify`]). Evidence enters the chain like bundles
//! do: a proposer puts pending evidence in its block (committed in the header's `evidence_root`), validators check
//! every item against the set of its height, and once decided it is stored for good. On a chain with epochs the
//! validators with included evidence are *jailed*: the set function leaves them out of every later set
//! ([`crate::epoch`]). Their stake is not touched (no on-chain slashing yet).

use borsh::{BorshDeserialize, BorshSerialize};
use malachitebft_core_types::VoteType;

use crate::hash::{merkle_root, Hash};
use crate::ids::Address;
use crate::signing::{verify_signature, ChainDomain, Proposal, Signature};
use crate::validators::ValidatorSet;

/// Most evidence items one block may carry.
pub const MAX_EVIDENCE_PER_BLOCK: usize = 16;
/// Evidence about a height more than this many heights below the block is refused (it has had its chance).
pub const MAX_EVIDENCE_AGE: u64 = 100_000;

/// Whether evidence about `evidence_height` may go into the block at `block_height`: about an earlier height, at
/// most [`MAX_EVIDENCE_AGE`] heights back. Proposing, judging and dropping stale evidence all ask this.
pub fn carriable(evidence_height: u64, block_height: u64) -> bool {
    evidence_height < block_height && block_height - evidence_height <= MAX_EVIDENCE_AGE
}

/// What a validator signed twice.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub enum Kind {
    Prevote,
    Precommit,
    Proposal,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Prevote => "prevote",
            Kind::Precommit => "precommit",
            Kind::Proposal => "proposal",
        }
    }
}

/// One of the two signed messages: the value it names (`None`: a nil vote), the proof-of-lock round of a
/// proposal (-1 for none; 0 in votes) and the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub struct Signed {
    pub value: Option<Hash>,
    pub pol_round: i64,
    pub signature: [u8; 64],
}

/// Two conflicting messages of `validator` at `(height, round)`, `first < second` (so a pair has one encoding).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Equivocation {
    pub kind: Kind,
    pub validator: Address,
    pub height: u64,
    pub round: u32,
    pub first: Signed,
    pub second: Signed,
}

/// Why evidence was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("validator {0} is not in the set of height {1}")]
    NotInSet(String, u64),
    #[error("the two messages name the same value: no conflict")]
    NoConflict,
    #[error("the messages are not in canonical order (first < second)")]
    NotCanonical,
    #[error("a vote carries a proof-of-lock round")]
    PolRoundInVote,
    #[error("a proposal names no value")]
    EmptyProposal,
    #[error("the {0} signature does not verify")]
    BadSignature(&'static str),
}

impl Equivocation {
    /// Builds evidence from two messages in either order.
    pub fn new(
        kind: Kind,
        validator: Address,
        height: u64,
        round: u32,
        a: Signed,
        b: Signed,
    ) -> Self {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        Equivocation {
            kind,
            validator,
            height,
            round,
            first,
            second,
        }
    }

    pub fn hash(&self) -> Hash {
        let enc = borsh::to_vec(self).unwrap_or_default();
        Hash::digest(&[b"baton/evidence/v1", &enc])
    }

    fn signed_bytes(&self, s: &Signed, domain: &ChainDomain) -> Option<Vec<u8>> {
        let vote = |t| domain.vote_bytes(t, self.height, self.round, s.value, &self.validator);
        match self.kind {
            Kind::Prevote => Some(vote(VoteType::Prevote)),
            Kind::Precommit => Some(vote(VoteType::Precommit)),
            Kind::Proposal => Some(domain.proposal_bytes(&Proposal {
                height: crate::ids::Height(self.height),
                round: malachitebft_core_types::Round::new(self.round),
                value: crate::signing::Value(s.value?),
                pol_round: match s.pol_round {
                    r if r < 0 => malachitebft_core_types::Round::Nil,
                    r => malachitebft_core_types::Round::new(u32::try_from(r).ok()?),
                },
                proposer: self.validator,
            })),
        }
    }

    /// Checks that this is real equivocation by a member of `set` (the set of `self.height`) on chain `domain`.
    pub fn verify(&self, set: &ValidatorSet, domain: &ChainDomain) -> Result<(), EvidenceError> {
        let v = set
            .get(&self.validator)
            .ok_or_else(|| EvidenceError::NotInSet(self.validator.to_hex(), self.height))?;
        if self.first >= self.second {
            return Err(if self.first == self.second {
                EvidenceError::NoConflict
            } else {
                EvidenceError::NotCanonical
            });
        }
        match self.kind {
            Kind::Prevote | Kind::Precommit => {
                if self.first.pol_round != 0 || self.second.pol_round != 0 {
                    return Err(EvidenceError::PolRoundInVote);
                }
                if self.first.value == self.second.value {
                    return Err(EvidenceError::NoConflict);
                }
            }
            Kind::Proposal => {
                if self.first.value.is_none() || self.second.value.is_none() {
                    return Err(EvidenceError::EmptyProposal);
                }
            }
        }
        for (which, s) in [("first", &self.first), ("second", &self.second)] {
            let bytes = self
                .signed_bytes(s, domain)
                .ok_or(EvidenceError::BadSignature(which))?;
            if !verify_signature(&v.public_key, &bytes, &Signature(s.signature)) {
                return Err(EvidenceError::BadSignature(which));
            }
        }
        Ok(())
    }
}

/// The header's `evidence_root`: the Merkle root of the items' hashes in block order.
pub fn evidence_root(items: &[Equivocation]) -> Hash {
    let leaves: Vec<Hash> = items.iter().map(Equivocation::hash).collect();
    merkle_root(&leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ConsensusSigner;
    use crate::validators::Validator;
    use ed25519_consensus::SigningKey;

    fn setup() -> (SigningKey, ValidatorSet, ChainDomain) {
        let key = SigningKey::from([5; 32]);
        let other = SigningKey::from([6; 32]);
        let set = ValidatorSet::new(vec![
            Validator::new(key.verification_key(), 1),
            Validator::new(other.verification_key(), 1),
        ])
        .unwrap();
        (key, set, ChainDomain::new("evidence"))
    }

    fn vote(key: &SigningKey, domain: &ChainDomain, t: VoteType, value: Option<Hash>) -> Signed {
        let who = Address::from_public_key_bytes(key.verification_key().as_bytes());
        let s = ConsensusSigner::new(key.clone(), *domain)
            .sign(&domain.vote_bytes(t, 7, 2, value, &who));
        Signed {
            value,
            pol_round: 0,
            signature: s.0,
        }
    }

    #[test]
    fn conflicting_signed_votes_prove_equivocation_and_nothing_else_does() {
        let (key, set, domain) = setup();
        let who = Address::from_public_key_bytes(key.verification_key().as_bytes());
        let a = vote(
            &key,
            &domain,
            VoteType::Precommit,
            Some(Hash::digest(&[b"a"])),
        );
        let b = vote(&key, &domain, VoteType::Precommit, None);
        let e = Equivocation::new(Kind::Precommit, who, 7, 2, a, b);
        assert_eq!(e.verify(&set, &domain), Ok(()));
        // Either order gives the same evidence.
        assert_eq!(Equivocation::new(Kind::Precommit, who, 7, 2, b, a), e);

        // The same vote twice is no conflict.
        let same = Equivocation {
            second: e.first,
            ..e.clone()
        };
        assert_eq!(same.verify(&set, &domain), Err(EvidenceError::NoConflict));
        // Swapped order is refused (one encoding per pair).
        let swapped = Equivocation {
            first: e.second,
            second: e.first,
            ..e.clone()
        };
        assert_eq!(
            swapped.verify(&set, &domain),
            Err(EvidenceError::NotCanonical)
        );
        // Signatures over other messages: another round, another kind, another chain.
        let other_round = Equivocation {
            round: 3,
            ..e.clone()
        };
        assert!(matches!(
            other_round.verify(&set, &domain),
            Err(EvidenceError::BadSignature(_))
        ));
        let other_kind = Equivocation {
            kind: Kind::Prevote,
            ..e.clone()
        };
        assert!(matches!(
            other_kind.verify(&set, &domain),
            Err(EvidenceError::BadSignature(_))
        ));
        assert!(matches!(
            e.verify(&set, &ChainDomain::new("elsewhere")),
            Err(EvidenceError::BadSignature(_))
        ));
        // Blaming another validator with these signatures fails.
        let framed = Equivocation {
            validator: set.validators()[0].address,
            ..e.clone()
        };
        let framed = if framed.validator == who {
            Equivocation {
                validator: set.validators()[1].address,
                ..e.clone()
            }
        } else {
            framed
        };
        assert!(framed.verify(&set, &domain).is_err());
        // Someone outside the set cannot be jailed through it.
        let outsider = SigningKey::from([9; 32]);
        let o = Address::from_public_key_bytes(outsider.verification_key().as_bytes());
        let oe = Equivocation::new(
            Kind::Prevote,
            o,
            7,
            2,
            vote(&outsider, &domain, VoteType::Prevote, None),
            vote(
                &outsider,
                &domain,
                VoteType::Prevote,
                Some(Hash::digest(&[b"x"])),
            ),
        );
        assert!(matches!(
            oe.verify(&set, &domain),
            Err(EvidenceError::NotInSet(..))
        ));
        // The root commits to the items and their order.
        let root = evidence_root(&[e.clone(), oe.clone()]);
        assert_ne!(root, evidence_root(&[oe, e]));
        assert_ne!(root, evidence_root(&[]));
    }

    #[test]
    fn two_signed_proposals_for_one_round_prove_equivocation() {
        let (key, set, domain) = setup();
        let who = Address::from_public_key_bytes(key.verification_key().as_bytes());
        let signer = ConsensusSigner::new(key, domain);
        let signed = |value: Hash| {
            let p = Proposal {
                height: crate::ids::Height(7),
                round: malachitebft_core_types::Round::new(2),
                value: crate::signing::Value(value),
                pol_round: malachitebft_core_types::Round::Nil,
                proposer: who,
            };
            Signed {
                value: Some(value),
                pol_round: -1,
                signature: signer.sign(&domain.proposal_bytes(&p)).0,
            }
        };
        let e = Equivocation::new(
            Kind::Proposal,
            who,
            7,
            2,
            signed(Hash::digest(&[b"one"])),
            signed(Hash::digest(&[b"two"])),
        );
        assert_eq!(e.verify(&set, &domain), Ok(()));
        let mut lied = e.clone();
        lied.second.pol_round = 1;
        assert!(matches!(
            lied.verify(&set, &domain),
            Err(EvidenceError::BadSignature(_))
        ));
    }
}
