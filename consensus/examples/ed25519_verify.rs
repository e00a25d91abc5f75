//! Microbenchmark: Ed25519 verification of consensus-sized messages with the verifier Baton uses
//! (`ed25519-consensus`, ZIP-215 rules on `curve25519-dalek-ng`'s serial backend) against `ed25519-zebra` (the same
//! ZIP-215 rules on `curve25519-dalek` 4, which picks an AVX2 / AVX-512 backend at run time), one signature at a
//! time and, for `ed25519-consensus`, as a batch. Every signature is checked to verify under both, and a tampered
//! one to fail under both, before anything is timed.
//!
//! Run with `cargo run --release -p baton-consensus --example ed25519_verify [-- COUNT]`; BENCHMARKS.md quotes it.

use std::time::Instant;

use rand::{Rng, SeedableRng};

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4_000);
    let seed: u64 = std::env::var("BATON_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (replay with BATON_BENCH_SEED={seed}), {count} signatures");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // A vote's signed bytes are about 100: domain, kind, height, round, value id.
    let items: Vec<([u8; 32], [u8; 64], Vec<u8>)> = (0..count)
        .map(|_| {
            let mut secret = [0u8; 32];
            rng.fill(&mut secret);
            let key = ed25519_consensus::SigningKey::from(secret);
            let mut msg = vec![0u8; 100];
            rng.fill(&mut msg[..]);
            let sig = key.sign(&msg);
            (key.verification_key().to_bytes(), sig.to_bytes(), msg)
        })
        .collect();
    let consensus = |(k, s, m): &([u8; 32], [u8; 64], Vec<u8>)| {
        ed25519_consensus::VerificationKey::try_from(*k)
            .and_then(|vk| vk.verify(&ed25519_consensus::Signature::from(*s), m))
            .is_ok()
    };
    let zebra = |(k, s, m): &([u8; 32], [u8; 64], Vec<u8>)| {
        ed25519_zebra::VerificationKey::try_from(*k)
            .and_then(|vk| vk.verify(&ed25519_zebra::Signature::from(*s), m))
            .is_ok()
    };
    for item in &items {
        assert!(consensus(item) && zebra(item), "a good signature failed");
        let mut bad = item.clone();
        bad.2[0] ^= 1;
        assert!(
            !consensus(&bad) && !zebra(&bad),
            "a tampered message verified"
        );
    }
    // Keys parsed once, as the engine holds them in the validator set.
    let time = |name: &str, f: &dyn Fn() -> usize| {
        let start = Instant::now();
        let ok = f();
        let us = start.elapsed().as_secs_f64() * 1e6 / count as f64;
        assert_eq!(ok, count);
        println!("{name:<40} {us:>8.1} µs per signature");
        us
    };
    let ck: Vec<_> = items
        .iter()
        .map(|(k, s, m)| {
            (
                ed25519_consensus::VerificationKey::try_from(*k)
                    .expect("a key that verified above"),
                ed25519_consensus::Signature::from(*s),
                m,
            )
        })
        .collect();
    let zk: Vec<_> = items
        .iter()
        .map(|(k, s, m)| {
            (
                ed25519_zebra::VerificationKey::try_from(*k).expect("a key that verified above"),
                ed25519_zebra::Signature::from(*s),
                m,
            )
        })
        .collect();
    for round in 0..2 {
        println!("-- pass {}", round + 1);
        let a = time("ed25519-consensus, one at a time", &|| {
            ck.iter().filter(|(k, s, m)| k.verify(s, m).is_ok()).count()
        });
        let b = time("ed25519-zebra, one at a time", &|| {
            zk.iter().filter(|(k, s, m)| k.verify(s, m).is_ok()).count()
        });
        let c = time("ed25519-consensus, batches of 8", &|| {
            items
                .chunks(8)
                .map(|chunk| {
                    let mut v = ed25519_consensus::batch::Verifier::new();
                    for (k, s, m) in chunk {
                        v.queue((
                            ed25519_consensus::VerificationKeyBytes::from(*k),
                            ed25519_consensus::Signature::from(*s),
                            &m[..],
                        ));
                    }
                    if v.verify(rand::thread_rng()).is_ok() {
                        chunk.len()
                    } else {
                        0
                    }
                })
                .sum()
        });
        println!(
            "zebra / consensus: {:.2}; batch-of-8 / one at a time: {:.2}",
            b / a,
            c / a
        );
    }
}
