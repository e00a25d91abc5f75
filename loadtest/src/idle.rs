//! An idle network: what it costs with nothing to order (CPU of every process and of the machine, heights per
//! second), and how fast a lone bundle goes through after a quiet spell (submit -> delivered in its rollup's
//! stream, the bundle signed before the clock starts).

use std::time::{Duration, Instant};

use alloy_signer_local::PrivateKeySigner;
use baton_proto::client::{sign_bundle, BatonClient};
use baton_proto::types::{BundleEntry, UnsignedBundle};
use eyre::{bail, eyre, Result, WrapErr};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::procstat::{self, Usage, Watched};

/// What an idle measurement found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IdleReport {
    /// Over the idle window.
    pub usage: Usage,
    pub heights_per_sec: f64,
    /// The quiet time before each lone bundle (plus up to [`PHASE_SPREAD_SECS`] at random).
    pub quiet_secs: f64,
    /// Submit -> delivered of each lone bundle, in milliseconds.
    pub lone_ms: Vec<f64>,
}

/// A lone bundle's quiet spell is longer by a random part of this, so that bundles land at every point of an idle
/// height (a fixed spell after the previous delivery, which follows a decision, lands at the same point each time:
/// two idle heights at the default `max_idle_ms`).
pub const PHASE_SPREAD_SECS: f64 = 1.0;

/// Watches `watched` (plus the harness) for `idle_secs` with no load, then sends `lone` bundles one at a time,
/// each after `quiet_secs` (and up to [`PHASE_SPREAD_SECS`] more, drawn from `seed`) with nothing sent, to the first
/// endpoint.
pub async fn measure(
    endpoints: &[String],
    watched: &[Watched],
    idle_secs: f64,
    lone: usize,
    quiet_secs: f64,
    seed: u64,
) -> Result<IdleReport> {
    let Some(url) = endpoints.first() else {
        bail!("no endpoints");
    };
    let mut client = BatonClient::connect(url.clone())
        .await
        .wrap_err("connect")?;
    let mut watched = watched.to_vec();
    watched.push(procstat::me());
    let h0 = client.status().await?.latest_height;
    let a = procstat::sample(&watched);
    tokio::time::sleep(Duration::from_secs_f64(idle_secs)).await;
    let b = procstat::sample(&watched);
    let h1 = client.status().await?.latest_height;
    let usage = procstat::usage(&watched, &a, &b);
    let heights_per_sec = h1.saturating_sub(h0) as f64 / usage.window_secs;

    let registry = client.list_rollups().await?;
    let rollup = registry
        .rollups
        .first()
        .map(|r| r.id)
        .ok_or_else(|| eyre!("the network registers no rollups"))?;
    let key = PrivateKeySigner::random();
    let mut lone_ms = Vec::with_capacity(lone);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stream = client.stream_batches(rollup, h1 + 1).await?;
    for nonce in 0..lone as u64 {
        let spread = rng.gen_range(0.0..PHASE_SPREAD_SECS);
        tokio::time::sleep(Duration::from_secs_f64(quiet_secs + spread)).await;
        let height = client.status().await?.latest_height;
        let mut payload = vec![0u8; 512];
        rng.fill_bytes(&mut payload);
        let bundle = sign_bundle(
            &key,
            UnsignedBundle {
                network_id: registry.network_id,
                sender: key.address(),
                nonce,
                expiry_height: height + 10_000,
                entries: vec![BundleEntry {
                    rollup_id: rollup,
                    payload,
                }],
            },
        )?;
        let hash = bundle.hash();
        let sent = Instant::now();
        client.submit(&bundle).await?;
        let deadline = sent + Duration::from_secs(30);
        'wait: loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let batch = tokio::time::timeout(left, stream.next())
                .await
                .map_err(|_| eyre!("lone bundle {hash} not delivered within 30 s"))??
                .ok_or_else(|| eyre!("the batch stream ended"))?;
            if batch.entries.iter().any(|e| e.bundle_hash == hash) {
                lone_ms.push(sent.elapsed().as_secs_f64() * 1e3);
                break 'wait;
            }
        }
    }
    Ok(IdleReport {
        usage,
        heights_per_sec,
        quiet_secs,
        lone_ms,
    })
}

/// A few lines for the terminal.
pub fn summary(r: &IdleReport) -> String {
    let mut s = format!(
        "idle for {:.0} s: {:.2} heights/s, whole machine {:.1}% busy\n",
        r.usage.window_secs, r.heights_per_sec, r.usage.box_cpu_percent
    );
    for p in &r.usage.processes {
        s.push_str(&format!(
            "  {:<8} pid {:<7} {:>6.2} CPU-s  {:>5.1}% of a core  {:>8} KiB written\n",
            p.name,
            p.pid,
            p.cpu_seconds,
            p.cpu_percent_of_core,
            p.write_bytes / 1024
        ));
    }
    if !r.lone_ms.is_empty() {
        let v: Vec<String> = r.lone_ms.iter().map(|m| format!("{m:.1}")).collect();
        s.push_str(&format!(
            "lone bundles after {:.0}-{:.0} s of quiet, submit -> delivered (ms): {}\n",
            r.quiet_secs,
            r.quiet_secs + PHASE_SPREAD_SECS,
            v.join(", ")
        ));
    }
    s
}
