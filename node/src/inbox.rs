//! Following the L1 inbox: the node's L1 view for block building and validation ([`baton_consensus::origin`]).
//!
//! A task polls a [`Watcher`] over the `BatonInbox` at the genesis `origin_safety` and mirrors what it read into
//! state shared with the consensus host:
//!
//! - the recent canonical L1 blocks at that safety, with when this node first saw each (a proposer names a block as
//!   its origin only once it has seen it for `origin_delay_ms`; a validator accepts an origin it has seen and that
//!   is at most `max_origin_lag` blocks behind its newest);
//! - the forced-inclusion queue: entries whose payload is a well-formed, validly signed bundle for shared rollups,
//!   with their deadlines (others are logged and never owed). Only entries that can still be owed are held: after
//!   every decided block the view drops those the decided chain resolved ([`baton_consensus::origin::forced_resolved`]:
//!   expired, or their nonce used, which covers included), and an entry read from L1 that the node's store already
//!   resolves is never queued. The cursor this rests on is persisted already: the decided height and each
//!   sender's next nonce, committed with every block. So a restart, which reads the inbox from its deployment
//!   block again (the staking table needs every event), queues only the unresolved entries. An inbox-index cursor
//!   was not used: an L1 reorg below finality gives an index to another entry, while resolution depends on the
//!   bundle alone. The due list is built once per (queue, L1 block) and shared ([`L1View::forced_due`] returns an
//!   `Arc`), not copied for every proposal. Bound: the entries not yet resolved (each costs its poster an L1
//!   transaction and the inbox's fee; one with a nonce gap and a far expiry can wait long), plus one shared due
//!   list.
//!
//! - with `[l1] staking`, the `BatonStaking` events (same watcher, same order and reorg handling): the staking table
//!   at any block read so far ([`L1View::stake_table`]), from which the next epoch's set is computed.
//!
//! A block is recorded only after the inbox logs up to it were read, so a validator that accepts an origin has
//! every forced entry due by it and the staking table at it. A reorg at the safety level rolls the queue back with the blocks.
//! The watcher forgets its raw events once L1 finalizes their blocks ([`forget_final`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use alloy::providers::Provider;
use baton_consensus::block::{check_stateless, OrderedBy};
use baton_consensus::bundle::Bundle;
use baton_consensus::bundle::Sender;
use baton_consensus::epoch::{CandidateTable, PositionedEvent, StakeEvent};
use baton_consensus::error::BlockError;
use baton_consensus::error::ConsensusError;
use baton_consensus::hash::Hash;
use baton_consensus::ids::{Address, L1Origin};
use baton_consensus::origin::{forced_resolved, judge_origin, ForcedBundle, L1View};
use baton_consensus::registry::ChainSpec;
use baton_consensus::store::ChainRead;
use baton_consensus::view::ChainView;
use baton_l1_inclusion::watcher::{
    EventPosition, InboxEvent, InboxEventKind, L1Block, Watcher, WatcherConfig, WatcherUpdate,
};
use tracing::{debug, info, warn};

use crate::store::RocksStore;
use crate::tasks::Tasks;

/// What the follower task shares with the host.
#[derive(Debug, Default)]
struct FollowState {
    /// Recent canonical blocks at the safety: hash and when first seen.
    blocks: BTreeMap<u64, (B256, Instant)>,
    /// The forced queue by inbox position: the entries not resolved yet.
    forced: BTreeMap<EventPosition, ForcedBundle>,
    /// The due list last handed out and the L1 block it was for; cleared whenever the queue changes.
    due: Option<(u64, Arc<[ForcedBundle]>)>,
    /// Forced entries refused (not a valid shared bundle), for metrics.
    refused: u64,
    /// Staking events by position (with `[l1] staking`).
    stakes: BTreeMap<EventPosition, StakeEvent>,
    /// The last L1 block read (events up to it are known).
    read_to: Option<u64>,
    /// Attester of every consensus key registered on the canonical chain read so far (vote-extension checks of
    /// validators outside genesis); rolled back with `stakes` on an L1 reorg.
    attesters: HashMap<Address, alloy::primitives::Address>,
}

impl FollowState {
    /// Takes a staking event read from L1 (a registration also binds its key's attester).
    fn add_stake(&mut self, position: EventPosition, event: StakeEvent) {
        if let StakeEvent::Registered { key, attester, .. } = &event {
            self.attesters.insert(
                Address::from_public_key_bytes(key),
                alloy::primitives::Address::from(*attester),
            );
        }
        self.stakes.insert(position, event);
    }

    /// The attester `validator`'s key is bound to by a registration read so far.
    fn attester_of(&self, validator: &Address) -> Option<alloy::primitives::Address> {
        self.attesters.get(validator).copied()
    }

