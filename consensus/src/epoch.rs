//! Epochs and the validator-set function: who validates the next epoch, from state every validator agrees on.
//!
//! The chain is cut into epochs of `length` heights; the set changes only at an epoch's first height. The next
//! set is a pure function of a *candidate table* — every known validator key with its L1 attester, stake and
//! status — and the [`SetRules`]. The table is folded from staking events (L1 `BatonStaking` events read at a
//! finalized L1 origin, or governance actions decided in blocks): [`CandidateTable::apply_block`] sorts one L1
//! block's events by their position before applying them, so the order a node happened to receive them in
//! cannot change the result.
//!
//! [`next_set`]: candidates with at least `min_stake`, not exiting and not jailed, ranked by stake (ties broken
//! by key); the top `max_validators` make the set, with voting power `stake / stake_per_power`. Two outcomes are
//! handled instead of produced:
//!
//! - fewer than `min_validators` eligible (default 4, the fewest that tolerate one fault): the current set stays
//!   ([`SetChange::Kept`] says why), so an exodus cannot halt or capture the chain in one step;
//! - one validator holding more than 1/3 of the power: its power is capped at half of everyone else's (exactly
//!   1/3 of the total at most), repeatedly until no one exceeds 1/3, so no single key can stop the chain or, with
//!   little help, fork it ([`SetChange::Capped`] lists who was capped).

use std::collections::BTreeMap;

use borsh::{BorshDeserialize, BorshSerialize};

use crate::validators::{Validator, ValidatorSet};

/// A validator's Ed25519 consensus key (32 bytes), the table's key.
pub type ConsensusKey = [u8; 32];

/// What the set function is told about one key.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Candidate {
    /// Its L1 secp256k1 attestation address (20 bytes).
    pub attester: [u8; 20],
    /// Stake in the staking token's smallest unit.
    pub stake: u128,
    /// Asked to leave: out of the next set.
    pub exiting: bool,
    /// Evidence of misbehaviour: out of every later set.
    pub jailed: bool,
}

/// One staking event, keyed by the consensus key it concerns.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum StakeEvent {
    Registered {
        key: ConsensusKey,
        attester: [u8; 20],
        stake: u128,
    },
    Increased {
        key: ConsensusKey,
        amount: u128,
    },
    ExitRequested {
        key: ConsensusKey,
    },
    /// Stake withdrawn after the exit delay: the key is forgotten.
    Withdrawn {
        key: ConsensusKey,
    },
    Jailed {
        key: ConsensusKey,
    },
}

/// An event with its position in its L1 block (transaction index, log index).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PositionedEvent {
    pub tx_index: u64,
    pub log_index: u64,
    pub event: StakeEvent,
}

/// Every known key and its standing.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CandidateTable {
    pub candidates: BTreeMap<ConsensusKey, Candidate>,
}

impl CandidateTable {
    /// The table after `events` (each with its L1 block number), applied block by block in ascending order.
    pub fn from_blocks(events: impl IntoIterator<Item = (u64, PositionedEvent)>) -> Self {
        let mut blocks: BTreeMap<u64, Vec<PositionedEvent>> = BTreeMap::new();
        for (n, e) in events {
            blocks.entry(n).or_default().push(e);
        }
        let mut t = CandidateTable::default();
        for (_, events) in blocks {
            t.apply_block(events);
        }
        t
    }

    /// Applies one L1 block's events in (transaction, log) order, whatever order they are given in. Events about
    /// unknown keys (other than a registration) and a second registration of a known key are ignored.
    pub fn apply_block(&mut self, mut events: Vec<PositionedEvent>) {
        events.sort_by_key(|e| (e.tx_index, e.log_index));
        for e in events {
            self.apply(e.event);
        }
    }

