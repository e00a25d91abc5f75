// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title BatonInbox
/// @notice The L1 inbox Baton derives from.
///
/// * `post` / `postBlobs`: anyone posts a batch of signed Baton bundles for a rollup, as calldata or as EIP-4844
///   blobs. For a rollup registered as `based`, L1 proposers order these transactions and Baton serves that order
///   (L1 block, transaction index, log index). Batches for other rollups are ignored by Baton.
/// * `forceInclude`: anyone queues one payload for a rollup Baton orders (`shared`). Each entry gets the next
///   queue index and a deadline `forcedInclusionDelay` L1 blocks away; Baton's validators must include it in a
///   block whose L1 origin has reached the deadline, or that block is invalid.
contract BatonInbox {
    uint256 public constant MAX_BATCH_BYTES = 131072;
    uint256 public constant MAX_FORCED_PAYLOAD_BYTES = 65536;

    /// @notice L1 blocks a forced entry may wait before the Baton chain must include it.
    uint64 public immutable forcedInclusionDelay;
    /// @notice Wei a forced inclusion costs (kept by the contract; spam control).
    uint256 public immutable forcedInclusionFee;
    /// @notice Forced entries queued so far (the next entry's index).
    uint64 public forcedCount;

    event BatchPosted(uint64 indexed rollupId, address indexed sender, bytes data);
    event BlobBatchPosted(uint64 indexed rollupId, address indexed sender, bytes32[] blobHashes);
    event ForcedInclusion(
        uint64 indexed rollupId, uint64 indexed index, address indexed sender, uint64 deadline, bytes payload
    );

    error EmptyBatch();
    error BatchTooLarge(uint256 length, uint256 limit);
    error NoBlobs();
    error EmptyPayload();
    error PayloadTooLarge(uint256 length, uint256 limit);
    error WrongFee(uint256 paid, uint256 fee);

    constructor(uint64 forcedInclusionDelay_, uint256 forcedInclusionFee_) {
        forcedInclusionDelay = forcedInclusionDelay_;
        forcedInclusionFee = forcedInclusionFee_;
    }

    /// @notice Posts a batch (borsh-encoded list of signed bundles) for `rollupId` as calldata.
    function post(uint64 rollupId, bytes calldata data) external {
        if (data.length == 0) revert EmptyBatch();
        if (data.length > MAX_BATCH_BYTES) revert BatchTooLarge(data.length, MAX_BATCH_BYTES);
        emit BatchPosted(rollupId, msg.sender, data);
    }

    /// @notice Posts a batch for `rollupId` carried in this transaction's blobs (in blob order).
    function postBlobs(uint64 rollupId) external {
        uint256 n;
        while (blobhash(n) != bytes32(0)) n++;
        if (n == 0) revert NoBlobs();
        bytes32[] memory hashes = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            hashes[i] = blobhash(i);
        }
        emit BlobBatchPosted(rollupId, msg.sender, hashes);
    }

    /// @notice Queues `payload` for `rollupId`; Baton must include it once its L1 origin reaches the deadline.
    function forceInclude(uint64 rollupId, bytes calldata payload) external payable returns (uint64 index) {
        if (msg.value != forcedInclusionFee) revert WrongFee(msg.value, forcedInclusionFee);
        if (payload.length == 0) revert EmptyPayload();
        if (payload.length > MAX_FORCED_PAYLOAD_BYTES) {
            revert PayloadTooLarge(payload.length, MAX_FORCED_PAYLOAD_BYTES);
        }
        index = forcedCount++;
        emit ForcedInclusion(rollupId, index, msg.sender, uint64(block.number) + forcedInclusionDelay, payload);
    }
}
