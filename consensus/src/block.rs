//! Building a block from the mempool and validating a proposed one.
//!
//! Both sides compute the header's roots with the same functions, so a block built here always validates there.
//!
//! Signatures are the expensive part of validation (one ECDSA recovery per bundle). A node checks each bundle's
//! signature once: at admission (from a client or from a peer's dissemination), and for bundles it first sees in a
//! proposal, while judging that proposal. [`ChainView::signature_checked`] ([`crate::view`]) lets validation skip
//! bundles the node already checked, byte for byte (same content and same signature).

use std::collections::{HashMap, HashSet};

use crate::bench::Bench;
use crate::bundle::Bundle;
use crate::bundle::Sender;
use crate::error::{BlockError, BundleError, ConsensusError};
use crate::hash::Hash;
use crate::ids::{Address, L1Origin, RollupId};
use crate::origin::{owed_forced, L1View};
use crate::registry::ChainSpec;
use crate::types::{block_table, bundles_root, namespace_root, Block, BlockHeader, NamespaceEntry};
use crate::validators::ValidatorSet;
use crate::view::ChainView;

/// Who orders a bundle being checked: Baton's validators (every entry for a `shared` rollup), or the L1 inbox
/// for one `based` rollup (every entry for that rollup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderedBy {
    Validators,
    Inbox(RollupId),
}

/// The one stateless check of a bundle wherever it enters a node (the API, a peer's dissemination, the L1
/// inbox, the forwarder, the simulation): form and limits ([`check_bundle_form`]), the rollups' mode for
/// `ordered_by`, then the signature recovery, unless `recovered_before(hash)` says these exact bytes were recovered
/// here before. Returns the bundle's hash.
pub fn check_stateless(
    bundle: &Bundle,
    spec: &ChainSpec,
    ordered_by: OrderedBy,
    recovered_before: impl FnOnce(&Hash) -> bool,
) -> Result<Hash, BundleError> {
    check_bundle_form(bundle, spec)?;
    match ordered_by {
        OrderedBy::Validators => check_shared(bundle, spec)?,
        OrderedBy::Inbox(rollup) => {
            if let Some(e) = bundle.entries.iter().find(|e| e.rollup_id != rollup) {
                let other_based = spec
                    .rollups
                    .get(e.rollup_id)
                    .is_some_and(|r| r.mode == crate::registry::RollupMode::Based);
                return Err(if other_based {
                    BundleError::TwoBasedRollups {
                        first: rollup,
                        second: e.rollup_id,
                    }
                } else {
                    BundleError::MixedModes {
                        shared_rollup: e.rollup_id,
                        based_rollup: rollup,
                    }
                });
            }
        }
    }
    let hash = bundle.hash();
    if !recovered_before(&hash) {
        bundle.verify_signature(&hash)?;
    }
    Ok(hash)
}

/// Checks what can be checked about one bundle without chain state or signature recovery, for Baton's validators
/// to order it (at admission, and again in block validation): [`check_bundle_form`], and every entry for a
/// `shared` rollup ([`check_shared`]).
pub fn check_bundle(bundle: &Bundle, spec: &ChainSpec) -> Result<(), BundleError> {
    check_bundle_form(bundle, spec)?;
    check_shared(bundle, spec)
}

/// Refuses a bundle with entries for `based` rollups: alone (they are ordered through the L1 inbox) or mixed with
/// shared ones (no single order covers both).
pub fn check_shared(bundle: &Bundle, spec: &ChainSpec) -> Result<(), BundleError> {
    use crate::registry::RollupMode;
    let (mut shared, mut based) = (None, None);
    for e in &bundle.entries {
        match spec.rollups.get(e.rollup_id).map(|r| r.mode) {
            Some(RollupMode::Shared) => {
                shared.get_or_insert(e.rollup_id);
            }
            Some(RollupMode::Based) => {
                based.get_or_insert(e.rollup_id);
            }
            None => {}
        }
    }
    match (shared, based) {
        (Some(shared_rollup), Some(based_rollup)) => Err(BundleError::MixedModes {
            shared_rollup,
            based_rollup,
        }),
        (None, Some(rollup_id)) => Err(BundleError::BasedRollup { rollup_id }),
        _ => Ok(()),
    }
}

/// Network id, shape, limits, registered rollups, each rollup's `allowed_senders`, and the signature's canonical
/// form: what every bundle must satisfy, whoever orders it. (The sender is the bundle's claimed one; every caller
/// also checks that the signature recovers to it.)
pub fn check_bundle_form(bundle: &Bundle, spec: &ChainSpec) -> Result<(), BundleError> {
    let params = &spec.params;
    bundle.check_signature_form()?;
    if bundle.network_id != spec.network_id {
        return Err(BundleError::WrongNetwork {
            got: bundle.network_id,
            expected: spec.network_id,
        });
    }
    if bundle.entries.is_empty() {
        return Err(BundleError::Empty);
    }
    if bundle.entries.len() > params.max_bundle_entries as usize {
        return Err(BundleError::TooManyEntries {
            got: bundle.entries.len(),
            limit: params.max_bundle_entries,
        });
    }
    let len = bundle.encoded_len();
    if len > params.max_bundle_bytes as usize {
        return Err(BundleError::TooLarge {
            got: len,
            limit: params.max_bundle_bytes,
        });
    }
    for (index, e) in bundle.entries.iter().enumerate() {
        if e.payload.is_empty() {
            return Err(BundleError::EmptyPayload { index });
        }
        if e.payload.len() > params.max_payload_bytes as usize {
            return Err(BundleError::PayloadTooLarge {
                index,
                got: e.payload.len(),
                limit: params.max_payload_bytes,
            });
        }
        if !spec.rollups.contains(e.rollup_id) {
            return Err(BundleError::UnknownRollup {
                index,
                rollup_id: e.rollup_id,
            });
        }
        if !spec.rollups.may_post(e.rollup_id, &bundle.sender) {
            return Err(BundleError::UnauthorizedSender {
                index,
                rollup_id: e.rollup_id,
                sender: bundle.sender.to_string(),
            });
        }
    }
    Ok(())
}

