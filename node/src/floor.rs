//! The engine floor: the Malachite engine as Baton runs it, with nothing of Baton's around it.
//!
//! One process per validator, started by the load harness (`baton-loadtest --engine-only`) or by hand with
//! `baton engine-floor`. Each runs the same engine build as a node ([`crate::node::run`]): Baton's consensus
//! context, Ed25519 votes signed and verified with the same verify-once memory, libp2p with the same transport and
//! pub-sub, the engine's write-ahead log, and the same round timeouts. Around it there is no storage, no gRPC, no
//! bundles, no signature recovery and no dissemination: the proposer streams a header (and, with `value_bytes`,
//! filler of that size that nobody checks) and signs it; the others check the proposer and its signature and
//! vote. What the floor costs per height, and how many heights per second it makes, is what Baton is measured
//! against in BENCHMARKS.md ("engine floor").
//!
//! Keys come from a seed every process is given, so the processes agree on the set without files.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_consensus::SigningKey;
use tokio::time::Instant;
use tracing::{info, warn};

use baton_consensus::bench::Bench;
use baton_consensus::bundle::{Bundle, BundleEntry};
use baton_consensus::context::{BatonContext, ConsensusSigner, ConsensusVerifier};
use baton_consensus::hash::Hash;
use baton_consensus::ids::Height;
use baton_consensus::ids::L1Origin;
use baton_consensus::params::ConsensusParams;
use baton_consensus::parts::ProposalPart;
use baton_consensus::sigcache::{SignatureCache, DEFAULT_SIGNATURE_CACHE};
use baton_consensus::signing::{round_u32, ChainDomain, Value};
use baton_consensus::types::BlockHeader;
use baton_consensus::validators::{Validator, ValidatorSet};
use malachitebft_app_channel::app::config::{ConsensusConfig, PubSubProtocol};
use malachitebft_app_channel::app::engine::host::{HeightParams, Next, SyncedValueOutcome};
use malachitebft_app_channel::app::streaming::StreamContent;
use malachitebft_app_channel::app::types::core::{
    CommitCertificate, ExtendedCommitCertificate, Round, Validity, VoteExtensions,
};
use malachitebft_app_channel::app::types::sync::RawDecidedValue;
use malachitebft_app_channel::app::types::LocallyProposedValue;
use malachitebft_app_channel::{
    AppMsg, Channels, ConsensusContext, EngineBuilder, NetworkContext, Reply, RequestContext,
    SyncContext, WalContext,
};
use malachitebft_core_consensus::ProposedValue;

use crate::app::{proposal_wait, publish_parts};
use crate::codec::WireCodec;
use crate::config::{P2pSection, SyncSection};
use crate::engine::{network_identity, parse_addr, value_sync_config, EngineConfig};
use crate::error::NodeError;
use crate::keys::NodeKey;

/// Bytes of filler per bundle of a value with `value_bytes`.
const FILLER_BUNDLE_BYTES: usize = 512;
/// Incomplete part streams kept (the oldest is dropped beyond this).
const MAX_STREAMS: usize = 64;
/// Complete proposals kept for heights not started yet.
const MAX_EARLY: usize = 64;
/// Decided heights kept in memory for validators that fell behind to sync from.
const KEEP_DECIDED: usize = 1_024;

/// One engine-floor process.
#[derive(Clone, Debug)]
pub struct FloorOptions {
    /// This process's validator (0-based).
    pub index: usize,
    /// Every validator's p2p port on 127.0.0.1, in index order (their count is the set's size).
    pub ports: Vec<u16>,
    /// The seed the validators' keys are derived from (the same in every process).
    pub seed: u64,
    /// Filler bytes each proposal carries, in 512-byte pieces nobody checks (0: a header only).
    pub value_bytes: usize,
    /// Least time between a decision and this node's next proposal (0: propose at once).
    pub block_time_ms: u64,
    /// Where the engine's write-ahead log goes.
    pub dir: PathBuf,
    /// The pub-sub protocol, as the nodes' `p2p.pubsub`.
    pub broadcast: bool,
}

/// The key of validator `index` of a floor run.
fn floor_key(seed: u64, index: usize) -> NodeKey {
    let bytes = Hash::digest(&[
        b"baton/engine-floor/v1",
        &seed.to_be_bytes(),
        &(index as u64).to_be_bytes(),
    ]);
    NodeKey {
        signing_key: SigningKey::from(bytes.0),
    }
}

struct Stream {
    parts: HashMap<u64, ProposalPart>,
    fin: Option<u64>,
}

