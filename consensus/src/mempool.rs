//! The mempool: bundles admitted by this node and not yet included, in arrival order, with per-sender nonce
//! queues.
//!
//! It is bounded by count, bytes and bundles per sender (config) and deduplicates by bundle hash. A sender's
//! bundles are handed to the block builder in nonce order starting at the sender's next nonce on chain: a bundle
//! whose nonce leaves a gap waits until the gap is filled; a nonce already used on chain, or already taken by
//! another pending bundle, is refused. Durability is the node's concern: a bundle is acknowledged only once it is
//! on disk.
//!
//! Bundles waiting behind a gap cost their sender nothing and may never become includable, so they are held on
//! a short leash: a nonce at most `max_nonce_gap` past the sender's first free one, a quota of their own
//! (`max_waiting`, `max_waiting_bytes`) inside the mempool's limits, at most `waiting_ttl_ms` of waiting, and
//! when the mempool is full a bundle that could go into a block now evicts the oldest waiting one. Without that,
//! throw-away keys sending nonces 1.. and never 0 would fill every node's mempool for good. Evicted and timed-out
//! bundles are reported ([`Mempool::take_evicted`], [`Mempool::expire_waiting`]) so their status can be served.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::bundle::Bundle;
use crate::bundle::Sender;
use crate::error::{BundleError, ConsensusError, MempoolFull};
use crate::hash::Hash;
use crate::types::Dropped;

/// The admission rule for clients' submissions: refused ([`ConsensusError::Backlogged`]) while the oldest bundle
/// ready for a block, admitted at `oldest_ready_ms`, has waited more than `limit_ms` at `now_ms` (0: never). The
/// host applies it when it admits; the node also applies it at its edge, before any signature work, to the
/// oldest-ready time the consensus loop last published.
pub fn backlogged(
    oldest_ready_ms: Option<u64>,
    now_ms: u64,
    limit_ms: u64,
) -> Result<(), ConsensusError> {
    let waited_ms = oldest_ready_ms.map_or(0, |t| now_ms.saturating_sub(t));
    if limit_ms > 0 && waited_ms > limit_ms {
        return Err(ConsensusError::Backlogged {
            waited_ms,
            limit_ms,
        });
    }
    Ok(())
}

/// Outcome of offering a bundle to the mempool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Added,
    AlreadyPending,
    /// The bundle is already in a decided block (reported by the host, which knows the chain).
    AlreadyIncluded,
}

/// Sizes of the mempool (node config).
#[derive(Debug, Clone, Copy)]
pub struct MempoolLimits {
    pub max_bundles: usize,
    pub max_bytes: usize,
    pub max_per_sender: usize,
    /// How far past its sender's first free nonce a bundle's nonce may be.
    pub max_nonce_gap: u64,
    /// Bundles waiting behind a nonce gap, at most (counted in `max_bundles` too).
    pub max_waiting: usize,
    /// Bytes of bundles waiting behind a nonce gap, at most (counted in `max_bytes` too).
    pub max_waiting_bytes: usize,
    /// A bundle that has waited behind a nonce gap this long is dropped.
    pub waiting_ttl_ms: u64,
}

#[derive(Debug)]
struct Slot {
    seq: u64,
    bundle: Bundle,
    bytes: usize,
    /// When it was admitted (clock milliseconds).
    admitted_ms: u64,
    /// When it last became includable (admitted so, or its nonce gap filled): from then on it waits for the
    /// chain, not for its sender.
    ready_ms: u64,
    /// Behind a nonce gap: a lower nonce of its sender is neither on chain nor pending.
    waiting: bool,
}

#[derive(Debug, Default)]
struct SenderQueue {
    /// The sender's next nonce on chain, as last told.
    next: u64,
    pending: BTreeMap<u64, Hash>,
}

/// Pending bundles in arrival order. See the module docs.
#[derive(Debug)]
pub struct Mempool {
    slots: HashMap<Hash, Slot>,
    senders: HashMap<Sender, SenderQueue>,
    expiries: BTreeSet<(u64, Hash)>,
    /// Senders whose next nonce is pending: what a block could include now.
    ready: HashSet<Sender>,
    /// Bundles behind a nonce gap, in arrival order, and their bytes.
    waiting: BTreeMap<u64, Hash>,
    /// The other bundles (not behind a gap), in arrival order: where blocks are filled from and the oldest ready
    /// one is looked for, so that however many gapped bundles arrived first, they cost nothing and hide nothing.
    includable: BTreeMap<u64, Hash>,
    /// The includable bundles by when they became so, then arrival: the oldest one waited longest for the chain.
    ready_since: BTreeSet<(u64, u64)>,
    /// The latest clock reading the mempool was given.
    now_ms: u64,
    waiting_bytes: usize,
    /// Waiting bundles evicted for ready ones, with why, until the host takes them.
    evicted: Vec<(Hash, String)>,
    next_seq: u64,
    bytes: usize,
    limits: MempoolLimits,
    /// Moves with every change of a sender's pending bundles ([`Mempool::version`]).
    version: u64,
}

