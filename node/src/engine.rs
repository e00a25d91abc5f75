//! The Malachite engine as Baton configures it: its view of the node config, the peers it dials, the pub-sub
//! protocol, value sync, and the node's libp2p identity (a validator's carries a proof that the peer id is its
//! own). Used by the node ([`crate::node`]) and the engine floor ([`crate::floor`]).

use std::time::Duration;

use baton_consensus::context::ConsensusSigner;
use baton_consensus::ids::Address;
use malachitebft_app_channel::app::config::{
    ConsensusConfig, NodeConfig as EngineNodeConfig, PubSubProtocol, ValueSyncConfig,
};
use malachitebft_app_channel::app::net::Multiaddr;
use malachitebft_app_channel::{NetworkIdentity, Signer};
use malachitebft_codec::Codec;

use crate::codec::WireCodec;
use crate::config::{Genesis, NodeConfig};
use crate::error::NodeError;
use crate::keys::NodeKey;

/// Connections the engine takes from one IP address at most.
const MAX_CONNECTIONS_PER_IP: usize = 64;

/// The engine's view of a node's configuration (what Malachite asks of it).
#[derive(Clone, Debug)]
pub(crate) struct EngineConfig {
    pub(crate) moniker: String,
    pub(crate) consensus: ConsensusConfig,
    pub(crate) value_sync: ValueSyncConfig,
}

impl EngineNodeConfig for EngineConfig {
    fn moniker(&self) -> &str {
        &self.moniker
    }
    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }
    fn consensus_mut(&mut self) -> &mut ConsensusConfig {
        &mut self.consensus
    }
    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
    fn value_sync_mut(&mut self) -> &mut ValueSyncConfig {
        &mut self.value_sync
    }
}

/// The node's libp2p identity; a validator's carries a proof, signed with its consensus key, that the peer id is
/// that validator's.
pub(crate) async fn network_identity(
    moniker: &str,
    key: &NodeKey,
    signer: Option<&ConsensusSigner>,
) -> Result<NetworkIdentity, NodeError> {
    let keypair = key.keypair()?;
    let Some(signer) = signer else {
        return Ok(NetworkIdentity::new(moniker.to_string(), keypair, None));
    };
    let proof = signer
        .sign_validator_proof(
            key.signing_key.verification_key().as_bytes().to_vec(),
            keypair.public().to_peer_id().to_bytes(),
        )
        .await
        .map_err(|e| NodeError::Key(format!("cannot sign validator proof: {e:?}")))?;
    let proof_bytes = WireCodec
        .encode(&proof)
        .map_err(|e| NodeError::Engine(e.to_string()))?;
    Ok(NetworkIdentity::new_validator(
        moniker.to_string(),
        keypair,
        key.address().to_string(),
        proof_bytes,
    ))
}

pub(crate) fn parse_addr(s: &str) -> Result<Multiaddr, NodeError> {
    s.parse()
        .map_err(|e| NodeError::Config(format!("`{s}` is not a multiaddr: {e}")))
}

/// The engine's configuration: the peers are the genesis validators and configured full nodes (who may connect
/// in: see `persistent_peers_only` below).
pub(crate) fn engine_config(
    cfg: &NodeConfig,
    genesis: &Genesis,
    address: Address,
) -> Result<EngineConfig, NodeError> {
    let mut consensus = ConsensusConfig::default();
    consensus.p2p.listen_addr = parse_addr(&cfg.p2p.listen_addr)?;
    let own = cfg.p2p.listen_addr.clone();
    let mut peers = Vec::new();
    for v in &genesis.validators {
        let same_key = v
            .to_validator()
            .map(|val| val.address == address)
            .unwrap_or(false);
        if !same_key && v.p2p_addr != own {
            // Name the peer id in the address: the node then recognises the validator on an inbound connection
            // before its own dial has completed (otherwise two validators starting together reject each other).
            let addr = if v.p2p_addr.contains("/p2p/") {
                v.p2p_addr.clone()
            } else {
                format!(
                    "{}/p2p/{}",
                    v.p2p_addr,
                    crate::keys::peer_id_of(&v.public_key)?
                )
            };
            peers.push(parse_addr(&addr)?);
        }
    }
    for p in &cfg.p2p.extra_peers {
        peers.push(parse_addr(p)?);
    }
    consensus.p2p.persistent_peers = peers;
    // A fixed set talks to its configured peers only. With epochs, anyone who stakes may join: validators accept
    // inbound connections from nodes not in their config (authenticated libp2p identities; every consensus
    // message is still checked against the height's set, and the proposal channel hears only the set and
    // configured peers: `crate::peers`).
    consensus.p2p.persistent_peers_only = genesis.epochs.is_none();
    consensus.p2p.discovery.enabled = false;
    consensus.p2p.discovery.max_connections_per_ip = MAX_CONNECTIONS_PER_IP;
    consensus.p2p.pubsub_max_size = bytesize(cfg.p2p.max_gossip_bytes);
    consensus.p2p.rpc_max_size = bytesize(cfg.p2p.max_rpc_bytes);
    match cfg.p2p.pubsub {
        crate::config::PubSub::Broadcast => consensus.p2p.protocol = PubSubProtocol::Broadcast,
        // Gossipsub forwards a message before the application has judged it, so on a chain anyone may connect
        // to, an outsider's traffic would be relayed between validators.
        crate::config::PubSub::Gossipsub if genesis.epochs.is_some() => {
            return Err(NodeError::Config(
                "p2p.pubsub = \"gossipsub\" relays messages before they are checked; a chain with epochs (open to \
                 any peer) must use \"broadcast\""
                    .into(),
            ))
        }
        crate::config::PubSub::Gossipsub => {}
    }
    Ok(EngineConfig {
        moniker: cfg.moniker.clone(),
        consensus,
        value_sync: value_sync_config(&cfg.sync, cfg.p2p.max_rpc_bytes),
    })
}

/// The engine's value sync as the `[sync]` section asks (the node and the engine floor both build it here).
pub(crate) fn value_sync_config(
    sync: &crate::config::SyncSection,
    max_rpc_bytes: u64,
) -> ValueSyncConfig {
    ValueSyncConfig {
        enabled: true,
        status_update_interval: Duration::from_millis(sync.status_interval_ms),
        request_timeout: Duration::from_millis(sync.request_timeout_ms),
        max_response_size: bytesize(max_rpc_bytes),
        batch_size: sync.batch_size,
        ..ValueSyncConfig::default()
    }
}

fn bytesize(n: u64) -> bytesize::ByteSize {
    bytesize::ByteSize::b(n)
}
