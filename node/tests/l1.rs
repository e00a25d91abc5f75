//! Commitments from a running network to a real local L1 (anvil): validators attest on their precommits at
//! commitment heights, node 0 posts, the contract accepts them, and what it holds is the chain's own headers. A
//! validator stopped across commitment heights catches up through sync, whose certificates carry the
//! attestations.

mod common;

use std::time::Duration;

use alloy::primitives::B256;
use alloy::providers::ProviderBuilder;
use baton_l1_inclusion::anvil::LocalL1;
use baton_l1_inclusion::contracts::BatonCommitments;
use baton_node::devnet::{attach_l1, DevnetL1};
use common::{run, scrape, serial, value, Cluster};

/// A local L1 mining a block per second.
fn local_l1() -> alloy::node_bindings::AnvilInstance {
    LocalL1 {
        block_time_secs: Some(1),
        ..Default::default()
    }
    .spawn()
    .expect("anvil")
}

/// Registers based rollup `id` in the cluster's genesis (written by `attach_l1`, or by the caller).
fn add_based_rollup(cluster: &mut Cluster, id: u64) {
    cluster
        .net
        .genesis
        .rollups
        .push(baton_consensus::registry::RollupInfo {
            id,
            name: "based-demo".into(),
            mode: baton_consensus::registry::RollupMode::Based,
            allowed_senders: Vec::new(),
        });
}

/// One validator (not started) with based rollup 9, attached to `anvil`, serving based rollups at `latest`.
async fn based_cluster(
    anvil: &alloy::node_bindings::AnvilInstance,
) -> (Cluster, baton_l1_inclusion::contracts::Deployment) {
    let mut cluster = Cluster::prepare(1);
    add_based_rollup(&mut cluster, 9);
    let deployment = attach_l1(&mut cluster.net, &DevnetL1::local(anvil, 10))
        .await
        .expect("attach L1");
    cluster.edit_config(0, |c| {
        c.l1.as_mut().expect("l1").based_safety = baton_l1_inclusion::watcher::Safety::Latest
    });
    (cluster, deployment)
}

/// Makes node 0 of `cluster` forward based-rollup bundles with anvil's fifth key (returned), its `[l1.forward]`
/// set by `forward`, then starts it and waits for its first height.
async fn start_forwarder(
    cluster: &mut Cluster,
    anvil: &alloy::node_bindings::AnvilInstance,
    forward: impl FnOnce(&mut baton_node::forward::ForwardConfig),
) -> alloy::signers::local::PrivateKeySigner {
    let forwarder: alloy::signers::local::PrivateKeySigner = anvil.keys()[4].clone().into();
    baton_node::keys::write_secret_file(
        &cluster.net.nodes[0].dir.join("forward.key"),
        &format!("{}\n", forwarder.to_bytes()),
    )
    .expect("key");
    cluster.edit_config(0, |c| {
        let l1 = c.l1.as_mut().expect("l1");
        l1.forward_key_file = Some("forward.key".into());
        forward(&mut l1.forward);
    });
    cluster.start_node(0);
    cluster.wait_height(0, 1, Duration::from_secs(60)).await;
    forwarder
}

/// The next item of a based stream, within `secs`.
async fn next_based(
    stream: &mut baton_proto::client::BasedStream,
    secs: u64,
) -> baton_proto::convert::BasedItem {
    tokio::time::timeout(Duration::from_secs(secs), stream.next())
        .await
        .unwrap_or_else(|_| panic!("nothing on the based stream within {secs} s"))
        .expect("stream")
        .expect("open")
}

