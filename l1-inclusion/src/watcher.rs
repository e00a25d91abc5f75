//! The L1 watcher: follows L1 at a chosen safety level and keeps the inbox events of the canonical chain, rolling
//! them back when a reorg removes their blocks.
//!
//! Events are keyed by `(L1 block number, transaction index, log index)` — the order based rollups are served
//! in — and carry their block hash, so an event of a block that is no longer canonical is never confused with one
//! at the same position of its replacement. Each poll:
//!
//! 1. reads the head at the configured safety (`latest`, `safe` or `finalized`);
//! 2. checks that the newest block it recorded is still canonical; if not, walks back its recorded blocks to the
//!    newest one that is, drops every event after it and reports a [`WatcherUpdate::RolledBack`];
//! 3. reads the inbox logs of up to `max_blocks_per_poll` new blocks, records the header of every block that has
//!    logs and of the last block read, checks that each log's block hash is the recorded one (a reorg during the
//!    read retries the poll; with `track_blocks`, also the headers of the read's last blocks), and reports a [`WatcherUpdate::Advanced`].
//!
//! Below `finalized` a rollback can happen; at `finalized` it means L1 itself broke finality.
//!
//! The watcher keeps the events it read so that a rollback can report what it removed; a long-running follower
//! calls [`Watcher::forget_events_before`] with L1's finalized block ([`Watcher::finalized`]) so that it holds only
//! the events no finalized block settled (a rollback below finality then reports only what it still held).

use std::collections::BTreeMap;

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address as EthAddress, Bytes, B256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};
use alloy::sol_types::SolEvent;
use serde::{Deserialize, Serialize};

use crate::contracts::BatonInbox;
use crate::error::L1Error;

/// How settled an L1 block must be before the watcher reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Safety {
    Latest,
    #[default]
    Safe,
    Finalized,
}

impl Safety {
    pub fn tag(self) -> BlockNumberOrTag {
        match self {
            Safety::Latest => BlockNumberOrTag::Latest,
            Safety::Safe => BlockNumberOrTag::Safe,
            Safety::Finalized => BlockNumberOrTag::Finalized,
        }
    }
}

/// An L1 block as the watcher records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L1Block {
    pub number: u64,
    pub hash: B256,
    pub timestamp: u64,
}

/// Where an inbox event sits on L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventPosition {
    pub block_number: u64,
    pub tx_index: u64,
    pub log_index: u64,
}

/// What an inbox log says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InboxEventKind {
    /// A batch for a rollup in calldata.
    Batch {
        rollup_id: u64,
        sender: EthAddress,
        data: Bytes,
    },
    /// A batch carried in the transaction's blobs.
    BlobBatch {
        rollup_id: u64,
        sender: EthAddress,
        blob_hashes: Vec<B256>,
    },
    /// A forced-inclusion entry for a shared rollup.
    Forced {
        rollup_id: u64,
        index: u64,
        sender: EthAddress,
        deadline: u64,
        payload: Bytes,
    },
    /// A `BatonStaking` event (when the watcher also follows the staking contract,
    /// [`Watcher::follow_staking`]).
    Stake(baton_consensus::epoch::StakeEvent),
}

/// One inbox log of the canonical chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEvent {
    pub position: EventPosition,
    pub block_hash: B256,
    pub kind: InboxEventKind,
}

/// What one poll changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatcherUpdate {
    /// Blocks up to `to` were read; `events` are new, in order.
    Advanced {
        to: L1Block,
        events: Vec<InboxEvent>,
    },
    /// A reorg: everything after `to` was dropped (`removed` events, in order).
    RolledBack {
        to: L1Block,
        removed: Vec<InboxEvent>,
    },
}

/// Watcher settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatcherConfig {
    pub safety: Safety,
    /// First L1 block to read (the inbox's deployment block).
    pub from_block: u64,
    /// Most blocks read per poll (bounds the log query). Default 1000.
    pub max_blocks_per_poll: u64,
    /// Most recorded blocks kept for reorg detection. Default 4096.
    pub max_recorded_blocks: usize,
    /// Also record the header of each of the last this many blocks of every read, events or not, so that
    /// [`Watcher::block`] can vouch for any recent block (what an L1 origin check needs). Default 0.
    pub track_blocks: u64,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            safety: Safety::Safe,
            from_block: 0,
            max_blocks_per_poll: 1000,
            max_recorded_blocks: 4096,
            track_blocks: 0,
        }
    }
}

