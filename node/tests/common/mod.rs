//! Test harness: a devnet of real `baton` processes on free loopback ports, in a temporary folder.
//! Every process is killed when the harness is dropped, so a failing test leaves nothing behind.

#![allow(dead_code)]

pub mod outsider;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use baton_consensus::bundle::UnsignedBundle;
use baton_consensus::bundle::{Bundle, BundleEntry};
use baton_consensus::hash::Hash;
use baton_consensus::ids::RollupId;
use baton_consensus::params::ConsensusParams;
use baton_node::devnet::{prepare, Devnet, NodeProcess, DEVNET_NETWORK_ID};
use baton_proto::client::{sign_bundle, BatchVerifier, BatonClient, BundleStatus};

/// Cluster tests share two cores: run them one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A rollup user: an Ethereum key and its next nonce.
pub struct User {
    pub key: PrivateKeySigner,
    pub nonce: u64,
}

impl User {
    pub fn new() -> Self {
        User {
            key: PrivateKeySigner::random(),
            nonce: 0,
        }
    }

    /// The next bundle (taking the next nonce), unsigned, valid until height 1,000,000.
    pub fn unsigned(&mut self, entries: &[(RollupId, &[u8])]) -> UnsignedBundle {
        let u = UnsignedBundle {
            network_id: DEVNET_NETWORK_ID,
            sender: self.key.address(),
            nonce: self.nonce,
            expiry_height: 1_000_000,
            entries: entries
                .iter()
                .map(|(r, p)| BundleEntry {
                    rollup_id: *r,
                    payload: p.to_vec(),
                })
                .collect(),
        };
        self.nonce += 1;
        u
    }

    pub fn sign(&self, u: UnsignedBundle) -> Bundle {
        sign_bundle(&self.key, u).expect("sign")
    }

    /// The next signed bundle.
    pub fn bundle(&mut self, entries: &[(RollupId, &[u8])]) -> Bundle {
        let u = self.unsigned(entries);
        self.sign(u)
    }
}

/// Polls a node until the bundle is included; panics after `timeout`.
pub async fn wait_included(
    c: &mut BatonClient,
    hash: &Hash,
    timeout: Duration,
) -> (u64, Hash, u32) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(BundleStatus::Included {
            height,
            block_hash,
            index,
        }) = c.bundle_status(hash).await
        {
            return (height, block_hash, index);
        }
        assert!(
            Instant::now() < deadline,
            "bundle {hash} not included within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Cluster {
    pub net: Devnet,
    pub procs: Vec<Option<NodeProcess>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Prepares `n` validators without starting them.
    pub fn prepare(n: usize) -> Self {
        Cluster::prepare_with(n, ConsensusParams::for_tests())
    }

    /// Prepares `n` validators with these consensus parameters, without starting them.
    pub fn prepare_with(n: usize, params: ConsensusParams) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = prepare(
            &dir.path().join("net"),
            n,
            "baton-test",
            params,
            baton_node::config::PubSub::default(),
        )
        .expect("prepare");
        let procs = (0..n).map(|_| None).collect();
        Cluster {
            net,
            procs,
            _dir: dir,
        }
    }

    pub fn start(n: usize) -> Self {
        let mut c = Cluster::prepare(n);
        for i in 0..n {
            c.start_node(i);
        }
        c
    }

    pub fn start_node(&mut self, i: usize) {
        // BATON_TEST_BIN runs the cluster tests against another build (a fix's test against the build before it).
        let bin = std::env::var_os("BATON_TEST_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_baton").into());
        self.procs[i] = Some(NodeProcess::start(&bin, &self.net.nodes[i]).expect("start node"));
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill();
        }
    }

    /// A batch verifier trusting the devnet's genesis validator set.
    pub fn verifier(&self) -> BatchVerifier {
        BatchVerifier::new(
            self.net.genesis.validator_set().expect("validator set"),
            &self.net.genesis.chain_id,
        )
    }

    /// Changes node `i`'s config file before it starts.
    pub fn edit_config(&self, i: usize, f: impl FnOnce(&mut baton_node::config::NodeConfig)) {
        let path = &self.net.nodes[i].config_path;
        let mut cfg: baton_node::config::NodeConfig =
            toml::from_str(&std::fs::read_to_string(path).expect("read config"))
                .expect("parse config");
        f(&mut cfg);
        std::fs::write(path, toml::to_string(&cfg).expect("encode config")).expect("write config");
    }

    /// Resident memory of node `i`'s process, in bytes.
    pub fn rss(&self, i: usize) -> u64 {
        let pid = self.pid(i).expect("node running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().and_then(|p| p.pid())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.net.nodes[i].dir.join("node.log")).unwrap_or_default()
    }

    pub async fn client(&self, i: usize) -> BatonClient {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match BatonClient::connect(self.net.nodes[i].grpc_url()).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => {
                    panic!("node{i} gRPC never came up: {e}\n{}", self.log(i))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub async fn height(&self, i: usize) -> Option<u64> {
        let mut c = BatonClient::connect(self.net.nodes[i].grpc_url())
            .await
            .ok()?;
        c.status().await.ok().map(|s| s.latest_height)
    }

    /// Waits until node `i` has decided `h`; panics with its log after `timeout`.
    pub async fn wait_height(&self, i: usize, h: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(now) = self.height(i).await {
                if now >= h {
                    return now;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "node{i} did not reach height {h} within {timeout:?}\n--- log ---\n{}",
                    self.log(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Headers of heights `from..=to` on node `i`.
    pub async fn headers(
        &self,
        i: usize,
        from: u64,
        to: u64,
    ) -> Vec<baton_consensus::types::BlockHeader> {
        let mut c = self.client(i).await;
        let mut out = Vec::new();
        for h in from..=to {
            let b = c
                .get_batch(1, h)
                .await
                .unwrap_or_else(|e| panic!("node{i} GetBatch({h}): {e}"));
            out.push(b.header);
        }
        out
    }

    /// Block hash of every height 1..=up_to on node `i`, checking that each header names its parent.
    pub async fn chain(&self, i: usize, up_to: u64) -> Vec<Hash> {
        let mut c = self.client(i).await;
        let mut out: Vec<Hash> = Vec::new();
        for h in 1..=up_to {
            let b = c
                .get_batch(1, h)
                .await
                .unwrap_or_else(|e| panic!("node{i} GetBatch({h}): {e}"));
            assert_eq!(b.header.height, h);
            assert_eq!(
                b.block_hash,
                b.header.hash(),
                "node{i} height {h}: block hash is not the header hash"
            );
            if let Some(prev) = out.last() {
                assert_eq!(
                    b.header.parent_hash, *prev,
                    "node{i} height {h}: broken hash chain"
                );
            }
            out.push(b.block_hash);
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            p.kill();
        }
    }
}

/// Runs an async test body on a fresh runtime, with an overall time bound.
pub fn run<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::time::timeout(limit, f)
            .await
            .expect("test exceeded its time bound");
    });
}

/// `/metrics` of a node: asserts a 200 answer in the Prometheus text format and returns the body.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    baton_loadtest::nodemetrics::page(&addr.to_string())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The value of the first sample whose line starts with `prefix` (name and labels).
pub fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
