//! # baton-l1-inclusion: Baton on Ethereum L1
//!
//! Bird's-eye view: validators decide Baton blocks; each holds an L1 attestation key and signs
//! [`commitment::AttestationDomain::digest`] of decided headers, and the [`poster::Poster`] puts a header plus more
//! than 2/3 of those signatures on the [`contracts::BatonCommitments`] contract, following each transaction
//! through pending → included → safe → finalized, re-posting after reorgs, repairing its nonce and bumping fees
//! itself. The [`contracts::BatonInbox`] is where based rollups are ordered by L1 proposers and where anyone can
//! force an entry into a shared rollup; the [`watcher::Watcher`] follows its events on the canonical chain at a
//! chosen safety, rolling them back on reorgs, and [`based::Deriver`] turns a based rollup's inbox events into its
//! batches ([`blobs`] reads batches posted as EIP-4844 blobs); [`sender::InboxSender`] posts batches to the
//! inbox (calldata or blobs by size) with the same nonce and fee discipline as the poster.
//! [`contracts::BatonStaking`] holds validator stakes (allowlist first, then open) and [`staking`] reads its
//! events for the validator-set function. [`anvil`] starts the pinned local L1 used by tests and `baton devnet`.
//!
//! This crate depends on `baton-consensus` for domain types only; the node wires it to the chain.

pub mod anvil;
pub mod based;
pub mod blobs;
pub mod commitment;
pub mod contracts;
pub mod error;
pub mod poster;
pub mod redact;
pub mod sender;
pub mod staking;
pub mod watcher;

pub use error::L1Error;
