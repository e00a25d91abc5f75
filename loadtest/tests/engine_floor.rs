//! The engine floor runs: four bare Malachite validators (`baton engine-floor`) started by the harness decide
//! heights, and the report carries each process's CPU and the CPU per height.

mod common;

use std::time::Duration;

#[test]
fn engine_floor_decides_and_reports_cpu_per_height() {
    let out = tempfile::tempdir().expect("tempdir");
    common::run_harness(
        &[
            "--engine-only",
            "--devnet",
            "4",
            "--warmup",
            "3",
            "--duration",
            "3",
            "--floor-value-bytes",
            "4096",
        ],
        out.path(),
        Duration::from_secs(120),
    );
    let report = common::read_report(&out.path().join("engine-floor.json"));
    let hps = report["heights_per_sec"].as_f64().expect("heights_per_sec");
    assert!(hps >= 1.0, "the floor decided {hps} heights/s");
    assert!(report["cpu_ms_per_height_per_node"].as_f64().expect("cpu") > 0.0);
    let procs = report["usage"]["processes"].as_array().expect("processes");
    assert_eq!(procs.len(), 4, "one entry per validator process");
    for p in procs {
        assert!(
            p["cpu_seconds"].as_f64().unwrap_or(0.0) > 0.0,
            "{} used no CPU",
            p["name"]
        );
    }
    // The validators are gone once the harness exits.
    let floors = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&*out.path().to_string_lossy()))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(floors, 0, "engine-floor processes left running");
}