    /// Drops the staking events an L1 reorg removed, and the attester bindings with them: the map is rebuilt from
    /// the registrations still on the canonical chain (in order, as they were read), so a key whose registration
    /// the reorg removed has no attester, or the one its registration on the new branch names.
    fn roll_back_stakes(&mut self, removed: &[InboxEvent]) {
        let mut registrations_removed = false;
        for e in removed {
            if let Some(StakeEvent::Registered { .. }) = self.stakes.remove(&e.position) {
                registrations_removed = true;
            }
        }
        if registrations_removed {
            self.attesters = self
                .stakes
                .values()
                .filter_map(|e| match e {
                    StakeEvent::Registered { key, attester, .. } => Some((
                        Address::from_public_key_bytes(key),
                        alloy::primitives::Address::from(*attester),
                    )),
                    _ => None,
                })
                .collect();
        }
    }
}

/// The L1 view handed to the host; cheap to clone.
#[derive(Clone, Debug)]
pub struct InboxView {
    state: Arc<Mutex<FollowState>>,
    origin_delay: Duration,
    max_lag: u64,
}

/// Settings of the follower.
#[derive(Clone, Debug)]
pub struct FollowConfig {
    pub watcher: WatcherConfig,
    pub poll: Duration,
    pub origin_delay: Duration,
    pub max_lag: u64,
}

impl InboxView {
    fn state(&self) -> MutexGuard<'_, FollowState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest L1 block seen, if any (for metrics and status).
    pub fn head(&self) -> Option<u64> {
        self.state().blocks.keys().next_back().copied()
    }

    /// Forced entries waiting (resolved ones are dropped as blocks are decided).
    pub fn forced_len(&self) -> usize {
        self.state().forced.len()
    }

    /// Forced entries whose payload was refused.
    pub fn forced_refused(&self) -> u64 {
        self.state().refused
    }

    /// The L1 attester a consensus key registered with in the staking contract. Only registrations with a valid
    /// proof of possession reach here ([`baton_l1_inclusion::staking::decode`]), and the contract binds a key to
    /// one attester for good: this is the attester `BatonCommitments.rotate` reads for it.
    pub fn attester(&self, validator: &Address) -> Option<alloy::primitives::Address> {
        self.state().attester_of(validator)
    }
}

impl L1View for InboxView {
    fn proposal_origin(&self) -> Option<L1Origin> {
        let s = self.state();
        let now = Instant::now();
        s.blocks
            .iter()
            .rev()
            .find(|(_, (_, seen))| now.duration_since(*seen) >= self.origin_delay)
            .map(|(n, (h, _))| L1Origin {
                number: *n,
                hash: Hash(h.0),
            })
    }

    fn check_origin(&self, origin: &L1Origin) -> Result<(), BlockError> {
        let s = self.state();
        let head = s.blocks.keys().next_back().copied().unwrap_or(0);
        let seen = s.blocks.get(&origin.number).map(|(h, _)| Hash(h.0));
        judge_origin(origin, head, seen, self.max_lag)
    }

    fn forced_due(&self, number: u64) -> Arc<[ForcedBundle]> {
        let mut s = self.state();
        if let Some((n, due)) = &s.due {
            if *n == number {
                return due.clone();
            }
        }
        let mut due: Vec<ForcedBundle> = s
            .forced
            .values()
            .filter(|f| f.deadline <= number)
            .cloned()
            .collect();
        due.sort_by_key(|f| f.index);
        let due: Arc<[ForcedBundle]> = due.into();
        s.due = Some((number, due.clone()));
        due
    }

    fn decided(&self, height: u64, view: &dyn ChainView) {
        let mut s = self.state();
        let before = s.forced.len();
        // A read error keeps the entry: forgetting too little is harmless.
        s.forced
            .retain(|_, f| !forced_resolved(f, height, view).unwrap_or(false));
        if s.forced.len() != before {
            debug!(
                height,
                forgotten = before - s.forced.len(),
                "resolved forced entries forgotten"
            );
            s.due = None;
        }
    }

    fn stake_table(&self, number: u64) -> Option<CandidateTable> {
        let s = self.state();
        if s.read_to? < number {
            return None;
        }
        Some(CandidateTable::from_blocks(
            s.stakes
                .range(
                    ..EventPosition {
                        block_number: number + 1,
                        tx_index: 0,
                        log_index: 0,
                    },
                )
                .map(|(p, e)| {
                    (
                        p.block_number,
                        PositionedEvent {
                            tx_index: p.tx_index,
                            log_index: p.log_index,
                            event: e.clone(),
                        },
                    )
                }),
        ))
    }
}

