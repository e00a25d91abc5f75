//! A client for Baton's API: connect, sign and submit bundles, read their status, and pull a rollup's batches,
//! optionally **verified**: every batch checked against the validator set the caller trusts (entries -> batch root
//! -> namespace proof -> header -> commit certificate), and a stream checked for order and gaps.

use alloy_primitives::B256;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

use baton_consensus::bundle::Bundle;
use baton_consensus::bundle::{Sender, UnsignedBundle};
use baton_consensus::error::ProofError;
use baton_consensus::hash::Hash;
use baton_consensus::ids::RollupId;
use baton_consensus::proof::verify_batch;
use baton_consensus::signing::ChainDomain;
use baton_consensus::types::Dropped;
use baton_consensus::types::RollupBatch;
use baton_consensus::validators::ValidatorSet;
use tonic::transport::{Channel, Endpoint};

use crate::convert::{
    hash_field, parse_batch_proof, validator_set_field, BasedItem, ConversionError,
};
use crate::pb;
use crate::pb::node_service_client::NodeServiceClient;
use crate::pb::rollup_service_client::RollupServiceClient;

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("server returned {}: {}", .0.code(), .0.message())]
    Status(Box<tonic::Status>),
    #[error("server sent a malformed message: {0}")]
    Malformed(#[from] ConversionError),
    #[error("batch at height {height} failed verification: {error}")]
    Unverified { height: u64, error: ProofError },
    #[error("stream skipped or repeated a height: expected {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("stream sent a batch for rollup {got}, asked for {expected}")]
    WrongRollup { expected: RollupId, got: RollupId },
    #[error("signing failed: {0}")]
    Signing(String),
    #[error(
        "`{field}`: the validator set's hash is {got}, but the trusted checkpoint names {expected}; \
         the set is not the one you trust (wrong height, or the node sent another set)"
    )]
    UntrustedSet {
        field: &'static str,
        expected: Hash,
        got: Hash,
    },
    #[error(
        "batch at height {height} is more than the weak-subjectivity window ({window} heights) past height \
         {trusted_height}, where this verifier last confirmed its validator set; that set's members may have \
         left and withdrawn since, and their old keys can sign anything. Start a verifier from a newer \
         checkpoint (`height:validator-set hash` from a source you trust, not the node you read from) with \
         BatchVerifier::from_checkpoint or BatonClient::verifier_from_checkpoint, or read the heights in order"
    )]
    TrustExpired {
        height: u64,
        trusted_height: u64,
        window: u64,
    },
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        ClientError::Status(Box::new(s))
    }
}

/// Signs a bundle with a local Ethereum key (EIP-712, see `baton_consensus::bundle`).
pub fn sign_bundle(key: &PrivateKeySigner, bundle: UnsignedBundle) -> Result<Bundle, ClientError> {
    let hash = bundle.signing_hash();
    let sig = key
        .sign_hash_sync(&B256::from(hash.0))
        .map_err(|e| ClientError::Signing(e.to_string()))?;
    Ok(bundle.with_signature(sig.as_bytes()))
}

/// Where a bundle stands, as a node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleStatus {
    Pending,
    Included {
        height: u64,
        block_hash: Hash,
        index: u32,
    },
    Expired {
        height: u64,
        reason: String,
    },
    Rejected {
        height: u64,
        reason: String,
    },
}

impl BundleStatus {
    /// The status a node answers for a dropped bundle.
    pub fn from_dropped(d: &Dropped) -> (pb::BundleState, u64, String) {
        match d {
            Dropped::Expired {
                expiry_height,
                height,
            } => (
                pb::BundleState::Expired,
                *height,
                format!("expiry_height {expiry_height} passed before the bundle was included"),
            ),
            Dropped::Rejected { height, reason } => {
                (pb::BundleState::Rejected, *height, reason.clone())
            }
        }
    }
}

