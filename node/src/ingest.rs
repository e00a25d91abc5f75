//! Ingest: checks submitted bundles and makes them durable before they are acknowledged.
//!
//! A submission is checked where it arrives (in the gRPC handler's task, so checks run in parallel across
//! connections): shape and limits, registered rollups, network id, and the signature (one ECDSA recovery; the only
//! time this node recovers this bundle's signer). It then goes over a bounded queue to one writer task. The writer
//! takes whatever is queued (up to `ingest_group`), drops what is already durable here, asks the consensus loop to
//! admit the rest (the checks that need chain state: expiry, nonces, room in the mempool), writes the admitted
//! bundles to the `mempool` column family in one batch with one fsync, and only then answers each submitter.
//! Group commit keeps the fsync cost per bundle small at high rates without weakening the guarantee.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use baton_consensus::block::check_bundle;
use baton_consensus::bundle::Sender;
use baton_consensus::context::BatonContext;
use baton_consensus::error::{BundleError, ConsensusError};
use baton_consensus::hash::Hash;
use baton_consensus::mempool::Admission;
use baton_consensus::registry::ChainSpec;
use baton_consensus::types::Bundle;
use malachitebft_core_consensus::ProposedValue;

use crate::metrics::{Metrics, ReasonLabel};
use crate::store::RocksStore;

/// Why a submission was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(BundleError),
    #[error("mempool is full ({0}); retry later")]
    Full(String),
    #[error("the node is overloaded: ingest queue full (mempool.ingest_queue); retry later")]
    Busy,
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the node is shutting down")]
    ShuttingDown,
}

impl SubmitError {
    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SubmitError::Invalid(b) => b.label(),
            SubmitError::Full(_) => "mempool_full",
            SubmitError::Busy => "busy",
            SubmitError::Storage(_) => "storage",
            SubmitError::ShuttingDown => "shutting_down",
        }
    }
}

impl From<ConsensusError> for SubmitError {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::InvalidBundle(b) => SubmitError::Invalid(b),
            ConsensusError::MempoolFull(m) => SubmitError::Full(m),
            other => SubmitError::Storage(other.to_string()),
        }
    }
}

/// What the API and the writer ask of the consensus loop, which owns the mempool.
#[derive(Debug)]
pub enum LoopRequest {
    /// Admit checked bundles to the mempool; one answer per bundle, in order.
    Admit {
        bundles: Vec<(Hash, Bundle)>,
        reply: oneshot::Sender<Vec<Result<Admission, ConsensusError>>>,
    },
    /// The sender's next nonce on chain and the first nonce its pending bundles leave free.
    Nonces {
        sender: Sender,
        reply: oneshot::Sender<Result<(u64, u64), ConsensusError>>,
    },
    /// Whether a bundle is in the mempool.
    IsPending {
        hash: Hash,
        reply: oneshot::Sender<bool>,
    },
    /// Bundles a peer disseminated, checked off the loop; `reply` answers the engine (a proposal they complete).
    Gossiped {
        bundles: Vec<(Hash, Bundle)>,
        reply: oneshot::Sender<Option<ProposedValue<BatonContext>>>,
    },
}

struct Job {
    hash: Hash,
    bundle: Bundle,
    reply: oneshot::Sender<Result<Hash, SubmitError>>,
}

/// Cheap-to-clone handle for submitting bundles.
#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Job>,
    spec: Arc<ChainSpec>,
    metrics: Arc<Metrics>,
}

/// Sizes of the ingest path.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    pub queue: usize,
    pub group: usize,
    /// How long the writer waits for more submissions before it writes a group.
    pub linger: std::time::Duration,
}

impl IngestHandle {
    /// Starts the writer task. Admission goes through `to_loop`, which the consensus loop drains.
    pub fn spawn(
        store: RocksStore,
        spec: ChainSpec,
        limits: IngestLimits,
        to_loop: mpsc::Sender<LoopRequest>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue);
        tokio::spawn(writer(rx, store, limits, to_loop, metrics.clone()));
        IngestHandle {
            tx,
            spec: Arc::new(spec),
            metrics,
        }
    }

    /// Checks a bundle without chain state: limits, rollups, network id and signature. Returns its hash.
    pub fn check(&self, bundle: &Bundle) -> Result<Hash, SubmitError> {
        check_stateless(bundle, &self.spec).map_err(SubmitError::Invalid)
    }

    /// Submits a bundle; resolves once it is durable (or refused).
    pub async fn submit(&self, bundle: Bundle) -> Result<Hash, SubmitError> {
        let result = self.submit_inner(bundle).await;
        if let Err(e) = &result {
            self.metrics
                .rejected
                .get_or_create(&ReasonLabel { reason: e.label() })
                .inc();
        }
        result
    }

    async fn submit_inner(&self, bundle: Bundle) -> Result<Hash, SubmitError> {
        let hash = self.check(&bundle)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Job {
                hash,
                bundle,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Busy,
                mpsc::error::TrySendError::Closed(_) => SubmitError::ShuttingDown,
            })?;
        rx.await.map_err(|_| SubmitError::ShuttingDown)?
    }
}

