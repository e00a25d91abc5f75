//! The host: what Baton does at each step of the BFT engine, with no I/O of its own.
//!
//! The node's engine loop turns each engine message into one call here: build a proposal, take in a proposal
//! part, hand back undecided values after a restart, commit a decision, serve and accept synced blocks. Storage
//! and time come in through [`ChainStore`] and [`Clock`], so the whole flow runs in memory in tests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use malachitebft_core_consensus::ProposedValue;
use malachitebft_core_types::{CommitCertificate, CommitSignature, Round, Validity};
use tracing::{debug, info, warn};

use crate::bench::Bench;
use crate::block::{
    build_block, bundle_hashes, check_bundle, validate_block, BlockContext, ChainView,
};
use crate::bundle::Sender;
use crate::context::{
    round_u32, verify_signature, BatonContext, ChainDomain, ConsensusSigner, Height, ProposalPart,
    Signature, ValidatorSet, Value,
};
use crate::epoch::next_set;
use crate::error::{BlockError, BundleError, ConsensusError};
use crate::evidence::{carriable, Equivocation, MAX_EVIDENCE_AGE, MAX_EVIDENCE_PER_BLOCK};
use crate::hash::Hash;
use crate::mempool::{backlogged, Admission, Mempool, MempoolLimits};
use crate::origin::{owed_forced, Certified, ForcedBundle, L1View};
use crate::params::ConsensusParams;
use crate::registry::ChainSpec;
use crate::store::{ChainStore, UndecidedProposal};
use crate::types::{
    batches_of, namespace_table, Address, Block, BlockHeader, Bundle, Certificate, L1Origin,
};

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

