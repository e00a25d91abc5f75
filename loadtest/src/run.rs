//! The load run: open-loop signed submissions over `SubmitBundles` streams, every rollup's `StreamBatches`
//! followed, each bundle timed from submission to the moment its last entry shows up in a stream.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::check::{check, CheckReport, RunHistory, Submitted};
use baton_proto::client::BatonClient;
use baton_proto::pb;
use baton_proto::types::Hash;
use eyre::{bail, Result, WrapErr};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::plan::{self, Shape};
use crate::procstat::{self, Usage, Watched};

/// How long a bundle refused with UNAVAILABLE and no retry hint waits before it is sent again.
const RETRY_AFTER: Duration = Duration::from_millis(100);
/// When retrying, how many of a sender's bundles may be out and not yet answered for good: half the node's default
/// `mempool.max_nonce_gap` (64), so that a sender never runs further ahead of its lowest open nonce than the node
/// takes. Under load that the node keeps up with, a sender has one or two out.
const SENDER_WINDOW: u32 = 32;

/// What to offer and for how long: the shape of the load ([`Shape`]) and where it goes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadConfig {
    pub endpoints: Vec<String>,
    #[serde(flatten)]
    pub shape: Shape,
    /// Rollups to spread load over (the first N registered).
    pub rollups: usize,
    /// After the load stops, how long to wait for acknowledged bundles to show up.
    pub drain_secs: f64,
    /// Bundles expire this many heights after the height seen at start.
    pub expiry_heights: u64,
    /// Processes whose CPU and writes the report gives (the nodes under test; the harness is added).
    pub watched: Vec<Watched>,
    /// Send a bundle refused as temporary (a retry hint, or UNAVAILABLE) again after the node's hint (as a client
    /// should).
    pub retry_temporary: bool,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1e3;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1e3,
        }
    }
}

/// One second of the run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Second {
    pub t: u64,
    pub offered: u64,
    pub acked: u64,
    pub rejected: u64,
    pub delivered: u64,
    /// Entries of the bundles delivered in this second.
    pub delivered_entries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What a run found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub config: LoadConfig,
    pub network_id: u64,
    pub rollups: Vec<u64>,
    pub offered: u64,
    pub acked: u64,
    /// Final refusals, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Temporary refusals (the node shedding load, a full mempool) that the harness retried after the node's retry
    /// hint, as a client should: a sender's later nonces cannot be included until the refused one is.
    pub retried: BTreeMap<String, u64>,
    /// Bundles a sender held back, when they fell due, because one of its earlier bundles was waiting to be sent
    /// again: a wallet or a rollup's batcher does not run further ahead of a nonce the node refused. They go out
    /// once the refused one is answered for good, and their latency still counts from when they fell due.
    pub held: u64,
    pub delivered: u64,
    /// Acknowledged, never delivered within the drain time.
    pub lost: u64,
    /// Bundles with an entry delivered more than once.
    pub duplicated: u64,
    /// Bundles whose entries arrived at more than one height (atomicity broken).
    pub split: u64,
    /// Entries in the streams that this run did not submit.
    pub unknown_entries: u64,
    /// What the run checker found on every endpoint's chain.
    pub check: CheckSummary,
    /// Whether every acknowledged bundle was delivered exactly once, at one height, and the checker found
    /// nothing wrong on any node.
    pub complete: bool,
    /// Rates over the steady part of the run (after the ramp, until the load stopped).
    pub offered_per_sec: f64,
    pub acked_per_sec: f64,
    pub delivered_per_sec: f64,
    /// Entries delivered per second over the steady part (bundles times their entries).
    pub delivered_entries_per_sec: f64,
    /// Payload bytes delivered per second over the steady part.
    pub delivered_payload_bytes_per_sec: f64,
    /// Heights decided per second over the steady part (read from the first endpoint's status).
    pub heights_per_sec: f64,
    /// Scheduled send -> acknowledged.
    pub ack_latency: Percentiles,
    /// Scheduled send -> last entry seen in a rollup stream. Counted from the instant the bundle was due, not from
    /// when the harness got round to sending it, so a stall of the sender shows here (no coordinated omission).
    pub latency: Percentiles,
    /// The same, for the bundles admitted at their first send (never refused for now, nor held back behind a
    /// refused one): what a client whose bundle the node took at once waits, while the others are shed. Equal to `latency` when nothing was
    /// refused.
    pub latency_first_try: Percentiles,
    /// Latency CDF points (ms, fraction), for plotting.
    pub latency_cdf: Vec<(f64, f64)>,
    /// How far the generator fell behind its schedule at worst (ms): if large, the harness, not the network,
    /// limited the offered rate.
    pub generator_max_lag_ms: f64,
    /// Seconds spent building and signing the step's bundles before its timed window.
    pub prepare_secs: f64,
    /// CPU and storage writes of every watched process and the whole machine over the steady part.
    pub usage: Usage,
    pub timeline: Vec<Second>,
    /// Heights seen in the first rollup's stream during the run.
    pub heights_seen: u64,
    /// Per node, the storage writes and heights its own histograms counted as slow over the steady part
    /// ([`crate::nodemetrics`]); nodes whose metrics could not be read are left out.
    pub node_stalls: BTreeMap<String, crate::nodemetrics::Stalls>,
    /// Of the heights seen, those decided in a round above 0 (a proposer that did not propose in time).
    pub heights_late_round: u64,
    /// Heights whose block came more than [`SLOW_HEIGHT_MS`] after its parent's (by the blocks' timestamps) or
    /// was built in a round above 0, so that a stall in the timeline can be matched to a failed round or to a slow
    /// height in round 0. At most [`SLOW_HEIGHTS_KEPT`], the first ones.
    pub slow_heights: Vec<SlowHeight>,
}

