//! Ordering commitments and the validators' L1 attestations of them.
//!
//! A commitment is a decided Baton header. Each validator holds an L1 secp256k1 *attestation key* (separate from
//! its Ed25519 consensus key) and signs the EIP-712 message `Commitment(uint64 height,bytes32 blockHash)` under the
//! domain `{name: "BatonCommitments", version: "1", chainId: <L1 chain id>, verifyingContract: <commitments>}`.
//! The signature needs only the height and block hash, both known when a validator precommits, so it can ride on
//! the precommit as a vote extension. The contract recomputes the block hash from the header and reads the
//! batches root and validator-set hash from it, so those are bound by the same signatures.

use alloy::primitives::{Address as EthAddress, Bytes, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::{Eip712Domain, SolStruct};
use baton_consensus::hash::Hash;
use baton_consensus::types::BlockHeader;

use crate::error::L1Error;

alloy::sol! {
    /// The message attesters sign.
    struct Commitment {
        uint64 height;
        bytes32 blockHash;
    }
}

/// Where attestations are valid: one commitments contract on one L1 chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttestationDomain {
    pub l1_chain_id: u64,
    pub contract: EthAddress,
}

impl AttestationDomain {
    fn eip712(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some("BatonCommitments".into()),
            Some("1".into()),
            Some(U256::from(self.l1_chain_id)),
            Some(self.contract),
            None,
        )
    }

    /// The 32-byte digest an attester signs for `(height, block_hash)`.
    pub fn digest(&self, height: u64, block_hash: Hash) -> B256 {
        Commitment {
            height,
            blockHash: B256::from(block_hash.0),
        }
        .eip712_signing_hash(&self.eip712())
    }

    /// Signs `(height, block_hash)` with an attestation key: `r ‖ s ‖ v`, `v` in {27, 28}, low `s`.
    pub fn sign(
        &self,
        key: &PrivateKeySigner,
        height: u64,
        block_hash: Hash,
    ) -> Result<[u8; 65], L1Error> {
        let sig = key
            .sign_hash_sync(&self.digest(height, block_hash))
            .map_err(|e| L1Error::Signing(e.to_string()))?;
        Ok(sig.as_bytes())
    }

    /// The attester that produced `signature` over `(height, block_hash)`; refuses non-canonical forms the
    /// contract would refuse (high `s`, `v` not 27/28).
    pub fn recover(
        &self,
        height: u64,
        block_hash: Hash,
        signature: &[u8; 65],
        index: usize,
    ) -> Result<EthAddress, L1Error> {
        let bad = |reason: &str| L1Error::BadAttestation {
            index,
            reason: reason.into(),
        };
        if !matches!(signature[64], 27 | 28) {
            return Err(bad("recovery byte must be 27 or 28"));
        }
        let sig =
            alloy::primitives::Signature::from_raw(signature).map_err(|e| bad(&e.to_string()))?;
        if sig.normalize_s().is_some() {
            return Err(bad("s is in the upper half of the curve order"));
        }
        sig.recover_address_from_prehash(&self.digest(height, block_hash))
            .map_err(|e| bad(&e.to_string()))
    }
}

/// An L1 attester and its voting power (the power of the validator whose attestation key it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attester {
    pub address: EthAddress,
    pub power: u64,
}

/// The next set's members, for `BatonCommitments.rotate`: Ed25519 keys in the set's (address) order, and powers.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rotation {
    pub keys: Vec<B256>,
    pub powers: Vec<u64>,
}

/// A decided header with attestations, ready to be posted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCommitment {
    pub header: BlockHeader,
    /// `(attester, signature)`, any order; [`SignedCommitment::calldata`] sorts them as the contract wants.
    pub signatures: Vec<(EthAddress, [u8; 65])>,
    /// With the next set's members, the commitment of an epoch's last block that moves the contract to that set
    /// (posted with `rotate` instead of `commit`).
    pub rotation: Option<Rotation>,
}

impl SignedCommitment {
    pub fn height(&self) -> u64 {
        self.header.height
    }

    pub fn block_hash(&self) -> Hash {
        self.header.hash()
    }

