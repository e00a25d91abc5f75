//! Multi-process cluster tests: real `baton` binaries over libp2p on loopback.

mod common;

use std::time::{Duration, Instant};

use baton_consensus::types::{Bundle, BundleEntry};
use baton_proto::pb;
use common::{run, serial, Cluster};

const T: Duration = Duration::from_secs(120);

#[test]
fn four_validators_agree_stream_without_gaps_and_include_bundles_atomically() {
    let _g = serial();
    run(Duration::from_secs(240), async {
        let cluster = Cluster::start(4);
        let mut c0 = cluster.client(0).await;

        // A bundle spanning three rollups, submitted to node 0, appears in all three batches at one height,
        // contiguous and in bundle order.
        cluster.wait_height(0, 1, T).await;
        let bundle = Bundle {
            entries: vec![
                BundleEntry {
                    rollup_id: 10,
                    payload: b"a0".to_vec(),
                },
                BundleEntry {
                    rollup_id: 11,
                    payload: b"b0".to_vec(),
                },
                BundleEntry {
                    rollup_id: 12,
                    payload: b"c0".to_vec(),
                },
                BundleEntry {
                    rollup_id: 10,
                    payload: b"a1".to_vec(),
                },
                BundleEntry {
                    rollup_id: 11,
                    payload: b"b1".to_vec(),
                },
            ],
        };
        let hash = c0.submit(&bundle).await.expect("submit");
        let deadline = Instant::now() + T;
        let included = loop {
            let s = c0.bundle_status(&hash).await.expect("status");
            if s.state == pb::BundleState::Included as i32 {
                break s;
            }
            assert!(Instant::now() < deadline, "bundle not included in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let h = included.height;
        cluster.wait_height(3, h, T).await;
        let mut c3 = cluster.client(3).await;
        for (rollup, want) in [
            (10u64, vec!["a0", "a1"]),
            (11, vec!["b0", "b1"]),
            (12, vec!["c0"]),
        ] {
            let batch = c3.get_batch(rollup, h).await.expect("get batch");
            let ours: Vec<_> = batch
                .entries
                .iter()
                .filter(|e| e.bundle_hash == hash)
                .collect();
            let payloads: Vec<_> = ours
                .iter()
                .map(|e| String::from_utf8_lossy(&e.payload).to_string())
                .collect();
            assert_eq!(payloads, want, "rollup {rollup}");
            let first = batch
                .entries
                .iter()
                .position(|e| e.bundle_hash == hash)
                .unwrap();
            assert!(
                batch.entries[first..first + ours.len()]
                    .iter()
                    .all(|e| e.bundle_hash == hash),
                "rollup {rollup}: the bundle's entries are not contiguous"
            );
            let idx: Vec<u32> = ours.iter().map(|e| e.index_in_bundle).collect();
            assert!(
                idx.windows(2).all(|w| w[0] < w[1]),
                "rollup {rollup}: entries out of bundle order"
            );
            for other in [h - 1, h + 1] {
                if other >= 1 {
                    cluster.wait_height(3, other, T).await;
                    let b = c3.get_batch(rollup, other).await.unwrap();
                    assert!(
                        b.entries.iter().all(|e| e.bundle_hash != hash),
                        "bundle split across heights"
                    );
                }
            }
        }

        // 50 heights, identical hashes on every node, an unbroken hash chain.
        for i in 0..4 {
            cluster.wait_height(i, 50, T).await;
        }
        let reference = cluster.chain(0, 50).await;
        for i in 1..4 {
            assert_eq!(
                cluster.chain(i, 50).await,
                reference,
                "node{i} disagrees with node0"
            );
        }

        // Status reports the node's role, the set size, its peers and the latest decided block.
        let st = c0.status().await.expect("status");
        assert_eq!(st.role, pb::NodeRole::Validator as i32);
        assert_eq!(st.validator_set_size, 4);
        assert_eq!(st.chain_id, "baton-test");
        assert_eq!(st.validator_address.len(), 20);
        assert!(st.latest_height >= 50);
        assert_eq!(st.latest_block_hash.len(), 32);
        let deadline = Instant::now() + T;
        while c0.status().await.expect("status").peers < 3 {
            assert!(
                Instant::now() < deadline,
                "node0 never reported its 3 peers"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // StreamBatches from height 1: every height, in order, no gaps, and an empty batch where the rollup had
        // nothing; then it follows live heights.
        let mut c2 = cluster.client(2).await;
        let mut stream = c2.stream_batches(77, 1).await.expect("stream");
        let target = cluster.height(2).await.unwrap() + 5;
        let mut expect = 1;
        while expect <= target {
            let b = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("stream stalled")
                .expect("stream error")
                .expect("stream ended");
            assert_eq!(b.header.height, expect, "gap or reorder in the stream");
            assert_eq!(b.rollup_id, 77);
            assert!(b.entries.is_empty(), "rollup 77 never had entries");
            if expect <= 50 {
                assert_eq!(b.block_hash, reference[expect as usize - 1]);
            }
            expect += 1;
        }
    });
}

#[test]
fn one_of_four_down_keeps_committing_and_restarted_node_catches_up() {
    let _g = serial();
    run(Duration::from_secs(300), async {
        let mut cluster = Cluster::start(4);
        for i in 0..4 {
            cluster.wait_height(i, 5, T).await;
        }
        cluster.kill(3);
        let at_kill = cluster.height(0).await.unwrap();
        let t0 = Instant::now();
        let after = cluster.wait_height(0, at_kill + 20, T).await;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "3 of 4: {} heights in {secs:.1} s ({:.1} heights/s)",
            after - at_kill,
            (after - at_kill) as f64 / secs
        );
        cluster.wait_height(1, at_kill + 20, T).await;
        cluster.wait_height(2, at_kill + 20, T).await;

        cluster.start_node(3);
        let t1 = Instant::now();
        let target = cluster.height(0).await.unwrap();
        cluster.wait_height(3, target, T).await;
        println!(
            "node3 caught up {target} heights in {:.1} s",
            t1.elapsed().as_secs_f64()
        );
        // It keeps up afterwards, and agrees with the others on every height.
        let later = cluster.wait_height(0, target + 10, T).await;
        cluster.wait_height(3, later, T).await;
        let reference = cluster.chain(0, later).await;
        for i in 1..4 {
            assert_eq!(
                cluster.chain(i, later).await,
                reference,
                "node{i} disagrees"
            );
        }
    });
}

#[test]
fn acknowledged_bundle_survives_sigkill_before_inclusion() {
    let _g = serial();
    run(Duration::from_secs(240), async {
        let mut cluster = Cluster::prepare(4);
        // Node 0 alone cannot decide anything (no quorum), so the bundle cannot be included before the kill.
        cluster.start_node(0);
        let mut c0 = cluster.client(0).await;
        let bundle = Bundle {
            entries: vec![
                BundleEntry {
                    rollup_id: 5,
                    payload: b"durable".to_vec(),
                },
                BundleEntry {
                    rollup_id: 6,
                    payload: b"also durable".to_vec(),
                },
            ],
        };
        let hash = c0.submit(&bundle).await.expect("submit");
        let s = c0.bundle_status(&hash).await.unwrap();
        assert_eq!(s.state, pb::BundleState::Pending as i32);
        assert_eq!(
            cluster.height(0).await,
            Some(0),
            "nothing can be decided without a quorum"
        );
        drop(c0);
        cluster.kill(0);

        for i in 0..4 {
            cluster.start_node(i);
        }
        let mut c1 = cluster.client(1).await;
        let deadline = Instant::now() + T;
        let status = loop {
            if let Ok(s) = c1.bundle_status(&hash).await {
                if s.state == pb::BundleState::Included as i32 {
                    break s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "acknowledged bundle was lost across SIGKILL"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let b5 = c1.get_batch(5, status.height).await.unwrap();
        let b6 = c1.get_batch(6, status.height).await.unwrap();
        assert_eq!(
            b5.entries.iter().filter(|e| e.bundle_hash == hash).count(),
            1
        );
        assert_eq!(
            b6.entries.iter().filter(|e| e.bundle_hash == hash).count(),
            1
        );
    });
}

#[test]
fn bad_requests_get_clear_errors_and_the_node_keeps_serving() {
    use tonic::Code;
    let _g = serial();
    run(Duration::from_secs(120), async {
        let cluster = Cluster::start(1);
        cluster.wait_height(0, 1, T).await;
        let (mut rollup, mut node) = cluster.client(0).await.raw();
        let submit = |entries: Vec<pb::BundleEntry>| pb::SubmitBundleRequest {
            bundle: Some(pb::Bundle { entries }),
        };
        let entry = |n: usize| pb::BundleEntry {
            rollup_id: 1,
            payload: vec![7; n],
        };

        let cases: Vec<(&str, pb::SubmitBundleRequest, Code, &str)> = vec![
            (
                "no bundle",
                pb::SubmitBundleRequest { bundle: None },
                Code::InvalidArgument,
                "bundle",
            ),
            (
                "no entries",
                submit(vec![]),
                Code::InvalidArgument,
                "no entries",
            ),
            (
                "empty payload",
                submit(vec![entry(0)]),
                Code::InvalidArgument,
                "empty payload",
            ),
            (
                "too many entries",
                submit((0..65).map(|_| entry(1)).collect()),
                Code::ResourceExhausted,
                "limit is 64",
            ),
            (
                "bundle too large",
                submit(vec![entry(200 * 1024)]),
                Code::ResourceExhausted,
                "limit is 131072",
            ),
        ];
        for (name, req, code, needle) in cases {
            let err = rollup.submit_bundle(req).await.expect_err(name);
            assert_eq!(err.code(), code, "{name}: {err:?}");
            assert!(
                err.message().contains(needle),
                "{name}: message `{}` lacks `{needle}`",
                err.message()
            );
        }
        // Far beyond any limit: cut off by the transport before it is buffered.
        let err = rollup
            .submit_bundle(submit(vec![entry(4 * 1024 * 1024)]))
            .await
            .expect_err("huge");
        assert!(
            matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{err:?}"
        );

        let err = rollup
            .get_batch(pb::GetBatchRequest {
                rollup_id: 1,
                height: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = rollup
            .get_batch(pb::GetBatchRequest {
                rollup_id: 1,
                height: 1 << 40,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange);
        assert!(err.message().contains("not decided yet"));
        let err = rollup
            .get_bundle_status(pb::GetBundleStatusRequest {
                bundle_hash: vec![1; 5],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("bundle_hash"), "{}", err.message());
        let err = rollup
            .get_bundle_status(pb::GetBundleStatusRequest {
                bundle_hash: vec![1; 32],
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = rollup
            .stream_batches(pb::StreamBatchesRequest {
                rollup_id: 1,
                from_height: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);

        // Bytes that are not protobuf at all.
        let raw = raw_unary(
            &cluster.net.nodes[0].grpc_url(),
            "/baton.v1.RollupService/SubmitBundle",
            &[0xff; 16],
        )
        .await;
        assert_eq!(raw, Some(Code::InvalidArgument as i32), "garbage protobuf");

        // Standard health checking and reflection, so generic tools work.
        let channel = tonic::transport::Endpoint::from_shared(cluster.net.nodes[0].grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for service in ["baton.v1.RollupService", "baton.v1.NodeService"] {
            let resp = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .expect("health check")
                .into_inner();
            assert_eq!(
                resp.status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "{service}"
            );
        }
        let services = list_services(channel).await;
        assert!(
            services.iter().any(|s| s == "baton.v1.RollupService"),
            "reflection lists {services:?}"
        );

        // Still serving: status answers and a valid bundle is included.
        let st = node
            .status(pb::StatusRequest {})
            .await
            .expect("status after bad input")
            .into_inner();
        assert!(st.latest_height >= 1);
        let mut c = cluster.client(0).await;
        let hash = c
            .submit(&Bundle {
                entries: vec![BundleEntry {
                    rollup_id: 1,
                    payload: b"ok".to_vec(),
                }],
            })
            .await
            .unwrap();
        let deadline = Instant::now() + T;
        while c.bundle_status(&hash).await.unwrap().state != pb::BundleState::Included as i32 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

/// Lists services through gRPC server reflection (what `grpcurl list` does).
async fn list_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    match stream
        .message()
        .await
        .expect("reflection reply")
        .and_then(|r| r.message_response)
    {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection reply {other:?}"),
    }
}

/// Sends one gRPC frame with arbitrary bytes and returns the grpc-status it gets.
async fn raw_unary(url: &str, path: &str, body: &[u8]) -> Option<i32> {
    use bytes::{BufMut, BytesMut};
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.ok()?;
    let mut frame = BytesMut::new();
    frame.put_slice(body);
    let res = grpc
        .unary::<bytes::Bytes, bytes::Bytes, RawCodec>(
            tonic::Request::new(frame.freeze()),
            path.parse().ok()?,
            RawCodec,
        )
        .await;
    match res {
        Ok(_) => Some(0),
        Err(s) => Some(s.code() as i32),
    }
}

/// A codec that sends and receives raw bytes.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
