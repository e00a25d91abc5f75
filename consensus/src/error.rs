//! The consensus crate's error type.

use crate::hash::Hash;

/// Why a block, proposal or request was refused, or why the host could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// A consensus parameter out of its range; `why` says the rule and the value.
    #[error("invalid consensus parameters: {field} {why}")]
    InvalidParams { field: &'static str, why: String },
    #[error("invalid genesis: {0}")]
    InvalidRegistry(#[from] RegistryError),
    #[error("invalid block: {0}")]
    InvalidBlock(#[from] BlockError),
    #[error("invalid bundle: {0}")]
    InvalidBundle(#[from] BundleError),
    #[error("mempool full: {0}")]
    MempoolFull(#[from] MempoolFull),
    /// The chain is not keeping up: the oldest bundle ready for a block has waited longer than the admission
    /// bound. New submissions are refused until the backlog drains.
    #[error(
        "the chain is behind: the oldest bundle ready for a block has waited {waited_ms} ms (mempool.admit_max_wait_ms \
         is {limit_ms})"
    )]
    Backlogged { waited_ms: u64, limit_ms: u64 },
    /// A client's bundle that would wait behind its sender's nonce gap, submitted while the chain has lately been
    /// behind: the missing nonce was most likely refused for the backlog, and this one, taken now, would wait
    /// acknowledged until that one is sent again.
    #[error(
        "nonce {nonce} would wait behind nonce {missing}, which this node does not hold, while the chain is \
         catching up (it was probably refused for the backlog): send nonce {missing} again first, then this one"
    )]
    BehindGap { nonce: u64, missing: u64 },
    /// The store's own error (`ChainStore` implementations box theirs; the node's is `NodeError`, which a caller
    /// can downcast to).
    #[error("storage: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Asked to propose or sign without a validator key (a full node).
    #[error("this node has no validator signing key (it runs as a full node) and cannot {0}")]
    NoSigningKey(&'static str),
    #[error("block {0} needed for the decision is not known locally")]
    UnknownBlock(Hash),
}

/// Which of the mempool's bounds a bundle did not fit in (the numbers are the mempool's when it was refused).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolFull {
    #[error(
        "{bundles} bundles / {bytes} bytes pending, limits mempool.max_bundles {max_bundles} / mempool.max_bytes \
         {max_bytes}"
    )]
    Pending {
        bundles: usize,
        bytes: usize,
        max_bundles: usize,
        max_bytes: usize,
    },
    /// The bundle would wait behind a nonce gap, and the bundles waiting so are at their own bound.
    #[error(
        "{bundles} bundles / {bytes} bytes wait behind nonce gaps, limits mempool.max_waiting {max_bundles} / \
         mempool.max_waiting_bytes {max_bytes}: send the sender's lower nonces first"
    )]
    Waiting {
        bundles: usize,
        bytes: usize,
        max_bundles: usize,
        max_bytes: usize,
    },
}

/// A rollup registry (genesis `rollups`) that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("{count} rollups registered, at most {max} are allowed")]
    TooMany { count: usize, max: usize },
    #[error("rollup {id}: name must be 1..=64 characters")]
    BadName { id: u64 },
    #[error("rollup {id}: allowed sender {sender} is listed twice")]
    SenderTwice { id: u64, sender: String },
    #[error("rollup id {id} is registered twice")]
    IdTwice { id: u64 },
}

