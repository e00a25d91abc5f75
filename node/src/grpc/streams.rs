//! `StreamBatches`: a rollup's decided batches from a height on, then each new decision (or, for a based rollup,
//! the batches derived from the L1 inbox and reorg notices), bounded per subscriber in batches and bytes, ended
//! with ABORTED naming where to resume when the client reads nothing for `grpc.stream_idle_timeout_secs`.

// Handlers return tonic's `Status` by value, as tonic's own API does.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Response, Status};

use baton_consensus::ids::RollupId;
use baton_proto::pb;

use super::{Api, BoxStream};
use crate::clients::{ClientSlot, Kind};
use crate::metrics::Metrics;
use baton_consensus::store::ChainRead;

/// Sends one item of a server stream, waiting at most `idle` for the client to make room (it reads nothing
/// meanwhile). `Err(true)` when the client stopped reading, `Err(false)` when it went away.
async fn send_or_idle<T>(
    tx: &mpsc::Sender<T>,
    item: T,
    idle: std::time::Duration,
) -> Result<(), bool> {
    match tokio::time::timeout(idle, tx.send(item)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(false),
        Err(_) => Err(true),
    }
}

/// The status a stream ends with when its client read nothing for too long.
fn idle_status(idle: std::time::Duration, resume: &str) -> Status {
    Status::aborted(format!(
        "the client read nothing for {} s (grpc.stream_idle_timeout_secs); the stream is closed: open it again \
         {resume}",
        idle.as_secs()
    ))
}

/// A server stream's items, then the status `end` carries if the producer closed it for a reason.
fn with_end<T: Send + 'static>(
    items: impl futures::Stream<Item = Result<T, Status>> + Send + 'static,
    end: oneshot::Receiver<Status>,
) -> BoxStream<T> {
    let last = futures::stream::once(end).filter_map(|r| r.ok().map(Err));
    Box::pin(items.chain(last))
}

struct GaugeGuard(Arc<Metrics>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.subscribers.dec();
    }
}

