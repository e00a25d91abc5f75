// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title BatonStaking
/// @notice Who may validate Baton: consensus keys with stake (ETH on this L1).
///
/// * `register(consensusKey, attester)` with at least `minStake`: while the allowlist is on, only allowlisted keys
///   may register; opening registration turns it off for good (anyone may then stake).
/// * `increase(consensusKey)` adds stake; `requestExit(consensusKey)` leaves (out of the next set);
///   `withdraw(consensusKey)` pays the stake back to its owner `exitDelay` L1 blocks after the request.
/// * Baton derives each epoch's validator set from these events at a finalized L1 origin (top stakes above the
///   minimum, voting power from stake); the contract itself keeps no ranking.
///
/// Governance is timelocked where it adds to who may validate, so rollups and validators watching L1 see it coming:
/// allowlisting a key (`scheduleAllowlist`, then `executeAllowlist` by anyone after `governanceDelay` seconds) and
/// opening registration to anyone (`scheduleOpenRegistration`, then `executeOpenRegistration`), both announced by a
/// `...Scheduled` event with the earliest execution time and cancellable by governance (`cancel`). What only takes
/// power away is immediate, since a misbehaving validator may need to go fast and it cannot put keys of
/// governance's choosing in the set: `disallow` (withdraws an allowlisting not yet used, cancelling one still
/// scheduled) and `remove` (permissioned phase: the validator exits as if it had asked, at the next epoch).
/// Initial allowlisted keys (and an open registration) are constructor arguments, so a fresh deployment needs no
/// delayed call. Real deployments: 2 days (172800 s) or more; tests and devnets use seconds.
///
/// Identity (issue 16 item 2). A registration names a consensus key, its owner (the sender) and an attester; three
/// rules keep anyone from taking a place that is not theirs:
///
/// * **The key's holder agrees** (proof of possession). `register` carries `proof`, an Ed25519 signature by the
///   consensus key over `proofMessage(consensusKey, owner, attester)` (domain tag, this contract, key, owner,
///   attester). The EVM has no Ed25519 precompile, so the contract only checks its length and publishes it in
///   `Registered`; every Baton node checks it when it folds the events into the set function and ignores a
///   registration without a valid proof, so an unproven registration never gets power. Who may register a key at
///   all is bound on-chain: an allowlisted key (a genesis validator's, or one governance allowlists) only by the
///   owner named with it, so nobody can front-run its registration; any key, once registered, only by the owner
///   it was first registered by (`ownerOf`, permanent). What remains: with registration open, a front-runner can
///   take a *fresh* key first. That registration is unproven, so it gets nothing, and the key's holder uses
///   another key (`baton keys generate`); it cannot take a place in any set.
/// * **The attester agrees and is unique**. Binding a key to an attester needs an ECDSA signature by the attester
///   over `attesterDigest(consensusKey, owner)` (with the chain id and this contract), and an attester is bound
///   to one key only (`keyOf`). So nobody can name someone else's attester, and no two keys of a set can share
///   one, which would make `BatonCommitments.rotate` revert for good.
/// * **One source of attesters**. The binding key => attester (`attesterOf`) is permanent: a key registers again
///   only with the same attester, and the binding survives a withdrawal. `BatonCommitments.rotate` reads it, the
///   nodes read it from the same events, and the genesis validators' bindings are constructor arguments equal to
///   genesis (`deploy` takes them from there), so the nodes' genesis attesters and the contract's agree.
/// * **No withdrawal from under the committed set**. Once governance has named the commitments contract
///   (`setCommitments`, once), `withdraw` refuses while the key's attester holds power there, i.e. while the
///   contract still holds a set with the key in it. A member of a set not yet rotated in can withdraw, but the
///   rotation still lands (the attester binding outlives the stake).
interface IBatonCommitmentsPower {
    function attesterPower(address attester) external view returns (uint64);
}

