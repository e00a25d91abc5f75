//! `/metrics` on a live 4-validator network: the scrape passes `promtool check metrics` (Debian package
//! `prometheus`, installed by `scripts/setup.sh`) and the figures move with what the network does.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_proto::pb;
use common::{run, serial, wait_included, Cluster, User};

const T: Duration = Duration::from_secs(120);

fn scrape(addr: std::net::SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// The value of the first sample whose line starts with `prefix` (name and labels).
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

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

        let text = scrape(cluster.net.nodes[0].metrics_addr);
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
        let other = scrape(cluster.net.nodes[1].metrics_addr);
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
