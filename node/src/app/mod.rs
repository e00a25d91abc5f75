//! The consensus loop: drives the Malachite engine through the pure [`Host`].
//!
//! One task owns the host. It answers the engine's messages (propose, proposal parts, decisions, sync), admits
//! bundles that ingest made durable, and builds its proposal when the target block time is reached. It is the
//! only writer of decided blocks, and after each decision it publishes the new height to streaming subscribers.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use baton_consensus::bundle::Bundle;
use baton_consensus::bundle::Sender;
use baton_consensus::context::BatonContext;
use baton_consensus::error::ConsensusError;
use baton_consensus::hash::Hash;
use baton_consensus::host::{
    certificate_from_engine, certificate_to_engine, Clock, Host, SyncVerdict,
};
use baton_consensus::ids::Height;
use baton_consensus::mempool::Admission;
use baton_consensus::parts::ProposalPart;
use baton_consensus::sigcache::SignatureCache;
use baton_consensus::signing::round_u32;
use baton_consensus::signing::Signature;
use malachitebft_app_channel::app::engine::host::{HeightParams, Next, SyncedValueOutcome};
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::app::types::core::{
    ExtendedCommitCertificate, Round, SignedExtension, VoteExtensionPolicy, VoteExtensions,
};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::LocallyProposedValue;
use malachitebft_app_channel::{AppMsg, Channels, NetworkMsg, Reply};
use malachitebft_core_consensus::{ProposedValue, VoteExtensionError};

use crate::error::NodeError;
use crate::ingest::AdmissionGate;
use crate::metrics::{Metrics, ReasonLabel};
use crate::peers::PeerGate;
use crate::state::Shared;
use crate::store::RocksStore;
use crate::verify::VerifyPool;

mod dissemination;
mod tap;

use dissemination::{peer_name, CHECKED_CAPACITY};
pub use dissemination::{CheckedSet, GossipLimits};
pub(crate) use tap::tap;
pub use tap::{TapHandle, TapLimits};

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

struct PendingValue {
    height: u64,
    round: Round,
    deadline: Instant,
    reply: Reply<LocallyProposedValue<BatonContext>>,
}

/// How often, at most, the loop publishes the mempool's open nonce gaps to the admission gate.
const GAPS_EVERY: Duration = Duration::from_millis(20);

/// What the API and the writer ask of the consensus loop, which owns the mempool.
#[derive(Debug)]
pub enum LoopRequest {
    /// Admit checked bundles to the mempool; one answer per bundle, in order.
    Admit {
        bundles: Vec<(Hash, Bundle)>,
        reply: oneshot::Sender<Vec<Result<Admission, ConsensusError>>>,
    },
    /// The sender's next nonce on chain and the first nonce its pending bundles leave free.
    Nonces {
        sender: Sender,
        reply: oneshot::Sender<Result<(u64, u64), ConsensusError>>,
    },
    /// Whether a bundle is in the mempool.
    IsPending {
        hash: Hash,
        reply: oneshot::Sender<bool>,
    },
    /// Bundles a peer disseminated, checked off the loop; `reply` answers the engine (a proposal they complete),
    /// none when they came through the tap. `invalid` counts those that failed the checks (the peer is penalised
    /// for them).
    Gossiped {
        peer: Vec<u8>,
        bundles: Vec<(Hash, Bundle)>,
        invalid: usize,
        reply: Option<oneshot::Sender<Option<ProposedValue<BatonContext>>>>,
    },
}

/// What the loop shares with the rest of the node: metrics, the verifier pool (peers' bundles are checked there),
/// the engine's verify-once memory (for its hit counter) and the admission gate it keeps up to date for ingest.
pub struct LoopLinks {
    pub metrics: Arc<Metrics>,
    pub pool: VerifyPool,
    pub signatures: Arc<SignatureCache>,
    pub gate: Arc<AdmissionGate>,
    /// Who may speak on the proposal channel, and how much.
    pub peers: PeerGate,
    /// Peers' dissemination while a proposal waits ([`tap`]).
    pub tap: TapHandle,
}

