//! The `baton` command line: keys, genesis, running a node, and a local devnet.

mod demo;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eyre::{bail, Context, Result};

use baton_consensus::registry::{RollupInfo, RollupMode};
use baton_consensus::validators::GenesisValidator;
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
    /// Stake as a validator on L1 (`BatonStaking`), see where a key stands, leave, withdraw.
    Validator {
        #[command(subcommand)]
        command: ValidatorCommand,
    },
    /// Governance of the staking contract in the permissioned phase: allowlist keys and open registration to
    /// anyone (both timelocked: scheduled, then executed after the contract's governance delay), disallow keys and
    /// remove validators (immediate).
    Governance {
        #[command(subcommand)]
        command: GovernanceCommand,
    },
    /// Write keys, a genesis and one shared node config for validators reachable at given host names
    /// (containers, Kubernetes pods): nodes listen on all interfaces and keep data in `--data-dir`.
    Testnet(baton_node::devnet::TestnetSpec),
    /// Run one validator of the engine floor (a benchmark baseline; see `baton_node::floor`).
    EngineFloor(FloorArgs),
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
        /// Genesis `block_time_ms`: the least time between blocks while bundles wait (default 10 ms).
        #[arg(long)]
        block_time_ms: Option<u64>,
        /// Genesis `max_idle_ms`: how long a proposer waits with nothing to include (default 500 ms).
        #[arg(long)]
        max_idle_ms: Option<u64>,
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
        /// A node config setting for every validator, as a dotted path and a TOML value, e.g.
        /// `--set mempool.gossip_flush_ms=20` (repeatable; checked like a config file).
        #[arg(long, value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// One validator of the engine floor (`baton_node::floor`): the Malachite engine as nodes run it, with no
/// storage, gRPC or bundles around it. `baton-loadtest --engine-only` starts one per validator and measures them.
#[derive(clap::Args)]
struct FloorArgs {
    /// This validator (0-based).
    #[arg(long)]
    index: usize,
    /// Every validator's p2p port on 127.0.0.1, comma-separated, in index order.
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<u16>,
    /// The seed of the validators' keys (the same for every validator of a run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Filler bytes per proposal, nobody checks them (0: a header only).
    #[arg(long, default_value_t = 0)]
    value_bytes: usize,
    /// Least milliseconds from a decision to the next proposal (0: at once).
    #[arg(long, default_value_t = 0)]
    block_time_ms: u64,
    /// Where the engine's write-ahead log goes.
    #[arg(long, default_value = ".engine-floor")]
    dir: PathBuf,
    /// The pub-sub protocol (as `p2p.pubsub`).
    #[arg(long, value_enum, default_value_t = baton_node::config::PubSub::Broadcast)]
    pubsub: baton_node::config::PubSub,
    /// Tokio worker threads (default: the cores split between the validators, as the devnet does).
    #[arg(long)]
    worker_threads: Option<usize>,
}

