//! Posting batches to the inbox: one transaction in flight, calldata or blobs by size, re-priced at the same nonce.
//!
//! [`InboxSender::send`] signs `BatonInbox.post(rollup, data)` (calldata) or `BatonInbox.postBlobs(rollup)` with
//! the data in EIP-4844 blobs when it is at least `blob_min_bytes` long, at the account's pending nonce, and
//! broadcasts it. [`InboxSender::tick`] follows it: mined (reported with the caller's tags, so the caller can wait
//! for derivation to see the batch), its nonce used by something else (reported as dropped: the caller sends the
//! batch again), or still waiting after `bump_after_ms`, when it is re-signed at the same nonce with the fee cap
//! and tip raised by at least 10% and, for a blob transaction, the blob fee cap doubled (the replacement rules
//! clients enforce), never above the configured caps. A transaction the pool lost is broadcast again.

use std::time::{Duration, Instant};

use alloy::consensus::TxEnvelope;
use alloy::eips::eip2718::Encodable2718;
use alloy::eips::BlockId;
use alloy::network::{EthereumWallet, TransactionBuilder, TransactionBuilder4844};
use alloy::primitives::{Address as EthAddress, Bytes, TxHash};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::contracts::BatonInbox;
use crate::error::L1Error;
use crate::poster::{bumped, market_fees};

/// Sender settings (node config `[l1.forward]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SenderConfig {
    /// Batches at least this long go in blobs; shorter ones in calldata. Default 16,384.
    pub blob_min_bytes: usize,
    /// A transaction not mined after this long is re-priced. Default 6,000 ms.
    pub bump_after_ms: u64,
    /// Fee cap per gas never exceeded, in wei. Default 200 gwei.
    pub max_fee_per_gas_wei: u64,
    /// Tip per gas never exceeded, in wei. Default 10 gwei.
    pub max_priority_fee_per_gas_wei: u64,
    /// Blob fee cap per blob gas never exceeded, in wei. Default 100 gwei.
    pub max_fee_per_blob_gas_wei: u64,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            blob_min_bytes: 16 * 1024,
            bump_after_ms: 6_000,
            max_fee_per_gas_wei: 200_000_000_000,
            max_priority_fee_per_gas_wei: 10_000_000_000,
            max_fee_per_blob_gas_wei: 100_000_000_000,
        }
    }
}

impl SenderConfig {
    pub fn validate(&self) -> Result<(), L1Error> {
        if self.bump_after_ms == 0 {
            return Err(L1Error::Config("bump_after_ms must be at least 1".into()));
        }
        if self.max_priority_fee_per_gas_wei > self.max_fee_per_gas_wei {
            return Err(L1Error::Config(
                "max_priority_fee_per_gas_wei exceeds max_fee_per_gas_wei".into(),
            ));
        }
        if self.max_fee_per_gas_wei == 0 || self.max_fee_per_blob_gas_wei == 0 {
            return Err(L1Error::Config("fee caps must be at least 1 wei".into()));
        }
        Ok(())
    }
}

/// The fee levels of one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fees {
    pub max_fee: u128,
    pub tip: u128,
    /// Blob fee cap; `None` for a calldata transaction.
    pub blob_fee: Option<u128>,
}

impl Fees {
    /// The next attempt's fees: fee cap and tip +10% (or the market's, if higher), blob fee cap doubled, each
    /// within its cap. `None` when a cap stops a raise the pool would require.
    pub fn bumped(&self, market: Fees, cfg: &SenderConfig) -> Option<Fees> {
        let max_fee = bumped(self.max_fee).max(market.max_fee);
        let tip = bumped(self.tip).max(market.tip);
        let blob_fee = self
            .blob_fee
            .map(|b| b.saturating_mul(2).max(market.blob_fee.unwrap_or(0)));
        let within = max_fee <= u128::from(cfg.max_fee_per_gas_wei)
            && tip <= u128::from(cfg.max_priority_fee_per_gas_wei)
            && blob_fee.is_none_or(|b| b <= u128::from(cfg.max_fee_per_blob_gas_wei));
        within.then_some(Fees {
            max_fee,
            tip: tip.min(max_fee),
            blob_fee,
        })
    }
}

/// What [`InboxSender::tick`] saw happen to the transaction in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderEvent<T> {
    /// Mined in `block` (successfully or not: `success`), costing the sender `fee_wei` (execution gas and blob
    /// gas at the prices paid).
    Mined {
        tags: T,
        block: u64,
        tx: TxHash,
        success: bool,
        fee_wei: u128,
    },
    /// Its nonce was used by another transaction: the batch is not on chain.
    Dropped { tags: T },
}

