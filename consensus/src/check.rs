//! The run checker: given what a client submitted (and which submissions were acknowledged) and the chain as
//! every node serves it, report what a sequencer must never do.
//!
//! - **forks**: two nodes with different blocks at one height, or a node whose chain does not link (a header that
//!   does not name the previous block, or a block hash that is not its header's hash);
//! - **lost**: an acknowledged bundle that is on no node's chain and was not reported expired or rejected;
//! - **duplicated**: an entry (bundle, rollup, index in bundle) that appears twice on one node's chain;
//! - **unknown**: a bundle on a chain that nobody submitted;
//! - **split**: a bundle whose entries sit at more than one height, or whose entries per rollup differ from what
//!   was submitted (atomic inclusion broken);
//! - **time to resume**: for each fault, from the moment it healed to the first height decided after that.
//!
//! It is pure (the readers live with the callers: the load harness reads nodes over gRPC, the in-process
//! simulations read their stores) and it reports every finding rather than stopping at the first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::hash::Hash;
use crate::ids::RollupId;

/// One submission from the history of a run.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub bundle: Hash,
    /// Entries per rollup, as submitted.
    pub entries: BTreeMap<RollupId, u32>,
    /// The node acknowledged it (so it must be included, or reported expired or rejected).
    pub acked: bool,
}

/// One block as a node serves it.
#[derive(Clone, Debug)]
pub struct ChainBlock {
    pub height: u64,
    /// The block hash the node gave.
    pub hash: Hash,
    /// The hash of the header it served (must equal `hash`).
    pub header_hash: Hash,
    pub parent_hash: Hash,
}

/// One entry of a rollup's batch as a node serves it.
#[derive(Clone, Debug)]
pub struct ChainEntry {
    pub height: u64,
    pub rollup: RollupId,
    pub bundle: Hash,
    pub index_in_bundle: u32,
}

/// A node's chain from height 1 up to the height it was read at.
#[derive(Clone, Debug, Default)]
pub struct NodeChain {
    pub node: String,
    pub blocks: Vec<ChainBlock>,
    pub entries: Vec<ChainEntry>,
}

/// A fault of the run and when it healed (milliseconds on the run's clock; None: never healed).
#[derive(Clone, Debug)]
pub struct Fault {
    pub label: String,
    pub healed_ms: Option<u64>,
}

/// Everything the checker takes.
#[derive(Clone, Debug, Default)]
pub struct RunHistory {
    pub submitted: Vec<Submitted>,
    /// Bundles the network reported expired or rejected after acknowledging them.
    pub dropped: BTreeSet<Hash>,
    pub chains: Vec<NodeChain>,
    pub faults: Vec<Fault>,
    /// (run clock ms, highest height any node had decided) samples, in time order.
    pub progress: Vec<(u64, u64)>,
}

/// Two nodes that disagree at a height.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fork {
    pub height: u64,
    pub node_a: String,
    pub hash_a: Hash,
    pub node_b: String,
    pub hash_b: Hash,
}

/// A node whose chain does not link at a height.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokenLink {
    pub node: String,
    pub height: u64,
    pub what: &'static str,
}

/// The time to resume after one fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    pub label: String,
    /// Milliseconds from healing to the first new height; None if none followed (or the fault never healed).
    pub ms: Option<u64>,
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub nodes: usize,
    /// Heights compared across nodes (up to the lowest tip among them).
    pub heights_compared: u64,
    pub submitted: usize,
    pub acked: usize,
    pub included: usize,
    pub forks: Vec<Fork>,
    pub broken_links: Vec<BrokenLink>,
    pub lost: Vec<Hash>,
    pub duplicated: Vec<Hash>,
    pub unknown: Vec<Hash>,
    pub split: Vec<Hash>,
    pub resumes: Vec<Resume>,
}

impl CheckReport {
    /// No fork, no broken link, nothing lost, duplicated, unknown or split.
    pub fn ok(&self) -> bool {
        self.forks.is_empty()
            && self.broken_links.is_empty()
            && self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.unknown.is_empty()
            && self.split.is_empty()
    }

