//! Serving based rollups: their batches derived from the L1 inbox, with reorg notices.
//!
//! A task follows the inbox with its own [`Watcher`] at the node's `l1.based_safety` and runs one [`Deriver`] per
//! based rollup of the registry. Derived batches (one per L1 block with entries for the rollup) are kept by
//! `(rollup, L1 block)` and announced on a broadcast channel; when the watcher rolls back, the deriver forgets
//! the removed blocks, their batches are dropped, and every rollup that lost batches gets a [`BasedItem::Reorg`]
//! notice before the corrected batches. Batches posted in blobs are read back from the L1 node first
//! ([`resolve`]).
//!
//! Memory holds only what L1 has not finalized. After each step the task reads L1's `finalized` block; the
//! batches of blocks up to it, the bundles derived from them (the derivation's first-occurrence rule needs them)
//! and that block move in one write to the node's store ([`RocksStore::put_based_final`], column family `based`),
//! and reads below it ([`BasedBatches::from`], [`BasedBatches::get`], [`BasedBatches::contains`]) go there. So
//! memory holds the batches and bundle hashes of the blocks between L1's finalized block and the derived head
//! (about two epochs, 64 L1 blocks, on Ethereum; nothing at `based_safety = "finalized"`), the watcher's events of
//! those blocks, and at most the update channel's 1,024 announced items. A restart resumes derivation after the
//! stored final block instead of deriving the inbox's whole history again. If L1 ever broke finality, the stored
//! batches from the reorged block on are withdrawn like the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alloy::providers::Provider;
use baton_consensus::hash::Hash;
use baton_consensus::ids::{L1Origin, RollupId};
use baton_consensus::registry::{ChainSpec, RollupMode};
use baton_l1_inclusion::based::{BasedBatch, Deriver};
use baton_l1_inclusion::blobs::{resolve, BlobFetcher};
use baton_l1_inclusion::watcher::{L1Block, Watcher, WatcherConfig, WatcherUpdate};
use baton_proto::convert::BasedItem;
use tokio::sync::broadcast;
use tracing::{debug, error, info, warn};

use crate::store::RocksStore;
use crate::tasks::Tasks;

fn origin(b: &L1Block) -> L1Origin {
    L1Origin {
        number: b.number,
        hash: Hash(b.hash.0),
    }
}

fn item(b: &BasedBatch) -> BasedItem {
    BasedItem::Batch {
        rollup_id: b.rollup_id,
        l1_block: L1Origin {
            number: b.l1_block_number,
            hash: Hash(b.l1_block_hash.0),
        },
        entries: b.entries.clone(),
    }
}

#[derive(Debug, Default)]
struct State {
    /// Batches of L1 blocks above `stored` (older ones are in the store).
    batches: BTreeMap<(RollupId, u64), BasedItem>,
    /// The newest L1 block derived.
    head: Option<L1Origin>,
    /// The newest final L1 block whose batches are in the store.
    stored: Option<L1Origin>,
    skipped: u64,
    /// Bundles derived from blocks above `stored`, with their L1 block (for the forwarder: what the inbox already
    /// shows; older ones are in the store).
    derived: HashMap<Hash, u64>,
}

/// Shared handle: the derived batches and the update channel.
#[derive(Clone)]
pub struct BasedBatches {
    state: Arc<Mutex<State>>,
    updates: broadcast::Sender<BasedItem>,
    store: RocksStore,
}

