//! `baton testnet` (a network at host names) and signed sample load.

use std::net::SocketAddr;
use std::path::PathBuf;

use alloy_signer_local::PrivateKeySigner;
use baton_consensus::bundle::BundleEntry;
use baton_consensus::bundle::UnsignedBundle;
use baton_consensus::params::ConsensusParams;
use baton_consensus::validators::GenesisValidator;
use baton_proto::client::sign_bundle;

use crate::config::{
    Genesis, GrpcSection, MempoolSection, MetricsSection, NodeConfig, P2pSection, RuntimeSection,
    StorageSection, SyncSection, VerifySection,
};
use crate::error::NodeError;
use crate::keys::NodeKey;

use super::*;

/// What `baton testnet` writes: validators reachable at host names rather than loopback ports. These are also the
/// command's arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct TestnetSpec {
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Output folder: genesis.toml, config.toml, keys/node<i>.toml.
    #[arg(long)]
    pub out: PathBuf,
    /// Host name of validator i, with `{i}` for its index, e.g. `baton-{i}.baton-p2p.baton.svc.cluster.local`.
    #[arg(long, default_value = "node{i}")]
    pub host_template: String,
    #[arg(long, default_value = "baton-testnet")]
    pub chain_id: String,
    #[arg(long, default_value_t = 47729)]
    pub network_id: u64,
    /// Path of the genesis file as the nodes see it (written into config.toml).
    #[arg(long, default_value = "genesis.toml")]
    pub genesis_path: PathBuf,
    /// The nodes' data folder (written into config.toml).
    #[arg(long, default_value = "/data")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 26656)]
    pub p2p_port: u16,
    #[arg(long, default_value_t = 50051)]
    pub grpc_port: u16,
    #[arg(long, default_value_t = 26660)]
    pub metrics_port: u16,
}

/// Writes `genesis.toml`, one `config.toml` shared by every node (each runs it with its own `--key-file` and
/// `--moniker`), and `keys/node<i>.toml`. Refuses to overwrite an existing genesis.
pub fn prepare_testnet(spec: &TestnetSpec) -> Result<Genesis, NodeError> {
    if spec.validators == 0 || spec.validators > 100 {
        return Err(NodeError::Config("--validators must be 1..=100".into()));
    }
    if !spec.host_template.contains("{i}") {
        return Err(NodeError::Config(
            "--host-template must contain {i} (the validator's index)".into(),
        ));
    }
    let genesis_out = spec.out.join("genesis.toml");
    if genesis_out.exists() {
        return Err(NodeError::Config(format!(
            "{} exists; refusing to overwrite a genesis",
            genesis_out.display()
        )));
    }
    std::fs::create_dir_all(spec.out.join("keys"))?;
    let mut gvals = Vec::new();
    for i in 0..spec.validators {
        let key = NodeKey::generate();
        key.save(&spec.out.join("keys").join(format!("node{i}.toml")))?;
        let host = spec.host_template.replace("{i}", &i.to_string());
        gvals.push(GenesisValidator {
            name: format!("node{i}"),
            public_key: key.public_key_hex(),
            voting_power: 1,
            p2p_addr: format!("/dns4/{host}/tcp/{}", spec.p2p_port),
            attester: None,
        });
    }
    let genesis = Genesis {
        chain_id: spec.chain_id.clone(),
        network_id: spec.network_id,
        params: ConsensusParams::default(),
        rollups: devnet_rollups(),
        validators: gvals,
        l1: None,
        epochs: None,
    };
    genesis.validate()?;
    let cfg = NodeConfig {
        moniker: "node".into(),
        data_dir: spec.data_dir.clone(),
        genesis_file: spec.genesis_path.clone(),
        key_file: PathBuf::from("keys/node0.toml"),
        validator: true,
        p2p: P2pSection {
            listen_addr: format!("/ip4/0.0.0.0/tcp/{}", spec.p2p_port),
            ..P2pSection::default()
        },
        grpc: GrpcSection::on(SocketAddr::from(([0, 0, 0, 0], spec.grpc_port))),
        mempool: MempoolSection::default(),
        storage: StorageSection::default(),
        runtime: RuntimeSection::default(),
        verify: VerifySection::default(),
        sync: SyncSection::default(),
        metrics: MetricsSection {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], spec.metrics_port)),
        },
        l1: None,
    };
    cfg.validate()?;
    let enc = |e: toml::ser::Error| NodeError::Config(e.to_string());
    std::fs::write(&genesis_out, toml::to_string(&genesis).map_err(enc)?)?;
    std::fs::write(
        spec.out.join("config.toml"),
        toml::to_string(&cfg).map_err(enc)?,
    )?;
    Ok(genesis)
}

/// `count` signed bundles of one `payload_bytes` entry each, spread over `senders` fresh keys (each sender's nonces
/// in order from 0) and rollups `1..=rollups`: load for measurements and benchmarks.
pub fn sample_bundles(
    count: usize,
    senders: usize,
    payload_bytes: usize,
    rollups: u64,
    network_id: u64,
) -> Result<Vec<baton_consensus::bundle::Bundle>, NodeError> {
    let keys: Vec<PrivateKeySigner> = (0..senders.max(1))
        .map(|_| PrivateKeySigner::random())
        .collect();
    (0..count)
        .map(|i| {
            let k = &keys[i % keys.len()];
            sign_bundle(
                k,
                UnsignedBundle {
                    network_id,
                    sender: k.address(),
                    nonce: (i / keys.len()) as u64,
                    expiry_height: 1_000_000,
                    entries: vec![BundleEntry {
                        rollup_id: 1 + i as u64 % rollups.max(1),
                        payload: vec![i as u8; payload_bytes],
                    }],
                },
            )
            .map_err(client_err)
        })
        .collect()
}

fn client_err(e: baton_proto::client::ClientError) -> NodeError {
    NodeError::Engine(e.to_string())
}
