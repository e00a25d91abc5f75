//! The commitment poster: puts [`SignedCommitment`]s on the commitments contract and follows each one until L1
//! finalizes it.
//!
//! It is a handle ([`PosterHandle`]) plus one task ([`Poster::run`]) fed by a bounded channel. The task keeps at
//! most one transaction in flight, always for the newest commitment it was given: the contract keeps heights
//! ascending, so when L1 is slower than Baton, older commitments are skipped (their blocks stay provable through
//! the parent-hash chain of a committed header). Each tick (every `poll_interval_ms`) it:
//!
//! 1. reads L1's latest, safe and finalized heads and its account's nonce, all pinned to the latest block's hash;
//! 2. re-reads every posted commitment from the contract: one that vanished was dropped by a reorg and is posted
//!    again (unless a newer one supersedes it); the rest move included → safe → finalized by the L1 block the
//!    contract recorded;
//! 3. judges the in-flight transaction from receipts of every fee level it was sent at: included, replaced by a
//!    foreign use of its nonce (re-sync the nonce, post again), dropped from the pool (post again at the chain's
//!    nonce), stuck behind a nonce gap (fill the gap with zero-value self-transfers), or merely slow (after
//!    `bump_after_blocks`, or at once if the pool refuses it, re-send at the same nonce with fee cap and tip
//!    raised by at least 10%, to the node's current suggestion if higher, within the caps);
//! 4. with nothing in flight, sends the newest commitment above the contract's latest, if the hourly spend cap
//!    (fees paid plus this transaction's worst case) allows; the signed transaction is saved to the state file *before* it is broadcast, so a restart re-sends
//!    the same transaction (same hash) rather than a second one.
//!
//! It does not rely on alloy's pending-transaction watcher: that waits on one hash and does not notice a dropped
//! transaction or a reorg after inclusion.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::{BlockId, BlockNumberOrTag};
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address as EthAddress, Bytes, TxHash, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::commitment::SignedCommitment;
use crate::contracts::BatonCommitments;
use crate::error::L1Error;

/// Poster settings (the node's `[l1.poster]` table maps onto this).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PosterConfig {
    /// How often the poster looks at L1. Default 1000.
    pub poll_interval_ms: u64,
    /// L1 blocks a sent transaction may stay pending before it is re-sent with higher fees. Default 3.
    pub bump_after_blocks: u64,
    /// Highest fee cap (wei per gas) the poster ever offers. Default 200 gwei.
    pub max_fee_per_gas_wei: u64,
    /// Highest priority fee (wei per gas) the poster ever offers. Default 5 gwei.
    pub max_priority_fee_per_gas_wei: u64,
    /// Most wei the poster may spend in any hour: fees paid by its included transactions, plus the worst case
    /// (gas limit × fee cap) of the one it is about to send or re-price. Default 0.5 ETH.
    pub max_spend_wei_per_hour: u64,
    /// Gas limit = estimate × (100 + this) / 100. Default 25.
    pub gas_margin_percent: u64,
    /// Commitments waiting for the poster task. Default 64.
    pub queue_capacity: usize,
}

impl Default for PosterConfig {
    fn default() -> Self {
        PosterConfig {
            poll_interval_ms: 1000,
            bump_after_blocks: 3,
            max_fee_per_gas_wei: 200_000_000_000,
            max_priority_fee_per_gas_wei: 5_000_000_000,
            max_spend_wei_per_hour: 500_000_000_000_000_000,
            gas_margin_percent: 25,
            queue_capacity: 64,
        }
    }
}

impl PosterConfig {
    pub fn validate(&self) -> Result<(), L1Error> {
        let bad = |m: &str| Err(L1Error::Config(format!("l1.poster: {m}")));
        if self.poll_interval_ms == 0 {
            return bad("poll_interval_ms must be > 0");
        }
        if self.bump_after_blocks == 0 {
            return bad("bump_after_blocks must be > 0");
        }
        if self.max_fee_per_gas_wei == 0 || self.max_priority_fee_per_gas_wei == 0 {
            return bad("fee caps must be > 0");
        }
        if self.max_priority_fee_per_gas_wei > self.max_fee_per_gas_wei {
            return bad("max_priority_fee_per_gas_wei must not exceed max_fee_per_gas_wei");
        }
        if self.queue_capacity == 0 {
            return bad("queue_capacity must be > 0");
        }
        Ok(())
    }
}