/// The consensus loop. See the module docs.
pub struct ConsensusLoop {
    pub host: Host<RocksStore, SystemClock>,
    pub channels: Channels<BatonContext>,
    pub requests: mpsc::Receiver<LoopRequest>,
    /// Where checked peer bundles come back to the loop (the loop's own request queue).
    pub requests_tx: mpsc::Sender<LoopRequest>,
    pub shared: Arc<Shared>,
    pub max_sync_response_bytes: usize,
    pub gossip: GossipLimits,
    pub metrics: Arc<Metrics>,
    pending: Option<PendingValue>,
    last_decided: Option<std::time::Instant>,
    last_stats: baton_consensus::host::HostStats,
    failed_decision: Option<u64>,
    outgoing: Vec<Bundle>,
    outgoing_bytes: usize,
    /// When dissemination was last sent: a bundle admitted after a quiet spell goes out at once.
    last_flush: Instant,
    /// How long after `last_flush` the next send is due ([`GossipLimits::wait_after`]).
    flush_wait: Duration,
    next_gossip_id: u64,
    /// Where peer messages are checked (signature recovery), bounded; a message it has no room for is dropped.
    pool: VerifyPool,
    /// The engine's verify-once memory, for its hit counter.
    signatures: Arc<SignatureCache>,
    last_signature_hits: u64,
    /// Where the loop publishes the mempool's head wait (and its open nonce gaps) for admission at the edge.
    gate: Arc<AdmissionGate>,
    /// The mempool version whose open gaps the gate holds, and when they were published.
    gaps_version: u64,
    gaps_published: Instant,
    /// Disseminated bundles whose exact bytes (hash and signature) passed the checks here, so that copies sent
    /// again (re-announcements, several peers) are not recovered again.
    checked: Arc<std::sync::Mutex<CheckedSet>>,
    peers: PeerGate,
    tap: TapHandle,
    /// L1 attestation rules and the poster, when genesis has `[l1]`.
    pub attestor: Option<Arc<crate::l1::Attestor>>,
}

impl ConsensusLoop {
    pub fn new(
        host: Host<RocksStore, SystemClock>,
        channels: Channels<BatonContext>,
        requests: (mpsc::Sender<LoopRequest>, mpsc::Receiver<LoopRequest>),
        shared: Arc<Shared>,
        max_sync_response_bytes: usize,
        gossip: GossipLimits,
        links: LoopLinks,
    ) -> Self {
        let LoopLinks {
            metrics,
            pool,
            signatures,
            gate,
            mut peers,
            tap,
        } = links;
        peers.follow(host.validators());
        // Until the first send, as after a full one.
        let flush_wait = gossip.wait_after(usize::MAX);
        let mut l = ConsensusLoop {
            host,
            channels,
            requests_tx: requests.0,
            requests: requests.1,
            shared,
            max_sync_response_bytes,
            gossip,
            metrics,
            pending: None,
            last_decided: None,
            last_stats: Default::default(),
            failed_decision: None,
            outgoing: Vec::new(),
            outgoing_bytes: 0,
            last_flush: Instant::now(),
            flush_wait,
            next_gossip_id: 0,
            pool,
            signatures,
            last_signature_hits: 0,
            gate,
            gaps_version: u64::MAX,
            gaps_published: Instant::now() - GAPS_EVERY,
            checked: Arc::new(std::sync::Mutex::new(CheckedSet::new(CHECKED_CAPACITY))),
            peers,
            tap,
            attestor: None,
        };
        l.publish_gauges();
        l.publish_set_gauges();
        l
    }

    fn height_params(&self, height: u64) -> HeightParams<BatonContext> {
        let policy = if self.attestor.as_ref().is_some_and(|a| a.required(height)) {
            VoteExtensionPolicy::Required
        } else {
            VoteExtensionPolicy::Disabled
        };
        HeightParams::new(
            self.host.height_validators(),
            self.host.params().timeouts_for(self.host.has_work()),
            None,
        )
        .with_vote_extension_policy(policy)
    }

    /// Turns the host's running totals into counter increments.
    fn publish_stats(&mut self) {
        let hits = self.signatures.hits();
        self.metrics
            .signature_cache_hits
            .inc_by(hits.saturating_sub(self.last_signature_hits));
        self.last_signature_hits = hits;
        let now = self.host.stats();
        let last = std::mem::replace(&mut self.last_stats, now);
        self.metrics
            .invalid_proposals
            .inc_by(now.invalid_proposals - last.invalid_proposals);
        self.metrics
            .dropped
            .get_or_create(&ReasonLabel { reason: "expired" })
            .inc_by(now.dropped_expired - last.dropped_expired);
        self.metrics
            .dropped
            .get_or_create(&ReasonLabel {
                reason: "nonce_used",
            })
            .inc_by(now.dropped_rejected - last.dropped_rejected);
    }

