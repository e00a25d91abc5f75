//! Glue to the Malachite BFT engine: Baton's `Context`, the votes it carries, the signer and verifier, and the
//! engine's traits for the types other modules define ([`crate::ids`], [`crate::signing`], [`crate::validators`],
//! [`crate::parts`]), so that none of those imports the engine context.
//!
//! The consensus value is small: the hash of the proposed block. Block bodies travel as proposal parts (and, for
//! nodes catching up, through value sync) and are kept by the host, so the engine's write-ahead log stays small.
//! Consensus keys are Ed25519. Every signed message carries a domain tag and the chain id, so a signature made for
//! one chain or one message kind is worthless for another ([`crate::signing::ChainDomain`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_consensus::{SigningKey, VerificationKey};

use malachitebft_core_types::{
    self as mct, NilOrVal, Round, SignedExtension, SignedMessage, ValidatorProof,
    VoteExtensionScope, VoteType,
};
use malachitebft_signing::{Error as SignError, Signer, VerificationResult, Verifier};

use malachitebft_core_consensus::MisbehaviorEvidence;

use crate::evidence::{Equivocation, Kind, Signed};
use crate::hash::Hash;
use crate::ids::{Address, Height};
use crate::parts::ProposalPart;
use crate::sigcache::SignatureCache;
use crate::signing::{
    round_u32, verify_signature, ChainDomain, Ed25519, Proposal, Signature, Value,
};
use crate::validators::{Validator, ValidatorSet};

// ------------------------------------------------------------------------------------------------ Proposal / Vote

/// A precommit's vote extension: the validator's L1 attestation (`r ‖ s ‖ v` secp256k1 signature by its L1
/// attestation key over the commitment of the height and block it precommits; `baton-l1-inclusion` defines the
/// message). Required on precommits at commitment heights when the chain posts to L1, absent otherwise.
#[derive(Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Attestation(pub [u8; 65]);

impl fmt::Debug for Attestation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Attestation({})", hex::encode(&self.0[..8]))
    }
}

impl mct::Extension for Attestation {
    fn size_bytes(&self) -> usize {
        65
    }
}

/// A prevote or precommit.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Vote {
    pub vote_type: VoteType,
    pub height: Height,
    pub round: Round,
    pub value: NilOrVal<Hash>,
    pub validator: Address,
    pub extension: Option<SignedExtension<BatonContext>>,
}

impl Vote {
    pub fn new(
        vote_type: VoteType,
        height: Height,
        round: Round,
        value: NilOrVal<Hash>,
        validator: Address,
    ) -> Self {
        Vote {
            vote_type,
            height,
            round,
            value,
            validator,
            extension: None,
        }
    }

    fn value_hash(&self) -> Option<Hash> {
        match &self.value {
            NilOrVal::Nil => None,
            NilOrVal::Val(h) => Some(*h),
        }
    }
}

impl mct::Vote<BatonContext> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<Hash> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<Hash> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.vote_type
    }

    fn validator_address(&self) -> &Address {
        &self.validator
    }

    fn extension(&self) -> Option<&SignedExtension<BatonContext>> {
        self.extension.as_ref()
    }

    fn take_extension(&mut self) -> Option<SignedExtension<BatonContext>> {
        self.extension.take()
    }

    fn extend(self, extension: SignedExtension<BatonContext>) -> Self {
        Vote {
            extension: Some(extension),
            ..self
        }
    }
}

// ------------------------------------------------------------------------------------------------ Context

/// Baton's Malachite context.
#[derive(Clone, Debug, Default)]
pub struct BatonContext;

impl mct::Context for BatonContext {
    type Address = Address;
    type Height = Height;
    type ProposalPart = ProposalPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = mct::LinearTimeouts;
    type Value = Value;
    type Vote = Vote;
    type Extension = Attestation;
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(
        &self,
        vs: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        vs.proposer(height.0, round_u32(round))
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: Value,
        pol_round: Round,
        proposer: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<Hash>,
        validator: Address,
    ) -> Vote {
        Vote::new(VoteType::Prevote, height, round, value, validator)
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value: NilOrVal<Hash>,
        validator: Address,
    ) -> Vote {
        Vote::new(VoteType::Precommit, height, round, value, validator)
    }
}

// ------------------------------------------------------------------------------------------------ Signer / Verifier

/// Signs consensus messages with a validator's Ed25519 key for one chain.
#[derive(Clone)]
pub struct ConsensusSigner {
    key: SigningKey,
    domain: ChainDomain,
    /// Where this node's own signatures are remembered, so the engine's check of its own votes is free.
    cache: Option<Arc<SignatureCache>>,
}

impl fmt::Debug for ConsensusSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConsensusSigner({})", self.address())
    }
}

impl ConsensusSigner {
    pub fn new(key: SigningKey, domain: ChainDomain) -> Self {
        ConsensusSigner {
            key,
            domain,
            cache: None,
        }
    }

