//! The CI-sized load run: a 4-validator devnet, a few seconds of low-rate signed load with cross-rollup bundles,
//! and the harness's own completeness check (every acknowledged bundle delivered exactly once, at one height),
//! then the run checker over all four nodes' chains (no fork, nothing lost, duplicated or split).

mod common;

use std::time::Duration;

#[test]
fn small_load_run_is_complete() {
    let out = tempfile::tempdir().expect("tempdir");
    common::run_harness(
        &[
            "--devnet",
            "4",
            "--rate",
            "200",
            "--ramp",
            "1",
            "--duration",
            "5",
            "--cross",
            "0.3",
            "--drain",
            "30",
            "--require-complete",
        ],
        out.path(),
        Duration::from_secs(180),
    );
    let report = common::read_report(&out.path().join("report.json"));
    assert_eq!(report["complete"], true);
    // The checker read all four nodes' chains and found them identical and complete.
    assert_eq!(report["check"]["nodes"], 4);
    assert_eq!(
        report["check"]["ok"], true,
        "{}",
        report["check"]["summary"]
    );
    assert!(report["check"]["heights_compared"].as_u64().unwrap_or(0) >= 5);
    let acked = report["acked"].as_u64().expect("acked");
    assert!(
        acked >= 500,
        "acknowledged only {acked} of about 900 offered"
    );
    assert_eq!(
        report["delivered"].as_u64(),
        Some(acked),
        "every acknowledged bundle delivered"
    );
    assert_eq!(report["duplicated"].as_u64(), Some(0));
    assert_eq!(report["split"].as_u64(), Some(0));
    assert!(report["latency"]["p99"].as_f64().expect("p99") > 0.0);
    // What the processes used over the steady part: the four validators and the harness, each read from /proc.
    let procs = report["usage"]["processes"].as_array().expect("processes");
    let mut names: Vec<&str> = procs.iter().filter_map(|p| p["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["harness", "node0", "node1", "node2", "node3"]);
    for p in procs.iter().filter(|p| p["name"] != "harness") {
        assert!(
            p["cpu_seconds"].as_f64().expect("cpu") > 0.0,
            "{} used no CPU under load",
            p["name"]
        );
    }
    assert!(report["usage"]["box_cpu_percent"].as_f64().expect("box") > 0.0);
    assert!(report["heights_per_sec"].as_f64().expect("heights") > 0.0);
    for plot in ["throughput.svg", "latency.svg", "latency_cdf.svg"] {
        let svg = std::fs::read_to_string(out.path().join(plot)).expect("plot");
        assert!(
            svg.contains("<svg") && svg.contains("polyline"),
            "{plot} has no line"
        );
    }
}
