//! Seeded fault runs. Each test prints its seeds; `BATON_SIM_SEED=<seed>` replays one, `BATON_SIM_RUNS=<n>`
//! sets how many seeds each scenario tries (default 3) and `BATON_SIM_VALIDATORS=<n>` the network size
//! (default 4); the long suite uses more of both. `BATON_SIM_TRACE=1` prints each node's rounds, proposals and
//! refused inputs.

use super::*;
use crate::bundle::testing::bundle;

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("BATON_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let runs = std::env::var("BATON_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    (0..runs).map(|_| rand::random()).collect()
}

/// 8 senders × `per_sender` bundles (some spanning two rollups), spread over the first `over_ms`, each sender
/// submitting to one honest node in nonce order.
fn load(per_sender: u64, over_ms: u64, honest: &[usize]) -> Vec<(u64, usize, Bundle)> {
    let mut out = Vec::new();
    for s in 0..8u8 {
        for nonce in 0..per_sender {
            let rollups: &[u64] = if nonce % 3 == 0 { &[1, 2] } else { &[3] };
            let t = (nonce * over_ms / per_sender) + u64::from(s) * 7;
            out.push((
                t,
                honest[s as usize % honest.len()],
                bundle(s + 1, nonce, rollups, s),
            ));
        }
    }
    out
}