/// How far L1 has taken a posted commitment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum L1Status {
    Pending,
    Included,
    Safe,
    Finalized,
}

/// A commitment as kept in the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredCommitment {
    header: Bytes,
    signatures: Vec<(EthAddress, Bytes)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation: Option<crate::commitment::Rotation>,
}

impl StoredCommitment {
    fn from_signed(c: &SignedCommitment) -> Self {
        StoredCommitment {
            header: c.header_bytes(),
            signatures: c
                .signatures
                .iter()
                .map(|(a, s)| (*a, Bytes::copy_from_slice(s)))
                .collect(),
            rotation: c.rotation.clone(),
        }
    }

    fn to_signed(&self) -> Option<SignedCommitment> {
        let header = borsh::from_slice(&self.header).ok()?;
        let signatures = self
            .signatures
            .iter()
            .map(|(a, s)| Some((*a, <[u8; 65]>::try_from(s.as_ref()).ok()?)))
            .collect::<Option<Vec<_>>>()?;
        Some(SignedCommitment {
            header,
            signatures,
            rotation: self.rotation.clone(),
        })
    }
}

/// One fee level a transaction was signed and sent at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Attempt {
    hash: TxHash,
    max_fee: u128,
    tip: u128,
    raw: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct InFlight {
    height: u64,
    nonce: u64,
    gas_limit: u64,
    /// L1 head when the last attempt was sent.
    sent_at_block: u64,
    attempts: Vec<Attempt>,
    commitment: StoredCommitment,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Posted {
    tx_hash: TxHash,
    l1_block: u64,
    status: L1Status,
    commitment: StoredCommitment,
}

/// What survives restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PosterState {
    inflight: Option<InFlight>,
    /// Posted commitments by Baton height, until finalized (and the last few finalized ones).
    posted: BTreeMap<u64, Posted>,
    /// `(unix seconds, wei paid)` of transactions included in the last hour.
    spent: VecDeque<(u64, u128)>,
}

/// What the poster has done, for metrics and tests. Counters only grow.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PosterStatus {
    pub l1_head: u64,
    /// The contract's latest height on the canonical chain.
    pub contract_latest: u64,
    pub inflight_height: Option<u64>,
    /// Hash of the in-flight transaction's latest fee level.
    pub inflight_tx: Option<TxHash>,
    /// Highest height the poster saw included / safe / finalized on the canonical chain.
    pub included_height: u64,
    pub safe_height: u64,
    pub finalized_height: u64,
    /// Transactions broadcast (every fee level counts).
    pub sent: u64,
    pub fee_bumps: u64,
    /// Posted commitments that a reorg removed.
    pub reorged: u64,
    /// Times the in-flight transaction was lost (dropped, or its nonce used elsewhere) and the nonce re-synced.
    pub nonce_resyncs: u64,
    /// Zero-value self-transfers sent to fill a nonce gap.
    pub gap_fills: u64,
    /// Commitments skipped because a newer one was posted first.
    pub superseded: u64,
    /// Wei paid for included transactions in the last hour.
    pub spend_last_hour_wei: u128,
    pub last_error: Option<String>,
}

/// Feeds commitments to a running poster.
#[derive(Clone, Debug)]
pub struct PosterHandle {
    tx: mpsc::Sender<SignedCommitment>,
    status: watch::Receiver<PosterStatus>,
}

impl PosterHandle {
    /// Queues a commitment; drops it (returning false) when the queue is full, which is harmless: a newer one
    /// will follow and supersede it.
    pub fn offer(&self, c: SignedCommitment) -> bool {
        self.tx.try_send(c).is_ok()
    }

