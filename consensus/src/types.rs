//! Domain types: bundles, blocks, headers and the per-rollup batches a rollup reads.
//!
//! Everything that is hashed or sent between nodes is encoded with borsh, whose encoding is canonical (one value,
//! one byte string), so a hash over an encoding is well defined.

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::bundle::Bundle;
use crate::hash::{leaf_hash, merkle_root, Hash};
use crate::ids::{Address, L1Origin, RollupId};
use crate::validators::ValidatorSet;

/// The header every validator signs (through its hash, the consensus value id).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug, BorshSerialize, BorshDeserialize)]
pub struct BlockHeader {
    pub height: u64,
    pub parent_hash: Hash,
    /// Proposer's clock, milliseconds since the Unix epoch; strictly increasing along the chain.
    pub timestamp_ms: u64,
    pub proposer: Address,
    /// Hash of the validator set that decides this height.
    pub validator_set_hash: Hash,
    /// Merkle root over the hashes of the block's bundles, in block order.
    pub bundles_root: Hash,
    /// Merkle root over the namespace table (one leaf per registered rollup, ascending rollup id).
    pub namespace_root: Hash,
    /// Rows in the namespace table (the tree size a namespace proof is checked against).
    pub namespace_count: u32,
    pub bundle_count: u32,
    /// The round the block was built for (a block re-proposed in a later round keeps it).
    pub round: u32,
    /// Validators out of the proposer rotation after this block ([`crate::bench`]).
    pub bench: crate::bench::Bench,
    /// The L1 block this block builds on ([`crate::origin`]); zero on a chain without L1. Last in the header, so
    /// the fixed-offset fields the L1 commitment contract reads stay where they are.
    pub l1_origin: L1Origin,
    /// Hash of the validator set that decides the next height: the same as `validator_set_hash` except in an
    /// epoch's last block when the set changes ([`crate::epoch`]). Signed with the block, so a client that trusts
    /// this set learns the next one from a certified header.
    pub next_validator_set_hash: Hash,
    /// Merkle root of the hashes of the misbehaviour evidence the block carries ([`crate::evidence`]).
    pub evidence_root: Hash,
}

impl BlockHeader {
    pub fn hash(&self) -> Hash {
        let enc = borsh::to_vec(self).unwrap_or_default();
        Hash::digest(&[b"baton/header/v1", &enc])
    }

    /// Validators the rotation of the next height skips: this block's bench, read at this block's timestamp
    /// (the one rule every reader of the rotation uses; [`crate::bench`]).
    pub fn benched_next(&self) -> Vec<Address> {
        self.bench.benched_at(self.timestamp_ms)
    }

    /// The set whose rotation names the next height's proposers: `base` with [`Self::benched_next`] skipped.
    pub fn next_rotation(&self, base: &ValidatorSet) -> ValidatorSet {
        self.bench.apply(base, self.timestamp_ms)
    }
}

/// One row of a block's namespace table: a registered rollup, its batch root and entry count (zero and the empty
/// root when the block has nothing for it).
#[derive(Clone, PartialEq, Eq, Debug, BorshSerialize, BorshDeserialize)]
pub struct NamespaceEntry {
    pub rollup_id: RollupId,
    pub batch_root: Hash,
    pub entry_count: u32,
}

impl NamespaceEntry {
    pub fn leaf(&self) -> Hash {
        let enc = borsh::to_vec(self).unwrap_or_default();
        leaf_hash(&enc)
    }
}

/// A block: a header and the bundles it orders.
#[derive(Clone, PartialEq, Eq, Debug, BorshSerialize, BorshDeserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub bundles: Vec<Bundle>,
    /// The next epoch's set when it differs from this block's (its hash is `header.next_validator_set_hash`).
    /// Not part of proposals: each validator computes it; stored and synced with the decided block.
    pub next_validators: Option<crate::validators::ValidatorSet>,
    /// Equivocation evidence, committed by `header.evidence_root`.
    pub evidence: Vec<crate::evidence::Equivocation>,
}

