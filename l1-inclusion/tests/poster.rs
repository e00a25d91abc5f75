//! The commitment poster against a real local L1 (anvil): it follows a commitment to finality, re-posts after a
//! reorg drops it, heals the nonce gap a reorg leaves, resumes after a restart without posting twice, and bumps
//! fees when its transaction is priced out.

#![allow(clippy::unwrap_used)] // test helpers

mod common;

use std::time::Duration;

use alloy::primitives::B256;
use alloy::providers::ext::AnvilApi;
use alloy::providers::Provider;
use alloy::rpc::types::BlockTransactionsKind;
use baton_l1_inclusion::poster::{Poster, PosterConfig, PosterHandle, PosterStatus};
use common::{poll_until, L1};
use tokio::task::JoinHandle;

fn config() -> PosterConfig {
    PosterConfig {
        poll_interval_ms: 50,
        bump_after_blocks: 2,
        ..Default::default()
    }
}

async fn start_poster(
    l1: &L1,
    account: usize,
    state: Option<std::path::PathBuf>,
) -> (PosterHandle, JoinHandle<()>) {
    common::logs();
    let (poster, handle) = Poster::new(
        l1.reader(),
        l1.wallet(account),
        l1.commitments,
        config(),
        state,
    )
    .await
    .expect("poster starts");
    (handle, tokio::spawn(poster.run()))
}

async fn status_until(
    l1: &L1,
    h: &PosterHandle,
    mine: bool,
    what: &str,
    f: impl Fn(&PosterStatus) -> bool,
) -> PosterStatus {
    let held = poll_until(l1, 60, mine, || {
        let ok = f(&h.status());
        async move { ok }
    })
    .await;
    assert!(
        held,
        "timed out after 60 s waiting for: {what}; the poster's last status: {:?}; L1 head {}",
        h.status(),
        l1.head().await
    );
    h.status()
}

/// Transactions sent by `from` on the canonical chain.
async fn sent_by(l1: &L1, from: alloy::primitives::Address) -> usize {
    let head = l1.head().await;
    let mut n = 0;
    for b in 0..=head {
        let block = l1
            .provider
            .get_block_by_number(b.into())
            .kind(BlockTransactionsKind::Full)
            .await
            .unwrap()
            .unwrap();
        n += block
            .transactions
            .txns()
            .filter(|t| t.inner.signer() == from)
            .count();
    }
    n
}

#[tokio::test]
async fn poster_follows_to_finality_and_reposts_after_a_reorg() {
    common::bounded(180, async {
        let l1 = L1::start(true).await;
        let (h, task) = start_poster(&l1, 1, None).await;
        let c = l1.commitment(10, &[0, 1, 2]);
        assert!(h.offer(c.clone()));
        status_until(&l1, &h, false, "commitment 10 included", |s| {
            s.included_height == 10
        })
        .await;
        let landed_at = l1.contract().commitmentAt(10).call().await.unwrap().l1Block;
        assert!(landed_at > 0);

        // Drop the block that holds it (and anything after).
        let depth = l1.head().await - landed_at + 1;
        l1.reorg(depth).await;
        assert_eq!(l1.contract().latestHeight().call().await.unwrap(), 0);
        let s = status_until(&l1, &h, false, "re-posted after the reorg", |s| {
            s.reorged >= 1 && s.included_height == 10
        })
        .await;
        assert_eq!(s.reorged, 1);

        // Safe, then finalized as L1 moves on (anvil: safe 2 blocks behind the head, finalized 4).
        let s = status_until(&l1, &h, true, "commitment 10 finalized", |s| {
            s.finalized_height == 10
        })
        .await;
        assert_eq!(s.safe_height, 10);
        let contract = l1.contract();
        assert_eq!(contract.commitmentCount().call().await.unwrap(), 1);
        assert_eq!(
            contract.commitmentAt(10).call().await.unwrap().blockHash,
            B256::from(c.block_hash().0)
        );
        assert_eq!(
            sent_by(&l1, l1.address(1)).await,
            1,
            "one commitment transaction on the canonical chain"
        );
        task.abort();
    })
    .await;
}

