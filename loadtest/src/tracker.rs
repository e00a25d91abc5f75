//! The run's accounting: every bundle offered, answered and delivered, the retries of refusals the node calls
//! temporary, what each sender holds back meanwhile, and the heights seen. [`crate::run`] feeds it from the
//! submitters and the rollup streams and builds the [`Report`] from it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use baton_proto::pb;
use baton_proto::types::Hash;
use hdrhistogram::Histogram;
use rand::Rng;

use crate::report::{Second, SlowHeight, SLOW_HEIGHTS_KEPT, SLOW_HEIGHT_MS};

/// How long a bundle refused with UNAVAILABLE and no retry hint waits before it is sent again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_millis(100);
/// When retrying, how many of a sender's bundles may be out and not yet answered for good: half the node's default
/// `mempool.max_nonce_gap` (64), so that a sender never runs further ahead of its lowest open nonce than the node
/// takes. Under load that the node keeps up with, a sender has one or two out.
pub(crate) const SENDER_WINDOW: u32 = 32;

/// What the harness notes of each height's header.
pub(crate) struct HeightMark {
    height: u64,
    timestamp_ms: u64,
    round: u32,
    proposer: String,
    bundles: u32,
}

impl HeightMark {
    pub(crate) fn of(batch: &baton_proto::types::RollupBatch) -> Self {
        let h = &batch.header;
        HeightMark {
            height: h.height,
            timestamp_ms: h.timestamp_ms,
            round: h.round,
            proposer: h.proposer.to_string(),
            bundles: h.bundle_count,
        }
    }
}

pub(crate) struct Rec {
    submitted: f64,
    /// When it was acknowledged (seconds after the start); `None` until then.
    acked_at: Option<f64>,
    /// Refused for now at least once (and sent again), or held back behind its sender's refused bundle.
    refused: bool,
    sender: u64,
    /// Entries per rollup.
    pub(crate) rollups: BTreeMap<u64, u32>,
    expected: u32,
    seen: u32,
    height: Option<u64>,
    split: bool,
    delivered: Option<f64>,
}

impl Rec {
    pub(crate) fn acked(&self) -> bool {
        self.acked_at.is_some()
    }
}

/// Microseconds from `from` to `to` (seconds after the start), at least 1: a histogram's smallest value.
fn micros(from: f64, to: f64) -> u64 {
    ((to - from) * 1e6).max(1.0) as u64
}

/// What to send after an answer: the answered bundle again after a wait, and bundles its sender held back.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Answered {
    pub(crate) again: Option<(pb::SubmitBundlesRequest, Duration)>,
    pub(crate) release: Vec<pb::SubmitBundlesRequest>,
}

