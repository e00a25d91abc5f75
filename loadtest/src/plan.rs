//! What a load step offers and where ([`LoadConfig`], [`Shape`]), and its bundles, made before its timed window:
//! every bundle signed, hashed and built into its request message ahead of time, each with the instant it is due.
//! The timed window then only sends, so the harness's own signing can neither slow the offered rate nor hide a
//! stall of the network (latency is counted from the scheduled instant, not from the send).
//!
//! Payloads are random bytes (incompressible), so storage compression cannot flatter the figures.

use std::collections::BTreeMap;

use alloy_signer_local::PrivateKeySigner;
use baton_proto::client::sign_bundle;
use baton_proto::pb;
use baton_proto::types::{BundleEntry, Hash, UnsignedBundle};
use eyre::{eyre, Result};
use rand::{RngCore, SeedableRng};

use crate::procstat::Watched;

/// The shape of the load of one step.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Shape {
    /// Offered bundles per second after the ramp, over all connections (open loop: sent on schedule whether or
    /// not acks come back).
    pub rate: f64,
    /// Seconds to ramp linearly from 0 to `rate`.
    pub ramp_secs: f64,
    /// Seconds of offered load, ramp included.
    pub duration_secs: f64,
    /// Bytes per entry payload (random bytes).
    pub payload_bytes: usize,
    /// Entries per bundle (a cross-rollup bundle has at least two).
    pub entries: usize,
    /// Fraction of bundles that span two rollups.
    pub cross_fraction: f64,
    /// `SubmitBundles` streams, spread over the endpoints.
    pub connections: usize,
    /// Distinct signing keys (each with its own nonce sequence); fresh every step.
    pub senders: usize,
    /// Seeds the payload bytes.
    pub seed: u64,
}

/// What to offer and for how long: the shape of the load ([`Shape`]) and where it goes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadConfig {
    pub endpoints: Vec<String>,
    #[serde(flatten)]
    pub shape: Shape,
    /// Rollups to spread load over (the first N registered).
    pub rollups: usize,
    /// After the load stops, how long to wait for acknowledged bundles to show up.
    pub drain_secs: f64,
    /// Bundles expire this many heights after the height seen at start.
    pub expiry_heights: u64,
    /// Processes whose CPU and writes the report gives (the nodes under test; the harness is added).
    pub watched: Vec<Watched>,
    /// Send a bundle refused as temporary (a retry hint, or UNAVAILABLE) again after the node's hint (as a client
    /// should).
    pub retry_temporary: bool,
}

/// One bundle ready to send.
#[derive(Debug)]
pub struct Prepared {
    /// Seconds after the window opens at which the bundle is due.
    pub at: f64,
    pub client_ref: u64,
    /// The signing key, unique over the step (connection and key index): its bundles carry consecutive nonces in
    /// send order.
    pub sender: u64,
    pub hash: Hash,
    /// Entries per rollup.
    pub rollups: BTreeMap<u64, u32>,
    pub request: pb::SubmitBundlesRequest,
}

/// Bundles due by time `t` for one connection offering `rate` after a linear ramp of `ramp` seconds.
pub fn due(t: f64, rate: f64, ramp: f64) -> f64 {
    if ramp <= 0.0 {
        return rate * t;
    }
    if t < ramp {
        rate * t * t / (2.0 * ramp)
    } else {
        rate * (ramp / 2.0 + (t - ramp))
    }
}

/// When the `n`th bundle of a connection is due (inverse of [`due`]).
pub fn scheduled_at(n: u64, rate: f64, ramp: f64) -> f64 {
    let n = n as f64;
    if rate <= 0.0 {
        return 0.0;
    }
    if ramp <= 0.0 {
        return n / rate;
    }
    let at_ramp_end = rate * ramp / 2.0;
    if n <= at_ramp_end {
        (2.0 * ramp * n / rate).sqrt()
    } else {
        ramp + (n - at_ramp_end) / rate
    }
}

/// The rollups of entry `i` of bundle `seq` of connection `c`: all on one rollup, or alternating between two for a
/// cross-rollup bundle.
fn rollup_of(rollups: &[u64], c: usize, seq: u64, i: usize, cross: bool) -> u64 {
    let base = seq as usize + c;
    if cross && i % 2 == 1 {
        rollups[(base + 1) % rollups.len()]
    } else {
        rollups[base % rollups.len()]
    }
}