/// Where the staking contract is and who pays.
#[derive(clap::Args)]
struct StakingArgs {
    /// The L1 JSON-RPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    l1_rpc: String,
    /// The `BatonStaking` contract (genesis `[l1] staking`).
    #[arg(long)]
    staking: String,
    /// The node's consensus key file (from `baton keys generate`).
    #[arg(long)]
    key: PathBuf,
    /// The L1 account that owns the stake (hex secp256k1 key file): pays when registering, receives on withdraw.
    #[arg(long)]
    l1_key: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ValidatorCommand {
    /// Register the node's consensus key with stake; it joins the set at the first epoch whose set is computed
    /// from an L1 block including this registration (if its stake ranks high enough).
    Register {
        #[command(flatten)]
        l1: StakingArgs,
        /// Stake in ETH (e.g. `3` or `2.5`).
        #[arg(long)]
        stake: String,
        /// The key file of the L1 account that signs this validator's attestations (its `[l1]
        /// attestation_key_file`): it signs its agreement to serve this consensus key, which the contract
        /// requires (an attester serves one key only). The consensus key (`--key`) signs the registration too
        /// (proof of possession; nodes ignore a registration without it).
        #[arg(long)]
        attester_key: PathBuf,
    },
    /// Add stake to a registered key.
    Increase {
        #[command(flatten)]
        l1: StakingArgs,
        #[arg(long)]
        stake: String,
    },
    /// Where a key stands: its stake on L1, and (with `--grpc`) whether the node sees it in the set.
    Status {
        #[command(flatten)]
        l1: StakingArgs,
        /// A node's gRPC endpoint, to show the current epoch and set.
        #[arg(long)]
        grpc: Option<String>,
    },
    /// Ask to leave: the key is out of the set from the next epoch computed after this L1 block.
    Exit {
        #[command(flatten)]
        l1: StakingArgs,
    },
    /// Withdraw the stake to its owner once the exit delay is over.
    Withdraw {
        #[command(flatten)]
        l1: StakingArgs,
    },
}

/// The staking contract and the governance key.
#[derive(clap::Args)]
struct GovernanceArgs {
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    l1_rpc: String,
    #[arg(long)]
    staking: String,
    /// The governance address's key (hex secp256k1 key file).
    #[arg(long)]
    l1_key: PathBuf,
}

#[derive(Subcommand)]
enum GovernanceCommand {
    /// Schedule letting a consensus key register while the allowlist is on (it takes effect after the
    /// contract's governance delay: run again with `--execute` then); `--cancel` takes a scheduled one back;
    /// `--revoke` takes the key off the allowlist at once.
    Allow {
        #[command(flatten)]
        l1: GovernanceArgs,
        /// The validator's Ed25519 public key (hex, from `baton keys show`).
        #[arg(long)]
        public_key: String,
        /// The L1 address that alone may register the key (its stake's owner): binding it keeps anyone else from
        /// front-running the registration. Required to schedule.
        #[arg(long, required_unless_present_any = ["execute", "cancel", "revoke"])]
        owner: Option<String>,
        /// Execute the scheduled allowlisting (once the delay is over).
        #[arg(long, conflicts_with_all = ["cancel", "revoke"])]
        execute: bool,
        /// Cancel the scheduled allowlisting.
        #[arg(long, conflicts_with = "revoke")]
        cancel: bool,
        /// Take the key off the allowlist now (also cancels a scheduled allowlisting).
        #[arg(long)]
        revoke: bool,
    },
    /// Remove a validator from the next set at once (permissioned phase only; its owner withdraws after the exit
    /// delay).
    Remove {
        #[command(flatten)]
        l1: GovernanceArgs,
        #[arg(long)]
        public_key: String,
    },
    /// Schedule opening registration to anyone (irreversible once executed; ends the permissioned phase); run
    /// again with `--execute` after the governance delay, or `--cancel`.
    OpenRegistration {
        #[command(flatten)]
        l1: GovernanceArgs,
        /// Execute the scheduled opening (once the delay is over).
        #[arg(long, conflicts_with = "cancel")]
        execute: bool,
        /// Cancel the scheduled opening.
        #[arg(long)]
        cancel: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a new Ed25519 validator key (and, with `--attester-out`, an L1 attestation key).
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// Also write a new secp256k1 L1 key here (hex), for `[l1] attestation_key_file`.
        #[arg(long)]
        attester_out: Option<PathBuf>,
    },
    /// Show a key file's public key, address and peer id.
    Show {
        #[arg(long)]
        key: PathBuf,
    },
}

/// Logs with `RUST_LOG` (default [`baton_node::DEFAULT_LOG_FILTER`]) to stdout, or to stderr for commands whose
/// stdout a program reads (`engine-floor`).
fn init_tracing(to_stderr: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| baton_node::DEFAULT_LOG_FILTER.into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if to_stderr {
        fmt.with_writer(std::io::stderr).init();
    } else {
        fmt.init();
    }
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
        allowed_senders: Vec::new(),
    })
}

fn staking_client(
    a: &StakingArgs,
) -> Result<(baton_node::validator::StakingClient, alloy_primitives::B256)> {
    use baton_node::validator::{consensus_key, StakingClient};
    let contract = a
        .staking
        .parse()
        .with_context(|| format!("--staking `{}` is not an address", a.staking))?;
    let owner = a
        .l1_key
        .as_deref()
        .map(baton_node::l1::load_l1_key)
        .transpose()?;
    let key = NodeKey::load(&a.key)?;
    Ok((
        StakingClient::new(&a.l1_rpc, contract, owner)?,
        consensus_key(&key),
    ))
}

fn governance_client(a: &GovernanceArgs) -> Result<baton_node::validator::StakingClient> {
    let contract = a
        .staking
        .parse()
        .with_context(|| format!("--staking `{}` is not an address", a.staking))?;
    let key = baton_node::l1::load_l1_key(&a.l1_key)?;
    Ok(baton_node::validator::StakingClient::new(
        &a.l1_rpc,
        contract,
        Some(key),
    )?)
}

