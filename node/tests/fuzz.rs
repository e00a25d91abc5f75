//! Seeded fuzzing of every decoder that takes bytes from outside the process: p2p messages (the engine's wire
//! codec), gRPC messages converted to domain types, and records read back from the store.
//!
//! Each decoder gets random byte strings and mutations of valid encodings (bit flips, overwritten bytes, huge
//! length prefixes, truncation, extension, spliced copies). A decoder must never panic; whatever it accepts must
//! re-encode to bytes that decode to the same value. The run prints its seed; `BATON_FUZZ_SEED=<seed>` replays
//! it and `BATON_FUZZ_CASES=<n>` sets the cases per decoder (default 20,000; the long run uses 1,000,000).

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};

use borsh::{BorshDeserialize, BorshSerialize};
use bytes::Bytes;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use baton_consensus::bundle::Bundle;
use baton_consensus::bundle::Sender;
use baton_consensus::context::{BatonContext, ConsensusSigner};
use baton_consensus::hash::Hash;
use baton_consensus::ids::Address;
use baton_consensus::ids::Height;
use baton_consensus::parts::ProposalPart;
use baton_consensus::signing::{ChainDomain, Signature};
use baton_consensus::store::UndecidedProposal;
use baton_consensus::types::{
    BatchEntry, Block, BlockHeader, Certificate, Dropped, NamespaceEntry, RollupBatch,
};
use baton_consensus::validators::{Validator, ValidatorSet};
use baton_node::codec::WireCodec;
use baton_proto::pb;
use malachitebft_codec::Codec;

