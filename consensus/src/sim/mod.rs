//! Deterministic simulation: validators made of the real consensus state machine (Malachite's
//! `core-consensus`, driven through its effects the way the engine drives it) and the real [`Host`] over
//! in-memory stores, connected by a simulated network that drops, delays, duplicates, reorders and partitions
//! messages, all on a virtual clock and one seeded random generator.
//!
//! A run is a pure function of its [`SimConfig`] (the seed included): a failure replays exactly from the seed
//! the test prints. Some validators can run a Byzantine behaviour ([`byzantine::Behaviour`]): an equivocating
//! proposer or a double voter. At the end the run checker ([`crate::check`]) judges every honest node's chain.
//!
//! What the simulation leaves out, covered by the multi-process tests instead: the engine's actors, libp2p,
//! the write-ahead log and crash recovery, RocksDB.

mod byzantine;
mod net;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use malachitebft_core_consensus::{
    self as mcc, Effect, Input, LivenessMsg, LocallyProposedValue, Params, Resume,
    SignedConsensusMsg, State,
};
use malachitebft_core_types::{
    CertificateError, Round, SignedMessage, Timeout, TimeoutKind, ValueOrigin, ValuePayload,
    VoteExtensionPolicy,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::bundle::Bundle;
use crate::check::{
    check, ChainBlock, ChainEntry, CheckReport, Fault, NodeChain, RunHistory, Submitted,
};
use crate::context::{BatonContext, ConsensusSigner, ConsensusVerifier};
use crate::hash::Hash;
use crate::host::{certificate_from_engine, Host, HostLimits, ManualClock, SyncVerdict};
use crate::ids::Height;
use crate::parts::ProposalPart;
use crate::proof::verify_certificate;
use crate::registry::ChainSpec;
use crate::signing::{ChainDomain, Value};
use crate::store::{ChainRead, MemStore};
use crate::types::{Block, Certificate};
use crate::validators::{Validator, ValidatorSet};
use malachitebft_signing::VerifierExt;

pub use byzantine::Behaviour;
pub use net::{NetFaults, Partition};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub validators: usize,
    /// Virtual milliseconds to run.
    pub duration_ms: u64,
    pub faults: NetFaults,
    pub partitions: Vec<Partition>,
    /// Validators (by index) with a Byzantine behaviour.
    pub byzantine: Vec<(usize, Behaviour)>,
    /// Bundles to submit: (virtual ms, node index, bundle). Submit only to honest nodes: a Byzantine node's
    /// acknowledgement promises nothing.
    pub submissions: Vec<(u64, usize, Bundle)>,
    pub spec: ChainSpec,
    /// An L1 view every node shares (a chain with L1: origins, forced entries, staking for epochs).
    pub l1: Option<Arc<crate::origin::MemL1>>,
}

/// What a run produced.
#[derive(Debug)]
pub struct SimOutcome {
    /// The checker over the honest nodes' chains.
    pub report: CheckReport,
    /// Latest decided height per node.
    pub heights: Vec<u64>,
    /// Messages sent, dropped by the network, duplicated.
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    /// Events processed.
    pub events: u64,
    /// Per node at the end: the set deciding its next height, and the validators its chain jailed.
    pub sets: Vec<ValidatorSet>,
    pub jailed: Vec<std::collections::BTreeSet<crate::ids::Address>>,
}

/// A message between nodes.
#[derive(Clone, Debug)]
pub(crate) enum Msg {
    Consensus(SignedConsensusMsg<BatonContext>),
    Liveness(LivenessMsg<BatonContext>),
    Part {
        stream: Vec<u8>,
        seq: u64,
        part: Option<ProposalPart>,
    },
    Gossip(Vec<Bundle>),
    SyncRequest {
        height: u64,
    },
    SyncResponse {
        block: Box<Block>,
        cert: Certificate,
    },
}

