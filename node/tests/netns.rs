//! Real processes across Linux network namespaces: four validators, each in its own namespace, joined by veth
//! pairs to a bridge in a hub namespace; the load client runs in a fifth. Everything the suite creates is
//! deleted when it ends (namespaces, links, processes); nothing outside those namespaces is touched.
//!
//! Scenarios (each under load, ending with the run checker over every node's chain): kill -9 and restart;
//! SIGSTOP for 10 s then SIGCONT; one node's link down then up; a 2|2 partition (no commits during it); the
//! current proposer killed again and again; 50 ms ± 10 ms delay on every link between validators with 1% packet
//! loss throughout. This kernel has no netem, so the delay comes from a userspace proxy the suite runs (peers
//! dial each validator through it) and the loss from an nftables `numgen random` rule in each validator's
//! namespace. The tests need root (to create namespaces) and skip with a message
//! otherwise. `BATON_NETNS_SECS` scales the scenarios (default 1.0) and `BATON_NETNS_VALIDATORS` sets the network
//! size (default 4); the long suite uses 2.0 and 7.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_consensus::check::{check, CheckReport, Fault, RunHistory, Submitted};
use baton_consensus::hash::Hash;
use baton_node::config::{Genesis, NodeConfig};
use baton_proto::client::{BatonClient, BundleStatus};
use common::{serial, User};

const SUBNET: &str = "10.231.0";
static LABS: AtomicU64 = AtomicU64::new(0);