/// A bundle that breaks a limit or a rule. Messages name the field or limit involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle.entries is empty")]
    Empty,
    #[error("bundle.entries has {got} entries, the limit (max_bundle_entries) is {limit}")]
    TooManyEntries { got: usize, limit: u32 },
    #[error("bundle is {got} bytes encoded, the limit (max_bundle_bytes) is {limit}")]
    TooLarge { got: usize, limit: u32 },
    #[error("bundle.entries[{index}].payload is empty")]
    EmptyPayload { index: usize },
    #[error(
        "bundle.entries[{index}].payload is {got} bytes, the limit (max_payload_bytes) is {limit}"
    )]
    PayloadTooLarge {
        index: usize,
        got: usize,
        limit: u32,
    },
    #[error("bundle.entries[{index}].rollup_id {rollup_id} is not a registered rollup")]
    UnknownRollup { index: usize, rollup_id: u64 },
    #[error(
        "sender {sender} may not post entries for rollup {rollup_id} (bundle.entries[{index}]): the rollup's \
         genesis registry entry lists the only senders allowed to (allowed_senders); sign with one of those keys, \
         or ask the rollup's operator"
    )]
    UnauthorizedSender {
        index: usize,
        rollup_id: u64,
        sender: String,
    },
    #[error("bundle.network_id is {got}, this network's id is {expected}")]
    WrongNetwork { got: u64, expected: u64 },
    #[error("bundle.signature is not valid: {reason}")]
    BadSignature { reason: String },
    #[error(
        "bundle.expiry_height {expiry_height} is below height {height}: the bundle has expired"
    )]
    Expired { expiry_height: u64, height: u64 },
    #[error("bundle.nonce {nonce} of sender {sender} is already used; the sender's next nonce is {next}")]
    NonceUsed {
        sender: String,
        nonce: u64,
        next: u64,
    },
    #[error("bundle.nonce {nonce} of sender {sender} is taken by another pending bundle")]
    NoncePending { sender: String, nonce: u64 },
    #[error("bundle.nonce {got} of sender {sender}, expected {expected} (nonces are included in order, without gaps)")]
    WrongNonce {
        sender: String,
        got: u64,
        expected: u64,
    },
    #[error(
        "sender {sender} already has {limit} bundles pending (mempool.max_pending_per_sender)"
    )]
    SenderLimit { sender: String, limit: usize },
    #[error(
        "bundle.expiry_height {expiry_height} is more than {window} heights (genesis max_expiry_window) past \
         height {height}: choose an expiry within the window"
    )]
    ExpiryTooFar {
        expiry_height: u64,
        height: u64,
        window: u64,
    },
    #[error(
        "bundle.nonce {nonce} of sender {sender} is more than {max_gap} past its first free nonce {first_free} \
         (mempool.max_nonce_gap): send the lower nonces first"
    )]
    NonceGap {
        sender: String,
        nonce: u64,
        first_free: u64,
        max_gap: u64,
    },
    #[error(
        "bundle spans shared rollup {shared_rollup} and based rollup {based_rollup}: Baton's validators order the \
         shared one and L1 proposers the based one, so no single order can include both atomically; send a \
         bundle per mode"
    )]
    MixedModes {
        shared_rollup: u64,
        based_rollup: u64,
    },
    #[error(
        "rollup {rollup_id} is based: L1 proposers order it through the inbox contract (BatonInbox.post), not \
         Baton's validators; post the bundle there"
    )]
    BasedRollup { rollup_id: u64 },
    #[error(
        "bundle has entries for based rollups {first} and {second}: the inbox orders each based rollup's batches \
         on their own, so a based bundle must be for one rollup"
    )]
    TwoBasedRollups { first: u64, second: u64 },
}

/// How a refused bundle maps onto an API status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleErrorKind {
    /// Malformed or not authentic (INVALID_ARGUMENT).
    Invalid,
    /// Over a size or count limit (RESOURCE_EXHAUSTED).
    Limit,
    /// Refers to something that does not exist (NOT_FOUND).
    NotFound,
    /// The sender may not post for a rollup it names (PERMISSION_DENIED).
    Unauthorized,
    /// Well-formed, but not acceptable in the chain's current state (FAILED_PRECONDITION).
    State,
}

impl BundleError {
    pub fn kind(&self) -> BundleErrorKind {
        use BundleError::*;
        match self {
            Empty | EmptyPayload { .. } | WrongNetwork { .. } | BadSignature { .. } => {
                BundleErrorKind::Invalid
            }
            TooManyEntries { .. }
            | TooLarge { .. }
            | PayloadTooLarge { .. }
            | SenderLimit { .. } => BundleErrorKind::Limit,
            UnknownRollup { .. } => BundleErrorKind::NotFound,
            UnauthorizedSender { .. } => BundleErrorKind::Unauthorized,
            Expired { .. }
            | ExpiryTooFar { .. }
            | NonceGap { .. }
            | NonceUsed { .. }
            | NoncePending { .. }
            | WrongNonce { .. }
            | MixedModes { .. }
            | BasedRollup { .. }
            | TwoBasedRollups { .. } => BundleErrorKind::State,
        }
    }

    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        use BundleError::*;
        match self {
            Empty => "empty",
            TooManyEntries { .. } => "too_many_entries",
            TooLarge { .. } => "too_large",
            EmptyPayload { .. } => "empty_payload",
            PayloadTooLarge { .. } => "payload_too_large",
            UnknownRollup { .. } => "unknown_rollup",
            UnauthorizedSender { .. } => "unauthorized_sender",
            WrongNetwork { .. } => "wrong_network",
            BadSignature { .. } => "bad_signature",
            Expired { .. } => "expired",
            NonceUsed { .. } => "nonce_used",
            NoncePending { .. } => "nonce_pending",
            WrongNonce { .. } => "wrong_nonce",
            SenderLimit { .. } => "sender_limit",
            ExpiryTooFar { .. } => "expiry_too_far",
            NonceGap { .. } => "nonce_gap",
            MixedModes { .. } => "mixed_modes",
            BasedRollup { .. } => "based_rollup",
            TwoBasedRollups { .. } => "two_based_rollups",
        }
    }

    /// Whether the error is about size (the API maps these to RESOURCE_EXHAUSTED).
    pub fn is_size_limit(&self) -> bool {
        self.kind() == BundleErrorKind::Limit
    }
}