    fn publish_gauges(&mut self) {
        let oldest = self.host.note_backlog();
        self.gate.publish(oldest);
        let m = self.host.mempool();
        // Open gaps cost a walk of the waiting bundles (up to `mempool.max_waiting`): read at most every
        // `GAPS_EVERY` while they change, not after every request.
        if m.version() != self.gaps_version && self.gaps_published.elapsed() >= GAPS_EVERY {
            self.gaps_version = m.version();
            self.gaps_published = Instant::now();
            self.gate.publish_gaps(m.open_gaps());
        }
        self.metrics.mempool_bundles.set(m.len() as i64);
        self.metrics.mempool_bytes.set(m.bytes() as i64);
        let (waiting, waiting_bytes) = m.waiting();
        self.metrics.mempool_waiting.set(waiting as i64);
        self.metrics.mempool_waiting_bytes.set(waiting_bytes as i64);
        let (side, side_bytes) = self.host.side_cache();
        self.metrics.side_cache_bundles.set(side as i64);
        self.metrics.side_cache_bytes.set(side_bytes as i64);
        self.metrics
            .nonce_table_senders
            .set(self.host.nonce_table_len() as i64);
    }

    /// The epoch and set gauges: they change only with a decision.
    fn publish_set_gauges(&self) {
        let set = self.host.validators();
        let next = self.host.next_height();
        self.metrics.epoch.set(
            self.host
                .spec()
                .epochs
                .as_ref()
                .map_or(0, |r| r.epoch_of(next)) as i64,
        );
        self.metrics
            .validator_set_size
            .set(set.validators().len() as i64);
        self.metrics
            .validator_set_power
            .set(set.total_power() as i64);
        let me = self.shared.info.address;
        self.metrics
            .in_validator_set
            .set(i64::from(set.get(&me).is_some()));
        self.metrics
            .jailed_validators
            .set(self.host.jailed().len() as i64);
    }

    /// Runs until the engine stops or storage fails.
    pub async fn run(mut self) -> Result<(), NodeError> {
        // The send timer ticks every `flush_wait` whatever the last send was; it is started again when
        // `flush_wait` changes between light and heavy load.
        let mut period = self.flush_wait;
        let mut flush = tokio::time::interval(period);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reannounce =
            tokio::time::interval(Duration::from_millis(self.gossip.reannounce_ms.max(1)));
        reannounce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.hurry_pending();
            let deadline = self.pending.as_ref().map(|p| p.deadline);
            self.tap.set_waiting(deadline.is_some());
            tokio::select! {
                biased;
                msg = self.channels.consensus.recv() => match msg {
                    Some(m) => self.handle(m).await?,
                    None => return Err(NodeError::Engine("the consensus engine stopped".into())),
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.propose_pending().await?;
                }
                Some(first) = self.requests.recv() => {
                    self.request(first)?;
                    for _ in 0..64 {
                        match self.requests.try_recv() {
                            Ok(next) => self.request(next)?,
                            Err(_) => break,
                        }
                    }
                    self.publish_gauges();
                    self.publish_outbox().await?;
                    // A full message, or the first bundles after a quiet spell, go out now; under load the
                    // timer below sends one message per interval instead of one per few bundles (every message
                    // costs each peer a receive and a verifier job: 10 ms against 20 ms cost validators' heights
                    // at saturation, BENCHMARKS.md).
                    if self.outgoing_bytes >= self.gossip.batch_bytes
                        || self.last_flush.elapsed() >= self.flush_wait
                    {
                        self.flush_gossip().await?;
                    }
                }
                Some(t) = self.tap.rx.recv() => self.take_tapped(t),
                _ = flush.tick(), if !self.outgoing.is_empty() => {
                    self.flush_gossip().await?;
                }
                _ = reannounce.tick() => {
                    // Sent with the next flush, in messages of at most `batch_bytes`.
                    for b in self.host.reannounce(self.gossip.reannounce_ms, 4_096) {
                        self.outgoing_bytes += b.encoded_len();
                        self.outgoing.push(b);
                    }
                }
            }
            if self.flush_wait != period {
                period = self.flush_wait;
                flush = tokio::time::interval_at(Instant::now() + period, period);
                flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
        }
    }

