//! Ingest: makes submitted bundles durable before they are acknowledged.
//!
//! A handle sends each submission over a bounded queue to one writer task. The writer takes whatever is queued
//! (up to `ingest_group`), drops duplicates, writes the rest to the `mempool` column family in one batch with one
//! fsync, hands them to the consensus loop, and only then answers each submitter. Group commit keeps the fsync
//! cost per bundle small at high rates without weakening the guarantee.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use baton_consensus::block::check_bundle;
use baton_consensus::error::BundleError;
use baton_consensus::hash::Hash;
use baton_consensus::params::ConsensusParams;
use baton_consensus::types::Bundle;

use crate::state::Shared;
use crate::store::RocksStore;

/// Why a submission was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(BundleError),
    #[error("mempool is full ({0}); retry later")]
    Full(String),
    #[error("the node is overloaded: ingest queue full; retry later")]
    Busy,
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the node is shutting down")]
    ShuttingDown,
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
    params: Arc<ConsensusParams>,
}

/// Sizes of the ingest path.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    pub queue: usize,
    pub group: usize,
    pub mempool_max_bundles: usize,
    pub mempool_max_bytes: usize,
}

impl IngestHandle {
    /// Starts the writer task. Durable bundles go to `admit`, which the consensus loop drains.
    pub fn spawn(
        store: RocksStore,
        params: ConsensusParams,
        limits: IngestLimits,
        shared: Arc<Shared>,
        admit: mpsc::Sender<(Hash, Bundle)>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(limits.queue);
        tokio::spawn(writer(rx, store, limits, shared, admit));
        IngestHandle {
            tx,
            params: Arc::new(params),
        }
    }

    /// Checks a bundle against the limits, without queueing it.
    pub fn check(&self, bundle: &Bundle) -> Result<(), SubmitError> {
        check_bundle(bundle, &self.params).map_err(SubmitError::Invalid)
    }

    /// Submits a bundle; resolves once it is durable (or refused).
    pub async fn submit(&self, bundle: Bundle) -> Result<Hash, SubmitError> {
        self.check(&bundle)?;
        let hash = bundle.hash();
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

async fn writer(
    mut rx: mpsc::Receiver<Job>,
    store: RocksStore,
    limits: IngestLimits,
    shared: Arc<Shared>,
    admit: mpsc::Sender<(Hash, Bundle)>,
) {
    let mut group = Vec::with_capacity(limits.group);
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < limits.group {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let jobs = std::mem::take(&mut group);
        let mut fresh = Vec::with_capacity(jobs.len());
        let mut seen = HashSet::with_capacity(jobs.len());
        let mut bundles = shared.mempool_bundles.load(Ordering::Relaxed) as usize;
        let mut bytes = shared.mempool_bytes.load(Ordering::Relaxed) as usize;
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
            let size = job.bundle.encoded_len();
            if bundles + 1 > limits.mempool_max_bundles || bytes + size > limits.mempool_max_bytes {
                let why = format!(
                    "{bundles} bundles / {bytes} bytes pending, limits {} / {}",
                    limits.mempool_max_bundles, limits.mempool_max_bytes
                );
                let _ = job.reply.send(Err(SubmitError::Full(why)));
                continue;
            }
            bundles += 1;
            bytes += size;
            fresh.push(job);
        }
        if fresh.is_empty() {
            continue;
        }
        let store2 = store.clone();
        let to_write: Vec<(Hash, Bundle)> =
            fresh.iter().map(|j| (j.hash, j.bundle.clone())).collect();
        let written = tokio::task::spawn_blocking(move || {
            let refs: Vec<(Hash, &Bundle)> = to_write.iter().map(|(h, b)| (*h, b)).collect();
            store2.persist_pending(&refs)
        })
        .await;
        let result = match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            error!(error = %e, "cannot persist submitted bundles");
            for job in fresh {
                let _ = job.reply.send(Err(SubmitError::Storage(e.clone())));
            }
            continue;
        }
        for job in fresh {
            // Durable now; the consensus loop admits it to the in-memory mempool. If the loop is gone the node is
            // stopping, and the bundle is reloaded from disk at the next start: it is still acknowledged.
            let _ = admit.send((job.hash, job.bundle)).await;
            let _ = job.reply.send(Ok(job.hash));
        }
    }
}