impl std::fmt::Debug for BasedBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasedBatches")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl BasedBatches {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to new batches and notices. Subscribe before reading [`BasedBatches::from`], then skip what the
    /// snapshot already had.
    pub fn subscribe(&self) -> broadcast::Receiver<BasedItem> {
        self.updates.subscribe()
    }

    /// Up to `max` derived batches of `rollup` from L1 block `from` on, in order (final ones from the store).
    pub fn from(&self, rollup: RollupId, from: u64, max: usize) -> Vec<BasedItem> {
        let s = self.state();
        let mut out = Vec::new();
        if let Some(stored) = s.stored.filter(|f| f.number >= from) {
            match self.store.based_batches(rollup, from, max) {
                Ok(found) => out.extend(
                    found
                        .into_iter()
                        .filter(|(o, _)| o.number <= stored.number)
                        .map(|(l1_block, entries)| BasedItem::Batch {
                            rollup_id: rollup,
                            l1_block,
                            entries,
                        }),
                ),
                Err(e) => {
                    error!(error = %e, rollup, from, "reading stored based batches failed");
                    return out;
                }
            }
        }
        let rest = max - out.len();
        out.extend(
            s.batches
                .range((rollup, from)..=(rollup, u64::MAX))
                .take(rest)
                .map(|(_, b)| b.clone()),
        );
        out
    }

    /// The batch of `rollup` at L1 block `number`, if it had entries.
    pub fn get(&self, rollup: RollupId, number: u64) -> Option<BasedItem> {
        let s = self.state();
        if s.stored.is_some_and(|f| number <= f.number) {
            return self
                .store
                .based_batches(rollup, number, 1)
                .inspect_err(
                    |e| error!(error = %e, rollup, number, "reading a stored based batch failed"),
                )
                .ok()?
                .into_iter()
                .find(|(o, _)| o.number == number)
                .map(|(l1_block, entries)| BasedItem::Batch {
                    rollup_id: rollup,
                    l1_block,
                    entries,
                });
        }
        s.batches.get(&(rollup, number)).cloned()
    }

    /// Batches held in memory (those of L1 blocks not final yet).
    pub fn held(&self) -> usize {
        self.state().batches.len()
    }

    /// Whether the store answers for a bundle (derived from a final block).
    fn stored_derived(&self, bundle: &Hash) -> bool {
        self.store.based_derived(bundle).unwrap_or_else(|e| {
            error!(error = %e, "reading the stored based bundles failed");
            false
        })
    }

    /// The newest L1 block derived.
    pub fn head(&self) -> Option<L1Origin> {
        self.state().head
    }

    /// Whether the bundle is among the derived batches (at the serving safety).
    pub fn contains(&self, bundle: &Hash) -> bool {
        let s = self.state();
        s.derived.contains_key(bundle) || (s.stored.is_some() && self.stored_derived(bundle))
    }

    /// Those of `bundles` the derived batches hold (one lock for the lot).
    pub fn derived_among<'a>(&self, bundles: impl Iterator<Item = &'a Hash>) -> Vec<Hash> {
        let s = self.state();
        bundles
            .filter(|h| s.derived.contains_key(h) || (s.stored.is_some() && self.stored_derived(h)))
            .copied()
            .collect()
    }

    /// Inbox entries skipped by the derivation rules so far.
    pub fn skipped(&self) -> u64 {
        self.state().skipped
    }
}

/// How the deriver follows the inbox.
pub struct DeriveConfig {
    /// Which L1 blocks it reads (safety, first block).
    pub watcher: WatcherConfig,
    /// How often it polls the L1 node.
    pub poll: Duration,
    /// Capacity of the broadcast channel announcing new batches (a subscriber further behind misses some).
    pub channel: usize,
}

