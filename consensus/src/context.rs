//! Glue to the Malachite BFT engine: Baton's `Context` and the types the engine is generic over.
//!
//! The consensus value is small: the hash of the proposed block. Block bodies travel as proposal parts (and, for
//! nodes catching up, through value sync) and are kept by the host, so the engine's write-ahead log stays small.
//! Consensus keys are Ed25519. Every signed message carries a domain tag and the chain id, so a signature made for
//! one chain or one message kind is worthless for another.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_consensus::{SigningKey, VerificationKey};
use serde::{Deserialize, Serialize};

use malachitebft_core_types::{
    self as mct, NilOrVal, Round, SignedExtension, SignedMessage, SigningScheme, ValidatorProof,
    VoteExtensionScope, VoteType,
};
use malachitebft_signing::{Error as SignError, Signer, VerificationResult, Verifier};

use crate::hash::Hash;
use crate::sigcache::SignatureCache;
use crate::types::{Address, BlockHeader, Bundle};

// ------------------------------------------------------------------------------------------------ Height

/// A block height. The first block is height 1.
#[derive(
    Copy,
    Clone,
    Default,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl mct::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

impl mct::Address for Address {}

// ------------------------------------------------------------------------------------------------ Signing

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

    fn bytes<T: BorshSerialize>(&self, tag: &'static [u8], body: &T) -> Vec<u8> {
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
    /// ([`ConsensusSigner::sign_parts`]).
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

/// A defined round as u32 (Nil maps to 0; callers only use it for defined rounds).
pub fn round_u32(round: Round) -> u32 {
    round.as_u32().unwrap_or(0)
}

fn round_i64(round: Round) -> i64 {
    round.as_i64()
}

// ------------------------------------------------------------------------------------------------ Validators

/// A validator: address, Ed25519 consensus key and voting power.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    pub address: Address,
    pub public_key: VerificationKey,
    pub voting_power: u64,
}

impl Validator {
    pub fn new(public_key: VerificationKey, voting_power: u64) -> Self {
        Validator {
            address: Address::from_public_key_bytes(public_key.as_bytes()),
            public_key,
            voting_power,
        }
    }
}

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

/// The validator set of a height, sorted by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total_power: u64,
    hash: Hash,
    /// Proposer rotation: indices into `validators`, see [`ValidatorSet::proposer`].
    schedule: Vec<u32>,
    /// The rotation without benched validators (see [`crate::bench`]); empty when nobody is benched.
    active: Vec<u32>,
}

/// Longest proposer rotation; larger total powers are scaled down to fit (each validator keeps at least one slot).
const MAX_SCHEDULE: u64 = 4096;

/// The proposer rotation for `powers`: each index appears in proportion to its power (scaled into at most
/// `MAX_SCHEDULE` slots), laid out so that no index sits next to itself, cyclically, unless it holds more than
/// half the slots. Construction: list the slots grouped by validator, heaviest first, and deal them onto the even
/// positions and then the odd ones.
fn proposer_schedule(powers: &[u64]) -> Vec<u32> {
    let total: u64 = powers.iter().sum();
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<u64> = powers.iter().map(|p| (p / scale).max(1)).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| weights[*b].cmp(&weights[*a]).then(a.cmp(b)));
    let flat: Vec<u32> = order
        .iter()
        .flat_map(|i| std::iter::repeat_n(*i as u32, weights[*i] as usize))
        .collect();
    let len = flat.len();
    let positions = (0..len).step_by(2).chain((1..len).step_by(2));
    let mut out = vec![0u32; len];
    for (pos, v) in positions.zip(flat) {
        out[pos] = v;
    }
    out
}

