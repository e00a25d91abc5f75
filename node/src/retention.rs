//! Keeping the disk from filling: history pruning, the free-space watermark and the write-ahead log's upkeep.
//!
//! Block space costs nothing, so how fast the chain grows is up to whoever submits. Three bounds keep a validator's
//! disk from filling until a commit fails and the node stops:
//!
//! - **Retention** (`storage.retain_heights`): history more than that many heights below the tip is pruned
//!   ([`RocksStore::prune`]: blocks, batches, headers, certificates; the heights where the set changes are kept).
//!   The node then says so: GetBatch and StreamBatches below the kept range answer OUT_OF_RANGE naming the first
//!   kept height, and the engine's value sync is told the truth (`GetHistoryMinHeight`), so peers sync older
//!   heights from a node that has them. 0 keeps everything (an archive node; a network needs one for a new node to
//!   sync from genesis).
//! - **Watermark** (`storage.min_free_bytes`): while the data directory's file system has less free space than
//!   that, the node takes no submissions (RESOURCE_EXHAUSTED saying why; peers' bundles and decided blocks are
//!   still stored, so the chain goes on), long before a commit could fail. `baton_storage_free_bytes` and the
//!   `BatonDiskNearlyFull` alert show it coming.
//! - **The write-ahead log** (`storage.wal_flush_bytes`): RocksDB keeps a log file until every column family with
//!   data in it has flushed, so the families written a few bytes per height would keep a gigabyte of logs alive
//!   on each node ([`WalUpkeep`] flushes them early; `baton_storage_wal_bytes` shows the live log).
//!
//! One task does all three: pruning and the watermark once a second, with at most [`PRUNE_STEP`] heights deleted
//! per write so that a node turning retention on over a long history catches up in bounded steps; the log's
//! upkeep four times a second.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use baton_consensus::ids::RollupId;

use crate::ingest::AdmissionGate;
use crate::metrics::FamilyLabel;
use crate::metrics::Metrics;
use crate::state::Shared;
use crate::store::{RocksStore, WalUpkeep, WAL_LOOK_INTERVAL};

/// Heights deleted per write at most.
pub const PRUNE_STEP: u64 = 1_000;

/// What the task needs (`[storage]` in the node config).
#[derive(Clone, Debug)]
pub struct Retention {
    pub data_dir: PathBuf,
    pub retain_heights: u64,
    pub min_free_bytes: u64,
    pub wal_flush_bytes: u64,
    /// Pruning and the watermark (the log's upkeep looks every [`WAL_LOOK_INTERVAL`]).
    pub interval: Duration,
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// The first height to keep when the tip is `latest`: `retain` heights up to and including the tip.
pub fn keep_from(latest: u64, retain: u64) -> u64 {
    if retain == 0 {
        return 1;
    }
    latest.saturating_add(1).saturating_sub(retain).max(1)
}

/// One look of the write-ahead log's upkeep, off the async workers; `None` when the runtime is shutting down.
async fn wal_look(
    mut upkeep: WalUpkeep,
    store: &RocksStore,
    metrics: &Metrics,
) -> Option<WalUpkeep> {
    let s = store.clone();
    let (upkeep, look) = tokio::task::spawn_blocking(move || {
        let look = upkeep.look(&s);
        (upkeep, look)
    })
    .await
    .ok()?;
    match look {
        Ok(look) => {
            metrics
                .storage_wal_bytes
                .set(look.live_bytes.min(i64::MAX as u64) as i64);
            if let Some(family) = look.flushed {
                metrics
                    .storage_wal_flushes
                    .get_or_create(&FamilyLabel { family })
                    .inc();
            }
        }
        Err(e) => warn!(error = %e, "cannot keep the write-ahead log short"),
    }
    Some(upkeep)
}

/// Runs until `stop` resolves.
pub async fn run(
    cfg: Retention,
    store: RocksStore,
    rollups: Vec<RollupId>,
    shared: Arc<Shared>,
    gate: Arc<AdmissionGate>,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(cfg.interval);
    let mut was_low = false;
    let mut upkeep = WalUpkeep::new(cfg.wal_flush_bytes);
    metrics
        .storage_min_free_bytes
        .set(cfg.min_free_bytes as i64);
    let mut wal_tick = tokio::time::interval(WAL_LOOK_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = wal_tick.tick() => {
                let Some(u) = wal_look(upkeep, &store, &metrics).await else {
                    return;
                };
                upkeep = u;
                continue;
            }
            _ = tick.tick() => {}
        }
        match free_bytes(&cfg.data_dir) {
            Ok(free) => {
                metrics
                    .storage_free_bytes
                    .set(free.min(i64::MAX as u64) as i64);
                gate.publish_disk(free, cfg.min_free_bytes);
                let low = free < cfg.min_free_bytes;
                if low != was_low {
                    if low {
                        warn!(
                            free,
                            min = cfg.min_free_bytes,
                            "disk nearly full: refusing submissions"
                        );
                    } else {
                        info!(free, "disk has room again: taking submissions");
                    }
                    was_low = low;
                }
            }
            Err(e) => {
                warn!(error = %e, dir = %cfg.data_dir.display(), "cannot read free disk space")
            }
        }
        if cfg.retain_heights == 0 {
            continue;
        }
        let below = keep_from(shared.latest_height(), cfg.retain_heights);
        // Catch up step by step (each step is one bounded write), then wait for the next tick.
        while shared.history_min() < below {
            let target = below.min(shared.history_min().saturating_add(PRUNE_STEP));
            // Readers learn the new minimum before anything is deleted.
            shared.set_history_min(target);
            let (s, r) = (store.clone(), rollups.clone());
            match tokio::task::spawn_blocking(move || s.prune(target, &r, PRUNE_STEP)).await {
                Ok(Ok(min)) => {
                    metrics.history_min_height.set(min as i64);
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "pruning failed; retrying at the next tick");
                    break;
                }
                Err(_) => return,
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::task::yield_now() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_range_is_the_last_retain_heights() {
        assert_eq!(keep_from(100, 0), 1, "0 keeps everything");
        assert_eq!(keep_from(100, 10), 91);
        assert_eq!(keep_from(5, 10), 1);
        assert_eq!(keep_from(10, 10), 1);
        assert_eq!(keep_from(11, 10), 2);
    }

    #[test]
    fn free_space_is_read_from_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
