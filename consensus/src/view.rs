//! The chain view: what the block rules ([`crate::block`]) and the L1 rules ([`crate::origin`]) read about the
//! decided chain and the node's own checks. Its own module so that neither of those imports the other for it.

use crate::bundle::Sender;
use crate::error::ConsensusError;
use crate::hash::Hash;

/// What block validation needs to know about the chain and the node's own checks.
///
/// Reads can fail (storage): a failure is an error, never an answer, so that no node votes as if a bundle were not
/// included or a sender's nonce were 0 because it could not read them.
pub trait ChainView {
    /// Whether a bundle is already in an earlier block.
    fn is_included(&self, bundle: &Hash) -> Result<bool, ConsensusError>;
    /// The sender's next nonce according to the decided chain.
    fn next_nonce(&self, sender: &Sender) -> Result<u64, ConsensusError>;
    /// Whether this node already checked this exact bundle's signature (same hash and same signature bytes).
    fn signature_checked(&self, bundle: &Hash, signature: &[u8; 65]) -> bool;

    /// [`ChainView::is_included`] for a bundle of `nonce` whose sender's next nonce is at least `next_nonce` on the
    /// decided chain. Only a bundle below its sender's next nonce can be included (a decided block moves each
    /// sender's next nonce past every bundle of it that the block holds), so only those are looked up: a new
    /// bundle, the common case, costs no read.
    fn is_included_below(
        &self,
        bundle: &Hash,
        nonce: u64,
        next_nonce: u64,
    ) -> Result<bool, ConsensusError> {
        if nonce >= next_nonce {
            return Ok(false);
        }
        self.is_included(bundle)
    }
}
