//! Proposer benching: a validator that misses its turn to propose sits out of the rotation for a while.
//!
//! Without it a crashed validator costs a propose timeout every time its slot comes round (one height in four
//! with four equal validators), which puts its timeout into the latency of a quarter of all bundles. With it the
//! first missed turn costs one timeout, then the validator is skipped for the genesis `bench_ms` of chain time
//! ([`crate::params::ConsensusParams::bench_ms`], 30 s by default); if it misses again when its turn returns, the
//! bench doubles (up to `bench_ms << MAX_DOUBLINGS`). A validator that proposes
//! the decided block is cleared at once. Benched validators still vote.
//!
//! The bench is measured in chain time (block timestamps), not in heights: heights follow load (a few per second
//! idle, dozens under load), so a bench of a fixed number of heights would let a crashed validator cost a timeout
//! every second or two exactly when the chain is busiest. Block timestamps are in the headers every validator
//! checks (increasing, and within `max_clock_drift_ms` of each validator's clock), so all agree on the rotation.
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
//!
//! A bench that runs out is not always ended. The block whose timestamp reaches a validator's `until_ms` may
//! instead keep it benched for another `bench_ms`, with the same strikes ([`Bench::after`]'s `kept`): an honest
//! proposer does so when it has not seen the validator's precommit in a commit certificate for a while (the host's
//! presence memory). So a validator that is down and not voting is never tried again as a proposer: trying it
//! costs a propose timeout, a stall that lands in the latency of every bundle waiting at that height. A validator
//! that votes comes back when its bench runs out, as before, and misses count as before. Validators accept either
//! outcome, since whether a peer votes is each node's own view: a faulty proposer can keep a voting validator
//! benched only when it proposes the very block at which that bench runs out, for one more `bench_ms`, and it
//! cannot bench anyone new this way.

use borsh::{BorshDeserialize, BorshSerialize};

use crate::ids::Address;
use crate::validators::ValidatorSet;

/// Consecutive misses beyond the first double the bench up to this many times (with the default 30 s,
/// 30 s << 10 = about 8.5 hours).
pub const MAX_DOUBLINGS: u32 = 10;

/// One validator with missed turns on record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub struct Benched {
    pub validator: Address,
    /// Consecutive missed turns (reset when it proposes a decided block).
    pub strikes: u32,
    /// Chain time (block timestamp, ms) from which it is back in the rotation: the rotation of a height skips
    /// it while the parent block's timestamp is below this.
    pub until_ms: u64,
}

/// The bench after a block: validators with missed turns, sorted by address.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize,
)]
pub struct Bench {
    entries: Vec<Benched>,
}

/// One block as the bench sees it: where it was built, by whom, and when.
#[derive(Clone, Copy, Debug)]
pub struct Turn<'a> {
    /// The set with the parent's bench applied: the rotation that chose the proposers of this height.
    pub validators: &'a ValidatorSet,
    pub height: u64,
    /// The round the block was built in.
    pub round: u32,
    pub proposer: Address,
    pub parent_timestamp_ms: u64,
    pub timestamp_ms: u64,
    /// The chain's first bench ([`crate::params::ConsensusParams::bench_ms`]).
    pub bench_ms: u64,
}

