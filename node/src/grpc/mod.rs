//! The gRPC API: `baton.v1.RollupService`, `baton.v1.NodeService`, standard health and reflection.
//!
//! Each failure maps to a status code with a message that names the field or limit: malformed or unauthentic input
//! (bad field, wrong network id, bad signature) is INVALID_ARGUMENT, a limit is RESOURCE_EXHAUSTED, an unknown
//! rollup or bundle is NOT_FOUND, a bundle the chain's state refuses (used nonce, expired) is FAILED_PRECONDITION,
//! a height not decided yet is OUT_OF_RANGE, a full queue is UNAVAILABLE (retry), a storage failure is INTERNAL.

// Handlers return tonic's `Status` by value, as tonic's own API does.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use baton_consensus::bundle::Bundle;
use baton_consensus::error::BundleErrorKind;
use baton_consensus::hash::Hash;
use baton_consensus::ids::RollupId;
use baton_consensus::proof::namespace_proof;
use baton_consensus::registry::{ChainSpec, RollupMode};
use baton_consensus::signing::ChainDomain;
use baton_consensus::types::RollupBatch;
use baton_consensus::validators::ValidatorSet;
use baton_proto::client::BundleStatus;
use baton_proto::convert::{batch_proof, hash_field, sender_field};
use baton_proto::pb;
use baton_proto::pb::node_service_server::{NodeService, NodeServiceServer};
use baton_proto::pb::rollup_service_server::{RollupService, RollupServiceServer};

use baton_consensus::store::ChainRead;

use crate::app::LoopRequest;
use crate::clients::{ClientLimits, Kind};
use crate::error::NodeError;
use crate::ingest::{IngestHandle, Pending, SubmitError};
use crate::metrics::Metrics;
use crate::state::Shared;
use crate::store::RocksStore;

mod metrics;
mod streams;
#[cfg(test)]
mod tests;

pub use metrics::{GrpcMetrics, GrpcMetricsLayer};

/// Everything the API handlers need. Generic over the chain's reads (RocksDB in the node, memory in tests).
#[derive(Clone)]
pub struct Api<S = RocksStore> {
    pub ingest: IngestHandle,
    pub to_loop: mpsc::Sender<LoopRequest>,
    pub spec: Arc<ChainSpec>,
    pub domain: ChainDomain,
    pub store: S,
    pub shared: Arc<Shared>,
    pub subscribers: Arc<Semaphore>,
    pub stream_buffer: usize,
    pub stream_buffer_bytes: usize,
    pub submit_inflight: usize,
    pub max_request_bytes: usize,
    pub metrics: Arc<Metrics>,
    /// Based rollups' batches derived from the L1 inbox (a node following L1 with based rollups registered).
    pub based: Option<crate::based::BasedBatches>,
    /// Forwards bundles for based rollups to the inbox (a node with `[l1] forward_key_file`).
    pub forward: Option<crate::forward::ForwardHandle>,
    /// Per-client bounds on open streams and submission calls.
    pub clients: ClientLimits,
    /// A stream whose client reads nothing for this long is closed (`grpc.stream_idle_timeout_secs`).
    pub stream_idle: std::time::Duration,
    /// Requests in progress on one connection (`grpc.max_concurrent_per_connection`).
    pub max_concurrent_per_connection: usize,
}