/// Reads a forced entry's payload: a borsh-encoded bundle that passes the validators' checks and is validly
/// signed.
pub fn forced_bundle(
    index: u64,
    deadline: u64,
    payload: &[u8],
    spec: &ChainSpec,
) -> Result<ForcedBundle, String> {
    let bundle: Bundle =
        borsh::from_slice(payload).map_err(|e| format!("payload is not a bundle: {e}"))?;
    let hash = check_stateless(&bundle, spec, OrderedBy::Validators, |_| false)
        .map_err(|e| e.to_string())?;
    Ok(ForcedBundle {
        index,
        deadline,
        hash,
        bundle,
    })
}

/// The node's decided chain as [`forced_resolved`] reads it.
struct Decided<'a>(&'a RocksStore);

impl ChainView for Decided<'_> {
    fn is_included(&self, bundle: &Hash) -> Result<bool, ConsensusError> {
        Ok(self.0.inclusion(bundle)?.is_some())
    }

    fn next_nonce(&self, sender: &Sender) -> Result<u64, ConsensusError> {
        ChainRead::next_nonce(self.0, sender)
    }

    fn signature_checked(&self, _: &Hash, _: &[u8; 65]) -> bool {
        false
    }
}

/// Whether the decided chain in `store` already resolves `f` (read errors: not resolved). Whatever height the
/// store has committed when it is read, the host judges only heights above it, and no height above owes `f`.
fn resolved_in(store: &RocksStore, f: &ForcedBundle) -> bool {
    let height = store.latest_height().unwrap_or(0);
    forced_resolved(f, height, &Decided(store)).unwrap_or(false)
}

/// Reads L1's finalized block and lets the watcher forget the events of blocks at or below it (no reorg will
/// report them removed); returns it, capped at the watcher's newest block. `None` when L1 does not answer or has no
/// finalized block yet.
pub(crate) async fn forget_final<P: Provider>(watcher: &mut Watcher<P>) -> Option<L1Block> {
    let tip = watcher.tip()?;
    let finalized = match watcher.finalized().await {
        Ok(Some(b)) => b,
        Ok(None) => return None,
        Err(e) => {
            debug!(error = %e, "reading L1's finalized block failed");
            return None;
        }
    };
    let fin = if finalized.number >= tip.number {
        tip
    } else {
        finalized
    };
    watcher.forget_events_before(fin.number + 1);
    Some(fin)
}

/// Starts the follower in the node's `tasks`; returns the view for the host. `store` is the node's decided chain:
/// entries it resolves are not queued.
pub fn start<P: Provider + 'static>(
    provider: P,
    inbox: alloy::primitives::Address,
    staking: Option<alloy::primitives::Address>,
    spec: ChainSpec,
    cfg: FollowConfig,
    store: RocksStore,
    tasks: &mut Tasks,
) -> InboxView {
    let view = InboxView {
        state: Arc::new(Mutex::new(FollowState::default())),
        origin_delay: cfg.origin_delay,
        max_lag: cfg.max_lag,
    };
    let state = view.state.clone();
    let keep = cfg.max_lag + 16;
    let mut watcher = Watcher::new(
        provider,
        inbox,
        WatcherConfig {
            track_blocks: keep,
            ..cfg.watcher
        },
    );
    if let Some(staking) = staking {
        watcher = watcher.follow_staking(staking);
    }
    tasks.spawn("L1 inbox follower", async move {
        info!(%inbox, "following the L1 inbox");
        loop {
            let update = next_update(&mut watcher, cfg.poll, "L1 origin and forced entries").await;
            let advanced = matches!(update, WatcherUpdate::Advanced { .. });
            apply(&state, &watcher, update, &spec, keep, &store);
            if advanced {
                forget_final(&mut watcher).await;
            }
        }
    });
    view
}

/// The watcher's next update: polls at once while there is more to read, every `poll` otherwise; a failing L1
/// endpoint is logged once (as a warning, naming `what` follows it) until it answers again.
pub(crate) async fn next_update<P: Provider>(
    watcher: &mut Watcher<P>,
    poll: Duration,
    what: &str,
) -> WatcherUpdate {
    let mut failing = false;
    loop {
        match watcher.poll().await {
            Ok(Some(update)) => return update,
            Ok(None) => failing = false,
            Err(e) if !failing => {
                warn!(error = %e, what, "reading the L1 inbox failed; retrying");
                failing = true;
            }
            Err(e) => debug!(error = %e, what, "reading the L1 inbox failed again"),
        }
        tokio::time::sleep(poll).await;
    }
}

