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
//!
//! The node pays the L1 fees of what it forwards, for whoever submits, so the spending is bounded: at most
//! `max_spend_gwei_per_hour` in any rolling hour (fees of mined batch transactions, execution and blob gas; past
//! it nothing more is posted and new submissions are refused until the hour has room, while what was acknowledged
//! waits), and each sender has at most `max_pending_per_sender` bundles waiting, so one sender cannot take the
//! whole queue. Fresh keys cost nothing, so the per-sender share is about fairness; the spend cap is the bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::providers::Provider;
use baton_consensus::block::{check_stateless, OrderedBy};
use baton_consensus::bundle::Bundle;
use baton_consensus::bundle::Sender;
use baton_consensus::error::BundleError;
use baton_consensus::hash::Hash;
use baton_consensus::ids::RollupId;
use baton_consensus::registry::{ChainSpec, RollupMode};
use baton_l1_inclusion::sender::{InboxSender, SenderConfig, SenderEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::based::BasedBatches;
use crate::error::NodeError;
use crate::ingest::SubmitError;
use crate::store::RocksStore;
use crate::tasks::Tasks;

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
    /// Most L1 fees (gwei) the forwarder's batch transactions may cost in any rolling hour; beyond it nothing more
    /// is posted until the hour has room, and submissions are refused. Default 100,000,000 (0.1 ETH).
    pub max_spend_gwei_per_hour: u64,
    /// Most bundles of one sender waiting to be forwarded. Default 64.
    pub max_pending_per_sender: usize,
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
            max_spend_gwei_per_hour: 100_000_000,
            max_pending_per_sender: 64,
            sender: SenderConfig::default(),
        }
    }
}

impl ForwardConfig {
    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |m: String| Err(NodeError::Config(format!("l1.forward: {m}")));
        if self.flush_ms == 0
            || self.queue == 0
            || self.max_pending == 0
            || self.max_pending_per_sender == 0
            || self.max_spend_gwei_per_hour == 0
        {
            return bad(
                "flush_ms, queue, max_pending, max_pending_per_sender and max_spend_gwei_per_hour must be at least 1"
                    .into(),
            );
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
    /// ... and per sender (bounded by `max_pending_per_sender`).
    per_sender: Arc<Mutex<HashMap<Sender, usize>>>,
    max_pending_per_sender: usize,
    /// Set by the task while the hour's fees reached `max_spend_gwei_per_hour`.
    over_budget: Arc<AtomicBool>,
    /// Refusals are counted in `baton_mempool_rejected_total`, as ingest counts its own.
    metrics: Arc<crate::metrics::Metrics>,
}

/// Fees paid in the last hour, by when.
#[derive(Debug, Default)]
pub struct SpendWindow {
    paid: std::collections::VecDeque<(Instant, u128)>,
    total: u128,
}

impl SpendWindow {
    const HOUR: Duration = Duration::from_secs(3_600);

    /// Records a fee paid at `at`.
    pub fn record(&mut self, at: Instant, wei: u128) {
        self.paid.push_back((at, wei));
        self.total = self.total.saturating_add(wei);
    }

    /// Fees paid in the hour before `now`.
    pub fn spent(&mut self, now: Instant) -> u128 {
        while let Some((t, wei)) = self.paid.front().copied() {
            if now.saturating_duration_since(t) < Self::HOUR {
                break;
            }
            self.paid.pop_front();
            self.total -= wei;
        }
        self.total
    }
}

impl ForwardHandle {
    /// Checks `bundle` (every entry for `rollup`, a based rollup: an entry for a shared rollup is refused with
    /// `MixedModes`, as ingest would), stores it, then queues it. A refusal is counted by its reason.
    pub async fn submit(&self, rollup: RollupId, bundle: Bundle) -> Result<Hash, SubmitError> {
        let answer = self.accept(rollup, bundle);
        if let Err(why) = &answer {
            crate::ingest::count_refusal(&self.metrics, why);
        }
        answer
    }

