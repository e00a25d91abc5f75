//! The contracts against a real local L1 (anvil): committed artifacts match the sources, commitments with more
//! than 2/3 of the attesting power land, forged and under-signed ones are rejected on-chain.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address as EthAddress, B256};
use alloy::providers::ext::AnvilApi;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use baton_l1_inclusion::contracts::BatonCommitments::{self, BatonCommitmentsErrors};
use common::L1;

#[test]
fn committed_artifacts_match_the_sources() {
    // At run time: a test binary reused from another checkout (shared target directory) must check this one.
    let script =
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo test"))
            .join("contracts/build.js");
    let out = std::process::Command::new("node")
        .arg(script)
        .arg("--check")
        .output()
        .expect("node runs (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "artifacts are stale or the build failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `commit` with a fixed gas limit so a refused commitment is mined and reverts on-chain; returns whether
/// the transaction succeeded and, if not, the contract error an `eth_call` of the same input names.
async fn submit(
    l1: &L1,
    c: &baton_l1_inclusion::commitment::SignedCommitment,
) -> (bool, Option<BatonCommitmentsErrors>) {
    let req = TransactionRequest::default()
        .with_to(l1.commitments)
        .with_input(c.calldata())
        .with_gas_limit(2_000_000);
    let receipt = l1
        .provider
        .send_transaction(req.clone())
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    if receipt.status() {
        return (true, None);
    }
    let err = l1.provider.call(req).await.unwrap_err();
    let decoded = err
        .as_error_resp()
        .and_then(|e| e.as_decoded_interface_error::<BatonCommitmentsErrors>());
    (false, decoded)
}

#[tokio::test]
async fn commitments_land_and_forged_or_under_signed_ones_are_rejected_on_chain() {
    common::bounded(180, async {
    let l1 = L1::start(true).await;
    let contract = l1.contract();

    // Three of four attesters: accepted, and the history answers for it.
    let good = l1.commitment(10, &[0, 1, 2]);
    let (ok, err) = submit(&l1, &good).await;
    assert!(ok, "{err:?}");
    assert_eq!(contract.latestHeight().call().await.unwrap(), 10);
    let stored = contract.commitmentAt(10).call().await.unwrap();
    assert_eq!(stored.blockHash, B256::from(good.block_hash().0));
    assert_eq!(stored.batchesRoot, B256::from(good.header.namespace_root.0));
    assert_eq!(stored.validatorSetHash, B256::from(l1.set_hash.0));
    assert!(contract
        .isCommitted(10, stored.blockHash, stored.batchesRoot)
        .call()
        .await
        .unwrap());

    // Two of four: under-signed.
    let (ok, err) = submit(&l1, &l1.commitment(20, &[0, 3])).await;
    assert!(!ok);
    assert!(
        matches!(err, Some(BatonCommitmentsErrors::InsufficientPower(ref e)) if e.signed == 2 && e.total == 4),
        "{err:?}"
    );

    // Signed by a key that is not an attester.
    let mut forged = l1.commitment(20, &[0, 1, 2]);
    let outsider = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x77)).unwrap();
    forged.signatures[2] = (
        outsider.address(),
        l1.domain.sign(&outsider, 20, forged.block_hash()).unwrap(),
    );
    let (ok, err) = submit(&l1, &forged).await;
    assert!(!ok);
    assert!(
        matches!(err, Some(BatonCommitmentsErrors::SignerNotAttester(_))),
        "{err:?}"
    );

    // A header changed after signing (another batches root): the signatures no longer match its hash.
    let mut tampered = l1.commitment(20, &[0, 1, 2]);
    tampered.header.namespace_root = baton_consensus::hash::Hash::digest(&[b"other"]);
    let (ok, err) = submit(&l1, &tampered).await;
    assert!(!ok);
    assert!(
        matches!(err, Some(BatonCommitmentsErrors::SignerNotAttester(_))),
        "{err:?}"
    );

    // The same signer counted twice.
    let mut doubled = l1.commitment(20, &[0, 1]);
    doubled.signatures.push(doubled.signatures[0]);
    let calldata_sigs = {
        BatonCommitments::commitCall::abi_decode(&doubled.calldata())
            .unwrap()
            .signatures
            .len()
    };
    assert_eq!(calldata_sigs, 2, "calldata keeps one signature per signer");

    // Another validator set, and a height that is not after the latest.
    let mut other_set = l1.commitment(20, &[]);
    other_set.header.validator_set_hash = baton_consensus::hash::Hash::digest(&[b"another set"]);
    let h = other_set.block_hash();
    other_set.signatures = (0..3)
        .map(|i| {
            let a = &l1.attesters[i];
            (a.address(), l1.domain.sign(a, 20, h).unwrap())
        })
        .collect();
    let (ok, err) = submit(&l1, &other_set).await;
    assert!(!ok);
    assert!(
        matches!(err, Some(BatonCommitmentsErrors::WrongValidatorSet(_))),
        "{err:?}"
    );
    let (ok, err) = submit(&l1, &l1.commitment(10, &[0, 1, 2])).await;
    assert!(!ok);
    assert!(
        matches!(err, Some(BatonCommitmentsErrors::HeightNotAfterLatest(_))),
        "{err:?}"
    );

    // Nothing refused changed the history.
    assert_eq!(contract.commitmentCount().call().await.unwrap(), 1);
    assert_eq!(contract.latestHeight().call().await.unwrap(), 10);

    // Only governance schedules replacing the attesting set.
    let not_gov = l1.wallet(5);
    let p = alloy::providers::ProviderBuilder::new()
        .wallet(not_gov)
        .connect_http(l1.anvil.endpoint_url());
    let res = BatonCommitments::new(l1.commitments, p)
        .scheduleSetValidators(vec![l1.address(5)], vec![1], B256::ZERO)
        .send()
        .await;
    assert!(
        res.is_err(),
        "a non-governance caller was allowed to schedule replacing the set"
    );
    })
    .await;
}

