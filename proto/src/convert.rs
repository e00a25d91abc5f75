//! Conversions between wire messages ([`crate::pb`]) and domain types. A malformed message yields a
//! [`ConversionError`] that names the offending field, so the server can answer INVALID_ARGUMENT with it.

use baton_consensus::bench::{Bench, Benched};
use baton_consensus::bundle::Sender;
use baton_consensus::bundle::{Bundle, BundleEntry};
use baton_consensus::evidence::Equivocation;
use baton_consensus::hash::Hash;
use baton_consensus::ids::{Address, L1Origin, RollupId};
use baton_consensus::proof::NamespaceProof;
use baton_consensus::types::{BatchEntry, BlockHeader, Certificate, RollupBatch};
use baton_consensus::validators::{Validator, ValidatorSet, MAX_VALIDATORS};

use crate::pb;

/// A wire message that does not map onto a domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversionError {
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected} bytes, got {got}")]
    Length {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("field `{field}` has {got} items, at most {limit} are allowed")]
    TooMany {
        field: &'static str,
        got: usize,
        limit: usize,
    },
    #[error("field `{0}`: {1}")]
    Invalid(&'static str, String),
}

/// Most benched validators a header may list (more than any validator set Baton accepts).
const MAX_BENCHED: usize = 1024;

/// Parses a 32-byte hash field.
pub fn hash_field(field: &'static str, bytes: &[u8]) -> Result<Hash, ConversionError> {
    Hash::from_slice(bytes).ok_or(ConversionError::Length {
        field,
        expected: 32,
        got: bytes.len(),
    })
}

fn address_field(field: &'static str, bytes: &[u8]) -> Result<Address, ConversionError> {
    Address::from_slice(bytes).ok_or(ConversionError::Length {
        field,
        expected: 20,
        got: bytes.len(),
    })
}

/// Parses a 20-byte Ethereum address field.
pub fn sender_field(field: &'static str, bytes: &[u8]) -> Result<Sender, ConversionError> {
    Sender::try_from(bytes).map_err(|_| ConversionError::Length {
        field,
        expected: 20,
        got: bytes.len(),
    })
}

impl TryFrom<pb::Bundle> for Bundle {
    type Error = ConversionError;

    fn try_from(b: pb::Bundle) -> Result<Self, ConversionError> {
        let signature: [u8; 65] =
            b.signature
                .as_slice()
                .try_into()
                .map_err(|_| ConversionError::Length {
                    field: "bundle.signature",
                    expected: 65,
                    got: b.signature.len(),
                })?;
        Ok(Bundle {
            network_id: b.network_id,
            sender: sender_field("bundle.sender", &b.sender)?,
            nonce: b.nonce,
            expiry_height: b.expiry_height,
            entries: b
                .entries
                .into_iter()
                .map(|e| BundleEntry {
                    rollup_id: e.rollup_id,
                    payload: e.payload,
                })
                .collect(),
            signature,
        })
    }
}

impl From<&Bundle> for pb::Bundle {
    fn from(b: &Bundle) -> Self {
        pb::Bundle {
            entries: b
                .entries
                .iter()
                .map(|e| pb::BundleEntry {
                    rollup_id: e.rollup_id,
                    payload: e.payload.clone(),
                })
                .collect(),
            network_id: b.network_id,
            sender: b.sender.to_vec(),
            nonce: b.nonce,
            expiry_height: b.expiry_height,
            signature: b.signature.to_vec(),
        }
    }
}

impl From<&Certificate> for pb::Certificate {
    fn from(c: &Certificate) -> Self {
        pb::Certificate {
            height: c.height,
            round: c.round,
            block_hash: c.block_hash.0.to_vec(),
            signatures: c
                .signatures
                .iter()
                .map(|(a, s)| pb::CommitSignature {
                    validator: a.0.to_vec(),
                    signature: s.to_vec(),
                })
                .collect(),
        }
    }
}

