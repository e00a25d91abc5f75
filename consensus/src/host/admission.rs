//! What comes in: clients' submissions and peers' dissemination admitted to the mempool (or kept aside for
//! proposals that refer to them), equivocation reported by the engine, and pending bundles announced again.

use malachitebft_core_consensus::ProposedValue;
use tracing::{debug, warn};

use crate::block::check_bundle;
use crate::bundle::Bundle;
use crate::bundle::Sender;
use crate::context::BatonContext;
use crate::error::{BundleError, ConsensusError};
use crate::evidence::Equivocation;
use crate::hash::Hash;
use crate::mempool::{backlogged, Admission};
use crate::store::ChainStore;
use crate::types::Dropped;
use crate::view::ChainView;

use super::{Clock, Host, MAX_PENDING_EVIDENCE};

/// How long after the chain was last behind a client's bundle that would wait behind its sender's nonce gap is
/// refused ([`ConsensusError::BehindGap`]). A backlog refusal's retry hint is at most 1 s at the node's edge, and a
/// client that backs off doubles it: within 2 s the refused nonce has had its chance to come back first.
pub const RECENTLY_BEHIND_MS: u64 = 2_000;

impl<S: ChainStore, C: Clock> Host<S, C> {
    /// Takes in equivocation the engine reported: each item is verified against the set of its height and kept
    /// for a block unless it is already in the chain or waiting. Returns how many were new.
    pub fn report_evidence(&mut self, items: Vec<Equivocation>) -> Result<usize, ConsensusError> {
        let mut added = 0;
        for e in items {
            let hash = e.hash();
            if self.included_evidence.contains(&hash)
                || self.pending_evidence.iter().any(|p| p.hash() == hash)
                || e.height >= self.next_height()
            {
                continue;
            }
            let set = self.validators_at(e.height)?;
            match e.verify(&set, &self.domain) {
                Ok(()) => {
                    warn!(validator = %e.validator, height = e.height, round = e.round, kind = e.kind.as_str(), "equivocation");
                    if self.pending_evidence.len() >= MAX_PENDING_EVIDENCE {
                        self.pending_evidence.remove(0);
                    }
                    self.pending_evidence.push(e);
                    added += 1;
                }
                Err(why) => {
                    debug!(validator = %e.validator, error = %why, "refused reported evidence")
                }
            }
        }
        Ok(added)
    }

    /// Adds a bundle whose signature the caller checked to the mempool, after the checks that need chain state:
    /// not expired at the next height nor expiring beyond the genesis window, nonce not used, room for it. A
    /// bundle already included is reported as such (submissions are idempotent). Waiting bundles the mempool
    /// evicted to make room are recorded as rejected.
    pub fn admit(&mut self, hash: Hash, bundle: Bundle) -> Result<Admission, ConsensusError> {
        let next_nonce = self.chain_nonce(&bundle.sender)?;
        if self
            .view()
            .is_included_below(&hash, bundle.nonce, next_nonce)?
        {
            return Ok(Admission::AlreadyIncluded);
        }
        check_bundle(&bundle, &self.spec)?;
        let next_height = self.next_height();
        if bundle.expiry_height < next_height {
            return Err(BundleError::Expired {
                expiry_height: bundle.expiry_height,
                height: next_height,
            }
            .into());
        }
        let window = self.spec.params.max_expiry_window;
        if bundle.expiry_height - next_height > window {
            return Err(BundleError::ExpiryTooFar {
                expiry_height: bundle.expiry_height,
                height: next_height,
                window,
            }
            .into());
        }
        let admitted = self
            .mempool
            .insert(hash, bundle, next_nonce, self.clock.now_ms());
        let evicted = self.mempool.take_evicted();
        self.record_waiting_dropped(evicted)?;
        admitted
    }

    /// Records bundles the mempool dropped from behind a nonce gap (evicted or timed out) as rejected at the next
    /// height, so their status is served and the persisted mempool forgets them.
    pub(super) fn record_waiting_dropped(
        &mut self,
        dropped: Vec<(Hash, String)>,
    ) -> Result<(), ConsensusError> {
        if dropped.is_empty() {
            return Ok(());
        }
        let height = self.next_height();
        debug!(
            height,
            dropped = dropped.len(),
            "bundles behind nonce gaps dropped"
        );
        self.stats.dropped_rejected += dropped.len() as u64;
        let dropped: Vec<(Hash, Dropped)> = dropped
            .into_iter()
            .map(|(h, reason)| (h, Dropped::Rejected { height, reason }))
            .collect();
        self.store.record_dropped(&dropped)
    }

    /// [`Host::admit`] for a client's submission, refused while the chain is behind: when the oldest bundle ready
    /// for a block has waited more than `admit_max_wait_ms` ([`ConsensusError::Backlogged`]), so that overload
    /// sheds offered load at the edge instead of growing a backlog that every admitted bundle waits behind. A
    /// bundle that fills its sender's first nonce gap is not refused
    /// ([`crate::mempool::Mempool::fills_gap`]). Bundles from peers skip this (they were admitted by the node
    /// they entered).
    pub fn admit_submission(
        &mut self,
        hash: Hash,
        bundle: Bundle,
    ) -> Result<Admission, ConsensusError> {
        if !self.mempool.contains(&hash) {
            let (_, behind, now) = self.backlog();
            if behind.is_ok()
                && self
                    .last_behind_ms
                    .is_some_and(|t| now.saturating_sub(t) <= RECENTLY_BEHIND_MS)
            {
                // Taken now, a bundle behind its sender's gap would wait acknowledged for the missing nonce, most
                // likely refused a moment ago and not sent again yet.
                let chain_next = self.chain_nonce(&bundle.sender)?;
                let missing = self.mempool.next_free_nonce(&bundle.sender, chain_next);
                if bundle.nonce > missing {
                    return Err(ConsensusError::BehindGap {
                        nonce: bundle.nonce,
                        missing,
                    });
                }
            }
            // A bundle that fills its sender's nonce gap is let in however far behind the chain is: refusing it
            // would keep the acknowledged bundles waiting behind it out of every block.
            if behind.is_err() {
                // Through the nonce table, which `admit` reads next.
                let chain_next = self.chain_nonce(&bundle.sender)?;
                if !self
                    .mempool
                    .fills_gap(&bundle.sender, bundle.nonce, chain_next)
                {
                    behind?;
                }
            }
        }
        self.admit(hash, bundle)
    }