#[test]
fn commitments_land_on_l1_and_match_the_chain() {
    let _guard = serial();
    run(Duration::from_secs(240), async {
        let anvil = local_l1();
        let mut cluster = Cluster::prepare(4);
        let deployment = attach_l1(&mut cluster.net, &DevnetL1::local(&anvil, 10))
            .await
            .expect("attach L1");
        for i in 0..3 {
            cluster.start_node(i);
        }
        let provider = ProviderBuilder::new().connect_http(anvil.endpoint_url());
        let contract = BatonCommitments::new(deployment.commitments, provider);

        // Commitments land while three of four validators run (3 of 4 attestations are > 2/3).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        let mut latest = 0;
        while latest < 30 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "L1 commitments stalled at {latest}; node 0 log:\n{}",
                cluster.log(0)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            latest = contract.latestHeight().call().await.expect("latestHeight");
        }
        assert_eq!(latest % 10, 0, "only commitment heights are posted");
        let count: u64 = contract.commitmentCount().call().await.expect("count").to();
        assert!(count >= 1);
        for i in 0..count {
            let c = contract
                .commitmentAtIndex(alloy::primitives::U256::from(i))
                .call()
                .await
                .expect("commitment");
            let header = cluster.headers(1, c.height, c.height).await.remove(0);
            assert_eq!(
                c.blockHash,
                B256::from(header.hash().0),
                "height {}",
                c.height
            );
            assert_eq!(c.batchesRoot, B256::from(header.namespace_root.0));
            assert_eq!(c.validatorSetHash, B256::from(header.validator_set_hash.0));
        }

        // The poster's view is on node 0's /metrics; node 1 does not post.
        let m0 = scrape(cluster.net.nodes[0].metrics_addr).await;
        assert!(
            value(&m0, "baton_l1_commitment_included_height ").unwrap() >= 10.0,
            "{m0}"
        );
        assert!(value(&m0, "baton_l1_transactions_sent_total ").unwrap() >= 1.0);
        assert_eq!(value(&m0, "baton_l1_poster_ok "), Some(1.0));
        let m1 = scrape(cluster.net.nodes[1].metrics_addr).await;
        assert_eq!(value(&m1, "baton_l1_transactions_sent_total "), Some(0.0));

        // The fourth validator starts late and syncs across commitment heights.
        let target = cluster.height(1).await.expect("height");
        cluster.start_node(3);
        let reached = cluster
            .wait_height(3, target, Duration::from_secs(60))
            .await;
        assert!(reached >= target);
        let a = cluster.chain(1, target).await;
        let b = cluster.chain(3, target).await;
        assert_eq!(a, b, "the late validator agrees on every hash");
    });
}

#[test]
fn a_bundle_spanning_shared_and_based_rollups_is_refused() {
    let _guard = serial();
    run(Duration::from_secs(120), async {
        let mut cluster = Cluster::prepare(1);
        // Register a based rollup beside the devnet's shared ones.
        add_based_rollup(&mut cluster, 9);
        std::fs::write(
            &cluster.net.genesis_path,
            toml::to_string(&cluster.net.genesis).expect("genesis"),
        )
        .expect("write genesis");
        cluster.start_node(0);
        cluster.wait_height(0, 1, Duration::from_secs(60)).await;
        let mut client = cluster.client(0).await;
        let mut user = common::User::new();
        let status = |e: baton_proto::client::ClientError| match e {
            baton_proto::client::ClientError::Status(s) => *s,
            other => panic!("expected a status, got {other}"),
        };

        let mixed = user.bundle(&[(1, b"shared"), (9, b"based")]);
        let err = status(client.submit(&mixed).await.unwrap_err());
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains("shared rollup 1 and based rollup 9"),
            "{}",
            err.message()
        );
        let based = user.bundle(&[(9, b"based only")]);
        let err = status(client.submit(&based).await.unwrap_err());
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains("BatonInbox.post"),
            "{}",
            err.message()
        );
        // The node keeps serving shared bundles.
        let ok = common::User::new().bundle(&[(1, b"shared only")]);
        let hash = client.submit(&ok).await.expect("shared bundle admitted");
        common::wait_included(&mut client, &hash, Duration::from_secs(30)).await;
    });
}