impl<S: ChainRead + Clone + 'static> Api<S> {
    /// Opens a `StreamBatches` stream for `req` from the client at `remote`.
    pub(super) fn open_stream(
        &self,
        remote: Option<std::net::SocketAddr>,
        req: pb::StreamBatchesRequest,
    ) -> Result<Response<BoxStream<pb::RollupBatch>>, Status> {
        if req.from_height == 0 {
            return Err(Status::invalid_argument(
                "from_height must be >= 1 (the first block is height 1)",
            ));
        }
        self.check_rollup(req.rollup_id)?;
        if !self.is_based(req.rollup_id) {
            if let Some(pruned) = self.pruned(req.from_height) {
                return Err(pruned);
            }
        }
        // The client's share first, so that one client hitting its limit leaves the node-wide slots alone.
        let slot = self.clients.acquire(remote, Kind::Stream)?;
        let permit = self.subscribers.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(
                "too many StreamBatches subscribers on this node (grpc.max_subscribers)",
            )
        })?;
        if self.is_based(req.rollup_id) {
            return self.stream_based(req.rollup_id, req.from_height, (permit, slot));
        }
        // Bounded twice: by batches (`stream_buffer`) and by encoded bytes (`stream_buffer_bytes`). A batch holds
        // byte permits until tonic takes it for encoding; HTTP/2 flow control then bounds what sits in the
        // transport. A client that stops reading stops the producer, not the node's memory.
        let (tx, rx) = mpsc::channel::<(
            Result<pb::RollupBatch, Status>,
            Option<OwnedSemaphorePermit>,
        )>(self.stream_buffer);
        let budget = self.stream_buffer_bytes;
        let bytes = Arc::new(Semaphore::new(budget));
        let api = self.clone();
        let mut heights = self.shared.subscribe_heights();
        let (end_tx, end_rx) = oneshot::channel::<Status>();
        let idle = self.stream_idle;
        self.metrics.subscribers.inc();
        tokio::spawn(async move {
            let _permit = (permit, slot);
            // Decrements the subscriber gauge however the task ends.
            let _gauge = GaugeGuard(api.metrics.clone());
            let mut next = req.from_height;
            loop {
                let latest = *heights.borrow_and_update();
                while next <= latest {
                    // Read one height at a time from storage: catch-up never loads more than one batch per
                    // subscriber, and `send` waits while the client's buffer is full (backpressure).
                    api.metrics
                        .stream_lag
                        .observe(latest.saturating_sub(next) as f64);
                    let item = api.wire_batch(req.rollup_id, next, req.with_proof);
                    let failed = item.is_err();
                    let size = item.as_ref().map_or(0, prost::Message::encoded_len);
                    let permits = size.clamp(1, budget).min(u32::MAX as usize) as u32;
                    // Room in the client's byte budget, then in its buffer: both wait for the client to read,
                    // together at most `idle`.
                    let sent = tokio::time::timeout(idle, async {
                        let permit = bytes.clone().acquire_many_owned(permits).await.ok()?;
                        tx.send((item, Some(permit))).await.ok()
                    })
                    .await;
                    match sent {
                        Ok(Some(())) if !failed => next += 1,
                        Ok(_) => return,
                        Err(_) => {
                            api.metrics.grpc_streams_idle_closed.inc();
                            let _ = end_tx.send(idle_status(idle, &format!("from height {next}")));
                            return;
                        }
                    }
                }
                tokio::select! {
                    changed = heights.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        let out = ReceiverStream::new(rx).map(|(item, _permit)| item);
        Ok(Response::new(with_end(out, end_rx)))
    }

    /// A based rollup's stream: stored batches from `from` on, then new ones and reorg notices as the deriver
    /// reports them. A subscriber too slow for the update channel is cut off with a message saying where to
    /// resume.
    fn stream_based(
        &self,
        rollup_id: RollupId,
        from: u64,
        permit: (OwnedSemaphorePermit, ClientSlot),
    ) -> Result<Response<BoxStream<pb::RollupBatch>>, Status> {
        use baton_proto::convert::BasedItem;
        let based = self.based(rollup_id)?.clone();
        let (tx, rx) = mpsc::channel::<Result<pb::RollupBatch, Status>>(self.stream_buffer);
        let (end_tx, end_rx) = oneshot::channel::<Status>();
        let idle = self.stream_idle;
        let metrics = self.metrics.clone();
        metrics.subscribers.inc();
        tokio::spawn(async move {
            let _permit = permit;
            let _gauge = GaugeGuard(metrics.clone());
            // The L1 block to resume from when the client stopped reading; `None` when the stream ended otherwise.
            let stalled_at = async {
                let mut updates = based.subscribe();
                // The L1 block of the last batch sent (or just before the next one to send).
                let mut last = from - 1;
                loop {
                    let page = based.from(rollup_id, last + 1, 64);
                    if page.is_empty() {
                        break;
                    }
                    for it in page {
                        let before = last;
                        if let BasedItem::Batch { l1_block, .. } = &it {
                            last = l1_block.number;
                        }
                        if let Err(stalled) = send_or_idle(&tx, Ok((&it).into()), idle).await {
                            return stalled.then_some(before + 1);
                        }
                    }
                }
                loop {
                    let it = tokio::select! {
                        r = updates.recv() => r,
                        _ = tx.closed() => return None,
                    };
                    let it = match it {
                        Ok(it) => it,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let _ = tx
                                .send(Err(Status::aborted(format!(
                                    "this stream fell behind the L1 inbox; open it again from L1 block {}",
                                    last + 1
                                ))))
                                .await;
                            return None;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    let before = last;
                    match &it {
                        BasedItem::Batch {
                            rollup_id: r,
                            l1_block,
                            ..
                        } if *r == rollup_id && l1_block.number > last => last = l1_block.number,
                        BasedItem::Reorg {
                            rollup_id: r,
                            from_l1_block,
                            ..
                        } if *r == rollup_id && *from_l1_block <= last => {
                            last = from_l1_block - 1;
                        }
                        _ => continue,
                    }
                    if let Err(stalled) = send_or_idle(&tx, Ok((&it).into()), idle).await {
                        // A batch not delivered is resumed from its block; a reorg notice from its first block.
                        return stalled.then_some(before.min(last) + 1);
                    }
                }
            }
            .await;
            if let Some(block) = stalled_at {
                metrics.grpc_streams_idle_closed.inc();
                let _ = end_tx.send(idle_status(idle, &format!("from L1 block {block}")));
            }
        });
        Ok(Response::new(with_end(ReceiverStream::new(rx), end_rx)))
    }
}