/// A commitment of `height` whose header names `set` (as current and next), signed by `signer` alone.
fn commitment_of(
    l1: &L1,
    height: u64,
    set: baton_consensus::hash::Hash,
    signer: &PrivateKeySigner,
) -> baton_l1_inclusion::commitment::SignedCommitment {
    let mut header = l1.header(height);
    header.validator_set_hash = set;
    header.next_validator_set_hash = set;
    let hash = header.hash();
    baton_l1_inclusion::commitment::SignedCommitment {
        signatures: vec![(
            signer.address(),
            l1.domain.sign(signer, height, hash).unwrap(),
        )],
        header,
        rotation: None,
    }
}

/// The contract's refusal of a simulated call, decoded.
fn refusal(e: alloy::contract::Error) -> BatonCommitmentsErrors {
    e.as_decoded_interface_error::<BatonCommitmentsErrors>()
        .unwrap_or_else(|| panic!("not a contract error: {e}"))
}

/// The attack (issue 16 item 3): governance (or whoever holds its key) replaces the attesting set with one it
/// chose, and a commitment signed by that set alone is accepted in the same L1 block, so a rollup watching L1 had
/// no moment to see the change coming. The change must first be announced (`ValidatorsScheduled`, with the full
/// set and the earliest execution time), and the new set's commitments refused until then.
#[tokio::test]
async fn governance_cannot_replace_the_attesting_set_and_use_it_at_once() {
    common::bounded(120, async {
        // Blocks mined by hand: governance's call, the commitment and an attempt to execute at once land in one
        // block.
        let l1 = L1::start(false).await;
        let contract = l1.contract();
        let attacker = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x99)).unwrap();
        let attacker_set = baton_consensus::hash::Hash::digest(&[b"the attacker's set"]);
        let forged = commitment_of(&l1, 10, attacker_set, &attacker);
        let (attesters, powers, set) = (vec![attacker.address()], vec![1u64], B256::from(attacker_set.0));

        let gov = contract
            .scheduleSetValidators(attesters.clone(), powers.clone(), set)
            .gas(1_000_000)
            .send()
            .await
            .unwrap();
        let outsider = BatonCommitments::new(l1.commitments, l1.signer(7));
        let commit = l1
            .signer(7)
            .send_transaction(
                TransactionRequest::default()
                    .with_to(l1.commitments)
                    .with_input(forged.calldata())
                    .with_gas_limit(2_000_000),
            )
            .await
            .unwrap();
        let execute = outsider
            .executeSetValidators(attesters.clone(), powers.clone(), set)
            .gas(1_000_000)
            .send()
            .await
            .unwrap();
        l1.mine(1).await;
        let l1 = &l1;
        let receipt = |h| async move {
            l1.provider
                .get_transaction_receipt(h)
                .await
                .unwrap()
                .expect("mined")
        };
        let gov = receipt(*gov.tx_hash()).await;
        let commit = receipt(*commit.tx_hash()).await;
        let execute = receipt(*execute.tx_hash()).await;
        assert_eq!(gov.block_number, commit.block_number, "one block");
        assert_eq!(gov.block_number, execute.block_number, "one block");
        assert!(gov.transaction_index < commit.transaction_index);
        assert!(commit.transaction_index < execute.transaction_index);
        assert!(gov.status(), "governance's call succeeds");
        assert!(
            !commit.status(),
            "the commitment of a set governance named in the same block was accepted: rollups had no notice"
        );
        assert!(!execute.status(), "the change was executed at once");
        assert_eq!(contract.latestHeight().call().await.unwrap(), 0);
        assert_eq!(
            contract.validatorSetHash().call().await.unwrap(),
            B256::from(l1.set_hash.0),
            "the contract still holds the old set"
        );
        // Announced first: an event with the full change and when it may take effect.
        let scheduled_at = l1.timestamp().await;
        let event = gov
            .inner
            .logs()
            .iter()
            .find_map(|l| l.log_decode::<BatonCommitments::ValidatorsScheduled>().ok())
            .expect("no ValidatorsScheduled event: the set was replaced without notice")
            .inner
            .data;
        assert_eq!(event.attesters, attesters);
        assert_eq!(event.powers, powers);
        assert_eq!(event.validatorSetHash, set);
        assert_eq!(event.executableAt, scheduled_at + common::GOVERNANCE_DELAY);
        let id = contract
            .setValidatorsId(attesters.clone(), powers.clone(), set)
            .call()
            .await
            .unwrap();
        assert_eq!(event.id, id);
        assert_eq!(contract.readyAt(id).call().await.unwrap(), event.executableAt);
        // Why the execution and the commitment were refused.
        match refusal(
            outsider
                .executeSetValidators(attesters.clone(), powers.clone(), set)
                .call()
                .await
                .unwrap_err(),
        ) {
            BatonCommitmentsErrors::TooEarly(e) => assert_eq!(e.executableAt, event.executableAt),
            other => panic!("refused for another reason: {other:?}"),
        }
        let forged_call = BatonCommitments::commitCall::abi_decode(&forged.calldata()).unwrap();
        assert!(matches!(
            refusal(
                outsider
                    .commit(forged_call.header.clone(), forged_call.signatures.clone())
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::WrongValidatorSet(_)
        ));

        // Until the delay has passed the current set goes on committing, and the change cannot be executed one
        // second early.
        l1.provider.anvil_set_auto_mine(true).await.unwrap();
        let (ok, err) = submit(l1, &l1.commitment(10, &[0, 1, 2])).await;
        assert!(ok, "{err:?}");
        l1.provider
            .anvil_set_next_block_timestamp(event.executableAt - 1)
            .await
            .unwrap();
        let early = outsider
            .executeSetValidators(attesters.clone(), powers.clone(), set)
            .gas(1_000_000)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(!early.status(), "executed a second before the delay was over");
        // From the announced time anyone may execute it; only then does the new set's commitment land.
        l1.provider
            .anvil_set_next_block_timestamp(event.executableAt)
            .await
            .unwrap();
        let done = outsider
            .executeSetValidators(attesters.clone(), powers.clone(), set)
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        assert!(done.status());
        assert!(done
            .inner
            .logs()
            .iter()
            .any(|l| l.log_decode::<BatonCommitments::Executed>().is_ok_and(|e| e.inner.data.id == id)));
        assert_eq!(contract.validatorSetHash().call().await.unwrap(), set);
        assert_eq!(contract.readyAt(id).call().await.unwrap(), 0, "executed once");
        let (ok, err) = submit(l1, &commitment_of(l1, 20, attacker_set, &attacker)).await;
        assert!(ok, "{err:?}");
    })
    .await;
}