    /// An idle proposer waits up to `max_idle_ms` for something to include; once it has something (a ready
    /// bundle, admitted here or gossiped by a peer) its deadline moves forward to `block_time_ms` after the parent,
    /// or to now if that has passed. Constant time when there is nothing to do.
    fn hurry_pending(&mut self) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        let Some(deadline_ms) = self.host.hurried_deadline_ms(round_u32(p.round)) else {
            return;
        };
        let wait_ms = deadline_ms.saturating_sub(self.host.now_ms());
        let at = Instant::now() + Duration::from_millis(wait_ms);
        if at < p.deadline {
            p.deadline = at;
        }
    }

    fn request(&mut self, req: LoopRequest) -> Result<(), NodeError> {
        match req {
            LoopRequest::Admit { bundles, reply } => {
                let mut verdicts = Vec::with_capacity(bundles.len());
                for (hash, bundle) in bundles {
                    let v = self.host.admit_submission(hash, bundle.clone());
                    if matches!(v, Ok(Admission::Added)) {
                        self.outgoing_bytes += bundle.encoded_len();
                        self.outgoing.push(bundle);
                    }
                    verdicts.push(v);
                }
                debug!(
                    submitted = verdicts.len(),
                    outgoing = self.outgoing.len(),
                    "admitted submissions"
                );
                let _ = reply.send(verdicts);
            }
            LoopRequest::Gossiped {
                peer,
                bundles,
                invalid,
                reply,
            } => {
                if invalid > 0 && self.peers.penalise(&peer, std::time::Instant::now()) {
                    self.metrics.p2p_penalties.inc();
                    self.metrics
                        .p2p_penalised_peers
                        .set(self.peers.penalised_count(std::time::Instant::now()) as i64);
                    warn!(
                        peer = %peer_name(&peer),
                        invalid,
                        "a peer sent bundles that fail the checks; ignoring it on the proposal channel for a while"
                    );
                }
                debug!(peer = %peer_name(&peer), bundles = bundles.len(), "took in disseminated bundles");
                match reply {
                    Some(reply) => {
                        let value = self.host.on_gossip(bundles)?;
                        let _ = reply.send(value);
                    }
                    None => self.host.admit_gossip(bundles)?,
                }
            }
            LoopRequest::Nonces { sender, reply } => {
                let _ = reply.send(self.host.nonces(&sender));
            }
            LoopRequest::IsPending { hash, reply } => {
                let _ = reply.send(self.host.mempool().contains(&hash));
            }
        }
        Ok(())
    }

    async fn propose_pending(&mut self) -> Result<(), NodeError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        // Peers receive our own pending bundles before the proposal that refers to them (one connection, in
        // order).
        self.flush_gossip().await?;
        let (value, parts) = self.host.propose(p.height, round_u32(p.round))?;
        self.metrics.proposals.inc();
        let _ = p
            .reply
            .send(LocallyProposedValue::new(Height(p.height), p.round, value));
        self.publish(p.height, p.round, parts).await
    }

    async fn publish(
        &self,
        height: u64,
        round: Round,
        parts: Vec<ProposalPart>,
    ) -> Result<(), NodeError> {
        publish_parts(&self.channels.network, height, round, parts).await
    }

    async fn send_net(&self, msg: NetworkMsg<BatonContext>) -> Result<(), NodeError> {
        self.channels
            .network
            .send(msg)
            .await
            .map_err(|_| NodeError::Engine("network channel closed".into()))
    }

    async fn handle(&mut self, msg: AppMsg<BatonContext>) -> Result<(), NodeError> {
        match msg {
            AppMsg::ConsensusReady { reply } => {
                let start = self.host.next_height();
                info!(start, "consensus ready");
                let _ = reply.send((Height(start), self.height_params(start)));
            }
            AppMsg::StartedRound {
                height,
                round,
                reply_value,
                ..
            } => {
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.height != height.0 || p.round != round)
                {
                    self.pending = None;
                }
                self.metrics.round.set(round.as_i64());
                let values = self.host.started_round(height.0, round_u32(round))?;
                let _ = reply_value.send(values);
            }
            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
                let now = self.host.now_ms();
                let wait_ms = self
                    .host
                    .proposal_deadline_ms(round_u32(round))
                    .saturating_sub(now);
                let wait = proposal_wait(Duration::from_millis(wait_ms), timeout);
                self.pending = Some(PendingValue {
                    height: height.0,
                    round,
                    deadline: Instant::now() + wait,
                    reply,
                });
                if wait.is_zero() {
                    self.propose_pending().await?;
                }
            }
            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                value_id,
                ..
            } => {
                if let Some(parts) =
                    self.host
                        .restream(height.0, round_u32(round), valid_round, &value_id)?
                {
                    self.publish(height.0, round, parts).await?;
                }
            }
            AppMsg::ExtendVote {
                height,
                value_id,
                reply,
                ..
            } => {
                let ext = self
                    .attestor
                    .as_ref()
                    .filter(|a| a.required(height.0))
                    .and_then(|a| a.extend(height.0, value_id));
                let _ = reply.send(ext);
            }
            AppMsg::VerifyVoteExtensions {
                height,
                value_id,
                extensions,
                reply,
                ..
            } => {
                let verdicts = extensions
                    .into_iter()
                    .map(|(validator, ext)| {
                        let verdict = match &self.attestor {
                            Some(a) => a.verify(height.0, value_id, &validator, &ext).map_err(|e| {
                                debug!(height = height.0, %validator, error = %e, "refused a vote extension");
                                VoteExtensionError::InvalidVoteExtension
                            }),
                            None => Err(VoteExtensionError::InvalidVoteExtension),
                        };
                        (validator, verdict)
                    })
                    .collect();
                let _ = reply.send(verdicts);
            }
            AppMsg::GetHistoryMinHeight { reply } => {
                // Peers sync older heights from a node that still has them (`storage.retain_heights`).
                let _ = reply.send(Height(self.shared.history_min()));
            }
            AppMsg::ReceivedProposalPart {
                from,
                published_by,
                part,
                reply,
            } => {
                // Gossipsub signs what it relays, so the declared publisher is authenticated; broadcast has none
                // and the sender is the publisher.
                let publisher = published_by.unwrap_or(from).to_bytes();
                let size = match &part.content {
                    StreamContent::Data(p) => p.size(),
                    StreamContent::Fin => 16,
                };
                if !self.hears(&publisher, size) {
                    let _ = reply.send(None);
                    return Ok(());
                }
                let content = match part.content {
                    StreamContent::Data(ProposalPart::Bundles { bundles }) => {
                        self.check_gossip(publisher, bundles, Some(reply));
                        return Ok(());
                    }
                    StreamContent::Data(ProposalPart::Want {
                        proposer,
                        height,
                        round,
                        hashes,
                    }) => {
                        self.host
                            .on_want(&publisher, proposer, height, round, &hashes)?;
                        let _ = reply.send(None);
                        self.publish_outbox().await?;
                        return Ok(());
                    }
                    StreamContent::Data(p) => Some(p),
                    StreamContent::Fin => None,
                };
                let value = self.host.on_part(
                    &publisher,
                    &part.stream_id.to_bytes(),
                    part.sequence,
                    content,
                )?;
                let _ = reply.send(value);
                self.publish_outbox().await?;
            }
            AppMsg::Decided {
                certificate,
                extensions,
                reply,
            } => {
                let cert = certificate_from_engine(&certificate);
                let height = cert.height;
                // Written with the decision, in its one atomic write (`RocksStore::stage_extensions`).
                let stored: Vec<_> = extensions
                    .extensions
                    .iter()
                    .map(|(a, e)| (*a, (e.message, e.signature.0)))
                    .collect();
                if !stored.is_empty() {
                    self.host.store().stage_extensions(height, &stored);
                }
                let rounds = u64::from(cert.round) + 1;
                let started = std::time::Instant::now();
                match self.host.decided(cert) {
                    Ok(block) => {
                        if let Some(a) = self.attestor.as_ref().filter(|a| a.required(height)) {
                            let set = self.host.validators_at(height)?;
                            a.decided(
                                &block.header,
                                stored.iter().map(|(_, (att, _))| *att),
                                &set,
                                block.next_validators.as_ref(),
                            );
                        }
                        let bytes: u64 = block.bundles.iter().map(|b| b.encoded_len() as u64).sum();
                        self.metrics.store_write("commit", started, bytes);
                        self.metrics.height.set(height as i64);
                        self.metrics.rounds_per_height.observe(rounds as f64);
                        self.metrics
                            .benched_validators
                            .set(block.header.benched_next().len() as i64);
                        self.metrics
                            .decided_bundles
                            .inc_by(block.bundles.len() as u64);
                        if let Some(prev) = self.last_decided.replace(std::time::Instant::now()) {
                            self.metrics
                                .height_duration
                                .observe(prev.elapsed().as_secs_f64());
                        }
                        self.publish_stats();
                        self.peers.follow(self.host.validators());
                        debug!(height, bundles = block.bundles.len(), hash = %block.hash(), "decided");
                        self.shared.set_latest_height(height);
                        self.publish_gauges();
                        self.publish_set_gauges();
                        self.failed_decision = None;
                    }
                    Err(baton_consensus::error::ConsensusError::UnknownBlock(h)) => {
                        error!(height, block = %h, "decided a block this node does not have; restarting the height");
                        self.failed_decision = Some(height);
                    }
                    Err(e) => return Err(e.into()),
                }
                let _ = reply.send(());
            }
            AppMsg::Finalized {
                certificate,
                evidence,
                reply,
                ..
            } => {
                let height = certificate.height.0;
                if !evidence.is_empty() {
                    // Verified against the height's set, then carried by this node's next proposals.
                    let items = baton_consensus::context::evidence_from_engine(&evidence);
                    let added = self.host.report_evidence(items)?;
                    self.metrics.evidence_reported.inc_by(added as u64);
                }
                let next = if self.failed_decision == Some(height) {
                    Next::Restart(Height(height), self.height_params(height))
                } else {
                    Next::Start(Height(height + 1), self.height_params(height + 1))
                };
                let _ = reply.send(next);
            }
            AppMsg::GetDecidedValues { range, reply } => {
                let mut out = Vec::new();
                let mut bytes = 0usize;
                let (start, end) = (
                    range.start().0,
                    range.end().0.min(self.host.next_height().saturating_sub(1)),
                );
                for h in start..=end {
                    let Some((cert, block)) = self.host.decided_value(h)? else {
                        break;
                    };
                    let value_bytes = block.encode();
                    bytes += value_bytes.len() + 128 * cert.signatures.len();
                    if !out.is_empty() && bytes > self.max_sync_response_bytes {
                        break;
                    }
                    let extensions = self
                        .host
                        .store()
                        .extensions(h)?
                        .into_iter()
                        .map(|(a, (att, sig))| (a, SignedExtension::new(att, Signature(sig))))
                        .collect();
                    let certificate =
                        ExtendedCommitCertificate::from_commit_certificate_and_extensions(
                            certificate_to_engine(&cert),
                            VoteExtensions::new(extensions),
                        );
                    out.push(RawDecidedValue::new(Bytes::from(value_bytes), certificate));
                }
                let _ = reply.send(out);
            }
            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => {
                let outcome = match self.host.synced_value(
                    height.0,
                    round_u32(round),
                    proposer,
                    &value_bytes,
                )? {
                    SyncVerdict::Verdict(pv) => SyncedValueOutcome::Verdict(pv),
                    SyncVerdict::PeerFault => SyncedValueOutcome::PeerFault,
                    SyncVerdict::NotNow => SyncedValueOutcome::LocalTransientError,
                };
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }
}