/// Builds, signs and encodes every bundle of one step: one list per connection, in send order. Signing runs on
/// every core (the network under test is idle while this runs).
pub fn build(
    shape: &Shape,
    rollups: &[u64],
    network_id: u64,
    expiry_height: u64,
) -> Result<Vec<Vec<Prepared>>> {
    if rollups.is_empty() {
        return Err(eyre!("no rollups to load"));
    }
    let conns = shape.connections.max(1);
    let per_conn_rate = shape.rate / conns as f64;
    let senders_per_conn = (shape.senders / conns).max(1);
    let count = due(shape.duration_secs, per_conn_rate, shape.ramp_secs).floor() as u64;
    let mut unsigned: Vec<Vec<(usize, UnsignedBundle, f64)>> = Vec::with_capacity(conns);
    let mut keys = Vec::with_capacity(conns);
    let mut rng = rand::rngs::StdRng::seed_from_u64(shape.seed);
    for c in 0..conns {
        let conn_keys: Vec<PrivateKeySigner> = (0..senders_per_conn)
            .map(|_| PrivateKeySigner::random())
            .collect();
        let mut nonces = vec![0u64; conn_keys.len()];
        let mut list = Vec::with_capacity(count as usize);
        for seq in 0..count {
            let k = (seq as usize) % conn_keys.len();
            let cross = rollups.len() > 1
                && ((seq.wrapping_mul(2654435761) % 10_000) as f64)
                    < shape.cross_fraction * 10_000.0;
            let n_entries = shape.entries.max(if cross { 2 } else { 1 });
            let entries = (0..n_entries)
                .map(|i| {
                    let mut payload = vec![0u8; shape.payload_bytes.max(1)];
                    rng.fill_bytes(&mut payload);
                    BundleEntry {
                        rollup_id: rollup_of(rollups, c, seq, i, cross),
                        payload,
                    }
                })
                .collect();
            list.push((
                k,
                UnsignedBundle {
                    network_id,
                    sender: conn_keys[k].address(),
                    nonce: nonces[k],
                    expiry_height,
                    entries,
                },
                scheduled_at(seq + 1, per_conn_rate, shape.ramp_secs),
            ));
            nonces[k] += 1;
        }
        unsigned.push(list);
        keys.push(conn_keys);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out: Vec<Vec<Prepared>> = Vec::with_capacity(conns);
    for (c, list) in unsigned.into_iter().enumerate() {
        let chunk = list.len().div_ceil(threads).max(1);
        let conn_keys = &keys[c];
        let mut pieces: Vec<Vec<(u64, UnsignedBundle, f64)>> = Vec::new();
        let mut piece = Vec::with_capacity(chunk);
        for (seq, (k, u, at)) in list.into_iter().enumerate() {
            piece.push((seq as u64 * conn_keys.len() as u64 + k as u64, u, at));
            if piece.len() == chunk {
                pieces.push(std::mem::take(&mut piece));
            }
        }
        if !piece.is_empty() {
            pieces.push(piece);
        }
        let signed: Vec<Result<Vec<Prepared>>> = std::thread::scope(|s| {
            let handles: Vec<_> = pieces
                .into_iter()
                .map(|piece| {
                    s.spawn(move || {
                        piece
                            .into_iter()
                            .map(|(tag, u, at)| {
                                let seq = tag / conn_keys.len() as u64;
                                let k = (tag % conn_keys.len() as u64) as usize;
                                let b = sign_bundle(&conn_keys[k], u)
                                    .map_err(|e| eyre!("signing: {e}"))?;
                                let mut per_rollup = BTreeMap::new();
                                for e in &b.entries {
                                    *per_rollup.entry(e.rollup_id).or_insert(0u32) += 1;
                                }
                                let client_ref = ((c as u64) << 48) | seq;
                                Ok(Prepared {
                                    at,
                                    client_ref,
                                    sender: ((c as u64) << 32) | k as u64,
                                    hash: b.hash(),
                                    rollups: per_rollup,
                                    request: pb::SubmitBundlesRequest {
                                        client_ref,
                                        bundle: Some((&b).into()),
                                    },
                                })
                            })
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().map_err(|_| eyre!("a signing thread panicked"))?)
                .collect()
        });
        let mut conn = Vec::new();
        for s in signed {
            conn.extend(s?);
        }
        out.push(conn);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_and_its_inverse_agree() {
        for (rate, ramp) in [(100.0, 0.0), (100.0, 2.0), (5000.0, 5.0)] {
            for t in [0.5, 1.0, 1.9, 2.0, 3.7, 10.0] {
                let n = due(t, rate, ramp);
                if n >= 1.0 {
                    let back = scheduled_at(n as u64, rate, ramp);
                    assert!(back <= t + 1e-9, "rate {rate} ramp {ramp} t {t}: {back}");
                }
            }
        }
        assert_eq!(due(10.0, 100.0, 0.0), 1000.0);
        assert_eq!(due(2.0, 100.0, 2.0), 100.0);
    }

    #[test]
    fn a_plan_holds_every_due_bundle_signed_in_order_with_random_payloads() {
        let shape = Shape {
            rate: 200.0,
            ramp_secs: 0.5,
            duration_secs: 1.0,
            payload_bytes: 64,
            entries: 3,
            cross_fraction: 0.5,
            connections: 2,
            senders: 4,
            seed: 7,
        };
        let plan = build(&shape, &[1, 2, 3], 9, 1_000).unwrap();
        assert_eq!(plan.len(), 2);
        for (c, conn) in plan.iter().enumerate() {
            // 100/s per connection over a 0.5 s ramp then 0.5 s: 25 + 50 bundles.
            assert_eq!(conn.len(), 75, "connection {c}");
            assert!(conn.windows(2).all(|w| w[0].at <= w[1].at));
            assert!(conn.last().unwrap().at <= 1.0 + 1e-9);
            let mut nonces: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            for p in conn {
                let b = p.request.bundle.as_ref().unwrap();
                assert_eq!(p.rollups.values().sum::<u32>() as usize, b.entries.len());
                assert_eq!(b.entries.len(), 3);
                assert_eq!(p.client_ref >> 48, c as u64);
                // Per sender, nonces run 0, 1, 2, ... in send order.
                let next = nonces.entry(b.sender.clone()).or_insert(0);
                assert_eq!(b.nonce, *next);
                *next += 1;
                // Random payloads: no run of 8 equal bytes in a row.
                let p0 = &b.entries[0].payload;
                assert!(p0.windows(8).all(|w| w.iter().any(|x| *x != w[0])));
            }
            assert_eq!(nonces.len(), 2, "two senders per connection");
        }
        let cross = plan
            .iter()
            .flatten()
            .filter(|p| p.rollups.len() == 2)
            .count();
        assert!(cross > 0 && cross < 150, "{cross} cross-rollup bundles");
    }
}
