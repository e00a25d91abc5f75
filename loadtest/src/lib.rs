//! # baton-loadtest: a black-box load generator for Baton
//!
//! Bird's-eye view: [`run::run`] offers signed bundles at an open-loop rate (with a linear ramp) over
//! `SubmitBundles` streams, follows every rollup's `StreamBatches`, and times each bundle from submission to the
//! moment its last entry is delivered; it checks that every acknowledged bundle is delivered exactly once and at
//! one height. At the end [`chain`] reads every endpoint's chain and the run checker (`baton_proto::check`)
//! looks for forks and for lost, duplicated, unknown or split bundles across all nodes. [`tracker`] keeps the
//! run's accounting (answers, retries, what each sender holds back, deliveries); [`report`] holds the report and
//! writes it as JSON, a summary and SVG plots. [`devnet`] can start a local network to point at. [`plan`] signs every bundle
//! of a step before its timed window; [`procstat`] reads what each process used from `/proc` and [`nodemetrics`] the slow writes
//! and heights each node counted; [`idle`] measures an
//! idle network and the latency of a lone bundle after a quiet spell.
//! It uses only the public gRPC API (`baton-proto`).

pub mod chain;
pub mod devnet;
pub mod floor;
pub mod idle;
pub mod nodemetrics;
pub mod plan;
pub mod procstat;
pub mod report;
pub mod run;
pub mod tracker;