/// Where the new block goes: the decided parent (or genesis) and who proposes.
#[derive(Clone, Debug)]
pub struct BlockContext {
    pub height: u64,
    /// The round being proposed (used when building; validation takes the round from the header).
    pub round: u32,
    pub parent_hash: Hash,
    pub parent_timestamp_ms: u64,
    pub validator_set_hash: Hash,
    /// The parent's proposer bench (empty at genesis).
    pub parent_bench: Bench,
    /// The validator set with `parent_bench` applied for this height (at the parent's timestamp): its rotation
    /// names the proposers.
    pub validators: ValidatorSet,
    /// The set deciding the next height (this one's, except when an epoch ends with a change).
    pub next_validators: ValidatorSet,
    /// Evidence to put in the block (used when building; validation takes it from the block).
    pub evidence: Vec<crate::evidence::Equivocation>,
    /// The parent's L1 origin (zero at genesis and on a chain without L1).
    pub parent_l1_origin: L1Origin,
    /// The origin to build with (used when building; validation takes it from the header).
    pub l1_origin: L1Origin,
    /// Benched validators this node has not seen vote lately: kept benched if their bench runs out at the block
    /// (used when building; validation reads what was kept from the header's bench).
    pub unseen: Vec<Address>,
}

impl BlockContext {
    /// The block built on this context in `round` by `proposer` at `timestamp_ms`, as the bench sees it.
    pub fn turn(
        &self,
        round: u32,
        proposer: Address,
        timestamp_ms: u64,
        bench_ms: u64,
    ) -> crate::bench::Turn<'_> {
        crate::bench::Turn {
            validators: &self.validators,
            height: self.height,
            round,
            proposer,
            parent_timestamp_ms: self.parent_timestamp_ms,
            timestamp_ms,
            bench_ms,
        }
    }
}

/// A read the block rules needed failed: not a verdict on the block ([`BlockError::Unreadable`]).
fn unreadable(e: ConsensusError) -> BlockError {
    BlockError::Unreadable(e.to_string())
}

/// A block [`build_block`] built, with the namespace table its header commits to (kept for the decision, so
/// that no entry is hashed twice).
pub struct Built {
    pub block: Block,
    pub table: Vec<NamespaceEntry>,
}

/// Builds a block from bundles the caller selected (within the limits, nonces in order, not expired).
pub fn build_block(
    ctx: &BlockContext,
    spec: &ChainSpec,
    proposer: Address,
    now_ms: u64,
    bundles: Vec<Bundle>,
    hashes: &[Hash],
) -> Built {
    let table = block_table(spec.rollups.ids(), &bundles, hashes);
    let timestamp_ms = now_ms.max(ctx.parent_timestamp_ms + 1);
    let header = BlockHeader {
        height: ctx.height,
        parent_hash: ctx.parent_hash,
        timestamp_ms,
        proposer,
        validator_set_hash: ctx.validator_set_hash,
        bundles_root: bundles_root(hashes),
        namespace_root: namespace_root(&table),
        namespace_count: table.len() as u32,
        bundle_count: bundles.len() as u32,
        round: ctx.round,
        bench: ctx.parent_bench.after(
            &ctx.turn(ctx.round, proposer, timestamp_ms, spec.params.bench_ms),
            &ctx.unseen,
        ),
        l1_origin: ctx.l1_origin,
        next_validator_set_hash: ctx.next_validators.hash(),
        evidence_root: crate::evidence::evidence_root(&ctx.evidence),
    };
    let next_validators =
        (ctx.next_validators.hash() != ctx.validator_set_hash).then(|| ctx.next_validators.clone());
    let block = Block {
        header,
        bundles,
        next_validators,
        evidence: ctx.evidence.clone(),
    };
    Built { block, table }
}

/// What validation of a good block found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Validated {
    /// Bundles whose signature was recovered here (the rest were checked before).
    pub signatures_checked: usize,
    /// The block's namespace table, as its header commits to it (kept for the decision, so that no entry is
    /// hashed twice).
    pub table: Vec<NamespaceEntry>,
}