impl Block {
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    pub fn height(&self) -> u64 {
        self.header.height
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Block, std::io::Error> {
        borsh::from_slice(bytes)
    }

    /// Where every entry's payload lies in [`Block::encode`]'s bytes: per bundle, per entry, (offset, length).
    pub fn payload_spans(&self) -> Vec<Vec<(usize, usize)>> {
        // The header, then the bundles' count (u32), then the bundles one after another.
        let mut at = borsh::object_length(&self.header).unwrap_or_default() + 4;
        self.bundles
            .iter()
            .map(|b| {
                let spans = b.payload_spans().map(|(o, l)| (at + o, l)).collect();
                at += b.encoded_len();
                spans
            })
            .collect()
    }

    /// Per-rollup batches of this block, keyed by rollup id (rollups without entries are absent).
    pub fn batches(&self) -> BTreeMap<RollupId, Vec<BatchEntry>> {
        let hashes: Vec<Hash> = self.bundles.iter().map(Bundle::hash).collect();
        batches_of(&self.bundles, &hashes)
    }
}

/// A block's per-rollup batches, by rollup id.
pub type Batches = BTreeMap<RollupId, Vec<BatchEntry>>;

/// Splits bundles into per-rollup batches: within each rollup, bundles keep block order and each bundle's
/// entries stay contiguous and in bundle order.
pub fn batches_of(bundles: &[Bundle], hashes: &[Hash]) -> BTreeMap<RollupId, Vec<BatchEntry>> {
    let mut out: BTreeMap<RollupId, Vec<BatchEntry>> = BTreeMap::new();
    for (bundle, bundle_hash) in bundles.iter().zip(hashes) {
        for (i, e) in bundle.entries.iter().enumerate() {
            out.entry(e.rollup_id).or_default().push(BatchEntry {
                bundle_hash: *bundle_hash,
                index_in_bundle: i as u32,
                payload: e.payload.clone(),
            });
        }
    }
    out
}

/// The namespace table of a block: one row per registered rollup (`rollups`, ascending), empty batches included.
/// Batches for rollups not in `rollups` are not in the table (block validation refuses such blocks first).
pub fn namespace_table(
    rollups: impl Iterator<Item = RollupId>,
    batches: &BTreeMap<RollupId, Vec<BatchEntry>>,
) -> Vec<NamespaceEntry> {
    let leaves = batches
        .iter()
        .map(|(r, entries)| (*r, entries.iter().map(BatchEntry::leaf).collect()))
        .collect();
    table_of_leaves(rollups, &leaves)
}

/// [`namespace_table`] of the batches [`batches_of`] would cut from `bundles`, hashing each entry where it lies
/// instead of copying every payload into a batch first.
pub fn block_table(
    rollups: impl Iterator<Item = RollupId>,
    bundles: &[Bundle],
    hashes: &[Hash],
) -> Vec<NamespaceEntry> {
    let mut leaves: BTreeMap<RollupId, Vec<Hash>> = BTreeMap::new();
    for (bundle, bundle_hash) in bundles.iter().zip(hashes) {
        for (i, e) in bundle.entries.iter().enumerate() {
            leaves.entry(e.rollup_id).or_default().push(entry_leaf(
                bundle_hash,
                i as u32,
                &e.payload,
            ));
        }
    }
    table_of_leaves(rollups, &leaves)
}

/// One row per rollup of `rollups` from each rollup's entry leaves in batch order.
fn table_of_leaves(
    rollups: impl Iterator<Item = RollupId>,
    leaves: &BTreeMap<RollupId, Vec<Hash>>,
) -> Vec<NamespaceEntry> {
    rollups
        .map(|rollup_id| {
            let leaves = leaves.get(&rollup_id).map(Vec::as_slice).unwrap_or(&[]);
            NamespaceEntry {
                rollup_id,
                batch_root: merkle_root(leaves),
                entry_count: leaves.len() as u32,
            }
        })
        .collect()
}

/// Merkle root of a rollup's batch.
pub fn batch_root(entries: &[BatchEntry]) -> Hash {
    let leaves: Vec<Hash> = entries.iter().map(BatchEntry::leaf).collect();
    merkle_root(&leaves)
}

/// Merkle root of a namespace table.
pub fn namespace_root(table: &[NamespaceEntry]) -> Hash {
    let leaves: Vec<Hash> = table.iter().map(NamespaceEntry::leaf).collect();
    merkle_root(&leaves)
}

/// Merkle root over bundle hashes.
pub fn bundles_root(hashes: &[Hash]) -> Hash {
    let leaves: Vec<Hash> = hashes.iter().map(|h| leaf_hash(&h.0)).collect();
    merkle_root(&leaves)
}

/// One entry of a rollup's batch, tagged with the bundle it came from and its position in that bundle.
#[derive(Clone, PartialEq, Eq, Debug, BorshSerialize, BorshDeserialize)]
pub struct BatchEntry {
    pub bundle_hash: Hash,
    pub index_in_bundle: u32,
    pub payload: Vec<u8>,
}

impl BatchEntry {
    pub fn leaf(&self) -> Hash {
        entry_leaf(&self.bundle_hash, self.index_in_bundle, &self.payload)
    }
}

/// The Merkle leaf of a batch entry: [`leaf_hash`] of its borsh encoding (bundle hash, index in the bundle as a
/// little-endian u32, the payload's length as a little-endian u32, the payload), hashed from the parts without
/// copying the payload into an encoding first.
pub fn entry_leaf(bundle_hash: &Hash, index_in_bundle: u32, payload: &[u8]) -> Hash {
    Hash::digest(&[
        &[0x00],
        &bundle_hash.0,
        &index_in_bundle.to_le_bytes(),
        &(payload.len() as u32).to_le_bytes(),
        payload,
    ])
}

/// What a rollup reads at one height: its entries (possibly none) and the header they belong to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RollupBatch {
    pub rollup_id: RollupId,
    pub header: BlockHeader,
    pub block_hash: Hash,
    pub entries: Vec<BatchEntry>,
}

