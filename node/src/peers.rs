//! Who may speak on the proposal-parts channel, and how much.
//!
//! That channel carries proposals, dissemination (`Bundles`) and asks for bundles (`Want`): everything on it costs
//! the receiver work (streams kept, signatures recovered, answers sent). On a chain with epochs any peer may
//! connect, so the loop takes such messages only from peers it can name: validators of the current set (and of the
//! set before the latest change, for messages crossing an epoch boundary) and `p2p.extra_peers` entries that name
//! a peer id. A validator's peer id is derived from its consensus key (its libp2p identity is the same Ed25519
//! key), and libp2p authenticates it on connection (and gossipsub signs what it relays), so the publisher cannot be
//! forged.
//!
//! Each allowed peer then has its own budget, so that one cannot crowd out another: messages and bytes per second
//! (a token bucket, one second of burst), and bytes of its dissemination waiting in or on the verifier pool at
//! once. A peer whose dissemination fails the stateless checks (a bad signature, a malformed bundle; an honest
//! node checks before it sends) is ignored for `p2p.penalty_secs`. Votes are not on this channel: the engine
//! checks them against the height's set itself.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use baton_consensus::hash::Hash;
use baton_consensus::validators::ValidatorSet;
use malachitebft_app_channel::app::net::Multiaddr;

use crate::error::NodeError;
use crate::quota::{Quota, QuotaGuard};

/// Per-peer limits on the proposal-parts channel (`[p2p]` in the node config).
#[derive(Clone, Copy, Debug)]
pub struct PeerLimits {
    pub messages_per_sec: u32,
    pub bytes_per_sec: u64,
    pub inflight_bytes: usize,
    pub penalty: Duration,
}

/// Why a message was not taken in (the metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The publisher is neither a validator of the current (or previous) set nor a configured peer.
    NotAMember,
    /// The publisher sent invalid dissemination recently.
    Penalised,
    /// Over its messages or bytes per second.
    Rate,
    /// Its dissemination waiting for signature checks already fills its share.
    Inflight,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NotAMember => "not_a_member",
            Refusal::Penalised => "penalised",
            Refusal::Rate => "rate",
            Refusal::Inflight => "inflight",
        }
    }
}

/// Tokens for messages and bytes, refilled continuously up to one second's worth.
#[derive(Debug)]
struct Bucket {
    messages: f64,
    bytes: f64,
    at: Instant,
}

/// The peer id (libp2p multihash bytes) of a validator: its consensus key is its libp2p identity.
pub fn peer_of_key(public_key: &[u8; 32]) -> Option<Vec<u8>> {
    let ed = libp2p_identity::ed25519::PublicKey::try_from_bytes(public_key).ok()?;
    Some(libp2p_identity::PublicKey::from(ed).to_peer_id().to_bytes())
}

/// The peer ids named in configured multiaddrs (`.../p2p/<peer id>`); entries without one are skipped.
pub fn configured_peers(addrs: &[String]) -> Result<Vec<Vec<u8>>, NodeError> {
    let mut out = Vec::new();
    for a in addrs {
        let addr: Multiaddr = a
            .parse()
            .map_err(|e| NodeError::Config(format!("`{a}` is not a multiaddr: {e}")))?;
        let text = addr.to_string();
        if let Some((_, rest)) = text.split_once("/p2p/") {
            let id = rest.split('/').next().unwrap_or_default();
            let id: libp2p_identity::PeerId = id
                .parse()
                .map_err(|e| NodeError::Config(format!("`{a}`: bad peer id: {e}")))?;
            out.push(id.to_bytes());
        }
    }
    Ok(out)
}

/// The gate. Owned by the consensus loop; the in-flight counts are shared with the verifier pool's jobs.
#[derive(Debug)]
pub struct PeerGate {
    limits: PeerLimits,
    configured: HashSet<Vec<u8>>,
    /// Validators of the current set and of the one before the latest change.
    members: HashSet<Vec<u8>>,
    current: Vec<Vec<u8>>,
    set_hash: Option<Hash>,
    buckets: HashMap<Vec<u8>, Bucket>,
    penalised: HashMap<Vec<u8>, Instant>,
    inflight: Quota<Vec<u8>>,
}

