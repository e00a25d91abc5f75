//! Test fixtures for every crate's tests (feature `test-utils`; always on in this crate's own tests): validator
//! keys and sets, a block context, a placeholder header, a certificate signed as validators sign precommits, and a
//! decided block with everything `ChainStore::commit` takes. A test states what it is about and takes the rest
//! from here, instead of building headers and contexts field by field.

use ed25519_consensus::SigningKey;
use malachitebft_core_types::VoteType;

use crate::block::{build_block, BlockContext};
use crate::bundle::Bundle;
use crate::hash::Hash;
use crate::ids::Address;
use crate::registry::ChainSpec;
use crate::signing::ChainDomain;
use crate::types::NamespaceEntry;
use crate::types::{batches_of, namespace_table, Batches, Block, BlockHeader, Certificate};
use crate::validators::{Validator, ValidatorSet};

/// `n` deterministic validator keys; key `i` is the bytes `[seed + i; 32]`.
pub fn validator_keys(seed: u8, n: usize) -> Vec<SigningKey> {
    (0..n)
        .map(|i| SigningKey::from([seed.wrapping_add(i as u8); 32]))
        .collect()
}

/// The set of `keys`, one unit of power each.
pub fn validator_set(keys: &[SigningKey]) -> ValidatorSet {
    ValidatorSet::new(
        keys.iter()
            .map(|k| Validator::new(k.verification_key(), 1))
            .collect(),
    )
    .expect("a set of distinct keys with power 1 is valid")
}

/// The address a validator key signs as.
pub fn address_of(key: &SigningKey) -> Address {
    Validator::new(key.verification_key(), 1).address
}

/// The context of building `height` in round 0 over `validators` (which also decide the next height), on a parent
/// named by its height, with no bench, no L1 origin, no evidence and every validator seen voting.
pub fn block_context(height: u64, validators: ValidatorSet) -> BlockContext {
    BlockContext {
        height,
        round: 0,
        parent_hash: Hash::digest(&[b"parent", &height.to_le_bytes()]),
        parent_timestamp_ms: 1_700_000_000_000 + height.saturating_sub(1),
        validator_set_hash: validators.hash(),
        parent_bench: Default::default(),
        parent_l1_origin: Default::default(),
        l1_origin: Default::default(),
        next_validators: validators.clone(),
        evidence: vec![],
        unseen: vec![],
        validators,
    }
}

/// A well-formed header of an empty block at `height` whose roots are placeholders (distinct per height); for
/// tests about what carries a header, not about what it commits to. Override fields with `..header(h)`.
pub fn header(height: u64) -> BlockHeader {
    let h = height.to_le_bytes();
    BlockHeader {
        height,
        parent_hash: Hash::digest(&[b"parent", &h]),
        timestamp_ms: 1_700_000_000_000 + height,
        proposer: Address([3; 20]),
        validator_set_hash: Hash::digest(&[b"set"]),
        bundles_root: Hash::digest(&[b"bundles", &h]),
        namespace_root: Hash::digest(&[b"namespaces", &h]),
        namespace_count: 2,
        bundle_count: 0,
        round: 0,
        bench: Default::default(),
        l1_origin: Default::default(),
        next_validator_set_hash: Hash::digest(&[b"set"]),
        evidence_root: Hash::ZERO,
    }
}

/// A commit certificate for `block_hash` at `height` and `round`, with a precommit signed by each of `signers`
/// exactly as a validator signs one ([`ChainDomain::vote_bytes`]).
pub fn certify(
    domain: &ChainDomain,
    height: u64,
    round: u32,
    block_hash: Hash,
    signers: &[SigningKey],
) -> Certificate {
    Certificate {
        height,
        round,
        block_hash,
        signatures: signers
            .iter()
            .map(|k| {
                let who = address_of(k);
                let msg =
                    domain.vote_bytes(VoteType::Precommit, height, round, Some(block_hash), &who);
                (who, k.sign(&msg).to_bytes())
            })
            .collect(),
    }
}

/// A block decided by `signers`, with what `ChainStore::commit` stores alongside it.
#[derive(Clone, Debug)]
pub struct Decided {
    pub block: Block,
    pub bundle_hashes: Vec<Hash>,
    pub batches: Batches,
    pub table: Vec<NamespaceEntry>,
    pub cert: Certificate,
}

/// Builds the block of `ctx` from `bundles` (proposed by the first signer at the parent's time + 10 ms) and has
/// `signers` certify it.
pub fn decide(
    ctx: &BlockContext,
    spec: &ChainSpec,
    domain: &ChainDomain,
    bundles: Vec<Bundle>,
    signers: &[SigningKey],
) -> Decided {
    let bundle_hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
    let proposer = signers.first().map(address_of).unwrap_or_default();
    let block = build_block(
        ctx,
        spec,
        proposer,
        ctx.parent_timestamp_ms + 10,
        bundles,
        &bundle_hashes,
    )
    .block;
    let batches = batches_of(&block.bundles, &bundle_hashes);
    let table = namespace_table(spec.rollups.ids(), &batches);
    let cert = certify(domain, ctx.height, ctx.round, block.hash(), signers);
    Decided {
        block,
        bundle_hashes,
        batches,
        table,
        cert,
    }
}
