//! # baton-consensus: the pure core of Baton
//!
//! Bird's-eye view: a [`bundle::Bundle`] (entries for one or more rollups, signed by its sender with EIP-712)
//! enters a node's [`mempool::Mempool`] (per-sender nonce queues); when the node proposes,
//! [`block::build_block`] packs bundles into a [`types::Block`] whose header commits to a namespace table (one
//! Merkle root per registered rollup's batch, [`registry`]); other validators check it with
//! [`block::validate_block`]. [`proof`] builds and checks the proofs a rollup operator verifies a batch with.
//! The Malachite BFT engine decides one block hash per height; [`context`] gives the engine its types and
//! signatures, and [`host::Host`] answers each engine step (propose, receive parts, commit a decision, sync).
//! [`origin`] ties blocks to L1: each header names an L1 block, and forced-inclusion entries of the L1 inbox
//! that are overdue by then must be in the block. [`bench`] keeps a validator that misses its turn out of the proposer rotation for a while, as chain state.
//! [`epoch`] is the validator-set function: who validates the next epoch, from a table of staked keys.
//! [`check`] judges a whole run (submissions and every node's chain): forks, lost, duplicated, split bundles.
//! `sim` (feature `sim`, and in tests) runs whole networks of these on a virtual clock over a faulty network.
//!
//! Nothing here touches sockets, disk, threads or the wall clock: storage is the [`store::ChainStore`] trait and
//! time the [`host::Clock`] trait, each with an in-memory implementation here and a real one in `baton-node`.

pub mod bench;
pub mod block;
pub mod bundle;
pub mod check;
pub mod context;
pub mod epoch;
pub mod error;
pub mod evidence;
pub mod hash;
pub mod host;
pub mod mempool;
pub mod origin;
pub mod params;
pub mod proof;
pub mod registry;
pub mod sigcache;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod store;
pub mod types;

pub use error::{BlockError, BundleError, ConsensusError, ProofError};
pub use hash::Hash;
pub use types::{
    Address, BatchEntry, Block, BlockHeader, Bundle, BundleEntry, Certificate, L1Origin,
    RollupBatch, RollupId,
};