/// Most signatures a certificate may carry on the wire (bounds what a client decodes and checks).
pub const MAX_CERTIFICATE_SIGNATURES: usize = 10_000;
/// Longest namespace audit path (a tree of 2^64 rows would need 64 steps).
pub const MAX_PATH: usize = 64;

impl TryFrom<pb::Certificate> for Certificate {
    type Error = ConversionError;

    fn try_from(c: pb::Certificate) -> Result<Self, ConversionError> {
        if c.signatures.len() > MAX_CERTIFICATE_SIGNATURES {
            return Err(ConversionError::TooMany {
                field: "proof.certificate.signatures",
                got: c.signatures.len(),
                limit: MAX_CERTIFICATE_SIGNATURES,
            });
        }
        let signatures = c
            .signatures
            .iter()
            .map(|s| {
                let sig: [u8; 64] =
                    s.signature
                        .as_slice()
                        .try_into()
                        .map_err(|_| ConversionError::Length {
                            field: "proof.certificate.signatures.signature",
                            expected: 64,
                            got: s.signature.len(),
                        })?;
                Ok((
                    address_field("proof.certificate.signatures.validator", &s.validator)?,
                    sig,
                ))
            })
            .collect::<Result<Vec<_>, ConversionError>>()?;
        Ok(Certificate {
            height: c.height,
            round: c.round,
            block_hash: hash_field("proof.certificate.block_hash", &c.block_hash)?,
            signatures,
        })
    }
}

/// Builds the wire proof of a batch.
pub fn batch_proof(namespace: &NamespaceProof, cert: &Certificate) -> pb::BatchProof {
    pb::BatchProof {
        namespace_index: namespace.index,
        namespace_path: namespace.path.iter().map(|h| h.0.to_vec()).collect(),
        certificate: Some(cert.into()),
    }
}

/// Parses a wire proof into its namespace path and certificate.
pub fn parse_batch_proof(
    p: pb::BatchProof,
) -> Result<(NamespaceProof, Certificate), ConversionError> {
    if p.namespace_path.len() > MAX_PATH {
        return Err(ConversionError::TooMany {
            field: "proof.namespace_path",
            got: p.namespace_path.len(),
            limit: MAX_PATH,
        });
    }
    let path = p
        .namespace_path
        .iter()
        .map(|h| hash_field("proof.namespace_path", h))
        .collect::<Result<Vec<_>, _>>()?;
    let cert = p
        .certificate
        .ok_or(ConversionError::Missing("proof.certificate"))?
        .try_into()?;
    Ok((
        NamespaceProof {
            index: p.namespace_index,
            path,
        },
        cert,
    ))
}

impl From<&BlockHeader> for pb::BlockHeader {
    fn from(h: &BlockHeader) -> Self {
        pb::BlockHeader {
            height: h.height,
            parent_hash: h.parent_hash.0.to_vec(),
            timestamp_ms: h.timestamp_ms,
            proposer: h.proposer.0.to_vec(),
            validator_set_hash: h.validator_set_hash.0.to_vec(),
            bundles_root: h.bundles_root.0.to_vec(),
            namespace_root: h.namespace_root.0.to_vec(),
            bundle_count: h.bundle_count,
            namespace_count: h.namespace_count,
            round: h.round,
            bench: h
                .bench
                .entries()
                .iter()
                .map(|b| pb::BenchedValidator {
                    validator: b.validator.0.to_vec(),
                    strikes: b.strikes,
                    until_ms: b.until_ms,
                })
                .collect(),
            l1_origin: (h.l1_origin != L1Origin::default()).then(|| l1_block_wire(&h.l1_origin)),
            next_validator_set_hash: h.next_validator_set_hash.0.to_vec(),
            evidence_root: h.evidence_root.0.to_vec(),
        }
    }
}