/// A block timestamp gap at or above which a height is listed in [`Report::slow_heights`].
pub const SLOW_HEIGHT_MS: u64 = 150;
/// How many slow heights a report lists.
pub const SLOW_HEIGHTS_KEPT: usize = 500;

/// What the harness notes of each height's header.
struct HeightMark {
    height: u64,
    timestamp_ms: u64,
    round: u32,
    proposer: String,
    bundles: u32,
}

impl HeightMark {
    fn of(batch: &baton_proto::types::RollupBatch) -> Self {
        let h = &batch.header;
        HeightMark {
            height: h.height,
            timestamp_ms: h.timestamp_ms,
            round: h.round,
            proposer: h.proposer.to_string(),
            bundles: h.bundle_count,
        }
    }
}

/// One slow height: when the harness saw it and what its header says.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SlowHeight {
    pub height: u64,
    /// Seconds since the window opened when the harness saw the block (the timeline's clock).
    pub seen_at: f64,
    /// This block's timestamp minus its parent's.
    pub gap_ms: u64,
    /// The round the block was built for.
    pub round: u32,
    pub proposer: String,
    pub bundles: u32,
}

/// The run checker's findings (counts, and the first of each kind).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckSummary {
    pub nodes: usize,
    pub heights_compared: u64,
    pub forks: usize,
    pub broken_links: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unknown: usize,
    pub split: usize,
    pub ok: bool,
    /// One line with the counts and the first findings.
    pub summary: String,
}

impl From<&CheckReport> for CheckSummary {
    fn from(r: &CheckReport) -> Self {
        CheckSummary {
            nodes: r.nodes,
            heights_compared: r.heights_compared,
            forks: r.forks.len(),
            broken_links: r.broken_links.len(),
            lost: r.lost.len(),
            duplicated: r.duplicated.len(),
            unknown: r.unknown.len(),
            split: r.split.len(),
            ok: r.ok(),
            summary: r.to_string(),
        }
    }
}

struct Rec {
    submitted: f64,
    acked: bool,
    /// Refused for now at least once (and sent again), or held back behind its sender's refused bundle.
    refused: bool,
    sender: u64,
    /// Entries per rollup.
    rollups: BTreeMap<u64, u32>,
    expected: u32,
    seen: u32,
    height: Option<u64>,
    split: bool,
    delivered: Option<f64>,
}

/// What to send after an answer: the answered bundle again after a wait, and bundles its sender held back.
#[derive(Debug, Default, PartialEq)]
struct Answered {
    again: Option<(pb::SubmitBundlesRequest, Duration)>,
    release: Vec<pb::SubmitBundlesRequest>,
}

struct Tracker {
    start: Instant,
    recs: HashMap<Hash, Rec>,
    refs: HashMap<u64, Hash>,
    /// Requests sent and not yet answered for good, kept to be sent again after a temporary refusal (when retrying).
    requests: HashMap<u64, pb::SubmitBundlesRequest>,
    attempts: HashMap<u64, u32>,
    retry: bool,
    retried: BTreeMap<String, u64>,
    /// Per sender, its bundles refused for now and not yet answered for good: while there are any, the sender's
    /// later bundles are held back (when retrying).
    in_retry: HashMap<u64, BTreeSet<u64>>,
    /// Per sender, the bundles held back, in nonce order.
    held: HashMap<u64, VecDeque<pb::SubmitBundlesRequest>>,
    /// Per sender, its bundles sent and not yet answered for good (when retrying; at most [`SENDER_WINDOW`]).
    out: HashMap<u64, u32>,
    held_count: u64,
    offered: u64,
    acked: u64,
    rejected: BTreeMap<String, u64>,
    delivered: u64,
    duplicated: u64,
    split: u64,
    unknown_entries: u64,
    ack_hist: Histogram<u64>,
    hist: Histogram<u64>,
    first_try_hist: Histogram<u64>,
    seconds: Vec<(Second, Histogram<u64>)>,
    max_lag_ms: f64,
    /// The last header seen in the first rollup's stream: (height, timestamp).
    last_header: Option<(u64, u64)>,
    heights_seen: u64,
    heights_late_round: u64,
    slow_heights: Vec<SlowHeight>,
}

