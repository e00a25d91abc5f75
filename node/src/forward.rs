//! Forwarding bundles submitted for based rollups to the L1 inbox.
//!
//! Baton's validators do not order based rollups; a node with `[l1] forward_key_file` still accepts their bundles
//! so that rollup users have one submission API. [`ForwardHandle::submit`] checks a bundle like derivation will
//! (form, one based rollup, signature), writes it to the store's `forward` column family and only then
//! acknowledges it. The task batches waiting bundles per rollup (in arrival order, up to `max_batch_bytes`) and
//! hands each batch to an [`InboxSender`] (calldata, or blobs for large batches; one transaction in flight,
//! re-priced at the same nonce). A bundle leaves the queue once the node's based derivation shows it; one whose
//! transaction was mined but that derivation still lacks after `repost_after_ms` (an L1 reorg dropped it) is
//! posted again. Restarts reload the queue from the store. Derivation ignores a second copy of a bundle, so a
//! repost never duplicates entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::providers::Provider;
use baton_consensus::block::{check_stateless, OrderedBy};
use baton_consensus::error::BundleError;
use baton_consensus::registry::{ChainSpec, RollupMode};
use baton_consensus::{Bundle, Hash, RollupId};
use baton_l1_inclusion::sender::{InboxSender, SenderConfig, SenderEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::based::BasedBatches;
use crate::error::NodeError;
use crate::ingest::SubmitError;
use crate::store::RocksStore;

/// `[l1.forward]`: batching and re-posting of forwarded bundles, and the sender's fee rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Waiting bundles are posted at least this often. Default 1,000 ms.
    pub flush_ms: u64,
    /// Most encoded bytes per batch. Default 98,304 (the inbox takes up to 131,072 in calldata).
    pub max_batch_bytes: usize,
    /// A posted bundle the derivation does not show after this long is posted again. Default 30,000 ms.
    pub repost_after_ms: u64,
    /// Most bundles waiting (acknowledged, not yet derived); more are refused with RESOURCE_EXHAUSTED. Default
    /// 10,000.
    pub max_pending: usize,
    /// Capacity of the submission channel. Default 1,024.
    pub queue: usize,
    #[serde(flatten)]
    pub sender: SenderConfig,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            flush_ms: 1_000,
            max_batch_bytes: 96 * 1024,
            repost_after_ms: 30_000,
            max_pending: 10_000,
            queue: 1_024,
            sender: SenderConfig::default(),
        }
    }
}

impl ForwardConfig {
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |m: String| Err(NodeError::Config(format!("l1.forward: {m}")));
        if self.flush_ms == 0 || self.queue == 0 || self.max_pending == 0 {
            return bad("flush_ms, queue and max_pending must be at least 1".into());
        }
        if self.max_batch_bytes < 1024 || self.max_batch_bytes > 6 * 126 * 1024 {
            return bad(format!(
                "max_batch_bytes {} must be 1024..={} (six blobs)",
                self.max_batch_bytes,
                6 * 126 * 1024
            ));
        }
        self.sender
            .validate()
            .map_err(|e| NodeError::Config(format!("l1.forward: {e}")))
    }
}

/// The based rollup a bundle is for, if every entry is for one based rollup.
pub fn based_rollup(bundle: &Bundle, spec: &ChainSpec) -> Result<Option<RollupId>, BundleError> {
    let mut based: Option<RollupId> = None;
    for e in &bundle.entries {
        if spec.rollups.get(e.rollup_id).map(|r| r.mode) != Some(RollupMode::Based) {
            continue;
        }
        match based {
            Some(first) if first != e.rollup_id => {
                return Err(BundleError::TwoBasedRollups {
                    first,
                    second: e.rollup_id,
                })
            }
            _ => based = Some(e.rollup_id),
        }
    }
    Ok(based)
}

/// Accepts bundles for based rollups.
#[derive(Clone)]
pub struct ForwardHandle {
    tx: mpsc::Sender<(Hash, RollupId, Bundle)>,
    store: RocksStore,
    spec: Arc<ChainSpec>,
    based: BasedBatches,
    /// Bundles acknowledged and not yet shown by the derivation (bounded by `max_pending`).
    pending: Arc<AtomicUsize>,
    max_pending: usize,
}

