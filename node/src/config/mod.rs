//! Node configuration (`config.toml`) and genesis (`genesis.toml`).
//!
//! Both are TOML, reject unknown fields, document their defaults, and are checked by `validate()` before the node
//! starts. Relative paths in the node config are resolved against the config file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use baton_consensus::host::HostLimits;

use crate::error::NodeError;

mod genesis;

#[cfg(test)]
pub(crate) use genesis::test_genesis;
pub use genesis::{Genesis, GenesisEpochs, GenesisL1};

/// `config.toml`: one node's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// A human-readable name for logs.
    pub moniker: String,
    /// Where the node keeps its database and write-ahead log.
    pub data_dir: PathBuf,
    pub genesis_file: PathBuf,
    pub key_file: PathBuf,
    /// Run as a validator (sign votes and proposals) when the key is in the validator set. Default true.
    #[serde(default = "yes")]
    pub validator: bool,
    #[serde(default)]
    pub p2p: P2pSection,
    pub grpc: GrpcSection,
    #[serde(default)]
    pub mempool: MempoolSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub runtime: RuntimeSection,
    #[serde(default)]
    pub verify: VerifySection,
    #[serde(default)]
    pub sync: SyncSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// L1 access: attesting (validators, when genesis has `[l1]`) and optionally posting commitments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l1: Option<L1Section>,
}

/// `[l1]` in `config.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L1Section {
    /// The L1 JSON-RPC endpoint (`http://` or `https://`).
    pub rpc_url: String,
    /// The validator's L1 attestation key: a file holding a 32-byte secp256k1 key as hex.
    pub attestation_key_file: PathBuf,
    /// When set, this node posts commitments, paying with this key (same file format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster_key_file: Option<PathBuf>,
    /// Poster limits and cadence (`[l1.poster]`; defaults in `baton_l1_inclusion::poster::PosterConfig`).
    #[serde(default)]
    pub poster: baton_l1_inclusion::poster::PosterConfig,
    /// How often the inbox is read. Default 500 ms.
    #[serde(default = "default_l1_poll_ms")]
    pub poll_ms: u64,
    /// A proposer names an L1 block as its origin only after it has seen it at the genesis `origin_safety` for
    /// this long, so that the other validators have most likely seen it too. Default 1,000 ms.
    #[serde(default = "default_origin_delay_ms")]
    pub origin_delay_ms: u64,
    /// How settled the L1 blocks based rollups are served from must be: `latest`, `safe` (default) or
    /// `finalized`. Below `finalized`, streams may carry reorg notices.
    #[serde(default)]
    pub based_safety: baton_l1_inclusion::watcher::Safety,
    /// When set, bundles submitted for based rollups are forwarded to the inbox, paid with this key (same file
    /// format as the attestation key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_key_file: Option<PathBuf>,
    /// Batching and fees of forwarding (`[l1.forward]`; defaults in `crate::forward::ForwardConfig`).
    #[serde(default)]
    pub forward: crate::forward::ForwardConfig,
}

fn default_l1_poll_ms() -> u64 {
    500
}

fn default_origin_delay_ms() -> u64 {
    1_000
}

