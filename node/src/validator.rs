//! The node runner's staking flow against the L1 `BatonStaking` contract: register a consensus key with stake,
//! read its position, request an exit, withdraw after the exit delay (the `baton validator` commands).
//!
//! Every call is simulated first (`eth_call`), so a refusal comes back as the contract's own error, decoded and
//! explained ("key not allowlisted", "exit delay not over until L1 block N"), before anything is sent or paid;
//! then the transaction is sent and its receipt awaited. Joining the set itself needs nothing more: the node
//! (started with `validator = true`) follows the chain and signs from the epoch whose set includes its key.

use alloy::network::EthereumWallet;
use alloy::primitives::{Address as EthAddress, B256, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use baton_l1_inclusion::contracts::BatonStaking;
use baton_l1_inclusion::contracts::BatonStaking::BatonStakingErrors;
use baton_l1_inclusion::redact::{redact_url, scrub};

use crate::error::NodeError;
use crate::keys::NodeKey;

/// Where the staking contract is and who pays.
#[derive(Clone)]
pub struct StakingClient {
    provider: DynProvider,
    contract: EthAddress,
    /// The account that sends transactions (the stake's owner), if any (status needs none).
    from: Option<EthAddress>,
}

/// A consensus key's standing in the contract.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub consensus_key: B256,
    /// Zero when the key is not registered.
    pub owner: EthAddress,
    pub attester: EthAddress,
    pub stake_wei: U256,
    /// L1 block from which the stake can be withdrawn; 0 while not exiting.
    pub withdrawable_at: u64,
    pub allowlisted: bool,
    pub allowlist_enabled: bool,
    pub min_stake_wei: U256,
    pub l1_block: u64,
}

/// A governance change scheduled in the staking contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// The L1 block the scheduling landed in.
    pub block: u64,
    pub id: B256,
    /// The earliest L1 time (unix seconds) it may be executed.
    pub executable_at: u64,
}

impl Position {
    pub fn registered(&self) -> bool {
        self.owner != EthAddress::ZERO
    }
}

/// Parses an amount of ETH such as `3`, `0.5` or `32.000000000000000001` into wei.
pub fn parse_eth(s: &str) -> Result<U256, NodeError> {
    let bad = || NodeError::Config(format!("`{s}` is not an amount of ETH (e.g. 3 or 0.5)"));
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    if whole.is_empty() && frac.is_empty() || frac.len() > 18 {
        return Err(bad());
    }
    if !whole
        .chars()
        .chain(frac.chars())
        .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let digits = format!("{whole}{frac:0<18}");
    U256::from_str_radix(digits.trim_start_matches('0').max("0"), 10).map_err(|_| bad())
}

/// Formats wei as ETH.
pub fn format_eth(wei: U256) -> String {
    let unit = U256::from(10u64).pow(U256::from(18u64));
    let whole = wei / unit;
    let frac = wei % unit;
    if frac.is_zero() {
        return format!("{whole} ETH");
    }
    let frac = format!("{frac:0>18}");
    format!("{whole}.{} ETH", frac.trim_end_matches('0'))
}

/// The consensus key as the contract names it (the Ed25519 public key's 32 bytes).
pub fn consensus_key(key: &NodeKey) -> B256 {
    B256::from(key.signing_key.verification_key().to_bytes())
}

fn l1_error(call: &str, e: impl std::fmt::Display) -> NodeError {
    NodeError::L1(format!("{call}: {e}"))
}

