//! The host: what Baton does at each step of the BFT engine, with no I/O of its own.
//!
//! The node's engine loop turns each engine message into one call here: build a proposal, take in a proposal
//! part, hand back undecided values after a restart, commit a decision, serve and accept synced blocks. Storage
//! and time come in through [`ChainStore`] and [`Clock`], so the whole flow runs in memory in tests.
//!
//! One [`Host`] holds the state; its methods live with their job:
//! - [`admission`]: bundles and evidence coming in (clients' submissions, peers' dissemination, reported
//!   equivocation), and bundles announced again;
//! - [`propose`]: when this node proposes, what goes into its block, and the parts that carry it;
//! - [`streams`]: other proposers' part streams put back together, bundles asked for and answered;
//! - [`judge`]: a complete proposal (streamed, early or synced) validated and recorded, with the next set;
//! - [`decide`]: a decision committed, and decided blocks served to peers.

mod admission;
mod decide;
mod judge;
mod propose;
mod streams;
#[cfg(test)]
mod tests;

pub use decide::{certificate_from_engine, certificate_to_engine};
pub use judge::SyncVerdict;
pub use propose::chunk_bundles;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use malachitebft_core_consensus::ProposedValue;

use crate::bench::Bench;
use crate::block::BlockContext;
use crate::bundle::Bundle;
use crate::bundle::Sender;
use crate::context::{BatonContext, ConsensusSigner};
use crate::error::{BundleError, ConsensusError};
use crate::evidence::Equivocation;
use crate::hash::Hash;
use crate::ids::{Address, L1Origin};
use crate::mempool::{Mempool, MempoolLimits};
use crate::nonces::NonceTable;
use crate::origin::L1View;
use crate::params::ConsensusParams;
use crate::parts::ProposalPart;
use crate::registry::ChainSpec;
use crate::signing::ChainDomain;
use crate::store::ChainStore;
use crate::types::{BlockHeader, NamespaceEntry};
use crate::validators::ValidatorSet;
use crate::view::ChainView;

use streams::{Assembled, Parked, PartStream};

/// Milliseconds since the Unix epoch, from whatever clock the caller trusts.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// A clock moved by hand (tests, simulations).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        ManualClock(AtomicU64::new(start_ms))
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

