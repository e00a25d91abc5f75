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

    event Registered(bytes32 indexed consensusKey, address indexed owner, address attester, uint256 amount);
    event Increased(bytes32 indexed consensusKey, uint256 amount);
    event ExitRequested(bytes32 indexed consensusKey, uint64 withdrawableAt);
    event Withdrawn(bytes32 indexed consensusKey, uint256 amount);
    event Allowlisted(bytes32 indexed consensusKey, bool allowed);
    event RegistrationOpened();
    event AllowlistScheduled(bytes32 indexed id, bytes32 indexed consensusKey, uint64 executableAt);
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

    /// @param governanceDelay_ Seconds an allowlisting or the opening of registration waits between being
    ///        scheduled and taking effect: 2 days or more on a real deployment.
    /// @param allowlisted_ Keys allowlisted from the start (the genesis validators), no delay.
    /// @param open_ Registration open to anyone from the start.
    constructor(
        uint256 minStake_,
        uint64 exitDelay_,
        address governance_,
        uint64 governanceDelay_,
        bytes32[] memory allowlisted_,
        bool open_
    ) {
        minStake = minStake_;
        exitDelay = exitDelay_;
        governance = governance_;
        governanceDelay = governanceDelay_;
        for (uint256 i = 0; i < allowlisted_.length; i++) {
            allowlisted[allowlisted_[i]] = true;
            emit Allowlisted(allowlisted_[i], true);
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

    /// @notice Schedules allowlisting `consensusKey`, executable `governanceDelay` seconds from now.
    /// @dev Delayed: it lets a key of governance's choosing stake its way into the set, which must be visible
    /// before it can register.
    function scheduleAllowlist(bytes32 consensusKey) external onlyGovernance {
        bytes32 id = allowlistId(consensusKey);
        emit AllowlistScheduled(id, consensusKey, _schedule(id));
    }

    /// @notice Allowlists `consensusKey` as scheduled, once due. Anyone may call it.
    function executeAllowlist(bytes32 consensusKey) external {
        _execute(allowlistId(consensusKey));
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

    function register(bytes32 consensusKey, address attester) external payable {
        if (allowlistEnabled && !allowlisted[consensusKey]) revert NotAllowlisted(consensusKey);
        if (stakes[consensusKey].owner != address(0)) revert AlreadyRegistered(consensusKey);
        if (attester == address(0)) revert ZeroAttester();
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        stakes[consensusKey] = Stake({owner: msg.sender, attester: attester, amount: msg.value, withdrawableAt: 0});
        emit Registered(consensusKey, msg.sender, attester, msg.value);
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

    function owned(bytes32 consensusKey) private view returns (Stake storage s) {
        s = stakes[consensusKey];
        if (s.owner == address(0)) revert NotRegistered(consensusKey);
        if (s.owner != msg.sender) revert NotOwner(msg.sender, s.owner);
    }
}
