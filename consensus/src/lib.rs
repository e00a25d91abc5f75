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
//! `fixtures` (feature `test-utils`, and in tests) holds the keys, contexts, headers and certified blocks every
//! crate's tests start from.
//!
//! Nothing here touches sockets, disk, threads or the wall clock: storage is the [`store::ChainStore`] trait and
//! time the [`host::Clock`] trait, each with an in-memory implementation here and a real one in `baton-node`.
//!
//! Layers: the modules import each other without a cycle (`tests/layers.rs` checks it). The leaves are [`hash`] and
//! [`ids`] (addresses, rollup ids, heights, L1 origins); above them [`signing`], [`validators`], [`bundle`] (with
//! its rules); then [`bench`](mod@bench), [`epoch`], [`evidence`], [`types`], [`parts`] (proposal parts), [`view`]
//! (the chain view the rules read), [`origin`] (the L1 rules); then [`context`] (the engine's context, votes,
//! signer and verifier), [`block`], [`mempool`], [`nonces`], [`store`], [`proof`], and [`host`] on top.
//!
//! One path per type: each type is named by its module (`baton_consensus::bundle::Bundle`,
//! `baton_consensus::ids::Address`), and the crate root re-exports nothing, so a reader and a `use` line always
//! agree on where a type lives.

pub mod bench;
pub mod block;
pub mod bundle;
pub mod check;
pub mod context;
pub mod epoch;
pub mod error;
pub mod evidence;
#[cfg(any(test, feature = "test-utils"))]
pub mod fixtures;
pub mod hash;
pub mod host;
pub mod ids;
pub mod mempool;
pub mod nonces;
pub mod origin;
pub mod params;
pub mod parts;
pub mod proof;
pub mod registry;
pub mod sigcache;
pub mod signing;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod store;
pub mod types;
pub mod validators;
pub mod view;