/// Starts deriving every based rollup of `spec` from `inbox` in the node's `tasks`, after the final batches `store`
/// holds; `None` when the registry has none.
pub fn start<P: Provider + Clone + 'static>(
    provider: P,
    inbox: alloy::primitives::Address,
    spec: ChainSpec,
    cfg: DeriveConfig,
    store: RocksStore,
    tasks: &mut Tasks,
) -> Option<BasedBatches> {
    let DeriveConfig {
        mut watcher,
        poll,
        channel,
    } = cfg;
    let rollups: Vec<RollupId> = spec
        .rollups
        .iter()
        .filter(|r| r.mode == RollupMode::Based)
        .map(|r| r.id)
        .collect();
    if rollups.is_empty() {
        return None;
    }
    let stored = store.based_final().unwrap_or_else(|e| {
        error!(error = %e, "reading the stored based batches failed; deriving from the inbox's deployment");
        None
    });
    if let Some(f) = stored {
        watcher.from_block = watcher.from_block.max(f.number + 1);
    }
    let out = new(store, stored, channel);
    let shared = out.clone();
    let mut derivers: Vec<Deriver> = rollups
        .iter()
        .map(|r| Deriver::new(*r, spec.clone()))
        .collect();
    let safety = watcher.safety;
    let blobs = BlobFetcher::new(provider.clone());
    let mut watcher = Watcher::new(provider, inbox, watcher);
    tasks.spawn("based-rollup deriver", async move {
        info!(
            ?rollups,
            ?safety,
            "deriving based rollups from the L1 inbox"
        );
        loop {
            let update = crate::inbox::next_update(&mut watcher, poll, "based rollups").await;
            let update = resolve_blobs(update, &blobs, poll).await;
            let advanced = matches!(update, WatcherUpdate::Advanced { .. });
            apply(&shared, &mut derivers, update);
            if advanced {
                if let Some(fin) = crate::inbox::forget_final(&mut watcher).await {
                    finalize(&shared, &mut derivers, &fin);
                }
            }
        }
    });
    Some(out)
}

/// Reads the blobs of new blob batches (retrying while the L1 node fails: derivation must not go on without them).
async fn resolve_blobs<P: Provider>(
    update: WatcherUpdate,
    blobs: &BlobFetcher<P>,
    retry: Duration,
) -> WatcherUpdate {
    let WatcherUpdate::Advanced { to, events } = update else {
        return update;
    };
    loop {
        match resolve(events.clone(), blobs).await {
            Ok(events) => return WatcherUpdate::Advanced { to, events },
            Err(e) => {
                warn!(error = %e, "reading blob batches failed; retrying");
                tokio::time::sleep(retry).await;
            }
        }
    }
}

/// The shared handle over `store`, whose final batches end at `stored`.
fn new(store: RocksStore, stored: Option<L1Origin>, channel: usize) -> BasedBatches {
    let (updates, _) = broadcast::channel(channel.max(1));
    BasedBatches {
        state: Arc::new(Mutex::new(State {
            head: stored,
            stored,
            ..State::default()
        })),
        updates,
        store,
    }
}

/// Moves everything derived from L1 blocks up to `fin` (final) from memory to the store. A failed write keeps it
/// all in memory for the next try.
fn finalize(shared: &BasedBatches, derivers: &mut [Deriver], fin: &L1Block) {
    let mut s = shared.state();
    if s.stored.is_some_and(|f| f.number >= fin.number) {
        return;
    }
    let batches: Vec<(RollupId, L1Origin, Vec<baton_consensus::types::BatchEntry>)> = s
        .batches
        .iter()
        .filter(|((_, n), _)| *n <= fin.number)
        .filter_map(|(_, it)| match it {
            BasedItem::Batch {
                rollup_id,
                l1_block,
                entries,
            } => Some((*rollup_id, *l1_block, entries.clone())),
            BasedItem::Reorg { .. } => None,
        })
        .collect();
    let derived: Vec<(Hash, u64)> = derivers
        .iter()
        .flat_map(|d| d.derived_through(fin.number))
        .collect();
    if let Err(e) = shared
        .store
        .put_based_final(&batches, &derived, origin(fin))
    {
        warn!(error = %e, "storing final based batches failed; keeping them in memory");
        return;
    }
    for d in derivers.iter_mut() {
        d.finalize(fin.number);
    }
    s.batches.retain(|(_, n), _| *n > fin.number);
    s.derived.retain(|_, n| *n > fin.number);
    s.stored = Some(origin(fin));
    debug!(
        final_block = fin.number,
        stored = batches.len(),
        held = s.batches.len(),
        "final based batches stored"
    );
}

