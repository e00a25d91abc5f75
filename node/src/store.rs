//! RocksDB storage: one database per node, one column family per concern.
//!
//! | column family | key                         | value                                   |
//! |---------------|-----------------------------|-----------------------------------------|
//! | `meta`        | `latest`, `layout`, `history_min` | latest decided height, store layout, first height kept |
//! | `headers`     | height (u64 BE)             | block header                            |
//! | `blocks`      | height                      | whole block (served to syncing peers)   |
//! | `certs`       | height                      | commit certificate                      |
//! | `batches_by_height` | height ++ rollup id   | that rollup's entries at height: bundle hash, index, and where the payload lies in `blocks` |
//! | `bundles`     | bundle hash                 | inclusion (height, block hash, index)   |
//! | `mempool`     | bundle hash                 | acknowledged, not yet included bundle   |
//! | `undecided`   | height ++ round ++ hash     | proposal seen for an undecided height   |
//! | `nonces`      | sender (20 bytes)           | the sender's next nonce on chain (u64)  |
//! | `dropped`     | bundle hash                 | why a pending bundle was dropped        |
//! | `tables`      | height                      | the block's namespace table (proofs)    |
//! | `extensions`  | height                      | the deciding precommits' vote extensions |
//! | `forward`     | bundle hash                 | a based-rollup bundle acknowledged, not yet in the L1 inbox |
//! | `sets`        | first height it decides     | a validator set named by an epoch's last block |
//! | `evidence`    | height ++ index             | equivocation evidence in a decided block |
//! | `based`       | `b` ++ rollup id ++ L1 block; `h` ++ bundle hash; `f` | a based rollup's batch of a finalized L1 block; the L1 block a based bundle was derived from; the newest finalized L1 block stored |
//!
//! Heights and rollup ids are big-endian so that key order is numeric order. Values are borsh. A decision is
//! one atomic write batch; acknowledged writes are fsynced unless the operator turned that off.
//!
//! History below `meta` `history_min` is pruned ([`RocksStore::prune`], `storage.retain_heights`) except at the
//! heights where the validator set changes.
//!
//! Families written a few bytes per height would keep every write-ahead log file alive until RocksDB's own bound;
//! [`WalUpkeep`] flushes them early (`storage.wal_flush_bytes`).
//!
//! A decided payload is stored once, inside its block; a rollup's batch is served as slices of the block's stored
//! bytes. `meta` `layout` = [`LAYOUT`] names this keying; [`layout`] upgrades a layout-2 directory (batches keyed
//! by rollup first) in place, and refuses layout 1 (which also stored every payload a second time).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use borsh::{BorshDeserialize, BorshSerialize};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};

use baton_consensus::bundle::Bundle;
use baton_consensus::bundle::Sender;
use baton_consensus::error::ConsensusError;
use baton_consensus::evidence::Equivocation;
use baton_consensus::hash::Hash;
use baton_consensus::ids::{L1Origin, RollupId};
use baton_consensus::store::{ChainRead, ChainStore, Durability, UndecidedProposal};
use baton_consensus::types::{
    BatchEntry, Batches, Block, BlockHeader, Certificate, Dropped, Inclusion, NamespaceEntry,
};
use baton_consensus::validators::ValidatorSet;

use crate::config::StorageSection;
use crate::error::NodeError;

mod layout;
mod wal;
pub use wal::{WalLook, WalUpkeep, LOOK_INTERVAL as WAL_LOOK_INTERVAL};

/// A vote extension as stored: the attestation and the validator's Ed25519 signature binding it to its
/// precommit.
pub type StoredExtension = (baton_consensus::context::Attestation, [u8; 64]);

const CF_META: &str = "meta";
const CF_HEADERS: &str = "headers";
const CF_BLOCKS: &str = "blocks";
const CF_CERTS: &str = "certs";
const CF_BATCHES: &str = "batches_by_height";
const CF_BUNDLES: &str = "bundles";
const CF_MEMPOOL: &str = "mempool";
const CF_UNDECIDED: &str = "undecided";
const CF_NONCES: &str = "nonces";
const CF_DROPPED: &str = "dropped";
const CF_TABLES: &str = "tables";
const CF_EXTENSIONS: &str = "extensions";
const CF_FORWARD: &str = "forward";
/// Validator sets by the first height they decide (big-endian), written with the epoch's last block.
const CF_SETS: &str = "sets";
/// Evidence in decided blocks by (height, index), big-endian.
const CF_EVIDENCE: &str = "evidence";
/// Based rollups' batches of L1 blocks that L1 finalized ([`RocksStore::put_based_final`]).
const CF_BASED: &str = "based";
const ALL_CFS: [&str; 16] = [
    CF_META,
    CF_HEADERS,
    CF_BLOCKS,
    CF_CERTS,
    CF_BATCHES,
    CF_BUNDLES,
    CF_MEMPOOL,
    CF_UNDECIDED,
    CF_NONCES,
    CF_DROPPED,
    CF_TABLES,
    CF_EXTENSIONS,
    CF_FORWARD,
    CF_SETS,
    CF_EVIDENCE,
    CF_BASED,
];
const LATEST: &[u8] = b"latest";
/// The `meta` key of the lowest height whose whole history is kept ([`RocksStore::prune`]).
const HISTORY_MIN: &[u8] = b"history_min";
/// The `meta` key of the store's layout version.
const LAYOUT_KEY: &[u8] = b"layout";
/// This build's layout: batches keyed by height first (3), not by rollup first (2); since 2 their entries point
/// into the stored block instead of copying payloads (1).
pub const LAYOUT: u32 = 3;

/// A batch entry as stored: its bundle, its index there, and where its payload lies in the block's stored bytes.
#[derive(BorshSerialize, BorshDeserialize)]
struct EntryRef {
    bundle_hash: Hash,
    index_in_bundle: u32,
    offset: u32,
    len: u32,
}

/// A height's vote extensions waiting for its decision to be committed.
type StagedExtensions = (u64, Vec<(baton_consensus::ids::Address, StoredExtension)>);

