//! The run's report (what a step found: rates, latencies, CPU and writes, refusals, the checker's findings) and how
//! it is written: JSON, a printed summary, and SVG plots (throughput and latency over time, latency CDF).

use std::path::Path;

use eyre::{eyre, Result};
use plotters::prelude::*;

use std::collections::BTreeMap;

use baton_proto::check::CheckReport;
use hdrhistogram::Histogram;

use crate::plan::LoadConfig;
use crate::procstat::Usage;

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1e3;
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1e3,
        }
    }
}

/// One second of the run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Second {
    pub t: u64,
    pub offered: u64,
    pub acked: u64,
    pub rejected: u64,
    pub delivered: u64,
    /// Entries of the bundles delivered in this second.
    pub delivered_entries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Where a bundle's time went, split at its acknowledgement and at the moment its block was built (the header's
/// timestamp, the proposer's clock; every process of a devnet shares this box's clock).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Stages {
    /// Scheduled send -> acknowledged (the entry node's checks, its admission and the fsync before the ack).
    pub ack: Percentiles,
    /// Scheduled send -> its block built by the proposer (the above, the wait in the mempools, dissemination to
    /// the proposer and the wait for the next proposal).
    pub to_block: Percentiles,
    /// Block built -> last entry seen in a rollup stream (the proposal's rounds, the decision's commit, the stream).
    pub block_to_delivered: Percentiles,
}

/// What a run found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub config: LoadConfig,
    pub network_id: u64,
    pub rollups: Vec<u64>,
    pub offered: u64,
    pub acked: u64,
    /// Final refusals, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Temporary refusals (the node shedding load, a full mempool) that the harness retried after the node's retry
    /// hint, as a client should: a sender's later nonces cannot be included until the refused one is.
    pub retried: BTreeMap<String, u64>,
    /// Bundles a sender held back, when they fell due, because one of its earlier bundles was waiting to be sent
    /// again: a wallet or a rollup's batcher does not run further ahead of a nonce the node refused. They go out
    /// once the refused one is answered for good, and their latency still counts from when they fell due.
    pub held: u64,
    pub delivered: u64,
    /// Acknowledged, never delivered within the drain time.
    pub lost: u64,
    /// Bundles with an entry delivered more than once.
    pub duplicated: u64,
    /// Bundles whose entries arrived at more than one height (atomicity broken).
    pub split: u64,
    /// Entries in the streams that this run did not submit.
    pub unknown_entries: u64,
    /// What the run checker found on every endpoint's chain.
    pub check: CheckSummary,
    /// Whether every acknowledged bundle was delivered exactly once, at one height, and the checker found
    /// nothing wrong on any node.
    pub complete: bool,
    /// Rates over the steady part of the run (after the ramp, until the load stopped).
    pub offered_per_sec: f64,
    pub acked_per_sec: f64,
    pub delivered_per_sec: f64,
    /// Entries delivered per second over the steady part (bundles times their entries).
    pub delivered_entries_per_sec: f64,
    /// Payload bytes delivered per second over the steady part.
    pub delivered_payload_bytes_per_sec: f64,
    /// Heights decided per second over the steady part (read from the first endpoint's status).
    pub heights_per_sec: f64,
    /// Scheduled send -> acknowledged.
    pub ack_latency: Percentiles,
    /// Scheduled send -> last entry seen in a rollup stream. Counted from the instant the bundle was due, not from
    /// when the harness got round to sending it, so a stall of the sender shows here (no coordinated omission).
    pub latency: Percentiles,
    /// The same, for the bundles admitted at their first send (never refused for now, nor held back behind a
    /// refused one): what a client whose bundle the node took at once waits, while the others are shed. Equal to `latency` when nothing was
    /// refused.
    pub latency_first_try: Percentiles,
    /// Where the bundles admitted at their first send spent that time.
    pub first_try_stages: Stages,
    /// Latency CDF points (ms, fraction), for plotting.
    pub latency_cdf: Vec<(f64, f64)>,
    /// How far the generator fell behind its schedule at worst (ms): if large, the harness, not the network,
    /// limited the offered rate.
    pub generator_max_lag_ms: f64,
    /// Seconds spent building and signing the step's bundles before its timed window.
    pub prepare_secs: f64,
    /// CPU and storage writes of every watched process and the whole machine over the steady part.
    pub usage: Usage,
    pub timeline: Vec<Second>,
    /// Heights seen in the first rollup's stream during the run.
    pub heights_seen: u64,
    /// Per node, the storage writes and heights its own histograms counted as slow over the steady part
    /// ([`crate::nodemetrics`]); nodes whose metrics could not be read are left out.
    pub node_stalls: BTreeMap<String, crate::nodemetrics::Stalls>,
    /// Of the heights seen, those decided in a round above 0 (a proposer that did not propose in time).
    pub heights_late_round: u64,
    /// Heights whose block came more than [`SLOW_HEIGHT_MS`] after its parent's (by the blocks' timestamps) or
    /// was built in a round above 0, so that a stall in the timeline can be matched to a failed round or to a slow
    /// height in round 0. At most [`SLOW_HEIGHTS_KEPT`], the first ones.
    pub slow_heights: Vec<SlowHeight>,
}

/// A block timestamp gap at or above which a height is listed in [`Report::slow_heights`].
pub const SLOW_HEIGHT_MS: u64 = 150;
/// How many slow heights a report lists.
pub const SLOW_HEIGHTS_KEPT: usize = 500;

/// One slow height: when the harness saw it and what its header says.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SlowHeight {
    pub height: u64,
    /// Seconds since the window opened when the harness saw the block (the timeline's clock).
    pub seen_at: f64,
    /// This block's timestamp minus its parent's.
    pub gap_ms: u64,
    /// The round the block was built for.
    pub round: u32,
    pub proposer: String,
    pub bundles: u32,
}

/// The run checker's findings (counts, and the first of each kind).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CheckSummary {
    pub nodes: usize,
    pub heights_compared: u64,
    pub forks: usize,
    pub broken_links: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unknown: usize,
    pub split: usize,
    pub ok: bool,
    /// One line with the counts and the first findings.
    pub summary: String,
}

impl From<&CheckReport> for CheckSummary {
    fn from(r: &CheckReport) -> Self {
        CheckSummary {
            nodes: r.nodes,
            heights_compared: r.heights_compared,
            forks: r.forks.len(),
            broken_links: r.broken_links.len(),
            lost: r.lost.len(),
            duplicated: r.duplicated.len(),
            unknown: r.unknown.len(),
            split: r.split.len(),
            ok: r.ok(),
            summary: r.to_string(),
        }
    }
}

/// Writes `report.json`, `throughput.svg`, `latency.svg` and `latency_cdf.svg` into `dir`.
pub fn write(report: &Report, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(report)?)?;
    let secs: Vec<f64> = report.timeline.iter().map(|s| s.t as f64).collect();
    let xmax = secs.last().copied().unwrap_or(1.0) + 1.0;
    let series = |f: &dyn Fn(&Second) -> f64| -> Vec<(f64, f64)> {
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
        let st = &r.first_try_stages;
        s.push_str(&format!(
            "    acknowledged p50 {:.1} / p99 {:.1} ms, block built p50 {:.1} / p99 {:.1} ms, block -> delivered p50 {:.1} / p99 {:.1} ms\n",
            st.ack.p50, st.ack.p99, st.to_block.p50, st.to_block.p99, st.block_to_delivered.p50, st.block_to_delivered.p99
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
        r.slow_heights.iter().filter(|h| h.gap_ms >= SLOW_HEIGHT_MS).count(),
        SLOW_HEIGHT_MS,
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
