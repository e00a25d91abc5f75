//! Starting and stopping a node, in named steps: load the chain and key, open storage, build the host (and follow
//! L1), start the engine (libp2p, consensus, sync, WAL; configured in [`crate::engine`]), then the services
//! (ingest writer, consensus loop, pruning, L1 attestation and forwarding, gRPC, metrics); on Ctrl-C / SIGTERM or
//! a component's failure, stop in a defined order ([`Running::stop`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tracing::{error, info, warn};

use baton_consensus::context::{BatonContext, ConsensusSigner, ConsensusVerifier};
use baton_consensus::host::{Host, HostLimits};
use baton_consensus::sigcache::{SignatureCache, DEFAULT_SIGNATURE_CACHE};
use malachitebft_app_channel::app::engine::network::NetworkRef;
use malachitebft_app_channel::app::metrics::SharedRegistry;
use malachitebft_app_channel::spawn::spawn_network_actor;
use malachitebft_app_channel::{
    ConsensusContext, EngineBuilder, NetworkRequest, RequestContext, SyncContext, WalContext,
};

use crate::app::{ConsensusLoop, GossipLimits, LoopLinks, SystemClock};
use crate::codec::WireCodec;
use crate::config::{Genesis, NodeConfig};
use crate::engine::{engine_config, network_identity};
use crate::error::NodeError;
use crate::grpc::{serve, Api};
use crate::ingest::{AdmissionGate, IngestHandle, IngestLimits};
use crate::keys::NodeKey;
use crate::metrics::Metrics;
use crate::peers::{configured_peers, PeerGate};
use crate::state::{NodeInfo, Shared};
use crate::store::RocksStore;
use crate::tasks::Tasks;
use crate::verify::{PoolLimits, VerifyPool};

/// What the node is, read from its files: genesis and the chain rules, its key.
struct Chain {
    genesis: Genesis,
    key: NodeKey,
    spec: baton_consensus::registry::ChainSpec,
    validators: baton_consensus::validators::ValidatorSet,
    domain: baton_consensus::signing::ChainDomain,
    address: baton_consensus::ids::Address,
    /// A node configured to validate signs whenever its key is in a height's set: from genesis, or from the epoch
    /// its stake makes it a member (until then it follows the chain like a full node).
    is_validator: bool,
}

/// Runs a node until `shutdown` resolves or a component fails, in named steps; then stops it in a defined order
/// ([`Running::stop`]).
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    let chain = load_chain(&cfg)?;
    crate::l1::check_staking_attesters(&chain.genesis, cfg.l1.as_ref()).await?;
    let store = open_store(&cfg)?;
    let signatures = Arc::new(SignatureCache::new(DEFAULT_SIGNATURE_CACHE));
    let signer = ConsensusSigner::new(chain.key.signing_key.clone(), chain.domain)
        .with_cache(signatures.clone());
    let mut tasks = Tasks::new();
    let (host, inbox, based) = build_host(&cfg, &chain, &store, &signer, &mut tasks).await?;
    let (channels, engine, peer_id, network) =
        start_engine(&cfg, &chain, &signer, &signatures).await?;
    let running = start_services(
        &cfg,
        &chain,
        Parts {
            store,
            host,
            inbox,
            based,
            channels,
            engine,
            network,
            signatures,
            tasks,
        },
    )
    .await?;
    info!(
        moniker = %cfg.moniker, address = %chain.address, %peer_id, validator = chain.is_validator,
        grpc = %cfg.grpc.listen_addr, metrics = %cfg.metrics.listen_addr, p2p = %cfg.p2p.listen_addr,
        height = running.shared.latest_height(), "node started"
    );
    running.serve(shutdown).await
}

