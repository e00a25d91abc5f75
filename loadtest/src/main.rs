//! `baton-loadtest`: see the library docs.

use std::path::PathBuf;

use clap::Parser;
use eyre::{bail, Result};

use baton_loadtest::devnet::{find_baton, Devnet};
use baton_loadtest::report;
use baton_loadtest::run::{run, LoadConfig};

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
    /// Genesis block time of the devnet this harness starts (default: the genesis default, 50 ms).
    #[arg(long)]
    block_time_ms: Option<u64>,
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
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 512)]
    payload: usize,
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
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rate <= 0.0 || args.duration <= 0.0 || !(0.0..=1.0).contains(&args.cross) {
        bail!("--rate and --duration must be positive and --cross within 0..=1");
    }
    if args.connections == 0 || args.senders < args.connections {
        bail!("--connections must be at least 1 and --senders at least --connections");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let mut devnet = None;
        let endpoints = if args.endpoints.is_empty() {
            let bin = find_baton(args.baton_bin.as_deref())?;
            let dir = args.out.join("devnet");
            println!(
                "starting a devnet of {} validators ({})",
                args.devnet,
                bin.display()
            );
            let net = Devnet::start(&bin, args.devnet, &dir, args.block_time_ms).await?;
            let eps = net.endpoints.clone();
            devnet = Some(net);
            eps
        } else {
            args.endpoints.clone()
        };
        println!("endpoints: {}", endpoints.join(", "));
        let cfg = LoadConfig {
            endpoints,
            rate: args.rate,
            ramp_secs: args.ramp,
            duration_secs: args.duration,
            payload_bytes: args.payload,
            rollups: args.rollups,
            cross_fraction: args.cross,
            connections: args.connections,
            senders: args.senders,
            drain_secs: args.drain,
            expiry_heights: 100_000,
        };
        // SIGTERM / Ctrl-C stop the run (and the devnet this harness started) instead of orphaning it.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let result = tokio::select! {
            r = run(cfg, |line| println!("{line}")) => r,
            _ = term.recv() => Err(eyre::eyre!("stopped by SIGTERM")),
            _ = tokio::signal::ctrl_c() => Err(eyre::eyre!("stopped by Ctrl-C")),
        };
        if let Some(mut d) = devnet.take() {
            d.stop();
        }
        let rep = result?;
        report::write(&rep, &args.out)?;
        print!("{}", report::summary(&rep));
        println!(
            "report: {}/report.json, plots: throughput.svg latency.svg latency_cdf.svg",
            args.out.display()
        );
        if args.require_complete && !rep.complete {
            bail!(
                "incomplete: {} lost, {} duplicated, {} split",
                rep.lost,
                rep.duplicated,
                rep.split
            );
        }
        Ok(())
    })
}
