//! Microbenchmark: what a node hashes per bundle, for T3's 64-entry bundles of 512 B and T2's single-entry ones:
//! the bundle's EIP-712 hash (Keccak-256 over the payloads, once per bundle per node) and the namespace table's
//! entry leaves (SHA-256 over each entry, once per judged block). Payloads are random bytes from a fixed seed.
//!
//! Run with `cargo run --release -p baton-consensus --example bundle_hashing`; BENCHMARKS.md quotes it.

use std::time::Instant;

use baton_consensus::bundle::Sender;
use baton_consensus::bundle::{Bundle, BundleEntry};
use baton_consensus::hash::Hash;
use baton_consensus::types::block_table;

/// A bundle of `entries` random payloads of `bytes` each (xorshift from `seed`; the signature is not checked).
fn bundle(entries: usize, bytes: usize, seed: u64) -> Bundle {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    };
    Bundle {
        network_id: 1,
        sender: Sender::from([7u8; 20]),
        nonce: seed,
        expiry_height: 1_000_000,
        entries: (0..entries)
            .map(|i| BundleEntry {
                rollup_id: 1 + (i % 4) as u64,
                payload: (0..bytes).map(|_| next()).collect(),
            })
            .collect(),
        signature: [0; 65],
    }
}

fn main() {
    // The floor under the EIP-712 hash: Keccak-256 over 32 KiB in one call.
    let buf: Vec<u8> = bundle(64, 512, 9)
        .entries
        .iter()
        .flat_map(|e| e.payload.clone())
        .collect();
    let start = Instant::now();
    let mut acc = 0u8;
    for _ in 0..2_000 {
        acc ^= alloy_primitives::keccak256(&buf)[0];
    }
    println!(
        "Keccak-256 of {} B in one call: {:.2} µs ({acc})",
        buf.len(),
        start.elapsed().as_secs_f64() * 1e6 / 2_000.0
    );
    for (entries, count) in [(64usize, 2_000usize), (1, 50_000)] {
        let bundles: Vec<Bundle> = (0..count as u64)
            .map(|s| bundle(entries, 512, s + 1))
            .collect();
        let start = Instant::now();
        let hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
        let eip712 = start.elapsed().as_secs_f64() * 1e6 / count as f64;
        let start = Instant::now();
        let table = block_table(1..=4, &bundles, &hashes);
        let leaves = start.elapsed().as_secs_f64() * 1e6 / count as f64;
        assert_eq!(
            table.iter().map(|r| r.entry_count as usize).sum::<usize>(),
            entries * count
        );
        println!(
            "{entries:>2} × 512 B entries: EIP-712 hash {eip712:.2} µs per bundle, namespace leaves and roots \
             {leaves:.2} µs per bundle ({count} bundles)"
        );
    }
}