/// Forced inclusion: a bundle queued in the L1 inbox, never submitted to any node, is in the chain from the first
/// block whose L1 origin reaches its deadline, on every node, and served in its rollup's stream; every block
/// before it names an earlier L1 block.
#[test]
fn an_overdue_forced_entry_is_included_though_no_mempool_saw_it() {
    use alloy::providers::Provider;
    use baton_l1_inclusion::contracts::BatonInbox;
    let _guard = serial();
    run(Duration::from_secs(180), async {
        let anvil = local_l1();
        let mut cluster = Cluster::prepare(4);
        let mut l1 = DevnetL1::local(&anvil, 10);
        l1.forced_delay = 4;
        let deployment = attach_l1(&mut cluster.net, &l1).await.expect("attach L1");
        for i in 0..4 {
            cluster.start_node(i);
        }
        cluster.wait_height(1, 2, Duration::from_secs(60)).await;

        // A user nobody has heard of queues a bundle for shared rollup 1 through L1.
        let mut user = common::User::new();
        let bundle = user.bundle(&[(1, b"forced through L1")]);
        let hash = bundle.hash();
        let payer: alloy::signers::local::PrivateKeySigner = anvil.keys()[3].clone().into();
        let provider = ProviderBuilder::new()
            .wallet(alloy::network::EthereumWallet::from(payer))
            .connect_http(anvil.endpoint_url());
        let inbox = BatonInbox::new(deployment.inbox, provider.clone());
        let fee = inbox.forcedInclusionFee().call().await.expect("fee");
        let receipt = inbox
            .forceInclude(1, borsh::to_vec(&bundle).expect("encode").into())
            .value(fee)
            .send()
            .await
            .expect("send")
            .get_receipt()
            .await
            .expect("receipt");
        assert!(receipt.status());
        let queued = receipt
            .decoded_log::<BatonInbox::ForcedInclusion>()
            .expect("ForcedInclusion event");
        let deadline = queued.deadline;
        assert_eq!(deadline, receipt.block_number.unwrap() + 4);

        let mut client = cluster.client(2).await;
        let (height, block_hash, _) =
            common::wait_included(&mut client, &hash, Duration::from_secs(90)).await;
        let headers = cluster.headers(2, 1, height).await;
        let at = headers.last().expect("including header");
        assert!(
            at.l1_origin.number >= deadline,
            "included at height {height} on L1 origin {} before its deadline {deadline}: only owed entries come \
             from the queue",
            at.l1_origin.number
        );
        for h in &headers[..headers.len() - 1] {
            assert!(
                h.l1_origin.number < deadline,
                "height {} on L1 origin {} omitted the entry due at {deadline}",
                h.height,
                h.l1_origin.number
            );
        }
        // Origins never go back and name real L1 blocks.
        assert!(headers
            .windows(2)
            .all(|w| w[0].l1_origin.number <= w[1].l1_origin.number));
        let l1_block = provider
            .get_block_by_number(at.l1_origin.number.into())
            .await
            .expect("L1 block")
            .expect("exists");
        assert_eq!(l1_block.header.hash.0, at.l1_origin.hash.0);

        // The rollup reads it in its verified stream, and every node agrees.
        let batch = client
            .get_verified_batch(1, height, &mut cluster.verifier())
            .await
            .expect("verified batch");
        assert_eq!(batch.block_hash, block_hash);
        assert!(batch
            .entries
            .iter()
            .any(|e| e.bundle_hash == hash && e.payload == b"forced through L1"));
        // The node's L1 view on /metrics: its origin head passed the deadline, and the entry left the queue.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let m = scrape(cluster.net.nodes[2].metrics_addr).await;
        assert!(
            value(&m, "baton_l1_origin_block ").unwrap() >= deadline as f64,
            "{m}"
        );
        assert_eq!(value(&m, "baton_l1_forced_waiting "), Some(0.0), "{m}");
        for i in [0, 1, 3] {
            cluster
                .wait_height(i, height, Duration::from_secs(30))
                .await;
            assert_eq!(
                cluster.chain(i, height).await,
                cluster.chain(2, height).await
            );
        }
    });
}