/// Runs one floor validator until `shutdown` resolves. Prints `height N` to stdout five times a second (the harness
/// reads it).
pub async fn run(
    opts: FloorOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let n = opts.ports.len();
    if opts.index >= n {
        return Err(NodeError::Config(format!(
            "--index {} with {n} ports",
            opts.index
        )));
    }
    let keys: Vec<NodeKey> = (0..n).map(|i| floor_key(opts.seed, i)).collect();
    let set = ValidatorSet::new(
        keys.iter()
            .map(|k| Validator::new(k.signing_key.verification_key(), 1))
            .collect(),
    )
    .map_err(NodeError::Config)?;
    let key = keys[opts.index].clone();
    let domain = ChainDomain::new("baton-engine-floor");
    let signatures = Arc::new(SignatureCache::new(DEFAULT_SIGNATURE_CACHE));
    let signer =
        ConsensusSigner::new(key.signing_key.clone(), domain).with_cache(signatures.clone());
    let verifier = ConsensusVerifier::new(domain).with_cache(signatures);

    let mut consensus = ConsensusConfig::default();
    consensus.p2p.listen_addr =
        parse_addr(&format!("/ip4/127.0.0.1/tcp/{}", opts.ports[opts.index]))?;
    let mut peers = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if i != opts.index {
            peers.push(parse_addr(&format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                opts.ports[i],
                k.peer_id()?
            ))?);
        }
    }
    consensus.p2p.persistent_peers = peers;
    consensus.p2p.persistent_peers_only = true;
    consensus.p2p.discovery.enabled = false;
    if opts.broadcast {
        consensus.p2p.protocol = PubSubProtocol::Broadcast;
    }
    let moniker = format!("floor{}", opts.index);
    let engine_cfg = EngineConfig {
        moniker: moniker.clone(),
        consensus,
        // A validator that missed a decision catches up through value sync, as a node with the default `[sync]`
        // section does (peers' heights every 500 ms: the engine's own default of 10 s leaves a validator that
        // missed a proposal at start-up behind for seconds).
        value_sync: value_sync_config(&SyncSection::default(), P2pSection::default().max_rpc_bytes),
    };
    let identity = network_identity(&moniker, &key, Some(&signer)).await?;
    let wal = opts.dir.join(format!("floor{}-wal", opts.index));
    std::fs::create_dir_all(&wal)?;
    let (channels, engine) = EngineBuilder::new(BatonContext, engine_cfg)
        .with_default_wal(WalContext::new(wal.join("consensus.wal"), WireCodec))
        .with_default_network(NetworkContext::new(identity, WireCodec))
        .with_default_consensus(ConsensusContext::<BatonContext>::new_validator(
            key.address(),
            Box::new(verifier),
            Box::new(signer.clone()),
        ))
        .with_default_sync(SyncContext::new(WireCodec))
        .with_default_request(RequestContext::new(64))
        .build()
        .await
        .map_err(|e| NodeError::Engine(e.to_string()))?;
    info!(index = opts.index, validators = n, "engine floor started");

    let mut app = Floor {
        channels,
        set,
        domain,
        signer,
        opts,
        params: ConsensusParams::default(),
        height: 1,
        parent: Hash::ZERO,
        last_decided: Instant::now(),
        pending: None,
        headers: HashMap::new(),
        decided: VecDeque::new(),
        early: Vec::new(),
        streams: HashMap::new(),
        order: Vec::new(),
    };
    let outcome = app.serve(shutdown).await;
    let _ = engine
        .actor
        .kill_and_wait(Some(Duration::from_secs(5)))
        .await;
    engine.handle.abort();
    outcome
}

struct Floor {
    channels: Channels<BatonContext>,
    set: ValidatorSet,
    domain: ChainDomain,
    signer: ConsensusSigner,
    opts: FloorOptions,
    params: ConsensusParams,
    height: u64,
    parent: Hash,
    last_decided: Instant,
    pending: Option<(
        u64,
        Round,
        Instant,
        Reply<LocallyProposedValue<BatonContext>>,
    )>,
    /// Headers of the current height's proposals (this node's and judged ones), by value id: a value locked in
    /// one round is proposed again by later rounds' proposers.
    headers: HashMap<Hash, BlockHeader>,
    /// The latest decided headers with their certificates, oldest first (at most [`KEEP_DECIDED`]).
    decided: VecDeque<(BlockHeader, CommitCertificate<BatonContext>)>,
    /// Complete proposals for heights not started yet, handed to the engine when their round starts (bounded).
    early: Vec<ProposedValue<BatonContext>>,
    streams: HashMap<Vec<u8>, Stream>,
    order: Vec<Vec<u8>>,
}

