//! The verifier pool: a fixed set of threads (by default one per core) that check bundles from clients and
//! peers (limits, then one ECDSA recovery each), away from the async workers that carry votes and proposals.
//!
//! Work goes in as jobs over a queue bounded in jobs and in bytes of bundles; when either bound is reached a job is
//! refused at once instead of queueing behind work the pool cannot finish in time. Clients then get
//! UNAVAILABLE with a retry hint, a peer's dissemination is dropped (a proposal that needs those bundles asks
//! its proposer for them). The threads stop when the last handle is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Sizes of the pool (node config `[verify]`).
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// Threads; 0 means one per core.
    pub threads: usize,
    /// Jobs waiting at most.
    pub max_jobs: usize,
    /// Bytes of bundles waiting at most.
    pub max_bytes: usize,
}

/// Why a job was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bundle verifier is saturated ({jobs} jobs / {bytes} bytes waiting); retry later")]
pub struct Saturated {
    pub jobs: usize,
    pub bytes: usize,
}

/// A cheap-to-clone handle to the pool.
#[derive(Clone)]
pub struct VerifyPool {
    tx: mpsc::SyncSender<Job>,
    queued_jobs: Arc<AtomicUsize>,
    queued_bytes: Arc<AtomicUsize>,
    limits: PoolLimits,
    gauge: Option<Gauge>,
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool")
            .field("limits", &self.limits)
            .finish()
    }
}

impl VerifyPool {
    /// Starts the threads. `queued_bytes` (if given) follows the bytes waiting.
    pub fn start(limits: PoolLimits, queued_bytes_gauge: Option<Gauge>) -> std::io::Result<Self> {
        let threads = if limits.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            limits.threads
        };
        let (tx, rx) = mpsc::sync_channel::<Job>(limits.max_jobs.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("baton-verify-{i}"))
                .spawn(move || loop {
                    // One thread waits on the queue at a time; the others wait for the lock.
                    let job = {
                        let guard = rx.lock().unwrap_or_else(|p| p.into_inner());
                        guard.recv()
                    };
                    match job {
                        Ok(job) => job(),
                        // Every handle is gone: the node is stopping.
                        Err(_) => return,
                    }
                })?;
        }
        Ok(VerifyPool {
            tx,
            queued_jobs: Arc::new(AtomicUsize::new(0)),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            limits,
            gauge: queued_bytes_gauge,
        })
    }

    /// Reserves room for a job holding `bytes` of bundles, unless the queue is at its bounds. A job bigger than
    /// the byte bound is let in when nothing else waits (it could never fit otherwise).
    pub fn reserve(&self, bytes: usize) -> Result<Permit<'_>, Saturated> {
        let jobs = self.queued_jobs.fetch_add(1, Ordering::AcqRel);
        let held = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        if jobs >= self.limits.max_jobs || (held > 0 && held + bytes > self.limits.max_bytes) {
            self.release(bytes);
            return Err(Saturated { jobs, bytes: held });
        }
        self.publish();
        Ok(Permit {
            pool: self,
            bytes,
            used: false,
        })
    }

    fn release(&self, bytes: usize) {
        self.queued_jobs.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.publish();
    }

    fn publish(&self) {
        if let Some(g) = &self.gauge {
            g.set(self.queued_bytes.load(Ordering::Relaxed) as i64);
        }
    }

    /// Bytes waiting now.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }
}

/// Room in the queue for one job; dropped unused, it frees the room.
#[must_use]
pub struct Permit<'a> {
    pool: &'a VerifyPool,
    bytes: usize,
    used: bool,
}

impl Permit<'_> {
    /// Queues `f` in the reserved room.
    pub fn run(mut self, f: impl FnOnce() + Send + 'static) {
        self.used = true;
        let pool = self.pool;
        let (queued_jobs, queued_bytes, gauge, bytes) = (
            pool.queued_jobs.clone(),
            pool.queued_bytes.clone(),
            pool.gauge.clone(),
            self.bytes,
        );
        let job: Job = Box::new(move || {
            queued_jobs.fetch_sub(1, Ordering::AcqRel);
            let left = queued_bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
            if let Some(g) = &gauge {
                g.set(left as i64);
            }
            f()
        });
        // The channel holds at most as many jobs as were reserved, so it is never full; if every thread is gone
        // the job runs here rather than being lost.
        if let Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) =
            pool.tx.try_send(job)
        {
            job();
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.used {
            self.pool.release(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn runs_jobs_and_refuses_beyond_its_bounds() {
        let pool = VerifyPool::start(
            PoolLimits {
                threads: 1,
                max_jobs: 2,
                max_bytes: 100,
            },
            None,
        )
        .unwrap();
        // Hold the only thread until released.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        pool.reserve(10).unwrap().run(move || {
            started_tx.send(()).unwrap();
            held.recv().unwrap();
        });
        started.recv_timeout(Duration::from_secs(10)).unwrap();
        // Queue: one job of 60 bytes fits; a second of 60 exceeds the bytes; a small one fits, then the count is
        // full.
        let (done_tx, done) = std::sync::mpsc::channel::<u32>();
        let d = done_tx.clone();
        pool.reserve(60).unwrap().run(move || d.send(1).unwrap());
        let err = pool.reserve(60).err().unwrap();
        assert_eq!(err.bytes, 60);
        let d = done_tx.clone();
        pool.reserve(5).unwrap().run(move || d.send(3).unwrap());
        assert!(pool.reserve(1).is_err());
        // A permit dropped unused frees its room.
        assert_eq!(pool.queued_bytes(), 65);
        assert!(pool.reserve(0).is_err());
        assert_eq!(pool.queued_bytes(), 65);
        release.send(()).unwrap();
        let mut got = vec![
            done.recv_timeout(Duration::from_secs(10)).unwrap(),
            done.recv_timeout(Duration::from_secs(10)).unwrap(),
        ];
        got.sort();
        assert_eq!(got, vec![1, 3]);
        assert_eq!(pool.queued_bytes(), 0);
        // A job bigger than the byte bound alone still runs when nothing waits (it could never fit otherwise).
        let unused = pool.reserve(30).unwrap();
        drop(unused);
        assert_eq!(pool.queued_bytes(), 0);
        let d = done_tx.clone();
        pool.reserve(1_000).unwrap().run(move || d.send(5).unwrap());
        assert_eq!(done.recv_timeout(Duration::from_secs(10)).unwrap(), 5);
    }
}
