//! Prometheus metrics: Baton's own, registered on a registry the node creates and passes in, and the engine's,
//! which Malachite 0.8 registers on its process-wide registry (its builder takes no registry). `/metrics` on the
//! node's metrics port serves both, as one document in the Prometheus text format.
//!
//! Names follow Prometheus conventions: a `baton_` prefix, base units (seconds, bytes), `_total` on counters.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodCodeLabel {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// A RocksDB column family.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabel {
    pub family: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

/// Every metric the node updates. Cheap to share (`Arc`); updates are atomic.
#[derive(Debug)]
pub struct Metrics {
    pub height: Gauge,
    pub round: Gauge,
    pub height_duration: Histogram,
    pub rounds_per_height: Histogram,
    pub benched_validators: Gauge,
    pub proposals: Counter,
    pub decided_bundles: Counter,
    pub invalid_proposals: Counter,
    pub evidence_reported: Counter,
    pub epoch: Gauge,
    pub validator_set_size: Gauge,
    pub validator_set_power: Gauge,
    pub in_validator_set: Gauge,
    pub jailed_validators: Gauge,
    pub mempool_bundles: Gauge,
    pub mempool_bytes: Gauge,
    pub mempool_capacity: Gauge,
    /// Pending bundles waiting behind a nonce gap (`mempool.max_waiting`), and their bytes.
    pub mempool_waiting: Gauge,
    pub mempool_waiting_bytes: Gauge,
    /// Bytes of submissions waiting in the ingest path, and the bound (`mempool.ingest_queue_bytes`).
    pub ingest_queued_bytes: Gauge,
    pub ingest_capacity_bytes: Gauge,
    /// Bundles the mempool lets wait behind nonce gaps at most (`mempool.max_waiting`).
    pub mempool_waiting_capacity: Gauge,
    /// Pending bundles kept aside for proposals (`mempool.side_cache`, `side_cache_bytes`), and their bytes.
    pub side_cache_bundles: Gauge,
    pub side_cache_bytes: Gauge,
    /// Senders whose next nonce on chain the host keeps in memory (at most 100,000; `baton_consensus::nonces`).
    pub nonce_table_senders: Gauge,
    /// Bytes of bundles waiting for the verifier pool, and the bound.
    pub verify_queued_bytes: Gauge,
    pub verify_capacity_bytes: Gauge,
    /// Consensus signature checks answered by the verify-once memory.
    pub signature_cache_hits: Counter,
    pub admitted: Counter,
    pub rejected: Family<ReasonLabel, Counter>,
    pub dropped: Family<ReasonLabel, Counter>,
    pub grpc_requests: Family<MethodLabel, Counter>,
    pub grpc_errors: Family<MethodCodeLabel, Counter>,
    pub grpc_duration: Family<MethodLabel, Histogram>,
    pub subscribers: Gauge,
    /// gRPC calls refused over a per-client limit ([`crate::clients`]), by kind (stream, submit).
    pub grpc_client_refused: Family<KindLabel, Counter>,
    /// `StreamBatches` streams closed because the client read nothing for `grpc.stream_idle_timeout_secs`.
    pub grpc_streams_idle_closed: Counter,
    /// Free bytes on the data directory's file system, and the watermark below which submissions are refused.
    pub storage_free_bytes: Gauge,
    pub storage_min_free_bytes: Gauge,
    /// The lowest height whose history this node keeps (`storage.retain_heights`).
    pub history_min_height: Gauge,
    /// Bytes of live RocksDB write-ahead log files, and the column families flushed early to keep it short
    /// (`storage.wal_flush_bytes`, [`crate::store::WalUpkeep`]), by family.
    pub storage_wal_bytes: Gauge,
    pub storage_wal_flushes: Family<FamilyLabel, Counter>,
    pub stream_lag: Histogram,
    pub store_write_duration: Family<OpLabel, Histogram>,
    pub store_written_bytes: Family<OpLabel, Counter>,
    pub peers: Gauge,
    pub gossip_bundles: Family<DirectionLabel, Counter>,
    pub gossip_bytes: Family<DirectionLabel, Counter>,
    /// Proposal-channel messages not taken in, by reason ([`crate::peers::Refusal`]).
    pub p2p_refused: Family<ReasonLabel, Counter>,
    pub p2p_penalties: Counter,
    pub p2p_tap_dropped: Counter,
    pub p2p_penalised_peers: Gauge,
    pub l1: L1Metrics,
}