impl Floor {
    async fn serve(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        tokio::pin!(shutdown);
        let mut report = tokio::time::interval(Duration::from_millis(200));
        loop {
            let deadline = self.pending.as_ref().map(|p| p.2);
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                msg = self.channels.consensus.recv() => match msg {
                    Some(m) => self.handle(m).await?,
                    None => return Err(NodeError::Engine("the consensus engine stopped".into())),
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.propose().await?;
                }
                _ = report.tick() => println!("height {}", self.height.saturating_sub(1)),
            }
        }
    }

    fn height_params(&self) -> HeightParams<BatonContext> {
        HeightParams::new(self.set.clone(), self.params.timeouts_for(true), None)
    }

    async fn propose(&mut self) -> Result<(), NodeError> {
        let Some((height, round, _, reply)) = self.pending.take() else {
            return Ok(());
        };
        let header = BlockHeader {
            height,
            parent_hash: self.parent,
            timestamp_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            proposer: self.signer.address(),
            validator_set_hash: self.set.hash(),
            bundles_root: Hash::ZERO,
            namespace_root: Hash::ZERO,
            namespace_count: 0,
            bundle_count: 0,
            round: round_u32(round),
            bench: Bench::default(),
            l1_origin: L1Origin::default(),
            next_validator_set_hash: self.set.hash(),
            evidence_root: Hash::ZERO,
        };
        let value = header.hash();
        let _ = reply.send(LocallyProposedValue::new(
            Height(height),
            round,
            Value(value),
        ));
        self.headers.insert(value, header.clone());
        let parts = self.parts(header, round, Round::Nil);
        publish_parts(&self.channels.network, height, round, parts).await
    }

    /// The signed parts that propose `header` in `round` (`pol_round`: the round it was locked in, if any).
    fn parts(&self, header: BlockHeader, round: Round, pol_round: Round) -> Vec<ProposalPart> {
        let (height, value) = (header.height, header.hash());
        let mut parts = vec![ProposalPart::Init {
            height: Height(height),
            round,
            pol_round,
            proposer: self.signer.address(),
            header: Box::new(header),
        }];
        if self.opts.value_bytes > 0 {
            parts.push(ProposalPart::Data {
                bundles: filler(self.opts.value_bytes),
            });
        }
        parts.push(ProposalPart::Fin {
            signature: self.signer.sign_parts(height, round_u32(round), &value),
        });
        parts
    }

    /// A complete stream: the proposer of its round, with a good signature over its header.
    fn judge(&mut self, stream: Stream) -> Option<ProposedValue<BatonContext>> {
        let mut parts: Vec<(u64, ProposalPart)> = stream.parts.into_iter().collect();
        parts.sort_by_key(|(seq, _)| *seq);
        let mut parts = parts.into_iter().map(|(_, p)| p);
        let Some(ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer,
            header,
        }) = parts.next()
        else {
            return None;
        };
        let signature = parts.find_map(|p| match p {
            ProposalPart::Fin { signature } => Some(signature),
            _ => None,
        })?;
        let round_n = round.as_u32()?;
        let expected = self.set.proposer(height.0, round_n);
        let value = header.hash();
        if expected.address != proposer
            || !self.domain.verify_parts(
                &expected.public_key,
                height.0,
                round_n,
                &value,
                &signature,
            )
        {
            warn!(
                height = height.0,
                round = round_n,
                "floor: a stream from the wrong proposer or with a bad signature"
            );
            return None;
        }
        // Kept for a later round's proposer to restream, and for the decision (early heights too, bounded).
        if (self.height..=self.height + 8).contains(&height.0) && self.headers.len() < 256 {
            self.headers.insert(value, *header);
        }
        Some(ProposedValue {
            height,
            round,
            valid_round: pol_round,
            proposer,
            value: Value(value),
            validity: Validity::Valid,
        })
    }

    async fn handle(&mut self, msg: AppMsg<BatonContext>) -> Result<(), NodeError> {
        match msg {
            AppMsg::ConsensusReady { reply } => {
                let _ = reply.send((Height(self.height), self.height_params()));
            }
            AppMsg::StartedRound {
                height,
                round,
                reply_value,
                ..
            } => {
                self.early.retain(|v| v.height >= height);
                let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early)
                    .into_iter()
                    .partition(|v| v.height == height && v.round == round);
                self.early = later;
                let _ = reply_value.send(now);
            }
            AppMsg::GetValue {
                height,
                round,
                timeout,
                reply,
            } => {
                let wait = proposal_wait(
                    Duration::from_millis(self.opts.block_time_ms)
                        .saturating_sub(self.last_decided.elapsed()),
                    timeout,
                );
                self.pending = Some((height.0, round, Instant::now() + wait, reply));
                if wait.is_zero() {
                    self.propose().await?;
                }
            }
            AppMsg::RestreamProposal {
                height,
                round,
                valid_round,
                value_id,
                ..
            } => {
                if let Some(header) = self.headers.get(&value_id).cloned() {
                    let parts = self.parts(header, round, valid_round);
                    publish_parts(&self.channels.network, height.0, round, parts).await?;
                }
            }
            AppMsg::ExtendVote { reply, .. } => {
                let _ = reply.send(None);
            }
            AppMsg::VerifyVoteExtensions {
                extensions, reply, ..
            } => {
                let _ = reply.send(extensions.into_iter().map(|(v, _)| (v, Ok(()))).collect());
            }
            AppMsg::GetHistoryMinHeight { reply } => {
                let _ = reply.send(Height(1));
            }
            AppMsg::ReceivedProposalPart {
                from,
                published_by,
                part,
                reply,
            } => {
                let mut key = published_by.unwrap_or(from).to_bytes();
                key.extend_from_slice(&part.stream_id.to_bytes());
                if !self.streams.contains_key(&key) {
                    if self.order.len() >= MAX_STREAMS {
                        let old = self.order.remove(0);
                        self.streams.remove(&old);
                    }
                    self.order.push(key.clone());
                }
                let stream = self.streams.entry(key.clone()).or_insert(Stream {
                    parts: HashMap::new(),
                    fin: None,
                });
                match part.content {
                    StreamContent::Data(p) => {
                        stream.parts.insert(part.sequence, p);
                    }
                    StreamContent::Fin => stream.fin = Some(part.sequence),
                }
                let complete = stream.fin == Some(stream.parts.len() as u64);
                let mut value = if complete {
                    self.order.retain(|k| *k != key);
                    self.streams.remove(&key).and_then(|s| self.judge(s))
                } else {
                    None
                };
                // A proposal for a later height waits for its round to start, as a node's do.
                if value.as_ref().is_some_and(|v| v.height.0 > self.height) {
                    if self.early.len() < MAX_EARLY {
                        self.early.extend(value.take());
                    }
                    value = None;
                }
                let _ = reply.send(value);
            }
            AppMsg::Decided {
                certificate, reply, ..
            } => {
                self.parent = certificate.value_id;
                self.last_decided = Instant::now();
                if let Some(header) = self.headers.get(&certificate.value_id) {
                    if self.decided.len() >= KEEP_DECIDED {
                        self.decided.pop_front();
                    }
                    self.decided.push_back((header.clone(), certificate));
                }
                let _ = reply.send(());
            }
            AppMsg::Finalized {
                certificate, reply, ..
            } => {
                self.height = certificate.height.0 + 1;
                let finalized = certificate.height.0;
                self.headers.retain(|_, h| h.height > finalized);
                let _ = reply.send(Next::Start(Height(self.height), self.height_params()));
            }
            AppMsg::GetDecidedValues { range, reply } => {
                let values = self
                    .decided
                    .iter()
                    .filter(|(h, _)| range.contains(&Height(h.height)))
                    .filter_map(|(h, c)| {
                        Some(RawDecidedValue::new(
                            Bytes::from(borsh::to_vec(h).ok()?),
                            ExtendedCommitCertificate::from_commit_certificate_and_extensions(
                                c.clone(),
                                VoteExtensions::new(Vec::new()),
                            ),
                        ))
                    })
                    .collect();
                let _ = reply.send(values);
            }
            AppMsg::ProcessSyncedValue {
                height,
                round,
                proposer,
                value_bytes,
                reply,
            } => {
                // The engine checks the certificate; the header only has to be the certified value.
                let outcome = match borsh::from_slice::<BlockHeader>(&value_bytes) {
                    Ok(header) if header.height == height.0 => {
                        let value = header.hash();
                        self.headers.insert(value, header);
                        SyncedValueOutcome::Verdict(ProposedValue {
                            height,
                            round,
                            valid_round: Round::Nil,
                            proposer,
                            value: Value(value),
                            validity: Validity::Valid,
                        })
                    }
                    _ => SyncedValueOutcome::PeerFault,
                };
                let _ = reply.send(outcome);
            }
        }
        Ok(())
    }
}

/// Unsigned bundles of 512-byte payloads adding up to about `bytes`: wire weight only.
fn filler(bytes: usize) -> Vec<Bundle> {
    let count = bytes.div_ceil(FILLER_BUNDLE_BYTES);
    (0..count)
        .map(|i| Bundle {
            network_id: 0,
            sender: Default::default(),
            nonce: i as u64,
            expiry_height: u64::MAX,
            entries: vec![BundleEntry {
                rollup_id: 1,
                payload: vec![i as u8; FILLER_BUNDLE_BYTES],
            }],
            signature: [0; 65],
        })
        .collect()
}
