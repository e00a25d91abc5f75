// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title BatonCommitments
/// @notice Holds the history of Baton ordering commitments that rollup contracts settle against.
///
/// A commitment is a Baton block header (borsh-encoded, exactly as the validators hashed it) plus secp256k1
/// signatures of the validators' L1 attestation keys over the EIP-712 message
/// `Commitment(uint64 height,bytes32 blockHash)`. The contract recomputes the block hash from the header
/// (SHA-256 over "baton/header/v1" || header), reads height, validator-set hash and batches root (the header's
/// namespace root) from the header's fixed prefix, and accepts it only if the signers hold more than 2/3 of the
/// current set's voting power and the header names the current set.
///
/// The set follows Baton's epochs through `rotate`: the commitment of an epoch's last block, whose header names the
/// next set's hash (`next_validator_set_hash`, 64 bytes before the header's end), with that set's members; each
/// member's attester is the one its consensus key is bound to in `BatonStaking` (`attesterOf`: unique, agreed to by the
/// attester, permanent, and for genesis validators the one genesis lists). Governance can still replace the
/// set directly, e.g. for a chain without staking. A header that changes the set is accepted only through `rotate`:
/// `commit` refuses it (`SetChangeNeedsRotate`), or anyone copying its attestations could commit its height first
/// and leave the contract on the old set for good.
///
/// Governance is timelocked. Whoever holds the governance key could otherwise replace the attesting set with keys
/// of its choosing and have a commitment signed by them accepted in the same block, before any rollup watching L1
/// could react. So every governance change (the attesting set, the staking contract, governance itself) is first
/// scheduled (`scheduleSetValidators`, `scheduleSetStaking`, `scheduleSetGovernance`: an event carrying the full
/// change and the earliest time it may take effect), then executed by anyone (`executeSetValidators`, ...) once
/// `governanceDelay` seconds have passed; governance may `cancel` it before. None of these is exempt: each one
/// decides whose signatures count, and a fresh deployment names its staking contract in the constructor. The cost:
/// governance cannot swap out a compromised attesting set faster than the delay either (validators leaving Baton's
/// set go through `rotate` at the next epoch as before). Real deployments: a delay of 2 days (172800 s) or more,
/// longer than rollups need to notice and react (pause settlement, exit); tests and devnets use seconds.
interface IBatonStaking {
    /// The attester bound to a key (zero if none): permanent, so a member that withdrew still has it.
    function attesterOf(bytes32 consensusKey) external view returns (address);
}

