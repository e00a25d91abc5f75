//! `baton-loadtest`: see the library docs.

use std::path::PathBuf;

use clap::Parser;
use eyre::{bail, Result};

use baton_loadtest::devnet::{find_baton, Devnet, DevnetSpec};
use baton_loadtest::plan::LoadConfig;
use baton_loadtest::plan::Shape;
use baton_loadtest::procstat::Watched;
use baton_loadtest::run::run;
use baton_loadtest::{floor, idle, report};

/// Offer load to a Baton network and measure submit -> delivered latency, throughput and completeness.
#[derive(Parser)]
#[command(name = "baton-loadtest", version)]
struct Args {
    /// gRPC endpoints to load (comma-separated), e.g. http://127.0.0.1:50051. Omit to start a devnet.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Start a devnet of this many validators (when no endpoints are given).
    #[arg(long, default_value_t = 4)]
    devnet: usize,
    /// Genesis `block_time_ms` of the devnet this harness starts (default: the genesis default).
    #[arg(long)]
    block_time_ms: Option<u64>,
    /// Genesis `max_idle_ms` of the devnet this harness starts (default: the genesis default).
    #[arg(long)]
    max_idle_ms: Option<u64>,
    /// Pub-sub protocol of the devnet's nodes (`gossipsub` or `broadcast`; default: the node default).
    #[arg(long)]
    pubsub: Option<String>,
    /// A node config setting for the devnet's validators (`baton devnet --set`, e.g.
    /// `mempool.gossip_flush_ms=20`); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    node_set: Vec<String>,
    /// Validators of the devnet stopped before the load starts and kept down (the last ones).
    #[arg(long, default_value_t = 0)]
    down: usize,
    /// Seconds to wait between starting the devnet (and stopping --down validators) and the first load step,
    /// to measure a steady state rather than the first minutes after a failure.
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    /// Seconds of load at --rate before the measured steps, not reported (after --settle).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// The `baton` binary for --devnet (default: next to this executable).
    #[arg(long)]
    baton_bin: Option<PathBuf>,
    /// Offered bundles per second after the ramp.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds to ramp from 0 to --rate.
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Seconds of load, ramp included.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Payload bytes per entry (random, incompressible).
    #[arg(long, default_value_t = 512)]
    payload: usize,
    /// Entries per bundle (a cross-rollup bundle has at least two).
    #[arg(long, default_value_t = 1)]
    entries: usize,
    /// Seeds the payload bytes and the lone bundles' quiet spells (printed; a run with the same seed sends the same
    /// payloads at the same offsets).
    #[arg(long)]
    seed: Option<u64>,
    /// Measure the network idle instead of loading it: CPU of every process and of the machine, and heights per
    /// second, over this many seconds; then send --lone bundles one at a time after --quiet seconds each (and up to
    /// 1 s more at random, so that they land at every point of an idle height).
    #[arg(long)]
    idle: Option<f64>,
    #[arg(long, default_value_t = 5)]
    lone: usize,
    /// Measure the engine floor instead: --devnet validators of bare Malachite (`baton engine-floor`, no storage,
    /// gRPC or bundles) for --duration seconds after --warmup, proposing --block-time-ms (default 0) after each
    /// decision with --floor-value-bytes of filler; reports heights/s and CPU per height.
    #[arg(long)]
    engine_only: bool,
    #[arg(long, default_value_t = 0)]
    floor_value_bytes: usize,
    #[arg(long, default_value_t = 5.0)]
    quiet: f64,
    /// Do not send bundles refused as temporary (UNAVAILABLE, or a retry hint) again (by default they are, after
    /// the node's retry hint).
    #[arg(long)]
    no_retry: bool,
    /// Rollups to spread load over.
    #[arg(long, default_value_t = 4)]
    rollups: usize,
    /// Fraction of bundles that span two rollups.
    #[arg(long, default_value_t = 0.1)]
    cross: f64,
    /// SubmitBundles streams.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct sender keys.
    #[arg(long, default_value_t = 256)]
    senders: usize,
    /// Seconds to wait after the load for acknowledged bundles to be delivered.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Where the report and plots go.
    #[arg(long, default_value = "loadtest-out")]
    out: PathBuf,
    /// Exit with an error unless every acknowledged bundle was delivered exactly once, atomically.
    #[arg(long)]
    require_complete: bool,
    /// Sweep: after --rate, run again at --rate + k * --sweep-step up to this rate, on the same network, and report
    /// the highest rate sustained (complete, delivered at >= 95% of offered, p99 within --p99-target-ms).
    #[arg(long)]
    sweep_max: Option<f64>,
    #[arg(long, default_value_t = 500.0)]
    sweep_step: f64,
    #[arg(long, default_value_t = 100.0)]
    p99_target_ms: f64,
}