    /// The slowest recovery, if every fault was followed by progress.
    pub fn worst_resume_ms(&self) -> Option<u64> {
        self.resumes.iter().map(|r| r.ms).max().flatten()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes, {} heights compared, {} submitted, {} acked, {} included: forks {}, broken links {}, \
             lost {}, duplicated {}, unknown {}, split {}",
            self.nodes,
            self.heights_compared,
            self.submitted,
            self.acked,
            self.included,
            self.forks.len(),
            self.broken_links.len(),
            self.lost.len(),
            self.duplicated.len(),
            self.unknown.len(),
            self.split.len()
        )?;
        for r in &self.resumes {
            match r.ms {
                Some(ms) => write!(f, "; {} resumed in {ms} ms", r.label)?,
                None => write!(f, "; {} never resumed", r.label)?,
            }
        }
        if let Some(x) = self.forks.first() {
            write!(
                f,
                "; first fork at height {}: {} has {}, {} has {}",
                x.height, x.node_a, x.hash_a, x.node_b, x.hash_b
            )?;
        }
        if let Some(b) = self.broken_links.first() {
            write!(f, "; {} height {}: {}", b.node, b.height, b.what)?;
        }
        Ok(())
    }
}

/// Runs every check over a run's history.
pub fn check(run: &RunHistory) -> CheckReport {
    let mut report = CheckReport {
        nodes: run.chains.len(),
        submitted: run.submitted.len(),
        acked: run.submitted.iter().filter(|s| s.acked).count(),
        ..CheckReport::default()
    };

    // Forks: every pair of nodes agrees at every height both have.
    let mut by_height: BTreeMap<u64, Vec<(&str, Hash)>> = BTreeMap::new();
    for chain in &run.chains {
        let mut prev: Option<&ChainBlock> = None;
        for b in &chain.blocks {
            by_height
                .entry(b.height)
                .or_default()
                .push((&chain.node, b.hash));
            if b.header_hash != b.hash {
                report.broken_links.push(BrokenLink {
                    node: chain.node.clone(),
                    height: b.height,
                    what: "block hash is not the hash of the served header",
                });
            }
            if let Some(p) = prev {
                if b.height != p.height + 1 {
                    report.broken_links.push(BrokenLink {
                        node: chain.node.clone(),
                        height: b.height,
                        what: "heights skip",
                    });
                } else if b.parent_hash != p.hash {
                    report.broken_links.push(BrokenLink {
                        node: chain.node.clone(),
                        height: b.height,
                        what: "header does not name the previous block",
                    });
                }
            }
            prev = Some(b);
        }
    }
    for (height, seen) in &by_height {
        let (node_a, hash_a) = seen[0];
        if let Some((node_b, hash_b)) = seen.iter().find(|(_, h)| *h != hash_a) {
            report.forks.push(Fork {
                height: *height,
                node_a: node_a.to_string(),
                hash_a,
                node_b: node_b.to_string(),
                hash_b: *hash_b,
            });
        }
    }
    report.heights_compared = run
        .chains
        .iter()
        .map(|c| c.blocks.last().map_or(0, |b| b.height))
        .min()
        .unwrap_or(0);

    // Bundles on each chain.
    let submitted: HashMap<Hash, &Submitted> =
        run.submitted.iter().map(|s| (s.bundle, s)).collect();
    let mut included: BTreeSet<Hash> = BTreeSet::new();
    let mut duplicated = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    let mut split = BTreeSet::new();
    for chain in &run.chains {
        let mut entries: HashMap<(Hash, RollupId, u32), u32> = HashMap::new();
        let mut heights: HashMap<Hash, BTreeSet<u64>> = HashMap::new();
        let mut per_rollup: HashMap<Hash, BTreeMap<RollupId, u32>> = HashMap::new();
        for e in &chain.entries {
            *entries
                .entry((e.bundle, e.rollup, e.index_in_bundle))
                .or_default() += 1;
            heights.entry(e.bundle).or_default().insert(e.height);
            *per_rollup
                .entry(e.bundle)
                .or_default()
                .entry(e.rollup)
                .or_default() += 1;
        }
        for ((bundle, _, _), n) in &entries {
            if *n > 1 {
                duplicated.insert(*bundle);
            }
        }
        for (bundle, hs) in &heights {
            included.insert(*bundle);
            match submitted.get(bundle) {
                None => {
                    unknown.insert(*bundle);
                }
                Some(s) => {
                    if hs.len() > 1 || per_rollup.get(bundle) != Some(&s.entries) {
                        split.insert(*bundle);
                    }
                }
            }
        }
    }
    // A duplicated entry also changes the per-rollup count; report it once, as a duplicate.
    for d in &duplicated {
        split.remove(d);
    }
    report.included = included.len();
    report.lost = run
        .submitted
        .iter()
        .filter(|s| s.acked && !included.contains(&s.bundle) && !run.dropped.contains(&s.bundle))
        .map(|s| s.bundle)
        .collect();
    report.duplicated = duplicated.into_iter().collect();
    report.unknown = unknown.into_iter().collect();
    report.split = split.into_iter().collect();

    // Time to resume: the first sample after healing whose height is above the height at healing.
    for fault in &run.faults {
        let ms = fault.healed_ms.and_then(|healed| {
            let at_heal = run
                .progress
                .iter()
                .take_while(|(t, _)| *t <= healed)
                .map(|(_, h)| *h)
                .max()
                .unwrap_or(0);
            run.progress
                .iter()
                .find(|(t, h)| *t >= healed && *h > at_heal)
                .map(|(t, _)| t - healed)
        });
        report.resumes.push(Resume {
            label: fault.label.clone(),
            ms,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u64) -> Hash {
        Hash::digest(&[&n.to_be_bytes()])
    }

    /// A clean two-node run: 3 heights; bundle 100 (two entries in rollup 1, one in 2) at height 2, bundle 101
    /// at height 3.
    fn clean() -> RunHistory {
        let blocks: Vec<ChainBlock> = (1..=3)
            .map(|i| ChainBlock {
                height: i,
                hash: h(i),
                header_hash: h(i),
                parent_hash: if i == 1 { Hash::ZERO } else { h(i - 1) },
            })
            .collect();
        let e = |height, rollup, bundle, index_in_bundle| ChainEntry {
            height,
            rollup,
            bundle: h(bundle),
            index_in_bundle,
        };
        let entries = vec![
            e(2, 1, 100, 0),
            e(2, 2, 100, 1),
            e(2, 1, 100, 2),
            e(3, 1, 101, 0),
        ];
        let chain = |node: &str| NodeChain {
            node: node.into(),
            blocks: blocks.clone(),
            entries: entries.clone(),
        };
        RunHistory {
            submitted: vec![
                Submitted {
                    bundle: h(100),
                    entries: BTreeMap::from([(1, 2), (2, 1)]),
                    acked: true,
                },
                Submitted {
                    bundle: h(101),
                    entries: BTreeMap::from([(1, 1)]),
                    acked: true,
                },
                Submitted {
                    bundle: h(102),
                    entries: BTreeMap::from([(1, 1)]),
                    acked: false,
                },
            ],
            dropped: BTreeSet::new(),
            chains: vec![chain("a"), chain("b")],
            faults: vec![Fault {
                label: "kill".into(),
                healed_ms: Some(1_000),
            }],
            progress: vec![(500, 2), (1_000, 2), (1_200, 2), (1_450, 3)],
        }
    }

    #[test]
    fn a_clean_run_passes_and_times_the_resume() {
        let r = check(&clean());
        assert!(r.ok(), "{r}");
        assert_eq!(r.heights_compared, 3);
        assert_eq!((r.submitted, r.acked, r.included), (3, 2, 2));
        assert_eq!(r.resumes[0].ms, Some(450));
        assert_eq!(r.worst_resume_ms(), Some(450));
    }

    #[test]
    fn each_violation_is_found() {
        // A fork at height 3 on node b.
        let mut run = clean();
        run.chains[1].blocks[2].hash = h(33);
        run.chains[1].blocks[2].header_hash = h(33);
        let r = check(&run);
        assert_eq!(r.forks.len(), 1);
        assert_eq!(r.forks[0].height, 3);
        assert!(!r.ok());

        // A broken link and a hash that is not the header's.
        let mut run = clean();
        run.chains[0].blocks[2].parent_hash = h(9);
        run.chains[0].blocks[1].header_hash = h(9);
        let r = check(&run);
        assert_eq!(r.broken_links.len(), 2, "{r}");

        // Lost: acked, nowhere, not dropped. Dropped is fine.
        let mut run = clean();
        for c in &mut run.chains {
            c.entries.retain(|e| e.bundle != h(101));
        }
        assert_eq!(check(&run).lost, vec![h(101)]);
        run.dropped.insert(h(101));
        assert!(check(&run).ok());

        // Duplicated entry.
        let mut run = clean();
        let again = run.chains[0].entries[3].clone();
        run.chains[0]
            .entries
            .push(ChainEntry { height: 3, ..again });
        let r = check(&run);
        assert_eq!(r.duplicated, vec![h(101)]);
        assert!(r.split.is_empty());

        // Unknown bundle.
        let mut run = clean();
        run.chains[0].entries.push(ChainEntry {
            height: 3,
            rollup: 1,
            bundle: h(555),
            index_in_bundle: 0,
        });
        assert_eq!(check(&run).unknown, vec![h(555)]);

        // Split across heights, and an entry missing from one rollup.
        let mut run = clean();
        run.chains[0].entries[1].height = 3;
        assert_eq!(check(&run).split, vec![h(100)]);
        let mut run = clean();
        run.chains[1].entries.remove(1);
        assert_eq!(check(&run).split, vec![h(100)]);

        // No progress after healing.
        let mut run = clean();
        run.progress.truncate(3);
        assert_eq!(check(&run).resumes[0].ms, None);
    }
}