    pub fn status(&self) -> PosterStatus {
        self.status.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<PosterStatus> {
        self.status.clone()
    }
}

/// The poster task's state.
pub struct Poster<P> {
    provider: P,
    wallet: EthereumWallet,
    from: EthAddress,
    chain_id: u64,
    contract: EthAddress,
    cfg: PosterConfig,
    state: PosterState,
    state_path: Option<PathBuf>,
    wanted: Option<SignedCommitment>,
    /// Builds the rotation out of a set (see [`Poster::with_rotations`]).
    rotations: Option<RotationSource>,
    rx: mpsc::Receiver<SignedCommitment>,
    status: watch::Sender<PosterStatus>,
    counters: PosterStatus,
}

/// Given the set the contract holds and its latest committed height, the commitment (with
/// [`crate::commitment::Rotation`]) of the epoch's last block that moves the contract out of that set, if the node
/// has it.
pub type RotationSource =
    std::sync::Arc<dyn Fn(B256, u64) -> Option<SignedCommitment> + Send + Sync>;

/// L1 heads read at the start of a tick.
#[derive(Clone, Copy, Debug)]
struct Heads {
    latest: u64,
    latest_hash: B256,
    safe: u64,
    finalized: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The L1 node's EIP-1559 suggestion as (fee cap, tip), the tip within `max_tip` (at least 1 wei), the fee cap
/// within `max_fee` and never below the tip.
pub(crate) async fn market_fees<P: Provider>(
    provider: &P,
    max_fee: u64,
    max_tip: u64,
) -> Result<(u128, u128), L1Error> {
    let est = provider
        .estimate_eip1559_fees()
        .await
        .map_err(L1Error::rpc)?;
    let tip = est.max_priority_fee_per_gas.clamp(1, u128::from(max_tip));
    let fee = est.max_fee_per_gas.min(u128::from(max_fee)).max(tip);
    Ok((fee, tip))
}

/// `x` raised by 10%, rounded up, and at least by one wei (the replacement rule clients enforce).
pub fn bumped(x: u128) -> u128 {
    x.saturating_add(x.div_ceil(10)).max(x.saturating_add(1))
}

impl<P: Provider + Clone + 'static> Poster<P> {
    /// Builds a poster; with `state_path` it resumes what a previous run left (in-flight transaction included).
    pub async fn new(
        provider: P,
        wallet: EthereumWallet,
        contract: EthAddress,
        cfg: PosterConfig,
        state_path: Option<PathBuf>,
    ) -> Result<(Self, PosterHandle), L1Error> {
        cfg.validate()?;
        let chain_id = provider.get_chain_id().await.map_err(L1Error::rpc)?;
        let from =
            alloy::network::NetworkWallet::<alloy::network::Ethereum>::default_signer_address(
                &wallet,
            );
        let state = match &state_path {
            Some(p) if p.exists() => {
                let text = std::fs::read(p).map_err(|e| L1Error::State {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                serde_json::from_slice(&text).map_err(|e| L1Error::State {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?
            }
            _ => PosterState::default(),
        };
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let (status, status_rx) = watch::channel(PosterStatus::default());
        let wanted = state
            .inflight
            .as_ref()
            .and_then(|f| f.commitment.to_signed());
        Ok((
            Poster {
                provider,
                wallet,
                from,
                chain_id,
                contract,
                cfg,
                state,
                state_path,
                wanted,
                rotations: None,
                rx,
                status,
                counters: PosterStatus::default(),
            },
            PosterHandle {
                tx,
                status: status_rx,
            },
        ))
    }

    /// Runs until every handle is dropped. Errors of one tick are recorded in the status and retried.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = self.rx.recv() => match c {
                    Some(c) => self.want(c),
                    None => return,
                },
                _ = tick.tick() => {
                    match self.tick().await {
                        Ok(()) => {}
                        Err(e) => {
                            warn!(error = %e, "poster tick failed; retrying");
                            self.counters.last_error = Some(e.to_string());
                        }
                    }
                    self.status.send_replace(self.counters.clone());
                }
            }
        }
    }