/// Sizes of the host's buffers (node config).
#[derive(Clone, Debug)]
pub struct HostLimits {
    pub mempool_max_bundles: usize,
    pub mempool_max_bytes: usize,
    pub mempool_max_per_sender: usize,
    /// Bundles per `Data` proposal part are packed up to this many bytes.
    pub part_bytes: usize,
    /// Concurrent incomplete proposal streams kept; the oldest is dropped beyond this.
    pub max_streams: usize,
    /// Proposals for heights up to this far ahead of the current one are kept until that height starts.
    pub future_heights: u64,
    /// Send proposal bodies as bundle hashes (validators hold the bundles from dissemination) instead of whole
    /// bundles. Default true.
    pub compact_proposals: bool,
    /// Checked bundles from peers that did not enter the mempool (e.g. a nonce already taken by another pending
    /// bundle), kept to resolve proposals that refer to them. Default 100,000.
    pub side_cache: usize,
    /// Proposals waiting for bundles they refer to. Default 16.
    pub max_parked: usize,
    /// Client submissions are refused while the oldest bundle ready for a block has waited longer than this
    /// ([`Host::admit_submission`]); 0 turns the check off. Default 150 ms.
    pub admit_max_wait_ms: u64,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            mempool_max_bundles: 200_000,
            mempool_max_bytes: 256 * 1024 * 1024,
            mempool_max_per_sender: 1024,
            part_bytes: 256 * 1024,
            max_streams: 64,
            future_heights: 8,
            compact_proposals: true,
            side_cache: 100_000,
            max_parked: 16,
            admit_max_wait_ms: 150,
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

/// How a synced block was judged.
#[derive(Debug)]
pub enum SyncVerdict {
    /// A verdict for the engine (the block may be valid or invalid).
    Verdict(ProposedValue<BatonContext>),
    /// The bytes do not decode: the peer sent garbage.
    PeerFault,
    /// We cannot judge it now (e.g. it is not for the next height); ask again later.
    NotNow,
}

#[derive(Default)]
struct PartStream {
    parts: BTreeMap<u64, ProposalPart>,
    fin_seq: Option<u64>,
    bytes: usize,
}

/// One bundle of a proposal body: sent whole, or by hash.
enum Item {
    Full(Bundle),
    Ref(Hash),
}

/// A signed, well-formed proposal whose body refers to bundles this node does not hold yet.
struct Parked {
    height: u64,
    round: u32,
    pol_round: Round,
    proposer: Address,
    header: BlockHeader,
    hashes: Vec<Hash>,
    bundles: Vec<Option<Bundle>>,
    evidence: Vec<Equivocation>,
    asked_at_ms: u64,
}

/// How long a parked proposal waits before asking for its missing bundles again.
const REASK_MS: u64 = 250;

/// A complete proposal received for a height we have not reached yet.
struct Assembled {
    round: u32,
    pol_round: Round,
    proposer: Address,
    block: Block,
    hashes: Vec<Hash>,
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
    /// Signatures checked while judging proposals of the current height (bundle hash -> signature bytes).
    verified: HashMap<Hash, [u8; 65]>,
    /// Bundle hashes of the blocks built or judged at the current height, by block hash, so that proposing and
    /// committing do not hash every bundle again (an EIP-712 hash per bundle).
    known_hashes: HashMap<Hash, Vec<Hash>>,
    side: HashMap<Hash, Bundle>,
    side_order: VecDeque<Hash>,
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
    streams: HashMap<(Vec<u8>, Vec<u8>), PartStream>,
    stream_order: VecDeque<(Vec<u8>, Vec<u8>)>,
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
}

/// Most verified evidence items kept waiting for a block.
const MAX_PENDING_EVIDENCE: usize = 256;

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
        });
        let current = tip.as_ref().map_or(1, |t| t.height + 1);
        // The set of the next height: the genesis one until a decided block named another.
        let genesis_validators = validators.clone();
        let validators = store.validator_set_at(current)?.unwrap_or(validators);
        let included = store.evidence()?;
        let mut host = Host {
            genesis_validators,
            pending_evidence: Vec::new(),
            included_evidence: included.iter().map(|(_, e)| e.hash()).collect(),
            jailed: included.iter().map(|(_, e)| e.validator).collect(),
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
            side: HashMap::new(),
            side_order: VecDeque::new(),
            parked: Vec::new(),
            ready: VecDeque::new(),
            outbox: Vec::new(),
            stats: HostStats::default(),
            announced: HashMap::new(),
            streams: HashMap::new(),
            stream_order: VecDeque::new(),
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
        self.bench().apply(&self.validators, self.next_height())
    }

    fn bench(&self) -> Bench {
        self.tip
            .as_ref()
            .map(|t| t.bench.clone())
            .unwrap_or_default()
    }

    fn block_context(&self, height: u64, round: u32) -> BlockContext {
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
            validators: parent_bench.apply(&self.validators, height),
            next_validators: self.validators.clone(),
            evidence: Vec::new(),
            parent_bench,
        }
    }

    /// The L1 origin a block proposed now names: the newest this node would vouch for, never below the parent's.
    fn proposal_origin(&self) -> L1Origin {
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

    /// Takes in equivocation the engine reported: each item is verified against the set of its height and kept
    /// for a block unless it is already in the chain or waiting. Returns how many were new.
    pub fn report_evidence(&mut self, items: Vec<Equivocation>) -> Result<usize, ConsensusError> {
        let mut added = 0;
        for e in items {
            let hash = e.hash();
            if self.included_evidence.contains(&hash)
                || self.pending_evidence.iter().any(|p| p.hash() == hash)
                || e.height >= self.next_height()
            {
                continue;
            }
            let set = self.validators_at(e.height)?;
            match e.verify(&set, &self.domain) {
                Ok(()) => {
                    warn!(validator = %e.validator, height = e.height, round = e.round, kind = e.kind.as_str(), "equivocation");
                    if self.pending_evidence.len() >= MAX_PENDING_EVIDENCE {
                        self.pending_evidence.remove(0);
                    }
                    self.pending_evidence.push(e);
                    added += 1;
                }
                Err(why) => {
                    debug!(validator = %e.validator, error = %why, "refused reported evidence")
                }
            }
        }
        Ok(added)
    }

    /// Checks a block's evidence: no item twice or already in the chain, about an earlier height not too long
    /// ago, and real equivocation by a member of that height's set.
    fn check_evidence(&self, block: &Block) -> Result<(), BlockError> {
        let height = block.height();
        let mut seen = HashSet::new();
        for (index, e) in block.evidence.iter().enumerate() {
            let bad = |reason: String| BlockError::BadEvidence { index, reason };
            let hash = e.hash();
            if !seen.insert(hash) || self.included_evidence.contains(&hash) {
                return Err(bad("already in the chain or twice in the block".into()));
            }
            if !carriable(e.height, height) {
                return Err(bad(format!(
                    "about height {}, not one of the {MAX_EVIDENCE_AGE} heights before {height}",
                    e.height
                )));
            }
            let set = self
                .validators_at(e.height)
                .map_err(|err| bad(err.to_string()))?;
            e.verify(&set, &self.domain)
                .map_err(|err| bad(err.to_string()))?;
        }
        Ok(())
    }

    /// The set deciding `height + 1` for a block at `height` on L1 origin `origin`: this height's set, except in an
    /// epoch's last block on a chain with epochs, where [`next_set`] picks it from the staking table at the origin
    /// (the L1 state every validator judging the block agreed on). A view that has not read that far cannot judge
    /// ([`BlockError::StakeTableUnknown`]).
    pub fn next_validators(
        &self,
        height: u64,
        origin: &L1Origin,
    ) -> Result<ValidatorSet, BlockError> {
        let current = &self.validators;
        let (Some(rules), Some(l1)) = (&self.spec.epochs, &self.l1) else {
            return Ok(current.clone());
        };
        if !rules.is_boundary(height + 1) {
            return Ok(current.clone());
        }
        let mut table = l1
            .stake_table(origin.number)
            .ok_or(BlockError::StakeTableUnknown {
                number: origin.number,
            })?;
        // Validators with evidence in the chain are out of every later set.
        for (key, c) in table.candidates.iter_mut() {
            if self.jailed.contains(&Address::from_public_key_bytes(key)) {
                c.jailed = true;
            }
        }
        let (set, change) = next_set(&table, rules, current);
        debug!(
            height,
            origin = origin.number,
            ?change,
            validators = set.validators().len(),
            "next epoch's set"
        );
        Ok(set)
    }

    /// The next set a certified block carries: its body's set when its header names a new one (only at an epoch's
    /// end), this height's set otherwise.
    fn carried_next_set(&self, block: &Block) -> Result<ValidatorSet, BlockError> {
        self.check_carried_set(block)?;
        Ok(block
            .next_validators
            .clone()
            .unwrap_or_else(|| self.validators.clone()))
    }

    /// Whether a block carries exactly the next set its header names: none when the header names this height's
    /// set, the named (different) set at an epoch's end.
    fn check_carried_set(&self, block: &Block) -> Result<(), BlockError> {
        let h = &block.header;
        let current = self.validators.hash();
        if h.next_validator_set_hash == current && block.next_validators.is_none() {
            return Ok(());
        }
        let at_boundary = self
            .spec
            .epochs
            .as_ref()
            .is_some_and(|r| r.is_boundary(h.height + 1));
        match &block.next_validators {
            Some(set)
                if at_boundary
                    && set.hash() == h.next_validator_set_hash
                    && set.hash() != current =>
            {
                Ok(())
            }
            carried => Err(BlockError::WrongNextValidatorSet {
                got: h.next_validator_set_hash,
                expected: carried.as_ref().map_or(current, ValidatorSet::hash),
            }),
        }
    }

    /// Checks a bundle's shape and limits (the API calls this before it persists anything).
    pub fn check_bundle(&self, bundle: &Bundle) -> Result<(), BundleError> {
        check_bundle(bundle, &self.spec)
    }

    /// Adds a bundle whose signature the caller checked to the mempool, after the checks that need chain state:
    /// not expired at the next height, nonce not used, room for it. A bundle already included is reported as
    /// such (submissions are idempotent).
    pub fn admit(&mut self, hash: Hash, bundle: Bundle) -> Result<Admission, ConsensusError> {
        if self.store.inclusion(&hash)?.is_some() {
            return Ok(Admission::AlreadyIncluded);
        }
        check_bundle(&bundle, &self.spec)?;
        let next_height = self.next_height();
        if bundle.expiry_height < next_height {
            return Err(BundleError::Expired {
                expiry_height: bundle.expiry_height,
                height: next_height,
            }
            .into());
        }
        let next_nonce = self.store.next_nonce(&bundle.sender)?;
        self.mempool
            .insert(hash, bundle, next_nonce, self.clock.now_ms())
    }

    /// [`Host::admit`] for a client's submission, refused while the chain is behind: when the oldest bundle ready
    /// for a block has waited more than `admit_max_wait_ms` ([`ConsensusError::Backlogged`]), so that overload
    /// sheds offered load at the edge instead of growing a backlog that every admitted bundle waits behind.
    /// Bundles from peers skip this (they were admitted by the node they entered).
    pub fn admit_submission(
        &mut self,
        hash: Hash,
        bundle: Bundle,
    ) -> Result<Admission, ConsensusError> {
        if !self.mempool.contains(&hash) {
            backlogged(
                self.mempool.oldest_ready_ms(),
                self.clock.now_ms(),
                self.limits.admit_max_wait_ms,
            )?;
        }
        self.admit(hash, bundle)
    }

    /// The sender's next nonce on chain and the first one its pending bundles leave free.
    pub fn nonces(&self, sender: &Sender) -> Result<(u64, u64), ConsensusError> {
        let chain = self.store.next_nonce(sender)?;
        Ok((chain, self.mempool.next_free_nonce(sender, chain)))
    }

    /// When the proposer of the next height should build (clock milliseconds), in round `round`: at once if the
    /// mempool already fills a block; `block_time_ms` after the parent if there is anything to include (a ready
    /// bundle, evidence, an owed forced entry) or the round is not the first; otherwise `max_idle_ms` after the
    /// parent. A bundle admitted while the proposer waits moves the deadline forward ([`Host::has_work`]).
    pub fn proposal_deadline_ms(&self, round: u32) -> u64 {
        let params = &self.spec.params;
        // Bundles waiting on a nonce gap count towards a full mempool but not towards a block: without a ready one
        // there is no reason to hurry.
        if self.mempool.has_ready()
            && self
                .mempool
                .fills_block(params.max_block_bytes, params.max_block_bundles as usize)
        {
            return 0;
        }
        let wait = if round > 0 || self.has_work() || self.forced_owed() {
            params.block_time_ms
        } else {
            params.max_idle_ms
        };
        self.tip.as_ref().map_or(0, |t| t.timestamp_ms + wait)
    }

    /// For a proposer waiting in round `round`: once a block would carry something ([`Host::has_work`]), when to
    /// propose instead of the idle deadline; `None` while there is nothing. Constant time when idle: the loop asks
    /// after every admission and every peer message.
    pub fn hurried_deadline_ms(&self, round: u32) -> Option<u64> {
        self.has_work().then(|| self.proposal_deadline_ms(round))
    }

    /// Whether a block now would carry something: a ready bundle in the mempool or evidence to report. Cheap
    /// enough to ask after every admission.
    pub fn has_work(&self) -> bool {
        self.mempool.has_ready() || !self.pending_evidence.is_empty()
    }

    /// Whether the L1 inbox has forced entries that a block proposed now would owe.
    fn forced_owed(&self) -> bool {
        let Some(l1) = &self.l1 else {
            return false;
        };
        let due = l1.forced_due(self.proposal_origin().number);
        if due.is_empty() {
            return false;
        }
        let view = HostView {
            store: &self.store,
            mempool: &self.mempool,
            verified: &self.verified,
            side: &self.side,
        };
        !owed_forced(&due, self.next_height(), &self.spec.params, &view).is_empty()
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A new round started: returns the undecided values already known for it (after a crash, or received
    /// before the height started), validating early arrivals now that the parent is known.
    pub fn started_round(
        &mut self,
        height: u64,
        round: u32,
    ) -> Result<Vec<ProposedValue<BatonContext>>, ConsensusError> {
        self.current = height;
        self.future.retain(|h, _| *h >= height);
        if let Some(early) = self.future.remove(&height) {
            let rotation = self.height_validators();
            for a in early {
                if height != self.next_height()
                    || rotation.proposer(height, a.round).address != a.proposer
                {
                    warn!(height, round = a.round, proposer = %a.proposer, "early proposal from a validator that is not the proposer; dropping");
                    continue;
                }
                let mut block = a.block;
                let valid = self.judge(&mut block, &a.hashes, height, false);
                let p = UndecidedProposal {
                    round: a.round,
                    valid_round: a.pol_round.as_u32(),
                    proposer: a.proposer,
                    valid,
                    block,
                };
                self.record(height, &p)?;
            }
        }
        Ok(self
            .store
            .undecided(height)?
            .into_iter()
            .filter(|p| p.round == round)
            .map(|p| proposed_value(height, &p))
            .collect())
    }

    /// Validates `block` (whose bundle hashes are `hashes`) for `height`. Signatures of a valid block are
    /// remembered, so the same bundles re-proposed in a later round are not recovered again. A `certified` block
    /// (synced with its certificate) skips the L1 rules ([`Certified`]).
    ///
    /// The next height's validator set is computed here (an epoch's last block, [`Host::next_validators`]) and
    /// put in `block.next_validators` when it differs from this height's; a certified block brings its own, which
    /// must match its header.
    fn judge(&mut self, block: &mut Block, hashes: &[Hash], height: u64, certified: bool) -> bool {
        let mut ctx = self.block_context(height, block.header.round);
        let next = if certified {
            self.carried_next_set(block)
        } else {
            self.next_validators(height, &block.header.l1_origin)
        };
        match next.and_then(|set| self.check_evidence(block).map(|()| set)) {
            Ok(set) => ctx.next_validators = set,
            Err(e) => {
                warn!(height, block = %block.hash(), error = %e, "invalid proposal");
                self.stats.invalid_proposals += 1;
                return false;
            }
        }
        let now = self.clock.now_ms();
        let view = HostView {
            store: &self.store,
            mempool: &self.mempool,
            verified: &self.verified,
            side: &self.side,
        };
        match validate_block(
            block,
            hashes,
            &ctx,
            &self.spec,
            &view,
            match &self.l1 {
                Some(_) if certified => Some(&Certified),
                l1 => l1.as_deref(),
            },
            now,
        ) {
            Ok(v) => {
                debug!(
                    height,
                    bundles = hashes.len(),
                    recovered = v.signatures_checked,
                    "valid proposal"
                );
                block.next_validators = (ctx.next_validators.hash() != ctx.validator_set_hash)
                    .then_some(ctx.next_validators);
                self.stats.signatures_recovered += v.signatures_checked as u64;
                self.known_hashes.insert(block.hash(), hashes.to_vec());
                for (b, h) in block.bundles.iter().zip(hashes) {
                    if !self.mempool.contains(h) {
                        self.verified.insert(*h, b.signature);
                    }
                }
                true
            }
            Err(e) => {
                warn!(height, block = %block.hash(), error = %e, "invalid proposal");
                self.stats.invalid_proposals += 1;
                false
            }
        }
    }

    /// Builds (or, after a restart, rebuilds from disk) this node's proposal for `(height, round)` and returns the
    /// value with the proposal parts to publish.
    pub fn propose(
        &mut self,
        height: u64,
        round: u32,
    ) -> Result<(Value, Vec<ProposalPart>), ConsensusError> {
        let me = self
            .address()
            .ok_or_else(|| ConsensusError::Storage("a full node cannot propose".into()))?;
        let existing = self
            .store
            .undecided(height)?
            .into_iter()
            .find(|p| p.round == round && p.proposer == me);
        let block = match existing {
            Some(p) => p.block,
            None => {
                let mut ctx = self.block_context(height, round);
                match self.next_validators(height, &ctx.l1_origin) {
                    Ok(set) => ctx.next_validators = set,
                    // Validators will refuse this block as well; the round moves on.
                    Err(e) => warn!(height, error = %e, "cannot compute the next epoch's set"),
                }
                ctx.evidence = self
                    .pending_evidence
                    .iter()
                    .filter(|e| carriable(e.height, height))
                    .take(MAX_EVIDENCE_PER_BLOCK)
                    .cloned()
                    .collect();
                let (hashes, bundles) = self.select(&ctx);
                let block =
                    build_block(&ctx, &self.spec, me, self.clock.now_ms(), bundles, &hashes);
                self.known_hashes.insert(block.hash(), hashes);
                let p = UndecidedProposal {
                    round,
                    valid_round: None,
                    proposer: me,
                    valid: true,
                    block,
                };
                self.store.put_undecided(height, &p)?;
                p.block
            }
        };
        debug!(height, round, bundles = block.bundles.len(), hash = %block.hash(), "proposing");
        let hashes = self.hashes_of(&block);
        let parts = self.parts_for(&block, &hashes, round, Round::Nil)?;
        Ok((Value(block.hash()), parts))
    }

    /// The bundles of a new block: the forced entries its origin makes owed, first, then the mempool's pick within
    /// what is left of the limits (without the owed senders' other bundles, whose nonces the owed ones take).
    /// Owed bundles are kept aside so that validators missing them can ask for them.
    fn select(&mut self, ctx: &BlockContext) -> (Vec<Hash>, Vec<Bundle>) {
        let params = &self.spec.params;
        let due = match &self.l1 {
            Some(l1) => l1.forced_due(ctx.l1_origin.number),
            None => Vec::new(),
        };
        let view = HostView {
            store: &self.store,
            mempool: &self.mempool,
            verified: &self.verified,
            side: &self.side,
        };
        let owed: Vec<ForcedBundle> = owed_forced(&due, ctx.height, params, &view)
            .into_iter()
            .cloned()
            .collect();
        let owed_bytes: u64 = owed.iter().map(|f| f.bundle.encoded_len() as u64).sum();
        let senders: HashSet<Sender> = owed.iter().map(|f| f.bundle.sender).collect();
        let owed_hashes: HashSet<Hash> = owed.iter().map(|f| f.hash).collect();
        let picked = self.mempool.select(
            params.max_block_bytes.saturating_sub(owed_bytes),
            (params.max_block_bundles as usize).saturating_sub(owed.len()),
        );
        let mut hashes = Vec::with_capacity(owed.len() + picked.len());
        let mut bundles = Vec::with_capacity(owed.len() + picked.len());
        if !owed.is_empty() {
            debug!(
                height = ctx.height,
                owed = owed.len(),
                "including overdue forced entries"
            );
        }
        for f in owed {
            hashes.push(f.hash);
            bundles.push(f.bundle.clone());
            self.keep_aside(f.hash, f.bundle);
        }
        for (h, b) in picked {
            if !senders.contains(&b.sender) && !owed_hashes.contains(&h) {
                hashes.push(h);
                bundles.push(b);
            }
        }
        (hashes, bundles)
    }

    /// Parts to re-publish a known value (the engine asks when it re-proposes a locked value).
    pub fn restream(
        &self,
        height: u64,
        round: u32,
        valid_round: Round,
        value_id: &Hash,
    ) -> Result<Option<Vec<ProposalPart>>, ConsensusError> {
        let found = self
            .store
            .undecided(height)?
            .into_iter()
            .find(|p| p.block.hash() == *value_id);
        match found {
            Some(p) => {
                let hashes = self.hashes_of(&p.block);
                Ok(Some(self.parts_for(
                    &p.block,
                    &hashes,
                    round,
                    valid_round,
                )?))
            }
            None => Ok(None),
        }
    }

    /// The block's bundle hashes, from the cache when this node built or judged it.
    fn hashes_of(&self, block: &Block) -> Vec<Hash> {
        self.known_hashes
            .get(&block.hash())
            .cloned()
            .unwrap_or_else(|| bundle_hashes(block))
    }

    fn parts_for(
        &self,
        block: &Block,
        hashes: &[Hash],
        round: u32,
        pol_round: Round,
    ) -> Result<Vec<ProposalPart>, ConsensusError> {
        let signer = self
            .signer
            .as_ref()
            .ok_or_else(|| ConsensusError::Storage("no signing key".into()))?;
        let height = block.height();
        let mut parts = vec![ProposalPart::Init {
            height: Height(height),
            round: Round::new(round),
            pol_round,
            proposer: signer.address(),
            header: Box::new(block.header.clone()),
        }];
        if !block.evidence.is_empty() {
            parts.push(ProposalPart::Evidence {
                items: block.evidence.clone(),
            });
        }
        if self.limits.compact_proposals {
            let per_part = (self.limits.part_bytes / 32).max(1);
            for chunk in hashes.chunks(per_part) {
                parts.push(ProposalPart::Refs {
                    hashes: chunk.to_vec(),
                });
            }
        } else {
            parts.extend(
                chunk_bundles(&block.bundles, self.limits.part_bytes)
                    .into_iter()
                    .map(|bundles| ProposalPart::Data { bundles }),
            );
        }
        let signature = signer.sign(&self.domain.parts_bytes(height, round, &block.hash()));
        parts.push(ProposalPart::Fin { signature });
        Ok(parts)
    }

    /// Takes in one part of a streamed proposal. `publisher` and `stream_id` identify the stream; `part` is `None`
    /// for the end-of-stream marker. Returns the proposed value once a stream for the current height completes.
    pub fn on_part(
        &mut self,
        publisher: &[u8],
        stream_id: &[u8],
        seq: u64,
        part: Option<ProposalPart>,
    ) -> Result<Option<ProposedValue<BatonContext>>, ConsensusError> {
        // Bound what one stream can hold: a full block plus Init, evidence and Fin, split into parts no smaller than one
        // bundle.
        let max_parts = self.spec.params.max_block_bundles as u64 + 4;
        let max_bytes = self.spec.params.max_block_bytes as usize + 64 * 1024;
        if seq > max_parts {
            warn!(seq, "proposal part sequence number out of range; dropping");
            return Ok(None);
        }
        let key = (publisher.to_vec(), stream_id.to_vec());
        if !self.streams.contains_key(&key) {
            if self.streams.len() >= self.limits.max_streams {
                if let Some(old) = self.stream_order.pop_front() {
                    self.streams.remove(&old);
                }
            }
            self.stream_order.push_back(key.clone());
        }
        let stream = self.streams.entry(key.clone()).or_default();
        match part {
            Some(p) => {
                stream.bytes += p.size();
                stream.parts.insert(seq, p);
            }
            None => stream.fin_seq = Some(seq),
        }
        if stream.bytes > max_bytes {
            warn!("proposal stream exceeds the block size limit; dropping it");
            self.drop_stream(&key);
            return Ok(None);
        }
        let complete = matches!(stream.fin_seq, Some(n) if stream.parts.len() as u64 == n);
        if !complete {
            return Ok(None);
        }
        let Some(stream) = self.drop_stream(&key) else {
            return Ok(None);
        };
        let value = self.assemble(stream)?;
        Ok(value.or_else(|| self.ready.pop_front()))
    }

    /// Pending bundles to disseminate again: those this node has held for `after_ms` without any block including
    /// them (at most `max`, oldest first), each one again after twice as long as the time before (up to 32 ×
    /// `after_ms`). Dissemination is sent once to the peers connected at the time; a bundle admitted while its
    /// node was cut off, or whose message was lost, would otherwise reach a block only when that node proposes.
    /// Peers that have it already drop the copy without checking its signature again.
    pub fn reannounce(&mut self, after_ms: u64, max: usize) -> Vec<Bundle> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for (h, b) in self.mempool.iter() {
            if out.len() >= max {
                break;
            }
            let (last, times) = self.announced.entry(*h).or_insert((now, 0));
            let wait = after_ms.saturating_mul(1 << (*times).min(5));
            if now.saturating_sub(*last) >= wait {
                *last = now;
                *times += 1;
                out.push(b.clone());
            }
        }
        if self.announced.len() > 2 * self.mempool.len() + 1024 {
            let mempool = &self.mempool;
            self.announced.retain(|h, _| mempool.contains(h));
        }
        out
    }

    /// Messages to publish on the proposal-parts channel (asks for missing bundles, answers to asks).
    pub fn take_outbox(&mut self) -> Vec<ProposalPart> {
        std::mem::take(&mut self.outbox)
    }

    /// Takes in bundles a peer disseminated, already checked by the caller (limits, network, signature): admits
    /// what the mempool accepts, keeps the rest aside for proposals that may refer to them, and completes parked
    /// proposals. Returns a value for the engine if one completed.
    pub fn on_gossip(
        &mut self,
        bundles: Vec<(Hash, Bundle)>,
    ) -> Result<Option<ProposedValue<BatonContext>>, ConsensusError> {
        for (hash, bundle) in bundles {
            if self.mempool.contains(&hash) || self.side.contains_key(&hash) {
                continue;
            }
            match self.admit(hash, bundle.clone()) {
                Ok(_) => {}
                Err(ConsensusError::Storage(e)) => return Err(ConsensusError::Storage(e)),
                Err(_) => self.keep_aside(hash, bundle),
            }
        }
        self.resolve_parked()?;
        Ok(self.ready.pop_front())
    }

    fn keep_aside(&mut self, hash: Hash, bundle: Bundle) {
        if self.limits.side_cache == 0 {
            return;
        }
        while self.side_order.len() >= self.limits.side_cache {
            if let Some(old) = self.side_order.pop_front() {
                self.side.remove(&old);
            }
        }
        if self.side.insert(hash, bundle).is_none() {
            self.side_order.push_back(hash);
        }
    }

    fn find_bundle(&self, hash: &Hash) -> Option<Bundle> {
        self.mempool
            .get(hash)
            .or_else(|| self.side.get(hash))
            .cloned()
    }

    /// A validator asks the proposer for bundles it lacks. Only the named proposer answers (it holds every bundle
    /// of its proposal), so one ask costs one answer however many validators see it.
    pub fn on_want(
        &mut self,
        proposer: Address,
        height: u64,
        hashes: &[Hash],
    ) -> Result<(), ConsensusError> {
        if self.address() != Some(proposer)
            || hashes.len() > self.spec.params.max_block_bundles as usize
        {
            return Ok(());
        }
        let wanted: HashSet<&Hash> = hashes.iter().collect();
        let mut found: Vec<Bundle> = Vec::new();
        let mut missing: Vec<&Hash> = Vec::new();
        for h in hashes {
            match self.find_bundle(h) {
                Some(b) => found.push(b),
                None => missing.push(h),
            }
        }
        if !missing.is_empty() {
            // Bundles of an undecided proposal that already left the mempool (a restream after a restart).
            for p in self.store.undecided(height)? {
                for b in p.block.bundles {
                    let h = b.hash();
                    if wanted.contains(&h) && missing.contains(&&h) {
                        missing.retain(|m| **m != h);
                        found.push(b);
                    }
                }
            }
        }
        debug!(
            height,
            asked = hashes.len(),
            found = found.len(),
            "answering a want"
        );
        for bundles in chunk_bundles(&found, self.limits.part_bytes) {
            self.outbox.push(ProposalPart::Bundles { bundles });
        }
        Ok(())
    }

    /// Completes parked proposals whose bundles have all arrived; asks again for what is still missing.
    fn resolve_parked(&mut self) -> Result<(), ConsensusError> {
        let now = self.clock.now_ms();
        let mut i = 0;
        while i < self.parked.len() {
            let mut complete = true;
            let mut missing = Vec::new();
            for k in 0..self.parked[i].hashes.len() {
                if self.parked[i].bundles[k].is_none() {
                    let h = self.parked[i].hashes[k];
                    match self.find_bundle(&h) {
                        Some(b) => self.parked[i].bundles[k] = Some(b),
                        None => {
                            complete = false;
                            missing.push(h);
                        }
                    }
                }
            }
            if complete {
                let p = self.parked.swap_remove(i);
                let bundles: Vec<Bundle> = p.bundles.into_iter().flatten().collect();
                let block = Block {
                    header: p.header,
                    bundles,
                    next_validators: None,
                    evidence: p.evidence,
                };
                if let Some(v) =
                    self.finish(p.height, p.round, p.pol_round, p.proposer, block, p.hashes)?
                {
                    self.ready.push_back(v);
                }
                continue;
            }
            if now.saturating_sub(self.parked[i].asked_at_ms) >= REASK_MS {
                self.parked[i].asked_at_ms = now;
                self.outbox.push(ProposalPart::Want {
                    proposer: self.parked[i].proposer,
                    height: self.parked[i].height,
                    hashes: missing,
                });
            }
            i += 1;
        }
        Ok(())
    }

    fn drop_stream(&mut self, key: &(Vec<u8>, Vec<u8>)) -> Option<PartStream> {
        self.stream_order.retain(|k| k != key);
        self.streams.remove(key)
    }

    fn assemble(
        &mut self,
        stream: PartStream,
    ) -> Result<Option<ProposedValue<BatonContext>>, ConsensusError> {
        let mut parts = stream.parts.into_values();
        let Some(ProposalPart::Init {
            height,
            round,
            pol_round,
            proposer,
            header,
        }) = parts.next()
        else {
            warn!("proposal stream does not start with Init; dropping");
            return Ok(None);
        };
        let mut items = Vec::new();
        let mut evidence = Vec::new();
        let mut signature: Option<Signature> = None;
        for p in parts {
            match p {
                ProposalPart::Evidence { items: e }
                    if signature.is_none()
                        && evidence.is_empty()
                        && e.len() <= MAX_EVIDENCE_PER_BLOCK =>
                {
                    evidence = e
                }
                ProposalPart::Data { bundles: b } if signature.is_none() => {
                    items.extend(b.into_iter().map(Item::Full))
                }
                ProposalPart::Refs { hashes } if signature.is_none() => {
                    items.extend(hashes.into_iter().map(Item::Ref))
                }
                ProposalPart::Fin { signature: s } if signature.is_none() => signature = Some(s),
                _ => {
                    warn!("malformed proposal stream (parts after Fin, a second Init, or dissemination); dropping");
                    return Ok(None);
                }
            }
        }
        let (Some(signature), Some(round_n)) = (signature, round.as_u32()) else {
            warn!("proposal stream without Fin or with a nil round; dropping");
            return Ok(None);
        };
        let height = height.0;
        // The proposer of a round depends on the parent's bench, known once the parent is decided; an early
        // proposal is checked against the rotation when its height starts (`started_round`).
        let expected = if height == self.next_height() {
            let expected = self.height_validators().proposer(height, round_n).clone();
            if expected.address != proposer {
                warn!(height, round = round_n, %proposer, "proposal parts from a validator that is not the proposer");
                return Ok(None);
            }
            expected
        } else if let Some(v) = self.validators.get(&proposer) {
            v.clone()
        } else {
            warn!(height, round = round_n, %proposer, "proposal parts from a validator outside the set");
            return Ok(None);
        };
        // A fresh block is built for the round it is proposed in; a re-proposed one was built no later than the
        // round it was locked in.
        let round_ok = match pol_round.as_u32() {
            None => header.round == round_n,
            Some(vr) => header.round <= vr,
        };
        if !round_ok {
            warn!(
                height,
                round = round_n,
                built = header.round,
                "proposal with a header round that does not fit; dropping"
            );
            return Ok(None);
        }
        let hash = header.hash();
        if !verify_signature(
            &expected.public_key,
            &self.domain.parts_bytes(height, round_n, &hash),
            &signature,
        ) {
            warn!(
                height,
                round = round_n,
                "proposal parts with a bad signature; dropping"
            );
            return Ok(None);
        }
        // The value id is the header hash, and the header commits to the body only through `bundles_root`. A body
        // that does not match it is not the block the proposer signed (damaged or altered on the way): drop it
        // rather than judge the value id invalid, which would count against the real block.
        let hashes: Vec<Hash> = items
            .iter()
            .map(|i| match i {
                Item::Full(b) => b.hash(),
                Item::Ref(h) => *h,
            })
            .collect();
        if header.bundle_count as usize != hashes.len()
            || crate::types::bundles_root(&hashes) != header.bundles_root
            || crate::evidence::evidence_root(&evidence) != header.evidence_root
        {
            warn!(
                height,
                round = round_n,
                "proposal body does not match its header; dropping"
            );
            return Ok(None);
        }
        if height < self.current {
            return Ok(None);
        }
        let mut bundles: Vec<Option<Bundle>> = Vec::with_capacity(items.len());
        let mut missing = Vec::new();
        for (item, h) in items.into_iter().zip(&hashes) {
            match item {
                Item::Full(b) => bundles.push(Some(b)),
                Item::Ref(_) => {
                    let found = self.find_bundle(h);
                    if found.is_none() {
                        missing.push(*h);
                    }
                    bundles.push(found);
                }
            }
        }
        if !missing.is_empty() {
            debug!(
                height,
                round = round_n,
                missing = missing.len(),
                "proposal refers to bundles not held here; asking"
            );
            if self.parked.len() >= self.limits.max_parked {
                self.parked.remove(0);
            }
            self.outbox.push(ProposalPart::Want {
                proposer,
                height,
                hashes: missing,
            });
            self.parked.push(Parked {
                height,
                round: round_n,
                pol_round,
                proposer,
                header: *header,
                hashes,
                bundles,
                evidence,
                asked_at_ms: self.clock.now_ms(),
            });
            return Ok(None);
        }
        let block = Block {
            header: *header,
            bundles: bundles.into_iter().flatten().collect(),
            next_validators: None,
            evidence,
        };
        self.finish(height, round_n, pol_round, proposer, block, hashes)
    }

    /// A complete, signed proposal: keep it for later if its height has not started, else judge and record it.
    fn finish(
        &mut self,
        height: u64,
        round_n: u32,
        pol_round: Round,
        proposer: Address,
        block: Block,
        hashes: Vec<Hash>,
    ) -> Result<Option<ProposedValue<BatonContext>>, ConsensusError> {
        if height < self.current {
            return Ok(None);
        }
        if height > self.current {
            if height <= self.current + self.limits.future_heights {
                let list = self.future.entry(height).or_default();
                if list.len() < 16 {
                    list.push(Assembled {
                        round: round_n,
                        pol_round,
                        proposer,
                        block,
                        hashes,
                    });
                }
            }
            return Ok(None);
        }
        let mut block = block;
        let valid = self.judge(&mut block, &hashes, height, false);
        let p = UndecidedProposal {
            round: round_n,
            valid_round: pol_round.as_u32(),
            proposer,
            valid,
            block,
        };
        self.record(height, &p)?;
        Ok(Some(proposed_value(height, &p)))
    }

    /// Commits a decision. Returns the decided block.
    pub fn decided(&mut self, cert: Certificate) -> Result<Block, ConsensusError> {
        let height = cert.height;
        let mut found: Vec<UndecidedProposal> = self
            .store
            .undecided(height)?
            .into_iter()
            .filter(|p| p.block.hash() == cert.block_hash)
            .collect();
        // A copy judged valid here carries the next set this node computed; a carried set must match the header.
        found.sort_by_key(|p| !p.valid);
        let current = self.validators.hash();
        let carries_named_set = |b: &Block| self.check_carried_set(b).is_ok();
        let mut block = found
            .into_iter()
            .map(|p| p.block)
            .reduce(|best, b| {
                if !carries_named_set(&best) && carries_named_set(&b) {
                    b
                } else {
                    best
                }
            })
            .ok_or(ConsensusError::UnknownBlock(cert.block_hash))?;
        if !carries_named_set(&block) {
            block.next_validators = None;
        }
        if block.header.next_validator_set_hash != current && block.next_validators.is_none() {
            // Decided by the others while this node could not judge it (its L1 view was behind): compute the set
            // now, or take the block with its set through sync.
            match self.next_validators(height, &block.header.l1_origin) {
                Ok(set) if set.hash() == block.header.next_validator_set_hash => {
                    block.next_validators = Some(set)
                }
                _ => return Err(ConsensusError::UnknownBlock(cert.block_hash)),
            }
        }
        let hashes = self
            .known_hashes
            .remove(&cert.block_hash)
            .unwrap_or_else(|| bundle_hashes(&block));
        let batches = batches_of(&block.bundles, &hashes);
        let table = namespace_table(self.spec.rollups.ids(), &batches);
        self.store
            .commit(&block, &hashes, &batches, &table, &cert)?;
        let done: Vec<(Hash, Sender, u64)> = block
            .bundles
            .iter()
            .zip(&hashes)
            .map(|(b, h)| (*h, b.sender, b.nonce))
            .collect();
        if let Some(l1) = &self.l1 {
            l1.included(&hashes);
        }
        let dropped = self.mempool.on_decided(height, &done);
        for (_, d) in &dropped {
            match d {
                crate::types::Dropped::Expired { .. } => self.stats.dropped_expired += 1,
                crate::types::Dropped::Rejected { .. } => self.stats.dropped_rejected += 1,
            }
        }
        if !dropped.is_empty() {
            debug!(
                height,
                dropped = dropped.len(),
                "pending bundles expired or lost their nonce"
            );
            self.store.record_dropped(&dropped)?;
        }
        self.verified.clear();
        self.known_hashes.clear();
        self.parked.retain(|p| p.height > height);
        for e in &block.evidence {
            warn!(validator = %e.validator, height = e.height, included_at = height, "evidence of equivocation decided; the validator is jailed");
            self.included_evidence.insert(e.hash());
            self.jailed.insert(e.validator);
        }
        // Evidence leaves the queue once in the chain or too old to carry (it would keep idle heights busy).
        let included = &self.included_evidence;
        self.pending_evidence
            .retain(|e| !included.contains(&e.hash()) && carriable(e.height, height + 1));
        if let Some(set) = &block.next_validators {
            info!(
                height = height + 1,
                validators = set.validators().len(),
                power = set.total_power(),
                set = %set.hash(),
                "new validator set"
            );
            self.validators = set.clone();
        }
        self.tip = Some(block.header.clone());
        self.current = height + 1;
        self.future.retain(|h, _| *h > height);
        Ok(block)
    }

    /// Stores a judged proposal, unless it is an invalid copy of a block already stored as valid for that round (a
    /// forged sync copy must not replace the good one: the hash does not cover the carried next set).
    fn record(&self, height: u64, p: &UndecidedProposal) -> Result<(), ConsensusError> {
        if !p.valid
            && self
                .store
                .undecided(height)?
                .iter()
                .any(|q| q.valid && q.round == p.round && q.block.hash() == p.block.hash())
        {
            return Ok(());
        }
        self.store.put_undecided(height, p)
    }

    /// A decided block with its certificate, for peers that sync from us.
    pub fn decided_value(
        &self,
        height: u64,
    ) -> Result<Option<(Certificate, Block)>, ConsensusError> {
        match (self.store.certificate(height)?, self.store.block(height)?) {
            (Some(c), Some(b)) => Ok(Some((c, b))),
            _ => Ok(None),
        }
    }

    /// Judges a block received through value sync (its certificate is checked by the engine).
    pub fn synced_value(
        &mut self,
        height: u64,
        round: u32,
        proposer: Address,
        bytes: &[u8],
    ) -> Result<SyncVerdict, ConsensusError> {
        let Ok(mut block) = Block::decode(bytes) else {
            return Ok(SyncVerdict::PeerFault);
        };
        if height != self.next_height() || block.height() != height {
            return Ok(SyncVerdict::NotNow);
        }
        // Certified by more than 2/3 of the set: its L1 origin was checked when it was decided, and this node's
        // own L1 view (catching up, or moved on) is no judge of it now.
        let hashes = bundle_hashes(&block);
        let valid = self.judge(&mut block, &hashes, height, true);
        let p = UndecidedProposal {
            round,
            valid_round: None,
            proposer,
            valid,
            block,
        };
        self.record(height, &p)?;
        Ok(SyncVerdict::Verdict(proposed_value(height, &p)))
    }
}

/// The chain as block validation sees it from a host.
struct HostView<'a, S> {
    store: &'a S,
    mempool: &'a Mempool,
    verified: &'a HashMap<Hash, [u8; 65]>,
    side: &'a HashMap<Hash, Bundle>,
}