/// The default weak-subjectivity window of a [`BatchVerifier`]: how many heights past the last height at which it
/// confirmed its validator set it still verifies (100,000).
///
/// Why a window at all: a set's signatures are worth something only while its members have something to lose.
/// Once they have left the set and withdrawn their stake (`BatonStaking.withdraw`, `exitDelay` L1 blocks after
/// asking to leave), their old keys can sign any header for any height at no cost, and such keys can be bought or
/// leak. A verifier that still trusts that set would accept it. The verifier has no clock, but it knows how far a
/// batch is from where it last confirmed its set: a batch more than the window past it is refused, with an error
/// asking for a newer checkpoint. Reading in order confirms the set at every height, so a following verifier
/// never trips; one that was away longer than the window (or starts from genesis on an old chain) must be given
/// a newer [`TrustedCheckpoint`].
///
/// Why this value: heights are not a clock. A live chain makes at least about two heights a second (an idle
/// proposer proposes every `max_idle_ms`, 500 ms) and up to about fifty under load. A reader asking for recent
/// heights is protected when the window passes faster than a departing validator's stake stays locked: then, by
/// the time an exited set could sign for free, the chain is more than the window past its last height. 100,000
/// heights take at most about 14 hours (idle); keep the staking `exitDelay` longer than that (a day or more), or
/// configure a smaller window with [`BatchVerifier::with_window`]. A smaller window only means needing a fresh
/// checkpoint sooner after a pause.
pub const DEFAULT_TRUST_WINDOW: u64 = 100_000;

/// A starting point for a [`BatchVerifier`] that the reader trusts **from outside the node it reads from**: the
/// hash of the validator set that decides `height` (what `GetValidatorSet(height)` answers as `set_hash`, but
/// obtained from a source you trust: your own node, the chain's operators' published value, a verifier state you
/// saved, [`BatchVerifier::checkpoint`]). The set itself may then come from any node: it is checked against the
/// hash. Written `height:hash` (hash in hex, `0x` optional), e.g. in a config file or on a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedCheckpoint {
    /// A height the set decides (heights start at 1).
    pub height: u64,
    /// The hash of that set (`ValidatorSet::hash`).
    pub set_hash: Hash,
}

impl std::fmt::Display for TrustedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.height, self.set_hash.to_hex())
    }
}

impl std::str::FromStr for TrustedCheckpoint {
    type Err = ConversionError;

    fn from_str(s: &str) -> Result<Self, ConversionError> {
        let (height, hash) = s.trim().split_once(':').ok_or_else(|| {
            ConversionError::Invalid(
                "checkpoint",
                format!("`{s}` is not `height:validator-set hash`"),
            )
        })?;
        let height = height.trim().parse::<u64>().map_err(|e| {
            ConversionError::Invalid("checkpoint.height", format!("`{height}`: {e}"))
        })?;
        let hex = hash.trim();
        let hex = hex.strip_prefix("0x").unwrap_or(hex);
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(ConversionError::Invalid(
                "checkpoint.set_hash",
                format!("`{hash}` is not 32 bytes of hex"),
            ));
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| {
                ConversionError::Invalid(
                    "checkpoint.set_hash",
                    format!("`{hash}` is not 32 bytes of hex"),
                )
            })?;
        }
        TrustedCheckpoint::new(height, Hash(bytes))
    }
}

impl TrustedCheckpoint {
    /// Refuses height 0 (there is no block 0 for a set to decide).
    pub fn new(height: u64, set_hash: Hash) -> Result<Self, ConversionError> {
        if height == 0 {
            return Err(ConversionError::Invalid(
                "checkpoint.height",
                "heights start at 1".into(),
            ));
        }
        Ok(TrustedCheckpoint { height, set_hash })
    }
}

/// Checks batches against a validator set the caller trusts (genesis, or a [`TrustedCheckpoint`] obtained out of
/// band, never the node's word), and follows the set across epochs: a verified header that names another next
/// set, with the batch carrying that set (checked against the signed hash), moves the verifier to it for the
/// following heights. Reading every height in order (a verified stream) therefore never needs to trust the node
/// for a set.
///
/// The verifier knows the set and the height it last confirmed that set at (the checkpoint's height, then one
/// past every batch it verified at or above it). It refuses a batch more than its weak-subjectivity window
/// ([`DEFAULT_TRUST_WINDOW`], [`BatchVerifier::with_window`]) past that height with
/// [`ClientError::TrustExpired`]: the set's members may have left and withdrawn since, and their keys sign for
/// free. A batch below that height is checked against the set but teaches the verifier nothing (it never moves
/// back to an earlier set).
#[derive(Clone, Debug)]
pub struct BatchVerifier {
    validators: ValidatorSet,
    domain: ChainDomain,
    /// The latest height `validators` is known (from the checkpoint or a verified header) to decide.
    trusted_height: u64,
    window: u64,
}

