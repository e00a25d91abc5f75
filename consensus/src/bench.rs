//! Proposer benching: a validator that misses its turn to propose sits out of the rotation for a while.
//!
//! Without it a crashed validator costs a propose timeout every time its slot comes round (one height in four
//! with four equal validators), which puts its timeout into the latency of a quarter of all bundles. With it the
//! first missed turn costs one timeout, then the validator is skipped for [`BENCH_HEIGHTS`] heights; if it misses
//! again when its turn returns, the bench doubles (up to `BENCH_HEIGHTS << MAX_DOUBLINGS`). A validator that
//! proposes the decided block is cleared at once. Benched validators still vote.
//!
//! The state is part of the chain: each block header carries the bench as it stands after that block, computed
//! by [`Bench::after`] from the parent's bench and the header's own round and proposer, and every validator
//! checks it. All honest nodes therefore agree on the proposer of every `(height, round)`, which liveness needs;
//! a per-node view (for instance the round in each node's own commit certificate, which can differ between
//! nodes) would not give that.
//!
//! What counts as a miss: a block built in round `r > 0` means the proposers of rounds `0..r` of its height did
//! not get a block decided. A re-proposed block keeps the round it was built in, so a value that was only slow
//! to collect votes does not count against its builder.

use borsh::{BorshDeserialize, BorshSerialize};

use crate::ids::Address;
use crate::validators::ValidatorSet;

/// Heights a validator sits out after its first missed turn.
pub const BENCH_HEIGHTS: u64 = 64;
/// Consecutive misses beyond the first double the bench up to this many times (64 << 10 = 65,536 heights).
pub const MAX_DOUBLINGS: u32 = 10;

/// One validator with missed turns on record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub struct Benched {
    pub validator: Address,
    /// Consecutive missed turns (reset when it proposes a decided block).
    pub strikes: u32,
    /// First height at which it is back in the rotation.
    pub until_height: u64,
}

/// The bench after a block: validators with missed turns, sorted by address.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize,
)]
pub struct Bench {
    entries: Vec<Benched>,
}

impl Bench {
    /// A bench from its entries, which must be sorted by validator address without repeats (the canonical form
    /// that the header hash covers).
    pub fn from_entries(entries: Vec<Benched>) -> Result<Bench, String> {
        if entries.windows(2).any(|w| w[0].validator >= w[1].validator) {
            return Err("entries are not sorted by validator address without repeats".into());
        }
        if entries.iter().any(|e| e.strikes == 0) {
            return Err("an entry has no strikes".into());
        }
        Ok(Bench { entries })
    }

    pub fn entries(&self) -> &[Benched] {
        &self.entries
    }

    /// Validators out of the rotation at `height`.
    pub fn benched_at(&self, height: u64) -> Vec<Address> {
        self.entries
            .iter()
            .filter(|e| e.until_height > height)
            .map(|e| e.validator)
            .collect()
    }

    /// The bench after a block of `height` built in `round` by `proposer`, where `validators` is the set with
    /// this bench applied (the rotation that chose the proposers of that height). Entries of validators no longer
    /// in the set are dropped.
    pub fn after(
        &self,
        validators: &ValidatorSet,
        height: u64,
        round: u32,
        proposer: Address,
    ) -> Bench {
        let mut entries: Vec<Benched> = self
            .entries
            .iter()
            .filter(|e| e.validator != proposer && validators.get(&e.validator).is_some())
            .cloned()
            .collect();
        // Rounds beyond one full rotation name the same validators again.
        let rounds = round.min(validators.validators().len() as u32);
        let mut missed: Vec<Address> = (0..rounds)
            .map(|r| validators.proposer(height, r).address)
            .filter(|a| *a != proposer)
            .collect();
        missed.sort();
        missed.dedup();
        for v in missed {
            let i = match entries.binary_search_by(|e| e.validator.cmp(&v)) {
                Ok(i) => i,
                Err(i) => {
                    entries.insert(
                        i,
                        Benched {
                            validator: v,
                            strikes: 0,
                            until_height: 0,
                        },
                    );
                    i
                }
            };
            let e = &mut entries[i];
            e.strikes = e.strikes.saturating_add(1);
            let shift = (e.strikes - 1).min(MAX_DOUBLINGS);
            e.until_height = height
                .saturating_add(1)
                .saturating_add(BENCH_HEIGHTS << shift);
        }
        Bench { entries }
    }