/// A peer's share of the verifier pool, held while its dissemination waits or is checked; released on drop.
pub type InflightShare = QuotaGuard<Vec<u8>>;

impl PeerGate {
    pub fn new(limits: PeerLimits, configured: Vec<Vec<u8>>) -> Self {
        PeerGate {
            limits,
            configured: configured.into_iter().collect(),
            members: HashSet::new(),
            current: Vec::new(),
            set_hash: None,
            buckets: HashMap::new(),
            penalised: HashMap::new(),
            inflight: Quota::default(),
        }
    }

    /// Follows the validator set of the next height: called at start and after every decision (cheap when the set
    /// did not change). The previous set's members stay allowed until the next change.
    pub fn follow(&mut self, set: &ValidatorSet) {
        let hash = set.hash();
        if self.set_hash == Some(hash) {
            return;
        }
        let next: Vec<Vec<u8>> = set
            .validators()
            .iter()
            .filter_map(|v| peer_of_key(v.public_key.as_bytes()))
            .collect();
        let previous = std::mem::replace(&mut self.current, next);
        self.members = self.current.iter().chain(&previous).cloned().collect();
        self.set_hash = Some(hash);
        let allowed = |p: &Vec<u8>| self.members.contains(p) || self.configured.contains(p);
        self.buckets.retain(|p, _| allowed(p));
        self.penalised.retain(|p, _| allowed(p));
    }

    /// Whether a message of `bytes` from `peer` is taken in; charges its budget if so.
    pub fn check(&mut self, peer: &[u8], bytes: usize, now: Instant) -> Result<(), Refusal> {
        if !self.members.contains(peer) && !self.configured.contains(peer) {
            return Err(Refusal::NotAMember);
        }
        if let Some(until) = self.penalised.get(peer) {
            if now < *until {
                return Err(Refusal::Penalised);
            }
            self.penalised.remove(peer);
        }
        let (rate_m, rate_b) = (
            f64::from(self.limits.messages_per_sec),
            self.limits.bytes_per_sec as f64,
        );
        // Looked up before it is inserted: no allocation per message for a known peer.
        if !self.buckets.contains_key(peer) {
            self.buckets.insert(
                peer.to_vec(),
                Bucket {
                    messages: rate_m,
                    bytes: rate_b,
                    at: now,
                },
            );
        }
        let Some(b) = self.buckets.get_mut(peer) else {
            return Err(Refusal::Rate);
        };
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = now;
        b.messages = (b.messages + dt * rate_m).min(rate_m);
        b.bytes = (b.bytes + dt * rate_b).min(rate_b);
        if b.messages < 1.0 || b.bytes < bytes as f64 {
            return Err(Refusal::Rate);
        }
        b.messages -= 1.0;
        b.bytes -= bytes as f64;
        Ok(())
    }

    /// Ignores `peer` for the penalty period. Returns whether it was not penalised already.
    pub fn penalise(&mut self, peer: &[u8], now: Instant) -> bool {
        self.penalised
            .insert(peer.to_vec(), now + self.limits.penalty)
            .is_none_or(|until| until <= now)
    }

    /// Peers currently ignored.
    pub fn penalised_count(&self, now: Instant) -> usize {
        self.penalised.values().filter(|u| **u > now).count()
    }

