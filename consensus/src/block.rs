//! Building a block from the mempool and validating a proposed one.
//!
//! Both sides compute the header's roots with the same functions, so a block built here always validates there.

use std::collections::HashSet;

use crate::error::{BlockError, BundleError};
use crate::hash::Hash;
use crate::params::ConsensusParams;
use crate::types::{
    batches_of, bundles_root, namespace_root, namespace_table, Address, Block, BlockHeader, Bundle,
};

/// Checks one bundle against the limits (used at admission and again in block validation).
pub fn check_bundle(bundle: &Bundle, params: &ConsensusParams) -> Result<(), BundleError> {
    if bundle.entries.is_empty() {
        return Err(BundleError::Empty);
    }
    if bundle.entries.len() > params.max_bundle_entries as usize {
        return Err(BundleError::TooManyEntries {
            got: bundle.entries.len(),
            limit: params.max_bundle_entries,
        });
    }
    let len = bundle.encoded_len();
    if len > params.max_bundle_bytes as usize {
        return Err(BundleError::TooLarge {
            got: len,
            limit: params.max_bundle_bytes,
        });
    }
    if let Some(index) = bundle.entries.iter().position(|e| e.payload.is_empty()) {
        return Err(BundleError::EmptyPayload { index });
    }
    Ok(())
}

/// Where the new block goes: the decided parent (or genesis) and who proposes.
#[derive(Clone, Debug)]
pub struct BlockContext {
    pub height: u64,
    pub parent_hash: Hash,
    pub parent_timestamp_ms: u64,
    pub validator_set_hash: Hash,
}

/// Builds a block from bundles that the caller already limited to the block's size.
pub fn build_block(
    ctx: &BlockContext,
    proposer: Address,
    now_ms: u64,
    bundles: Vec<Bundle>,
) -> Block {
    let hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
    let table = namespace_table(&batches_of(&bundles, &hashes));
    let header = BlockHeader {
        height: ctx.height,
        parent_hash: ctx.parent_hash,
        timestamp_ms: now_ms.max(ctx.parent_timestamp_ms + 1),
        proposer,
        validator_set_hash: ctx.validator_set_hash,
        bundles_root: bundles_root(&hashes),
        namespace_root: namespace_root(&table),
        bundle_count: bundles.len() as u32,
    };
    Block { header, bundles }
}

