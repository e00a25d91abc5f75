//! The `baton` command line: keys, genesis, running a node, and a local devnet.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eyre::{bail, Context, Result};

use baton_consensus::context::GenesisValidator;
use baton_consensus::registry::{RollupInfo, RollupMode};
use baton_node::config::{Genesis, NodeConfig};
use baton_node::keys::NodeKey;

#[derive(Parser)]
#[command(
    name = "baton",
    version,
    about = "Baton: a shared and based sequencer network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Manage validator keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Write a genesis file with the initial validator set and rollup registry.
    Init {
        #[arg(long)]
        chain_id: String,
        /// The EIP-712 chainId bundles are signed for (pick one no other network uses).
        #[arg(long)]
        network_id: u64,
        /// A registered rollup as `ID:NAME`; repeat for each.
        #[arg(long = "rollup")]
        rollups: Vec<String>,
        /// A validator as `NAME,PUBLIC_KEY_HEX,P2P_MULTIADDR[,POWER]`; repeat for each.
        #[arg(long = "validator", required = true)]
        validators: Vec<String>,
        /// Where to write the genesis file.
        #[arg(long, default_value = "genesis.toml")]
        out: PathBuf,
    },
    /// Run a node.
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Use this key file instead of the config's `key_file` (one shared config for many nodes).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Use this moniker instead of the config's.
        #[arg(long)]
        moniker: Option<String>,
    },
    /// Write keys, a genesis and one shared node config for validators reachable at given host names
    /// (containers, Kubernetes pods): nodes listen on all interfaces and keep data in `--data-dir`.
    Testnet(baton_node::devnet::TestnetSpec),
    /// Start a local network of validator processes on loopback and show it working.
    Devnet {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Working folder (wiped at start).
        #[arg(long, default_value = ".devnet")]
        dir: PathBuf,
        #[arg(long, default_value = "baton-devnet")]
        chain_id: String,
        /// Stop after this many seconds (default: run until Ctrl-C or SIGTERM).
        #[arg(long)]
        duration_secs: Option<u64>,
        /// Bundles to round-trip (submit, then see in two rollups' streams) at start.
        #[arg(long, default_value_t = 20)]
        round_trips: usize,
        /// Also show fault tolerance: kill the last validator, keep going, restart it, watch it catch up.
        #[arg(long)]
        demo_fault: bool,
        /// Genesis target block time (default 50 ms).
        #[arg(long)]
        block_time_ms: Option<u64>,
        /// The nodes' pub-sub protocol (`p2p.pubsub`).
        #[arg(long, value_enum, default_value_t = baton_node::config::PubSub::Broadcast)]
        pubsub: baton_node::config::PubSub,
        /// SIGKILL the last N validators once the first block is decided and keep them down (to measure a
        /// degraded network).
        #[arg(long, default_value_t = 0)]
        down: usize,
        /// Post an L1 commitment every N heights to a local anvil the devnet starts (0: no L1).
        #[arg(long, default_value_t = 10)]
        l1_commit_every: u64,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a new Ed25519 validator key.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a key file's public key, address and peer id.
    Show {
        #[arg(long)]
        key: PathBuf,
    },
}

fn init_tracing() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn parse_validator(s: &str) -> Result<GenesisValidator> {
    let parts: Vec<&str> = s.split(',').collect();
    if !(3..=4).contains(&parts.len()) {
        bail!("--validator `{s}`: expected NAME,PUBLIC_KEY_HEX,P2P_MULTIADDR[,POWER]");
    }
    let voting_power = match parts.get(3) {
        Some(p) => p
            .parse()
            .with_context(|| format!("--validator `{s}`: POWER must be an integer"))?,
        None => 1,
    };
    Ok(GenesisValidator {
        name: parts[0].to_string(),
        public_key: parts[1].to_string(),
        p2p_addr: parts[2].to_string(),
        voting_power,
        attester: None,
    })
}

fn parse_rollup(s: &str) -> Result<RollupInfo> {
    let Some((id, name)) = s.split_once(':') else {
        bail!("--rollup `{s}`: expected ID:NAME");
    };
    Ok(RollupInfo {
        id: id
            .parse()
            .with_context(|| format!("--rollup `{s}`: ID must be an integer"))?,
        name: name.to_string(),
        mode: RollupMode::Shared,
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keys {
            command: KeysCommand::Generate { out },
        } => {
            let key = NodeKey::generate();
            key.save(&out)?;
            println!("wrote {}", out.display());
            println!("public_key = {}", key.public_key_hex());
            println!("address    = {}", key.address());
            println!("peer_id    = {}", key.peer_id()?);
        }
        Command::Keys {
            command: KeysCommand::Show { key },
        } => {
            let key = NodeKey::load(&key)?;
            println!("public_key = {}", key.public_key_hex());
            println!("address    = {}", key.address());
            println!("peer_id    = {}", key.peer_id()?);
        }
        Command::Init {
            chain_id,
            network_id,
            rollups,
            validators,
            out,
        } => {
            let validators = validators
                .iter()
                .map(|v| parse_validator(v))
                .collect::<Result<Vec<_>>>()?;
            let rollups = rollups
                .iter()
                .map(|r| parse_rollup(r))
                .collect::<Result<Vec<_>>>()?;
            let genesis = Genesis {
                chain_id,
                network_id,
                params: Default::default(),
                rollups,
                validators,
                l1: None,
            };
            genesis.validate()?;
            if out.exists() {
                bail!(
                    "{} exists; refusing to overwrite a genesis file",
                    out.display()
                );
            }
            std::fs::write(&out, toml::to_string(&genesis)?)?;
            println!("wrote {} (genesis hash {})", out.display(), genesis.hash()?);
        }
        Command::Run {
            config,
            key_file,
            moniker,
        } => {
            init_tracing();
            let mut cfg = NodeConfig::load(&config)?;
            if let Some(k) = key_file {
                cfg.key_file = k;
            }
            if let Some(m) = moniker {
                cfg.moniker = m;
            }
            cfg.validate()?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let shutdown = async {
                    use tokio::signal::unix::{signal, SignalKind};
                    match (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) {
                        (Ok(mut t), Ok(mut i)) => {
                            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
                        }
                        _ => std::future::pending::<()>().await,
                    }
                };
                baton_node::node::run(cfg, shutdown).await
            })?;
        }
        Command::Testnet(spec) => {
            baton_node::devnet::prepare_testnet(&spec)?;
            println!(
                "wrote {0}/genesis.toml, {0}/config.toml and {0}/keys/node0..{1}.toml",
                spec.out.display(),
                spec.validators - 1
            );
        }
        Command::Devnet {
            validators,
            dir,
            chain_id,
            duration_secs,
            round_trips,
            demo_fault,
            block_time_ms,
            pubsub,
            down,
            l1_commit_every,
        } => {
            if validators == 0 || validators > 32 {
                bail!("--validators must be 1..=32");
            }
            if down * 3 >= validators {
                bail!("--down {down} of {validators} validators: the rest could not decide (fewer than 2/3 left)");
            }
            if down > 0 && demo_fault {
                bail!("--down and --demo-fault both stop validators; pick one");
            }
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(baton_node::devnet::run(baton_node::devnet::DevnetOptions {
                validators,
                dir,
                chain_id,
                duration: duration_secs.map(Duration::from_secs),
                demo_round_trips: round_trips,
                demo_fault,
                block_time_ms,
                pubsub,
                down,
                l1_commit_every: (l1_commit_every > 0).then_some(l1_commit_every),
            }))?;
        }
    }
    Ok(())
}
