// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title BatonStaking
/// @notice Who may validate Baton: consensus keys with stake (ETH on this L1).
///
/// * `register(consensusKey, attester)` with at least `minStake`: while the allowlist is on, only keys
///   governance allowlisted may register; `openRegistration` turns it off for good (anyone may then stake).
/// * `increase(consensusKey)` adds stake; `requestExit(consensusKey)` leaves (out of the next set);
///   `withdraw(consensusKey)` pays the stake back to its owner `exitDelay` L1 blocks after the request.
/// * Baton derives each epoch's validator set from these events at a finalized L1 origin (top stakes above the
///   minimum, voting power from stake); the contract itself keeps no ranking.
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

    mapping(bytes32 => bool) public allowlisted;
    mapping(bytes32 => Stake) public stakes;

    event Registered(bytes32 indexed consensusKey, address indexed owner, address attester, uint256 amount);
    event Increased(bytes32 indexed consensusKey, uint256 amount);
    event ExitRequested(bytes32 indexed consensusKey, uint64 withdrawableAt);
    event Withdrawn(bytes32 indexed consensusKey, uint256 amount);
    event Allowlisted(bytes32 indexed consensusKey, bool allowed);
    event RegistrationOpened();

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

    constructor(uint256 minStake_, uint64 exitDelay_, address governance_) {
        minStake = minStake_;
        exitDelay = exitDelay_;
        governance = governance_;
    }

    modifier onlyGovernance() {
        if (msg.sender != governance) revert NotGovernance();
        _;
    }

    function setAllowlisted(bytes32 consensusKey, bool allowed) external onlyGovernance {
        allowlisted[consensusKey] = allowed;
        emit Allowlisted(consensusKey, allowed);
    }

    /// @notice Lets anyone register from now on (cannot be undone).
    function openRegistration() external onlyGovernance {
        allowlistEnabled = false;
        emit RegistrationOpened();
    }

    /// @notice Permissioned phase only (allowlist on): governance removes a validator. It leaves as if it had asked
    ///         to exit (out of the next set computed after this block; its owner withdraws after the delay).
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

    function owned(bytes32 consensusKey) private view returns (Stake storage s) {
        s = stakes[consensusKey];
        if (s.owner == address(0)) revert NotRegistered(consensusKey);
        if (s.owner != msg.sender) revert NotOwner(msg.sender, s.owner);
    }
}
