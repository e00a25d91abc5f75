//! Verifiable batches: what lets a rollup operator check a batch it pulled without trusting the node it pulled
//! it from.
//!
//! A batch is proven in three links:
//! 1. its entries hash to a batch root (RFC 6962 tree over the entries, [`batch_root`]);
//! 2. the row `(rollup id, batch root, entry count)` sits in the header's namespace table: a Merkle audit path to
//!    `header.namespace_root` ([`NamespaceProof`]);
//! 3. the header's hash was decided: a commit certificate carrying precommit signatures of more than two thirds of
//!    the voting power of the validator set the header names ([`verify_certificate`]).
//!
//! The verifier is given the validator set (from genesis or an earlier verified source); it never takes the set
//! from the node it checks.

use std::collections::HashSet;

use borsh::{BorshDeserialize, BorshSerialize};
use malachitebft_core_types::VoteType;

use crate::error::ProofError;
use crate::hash::{merkle_proof, verify_merkle_proof, Hash};
use crate::ids::RollupId;
use crate::signing::{verify_signature, ChainDomain, Signature};
use crate::types::{batch_root, Certificate, NamespaceEntry, RollupBatch};
use crate::validators::ValidatorSet;

/// The audit path of one rollup's row in a block's namespace table.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct NamespaceProof {
    /// Position of the row in the table.
    pub index: u32,
    /// Sibling hashes from the row up to the root.
    pub path: Vec<Hash>,
}

impl NamespaceProof {
    /// Bytes the proof takes on the wire (index plus 32 per sibling).
    pub fn size(&self) -> usize {
        4 + 32 * self.path.len()
    }
}

/// Builds the proof for `rollup_id` from a block's namespace table. `None` if the rollup has no row.
pub fn namespace_proof(table: &[NamespaceEntry], rollup_id: RollupId) -> Option<NamespaceProof> {
    let index = table.iter().position(|e| e.rollup_id == rollup_id)?;
    let leaves: Vec<Hash> = table.iter().map(NamespaceEntry::leaf).collect();
    Some(NamespaceProof {
        index: index as u32,
        path: merkle_proof(&leaves, index)?,
    })
}

/// Checks that `cert` decides `block_hash` at `height` with more than two thirds of the voting power of
/// `validators`, every signature valid and from a distinct member of the set.
pub fn verify_certificate(
    cert: &Certificate,
    height: u64,
    block_hash: &Hash,
    validators: &ValidatorSet,
    domain: &ChainDomain,
) -> Result<(), ProofError> {
    if cert.height != height || cert.block_hash != *block_hash {
        return Err(ProofError::CertificateForOtherBlock {
            got_height: cert.height,
            got_hash: cert.block_hash,
            height,
            hash: *block_hash,
        });
    }
    let mut seen = HashSet::with_capacity(cert.signatures.len());
    let mut power: u64 = 0;
    for (address, sig) in &cert.signatures {
        let v = validators
            .get(address)
            .ok_or_else(|| ProofError::UnknownSigner(address.to_hex()))?;
        if !seen.insert(*address) {
            return Err(ProofError::DuplicateSigner(address.to_hex()));
        }
        let msg = domain.vote_bytes(
            VoteType::Precommit,
            cert.height,
            cert.round,
            Some(cert.block_hash),
            address,
        );
        if !verify_signature(&v.public_key, &msg, &Signature(*sig)) {
            return Err(ProofError::BadSignature(address.to_hex()));
        }
        power = power.saturating_add(v.voting_power);
    }
    let total = validators.total_power();
    if u128::from(power) * 3 <= u128::from(total) * 2 {
        return Err(ProofError::NoQuorum { got: power, total });
    }
    Ok(())
}

