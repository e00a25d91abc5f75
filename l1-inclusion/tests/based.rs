//! Based-mode derivation against a real local L1 (anvil): a based rollup's batches are the valid bundles of its
//! inbox events in L1 order, and after a reorg the derivation yields the corrected batches.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use baton_consensus::bundle::UnsignedBundle;
use baton_consensus::bundle::{Bundle, BundleEntry};
use baton_consensus::registry::ChainSpec;
use baton_l1_inclusion::based::{BasedBatch, Deriver};
use baton_l1_inclusion::watcher::{Safety, WatcherUpdate};
use common::L1;

const NETWORK: u64 = 5;
const BASED: u64 = 7;

fn bundle(key: &PrivateKeySigner, nonce: u64, entries: &[(u64, &str)]) -> Bundle {
    let u = UnsignedBundle {
        network_id: NETWORK,
        sender: key.address(),
        nonce,
        expiry_height: 1,
        entries: entries
            .iter()
            .map(|(r, p)| BundleEntry {
                rollup_id: *r,
                payload: p.as_bytes().to_vec(),
            })
            .collect(),
    };
    let hash = u.signing_hash();
    let sig = key.sign_hash_sync(&B256::from(hash.0)).unwrap();
    u.with_signature(sig.as_bytes())
}

fn payloads(batches: &[BasedBatch]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| b.entries.iter())
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect()
}

#[tokio::test]
async fn based_batches_follow_the_inbox_through_a_reorg() {
    common::bounded(120, async {
        let l1 = L1::start(true).await;
        let (inbox, from_block) = l1.deploy_inbox().await;
        let post = |rollup: u64, data: Vec<u8>| l1.post(inbox, rollup, data);
        let list = |bundles: Vec<Bundle>| borsh::to_vec(&bundles).unwrap();
        let (alice, bob) = (
            PrivateKeySigner::from_bytes(&B256::repeat_byte(0x11)).unwrap(),
            PrivateKeySigner::from_bytes(&B256::repeat_byte(0x12)).unwrap(),
        );
        let a1 = bundle(&alice, 0, &[(BASED, "a1"), (BASED, "a1-second")]);
        let a2 = bundle(&bob, 0, &[(BASED, "a2")]);
        post(BASED, list(vec![a1.clone(), a2])).await;
        let mut forged = bundle(&alice, 1, &[(BASED, "forged")]);
        forged.signature[3] ^= 1;
        let mixed = bundle(&bob, 1, &[(BASED, "mixed"), (8, "shared")]);
        let b4 = bundle(&bob, 2, &[(BASED, "b4")]);
        post(BASED, list(vec![forged, mixed, a1.clone(), b4])).await;
        post(BASED, b"not bundles".to_vec()).await;
        post(8, list(vec![bundle(&alice, 5, &[(8, "other rollup")])])).await;
        let b5 = bundle(&alice, 2, &[(BASED, "b5")]);
        post(BASED, list(vec![b5.clone()])).await;

        let spec = ChainSpec::for_tests(NETWORK, 8);
        let mut watcher = l1.watcher(inbox, from_block, Safety::Latest);
        let mut deriver = Deriver::new(BASED, spec.clone());
        let Some(WatcherUpdate::Advanced { events, .. }) = watcher.poll().await.unwrap() else {
            panic!("expected inbox events");
        };
        assert_eq!(events.len(), 5);
        let (batches, skipped) = deriver.apply(&events);
        assert_eq!(payloads(&batches), ["a1", "a1-second", "a2", "b4", "b5"]);
        // One batch per L1 block with entries, carrying that block as its origin.
        assert_eq!(batches.len(), 3);
        for b in &batches {
            let block = watcher.block(b.l1_block_number).unwrap();
            assert_eq!(block.hash, b.l1_block_hash);
        }
        assert_eq!(batches[0].entries[1].index_in_bundle, 1);
        assert_eq!(batches[0].entries[0].bundle_hash, a1.hash());
        // forged signature, mixed rollups, duplicate of a1, undecodable data.
        assert_eq!(skipped.len(), 4, "{skipped:?}");

        // A reorg drops the last block (b5); the replacement chain carries b6 then b5 again.
        l1.reorg(1).await;
        let Some(WatcherUpdate::RolledBack { to, removed }) = watcher.poll().await.unwrap() else {
            panic!("expected a rollback");
        };
        assert_eq!(removed.len(), 1);
        deriver.rollback(to.number + 1);
        let b6 = bundle(&bob, 3, &[(BASED, "b6")]);
        post(BASED, list(vec![b6, b5])).await;
        let Some(WatcherUpdate::Advanced { events, .. }) = watcher.poll().await.unwrap() else {
            panic!("expected the replacement events");
        };
        let (corrected, _) = deriver.apply(&events);
        assert_eq!(payloads(&corrected), ["b6", "b5"]);

        // Incremental derivation with rollback equals derivation from scratch over the canonical events.
        let (all, _) = Deriver::new(BASED, spec).apply(watcher.events());
        assert_eq!(payloads(&all), ["a1", "a1-second", "a2", "b4", "b6", "b5"]);
    })
    .await;
}

