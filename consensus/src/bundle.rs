//! Signed bundles: what a rollup user submits.
//!
//! A bundle is signed by its sender's Ethereum (secp256k1) key over an [EIP-712] typed-data hash, so users sign
//! with the wallets they already have (`eth_signTypedData_v4`) and the network id in the EIP-712 domain keeps a
//! bundle signed for one Baton network from being replayed on another. The typed data is:
//!
//! ```text
//! domain:  EIP712Domain(string name,string version,uint256 chainId)  name = "Baton", version = "1",
//!          chainId = the network id from genesis
//! message: Bundle(address sender,uint64 nonce,uint64 expiryHeight,Entry[] entries)
//!          Entry(uint64 rollupId,bytes payload)
//! ```
//!
//! The signing hash is also the bundle's identity ([`Bundle::hash`]): it covers every field except the signature,
//! so the same bundle signed twice (ECDSA signatures are not unique) is still one bundle.
//!
//! [EIP-712]: https://eips.ethereum.org/EIPS/eip-712

use std::cell::Cell;
use std::sync::OnceLock;

use alloy_primitives::{keccak256, Address as EthAddress, Bytes, B256};
use alloy_sol_types::{Eip712Domain, SolStruct};
use borsh::{BorshDeserialize, BorshSerialize};

use crate::error::BundleError;
use crate::hash::Hash;
use crate::ids::RollupId;

/// A bundle sender: an Ethereum address.
pub type Sender = EthAddress;

/// The EIP-712 type definitions, as Solidity structs (alloy derives the type strings and hashing from them).
pub mod eip712 {
    alloy_sol_types::sol! {
        /// One entry of a bundle.
        struct Entry {
            uint64 rollupId;
            bytes payload;
        }
        /// A bundle as its sender signs it.
        struct Bundle {
            address sender;
            uint64 nonce;
            uint64 expiryHeight;
            Entry[] entries;
        }
    }
}

/// The EIP-712 domain bundles of a network are signed under.
pub fn bundle_domain(network_id: u64) -> Eip712Domain {
    alloy_sol_types::eip712_domain! {
        name: "Baton",
        version: "1",
        chain_id: network_id,
    }
}

/// The EIP-712 type hashes of `Entry` and `Bundle` ([`eip712`]), computed once.
fn type_hashes() -> &'static (B256, B256) {
    static HASHES: OnceLock<(B256, B256)> = OnceLock::new();
    HASHES.get_or_init(|| {
        (
            keccak256(eip712::Entry::eip712_encode_type().as_bytes()),
            keccak256(eip712::Bundle::eip712_encode_type().as_bytes()),
        )
    })
}

/// The EIP-712 domain separator of a network's bundles. Every bundle a node sees is normally for its own network,
/// so each thread keeps the last one it computed.
fn domain_separator(network_id: u64) -> B256 {
    thread_local! {
        static LAST: Cell<Option<(u64, B256)>> = const { Cell::new(None) };
    }
    LAST.with(|last| match last.get() {
        Some((id, separator)) if id == network_id => separator,
        _ => {
            let separator = bundle_domain(network_id).separator();
            last.set(Some((network_id, separator)));
            separator
        }
    })
}

/// One entry of a bundle: an opaque payload for one rollup.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug, BorshSerialize, BorshDeserialize)]
pub struct BundleEntry {
    pub rollup_id: RollupId,
    pub payload: Vec<u8>,
}

/// An ordered list of entries for one or more rollups, signed by its sender, included atomically: every entry
/// lands in the same block, contiguous and in bundle order within each rollup's batch, or none does.
///
/// Baton orders bundles; it does not execute them. "Atomic inclusion" is a guarantee about ordering, not about
/// the entries' effects on the rollups.
#[derive(Clone, PartialEq, Eq, Debug, BorshSerialize, BorshDeserialize)]
pub struct Bundle {
    /// The network the bundle is for (the EIP-712 domain's `chainId`).
    pub network_id: u64,
    pub sender: Sender,
    /// The sender's sequence number: bundles of one sender are included in nonce order, each nonce once.
    pub nonce: u64,
    /// The last height the bundle may be included at.
    pub expiry_height: u64,
    pub entries: Vec<BundleEntry>,
    /// `r ‖ s ‖ v` over [`Bundle::hash`], `v` in {0, 1, 27, 28}.
    pub signature: [u8; 65],
}

