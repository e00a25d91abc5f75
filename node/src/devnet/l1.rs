//! The devnet's L1: contracts deployed on a local anvil, attestation keys, staking, and each node's `[l1]`.

use std::path::PathBuf;

use alloy_signer_local::PrivateKeySigner;

use crate::config::{NodeConfig, PubSub};
use crate::error::NodeError;
use crate::keys::NodeKey;

use super::*;

/// Staking on the devnet's L1: a `BatonStaking` contract, genesis `[epochs]`, and each genesis validator
/// allowlisted and staked (`stake_per_validator`, paid by the deployer, who owns those stakes).
#[derive(Clone, Debug)]
pub struct DevnetStaking {
    pub epoch_length: u64,
    /// L1 blocks between an exit request and the withdrawal.
    pub exit_delay: u64,
    /// Stake per unit of voting power and the minimum stake, in wei.
    pub stake_per_power: u128,
    pub stake_per_validator: u128,
    /// Registration open to anyone from deployment (otherwise only allowlisted keys may register: the genesis
    /// validators, allowlisted at deployment, and keys governance allowlists later through the timelock).
    pub open: bool,
}

/// One ether in wei.
pub const ETHER: u128 = 1_000_000_000_000_000_000;

impl Default for DevnetStaking {
    fn default() -> Self {
        DevnetStaking {
            epoch_length: 100,
            exit_delay: 5,
            stake_per_power: ETHER,
            stake_per_validator: ETHER,
            open: false,
        }
    }
}

/// A node that is not in genesis: its folder (named after the next node index), key, L1 attestation key and
/// config (validator, following L1 at `rpc_url`), ready to register its stake and start.
pub fn prepare_joiner(
    net: &Devnet,
    rpc_url: &str,
) -> Result<(DevnetNode, NodeKey, PrivateKeySigner), NodeError> {
    let i = net.nodes.len();
    let (node, key) = write_node(
        &net.dir,
        &format!("node{i}"),
        PubSub::default(),
        threads_per_node(i + 1),
    )?;
    let attester = PrivateKeySigner::random();
    crate::keys::write_secret_file(
        &node.dir.join("l1_attestation.key"),
        &format!("{}\n", attester.to_bytes()),
    )?;
    let mut cfg: NodeConfig = toml::from_str(&std::fs::read_to_string(&node.config_path)?)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    cfg.l1 = Some(node_l1_section(rpc_url, None, None));
    std::fs::write(
        &node.config_path,
        toml::to_string(&cfg).map_err(|e| NodeError::Config(e.to_string()))?,
    )?;
    Ok((node, key, attester))
}

fn node_l1_section(
    rpc_url: &str,
    poster_key_file: Option<PathBuf>,
    forward_key_file: Option<PathBuf>,
) -> crate::config::L1Section {
    crate::config::L1Section {
        rpc_url: rpc_url.to_string(),
        attestation_key_file: PathBuf::from("l1_attestation.key"),
        poster_key_file,
        poster: baton_l1_inclusion::poster::PosterConfig {
            poll_interval_ms: 250,
            ..Default::default()
        },
        poll_ms: 250,
        origin_delay_ms: 500,
        based_safety: Default::default(),
        forward_key_file,
        forward: crate::forward::ForwardConfig {
            flush_ms: 250,
            ..Default::default()
        },
    }
}

/// L1 settings for a devnet: an endpoint, funded keys, and the commitment cadence.
#[derive(Clone, Debug)]
pub struct DevnetL1 {
    pub rpc_url: String,
    pub chain_id: u64,
    /// Deploys the contracts and is their governance.
    pub deployer: PrivateKeySigner,
    /// Pays for the posted commitments (node `poster_node`).
    pub poster: PrivateKeySigner,
    pub poster_node: usize,
    pub commit_every: u64,
    /// L1 blocks a forced-inclusion entry waits before it is owed.
    pub forced_delay: u64,
    /// Genesis `origin_safety`.
    pub origin_safety: baton_l1_inclusion::watcher::Safety,
    /// When set, node `poster_node` also forwards based-rollup bundles to the inbox, paying with this key.
    pub forwarder: Option<PrivateKeySigner>,
    /// When set, the validator set follows L1 stake by epochs.
    pub staking: Option<DevnetStaking>,
    /// Seconds a governance change of the contracts waits between being scheduled and taking effect (a real
    /// deployment: [`baton_l1_inclusion::contracts::DEFAULT_GOVERNANCE_DELAY_SECS`], two days).
    pub governance_delay: u64,
}