fn seed_and_cases() -> (u64, usize) {
    let seed = std::env::var("BATON_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cases = std::env::var("BATON_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    println!("fuzz seed {seed} (replay with BATON_FUZZ_SEED={seed}), {cases} cases per decoder");
    (seed, cases)
}

/// One input: random bytes, or a mutation of a valid encoding.
fn input(rng: &mut StdRng, valid: &[Vec<u8>]) -> Vec<u8> {
    if valid.is_empty() || rng.gen_bool(0.2) {
        let len = rng.gen_range(0..512);
        let mut v = vec![0u8; len];
        rng.fill_bytes(&mut v);
        return v;
    }
    let mut v = valid[rng.gen_range(0..valid.len())].clone();
    for _ in 0..rng.gen_range(1..4) {
        if v.is_empty() {
            v.push(rng.gen());
            continue;
        }
        let i = rng.gen_range(0..v.len());
        match rng.gen_range(0..7) {
            0 => v[i] ^= 1 << rng.gen_range(0..8),
            1 => v[i] = rng.gen(),
            2 => {
                // A length prefix (borsh u32, or a protobuf varint) made huge.
                let big: u32 = [u32::MAX, 1 << 31, 1 << 24, rng.gen()][rng.gen_range(0..4)];
                let end = (i + 4).min(v.len());
                v[i..end].copy_from_slice(&big.to_le_bytes()[..end - i]);
            }
            3 => v.truncate(i),
            4 => {
                let mut extra = vec![0u8; rng.gen_range(1..64)];
                rng.fill_bytes(&mut extra);
                v.extend_from_slice(&extra);
            }
            5 => {
                let j = rng.gen_range(i..v.len());
                let piece = v[i..=j].to_vec();
                v.splice(i..i, piece);
            }
            _ => v[i] = [0x00, 0xff, 0x80, 0x7f][rng.gen_range(0..4)],
        }
    }
    v
}

/// Feeds `cases` inputs (random, or mutations of the encoded `samples`) to `decode`; every accepted value must
/// survive `encode` then `decode` unchanged.
fn fuzz<T: PartialEq + Debug>(
    name: &str,
    seed: u64,
    cases: usize,
    samples: &[T],
    decode: impl Fn(&[u8]) -> Option<T>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> (usize, usize) {
    let valid: Vec<Vec<u8>> = samples.iter().map(&encode).collect();
    // A per-decoder stream, so adding a decoder does not change the inputs of the others.
    let name_hash = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    let mut rng = StdRng::seed_from_u64(seed ^ name_hash);
    for v in &valid {
        let back = decode(v).unwrap_or_else(|| panic!("{name}: a valid encoding does not decode"));
        assert_eq!(
            decode(&encode(&back)),
            Some(back),
            "{name}: valid value round trip"
        );
    }
    let mut accepted = 0;
    for case in 0..cases {
        let bytes = input(&mut rng, &valid);
        let got = catch_unwind(AssertUnwindSafe(|| decode(&bytes))).unwrap_or_else(|_| {
            panic!("{name}: decoder panicked on case {case} (seed {seed}); input {bytes:02x?}")
        });
        if let Some(v) = got {
            accepted += 1;
            let again = encode(&v);
            assert_eq!(
                decode(&again).as_ref(),
                Some(&v),
                "{name}: accepted value does not round-trip (case {case}, seed {seed})"
            );
        }
    }
    println!("{name}: {cases} inputs, {accepted} accepted and round-tripped");
    (cases, accepted)
}

fn wire<T>(name: &str, seed: u64, cases: usize, samples: &[T])
where
    T: PartialEq + Debug,
    WireCodec: Codec<T>,
{
    fuzz(
        name,
        seed,
        cases,
        samples,
        |b| WireCodec.decode(Bytes::copy_from_slice(b)).ok(),
        |v| WireCodec.encode(v).expect("re-encode").to_vec(),
    );
}

fn stored<T: BorshSerialize + BorshDeserialize + PartialEq + Debug>(
    name: &str,
    seed: u64,
    cases: usize,
    samples: &[T],
) {
    fuzz(
        name,
        seed,
        cases,
        samples,
        |b| borsh::from_slice::<T>(b).ok(),
        |v| borsh::to_vec(v).expect("re-encode"),
    );
}

fn grpc<P, D>(name: &str, seed: u64, cases: usize, samples: &[D])
where
    P: Message + Default + for<'a> From<&'a D>,
    D: TryFrom<P> + PartialEq + Debug,
{
    fuzz(
        name,
        seed,
        cases,
        samples,
        |b| P::decode(b).ok().and_then(|m| D::try_from(m).ok()),
        |v| P::from(v).encode_to_vec(),
    );
}

struct Samples {
    bundles: Vec<Bundle>,
    block: Block,
    cert: Certificate,
    parts: Vec<ProposalPart>,
}

fn samples() -> Samples {
    let bundles = baton_node::devnet::sample_bundles(6, 3, 40, 3, 7).expect("sign");
    let key = ed25519_consensus::SigningKey::from([3; 32]);
    let vs = ValidatorSet::new(vec![Validator::new(key.verification_key(), 1)]).expect("set");
    let domain = ChainDomain::new("fuzz");
    let signer = ConsensusSigner::new(key, domain);
    let proposer = vs.validators()[0].address;
    let ctx = baton_consensus::block::BlockContext {
        round: 1,
        ..baton_consensus::fixtures::block_context(3, vs.clone())
    };
    let hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
    let spec = baton_consensus::registry::ChainSpec::for_tests(7, 4);
    let block =
        baton_consensus::block::build_block(&ctx, &spec, proposer, 20, bundles.clone(), &hashes)
            .block;
    let cert = Certificate {
        height: 3,
        round: 1,
        block_hash: block.hash(),
        signatures: vec![(proposer, signer.sign(b"x").0)],
    };
    let parts = vec![
        ProposalPart::Init {
            height: Height(3),
            round: malachitebft_core_types::Round::new(1),
            pol_round: malachitebft_core_types::Round::Nil,
            proposer,
            header: Box::new(block.header.clone()),
        },
        ProposalPart::Data {
            bundles: bundles[..2].to_vec(),
        },
        ProposalPart::Refs {
            hashes: hashes.clone(),
        },
        ProposalPart::Bundles {
            bundles: bundles[2..].to_vec(),
        },
        ProposalPart::Want {
            proposer,
            height: 3,
            round: 1,
            hashes: hashes[..2].to_vec(),
        },
        ProposalPart::Fin {
            signature: signer.sign(b"fin"),
        },
    ];
    Samples {
        bundles,
        block,
        cert,
        parts,
    }
}

#[test]
fn p2p_decoders_never_panic_and_round_trip() {
    use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
    let (seed, cases) = seed_and_cases();
    let s = samples();
    wire::<ProposalPart>("p2p ProposalPart", seed, cases, &s.parts);
    let stream: Vec<StreamMessage<ProposalPart>> = s
        .parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            StreamMessage::new(
                StreamId::new(Bytes::from_static(b"stream-id-16byte")),
                i as u64,
                StreamContent::Data(p.clone()),
            )
        })
        .chain([StreamMessage::new(
            StreamId::new(Bytes::from_static(b"s")),
            9,
            StreamContent::Fin,
        )])
        .collect();
    wire("p2p StreamMessage", seed, cases, &stream);
    wire::<baton_consensus::signing::Value>(
        "p2p Value",
        seed,
        cases,
        &[baton_consensus::signing::Value(s.block.hash())],
    );
    // Votes, proposals, liveness, sync and the rest of the engine's messages: random and mutated bytes.
    let sync = malachitebft_sync::Response::ValueResponse(malachitebft_sync::ValueResponse::new(
        Height(3),
        vec![malachitebft_sync::RawDecidedValue::new(
            Bytes::from(borsh::to_vec(&s.block).expect("encode")),
            malachitebft_core_types::ExtendedCommitCertificate::<BatonContext> {
                height: Height(3),
                round: malachitebft_core_types::Round::new(1),
                value_id: s.block.hash(),
                commit_signatures: s
                    .cert
                    .signatures
                    .iter()
                    .map(|(a, sig)| {
                        malachitebft_core_types::ExtendedCommitSignature::new(
                            *a,
                            Signature(*sig),
                            None,
                        )
                    })
                    .collect(),
            },
        )],
    ));
    wire::<malachitebft_sync::Response<BatonContext>>("p2p sync Response", seed, cases, &[sync]);
    use malachitebft_core_consensus::{LivenessMsg, SignedConsensusMsg};
    use malachitebft_core_types::{NilOrVal, Round, SignedMessage, VoteType};
    let signer = ConsensusSigner::new(
        ed25519_consensus::SigningKey::from([3; 32]),
        ChainDomain::new("fuzz"),
    );
    let vote = |t, value| {
        SignedMessage::new(
            baton_consensus::context::Vote::new(
                t,
                Height(3),
                Round::new(1),
                value,
                s.block.header.proposer,
            ),
            signer.sign(b"vote"),
        )
    };
    let votes = [
        vote(VoteType::Prevote, NilOrVal::Val(s.block.hash())),
        vote(VoteType::Precommit, NilOrVal::Nil),
    ];
    let consensus: Vec<SignedConsensusMsg<BatonContext>> = votes
        .iter()
        .cloned()
        .map(SignedConsensusMsg::Vote)
        .collect();
    wire("p2p SignedConsensusMsg", seed, cases, &consensus);
    let liveness: Vec<LivenessMsg<BatonContext>> =
        votes.iter().cloned().map(LivenessMsg::Vote).collect();
    wire("p2p LivenessMsg", seed, cases, &liveness);
    fuzz_unseeded::<malachitebft_sync::Status<BatonContext>>("p2p sync Status", seed, cases);
    fuzz_unseeded::<malachitebft_sync::Request<BatonContext>>("p2p sync Request", seed, cases);
}

