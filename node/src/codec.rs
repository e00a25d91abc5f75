//! The wire and write-ahead-log codec for the engine's messages: borsh.
//!
//! Borsh is canonical (one value, one encoding), compact, needs no schema compiler, and its decoder allocates
//! cautiously (a forged length prefix cannot make it reserve gigabytes). Message sizes are further capped by the
//! libp2p limits in the node config. The published engine crates derive borsh for most of their types; the two
//! that lack it (`ExtendedCommitCertificate` inside sync responses, and `ValidatorProof`) are mirrored here.

use borsh::{BorshDeserialize, BorshSerialize};
use bytes::Bytes;

use baton_consensus::context::BatonContext;
use baton_consensus::hash::Hash;
use baton_consensus::ids::Address;
use baton_consensus::ids::Height;
use baton_consensus::parts::ProposalPart;
use baton_consensus::signing::{Signature, Value};
use malachitebft_app_channel::app::streaming::StreamMessage;
use malachitebft_codec::{Codec, HasEncodedLen};
use malachitebft_core_consensus::{LivenessMsg, ProposedValue, SignedConsensusMsg};
use malachitebft_core_types::{
    ExtendedCommitCertificate, ExtendedCommitSignature, PolkaCertificate, Round, SignedExtension,
    ValidatorProof,
};
use malachitebft_sync::{RawDecidedValue, Request, Response, Status, ValueResponse};

/// The codec handed to the engine for the network, value sync and the WAL.
#[derive(Copy, Clone, Debug, Default)]
pub struct WireCodec;