    /// The set whose rotation chooses the proposers of `height`: `base` with the validators benched at `height`
    /// skipped.
    pub fn apply(&self, base: &ValidatorSet, height: u64) -> ValidatorSet {
        base.with_benched(&self.benched_at(height))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validators::Validator;
    use ed25519_consensus::SigningKey;

    fn set(n: u8) -> ValidatorSet {
        ValidatorSet::new(
            (0..n)
                .map(|i| Validator::new(SigningKey::from([i + 1; 32]).verification_key(), 1))
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_missed_turn_benches_then_backs_off_and_success_clears() {
        let base = set(4);
        let mut bench = Bench::default();
        let h = 10;
        let dead = base.proposer(h, 0).address;
        let second = base.proposer(h, 1).address;
        bench = bench.after(&bench.apply(&base, h), h, 1, second);
        assert_eq!(bench.benched_at(h + 1), vec![dead]);
        assert_eq!(bench.entries()[0].until_height, h + 1 + BENCH_HEIGHTS);
        // While benched, the dead validator proposes none of the first three rounds of any height (later rounds
        // use the whole rotation, so that it cannot starve a value it holds).
        for height in h + 1..h + 1 + BENCH_HEIGHTS {
            let eff = bench.apply(&base, height);
            for r in 0..3 {
                assert_ne!(eff.proposer(height, r).address, dead);
            }
            assert!((3..7).any(|r| eff.proposer(height, r).address == dead));
        }
        // Back in the rotation it misses again: twice as long.
        let h2 = h + 1 + BENCH_HEIGHTS;
        let eff = bench.apply(&base, h2);
        let (r, _) = (0..4u32)
            .map(|r| (r, eff.proposer(h2, r).address))
            .find(|(_, a)| *a == dead)
            .unwrap();
        let next = eff.proposer(h2, r + 1).address;
        bench = bench.after(&eff, h2, r + 1, next);
        let e = bench
            .entries()
            .iter()
            .find(|e| e.validator == dead)
            .unwrap();
        assert_eq!(e.strikes, 2);
        assert_eq!(e.until_height, h2 + 1 + 2 * BENCH_HEIGHTS);
        // It comes back and proposes the decided block: cleared.
        let h3 = e.until_height;
        let eff = bench.apply(&base, h3);
        let r = (0..4u32)
            .find(|r| eff.proposer(h3, *r).address == dead)
            .unwrap();
        let before: Vec<Address> = (0..r).map(|x| eff.proposer(h3, x).address).collect();
        bench = bench.after(&eff, h3, r, dead);
        assert!(bench.entries().iter().all(|e| e.validator != dead));
        for a in before {
            assert!(bench.benched_at(h3 + 1).contains(&a));
        }
    }

    #[test]
    fn a_bench_holding_over_a_third_of_the_power_is_ignored() {
        let base = set(4);
        let two: Vec<Address> = base.validators()[..2].iter().map(|v| v.address).collect();
        let eff = base.with_benched(&two);
        for h in 0..8 {
            assert_eq!(eff.proposer(h, 0).address, base.proposer(h, 0).address);
        }
        let one = base.with_benched(&two[..1]);
        assert!((0..8).all(|h| one.proposer(h, 0).address != two[0]));
    }

    #[test]
    fn backoff_is_capped_and_a_fully_benched_set_still_has_proposers() {
        let base = set(4);
        let mut bench = Bench::default();
        let v = base.validators()[0].address;
        for k in 0..(MAX_DOUBLINGS + 5) as u64 {
            let h = 1000 + k;
            // Force a miss for `v` by building on a set where it holds round 0.
            let eff = base.clone();
            let r0 = (0..4u32)
                .find(|r| eff.proposer(h, *r).address == v)
                .unwrap();
            let winner = eff.proposer(h, r0 + 1).address;
            bench = bench.after(&eff, h, r0 + 1, winner);
        }
        let e = bench.entries().iter().find(|e| e.validator == v).unwrap();
        assert!(
            e.until_height - 1000 <= (MAX_DOUBLINGS as u64 + 5) + (BENCH_HEIGHTS << MAX_DOUBLINGS)
        );
        // Everyone benched: the full rotation is used rather than none.
        let all = Bench {
            entries: base
                .validators()
                .iter()
                .map(|x| Benched {
                    validator: x.address,
                    strikes: 1,
                    until_height: u64::MAX,
                })
                .collect(),
        };
        let eff = all.apply(&base, 5);
        assert_eq!(eff.proposer(5, 0).address, base.proposer(5, 0).address);
    }

    #[test]
    fn same_inputs_same_bench_and_huge_rounds_are_bounded() {
        let base = set(7);
        let b = Bench::default();
        let p = base.proposer(3, 6).address;
        let x = b.after(&base, 3, u32::MAX, p);
        let y = b.after(&base, 3, u32::MAX, p);
        assert_eq!(x, y);
        assert_eq!(x.entries().len(), 6);
        assert_eq!(borsh::to_vec(&x).unwrap(), borsh::to_vec(&y).unwrap());
    }
}