/// Validates a proposed block against its context. `hashes` are the block's bundle hashes in order (the caller
/// has them already; see [`bundle_hashes`]). `is_validator` answers whether an address is in the set (the builder
/// of a block re-proposed in a later round need not be that round's proposer); `is_included` answers whether a
/// bundle hash is already in an earlier block.
pub fn validate_block(
    block: &Block,
    hashes: &[Hash],
    ctx: &BlockContext,
    params: &ConsensusParams,
    is_validator: &dyn Fn(&Address) -> bool,
    now_ms: u64,
    is_included: &mut dyn FnMut(&Hash) -> bool,
) -> Result<(), BlockError> {
    let h = &block.header;
    if h.height != ctx.height {
        return Err(BlockError::WrongHeight {
            got: h.height,
            expected: ctx.height,
        });
    }
    if h.parent_hash != ctx.parent_hash {
        return Err(BlockError::WrongParent {
            got: h.parent_hash,
            expected: ctx.parent_hash,
        });
    }
    if h.timestamp_ms <= ctx.parent_timestamp_ms {
        return Err(BlockError::TimestampNotIncreasing {
            got: h.timestamp_ms,
            parent: ctx.parent_timestamp_ms,
        });
    }
    if h.timestamp_ms > now_ms.saturating_add(params.max_clock_drift_ms) {
        return Err(BlockError::TimestampInFuture {
            got: h.timestamp_ms,
            now: now_ms,
            drift: params.max_clock_drift_ms,
        });
    }
    if !is_validator(&h.proposer) {
        return Err(BlockError::UnknownProposer(h.proposer.to_hex()));
    }
    if h.validator_set_hash != ctx.validator_set_hash {
        return Err(BlockError::WrongValidatorSet {
            got: h.validator_set_hash,
            expected: ctx.validator_set_hash,
        });
    }
    if h.bundle_count as usize != block.bundles.len() {
        return Err(BlockError::BundleCountMismatch {
            header: h.bundle_count,
            body: block.bundles.len(),
        });
    }
    if block.bundles.len() > params.max_block_bundles as usize {
        return Err(BlockError::TooManyBundles {
            got: block.bundles.len(),
            limit: params.max_block_bundles,
        });
    }
    let total: u64 = block.bundles.iter().map(|b| b.encoded_len() as u64).sum();
    if total > params.max_block_bytes {
        return Err(BlockError::TooLarge {
            got: total,
            limit: params.max_block_bytes,
        });
    }
    debug_assert_eq!(hashes.len(), block.bundles.len());
    let mut seen = HashSet::with_capacity(block.bundles.len());
    for (index, (bundle, hash)) in block.bundles.iter().zip(hashes).enumerate() {
        check_bundle(bundle, params).map_err(|error| BlockError::BadBundle { index, error })?;
        if !seen.insert(*hash) {
            return Err(BlockError::DuplicateBundle(*hash));
        }
        if is_included(hash) {
            return Err(BlockError::AlreadyIncluded(*hash));
        }
    }
    let expected = bundles_root(hashes);
    if h.bundles_root != expected {
        return Err(BlockError::WrongBundlesRoot {
            got: h.bundles_root,
            expected,
        });
    }
    let expected = namespace_root(&namespace_table(&batches_of(&block.bundles, hashes)));
    if h.namespace_root != expected {
        return Err(BlockError::WrongNamespaceRoot {
            got: h.namespace_root,
            expected,
        });
    }
    Ok(())
}

