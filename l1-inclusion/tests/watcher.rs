//! The L1 watcher against a real local L1 (anvil): inbox events arrive in (block, tx, log) order at the chosen
//! safety, and a reorg rolls back exactly the events of the dropped blocks.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use alloy::primitives::Bytes;
use baton_l1_inclusion::contracts::BatonInbox;
use baton_l1_inclusion::watcher::{InboxEventKind, Safety, WatcherUpdate};
use common::L1;

fn batch_data(e: &InboxEventKind) -> Vec<u8> {
    match e {
        InboxEventKind::Batch { data, .. } => data.to_vec(),
        other => panic!("expected a batch, got {other:?}"),
    }
}

#[tokio::test]
async fn events_follow_the_canonical_chain_through_a_reorg() {
    common::bounded(120, async {
        let l1 = L1::start(true).await;
        let (inbox, from_block) = l1.deploy_inbox().await;
        let post = |tag: u8| l1.post(inbox, 7, vec![tag; 3]);
        for tag in 1..=4u8 {
            post(tag).await;
        }
        let r = BatonInbox::new(inbox, l1.signer(0))
            .forceInclude(9, Bytes::from_static(b"forced"))
            .send()
            .await
            .unwrap()
            .get_receipt()
            .await
            .unwrap();
        let forced_block = r.block_number.unwrap();

        let mut latest = l1.watcher(inbox, from_block, Safety::Latest);
        let Some(WatcherUpdate::Advanced { events, to }) = latest.poll().await.unwrap() else {
            panic!("expected events");
        };
        assert_eq!(to.number, forced_block);
        assert_eq!(events.len(), 5);
        let tags: Vec<u8> = events[..4].iter().map(|e| batch_data(&e.kind)[0]).collect();
        assert_eq!(tags, vec![1, 2, 3, 4]);
        assert!(events.windows(2).all(|w| w[0].position < w[1].position));
        assert_eq!(
            events[4].kind,
            InboxEventKind::Forced {
                rollup_id: 9,
                index: 0,
                sender: l1.address(0),
                deadline: forced_block + 5,
                payload: Bytes::from_static(b"forced"),
            }
        );
        assert_eq!(latest.poll().await.unwrap(), None, "nothing new");

        // At `safe` (two blocks behind the head on this anvil) the newest events are not reported yet.
        let mut safe = l1.watcher(inbox, from_block, Safety::Safe);
        let Some(WatcherUpdate::Advanced { events, .. }) = safe.poll().await.unwrap() else {
            panic!("expected events");
        };
        assert_eq!(events.len(), 3);

        // Drop the last two blocks (batch 4 and the forced entry); the replacement chain carries batch 5.
        l1.reorg(2).await;
        let Some(WatcherUpdate::RolledBack { removed, to }) = latest.poll().await.unwrap() else {
            panic!("expected a rollback");
        };
        assert_eq!(removed.len(), 2);
        assert_eq!(batch_data(&removed[0].kind), vec![4; 3]);
        assert!(matches!(removed[1].kind, InboxEventKind::Forced { .. }));
        assert!(to.number < forced_block - 1);
        post(5).await;
        let Some(WatcherUpdate::Advanced { events, .. }) = latest.poll().await.unwrap() else {
            panic!("expected the corrected events");
        };
        // Blocks re-read after the rollback: the empty replacements and batch 5.
        let tags: Vec<u8> = events.iter().map(|e| batch_data(&e.kind)[0]).collect();
        assert_eq!(tags, vec![5]);
        let all: Vec<u8> = latest.events().map(|e| batch_data(&e.kind)[0]).collect();
        assert_eq!(all, vec![1, 2, 3, 5]);
        assert_eq!(latest.reorgs, 1);
    })
    .await;
}