    /// Before a commitment of a set the contract does not hold, posts the rotation `source` gives for the set it
    /// holds (the contract accepts commitments of its current set only).
    pub fn with_rotations(mut self, source: RotationSource) -> Self {
        self.rotations = Some(source);
        self
    }

    fn want(&mut self, c: SignedCommitment) {
        if self.wanted.as_ref().is_none_or(|w| w.height() < c.height()) {
            self.wanted = Some(c);
        }
    }

    /// One look at L1 and at most one action.
    pub async fn tick(&mut self) -> Result<(), L1Error> {
        self.counters.last_error = None;
        let heads = self.heads().await?;
        self.counters.l1_head = heads.latest;
        let at = BlockId::hash(heads.latest_hash);
        let contract = BatonCommitments::new(self.contract, self.provider.clone());
        let contract_latest = contract
            .latestHeight()
            .block(at)
            .call()
            .await
            .map_err(|e| contract_error("latestHeight", e))?;
        self.counters.contract_latest = contract_latest;
        let chain_nonce = self
            .provider
            .get_transaction_count(self.from)
            .block_id(at)
            .await
            .map_err(L1Error::rpc)?;

        if self.follow_posted(&contract, at, heads).await? {
            // L1 changed under this tick: reads "at a block hash" are consistent on geth, but anvil answers for a
            // block a reorg removed with its new chain, so the contract's height read above may predate the
            // reorg. Acting on it would drop the commitment just re-wanted as superseded. The next tick reads
            // afresh.
            return Ok(());
        }
        if self.state.inflight.is_some() {
            self.follow_inflight(heads, chain_nonce, contract_latest)
                .await?;
        }
        if self.state.inflight.is_none() {
            self.maybe_send(heads, chain_nonce, contract_latest).await?;
        }
        self.counters.inflight_height = self.state.inflight.as_ref().map(|f| f.height);
        self.counters.inflight_tx = self
            .state
            .inflight
            .as_ref()
            .and_then(|f| f.attempts.last().map(|a| a.hash));
        self.counters.spend_last_hour_wei = self.spend_last_hour();
        Ok(())
    }

    async fn heads(&self) -> Result<Heads, L1Error> {
        let get = |tag| async move {
            self.provider
                .get_block_by_number(tag)
                .await
                .map_err(L1Error::rpc)?
                .ok_or_else(|| L1Error::Rpc(format!("L1 has no {tag} block")))
        };
        let latest = get(BlockNumberOrTag::Latest).await?;
        let safe = get(BlockNumberOrTag::Safe).await?;
        let finalized = get(BlockNumberOrTag::Finalized).await?;
        Ok(Heads {
            latest: latest.header.number,
            latest_hash: latest.header.hash,
            safe: safe.header.number,
            finalized: finalized.header.number,
        })
    }

