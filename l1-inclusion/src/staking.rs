//! Reading `BatonStaking` events as the staking events Baton's set function folds
//! ([`baton_consensus::epoch`]).
//!
//! Each log of the staking contract becomes a [`PositionedEvent`] keyed by its consensus key, positioned by its
//! transaction and log index; [`by_block`] groups a range's events per L1 block, the unit
//! [`baton_consensus::epoch::CandidateTable::apply_block`] takes. Allowlist and governance events change who may
//! register, not the table, and are not returned.
//!
//! A registration counts only with a valid proof of possession ([`proof_message`]): the consensus key's Ed25519
//! signature binding the staking contract, the key, its owner and its attester. The EVM cannot check Ed25519, so
//! the contract publishes the proof and every node checks it here, where the events enter the set function: a
//! registration without a valid proof is dropped (with a warning), so nobody can give themselves a key's place
//! by registering a key they do not hold. The attester's side is checked on-chain ([`attester_digest`]).

use std::collections::BTreeMap;

use alloy::primitives::{keccak256, Address as EthAddress, B256, U256};
use alloy::rpc::types::Log;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::{SolEvent, SolValue};
use baton_consensus::epoch::{PositionedEvent, StakeEvent};

use crate::contracts::BatonStaking;
use crate::error::L1Error;

/// The domain tag of a proof of possession (as `BatonStaking.proofMessage` writes it).
pub const PROOF_TAG: &[u8] = b"baton/staking/proof-of-possession/v1";

/// What a consensus key signs to prove it agrees to be registered in `staking` by `owner` with `attester`:
/// `PROOF_TAG || staking || key || owner || attester` (`BatonStaking.proofMessage`).
pub fn proof_message(
    staking: EthAddress,
    key: B256,
    owner: EthAddress,
    attester: EthAddress,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(PROOF_TAG.len() + 92);
    m.extend_from_slice(PROOF_TAG);
    m.extend_from_slice(staking.as_slice());
    m.extend_from_slice(key.as_slice());
    m.extend_from_slice(owner.as_slice());
    m.extend_from_slice(attester.as_slice());
    m
}

/// The proof of possession `key` gives for its registration in `staking` by `owner` with `attester`.
pub fn prove(
    key: &ed25519_consensus::SigningKey,
    staking: EthAddress,
    owner: EthAddress,
    attester: EthAddress,
) -> [u8; 64] {
    let public = B256::from(key.verification_key().to_bytes());
    key.sign(&proof_message(staking, public, owner, attester))
        .to_bytes()
}

/// Whether `proof` is `key`'s valid proof of possession for this registration (a key that is not a valid,
/// non-small-order Ed25519 point has none).
pub fn proven(
    staking: EthAddress,
    key: B256,
    owner: EthAddress,
    attester: EthAddress,
    proof: &[u8],
) -> bool {
    let (Ok(vk), Ok(sig)) = (
        baton_consensus::validators::validator_key(key.0),
        <[u8; 64]>::try_from(proof).map(ed25519_consensus::Signature::from),
    ) else {
        return false;
    };
    vk.verify(&sig, &proof_message(staking, key, owner, attester))
        .is_ok()
}

/// What an attester signs (raw ECDSA over the digest) to agree to serve `key` registered by `owner` in `staking`
/// on chain `chain_id` (`BatonStaking.attesterDigest`).
pub fn attester_digest(chain_id: u64, staking: EthAddress, key: B256, owner: EthAddress) -> B256 {
    keccak256(
        (
            keccak256("baton/staking/attester/v1"),
            U256::from(chain_id),
            staking,
            key,
            owner,
        )
            .abi_encode(),
    )
}

/// `attester`'s 65-byte agreement to serve `key` registered by `owner` (see [`attester_digest`]).
pub fn attester_signature(
    attester: &PrivateKeySigner,
    chain_id: u64,
    staking: EthAddress,
    key: B256,
    owner: EthAddress,
) -> Result<[u8; 65], L1Error> {
    let sig = attester
        .sign_hash_sync(&attester_digest(chain_id, staking, key, owner))
        .map_err(|e| L1Error::Config(format!("signing the attester's agreement: {e}")))?;
    Ok(sig.as_bytes())
}

/// The staking event in `log`, if it is one the set function uses (a registration only with a valid proof of
/// possession).
pub fn decode(log: &Log) -> Option<(u64, PositionedEvent)> {
    let block = log.block_number?;
    let event = match *log.topic0()? {
        t if t == BatonStaking::Registered::SIGNATURE_HASH => {
            let e = BatonStaking::Registered::decode_log_data(log.data()).ok()?;
            if !proven(log.address(), e.consensusKey, e.owner, e.attester, &e.proof) {
                tracing::warn!(
                    key = %e.consensusKey,
                    owner = %e.owner,
                    block,
                    "staking registration without a valid proof of possession of its consensus key: ignored"
                );
                return None;
            }
            StakeEvent::Registered {
                key: e.consensusKey.0,
                attester: e.attester.0 .0,
                stake: u128::try_from(e.amount).unwrap_or(u128::MAX),
            }
        }
        t if t == BatonStaking::Increased::SIGNATURE_HASH => {
            let e = BatonStaking::Increased::decode_log_data(log.data()).ok()?;
            StakeEvent::Increased {
                key: e.consensusKey.0,
                amount: u128::try_from(e.amount).unwrap_or(u128::MAX),
            }
        }
        t if t == BatonStaking::ExitRequested::SIGNATURE_HASH => {
            let e = BatonStaking::ExitRequested::decode_log_data(log.data()).ok()?;
            StakeEvent::ExitRequested {
                key: e.consensusKey.0,
            }
        }
        t if t == BatonStaking::Withdrawn::SIGNATURE_HASH => {
            let e = BatonStaking::Withdrawn::decode_log_data(log.data()).ok()?;
            StakeEvent::Withdrawn {
                key: e.consensusKey.0,
            }
        }
        _ => return None,
    };
    Some((
        block,
        PositionedEvent {
            tx_index: log.transaction_index?,
            log_index: log.log_index?,
            event,
        },
    ))
}

/// The staking events of `logs`, grouped by L1 block (ascending).
pub fn by_block(logs: &[Log]) -> BTreeMap<u64, Vec<PositionedEvent>> {
    let mut out: BTreeMap<u64, Vec<PositionedEvent>> = BTreeMap::new();
    for (block, e) in logs.iter().filter_map(decode) {
        out.entry(block).or_default().push(e);
    }
    out
}