/// Handle to the node's database. Clones share it.
#[derive(Clone)]
pub struct RocksStore {
    db: Arc<DB>,
    sync_writes: bool,
    /// Vote extensions of the height about to be committed ([`RocksStore::stage_extensions`]).
    staged_extensions: Arc<std::sync::Mutex<Option<StagedExtensions>>>,
    /// The keys of the `mempool` family: the bundles this node's clients submitted, written before their
    /// acknowledgement and not yet deleted. A decision or a drop deletes only these; the rest of a block came from
    /// peers and was never written here, and a tombstone for each would cost a memtable insert per bundle per
    /// node. Read from the family at open; as many as the family holds, which the mempool's bounds bound.
    persisted: Arc<std::sync::Mutex<HashSet<Hash>>>,
}

fn be(h: u64) -> [u8; 8] {
    h.to_be_bytes()
}

/// Height first: each decision's keys follow the last one's, so RocksDB's flushed files never overlap ([`layout`]).
fn batch_key(rollup: RollupId, height: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&height.to_be_bytes());
    k[8..].copy_from_slice(&rollup.to_be_bytes());
    k
}

/// A column family of `db` by name; a missing one is a corrupt directory.
fn family<'a>(db: &'a DB, name: &'static str) -> Result<&'a rocksdb::ColumnFamily, NodeError> {
    db.cf_handle(name).ok_or(NodeError::Corrupt {
        cf: name,
        detail: "column family missing".into(),
    })
}

/// How acknowledged writes go to disk: fsynced unless the operator turned that off (`storage.sync_writes`).
fn write_opts(sync: bool) -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(sync);
    w
}

/// The latest decided height `db` holds (0: none).
fn latest_height(db: &DB) -> Result<u64, NodeError> {
    match db.get_pinned_cf(family(db, CF_META)?, LATEST)? {
        Some(v) => {
            let arr: [u8; 8] = v.as_ref().try_into().map_err(|_| NodeError::Corrupt {
                cf: CF_META,
                detail: "latest height is not 8 bytes".into(),
            })?;
            Ok(u64::from_be_bytes(arr))
        }
        None => Ok(0),
    }
}

fn enc<T: BorshSerialize>(v: &T) -> Vec<u8> {
    borsh::to_vec(v).unwrap_or_default()
}

fn dec<T: BorshDeserialize>(cf: &'static str, bytes: &[u8]) -> Result<T, NodeError> {
    borsh::from_slice(bytes).map_err(|e| NodeError::Corrupt {
        cf,
        detail: e.to_string(),
    })
}

fn to_consensus(e: NodeError) -> ConsensusError {
    ConsensusError::Storage(Box::new(e))
}