/// The status a refused submission gets; one that clears by itself says when to retry
/// ([`SubmitError::retry_after_ms`]), in its message and as the `grpc-retry-pushback-ms` trailer.
fn submit_status(e: SubmitError) -> Status {
    let code = match &e {
        SubmitError::Invalid(b) => match b.kind() {
            BundleErrorKind::Invalid => Code::InvalidArgument,
            BundleErrorKind::Limit => Code::ResourceExhausted,
            BundleErrorKind::NotFound => Code::NotFound,
            BundleErrorKind::Unauthorized => Code::PermissionDenied,
            BundleErrorKind::State => Code::FailedPrecondition,
        },
        SubmitError::Full(_)
        | SubmitError::ForwardFull(_)
        | SubmitError::DiskLow { .. }
        | SubmitError::ForwardLimit(_) => Code::ResourceExhausted,
        SubmitError::Busy
        | SubmitError::Saturated(_)
        | SubmitError::Backlogged { .. }
        | SubmitError::BehindGap { .. }
        | SubmitError::ShuttingDown => Code::Unavailable,
        SubmitError::Storage(_) => Code::Internal,
    };
    let Some(after_ms) = e.retry_after_ms() else {
        return Status::new(code, e.to_string());
    };
    let mut status = Status::new(code, format!("{e}; retry in about {after_ms} ms"));
    if let Ok(v) = after_ms.to_string().parse() {
        status.metadata_mut().insert(RETRY_PUSHBACK, v);
    }
    status
}

/// Requests of one `SubmitBundles` stream checked as one job of the verifier pool, at most.
const SUBMIT_CHUNK: usize = 256;

/// The answer to one request of a `SubmitBundles` stream, kept in request order: refused at once, or pending
/// until the bundle is durable (or refused) here or at the forwarder.
type Answer = (u64, Result<Pending, Status>);

/// The trailer with a refusal's retry hint ([`SubmitError::retry_after_ms`]).
const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// A refusal inside a `SubmitBundles` stream, with the status's retry hint.
fn refusal(status: &Status) -> pb::submit_bundles_response::Result {
    let retry_after_ms = status
        .metadata()
        .get(RETRY_PUSHBACK)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pb::submit_bundles_response::Result::Error(pb::SubmitError {
        code: status.code() as i32,
        message: status.message().to_string(),
        retry_after_ms,
    })
}