/// The hashes of a block's bundles, in block order.
pub fn bundle_hashes(block: &Block) -> Vec<Hash> {
    block.bundles.iter().map(Bundle::hash).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BundleEntry;
    use proptest::prelude::*;

    fn ctx() -> BlockContext {
        BlockContext {
            height: 5,
            parent_hash: Hash::digest(&[b"parent"]),
            parent_timestamp_ms: 1_000,
            validator_set_hash: Hash::digest(&[b"vs"]),
        }
    }

    fn bundle(seed: u8, rollups: &[u64]) -> Bundle {
        Bundle {
            entries: rollups
                .iter()
                .enumerate()
                .map(|(i, r)| BundleEntry {
                    rollup_id: *r,
                    payload: vec![seed, i as u8, 1],
                })
                .collect(),
        }
    }

    fn valid(block: &Block) -> Result<(), BlockError> {
        validate_block(
            block,
            &bundle_hashes(block),
            &ctx(),
            &ConsensusParams::default(),
            &|a| *a == Address([7; 20]),
            1_100,
            &mut |_| false,
        )
    }

    #[test]
    fn built_block_validates() {
        let block = build_block(
            &ctx(),
            Address([7; 20]),
            1_050,
            vec![bundle(1, &[1, 2, 3]), bundle(2, &[2])],
        );
        valid(&block).unwrap();
        assert_eq!(block.bundles.len(), 2);
        assert!(block.header.timestamp_ms > 1_000);
    }

    #[test]
    fn timestamp_is_forced_past_parent() {
        let block = build_block(&ctx(), Address([7; 20]), 10, vec![]);
        assert_eq!(block.header.timestamp_ms, 1_001);
        valid(&block).unwrap();
    }

    #[test]
    fn rejects_each_broken_rule() {
        let good = build_block(
            &ctx(),
            Address([7; 20]),
            1_050,
            vec![bundle(1, &[1, 2]), bundle(2, &[3])],
        );
        let mut b = good.clone();
        b.header.height = 6;
        assert!(matches!(valid(&b), Err(BlockError::WrongHeight { .. })));
        let mut b = good.clone();
        b.header.parent_hash = Hash::ZERO;
        assert!(matches!(valid(&b), Err(BlockError::WrongParent { .. })));
        let mut b = good.clone();
        b.header.timestamp_ms = 1_000;
        assert!(matches!(
            valid(&b),
            Err(BlockError::TimestampNotIncreasing { .. })
        ));
        let mut b = good.clone();
        b.header.timestamp_ms = 1_100 + 2_001;
        assert!(matches!(
            valid(&b),
            Err(BlockError::TimestampInFuture { .. })
        ));
        let mut b = good.clone();
        b.header.proposer = Address([8; 20]);
        assert!(matches!(valid(&b), Err(BlockError::UnknownProposer(_))));
        let mut b = good.clone();
        b.bundles.swap(0, 1);
        assert!(matches!(
            valid(&b),
            Err(BlockError::WrongBundlesRoot { .. })
        ));
        let mut b = good.clone();
        b.bundles.push(b.bundles[0].clone());
        b.header.bundle_count = 3;
        assert!(matches!(valid(&b), Err(BlockError::DuplicateBundle(_))));
        let mut b = good.clone();
        b.bundles.pop();
        assert!(matches!(
            valid(&b),
            Err(BlockError::BundleCountMismatch { .. })
        ));
        let mut b = good.clone();
        b.bundles[0].entries.clear();
        assert!(matches!(
            valid(&b),
            Err(BlockError::BadBundle {
                index: 0,
                error: BundleError::Empty
            })
        ));
        let r = validate_block(
            &good,
            &bundle_hashes(&good),
            &ctx(),
            &ConsensusParams::default(),
            &|_| true,
            1_100,
            &mut |_| true,
        );
        assert!(matches!(r, Err(BlockError::AlreadyIncluded(_))));
    }

    #[test]
    fn bundle_limits() {
        let p = ConsensusParams {
            max_bundle_entries: 2,
            max_bundle_bytes: 100,
            ..Default::default()
        };
        assert_eq!(check_bundle(&bundle(1, &[1, 2]), &p), Ok(()));
        assert!(matches!(
            check_bundle(&bundle(1, &[1, 2, 3]), &p),
            Err(BundleError::TooManyEntries { .. })
        ));
        let big = Bundle {
            entries: vec![BundleEntry {
                rollup_id: 1,
                payload: vec![0; 200],
            }],
        };
        let err = check_bundle(&big, &p).unwrap_err();
        assert!(err.is_size_limit());
        let empty_payload = Bundle {
            entries: vec![BundleEntry {
                rollup_id: 1,
                payload: vec![],
            }],
        };
        assert_eq!(
            check_bundle(&empty_payload, &p),
            Err(BundleError::EmptyPayload { index: 0 })
        );
    }

    proptest! {
        /// Any block built from any bundles validates, and changing any payload byte is caught by the roots.
        #[test]
        fn build_then_tamper(
            payloads in proptest::collection::vec(
                proptest::collection::vec((0u64..4, proptest::collection::vec(any::<u8>(), 1..16)), 1..5), 1..6),
            pick in any::<prop::sample::Index>(),
        ) {
            let bundles: Vec<Bundle> = payloads.iter().map(|entries| Bundle {
                entries: entries.iter().map(|(r, p)| BundleEntry { rollup_id: *r, payload: p.clone() }).collect(),
            }).collect();
            let mut uniq = HashSet::new();
            prop_assume!(bundles.iter().all(|b| uniq.insert(b.hash())));
            let block = build_block(&ctx(), Address([7; 20]), 1_050, bundles);
            prop_assert!(valid(&block).is_ok());
            let mut t = block.clone();
            let entries: Vec<(usize, usize)> = t.bundles.iter().enumerate()
                .flat_map(|(i, b)| (0..b.entries.len()).map(move |j| (i, j))).collect();
            let (i, j) = entries[pick.index(entries.len())];
            t.bundles[i].entries[j].payload[0] ^= 1;
            prop_assert!(valid(&t).is_err());
        }
    }
}