impl RocksStore {
    /// Opens (or creates) the database with the node's `[storage]` settings.
    pub fn open(path: &Path, cfg: &StorageSection) -> Result<Self, NodeError> {
        let sync_writes = cfg.sync_writes;
        std::fs::create_dir_all(path)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_open_files(512);
        opts.increase_parallelism(2);
        // RocksDB reads 0 as its own bound; `storage.max_wal_bytes` says when to set one.
        opts.set_max_total_wal_size(cfg.max_wal_bytes);
        let cache = Cache::new_lru_cache(cfg.block_cache_bytes);
        // A layout-2 directory still has its rollup-keyed `batches` family until the upgrade drops it.
        let existing = DB::list_cf(&opts, path).unwrap_or_default();
        let legacy = existing
            .iter()
            .any(|n| n == layout::CF_BATCHES_BY_ROLLUP)
            .then_some(layout::CF_BATCHES_BY_ROLLUP);
        let cfs = ALL_CFS.iter().chain(legacy.iter()).map(|name| {
            let mut o = Options::default();
            let mut t = BlockBasedOptions::default();
            t.set_block_cache(&cache);
            t.set_bloom_filter(10.0, false);
            o.set_block_based_table_factory(&t);
            // Most reads are point lookups of keys that are not there (is this bundle included? a new sender's
            // nonce): a bloom filter over the memtable answers them without walking its skip list.
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.05);
            // Payloads are the bulk of the bytes and rollups send them compressed or encrypted already: LZ4 at
            // every flush and compaction would cost CPU for nothing.
            o.set_compression_type(rocksdb::DBCompressionType::None);
            // A full memtable becomes a table file in one write: four nodes sharing a disk fill theirs at once,
            // and with RocksDB's 64 MiB default each wrote ~60 MiB every 12 s at T3's load, which held every
            // fsync behind it (one height of 150-300 ms each time). `storage.write_buffer_bytes`.
            o.set_write_buffer_size(cfg.write_buffer_bytes);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let mut db = DB::open_cf_descriptors(&opts, path, cfs)?;
        layout::settle(&mut db, &write_opts(sync_writes))?;
        let store = RocksStore {
            db: Arc::new(db),
            sync_writes,
            staged_extensions: Default::default(),
            persisted: Default::default(),
        };
        let mut persisted = HashSet::new();
        for item in store
            .db
            .iterator_cf(store.cf(CF_MEMPOOL)?, IteratorMode::Start)
        {
            let (k, _) = item?;
            let key: [u8; 32] = k.as_ref().try_into().map_err(|_| NodeError::Corrupt {
                cf: CF_MEMPOOL,
                detail: format!("a key of {} bytes, not a 32-byte bundle hash", k.len()),
            })?;
            persisted.insert(Hash(key));
        }
        *store.persisted_keys() = persisted;
        Ok(store)
    }

    fn cf(&self, name: &'static str) -> Result<&rocksdb::ColumnFamily, NodeError> {
        family(&self.db, name)
    }

    fn write_opts(&self) -> WriteOptions {
        write_opts(self.sync_writes)
    }

    fn get<T: BorshDeserialize>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> Result<Option<T>, NodeError> {
        match self.db.get_pinned_cf(self.cf(cf)?, key)? {
            Some(v) => Ok(Some(dec(cf, &v)?)),
            None => Ok(None),
        }
    }

    pub fn latest_height(&self) -> Result<u64, NodeError> {
        latest_height(&self.db)
    }

    /// The lowest height whose whole history (block, batches, header, certificate) this node keeps; 1 when
    /// nothing was pruned.
    pub fn history_min(&self) -> Result<u64, NodeError> {
        match self.db.get_pinned_cf(self.cf(CF_META)?, HISTORY_MIN)? {
            Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                NodeError::Corrupt {
                    cf: CF_META,
                    detail: "history_min is not 8 bytes".into(),
                }
            })?)),
            None => Ok(1),
        }
    }

    /// Forgets the history of heights below `below`, oldest first and at most `max_heights` of them per call (a
    /// bounded write; the caller comes back for the rest): their blocks, batches, namespace tables, headers,
    /// certificates and vote extensions. Kept are the heights where an epoch hands over to another set (an L1
    /// rotation is built from that block and its attestations), the set changes and evidence themselves, the
    /// bundle index (`bundles`: forced-inclusion rules ask whether an old L1 entry was included) and the nonces.
    /// The new minimum is written in the same batch as the deletes; nothing here needs an fsync (a lost prune is
    /// redone). Returns the history minimum after the call.
    pub fn prune(
        &self,
        below: u64,
        rollups: &[RollupId],
        max_heights: u64,
    ) -> Result<u64, NodeError> {
        let from = self.history_min()?;
        let to = below.min(from.saturating_add(max_heights));
        if to <= from {
            return Ok(from);
        }
        let keep: HashSet<u64> = self
            .set_changes()?
            .into_iter()
            .filter_map(|(first, _)| first.checked_sub(1))
            .collect();
        let per_height = [CF_BLOCKS, CF_HEADERS, CF_CERTS, CF_TABLES, CF_EXTENSIONS]
            .into_iter()
            .map(|name| self.cf(name))
            .collect::<Result<Vec<_>, _>>()?;
        let cf_batches = self.cf(CF_BATCHES)?;
        let mut wb = WriteBatch::default();
        for h in (from..to).filter(|h| !keep.contains(h)) {
            for cf in &per_height {
                wb.delete_cf(*cf, be(h));
            }
            for r in rollups {
                wb.delete_cf(cf_batches, batch_key(*r, h));
            }
        }
        wb.put_cf(self.cf(CF_META)?, HISTORY_MIN, be(to));
        self.db.write(wb)?;
        Ok(to)
    }

    /// A rollup's batch entries at a decided height (empty if it had none), cut out of the stored block.
    fn cut_batch(&self, rollup: RollupId, height: u64) -> Result<Vec<BatchEntry>, NodeError> {
        let refs: Vec<EntryRef> = self
            .get(CF_BATCHES, &batch_key(rollup, height))?
            .unwrap_or_default();
        if refs.is_empty() {
            return Ok(Vec::new());
        }
        let block = self
            .db
            .get_pinned_cf(self.cf(CF_BLOCKS)?, be(height))?
            .ok_or_else(|| NodeError::Corrupt {
                cf: CF_BLOCKS,
                detail: format!("height {height} has batch entries but no block"),
            })?;
        refs.into_iter()
            .map(|r| {
                let at = r.offset as usize;
                let payload =
                    block
                        .get(at..at + r.len as usize)
                        .ok_or_else(|| NodeError::Corrupt {
                            cf: CF_BATCHES,
                            detail: format!(
                            "an entry of rollup {rollup} at height {height} lies past its block"
                        ),
                        })?;
                Ok(BatchEntry {
                    bundle_hash: r.bundle_hash,
                    index_in_bundle: r.index_in_bundle,
                    payload: payload.to_vec(),
                })
            })
            .collect()
    }

    /// Every set change: (first height it decides, the set), ascending.
    pub fn set_changes(&self) -> Result<Vec<(u64, ValidatorSet)>, NodeError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SETS)?, IteratorMode::Start) {
            let (k, v) = item?;
            let first = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| NodeError::Corrupt {
                    cf: CF_SETS,
                    detail: "key is not a height".into(),
                })?;
            out.push((first, dec(CF_SETS, &v)?));
        }
        Ok(out)
    }

    /// The set deciding `height` when it is not the genesis set (the newest set change at or below it).
    fn set_at(&self, height: u64) -> Result<Option<ValidatorSet>, NodeError> {
        let key = be(height);
        let mut it = self.db.iterator_cf(
            self.cf(CF_SETS)?,
            IteratorMode::From(&key, rocksdb::Direction::Reverse),
        );
        match it.next() {
            Some(item) => {
                let (_, v) = item?;
                Ok(Some(dec(CF_SETS, &v)?))
            }
            None => Ok(None),
        }
    }

    /// Evidence in decided blocks from height `from` on, with the height of the block that carried it.
    fn evidence_from(&self, from: u64) -> Result<Vec<(u64, Equivocation)>, NodeError> {
        let cf = self.cf(CF_EVIDENCE)?;
        let start = be(from);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, rocksdb::Direction::Forward))
        {
            let (k, v) = item?;
            let height = k
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| NodeError::Corrupt {
                    cf: CF_EVIDENCE,
                    detail: "key shorter than a height".into(),
                })?;
            out.push((height, dec(CF_EVIDENCE, &v)?));
        }
        Ok(out)
    }

    /// Hands over the vote extensions (L1 attestations) of the precommits that decided `height`: they are written
    /// with that height's decision, in the same atomic write (so a decided height never lacks them and the
    /// decision costs one fsync), and served with its certificate to syncing peers.
    pub fn stage_extensions(
        &self,
        height: u64,
        extensions: &[(baton_consensus::ids::Address, StoredExtension)],
    ) {
        *self
            .staged_extensions
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some((height, extensions.to_vec()));
    }

    /// Keeps a bundle for a based rollup until the inbox shows it (written before the submission is
    /// acknowledged).
    pub fn put_forward(&self, hash: &Hash, bundle: &Bundle) -> Result<(), NodeError> {
        self.db.put_cf_opt(
            self.cf(CF_FORWARD)?,
            hash.0,
            enc(bundle),
            &self.write_opts(),
        )?;
        Ok(())
    }

    /// Forgets forwarded bundles the inbox now shows.
    pub fn remove_forward(&self, hashes: &[Hash]) -> Result<(), NodeError> {
        let cf = self.cf(CF_FORWARD)?;
        let mut batch = WriteBatch::default();
        for h in hashes {
            batch.delete_cf(cf, h.0);
        }
        self.db.write_opt(batch, &self.write_opts())?;
        Ok(())
    }

    /// Bundles waiting to be forwarded to the inbox.
    pub fn forward_pending(&self) -> Result<Vec<Bundle>, NodeError> {
        let cf = self.cf(CF_FORWARD)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (_, v) = item?;
            out.push(dec(CF_FORWARD, &v)?);
        }
        Ok(out)
    }

    /// The vote extensions stored for `height` (empty if none).
    pub fn extensions(
        &self,
        height: u64,
    ) -> Result<Vec<(baton_consensus::ids::Address, StoredExtension)>, NodeError> {
        Ok(self.get(CF_EXTENSIONS, &be(height))?.unwrap_or_default())
    }

    /// Makes acknowledged bundles durable (one write, one fsync) before the node acknowledges them.
    pub fn persist_pending(&self, bundles: &[(Hash, &Bundle)]) -> Result<(), NodeError> {
        let cf = self.cf(CF_MEMPOOL)?;
        let mut wb = WriteBatch::default();
        for (h, b) in bundles {
            wb.put_cf(cf, h.0, enc(*b));
        }
        // Noted before the write: a decision that takes one of them meanwhile deletes it, as it did before this
        // note was kept (a key written after its delete is found included when the mempool is reloaded, and
        // dropped then).
        self.persisted_keys()
            .extend(bundles.iter().map(|(h, _)| *h));
        self.db.write_opt(wb, &self.write_opts())?;
        Ok(())
    }

    fn persisted_keys(&self) -> std::sync::MutexGuard<'_, HashSet<Hash>> {
        self.persisted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit_inner(
        &self,
        block: &Block,
        hashes: &[Hash],
        batches: &Batches,
        table: &[NamespaceEntry],
        cert: &Certificate,
    ) -> Result<(), NodeError> {
        let height = block.height();
        let block_hash = block.hash();
        let block_bytes = block.encode();
        let refs = entry_refs(block, hashes, batches)?;
        let mut wb = WriteBatch::default();
        wb.put_cf(self.cf(CF_HEADERS)?, be(height), enc(&block.header));
        wb.put_cf(self.cf(CF_BLOCKS)?, be(height), &block_bytes);
        wb.put_cf(self.cf(CF_CERTS)?, be(height), enc(cert));
        wb.put_cf(self.cf(CF_TABLES)?, be(height), enc(&table.to_vec()));
        if let Some(set) = &block.next_validators {
            wb.put_cf(self.cf(CF_SETS)?, be(height + 1), enc(set));
        }
        let cf_evidence = self.cf(CF_EVIDENCE)?;
        for (i, e) in block.evidence.iter().enumerate() {
            let mut key = be(height).to_vec();
            key.extend_from_slice(&(i as u32).to_be_bytes());
            wb.put_cf(cf_evidence, key, enc(e));
        }
        // A sender's bundles appear in a block in nonce order, so the last one sets its next nonce.
        let mut nonces: std::collections::HashMap<Sender, u64> = std::collections::HashMap::new();
        for b in &block.bundles {
            nonces.insert(b.sender, b.nonce + 1);
        }
        let cf_nonces = self.cf(CF_NONCES)?;
        for (sender, next) in nonces {
            wb.put_cf(cf_nonces, sender.as_slice(), enc(&next));
        }
        let cf_batches = self.cf(CF_BATCHES)?;
        for (rollup, refs) in refs {
            wb.put_cf(cf_batches, batch_key(rollup, height), enc(&refs));
        }
        let cf_bundles = self.cf(CF_BUNDLES)?;
        let cf_mempool = self.cf(CF_MEMPOOL)?;
        for (index, h) in hashes.iter().enumerate() {
            wb.put_cf(
                cf_bundles,
                h.0,
                enc(&Inclusion {
                    height,
                    block_hash,
                    index: index as u32,
                }),
            );
        }
        let deleted = self.delete_persisted(&mut wb, cf_mempool, hashes.iter());
        // Point deletes of this height's proposals (earlier heights were cleared by earlier commits). Not
        // `delete_range`: one range tombstone per height piles up and slows every later read of this family.
        let cf_undecided = self.cf(CF_UNDECIDED)?;
        let prefix = be(height);
        for item in self.db.iterator_cf(
            cf_undecided,
            IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        ) {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            wb.delete_cf(cf_undecided, k);
        }
        let staged = self
            .staged_extensions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((h, extensions)) = staged.filter(|(h, _)| *h == height) {
            wb.put_cf(self.cf(CF_EXTENSIONS)?, be(h), enc(&extensions));
        }
        wb.put_cf(self.cf(CF_META)?, LATEST, be(height));
        self.db.write_opt(wb, &self.write_opts())?;
        self.forget_persisted(&deleted);
        Ok(())
    }

    /// Adds to `wb` the deletes of those of `hashes` this node wrote to the `mempool` family, and returns them,
    /// for [`RocksStore::forget_persisted`] once the write succeeded.
    fn delete_persisted<'a>(
        &self,
        wb: &mut WriteBatch,
        cf_mempool: &rocksdb::ColumnFamily,
        hashes: impl Iterator<Item = &'a Hash>,
    ) -> Vec<Hash> {
        let persisted = self.persisted_keys();
        let deleted: Vec<Hash> = hashes.filter(|h| persisted.contains(h)).copied().collect();
        for h in &deleted {
            wb.delete_cf(cf_mempool, h.0);
        }
        deleted
    }

    /// Keys of the `mempool` family deleted by a write that succeeded.
    fn forget_persisted(&self, deleted: &[Hash]) {
        if !deleted.is_empty() {
            let mut persisted = self.persisted_keys();
            for h in deleted {
                persisted.remove(h);
            }
        }
    }
}

