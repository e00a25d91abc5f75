//! The simulated network: each message's fate (lost, delayed, duplicated) drawn from the run's seeded
//! generator, and scheduled partitions that cut every link between groups of nodes for a while.

use rand::rngs::StdRng;
use rand::Rng;

/// Per-message faults on every link.
#[derive(Clone, Debug)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message arrives twice.
    pub duplicate: f64,
    /// Delivery delay, uniform in this range (milliseconds); messages overtake each other within it.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// The faults stop at this virtual time (ms): afterwards messages take 1–5 ms and none is lost or
    /// duplicated, so a run can end with a calm period in which everything acknowledged must get included.
    pub until_ms: u64,
}

impl Default for NetFaults {
    /// A clean LAN: 1–5 ms, nothing lost or duplicated.
    fn default() -> Self {
        NetFaults {
            drop: 0.0,
            duplicate: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 5,
            until_ms: u64::MAX,
        }
    }
}

/// From `from_ms` until `to_ms` (virtual time since the start), nodes in different groups cannot reach each
/// other. Nodes in no group are cut off from everyone.
#[derive(Clone, Debug)]
pub struct Partition {
    pub label: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub groups: Vec<Vec<usize>>,
}

impl Partition {
    fn cuts(&self, now_ms: u64, a: usize, b: usize) -> bool {
        if now_ms < self.from_ms || now_ms >= self.to_ms {
            return false;
        }
        let group = |n: usize| self.groups.iter().position(|g| g.contains(&n));
        match (group(a), group(b)) {
            (Some(x), Some(y)) => x != y,
            _ => true,
        }
    }
}

impl NetFaults {
    /// What happens to one message sent now from `from` to `to`: None if lost, else the delay and the number of
    /// copies delivered.
    pub fn fate(
        &self,
        rng: &mut StdRng,
        partitions: &[Partition],
        now_ms: u64,
        from: usize,
        to: usize,
    ) -> Option<(u64, u32)> {
        if partitions.iter().any(|p| p.cuts(now_ms, from, to)) {
            return None;
        }
        if now_ms >= self.until_ms {
            return Some((rng.gen_range(1..=5), 1));
        }
        if self.drop > 0.0 && rng.gen_bool(self.drop.min(1.0)) {
            return None;
        }
        let delay = rng.gen_range(self.min_delay_ms..=self.max_delay_ms.max(self.min_delay_ms));
        let copies = if self.duplicate > 0.0 && rng.gen_bool(self.duplicate.min(1.0)) {
            2
        } else {
            1
        };
        Some((delay, copies))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cut_across_groups_only_while_active() {
        let p = Partition {
            label: "2|2".into(),
            from_ms: 100,
            to_ms: 200,
            groups: vec![vec![0, 1], vec![2, 3]],
        };
        assert!(!p.cuts(99, 0, 2));
        assert!(p.cuts(100, 0, 2));
        assert!(!p.cuts(150, 0, 1));
        assert!(p.cuts(150, 3, 1));
        assert!(!p.cuts(200, 0, 2));
        let isolated = Partition {
            groups: vec![vec![0, 1, 2]],
            ..p
        };
        assert!(isolated.cuts(150, 3, 0));
        assert!(!isolated.cuts(150, 2, 0));
    }

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let f = NetFaults {
            drop: 0.2,
            duplicate: 0.1,
            min_delay_ms: 1,
            max_delay_ms: 50,
            until_ms: u64::MAX,
        };
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..200)
                .map(|i| f.fate(&mut rng, &[], i, 0, 1))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let lost = run(7).iter().filter(|x| x.is_none()).count();
        assert!((20..=60).contains(&lost), "{lost} of 200 lost at p = 0.2");
    }
}