    /// Reserves `bytes` of `peer`'s share of the verifier pool, if it has room.
    pub fn reserve(&self, peer: &[u8], bytes: usize) -> Result<InflightShare, Refusal> {
        self.inflight
            .take(&peer.to_vec(), bytes, self.limits.inflight_bytes)
            .ok_or(Refusal::Inflight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_consensus::validators::Validator;
    use ed25519_consensus::SigningKey;

    fn limits() -> PeerLimits {
        PeerLimits {
            messages_per_sec: 10,
            bytes_per_sec: 1_000,
            inflight_bytes: 500,
            penalty: Duration::from_secs(60),
        }
    }

    fn set(seeds: &[u8]) -> (ValidatorSet, Vec<Vec<u8>>) {
        let keys: Vec<SigningKey> = seeds.iter().map(|s| SigningKey::from([*s; 32])).collect();
        let set = ValidatorSet::new(
            keys.iter()
                .map(|k| Validator::new(k.verification_key(), 1))
                .collect(),
        )
        .unwrap();
        let peers = keys
            .iter()
            .map(|k| peer_of_key(k.verification_key().as_bytes()).unwrap())
            .collect();
        (set, peers)
    }

    #[test]
    fn only_members_of_the_current_or_previous_set_and_configured_peers_are_heard() {
        let now = Instant::now();
        let (first, a) = set(&[1, 2]);
        let (second, b) = set(&[2, 3]);
        let (third, _) = set(&[3, 4]);
        let outsider =
            peer_of_key(SigningKey::from([9; 32]).verification_key().as_bytes()).unwrap();
        let configured =
            peer_of_key(SigningKey::from([8; 32]).verification_key().as_bytes()).unwrap();
        let mut gate = PeerGate::new(limits(), vec![configured.clone()]);
        gate.follow(&first);
        assert_eq!(gate.check(&a[0], 1, now), Ok(()));
        assert_eq!(gate.check(&outsider, 1, now), Err(Refusal::NotAMember));
        assert_eq!(gate.check(&configured, 1, now), Ok(()));
        // After a change the previous set is still heard; after the next, only the latest two.
        gate.follow(&second);
        assert_eq!(gate.check(&a[0], 1, now), Ok(()));
        assert_eq!(gate.check(&b[1], 1, now), Ok(()));
        gate.follow(&third);
        assert_eq!(gate.check(&a[0], 1, now), Err(Refusal::NotAMember));
        assert_eq!(gate.check(&b[1], 1, now), Ok(()));
        assert_eq!(gate.check(&configured, 1, now), Ok(()));
    }

    #[test]
    fn configured_peers_are_the_peer_ids_their_addresses_name() {
        let id = peer_of_key(SigningKey::from([8; 32]).verification_key().as_bytes()).unwrap();
        let text = libp2p_identity::PeerId::from_bytes(&id)
            .unwrap()
            .to_string();
        let got = configured_peers(&[
            format!("/ip4/127.0.0.1/tcp/1/p2p/{text}"),
            "/ip4/127.0.0.1/tcp/2".into(),
        ])
        .unwrap();
        assert_eq!(got, vec![id]);
        assert!(configured_peers(&["nonsense".into()]).is_err());
    }

    #[test]
    fn each_peer_has_its_own_rate_and_share_and_a_penalty_silences_it() {
        let now = Instant::now();
        let (s, p) = set(&[1, 2]);
        let mut gate = PeerGate::new(limits(), vec![]);
        gate.follow(&s);
        // Ten messages a second: the eleventh waits for the bucket to refill; the other peer is untouched.
        for _ in 0..10 {
            assert_eq!(gate.check(&p[0], 1, now), Ok(()));
        }
        assert_eq!(gate.check(&p[0], 1, now), Err(Refusal::Rate));
        assert_eq!(gate.check(&p[1], 1, now), Ok(()));
        assert_eq!(
            gate.check(&p[0], 1, now + Duration::from_millis(150)),
            Ok(())
        );
        // Bytes: 1,000 a second.
        assert_eq!(gate.check(&p[1], 2_000, now), Err(Refusal::Rate));
        // The verifier share: 500 bytes waiting at once, released when the share is dropped.
        let held = gate.reserve(&p[0], 400).unwrap();
        assert_eq!(gate.reserve(&p[0], 200).unwrap_err(), Refusal::Inflight);
        let other = gate.reserve(&p[1], 400).unwrap();
        drop(held);
        let _again = gate.reserve(&p[0], 200).unwrap();
        drop(other);
        // A penalty lasts its period.
        assert!(gate.penalise(&p[1], now));
        assert!(!gate.penalise(&p[1], now));
        assert_eq!(gate.penalised_count(now), 1);
        assert_eq!(
            gate.check(&p[1], 1, now + Duration::from_secs(1)),
            Err(Refusal::Penalised)
        );
        assert_eq!(gate.check(&p[1], 1, now + Duration::from_secs(61)), Ok(()));
    }
}