/// Turns a refused call into the contract's reason.
fn refusal(call: &str, e: alloy::contract::Error) -> NodeError {
    let reason = match e.as_decoded_interface_error::<BatonStakingErrors>() {
        Some(BatonStakingErrors::NotAllowlisted(_)) => {
            "the key is not allowlisted and registration is not open yet (ask governance to allowlist it)"
                .to_string()
        }
        Some(BatonStakingErrors::AlreadyRegistered(_)) => "the key is already registered".into(),
        Some(BatonStakingErrors::NotRegistered(_)) => "the key is not registered".into(),
        Some(BatonStakingErrors::NotOwner(o)) => format!(
            "{} does not own this stake; its owner is {} (use the owner's --l1-key)",
            o.caller, o.owner
        ),
        Some(BatonStakingErrors::StakeTooLow(s)) => format!(
            "stake {} is below the minimum {}",
            format_eth(s.amount),
            format_eth(s.minimum)
        ),
        Some(BatonStakingErrors::ZeroAttester(_)) => "the attester address is zero".into(),
        Some(BatonStakingErrors::KeyOwnedBy(o)) => format!(
            "only {} may register this key (it was allowlisted for, or first registered by, that address)",
            o.owner
        ),
        Some(BatonStakingErrors::AttesterTaken(t)) => format!(
            "attester {} already serves consensus key {} (every key needs an attester of its own)",
            t.attester, t.consensusKey
        ),
        Some(BatonStakingErrors::AttesterIsBound(b)) => format!(
            "this key's attester is {} for good (genesis, or its first registration): register with that one",
            b.attester
        ),
        Some(BatonStakingErrors::BadAttesterSignature(b)) => format!(
            "attester {} did not agree to serve this key for this owner (wrong --attester-key?)",
            b.attester
        ),
        Some(BatonStakingErrors::InCommittedSet(_)) => {
            "the key is still in the validator set L1 commitments are checked against: withdraw once the \
             commitments contract has rotated to a set without it"
                .into()
        }
        Some(BatonStakingErrors::Exiting(_)) => "the key has already asked to exit".into(),
        Some(BatonStakingErrors::NotExiting(_)) => {
            "the key has not asked to exit (run `baton validator exit` first)".into()
        }
        Some(BatonStakingErrors::NotGovernance(_)) => {
            "only the contract's governance address may do this (use its --l1-key)".into()
        }
        Some(BatonStakingErrors::RegistrationIsOpen(_)) => {
            "registration is open to anyone: governance can no longer remove validators".into()
        }
        Some(BatonStakingErrors::AlreadyScheduled(_)) => {
            "this change is already scheduled (execute it once due, or cancel it)".into()
        }
        Some(BatonStakingErrors::NotScheduled(_)) => {
            "this change is not scheduled (schedule it first; it may have been executed or cancelled)".into()
        }
        Some(BatonStakingErrors::TooEarly(t)) => format!(
            "the governance delay is not over: L1 time {} now, executable from {} ({} s to go)",
            t.now_,
            t.executableAt,
            t.executableAt.saturating_sub(t.now_)
        ),
        Some(BatonStakingErrors::ExitDelayNotOver(d)) => format!(
            "the exit delay is not over: L1 block {} now, withdrawable from block {}",
            d.now_, d.withdrawableAt
        ),
        Some(other) => format!("{other:?}"),
        None => e.to_string(),
    };
    NodeError::L1(format!("{call} refused: {reason}"))
}

impl StakingClient {
    /// A client for `contract` on the L1 at `rpc_url`; `owner` signs transactions (not needed for status).
    pub fn new(
        rpc_url: &str,
        contract: EthAddress,
        owner: Option<PrivateKeySigner>,
    ) -> Result<Self, NodeError> {
        let url = rpc_url
            .parse::<alloy::transports::http::reqwest::Url>()
            .map_err(|e| {
                NodeError::Config(format!(
                    "L1 RPC URL {}: {}",
                    redact_url(rpc_url),
                    scrub(&e.to_string(), rpc_url)
                ))
            })?;
        let from = owner.as_ref().map(|o| o.address());
        let provider = match owner {
            Some(o) => ProviderBuilder::new()
                .wallet(EthereumWallet::from(o))
                .connect_http(url)
                .erased(),
            None => ProviderBuilder::new().connect_http(url).erased(),
        };
        Ok(StakingClient {
            provider,
            contract,
            from,
        })
    }

    fn contract(&self) -> BatonStaking::BatonStakingInstance<DynProvider> {
        BatonStaking::new(self.contract, self.provider.clone())
    }

    fn sender(&self, call: &str) -> Result<EthAddress, NodeError> {
        self.from.ok_or_else(|| {
            NodeError::Config(format!("{call} needs --l1-key (the stake owner's key)"))
        })
    }

