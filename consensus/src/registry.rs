//! The rollup registry and the chain rules every validator applies identically.
//!
//! Which rollups exist is part of genesis: a bundle for a rollup that is not registered is refused at admission
//! and makes a block invalid. Every block's namespace table has one row per registered rollup, so every rollup's
//! batch, empty or not, comes with an inclusion proof.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ConsensusError;
use crate::params::ConsensusParams;
use crate::types::RollupId;

/// Most rollups a registry may hold (bounds the namespace table in every header's proof).
pub const MAX_ROLLUPS: usize = 4096;

/// How a rollup is ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RollupMode {
    /// Ordered by Baton's validator set.
    #[default]
    Shared,
    /// Ordered by L1 proposers through the inbox contract; Baton derives and serves that order.
    Based,
}

/// One registered rollup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollupInfo {
    pub id: RollupId,
    /// A human-readable name (1..=64 characters).
    pub name: String,
    /// Default `shared`.
    #[serde(default)]
    pub mode: RollupMode,
}

/// The registered rollups, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollupRegistry {
    rollups: BTreeMap<RollupId, RollupInfo>,
}

impl RollupRegistry {
    /// Builds a registry, rejecting duplicate ids, empty or overlong names and too many rollups.
    pub fn new(list: Vec<RollupInfo>) -> Result<Self, ConsensusError> {
        let bad = |m: String| Err(ConsensusError::InvalidGenesis(m));
        if list.len() > MAX_ROLLUPS {
            return bad(format!(
                "{} rollups registered, at most {MAX_ROLLUPS} are allowed",
                list.len()
            ));
        }
        let mut rollups = BTreeMap::new();
        for r in list {
            if r.name.is_empty() || r.name.len() > 64 {
                return bad(format!("rollup {}: name must be 1..=64 characters", r.id));
            }
            let id = r.id;
            if rollups.insert(id, r).is_some() {
                return bad(format!("rollup id {id} is registered twice"));
            }
        }
        Ok(RollupRegistry { rollups })
    }

    pub fn get(&self, id: RollupId) -> Option<&RollupInfo> {
        self.rollups.get(&id)
    }

    pub fn contains(&self, id: RollupId) -> bool {
        self.rollups.contains_key(&id)
    }

    /// Registered ids in ascending order (the order of every namespace table).
    pub fn ids(&self) -> impl Iterator<Item = RollupId> + '_ {
        self.rollups.keys().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RollupInfo> {
        self.rollups.values()
    }

    pub fn len(&self) -> usize {
        self.rollups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rollups.is_empty()
    }

    /// Position of a rollup's row in every namespace table.
    pub fn index_of(&self, id: RollupId) -> Option<usize> {
        if !self.rollups.contains_key(&id) {
            return None;
        }
        Some(self.rollups.range(..id).count())
    }
}

/// Everything a validator needs to judge bundles and blocks besides the chain itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSpec {
    /// The EIP-712 `chainId` bundles are signed for.
    pub network_id: u64,
    pub params: ConsensusParams,
    pub rollups: RollupRegistry,
    /// Epochs and the set function ([`crate::epoch`]); `None`: the genesis set decides every height.
    pub epochs: Option<crate::epoch::SetRules>,
}

impl ChainSpec {
    /// A spec with default parameters and rollups `1..=n` (tests, examples).
    pub fn for_tests(network_id: u64, n: u64) -> Self {
        ChainSpec {
            network_id,
            params: ConsensusParams::for_tests(),
            rollups: RollupRegistry::new(
                (1..=n)
                    .map(|id| RollupInfo {
                        id,
                        name: format!("rollup-{id}"),
                        mode: RollupMode::Shared,
                    })
                    .collect(),
            )
            .unwrap_or_default(),
            epochs: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_rules() {
        let r = |id, name: &str| RollupInfo {
            id,
            name: name.into(),
            mode: RollupMode::Shared,
        };
        let reg = RollupRegistry::new(vec![r(9, "nine"), r(2, "two")]).unwrap();
        assert_eq!(reg.ids().collect::<Vec<_>>(), vec![2, 9]);
        assert_eq!(reg.index_of(9), Some(1));
        assert_eq!(reg.index_of(3), None);
        assert!(RollupRegistry::new(vec![r(1, "a"), r(1, "b")])
            .unwrap_err()
            .to_string()
            .contains("rollup id 1 is registered twice"));
        assert!(RollupRegistry::new(vec![r(1, "")]).is_err());
        let parsed: RollupInfo = toml::from_str("id = 3\nname = \"x\"").unwrap();
        assert_eq!(parsed.mode, RollupMode::Shared);
        assert!(toml::from_str::<RollupInfo>("id = 3\nname = \"x\"\nmode = \"other\"").is_err());
    }
}