pub(crate) struct Tracker {
    start: Instant,
    /// The wall clock at `start` (Unix milliseconds, as in block headers).
    start_unix_ms: f64,
    pub(crate) recs: HashMap<Hash, Rec>,
    pub(crate) refs: HashMap<u64, Hash>,
    /// Requests sent and not yet answered for good, kept to be sent again after a temporary refusal (when retrying).
    requests: HashMap<u64, pb::SubmitBundlesRequest>,
    attempts: HashMap<u64, u32>,
    pub(crate) retry: bool,
    pub(crate) retried: BTreeMap<String, u64>,
    /// Per sender, its bundles refused for now and not yet answered for good: while there are any, the sender's
    /// later bundles are held back (when retrying).
    in_retry: HashMap<u64, BTreeSet<u64>>,
    /// Per sender, the bundles held back, in nonce order, by client reference (their requests are in `requests`).
    held: HashMap<u64, VecDeque<u64>>,
    /// Per sender, its bundles sent and not yet answered for good (when retrying; at most [`SENDER_WINDOW`]).
    out: HashMap<u64, u32>,
    pub(crate) held_count: u64,
    pub(crate) offered: u64,
    pub(crate) acked: u64,
    pub(crate) rejected: BTreeMap<String, u64>,
    pub(crate) delivered: u64,
    pub(crate) duplicated: u64,
    pub(crate) split: u64,
    pub(crate) unknown_entries: u64,
    pub(crate) ack_hist: Histogram<u64>,
    pub(crate) hist: Histogram<u64>,
    pub(crate) first_try_hist: Histogram<u64>,
    /// The bundles admitted at their first send: scheduled send -> acknowledged, -> block built, block built ->
    /// delivered ([`crate::report::Stages`]).
    pub(crate) first_try_ack_hist: Histogram<u64>,
    pub(crate) first_try_block_hist: Histogram<u64>,
    pub(crate) first_try_finish_hist: Histogram<u64>,
    pub(crate) seconds: Vec<(Second, Histogram<u64>)>,
    pub(crate) max_lag_ms: f64,
    /// The last header seen in the first rollup's stream: (height, timestamp).
    last_header: Option<(u64, u64)>,
    pub(crate) heights_seen: u64,
    pub(crate) heights_late_round: u64,
    pub(crate) slow_heights: Vec<SlowHeight>,
    /// Draws the retries' jitter (seeded from the step's payload seed).
    rng: rand::rngs::StdRng,
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

pub(crate) fn hist() -> Histogram<u64> {
    // Microseconds, 1 us to 1 hour, 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl Tracker {
    /// A tracker whose retry jitter is drawn from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Tracker {
            start: Instant::now(),
            start_unix_ms: unix_ms(),
            recs: HashMap::new(),
            refs: HashMap::new(),
            requests: HashMap::new(),
            attempts: HashMap::new(),
            retry: false,
            retried: BTreeMap::new(),
            in_retry: HashMap::new(),
            held: HashMap::new(),
            out: HashMap::new(),
            held_count: 0,
            offered: 0,
            acked: 0,
            rejected: BTreeMap::new(),
            delivered: 0,
            duplicated: 0,
            split: 0,
            unknown_entries: 0,
            ack_hist: hist(),
            hist: hist(),
            first_try_hist: hist(),
            first_try_ack_hist: hist(),
            first_try_block_hist: hist(),
            first_try_finish_hist: hist(),
            seconds: Vec::new(),
            max_lag_ms: 0.0,
            last_header: None,
            heights_seen: 0,
            heights_late_round: 0,
            slow_heights: Vec::new(),
            rng: rand::SeedableRng::seed_from_u64(seed),
        }
    }

    /// Times from `at` on (the timed window's start), and block timestamps against the wall clock now.
    pub(crate) fn start_at(&mut self, at: Instant) {
        self.start = at;
        self.start_unix_ms = unix_ms() - at.elapsed().as_secs_f64() * 1e3;
    }

    /// A height seen in the first rollup's stream (every height comes through it, with or without entries).
    pub(crate) fn height_seen(&mut self, h: HeightMark) {
        let gap_ms = match self.last_header {
            Some((height, ts)) if height + 1 == h.height => h.timestamp_ms.saturating_sub(ts),
            _ => 0,
        };
        self.last_header = Some((h.height, h.timestamp_ms));
        self.heights_seen += 1;
        if h.round > 0 {
            self.heights_late_round += 1;
        }
        if (gap_ms >= SLOW_HEIGHT_MS || h.round > 0) && self.slow_heights.len() < SLOW_HEIGHTS_KEPT
        {
            let seen_at = self.now();
            self.slow_heights.push(SlowHeight {
                height: h.height,
                seen_at,
                gap_ms,
                round: h.round,
                proposer: h.proposer,
                bundles: h.bundles,
            });
        }
    }

    pub(crate) fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn second(&mut self, t: f64) -> &mut (Second, Histogram<u64>) {
        let i = t.max(0.0) as usize;
        while self.seconds.len() <= i {
            let t = self.seconds.len() as u64;
            self.seconds.push((
                Second {
                    t,
                    ..Default::default()
                },
                hist(),
            ));
        }
        &mut self.seconds[i]
    }

    /// A bundle fell due; `scheduled` is when (seconds after the start), from which its latency counts. Returns the
    /// request to send now, or `None` when (retrying) its sender has an earlier bundle waiting to be sent again, or
    /// [`SENDER_WINDOW`] bundles out: it is then held, and released in order by [`Tracker::answered`].
    pub(crate) fn offered(
        &mut self,
        client_ref: u64,
        sender: u64,
        hash: Hash,
        rollups: BTreeMap<u64, u32>,
        scheduled: f64,
        request: pb::SubmitBundlesRequest,
    ) -> Option<pb::SubmitBundlesRequest> {
        let entries = rollups.values().sum();
        let t = scheduled;
        let lag_ms = ((self.now() - scheduled) * 1e3).max(0.0);
        self.offered += 1;
        self.max_lag_ms = self.max_lag_ms.max(lag_ms);
        self.second(t).0.offered += 1;
        self.refs.insert(client_ref, hash);
        let hold = self.retry
            && (self.in_retry.contains_key(&sender)
                || self.held.contains_key(&sender)
                || self.out.get(&sender).copied().unwrap_or(0) >= SENDER_WINDOW);
        self.recs.insert(
            hash,
            Rec {
                submitted: t,
                acked_at: None,
                refused: hold,
                sender,
                rollups,
                expected: entries,
                seen: 0,
                height: None,
                split: false,
                delivered: None,
            },
        );
        if hold {
            self.held_count += 1;
            self.held.entry(sender).or_default().push_back(client_ref);
            self.requests.insert(client_ref, request);
            return None;
        }
        if self.retry {
            self.requests.insert(client_ref, request.clone());
            *self.out.entry(sender).or_default() += 1;
        }
        Some(request)
    }

    /// Takes an answer. When the node said the refusal is temporary (a retry hint, or UNAVAILABLE), returns the
    /// request to send again and after how long: the wait doubles with each refusal of the same bundle, from the
    /// node's hint up to 16 times it. When the answer is final and it was the last of its sender's bundles waiting
    /// to be sent again, returns the bundles the sender held back meanwhile, to send now.
    pub(crate) fn answered(
        &mut self,
        client_ref: u64,
        result: Option<pb::submit_bundles_response::Result>,
    ) -> Answered {
        const MAX_ATTEMPTS: u32 = 600;
        let t = self.now();
        let sender = self
            .refs
            .get(&client_ref)
            .and_then(|h| self.recs.get(h))
            .map(|r| r.sender);
        if let Some(pb::submit_bundles_response::Result::Error(e)) = &result {
            let attempts = self.attempts.entry(client_ref).or_insert(0);
            if self.retry
                && (e.retry_after_ms > 0 || e.code == tonic::Code::Unavailable as i32)
                && *attempts < MAX_ATTEMPTS
                && self.refs.contains_key(&client_ref)
            {
                *attempts += 1;
                *self.retried.entry(reason(e.code, &e.message)).or_default() += 1;
                let hint = match e.retry_after_ms {
                    0 => RETRY_AFTER,
                    ms => Duration::from_millis(ms),
                };
                // Doubling from the hint, to at most 16 times the default or the hint itself if longer; then
                // "equal jitter": half of that plus a random part of the other half, so that the bundles refused
                // in one moment (a stall) do not all come back in the same one and close the gate again.
                let ceiling =
                    (hint * (1u32 << (*attempts - 1).min(4))).min(hint.max(RETRY_AFTER * 16));
                let wait = ceiling / 2 + ceiling.mul_f64(self.rng.gen::<f64>() / 2.0);
                if let Some(r) = self
                    .refs
                    .get(&client_ref)
                    .and_then(|h| self.recs.get_mut(h))
                {
                    r.refused = true;
                    self.in_retry
                        .entry(r.sender)
                        .or_default()
                        .insert(client_ref);
                }
                return Answered {
                    again: self.requests.get(&client_ref).cloned().map(|r| (r, wait)),
                    release: Vec::new(),
                };
            }
        }
        self.requests.remove(&client_ref);
        self.attempts.remove(&client_ref);
        let release = sender
            .map(|s| self.settled(s, client_ref))
            .unwrap_or_default();
        let Some(hash) = self.refs.remove(&client_ref) else {
            return Answered::default();
        };
        match result {
            Some(pb::submit_bundles_response::Result::BundleHash(_)) => {
                self.acked += 1;
                self.second(t).0.acked += 1;
                if let Some(r) = self.recs.get_mut(&hash) {
                    r.acked_at = Some(t);
                    let _ = self.ack_hist.record(micros(r.submitted, t));
                }
            }
            Some(pb::submit_bundles_response::Result::Error(e)) => {
                self.second(t).0.rejected += 1;
                *self.rejected.entry(reason(e.code, &e.message)).or_default() += 1;
            }
            None => {
                *self.rejected.entry("no result".into()).or_default() += 1;
            }
        }
        Answered {
            again: None,
            release,
        }
    }

    /// A bundle of `sender` answered for good. Once none of its bundles waits to be sent again, its held bundles
    /// are released, in order, as far as its window allows.
    fn settled(&mut self, sender: u64, client_ref: u64) -> Vec<pb::SubmitBundlesRequest> {
        if let Some(out) = self.out.get_mut(&sender) {
            *out = out.saturating_sub(1);
        }
        if let Some(waiting) = self.in_retry.get_mut(&sender) {
            waiting.remove(&client_ref);
            if !waiting.is_empty() {
                return Vec::new();
            }
            self.in_retry.remove(&sender);
        }
        let out = self.out.entry(sender).or_default();
        let mut release = Vec::new();
        if let Some(held) = self.held.get_mut(&sender) {
            while *out < SENDER_WINDOW {
                let Some(r) = held.pop_front() else { break };
                *out += 1;
                release.extend(self.requests.get(&r).cloned());
            }
            if held.is_empty() {
                self.held.remove(&sender);
            }
        }
        if *out == 0 {
            self.out.remove(&sender);
        }
        release
    }

    /// An entry of `bundle` seen in a rollup stream, in the block of `height` built at `timestamp_ms`.
    pub(crate) fn entry(&mut self, height: u64, timestamp_ms: u64, bundle: Hash) {
        let t = self.now();
        let Some(r) = self.recs.get_mut(&bundle) else {
            self.unknown_entries += 1;
            return;
        };
        r.seen += 1;
        match r.height {
            None => r.height = Some(height),
            Some(h) if h != height && !r.split => {
                r.split = true;
                self.split += 1;
            }
            _ => {}
        }
        if r.seen == r.expected + 1 {
            self.duplicated += 1;
        }
        if r.seen == r.expected {
            let expected = r.expected;
            r.delivered = Some(t);
            let us = micros(r.submitted, t);
            self.delivered += 1;
            let _ = self.hist.record(us);
            if !r.refused {
                let _ = self.first_try_hist.record(us);
                let built = (timestamp_ms as f64 - self.start_unix_ms) / 1e3;
                if let Some(acked) = r.acked_at {
                    let _ = self.first_try_ack_hist.record(micros(r.submitted, acked));
                }
                let _ = self.first_try_block_hist.record(micros(r.submitted, built));
                let _ = self.first_try_finish_hist.record(micros(built, t));
            }
            let s = self.second(t);
            s.0.delivered += 1;
            s.0.delivered_entries += u64::from(expected);
            let _ = s.1.record(us);
        }
    }

    pub(crate) fn outstanding(&self) -> u64 {
        self.recs
            .values()
            .filter(|r| r.acked() && r.delivered.is_none())
            .count() as u64
    }
}

