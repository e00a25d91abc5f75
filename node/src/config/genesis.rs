//! `genesis.toml`: what every node of a chain must agree on (identity, parameters, rollups, the first set, L1 and
//! epochs), read, checked, and hashed into the chain's identity.

use std::path::Path;

use serde::{Deserialize, Serialize};

use baton_consensus::epoch::SetRules;
use baton_consensus::hash::Hash;
use baton_consensus::params::ConsensusParams;
use baton_consensus::registry::{ChainSpec, RollupInfo, RollupRegistry};
use baton_consensus::signing::ChainDomain;
use baton_consensus::validators::{GenesisValidator, ValidatorSet, MAX_VALIDATORS};

use crate::error::NodeError;

/// `genesis.toml`: the chain's identity, its parameters, its rollups and its first validator set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// The chain's name; consensus signatures are bound to it.
    pub chain_id: String,
    /// The EIP-712 `chainId` that bundles are signed for (replay protection across networks).
    pub network_id: u64,
    #[serde(default)]
    pub params: ConsensusParams,
    /// The rollup registry: `[[rollups]]` tables with `id`, `name`, `mode` (`shared`) and optionally
    /// `allowed_senders` (the only senders that may post entries for the rollup; absent or empty: anyone).
    #[serde(default)]
    pub rollups: Vec<RollupInfo>,
    pub validators: Vec<GenesisValidator>,
    /// Posting ordering commitments to L1. When present, every validator lists its `attester` address and
    /// precommits at commitment heights carry its L1 attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l1: Option<GenesisL1>,
    /// Epochs: the validator set changes every `length` heights, from the L1 staking contract (needs
    /// `[l1] staking`). Without it the genesis set decides every height.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<GenesisEpochs>,
}

/// Genesis `[epochs]`: the set function's rules ([`baton_consensus::epoch`]). Amounts are in wei, as decimal
/// strings (they do not fit TOML integers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisEpochs {
    /// Heights per epoch (at least 2).
    pub length: u64,
    /// Most validators in a set. Default 100.
    #[serde(default = "default_max_validators")]
    pub max_validators: usize,
    /// Least stake (wei) to be in a set. Default 1 ETH.
    #[serde(default = "default_one_eth")]
    pub min_stake: String,
    /// Stake (wei) per unit of voting power. Default 1 ETH.
    #[serde(default = "default_one_eth")]
    pub stake_per_power: String,
    /// Fewest validators a new set may have; below it the current set stays. Default 4 (at least 1).
    #[serde(default = "default_min_validators")]
    pub min_validators: usize,
}

fn default_max_validators() -> usize {
    100
}

fn default_one_eth() -> String {
    "1000000000000000000".into()
}

fn default_min_validators() -> usize {
    4
}

impl GenesisEpochs {
    /// The rules as the core takes them.
    pub fn rules(&self) -> Result<SetRules, NodeError> {
        let wei = |field: &str, v: &str| {
            v.parse::<u128>().map_err(|e| {
                NodeError::Config(format!(
                    "genesis epochs.{field} `{v}` is not an amount in wei: {e}"
                ))
            })
        };
        let rules = SetRules {
            epoch_length: self.length,
            max_validators: self.max_validators,
            min_stake: wei("min_stake", &self.min_stake)?,
            stake_per_power: wei("stake_per_power", &self.stake_per_power)?,
            min_validators: self.min_validators,
        };
        if rules.epoch_length < 2 {
            return Err(NodeError::Config(
                "genesis epochs.length must be at least 2".into(),
            ));
        }
        if rules.max_validators == 0 || rules.max_validators > MAX_VALIDATORS {
            return Err(NodeError::Config(format!(
                "genesis epochs.max_validators must be 1..={MAX_VALIDATORS}"
            )));
        }
        if rules.min_validators == 0 || rules.min_validators > rules.max_validators {
            return Err(NodeError::Config(
                "genesis epochs.min_validators must be 1..=max_validators".into(),
            ));
        }
        if rules.stake_per_power == 0 {
            return Err(NodeError::Config(
                "genesis epochs.stake_per_power must be at least 1".into(),
            ));
        }
        Ok(rules)
    }
}

/// Genesis `[l1]`: where commitments go and how often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisL1 {
    /// The L1 chain id (part of what attesters sign).
    pub chain_id: u64,
    /// Address of the `BatonCommitments` contract.
    pub commitments: String,
    /// Heights whose number is a multiple of this are attested and posted. At least 1.
    pub commit_every: u64,
    /// Address of the `BatonInbox` contract: forced-inclusion entries and based rollups' batches.
    pub inbox: String,
    /// The L1 block the inbox was deployed in (where reading its events starts). Default 0.
    #[serde(default)]
    pub inbox_from_block: u64,
    /// How settled an L1 block must be before it can be a block's L1 origin and its inbox events count:
    /// `latest`, `safe` (default) or `finalized`.
    #[serde(default)]
    pub origin_safety: baton_l1_inclusion::watcher::Safety,
    /// Validators refuse a header whose L1 origin is more than this many blocks behind the newest block they have
    /// seen at `origin_safety` (so a proposer cannot hold the origin back to dodge forced entries). Default 64.
    #[serde(default = "default_max_origin_lag")]
    pub max_origin_lag: u64,
    /// Address of the `BatonStaking` contract (with `[epochs]`): its registrations, stake changes and exits are
    /// read from `inbox_from_block` on, so none may happen before that block (the contract may be deployed
    /// earlier: its allowlist and governance events change who may register, not the set, and are not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staking: Option<String>,
}

