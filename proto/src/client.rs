//! A client for Baton's API: connect, sign and submit bundles, read their status, and pull a rollup's batches,
//! optionally **verified**: every batch checked against the validator set the caller trusts (entries -> batch root
//! -> namespace proof -> header -> commit certificate), and a stream checked for order and gaps.

use alloy_primitives::B256;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

use baton_consensus::bundle::{Sender, UnsignedBundle};
use baton_consensus::context::{ChainDomain, ValidatorSet};
use baton_consensus::proof::verify_batch;
use baton_consensus::types::Dropped;
use baton_consensus::{Bundle, Hash, ProofError, RollupBatch, RollupId};
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

/// Checks batches against a validator set the caller trusts (from genesis, not from the node), and follows the
/// set across epochs: a verified header that names another next set, with the batch carrying that set (checked
/// against the signed hash), moves the verifier to it for the following heights. Reading every height in order
/// (a verified stream) therefore never needs to trust the node for a set.
#[derive(Clone, Debug)]
pub struct BatchVerifier {
    validators: ValidatorSet,
    domain: ChainDomain,
}

impl BatchVerifier {
    /// `chain_id` is the chain's name in genesis (it separates signatures of different chains).
    pub fn new(validators: ValidatorSet, chain_id: &str) -> Self {
        BatchVerifier {
            validators,
            domain: ChainDomain::new(chain_id),
        }
    }

    /// The set the next batch is checked against.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// Decodes and verifies a served batch; the batch must carry a proof. After an epoch's last batch, the set
    /// it hands over checks the next ones.
    pub fn verify(&mut self, wire: pb::RollupBatch) -> Result<RollupBatch, ClientError> {
        let height = wire.height;
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
