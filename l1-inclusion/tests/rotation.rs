//! `BatonCommitments.rotate` on a real local L1 (anvil): the commitment of an epoch's last block, signed by the
//! current attesters, moves the contract to the set its header names, with attesters read from `BatonStaking`;
//! commitments of the new set are then accepted and the old set's are not. Members that do not hash to the named
//! set, are out of order or are not staked are refused. Such a header is accepted only through `rotate`: anyone
//! who copies it and its attestations and sends `commit` first is refused, so it cannot pin the contract to the
//! old set.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use alloy::primitives::{Address as EthAddress, B256, U256};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use baton_consensus::context::{Validator, ValidatorSet};
use baton_l1_inclusion::commitment::{Rotation, SignedCommitment};
use baton_l1_inclusion::contracts::BatonCommitments::{self, BatonCommitmentsErrors};
use baton_l1_inclusion::contracts::BatonStaking;
use common::L1;

const ETHER: u128 = 1_000_000_000_000_000_000;

/// The contract's refusal of a simulated call, decoded.
fn refusal(e: alloy::contract::Error) -> BatonCommitmentsErrors {
    e.as_decoded_interface_error::<BatonCommitmentsErrors>()
        .unwrap_or_else(|| panic!("not a contract error: {e}"))
}

/// An epoch's end on a local L1: the contract holds the four attesters of [`L1::start`]; the next set is five
/// Baton validators (powers 1..=5), each with its own attester; a `BatonStaking` contract (registration open, not
/// yet named by the commitments contract) holds the first few of them.
struct EpochEnd {
    l1: L1,
    staking: EthAddress,
    keys: Vec<ed25519_consensus::SigningKey>,
    /// The attesters of `keys`, by index.
    attesters: Vec<PrivateKeySigner>,
    /// The next set.
    set: ValidatorSet,
    /// Its members and powers as `rotate` takes them (the set's order).
    members: Vec<B256>,
    powers: Vec<u64>,
    /// The commitment of the epoch's last block (height 20), decided and attested by three of the four current
    /// attesters, whose header names the next set.
    last: SignedCommitment,
}

impl EpochEnd {
    /// With the first `staked` members of the next set (in the set's order) registered.
    async fn start(staked: usize) -> EpochEnd {
        let l1 = L1::start(true).await;
        // Registration open from the start.
        let staking = *BatonStaking::deploy(
            l1.provider.clone(),
            U256::from(ETHER),
            3,
            l1.address(0),
            common::GOVERNANCE_DELAY,
            vec![],
            true,
        )
        .await
        .unwrap()
        .address();
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
        let members: Vec<B256> = set
            .validators()
            .iter()
            .map(|v| B256::from(v.public_key.to_bytes()))
            .collect();
        let powers: Vec<u64> = set.validators().iter().map(|v| v.voting_power).collect();

        let mut header = l1.header(20);
        header.next_validator_set_hash = set.hash();
        let hash = header.hash();
        let last = SignedCommitment {
            signatures: (0..3)
                .map(|i| {
                    let a = &l1.attesters[i];
                    (a.address(), l1.domain.sign(a, 20, hash).unwrap())
                })
                .collect(),
            header,
            rotation: None,
        };
        let e = EpochEnd {
            l1,
            staking,
            keys,
            attesters,
            set,
            members,
            powers,
            last,
        };
        for i in 0..staked {
            e.register(i).await;
        }
        e
    }

    /// The attester of the validator with consensus key `pk`.
    fn attester_of(&self, pk: &[u8; 32]) -> EthAddress {
        let i = self
            .keys
            .iter()
            .position(|k| k.verification_key().as_bytes() == pk)
            .unwrap();
        self.attesters[i].address()
    }

    /// Stakes the next set's `i`-th member (the set's order) with its attester.
    async fn register(&self, i: usize) {
        let v = &self.set.validators()[i];
        BatonStaking::new(self.staking, self.l1.provider.clone())
            .register(
                B256::from(v.public_key.to_bytes()),
                self.attester_of(v.public_key.as_bytes()),
            )
            .value(U256::from(ETHER))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
    }

    /// Governance names the staking contract: rotation on once the scheduled change is executed after the
    /// governance delay.
    async fn enable_rotation(&self) {
        let contract = self.l1.contract();
        let scheduled = contract
            .scheduleSetStaking(self.staking)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(scheduled.status());
        self.l1.pass_governance_delay().await;
        let executed = contract
            .executeSetStaking(self.staking)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(executed.status());
        assert_eq!(contract.staking().call().await.unwrap(), self.staking);
    }

    /// The epoch's last commitment with the next set's members, as the poster sends it (`rotate`).
    fn rotation(&self) -> SignedCommitment {
        let mut c = self.last.clone();
        c.rotation = Some(Rotation {
            keys: self.members.clone(),
            powers: self.powers.clone(),
        });
        c
    }

