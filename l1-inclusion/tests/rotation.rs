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
use baton_consensus::validators::{Validator, ValidatorSet};
use baton_l1_inclusion::commitment::{Rotation, SignedCommitment};
use baton_l1_inclusion::contracts::BatonCommitments::{self, BatonCommitmentsErrors};
use baton_l1_inclusion::contracts::BatonStaking;
use baton_l1_inclusion::staking;
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
    /// With the first `staked` members of the next set (in the set's order) registered; registration open.
    async fn start(staked: usize) -> EpochEnd {
        EpochEnd::start_with(staked, false).await
    }

    /// As [`EpochEnd::start`]; with `allowlisted`, registration is behind the allowlist and the five members'
    /// keys are allowlisted at deployment (as a network's genesis validators are).
    async fn start_with(staked: usize, allowlisted: bool) -> EpochEnd {
        let l1 = L1::start(true).await;
        let keys: Vec<ed25519_consensus::SigningKey> = (1..=5u8)
            .map(|i| ed25519_consensus::SigningKey::from([i; 32]))
            .collect();
        let attesters: Vec<PrivateKeySigner> = (1..=5u8)
            .map(|i| PrivateKeySigner::from_bytes(&B256::repeat_byte(0x60 + i)).unwrap())
            .collect();
        // Allowlisted keys are bound at deployment to their owner (dev account 0) and attester.
        let n = if allowlisted { keys.len() } else { 0 };
        let staking = *BatonStaking::deploy(
            l1.provider.clone(),
            U256::from(ETHER),
            3,
            l1.address(0),
            common::GOVERNANCE_DELAY,
            keys[..n]
                .iter()
                .map(|k| B256::from(k.verification_key().to_bytes()))
                .collect(),
            vec![l1.address(0); n],
            attesters[..n].iter().map(|a| a.address()).collect(),
            !allowlisted,
        )
        .await
        .unwrap()
        .address();
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
            assert!(e.register(i).await, "member {i} registers");
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

    /// Stakes the next set's `i`-th member (the set's order) with its attester, from its owner (dev account 0);
    /// returns whether the registration landed.
    async fn register(&self, i: usize) -> bool {
        let pk = self.set.validators()[i].public_key;
        let k = self
            .keys
            .iter()
            .position(|k| k.verification_key() == pk)
            .unwrap();
        let input = self.register_call(0, &self.keys[k], &self.attesters[k]);
        self.send_staking(0, input, ETHER).await
    }

    /// `register` of `key` by dev account `from` with `attester`, with the attester's agreement and the key's
    /// proof of possession.
    fn register_call(
        &self,
        from: usize,
        key: &ed25519_consensus::SigningKey,
        attester: &PrivateKeySigner,
    ) -> Vec<u8> {
        let owner = self.l1.address(from);
        let consensus_key = B256::from(key.verification_key().to_bytes());
        BatonStaking::registerCall {
            consensusKey: consensus_key,
            attester: attester.address(),
            attesterSignature: staking::attester_signature(
                attester,
                self.l1.anvil.chain_id(),
                self.staking,
                consensus_key,
                owner,
            )
            .unwrap()
            .into(),
            proof: staking::prove(key, self.staking, owner, attester.address()).into(),
        }
        .abi_encode()
    }

    /// Sends `input` to the staking contract from dev account `from` with a fixed gas limit (so a refused call
    /// is mined and reverts on-chain); returns whether it succeeded.
    async fn send_staking(&self, from: usize, input: Vec<u8>, value: u128) -> bool {
        let req = alloy::rpc::types::TransactionRequest::default()
            .to(self.staking)
            .input(input.into())
            .value(U256::from(value))
            .gas_limit(500_000);
        // Account 0 through the shared provider (it keeps track of its own nonces).
        let provider = if from == 0 {
            self.l1.provider.clone()
        } else {
            self.l1.signer(from)
        };
        alloy::providers::Provider::send_transaction(&provider, req)
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap()
            .status()
    }

    /// The candidate table a node folds from the staking contract's events (what its set function reads).
    async fn node_table(&self) -> baton_consensus::epoch::CandidateTable {
        let logs = alloy::providers::Provider::get_logs(
            &self.l1.provider,
            &alloy::rpc::types::Filter::new()
                .address(self.staking)
                .from_block(0),
        )
        .await
        .unwrap();
        let mut table = baton_consensus::epoch::CandidateTable::default();
        for (_, events) in baton_l1_inclusion::staking::by_block(&logs) {
            table.apply_block(events);
        }
        table
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
        // And the staking contract learns the commitments contract (once): no withdrawing from under its set.
        let named = BatonStaking::new(self.staking, self.l1.provider.clone())
            .setCommitments(self.l1.commitments)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(named.status());
        assert!(
            !self
                .send_staking(
                    0,
                    BatonStaking::setCommitmentsCall {
                        commitments_: EthAddress::ZERO
                    }
                    .abi_encode(),
                    0
                )
                .await,
            "named twice"
        );
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
        assert!(e.register(4).await);
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

/// Attack 1 (issue 16 item 2), squatting a key: the fifth member's key is allowlisted (a genesis validator's, say)
/// and public; before its owner registers it, an outsider (dev account 7) front-runs the registration with an
/// attester of its own. Were that accepted, the nodes' set function would give the key's power to the outsider's
/// attester and `rotate` would install it, so the key's real attestations would be refused (`SignerNotAttester`)
/// and, with enough power squatted, commitments would halt. The squat must neither land nor count: the real owner
/// registers, the nodes see the real attester, the rotation installs it and the new set's commitments count it.
#[tokio::test]
async fn a_squatter_cannot_take_an_allowlisted_key() {
    common::bounded(120, async {
        let e = EpochEnd::start_with(4, true).await;
        e.enable_rotation().await;
        let key = e.members[4];
        let squatter = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x77)).unwrap();
        // The squatter can agree for its own attester, but cannot prove it holds the key: it sends 64 bytes of
        // anything.
        let squat_call = BatonStaking::registerCall {
            consensusKey: key,
            attester: squatter.address(),
            attesterSignature: staking::attester_signature(
                &squatter,
                e.l1.anvil.chain_id(),
                e.staking,
                key,
                e.l1.address(7),
            )
            .unwrap()
            .into(),
            proof: vec![7u8; 64].into(),
        };
        // Refused on-chain: the allowlisting bound the key to its owner.
        let why = BatonStaking::new(e.staking, e.l1.signer(7))
            .register(
                squat_call.consensusKey,
                squat_call.attester,
                squat_call.attesterSignature.clone(),
                squat_call.proof.clone(),
            )
            .value(U256::from(ETHER))
            .call()
            .await
            .unwrap_err();
        assert!(
            matches!(
                why.as_decoded_interface_error::<BatonStaking::BatonStakingErrors>(),
                Some(BatonStaking::BatonStakingErrors::KeyOwnedBy(_))
            ),
            "{why}"
        );
        let squat = e.send_staking(7, squat_call.abi_encode(), ETHER).await;
        // The real owner registers the key with its attester.
        let real = e.register(4).await;
        let table = e.node_table().await;
        let real_attester = e.attester_of(&key.0);
        assert_eq!(
            table.candidates.get(&key.0).map(|c| EthAddress::from(c.attester)),
            Some(real_attester),
            "the nodes' set function gives the key to the squatter's attester (squat landed: {squat}, the real \
             owner's registration landed: {real})"
        );
        assert!(!squat, "the squatter's registration of someone else's key landed");
        // The rotation installs the real attester, and the new set's commitment, signed by the real attesters
        // (the fifth among them), is accepted.
        assert!(e.post(&e.rotation()).await.status());
        let on_chain: Vec<EthAddress> = e.l1.contract().attesters().call().await.unwrap();
        assert!(on_chain.contains(&real_attester) && !on_chain.contains(&squatter.address()));
        let all = e.of_next_set(30, &e.attesters.iter().collect::<Vec<_>>());
        assert!(e.post(&all).await.status(), "the new set's commitment is refused");
    })
    .await;
}