contract BatonCommitments {
    struct Commitment {
        uint64 height;
        bytes32 blockHash;
        bytes32 batchesRoot;
        bytes32 validatorSetHash;
        uint64 l1Block;
    }

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant COMMITMENT_TYPEHASH = keccak256("Commitment(uint64 height,bytes32 blockHash)");
    bytes32 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    // Offsets in the borsh-encoded header: height u64 LE (0), parent hash (8), timestamp u64 (40), proposer (48),
    // validator-set hash (68), bundles root (100), namespace root (132).
    uint256 private constant SET_HASH_OFFSET = 68;
    uint256 private constant NAMESPACE_ROOT_OFFSET = 132;
    uint256 private constant MIN_HEADER_LEN = 164;
    uint256 public constant MAX_HEADER_LEN = 16384;
    uint256 public constant MAX_ATTESTERS = 256;

    address public governance;
    /// The `BatonStaking` contract `rotate` reads attesters from (zero: rotation off).
    address public staking;
    /// Seconds between scheduling a governance change and the earliest time it may be executed.
    uint64 public immutable governanceDelay;
    /// Scheduled governance changes: the change's id (`setValidatorsId`, `setStakingId`, `setGovernanceId`) =>
    /// the earliest time (unix seconds) it may be executed; 0 if not scheduled.
    mapping(bytes32 => uint64) public readyAt;
    bytes32 public validatorSetHash;
    uint64 public totalPower;
    address[] private attesterList;
    mapping(address => uint64) public attesterPower;

    mapping(uint64 => Commitment) private byHeight;
    uint64[] private heights;

    event Committed(uint64 indexed height, bytes32 indexed blockHash, bytes32 batchesRoot, bytes32 validatorSetHash);
    event ValidatorSetChanged(bytes32 indexed validatorSetHash, uint64 totalPower, uint256 attesters);
    event GovernanceChanged(address indexed governance);
    event StakingChanged(address indexed staking);
    /// A replacement of the attesting set, executable from `executableAt` (unix seconds).
    event ValidatorsScheduled(
        bytes32 indexed id, address[] attesters, uint64[] powers, bytes32 validatorSetHash, uint64 executableAt
    );
    event StakingScheduled(bytes32 indexed id, address staking, uint64 executableAt);
    event GovernanceScheduled(bytes32 indexed id, address governance, uint64 executableAt);
    /// A scheduled change taken back by governance.
    event Cancelled(bytes32 indexed id);
    /// A scheduled change that took effect (with its own `...Changed` event).
    event Executed(bytes32 indexed id);

    error NotGovernance(address caller);
    error BadValidatorSet(string reason);
    error BadHeader(uint256 length);
    error WrongValidatorSet(bytes32 got, bytes32 expected);
    error HeightNotAfterLatest(uint64 height, uint64 latest);
    error BadSignature(uint256 index);
    error SignerNotAttester(uint256 index, address signer);
    error SignersNotAscending(uint256 index);
    error InsufficientPower(uint64 signed, uint64 total);
    error RotationOff();
    error NoNewSet(bytes32 setHash);
    error NotAscending(uint256 index);
    error NotStaked(uint256 index, bytes32 consensusKey);
    error WrongNextSet(bytes32 got, bytes32 named);
    error SetChangeNeedsRotate(bytes32 nextSet, bytes32 currentSet);
    error AlreadyScheduled(bytes32 id);
    error NotScheduled(bytes32 id);
    error TooEarly(bytes32 id, uint64 now_, uint64 executableAt);

    /// @param staking_ The `BatonStaking` contract `rotate` reads attesters from (zero: rotation off); named here so
    ///        a fresh deployment needs no (delayed) governance call.
    /// @param governanceDelay_ Seconds a governance change waits between being scheduled and taking effect: 2 days
    ///        or more on a real deployment.
    constructor(
        address governance_,
        address staking_,
        uint64 governanceDelay_,
        address[] memory attesters_,
        uint64[] memory powers,
        bytes32 setHash
    ) {
        governance = governance_;
        staking = staking_;
        governanceDelay = governanceDelay_;
        emit GovernanceChanged(governance_);
        emit StakingChanged(staking_);
        _setValidators(attesters_, powers, setHash);
    }

    modifier onlyGovernance() {
        if (msg.sender != governance) revert NotGovernance(msg.sender);
        _;
    }

    /// @notice Schedules replacing the attesting set (the L1 keys of Baton's validator set `setHash`), executable
    /// `governanceDelay` seconds from now. Emits `ValidatorsScheduled` with the whole set.
    /// @dev Delayed because it decides whose signatures count: with an instant replacement, the governance key
    /// alone could install attesters of its choosing and get any header committed in the same block.
    function scheduleSetValidators(address[] calldata attesters_, uint64[] calldata powers, bytes32 setHash)
        external
        onlyGovernance
    {
        if (attesters_.length == 0 || attesters_.length > MAX_ATTESTERS) revert BadValidatorSet("1..=256 attesters");
        if (attesters_.length != powers.length) revert BadValidatorSet("one power per attester");
        bytes32 id = setValidatorsId(attesters_, powers, setHash);
        emit ValidatorsScheduled(id, attesters_, powers, setHash, _schedule(id));
    }

    /// @notice Replaces the attesting set as scheduled, once due. Anyone may call it.
    function executeSetValidators(address[] calldata attesters_, uint64[] calldata powers, bytes32 setHash) external {
        _execute(setValidatorsId(attesters_, powers, setHash));
        _setValidators(attesters_, powers, setHash);
    }

    /// @notice Schedules naming the contract `rotate` reads the new members' attesters from (zero: rotation off).
    /// @dev Delayed because that contract decides the attesters of every set `rotate` installs.
    function scheduleSetStaking(address staking_) external onlyGovernance {
        bytes32 id = setStakingId(staking_);
        emit StakingScheduled(id, staking_, _schedule(id));
    }

    /// @notice Names the staking contract as scheduled, once due. Anyone may call it.
    function executeSetStaking(address staking_) external {
        _execute(setStakingId(staking_));
        staking = staking_;
        emit StakingChanged(staking_);
    }

    /// @notice Schedules handing governance to `next`.
    /// @dev Delayed like the rest: a new governance could otherwise schedule changes watchers never saw it gain
    /// the right to make. Changes already scheduled stay scheduled; the new governance may cancel them.
    function scheduleSetGovernance(address next) external onlyGovernance {
        bytes32 id = setGovernanceId(next);
        emit GovernanceScheduled(id, next, _schedule(id));
    }

    /// @notice Hands governance over as scheduled, once due. Anyone may call it.
    function executeSetGovernance(address next) external {
        _execute(setGovernanceId(next));
        governance = next;
        emit GovernanceChanged(next);
    }

    /// @notice Takes back a scheduled change before it is executed.
    function cancel(bytes32 id) external onlyGovernance {
        if (readyAt[id] == 0) revert NotScheduled(id);
        delete readyAt[id];
        emit Cancelled(id);
    }

    /// @notice The id of a scheduled replacement of the attesting set.
    function setValidatorsId(address[] calldata attesters_, uint64[] calldata powers, bytes32 setHash)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(this.executeSetValidators.selector, attesters_, powers, setHash));
    }

    function setStakingId(address staking_) public pure returns (bytes32) {
        return keccak256(abi.encode(this.executeSetStaking.selector, staking_));
    }

    function setGovernanceId(address next) public pure returns (bytes32) {
        return keccak256(abi.encode(this.executeSetGovernance.selector, next));
    }

    function _schedule(bytes32 id) private returns (uint64 executableAt) {
        if (readyAt[id] != 0) revert AlreadyScheduled(id);
        executableAt = uint64(block.timestamp) + governanceDelay;
        readyAt[id] = executableAt;
    }

    function _execute(bytes32 id) private {
        uint64 at = readyAt[id];
        if (at == 0) revert NotScheduled(id);
        if (block.timestamp < at) revert TooEarly(id, uint64(block.timestamp), at);
        delete readyAt[id];
        emit Executed(id);
    }

    /// @notice Accepts an ordering commitment. `signatures` are 65-byte (r, s, v) signatures, their signers in
    /// strictly ascending address order.
    /// @dev Refuses a header whose next-validator-set hash differs from the current set's (an epoch's last block):
    /// that one must go through `rotate`. Heights must increase, so were `commit` to accept it (anyone can copy the
    /// header and attestations from a pending `rotate` or from any node), `rotate` of that height could never land
    /// and the contract would stay on the old set, refusing every later commitment.
    function commit(bytes calldata header, bytes[] calldata signatures) external {
        _accept(header, signatures);
        bytes32 next = _nextSetHash(header);
        if (next != validatorSetHash) revert SetChangeNeedsRotate(next, validatorSetHash);
    }

    /// @notice Accepts the commitment of an epoch's last block and moves to the set its header names for the next
    /// height. `keys` are that set's Ed25519 consensus keys in ascending Baton address order (the first 20 bytes
    /// of SHA-256 of the key) and `powers` their voting powers: together they must hash to the named set, exactly as
    /// Baton hashes it. Each key's attester is read from `BatonStaking`.
    function rotate(
        bytes calldata header,
        bytes[] calldata signatures,
        bytes32[] calldata keys,
        uint64[] calldata powers
    ) external {
        if (staking == address(0)) revert RotationOff();
        _accept(header, signatures);
        bytes32 next = _nextSetHash(header);
        if (next == validatorSetHash) revert NoNewSet(next);
        uint256 n = keys.length;
        if (n == 0 || n > MAX_ATTESTERS) revert BadValidatorSet("1..=256 attesters");
        if (n != powers.length) revert BadValidatorSet("one power per key");
        // borsh of Vec<([u8; 20], [u8; 32], u64)>: u32 LE length, then address, key, power (u64 LE) per row.
        bytes memory rows = new bytes(4 + 60 * n);
        rows[0] = bytes1(uint8(n));
        rows[1] = bytes1(uint8(n >> 8));
        address[] memory attesters_ = new address[](n);
        bytes20 last;
        for (uint256 i = 0; i < n; i++) {
            bytes20 a = bytes20(sha256(abi.encodePacked(keys[i])));
            if (i > 0 && a <= last) revert NotAscending(i);
            last = a;
            uint256 at = 4 + 60 * i;
            for (uint256 k = 0; k < 20; k++) {
                rows[at + k] = a[k];
            }
            for (uint256 k = 0; k < 32; k++) {
                rows[at + 20 + k] = keys[i][k];
            }
            for (uint256 k = 0; k < 8; k++) {
                rows[at + 52 + k] = bytes1(uint8(powers[i] >> (8 * k)));
            }
            // The key's permanent binding, not its stake: a member of this set that withdrew before the rotation
            // landed cannot make it revert (`BatonStaking.withdraw` refuses only while a key is in *this*
            // contract's set).
            address attester = IBatonStaking(staking).attesterOf(keys[i]);
            if (attester == address(0)) revert NotStaked(i, keys[i]);
            attesters_[i] = attester;
        }
        bytes32 got = sha256(abi.encodePacked("baton/validator-set/v1", rows));
        if (got != next) revert WrongNextSet(got, next);
        _setValidators(attesters_, powers, next);
    }

    function _accept(bytes calldata header, bytes[] calldata signatures) private {
        if (header.length < MIN_HEADER_LEN || header.length > MAX_HEADER_LEN) revert BadHeader(header.length);
        uint64 height = _u64le(header[0:8]);
        bytes32 setHash = bytes32(header[SET_HASH_OFFSET:SET_HASH_OFFSET + 32]);
        bytes32 batchesRoot = bytes32(header[NAMESPACE_ROOT_OFFSET:NAMESPACE_ROOT_OFFSET + 32]);
        if (setHash != validatorSetHash) revert WrongValidatorSet(setHash, validatorSetHash);
        uint64 latest = heights.length == 0 ? 0 : heights[heights.length - 1];
        if (height <= latest) revert HeightNotAfterLatest(height, latest);
        bytes32 blockHash = sha256(abi.encodePacked("baton/header/v1", header));

        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", domainSeparator(), commitmentHash(height, blockHash)));
        uint64 signed;
        address last;
        for (uint256 i = 0; i < signatures.length; i++) {
            address signer = _recover(digest, signatures[i], i);
            if (signer <= last) revert SignersNotAscending(i);
            last = signer;
            uint64 p = attesterPower[signer];
            if (p == 0) revert SignerNotAttester(i, signer);
            signed += p;
        }
        if (uint256(signed) * 3 <= uint256(totalPower) * 2) revert InsufficientPower(signed, totalPower);

        byHeight[height] = Commitment(height, blockHash, batchesRoot, setHash, uint64(block.number));
        heights.push(height);
        emit Committed(height, blockHash, batchesRoot, setHash);
    }

    /// @notice The EIP-712 struct hash attesters sign.
    function commitmentHash(uint64 height, bytes32 blockHash) public pure returns (bytes32) {
        return keccak256(abi.encode(COMMITMENT_TYPEHASH, height, blockHash));
    }

    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("BatonCommitments"), keccak256("1"), block.chainid, address(this))
        );
    }

    /// @notice The most recent commitment's height (0 before the first).
    function latestHeight() external view returns (uint64) {
        return heights.length == 0 ? 0 : heights[heights.length - 1];
    }

    function commitmentCount() external view returns (uint256) {
        return heights.length;
    }

    /// @notice The `index`-th commitment in the order they were accepted (heights ascend).
    function commitmentAtIndex(uint256 index) external view returns (Commitment memory) {
        return byHeight[heights[index]];
    }

    /// @notice The commitment of Baton height `height`; all zero (height 0) if none was accepted.
    function commitmentAt(uint64 height) external view returns (Commitment memory) {
        return byHeight[height];
    }

    /// @notice Whether `batchesRoot` is the committed batches root of Baton height `height`: what a rollup
    /// contract checks a namespace proof's root against.
    function isCommitted(uint64 height, bytes32 blockHash, bytes32 batchesRoot) external view returns (bool) {
        Commitment storage c = byHeight[height];
        return c.height != 0 && c.blockHash == blockHash && c.batchesRoot == batchesRoot;
    }

    function attesters() external view returns (address[] memory) {
        return attesterList;
    }

    function _setValidators(address[] memory attesters_, uint64[] memory powers, bytes32 setHash) private {
        if (attesters_.length == 0 || attesters_.length > MAX_ATTESTERS) revert BadValidatorSet("1..=256 attesters");
        if (attesters_.length != powers.length) revert BadValidatorSet("one power per attester");
        for (uint256 i = 0; i < attesterList.length; i++) {
            delete attesterPower[attesterList[i]];
        }
        delete attesterList;
        uint64 total;
        for (uint256 i = 0; i < attesters_.length; i++) {
            if (attesters_[i] == address(0)) revert BadValidatorSet("zero attester address");
            if (powers[i] == 0) revert BadValidatorSet("zero power");
            if (attesterPower[attesters_[i]] != 0) revert BadValidatorSet("attester listed twice");
            attesterPower[attesters_[i]] = powers[i];
            attesterList.push(attesters_[i]);
            total += powers[i];
        }
        totalPower = total;
        validatorSetHash = setHash;
        emit ValidatorSetChanged(setHash, total, attesters_.length);
    }

    function _recover(bytes32 digest, bytes calldata sig, uint256 index) private pure returns (address) {
        if (sig.length != 65) revert BadSignature(index);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if ((v != 27 && v != 28) || uint256(s) > uint256(HALF_ORDER)) revert BadSignature(index);
        address signer = ecrecover(digest, v, r, s);
        if (signer == address(0)) revert BadSignature(index);
        return signer;
    }

    /// The header's `next_validator_set_hash`: the last field but one (`evidence_root` ends it). `_accept` has
    /// checked the header's length.
    function _nextSetHash(bytes calldata header) private pure returns (bytes32) {
        return bytes32(header[header.length - 64:header.length - 32]);
    }

    function _u64le(bytes calldata b) private pure returns (uint64 x) {
        for (uint256 i = 0; i < 8; i++) {
            x |= uint64(uint8(b[i])) << uint64(8 * i);
        }
    }
}