/// A batch posted as EIP-4844 blobs derives exactly like the same batch in calldata; blobs that do not hold a
/// list of bundles are skipped.
#[tokio::test]
async fn a_batch_posted_in_blobs_derives_like_calldata() {
    use baton_l1_inclusion::blobs::{encode, resolve, BlobFetcher};
    use baton_l1_inclusion::contracts::BatonInbox;
    use baton_l1_inclusion::watcher::InboxEventKind;
    common::bounded(120, async {
        let l1 = L1::start(true).await;
        let (inbox, from_block) = l1.deploy_inbox().await;
        let alice = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x21)).unwrap();
        let big = "x".repeat(60_000);
        let bundles = vec![
            bundle(&alice, 0, &[(BASED, "blob-1"), (BASED, "blob-1b")]),
            bundle(&alice, 1, &[(BASED, &big)]),
            bundle(&alice, 2, &[(BASED, &big)]),
            bundle(&alice, 3, &[(BASED, &big)]),
        ];
        let data = borsh::to_vec(&bundles).unwrap();
        let l1 = &l1;
        let post_blobs = |data: Vec<u8>| async move {
            let receipt = BatonInbox::new(inbox, l1.signer(0))
                .postBlobs(BASED)
                .sidecar(encode(&data).unwrap())
                .send()
                .await
                .unwrap()
                .get_receipt()
                .await
                .unwrap();
            assert!(receipt.status());
        };
        post_blobs(data.clone()).await;
        post_blobs(b"not bundles".to_vec()).await;
        l1.post(inbox, BASED, borsh::to_vec(&vec![bundle(&alice, 4, &[(BASED, "calldata")])]).unwrap())
            .await;

        let mut watcher = l1.watcher(inbox, from_block, Safety::Latest);
        let Some(WatcherUpdate::Advanced { events, .. }) = watcher.poll().await.unwrap() else {
            panic!("expected inbox events");
        };
        let blob_events = events
            .iter()
            .filter(|e| matches!(&e.kind, InboxEventKind::BlobBatch { blob_hashes, .. } if !blob_hashes.is_empty()))
            .count();
        assert_eq!(blob_events, 2);
        // 180 kB need two blobs.
        assert!(matches!(&events[0].kind, InboxEventKind::BlobBatch { blob_hashes, .. } if blob_hashes.len() == 2));
        let resolved = resolve(events, &BlobFetcher::new(l1.reader())).await.unwrap();
        let InboxEventKind::Batch { data: got, .. } = &resolved[0].kind else {
            panic!("resolved to a batch");
        };
        assert_eq!(got.as_ref(), data.as_slice());
        let spec = ChainSpec::for_tests(NETWORK, 8);
        let (batches, skipped) = Deriver::new(BASED, spec).apply(&resolved);
        let got = payloads(&batches);
        assert_eq!(got[..2], ["blob-1", "blob-1b"]);
        assert_eq!(got[2..5], [big.clone(), big.clone(), big]);
        assert_eq!(got[5], "calldata");
        assert_eq!(skipped.len(), 1, "{skipped:?}");
    })
    .await;
}