    fn accept(&self, rollup: RollupId, bundle: Bundle) -> Result<Hash, SubmitError> {
        let hash = check_stateless(&bundle, &self.spec, OrderedBy::Inbox(rollup), |_| false)
            .map_err(SubmitError::Invalid)?;
        if self.based.contains(&hash) {
            return Ok(hash);
        }
        if self.over_budget.load(Ordering::Relaxed) {
            return Err(SubmitError::ForwardLimit(
                "this node's L1 fee budget for forwarding is spent for the hour (l1.forward.max_spend_gwei_per_hour); \
                 send the bundle to the L1 inbox yourself or retry later"
                    .into(),
            ));
        }
        if self.pending.load(Ordering::Relaxed) >= self.max_pending {
            return Err(SubmitError::ForwardFull(format!(
                "the L1 forwarding queue is full: {} bundles wait to be forwarded (l1.forward.max_pending)",
                self.max_pending
            )));
        }
        let permit = self.tx.try_reserve().map_err(|_| {
            SubmitError::ForwardFull("the L1 forwarding queue is full (l1.forward.queue)".into())
        })?;
        {
            let mut per = self.per_sender.lock().unwrap_or_else(|p| p.into_inner());
            let n = per.entry(bundle.sender).or_insert(0);
            if *n >= self.max_pending_per_sender {
                return Err(SubmitError::ForwardLimit(format!(
                    "sender {} already has {} bundles waiting to be forwarded to L1 \
                     (l1.forward.max_pending_per_sender); retry once they are in the inbox",
                    bundle.sender, self.max_pending_per_sender
                )));
            }
            *n += 1;
        }
        if let Err(e) = self.store.put_forward(&hash, &bundle) {
            release(&self.per_sender, &[bundle.sender]);
            return Err(SubmitError::Storage(e.to_string()));
        }
        permit.send((hash, rollup, bundle));
        Ok(hash)
    }
}

/// Gives back the per-sender counts of bundles that left the queue.
fn release(per_sender: &Mutex<HashMap<Sender, usize>>, senders: &[Sender]) {
    let mut per = per_sender.lock().unwrap_or_else(|p| p.into_inner());
    for s in senders {
        if let Some(n) = per.get_mut(s) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(s);
            }
        }
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

/// Starts the forwarder in the node's `tasks`; its queue is reloaded from the store.
#[allow(clippy::too_many_arguments)] // the L1 sender's three, the node's stores and views, metrics, its tasks
pub async fn start<P: Provider + 'static>(
    provider: P,
    wallet: EthereumWallet,
    inbox: alloy::primitives::Address,
    cfg: ForwardConfig,
    store: RocksStore,
    spec: Arc<ChainSpec>,
    based: BasedBatches,
    metrics: Arc<crate::metrics::Metrics>,
    tasks: &mut Tasks,
) -> Result<ForwardHandle, NodeError> {
    cfg.validate()?;
    let gwei = |wei: u128| i64::try_from(wei / 1_000_000_000).unwrap_or(i64::MAX);
    metrics
        .l1
        .forward_budget_gwei
        .set(i64::try_from(cfg.max_spend_gwei_per_hour).unwrap_or(i64::MAX));
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
    let mut counts: HashMap<Sender, usize> = HashMap::new();
    for w in waiting.values() {
        *counts.entry(w.bundle.sender).or_insert(0) += 1;
    }
    let per_sender = Arc::new(Mutex::new(counts));
    let over_budget = Arc::new(AtomicBool::new(false));
    let budget_wei = u128::from(cfg.max_spend_gwei_per_hour) * 1_000_000_000;
    let mut spend = SpendWindow::default();
    let handle = ForwardHandle {
        tx,
        store: store.clone(),
        spec,
        based: based.clone(),
        pending: pending.clone(),
        max_pending: cfg.max_pending,
        per_sender: per_sender.clone(),
        max_pending_per_sender: cfg.max_pending_per_sender,
        over_budget: over_budget.clone(),
        metrics: metrics.clone(),
    };
    tasks.spawn("L1 forwarder", async move {
        let flush = Duration::from_millis(cfg.flush_ms);
        let repost = Duration::from_millis(cfg.repost_after_ms);
        let mut next_flush = tokio::time::Instant::now() + flush;
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some((hash, rollup, bundle)) => {
                        seq += 1;
                        if waiting.contains_key(&hash) {
                            // Submitted again while waiting: counted once.
                            release(&per_sender, &[bundle.sender]);
                            continue;
                        }
                        waiting.insert(hash, Waiting { rollup, bundle, posted: None, in_flight: false, seq });
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
                let senders: Vec<Sender> = done
                    .iter()
                    .filter_map(|h| waiting.remove(h))
                    .map(|w| w.bundle.sender)
                    .collect();
                release(&per_sender, &senders);
                pending.store(waiting.len(), Ordering::Relaxed);
            }
            match sender.tick().await {
                Ok(Some(SenderEvent::Mined {
                    tags,
                    block,
                    tx,
                    success,
                    fee_wei,
                })) => {
                    spend.record(Instant::now(), fee_wei);
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
            let spent = spend.spent(Instant::now());
            metrics.l1.forward_spend_last_hour_gwei.set(gwei(spent));
            let over = spent >= budget_wei;
            if over != over_budget.swap(over, Ordering::Relaxed) {
                if over {
                    warn!(spent_wei = %spent, "the forwarding fee budget for the hour is spent; posting resumes when the hour has room");
                } else {
                    info!("the forwarding fee budget has room again");
                }
            }
            if over {
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
    fn the_spend_window_counts_the_last_hour_only() {
        let t0 = Instant::now();
        let mut w = SpendWindow::default();
        w.record(t0, 5);
        w.record(t0 + Duration::from_secs(1_800), 7);
        assert_eq!(w.spent(t0 + Duration::from_secs(1_800)), 12);
        assert_eq!(
            w.spent(t0 + Duration::from_secs(3_600)),
            7,
            "the first fee is an hour old"
        );
        assert_eq!(w.spent(t0 + Duration::from_secs(5_400)), 0);
    }

    #[test]
    fn a_based_bundle_names_one_based_rollup() {
        use alloy_signer_local::PrivateKeySigner;
        use baton_consensus::bundle::BundleEntry;
        use baton_consensus::bundle::UnsignedBundle;
        use baton_consensus::registry::{RollupInfo, RollupRegistry};
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
                        allowed_senders: Vec::new(),
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
