//! The engine floor, measured: one `baton engine-floor` process per validator (Malachite as the nodes run it,
//! with no storage, gRPC or bundles around it), on free loopback ports, watched like a devnet's nodes. Reports
//! heights per second and CPU per height, so Baton's figures can be stated as a ratio to the engine it is built on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eyre::{bail, Result, WrapErr};

use crate::devnet::terminate;
use crate::procstat::{self, Usage, Watched};

/// What floor to run.
#[derive(Clone, Debug)]
pub struct FloorSpec {
    pub validators: usize,
    /// Filler bytes per proposal (`baton engine-floor --value-bytes`).
    pub value_bytes: usize,
    /// Least time from a decision to the next proposal (`--block-time-ms`; 0: at once).
    pub block_time_ms: u64,
    /// `--pubsub` for every validator (None: the default).
    pub pubsub: Option<String>,
    /// Seconds after every validator reported a height, before the window.
    pub warmup_secs: f64,
    /// The measured window.
    pub secs: f64,
}

/// What the floor did over the window.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FloorReport {
    pub validators: usize,
    pub value_bytes: usize,
    pub block_time_ms: u64,
    pub heights_per_sec: f64,
    /// Mean CPU-milliseconds one validator spends per decided height.
    pub cpu_ms_per_height_per_node: f64,
    pub usage: Usage,
}

/// The running validators; killed when dropped.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        terminate(&mut self.0, Duration::from_secs(10));
    }
}