/// The commitment poster's view of L1 (zero on nodes that do not post).
#[derive(Debug, Default)]
pub struct L1Metrics {
    pub head: Gauge,
    pub included_height: Gauge,
    pub safe_height: Gauge,
    pub finalized_height: Gauge,
    pub sent: Counter,
    pub fee_bumps: Counter,
    pub reorged: Counter,
    pub nonce_resyncs: Counter,
    pub gap_fills: Counter,
    pub spend_last_hour_wei: Gauge,
    pub poster_ok: Gauge,
    pub origin_block: Gauge,
    pub forced_waiting: Gauge,
    pub based_block: Gauge,
    pub based_held: Gauge,
    /// The based-rollup forwarder's fees over the last hour, and its budget (gwei).
    pub forward_spend_last_hour_gwei: Gauge,
    pub forward_budget_gwei: Gauge,
}

impl L1Metrics {
    /// Copies a poster status into the metrics (counters advance by what the status gained).
    pub fn observe(&self, s: &baton_l1_inclusion::poster::PosterStatus) {
        let set = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&self.head, s.l1_head);
        set(&self.included_height, s.included_height);
        set(&self.safe_height, s.safe_height);
        set(&self.finalized_height, s.finalized_height);
        let catch_up = |c: &Counter, total: u64| {
            c.inc_by(total.saturating_sub(c.get()));
        };
        catch_up(&self.sent, s.sent);
        catch_up(&self.fee_bumps, s.fee_bumps);
        catch_up(&self.reorged, s.reorged);
        catch_up(&self.nonce_resyncs, s.nonce_resyncs);
        catch_up(&self.gap_fills, s.gap_fills);
        self.spend_last_hour_wei
            .set(i64::try_from(s.spend_last_hour_wei).unwrap_or(i64::MAX));
        self.poster_ok.set(i64::from(s.last_error.is_none()));
    }
}

