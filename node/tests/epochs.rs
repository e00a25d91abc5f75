//! The validator set follows L1 stake by epochs, on real processes and a real local L1 (anvil): four genesis
//! validators staked in `BatonStaking`; a fifth node's registration is refused while the allowlist is on and never
//! enters the set; once governance opens registration it stakes, joins at the next epoch and votes; a validator
//! stopped before that change and restarted after it rejoins with the right set; then one genesis validator exits
//! and the set shrinks to four. The chain never stops, every node agrees on every hash, and a reader verifying
//! from genesis follows both set changes from the signed headers alone.

#![allow(clippy::unwrap_used)] // a failing step panics the test, which is what it should do

mod common;

use std::time::Duration;

use alloy::primitives::{Address as EthAddress, U256};
use alloy::providers::ProviderBuilder;
use alloy::signers::local::PrivateKeySigner;
use baton_consensus::ids::Address;
use baton_consensus::validators::ValidatorSet;
use baton_l1_inclusion::anvil::LocalL1;
use baton_l1_inclusion::watcher::Safety;
use baton_node::devnet::{attach_l1, prepare_joiner, DevnetL1, DevnetStaking, ETHER};
use baton_node::validator::{consensus_key, StakingClient};
use baton_proto::convert::parse_batch_proof;
use common::{run, scrape, serial, value, Cluster};

const EPOCH: u64 = 30;

/// The staking contract's governance delay in the node-runner test (seconds; the test moves L1 time past it).
const GOVERNANCE_DELAY: u64 = 600;

/// The set deciding the next height, as node `i` reports it.
async fn next_set(cluster: &Cluster, i: usize) -> (u64, ValidatorSet) {
    cluster
        .client(i)
        .await
        .validator_set(0)
        .await
        .unwrap_or_else(|e| panic!("node{i} GetValidatorSet: {e}"))
}