impl<S: ChainStore> ChainView for HostView<'_, S> {
    fn is_included(&self, bundle: &Hash) -> bool {
        self.store.inclusion(bundle).ok().flatten().is_some()
    }

    fn next_nonce(&self, sender: &Sender) -> u64 {
        self.store.next_nonce(sender).unwrap_or(0)
    }

    fn signature_checked(&self, bundle: &Hash, signature: &[u8; 65]) -> bool {
        self.mempool.get(bundle).map(|b| &b.signature) == Some(signature)
            || self.side.get(bundle).map(|b| &b.signature) == Some(signature)
            || self.verified.get(bundle) == Some(signature)
    }
}

/// Splits bundles into runs of at most `max_bytes` encoded bytes (a bundle larger than that gets a run of its own).
pub fn chunk_bundles(bundles: &[Bundle], max_bytes: usize) -> Vec<Vec<Bundle>> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut chunk_bytes = 0;
    for b in bundles {
        let len = b.encoded_len();
        if !chunk.is_empty() && chunk_bytes + len > max_bytes {
            out.push(std::mem::take(&mut chunk));
            chunk_bytes = 0;
        }
        chunk_bytes += len;
        chunk.push(b.clone());
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}

fn proposed_value(height: u64, p: &UndecidedProposal) -> ProposedValue<BatonContext> {
    ProposedValue {
        height: Height(height),
        round: Round::new(p.round),
        valid_round: p.valid_round.map_or(Round::Nil, Round::new),
        proposer: p.proposer,
        value: Value(p.block.hash()),
        validity: if p.valid {
            Validity::Valid
        } else {
            Validity::Invalid
        },
    }
}