impl Turn<'_> {
    /// Whether `e`'s bench runs out at this block: it benched the validator for this height (past the parent's
    /// timestamp) and ends by this block's timestamp.
    fn ends(&self, e: &Benched) -> bool {
        e.until_ms > self.parent_timestamp_ms && e.until_ms <= self.timestamp_ms
    }

    /// Where a bench kept at this block ends: one `bench_ms` after it.
    fn renewed_until(&self) -> u64 {
        self.timestamp_ms.saturating_add(self.bench_ms)
    }
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

    /// Validators out of the rotation of the height after a block with timestamp `parent_timestamp_ms`.
    pub fn benched_at(&self, parent_timestamp_ms: u64) -> Vec<Address> {
        self.entries
            .iter()
            .filter(|e| e.until_ms > parent_timestamp_ms)
            .map(|e| e.validator)
            .collect()
    }

    /// Validators whose bench runs out at the block of `turn`: benched for its height, back in the rotation
    /// after it unless kept.
    pub fn running_out(&self, turn: &Turn<'_>) -> Vec<Address> {
        self.entries
            .iter()
            .filter(|e| turn.ends(e))
            .map(|e| e.validator)
            .collect()
    }

    /// The bench after the block of `turn`. Entries of validators no longer in the set are dropped. Of the
    /// validators whose bench runs out at this block ([`Self::running_out`]), those in `kept` stay benched for
    /// another `bench_ms` with their strikes unchanged; `kept` may name others, which are ignored.
    pub fn after(&self, turn: &Turn<'_>, kept: &[Address]) -> Bench {
        let validators = turn.validators;
        let mut entries: Vec<Benched> = self
            .entries
            .iter()
            .filter(|e| e.validator != turn.proposer && validators.get(&e.validator).is_some())
            .cloned()
            .collect();
        for e in &mut entries {
            if turn.ends(e) && kept.contains(&e.validator) {
                e.until_ms = turn.renewed_until();
            }
        }
        // Rounds beyond one full rotation name the same validators again.
        let rounds = turn.round.min(validators.validators().len() as u32);
        let mut missed: Vec<Address> = (0..rounds)
            .map(|r| validators.proposer(turn.height, r).address)
            .filter(|a| *a != turn.proposer)
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
                            until_ms: 0,
                        },
                    );
                    i
                }
            };
            let e = &mut entries[i];
            e.strikes = e.strikes.saturating_add(1);
            let shift = (e.strikes - 1).min(MAX_DOUBLINGS);
            e.until_ms = turn
                .timestamp_ms
                .saturating_add(turn.bench_ms.saturating_mul(1 << shift));
        }
        Bench { entries }
    }

    /// The validators a block's header keeps benched: those whose bench runs out at the block of `turn` and that
    /// `header_bench` (the bench the header carries) benches for another `bench_ms` with the same strikes. The
    /// block rules then check the header's bench against [`Self::after`] with these.
    pub fn kept_in(&self, header_bench: &Bench, turn: &Turn<'_>) -> Vec<Address> {
        self.entries
            .iter()
            .filter(|e| turn.ends(e))
            .filter(|e| {
                header_bench
                    .entries
                    .binary_search_by(|h| h.validator.cmp(&e.validator))
                    .is_ok_and(|i| {
                        let h = &header_bench.entries[i];
                        h.strikes == e.strikes && h.until_ms == turn.renewed_until()
                    })
            })
            .map(|e| e.validator)
            .collect()
    }

    /// The set whose rotation chooses the proposers of the height after a block with timestamp
    /// `parent_timestamp_ms` (this being that block's bench): `base` with the validators benched then skipped.
    pub fn apply(&self, base: &ValidatorSet, parent_timestamp_ms: u64) -> ValidatorSet {
        base.with_benched(&self.benched_at(parent_timestamp_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::ConsensusParams;
    /// The chain's default first bench.
    const BENCH_MS: u64 = ConsensusParams::DEFAULT_BENCH_MS;
    use crate::validators::Validator;
    use ed25519_consensus::SigningKey;

    fn turn(
        validators: &ValidatorSet,
        height: u64,
        round: u32,
        proposer: Address,
        parent_timestamp_ms: u64,
        timestamp_ms: u64,
    ) -> Turn<'_> {
        Turn {
            validators,
            height,
            round,
            proposer,
            parent_timestamp_ms,
            timestamp_ms,
            bench_ms: BENCH_MS,
        }
    }

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
        let (h, t) = (10, 5_000);
        let dead = base.proposer(h, 0).address;
        let second = base.proposer(h, 1).address;
        let eff = bench.apply(&base, t - 50);
        bench = bench.after(&turn(&eff, h, 1, second, t - 50, t), &[]);
        assert_eq!(bench.benched_at(t), vec![dead]);
        assert_eq!(bench.entries()[0].until_ms, t + BENCH_MS);
        // While benched (whatever the number of heights in that time), the dead validator proposes none of the
        // first three rounds of any height (later rounds use the whole rotation, so that it cannot starve a value
        // it holds).
        for (i, parent_ts) in [t, t + 1, t + BENCH_MS / 2, t + BENCH_MS - 1]
            .into_iter()
            .enumerate()
        {
            let height = h + 1 + i as u64 * 1_000;
            let eff = bench.apply(&base, parent_ts);
            for r in 0..3 {
                assert_ne!(eff.proposer(height, r).address, dead);
            }
            assert!((3..7).any(|r| eff.proposer(height, r).address == dead));
        }
        // Back in the rotation once the parent's timestamp reaches the bench's end, it misses again: twice as long.
        let (h2, t2) = (h + 3_000, t + BENCH_MS + 20);
        assert!(bench.benched_at(t + BENCH_MS).is_empty());
        let eff = bench.apply(&base, t + BENCH_MS);
        let (r, _) = (0..4u32)
            .map(|r| (r, eff.proposer(h2, r).address))
            .find(|(_, a)| *a == dead)
            .unwrap();
        let next = eff.proposer(h2, r + 1).address;
        bench = bench.after(&turn(&eff, h2, r + 1, next, t + BENCH_MS, t2), &[]);
        let e = bench
            .entries()
            .iter()
            .find(|e| e.validator == dead)
            .unwrap();
        assert_eq!(e.strikes, 2);
        assert_eq!(e.until_ms, t2 + 2 * BENCH_MS);
        // It comes back and proposes the decided block: cleared.
        let (h3, t3) = (h2 + 7, e.until_ms);
        let eff = bench.apply(&base, t3);
        let r = (0..4u32)
            .find(|r| eff.proposer(h3, *r).address == dead)
            .unwrap();
        let before: Vec<Address> = (0..r).map(|x| eff.proposer(h3, x).address).collect();
        bench = bench.after(&turn(&eff, h3, r, dead, t3, t3 + 20), &[]);
        assert!(bench.entries().iter().all(|e| e.validator != dead));
        for a in before {
            assert!(bench.benched_at(t3 + 20).contains(&a));
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
        let t0 = 1_000_000;
        for k in 0..(MAX_DOUBLINGS + 5) as u64 {
            let h = 1000 + k;
            // Force a miss for `v` by building on a set where it holds round 0.
            let eff = base.clone();
            let r0 = (0..4u32)
                .find(|r| eff.proposer(h, *r).address == v)
                .unwrap();
            let winner = eff.proposer(h, r0 + 1).address;
            bench = bench.after(&turn(&eff, h, r0 + 1, winner, t0 + k - 1, t0 + k), &[]);
        }
        let e = bench.entries().iter().find(|e| e.validator == v).unwrap();
        assert_eq!(e.strikes, MAX_DOUBLINGS + 5);
        assert_eq!(
            e.until_ms,
            t0 + (MAX_DOUBLINGS as u64 + 4) + (BENCH_MS << MAX_DOUBLINGS)
        );
        // Everyone benched: the full rotation is used rather than none.
        let all = Bench {
            entries: base
                .validators()
                .iter()
                .map(|x| Benched {
                    validator: x.address,
                    strikes: 1,
                    until_ms: u64::MAX,
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
        let x = b.after(&turn(&base, 3, u32::MAX, p, 76, 77), &[]);
        let y = b.after(&turn(&base, 3, u32::MAX, p, 76, 77), &[]);
        assert_eq!(x, y);
        assert_eq!(x.entries().len(), 6);
        assert_eq!(borsh::to_vec(&x).unwrap(), borsh::to_vec(&y).unwrap());
    }

    #[test]
    fn a_running_out_bench_is_kept_only_at_its_end_and_kept_is_read_back_from_the_header() {
        let base = set(4);
        let (h, t) = (10, 5_000);
        let dead = base.proposer(h, 0).address;
        let second = base.proposer(h, 1).address;
        let eff = base.clone();
        let bench = Bench::default().after(&turn(&eff, h, 1, second, t - 50, t), &[]);
        let until = t + BENCH_MS;
        // Before its end, `kept` changes nothing.
        let eff = bench.apply(&base, t);
        let p = eff.proposer(h + 1, 0).address;
        let early = turn(&eff, h + 1, 0, p, t, t + 20);
        assert!(bench.running_out(&early).is_empty());
        assert_eq!(bench.after(&early, &[dead]), bench.after(&early, &[]));
        // At the block whose timestamp reaches it: ended, or kept for another bench with the same strikes.
        let (parent, ts) = (until - 10, until + 5);
        let eff = bench.apply(&base, parent);
        let p = eff.proposer(h + 500, 0).address;
        let at_end = turn(&eff, h + 500, 0, p, parent, ts);
        assert_eq!(bench.running_out(&at_end), vec![dead]);
        let ended = bench.after(&at_end, &[]);
        assert!(ended.benched_at(ts).is_empty());
        let kept = bench.after(&at_end, &[dead, second]);
        assert_eq!(kept.benched_at(ts), vec![dead]);
        assert_eq!(kept.entries()[0].strikes, 1);
        assert_eq!(kept.entries()[0].until_ms, ts + BENCH_MS);
        // A validator checking the header reads back what the proposer kept, and nothing from an ended one.
        assert_eq!(bench.kept_in(&kept, &at_end), vec![dead]);
        assert!(bench.kept_in(&ended, &at_end).is_empty());
        assert_eq!(bench.after(&at_end, &bench.kept_in(&kept, &at_end)), kept);
        // A header that pushes the end out by anything but one bench is not a keep.
        let mut odd = kept.clone();
        odd.entries[0].until_ms += 1;
        assert!(bench.kept_in(&odd, &at_end).is_empty());
        assert_ne!(bench.after(&at_end, &bench.kept_in(&odd, &at_end)), odd);
        // Kept again and again, it never comes back to cost a propose timeout, and gains no strikes.
        let mut b = kept;
        let mut now = ts;
        for k in 0..5u64 {
            let next = now + BENCH_MS;
            let eff = b.apply(&base, next - 1);
            assert!((0..3).all(|r| eff.proposer(h + 600 + k, r).address != dead));
            let p = eff.proposer(h + 600 + k, 0).address;
            b = b.after(&turn(&eff, h + 600 + k, 0, p, next - 1, next), &[dead]);
            now = next;
        }
        assert_eq!(b.entries()[0].strikes, 1);
        assert_eq!(b.benched_at(now), vec![dead]);
    }
}
