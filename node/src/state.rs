//! State shared between the consensus loop and the API: the latest decided height (a watch channel, so streams
//! wake on new heights without any per-subscriber buffer in the node) and a few gauges.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::watch;

use baton_consensus::types::Address;

/// Static facts about this node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub chain_id: String,
    pub moniker: String,
    pub peer_id: String,
    pub address: Address,
    pub is_validator: bool,
    pub validator_set_size: u32,
}

#[derive(Debug)]
pub struct Shared {
    pub info: NodeInfo,
    latest: watch::Sender<u64>,
    pub mempool_bundles: AtomicU64,
    pub mempool_bytes: AtomicU64,
    pub peers: AtomicU32,
}

impl Shared {
    pub fn new(info: NodeInfo, latest_height: u64) -> Self {
        let (latest, _) = watch::channel(latest_height);
        Shared {
            info,
            latest,
            mempool_bundles: AtomicU64::new(0),
            mempool_bytes: AtomicU64::new(0),
            peers: AtomicU32::new(0),
        }
    }

    pub fn latest_height(&self) -> u64 {
        *self.latest.borrow()
    }

    pub fn subscribe_heights(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    pub fn set_latest_height(&self, h: u64) {
        self.latest.send_replace(h);
    }

    pub fn set_mempool(&self, bundles: usize, bytes: usize) {
        self.mempool_bundles
            .store(bundles as u64, Ordering::Relaxed);
        self.mempool_bytes.store(bytes as u64, Ordering::Relaxed);
    }
}