contract BatonStaking {
    struct Stake {
        address owner;
        address attester;
        uint256 amount;
        /// L1 block from which the stake can be withdrawn; 0 while not exiting.
        uint64 withdrawableAt;
    }

    address public governance;
    bool public allowlistEnabled = true;
    uint256 public immutable minStake;
    uint64 public immutable exitDelay;
    /// Seconds between scheduling a governance change and the earliest time it may be executed.
    uint64 public immutable governanceDelay;
    /// Scheduled governance changes: the change's id (`allowlistId`, `openRegistrationId`) => the earliest time
    /// (unix seconds) it may be executed; 0 if not scheduled.
    mapping(bytes32 => uint64) public readyAt;

    mapping(bytes32 => bool) public allowlisted;
    mapping(bytes32 => Stake) public stakes;
    /// The only address that may register a key: bound by allowlisting it or by its first registration; permanent.
    mapping(bytes32 => address) public ownerOf;
    /// The owner a scheduled allowlisting binds the key to.
    mapping(bytes32 => address) public scheduledOwner;
    /// Each key's attester: bound by its first registration (or at deployment for genesis keys); permanent.
    mapping(bytes32 => address) public attesterOf;
    /// Each attester's key (the reverse of `attesterOf`): an attester serves one key only.
    mapping(address => bytes32) public keyOf;
    /// The `BatonCommitments` contract whose current set a stake cannot be withdrawn from under (zero: not named
    /// yet; named once by governance, since that contract is deployed after this one and names it).
    address public commitments;

    bytes32 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    event Registered(
        bytes32 indexed consensusKey, address indexed owner, address attester, uint256 amount, bytes proof
    );
    event Increased(bytes32 indexed consensusKey, uint256 amount);
    event ExitRequested(bytes32 indexed consensusKey, uint64 withdrawableAt);
    event Withdrawn(bytes32 indexed consensusKey, uint256 amount);
    event Allowlisted(bytes32 indexed consensusKey, bool allowed);
    /// `consensusKey` bound to `attester` (and its registration to `owner`) for good.
    event AttesterBound(bytes32 indexed consensusKey, address indexed attester, address owner);
    event CommitmentsSet(address commitments);
    event RegistrationOpened();
    event AllowlistScheduled(bytes32 indexed id, bytes32 indexed consensusKey, address owner, uint64 executableAt);
    event OpenRegistrationScheduled(bytes32 indexed id, uint64 executableAt);
    /// A scheduled change taken back by governance.
    event Cancelled(bytes32 indexed id);
    /// A scheduled change that took effect (with its own event).
    event Executed(bytes32 indexed id);

    error NotGovernance();
    error NotAllowlisted(bytes32 consensusKey);
    error AlreadyRegistered(bytes32 consensusKey);
    error NotRegistered(bytes32 consensusKey);
    error NotOwner(address caller, address owner);
    error StakeTooLow(uint256 amount, uint256 minimum);
    error ZeroAttester();
    error Exiting(bytes32 consensusKey);
    error NotExiting(bytes32 consensusKey);
    error ExitDelayNotOver(uint64 now_, uint64 withdrawableAt);
    error TransferFailed();
    error RegistrationIsOpen();
    error AlreadyScheduled(bytes32 id);
    error NotScheduled(bytes32 id);
    error TooEarly(bytes32 id, uint64 now_, uint64 executableAt);
    error ZeroKey();
    error ZeroOwner();
    error KeyOwnedBy(bytes32 consensusKey, address owner);
    error BadProof(bytes32 consensusKey);
    error AttesterTaken(address attester, bytes32 consensusKey);
    error AttesterIsBound(bytes32 consensusKey, address attester);
    error BadAttesterSignature(address attester);
    error InCommittedSet(bytes32 consensusKey, address attester);
    error CommitmentsAlreadySet(address commitments);
    error BadGenesis(string reason);

    /// @param governanceDelay_ Seconds an allowlisting or the opening of registration waits between being
    ///        scheduled and taking effect: 2 days or more on a real deployment.
    /// @param genesisKeys Keys allowlisted from the start (the genesis validators), no delay, each bound to its
    ///        owner (`genesisOwners`, the only address that may register it) and its attester (`genesisAttesters`,
    ///        the attester genesis lists for it, which `BatonCommitments` starts with).
    /// @param open_ Registration open to anyone from the start.
    constructor(
        uint256 minStake_,
        uint64 exitDelay_,
        address governance_,
        uint64 governanceDelay_,
        bytes32[] memory genesisKeys,
        address[] memory genesisOwners,
        address[] memory genesisAttesters,
        bool open_
    ) {
        minStake = minStake_;
        exitDelay = exitDelay_;
        governance = governance_;
        governanceDelay = governanceDelay_;
        if (genesisOwners.length != genesisKeys.length || genesisAttesters.length != genesisKeys.length) {
            revert BadGenesis("one owner and one attester per key");
        }
        for (uint256 i = 0; i < genesisKeys.length; i++) {
            bytes32 k = genesisKeys[i];
            if (k == bytes32(0)) revert ZeroKey();
            if (genesisOwners[i] == address(0)) revert ZeroOwner();
            if (genesisAttesters[i] == address(0)) revert ZeroAttester();
            if (attesterOf[k] != address(0)) revert BadGenesis("key listed twice");
            bytes32 taken = keyOf[genesisAttesters[i]];
            if (taken != bytes32(0)) revert AttesterTaken(genesisAttesters[i], taken);
            allowlisted[k] = true;
            ownerOf[k] = genesisOwners[i];
            attesterOf[k] = genesisAttesters[i];
            keyOf[genesisAttesters[i]] = k;
            emit Allowlisted(k, true);
            emit AttesterBound(k, genesisAttesters[i], genesisOwners[i]);
        }
        if (open_) {
            allowlistEnabled = false;
            emit RegistrationOpened();
        }
    }

    modifier onlyGovernance() {
        if (msg.sender != governance) revert NotGovernance();
        _;
    }

    /// @notice Schedules allowlisting `consensusKey` for `owner` (the only address that may then register it),
    /// executable `governanceDelay` seconds from now.
    /// @dev Delayed: it lets a key of governance's choosing stake its way into the set, which must be visible
    /// before it can register. The owner is bound so that nobody can front-run the key's registration.
    function scheduleAllowlist(bytes32 consensusKey, address owner) external onlyGovernance {
        if (consensusKey == bytes32(0)) revert ZeroKey();
        if (owner == address(0)) revert ZeroOwner();
        address bound = ownerOf[consensusKey];
        if (bound != address(0) && bound != owner) revert KeyOwnedBy(consensusKey, bound);
        bytes32 id = allowlistId(consensusKey);
        uint64 at = _schedule(id);
        scheduledOwner[consensusKey] = owner;
        emit AllowlistScheduled(id, consensusKey, owner, at);
    }

    /// @notice Allowlists `consensusKey` as scheduled, once due, for the owner named then. Anyone may call it.
    function executeAllowlist(bytes32 consensusKey) external {
        _execute(allowlistId(consensusKey));
        address owner = scheduledOwner[consensusKey];
        delete scheduledOwner[consensusKey];
        address bound = ownerOf[consensusKey];
        if (bound != address(0) && bound != owner) revert KeyOwnedBy(consensusKey, bound);
        ownerOf[consensusKey] = owner;
        allowlisted[consensusKey] = true;
        emit Allowlisted(consensusKey, true);
    }

    /// @notice Takes `consensusKey` off the allowlist at once, and cancels its allowlisting if still scheduled.
    /// A registration already made stays (see `remove`).
    /// @dev Immediate: it can only keep a key out.
    function disallow(bytes32 consensusKey) external onlyGovernance {
        bytes32 id = allowlistId(consensusKey);
        if (readyAt[id] != 0) {
            delete readyAt[id];
            emit Cancelled(id);
        }
        allowlisted[consensusKey] = false;
        emit Allowlisted(consensusKey, false);
    }

    /// @notice Schedules opening registration to anyone (irreversible once executed).
    /// @dev Delayed: it hands the choice of who may stake from governance to anyone, and ends `remove`.
    function scheduleOpenRegistration() external onlyGovernance {
        if (!allowlistEnabled) revert RegistrationIsOpen();
        bytes32 id = openRegistrationId();
        emit OpenRegistrationScheduled(id, _schedule(id));
    }

    /// @notice Lets anyone register from now on (cannot be undone), as scheduled, once due. Anyone may call it.
    function executeOpenRegistration() external {
        _execute(openRegistrationId());
        allowlistEnabled = false;
        emit RegistrationOpened();
    }

    /// @notice Takes back a scheduled change before it is executed.
    function cancel(bytes32 id) external onlyGovernance {
        if (readyAt[id] == 0) revert NotScheduled(id);
        delete readyAt[id];
        emit Cancelled(id);
    }

    function allowlistId(bytes32 consensusKey) public pure returns (bytes32) {
        return keccak256(abi.encode(this.executeAllowlist.selector, consensusKey));
    }

    function openRegistrationId() public pure returns (bytes32) {
        return keccak256(abi.encode(this.executeOpenRegistration.selector));
    }

    /// @notice Permissioned phase only (allowlist on): governance removes a validator. It leaves as if it had asked
    ///         to exit (out of the next set computed after this block; its owner withdraws after the delay).
    /// @dev Immediate: a misbehaving validator may need to go fast, and removing one adds no one to the set.
    function remove(bytes32 consensusKey) external onlyGovernance {
        if (!allowlistEnabled) revert RegistrationIsOpen();
        Stake storage s = stakes[consensusKey];
        if (s.owner == address(0)) revert NotRegistered(consensusKey);
        if (s.withdrawableAt != 0) revert Exiting(consensusKey);
        s.withdrawableAt = uint64(block.number) + exitDelay;
        emit ExitRequested(consensusKey, s.withdrawableAt);
    }

    /// @notice Governance names the `BatonCommitments` contract, once (it is deployed after this contract and
    /// names it in its constructor). From then on `withdraw` refuses while that contract's set holds the key.
    function setCommitments(address commitments_) external onlyGovernance {
        if (commitments != address(0)) revert CommitmentsAlreadySet(commitments);
        commitments = commitments_;
        emit CommitmentsSet(commitments_);
    }

    /// @notice Stakes `consensusKey` with `msg.value`, the sender its owner and `attester` signing its L1
    /// attestations.
    /// @param attesterSignature The attester's 65-byte ECDSA signature of `attesterDigest(consensusKey, sender)`:
    ///        needed when the key has no attester yet (ignored when it is bound, then `attester` must be it).
    /// @param proof The consensus key's 64-byte Ed25519 signature of `proofMessage(consensusKey, sender,
    ///        attester)`. Checked by the nodes, not here (no Ed25519 in the EVM): without a valid one the
    ///        registration is ignored by the set function.
    function register(bytes32 consensusKey, address attester, bytes calldata attesterSignature, bytes calldata proof)
        external
        payable
    {
        if (consensusKey == bytes32(0)) revert ZeroKey();
        if (allowlistEnabled && !allowlisted[consensusKey]) revert NotAllowlisted(consensusKey);
        if (stakes[consensusKey].owner != address(0)) revert AlreadyRegistered(consensusKey);
        address owner = ownerOf[consensusKey];
        if (owner != address(0) && owner != msg.sender) revert KeyOwnedBy(consensusKey, owner);
        if (attester == address(0)) revert ZeroAttester();
        if (proof.length != 64) revert BadProof(consensusKey);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        address bound = attesterOf[consensusKey];
        if (bound == address(0)) {
            bytes32 taken = keyOf[attester];
            if (taken != bytes32(0)) revert AttesterTaken(attester, taken);
            if (_recover(attesterDigest(consensusKey, msg.sender), attesterSignature) != attester) {
                revert BadAttesterSignature(attester);
            }
            attesterOf[consensusKey] = attester;
            keyOf[attester] = consensusKey;
            emit AttesterBound(consensusKey, attester, msg.sender);
        } else if (bound != attester) {
            revert AttesterIsBound(consensusKey, bound);
        }
        ownerOf[consensusKey] = msg.sender;
        stakes[consensusKey] = Stake({owner: msg.sender, attester: attester, amount: msg.value, withdrawableAt: 0});
        emit Registered(consensusKey, msg.sender, attester, msg.value, proof);
    }

    /// @notice What a key's attester signs (raw ECDSA over this digest) to agree to serve `consensusKey`
    /// registered by `owner`, on this chain and contract.
    function attesterDigest(bytes32 consensusKey, address owner) public view returns (bytes32) {
        return keccak256(
            abi.encode(keccak256("baton/staking/attester/v1"), block.chainid, address(this), consensusKey, owner)
        );
    }

    /// @notice What the consensus key signs (Ed25519) as proof of possession: the domain tag, this contract, the
    /// key, the owner and the attester, concatenated (the 36-byte tag, then 20 + 32 + 20 + 20 bytes).
    function proofMessage(bytes32 consensusKey, address owner, address attester) public view returns (bytes memory) {
        return abi.encodePacked("baton/staking/proof-of-possession/v1", address(this), consensusKey, owner, attester);
    }

    function increase(bytes32 consensusKey) external payable {
        Stake storage s = owned(consensusKey);
        if (s.withdrawableAt != 0) revert Exiting(consensusKey);
        s.amount += msg.value;
        emit Increased(consensusKey, msg.value);
    }

    function requestExit(bytes32 consensusKey) external {
        Stake storage s = owned(consensusKey);
        if (s.withdrawableAt != 0) revert Exiting(consensusKey);
        s.withdrawableAt = uint64(block.number) + exitDelay;
        emit ExitRequested(consensusKey, s.withdrawableAt);
    }

    function withdraw(bytes32 consensusKey) external {
        Stake storage s = owned(consensusKey);
        if (s.withdrawableAt == 0) revert NotExiting(consensusKey);
        if (block.number < s.withdrawableAt) revert ExitDelayNotOver(uint64(block.number), s.withdrawableAt);
        if (commitments != address(0) && IBatonCommitmentsPower(commitments).attesterPower(s.attester) != 0) {
            revert InCommittedSet(consensusKey, s.attester);
        }
        uint256 amount = s.amount;
        address owner = s.owner;
        delete stakes[consensusKey];
        emit Withdrawn(consensusKey, amount);
        (bool ok,) = owner.call{value: amount}("");
        if (!ok) revert TransferFailed();
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

    function _recover(bytes32 digest, bytes calldata sig) private pure returns (address) {
        if (sig.length != 65) return address(0);
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if (v < 27) v += 27;
        if ((v != 27 && v != 28) || uint256(s) > uint256(HALF_ORDER)) return address(0);
        return ecrecover(digest, v, r, s);
    }

    function owned(bytes32 consensusKey) private view returns (Stake storage s) {
        s = stakes[consensusKey];
        if (s.owner == address(0)) revert NotRegistered(consensusKey);
        if (s.owner != msg.sender) revert NotOwner(msg.sender, s.owner);
    }
}