struct InFlight<T> {
    tags: T,
    request: TransactionRequest,
    nonce: u64,
    fees: Fees,
    hashes: Vec<TxHash>,
    raw: Bytes,
    sent: Instant,
}

/// Posts batches to the inbox, one transaction at a time. `T` tags a batch for the caller.
pub struct InboxSender<P, T> {
    provider: P,
    wallet: EthereumWallet,
    from: EthAddress,
    chain_id: u64,
    inbox: EthAddress,
    cfg: SenderConfig,
    inflight: Option<InFlight<T>>,
    /// Counters for metrics: transactions broadcast, re-pricings.
    pub sent: u64,
    pub bumps: u64,
}

impl<P: Provider, T: Clone> InboxSender<P, T> {
    pub async fn new(
        provider: P,
        wallet: EthereumWallet,
        inbox: EthAddress,
        cfg: SenderConfig,
    ) -> Result<Self, L1Error> {
        cfg.validate()?;
        let chain_id = provider.get_chain_id().await.map_err(L1Error::rpc)?;
        let from =
            alloy::network::NetworkWallet::<alloy::network::Ethereum>::default_signer_address(
                &wallet,
            );
        Ok(InboxSender {
            provider,
            wallet,
            from,
            chain_id,
            inbox,
            cfg,
            inflight: None,
            sent: 0,
            bumps: 0,
        })
    }

    /// Whether a transaction is in flight.
    pub fn busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// The address paying for the transactions.
    pub fn address(&self) -> EthAddress {
        self.from
    }

    async fn market(&self, blob: bool) -> Result<Fees, L1Error> {
        let (max_fee, tip) = market_fees(
            &self.provider,
            self.cfg.max_fee_per_gas_wei,
            self.cfg.max_priority_fee_per_gas_wei,
        )
        .await?;
        let blob_fee = if blob {
            let base = self
                .provider
                .get_blob_base_fee()
                .await
                .map_err(L1Error::rpc)?;
            Some(
                base.saturating_mul(2)
                    .max(1)
                    .min(u128::from(self.cfg.max_fee_per_blob_gas_wei)),
            )
        } else {
            None
        };
        Ok(Fees {
            max_fee,
            tip,
            blob_fee,
        })
    }

    async fn sign(&self, req: &TransactionRequest, fees: Fees) -> Result<(TxHash, Bytes), L1Error> {
        let mut req = req
            .clone()
            .with_max_fee_per_gas(fees.max_fee)
            .with_max_priority_fee_per_gas(fees.tip);
        if let Some(b) = fees.blob_fee {
            req.set_max_fee_per_blob_gas(b);
        }
        let env: TxEnvelope = req
            .build(&self.wallet)
            .await
            .map_err(|e| L1Error::Signing(e.to_string()))?;
        Ok((*env.tx_hash(), env.encoded_2718().into()))
    }

    /// Signs and broadcasts the batch `data` for `rollup`. Call only when not [`InboxSender::busy`].
    pub async fn send(&mut self, rollup: u64, data: Vec<u8>, tags: T) -> Result<(), L1Error> {
        if self.inflight.is_some() {
            return Err(L1Error::Config("a batch is already in flight".into()));
        }
        let blob = data.len() >= self.cfg.blob_min_bytes;
        let mut req = TransactionRequest::default()
            .with_from(self.from)
            .with_to(self.inbox)
            .with_chain_id(self.chain_id);
        if blob {
            req = req
                .with_input(BatonInbox::postBlobsCall { rollupId: rollup }.abi_encode())
                .with_blob_sidecar(crate::blobs::encode(&data)?);
        } else {
            req = req.with_input(
                BatonInbox::postCall {
                    rollupId: rollup,
                    data: data.into(),
                }
                .abi_encode(),
            );
        }
        let fees = self.market(blob).await?;
        let mut probe = req.clone();
        if let Some(b) = fees.blob_fee {
            probe.set_max_fee_per_blob_gas(b);
        }
        let gas = self
            .provider
            .estimate_gas(probe)
            .await
            .map_err(|e| L1Error::Contract {
                call: if blob { "postBlobs" } else { "post" },
                message: e.to_string(),
            })?;
        let nonce = self
            .provider
            .get_transaction_count(self.from)
            .pending()
            .await
            .map_err(L1Error::rpc)?;
        let req = req
            .with_nonce(nonce)
            .with_gas_limit(gas.saturating_mul(6) / 5);
        let (hash, raw) = self.sign(&req, fees).await?;
        self.inflight = Some(InFlight {
            tags,
            request: req,
            nonce,
            fees,
            hashes: vec![hash],
            raw: raw.clone(),
            sent: Instant::now(),
        });
        self.broadcast(&raw).await;
        self.sent += 1;
        info!(rollup, nonce, blob, tx = %hash, "posted a batch to the inbox");
        Ok(())
    }