    /// The admission time of the oldest bundle ready for a block ([`crate::mempool::Mempool::oldest_ready_ms`]),
    /// remembering whether the chain is behind (that bundle has waited more than `admit_max_wait_ms`). The node
    /// reads it here for its edge, so that refusals there count too.
    pub fn note_backlog(&mut self) -> Option<u64> {
        self.backlog().0
    }

    /// The oldest ready bundle's admission time, whether the chain is behind (remembered), and the time read.
    fn backlog(&mut self) -> (Option<u64>, Result<(), ConsensusError>, u64) {
        let oldest = self.mempool.oldest_ready_ms();
        let now = self.clock.now_ms();
        let behind = backlogged(oldest, now, self.limits.admit_max_wait_ms);
        if behind.is_err() {
            self.last_behind_ms = Some(now);
        }
        (oldest, behind, now)
    }

    /// The sender's next nonce on chain and the first one its pending bundles leave free.
    pub fn nonces(&self, sender: &Sender) -> Result<(u64, u64), ConsensusError> {
        let chain = self.view().next_nonce(sender)?;
        Ok((chain, self.mempool.next_free_nonce(sender, chain)))
    }

    /// Pending bundles to disseminate again: those this node has held for `after_ms` without any block including
    /// them (at most `max`, oldest first), each one again after twice as long as the time before (up to 32 ×
    /// `after_ms`). Dissemination is sent once to the peers connected at the time; a bundle admitted while its
    /// node was cut off, or whose message was lost, would otherwise reach a block only when that node proposes.
    /// Peers that have it already drop the copy without checking its signature again.
    pub fn reannounce(&mut self, after_ms: u64, max: usize) -> Vec<Bundle> {
        let now = self.clock.now_ms();
        let mut out = Vec::new();
        for (h, b) in self.mempool.iter() {
            if out.len() >= max {
                break;
            }
            let (last, times) = self.announced.entry(*h).or_insert((now, 0));
            let wait = after_ms.saturating_mul(1 << (*times).min(5));
            if now.saturating_sub(*last) >= wait {
                *last = now;
                *times += 1;
                out.push(b.clone());
            }
        }
        if self.announced.len() > 2 * self.mempool.len() + 1024 {
            let mempool = &self.mempool;
            self.announced.retain(|h, _| mempool.contains(h));
        }
        out
    }

    /// Takes in bundles a peer disseminated, already checked by the caller (limits, network, signature): admits
    /// what the mempool accepts, keeps the rest aside for proposals that may refer to them, and completes parked
    /// proposals. Returns a value for the engine if one completed.
    pub fn on_gossip(
        &mut self,
        bundles: Vec<(Hash, Bundle)>,
    ) -> Result<Option<ProposedValue<BatonContext>>, ConsensusError> {
        self.admit_gossip(bundles)?;
        Ok(self.next_ready())
    }

    /// [`Host::on_gossip`] without taking a completed proposal: for bundles that came without the engine's
    /// message to answer (a proposal they complete goes to the engine with the answer to its next message).
    pub fn admit_gossip(&mut self, bundles: Vec<(Hash, Bundle)>) -> Result<(), ConsensusError> {
        for (hash, bundle) in bundles {
            if self.mempool.contains(&hash) || self.side.contains_key(&hash) {
                continue;
            }
            match self.admit(hash, bundle.clone()) {
                Ok(_) => {}
                Err(ConsensusError::Storage(e)) => return Err(ConsensusError::Storage(e)),
                Err(_) => self.keep_aside(hash, bundle),
            }
        }
        self.resolve_parked()
    }

    /// The next proposal that became complete, to hand the engine with the answer to its message.
    pub(super) fn next_ready(&mut self) -> Option<ProposedValue<BatonContext>> {
        self.ready.pop_front()
    }

    /// Keeps a checked bundle the mempool refused, for proposals that may refer to it, within the side cache's
    /// count and byte bounds (the oldest go first).
    pub(super) fn keep_aside(&mut self, hash: Hash, bundle: Bundle) {
        let bytes = bundle.encoded_len();
        if self.limits.side_cache == 0
            || bytes > self.limits.side_cache_bytes
            || self.side.contains_key(&hash)
        {
            return;
        }
        while self.side_order.len() >= self.limits.side_cache
            || self.side_bytes + bytes > self.limits.side_cache_bytes
        {
            let Some(old) = self.side_order.pop_front() else {
                break;
            };
            if let Some(b) = self.side.remove(&old) {
                self.side_bytes -= b.encoded_len();
            }
        }
        self.side.insert(hash, bundle);
        self.side_order.push_back(hash);
        self.side_bytes += bytes;
    }

    /// Bundles kept aside, and their encoded bytes.
    pub fn side_cache(&self) -> (usize, usize) {
        (self.side.len(), self.side_bytes)
    }

    pub(super) fn find_bundle(&self, hash: &Hash) -> Option<Bundle> {
        self.mempool
            .get(hash)
            .or_else(|| self.side.get(hash))
            .cloned()
    }
}