/// One step of a sweep.
#[derive(serde::Serialize)]
struct Step {
    rate: f64,
    delivered_per_sec: f64,
    delivered_entries_per_sec: f64,
    heights_per_sec: f64,
    box_cpu_percent: f64,
    /// CPU-seconds per second (percent of one core) of each watched process, by name.
    cpu_percent_of_core: std::collections::BTreeMap<String, f64>,
    /// Bytes written per second by each watched process.
    write_bytes_per_sec: std::collections::BTreeMap<String, f64>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    complete: bool,
    sustained: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rate <= 0.0 || args.duration <= 0.0 || !(0.0..=1.0).contains(&args.cross) {
        bail!("--rate and --duration must be positive and --cross within 0..=1");
    }
    if args.connections == 0 || args.senders < args.connections {
        bail!("--connections must be at least 1 and --senders at least --connections");
    }
    if args.entries == 0 {
        bail!("--entries must be at least 1");
    }
    let rt = tokio::runtime::Runtime::new()?;
    if args.engine_only {
        let bin = find_baton(args.baton_bin.as_deref())?;
        let spec = floor::FloorSpec {
            validators: args.devnet,
            value_bytes: args.floor_value_bytes,
            block_time_ms: args.block_time_ms.unwrap_or(0),
            pubsub: args.pubsub.clone(),
            warmup_secs: args.warmup,
            secs: args.duration,
        };
        let dir = args.out.join("engine-floor");
        // SIGTERM / Ctrl-C drop the measurement, which stops the validators it started.
        let r = rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = floor::measure(&bin, &spec, &dir) => r,
                _ = term.recv() => Err(eyre::eyre!("stopped by SIGTERM")),
                _ = tokio::signal::ctrl_c() => Err(eyre::eyre!("stopped by Ctrl-C")),
            }
        })?;
        std::fs::create_dir_all(&args.out)?;
        std::fs::write(
            args.out.join("engine-floor.json"),
            serde_json::to_vec_pretty(&r)?,
        )?;
        print!("{}", floor::summary(&r));
        println!("report: {}/engine-floor.json", args.out.display());
        return Ok(());
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    println!("payload seed {seed} (replay with --seed {seed})");
    rt.block_on(async move {
        let mut devnet: Option<Devnet> = None;
        let endpoints = if args.endpoints.is_empty() {
            let bin = find_baton(args.baton_bin.as_deref())?;
            let dir = args.out.join("devnet");
            println!(
                "starting a devnet of {} validators, {} kept down ({})",
                args.devnet,
                args.down,
                bin.display()
            );
            let spec = DevnetSpec {
                validators: args.devnet,
                block_time_ms: args.block_time_ms,
                max_idle_ms: args.max_idle_ms,
                pubsub: args.pubsub.clone(),
                down: args.down,
                settings: args.node_set.clone(),
            };
            let net = Devnet::start(&bin, &spec, &dir).await?;
            if args.settle > 0.0 {
                println!("settling for {} s before the load", args.settle);
                tokio::time::sleep(std::time::Duration::from_secs_f64(args.settle)).await;
            }
            let eps = net.endpoints.clone();
            devnet = Some(net);
            eps
        } else {
            args.endpoints.clone()
        };
        println!("endpoints: {}", endpoints.join(", "));
        let watched: Vec<Watched> = devnet
            .as_ref()
            .map(|d| d.processes.clone())
            .unwrap_or_default();
        if let Some(secs) = args.idle {
            let r = idle::measure(&endpoints, &watched, secs, args.lone, args.quiet, seed).await;
            if let Some(mut d) = devnet.take() {
                d.stop();
            }
            let r = r?;
            std::fs::create_dir_all(&args.out)?;
            std::fs::write(args.out.join("idle.json"), serde_json::to_vec_pretty(&r)?)?;
            print!("{}", idle::summary(&r));
            println!("report: {}/idle.json", args.out.display());
            return Ok(());
        }
        let mut rates = vec![args.rate];
        if let Some(max) = args.sweep_max {
            if args.sweep_step <= 0.0 {
                bail!("--sweep-step must be positive");
            }
            let mut r = args.rate + args.sweep_step;
            while r <= max + 1e-9 {
                rates.push(r);
                r += args.sweep_step;
            }
        }
        // SIGTERM / Ctrl-C stop the run (and the devnet this harness started) instead of orphaning it.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let sweeping = rates.len() > 1;
        let mut steps = Vec::new();
        let mut outcome: Result<()> = Ok(());
        // A warm-up step first (not reported): the network reaches its steady state under load (a stopped
        // validator's proposer bench, for one, grows with the heights decided).
        let warmup = (args.warmup > 0.0).then_some(args.rate);
        for (i, rate) in warmup.into_iter().chain(rates).enumerate() {
            let warming = warmup.is_some() && i == 0;
            let cfg = LoadConfig {
                endpoints: endpoints.clone(),
                shape: Shape {
                    rate,
                    ramp_secs: args.ramp,
                    duration_secs: if warming { args.warmup } else { args.duration },
                    payload_bytes: args.payload,
                    entries: args.entries,
                    cross_fraction: args.cross,
                    connections: args.connections,
                    senders: args.senders,
                    seed,
                },
                rollups: args.rollups,
                drain_secs: args.drain,
                expiry_heights: 100_000,
                watched: watched.clone(),
                retry_temporary: !args.no_retry,
            };
            if warming {
                println!("--- warm-up: {rate} bundles/s for {} s (not reported)", args.warmup);
            } else if sweeping {
                println!("--- {rate} bundles/s");
            }
            let result = tokio::select! {
                r = run(cfg, |line| println!("{line}")) => r,
                _ = term.recv() => Err(eyre::eyre!("stopped by SIGTERM")),
                _ = tokio::signal::ctrl_c() => Err(eyre::eyre!("stopped by Ctrl-C")),
            };
            let rep = match result {
                Ok(r) => r,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            if warming {
                print!("{}", report::summary(&rep));
                continue;
            }
            let dir = if sweeping {
                args.out.join(format!("rate-{rate}"))
            } else {
                args.out.clone()
            };
            report::write(&rep, &dir)?;
            print!("{}", report::summary(&rep));
            println!(
                "report: {}/report.json, plots: throughput.svg latency.svg latency_cdf.svg",
                dir.display()
            );
            let sustained = rep.complete
                && rep.latency.p99 <= args.p99_target_ms
                && rep.delivered_per_sec >= 0.95 * rate;
            steps.push(Step {
                rate,
                delivered_per_sec: rep.delivered_per_sec,
                delivered_entries_per_sec: rep.delivered_entries_per_sec,
                heights_per_sec: rep.heights_per_sec,
                box_cpu_percent: rep.usage.box_cpu_percent,
                cpu_percent_of_core: rep
                    .usage
                    .processes
                    .iter()
                    .map(|p| (p.name.clone(), p.cpu_percent_of_core))
                    .collect(),
                write_bytes_per_sec: rep
                    .usage
                    .processes
                    .iter()
                    .map(|p| (p.name.clone(), p.write_bytes as f64 / rep.usage.window_secs))
                    .collect(),
                p50_ms: rep.latency.p50,
                p99_ms: rep.latency.p99,
                max_ms: rep.latency.max,
                complete: rep.complete,
                sustained,
            });
            if args.require_complete && !rep.complete {
                outcome = Err(eyre::eyre!(
                    "incomplete: {} lost, {} duplicated, {} split in the streams; checker: {}",
                    rep.lost,
                    rep.duplicated,
                    rep.split,
                    rep.check.summary
                ));
                break;
            }
            if sweeping && !sustained {
                break;
            }
        }
        if let Some(mut d) = devnet.take() {
            d.stop();
        }
        if sweeping {
            std::fs::create_dir_all(&args.out)?;
            std::fs::write(
                args.out.join("sweep.json"),
                serde_json::to_vec_pretty(&steps)?,
            )?;
            println!("rate/s    delivered/s  entries/s  heights/s  box CPU%   p50 ms   p99 ms   max ms   complete  sustained");
            for s in &steps {
                println!(
                    "{:>8.0} {:>12.0} {:>10.0} {:>10.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1}   {:<8}  {}",
                    s.rate,
                    s.delivered_per_sec,
                    s.delivered_entries_per_sec,
                    s.heights_per_sec,
                    s.box_cpu_percent,
                    s.p50_ms,
                    s.p99_ms,
                    s.max_ms,
                    s.complete,
                    s.sustained
                );
            }
            match steps.iter().rev().find(|s| s.sustained).map(|s| s.rate) {
                Some(r) => println!(
                    "highest sustained rate with p99 <= {} ms: {r} bundles/s",
                    args.p99_target_ms
                ),
                None => println!(
                    "no rate tried was sustained with p99 <= {} ms",
                    args.p99_target_ms
                ),
            }
        }
        outcome
    })
}
