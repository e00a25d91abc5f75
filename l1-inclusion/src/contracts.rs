//! Bindings to Baton's L1 contracts, generated from the committed artifacts (`contracts/artifacts/*.json`, built
//! from `contracts/src/*.sol` by `contracts/build.js` with the pinned solc-js; a test checks they match).

#![allow(missing_docs, clippy::too_many_arguments)]

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    BatonCommitments,
    "contracts/artifacts/BatonCommitments.json"
);

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    BatonInbox,
    "contracts/artifacts/BatonInbox.json"
);