/// Converts the engine's commit certificate into Baton's.
pub fn certificate_from_engine(c: &CommitCertificate<BatonContext>) -> Certificate {
    Certificate {
        height: c.height.0,
        round: round_u32(c.round),
        block_hash: c.value_id,
        signatures: c
            .commit_signatures
            .iter()
            .map(|s| (s.address, s.signature.0))
            .collect(),
    }
}

/// Converts Baton's certificate into the engine's.
pub fn certificate_to_engine(c: &Certificate) -> CommitCertificate<BatonContext> {
    CommitCertificate {
        height: Height(c.height),
        round: Round::new(c.round),
        value_id: c.block_hash,
        commit_signatures: c
            .signatures
            .iter()
            .map(|(a, s)| CommitSignature::new(*a, Signature(*s)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use ed25519_consensus::SigningKey;
    use std::sync::Arc;

    struct Net {
        keys: Vec<SigningKey>,
        vs: ValidatorSet,
        domain: ChainDomain,
        clock: Arc<ManualClock>,
    }

    impl Net {
        fn new(n: u8) -> Self {
            let keys: Vec<SigningKey> = (0..n).map(|i| SigningKey::from([i + 1; 32])).collect();
            let vs = ValidatorSet::new(
                keys.iter()
                    .map(|k| crate::context::Validator::new(k.verification_key(), 1))
                    .collect(),
            )
            .unwrap();
            Net {
                keys,
                vs,
                domain: ChainDomain::new("test"),
                clock: Arc::new(ManualClock::new(1_000_000)),
            }
        }

        fn other_than(&self, not: &[Address]) -> Address {
            self.vs
                .validators()
                .iter()
                .map(|v| v.address)
                .find(|a| !not.contains(a))
                .unwrap()
        }

        fn host(&self, who: Address, store: MemStore) -> Host<MemStore, Arc<ManualClock>> {
            self.host_with(who, store, HostLimits::default())
        }

        fn host_with(
            &self,
            who: Address,
            store: MemStore,
            limits: HostLimits,
        ) -> Host<MemStore, Arc<ManualClock>> {
            let key = self
                .keys
                .iter()
                .find(|k| Address::from_public_key_bytes(k.verification_key().as_bytes()) == who)
                .unwrap()
                .clone();
            Host::new(
                self.domain,
                Hash::digest(&[b"genesis"]),
                Some(ConsensusSigner::new(key, self.domain)),
                self.vs.clone(),
                ChainSpec::for_tests(7, 4),
                limits,
                store,
                self.clock.clone(),
            )
            .unwrap()
        }
    }

    fn bundle(n: u8) -> Bundle {
        crate::bundle::testing::bundle(n, 0, &[1, 2], n)
    }

    fn deliver(
        to: &mut Host<MemStore, Arc<ManualClock>>,
        parts: &[ProposalPart],
        publisher: &[u8],
    ) -> Option<ProposedValue<BatonContext>> {
        let mut out = None;
        for (i, p) in parts.iter().enumerate() {
            out = to
                .on_part(publisher, b"s", i as u64, Some(p.clone()))
                .unwrap();
            assert!(out.is_none(), "complete before Fin");
        }
        to.on_part(publisher, b"s", parts.len() as u64, None)
            .unwrap()
            .or(out)
    }

    fn cert(height: u64, round: u32, hash: Hash) -> Certificate {
        Certificate {
            height,
            round,
            block_hash: hash,
            signatures: vec![],
        }
    }

    #[test]
    fn pending_bundles_are_announced_again_after_a_while() {
        let net = Net::new(4);
        let me = net.vs.proposer(1, 0).address;
        let mut h = net.host(me, MemStore::default());
        for n in 0..3 {
            h.admit(bundle(n).hash(), bundle(n)).unwrap();
        }
        assert!(h.reannounce(2_000, 10).is_empty(), "just admitted");
        net.clock.advance(1_999);
        assert!(h.reannounce(2_000, 10).is_empty());
        net.clock.advance(1);
        let again = h.reannounce(2_000, 2);
        assert_eq!(
            again,
            vec![bundle(0), bundle(1)],
            "oldest first, at most max"
        );
        assert_eq!(h.reannounce(2_000, 10), vec![bundle(2)]);
        assert!(h.reannounce(2_000, 10).is_empty(), "each once per period");
        // The next time after twice as long.
        net.clock.advance(2_000);
        assert!(h.reannounce(2_000, 10).is_empty());
        net.clock.advance(2_000);
        assert_eq!(h.reannounce(2_000, 10).len(), 3);
        // Once included, never again.
        h.started_round(1, 0).unwrap();
        let (value, _) = h.propose(1, 0).unwrap();
        h.decided(cert(1, 0, value.0)).unwrap();
        net.clock.advance(5_000);
        assert!(h.reannounce(2_000, 10).is_empty());
    }

    #[test]
    fn propose_receive_decide_and_restart() {
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let other = net.other_than(&[proposer]);
        let store_p = MemStore::default();
        let store_o = MemStore::default();
        let mut p = net.host(proposer, store_p.clone());
        let mut o = net.host(other, store_o.clone());

        for n in 0..3 {
            store_p.add_pending(bundle(n));
            p.admit(bundle(n).hash(), bundle(n)).unwrap();
        }
        // Dissemination: the other validator holds the bundles before the (compact) proposal arrives.
        let gossip: Vec<(Hash, Bundle)> = (0..3).map(|n| (bundle(n).hash(), bundle(n))).collect();
        assert!(o.on_gossip(gossip).unwrap().is_none());
        assert_eq!(o.mempool().len(), 3);
        assert_eq!(p.started_round(1, 0).unwrap().len(), 0);
        assert_eq!(o.started_round(1, 0).unwrap().len(), 0);
        net.clock.advance(10);
        let (value, parts) = p.propose(1, 0).unwrap();
        let pv = deliver(&mut o, &parts, b"peer-p").expect("complete proposal");
        assert_eq!(pv.value, value);
        assert_eq!(pv.validity, Validity::Valid);

        // Both decide; the proposer's mempool empties; bundle inclusion is recorded.
        let b1 = p.decided(cert(1, 0, value.0)).unwrap();
        let b2 = o.decided(cert(1, 0, value.0)).unwrap();
        assert_eq!(b1, b2);
        assert_eq!(b1.bundles.len(), 3);
        assert!(p.mempool().is_empty());
        assert_eq!(
            store_o.inclusion(&bundle(2).hash()).unwrap().unwrap().index,
            2
        );
        assert!(store_p.pending_bundles().unwrap().is_empty());

        // A restarted host resumes at the next height from its store.
        let again = net.host(other, store_o.clone());
        assert_eq!(again.next_height(), 2);
        assert_eq!(again.tip().unwrap().hash(), value.0);
    }

    /// Heights follow load: with nothing to include the proposer's deadline is `max_idle_ms` after the parent,
    /// a ready bundle brings it to `block_time_ms` after the parent, a bundle waiting on a nonce gap does not, and
    /// later rounds never wait idle.
    #[test]
    fn an_idle_proposer_waits_until_something_is_ready() {
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let mut p = net.host(proposer, MemStore::default());
        p.started_round(1, 0).unwrap();
        net.clock.advance(10);
        let (value, _) = p.propose(1, 0).unwrap();
        let tip = p.decided(cert(1, 0, value.0)).unwrap().header.timestamp_ms;
        let params = p.params().clone();
        assert!(params.max_idle_ms > params.block_time_ms);
        assert!(!p.has_work());
        assert_eq!(p.proposal_deadline_ms(0), tip + params.max_idle_ms);
        assert_eq!(p.proposal_deadline_ms(1), tip + params.block_time_ms);

        // A sender's nonce 1 cannot go in before its nonce 0: still idle.
        let key = crate::bundle::testing::key(42);
        let gap = crate::bundle::testing::sign(
            &key,
            crate::bundle::UnsignedBundle {
                network_id: 7,
                sender: key.address(),
                nonce: 1,
                expiry_height: 1_000,
                entries: vec![crate::types::BundleEntry {
                    rollup_id: 1,
                    payload: vec![1],
                }],
            },
        );
        p.admit(gap.hash(), gap).unwrap();
        assert!(!p.has_work());
        assert_eq!(p.proposal_deadline_ms(0), tip + params.max_idle_ms);

        p.admit(bundle(1).hash(), bundle(1)).unwrap();
        assert!(p.has_work());
        assert_eq!(p.proposal_deadline_ms(0), tip + params.block_time_ms);
    }

    /// Overload is refused at the edge: once the oldest ready bundle has waited longer than `admit_max_wait_ms`,
    /// client submissions get `Backlogged` while peers' bundles are still taken; a decision that drains the
    /// backlog lets submissions in again.
    #[test]
    fn submissions_are_refused_while_the_chain_is_behind() {
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let mut p = net.host(proposer, MemStore::default());
        let limit = p.limits.admit_max_wait_ms;
        assert!(limit > 0);
        p.admit_submission(bundle(1).hash(), bundle(1)).unwrap();
        net.clock.advance(limit / 2);
        p.admit_submission(bundle(2).hash(), bundle(2)).unwrap();
        net.clock.advance(limit);
        let err = p.admit_submission(bundle(3).hash(), bundle(3)).unwrap_err();
        assert!(
            matches!(err, ConsensusError::Backlogged { waited_ms, .. } if waited_ms > limit),
            "{err}"
        );
        // The same bundle from a peer is taken.
        assert!(p
            .on_gossip(vec![(bundle(3).hash(), bundle(3))])
            .unwrap()
            .is_none());
        assert!(p.mempool().contains(&bundle(3).hash()));
        // A block takes the backlog: submissions are welcome again.
        p.started_round(1, 0).unwrap();
        let (value, _) = p.propose(1, 0).unwrap();
        p.decided(cert(1, 0, value.0)).unwrap();
        assert!(p.mempool().is_empty());
        p.admit_submission(bundle(4).hash(), bundle(4)).unwrap();
    }

    /// The proposer of round 0 at height 1 is down; round 1's proposer's block is decided. From height 2 the
    /// rotation skips the dead validator, every node agrees (the bench is in the header), a restarted host reads
    /// it back from its store, and a proposal from the benched validator for its old slot is dropped.
    #[test]
    fn a_validator_that_misses_its_turn_is_benched_on_every_node() {
        let net = Net::new(4);
        let dead = net.vs.proposer(1, 0).address;
        let live = net.vs.proposer(1, 1).address;
        let other = net.other_than(&[dead, live]);
        let store_o = MemStore::default();
        let mut p = net.host(live, MemStore::default());
        let mut o = net.host(other, store_o.clone());
        p.started_round(1, 1).unwrap();
        o.started_round(1, 1).unwrap();
        net.clock.advance(10);
        let (value, parts) = p.propose(1, 1).unwrap();
        let pv = deliver(&mut o, &parts, b"peer-p").expect("complete proposal");
        assert_eq!(pv.validity, Validity::Valid);
        p.decided(cert(1, 1, value.0)).unwrap();
        let block = o.decided(cert(1, 1, value.0)).unwrap();
        assert_eq!(block.header.round, 1);
        assert_eq!(block.header.bench.benched_at(2), vec![dead]);

        // Heights 2..=2+BENCH_HEIGHTS-1: nobody expects the dead validator to propose the first three rounds.
        for h in 2..2 + crate::bench::BENCH_HEIGHTS {
            for r in 0..3 {
                assert_ne!(
                    o.block_context(h, 0).validators.proposer(h, r).address,
                    dead
                );
            }
        }
        assert_eq!(
            o.height_validators().hash(),
            net.vs.hash(),
            "same set, same certificates"
        );
        let again = net.host(other, store_o.clone());
        assert_eq!(again.height_validators(), o.height_validators());

        // The dead validator comes back and proposes for the slot the plain rotation would give it (among the
        // first three rounds, where the bench applies): dropped.
        // (It shares the other node's store here, standing in for having synced height 1.)
        let mut d = net.host(dead, store_o.clone());
        if let Some(slot) = (0..3u32).find(|r| net.vs.proposer(2, *r).address == dead) {
            d.started_round(2, slot).unwrap();
            o.started_round(2, slot).unwrap();
            net.clock.advance(10);
            let (_, parts) = d.propose(2, slot).unwrap();
            assert!(deliver(&mut o, &parts, b"peer-d").is_none());
        }

        // The real proposer of round 0 builds a block whose header carries the same bench forward.
        let q = o.height_validators().proposer(2, 0).address;
        assert_ne!(q, dead);
        let mut qh = net.host(q, store_o.clone());
        qh.started_round(2, 0).unwrap();
        o.started_round(2, 0).unwrap();
        net.clock.advance(10);
        let (_, parts) = qh.propose(2, 0).unwrap();
        let pv = deliver(&mut o, &parts, b"peer-q").expect("complete proposal");
        assert_eq!(pv.validity, Validity::Valid);
    }

    #[test]
    fn tampered_or_foreign_streams_are_refused() {
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let others: Vec<Address> = net
            .vs
            .validators()
            .iter()
            .map(|v| v.address)
            .filter(|a| *a != proposer)
            .collect();
        // Whole bundles in the proposal body (no dissemination needed) so that a payload byte can be flipped.
        let full = HostLimits {
            compact_proposals: false,
            ..HostLimits::default()
        };
        let mut p = net.host_with(proposer, MemStore::default(), full.clone());
        let mut o = net.host(others[0], MemStore::default());
        let mut impostor = net.host_with(others[1], MemStore::default(), full);
        o.started_round(1, 0).unwrap();
        p.admit(bundle(1).hash(), bundle(1)).unwrap();
        let (_, parts) = p.propose(1, 0).unwrap();

        // A payload byte flipped in transit: the proposer's signature no longer matches the block.
        let mut bad = parts.clone();
        if let ProposalPart::Data { bundles } = &mut bad[1] {
            bundles[0].entries[0].payload[0] ^= 1;
        }
        assert!(deliver(&mut o, &bad, b"x").is_none());

        // Parts streamed by a validator that is not the round's proposer are ignored.
        impostor.admit(bundle(9).hash(), bundle(9)).unwrap();
        let (_, fake) = impostor.propose(1, 0).unwrap();
        assert!(deliver(&mut o, &fake, b"y").is_none());

        // The genuine stream still goes through.
        assert_eq!(
            deliver(&mut o, &parts, b"z").unwrap().validity,
            Validity::Valid
        );
    }

    #[test]
    fn invalid_block_is_judged_invalid_not_dropped() {
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let other = net.other_than(&[proposer]);
        let mut o = net.host(other, MemStore::default());
        o.started_round(1, 0).unwrap();
        // The proposer signs a block whose timestamp is far in the future: well-formed, correctly signed, invalid.
        let future = Net {
            clock: Arc::new(ManualClock::new(1_000_000 + 60_000)),
            ..Net::new(4)
        };
        let mut p_future = future.host(proposer, MemStore::default());
        let (_, parts) = p_future.propose(1, 0).unwrap();
        let pv = deliver(&mut o, &parts, b"p").unwrap();
        assert_eq!(pv.validity, Validity::Invalid);
    }

    #[test]
    fn a_proposer_including_a_forged_or_split_bundle_is_voted_down() {
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let other = net.other_than(&[proposer]);
        let full = HostLimits {
            compact_proposals: false,
            ..HostLimits::default()
        };
        // A forged bundle (content altered after signing) and half of a split bundle, slipped into a Byzantine
        // proposer's mempool past the checks an honest ingest would apply.
        let mut forged = bundle(1);
        forged.entries[0].payload[0] ^= 1;
        let mut half = bundle(2);
        half.entries.truncate(1);
        for bad in [forged, half] {
            let mut p = net.host_with(proposer, MemStore::default(), full.clone());
            let mut o = net.host(other, MemStore::default());
            o.started_round(1, 0).unwrap();
            p.admit(bad.hash(), bad).unwrap();
            let (_, parts) = p.propose(1, 0).unwrap();
            let pv = deliver(&mut o, &parts, b"p").expect("well-formed and signed by the proposer");
            assert_eq!(pv.validity, Validity::Invalid);
        }
    }

    #[test]
    fn early_proposals_wait_for_their_height() {
        let net = Net::new(4);
        let p2 = net.vs.proposer(2, 0).address;
        let p1 = net.vs.proposer(1, 0).address;
        let other = net
            .vs
            .validators()
            .iter()
            .find(|v| v.address != p1 && v.address != p2)
            .unwrap()
            .address;
        let store = MemStore::default();
        let mut o = net.host(other, store.clone());
        let mut h1 = net.host(p1, MemStore::default());
        let mut h2 = net.host(p2, MemStore::default());
        o.started_round(1, 0).unwrap();
        let (v1, parts1) = h1.propose(1, 0).unwrap();
        // Height 2's proposer decided height 1 first and proposes height 2 before `o` finished height 1.
        deliver(&mut h2, &parts1, b"a");
        h2.decided(cert(1, 0, v1.0)).unwrap();
        net.clock.advance(100);
        let (v2, parts2) = h2.propose(2, 0).unwrap();
        assert!(
            deliver(&mut o, &parts2, b"b").is_none(),
            "height 2 is in the future for o"
        );
        deliver(&mut o, &parts1, b"a").unwrap();
        o.decided(cert(1, 0, v1.0)).unwrap();
        let values = o.started_round(2, 0).unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].value, v2);
        assert_eq!(values[0].validity, Validity::Valid);
    }

    #[test]
    fn missing_bundles_are_asked_from_the_proposer_and_the_proposal_completes() {
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let other = net.other_than(&[proposer]);
        let mut p = net.host(proposer, MemStore::default());
        let mut o = net.host(other, MemStore::default());
        o.started_round(1, 0).unwrap();
        for n in 0..3 {
            p.admit(bundle(n).hash(), bundle(n)).unwrap();
        }
        // `o` only saw bundle 0 disseminated.
        o.on_gossip(vec![(bundle(0).hash(), bundle(0))]).unwrap();
        let (value, parts) = p.propose(1, 0).unwrap();
        assert!(parts.iter().any(|x| matches!(x, ProposalPart::Refs { .. })));
        assert!(!parts.iter().any(|x| matches!(x, ProposalPart::Data { .. })));
        assert!(
            deliver(&mut o, &parts, b"p").is_none(),
            "incomplete: parked"
        );
        let wants = o.take_outbox();
        let [ProposalPart::Want {
            proposer: to,
            height,
            hashes,
        }] = wants.as_slice()
        else {
            panic!("expected one want, got {wants:?}");
        };
        assert_eq!((*to, *height), (proposer, 1));
        assert_eq!(hashes.len(), 2);
        // Only the proposer answers.
        o.on_want(*to, 1, hashes).unwrap();
        assert!(o.take_outbox().is_empty());
        p.on_want(*to, 1, hashes).unwrap();
        let answer = p.take_outbox();
        let [ProposalPart::Bundles { bundles }] = answer.as_slice() else {
            panic!("expected bundles, got {answer:?}");
        };
        assert_eq!(bundles.len(), 2);
        let got = o
            .on_gossip(bundles.iter().map(|b| (b.hash(), b.clone())).collect())
            .unwrap()
            .expect("the parked proposal completes");
        assert_eq!(got.value, value);
        assert_eq!(got.validity, Validity::Valid);
    }

    #[test]
    fn an_overdue_forced_entry_the_mempool_never_saw_is_proposed_and_skipping_it_is_voted_down() {
        use crate::origin::{ForcedBundle, MemL1};
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let other = net.other_than(&[proposer]);
        let l1 = Arc::new(MemL1::new(16));
        let origins: Vec<_> = (0..3).map(|_| l1.mine()).collect();
        let forced = crate::bundle::testing::bundle(9, 0, &[2], 9);
        l1.force(ForcedBundle {
            index: 0,
            deadline: 2,
            hash: forced.hash(),
            bundle: forced.clone(),
        });
        let (store_p, store_o) = (MemStore::default(), MemStore::default());
        let mut p = net.host(proposer, store_p.clone());
        let mut o = net.host(other, store_o.clone());
        p.set_l1(l1.clone());
        o.set_l1(l1.clone());
        p.admit(bundle(0).hash(), bundle(0)).unwrap();
        p.started_round(1, 0).unwrap();
        o.started_round(1, 0).unwrap();

        // A proposer ignoring the queue (its L1 view has the blocks but not the entry) builds on origin 3 without
        // the entry: the other validator judges it invalid.
        let blind = Arc::new(MemL1::new(16));
        for _ in 0..3 {
            blind.mine();
        }
        let mut cheat = net.host(proposer, MemStore::default());
        cheat.set_l1(blind);
        cheat.admit(bundle(0).hash(), bundle(0)).unwrap();
        cheat.started_round(1, 0).unwrap();
        let (_, parts) = cheat.propose(1, 0).unwrap();
        o.on_gossip(vec![(bundle(0).hash(), bundle(0))]).unwrap();
        let pv = deliver(&mut o, &parts, b"cheat").expect("complete proposal");
        assert_eq!(pv.validity, Validity::Invalid);

        // The honest proposer puts the entry first, though its mempool never had it, on the newest origin.
        let (value, parts) = p.propose(1, 0).unwrap();
        let block = store_p.undecided(1).unwrap().remove(0).block;
        assert_eq!(block.header.l1_origin, origins[2]);
        assert_eq!(block.bundles, vec![forced.clone(), bundle(0)]);
        // The other validator lacks the entry too (its mempool never saw it): it asks, the proposer answers.
        if let Some(pv) = deliver(&mut o, &parts, b"p") {
            assert_eq!(pv.validity, Validity::Valid);
        } else {
            let wants = o.take_outbox();
            let [ProposalPart::Want { hashes, .. }] = wants.as_slice() else {
                panic!("expected one want, got {wants:?}");
            };
            assert_eq!(hashes, &vec![forced.hash()]);
            p.on_want(proposer, 1, hashes).unwrap();
            let answer = p.take_outbox();
            let [ProposalPart::Bundles { bundles }] = answer.as_slice() else {
                panic!("expected bundles, got {answer:?}");
            };
            let pv = o
                .on_gossip(bundles.iter().map(|b| (b.hash(), b.clone())).collect())
                .unwrap()
                .expect("the parked proposal completes");
            assert_eq!((pv.value, pv.validity), (value, Validity::Valid));
        }
        o.decided(cert(1, 0, value.0)).unwrap();
        assert_eq!(
            store_o.inclusion(&forced.hash()).unwrap().map(|i| i.height),
            Some(1)
        );
        // Included: not owed again, and the next block keeps the origin.
        o.started_round(2, 0).unwrap();
        let next = o.block_context(2, 0);
        assert_eq!(next.parent_l1_origin, origins[2]);
    }

    #[test]
    fn an_epochs_last_block_names_the_staked_set_which_then_decides() {
        use crate::epoch::{PositionedEvent, SetRules, StakeEvent};
        use crate::origin::MemL1;
        let net = Net::new(4);
        let newcomer = SigningKey::from([42; 32]);
        let spec = ChainSpec {
            epochs: Some(SetRules {
                epoch_length: 2,
                max_validators: 10,
                min_stake: 10,
                stake_per_power: 10,
                min_validators: 4,
            }),
            ..ChainSpec::for_tests(7, 4)
        };
        // L1 block 1 registers the four genesis keys and a newcomer (10 each: power 1).
        let staked = |keys: &[&SigningKey]| {
            let l1 = Arc::new(MemL1::new(16));
            l1.mine();
            for (i, k) in keys.iter().enumerate() {
                l1.stake(
                    1,
                    PositionedEvent {
                        tx_index: i as u64,
                        log_index: 0,
                        event: StakeEvent::Registered {
                            key: k.verification_key().to_bytes(),
                            attester: [i as u8; 20],
                            stake: 10,
                        },
                    },
                );
            }
            l1
        };
        let mut all: Vec<&SigningKey> = net.keys.iter().collect();
        all.push(&newcomer);
        let l1 = staked(&all);
        let expected = ValidatorSet::new(
            all.iter()
                .map(|k| crate::context::Validator::new(k.verification_key(), 1))
                .collect(),
        )
        .unwrap();
        let host = |who: Address, store: MemStore, l1: Arc<MemL1>| {
            let key = net
                .keys
                .iter()
                .find(|k| Address::from_public_key_bytes(k.verification_key().as_bytes()) == who)
                .unwrap()
                .clone();
            let mut h = Host::new(
                net.domain,
                Hash::digest(&[b"genesis"]),
                Some(ConsensusSigner::new(key, net.domain)),
                net.vs.clone(),
                spec.clone(),
                HostLimits::default(),
                store,
                net.clock.clone(),
            )
            .unwrap();
            h.set_l1(l1);
            h
        };
        let addrs: Vec<Address> = net.vs.validators().iter().map(|v| v.address).collect();
        let stores: Vec<MemStore> = addrs.iter().map(|_| MemStore::default()).collect();
        let mut hosts: Vec<_> = addrs
            .iter()
            .zip(&stores)
            .map(|(a, s)| host(*a, s.clone(), l1.clone()))
            .collect();
        for height in 1..=2u64 {
            net.clock.advance(1_000);
            let proposer = net.vs.proposer(height, 0).address;
            let pi = addrs.iter().position(|a| *a == proposer).unwrap();
            for h in hosts.iter_mut() {
                h.started_round(height, 0).unwrap();
            }
            if height == 2 {
                // A validator whose L1 view has not reached the origin cannot judge the epoch's last block.
                let behind = Arc::new(MemL1::new(16));
                let oi = (pi + 1) % 4;
                let mut lagging = host(addrs[oi], MemStore::default(), behind);
                for b in 1..2 {
                    let blk = stores[oi].block(b).unwrap().unwrap();
                    lagging
                        .synced_value(b, 0, blk.header.proposer, &blk.encode())
                        .unwrap();
                    lagging.decided(cert(b, 0, blk.hash())).unwrap();
                }
                lagging.started_round(2, 0).unwrap();
                // A proposer that does not see the newcomer's stake names the old set: refused.
                let mut blind = host(
                    proposer,
                    MemStore::default(),
                    staked(&net.keys.iter().collect::<Vec<_>>()),
                );
                let b1 = stores[pi].block(1).unwrap().unwrap();
                blind
                    .synced_value(1, 0, b1.header.proposer, &b1.encode())
                    .unwrap();
                blind.decided(cert(1, 0, b1.hash())).unwrap();
                blind.started_round(2, 0).unwrap();
                let (_, parts) = blind.propose(2, 0).unwrap();
                let oi2 = (pi + 2) % 4;
                let judge = &mut hosts[oi2];
                let pv = deliver(judge, &parts, b"blind").expect("complete");
                assert_eq!(
                    pv.validity,
                    Validity::Invalid,
                    "a block naming the wrong next set"
                );
                let (_, parts) = hosts[pi].propose(2, 0).unwrap();
                let pv = deliver(&mut lagging, &parts, b"p").expect("complete");
                assert_eq!(
                    pv.validity,
                    Validity::Invalid,
                    "no staking table at the origin here"
                );
            }
            let (value, parts) = hosts[pi].propose(height, 0).unwrap();
            for (i, h) in hosts.iter_mut().enumerate() {
                if i != pi {
                    let pv = deliver(h, &parts, b"p").expect("complete");
                    assert_eq!(pv.validity, Validity::Valid, "height {height} at host {i}");
                }
                let block = h.decided(cert(height, 0, value.0)).unwrap();
                let header = &block.header;
                assert_eq!(header.validator_set_hash, net.vs.hash());
                if height == 1 {
                    assert_eq!(header.next_validator_set_hash, net.vs.hash());
                    assert_eq!(block.next_validators, None);
                } else {
                    assert_eq!(header.next_validator_set_hash, expected.hash());
                    assert_eq!(block.next_validators.as_ref(), Some(&expected));
                }
            }
        }
        // Height 3 (epoch 1) is decided by five validators, the newcomer among them; a restart keeps that.
        for h in &hosts {
            assert_eq!(h.validators(), &expected);
            assert_eq!(h.height_validators().hash(), expected.hash());
        }
        let again = host(addrs[0], stores[0].clone(), l1.clone());
        assert_eq!(again.validators(), &expected);

        // A node syncing without L1 takes the set from the certified block, and refuses a block whose carried set
        // is not the one its header names.
        let mut fresh = Host::new(
            net.domain,
            Hash::digest(&[b"genesis"]),
            None,
            net.vs.clone(),
            spec.clone(),
            HostLimits::default(),
            MemStore::default(),
            net.clock.clone(),
        )
        .unwrap();
        fresh.set_l1(Arc::new(Certified));
        let b1 = stores[0].block(1).unwrap().unwrap();
        fresh
            .synced_value(1, 0, b1.header.proposer, &b1.encode())
            .unwrap();
        fresh.decided(cert(1, 0, b1.hash())).unwrap();
        let b2 = stores[0].block(2).unwrap().unwrap();
        let mut forged = b2.clone();
        forged.next_validators = Some(net.vs.clone());
        let SyncVerdict::Verdict(pv) = fresh
            .synced_value(2, 0, b2.header.proposer, &forged.encode())
            .unwrap()
        else {
            panic!("decodes")
        };
        assert_eq!(pv.validity, Validity::Invalid);
        let SyncVerdict::Verdict(pv) = fresh
            .synced_value(2, 0, b2.header.proposer, &b2.encode())
            .unwrap()
        else {
            panic!("decodes")
        };
        assert_eq!(pv.validity, Validity::Valid);
        fresh.decided(cert(2, 0, b2.hash())).unwrap();
        assert_eq!(fresh.validators(), &expected);
    }

    #[test]
    fn reported_equivocation_goes_into_a_block_and_jails_the_validator() {
        use crate::evidence::{Kind, Signed};
        use malachitebft_core_types::VoteType;
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let other = net.other_than(&[proposer]);
        let culprit_key = net
            .keys
            .iter()
            .find(|k| {
                let a = Address::from_public_key_bytes(k.verification_key().as_bytes());
                a != proposer && a != other
            })
            .unwrap()
            .clone();
        let culprit = Address::from_public_key_bytes(culprit_key.verification_key().as_bytes());
        let signer = ConsensusSigner::new(culprit_key, net.domain);
        let vote = |value: Option<Hash>| Signed {
            value,
            pol_round: 0,
            signature: signer
                .sign(
                    &net.domain
                        .vote_bytes(VoteType::Prevote, 1, 0, value, &culprit),
                )
                .0,
        };
        let evidence = Equivocation::new(
            Kind::Prevote,
            culprit,
            1,
            0,
            vote(None),
            vote(Some(Hash::digest(&[b"v"]))),
        );
        let (store_p, store_o) = (MemStore::default(), MemStore::default());
        let mut p = net.host(proposer, store_p.clone());
        let mut o = net.host(other, store_o.clone());
        // Height 1 decided without evidence (it is about height 1, which must be decided first).
        p.started_round(1, 0).unwrap();
        o.started_round(1, 0).unwrap();
        let (value, parts) = p.propose(1, 0).unwrap();
        deliver(&mut o, &parts, b"p").expect("complete");
        p.decided(cert(1, 0, value.0)).unwrap();
        o.decided(cert(1, 0, value.0)).unwrap();

        // A framed copy (signatures moved onto another validator) is not taken in; the real one is.
        let framed = Equivocation {
            validator: other,
            ..evidence.clone()
        };
        assert_eq!(
            p.report_evidence(vec![framed.clone(), evidence.clone()])
                .unwrap(),
            1
        );
        assert_eq!(
            p.report_evidence(vec![evidence.clone()]).unwrap(),
            0,
            "no duplicates"
        );
        let h2 = net.vs.proposer(2, 0).address;
        let mut q = net.host(h2, store_p.clone());
        q.report_evidence(vec![evidence.clone()]).unwrap();
        q.started_round(2, 0).unwrap();
        o.started_round(2, 0).unwrap();
        let (value, parts) = q.propose(2, 0).unwrap();
        let block = store_p.undecided(2).unwrap().remove(0).block;
        assert_eq!(block.evidence, vec![evidence.clone()]);
        assert_eq!(
            block.header.evidence_root,
            crate::evidence::evidence_root(&block.evidence)
        );
        let pv = deliver(&mut o, &parts, b"q").expect("complete");
        assert_eq!(pv.validity, Validity::Valid);
        o.decided(cert(2, 0, value.0)).unwrap();
        assert!(o.jailed().contains(&culprit));
        assert_eq!(store_o.evidence().unwrap(), vec![(2, evidence.clone())]);
        // After a restart the chain still jails it, and the same evidence cannot be included again.
        let again = net.host(other, store_o.clone());
        assert!(again.jailed().contains(&culprit));
        let mut dup = store_o.block(2).unwrap().unwrap();
        dup.header.height = 3;
        assert!(matches!(
            again.check_evidence(&dup),
            Err(BlockError::BadEvidence { index: 0, .. })
        ));
        // A block carrying framed evidence is refused.
        let mut forged = dup.clone();
        forged.evidence = vec![framed];
        assert!(matches!(
            again.check_evidence(&forged),
            Err(BlockError::BadEvidence { index: 0, .. })
        ));
    }

    #[test]
    fn a_tampered_ref_list_is_dropped() {
        let net = Net::new(4);
        let proposer = net.vs.proposer(1, 0).address;
        let other = net.other_than(&[proposer]);
        let mut p = net.host(proposer, MemStore::default());
        let mut o = net.host(other, MemStore::default());
        o.started_round(1, 0).unwrap();
        p.admit(bundle(1).hash(), bundle(1)).unwrap();
        o.on_gossip(vec![
            (bundle(1).hash(), bundle(1)),
            (bundle(2).hash(), bundle(2)),
        ])
        .unwrap();
        let (_, mut parts) = p.propose(1, 0).unwrap();
        for part in parts.iter_mut() {
            if let ProposalPart::Refs { hashes } = part {
                hashes[0] = bundle(2).hash();
            }
        }
        assert!(deliver(&mut o, &parts, b"p").is_none());
        assert!(o.take_outbox().is_empty(), "dropped, not parked");
    }

    mod random {
        //! Property: whatever mix of good and bad bundles users send, decided blocks hold only good ones.
        use super::*;
        use crate::bundle::testing::{key, sign};
        use crate::bundle::UnsignedBundle;
        use crate::types::BundleEntry;
        use proptest::prelude::*;
        use std::collections::HashSet;

        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Fault {
            None,
            BadSignature,
            WrongNetwork,
            Expired,
            Oversize,
            UnknownRollup,
            ReusedNonce,
        }

        fn fault() -> impl Strategy<Value = Fault> {
            prop_oneof![
                4 => Just(Fault::None),
                1 => Just(Fault::BadSignature),
                1 => Just(Fault::WrongNetwork),
                1 => Just(Fault::Expired),
                1 => Just(Fault::Oversize),
                1 => Just(Fault::UnknownRollup),
                1 => Just(Fault::ReusedNonce),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
            #[test]
            fn bad_bundles_never_reach_a_block(
                ops in proptest::collection::vec((0u8..3, fault(), 1u64..5, any::<u8>()), 1..40),
                gap in any::<bool>(),
            ) {
                let net = Net::new(4);
                let limits = HostLimits { compact_proposals: false, ..HostLimits::default() };
                let hosts: Vec<Address> = net.vs.validators().iter().map(|v| v.address).collect();
                let stores: Vec<MemStore> = hosts.iter().map(|_| MemStore::default()).collect();
                let mut nodes: Vec<_> = hosts
                    .iter()
                    .zip(&stores)
                    .map(|(a, s)| net.host_with(*a, s.clone(), limits.clone()))
                    .collect();
                let mut next: HashMap<u8, u64> = HashMap::new();
                let mut bad: HashSet<Hash> = HashSet::new();
                let mut included: Vec<Bundle> = Vec::new();
                let mut height = 1u64;
                for (i, (sender, f, rollup, tag)) in ops.into_iter().enumerate() {
                    let k = key(sender);
                    let n = next.entry(sender).or_default();
                    let mut u = UnsignedBundle {
                        network_id: 7,
                        sender: k.address(),
                        nonce: *n,
                        expiry_height: height + 100,
                        entries: vec![BundleEntry { rollup_id: rollup, payload: vec![tag, i as u8] }],
                    };
                    match f {
                        Fault::WrongNetwork => u.network_id = 8,
                        Fault::Expired => u.expiry_height = height - 1,
                        Fault::Oversize => u.entries[0].payload = vec![tag; 70 * 1024],
                        Fault::UnknownRollup => u.entries.push(BundleEntry { rollup_id: 99, payload: vec![1] }),
                        Fault::ReusedNonce if *n > 0 => u.nonce = *n - 1,
                        _ => {}
                    }
                    let mut b = sign(&k, u);
                    if f == Fault::BadSignature {
                        b.entries[0].payload.push(0);
                    }
                    let hash = b.hash();
                    // The node's ingest: stateless checks and the signature, then admission with chain state.
                    let entry = i % 4;
                    let admitted = crate::block::check_bundle(&b, nodes[entry].spec())
                        .map_err(ConsensusError::from)
                        .and_then(|_| b.verify_signature(&hash).map_err(ConsensusError::from))
                        .and_then(|_| nodes[entry].admit(hash, b.clone()));
                    let fresh_reuse = f == Fault::ReusedNonce && *n == 0;
                    let faulty = f != Fault::None && !fresh_reuse;
                    if faulty {
                        prop_assert!(admitted.is_err(), "{f:?} was admitted");
                        bad.insert(hash);
                    } else {
                        prop_assert!(admitted.is_ok(), "good bundle refused: {admitted:?}");
                        *n += 1;
                    }
                    // Disseminate what was admitted (peers apply their own checks), then sometimes decide a block.
                    if admitted.is_ok() {
                        for (j, node) in nodes.iter_mut().enumerate() {
                            if j != entry {
                                node.on_gossip(vec![(hash, b.clone())]).unwrap();
                            }
                        }
                    }
                    if (gap && i % 3 == 2) || (!gap && i % 5 == 4) {
                        net.clock.advance(60);
                        let proposer = net.vs.proposer(height, 0).address;
                        let pi = hosts.iter().position(|a| *a == proposer).unwrap();
                        for node in nodes.iter_mut() {
                            node.started_round(height, 0).unwrap();
                        }
                        let (value, parts) = nodes[pi].propose(height, 0).unwrap();
                        for (j, node) in nodes.iter_mut().enumerate() {
                            if j != pi {
                                let pv = deliver(node, &parts, b"p").unwrap();
                                prop_assert_eq!(pv.validity, Validity::Valid);
                            }
                        }
                        for node in nodes.iter_mut() {
                            let block = node.decided(cert(height, 0, value.0)).unwrap();
                            if node.address() == Some(proposer) {
                                included.extend(block.bundles);
                            }
                        }
                        height += 1;
                    }
                }
                // Nothing bad was included, and each sender's nonces run 0, 1, 2, ... once each.
                let mut seen_nonces: HashMap<crate::bundle::Sender, u64> = HashMap::new();
                for b in &included {
                    prop_assert!(!bad.contains(&b.hash()), "a refused bundle reached a block");
                    let want = seen_nonces.entry(b.sender).or_default();
                    prop_assert_eq!(b.nonce, *want);
                    *want += 1;
                }
            }
        }
    }
}