/// Evidence decided in block `included_height`, for `ListEvidence`.
pub fn evidence_wire(included_height: u64, e: &Equivocation) -> pb::Evidence {
    let signed = |s: &baton_consensus::evidence::Signed| pb::SignedMessage {
        value: s.value.map(|v| v.0.to_vec()).unwrap_or_default(),
        pol_round: s.pol_round,
        signature: s.signature.to_vec(),
    };
    pb::Evidence {
        included_height,
        kind: e.kind.as_str().to_string(),
        validator: e.validator.0.to_vec(),
        height: e.height,
        round: e.round,
        first: Some(signed(&e.first)),
        second: Some(signed(&e.second)),
        hash: e.hash().0.to_vec(),
    }
}

impl From<&ValidatorSet> for pb::ValidatorSet {
    fn from(set: &ValidatorSet) -> Self {
        pb::ValidatorSet {
            validators: set
                .validators()
                .iter()
                .map(|v| pb::Validator {
                    public_key: v.public_key.as_bytes().to_vec(),
                    voting_power: v.voting_power,
                })
                .collect(),
        }
    }
}

/// Parses a validator set (at most [`MAX_VALIDATORS`] members, valid keys, no duplicates, no zero power).
pub fn validator_set_field(
    field: &'static str,
    set: &pb::ValidatorSet,
) -> Result<ValidatorSet, ConversionError> {
    if set.validators.len() > MAX_VALIDATORS {
        return Err(ConversionError::TooMany {
            field,
            got: set.validators.len(),
            limit: MAX_VALIDATORS,
        });
    }
    let validators = set
        .validators
        .iter()
        .map(|v| {
            let key: [u8; 32] =
                v.public_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| ConversionError::Length {
                        field,
                        expected: 32,
                        got: v.public_key.len(),
                    })?;
            let key = ed25519_consensus::VerificationKey::try_from(key)
                .map_err(|e| ConversionError::Invalid(field, format!("not an Ed25519 key: {e}")))?;
            Ok(Validator::new(key, v.voting_power))
        })
        .collect::<Result<Vec<_>, ConversionError>>()?;
    ValidatorSet::new(validators).map_err(|e| ConversionError::Invalid(field, e))
}

fn bench_field(entries: &[pb::BenchedValidator]) -> Result<Bench, ConversionError> {
    if entries.len() > MAX_BENCHED {
        return Err(ConversionError::TooMany {
            field: "header.bench",
            got: entries.len(),
            limit: MAX_BENCHED,
        });
    }
    let entries = entries
        .iter()
        .map(|b| {
            Ok(Benched {
                validator: address_field("header.bench.validator", &b.validator)?,
                strikes: b.strikes,
                until_ms: b.until_ms,
            })
        })
        .collect::<Result<Vec<_>, ConversionError>>()?;
    Bench::from_entries(entries).map_err(|e| ConversionError::Invalid("header.bench", e))
}

impl TryFrom<pb::BlockHeader> for BlockHeader {
    type Error = ConversionError;

    fn try_from(h: pb::BlockHeader) -> Result<Self, ConversionError> {
        Ok(BlockHeader {
            height: h.height,
            parent_hash: hash_field("header.parent_hash", &h.parent_hash)?,
            timestamp_ms: h.timestamp_ms,
            proposer: address_field("header.proposer", &h.proposer)?,
            validator_set_hash: hash_field("header.validator_set_hash", &h.validator_set_hash)?,
            bundles_root: hash_field("header.bundles_root", &h.bundles_root)?,
            namespace_root: hash_field("header.namespace_root", &h.namespace_root)?,
            namespace_count: h.namespace_count,
            bundle_count: h.bundle_count,
            round: h.round,
            bench: bench_field(&h.bench)?,
            l1_origin: match h.l1_origin {
                None => L1Origin::default(),
                o => l1_block_field("header.l1_origin", o)?,
            },
            next_validator_set_hash: hash_field(
                "header.next_validator_set_hash",
                &h.next_validator_set_hash,
            )?,
            evidence_root: hash_field("header.evidence_root", &h.evidence_root)?,
        })
    }
}

