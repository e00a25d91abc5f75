//! Microbenchmark: the mempool's cost per admission and per decided bundle when senders pipeline many bundles
//! (`mempool.max_pending_per_sender`, 1,024 by default), in nonce order and in reverse order (every bundle but the
//! last waits behind a gap until nonce 0 arrives). Signatures are not checked by the mempool, so the bundles carry a
//! dummy one.
//!
//! Run with `cargo run --release -p baton-consensus --example mempool_pipeline [-- SENDERS PER_SENDER]`;
//! BENCHMARKS.md quotes it.

use std::time::Instant;

use baton_consensus::bundle::Sender;
use baton_consensus::bundle::{Bundle, BundleEntry};
use baton_consensus::hash::Hash;
use baton_consensus::mempool::{Mempool, MempoolLimits};

fn bundle(sender: u32, nonce: u64) -> (Hash, Bundle) {
    let mut who = [0u8; 20];
    who[..4].copy_from_slice(&sender.to_be_bytes());
    let b = Bundle {
        network_id: 1,
        sender: Sender::from(who),
        nonce,
        expiry_height: 1_000_000,
        entries: vec![BundleEntry {
            rollup_id: 1,
            payload: vec![7; 64],
        }],
        signature: [0; 65],
    };
    (b.hash(), b)
}

fn run(senders: u32, per_sender: u64, reverse: bool) -> (f64, f64) {
    let mut m = Mempool::new(MempoolLimits {
        max_bundles: 1 << 22,
        max_bytes: 1 << 34,
        max_per_sender: per_sender as usize,
        max_nonce_gap: per_sender,
        max_waiting: 1 << 22,
        max_waiting_bytes: 1 << 34,
        waiting_ttl_ms: u64::MAX,
    });
    let mut all = Vec::new();
    for s in 0..senders {
        for n in 0..per_sender {
            all.push((s, if reverse { per_sender - 1 - n } else { n }));
        }
    }
    let bundles: Vec<(Hash, Bundle)> = all.iter().map(|(s, n)| bundle(*s, *n)).collect();
    let started = Instant::now();
    for (h, b) in &bundles {
        m.insert(*h, b.clone(), 0, 0).expect("admitted");
    }
    let insert_us = started.elapsed().as_secs_f64() * 1e6 / bundles.len() as f64;
    assert_eq!(m.waiting(), (0, 0), "every gap is filled in the end");
    let mut decided: Vec<(Hash, Sender, u64)> = bundles
        .iter()
        .map(|(h, b)| (*h, b.sender, b.nonce))
        .collect();
    decided.sort_by_key(|(_, s, n)| (*n, *s));
    let started = Instant::now();
    for (height, chunk) in decided.chunks(256).enumerate() {
        m.on_decided(height as u64 + 1, chunk);
    }
    let decide_us = started.elapsed().as_secs_f64() * 1e6 / bundles.len() as f64;
    assert!(m.is_empty());
    (insert_us, decide_us)
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse().ok());
    let senders: u32 = args.next().flatten().unwrap_or(16);
    let per_sender: u64 = args.next().flatten().map_or(1_024, |n: u32| u64::from(n));
    println!("{senders} senders × {per_sender} pending bundles each");
    for reverse in [false, true] {
        let (insert, decide) = run(senders, per_sender, reverse);
        println!(
            "{:<14} {insert:>8.2} µs per admission, {decide:>8.2} µs per decided bundle",
            if reverse {
                "reverse order"
            } else {
                "nonce order"
            }
        );
    }
    let select = select_behind_gaps(10_000, 100);
    println!("block building with 10,000 bundles behind nonce gaps first and 100 ready: {select:.1} µs per select");
}

/// Time of one `Mempool::select` when `gapped` bundles (each its sender's nonce 1, nonce 0 missing) arrived before
/// `ready` ones.
fn select_behind_gaps(gapped: u32, ready: u32) -> f64 {
    let mut m = Mempool::new(MempoolLimits {
        max_bundles: 1 << 22,
        max_bytes: 1 << 34,
        max_per_sender: 16,
        max_nonce_gap: 16,
        max_waiting: 1 << 22,
        max_waiting_bytes: 1 << 34,
        waiting_ttl_ms: u64::MAX,
    });
    for s in 0..gapped {
        let (h, b) = bundle(s, 1);
        m.insert(h, b, 0, 0).expect("admitted");
    }
    for s in gapped..gapped + ready {
        let (h, b) = bundle(s, 0);
        m.insert(h, b, 0, 0).expect("admitted");
    }
    const ROUNDS: u32 = 200;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        assert_eq!(m.select(4 << 20, 20_000).len(), ready as usize);
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
}
