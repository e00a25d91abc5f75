//! # baton-node: the `baton` binary
//!
//! Bird's-eye view: [`node::run`] wires one node. Signed bundles arrive over gRPC ([`grpc`]); [`ingest`] checks
//! them (signature once), has the consensus loop ([`app`]) admit them, and makes them durable in RocksDB
//! ([`store`]) before acknowledging them. The loop owns the pure `baton_consensus::host::Host`, disseminates
//! admitted bundles to peers, and drives the Malachite engine (libp2p gossip, consensus, value sync and
//! write-ahead log, with [`codec`] as the wire format). Each decided block is committed to RocksDB with
//! its certificate and per-rollup batches, and its height is published to `StreamBatches` subscribers. [`devnet`]
//! starts several nodes as real processes on loopback. [`floor`] is the engine floor: the same engine with nothing
//! of Baton's around it, the baseline the benchmarks compare against.

pub mod app;
pub mod based;
pub mod clients;
pub mod codec;
pub mod config;
#[cfg(feature = "devnet")]
pub mod devnet;
pub mod engine;
pub mod error;
pub mod floor;
pub mod forward;
pub mod grpc;
pub mod inbox;
pub mod ingest;
pub mod keys;
pub mod l1;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod quota;
pub mod retention;
pub mod state;
pub mod store;
pub mod tasks;
pub mod validator;
pub mod verify;

pub use error::NodeError;

/// The log filter when `RUST_LOG` is unset: Baton's own events at `info`, the consensus engine and libp2p at
/// `warn`. The engine logs several `info` lines per height (rounds, steps, votes), which on a busy chain cost
/// more CPU than some of the work they describe; `RUST_LOG=info` brings them back.
pub const DEFAULT_LOG_FILTER: &str = "info,arc_malachitebft=warn,libp2p=warn";
