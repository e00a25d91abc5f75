//! What the host needs from storage, as a trait: RocksDB in the node, memory here for tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use borsh::{BorshDeserialize, BorshSerialize};

use crate::bundle::Bundle;
use crate::bundle::Sender;
use crate::error::ConsensusError;
use crate::hash::Hash;
use crate::ids::Address;
use crate::ids::RollupId;
use crate::types::{
    BatchEntry, Batches, Block, BlockHeader, Certificate, Dropped, Inclusion, NamespaceEntry,
};
use crate::validators::ValidatorSet;

/// A proposal seen (or built) for the current height that has not been decided yet. Kept on disk so that a node
/// that crashes mid-height can hand the engine the values its write-ahead log refers to.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct UndecidedProposal {
    pub round: u32,
    /// Proof-of-lock round, if the proposal re-proposes a locked value.
    pub valid_round: Option<u32>,
    pub proposer: Address,
    pub valid: bool,
    pub block: Block,
}

/// The decided chain and the bundles' fates, as every reader sees them: the host's chain view, the node's API
/// handlers (generic over this trait, so they run over [`MemStore`] in tests) and the peers it serves sync from.
pub trait ChainRead: Send + Sync {
    /// Header of the latest decided block.
    fn latest(&self) -> Result<Option<BlockHeader>, ConsensusError>;
    /// Header of a decided block.
    fn header(&self, height: u64) -> Result<Option<BlockHeader>, ConsensusError>;
    fn block(&self, height: u64) -> Result<Option<Block>, ConsensusError>;
    fn certificate(&self, height: u64) -> Result<Option<Certificate>, ConsensusError>;
    /// The namespace table of a decided block (one row per registered rollup).
    fn namespace_table(&self, height: u64) -> Result<Option<Vec<NamespaceEntry>>, ConsensusError>;
    /// A rollup's batch entries at a decided height (empty if it had none there).
    fn batch_entries(
        &self,
        rollup: RollupId,
        height: u64,
    ) -> Result<Vec<BatchEntry>, ConsensusError>;
    /// Where a bundle was included, if it was.
    fn inclusion(&self, bundle: &Hash) -> Result<Option<Inclusion>, ConsensusError>;
    /// Why a bundle was dropped, if it was.
    fn dropped(&self, bundle: &Hash) -> Result<Option<Dropped>, ConsensusError>;
    /// Whether a bundle is acknowledged and waiting in the persisted mempool.
    fn is_pending(&self, bundle: &Hash) -> Result<bool, ConsensusError>;
    /// The sender's next nonce on the decided chain (0 for a sender never included).
    fn next_nonce(&self, sender: &Sender) -> Result<u64, ConsensusError>;
    /// The validator set deciding `height` when it is not the genesis set: the newest decided block below
    /// `height` that carried `next_validators` names it (`commit` indexes them). `None`: the genesis set.
    fn validator_set_at(&self, height: u64) -> Result<Option<ValidatorSet>, ConsensusError>;
    /// The set deciding `height` (a decided height or the next one): [`ChainRead::validator_set_at`], or
    /// `genesis` until a block named another.
    fn validators_for(
        &self,
        height: u64,
        genesis: &ValidatorSet,
    ) -> Result<ValidatorSet, ConsensusError> {
        Ok(self
            .validator_set_at(height)?
            .unwrap_or_else(|| genesis.clone()))
    }
    /// Every evidence item in decided blocks, with the height of the block that carried it (`commit` indexes
    /// them), oldest first.
    fn evidence(&self) -> Result<Vec<(u64, crate::evidence::Equivocation)>, ConsensusError>;
}

/// Whether a write must be on disk before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// On disk before the call returns (fsync, unless the operator turned syncing off).
    Now,
    /// Written, and on disk with the store's next durable write (writes reach the disk in order); lost by a crash
    /// before that.
    Lazy,
}

/// Storage used by the host: the reads plus the host's own writes. Writes return only when they are durable,
/// except where a [`Durability`] says otherwise.
pub trait ChainStore: ChainRead {
    /// Records a proposal; a second one with the same round and block hash replaces the first.
    fn put_undecided(
        &self,
        height: u64,
        proposal: &UndecidedProposal,
        durability: Durability,
    ) -> Result<(), ConsensusError>;
    /// Undecided proposals recorded for a height.
    fn undecided(&self, height: u64) -> Result<Vec<UndecidedProposal>, ConsensusError>;
    /// Atomically stores a decided block with its certificate and namespace table, indexes its batches and
    /// bundles, advances its senders' nonces, removes its bundles from the persisted mempool and forgets undecided
    /// proposals up to its height.
    fn commit(
        &self,
        block: &Block,
        bundle_hashes: &[Hash],
        batches: &Batches,
        table: &[NamespaceEntry],
        cert: &Certificate,
    ) -> Result<(), ConsensusError>;
    /// Bundles acknowledged to clients and not yet included (the persisted mempool).
    fn pending_bundles(&self) -> Result<Vec<Bundle>, ConsensusError>;
    /// Records why pending bundles were dropped and removes them from the persisted mempool.
    fn record_dropped(&self, dropped: &[(Hash, Dropped)]) -> Result<(), ConsensusError>;
}

#[derive(Default)]
struct MemInner {
    blocks: BTreeMap<u64, (Block, Certificate)>,
    /// Per decided height: its batches and namespace table, as `commit` was given them.
    batches: BTreeMap<u64, (Batches, Vec<NamespaceEntry>)>,
    inclusions: HashMap<Hash, Inclusion>,
    undecided: BTreeMap<u64, Vec<UndecidedProposal>>,
    pending: BTreeMap<Hash, Bundle>,
    nonces: HashMap<Sender, u64>,
    dropped: HashMap<Hash, Dropped>,
    /// Nonce and inclusion reads so far.
    point_reads: u64,
}