fn hist() -> Histogram<u64> {
    // Microseconds, 1 us to 1 hour, 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Tracker {
    fn new() -> Self {
        Tracker {
            start: Instant::now(),
            recs: HashMap::new(),
            refs: HashMap::new(),
            requests: HashMap::new(),
            attempts: HashMap::new(),
            retry: false,
            retried: BTreeMap::new(),
            in_retry: HashMap::new(),
            held: HashMap::new(),
            out: HashMap::new(),
            held_count: 0,
            offered: 0,
            acked: 0,
            rejected: BTreeMap::new(),
            delivered: 0,
            duplicated: 0,
            split: 0,
            unknown_entries: 0,
            ack_hist: hist(),
            hist: hist(),
            first_try_hist: hist(),
            seconds: Vec::new(),
            max_lag_ms: 0.0,
            last_header: None,
            heights_seen: 0,
            heights_late_round: 0,
            slow_heights: Vec::new(),
        }
    }

    /// A height seen in the first rollup's stream (every height comes through it, with or without entries).
    fn height_seen(&mut self, h: HeightMark) {
        let gap_ms = match self.last_header {
            Some((height, ts)) if height + 1 == h.height => h.timestamp_ms.saturating_sub(ts),
            _ => 0,
        };
        self.last_header = Some((h.height, h.timestamp_ms));
        self.heights_seen += 1;
        if h.round > 0 {
            self.heights_late_round += 1;
        }
        if (gap_ms >= SLOW_HEIGHT_MS || h.round > 0) && self.slow_heights.len() < SLOW_HEIGHTS_KEPT
        {
            let seen_at = self.now();
            self.slow_heights.push(SlowHeight {
                height: h.height,
                seen_at,
                gap_ms,
                round: h.round,
                proposer: h.proposer,
                bundles: h.bundles,
            });
        }
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn second(&mut self, t: f64) -> &mut (Second, Histogram<u64>) {
        let i = t.max(0.0) as usize;
        while self.seconds.len() <= i {
            let t = self.seconds.len() as u64;
            self.seconds.push((
                Second {
                    t,
                    ..Default::default()
                },
                hist(),
            ));
        }
        &mut self.seconds[i]
    }

    /// A bundle fell due; `scheduled` is when (seconds after the start), from which its latency counts. Returns the
    /// request to send now, or `None` when (retrying) its sender has an earlier bundle waiting to be sent again, or
    /// [`SENDER_WINDOW`] bundles out: it is then held, and released in order by [`Tracker::answered`].
    fn offered(
        &mut self,
        client_ref: u64,
        sender: u64,
        hash: Hash,
        rollups: BTreeMap<u64, u32>,
        scheduled: f64,
        request: pb::SubmitBundlesRequest,
    ) -> Option<pb::SubmitBundlesRequest> {
        let entries = rollups.values().sum();
        let t = scheduled;
        let lag_ms = ((self.now() - scheduled) * 1e3).max(0.0);
        self.offered += 1;
        self.max_lag_ms = self.max_lag_ms.max(lag_ms);
        self.second(t).0.offered += 1;
        self.refs.insert(client_ref, hash);
        let hold = self.retry
            && (self.in_retry.contains_key(&sender)
                || self.held.contains_key(&sender)
                || self.out.get(&sender).copied().unwrap_or(0) >= SENDER_WINDOW);
        self.recs.insert(
            hash,
            Rec {
                submitted: t,
                acked: false,
                refused: hold,
                sender,
                rollups,
                expected: entries,
                seen: 0,
                height: None,
                split: false,
                delivered: None,
            },
        );
        if self.retry {
            self.requests.insert(client_ref, request.clone());
        }
        if hold {
            self.held_count += 1;
            self.held.entry(sender).or_default().push_back(request);
            return None;
        }
        if self.retry {
            *self.out.entry(sender).or_default() += 1;
        }
        Some(request)
    }

    /// Takes an answer. When the node said the refusal is temporary (a retry hint, or UNAVAILABLE), returns the
    /// request to send again and after how long: the wait doubles with each refusal of the same bundle, from the
    /// node's hint up to 16 times it. When the answer is final and it was the last of its sender's bundles waiting
    /// to be sent again, returns the bundles the sender held back meanwhile, to send now.
    fn answered(
        &mut self,
        client_ref: u64,
        result: Option<pb::submit_bundles_response::Result>,
    ) -> Answered {
        const MAX_ATTEMPTS: u32 = 600;
        let t = self.now();
        let sender = self
            .refs
            .get(&client_ref)
            .and_then(|h| self.recs.get(h))
            .map(|r| r.sender);
        if let Some(pb::submit_bundles_response::Result::Error(e)) = &result {
            let attempts = self.attempts.entry(client_ref).or_insert(0);
            if self.retry
                && (e.retry_after_ms > 0 || e.code == tonic::Code::Unavailable as i32)
                && *attempts < MAX_ATTEMPTS
                && self.refs.contains_key(&client_ref)
            {
                *attempts += 1;
                *self.retried.entry(reason(e.code, &e.message)).or_default() += 1;
                let hint = match e.retry_after_ms {
                    0 => RETRY_AFTER,
                    ms => Duration::from_millis(ms),
                };
                // Doubling from the hint, to at most 16 times the default or the hint itself if longer.
                let wait =
                    (hint * (1u32 << (*attempts - 1).min(4))).min(hint.max(RETRY_AFTER * 16));
                if let Some(r) = self
                    .refs
                    .get(&client_ref)
                    .and_then(|h| self.recs.get_mut(h))
                {
                    r.refused = true;
                    self.in_retry
                        .entry(r.sender)
                        .or_default()
                        .insert(client_ref);
                }
                return Answered {
                    again: self.requests.get(&client_ref).cloned().map(|r| (r, wait)),
                    release: Vec::new(),
                };
            }
        }
        self.requests.remove(&client_ref);
        self.attempts.remove(&client_ref);
        let release = sender
            .map(|s| self.settled(s, client_ref))
            .unwrap_or_default();
        let Some(hash) = self.refs.remove(&client_ref) else {
            return Answered::default();
        };
        match result {
            Some(pb::submit_bundles_response::Result::BundleHash(_)) => {
                self.acked += 1;
                self.second(t).0.acked += 1;
                if let Some(r) = self.recs.get_mut(&hash) {
                    r.acked = true;
                    let us = ((t - r.submitted) * 1e6).max(1.0) as u64;
                    let _ = self.ack_hist.record(us);
                }
            }
            Some(pb::submit_bundles_response::Result::Error(e)) => {
                self.second(t).0.rejected += 1;
                *self.rejected.entry(reason(e.code, &e.message)).or_default() += 1;
            }
            None => {
                *self.rejected.entry("no result".into()).or_default() += 1;
            }
        }
        Answered {
            again: None,
            release,
        }
    }

    /// A bundle of `sender` answered for good. Once none of its bundles waits to be sent again, its held bundles
    /// are released, in order, as far as its window allows.
    fn settled(&mut self, sender: u64, client_ref: u64) -> Vec<pb::SubmitBundlesRequest> {
        if let Some(out) = self.out.get_mut(&sender) {
            *out = out.saturating_sub(1);
        }
        if let Some(waiting) = self.in_retry.get_mut(&sender) {
            waiting.remove(&client_ref);
            if !waiting.is_empty() {
                return Vec::new();
            }
            self.in_retry.remove(&sender);
        }
        let out = self.out.entry(sender).or_default();
        let mut release = Vec::new();
        if let Some(held) = self.held.get_mut(&sender) {
            while *out < SENDER_WINDOW {
                let Some(r) = held.pop_front() else { break };
                *out += 1;
                release.push(r);
            }
            if held.is_empty() {
                self.held.remove(&sender);
            }
        }
        if *out == 0 {
            self.out.remove(&sender);
        }
        release
    }

    fn entry(&mut self, height: u64, bundle: Hash) {
        let t = self.now();
        let Some(r) = self.recs.get_mut(&bundle) else {
            self.unknown_entries += 1;
            return;
        };
        r.seen += 1;
        match r.height {
            None => r.height = Some(height),
            Some(h) if h != height && !r.split => {
                r.split = true;
                self.split += 1;
            }
            _ => {}
        }
        if r.seen == r.expected + 1 {
            self.duplicated += 1;
        }
        if r.seen == r.expected {
            let expected = r.expected;
            r.delivered = Some(t);
            let us = ((t - r.submitted) * 1e6).max(1.0) as u64;
            self.delivered += 1;
            let _ = self.hist.record(us);
            if !r.refused {
                let _ = self.first_try_hist.record(us);
            }
            let s = self.second(t);
            s.0.delivered += 1;
            s.0.delivered_entries += u64::from(expected);
            let _ = s.1.record(us);
        }
    }

    fn outstanding(&self) -> u64 {
        self.recs
            .values()
            .filter(|r| r.acked && r.delivered.is_none())
            .count() as u64
    }
}

fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stable label for a refusal: the status code and the message's first sentence (up to 120 characters), every
/// word holding a digit (a nonce, a height, an address) written `N`, so that refusals of one kind count together
/// and kinds that share their first words (a used nonce, a nonce too far ahead) do not.
fn reason(code: i32, message: &str) -> String {
    let code = tonic::Code::from(code);
    let first = message.split(';').next().unwrap_or(message);
    let words: Vec<&str> = first
        .split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "N"
            } else {
                w
            }
        })
        .collect();
    let mut label = words.join(" ");
    if let Some((cut, _)) = label.char_indices().nth(120) {
        label.truncate(cut);
    }
    format!("{code:?}: {label}")
}