/// Sizes of the host's buffers. The node takes the mempool, side-cache, compact-proposal and admission fields from
/// its `[mempool]` config section; `part_bytes`, `max_streams_per_peer`, `future_heights`, `max_parked` and `nonce_table` keep
/// their defaults here.
#[derive(Clone, Debug)]
pub struct HostLimits {
    pub mempool_max_bundles: usize,
    pub mempool_max_bytes: usize,
    pub mempool_max_per_sender: usize,
    /// How far past its sender's first free nonce a bundle's nonce may be. Default 64.
    pub mempool_max_nonce_gap: u64,
    /// Bundles (and their bytes) waiting behind a nonce gap, at most; they count in the mempool's limits too.
    /// Default 10,000 and 16 MiB.
    pub mempool_max_waiting: usize,
    pub mempool_max_waiting_bytes: usize,
    /// A bundle that has waited behind a nonce gap this long is dropped (reported as rejected). Default 60 s.
    pub mempool_waiting_ttl_ms: u64,
    /// Bundles per `Data` proposal part are packed up to this many bytes.
    pub part_bytes: usize,
    /// Incomplete proposal streams kept per publisher; beyond this the publisher's own oldest is dropped, so
    /// one peer's streams never evict another's. Each stream holds at most a block's bytes. Default 4 (a proposer
    /// has one stream per round; a few rounds may overlap).
    pub max_streams_per_peer: usize,
    /// Proposals for heights up to this far ahead of the current one are kept until that height starts.
    pub future_heights: u64,
    /// Send proposal bodies as bundle hashes (validators hold the bundles from dissemination) instead of whole
    /// bundles. Default true.
    pub compact_proposals: bool,
    /// Checked bundles from peers that did not enter the mempool (e.g. a nonce already taken by another pending
    /// bundle), kept to resolve proposals that refer to them: at most this many and `side_cache_bytes` bytes, the
    /// oldest evicted first. Default 100,000 and 64 MiB.
    pub side_cache: usize,
    pub side_cache_bytes: usize,
    /// Proposals waiting for bundles they refer to. Default 16.
    pub max_parked: usize,
    /// Client submissions are refused while the oldest bundle ready for a block has waited longer than this
    /// ([`Host::admit_submission`]); 0 turns the check off. Default 100 ms: at twice the rate this box's devnet
    /// sustains, 150 ms let each admitted bundle wait up to that long before its block and kept the chain at its
    /// longest heights (BENCHMARKS.md, the admission-bound rows).
    pub admit_max_wait_ms: u64,
    /// Senders whose next nonce on chain is kept in memory ([`crate::nonces`]). Default 100,000 (about 6 MiB).
    pub nonce_table: usize,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            mempool_max_bundles: 200_000,
            mempool_max_bytes: 256 * 1024 * 1024,
            mempool_max_per_sender: 1024,
            mempool_max_nonce_gap: 64,
            mempool_max_waiting: 10_000,
            mempool_max_waiting_bytes: 16 * 1024 * 1024,
            mempool_waiting_ttl_ms: 60_000,
            part_bytes: 256 * 1024,
            max_streams_per_peer: 4,
            future_heights: 8,
            compact_proposals: true,
            side_cache: 100_000,
            side_cache_bytes: 64 * 1024 * 1024,
            max_parked: 16,
            admit_max_wait_ms: 100,
            nonce_table: crate::nonces::DEFAULT_MAX_SENDERS,
        }
    }
}

/// Running totals the node turns into metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    pub invalid_proposals: u64,
    pub dropped_expired: u64,
    pub dropped_rejected: u64,
    pub signatures_recovered: u64,
}

/// The host state machine. See the module docs.
pub struct Host<S, C> {
    domain: ChainDomain,
    genesis_hash: Hash,
    signer: Option<ConsensusSigner>,
    validators: ValidatorSet,
    spec: ChainSpec,
    limits: HostLimits,
    store: S,
    clock: C,
    mempool: Mempool,
    /// When the chain was last seen behind (the oldest ready bundle over `admit_max_wait_ms`), for
    /// [`ConsensusError::BehindGap`].
    last_behind_ms: Option<u64>,
    /// The decided chain's next nonce per sender, in front of the store's reads.
    nonces: NonceTable,
    /// Signatures checked while judging proposals of the current height (bundle hash -> signature bytes).
    verified: HashMap<Hash, [u8; 65]>,
    /// Bundle hashes of the blocks built or judged at the current height, by block hash, so that proposing and
    /// committing do not hash every bundle again (an EIP-712 hash per bundle).
    known_hashes: HashMap<Hash, Vec<Hash>>,
    /// The namespace tables of the blocks built or judged valid at the current height, by block hash, so that
    /// committing a decision does not hash every entry again.
    known_tables: HashMap<Hash, Vec<NamespaceEntry>>,
    side: HashMap<Hash, Bundle>,
    side_order: VecDeque<Hash>,
    /// Encoded bytes of the bundles in `side`.
    side_bytes: usize,
    parked: Vec<Parked>,
    /// Values completed after their stream ended (parked proposals resolved by later bundles), handed to the
    /// engine with the next reply.
    ready: VecDeque<ProposedValue<BatonContext>>,
    /// Messages the node should publish on the proposal-parts channel (wants, answers to wants).
    outbox: Vec<ProposalPart>,
    stats: HostStats,
    /// When each pending bundle was last announced to peers (ms) and how often it was announced again, for
    /// [`Host::reannounce`].
    announced: HashMap<Hash, (u64, u32)>,
    tip: Option<BlockHeader>,
    current: u64,
    /// Incomplete proposal streams by publisher, then stream id (each publisher's in arrival order).
    streams: HashMap<Vec<u8>, Vec<(Vec<u8>, PartStream)>>,
    /// This node's proposals of the current height: round -> value (built or restreamed by this node), the only
    /// ones it answers asks for bundles about.
    own_proposals: HashMap<u32, Hash>,
    /// (peer, round) pairs whose ask this node answered at the current height: each is answered once.
    answered: HashSet<(Vec<u8>, u32)>,
    future: BTreeMap<u64, Vec<Assembled>>,
    /// The node's view of L1, on a chain with L1 ([`crate::origin`]).
    l1: Option<Arc<dyn L1View>>,
    /// The genesis set (the set of every height until a block names another).
    genesis_validators: ValidatorSet,
    /// Verified evidence not yet in a decided block, oldest first (bounded).
    pending_evidence: Vec<Equivocation>,
    /// Hashes of the evidence in decided blocks.
    included_evidence: HashSet<Hash>,
    /// Validators with evidence in decided blocks: out of every later set on a chain with epochs.
    jailed: BTreeSet<Address>,
    /// Presence memory: per validator, the timestamp of the latest decided block whose commit certificate held
    /// its precommit (members of the current set only). A benched validator not seen for [`Host::presence_window_ms`]
    /// is kept benched when its bench runs out ([`crate::bench`]).
    last_voted_ms: HashMap<Address, u64>,
}