/// Validators per simulated network.
fn size() -> usize {
    std::env::var("BATON_SIM_VALIDATORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
        .max(4)
}

fn config(seed: u64, validators: usize, duration_ms: u64) -> SimConfig {
    SimConfig {
        seed,
        validators,
        duration_ms,
        faults: NetFaults::default(),
        partitions: vec![],
        byzantine: vec![],
        submissions: vec![],
        spec: ChainSpec::for_tests(7, 4),
        l1: None,
    }
}

/// Runs, prints the outcome, and asserts the checker's verdict and that every honest node kept up.
fn run_and_judge(name: &str, cfg: SimConfig, min_height: u64, max_resume_ms: u64) -> SimOutcome {
    let seed = cfg.seed;
    let honest: Vec<usize> = (0..cfg.validators)
        .filter(|i| !cfg.byzantine.iter().any(|(b, _)| b == i))
        .collect();
    let out = Sim::new(cfg).run();
    println!(
        "{name} seed {seed}: heights {:?}, {} messages ({} lost, {} duplicated), {} events; {}",
        out.heights, out.sent, out.dropped, out.duplicated, out.events, out.report
    );
    let replay = format!("(replay: BATON_SIM_SEED={seed} cargo test -p baton-consensus {name})");
    assert!(out.report.ok(), "{name}: {} {replay}", out.report);
    assert_eq!(
        out.report.submitted, out.report.included,
        "{name}: acked bundles not all included {replay}"
    );
    for &i in &honest {
        assert!(
            out.heights[i] >= min_height,
            "{name}: node{i} reached only height {} {replay}",
            out.heights[i]
        );
    }
    if let Some(worst) = out.report.worst_resume_ms() {
        assert!(
            worst <= max_resume_ms,
            "{name}: resumed after {worst} ms {replay}"
        );
    }
    assert!(
        out.report.resumes.iter().all(|r| r.ms.is_some()),
        "{name}: no progress after a fault healed {replay}"
    );
    out
}

#[test]
fn sim_healthy_network_decides_everything_once() {
    for seed in seeds() {
        let n = size();
        let mut cfg = config(seed, n, 20_000);
        cfg.submissions = load(25, 10_000, &(0..n).collect::<Vec<_>>());
        let out = run_and_judge("sim_healthy", cfg, 100, 0);
        assert_eq!(out.report.included, 200);
    }
}

/// With the production defaults heights follow load: an idle network makes about one height per `max_idle_ms`,
/// and a burst of bundles makes heights come at about `block_time_ms` until it is included.
#[test]
fn sim_idle_heights_follow_load() {
    for seed in seeds() {
        let n = size();
        let mut cfg = config(seed, n, 20_000);
        cfg.spec.params = crate::params::ConsensusParams::default();
        let idle = cfg.spec.params.max_idle_ms;
        let out = run_and_judge("sim_idle", cfg.clone(), 1, 0);
        let idle_heights = out.heights[0];
        // 20 s idle at one height per 500 ms (plus the time a height takes): about 40.
        assert!(
            idle_heights <= 20_000 / idle + 1 && idle_heights >= 20_000 / idle / 2,
            "seed {seed}: {idle_heights} idle heights in 20 s"
        );
        // The same 20 s with 200 bundles over the first 10 s: heights come faster while they arrive, and every
        // bundle is included.
        cfg.submissions = load(25, 10_000, &(0..n).collect::<Vec<_>>());
        let out = run_and_judge("sim_idle_then_load", cfg, 1, 0);
        assert_eq!(out.report.included, 200, "seed {seed}");
        assert!(
            out.heights[0] > idle_heights + 50,
            "seed {seed}: {} heights under load vs {idle_heights} idle",
            out.heights[0]
        );
    }
}

#[test]
fn sim_lossy_reordering_network_with_partitions() {
    for seed in seeds() {
        let n = size();
        let mut cfg = config(seed, n, 40_000);
        cfg.faults = NetFaults {
            drop: 0.05,
            duplicate: 0.05,
            min_delay_ms: 1,
            max_delay_ms: 60,
            until_ms: 30_000,
        };
        cfg.partitions = vec![
            Partition {
                label: "halves partition".into(),
                from_ms: 5_000,
                to_ms: 10_000,
                groups: vec![(0..n / 2).collect(), (n / 2..n).collect()],
            },
            Partition {
                label: "last node isolated".into(),
                from_ms: 15_000,
                to_ms: 20_000,
                groups: vec![(0..n - 1).collect()],
            },
            Partition {
                label: "node0 isolated".into(),
                from_ms: 24_000,
                to_ms: 27_000,
                groups: vec![(1..n).collect()],
            },
        ];
        cfg.submissions = load(30, 25_000, &(0..n).collect::<Vec<_>>());
        run_and_judge("sim_lossy", cfg, 50, 20_000);
    }
}

/// One Byzantine validator on a mildly lossy network (2% loss and duplication, 1–30 ms, calm after 20 s), the
/// honest ones under load.
fn byzantine_run(name: &str, behaviour: Behaviour, pick: impl Fn(usize) -> usize) {
    for seed in seeds() {
        let n = size();
        let byz = pick(n);
        let mut cfg = config(seed, n, 30_000);
        cfg.faults = NetFaults {
            drop: 0.02,
            duplicate: 0.02,
            min_delay_ms: 1,
            max_delay_ms: 30,
            until_ms: 20_000,
        };
        cfg.byzantine = vec![(byz, behaviour)];
        cfg.submissions = load(
            20,
            15_000,
            &(0..n).filter(|i| *i != byz).collect::<Vec<_>>(),
        );
        run_and_judge(name, cfg, 30, 10_000);
    }
}

#[test]
fn sim_equivocating_proposer_cannot_fork_the_honest_nodes() {
    byzantine_run("sim_equivocating", Behaviour::EquivocatingProposer, |n| {
        n - 1
    });
}

#[test]
fn sim_double_voter_cannot_fork_the_honest_nodes() {
    byzantine_run("sim_double_voter", Behaviour::DoubleVoter, |_| 1);
}

#[test]
fn sim_an_equivocating_validator_is_jailed_at_the_next_epoch() {
    use crate::epoch::{PositionedEvent, SetRules, StakeEvent};
    for seed in seeds() {
        let n = size().max(5);
        let byz = 1;
        let mut cfg = config(seed, n, 30_000);
        // Everyone staked (power 1 each) in L1 block 1; epochs of 20 heights; a set of n - 1 is allowed.
        let l1 = crate::origin::MemL1::new(1_000);
        l1.mine();
        for i in 0..n {
            l1.stake(
                1,
                PositionedEvent {
                    tx_index: i as u64,
                    log_index: 0,
                    event: StakeEvent::Registered {
                        key: sim_key(i).verification_key().to_bytes(),
                        attester: [i as u8; 20],
                        stake: 1,
                    },
                },
            );
        }
        cfg.l1 = Some(Arc::new(l1));
        cfg.spec.epochs = Some(SetRules {
            epoch_length: 20,
            max_validators: 100,
            min_stake: 1,
            stake_per_power: 1,
            min_validators: 4,
        });
        cfg.byzantine = vec![(byz, Behaviour::LoudDoubleVoter)];
        let honest: Vec<usize> = (0..n).filter(|i| *i != byz).collect();
        cfg.submissions = load(10, 10_000, &honest);
        let out = run_and_judge("sim_jailed", cfg, 60, 10_000);
        let culprit =
            crate::ids::Address::from_public_key_bytes(sim_key(byz).verification_key().as_bytes());
        for &i in &honest {
            assert!(
                out.jailed[i].contains(&culprit),
                "node{i} did not jail the double voter (seed {seed})"
            );
            assert_eq!(out.jailed[i].len(), 1, "only the double voter is jailed");
            assert!(
                out.sets[i].get(&culprit).is_none(),
                "the double voter is out of the set"
            );
            assert_eq!(out.sets[i].validators().len(), n - 1);
        }
    }
}

#[test]
fn sim_replays_exactly_from_its_seed() {
    let make = || {
        let mut cfg = config(42, 4, 8_000);
        cfg.faults = NetFaults {
            drop: 0.05,
            duplicate: 0.05,
            min_delay_ms: 1,
            max_delay_ms: 40,
            until_ms: u64::MAX,
        };
        cfg.submissions = load(5, 4_000, &[0, 1, 2, 3]);
        cfg
    };
    let a = Sim::new(make()).run();
    let b = Sim::new(make()).run();
    assert_eq!(
        (a.heights.clone(), a.sent, a.dropped, a.events),
        (b.heights.clone(), b.sent, b.dropped, b.events)
    );
}