impl BatchVerifier {
    /// A verifier trusting the genesis validator set (for height 1), with the default window: on a chain older
    /// than the window, reading recent heights needs [`BatchVerifier::from_checkpoint`] instead.
    /// `chain_id` is the chain's name in genesis (it separates signatures of different chains).
    pub fn new(genesis_validators: ValidatorSet, chain_id: &str) -> Self {
        BatchVerifier {
            validators: genesis_validators,
            domain: ChainDomain::new(chain_id),
            trusted_height: 1,
            window: DEFAULT_TRUST_WINDOW,
        }
    }

    /// A verifier trusting `validators` for `checkpoint.height`, with the default window. The set may come from
    /// anywhere (e.g. a node's `GetValidatorSet`, see [`BatonClient::verifier_from_checkpoint`]); the trust
    /// comes from the checkpoint, so a set whose hash is not the checkpoint's is refused
    /// ([`ClientError::UntrustedSet`]).
    pub fn from_checkpoint(
        checkpoint: TrustedCheckpoint,
        validators: ValidatorSet,
        chain_id: &str,
    ) -> Result<Self, ClientError> {
        let checkpoint = TrustedCheckpoint::new(checkpoint.height, checkpoint.set_hash)?;
        if validators.hash() != checkpoint.set_hash {
            return Err(ClientError::UntrustedSet {
                field: "validators",
                expected: checkpoint.set_hash,
                got: validators.hash(),
            });
        }
        Ok(BatchVerifier {
            validators,
            domain: ChainDomain::new(chain_id),
            trusted_height: checkpoint.height,
            window: DEFAULT_TRUST_WINDOW,
        })
    }

    /// The same verifier with a weak-subjectivity window of `heights` (see [`DEFAULT_TRUST_WINDOW`] for how to
    /// choose it). 0 accepts only the very next height: reading in order still works.
    pub fn with_window(mut self, heights: u64) -> Self {
        self.window = heights;
        self
    }

    /// The weak-subjectivity window, in heights.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The set the next batch is checked against.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// The latest height the trusted set is known to decide.
    pub fn trusted_height(&self) -> u64 {
        self.trusted_height
    }

    /// Where this verifier stands, as a checkpoint to save and start from later (with the set, or fetching it
    /// with [`BatonClient::verifier_from_checkpoint`]). It is as trustworthy as what the verifier started from.
    pub fn checkpoint(&self) -> TrustedCheckpoint {
        TrustedCheckpoint {
            height: self.trusted_height,
            set_hash: self.validators.hash(),
        }
    }

    /// Decodes and verifies a served batch; the batch must carry a proof. After an epoch's last batch, the set
    /// it hands over checks the next ones. A batch more than the window past the trusted height is refused
    /// before anything else ([`ClientError::TrustExpired`]).
    pub fn verify(&mut self, wire: pb::RollupBatch) -> Result<RollupBatch, ClientError> {
        let height = wire.height;
        if height > self.trusted_height.saturating_add(self.window) {
            return Err(ClientError::TrustExpired {
                height,
                trusted_height: self.trusted_height,
                window: self.window,
            });
        }
        let proof = wire
            .proof
            .clone()
            .ok_or(ConversionError::Missing("proof"))?;
        let next = wire
            .next_validators
            .as_ref()
            .map(|s| validator_set_field("next_validators", s))
            .transpose()?;
        let (namespace, cert) = parse_batch_proof(proof)?;
        let batch: RollupBatch = wire.try_into()?;
        if batch.header.height != height {
            return Err(ClientError::Unverified {
                height,
                error: ProofError::Missing("height field disagrees with header.height"),
            });
        }
        verify_batch(&batch, &namespace, &cert, &self.validators, &self.domain)
            .map_err(|error| ClientError::Unverified { height, error })?;
        if height < self.trusted_height {
            // Checked against the set, but older than what the verifier knows: nothing to follow.
            return Ok(batch);
        }
        let named = batch.header.next_validator_set_hash;
        if named != self.validators.hash() {
            match next {
                Some(set) if set.hash() == named => self.validators = set,
                _ => {
                    return Err(ClientError::Unverified {
                        height,
                        error: ProofError::Missing(
                            "next_validators: the header names a new validator set the batch does not carry",
                        ),
                    })
                }
            }
        }
        self.trusted_height = height.saturating_add(1);
        Ok(batch)
    }
}

/// A connection to one Baton node.
#[derive(Clone, Debug)]
pub struct BatonClient {
    rollup: RollupServiceClient<Channel>,
    node: NodeServiceClient<Channel>,
}

