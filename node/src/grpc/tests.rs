//! The API's read handlers over the in-memory store (`MemStore`), with no RocksDB and no running node: what they
//! serve for a decided height must pass the client's own checks, and a bundle's status must come from the store.

use std::sync::Arc;
use std::time::Duration;

use alloy_signer_local::PrivateKeySigner;
use baton_consensus::bundle::{Bundle, BundleEntry, UnsignedBundle};
use baton_consensus::fixtures;
use baton_consensus::registry::ChainSpec;
use baton_consensus::signing::ChainDomain;
use baton_consensus::store::{ChainStore, MemStore};
use baton_consensus::types::Dropped;
use baton_consensus::validators::ValidatorSet;
use baton_proto::client::BatchVerifier;
use baton_proto::pb;
use baton_proto::pb::rollup_service_server::RollupService;
use tokio::sync::{mpsc, Semaphore};
use tonic::{Code, Request};

use super::Api;
use crate::app::LoopRequest;
use crate::clients::ClientLimits;
use crate::ingest::IngestHandle;
use crate::metrics::Metrics;
use crate::state::{NodeInfo, Shared};
use crate::verify::{PoolLimits, VerifyPool};

const CHAIN: &str = "grpc-over-memory";

struct Chain {
    api: Api<MemStore>,
    store: MemStore,
    set: ValidatorSet,
    bundles: Vec<Bundle>,
}

fn bundle(key: &PrivateKeySigner, nonce: u64, entries: &[(u64, &[u8])]) -> Bundle {
    baton_proto::client::sign_bundle(
        key,
        UnsignedBundle {
            network_id: 7,
            sender: key.address(),
            nonce,
            expiry_height: 100,
            entries: entries
                .iter()
                .map(|(rollup_id, payload)| BundleEntry {
                    rollup_id: *rollup_id,
                    payload: payload.to_vec(),
                })
                .collect(),
        },
    )
    .expect("sign")
}

/// Height 1 decided by three of four validators: one bundle for rollups 1 and 2, one for rollup 1.
fn chain() -> Chain {
    let keys = fixtures::validator_keys(20, 4);
    let set = fixtures::validator_set(&keys);
    let spec = ChainSpec::for_tests(7, 2);
    let domain = ChainDomain::new(CHAIN);
    let (alice, bob) = (PrivateKeySigner::random(), PrivateKeySigner::random());
    let bundles = vec![
        bundle(&alice, 0, &[(1, b"alice to one"), (2, b"alice to two")]),
        bundle(&bob, 0, &[(1, b"bob to one")]),
    ];
    let decided = fixtures::decide(
        &fixtures::block_context(1, set.clone()),
        &spec,
        &domain,
        bundles.clone(),
        &keys[..3],
    );
    let store = MemStore::default();
    store
        .commit(
            &decided.block,
            &decided.bundle_hashes,
            &decided.batches,
            &decided.table,
            &decided.cert,
        )
        .expect("commit");

    let metrics = Metrics::register(&mut prometheus_client::registry::Registry::default());
    let pool = VerifyPool::start(
        PoolLimits {
            threads: 1,
            max_jobs: 4,
            max_bytes: 1 << 20,
        },
        None,
    )
    .expect("verifier pool");
    // The consensus loop, as far as these handlers ask it: nothing else is pending.
    let (to_loop, mut requests) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            if let LoopRequest::IsPending { reply, .. } = request {
                let _ = reply.send(false);
            }
        }
    });
    let shared = Arc::new(Shared::new(
        NodeInfo {
            chain_id: CHAIN.into(),
            moniker: "memory".into(),
            peer_id: String::new(),
            address: fixtures::address_of(&keys[0]),
            is_validator: false,
            genesis_validators: set.clone(),
        },
        1,
    ));
    let api = Api {
        ingest: IngestHandle::detached(spec.clone(), metrics.clone(), pool),
        to_loop,
        spec: Arc::new(spec),
        domain,
        store: store.clone(),
        shared,
        subscribers: Arc::new(Semaphore::new(4)),
        stream_buffer: 16,
        stream_buffer_bytes: 1 << 20,
        submit_inflight: 16,
        max_request_bytes: 1 << 20,
        metrics: metrics.clone(),
        based: None,
        forward: None,
        clients: ClientLimits::new(4, 4, metrics.grpc_client_refused.clone()),
        stream_idle: Duration::from_secs(60),
        max_concurrent_per_connection: 16,
    };
    Chain {
        api,
        store,
        set,
        bundles,
    }
}

