//! Local networks of real `baton` processes, for the CLI (`baton devnet`, `baton testnet`) and the tests: the
//! library side of the devnet (behind the `devnet` feature, on by default). The demo narrative `baton devnet`
//! prints lives with the binary (`src/bin/baton/demo.rs`).
//!
//! [`prepare`] writes keys, a genesis and one config per node into a folder (this module); [`NodeProcess`]
//! starts and stops the real `baton run` binary (`process`); [`attach_l1`] deploys the contracts on a local L1
//! and writes the L1 settings (`l1`); [`prepare_testnet`] writes a network reachable at host names and
//! [`sample_bundles`] signs load (`testnet`). The CLI and the cluster tests use them all, so the tests exercise
//! what users run.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use baton_consensus::params::ConsensusParams;
use baton_consensus::registry::{RollupInfo, RollupMode};
use baton_consensus::validators::GenesisValidator;

use crate::config::{
    Genesis, GrpcSection, MempoolSection, MetricsSection, NodeConfig, P2pSection, PubSub,
    RuntimeSection, StorageSection, SyncSection, VerifySection,
};
use crate::error::NodeError;
use crate::keys::NodeKey;

mod l1;
mod process;
mod testnet;

pub use l1::{
    attach_l1, prepare_joiner, DevnetL1, DevnetStaking, DEVNET_GOVERNANCE_DELAY_SECS, ETHER,
};
pub use process::NodeProcess;
pub use testnet::{prepare_testnet, sample_bundles, TestnetSpec};

/// One node of a prepared devnet.
#[derive(Clone, Debug)]
pub struct DevnetNode {
    pub name: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub p2p_addr: String,
    pub peer_id: String,
}

impl DevnetNode {
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }
}

/// The network id (EIP-712 chainId) of devnets.
pub const DEVNET_NETWORK_ID: u64 = 0xBA70;

/// The rollups a devnet registers: ids 1 to 4.
pub fn devnet_rollups() -> Vec<RollupInfo> {
    ["alpha", "beta", "gamma", "delta"]
        .iter()
        .enumerate()
        .map(|(i, name)| RollupInfo {
            id: i as u64 + 1,
            name: (*name).to_string(),
            mode: RollupMode::Shared,
            allowed_senders: Vec::new(),
        })
        .collect()
}

/// A prepared devnet folder.
#[derive(Clone, Debug)]
pub struct Devnet {
    pub dir: PathBuf,
    pub genesis: Genesis,
    pub genesis_path: PathBuf,
    pub nodes: Vec<DevnetNode>,
}

/// How long a port handed out stays reserved for other processes ([`free_port`]).
const PORT_RESERVED_FOR: std::time::Duration = std::time::Duration::from_secs(600);

/// Reserves `port` across processes: a file named after it in `<temp>/baton-ports`, created only if absent or
/// older than [`PORT_RESERVED_FOR`]. Where no such file can be written, only the bind check protects the port.
fn reserve_across_processes(port: u16) -> bool {
    use std::fs::OpenOptions;
    let dir = std::env::temp_dir().join("baton-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let path = dir.join(port.to_string());
    let create = || OpenOptions::new().write(true).create_new(true).open(&path);
    match create() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let stale = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() > PORT_RESERVED_FOR)
                .unwrap_or(false);
            // Two processes may both find it stale; only one of them creates it again.
            stale && std::fs::remove_file(&path).is_ok() && create().is_ok()
        }
        Err(_) => true,
    }
}

/// A free TCP port on 127.0.0.1 for a node to listen on, never the same twice in this process, nor in two
/// processes within [`PORT_RESERVED_FOR`] (each test runs in its own process, and two of them that found the same
/// port free before either node bound it made "Error listening" failures: [`reserve_across_processes`]).
///
/// Ports come from below the kernel's ephemeral range (Linux's default starts at 32768): a port the OS picks for
/// `bind(0)` is also one it may hand to an outgoing connection of an already running node before the node that
/// should listen on it starts, which made "address already in use" failures possible.
pub fn free_port() -> Result<u16, NodeError> {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..10_000 {
        let port = LOW + rand::random::<u16>() % (HIGH - LOW);
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            if reserve_across_processes(port) {
                return Ok(port);
            }
        }
    }
    Err(NodeError::Config(format!(
        "no free port in {LOW}..{HIGH} on 127.0.0.1"
    )))
}