impl BatonClient {
    /// Connects to `endpoint` such as `http://127.0.0.1:50051`.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, ClientError> {
        let channel = Endpoint::from_shared(endpoint.into())
            .map_err(ClientError::Connect)?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Self::from_channel(channel))
    }

    /// Wraps an existing channel (custom TLS, windows, timeouts).
    pub fn from_channel(channel: Channel) -> Self {
        BatonClient {
            rollup: RollupServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            node: NodeServiceClient::new(channel),
        }
    }

    /// Submits a bundle; returns its hash once the node has made it durable.
    pub async fn submit(&mut self, bundle: &Bundle) -> Result<Hash, ClientError> {
        let req = pb::SubmitBundleRequest {
            bundle: Some(bundle.into()),
        };
        let resp = self.rollup.submit_bundle(req).await?.into_inner();
        Ok(hash_field("bundle_hash", &resp.bundle_hash)?)
    }

    /// The raw status answer.
    pub async fn bundle_status_raw(
        &mut self,
        hash: &Hash,
    ) -> Result<pb::GetBundleStatusResponse, ClientError> {
        let req = pb::GetBundleStatusRequest {
            bundle_hash: hash.0.to_vec(),
        };
        Ok(self.rollup.get_bundle_status(req).await?.into_inner())
    }

    /// Where a bundle stands. NOT_FOUND (an error) if the node never saw it.
    pub async fn bundle_status(&mut self, hash: &Hash) -> Result<BundleStatus, ClientError> {
        let r = self.bundle_status_raw(hash).await?;
        Ok(match r.state() {
            pb::BundleState::Included => BundleStatus::Included {
                height: r.height,
                block_hash: hash_field("block_hash", &r.block_hash)?,
                index: r.index_in_block,
            },
            pb::BundleState::Expired => BundleStatus::Expired {
                height: r.height,
                reason: r.reason,
            },
            pb::BundleState::Rejected => BundleStatus::Rejected {
                height: r.height,
                reason: r.reason,
            },
            pb::BundleState::Pending | pb::BundleState::Unspecified => BundleStatus::Pending,
        })
    }

    /// The sender's next nonce on chain and after its bundles pending on this node.
    pub async fn nonce(&mut self, sender: &Sender) -> Result<pb::GetNonceResponse, ClientError> {
        let req = pb::GetNonceRequest {
            sender: sender.to_vec(),
        };
        Ok(self.rollup.get_nonce(req).await?.into_inner())
    }

    pub async fn list_rollups(&mut self) -> Result<pb::ListRollupsResponse, ClientError> {
        Ok(self
            .rollup
            .list_rollups(pb::ListRollupsRequest {})
            .await?
            .into_inner())
    }

    /// A batch without proof (trusting the node).
    pub async fn get_batch(
        &mut self,
        rollup_id: RollupId,
        height: u64,
    ) -> Result<RollupBatch, ClientError> {
        Ok(self
            .fetch_batch(rollup_id, height, false)
            .await?
            .try_into()?)
    }

    /// A batch with its proof, as served (for inspection or custom checks).
    pub async fn get_batch_with_proof(
        &mut self,
        rollup_id: RollupId,
        height: u64,
    ) -> Result<pb::RollupBatch, ClientError> {
        self.fetch_batch(rollup_id, height, true).await
    }

    async fn fetch_batch(
        &mut self,
        rollup_id: RollupId,
        height: u64,
        with_proof: bool,
    ) -> Result<pb::RollupBatch, ClientError> {
        let req = pb::GetBatchRequest {
            rollup_id,
            height,
            with_proof,
        };
        Ok(self.rollup.get_batch(req).await?.into_inner())
    }

    /// A batch checked by `verifier`.
    pub async fn get_verified_batch(
        &mut self,
        rollup_id: RollupId,
        height: u64,
        verifier: &mut BatchVerifier,
    ) -> Result<RollupBatch, ClientError> {
        let wire = self.get_batch_with_proof(rollup_id, height).await?;
        let batch = verifier.verify(wire)?;
        check_rollup(rollup_id, &batch)?;
        if batch.header.height != height {
            return Err(ClientError::OutOfOrder {
                expected: height,
                got: batch.header.height,
            });
        }
        Ok(batch)
    }

    /// Opens a stream of a rollup's batches from `from_height` (without proofs).
    pub async fn stream_batches(
        &mut self,
        rollup_id: RollupId,
        from_height: u64,
    ) -> Result<BatchStream, ClientError> {
        self.open_stream(rollup_id, from_height, None).await
    }

    /// Opens a stream whose every batch is verified and checked to follow the previous one.
    pub async fn stream_verified_batches(
        &mut self,
        rollup_id: RollupId,
        from_height: u64,
        verifier: BatchVerifier,
    ) -> Result<BatchStream, ClientError> {
        self.open_stream(rollup_id, from_height, Some(verifier))
            .await
    }

    /// Opens a based rollup's stream from L1 block `from_l1_block`: batches in L1 order and reorg notices.
    pub async fn stream_based(
        &mut self,
        rollup_id: RollupId,
        from_l1_block: u64,
    ) -> Result<BasedStream, ClientError> {
        let req = pb::StreamBatchesRequest {
            rollup_id,
            from_height: from_l1_block,
            with_proof: false,
        };
        Ok(BasedStream {
            inner: self.rollup.stream_batches(req).await?.into_inner(),
            rollup_id,
            last: from_l1_block.saturating_sub(1),
        })
    }

    /// Proofs are asked for exactly when there is a verifier to check them.
    async fn open_stream(
        &mut self,
        rollup_id: RollupId,
        from_height: u64,
        verifier: Option<BatchVerifier>,
    ) -> Result<BatchStream, ClientError> {
        let req = pb::StreamBatchesRequest {
            rollup_id,
            from_height,
            with_proof: verifier.is_some(),
        };
        Ok(BatchStream {
            inner: self.rollup.stream_batches(req).await?.into_inner(),
            rollup_id,
            next_height: from_height,
            verifier,
        })
    }

    /// The validator set deciding `height` (0: the next height) as the node reports it, with its hash checked.
    /// A reader that must not trust the node follows sets with a [`BatchVerifier`] instead.
    pub async fn validator_set(&mut self, height: u64) -> Result<(u64, ValidatorSet), ClientError> {
        let r = self
            .node
            .get_validator_set(pb::GetValidatorSetRequest { height })
            .await?
            .into_inner();
        let set = validator_set_field(
            "validators",
            r.validators
                .as_ref()
                .ok_or(ConversionError::Missing("validators"))?,
        )?;
        if set.hash() != hash_field("set_hash", &r.set_hash)? {
            return Err(ConversionError::Invalid(
                "set_hash",
                "not the hash of the set sent".into(),
            )
            .into());
        }
        Ok((r.epoch, set))
    }

    /// A verifier starting from `checkpoint`, trusted from outside this node: the node supplies the set deciding
    /// `checkpoint.height` (`GetValidatorSet`), which must hash to `checkpoint.set_hash`
    /// ([`ClientError::UntrustedSet`] otherwise). The node is trusted for nothing.
    pub async fn verifier_from_checkpoint(
        &mut self,
        checkpoint: TrustedCheckpoint,
        chain_id: &str,
    ) -> Result<BatchVerifier, ClientError> {
        let checkpoint = TrustedCheckpoint::new(checkpoint.height, checkpoint.set_hash)?;
        let (_, set) = self.validator_set(checkpoint.height).await?;
        BatchVerifier::from_checkpoint(checkpoint, set, chain_id)
    }

    pub async fn status(&mut self) -> Result<pb::StatusResponse, ClientError> {
        Ok(self.node.status(pb::StatusRequest {}).await?.into_inner())
    }

    /// The raw generated clients, for calls this wrapper does not cover.
    pub fn raw(&self) -> (RollupServiceClient<Channel>, NodeServiceClient<Channel>) {
        (self.rollup.clone(), self.node.clone())
    }
}

