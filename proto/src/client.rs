//! A small client for Baton's API: connect, submit, read status, stream a rollup's batches.

use baton_consensus::{Bundle, Hash, RollupBatch, RollupId};
use tonic::transport::{Channel, Endpoint};

use crate::convert::{hash_field, ConversionError};
use crate::pb;
use crate::pb::node_service_client::NodeServiceClient;
use crate::pb::rollup_service_client::RollupServiceClient;

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("server returned {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    #[error("server sent a malformed message: {0}")]
    Malformed(#[from] ConversionError),
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
        Ok(BatonClient {
            rollup: RollupServiceClient::new(channel.clone())
                .max_decoding_message_size(64 * 1024 * 1024),
            node: NodeServiceClient::new(channel),
        })
    }

    /// Submits a bundle; returns its hash once the node has made it durable.
    pub async fn submit(&mut self, bundle: &Bundle) -> Result<Hash, ClientError> {
        let req = pb::SubmitBundleRequest {
            bundle: Some(bundle.into()),
        };
        let resp = self.rollup.submit_bundle(req).await?.into_inner();
        Ok(hash_field("bundle_hash", &resp.bundle_hash)?)
    }

    pub async fn bundle_status(
        &mut self,
        hash: &Hash,
    ) -> Result<pb::GetBundleStatusResponse, ClientError> {
        let req = pb::GetBundleStatusRequest {
            bundle_hash: hash.0.to_vec(),
        };
        Ok(self.rollup.get_bundle_status(req).await?.into_inner())
    }

    pub async fn get_batch(
        &mut self,
        rollup_id: RollupId,
        height: u64,
    ) -> Result<RollupBatch, ClientError> {
        let resp = self
            .rollup
            .get_batch(pb::GetBatchRequest { rollup_id, height })
            .await?
            .into_inner();
        Ok(resp.try_into()?)
    }

    /// Opens a stream of a rollup's batches from `from_height`.
    pub async fn stream_batches(
        &mut self,
        rollup_id: RollupId,
        from_height: u64,
    ) -> Result<BatchStream, ClientError> {
        let req = pb::StreamBatchesRequest {
            rollup_id,
            from_height,
        };
        Ok(BatchStream {
            inner: self.rollup.stream_batches(req).await?.into_inner(),
        })
    }

    pub async fn status(&mut self) -> Result<pb::StatusResponse, ClientError> {
        Ok(self.node.status(pb::StatusRequest {}).await?.into_inner())
    }

    /// The raw generated clients, for calls this wrapper does not cover.
    pub fn raw(&self) -> (RollupServiceClient<Channel>, NodeServiceClient<Channel>) {
        (self.rollup.clone(), self.node.clone())
    }
}

/// A stream of decoded batches.
#[derive(Debug)]
pub struct BatchStream {
    inner: tonic::Streaming<pb::RollupBatch>,
}

impl BatchStream {
    /// The next batch; `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<RollupBatch>, ClientError> {
        match self.inner.message().await? {
            Some(b) => Ok(Some(b.try_into()?)),
            None => Ok(None),
        }
    }
}