/// A message that did not decode (or, rarely, encode).
#[derive(Debug, thiserror::Error)]
#[error("borsh: {0}")]
pub struct CodecError(#[from] std::io::Error);

macro_rules! borsh_codec {
    ($($t:ty),* $(,)?) => {$(
        impl Codec<$t> for WireCodec {
            type Error = CodecError;

            fn decode(&self, bytes: Bytes) -> Result<$t, CodecError> {
                Ok(borsh::from_slice(&bytes)?)
            }

            fn encode(&self, msg: &$t) -> Result<Bytes, CodecError> {
                Ok(Bytes::from(borsh::to_vec(msg)?))
            }
        }
    )*};
}

borsh_codec!(
    Value,
    ProposalPart,
    SignedConsensusMsg<BatonContext>,
    LivenessMsg<BatonContext>,
    StreamMessage<ProposalPart>,
    Status<BatonContext>,
    Request<BatonContext>,
    ProposedValue<BatonContext>,
    PolkaCertificate<BatonContext>,
);

#[derive(BorshSerialize, BorshDeserialize)]
struct WireCommitSignature {
    address: Address,
    signature: Signature,
    extension: Option<SignedExtension<BatonContext>>,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct WireDecided {
    value_bytes: Vec<u8>,
    height: Height,
    round: Round,
    value_id: Hash,
    signatures: Vec<WireCommitSignature>,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct WireResponse {
    start_height: Height,
    values: Vec<WireDecided>,
}

fn to_wire(r: &Response<BatonContext>) -> WireResponse {
    let Response::ValueResponse(v) = r;
    WireResponse {
        start_height: v.start_height,
        values: v
            .values
            .iter()
            .map(|d| WireDecided {
                value_bytes: d.value_bytes.to_vec(),
                height: d.certificate.height,
                round: d.certificate.round,
                value_id: d.certificate.value_id,
                signatures: d
                    .certificate
                    .commit_signatures
                    .iter()
                    .map(|s| WireCommitSignature {
                        address: s.address,
                        signature: s.signature.clone(),
                        extension: s.extension.clone(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

impl Codec<Response<BatonContext>> for WireCodec {
    type Error = CodecError;

    fn decode(&self, bytes: Bytes) -> Result<Response<BatonContext>, CodecError> {
        let w: WireResponse = borsh::from_slice(&bytes)?;
        let values = w
            .values
            .into_iter()
            .map(|d| {
                let certificate = ExtendedCommitCertificate {
                    height: d.height,
                    round: d.round,
                    value_id: d.value_id,
                    commit_signatures: d
                        .signatures
                        .into_iter()
                        .map(|s| ExtendedCommitSignature::new(s.address, s.signature, s.extension))
                        .collect(),
                };
                RawDecidedValue::new(Bytes::from(d.value_bytes), certificate)
            })
            .collect();
        Ok(Response::ValueResponse(ValueResponse::new(
            w.start_height,
            values,
        )))
    }

    fn encode(&self, r: &Response<BatonContext>) -> Result<Bytes, CodecError> {
        Ok(Bytes::from(borsh::to_vec(&to_wire(r))?))
    }
}

impl HasEncodedLen<Response<BatonContext>> for WireCodec {
    fn encoded_len(&self, r: &Response<BatonContext>) -> Result<usize, CodecError> {
        Ok(borsh::object_length(&to_wire(r))?)
    }
}

#[derive(BorshSerialize, BorshDeserialize)]
struct WireProof {
    public_key: Vec<u8>,
    peer_id: Vec<u8>,
    signature: Signature,
}

impl Codec<ValidatorProof<BatonContext>> for WireCodec {
    type Error = CodecError;

    fn decode(&self, bytes: Bytes) -> Result<ValidatorProof<BatonContext>, CodecError> {
        let w: WireProof = borsh::from_slice(&bytes)?;
        Ok(ValidatorProof::new(w.public_key, w.peer_id, w.signature))
    }

    fn encode(&self, p: &ValidatorProof<BatonContext>) -> Result<Bytes, CodecError> {
        let w = WireProof {
            public_key: p.public_key.clone(),
            peer_id: p.peer_id.clone(),
            signature: p.signature.clone(),
        };
        Ok(Bytes::from(borsh::to_vec(&w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_consensus::types::BlockHeader;

    #[test]
    fn sync_response_round_trips() {
        let cert = ExtendedCommitCertificate::<BatonContext> {
            height: Height(4),
            round: Round::new(1),
            value_id: Hash([9; 32]),
            commit_signatures: vec![ExtendedCommitSignature::new(
                Address([1; 20]),
                Signature([2; 64]),
                None,
            )],
        };
        let resp = Response::ValueResponse(ValueResponse::new(
            Height(4),
            vec![RawDecidedValue::new(Bytes::from_static(b"block"), cert)],
        ));
        let bytes = WireCodec.encode(&resp).unwrap();
        assert_eq!(WireCodec.encoded_len(&resp).unwrap(), bytes.len());
        let back: Response<BatonContext> = WireCodec.decode(bytes).unwrap();
        assert_eq!(back, resp);
    }

    #[test]
    fn garbage_does_not_decode_or_panic() {
        let header = BlockHeader {
            height: 1,
            parent_hash: Hash::ZERO,
            timestamp_ms: 1,
            proposer: Address::default(),
            validator_set_hash: Hash::ZERO,
            bundles_root: Hash::ZERO,
            namespace_root: Hash::ZERO,
            namespace_count: 0,
            bundle_count: 0,
            round: 0,
            bench: Default::default(),
            l1_origin: Default::default(),
            next_validator_set_hash: Hash::ZERO,
            evidence_root: Hash::ZERO,
        };
        let part = ProposalPart::Init {
            height: Height(1),
            round: Round::new(0),
            pol_round: Round::Nil,
            proposer: Address::default(),
            header: Box::new(header),
        };
        let good = WireCodec.encode(&part).unwrap();
        for cut in 0..good.len() {
            let r: Result<ProposalPart, _> = WireCodec.decode(good.slice(..cut));
            assert!(r.is_err(), "truncated at {cut} decoded");
        }
        // A huge length prefix must fail cleanly, not allocate.
        let mut evil = vec![1u8];
        evil.extend_from_slice(&u32::MAX.to_le_bytes());
        let r: Result<ProposalPart, _> = WireCodec.decode(Bytes::from(evil));
        assert!(r.is_err());
    }

    /// What a block of N bundles costs on the wire, as the engine sends it (borsh stream messages): a full
    /// proposal, a compact one (bundle hashes), and the dissemination that precedes a compact one.
    #[cfg(feature = "devnet")] // signs its sample load with the devnet's helper
    #[test]
    fn wire_cost_of_a_block() {
        use baton_consensus::bundle::Bundle;
        use baton_consensus::context::ConsensusSigner;
        use baton_consensus::host::{chunk_bundles, Host, HostLimits, ManualClock};
        use baton_consensus::registry::ChainSpec;
        use baton_consensus::signing::ChainDomain;
        use baton_consensus::store::MemStore;
        use baton_consensus::validators::{Validator, ValidatorSet};
        use malachitebft_app_channel::app::streaming::{StreamContent, StreamId};

        let key = ed25519_consensus::SigningKey::from([5; 32]);
        let vs = ValidatorSet::new(vec![Validator::new(key.verification_key(), 1)]).unwrap();
        let domain = ChainDomain::new("wire");
        let n = 1000;
        let bundles = crate::devnet::sample_bundles(n, 16, 512, 4, 7).unwrap();
        let wire = |parts: &[ProposalPart]| -> usize {
            parts
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let m = StreamMessage::new(
                        StreamId::new(Bytes::from_static(b"0123456789abcdef")),
                        i as u64,
                        StreamContent::Data(p.clone()),
                    );
                    WireCodec.encode(&m).unwrap().len()
                })
                .sum()
        };
        let mut sizes = Vec::new();
        for compact in [false, true] {
            let mut host = Host::new(
                domain,
                Hash::ZERO,
                Some(ConsensusSigner::new(key.clone(), domain)),
                vs.clone(),
                ChainSpec::for_tests(7, 4),
                HostLimits {
                    compact_proposals: compact,
                    ..HostLimits::default()
                },
                MemStore::default(),
                ManualClock::new(1_000),
            )
            .unwrap();
            for b in &bundles {
                host.admit(b.hash(), b.clone()).unwrap();
            }
            let (_, parts) = host.propose(1, 0).unwrap();
            sizes.push(wire(&parts));
        }
        let payload = n * 512;
        let encoded: usize = bundles.iter().map(Bundle::encoded_len).sum();
        let gossip: Vec<ProposalPart> = chunk_bundles(&bundles, 256 * 1024)
            .into_iter()
            .map(|bundles| ProposalPart::Bundles { bundles })
            .collect();
        let gossip_bytes = wire(&gossip);
        println!(
            "block of {n} bundles, 512-byte payloads ({payload} payload bytes, {encoded} encoded):"
        );
        println!(
            "  full proposal:    {} bytes ({:.1} per bundle), sent by the proposer to each peer",
            sizes[0],
            sizes[0] as f64 / n as f64
        );
        println!(
            "  compact proposal: {} bytes ({:.1} per bundle), sent by the proposer to each peer",
            sizes[1],
            sizes[1] as f64 / n as f64
        );
        println!("  dissemination:    {gossip_bytes} bytes ({:.1} per bundle), sent once by each bundle's entry node to each peer", gossip_bytes as f64 / n as f64);
        assert!(sizes[0] >= encoded);
        assert!(
            sizes[1] < 40 * n,
            "compact proposals cost about 32 bytes per bundle"
        );
        assert!(gossip_bytes < encoded + encoded / 50);
    }
}