/// How long a proposer waits before building its value, given the wait it wants and the engine's propose timeout:
/// never more than half the timeout, so that the value still reaches the others within it.
pub(crate) fn proposal_wait(wanted: Duration, timeout: Duration) -> Duration {
    wanted.min(timeout / 2)
}

/// Publishes a proposal's parts as one stream on the engine's proposal-parts channel: the stream id is the height
/// and round, then each part in order, then the end marker.
pub(crate) async fn publish_parts(
    network: &mpsc::Sender<NetworkMsg<BatonContext>>,
    height: u64,
    round: Round,
    parts: Vec<ProposalPart>,
) -> Result<(), NodeError> {
    let send = |msg| async move {
        network
            .send(NetworkMsg::PublishProposalPart(msg))
            .await
            .map_err(|_| NodeError::Engine("network channel closed".into()))
    };
    let mut id = Vec::with_capacity(16);
    id.extend_from_slice(&height.to_be_bytes());
    id.extend_from_slice(&round.as_i64().to_be_bytes());
    let stream_id = StreamId::new(Bytes::from(id));
    let n = parts.len() as u64;
    for (seq, part) in parts.into_iter().enumerate() {
        send(StreamMessage::new(
            stream_id.clone(),
            seq as u64,
            StreamContent::Data(part),
        ))
        .await?;
    }
    send(StreamMessage::new(stream_id, n, StreamContent::Fin)).await
}
