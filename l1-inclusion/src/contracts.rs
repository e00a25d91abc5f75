//! Bindings to Baton's L1 contracts, generated from the committed artifacts (`contracts/artifacts/*.json`, built
//! from `contracts/src/*.sol` by `contracts/build.js` with the pinned solc-js; a test checks they match).

#![allow(missing_docs, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    BatonCommitments,
    "contracts/artifacts/BatonCommitments.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    BatonInbox,
    "contracts/artifacts/BatonInbox.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    BatonStaking,
    "contracts/artifacts/BatonStaking.json"
);

use alloy::network::EthereumWallet;
use alloy::primitives::{Address as EthAddress, B256, U256};
use alloy::providers::ProviderBuilder;

use crate::error::L1Error;

/// Addresses of a deployment of Baton's contracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub commitments: EthAddress,
    pub inbox: EthAddress,
    /// The L1 block the inbox was deployed in (where a watcher starts).
    pub inbox_block: u64,
}

/// The governance delay a real deployment should use (seconds between a governance change being scheduled, with
/// its event on L1, and taking effect): two days, long enough for rollups watching L1 to notice and react.
pub const DEFAULT_GOVERNANCE_DELAY_SECS: u64 = 2 * 24 * 60 * 60;

/// Deploys both contracts with `deployer` as governance (devnets and tests). `attesters` are `(address, power)`
/// of the validator set whose Baton hash is `set_hash`; `staking` is the `BatonStaking` contract `rotate` reads
/// attesters from (zero: rotation off); governance changes wait `governance_delay` seconds.
pub async fn deploy(
    rpc_url: &str,
    deployer: alloy::signers::local::PrivateKeySigner,
    attesters: &[(EthAddress, u64)],
    set_hash: B256,
    forced_inclusion_delay: u64,
    staking: EthAddress,
    governance_delay: u64,
) -> Result<Deployment, L1Error> {
    let governance = deployer.address();
    let provider = deployer_provider(rpc_url, deployer)?;
    let c = BatonCommitments::deploy(
        provider.clone(),
        governance,
        staking,
        governance_delay,
        attesters.iter().map(|(a, _)| *a).collect(),
        attesters.iter().map(|(_, p)| *p).collect(),
        set_hash,
    )
    .await
    .map_err(|e| L1Error::Contract {
        call: "deploy BatonCommitments",
        message: e.to_string(),
    })?;
    let builder = BatonInbox::deploy_builder(provider.clone(), forced_inclusion_delay, U256::ZERO);
    let receipt = builder
        .send()
        .await
        .map_err(|e| L1Error::Contract {
            call: "deploy BatonInbox",
            message: e.to_string(),
        })?
        .get_receipt()
        .await
        .map_err(L1Error::rpc)?;
    let inbox = receipt.contract_address.ok_or_else(|| L1Error::Contract {
        call: "deploy BatonInbox",
        message: "no contract address in the receipt".into(),
    })?;
    Ok(Deployment {
        commitments: *c.address(),
        inbox,
        inbox_block: receipt.block_number.unwrap_or(0),
    })
}

/// A provider that signs with `deployer`.
fn deployer_provider(
    rpc_url: &str,
    deployer: alloy::signers::local::PrivateKeySigner,
) -> Result<impl alloy::providers::Provider + Clone, L1Error> {
    let url = rpc_url
        .parse::<alloy::transports::http::reqwest::Url>()
        .map_err(|e| {
            L1Error::Config(format!(
                "L1 RPC URL {}: {}",
                crate::redact::redact_url(rpc_url),
                crate::redact::scrub(&e.to_string(), rpc_url)
            ))
        })?;
    Ok(ProviderBuilder::new()
        .wallet(EthereumWallet::from(deployer))
        .connect_http(url))
}

/// Deploys `BatonStaking` with `deployer` as governance (devnets and tests): stakes of at least `min_stake` wei,
/// withdrawals `exit_delay` L1 blocks after an exit request, governance changes `governance_delay` seconds after
/// being scheduled; anyone may register if `open`. `genesis` are the genesis validators as `(consensus key, owner,
/// attester)`: allowlisted from the start, each registrable only by its owner and bound to the attester genesis
/// lists for it (the one `BatonCommitments` starts with), so the nodes and `rotate` agree on it. Returns its
/// address and deployment block.
pub async fn deploy_staking(
    rpc_url: &str,
    deployer: alloy::signers::local::PrivateKeySigner,
    min_stake: U256,
    exit_delay: u64,
    governance_delay: u64,
    genesis: Vec<(B256, EthAddress, EthAddress)>,
    open: bool,
) -> Result<(EthAddress, u64), L1Error> {
    let governance = deployer.address();
    let provider = deployer_provider(rpc_url, deployer)?;
    let receipt = BatonStaking::deploy_builder(
        provider,
        min_stake,
        exit_delay,
        governance,
        governance_delay,
        genesis.iter().map(|g| g.0).collect(),
        genesis.iter().map(|g| g.1).collect(),
        genesis.iter().map(|g| g.2).collect(),
        open,
    )
    .send()
    .await
    .map_err(|e| L1Error::Contract {
        call: "deploy BatonStaking",
        message: e.to_string(),
    })?
    .get_receipt()
    .await
    .map_err(L1Error::rpc)?;
    let address = receipt.contract_address.ok_or_else(|| L1Error::Contract {
        call: "deploy BatonStaking",
        message: "no contract address in the receipt".into(),
    })?;
    Ok((address, receipt.block_number.unwrap_or(0)))
}

/// Names `commitments` in the `BatonStaking` contract at `staking` (governance, once): from then on a stake cannot
/// be withdrawn while that contract's set holds its key.
pub async fn set_staking_commitments(
    rpc_url: &str,
    governance: alloy::signers::local::PrivateKeySigner,
    staking: EthAddress,
    commitments: EthAddress,
) -> Result<(), L1Error> {
    let provider = deployer_provider(rpc_url, governance)?;
    let receipt = BatonStaking::new(staking, provider)
        .setCommitments(commitments)
        .send()
        .await
        .map_err(|e| L1Error::Contract {
            call: "BatonStaking.setCommitments",
            message: e.to_string(),
        })?
        .get_receipt()
        .await
        .map_err(L1Error::rpc)?;
    if !receipt.status() {
        return Err(L1Error::Contract {
            call: "BatonStaking.setCommitments",
            message: "reverted".into(),
        });
    }
    Ok(())
}
