//! Consensus parameters: limits every validator enforces identically, so they live in genesis.

use serde::{Deserialize, Serialize};

use crate::error::ConsensusError;

/// Chain-wide limits and timing. Every field has a documented default; `validate()` rejects unusable values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusParams {
    /// Heights follow load. With bundles ready to include, the proposer builds at `parent.timestamp +
    /// block_time_ms` (at once if its mempool already holds a full block); with nothing to include it waits until
    /// `parent.timestamp + max_idle_ms`, and proposes at once if a bundle arrives in the meantime. So a busy chain
    /// makes a block every `block_time_ms` plus the time a height takes, and an idle one about one every
    /// `max_idle_ms`. Default 10 ms (20 ms until 2026-12-06: BENCHMARKS.md has the comparison; under load a
    /// height takes longer than the floor anyway, so blocks grow with the load).
    pub block_time_ms: u64,
    /// The longest a proposer waits for something to include before it proposes an empty block (round 0 only;
    /// later rounds propose at `block_time_ms`). Empty blocks keep the chain's clock, L1 origin and epochs moving
    /// while nothing happens. Default 500 ms.
    pub max_idle_ms: u64,
    /// Maximum encoded size of all bundles in a block. Default 4 MiB.
    pub max_block_bytes: u64,
    /// Maximum number of bundles in a block. Default 20,000.
    pub max_block_bundles: u32,
    /// Maximum encoded size of one bundle. Default 128 KiB.
    pub max_bundle_bytes: u32,
    /// Maximum number of entries in one bundle. Default 64.
    pub max_bundle_entries: u32,
    /// Maximum size of one entry's payload. Default 64 KiB.
    pub max_payload_bytes: u32,
    /// How far a proposal's timestamp may run ahead of a validator's clock. Default 2,000 ms.
    pub max_clock_drift_ms: u64,
    /// The latest expiry a bundle may name, in heights past the next one: a node does not take a bundle that
    /// could otherwise wait for good. Default 1,000,000 (about six hours at 45 busy heights a second, six days
    /// at two idle heights a second).
    pub max_expiry_window: u64,
    /// Chain time a validator that missed its turn to propose sits out of the rotation ([`crate::bench`]), doubling
    /// on each further miss up to 1,024 times as long. Counted in block timestamps, not heights, because heights
    /// follow load. Default 30,000 ms.
    pub bench_ms: u64,
    /// Round timeouts handed to the BFT engine.
    pub timeouts: TimeoutParams,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        Self {
            block_time_ms: 10,
            max_idle_ms: 500,
            max_block_bytes: 4 * 1024 * 1024,
            max_block_bundles: 20_000,
            max_bundle_bytes: 128 * 1024,
            max_bundle_entries: 64,
            max_payload_bytes: 64 * 1024,
            max_clock_drift_ms: 2_000,
            max_expiry_window: 1_000_000,
            bench_ms: Self::DEFAULT_BENCH_MS,
            timeouts: TimeoutParams::default(),
        }
    }
}

/// Round timeouts. Short propose timeouts matter: a crashed proposer costs one propose timeout every time its
/// turn comes round (until the proposer bench skips it). A height that starts with nothing to include waits at
/// least twice `max_idle_ms` for its proposal instead ([`ConsensusParams::timeouts_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutParams {
    /// Wait for a proposal before prevoting nil, at a height that starts with bundles to include. Default 400 ms.
    pub propose_ms: u64,
    /// Added to `propose_ms` per round. Default 200 ms.
    pub propose_delta_ms: u64,
    /// Wait after +2/3 prevotes for anything. Default 100 ms.
    pub prevote_ms: u64,
    /// Wait after +2/3 precommits for anything. Default 100 ms.
    pub precommit_ms: u64,
    /// Added to prevote and precommit timeouts per round. Default 50 ms.
    pub vote_delta_ms: u64,
    /// Upper bound for any round timeout. Default 10,000 ms.
    pub max_ms: u64,
}

impl TimeoutParams {
    /// The engine's timeouts: each grows linearly with the round; the rebroadcast of round messages waits for at
    /// least a whole round (and a second).
    pub fn linear(&self) -> malachitebft_core_types::LinearTimeouts {
        let ms = std::time::Duration::from_millis;
        malachitebft_core_types::LinearTimeouts {
            propose: ms(self.propose_ms),
            propose_delta: ms(self.propose_delta_ms),
            prevote: ms(self.prevote_ms),
            prevote_delta: ms(self.vote_delta_ms),
            precommit: ms(self.precommit_ms),
            precommit_delta: ms(self.vote_delta_ms),
            rebroadcast: ms(self.propose_ms + self.prevote_ms + self.precommit_ms)
                .max(std::time::Duration::from_secs(1)),
            max_timeout: ms(self.max_ms),
        }
    }
}

impl Default for TimeoutParams {
    fn default() -> Self {
        Self {
            propose_ms: 400,
            propose_delta_ms: 200,
            prevote_ms: 100,
            precommit_ms: 100,
            vote_delta_ms: 50,
            max_ms: 10_000,
        }
    }
}

impl ConsensusParams {
    /// The default of [`Self::bench_ms`].
    pub const DEFAULT_BENCH_MS: u64 = 30_000;