fn check_rollup(expected: RollupId, batch: &RollupBatch) -> Result<(), ClientError> {
    if batch.rollup_id != expected {
        return Err(ClientError::WrongRollup {
            expected,
            got: batch.rollup_id,
        });
    }
    Ok(())
}

/// A stream of decoded batches, checked to arrive in height order without gaps (and verified, when opened with
/// [`BatonClient::stream_verified_batches`]).
#[derive(Debug)]
pub struct BatchStream {
    inner: tonic::Streaming<pb::RollupBatch>,
    rollup_id: RollupId,
    next_height: u64,
    verifier: Option<BatchVerifier>,
}

impl BatchStream {
    /// The verifier as it stands after the batches read so far (it follows validator-set changes).
    pub fn verifier(&self) -> Option<&BatchVerifier> {
        self.verifier.as_ref()
    }

    /// The next batch; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<RollupBatch>, ClientError> {
        let Some(wire) = self.inner.message().await? else {
            return Ok(None);
        };
        let batch = match &mut self.verifier {
            Some(v) => v.verify(wire)?,
            None => wire.try_into()?,
        };
        check_rollup(self.rollup_id, &batch)?;
        if batch.header.height != self.next_height {
            return Err(ClientError::OutOfOrder {
                expected: self.next_height,
                got: batch.header.height,
            });
        }
        self.next_height += 1;
        Ok(Some(batch))
    }
}