    /// The key's position and the contract's rules.
    pub async fn position(&self, key: B256) -> Result<Position, NodeError> {
        let c = self.contract();
        let s = c
            .stakes(key)
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.stakes", e))?;
        let allowlisted = c
            .allowlisted(key)
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.allowlisted", e))?;
        let allowlist_enabled = c
            .allowlistEnabled()
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.allowlistEnabled", e))?;
        let min_stake_wei = c
            .minStake()
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.minStake", e))?;
        let l1_block = self
            .provider
            .get_block_number()
            .await
            .map_err(|e| l1_error("eth_blockNumber", e))?;
        Ok(Position {
            consensus_key: key,
            owner: s.owner,
            attester: s.attester,
            stake_wei: s.amount,
            withdrawable_at: s.withdrawableAt,
            allowlisted,
            allowlist_enabled,
            min_stake_wei,
            l1_block,
        })
    }

    /// Registers the node's consensus key with `stake` wei, `attester` signing its L1 attestations. Returns the
    /// L1 block it landed in.
    ///
    /// The registration carries the consensus key's proof of possession (its Ed25519 signature binding this
    /// contract, the key, the owner and the attester; the nodes ignore a registration without a valid one) and
    /// the attester's agreement (its ECDSA signature binding the chain, this contract, the key and the owner; the
    /// contract refuses a registration without it, and an attester already serving another key).
    pub async fn register(
        &self,
        node_key: &NodeKey,
        attester: &PrivateKeySigner,
        stake: U256,
    ) -> Result<u64, NodeError> {
        let owner = self.sender("register")?;
        let key = consensus_key(node_key);
        let chain_id = self
            .provider
            .get_chain_id()
            .await
            .map_err(|e| l1_error("eth_chainId", e))?;
        let agreement = baton_l1_inclusion::staking::attester_signature(
            attester,
            chain_id,
            self.contract,
            key,
            owner,
        )
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let proof = baton_l1_inclusion::staking::prove(
            &node_key.signing_key,
            self.contract,
            owner,
            attester.address(),
        );
        let c = self.contract();
        self.transact(
            "register",
            c.register(key, attester.address(), agreement.into(), proof.into())
                .value(stake),
        )
        .await
    }

    /// Adds `amount` wei to the key's stake.
    pub async fn increase(&self, key: B256, amount: U256) -> Result<u64, NodeError> {
        let c = self.contract();
        self.transact("increase", c.increase(key).value(amount))
            .await
    }

    /// Asks to leave: out of the set from the next epoch whose set is computed after this L1 block.
    pub async fn request_exit(&self, key: B256) -> Result<u64, NodeError> {
        let c = self.contract();
        self.transact("requestExit", c.requestExit(key)).await
    }

    /// Governance: schedules allowing `key` to register while the allowlist is on, by `owner` only (so nobody can
    /// front-run its registration); timelocked: executable `governanceDelay` seconds later, by anyone, with
    /// [`StakingClient::execute_allowlist`].
    pub async fn schedule_allowlist(
        &self,
        key: B256,
        owner: EthAddress,
    ) -> Result<Scheduled, NodeError> {
        let c = self.contract();
        let block = self
            .transact("scheduleAllowlist", c.scheduleAllowlist(key, owner))
            .await?;
        let id = c
            .allowlistId(key)
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.allowlistId", e))?;
        self.scheduled(block, id).await
    }

    /// Allows `key` to register, as scheduled, once the governance delay is over (anyone may send it).
    pub async fn execute_allowlist(&self, key: B256) -> Result<u64, NodeError> {
        let c = self.contract();
        self.transact("executeAllowlist", c.executeAllowlist(key))
            .await
    }

    /// Governance: takes `key` off the allowlist at once (cancelling its allowlisting if still scheduled).
    pub async fn disallow(&self, key: B256) -> Result<u64, NodeError> {
        let c = self.contract();
        self.transact("disallow", c.disallow(key)).await
    }

    /// Governance: cancels the scheduled allowlisting of `key`.
    pub async fn cancel_allowlist(&self, key: B256) -> Result<u64, NodeError> {
        let c = self.contract();
        let id = c
            .allowlistId(key)
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.allowlistId", e))?;
        self.transact("cancel", c.cancel(id)).await
    }

    /// Governance, permissioned phase only: removes `key` from the next set at once (its owner withdraws after
    /// the exit delay).
    pub async fn remove(&self, key: B256) -> Result<u64, NodeError> {
        let c = self.contract();
        self.transact("remove", c.remove(key)).await
    }

