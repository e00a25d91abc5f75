//! A devnet the harness starts itself: `baton devnet` as a child process, endpoints read from its node configs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eyre::{bail, eyre, Result, WrapErr};

use crate::procstat::{find_by_cmdline, Watched};

/// A running `baton devnet`; stopped (SIGTERM, which stops its validators) when dropped.
pub struct Devnet {
    child: Option<Child>,
    pub endpoints: Vec<String>,
    pub dir: PathBuf,
    /// The running validators' processes (`node0`, ...), for the report's CPU and write figures.
    pub processes: Vec<Watched>,
}

/// Stops child processes: SIGTERM to each (a devnet stops its validators on it), then SIGKILL to those still
/// running after `grace`.
pub fn terminate(children: &mut [Child], grace: Duration) {
    for c in children.iter() {
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    for c in children.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Where the `baton` binary is: `--baton-bin`, else next to this executable (or one folder up, for test
/// executables under `deps/`).
pub fn find_baton(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("baton");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    bail!(
        "cannot find the `baton` binary next to {}; pass --baton-bin",
        exe.display()
    )
}

#[derive(serde::Deserialize)]
struct NodeConfigView {
    grpc: GrpcView,
    /// Absent from the configs of builds without a metrics listener section.
    #[serde(default)]
    metrics: Option<GrpcView>,
}

#[derive(serde::Deserialize)]
struct GrpcView {
    listen_addr: String,
}

/// What devnet to start.
#[derive(Clone, Debug, Default)]
pub struct DevnetSpec {
    pub validators: usize,
    /// Genesis block time (None: the genesis default).
    pub block_time_ms: Option<u64>,
    /// Genesis `max_idle_ms` (None: the genesis default).
    pub max_idle_ms: Option<u64>,
    /// `baton devnet --pubsub` (None: the node default).
    pub pubsub: Option<String>,
    /// Validators stopped once the first block is decided and kept down (the last ones).
    pub down: usize,
    /// `baton devnet --set` settings for every validator.
    pub settings: Vec<String>,
}

impl Devnet {
    /// Starts the devnet under `dir` (wiped) and waits until each running validator serves gRPC and every
    /// stopped one is gone. `endpoints` lists the running validators only.
    pub async fn start(baton: &Path, spec: &DevnetSpec, dir: &Path) -> Result<Devnet> {
        let validators = spec.validators;
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let log = std::fs::File::create(dir.join("devnet.log"))?;
        let mut cmd = Command::new(baton);
        cmd.arg("devnet");
        if let Some(ms) = spec.block_time_ms {
            cmd.arg("--block-time-ms").arg(ms.to_string());
        }
        if let Some(ms) = spec.max_idle_ms {
            cmd.arg("--max-idle-ms").arg(ms.to_string());
        }
        if let Some(p) = &spec.pubsub {
            cmd.arg("--pubsub").arg(p);
        }
        for s in &spec.settings {
            cmd.arg("--set").arg(s);
        }
        // No local L1: load figures measure the sequencer alone (and stay comparable with earlier runs).
        let child = cmd
            .arg("--l1-commit-every")
            .arg("0")
            .arg("--down")
            .arg(spec.down.to_string())
            .arg("--validators")
            .arg(validators.to_string())
            .arg("--dir")
            .arg(dir.join("net"))
            .arg("--round-trips")
            .arg("0")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .wrap_err_with(|| format!("cannot start {}", baton.display()))?;
        let mut net = Devnet {
            child: Some(child),
            endpoints: Vec::new(),
            dir: dir.to_path_buf(),
            processes: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut metrics = Vec::new();
        for i in 0..validators {
            let path = dir.join("net").join(format!("node{i}")).join("config.toml");
            let text = loop {
                if let Ok(t) = std::fs::read_to_string(&path) {
                    break t;
                }
                if Instant::now() > deadline {
                    bail!(
                        "devnet did not write {} (see {}/devnet.log)",
                        path.display(),
                        dir.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let cfg: NodeConfigView =
                toml::from_str(&text).map_err(|e| eyre!("{}: {e}", path.display()))?;
            net.endpoints
                .push(format!("http://{}", cfg.grpc.listen_addr));
            metrics.push(cfg.metrics.map(|m| m.listen_addr));
        }
        let stopped = net
            .endpoints
            .split_off(validators.saturating_sub(spec.down));
        for url in &net.endpoints {
            loop {
                if let Ok(mut c) = baton_proto::client::BatonClient::connect(url.clone()).await {
                    if c.status()
                        .await
                        .map(|s| s.latest_height >= 1)
                        .unwrap_or(false)
                    {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    bail!(
                        "{url} did not start deciding blocks within 60 s (see {}/devnet.log)",
                        dir.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for url in &stopped {
            while let Ok(mut c) = baton_proto::client::BatonClient::connect(url.clone()).await {
                if c.status().await.is_err() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "{url} was to be stopped but still answers (see {}/devnet.log)",
                        dir.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for (i, metrics) in metrics.iter().enumerate().take(net.endpoints.len()) {
            let config = dir.join("net").join(format!("node{i}")).join("config.toml");
            for pid in find_by_cmdline(&config.display().to_string()) {
                net.processes.push(Watched {
                    name: format!("node{i}"),
                    pid,
                    metrics: metrics.clone(),
                });
            }
        }
        Ok(net)
    }

    /// Stops the devnet and its validators.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(&mut [c], Duration::from_secs(20));
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.stop();
    }
}