/// A based rollup's stream, checked to move forward in L1 order except right after a reorg notice (which moves
/// the stream back to the withdrawn block).
#[derive(Debug)]
pub struct BasedStream {
    inner: tonic::Streaming<pb::RollupBatch>,
    rollup_id: RollupId,
    /// The L1 block of the last batch received (or just before the start / the withdrawn range).
    last: u64,
}

impl BasedStream {
    /// The next batch or reorg notice; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<BasedItem>, ClientError> {
        let Some(wire) = self.inner.message().await? else {
            return Ok(None);
        };
        if wire.rollup_id != self.rollup_id {
            return Err(ClientError::WrongRollup {
                expected: self.rollup_id,
                got: wire.rollup_id,
            });
        }
        let item = BasedItem::try_from(wire)?;
        match &item {
            BasedItem::Batch { l1_block, .. } => {
                if l1_block.number <= self.last {
                    return Err(ClientError::OutOfOrder {
                        expected: self.last + 1,
                        got: l1_block.number,
                    });
                }
                self.last = l1_block.number;
            }
            BasedItem::Reorg { from_l1_block, .. } => {
                self.last = self.last.min(from_l1_block.saturating_sub(1));
            }
        }
        Ok(Some(item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::batch_proof;
    use baton_consensus::ids::{Address, L1Origin};
    use baton_consensus::proof::NamespaceProof;
    use baton_consensus::types::{batch_root, namespace_root, NamespaceEntry};
    use baton_consensus::types::{BatchEntry, BlockHeader, Certificate};
    use baton_consensus::validators::Validator;
    use ed25519_consensus::SigningKey;

    const CHAIN: &str = "weak-subjectivity-test";

    /// Four deterministic consensus keys (equal power).
    fn keys(seed: u8) -> Vec<SigningKey> {
        (0..4u8).map(|i| SigningKey::from([seed + i; 32])).collect()
    }

    fn set(keys: &[SigningKey]) -> ValidatorSet {
        ValidatorSet::new(
            keys.iter()
                .map(|k| Validator::new(k.verification_key(), 10))
                .collect(),
        )
        .unwrap()
    }

    fn address(key: &SigningKey) -> Address {
        Validator::new(key.verification_key(), 1).address
    }

    /// A precommit for `hash`, signed as a validator does (`ChainDomain::vote_bytes` for a precommit, rebuilt
    /// byte for byte: this crate does not depend on the engine's `VoteType`).
    fn precommit(key: &SigningKey, height: u64, round: u32, hash: Hash) -> (Address, [u8; 64]) {
        let a = address(key);
        let mut msg = b"baton/vote/v1".to_vec();
        msg.extend_from_slice(&ChainDomain::new(CHAIN).0 .0);
        msg.push(1); // precommit
        msg.extend_from_slice(&height.to_le_bytes());
        msg.extend_from_slice(&round.to_le_bytes());
        msg.push(1); // Some(hash)
        msg.extend_from_slice(&hash.0);
        msg.extend_from_slice(&a.0);
        (a, key.sign(&msg).to_bytes())
    }

    /// Rollup 1's batch at `height` as a node serves it with its proof: one entry `payload`, a header naming
    /// `set` (and `next` for the following height, carried when it differs), certified by `signers`.
    fn batch(
        height: u64,
        set: &ValidatorSet,
        signers: &[SigningKey],
        next: &ValidatorSet,
        payload: &[u8],
    ) -> pb::RollupBatch {
        let entries = vec![BatchEntry {
            bundle_hash: Hash::digest(&[payload]),
            index_in_bundle: 0,
            payload: payload.to_vec(),
        }];
        let row = NamespaceEntry {
            rollup_id: 1,
            batch_root: batch_root(&entries),
            entry_count: 1,
        };
        let header = BlockHeader {
            height,
            parent_hash: Hash::digest(&[&height.to_le_bytes()]),
            timestamp_ms: 1_700_000_000_000 + height,
            proposer: address(&signers[0]),
            validator_set_hash: set.hash(),
            bundles_root: Hash::ZERO,
            namespace_root: namespace_root(&[row]),
            namespace_count: 1,
            bundle_count: 1,
            round: 0,
            bench: Default::default(),
            l1_origin: L1Origin::default(),
            next_validator_set_hash: next.hash(),
            evidence_root: Hash::ZERO,
        };
        let hash = header.hash();
        let cert = Certificate {
            height,
            round: 0,
            block_hash: hash,
            signatures: signers
                .iter()
                .map(|k| precommit(k, height, 0, hash))
                .collect(),
        };
        let b = RollupBatch {
            rollup_id: 1,
            header,
            block_hash: hash,
            entries,
        };
        let mut wire = pb::RollupBatch::from(&b);
        wire.proof = Some(batch_proof(
            &NamespaceProof {
                index: 0,
                path: vec![],
            },
            &cert,
        ));
        if next.hash() != set.hash() {
            wire.next_validators = Some(next.into());
        }
        wire
    }

    /// The attack: set A (genesis) decided heights 1..=100 and handed over to set B at height 100; A's members
    /// exited and withdrew long ago, and their keys are now cheap (bought, leaked). At height 1,000,000 A's keys
    /// sign a batch that never happened. A reader whose verifier starts from genesis and asks for that recent
    /// height must not accept it. Before the window existed, `verify` returned the forged batch as verified.
    #[test]
    fn attack_a_long_exited_set_forges_a_recent_batch() {
        let (ka, kb) = (keys(10), keys(50));
        let (a, b) = (set(&ka), set(&kb));
        // The chain as it was: A hands over to B at height 100 (a verifier reading in order follows it).
        let handover = batch(100, &a, &ka[..3], &b, b"handover");
        let mut follower = BatchVerifier::new(a.clone(), CHAIN);
        follower
            .verify(handover)
            .expect("the real handover verifies");
        assert_eq!(follower.validators().hash(), b.hash());
        assert_eq!(follower.trusted_height(), 101);

        // The forgery: A's old keys sign a batch for a recent height, naming A as the deciding set.
        let forged = batch(
            1_000_000,
            &a,
            &ka[..3],
            &a,
            b"withdraw everything to the attacker",
        );
        let mut from_genesis = BatchVerifier::new(a.clone(), CHAIN);
        let verdict = from_genesis.verify(forged.clone());
        assert!(
            verdict.is_err(),
            "a verifier trusting genesis accepted a batch for height 1,000,000 signed by the set that exited \
             at height 100"
        );
        let err = verdict.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::TrustExpired {
                    height: 1_000_000,
                    trusted_height: 1,
                    window: DEFAULT_TRUST_WINDOW,
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("newer checkpoint"), "{err}");
        // Refused before anything else, and the verifier learned nothing.
        assert_eq!(from_genesis.trusted_height(), 1);
        assert_eq!(from_genesis.validators().hash(), a.hash());
        // The follower (last confirmed at 101) refuses it for the same reason.
        assert!(matches!(
            follower.verify(forged.clone()),
            Err(ClientError::TrustExpired {
                trusted_height: 101,
                ..
            })
        ));

        // What the reader does instead: a checkpoint obtained out of band (B decides height 999,990).
        let checkpoint = TrustedCheckpoint::new(999_990, b.hash()).unwrap();
        let mut fresh = BatchVerifier::from_checkpoint(checkpoint, b.clone(), CHAIN).unwrap();
        assert!(matches!(
            fresh.verify(forged),
            Err(ClientError::Unverified {
                height: 1_000_000,
                error: ProofError::OtherValidatorSet { .. },
            })
        ));
        let real = batch(1_000_000, &b, &kb[1..], &b, b"the real batch");
        fresh.verify(real).expect("B's batch verifies");
        assert_eq!(fresh.checkpoint().height, 1_000_001);
    }

    /// Within its window, a verifier reading in order keeps confirming its set (and follows handovers), so it
    /// never trips; a jump past the window from the last confirmed height does.
    #[test]
    fn the_window_counts_from_the_last_confirmed_height() {
        let (ka, kb) = (keys(10), keys(50));
        let (a, b) = (set(&ka), set(&kb));
        let cp = TrustedCheckpoint::new(100, a.hash()).unwrap();
        let mut v = BatchVerifier::from_checkpoint(cp, a.clone(), CHAIN)
            .unwrap()
            .with_window(10);
        assert_eq!(v.window(), 10);
        assert!(matches!(
            v.verify(batch(111, &a, &ka[..3], &a, b"x")),
            Err(ClientError::TrustExpired {
                height: 111,
                trusted_height: 100,
                window: 10
            })
        ));
        v.verify(batch(110, &a, &ka[..3], &a, b"x")).unwrap();
        assert_eq!(v.trusted_height(), 111);
        v.verify(batch(121, &a, &ka[..3], &a, b"x")).unwrap();
        // Every height in order, across a handover to B, on a window of 0.
        let mut v = v.with_window(0);
        for h in 122..=130 {
            // A decides up to 125 and names B at 125; B decides from 126.
            let (deciding, signers) = if h <= 125 { (&a, &ka) } else { (&b, &kb) };
            let next = if h >= 125 { &b } else { &a };
            v.verify(batch(h, deciding, &signers[..3], next, b"y"))
                .unwrap();
        }
        assert_eq!(
            v.checkpoint(),
            TrustedCheckpoint::new(131, b.hash()).unwrap()
        );
        assert!(matches!(
            v.verify(batch(132, &b, &kb[..3], &b, b"z")),
            Err(ClientError::TrustExpired { .. })
        ));
    }

    /// A batch below the trusted height is checked against the set but never moves the verifier back.
    #[test]
    fn an_older_batch_teaches_nothing() {
        let (ka, kb) = (keys(10), keys(50));
        let (a, b) = (set(&ka), set(&kb));
        let cp = TrustedCheckpoint::new(200, a.hash()).unwrap();
        let mut v = BatchVerifier::from_checkpoint(cp, a.clone(), CHAIN).unwrap();
        // Signed by A, naming B as the next set at height 150: accepted as A's, but A stays the set for 200.
        v.verify(batch(150, &a, &ka[..3], &b, b"old")).unwrap();
        assert_eq!(v.checkpoint(), cp);
        // An older height signed by another set is refused as ever.
        assert!(matches!(
            v.verify(batch(120, &b, &kb[..3], &b, b"old")),
            Err(ClientError::Unverified {
                error: ProofError::OtherValidatorSet { .. },
                ..
            })
        ));
    }

    /// The trust is the checkpoint's hash: a set (from a node, say) that does not hash to it is refused, and a
    /// checkpoint is written `height:hash`, its bad parts named.
    #[test]
    fn a_checkpoint_set_must_hash_to_the_checkpoint() {
        let (a, b) = (set(&keys(10)), set(&keys(50)));
        let cp = TrustedCheckpoint::new(7, a.hash()).unwrap();
        assert!(matches!(
            BatchVerifier::from_checkpoint(cp, b.clone(), CHAIN),
            Err(ClientError::UntrustedSet {
                field: "validators",
                expected,
                got,
            }) if expected == a.hash() && got == b.hash()
        ));
        assert!(matches!(
            BatchVerifier::from_checkpoint(
                TrustedCheckpoint {
                    height: 0,
                    set_hash: a.hash()
                },
                a.clone(),
                CHAIN
            ),
            Err(ClientError::Malformed(ConversionError::Invalid(
                "checkpoint.height",
                _
            )))
        ));
        let text = cp.to_string();
        assert_eq!(text.parse::<TrustedCheckpoint>().unwrap(), cp);
        let with_0x = format!("7:0x{}", a.hash().to_hex());
        assert_eq!(with_0x.parse::<TrustedCheckpoint>().unwrap(), cp);
        for (bad, field) in [
            ("7", "checkpoint"),
            ("x:00", "checkpoint.height"),
            ("7:00", "checkpoint.set_hash"),
            (&format!("0:{}", a.hash().to_hex()), "checkpoint.height"),
            (&format!("7:{}", "zz".repeat(32)), "checkpoint.set_hash"),
            (&format!("7:{}", "é".repeat(32)), "checkpoint.set_hash"),
        ] {
            assert!(
                matches!(bad.parse::<TrustedCheckpoint>(), Err(ConversionError::Invalid(f, _)) if f == field),
                "{bad}"
            );
        }
    }
}