    /// Governance: schedules letting anyone register (irreversible once executed, by anyone, with
    /// [`StakingClient::execute_open_registration`] after the governance delay).
    pub async fn schedule_open_registration(&self) -> Result<Scheduled, NodeError> {
        let c = self.contract();
        let block = self
            .transact("scheduleOpenRegistration", c.scheduleOpenRegistration())
            .await?;
        let id = c
            .openRegistrationId()
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.openRegistrationId", e))?;
        self.scheduled(block, id).await
    }

    /// Lets anyone register from now on, as scheduled, once the governance delay is over (anyone may send it).
    pub async fn execute_open_registration(&self) -> Result<u64, NodeError> {
        let c = self.contract();
        self.transact("executeOpenRegistration", c.executeOpenRegistration())
            .await
    }

    /// Governance: cancels the scheduled opening of registration.
    pub async fn cancel_open_registration(&self) -> Result<u64, NodeError> {
        let c = self.contract();
        let id = c
            .openRegistrationId()
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.openRegistrationId", e))?;
        self.transact("cancel", c.cancel(id)).await
    }

    async fn scheduled(&self, block: u64, id: B256) -> Result<Scheduled, NodeError> {
        let executable_at = self
            .contract()
            .readyAt(id)
            .call()
            .await
            .map_err(|e| l1_error("BatonStaking.readyAt", e))?;
        Ok(Scheduled {
            block,
            id,
            executable_at,
        })
    }

    /// The latest L1 block's timestamp (unix seconds): the clock governance delays run on.
    pub async fn l1_time(&self) -> Result<u64, NodeError> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| l1_error("eth_getBlockByNumber", e))?
            .ok_or_else(|| NodeError::L1("eth_getBlockByNumber: no latest block".into()))?;
        Ok(block.header.timestamp)
    }

    /// Waits until the latest L1 block's timestamp reaches `time` (at most `timeout`).
    pub async fn wait_for_l1_time(
        &self,
        time: u64,
        timeout: std::time::Duration,
    ) -> Result<(), NodeError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = self.l1_time().await?;
            if now >= time {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(NodeError::L1(format!(
                    "L1 time {now} did not reach {time} within {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Pays the stake back to its owner once the exit delay is over.
    pub async fn withdraw(&self, key: B256) -> Result<u64, NodeError> {
        let c = self.contract();
        self.transact("withdraw", c.withdraw(key)).await
    }

    /// Sends `call` from the owner's account: simulated first (a refusal comes back as the contract's reason and
    /// nothing is sent), then mined. Returns the L1 block it landed in.
    async fn transact<D: alloy::contract::CallDecoder>(
        &self,
        name: &str,
        call: alloy::contract::CallBuilder<&DynProvider, D>,
    ) -> Result<u64, NodeError> {
        let call = call.from(self.sender(name)?);
        call.call().await.map_err(|e| refusal(name, e))?;
        self.mined(name, call.send().await).await
    }

    async fn mined(
        &self,
        call: &str,
        sent: Result<
            alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
            alloy::contract::Error,
        >,
    ) -> Result<u64, NodeError> {
        let pending = sent.map_err(|e| refusal(call, e))?;
        let receipt = pending
            .with_timeout(Some(std::time::Duration::from_secs(120)))
            .get_receipt()
            .await
            .map_err(|e| l1_error(call, e))?;
        if !receipt.status() {
            return Err(NodeError::L1(format!(
                "{call}: transaction {} reverted",
                receipt.transaction_hash
            )));
        }
        Ok(receipt.block_number.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eth_amounts_parse_and_print() {
        let eth = U256::from(10u64).pow(U256::from(18u64));
        assert_eq!(parse_eth("3").unwrap(), U256::from(3u64) * eth);
        assert_eq!(parse_eth("0.5").unwrap(), eth / U256::from(2u64));
        assert_eq!(parse_eth("0.000000000000000001").unwrap(), U256::from(1u64));
        assert_eq!(parse_eth("0").unwrap(), U256::ZERO);
        for bad in [
            "",
            ".",
            "1e18",
            "-1",
            "0.0000000000000000001",
            "1.2.3",
            "abc",
        ] {
            assert!(parse_eth(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(format_eth(U256::from(3u64) * eth), "3 ETH");
        assert_eq!(format_eth(eth / U256::from(4u64)), "0.25 ETH");
    }
}