/// Forced entries are forgotten once resolved: a node that restarts after its forced entries were included does
/// not load them again (the watcher reads the whole inbox history again; only unresolved entries stay), so its
/// queue (`baton_l1_forced_waiting`) is empty and no proposal carries resolved entries around.
#[test]
fn resolved_forced_entries_do_not_come_back_after_a_restart() {
    use baton_l1_inclusion::contracts::BatonInbox;
    let _guard = serial();
    run(Duration::from_secs(240), async {
        let anvil = local_l1();
        let mut cluster = Cluster::prepare(1);
        let mut l1 = DevnetL1::local(&anvil, 10);
        l1.forced_delay = 2;
        let deployment = attach_l1(&mut cluster.net, &l1).await.expect("attach L1");
        cluster.start_node(0);
        cluster.wait_height(0, 2, Duration::from_secs(60)).await;

        let mut user = common::User::new();
        let payer: alloy::signers::local::PrivateKeySigner = anvil.keys()[3].clone().into();
        let provider = ProviderBuilder::new()
            .wallet(alloy::network::EthereumWallet::from(payer))
            .connect_http(anvil.endpoint_url());
        let inbox = BatonInbox::new(deployment.inbox, provider.clone());
        let fee = inbox.forcedInclusionFee().call().await.expect("fee");
        const N: usize = 6;
        let mut hashes = Vec::new();
        let mut last_deadline = 0;
        for i in 0..N {
            let bundle = user.bundle(&[(1, format!("forced {i}").as_bytes())]);
            hashes.push(bundle.hash());
            let receipt = inbox
                .forceInclude(1, borsh::to_vec(&bundle).expect("encode").into())
                .value(fee)
                .send()
                .await
                .expect("send")
                .get_receipt()
                .await
                .expect("receipt");
            assert!(receipt.status());
            last_deadline = receipt
                .decoded_log::<BatonInbox::ForcedInclusion>()
                .expect("ForcedInclusion event")
                .deadline;
        }
        let mut client = cluster.client(0).await;
        for h in &hashes {
            common::wait_included(&mut client, h, Duration::from_secs(90)).await;
        }
        let decided = cluster.height(0).await.expect("height");

        // Restart: the node reads the inbox from its deployment block again.
        cluster.kill(0);
        cluster.start_node(0);
        cluster
            .wait_height(0, decided + 1, Duration::from_secs(60))
            .await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let m = loop {
            let m = scrape(cluster.net.nodes[0].metrics_addr).await;
            if value(&m, "baton_l1_origin_block ").unwrap_or(0.0) >= last_deadline as f64 {
                break m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the L1 follower did not catch up: {m}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            value(&m, "baton_l1_forced_waiting "),
            Some(0.0),
            "all {N} forced entries were included before the restart, yet the node holds them again: {m}"
        );
    });
}

/// Based mode: a based rollup's stream carries the inbox's batches in L1 order, each with its L1 block; after an
/// L1 reorg (served at `latest`, below finalized) it sends a reorg notice and then the corrected batches, so a
/// reader applying the notices ends with exactly what the canonical chain's inbox holds.
#[test]
fn a_based_rollup_streams_the_inbox_and_follows_a_reorg() {
    use alloy::providers::ext::AnvilApi;
    use alloy::providers::Provider;
    use baton_l1_inclusion::contracts::BatonInbox;
    use baton_proto::convert::BasedItem;
    let _guard = serial();
    run(Duration::from_secs(180), async {
        let anvil = local_l1();
        let (mut cluster, deployment) = based_cluster(&anvil).await;
        cluster.start_node(0);
        cluster.wait_height(0, 1, Duration::from_secs(60)).await;

        // Anyone posts to the inbox; a fresh provider per post (a cached nonce would outlive the reorg).
        let payer: alloy::signers::local::PrivateKeySigner = anvil.keys()[3].clone().into();
        let post = |data: Vec<u8>| {
            let payer = payer.clone();
            let url = anvil.endpoint_url();
            async move {
                let provider = ProviderBuilder::new()
                    .wallet(alloy::network::EthereumWallet::from(payer))
                    .connect_http(url);
                let r = BatonInbox::new(deployment.inbox, provider)
                    .post(9, data.into())
                    .send()
                    .await
                    .expect("send")
                    .get_receipt()
                    .await
                    .expect("receipt");
                assert!(r.status());
                r.block_number.expect("mined")
            }
        };
        let mut user = common::User::new();
        let mut posted = Vec::new();
        for i in 0..3u8 {
            let bundles = vec![
                user.bundle(&[(9, &[b'a', i][..])]),
                user.bundle(&[(9, &[b'b', i][..]), (9, &[b'c', i][..])]),
            ];
            let block = post(borsh::to_vec(&bundles).expect("encode")).await;
            posted.push((block, bundles));
        }
        // Undecodable data and a bundle for a shared rollup are skipped by every node alike.
        post(b"not bundles".to_vec()).await;
        post(borsh::to_vec(&vec![user.bundle(&[(1, b"shared")])]).unwrap()).await;

        let mut client = cluster.client(0).await;
        let mut stream = client.stream_based(9, 1).await.expect("stream");
        // The reader's view: L1 block -> (hash, payloads), with reorg notices applied.
        let mut view: std::collections::BTreeMap<u64, (baton_consensus::hash::Hash, Vec<Vec<u8>>)> =
            Default::default();
        let mut notices = Vec::new();
        let read = |item: BasedItem,
                    view: &mut std::collections::BTreeMap<_, _>,
                    notices: &mut Vec<u64>| match item {
            BasedItem::Batch {
                rollup_id,
                l1_block,
                entries,
            } => {
                assert_eq!(rollup_id, 9);
                view.insert(
                    l1_block.number,
                    (
                        l1_block.hash,
                        entries.into_iter().map(|e| e.payload).collect::<Vec<_>>(),
                    ),
                );
            }
            BasedItem::Reorg { from_l1_block, .. } => {
                view.split_off(&from_l1_block);
                notices.push(from_l1_block);
            }
        };
        while view.len() < 3 {
            let item = next_based(&mut stream, 30).await;
            read(item, &mut view, &mut notices);
        }
        // In inbox order, one batch per L1 block, bundles' entries contiguous and in order.
        let expected: Vec<(u64, Vec<Vec<u8>>)> = posted
            .iter()
            .map(|(block, bundles)| {
                (
                    *block,
                    bundles
                        .iter()
                        .flat_map(|b| b.entries.iter().map(|e| e.payload.clone()))
                        .collect(),
                )
            })
            .collect();
        let got: Vec<(u64, Vec<Vec<u8>>)> =
            view.iter().map(|(n, (_, p))| (*n, p.clone())).collect();
        assert_eq!(got, expected);

        // Reorg away the third batch's block (and whatever followed), then post a fourth batch.
        let provider = ProviderBuilder::new().connect_http(anvil.endpoint_url());
        let third = posted[2].0;
        let head = provider.get_block_number().await.unwrap();
        provider
            .anvil_reorg(alloy::rpc::types::anvil::ReorgOptions {
                depth: head - third + 2,
                tx_block_pairs: vec![],
            })
            .await
            .expect("anvil_reorg");
        let fourth = vec![user.bundle(&[(9, b"after the reorg")])];
        let fourth_block = post(borsh::to_vec(&fourth).unwrap()).await;
        while !view.contains_key(&fourth_block) {
            let item = next_based(&mut stream, 30).await;
            read(item, &mut view, &mut notices);
        }
        assert!(
            notices.iter().any(|from| *from <= third),
            "a reorg notice withdrew the third batch: {notices:?}"
        );
        // The reader's view is exactly the canonical inbox's batches for rollup 9, block hashes included.
        let logs = provider
            .get_logs(
                &alloy::rpc::types::Filter::new()
                    .address(deployment.inbox)
                    .from_block(deployment.inbox_block),
            )
            .await
            .expect("logs");
        let mut canonical: std::collections::BTreeMap<
            u64,
            (baton_consensus::hash::Hash, Vec<Vec<u8>>),
        > = Default::default();
        for log in &logs {
            let Ok(e) = log.log_decode::<BatonInbox::BatchPosted>() else {
                continue;
            };
            let Ok(bundles) =
                borsh::from_slice::<Vec<baton_consensus::bundle::Bundle>>(&e.inner.data.data)
            else {
                continue;
            };
            if e.inner.data.rollupId != 9
                || bundles
                    .iter()
                    .any(|b| b.entries.iter().any(|x| x.rollup_id != 9))
            {
                continue;
            }
            let slot = canonical.entry(log.block_number.unwrap()).or_insert((
                baton_consensus::hash::Hash(log.block_hash.unwrap().0),
                Vec::new(),
            ));
            slot.1.extend(
                bundles
                    .iter()
                    .flat_map(|b| b.entries.iter().map(|x| x.payload.clone())),
            );
        }
        assert!(!canonical.contains_key(&third));
        assert_eq!(view, canonical);
        // A new reader gets the corrected batches directly.
        let mut fresh = client.stream_based(9, 1).await.expect("stream");
        let mut again = std::collections::BTreeMap::new();
        let mut none = Vec::new();
        while again.len() < canonical.len() {
            let item = next_based(&mut fresh, 10).await;
            read(item, &mut again, &mut none);
        }
        assert_eq!(again, canonical);
        // GetBatch answers by L1 block.
        let one = client
            .raw()
            .0
            .get_batch(baton_proto::pb::GetBatchRequest {
                rollup_id: 9,
                height: fourth_block,
                with_proof: false,
            })
            .await
            .expect("batch")
            .into_inner();
        assert_eq!(one.l1_origin.expect("origin").number, fourth_block);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let m = scrape(cluster.net.nodes[0].metrics_addr).await;
        assert!(
            value(&m, "baton_l1_based_block ").unwrap() >= fourth_block as f64,
            "{m}"
        );
        // Once L1 finalizes their blocks the batches leave the node's memory, and it serves them from its store.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = scrape(cluster.net.nodes[0].metrics_addr).await;
            if value(&m, "baton_l1_based_batches_held ") == Some(0.0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "based batches still held in memory well after L1 finalized their blocks: {m}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let first = *canonical.keys().next().expect("a batch");
        let old = client
            .raw()
            .0
            .get_batch(baton_proto::pb::GetBatchRequest {
                rollup_id: 9,
                height: first,
                with_proof: false,
            })
            .await
            .expect("a final batch")
            .into_inner();
        assert_eq!(old.l1_origin.expect("origin").number, first);
        let mut stored = client.stream_based(9, 1).await.expect("stream");
        let mut from_store = std::collections::BTreeMap::new();
        while from_store.len() < canonical.len() {
            let item = next_based(&mut stored, 10).await;
            read(item, &mut from_store, &mut none);
        }
        assert_eq!(from_store, canonical);
    });
}

/// Based mode through Baton's API: bundles submitted for a based rollup are acknowledged after they are stored,
/// forwarded to the inbox (small batches in calldata, large ones in blobs), and come back in the rollup's stream.
#[test]
fn bundles_submitted_for_a_based_rollup_are_forwarded_to_the_inbox() {
    use alloy::providers::Provider;
    use baton_l1_inclusion::contracts::BatonInbox;
    use baton_proto::convert::BasedItem;
    let _guard = serial();
    run(Duration::from_secs(180), async {
        let anvil = local_l1();
        let (mut cluster, deployment) = based_cluster(&anvil).await;
        let forwarder = start_forwarder(&mut cluster, &anvil, |f| {
            f.flush_ms = 200;
            f.sender.blob_min_bytes = 4096;
        })
        .await;
        let mut client = cluster.client(0).await;
        let mut stream = client.stream_based(9, 1).await.expect("stream");
        let mut seen: Vec<(u64, baton_consensus::hash::Hash, Vec<u8>)> = Vec::new();
        let mut user = common::User::new();

        // Small bundles: a calldata batch. Then bundles of 5 kB each: blob batches.
        let small: Vec<_> = (0..2u8)
            .map(|i| user.bundle(&[(9, &[b's', i][..])]))
            .collect();
        let big_payload = |i: u8| vec![i; 5_000];
        let big: Vec<_> = (0..3u8)
            .map(|i| user.bundle(&[(9, &big_payload(i)[..])]))
            .collect();
        for phase in [&small, &big] {
            for b in phase.iter() {
                let hash = client.submit(b).await.expect("accepted for forwarding");
                assert_eq!(hash, b.hash());
            }
            while !phase
                .iter()
                .all(|b| seen.iter().any(|(_, h, _)| *h == b.hash()))
            {
                let item = next_based(&mut stream, 60).await;
                if let BasedItem::Batch {
                    l1_block, entries, ..
                } = item
                {
                    seen.extend(
                        entries
                            .into_iter()
                            .map(|e| (l1_block.number, e.bundle_hash, e.payload)),
                    );
                }
            }
        }
        // Each bundle exactly once, in submission order, with its payload.
        let expected: Vec<_> = small
            .iter()
            .chain(&big)
            .map(|b| (b.hash(), b.entries[0].payload.clone()))
            .collect();
        let got: Vec<_> = seen.iter().map(|(_, h, p)| (*h, p.clone())).collect();
        assert_eq!(got, expected);
        // On L1: the forwarder's calldata batch and blob batches.
        let provider = ProviderBuilder::new().connect_http(anvil.endpoint_url());
        let logs = provider
            .get_logs(
                &alloy::rpc::types::Filter::new()
                    .address(deployment.inbox)
                    .from_block(deployment.inbox_block),
            )
            .await
            .expect("logs");
        let calldata = logs
            .iter()
            .filter_map(|l| l.log_decode::<BatonInbox::BatchPosted>().ok())
            .filter(|e| e.inner.data.sender == forwarder.address())
            .count();
        let blobs = logs
            .iter()
            .filter_map(|l| l.log_decode::<BatonInbox::BlobBatchPosted>().ok())
            .filter(|e| e.inner.data.sender == forwarder.address())
            .count();
        assert!(calldata >= 1, "no calldata batch");
        assert!(blobs >= 1, "no blob batch");
        // A node that forwards still refuses a bundle spanning a shared and a based rollup, saying why.
        let mixed = user.bundle(&[(1, b"shared"), (9, b"based")]);
        match client.submit(&mixed).await.unwrap_err() {
            baton_proto::client::ClientError::Status(s) => {
                assert_eq!(s.code(), tonic::Code::FailedPrecondition, "{s:?}");
                assert!(
                    s.message().contains("shared rollup 1 and based rollup 9"),
                    "{}",
                    s.message()
                );
            }
            other => panic!("expected a status, got {other}"),
        }
        // Submitting an already derived bundle again is acknowledged and not posted twice.
        assert_eq!(
            client.submit(&small[0]).await.expect("ack"),
            small[0].hash()
        );
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let again = provider
            .get_logs(
                &alloy::rpc::types::Filter::new()
                    .address(deployment.inbox)
                    .from_block(deployment.inbox_block),
            )
            .await
            .expect("logs");
        assert_eq!(again.len(), logs.len());

        // Durable before the ack: a node killed (SIGKILL) right after acknowledging a bundle it had not posted
        // yet posts it after its restart.
        cluster.kill(0);
        cluster.edit_config(0, |c| c.l1.as_mut().expect("l1").forward.flush_ms = 600_000);
        cluster.start_node(0);
        cluster.wait_height(0, 1, Duration::from_secs(60)).await;
        let mut client = cluster.client(0).await;
        let late = user.bundle(&[(9, b"acknowledged, then the node died")]);
        assert_eq!(client.submit(&late).await.expect("ack"), late.hash());
        cluster.kill(0);
        cluster.edit_config(0, |c| c.l1.as_mut().expect("l1").forward.flush_ms = 200);
        cluster.start_node(0);
        cluster.wait_height(0, 1, Duration::from_secs(60)).await;
        let mut client = cluster.client(0).await;
        let mut stream = client.stream_based(9, 1).await.expect("stream");
        loop {
            let item = next_based(&mut stream, 60).await;
            if let BasedItem::Batch { entries, .. } = item {
                if entries.iter().any(|e| e.bundle_hash == late.hash()) {
                    break;
                }
            }
        }
    });
}

/// The forwarder pays L1 fees for whoever submits: one sender cannot take its whole queue.
#[test]
fn one_sender_cannot_take_the_whole_forwarding_queue() {
    let _guard = serial();
    run(Duration::from_secs(180), async {
        let anvil = local_l1();
        let (mut cluster, _) = based_cluster(&anvil).await;
        // Nothing is posted during the test: the queue only fills.
        start_forwarder(&mut cluster, &anvil, |f| f.flush_ms = 600_000).await;
        let mut client = cluster.client(0).await;
        let mut greedy = common::User::new();
        let mut accepted = 0;
        let refusal = loop {
            let b = greedy.bundle(&[(9, &[7u8; 512][..])]);
            match client.submit(&b).await {
                Ok(_) => accepted += 1,
                Err(baton_proto::client::ClientError::Status(s)) => break s,
                Err(e) => panic!("{e}"),
            }
            assert!(
                accepted < 200,
                "one sender had {accepted} bundles queued for forwarding at the node's expense"
            );
        };
        assert_eq!(accepted, 64, "the default per-sender share");
        assert_eq!(
            refusal.code(),
            tonic::Code::ResourceExhausted,
            "{refusal:?}"
        );
        assert!(
            refusal
                .message()
                .contains("l1.forward.max_pending_per_sender"),
            "{refusal:?}"
        );
        // Counted by reason, as ingest's refusals are.
        let m = scrape(cluster.net.nodes[0].metrics_addr).await;
        assert!(
            m.lines()
                .any(|l| l == "baton_mempool_rejected_total{reason=\"forward_limit\"} 1"),
            "the forwarder's refusal is counted: {}",
            m.lines()
                .filter(|l| l.starts_with("baton_mempool_rejected_total"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        // Another sender is still served.
        let other = common::User::new().bundle(&[(9, b"another sender")]);
        client
            .submit(&other)
            .await
            .expect("another sender is served");
    });
}

/// The forwarder spends at most its hourly budget: once the fees of mined batches reach it, nothing more is
/// posted and submissions are refused, saying why; what was acknowledged waits for the budget.
#[test]
fn the_forwarder_stops_at_its_hourly_fee_budget() {
    use alloy::providers::Provider;
    use baton_l1_inclusion::contracts::BatonInbox;
    let _guard = serial();
    run(Duration::from_secs(180), async {
        let anvil = local_l1();
        let (mut cluster, deployment) = based_cluster(&anvil).await;
        // One batch per bundle, and a budget that any one transaction exceeds.
        let forwarder = start_forwarder(&mut cluster, &anvil, |f| {
            f.flush_ms = 200;
            f.max_batch_bytes = 1024;
            f.max_spend_gwei_per_hour = 1;
        })
        .await;
        let mut client = cluster.client(0).await;
        let mut user = common::User::new();
        for _ in 0..5 {
            client
                .submit(&user.bundle(&[(9, &[1u8; 900][..])]))
                .await
                .expect("accepted before any fee was paid");
        }
        let provider = ProviderBuilder::new().connect_http(anvil.endpoint_url());
        let posted = || async {
            provider
                .get_logs(
                    &alloy::rpc::types::Filter::new()
                        .address(deployment.inbox)
                        .from_block(deployment.inbox_block),
                )
                .await
                .expect("logs")
                .iter()
                .filter_map(|l| l.log_decode::<BatonInbox::BatchPosted>().ok())
                .filter(|e| e.inner.data.sender == forwarder.address())
                .count()
        };
        // The first batch goes out; its fee spends the budget; then submissions are refused.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let refusal = loop {
            match client
                .submit(&user.bundle(&[(9, b"after the budget")]))
                .await
            {
                Err(baton_proto::client::ClientError::Status(s)) => break s,
                Err(e) => panic!("{e}"),
                Ok(_) => {}
            }
            assert!(tokio::time::Instant::now() < deadline, "never refused");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert_eq!(
            refusal.code(),
            tonic::Code::ResourceExhausted,
            "{refusal:?}"
        );
        assert!(
            refusal
                .message()
                .contains("l1.forward.max_spend_gwei_per_hour"),
            "{refusal:?}"
        );
        let first = posted().await;
        assert!(first >= 1, "a batch was posted before the budget ran out");
        // Nothing more is posted though bundles wait.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(posted().await, first, "posted past the budget");
        let m = scrape(cluster.net.nodes[0].metrics_addr).await;
        assert_eq!(value(&m, "baton_l1_forward_budget_gwei"), Some(1.0), "{m}");
        assert!(
            value(&m, "baton_l1_forward_spend_last_hour_gwei").unwrap_or(0.0) >= 1.0,
            "{m}"
        );
    });
}