/// Encoded size of the fields before the entries: network id, sender, nonce, expiry, entry count.
const HEAD_LEN: usize = 8 + 20 + 8 + 8 + 4;
/// Encoded size of a bundle's fixed fields: those before the entries and the signature after them.
const FIXED_LEN: usize = HEAD_LEN + 65;
/// Encoded size of one entry besides its payload: rollup id and payload length.
const ENTRY_OVERHEAD: usize = 8 + 4;
/// Half the secp256k1 group order: the largest `s` of a canonical (EIP-2) signature.
const SECP256K1N_HALF: alloy_primitives::U256 = alloy_primitives::U256::from_be_slice(&[
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
]);

impl Bundle {
    /// The EIP-712 message of this bundle.
    pub fn typed(&self) -> eip712::Bundle {
        eip712::Bundle {
            sender: self.sender,
            nonce: self.nonce,
            expiryHeight: self.expiry_height,
            entries: self
                .entries
                .iter()
                .map(|e| eip712::Entry {
                    rollupId: e.rollup_id,
                    payload: Bytes::copy_from_slice(&e.payload),
                })
                .collect(),
        }
    }

    /// The bundle's identity and signing hash: the EIP-712 hash of everything but the signature.
    ///
    /// Computed here from the EIP-712 rules rather than through [`Bundle::typed`]: the type hashes and the
    /// domain separator are computed once instead of for every bundle and entry (64 type hashes for a 64-entry
    /// bundle), and payloads are hashed where they lie instead of being copied first. About half the cost for a
    /// 64-entry bundle (`examples/bundle_hashing.rs`); a test checks it against alloy's hashing of
    /// [`Bundle::typed`].
    pub fn hash(&self) -> Hash {
        let (entry_type, bundle_type) = type_hashes();
        // hashStruct(Entry) = keccak256(typeHash ‖ rollupId as a 32-byte word ‖ keccak256(payload)).
        let mut entry_hashes = Vec::with_capacity(32 * self.entries.len());
        let mut word = [0u8; 96];
        word[..32].copy_from_slice(entry_type.as_slice());
        for e in &self.entries {
            word[32..56].fill(0);
            word[56..64].copy_from_slice(&e.rollup_id.to_be_bytes());
            word[64..].copy_from_slice(keccak256(&e.payload).as_slice());
            entry_hashes.extend_from_slice(keccak256(word).as_slice());
        }
        // hashStruct(Bundle) = keccak256(typeHash ‖ sender ‖ nonce ‖ expiryHeight ‖ keccak256(entry hashes)),
        // each field a 32-byte word (the address and the integers right-aligned).
        let mut data = [0u8; 160];
        data[..32].copy_from_slice(bundle_type.as_slice());
        data[44..64].copy_from_slice(self.sender.as_slice());
        data[88..96].copy_from_slice(&self.nonce.to_be_bytes());
        data[120..128].copy_from_slice(&self.expiry_height.to_be_bytes());
        data[128..].copy_from_slice(keccak256(&entry_hashes).as_slice());
        let mut message = [0u8; 66];
        message[..2].copy_from_slice(&[0x19, 0x01]);
        message[2..34].copy_from_slice(domain_separator(self.network_id).as_slice());
        message[34..].copy_from_slice(keccak256(data).as_slice());
        Hash(keccak256(message).0)
    }

    /// Checks that the signature bytes are in the one canonical form Baton accepts, so that a bundle has exactly
    /// one encoding per identity: the recovery byte (the last) is 27 or 28, and `s` is in the lower half of the
    /// curve order (EIP-2). Without this, `v` values that recover the same key and the `(r, n - s)` twin of every
    /// signature would make byte-different copies of one bundle. Cheap; no recovery.
    pub fn check_signature_form(&self) -> Result<(), BundleError> {
        let v = self.signature[64];
        if v != 27 && v != 28 {
            return Err(BundleError::BadSignature {
                reason: format!("the recovery byte (the last of 65) must be 27 or 28, got {v}"),
            });
        }
        let s = alloy_primitives::U256::from_be_slice(&self.signature[32..64]);
        if s > SECP256K1N_HALF {
            return Err(BundleError::BadSignature {
                reason:
                    "s is in the upper half of the curve order (EIP-2): sign with a library that \
                         normalizes s"
                        .into(),
            });
        }
        Ok(())
    }