fn seconds_histogram() -> Histogram {
    // 100 us to about 100 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

impl Metrics {
    /// Registers every metric under `baton_` on `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Metrics> {
        let m = Metrics {
            height: Gauge::default(),
            round: Gauge::default(),
            height_duration: seconds_histogram(),
            rounds_per_height: Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 10.0]),
            benched_validators: Gauge::default(),
            proposals: Counter::default(),
            decided_bundles: Counter::default(),
            invalid_proposals: Counter::default(),
            evidence_reported: Counter::default(),
            epoch: Gauge::default(),
            validator_set_size: Gauge::default(),
            validator_set_power: Gauge::default(),
            in_validator_set: Gauge::default(),
            jailed_validators: Gauge::default(),
            mempool_bundles: Gauge::default(),
            mempool_bytes: Gauge::default(),
            mempool_capacity: Gauge::default(),
            mempool_waiting: Gauge::default(),
            mempool_waiting_bytes: Gauge::default(),
            ingest_queued_bytes: Gauge::default(),
            ingest_capacity_bytes: Gauge::default(),
            mempool_waiting_capacity: Gauge::default(),
            side_cache_bundles: Gauge::default(),
            side_cache_bytes: Gauge::default(),
            nonce_table_senders: Gauge::default(),
            verify_queued_bytes: Gauge::default(),
            verify_capacity_bytes: Gauge::default(),
            signature_cache_hits: Counter::default(),
            admitted: Counter::default(),
            rejected: Family::default(),
            dropped: Family::default(),
            grpc_requests: Family::default(),
            grpc_errors: Family::default(),
            grpc_duration: Family::new_with_constructor(seconds_histogram),
            subscribers: Gauge::default(),
            grpc_client_refused: Family::default(),
            grpc_streams_idle_closed: Counter::default(),
            storage_free_bytes: Gauge::default(),
            storage_min_free_bytes: Gauge::default(),
            history_min_height: Gauge::default(),
            storage_wal_bytes: Gauge::default(),
            storage_wal_flushes: Family::default(),
            stream_lag: Histogram::new([0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0, 256.0, 1024.0]),
            store_write_duration: Family::new_with_constructor(seconds_histogram),
            store_written_bytes: Family::default(),
            peers: Gauge::default(),
            gossip_bundles: Family::default(),
            gossip_bytes: Family::default(),
            p2p_refused: Family::default(),
            p2p_penalties: Counter::default(),
            p2p_tap_dropped: Counter::default(),
            p2p_penalised_peers: Gauge::default(),
            l1: L1Metrics::default(),
        };
        let r = registry.sub_registry_with_prefix("baton");
        r.register(
            "consensus_height",
            "Latest decided height",
            m.height.clone(),
        );
        r.register(
            "consensus_round",
            "Round of the height in progress",
            m.round.clone(),
        );
        r.register_with_unit(
            "consensus_height_duration",
            "Time from one decision to the next",
            Unit::Seconds,
            m.height_duration.clone(),
        );
        r.register(
            "consensus_rounds_per_height",
            "Rounds a height took to decide (1 = decided in round 0)",
            m.rounds_per_height.clone(),
        );
        r.register(
            "consensus_benched_validators",
            "Validators skipped by the proposer rotation at the next height after missing their turn",
            m.benched_validators.clone(),
        );
        r.register(
            "consensus_proposals",
            "Blocks this node proposed",
            m.proposals.clone(),
        );
        r.register(
            "consensus_decided_bundles",
            "Bundles in decided blocks",
            m.decided_bundles.clone(),
        );
        r.register(
            "consensus_invalid_proposals",
            "Proposals this node judged invalid",
            m.invalid_proposals.clone(),
        );
        r.register(
            "consensus_evidence_reported",
            "Equivocations the engine reported that verified here (each is put in a block, jailing its validator)",
            m.evidence_reported.clone(),
        );
        r.register(
            "consensus_epoch",
            "Epoch of the next height (0 without epochs)",
            m.epoch.clone(),
        );
        r.register(
            "consensus_validator_set_size",
            "Validators in the set deciding the next height",
            m.validator_set_size.clone(),
        );
        r.register(
            "consensus_validator_set_power",
            "Total voting power of the set deciding the next height",
            m.validator_set_power.clone(),
        );
        r.register(
            "consensus_in_validator_set",
            "1 if this node's key is in the set deciding the next height",
            m.in_validator_set.clone(),
        );
        r.register(
            "consensus_jailed_validators",
            "Validators with equivocation evidence in the chain",
            m.jailed_validators.clone(),
        );
        r.register(
            "mempool_bundles",
            "Bundles pending in the mempool",
            m.mempool_bundles.clone(),
        );
        r.register_with_unit(
            "mempool",
            "Encoded size of the pending bundles",
            Unit::Bytes,
            m.mempool_bytes.clone(),
        );
        r.register(
            "mempool_waiting_bundles",
            "Pending bundles waiting behind a nonce gap (limit mempool.max_waiting)",
            m.mempool_waiting.clone(),
        );
        r.register_with_unit(
            "mempool_waiting",
            "Encoded size of the pending bundles waiting behind a nonce gap (limit mempool.max_waiting_bytes)",
            Unit::Bytes,
            m.mempool_waiting_bytes.clone(),
        );
        r.register_with_unit(
            "ingest_queued",
            "Encoded size of submissions waiting in the ingest path (limit mempool.ingest_queue_bytes)",
            Unit::Bytes,
            m.ingest_queued_bytes.clone(),
        );
        r.register_with_unit(
            "ingest_capacity",
            "Bytes of submissions the ingest path holds at most (mempool.ingest_queue_bytes)",
            Unit::Bytes,
            m.ingest_capacity_bytes.clone(),
        );
        r.register(
            "mempool_waiting_capacity_bundles",
            "Bundles the mempool lets wait behind nonce gaps at most (mempool.max_waiting)",
            m.mempool_waiting_capacity.clone(),
        );
        r.register(
            "side_cache_bundles",
            "Checked bundles kept aside for proposals that may refer to them (limit mempool.side_cache)",
            m.side_cache_bundles.clone(),
        );
        r.register_with_unit(
            "side_cache",
            "Encoded size of the bundles kept aside (limit mempool.side_cache_bytes)",
            Unit::Bytes,
            m.side_cache_bytes.clone(),
        );
        r.register(
            "nonce_table_senders",
            "Senders whose next nonce on chain is kept in memory in front of the store (at most 100,000)",
            m.nonce_table_senders.clone(),
        );
        r.register(
            "mempool_capacity_bundles",
            "Bundles the mempool holds at most (mempool.max_bundles)",
            m.mempool_capacity.clone(),
        );
        r.register_with_unit(
            "verify_queued",
            "Bundles waiting for the verifier pool (signature recovery), in bytes",
            Unit::Bytes,
            m.verify_queued_bytes.clone(),
        );
        r.register_with_unit(
            "verify_capacity",
            "Bytes of bundles the verifier pool queues at most (verify.max_queue_bytes)",
            Unit::Bytes,
            m.verify_capacity_bytes.clone(),
        );
        r.register(
            "consensus_signature_cache_hits",
            "Consensus signature checks answered from the verify-once memory",
            m.signature_cache_hits.clone(),
        );
        r.register(
            "mempool_admitted",
            "Bundles admitted from clients",
            m.admitted.clone(),
        );
        r.register(
            "mempool_rejected",
            "Submissions refused, by reason",
            m.rejected.clone(),
        );
        r.register(
            "mempool_dropped",
            "Pending bundles dropped without inclusion, by reason (expired, nonce used)",
            m.dropped.clone(),
        );
        r.register(
            "grpc_requests",
            "gRPC requests, by method",
            m.grpc_requests.clone(),
        );
        r.register(
            "grpc_errors",
            "gRPC requests answered with an error status, by method and code",
            m.grpc_errors.clone(),
        );
        r.register_with_unit(
            "grpc_request_duration",
            "Time to answer a gRPC request (to the response headers for streams)",
            Unit::Seconds,
            m.grpc_duration.clone(),
        );
        r.register(
            "grpc_client_refused",
            "gRPC calls refused because the client already holds its share (grpc.max_streams_per_client, \
             grpc.max_submit_calls_per_client), by kind",
            m.grpc_client_refused.clone(),
        );
        r.register(
            "grpc_streams_idle_closed",
            "StreamBatches streams closed because the client read nothing for grpc.stream_idle_timeout_secs",
            m.grpc_streams_idle_closed.clone(),
        );
        r.register_with_unit(
            "storage_free",
            "Free space on the data directory's file system",
            Unit::Bytes,
            m.storage_free_bytes.clone(),
        );
        r.register_with_unit(
            "storage_min_free",
            "Below this much free space the node refuses submissions (storage.min_free_bytes)",
            Unit::Bytes,
            m.storage_min_free_bytes.clone(),
        );
        r.register_with_unit(
            "storage_wal",
            "Live RocksDB write-ahead log files (storage.wal_flush_bytes flushes the families that keep the oldest)",
            Unit::Bytes,
            m.storage_wal_bytes.clone(),
        );
        r.register(
            "storage_wal_flushes",
            "Column families flushed early because they kept the oldest write-ahead log files alive, by family",
            m.storage_wal_flushes.clone(),
        );
        r.register(
            "storage_history_min_height",
            "The lowest height whose history this node keeps (storage.retain_heights prunes below it)",
            m.history_min_height.clone(),
        );
        r.register(
            "stream_subscribers",
            "Open StreamBatches subscriptions",
            m.subscribers.clone(),
        );
        r.register(
            "stream_lag_heights",
            "Heights between the latest decided height and the height a stream sends",
            m.stream_lag.clone(),
        );
        r.register_with_unit(
            "storage_write_duration",
            "Time of a durable RocksDB write, by operation",
            Unit::Seconds,
            m.store_write_duration.clone(),
        );
        r.register_with_unit(
            "storage_written",
            "Bytes written durably, by operation",
            Unit::Bytes,
            m.store_written_bytes.clone(),
        );
        r.register("p2p_peers", "Connected peers", m.peers.clone());
        r.register(
            "p2p_refused_messages",
            "Proposal-channel messages (parts, dissemination, asks) not taken in, by reason: not_a_member (neither a \
             validator nor a configured peer), penalised, rate, inflight (per-peer limits in [p2p])",
            m.p2p_refused.clone(),
        );
        r.register(
            "p2p_penalties",
            "Peers penalised for sending bundles that fail the stateless checks",
            m.p2p_penalties.clone(),
        );
        r.register(
            "p2p_tap_dropped",
            "Peers' dissemination messages the tap could not hold for a waiting proposer (p2p.tap_messages, \
             tap_bytes); each is still taken in after the proposal",
            m.p2p_tap_dropped.clone(),
        );
        r.register(
            "p2p_penalised_peers",
            "Peers ignored on the proposal channel (as of the latest penalty or refusal)",
            m.p2p_penalised_peers.clone(),
        );
        r.register(
            "p2p_gossip_bundles",
            "Bundles disseminated, by direction",
            m.gossip_bundles.clone(),
        );
        r.register_with_unit(
            "p2p_gossip",
            "Dissemination bytes (bundle encodings), by direction",
            Unit::Bytes,
            m.gossip_bytes.clone(),
        );
        let l1 = &m.l1;
        r.register(
            "l1_head",
            "L1 head block number the poster last read",
            l1.head.clone(),
        );
        for (name, help, g) in [
            (
                "l1_commitment_included_height",
                "Highest Baton height whose commitment is included on L1",
                &l1.included_height,
            ),
            (
                "l1_commitment_safe_height",
                "Highest Baton height whose commitment is in a safe L1 block",
                &l1.safe_height,
            ),
            (
                "l1_commitment_finalized_height",
                "Highest Baton height whose commitment is in a finalized L1 block",
                &l1.finalized_height,
            ),
            (
                "l1_poster_ok",
                "1 when the poster's last look at L1 found nothing wrong, else 0",
                &l1.poster_ok,
            ),
            (
                "l1_origin_block",
                "Newest L1 block this node has seen at the genesis origin safety (what it proposes and accepts as L1 origin)",
                &l1.origin_block,
            ),
            (
                "l1_forced_waiting",
                "Forced-inclusion entries read from the inbox that can still be owed (resolved ones are forgotten)",
                &l1.forced_waiting,
            ),
            (
                "l1_based_block",
                "Newest L1 block the based rollups are derived up to",
                &l1.based_block,
            ),
            (
                "l1_based_batches_held",
                "Based-rollup batches held in memory: those of L1 blocks not finalized yet (older ones are served from the store)",
                &l1.based_held,
            ),
        ] {
            r.register(name, help, g.clone());
        }
        for (name, help, c) in [
            (
                "l1_transactions_sent",
                "Commitment transactions broadcast (every fee level counts)",
                &l1.sent,
            ),
            (
                "l1_fee_bumps",
                "Commitment transactions re-sent with higher fees",
                &l1.fee_bumps,
            ),
            (
                "l1_reorged_commitments",
                "Posted commitments that an L1 reorg removed (then posted again)",
                &l1.reorged,
            ),
            (
                "l1_nonce_resyncs",
                "Times the poster re-read its nonce after losing its transaction",
                &l1.nonce_resyncs,
            ),
            (
                "l1_nonce_gap_fills",
                "Self-transfers sent to fill a nonce gap below a commitment",
                &l1.gap_fills,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        r.register(
            "l1_forward_spend_last_hour_gwei",
            "Gwei the based-rollup forwarder paid for mined batch transactions in the last hour",
            l1.forward_spend_last_hour_gwei.clone(),
        );
        r.register(
            "l1_forward_budget_gwei",
            "The forwarder's fee budget per rolling hour (l1.forward.max_spend_gwei_per_hour); past it nothing is posted",
            l1.forward_budget_gwei.clone(),
        );
        r.register(
            "l1_poster_spend_last_hour_wei",
            "Wei the poster paid for included transactions in the last hour",
            l1.spend_last_hour_wei.clone(),
        );
        Arc::new(m)
    }

    /// Records a durable write.
    pub fn store_write(&self, op: &'static str, started: Instant, bytes: u64) {
        self.store_write_duration
            .get_or_create(&OpLabel { op })
            .observe(started.elapsed().as_secs_f64());
        self.store_written_bytes
            .get_or_create(&OpLabel { op })
            .inc_by(bytes);
    }
}