/// Writes keys, `genesis.toml` and a `config.toml` per node under `dir` (which must not exist or be empty).
pub fn prepare(
    dir: &Path,
    validators: usize,
    chain_id: &str,
    params: ConsensusParams,
    pubsub: PubSub,
) -> Result<Devnet, NodeError> {
    if validators == 0 {
        return Err(NodeError::Config(
            "a devnet needs at least one validator".into(),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let mut nodes = Vec::new();
    let mut gvals = Vec::new();
    for i in 0..validators {
        let (node, key) = write_node(
            &dir,
            &format!("node{i}"),
            pubsub,
            threads_per_node(validators),
        )?;
        gvals.push(GenesisValidator {
            name: node.name.clone(),
            public_key: key.public_key_hex(),
            voting_power: 1,
            p2p_addr: node.p2p_addr.clone(),
            attester: None,
        });
        nodes.push(node);
    }
    let genesis = Genesis {
        chain_id: chain_id.to_string(),
        network_id: DEVNET_NETWORK_ID,
        params,
        rollups: devnet_rollups(),
        validators: gvals,
        l1: None,
        epochs: None,
    };
    genesis.validate()?;
    let genesis_path = dir.join("genesis.toml");
    std::fs::write(
        &genesis_path,
        toml::to_string(&genesis).map_err(|e| NodeError::Config(e.to_string()))?,
    )?;
    Ok(Devnet {
        dir,
        genesis,
        genesis_path,
        nodes,
    })
}

/// Async worker threads for each of `nodes` nodes sharing this machine: the cores split between them, at least
/// one each.
pub fn threads_per_node(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    (cores / nodes.max(1)).max(1)
}

/// Writes a node's folder under `dir`: a new key, free loopback ports, and a `config.toml` (validator, no L1).
fn write_node(
    dir: &Path,
    name: &str,
    pubsub: PubSub,
    worker_threads: usize,
) -> Result<(DevnetNode, NodeKey), NodeError> {
    let ndir = dir.join(name);
    std::fs::create_dir_all(&ndir)?;
    let key = NodeKey::generate();
    key.save(&ndir.join("node_key.toml"))?;
    let p2p_addr = format!("/ip4/127.0.0.1/tcp/{}", free_port()?);
    let grpc_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?)
        .parse()
        .map_err(|e| NodeError::Config(format!("{e}")))?;
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?)
        .parse()
        .map_err(|e| NodeError::Config(format!("{e}")))?;
    let cfg = NodeConfig {
        moniker: name.to_string(),
        data_dir: PathBuf::from("data"),
        genesis_file: PathBuf::from("../genesis.toml"),
        key_file: PathBuf::from("node_key.toml"),
        validator: true,
        p2p: P2pSection {
            listen_addr: p2p_addr.clone(),
            pubsub,
            ..P2pSection::default()
        },
        grpc: GrpcSection::on(grpc_addr),
        mempool: MempoolSection::default(),
        storage: StorageSection::default(),
        runtime: RuntimeSection { worker_threads },
        verify: VerifySection {
            threads: worker_threads,
            ..VerifySection::default()
        },
        sync: SyncSection::default(),
        metrics: MetricsSection {
            listen_addr: metrics_addr,
        },
        l1: None,
    };
    let config_path = ndir.join("config.toml");
    let text = toml::to_string(&cfg).map_err(|e| NodeError::Config(e.to_string()))?;
    // Written aside and renamed into place, so that a reader waiting for the file (the load harness) never reads
    // it half-written: a plain write truncates first, and an empty file once failed a harness start.
    let partial = ndir.join("config.toml.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &config_path)?;
    let node = DevnetNode {
        name: name.to_string(),
        dir: ndir,
        config_path,
        grpc_addr,
        metrics_addr,
        p2p_addr,
        peer_id: key.peer_id()?,
    };
    Ok((node, key))
}

#[cfg(test)]
mod port_tests {
    use super::*;

    /// A port one process reserved is not handed to another until the reservation is stale. (Port 19,999 lies
    /// below the range `free_port` draws from, so this test cannot take a port from a running one.)
    #[test]
    fn a_reserved_port_is_not_reserved_again_until_stale() {
        let port = 19_999;
        let path = std::env::temp_dir()
            .join("baton-ports")
            .join(port.to_string());
        let _ = std::fs::remove_file(&path);
        assert!(reserve_across_processes(port), "a free port is reserved");
        assert!(!reserve_across_processes(port), "reserved twice");
        let old =
            std::time::SystemTime::now() - PORT_RESERVED_FOR - std::time::Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(
            reserve_across_processes(port),
            "a stale reservation is taken over"
        );
        assert!(!reserve_across_processes(port), "and held again");
        std::fs::remove_file(&path).unwrap();
    }
}