/// Validates a proposed block against its context. `hashes` are the block's bundle hashes in order (the caller
/// has them already; see [`bundle_hashes`]).
///
/// Rules: header fields (height, parent, timestamps, proposer, validator set, counts), block limits, and for each
/// bundle in order: [`check_bundle`], not a duplicate, not included before, not expired at this height, the
/// sender's next nonce (nonces of one sender in increasing order without gaps), a valid signature. A bundle cut
/// into pieces fails here too: each piece's signature covers the whole bundle, not the piece. Then both roots.
/// Last, with `l1` (a chain with L1), the header's L1 origin and the forced entries it makes owed
/// ([`crate::origin`]); without, the origin must be zero.
pub fn validate_block(
    block: &Block,
    hashes: &[Hash],
    ctx: &BlockContext,
    spec: &ChainSpec,
    view: &dyn ChainView,
    l1: Option<&dyn L1View>,
    now_ms: u64,
) -> Result<Validated, BlockError> {
    let params = &spec.params;
    let h = &block.header;
    if h.height != ctx.height {
        return Err(BlockError::WrongHeight {
            got: h.height,
            expected: ctx.height,
        });
    }
    if h.parent_hash != ctx.parent_hash {
        return Err(BlockError::WrongParent {
            got: h.parent_hash,
            expected: ctx.parent_hash,
        });
    }
    if h.timestamp_ms <= ctx.parent_timestamp_ms {
        return Err(BlockError::TimestampNotIncreasing {
            got: h.timestamp_ms,
            parent: ctx.parent_timestamp_ms,
        });
    }
    if h.timestamp_ms > now_ms.saturating_add(params.max_clock_drift_ms) {
        return Err(BlockError::TimestampInFuture {
            got: h.timestamp_ms,
            now: now_ms,
            drift: params.max_clock_drift_ms,
        });
    }
    // The builder holds the header's round (a block re-proposed later keeps its builder and round; the caller
    // checks that the round is not later than the round it was proposed or locked in).
    let expected = ctx.validators.proposer(h.height, h.round).address;
    if h.proposer != expected {
        return Err(BlockError::WrongProposer {
            got: h.proposer.to_hex(),
            expected: expected.to_hex(),
            round: h.round,
        });
    }
    // A bench running out at this block may be ended or kept ([`crate::bench`]): read which from the header, then
    // check the whole bench against the rule.
    let turn = ctx.turn(h.round, h.proposer, h.timestamp_ms, params.bench_ms);
    if h.bench
        != ctx
            .parent_bench
            .after(&turn, &ctx.parent_bench.kept_in(&h.bench, &turn))
    {
        return Err(BlockError::WrongBench);
    }
    if h.validator_set_hash != ctx.validator_set_hash {
        return Err(BlockError::WrongValidatorSet {
            got: h.validator_set_hash,
            expected: ctx.validator_set_hash,
        });
    }
    if block.evidence.len() > crate::evidence::MAX_EVIDENCE_PER_BLOCK {
        return Err(BlockError::TooMuchEvidence {
            got: block.evidence.len(),
            limit: crate::evidence::MAX_EVIDENCE_PER_BLOCK,
        });
    }
    if h.evidence_root != crate::evidence::evidence_root(&block.evidence) {
        return Err(BlockError::WrongEvidenceRoot);
    }
    if h.next_validator_set_hash != ctx.next_validators.hash() {
        return Err(BlockError::WrongNextValidatorSet {
            got: h.next_validator_set_hash,
            expected: ctx.next_validators.hash(),
        });
    }
    if h.bundle_count as usize != block.bundles.len() || hashes.len() != block.bundles.len() {
        return Err(BlockError::BundleCountMismatch {
            header: h.bundle_count,
            body: block.bundles.len(),
        });
    }
    if h.namespace_count as usize != spec.rollups.len() {
        return Err(BlockError::WrongNamespaceCount {
            got: h.namespace_count,
            expected: spec.rollups.len(),
        });
    }
    if block.bundles.len() > params.max_block_bundles as usize {
        return Err(BlockError::TooManyBundles {
            got: block.bundles.len(),
            limit: params.max_block_bundles,
        });
    }
    let total: u64 = block.bundles.iter().map(|b| b.encoded_len() as u64).sum();
    if total > params.max_block_bytes {
        return Err(BlockError::TooLarge {
            got: total,
            limit: params.max_block_bytes,
        });
    }
    let mut seen = HashSet::with_capacity(block.bundles.len());
    let mut nonces: HashMap<Sender, u64> = HashMap::new();
    let mut out = Validated::default();
    for (index, (bundle, hash)) in block.bundles.iter().zip(hashes).enumerate() {
        let bad = |error| BlockError::BadBundle { index, error };
        check_bundle(bundle, spec).map_err(bad)?;
        if !seen.insert(*hash) {
            return Err(BlockError::DuplicateBundle(*hash));
        }
        // The nonce this bundle must have: the sender's next on chain, plus its bundles earlier in this block.
        let expected = match nonces.entry(bundle.sender) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(view.next_nonce(&bundle.sender).map_err(unreadable)?)
            }
        };
        if view
            .is_included_below(hash, bundle.nonce, *expected)
            .map_err(unreadable)?
        {
            return Err(BlockError::AlreadyIncluded(*hash));
        }
        if bundle.expiry_height < h.height {
            return Err(bad(BundleError::Expired {
                expiry_height: bundle.expiry_height,
                height: h.height,
            }));
        }
        if bundle.nonce != *expected {
            return Err(bad(BundleError::WrongNonce {
                sender: bundle.sender.to_string(),
                got: bundle.nonce,
                expected: *expected,
            }));
        }
        *expected += 1;
        if !view.signature_checked(hash, &bundle.signature) {
            bundle.verify_signature(hash).map_err(bad)?;
            out.signatures_checked += 1;
        }
    }
    let expected = bundles_root(hashes);
    if h.bundles_root != expected {
        return Err(BlockError::WrongBundlesRoot {
            got: h.bundles_root,
            expected,
        });
    }
    let table = block_table(spec.rollups.ids(), &block.bundles, hashes);
    let expected = namespace_root(&table);
    if h.namespace_root != expected {
        return Err(BlockError::WrongNamespaceRoot {
            got: h.namespace_root,
            expected,
        });
    }
    check_l1(h, ctx, params, view, l1, &seen)?;
    out.table = table;
    Ok(out)
}