    fn apply(&mut self, event: StakeEvent) {
        match event {
            StakeEvent::Registered {
                key,
                attester,
                stake,
            } => {
                self.candidates.entry(key).or_insert(Candidate {
                    attester,
                    stake,
                    exiting: false,
                    jailed: false,
                });
            }
            StakeEvent::Increased { key, amount } => {
                if let Some(c) = self.candidates.get_mut(&key) {
                    c.stake = c.stake.saturating_add(amount);
                }
            }
            StakeEvent::ExitRequested { key } => {
                if let Some(c) = self.candidates.get_mut(&key) {
                    c.exiting = true;
                }
            }
            StakeEvent::Withdrawn { key } => {
                self.candidates.remove(&key);
            }
            StakeEvent::Jailed { key } => {
                if let Some(c) = self.candidates.get_mut(&key) {
                    c.jailed = true;
                }
            }
        }
    }
}

/// The rules of the set function (genesis).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SetRules {
    /// Heights per epoch (at least 1).
    pub epoch_length: u64,
    /// Most validators in a set.
    pub max_validators: usize,
    /// Least stake to be eligible.
    pub min_stake: u128,
    /// Stake per unit of voting power (at least 1).
    pub stake_per_power: u128,
    /// Fewest validators a new set may have; below it the current set stays.
    pub min_validators: usize,
}

impl SetRules {
    /// The epoch `height` belongs to (height 1 starts epoch 0).
    pub fn epoch_of(&self, height: u64) -> u64 {
        height.saturating_sub(1) / self.epoch_length.max(1)
    }

    /// Whether `height` is the first height of an epoch (where a new set takes over).
    pub fn is_boundary(&self, height: u64) -> bool {
        height >= 1 && (height - 1).is_multiple_of(self.epoch_length.max(1))
    }
}

/// What [`next_set`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetChange {
    /// The new set, as ranked.
    New,
    /// The new set, with these keys' power capped to keep each at most 1/3 of the total.
    Capped(Vec<ConsensusKey>),
    /// The current set stays: only `eligible` keys qualify, fewer than `min_validators`.
    Kept { eligible: usize },
}