    /// A commitment of `height` decided by the next set (its header names it as current and next), attested by
    /// `signers`.
    fn of_next_set(&self, height: u64, signers: &[&PrivateKeySigner]) -> SignedCommitment {
        let mut header = self.l1.header(height);
        header.validator_set_hash = self.set.hash();
        header.next_validator_set_hash = self.set.hash();
        let hash = header.hash();
        SignedCommitment {
            signatures: signers
                .iter()
                .map(|a| (a.address(), self.l1.domain.sign(a, height, hash).unwrap()))
                .collect(),
            header,
            rotation: None,
        }
    }

    /// Sends `c` as the poster does (its calldata, from the governance account) and waits for the receipt.
    async fn post(&self, c: &SignedCommitment) -> TransactionReceipt {
        let tx = alloy::rpc::types::TransactionRequest::default()
            .to(self.l1.commitments)
            .input(c.calldata().into());
        alloy::providers::Provider::send_transaction(&self.l1.provider, tx)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn an_epochs_last_commitment_rotates_the_attesting_set() {
    common::bounded(120, async {
        // Four of the five members staked.
        let e = EpochEnd::start(4).await;
        let (l1, set) = (&e.l1, &e.set);
        let (members, powers) = (e.members.clone(), e.powers.clone());
        let commit = BatonCommitments::commitCall::abi_decode(&e.last.calldata()).unwrap();
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
        e.enable_rotation().await;
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
        e.register(4).await;
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
        assert!(e.post(&e.rotation()).await.status());
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
            .map(|v| e.attester_of(v.public_key.as_bytes()))
            .collect();
        assert_eq!(on_chain, expected);

        // Height 30 of the new set: the new attesters' commitment is accepted, the old set's refused.
        let old = e.of_next_set(30, &l1.attesters.iter().collect::<Vec<_>>());
        let old_call = BatonCommitments::commitCall::abi_decode(&old.calldata()).unwrap();
        assert!(contract
            .commit(old_call.header, old_call.signatures)
            .call()
            .await
            .is_err());
        // Powers 3 + 4 + 5 = 12 of 15 (> 2/3).
        let new = e.of_next_set(30, &e.attesters[2..].iter().collect::<Vec<_>>());
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
            &e.of_next_set(40, &e.attesters.iter().collect::<Vec<_>>())
                .calldata(),
        )
        .unwrap();
        assert!(matches!(
            refusal(
                contract
                    .rotate(stay.header, stay.signatures, members, powers)
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::NoNewSet(_)
        ));
    })
    .await;
}

/// The attack: an outsider copies the header and attestations of the epoch's last block out of the poster's
/// pending `rotate` (or any node's value sync) and sends them with `commit` first. Were it accepted, heights must
/// increase, so `rotate` of that height could never land, the contract would stay on the old set and refuse every
/// later commitment (`WrongValidatorSet`). It is refused; the poster's `rotate` then lands and the new set's
/// commitments are accepted.
#[tokio::test]
async fn an_outsiders_commit_cannot_preempt_the_rotation() {
    common::bounded(120, async {
        let e = EpochEnd::start(5).await;
        e.enable_rotation().await;
        let contract = e.l1.contract();
        let pending = e.rotation();
        let copied = BatonCommitments::rotateCall::abi_decode(&pending.calldata()).unwrap();

        // The outsider (anvil dev key 7: neither governance nor a poster) sends `commit` with what it copied, with
        // a fixed gas limit so the transaction is mined even if the contract would refuse it.
        let outsider = BatonCommitments::new(e.l1.commitments, e.l1.signer(7));
        let attack = outsider
            .commit(copied.header.clone(), copied.signatures.clone())
            .gas(2_000_000)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert_eq!(attack.from, e.l1.address(7));
        assert!(
            !attack.status(),
            "the outsider's commit of the epoch's last header was accepted: the contract stays on the old set"
        );
        assert_eq!(contract.latestHeight().call().await.unwrap(), 0);
        // Why: a header that changes the set goes through `rotate` only.
        match refusal(
            outsider
                .commit(copied.header, copied.signatures)
                .call()
                .await
                .unwrap_err(),
        ) {
            BatonCommitmentsErrors::SetChangeNeedsRotate(r) => {
                assert_eq!(r.nextSet, B256::from(e.set.hash().0));
                assert_eq!(r.currentSet, B256::from(e.l1.set_hash.0));
            }
            other => panic!("refused for another reason: {other:?}"),
        }

        // The poster's rotation lands: the contract holds the new set, with height 20 committed.
        assert!(e.post(&pending).await.status());
        assert_eq!(
            contract.validatorSetHash().call().await.unwrap(),
            B256::from(e.set.hash().0)
        );
        assert_eq!(contract.latestHeight().call().await.unwrap(), 20);
        // And the new set's commitments are accepted (powers 3 + 4 + 5 = 12 of 15).
        let next = e.of_next_set(30, &e.attesters[2..].iter().collect::<Vec<_>>());
        assert!(e.post(&next).await.status());
        assert_eq!(contract.latestHeight().call().await.unwrap(), 30);
    })
    .await;
}
