//! The one error type of this crate.

/// What can go wrong talking to L1 or judging what it says.
#[derive(Debug, thiserror::Error)]
pub enum L1Error {
    #[error("L1 RPC: {0}")]
    Rpc(String),
    #[error("L1 contract call {call}: {message}")]
    Contract { call: &'static str, message: String },
    #[error("signing an L1 transaction or attestation: {0}")]
    Signing(String),
    #[error("attestation {index} is not a valid signature: {reason}")]
    BadAttestation { index: usize, reason: String },
    #[error("attestations carry {signed} of {total} voting power; more than 2/3 is needed")]
    InsufficientPower { signed: u64, total: u64 },
    #[error("anvil: {0}")]
    Anvil(String),
    #[error("poster state {path}: {message}")]
    State { path: String, message: String },
    #[error("invalid L1 config: {0}")]
    Config(String),
    #[error("blob: {0}")]
    Blob(String),
}

impl L1Error {
    pub(crate) fn rpc(e: impl std::fmt::Display) -> Self {
        L1Error::Rpc(e.to_string())
    }
}
