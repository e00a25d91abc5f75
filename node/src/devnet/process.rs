//! A `baton run` child process of a devnet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::NodeError;

use super::*;

/// A running `baton run` child process. Dropping it kills the process.
#[derive(Debug)]
pub struct NodeProcess {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl NodeProcess {
    /// Starts `bin run --config <node config>`, appending output to `<node dir>/node.log`.
    pub fn start(bin: &Path, node: &DevnetNode) -> Result<Self, NodeError> {
        let log_path = node.dir.join("node.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&node.config_path)
            .env(
                "RUST_LOG",
                std::env::var("BATON_NODE_LOG")
                    .unwrap_or_else(|_| crate::DEFAULT_LOG_FILTER.into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        Ok(NodeProcess {
            child: Some(child),
            log_path,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// SIGKILL, no chance to clean up (a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if the process has not exited within `grace`. Returns how it exited when it did so
    /// by itself (`None`: it had to be killed, or was not running).
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