impl ForwardHandle {
    /// Checks `bundle` (every entry for `rollup`, a based rollup: an entry for a shared rollup is refused with
    /// `MixedModes`, as ingest would), stores it, then queues it.
    pub async fn submit(&self, rollup: RollupId, bundle: Bundle) -> Result<Hash, SubmitError> {
        let hash = check_stateless(&bundle, &self.spec, OrderedBy::Inbox(rollup), |_| false)
            .map_err(SubmitError::Invalid)?;
        if self.based.contains(&hash) {
            return Ok(hash);
        }
        if self.pending.load(Ordering::Relaxed) >= self.max_pending {
            return Err(SubmitError::Full(format!(
                "{} bundles wait to be forwarded to L1 (l1.forward.max_pending)",
                self.max_pending
            )));
        }
        let permit = self.tx.try_reserve().map_err(|_| {
            SubmitError::Full("the L1 forwarding queue is full (l1.forward.queue)".into())
        })?;
        self.store
            .put_forward(&hash, &bundle)
            .map_err(|e| SubmitError::Storage(e.to_string()))?;
        permit.send((hash, rollup, bundle));
        Ok(hash)
    }
}

struct Waiting {
    rollup: RollupId,
    bundle: Bundle,
    /// When its batch's transaction was mined (None: not posted, or to post again).
    posted: Option<Instant>,
    in_flight: bool,
    seq: u64,
}