async fn get_batch(
    api: &Api<MemStore>,
    rollup_id: u64,
    height: u64,
) -> Result<pb::RollupBatch, tonic::Status> {
    api.get_batch(Request::new(pb::GetBatchRequest {
        rollup_id,
        height,
        with_proof: true,
    }))
    .await
    .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn batches_served_from_memory_pass_the_clients_checks() {
    let c = chain();
    let mut verifier = BatchVerifier::new(c.set.clone(), CHAIN);
    let one = verifier
        .verify(get_batch(&c.api, 1, 1).await.expect("rollup 1"))
        .expect("rollup 1's batch verifies");
    let payloads: Vec<&[u8]> = one.entries.iter().map(|e| e.payload.as_slice()).collect();
    assert_eq!(payloads, [&b"alice to one"[..], &b"bob to one"[..]]);
    assert_eq!(one.entries[1].bundle_hash, c.bundles[1].hash());

    let mut verifier = BatchVerifier::new(c.set.clone(), CHAIN);
    let mut two = get_batch(&c.api, 2, 1).await.expect("rollup 2");
    assert_eq!(two.entries.len(), 1);
    two.entries[0].payload = b"not what was decided".to_vec();
    assert!(
        verifier.verify(two).is_err(),
        "a batch changed after it was served must not verify"
    );

    let ahead = get_batch(&c.api, 1, 2)
        .await
        .expect_err("height 2 is not decided");
    assert_eq!(ahead.code(), Code::OutOfRange, "{ahead:?}");
    let unknown = get_batch(&c.api, 9, 1)
        .await
        .expect_err("rollup 9 is not registered");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test]
async fn bundle_status_comes_from_the_store() {
    let c = chain();
    let status = |hash: baton_consensus::hash::Hash| {
        let api = c.api.clone();
        async move {
            api.get_bundle_status(Request::new(pb::GetBundleStatusRequest {
                bundle_hash: hash.0.to_vec(),
            }))
            .await
            .map(tonic::Response::into_inner)
        }
    };
    let included = status(c.bundles[1].hash()).await.expect("included");
    assert_eq!(included.state, pb::BundleState::Included as i32);
    assert_eq!((included.height, included.index_in_block), (1, 1));

    let key = PrivateKeySigner::random();
    let waiting = bundle(&key, 0, &[(1, b"waits")]);
    c.store.add_pending(waiting.clone());
    let pending = status(waiting.hash()).await.expect("pending");
    assert_eq!(pending.state, pb::BundleState::Pending as i32);

    let late = bundle(&key, 1, &[(1, b"too late")]);
    c.store
        .record_dropped(&[(
            late.hash(),
            Dropped::Expired {
                expiry_height: 1,
                height: 2,
            },
        )])
        .expect("record");
    let expired = status(late.hash()).await.expect("expired");
    assert_eq!(expired.state, pb::BundleState::Expired as i32);

    let never = bundle(&key, 2, &[(1, b"never sent")]);
    let err = status(never.hash()).await.expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

/// A refusal the node expects to clear (load shed, a full mempool) says when to send the bundle again, in the
/// unary trailer and in a stream's answer, later the further behind the chain is; one that will not clear says
/// nothing of the kind.
#[test]
fn refusals_that_clear_by_themselves_carry_a_retry_hint_and_final_ones_do_not() {
    use baton_consensus::error::{BundleError, ConsensusError, MempoolFull};

    use crate::ingest::SubmitError;

    let full = |m| SubmitError::from(ConsensusError::MempoolFull(m));
    let behind = |waited_ms| {
        SubmitError::from(ConsensusError::Backlogged {
            waited_ms,
            limit_ms: 150,
        })
    };
    let temporary = [
        (
            full(MempoolFull::Pending {
                bundles: 10,
                bytes: 5_000,
                max_bundles: 10,
                max_bytes: 1 << 20,
            }),
            Code::ResourceExhausted,
            "mempool is full: 10 bundles",
            1_000,
        ),
        (
            full(MempoolFull::Waiting {
                bundles: 3,
                bytes: 90_000,
                max_bundles: 1_000,
                max_bytes: 100_000,
            }),
            Code::ResourceExhausted,
            "no room behind nonce gaps: 3 bundles",
            1_000,
        ),
        (
            SubmitError::ForwardFull("the L1 forwarding queue is full (l1.forward.queue)".into()),
            Code::ResourceExhausted,
            "the L1 forwarding queue is full",
            1_000,
        ),
        (SubmitError::Busy, Code::Unavailable, "the node is overloaded", 100),
        (
            behind(400),
            Code::Unavailable,
            "the node is overloaded: the chain is behind: the oldest bundle ready for a block has waited 400 ms",
            400,
        ),
        (behind(151), Code::Unavailable, "the node is overloaded", 151),
        (behind(90_000), Code::Unavailable, "the node is overloaded", 1_000),
    ];
    for (e, code, start, hint) in temporary {
        assert_eq!(e.retry_after_ms(), Some(hint));
        let status = super::submit_status(e);
        assert_eq!(status.code(), code);
        assert!(status.message().starts_with(start), "{status:?}");
        assert!(
            status
                .message()
                .ends_with(&format!("retry in about {hint} ms")),
            "{status:?}"
        );
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            hint.to_string().as_str()
        );
        let pb::submit_bundles_response::Result::Error(answer) = super::refusal(&status) else {
            panic!("a refusal");
        };
        assert_eq!(
            (answer.code, answer.retry_after_ms),
            (code as i32, hint),
            "{answer:?}"
        );
    }
    let last = [
        SubmitError::Invalid(BundleError::Empty),
        SubmitError::DiskLow { free: 1, min: 2 },
        SubmitError::ShuttingDown,
        SubmitError::Storage("io error".into()),
    ];
    for e in last {
        assert_eq!(e.retry_after_ms(), None);
        let status = super::submit_status(e);
        assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
        assert!(!status.message().contains("retry in about"), "{status:?}");
        let pb::submit_bundles_response::Result::Error(answer) = super::refusal(&status) else {
            panic!("a refusal");
        };
        assert_eq!(answer.retry_after_ms, 0, "{answer:?}");
    }
}