/// A commit certificate: precommit signatures of more than 2/3 of the voting power for one block.
#[derive(Clone, PartialEq, Eq, Debug, BorshSerialize, BorshDeserialize)]
pub struct Certificate {
    pub height: u64,
    pub round: u32,
    pub block_hash: Hash,
    pub signatures: Vec<(Address, [u8; 64])>,
}

/// Where a bundle ended up.
#[derive(Clone, Copy, PartialEq, Eq, Debug, BorshSerialize, BorshDeserialize)]
pub struct Inclusion {
    pub height: u64,
    pub block_hash: Hash,
    pub index: u32,
}

/// Why an acknowledged bundle left the mempool without being included. Recorded so that its status can be
/// answered after restarts.
#[derive(Clone, PartialEq, Eq, Debug, BorshSerialize, BorshDeserialize)]
pub enum Dropped {
    /// `expiry_height` passed: noticed when `height` was decided.
    Expired { expiry_height: u64, height: u64 },
    /// It can never be included (its nonce was used by another bundle, ...): `reason` says why.
    Rejected { height: u64, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testing::bundle;

    #[test]
    fn batches_keep_bundle_entries_contiguous_and_in_order() {
        let a = bundle(1, 0, &[1, 2, 1], 0xa);
        let b = bundle(2, 0, &[2, 1], 0xb);
        let block = Block {
            header: BlockHeader {
                height: 1,
                parent_hash: Hash::ZERO,
                timestamp_ms: 1,
                proposer: Address::default(),
                validator_set_hash: Hash::ZERO,
                bundles_root: Hash::ZERO,
                namespace_root: Hash::ZERO,
                namespace_count: 0,
                bundle_count: 2,
                round: 0,
                bench: Default::default(),
                l1_origin: Default::default(),
                next_validator_set_hash: Hash::ZERO,
                evidence_root: Hash::ZERO,
            },
            bundles: vec![a.clone(), b.clone()],
            next_validators: None,
            evidence: vec![],
        };
        let batches = block.batches();
        let tags = |r: RollupId| -> Vec<(u8, u8)> {
            batches[&r]
                .iter()
                .map(|e| (e.payload[0], e.payload[1]))
                .collect()
        };
        assert_eq!(tags(1), vec![(0xa, 0), (0xa, 2), (0xb, 1)]);
        assert_eq!(batches[&1][0].bundle_hash, a.hash());
        assert_eq!(batches[&1][1].index_in_bundle, 2);
        assert_eq!(batches[&1][2].bundle_hash, b.hash());
        assert_eq!(tags(2), vec![(0xa, 1), (0xb, 0)]);
        assert!(!batches.contains_key(&3));

        // Every payload can be cut out of the block's encoding (what the node's store serves batches from).
        let enc = block.encode();
        let spans = block.payload_spans();
        for (b, spans) in block.bundles.iter().zip(&spans) {
            assert_eq!(spans.len(), b.entries.len());
            for ((at, len), e) in spans.iter().zip(&b.entries) {
                assert_eq!(&enc[*at..at + len], e.payload.as_slice());
            }
        }

        // The namespace table has a row for every registered rollup, empty ones included.
        let table = namespace_table([1, 2, 3].into_iter(), &batches);
        assert_eq!(table.len(), 3);
        assert_eq!(table[2].entry_count, 0);
        assert_eq!(table[2].batch_root, batch_root(&[]));
        assert_eq!(table[0].entry_count, 3);
        // Hashed in place from the bundles, the table is the same; each leaf is that of the entry's encoding.
        let hashes = [a.hash(), b.hash()];
        assert_eq!(
            block_table([1, 2, 3].into_iter(), &block.bundles, &hashes),
            table
        );
        for e in batches.values().flatten() {
            assert_eq!(e.leaf(), leaf_hash(&borsh::to_vec(e).unwrap()));
        }
    }
}