fn default_max_origin_lag() -> u64 {
    64
}

impl GenesisL1 {
    pub fn inbox_address(&self) -> Result<alloy_primitives::Address, NodeError> {
        self.inbox.parse().map_err(|e| {
            NodeError::Config(format!(
                "genesis l1.inbox `{}` is not an address: {e}",
                self.inbox
            ))
        })
    }

    pub fn staking_address(&self) -> Result<Option<alloy_primitives::Address>, NodeError> {
        self.staking
            .as_deref()
            .map(|a| {
                a.parse().map_err(|e| {
                    NodeError::Config(format!("genesis l1.staking `{a}` is not an address: {e}"))
                })
            })
            .transpose()
    }

    pub fn commitments_address(&self) -> Result<alloy_primitives::Address, NodeError> {
        self.commitments.parse().map_err(|e| {
            NodeError::Config(format!(
                "genesis l1.commitments `{}` is not an address: {e}",
                self.commitments
            ))
        })
    }
}

impl Genesis {
    pub fn load(path: &Path) -> Result<Self, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            NodeError::Config(format!("cannot read genesis {}: {e}", path.display()))
        })?;
        let g: Genesis = toml::from_str(&text)
            .map_err(|e| NodeError::Config(format!("genesis {}: {e}", path.display())))?;
        g.validate()?;
        Ok(g)
    }

    pub fn validate(&self) -> Result<(), NodeError> {
        if self.chain_id.is_empty() || self.chain_id.len() > 64 {
            return Err(NodeError::Config(
                "genesis chain_id must be 1..=64 characters".into(),
            ));
        }
        self.params
            .validate()
            .map_err(|e| NodeError::Config(format!("genesis params: {e}")))?;
        self.spec()?;
        self.validator_set()?;
        if let Some(l1) = &self.l1 {
            if l1.commit_every == 0 {
                return Err(NodeError::Config(
                    "genesis l1.commit_every must be at least 1".into(),
                ));
            }
            l1.commitments_address()?;
            l1.inbox_address()?;
            if l1.max_origin_lag == 0 {
                return Err(NodeError::Config(
                    "genesis l1.max_origin_lag must be at least 1".into(),
                ));
            }
            for v in &self.validators {
                attester_of(v)?;
            }
            l1.staking_address()?;
        }
        if let Some(e) = &self.epochs {
            e.rules()?;
            if self.l1.as_ref().and_then(|l| l.staking.as_ref()).is_none() {
                return Err(NodeError::Config(
                    "genesis [epochs] needs [l1] staking (the BatonStaking contract the sets come from)".into(),
                ));
            }
        }
        for v in &self.validators {
            if v.p2p_addr
                .parse::<malachitebft_app_channel::app::net::Multiaddr>()
                .is_err()
            {
                return Err(NodeError::Config(format!(
                    "genesis validator {}: p2p_addr is not a multiaddr",
                    v.name
                )));
            }
        }
        Ok(())
    }

    pub fn validator_set(&self) -> Result<ValidatorSet, NodeError> {
        let vals = self
            .validators
            .iter()
            .map(GenesisValidator::to_validator)
            .collect::<Result<Vec<_>, _>>()
            .map_err(NodeError::Config)?;
        ValidatorSet::new(vals).map_err(|e| NodeError::Config(format!("genesis: {e}")))
    }

    /// The chain rules: network id, parameters and rollup registry.
    pub fn spec(&self) -> Result<ChainSpec, NodeError> {
        Ok(ChainSpec {
            network_id: self.network_id,
            params: self.params.clone(),
            rollups: RollupRegistry::new(self.rollups.clone())
                .map_err(|e| NodeError::Config(format!("genesis rollups: {e}")))?,
            epochs: self.epochs.as_ref().map(GenesisEpochs::rules).transpose()?,
        })
    }

    /// Each validator's L1 attester address and power (genesis `[l1]` only).
    pub fn attesters(
        &self,
    ) -> Result<
        Vec<(
            baton_consensus::ids::Address,
            alloy_primitives::Address,
            u64,
        )>,
        NodeError,
    > {
        self.validators
            .iter()
            .map(|v| {
                let val = v.to_validator().map_err(NodeError::Config)?;
                Ok((val.address, attester_of(v)?, v.voting_power))
            })
            .collect()
    }

    pub fn domain(&self) -> ChainDomain {
        ChainDomain::new(&self.chain_id)
    }

    /// The parent hash of block 1: binds the chain to its genesis (ids, parameters, rollups, validators).
    pub fn hash(&self) -> Result<Hash, NodeError> {
        let params = toml::to_string(&self.params).map_err(|e| NodeError::Config(e.to_string()))?;
        let mut rollups = String::new();
        for r in self.spec()?.rollups.iter() {
            rollups.push_str(&format!("{}:{}:{:?}", r.id, r.name, r.mode));
            // Only a restricted rollup adds its senders (sorted), so open registries keep their hash.
            for (i, a) in r.allowed_senders.iter().enumerate() {
                let sep = if i == 0 { ":senders=" } else { "," };
                rollups.push_str(&format!("{sep}{}", a.to_string().to_lowercase()));
            }
            rollups.push(';');
        }
        let vs = self.validator_set()?;
        // The L1 section (contract, cadence, attesters) is a chain rule too; without it the hash is unchanged.
        let mut l1 = String::new();
        if let Some(g) = &self.l1 {
            l1 = format!(
                "{}:{}:{};",
                g.chain_id,
                g.commitments.to_lowercase(),
                g.commit_every
            );
            for v in &self.validators {
                l1.push_str(&format!("{}={};", v.public_key, attester_of(v)?));
            }
            if let Some(st) = &g.staking {
                l1.push_str(&format!("staking={};", st.to_lowercase()));
            }
        }
        if let Some(e) = &self.epochs {
            l1.push_str(&format!(
                "epochs={}:{}:{}:{}:{};",
                e.length, e.max_validators, e.min_stake, e.stake_per_power, e.min_validators
            ));
        }
        Ok(Hash::digest(&[
            b"baton/genesis/v2",
            self.chain_id.as_bytes(),
            &self.network_id.to_be_bytes(),
            &vs.hash().0,
            params.as_bytes(),
            rollups.as_bytes(),
            l1.as_bytes(),
        ]))
    }
}

