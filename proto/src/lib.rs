//! # baton-proto: Baton's public gRPC API
//!
//! Bird's-eye view: `proto/baton/v1/baton.proto` defines `RollupService` (submit bundles, bundle status, stream
//! and get per-rollup batches) and `NodeService` (status, validator sets, evidence). [`pb`] is the tonic/prost code generated from it and
//! stays inside this crate's public surface only as wire types; [`convert`] turns wire messages into the domain
//! types of `baton-consensus` (naming the field at fault when a message is malformed) and back; [`client`] is the
//! client for rollup operators and tools: it signs bundles (EIP-712) and verifies the batches it pulls against a
//! validator set it trusts (genesis, or a checkpoint obtained out of band), following set changes through signed
//! headers within a weak-subjectivity window.

pub mod client;
pub mod codec;
pub mod convert;

/// Generated protobuf and gRPC code for package `baton.v1`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("baton.v1");
}

/// Encoded file descriptor set of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("baton_descriptor");

pub use convert::ConversionError;

/// The domain types a client needs (bundles, hashes, batches), so tools can depend on this crate alone.
pub mod types {
    pub use baton_consensus::bundle::{Bundle, BundleEntry};
    pub use baton_consensus::bundle::{Sender, UnsignedBundle};
    pub use baton_consensus::hash::Hash;
    pub use baton_consensus::ids::RollupId;
    pub use baton_consensus::types::{BatchEntry, RollupBatch};
    pub use baton_consensus::validators::ValidatorSet;
}

/// The run checker (forks, lost, duplicated, split bundles), for clients that judge a network from outside.
pub use baton_consensus::check;