/// The next epoch's set from `table` (see the module docs); `current` is returned when too few qualify.
pub fn next_set(
    table: &CandidateTable,
    rules: &SetRules,
    current: &ValidatorSet,
) -> (ValidatorSet, SetChange) {
    let per = rules.stake_per_power.max(1);
    let mut ranked: Vec<(ConsensusKey, u64)> = table
        .candidates
        .iter()
        .filter(|(_, c)| !c.exiting && !c.jailed && c.stake >= rules.min_stake)
        .filter_map(|(k, c)| {
            let power = u64::try_from(c.stake / per).unwrap_or(u64::MAX);
            // A key that is not a valid Ed25519 point, or a small-order one, cannot validate.
            (power > 0 && crate::validators::validator_key(*k).is_ok()).then_some((*k, power))
        })
        .collect();
    // Highest stake first; equal stakes by key, so the cut at `max_validators` is the same everywhere.
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(rules.max_validators);
    if ranked.len() < rules.min_validators.max(1) {
        return (
            current.clone(),
            SetChange::Kept {
                eligible: ranked.len(),
            },
        );
    }
    // Keep every single power within the u64 total, then cap anyone above 1/3.
    let limit = u64::MAX / (ranked.len() as u64 + 1);
    for r in ranked.iter_mut() {
        r.1 = r.1.min(limit);
    }
    let mut capped = Vec::new();
    loop {
        let total: u64 = ranked.iter().map(|r| r.1).sum();
        // The largest power above a third of the total, if any (ranked stays sorted by power descending).
        let Some(i) = ranked
            .iter()
            .position(|r| u128::from(r.1) * 3 > u128::from(total))
        else {
            break;
        };
        let others = total - ranked[i].1;
        let cap = (others / 2).max(1);
        if cap >= ranked[i].1 {
            break;
        }
        ranked[i].1 = cap;
        if !capped.contains(&ranked[i].0) {
            capped.push(ranked[i].0);
        }
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    let validators: Vec<Validator> = ranked
        .iter()
        .filter_map(|(k, p)| {
            crate::validators::validator_key(*k)
                .ok()
                .map(|vk| Validator::new(vk, *p))
        })
        .collect();
    match ValidatorSet::new(validators) {
        Ok(set) if capped.is_empty() => (set, SetChange::New),
        Ok(set) => (set, SetChange::Capped(capped)),
        Err(_) => (
            current.clone(),
            SetChange::Kept {
                eligible: ranked.len(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u8) -> ConsensusKey {
        ed25519_consensus::SigningKey::from([n; 32])
            .verification_key()
            .to_bytes()
    }

    fn rules() -> SetRules {
        SetRules {
            epoch_length: 100,
            max_validators: 5,
            min_stake: 10,
            stake_per_power: 10,
            min_validators: 4,
        }
    }

    fn genesis() -> ValidatorSet {
        ValidatorSet::new(
            (1..=4u8)
                .map(|n| {
                    Validator::new(
                        ed25519_consensus::VerificationKey::try_from(key(n)).unwrap(),
                        1,
                    )
                })
                .collect(),
        )
        .unwrap()
    }

    fn registered(n: u8, stake: u128) -> StakeEvent {
        StakeEvent::Registered {
            key: key(n),
            attester: [n; 20],
            stake,
        }
    }

    fn table(events: Vec<StakeEvent>) -> CandidateTable {
        let mut t = CandidateTable::default();
        t.apply_block(
            events
                .into_iter()
                .enumerate()
                .map(|(i, event)| PositionedEvent {
                    tx_index: i as u64,
                    log_index: 0,
                    event,
                })
                .collect(),
        );
        t
    }

    fn powers(set: &ValidatorSet) -> Vec<(ConsensusKey, u64)> {
        let mut v: Vec<_> = set
            .validators()
            .iter()
            .map(|v| (v.public_key.to_bytes(), v.voting_power))
            .collect();
        v.sort();
        v
    }

    /// A small-order point (here the identity) is a key anybody "signs" for under ZIP-215: staked with the most
    /// stake, it must not enter the set.
    #[test]
    fn a_small_order_key_never_enters_the_set() {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(ed25519_consensus::VerificationKey::try_from(identity).is_ok());
        let mut events: Vec<StakeEvent> = (1..=4).map(|n| registered(n, 100)).collect();
        events.push(StakeEvent::Registered {
            key: identity,
            attester: [9; 20],
            stake: 1_000,
        });
        let (set, _) = next_set(&table(events), &rules(), &genesis());
        assert!(
            powers(&set).iter().all(|(k, _)| *k != identity),
            "{:?}",
            powers(&set)
        );
        assert_eq!(set.validators().len(), 4);
    }

    #[test]
    fn epochs_start_at_height_one_and_every_length_heights() {
        let r = rules();
        assert_eq!((r.epoch_of(1), r.epoch_of(100), r.epoch_of(101)), (0, 0, 1));
        assert!(r.is_boundary(1) && r.is_boundary(101) && r.is_boundary(201));
        assert!(!r.is_boundary(0) && !r.is_boundary(100) && !r.is_boundary(102));
    }

    #[test]
    fn top_stakes_above_the_minimum_make_the_set_with_power_from_stake() {
        let t = table(vec![
            registered(1, 100),
            registered(2, 100),
            registered(3, 90),
            registered(4, 80),
            registered(5, 70),
            registered(6, 60),
            registered(7, 5),
            StakeEvent::Increased {
                key: key(6),
                amount: 30,
            },
        ]);
        let (set, change) = next_set(&t, &rules(), &genesis());
        assert_eq!(change, SetChange::New);
        // Top five: 1, 2, 3 and 6 (90 after the increase, ties broken by key) and 4; 5 is sixth, 7 below minimum.
        let mut expected = vec![
            (key(1), 10),
            (key(2), 10),
            (key(3), 9),
            (key(4), 8),
            (key(6), 9),
        ];
        expected.sort();
        assert_eq!(powers(&set), expected);
    }

    #[test]
    fn exiting_jailed_and_withdrawn_keys_leave_the_next_set() {
        let mut t = table((1..=6).map(|n| registered(n, 100)).collect());
        t.apply_block(vec![
            PositionedEvent {
                tx_index: 0,
                log_index: 0,
                event: StakeEvent::ExitRequested { key: key(1) },
            },
            PositionedEvent {
                tx_index: 0,
                log_index: 1,
                event: StakeEvent::Jailed { key: key(2) },
            },
        ]);
        let (set, _) = next_set(&t, &rules(), &genesis());
        let keys: Vec<_> = powers(&set).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 4);
        assert!(!keys.contains(&key(1)) && !keys.contains(&key(2)));
        t.apply_block(vec![PositionedEvent {
            tx_index: 0,
            log_index: 0,
            event: StakeEvent::Withdrawn { key: key(1) },
        }]);
        assert!(!t.candidates.contains_key(&key(1)));
    }

    #[test]
    fn too_few_eligible_keeps_the_current_set() {
        let t = table((1..=3).map(|n| registered(n + 10, 100)).collect());
        let (set, change) = next_set(&t, &rules(), &genesis());
        assert_eq!(change, SetChange::Kept { eligible: 3 });
        assert_eq!(set.hash(), genesis().hash());
    }

    #[test]
    fn a_whale_is_capped_at_a_third() {
        let t = table(vec![
            registered(1, 10_000),
            registered(2, 100),
            registered(3, 100),
            registered(4, 100),
        ]);
        let (set, change) = next_set(&t, &rules(), &genesis());
        assert_eq!(change, SetChange::Capped(vec![key(1)]));
        let p = powers(&set);
        let whale = p.iter().find(|(k, _)| *k == key(1)).unwrap().1;
        assert_eq!(whale, 15, "half of the other 30");
        assert!(whale * 3 <= set.total_power());
    }

    proptest! {
        /// Same events, any order within the block: same set. No validator above 1/3, never more than
        /// `max_validators`, never fewer than `min_validators` unless the current set was kept.
        #[test]
        fn the_set_does_not_depend_on_event_order_and_keeps_its_bounds(
            stakes in prop::collection::vec((1u8..40, 0u128..5_000), 1..30),
            exits in prop::collection::vec(1u8..40, 0..5),
            seed in any::<u64>(),
        ) {
            let mut events: Vec<StakeEvent> = stakes.iter().map(|(n, s)| registered(*n, *s)).collect();
            events.extend(exits.iter().map(|n| StakeEvent::ExitRequested { key: key(*n) }));
            let positioned: Vec<PositionedEvent> = events
                .into_iter()
                .enumerate()
                .map(|(i, event)| PositionedEvent { tx_index: i as u64 / 3, log_index: i as u64 % 3, event })
                .collect();
            let mut shuffled = positioned.clone();
            // A deterministic shuffle from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let (mut a, mut b) = (CandidateTable::default(), CandidateTable::default());
            a.apply_block(positioned);
            b.apply_block(shuffled);
            prop_assert_eq!(&a, &b);
            let r = rules();
            let (sa, ca) = next_set(&a, &r, &genesis());
            let (sb, cb) = next_set(&b, &r, &genesis());
            prop_assert_eq!(sa.hash(), sb.hash());
            prop_assert_eq!(&ca, &cb);
            prop_assert!(sa.validators().len() <= r.max_validators);
            match ca {
                SetChange::Kept { eligible } => {
                    prop_assert!(eligible < r.min_validators);
                    prop_assert_eq!(sa.hash(), genesis().hash());
                }
                _ => {
                    prop_assert!(sa.validators().len() >= r.min_validators);
                    for v in sa.validators() {
                        prop_assert!(v.voting_power * 3 <= sa.total_power(), "{} of {}", v.voting_power, sa.total_power());
                    }
                }
            }
        }
    }
}
