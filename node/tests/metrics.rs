//! `/metrics` on a live 4-validator network: the scrape passes `promtool check metrics` (Debian package
//! `prometheus`, installed by `scripts/setup.sh`) and the figures move with what the network does.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_proto::pb;
use common::{run, scrape, serial, value, wait_included, Cluster, User};

const T: Duration = Duration::from_secs(120);

#[test]
fn live_scrape_passes_promtool_and_tracks_the_network() {
    let _g = serial();
    let promtool = which_promtool();
    run(Duration::from_secs(240), async {
        let cluster = Cluster::start(4);
        for i in 0..4 {
            cluster.wait_height(i, 3, T).await;
        }
        let mut c = cluster.client(0).await;
        let mut user = User::new();
        let mut last = None;
        for i in 0..5u8 {
            last = Some(
                c.submit(&user.bundle(&[(1, &[i; 64])]))
                    .await
                    .expect("submit"),
            );
        }
        wait_included(&mut c, &last.expect("hash"), T).await;
        // One refused submission (bad signature) for the error and rejection counters.
        let mut forged = user.bundle(&[(1, b"x")]);
        forged.entries[0].payload = b"y".to_vec();
        let (mut raw, _) = c.raw();
        let err = raw
            .submit_bundle(pb::SubmitBundleRequest {
                bundle: Some((&forged).into()),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        // Peers are polled once a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let text = scrape(cluster.net.nodes[0].metrics_addr).await;
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run promtool");
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("feed promtool");
        let out = check.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        assert!(value(&text, "baton_consensus_height ").unwrap_or(0.0) >= 3.0);
        assert!(value(&text, "baton_consensus_decided_bundles_total ").unwrap_or(0.0) >= 5.0);
        assert!(value(&text, "baton_consensus_rounds_per_height_count ").unwrap_or(0.0) >= 3.0);
        assert_eq!(value(&text, "baton_mempool_admitted_total "), Some(5.0));
        assert_eq!(
            value(
                &text,
                "baton_mempool_rejected_total{reason=\"bad_signature\"} "
            ),
            Some(1.0)
        );
        assert!(
            value(
                &text,
                "baton_grpc_requests_total{method=\"RollupService/SubmitBundle\"} "
            )
            .unwrap_or(0.0)
                >= 6.0
        );
        assert_eq!(
            value(
                &text,
                "baton_grpc_errors_total{method=\"RollupService/SubmitBundle\",code=\"INVALID_ARGUMENT\"} "
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "baton_p2p_peers "), Some(3.0));
        assert!(
            value(
                &text,
                "baton_storage_write_duration_seconds_count{op=\"commit\"} "
            )
            .unwrap_or(0.0)
                >= 3.0
        );
        assert!(
            value(&text, "baton_p2p_gossip_bundles_total{direction=\"out\"} ").unwrap_or(0.0)
                >= 5.0
        );
        assert!(
            text.contains("malachitebft_"),
            "the engine's metrics are served too"
        );
        // Another node received the bundles by dissemination.
        let other = scrape(cluster.net.nodes[1].metrics_addr).await;
        assert!(
            value(&other, "baton_p2p_gossip_bundles_total{direction=\"in\"} ").unwrap_or(0.0)
                >= 5.0
        );
    });
}

fn which_promtool() -> String {
    let found = Command::new("sh")
        .args(["-c", "command -v promtool"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    found.unwrap_or_else(|| {
        panic!("promtool is missing: run ./scripts/setup.sh (it installs the Debian package `prometheus`)")
    })
}