/// Step 1: genesis, the chain rules and the node's key.
fn load_chain(cfg: &NodeConfig) -> Result<Chain, NodeError> {
    let genesis = Genesis::load(&cfg.genesis_file)?;
    let key = NodeKey::load(&cfg.key_file)?;
    Ok(Chain {
        validators: genesis.validator_set()?,
        domain: genesis.domain(),
        address: key.address(),
        spec: genesis.spec()?,
        is_validator: cfg.validator,
        genesis,
        key,
    })
}

/// Step 2: the node's database.
fn open_store(cfg: &NodeConfig) -> Result<RocksStore, NodeError> {
    RocksStore::open(&cfg.data_dir.join("db"), &cfg.storage)
}

/// Step 3: the host on the store (its mempool reloaded), tied to the L1 follower when genesis has `[l1]`.
async fn build_host(
    cfg: &NodeConfig,
    chain: &Chain,
    store: &RocksStore,
    signer: &ConsensusSigner,
    tasks: &mut Tasks,
) -> Result<
    (
        Host<RocksStore, SystemClock>,
        Option<crate::inbox::InboxView>,
        Option<crate::based::BasedBatches>,
    ),
    NodeError,
> {
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
        chain.domain,
        chain.genesis.hash()?,
        chain.is_validator.then(|| signer.clone()),
        chain.validators.clone(),
        chain.spec.clone(),
        limits,
        store.clone(),
        SystemClock,
    )?;
    let (inbox, based) =
        start_inbox(&chain.genesis, cfg.l1.as_ref(), &chain.spec, store, tasks).await?;
    match &inbox {
        Some(view) => host.set_l1(Arc::new(view.clone())),
        // A node of a chain with L1 but without an L1 endpoint (a full node) takes blocks on their certificates.
        None if chain.genesis.l1.is_some() => {
            host.set_l1(Arc::new(baton_consensus::origin::Certified))
        }
        None => {}
    }
    Ok((host, inbox, based))
}

/// Step 4: the engine (libp2p, consensus, value sync, write-ahead log), with this node's identity; also its network
/// actor, for the consensus loop's tap ([`crate::app::TapHandle`]).
async fn start_engine(
    cfg: &NodeConfig,
    chain: &Chain,
    signer: &ConsensusSigner,
    signatures: &Arc<SignatureCache>,
) -> Result<
    (
        malachitebft_app_channel::Channels<BatonContext>,
        malachitebft_app_channel::EngineHandle,
        libp2p_identity::PeerId,
        NetworkRef<BatonContext>,
    ),
    NodeError,
> {
    let engine_cfg = engine_config(cfg, &chain.genesis, chain.address)?;
    let peer_id = chain.key.keypair()?.public().to_peer_id();
    let identity = network_identity(
        &cfg.moniker,
        &chain.key,
        chain.is_validator.then_some(signer),
    )
    .await?;
    // One memory of good signatures shared by the verifier and this node's signer (the engine checks its own votes
    // and, at every decision, the precommits it already checked).
    let verifier = ConsensusVerifier::new(chain.domain).with_cache(signatures.clone());
    let consensus_ctx = if chain.is_validator {
        ConsensusContext::<BatonContext>::new_validator(
            chain.address,
            Box::new(verifier),
            Box::new(signer.clone()),
        )
    } else {
        ConsensusContext::<BatonContext>::new_full_node(chain.address, Box::new(verifier))
    };
    let wal_path = cfg.data_dir.join("wal").join("consensus.wal");
    std::fs::create_dir_all(cfg.data_dir.join("wal"))?;
    // The network actor is started here, as the builder's default would, so that the tap can subscribe to it.
    let registry = SharedRegistry::global().with_moniker(engine_cfg.moniker.clone());
    let (network, network_tx) = spawn_network_actor(
        identity,
        &engine_cfg.consensus,
        &engine_cfg.value_sync,
        &registry,
        WireCodec,
    )
    .await
    .map_err(|e| NodeError::Engine(e.to_string()))?;
    let (channels, engine) = EngineBuilder::new(BatonContext, engine_cfg)
        .with_default_wal(WalContext::new(wal_path, WireCodec))
        .with_custom_network(network.clone(), network_tx)
        .with_default_consensus(consensus_ctx)
        .with_default_sync(SyncContext::new(WireCodec))
        .with_default_request(RequestContext::new(ENGINE_REQUESTS))
        .build()
        .await
        .map_err(|e| NodeError::Engine(e.to_string()))?;
    Ok((channels, engine, peer_id, network))
}

