//! Dissemination through the consensus loop: bundles this node admitted go to every peer (batched by
//! `mempool.gossip_flush_ms` / `gossip_batch_bytes`), and peers' bundles are taken in only from peers the
//! [`PeerGate`] hears, checked on the verifier pool within the peer's share, and handed back to the loop. Asks
//! for bundles and their answers leave through the same channel ([`ConsensusLoop::publish_outbox`]).

use bytes::Bytes;
use malachitebft_app_channel::app::streaming::{StreamContent, StreamId, StreamMessage};
use malachitebft_app_channel::{NetworkMsg, Reply};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use baton_consensus::block::{check_stateless, OrderedBy};
use baton_consensus::bundle::Bundle;
use baton_consensus::context::BatonContext;
use baton_consensus::host::chunk_bundles;
use baton_consensus::parts::ProposalPart;

use super::{ConsensusLoop, LoopRequest};
use crate::error::NodeError;
use crate::metrics::{DirectionLabel, ReasonLabel};
use crate::peers::Refusal;

/// Entries kept in the set of checked disseminated bundles (about 100 bytes each).
pub(super) const CHECKED_CAPACITY: usize = 262_144;

/// A bounded set of (bundle hash, signature) pairs, oldest evicted first.
pub struct CheckedSet {
    set: std::collections::HashSet<(baton_consensus::hash::Hash, [u8; 65])>,
    order: std::collections::VecDeque<(baton_consensus::hash::Hash, [u8; 65])>,
    capacity: usize,
}

impl CheckedSet {
    pub fn new(capacity: usize) -> Self {
        CheckedSet {
            set: Default::default(),
            order: Default::default(),
            capacity,
        }
    }

    pub fn contains(&self, key: &(baton_consensus::hash::Hash, [u8; 65])) -> bool {
        self.set.contains(key)
    }