fn apply<P: Provider>(
    state: &Mutex<FollowState>,
    watcher: &Watcher<P>,
    update: WatcherUpdate,
    spec: &ChainSpec,
    keep: u64,
    store: &RocksStore,
) {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    match update {
        WatcherUpdate::Advanced { events, to } => {
            for e in events {
                add_event(&mut s, e, spec, |f| resolved_in(store, f));
            }
            s.read_to = Some(to.number);
        }
        WatcherUpdate::RolledBack { to, removed } => {
            s.read_to = Some(to.number);
            s.roll_back_stakes(&removed);
            warn!(
                to = to.number,
                removed = removed.len(),
                "L1 reorg at the origin safety"
            );
            for e in removed {
                s.forced.remove(&e.position);
            }
            s.due = None;
        }
    }
    // Mirror the watcher's recent blocks, keeping first-seen times of blocks that did not change.
    let now = Instant::now();
    let newest = watcher.tip().map_or(0, |t| t.number);
    let old = std::mem::take(&mut s.blocks);
    s.blocks = watcher
        .blocks()
        .filter(|b| b.number + keep > newest)
        .map(|b| {
            let seen = old
                .get(&b.number)
                .filter(|(h, _)| *h == b.hash)
                .map_or(now, |(_, t)| *t);
            (b.number, (b.hash, seen))
        })
        .collect();
}

/// Takes one inbox event into the state; a forced entry that `resolved` says the decided chain already resolves is
/// not queued (it can never be owed).
fn add_event(
    s: &mut FollowState,
    e: InboxEvent,
    spec: &ChainSpec,
    resolved: impl Fn(&ForcedBundle) -> bool,
) {
    if let InboxEventKind::Stake(event) = &e.kind {
        info!(block = e.position.block_number, ?event, "staking event");
        s.add_stake(e.position, event.clone());
        return;
    }
    if let InboxEventKind::Forced {
        index,
        deadline,
        payload,
        rollup_id,
        ..
    } = &e.kind
    {
        match forced_bundle(*index, *deadline, payload, spec) {
            Ok(f) if resolved(&f) => {
                debug!(index, rollup_id, bundle = %f.hash, "forced-inclusion entry already resolved");
            }
            Ok(f) => {
                info!(index, deadline, rollup_id, bundle = %f.hash, "forced-inclusion entry queued");
                s.forced.insert(e.position, f);
                s.due = None;
            }
            Err(why) => {
                s.refused += 1;
                warn!(index, rollup_id, %why, "forced-inclusion entry is not a valid bundle; it is never owed");
            }
        }
    }
}

#[cfg(test)]
mod attester_rollback_tests {
    use super::*;

    fn at(block_number: u64) -> EventPosition {
        EventPosition {
            block_number,
            tx_index: 0,
            log_index: 0,
        }
    }

    fn registered(key: [u8; 32], attester: [u8; 20]) -> StakeEvent {
        StakeEvent::Registered {
            key,
            attester,
            stake: 1,
        }
    }

    /// The removed events of a reorg, as the watcher reports them.
    fn removed(events: &[(EventPosition, StakeEvent)]) -> Vec<InboxEvent> {
        events
            .iter()
            .map(|(position, e)| InboxEvent {
                position: *position,
                block_hash: B256::repeat_byte(0xee),
                kind: InboxEventKind::Stake(e.clone()),
            })
            .collect()
    }

    /// A registration an L1 reorg removed no longer gives its key an attester, and a registration the new branch
    /// carries instead gives the new one; bindings the reorg did not touch stay.
    #[test]
    fn an_l1_reorg_rolls_the_attester_map_back_with_the_staking_events() {
        let (kept, reorged, rebound) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let address = |k: &[u8; 32]| Address::from_public_key_bytes(k);
        let eth = |b: u8| alloy::primitives::Address::from([b; 20]);
        let mut s = FollowState::default();
        s.add_stake(at(10), registered(kept, [0xa1; 20]));
        let gone = [
            (at(12), registered(reorged, [0xa2; 20])),
            (at(13), registered(rebound, [0xa3; 20])),
        ];
        for (p, e) in gone.clone() {
            s.add_stake(p, e);
        }
        assert_eq!(s.attester_of(&address(&reorged)), Some(eth(0xa2)));

        // L1 reorgs blocks 12 and 13 away; the new branch registers `rebound` with another attester.
        s.roll_back_stakes(&removed(&gone));
        s.add_stake(at(12), registered(rebound, [0xb3; 20]));

        assert_eq!(
            s.attester_of(&address(&reorged)),
            None,
            "a registration the reorg removed still names its attester"
        );
        assert_eq!(s.attester_of(&address(&rebound)), Some(eth(0xb3)));
        assert_eq!(s.attester_of(&address(&kept)), Some(eth(0xa1)));
        assert_eq!(s.stakes.len(), 2);
    }
}
