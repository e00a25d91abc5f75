//! The node crate's error type.

use baton_consensus::error::ConsensusError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("config: {0}")]
    Config(String),
    #[error("key: {0}")]
    Key(String),
    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),
    #[error("corrupt record in column family {cf}: {detail}")]
    Corrupt { cf: &'static str, detail: String },
    #[error(
        "the data directory holds store layout {found}, this build reads layout {expected}: start the node on an \
         empty data directory (it syncs the chain from its peers)"
    )]
    StoreLayout { found: u32, expected: u32 },
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    #[error("engine: {0}")]
    Engine(String),
    #[error("L1: {0}")]
    L1(String),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("shutting down")]
    ShuttingDown,
}