    /// Checks that the signature over `hash` (this bundle's [`Bundle::hash`]) recovers to `sender`. This is the
    /// expensive check (an ECDSA public-key recovery); callers that already checked a bundle skip it.
    pub fn verify_signature(&self, hash: &Hash) -> Result<(), BundleError> {
        let sig = alloy_primitives::Signature::from_raw_array(&self.signature).map_err(|e| {
            BundleError::BadSignature {
                reason: e.to_string(),
            }
        })?;
        let signer = sig
            .recover_address_from_prehash(&B256::from(hash.0))
            .map_err(|e| BundleError::BadSignature {
                reason: e.to_string(),
            })?;
        if signer != self.sender {
            return Err(BundleError::BadSignature {
                reason: format!(
                    "the signature recovers to {signer}, not to the sender {} (signed for another network id, \
                     or over other content?)",
                    self.sender
                ),
            });
        }
        Ok(())
    }

    /// Size of the bundle's canonical (borsh) encoding in bytes: what limits are counted in.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN
            + self
                .entries
                .iter()
                .map(|e| ENTRY_OVERHEAD + e.payload.len())
                .sum::<usize>()
    }

    /// Where each entry's payload lies in the bundle's canonical encoding: (offset, length) in entry order. The
    /// store keeps a decided block's encoding once and serves batches as slices of it.
    pub fn payload_spans(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut at = HEAD_LEN;
        self.entries.iter().map(move |e| {
            let span = (at + ENTRY_OVERHEAD, e.payload.len());
            at += ENTRY_OVERHEAD + e.payload.len();
            span
        })
    }

    /// Total payload bytes.
    pub fn payload_len(&self) -> usize {
        self.entries.iter().map(|e| e.payload.len()).sum()
    }
}

/// An unsigned bundle, to be signed by its sender.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct UnsignedBundle {
    pub network_id: u64,
    pub sender: Sender,
    pub nonce: u64,
    pub expiry_height: u64,
    pub entries: Vec<BundleEntry>,
}

impl UnsignedBundle {
    /// The hash the sender signs (equal to the signed bundle's [`Bundle::hash`]).
    pub fn signing_hash(&self) -> Hash {
        self.clone().with_signature([0; 65]).hash()
    }

    /// Attaches a signature produced elsewhere (a wallet, a hardware key, `alloy-signer`).
    pub fn with_signature(self, signature: [u8; 65]) -> Bundle {
        Bundle {
            network_id: self.network_id,
            sender: self.sender,
            nonce: self.nonce,
            expiry_height: self.expiry_height,
            entries: self.entries,
            signature,
        }
    }
}

#[cfg(any(test, feature = "test-utils"))]
pub mod testing {
    //! Signing helpers for tests (deterministic keys).
    use super::*;
    use alloy_signer::SignerSync;
    use alloy_signer_local::PrivateKeySigner;

    /// A deterministic test key for sender number `n`.
    pub fn key(n: u8) -> PrivateKeySigner {
        let mut k = [0u8; 32];
        k[31] = n;
        k[0] = 0x11;
        PrivateKeySigner::from_slice(&k).expect("valid key")
    }

    pub fn sign(key: &PrivateKeySigner, u: UnsignedBundle) -> Bundle {
        let h = u.signing_hash();
        let sig = key.sign_hash_sync(&B256::from(h.0)).expect("signs");
        u.with_signature(sig.as_bytes())
    }

    /// A signed bundle from sender `n` with `nonce` and one small entry per rollup.
    pub fn bundle(n: u8, nonce: u64, rollups: &[RollupId], tag: u8) -> Bundle {
        bundle_of(
            n,
            nonce,
            rollups
                .iter()
                .enumerate()
                .map(|(i, r)| BundleEntry {
                    rollup_id: *r,
                    payload: vec![tag, i as u8, 1],
                })
                .collect(),
        )
    }

