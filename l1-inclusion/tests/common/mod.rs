//! A local L1 with Baton's contracts deployed, for the tests in this folder.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use alloy::network::EthereumWallet;
use alloy::node_bindings::AnvilInstance;
use alloy::primitives::{Address as EthAddress, B256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use baton_consensus::hash::Hash;
use baton_consensus::types::BlockHeader;
use baton_l1_inclusion::anvil::LocalL1;
use baton_l1_inclusion::commitment::{AttestationDomain, SignedCommitment};
use baton_l1_inclusion::contracts::{BatonCommitments, BatonInbox};

/// The contracts' governance delay in these tests (seconds); tests move L1 time past it
/// ([`L1::pass_governance_delay`]).
pub const GOVERNANCE_DELAY: u64 = 3600;

pub struct L1 {
    pub anvil: AnvilInstance,
    /// Signs with anvil's first dev key (the contracts' governance).
    pub provider: DynProvider,
    pub commitments: EthAddress,
    pub attesters: Vec<PrivateKeySigner>,
    pub domain: AttestationDomain,
    pub set_hash: Hash,
}

impl L1 {
    /// Anvil (mining a block per transaction unless `automine` is off) with a commitments contract whose set is
    /// four attesters of power 1.
    pub async fn start(automine: bool) -> L1 {
        let anvil = LocalL1::default().spawn().expect("anvil starts");
        let key: PrivateKeySigner = anvil.keys()[0].clone().into();
        let governance = key.address();
        let provider = ProviderBuilder::new()
            .wallet(EthereumWallet::from(key))
            .connect_http(anvil.endpoint_url())
            .erased();
        let attesters: Vec<PrivateKeySigner> = (1..=4u8)
            .map(|i| PrivateKeySigner::from_bytes(&B256::repeat_byte(0x40 + i)).unwrap())
            .collect();
        let set_hash = Hash::digest(&[b"test validator set"]);
        let c = BatonCommitments::deploy(
            provider.clone(),
            governance,
            EthAddress::ZERO,
            GOVERNANCE_DELAY,
            attesters.iter().map(|a| a.address()).collect(),
            vec![1u64; 4],
            B256::from(set_hash.0),
        )
        .await
        .expect("deploy commitments");
        let domain = AttestationDomain {
            l1_chain_id: anvil.chain_id(),
            contract: *c.address(),
        };
        if !automine {
            provider.anvil_set_auto_mine(false).await.unwrap();
        }
        L1 {
            provider,
            commitments: *c.address(),
            attesters,
            domain,
            set_hash,
            anvil,
        }
    }

    pub fn header(&self, height: u64) -> BlockHeader {
        BlockHeader {
            validator_set_hash: self.set_hash,
            next_validator_set_hash: self.set_hash,
            ..baton_consensus::fixtures::header(height)
        }
    }

    /// A commitment of `height` signed by the attesters at `signers`.
    pub fn commitment(&self, height: u64, signers: &[usize]) -> SignedCommitment {
        let header = self.header(height);
        let hash = header.hash();
        SignedCommitment {
            signatures: signers
                .iter()
                .map(|&i| {
                    let a = &self.attesters[i];
                    (a.address(), self.domain.sign(a, height, hash).unwrap())
                })
                .collect(),
            header,
            rotation: None,
        }
    }

    /// A wallet for anvil dev key `i` (each poster test uses its own account).
    pub fn wallet(&self, i: usize) -> EthereumWallet {
        let key: PrivateKeySigner = self.anvil.keys()[i].clone().into();
        EthereumWallet::from(key)
    }

    pub fn address(&self, i: usize) -> EthAddress {
        self.anvil.addresses()[i]
    }

    /// A provider that signs with anvil dev key `i`.
    pub fn signer(&self, i: usize) -> DynProvider {
        ProviderBuilder::new()
            .wallet(self.wallet(i))
            .connect_http(self.anvil.endpoint_url())
            .erased()
    }

    /// A watcher of `inbox` from `from_block` at `safety`.
    pub fn watcher(
        &self,
        inbox: EthAddress,
        from_block: u64,
        safety: baton_l1_inclusion::watcher::Safety,
    ) -> baton_l1_inclusion::watcher::Watcher<DynProvider> {
        baton_l1_inclusion::watcher::Watcher::new(
            self.reader(),
            inbox,
            baton_l1_inclusion::watcher::WatcherConfig {
                safety,
                from_block,
                ..Default::default()
            },
        )
    }

    /// A provider that does not sign (the poster signs itself).
    pub fn reader(&self) -> DynProvider {
        ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_http(self.anvil.endpoint_url())
            .erased()
    }

    /// Deploys an inbox (forced-inclusion delay 5 blocks, no fee); returns it and the L1 head after deployment.
    pub async fn deploy_inbox(&self) -> (EthAddress, u64) {
        let inbox = BatonInbox::deploy(self.provider.clone(), 5, alloy::primitives::U256::ZERO)
            .await
            .unwrap();
        (*inbox.address(), self.head().await)
    }

    /// Posts `data` for `rollup` to the inbox and waits for the receipt. Signs through a fresh provider each
    /// time: a cached nonce would outlive an `anvil_reorg`.
    pub async fn post(
        &self,
        inbox: EthAddress,
        rollup: u64,
        data: Vec<u8>,
    ) -> alloy::rpc::types::TransactionReceipt {
        BatonInbox::new(inbox, self.signer(0))
            .post(rollup, alloy::primitives::Bytes::from(data))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap()
    }

    /// Replaces the last `depth` blocks with empty ones (`anvil_reorg`).
    pub async fn reorg(&self, depth: u64) {
        self.provider
            .anvil_reorg(alloy::rpc::types::anvil::ReorgOptions {
                depth,
                tx_block_pairs: vec![],
            })
            .await
            .unwrap();
    }

    pub async fn mine(&self, blocks: u64) {
        self.provider.anvil_mine(Some(blocks), None).await.unwrap();
    }

    /// The latest block's timestamp (unix seconds).
    pub async fn timestamp(&self) -> u64 {
        self.provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .unwrap()
            .unwrap()
            .header
            .timestamp
    }

    /// Mines the next block at L1 time `timestamp` (`evm_setNextBlockTimestamp`, `evm_mine`).
    pub async fn mine_at(&self, timestamp: u64) {
        self.provider
            .anvil_set_next_block_timestamp(timestamp)
            .await
            .unwrap();
        self.mine(1).await;
    }

    /// Moves L1 time on by the governance delay (`evm_increaseTime`) and mines a block there.
    pub async fn pass_governance_delay(&self) {
        self.provider
            .anvil_increase_time(GOVERNANCE_DELAY)
            .await
            .unwrap();
        self.mine(1).await;
    }

    pub async fn head(&self) -> u64 {
        self.provider.get_block_number().await.unwrap()
    }

    pub fn contract(&self) -> BatonCommitments::BatonCommitmentsInstance<DynProvider> {
        BatonCommitments::new(self.commitments, self.provider.clone())
    }
}

/// Polls `check` every 100 ms, mining a block between polls if `mine`, for at most `secs`: whether it came to hold.
pub async fn poll_until<F, Fut>(l1: &L1, secs: u64, mine: bool, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        if mine {
            l1.mine(1).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends the code under test's logs to the test's captured output (shown when it fails). `RUST_LOG` overrides
/// the default level (debug for Baton's crates).
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,baton_l1_inclusion=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Runs a test body with a time bound, so a hung L1 call fails the test instead of stalling the suite.
pub async fn bounded<F: std::future::Future<Output = ()>>(secs: u64, body: F) {
    tokio::time::timeout(Duration::from_secs(secs), body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}