/// The header's L1 origin, and that every forced entry it makes owed is among `included` (the block's bundle
/// hashes).
fn check_l1(
    h: &BlockHeader,
    ctx: &BlockContext,
    params: &crate::params::ConsensusParams,
    view: &dyn ChainView,
    l1: Option<&dyn L1View>,
    included: &HashSet<Hash>,
) -> Result<(), BlockError> {
    let origin = &h.l1_origin;
    let Some(l1) = l1 else {
        if *origin != L1Origin::default() {
            return Err(BlockError::L1OriginWithoutL1 {
                number: origin.number,
            });
        }
        return Ok(());
    };
    let parent = &ctx.parent_l1_origin;
    if origin.number < parent.number {
        return Err(BlockError::L1OriginBehindParent {
            got: origin.number,
            parent: parent.number,
        });
    }
    if origin.number == parent.number && origin.hash != parent.hash {
        return Err(BlockError::L1OriginChanged {
            number: origin.number,
            hash: origin.hash,
        });
    }
    match l1.check_origin(origin) {
        Ok(()) => {}
        // Staying on the parent's origin needs no fresh sighting, only not to fall too far behind.
        Err(BlockError::L1OriginUnknown { .. }) if *origin == *parent => {}
        Err(e) => return Err(e),
    }
    let due = l1.forced_due(origin.number);
    if let Some(f) = owed_forced(&due, h.height, params, view)
        .map_err(unreadable)?
        .into_iter()
        .find(|f| !included.contains(&f.hash))
    {
        return Err(BlockError::ForcedOmitted {
            index: f.index,
            hash: f.hash,
        });
    }
    Ok(())
}

