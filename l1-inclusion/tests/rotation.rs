//! `BatonCommitments.rotate` on a real local L1 (anvil): the commitment of an epoch's last block, signed by the
//! current attesters, moves the contract to the set its header names, with attesters read from `BatonStaking`;
//! commitments of the new set are then accepted and the old set's are not. Members that do not hash to the named
//! set, are out of order or are not staked are refused.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use alloy::primitives::{Address as EthAddress, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use baton_consensus::context::{Validator, ValidatorSet};
use baton_l1_inclusion::commitment::SignedCommitment;
use baton_l1_inclusion::contracts::BatonCommitments::{self, BatonCommitmentsErrors};
use baton_l1_inclusion::contracts::BatonStaking;
use common::L1;

const ETHER: u128 = 1_000_000_000_000_000_000;

/// The contract's refusal of a simulated call, decoded.
fn refusal(e: alloy::contract::Error) -> BatonCommitmentsErrors {
    e.as_decoded_interface_error::<BatonCommitmentsErrors>()
        .unwrap_or_else(|| panic!("not a contract error: {e}"))
}

#[tokio::test]
async fn an_epochs_last_commitment_rotates_the_attesting_set() {
    common::bounded(120, async {
        let l1 = L1::start(true).await;
        let staking =
            *BatonStaking::deploy(l1.provider.clone(), U256::from(ETHER), 3, l1.address(0))
                .await
                .unwrap()
                .address();
        let stake = BatonStaking::new(staking, l1.provider.clone());
        stake
            .openRegistration()
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();

        // Five Baton validators (powers 1..=5), four of them staked with their own attesters.
        let keys: Vec<ed25519_consensus::SigningKey> = (1..=5u8)
            .map(|i| ed25519_consensus::SigningKey::from([i; 32]))
            .collect();
        let attesters: Vec<PrivateKeySigner> = (1..=5u8)
            .map(|i| PrivateKeySigner::from_bytes(&B256::repeat_byte(0x60 + i)).unwrap())
            .collect();
        let set = ValidatorSet::new(
            keys.iter()
                .enumerate()
                .map(|(i, k)| Validator::new(k.verification_key(), i as u64 + 1))
                .collect(),
        )
        .unwrap();
        let attester_of = |pk: &[u8; 32]| {
            let i = keys
                .iter()
                .position(|k| k.verification_key().as_bytes() == pk)
                .unwrap();
            attesters[i].address()
        };
        for v in set.validators().iter().take(4) {
            let key = B256::from(v.public_key.to_bytes());
            stake
                .register(key, attester_of(v.public_key.as_bytes()))
                .value(U256::from(ETHER))
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
        }
        let members: Vec<B256> = set
            .validators()
            .iter()
            .map(|v| B256::from(v.public_key.to_bytes()))
            .collect();
        let powers: Vec<u64> = set.validators().iter().map(|v| v.voting_power).collect();

        // The epoch's last block at height 20, decided by the current set, names the new set.
        let mut header = l1.header(20);
        header.next_validator_set_hash = set.hash();
        let hash = header.hash();
        let signed = SignedCommitment {
            signatures: (0..3)
                .map(|i| {
                    let a = &l1.attesters[i];
                    (a.address(), l1.domain.sign(a, 20, hash).unwrap())
                })
                .collect(),
            header,
            rotation: None,
        };
        let commit = BatonCommitments::commitCall::abi_decode(&signed.calldata()).unwrap();
        let contract = l1.contract();
        let rotate = |keys: Vec<B256>, powers: Vec<u64>| {
            contract.rotate(
                commit.header.clone(),
                commit.signatures.clone(),
                keys,
                powers,
            )
        };

        // Rotation is off until governance names the staking contract.
        assert!(matches!(
            refusal(
                rotate(members.clone(), powers.clone())
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::RotationOff(_)
        ));
        contract
            .setStaking(staking)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        // The fifth member is not staked: no attester to hand the set to.
        assert!(matches!(
            refusal(
                rotate(members.clone(), powers.clone())
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::NotStaked(_)
        ));
        let key5 = B256::from(set.validators()[4].public_key.to_bytes());
        stake
            .register(key5, attester_of(set.validators()[4].public_key.as_bytes()))
            .value(U256::from(ETHER))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        // Members that do not hash to the named set, or out of order, are refused.
        let mut more = powers.clone();
        more[0] += 1;
        assert!(matches!(
            refusal(rotate(members.clone(), more).call().await.unwrap_err()),
            BatonCommitmentsErrors::WrongNextSet(_)
        ));
        let mut swapped = members.clone();
        swapped.swap(0, 1);
        assert!(matches!(
            refusal(rotate(swapped, powers.clone()).call().await.unwrap_err()),
            BatonCommitmentsErrors::NotAscending(_)
        ));

        // The real members rotate the set (sent as the poster would: the commitment with its rotation), and
        // height 20 is recorded as a commitment.
        let mut rotating = signed.clone();
        rotating.rotation = Some(baton_l1_inclusion::commitment::Rotation {
            keys: members.clone(),
            powers: powers.clone(),
        });
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(l1.commitments)
            .input(rotating.calldata().into());
        let receipt = alloy::providers::Provider::send_transaction(&l1.provider, tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(receipt.status());
        assert_eq!(
            contract.validatorSetHash().call().await.unwrap(),
            B256::from(set.hash().0)
        );
        assert_eq!(contract.latestHeight().call().await.unwrap(), 20);
        assert_eq!(contract.totalPower().call().await.unwrap(), 15);
        let on_chain: Vec<EthAddress> = contract.attesters().call().await.unwrap();
        let expected: Vec<EthAddress> = set
            .validators()
            .iter()
            .map(|v| attester_of(v.public_key.as_bytes()))
            .collect();
        assert_eq!(on_chain, expected);

        // Height 30 of the new set: the new attesters' commitment is accepted, the old set's refused.
        let mut next = l1.header(30);
        next.validator_set_hash = set.hash();
        next.next_validator_set_hash = set.hash();
        let h = next.hash();
        let by = |signers: &[&PrivateKeySigner], header: &baton_consensus::BlockHeader| {
            SignedCommitment {
                signatures: signers
                    .iter()
                    .map(|a| (a.address(), l1.domain.sign(a, 30, h).unwrap()))
                    .collect(),
                header: header.clone(),
                rotation: None,
            }
        };
        let old = by(&l1.attesters.iter().collect::<Vec<_>>(), &next);
        let old_call = BatonCommitments::commitCall::abi_decode(&old.calldata()).unwrap();
        assert!(contract
            .commit(old_call.header, old_call.signatures)
            .call()
            .await
            .is_err());
        // Powers 3 + 4 + 5 = 12 of 15 (> 2/3).
        let new = by(&attesters[2..].iter().collect::<Vec<_>>(), &next);
        let new_call = BatonCommitments::commitCall::abi_decode(&new.calldata()).unwrap();
        assert!(contract
            .commit(new_call.header, new_call.signatures)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap()
            .status());
        assert_eq!(contract.latestHeight().call().await.unwrap(), 30);
        // A header that names no new set is no rotation.
        let stay = BatonCommitments::commitCall::abi_decode(
            &by(&attesters.iter().collect::<Vec<_>>(), &{
                let mut h40 = l1.header(40);
                h40.validator_set_hash = set.hash();
                h40.next_validator_set_hash = set.hash();
                h40
            })
            .calldata(),
        )
        .unwrap();
        assert!(contract
            .rotate(stay.header, stay.signatures, members, powers)
            .call()
            .await
            .is_err());
    })
    .await;
}
