//! Figures for the docs/testing.md, not pass/fail checks: run with
//! `cargo test --release -p baton-node --test measure -- --ignored --nocapture`.
//!
//! - admission rate: signed bundles per second one node of four acknowledges through `SubmitBundles` (checked,
//!   signature recovered, fsynced, disseminated) while the network decides blocks;
//! - proof sizes and client-side verify cost per batch.

mod common;

use std::time::{Duration, Instant};

use baton_proto::pb;
use common::{run, serial, Cluster, User};
use prost::Message;

#[test]
#[ignore = "measurement; run by hand with --release"]
fn admission_rate_proof_sizes_and_verify_cost() {
    let _g = serial();
    for validators in [1, 4] {
        println!("--- {validators} validator(s) on this machine; all submissions to node 0");
        measure(validators);
    }
}

fn measure(validators: usize) {
    run(Duration::from_secs(600), async {
        // With four, node 0 disseminates every bundle to the other three, which check each signature again.
        let cluster = Cluster::start(validators);
        for i in 0..validators {
            cluster.wait_height(i, 1, Duration::from_secs(60)).await;
        }
        let url = cluster.net.nodes[0].grpc_url();

        // Pre-sign: 64 users, 20,000 bundles of one 512-byte entry.
        const USERS: usize = 64;
        const BUNDLES: usize = 20_000;
        const STREAMS: usize = 4;
        let mut users: Vec<User> = (0..USERS).map(|_| User::new()).collect();
        let t = Instant::now();
        let mut per_stream: Vec<Vec<pb::SubmitBundlesRequest>> = vec![Vec::new(); STREAMS];
        for i in 0..BUNDLES {
            let u = i % USERS;
            let payload = vec![(i % 251) as u8; 512];
            let b = users[u].bundle(&[(1 + (i % 4) as u64, &payload)]);
            per_stream[u % STREAMS].push(pb::SubmitBundlesRequest {
                client_ref: i as u64,
                bundle: Some((&b).into()),
            });
        }
        println!(
            "signed {BUNDLES} bundles in {:.2} s (client side)",
            t.elapsed().as_secs_f64()
        );

        let start = Instant::now();
        let mut tasks = Vec::new();
        for reqs in per_stream {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let c = baton_proto::client::BatonClient::connect(url)
                    .await
                    .expect("connect");
                let (mut rollup, _) = c.raw();
                let n = reqs.len();
                let mut resp = rollup
                    .submit_bundles(tokio_stream::iter(reqs))
                    .await
                    .expect("open stream")
                    .into_inner();
                let mut ok = 0;
                for _ in 0..n {
                    let r = resp
                        .message()
                        .await
                        .expect("response")
                        .expect("one per request");
                    match r.result {
                        Some(pb::submit_bundles_response::Result::BundleHash(_)) => ok += 1,
                        other => panic!("refused: {other:?}"),
                    }
                }
                ok
            }));
        }
        let mut acked = 0;
        for t in tasks {
            acked += t.await.expect("stream task");
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "admission: {acked} bundles acknowledged through {STREAMS} SubmitBundles streams in {secs:.2} s = {:.0} \
             bundles/s (each: limits, EIP-712 hash, ECDSA recovery, nonce/expiry, fsync before ack)",
            acked as f64 / secs
        );
        let mut c = cluster.client(0).await;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let st = c.status().await.expect("status");
            if st.mempool_bundles == 0 {
                println!(
                    "all included {:.2} s after the first submission (height {})",
                    start.elapsed().as_secs_f64(),
                    st.latest_height
                );
                break;
            }
            assert!(Instant::now() < deadline, "mempool never drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Proof sizes and verify cost, on the fullest batch of rollup 1.
        let latest = c.status().await.expect("status").latest_height;
        let mut best = (0, 0usize);
        for h in 1..=latest {
            let b = c.get_batch(1, h).await.expect("batch");
            if b.entries.len() > best.1 {
                best = (h, b.entries.len());
            }
        }
        let mut verifier = cluster.verifier();
        for (label, height) in [("fullest", best.0), ("empty-ish", latest)] {
            let wire = c.get_batch_with_proof(1, height).await.expect("batch");
            let proof = wire.proof.clone().expect("proof");
            let cert = proof.certificate.clone().expect("cert");
            let n = 200;
            let t = Instant::now();
            for _ in 0..n {
                verifier.verify(wire.clone()).expect("verifies");
            }
            let per = t.elapsed().as_secs_f64() / n as f64;
            println!(
                "{label} batch (height {height}, {} entries, {} bytes): proof {} bytes (namespace path {} x 32 bytes, \
                 certificate {} bytes with {} signatures); header {} bytes; verify {:.0} us per batch",
                wire.entries.len(),
                wire.encoded_len(),
                proof.encoded_len(),
                proof.namespace_path.len(),
                cert.encoded_len(),
                cert.signatures.len(),
                wire.header.as_ref().map_or(0, |h| h.encoded_len()),
                per * 1e6
            );
        }
    });
}

/// What validating a proposal costs with and without the signature cache: a block of 5,000 bundles judged by a
/// validator that checked every bundle's signature when it was disseminated, and by one that checked none.
#[test]
#[ignore = "measurement; run by hand with --release"]
fn block_validation_with_and_without_checked_signatures() {
    use baton_consensus::block::{build_block, validate_block};
    use baton_consensus::bundle::Bundle;
    use baton_consensus::bundle::Sender;
    use baton_consensus::hash::Hash;
    use baton_consensus::registry::ChainSpec;
    use baton_consensus::view::ChainView;
    use std::collections::HashMap;

    struct View {
        next: HashMap<Sender, u64>,
        checked: bool,
    }
    impl ChainView for View {
        fn is_included(&self, _: &Hash) -> Result<bool, baton_consensus::error::ConsensusError> {
            Ok(false)
        }
        fn next_nonce(&self, s: &Sender) -> Result<u64, baton_consensus::error::ConsensusError> {
            Ok(self.next.get(s).copied().unwrap_or(0))
        }
        fn signature_checked(&self, _: &Hash, _: &[u8; 65]) -> bool {
            self.checked
        }
    }

    let n = 5_000;
    let bundles = baton_node::devnet::sample_bundles(n, 100, 512, 1, 7).expect("sign");
    let spec = ChainSpec::for_tests(7, 4);
    let keys = baton_consensus::fixtures::validator_keys(1, 1);
    let proposer = baton_consensus::fixtures::address_of(&keys[0]);
    let ctx = baton_consensus::fixtures::block_context(
        1,
        baton_consensus::fixtures::validator_set(&keys),
    );
    let t = Instant::now();
    let hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
    let hashing = t.elapsed();
    let at = ctx.parent_timestamp_ms + 10;
    let block = build_block(&ctx, &spec, proposer, at, bundles, &hashes).block;
    for checked in [true, false] {
        let view = View {
            next: HashMap::new(),
            checked,
        };
        let t = Instant::now();
        let v = validate_block(&block, &hashes, &ctx, &spec, &view, None, at + 10).expect("valid");
        let took = t.elapsed();
        println!(
            "validate a block of {n} bundles, signatures {}: {:.1} ms ({:.1} us per bundle, {} recovered)",
            if checked { "already checked" } else { "all recovered" },
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / n as f64,
            v.signatures_checked
        );
    }
    println!(
        "hashing {n} bundles (EIP-712): {:.1} ms ({:.1} us per bundle)",
        hashing.as_secs_f64() * 1e3,
        hashing.as_secs_f64() * 1e6 / n as f64
    );
}
