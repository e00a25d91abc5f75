//! `baton devnet`: a local network of validator processes on free loopback ports.
//!
//! [`prepare`] writes keys, a genesis and one config per node into a folder; [`NodeProcess`] starts and stops the
//! real `baton run` binary. The CLI and the cluster tests use both, so the tests exercise what users run.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use baton_consensus::bundle::UnsignedBundle;
use baton_consensus::context::GenesisValidator;
use baton_consensus::params::ConsensusParams;
use baton_consensus::registry::{RollupInfo, RollupMode};
use baton_consensus::types::BundleEntry;
use baton_proto::client::{sign_bundle, BatchVerifier, BundleStatus};

use crate::config::{
    Genesis, GrpcSection, MempoolSection, MetricsSection, NodeConfig, P2pSection, PubSub,
    RuntimeSection, StorageSection, SyncSection, VerifySection,
};
use crate::error::NodeError;
use crate::keys::NodeKey;

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

/// A free TCP port on 127.0.0.1 for a node to listen on, never the same twice in this process.
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
            return Ok(port);
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
    std::fs::write(&config_path, text)?;
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

/// A running `baton run` child process. Dropping it kills the process.
#[derive(Debug)]
pub struct NodeProcess {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl NodeProcess {
    /// Starts `bin run --config <node config>`, appending output to `<node dir>/node.log`.
    pub fn start(bin: &Path, node: &DevnetNode) -> Result<Self, NodeError> {
        let log_path = node.dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&node.config_path)
            .env(
                "RUST_LOG",
                std::env::var("BATON_NODE_LOG")
                    .unwrap_or_else(|_| crate::DEFAULT_LOG_FILTER.into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(NodeProcess {
            child: Some(child),
            log_path,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// SIGKILL, no chance to clean up (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if the process has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options of `baton devnet`.
#[derive(Clone, Debug)]
pub struct DevnetOptions {
    pub validators: usize,
    pub dir: PathBuf,
    pub chain_id: String,
    /// Stop after this long (None: until Ctrl-C or SIGTERM).
    pub duration: Option<Duration>,
    /// Round trips to time at start.
    pub demo_round_trips: usize,
    /// After the healthy phase, SIGKILL the last validator, measure again, restart it and watch it catch up.
    pub demo_fault: bool,
    /// Genesis `block_time_ms` (None: the default).
    pub block_time_ms: Option<u64>,
    /// Genesis `max_idle_ms` (None: the default).
    pub max_idle_ms: Option<u64>,
    /// The nodes' `p2p.pubsub`.
    pub pubsub: PubSub,
    /// SIGKILL this many validators (the last ones) once the first block is decided and keep them down.
    pub down: usize,
    /// Start a local L1 (anvil), deploy Baton's contracts, and have node 0 post a commitment every
    /// `commit_every` heights (None: no L1).
    pub l1_commit_every: Option<u64>,
    /// Node config settings for every validator (`KEY=VALUE`, see [`NodeConfig::with_settings`]).
    pub settings: Vec<String>,
}

/// The devnet's L1, kept alive while the devnet runs (anvil stops when this is dropped).
struct DevnetL1Running {
    anvil: alloy::node_bindings::AnvilInstance,
    contract: baton_l1_inclusion::contracts::BatonCommitments::BatonCommitmentsInstance<
        alloy::providers::DynProvider,
    >,
    inbox: alloy_primitives::Address,
    /// The based rollup registered for the demo.
    based_rollup: u64,
    /// The staking contract the validator set follows.
    staking: alloy_primitives::Address,
}

impl DevnetL1Running {
    async fn latest(&self) -> String {
        match self.contract.latestHeight().call().await {
            Ok(h) => h.to_string(),
            Err(_) => "?".into(),
        }
    }
}

/// Runs `baton devnet`: prepare, start, show it working, stop cleanly on Ctrl-C / SIGTERM.
pub async fn run(opts: DevnetOptions) -> Result<(), NodeError> {
    use tokio::signal::unix::{signal, SignalKind};

    if opts.dir.exists() {
        std::fs::remove_dir_all(&opts.dir)?;
    }
    let mut params = ConsensusParams::default();
    if let Some(ms) = opts.block_time_ms {
        params.block_time_ms = ms;
    }
    if let Some(ms) = opts.max_idle_ms {
        params.max_idle_ms = ms;
    }
    params.validate()?;
    let mut net = prepare(
        &opts.dir,
        opts.validators,
        &opts.chain_id,
        params,
        opts.pubsub,
    )?;
    if !opts.settings.is_empty() {
        for n in &net.nodes {
            let cfg: NodeConfig = toml::from_str(&std::fs::read_to_string(&n.config_path)?)
                .map_err(|e| NodeError::Config(e.to_string()))?;
            let cfg = cfg.with_settings(&opts.settings)?;
            let text = toml::to_string(&cfg).map_err(|e| NodeError::Config(e.to_string()))?;
            std::fs::write(&n.config_path, text)?;
        }
    }
    let l1 = match opts.l1_commit_every {
        Some(commit_every) => Some(start_l1(&mut net, commit_every).await?),
        None => None,
    };
    let bin = std::env::current_exe()?;
    let mut procs = Vec::new();
    for n in &net.nodes {
        procs.push(NodeProcess::start(&bin, n)?);
    }
    println!(
        "baton devnet: {} validators, chain `{}`, files in {}",
        net.nodes.len(),
        opts.chain_id,
        net.dir.display()
    );
    println!(
        "{:<7} {:<24} {:<38} {:<32} log",
        "node", "gRPC endpoint", "metrics", "p2p"
    );
    for (n, p) in net.nodes.iter().zip(&procs) {
        println!(
            "{:<7} {:<24} {:<38} {:<32} {}",
            n.name,
            n.grpc_url(),
            format!("http://{}/metrics", n.metrics_addr),
            n.p2p_addr,
            p.log_path.display()
        );
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // A devnet started by another program (the load harness) stops if that program dies without stopping it.
    let parent = std::os::unix::process::parent_id();
    let orphaned = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if std::os::unix::process::parent_id() != parent {
                return;
            }
        }
    };
    let result = tokio::select! {
        r = show(&net, &mut procs, &opts, l1.as_ref()) => r,
        _ = term.recv() => { println!("SIGTERM: stopping"); Ok(()) }
        _ = int.recv() => { println!("Ctrl-C: stopping"); Ok(()) }
        _ = orphaned => { println!("parent process gone: stopping"); Ok(()) }
    };
    for p in procs.iter_mut() {
        p.terminate(Duration::from_secs(10));
    }
    println!("all nodes stopped");
    result
}

/// Starts anvil (a block per second), deploys the contracts and writes the L1 settings of every node.
async fn start_l1(net: &mut Devnet, commit_every: u64) -> Result<DevnetL1Running, NodeError> {
    use alloy::providers::{Provider, ProviderBuilder};
    let anvil = baton_l1_inclusion::anvil::LocalL1 {
        block_time_secs: Some(1),
        ..Default::default()
    }
    .spawn()
    .map_err(|e| NodeError::Config(e.to_string()))?;
    // A based rollup beside the shared ones, and node 0 forwarding its bundles to the inbox.
    let based_rollup = net.genesis.rollups.iter().map(|r| r.id).max().unwrap_or(0) + 1;
    net.genesis.rollups.push(RollupInfo {
        id: based_rollup,
        name: "based-demo".into(),
        mode: RollupMode::Based,
        allowed_senders: Vec::new(),
    });
    let mut settings = DevnetL1::local(&anvil, commit_every);
    settings.forwarder = Some(anvil.keys()[2].clone().into());
    settings.staking = Some(DevnetStaking {
        epoch_length: DEVNET_EPOCH,
        ..Default::default()
    });
    let deployment = attach_l1(net, &settings).await?;
    let staking = net
        .genesis
        .l1
        .as_ref()
        .and_then(|g| g.staking_address().ok().flatten())
        .ok_or_else(|| NodeError::Config("the devnet's genesis lacks [l1] staking".into()))?;
    println!(
        "L1: anvil at {} (chain id {}), commitments {:#x}, inbox {:#x}, staking {staking:#x}; node0 posts every \
         {commit_every} heights; the validator set follows L1 stake every {DEVNET_EPOCH} heights",
        anvil.endpoint(),
        anvil.chain_id(),
        deployment.commitments,
        deployment.inbox
    );
    let provider = ProviderBuilder::new()
        .connect_http(anvil.endpoint_url())
        .erased();
    let contract =
        baton_l1_inclusion::contracts::BatonCommitments::new(deployment.commitments, provider);
    Ok(DevnetL1Running {
        anvil,
        contract,
        inbox: deployment.inbox,
        based_rollup,
        staking,
    })
}

/// Heights per epoch on the devnet.
const DEVNET_EPOCH: u64 = 100;

/// Shows the set following stake: a new node's registration refused while the allowlist is on, governance
/// opening registration, the node staking, starting as a full node, joining the set at the next epoch and
/// signing certificates.
async fn staking_demo(
    net: &Devnet,
    l1: &DevnetL1Running,
    procs: &mut Vec<NodeProcess>,
    clients: &mut [baton_proto::client::BatonClient],
) -> Result<(), NodeError> {
    use crate::validator::StakingClient;
    use alloy_primitives::U256;
    let endpoint = l1.anvil.endpoint();
    let (node, key, attester) = prepare_joiner(net, &endpoint)?;
    let owner: PrivateKeySigner = l1.anvil.keys()[4].clone().into();
    let stake = StakingClient::new(&endpoint, l1.staking, Some(owner))?;
    match stake.register(&key, &attester, U256::from(ETHER)).await {
        Err(e) => println!(
            "staking: {} tries to register while the allowlist is on: {e}",
            node.name
        ),
        Ok(_) => {
            return Err(NodeError::Engine(
                "a key that is not allowlisted registered".into(),
            ))
        }
    }
    let deployer: PrivateKeySigner = l1.anvil.keys()[0].clone().into();
    let governance = StakingClient::new(&endpoint, l1.staking, Some(deployer))?;
    let scheduled = governance.schedule_open_registration().await?;
    println!(
        "staking: governance scheduled opening registration in L1 block {} (executable from L1 time {}, after the \
         devnet's {DEVNET_GOVERNANCE_DELAY_SECS} s governance delay)",
        scheduled.block, scheduled.executable_at
    );
    governance
        .wait_for_l1_time(scheduled.executable_at, Duration::from_secs(60))
        .await?;
    let block = governance.execute_open_registration().await?;
    println!("staking: registration opened to anyone in L1 block {block}");
    let t = Instant::now();
    let block = stake.register(&key, &attester, U256::from(ETHER)).await?;
    println!(
        "staking: {} ({}) staked 1 ETH in L1 block {block}; starting it as a full node",
        node.name,
        key.address()
    );
    procs.push(NodeProcess::start(&std::env::current_exe()?, &node)?);
    let mut joiner = loop {
        match baton_proto::client::BatonClient::connect(node.grpc_url()).await {
            Ok(c) => break c,
            Err(_) if t.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => {
                return Err(NodeError::Engine(format!(
                    "{} did not start: {e}",
                    node.name
                )))
            }
        }
    };
    let status = loop {
        if let Ok(s) = joiner.status().await {
            if s.in_validator_set {
                break s;
            }
        }
        if t.elapsed() > Duration::from_secs(180) {
            return Err(NodeError::Engine(format!(
                "{} did not join the set within 180 s",
                node.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, set) = joiner.validator_set(0).await.map_err(client_err)?;
    println!(
        "staking: {} joined the set at epoch {} ({} validators, {} heights per epoch), {:.1} s after staking",
        node.name,
        status.epoch,
        set.validators().len(),
        status.epoch_length,
        t.elapsed().as_secs_f64()
    );
    let from = status.latest_height + 1;
    for h in from..from + 200 {
        let _ = joiner_wait(&mut clients[0], h).await;
        let wire = clients[0]
            .get_batch_with_proof(1, h)
            .await
            .map_err(client_err)?;
        let signed = wire
            .proof
            .map(baton_proto::convert::parse_batch_proof)
            .transpose()
            .map_err(|e| NodeError::Engine(e.to_string()))?
            .is_some_and(|(_, cert)| cert.signatures.iter().any(|(a, _)| *a == key.address()));
        if signed {
            println!(
                "staking: {}'s precommit is in the certificate of height {h}",
                node.name
            );
            let target = alloy_primitives::B256::from(set.hash().0);
            let t = Instant::now();
            while l1.contract.validatorSetHash().call().await.ok() != Some(target) {
                if t.elapsed() > Duration::from_secs(60) {
                    return Err(NodeError::Engine(
                        "BatonCommitments did not rotate to the new set within 60 s".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            println!(
                "staking: BatonCommitments rotated to the {}-validator set by the commitment of epoch {}'s last \
                 block; L1 commitments go on (latest {})",
                set.validators().len(),
                status.epoch - 1,
                l1.latest().await
            );
            return Ok(());
        }
    }
    Err(NodeError::Engine(format!(
        "{} signed none of the 200 certificates after joining",
        node.name
    )))
}

/// Waits until `client` has decided `height` (at most 30 s).
async fn joiner_wait(
    client: &mut baton_proto::client::BatonClient,
    height: u64,
) -> Result<(), NodeError> {
    let t = Instant::now();
    while client.status().await.map_err(client_err)?.latest_height < height {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(NodeError::Engine(format!(
                "height {height} not decided within 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn connect_all(net: &Devnet) -> Result<Vec<baton_proto::client::BatonClient>, NodeError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut clients = Vec::new();
    for n in &net.nodes {
        loop {
            match baton_proto::client::BatonClient::connect(n.grpc_url()).await {
                Ok(c) => {
                    clients.push(c);
                    break;
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(NodeError::Engine(format!(
                        "{} did not open its gRPC port: {e}",
                        n.name
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(clients)
}

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
) -> Result<Vec<baton_consensus::types::Bundle>, NodeError> {
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

/// A bundle with one entry, signed by a new key (nonce 0, expiring as late as a node takes from a devnet's
/// first height: genesis `max_expiry_window`).
fn fresh_bundle(
    network_id: u64,
    rollup_id: u64,
    payload: &[u8],
) -> Result<baton_consensus::Bundle, NodeError> {
    let key = PrivateKeySigner::random();
    let unsigned = UnsignedBundle {
        network_id,
        sender: key.address(),
        nonce: 0,
        expiry_height: ConsensusParams::default().max_expiry_window,
        entries: vec![BundleEntry {
            rollup_id,
            payload: payload.to_vec(),
        }],
    };
    sign_bundle(&key, unsigned).map_err(client_err)
}

/// Shows the L1 side working: a bundle forced in through the L1 inbox that no node was sent, included once its
/// deadline is reached; and a bundle for the based rollup, forwarded to the inbox by node 0 and served back from
/// L1.
async fn l1_demo(
    clients: &mut [baton_proto::client::BatonClient],
    l1: &DevnetL1Running,
    user: &DemoUser,
) -> Result<(), NodeError> {
    use alloy::providers::ProviderBuilder;
    use baton_l1_inclusion::contracts::BatonInbox;
    let err = |what: &str, e: &dyn std::fmt::Display| NodeError::Engine(format!("{what}: {e}"));
    // Forced inclusion: a fresh key, so its nonce is 0; the bundle goes only to L1.
    let bundle = fresh_bundle(user.network_id, 1, b"forced through the L1 inbox")?;
    let payer: PrivateKeySigner = l1.anvil.keys()[3].clone().into();
    let provider = ProviderBuilder::new()
        .wallet(alloy::network::EthereumWallet::from(payer))
        .connect_http(l1.anvil.endpoint_url());
    let inbox = BatonInbox::new(l1.inbox, provider);
    let fee = inbox
        .forcedInclusionFee()
        .call()
        .await
        .map_err(|e| err("inbox fee", &e))?;
    let t = Instant::now();
    let receipt = inbox
        .forceInclude(1, borsh::to_vec(&bundle)?.into())
        .value(fee)
        .send()
        .await
        .map_err(|e| err("forceInclude", &e))?
        .get_receipt()
        .await
        .map_err(|e| err("forceInclude receipt", &e))?;
    let deadline = receipt
        .decoded_log::<BatonInbox::ForcedInclusion>()
        .map(|l| l.deadline)
        .unwrap_or(0);
    println!(
        "forced inclusion: bundle {} queued in L1 block {} with deadline {deadline}; no node was sent it",
        bundle.hash(),
        receipt.block_number.unwrap_or(0)
    );
    let height = loop {
        if let Ok(BundleStatus::Included { height, .. }) =
            clients[0].bundle_status(&bundle.hash()).await
        {
            break height;
        }
        if t.elapsed() > Duration::from_secs(90) {
            return Err(NodeError::Engine(
                "the forced entry was not included within 90 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let header = clients[0]
        .get_batch(1, height)
        .await
        .map_err(client_err)?
        .header;
    println!(
        "forced inclusion: included at height {height}, whose L1 origin is block {} (>= deadline {deadline}), \
         {:.1} s after the L1 transaction",
        header.l1_origin.number,
        t.elapsed().as_secs_f64()
    );

    // Based rollup: submitted to node 0, which forwards it to the inbox; served back from L1.
    let rollup = l1.based_rollup;
    let bundle = fresh_bundle(user.network_id, rollup, b"ordered by L1 proposers")?;
    let mut stream = clients[0]
        .stream_based(rollup, 1)
        .await
        .map_err(client_err)?;
    let t = Instant::now();
    clients[0].submit(&bundle).await.map_err(client_err)?;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .map_err(|_| NodeError::Engine("the based bundle was not derived within 60 s".into()))?
            .map_err(client_err)?;
        match item {
            Some(baton_proto::convert::BasedItem::Batch {
                l1_block, entries, ..
            }) if entries.iter().any(|e| e.bundle_hash == bundle.hash()) => {
                println!(
                    "based rollup {rollup}: bundle forwarded to the inbox by node0 and served back from L1 block {} \
                     (safe) {:.1} s after submission",
                    l1_block.number,
                    t.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Some(_) => {}
            None => return Err(NodeError::Engine("the based stream ended".into())),
        }
    }
}

fn client_err(e: baton_proto::client::ClientError) -> NodeError {
    NodeError::Engine(e.to_string())
}

/// A demo user: an Ethereum key with its next nonce, and a verifier built from the devnet's genesis that follows
/// the chain's validator-set changes.
struct DemoUser {
    key: PrivateKeySigner,
    nonce: u64,
    network_id: u64,
    verifier: BatchVerifier,
    /// The verifier checked every height up to here.
    verified_to: u64,
}

impl DemoUser {
    /// Verifies rollup 1's batches up to `client`'s latest height, so the verifier trusts the set that decides
    /// the next one (learned from signed headers, never from the node's word).
    async fn catch_up(
        &mut self,
        client: &mut baton_proto::client::BatonClient,
    ) -> Result<(), NodeError> {
        let latest = client.status().await.map_err(client_err)?.latest_height;
        if latest <= self.verified_to {
            return Ok(());
        }
        let mut s = client
            .stream_verified_batches(1, self.verified_to + 1, self.verifier.clone())
            .await
            .map_err(client_err)?;
        while self.verified_to < latest {
            match s.next().await.map_err(client_err)? {
                Some(b) => self.verified_to = b.header.height,
                None => {
                    return Err(NodeError::Engine(
                        "the stream ended while catching up".into(),
                    ))
                }
            }
        }
        if let Some(v) = s.verifier() {
            self.verifier = v.clone();
        }
        Ok(())
    }
}

/// Submits `count` signed two-rollup bundles round-robin to the `live` nodes and times each until it is seen in
/// both rollups' verified streams on the next live node. Returns the round-trip times.
async fn round_trips(
    clients: &mut [baton_proto::client::BatonClient],
    live: &[usize],
    count: usize,
    label: &str,
    user: &mut DemoUser,
) -> Result<Vec<Duration>, NodeError> {
    let mut latencies = Vec::new();
    user.catch_up(&mut clients[live[0]]).await?;
    for i in 0..count {
        let submit_to = live[i % live.len()];
        let watch_on = live[(i + 1) % live.len()];
        let from = clients[watch_on]
            .status()
            .await
            .map_err(client_err)?
            .latest_height
            + 1;
        let mut s1 = clients[watch_on]
            .stream_verified_batches(1, from, user.verifier.clone())
            .await
            .map_err(client_err)?;
        let mut s2 = clients[watch_on]
            .stream_verified_batches(2, from, user.verifier.clone())
            .await
            .map_err(client_err)?;
        let bundle = sign_bundle(
            &user.key,
            UnsignedBundle {
                network_id: user.network_id,
                sender: user.key.address(),
                nonce: user.nonce,
                expiry_height: from + 1_000,
                entries: vec![
                    BundleEntry {
                        rollup_id: 1,
                        payload: format!("{label} hello rollup 1 #{i}").into_bytes(),
                    },
                    BundleEntry {
                        rollup_id: 2,
                        payload: format!("{label} hello rollup 2 #{i}").into_bytes(),
                    },
                ],
            },
        )
        .map_err(client_err)?;
        user.nonce += 1;
        let t0 = Instant::now();
        let hash = clients[submit_to]
            .submit(&bundle)
            .await
            .map_err(client_err)?;
        let ack = t0.elapsed();
        let mut found = [None, None];
        for (k, s) in [&mut s1, &mut s2].into_iter().enumerate() {
            while found[k].is_none() {
                match tokio::time::timeout(Duration::from_secs(30), s.next()).await {
                    Ok(Ok(Some(b))) if b.entries.iter().any(|e| e.bundle_hash == hash) => {
                        found[k] = Some(b.header.height)
                    }
                    Ok(Ok(Some(_))) => {}
                    _ => break,
                }
            }
        }
        let rtt = t0.elapsed();
        let [Some(h1), Some(h2)] = found else {
            return Err(NodeError::Engine(format!(
                "bundle {hash} did not show up in both streams within 30 s"
            )));
        };
        latencies.push(rtt);
        if i < 2 {
            println!(
                "  bundle {} -> node{submit_to} (ack {:.1} ms) -> in rollups 1 and 2 on node{watch_on} at height \
                 {h1}/{h2}, proofs verified: {:.1} ms",
                &hash.to_hex()[..12],
                ack.as_secs_f64() * 1e3,
                rtt.as_secs_f64() * 1e3
            );
        }
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if let (Some(first), Some(last)) = (latencies.first(), latencies.last()) {
        println!(
            "{label}: bundle round trip (submit -> seen in both rollups' streams) over {} bundles: min {:.1} ms, \
             p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
            latencies.len(),
            ms(*first),
            ms(latencies[latencies.len() / 2]),
            ms(latencies[latencies.len() * 9 / 10]),
            ms(*last)
        );
    }
    Ok(latencies)
}

/// Prints every node's height each 2 s for `secs` seconds (forever if None) and returns the last rate.
async fn watch_heights(
    clients: &mut [baton_proto::client::BatonClient],
    procs: &mut [NodeProcess],
    l1: Option<&DevnetL1Running>,
    secs: Option<u64>,
    label: &str,
) -> f64 {
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let mut rate = 0.0;
    loop {
        let mut heights = Vec::new();
        for (i, c) in clients.iter_mut().enumerate() {
            if procs[i].exited() {
                heights.push("down".to_string());
                continue;
            }
            match c.status().await {
                Ok(s) => heights.push(s.latest_height.to_string()),
                Err(_) => heights.push("?".into()),
            }
        }
        let top = heights
            .iter()
            .filter_map(|h| h.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let on_l1 = match l1 {
            Some(l1) => format!("  L1 commitment at height {}", l1.latest().await),
            None => String::new(),
        };
        match first {
            Some((t, h)) => {
                rate = (top - h) as f64 / t.elapsed().as_secs_f64();
                println!(
                    "{label}: heights [{}]  {rate:.1} heights/s since the phase began{on_l1}",
                    heights.join(", ")
                );
            }
            None => {
                println!("{label}: heights [{}]{on_l1}", heights.join(", "));
                first = Some((Instant::now(), top));
            }
        }
        if secs.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            return rate;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn show(
    net: &Devnet,
    procs: &mut Vec<NodeProcess>,
    opts: &DevnetOptions,
    l1: Option<&DevnetL1Running>,
) -> Result<(), NodeError> {
    let mut clients = connect_all(net).await?;
    let started = Instant::now();
    loop {
        let s = clients[0].status().await.map_err(client_err)?;
        if s.latest_height >= 1 {
            println!(
                "first block decided {:.1} s after start",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(NodeError::Engine(
                "no block decided within 60 s; see the node logs".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_down = clients.len().saturating_sub(opts.down);
    for (victim, p) in procs.iter_mut().enumerate().skip(first_down) {
        p.kill();
        println!("node{victim} stopped (SIGKILL) and kept down");
    }
    let all: Vec<usize> = (0..first_down).collect();
    let key = PrivateKeySigner::random();
    println!(
        "demo user {} signs bundles (EIP-712, network id {:#x}); batches are verified against the genesis \
         validator set",
        key.address(),
        net.genesis.network_id
    );
    let mut user = DemoUser {
        key,
        nonce: 0,
        network_id: net.genesis.network_id,
        verifier: BatchVerifier::new(net.genesis.validator_set()?, &net.genesis.chain_id),
        verified_to: 0,
    };
    if opts.demo_round_trips > 0 {
        round_trips(
            &mut clients,
            &all,
            opts.demo_round_trips,
            "healthy",
            &mut user,
        )
        .await?;
    }
    if let Some(l1) = l1 {
        l1_demo(&mut clients, l1, &user).await?;
        staking_demo(net, l1, procs, &mut clients).await?;
    }
    if opts.demo_fault && clients.len() >= 4 {
        watch_heights(&mut clients, procs, l1, Some(10), "healthy").await;
        let victim = clients.len() - 1;
        println!("killing node{victim} (SIGKILL)");
        procs[victim].kill();
        let live: Vec<usize> = (0..victim).collect();
        watch_heights(
            &mut clients,
            procs,
            l1,
            Some(10),
            &format!("node{victim} down"),
        )
        .await;
        if opts.demo_round_trips > 0 {
            round_trips(
                &mut clients,
                &live,
                opts.demo_round_trips,
                &format!("node{victim} down"),
                &mut user,
            )
            .await?;
        }
        println!("restarting node{victim}");
        let bin = std::env::current_exe()?;
        procs[victim] = NodeProcess::start(&bin, &net.nodes[victim])?;
        let t = Instant::now();
        let target = clients[0].status().await.map_err(client_err)?.latest_height;
        loop {
            if let Ok(mut c) =
                baton_proto::client::BatonClient::connect(net.nodes[victim].grpc_url()).await
            {
                if let Ok(s) = c.status().await {
                    if s.latest_height >= target {
                        println!(
                            "node{victim} caught up to height {target} in {:.1} s after restart",
                            t.elapsed().as_secs_f64()
                        );
                        clients[victim] = c;
                        break;
                    }
                }
            }
            if t.elapsed() > Duration::from_secs(120) {
                return Err(NodeError::Engine(format!(
                    "node{victim} did not catch up within 120 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let remaining = opts
        .duration
        .map(|d| d.saturating_sub(started.elapsed()).as_secs());
    if remaining == Some(0) {
        return Ok(());
    }
    if remaining.is_none() {
        println!("heights every 2 s (Ctrl-C to stop):");
    }
    watch_heights(&mut clients, procs, l1, remaining, "running").await;
    Ok(())
}