fn attester_of(v: &GenesisValidator) -> Result<alloy_primitives::Address, NodeError> {
    let a = v.attester.as_deref().ok_or_else(|| {
        NodeError::Config(format!(
            "genesis validator {}: `attester` (its L1 attestation address) is required when genesis has [l1]",
            v.name
        ))
    })?;
    a.parse().map_err(|e| {
        NodeError::Config(format!(
            "genesis validator {}: attester `{a}` is not an address: {e}",
            v.name
        ))
    })
}

/// A one-validator genesis for unit tests, with `attester` and `l1` as given.
#[cfg(test)]
pub(crate) fn test_genesis(
    key: &crate::keys::NodeKey,
    attester: Option<String>,
    l1: Option<GenesisL1>,
) -> Genesis {
    Genesis {
        chain_id: "c".into(),
        network_id: 1,
        params: Default::default(),
        rollups: vec![],
        validators: vec![GenesisValidator {
            name: "v0".into(),
            public_key: key.public_key_hex(),
            voting_power: 1,
            p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
            attester,
        }],
        l1,
        epochs: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollups_allowed_senders_are_read_from_genesis_and_bound_into_its_hash() {
        let key = crate::keys::NodeKey::generate();
        let mut g = test_genesis(&key, None, None);
        let rollup = |extra: &str| -> RollupInfo {
            toml::from_str(&format!("id = 1\nname = \"alpha\"\n{extra}")).unwrap()
        };
        g.rollups = vec![rollup("")];
        let open = g.hash().unwrap();
        assert!(!g.spec().unwrap().rollups.get(1).unwrap().is_restricted());
        // An empty list is the same as none: open, and the same hash.
        g.rollups = vec![rollup("allowed_senders = []")];
        assert_eq!(g.hash().unwrap(), open);
        let (a, b) = (
            "0x00000000000000000000000000000000000000aa",
            "0x00000000000000000000000000000000000000bb",
        );
        g.rollups = vec![rollup(&format!("allowed_senders = [\"{a}\", \"{b}\"]"))];
        g.validate().unwrap();
        let restricted = g.hash().unwrap();
        assert_ne!(restricted, open, "the list is a chain rule");
        let spec = g.spec().unwrap();
        assert!(spec.rollups.may_post(1, &a.parse().unwrap()));
        assert!(!spec.rollups.may_post(
            1,
            &"0x00000000000000000000000000000000000000cc"
                .parse()
                .unwrap()
        ));
        // The order listed does not matter; the genesis written back reads the same.
        g.rollups = vec![rollup(&format!("allowed_senders = [\"{b}\", \"{a}\"]"))];
        assert_eq!(g.hash().unwrap(), restricted);
        let back: Genesis = toml::from_str(&toml::to_string(&g).unwrap()).unwrap();
        assert_eq!(back.hash().unwrap(), restricted);
        // Written checksummed; a malformed address is refused with the field named.
        let written = toml::to_string(&g).unwrap();
        let a_written = a.parse::<alloy_primitives::Address>().unwrap().to_string();
        assert!(written.contains(&a_written), "{written}");
        let err = toml::from_str::<Genesis>(&written.replace(&a_written, "0xnot-an-address"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed_senders"), "{err}");
    }
}