impl Mempool {
    pub fn new(limits: MempoolLimits) -> Self {
        Self {
            slots: HashMap::new(),
            senders: HashMap::new(),
            expiries: BTreeSet::new(),
            ready: HashSet::new(),
            waiting: BTreeMap::new(),
            includable: BTreeMap::new(),
            ready_since: BTreeSet::new(),
            now_ms: 0,
            waiting_bytes: 0,
            evicted: Vec::new(),
            next_seq: 0,
            bytes: 0,
            limits,
            version: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether some pending bundle could go into a block now (its nonce is its sender's next). Constant time:
    /// the proposer asks after every admission whether to stop waiting.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Bundles waiting behind a nonce gap, and their bytes.
    pub fn waiting(&self) -> (usize, usize) {
        (self.waiting.len(), self.waiting_bytes)
    }

    /// Recomputes whether `sender` has a bundle ready, and which of its bundles wait behind a gap (the run of
    /// nonces from its next one is includable, everything after the first hole waits), after a change at nonce
    /// `from`: bundles below it keep their state, and the walk stops at the first later bundle whose state holds,
    /// so a sender pipelining many bundles costs each insert and removal what actually changes, not its queue.
    fn refresh_ready(&mut self, sender: &Sender, from: u64) {
        self.version += 1;
        let Some(q) = self.senders.get(sender) else {
            self.ready.remove(sender);
            return;
        };
        if q.pending.contains_key(&q.next) {
            self.ready.insert(*sender);
        } else {
            self.ready.remove(sender);
        }
        let start = from.max(q.next);
        // A hole before `start` unless the bundle just below it is pending and includable.
        let mut hole = start != q.next
            && q.pending
                .get(&(start - 1))
                .and_then(|h| self.slots.get(h))
                .is_none_or(|s| s.waiting);
        for (i, (run, (nonce, hash))) in (start..).zip(q.pending.range(start..)).enumerate() {
            hole |= *nonce != run;
            let Some(slot) = self.slots.get_mut(hash) else {
                continue;
            };
            if slot.waiting == hole {
                if i > 0 {
                    break;
                }
                continue;
            }
            slot.waiting = hole;
            if hole {
                self.waiting.insert(slot.seq, *hash);
                self.includable.remove(&slot.seq);
                self.ready_since.remove(&(slot.ready_ms, slot.seq));
                self.waiting_bytes += slot.bytes;
            } else {
                self.waiting.remove(&slot.seq);
                self.includable.insert(slot.seq, *hash);
                slot.ready_ms = self.now_ms;
                self.ready_since.insert((slot.ready_ms, slot.seq));
                self.waiting_bytes -= slot.bytes;
            }
        }
    }

    /// Waiting bundles evicted to make room for ready ones since the last call, with why.
    pub fn take_evicted(&mut self) -> Vec<(Hash, String)> {
        std::mem::take(&mut self.evicted)
    }

    /// Drops the bundles that have waited behind a nonce gap for `waiting_ttl_ms` at `now_ms`, with why.
    pub fn expire_waiting(&mut self, now_ms: u64) -> Vec<(Hash, String)> {
        self.now_ms = self.now_ms.max(now_ms);
        let mut out = Vec::new();
        while let Some((_, hash)) = self.waiting.first_key_value() {
            let hash = *hash;
            let Some(slot) = self.slots.get(&hash) else {
                break;
            };
            let waited = now_ms.saturating_sub(slot.admitted_ms);
            if waited < self.limits.waiting_ttl_ms {
                break;
            }
            let why = self.why_waiting(
                &slot.bundle,
                &format!("for {waited} ms (mempool.waiting_ttl_ms)"),
            );
            self.remove_one(&hash);
            out.push((hash, why));
        }
        out
    }

    /// Why a waiting bundle is dropped: the nonce it waits for, and `what` happened.
    fn why_waiting(&self, b: &Bundle, what: &str) -> String {
        let missing = self
            .senders
            .get(&b.sender)
            .map_or(0, |q| self.first_free(q, q.next));
        format!(
            "bundle waited behind a nonce gap (sender {} never sent nonce {missing}) {what}",
            b.sender
        )
    }

    /// The first nonce at or after `from` that none of the queue's bundles holds. From the sender's next nonce
    /// this is the end of its includable run, read off the waiting marks: only the bundles past the run (at most
    /// `max_nonce_gap`) are looked at, not the run itself.
    fn first_free(&self, q: &SenderQueue, from: u64) -> u64 {
        if from == q.next {
            return q
                .pending
                .range(q.next..)
                .rev()
                .find(|(_, h)| self.slots.get(*h).is_some_and(|s| !s.waiting))
                .map_or(q.next, |(n, _)| n + 1);
        }
        let mut n = from;
        while q.pending.contains_key(&n) {
            n += 1;
        }
        n
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.slots.contains_key(hash)
    }

    pub fn get(&self, hash: &Hash) -> Option<&Bundle> {
        self.slots.get(hash).map(|s| &s.bundle)
    }

    /// The first nonce at or after `chain_next_nonce` that no pending bundle of `sender` holds.
    pub fn next_free_nonce(&self, sender: &Sender, chain_next_nonce: u64) -> u64 {
        match self.senders.get(sender) {
            Some(q) => self.first_free(q, q.next.max(chain_next_nonce)),
            None => chain_next_nonce,
        }
    }

    /// Admits a bundle whose signature was checked at `now_ms`. `chain_next_nonce` is the sender's next nonce on
    /// chain.
    pub fn insert(
        &mut self,
        hash: Hash,
        bundle: Bundle,
        chain_next_nonce: u64,
        now_ms: u64,
    ) -> Result<Admission, ConsensusError> {
        if self.slots.contains_key(&hash) {
            return Ok(Admission::AlreadyPending);
        }
        self.now_ms = self.now_ms.max(now_ms);
        let queue_len = self
            .senders
            .get(&bundle.sender)
            .map_or(0, |q| q.pending.len());
        let next = self
            .senders
            .get(&bundle.sender)
            .map_or(chain_next_nonce, |q| q.next.max(chain_next_nonce));
        if bundle.nonce < next {
            return Err(BundleError::NonceUsed {
                sender: bundle.sender.to_string(),
                nonce: bundle.nonce,
                next,
            }
            .into());
        }
        if let Some(q) = self.senders.get(&bundle.sender) {
            if q.pending.contains_key(&bundle.nonce) {
                return Err(BundleError::NoncePending {
                    sender: bundle.sender.to_string(),
                    nonce: bundle.nonce,
                }
                .into());
            }
        }
        if queue_len >= self.limits.max_per_sender {
            return Err(BundleError::SenderLimit {
                sender: bundle.sender.to_string(),
                limit: self.limits.max_per_sender,
            }
            .into());
        }
        let first_free = self.next_free_nonce(&bundle.sender, chain_next_nonce);
        if bundle.nonce.saturating_sub(first_free) > self.limits.max_nonce_gap {
            return Err(BundleError::NonceGap {
                sender: bundle.sender.to_string(),
                nonce: bundle.nonce,
                first_free,
                max_gap: self.limits.max_nonce_gap,
            }
            .into());
        }
        let bytes = bundle.encoded_len();
        // A bundle past its sender's first free nonce waits behind a gap: it has a quota of its own.
        let waits = bundle.nonce > first_free;
        if waits
            && (self.waiting.len() >= self.limits.max_waiting
                || self.waiting_bytes + bytes > self.limits.max_waiting_bytes)
        {
            return Err(MempoolFull::Waiting {
                bundles: self.waiting.len(),
                bytes: self.waiting_bytes,
                max_bundles: self.limits.max_waiting,
                max_bytes: self.limits.max_waiting_bytes,
            }
            .into());
        }
        let full = |m: &Self| {
            m.slots.len() >= m.limits.max_bundles || m.bytes + bytes > m.limits.max_bytes
        };
        // A bundle that could go into a block now takes the place of the oldest waiting ones.
        while !waits && full(self) {
            let Some((_, old)) = self.waiting.first_key_value() else {
                break;
            };
            let old = *old;
            let why = match self.slots.get(&old) {
                Some(s) => self.why_waiting(
                    &s.bundle,
                    "and was evicted for a bundle ready now (mempool full)",
                ),
                None => break,
            };
            self.remove_one(&old);
            self.evicted.push((old, why));
        }
        if full(self) {
            return Err(MempoolFull::Pending {
                bundles: self.slots.len(),
                bytes: self.bytes,
                max_bundles: self.limits.max_bundles,
                max_bytes: self.limits.max_bytes,
            }
            .into());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.includable.insert(seq, hash);
        self.ready_since.insert((now_ms, seq));
        let q = self.senders.entry(bundle.sender).or_default();
        // A next nonce raised from the chain changes the sender's run from there; otherwise from this bundle.
        let from = if q.next < next { next } else { bundle.nonce };
        q.next = next;
        q.pending.insert(bundle.nonce, hash);
        self.expiries.insert((bundle.expiry_height, hash));
        let sender = bundle.sender;
        self.slots.insert(
            hash,
            Slot {
                seq,
                bundle,
                bytes,
                admitted_ms: now_ms,
                ready_ms: now_ms,
                waiting: false,
            },
        );
        self.bytes += bytes;
        self.refresh_ready(&sender, from);
        Ok(Admission::Added)
    }

    fn remove_one(&mut self, hash: &Hash) -> Option<Bundle> {
        let slot = self.slots.remove(hash)?;
        self.includable.remove(&slot.seq);
        self.ready_since.remove(&(slot.ready_ms, slot.seq));
        self.bytes -= slot.bytes;
        if slot.waiting {
            self.waiting.remove(&slot.seq);
            self.waiting_bytes -= slot.bytes;
        }
        self.expiries.remove(&(slot.bundle.expiry_height, *hash));
        if let Some(q) = self.senders.get_mut(&slot.bundle.sender) {
            q.pending.remove(&slot.bundle.nonce);
            if q.pending.is_empty() {
                self.senders.remove(&slot.bundle.sender);
            }
        }
        self.refresh_ready(&slot.bundle.sender, slot.bundle.nonce);
        Some(slot.bundle)
    }

    /// Bundles ready for a block, in arrival order, as many as fit in `max_bytes` and `max_count`: a bundle is
    /// ready when its nonce is its sender's next (counting bundles picked before it). Picking a bundle pulls in the
    /// sender's following nonces right behind it. A bundle that does not fit is skipped (with the rest of its
    /// sender's queue), so one large bundle does not hold back small ones of other senders. Bundles behind a nonce
    /// gap are never walked.
    pub fn select(&self, max_bytes: u64, max_count: usize) -> Vec<(Hash, Bundle)> {
        let mut out = Vec::new();
        let mut used = 0u64;
        let mut taken: HashSet<Hash> = HashSet::new();
        let mut blocked: HashSet<Sender> = HashSet::new();
        for hash in self.includable.values() {
            if out.len() >= max_count {
                break;
            }
            if taken.contains(hash) {
                continue;
            }
            let slot = &self.slots[hash];
            let sender = slot.bundle.sender;
            if blocked.contains(&sender) {
                continue;
            }
            let Some(q) = self.senders.get(&sender) else {
                continue;
            };
            if slot.bundle.nonce != q.next {
                // Waits for a lower nonce (picked later in this loop if it arrived later).
                continue;
            }
            // Take the run q.next, q.next + 1, ... while it is pending and fits.
            let mut nonce = q.next;
            while let Some(h) = q.pending.get(&nonce) {
                let s = &self.slots[h];
                if out.len() >= max_count || used + s.bytes as u64 > max_bytes {
                    blocked.insert(sender);
                    break;
                }
                used += s.bytes as u64;
                taken.insert(*h);
                out.push((*h, s.bundle.clone()));
                nonce += 1;
            }
            blocked.insert(sender);
        }
        out
    }

    /// Since when the bundle ready for a block longest has been so (`None` if none is ready): when it was
    /// admitted, or when its nonce gap filled if it waited behind one (it waited for its sender until then, not for
    /// the chain). When the chain keeps up this is never more than a few block times ago. Constant time, whatever
    /// order bundles arrived in: a sender's later nonces sent before a refused one is sent again cannot hide the
    /// backlog.
    pub fn oldest_ready_ms(&self) -> Option<u64> {
        if self.ready.is_empty() {
            return None;
        }
        self.ready_since.first().map(|(ms, _)| *ms)
    }

    /// How long the oldest bundle ready for a block has waited at `now_ms` (0 if none is ready).
    pub fn head_wait_ms(&self, now_ms: u64) -> u64 {
        self.oldest_ready_ms()
            .map_or(0, |t| now_ms.saturating_sub(t))
    }

    /// Whether a bundle of `sender` at `nonce` would fill its first nonce gap: the sender has bundles waiting
    /// behind it, and `nonce` is the first one none of its pending bundles holds (from `chain_next_nonce`).
    /// Admitting it makes acknowledged bundles includable, so it passes the admission gate while the chain is
    /// behind.
    pub fn fills_gap(&self, sender: &Sender, nonce: u64, chain_next_nonce: u64) -> bool {
        let Some(q) = self.senders.get(sender) else {
            return false;
        };
        self.first_free(q, q.next.max(chain_next_nonce)) == nonce
            && q.pending.range(nonce..).next().is_some()
    }

    /// Each sender with bundles behind a nonce gap, and the nonce that would fill its first gap ([`fills_gap`]).
    /// At most one per waiting bundle (`max_waiting`).
    ///
    /// [`fills_gap`]: Mempool::fills_gap
    pub fn open_gaps(&self) -> Vec<(Sender, u64)> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for h in self.waiting.values() {
            let Some(slot) = self.slots.get(h) else {
                continue;
            };
            let sender = slot.bundle.sender;
            if !seen.insert(sender) {
                continue;
            }
            if let Some(q) = self.senders.get(&sender) {
                out.push((sender, self.first_free(q, q.next)));
            }
        }
        out
    }

    /// Changes with every admission and removal: whether [`open_gaps`] may have changed since it was read.
    ///
    /// [`open_gaps`]: Mempool::open_gaps
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Pending bundles in arrival order: the includable ones and those behind a gap, merged by arrival.
    pub fn iter(&self) -> impl Iterator<Item = (&Hash, &Bundle)> {
        let mut includable = self.includable.iter().peekable();
        let mut waiting = self.waiting.iter().peekable();
        std::iter::from_fn(move || match (includable.peek(), waiting.peek()) {
            (Some((a, _)), Some((b, _))) if b < a => waiting.next(),
            (Some(_), _) => includable.next(),
            (None, _) => waiting.next(),
        })
        .map(|(_, h)| (h, &self.slots[h].bundle))
    }

    /// Whether the pending bundles would already fill a block of these limits.
    pub fn fills_block(&self, max_bytes: u64, max_count: usize) -> bool {
        self.slots.len() >= max_count || self.bytes as u64 >= max_bytes
    }

    /// Takes in a decided block at `height`: removes its bundles, advances its senders' nonces, and drops what
    /// can no longer be included: bundles whose nonce the block used up, and bundles that expire before the next
    /// height. Returns the dropped bundles and why.
    pub fn on_decided(
        &mut self,
        height: u64,
        bundles: &[(Hash, Sender, u64)],
    ) -> Vec<(Hash, Dropped)> {
        let mut dropped = Vec::new();
        for (hash, sender, nonce) in bundles {
            // The sender's next nonce first: its remaining run stays includable while the head leaves.
            if let Some(q) = self.senders.get_mut(sender) {
                q.next = q.next.max(nonce + 1);
            }
            self.remove_one(hash);
            self.refresh_ready(sender, *nonce);
        }
        let senders: HashSet<Sender> = bundles.iter().map(|(_, s, _)| *s).collect();
        for sender in senders {
            let stale: Vec<(u64, Hash)> = match self.senders.get(&sender) {
                Some(q) => q.pending.range(..q.next).map(|(n, h)| (*n, *h)).collect(),
                None => continue,
            };
            for (nonce, hash) in stale {
                self.remove_one(&hash);
                dropped.push((
                    hash,
                    Dropped::Rejected {
                        height,
                        reason: format!(
                            "nonce {nonce} of sender {sender} was used by another bundle included at height \
                             {height} or before"
                        ),
                    },
                ));
            }
        }
        let expired: Vec<(u64, Hash)> = self
            .expiries
            .range(..(height + 1, Hash::ZERO))
            .copied()
            .collect();
        for (expiry_height, hash) in expired {
            self.remove_one(&hash);
            dropped.push((
                hash,
                Dropped::Expired {
                    expiry_height,
                    height,
                },
            ));
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::testing::{bundle, key, sign};
    use crate::bundle::BundleEntry;
    use crate::bundle::UnsignedBundle;

    fn limits() -> MempoolLimits {
        MempoolLimits {
            max_bundles: 100,
            max_bytes: 100_000,
            max_per_sender: 10,
            max_nonce_gap: 64,
            max_waiting: 100,
            max_waiting_bytes: 100_000,
            waiting_ttl_ms: 60_000,
        }
    }

    fn add(m: &mut Mempool, b: &Bundle) -> Result<Admission, ConsensusError> {
        m.insert(b.hash(), b.clone(), 0, 0)
    }

    fn picked(m: &Mempool) -> Vec<(u8, u64)> {
        m.select(u64::MAX, 100)
            .into_iter()
            .map(|(_, b)| (b.entries[0].payload[0], b.nonce))
            .collect()
    }

    #[test]
    fn head_wait_counts_the_oldest_ready_bundle_only() {
        let mut m = Mempool::new(limits());
        assert_eq!(m.head_wait_ms(1_000), 0);
        // A bundle stuck on a nonce gap since t=100 does not count; a ready one since t=300 does.
        m.insert(
            bundle(1, 1, &[1], 11).hash(),
            bundle(1, 1, &[1], 11),
            0,
            100,
        )
        .unwrap();
        assert_eq!(m.head_wait_ms(1_000), 0);
        m.insert(
            bundle(2, 0, &[1], 20).hash(),
            bundle(2, 0, &[1], 20),
            0,
            300,
        )
        .unwrap();
        assert_eq!(m.head_wait_ms(1_000), 700);
        // Once the gap fills, the older bundle's sender is ready from t=900 (its nonce 0): the head is still the
        // bundle admitted at t=300.
        m.insert(
            bundle(1, 0, &[1], 10).hash(),
            bundle(1, 0, &[1], 10),
            0,
            900,
        )
        .unwrap();
        assert_eq!(m.head_wait_ms(1_000), 700);
    }

    /// The attack, and what retries under overload do by themselves: a sender's later nonces arrive before its
    /// next one, so that once it arrives they are includable and older in arrival order than any sender's next
    /// bundle. The backlog reading must still see the ready bundles that have waited for the chain. It had looked
    /// for a sender's next nonce among the first 256 includable bundles only, found none and read no backlog, so
    /// the gate admitted everything: at 6,000 bundles/s the chain stalled for 57 s with 228,000 bundles pending.
    #[test]
    fn later_nonces_sent_first_cannot_hide_the_backlog() {
        let mut m = Mempool::new(MempoolLimits {
            max_bundles: 100_000,
            max_bytes: 1 << 30,
            max_per_sender: 1_000,
            max_nonce_gap: 1_000,
            max_waiting: 100_000,
            max_waiting_bytes: 1 << 30,
            ..limits()
        });
        for nonce in 1..=300 {
            let b = bundle(1, nonce, &[1], 1);
            m.insert(b.hash(), b, 0, 0).unwrap();
        }
        assert_eq!(m.oldest_ready_ms(), None, "all wait for nonce 0");
        let first = bundle(1, 0, &[1], 1);
        m.insert(first.hash(), first, 0, 50).unwrap();
        let other = bundle(2, 0, &[1], 2);
        m.insert(other.hash(), other, 0, 100).unwrap();
        // Ready since nonce 0 arrived (t=50), not since they were admitted (t=0).
        assert_eq!(m.oldest_ready_ms(), Some(50));
        assert_eq!(m.head_wait_ms(1_000), 950);
        // Taken by a block: the other sender's bundle is the oldest ready one.
        let taken: Vec<(Hash, Sender, u64)> = (0..=300)
            .map(|n| {
                let b = bundle(1, n, &[1], 1);
                (b.hash(), b.sender, n)
            })
            .collect();
        m.on_decided(1, &taken);
        assert_eq!(m.oldest_ready_ms(), Some(100));
    }

    /// The bundle that would make a sender's waiting bundles includable is known, and published per sender.
    #[test]
    fn the_nonce_that_fills_a_senders_first_gap_is_known() {
        let mut m = Mempool::new(limits());
        // Sender 1: nonces 0 and 1 pending, 3 and 5 waiting: 2 fills the first gap.
        for nonce in [0, 1, 3, 5] {
            add(&mut m, &bundle(1, nonce, &[1], 1)).unwrap();
        }
        // Sender 2: nothing waits.
        add(&mut m, &bundle(2, 0, &[1], 2)).unwrap();
        let s1 = bundle(1, 0, &[1], 1).sender;
        let s2 = bundle(2, 0, &[1], 2).sender;
        assert!(m.fills_gap(&s1, 2, 0));
        assert!(!m.fills_gap(&s1, 4, 0), "a later gap");
        assert!(!m.fills_gap(&s1, 6, 0), "nothing waits behind it");
        assert!(!m.fills_gap(&s2, 1, 0), "nothing waits");
        assert_eq!(m.open_gaps(), vec![(s1, 2)]);
        let v = m.version();
        add(&mut m, &bundle(1, 2, &[1], 1)).unwrap();
        assert_ne!(m.version(), v);
        assert_eq!(m.open_gaps(), vec![(s1, 4)]);
        // The chain moved past the mempool's view: the gap is read from the chain's next nonce.
        assert!(m.fills_gap(&s1, 4, 3));
    }

    /// The attack: a client parks bundles behind nonce gaps (each waits up to `waiting_ttl_ms`) so that they are
    /// the oldest in arrival order. The admission gate's backlog reading must still find the ready bundle that has
    /// waited for the chain; before, it looked at the first 256 bundles in arrival order only and read no backlog.
    #[test]
    fn bundles_parked_behind_nonce_gaps_cannot_hide_the_backlog() {
        let mut m = Mempool::new(MempoolLimits {
            max_bundles: 100_000,
            max_bytes: 1 << 30,
            max_waiting: 100_000,
            max_waiting_bytes: 1 << 30,
            ..limits()
        });
        for n in 1..=200u8 {
            for nonce in 1..=2 {
                let b = bundle(n, nonce, &[1], n);
                m.insert(b.hash(), b, 0, 0).unwrap();
            }
        }
        let ready = bundle(250, 0, &[1], 1);
        m.insert(ready.hash(), ready, 0, 100).unwrap();
        assert_eq!(m.waiting().0, 400);
        assert_eq!(m.head_wait_ms(1_000), 900);
        // Filling one sender's gap makes its two bundles includable; they waited on the gap, not on the chain.
        let fill = bundle(1, 0, &[1], 1);
        m.insert(fill.hash(), fill, 0, 950).unwrap();
        assert_eq!(m.head_wait_ms(1_000), 900);
        // Decided: the wait is that of the next oldest ready bundle.
        m.on_decided(
            1,
            &[(
                bundle(250, 0, &[1], 1).hash(),
                bundle(250, 0, &[1], 1).sender,
                0,
            )],
        );
        assert_eq!(m.head_wait_ms(1_000), 50);
    }

    #[test]
    fn ready_follows_nonce_gaps_and_decisions() {
        let mut m = Mempool::new(limits());
        assert!(!m.has_ready());
        let gap = bundle(1, 1, &[1], 11);
        add(&mut m, &gap).unwrap();
        assert!(!m.has_ready(), "nonce 1 waits for nonce 0");
        let first = bundle(1, 0, &[1], 10);
        add(&mut m, &first).unwrap();
        assert!(m.has_ready());
        // Nonce 0 decided: nonce 1 is ready next.
        m.on_decided(1, &[(first.hash(), first.sender, 0)]);
        assert!(m.has_ready());
        m.on_decided(2, &[(gap.hash(), gap.sender, 1)]);
        assert!(!m.has_ready() && m.is_empty());
        // Another bundle of the same sender and nonce decided: the pending one is stale, nothing is ready.
        let late = bundle(2, 0, &[1], 20);
        add(&mut m, &late).unwrap();
        assert!(m.has_ready());
        m.on_decided(3, &[(Hash([9; 32]), late.sender, 0)]);
        assert!(
            !m.has_ready(),
            "the pending nonce 0 was used by another bundle"
        );
    }

    #[test]
    fn fifo_across_senders_and_nonce_order_within_one() {
        let mut m = Mempool::new(limits());
        // Sender 1 sends nonce 1 before nonce 0; sender 2 sends nonce 0.
        add(&mut m, &bundle(1, 1, &[1], 11)).unwrap();
        add(&mut m, &bundle(2, 0, &[1], 20)).unwrap();
        assert_eq!(picked(&m), vec![(20, 0)], "nonce 1 waits for the gap");
        add(&mut m, &bundle(1, 0, &[1], 10)).unwrap();
        assert_eq!(picked(&m), vec![(20, 0), (10, 0), (11, 1)]);
        assert_eq!(
            add(&mut m, &bundle(2, 0, &[1], 20)).unwrap(),
            Admission::AlreadyPending
        );
        // Another bundle with a pending nonce is refused.
        assert!(matches!(
            add(&mut m, &bundle(2, 0, &[1], 21)),
            Err(ConsensusError::InvalidBundle(BundleError::NoncePending {
                nonce: 0,
                ..
            }))
        ));
        // A nonce below the chain's next is refused.
        let b = bundle(3, 4, &[1], 30);
        assert!(matches!(
            m.insert(b.hash(), b, 5, 0),
            Err(ConsensusError::InvalidBundle(BundleError::NonceUsed {
                nonce: 4,
                next: 5,
                ..
            }))
        ));
    }

    #[test]
    fn decided_blocks_advance_nonces_and_drop_conflicts_and_expired() {
        let mut m = Mempool::new(limits());
        let mine = bundle(1, 0, &[1], 10);
        add(&mut m, &mine).unwrap();
        let later = bundle(1, 1, &[1], 11);
        add(&mut m, &later).unwrap();
        let k = key(2);
        let short = sign(
            &k,
            UnsignedBundle {
                network_id: 7,
                sender: k.address(),
                nonce: 0,
                expiry_height: 3,
                entries: vec![BundleEntry {
                    rollup_id: 1,
                    payload: vec![1],
                }],
            },
        );
        add(&mut m, &short).unwrap();
        // Another node's bundle with sender 1's nonce 0 was included at height 3.
        let theirs = bundle(1, 0, &[2], 99);
        let dropped = m.on_decided(3, &[(theirs.hash(), theirs.sender, 0)]);
        let hashes: Vec<Hash> = dropped.iter().map(|(h, _)| *h).collect();
        assert!(hashes.contains(&mine.hash()));
        assert!(hashes.contains(&short.hash()));
        assert!(matches!(
            dropped.iter().find(|(h, _)| *h == short.hash()).unwrap().1,
            Dropped::Expired {
                expiry_height: 3,
                height: 3
            }
        ));
        assert!(matches!(
            dropped.iter().find(|(h, _)| *h == mine.hash()).unwrap().1,
            Dropped::Rejected { .. }
        ));
        assert_eq!(picked(&m), vec![(11, 1)], "nonce 1 is next now");
        assert_eq!(m.len(), 1);
        assert_eq!(m.bytes(), later.encoded_len());
    }

    #[test]
    fn bundles_behind_a_gap_are_counted_evicted_first_and_time_out() {
        let mut m = Mempool::new(MempoolLimits {
            max_bundles: 4,
            ..limits()
        });
        let b = |nonce| bundle(1, nonce, &[1], nonce as u8);
        let ins = |m: &mut Mempool, nonce: u64, at: u64| m.insert(b(nonce).hash(), b(nonce), 0, at);
        ins(&mut m, 2, 10).unwrap();
        ins(&mut m, 3, 20).unwrap();
        assert_eq!(m.waiting(), (2, b(2).encoded_len() + b(3).encoded_len()));
        ins(&mut m, 0, 30).unwrap();
        assert_eq!(m.waiting().0, 2, "nonce 1 is still missing");
        ins(&mut m, 1, 40).unwrap();
        assert_eq!(m.waiting(), (0, 0), "the gap is filled");
        assert_eq!(picked(&m).len(), 4);

        // Full: a ready bundle of another sender evicts the oldest waiting one, a waiting one is refused.
        let mut m = Mempool::new(MempoolLimits {
            max_bundles: 3,
            ..limits()
        });
        ins(&mut m, 5, 10).unwrap();
        ins(&mut m, 6, 20).unwrap();
        ins(&mut m, 0, 30).unwrap();
        assert!(matches!(
            m.insert(bundle(2, 1, &[1], 9).hash(), bundle(2, 1, &[1], 9), 0, 40),
            Err(ConsensusError::MempoolFull(_))
        ));
        m.insert(bundle(2, 0, &[1], 9).hash(), bundle(2, 0, &[1], 9), 0, 50)
            .unwrap();
        let evicted = m.take_evicted();
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].0, b(5).hash(), "the oldest waiting bundle");
        assert!(
            evicted[0].1.contains("never sent nonce 1"),
            "{}",
            evicted[0].1
        );
        assert_eq!(m.waiting().0, 1);

        // Waiting past the TTL drops it; ready bundles stay however old.
        assert!(m
            .expire_waiting(20 + limits().waiting_ttl_ms - 1)
            .is_empty());
        let gone = m.expire_waiting(20 + limits().waiting_ttl_ms);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, b(6).hash());
        assert_eq!(m.waiting(), (0, 0));
        assert_eq!(m.len(), 2);
    }

    /// The waiting set kept step by step equals the one recomputed from scratch, whatever the order of
    /// admissions and decisions.
    fn waiting_from_scratch(m: &Mempool) -> (usize, usize) {
        let (mut count, mut bytes) = (0, 0);
        for q in m.senders.values() {
            let mut hole = false;
            for (run, (nonce, hash)) in (q.next..).zip(&q.pending) {
                hole |= *nonce != run;
                if hole {
                    count += 1;
                    bytes += m.slots[hash].bytes;
                }
            }
        }
        (count, bytes)
    }

    proptest::proptest! {
        #[test]
        fn waiting_is_kept_exactly(ops in proptest::collection::vec((0u8..3, proptest::bool::weighted(0.7), 0u64..12), 1..80)) {
            let mut m = Mempool::new(limits());
            let mut height = 1;
            for (who, admit, nonce) in ops {
                let b = bundle(who + 1, nonce, &[1], who);
                if admit {
                    let _ = m.insert(b.hash(), b, 0, height);
                } else {
                    height += 1;
                    let _ = m.on_decided(height, &[(b.hash(), b.sender, nonce)]);
                }
                proptest::prop_assert_eq!(m.waiting(), waiting_from_scratch(&m));
                // Every pending bundle once, in arrival order, across both halves.
                let seqs: Vec<u64> = m.iter().map(|(h, _)| m.slots[h].seq).collect();
                proptest::prop_assert_eq!(seqs.len(), m.len());
                proptest::prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]));
            }
        }
    }

    #[test]
    fn limits_per_sender_count_and_bytes() {
        let mut m = Mempool::new(MempoolLimits {
            max_bundles: 3,
            max_per_sender: 2,
            ..limits()
        });
        add(&mut m, &bundle(1, 0, &[1], 1)).unwrap();
        add(&mut m, &bundle(1, 1, &[1], 1)).unwrap();
        assert!(matches!(
            add(&mut m, &bundle(1, 2, &[1], 1)),
            Err(ConsensusError::InvalidBundle(BundleError::SenderLimit {
                limit: 2,
                ..
            }))
        ));
        add(&mut m, &bundle(2, 0, &[1], 1)).unwrap();
        assert!(matches!(
            add(&mut m, &bundle(3, 0, &[1], 1)),
            Err(ConsensusError::MempoolFull(_))
        ));
        // Select respects bytes: the first sender's run does not fit, the next sender's does.
        let one = bundle(2, 0, &[1], 1).encoded_len() as u64;
        let sel = m.select(one, 10);
        assert_eq!(sel.len(), 1);
        assert_eq!(sel[0].1.sender, key(1).address());
        let sel = m.select(3 * one, 2);
        assert_eq!(sel.len(), 2);
    }
}
