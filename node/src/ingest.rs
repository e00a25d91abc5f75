//! Ingest: checks submitted bundles and makes them durable before they are acknowledged.
//!
//! Submissions are checked on the verifier pool ([`crate::verify`]), a chunk of them per job: shape and limits,
//! registered rollups, network id, and the signature (one ECDSA recovery; the only time this node recovers this
//! bundle's signer). A full pool refuses the chunk at once (UNAVAILABLE, retry later). Checked bundles go over a
//! bounded queue to one writer task. The writer takes whatever is queued (up to `ingest_group`), asks the consensus
//! loop to admit it (the checks that need chain state: already included, expiry, nonces, room in the mempool),
//! writes the admitted bundles to the `mempool` column family in one batch with one fsync, and only then answers
//! each submitter.
//! Group commit keeps the fsync cost per bundle small at high rates without weakening the guarantee.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::error;

use baton_consensus::block::{check_stateless, OrderedBy};
use baton_consensus::bundle::{Bundle, Sender};
use baton_consensus::error::{BundleError, ConsensusError, MempoolFull};
use baton_consensus::hash::Hash;
use baton_consensus::host::Clock;
use baton_consensus::mempool::{backlogged, Admission};
use baton_consensus::registry::ChainSpec;

use crate::app::LoopRequest;
use crate::app::SystemClock;
use crate::metrics::{Metrics, ReasonLabel};
use crate::store::RocksStore;
use crate::verify::{Saturated, VerifyPool};

/// The retry hint of a refusal expected to clear within a moment (a full queue or verifier pool), and the least
/// one for a chain that is behind (milliseconds).
const RETRY_SOON_MS: u64 = 100;
/// The retry hint of a full mempool, and the most one for a chain that is behind (milliseconds).
const RETRY_FULL_MS: u64 = 1_000;

/// Why a submission was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    #[error("{0}")]
    Invalid(BundleError),
    /// A full mempool: the message starts with which bound ("mempool is full", "no room behind nonce gaps").
    #[error("{0}")]
    Full(String),
    /// The based-rollup forwarder's queue is full (`l1.forward.max_pending`, `l1.forward.queue`).
    #[error("{0}")]
    ForwardFull(String),
    #[error(
        "the node is overloaded: ingest queue full (mempool.ingest_queue / mempool.ingest_queue_bytes); retry later"
    )]
    Busy,
    #[error("the node is overloaded: {0}")]
    Saturated(#[from] Saturated),
    #[error("the node is overloaded: {}", ConsensusError::Backlogged { waited_ms: *waited_ms, limit_ms: *limit_ms })]
    Backlogged { waited_ms: u64, limit_ms: u64 },
    #[error("the node is overloaded: {}", ConsensusError::BehindGap { nonce: *nonce, missing: *missing })]
    BehindGap { nonce: u64, missing: u64 },
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error(
        "this node's disk is nearly full ({free} bytes free, storage.min_free_bytes is {min}): it takes no \
         submissions until there is room; submit to another node"
    )]
    DiskLow { free: u64, min: u64 },
    /// The based-rollup forwarder's own limits (its fee budget, a sender's share of its queue).
    #[error("{0}")]
    ForwardLimit(String),
}

impl SubmitError {
    /// When the same submission may be taken if sent again (milliseconds from now), for a refusal that clears by
    /// itself: a full queue or verifier pool soon, a chain that is behind after about as long as its oldest ready
    /// bundle has waited, a full mempool (or its room behind nonce gaps) once blocks have taken some of it, a full
    /// forwarding queue once the forwarder has posted some of it. `None`:
    /// sent again unchanged, it is refused again. Sent to clients as the retry hint; long enough that retries of
    /// refused bundles do not themselves load the node it sheds load for.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            SubmitError::Busy | SubmitError::Saturated(_) | SubmitError::BehindGap { .. } => {
                Some(RETRY_SOON_MS)
            }
            SubmitError::Backlogged { waited_ms, .. } => {
                Some((*waited_ms).clamp(RETRY_SOON_MS, RETRY_FULL_MS))
            }
            SubmitError::Full(_) | SubmitError::ForwardFull(_) => Some(RETRY_FULL_MS),
            SubmitError::Invalid(_)
            | SubmitError::Storage(_)
            | SubmitError::ShuttingDown
            | SubmitError::DiskLow { .. }
            | SubmitError::ForwardLimit(_) => None,
        }
    }

    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            SubmitError::Invalid(b) => b.label(),
            SubmitError::Full(_) => "mempool_full",
            SubmitError::ForwardFull(_) => "forward_queue_full",
            SubmitError::Busy => "busy",
            SubmitError::Saturated(_) => "verifier_saturated",
            SubmitError::Backlogged { .. } => "backlogged",
            SubmitError::BehindGap { .. } => "behind_gap",
            SubmitError::Storage(_) => "storage",
            SubmitError::ShuttingDown => "shutting_down",
            SubmitError::DiskLow { .. } => "disk_low",
            SubmitError::ForwardLimit(_) => "forward_limit",
        }
    }
}