/// Follows the inbox on the canonical chain.
pub struct Watcher<P> {
    provider: P,
    inbox: EthAddress,
    cfg: WatcherConfig,
    /// Recorded canonical blocks by number (blocks with events, and the last block of each read).
    blocks: BTreeMap<u64, L1Block>,
    events: BTreeMap<EventPosition, InboxEvent>,
    /// The staking contract, also followed when set.
    staking: Option<EthAddress>,
    /// Reorgs seen (for metrics).
    pub reorgs: u64,
}

impl<P: Provider> Watcher<P> {
    pub fn new(provider: P, inbox: EthAddress, cfg: WatcherConfig) -> Self {
        Watcher {
            provider,
            inbox,
            cfg,
            blocks: BTreeMap::new(),
            events: BTreeMap::new(),
            staking: None,
            reorgs: 0,
        }
    }

    /// Also follows the `BatonStaking` contract at `staking` (its events come as [`InboxEventKind::Stake`], in the
    /// same order and with the same reorg handling as the inbox's).
    pub fn follow_staking(mut self, staking: EthAddress) -> Self {
        self.staking = Some(staking);
        self
    }

    /// The newest block read.
    pub fn tip(&self) -> Option<L1Block> {
        self.blocks.values().next_back().copied()
    }

    /// The recorded block at `number`, if it was recorded (has events or ended a read).
    pub fn block(&self, number: u64) -> Option<L1Block> {
        self.blocks.get(&number).copied()
    }

    /// The recorded blocks, oldest first.
    pub fn blocks(&self) -> impl Iterator<Item = &L1Block> {
        self.blocks.values()
    }

    /// Events of the canonical chain read so far, in order.
    pub fn events(&self) -> impl Iterator<Item = &InboxEvent> {
        self.events.values()
    }

    /// Forgets the recorded events of blocks below `number` (final blocks, whose events no reorg will remove);
    /// what [`Watcher::events`] and a later [`WatcherUpdate::RolledBack`] report starts there.
    pub fn forget_events_before(&mut self, number: u64) {
        self.events = self.events.split_off(&EventPosition {
            block_number: number,
            tx_index: 0,
            log_index: 0,
        });
    }

    /// L1's newest finalized block, read now (`None` before L1 has one).
    pub async fn finalized(&self) -> Result<Option<L1Block>, L1Error> {
        self.header(BlockNumberOrTag::Finalized).await
    }

    async fn header(&self, tag: BlockNumberOrTag) -> Result<Option<L1Block>, L1Error> {
        let b = self
            .provider
            .get_block_by_number(tag)
            .await
            .map_err(L1Error::rpc)?;
        Ok(b.map(|b| L1Block {
            number: b.header.number,
            hash: b.header.hash,
            timestamp: b.header.timestamp,
        }))
    }

    /// One poll; `None` when nothing changed.
    pub async fn poll(&mut self) -> Result<Option<WatcherUpdate>, L1Error> {
        if let Some(rolled) = self.check_reorg().await? {
            self.reorgs += 1;
            return Ok(Some(rolled));
        }
        let Some(head) = self.header(self.cfg.safety.tag()).await? else {
            return Ok(None);
        };
        let from = self
            .tip()
            .map(|t| t.number + 1)
            .unwrap_or(self.cfg.from_block);
        if head.number < from {
            return Ok(None);
        }
        let to = head
            .number
            .min(from.saturating_add(self.cfg.max_blocks_per_poll - 1));
        let mut addresses = vec![self.inbox];
        addresses.extend(self.staking);
        let filter = Filter::new()
            .address(addresses)
            .from_block(from)
            .to_block(to);
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(L1Error::rpc)?;
        let mut new_blocks: BTreeMap<u64, L1Block> = BTreeMap::new();
        let mut numbers: Vec<u64> = logs.iter().filter_map(|l| l.block_number).collect();
        numbers.extend(to.saturating_sub(self.cfg.track_blocks).max(from)..=to);
        numbers.sort_unstable();
        numbers.dedup();
        for n in numbers {
            if let Some(b) = self.header(BlockNumberOrTag::Number(n)).await? {
                new_blocks.insert(n, b);
            }
        }
        let mut events = Vec::with_capacity(logs.len());
        for log in &logs {
            let (Some(n), Some(hash)) = (log.block_number, log.block_hash) else {
                continue;
            };
            if new_blocks.get(&n).map(|b| b.hash) != Some(hash) {
                // The chain changed while we read it: read again next poll.
                return Ok(None);
            }
            let event = if Some(log.address()) == self.staking {
                decode_stake(log)
            } else {
                decode(log)
            };
            if let Some(e) = event {
                events.push(e);
            }
        }
        let Some(end) = new_blocks.get(&to).copied() else {
            return Ok(None);
        };
        self.blocks.extend(new_blocks);
        for e in &events {
            self.events.insert(e.position, e.clone());
        }
        while self.blocks.len() > self.cfg.max_recorded_blocks {
            self.blocks.pop_first();
        }
        Ok(Some(WatcherUpdate::Advanced { to: end, events }))
    }

