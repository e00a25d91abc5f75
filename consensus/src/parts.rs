//! Proposal parts: the messages of the proposal-parts gossip channel (proposal streams and bundle dissemination).

use borsh::{BorshDeserialize, BorshSerialize};
use malachitebft_core_types::Round;

use crate::bundle::Bundle;
use crate::evidence::Equivocation;
use crate::hash::Hash;
use crate::ids::{Address, Height};
use crate::signing::Signature;
use crate::types::BlockHeader;

/// What travels on the proposal-parts gossip channel.
///
/// A proposal is a stream: `Init` (who, where, and the header), then the body in block order as `Data` (whole
/// bundles) and/or `Refs` (hashes of bundles the validators already hold from dissemination), then `Fin` (the
/// proposer's signature over height, round and block hash).
///
/// Outside proposal streams, the same channel carries dissemination: `Bundles` (checked bundles a node admitted,
/// sent to every peer ahead of any proposal) and `Want` (a validator missing bundles a proposal refers to asks the
/// proposer for them; the proposer answers with `Bundles`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ProposalPart {
    Init {
        height: Height,
        round: Round,
        pol_round: Round,
        proposer: Address,
        header: Box<BlockHeader>,
    },
    Data {
        bundles: Vec<Bundle>,
    },
    Fin {
        signature: Signature,
    },
    Refs {
        hashes: Vec<Hash>,
    },
    Bundles {
        bundles: Vec<Bundle>,
    },
    Want {
        proposer: Address,
        height: u64,
        round: u32,
        hashes: Vec<Hash>,
    },
    /// Misbehaviour evidence the block carries (between `Init` and `Fin`, only when there is some).
    Evidence {
        items: Vec<Equivocation>,
    },
}

impl ProposalPart {
    /// Approximate encoded size, for stream and message bounds.
    pub fn size(&self) -> usize {
        match self {
            ProposalPart::Data { bundles } | ProposalPart::Bundles { bundles } => {
                bundles.iter().map(Bundle::encoded_len).sum::<usize>() + 8
            }
            ProposalPart::Refs { hashes } | ProposalPart::Want { hashes, .. } => {
                32 * hashes.len() + 40
            }
            ProposalPart::Init { .. } | ProposalPart::Fin { .. } => 256,
            ProposalPart::Evidence { items } => 256 * items.len() + 8,
        }
    }
}