/// The devnet's governance delay (seconds): short, so a demo or a test can wait it out.
pub const DEVNET_GOVERNANCE_DELAY_SECS: u64 = 5;

impl DevnetL1 {
    /// A local anvil's settings: its first dev key deploys, its second pays for commitments posted by node 0.
    pub fn local(anvil: &alloy::node_bindings::AnvilInstance, commit_every: u64) -> Self {
        let key = |i: usize| -> PrivateKeySigner { anvil.keys()[i].clone().into() };
        DevnetL1 {
            rpc_url: anvil.endpoint(),
            chain_id: anvil.chain_id(),
            deployer: key(0),
            poster: key(1),
            poster_node: 0,
            commit_every,
            forced_delay: 10,
            origin_safety: baton_l1_inclusion::watcher::Safety::Safe,
            forwarder: None,
            staking: None,
            governance_delay: DEVNET_GOVERNANCE_DELAY_SECS,
        }
    }
}

/// Gives every validator an L1 attestation key, deploys the contracts for the devnet's validator set, and writes
/// genesis `[l1]` and each node's `[l1]` config (node `poster_node` posts). Call before the nodes start.
pub async fn attach_l1(
    net: &mut Devnet,
    l1: &DevnetL1,
) -> Result<baton_l1_inclusion::contracts::Deployment, NodeError> {
    let mut attesters = Vec::new();
    for (i, node) in net.nodes.iter().enumerate() {
        let key = PrivateKeySigner::random();
        crate::keys::write_secret_file(
            &node.dir.join("l1_attestation.key"),
            &format!("{}\n", key.to_bytes()),
        )?;
        net.genesis.validators[i].attester = Some(format!("{:#x}", key.address()));
        attesters.push((key.address(), net.genesis.validators[i].voting_power));
    }
    let set_hash = net.genesis.validator_set()?.hash();
    // Staking first, so the commitments contract names it at deployment (changing it later is timelocked).
    let staking = match &l1.staking {
        Some(st) => Some(deploy_genesis_staking(net, l1, st).await?),
        None => None,
    };
    let deployment = baton_l1_inclusion::contracts::deploy(
        &l1.rpc_url,
        l1.deployer.clone(),
        &attesters,
        alloy_primitives::B256::from(set_hash.0),
        l1.forced_delay,
        staking.unwrap_or_default(),
        l1.governance_delay,
    )
    .await
    .map_err(|e| NodeError::Config(format!("deploying the L1 contracts: {e}")))?;
    if let (Some(st), Some(address)) = (&l1.staking, staking) {
        // The staking contract learns the commitments contract (once): no stake is withdrawn while that
        // contract's set holds its key.
        baton_l1_inclusion::contracts::set_staking_commitments(
            &l1.rpc_url,
            l1.deployer.clone(),
            address,
            deployment.commitments,
        )
        .await
        .map_err(|e| NodeError::Config(format!("naming BatonCommitments in BatonStaking: {e}")))?;
        stake_genesis(net, l1, st, address).await?;
    }
    net.genesis.l1 = Some(crate::config::GenesisL1 {
        chain_id: l1.chain_id,
        commitments: format!("{:#x}", deployment.commitments),
        commit_every: l1.commit_every,
        inbox: format!("{:#x}", deployment.inbox),
        inbox_from_block: deployment.inbox_block,
        origin_safety: l1.origin_safety,
        max_origin_lag: 64,
        staking: staking.map(|a| format!("{a:#x}")),
    });
    net.genesis.validate()?;
    std::fs::write(
        &net.genesis_path,
        toml::to_string(&net.genesis).map_err(|e| NodeError::Config(e.to_string()))?,
    )?;
    for (i, node) in net.nodes.iter().enumerate() {
        let poster_key_file = if i == l1.poster_node {
            crate::keys::write_secret_file(
                &node.dir.join("l1_poster.key"),
                &format!("{}\n", l1.poster.to_bytes()),
            )?;
            Some(PathBuf::from("l1_poster.key"))
        } else {
            None
        };
        let forward_key_file = match &l1.forwarder {
            Some(k) if i == l1.poster_node => {
                crate::keys::write_secret_file(
                    &node.dir.join("l1_forward.key"),
                    &format!("{}\n", k.to_bytes()),
                )?;
                Some(PathBuf::from("l1_forward.key"))
            }
            _ => None,
        };
        let mut cfg: NodeConfig = toml::from_str(&std::fs::read_to_string(&node.config_path)?)
            .map_err(|e| NodeError::Config(e.to_string()))?;
        cfg.l1 = Some(node_l1_section(
            &l1.rpc_url,
            poster_key_file,
            forward_key_file,
        ));
        std::fs::write(
            &node.config_path,
            toml::to_string(&cfg).map_err(|e| NodeError::Config(e.to_string()))?,
        )?;
    }
    Ok(deployment)
}