    /// Moves each posted commitment's status along with L1; whether a reorg removed one.
    async fn follow_posted(
        &mut self,
        contract: &BatonCommitments::BatonCommitmentsInstance<P>,
        at: BlockId,
        heads: Heads,
    ) -> Result<bool, L1Error> {
        let open: Vec<u64> = self
            .state
            .posted
            .iter()
            .filter(|(_, p)| p.status != L1Status::Finalized)
            .map(|(h, _)| *h)
            .collect();
        let mut changed = false;
        let mut reorged = false;
        for height in open {
            let c = contract
                .commitmentAt(height)
                .block(at)
                .call()
                .await
                .map_err(|e| contract_error("commitmentAt", e))?;
            let Some(p) = self.state.posted.get_mut(&height) else {
                continue;
            };
            let ours = p.commitment.to_signed().map(|s| s.block_hash());
            if c.height == 0 || ours.map(|h| B256::from(h.0)) != Some(c.blockHash) {
                let p = self.state.posted.remove(&height);
                self.counters.reorged += 1;
                changed = true;
                reorged = true;
                warn!(
                    height,
                    "a posted commitment is no longer on L1 (reorg); posting again"
                );
                if let Some(s) = p.and_then(|p| p.commitment.to_signed()) {
                    self.want(s);
                }
                continue;
            }
            let status = if c.l1Block <= heads.finalized {
                L1Status::Finalized
            } else if c.l1Block <= heads.safe {
                L1Status::Safe
            } else {
                L1Status::Included
            };
            if p.status != status || p.l1_block != c.l1Block {
                p.status = status;
                p.l1_block = c.l1Block;
                changed = true;
            }
        }
        // Heights whose status is known now (a reorg can lower them again).
        let best = |s: L1Status| {
            self.state
                .posted
                .iter()
                .filter(|(_, p)| p.status >= s)
                .map(|(h, _)| *h)
                .max()
                .unwrap_or(0)
        };
        self.counters.included_height = best(L1Status::Included);
        self.counters.safe_height = best(L1Status::Safe);
        self.counters.finalized_height = best(L1Status::Finalized);
        // Keep the last 16 finalized records; older ones can no longer change.
        let finalized: Vec<u64> = self
            .state
            .posted
            .iter()
            .filter(|(_, p)| p.status == L1Status::Finalized)
            .map(|(h, _)| *h)
            .collect();
        for h in finalized.iter().take(finalized.len().saturating_sub(16)) {
            self.state.posted.remove(h);
            changed = true;
        }
        if changed {
            self.save()?;
        }
        Ok(reorged)
    }

    async fn follow_inflight(
        &mut self,
        heads: Heads,
        chain_nonce: u64,
        contract_latest: u64,
    ) -> Result<(), L1Error> {
        let Some(f) = self.state.inflight.clone() else {
            return Ok(());
        };
        for a in &f.attempts {
            let receipt = self
                .provider
                .get_transaction_receipt(a.hash)
                .await
                .map_err(L1Error::rpc)?;
            let Some(r) = receipt else { continue };
            self.state.inflight = None;
            let cost = u128::from(r.gas_used) * r.effective_gas_price;
            self.record_spend(cost);
            if r.status() {
                info!(height = f.height, tx = %a.hash, l1_block = ?r.block_number, "commitment included on L1");
                self.state.posted.insert(
                    f.height,
                    Posted {
                        tx_hash: a.hash,
                        l1_block: r.block_number.unwrap_or(heads.latest),
                        status: L1Status::Included,
                        commitment: f.commitment.clone(),
                    },
                );
                if self.wanted.as_ref().is_some_and(|w| w.height() <= f.height) {
                    self.wanted = None;
                }
            } else if contract_latest >= f.height {
                self.counters.superseded += 1;
            } else {
                warn!(height = f.height, tx = %a.hash, "commitment transaction reverted");
                self.counters.last_error =
                    Some(format!("commitment {} reverted in {}", f.height, a.hash));
            }
            return self.save();
        }
        // Not included.
        if chain_nonce > f.nonce {
            // Our nonce was used by a transaction that is none of ours for this commitment.
            warn!(
                nonce = f.nonce,
                chain_nonce, "in-flight nonce used elsewhere; re-syncing"
            );
            self.counters.nonce_resyncs += 1;
            self.state.inflight = None;
            return self.save();
        }
        if chain_nonce < f.nonce {
            // A gap below our transaction (earlier transactions of ours dropped by a reorg). Fill it with
            // zero-value self-transfers whether or not the node still reports our transaction (some report queued
            // transactions, some do not): if it is gone, the next look re-broadcasts it at its own nonce.
            return self.fill_gap(chain_nonce, f.nonce).await;
        }
        // Is any of our fee levels still known to the node?
        let mut known = false;
        for a in &f.attempts {
            if self
                .provider
                .get_transaction_by_hash(a.hash)
                .await
                .map_err(L1Error::rpc)?
                .is_some()
            {
                known = true;
                break;
            }
        }
        if !known {
            // Dropped from the pool (a reorg, eviction, or a restart before the broadcast reached the node):
            // re-broadcast the last signed attempt (a refusal means it is priced out: re-send it with higher fees).
            if let Some(a) = f.attempts.last() {
                debug!(tx = %a.hash, "re-broadcasting the in-flight commitment");
                match self.provider.send_raw_transaction(&a.raw).await {
                    Ok(_) => {
                        self.counters.sent += 1;
                        return Ok(());
                    }
                    Err(e) => {
                        debug!(error = %e, "re-broadcast refused; re-pricing");
                        return self.bump(heads).await;
                    }
                }
            }
        }
        if heads.latest.saturating_sub(f.sent_at_block) >= self.cfg.bump_after_blocks {
            self.bump(heads).await?;
        }
        Ok(())
    }

