//! Serving based rollups: their batches derived from the L1 inbox, with reorg notices.
//!
//! A task follows the inbox with its own [`Watcher`] at the node's `l1.based_safety` and runs one [`Deriver`] per
//! based rollup of the registry. Derived batches (one per L1 block with entries for the rollup) are kept in memory
//! by `(rollup, L1 block)` and announced on a broadcast channel; when the watcher rolls back, the deriver forgets
//! the removed blocks, their batches are dropped, and every rollup that lost batches gets a [`BasedItem::Reorg`]
//! notice before the corrected batches. Batches posted in blobs are read back from the L1 node first
//! ([`resolve`]). Everything here can be rebuilt from L1, so a restart derives again from
//! the inbox's deployment block.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alloy::providers::Provider;
use baton_consensus::registry::{ChainSpec, RollupMode};
use baton_consensus::{Hash, L1Origin, RollupId};
use baton_l1_inclusion::based::{BasedBatch, Deriver};
use baton_l1_inclusion::blobs::{resolve, BlobFetcher};
use baton_l1_inclusion::watcher::{L1Block, Watcher, WatcherConfig, WatcherUpdate};
use baton_proto::convert::BasedItem;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

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
    batches: BTreeMap<(RollupId, u64), BasedItem>,
    /// The newest L1 block derived.
    head: Option<L1Origin>,
    skipped: u64,
    /// Bundles derived so far, with their L1 block (for the forwarder: what the inbox already shows).
    derived: std::collections::HashMap<Hash, u64>,
}

/// Shared handle: the derived batches and the update channel.
#[derive(Clone, Debug)]
pub struct BasedBatches {
    state: Arc<Mutex<State>>,
    updates: broadcast::Sender<BasedItem>,
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

    /// Up to `max` stored batches of `rollup` from L1 block `from` on, in order.
    pub fn from(&self, rollup: RollupId, from: u64, max: usize) -> Vec<BasedItem> {
        self.state()
            .batches
            .range((rollup, from)..=(rollup, u64::MAX))
            .take(max)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// The batch of `rollup` at L1 block `number`, if it had entries.
    pub fn get(&self, rollup: RollupId, number: u64) -> Option<BasedItem> {
        self.state().batches.get(&(rollup, number)).cloned()
    }

    /// The newest L1 block derived.
    pub fn head(&self) -> Option<L1Origin> {
        self.state().head
    }

    /// Whether the bundle is among the derived batches (at the serving safety).
    pub fn contains(&self, bundle: &Hash) -> bool {
        self.state().derived.contains_key(bundle)
    }

    /// Those of `bundles` the derived batches hold (one lock for the lot).
    pub fn derived_among<'a>(&self, bundles: impl Iterator<Item = &'a Hash>) -> Vec<Hash> {
        let s = self.state();
        bundles
            .filter(|h| s.derived.contains_key(h))
            .copied()
            .collect()
    }

    /// Inbox entries skipped by the derivation rules so far.
    pub fn skipped(&self) -> u64 {
        self.state().skipped
    }
}

/// Starts deriving every based rollup of `spec` from `inbox`; `None` when the registry has none.
pub fn start<P: Provider + Clone + 'static>(
    provider: P,
    inbox: alloy::primitives::Address,
    spec: ChainSpec,
    watcher: WatcherConfig,
    poll: Duration,
    channel: usize,
) -> Option<BasedBatches> {
    let rollups: Vec<RollupId> = spec
        .rollups
        .iter()
        .filter(|r| r.mode == RollupMode::Based)
        .map(|r| r.id)
        .collect();
    if rollups.is_empty() {
        return None;
    }
    let (updates, _) = broadcast::channel(channel.max(1));
    let out = BasedBatches {
        state: Arc::new(Mutex::new(State::default())),
        updates,
    };
    let shared = out.clone();
    let mut derivers: Vec<Deriver> = rollups
        .iter()
        .map(|r| Deriver::new(*r, spec.clone()))
        .collect();
    let safety = watcher.safety;
    let blobs = BlobFetcher::new(provider.clone());
    let mut watcher = Watcher::new(provider, inbox, watcher);
    tokio::spawn(async move {
        info!(
            ?rollups,
            ?safety,
            "deriving based rollups from the L1 inbox"
        );
        loop {
            let update = crate::inbox::next_update(&mut watcher, poll, "based rollups").await;
            let update = resolve_blobs(update, &blobs, poll).await;
            apply(&shared, &mut derivers, update);
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

fn apply(shared: &BasedBatches, derivers: &mut [Deriver], update: WatcherUpdate) {
    let mut announce = Vec::new();
    {
        let mut s = shared.state();
        match update {
            WatcherUpdate::Advanced { to, events } => {
                for d in derivers.iter_mut() {
                    let (batches, skipped) = d.apply(&events);
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
                let gone: Vec<(RollupId, u64)> = s
                    .batches
                    .keys()
                    .filter(|(_, n)| *n >= from)
                    .copied()
                    .collect();
                let mut rollups: Vec<RollupId> = gone.iter().map(|(r, _)| *r).collect();
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