/// How long (chain time) a validator may go unseen in commit certificates and still count as voting, at most: a
/// commit needs only two thirds of the power, so a voting validator is sometimes left out of one, but not out of
/// every one over a few seconds of heights. A quarter of the bench when that is shorter, so that a validator that
/// stopped during its bench is seen as gone when the bench runs out.
pub(super) const PRESENCE_WINDOW_MS: u64 = 5_000;

/// Most verified evidence items kept waiting for a block.
pub(super) const MAX_PENDING_EVIDENCE: usize = 256;

impl<S: ChainStore, C: Clock> Host<S, C> {
    /// Opens the host on a store: finds the tip and reloads the persisted mempool (bundles that expired or lost
    /// their nonce while the node was down are recorded as dropped).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        domain: ChainDomain,
        genesis_hash: Hash,
        signer: Option<ConsensusSigner>,
        validators: ValidatorSet,
        spec: ChainSpec,
        limits: HostLimits,
        store: S,
        clock: C,
    ) -> Result<Self, ConsensusError> {
        let tip = store.latest()?;
        let mempool = Mempool::new(MempoolLimits {
            max_bundles: limits.mempool_max_bundles,
            max_bytes: limits.mempool_max_bytes,
            max_per_sender: limits.mempool_max_per_sender,
            max_nonce_gap: limits.mempool_max_nonce_gap,
            max_waiting: limits.mempool_max_waiting,
            max_waiting_bytes: limits.mempool_max_waiting_bytes,
            waiting_ttl_ms: limits.mempool_waiting_ttl_ms,
        });
        let current = tip.as_ref().map_or(1, |t| t.height + 1);
        // The set of the next height: the genesis one until a decided block named another.
        let genesis_validators = validators.clone();
        let validators = store.validator_set_at(current)?.unwrap_or(validators);
        let included = store.evidence()?;
        let nonces = NonceTable::new(limits.nonce_table);
        let mut host = Host {
            last_behind_ms: None,
            nonces,
            genesis_validators,
            pending_evidence: Vec::new(),
            included_evidence: included.iter().map(|(_, e)| e.hash()).collect(),
            jailed: included.iter().map(|(_, e)| e.validator).collect(),
            last_voted_ms: HashMap::new(),
            domain,
            genesis_hash,
            signer,
            validators,
            spec,
            limits,
            store,
            clock,
            mempool,
            tip,
            current,
            verified: HashMap::new(),
            known_hashes: HashMap::new(),
            known_tables: HashMap::new(),
            side: HashMap::new(),
            side_order: VecDeque::new(),
            side_bytes: 0,
            parked: Vec::new(),
            ready: VecDeque::new(),
            outbox: Vec::new(),
            stats: HostStats::default(),
            announced: HashMap::new(),
            streams: HashMap::new(),
            own_proposals: HashMap::new(),
            answered: HashSet::new(),
            future: BTreeMap::new(),
            l1: None,
        };
        let mut pending = host.store.pending_bundles()?;
        // Re-admit in nonce order so that no sender's queue looks gapped while it is rebuilt.
        pending.sort_by_key(|b| (b.sender, b.nonce));
        let mut dropped = Vec::new();
        let height = current.saturating_sub(1);
        for bundle in pending {
            let hash = bundle.hash();
            match host.admit(hash, bundle) {
                Ok(_) => {}
                Err(ConsensusError::InvalidBundle(BundleError::Expired {
                    expiry_height, ..
                })) => dropped.push((
                    hash,
                    crate::types::Dropped::Expired {
                        expiry_height,
                        height,
                    },
                )),
                Err(ConsensusError::InvalidBundle(e)) => dropped.push((
                    hash,
                    crate::types::Dropped::Rejected {
                        height,
                        reason: e.to_string(),
                    },
                )),
                // The persisted mempool may exceed a lowered in-memory limit after a config change; what does
                // not fit now stays on disk and is reloaded at the next start.
                Err(_) => {}
            }
        }
        host.store.record_dropped(&dropped)?;
        Ok(host)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Ties the chain to L1: headers carry an L1 origin and owed forced-inclusion entries ([`crate::origin`]).
    /// Every node of a chain with L1 must have one (the genesis says so).
    pub fn set_l1(&mut self, l1: Arc<dyn L1View>) {
        self.l1 = Some(l1);
    }

    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    pub fn params(&self) -> &ConsensusParams {
        &self.spec.params
    }

    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    pub fn stats(&self) -> HostStats {
        self.stats
    }

    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    pub fn tip(&self) -> Option<&BlockHeader> {
        self.tip.as_ref()
    }

    /// The height after the latest decided one.
    pub fn next_height(&self) -> u64 {
        self.tip.as_ref().map_or(1, |t| t.height + 1)
    }

    pub fn address(&self) -> Option<Address> {
        self.signer.as_ref().map(ConsensusSigner::address)
    }

    /// The validator set for the height after the tip, with the tip's proposer bench applied: the set to hand
    /// the engine for that height (its rotation names the proposers).
    pub fn height_validators(&self) -> ValidatorSet {
        match &self.tip {
            Some(t) => t.next_rotation(&self.validators),
            None => Bench::default().apply(&self.validators, 0),
        }
    }

    pub(super) fn bench(&self) -> Bench {
        self.tip
            .as_ref()
            .map(|t| t.bench.clone())
            .unwrap_or_default()
    }

    pub(super) fn block_context(&self, height: u64, round: u32) -> BlockContext {
        let (parent_hash, parent_timestamp_ms) = match &self.tip {
            Some(t) => (t.hash(), t.timestamp_ms),
            None => (self.genesis_hash, 0),
        };
        let parent_bench = self.bench();
        let parent_l1_origin = self.tip.as_ref().map(|t| t.l1_origin).unwrap_or_default();
        let l1_origin = self.proposal_origin();
        BlockContext {
            parent_l1_origin,
            l1_origin,
            height,
            round,
            parent_hash,
            parent_timestamp_ms,
            validator_set_hash: self.validators.hash(),
            validators: self.height_validators(),
            next_validators: self.validators.clone(),
            evidence: Vec::new(),
            unseen: Vec::new(),
            parent_bench,
        }
    }

    /// How long a validator may go unseen in commit certificates and still count as voting: a quarter of the
    /// bench, at most [`PRESENCE_WINDOW_MS`].
    pub(super) fn presence_window_ms(&self) -> u64 {
        (self.spec.params.bench_ms / 4).min(PRESENCE_WINDOW_MS)
    }

    /// Benched validators this node has not seen in a commit certificate within [`Host::presence_window_ms`]
    /// before `parent_timestamp_ms` (for building a block: [`BlockContext::unseen`]).
    pub(super) fn unseen(&self, bench: &Bench, parent_timestamp_ms: u64) -> Vec<Address> {
        bench
            .entries()
            .iter()
            .map(|e| e.validator)
            .filter(|v| {
                self.last_voted_ms.get(v).is_none_or(|t| {
                    t.saturating_add(self.presence_window_ms()) < parent_timestamp_ms
                })
            })
            .collect()
    }

    /// The L1 origin a block proposed now names: the newest this node would vouch for, never below the parent's.
    pub(super) fn proposal_origin(&self) -> L1Origin {
        let parent = self.tip.as_ref().map(|t| t.l1_origin).unwrap_or_default();
        self.l1
            .as_ref()
            .and_then(|l1| l1.proposal_origin())
            .filter(|o| o.number > parent.number)
            .unwrap_or(parent)
    }

    /// The set that decides `height` (a decided height or the next one).
    pub fn validators_at(&self, height: u64) -> Result<ValidatorSet, ConsensusError> {
        if height >= self.next_height() {
            return Ok(self.validators.clone());
        }
        self.store.validators_for(height, &self.genesis_validators)
    }

    /// Validators with evidence in decided blocks.
    pub fn jailed(&self) -> &BTreeSet<Address> {
        &self.jailed
    }

    /// Evidence verified here and waiting for a block.
    pub fn pending_evidence(&self) -> &[Equivocation] {
        &self.pending_evidence
    }

    /// The chain as block validation sees it from here: the store, with the signatures this node already checked
    /// (bundles in the mempool, kept aside, or judged at this height).
    pub(super) fn view(&self) -> HostView<'_, S> {
        HostView {
            store: &self.store,
            nonces: &self.nonces,
            mempool: &self.mempool,
            verified: &self.verified,
            side: &self.side,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The sender's next nonce on the decided chain, from the nonce table, or read from the store and kept there.
    pub(super) fn chain_nonce(&mut self, sender: &Sender) -> Result<u64, ConsensusError> {
        if let Some(next) = self.nonces.get(sender) {
            return Ok(next);
        }
        let next = self.store.next_nonce(sender)?;
        self.nonces.set(*sender, next);
        Ok(next)
    }

    /// Senders in the nonce table.
    pub fn nonce_table_len(&self) -> usize {
        self.nonces.len()
    }
}

/// The chain as block validation sees it from a host.
pub(super) struct HostView<'a, S> {
    store: &'a S,
    nonces: &'a NonceTable,
    mempool: &'a Mempool,
    verified: &'a HashMap<Hash, [u8; 65]>,
    side: &'a HashMap<Hash, Bundle>,
}

impl<S: ChainStore> ChainView for HostView<'_, S> {
    fn is_included(&self, bundle: &Hash) -> Result<bool, ConsensusError> {
        Ok(self.store.inclusion(bundle)?.is_some())
    }

    fn next_nonce(&self, sender: &Sender) -> Result<u64, ConsensusError> {
        match self.nonces.get(sender) {
            Some(next) => Ok(next),
            None => self.store.next_nonce(sender),
        }
    }

    fn signature_checked(&self, bundle: &Hash, signature: &[u8; 65]) -> bool {
        self.mempool.get(bundle).map(|b| &b.signature) == Some(signature)
            || self.side.get(bundle).map(|b| &b.signature) == Some(signature)
            || self.verified.get(bundle) == Some(signature)
    }
}