/// Attack 2, reusing an attester: an outsider (dev account 7) stakes a key of its own with the attester of a
/// member of the next set, and enough stake to be in that set too. Were that accepted, `rotate` to any set holding
/// both keys would revert (an attester listed twice), so the contract would stay on the old set for good. The
/// reuse must be refused; with its own attester the outsider's key rotates in like any other.
#[tokio::test]
async fn a_reused_attester_cannot_block_the_rotation() {
    common::bounded(120, async {
        let mut e = EpochEnd::start(5).await;
        e.enable_rotation().await;
        let outsider = ed25519_consensus::SigningKey::from([9; 32]);
        let okey = B256::from(outsider.verification_key().to_bytes());
        let copied = e.attesters[0].address();
        // It cannot get the attester's agreement; it sends its own signature, and its key's valid proof.
        let forged = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x78)).unwrap();
        let reuse_call = BatonStaking::registerCall {
            consensusKey: okey,
            attester: copied,
            attesterSignature: staking::attester_signature(
                &forged,
                e.l1.anvil.chain_id(),
                e.staking,
                okey,
                e.l1.address(7),
            )
            .unwrap()
            .into(),
            proof: staking::prove(&outsider, e.staking, e.l1.address(7), copied).into(),
        };
        let reused = e.send_staking(7, reuse_call.abi_encode(), 6 * ETHER).await;
        // Why: the attester serves member 0 already.
        let why = BatonStaking::new(e.staking, e.l1.signer(7))
            .register(
                okey,
                copied,
                reuse_call.attesterSignature.clone(),
                reuse_call.proof.clone(),
            )
            .value(U256::from(6 * ETHER))
            .call()
            .await;
        if !reused {
            assert!(matches!(
                why.unwrap_err()
                    .as_decoded_interface_error::<BatonStaking::BatonStakingErrors>(),
                Some(BatonStaking::BatonStakingErrors::AttesterTaken(_))
            ));
        }
        // If the reuse was refused, the outsider stakes with an attester of its own.
        let own = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x79)).unwrap();
        if !reused {
            let input = e.register_call(7, &outsider, &own);
            assert!(e.send_staking(7, input, 6 * ETHER).await);
        }
        // The next set as the nodes compute it holds the outsider's key too (its stake ranks it first).
        e.keys.push(outsider);
        e.attesters.push(own);
        e.set = ValidatorSet::new(
            e.keys
                .iter()
                .enumerate()
                .map(|(i, k)| Validator::new(k.verification_key(), i as u64 + 1))
                .collect(),
        )
        .unwrap();
        e.members = e
            .set
            .validators()
            .iter()
            .map(|v| B256::from(v.public_key.to_bytes()))
            .collect();
        e.powers = e.set.validators().iter().map(|v| v.voting_power).collect();
        let mut header = e.l1.header(20);
        header.next_validator_set_hash = e.set.hash();
        let hash = header.hash();
        e.last = SignedCommitment {
            signatures: (0..3)
                .map(|i| {
                    let a = &e.l1.attesters[i];
                    (a.address(), e.l1.domain.sign(a, 20, hash).unwrap())
                })
                .collect(),
            header,
            rotation: None,
        };
        let rotation = e.rotation();
        let call = BatonCommitments::rotateCall::abi_decode(&rotation.calldata()).unwrap();
        if let Err(err) = e
            .l1
            .contract()
            .rotate(call.header, call.signatures, call.keys, call.powers)
            .call()
            .await
        {
            panic!(
                "the rotation to the set holding the outsider's key is refused (reuse landed: {reused}): {:?}",
                refusal(err)
            );
        }
        assert!(e.post(&rotation).await.status());
        assert!(!reused, "a second key registered with a member's attester");
    })
    .await;
}

