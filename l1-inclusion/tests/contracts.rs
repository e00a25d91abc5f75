//! The contracts against a real local L1 (anvil): committed artifacts match the sources, commitments with more
//! than 2/3 of the attesting power land, forged and under-signed ones are rejected on-chain.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use alloy::network::TransactionBuilder;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
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
    tampered.header.namespace_root = baton_consensus::Hash::digest(&[b"other"]);
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
        use alloy::sol_types::SolCall;
        BatonCommitments::commitCall::abi_decode(&doubled.calldata())
            .unwrap()
            .signatures
            .len()
    };
    assert_eq!(calldata_sigs, 2, "calldata keeps one signature per signer");

    // Another validator set, and a height that is not after the latest.
    let mut other_set = l1.commitment(20, &[]);
    other_set.header.validator_set_hash = baton_consensus::Hash::digest(&[b"another set"]);
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

    // Only governance replaces the attesting set.
    let not_gov = l1.wallet(5);
    let p = alloy::providers::ProviderBuilder::new()
        .wallet(not_gov)
        .connect_http(l1.anvil.endpoint_url());
    let res = BatonCommitments::new(l1.commitments, p)
        .setValidators(vec![l1.address(5)], vec![1], B256::ZERO)
        .send()
        .await;
    assert!(
        res.is_err(),
        "a non-governance caller was allowed to replace the set"
    );
    })
    .await;
}