#[tokio::test]
async fn nonce_gap_after_a_reorg_is_healed() {
    common::bounded(180, async {
        let l1 = L1::start(true).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("poster.json");
        let (h, task) = start_poster(&l1, 2, Some(state.clone())).await;
        assert!(h.offer(l1.commitment(10, &[0, 1, 2])));
        status_until(&l1, &h, false, "commitment 10 included", |s| {
            s.included_height == 10
        })
        .await;
        let landed_at = l1.contract().commitmentAt(10).call().await.unwrap().l1Block;

        // Stop mining; the next commitment goes out with the following nonce and waits in the pool.
        l1.provider.anvil_set_auto_mine(false).await.unwrap();
        assert!(h.offer(l1.commitment(20, &[1, 2, 3])));
        let s = status_until(&l1, &h, false, "commitment 20 sent", |s| {
            s.inflight_height == Some(20) && s.inflight_tx.is_some()
        })
        .await;
        let pending_tx = s.inflight_tx.unwrap();
        let raw = l1
            .provider
            .get_raw_transaction_by_hash(pending_tx)
            .await
            .unwrap()
            .expect("the pending transaction is in the pool");
        // The poster is stopped while the chain changes under it, so that it sees the gap at its next look.
        task.abort();
        let _ = task.await;
        // A reorg drops commitment 10's transaction: the account's nonce on chain falls below the pending one. Anvil
        // also empties its pool on a reorg, where geth would keep the pending transaction; put it back as geth would.
        let depth = l1.head().await - landed_at + 1;
        l1.reorg(depth).await;
        let account = l1.address(2);
        assert_eq!(l1.provider.get_transaction_count(account).await.unwrap(), 0);
        let back = l1.provider.send_raw_transaction(&raw).await;
        eprintln!("re-injected: {:?}", back.as_ref().map(|p| *p.tx_hash()));
        let (h, task) = start_poster(&l1, 2, Some(state)).await;

        let s = status_until(&l1, &h, true, "commitment 20 included after the gap", |s| {
            s.included_height == 20
        })
        .await;
        assert!(s.gap_fills >= 1, "the poster never filled the gap: {s:?}");
        let contract = l1.contract();
        assert_eq!(contract.latestHeight().call().await.unwrap(), 20);
        assert_eq!(contract.commitmentCount().call().await.unwrap(), 1);
        // The filler and the commitment transaction that waited above the gap.
        assert_eq!(sent_by(&l1, account).await, 2);
        // Nothing of ours is left waiting: the account's pending and mined nonces agree.
        l1.mine(1).await;
        let mined = l1.provider.get_transaction_count(account).await.unwrap();
        let pending = l1
            .provider
            .get_transaction_count(account)
            .pending()
            .await
            .unwrap();
        assert_eq!(mined, pending, "{s:?}");
        eprintln!("gap healed: {s:?}");
        task.abort();
    })
    .await;
}

#[tokio::test]
async fn restart_resumes_the_in_flight_transaction_without_posting_twice() {
    common::bounded(180, async {
        let l1 = L1::start(false).await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("poster.json");
        let (h, task) = start_poster(&l1, 3, Some(state.clone())).await;
        assert!(h.offer(l1.commitment(10, &[0, 1, 3])));
        status_until(&l1, &h, false, "commitment 10 sent", |s| {
            s.inflight_height == Some(10)
        })
        .await;
        // Crash before it is mined; the pool loses it too (as a restarted L1 node would).
        task.abort();
        let _ = task.await;
        l1.provider.anvil_drop_all_transactions().await.unwrap();

        let (h, task) = start_poster(&l1, 3, Some(state)).await;
        let s = status_until(&l1, &h, true, "commitment 10 included after restart", |s| {
            s.included_height == 10
        })
        .await;
        assert_eq!(s.sent, 1, "the restarted poster re-broadcast once: {s:?}");
        assert_eq!(sent_by(&l1, l1.address(3)).await, 1);
        assert_eq!(l1.contract().commitmentCount().call().await.unwrap(), 1);
        task.abort();
    })
    .await;
}

#[tokio::test]
async fn a_priced_out_commitment_is_re_sent_with_higher_fees() {
    common::bounded(180, async {
        let l1 = L1::start(false).await;
        let (h, task) = start_poster(&l1, 4, None).await;
        assert!(h.offer(l1.commitment(10, &[0, 1, 2])));
        status_until(&l1, &h, false, "commitment 10 sent", |s| {
            s.inflight_height == Some(10)
        })
        .await;
        // The next blocks' base fee jumps far above what the transaction offers.
        l1.provider
            .anvil_set_next_block_base_fee_per_gas(40_000_000_000)
            .await
            .unwrap();
        l1.mine(1).await;
        assert_eq!(l1.contract().latestHeight().call().await.unwrap(), 0);
        let s = status_until(
            &l1,
            &h,
            true,
            "commitment 10 included after a fee bump",
            |s| s.included_height == 10,
        )
        .await;
        assert!(s.fee_bumps >= 1, "{s:?}");
        assert_eq!(sent_by(&l1, l1.address(4)).await, 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        task.abort();
    })
    .await;
}