fn apply(shared: &BasedBatches, derivers: &mut [Deriver], update: WatcherUpdate) {
    let mut announce = Vec::new();
    {
        let mut s = shared.state();
        match update {
            WatcherUpdate::Advanced { to, events } => {
                let stored = s.stored.is_some();
                for d in derivers.iter_mut() {
                    let (batches, skipped) =
                        d.apply_with(&events, |h| stored && shared.stored_derived(h));
                    s.skipped += skipped.len() as u64;
                    for k in skipped {
                        debug!(position = ?k.position, bundle = ?k.bundle, reason = %k.reason, "based entry skipped");
                    }
                    for b in batches {
                        for e in &b.entries {
                            s.derived.insert(e.bundle_hash, b.l1_block_number);
                        }
                        let it = item(&b);
                        s.batches
                            .insert((b.rollup_id, b.l1_block_number), it.clone());
                        announce.push(it);
                    }
                }
                s.head = Some(origin(&to));
            }
            WatcherUpdate::RolledBack { to, removed } => {
                let from = to.number + 1;
                warn!(
                    from,
                    removed = removed.len(),
                    "L1 reorg: withdrawing based batches"
                );
                for d in derivers.iter_mut() {
                    d.rollback(from);
                }
                let mut rollups: Vec<RollupId> = Vec::new();
                if s.stored.is_some_and(|f| f.number >= from) {
                    error!(
                        from,
                        "L1 reorganised a finalized block: withdrawing the stored based batches from it on"
                    );
                    let last = (to.number > 0).then(|| origin(&to));
                    if let Err(e) = shared.store.drop_based_from(from, last) {
                        error!(error = %e, "withdrawing stored based batches failed");
                    }
                    s.stored = last;
                    rollups.extend(derivers.iter().map(Deriver::rollup_id));
                }
                let gone: Vec<(RollupId, u64)> = s
                    .batches
                    .keys()
                    .filter(|(_, n)| *n >= from)
                    .copied()
                    .collect();
                rollups.extend(gone.iter().map(|(r, _)| *r));
                rollups.sort_unstable();
                rollups.dedup();
                for k in gone {
                    s.batches.remove(&k);
                }
                s.derived.retain(|_, n| *n < from);
                for rollup_id in rollups {
                    announce.push(BasedItem::Reorg {
                        rollup_id,
                        from_l1_block: from,
                        canonical_head: origin(&to),
                    });
                }
                s.head = Some(origin(&to));
            }
        }
    }
    for a in announce {
        // No subscriber is fine.
        let _ = shared.updates.send(a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address as EthAddress, B256};
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::SignerSync;
    use baton_consensus::bundle::UnsignedBundle;
    use baton_consensus::bundle::{Bundle, BundleEntry};
    use baton_consensus::params::ConsensusParams;
    use baton_consensus::registry::{RollupInfo, RollupRegistry};
    use baton_l1_inclusion::watcher::{EventPosition, InboxEvent, InboxEventKind};

    const BASED: RollupId = 9;

    fn spec() -> ChainSpec {
        ChainSpec {
            network_id: 5,
            params: ConsensusParams::for_tests(),
            rollups: RollupRegistry::new(vec![RollupInfo::open(BASED, "based", RollupMode::Based)])
                .expect("registry"),
            epochs: None,
        }
    }

    fn bundle(key: &PrivateKeySigner, nonce: u64) -> Bundle {
        let u = UnsignedBundle {
            network_id: 5,
            sender: key.address(),
            nonce,
            expiry_height: 1,
            entries: vec![BundleEntry {
                rollup_id: BASED,
                payload: format!("entry {nonce}").into_bytes(),
            }],
        };
        let sig = key
            .sign_hash_sync(&B256::from(u.signing_hash().0))
            .expect("sign");
        u.with_signature(sig.as_bytes())
    }

    fn block(number: u64) -> L1Block {
        L1Block {
            number,
            hash: B256::from(Hash::digest(&[b"l1", &number.to_le_bytes()]).0),
            timestamp: number,
        }
    }

    /// L1 block `number` carrying one inbox post of `bundles` for the based rollup.
    fn posted(number: u64, bundles: &[Bundle]) -> WatcherUpdate {
        WatcherUpdate::Advanced {
            to: block(number),
            events: vec![InboxEvent {
                position: EventPosition {
                    block_number: number,
                    tx_index: 0,
                    log_index: 0,
                },
                block_hash: block(number).hash,
                kind: InboxEventKind::Batch {
                    rollup_id: BASED,
                    sender: EthAddress::ZERO,
                    data: borsh::to_vec(bundles).expect("encode").into(),
                },
            }],
        }
    }

    fn numbers(items: &[BasedItem]) -> Vec<u64> {
        items
            .iter()
            .map(|it| match it {
                BasedItem::Batch { l1_block, .. } => l1_block.number,
                BasedItem::Reorg { .. } => 0,
            })
            .collect()
    }

    /// Derivation memory stays bounded: with L1 finality trailing the derived head by `LAG` blocks, only the
    /// batches of the blocks not final yet stay in memory, however many blocks were derived; older batches are
    /// served from the store (also after a restart), and a bundle posted again after its block became final is
    /// still recognised as derived.
    #[test]
    fn derived_batches_below_finality_leave_memory_and_are_served_from_the_store() {
        const BLOCKS: u64 = 60;
        const LAG: u64 = 4;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path(), &crate::config::StorageSection::for_tests(false))
            .expect("store");
        let shared = new(store.clone(), None, 16);
        let mut derivers = vec![Deriver::new(BASED, spec())];
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x21)).expect("key");
        let bundles: Vec<Bundle> = (0..BLOCKS).map(|n| bundle(&key, n)).collect();
        let mut most_held = 0;
        for n in 1..=BLOCKS {
            apply(
                &shared,
                &mut derivers,
                posted(n, &bundles[n as usize - 1..n as usize]),
            );
            if n > LAG {
                finalize(&shared, &mut derivers, &block(n - LAG));
            }
            most_held = most_held.max(shared.held());
        }
        assert!(
            most_held <= LAG as usize + 1,
            "{most_held} derived batches held in memory after {BLOCKS} blocks, with finality {LAG} blocks behind"
        );
        assert!(derivers[0].held() <= LAG as usize);
        assert_eq!(shared.state().derived.len(), LAG as usize);

        // Served as before: from the store below finality, from memory above it, in order.
        let all = shared.from(BASED, 1, 1_000);
        assert_eq!(numbers(&all), (1..=BLOCKS).collect::<Vec<_>>());
        assert_eq!(
            numbers(&shared.from(BASED, 50, 5)),
            vec![50, 51, 52, 53, 54]
        );
        assert_eq!(
            numbers(&shared.from(BASED, 55, 100)),
            (55..=BLOCKS).collect::<Vec<_>>()
        );
        match shared.get(BASED, 3) {
            Some(BasedItem::Batch {
                l1_block, entries, ..
            }) => {
                assert_eq!(l1_block.hash.0, block(3).hash.0);
                assert_eq!(entries[0].bundle_hash, bundles[2].hash());
            }
            other => panic!("no stored batch at L1 block 3: {other:?}"),
        }
        assert!(shared.contains(&bundles[0].hash()));
        assert!(shared.contains(&bundles[BLOCKS as usize - 1].hash()));

        // The first occurrence still wins for a bundle whose block is final.
        apply(&shared, &mut derivers, posted(BLOCKS + 1, &bundles[..1]));
        assert!(shared.get(BASED, BLOCKS + 1).is_none());

        // After a restart: the final batches are there, derivation resumes after them.
        let stored = store.based_final().expect("read");
        assert_eq!(stored.map(|o| o.number), Some(BLOCKS - LAG));
        let again = new(store, stored, 16);
        assert_eq!(again.head().map(|o| o.number), Some(BLOCKS - LAG));
        assert_eq!(
            numbers(&again.from(BASED, 1, 1_000)),
            (1..=BLOCKS - LAG).collect::<Vec<_>>()
        );
        assert_eq!(again.held(), 0);
    }
}
