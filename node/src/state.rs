//! State shared between the consensus loop and the API: the latest decided height (a watch channel, so streams
//! wake on new heights without any per-subscriber buffer in the node). Counts such as the mempool size and the
//! number of peers live in the metrics (`crate::metrics::Metrics`), which `Status` reads too.

use tokio::sync::watch;

use baton_consensus::ids::Address;

/// Static facts about this node.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub chain_id: String,
    pub moniker: String,
    pub peer_id: String,
    pub address: Address,
    /// Configured to validate: it votes whenever its key is in the height's set.
    pub is_validator: bool,
    /// The genesis set (the set of every height until a decided block names another).
    pub genesis_validators: baton_consensus::validators::ValidatorSet,
}

#[derive(Debug)]
pub struct Shared {
    pub info: NodeInfo,
    latest: watch::Sender<u64>,
    /// The lowest height whose history the node keeps (raised by [`crate::retention`] before it deletes).
    history_min: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn new(info: NodeInfo, latest_height: u64) -> Self {
        let (latest, _) = watch::channel(latest_height);
        Shared {
            info,
            latest,
            history_min: std::sync::atomic::AtomicU64::new(1),
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

    /// The lowest height whose block and batches this node still serves.
    pub fn history_min(&self) -> u64 {
        self.history_min.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set_history_min(&self, h: u64) {
        self.history_min
            .fetch_max(h, std::sync::atomic::Ordering::AcqRel);
    }
}