/// The hashes of a block's bundles, in block order.
pub fn bundle_hashes(block: &Block) -> Vec<Hash> {
    block.bundles.iter().map(Bundle::hash).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testing::{bundle, key, sign};
    use crate::bundle::BundleEntry;
    use crate::bundle::UnsignedBundle;
    use crate::types::{batches_of, namespace_table};
    use proptest::prelude::*;

    fn set() -> ValidatorSet {
        crate::fixtures::validator_set(&crate::fixtures::validator_keys(7, 1))
    }

    /// The only validator, so the proposer of every round.
    fn me() -> Address {
        set().validators()[0].address
    }

    fn ctx() -> BlockContext {
        BlockContext {
            parent_timestamp_ms: 1_000,
            ..crate::fixtures::block_context(5, set())
        }
    }

    fn spec() -> ChainSpec {
        ChainSpec::for_tests(7, 4)
    }

    /// A chain where every sender's next nonce is 0, nothing is included, and `checked` bundles were verified;
    /// with `broken`, every read fails.
    #[derive(Default)]
    struct View {
        included: HashSet<Hash>,
        next: HashMap<Sender, u64>,
        checked: HashMap<Hash, [u8; 65]>,
        broken: bool,
    }

    impl ChainView for View {
        fn is_included(&self, h: &Hash) -> Result<bool, ConsensusError> {
            if self.broken {
                return Err(ConsensusError::Storage("disk read failed".into()));
            }
            Ok(self.included.contains(h))
        }
        fn next_nonce(&self, s: &Sender) -> Result<u64, ConsensusError> {
            if self.broken {
                return Err(ConsensusError::Storage("disk read failed".into()));
            }
            Ok(self.next.get(s).copied().unwrap_or(0))
        }
        fn signature_checked(&self, h: &Hash, sig: &[u8; 65]) -> bool {
            self.checked.get(h) == Some(sig)
        }
    }

    fn build(bundles: Vec<Bundle>) -> Block {
        let hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
        build_block(&ctx(), &spec(), me(), 1_050, bundles, &hashes).block
    }

    fn check(block: &Block, view: &View) -> Result<Validated, BlockError> {
        validate_block(
            block,
            &bundle_hashes(block),
            &ctx(),
            &spec(),
            view,
            None,
            1_100,
        )
    }

    fn valid(block: &Block) -> Result<Validated, BlockError> {
        check(block, &View::default())
    }

    /// Re-derives the header of a tampered body so that only the body rule under test can fail.
    fn rebuild(mut block: Block) -> Block {
        let hashes = bundle_hashes(&block);
        let table = namespace_table(spec().rollups.ids(), &batches_of(&block.bundles, &hashes));
        block.header.bundles_root = bundles_root(&hashes);
        block.header.namespace_root = namespace_root(&table);
        block.header.bundle_count = block.bundles.len() as u32;
        block
    }

    #[test]
    fn built_block_validates() {
        let block = build(vec![bundle(1, 0, &[1, 2, 3], 1), bundle(2, 0, &[2], 2)]);
        assert_eq!(valid(&block).unwrap().signatures_checked, 2);
        assert_eq!(block.bundles.len(), 2);
        assert!(block.header.timestamp_ms > 1_000);
        assert_eq!(block.header.namespace_count, 4);
    }

    #[test]
    fn timestamp_is_forced_past_parent() {
        let block = build_block(&ctx(), &spec(), me(), 10, vec![], &[]).block;
        assert_eq!(block.header.timestamp_ms, 1_001);
        valid(&block).unwrap();
    }

    #[test]
    fn checked_signatures_are_not_recovered_again_unless_the_bytes_differ() {
        let b = bundle(1, 0, &[1], 1);
        let block = build(vec![b.clone()]);
        let mut view = View::default();
        view.checked.insert(b.hash(), b.signature);
        assert_eq!(check(&block, &view).unwrap().signatures_checked, 0);
        // Same content, different (forged) signature bytes: recovered and refused.
        let mut forged = block.clone();
        forged.bundles[0].signature[0] ^= 1;
        assert!(matches!(
            check(&forged, &view),
            Err(BlockError::BadBundle {
                error: BundleError::BadSignature { .. },
                ..
            })
        ));
    }

    #[test]
    fn rejects_each_broken_header_rule() {
        let good = build(vec![bundle(1, 0, &[1, 2], 1), bundle(2, 0, &[3], 2)]);
        let mut b = good.clone();
        b.header.height = 6;
        assert!(matches!(valid(&b), Err(BlockError::WrongHeight { .. })));
        let mut b = good.clone();
        b.header.parent_hash = Hash::ZERO;
        assert!(matches!(valid(&b), Err(BlockError::WrongParent { .. })));
        let mut b = good.clone();
        b.header.timestamp_ms = 1_000;
        assert!(matches!(
            valid(&b),
            Err(BlockError::TimestampNotIncreasing { .. })
        ));
        let mut b = good.clone();
        b.header.timestamp_ms = 1_100 + 2_001;
        assert!(matches!(
            valid(&b),
            Err(BlockError::TimestampInFuture { .. })
        ));
        let mut b = good.clone();
        b.header.proposer = Address([8; 20]);
        assert!(matches!(valid(&b), Err(BlockError::WrongProposer { .. })));
        let mut b = good.clone();
        let c = ctx();
        b.header.bench =
            Bench::default().after(&c.turn(3, Address([9; 20]), 1, spec().params.bench_ms), &[]);
        assert!(!b.header.bench.entries().is_empty());
        assert!(matches!(valid(&b), Err(BlockError::WrongBench)));
        let mut b = good.clone();
        b.header.namespace_count = 3;
        assert!(matches!(
            valid(&b),
            Err(BlockError::WrongNamespaceCount { .. })
        ));
        let mut b = good.clone();
        b.bundles.swap(0, 1);
        assert!(matches!(
            valid(&b),
            Err(BlockError::WrongBundlesRoot { .. })
        ));
        let mut b = good.clone();
        b.bundles.pop();
        assert!(matches!(
            valid(&b),
            Err(BlockError::BundleCountMismatch { .. })
        ));
        let mut b = good.clone();
        b.header.namespace_root = Hash::ZERO;
        assert!(matches!(
            valid(&b),
            Err(BlockError::WrongNamespaceRoot { .. })
        ));
    }

    #[test]
    fn rejects_each_broken_bundle_rule() {
        let k = key(1);
        let unsigned = |nonce: u64, expiry: u64, rollup: u64, network: u64| UnsignedBundle {
            network_id: network,
            sender: k.address(),
            nonce,
            expiry_height: expiry,
            entries: vec![BundleEntry {
                rollup_id: rollup,
                payload: vec![1, 2, 3],
            }],
        };
        let with = |bundles: Vec<Bundle>| {
            rebuild(Block {
                bundles,
                ..build(vec![])
            })
        };
        let err = |b: &Block| match valid(b) {
            Err(BlockError::BadBundle { error, .. }) => error,
            other => panic!("expected a bad bundle, got {other:?}"),
        };

        // Duplicate, already included.
        let a = sign(&k, unsigned(0, 100, 1, 7));
        assert!(matches!(
            valid(&with(vec![a.clone(), a.clone()])),
            Err(BlockError::DuplicateBundle(_))
        ));
        // A chain that included `a` moved its sender's next nonce past it.
        let view = View {
            included: [a.hash()].into(),
            next: [(k.address(), 1)].into(),
            ..Default::default()
        };
        assert!(matches!(
            check(&with(vec![a.clone()]), &view),
            Err(BlockError::AlreadyIncluded(_))
        ));
        // A node that cannot read whether a bundle is included, or a nonce, has no verdict (not "not included",
        // not "nonce 0").
        let broken = View {
            broken: true,
            ..Default::default()
        };
        assert!(matches!(
            check(&with(vec![a.clone()]), &broken),
            Err(BlockError::Unreadable(m)) if m.contains("disk read failed")
        ));
        // Nonce gap, reused nonce, out of order.
        assert!(matches!(
            err(&with(vec![sign(&k, unsigned(1, 100, 1, 7))])),
            BundleError::WrongNonce {
                got: 1,
                expected: 0,
                ..
            }
        ));
        let view = View {
            next: [(k.address(), 3)].into(),
            ..Default::default()
        };
        assert!(matches!(
            check(&with(vec![a.clone()]), &view),
            Err(BlockError::BadBundle {
                error: BundleError::WrongNonce {
                    got: 0,
                    expected: 3,
                    ..
                },
                ..
            })
        ));
        let b1 = sign(&k, unsigned(1, 100, 2, 7));
        valid(&with(vec![a.clone(), b1.clone()])).unwrap();
        assert!(matches!(
            err(&with(vec![b1.clone(), a.clone()])),
            BundleError::WrongNonce { .. }
        ));
        // Expired (height 5), wrong network, unknown rollup, bad signature.
        assert!(matches!(
            err(&with(vec![sign(&k, unsigned(0, 4, 1, 7))])),
            BundleError::Expired {
                expiry_height: 4,
                height: 5
            }
        ));
        valid(&with(vec![sign(&k, unsigned(0, 5, 1, 7))])).unwrap();
        assert!(matches!(
            err(&with(vec![sign(&k, unsigned(0, 100, 1, 8))])),
            BundleError::WrongNetwork {
                got: 8,
                expected: 7
            }
        ));
        assert!(matches!(
            err(&with(vec![sign(&k, unsigned(0, 100, 99, 7))])),
            BundleError::UnknownRollup { rollup_id: 99, .. }
        ));
        let mut forged = a.clone();
        forged.signature[10] ^= 1;
        assert!(matches!(
            err(&with(vec![forged])),
            BundleError::BadSignature { .. }
        ));
        // Over the limits.
        let big = sign(
            &k,
            UnsignedBundle {
                entries: vec![BundleEntry {
                    rollup_id: 1,
                    payload: vec![0; 70_000],
                }],
                ..unsigned(0, 100, 1, 7)
            },
        );
        assert!(matches!(
            err(&with(vec![big])),
            BundleError::PayloadTooLarge { .. }
        ));
    }

    #[test]
    fn based_rollups_are_not_ordered_by_the_validators() {
        use crate::registry::{RollupInfo, RollupMode, RollupRegistry};
        let mut spec = spec();
        spec.rollups = RollupRegistry::new(
            (1..=4)
                .map(|id| RollupInfo {
                    id,
                    name: format!("r{id}"),
                    mode: if id == 3 {
                        RollupMode::Based
                    } else {
                        RollupMode::Shared
                    },
                    allowed_senders: Vec::new(),
                })
                .collect(),
        )
        .unwrap();
        let mixed = bundle(1, 0, &[1, 3], 1);
        let err = check_bundle(&mixed, &spec).unwrap_err();
        assert_eq!(
            err,
            BundleError::MixedModes {
                shared_rollup: 1,
                based_rollup: 3
            }
        );
        assert_eq!(err.kind(), crate::error::BundleErrorKind::State);
        assert!(err
            .to_string()
            .contains("shared rollup 1 and based rollup 3"));
        let based = bundle(1, 0, &[3], 1);
        assert_eq!(
            check_bundle(&based, &spec),
            Err(BundleError::BasedRollup { rollup_id: 3 })
        );
        // The form checks alone (what based derivation uses) accept both.
        check_bundle_form(&mixed, &spec).unwrap();
        check_bundle_form(&based, &spec).unwrap();
        check_bundle(&bundle(1, 0, &[1, 2, 4], 1), &spec).unwrap();
        // A proposer cannot slip a based bundle into a block.
        let block = rebuild(Block {
            bundles: vec![based],
            ..build(vec![])
        });
        assert!(matches!(
            validate_block(
                &block,
                &bundle_hashes(&block),
                &ctx(),
                &spec,
                &View::default(),
                None,
                1_100
            ),
            Err(BlockError::BadBundle {
                error: BundleError::BasedRollup { rollup_id: 3 },
                ..
            })
        ));
    }

    /// The attack: rollup 2's operator wants entries only from its own sequencer (sender 1); an outsider
    /// (sender 2) posts junk for it, which every rollup-2 reader would have to download and skip.
    #[test]
    fn a_restricted_rollup_takes_entries_only_from_its_senders() {
        let spec = spec().restrict(2, vec![key(1).address()]);
        let judge = |b: &Bundle| {
            let block = rebuild(Block {
                bundles: vec![b.clone()],
                ..build(vec![])
            });
            validate_block(
                &block,
                &bundle_hashes(&block),
                &ctx(),
                &spec,
                &View::default(),
                None,
                1_100,
            )
        };
        let outsider = bundle(2, 0, &[2], 1);
        let refused = |index| BundleError::UnauthorizedSender {
            index,
            rollup_id: 2,
            sender: key(2).address().to_string(),
        };
        // Admission (ingest, gossip, the L1 inbox, the simulation) and block validation all refuse it.
        assert_eq!(check_bundle(&outsider, &spec), Err(refused(0)));
        assert_eq!(
            check_stateless(&outsider, &spec, OrderedBy::Validators, |_| false),
            Err(refused(0))
        );
        assert_eq!(
            judge(&outsider),
            Err(BlockError::BadBundle {
                index: 0,
                error: refused(0)
            })
        );
        let err = refused(0);
        assert_eq!(err.kind(), crate::error::BundleErrorKind::Unauthorized);
        let msg = err.to_string();
        for needle in [
            "rollup 2",
            &key(2).address().to_string()[..],
            "allowed_senders",
        ] {
            assert!(msg.contains(needle), "{msg}");
        }
        // Its own sender's bundle, and the outsider's bundles for open rollups, are fine.
        check_bundle(&bundle(1, 0, &[1, 2, 3], 1), &spec).unwrap();
        judge(&bundle(1, 0, &[2], 1)).unwrap();
        judge(&bundle(2, 0, &[1, 3], 1)).unwrap();
        // The outsider cannot hide its rollup-2 entry among open ones.
        assert_eq!(
            check_bundle(&bundle(2, 0, &[1, 2], 1), &spec),
            Err(refused(1))
        );
        // An open spec (the default) takes the outsider's bundle.
        check_bundle(&outsider, &ChainSpec::for_tests(7, 4)).unwrap();
        // A based rollup's list holds for its inbox-derived batches too (one check, whoever orders).
        let mut based = spec.clone();
        based.rollups = crate::registry::RollupRegistry::new(
            spec.rollups
                .iter()
                .cloned()
                .map(|mut r| {
                    if r.id == 2 {
                        r.mode = crate::registry::RollupMode::Based;
                    }
                    r
                })
                .collect(),
        )
        .unwrap();
        assert_eq!(
            check_stateless(&outsider, &based, OrderedBy::Inbox(2), |_| false),
            Err(refused(0))
        );
        check_stateless(&bundle(1, 0, &[2], 1), &based, OrderedBy::Inbox(2), |_| {
            false
        })
        .unwrap();
    }

    #[test]
    fn a_split_bundle_is_rejected() {
        // A proposer cuts one signed two-rollup bundle into two one-entry bundles (keeping the signature).
        let whole = bundle(1, 0, &[1, 2], 1);
        let mut first = whole.clone();
        first.entries.truncate(1);
        let mut second = whole.clone();
        second.entries.remove(0);
        second.nonce = 1;
        let block = rebuild(Block {
            bundles: vec![first, second],
            ..build(vec![])
        });
        assert!(matches!(
            valid(&block),
            Err(BlockError::BadBundle {
                index: 0,
                error: BundleError::BadSignature { .. }
            })
        ));
        // Moving one entry of the bundle to another bundle of the block fails the same way.
        let other = bundle(2, 0, &[3], 2);
        let mut moved = other.clone();
        moved.entries.push(whole.entries[1].clone());
        let mut rest = whole.clone();
        rest.entries.truncate(1);
        let block = rebuild(Block {
            bundles: vec![rest, moved],
            ..build(vec![])
        });
        assert!(valid(&block).is_err());
    }

    proptest! {
        /// Any block built from any bundles validates, and changing any payload byte is caught.
        #[test]
        fn build_then_tamper(
            payloads in proptest::collection::vec(
                proptest::collection::vec((1u64..5, proptest::collection::vec(any::<u8>(), 1..16)), 1..5), 1..6),
            pick in any::<prop::sample::Index>(),
        ) {
            let bundles: Vec<Bundle> = payloads.iter().enumerate().map(|(i, entries)| {
                let k = key(i as u8 + 1);
                sign(&k, UnsignedBundle {
                    network_id: 7,
                    sender: k.address(),
                    nonce: 0,
                    expiry_height: 100,
                    entries: entries.iter().map(|(r, p)| BundleEntry { rollup_id: *r, payload: p.clone() }).collect(),
                })
            }).collect();
            let block = build(bundles);
            prop_assert!(valid(&block).is_ok());
            let mut t = block.clone();
            let entries: Vec<(usize, usize)> = t.bundles.iter().enumerate()
                .flat_map(|(i, b)| (0..b.entries.len()).map(move |j| (i, j))).collect();
            let (i, j) = entries[pick.index(entries.len())];
            t.bundles[i].entries[j].payload[0] ^= 1;
            prop_assert!(valid(&t).is_err());
            // Even with the header re-derived from the tampered body, the signature catches it.
            prop_assert!(valid(&rebuild(t)).is_err());
        }
    }

    mod l1 {
        use super::*;
        use crate::origin::{ForcedBundle, MemL1};

        fn forced(index: u64, deadline: u64, bundle: Bundle) -> ForcedBundle {
            ForcedBundle {
                index,
                deadline,
                hash: bundle.hash(),
                bundle,
            }
        }

        /// A context on `l1` whose parent sits at `parent` and which builds on `origin`.
        fn ctx_on(parent: L1Origin, origin: L1Origin) -> BlockContext {
            BlockContext {
                parent_l1_origin: parent,
                l1_origin: origin,
                ..ctx()
            }
        }

        fn build_on(ctx: &BlockContext, bundles: Vec<Bundle>) -> Block {
            let hashes: Vec<Hash> = bundles.iter().map(Bundle::hash).collect();
            build_block(ctx, &spec(), me(), 1_050, bundles, &hashes).block
        }

        fn judge(
            block: &Block,
            ctx: &BlockContext,
            view: &View,
            l1: &MemL1,
        ) -> Result<Validated, BlockError> {
            validate_block(
                block,
                &bundle_hashes(block),
                ctx,
                &spec(),
                view,
                Some(l1),
                1_100,
            )
        }

        #[test]
        fn the_origin_moves_forward_to_blocks_the_validator_has_seen() {
            let l1 = MemL1::new(3);
            let (b1, b2) = (l1.mine(), l1.mine());
            let view = View::default();
            // Moving forward to a seen block, or staying on the parent's, is fine.
            judge(
                &build_on(&ctx_on(b1, b2), vec![]),
                &ctx_on(b1, b2),
                &view,
                &l1,
            )
            .unwrap();
            judge(
                &build_on(&ctx_on(b2, b2), vec![]),
                &ctx_on(b2, b2),
                &view,
                &l1,
            )
            .unwrap();
            // Backwards.
            assert_eq!(
                judge(
                    &build_on(&ctx_on(b2, b1), vec![]),
                    &ctx_on(b2, b1),
                    &view,
                    &l1
                ),
                Err(BlockError::L1OriginBehindParent { got: 1, parent: 2 })
            );
            // Same number, another block.
            let other = L1Origin {
                number: 2,
                hash: Hash::digest(&[b"fork"]),
            };
            assert!(matches!(
                judge(
                    &build_on(&ctx_on(b2, other), vec![]),
                    &ctx_on(b2, other),
                    &view,
                    &l1
                ),
                Err(BlockError::L1OriginChanged { number: 2, .. })
            ));
            // A block this validator has not seen (yet, or at all).
            let unseen = L1Origin {
                number: 3,
                hash: Hash::digest(&[b"unseen"]),
            };
            assert!(matches!(
                judge(
                    &build_on(&ctx_on(b2, unseen), vec![]),
                    &ctx_on(b2, unseen),
                    &view,
                    &l1
                ),
                Err(BlockError::L1OriginUnknown { number: 3, .. })
            ));
            // Too far behind the validator's view: a proposer cannot hold the origin back to dodge forced entries.
            for _ in 0..4 {
                l1.mine();
            }
            assert_eq!(
                judge(
                    &build_on(&ctx_on(b1, b2), vec![]),
                    &ctx_on(b1, b2),
                    &view,
                    &l1
                ),
                Err(BlockError::L1OriginStale {
                    number: 2,
                    behind: 4,
                    limit: 3
                })
            );
            // Without L1 the origin must stay zero.
            let block = build_on(&ctx_on(b1, b2), vec![]);
            assert_eq!(
                check(&block, &view),
                Err(BlockError::L1OriginWithoutL1 { number: 2 })
            );
        }

        #[test]
        fn an_overdue_forced_entry_must_be_in_the_block() {
            let l1 = MemL1::new(100);
            let origins: Vec<L1Origin> = (0..5).map(|_| l1.mine()).collect();
            let entry = bundle(9, 0, &[2], 9);
            l1.force(forced(0, 4, entry.clone()));
            let view = View::default();
            // Not due yet at origin 3: the block may leave it out.
            let c3 = ctx_on(origins[0], origins[2]);
            judge(&build_on(&c3, vec![]), &c3, &view, &l1).unwrap();
            // Due at origin 4: a block without it is refused, naming the entry ...
            let c4 = ctx_on(origins[2], origins[3]);
            assert_eq!(
                judge(&build_on(&c4, vec![bundle(1, 0, &[1], 1)]), &c4, &view, &l1),
                Err(BlockError::ForcedOmitted {
                    index: 0,
                    hash: entry.hash()
                })
            );
            // ... and one with it (anywhere in the block) is accepted.
            judge(
                &build_on(&c4, vec![bundle(1, 0, &[1], 1), entry.clone()]),
                &c4,
                &view,
                &l1,
            )
            .unwrap();
            // Not owed once included, expired, or when its nonce was used by another bundle.
            let mut included = View::default();
            included.included.insert(entry.hash());
            judge(&build_on(&c4, vec![]), &c4, &included, &l1).unwrap();
            let mut nonce_used = View::default();
            nonce_used.next.insert(entry.sender, 1);
            judge(&build_on(&c4, vec![]), &c4, &nonce_used, &l1).unwrap();
            let expiring = sign(
                &key(9),
                UnsignedBundle {
                    network_id: entry.network_id,
                    sender: entry.sender,
                    nonce: 0,
                    expiry_height: 4,
                    entries: entry.entries.clone(),
                },
            );
            let l1b = MemL1::new(100);
            let o: Vec<L1Origin> = (0..5).map(|_| l1b.mine()).collect();
            l1b.force(forced(0, 1, expiring));
            let c = ctx_on(o[0], o[1]);
            judge(&build_on(&c, vec![]), &c, &view, &l1b).unwrap();
        }

        #[test]
        fn owed_entries_follow_nonces_in_queue_order_within_the_block_limits() {
            let l1 = MemL1::new(100);
            let o = l1.mine();
            let (a0, a1, a3) = (
                bundle(3, 0, &[1], 1),
                bundle(3, 1, &[1], 2),
                bundle(3, 3, &[1], 3),
            );
            // Queue order a1, a0, a3: a1's nonce is not next until a0 is counted, a3 waits for nonce 2.
            for (i, b) in [&a1, &a0, &a3].into_iter().enumerate() {
                l1.force(forced(i as u64, 1, b.clone()));
            }
            let due = l1.forced_due(1);
            let mut params = spec().params.clone();
            let owed: Vec<u64> = crate::origin::owed_forced(&due, 5, &params, &View::default())
                .unwrap()
                .iter()
                .map(|f| f.index)
                .collect();
            assert_eq!(owed, vec![1]);
            // a1 is owed once a0 is included.
            let mut after = View::default();
            after.next.insert(a0.sender, 1);
            after.included.insert(a0.hash());
            let owed = crate::origin::owed_forced(&due, 5, &params, &after).unwrap();
            assert_eq!(owed.iter().map(|f| f.index).collect::<Vec<_>>(), vec![0]);
            // The block limit bounds what one block owes.
            params.max_block_bundles = 0;
            assert!(
                crate::origin::owed_forced(&due, 5, &params, &View::default())
                    .unwrap()
                    .is_empty()
            );
            let c = ctx_on(L1Origin::default(), o);
            judge(&build_on(&c, vec![a0.clone()]), &c, &View::default(), &l1).unwrap();
        }
    }
}