    async fn fill_gap(&mut self, from_nonce: u64, to_nonce: u64) -> Result<(), L1Error> {
        let (fee, tip) = self.market_fees().await?;
        for nonce in from_nonce..to_nonce {
            let req = TransactionRequest::default()
                .with_from(self.from)
                .with_to(self.from)
                .with_value(U256::ZERO)
                .with_nonce(nonce)
                .with_chain_id(self.chain_id)
                .with_gas_limit(21_000)
                .with_max_fee_per_gas(fee)
                .with_max_priority_fee_per_gas(tip);
            let env = self.sign(req).await?;
            match self
                .provider
                .send_raw_transaction(&env.encoded_2718())
                .await
            {
                Ok(_) => {
                    self.counters.gap_fills += 1;
                    self.counters.sent += 1;
                    info!(nonce, "filled a nonce gap below the in-flight commitment");
                }
                Err(e) => debug!(nonce, error = %e, "gap filler refused (likely already filled)"),
            }
        }
        Ok(())
    }

    async fn bump(&mut self, heads: Heads) -> Result<(), L1Error> {
        let Some(mut f) = self.state.inflight.clone() else {
            return Ok(());
        };
        let Some(last) = f.attempts.last().cloned() else {
            return Ok(());
        };
        let (market_fee, market_tip) = self.market_fees().await?;
        let tip = bumped(last.tip)
            .max(market_tip)
            .min(u128::from(self.cfg.max_priority_fee_per_gas_wei));
        let fee = bumped(last.max_fee)
            .max(market_fee)
            .min(u128::from(self.cfg.max_fee_per_gas_wei))
            .max(tip);
        if fee < bumped(last.max_fee) || tip < bumped(last.tip) {
            self.counters.last_error = Some(format!(
                "commitment {} pending at the fee cap ({} wei/gas)",
                f.height, last.max_fee
            ));
            return Ok(());
        }
        let cost = u128::from(f.gas_limit) * fee;
        if !self.can_spend(cost) {
            self.counters.last_error = Some("hourly spend cap reached; not bumping".into());
            return Ok(());
        }
        let attempt = self
            .attempt(&f.commitment, f.nonce, f.gas_limit, fee, tip)
            .await?;
        f.attempts.push(attempt.clone());
        f.sent_at_block = heads.latest;
        self.state.inflight = Some(f.clone());
        self.save()?;
        match self.provider.send_raw_transaction(&attempt.raw).await {
            Ok(_) => {
                self.counters.fee_bumps += 1;
                self.counters.sent += 1;
                info!(
                    height = f.height,
                    fee, tip, "re-sent the commitment with higher fees"
                );
            }
            Err(e) => warn!(error = %e, "fee bump refused; trying again next tick"),
        }
        Ok(())
    }