impl ValidatorSet {
    /// Builds a set; rejects an empty set, zero power, and duplicate keys.
    pub fn new(mut validators: Vec<Validator>) -> Result<Self, String> {
        if validators.is_empty() {
            return Err("the validator set is empty".into());
        }
        validators.sort_by_key(|v| v.address);
        if validators.windows(2).any(|w| w[0].address == w[1].address) {
            return Err("the validator set lists a key twice".into());
        }
        if let Some(v) = validators.iter().find(|v| v.voting_power == 0) {
            return Err(format!("validator {} has zero voting power", v.address));
        }
        let mut total: u64 = 0;
        for v in &validators {
            total = total
                .checked_add(v.voting_power)
                .ok_or("total voting power overflows u64")?;
        }
        let rows: Vec<([u8; 20], [u8; 32], u64)> = validators
            .iter()
            .map(|v| (v.address.0, *v.public_key.as_bytes(), v.voting_power))
            .collect();
        let enc = borsh::to_vec(&rows).map_err(|e| e.to_string())?;
        let hash = Hash::digest(&[b"baton/validator-set/v1", &enc]);
        let powers: Vec<u64> = validators.iter().map(|v| v.voting_power).collect();
        let schedule = proposer_schedule(&powers);
        Ok(ValidatorSet {
            validators,
            total_power: total,
            hash,
            schedule,
            active: Vec::new(),
        })
    }

    /// A set of equal-power validators (power 1 each).
    pub fn equal_power(keys: &[ed25519_consensus::VerificationKey]) -> Result<Self, String> {
        Self::new(keys.iter().map(|k| Validator::new(*k, 1)).collect())
    }

    /// The same set (same hash, same voting powers) with `benched` left out of the first rounds' proposer
    /// rotation. The bench is ignored when the benched validators hold more than a third of the power (or
    /// would leave nobody): a bench that large means the network itself is failing, and Tendermint's liveness
    /// needs every validator to get proposer turns.
    pub fn with_benched(&self, benched: &[Address]) -> ValidatorSet {
        let mut out = self.clone();
        let benched_power: u64 = self
            .validators
            .iter()
            .filter(|v| benched.contains(&v.address))
            .map(|v| v.voting_power)
            .sum();
        out.active = if benched.is_empty() || benched_power.saturating_mul(3) > self.total_power {
            Vec::new()
        } else {
            self.schedule
                .iter()
                .copied()
                .filter(|i| !benched.contains(&self.validators[*i as usize].address))
                .collect()
        };
        out
    }

    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    pub fn hash(&self) -> Hash {
        self.hash
    }

    pub fn total_power(&self) -> u64 {
        self.total_power
    }

    pub fn get(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by(|v| v.address.cmp(address))
            .ok()
            .map(|i| &self.validators[i])
    }

    /// The proposer of `(height, round)`: slot `height + round` of the rotation, so each validator proposes in
    /// proportion to its power and, unless it holds more than half the power, never for two consecutive rounds
    /// (a crashed proposer costs one timeout, not several in a row).
    ///
    /// Benched validators (see [`ValidatorSet::with_benched`]) are skipped in the first rounds, as many rounds
    /// as there are slots left without them; later rounds use the full rotation again, so that every validator
    /// (one holding a locked value among them) eventually proposes.
    pub fn proposer(&self, height: u64, round: u32) -> &Validator {
        let schedule = if self.active.is_empty() || round as usize >= self.active.len() {
            &self.schedule
        } else {
            &self.active
        };
        let slot = height.wrapping_add(u64::from(round)) % schedule.len() as u64;
        &self.validators[schedule[slot as usize] as usize]
    }
}

/// On the wire and on disk a set is its members (public key, voting power), sorted by address; decoding rebuilds
/// the rotation and refuses what [`ValidatorSet::new`] refuses (a bench is never encoded).
impl BorshSerialize for ValidatorSet {
    fn serialize<W: std::io::Write>(&self, writer: &mut W) -> std::io::Result<()> {
        let rows: Vec<([u8; 32], u64)> = self
            .validators
            .iter()
            .map(|v| (*v.public_key.as_bytes(), v.voting_power))
            .collect();
        BorshSerialize::serialize(&rows, writer)
    }
}