/// Starts the forwarder; its queue is reloaded from the store.
pub async fn start<P: Provider + 'static>(
    provider: P,
    wallet: EthereumWallet,
    inbox: alloy::primitives::Address,
    cfg: ForwardConfig,
    store: RocksStore,
    spec: Arc<ChainSpec>,
    based: BasedBatches,
) -> Result<ForwardHandle, NodeError> {
    cfg.validate()?;
    let mut sender: InboxSender<P, Vec<Hash>> =
        InboxSender::new(provider, wallet, inbox, cfg.sender.clone())
            .await
            .map_err(|e| NodeError::Config(format!("l1 forwarder: {e}")))?;
    let (tx, mut rx) = mpsc::channel::<(Hash, RollupId, Bundle)>(cfg.queue);
    let mut waiting: HashMap<Hash, Waiting> = HashMap::new();
    let mut seq = 0u64;
    for bundle in store.forward_pending()? {
        if let Ok(Some(rollup)) = based_rollup(&bundle, &spec) {
            seq += 1;
            waiting.insert(
                bundle.hash(),
                Waiting {
                    rollup,
                    bundle,
                    posted: None,
                    in_flight: false,
                    seq,
                },
            );
        }
    }
    info!(from = %sender.address(), reloaded = waiting.len(), "forwarding based-rollup bundles to the L1 inbox");
    let pending = Arc::new(AtomicUsize::new(waiting.len()));
    let handle = ForwardHandle {
        tx,
        store: store.clone(),
        spec,
        based: based.clone(),
        pending: pending.clone(),
        max_pending: cfg.max_pending,
    };
    tokio::spawn(async move {
        let flush = Duration::from_millis(cfg.flush_ms);
        let repost = Duration::from_millis(cfg.repost_after_ms);
        let mut next_flush = tokio::time::Instant::now() + flush;
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some((hash, rollup, bundle)) => {
                        seq += 1;
                        waiting.entry(hash).or_insert(Waiting { rollup, bundle, posted: None, in_flight: false, seq });
                        pending.store(waiting.len(), Ordering::Relaxed);
                        continue;
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(next_flush) => {}
            }
            next_flush = tokio::time::Instant::now() + flush;
            // Done: the derivation shows them.
            let done = based.derived_among(waiting.keys());
            if !done.is_empty() {
                if let Err(e) = store.remove_forward(&done) {
                    warn!(error = %e, "cannot drop forwarded bundles from the store");
                }
                for h in &done {
                    waiting.remove(h);
                }
                pending.store(waiting.len(), Ordering::Relaxed);
            }
            match sender.tick().await {
                Ok(Some(SenderEvent::Mined {
                    tags,
                    block,
                    tx,
                    success,
                })) => {
                    if !success {
                        warn!(%tx, block, "an inbox batch transaction reverted; its bundles will be posted again");
                    }
                    for h in tags {
                        if let Some(w) = waiting.get_mut(&h) {
                            w.in_flight = false;
                            w.posted = success.then(Instant::now);
                        }
                    }
                }
                Ok(Some(SenderEvent::Dropped { tags })) => {
                    for h in tags {
                        if let Some(w) = waiting.get_mut(&h) {
                            w.in_flight = false;
                            w.posted = None;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "following the inbox batch transaction failed"),
            }
            if sender.busy() {
                continue;
            }
            // The next batch: the rollup of the oldest bundle due, its due bundles in arrival order.
            let due = |w: &Waiting| !w.in_flight && w.posted.is_none_or(|t| t.elapsed() >= repost);
            let Some(rollup) = waiting
                .values()
                .filter(|w| due(w))
                .min_by_key(|w| w.seq)
                .map(|w| w.rollup)
            else {
                continue;
            };
            let mut picked: Vec<(&Hash, &Waiting)> = waiting
                .iter()
                .filter(|(_, w)| w.rollup == rollup && due(w))
                .collect();
            picked.sort_by_key(|(_, w)| w.seq);
            let mut bytes = 4;
            let mut hashes = Vec::new();
            let mut bundles = Vec::new();
            for (h, w) in picked {
                let len = w.bundle.encoded_len();
                if !bundles.is_empty() && bytes + len > cfg.max_batch_bytes {
                    break;
                }
                bytes += len;
                hashes.push(*h);
                bundles.push(w.bundle.clone());
            }
            let data = match borsh::to_vec(&bundles) {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "cannot encode a batch");
                    continue;
                }
            };
            match sender.send(rollup, data, hashes.clone()).await {
                Ok(()) => {
                    for h in &hashes {
                        if let Some(w) = waiting.get_mut(h) {
                            w.in_flight = true;
                        }
                    }
                }
                Err(e) => {
                    warn!(rollup, bundles = hashes.len(), error = %e, "posting a batch to the inbox failed; retrying")
                }
            }
        }
    });
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_based_bundle_names_one_based_rollup() {
        use alloy_signer_local::PrivateKeySigner;
        use baton_consensus::bundle::UnsignedBundle;
        use baton_consensus::registry::{RollupInfo, RollupRegistry};
        use baton_consensus::types::BundleEntry;
        let mode = |id| {
            if id >= 8 {
                RollupMode::Based
            } else {
                RollupMode::Shared
            }
        };
        let spec = ChainSpec {
            rollups: RollupRegistry::new(
                [1, 2, 8, 9]
                    .into_iter()
                    .map(|id| RollupInfo {
                        id,
                        name: format!("r{id}"),
                        mode: mode(id),
                    })
                    .collect(),
            )
            .unwrap(),
            ..ChainSpec::for_tests(7, 0)
        };
        let key = PrivateKeySigner::random();
        let b = |rollups: &[u64]| {
            baton_proto::client::sign_bundle(
                &key,
                UnsignedBundle {
                    network_id: 7,
                    sender: key.address(),
                    nonce: 0,
                    expiry_height: 10,
                    entries: rollups
                        .iter()
                        .map(|r| BundleEntry {
                            rollup_id: *r,
                            payload: vec![1],
                        })
                        .collect(),
                },
            )
            .unwrap()
        };
        assert_eq!(based_rollup(&b(&[1, 2]), &spec), Ok(None));
        assert_eq!(based_rollup(&b(&[9, 9]), &spec), Ok(Some(9)));
        // Mixed with a shared rollup: the based one is named (ingest then refuses the mix).
        assert_eq!(based_rollup(&b(&[1, 9]), &spec), Ok(Some(9)));
        assert_eq!(
            based_rollup(&b(&[8, 9]), &spec),
            Err(BundleError::TwoBasedRollups {
                first: 8,
                second: 9
            })
        );
    }
}