impl From<&RollupBatch> for pb::RollupBatch {
    fn from(b: &RollupBatch) -> Self {
        pb::RollupBatch {
            rollup_id: b.rollup_id,
            height: b.header.height,
            block_hash: b.block_hash.0.to_vec(),
            header: Some((&b.header).into()),
            entries: entries_wire(&b.entries),
            proof: None,
            l1_origin: None,
            reorg: None,
            next_validators: None,
        }
    }
}

fn entries_wire(entries: &[BatchEntry]) -> Vec<pb::BatchEntry> {
    entries
        .iter()
        .map(|e| pb::BatchEntry {
            bundle_hash: e.bundle_hash.0.to_vec(),
            index_in_bundle: e.index_in_bundle,
            payload: e.payload.clone(),
        })
        .collect()
}

fn entries_field(entries: Vec<pb::BatchEntry>) -> Result<Vec<BatchEntry>, ConversionError> {
    entries
        .into_iter()
        .map(|e| {
            Ok(BatchEntry {
                bundle_hash: hash_field("entries.bundle_hash", &e.bundle_hash)?,
                index_in_bundle: e.index_in_bundle,
                payload: e.payload,
            })
        })
        .collect()
}

fn l1_block_wire(b: &L1Origin) -> pb::L1Block {
    pb::L1Block {
        number: b.number,
        hash: b.hash.0.to_vec(),
    }
}

fn l1_block_field(
    field: &'static str,
    b: Option<pb::L1Block>,
) -> Result<L1Origin, ConversionError> {
    let b = b.ok_or(ConversionError::Missing(field))?;
    Ok(L1Origin {
        number: b.number,
        hash: hash_field(field, &b.hash)?,
    })
}

/// What a based rollup's `StreamBatches` carries: its batches in L1 order, and notices that an L1 reorg withdrew
/// batches already sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BasedItem {
    /// The entries derived from one L1 block's inbox events.
    Batch {
        rollup_id: RollupId,
        l1_block: L1Origin,
        entries: Vec<BatchEntry>,
    },
    /// Every batch from L1 block `from_l1_block` on was withdrawn; corrected batches follow.
    Reorg {
        rollup_id: RollupId,
        from_l1_block: u64,
        canonical_head: L1Origin,
    },
}

impl From<&BasedItem> for pb::RollupBatch {
    fn from(item: &BasedItem) -> Self {
        match item {
            BasedItem::Batch {
                rollup_id,
                l1_block,
                entries,
            } => pb::RollupBatch {
                rollup_id: *rollup_id,
                height: l1_block.number,
                block_hash: l1_block.hash.0.to_vec(),
                entries: entries_wire(entries),
                l1_origin: Some(l1_block_wire(l1_block)),
                ..Default::default()
            },
            BasedItem::Reorg {
                rollup_id,
                from_l1_block,
                canonical_head,
            } => pb::RollupBatch {
                rollup_id: *rollup_id,
                reorg: Some(pb::ReorgNotice {
                    from_l1_block: *from_l1_block,
                    canonical_head: Some(l1_block_wire(canonical_head)),
                }),
                ..Default::default()
            },
        }
    }
}

impl TryFrom<pb::RollupBatch> for BasedItem {
    type Error = ConversionError;

    fn try_from(b: pb::RollupBatch) -> Result<Self, ConversionError> {
        if let Some(r) = b.reorg {
            return Ok(BasedItem::Reorg {
                rollup_id: b.rollup_id,
                from_l1_block: r.from_l1_block,
                canonical_head: l1_block_field("reorg.canonical_head", r.canonical_head)?,
            });
        }
        Ok(BasedItem::Batch {
            rollup_id: b.rollup_id,
            l1_block: l1_block_field("l1_origin", b.l1_origin)?,
            entries: entries_field(b.entries)?,
        })
    }
}

impl TryFrom<pb::RollupBatch> for RollupBatch {
    type Error = ConversionError;

