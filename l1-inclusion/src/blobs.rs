//! EIP-4844 blobs for inbox batches: encoding a batch into a sidecar, and reading a posted batch back.
//!
//! A batch is encoded with alloy's `SimpleCoder` (length-prefixed data packed into field elements), so any
//! standard tool can produce one. Reading needs the blobs themselves, which the execution layer does not keep:
//! [`BlobFetcher`] asks the L1 node by versioned hash (`anvil_getBlobByHash`, what the local L1 serves). A
//! production deployment reads them from a beacon node's blob API instead; that source is not built yet.
//! [`resolve`] turns [`InboxEventKind::BlobBatch`] events into [`InboxEventKind::Batch`] events carrying the
//! decoded bytes, so derivation treats both alike.

use alloy::eips::eip4844::builder::{SidecarBuilder, SidecarCoder, SimpleCoder};
use alloy::eips::eip4844::{Blob, BlobTransactionSidecar};
use alloy::primitives::{Bytes, B256};
use alloy::providers::Provider;

use crate::error::L1Error;
use crate::watcher::{InboxEvent, InboxEventKind};

/// Most blobs one transaction may carry (Prague: 9 per block; one transaction can use them all).
pub const MAX_BLOBS_PER_TX: usize = 6;

/// Stack for blob encoding and decoding: blobs are 128 KiB arrays that the coder and KZG code move by value.
const BLOB_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Runs `f` on a thread with a stack large enough for blob work.
fn with_blob_stack<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, L1Error> {
    std::thread::Builder::new()
        .name("blob-coder".into())
        .stack_size(BLOB_STACK_BYTES)
        .spawn(f)
        .map_err(|e| L1Error::Blob(format!("starting the blob coder thread: {e}")))?
        .join()
        .map_err(|_| L1Error::Blob("the blob coder panicked".into()))
}

/// The sidecar carrying `data`.
pub fn encode(data: &[u8]) -> Result<BlobTransactionSidecar, L1Error> {
    let len = data.len();
    let data = data.to_vec();
    let sidecar =
        with_blob_stack(move || SidecarBuilder::<SimpleCoder>::from_slice(&data).build_4844())?
            .map_err(|e| L1Error::Blob(format!("KZG commitment: {e}")))?;
    if sidecar.blobs.len() > MAX_BLOBS_PER_TX {
        return Err(L1Error::Blob(format!(
            "{} bytes need {} blobs, at most {MAX_BLOBS_PER_TX} per transaction",
            len,
            sidecar.blobs.len()
        )));
    }
    Ok(sidecar)
}

/// The data `encode` packed into `blobs` (`None` if they are not blobs or do not hold `SimpleCoder` data).
pub fn decode(blobs: Vec<Bytes>) -> Option<Vec<u8>> {
    with_blob_stack(move || {
        let blobs = blobs
            .iter()
            .map(|b| Blob::try_from(b.as_ref()).ok())
            .collect::<Option<Vec<Blob>>>()?;
        SimpleCoder::default()
            .decode_all(&blobs)
            .map(|items| items.concat())
    })
    .ok()
    .flatten()
}

/// Reads blobs from the L1 node by versioned hash.
#[derive(Clone, Debug)]
pub struct BlobFetcher<P> {
    provider: P,
}

impl<P: Provider> BlobFetcher<P> {
    pub fn new(provider: P) -> Self {
        BlobFetcher { provider }
    }

    /// The blobs with these versioned hashes, in order; `Ok(None)` when the node does not have one of them (pruned
    /// or never seen): derivation then skips the batch, as every node must.
    pub async fn fetch(&self, hashes: &[B256]) -> Result<Option<Vec<Bytes>>, L1Error> {
        let mut out = Vec::with_capacity(hashes.len());
        for h in hashes {
            // As bytes on the heap: a blob is too large to be parsed on a task's stack ([`decode`] converts).
            let blob: Option<Bytes> = self
                .provider
                .client()
                .request("anvil_getBlobByHash", (*h,))
                .await
                .map_err(L1Error::rpc)?;
            match blob {
                Some(b) => out.push(b),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }
}

/// Replaces every blob batch of `events` with a calldata-style batch of its decoded bytes. A batch whose blobs are
/// unavailable or undecodable becomes empty data (which derivation skips); an RPC failure fails the whole call, so
/// the caller retries rather than derive without it.
pub async fn resolve<P: Provider>(
    events: Vec<InboxEvent>,
    fetcher: &BlobFetcher<P>,
) -> Result<Vec<InboxEvent>, L1Error> {
    let mut out = Vec::with_capacity(events.len());
    for mut e in events {
        if let InboxEventKind::BlobBatch {
            rollup_id,
            sender,
            blob_hashes,
        } = &e.kind
        {
            let data = match fetcher.fetch(blob_hashes).await? {
                Some(blobs) => decode(blobs).unwrap_or_default(),
                None => Vec::new(),
            };
            e.kind = InboxEventKind::Batch {
                rollup_id: *rollup_id,
                sender: *sender,
                data: Bytes::from(data),
            };
        }
        out.push(e);
    }
    Ok(out)
}