impl From<ConsensusError> for SubmitError {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::InvalidBundle(b) => SubmitError::Invalid(b),
            ConsensusError::MempoolFull(m) => {
                // Which bound first, so that clients (and the harness's refusal counts) tell them apart.
                let which = match m {
                    MempoolFull::Pending { .. } => "mempool is full",
                    MempoolFull::Waiting { .. } => "no room behind nonce gaps",
                };
                SubmitError::Full(format!("{which}: {m}"))
            }
            ConsensusError::Backlogged {
                waited_ms,
                limit_ms,
            } => SubmitError::Backlogged {
                waited_ms,
                limit_ms,
            },
            ConsensusError::BehindGap { nonce, missing } => {
                SubmitError::BehindGap { nonce, missing }
            }
            other => SubmitError::Storage(other.to_string()),
        }
    }
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
    /// Bytes of the bundles queued for the writer or in the group it is writing (at most `queue_bytes`).
    queued: Arc<QueuedBytes>,
    spec: Arc<ChainSpec>,
    metrics: Arc<Metrics>,
    pool: VerifyPool,
    gate: Arc<AdmissionGate>,
}

/// Admission at the edge: the consensus loop publishes when the oldest bundle ready for a block was admitted
/// (`Mempool::oldest_ready_ms`), and submissions are refused before any work is spent on them (no signature
/// recovery) by the same rule `Host::admit_submission` applies when the loop admits
/// (`baton_consensus::mempool::backlogged`). The wait is computed when asked, so it keeps growing while the loop
/// is too busy to publish.
#[derive(Debug, Default)]
pub struct AdmissionGate {
    /// Clock milliseconds; 0 when nothing is ready.
    oldest_ready_ms: std::sync::atomic::AtomicU64,
    limit_ms: u64,
    /// Free bytes on the data directory's disk when below `storage.min_free_bytes` (0: enough room).
    disk_low: std::sync::atomic::AtomicU64,
    min_free_bytes: std::sync::atomic::AtomicU64,
    /// Senders with bundles behind a nonce gap, and the nonce that fills it (`Mempool::open_gaps`, at most
    /// `mempool.max_waiting` entries of fixed size): such a bundle passes while the chain is behind.
    gaps: std::sync::Mutex<HashMap<Sender, u64>>,
}

impl AdmissionGate {
    /// A gate refusing beyond `limit_ms` (0: never).
    pub fn new(limit_ms: u64) -> Self {
        AdmissionGate {
            oldest_ready_ms: Default::default(),
            limit_ms,
            disk_low: Default::default(),
            min_free_bytes: Default::default(),
            gaps: Default::default(),
        }
    }

    /// The loop's latest open nonce gaps ([`baton_consensus::mempool::Mempool::open_gaps`]).
    pub fn publish_gaps(&self, gaps: Vec<(Sender, u64)>) {
        *self.gaps.lock().unwrap_or_else(|p| p.into_inner()) = gaps.into_iter().collect();
    }

    /// Which of `bundles` would fill their sender's first nonce gap, as last published (one lock for them all).
    /// Not a check of a bundle: one that claims a gap falsely passes the gate only to be checked (and refused)
    /// like any submission.
    pub fn fills_gap(&self, bundles: &[Bundle]) -> Vec<bool> {
        let gaps = self.gaps.lock().unwrap_or_else(|p| p.into_inner());
        bundles
            .iter()
            .map(|b| gaps.get(&b.sender) == Some(&b.nonce))
            .collect()
    }