/// Free loopback ports, taken by binding port 0 and released for the children to bind.
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Starts the floor under `dir` (wiped), measures it, stops it.
pub async fn measure(baton: &Path, spec: &FloorSpec, dir: &Path) -> Result<FloorReport> {
    if spec.validators == 0 || spec.secs <= 0.0 {
        bail!("the engine floor needs at least one validator and a positive window");
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    // A port picked free may be taken by another socket before its validator binds it: a start that fails is
    // tried again on fresh ports.
    let mut attempt = 0;
    let (children, heights, watched) = loop {
        attempt += 1;
        match start(baton, spec, dir, attempt).await {
            Ok(started) => break started,
            Err(e) if attempt < 3 => {
                eprintln!("engine floor: {e:#}; starting again on other ports")
            }
            Err(e) => return Err(e),
        }
    };
    tokio::time::sleep(Duration::from_secs_f64(spec.warmup_secs)).await;
    let h0 = quorum_height(&heights);
    let a = procstat::sample(&watched);
    tokio::time::sleep(Duration::from_secs_f64(spec.secs)).await;
    let b = procstat::sample(&watched);
    let h1 = quorum_height(&heights);
    drop(children);
    let usage = procstat::usage(&watched, &a, &b);
    // Each validator prints its height five times a second: the window's edges are off by at most 200 ms.
    let decided = h1.saturating_sub(h0);
    let heights_per_sec = decided as f64 / usage.window_secs;
    let cpu: f64 = usage.processes.iter().map(|p| p.cpu_seconds).sum();
    let cpu_ms_per_height_per_node = if decided == 0 {
        0.0
    } else {
        1000.0 * cpu / decided as f64 / spec.validators as f64
    };
    Ok(FloorReport {
        validators: spec.validators,
        value_bytes: spec.value_bytes,
        block_time_ms: spec.block_time_ms,
        heights_per_sec,
        cpu_ms_per_height_per_node,
        usage,
    })
}

/// The height a BFT quorum of the validators (more than two thirds, equal power) has decided: the network's
/// progress, which one validator catching up through value sync does not hold back.
fn quorum_height(heights: &[Arc<AtomicU64>]) -> u64 {
    let mut hs: Vec<u64> = heights.iter().map(|h| h.load(Ordering::Relaxed)).collect();
    hs.sort_unstable();
    let quorum = hs.len() * 2 / 3 + 1;
    hs.get(hs.len().saturating_sub(quorum))
        .copied()
        .unwrap_or(0)
}

type Started = (Processes, Vec<Arc<AtomicU64>>, Vec<Watched>);

/// Starts one process per validator and waits until each has decided a height.
async fn start(baton: &Path, spec: &FloorSpec, dir: &Path, attempt: u32) -> Result<Started> {
    let ports = free_ports(spec.validators)?;
    let ports_arg = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let seed: u64 = rand::random();
    let mut children = Processes(Vec::new());
    let mut heights = Vec::new();
    let mut watched = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        // A fresh write-ahead log: an earlier attempt's was written under other keys.
        let wal = dir.join(format!("floor{i}-wal"));
        if wal.exists() {
            std::fs::remove_dir_all(&wal)?;
        }
        let log = std::fs::File::create(dir.join(format!("floor{i}.{attempt}.log")))?;
        let mut cmd = Command::new(baton);
        cmd.arg("engine-floor")
            .args(["--index", &i.to_string(), "--ports", &ports_arg])
            .args(["--seed", &seed.to_string()])
            .args(["--value-bytes", &spec.value_bytes.to_string()])
            .args(["--block-time-ms", &spec.block_time_ms.to_string()])
            .arg("--dir")
            .arg(dir);
        if let Some(p) = &spec.pubsub {
            cmd.args(["--pubsub", p]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .wrap_err_with(|| format!("starting {} engine-floor", baton.display()))?;
        watched.push(Watched {
            name: format!("floor{i}"),
            pid: child.id(),
            metrics: None,
        });
        let height = Arc::new(AtomicU64::new(0));
        if let Some(out) = child.stdout.take() {
            let h = height.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    if let Some(n) = line.strip_prefix("height ").and_then(|v| v.parse().ok()) {
                        h.store(n, Ordering::Relaxed);
                    }
                }
            });
        }
        heights.push(height);
        children.0.push(child);
        // One at a time, each listening before the next starts: a validator dials the ones before it, which are
        // listening by then (a dial refused at start-up is not retried, and two validators started together can
        // each miss the other).
        let listening = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if listening.elapsed() > Duration::from_secs(10) {
                bail!("validator {i} does not listen on port {port} after 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let started = Instant::now();
    while heights.iter().any(|h| h.load(Ordering::Relaxed) == 0) {
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "the engine floor decided nothing within 30 s (see {}/floor*.log)",
                dir.display()
            );
        }
        for c in &mut children.0 {
            if let Some(status) = c.try_wait()? {
                bail!(
                    "an engine-floor process exited ({status}); see {}/floor*.log",
                    dir.display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((children, heights, watched))
}

/// A few lines for the terminal.
pub fn summary(r: &FloorReport) -> String {
    let mut s = format!(
        "engine floor: {} validators, {} filler bytes per value, block time {} ms: {:.1} heights/s, {:.2} CPU-ms \
         per height per validator, box CPU {:.1}%\n",
        r.validators,
        r.value_bytes,
        r.block_time_ms,
        r.heights_per_sec,
        r.cpu_ms_per_height_per_node,
        r.usage.box_cpu_percent
    );
    for p in &r.usage.processes {
        s.push_str(&format!(
            "  {:<8} {:>6.1}% of a core\n",
            p.name, p.cpu_percent_of_core
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heights(hs: &[u64]) -> Vec<Arc<AtomicU64>> {
        hs.iter().map(|h| Arc::new(AtomicU64::new(*h))).collect()
    }

    #[test]
    fn quorum_height_is_what_more_than_two_thirds_reached() {
        // One of four behind does not hold the network back; two of four do.
        assert_eq!(quorum_height(&heights(&[40, 2, 41, 43])), 40);
        assert_eq!(quorum_height(&heights(&[40, 2, 3, 43])), 3);
        // Three validators need all three; seven need five.
        assert_eq!(quorum_height(&heights(&[9, 7, 8])), 7);
        assert_eq!(quorum_height(&heights(&[1, 2, 3, 4, 5, 6, 7])), 3);
        assert_eq!(quorum_height(&heights(&[12])), 12);
        assert_eq!(quorum_height(&[]), 0);
    }
}
