//! The consensus crate's error type.

use crate::hash::Hash;

/// Why a block, proposal or request was refused, or why the host could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("invalid consensus parameters: {0}")]
    InvalidParams(String),
    #[error("invalid genesis: {0}")]
    InvalidGenesis(String),
    #[error("invalid block: {0}")]
    InvalidBlock(#[from] BlockError),
    #[error("invalid bundle: {0}")]
    InvalidBundle(#[from] BundleError),
    #[error("mempool full: {0}")]
    MempoolFull(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("block {0} needed for the decision is not known locally")]
    UnknownBlock(Hash),
    #[error("codec: {0}")]
    Codec(String),
}

/// A bundle that breaks a limit or a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("bundle has no entries")]
    Empty,
    #[error("bundle has {got} entries, the limit is {limit}")]
    TooManyEntries { got: usize, limit: u32 },
    #[error("bundle is {got} bytes encoded, the limit is {limit}")]
    TooLarge { got: usize, limit: u32 },
    #[error("entry {index} has an empty payload")]
    EmptyPayload { index: usize },
}

impl BundleError {
    /// Whether the error is about size (the API maps these to RESOURCE_EXHAUSTED).
    pub fn is_size_limit(&self) -> bool {
        matches!(
            self,
            BundleError::TooManyEntries { .. } | BundleError::TooLarge { .. }
        )
    }
}

/// A block that breaks a rule. Validators prevote nil on such a block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("height {got}, expected {expected}")]
    WrongHeight { got: u64, expected: u64 },
    #[error("parent hash {got}, expected {expected}")]
    WrongParent { got: Hash, expected: Hash },
    #[error("timestamp {got} ms is not after the parent's {parent} ms")]
    TimestampNotIncreasing { got: u64, parent: u64 },
    #[error("timestamp {got} ms is more than {drift} ms ahead of local time {now} ms")]
    TimestampInFuture { got: u64, now: u64, drift: u64 },
    #[error("proposer {0} is not in the validator set")]
    UnknownProposer(String),
    #[error("validator set hash {got}, expected {expected}")]
    WrongValidatorSet { got: Hash, expected: Hash },
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
    #[error("namespace root {got} does not match the body's {expected}")]
    WrongNamespaceRoot { got: Hash, expected: Hash },
}