/// The staking contract and governance itself are timelocked the same way; a scheduled change can be cancelled,
/// only governance schedules or cancels, and a change scheduled twice is refused.
#[tokio::test]
async fn governance_changes_wait_for_the_delay_and_can_be_cancelled() {
    common::bounded(120, async {
        let l1 = L1::start(true).await;
        let contract = l1.contract();
        let outsider = BatonCommitments::new(l1.commitments, l1.signer(7));
        let staking = l1.address(8);
        let mined = |r: alloy::rpc::types::TransactionReceipt| {
            assert!(r.status());
            r
        };

        // Not governance: refused.
        assert!(matches!(
            refusal(
                outsider
                    .scheduleSetStaking(staking)
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::NotGovernance(_)
        ));
        assert!(matches!(
            refusal(
                outsider
                    .scheduleSetGovernance(l1.address(7))
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::NotGovernance(_)
        ));

        // The staking contract: scheduled (event), not before the delay, cancelled, then gone.
        let r = mined(
            contract
                .scheduleSetStaking(staking)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap(),
        );
        let e = r
            .inner
            .logs()
            .iter()
            .find_map(|l| l.log_decode::<BatonCommitments::StakingScheduled>().ok())
            .expect("StakingScheduled")
            .inner
            .data;
        assert_eq!(e.staking, staking);
        assert_eq!(
            e.executableAt,
            l1.timestamp().await + common::GOVERNANCE_DELAY
        );
        assert!(matches!(
            refusal(
                contract
                    .scheduleSetStaking(staking)
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::AlreadyScheduled(_)
        ));
        assert!(matches!(
            refusal(
                outsider
                    .executeSetStaking(staking)
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::TooEarly(_)
        ));
        assert!(matches!(
            refusal(outsider.cancel(e.id).call().await.unwrap_err()),
            BatonCommitmentsErrors::NotGovernance(_)
        ));
        let r = mined(
            contract
                .cancel(e.id)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap(),
        );
        assert!(r.inner.logs().iter().any(|l| l
            .log_decode::<BatonCommitments::Cancelled>()
            .is_ok_and(|c| c.inner.data.id == e.id)));
        l1.pass_governance_delay().await;
        assert!(matches!(
            refusal(
                outsider
                    .executeSetStaking(staking)
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::NotScheduled(_)
        ));
        assert_eq!(contract.staking().call().await.unwrap(), EthAddress::ZERO);

        // Scheduled again, it takes effect once due, executed by anyone.
        mined(
            contract
                .scheduleSetStaking(staking)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap(),
        );
        l1.pass_governance_delay().await;
        mined(
            outsider
                .executeSetStaking(staking)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap(),
        );
        assert_eq!(contract.staking().call().await.unwrap(), staking);

        // A governance handover waits too; after it the old key schedules nothing and the new one can.
        let next = l1.address(6);
        let r = mined(
            contract
                .scheduleSetGovernance(next)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap(),
        );
        let e = r
            .inner
            .logs()
            .iter()
            .find_map(|l| l.log_decode::<BatonCommitments::GovernanceScheduled>().ok())
            .expect("GovernanceScheduled")
            .inner
            .data;
        assert_eq!(e.governance, next);
        assert!(matches!(
            refusal(
                outsider
                    .executeSetGovernance(next)
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::TooEarly(_)
        ));
        assert_eq!(contract.governance().call().await.unwrap(), l1.address(0));
        l1.pass_governance_delay().await;
        mined(
            outsider
                .executeSetGovernance(next)
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap(),
        );
        assert_eq!(contract.governance().call().await.unwrap(), next);
        assert!(matches!(
            refusal(
                contract
                    .scheduleSetStaking(EthAddress::ZERO)
                    .call()
                    .await
                    .unwrap_err()
            ),
            BatonCommitmentsErrors::NotGovernance(_)
        ));
        assert!(BatonCommitments::new(l1.commitments, l1.signer(6))
            .scheduleSetStaking(EthAddress::ZERO)
            .call()
            .await
            .is_ok());
    })
    .await;
}