    async fn broadcast(&self, raw: &Bytes) {
        if let Err(e) = self.provider.send_raw_transaction(raw).await {
            // Judged at the next tick (known, mined, or sent again).
            warn!(error = %e, "broadcasting an inbox batch failed");
        }
    }

    /// Follows the transaction in flight.
    pub async fn tick(&mut self) -> Result<Option<SenderEvent<T>>, L1Error> {
        let Some(f) = &self.inflight else {
            return Ok(None);
        };
        // The mined nonce is read before the receipts: a transaction mined between the two reads then shows as a
        // receipt. In the other order it would look like a nonce taken by something else, and its bundles would
        // be posted a second time.
        let mined_nonce = self
            .provider
            .get_transaction_count(self.from)
            .block_id(BlockId::latest())
            .await
            .map_err(L1Error::rpc)?;
        for h in f.hashes.clone().into_iter().rev() {
            if let Some(r) = self
                .provider
                .get_transaction_receipt(h)
                .await
                .map_err(L1Error::rpc)?
            {
                let tags = f.tags.clone();
                self.inflight = None;
                let fee_wei = u128::from(r.gas_used)
                    .saturating_mul(r.effective_gas_price)
                    .saturating_add(
                        u128::from(r.blob_gas_used.unwrap_or(0))
                            .saturating_mul(r.blob_gas_price.unwrap_or(0)),
                    );
                return Ok(Some(SenderEvent::Mined {
                    tags,
                    block: r.block_number.unwrap_or(0),
                    tx: h,
                    success: r.status(),
                    fee_wei,
                }));
            }
        }
        if mined_nonce > f.nonce {
            // Something else took the nonce (none of our attempts has a receipt).
            let tags = f.tags.clone();
            self.inflight = None;
            return Ok(Some(SenderEvent::Dropped { tags }));
        }
        let known = self
            .provider
            .get_transaction_by_hash(*f.hashes.last().unwrap_or(&TxHash::ZERO))
            .await
            .map_err(L1Error::rpc)?
            .is_some();
        if f.sent.elapsed() >= Duration::from_millis(self.cfg.bump_after_ms) {
            let market = self.market(f.fees.blob_fee.is_some()).await?;
            match f.fees.bumped(market, &self.cfg) {
                Some(fees) => {
                    let (hash, raw) = self.sign(&f.request, fees).await?;
                    if let Some(f) = &mut self.inflight {
                        f.fees = fees;
                        f.hashes.push(hash);
                        f.raw = raw.clone();
                        f.sent = Instant::now();
                    }
                    self.bumps += 1;
                    info!(tx = %hash, max_fee = fees.max_fee, blob_fee = ?fees.blob_fee, "re-priced an inbox batch");
                    self.broadcast(&raw).await;
                }
                None => warn!("an inbox batch waits at its fee caps"),
            }
        } else if !known {
            let raw = f.raw.clone();
            self.broadcast(&raw).await;
        }
        Ok(None)
    }

    /// The fee levels of the transaction in flight (for tests and status).
    pub fn inflight_fees(&self) -> Option<Fees> {
        self.inflight.as_ref().map(|f| f.fees)
    }

    /// The nonce of the transaction in flight.
    pub fn inflight_nonce(&self) -> Option<u64> {
        self.inflight.as_ref().map(|f| f.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bump_raises_fees_ten_percent_and_the_blob_fee_double_within_caps() {
        let cfg = SenderConfig::default();
        let low = Fees {
            max_fee: 1,
            tip: 1,
            blob_fee: None,
        };
        let f = Fees {
            max_fee: 100,
            tip: 10,
            blob_fee: Some(7),
        };
        let b = f.bumped(low, &cfg).unwrap();
        assert_eq!((b.max_fee, b.tip, b.blob_fee), (110, 11, Some(14)));
        // The market wins when it is higher.
        let high = Fees {
            max_fee: 500,
            tip: 20,
            blob_fee: Some(50),
        };
        let b = f.bumped(high, &cfg).unwrap();
        assert_eq!((b.max_fee, b.tip, b.blob_fee), (500, 20, Some(50)));
        // Calldata transactions have no blob fee.
        assert_eq!(
            Fees {
                blob_fee: None,
                ..f
            }
            .bumped(low, &cfg)
            .unwrap()
            .blob_fee,
            None
        );
        // A cap that stops the required raise stops the bump.
        let capped = SenderConfig {
            max_fee_per_blob_gas_wei: 13,
            ..cfg.clone()
        };
        assert_eq!(f.bumped(low, &capped), None);
    }
}