fn public_key_arg(s: &str) -> Result<alloy_primitives::B256> {
    let bytes = hex::decode(s.trim_start_matches("0x"))
        .with_context(|| format!("--public-key `{s}` is not hex"))?;
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| eyre::eyre!("--public-key must be 32 bytes, got {}", bytes.len()))?;
    ed25519_consensus::VerificationKey::try_from(key)
        .map_err(|e| eyre::eyre!("--public-key is not an Ed25519 key: {e}"))?;
    Ok(alloy_primitives::B256::from(key))
}

/// What to print after scheduling a governance change.
fn scheduled_note(
    what: &str,
    s: &baton_node::validator::Scheduled,
    now: u64,
    execute: &str,
) -> String {
    format!(
        "{what} scheduled in L1 block {} (change id {}): executable from L1 time {} ({} s from now); then run \
         `{execute}` (anyone may), or `--cancel` it before",
        s.block,
        s.id,
        s.executable_at,
        s.executable_at.saturating_sub(now)
    )
}

async fn governance_command(command: GovernanceCommand) -> Result<()> {
    match command {
        GovernanceCommand::Allow {
            l1,
            public_key,
            owner,
            execute,
            cancel,
            revoke,
        } => {
            let key = public_key_arg(&public_key)?;
            let client = governance_client(&l1)?;
            if revoke {
                let block = client.disallow(key).await?;
                println!("{key} no longer allowlisted (L1 block {block})");
            } else if cancel {
                let block = client.cancel_allowlist(key).await?;
                println!("the allowlisting of {key} is cancelled (L1 block {block})");
            } else if execute {
                let block = client.execute_allowlist(key).await?;
                println!("{key} allowlisted (L1 block {block})");
            } else {
                let owner = owner.unwrap_or_default();
                let owner = owner
                    .parse()
                    .with_context(|| format!("--owner `{owner}` is not an address"))?;
                let s = client.schedule_allowlist(key, owner).await?;
                let now = client.l1_time().await?;
                println!(
                    "{}",
                    scheduled_note(
                        &format!("allowlisting {key}"),
                        &s,
                        now,
                        "baton governance allow --execute ..."
                    )
                );
            }
        }
        GovernanceCommand::Remove { l1, public_key } => {
            let key = public_key_arg(&public_key)?;
            let block = governance_client(&l1)?.remove(key).await?;
            println!("{key} removed in L1 block {block}: out of the set from the next epoch computed after it");
        }
        GovernanceCommand::OpenRegistration {
            l1,
            execute,
            cancel,
        } => {
            let client = governance_client(&l1)?;
            if cancel {
                let block = client.cancel_open_registration().await?;
                println!("opening registration is cancelled (L1 block {block})");
            } else if execute {
                let block = client.execute_open_registration().await?;
                println!("registration is open to anyone from L1 block {block}");
            } else {
                let s = client.schedule_open_registration().await?;
                let now = client.l1_time().await?;
                println!(
                    "{}",
                    scheduled_note(
                        "opening registration",
                        &s,
                        now,
                        "baton governance open-registration --execute ..."
                    )
                );
            }
        }
    }
    Ok(())
}