/// The text served at `/metrics`: this node's registry, then the engine's, in the Prometheus text format
/// (version 0.0.4), which every Prometheus and `promtool` reads.
pub fn render(registry: &Registry) -> String {
    let mut open_metrics = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut open_metrics, registry);
    let mut engine = String::new();
    malachitebft_app_channel::app::metrics::export(&mut engine);
    let mut out = to_prometheus_text(&open_metrics);
    out.push_str(&to_prometheus_text(&engine));
    out
}

/// Rewrites the OpenMetrics text `prometheus-client` produces into the Prometheus text format: counter families
/// are named with their `_total` suffix in `# HELP` / `# TYPE` (as their samples are), `# UNIT` and `# EOF` go.
fn to_prometheus_text(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut help: Option<&str> = None;
    for line in open_metrics.lines() {
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            // prometheus-client appends `_total` to every counter sample, even after a name that ends in it.
            let suffix = if kind == "counter" { "_total" } else { "" };
            if let Some(h) = help.take() {
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|r| r.split_once(' '))
                    .map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    registry: Arc<Registry>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header::CONTENT_TYPE;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    render(&registry),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_their_total_suffix_and_units_and_eof_go() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.admitted.inc_by(3);
        m.rejected
            .get_or_create(&ReasonLabel {
                reason: "bad_signature",
            })
            .inc();
        m.height.set(7);
        let text = render(&registry);
        assert!(text.contains("# HELP baton_mempool_admitted_total Bundles admitted from clients"));
        assert!(text.contains("# TYPE baton_mempool_admitted_total counter"));
        assert!(text.contains("baton_mempool_admitted_total 3"));
        assert!(text.contains("baton_mempool_rejected_total{reason=\"bad_signature\"} 1"));
        assert!(text.contains("# TYPE baton_consensus_height gauge"));
        assert!(text.contains("baton_consensus_height 7"));
        assert!(!text.contains("# UNIT") && !text.contains("# EOF"));
    }
}