    /// Remembers every signature made here in `cache` (the verifier's).
    pub fn with_cache(mut self, cache: Arc<SignatureCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    pub fn address(&self) -> Address {
        Address::from_public_key_bytes(self.key.verification_key().as_bytes())
    }

    pub fn public_key(&self) -> VerificationKey {
        self.key.verification_key()
    }

    pub fn domain(&self) -> ChainDomain {
        self.domain
    }

    /// The proposer's signature closing a stream of proposal parts for `block_hash` in `(height, round)`.
    pub fn sign_parts(&self, height: u64, round: u32, block_hash: &Hash) -> Signature {
        self.sign(&self.domain.parts_bytes(height, round, block_hash))
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        let signature = Signature(self.key.sign(message).to_bytes());
        if let Some(cache) = &self.cache {
            cache.remember(
                self.key.verification_key().as_bytes(),
                message,
                &signature.0,
            );
        }
        signature
    }
}

#[async_trait]
impl Signer<BatonContext> for ConsensusSigner {
    async fn sign_vote(&self, vote: Vote) -> Result<SignedMessage<BatonContext, Vote>, SignError> {
        let signature = self.sign(&self.domain.signed_vote_bytes(&vote));
        Ok(SignedMessage::new(vote, signature))
    }

    async fn sign_proposal(
        &self,
        proposal: Proposal,
    ) -> Result<SignedMessage<BatonContext, Proposal>, SignError> {
        let signature = self.sign(&self.domain.proposal_bytes(&proposal));
        Ok(SignedMessage::new(proposal, signature))
    }

    async fn sign_vote_extension(
        &self,
        scope: VoteExtensionScope<BatonContext>,
        extension: Attestation,
    ) -> Result<SignedMessage<BatonContext, Attestation>, SignError> {
        let signature = self.sign(&self.domain.extension_bytes(&scope, &extension));
        Ok(SignedMessage::new(extension, signature))
    }

    async fn sign_validator_proof(
        &self,
        public_key: Vec<u8>,
        peer_id: Vec<u8>,
    ) -> Result<ValidatorProof<BatonContext>, SignError> {
        let signature = self.sign(&self.domain.validator_proof_bytes(&public_key, &peer_id));
        Ok(ValidatorProof::new(public_key, peer_id, signature))
    }
}

/// Verifies consensus messages for one chain, each exact (key, bytes, signature) once when given a cache
/// ([`crate::sigcache`]).
#[derive(Clone, Debug)]
pub struct ConsensusVerifier {
    pub domain: ChainDomain,
    cache: Option<Arc<SignatureCache>>,
}

impl ConsensusVerifier {
    pub fn new(domain: ChainDomain) -> Self {
        ConsensusVerifier {
            domain,
            cache: None,
        }
    }

    pub fn with_cache(mut self, cache: Arc<SignatureCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    fn check(&self, public_key: &VerificationKey, bytes: &[u8], signature: &Signature) -> bool {
        let Some(cache) = &self.cache else {
            return verify_signature(public_key, bytes, signature);
        };
        if cache.known(public_key.as_bytes(), bytes, &signature.0) {
            return true;
        }
        let ok = verify_signature(public_key, bytes, signature);
        if ok {
            cache.remember(public_key.as_bytes(), bytes, &signature.0);
        }
        ok
    }
}

#[async_trait]
impl Verifier<BatonContext> for ConsensusVerifier {
    async fn verify_signed_vote(
        &self,
        vote: &Vote,
        signature: &Signature,
        public_key: &VerificationKey,
    ) -> Result<VerificationResult, SignError> {
        let bytes = self.domain.signed_vote_bytes(vote);
        Ok(VerificationResult::from_bool(
            self.check(public_key, &bytes, signature),
        ))
    }

    async fn verify_signed_proposal(
        &self,
        proposal: &Proposal,
        signature: &Signature,
        public_key: &VerificationKey,
    ) -> Result<VerificationResult, SignError> {
        let bytes = self.domain.proposal_bytes(proposal);
        Ok(VerificationResult::from_bool(
            self.check(public_key, &bytes, signature),
        ))
    }

    async fn verify_signed_vote_extension(
        &self,
        scope: &VoteExtensionScope<BatonContext>,
        extension: &Attestation,
        signature: &Signature,
        public_key: &VerificationKey,
    ) -> Result<VerificationResult, SignError> {
        let bytes = self.domain.extension_bytes(scope, extension);
        Ok(VerificationResult::from_bool(
            self.check(public_key, &bytes, signature),
        ))
    }

    async fn verify_validator_proof(
        &self,
        proof: &ValidatorProof<BatonContext>,
    ) -> Result<VerificationResult, SignError> {
        let Ok(public_key) = VerificationKey::try_from(proof.public_key.as_slice()) else {
            return Ok(VerificationResult::Invalid);
        };
        let bytes = self
            .domain
            .validator_proof_bytes(&proof.public_key, &proof.peer_id);
        Ok(VerificationResult::from_bool(self.check(
            &public_key,
            &bytes,
            &proof.signature,
        )))
    }
}

// ------------------------------------------------------------------------------------------------ Engine traits

// The engine's traits for the types other modules define, here so those modules need not import this one.

impl mct::Validator<BatonContext> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }

