//! The rollup registry and the chain rules every validator applies identically.
//!
//! Which rollups exist is part of genesis: a bundle for a rollup that is not registered is refused at admission
//! and makes a block invalid. Every block's namespace table has one row per registered rollup, so every rollup's
//! batch, empty or not, comes with an inclusion proof.
//!
//! A rollup may also restrict who posts entries for it (`allowed_senders`): a bundle with an entry for such a
//! rollup from a sender not on its list is refused at admission and makes a block invalid, like one for an
//! unregistered rollup. An empty list (the default) leaves the rollup open to every sender.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bundle::Sender;
use crate::error::{ConsensusError, RegistryError};
use crate::ids::RollupId;
use crate::params::ConsensusParams;

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
    /// The senders (Ethereum addresses, the bundle's `sender`) that may post entries for this rollup; empty (the
    /// default): anyone may. Fixed at genesis, like the rest of the registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "sender_list")]
    pub allowed_senders: Vec<Sender>,
}

impl RollupInfo {
    /// An open rollup (no sender restriction).
    pub fn open(id: RollupId, name: impl Into<String>, mode: RollupMode) -> Self {
        RollupInfo {
            id,
            name: name.into(),
            mode,
            allowed_senders: Vec::new(),
        }
    }

    /// Whether only the listed senders may post entries for this rollup.
    pub fn is_restricted(&self) -> bool {
        !self.allowed_senders.is_empty()
    }
}

/// `allowed_senders` in genesis: a list of `0x`-prefixed hex addresses.
mod sender_list {
    use super::Sender;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Sender], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|a| a.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Sender>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                if !t.starts_with("0x") || t.len() != 42 {
                    return Err(D::Error::custom(format!(
                        "allowed_senders: `{t}` is not an Ethereum address (0x and 40 hex digits)"
                    )));
                }
                // Mixed case is an EIP-55 checksum: a wrong one is a typo.
                let mixed = t[2..].bytes().any(|c| c.is_ascii_uppercase())
                    && t[2..].bytes().any(|c| c.is_ascii_lowercase());
                let parsed = if mixed {
                    Sender::parse_checksummed(t, None).map_err(|e| e.to_string())
                } else {
                    t.parse::<Sender>().map_err(|e| e.to_string())
                };
                parsed.map_err(|e| {
                    D::Error::custom(format!(
                        "allowed_senders: `{t}` is not an Ethereum address: {e}"
                    ))
                })
            })
            .collect()
    }
}

/// The registered rollups, by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollupRegistry {
    rollups: BTreeMap<RollupId, RollupInfo>,
}

impl RollupRegistry {
    /// Builds a registry, rejecting duplicate ids, empty or overlong names, a sender listed twice in a rollup's
    /// `allowed_senders`, and too many rollups.
    pub fn new(list: Vec<RollupInfo>) -> Result<Self, ConsensusError> {
        if list.len() > MAX_ROLLUPS {
            return Err(RegistryError::TooMany {
                count: list.len(),
                max: MAX_ROLLUPS,
            }
            .into());
        }
        let mut rollups = BTreeMap::new();
        for mut r in list {
            if r.name.is_empty() || r.name.len() > 64 {
                return Err(RegistryError::BadName { id: r.id }.into());
            }
            // Sorted, so that `may_post` is a binary search and the genesis hash does not depend on the order.
            r.allowed_senders.sort_unstable();
            if let Some(w) = r.allowed_senders.windows(2).find(|w| w[0] == w[1]) {
                return Err(RegistryError::SenderTwice {
                    id: r.id,
                    sender: w[0].to_string(),
                }
                .into());
            }
            let id = r.id;
            if rollups.insert(id, r).is_some() {
                return Err(RegistryError::IdTwice { id }.into());
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

    /// Whether `sender` may post entries for registered rollup `id`: the rollup is open (no `allowed_senders`)
    /// or lists it. False for an unregistered id.
    pub fn may_post(&self, id: RollupId, sender: &Sender) -> bool {
        self.rollups.get(&id).is_some_and(|r| {
            r.allowed_senders.is_empty() || r.allowed_senders.binary_search(sender).is_ok()
        })
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
                    .map(|id| RollupInfo::open(id, format!("rollup-{id}"), RollupMode::Shared))
                    .collect(),
            )
            .unwrap_or_default(),
            epochs: None,
        }
    }
}

#[cfg(test)]
impl ChainSpec {
    /// This spec with rollup `id` restricted to `senders` (tests).
    pub(crate) fn restrict(mut self, id: RollupId, senders: Vec<Sender>) -> Self {
        let list = self
            .rollups
            .iter()
            .cloned()
            .map(|mut r| {
                if r.id == id {
                    r.allowed_senders = senders.clone();
                }
                r
            })
            .collect();
        self.rollups = RollupRegistry::new(list).expect("a valid registry");
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_rules() {
        let r = |id, name: &str| RollupInfo::open(id, name, RollupMode::Shared);
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

    #[test]
    fn allowed_senders_restrict_a_rollup_and_default_to_open() {
        let a = "0x00000000000000000000000000000000000000aa";
        let b = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let parsed: RollupInfo = toml::from_str(&format!(
            "id = 3\nname = \"x\"\nallowed_senders = [\"{b}\", \"{a}\"]"
        ))
        .unwrap();
        assert!(parsed.is_restricted());
        let open: RollupInfo = toml::from_str("id = 4\nname = \"y\"").unwrap();
        assert!(!open.is_restricted());
        let reg = RollupRegistry::new(vec![parsed.clone(), open.clone()]).unwrap();
        let (a, b): (Sender, Sender) = (a.parse().unwrap(), b.parse().unwrap());
        let outsider = Sender::repeat_byte(0xcc);
        assert!(reg.may_post(3, &a) && reg.may_post(3, &b) && !reg.may_post(3, &outsider));
        assert!(reg.may_post(4, &outsider), "open by default");
        assert!(!reg.may_post(5, &a), "not registered");
        // Kept sorted, so the registry (and the genesis hash) do not depend on the order listed.
        assert_eq!(reg.get(3).unwrap().allowed_senders, vec![a, b]);
        // Written back only when restricted; read back the same.
        let text = toml::to_string(&open).unwrap();
        assert!(!text.contains("allowed_senders"), "{text}");
        let back: RollupInfo = toml::from_str(&toml::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(back, parsed);
        // Malformed addresses and duplicates are refused.
        for bad in [
            "nope",
            "00000000000000000000000000000000000000aa",
            "0x00aa",
            // The EIP-55 example with one letter's case flipped.
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
        ] {
            let err = toml::from_str::<RollupInfo>(&format!(
                "id = 3\nname = \"x\"\nallowed_senders = [\"{bad}\"]"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("allowed_senders") && err.contains(bad),
                "{err}"
            );
        }
        let mut twice = parsed;
        twice.allowed_senders.push(a);
        let err = RollupRegistry::new(vec![twice]).unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
    }
}