pub(crate) fn lock(t: &Mutex<Tracker>) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stable label for a refusal: the status code and the message's first sentence (up to 120 characters), every
/// word holding a digit (a nonce, a height, an address) written `N`, so that refusals of one kind count together
/// and kinds that share their first words (a used nonce, a nonce too far ahead) do not.
fn reason(code: i32, message: &str) -> String {
    let code = tonic::Code::from(code);
    let first = message.split(';').next().unwrap_or(message);
    let words: Vec<&str> = first
        .split_whitespace()
        .map(|w| {
            if w.chars().any(|c| c.is_ascii_digit()) {
                "N"
            } else {
                w
            }
        })
        .collect();
    let mut label = words.join(" ");
    if let Some((cut, _)) = label.char_indices().nth(120) {
        label.truncate(cut);
    }
    format!("{code:?}: {label}")
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_heights_are_those_in_a_later_round_or_long_after_their_parent() {
        let mut t = Tracker::new(1);
        let mark = |height: u64, timestamp_ms: u64, round: u32| HeightMark {
            height,
            timestamp_ms,
            round,
            proposer: format!("p{height}"),
            bundles: 3,
        };
        t.height_seen(mark(10, 1_000, 0));
        t.height_seen(mark(11, 1_020, 0));
        t.height_seen(mark(12, 1_020 + SLOW_HEIGHT_MS, 0));
        t.height_seen(mark(13, 1_020 + SLOW_HEIGHT_MS + 30, 1));
        t.height_seen(mark(
            14,
            1_020 + SLOW_HEIGHT_MS + 30 + SLOW_HEIGHT_MS - 1,
            0,
        ));
        // A gap in the heights seen (a missed message) is not a slow height.
        t.height_seen(mark(20, 9_999_999, 0));
        assert_eq!(t.heights_seen, 6);
        assert_eq!(t.heights_late_round, 1);
        let slow: Vec<(u64, u64, u32)> = t
            .slow_heights
            .iter()
            .map(|s| (s.height, s.gap_ms, s.round))
            .collect();
        assert_eq!(slow, vec![(12, SLOW_HEIGHT_MS, 0), (13, 30, 1)]);
        assert_eq!(t.slow_heights[1].proposer, "p13");
    }

    /// A request with no bundle: the tracker never looks inside.
    fn req(client_ref: u64) -> pb::SubmitBundlesRequest {
        pb::SubmitBundlesRequest {
            client_ref,
            bundle: None,
        }
    }

    /// The node's refusal with `code`, and a retry hint unless 0.
    fn refused(
        code: tonic::Code,
        retry_after_ms: u64,
    ) -> Option<pb::submit_bundles_response::Result> {
        Some(pb::submit_bundles_response::Result::Error(
            pb::SubmitError {
                code: code as i32,
                message: "the node is overloaded".into(),
                retry_after_ms,
            },
        ))
    }

    /// The node's acknowledgement.
    fn ok() -> Option<pb::submit_bundles_response::Result> {
        Some(pb::submit_bundles_response::Result::BundleHash(vec![]))
    }

    #[test]
    fn refusals_the_node_calls_temporary_are_retried_and_others_are_final() {
        let mut t = Tracker::new(1);
        t.retry = true;
        for r in [1, 2, 4] {
            // Three senders, one bundle each.
            let sent = t.offered(
                r,
                r,
                Hash([r as u8; 32]),
                BTreeMap::from([(1, 1)]),
                0.0,
                req(r),
            );
            assert_eq!(sent, Some(req(r)));
        }
        // Sent again after a wait between half the ceiling and the ceiling ("equal jitter").
        let again_within = |answer: Answered, r, ceiling: Duration| {
            let Answered {
                again: Some((request, wait)),
                release,
            } = answer
            else {
                panic!("{answer:?} is not a retry");
            };
            assert_eq!((request, release), (req(r), vec![]));
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "waits {wait:?}, not within half of {ceiling:?} and all of it"
            );
            wait
        };
        again_within(
            t.answered(1, refused(tonic::Code::Unavailable, 0)),
            1,
            RETRY_AFTER,
        );
        assert_eq!(
            t.answered(2, refused(tonic::Code::InvalidArgument, 0)),
            Answered::default()
        );
        // A refusal with the node's retry hint (a full mempool) is sent again after the hint, then twice that, up
        // to 1.6 s, each jittered; the jitter spreads the waits.
        let hinted = refused(tonic::Code::ResourceExhausted, 250);
        let mut waits = Vec::new();
        for ms in [250, 500, 1_000, 1_600, 1_600] {
            waits.push(again_within(
                t.answered(4, hinted.clone()),
                4,
                Duration::from_millis(ms),
            ));
        }
        assert_ne!(
            waits[3], waits[4],
            "two draws under the same ceiling differ"
        );
        t.answered(4, ok());
        // The retried one is acknowledged on its second try; the other stays refused.
        t.answered(1, ok());
        assert_eq!((t.acked, t.rejected.values().sum::<u64>()), (2, 1));
        assert_eq!(t.retried.values().sum::<u64>(), 6);
        assert!(t.requests.is_empty());
        // Delivered: counted in the latency of all bundles, not in that of bundles admitted at their first send.
        t.entry(3, 0, Hash([1; 32]));
        assert_eq!((t.hist.len(), t.first_try_hist.len()), (1, 0));
        // A bundle taken at once counts in both.
        t.offered(3, 3, Hash([3; 32]), BTreeMap::from([(1, 1)]), 0.0, req(3));
        t.answered(3, ok());
        t.entry(3, 0, Hash([3; 32]));
        assert_eq!((t.hist.len(), t.first_try_hist.len()), (2, 1));
    }

    #[test]
    fn a_first_try_bundles_time_is_split_at_its_ack_and_at_its_blocks_timestamp() {
        let mut t = Tracker::new(1);
        t.start_unix_ms = 1_000_000.0;
        // Due 50 ms before the tracker's start, built into a block 20 ms before it: 30 ms to the block.
        t.offered(1, 1, Hash([1; 32]), BTreeMap::from([(1, 1)]), -0.05, req(1));
        t.answered(1, ok());
        t.entry(4, 999_980, Hash([1; 32]));
        let ms = |h: &Histogram<u64>| h.max() as f64 / 1e3;
        assert_eq!(t.first_try_block_hist.len(), 1);
        assert!((ms(&t.first_try_block_hist) - 30.0).abs() < 0.1);
        assert!(ms(&t.first_try_finish_hist) >= 20.0);
        assert!(ms(&t.first_try_ack_hist) >= 50.0);
        // A bundle refused once is not in the split.
        t.retry = true;
        t.offered(2, 2, Hash([2; 32]), BTreeMap::from([(1, 1)]), 0.0, req(2));
        t.answered(2, refused(tonic::Code::Unavailable, 100));
        t.answered(2, ok());
        t.entry(4, 999_980, Hash([2; 32]));
        assert_eq!(
            (
                t.hist.len(),
                t.first_try_block_hist.len(),
                t.first_try_ack_hist.len()
            ),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_sender_holds_its_later_bundles_while_an_earlier_one_waits_to_be_sent_again() {
        let mut t = Tracker::new(1);
        t.retry = true;
        let (alice, bob) = (7, 8);
        let due = |t: &mut Tracker, r: u64, sender| {
            t.offered(
                r,
                sender,
                Hash([r as u8; 32]),
                BTreeMap::from([(1, 1)]),
                0.0,
                req(r),
            )
        };
        let busy = || refused(tonic::Code::Unavailable, 100);
        // Alice's nonces 0 and 1 go out; 0 is refused for now.
        assert!(due(&mut t, 10, alice).is_some());
        assert!(due(&mut t, 11, alice).is_some());
        assert!(t.answered(10, busy()).again.is_some());
        // Her nonce 2 falls due while 0 waits: held. Bob is not held.
        assert_eq!(due(&mut t, 12, alice), None);
        assert!(due(&mut t, 20, bob).is_some());
        // Her nonce 1, already out, is refused too: both wait, so nonce 0's acknowledgement releases nothing.
        assert!(t.answered(11, busy()).again.is_some());
        assert_eq!(t.answered(10, ok()).release, vec![]);
        assert_eq!(due(&mut t, 13, alice), None);
        // Nonce 1 acknowledged: nonces 2 and 3 go out, in order, and later ones are sent when due.
        assert_eq!(t.answered(11, ok()).release, vec![req(12), req(13)]);
        assert!(due(&mut t, 14, alice).is_some());
        assert_eq!(t.held_count, 2);
        // A final refusal releases as well: the held bundles are the client's to send, whatever becomes of them.
        assert!(t.answered(14, busy()).again.is_some());
        assert_eq!(due(&mut t, 15, alice), None);
        let fin = Some(pb::submit_bundles_response::Result::Error(
            pb::SubmitError {
                code: tonic::Code::InvalidArgument as i32,
                message: "bundle.expiry_height 3 has passed".into(),
                retry_after_ms: 0,
            },
        ));
        assert_eq!(t.answered(14, fin).release, vec![req(15)]);
        // Held bundles do not count as admitted at their first send.
        for r in [12, 13, 20] {
            t.answered(r, ok());
            t.entry(5, 0, Hash([r as u8; 32]));
        }
        assert_eq!((t.hist.len(), t.first_try_hist.len()), (3, 1));
        // Alice has only 15 out now. Whatever is refused, she has at most SENDER_WINDOW out: the next ones wait
        // for answers, one per answer.
        t.answered(15, ok());
        let window = u64::from(SENDER_WINDOW);
        for r in 100..100 + window {
            assert!(due(&mut t, r, alice).is_some());
        }
        assert_eq!(due(&mut t, 100 + window, alice), None);
        assert_eq!(due(&mut t, 101 + window, alice), None);
        assert_eq!(t.answered(100, ok()).release, vec![req(100 + window)]);
        assert_eq!(t.answered(101, ok()).release, vec![req(101 + window)]);
        assert!(due(&mut t, 102 + window, alice).is_none());
    }

    #[test]
    fn completeness_accounting() {
        let mut t = Tracker::new(1);
        let (a, b, c) = (Hash([1; 32]), Hash([2; 32]), Hash([3; 32]));
        t.offered(1, 1, a, BTreeMap::from([(1, 1), (2, 1)]), 0.0, req(1));
        t.offered(2, 2, b, BTreeMap::from([(1, 1)]), 0.0, req(2));
        t.offered(3, 3, c, BTreeMap::from([(2, 1)]), 0.0, req(3));
        t.answered(1, ok());
        t.answered(2, ok());
        t.answered(
            3,
            Some(pb::submit_bundles_response::Result::Error(
                pb::SubmitError {
                    code: tonic::Code::FailedPrecondition as i32,
                    message: "bundle.nonce 4 of sender 0xab is already used".into(),
                    retry_after_ms: 0,
                },
            )),
        );
        t.entry(5, 0, a);
        assert_eq!(t.outstanding(), 2, "a has one of two entries, b none");
        t.entry(6, 0, a);
        t.entry(5, 0, b);
        t.entry(5, 0, b);
        t.entry(5, 0, Hash([9; 32]));
        assert_eq!(
            (t.delivered, t.split, t.duplicated, t.unknown_entries),
            (2, 1, 1, 1)
        );
        assert_eq!(t.outstanding(), 0);
        assert_eq!(
            t.rejected.keys().next().map(String::as_str),
            Some("FailedPrecondition: bundle.nonce N of sender N is already used")
        );
    }
}