    pub fn insert(&mut self, key: (baton_consensus::hash::Hash, [u8; 65])) {
        if self.set.insert(key) {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

pub(super) fn lock_set(m: &std::sync::Mutex<CheckedSet>) -> std::sync::MutexGuard<'_, CheckedSet> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the loop disseminates bundles (node config).
#[derive(Clone, Debug)]
pub struct GossipLimits {
    /// Locally admitted bundles are sent to peers at once when nothing was sent for this long, else with the next
    /// send this often (`mempool.gossip_flush_ms`).
    pub flush_ms: u64,
    /// ... or as soon as this many bytes are waiting. Default 256 KiB.
    pub batch_bytes: usize,
    /// A send of fewer bundles than this makes the wait before the next half as long
    /// (`mempool.gossip_light_bundles`; 0: always `flush_ms`).
    pub light_bundles: usize,
    /// Pending bundles older than this are disseminated again. Default 2,000 ms.
    pub reannounce_ms: u64,
}

impl GossipLimits {
    /// How long to gather after a send of `sent` bundles. A light load sends a few bundles per message, and
    /// messages twice as often cost the peers little (1–1.5 points of a core per validator at 1,000 bundles/s)
    /// and take about 3 ms off the median; a heavy one sends full messages at the full interval, where every
    /// message saved is CPU the node needs (BENCHMARKS.md, the dissemination interval rows).
    pub fn wait_after(&self, sent: usize) -> std::time::Duration {
        let ms = if sent < self.light_bundles {
            self.flush_ms / 2
        } else {
            self.flush_ms
        };
        std::time::Duration::from_millis(ms.max(1))
    }
}

impl ConsensusLoop {
    /// Publishes one message outside any proposal stream (dissemination, wants): a stream of its own, one part.
    pub(super) async fn publish_single(&mut self, part: ProposalPart) -> Result<(), NodeError> {
        let mut id = Vec::with_capacity(9);
        id.push(b'g');
        id.extend_from_slice(&self.next_gossip_id.to_be_bytes());
        self.next_gossip_id += 1;
        let msg = StreamMessage::new(StreamId::new(Bytes::from(id)), 0, StreamContent::Data(part));
        self.send_net(NetworkMsg::PublishProposalPart(msg)).await
    }

    /// Sends locally admitted bundles to the peers.
    pub(super) async fn flush_gossip(&mut self) -> Result<(), NodeError> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        self.last_flush = Instant::now();
        let bundles = std::mem::take(&mut self.outgoing);
        self.flush_wait = self.gossip.wait_after(bundles.len());
        let out = DirectionLabel { direction: "out" };
        self.metrics
            .gossip_bundles
            .get_or_create(&out)
            .inc_by(bundles.len() as u64);
        self.metrics
            .gossip_bytes
            .get_or_create(&out)
            .inc_by(self.outgoing_bytes as u64);
        debug!(
            bundles = bundles.len(),
            bytes = self.outgoing_bytes,
            "disseminating"
        );
        self.outgoing_bytes = 0;
        for chunk in chunk_bundles(&bundles, self.gossip.batch_bytes) {
            self.publish_single(ProposalPart::Bundles { bundles: chunk })
                .await?;
        }
        Ok(())
    }

    /// Whether the peer gate hears a proposal-channel message of `size` bytes from `publisher` (a refusal is
    /// counted). The connector's messages and the tap's pass it alike.
    pub(super) fn hears(&mut self, publisher: &[u8], size: usize) -> bool {
        match self.peers.check(publisher, size, std::time::Instant::now()) {
            Ok(()) => true,
            Err(r) => {
                self.refused(r);
                false
            }
        }
    }

    /// Counts a proposal-channel message the gate refused.
    pub(super) fn refused(&self, r: Refusal) {
        self.metrics
            .p2p_refused
            .get_or_create(&ReasonLabel { reason: r.label() })
            .inc();
        self.metrics
            .p2p_penalised_peers
            .set(self.peers.penalised_count(std::time::Instant::now()) as i64);
    }

    pub(super) async fn publish_outbox(&mut self) -> Result<(), NodeError> {
        for part in self.host.take_outbox() {
            self.publish_single(part).await?;
        }
        Ok(())
    }

    /// Checks disseminated bundles off the loop (signature recovery is the expensive part) and hands the good
    /// ones back through the request queue. Under overload the message is dropped: a proposal that needs its
    /// bundles asks the proposer for them.
    pub(super) fn check_gossip(
        &self,
        peer: Vec<u8>,
        bundles: Vec<Bundle>,
        reply: Option<
            Reply<Option<malachitebft_app_channel::app::types::ProposedValue<BatonContext>>>,
        >,
    ) {
        let answer_none = |reply: Option<Reply<_>>| {
            if let Some(r) = reply {
                let _ = r.send(None);
            }
        };
        let bytes: usize = bundles.iter().map(Bundle::encoded_len).sum();
        // The peer's own share first (so that one peer cannot take the pool from the others), then the pool.
        let share = match self.peers.reserve(&peer, bytes) {
            Ok(s) => s,
            Err(r) => {
                self.refused(r);
                answer_none(reply);
                return;
            }
        };
        let permit = match self.pool.reserve(bytes) {
            Ok(p) => p,
            Err(e) => {
                warn!(bundles = bundles.len(), error = %e, "dropping a peer's dissemination");
                self.metrics
                    .rejected
                    .get_or_create(&ReasonLabel {
                        reason: "peer_verifier_saturated",
                    })
                    .inc_by(bundles.len() as u64);
                answer_none(reply);
                return;
            }
        };
        debug!(peer = %peer_name(&peer), bundles = bundles.len(), "checking disseminated bundles");
        let incoming = DirectionLabel { direction: "in" };
        self.metrics
            .gossip_bundles
            .get_or_create(&incoming)
            .inc_by(bundles.len() as u64);
        self.metrics
            .gossip_bytes
            .get_or_create(&incoming)
            .inc_by(bytes as u64);
        let spec = self.host.spec().clone();
        let back = self.requests_tx.clone();
        let seen = self.checked.clone();
        permit.run(move || {
            let _share = share;
            let mut good = Vec::with_capacity(bundles.len());
            let mut invalid = 0;
            for b in bundles {
                // The cheap checks always; the signature recovery only for bytes not checked before.
                let checked = check_stateless(&b, &spec, OrderedBy::Validators, |h| {
                    lock_set(&seen).contains(&(*h, b.signature))
                });
                match checked {
                    Ok(hash) => {
                        lock_set(&seen).insert((hash, b.signature));
                        good.push((hash, b))
                    }
                    Err(e) => {
                        invalid += 1;
                        warn!(error = %e, "a peer disseminated an invalid bundle")
                    }
                }
            }
            // Back to the loop through its bounded queue (this pool thread waits while the loop is busy).
            if let Err(mpsc::error::SendError(LoopRequest::Gossiped { reply, .. })) = back
                .blocking_send(LoopRequest::Gossiped {
                    peer,
                    bundles: good,
                    invalid,
                    reply,
                })
            {
                answer_none(reply);
            }
        });
    }
}

/// A peer id for logs (base58, as libp2p prints it).
pub(super) fn peer_name(peer: &[u8]) -> String {
    libp2p_identity::PeerId::from_bytes(peer).map_or_else(|_| hex::encode(peer), |p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::{CheckedSet, GossipLimits};
    use baton_consensus::hash::Hash;
    use std::time::Duration;

    #[test]
    fn a_light_send_halves_the_wait_before_the_next() {
        let limits = |light_bundles| GossipLimits {
            flush_ms: 20,
            batch_bytes: 1 << 18,
            light_bundles,
            reannounce_ms: 2_000,
        };
        let on = limits(8);
        assert_eq!(on.wait_after(1), Duration::from_millis(10));
        assert_eq!(on.wait_after(7), Duration::from_millis(10));
        assert_eq!(on.wait_after(8), Duration::from_millis(20));
        assert_eq!(on.wait_after(500), Duration::from_millis(20));
        let off = limits(0);
        assert_eq!(off.wait_after(1), Duration::from_millis(20));
        let short = GossipLimits {
            flush_ms: 1,
            ..limits(8)
        };
        assert_eq!(short.wait_after(1), Duration::from_millis(1), "never 0");
    }

    #[test]
    fn keeps_exact_bytes_and_evicts_the_oldest() {
        let mut s = CheckedSet::new(2);
        let a = (Hash::digest(&[b"a"]), [1u8; 65]);
        let b = (Hash::digest(&[b"b"]), [2u8; 65]);
        let c = (Hash::digest(&[b"c"]), [3u8; 65]);
        s.insert(a);
        s.insert(b);
        assert!(s.contains(&a) && s.contains(&b));
        // Same hash, other signature bytes: not the checked bundle.
        assert!(!s.contains(&(a.0, [9u8; 65])));
        s.insert(c);
        assert!(!s.contains(&a), "oldest evicted");
        assert!(s.contains(&b) && s.contains(&c));
    }
}