/// Why a served batch failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("batch.block_hash does not match the header's hash")]
    BlockHashMismatch,
    #[error("certificate is for {got_height}/{got_hash}, the header is {height}/{hash}")]
    CertificateForOtherBlock {
        got_height: u64,
        got_hash: Hash,
        height: u64,
        hash: Hash,
    },
    #[error(
        "header.validator_set_hash {got} is not the hash of the given validator set {expected}"
    )]
    OtherValidatorSet { got: Hash, expected: Hash },
    #[error("certificate signer {0} is not in the validator set")]
    UnknownSigner(String),
    #[error("certificate signer {0} appears twice")]
    DuplicateSigner(String),
    #[error("certificate signature of {0} is not valid")]
    BadSignature(String),
    #[error("certificate carries {got} of {total} voting power; more than two thirds is needed")]
    NoQuorum { got: u64, total: u64 },
    #[error("batch entry {index} does not belong to rollup batch: {reason}")]
    BadEntry { index: usize, reason: String },
    #[error("namespace proof does not lead from the batch to header.namespace_root")]
    BadNamespaceProof,
    #[error("proof is missing: {0}")]
    Missing(&'static str),
}

/// A block that breaks a rule. Validators prevote nil on such a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// Not a fault of the block: the node could not read what a rule needs (storage). Never a vote: the host
    /// turns it into [`ConsensusError::Storage`].
    #[error("storage could not be read to judge the block: {0}")]
    Unreadable(String),
    #[error("height {got}, expected {expected}")]
    WrongHeight { got: u64, expected: u64 },
    #[error("parent hash {got}, expected {expected}")]
    WrongParent { got: Hash, expected: Hash },
    #[error("timestamp {got} ms is not after the parent's {parent} ms")]
    TimestampNotIncreasing { got: u64, parent: u64 },
    #[error("timestamp {got} ms is more than {drift} ms ahead of local time {now} ms")]
    TimestampInFuture { got: u64, now: u64, drift: u64 },
    #[error("proposer {got} does not hold round {round} of this height ({expected} does)")]
    WrongProposer {
        got: String,
        expected: String,
        round: u32,
    },
    #[error("the header's proposer bench does not follow from the parent's")]
    WrongBench,
    #[error("validator set hash {got}, expected {expected}")]
    WrongValidatorSet { got: Hash, expected: Hash },
    #[error("{got} evidence items, at most {limit} per block")]
    TooMuchEvidence { got: usize, limit: usize },
    #[error("header.evidence_root does not match the block's evidence")]
    WrongEvidenceRoot,
    #[error("evidence {index}: {reason}")]
    BadEvidence { index: usize, reason: String },
    #[error("header.next_validator_set_hash {got} is not the next height's set {expected}")]
    WrongNextValidatorSet { got: Hash, expected: Hash },
    #[error("the staking table at L1 block {number} is not known here yet (the next epoch's set depends on it)")]
    StakeTableUnknown { number: u64 },
    #[error("header says {header} bundles, body has {body}")]
    BundleCountMismatch { header: u32, body: usize },
    #[error("block has {got} bundles, the limit is {limit}")]
    TooManyBundles { got: usize, limit: u32 },
    #[error("block bundles are {got} bytes, the limit is {limit}")]
    TooLarge { got: u64, limit: u64 },
    #[error("bundle {index}: {error}")]
    BadBundle { index: usize, error: BundleError },
    #[error("bundle {0} appears twice in the block")]
    DuplicateBundle(Hash),
    #[error("bundle {0} was already included in an earlier block")]
    AlreadyIncluded(Hash),
    #[error("bundles root {got} does not match the body's {expected}")]
    WrongBundlesRoot { got: Hash, expected: Hash },
    #[error("header.namespace_count {got}, the registry has {expected} rollups")]
    WrongNamespaceCount { got: u32, expected: usize },
    #[error("namespace root {got} does not match the body's {expected}")]
    WrongNamespaceRoot { got: Hash, expected: Hash },
    #[error("L1 origin {got} is below the parent's {parent}")]
    L1OriginBehindParent { got: u64, parent: u64 },
    #[error("L1 origin {number} keeps the parent's number but names another block ({hash})")]
    L1OriginChanged { number: u64, hash: Hash },
    #[error("L1 block {number} ({hash}) is not one this node has seen at the configured safety")]
    L1OriginUnknown { number: u64, hash: Hash },
    #[error(
        "L1 origin {number} is {behind} blocks behind this node's view (at most {limit} allowed)"
    )]
    L1OriginStale {
        number: u64,
        behind: u64,
        limit: u64,
    },
    #[error("this chain has no L1, but the header names L1 block {number}")]
    L1OriginWithoutL1 { number: u64 },
    #[error("forced-inclusion entry {index} (bundle {hash}) is overdue and not in the block")]
    ForcedOmitted { index: u64, hash: Hash },
}