    fn public_key(&self) -> &VerificationKey {
        &self.public_key
    }

    fn voting_power(&self) -> u64 {
        self.voting_power
    }
}

impl mct::ValidatorSet<BatonContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators().len()
    }

    fn total_voting_power(&self) -> u64 {
        self.total_power()
    }

    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.get(address)
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators().get(index)
    }
}

impl mct::Proposal<BatonContext> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &Value {
        &self.value
    }

    fn take_value(self) -> Value {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

impl mct::ProposalPart<BatonContext> for ProposalPart {
    fn is_first(&self) -> bool {
        matches!(self, ProposalPart::Init { .. })
    }

    fn is_last(&self) -> bool {
        matches!(self, ProposalPart::Fin { .. })
    }
}

impl ChainDomain {
    /// Bytes a validator signs for `vote`.
    pub fn signed_vote_bytes(&self, vote: &Vote) -> Vec<u8> {
        self.vote_bytes(
            vote.vote_type,
            vote.height.0,
            round_u32(vote.round),
            vote.value_hash(),
            &vote.validator,
        )
    }

    /// Bytes a validator signs (with its consensus key) to attach `extension` to its precommit in `scope`.
    pub fn extension_bytes(
        &self,
        scope: &VoteExtensionScope<BatonContext>,
        extension: &Attestation,
    ) -> Vec<u8> {
        self.bytes(
            b"baton/extension/v1",
            &(
                scope.height.0,
                round_u32(scope.round),
                scope.value_id,
                scope.validator_address,
                extension.0,
            ),
        )
    }

    fn validator_proof_bytes(&self, public_key: &[u8], peer_id: &[u8]) -> Vec<u8> {
        let mut out = ValidatorProof::<BatonContext>::signing_bytes(public_key, peer_id);
        out.extend_from_slice(&self.0 .0);
        out
    }
}

// ------------------------------------------------------------------------------------------------ Evidence

/// The equivocations in the engine's report.
pub fn evidence_from_engine(evidence: &MisbehaviorEvidence<BatonContext>) -> Vec<Equivocation> {
    let mut out = Vec::new();
    for (validator, pairs) in evidence.votes.iter() {
        for (a, b) in pairs {
            let kind = match a.message.vote_type {
                VoteType::Prevote => Kind::Prevote,
                VoteType::Precommit => Kind::Precommit,
            };
            let signed = |v: &malachitebft_core_types::SignedVote<BatonContext>| Signed {
                value: match &v.message.value {
                    NilOrVal::Val(h) => Some(*h),
                    NilOrVal::Nil => None,
                },
                pol_round: 0,
                signature: v.signature.0,
            };
            out.push(Equivocation::new(
                kind,
                *validator,
                a.message.height.0,
                round_u32(a.message.round),
                signed(a),
                signed(b),
            ));
        }
    }
    for (validator, pairs) in evidence.proposals.iter() {
        for (a, b) in pairs {
            let signed = |p: &malachitebft_core_types::SignedProposal<BatonContext>| Signed {
                value: Some(p.message.value.0),
                pol_round: p.message.pol_round.as_i64(),
                signature: p.signature.0,
            };
            out.push(Equivocation::new(
                Kind::Proposal,
                *validator,
                a.message.height.0,
                round_u32(a.message.round),
                signed(a),
                signed(b),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vote_extension_signature_is_bound_to_its_precommit() {
        let key = SigningKey::from([5; 32]);
        let signer = ConsensusSigner::new(key, ChainDomain::new("test-chain"));
        let domain = signer.domain();
        let scope = |height: u64, value: &[u8]| {
            VoteExtensionScope::<BatonContext>::new(
                Height(height),
                Round::new(0),
                Hash::digest(&[value]),
                signer.address(),
            )
        };
        let ext = Attestation([7; 65]);
        let sig = signer.sign(&domain.extension_bytes(&scope(10, b"a"), &ext));
        let ok = |s: &VoteExtensionScope<BatonContext>, e: &Attestation, d: &ChainDomain| {
            verify_signature(&signer.public_key(), &d.extension_bytes(s, e), &sig)
        };
        assert!(ok(&scope(10, b"a"), &ext, &domain));
        assert!(!ok(&scope(11, b"a"), &ext, &domain), "another height");
        assert!(!ok(&scope(10, b"b"), &ext, &domain), "another block");
        assert!(
            !ok(&scope(10, b"a"), &Attestation([8; 65]), &domain),
            "another attestation"
        );
        assert!(
            !ok(&scope(10, b"a"), &ext, &ChainDomain::new("other")),
            "another chain"
        );
        use malachitebft_core_types::Extension;
        assert_eq!(ext.size_bytes(), 65);
    }
}