/// Attack 3, withdrawing under the rotation: a member of the next set asks to exit and withdraws its stake after
/// the exit delay, before the rotation to that set lands on L1 (the poster lags, or the exit delay is short). Were
/// the attester read from a stake that can be gone, `rotate` would revert (`NotStaked`) and the contract would stay
/// on the old set. The rotation must land; and once a member is in the contract's set, it cannot withdraw until
/// the contract has rotated to a set without it.
#[tokio::test]
async fn a_member_cannot_withdraw_its_way_out_of_the_rotation() {
    common::bounded(120, async {
        let e = EpochEnd::start(5).await;
        e.enable_rotation().await;
        let leaver = e.members[4];
        let exit = |k: B256| BatonStaking::requestExitCall { consensusKey: k }.abi_encode();
        let withdraw = |k: B256| BatonStaking::withdrawCall { consensusKey: k }.abi_encode();
        assert!(e.send_staking(0, exit(leaver), 0).await);
        e.l1.mine(3).await;
        let withdrew = e.send_staking(0, withdraw(leaver), 0).await;
        let rotation = e.rotation();
        let call = BatonCommitments::rotateCall::abi_decode(&rotation.calldata()).unwrap();
        if let Err(err) = e
            .l1
            .contract()
            .rotate(call.header, call.signatures, call.keys, call.powers)
            .call()
            .await
        {
            panic!(
                "the rotation is refused after a member of the new set withdrew (withdrawal landed: {withdrew}): {:?}",
                refusal(err)
            );
        }
        assert!(e.post(&rotation).await.status());

        // Now in the contract's set, member 3 asks to exit: it cannot withdraw while the contract holds a set with
        // it, even after the exit delay.
        let stayer = e.members[3];
        assert!(e.send_staking(0, exit(stayer), 0).await);
        e.l1.mine(3).await;
        assert!(
            !e.send_staking(0, withdraw(stayer), 0).await,
            "a member of the contract's current set withdrew"
        );
        let why = BatonStaking::new(e.staking, e.l1.provider.clone())
            .withdraw(stayer)
            .call()
            .await
            .unwrap_err();
        assert!(
            matches!(
                why.as_decoded_interface_error::<BatonStaking::BatonStakingErrors>(),
                Some(BatonStaking::BatonStakingErrors::InCommittedSet(_))
            ),
            "{why}"
        );
        // The contract rotates (height 30) to a set without it (the others, powers unchanged): then it can.
        let rest = ValidatorSet::new(
            e.set
                .validators()
                .iter()
                .filter(|v| B256::from(v.public_key.to_bytes()) != stayer)
                .map(|v| Validator::new(v.public_key, v.voting_power))
                .collect(),
        )
        .unwrap();
        let mut c = e.of_next_set(30, &e.attesters.iter().collect::<Vec<_>>());
        c.header.next_validator_set_hash = rest.hash();
        let hash = c.header.hash();
        c.signatures = e
            .attesters
            .iter()
            .map(|a| (a.address(), e.l1.domain.sign(a, 30, hash).unwrap()))
            .collect();
        c.signatures.sort_by_key(|(a, _)| *a);
        c.rotation = Some(Rotation {
            keys: rest
                .validators()
                .iter()
                .map(|v| B256::from(v.public_key.to_bytes()))
                .collect(),
            powers: rest.validators().iter().map(|v| v.voting_power).collect(),
        });
        assert!(e.post(&c).await.status(), "the rotation to the set without it");
        assert!(e.send_staking(0, withdraw(stayer), 0).await);
    })
    .await;
}