impl BorshDeserialize for ValidatorSet {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let rows: Vec<([u8; 32], u64)> = BorshDeserialize::deserialize_reader(reader)?;
        if rows.len() > MAX_VALIDATORS {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} validators, more than {MAX_VALIDATORS}", rows.len()),
            ));
        }
        let validators = rows
            .into_iter()
            .map(|(k, p)| {
                VerificationKey::try_from(k)
                    .map(|k| Validator::new(k, p))
                    .map_err(|e| {
                        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        ValidatorSet::new(validators)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// Most validators a decoded set may list.
pub const MAX_VALIDATORS: usize = 1024;

impl mct::ValidatorSet<BatonContext> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> u64 {
        self.total_power
    }

    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.get(address)
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

// ------------------------------------------------------------------------------------------------ Value

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

// ------------------------------------------------------------------------------------------------ Proposal / Vote

/// A signed proposal for `value` at `(height, round)`.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    pub value: Value,
    pub pol_round: Round,
    pub proposer: Address,
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

// ------------------------------------------------------------------------------------------------ Proposal parts

/// What travels on the proposal-parts gossip channel.
///
/// A proposal is a stream: `Init` (who, where, and the header), then the body in block order as `Data` (whole
/// bundles) and/or `Refs` (hashes of bundles the validators already hold from dissemination), then `Fin` (the
/// proposer's signature over height, round and block hash).
///
/// Outside proposal streams, the same channel carries dissemination: `Bundles` (checked bundles a node admitted,
/// sent to every peer ahead of any proposal) and `Want` (a validator missing bundles a proposal refers to asks the
/// proposer for them; the proposer answers with `Bundles`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ProposalPart {
    Init {
        height: Height,
        round: Round,
        pol_round: Round,
        proposer: Address,
        header: Box<BlockHeader>,
    },
    Data {
        bundles: Vec<Bundle>,
    },
    Fin {
        signature: Signature,
    },
    Refs {
        hashes: Vec<Hash>,
    },
    Bundles {
        bundles: Vec<Bundle>,
    },
    Want {
        proposer: Address,
        height: u64,
        round: u32,
        hashes: Vec<Hash>,
    },
    /// Misbehaviour evidence the block carries (between `Init` and `Fin`, only when there is some).
    Evidence {
        items: Vec<crate::evidence::Equivocation>,
    },
}

impl ProposalPart {
    /// Approximate encoded size, for stream and message bounds.
    pub fn size(&self) -> usize {
        match self {
            ProposalPart::Data { bundles } | ProposalPart::Bundles { bundles } => {
                bundles.iter().map(Bundle::encoded_len).sum::<usize>() + 8
            }
            ProposalPart::Refs { hashes } | ProposalPart::Want { hashes, .. } => {
                32 * hashes.len() + 40
            }
            ProposalPart::Init { .. } | ProposalPart::Fin { .. } => 256,
            ProposalPart::Evidence { items } => 256 * items.len() + 8,
        }
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

/// A validator's consensus key from its 32 bytes, if it can be one: a valid Ed25519 point that is not of small
/// order. A small-order key (the identity, or one of the seven other torsion points) has signatures that verify
/// under ZIP-215 for many messages without its holder signing them, so it is refused wherever a validator key
/// enters: genesis and staking registrations. The one rule for both.
pub fn validator_key(bytes: [u8; 32]) -> Result<VerificationKey, String> {
    let key = VerificationKey::try_from(bytes).map_err(|e| format!("not an Ed25519 key: {e}"))?;
    let small = curve25519_dalek_ng::edwards::CompressedEdwardsY(bytes)
        .decompress()
        .is_none_or(|p| p.is_small_order());
    if small {
        return Err("a small-order Ed25519 point cannot be a validator key".into());
    }
    Ok(key)
}

/// A validator as written in genesis: hex public key, power and the node's p2p address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    pub name: String,
    /// Ed25519 consensus public key, 32 bytes hex.
    pub public_key: String,
    pub voting_power: u64,
    /// libp2p multiaddr the validator listens on, e.g. `/ip4/127.0.0.1/tcp/26656`.
    pub p2p_addr: String,
    /// The validator's L1 attestation address (`0x…`, 20 bytes), required when genesis has an `[l1]` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attester: Option<String>,
}

impl GenesisValidator {
    pub fn to_validator(&self) -> Result<Validator, String> {
        let bytes = hex::decode(self.public_key.trim_start_matches("0x"))
            .map_err(|e| format!("validator {}: public_key is not hex: {e}", self.name))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "validator {}: public_key is {} bytes, an Ed25519 key has 32",
                self.name,
                b.len()
            )
        })?;
        let key = validator_key(bytes)
            .map_err(|e| format!("validator {}: public_key is {e}", self.name))?;
        Ok(Validator::new(key, self.voting_power))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_order_keys_are_refused_in_genesis() {
        let genesis = |key: [u8; 32]| GenesisValidator {
            name: "v".into(),
            public_key: hex::encode(key),
            voting_power: 1,
            p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
            attester: None,
        };
        let mut identity = [0u8; 32];
        identity[0] = 1;
        // The point of order 2 (y = -1) and the identity: valid encodings, small order.
        let mut order_two = [0xff; 32];
        order_two[0] = 0xec;
        order_two[31] = 0x7f;
        for key in [identity, order_two] {
            let err = genesis(key).to_validator().unwrap_err();
            assert!(err.contains("small-order"), "{err}");
        }
        let good = SigningKey::from([7; 32]).verification_key().to_bytes();
        genesis(good).to_validator().unwrap();
    }

    fn set(powers: &[u64]) -> ValidatorSet {
        let vals = powers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Validator::new(SigningKey::from([i as u8 + 1; 32]).verification_key(), *p)
            })
            .collect();
        ValidatorSet::new(vals).unwrap()
    }

    #[test]
    fn proposer_rotation_is_weighted_by_power() {
        let vs = set(&[1, 1, 2]);
        let mut counts = std::collections::HashMap::new();
        for h in 1..=400 {
            *counts.entry(vs.proposer(h, 0).address).or_insert(0) += 1;
        }
        let heavy = vs
            .validators()
            .iter()
            .find(|v| v.voting_power == 2)
            .unwrap()
            .address;
        assert_eq!(counts[&heavy], 200);
        for weights in [
            &[1, 1, 2][..],
            &[5, 4, 4, 4, 4],
            &[3, 1, 1, 1],
            &[1, 1, 1, 1],
        ] {
            let vs = set(weights);
            for h in 0..100 {
                assert_ne!(
                    vs.proposer(h, 0).address,
                    vs.proposer(h, 1).address,
                    "{weights:?} height {h}"
                );
            }
        }
        let equal = set(&[1, 1, 1, 1]);
        let firsts: std::collections::HashSet<_> =
            (1..=4).map(|h| equal.proposer(h, 0).address).collect();
        assert_eq!(firsts.len(), 4, "equal powers rotate through everyone");
    }

    #[test]
    fn huge_powers_are_scaled_into_a_bounded_schedule() {
        let vs = set(&[u64::MAX / 4, 1, 1_000_000]);
        assert!(vs.schedule.len() as u64 <= MAX_SCHEDULE + 3);
        let seen: std::collections::HashSet<_> = (0..vs.schedule.len() as u64)
            .map(|h| vs.proposer(h, 0).address)
            .collect();
        assert_eq!(seen.len(), 3, "every validator keeps a slot");
    }

    #[test]
    fn set_hash_depends_on_members_and_power() {
        assert_eq!(set(&[1, 1]).hash(), set(&[1, 1]).hash());
        assert_ne!(set(&[1, 1]).hash(), set(&[1, 2]).hash());
        assert_ne!(set(&[1, 1]).hash(), set(&[1, 1, 1]).hash());
        assert!(ValidatorSet::new(vec![]).is_err());
    }

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