/// Random bytes only (no valid sample at hand): no panic, and accepted values round-trip.
fn fuzz_unseeded<T: PartialEq + Debug>(name: &str, seed: u64, cases: usize)
where
    WireCodec: Codec<T>,
{
    wire::<T>(name, seed, cases, &[]);
}

#[test]
fn grpc_conversions_never_panic_and_round_trip() {
    let (seed, cases) = seed_and_cases();
    let s = samples();
    grpc::<pb::Bundle, Bundle>("gRPC Bundle", seed, cases, &s.bundles);
    grpc::<pb::BlockHeader, BlockHeader>(
        "gRPC BlockHeader",
        seed,
        cases,
        std::slice::from_ref(&s.block.header),
    );
    grpc::<pb::Certificate, Certificate>(
        "gRPC Certificate",
        seed,
        cases,
        std::slice::from_ref(&s.cert),
    );
    let batch = RollupBatch {
        rollup_id: 2,
        header: s.block.header.clone(),
        block_hash: s.block.hash(),
        entries: vec![BatchEntry {
            bundle_hash: s.bundles[0].hash(),
            index_in_bundle: 1,
            payload: vec![7; 40],
        }],
    };
    grpc::<pb::RollupBatch, RollupBatch>("gRPC RollupBatch", seed, cases, &[batch]);
    // A bundle that converts is then checked by the node before anything else (limits, then signature
    // recovery): garbage signatures must be refused, not panic.
    let spec = baton_consensus::registry::ChainSpec::for_tests(7, 4);
    let mut rng = StdRng::seed_from_u64(seed);
    let valid: Vec<Vec<u8>> = s
        .bundles
        .iter()
        .map(|b| pb::Bundle::from(b).encode_to_vec())
        .collect();
    let mut checked = 0;
    for case in 0..cases {
        let bytes = input(&mut rng, &valid);
        let Some(b) = pb::Bundle::decode(&bytes[..])
            .ok()
            .and_then(|m| Bundle::try_from(m).ok())
        else {
            continue;
        };
        let ok = catch_unwind(AssertUnwindSafe(|| {
            baton_consensus::block::check_bundle(&b, &spec).is_ok()
                && b.verify_signature(&b.hash()).is_ok()
        }))
        .unwrap_or_else(|_| panic!("bundle checks panicked on case {case} (seed {seed})"));
        if ok {
            checked += 1;
            let original = s.bundles.iter().find(|o| o.hash() == b.hash());
            assert!(
                original == Some(&b),
                "a mutated bundle passed every check (case {case}, seed {seed}): {b:?} vs {original:?}"
            );
        }
    }
    println!("gRPC Bundle checks: {checked} mutated inputs were an original bundle again");
}

#[test]
fn stored_records_never_panic_and_round_trip() {
    let (seed, cases) = seed_and_cases();
    let s = samples();
    stored("store Block", seed, cases, std::slice::from_ref(&s.block));
    stored(
        "store Certificate",
        seed,
        cases,
        std::slice::from_ref(&s.cert),
    );
    stored("store Bundle", seed, cases, &s.bundles);
    stored(
        "store UndecidedProposal",
        seed,
        cases,
        &[UndecidedProposal {
            round: 2,
            valid_round: Some(1),
            proposer: Address([4; 20]),
            valid: true,
            block: s.block.clone(),
        }],
    );
    stored(
        "store Dropped",
        seed,
        cases,
        &[
            Dropped::Expired {
                expiry_height: 4,
                height: 9,
            },
            Dropped::Rejected {
                height: 9,
                reason: "nonce 3 was used".into(),
            },
        ],
    );
    stored(
        "store namespace table",
        seed,
        cases,
        &[vec![NamespaceEntry {
            rollup_id: 1,
            batch_root: Hash::digest(&[b"r"]),
            entry_count: 3,
        }]],
    );
    stored::<(Sender, u64)>("store nonce", seed, cases, &[(Sender::default(), 5)]);
}
