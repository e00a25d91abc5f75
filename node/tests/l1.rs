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

#[test]
fn commitments_land_on_l1_and_match_the_chain() {
    let _guard = serial();
    run(Duration::from_secs(240), async {
        let anvil = LocalL1 {
            block_time_secs: Some(1),
            ..Default::default()
        }
        .spawn()
        .expect("anvil");
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
        let m0 = scrape(cluster.net.nodes[0].metrics_addr);
        assert!(
            value(&m0, "baton_l1_commitment_included_height ").unwrap() >= 10.0,
            "{m0}"
        );
        assert!(value(&m0, "baton_l1_transactions_sent_total ").unwrap() >= 1.0);
        assert_eq!(value(&m0, "baton_l1_poster_ok "), Some(1.0));
        let m1 = scrape(cluster.net.nodes[1].metrics_addr);
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
        cluster
            .net
            .genesis
            .rollups
            .push(baton_consensus::registry::RollupInfo {
                id: 9,
                name: "based-demo".into(),
                mode: baton_consensus::registry::RollupMode::Based,
            });
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