/// In-memory [`ChainStore`] (and [`ChainRead`]) for tests and simulations. Clones share state, like handles to one database.
#[derive(Clone, Default)]
pub struct MemStore {
    inner: Arc<Mutex<MemInner>>,
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a bundle as acknowledged (what the node's ingest path does before it acks).
    pub fn add_pending(&self, bundle: Bundle) {
        self.lock().pending.insert(bundle.hash(), bundle);
    }

    /// How many times a sender's nonce or a bundle's inclusion was read: each is a point read in a real store.
    pub fn point_reads(&self) -> u64 {
        self.lock().point_reads
    }
}

impl ChainRead for MemStore {
    fn latest(&self) -> Result<Option<BlockHeader>, ConsensusError> {
        Ok(self
            .lock()
            .blocks
            .values()
            .next_back()
            .map(|(b, _)| b.header.clone()))
    }

    fn block(&self, height: u64) -> Result<Option<Block>, ConsensusError> {
        Ok(self.lock().blocks.get(&height).map(|(b, _)| b.clone()))
    }

    fn certificate(&self, height: u64) -> Result<Option<Certificate>, ConsensusError> {
        Ok(self.lock().blocks.get(&height).map(|(_, c)| c.clone()))
    }

    fn inclusion(&self, bundle: &Hash) -> Result<Option<Inclusion>, ConsensusError> {
        let mut g = self.lock();
        g.point_reads += 1;
        Ok(g.inclusions.get(bundle).copied())
    }

    fn next_nonce(&self, sender: &Sender) -> Result<u64, ConsensusError> {
        let mut g = self.lock();
        g.point_reads += 1;
        Ok(g.nonces.get(sender).copied().unwrap_or(0))
    }

    fn dropped(&self, bundle: &Hash) -> Result<Option<Dropped>, ConsensusError> {
        Ok(self.lock().dropped.get(bundle).cloned())
    }

    fn validator_set_at(&self, height: u64) -> Result<Option<ValidatorSet>, ConsensusError> {
        Ok(self
            .lock()
            .blocks
            .range(..height)
            .rev()
            .find_map(|(_, (b, _))| b.next_validators.clone()))
    }

    fn evidence(&self) -> Result<Vec<(u64, crate::evidence::Equivocation)>, ConsensusError> {
        Ok(self
            .lock()
            .blocks
            .iter()
            .flat_map(|(h, (b, _))| b.evidence.iter().map(|e| (*h, e.clone())))
            .collect())
    }

    fn header(&self, height: u64) -> Result<Option<BlockHeader>, ConsensusError> {
        Ok(self
            .lock()
            .blocks
            .get(&height)
            .map(|(b, _)| b.header.clone()))
    }

    fn namespace_table(&self, height: u64) -> Result<Option<Vec<NamespaceEntry>>, ConsensusError> {
        Ok(self.lock().batches.get(&height).map(|(_, t)| t.clone()))
    }

    fn batch_entries(
        &self,
        rollup: RollupId,
        height: u64,
    ) -> Result<Vec<BatchEntry>, ConsensusError> {
        Ok(self
            .lock()
            .batches
            .get(&height)
            .and_then(|(b, _)| b.get(&rollup).cloned())
            .unwrap_or_default())
    }

    fn is_pending(&self, bundle: &Hash) -> Result<bool, ConsensusError> {
        Ok(self.lock().pending.contains_key(bundle))
    }
}

impl ChainStore for MemStore {
    fn put_undecided(
        &self,
        height: u64,
        proposal: &UndecidedProposal,
        _durability: Durability,
    ) -> Result<(), ConsensusError> {
        let mut g = self.lock();
        let list = g.undecided.entry(height).or_default();
        // Like a key-value store keyed by (height, round, block hash): the last write wins.
        list.retain(|p| !(p.round == proposal.round && p.block.hash() == proposal.block.hash()));
        list.push(proposal.clone());
        Ok(())
    }

    fn undecided(&self, height: u64) -> Result<Vec<UndecidedProposal>, ConsensusError> {
        Ok(self
            .lock()
            .undecided
            .get(&height)
            .cloned()
            .unwrap_or_default())
    }

    fn commit(
        &self,
        block: &Block,
        bundle_hashes: &[Hash],
        batches: &Batches,
        table: &[NamespaceEntry],
        cert: &Certificate,
    ) -> Result<(), ConsensusError> {
        let mut g = self.lock();
        for b in &block.bundles {
            let next = g.nonces.entry(b.sender).or_default();
            *next = (*next).max(b.nonce + 1);
        }
        let height = block.height();
        let block_hash = block.hash();
        for (index, h) in bundle_hashes.iter().enumerate() {
            g.inclusions.insert(
                *h,
                Inclusion {
                    height,
                    block_hash,
                    index: index as u32,
                },
            );
            g.pending.remove(h);
        }
        g.blocks.insert(height, (block.clone(), cert.clone()));
        g.batches.insert(height, (batches.clone(), table.to_vec()));
        g.undecided.retain(|h, _| *h > height);
        Ok(())
    }

    fn pending_bundles(&self) -> Result<Vec<Bundle>, ConsensusError> {
        Ok(self.lock().pending.values().cloned().collect())
    }

    fn record_dropped(&self, dropped: &[(Hash, Dropped)]) -> Result<(), ConsensusError> {
        let mut g = self.lock();
        for (h, d) in dropped {
            g.pending.remove(h);
            g.dropped.insert(*h, d.clone());
        }
        Ok(())
    }
}