    async fn maybe_send(
        &mut self,
        heads: Heads,
        chain_nonce: u64,
        contract_latest: u64,
    ) -> Result<(), L1Error> {
        let Some(mut c) = self.wanted.clone() else {
            return Ok(());
        };
        if c.height() <= contract_latest {
            if !self.state.posted.contains_key(&c.height()) {
                self.counters.superseded += 1;
            }
            self.wanted = None;
            return Ok(());
        }
        if let Some(source) = &self.rotations {
            let contract = crate::contracts::BatonCommitments::new(self.contract, &self.provider);
            let held = contract
                .validatorSetHash()
                .call()
                .await
                .map_err(|e| contract_error("validatorSetHash", e))?;
            if B256::from(c.header.validator_set_hash.0) != held {
                match source(held, contract_latest) {
                    Some(r) => {
                        info!(
                            height = r.height(),
                            wanted = c.height(),
                            "the contract holds an earlier validator set: rotating it first"
                        );
                        c = r;
                    }
                    None => debug!(
                        height = c.height(),
                        "no rotation known out of the contract's set"
                    ),
                }
            }
        }
        let stored = StoredCommitment::from_signed(&c);
        let input = c.calldata();
        let probe = TransactionRequest::default()
            .with_from(self.from)
            .with_to(self.contract)
            .with_input(input);
        let gas = match self.provider.estimate_gas(probe).await {
            Ok(g) => g,
            Err(e) => {
                // The contract would refuse it (wrong set, too few signatures, ...): keep no hope for it.
                warn!(height = c.height(), error = %e, "the contract refuses this commitment; dropping it");
                self.counters.last_error = Some(format!("commitment {} refused: {e}", c.height()));
                self.wanted = None;
                return Ok(());
            }
        };
        let gas_limit = gas.saturating_mul(100 + self.cfg.gas_margin_percent) / 100;
        let (fee, tip) = self.market_fees().await?;
        let cost = u128::from(gas_limit) * fee;
        if !self.can_spend(cost) {
            self.counters.last_error = Some(format!(
                "hourly spend cap reached ({} wei); waiting",
                u128::from(self.cfg.max_spend_wei_per_hour)
            ));
            return Ok(());
        }
        let attempt = self
            .attempt(&stored, chain_nonce, gas_limit, fee, tip)
            .await?;
        self.state.inflight = Some(InFlight {
            height: c.height(),
            nonce: chain_nonce,
            gas_limit,
            sent_at_block: heads.latest,
            attempts: vec![attempt.clone()],
            commitment: stored,
        });
        // Saved before the broadcast: after a crash here the same transaction is re-sent, never a second one.
        self.save()?;
        match self.provider.send_raw_transaction(&attempt.raw).await {
            Ok(_) => {
                self.counters.sent += 1;
                info!(height = c.height(), nonce = chain_nonce, tx = %attempt.hash, "posted a commitment");
            }
            Err(e) => {
                // Judged next tick: unknown to the node → re-broadcast or re-sync.
                warn!(error = %e, "broadcast failed");
            }
        }
        Ok(())
    }

    /// Signs a `commit` transaction for `c` at one nonce and fee level.
    async fn attempt(
        &self,
        c: &StoredCommitment,
        nonce: u64,
        gas_limit: u64,
        fee: u128,
        tip: u128,
    ) -> Result<Attempt, L1Error> {
        let signed = c
            .to_signed()
            .ok_or_else(|| L1Error::Signing("stored commitment does not decode".into()))?;
        let req = TransactionRequest::default()
            .with_from(self.from)
            .with_to(self.contract)
            .with_input(signed.calldata())
            .with_nonce(nonce)
            .with_chain_id(self.chain_id)
            .with_gas_limit(gas_limit)
            .with_max_fee_per_gas(fee)
            .with_max_priority_fee_per_gas(tip);
        let env = self.sign(req).await?;
        Ok(Attempt {
            hash: *env.tx_hash(),
            max_fee: fee,
            tip,
            raw: env.encoded_2718().into(),
        })
    }

    async fn sign(&self, req: TransactionRequest) -> Result<TxEnvelope, L1Error> {
        req.build(&self.wallet)
            .await
            .map_err(|e| L1Error::Signing(e.to_string()))
    }

    /// The node's EIP-1559 fee suggestion, within the caps.
    async fn market_fees(&self) -> Result<(u128, u128), L1Error> {
        market_fees(
            &self.provider,
            self.cfg.max_fee_per_gas_wei,
            self.cfg.max_priority_fee_per_gas_wei,
        )
        .await
    }

    fn spend_last_hour(&self) -> u128 {
        let cutoff = now_secs().saturating_sub(3600);
        self.state
            .spent
            .iter()
            .filter(|(t, _)| *t >= cutoff)
            .map(|(_, w)| *w)
            .sum()
    }

