//! The disk must not fill until the chain halts, on a real node: history older than `storage.retain_heights` is
//! pruned and the node says so when asked for it, and a node short of disk refuses submissions (saying why) while
//! it keeps deciding.

#![allow(clippy::unwrap_used)] // a failing step panics the test, which is what it should do

mod common;

use std::time::Duration;

use baton_proto::pb;
use common::{run, scrape, serial, value, wait_included, Cluster, User};
use tonic::Code;

const T: Duration = Duration::from_secs(60);

#[test]
fn history_beyond_the_retention_is_pruned_and_the_node_says_so() {
    let _g = serial();
    run(Duration::from_secs(180), async {
        let mut cluster = Cluster::prepare(1);
        cluster.edit_config(0, |c| c.storage.retain_heights = 100);
        cluster.start_node(0);
        cluster.wait_height(0, 1, T).await;
        let mut c = cluster.client(0).await;
        let early = User::new().bundle(&[(1, &[9u8; 4096][..])]);
        let hash = c.submit(&early).await.unwrap();
        let (h0, _, _) = wait_included(&mut c, &hash, T).await;
        cluster.wait_height(0, h0 + 250, T).await;
        // The pruner runs once a second.
        let deadline = tokio::time::Instant::now() + T;
        let min = loop {
            let m = scrape(cluster.net.nodes[0].metrics_addr).await;
            let min = value(&m, "baton_storage_history_min_height").unwrap_or(0.0) as u64;
            if min > h0 {
                break min;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing pruned:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let latest = cluster.height(0).await.unwrap();
        assert!(
            min + 99 <= latest,
            "keeps at least the last 100 heights (min {min}, latest {latest})"
        );
        let (mut rollup, _) = c.raw();
        let err = rollup
            .get_batch(pb::GetBatchRequest {
                rollup_id: 1,
                height: h0,
                with_proof: true,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        assert!(
            err.message().contains("pruned") && err.message().contains("storage.retain_heights"),
            "{err:?}"
        );
        let err = rollup
            .stream_batches(pb::StreamBatchesRequest {
                rollup_id: 1,
                from_height: 1,
                with_proof: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        // What is kept is served, with its proof.
        let kept = rollup
            .get_batch(pb::GetBatchRequest {
                rollup_id: 1,
                height: latest,
                with_proof: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(kept.height, latest);
        assert!(kept.proof.is_some(), "served with its proof");
        let mut stream = rollup
            .stream_batches(pb::StreamBatchesRequest {
                rollup_id: 1,
                from_height: latest - 50,
                with_proof: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().height, latest - 50);

        // After a restart the node still knows what it pruned, and goes on.
        cluster.kill(0);
        cluster.start_node(0);
        cluster.wait_height(0, latest + 5, T).await;
        let (mut rollup, _) = cluster.client(0).await.raw();
        let err = rollup
            .get_batch(pb::GetBatchRequest {
                rollup_id: 1,
                height: h0,
                with_proof: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    });
}

#[test]
fn a_node_short_of_disk_refuses_submissions_and_keeps_deciding() {
    let _g = serial();
    run(Duration::from_secs(120), async {
        let mut cluster = Cluster::prepare(1);
        // More free space than any disk has: the node is "short" from the start.
        cluster.edit_config(0, |c| c.storage.min_free_bytes = u64::MAX / 4);
        cluster.start_node(0);
        let h = cluster.wait_height(0, 1, T).await;
        let (mut rollup, _) = cluster.client(0).await.raw();
        let deadline = tokio::time::Instant::now() + T;
        let err = loop {
            // The watcher's first reading comes within a second of start.
            let b = User::new().bundle(&[(1, b"no room")]);
            let req = pb::SubmitBundleRequest {
                bundle: Some((&b).into()),
            };
            match rollup.submit_bundle(req).await {
                Err(e) => break e,
                Ok(_) => {
                    assert!(tokio::time::Instant::now() < deadline, "never refused");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message().contains("disk is nearly full")
                && err.message().contains("storage.min_free_bytes"),
            "{err:?}"
        );
        cluster.wait_height(0, h + 20, T).await;
        let m = scrape(cluster.net.nodes[0].metrics_addr).await;
        assert!(value(&m, "baton_storage_free_bytes").unwrap() > 0.0, "{m}");
        // The write-ahead log is measured every second (its upkeep flushes nothing on a chain this small).
        assert!(value(&m, "baton_storage_wal_bytes").unwrap() > 0.0, "{m}");
        assert!(
            value(&m, "baton_mempool_rejected_total{reason=\"disk_low\"}").unwrap_or(0.0) >= 1.0,
            "{m}"
        );
    });
}