/// What the services are built from.
struct Parts {
    store: RocksStore,
    host: Host<RocksStore, SystemClock>,
    inbox: Option<crate::inbox::InboxView>,
    based: Option<crate::based::BasedBatches>,
    channels: malachitebft_app_channel::Channels<BatonContext>,
    engine: malachitebft_app_channel::EngineHandle,
    network: NetworkRef<BatonContext>,
    signatures: Arc<SignatureCache>,
    /// The background tasks started so far (the L1 followers).
    tasks: Tasks,
}

/// A started node: the tasks that stop in order ([`Running::stop`]) and the rest.
struct Running {
    shared: Arc<Shared>,
    grpc: tokio::task::JoinHandle<Result<(), NodeError>>,
    stop_grpc: tokio::sync::oneshot::Sender<()>,
    writer: tokio::task::JoinHandle<()>,
    consensus: tokio::task::JoinHandle<Result<(), NodeError>>,
    engine: malachitebft_app_channel::EngineHandle,
    metrics_endpoint: tokio::task::JoinHandle<std::io::Result<()>>,
    stop_metrics: tokio::sync::oneshot::Sender<()>,
    tasks: Tasks,
}

/// Step 5: metrics, ingest, the consensus loop, pruning, L1 attestation and forwarding, the gRPC API and the
/// metrics endpoint.
async fn start_services(
    cfg: &NodeConfig,
    chain: &Chain,
    parts: Parts,
) -> Result<Running, NodeError> {
    let Parts {
        store,
        host,
        inbox,
        based,
        channels,
        engine,
        network,
        signatures,
        mut tasks,
    } = parts;
    let spec = &chain.spec;
    let info = NodeInfo {
        chain_id: chain.genesis.chain_id.clone(),
        moniker: cfg.moniker.clone(),
        peer_id: chain.key.peer_id()?,
        address: chain.address,
        is_validator: chain.is_validator,
        genesis_validators: chain.validators.clone(),
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
    let (ingest, writer) = IngestHandle::spawn(
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

    // History pruning, the free-space watermark and the write-ahead log's upkeep.
    let stop = tasks.stop_signal();
    tasks.spawn(
        "retention",
        crate::retention::run(
            crate::retention::Retention {
                data_dir: cfg.data_dir.clone(),
                retain_heights: cfg.storage.retain_heights,
                min_free_bytes: cfg.storage.min_free_bytes,
                wal_flush_bytes: cfg.storage.wal_flush_bytes,
                interval: Duration::from_secs(1),
            },
            store.clone(),
            spec.rollups.ids().collect(),
            shared.clone(),
            gate.clone(),
            metrics.clone(),
            stop,
        ),
    );

    // Peer count for Status, from the network actor's state dump.
    let net_requests = channels.net_requests.clone();
    let peers_metrics = metrics.clone();
    tasks.spawn("peer count", async move {
        loop {
            if let Ok(Some(dump)) = NetworkRequest::dump_state(&net_requests).await {
                peers_metrics.peers.set(dump.peers.len() as i64);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });

    let mut consensus_loop = ConsensusLoop::new(
        host,
        channels,
        (loop_tx.clone(), loop_rx),
        shared.clone(),
        cfg.p2p.max_rpc_bytes as usize / 2,
        GossipLimits {
            flush_ms: cfg.mempool.gossip_flush_ms,
            batch_bytes: cfg.mempool.gossip_batch_bytes,
            light_bundles: cfg.mempool.gossip_light_bundles,
            reannounce_ms: cfg.mempool.reannounce_ms,
        },
        LoopLinks {
            metrics: metrics.clone(),
            pool,
            signatures,
            gate,
            peers: PeerGate::new(
                cfg.p2p.peer_limits(),
                configured_peers(&cfg.p2p.extra_peers)?,
            ),
            tap: crate::app::tap(
                &network,
                cfg.p2p.tap_limits(),
                metrics.p2p_tap_dropped.clone(),
            )
            .await?,
        },
    );
    consensus_loop.attestor = crate::l1::Attestor::start(
        &chain.genesis,
        cfg.l1.as_ref(),
        chain.is_validator.then_some(chain.address),
        &cfg.data_dir,
        inbox.clone(),
        Some(store.clone()),
        &mut tasks,
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
        tasks.spawn("poster metrics", async move {
            while status.changed().await.is_ok() {
                let s = status.borrow_and_update().clone();
                m.l1.observe(&s);
            }
        });
    }
    let consensus = tokio::spawn(consensus_loop.run());

    if inbox.is_some() {
        let (inbox, based, m) = (inbox.clone(), based.clone(), metrics.clone());
        tasks.spawn("L1 metrics", async move {
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
    let forward = start_forward(
        cfg.l1.as_ref(),
        &chain.genesis,
        based.clone(),
        &store,
        spec,
        metrics.clone(),
        &mut tasks,
    )
    .await?;
    let api = Api {
        ingest,
        to_loop: loop_tx,
        spec: Arc::new(spec.clone()),
        domain: chain.domain,
        store: store.clone(),
        shared: shared.clone(),
        subscribers: Arc::new(Semaphore::new(cfg.grpc.max_subscribers)),
        stream_buffer: cfg.grpc.stream_buffer,
        stream_buffer_bytes: cfg.grpc.stream_buffer_bytes,
        submit_inflight: cfg.grpc.submit_stream_inflight,
        // Bundles up to twice the limit are read and refused with RESOURCE_EXHAUSTED; larger messages are cut off
        // by the transport (OUT_OF_RANGE) before they are buffered.
        max_request_bytes: spec.params.max_bundle_bytes as usize * 2 + REQUEST_ENVELOPE_BYTES,
        metrics: metrics.clone(),
        based,
        forward,
        clients: crate::clients::ClientLimits::new(
            cfg.grpc.max_streams_per_client,
            cfg.grpc.max_submit_calls_per_client,
            metrics.grpc_client_refused.clone(),
        ),
        stream_idle: Duration::from_secs(cfg.grpc.stream_idle_timeout_secs),
        max_concurrent_per_connection: cfg.grpc.max_concurrent_per_connection,
    };
    let (stop_grpc, stop_grpc_rx) = tokio::sync::oneshot::channel::<()>();
    let grpc = tokio::spawn(serve(api, cfg.grpc.listen_addr, async move {
        let _ = stop_grpc_rx.await;
    }));
    // The metrics endpoint is bound now so that a taken port fails the start, not a later scrape.
    let (stop_metrics, stop_metrics_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics_listener = tokio::net::TcpListener::bind(cfg.metrics.listen_addr)
        .await
        .map_err(|e| {
            NodeError::Config(format!(
                "metrics.listen_addr {}: {e}",
                cfg.metrics.listen_addr
            ))
        })?;
    let metrics_endpoint = tokio::spawn(crate::metrics::serve(
        registry,
        metrics_listener,
        async move {
            let _ = stop_metrics_rx.await;
        },
    ));
    Ok(Running {
        shared,
        grpc,
        stop_grpc,
        writer,
        consensus,
        engine,
        metrics_endpoint,
        stop_metrics,
        tasks,
    })
}

/// Requests to the engine (value sync, network state) queued at most.
const ENGINE_REQUESTS: usize = 64;
/// Room above twice the largest bundle for the rest of a submission message (fields, framing).
const REQUEST_ENVELOPE_BYTES: usize = 64 * 1024;
/// Based-rollup updates (batches, reorg notices) buffered for streaming subscribers; a slower one is told where
/// to resume.
const BASED_UPDATES: usize = 1024;

/// How long each stage of a stop may take before what is left of it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Running {
    /// Step 6: serves until `shutdown` resolves (Ctrl-C, SIGTERM) or a component fails; then stops.
    async fn serve(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let outcome = tokio::select! {
            _ = shutdown => { info!("shutdown requested"); Ok(()) }
            r = &mut self.consensus => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => { error!(error = %e, "consensus loop failed"); Err(e) }
                Err(e) => Err(NodeError::Engine(format!("consensus loop panicked: {e}"))),
            },
            r = &mut self.grpc => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => { error!(error = %e, "gRPC server failed"); Err(e) }
                Err(e) => Err(NodeError::Engine(format!("gRPC server panicked: {e}"))),
            },
            r = &mut self.metrics_endpoint => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => { error!(error = %e, "metrics server failed"); Err(e.into()) }
                Err(e) => Err(NodeError::Engine(format!("metrics server panicked: {e}"))),
            },
        };
        self.stop().await;
        outcome
    }

    /// Step 7, in this order: stop accepting (the gRPC server stops taking connections and requests, open streams
    /// end, and with the API gone the ingest queue closes), finish the in-flight fsyncs (the ingest writer makes
    /// durable and answers what it already took, then exits), stop the engine and the consensus loop (a decision
    /// being committed completes: the loop's task is aborted only after the engine stopped asking), then the
    /// background tasks and the metrics endpoint. Each stage waits at most [`STOP_GRACE`].
    async fn stop(mut self) {
        let _ = self.stop_grpc.send(());
        if tokio::time::timeout(STOP_GRACE, &mut self.grpc)
            .await
            .is_err()
        {
            warn!("the gRPC server did not stop in time; closing its connections");
            self.grpc.abort();
        }
        info!("stopped accepting requests");
        if tokio::time::timeout(STOP_GRACE, &mut self.writer)
            .await
            .is_err()
        {
            warn!("the ingest writer did not finish its writes in time");
            self.writer.abort();
        } else {
            info!("in-flight submissions written");
        }
        let _ = self.engine.actor.kill_and_wait(Some(STOP_GRACE)).await;
        self.engine.handle.abort();
        if tokio::time::timeout(STOP_GRACE, &mut self.consensus)
            .await
            .is_err()
        {
            self.consensus.abort();
        }
        info!("consensus stopped");
        self.tasks.stop(STOP_GRACE).await;
        let _ = self.stop_metrics.send(());
        if tokio::time::timeout(STOP_GRACE, &mut self.metrics_endpoint)
            .await
            .is_err()
        {
            self.metrics_endpoint.abort();
        }
        info!("node stopped");
    }
}

/// Starts following the L1 inbox when genesis has `[l1]` and the config an `[l1]` endpoint: the L1 view for
/// block building and validation, and the based rollups' derivation (when the registry has any).
async fn start_inbox(
    genesis: &Genesis,
    section: Option<&crate::config::L1Section>,
    spec: &baton_consensus::registry::ChainSpec,
    store: &RocksStore,
    tasks: &mut Tasks,
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
        tasks,
    );
    let based = crate::based::start(
        provider,
        g.inbox_address()?,
        spec.clone(),
        crate::based::DeriveConfig {
            watcher: baton_l1_inclusion::watcher::WatcherConfig {
                safety: s.based_safety,
                from_block: g.inbox_from_block,
                ..Default::default()
            },
            poll: Duration::from_millis(s.poll_ms),
            channel: BASED_UPDATES,
        },
        store.clone(),
        tasks,
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
    tasks: &mut Tasks,
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
        tasks,
    )
    .await?;
    Ok(Some(handle))
}