/// Each rollup's batch as references into the block's encoding ([`Block::encode`]).
fn entry_refs(
    block: &Block,
    hashes: &[Hash],
    batches: &Batches,
) -> Result<Vec<(RollupId, Vec<EntryRef>)>, NodeError> {
    let spans = block.payload_spans();
    let position: std::collections::HashMap<&Hash, usize> =
        hashes.iter().enumerate().map(|(i, h)| (h, i)).collect();
    batches
        .iter()
        .map(|(rollup, entries)| {
            let refs = entries
                .iter()
                .map(|e| {
                    let (offset, len) = position
                        .get(&e.bundle_hash)
                        .and_then(|b| spans.get(*b)?.get(e.index_in_bundle as usize))
                        .copied()
                        .ok_or_else(|| NodeError::Corrupt {
                            cf: CF_BATCHES,
                            detail: format!(
                                "a batch entry of rollup {rollup} is not in block {}",
                                block.height()
                            ),
                        })?;
                    Ok(EntryRef {
                        bundle_hash: e.bundle_hash,
                        index_in_bundle: e.index_in_bundle,
                        offset: u32::try_from(offset).map_err(|_| too_large(block))?,
                        len: u32::try_from(len).map_err(|_| too_large(block))?,
                    })
                })
                .collect::<Result<Vec<_>, NodeError>>()?;
            Ok((*rollup, refs))
        })
        .collect()
}