enum Event {
    Deliver {
        to: usize,
        from: usize,
        msg: Msg,
    },
    Timeout {
        node: usize,
        timeout: Timeout,
        generation: u64,
    },
    Input {
        node: usize,
        input: Input<BatonContext>,
    },
    Propose {
        node: usize,
        height: u64,
        round: Round,
    },
    Submit {
        node: usize,
        bundle: Bundle,
    },
    SyncTick,
}

struct Node {
    signer: ConsensusSigner,
    host: Host<MemStore, Arc<ManualClock>>,
    store: MemStore,
    state: Option<State<BatonContext>>,
    behaviour: Behaviour,
    timers: HashMap<Timeout, u64>,
    /// The (height, round) the engine asked this node to propose for, until it proposes: an idle proposer waits
    /// until something arrives to include or `max_idle_ms` passes, as in the node's loop.
    waiting: Option<(u64, Round)>,
    streams: u64,
    /// The second block of an equivocating proposer: (height, round, value).
    twin: Option<(u64, u32, Value)>,
    /// The state machine's own step timings (one per node: they track the node's step).
    metrics: Option<malachitebft_metrics::Metrics>,
}

/// The simulation. Build with [`Sim::new`], run with [`Sim::run`].
pub struct Sim {
    cfg: SimConfig,
    now: u64,
    clock: Arc<ManualClock>,
    rng: StdRng,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    seq: u64,
    nodes: Vec<Node>,
    base: ValidatorSet,
    domain: ChainDomain,
    verifier: ConsensusVerifier,
    generation: u64,
    acked: BTreeMap<Hash, Bundle>,
    progress: Vec<(u64, u64)>,
    top: u64,
    sent: u64,
    dropped: u64,
    duplicated: u64,
    processed: u64,
    /// `BATON_SIM_TRACE` set: print rounds, proposals and refused inputs to stderr.
    trace: bool,
}

/// Validator `i`'s consensus key in a simulated network.
pub fn sim_key(i: usize) -> ed25519_consensus::SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    ed25519_consensus::SigningKey::from(seed)
}