    /// The disk watcher's latest reading ([`crate::retention`]): submissions are refused while `free` is below
    /// `min`.
    pub fn publish_disk(&self, free: u64, min: u64) {
        use std::sync::atomic::Ordering;
        self.min_free_bytes.store(min, Ordering::Relaxed);
        self.disk_low
            .store(if free < min { free.max(1) } else { 0 }, Ordering::Relaxed);
    }

    /// The loop's latest reading.
    pub fn publish(&self, oldest_ready_ms: Option<u64>) {
        self.oldest_ready_ms.store(
            oldest_ready_ms.unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Why submissions are refused at `now_ms`, if they are.
    pub fn refusal(&self, now_ms: u64) -> Option<SubmitError> {
        use std::sync::atomic::Ordering;
        let free = self.disk_low.load(Ordering::Relaxed);
        if free > 0 {
            return Some(SubmitError::DiskLow {
                free,
                min: self.min_free_bytes.load(Ordering::Relaxed),
            });
        }
        let oldest = self
            .oldest_ready_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        backlogged((oldest > 0).then_some(oldest), now_ms, self.limit_ms)
            .err()
            .map(SubmitError::from)
    }
}

/// The answer to one submission: resolves once the bundle is durable here (or refused).
pub type Pending = oneshot::Receiver<Result<Hash, SubmitError>>;

/// Bytes waiting in the ingest path, bounded: taken before a submission is queued, given back once the writer
/// has answered it.
struct QueuedBytes {
    now: std::sync::atomic::AtomicUsize,
    max: usize,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl QueuedBytes {
    fn take(&self, n: usize) -> bool {
        use std::sync::atomic::Ordering;
        let before = self.now.fetch_add(n, Ordering::AcqRel);
        if before + n > self.max {
            self.now.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        self.gauge.set((before + n) as i64);
        true
    }

    fn give_back(&self, n: usize) {
        let after = self.now.fetch_sub(n, std::sync::atomic::Ordering::AcqRel) - n;
        self.gauge.set(after as i64);
    }
}

/// Sizes of the ingest path.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    pub queue: usize,
    /// Bytes of submissions queued for the writer (and in the group it writes), at most.
    pub queue_bytes: usize,
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
        pool: VerifyPool,
        gate: Arc<AdmissionGate>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(limits.queue);
        let queued = Arc::new(QueuedBytes {
            now: Default::default(),
            max: limits.queue_bytes,
            gauge: metrics.ingest_queued_bytes.clone(),
        });
        // Ends once every handle is dropped and what it took is written and answered.
        let writer = tokio::spawn(writer(
            rx,
            store,
            limits,
            to_loop,
            metrics.clone(),
            queued.clone(),
        ));
        let handle = IngestHandle {
            tx,
            queued,
            spec: Arc::new(spec),
            metrics,
            pool,
            gate,
        };
        (handle, writer)
    }

    /// A handle with no writer behind it: every submission is answered "shutting down". For tests of the read
    /// path, which never submits.
    #[cfg(test)]
    pub(crate) fn detached(spec: ChainSpec, metrics: Arc<Metrics>, pool: VerifyPool) -> Self {
        let (tx, _) = mpsc::channel(1);
        let queued = Arc::new(QueuedBytes {
            now: Default::default(),
            max: 0,
            gauge: metrics.ingest_queued_bytes.clone(),
        });
        IngestHandle {
            tx,
            queued,
            spec: Arc::new(spec),
            metrics,
            pool,
            gate: Arc::new(AdmissionGate::new(0)),
        }
    }

    /// Submits a bundle; resolves once it is durable (or refused).
    pub async fn submit(&self, bundle: Bundle) -> Result<Hash, SubmitError> {
        match self.submit_many(vec![bundle]).pop() {
            Some(pending) => pending.await.map_err(|_| SubmitError::ShuttingDown)?,
            None => Err(SubmitError::ShuttingDown),
        }
    }

    /// Submits bundles as one job of the verifier pool; one answer per bundle, in order. Refusals are counted in
    /// `baton_mempool_rejected_total` by reason where they happen.
    pub fn submit_many(&self, bundles: Vec<Bundle>) -> Vec<Pending> {
        let mut answers = Vec::with_capacity(bundles.len());
        let mut replies = Vec::with_capacity(bundles.len());
        for _ in 0..bundles.len() {
            let (reply, answer) = oneshot::channel();
            replies.push(reply);
            answers.push(answer);
        }
        let (bundles, replies) = match self.gate.refusal(SystemClock.now_ms()) {
            None => (bundles, replies),
            Some(why) => {
                // Bundles that fill their sender's nonce gap still pass: they make acknowledged bundles waiting
                // behind them includable (the loop lets them in too, `Host::admit_submission`).
                let fillers = self.gate.fills_gap(&bundles);
                let mut pass = (Vec::new(), Vec::new());
                for ((bundle, reply), fills) in bundles.into_iter().zip(replies).zip(fillers) {
                    if fills {
                        pass.0.push(bundle);
                        pass.1.push(reply);
                    } else {
                        self.refuse(reply, why.clone());
                    }
                }
                if pass.0.is_empty() {
                    return answers;
                }
                pass
            }
        };
        let bytes = bundles.iter().map(Bundle::encoded_len).sum();
        let permit = match self.pool.reserve(bytes) {
            Ok(p) => p,
            Err(saturated) => {
                for reply in replies {
                    self.refuse(reply, SubmitError::Saturated(saturated));
                }
                return answers;
            }
        };
        let (tx, spec, ingest) = (self.tx.clone(), self.spec.clone(), self.clone());
        permit.run(move || {
            for (bundle, reply) in bundles.into_iter().zip(replies) {
                let hash = match check_stateless(&bundle, &spec, OrderedBy::Validators, |_| false) {
                    Ok(h) => h,
                    Err(e) => {
                        ingest.refuse(reply, SubmitError::Invalid(e));
                        continue;
                    }
                };
                let bytes = bundle.encoded_len();
                if !ingest.queued.take(bytes) {
                    ingest.refuse(reply, SubmitError::Busy);
                    continue;
                }
                if let Err(e) = tx.try_send(Job {
                    hash,
                    bundle,
                    reply,
                }) {
                    ingest.queued.give_back(bytes);
                    let (job, why) = match e {
                        mpsc::error::TrySendError::Full(j) => (j, SubmitError::Busy),
                        mpsc::error::TrySendError::Closed(j) => (j, SubmitError::ShuttingDown),
                    };
                    ingest.refuse(job.reply, why);
                }
            }
        });
        answers
    }

    fn refuse(&self, reply: oneshot::Sender<Result<Hash, SubmitError>>, why: SubmitError) {
        count_refusal(&self.metrics, &why);
        let _ = reply.send(Err(why));
    }
}

/// Counts a refusal in `baton_mempool_rejected_total` by its reason (ingest's and the forwarder's).
pub(crate) fn count_refusal(metrics: &Metrics, why: &SubmitError) {
    metrics
        .rejected
        .get_or_create(&ReasonLabel {
            reason: why.label(),
        })
        .inc();
}

async fn writer(
    mut rx: mpsc::Receiver<Job>,
    store: RocksStore,
    limits: IngestLimits,
    to_loop: mpsc::Sender<LoopRequest>,
    metrics: Arc<Metrics>,
    queued: Arc<QueuedBytes>,
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
        // The same bundle twice in one group is written once and both submitters get its hash. A bundle already
        // durable here (included, or pending) is found by the loop's admission (submissions are idempotent).
        let jobs = std::mem::take(&mut group);
        let bytes: usize = jobs.iter().map(|j| j.bundle.encoded_len()).sum();
        let mut fresh: Vec<Job> = Vec::with_capacity(jobs.len());
        let mut twins: Vec<Job> = Vec::new();
        let mut seen = HashSet::with_capacity(jobs.len());
        for job in jobs {
            if seen.insert(job.hash) {
                fresh.push(job);
            } else {
                twins.push(job);
            }
        }
        let outcomes = admit_and_persist(fresh, &store, &to_loop, &metrics).await;
        for job in twins {
            let result = outcomes
                .get(&job.hash)
                .cloned()
                .unwrap_or(Err(SubmitError::ShuttingDown));
            let _ = job.reply.send(result);
        }
        queued.give_back(bytes);
    }
}

/// Has the loop admit `fresh` (distinct bundles), persists the admitted ones with one fsync, answers each
/// submitter, and returns every outcome by bundle hash.
async fn admit_and_persist(
    fresh: Vec<Job>,
    store: &RocksStore,
    to_loop: &mpsc::Sender<LoopRequest>,
    metrics: &Metrics,
) -> HashMap<Hash, Result<Hash, SubmitError>> {
    let mut outcomes = HashMap::with_capacity(fresh.len());
    let mut answer = |job: Job, result: Result<Hash, SubmitError>| {
        if let Err(e) = &result {
            count_refusal(metrics, e);
        }
        outcomes.insert(job.hash, result.clone());
        let _ = job.reply.send(result);
    };
    // Admission: the consensus loop applies the checks that need chain state.
    let (reply, verdicts) = oneshot::channel();
    let request = LoopRequest::Admit {
        bundles: fresh.iter().map(|j| (j.hash, j.bundle.clone())).collect(),
        reply,
    };
    let verdicts = match to_loop.send(request).await {
        Ok(()) => verdicts.await.ok(),
        Err(_) => None,
    };
    let Some(verdicts) = verdicts else {
        for job in fresh {
            answer(job, Err(SubmitError::ShuttingDown));
        }
        return outcomes;
    };
    let mut durable = Vec::with_capacity(fresh.len());
    for (job, verdict) in fresh.into_iter().zip(verdicts) {
        match verdict {
            Ok(Admission::AlreadyIncluded) => {
                let hash = job.hash;
                answer(job, Ok(hash));
            }
            // Added, or pending (from a peer, or submitted before): made durable here before the ack.
            Ok(Admission::Added) | Ok(Admission::AlreadyPending) => durable.push(job),
            Err(e) => answer(job, Err(e.into())),
        }
    }
    if durable.is_empty() {
        return outcomes;
    }
    let store2 = store.clone();
    let bytes: u64 = durable.iter().map(|j| j.bundle.encoded_len() as u64).sum();
    let started = std::time::Instant::now();
    // The jobs go to the blocking thread and come back: the bundles are written from where they are, not copied.
    let written = tokio::task::spawn_blocking(move || {
        let refs: Vec<(Hash, &Bundle)> = durable.iter().map(|j| (j.hash, &j.bundle)).collect();
        let result = store2.persist_pending(&refs).map_err(|e| e.to_string());
        (durable, result)
    })
    .await;
    metrics.store_write("persist_pending", started, bytes);
    let (durable, result) = match written {
        Ok(done) => done,
        // The blocking task panicked: its jobs are gone, and their submitters see the node shutting down.
        Err(e) => {
            error!(error = %e, "persisting submitted bundles panicked");
            return outcomes;
        }
    };
    match result {
        Ok(()) => {
            metrics.admitted.inc_by(durable.len() as u64);
            for job in durable {
                let hash = job.hash;
                answer(job, Ok(hash));
            }
        }
        Err(e) => {
            // Not acknowledged. The bundle may still be included (it is in the in-memory mempool); a client that
            // retries gets the same hash back, idempotently.
            error!(error = %e, "cannot persist submitted bundles");
            for job in durable {
                answer(job, Err(SubmitError::Storage(e.clone())));
            }
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::PoolLimits;
    use alloy_signer_local::PrivateKeySigner;
    use baton_consensus::bundle::BundleEntry;
    use baton_consensus::bundle::UnsignedBundle;

    /// An ingest path over a fresh store (kept in the returned directory) and a one-thread verifier pool, handing
    /// its admissions to `to_loop`, writing each submission on its own, bounded at `queue_bytes`.
    fn ingest(
        to_loop: mpsc::Sender<LoopRequest>,
        queue_bytes: usize,
        gate: Arc<AdmissionGate>,
    ) -> (IngestHandle, tokio::task::JoinHandle<()>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            RocksStore::open(dir.path(), &crate::config::StorageSection::for_tests(false)).unwrap();
        let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
        let pool = VerifyPool::start(
            PoolLimits {
                threads: 1,
                max_jobs: 1024,
                max_bytes: 1 << 30,
            },
            None,
        )
        .unwrap();
        let (handle, writer) = IngestHandle::spawn(
            store,
            ChainSpec::for_tests(7, 4),
            IngestLimits {
                queue: 16_384,
                queue_bytes,
                group: 1,
                linger: std::time::Duration::ZERO,
            },
            to_loop,
            metrics,
            pool,
            gate,
        );
        (handle, writer, dir)
    }

    /// While the consensus loop does not take submissions, what waits in the ingest path is bounded in bytes, not
    /// only in count (16,384 submissions of 128 KiB would be 2 GiB): past the bound submissions are refused at
    /// once with a retry hint.
    #[tokio::test]
    async fn a_stalled_loop_holds_at_most_the_ingest_byte_bound() {
        // Nobody serves the loop's queue: the writer's first group waits for its verdicts for good.
        let (to_loop, _stalled) = mpsc::channel(16);
        let limit = 1024 * 1024;
        let (ingest, _writer, _dir) = ingest(to_loop, limit, Arc::new(AdmissionGate::new(0)));
        let mut answers = Vec::new();
        for _ in 0..40 {
            let key = PrivateKeySigner::random();
            let bundle = baton_proto::client::sign_bundle(
                &key,
                UnsignedBundle {
                    network_id: 7,
                    sender: key.address(),
                    nonce: 0,
                    expiry_height: 100,
                    entries: vec![BundleEntry {
                        rollup_id: 1,
                        payload: vec![7; 60 * 1024],
                    }],
                },
            )
            .unwrap();
            answers.extend(ingest.submit_many(vec![bundle]));
        }
        let settled = futures::future::join_all(
            answers
                .into_iter()
                .map(|a| tokio::time::timeout(std::time::Duration::from_secs(2), a)),
        )
        .await;
        let busy = settled
            .iter()
            .filter(|a| matches!(a, Ok(Ok(Err(SubmitError::Busy)))))
            .count();
        let held = (40 - busy) * 60 * 1024;
        assert!(
            held <= limit + 60 * 1024,
            "{} of 40 submissions of 60 KiB wait for the stalled loop",
            40 - busy
        );
    }

    /// While the chain is behind, the edge refuses submissions before any work, except a bundle that fills its
    /// sender's nonce gap as the loop last published it: it goes on to be checked and admitted.
    #[tokio::test]
    async fn a_gap_filler_passes_the_closed_gate_and_others_are_refused() {
        let (to_loop, mut from_ingest) = mpsc::channel(16);
        // The loop admits whatever reaches it.
        tokio::spawn(async move {
            while let Some(req) = from_ingest.recv().await {
                if let LoopRequest::Admit { bundles, reply } = req {
                    let _ = reply.send(bundles.iter().map(|_| Ok(Admission::Added)).collect());
                }
            }
        });
        let gate = Arc::new(AdmissionGate::new(150));
        gate.publish(Some(SystemClock.now_ms().saturating_sub(10_000)));
        let (ingest, _writer, _dir) = ingest(to_loop, 1 << 20, gate.clone());
        let signed =
            |n: u8, nonce: u64| baton_consensus::bundle::testing::bundle(n, nonce, &[1], n);
        // Sender 1's nonce 3 fills its gap; sender 2 has none.
        gate.publish_gaps(vec![(signed(1, 0).sender, 3)]);
        let filler = signed(1, 3);
        let answers = ingest.submit_many(vec![signed(1, 4), filler.clone(), signed(2, 0)]);
        let mut got = Vec::new();
        for a in answers {
            got.push(
                tokio::time::timeout(std::time::Duration::from_secs(5), a)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert!(
            matches!(got[0], Err(SubmitError::Backlogged { .. })),
            "{got:?}"
        );
        assert_eq!(got[1].as_ref().unwrap(), &filler.hash());
        assert!(
            matches!(got[2], Err(SubmitError::Backlogged { .. })),
            "{got:?}"
        );
    }

    #[test]
    fn the_gate_refuses_only_beyond_its_bound() {
        let now = 10_000;
        let gate = AdmissionGate::new(150);
        assert!(gate.refusal(now).is_none());
        gate.publish(Some(now - 150));
        assert!(gate.refusal(now).is_none(), "at the bound is still fine");
        gate.publish(Some(now - 151));
        let why = gate.refusal(now).expect("refused");
        assert_eq!(why.label(), "backlogged");
        assert!(why.to_string().contains("151 ms"), "{why}");
        // The wait grows with time even when the loop publishes nothing new.
        gate.publish(Some(now - 100));
        assert!(gate.refusal(now).is_none());
        assert!(gate.refusal(now + 51).is_some());
        gate.publish(None);
        assert!(gate.refusal(now + 1_000_000).is_none());
        let off = AdmissionGate::new(0);
        off.publish(Some(1));
        assert!(off.refusal(1_000_000).is_none(), "0 turns the gate off");
    }
}