    fn try_from(b: pb::RollupBatch) -> Result<Self, ConversionError> {
        let header: BlockHeader = b
            .header
            .ok_or(ConversionError::Missing("header"))?
            .try_into()?;
        let entries = entries_field(b.entries)?;
        Ok(RollupBatch {
            rollup_id: b.rollup_id,
            block_hash: hash_field("block_hash", &b.block_hash)?,
            header,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BlockHeader {
        BlockHeader {
            height: 9,
            parent_hash: Hash([1; 32]),
            timestamp_ms: 77,
            proposer: Address([2; 20]),
            validator_set_hash: Hash([3; 32]),
            bundles_root: Hash([4; 32]),
            namespace_root: Hash([5; 32]),
            namespace_count: 3,
            bundle_count: 1,
            round: 2,
            bench: Bench::from_entries(vec![
                Benched {
                    validator: Address([8; 20]),
                    strikes: 1,
                    until_ms: 74,
                },
                Benched {
                    validator: Address([9; 20]),
                    strikes: 3,
                    until_ms: 300,
                },
            ])
            .unwrap(),
            l1_origin: L1Origin {
                number: 1234,
                hash: Hash([6; 32]),
            },
            next_validator_set_hash: Hash([7; 32]),
            evidence_root: Hash([8; 32]),
        }
    }

    #[test]
    fn validator_sets_round_trip_and_bad_ones_name_the_field() {
        let keys: Vec<_> = (1..=4u8)
            .map(|i| ed25519_consensus::SigningKey::from([i; 32]).verification_key())
            .collect();
        let set = ValidatorSet::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| Validator::new(*k, i as u64 + 1))
                .collect(),
        )
        .unwrap();
        let wire = pb::ValidatorSet::from(&set);
        let back = validator_set_field("next_validators", &wire).unwrap();
        assert_eq!(back.hash(), set.hash());
        let mut short = wire.clone();
        short.validators[0].public_key.pop();
        assert!(matches!(
            validator_set_field("next_validators", &short),
            Err(ConversionError::Length {
                field: "next_validators",
                ..
            })
        ));
        let mut twice = wire.clone();
        twice.validators.push(twice.validators[0].clone());
        assert!(matches!(
            validator_set_field("next_validators", &twice),
            Err(ConversionError::Invalid("next_validators", _))
        ));
        let mut zero = wire;
        zero.validators[1].voting_power = 0;
        assert!(validator_set_field("next_validators", &zero).is_err());
    }

    #[test]
    fn batch_round_trips() {
        let batch = RollupBatch {
            rollup_id: 3,
            header: header(),
            block_hash: header().hash(),
            entries: vec![BatchEntry {
                bundle_hash: Hash([6; 32]),
                index_in_bundle: 2,
                payload: b"x".to_vec(),
            }],
        };
        let wire: pb::RollupBatch = (&batch).into();
        assert_eq!(RollupBatch::try_from(wire).unwrap(), batch);
    }

    #[test]
    fn bad_fields_are_named() {
        let mut wire: pb::BlockHeader = (&header()).into();
        wire.parent_hash.pop();
        let err = BlockHeader::try_from(wire).unwrap_err();
        assert_eq!(
            err,
            ConversionError::Length {
                field: "header.parent_hash",
                expected: 32,
                got: 31
            }
        );
        assert!(err.to_string().contains("header.parent_hash"));
        let mut wire: pb::BlockHeader = (&header()).into();
        wire.bench.swap(0, 1);
        let err = BlockHeader::try_from(wire).unwrap_err();
        assert!(
            matches!(err, ConversionError::Invalid("header.bench", _)),
            "{err}"
        );
        let mut wire: pb::BlockHeader = (&header()).into();
        wire.bench[1].validator.push(0);
        assert!(BlockHeader::try_from(wire)
            .unwrap_err()
            .to_string()
            .contains("header.bench.validator"));
        let missing = pb::RollupBatch {
            header: None,
            ..Default::default()
        };
        assert_eq!(
            RollupBatch::try_from(missing).unwrap_err(),
            ConversionError::Missing("header")
        );
    }
}