/// The checks a bundle gets where it enters the node (from a client or a peer): limits, rollups, network id and
/// its signature. Returns its hash.
pub fn check_stateless(bundle: &Bundle, spec: &ChainSpec) -> Result<Hash, BundleError> {
    check_bundle(bundle, spec)?;
    let hash = bundle.hash();
    bundle.verify_signature(&hash)?;
    Ok(hash)
}

async fn writer(
    mut rx: mpsc::Receiver<Job>,
    store: RocksStore,
    limits: IngestLimits,
    to_loop: mpsc::Sender<LoopRequest>,
    metrics: Arc<Metrics>,
) {
    let mut group = Vec::with_capacity(limits.group);
    while let Some(first) = rx.recv().await {
        group.push(first);
        // Linger briefly for more submissions: one fsync then covers them all. Under load this trades a little
        // ack latency for far fewer fsyncs, which the consensus write-ahead log and commits also wait on.
        let deadline = tokio::time::Instant::now() + limits.linger;
        while group.len() < limits.group {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(j)) => group.push(j),
                        _ => break,
                    }
                }
            }
        }
        let jobs = std::mem::take(&mut group);
        let mut fresh = Vec::with_capacity(jobs.len());
        let mut seen = HashSet::with_capacity(jobs.len());
        for job in jobs {
            let known = match (
                store.bundle_inclusion(&job.hash),
                store.is_pending(&job.hash),
            ) {
                (Ok(inc), Ok(pending)) => inc.is_some() || pending || !seen.insert(job.hash),
                (Err(e), _) | (_, Err(e)) => {
                    let _ = job.reply.send(Err(SubmitError::Storage(e.to_string())));
                    continue;
                }
            };
            if known {
                // Idempotent: the bundle is already durable here (pending or included).
                let _ = job.reply.send(Ok(job.hash));
                continue;
            }
            fresh.push(job);
        }
        if fresh.is_empty() {
            continue;
        }
        // Admission: the consensus loop applies the checks that need chain state.
        let (reply, answer) = oneshot::channel();
        let request = LoopRequest::Admit {
            bundles: fresh.iter().map(|j| (j.hash, j.bundle.clone())).collect(),
            reply,
        };
        let verdicts = match to_loop.send(request).await {
            Ok(()) => answer.await.ok(),
            Err(_) => None,
        };
        let Some(verdicts) = verdicts else {
            for job in fresh {
                let _ = job.reply.send(Err(SubmitError::ShuttingDown));
            }
            continue;
        };
        let mut durable = Vec::with_capacity(fresh.len());
        for (job, verdict) in fresh.into_iter().zip(verdicts) {
            match verdict {
                Ok(Admission::AlreadyIncluded) => {
                    let _ = job.reply.send(Ok(job.hash));
                }
                // Added, or pending from a peer: made durable here too before the ack.
                Ok(Admission::Added) | Ok(Admission::AlreadyPending) => durable.push(job),
                Err(e) => {
                    let _ = job.reply.send(Err(e.into()));
                }
            }
        }
        if durable.is_empty() {
            continue;
        }
        let store2 = store.clone();
        let to_write: Vec<(Hash, Bundle)> =
            durable.iter().map(|j| (j.hash, j.bundle.clone())).collect();
        let bytes: u64 = to_write.iter().map(|(_, b)| b.encoded_len() as u64).sum();
        let started = std::time::Instant::now();
        let written = tokio::task::spawn_blocking(move || {
            let refs: Vec<(Hash, &Bundle)> = to_write.iter().map(|(h, b)| (*h, b)).collect();
            store2.persist_pending(&refs)
        })
        .await;
        metrics.store_write("persist_pending", started, bytes);
        let result = match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                metrics.admitted.inc_by(durable.len() as u64);
                for job in durable {
                    let _ = job.reply.send(Ok(job.hash));
                }
            }
            Err(e) => {
                // Not acknowledged. The bundle may still be included (it is in the in-memory mempool); a client
                // that retries gets the same hash back, idempotently.
                error!(error = %e, "cannot persist submitted bundles");
                for job in durable {
                    let _ = job.reply.send(Err(SubmitError::Storage(e.clone())));
                }
            }
        }
    }
}