    /// If the newest recorded block is no longer canonical, rolls back to the newest recorded block that is.
    async fn check_reorg(&mut self) -> Result<Option<WatcherUpdate>, L1Error> {
        let Some(tip) = self.tip() else {
            return Ok(None);
        };
        if self.is_canonical(&tip).await? {
            return Ok(None);
        }
        let recorded: Vec<L1Block> = self.blocks.values().rev().copied().collect();
        let mut keep: Option<L1Block> = None;
        for b in recorded {
            if self.is_canonical(&b).await? {
                keep = Some(b);
                break;
            }
        }
        let cut = keep.map(|b| b.number + 1).unwrap_or(0);
        let removed: Vec<InboxEvent> = self
            .events
            .split_off(&EventPosition {
                block_number: cut,
                tx_index: 0,
                log_index: 0,
            })
            .into_values()
            .collect();
        self.blocks.split_off(&cut);
        let to = keep.unwrap_or(L1Block {
            number: self.cfg.from_block.saturating_sub(1),
            hash: B256::ZERO,
            timestamp: 0,
        });
        Ok(Some(WatcherUpdate::RolledBack { to, removed }))
    }

    async fn is_canonical(&self, b: &L1Block) -> Result<bool, L1Error> {
        Ok(self
            .header(BlockNumberOrTag::Number(b.number))
            .await?
            .is_some_and(|c| c.hash == b.hash))
    }
}

/// Decodes one staking-contract log; `None` for logs the set function does not use.
pub fn decode_stake(log: &Log) -> Option<InboxEvent> {
    let (block_number, e) = crate::staking::decode(log)?;
    Some(InboxEvent {
        position: EventPosition {
            block_number,
            tx_index: e.tx_index,
            log_index: e.log_index,
        },
        block_hash: log.block_hash?,
        kind: InboxEventKind::Stake(e.event),
    })
}

/// Decodes one inbox log; `None` for logs that are not inbox events.
pub fn decode(log: &Log) -> Option<InboxEvent> {
    let position = EventPosition {
        block_number: log.block_number?,
        tx_index: log.transaction_index?,
        log_index: log.log_index?,
    };
    let block_hash = log.block_hash?;
    let kind = match log.topic0()? {
        t if *t == BatonInbox::BatchPosted::SIGNATURE_HASH => {
            let e = BatonInbox::BatchPosted::decode_log_data(log.data()).ok()?;
            InboxEventKind::Batch {
                rollup_id: e.rollupId,
                sender: e.sender,
                data: e.data,
            }
        }
        t if *t == BatonInbox::BlobBatchPosted::SIGNATURE_HASH => {
            let e = BatonInbox::BlobBatchPosted::decode_log_data(log.data()).ok()?;
            InboxEventKind::BlobBatch {
                rollup_id: e.rollupId,
                sender: e.sender,
                blob_hashes: e.blobHashes,
            }
        }
        t if *t == BatonInbox::ForcedInclusion::SIGNATURE_HASH => {
            let e = BatonInbox::ForcedInclusion::decode_log_data(log.data()).ok()?;
            InboxEventKind::Forced {
                rollup_id: e.rollupId,
                index: e.index,
                sender: e.sender,
                deadline: e.deadline,
                payload: e.payload,
            }
        }
        _ => return None,
    };
    Some(InboxEvent {
        position,
        block_hash,
        kind,
    })
}
