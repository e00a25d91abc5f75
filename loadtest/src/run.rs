//! The load run: open-loop signed submissions over `SubmitBundles` streams, every rollup's `StreamBatches`
//! followed, each bundle timed from submission to the moment its last entry shows up in a stream.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_proto::check::{check, RunHistory, Submitted};
use baton_proto::client::BatonClient;
use baton_proto::pb;
use eyre::{bail, Result, WrapErr};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::plan::{self, LoadConfig};
use crate::procstat::{self, Usage, Watched};
use crate::report::{CheckSummary, Percentiles, Report, Second, Stages};
use crate::tracker::{lock, Answered, HeightMark, Tracker};

/// Each watched node's stall counts now, by name (nodes whose metrics cannot be read are left out).
async fn read_stalls(watched: &[Watched]) -> BTreeMap<String, crate::nodemetrics::Stalls> {
    let mut out = BTreeMap::new();
    for w in watched {
        if let Some(addr) = &w.metrics {
            if let Ok(s) = crate::nodemetrics::read(addr).await {
                out.insert(w.name.clone(), s);
            }
        }
    }
    out
}

/// Runs the load and returns the report. `progress` is called about once a second with a one-line summary.
pub async fn run(
    cfg: LoadConfig,
    progress: impl Fn(&str) + Send + Sync + 'static,
) -> Result<Report> {
    if cfg.endpoints.is_empty() {
        bail!("no endpoints");
    }
    let mut first = BatonClient::connect(cfg.endpoints[0].clone())
        .await
        .wrap_err("connect to the first endpoint")?;
    let registry = first.list_rollups().await?;
    let rollups: Vec<u64> = registry
        .rollups
        .iter()
        .map(|r| r.id)
        .take(cfg.rollups.max(1))
        .collect();
    if rollups.is_empty() {
        bail!("the network registers no rollups");
    }
    let start_height = first.status().await?.latest_height;
    let expiry = start_height + cfg.expiry_heights;
    let tracker = Arc::new(Mutex::new(Tracker::new(cfg.shape.seed)));

    // Follow every rollup from the next height, spread over the endpoints.
    let mut subscribers = Vec::new();
    for (i, rollup) in rollups.iter().enumerate() {
        let url = cfg.endpoints[i % cfg.endpoints.len()].clone();
        let mut c = BatonClient::connect(url).await?;
        let mut stream = c.stream_batches(*rollup, start_height + 1).await?;
        let tracker = tracker.clone();
        subscribers.push(tokio::spawn(async move {
            while let Ok(Some(batch)) = stream.next().await {
                let mut t = lock(&tracker);
                if i == 0 {
                    t.height_seen(HeightMark::of(&batch));
                }
                for e in &batch.entries {
                    t.entry(
                        batch.header.height,
                        batch.header.timestamp_ms,
                        e.bundle_hash,
                    );
                }
            }
        }));
    }

    // Every bundle of the step, signed and encoded before the timed window opens.
    let prepare_started = Instant::now();
    let shape = cfg.shape.clone();
    let (rollups_for_plan, network_id) = (rollups.clone(), registry.network_id);
    let plans = tokio::task::spawn_blocking(move || {
        plan::build(&shape, &rollups_for_plan, network_id, expiry)
    })
    .await
    .wrap_err("the signing task failed")??;
    let prepare_secs = prepare_started.elapsed().as_secs_f64();
    progress(&format!(
        "prepared {} signed bundles in {prepare_secs:.1} s",
        plans.iter().map(Vec::len).sum::<usize>()
    ));

    // Submitters: one SubmitBundles stream each, opened before the window; the window starts now.
    let mut streams = Vec::new();
    for c in 0..plans.len() {
        let url = cfg.endpoints[c % cfg.endpoints.len()].clone();
        let client = BatonClient::connect(url).await?;
        let (mut rollup_client, _) = client.raw();
        let (tx, rx) = mpsc::channel::<pb::SubmitBundlesRequest>(8192);
        let responses = rollup_client
            .submit_bundles(ReceiverStream::new(rx))
            .await?
            .into_inner();
        streams.push((tx, responses));
    }
    let mut watched = cfg.watched.clone();
    watched.push(procstat::me());
    let started = Instant::now();
    {
        let mut t = lock(&tracker);
        t.start_at(started);
        t.retry = cfg.retry_temporary;
    }
    let mut submitters = Vec::new();
    for (plan, (tx, mut responses)) in plans.into_iter().zip(streams) {
        let t2 = tracker.clone();
        // Refused for now: sent again on the same stream after the node's retry hint.
        let resend = tx.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(r)) = responses.message().await {
                let Answered { again, release } = lock(&t2).answered(r.client_ref, r.result);
                for req in release {
                    if resend.send(req).await.is_err() {
                        return;
                    }
                }
                if let Some((req, wait)) = again {
                    let resend = resend.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        let _ = resend.send(req).await;
                    });
                }
            }
        });
        let tracker = tracker.clone();
        let writer = tokio::spawn(async move {
            let mut plan = plan.into_iter().peekable();
            while let Some(next) = plan.peek() {
                let due = started + Duration::from_secs_f64(next.at);
                tokio::time::sleep_until(due.into()).await;
                // Everything due by now goes out in one go.
                let now = started.elapsed().as_secs_f64();
                while let Some(p) = plan.next_if(|p| p.at <= now) {
                    let now = lock(&tracker).offered(
                        p.client_ref,
                        p.sender,
                        p.hash,
                        p.rollups,
                        p.at,
                        p.request,
                    );
                    if let Some(request) = now {
                        if tx.send(request).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        submitters.push((writer, reader));
    }

    // Progress, until the load ends and the drain completes (or times out).
    let load_end = Duration::from_secs_f64(cfg.shape.duration_secs);
    let drain_end = load_end + Duration::from_secs_f64(cfg.drain_secs);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut writers_done = false;
    // CPU, writes and heights over the steady part: from the end of the ramp to the end of the load.
    let steady_start = Duration::from_secs_f64(cfg.shape.ramp_secs.ceil()).min(load_end);
    let mut at_steady: Option<(procstat::Sample, u64)> = None;
    let mut at_end: Option<(procstat::Sample, u64)> = None;
    let mut stalls_at_steady = BTreeMap::new();
    let mut stalls_at_end = BTreeMap::new();
    let mut status_client = BatonClient::connect(cfg.endpoints[0].clone()).await?;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        if at_steady.is_none() && elapsed >= steady_start {
            let h = status_client.status().await.map_or(0, |s| s.latest_height);
            at_steady = Some((procstat::sample(&watched), h));
            stalls_at_steady = read_stalls(&watched).await;
        }
        if !writers_done && elapsed >= load_end {
            for (w, _) in &mut submitters {
                let _ = w.await;
            }
            writers_done = true;
            let h = status_client.status().await.map_or(0, |s| s.latest_height);
            at_end = Some((procstat::sample(&watched), h));
            stalls_at_end = read_stalls(&watched).await;
        }
        let line = {
            let t = lock(&tracker);
            let p = Percentiles::of(&t.hist);
            format!(
                "t={:>5.1}s offered {} acked {} rejected {} delivered {} outstanding {} | latency p50 {:.1} ms p99 {:.1} ms",
                elapsed.as_secs_f64(),
                t.offered,
                t.acked,
                t.rejected.values().sum::<u64>(),
                t.delivered,
                t.outstanding(),
                p.p50,
                p.p99
            )
        };
        progress(&line);
        if writers_done {
            let t = lock(&tracker);
            let answered = t.refs.is_empty();
            if (answered && t.outstanding() == 0) || elapsed >= drain_end {
                break;
            }
        }
    }
    for s in subscribers {
        s.abort();
    }
    for (_, r) in submitters {
        r.abort();
    }

    // The checker over every endpoint's chain.
    let mut history = RunHistory {
        submitted: lock(&tracker)
            .recs
            .iter()
            .map(|(h, r)| Submitted {
                bundle: *h,
                entries: r.rollups.clone(),
                acked: r.acked(),
            })
            .collect(),
        ..RunHistory::default()
    };
    crate::chain::read_all(&mut history, &cfg.endpoints, &rollups)
        .await
        .wrap_err("reading the chains for the checker")?;
    // Other clients' bundles (not this run's) on the chain are not findings here.
    let mut checked = check(&history);
    checked.unknown.clear();
    progress(&format!("checker: {checked}"));

    let t = lock(&tracker);
    let lost = t.outstanding();
    let steady_from = cfg.shape.ramp_secs.ceil() as usize;
    let steady_to = (cfg.shape.duration_secs.floor() as usize).max(steady_from + 1);
    let window: Vec<&Second> = t
        .seconds
        .iter()
        .map(|(s, _)| s)
        .filter(|s| (s.t as usize) >= steady_from && (s.t as usize) < steady_to)
        .collect();
    let per_sec = |f: &dyn Fn(&Second) -> u64| -> f64 {
        if window.is_empty() {
            0.0
        } else {
            window.iter().map(|s| f(s)).sum::<u64>() as f64 / window.len() as f64
        }
    };
    let (usage, heights_per_sec) = match (&at_steady, &at_end) {
        (Some((a, ha)), Some((b, hb))) => {
            let u = procstat::usage(&watched, a, b);
            let hps = hb.saturating_sub(*ha) as f64 / u.window_secs;
            (u, hps)
        }
        _ => (Usage::default(), 0.0),
    };
    let entries_per_bundle = |s: &Second| s.delivered_entries;
    let mut cdf = Vec::new();
    if !t.hist.is_empty() {
        for q in 0..=200 {
            let q = q as f64 / 200.0;
            cdf.push((t.hist.value_at_quantile(q) as f64 / 1e3, q));
        }
    }
    Ok(Report {
        network_id: registry.network_id,
        rollups,
        offered: t.offered,
        acked: t.acked,
        rejected: t.rejected.clone(),
        retried: t.retried.clone(),
        held: t.held_count,
        delivered: t.delivered,
        lost,
        duplicated: t.duplicated,
        split: t.split,
        unknown_entries: t.unknown_entries,
        complete: lost == 0 && t.duplicated == 0 && t.split == 0 && checked.ok(),
        check: CheckSummary::from(&checked),
        offered_per_sec: per_sec(&|s| s.offered),
        acked_per_sec: per_sec(&|s| s.acked),
        delivered_per_sec: per_sec(&|s| s.delivered),
        delivered_entries_per_sec: per_sec(&entries_per_bundle),
        delivered_payload_bytes_per_sec: per_sec(&entries_per_bundle)
            * cfg.shape.payload_bytes as f64,
        heights_per_sec,
        prepare_secs,
        usage,
        ack_latency: Percentiles::of(&t.ack_hist),
        latency: Percentiles::of(&t.hist),
        latency_first_try: Percentiles::of(&t.first_try_hist),
        first_try_stages: Stages {
            ack: Percentiles::of(&t.first_try_ack_hist),
            to_block: Percentiles::of(&t.first_try_block_hist),
            block_to_delivered: Percentiles::of(&t.first_try_finish_hist),
        },
        latency_cdf: cdf,
        generator_max_lag_ms: t.max_lag_ms,
        timeline: t
            .seconds
            .iter()
            .map(|(s, h)| {
                let p = Percentiles::of(h);
                Second {
                    p50_ms: p.p50,
                    p99_ms: p.p99,
                    ..s.clone()
                }
            })
            .collect(),
        node_stalls: stalls_at_end
            .iter()
            .filter_map(|(name, end): (&String, &crate::nodemetrics::Stalls)| {
                stalls_at_steady
                    .get(name)
                    .map(|start| (name.clone(), end.since(start)))
            })
            .collect(),
        heights_seen: t.heights_seen,
        heights_late_round: t.heights_late_round,
        slow_heights: t.slow_heights.clone(),
        config: cfg,
    })
}
