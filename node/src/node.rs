//! Starting a node: open storage, build the host, start the engine (libp2p, consensus, sync, WAL), the ingest
//! writer, the consensus loop and the gRPC server; stop them all on shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tracing::{error, info, warn};

use baton_consensus::context::{BatonContext, ConsensusSigner, ConsensusVerifier};
use baton_consensus::host::{Host, HostLimits};
use baton_consensus::sigcache::{SignatureCache, DEFAULT_SIGNATURE_CACHE};
use malachitebft_app_channel::app::config::{
    ConsensusConfig, NodeConfig as EngineNodeConfig, PubSubProtocol, ValueSyncConfig,
};
use malachitebft_app_channel::app::net::Multiaddr;
use malachitebft_app_channel::{
    ConsensusContext, EngineBuilder, NetworkContext, NetworkIdentity, NetworkRequest,
    RequestContext, Signer, SyncContext, WalContext,
};
use malachitebft_codec::Codec;

use crate::app::{ConsensusLoop, GossipLimits, LoopLinks, SystemClock};
use crate::codec::WireCodec;
use crate::config::{Genesis, NodeConfig};
use crate::error::NodeError;
use crate::grpc::{serve, Api};
use crate::ingest::{AdmissionGate, IngestHandle, IngestLimits};
use crate::keys::NodeKey;
use crate::metrics::Metrics;
use crate::peers::{configured_peers, PeerGate};
use crate::state::{NodeInfo, Shared};
use crate::store::RocksStore;
use crate::verify::{PoolLimits, VerifyPool};

/// The engine's view of a node's configuration (what Malachite asks of it).
#[derive(Clone, Debug)]
pub(crate) struct EngineConfig {
    pub(crate) moniker: String,
    pub(crate) consensus: ConsensusConfig,
    pub(crate) value_sync: ValueSyncConfig,
}