    /// The defaults with short idle heights (`max_idle_ms` 50): a chain that moves about 20 heights a second
    /// with nothing to order, for tests that wait for heights to pass; and a proposer bench of 5 s, so that a
    /// stopped validator's return to the rotation fits in a test. Busy heights 20 ms apart: the tests run debug
    /// builds of several validators on shared cores, where more heights only cost time.
    pub fn for_tests() -> Self {
        Self {
            block_time_ms: 20,
            max_idle_ms: 50,
            bench_ms: 5_000,
            ..Self::default()
        }
    }

    /// The engine's timeouts for a height that starts `busy` (with something to include) or idle. An idle
    /// proposer waits up to `max_idle_ms` before it proposes, so an idle height waits at least twice that for its
    /// proposal; a busy one keeps `timeouts.propose_ms`, so a crashed proposer costs little under load. Timeouts
    /// are each validator's own affair (liveness, not safety): validators that disagree about busy or idle only
    /// differ in how long they wait.
    pub fn timeouts_for(&self, busy: bool) -> malachitebft_core_types::LinearTimeouts {
        let mut t = self.timeouts;
        if !busy {
            t.propose_ms = t.propose_ms.max(2 * self.max_idle_ms);
        }
        t.linear()
    }

    pub fn validate(&self) -> Result<(), ConsensusError> {
        let bad =
            |field: &'static str, why: String| Err(ConsensusError::InvalidParams { field, why });
        if self.block_time_ms == 0 || self.block_time_ms > 60_000 {
            return bad(
                "block_time_ms",
                format!("must be in 1..=60000, got {}", self.block_time_ms),
            );
        }
        if self.max_idle_ms < self.block_time_ms || self.max_idle_ms > 60_000 {
            return bad(
                "max_idle_ms",
                format!(
                    "must be in block_time_ms ({})..=60000, got {}",
                    self.block_time_ms, self.max_idle_ms
                ),
            );
        }
        if self.timeouts.propose_ms < 2 * self.block_time_ms {
            return bad(
                "timeouts.propose_ms",
                format!(
                    "({}) must be at least twice block_time_ms ({}): a busy proposer waits up to \
                 block_time_ms before it proposes",
                    self.timeouts.propose_ms, self.block_time_ms
                ),
            );
        }
        if !(1_000..=86_400_000).contains(&self.bench_ms) {
            return bad(
                "bench_ms",
                format!(
                    "must be in 1000..=86400000 (1 s to a day), got {}",
                    self.bench_ms
                ),
            );
        }
        if self.max_expiry_window == 0 {
            return bad("max_expiry_window", "must be at least 1".into());
        }
        if self.max_bundle_entries == 0 {
            return bad("max_bundle_entries", "must be at least 1".into());
        }
        if self.max_bundle_bytes < 256 {
            return bad(
                "max_bundle_bytes",
                format!("must be at least 256, got {}", self.max_bundle_bytes),
            );
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > self.max_bundle_bytes {
            return bad(
                "max_payload_bytes",
                format!(
                    "must be in 1..=max_bundle_bytes ({}), got {}",
                    self.max_bundle_bytes, self.max_payload_bytes
                ),
            );
        }
        if u64::from(self.max_bundle_bytes) > self.max_block_bytes {
            return bad(
                "max_bundle_bytes",
                format!(
                    "({}) exceeds max_block_bytes ({}): such a bundle could never be included",
                    self.max_bundle_bytes, self.max_block_bytes
                ),
            );
        }
        if self.max_block_bytes > 64 * 1024 * 1024 {
            return bad(
                "max_block_bytes",
                format!("must be at most 64 MiB, got {}", self.max_block_bytes),
            );
        }
        if self.max_block_bundles == 0 {
            return bad("max_block_bundles", "must be at least 1".into());
        }
        let t = &self.timeouts;
        if t.propose_ms == 0 || t.prevote_ms == 0 || t.precommit_ms == 0 || t.max_ms < t.propose_ms
        {
            return bad(
                "timeouts",
                "must be positive and max_ms must be at least propose_ms".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ConsensusParams::default().validate().unwrap();
        ConsensusParams::for_tests().validate().unwrap();
    }

    #[test]
    fn idle_heights_wait_longer_for_their_proposal() {
        let p = ConsensusParams::default();
        let busy = p.timeouts_for(true).propose;
        let idle = p.timeouts_for(false).propose;
        assert_eq!(busy.as_millis() as u64, p.timeouts.propose_ms);
        assert_eq!(idle.as_millis() as u64, 2 * p.max_idle_ms);
        assert!(idle > busy);
    }

    #[test]
    fn rejects_bad_pacing() {
        let p = ConsensusParams {
            block_time_ms: 300,
            max_idle_ms: 600,
            ..Default::default()
        };
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("propose_ms"), "{err}");
        let p = ConsensusParams {
            block_time_ms: 100,
            max_idle_ms: 50,
            ..Default::default()
        };
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains("max_idle_ms"), "{err}");
    }

    #[test]
    fn rejects_bundle_larger_than_block() {
        let p = ConsensusParams {
            max_block_bytes: 1000,
            max_bundle_bytes: 2000,
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }
}
