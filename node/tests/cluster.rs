//! Multi-process cluster tests: real `baton` binaries over libp2p on loopback.

mod common;

use std::time::{Duration, Instant};

use baton_consensus::bundle::Bundle;
use baton_proto::client::{BatchVerifier, BundleStatus};
use baton_proto::pb;
use common::{run, serial, value, wait_included, Cluster, User};

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
        let mut user = User::new();
        let bundle = user.bundle(&[(1, b"a0"), (2, b"b0"), (3, b"c0"), (1, b"a1"), (2, b"b1")]);
        let hash = c0.submit(&bundle).await.expect("submit");
        assert_eq!(hash, bundle.hash());
        let (h, _, _) = wait_included(&mut c0, &hash, T).await;
        cluster.wait_height(3, h, T).await;
        let mut c3 = cluster.client(3).await;
        for (rollup, want) in [
            (1u64, vec!["a0", "a1"]),
            (2, vec!["b0", "b1"]),
            (3, vec!["c0"]),
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

        // The sender's nonce moved on; the registry and network id are discoverable.
        let n = c0.nonce(&user.key.address()).await.expect("nonce");
        assert_eq!((n.next_nonce, n.next_free_nonce), (1, 1));
        let rollups = c0.list_rollups().await.expect("rollups");
        assert_eq!(rollups.rollups.len(), 4);
        assert_eq!(rollups.network_id, st.network_id);

        // Verified batches: every batch of rollup 1 from height 1 checks out against the genesis validator set
        // (entries -> namespace proof -> header -> certificate), in order, without gaps.
        let mut c1 = cluster.client(1).await;
        let mut verified = c1
            .stream_verified_batches(1, 1, cluster.verifier())
            .await
            .expect("verified stream");
        for height in 1..=50u64 {
            let b = tokio::time::timeout(Duration::from_secs(30), verified.next())
                .await
                .expect("verified stream stalled")
                .expect("a served batch failed verification")
                .expect("stream ended");
            assert_eq!(b.block_hash, reference[height as usize - 1]);
        }
        drop(verified);

        // The client rejects any tampering with a served batch, proof or certificate.
        let served = c1
            .get_batch_with_proof(1, h)
            .await
            .expect("batch with proof");
        tamper_is_detected(&mut cluster.verifier(), &served);

        // StreamBatches from height 1: every height, in order, no gaps, and an empty batch where the rollup had
        // nothing; then it follows live heights.
        let mut c2 = cluster.client(2).await;
        let mut stream = c2.stream_batches(4, 1).await.expect("stream");
        let target = cluster.height(2).await.unwrap() + 5;
        let mut expect = 1;
        while expect <= target {
            let b = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("stream stalled")
                .expect("stream error")
                .expect("stream ended");
            assert_eq!(b.header.height, expect, "gap or reorder in the stream");
            assert_eq!(b.rollup_id, 4);
            assert!(b.entries.is_empty(), "rollup 4 never had entries");
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
        // No bench from start-up still running: a validator killed less than the presence window before its
        // start-up bench runs out was still seen voting then, so it would be tried once more (a second strike).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h = cluster.height(0).await.unwrap();
            let tip = cluster.headers(0, h, h).await.remove(0);
            if tip
                .bench
                .entries()
                .iter()
                .all(|e| e.until_ms <= tip.timestamp_ms)
            {
                break;
            }
            assert!(Instant::now() < deadline, "start-up benches never ran out");
            tokio::time::sleep(Duration::from_millis(100)).await;
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

        // The dead validator's turn costs a propose timeout the first time; then it is benched (skipped by the
        // rotation). Each time its bench (the tests' `bench_ms`, 5 s of chain time) runs out, the proposer has not
        // seen it vote and keeps it benched: it is never tried again while down. (Tried again, it would cost a
        // propose timeout and a strike each time: two more strikes within the 16 s of chain time watched here.)
        // Without the bench a quarter of the heights would need a second round.
        let bench_ms = baton_consensus::params::ConsensusParams::for_tests().bench_ms;
        let first_ts = cluster.headers(0, at_kill + 1, at_kill + 1).await[0].timestamp_ms;
        let mut top = at_kill + 150;
        let headers = loop {
            cluster.wait_height(0, top, T).await;
            let headers = cluster.headers(0, at_kill + 1, top).await;
            if headers.last().unwrap().timestamp_ms >= first_ts + 3 * bench_ms + 1_000 {
                break headers;
            }
            assert!(
                top < at_kill + 5_000,
                "16 s of chain time took over 5,000 heights"
            );
            top += 100;
        };
        let span = headers.len();
        let retried = headers.iter().filter(|h| h.round > 0).count();
        let last = headers.last().unwrap();
        let benched = last.benched_next();
        println!(
            "3 of 4: {retried} of {span} heights needed a second round (without benching about {}); benched at the \
             end: {:?}",
            span / 4,
            last.bench.entries()
        );
        assert!(
            retried <= 3,
            "{retried} of {span} heights needed a second round"
        );
        assert_eq!(benched.len(), 1, "the dead validator is benched");
        // Its strikes stay what its first bench after the kill gave it (a validator that missed a turn at start-up
        // carries that strike in an entry that has run out, so only entries still running count).
        let strikes = |h: &baton_consensus::types::BlockHeader| {
            h.bench
                .entries()
                .iter()
                .find(|e| e.validator == benched[0] && e.until_ms > h.timestamp_ms)
                .map(|e| e.strikes)
        };
        let first_strikes = headers.iter().find_map(strikes).unwrap();
        assert_eq!(
            strikes(last),
            Some(first_strikes),
            "the dead validator was tried again as a proposer while down"
        );

        cluster.start_node(3);
        let t1 = Instant::now();
        let target = cluster.height(0).await.unwrap();
        cluster.wait_height(3, target, T).await;
        println!(
            "node3 caught up {target} heights in {:.1} s",
            t1.elapsed().as_secs_f64()
        );
        // Back up, it is cleared the first time it proposes once its bench ends.
        let mut from = target;
        loop {
            let top = cluster.wait_height(0, from + 20, T).await;
            let hs = cluster.headers(0, from + 1, top).await;
            if hs.iter().any(|h| h.bench.entries().is_empty()) {
                break;
            }
            assert!(
                top < target + 1_000,
                "node3 still benched 1,000 heights after it came back"
            );
            from = top;
        }
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
        let bundle = User::new().bundle(&[(3, b"durable"), (4, b"also durable")]);
        let hash = c0.submit(&bundle).await.expect("submit");
        assert_eq!(
            c0.bundle_status(&hash).await.unwrap(),
            BundleStatus::Pending
        );
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
        let (height, _, _) = wait_included(&mut c1, &hash, T).await;
        let b5 = c1.get_batch(3, height).await.unwrap();
        let b6 = c1.get_batch(4, height).await.unwrap();
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
        let mut user = User::new();
        let signed = |b: Bundle| pb::SubmitBundleRequest {
            bundle: Some((&b).into()),
        };
        // Signed by the user, then altered: the signature no longer matches.
        let mut forged = user.bundle(&[(1, b"forged")]);
        forged.entries[0].payload = b"altered".to_vec();
        // Signed for another network.
        let mut u = user.unsigned(&[(1, b"elsewhere")]);
        u.network_id += 1;
        let other_network = user.sign(u);
        let mut u = user.unsigned(&[(1, b"stale")]);
        u.expiry_height = 0;
        let expired = user.sign(u);
        let unknown_rollup = user.bundle(&[(1, b"x"), (99, b"nobody")]);
        let too_many = user.bundle(&vec![(1u64, &b"e"[..]); 65]);
        let big_payload = user.bundle(&[(1, &vec![7u8; 70 * 1024][..])]);
        let too_large = user.bundle(&[
            (1, &vec![7u8; 60 * 1024][..]),
            (2, &vec![7u8; 60 * 1024][..]),
            (3, &vec![7u8; 20 * 1024][..]),
        ]);
        let empty_payload = user.bundle(&[(1, b"")]);
        let mut no_entries = user.unsigned(&[]);
        no_entries.entries.clear();
        let no_entries = user.sign(no_entries);
        let mut short_sender: pb::Bundle = (&user.bundle(&[(1, b"x")])).into();
        short_sender.sender.pop();
        let mut short_sig: pb::Bundle = (&user.bundle(&[(1, b"x")])).into();
        short_sig.signature.truncate(64);

        let cases: Vec<(&str, pb::SubmitBundleRequest, Code, &str)> = vec![
            (
                "no bundle",
                pb::SubmitBundleRequest { bundle: None },
                Code::InvalidArgument,
                "bundle",
            ),
            (
                "bad signature",
                signed(forged),
                Code::InvalidArgument,
                "bundle.signature",
            ),
            (
                "wrong network id",
                signed(other_network),
                Code::InvalidArgument,
                "bundle.network_id",
            ),
            (
                "expired",
                signed(expired),
                Code::FailedPrecondition,
                "bundle.expiry_height",
            ),
            (
                "unknown rollup",
                signed(unknown_rollup),
                Code::NotFound,
                "rollup_id 99",
            ),
            (
                "too many entries",
                signed(too_many),
                Code::ResourceExhausted,
                "max_bundle_entries",
            ),
            (
                "payload too large",
                signed(big_payload),
                Code::ResourceExhausted,
                "max_payload_bytes",
            ),
            (
                "bundle too large",
                signed(too_large),
                Code::ResourceExhausted,
                "max_bundle_bytes",
            ),
            (
                "empty payload",
                signed(empty_payload),
                Code::InvalidArgument,
                "payload is empty",
            ),
            (
                "no entries",
                signed(no_entries),
                Code::InvalidArgument,
                "bundle.entries",
            ),
            (
                "short sender",
                pb::SubmitBundleRequest {
                    bundle: Some(short_sender),
                },
                Code::InvalidArgument,
                "bundle.sender",
            ),
            (
                "short signature",
                pb::SubmitBundleRequest {
                    bundle: Some(short_sig),
                },
                Code::InvalidArgument,
                "bundle.signature",
            ),
        ];
        for (name, req, code, needle) in cases {
            let err = match tokio::time::timeout(Duration::from_secs(20), rollup.submit_bundle(req))
                .await
            {
                Ok(r) => r.expect_err(name),
                Err(_) => panic!("{name}: no answer\n{}", cluster.log(0)),
            };
            assert_eq!(err.code(), code, "{name}: {err:?}");
            assert!(
                err.message().contains(needle),
                "{name}: message `{}` lacks `{needle}`",
                err.message()
            );
        }
        // A reused nonce: the first bundle with a nonce is accepted, a different one with the same nonce is not
        // (while the first is pending, and after it is included).
        let mut c = cluster.client(0).await;
        let mut u = user.unsigned(&[(1, b"first")]);
        u.nonce = 0;
        let first = user.sign(u.clone());
        let first_hash = c.submit(&first).await.expect("first with nonce 0");
        u.entries[0].payload = b"second".to_vec();
        let second = user.sign(u.clone());
        let err = rollup
            .submit_bundle(signed(second.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains("bundle.nonce 0"),
            "{}",
            err.message()
        );
        wait_included(&mut c, &first_hash, T).await;
        let err = rollup.submit_bundle(signed(second)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("already used"), "{}", err.message());
        // Resubmitting the included bundle is idempotent.
        assert_eq!(c.submit(&first).await.expect("idempotent"), first_hash);
        let entry = |n: usize| pb::BundleEntry {
            rollup_id: 1,
            payload: vec![7; n],
        };
        let submit = |entries: Vec<pb::BundleEntry>| pb::SubmitBundleRequest {
            bundle: Some(pb::Bundle {
                entries,
                ..Default::default()
            }),
        };
        let err = rollup
            .get_batch(pb::GetBatchRequest {
                rollup_id: 99,
                height: 1,
                with_proof: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("rollup_id 99"), "{}", err.message());
        let err = rollup
            .stream_batches(pb::StreamBatchesRequest {
                rollup_id: 99,
                from_height: 1,
                with_proof: true,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        let err = rollup
            .get_nonce(pb::GetNonceRequest { sender: vec![1; 3] })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("sender"), "{}", err.message());
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
                with_proof: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = rollup
            .get_batch(pb::GetBatchRequest {
                rollup_id: 1,
                height: 1 << 40,
                with_proof: true,
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
                with_proof: false,
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
        // Both reflection versions: grpcurl and grpcui ask v1, older grpcurl, Python's grpc_reflection and
        // Postman ask v1alpha.
        for services in [
            list_services(channel.clone()).await,
            list_services_v1alpha(channel).await,
        ] {
            for s in ["baton.v1.RollupService", "baton.v1.NodeService"] {
                assert!(
                    services.iter().any(|x| x == s),
                    "reflection lists {services:?}"
                );
            }
        }

        // Still serving: status answers and a valid bundle is included.
        let st = node
            .status(pb::StatusRequest {})
            .await
            .expect("status after bad input")
            .into_inner();
        assert!(st.latest_height >= 1);
        // A nonce gap waits: nonce 2 stays pending until nonce 1 arrives, then both are included in order.
        user.nonce = 2;
        let later = c.submit(&user.bundle(&[(1, b"nonce 2")])).await.unwrap();
        let now = cluster.height(0).await.unwrap();
        cluster.wait_height(0, now + 5, T).await;
        assert_eq!(
            c.bundle_status(&later).await.unwrap(),
            BundleStatus::Pending
        );
        let n = c.nonce(&user.key.address()).await.unwrap();
        assert_eq!((n.next_nonce, n.next_free_nonce), (1, 1));
        user.nonce = 1;
        let gap = c.submit(&user.bundle(&[(1, b"nonce 1")])).await.unwrap();
        let (h1, _, i1) = wait_included(&mut c, &gap, T).await;
        let (h2, _, i2) = wait_included(&mut c, &later, T).await;
        assert!((h1, i1) < (h2, i2), "nonce 1 must come before nonce 2");
    });
}

/// The attack: rollup 1's genesis entry allows only its operator's sequencer key to post for it; an outsider
/// submits a bundle for rollup 1 (junk every rollup-1 reader would download and skip). It is refused at
/// submission with PERMISSION_DENIED naming the rollup and the sender; the sequencer's bundles, and the outsider's
/// for open rollups, are included.
#[test]
fn a_rollup_restricted_to_its_senders_refuses_an_outsiders_bundle() {
    use tonic::Code;
    let _g = serial();
    run(Duration::from_secs(120), async {
        let mut cluster = Cluster::prepare(1);
        let mut sequencer = User::new();
        let mut outsider = User::new();
        cluster.net.genesis.rollups[0].allowed_senders = vec![sequencer.key.address()];
        assert_eq!(cluster.net.genesis.rollups[0].id, 1);
        std::fs::write(
            &cluster.net.genesis_path,
            toml::to_string(&cluster.net.genesis).expect("genesis"),
        )
        .expect("write genesis");
        cluster.start_node(0);
        cluster.wait_height(0, 1, T).await;
        let mut c = cluster.client(0).await;
        let (mut rollup, _) = c.raw();
        let signed = |b: &Bundle| pb::SubmitBundleRequest {
            bundle: Some(b.into()),
        };

        for junk in [
            outsider.bundle(&[(1, b"junk")]),
            outsider.bundle(&[(2, b"open"), (1, b"hidden junk")]),
        ] {
            match rollup.submit_bundle(signed(&junk)).await {
                Ok(_) => {
                    let (height, ..) = wait_included(&mut c, &junk.hash(), T).await;
                    panic!("the outsider's bundle for restricted rollup 1 was admitted and included at {height}");
                }
                Err(err) => {
                    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
                    let sender = outsider.key.address().to_string();
                    for needle in ["rollup 1", &sender[..], "allowed_senders"] {
                        assert!(
                            err.message().contains(needle),
                            "message `{}` lacks `{needle}`",
                            err.message()
                        );
                    }
                }
            }
        }
        // The refused bundles used no nonce: the outsider's next bundle, for an open rollup, takes nonce 0.
        outsider.nonce = 0;
        let open = outsider.bundle(&[(2, b"open")]);
        let mine = sequencer.bundle(&[(1, b"batch"), (2, b"also")]);
        for b in [&open, &mine] {
            let hash = c.submit(b).await.expect("accepted");
            wait_included(&mut c, &hash, T).await;
        }
    });
}

#[test]
fn thousand_acked_bundles_across_a_sigkill_are_each_included_exactly_once() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let _g = serial();
    run(Duration::from_secs(400), async {
        let mut cluster = Cluster::start(4);
        for i in 0..4 {
            cluster.wait_height(i, 2, T).await;
        }
        const USERS: usize = 8;
        const PER_USER: usize = 125;
        let urls: Vec<String> = cluster.net.nodes.iter().map(|n| n.grpc_url()).collect();
        let acked: Arc<Mutex<Vec<baton_consensus::hash::Hash>>> = Arc::default();
        let count = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for u in 0..USERS {
            let urls = urls.clone();
            let acked = acked.clone();
            let count = count.clone();
            tasks.push(tokio::spawn(async move {
                let mut user = User::new();
                let mut node = u % 4;
                for i in 0..PER_USER {
                    let b = user.bundle(&[
                        (1, format!("u{u} #{i}").as_bytes()),
                        (2 + (i % 2) as u64, b"x"),
                    ]);
                    // Retry the same bundle (same nonce) on the next node until one acknowledges it.
                    let deadline = Instant::now() + T;
                    loop {
                        let ok = match baton_proto::client::BatonClient::connect(urls[node].clone())
                            .await
                        {
                            Ok(mut c) => c.submit(&b).await.ok(),
                            Err(_) => None,
                        };
                        if let Some(h) = ok {
                            acked.lock().unwrap().push(h);
                            count.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        assert!(Instant::now() < deadline, "no node acknowledged a bundle");
                        node = (node + 1) % 4;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        // SIGKILL node 3 mid-way and restart it a few seconds later.
        while count.load(Ordering::SeqCst) < USERS * PER_USER / 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cluster.kill(3);
        let killed_at = count.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.start_node(3);
        for t in tasks {
            t.await.expect("submitter");
        }
        let acked = acked.lock().unwrap().clone();
        assert_eq!(acked.len(), USERS * PER_USER);
        println!(
            "{} bundles acknowledged; node3 killed after {killed_at} and restarted",
            acked.len()
        );

        // Every acknowledged bundle is included (asked of the restarted node too).
        let mut c3 = cluster.client(3).await;
        let mut last = 0;
        for h in &acked {
            let (height, _, _) = wait_included(&mut c3, h, T).await;
            last = last.max(height);
        }
        // ... exactly once: count each bundle's entries in rollup 1 over the whole chain, on two nodes.
        for node in [0, 3] {
            cluster.wait_height(node, last, T).await;
            let mut c = cluster.client(node).await;
            let mut seen: HashMap<baton_consensus::hash::Hash, usize> = HashMap::new();
            let mut stream = c
                .stream_verified_batches(1, 1, cluster.verifier())
                .await
                .expect("stream");
            for _ in 1..=last {
                let b = stream.next().await.expect("verified batch").expect("batch");
                for e in b.entries {
                    *seen.entry(e.bundle_hash).or_default() += 1;
                }
            }
            for h in &acked {
                assert_eq!(
                    seen.get(h).copied(),
                    Some(1),
                    "node{node}: bundle {h} included {:?} times",
                    seen.get(h)
                );
            }
            assert_eq!(
                seen.len(),
                acked.len(),
                "node{node}: bundles in blocks that nobody acknowledged"
            );
        }
        let reference = cluster.chain(0, last).await;
        assert_eq!(
            cluster.chain(3, last).await,
            reference,
            "node3 disagrees after restart"
        );
    });
}

#[test]
fn slow_subscribers_do_not_grow_node_memory_without_bound() {
    let _g = serial();
    run(Duration::from_secs(300), async {
        let mut cluster = Cluster::prepare(1);
        cluster.edit_config(0, |c| {
            c.grpc.stream_buffer_bytes = 1024 * 1024;
            // The 100 stalled subscribers all come from this test's address.
            c.grpc.max_streams_per_client = 200;
        });
        cluster.start_node(0);
        cluster.wait_height(0, 1, T).await;
        let url = cluster.net.nodes[0].grpc_url();

        // 100 subscribers from height 1 that never read.
        const SLOW: usize = 100;
        let mut parked = Vec::new();
        for _ in 0..SLOW {
            let channel = tonic::transport::Endpoint::from_shared(url.clone())
                .unwrap()
                .initial_stream_window_size(64 * 1024)
                .initial_connection_window_size(64 * 1024)
                .connect()
                .await
                .unwrap();
            let mut c = baton_proto::client::BatonClient::from_channel(channel);
            parked.push(c.stream_batches(1, 1).await.expect("subscribe"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = cluster.rss(0);

        // 400 bundles of 60 KB for rollup 1: 24 MB that every slow subscriber is behind on.
        let mut user = User::new();
        let mut c = cluster.client(0).await;
        let payload = vec![0xabu8; 60 * 1024];
        let mut last = None;
        for i in 0..400u32 {
            let mut p = payload.clone();
            p[..4].copy_from_slice(&i.to_be_bytes());
            let b = user.bundle(&[(1, &p)]);
            // A busy node (the box is shared) answers UNAVAILABLE with a retry hint: retry as a client would.
            let deadline = tokio::time::Instant::now() + T;
            last = Some(loop {
                match c.submit(&b).await {
                    Ok(h) => break h,
                    Err(baton_proto::client::ClientError::Status(s))
                        if s.code() == tonic::Code::Unavailable
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    Err(e) => panic!("submit: {e}"),
                }
            });
        }
        let (height, _, _) = wait_included(&mut c, &last.unwrap(), T).await;
        // A subscriber that reads gets everything, while the others still do not read.
        let mut reader = c.stream_batches(1, 1).await.expect("reader");
        let mut entries = 0;
        for _ in 1..=height {
            entries += reader
                .next()
                .await
                .expect("read")
                .expect("batch")
                .entries
                .len();
        }
        assert_eq!(entries, 400);
        let after = cluster.rss(0);
        let growth = after.saturating_sub(before);
        let unbounded = SLOW as u64 * 400 * 60 * 1024;
        println!(
            "node RSS {} MiB -> {} MiB (+{} MiB) with {SLOW} stalled subscribers each {} MiB behind",
            before >> 20,
            after >> 20,
            growth >> 20,
            (400 * 60 * 1024) >> 20
        );
        // Each stalled stream holds at most its byte budget (1 MiB) plus what HTTP/2 flow control lets through
        // (measured: about 0.7 MiB more); the rest of the growth is RocksDB's memtables and caches for the 24 MB
        // written (about 105 MiB with no subscriber at all). Buffering all they are behind on would take 2.3 GiB.
        let bound = (160 << 20) + SLOW as u64 * (3 << 20);
        assert!(
            growth < bound,
            "node memory grew by {} MiB with stalled subscribers (unbounded would be {} MiB)",
            growth >> 20,
            unbounded >> 20
        );
        drop(parked);
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

/// The same through the older `grpc.reflection.v1alpha` service.
async fn list_services_v1alpha(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("v1alpha reflection")
        .into_inner();
    match stream
        .message()
        .await
        .expect("v1alpha reflection reply")
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

/// Flips bytes of a served batch's entries, namespace path and certificate (and its header fields): the verifier
/// accepts the batch as served and rejects every altered copy.
fn tamper_is_detected(verifier: &mut BatchVerifier, served: &pb::RollupBatch) {
    verifier
        .verify(served.clone())
        .expect("the untampered batch verifies");
    assert!(!served.entries.is_empty(), "pick a batch with entries");
    let mut variants: Vec<(String, pb::RollupBatch)> = Vec::new();
    let mut flip = |name: String, f: &dyn Fn(&mut pb::RollupBatch)| {
        let mut b = served.clone();
        f(&mut b);
        variants.push((name, b));
    };
    for (e, entry) in served.entries.iter().enumerate() {
        for i in 0..entry.payload.len() {
            flip(format!("entry {e} payload byte {i}"), &|b| {
                b.entries[e].payload[i] ^= 1
            });
        }
        for i in 0..32 {
            flip(format!("entry {e} bundle_hash byte {i}"), &|b| {
                b.entries[e].bundle_hash[i] ^= 1
            });
        }
        flip(format!("entry {e} index"), &|b| {
            b.entries[e].index_in_bundle += 1
        });
    }
    flip("entry dropped".into(), &|b| {
        b.entries.pop();
    });
    flip("entry duplicated".into(), &|b| {
        let e = b.entries[0].clone();
        b.entries.push(e);
    });
    flip("rollup id".into(), &|b| b.rollup_id += 1);
    let proof = served.proof.as_ref().expect("proof");
    flip("namespace index".into(), &|b| {
        proof_mut(b).namespace_index ^= 1
    });
    for (k, step) in proof.namespace_path.iter().enumerate() {
        for i in 0..step.len() {
            flip(format!("namespace path {k} byte {i}"), &|b| {
                proof_mut(b).namespace_path[k][i] ^= 1
            });
        }
    }
    let cert = proof.certificate.as_ref().expect("certificate");
    flip("cert round".into(), &|b| cert_mut(b).round += 1);
    flip("cert height".into(), &|b| cert_mut(b).height += 1);
    for i in 0..32 {
        flip(format!("cert block_hash byte {i}"), &|b| {
            cert_mut(b).block_hash[i] ^= 1
        });
    }
    for (k, sig) in cert.signatures.iter().enumerate() {
        for i in 0..sig.signature.len() {
            flip(format!("cert signature {k} byte {i}"), &|b| {
                cert_mut(b).signatures[k].signature[i] ^= 1
            });
        }
        for i in 0..sig.validator.len() {
            flip(format!("cert signer {k} byte {i}"), &|b| {
                cert_mut(b).signatures[k].validator[i] ^= 1
            });
        }
    }
    // A certificate cut down to two signatures (of four equal validators): short of two thirds.
    flip("cert short".into(), &|b| cert_mut(b).signatures.truncate(2));
    flip("header timestamp".into(), &|b| {
        header_mut(b).timestamp_ms += 1
    });
    flip("header namespace_count".into(), &|b| {
        header_mut(b).namespace_count += 1
    });
    for i in 0..32 {
        flip(format!("header namespace_root byte {i}"), &|b| {
            header_mut(b).namespace_root[i] ^= 1
        });
        flip(format!("block_hash byte {i}"), &|b| b.block_hash[i] ^= 1);
    }
    let n = variants.len();
    for (name, b) in variants {
        assert!(
            verifier.verify(b).is_err(),
            "tampering not detected: {name}"
        );
    }
    println!("tampering: {n} altered copies of a served batch, all rejected");
}

fn proof_mut(b: &mut pb::RollupBatch) -> &mut pb::BatchProof {
    b.proof.as_mut().expect("proof")
}

fn cert_mut(b: &mut pb::RollupBatch) -> &mut pb::Certificate {
    proof_mut(b).certificate.as_mut().expect("certificate")
}

fn header_mut(b: &mut pb::RollupBatch) -> &mut pb::BlockHeader {
    b.header.as_mut().expect("header")
}

/// A flood against one node: 1,000 idle TCP connections, garbage on the gRPC and p2p ports, oversized messages,
/// and thousands of streams opened and dropped at once. A well-behaved client keeps getting answers, the chain
/// keeps deciding, subscriber slots come back, and the node's memory stays bounded.
#[test]
fn a_flood_of_connections_and_bad_frames_does_not_stop_service() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    let _g = serial();
    run(Duration::from_secs(240), async {
        let cluster = Cluster::start(1);
        cluster.wait_height(0, 3, T).await;
        let node = &cluster.net.nodes[0];
        let grpc = node.grpc_addr;
        let p2p: std::net::SocketAddr = node
            .p2p_addr
            .trim_start_matches("/ip4/")
            .replacen("/tcp/", ":", 1)
            .parse()
            .expect("p2p addr");
        let rss_before = cluster.rss(0);
        let h0 = cluster.height(0).await.unwrap();

        // The well-behaved client: a status call every 50 ms, timing each.
        let stop = Arc::new(AtomicBool::new(false));
        let worst_ms = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(AtomicU64::new(0));
        let good = {
            let (stop, worst_ms, failures, calls) = (
                stop.clone(),
                worst_ms.clone(),
                failures.clone(),
                calls.clone(),
            );
            let mut c = cluster.client(0).await;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(5), c.status()).await {
                        Ok(Ok(_)) => {
                            worst_ms.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                        }
                        _ => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };

        // 1,000 idle connections held open on the gRPC port, 200 more on the p2p port.
        let mut idle = Vec::new();
        for i in 0..1_200 {
            let addr = if i < 1_000 { grpc } else { p2p };
            if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                idle.push(s);
            }
        }
        // Garbage: not HTTP/2, not a noise handshake.
        let mut junk = Vec::new();
        for i in 0..400u32 {
            let addr = if i % 2 == 0 { grpc } else { p2p };
            junk.push(tokio::spawn(async move {
                if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                    let mut bytes = vec![0u8; 64 * 1024];
                    for (j, b) in bytes.iter_mut().enumerate() {
                        *b = (j as u32).wrapping_mul(2654435761).wrapping_add(i) as u8;
                    }
                    let _ = s.write_all(&bytes).await;
                }
            }));
        }
        // Oversized requests on real HTTP/2 connections: refused with a status, not a crash.
        let mut user = User::new();
        let huge = user.bundle(&[(1, &vec![9u8; 24 * 1024 * 1024][..])]);
        for _ in 0..4 {
            let (mut rollup, _) = cluster.client(0).await.raw();
            let err = rollup
                .submit_bundle(pb::SubmitBundleRequest {
                    bundle: Some((&huge).into()),
                })
                .await
                .expect_err("a 24 MiB bundle must be refused");
            assert!(
                matches!(
                    err.code(),
                    tonic::Code::ResourceExhausted
                        | tonic::Code::OutOfRange
                        | tonic::Code::InvalidArgument
                ),
                "oversized request: {err:?}"
            );
        }
        // Streams opened and dropped at once, 2,000 of them over 20 connections.
        let mut churn = Vec::new();
        for _ in 0..20 {
            let mut c = cluster.client(0).await;
            churn.push(tokio::spawn(async move {
                for k in 0..100u64 {
                    if let Ok(s) = c.stream_batches(1 + k % 4, 1).await {
                        drop(s);
                    }
                }
            }));
        }
        for j in junk.into_iter().chain(churn) {
            let _ = j.await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_flood = cluster.rss(0);
        let h1 = cluster.height(0).await.unwrap();
        drop(idle);
        stop.store(true, Ordering::Relaxed);
        let _ = good.await;

        // Subscriber slots come back once the streams are gone.
        let deadline = Instant::now() + Duration::from_secs(20);
        let subscribers = loop {
            let text = baton_loadtest::nodemetrics::page(&node.metrics_addr.to_string())
                .await
                .unwrap_or_default();
            let n = value(&text, "baton_stream_subscribers ").unwrap_or(-1.0);
            if n == 0.0 || Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        println!(
            "flood: {} status calls, worst {} ms, {} failed; heights {h0} -> {h1} during the flood; RSS {} -> {} MiB; \
             subscribers after: {subscribers}",
            calls.load(Ordering::Relaxed),
            worst_ms.load(Ordering::Relaxed),
            failures.load(Ordering::Relaxed),
            rss_before >> 20,
            rss_flood >> 20
        );
        // (A fresh sender: the refused 24 MiB bundle took nonce 0 of the other one.)
        let mut c = cluster.client(0).await;
        let hash = c
            .submit(&User::new().bundle(&[(2, b"after the flood")]))
            .await
            .expect("submit");
        wait_included(&mut c, &hash, T).await;
        assert_eq!(
            failures.load(Ordering::Relaxed),
            0,
            "the good client lost calls"
        );
        assert!(
            worst_ms.load(Ordering::Relaxed) < 2_000,
            "the good client waited over 2 s"
        );
        assert!(
            h1 > h0 + 5,
            "the chain stalled during the flood ({h0} -> {h1})"
        );
        assert_eq!(subscribers, 0.0, "stream slots leaked");
        assert!(
            rss_flood < rss_before + 300 * 1024 * 1024,
            "memory grew {} MiB under the flood",
            (rss_flood - rss_before) >> 20
        );
    });
}