fn nft(ns: &str, rule: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(rule.split_whitespace())
        .output()
        .map_err(|e| format!("nft {rule}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {rule}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace this suite created; deleted on drop.
struct Ns(String);

impl Ns {
    fn new(name: String) -> Result<Ns, String> {
        ip(&["netns", "add", &name])?;
        Ok(Ns(name))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// Four (or n) validators in namespaces, a hub with the bridge, and a client namespace.
struct Lab {
    nodes: Vec<Ns>,
    client: Ns,
    hub: Ns,
    bin: PathBuf,
    configs: Vec<PathBuf>,
    logs: Vec<PathBuf>,
    grpc: Vec<SocketAddr>,
    genesis: Genesis,
    procs: Mutex<Vec<Option<Child>>>,
    partitioned: Mutex<Vec<(usize, usize)>>,
    /// With a delayed network: validator i's peers reach it through a proxy at `proxy_ip(i)` (in the client
    /// namespace), which forwards to `node_ip(i)` after a delay.
    proxied: Vec<(SocketAddr, SocketAddr)>,
    _dir: tempfile::TempDir,
}

/// The address peers dial to reach validator `i` through the delay proxy.
fn proxy_ip(i: usize) -> Ipv4Addr {
    format!("{SUBNET}.{}", 101 + i).parse().expect("ip")
}

/// Network conditions for a lab.
#[derive(Clone, Copy, Debug, Default)]
struct Conditions {
    /// Delay and jitter (ms) on every link between validators, by a userspace proxy (this kernel has no netem).
    delay: Option<(u64, u64)>,
    /// Packets dropped on arrival at each validator (per cent), by an nftables rule in its namespace.
    loss_percent: u32,
}

fn node_ip(i: usize) -> Ipv4Addr {
    format!("{SUBNET}.{}", i + 1).parse().expect("ip")
}

impl Lab {
    /// None (with the reason printed) where namespaces cannot be created: not root, no `ip`.
    fn new(n: usize, conditions: Conditions) -> Option<Lab> {
        match Lab::build(n, conditions) {
            Ok(l) => Some(l),
            Err(e) => {
                println!("SKIPPED: cannot build the namespace lab ({e}); these tests need root and iproute2");
                None
            }
        }
    }

    fn build(n: usize, conditions: Conditions) -> Result<Lab, String> {
        let tag = format!(
            "bt{}x{}",
            std::process::id() % 100_000,
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let hub = Ns::new(format!("{tag}h"))?;
        ip(&["-n", &hub.0, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub.0, "link", "set", "br0", "up"])?;
        let mut members = Vec::new();
        for k in 0..=n {
            let ns = Ns::new(format!("{tag}n{k}"))?;
            let host_end = format!("h{k}");
            let addr = if k == n {
                format!("{SUBNET}.200/24")
            } else {
                format!("{}/24", node_ip(k))
            };
            ip(&[
                "-n", &hub.0, "link", "add", &host_end, "type", "veth", "peer", "name", "eth0",
                "netns", &ns.0,
            ])?;
            ip(&["-n", &hub.0, "link", "set", &host_end, "master", "br0"])?;
            ip(&["-n", &hub.0, "link", "set", &host_end, "up"])?;
            ip(&["-n", &ns.0, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &ns.0, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
            members.push(ns);
        }
        let client = members.pop().expect("client namespace");
        if conditions.delay.is_some() {
            for i in 0..n {
                ip(&[
                    "-n",
                    &client.0,
                    "addr",
                    "add",
                    &format!("{}/24", proxy_ip(i)),
                    "dev",
                    "eth0",
                ])?;
            }
        }
        if conditions.loss_percent > 0 {
            for ns in &members {
                nft(&ns.0, "add table inet baton")?;
                nft(
                    &ns.0,
                    "add chain inet baton in { type filter hook input priority 0; }",
                )?;
                nft(
                    &ns.0,
                    &format!(
                        "add rule inet baton in ip saddr {SUBNET}.0/24 numgen random mod 100 < {} drop",
                        conditions.loss_percent
                    ),
                )?;
            }
        }

        // A devnet's keys and configs, moved from loopback to the namespaces' addresses.
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let net = baton_node::devnet::prepare(
            &dir.path().join("net"),
            n,
            "baton-netns",
            baton_consensus::params::ConsensusParams::for_tests(),
            Default::default(),
        )
        .map_err(|e| e.to_string())?;
        let mut genesis = net.genesis.clone();
        let mut proxied = Vec::new();
        for (i, v) in genesis.validators.iter_mut().enumerate() {
            let port: u16 = v
                .p2p_addr
                .rsplit('/')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or("p2p port")?;
            let reach = if conditions.delay.is_some() {
                proxied.push((
                    SocketAddr::new(proxy_ip(i).into(), port),
                    SocketAddr::new(node_ip(i).into(), port),
                ));
                proxy_ip(i)
            } else {
                node_ip(i)
            };
            v.p2p_addr = v.p2p_addr.replace("127.0.0.1", &reach.to_string());
        }
        std::fs::write(
            &net.genesis_path,
            toml::to_string(&genesis).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let mut configs = Vec::new();
        let mut grpc = Vec::new();
        let mut logs = Vec::new();
        for (i, node) in net.nodes.iter().enumerate() {
            let mut cfg = NodeConfig::load(&node.config_path).map_err(|e| e.to_string())?;
            cfg.p2p.listen_addr = cfg
                .p2p
                .listen_addr
                .replace("127.0.0.1", &node_ip(i).to_string());
            cfg.grpc.listen_addr = SocketAddr::new(node_ip(i).into(), cfg.grpc.listen_addr.port());
            cfg.metrics.listen_addr =
                SocketAddr::new(node_ip(i).into(), cfg.metrics.listen_addr.port());
            grpc.push(cfg.grpc.listen_addr);
            std::fs::write(
                &node.config_path,
                toml::to_string(&cfg).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            configs.push(node.config_path.clone());
            logs.push(node.dir.join("node.log"));
        }
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_baton"));
        let lab = Lab {
            nodes: members,
            client,
            hub,
            bin,
            configs,
            logs,
            grpc,
            genesis,
            procs: Mutex::new((0..n).map(|_| None).collect()),
            partitioned: Mutex::new(Vec::new()),
            proxied,
            _dir: dir,
        };
        Ok(lab)
    }

    fn start(&self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.logs[i])
            .expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.nodes[i].0])
            .arg(&self.bin)
            .arg("run")
            .arg("--config")
            .arg(&self.configs[i])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start node");
        self.procs.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(child);
    }

    fn signal(&self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(c) = self.procs.lock().unwrap_or_else(|p| p.into_inner())[i].as_ref() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    fn kill(&self, i: usize) {
        if let Some(mut c) = self.procs.lock().unwrap_or_else(|p| p.into_inner())[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn link(&self, i: usize, up: bool) {
        ip(&[
            "-n",
            &self.hub.0,
            "link",
            "set",
            &format!("h{i}"),
            if up { "up" } else { "down" },
        ])
        .expect("link");
    }

    /// Cuts every path between the two groups (blackhole routes inside the nodes' namespaces).
    fn partition(&self, a: &[usize], b: &[usize]) {
        let mut cut = self.partitioned.lock().unwrap_or_else(|p| p.into_inner());
        for &x in a {
            for &y in b {
                for (from, to) in [(x, y), (y, x)] {
                    ip(&[
                        "-n",
                        &self.nodes[from].0,
                        "route",
                        "add",
                        "blackhole",
                        &format!("{}/32", node_ip(to)),
                    ])
                    .expect("route");
                    cut.push((from, to));
                }
            }
        }
    }

    fn heal(&self) {
        for (from, to) in self
            .partitioned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = ip(&[
                "-n",
                &self.nodes[from].0,
                "route",
                "del",
                "blackhole",
                &format!("{}/32", node_ip(to)),
            ]);
        }
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}", self.grpc[i])
    }

    fn tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.logs[i]).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.configs.len() {
            self.signal(i, nix::sys::signal::Signal::SIGCONT);
            self.kill(i);
        }
    }
}

/// Runs `f` on a thread inside the namespace `ns` (sockets it opens live there), on its own runtime.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).expect("namespace file");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("client thread")
}

/// One fault action at a time offset.
#[derive(Clone, Copy, Debug)]
enum Action {
    Kill(usize),
    Start(usize),
    Stop(usize),
    Cont(usize),
    LinkDown(usize),
    LinkUp(usize),
    Partition,
    Heal,
    KillProposer,
    RestartAll,
}

/// A scenario's figures.
#[derive(Debug)]
struct Row {
    faults: usize,
    report: CheckReport,
    stalled_heights: Option<u64>,
}

async fn connect(url: &str) -> Option<BatonClient> {
    tokio::time::timeout(
        Duration::from_millis(500),
        BatonClient::connect(url.to_string()),
    )
    .await
    .ok()?
    .ok()
}

async fn height(url: &str) -> Option<u64> {
    let mut c = connect(url).await?;
    tokio::time::timeout(Duration::from_millis(500), c.status())
        .await
        .ok()?
        .ok()
        .map(|s| s.latest_height)
}

/// The scenario: load for `secs`, the actions at their offsets, then drain and check every chain.
async fn scenario(
    lab: Arc<Lab>,
    name: &'static str,
    secs: f64,
    actions: Vec<(f64, Action)>,
    window: Option<(f64, f64)>,
    conditions: Conditions,
    seed: u64,
) -> Row {
    let n = lab.configs.len();
    let mut proxies = Vec::new();
    if let Some((delay, jitter)) = conditions.delay {
        for (k, (listen, upstream)) in lab.proxied.iter().enumerate() {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .expect("proxy bind");
            proxies.push(tokio::spawn(delay_proxy(
                listener,
                *upstream,
                delay,
                jitter,
                seed ^ k as u64,
            )));
        }
    }
    for i in 0..n {
        lab.start(i);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(90);
    for i in 0..n {
        while height(&lab.url(i)).await.unwrap_or(0) < 2 {
            assert!(
                Instant::now() < deadline,
                "{name}: node{i} did not start deciding:\n{}",
                lab.tail(i)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let t0 = Instant::now();
    let ms = move || t0.elapsed().as_millis() as u64;

    // Load: 8 users, each with a queue of signed bundles sent in nonce order; a bundle is retried on the next
    // node until one acknowledges it (the same bundle, so at most one inclusion).
    let acked: Arc<Mutex<BTreeMap<Hash, BTreeMap<u64, u32>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acked, stop, urls) = (
            acked.clone(),
            stop.clone(),
            (0..n).map(|i| lab.url(i)).collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            let mut users: Vec<(User, VecDeque<baton_consensus::bundle::Bundle>)> =
                (0..8).map(|_| (User::new(), VecDeque::new())).collect();
            let mut clients: Vec<Option<BatonClient>> = (0..urls.len()).map(|_| None).collect();
            let mut k = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for (u, (user, queue)) in users.iter_mut().enumerate() {
                    if queue.is_empty() {
                        let cross = k.is_multiple_of(4);
                        let payload = format!("{u}-{k}").into_bytes();
                        let entries: Vec<(u64, &[u8])> = if cross {
                            vec![(1, &payload[..]), (2, &payload[..])]
                        } else {
                            vec![(1 + (k % 4) as u64, &payload[..])]
                        };
                        queue.push_back(user.bundle(&entries));
                    }
                    let b = queue.front().expect("bundle").clone();
                    let node = (u + k) % urls.len();
                    if clients[node].is_none() {
                        clients[node] = connect(&urls[node]).await;
                    }
                    let Some(c) = clients[node].as_mut() else {
                        continue;
                    };
                    match tokio::time::timeout(Duration::from_millis(500), c.submit(&b)).await {
                        Ok(Ok(h)) => {
                            let mut per = BTreeMap::new();
                            for e in &b.entries {
                                *per.entry(e.rollup_id).or_insert(0u32) += 1;
                            }
                            acked
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(h, per);
                            queue.pop_front();
                        }
                        _ => clients[node] = None,
                    }
                    k += 1;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };

    // Progress samples: the highest height any node reports.
    let progress: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let sampler = {
        let (progress, stop, urls) = (
            progress.clone(),
            stop.clone(),
            (0..n).map(|i| lab.url(i)).collect::<Vec<_>>(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut top = 0;
                for u in &urls {
                    top = top.max(height(u).await.unwrap_or(0));
                }
                progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((ms(), top));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // The faults, in order.
    let mut faults: Vec<Fault> = Vec::new();
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut killed_proposers: Vec<usize> = Vec::new();
    for (at, action) in &actions {
        let at = Duration::from_secs_f64(*at);
        if let Some(wait) = at.checked_sub(t0.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let now = ms();
        let label = format!("{action:?} at {:.1} s", now as f64 / 1e3);
        match *action {
            Action::Kill(i) => {
                lab.kill(i);
                open.push((label, faults.len()));
            }
            Action::Stop(i) => {
                lab.signal(i, nix::sys::signal::Signal::SIGSTOP);
                open.push((label, faults.len()));
            }
            Action::LinkDown(i) => {
                lab.link(i, false);
                open.push((label, faults.len()));
            }
            Action::Partition => {
                let half: Vec<usize> = (0..n / 2).collect();
                let rest: Vec<usize> = (n / 2..n).collect();
                lab.partition(&half, &rest);
                open.push((label, faults.len()));
            }
            Action::KillProposer => {
                let p = next_proposer(&lab).await;
                lab.kill(p);
                killed_proposers.push(p);
                open.push((
                    format!("kill proposer node{p} at {:.1} s", now as f64 / 1e3),
                    faults.len(),
                ));
            }
            Action::Start(i) => lab.start(i),
            Action::Cont(i) => lab.signal(i, nix::sys::signal::Signal::SIGCONT),
            Action::LinkUp(i) => lab.link(i, true),
            Action::Heal => lab.heal(),
            Action::RestartAll => {
                for p in killed_proposers.drain(..) {
                    lab.start(p);
                }
            }
        }
        if matches!(
            action,
            Action::Start(_)
                | Action::Cont(_)
                | Action::LinkUp(_)
                | Action::Heal
                | Action::RestartAll
        ) {
            for (label, _) in open.drain(..) {
                faults.push(Fault {
                    label,
                    healed_ms: Some(now),
                });
            }
        }
    }
    let remaining = Duration::from_secs_f64(secs).saturating_sub(t0.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let _ = sampler.await;

    // Drain: every acknowledged bundle included (or the checker will call it lost).
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let drain_until = Instant::now() + Duration::from_secs(60);
    // (Connections may need SYN retransmissions on a lossy network: retry for a while.)
    let mut c = None;
    for _ in 0..40 {
        c = connect(&lab.url(0)).await;
        if c.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut c = c.expect("node0 reachable for the drain");
    let mut pending: Vec<Hash> = acked.keys().copied().collect();
    while !pending.is_empty() && Instant::now() < drain_until {
        let mut still = Vec::new();
        for h in pending {
            match c.bundle_status(&h).await {
                Ok(BundleStatus::Included { .. }) => {}
                _ => still.push(h),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Heights during the partition window (a 2|2 split must decide nothing).
    let progress = progress.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let stalled_heights = window.map(|(from, to)| {
        let at = |t: f64| {
            progress
                .iter()
                .filter(|(ms, _)| *ms as f64 <= t * 1e3)
                .map(|(_, h)| *h)
                .max()
                .unwrap_or(0)
        };
        at(to) - at(from)
    });

    let mut history = RunHistory {
        submitted: acked
            .iter()
            .map(|(h, per)| Submitted {
                bundle: *h,
                entries: per.clone(),
                acked: true,
            })
            .collect(),
        faults,
        progress,
        ..RunHistory::default()
    };
    let urls: Vec<String> = (0..n).map(|i| lab.url(i)).collect();
    baton_loadtest::chain::read_all(&mut history, &urls, &[1, 2, 3, 4])
        .await
        .expect("read the chains");
    for p in proxies {
        p.abort();
    }
    Row {
        faults: actions
            .iter()
            .filter(|(_, a)| {
                matches!(
                    a,
                    Action::Kill(_)
                        | Action::Stop(_)
                        | Action::LinkDown(_)
                        | Action::Partition
                        | Action::KillProposer
                )
            })
            .count(),
        report: check(&history),
        stalled_heights,
    }
}

/// Forwards every connection accepted on `listener` to `upstream`, each chunk in each direction delivered
/// `delay` ± `jitter` ms after it was read (never before an earlier chunk of the same direction: TCP order).
async fn delay_proxy(
    listener: tokio::net::TcpListener,
    upstream: SocketAddr,
    delay: u64,
    jitter: u64,
    seed: u64,
) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while let Ok((down, _)) = listener.accept().await {
        let s1: u64 = rng.gen();
        let s2: u64 = rng.gen();
        tokio::spawn(async move {
            let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                return;
            };
            // A proxy must not add Nagle's algorithm's waits to the delay it models.
            let _ = up.set_nodelay(true);
            let _ = down.set_nodelay(true);
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::join!(
                pump(dr, uw, delay, jitter, s1),
                pump(ur, dw, delay, jitter, s2)
            );
        });
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: u64,
    jitter: u64,
    seed: u64,
) {
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let writer = tokio::spawn(async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut last = tokio::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let ms = delay.saturating_sub(jitter) + rng.gen_range(0..=2 * jitter);
        let at = (tokio::time::Instant::now() + Duration::from_millis(ms)).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The proposer of the next height's round 0, from the latest header on any live node (the rotation with the
/// header's bench applied).
async fn next_proposer(lab: &Lab) -> usize {
    let base = lab.genesis.validator_set().expect("set");
    for i in 0..lab.configs.len() {
        let Some(mut c) = connect(&lab.url(i)).await else {
            continue;
        };
        let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(500), c.status()).await else {
            continue;
        };
        let Ok(b) = c.get_batch(1, s.latest_height).await else {
            continue;
        };
        let next = s.latest_height + 1;
        let p = b.header.next_rotation(&base).proposer(next, 0).address;
        if let Some(idx) = lab
            .genesis
            .validators
            .iter()
            .position(|v| v.to_validator().map(|x| x.address) == Ok(p))
        {
            return idx;
        }
    }
    0
}

fn scale() -> f64 {
    std::env::var("BATON_NETNS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn run_scenario(
    name: &'static str,
    secs: f64,
    actions: Vec<(f64, Action)>,
    window: Option<(f64, f64)>,
    conditions: Conditions,
) -> Option<Row> {
    let _g = serial();
    let validators = std::env::var("BATON_NETNS_VALIDATORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4usize)
        .max(4);
    if conditions.loss_percent > 0 && Command::new("nft").arg("--version").output().is_err() {
        println!("SKIPPED: {name}: nft (package nftables) is needed for packet loss");
        return None;
    }
    let lab = Arc::new(Lab::new(validators, conditions)?);
    let seed = std::env::var("BATON_NETNS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("{name}: proxy seed {seed} (replay the delays with BATON_NETNS_SEED={seed})");
    let s = scale();
    let actions: Vec<(f64, Action)> = actions.into_iter().map(|(t, a)| (t * s, a)).collect();
    let window = window.map(|(a, b)| (a * s, b * s));
    let ns = lab.client.0.clone();
    let l = lab.clone();
    let row = in_ns(&ns, move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            tokio::time::timeout(
                Duration::from_secs_f64(secs * s + 180.0),
                scenario(l, name, secs * s, actions, window, conditions, seed),
            )
            .await
            .expect("scenario exceeded its time bound")
        })
    });
    let r = &row.report;
    println!(
        "| {name} | 1 | {} | {} | {} | {} | {} | {} |",
        row.faults,
        r.forks.len(),
        r.lost.len(),
        r.duplicated.len(),
        r.worst_resume_ms()
            .map_or("-".into(), |m| format!("{m} ms")),
        r
    );
    assert!(
        r.ok(),
        "{name}: {r}\nnode logs:\n{}",
        (0..lab.configs.len())
            .map(|i| lab.tail(i))
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    assert!(
        r.acked > 50,
        "{name}: only {} bundles acknowledged",
        r.acked
    );
    assert_eq!(r.included, r.acked, "{name}: {r}");
    assert!(
        r.resumes.iter().all(|x| x.ms.is_some()),
        "{name}: no progress after a fault healed: {r}"
    );
    Some(row)
}

#[test]
fn netns_kill9_and_restart() {
    run_scenario(
        "kill -9 node2, restart 12 s later",
        35.0,
        vec![(8.0, Action::Kill(2)), (20.0, Action::Start(2))],
        None,
        Conditions::default(),
    );
}

#[test]
fn netns_sigstop_then_sigcont() {
    run_scenario(
        "SIGSTOP node1 10 s, SIGCONT",
        35.0,
        vec![(8.0, Action::Stop(1)), (18.0, Action::Cont(1))],
        None,
        Conditions::default(),
    );
}

#[test]
fn netns_link_down_then_up() {
    run_scenario(
        "node3 link down 12 s, up",
        35.0,
        vec![(8.0, Action::LinkDown(3)), (20.0, Action::LinkUp(3))],
        None,
        Conditions::default(),
    );
}

#[test]
fn netns_partition_two_two_decides_nothing_then_recovers() {
    let row = run_scenario(
        "partition into halves (2|2 with four validators) 12 s, healed",
        35.0,
        vec![(8.0, Action::Partition), (20.0, Action::Heal)],
        Some((9.0, 19.5)),
        Conditions::default(),
    );
    if let Some(row) = row {
        let stalled = row.stalled_heights.expect("window");
        assert!(
            stalled <= 1,
            "{stalled} heights decided during a 2|2 partition"
        );
    }
}

#[test]
fn netns_current_proposer_killed_again_and_again() {
    run_scenario(
        "current proposer killed 4 times",
        40.0,
        vec![
            (6.0, Action::KillProposer),
            (10.0, Action::RestartAll),
            (14.0, Action::KillProposer),
            (18.0, Action::RestartAll),
            (22.0, Action::KillProposer),
            (26.0, Action::RestartAll),
            (30.0, Action::KillProposer),
            (34.0, Action::RestartAll),
        ],
        None,
        Conditions::default(),
    );
}

#[test]
fn netns_delay_50ms_jitter_10ms_and_one_percent_loss_throughout() {
    run_scenario(
        "50 ms ± 10 ms delay, 1% loss, throughout",
        40.0,
        vec![],
        None,
        Conditions {
            delay: Some((env_or("BATON_NETNS_DELAY_MS", 50), 10)),
            loss_percent: env_or("BATON_NETNS_LOSS_PERCENT", 1) as u32,
        },
    );
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