/// Checks a served batch end to end: entries -> batch root -> namespace row -> header -> certificate.
pub fn verify_batch(
    batch: &RollupBatch,
    proof: &NamespaceProof,
    cert: &Certificate,
    validators: &ValidatorSet,
    domain: &ChainDomain,
) -> Result<(), ProofError> {
    let header = &batch.header;
    let hash = header.hash();
    if batch.block_hash != hash {
        return Err(ProofError::BlockHashMismatch);
    }
    if header.validator_set_hash != validators.hash() {
        return Err(ProofError::OtherValidatorSet {
            got: header.validator_set_hash,
            expected: validators.hash(),
        });
    }
    for (index, e) in batch.entries.iter().enumerate() {
        if e.payload.is_empty() {
            return Err(ProofError::BadEntry {
                index,
                reason: "empty payload".into(),
            });
        }
    }
    let row = NamespaceEntry {
        rollup_id: batch.rollup_id,
        batch_root: batch_root(&batch.entries),
        entry_count: batch.entries.len() as u32,
    };
    if !verify_merkle_proof(
        &row.leaf(),
        u64::from(proof.index),
        u64::from(header.namespace_count),
        &proof.path,
        &header.namespace_root,
    ) {
        return Err(ProofError::BadNamespaceProof);
    }
    verify_certificate(cert, header.height, &hash, validators, domain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::build_block;
    use crate::bundle::testing::bundle;
    use crate::bundle::Bundle;
    use crate::fixtures;
    use crate::ids::Address;
    use crate::registry::ChainSpec;
    use crate::types::{batches_of, namespace_table, BatchEntry};
    use ed25519_consensus::SigningKey;

    struct Fixture {
        keys: Vec<SigningKey>,
        vs: ValidatorSet,
        domain: ChainDomain,
        batch: RollupBatch,
        proof: NamespaceProof,
        cert: Certificate,
    }

    fn fixture() -> Fixture {
        let keys: Vec<SigningKey> = (0..4u8).map(|i| SigningKey::from([i + 40; 32])).collect();
        let vs = fixtures::validator_set(&keys);
        let domain = ChainDomain::new("proof-test");
        let spec = ChainSpec::for_tests(7, 5);
        let bundles: Vec<Bundle> = vec![
            bundle(1, 0, &[1, 3], 1),
            bundle(2, 0, &[3, 3, 2], 2),
            bundle(3, 0, &[5], 3),
        ];
        let hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
        let ctx = fixtures::block_context(9, vs.clone());
        let block = build_block(
            &ctx,
            &spec,
            Address([1; 20]),
            ctx.parent_timestamp_ms + 5,
            bundles,
            &hashes,
        )
        .block;
        let batches = batches_of(&block.bundles, &hashes);
        let table = namespace_table(spec.rollups.ids(), &batches);
        let proof = namespace_proof(&table, 3).unwrap();
        let batch = RollupBatch {
            rollup_id: 3,
            header: block.header.clone(),
            block_hash: block.hash(),
            entries: batches[&3].clone(),
        };
        let cert = fixtures::certify(&domain, 9, 1, block.hash(), &keys[..3]);
        Fixture {
            keys,
            vs,
            domain,
            batch,
            proof,
            cert,
        }
    }

    fn check(f: &Fixture) -> Result<(), ProofError> {
        verify_batch(&f.batch, &f.proof, &f.cert, &f.vs, &f.domain)
    }

    #[test]
    fn untampered_batch_verifies_and_empty_batches_have_proofs_too() {
        let f = fixture();
        check(&f).unwrap();
        assert_eq!(f.batch.entries.len(), 3);
        // Rollup 4 has nothing in this block: its empty batch is still proven.
        let table_len = f.batch.header.namespace_count;
        assert_eq!(table_len, 5);
        println!(
            "namespace proof {} bytes for {} rollups; certificate {} bytes",
            f.proof.size(),
            table_len,
            borsh::to_vec(&f.cert).unwrap().len()
        );
    }

    #[test]
    fn every_byte_of_entries_proof_and_certificate_is_covered() {
        let f = fixture();
        let enc = borsh::to_vec(&(&f.batch.entries, &f.proof, &f.cert)).unwrap();
        let mut checked = 0;
        for i in 0..enc.len() {
            for bit in [0x01u8, 0x80] {
                let mut t = enc.clone();
                t[i] ^= bit;
                let Ok((entries, proof, cert)) =
                    borsh::from_slice::<(Vec<BatchEntry>, NamespaceProof, Certificate)>(&t)
                else {
                    continue; // undecodable: rejected before verification
                };
                let batch = RollupBatch {
                    entries,
                    ..f.batch.clone()
                };
                assert!(
                    verify_batch(&batch, &proof, &cert, &f.vs, &f.domain).is_err(),
                    "flipping bit {bit:#x} of byte {i} was not detected"
                );
                checked += 1;
            }
        }
        assert!(
            checked > enc.len(),
            "most flips decode and must be caught by verification"
        );
        // The header is covered by the certificate: any header field change breaks the hash.
        let mut b = f.batch.clone();
        b.header.timestamp_ms += 1;
        b.block_hash = b.header.hash();
        assert!(matches!(
            verify_batch(&b, &f.proof, &f.cert, &f.vs, &f.domain),
            Err(ProofError::CertificateForOtherBlock { .. })
        ));
        // Another rollup's id on these entries.
        let mut b = f.batch.clone();
        b.rollup_id = 2;
        assert_eq!(
            verify_batch(&b, &f.proof, &f.cert, &f.vs, &f.domain),
            Err(ProofError::BadNamespaceProof)
        );
    }

    #[test]
    fn short_or_foreign_certificates_are_refused() {
        let f = fixture();
        let hash = f.batch.block_hash;
        // Two of four validators: exactly half, not more than two thirds.
        let short = fixtures::certify(&f.domain, 9, 1, hash, &f.keys[..2]);
        assert!(matches!(
            verify_batch(&f.batch, &f.proof, &short, &f.vs, &f.domain),
            Err(ProofError::NoQuorum { got: 2, total: 4 })
        ));
        // A signature repeated to fake power.
        let mut dup = short.clone();
        dup.signatures.push(dup.signatures[0]);
        assert!(matches!(
            verify_batch(&f.batch, &f.proof, &dup, &f.vs, &f.domain),
            Err(ProofError::DuplicateSigner(_))
        ));
        // Signed by a different set of keys (a fork with its own validators).
        let others: Vec<SigningKey> = (0..4u8).map(|i| SigningKey::from([i + 90; 32])).collect();
        let foreign = fixtures::certify(&f.domain, 9, 1, hash, &others[..3]);
        assert!(matches!(
            verify_batch(&f.batch, &f.proof, &foreign, &f.vs, &f.domain),
            Err(ProofError::UnknownSigner(_))
        ));
        // The verifier given another set than the header names.
        assert!(matches!(
            verify_batch(
                &f.batch,
                &f.proof,
                &f.cert,
                &fixtures::validator_set(&others),
                &f.domain
            ),
            Err(ProofError::OtherValidatorSet { .. })
        ));
        // Signatures for another chain.
        let other_chain =
            fixtures::certify(&ChainDomain::new("elsewhere"), 9, 1, hash, &f.keys[..3]);
        assert!(matches!(
            verify_batch(&f.batch, &f.proof, &other_chain, &f.vs, &f.domain),
            Err(ProofError::BadSignature(_))
        ));
    }
}