impl L1Section {
    pub fn validate(&self) -> Result<(), NodeError> {
        if !(self.rpc_url.starts_with("http://") || self.rpc_url.starts_with("https://")) {
            return Err(NodeError::Config(format!(
                "l1.rpc_url `{}` must start with http:// or https://",
                self.rpc_url
            )));
        }
        if self.poll_ms == 0 || self.poll_ms > 60_000 {
            return Err(NodeError::Config(format!(
                "l1.poll_ms is {}, it must be 1..=60000",
                self.poll_ms
            )));
        }
        self.forward.validate()?;
        self.poster
            .validate()
            .map_err(|e| NodeError::Config(e.to_string()))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Where `/metrics` (Prometheus / OpenMetrics text) is served. Default `127.0.0.1:26660`.
    pub listen_addr: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 26660)),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pSection {
    /// libp2p listen address. Default `/ip4/127.0.0.1/tcp/26656`.
    pub listen_addr: String,
    /// Extra peers (full nodes) besides the validators listed in genesis. Default none.
    pub extra_peers: Vec<String>,
    /// Largest gossip message (a proposal part or a vote). Default 8 MiB.
    pub max_gossip_bytes: u64,
    /// Largest request/response (value sync). Default 64 MiB.
    pub max_rpc_bytes: u64,
    /// How votes and proposal parts reach the peers: `broadcast` (default: each message straight to every
    /// connected peer, nothing relayed; validators dial every genesis validator, so the set is fully connected)
    /// or `gossipsub` (relays through peers, which also covers a single broken link between two validators,
    /// at the cost of receiving and checking most messages several times).
    pub pubsub: PubSub,
    /// Proposal-channel messages (proposal parts, dissemination, asks) taken from one peer per second; one second
    /// of burst. Only validators of the set and `extra_peers` naming a peer id are heard at all
    /// ([`crate::peers`]). Default 2,000.
    pub peer_messages_per_sec: u32,
    /// Bytes of such messages per second from one peer (at least `max_gossip_bytes`). Default 64 MiB.
    pub peer_bytes_per_sec: u64,
    /// Bytes of one peer's dissemination waiting for or in signature checks at once (at least
    /// `max_gossip_bytes`). Default 16 MiB.
    pub peer_inflight_bytes: u64,
    /// How long a peer that sent an invalid bundle (one no honest node would send: it failed the stateless
    /// checks) is ignored on the proposal channel. Default 60 s.
    pub penalty_secs: u64,
    /// Peers' dissemination messages held for the consensus loop while its proposal waits (the tap,
    /// `node/src/app/tap.rs`); more are left to the engine's own delivery after the proposal. Default 64.
    pub tap_messages: usize,
    /// Bytes of such messages held at once (at least `max_gossip_bytes`). Default 16 MiB.
    pub tap_bytes: u64,
}

impl P2pSection {
    /// The bounds of the consensus loop's dissemination tap.
    pub fn tap_limits(&self) -> crate::app::TapLimits {
        crate::app::TapLimits {
            messages: self.tap_messages,
            bytes: usize::try_from(self.tap_bytes).unwrap_or(usize::MAX),
        }
    }

    /// The per-peer limits of the proposal channel.
    pub fn peer_limits(&self) -> crate::peers::PeerLimits {
        crate::peers::PeerLimits {
            messages_per_sec: self.peer_messages_per_sec,
            bytes_per_sec: self.peer_bytes_per_sec,
            inflight_bytes: usize::try_from(self.peer_inflight_bytes).unwrap_or(usize::MAX),
            penalty: std::time::Duration::from_secs(self.penalty_secs),
        }
    }
}

/// The engine's pub-sub protocol (`p2p.pubsub`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PubSub {
    Gossipsub,
    #[default]
    Broadcast,
}