/// Waits until node `i`'s next-height set satisfies `f`; returns the first height that set decides.
async fn wait_set(
    cluster: &Cluster,
    i: usize,
    what: &str,
    f: impl Fn(&ValidatorSet) -> bool,
) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, set) = next_set(cluster, i).await;
        if f(&set) {
            // Walk back to the first height decided by this set.
            let mut c = cluster.client(i).await;
            let mut h = cluster.height(i).await.expect("height") + 1;
            while h > 1 {
                let (_, s) = c.validator_set(h - 1).await.expect("set");
                if s.hash() != set.hash() {
                    break;
                }
                h -= 1;
            }
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node{i}: no set where {what} within 120 s; log:\n{}",
            cluster.log(i)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The addresses whose precommits are in height `h`'s certificate on node `i`.
async fn signers(cluster: &Cluster, i: usize, h: u64) -> Vec<Address> {
    let wire = cluster
        .client(i)
        .await
        .get_batch_with_proof(1, h)
        .await
        .expect("batch with proof");
    let (_, cert) = parse_batch_proof(wire.proof.expect("proof")).expect("proof parses");
    cert.signatures.iter().map(|(a, _)| *a).collect()
}

#[test]
fn the_set_grows_by_stake_and_shrinks_on_exit_without_stopping() {
    let _guard = serial();
    run(Duration::from_secs(420), async {
        let anvil = LocalL1 {
            block_time_secs: Some(1),
            ..Default::default()
        }
        .spawn()
        .expect("anvil");
        let mut cluster = Cluster::prepare(4);
        let mut l1 = DevnetL1::local(&anvil, 10);
        l1.origin_safety = Safety::Latest;
        l1.staking = Some(DevnetStaking {
            epoch_length: EPOCH,
            exit_delay: 3,
            ..Default::default()
        });
        attach_l1(&mut cluster.net, &l1).await.expect("attach L1");
        let staking: EthAddress = cluster
            .net
            .genesis
            .l1
            .as_ref()
            .unwrap()
            .staking
            .as_ref()
            .unwrap()
            .parse()
            .unwrap();
        let (joiner_node, joiner_key, joiner_attester) =
            prepare_joiner(&cluster.net, &anvil.endpoint()).expect("joiner");
        let j = cluster.net.nodes.len();
        cluster.net.nodes.push(joiner_node);
        cluster.procs.push(None);
        // A full node: not a validator, no L1 endpoint; it follows the chain on certificates.
        let (full_node, _, _) = prepare_joiner(&cluster.net, &anvil.endpoint()).expect("full node");
        let f = cluster.net.nodes.len();
        cluster.net.nodes.push(full_node);
        cluster.procs.push(None);
        cluster.edit_config(f, |c| {
            c.validator = false;
            c.l1 = None;
        });
        let joiner = joiner_key.address();
        for i in 0..=f {
            cluster.start_node(i);
        }
        let genesis_set = cluster.net.genesis.validator_set().unwrap();
        // In node order (the set itself is sorted by address).
        let genesis_addrs: Vec<Address> = (0..4).map(|i| node_key(&cluster, i).address()).collect();

        // The joiner follows as a full node; the genesis stakes (1 ETH each) give the genesis set again.
        cluster.wait_height(j, 5, Duration::from_secs(60)).await;
        let s = cluster.client(j).await.status().await.unwrap();
        assert!(!s.in_validator_set, "the joiner starts outside the set");
        assert_eq!(s.epoch_length, EPOCH);

        // Allowlist on: the joiner's registration is refused (simulated first, so nothing is sent or paid).
        let owner: PrivateKeySigner = anvil.keys()[3].clone().into();
        let stake = StakingClient::new(&anvil.endpoint(), staking, Some(owner)).unwrap();
        let key = consensus_key(&joiner_key);
        let refused = stake
            .register(&joiner_key, &joiner_attester, U256::from(2 * ETHER))
            .await
            .expect_err("not allowlisted");
        assert!(refused.to_string().contains("not allowlisted"), "{refused}");
        assert!(!stake.position(key).await.unwrap().registered());
        // ... and over a whole epoch change later the set is still the genesis set.
        let h = cluster.height(1).await.unwrap();
        cluster
            .wait_height(1, h + EPOCH + 1, Duration::from_secs(60))
            .await;
        let (_, set) = next_set(&cluster, 1).await;
        assert_eq!(
            set.hash(),
            genesis_set.hash(),
            "the refused key never enters the set"
        );

        // Governance opens registration (scheduled, then executed once the devnet's governance delay is over);
        // the joiner stakes. Node 2 is stopped before the change.
        let governance =
            StakingClient::new(&anvil.endpoint(), staking, Some(l1.deployer.clone())).unwrap();
        let scheduled = governance
            .schedule_open_registration()
            .await
            .expect("schedule opening registration");
        let refused = stake
            .register(&joiner_key, &joiner_attester, U256::from(ETHER))
            .await
            .expect_err("registration is only scheduled to open");
        assert!(refused.to_string().contains("not allowlisted"), "{refused}");
        governance
            .wait_for_l1_time(scheduled.executable_at, Duration::from_secs(60))
            .await
            .unwrap();
        governance
            .execute_open_registration()
            .await
            .expect("open registration");
        cluster.kill(2);
        let registered_in = stake
            .register(&joiner_key, &joiner_attester, U256::from(ETHER))
            .await
            .expect("register once open");
        let joined = wait_set(&cluster, 1, "the joiner is in", |s| {
            s.get(&joiner).is_some()
        })
        .await;
        let (_, five) = next_set(&cluster, 1).await;
        assert_eq!(five.validators().len(), 5);
        assert!(genesis_addrs.iter().all(|a| five.get(a).is_some()));
        assert_eq!(joined % EPOCH, 1, "sets change at an epoch's first height");
        let origin = cluster.headers(1, joined - 1, joined - 1).await[0]
            .l1_origin
            .number;
        assert!(
            origin >= registered_in,
            "the set came from an L1 origin holding the registration"
        );

        // Node 2 restarts after the change and catches up with the new set.
        cluster.start_node(2);
        let now = cluster.height(1).await.unwrap();
        cluster.wait_height(2, now, Duration::from_secs(90)).await;
        assert_eq!(next_set(&cluster, 2).await.1.hash(), five.hash());

        // The joiner votes: its precommit is in certificates of the new epoch.
        cluster
            .wait_height(1, joined + EPOCH, Duration::from_secs(60))
            .await;
        let mut voted = 0;
        for h in joined..joined + EPOCH {
            if signers(&cluster, 1, h).await.contains(&joiner) {
                voted += 1;
            }
        }
        if voted == 0 {
            let log = cluster.log(j);
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "the joiner signed none of heights {joined}..{}; its log ends:\n{}",
                joined + EPOCH,
                tail.join("\n")
            );
        }
        let s = cluster.client(j).await.status().await.unwrap();
        assert!(s.in_validator_set);
        let m = scrape(cluster.net.nodes[j].metrics_addr).await;
        assert_eq!(
            value(&m, "baton_consensus_in_validator_set "),
            Some(1.0),
            "{m}"
        );
        assert_eq!(value(&m, "baton_consensus_validator_set_size "), Some(5.0));
        assert!(value(&m, "baton_consensus_epoch ").unwrap() >= 3.0);

        // Genesis validator 0 exits (its stake is the deployer's): the set shrinks to four at the next epoch.
        let gov_stake =
            StakingClient::new(&anvil.endpoint(), staking, Some(l1.deployer.clone())).unwrap();
        let key0 = consensus_key(&node_key(&cluster, 0));
        gov_stake.request_exit(key0).await.expect("exit");
        let left = wait_set(&cluster, 1, "node0 is out", |s| {
            s.get(&genesis_addrs[0]).is_none()
        })
        .await;
        let (_, four) = next_set(&cluster, 1).await;
        assert_eq!(four.validators().len(), 4);
        assert!(four.get(&joiner).is_some());
        assert_eq!(left % EPOCH, 1);
        cluster
            .wait_height(1, left + 10, Duration::from_secs(60))
            .await;
        assert!(
            signers(&cluster, 1, left + 5)
                .await
                .iter()
                .all(|a| *a != genesis_addrs[0]),
            "an exited validator's votes do not count"
        );
        // L1 commitments went on across both changes: the contract rotated to each set. (Node 0 can withdraw only
        // once the contract has: `BatonStaking.withdraw` refuses while its set holds the key.)
        let commitments: EthAddress = cluster
            .net
            .genesis
            .l1
            .as_ref()
            .unwrap()
            .commitments
            .parse()
            .unwrap();
        let contract = baton_l1_inclusion::contracts::BatonCommitments::new(
            commitments,
            ProviderBuilder::new().connect_http(anvil.endpoint_url()),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let held = contract.validatorSetHash().call().await.unwrap();
            let latest = contract.latestHeight().call().await.unwrap();
            if held == alloy::primitives::B256::from(four.hash().0) && latest > left {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "L1 commitments stuck at {latest} (set {held}); node0 log:\n{}",
                cluster.log(0)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Its stake comes back after the exit delay (and once the contract moved past its set).
        let p = gov_stake.position(key0).await.unwrap();
        while gov_stake.position(key0).await.unwrap().l1_block < p.withdrawable_at {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        gov_stake
            .withdraw(key0)
            .await
            .expect("withdraw after the delay");
        assert!(!gov_stake.position(key0).await.unwrap().registered());

        // Every node agrees on every hash, node 0 (now outside the set) and the full node included.
        let top = cluster.height(1).await.unwrap();
        for i in 0..=f {
            cluster.wait_height(i, top, Duration::from_secs(60)).await;
        }
        let reference = cluster.chain(1, top).await;
        for i in [0, 2, 3, j, f] {
            assert_eq!(cluster.chain(i, top).await, reference, "node{i} disagrees");
        }
        let s = cluster.client(f).await.status().await.unwrap();
        assert_eq!(s.role, baton_proto::pb::NodeRole::Full as i32);
        assert!(!s.in_validator_set);
        assert_eq!(
            next_set(&cluster, f).await.1.hash(),
            four.hash(),
            "the full node follows the set"
        );
        let m = scrape(cluster.net.nodes[0].metrics_addr).await;
        assert_eq!(
            value(&m, "baton_consensus_in_validator_set "),
            Some(0.0),
            "node0 left"
        );
        assert_eq!(value(&m, "baton_consensus_validator_set_size "), Some(4.0));
        // Nobody equivocated: no evidence, nobody jailed.
        let ev = cluster
            .client(1)
            .await
            .raw()
            .1
            .list_evidence(baton_proto::pb::ListEvidenceRequest { from_height: 0 })
            .await
            .unwrap()
            .into_inner();
        assert!(ev.evidence.is_empty() && ev.jailed.is_empty(), "{ev:?}");
        // The chain never stopped: no gap between consecutive blocks above 5 s.
        let headers = cluster.headers(1, 1, top).await;
        let gap = headers
            .windows(2)
            .map(|w| w[1].timestamp_ms - w[0].timestamp_ms)
            .max()
            .unwrap();
        println!(
            "heights 1..={top}: joined at {joined}, node0 out at {left}, longest gap {gap} ms"
        );
        assert!(gap < 5_000, "the chain paused {gap} ms");

        // A reader trusting only the genesis set verifies every height, following both changes.
        // (served by the full node)
        let mut stream = cluster
            .client(f)
            .await
            .stream_verified_batches(1, 1, cluster.verifier())
            .await
            .unwrap();
        for h in 1..=top {
            let b = stream.next().await.expect("verified").expect("open");
            assert_eq!(b.header.height, h);
        }
    });
}

fn node_key(cluster: &Cluster, i: usize) -> baton_node::keys::NodeKey {
    baton_node::keys::NodeKey::load(&cluster.net.nodes[i].dir.join("node_key.toml")).unwrap()
}

/// Runs `baton` with `args`; returns (success, stdout + stderr).
fn baton(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .output()
        .expect("run baton");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_node_runner_commands_drive_the_staking_contract() {
    let _guard = serial();
    run(Duration::from_secs(180), async {
        let anvil = LocalL1 {
            block_time_secs: None,
            ..Default::default()
        }
        .spawn()
        .expect("anvil");
        let governance: PrivateKeySigner = anvil.keys()[0].clone().into();
        let (staking, _) = baton_l1_inclusion::contracts::deploy_staking(
            &anvil.endpoint(),
            governance.clone(),
            U256::from(ETHER),
            2,
            GOVERNANCE_DELAY,
            vec![],
            false,
        )
        .await
        .expect("deploy");
        // L1 time moves past the governance delay (`evm_increaseTime`, then a block).
        let url = anvil.endpoint_url();
        let pass_delay = || {
            let provider = ProviderBuilder::new().connect_http(url.clone());
            async move {
                alloy::providers::ext::AnvilApi::anvil_increase_time(&provider, GOVERNANCE_DELAY)
                    .await
                    .unwrap();
                alloy::providers::ext::AnvilApi::anvil_mine(&provider, Some(1), None)
                    .await
                    .unwrap();
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let path = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
        let owner: PrivateKeySigner = anvil.keys()[4].clone().into();
        baton_node::keys::write_secret_file(
            std::path::Path::new(&path("owner.key")),
            &format!("{}\n", owner.to_bytes()),
        )
        .unwrap();
        baton_node::keys::write_secret_file(
            std::path::Path::new(&path("gov.key")),
            &format!("{}\n", governance.to_bytes()),
        )
        .unwrap();
        let (ok, text) = baton(&[
            "keys",
            "generate",
            "--out",
            &path("node_key.toml"),
            "--attester-out",
            &path("attester.key"),
        ]);
        assert!(ok, "{text}");
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().trim_start_matches('=').trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        };
        let public_key = field("public_key");
        let owner_address = format!("{:#x}", owner.address());
        let rpc = anvil.endpoint();
        let staking = format!("{staking:#x}");
        let common = |cmd: &'static str| -> Vec<String> {
            [
                "validator",
                cmd,
                "--l1-rpc",
                &rpc,
                "--staking",
                &staking,
                "--key",
                &path("node_key.toml"),
                "--l1-key",
                &path("owner.key"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let run_cmd = |mut args: Vec<String>, extra: &[&str]| {
            args.extend(extra.iter().map(|s| s.to_string()));
            baton(&args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        let register = |extra: &[&str]| {
            let mut a = extra.to_vec();
            let attester_key = path("attester.key");
            a.extend(["--attester-key", attester_key.as_str()]);
            run_cmd(common("register"), &a)
        };

        // Not allowlisted yet: refused with the contract's reason, nothing sent.
        let (ok, text) = register(&["--stake", "2"]);
        assert!(!ok && text.contains("not allowlisted"), "{text}");
        let gov = |cmd: &str, extra: &[&str]| {
            let mut a = vec![
                "governance",
                cmd,
                "--l1-rpc",
                &rpc,
                "--staking",
                &staking,
                "--l1-key",
            ];
            let key = path("gov.key");
            a.push(&key);
            a.extend_from_slice(extra);
            baton(&a)
        };
        // Allowlisting is timelocked: scheduled, not executable (and the key not allowlisted) until the delay is
        // over, then executed.
        let allow = [
            "--public-key",
            public_key.as_str(),
            "--owner",
            owner_address.as_str(),
        ];
        let (ok, text) = gov("allow", &allow);
        assert!(
            ok && text.contains("scheduled") && text.contains("--execute"),
            "{text}"
        );
        let (ok, text) = gov("allow", &allow);
        assert!(!ok && text.contains("already scheduled"), "{text}");
        let (ok, text) = gov("allow", &["--public-key", &public_key, "--execute"]);
        assert!(
            !ok && text.contains("governance delay is not over"),
            "{text}"
        );
        let (ok, text) = register(&["--stake", "2"]);
        assert!(!ok && text.contains("not allowlisted"), "{text}");
        pass_delay().await;
        let (ok, text) = gov("allow", &["--public-key", &public_key, "--execute"]);
        assert!(ok && text.contains("allowlisted"), "{text}");
        // A stake below the minimum and a malformed amount are refused clearly.
        let (ok, text) = register(&["--stake", "0.5"]);
        assert!(!ok && text.contains("below the minimum 1 ETH"), "{text}");
        let (ok, text) = register(&["--stake", "two"]);
        assert!(!ok && text.contains("not an amount of ETH"), "{text}");
        let (ok, text) = register(&["--stake", "2.5"]);
        assert!(ok && text.contains("registered"), "{text}");
        let (ok, text) = run_cmd(common("status"), &[]);
        assert!(
            ok && text.contains("2.5 ETH") && text.contains("not requested"),
            "{text}"
        );

        // Governance removes it (permissioned phase); withdrawing before the delay is refused, after it works.
        let (ok, text) = gov("remove", &["--public-key", &public_key]);
        assert!(ok, "{text}");
        let (ok, text) = run_cmd(common("exit"), &[]);
        assert!(!ok && text.contains("already asked to exit"), "{text}");
        let (ok, text) = run_cmd(common("withdraw"), &[]);
        assert!(!ok && text.contains("exit delay is not over"), "{text}");
        let provider = ProviderBuilder::new().connect_http(anvil.endpoint_url());
        alloy::providers::ext::AnvilApi::anvil_mine(&provider, Some(3), None)
            .await
            .unwrap();
        let (ok, text) = run_cmd(common("withdraw"), &[]);
        assert!(ok && text.contains("withdrew 2.5 ETH"), "{text}");
        let (ok, text) = run_cmd(common("status"), &[]);
        assert!(ok && text.contains("registered      no"), "{text}");

        // Revoking is immediate: the key can no longer register while the allowlist is on.
        let (ok, text) = gov("allow", &["--public-key", &public_key, "--revoke"]);
        assert!(ok && text.contains("no longer allowlisted"), "{text}");
        // Registration opens (scheduled, cancelled, scheduled again, executed after the delay: until then the
        // revoked key stays out); governance can no longer remove anyone.
        let (ok, text) = gov("open-registration", &[]);
        assert!(ok && text.contains("scheduled"), "{text}");
        let (ok, text) = gov("open-registration", &["--cancel"]);
        assert!(ok && text.contains("cancelled"), "{text}");
        pass_delay().await;
        let (ok, text) = gov("open-registration", &["--execute"]);
        assert!(!ok && text.contains("not scheduled"), "{text}");
        let (ok, text) = gov("open-registration", &[]);
        assert!(ok && text.contains("scheduled"), "{text}");
        let (ok, text) = register(&["--stake", "1"]);
        assert!(!ok && text.contains("not allowlisted"), "{text}");
        pass_delay().await;
        let (ok, text) = gov("open-registration", &["--execute"]);
        assert!(ok && text.contains("open to anyone"), "{text}");
        let (ok, text) = register(&["--stake", "1"]);
        assert!(ok, "{text}");
        let (ok, text) = gov("remove", &["--public-key", &public_key]);
        assert!(!ok && text.contains("registration is open"), "{text}");
    });
}

/// Issue 16: a node whose genesis names another attester for a genesis validator than the one `BatonStaking` binds
/// to its key (`attesterOf`, which `BatonCommitments.rotate` reads) refuses to start, naming the validator and
/// both attesters; a node with the genesis the contract was deployed from starts.
#[test]
fn a_node_refuses_a_genesis_whose_attesters_the_staking_contract_does_not_bind() {
    let _guard = serial();
    run(Duration::from_secs(120), async {
        let anvil = LocalL1 {
            block_time_secs: None,
            ..Default::default()
        }
        .spawn()
        .expect("anvil");
        let mut cluster = Cluster::prepare(2);
        let mut l1 = DevnetL1::local(&anvil, 10);
        l1.staking = Some(DevnetStaking {
            epoch_length: EPOCH,
            exit_delay: 3,
            ..Default::default()
        });
        attach_l1(&mut cluster.net, &l1).await.expect("attach L1");
        // Node 0 reads a genesis naming another attester for validator 1 (node 0's own attester is unchanged).
        let mut edited = cluster.net.genesis.clone();
        let real: EthAddress = edited.validators[1]
            .attester
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        let other = PrivateKeySigner::random().address();
        edited.validators[1].attester = Some(format!("{other:#x}"));
        let path = cluster.net.nodes[0].dir.join("edited_genesis.toml");
        std::fs::write(&path, toml::to_string(&edited).unwrap()).unwrap();
        cluster.edit_config(0, |c| c.genesis_file = path.clone());
        cluster.start_node(0);
        cluster.start_node(1);

        // The genesis the contract was deployed from passes the check: node 1 serves its API.
        cluster
            .client(1)
            .await
            .status()
            .await
            .expect("node1 status");
        // The edited one does not: node 0 exits, saying which validator and which attesters.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !cluster.procs[0].as_mut().unwrap().exited() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "node0 started with a genesis whose attester for {} the staking contract does not bind; log:\n{}",
                edited.validators[1].name,
                cluster.log(0)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = cluster.log(0);
        for needle in [
            format!("genesis validator {}", edited.validators[1].name),
            format!("has attester {other} in genesis"),
            format!("binds its key to attester {real}"),
        ] {
            assert!(
                log.contains(&needle),
                "`{needle}` not in node0's log:\n{log}"
            );
        }
    });
}
