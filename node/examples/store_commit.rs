//! What a decision costs the store: `RocksStore::commit` of blocks of 64 single-entry bundles of 512 bytes (T2's
//! shape), each from another sender, in two cases: the bundles were persisted here first (this node's own clients'
//! submissions, a quarter of a block on a four-validator network) or not (they came from peers, the other three
//! quarters). Writes are not synced, so the figure is the commit's CPU (RocksDB's write path: the memtables' skip
//! lists), not the disk's wait. The cases alternate in rounds on fresh stores, each round a store per case.
//!
//!     cargo run --release -p baton-node --example store_commit

use std::time::Instant;

use baton_consensus::bundle::testing::bundle_of;
use baton_consensus::bundle::{Bundle, BundleEntry};
use baton_consensus::fixtures;
use baton_consensus::hash::Hash;
use baton_consensus::registry::ChainSpec;
use baton_consensus::signing::ChainDomain;
use baton_consensus::store::ChainStore;
use baton_node::config::StorageSection;
use baton_node::store::RocksStore;

const HEIGHTS: u64 = 600;
const PER_BLOCK: usize = 64;
const ROUNDS: usize = 3;

fn main() {
    let keys = fixtures::validator_keys(1, 1);
    let spec = ChainSpec::for_tests(7, 4);
    let domain = ChainDomain::new("store_commit");
    print!("signing {} bundles ... ", HEIGHTS as usize * PER_BLOCK);
    let started = Instant::now();
    let blocks: Vec<fixtures::Decided> = (1..=HEIGHTS)
        .map(|height| {
            let bundles: Vec<Bundle> = (0..PER_BLOCK as u8)
                .map(|i| {
                    let mut payload = vec![0u8; 512];
                    payload[..8].copy_from_slice(&height.to_be_bytes());
                    payload[8] = i;
                    bundle_of(
                        i,
                        height - 1,
                        vec![BundleEntry {
                            rollup_id: 1 + (i as u64 % 4),
                            payload,
                        }],
                    )
                })
                .collect();
            let ctx = fixtures::block_context(height, fixtures::validator_set(&keys));
            fixtures::decide(&ctx, &spec, &domain, bundles, &keys)
        })
        .collect();
    println!("{:.1} s", started.elapsed().as_secs_f64());
    let storage = StorageSection {
        sync_writes: false,
        ..StorageSection::default()
    };
    for round in 1..=ROUNDS {
        for persisted_here in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = RocksStore::open(dir.path(), &storage).expect("store");
            let mut spent = std::time::Duration::ZERO;
            for d in &blocks {
                if persisted_here {
                    let refs: Vec<(Hash, &Bundle)> = d
                        .bundle_hashes
                        .iter()
                        .copied()
                        .zip(d.block.bundles.iter())
                        .collect();
                    store.persist_pending(&refs).expect("persist");
                }
                let t = Instant::now();
                store
                    .commit(&d.block, &d.bundle_hashes, &d.batches, &d.table, &d.cert)
                    .expect("commit");
                spent += t.elapsed();
            }
            println!(
                "round {round}, bundles {}: {:.1} µs per commit of {PER_BLOCK} bundles",
                if persisted_here {
                    "persisted here"
                } else {
                    "from peers    "
                },
                spent.as_secs_f64() * 1e6 / HEIGHTS as f64
            );
        }
    }
}