async fn validator_command(command: ValidatorCommand) -> Result<()> {
    use baton_node::validator::{format_eth, parse_eth};
    match command {
        ValidatorCommand::Register {
            l1,
            stake,
            attester_key,
        } => {
            let (c, key) = staking_client(&l1)?;
            let node_key = NodeKey::load(&l1.key)?;
            let attester = baton_node::l1::load_l1_key(&attester_key)?;
            let amount = parse_eth(&stake)?;
            let block = c.register(&node_key, &attester, amount).await?;
            println!(
                "registered {key} with {} in L1 block {block}",
                format_eth(amount)
            );
            println!("the node joins the set at the first epoch computed from an L1 origin at or after block {block}");
        }
        ValidatorCommand::Increase { l1, stake } => {
            let (c, key) = staking_client(&l1)?;
            let amount = parse_eth(&stake)?;
            let block = c.increase(key, amount).await?;
            println!("added {} to {key} in L1 block {block}", format_eth(amount));
        }
        ValidatorCommand::Status { l1, grpc } => {
            let (c, key) = staking_client(&l1)?;
            let p = c.position(key).await?;
            println!("consensus key   {key}");
            println!("L1 block        {}", p.l1_block);
            if p.registered() {
                println!("owner           {}", p.owner);
                println!("attester        {}", p.attester);
                println!("stake           {}", format_eth(p.stake_wei));
                match p.withdrawable_at {
                    0 => println!("exit            not requested"),
                    at if at <= p.l1_block => {
                        println!("exit            requested; withdrawable now (since block {at})")
                    }
                    at => println!("exit            requested; withdrawable from L1 block {at}"),
                }
            } else {
                println!("registered      no");
                println!(
                    "registration    {}",
                    if !p.allowlist_enabled {
                        "open to anyone".to_string()
                    } else if p.allowlisted {
                        "allowlisted".to_string()
                    } else {
                        "allowlist only; this key is not allowlisted".to_string()
                    }
                );
            }
            println!("minimum stake   {}", format_eth(p.min_stake_wei));
            if let Some(endpoint) = grpc {
                let mut client = baton_proto::client::BatonClient::connect(endpoint.clone())
                    .await
                    .with_context(|| format!("cannot reach {endpoint}"))?;
                let s = client.status().await?;
                let (_, set) = client.validator_set(0).await?;
                let me = NodeKey::load(&l1.key)?.address();
                println!("node height     {}", s.latest_height);
                println!(
                    "epoch           {} ({} heights each)",
                    s.epoch, s.epoch_length
                );
                match set.get(&me) {
                    Some(v) => println!(
                        "in the set      yes: power {} of {} ({} validators)",
                        v.voting_power,
                        set.total_power(),
                        set.validators().len()
                    ),
                    None => println!("in the set      no ({} validators)", set.validators().len()),
                }
            }
        }
        ValidatorCommand::Exit { l1 } => {
            let (c, key) = staking_client(&l1)?;
            let block = c.request_exit(key).await?;
            let p = c.position(key).await?;
            println!("exit requested in L1 block {block}; out of the set from the next epoch computed after it");
            println!("withdrawable from L1 block {}", p.withdrawable_at);
        }
        ValidatorCommand::Withdraw { l1 } => {
            let (c, key) = staking_client(&l1)?;
            let before = c.position(key).await?;
            let block = c.withdraw(key).await?;
            println!(
                "withdrew {} to {} in L1 block {block}",
                format_eth(before.stake_wei),
                before.owner
            );
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Keys {
            command: KeysCommand::Generate { out, attester_out },
        } => {
            if attester_out.as_ref().is_some_and(|p| p.exists()) {
                bail!(
                    "{} exists; refusing to overwrite a key",
                    attester_out.unwrap_or_default().display()
                );
            }
            let key = NodeKey::generate();
            key.save(&out)?;
            println!("wrote {}", out.display());
            println!("public_key = {}", key.public_key_hex());
            println!("address    = {}", key.address());
            println!("peer_id    = {}", key.peer_id()?);
            if let Some(path) = attester_out {
                let l1 = alloy_signer_local::PrivateKeySigner::random();
                baton_node::keys::write_secret_file(
                    &path,
                    &format!("0x{}\n", hex::encode(l1.to_bytes())),
                )?;
                println!("wrote {}", path.display());
                println!("attester   = {}", l1.address());
            }
        }
        Command::Validator { command } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(validator_command(command))?;
        }
        Command::Governance { command } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(governance_command(command))?;
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
                epochs: None,
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
            init_tracing(false);
            let mut cfg = NodeConfig::load(&config)?;
            if let Some(k) = key_file {
                cfg.key_file = k;
            }
            if let Some(m) = moniker {
                cfg.moniker = m;
            }
            cfg.validate()?;
            let rt = cfg.runtime.build()?;
            rt.block_on(async move { baton_node::node::run(cfg, shutdown_signal()).await })?;
        }
        Command::EngineFloor(a) => {
            init_tracing(true);
            let rt = baton_node::config::RuntimeSection {
                worker_threads: a
                    .worker_threads
                    .unwrap_or_else(|| baton_node::devnet::threads_per_node(a.ports.len())),
            }
            .build()?;
            let opts = baton_node::floor::FloorOptions {
                index: a.index,
                ports: a.ports,
                seed: a.seed,
                value_bytes: a.value_bytes,
                block_time_ms: a.block_time_ms,
                dir: a.dir,
                broadcast: a.pubsub == baton_node::config::PubSub::Broadcast,
            };
            rt.block_on(baton_node::floor::run(opts, shutdown_signal()))?;
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
            max_idle_ms,
            pubsub,
            down,
            l1_commit_every,
            set,
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
            rt.block_on(demo::run(demo::DevnetOptions {
                validators,
                dir,
                chain_id,
                duration: duration_secs.map(Duration::from_secs),
                demo_round_trips: round_trips,
                demo_fault,
                block_time_ms,
                max_idle_ms,
                pubsub,
                down,
                l1_commit_every: (l1_commit_every > 0).then_some(l1_commit_every),
                settings: set,
            }))?;
        }
    }
    Ok(())
}