    fn can_spend(&self, wei: u128) -> bool {
        self.spend_last_hour().saturating_add(wei) <= u128::from(self.cfg.max_spend_wei_per_hour)
    }

    fn record_spend(&mut self, wei: u128) {
        let cutoff = now_secs().saturating_sub(3600);
        while self.state.spent.front().is_some_and(|(t, _)| *t < cutoff) {
            self.state.spent.pop_front();
        }
        self.state.spent.push_back((now_secs(), wei));
    }

    fn save(&self) -> Result<(), L1Error> {
        let Some(path) = &self.state_path else {
            return Ok(());
        };
        let err = |e: std::io::Error| L1Error::State {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| L1Error::State {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&bytes).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        // The rename is durable only once the directory is: without this a crash could bring back the old state
        // (and the poster would post again what it had already sent).
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
        Ok(())
    }
}

fn contract_error(call: &'static str, e: alloy::contract::Error) -> L1Error {
    L1Error::Contract {
        call,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::U64;
    use alloy::providers::ProviderBuilder;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::sol_types::SolValue;
    use alloy::transports::mock::Asserter;
    use baton_consensus::fixtures::header;

    /// A reorg that lands between a tick's reads: the L1 node answered the contract's latest height from before
    /// it and the posted commitment's record from after it. The poster must post the commitment again, not drop
    /// it as superseded by the height it had read. (Anvil answered so under a loaded test run; the poster had
    /// then waited forever.)
    #[tokio::test]
    async fn a_reorg_seen_in_the_middle_of_a_tick_does_not_drop_the_commitment() {
        let l1 = Asserter::new();
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_mocked_client(l1.clone());
        l1.push_success(&U64::from(31337)); // chain id
        let (mut poster, _handle) = Poster::new(
            provider,
            EthereumWallet::from(PrivateKeySigner::random()),
            EthAddress::repeat_byte(7),
            PosterConfig::default(),
            None,
        )
        .await
        .unwrap();
        let c = SignedCommitment {
            header: header(10),
            signatures: vec![],
            rotation: None,
        };
        poster.state.posted.insert(
            10,
            Posted {
                tx_hash: TxHash::repeat_byte(1),
                l1_block: 2,
                status: L1Status::Included,
                commitment: StoredCommitment::from_signed(&c),
            },
        );

        let block = |n: u64| {
            let mut b = alloy::rpc::types::Block::<alloy::rpc::types::Transaction>::default();
            b.header.inner.number = n;
            b.header.hash = B256::repeat_byte(0x20 + n as u8);
            b
        };
        l1.push_success(&block(2)); // latest
        l1.push_success(&block(0)); // safe
        l1.push_success(&block(0)); // finalized
        l1.push_success(&Bytes::from(10u64.abi_encode())); // latestHeight, read before the reorg
        l1.push_success(&U64::from(1)); // the poster's nonce
        let gone = BatonCommitments::Commitment {
            height: 0,
            blockHash: B256::ZERO,
            batchesRoot: B256::ZERO,
            validatorSetHash: B256::ZERO,
            l1Block: 0,
        };
        l1.push_success(&Bytes::from(gone.abi_encode())); // commitmentAt(10), read after it
        poster.tick().await.unwrap();

        assert_eq!(poster.counters.reorged, 1);
        assert_eq!(poster.counters.superseded, 0, "dropped as superseded");
        assert_eq!(poster.wanted.as_ref().map(|w| w.height()), Some(10));
        assert!(poster.state.posted.is_empty());
    }

    #[test]
    fn bumps_follow_the_replacement_rule() {
        assert_eq!(bumped(100), 110);
        assert_eq!(bumped(101), 112);
        assert_eq!(bumped(0), 1);
        assert_eq!(bumped(5), 6);
        assert!(PosterConfig::default().validate().is_ok());
        let bad = PosterConfig {
            max_priority_fee_per_gas_wei: 10,
            max_fee_per_gas_wei: 5,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
