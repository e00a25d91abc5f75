//! Dissemination reaching the proposer, on real processes.
//!
//! An idle proposer waits up to `max_idle_ms` for something to include. A bundle that enters another validator
//! in the meantime must reach it and be proposed at once, not after the proposer has given up waiting and
//! proposed an empty block (Malachite's host connector passes the application nothing else while it waits for
//! the proposer's value: `node/src/app/tap.rs`).

#![allow(clippy::unwrap_used)] // a failing step panics the test, which is what it should do

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_consensus::params::ConsensusParams;
use common::{run, serial, wait_included, Cluster, User};

/// Long idle heights, so that a bundle that waits for one is told apart from one proposed at once.
const MAX_IDLE_MS: u64 = 4_000;
/// What a bundle may take to reach the proposer on a busy test box and still count as taken at once.
const SLACK_MS: u64 = 400;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_waiting_proposer_takes_a_bundle_that_entered_another_validator() {
    let _guard = serial();
    run(Duration::from_secs(180), async {
        let mut cluster = Cluster::prepare_with(
            4,
            ConsensusParams {
                max_idle_ms: MAX_IDLE_MS,
                ..ConsensusParams::for_tests()
            },
        );
        for i in 0..4 {
            cluster.start_node(i);
        }
        cluster.wait_height(0, 2, Duration::from_secs(60)).await;
        // One bundle through each validator in turn: most enter a validator other than the proposer waiting at
        // that moment.
        for entry in 0..4 {
            let mut client = cluster.client(entry).await;
            let mut user = User::new();
            let bundle = user.bundle(&[(1, b"lone")]);
            let submitted = now_ms();
            let hash = client.submit(&bundle).await.expect("submit");
            let (height, _, _) = wait_included(&mut client, &hash, Duration::from_secs(30)).await;
            // The height before the bundle's was proposed before the bundle came (its proposer had nothing to
            // wait for), or at once after: not at the end of an idle wait that began before it.
            let before = cluster.headers(entry, height - 1, height - 1).await;
            let proposed = before[0].timestamp_ms;
            assert!(
                proposed <= submitted + SLACK_MS,
                "a bundle submitted to node{entry} at {submitted} ms waited for height {} to be proposed empty \
                 at {proposed} ms ({} ms later) and went into height {height}: the waiting proposer did not take \
                 it in",
                height - 1,
                proposed - submitted,
            );
        }
    });
}