/// `based` keys: `b` + rollup + L1 block (a batch: the block's hash and its entries), `h` + bundle hash (the L1
/// block it was derived from), `f` (the last final L1 block derived).
fn based_key(rollup: RollupId, number: u64) -> [u8; 17] {
    let mut k = [b'b'; 17];
    k[1..9].copy_from_slice(&rollup.to_be_bytes());
    k[9..].copy_from_slice(&number.to_be_bytes());
    k
}

fn based_hash_key(h: &Hash) -> [u8; 33] {
    let mut k = [b'h'; 33];
    k[1..].copy_from_slice(&h.0);
    k
}

const BASED_FINAL: &[u8] = b"f";

/// Based rollups' batches of final L1 blocks (`based.rs` keeps only the newer ones in memory).
impl RocksStore {
    /// Stores the batches of L1 blocks L1 has finalized, the bundles derived from them (for the derivation's
    /// first-occurrence rule) and `last`, the newest final block derived; one write.
    pub fn put_based_final(
        &self,
        batches: &[(RollupId, L1Origin, Vec<BatchEntry>)],
        derived: &[(Hash, u64)],
        last: L1Origin,
    ) -> Result<(), NodeError> {
        let cf = self.cf(CF_BASED)?;
        let mut wb = WriteBatch::default();
        for (rollup, origin, entries) in batches {
            wb.put_cf(
                cf,
                based_key(*rollup, origin.number),
                enc(&(origin.hash, entries)),
            );
        }
        for (h, number) in derived {
            wb.put_cf(cf, based_hash_key(h), be(*number));
        }
        wb.put_cf(cf, BASED_FINAL, enc(&last));
        self.db.write_opt(wb, &self.write_opts())?;
        Ok(())
    }

    /// The newest final L1 block whose based batches are stored.
    pub fn based_final(&self) -> Result<Option<L1Origin>, NodeError> {
        self.get(CF_BASED, BASED_FINAL)
    }

    /// Up to `max` stored batches of `rollup` from L1 block `from` on, in order.
    pub fn based_batches(
        &self,
        rollup: RollupId,
        from: u64,
        max: usize,
    ) -> Result<Vec<(L1Origin, Vec<BatchEntry>)>, NodeError> {
        let cf = self.cf(CF_BASED)?;
        let start = based_key(rollup, from);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&start, rocksdb::Direction::Forward))
        {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            if k.len() != 17 || k[..9] != start[..9] {
                break;
            }
            let number = u64::from_be_bytes(k[9..].try_into().unwrap_or_default());
            let (hash, entries): (Hash, Vec<BatchEntry>) = dec(CF_BASED, &v)?;
            out.push((L1Origin { number, hash }, entries));
        }
        Ok(out)
    }

    /// Whether a based bundle was derived from a final L1 block.
    pub fn based_derived(&self, bundle: &Hash) -> Result<bool, NodeError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_BASED)?, based_hash_key(bundle))?
            .is_some())
    }

    /// Withdraws what was stored from L1 block `from` on (L1 broke finality), with `last` as the new newest.
    pub fn drop_based_from(&self, from: u64, last: Option<L1Origin>) -> Result<(), NodeError> {
        let cf = self.cf(CF_BASED)?;
        let mut wb = WriteBatch::default();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            let number = match (k.first(), k.len()) {
                (Some(b'b'), 17) => u64::from_be_bytes(k[9..].try_into().unwrap_or_default()),
                (Some(b'h'), 33) => u64::from_be_bytes(v.as_ref().try_into().unwrap_or_default()),
                _ => continue,
            };
            if number >= from {
                wb.delete_cf(cf, k);
            }
        }
        match last {
            Some(l) => wb.put_cf(cf, BASED_FINAL, enc(&l)),
            None => wb.delete_cf(cf, BASED_FINAL),
        }
        self.db.write_opt(wb, &self.write_opts())?;
        Ok(())
    }
}

fn too_large(block: &Block) -> NodeError {
    NodeError::Corrupt {
        cf: CF_BLOCKS,
        detail: format!("block {} is larger than 4 GiB", block.height()),
    }
}

impl ChainRead for RocksStore {
    fn latest(&self) -> Result<Option<BlockHeader>, ConsensusError> {
        let h = self.latest_height().map_err(to_consensus)?;
        if h == 0 {
            return Ok(None);
        }
        self.header(h)
    }

    fn block(&self, height: u64) -> Result<Option<Block>, ConsensusError> {
        self.get(CF_BLOCKS, &be(height)).map_err(to_consensus)
    }

    fn certificate(&self, height: u64) -> Result<Option<Certificate>, ConsensusError> {
        self.get(CF_CERTS, &be(height)).map_err(to_consensus)
    }

    fn inclusion(&self, bundle: &Hash) -> Result<Option<Inclusion>, ConsensusError> {
        self.get(CF_BUNDLES, &bundle.0).map_err(to_consensus)
    }

    fn next_nonce(&self, sender: &Sender) -> Result<u64, ConsensusError> {
        Ok(self
            .get::<u64>(CF_NONCES, sender.as_slice())
            .map_err(to_consensus)?
            .unwrap_or(0))
    }

    fn dropped(&self, bundle: &Hash) -> Result<Option<Dropped>, ConsensusError> {
        self.get(CF_DROPPED, &bundle.0).map_err(to_consensus)
    }

    fn validator_set_at(&self, height: u64) -> Result<Option<ValidatorSet>, ConsensusError> {
        self.set_at(height).map_err(to_consensus)
    }

    fn evidence(&self) -> Result<Vec<(u64, Equivocation)>, ConsensusError> {
        self.evidence_from(0).map_err(to_consensus)
    }

    fn header(&self, height: u64) -> Result<Option<BlockHeader>, ConsensusError> {
        self.get(CF_HEADERS, &be(height)).map_err(to_consensus)
    }

    /// Cut out of the stored block: `batches_by_height` keeps each entry's place in it, not a copy of its payload.
    fn batch_entries(
        &self,
        rollup: RollupId,
        height: u64,
    ) -> Result<Vec<BatchEntry>, ConsensusError> {
        self.cut_batch(rollup, height).map_err(to_consensus)
    }

