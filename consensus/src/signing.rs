//! Signing: the Ed25519 scheme, the chain's signing domain (the bytes each signed message kind is signed over), and
//! the proposal message and consensus value those bytes cover.
//!
//! Every signed message carries a domain tag and the chain id, so a signature made for one chain or one message kind
//! is worthless for another. The bytes of a vote with its engine extension, and of a vote extension, are built in
//! [`crate::context`], next to the engine types they take.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_consensus::{SigningKey, VerificationKey};
use malachitebft_core_types::{self as mct, Round, SigningScheme, VoteType};

use crate::hash::Hash;
use crate::ids::{Address, Height};

/// An Ed25519 signature.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", hex::encode(&self.0[..6]))
    }
}

/// Ed25519 signing scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl SigningScheme for Ed25519 {
    type DecodingError = String;
    type Signature = Signature;
    type PublicKey = VerificationKey;
    type PrivateKey = SigningKey;

    fn decode_signature(bytes: &[u8]) -> Result<Signature, String> {
        <[u8; 64]>::try_from(bytes)
            .map(Signature)
            .map_err(|_| format!("signature must be 64 bytes, got {}", bytes.len()))
    }

    fn encode_signature(signature: &Signature) -> Vec<u8> {
        signature.0.to_vec()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<VerificationKey, String> {
        VerificationKey::try_from(bytes).map_err(|e| format!("bad Ed25519 public key: {e}"))
    }

    fn encode_public_key(public_key: &VerificationKey) -> Vec<u8> {
        public_key.as_bytes().to_vec()
    }
}

/// Verifies an Ed25519 signature.
pub fn verify_signature(
    public_key: &VerificationKey,
    message: &[u8],
    signature: &Signature,
) -> bool {
    public_key
        .verify(&ed25519_consensus::Signature::from(signature.0), message)
        .is_ok()
}

/// The chain a signature belongs to: every signed byte string starts with a domain tag and this hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainDomain(pub Hash);

impl ChainDomain {
    pub fn new(chain_id: &str) -> Self {
        ChainDomain(Hash::digest(&[b"baton/chain/v1", chain_id.as_bytes()]))
    }

    pub(crate) fn bytes<T: BorshSerialize>(&self, tag: &'static [u8], body: &T) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        out.extend_from_slice(tag);
        out.extend_from_slice(&self.0 .0);
        // Serialising plain structs into a Vec cannot fail.
        borsh::to_writer(&mut out, body).unwrap_or(());
        out
    }

    /// Bytes a validator signs for a vote. Clients rebuild these to check commit certificates.
    pub fn vote_bytes(
        &self,
        vote_type: VoteType,
        height: u64,
        round: u32,
        value: Option<Hash>,
        validator: &Address,
    ) -> Vec<u8> {
        let kind: u8 = match vote_type {
            VoteType::Prevote => 0,
            VoteType::Precommit => 1,
        };
        self.bytes(b"baton/vote/v1", &(kind, height, round, value, validator))
    }

    /// Bytes a proposer signs for a proposal.
    pub fn proposal_bytes(&self, p: &Proposal) -> Vec<u8> {
        self.bytes(
            b"baton/proposal/v1",
            &(
                p.height.0,
                round_u32(p.round),
                p.value.0,
                round_i64(p.pol_round),
                p.proposer,
            ),
        )
    }

    /// Bytes a proposer signs to close a stream of proposal parts.
    pub fn parts_bytes(&self, height: u64, round: u32, block_hash: &Hash) -> Vec<u8> {
        self.bytes(b"baton/parts/v1", &(height, round, block_hash))
    }

    /// Whether `signature` is `proposer`'s over a stream of proposal parts for `block_hash` in `(height, round)`
    /// ([`crate::context::ConsensusSigner::sign_parts`]).
    pub fn verify_parts(
        &self,
        proposer: &VerificationKey,
        height: u64,
        round: u32,
        block_hash: &Hash,
        signature: &Signature,
    ) -> bool {
        verify_signature(
            proposer,
            &self.parts_bytes(height, round, block_hash),
            signature,
        )
    }
}

/// A defined round as u32 (Nil maps to 0; callers only use it for defined rounds).
pub fn round_u32(round: Round) -> u32 {
    round.as_u32().unwrap_or(0)
}

fn round_i64(round: Round) -> i64 {
    round.as_i64()
}

/// The consensus value: the hash of the proposed block.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize,
)]
pub struct Value(pub Hash);

impl mct::Value for Value {
    type Id = Hash;

    fn id(&self) -> Hash {
        self.0
    }
}

/// A signed proposal for `value` at `(height, round)`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: Value,
    pub pol_round: Round,
    pub proposer: Address,
}