impl Default for P2pSection {
    fn default() -> Self {
        P2pSection {
            listen_addr: "/ip4/127.0.0.1/tcp/26656".into(),
            extra_peers: vec![],
            max_gossip_bytes: 8 * 1024 * 1024,
            max_rpc_bytes: 64 * 1024 * 1024,
            pubsub: PubSub::Broadcast,
            peer_messages_per_sec: 2_000,
            peer_bytes_per_sec: 64 * 1024 * 1024,
            peer_inflight_bytes: 16 * 1024 * 1024,
            penalty_secs: 60,
            tap_messages: 64,
            tap_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSection {
    pub listen_addr: SocketAddr,
    /// Concurrent `StreamBatches` subscribers; more are refused with RESOURCE_EXHAUSTED. Default 1024.
    #[serde(default = "default_max_subscribers")]
    pub max_subscribers: usize,
    /// Batches buffered per subscriber before the node waits for the client to read. Default 32.
    #[serde(default = "default_stream_buffer")]
    pub stream_buffer: usize,
    /// Bytes of encoded batches buffered per subscriber (whichever of this and `stream_buffer` is reached
    /// first makes the node wait for the client). Default 4 MiB.
    #[serde(default = "default_stream_buffer_bytes")]
    pub stream_buffer_bytes: usize,
    /// Requests in flight per `SubmitBundles` stream. Default 1024.
    #[serde(default = "default_stream_inflight")]
    pub submit_stream_inflight: usize,
    /// `StreamBatches` streams one client (an IPv4 address or an IPv6 /64) may hold at once ([`crate::clients`]).
    /// Default 64.
    #[serde(default = "default_max_streams_per_client")]
    pub max_streams_per_client: usize,
    /// Submission calls one client may have open at once: `SubmitBundle` calls in progress plus `SubmitBundles`
    /// streams. Default 256.
    #[serde(default = "default_max_submit_calls_per_client")]
    pub max_submit_calls_per_client: usize,
    /// Requests in progress on one connection (HTTP/2 streams included); more wait. Default 256.
    #[serde(default = "default_max_concurrent_per_connection")]
    pub max_concurrent_per_connection: usize,
    /// A `StreamBatches` stream whose client has read nothing for this long (the node could not hand it the next
    /// batch) is closed with ABORTED saying the height to resume from, freeing its slot and buffers. Default 60.
    #[serde(default = "default_stream_idle_timeout_secs")]
    pub stream_idle_timeout_secs: u64,
}

impl GrpcSection {
    /// The section with every field but the address at its default.
    pub fn on(listen_addr: SocketAddr) -> Self {
        GrpcSection {
            listen_addr,
            max_subscribers: default_max_subscribers(),
            stream_buffer: default_stream_buffer(),
            stream_buffer_bytes: default_stream_buffer_bytes(),
            submit_stream_inflight: default_stream_inflight(),
            max_streams_per_client: default_max_streams_per_client(),
            max_submit_calls_per_client: default_max_submit_calls_per_client(),
            max_concurrent_per_connection: default_max_concurrent_per_connection(),
            stream_idle_timeout_secs: default_stream_idle_timeout_secs(),
        }
    }
}

fn default_max_subscribers() -> usize {
    1024
}
fn default_stream_buffer_bytes() -> usize {
    4 * 1024 * 1024
}
fn default_stream_buffer() -> usize {
    32
}
fn default_stream_inflight() -> usize {
    1024
}
fn default_max_streams_per_client() -> usize {
    64
}
fn default_max_submit_calls_per_client() -> usize {
    256
}
fn default_max_concurrent_per_connection() -> usize {
    256
}
fn default_stream_idle_timeout_secs() -> u64 {
    60
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolSection {
    /// Pending bundles held; submissions beyond get RESOURCE_EXHAUSTED. Default 200,000.
    pub max_bundles: usize,
    /// Pending bytes held. Default 256 MiB.
    pub max_bytes: usize,
    /// Submissions queued for the disk writer. Default 16,384.
    pub ingest_queue: usize,
    /// ... and at most this many bytes of them (with the group being written). Default 64 MiB.
    pub ingest_queue_bytes: usize,
    /// Submissions made durable with one fsync at most. Default 2,048.
    pub ingest_group: usize,
    /// How long the ingest writer waits for more submissions before one fsync covers them. Default 0 (it
    /// takes what is queued); raise it where fsync is slow, to trade a little ack latency for fewer fsyncs.
    pub ingest_linger_us: u64,
    /// Durable submissions queued for the consensus loop. Default 16,384.
    pub admit_queue: usize,
    /// Pending bundles one sender may have on this node. Default 1,024.
    pub max_pending_per_sender: usize,
    /// How far past its sender's first free nonce a bundle's nonce may be (larger gaps are refused). Default 64.
    pub max_nonce_gap: u64,
    /// Bundles waiting behind a nonce gap (a lower nonce of the sender neither on chain nor pending): at most
    /// this many and `max_waiting_bytes` bytes, inside `max_bundles` / `max_bytes`; when the mempool is full a
    /// bundle that could go into a block evicts the oldest waiting one. Default 10,000 and 16 MiB.
    pub max_waiting: usize,
    pub max_waiting_bytes: usize,
    /// A bundle still waiting behind a nonce gap after this long is dropped and reported rejected. Default
    /// 60,000 ms.
    pub waiting_ttl_ms: u64,
    /// Checked bundles from peers that the mempool refused (say, a nonce another pending bundle holds), kept
    /// for proposals that may refer to them: at most this many and `side_cache_bytes` bytes, oldest evicted
    /// first. Default 100,000 and 64 MiB.
    pub side_cache: usize,
    pub side_cache_bytes: usize,
    /// Admitted bundles are disseminated to peers at once after a quiet spell of this long, and otherwise
    /// gathered and sent this often. Default 20 ms (every message costs each peer a receive and a verifier job,
    /// so under load fewer, larger messages save CPU; a lone bundle is not delayed). Half of it takes about
    /// 3 ms off the median at light load for 1–1.5 points of a core per validator, which a saturated node
    /// cannot spare (BENCHMARKS.md): hence `gossip_light_bundles`.
    pub gossip_flush_ms: u64,
    /// After a send of fewer bundles than this (a light load), the next waits half of `gossip_flush_ms`; after
    /// a fuller one, all of it. 0 keeps the full interval. Default 8: with four validators sharing the load
    /// evenly, below about 1,600 bundles/s every send is light and above about 3,200/s none is.
    pub gossip_light_bundles: usize,
    /// ... or as soon as this many bytes wait (also the largest dissemination message). Default 256 KiB.
    pub gossip_batch_bytes: usize,
    /// Proposals carry bundle hashes instead of bundles (validators hold them from dissemination). Default true.
    pub compact_proposals: bool,
    /// Submissions are refused (UNAVAILABLE, with a retry hint) while the oldest bundle ready for a block has
    /// waited longer than this: the chain is not keeping up, and admitting more would only make every admitted
    /// bundle wait longer. 0 turns it off. Default 100 ms (a few loaded heights on one site; raise it above about
    /// three loaded heights where validators are far apart).
    pub admit_max_wait_ms: u64,
    /// A bundle still pending after this long is disseminated again (it may have been admitted while this node
    /// was cut off). Default 2,000 ms.
    pub reannounce_ms: u64,
}

impl Default for MempoolSection {
    fn default() -> Self {
        // What the host holds and when it refuses: the host's own defaults, so there is one source for them.
        let host = HostLimits::default();
        MempoolSection {
            max_bundles: host.mempool_max_bundles,
            max_bytes: host.mempool_max_bytes,
            ingest_queue: 16_384,
            ingest_queue_bytes: 64 * 1024 * 1024,
            ingest_group: 2_048,
            ingest_linger_us: 0,
            admit_queue: 16_384,
            max_pending_per_sender: host.mempool_max_per_sender,
            max_nonce_gap: host.mempool_max_nonce_gap,
            max_waiting: host.mempool_max_waiting,
            max_waiting_bytes: host.mempool_max_waiting_bytes,
            waiting_ttl_ms: host.mempool_waiting_ttl_ms,
            side_cache: host.side_cache,
            side_cache_bytes: host.side_cache_bytes,
            gossip_flush_ms: 20,
            gossip_light_bundles: 8,
            gossip_batch_bytes: 256 * 1024,
            compact_proposals: host.compact_proposals,
            admit_max_wait_ms: host.admit_max_wait_ms,
            reannounce_ms: 2_000,
        }
    }
}

/// `[verify]`: the pool of threads that check bundles from clients and peers (one signature recovery each).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySection {
    /// Threads; 0 (the default) means one per core.
    pub threads: usize,
    /// Jobs (a chunk of a client's stream, or one peer message) waiting at most; beyond it clients get
    /// UNAVAILABLE and peer messages are dropped. Default 256.
    pub max_queue_jobs: usize,
    /// Bytes of bundles waiting at most. Default 64 MiB.
    pub max_queue_bytes: usize,
}

impl Default for VerifySection {
    fn default() -> Self {
        VerifySection {
            threads: 0,
            max_queue_jobs: 256,
            max_queue_bytes: 64 * 1024 * 1024,
        }
    }
}

/// `[runtime]`: the node's threads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Async worker threads (network, gRPC, consensus loop). 0 (the default) means one per core; when several
    /// nodes share a machine (a devnet), fewer threads per node mean fewer context switches for the same work.
    pub worker_threads: usize,
}

impl RuntimeSection {
    /// A runtime with these threads.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.enable_all();
        if self.worker_threads > 0 {
            b.worker_threads(self.worker_threads);
        }
        b.build()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// fsync every write that is acknowledged (submissions, decided blocks). Default true. Turning it off
    /// trades the durability guarantee for speed; only for throw-away networks.
    pub sync_writes: bool,
    /// RocksDB block cache. Default 256 MiB.
    pub block_cache_bytes: usize,
    /// RocksDB memtable size per column family (at most two per family are held, so 13 families hold at most 26
    /// times this). A full memtable is written out as a table file; small ones keep each such write short, so
    /// that the fsyncs of acknowledgements and decided blocks do not queue behind tens of megabytes on the disk.
    /// Default 8 MiB (RocksDB's own default is 64 MiB; BENCHMARKS.md, "the disk"). At least 1 MiB.
    pub write_buffer_bytes: usize,
    /// RocksDB's write-ahead log files are kept until every column family with data in them has been flushed;
    /// past this many bytes of them, the families holding the oldest are flushed so that the files can go. 0
    /// (the default) keeps RocksDB's own bound, four times all memtables (about 1 GiB here). Under payload-heavy
    /// load (bundles of many entries) every node reaches that bound at about the same moment, flushes, deletes a
    /// gigabyte of log files and stops writes briefly; 64–256 MiB turned that into small, frequent flushes
    /// (p99 0.2–0.4 s instead of 1.6–3.2 s past T3's rate), but each of those costs a short stall too, which
    /// made single-entry bundles at 4,500/s worse (BENCHMARKS.md, the WAL rows). `wal_flush_bytes` (on by
    /// default) keeps the log below that bound without forcing busy families to flush. Otherwise at least twice
    /// `write_buffer_bytes`.
    pub max_wal_bytes: u64,
    /// Past this many bytes of live write-ahead log, the node flushes the column families that keep its oldest
    /// files alive (those written a few bytes per height, or rarely), one per look, four looks a second
    /// ([`crate::store::WalUpkeep`]); the busy families keep flushing full memtables on their own. This keeps the
    /// log short without the flushes of busy families that `max_wal_bytes` forces, and shortens the replay after
    /// a crash. 0 turns it off. Default 128 MiB; otherwise at least twice `write_buffer_bytes` (a lower
    /// `max_wal_bytes` acts first).
    pub wal_flush_bytes: u64,
    /// Heights of history kept below the tip; older blocks, batches, headers and certificates are pruned
    /// ([`crate::retention`]). 0 keeps everything (an archive node). Default 1,000,000 (at least 100).
    pub retain_heights: u64,
    /// Below this much free space on the data directory's file system the node refuses submissions. Default
    /// 2 GiB.
    pub min_free_bytes: u64,
}

#[cfg(test)]
impl StorageSection {
    /// For tests: a 1 MiB block cache, writes synced or not.
    pub(crate) fn for_tests(sync_writes: bool) -> Self {
        StorageSection {
            sync_writes,
            block_cache_bytes: 1 << 20,
            ..StorageSection::default()
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            sync_writes: true,
            block_cache_bytes: 256 * 1024 * 1024,
            write_buffer_bytes: 8 * 1024 * 1024,
            max_wal_bytes: 0,
            wal_flush_bytes: 128 * 1024 * 1024,
            retain_heights: 1_000_000,
            min_free_bytes: 2 * 1024 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSection {
    /// How often the node tells peers its height (value sync). Default 500 ms.
    pub status_interval_ms: u64,
    /// Timeout of one sync request. Default 5,000 ms.
    pub request_timeout_ms: u64,
    /// Decided blocks requested at once. Default 8.
    pub batch_size: usize,
}

impl Default for SyncSection {
    fn default() -> Self {
        SyncSection {
            status_interval_ms: 500,
            request_timeout_ms: 5_000,
            batch_size: 8,
        }
    }
}

impl NodeConfig {
    /// Applies `KEY=VALUE` settings (a dotted path into the config's TOML and a TOML value, e.g.
    /// `mempool.gossip_flush_ms=20`) and checks the result as a config file would be checked.
    pub fn with_settings(&self, settings: &[String]) -> Result<NodeConfig, NodeError> {
        let bad = |m: String| NodeError::Config(m);
        let mut doc = toml::Value::try_from(self).map_err(|e| bad(e.to_string()))?;
        for setting in settings {
            let (path, value) = setting
                .split_once('=')
                .ok_or_else(|| bad(format!("setting `{setting}`: expected KEY=VALUE")))?;
            // A bare word is a string; anything else is read as a TOML value (numbers, booleans, arrays).
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let mut at = &mut doc;
            let mut keys = path.split('.').peekable();
            while let Some(key) = keys.next() {
                let table = at.as_table_mut().ok_or_else(|| {
                    bad(format!("setting `{setting}`: `{key}` is inside a value"))
                })?;
                if keys.peek().is_none() {
                    table.insert(key.to_string(), value.clone());
                    break;
                }
                at = table
                    .entry(key.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            }
        }
        let cfg: NodeConfig = doc
            .try_into()
            .map_err(|e| bad(format!("settings {settings:?}: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a config file; relative paths become relative to its folder.
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| NodeError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut cfg: NodeConfig = toml::from_str(&text)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut paths = vec![&mut cfg.data_dir, &mut cfg.genesis_file, &mut cfg.key_file];
        if let Some(l1) = cfg.l1.as_mut() {
            paths.push(&mut l1.attestation_key_file);
            paths.extend(l1.poster_key_file.as_mut());
            paths.extend(l1.forward_key_file.as_mut());
        }
        for p in paths {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), NodeError> {
        let bad = |m: String| Err(NodeError::Config(m));
        if let Some(l1) = &self.l1 {
            l1.validate()?;
        }
        if self.moniker.is_empty() {
            return bad("moniker must not be empty".into());
        }
        if self.verify.threads > 1024
            || self.verify.max_queue_jobs == 0
            || self.verify.max_queue_bytes == 0
        {
            return bad(format!(
                "verify.threads must be 0 (one per core) ..= 1024 and verify.max_queue_jobs / max_queue_bytes > 0, \
                 got {} / {} / {}",
                self.verify.threads, self.verify.max_queue_jobs, self.verify.max_queue_bytes
            ));
        }
        if self.runtime.worker_threads > 1024 {
            return bad(format!(
                "runtime.worker_threads is {}, it must be 0 (one per core) ..= 1024",
                self.runtime.worker_threads
            ));
        }
        if self
            .p2p
            .listen_addr
            .parse::<malachitebft_app_channel::app::net::Multiaddr>()
            .is_err()
        {
            return bad(format!(
                "p2p.listen_addr `{}` is not a multiaddr",
                self.p2p.listen_addr
            ));
        }
        for p in &self.p2p.extra_peers {
            if p.parse::<malachitebft_app_channel::app::net::Multiaddr>()
                .is_err()
            {
                return bad(format!("p2p.extra_peers entry `{p}` is not a multiaddr"));
            }
        }
        if self.p2p.max_gossip_bytes < 64 * 1024 {
            return bad("p2p.max_gossip_bytes must be at least 64 KiB".into());
        }
        if self.storage.retain_heights != 0 && self.storage.retain_heights < 100 {
            return bad(format!(
                "storage.retain_heights = {} is too few: keep at least 100 heights (peers that fell behind sync \
                 them from you), or 0 to keep everything",
                self.storage.retain_heights
            ));
        }
        if self.storage.write_buffer_bytes < 1024 * 1024 {
            return bad(format!(
                "storage.write_buffer_bytes = {} is too small: at least 1 MiB (1048576), or every few writes \
                 become a table file",
                self.storage.write_buffer_bytes
            ));
        }
        // Both log bounds: below two memtables, a single busy family's own memtables pass them.
        let least_log = 2 * self.storage.write_buffer_bytes as u64;
        for (name, value, zero) in [
            (
                "max_wal_bytes",
                self.storage.max_wal_bytes,
                "RocksDB's own bound",
            ),
            ("wal_flush_bytes", self.storage.wal_flush_bytes, "off"),
        ] {
            if value != 0 && value < least_log {
                return bad(format!(
                    "storage.{name} = {value} is too small: 0 ({zero}) or at least twice storage.write_buffer_bytes \
                     ({least_log}), or a single busy family's own memtables pass it"
                ));
            }
        }
        if self.p2p.peer_messages_per_sec == 0
            || self.p2p.peer_bytes_per_sec < self.p2p.max_gossip_bytes
            || self.p2p.peer_inflight_bytes < self.p2p.max_gossip_bytes
        {
            return bad(format!(
                "p2p.peer_messages_per_sec must be > 0, p2p.peer_bytes_per_sec and p2p.peer_inflight_bytes at least \
                 p2p.max_gossip_bytes ({}), or a peer's largest message could never pass",
                self.p2p.max_gossip_bytes
            ));
        }
        if self.p2p.tap_messages == 0 || self.p2p.tap_bytes < self.p2p.max_gossip_bytes {
            return bad(format!(
                "p2p.tap_messages must be > 0 and p2p.tap_bytes at least p2p.max_gossip_bytes ({}), or a peer's \
                 largest message could never reach a waiting proposer early",
                self.p2p.max_gossip_bytes
            ));
        }
        if self.mempool.gossip_batch_bytes as u64 * 2 > self.p2p.max_gossip_bytes {
            return bad(format!(
                "mempool.gossip_batch_bytes ({}) must be at most half of p2p.max_gossip_bytes ({})",
                self.mempool.gossip_batch_bytes, self.p2p.max_gossip_bytes
            ));
        }
        if self.grpc.max_subscribers == 0
            || self.grpc.stream_buffer == 0
            || self.grpc.stream_buffer_bytes < 64 * 1024
            || self.grpc.submit_stream_inflight == 0
            || self.grpc.max_streams_per_client == 0
            || self.grpc.max_submit_calls_per_client == 0
            || self.grpc.max_concurrent_per_connection == 0
            || self.grpc.stream_idle_timeout_secs == 0
        {
            return bad("grpc.max_subscribers, stream_buffer, submit_stream_inflight, max_streams_per_client, \
                 max_submit_calls_per_client, max_concurrent_per_connection and stream_idle_timeout_secs must be > 0, \
                 grpc.stream_buffer_bytes at least 64 KiB"
                .into());
        }
        let m = &self.mempool;
        if m.max_bundles == 0
            || m.max_bytes == 0
            || m.ingest_queue == 0
            || m.ingest_queue_bytes < 1024 * 1024
            || m.ingest_group == 0
            || m.admit_queue == 0
            || m.max_pending_per_sender == 0
            || m.gossip_flush_ms == 0
            || m.reannounce_ms < 100
        {
            return bad(
                "mempool sizes and queues must be > 0, mempool.ingest_queue_bytes at least 1 MiB and \
                 mempool.reannounce_ms at least 100"
                    .into(),
            );
        }
        if m.max_waiting > m.max_bundles
            || m.max_waiting_bytes > m.max_bytes
            || m.waiting_ttl_ms < 1_000
        {
            return bad(format!(
                "mempool.max_waiting ({}) and max_waiting_bytes ({}) must be within max_bundles ({}) and max_bytes \
                 ({}), and mempool.waiting_ttl_ms ({}) at least 1,000",
                m.max_waiting, m.max_waiting_bytes, m.max_bundles, m.max_bytes, m.waiting_ttl_ms
            ));
        }
        if self.sync.status_interval_ms == 0
            || self.sync.request_timeout_ms == 0
            || self.sync.batch_size == 0
        {
            return bad("sync intervals and batch_size must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings a config file must have.
    const MINIMAL: &str = r#"
            moniker = "a"
            data_dir = "d"
            genesis_file = "g"
            key_file = "k"
            [grpc]
            listen_addr = "127.0.0.1:1"
        "#;

    #[test]
    fn unknown_fields_are_rejected() {
        let text = format!("typo_field = 1\n{MINIMAL}");
        let err = toml::from_str::<NodeConfig>(&text).unwrap_err().to_string();
        assert!(err.contains("typo_field"), "{err}");
    }

    #[test]
    fn settings_override_a_config_and_are_checked() {
        let cfg: NodeConfig = toml::from_str(MINIMAL).unwrap();
        let set =
            |s: &[&str]| cfg.with_settings(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let changed = set(&["mempool.gossip_flush_ms=20", "p2p.pubsub=gossipsub"]).unwrap();
        assert_eq!(changed.mempool.gossip_flush_ms, 20);
        assert_eq!(changed.p2p.pubsub, PubSub::Gossipsub);
        assert_eq!(
            changed.mempool.gossip_batch_bytes,
            cfg.mempool.gossip_batch_bytes
        );
        // Unknown keys, values of the wrong type, and values validation refuses are errors.
        let err = set(&["mempool.gossip_flush_typo=20"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("gossip_flush_typo"), "{err}");
        assert!(set(&["mempool.gossip_flush_ms=fast"]).is_err());
        assert!(set(&["mempool.gossip_flush_ms=0"]).is_err());
        assert!(set(&["mempool.gossip_flush_ms"]).is_err());
        // Each refused with an error naming the setting (or its group).
        for (bad, named) in [
            (
                "storage.write_buffer_bytes=65536",
                "storage.write_buffer_bytes",
            ),
            ("storage.max_wal_bytes=8388608", "storage.max_wal_bytes"),
            ("storage.wal_flush_bytes=8388608", "storage.wal_flush_bytes"),
            // The tap must hold at least one message, and a peer's largest one.
            ("p2p.tap_messages=0", "p2p.tap_"),
            ("p2p.tap_bytes=1048576", "p2p.tap_"),
        ] {
            let err = set(&[bad]).unwrap_err().to_string();
            assert!(err.contains(named), "{bad}: {err}");
        }
        assert_eq!(
            set(&["storage.write_buffer_bytes=2097152"])
                .unwrap()
                .storage
                .write_buffer_bytes,
            2 << 20
        );
        assert_eq!(
            set(&["storage.wal_flush_bytes=0"])
                .unwrap()
                .storage
                .wal_flush_bytes,
            0
        );
    }

    #[test]
    fn minimal_config_gets_defaults_and_validates() {
        let cfg: NodeConfig = toml::from_str(MINIMAL).unwrap();
        assert!(cfg.storage.sync_writes);
        assert_eq!(cfg.grpc.stream_buffer, 32);
        cfg.validate().unwrap();
        let mut bad = cfg.clone();
        bad.p2p.listen_addr = "not an addr".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("p2p.listen_addr"));
    }

    #[test]
    fn l1_sections_are_checked() {
        let text = format!(
            "{MINIMAL}{}",
            r#"
            [l1]
            rpc_url = "ftp://l1"
            attestation_key_file = "attest.key"
            [l1.poster]
            bump_after_blocks = 0
        "#
        );
        let mut cfg: NodeConfig = toml::from_str(&text).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("l1.rpc_url"), "{err}");
        if let Some(l1) = cfg.l1.as_mut() {
            l1.rpc_url = "http://127.0.0.1:8545".into();
        }
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("bump_after_blocks"), "{err}");

        // Genesis [l1] needs every validator's attester, a contract address and a cadence.
        let key = crate::keys::NodeKey::generate();
        let mut g = test_genesis(&key, None, None);
        g.validate().unwrap();
        let without_l1 = g.hash().unwrap();
        g.l1 = Some(GenesisL1 {
            chain_id: 31337,
            commitments: "0x00000000000000000000000000000000000000aa".into(),
            commit_every: 10,
            inbox: "0x00000000000000000000000000000000000000bb".into(),
            inbox_from_block: 0,
            origin_safety: Default::default(),
            max_origin_lag: 64,
            staking: None,
        });
        let err = g.validate().unwrap_err().to_string();
        assert!(err.contains("v0") && err.contains("attester"), "{err}");
        g.validators[0].attester = Some("0x00000000000000000000000000000000000000bb".into());
        g.validate().unwrap();
        assert_ne!(
            g.hash().unwrap(),
            without_l1,
            "the L1 section is part of the genesis hash"
        );
        let mut bad = g.clone();
        bad.l1.as_mut().unwrap().commit_every = 0;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("commit_every"));
        let mut bad = g.clone();
        bad.l1.as_mut().unwrap().commitments = "nope".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("l1.commitments"));
    }
}