    fn namespace_table(&self, height: u64) -> Result<Option<Vec<NamespaceEntry>>, ConsensusError> {
        self.get(CF_TABLES, &be(height)).map_err(to_consensus)
    }

    fn is_pending(&self, hash: &Hash) -> Result<bool, ConsensusError> {
        let cf = self.cf(CF_MEMPOOL).map_err(to_consensus)?;
        Ok(self
            .db
            .get_pinned_cf(cf, hash.0)
            .map_err(|e| to_consensus(e.into()))?
            .is_some())
    }
}

impl ChainStore for RocksStore {
    fn put_undecided(
        &self,
        height: u64,
        p: &UndecidedProposal,
        durability: Durability,
    ) -> Result<(), ConsensusError> {
        let mut key = Vec::with_capacity(44);
        key.extend_from_slice(&be(height));
        key.extend_from_slice(&p.round.to_be_bytes());
        key.extend_from_slice(&p.block.hash().0);
        let cf = self.cf(CF_UNDECIDED).map_err(to_consensus)?;
        let mut opts = self.write_opts();
        if durability == Durability::Lazy {
            opts.set_sync(false);
        }
        self.db
            .put_cf_opt(cf, key, enc(p), &opts)
            .map_err(|e| to_consensus(e.into()))
    }