/// Virtual time starts here (the hosts check timestamps against it).
const START_MS: u64 = 1_700_000_000_000;
/// How often a node compares its height with its peers' and asks for decided blocks it lacks.
const SYNC_EVERY_MS: u64 = 500;

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let keys: Vec<ed25519_consensus::SigningKey> = (0..cfg.validators).map(sim_key).collect();
        let base = ValidatorSet::new(
            keys.iter()
                .map(|k| Validator::new(k.verification_key(), 1))
                .collect(),
        )
        .expect("validator set");
        let domain = ChainDomain::new("baton-sim");
        let clock = Arc::new(ManualClock::new(START_MS));
        let genesis = Hash::digest(&[b"baton-sim-genesis"]);
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let signer = ConsensusSigner::new(key, domain);
                let store = MemStore::default();
                let mut host = Host::new(
                    domain,
                    genesis,
                    Some(signer.clone()),
                    base.clone(),
                    cfg.spec.clone(),
                    HostLimits::default(),
                    store.clone(),
                    clock.clone(),
                )
                .expect("host");
                if let Some(l1) = &cfg.l1 {
                    host.set_l1(l1.clone());
                }
                let behaviour = cfg
                    .byzantine
                    .iter()
                    .find(|(n, _)| *n == i)
                    .map_or(Behaviour::Honest, |(_, b)| *b);
                let state = State::new(
                    BatonContext,
                    Height(1),
                    base.clone(),
                    Params {
                        address: signer.address(),
                        threshold_params: Default::default(),
                        value_payload: ValuePayload::ProposalAndParts,
                        enabled: true,
                    },
                    1024,
                    256,
                );
                Node {
                    signer,
                    host,
                    store,
                    state: Some(state),
                    behaviour,
                    timers: HashMap::new(),
                    waiting: None,
                    streams: 0,
                    twin: None,
                    metrics: Some(malachitebft_metrics::Metrics::default()),
                }
            })
            .collect();
        Sim {
            rng: StdRng::seed_from_u64(cfg.seed),
            now: START_MS,
            clock,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            nodes,
            base,
            domain,
            verifier: ConsensusVerifier::new(domain),
            generation: 0,
            acked: BTreeMap::new(),
            progress: Vec::new(),
            top: 0,
            sent: 0,
            dropped: 0,
            duplicated: 0,
            processed: 0,
            trace: std::env::var("BATON_SIM_TRACE").is_ok(),
            cfg,
        }
    }

    fn at(&mut self, delay_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay_ms, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn honest(&self, i: usize) -> bool {
        self.nodes[i].behaviour == Behaviour::Honest
    }

    /// Runs to the configured duration and judges the honest nodes' chains.
    pub fn run(mut self) -> SimOutcome {
        for i in 0..self.nodes.len() {
            let vs = self.nodes[i].host.height_validators();
            self.at(
                0,
                Event::Input {
                    node: i,
                    input: Input::StartHeight(
                        Height(1),
                        vs,
                        false,
                        None,
                        VoteExtensionPolicy::default(),
                    ),
                },
            );
        }
        for (t, node, bundle) in std::mem::take(&mut self.cfg.submissions) {
            self.at(t, Event::Submit { node, bundle });
        }
        self.at(SYNC_EVERY_MS, Event::SyncTick);
        let end = START_MS + self.cfg.duration_ms;
        while let Some(Reverse((t, seq))) = self.queue.pop() {
            if t > end {
                break;
            }
            if t > self.now {
                self.clock.advance(t - self.now);
                self.now = t;
            }
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            self.processed += 1;
            self.handle(event);
        }
        self.finish()
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Input { node, input } => self.input(node, input),
            Event::Timeout {
                node,
                timeout,
                generation,
            } => {
                if self.nodes[node].timers.get(&timeout) == Some(&generation) {
                    self.nodes[node].timers.remove(&timeout);
                    self.input(node, Input::TimeoutElapsed(timeout));
                }
            }
            Event::Propose {
                node,
                height,
                round,
            } => {
                if self.nodes[node].waiting == Some((height, round)) {
                    self.nodes[node].waiting = None;
                    self.propose(node, height, round);
                }
            }
            Event::Submit { node, bundle } => {
                let hash = bundle.hash();
                let checked = self.check(&bundle).is_some();
                if checked && self.nodes[node].host.admit(hash, bundle.clone()).is_ok() {
                    self.acked.insert(hash, bundle.clone());
                    self.broadcast(node, Msg::Gossip(vec![bundle]));
                    self.hurry(node);
                }
            }
            Event::SyncTick => {
                self.sync_tick();
                self.at(SYNC_EVERY_MS, Event::SyncTick);
            }
            Event::Deliver { to, from, msg } => self.deliver(to, from, msg),
        }
    }

    /// The node's stateless check of a bundle entering it (from a client or a peer); its hash if it passes.
    fn check(&self, bundle: &Bundle) -> Option<Hash> {
        crate::block::check_stateless(
            bundle,
            &self.cfg.spec,
            crate::block::OrderedBy::Validators,
            |_| false,
        )
        .ok()
    }

    /// A waiting proposer with something to include proposes `block_time_ms` after its parent (the node's
    /// `hurry_pending`); the event scheduled for its idle deadline then finds it no longer waiting.
    fn hurry(&mut self, node: usize) {
        let Some((height, round)) = self.nodes[node].waiting else {
            return;
        };
        let Some(deadline) = self.nodes[node]
            .host
            .hurried_deadline_ms(round.as_u32().unwrap_or(0))
        else {
            return;
        };
        let wait = deadline.saturating_sub(self.now);
        self.at(
            wait,
            Event::Propose {
                node,
                height,
                round,
            },
        );
    }

    /// Sends `msg` from `from` to every other node through the faulty network.
    pub(crate) fn broadcast(&mut self, from: usize, msg: Msg) {
        for to in 0..self.nodes.len() {
            if to != from {
                self.send(from, to, msg.clone());
            }
        }
    }

    pub(crate) fn send(&mut self, from: usize, to: usize, msg: Msg) {
        self.sent += 1;
        let now = self.now - START_MS;
        let fate = self
            .cfg
            .faults
            .fate(&mut self.rng, &self.cfg.partitions, now, from, to);
        match fate {
            None => self.dropped += 1,
            Some((delay, copies)) => {
                if copies > 1 {
                    self.duplicated += 1;
                }
                for c in 0..copies {
                    let extra = if c == 0 {
                        0
                    } else {
                        self.rng.gen_range(0..=delay + 5)
                    };
                    self.at(
                        delay + extra,
                        Event::Deliver {
                            to,
                            from,
                            msg: msg.clone(),
                        },
                    );
                }
            }
        }
    }

    fn deliver(&mut self, to: usize, from: usize, msg: Msg) {
        match msg {
            Msg::Consensus(SignedConsensusMsg::Vote(v)) | Msg::Liveness(LivenessMsg::Vote(v)) => {
                self.input(to, Input::Vote(v))
            }
            Msg::Liveness(LivenessMsg::PolkaCertificate(c)) => {
                self.input(to, Input::PolkaCertificate(c))
            }
            Msg::Liveness(LivenessMsg::SkipRoundCertificate(c)) => {
                self.input(to, Input::RoundCertificate(c))
            }
            Msg::Consensus(SignedConsensusMsg::Proposal(p)) => self.input(to, Input::Proposal(p)),
            Msg::Part { stream, seq, part } => {
                let publisher = (from as u64).to_be_bytes();
                // As in the node: dissemination and asks travel on the parts channel but are not proposal
                // streams.
                let r = match part {
                    Some(ProposalPart::Want {
                        proposer,
                        height,
                        round,
                        hashes,
                    }) => self.nodes[to]
                        .host
                        .on_want(&publisher, proposer, height, round, &hashes)
                        .map(|_| None),
                    Some(ProposalPart::Bundles { bundles }) => {
                        return self.deliver(to, from, Msg::Gossip(bundles));
                    }
                    other => self.nodes[to].host.on_part(&publisher, &stream, seq, other),
                };
                if self.trace {
                    if let Ok(Some(pv)) = &r {
                        eprintln!("t={} node{to} value from node{from} h={} r={} valid_round={} validity={:?}", self.now - START_MS, pv.height.0, pv.round, pv.valid_round, pv.validity);
                    }
                    if let Err(e) = &r {
                        eprintln!("t={} node{to} part error {e}", self.now - START_MS);
                    }
                }
                if let Ok(Some(pv)) = r {
                    self.input(to, Input::ProposedValue(pv, ValueOrigin::Consensus));
                }
                self.flush_outbox(to);
            }
            Msg::Gossip(bundles) => {
                let checked: Vec<(Hash, Bundle)> = bundles
                    .into_iter()
                    .filter_map(|b| Some((self.check(&b)?, b)))
                    .collect();
                let got = self.nodes[to].host.on_gossip(checked);
                self.hurry(to);
                if let Ok(Some(pv)) = got {
                    self.input(to, Input::ProposedValue(pv, ValueOrigin::Consensus));
                }
            }
            Msg::SyncRequest { height } => {
                if let Ok(Some((cert, block))) = self.nodes[to].host.decided_value(height) {
                    self.send(
                        to,
                        from,
                        Msg::SyncResponse {
                            block: Box::new(block),
                            cert,
                        },
                    );
                }
            }
            Msg::SyncResponse { block, cert } => {
                let height = cert.height;
                if self.synced(to, *block, cert) {
                    // Keep going while the peer has more (one request per tick would never catch up).
                    self.send(to, from, Msg::SyncRequest { height: height + 1 });
                }
            }
        }
    }

    /// Publishes wants and answers the host queued.
    fn flush_outbox(&mut self, node: usize) {
        let parts = self.nodes[node].host.take_outbox();
        if !parts.is_empty() {
            self.publish_parts(node, parts);
        }
    }

    /// Streams parts to every peer (one stream id per publication).
    pub(crate) fn publish_parts(&mut self, node: usize, parts: Vec<ProposalPart>) {
        for to in 0..self.nodes.len() {
            if to != node {
                self.stream_to(node, to, &parts);
            }
        }
    }

    pub(crate) fn stream_to(&mut self, node: usize, to: usize, parts: &[ProposalPart]) {
        self.nodes[node].streams += 1;
        let stream = self.nodes[node].streams.to_be_bytes().to_vec();
        for (seq, p) in parts.iter().enumerate() {
            self.send(
                node,
                to,
                Msg::Part {
                    stream: stream.clone(),
                    seq: seq as u64,
                    part: Some(p.clone()),
                },
            );
        }
        self.send(
            node,
            to,
            Msg::Part {
                stream,
                seq: parts.len() as u64,
                part: None,
            },
        );
    }

    fn propose(&mut self, node: usize, height: u64, round: Round) {
        let Some(r) = round.as_u32() else { return };
        let proposed = self.nodes[node].host.propose(height, r);
        if self.trace {
            eprintln!(
                "t={} node{node} propose h={height} r={r} ok={}",
                self.now - START_MS,
                proposed.is_ok()
            );
        }
        let Ok((value, parts)) = proposed else {
            return;
        };
        if let Behaviour::EquivocatingProposer = self.nodes[node].behaviour {
            let twin = byzantine::equivocate(self, node, height, r, &parts);
            self.nodes[node].twin = twin.map(|v| (height, r, v));
        } else {
            self.publish_parts(node, parts);
        }
        self.input(
            node,
            Input::Propose(LocallyProposedValue::new(Height(height), round, value)),
        );
    }

    /// Every `SYNC_EVERY_MS`: a node behind a reachable peer asks it for the next decided block, and every node
    /// disseminates again what it has held for two seconds without a block including it.
    fn sync_tick(&mut self) {
        for i in 0..self.nodes.len() {
            let again = self.nodes[i].host.reannounce(2_000, 4_096);
            if !again.is_empty() {
                self.broadcast(i, Msg::Gossip(again));
            }
        }
        let heights: Vec<u64> = self
            .nodes
            .iter()
            .map(|n| n.host.next_height() - 1)
            .collect();
        for (i, &h) in heights.iter().enumerate() {
            if let Some(peer) = (0..heights.len()).find(|&p| p != i && heights[p] > h) {
                self.send(i, peer, Msg::SyncRequest { height: h + 1 });
            }
        }
        self.progress.push((self.now - START_MS, self.top));
    }

    /// Commits a decided block a peer sent; true if it was the next height and is now committed.
    fn synced(&mut self, node: usize, block: Block, cert: Certificate) -> bool {
        let height = cert.height;
        if height != self.nodes[node].host.next_height()
            || verify_certificate(&cert, height, &block.hash(), &self.base, &self.domain).is_err()
        {
            return false;
        }
        let bytes = block.encode();
        let host = &mut self.nodes[node].host;
        if !matches!(
            host.synced_value(height, cert.round, block.header.proposer, &bytes),
            Ok(SyncVerdict::Verdict(_))
        ) {
            return false;
        }
        if host.decided(cert).is_ok() {
            self.decided(node, height);
            let vs = self.nodes[node].host.height_validators();
            self.input(
                node,
                Input::StartHeight(
                    Height(height + 1),
                    vs,
                    false,
                    None,
                    VoteExtensionPolicy::default(),
                ),
            );
            return true;
        }
        false
    }

    fn decided(&mut self, node: usize, height: u64) {
        if self.honest(node) && height > self.top {
            self.top = height;
            self.progress.push((self.now - START_MS, height));
        }
    }

    /// Feeds one input to a node's consensus state machine and carries out the effects it asks for.
    fn input(&mut self, node: usize, input: Input<BatonContext>) {
        let (Some(mut state), Some(metrics)) = (
            self.nodes[node].state.take(),
            self.nodes[node].metrics.take(),
        ) else {
            return;
        };
        let result: Result<(), mcc::Error<BatonContext>> = mcc::process!(
            input: input,
            state: &mut state,
            metrics: &metrics,
            with: effect => self.effect(node, effect)
        );
        self.nodes[node].metrics = Some(metrics);
        self.nodes[node].state = Some(state);
        if let Err(e) = result {
            if self.trace {
                eprintln!("t={} node{node} input refused: {e}", self.now - START_MS);
            }
            tracing::debug!(node, error = %e, "consensus input refused");
        }
    }

    fn effect(
        &mut self,
        node: usize,
        effect: Effect<BatonContext>,
    ) -> Result<Resume<BatonContext>, String> {
        use malachitebft_core_consensus::Resumable;
        Ok(match effect {
            Effect::CancelAllTimeouts(r) => {
                self.nodes[node].timers.clear();
                r.resume_with(())
            }
            Effect::CancelTimeout(t, r) => {
                self.nodes[node].timers.remove(&t);
                r.resume_with(())
            }
            Effect::ScheduleTimeout(t, r) => {
                self.generation += 1;
                let generation = self.generation;
                self.nodes[node].timers.insert(t, generation);
                let ms = match t.kind {
                    TimeoutKind::FinalizeHeight(d) => d.as_millis() as u64,
                    _ => {
                        let host = &self.nodes[node].host;
                        host.params()
                            .timeouts_for(host.has_work())
                            .duration_for(t)
                            .as_millis() as u64
                    }
                };
                self.at(
                    ms,
                    Event::Timeout {
                        node,
                        timeout: t,
                        generation,
                    },
                );
                r.resume_with(())
            }
            Effect::StartRound(height, round, proposer, role, r) => {
                if self.trace {
                    eprintln!(
                        "t={} node{node} start h={} r={} proposer={} role={role:?}",
                        self.now - START_MS,
                        height.0,
                        round,
                        proposer
                    );
                }
                if let Some(n) = round.as_u32() {
                    if let Ok(values) = self.nodes[node].host.started_round(height.0, n) {
                        for v in values {
                            self.at(
                                0,
                                Event::Input {
                                    node,
                                    input: Input::ProposedValue(v, ValueOrigin::Consensus),
                                },
                            );
                        }
                    }
                }
                r.resume_with(())
            }
            Effect::PublishConsensusMsg(msg, r) => {
                match (&msg, self.nodes[node].behaviour) {
                    (SignedConsensusMsg::Vote(v), Behaviour::DoubleVoter) => {
                        byzantine::double_vote(self, node, v, false)
                    }
                    (SignedConsensusMsg::Vote(v), Behaviour::LoudDoubleVoter) => {
                        byzantine::double_vote(self, node, v, true)
                    }
                    (SignedConsensusMsg::Proposal(p), Behaviour::EquivocatingProposer) => {
                        byzantine::equivocate_proposal(self, node, p)
                    }
                    _ => self.broadcast(node, Msg::Consensus(msg)),
                }
                r.resume_with(())
            }
            Effect::PublishLivenessMsg(msg, r) => {
                self.broadcast(node, Msg::Liveness(msg));
                r.resume_with(())
            }
            Effect::RepublishVote(v, r) => {
                self.broadcast(node, Msg::Liveness(LivenessMsg::Vote(v)));
                r.resume_with(())
            }
            Effect::RepublishRoundCertificate(c, r) => {
                self.broadcast(node, Msg::Liveness(LivenessMsg::SkipRoundCertificate(c)));
                r.resume_with(())
            }
            Effect::GetValue(height, round, _timeout, r) => {
                let wait = self.nodes[node]
                    .host
                    .proposal_deadline_ms(round.as_u32().unwrap_or(0))
                    .saturating_sub(self.now);
                self.nodes[node].waiting = Some((height.0, round));
                self.at(
                    wait,
                    Event::Propose {
                        node,
                        height: height.0,
                        round,
                    },
                );
                r.resume_with(())
            }
            Effect::RestreamProposal(height, round, valid_round, _address, value_id, r) => {
                if let Some(n) = round.as_u32() {
                    let got = self.nodes[node]
                        .host
                        .restream(height.0, n, valid_round, &value_id);
                    if self.trace {
                        eprintln!(
                            "t={} node{node} restream h={} r={n} vr={valid_round} found={:?}",
                            self.now - START_MS,
                            height.0,
                            got.as_ref().map(|x| x.is_some())
                        );
                    }
                    if let Ok(Some(parts)) = got {
                        self.publish_parts(node, parts);
                    }
                }
                r.resume_with(())
            }
            Effect::Decide(certificate, _extensions, r) => {
                let cert = certificate_from_engine(&certificate);
                let height = cert.height;
                if self.nodes[node].host.decided(cert).is_ok() {
                    self.decided(node, height);
                }
                r.resume_with(())
            }
            Effect::Finalize(certificate, _extensions, evidence, r) => {
                if !evidence.is_empty() {
                    let items = crate::context::evidence_from_engine(&evidence);
                    let _ = self.nodes[node].host.report_evidence(items);
                }
                let next = certificate.height.0 + 1;
                if self.nodes[node].host.next_height() == next {
                    let vs = self.nodes[node].host.height_validators();
                    self.at(
                        0,
                        Event::Input {
                            node,
                            input: Input::StartHeight(
                                Height(next),
                                vs,
                                false,
                                None,
                                VoteExtensionPolicy::default(),
                            ),
                        },
                    );
                }
                r.resume_with(())
            }
            Effect::SignVote(vote, r) => {
                let s = self.nodes[node]
                    .signer
                    .sign(&self.domain.signed_vote_bytes(&vote));
                r.resume_with(SignedMessage::new(vote, s))
            }
            Effect::SignProposal(p, r) => {
                let s = self.nodes[node]
                    .signer
                    .sign(&self.domain.proposal_bytes(&p));
                r.resume_with(SignedMessage::new(p, s))
            }
            Effect::VerifySignature(msg, pk, r) => {
                let bytes = match &msg.message {
                    mcc::ConsensusMsg::Vote(v) => self.domain.signed_vote_bytes(v),
                    mcc::ConsensusMsg::Proposal(p) => self.domain.proposal_bytes(p),
                };
                r.resume_with(crate::signing::verify_signature(
                    &pk,
                    &bytes,
                    &msg.signature,
                ))
            }
            Effect::VerifyCommitCertificate(c, vs, th, r) => {
                r.resume_with(self.verify(|v, ctx| v.verify_commit_certificate(ctx, &c, &vs, th)))
            }
            Effect::VerifyExtendedCommitCertificate(c, vs, th, policy, r) => {
                r.resume_with(self.verify(|v, ctx| {
                    v.verify_extended_commit_certificate(ctx, &c, &vs, th, policy)
                }))
            }
            Effect::VerifyPolkaCertificate(c, vs, th, r) => {
                r.resume_with(self.verify(|v, ctx| v.verify_polka_certificate(ctx, &c, &vs, th)))
            }
            Effect::VerifyRoundCertificate(c, vs, th, r) => {
                r.resume_with(self.verify(|v, ctx| v.verify_round_certificate(ctx, &c, &vs, th)))
            }
            Effect::CertVerifiedSyncValue(_, _, r) => r.resume_with(()),
            Effect::CertRejectedSyncValue(_, _, _, r) => r.resume_with(()),
            Effect::WalAppend(_, _, r) => r.resume_with(()),
            Effect::ExtendVote(_, _, _, _, r) => r.resume_with(None),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => r.resume_with(Ok(())),
        })
    }

    /// Runs one of the engine's certificate checks (async in signature, but never waiting) to completion.
    fn verify<'a, F>(
        &'a self,
        check: impl FnOnce(&'a ConsensusVerifier, &'a BatonContext) -> F,
    ) -> Result<(), CertificateError<BatonContext>>
    where
        F: std::future::Future<Output = Result<(), CertificateError<BatonContext>>> + 'a,
    {
        let fut = std::pin::pin!(check(&self.verifier, &BatonContext));
        let mut fut = fut;
        match fut
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(CertificateError::NotEnoughVotingPower {
                signed: 0,
                total: 0,
                expected: 1,
            }),
        }
    }

    fn finish(self) -> SimOutcome {
        let mut history = RunHistory {
            submitted: self
                .acked
                .iter()
                .map(|(h, b)| {
                    let mut entries = BTreeMap::new();
                    for e in &b.entries {
                        *entries.entry(e.rollup_id).or_insert(0u32) += 1;
                    }
                    Submitted {
                        bundle: *h,
                        entries,
                        acked: true,
                    }
                })
                .collect(),
            progress: self.progress.clone(),
            faults: self
                .cfg
                .partitions
                .iter()
                .map(|p| Fault {
                    label: p.label.clone(),
                    healed_ms: Some(p.to_ms),
                })
                .chain(
                    (self.cfg.faults.until_ms < self.cfg.duration_ms).then(|| Fault {
                        label: "lossy network".into(),
                        healed_ms: Some(self.cfg.faults.until_ms),
                    }),
                )
                .collect(),
            ..RunHistory::default()
        };
        for (i, n) in self.nodes.iter().enumerate() {
            if n.behaviour != Behaviour::Honest {
                continue;
            }
            let mut chain = NodeChain {
                node: format!("node{i}"),
                ..NodeChain::default()
            };
            let tip = n.host.next_height() - 1;
            for h in 1..=tip {
                let Ok(Some(block)) = n.store.block(h) else {
                    break;
                };
                chain.blocks.push(ChainBlock {
                    height: h,
                    hash: block.hash(),
                    header_hash: block.header.hash(),
                    parent_hash: block.header.parent_hash,
                });
                for (rollup, entries) in block.batches() {
                    chain.entries.extend(entries.iter().map(|e| ChainEntry {
                        height: h,
                        rollup,
                        bundle: e.bundle_hash,
                        index_in_bundle: e.index_in_bundle,
                    }));
                }
            }
            history.chains.push(chain);
        }
        // Bundles that expired or lost their nonce are reported, not lost.
        for n in &self.nodes {
            for h in self.acked.keys() {
                if let Ok(Some(_)) = n.store.dropped(h) {
                    history.dropped.insert(*h);
                }
            }
        }
        SimOutcome {
            report: check(&history),
            heights: self
                .nodes
                .iter()
                .map(|n| n.host.next_height() - 1)
                .collect(),
            sent: self.sent,
            dropped: self.dropped,
            duplicated: self.duplicated,
            events: self.processed,
            sets: self
                .nodes
                .iter()
                .map(|n| n.host.validators().clone())
                .collect(),
            jailed: self.nodes.iter().map(|n| n.host.jailed().clone()).collect(),
        }
    }

    pub(crate) fn domain(&self) -> ChainDomain {
        self.domain
    }

    pub(crate) fn signer(&self, node: usize) -> &ConsensusSigner {
        &self.nodes[node].signer
    }

    pub(crate) fn twin(&self, node: usize) -> Option<(u64, u32, Value)> {
        self.nodes[node].twin
    }

    pub(crate) fn nodes(&self) -> usize {
        self.nodes.len()
    }

    pub(crate) fn value_of(parts: &[ProposalPart]) -> Option<Value> {
        parts.iter().find_map(|p| match p {
            ProposalPart::Init { header, .. } => Some(Value(header.hash())),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests;
