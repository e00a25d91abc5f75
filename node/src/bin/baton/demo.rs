//! `baton devnet`'s narrative: prepares a local network ([`baton_node::devnet`]), starts it, and shows it
//! working (round trips with verified batches, a validator stopped and restarted, and with `--l1` forced
//! inclusion, based mode and the validator set following stake), printing what happens; stops cleanly on Ctrl-C
//! or SIGTERM.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use baton_consensus::bundle::BundleEntry;
use baton_consensus::bundle::UnsignedBundle;
use baton_consensus::params::ConsensusParams;
use baton_proto::client::{sign_bundle, BatchVerifier, BundleStatus};

use baton_consensus::registry::{RollupInfo, RollupMode};
use baton_node::config::{NodeConfig, PubSub};
use baton_node::devnet::*;

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
pub async fn run(opts: DevnetOptions) -> eyre::Result<()> {
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
                .map_err(|e| eyre::Report::msg(e.to_string()))?;
            let cfg = cfg.with_settings(&opts.settings)?;
            let text = toml::to_string(&cfg).map_err(|e| eyre::Report::msg(e.to_string()))?;
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
async fn start_l1(net: &mut Devnet, commit_every: u64) -> eyre::Result<DevnetL1Running> {
    use alloy::providers::{Provider, ProviderBuilder};
    let anvil = baton_l1_inclusion::anvil::LocalL1 {
        block_time_secs: Some(1),
        ..Default::default()
    }
    .spawn()
    .map_err(|e| eyre::Report::msg(e.to_string()))?;
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
        .ok_or_else(|| eyre::Report::msg("the devnet's genesis lacks [l1] staking"))?;
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
) -> eyre::Result<()> {
    use alloy_primitives::U256;
    use baton_node::validator::StakingClient;
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
            return Err(eyre::Report::msg(
                "a key that is not allowlisted registered",
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
                return Err(eyre::Report::msg(format!(
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
            return Err(eyre::Report::msg(format!(
                "{} did not join the set within 180 s",
                node.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, set) = joiner.validator_set(0).await.map_err(eyre::Report::from)?;
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
            .map_err(eyre::Report::from)?;
        let signed = wire
            .proof
            .map(baton_proto::convert::parse_batch_proof)
            .transpose()
            .map_err(|e| eyre::Report::msg(e.to_string()))?
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
                    return Err(eyre::Report::msg(
                        "BatonCommitments did not rotate to the new set within 60 s",
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
    Err(eyre::Report::msg(format!(
        "{} signed none of the 200 certificates after joining",
        node.name
    )))
}

/// Waits until `client` has decided `height` (at most 30 s).
async fn joiner_wait(
    client: &mut baton_proto::client::BatonClient,
    height: u64,
) -> eyre::Result<()> {
    let t = Instant::now();
    while client
        .status()
        .await
        .map_err(eyre::Report::from)?
        .latest_height
        < height
    {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(eyre::Report::msg(format!(
                "height {height} not decided within 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn connect_all(net: &Devnet) -> eyre::Result<Vec<baton_proto::client::BatonClient>> {
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
                    return Err(eyre::Report::msg(format!(
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

/// A bundle with one entry, signed by a new key (nonce 0, expiring as late as a node takes from a devnet's
/// first height: genesis `max_expiry_window`).
fn fresh_bundle(
    network_id: u64,
    rollup_id: u64,
    payload: &[u8],
) -> eyre::Result<baton_consensus::bundle::Bundle> {
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
    sign_bundle(&key, unsigned).map_err(eyre::Report::from)
}

/// Shows the L1 side working: a bundle forced in through the L1 inbox that no node was sent, included once its
/// deadline is reached; and a bundle for the based rollup, forwarded to the inbox by node 0 and served back from
/// L1.
async fn l1_demo(
    clients: &mut [baton_proto::client::BatonClient],
    l1: &DevnetL1Running,
    user: &DemoUser,
) -> eyre::Result<()> {
    use alloy::providers::ProviderBuilder;
    use baton_l1_inclusion::contracts::BatonInbox;
    let err = |what: &str, e: &dyn std::fmt::Display| eyre::Report::msg(format!("{what}: {e}"));
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
            return Err(eyre::Report::msg(
                "the forced entry was not included within 90 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let header = clients[0]
        .get_batch(1, height)
        .await
        .map_err(eyre::Report::from)?
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
        .map_err(eyre::Report::from)?;
    let t = Instant::now();
    clients[0]
        .submit(&bundle)
        .await
        .map_err(eyre::Report::from)?;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await
            .map_err(|_| eyre::Report::msg("the based bundle was not derived within 60 s"))?
            .map_err(eyre::Report::from)?;
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
            None => return Err(eyre::Report::msg("the based stream ended")),
        }
    }
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
    ) -> eyre::Result<()> {
        let latest = client
            .status()
            .await
            .map_err(eyre::Report::from)?
            .latest_height;
        if latest <= self.verified_to {
            return Ok(());
        }
        let mut s = client
            .stream_verified_batches(1, self.verified_to + 1, self.verifier.clone())
            .await
            .map_err(eyre::Report::from)?;
        while self.verified_to < latest {
            match s.next().await.map_err(eyre::Report::from)? {
                Some(b) => self.verified_to = b.header.height,
                None => return Err(eyre::Report::msg("the stream ended while catching up")),
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
) -> eyre::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    user.catch_up(&mut clients[live[0]]).await?;
    for i in 0..count {
        let submit_to = live[i % live.len()];
        let watch_on = live[(i + 1) % live.len()];
        let from = clients[watch_on]
            .status()
            .await
            .map_err(eyre::Report::from)?
            .latest_height
            + 1;
        let mut s1 = clients[watch_on]
            .stream_verified_batches(1, from, user.verifier.clone())
            .await
            .map_err(eyre::Report::from)?;
        let mut s2 = clients[watch_on]
            .stream_verified_batches(2, from, user.verifier.clone())
            .await
            .map_err(eyre::Report::from)?;
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
        .map_err(eyre::Report::from)?;
        user.nonce += 1;
        let t0 = Instant::now();
        let hash = clients[submit_to]
            .submit(&bundle)
            .await
            .map_err(eyre::Report::from)?;
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
            return Err(eyre::Report::msg(format!(
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
) -> eyre::Result<()> {
    let mut clients = connect_all(net).await?;
    let started = Instant::now();
    loop {
        let s = clients[0].status().await.map_err(eyre::Report::from)?;
        if s.latest_height >= 1 {
            println!(
                "first block decided {:.1} s after start",
                started.elapsed().as_secs_f64()
            );
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(eyre::Report::msg(
                "no block decided within 60 s; see the node logs",
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
        let target = clients[0]
            .status()
            .await
            .map_err(eyre::Report::from)?
            .latest_height;
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
                return Err(eyre::Report::msg(format!(
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