    fn undecided(&self, height: u64) -> Result<Vec<UndecidedProposal>, ConsensusError> {
        let cf = self.cf(CF_UNDECIDED).map_err(to_consensus)?;
        let prefix = be(height);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(|e| to_consensus(e.into()))?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(dec(CF_UNDECIDED, &v).map_err(to_consensus)?);
        }
        Ok(out)
    }

    fn commit(
        &self,
        block: &Block,
        hashes: &[Hash],
        batches: &Batches,
        table: &[NamespaceEntry],
        cert: &Certificate,
    ) -> Result<(), ConsensusError> {
        self.commit_inner(block, hashes, batches, table, cert)
            .map_err(to_consensus)
    }

    fn record_dropped(&self, dropped: &[(Hash, Dropped)]) -> Result<(), ConsensusError> {
        if dropped.is_empty() {
            return Ok(());
        }
        let run = || -> Result<(), NodeError> {
            let cf_dropped = self.cf(CF_DROPPED)?;
            let cf_mempool = self.cf(CF_MEMPOOL)?;
            let mut wb = WriteBatch::default();
            for (h, d) in dropped {
                wb.put_cf(cf_dropped, h.0, enc(d));
            }
            let deleted =
                self.delete_persisted(&mut wb, cf_mempool, dropped.iter().map(|(h, _)| h));
            self.db.write_opt(wb, &self.write_opts())?;
            self.forget_persisted(&deleted);
            Ok(())
        };
        run().map_err(to_consensus)
    }

    fn pending_bundles(&self) -> Result<Vec<Bundle>, ConsensusError> {
        let cf = self.cf(CF_MEMPOOL).map_err(to_consensus)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (_, v) = item.map_err(|e| to_consensus(e.into()))?;
            out.push(dec(CF_MEMPOOL, &v).map_err(to_consensus)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_signer_local::PrivateKeySigner;
    use baton_consensus::bundle::BundleEntry;
    use baton_consensus::bundle::UnsignedBundle;
    use baton_consensus::fixtures;
    use baton_consensus::ids::Address;
    use baton_consensus::registry::ChainSpec;
    use baton_consensus::signing::ChainDomain;

    /// A certificate for `blk` in round 0 (the store keeps it; it does not check the signatures).
    fn cert_of(blk: &Block) -> Certificate {
        Certificate {
            height: blk.height(),
            round: 0,
            block_hash: blk.hash(),
            signatures: vec![],
        }
    }

    fn block(height: u64, bundles: Vec<Bundle>) -> (Block, Batches, Vec<NamespaceEntry>) {
        let keys = fixtures::validator_keys(1, 1);
        let ctx = fixtures::block_context(height, fixtures::validator_set(&keys));
        let spec = ChainSpec::for_tests(7, 9);
        let d = fixtures::decide(&ctx, &spec, &ChainDomain::new("store"), bundles, &keys);
        (d.block, d.batches, d.table)
    }

    /// A decision deletes from the `mempool` family only the bundles this node wrote there (its clients'
    /// submissions). The others came from peers and were never written here: a tombstone for each would be a
    /// memtable insert per bundle per node for nothing. What this node wrote is deleted, also after a reopen.
    #[test]
    fn a_decision_deletes_only_the_bundles_this_node_persisted() {
        use baton_consensus::bundle::testing::bundle;
        let dir = tempfile::tempdir().unwrap();
        let (own, peer, later) = (
            bundle(1, 0, &[7], 1),
            bundle(2, 0, &[7], 2),
            bundle(3, 0, &[7], 3),
        );
        let deletes = |s: &RocksStore| {
            s.db.property_int_value_cf(
                s.cf(CF_MEMPOOL).unwrap(),
                "rocksdb.num-deletes-active-mem-table",
            )
            .unwrap()
            .unwrap()
        };
        {
            let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
            s.persist_pending(&[(own.hash(), &own), (later.hash(), &later)])
                .unwrap();
            let (blk, batches, table) = block(1, vec![own.clone(), peer.clone()]);
            let cert = cert_of(&blk);
            s.commit(&blk, &[own.hash(), peer.hash()], &batches, &table, &cert)
                .unwrap();
            assert_eq!(deletes(&s), 1, "one tombstone: the bundle written here");
            assert_eq!(s.pending_bundles().unwrap(), vec![later.clone()]);
        }
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        let before = deletes(&s);
        s.record_dropped(&[
            (
                later.hash(),
                Dropped::Expired {
                    expiry_height: 3,
                    height: 4,
                },
            ),
            (
                bundle(4, 0, &[7], 4).hash(),
                Dropped::Expired {
                    expiry_height: 3,
                    height: 4,
                },
            ),
        ])
        .unwrap();
        assert_eq!(deletes(&s), before + 1, "the reopened store knows its own");
        assert!(s.pending_bundles().unwrap().is_empty());
    }

    /// The live write-ahead log stays near `storage.max_wal_bytes` while one family takes all the writes. A log
    /// file goes only once every family with data in it has been flushed, so the families a chain writes rarely
    /// (headers, certificates, nonces) would otherwise keep every log alive up to RocksDB's own bound, four times
    /// all memtables, and then force one large flush and deletion on every node at once.
    #[test]
    fn the_write_ahead_log_stays_bounded_while_one_family_takes_the_writes() {
        use baton_consensus::bundle::testing::bundle;
        let dir = tempfile::tempdir().unwrap();
        let cfg = StorageSection {
            write_buffer_bytes: 1 << 20,
            max_wal_bytes: 4 << 20,
            ..StorageSection::for_tests(false)
        };
        let s = RocksStore::open(dir.path(), &cfg).unwrap();
        // One decision writes the families written once per height.
        let first = bundle(1, 0, &[7], 1);
        let (blk, batches, table) = block(1, vec![first.clone()]);
        let cert = cert_of(&blk);
        s.commit(&blk, &[first.hash()], &batches, &table, &cert)
            .unwrap();
        // Then 48 MiB of submissions, into the mempool family alone.
        for nonce in 0..768u64 {
            let b = wal::tests::large_submission(nonce);
            s.persist_pending(&[(b.hash(), &b)]).unwrap();
        }
        let live_log = || wal::live_log_bytes(dir.path());
        // Flushes and the deletion of log files run in the background: give them time.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while live_log() > 16 << 20 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let live = live_log();
        assert!(
            live <= 16 << 20,
            "{live} bytes of write-ahead log still live after 48 MiB of writes (bound 4 MiB)"
        );
    }

    #[test]
    fn commit_indexes_batches_bundles_nonces_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKeySigner::random();
        let b1 = baton_proto::client::sign_bundle(
            &key,
            UnsignedBundle {
                network_id: 7,
                sender: key.address(),
                nonce: 4,
                expiry_height: 100,
                entries: vec![
                    BundleEntry {
                        rollup_id: 7,
                        payload: b"x".to_vec(),
                    },
                    BundleEntry {
                        rollup_id: 9,
                        payload: b"y".to_vec(),
                    },
                ],
            },
        )
        .unwrap();
        let h1 = b1.hash();
        {
            let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
            s.persist_pending(&[(h1, &b1)]).unwrap();
            assert!(s.is_pending(&h1).unwrap());
            assert_eq!(s.pending_bundles().unwrap(), vec![b1.clone()]);
            let (blk, batches, table) = block(1, vec![b1.clone()]);
            let p = UndecidedProposal {
                round: 0,
                valid_round: None,
                proposer: Address([1; 20]),
                valid: true,
                block: blk.clone(),
            };
            s.put_undecided(1, &p, Durability::Now).unwrap();
            s.put_undecided(2, &p, Durability::Lazy).unwrap();
            assert_eq!(s.undecided(1).unwrap(), vec![p.clone()]);
            let cert = cert_of(&blk);
            s.commit(&blk, &[h1], &batches, &table, &cert).unwrap();
            let gone = Hash([9; 32]);
            s.persist_pending(&[(gone, &b1)]).unwrap();
            s.record_dropped(&[(
                gone,
                Dropped::Expired {
                    expiry_height: 3,
                    height: 4,
                },
            )])
            .unwrap();
        }
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        assert_eq!(s.latest_height().unwrap(), 1);
        assert!(!s.is_pending(&h1).unwrap());
        assert_eq!(s.inclusion(&h1).unwrap().unwrap().height, 1);
        assert_eq!(s.batch_entries(7, 1).unwrap()[0].payload, b"x".to_vec());
        assert_eq!(s.batch_entries(9, 1).unwrap()[0].index_in_bundle, 1);
        assert!(s.batch_entries(8, 1).unwrap().is_empty());
        assert!(s.undecided(1).unwrap().is_empty());
        assert_eq!(s.undecided(2).unwrap().len(), 1);
        assert_eq!(s.certificate(1).unwrap().unwrap().height, 1);
        assert_eq!(s.next_nonce(&key.address()).unwrap(), 5);
        assert_eq!(s.namespace_table(1).unwrap().unwrap().len(), 9);
        assert!(matches!(
            s.dropped(&Hash([9; 32])).unwrap(),
            Some(Dropped::Expired { .. })
        ));
        assert!(!s.is_pending(&Hash([9; 32])).unwrap());
    }

    #[test]
    fn batches_are_cut_from_the_one_stored_copy_of_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        let signed = |nonce: u64, entries: &[(RollupId, usize)]| {
            let key = PrivateKeySigner::random();
            baton_proto::client::sign_bundle(
                &key,
                UnsignedBundle {
                    network_id: 7,
                    sender: key.address(),
                    nonce,
                    expiry_height: 100,
                    entries: entries
                        .iter()
                        .enumerate()
                        .map(|(i, (rollup_id, len))| BundleEntry {
                            rollup_id: *rollup_id,
                            payload: (0..*len)
                                .map(|j| (nonce as usize + i * 31 + j) as u8)
                                .collect(),
                        })
                        .collect(),
                },
            )
            .unwrap()
        };
        let bundles = vec![
            signed(0, &[(9, 700), (7, 3), (9, 0)]),
            signed(1, &[(7, 1_000)]),
            signed(2, &[(9, 5), (7, 64), (7, 129)]),
        ];
        let hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
        let (blk, batches, table) = block(1, bundles);
        let cert = cert_of(&blk);
        s.commit(&blk, &hashes, &batches, &table, &cert).unwrap();
        for (rollup, entries) in &batches {
            assert_eq!(
                &s.batch_entries(*rollup, 1).unwrap(),
                entries,
                "rollup {rollup}"
            );
            // The batch family holds references, not a second copy of the payloads.
            let stored =
                s.db.get_cf(s.cf(CF_BATCHES).unwrap(), batch_key(*rollup, 1))
                    .unwrap()
                    .unwrap();
            let payload: usize = entries.iter().map(|e| e.payload.len()).sum();
            assert!(
                stored.len() < payload,
                "rollup {rollup}: {} stored bytes",
                stored.len()
            );
        }
        assert_eq!(batches.len(), 2);
    }

    #[test]
    fn a_data_directory_in_another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
            // A directory written before layout marks: chain data, no mark.
            let meta = s.cf(CF_META).unwrap();
            s.db.put_cf(meta, LATEST, be(3)).unwrap();
            s.db.delete_cf(meta, LAYOUT_KEY).unwrap();
        }
        let err = RocksStore::open(dir.path(), &StorageSection::for_tests(true))
            .err()
            .expect("refused");
        assert!(
            matches!(
                err,
                NodeError::StoreLayout {
                    found: 1,
                    expected: LAYOUT
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("empty data directory"), "{err}");
        // A fresh directory is marked with this build's layout and opens again.
        let fresh = tempfile::tempdir().unwrap();
        drop(RocksStore::open(fresh.path(), &StorageSection::for_tests(true)).unwrap());
        RocksStore::open(fresh.path(), &StorageSection::for_tests(true)).unwrap();
    }

    fn evidence(n: u8) -> Equivocation {
        use baton_consensus::evidence::{Kind, Signed};
        let signed = |v: u8| Signed {
            value: Some(Hash([v; 32])),
            pol_round: 0,
            signature: [n; 64],
        };
        Equivocation::new(Kind::Prevote, Address([n; 20]), 4, 0, signed(1), signed(2))
    }

    #[test]
    fn pruning_forgets_old_history_in_bounded_steps_but_keeps_set_handovers() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKeySigner::random();
        let set = baton_consensus::validators::ValidatorSet::equal_power(&[
            ed25519_consensus::SigningKey::from([2; 32]).verification_key(),
        ])
        .unwrap();
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        for h in 1..=10u64 {
            let b = baton_proto::client::sign_bundle(
                &key,
                UnsignedBundle {
                    network_id: 7,
                    sender: key.address(),
                    nonce: h - 1,
                    expiry_height: 100,
                    entries: vec![BundleEntry {
                        rollup_id: 7,
                        payload: vec![h as u8; 100],
                    }],
                },
            )
            .unwrap();
            let (mut blk, batches, table) = block(h, vec![b.clone()]);
            if h == 4 {
                blk.next_validators = Some(set.clone());
            }
            let cert = cert_of(&blk);
            s.commit(&blk, &[b.hash()], &batches, &table, &cert)
                .unwrap();
        }
        assert_eq!(s.history_min().unwrap(), 1);
        // At most 3 heights per call.
        assert_eq!(s.prune(8, &[7, 9], 3).unwrap(), 4);
        assert_eq!(s.prune(8, &[7, 9], 3).unwrap(), 7);
        assert_eq!(s.prune(8, &[7, 9], 3).unwrap(), 8);
        assert_eq!(s.prune(8, &[7, 9], 3).unwrap(), 8, "nothing more below 8");
        for h in [1u64, 2, 3, 5, 6, 7] {
            assert_eq!(s.block(h).unwrap(), None, "block {h}");
            assert_eq!(s.header(h).unwrap(), None, "header {h}");
            assert_eq!(s.certificate(h).unwrap(), None, "cert {h}");
            assert!(s.batch_entries(7, h).unwrap().is_empty(), "batch {h}");
        }
        // The handover at 4 (its block names the next set) stays whole, and so does everything from 8.
        assert!(s.block(4).unwrap().is_some() && s.certificate(4).unwrap().is_some());
        assert_eq!(s.batch_entries(7, 4).unwrap().len(), 1);
        for h in 8..=10 {
            assert_eq!(
                s.batch_entries(7, h).unwrap()[0].payload,
                vec![h as u8; 100]
            );
        }
        assert_eq!(s.latest().unwrap().unwrap().height, 10);
        drop(s);
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        assert_eq!(s.history_min().unwrap(), 8, "kept across restarts");
    }

    #[test]
    fn vote_extensions_are_written_with_their_height_decision_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        let ext = |n: u8| {
            vec![(
                Address([n; 20]),
                (baton_consensus::context::Attestation([n; 65]), [n; 64]),
            )]
        };
        let commit = |h: u64| {
            let (blk, batches, table) = block(h, vec![]);
            let cert = cert_of(&blk);
            s.commit(&blk, &[], &batches, &table, &cert).unwrap();
        };
        // Staged for height 1: nothing is written until height 1's decision, then with it.
        s.stage_extensions(1, &ext(1));
        assert!(s.extensions(1).unwrap().is_empty());
        commit(1);
        assert_eq!(s.extensions(1).unwrap(), ext(1));
        // Staged for a height whose decision did not come (the node restarted the height): not written with
        // another height's decision.
        s.stage_extensions(5, &ext(5));
        commit(2);
        assert!(s.extensions(2).unwrap().is_empty());
        assert!(s.extensions(5).unwrap().is_empty());
    }

    #[test]
    fn set_changes_and_evidence_are_found_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let set = |n: u8| {
            baton_consensus::validators::ValidatorSet::equal_power(
                &(1..=n)
                    .map(|i| ed25519_consensus::SigningKey::from([i; 32]).verification_key())
                    .collect::<Vec<_>>(),
            )
            .unwrap()
        };
        {
            let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
            for h in 1..=7u64 {
                let (mut blk, batches, table) = block(h, vec![]);
                // Blocks 3 and 6 end epochs with a change: sets of 2 and 3 validators from heights 4 and 7.
                blk.next_validators = match h {
                    3 => Some(set(2)),
                    6 => Some(set(3)),
                    _ => None,
                };
                if h == 5 {
                    blk.evidence = vec![evidence(1), evidence(2)];
                }
                let cert = cert_of(&blk);
                s.commit(&blk, &[], &batches, &table, &cert).unwrap();
            }
        }
        let s = RocksStore::open(dir.path(), &StorageSection::for_tests(true)).unwrap();
        for h in 1..=3 {
            assert_eq!(s.validator_set_at(h).unwrap(), None, "genesis set at {h}");
        }
        for h in 4..=6 {
            assert_eq!(s.validator_set_at(h).unwrap(), Some(set(2)), "height {h}");
        }
        assert_eq!(s.validator_set_at(7).unwrap(), Some(set(3)));
        assert_eq!(s.validator_set_at(1_000).unwrap(), Some(set(3)));
        assert_eq!(s.block(3).unwrap().unwrap().next_validators, Some(set(2)));
        assert_eq!(
            s.evidence().unwrap(),
            vec![(5, evidence(1)), (5, evidence(2))]
        );
        assert_eq!(s.evidence_from(6).unwrap(), vec![]);
        assert_eq!(s.evidence_from(5).unwrap().len(), 2);
    }
}
