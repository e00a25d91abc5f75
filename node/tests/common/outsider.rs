//! An outsider on the p2p network: a Malachite engine with a fresh libp2p identity and no validator key, dialling
//! the nodes as anyone may on a chain with epochs. It records every proposal-channel message it receives (with
//! the peer that delivered it) and publishes whatever the test tells it to, outside any honest stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use malachitebft_app_channel::app::config::{
    ConsensusConfig, NodeConfig as EngineNodeConfig, PubSubProtocol, ValueSyncConfig,
};
use malachitebft_app_channel::app::engine::host::{HeightParams, Next, SyncedValueOutcome};
use malachitebft_app_channel::app::net::Multiaddr;
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::{
    AppMsg, ConsensusContext, EngineBuilder, NetworkContext, NetworkIdentity, NetworkMsg,
    RequestContext, SyncContext, WalContext,
};
use tokio::sync::mpsc;

use baton_consensus::context::{BatonContext, ConsensusVerifier};
use baton_consensus::ids::Height;
use baton_consensus::params::ConsensusParams;
use baton_consensus::parts::ProposalPart;
use baton_consensus::signing::ChainDomain;
use baton_consensus::validators::ValidatorSet;
use baton_node::codec::WireCodec;
use baton_node::keys::NodeKey;

#[derive(Clone, Debug)]
struct OutsiderConfig {
    consensus: ConsensusConfig,
    value_sync: ValueSyncConfig,
}

impl EngineNodeConfig for OutsiderConfig {
    fn moniker(&self) -> &str {
        "outsider"
    }
    fn consensus(&self) -> &ConsensusConfig {
        &self.consensus
    }
    fn consensus_mut(&mut self) -> &mut ConsensusConfig {
        &mut self.consensus
    }
    fn value_sync(&self) -> &ValueSyncConfig {
        &self.value_sync
    }
    fn value_sync_mut(&mut self) -> &mut ValueSyncConfig {
        &mut self.value_sync
    }
}

/// A message received on the proposal-parts channel: the delivering peer (libp2p peer id bytes) and the part.
pub type Received = (Vec<u8>, ProposalPart);

pub struct Outsider {
    network: mpsc::Sender<NetworkMsg<BatonContext>>,
    received: Arc<Mutex<Vec<Received>>>,
    next_id: u64,
    app: tokio::task::JoinHandle<()>,
    engine: malachitebft_app_channel::EngineHandle,
    _wal: tempfile::TempDir,
}

impl Outsider {
    /// Starts the outsider and dials `peers` (multiaddrs naming the peer id).
    pub async fn start(peers: &[String], set: ValidatorSet, domain: ChainDomain) -> Self {
        let key = NodeKey {
            signing_key: ed25519_consensus::SigningKey::from(rand::random::<[u8; 32]>()),
        };
        let keypair = key.keypair().expect("libp2p identity");
        let mut consensus = ConsensusConfig::default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        consensus.p2p.listen_addr = format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr");
        consensus.p2p.persistent_peers = peers
            .iter()
            .map(|p| p.parse::<Multiaddr>().expect("peer multiaddr"))
            .collect();
        consensus.p2p.discovery.enabled = false;
        consensus.p2p.protocol = PubSubProtocol::Broadcast;
        let cfg = OutsiderConfig {
            consensus,
            value_sync: ValueSyncConfig::default(),
        };
        let wal = tempfile::tempdir().expect("tempdir");
        let identity = NetworkIdentity::new("outsider".into(), keypair, None);
        let address = key.address();
        let (mut channels, engine) = EngineBuilder::new(BatonContext, cfg)
            .with_default_wal(WalContext::new(wal.path().join("wal"), WireCodec))
            .with_default_network(NetworkContext::new(identity, WireCodec))
            .with_default_consensus(ConsensusContext::<BatonContext>::new_full_node(
                address,
                Box::new(ConsensusVerifier::new(domain)),
            ))
            .with_default_sync(SyncContext::new(WireCodec))
            .with_default_request(RequestContext::new(16))
            .build()
            .await
            .expect("outsider engine");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let params = HeightParams::new(set, ConsensusParams::for_tests().timeouts_for(true), None);
        let app = tokio::spawn(async move {
            // Answers the engine just enough to keep it running; records what arrives on the parts channel.
            while let Some(msg) = channels.consensus.recv().await {
                match msg {
                    AppMsg::ConsensusReady { reply } => {
                        let _ = reply.send((Height(1), params.clone()));
                    }
                    AppMsg::StartedRound { reply_value, .. } => {
                        let _ = reply_value.send(Vec::new());
                    }
                    AppMsg::ReceivedProposalPart {
                        from, part, reply, ..
                    } => {
                        if let StreamContent::Data(p) = part.content {
                            log.lock().expect("log").push((from.to_bytes(), p));
                        }
                        let _ = reply.send(None);
                    }
                    AppMsg::ExtendVote { reply, .. } => {
                        let _ = reply.send(None);
                    }
                    AppMsg::VerifyVoteExtensions {
                        extensions, reply, ..
                    } => {
                        let _ =
                            reply.send(extensions.into_iter().map(|(v, _)| (v, Ok(()))).collect());
                    }
                    AppMsg::GetHistoryMinHeight { reply } => {
                        let _ = reply.send(Height(1));
                    }
                    AppMsg::Decided { reply, .. } => {
                        let _ = reply.send(());
                    }
                    AppMsg::Finalized {
                        certificate, reply, ..
                    } => {
                        let _ = reply.send(Next::Start(
                            Height(certificate.height.0 + 1),
                            params.clone(),
                        ));
                    }
                    AppMsg::GetDecidedValues { reply, .. } => {
                        let _ = reply.send(Vec::new());
                    }
                    AppMsg::ProcessSyncedValue { reply, .. } => {
                        let _ = reply.send(SyncedValueOutcome::PeerFault);
                    }
                    AppMsg::GetValue { .. } | AppMsg::RestreamProposal { .. } => {}
                }
            }
        });
        Outsider {
            network: channels.network,
            received,
            next_id: 0,
            app,
            engine,
            _wal: wal,
        }
    }

    /// Publishes one message on the proposal-parts channel, in a stream of its own (as dissemination travels).
    pub async fn publish(&mut self, part: ProposalPart) {
        self.next_id += 1;
        let mut id = b"x".to_vec();
        id.extend_from_slice(&self.next_id.to_be_bytes());
        let msg = StreamMessage::new(StreamId::new(Bytes::from(id)), 0, StreamContent::Data(part));
        self.network
            .send(NetworkMsg::PublishProposalPart(msg))
            .await
            .expect("outsider network channel");
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }

    /// Waits until a message delivered by `peer` (peer id bytes) has arrived; panics after `timeout`.
    pub async fn wait_for_peer(&self, peer: &[u8], timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.received().iter().any(|(from, _)| from == peer) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the outsider heard nothing from that peer within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        self.app.abort();
        self.engine.handle.abort();
        self.engine.actor.stop(None);
    }
}
