//! A node stopped with SIGTERM in the middle of a load drains in order (stop accepting, finish the in-flight
//! fsyncs, stop consensus) and exits by itself; after a restart every bundle it acknowledged is in the chain.

#![allow(clippy::unwrap_used)] // a failing step panics the test, which is what it should do

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_consensus::hash::Hash;
use baton_proto::client::BundleStatus;
use common::{run, serial, Cluster, User};

const T: Duration = Duration::from_secs(60);

#[test]
fn a_node_stopped_mid_load_exits_cleanly_and_loses_no_acknowledged_bundle() {
    let _g = serial();
    run(Duration::from_secs(240), async {
        let mut cluster = Cluster::start(1);
        cluster.wait_height(0, 1, T).await;
        let acked: Arc<Mutex<Vec<Hash>>> = Arc::default();

        // Eight clients submit as fast as they are answered, each with its own sender.
        let mut load = Vec::new();
        for _ in 0..8 {
            let mut c = cluster.client(0).await;
            let acked = acked.clone();
            load.push(tokio::spawn(async move {
                let mut user = User::new();
                loop {
                    let b = user.bundle(&[(1, &[7u8; 512][..])]);
                    match c.submit(&b).await {
                        Ok(h) => acked.lock().unwrap().push(h),
                        // Refused or cut off by the stop: not acknowledged, nothing owed.
                        Err(_) => return,
                    }
                }
            }));
        }
        // Well into the load, SIGTERM.
        let deadline = tokio::time::Instant::now() + T;
        while acked.lock().unwrap().len() < 500 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the load did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let proc = cluster.procs[0].as_mut().unwrap();
        let status = tokio::task::block_in_place(|| proc.terminate(Duration::from_secs(30)));
        let log = cluster.log(0);
        let status = status.unwrap_or_else(|| panic!("the node had to be killed; log:\n{log}"));
        assert!(status.success(), "exit {status}; log:\n{log}");
        // The drain ran in its order.
        let at = |what: &str| {
            log.find(what)
                .unwrap_or_else(|| panic!("no `{what}` in the log:\n{log}"))
        };
        assert!(at("stopped accepting requests") < at("in-flight submissions written"));
        assert!(at("in-flight submissions written") < at("consensus stopped"));
        assert!(at("consensus stopped") < at("node stopped"));
        for l in load {
            let _ = l.await;
        }
        let acked = acked.lock().unwrap().clone();
        assert!(acked.len() >= 500);

        // Restarted, it includes every bundle it acknowledged.
        cluster.procs[0] = None;
        cluster.start_node(0);
        cluster.wait_height(0, 1, T).await;
        let mut c = cluster.client(0).await;
        let deadline = tokio::time::Instant::now() + T;
        let mut pending: Vec<Hash> = acked.clone();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for h in pending {
                match c.bundle_status(&h).await {
                    Ok(BundleStatus::Included { .. }) => {}
                    Ok(BundleStatus::Pending) => still.push(h),
                    other => panic!("an acknowledged bundle {h} is {other:?} after the restart"),
                }
            }
            pending = still;
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} acknowledged bundles not included after the restart",
                pending.len(),
                acked.len()
            );
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        println!(
            "{} bundles acknowledged before SIGTERM, all included after the restart",
            acked.len()
        );
    });
}