/// The genesis validators' consensus keys, as `BatonStaking` names them.
fn genesis_keys(net: &Devnet) -> Result<Vec<alloy_primitives::B256>, NodeError> {
    net.genesis
        .validators
        .iter()
        .map(|v| {
            Ok(alloy_primitives::B256::from(
                v.to_validator()
                    .map_err(NodeError::Config)?
                    .public_key
                    .to_bytes(),
            ))
        })
        .collect()
}

/// Deploys `BatonStaking` with every genesis validator allowlisted (and registration open if asked) from the
/// start: a fresh deployment needs no timelocked governance call. Each genesis key is bound to its owner (the
/// deployer, who stakes it) and to the attester genesis lists for it, the one `BatonCommitments` starts with: one
/// source of attesters for the nodes and the contracts. Its constructor emits only allowlist events,
/// which the set function ignores, so it may precede the inbox (staking events are read from the inbox's block
/// on): the genesis stakes are registered after the inbox, by [`stake_genesis`].
async fn deploy_genesis_staking(
    net: &Devnet,
    l1: &DevnetL1,
    st: &DevnetStaking,
) -> Result<alloy_primitives::Address, NodeError> {
    let (address, _) = baton_l1_inclusion::contracts::deploy_staking(
        &l1.rpc_url,
        l1.deployer.clone(),
        alloy_primitives::U256::from(st.stake_per_power),
        st.exit_delay,
        l1.governance_delay,
        genesis_keys(net)?
            .into_iter()
            .zip(&net.genesis.validators)
            .map(|(key, v)| {
                let attester = v
                    .attester
                    .as_deref()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| {
                        NodeError::Config(format!("genesis attester of {}: {e}", v.name))
                    })?;
                Ok((key, l1.deployer.address(), attester))
            })
            .collect::<Result<Vec<_>, NodeError>>()?,
        st.open,
    )
    .await
    .map_err(|e| NodeError::Config(format!("deploying BatonStaking: {e}")))?;
    Ok(address)
}

/// Stakes every genesis validator in `BatonStaking` at `address` (the deployer owns the stakes; attesters from
/// genesis, bound at deployment; each registration carries its consensus key's proof of possession) and writes
/// genesis `[epochs]`.
async fn stake_genesis(
    net: &mut Devnet,
    l1: &DevnetL1,
    st: &DevnetStaking,
    address: alloy_primitives::Address,
) -> Result<(), NodeError> {
    use alloy_primitives::U256;
    let owner =
        crate::validator::StakingClient::new(&l1.rpc_url, address, Some(l1.deployer.clone()))?;
    for (node, v) in net.nodes.iter().zip(&net.genesis.validators) {
        let key = NodeKey::load(&node.dir.join("node_key.toml"))?;
        let attester = crate::l1::load_l1_key(&node.dir.join("l1_attestation.key"))?;
        owner
            .register(&key, &attester, U256::from(st.stake_per_validator))
            .await
            .map_err(|e| NodeError::Config(format!("staking genesis validator {}: {e}", v.name)))?;
    }
    net.genesis.epochs = Some(crate::config::GenesisEpochs {
        length: st.epoch_length,
        max_validators: 100,
        min_stake: st.stake_per_power.to_string(),
        stake_per_power: st.stake_per_power.to_string(),
        min_validators: 4.min(net.genesis.validators.len()),
    });
    Ok(())
}