    /// Keeps only signatures that recover to a listed attester (one each) and checks that they carry more than
    /// 2/3 of the attesters' power: what the contract would accept.
    pub fn verified(
        header: BlockHeader,
        signatures: impl IntoIterator<Item = [u8; 65]>,
        domain: &AttestationDomain,
        attesters: &[Attester],
    ) -> Result<SignedCommitment, L1Error> {
        let hash = header.hash();
        let total: u64 = attesters.iter().map(|a| a.power).sum();
        let mut kept: Vec<(EthAddress, [u8; 65])> = Vec::new();
        for (i, sig) in signatures.into_iter().enumerate() {
            let Ok(signer) = domain.recover(header.height, hash, &sig, i) else {
                continue;
            };
            if attesters.iter().any(|a| a.address == signer)
                && !kept.iter().any(|(a, _)| *a == signer)
            {
                kept.push((signer, sig));
            }
        }
        let signed: u64 = kept
            .iter()
            .filter_map(|(a, _)| attesters.iter().find(|x| x.address == *a))
            .map(|a| a.power)
            .sum();
        if u128::from(signed) * 3 <= u128::from(total) * 2 {
            return Err(L1Error::InsufficientPower { signed, total });
        }
        let mut c = SignedCommitment {
            header,
            signatures: kept,
            rotation: None,
        };
        c.signatures.sort_by_key(|(a, _)| *a);
        Ok(c)
    }

    /// The header as the contract reads it (borsh, exactly as validators hashed it).
    pub fn header_bytes(&self) -> Bytes {
        Bytes::from(borsh::to_vec(&self.header).unwrap_or_default())
    }

    /// The call that posts it: `BatonCommitments.commit(header, signatures)` with signers ascending, or `rotate`
    /// with the next set's members.
    pub fn calldata(&self) -> Bytes {
        use alloy::sol_types::SolCall;
        let mut sigs = self.signatures.clone();
        sigs.sort_by_key(|(a, _)| *a);
        sigs.dedup_by_key(|(a, _)| *a);
        let signatures: Vec<Bytes> = sigs
            .into_iter()
            .map(|(_, s)| Bytes::copy_from_slice(&s))
            .collect();
        match &self.rotation {
            None => crate::contracts::BatonCommitments::commitCall {
                header: self.header_bytes(),
                signatures,
            }
            .abi_encode()
            .into(),
            Some(r) => crate::contracts::BatonCommitments::rotateCall {
                header: self.header_bytes(),
                signatures,
                keys: r.keys.clone(),
                powers: r.powers.clone(),
            }
            .abi_encode()
            .into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_consensus::fixtures::header;

    #[test]
    fn header_prefix_offsets_match_the_contract() {
        // The contract reads height at 0, the validator-set hash at 68 and the namespace root at 132.
        let h = header(0x0102030405060708);
        let b = borsh::to_vec(&h).unwrap();
        assert_eq!(&b[0..8], &0x0102030405060708u64.to_le_bytes());
        assert_eq!(&b[68..100], &h.validator_set_hash.0);
        assert_eq!(&b[132..164], &h.namespace_root.0);
    }

    #[test]
    fn attestations_recover_and_power_is_counted() {
        let domain = AttestationDomain {
            l1_chain_id: 31337,
            contract: EthAddress::repeat_byte(9),
        };
        let keys: Vec<PrivateKeySigner> = (1..=4u8)
            .map(|i| PrivateKeySigner::from_bytes(&B256::repeat_byte(i)).unwrap())
            .collect();
        let attesters: Vec<Attester> = keys
            .iter()
            .map(|k| Attester {
                address: k.address(),
                power: 1,
            })
            .collect();
        let h = header(10);
        let sig = |k: &PrivateKeySigner| domain.sign(k, 10, h.hash()).unwrap();
        assert_eq!(
            domain.recover(10, h.hash(), &sig(&keys[0]), 0).unwrap(),
            keys[0].address()
        );
        // Another height or another contract recovers someone else.
        assert_ne!(
            domain.recover(11, h.hash(), &sig(&keys[0]), 0).unwrap(),
            keys[0].address()
        );
        // 3 of 4 is enough, 2 of 4 is not, a duplicate does not count twice.
        let three: Vec<_> = keys[..3].iter().map(sig).collect();
        let c = SignedCommitment::verified(h.clone(), three, &domain, &attesters).unwrap();
        assert_eq!(c.signatures.len(), 3);
        assert!(c.signatures.windows(2).all(|w| w[0].0 < w[1].0));
        let dup = vec![sig(&keys[0]), sig(&keys[0]), sig(&keys[1])];
        assert!(matches!(
            SignedCommitment::verified(h.clone(), dup, &domain, &attesters),
            Err(L1Error::InsufficientPower {
                signed: 2,
                total: 4
            })
        ));
        // A high-s twin of a valid signature is refused.
        let mut high = sig(&keys[0]);
        let s = U256::from_be_slice(&high[32..64]);
        let n = U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .unwrap();
        high[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
        high[64] ^= 1;
        assert!(domain.recover(10, h.hash(), &high, 0).is_err());
    }
}