    /// A signed bundle from sender `n` with `nonce` and these entries.
    pub fn bundle_of(n: u8, nonce: u64, entries: Vec<BundleEntry>) -> Bundle {
        let k = key(n);
        sign(
            &k,
            UnsignedBundle {
                network_id: 7,
                sender: k.address(),
                nonce,
                expiry_height: 1_000_000,
                entries,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use alloy_signer::SignerSync;

    /// [`Bundle::hash`] computes EIP-712 by hand; alloy's hashing of the typed message is the reference.
    #[test]
    fn the_hash_is_alloys_eip712_signing_hash() {
        let k = key(3);
        for (network_id, entries, payload_len) in [
            (7, 0, 0),
            (7, 1, 0),
            (7, 1, 1),
            (9, 3, 31),
            (7, 2, 32),
            (u64::MAX, 5, 33),
            (7, 64, 512),
            (1, 1, 1_000),
        ] {
            let b = UnsignedBundle {
                network_id,
                sender: k.address(),
                nonce: u64::MAX - entries as u64,
                expiry_height: 1_000_000 + payload_len as u64,
                entries: (0..entries)
                    .map(|i| BundleEntry {
                        rollup_id: (i as u64) << 40 | 3,
                        payload: (0..payload_len).map(|j| (i * 7 + j) as u8).collect(),
                    })
                    .collect(),
            }
            .with_signature([0; 65]);
            let reference = b.typed().eip712_signing_hash(&bundle_domain(network_id));
            assert_eq!(
                b.hash().0,
                reference.0,
                "{network_id} {entries} {payload_len}"
            );
        }
    }

    #[test]
    fn encoded_len_matches_borsh() {
        let b = bundle(1, 0, &[1, 7, 2], 9);
        assert_eq!(b.encoded_len(), borsh::to_vec(&b).unwrap().len());
    }

    #[test]
    fn payload_spans_point_into_the_encoding() {
        let mut b = bundle(1, 0, &[1, 7, 2], 9);
        for (i, e) in b.entries.iter_mut().enumerate() {
            e.payload = (0..(i * 37 + 1)).map(|j| (i * 7 + j) as u8).collect();
        }
        let enc = borsh::to_vec(&b).unwrap();
        let spans: Vec<_> = b.payload_spans().collect();
        assert_eq!(spans.len(), b.entries.len());
        for ((at, len), e) in spans.into_iter().zip(&b.entries) {
            assert_eq!(&enc[at..at + len], e.payload.as_slice());
        }
    }

    /// One identity, one encoding: other recovery bytes and the high-s twin recover the same sender (so
    /// recovery alone would accept them) but are refused by the form check.
    #[test]
    fn only_the_canonical_signature_form_is_accepted() {
        let b = bundle(3, 5, &[1, 2], 1);
        b.check_signature_form().unwrap();
        assert!(b.signature[64] == 27 || b.signature[64] == 28);
        for v in [0u8, 1, 29, 255] {
            let mut t = b.clone();
            t.signature[64] = v;
            assert!(t.check_signature_form().is_err(), "v = {v}");
        }
        // (r, n - s) with the other parity is the same signature over the same hash.
        let n = alloy_primitives::U256::from_str_radix(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141",
            16,
        )
        .unwrap();
        let s = alloy_primitives::U256::from_be_slice(&b.signature[32..64]);
        let mut twin = b.clone();
        twin.signature[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
        twin.signature[64] = if b.signature[64] == 27 { 28 } else { 27 };
        assert_eq!(twin.hash(), b.hash());
        twin.verify_signature(&twin.hash()).unwrap();
        assert!(matches!(
            twin.check_signature_form(),
            Err(BundleError::BadSignature { .. })
        ));
    }

    #[test]
    fn signature_round_trip_and_tampering() {
        let b = bundle(3, 5, &[1, 2], 1);
        let h = b.hash();
        b.verify_signature(&h).unwrap();

        // The hash is the typed-data hash a wallet computes through `eth_signTypedData_v4`.
        let k = key(3);
        let via_wallet = k
            .sign_typed_data_sync(&b.typed(), &bundle_domain(7))
            .unwrap();
        assert_eq!(
            via_wallet
                .recover_address_from_prehash(&B256::from(h.0))
                .unwrap(),
            k.address()
        );

        let mut t = b.clone();
        t.entries[0].payload[0] ^= 1;
        assert!(matches!(
            t.verify_signature(&t.hash()),
            Err(BundleError::BadSignature { .. })
        ));
        let mut t = b.clone();
        t.network_id = 8;
        assert!(t.verify_signature(&t.hash()).is_err());
        let mut t = b.clone();
        t.nonce += 1;
        assert!(t.verify_signature(&t.hash()).is_err());
        let mut t = b.clone();
        t.sender = key(4).address();
        assert!(t.verify_signature(&t.hash()).is_err());
        let mut t = b.clone();
        t.signature[64] = 9;
        assert!(t.verify_signature(&h).is_err());
    }

    #[test]
    fn identity_ignores_the_signature() {
        let b = bundle(1, 0, &[1], 1);
        let mut other = b.clone();
        other.signature = [7; 65];
        assert_eq!(b.hash(), other.hash());
    }
}