impl EngineNodeConfig for EngineConfig {
    fn moniker(&self) -> &str {
        &self.moniker
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

/// The node's libp2p identity; a validator's carries a proof, signed with its consensus key, that the peer id is
/// that validator's.
pub(crate) async fn network_identity(
    moniker: &str,
    key: &NodeKey,
    signer: Option<&ConsensusSigner>,
) -> Result<NetworkIdentity, NodeError> {
    let keypair = key.keypair()?;
    let Some(signer) = signer else {
        return Ok(NetworkIdentity::new(moniker.to_string(), keypair, None));
    };
    let proof = signer
        .sign_validator_proof(
            key.signing_key.verification_key().as_bytes().to_vec(),
            keypair.public().to_peer_id().to_bytes(),
        )
        .await
        .map_err(|e| NodeError::Key(format!("cannot sign validator proof: {e:?}")))?;
    let proof_bytes = WireCodec
        .encode(&proof)
        .map_err(|e| NodeError::Engine(e.to_string()))?;
    Ok(NetworkIdentity::new_validator(
        moniker.to_string(),
        keypair,
        key.address().to_string(),
        proof_bytes,
    ))
}

pub(crate) fn parse_addr(s: &str) -> Result<Multiaddr, NodeError> {
    s.parse()
        .map_err(|e| NodeError::Config(format!("`{s}` is not a multiaddr: {e}")))
}

/// Runs a node until `shutdown` resolves or a component fails.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let genesis = Genesis::load(&cfg.genesis_file)?;
    let key = NodeKey::load(&cfg.key_file)?;
    let validators = genesis.validator_set()?;
    let domain = genesis.domain();
    let address = key.address();
    // A node configured to validate signs whenever its key is in a height's set: from genesis, or from the epoch
    // its stake makes it a member (until then it follows the chain like a full node).
    let is_validator = cfg.validator;
    let spec = genesis.spec()?;
    let params = spec.params.clone();
    crate::l1::check_staking_attesters(&genesis, cfg.l1.as_ref()).await?;

    let store = RocksStore::open(
        &cfg.data_dir.join("db"),
        cfg.storage.sync_writes,
        cfg.storage.block_cache_bytes,
    )?;
    let signatures = Arc::new(SignatureCache::new(DEFAULT_SIGNATURE_CACHE));
    let signer =
        ConsensusSigner::new(key.signing_key.clone(), domain).with_cache(signatures.clone());
    let limits = HostLimits {
        mempool_max_bundles: cfg.mempool.max_bundles,
        mempool_max_bytes: cfg.mempool.max_bytes,
        mempool_max_per_sender: cfg.mempool.max_pending_per_sender,
        mempool_max_nonce_gap: cfg.mempool.max_nonce_gap,
        mempool_max_waiting: cfg.mempool.max_waiting,
        mempool_max_waiting_bytes: cfg.mempool.max_waiting_bytes,
        mempool_waiting_ttl_ms: cfg.mempool.waiting_ttl_ms,
        side_cache: cfg.mempool.side_cache,
        side_cache_bytes: cfg.mempool.side_cache_bytes,
        compact_proposals: cfg.mempool.compact_proposals,
        admit_max_wait_ms: cfg.mempool.admit_max_wait_ms,
        ..HostLimits::default()
    };
    let mut host = Host::new(
        domain,
        genesis.hash()?,
        is_validator.then(|| signer.clone()),
        validators.clone(),
        spec.clone(),
        limits,
        store.clone(),
        SystemClock,
    )?;
    let (inbox, based) = start_inbox(&genesis, cfg.l1.as_ref(), &spec, &store).await?;
    match &inbox {
        Some(view) => host.set_l1(Arc::new(view.clone())),
        // A node of a chain with L1 but without an L1 endpoint (a full node) takes blocks on their certificates.
        None if genesis.l1.is_some() => host.set_l1(Arc::new(baton_consensus::origin::Certified)),
        None => {}
    }

    // Engine configuration: the peers are the genesis validators and configured full nodes (who may connect in:
    // see `persistent_peers_only` below).
    let mut consensus = ConsensusConfig::default();
    consensus.p2p.listen_addr = parse_addr(&cfg.p2p.listen_addr)?;
    let own = cfg.p2p.listen_addr.clone();
    let mut peers = Vec::new();
    for v in &genesis.validators {
        let same_key = v
            .to_validator()
            .map(|val| val.address == address)
            .unwrap_or(false);
        if !same_key && v.p2p_addr != own {
            // Name the peer id in the address: the node then recognises the validator on an inbound connection
            // before its own dial has completed (otherwise two validators starting together reject each other).
            let addr = if v.p2p_addr.contains("/p2p/") {
                v.p2p_addr.clone()
            } else {
                format!(
                    "{}/p2p/{}",
                    v.p2p_addr,
                    crate::keys::peer_id_of(&v.public_key)?
                )
            };
            peers.push(parse_addr(&addr)?);
        }
    }
    for p in &cfg.p2p.extra_peers {
        peers.push(parse_addr(p)?);
    }
    consensus.p2p.persistent_peers = peers;
    // A fixed set talks to its configured peers only. With epochs, anyone who stakes may join: validators accept
    // inbound connections from nodes not in their config (authenticated libp2p identities; every consensus
    // message is still checked against the height's set).
    consensus.p2p.persistent_peers_only = genesis.epochs.is_none();
    consensus.p2p.discovery.enabled = false;
    consensus.p2p.discovery.max_connections_per_ip = 64;
    consensus.p2p.pubsub_max_size = bytesize(cfg.p2p.max_gossip_bytes);
    consensus.p2p.rpc_max_size = bytesize(cfg.p2p.max_rpc_bytes);
    match cfg.p2p.pubsub {
        crate::config::PubSub::Broadcast => consensus.p2p.protocol = PubSubProtocol::Broadcast,
        // Gossipsub forwards a message before the application has judged it, so on a chain anyone may connect
        // to, an outsider's traffic would be relayed between validators.
        crate::config::PubSub::Gossipsub if genesis.epochs.is_some() => {
            return Err(NodeError::Config(
                "p2p.pubsub = \"gossipsub\" relays messages before they are checked; a chain with epochs (open to \
                 any peer) must use \"broadcast\""
                    .into(),
            ))
        }
        crate::config::PubSub::Gossipsub => {}
    }
    let value_sync = value_sync_config(&cfg.sync, cfg.p2p.max_rpc_bytes);
    let engine_cfg = EngineConfig {
        moniker: cfg.moniker.clone(),
        consensus,
        value_sync,
    };

    let peer_id = key.keypair()?.public().to_peer_id();
    let identity = network_identity(&cfg.moniker, &key, is_validator.then_some(&signer)).await?;
    // One memory of good signatures shared by the verifier and this node's signer (the engine checks its own votes
    // and, at every decision, the precommits it already checked).
    let verifier = ConsensusVerifier::new(domain).with_cache(signatures.clone());
    let consensus_ctx = if is_validator {
        ConsensusContext::<BatonContext>::new_validator(
            address,
            Box::new(verifier),
            Box::new(signer),
        )
    } else {
        ConsensusContext::<BatonContext>::new_full_node(address, Box::new(verifier))
    };
    let wal_path = cfg.data_dir.join("wal").join("consensus.wal");
    std::fs::create_dir_all(cfg.data_dir.join("wal"))?;
    let (channels, engine) = EngineBuilder::new(BatonContext, engine_cfg)
        .with_default_wal(WalContext::new(wal_path, WireCodec))
        .with_default_network(NetworkContext::new(identity, WireCodec))
        .with_default_consensus(consensus_ctx)
        .with_default_sync(SyncContext::new(WireCodec))
        .with_default_request(RequestContext::new(64))
        .build()
        .await
        .map_err(|e| NodeError::Engine(e.to_string()))?;

    let info = NodeInfo {
        chain_id: genesis.chain_id.clone(),
        moniker: cfg.moniker.clone(),
        peer_id: peer_id.to_string(),
        address,
        is_validator,
        genesis_validators: validators.clone(),
    };
    let shared = Arc::new(Shared::new(info, store.latest_height()?));
    shared.set_history_min(store.history_min()?);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    metrics.mempool_capacity.set(cfg.mempool.max_bundles as i64);
    metrics
        .mempool_waiting_capacity
        .set(cfg.mempool.max_waiting as i64);
    metrics
        .ingest_capacity_bytes
        .set(cfg.mempool.ingest_queue_bytes as i64);
    let registry = Arc::new(registry);
    let (loop_tx, loop_rx) = mpsc::channel(cfg.mempool.admit_queue);
    let pool = VerifyPool::start(
        PoolLimits {
            threads: cfg.verify.threads,
            max_jobs: cfg.verify.max_queue_jobs,
            max_bytes: cfg.verify.max_queue_bytes,
        },
        Some(metrics.verify_queued_bytes.clone()),
    )?;
    metrics
        .verify_capacity_bytes
        .set(cfg.verify.max_queue_bytes as i64);
    let gate = Arc::new(AdmissionGate::new(cfg.mempool.admit_max_wait_ms));
    let ingest = IngestHandle::spawn(
        store.clone(),
        spec.clone(),
        IngestLimits {
            queue: cfg.mempool.ingest_queue,
            queue_bytes: cfg.mempool.ingest_queue_bytes,
            group: cfg.mempool.ingest_group,
            linger: Duration::from_micros(cfg.mempool.ingest_linger_us),
        },
        loop_tx.clone(),
        metrics.clone(),
        pool.clone(),
        gate.clone(),
    );

    // History pruning and the free-space watermark.
    let (stop_retention_tx, stop_retention_rx) = tokio::sync::oneshot::channel::<()>();
    let retention_task = tokio::spawn(crate::retention::run(
        crate::retention::Retention {
            data_dir: cfg.data_dir.clone(),
            retain_heights: cfg.storage.retain_heights,
            min_free_bytes: cfg.storage.min_free_bytes,
            interval: Duration::from_secs(1),
        },
        store.clone(),
        spec.rollups.ids().collect(),
        shared.clone(),
        gate.clone(),
        metrics.clone(),
        async move {
            let _ = stop_retention_rx.await;
        },
    ));

    // Peer count for Status, from the network actor's state dump.
    let net_requests = channels.net_requests.clone();
    let peers_metrics = metrics.clone();
    let peers_task = tokio::spawn(async move {
        loop {
            if let Ok(Some(dump)) = NetworkRequest::dump_state(&net_requests).await {
                peers_metrics.peers.set(dump.peers.len() as i64);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let consensus_loop = ConsensusLoop::new(
        host,
        channels,
        (loop_tx.clone(), loop_rx),
        shared.clone(),
        cfg.p2p.max_rpc_bytes as usize / 2,
        GossipLimits {
            flush_ms: cfg.mempool.gossip_flush_ms,
            batch_bytes: cfg.mempool.gossip_batch_bytes,
            reannounce_ms: cfg.mempool.reannounce_ms,
        },
        LoopLinks {
            metrics: metrics.clone(),
            pool,
            signatures: signatures.clone(),
            gate,
            peers: PeerGate::new(
                cfg.p2p.peer_limits(),
                configured_peers(&cfg.p2p.extra_peers)?,
            ),
        },
    );
    let mut consensus_loop = consensus_loop;
    consensus_loop.attestor = crate::l1::Attestor::start(
        &genesis,
        cfg.l1.as_ref(),
        is_validator.then_some(address),
        &cfg.data_dir,
        inbox.clone(),
        Some(store.clone()),
    )
    .await?
    .map(Arc::new);
    if let Some(mut status) = consensus_loop
        .attestor
        .as_ref()
        .and_then(|a| a.poster())
        .map(|p| p.watch())
    {
        let m = metrics.clone();
        tokio::spawn(async move {
            while status.changed().await.is_ok() {
                let s = status.borrow_and_update().clone();
                m.l1.observe(&s);
            }
        });
    }
    let mut loop_task = tokio::spawn(consensus_loop.run());

    {
        let (inbox, based, m) = (inbox.clone(), based.clone(), metrics.clone());
        if inbox.is_some() {
            tokio::spawn(async move {
                loop {
                    if let Some(v) = &inbox {
                        m.l1.origin_block.set(v.head().unwrap_or(0) as i64);
                        m.l1.forced_waiting.set(v.forced_len() as i64);
                    }
                    if let Some(b) = &based {
                        m.l1.based_block
                            .set(b.head().map_or(0, |h| h.number) as i64);
                        m.l1.based_held.set(b.held() as i64);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            });
        }
    }
    let forward = start_forward(
        cfg.l1.as_ref(),
        &genesis,
        based.clone(),
        &store,
        &spec,
        metrics.clone(),
    )
    .await?;
    let api = Api {
        ingest,
        to_loop: loop_tx,
        spec: Arc::new(spec),
        domain,
        store: store.clone(),
        shared: shared.clone(),
        subscribers: Arc::new(Semaphore::new(cfg.grpc.max_subscribers)),
        stream_buffer: cfg.grpc.stream_buffer,
        stream_buffer_bytes: cfg.grpc.stream_buffer_bytes,
        submit_inflight: cfg.grpc.submit_stream_inflight,
        // Bundles up to twice the limit are read and refused with RESOURCE_EXHAUSTED; larger messages are cut off
        // by the transport (OUT_OF_RANGE) before they are buffered.
        max_request_bytes: params.max_bundle_bytes as usize * 2 + 64 * 1024,
        metrics: metrics.clone(),
        based: based.clone(),
        forward,
        clients: crate::clients::ClientLimits::new(
            cfg.grpc.max_streams_per_client,
            cfg.grpc.max_submit_calls_per_client,
            metrics.grpc_client_refused.clone(),
        ),
        stream_idle: Duration::from_secs(cfg.grpc.stream_idle_timeout_secs),
        max_concurrent_per_connection: cfg.grpc.max_concurrent_per_connection,
    };
    let (stop_grpc_tx, stop_grpc_rx) = tokio::sync::oneshot::channel::<()>();
    let mut grpc_task = tokio::spawn(serve(api, cfg.grpc.listen_addr, async move {
        let _ = stop_grpc_rx.await;
    }));
    // The metrics endpoint is bound now so that a taken port fails the start, not a later scrape.
    let (stop_metrics_tx, stop_metrics_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics.listen_addr)
        .await
        .map_err(|e| {
            NodeError::Config(format!(
                "metrics.listen_addr {}: {e}",
                cfg.metrics.listen_addr
            ))
        })?;
    let mut metrics_task = tokio::spawn(crate::metrics::serve(
        registry,
        metrics_listener,
        async move {
            let _ = stop_metrics_rx.await;
        },
    ));
    info!(
        moniker = %cfg.moniker, %address, %peer_id, validator = is_validator, grpc = %cfg.grpc.listen_addr,
        metrics = %cfg.metrics.listen_addr, p2p = %cfg.p2p.listen_addr, height = shared.latest_height(),
        "node started"
    );

    let outcome = tokio::select! {
        _ = shutdown => { info!("shutdown requested"); Ok(()) }
        r = &mut loop_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => { error!(error = %e, "consensus loop failed"); Err(e) }
            Err(e) => Err(NodeError::Engine(format!("consensus loop panicked: {e}"))),
        },
        r = &mut grpc_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => { error!(error = %e, "gRPC server failed"); Err(e) }
            Err(e) => Err(NodeError::Engine(format!("gRPC server panicked: {e}"))),
        },
        r = &mut metrics_task => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => { error!(error = %e, "metrics server failed"); Err(e.into()) }
            Err(e) => Err(NodeError::Engine(format!("metrics server panicked: {e}"))),
        },
    };
    let _ = stop_metrics_tx.send(());
    metrics_task.abort();

    let _ = stop_grpc_tx.send(());
    if tokio::time::timeout(Duration::from_secs(5), &mut grpc_task)
        .await
        .is_err()
    {
        warn!("gRPC server did not stop in 5 s");
        grpc_task.abort();
    }
    peers_task.abort();
    let _ = stop_retention_tx.send(());
    if tokio::time::timeout(Duration::from_secs(5), retention_task)
        .await
        .is_err()
    {
        warn!("the pruning task did not stop in 5 s");
    }
    let _ = engine
        .actor
        .kill_and_wait(Some(Duration::from_secs(5)))
        .await;
    engine.handle.abort();
    loop_task.abort();
    info!("node stopped");
    outcome
}

/// The engine's value sync as the `[sync]` section asks (the node and the engine floor both build it here).
pub(crate) fn value_sync_config(
    sync: &crate::config::SyncSection,
    max_rpc_bytes: u64,
) -> ValueSyncConfig {
    ValueSyncConfig {
        enabled: true,
        status_update_interval: Duration::from_millis(sync.status_interval_ms),
        request_timeout: Duration::from_millis(sync.request_timeout_ms),
        max_response_size: bytesize(max_rpc_bytes),
        batch_size: sync.batch_size,
        ..ValueSyncConfig::default()
    }
}

fn bytesize(n: u64) -> bytesize::ByteSize {
    bytesize::ByteSize::b(n)
}

/// Starts following the L1 inbox when genesis has `[l1]` and the config an `[l1]` endpoint: the L1 view for
/// block building and validation, and the based rollups' derivation (when the registry has any).
async fn start_inbox(
    genesis: &Genesis,
    section: Option<&crate::config::L1Section>,
    spec: &baton_consensus::registry::ChainSpec,
    store: &RocksStore,
) -> Result<
    (
        Option<crate::inbox::InboxView>,
        Option<crate::based::BasedBatches>,
    ),
    NodeError,
> {
    let (Some(g), Some(s)) = (&genesis.l1, section) else {
        return Ok((None, None));
    };
    let provider = crate::l1::l1_provider(s)?;
    let view = crate::inbox::start(
        provider.clone(),
        g.inbox_address()?,
        g.staking_address()?,
        spec.clone(),
        crate::inbox::FollowConfig {
            watcher: baton_l1_inclusion::watcher::WatcherConfig {
                safety: g.origin_safety,
                from_block: g.inbox_from_block,
                ..Default::default()
            },
            poll: Duration::from_millis(s.poll_ms),
            origin_delay: Duration::from_millis(s.origin_delay_ms),
            max_lag: g.max_origin_lag,
        },
        store.clone(),
    );
    let based = crate::based::start(
        provider,
        g.inbox_address()?,
        spec.clone(),
        baton_l1_inclusion::watcher::WatcherConfig {
            safety: s.based_safety,
            from_block: g.inbox_from_block,
            ..Default::default()
        },
        Duration::from_millis(s.poll_ms),
        1024,
        store.clone(),
    );
    Ok((Some(view), based))
}

/// Starts forwarding based-rollup bundles to the inbox when this node follows based rollups and has
/// `[l1] forward_key_file`.
async fn start_forward(
    section: Option<&crate::config::L1Section>,
    genesis: &Genesis,
    based: Option<crate::based::BasedBatches>,
    store: &RocksStore,
    spec: &baton_consensus::registry::ChainSpec,
    metrics: Arc<Metrics>,
) -> Result<Option<crate::forward::ForwardHandle>, NodeError> {
    let (Some(s), Some(g), Some(based)) = (section, &genesis.l1, based) else {
        return Ok(None);
    };
    let Some(key_file) = &s.forward_key_file else {
        return Ok(None);
    };
    let wallet = alloy::network::EthereumWallet::from(crate::l1::load_l1_key(key_file)?);
    let provider = crate::l1::l1_provider(s)?;
    let handle = crate::forward::start(
        provider,
        wallet,
        g.inbox_address()?,
        s.forward.clone(),
        store.clone(),
        Arc::new(spec.clone()),
        based,
        metrics,
    )
    .await?;
    Ok(Some(handle))
}