/// Each watched node's stall counts now, by name (nodes whose metrics cannot be read are left out).
async fn read_stalls(watched: &[Watched]) -> BTreeMap<String, crate::nodemetrics::Stalls> {
    let mut out = BTreeMap::new();
    for w in watched {
        if let Some(addr) = &w.metrics {
            if let Ok(s) = crate::nodemetrics::read(addr).await {
                out.insert(w.name.clone(), s);
            }
        }
    }
    out
}

/// Runs the load and returns the report. `progress` is called about once a second with a one-line summary.
pub async fn run(
    cfg: LoadConfig,
    progress: impl Fn(&str) + Send + Sync + 'static,
) -> Result<Report> {
    if cfg.endpoints.is_empty() {
        bail!("no endpoints");
    }
    let mut first = BatonClient::connect(cfg.endpoints[0].clone())
        .await
        .wrap_err("connect to the first endpoint")?;
    let registry = first.list_rollups().await?;
    let rollups: Vec<u64> = registry
        .rollups
        .iter()
        .map(|r| r.id)
        .take(cfg.rollups.max(1))
        .collect();
    if rollups.is_empty() {
        bail!("the network registers no rollups");
    }
    let start_height = first.status().await?.latest_height;
    let expiry = start_height + cfg.expiry_heights;
    let tracker = Arc::new(Mutex::new(Tracker::new()));

    // Follow every rollup from the next height, spread over the endpoints.
    let mut subscribers = Vec::new();
    for (i, rollup) in rollups.iter().enumerate() {
        let url = cfg.endpoints[i % cfg.endpoints.len()].clone();
        let mut c = BatonClient::connect(url).await?;
        let mut stream = c.stream_batches(*rollup, start_height + 1).await?;
        let tracker = tracker.clone();
        subscribers.push(tokio::spawn(async move {
            while let Ok(Some(batch)) = stream.next().await {
                let mut t = lock(&tracker);
                if i == 0 {
                    t.height_seen(HeightMark::of(&batch));
                }
                for e in &batch.entries {
                    t.entry(batch.header.height, e.bundle_hash);
                }
            }
        }));
    }

    // Every bundle of the step, signed and encoded before the timed window opens.
    let prepare_started = Instant::now();
    let shape = cfg.shape.clone();
    let (rollups_for_plan, network_id) = (rollups.clone(), registry.network_id);
    let plans = tokio::task::spawn_blocking(move || {
        plan::build(&shape, &rollups_for_plan, network_id, expiry)
    })
    .await
    .wrap_err("the signing task failed")??;
    let prepare_secs = prepare_started.elapsed().as_secs_f64();
    progress(&format!(
        "prepared {} signed bundles in {prepare_secs:.1} s",
        plans.iter().map(Vec::len).sum::<usize>()
    ));

    // Submitters: one SubmitBundles stream each, opened before the window; the window starts now.
    let mut streams = Vec::new();
    for c in 0..plans.len() {
        let url = cfg.endpoints[c % cfg.endpoints.len()].clone();
        let client = BatonClient::connect(url).await?;
        let (mut rollup_client, _) = client.raw();
        let (tx, rx) = mpsc::channel::<pb::SubmitBundlesRequest>(8192);
        let responses = rollup_client
            .submit_bundles(ReceiverStream::new(rx))
            .await?
            .into_inner();
        streams.push((tx, responses));
    }
    let mut watched = cfg.watched.clone();
    watched.push(procstat::me());
    let started = Instant::now();
    {
        let mut t = lock(&tracker);
        t.start = started;
        t.retry = cfg.retry_temporary;
    }
    let mut submitters = Vec::new();
    for (plan, (tx, mut responses)) in plans.into_iter().zip(streams) {
        let t2 = tracker.clone();
        // Refused for now: sent again on the same stream after the node's retry hint.
        let resend = tx.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(r)) = responses.message().await {
                let Answered { again, release } = lock(&t2).answered(r.client_ref, r.result);
                for req in release {
                    if resend.send(req).await.is_err() {
                        return;
                    }
                }
                if let Some((req, wait)) = again {
                    let resend = resend.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = resend.send(req).await;
                    });
                }
            }
        });
        let tracker = tracker.clone();
        let writer = tokio::spawn(async move {
            let mut plan = plan.into_iter().peekable();
            while let Some(next) = plan.peek() {
                let due = started + Duration::from_secs_f64(next.at);
                tokio::time::sleep_until(due.into()).await;
                // Everything due by now goes out in one go.
                let now = started.elapsed().as_secs_f64();
                while let Some(p) = plan.next_if(|p| p.at <= now) {
                    let now = lock(&tracker).offered(
                        p.client_ref,
                        p.sender,
                        p.hash,
                        p.rollups,
                        p.at,
                        p.request,
                    );
                    if let Some(request) = now {
                        if tx.send(request).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        submitters.push((writer, reader));
    }

    // Progress, until the load ends and the drain completes (or times out).
    let load_end = Duration::from_secs_f64(cfg.shape.duration_secs);
    let drain_end = load_end + Duration::from_secs_f64(cfg.drain_secs);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut writers_done = false;
    // CPU, writes and heights over the steady part: from the end of the ramp to the end of the load.
    let steady_start = Duration::from_secs_f64(cfg.shape.ramp_secs.ceil()).min(load_end);
    let mut at_steady: Option<(procstat::Sample, u64)> = None;
    let mut at_end: Option<(procstat::Sample, u64)> = None;
    let mut stalls_at_steady = BTreeMap::new();
    let mut stalls_at_end = BTreeMap::new();
    let mut status_client = BatonClient::connect(cfg.endpoints[0].clone()).await?;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        if at_steady.is_none() && elapsed >= steady_start {
            let h = status_client.status().await.map_or(0, |s| s.latest_height);
            at_steady = Some((procstat::sample(&watched), h));
            stalls_at_steady = read_stalls(&watched).await;
        }
        if !writers_done && elapsed >= load_end {
            for (w, _) in &mut submitters {
                let _ = w.await;
            }
            writers_done = true;
            let h = status_client.status().await.map_or(0, |s| s.latest_height);
            at_end = Some((procstat::sample(&watched), h));
            stalls_at_end = read_stalls(&watched).await;
        }
        let line = {
            let t = lock(&tracker);
            let p = Percentiles::of(&t.hist);
            format!(
                "t={:>5.1}s offered {} acked {} rejected {} delivered {} outstanding {} | latency p50 {:.1} ms p99 {:.1} ms",
                elapsed.as_secs_f64(),
                t.offered,
                t.acked,
                t.rejected.values().sum::<u64>(),
                t.delivered,
                t.outstanding(),
                p.p50,
                p.p99
            )
        };
        progress(&line);
        if writers_done {
            let t = lock(&tracker);
            let answered = t.refs.is_empty();
            if (answered && t.outstanding() == 0) || elapsed >= drain_end {
                break;
            }
        }
    }
    for s in subscribers {
        s.abort();
    }
    for (_, r) in submitters {
        r.abort();
    }

    // The checker over every endpoint's chain.
    let mut history = RunHistory {
        submitted: lock(&tracker)
            .recs
            .iter()
            .map(|(h, r)| Submitted {
                bundle: *h,
                entries: r.rollups.clone(),
                acked: r.acked,
            })
            .collect(),
        ..RunHistory::default()
    };
    crate::chain::read_all(&mut history, &cfg.endpoints, &rollups)
        .await
        .wrap_err("reading the chains for the checker")?;
    // Other clients' bundles (not this run's) on the chain are not findings here.
    let mut checked = check(&history);
    checked.unknown.clear();
    progress(&format!("checker: {checked}"));

    let t = lock(&tracker);
    let lost = t.outstanding();
    let steady_from = cfg.shape.ramp_secs.ceil() as usize;
    let steady_to = (cfg.shape.duration_secs.floor() as usize).max(steady_from + 1);
    let window: Vec<&Second> = t
        .seconds
        .iter()
        .map(|(s, _)| s)
        .filter(|s| (s.t as usize) >= steady_from && (s.t as usize) < steady_to)
        .collect();
    let per_sec = |f: &dyn Fn(&Second) -> u64| -> f64 {
        if window.is_empty() {
            0.0
        } else {
            window.iter().map(|s| f(s)).sum::<u64>() as f64 / window.len() as f64
        }
    };
    let (usage, heights_per_sec) = match (&at_steady, &at_end) {
        (Some((a, ha)), Some((b, hb))) => {
            let u = procstat::usage(&watched, a, b);
            let hps = hb.saturating_sub(*ha) as f64 / u.window_secs;
            (u, hps)
        }
        _ => (Usage::default(), 0.0),
    };
    let entries_per_bundle = |s: &Second| s.delivered_entries;
    let mut cdf = Vec::new();
    if !t.hist.is_empty() {
        for q in 0..=200 {
            let q = q as f64 / 200.0;
            cdf.push((t.hist.value_at_quantile(q) as f64 / 1e3, q));
        }
    }
    Ok(Report {
        network_id: registry.network_id,
        rollups,
        offered: t.offered,
        acked: t.acked,
        rejected: t.rejected.clone(),
        retried: t.retried.clone(),
        held: t.held_count,
        delivered: t.delivered,
        lost,
        duplicated: t.duplicated,
        split: t.split,
        unknown_entries: t.unknown_entries,
        complete: lost == 0 && t.duplicated == 0 && t.split == 0 && checked.ok(),
        check: CheckSummary::from(&checked),
        offered_per_sec: per_sec(&|s| s.offered),
        acked_per_sec: per_sec(&|s| s.acked),
        delivered_per_sec: per_sec(&|s| s.delivered),
        delivered_entries_per_sec: per_sec(&entries_per_bundle),
        delivered_payload_bytes_per_sec: per_sec(&entries_per_bundle)
            * cfg.shape.payload_bytes as f64,
        heights_per_sec,
        prepare_secs,
        usage,
        ack_latency: Percentiles::of(&t.ack_hist),
        latency: Percentiles::of(&t.hist),
        latency_first_try: Percentiles::of(&t.first_try_hist),
        latency_cdf: cdf,
        generator_max_lag_ms: t.max_lag_ms,
        timeline: t
            .seconds
            .iter()
            .map(|(s, h)| {
                let p = Percentiles::of(h);
                Second {
                    p50_ms: p.p50,
                    p99_ms: p.p99,
                    ..s.clone()
                }
            })
            .collect(),
        node_stalls: stalls_at_end
            .iter()
            .filter_map(|(name, end): (&String, &crate::nodemetrics::Stalls)| {
                stalls_at_steady
                    .get(name)
                    .map(|start| (name.clone(), end.since(start)))
            })
            .collect(),
        heights_seen: t.heights_seen,
        heights_late_round: t.heights_late_round,
        slow_heights: t.slow_heights.clone(),
        config: cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_heights_are_those_in_a_later_round_or_long_after_their_parent() {
        let mut t = Tracker::new();
        let mark = |height: u64, timestamp_ms: u64, round: u32| HeightMark {
            height,
            timestamp_ms,
            round,
            proposer: format!("p{height}"),
            bundles: 3,
        };
        t.height_seen(mark(10, 1_000, 0));
        t.height_seen(mark(11, 1_020, 0));
        t.height_seen(mark(12, 1_020 + SLOW_HEIGHT_MS, 0));
        t.height_seen(mark(13, 1_020 + SLOW_HEIGHT_MS + 30, 1));
        t.height_seen(mark(
            14,
            1_020 + SLOW_HEIGHT_MS + 30 + SLOW_HEIGHT_MS - 1,
            0,
        ));
        // A gap in the heights seen (a missed message) is not a slow height.
        t.height_seen(mark(20, 9_999_999, 0));
        assert_eq!(t.heights_seen, 6);
        assert_eq!(t.heights_late_round, 1);
        let slow: Vec<(u64, u64, u32)> = t
            .slow_heights
            .iter()
            .map(|s| (s.height, s.gap_ms, s.round))
            .collect();
        assert_eq!(slow, vec![(12, SLOW_HEIGHT_MS, 0), (13, 30, 1)]);
        assert_eq!(t.slow_heights[1].proposer, "p13");
    }

    #[test]
    fn refusals_the_node_calls_temporary_are_retried_and_others_are_final() {
        let mut t = Tracker::new();
        t.retry = true;
        let req = |client_ref| pb::SubmitBundlesRequest {
            client_ref,
            bundle: None,
        };
        for r in [1, 2, 4] {
            // Three senders, one bundle each.
            let sent = t.offered(
                r,
                r,
                Hash([r as u8; 32]),
                BTreeMap::from([(1, 1)]),
                0.0,
                req(r),
            );
            assert_eq!(sent, Some(req(r)));
        }
        let refused = |code: tonic::Code, retry_after_ms: u64| {
            Some(pb::submit_bundles_response::Result::Error(
                pb::SubmitError {
                    code: code as i32,
                    message: "the node is overloaded".into(),
                    retry_after_ms,
                },
            ))
        };
        let again = |r, wait| Answered {
            again: Some((req(r), wait)),
            release: vec![],
        };
        assert_eq!(
            t.answered(1, refused(tonic::Code::Unavailable, 0)),
            again(1, RETRY_AFTER)
        );
        assert_eq!(
            t.answered(2, refused(tonic::Code::InvalidArgument, 0)),
            Answered::default()
        );
        // A refusal with the node's retry hint (a full mempool) is sent again after the hint, then twice that, up
        // to 1.6 s.
        let hinted = refused(tonic::Code::ResourceExhausted, 250);
        for ms in [250, 500, 1_000, 1_600, 1_600] {
            assert_eq!(
                t.answered(4, hinted.clone()),
                again(4, Duration::from_millis(ms))
            );
        }
        let ok = || Some(pb::submit_bundles_response::Result::BundleHash(vec![]));
        t.answered(4, ok());
        // The retried one is acknowledged on its second try; the other stays refused.
        t.answered(1, ok());
        assert_eq!((t.acked, t.rejected.values().sum::<u64>()), (2, 1));
        assert_eq!(t.retried.values().sum::<u64>(), 6);
        assert!(t.requests.is_empty());
        // Delivered: counted in the latency of all bundles, not in that of bundles admitted at their first send.
        t.entry(3, Hash([1; 32]));
        assert_eq!((t.hist.len(), t.first_try_hist.len()), (1, 0));
        // A bundle taken at once counts in both.
        t.offered(3, 3, Hash([3; 32]), BTreeMap::from([(1, 1)]), 0.0, req(3));
        t.answered(3, ok());
        t.entry(3, Hash([3; 32]));
        assert_eq!((t.hist.len(), t.first_try_hist.len()), (2, 1));
    }

    #[test]
    fn a_sender_holds_its_later_bundles_while_an_earlier_one_waits_to_be_sent_again() {
        let mut t = Tracker::new();
        t.retry = true;
        let req = |client_ref| pb::SubmitBundlesRequest {
            client_ref,
            bundle: None,
        };
        let (alice, bob) = (7, 8);
        let due = |t: &mut Tracker, r: u64, sender| {
            t.offered(
                r,
                sender,
                Hash([r as u8; 32]),
                BTreeMap::from([(1, 1)]),
                0.0,
                req(r),
            )
        };
        let busy = || {
            Some(pb::submit_bundles_response::Result::Error(
                pb::SubmitError {
                    code: tonic::Code::Unavailable as i32,
                    message: "the node is overloaded".into(),
                    retry_after_ms: 100,
                },
            ))
        };
        let ok = || Some(pb::submit_bundles_response::Result::BundleHash(vec![]));
        // Alice's nonces 0 and 1 go out; 0 is refused for now.
        assert!(due(&mut t, 10, alice).is_some());
        assert!(due(&mut t, 11, alice).is_some());
        assert!(t.answered(10, busy()).again.is_some());
        // Her nonce 2 falls due while 0 waits: held. Bob is not held.
        assert_eq!(due(&mut t, 12, alice), None);
        assert!(due(&mut t, 20, bob).is_some());
        // Her nonce 1, already out, is refused too: both wait, so nonce 0's acknowledgement releases nothing.
        assert!(t.answered(11, busy()).again.is_some());
        assert_eq!(t.answered(10, ok()).release, vec![]);
        assert_eq!(due(&mut t, 13, alice), None);
        // Nonce 1 acknowledged: nonces 2 and 3 go out, in order, and later ones are sent when due.
        assert_eq!(t.answered(11, ok()).release, vec![req(12), req(13)]);
        assert!(due(&mut t, 14, alice).is_some());
        assert_eq!(t.held_count, 2);
        // A final refusal releases as well: the held bundles are the client's to send, whatever becomes of them.
        assert!(t.answered(14, busy()).again.is_some());
        assert_eq!(due(&mut t, 15, alice), None);
        let fin = Some(pb::submit_bundles_response::Result::Error(
            pb::SubmitError {
                code: tonic::Code::InvalidArgument as i32,
                message: "bundle.expiry_height 3 has passed".into(),
                retry_after_ms: 0,
            },
        ));
        assert_eq!(t.answered(14, fin).release, vec![req(15)]);
        // Held bundles do not count as admitted at their first send.
        for r in [12, 13, 20] {
            t.answered(r, ok());
            t.entry(5, Hash([r as u8; 32]));
        }
        assert_eq!((t.hist.len(), t.first_try_hist.len()), (3, 1));
        // Alice has only 15 out now. Whatever is refused, she has at most SENDER_WINDOW out: the next ones wait
        // for answers, one per answer.
        t.answered(15, ok());
        let window = u64::from(SENDER_WINDOW);
        for r in 100..100 + window {
            assert!(due(&mut t, r, alice).is_some());
        }
        assert_eq!(due(&mut t, 100 + window, alice), None);
        assert_eq!(due(&mut t, 101 + window, alice), None);
        assert_eq!(t.answered(100, ok()).release, vec![req(100 + window)]);
        assert_eq!(t.answered(101, ok()).release, vec![req(101 + window)]);
        assert!(due(&mut t, 102 + window, alice).is_none());
    }

    #[test]
    fn completeness_accounting() {
        let mut t = Tracker::new();
        let (a, b, c) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
        let req = |client_ref| pb::SubmitBundlesRequest {
            client_ref,
            bundle: None,
        };
        t.offered(1, 1, a, BTreeMap::from([(1, 1), (2, 1)]), 0.0, req(1));
        t.offered(2, 2, b, BTreeMap::from([(1, 1)]), 0.0, req(2));
        t.offered(3, 3, c, BTreeMap::from([(2, 1)]), 0.0, req(3));
        let ok = Some(pb::submit_bundles_response::Result::BundleHash(vec![]));
        t.answered(1, ok.clone());
        t.answered(2, ok);
        t.answered(
            3,
            Some(pb::submit_bundles_response::Result::Error(
                pb::SubmitError {
                    code: tonic::Code::FailedPrecondition as i32,
                    message: "bundle.nonce 4 of sender 0xab is already used".into(),
                    retry_after_ms: 0,
                },
            )),
        );
        t.entry(5, a);
        assert_eq!(t.outstanding(), 2, "a has one of two entries, b none");
        t.entry(6, a);
        t.entry(5, b);
        t.entry(5, b);
        t.entry(5, Hash([9; 32]));
        assert_eq!(
            (t.delivered, t.split, t.duplicated, t.unknown_entries),
            (2, 1, 1, 1)
        );
        assert_eq!(t.outstanding(), 0);
        assert_eq!(
            t.rejected.keys().next().map(String::as_str),
            Some("FailedPrecondition: bundle.nonce N of sender N is already used")
        );
    }
}