/// The stream's answer to one request once it is known.
async fn settle((client_ref, answer): Answer) -> pb::SubmitBundlesResponse {
    let result = match answer {
        Err(status) => refusal(&status),
        Ok(pending) => match pending.await {
            Ok(Ok(h)) => pb::submit_bundles_response::Result::BundleHash(h.0.to_vec()),
            Ok(Err(e)) => refusal(&submit_status(e)),
            Err(_) => refusal(&loop_gone()),
        },
    };
    pb::SubmitBundlesResponse {
        client_ref,
        result: Some(result),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn loop_gone() -> Status {
    Status::unavailable("the node is shutting down")
}

impl<S: ChainRead + Clone + 'static> Api<S> {
    /// The set deciding `height` (decided heights and the next one).
    fn set_at(&self, height: u64) -> Result<ValidatorSet, Status> {
        self.store
            .validators_for(height, &self.shared.info.genesis_validators)
            .map_err(|e| Status::internal(e.to_string()))
    }

    fn check_rollup(&self, rollup_id: RollupId) -> Result<(), Status> {
        if !self.spec.rollups.contains(rollup_id) {
            return Err(Status::not_found(format!(
                "rollup_id {rollup_id} is not a registered rollup (see ListRollups)"
            )));
        }
        Ok(())
    }

    /// A rollup's batch at a decided height, with its proof when asked.
    /// OUT_OF_RANGE if `height`'s history is pruned here.
    fn pruned(&self, height: u64) -> Option<Status> {
        let min = self.shared.history_min();
        (height < min).then(|| {
            Status::out_of_range(format!(
                "height {height} is pruned on this node: it keeps heights from {min} (storage.retain_heights); \
                 read older heights from a node that keeps them (an archive node has retain_heights = 0)"
            ))
        })
    }

    /// A rollup's batch at a decided height as served, with its proof if asked.
    fn wire_batch(
        &self,
        rollup_id: RollupId,
        height: u64,
        with_proof: bool,
    ) -> Result<pb::RollupBatch, Status> {
        if let Some(pruned) = self.pruned(height) {
            return Err(pruned);
        }
        // Pruned while being read: say so rather than report missing data.
        self.wire_batch_kept(rollup_id, height, with_proof)
            .map_err(|e| self.pruned(height).unwrap_or(e))
    }

    fn wire_batch_kept(
        &self,
        rollup_id: RollupId,
        height: u64,
        with_proof: bool,
    ) -> Result<pb::RollupBatch, Status> {
        let batch = self.batch(rollup_id, height)?;
        let mut wire = pb::RollupBatch::from(&batch);
        if batch.header.next_validator_set_hash != batch.header.validator_set_hash {
            let set = self.set_at(height + 1)?;
            if set.hash() != batch.header.next_validator_set_hash {
                return Err(Status::internal(format!(
                    "the validator set named by decided height {height} is missing"
                )));
            }
            wire.next_validators = Some((&set).into());
        }
        if with_proof {
            let missing = |what: &str| {
                Status::internal(format!("{what} of decided height {height} is missing"))
            };
            let table = self
                .store
                .namespace_table(height)
                .map_err(internal)?
                .ok_or_else(|| missing("namespace table"))?;
            let cert = self
                .store
                .certificate(height)
                .map_err(internal)?
                .ok_or_else(|| missing("certificate"))?;
            let proof =
                namespace_proof(&table, rollup_id).ok_or_else(|| missing("namespace row"))?;
            wire.proof = Some(batch_proof(&proof, &cert));
        }
        Ok(wire)
    }

    fn batch(&self, rollup_id: RollupId, height: u64) -> Result<RollupBatch, Status> {
        let header = self
            .store
            .header(height)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::internal(format!("header of decided height {height} is missing"))
            })?;
        let entries = self
            .store
            .batch_entries(rollup_id, height)
            .map_err(internal)?;
        Ok(RollupBatch {
            rollup_id,
            block_hash: header.hash(),
            header,
            entries,
        })
    }

    fn is_based(&self, rollup_id: RollupId) -> bool {
        self.spec
            .rollups
            .get(rollup_id)
            .is_some_and(|r| r.mode == RollupMode::Based)
    }

    fn based(&self, rollup_id: RollupId) -> Result<&crate::based::BasedBatches, Status> {
        self.based.as_ref().ok_or_else(|| {
            Status::failed_precondition(format!(
                "rollup {rollup_id} is based (ordered on L1) and this node does not follow L1: use a node with \
                 [l1] in its config"
            ))
        })
    }

    fn check_height(&self, height: u64) -> Result<(), Status> {
        if height == 0 {
            return Err(Status::invalid_argument(
                "height must be >= 1 (the first block is height 1)",
            ));
        }
        let latest = self.shared.latest_height();
        if height > latest {
            return Err(Status::out_of_range(format!(
                "height {height} is not decided yet; the latest decided height is {latest}"
            )));
        }
        Ok(())
    }

    /// Decodes a submitted bundle and hands it on: to this node's forwarder for a based rollup (if it has one; it
    /// refuses a mix with shared rollups as ingest does), else to ingest (which refuses based rollups with
    /// FAILED_PRECONDITION saying why).
    fn submit_many(&self, bundles: Vec<Option<pb::Bundle>>) -> Vec<Result<Pending, Status>> {
        let mut answers: Vec<Option<Result<Pending, Status>>> = Vec::with_capacity(bundles.len());
        let mut to_ingest = Vec::with_capacity(bundles.len());
        let mut ingest_slots = Vec::with_capacity(bundles.len());
        for wire in bundles {
            let routed = wire
                .ok_or_else(|| Status::invalid_argument("missing field `bundle`"))
                .and_then(|w| {
                    Bundle::try_from(w).map_err(|e: baton_proto::ConversionError| {
                        Status::invalid_argument(e.to_string())
                    })
                })
                .and_then(|b| {
                    let based = crate::forward::based_rollup(&b, &self.spec)
                        .map_err(|e| submit_status(SubmitError::Invalid(e)))?;
                    Ok((b, based))
                });
            match (routed, &self.forward) {
                (Err(status), _) => answers.push(Some(Err(status))),
                (Ok((bundle, Some(rollup))), Some(fwd)) => {
                    // The rare based-rollup bundle: on a task of its own, answered like the others.
                    let (reply, pending) = oneshot::channel();
                    let fwd = fwd.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(fwd.submit(rollup, bundle).await);
                    });
                    answers.push(Some(Ok(pending)));
                }
                (Ok((bundle, _)), _) => {
                    ingest_slots.push(answers.len());
                    answers.push(None);
                    to_ingest.push(bundle);
                }
            }
        }
        for (slot, pending) in ingest_slots
            .into_iter()
            .zip(self.ingest.submit_many(to_ingest))
        {
            answers[slot] = Some(Ok(pending));
        }
        answers.into_iter().flatten().collect()
    }

    async fn submit_one(&self, bundle: Option<pb::Bundle>) -> Result<Hash, Status> {
        let pending = self
            .submit_many(vec![bundle])
            .pop()
            .unwrap_or_else(|| Err(loop_gone()))?;
        match pending.await {
            Ok(result) => result.map_err(submit_status),
            Err(_) => Err(loop_gone()),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> LoopRequest,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.to_loop.send(make(tx)).await.map_err(|_| loop_gone())?;
        rx.await.map_err(|_| loop_gone())
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<S: ChainRead + Clone + 'static> RollupService for Api<S> {
    async fn submit_bundle(
        &self,
        request: Request<pb::SubmitBundleRequest>,
    ) -> Result<Response<pb::SubmitBundleResponse>, Status> {
        let _slot = self.clients.acquire(request.remote_addr(), Kind::Submit)?;
        let hash = self.submit_one(request.into_inner().bundle).await?;
        Ok(Response::new(pb::SubmitBundleResponse {
            bundle_hash: hash.0.to_vec(),
        }))
    }

    type SubmitBundlesStream = BoxStream<pb::SubmitBundlesResponse>;

    async fn submit_bundles(
        &self,
        request: Request<Streaming<pb::SubmitBundlesRequest>>,
    ) -> Result<Response<Self::SubmitBundlesStream>, Status> {
        // Held until the last answer has left.
        let slot = self.clients.acquire(request.remote_addr(), Kind::Submit)?;
        let mut inbound = request.into_inner();
        // Requests are read in chunks (what has arrived, up to SUBMIT_CHUNK) and each chunk is checked as one job of
        // the verifier pool; answers leave in request order. At most `submit_inflight` answers are outstanding.
        let (order_tx, mut order_rx) = mpsc::channel::<Answer>(self.submit_inflight);
        let (out_tx, out_rx) = mpsc::channel(self.submit_inflight);
        let api = self.clone();
        tokio::spawn(async move {
            let mut chunk: Vec<pb::SubmitBundlesRequest> = Vec::with_capacity(SUBMIT_CHUNK);
            loop {
                let first = match inbound.message().await {
                    Ok(Some(req)) => req,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = order_tx.send((0, Err(status))).await;
                        break;
                    }
                };
                chunk.push(first);
                // Whatever else has already arrived joins the chunk (`message` is cancel safe).
                let mut ended = false;
                let mut failed = None;
                while chunk.len() < SUBMIT_CHUNK {
                    match futures::FutureExt::now_or_never(inbound.message()) {
                        Some(Ok(Some(req))) => chunk.push(req),
                        Some(Ok(None)) => {
                            ended = true;
                            break;
                        }
                        Some(Err(status)) => {
                            failed = Some(status);
                            break;
                        }
                        None => break,
                    }
                }
                let (refs, bundles): (Vec<u64>, Vec<_>) =
                    chunk.drain(..).map(|r| (r.client_ref, r.bundle)).unzip();
                let mut answers: Vec<Answer> =
                    refs.into_iter().zip(api.submit_many(bundles)).collect();
                let stop = ended || failed.is_some();
                if let Some(status) = failed {
                    answers.push((0, Err(status)));
                }
                for answer in answers {
                    if order_tx.send(answer).await.is_err() {
                        return;
                    }
                }
                if stop {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let _slot = slot;
            while let Some(answer) = order_rx.recv().await {
                let resp = settle(answer).await;
                if out_tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn get_bundle_status(
        &self,
        request: Request<pb::GetBundleStatusRequest>,
    ) -> Result<Response<pb::GetBundleStatusResponse>, Status> {
        let req = request.into_inner();
        let hash = hash_field("bundle_hash", &req.bundle_hash)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if let Some(inc) = self.store.inclusion(&hash).map_err(internal)? {
            return Ok(Response::new(pb::GetBundleStatusResponse {
                bundle_hash: hash.0.to_vec(),
                state: pb::BundleState::Included as i32,
                height: inc.height,
                block_hash: inc.block_hash.0.to_vec(),
                index_in_block: inc.index,
                reason: String::new(),
            }));
        }
        if let Some(d) = self.store.dropped(&hash).map_err(internal)? {
            let (state, height, reason) = BundleStatus::from_dropped(&d);
            return Ok(Response::new(pb::GetBundleStatusResponse {
                bundle_hash: hash.0.to_vec(),
                state: state as i32,
                height,
                reason,
                ..Default::default()
            }));
        }
        let pending = self.store.is_pending(&hash).map_err(internal)?
            || self
                .ask(|reply| LoopRequest::IsPending { hash, reply })
                .await?;
        if pending {
            return Ok(Response::new(pb::GetBundleStatusResponse {
                bundle_hash: hash.0.to_vec(),
                state: pb::BundleState::Pending as i32,
                ..Default::default()
            }));
        }
        Err(Status::not_found(format!(
            "bundle_hash {hash} is not known to this node"
        )))
    }

    async fn get_nonce(
        &self,
        request: Request<pb::GetNonceRequest>,
    ) -> Result<Response<pb::GetNonceResponse>, Status> {
        let sender = sender_field("sender", &request.into_inner().sender)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (next_nonce, next_free_nonce) = self
            .ask(|reply| LoopRequest::Nonces { sender, reply })
            .await?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::GetNonceResponse {
            next_nonce,
            next_free_nonce,
        }))
    }

    async fn list_rollups(
        &self,
        _request: Request<pb::ListRollupsRequest>,
    ) -> Result<Response<pb::ListRollupsResponse>, Status> {
        Ok(Response::new(pb::ListRollupsResponse {
            rollups: self
                .spec
                .rollups
                .iter()
                .map(|r| pb::Rollup {
                    id: r.id,
                    name: r.name.clone(),
                    mode: match r.mode {
                        RollupMode::Shared => "shared".into(),
                        RollupMode::Based => "based".into(),
                    },
                })
                .collect(),
            network_id: self.spec.network_id,
        }))
    }

    type StreamBatchesStream = BoxStream<pb::RollupBatch>;

    async fn stream_batches(
        &self,
        request: Request<pb::StreamBatchesRequest>,
    ) -> Result<Response<Self::StreamBatchesStream>, Status> {
        self.open_stream(request.remote_addr(), request.into_inner())
    }

    async fn get_batch(
        &self,
        request: Request<pb::GetBatchRequest>,
    ) -> Result<Response<pb::RollupBatch>, Status> {
        let req = request.into_inner();
        self.check_rollup(req.rollup_id)?;
        if self.is_based(req.rollup_id) {
            let based = self.based(req.rollup_id)?;
            return match based.get(req.rollup_id, req.height) {
                Some(it) => Ok(Response::new((&it).into())),
                None => Err(Status::not_found(format!(
                    "based rollup {} has no batch at L1 block {} (derived up to L1 block {}; blocks without \
                     entries for the rollup have none)",
                    req.rollup_id,
                    req.height,
                    based.head().map_or(0, |h| h.number)
                ))),
            };
        }
        self.check_height(req.height)?;
        Ok(Response::new(self.wire_batch(
            req.rollup_id,
            req.height,
            req.with_proof,
        )?))
    }
}

#[tonic::async_trait]
impl<S: ChainRead + Clone + 'static> NodeService for Api<S> {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let info = &self.shared.info;
        let latest = self.shared.latest_height();
        let header = if latest > 0 {
            self.store.header(latest).map_err(internal)?
        } else {
            None
        };
        let next = latest + 1;
        let set = self.set_at(next)?;
        let epochs = self.spec.epochs.as_ref();
        Ok(Response::new(pb::StatusResponse {
            in_validator_set: set.get(&info.address).is_some(),
            epoch: epochs.map_or(0, |r| r.epoch_of(next)),
            epoch_length: epochs.map_or(0, |r| r.epoch_length),
            node_id: info.peer_id.clone(),
            validator_address: if info.is_validator {
                info.address.0.to_vec()
            } else {
                vec![]
            },
            role: if info.is_validator {
                pb::NodeRole::Validator
            } else {
                pb::NodeRole::Full
            } as i32,
            chain_id: info.chain_id.clone(),
            latest_height: latest,
            latest_block_hash: header
                .as_ref()
                .map(|h| h.hash().0.to_vec())
                .unwrap_or_default(),
            latest_timestamp_ms: header.as_ref().map_or(0, |h| h.timestamp_ms),
            peers: self.metrics.peers.get().max(0) as u32,
            validator_set_size: set.validators().len() as u32,
            mempool_bundles: self.metrics.mempool_bundles.get().max(0) as u64,
            version: env!("CARGO_PKG_VERSION").to_string(),
            network_id: self.spec.network_id,
        }))
    }

    async fn list_evidence(
        &self,
        request: Request<pb::ListEvidenceRequest>,
    ) -> Result<Response<pb::ListEvidenceResponse>, Status> {
        let from = request.into_inner().from_height;
        let all = self.store.evidence().map_err(internal)?;
        let mut jailed: Vec<Vec<u8>> = all.iter().map(|(_, e)| e.validator.0.to_vec()).collect();
        jailed.sort();
        jailed.dedup();
        // Bounded by what blocks can carry (16 items each); a node answers with at most 4,096 of them.
        let evidence = all
            .iter()
            .filter(|(h, _)| *h >= from)
            .take(4_096)
            .map(|(h, e)| baton_proto::convert::evidence_wire(*h, e))
            .collect();
        Ok(Response::new(pb::ListEvidenceResponse { evidence, jailed }))
    }

    async fn get_validator_set(
        &self,
        request: Request<pb::GetValidatorSetRequest>,
    ) -> Result<Response<pb::GetValidatorSetResponse>, Status> {
        let next = self.shared.latest_height() + 1;
        let height = match request.into_inner().height {
            0 => next,
            h if h > next => {
                return Err(Status::out_of_range(format!(
                    "height {h} is not decided yet and is not the next height ({next}); its set is not known"
                )))
            }
            h => h,
        };
        let set = self.set_at(height)?;
        Ok(Response::new(pb::GetValidatorSetResponse {
            height,
            epoch: self.spec.epochs.as_ref().map_or(0, |r| r.epoch_of(height)),
            set_hash: set.hash().0.to_vec(),
            validators: Some((&set).into()),
            total_power: set.total_power(),
        }))
    }
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    api: Api,
    addr: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<RollupServiceServer<Api>>().await;
    reporter.set_serving::<NodeServiceServer<Api>>().await;
    // Both reflection versions: current tools ask v1; older grpcurl, Python's grpc_reflection and Postman ask
    // v1alpha.
    let described = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(baton_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = described()
        .build_v1()
        .map_err(|e| NodeError::Config(format!("reflection: {e}")))?;
    let reflection_v1alpha = described()
        .build_v1alpha()
        .map_err(|e| NodeError::Config(format!("reflection (v1alpha): {e}")))?;
    let max = api.max_request_bytes;
    let max_per_connection = api.max_concurrent_per_connection;
    let layer = GrpcMetricsLayer(api.metrics.clone());
    let rollup = RollupServiceServer::new(api.clone()).max_decoding_message_size(max);
    let node = NodeServiceServer::new(api).max_decoding_message_size(4096);
    tonic::transport::Server::builder()
        .layer(layer)
        .concurrency_limit_per_connection(max_per_connection)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(rollup)
        .add_service(node)
        .serve_with_shutdown(addr, shutdown)
        .await?;
    Ok(())
}
