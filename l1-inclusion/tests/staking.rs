//! The staking contract against a real local L1 (anvil): registration behind an allowlist (allowlisting and
//! opening registration timelocked, disallowing and removing immediate), then open; stake, exit, withdraw after
//! the delay; and the events read back into the validator-set function's candidate table.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address as EthAddress, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use baton_consensus::epoch::{next_set, CandidateTable, SetChange, SetRules};
use baton_l1_inclusion::contracts::BatonStaking;
use baton_l1_inclusion::staking as pop;
use common::L1;

const ETHER: u128 = 1_000_000_000_000_000_000;

/// A valid Ed25519 consensus key.
fn key(n: u8) -> B256 {
    B256::from(signing_key(n).verification_key().to_bytes())
}

fn signing_key(n: u8) -> ed25519_consensus::SigningKey {
    ed25519_consensus::SigningKey::from([n; 32])
}

/// The attester of key `n`.
fn attester(n: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::repeat_byte(0x20 + n)).unwrap()
}

/// Sends `input` from dev account `from` with a fixed gas limit, so a refused call is mined and reverts on-chain;
/// returns whether it succeeded.
async fn send(l1: &L1, staking: EthAddress, from: usize, input: Vec<u8>, value: u128) -> bool {
    let req = TransactionRequest::default()
        .with_to(staking)
        .with_input(input)
        .with_value(U256::from(value))
        .with_gas_limit(300_000);
    l1.signer(from)
        .send_transaction(req)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn staking_goes_from_allowlisted_to_open_and_feeds_the_set_function() {
    common::bounded(120, async {
        let l1 = L1::start(true).await;
        let governance = l1.address(0);
        // Key 6 allowlisted at deployment (as a network's genesis validators are), for its owner (dev account 6)
        // and bound to its attester: no delayed call needed.
        let staking = *BatonStaking::deploy(
            l1.provider.clone(),
            U256::from(ETHER),
            3,
            governance,
            common::GOVERNANCE_DELAY,
            vec![key(6)],
            vec![l1.address(6)],
            vec![attester(6).address()],
            false,
        )
        .await
        .unwrap()
        .address();
        let contract = BatonStaking::new(staking, l1.reader());
        let chain_id = l1.anvil.chain_id();
        // Key `n` registered by dev account `from` with attester `n`, with the attester's agreement and the
        // key's proof of possession.
        let register_from = |from: usize, n: u8| {
            let owner = l1.address(from);
            let a = attester(n);
            BatonStaking::registerCall {
                consensusKey: key(n),
                attester: a.address(),
                attesterSignature: pop::attester_signature(&a, chain_id, staking, key(n), owner)
                    .unwrap()
                    .into(),
                proof: pop::prove(&signing_key(n), staking, owner, a.address()).into(),
            }
            .abi_encode()
        };
        let register = |n: u8| register_from(n as usize, n);
        // Allowlisting binds the key to its owner: dev account n for key n.
        let schedule_allow = |n: u8| {
            BatonStaking::scheduleAllowlistCall {
                consensusKey: key(n),
                owner: l1.address(n as usize),
            }
            .abi_encode()
        };
        let execute_allow = |n: u8| {
            BatonStaking::executeAllowlistCall {
                consensusKey: key(n),
            }
            .abi_encode()
        };

        // Allowlist on: key 1 is allowlisted through the timelock. Only governance schedules it; until the delay
        // has passed it is not executable and key 1 cannot register; then anyone executes it and key 1 registers.
        // Key 9 (never allowlisted) is refused on-chain and never registered.
        assert!(
            !send(&l1, staking, 5, schedule_allow(1), 0).await,
            "not governance"
        );
        assert!(send(&l1, staking, 0, schedule_allow(1), 0).await);
        let id = contract.allowlistId(key(1)).call().await.unwrap();
        assert_eq!(
            contract.readyAt(id).call().await.unwrap(),
            l1.timestamp().await + common::GOVERNANCE_DELAY
        );
        assert!(
            !send(&l1, staking, 5, execute_allow(1), 0).await,
            "executed before the delay"
        );
        assert!(
            !send(&l1, staking, 1, register(1), 2 * ETHER).await,
            "registered while its allowlisting was only scheduled"
        );
        l1.pass_governance_delay().await;
        assert!(send(&l1, staking, 5, execute_allow(1), 0).await);
        assert!(contract.allowlisted(key(1)).call().await.unwrap());
        assert!(
            !send(&l1, staking, 5, register_from(5, 9), 2 * ETHER).await,
            "not allowlisted"
        );
        assert_eq!(
            contract.stakes(key(9)).call().await.unwrap().owner,
            EthAddress::ZERO
        );
        // Allowlisted for dev account 1: nobody else may register it (no front-running), then its owner does.
        assert!(
            !send(&l1, staking, 4, register_from(4, 1), 2 * ETHER).await,
            "registered by someone else than the owner it was allowlisted for"
        );
        assert!(send(&l1, staking, 1, register(1), 2 * ETHER).await);
        // Disallowing is immediate and cancels an allowlisting still scheduled.
        assert!(send(&l1, staking, 0, schedule_allow(7), 0).await);
        let disallow7 = BatonStaking::disallowCall {
            consensusKey: key(7),
        }
        .abi_encode();
        assert!(
            !send(&l1, staking, 5, disallow7.clone(), 0).await,
            "not governance"
        );
        assert!(send(&l1, staking, 0, disallow7, 0).await);
        l1.pass_governance_delay().await;
        assert!(
            !send(&l1, staking, 5, execute_allow(7), 0).await,
            "cancelled by disallow"
        );
        assert!(!send(&l1, staking, 7, register(7), 2 * ETHER).await);
        // Permissioned phase: governance can remove a validator at once (it exits as if it had asked); nobody else
        // can.
        assert!(send(&l1, staking, 6, register(6), 2 * ETHER).await);
        let remove6 = BatonStaking::removeCall {
            consensusKey: key(6),
        }
        .abi_encode();
        assert!(
            !send(&l1, staking, 1, remove6.clone(), 0).await,
            "not governance"
        );
        assert!(send(&l1, staking, 0, remove6, 0).await);
        assert_ne!(
            contract.stakes(key(6)).call().await.unwrap().withdrawableAt,
            0
        );
        // Only governance schedules opening registration; it takes effect only after the delay (until then key 2
        // cannot register), executed by anyone; below the minimum stake is refused.
        let schedule_open = BatonStaking::scheduleOpenRegistrationCall {}.abi_encode();
        let execute_open = BatonStaking::executeOpenRegistrationCall {}.abi_encode();
        assert!(!send(&l1, staking, 2, schedule_open.clone(), 0).await);
        assert!(send(&l1, staking, 0, schedule_open.clone(), 0).await);
        assert!(!send(&l1, staking, 2, execute_open.clone(), 0).await);
        assert!(!send(&l1, staking, 2, register(2), 2 * ETHER).await);
        assert!(contract.allowlistEnabled().call().await.unwrap());
        l1.pass_governance_delay().await;
        assert!(send(&l1, staking, 2, execute_open, 0).await);
        assert!(!contract.allowlistEnabled().call().await.unwrap());
        assert!(
            !send(&l1, staking, 0, schedule_open, 0).await,
            "already open"
        );
        assert!(
            !send(&l1, staking, 2, register(2), ETHER / 2).await,
            "below minStake"
        );
        // Once registration is open, governance can no longer remove anyone.
        let remove2 = BatonStaking::removeCall {
            consensusKey: key(2),
        }
        .abi_encode();
        for n in 2..=5u8 {
            assert!(send(&l1, staking, n as usize, register(n), ETHER * u128::from(n)).await);
        }
        assert!(
            !send(&l1, staking, 0, remove2, 0).await,
            "registration is open"
        );
        // The proof of possession and the attester's agreement are what the contract says they are.
        assert_eq!(
            contract
                .attesterDigest(key(3), l1.address(3))
                .call()
                .await
                .unwrap(),
            pop::attester_digest(chain_id, staking, key(3), l1.address(3))
        );
        assert_eq!(
            contract
                .proofMessage(key(3), l1.address(3), attester(3).address())
                .call()
                .await
                .unwrap()
                .to_vec(),
            pop::proof_message(staking, key(3), l1.address(3), attester(3).address())
        );
        // Open registration: key 8 registered with a proof its key did not sign (key 9 signed it) lands on-chain,
        // but the nodes' set function ignores it; an attester that did not agree is refused on-chain.
        let unproven = BatonStaking::registerCall {
            consensusKey: key(8),
            attester: attester(8).address(),
            attesterSignature: pop::attester_signature(
                &attester(8),
                chain_id,
                staking,
                key(8),
                l1.address(8),
            )
            .unwrap()
            .into(),
            proof: pop::prove(
                &signing_key(9),
                staking,
                l1.address(8),
                attester(8).address(),
            )
            .into(),
        };
        let mut unagreed = unproven.clone();
        unagreed.attesterSignature =
            pop::attester_signature(&attester(8), chain_id, staking, key(8), l1.address(9))
                .unwrap()
                .into();
        assert!(
            !send(&l1, staking, 8, unagreed.abi_encode(), 2 * ETHER).await,
            "the attester agreed to another owner"
        );
        assert!(send(&l1, staking, 8, unproven.abi_encode(), 2 * ETHER).await);
        assert!(
            send(
                &l1,
                staking,
                2,
                BatonStaking::increaseCall {
                    consensusKey: key(2)
                }
                .abi_encode(),
                5 * ETHER
            )
            .await
        );
        // Only the owner touches a stake.
        assert!(
            !send(
                &l1,
                staking,
                3,
                BatonStaking::requestExitCall {
                    consensusKey: key(2)
                }
                .abi_encode(),
                0
            )
            .await
        );

        // Key 1 exits: not withdrawable before the delay, then paid back.
        let exit = BatonStaking::requestExitCall {
            consensusKey: key(1),
        }
        .abi_encode();
        let withdraw = BatonStaking::withdrawCall {
            consensusKey: key(1),
        }
        .abi_encode();
        assert!(send(&l1, staking, 1, exit, 0).await);
        assert!(
            !send(&l1, staking, 1, withdraw.clone(), 0).await,
            "exit delay not over"
        );
        l1.mine(3).await;
        let before = l1.provider.get_balance(l1.address(1)).await.unwrap();
        assert!(send(&l1, staking, 1, withdraw, 0).await);
        let after = l1.provider.get_balance(l1.address(1)).await.unwrap();
        assert!(
            after > before + U256::from(ETHER),
            "stake returned: {before} -> {after}"
        );

        // The events, read back per L1 block, give the set function its table.
        let logs = l1
            .provider
            .get_logs(&Filter::new().address(staking).from_block(0))
            .await
            .unwrap();
        let mut table = CandidateTable::default();
        for (_, events) in baton_l1_inclusion::staking::by_block(&logs) {
            table.apply_block(events);
        }
        let keys: Vec<[u8; 32]> = table.candidates.keys().copied().collect();
        let mut expected: Vec<[u8; 32]> = (2..=6u8).map(|n| key(n).0).collect();
        expected.sort();
        assert_eq!(
            keys, expected,
            "withdrawn and refused keys are not candidates"
        );
        assert!(table.candidates[&key(6).0].exiting, "removed by governance");
        assert_eq!(table.candidates[&key(2).0].stake, 7 * ETHER);
        assert_eq!(
            EthAddress::from(table.candidates[&key(3).0].attester),
            attester(3).address()
        );
        let rules = SetRules {
            epoch_length: 10,
            max_validators: 10,
            min_stake: ETHER,
            stake_per_power: ETHER,
            min_validators: 4,
        };
        let genesis = baton_consensus::validators::ValidatorSet::new(
            (1..=4u8)
                .map(|n| {
                    baton_consensus::validators::Validator::new(
                        ed25519_consensus::VerificationKey::try_from(key(n).0).unwrap(),
                        1,
                    )
                })
                .collect(),
        )
        .unwrap();
        let (set, change) = next_set(&table, &rules, &genesis);
        // Powers 7, 3, 4, 5: 7 is above a third of 19, so it is capped at half of the others' 12.
        assert_eq!(change, SetChange::Capped(vec![key(2).0]));
        let mut powers: Vec<u64> = set.validators().iter().map(|v| v.voting_power).collect();
        powers.sort();
        assert_eq!(powers, vec![3, 4, 5, 6]);
    })
    .await;
}
