//! A local L1 for tests and `baton devnet`: the pinned anvil that `scripts/setup.sh` installs under `tools/l1`.

use std::path::PathBuf;
use std::time::Duration;

use alloy::node_bindings::{Anvil, AnvilInstance};

use crate::error::L1Error;

/// Where setup installs anvil, relative to the workspace root.
pub const ANVIL_RELATIVE_PATH: &str =
    "tools/l1/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// The anvil binary: `$BATON_ANVIL` if set, else the one setup installed in this checkout, found from the
/// running process (cargo's `CARGO_MANIFEST_DIR` under `cargo test`, else the working directory and its parents).
/// Resolved at run time: a build reused from another checkout of the same workspace (a shared target directory)
/// must not point into that checkout.
pub fn anvil_path() -> Result<PathBuf, L1Error> {
    if let Some(p) = std::env::var_os("BATON_ANVIL") {
        return Ok(PathBuf::from(p));
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    starts.extend(std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from));
    starts.extend(std::env::current_dir().ok());
    for start in &starts {
        if let Some(p) = start
            .ancestors()
            .map(|dir| dir.join(ANVIL_RELATIVE_PATH))
            .find(|p| p.is_file())
        {
            return Ok(p);
        }
    }
    Err(L1Error::Anvil(format!(
        "anvil not found under {} or their parents ({ANVIL_RELATIVE_PATH}): run ./scripts/setup.sh from the \
         checkout (or set BATON_ANVIL)",
        starts
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Options for a local L1.
#[derive(Clone, Debug)]
pub struct LocalL1 {
    /// Blocks per epoch: anvil reports `safe` this many blocks behind the head and `finalized` twice as many.
    pub slots_in_an_epoch: u64,
    /// Seconds between blocks; `None` mines a block per transaction (tests then mine by hand).
    pub block_time_secs: Option<u64>,
    pub chain_id: u64,
}

impl Default for LocalL1 {
    fn default() -> Self {
        LocalL1 {
            slots_in_an_epoch: 2,
            block_time_secs: None,
            chain_id: 31337,
        }
    }
}

impl LocalL1 {
    /// Starts anvil on 127.0.0.1 with a port the OS picks; it stops when the instance is dropped.
    pub fn spawn(&self) -> Result<AnvilInstance, L1Error> {
        let mut a = Anvil::at(anvil_path()?)
            .host("127.0.0.1")
            .chain_id(self.chain_id)
            .timeout(Duration::from_secs(30).as_millis() as u64)
            .args(["--slots-in-an-epoch", &self.slots_in_an_epoch.to_string()])
            .prague();
        if let Some(t) = self.block_time_secs {
            a = a.block_time(t);
        }
        a.try_spawn().map_err(|e| L1Error::Anvil(e.to_string()))
    }
}
