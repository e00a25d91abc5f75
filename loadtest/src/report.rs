//! The run's report: JSON, a printed summary, and SVG plots (throughput and latency over time, latency CDF).

use std::path::Path;

use eyre::{eyre, Result};
use plotters::prelude::*;

use crate::run::Report;

/// Writes `report.json`, `throughput.svg`, `latency.svg` and `latency_cdf.svg` into `dir`.
pub fn write(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    let secs: Vec<f64> = report.timeline.iter().map(|s| s.t as f64).collect();
    let xmax = secs.last().copied().unwrap_or(1.0) + 1.0;
    let series = |f: &dyn Fn(&crate::run::Second) -> f64| -> Vec<(f64, f64)> {
        report.timeline.iter().map(|s| (s.t as f64, f(s))).collect()
    };
    lines(
        &dir.join("throughput.svg"),
        "throughput",
        "seconds",
        "bundles per second",
        xmax,
        &[
            ("offered", series(&|s| s.offered as f64), BLUE),
            ("acknowledged", series(&|s| s.acked as f64), GREEN),
            ("delivered", series(&|s| s.delivered as f64), RED),
        ],
    )?;
    lines(
        &dir.join("latency.svg"),
        "submit -> delivered in stream",
        "seconds",
        "milliseconds",
        xmax,
        &[
            ("p50", series(&|s| s.p50_ms), BLUE),
            ("p99", series(&|s| s.p99_ms), RED),
        ],
    )?;
    let cdf: Vec<(f64, f64)> = report.latency_cdf.clone();
    let cmax = cdf.last().map_or(1.0, |p| p.0 * 1.05).max(1.0);
    lines(
        &dir.join("latency_cdf.svg"),
        "latency CDF",
        "milliseconds",
        "fraction of bundles",
        cmax,
        &[("submit -> delivered", cdf, BLUE)],
    )?;
    Ok(())
}

/// A named line of (x, y) points.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn lines(
    path: &Path,
    title: &str,
    xdesc: &str,
    ydesc: &str,
    xmax: f64,
    series: &[Series<'_>],
) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| eyre!("plot {}: {e}", path.display());
    let ymax = series
        .iter()
        .flat_map(|(_, pts, _)| pts.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(xdesc)
        .y_desc(ydesc)
        .draw()
        .map_err(|e| err(&e))?;
    for (name, pts, color) in series {
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A human summary of a report.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "offered {} ({:.0}/s steady), acknowledged {} ({:.0}/s), delivered {} ({:.0}/s)\n",
        r.offered, r.offered_per_sec, r.acked, r.acked_per_sec, r.delivered, r.delivered_per_sec
    ));
    s.push_str(&format!(
        "latency submit -> delivered: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms\n",
        r.latency.p50, r.latency.p90, r.latency.p99, r.latency.p999, r.latency.max
    ));
    if r.retried.values().sum::<u64>() > 0 {
        s.push_str(&format!(
            "  of bundles admitted at their first send: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            r.latency_first_try.p50, r.latency_first_try.p99, r.latency_first_try.max
        ));
    }
    s.push_str(&format!(
        "ack latency: p50 {:.1} ms, p99 {:.1} ms; generator lag at worst {:.1} ms\n",
        r.ack_latency.p50, r.ack_latency.p99, r.generator_max_lag_ms
    ));
    s.push_str(&format!(
        "completeness: lost {}, duplicated {}, split across heights {}, unknown entries {} -> {}\n",
        r.lost,
        r.duplicated,
        r.split,
        r.unknown_entries,
        if r.complete { "COMPLETE" } else { "INCOMPLETE" }
    ));
    s.push_str(&format!(
        "steady part: {:.0} entries/s ({:.1} MB/s of payload), {:.1} heights/s, whole machine {:.1}% busy; bundles \
         prepared in {:.1} s before the window\n",
        r.delivered_entries_per_sec,
        r.delivered_payload_bytes_per_sec / 1e6,
        r.heights_per_sec,
        r.usage.box_cpu_percent,
        r.prepare_secs
    ));
    for p in &r.usage.processes {
        s.push_str(&format!(
            "  {:<8} {:>5.1}% of a core, {:>7.2} MB/s written\n",
            p.name,
            p.cpu_percent_of_core,
            p.write_bytes as f64 / r.usage.window_secs.max(1e-9) / 1e6
        ));
    }
    s.push_str(&format!(
        "heights seen {}, {} in a round above 0; {} with a block {} ms or more after its parent's{}\n",
        r.heights_seen,
        r.heights_late_round,
        r.slow_heights.iter().filter(|h| h.gap_ms >= crate::run::SLOW_HEIGHT_MS).count(),
        crate::run::SLOW_HEIGHT_MS,
        if r.slow_heights.is_empty() { String::new() } else {
            let worst = r.slow_heights.iter().max_by_key(|h| h.gap_ms).expect("not empty");
            format!(" (longest: height {} at {:.1} s, {} ms, round {}, proposer {})", worst.height, worst.seen_at, worst.gap_ms, worst.round, worst.proposer)
        }
    ));
    for (node, st) in r.node_stalls.iter().filter(|(_, st)| !st.is_empty()) {
        let writes: Vec<String> = st
            .slow_writes
            .iter()
            .map(|(op, n)| format!("{n} {op}"))
            .collect();
        s.push_str(&format!(
            "  {node}: storage writes over {} s: {}; heights over {} s: {}\n",
            crate::nodemetrics::SLOW_WRITE_LE,
            if writes.is_empty() {
                "none".into()
            } else {
                writes.join(", ")
            },
            crate::nodemetrics::SLOW_HEIGHT_LE,
            st.slow_heights
        ));
    }
    for (why, n) in &r.retried {
        s.push_str(&format!("retried {n}: {why}\n"));
    }
    if r.held > 0 {
        s.push_str(&format!(
            "held back behind their sender's refused bundle: {}\n",
            r.held
        ));
    }
    if r.rejected.is_empty() {
        s.push_str("rejections: none\n");
    } else {
        for (why, n) in &r.rejected {
            s.push_str(&format!("rejected {n}: {why}\n"));
        }
    }
    s
}
