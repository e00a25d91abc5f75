use super::*;
use crate::error::{BlockError, BundleError};
use crate::origin::Certified;
use crate::store::{ChainRead, MemStore};
use crate::types::{Certificate, Dropped};
use ed25519_consensus::SigningKey;
use malachitebft_core_types::Validity;
use std::sync::Arc;

struct Net {
    keys: Vec<SigningKey>,
    vs: ValidatorSet,
    domain: ChainDomain,
    clock: Arc<ManualClock>,
}

impl Net {
    fn new(n: u8) -> Self {
        let keys: Vec<SigningKey> = (0..n).map(|i| SigningKey::from([i + 1; 32])).collect();
        let vs = ValidatorSet::new(
            keys.iter()
                .map(|k| crate::validators::Validator::new(k.verification_key(), 1))
                .collect(),
        )
        .unwrap();
        Net {
            keys,
            vs,
            domain: ChainDomain::new("test"),
            clock: Arc::new(ManualClock::new(1_000_000)),
        }
    }

    fn other_than(&self, not: &[Address]) -> Address {
        self.vs
            .validators()
            .iter()
            .map(|v| v.address)
            .find(|a| !not.contains(a))
            .unwrap()
    }

    fn host(&self, who: Address, store: MemStore) -> Host<MemStore, Arc<ManualClock>> {
        self.host_with(who, store, HostLimits::default())
    }

    fn host_with(
        &self,
        who: Address,
        store: MemStore,
        limits: HostLimits,
    ) -> Host<MemStore, Arc<ManualClock>> {
        self.host_on(who, store, limits, ChainSpec::for_tests(7, 4))
    }

    fn host_on(
        &self,
        who: Address,
        store: MemStore,
        limits: HostLimits,
        spec: ChainSpec,
    ) -> Host<MemStore, Arc<ManualClock>> {
        let key = self
            .keys
            .iter()
            .find(|k| Address::from_public_key_bytes(k.verification_key().as_bytes()) == who)
            .unwrap()
            .clone();
        Host::new(
            self.domain,
            Hash::digest(&[b"genesis"]),
            Some(ConsensusSigner::new(key, self.domain)),
            self.vs.clone(),
            spec,
            limits,
            store,
            self.clock.clone(),
        )
        .unwrap()
    }
}

fn bundle(n: u8) -> Bundle {
    crate::bundle::testing::bundle(n, 0, &[1, 2], n)
}

fn deliver(
    to: &mut Host<MemStore, Arc<ManualClock>>,
    parts: &[ProposalPart],
    publisher: &[u8],
) -> Option<ProposedValue<BatonContext>> {
    let mut out = None;
    for (i, p) in parts.iter().enumerate() {
        out = to
            .on_part(publisher, b"s", i as u64, Some(p.clone()))
            .unwrap();
        assert!(out.is_none(), "complete before Fin");
    }
    to.on_part(publisher, b"s", parts.len() as u64, None)
        .unwrap()
        .or(out)
}

fn cert(height: u64, round: u32, hash: Hash) -> Certificate {
    Certificate {
        height,
        round,
        block_hash: hash,
        signatures: vec![],
    }
}

#[test]
fn pending_bundles_are_announced_again_after_a_while() {
    let net = Net::new(4);
    let me = net.vs.proposer(1, 0).address;
    let mut h = net.host(me, MemStore::default());
    for n in 0..3 {
        h.admit(bundle(n).hash(), bundle(n)).unwrap();
    }
    assert!(h.reannounce(2_000, 10).is_empty(), "just admitted");
    net.clock.advance(1_999);
    assert!(h.reannounce(2_000, 10).is_empty());
    net.clock.advance(1);
    let again = h.reannounce(2_000, 2);
    assert_eq!(
        again,
        vec![bundle(0), bundle(1)],
        "oldest first, at most max"
    );
    assert_eq!(h.reannounce(2_000, 10), vec![bundle(2)]);
    assert!(h.reannounce(2_000, 10).is_empty(), "each once per period");
    // The next time after twice as long.
    net.clock.advance(2_000);
    assert!(h.reannounce(2_000, 10).is_empty());
    net.clock.advance(2_000);
    assert_eq!(h.reannounce(2_000, 10).len(), 3);
    // Once included, never again.
    h.started_round(1, 0).unwrap();
    let (value, _) = h.propose(1, 0).unwrap();
    h.decided(cert(1, 0, value.0)).unwrap();
    net.clock.advance(5_000);
    assert!(h.reannounce(2_000, 10).is_empty());
}

#[test]
fn propose_receive_decide_and_restart() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let store_p = MemStore::default();
    let store_o = MemStore::default();
    let mut p = net.host(proposer, store_p.clone());
    let mut o = net.host(other, store_o.clone());

    for n in 0..3 {
        store_p.add_pending(bundle(n));
        p.admit(bundle(n).hash(), bundle(n)).unwrap();
    }
    // Dissemination: the other validator holds the bundles before the (compact) proposal arrives.
    let gossip: Vec<(Hash, Bundle)> = (0..3).map(|n| (bundle(n).hash(), bundle(n))).collect();
    assert!(o.on_gossip(gossip).unwrap().is_none());
    assert_eq!(o.mempool().len(), 3);
    assert_eq!(p.started_round(1, 0).unwrap().len(), 0);
    assert_eq!(o.started_round(1, 0).unwrap().len(), 0);
    net.clock.advance(10);
    let (value, parts) = p.propose(1, 0).unwrap();
    let pv = deliver(&mut o, &parts, b"peer-p").expect("complete proposal");
    assert_eq!(pv.value, value);
    assert_eq!(pv.validity, Validity::Valid);

    // Both decide; the proposer's mempool empties; bundle inclusion is recorded.
    let b1 = p.decided(cert(1, 0, value.0)).unwrap();
    let b2 = o.decided(cert(1, 0, value.0)).unwrap();
    assert_eq!(b1, b2);
    assert_eq!(b1.bundles.len(), 3);
    assert!(p.mempool().is_empty());
    assert_eq!(
        store_o.inclusion(&bundle(2).hash()).unwrap().unwrap().index,
        2
    );
    assert!(store_p.pending_bundles().unwrap().is_empty());

    // A restarted host resumes at the next height from its store.
    let again = net.host(other, store_o.clone());
    assert_eq!(again.next_height(), 2);
    assert_eq!(again.tip().unwrap().hash(), value.0);
}

/// Admission and validation read a sender's nonce from the store once (the nonce table keeps it, and decisions
/// move it), and a bundle's inclusion only when its nonce is already taken: a new bundle costs no point read.
#[test]
fn a_senders_nonce_is_read_once_and_inclusion_only_for_a_taken_nonce() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let store_o = MemStore::default();
    let mut p = net.host(proposer, MemStore::default());
    let mut o = net.host(other, store_o.clone());
    let signed = |nonce: u64| crate::bundle::testing::bundle(1, nonce, &[1, 2], nonce as u8);
    let sender = signed(0).sender;
    let bundles: Vec<(Hash, Bundle)> = (0..5).map(|n| (signed(n).hash(), signed(n))).collect();
    for (h, b) in &bundles {
        p.admit(*h, b.clone()).unwrap();
    }
    let reads = store_o.point_reads();
    assert!(o.on_gossip(bundles.clone()).unwrap().is_none());
    assert_eq!(o.mempool().len(), 5);
    assert_eq!(
        store_o.point_reads() - reads,
        1,
        "one nonce read for five bundles of one sender"
    );

    net.clock.advance(10);
    let (value, parts) = p.propose(1, 0).unwrap();
    let pv = deliver(&mut o, &parts, b"peer-p").expect("complete proposal");
    assert_eq!(pv.validity, Validity::Valid);
    assert_eq!(
        store_o.point_reads() - reads,
        1,
        "validation read nothing more"
    );
    o.decided(cert(1, 0, value.0)).unwrap();
    p.decided(cert(1, 0, value.0)).unwrap();

    // The table moved with the decision: the sender's next nonce is 5 without a read.
    let reads = store_o.point_reads();
    assert_eq!(o.nonces(&sender).unwrap(), (5, 5));
    assert_eq!(store_o.point_reads(), reads);
    // A bundle sent again after its inclusion takes one inclusion read and is reported as included.
    let (h, b) = bundles[2].clone();
    assert_eq!(
        o.admit(h, b).unwrap(),
        crate::mempool::Admission::AlreadyIncluded
    );
    assert_eq!(store_o.point_reads() - reads, 1);
    // A restarted host starts with an empty table and reads the store again.
    let mut again = net.host(other, store_o.clone());
    let reads = store_o.point_reads();
    let next = signed(5);
    again.admit(next.hash(), next).unwrap();
    assert_eq!(store_o.point_reads() - reads, 1);
    assert_eq!(again.nonces(&sender).unwrap(), (5, 6));
}

/// Heights follow load: with nothing to include the proposer's deadline is `max_idle_ms` after the parent,
/// a ready bundle brings it to `block_time_ms` after the parent, a bundle waiting on a nonce gap does not, and
/// later rounds never wait idle.
#[test]
fn an_idle_proposer_waits_until_something_is_ready() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let mut p = net.host(proposer, MemStore::default());
    p.started_round(1, 0).unwrap();
    net.clock.advance(10);
    let (value, _) = p.propose(1, 0).unwrap();
    let tip = p.decided(cert(1, 0, value.0)).unwrap().header.timestamp_ms;
    let params = p.params().clone();
    assert!(params.max_idle_ms > params.block_time_ms);
    assert!(!p.has_work());
    assert_eq!(p.proposal_deadline_ms(0), tip + params.max_idle_ms);
    assert_eq!(p.proposal_deadline_ms(1), tip + params.block_time_ms);

    // A sender's nonce 1 cannot go in before its nonce 0: still idle.
    let key = crate::bundle::testing::key(42);
    let gap = crate::bundle::testing::sign(
        &key,
        crate::bundle::UnsignedBundle {
            network_id: 7,
            sender: key.address(),
            nonce: 1,
            expiry_height: 1_000,
            entries: vec![crate::bundle::BundleEntry {
                rollup_id: 1,
                payload: vec![1],
            }],
        },
    );
    p.admit(gap.hash(), gap).unwrap();
    assert!(!p.has_work());
    assert_eq!(p.proposal_deadline_ms(0), tip + params.max_idle_ms);

    p.admit(bundle(1).hash(), bundle(1)).unwrap();
    assert!(p.has_work());
    assert_eq!(p.proposal_deadline_ms(0), tip + params.block_time_ms);
}

/// Overload is refused at the edge: once the oldest ready bundle has waited longer than `admit_max_wait_ms`,
/// client submissions get `Backlogged` while peers' bundles are still taken; a decision that drains the
/// backlog lets submissions in again.
#[test]
fn submissions_are_refused_while_the_chain_is_behind() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let mut p = net.host(proposer, MemStore::default());
    let limit = p.limits.admit_max_wait_ms;
    assert!(limit > 0);
    p.admit_submission(bundle(1).hash(), bundle(1)).unwrap();
    net.clock.advance(limit / 2);
    p.admit_submission(bundle(2).hash(), bundle(2)).unwrap();
    net.clock.advance(limit);
    let err = p.admit_submission(bundle(3).hash(), bundle(3)).unwrap_err();
    assert!(
        matches!(err, ConsensusError::Backlogged { waited_ms, .. } if waited_ms > limit),
        "{err}"
    );
    // The same bundle from a peer is taken.
    assert!(p
        .on_gossip(vec![(bundle(3).hash(), bundle(3))])
        .unwrap()
        .is_none());
    assert!(p.mempool().contains(&bundle(3).hash()));
    // A block takes the backlog: submissions are welcome again.
    p.started_round(1, 0).unwrap();
    let (value, _) = p.propose(1, 0).unwrap();
    p.decided(cert(1, 0, value.0)).unwrap();
    assert!(p.mempool().is_empty());
    p.admit_submission(bundle(4).hash(), bundle(4)).unwrap();
}

/// Once the chain has been behind, a client's bundle that would wait behind its sender's nonce gap is refused for
/// a while, naming the missing nonce (most likely refused for the backlog a moment before: taken now, this one
/// would wait acknowledged until that one came back); the missing nonce is taken, then the refused one; peers'
/// bundles are taken as before; and once the chain has kept up for `RECENTLY_BEHIND_MS`, a gap waits as before.
#[test]
fn a_bundle_behind_its_senders_gap_is_refused_while_the_chain_catches_up() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let mut p = net.host(proposer, MemStore::default());
    let limit = p.limits.admit_max_wait_ms;
    let nth = |key: u8, nonce: u64| crate::bundle::testing::bundle(key, nonce, &[1], key);
    // Keeping up: a gap waits.
    p.admit_submission(nth(40, 1).hash(), nth(40, 1)).unwrap();
    assert_eq!(p.mempool().waiting().0, 1);
    // Behind: the oldest ready bundle waited past the bound; a block then takes the backlog.
    p.admit_submission(bundle(1).hash(), bundle(1)).unwrap();
    net.clock.advance(limit + 1);
    p.note_backlog();
    p.started_round(1, 0).unwrap();
    let (value, _) = p.propose(1, 0).unwrap();
    p.decided(cert(1, 0, value.0)).unwrap();
    let err = p
        .admit_submission(nth(42, 1).hash(), nth(42, 1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConsensusError::BehindGap {
                nonce: 1,
                missing: 0
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("send nonce 0 again first"),
        "{err}"
    );
    p.admit_submission(nth(42, 0).hash(), nth(42, 0)).unwrap();
    p.admit_submission(nth(42, 1).hash(), nth(42, 1)).unwrap();
    assert!(p.on_gossip(vec![(nth(43, 1).hash(), nth(43, 1))]).is_ok());
    assert!(
        p.mempool().contains(&nth(43, 1).hash()),
        "a peer's bundle is taken"
    );
    p.started_round(2, 0).unwrap();
    let (value, _) = p.propose(2, 0).unwrap();
    p.decided(cert(2, 0, value.0)).unwrap();
    net.clock
        .advance(crate::host::admission::RECENTLY_BEHIND_MS + 1);
    p.admit_submission(nth(44, 1).hash(), nth(44, 1)).unwrap();
}

/// While the chain is behind, a bundle that fills its sender's nonce gap is still let in: refusing it would keep
/// the acknowledged bundles waiting behind it out of every block. Any other new bundle is refused.
#[test]
fn a_bundle_that_fills_a_nonce_gap_is_let_in_while_the_chain_is_behind() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let mut p = net.host(proposer, MemStore::default());
    let limit = p.limits.admit_max_wait_ms;
    let of = |n: u8, nonce: u64| crate::bundle::testing::bundle(n, nonce, &[1, 2], n);
    p.admit_submission(of(1, 0).hash(), of(1, 0)).unwrap();
    // Sender 9's nonce 1 waits behind its missing nonce 0.
    p.admit_submission(of(9, 1).hash(), of(9, 1)).unwrap();
    net.clock.advance(limit + 1);
    assert!(matches!(
        p.admit_submission(of(2, 0).hash(), of(2, 0)),
        Err(ConsensusError::Backlogged { .. })
    ));
    assert!(
        matches!(
            p.admit_submission(of(9, 2).hash(), of(9, 2)),
            Err(ConsensusError::Backlogged { .. })
        ),
        "a bundle behind the gap is not a filler"
    );
    assert_eq!(
        p.admit_submission(of(9, 0).hash(), of(9, 0)).unwrap(),
        crate::mempool::Admission::Added
    );
    // Both of sender 9's bundles are includable now.
    p.started_round(1, 0).unwrap();
    let (value, _) = p.propose(1, 0).unwrap();
    let block = p.decided(cert(1, 0, value.0)).unwrap();
    assert!(block.bundles.contains(&of(9, 0)) && block.bundles.contains(&of(9, 1)));
}

/// The proposer of round 0 at height 1 is down; round 1's proposer's block is decided. From height 2 the
/// rotation skips the dead validator, every node agrees (the bench is in the header), a restarted host reads
/// it back from its store, and a proposal from the benched validator for its old slot is dropped.
#[test]
fn a_validator_that_misses_its_turn_is_benched_on_every_node() {
    let net = Net::new(4);
    let dead = net.vs.proposer(1, 0).address;
    let live = net.vs.proposer(1, 1).address;
    let other = net.other_than(&[dead, live]);
    let store_o = MemStore::default();
    let mut p = net.host(live, MemStore::default());
    let mut o = net.host(other, store_o.clone());
    p.started_round(1, 1).unwrap();
    o.started_round(1, 1).unwrap();
    net.clock.advance(10);
    let (value, parts) = p.propose(1, 1).unwrap();
    let pv = deliver(&mut o, &parts, b"peer-p").expect("complete proposal");
    assert_eq!(pv.validity, Validity::Valid);
    p.decided(cert(1, 1, value.0)).unwrap();
    let block = o.decided(cert(1, 1, value.0)).unwrap();
    assert_eq!(block.header.round, 1);
    assert_eq!(block.header.benched_next(), vec![dead]);
    assert_eq!(
        block.header.bench.entries()[0].until_ms,
        block.header.timestamp_ms + o.params().bench_ms
    );

    // The next height, at any of its rounds' proposer slots: nobody expects the dead validator to propose the
    // first three rounds (the rotation is the parent's bench at the parent's timestamp, whatever the height).
    for h in 2..66 {
        for r in 0..3 {
            assert_ne!(
                o.block_context(h, 0).validators.proposer(h, r).address,
                dead
            );
        }
    }
    assert_eq!(
        o.height_validators().hash(),
        net.vs.hash(),
        "same set, same certificates"
    );
    let again = net.host(other, store_o.clone());
    assert_eq!(again.height_validators(), o.height_validators());

    // The dead validator comes back and proposes for the slot the plain rotation would give it (among the
    // first three rounds, where the bench applies): dropped.
    // (It shares the other node's store here, standing in for having synced height 1.)
    let mut d = net.host(dead, store_o.clone());
    if let Some(slot) = (0..3u32).find(|r| net.vs.proposer(2, *r).address == dead) {
        d.started_round(2, slot).unwrap();
        o.started_round(2, slot).unwrap();
        net.clock.advance(10);
        let (_, parts) = d.propose(2, slot).unwrap();
        assert!(deliver(&mut o, &parts, b"peer-d").is_none());
    }

    // The real proposer of round 0 builds a block whose header carries the same bench forward.
    let q = o.height_validators().proposer(2, 0).address;
    assert_ne!(q, dead);
    let mut qh = net.host(q, store_o.clone());
    qh.started_round(2, 0).unwrap();
    o.started_round(2, 0).unwrap();
    net.clock.advance(10);
    let (_, parts) = qh.propose(2, 0).unwrap();
    let pv = deliver(&mut o, &parts, b"peer-q").expect("complete proposal");
    assert_eq!(pv.validity, Validity::Valid);
}

/// Height 1 decided in round 1 (its round-0 proposer benched), height 2 proposed once that bench has run out.
/// The certificate of height 1 holds the benched validator's precommit when `it_voted`. Returns the benched
/// validator and height 2's header, after another validator judged the proposal valid.
fn bench_running_out(it_voted: bool) -> (Address, BlockHeader) {
    let net = Net::new(4);
    let dead = net.vs.proposer(1, 0).address;
    let live = net.vs.proposer(1, 1).address;
    let mut hosts: Vec<(Address, Host<MemStore, Arc<ManualClock>>)> = net
        .vs
        .validators()
        .iter()
        .map(|v| v.address)
        .filter(|a| *a != dead)
        .map(|a| (a, net.host(a, MemStore::default())))
        .collect();
    for (_, h) in &mut hosts {
        h.started_round(1, 1).unwrap();
    }
    net.clock.advance(10);
    let at = hosts.iter().position(|(a, _)| *a == live).unwrap();
    let (value, parts) = hosts[at].1.propose(1, 1).unwrap();
    let mut signers: Vec<Address> = hosts.iter().map(|(a, _)| *a).collect();
    if it_voted {
        signers.push(dead);
    }
    let cert1 = Certificate {
        signatures: signers.iter().map(|a| (*a, [0; 64])).collect(),
        ..cert(1, 1, value.0)
    };
    for (a, h) in &mut hosts {
        if *a != live {
            assert!(deliver(h, &parts, b"peer-live").is_some());
        }
        let b = h.decided(cert1.clone()).unwrap();
        assert_eq!(b.header.benched_next(), vec![dead]);
    }
    // The bench (5 s in the tests' genesis) runs out at the next block.
    net.clock.advance(hosts[0].1.params().bench_ms + 100);
    let q = hosts[0].1.height_validators().proposer(2, 0).address;
    let qi = hosts.iter().position(|(a, _)| *a == q).unwrap();
    let judge = (qi + 1) % hosts.len();
    for (_, h) in &mut hosts {
        h.started_round(2, 0).unwrap();
    }
    let (_, parts) = hosts[qi].1.propose(2, 0).unwrap();
    let pv = deliver(&mut hosts[judge].1, &parts, b"peer-q").expect("complete proposal");
    assert_eq!(pv.validity, Validity::Valid);
    let ProposalPart::Init { header, .. } = &parts[0] else {
        panic!("a proposal starts with Init")
    };
    (dead, (**header).clone())
}

#[test]
fn a_benched_validator_not_seen_voting_is_kept_benched_and_one_seen_voting_comes_back() {
    // Down (no precommit in the certificates): its bench is renewed with no new strike, so no height waits a
    // propose timeout for it; the other validators accept the renewal.
    let (dead, h) = bench_running_out(false);
    assert_eq!(h.benched_next(), vec![dead]);
    assert_eq!(h.bench.entries()[0].strikes, 1);
    assert_eq!(h.bench.entries()[0].until_ms, h.timestamp_ms + 5_000);
    // Voting: back in the rotation as soon as its bench runs out, and the others accept that too.
    let (dead, h) = bench_running_out(true);
    assert!(h.benched_next().is_empty());
    assert_eq!(h.bench.entries()[0].validator, dead);
    assert_eq!(h.bench.entries()[0].strikes, 1);
}

#[test]
fn tampered_or_foreign_streams_are_refused() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let others: Vec<Address> = net
        .vs
        .validators()
        .iter()
        .map(|v| v.address)
        .filter(|a| *a != proposer)
        .collect();
    // Whole bundles in the proposal body (no dissemination needed) so that a payload byte can be flipped.
    let full = HostLimits {
        compact_proposals: false,
        ..HostLimits::default()
    };
    let mut p = net.host_with(proposer, MemStore::default(), full.clone());
    let mut o = net.host(others[0], MemStore::default());
    let mut impostor = net.host_with(others[1], MemStore::default(), full);
    o.started_round(1, 0).unwrap();
    p.admit(bundle(1).hash(), bundle(1)).unwrap();
    let (_, parts) = p.propose(1, 0).unwrap();

    // A payload byte flipped in transit: the proposer's signature no longer matches the block.
    let mut bad = parts.clone();
    if let ProposalPart::Data { bundles } = &mut bad[1] {
        bundles[0].entries[0].payload[0] ^= 1;
    }
    assert!(deliver(&mut o, &bad, b"x").is_none());

    // Parts streamed by a validator that is not the round's proposer are ignored.
    impostor.admit(bundle(9).hash(), bundle(9)).unwrap();
    let (_, fake) = impostor.propose(1, 0).unwrap();
    assert!(deliver(&mut o, &fake, b"y").is_none());

    // The genuine stream still goes through.
    assert_eq!(
        deliver(&mut o, &parts, b"z").unwrap().validity,
        Validity::Valid
    );
}

#[test]
fn invalid_block_is_judged_invalid_not_dropped() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let mut o = net.host(other, MemStore::default());
    o.started_round(1, 0).unwrap();
    // The proposer signs a block whose timestamp is far in the future: well-formed, correctly signed, invalid.
    let future = Net {
        clock: Arc::new(ManualClock::new(1_000_000 + 60_000)),
        ..Net::new(4)
    };
    let mut p_future = future.host(proposer, MemStore::default());
    let (_, parts) = p_future.propose(1, 0).unwrap();
    let pv = deliver(&mut o, &parts, b"p").unwrap();
    assert_eq!(pv.validity, Validity::Invalid);
}

#[test]
fn a_proposer_including_a_forged_or_split_bundle_is_voted_down() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let full = HostLimits {
        compact_proposals: false,
        ..HostLimits::default()
    };
    // A forged bundle (content altered after signing) and half of a split bundle, slipped into a Byzantine
    // proposer's mempool past the checks an honest ingest would apply.
    let mut forged = bundle(1);
    forged.entries[0].payload[0] ^= 1;
    let mut half = bundle(2);
    half.entries.truncate(1);
    for bad in [forged, half] {
        let mut p = net.host_with(proposer, MemStore::default(), full.clone());
        let mut o = net.host(other, MemStore::default());
        o.started_round(1, 0).unwrap();
        p.admit(bad.hash(), bad).unwrap();
        let (_, parts) = p.propose(1, 0).unwrap();
        let pv = deliver(&mut o, &parts, b"p").expect("well-formed and signed by the proposer");
        assert_eq!(pv.validity, Validity::Invalid);
    }
}

/// The attack: rollup 1's operator allows only its own sequencer (sender 1) to post for it; an outsider (sender 2)
/// submits a bundle with an entry for rollup 1. Validators refuse it at admission, and a proposer that includes it
/// anyway (its node ignoring the rule) is voted down.
#[test]
fn an_outsiders_bundle_for_a_restricted_rollup_is_refused_and_a_block_carrying_it_is_voted_down() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let restricted =
        || ChainSpec::for_tests(7, 4).restrict(1, vec![crate::bundle::testing::key(1).address()]);
    let full = HostLimits {
        compact_proposals: false,
        ..HostLimits::default()
    };
    let outsider = bundle(2);
    let mut o = net.host_on(other, MemStore::default(), full.clone(), restricted());
    let refused = o.admit(outsider.hash(), outsider.clone());
    assert!(
        matches!(
            refused,
            Err(ConsensusError::InvalidBundle(
                BundleError::UnauthorizedSender { rollup_id: 1, .. }
            ))
        ),
        "{refused:?}"
    );
    // The rollup's own sender is admitted.
    let insider = bundle(1);
    o.admit(insider.hash(), insider).unwrap();

    let mut p = net.host_with(proposer, MemStore::default(), full.clone());
    let mut o = net.host_on(other, MemStore::default(), full, restricted());
    o.started_round(1, 0).unwrap();
    p.admit(outsider.hash(), outsider).unwrap();
    let (_, parts) = p.propose(1, 0).unwrap();
    let pv = deliver(&mut o, &parts, b"p").expect("well-formed and signed by the proposer");
    assert_eq!(pv.validity, Validity::Invalid);
}

#[test]
fn early_proposals_wait_for_their_height() {
    let net = Net::new(4);
    let p2 = net.vs.proposer(2, 0).address;
    let p1 = net.vs.proposer(1, 0).address;
    let other = net
        .vs
        .validators()
        .iter()
        .find(|v| v.address != p1 && v.address != p2)
        .unwrap()
        .address;
    let store = MemStore::default();
    let mut o = net.host(other, store.clone());
    let mut h1 = net.host(p1, MemStore::default());
    let mut h2 = net.host(p2, MemStore::default());
    o.started_round(1, 0).unwrap();
    let (v1, parts1) = h1.propose(1, 0).unwrap();
    // Height 2's proposer decided height 1 first and proposes height 2 before `o` finished height 1.
    deliver(&mut h2, &parts1, b"a");
    h2.decided(cert(1, 0, v1.0)).unwrap();
    net.clock.advance(100);
    let (v2, parts2) = h2.propose(2, 0).unwrap();
    assert!(
        deliver(&mut o, &parts2, b"b").is_none(),
        "height 2 is in the future for o"
    );
    deliver(&mut o, &parts1, b"a").unwrap();
    o.decided(cert(1, 0, v1.0)).unwrap();
    let values = o.started_round(2, 0).unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].value, v2);
    assert_eq!(values[0].validity, Validity::Valid);
}

#[test]
fn missing_bundles_are_asked_from_the_proposer_and_the_proposal_completes() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let mut p = net.host(proposer, MemStore::default());
    let mut o = net.host(other, MemStore::default());
    o.started_round(1, 0).unwrap();
    for n in 0..3 {
        p.admit(bundle(n).hash(), bundle(n)).unwrap();
    }
    // `o` only saw bundle 0 disseminated.
    o.on_gossip(vec![(bundle(0).hash(), bundle(0))]).unwrap();
    let (value, parts) = p.propose(1, 0).unwrap();
    assert!(parts.iter().any(|x| matches!(x, ProposalPart::Refs { .. })));
    assert!(!parts.iter().any(|x| matches!(x, ProposalPart::Data { .. })));
    assert!(
        deliver(&mut o, &parts, b"p").is_none(),
        "incomplete: parked"
    );
    let wants = o.take_outbox();
    let [ProposalPart::Want {
        proposer: to,
        height,
        round,
        hashes,
    }] = wants.as_slice()
    else {
        panic!("expected one want, got {wants:?}");
    };
    assert_eq!((*to, *height, *round), (proposer, 1, 0));
    assert_eq!(hashes.len(), 2);
    // Only the proposer answers.
    o.on_want(b"o", *to, 1, 0, hashes).unwrap();
    assert!(o.take_outbox().is_empty());
    p.on_want(b"o", *to, 1, 0, hashes).unwrap();
    let answer = p.take_outbox();
    let [ProposalPart::Bundles { bundles }] = answer.as_slice() else {
        panic!("expected bundles, got {answer:?}");
    };
    assert_eq!(bundles.len(), 2);
    let got = o
        .on_gossip(bundles.iter().map(|b| (b.hash(), b.clone())).collect())
        .unwrap()
        .expect("the parked proposal completes");
    assert_eq!(got.value, value);
    assert_eq!(got.validity, Validity::Valid);
}

#[test]
fn asks_are_answered_once_per_peer_and_round_and_only_about_the_own_proposal() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let mut p = net.host(proposer, MemStore::default());
    p.started_round(1, 0).unwrap();
    for n in 0..3 {
        p.admit(bundle(n).hash(), bundle(n)).unwrap();
    }
    let (_, _) = p.propose(1, 0).unwrap();
    // Held in the mempool but not in the proposal (it came after): never sent in answer to an ask.
    p.admit(bundle(3).hash(), bundle(3)).unwrap();
    let asked: Vec<Hash> = (0..4).map(|n| bundle(n).hash()).collect();
    let answered = |p: &mut Host<MemStore, Arc<ManualClock>>| -> Vec<Hash> {
        p.take_outbox()
            .into_iter()
            .flat_map(|part| match part {
                ProposalPart::Bundles { bundles } => {
                    bundles.iter().map(Bundle::hash).collect::<Vec<_>>()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    };
    // A round or a height this node did not propose at: nothing.
    p.on_want(b"a", proposer, 1, 1, &asked).unwrap();
    p.on_want(b"a", proposer, 2, 0, &asked).unwrap();
    assert!(answered(&mut p).is_empty());
    // The proposal's own bundles only, once per peer and round.
    p.on_want(b"a", proposer, 1, 0, &asked).unwrap();
    assert_eq!(answered(&mut p), asked[..3].to_vec());
    p.on_want(b"a", proposer, 1, 0, &asked).unwrap();
    assert!(
        answered(&mut p).is_empty(),
        "a second ask of one peer and round"
    );
    p.on_want(b"b", proposer, 1, 0, &asked[..1]).unwrap();
    assert_eq!(answered(&mut p), asked[..1].to_vec());
}

#[test]
fn a_publisher_flooding_streams_cannot_evict_another_publishers_stream() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let mut p = net.host(proposer, MemStore::default());
    let mut o = net.host(other, MemStore::default());
    o.started_round(1, 0).unwrap();
    for n in 0..3 {
        p.admit(bundle(n).hash(), bundle(n)).unwrap();
        o.admit(bundle(n).hash(), bundle(n)).unwrap();
    }
    let (value, parts) = p.propose(1, 0).unwrap();
    // The proposer's stream is half delivered ...
    let (first, rest) = parts.split_at(1);
    for (seq, part) in first.iter().enumerate() {
        assert!(o
            .on_part(b"p", b"s", seq as u64, Some(part.clone()))
            .unwrap()
            .is_none());
    }
    // ... when another peer opens a thousand streams.
    let Some(ProposalPart::Init { header, .. }) = parts.first() else {
        panic!("a proposal starts with Init");
    };
    for id in 0u32..1_000 {
        let junk = ProposalPart::Init {
            height: crate::ids::Height(1),
            round: malachitebft_core_types::Round::new(0),
            pol_round: malachitebft_core_types::Round::Nil,
            proposer,
            header: header.clone(),
        };
        o.on_part(b"flood", &id.to_be_bytes(), 0, Some(junk))
            .unwrap();
    }
    let mut got = None;
    for (i, part) in rest.iter().enumerate() {
        got = got.or(o
            .on_part(b"p", b"s", (i + 1) as u64, Some(part.clone()))
            .unwrap());
    }
    let got = got
        .or(o.on_part(b"p", b"s", parts.len() as u64, None).unwrap())
        .expect("the proposer's stream completes");
    assert_eq!((got.value, got.validity), (value, Validity::Valid));
}

#[test]
fn an_overdue_forced_entry_the_mempool_never_saw_is_proposed_and_skipping_it_is_voted_down() {
    use crate::origin::{ForcedBundle, MemL1};
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let l1 = Arc::new(MemL1::new(16));
    let origins: Vec<_> = (0..3).map(|_| l1.mine()).collect();
    let forced = crate::bundle::testing::bundle(9, 0, &[2], 9);
    l1.force(ForcedBundle {
        index: 0,
        deadline: 2,
        hash: forced.hash(),
        bundle: forced.clone(),
    });
    let (store_p, store_o) = (MemStore::default(), MemStore::default());
    let mut p = net.host(proposer, store_p.clone());
    let mut o = net.host(other, store_o.clone());
    p.set_l1(l1.clone());
    o.set_l1(l1.clone());
    p.admit(bundle(0).hash(), bundle(0)).unwrap();
    p.started_round(1, 0).unwrap();
    o.started_round(1, 0).unwrap();

    // A proposer ignoring the queue (its L1 view has the blocks but not the entry) builds on origin 3 without
    // the entry: the other validator judges it invalid.
    let blind = Arc::new(MemL1::new(16));
    for _ in 0..3 {
        blind.mine();
    }
    let mut cheat = net.host(proposer, MemStore::default());
    cheat.set_l1(blind);
    cheat.admit(bundle(0).hash(), bundle(0)).unwrap();
    cheat.started_round(1, 0).unwrap();
    let (_, parts) = cheat.propose(1, 0).unwrap();
    o.on_gossip(vec![(bundle(0).hash(), bundle(0))]).unwrap();
    let pv = deliver(&mut o, &parts, b"cheat").expect("complete proposal");
    assert_eq!(pv.validity, Validity::Invalid);

    // The honest proposer puts the entry first, though its mempool never had it, on the newest origin.
    let (value, parts) = p.propose(1, 0).unwrap();
    let block = store_p.undecided(1).unwrap().remove(0).block;
    assert_eq!(block.header.l1_origin, origins[2]);
    assert_eq!(block.bundles, vec![forced.clone(), bundle(0)]);
    // The other validator lacks the entry too (its mempool never saw it): it asks, the proposer answers.
    if let Some(pv) = deliver(&mut o, &parts, b"p") {
        assert_eq!(pv.validity, Validity::Valid);
    } else {
        let wants = o.take_outbox();
        let [ProposalPart::Want { hashes, .. }] = wants.as_slice() else {
            panic!("expected one want, got {wants:?}");
        };
        assert_eq!(hashes, &vec![forced.hash()]);
        p.on_want(b"o", proposer, 1, 0, hashes).unwrap();
        let answer = p.take_outbox();
        let [ProposalPart::Bundles { bundles }] = answer.as_slice() else {
            panic!("expected bundles, got {answer:?}");
        };
        let pv = o
            .on_gossip(bundles.iter().map(|b| (b.hash(), b.clone())).collect())
            .unwrap()
            .expect("the parked proposal completes");
        assert_eq!((pv.value, pv.validity), (value, Validity::Valid));
    }
    o.decided(cert(1, 0, value.0)).unwrap();
    assert_eq!(
        store_o.inclusion(&forced.hash()).unwrap().map(|i| i.height),
        Some(1)
    );
    // Included: not owed again, and the next block keeps the origin.
    o.started_round(2, 0).unwrap();
    let next = o.block_context(2, 0);
    assert_eq!(next.parent_l1_origin, origins[2]);
}

#[test]
fn an_epochs_last_block_names_the_staked_set_which_then_decides() {
    use crate::epoch::{PositionedEvent, SetRules, StakeEvent};
    use crate::origin::MemL1;
    let net = Net::new(4);
    let newcomer = SigningKey::from([42; 32]);
    let spec = ChainSpec {
        epochs: Some(SetRules {
            epoch_length: 2,
            max_validators: 10,
            min_stake: 10,
            stake_per_power: 10,
            min_validators: 4,
        }),
        ..ChainSpec::for_tests(7, 4)
    };
    // L1 block 1 registers the four genesis keys and a newcomer (10 each: power 1).
    let staked = |keys: &[&SigningKey]| {
        let l1 = Arc::new(MemL1::new(16));
        l1.mine();
        for (i, k) in keys.iter().enumerate() {
            l1.stake(
                1,
                PositionedEvent {
                    tx_index: i as u64,
                    log_index: 0,
                    event: StakeEvent::Registered {
                        key: k.verification_key().to_bytes(),
                        attester: [i as u8; 20],
                        stake: 10,
                    },
                },
            );
        }
        l1
    };
    let mut all: Vec<&SigningKey> = net.keys.iter().collect();
    all.push(&newcomer);
    let l1 = staked(&all);
    let expected = ValidatorSet::new(
        all.iter()
            .map(|k| crate::validators::Validator::new(k.verification_key(), 1))
            .collect(),
    )
    .unwrap();
    let host = |who: Address, store: MemStore, l1: Arc<MemL1>| {
        let key = net
            .keys
            .iter()
            .find(|k| Address::from_public_key_bytes(k.verification_key().as_bytes()) == who)
            .unwrap()
            .clone();
        let mut h = Host::new(
            net.domain,
            Hash::digest(&[b"genesis"]),
            Some(ConsensusSigner::new(key, net.domain)),
            net.vs.clone(),
            spec.clone(),
            HostLimits::default(),
            store,
            net.clock.clone(),
        )
        .unwrap();
        h.set_l1(l1);
        h
    };
    let addrs: Vec<Address> = net.vs.validators().iter().map(|v| v.address).collect();
    let stores: Vec<MemStore> = addrs.iter().map(|_| MemStore::default()).collect();
    let mut hosts: Vec<_> = addrs
        .iter()
        .zip(&stores)
        .map(|(a, s)| host(*a, s.clone(), l1.clone()))
        .collect();
    for height in 1..=2u64 {
        net.clock.advance(1_000);
        let proposer = net.vs.proposer(height, 0).address;
        let pi = addrs.iter().position(|a| *a == proposer).unwrap();
        for h in hosts.iter_mut() {
            h.started_round(height, 0).unwrap();
        }
        if height == 2 {
            // A validator whose L1 view has not reached the origin cannot judge the epoch's last block.
            let behind = Arc::new(MemL1::new(16));
            let oi = (pi + 1) % 4;
            let mut lagging = host(addrs[oi], MemStore::default(), behind);
            for b in 1..2 {
                let blk = stores[oi].block(b).unwrap().unwrap();
                lagging
                    .synced_value(b, 0, blk.header.proposer, &blk.encode())
                    .unwrap();
                lagging.decided(cert(b, 0, blk.hash())).unwrap();
            }
            lagging.started_round(2, 0).unwrap();
            // A proposer that does not see the newcomer's stake names the old set: refused.
            let mut blind = host(
                proposer,
                MemStore::default(),
                staked(&net.keys.iter().collect::<Vec<_>>()),
            );
            let b1 = stores[pi].block(1).unwrap().unwrap();
            blind
                .synced_value(1, 0, b1.header.proposer, &b1.encode())
                .unwrap();
            blind.decided(cert(1, 0, b1.hash())).unwrap();
            blind.started_round(2, 0).unwrap();
            let (_, parts) = blind.propose(2, 0).unwrap();
            let oi2 = (pi + 2) % 4;
            let judge = &mut hosts[oi2];
            let pv = deliver(judge, &parts, b"blind").expect("complete");
            assert_eq!(
                pv.validity,
                Validity::Invalid,
                "a block naming the wrong next set"
            );
            let (_, parts) = hosts[pi].propose(2, 0).unwrap();
            let pv = deliver(&mut lagging, &parts, b"p").expect("complete");
            assert_eq!(
                pv.validity,
                Validity::Invalid,
                "no staking table at the origin here"
            );
        }
        let (value, parts) = hosts[pi].propose(height, 0).unwrap();
        for (i, h) in hosts.iter_mut().enumerate() {
            if i != pi {
                let pv = deliver(h, &parts, b"p").expect("complete");
                assert_eq!(pv.validity, Validity::Valid, "height {height} at host {i}");
            }
            let block = h.decided(cert(height, 0, value.0)).unwrap();
            let header = &block.header;
            assert_eq!(header.validator_set_hash, net.vs.hash());
            if height == 1 {
                assert_eq!(header.next_validator_set_hash, net.vs.hash());
                assert_eq!(block.next_validators, None);
            } else {
                assert_eq!(header.next_validator_set_hash, expected.hash());
                assert_eq!(block.next_validators.as_ref(), Some(&expected));
            }
        }
    }
    // Height 3 (epoch 1) is decided by five validators, the newcomer among them; a restart keeps that.
    for h in &hosts {
        assert_eq!(h.validators(), &expected);
        assert_eq!(h.height_validators().hash(), expected.hash());
    }
    let again = host(addrs[0], stores[0].clone(), l1.clone());
    assert_eq!(again.validators(), &expected);

    // A node syncing without L1 takes the set from the certified block, and refuses a block whose carried set
    // is not the one its header names.
    let mut fresh = Host::new(
        net.domain,
        Hash::digest(&[b"genesis"]),
        None,
        net.vs.clone(),
        spec.clone(),
        HostLimits::default(),
        MemStore::default(),
        net.clock.clone(),
    )
    .unwrap();
    fresh.set_l1(Arc::new(Certified));
    let b1 = stores[0].block(1).unwrap().unwrap();
    fresh
        .synced_value(1, 0, b1.header.proposer, &b1.encode())
        .unwrap();
    fresh.decided(cert(1, 0, b1.hash())).unwrap();
    let b2 = stores[0].block(2).unwrap().unwrap();
    let mut forged = b2.clone();
    forged.next_validators = Some(net.vs.clone());
    let SyncVerdict::Verdict(pv) = fresh
        .synced_value(2, 0, b2.header.proposer, &forged.encode())
        .unwrap()
    else {
        panic!("decodes")
    };
    assert_eq!(pv.validity, Validity::Invalid);
    let SyncVerdict::Verdict(pv) = fresh
        .synced_value(2, 0, b2.header.proposer, &b2.encode())
        .unwrap()
    else {
        panic!("decodes")
    };
    assert_eq!(pv.validity, Validity::Valid);
    fresh.decided(cert(2, 0, b2.hash())).unwrap();
    assert_eq!(fresh.validators(), &expected);
}

#[test]
fn reported_equivocation_goes_into_a_block_and_jails_the_validator() {
    use crate::evidence::{Kind, Signed};
    use malachitebft_core_types::VoteType;
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let culprit_key = net
        .keys
        .iter()
        .find(|k| {
            let a = Address::from_public_key_bytes(k.verification_key().as_bytes());
            a != proposer && a != other
        })
        .unwrap()
        .clone();
    let culprit = Address::from_public_key_bytes(culprit_key.verification_key().as_bytes());
    let signer = ConsensusSigner::new(culprit_key, net.domain);
    let vote = |value: Option<Hash>| Signed {
        value,
        pol_round: 0,
        signature: signer
            .sign(
                &net.domain
                    .vote_bytes(VoteType::Prevote, 1, 0, value, &culprit),
            )
            .0,
    };
    let evidence = Equivocation::new(
        Kind::Prevote,
        culprit,
        1,
        0,
        vote(None),
        vote(Some(Hash::digest(&[b"v"]))),
    );
    let (store_p, store_o) = (MemStore::default(), MemStore::default());
    let mut p = net.host(proposer, store_p.clone());
    let mut o = net.host(other, store_o.clone());
    // Height 1 decided without evidence (it is about height 1, which must be decided first).
    p.started_round(1, 0).unwrap();
    o.started_round(1, 0).unwrap();
    let (value, parts) = p.propose(1, 0).unwrap();
    deliver(&mut o, &parts, b"p").expect("complete");
    p.decided(cert(1, 0, value.0)).unwrap();
    o.decided(cert(1, 0, value.0)).unwrap();

    // A framed copy (signatures moved onto another validator) is not taken in; the real one is.
    let framed = Equivocation {
        validator: other,
        ..evidence.clone()
    };
    assert_eq!(
        p.report_evidence(vec![framed.clone(), evidence.clone()])
            .unwrap(),
        1
    );
    assert_eq!(
        p.report_evidence(vec![evidence.clone()]).unwrap(),
        0,
        "no duplicates"
    );
    let h2 = net.vs.proposer(2, 0).address;
    let mut q = net.host(h2, store_p.clone());
    q.report_evidence(vec![evidence.clone()]).unwrap();
    q.started_round(2, 0).unwrap();
    o.started_round(2, 0).unwrap();
    let (value, parts) = q.propose(2, 0).unwrap();
    let block = store_p.undecided(2).unwrap().remove(0).block;
    assert_eq!(block.evidence, vec![evidence.clone()]);
    assert_eq!(
        block.header.evidence_root,
        crate::evidence::evidence_root(&block.evidence)
    );
    let pv = deliver(&mut o, &parts, b"q").expect("complete");
    assert_eq!(pv.validity, Validity::Valid);
    o.decided(cert(2, 0, value.0)).unwrap();
    assert!(o.jailed().contains(&culprit));
    assert_eq!(store_o.evidence().unwrap(), vec![(2, evidence.clone())]);
    // After a restart the chain still jails it, and the same evidence cannot be included again.
    let again = net.host(other, store_o.clone());
    assert!(again.jailed().contains(&culprit));
    let mut dup = store_o.block(2).unwrap().unwrap();
    dup.header.height = 3;
    assert!(matches!(
        again.check_evidence(&dup),
        Err(BlockError::BadEvidence { index: 0, .. })
    ));
    // A block carrying framed evidence is refused.
    let mut forged = dup.clone();
    forged.evidence = vec![framed];
    assert!(matches!(
        again.check_evidence(&forged),
        Err(BlockError::BadEvidence { index: 0, .. })
    ));
}

#[test]
fn a_tampered_ref_list_is_dropped() {
    let net = Net::new(4);
    let proposer = net.vs.proposer(1, 0).address;
    let other = net.other_than(&[proposer]);
    let mut p = net.host(proposer, MemStore::default());
    let mut o = net.host(other, MemStore::default());
    o.started_round(1, 0).unwrap();
    p.admit(bundle(1).hash(), bundle(1)).unwrap();
    o.on_gossip(vec![
        (bundle(1).hash(), bundle(1)),
        (bundle(2).hash(), bundle(2)),
    ])
    .unwrap();
    let (_, mut parts) = p.propose(1, 0).unwrap();
    for part in parts.iter_mut() {
        if let ProposalPart::Refs { hashes } = part {
            hashes[0] = bundle(2).hash();
        }
    }
    assert!(deliver(&mut o, &parts, b"p").is_none());
    assert!(o.take_outbox().is_empty(), "dropped, not parked");
}

mod random {
    //! Property: whatever mix of good and bad bundles users send, decided blocks hold only good ones.
    use super::*;
    use crate::bundle::testing::{key, sign};
    use crate::bundle::BundleEntry;
    use crate::bundle::UnsignedBundle;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fault {
        None,
        BadSignature,
        WrongNetwork,
        Expired,
        Oversize,
        UnknownRollup,
        ReusedNonce,
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            4 => Just(Fault::None),
            1 => Just(Fault::BadSignature),
            1 => Just(Fault::WrongNetwork),
            1 => Just(Fault::Expired),
            1 => Just(Fault::Oversize),
            1 => Just(Fault::UnknownRollup),
            1 => Just(Fault::ReusedNonce),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn bad_bundles_never_reach_a_block(
            ops in proptest::collection::vec((0u8..3, fault(), 1u64..5, any::<u8>()), 1..40),
            gap in any::<bool>(),
        ) {
            let net = Net::new(4);
            let limits = HostLimits { compact_proposals: false, ..HostLimits::default() };
            let hosts: Vec<Address> = net.vs.validators().iter().map(|v| v.address).collect();
            let stores: Vec<MemStore> = hosts.iter().map(|_| MemStore::default()).collect();
            let mut nodes: Vec<_> = hosts
                .iter()
                .zip(&stores)
                .map(|(a, s)| net.host_with(*a, s.clone(), limits.clone()))
                .collect();
            let mut next: HashMap<u8, u64> = HashMap::new();
            let mut bad: HashSet<Hash> = HashSet::new();
            let mut included: Vec<Bundle> = Vec::new();
            let mut height = 1u64;
            for (i, (sender, f, rollup, tag)) in ops.into_iter().enumerate() {
                let k = key(sender);
                let n = next.entry(sender).or_default();
                let mut u = UnsignedBundle {
                    network_id: 7,
                    sender: k.address(),
                    nonce: *n,
                    expiry_height: height + 100,
                    entries: vec![BundleEntry { rollup_id: rollup, payload: vec![tag, i as u8] }],
                };
                match f {
                    Fault::WrongNetwork => u.network_id = 8,
                    Fault::Expired => u.expiry_height = height - 1,
                    Fault::Oversize => u.entries[0].payload = vec![tag; 70 * 1024],
                    Fault::UnknownRollup => u.entries.push(BundleEntry { rollup_id: 99, payload: vec![1] }),
                    Fault::ReusedNonce if *n > 0 => u.nonce = *n - 1,
                    _ => {}
                }
                let mut b = sign(&k, u);
                if f == Fault::BadSignature {
                    b.entries[0].payload.push(0);
                }
                let hash = b.hash();
                // The node's ingest: stateless checks and the signature, then admission with chain state.
                let entry = i % 4;
                let admitted = crate::block::check_bundle(&b, nodes[entry].spec())
                    .map_err(ConsensusError::from)
                    .and_then(|_| b.verify_signature(&hash).map_err(ConsensusError::from))
                    .and_then(|_| nodes[entry].admit(hash, b.clone()));
                let fresh_reuse = f == Fault::ReusedNonce && *n == 0;
                let faulty = f != Fault::None && !fresh_reuse;
                if faulty {
                    prop_assert!(admitted.is_err(), "{f:?} was admitted");
                    bad.insert(hash);
                } else {
                    prop_assert!(admitted.is_ok(), "good bundle refused: {admitted:?}");
                    *n += 1;
                }
                // Disseminate what was admitted (peers apply their own checks), then sometimes decide a block.
                if admitted.is_ok() {
                    for (j, node) in nodes.iter_mut().enumerate() {
                        if j != entry {
                            node.on_gossip(vec![(hash, b.clone())]).unwrap();
                        }
                    }
                }
                if (gap && i % 3 == 2) || (!gap && i % 5 == 4) {
                    net.clock.advance(60);
                    let proposer = net.vs.proposer(height, 0).address;
                    let pi = hosts.iter().position(|a| *a == proposer).unwrap();
                    for node in nodes.iter_mut() {
                        node.started_round(height, 0).unwrap();
                    }
                    let (value, parts) = nodes[pi].propose(height, 0).unwrap();
                    for (j, node) in nodes.iter_mut().enumerate() {
                        if j != pi {
                            let pv = deliver(node, &parts, b"p").unwrap();
                            prop_assert_eq!(pv.validity, Validity::Valid);
                        }
                    }
                    for node in nodes.iter_mut() {
                        let block = node.decided(cert(height, 0, value.0)).unwrap();
                        if node.address() == Some(proposer) {
                            included.extend(block.bundles);
                        }
                    }
                    height += 1;
                }
            }
            // Nothing bad was included, and each sender's nonces run 0, 1, 2, ... once each.
            let mut seen_nonces: HashMap<crate::bundle::Sender, u64> = HashMap::new();
            for b in &included {
                prop_assert!(!bad.contains(&b.hash()), "a refused bundle reached a block");
                let want = seen_nonces.entry(b.sender).or_default();
                prop_assert_eq!(b.nonce, *want);
                *want += 1;
            }
        }
    }
}

/// An attacker's bundles that cannot be included yet (each throw-away key sends nonces 1.. and never 0) must not
/// hold the mempool: honest, ready bundles still get in, and the attacker's leave after a while with a status.
#[test]
fn bundles_behind_a_nonce_gap_cannot_lock_honest_senders_out() {
    let net = Net::new(4);
    let me = net.vs.proposer(1, 0).address;
    let store = MemStore::default();
    let limits = HostLimits {
        mempool_max_bundles: 300,
        ..HostLimits::default()
    };
    let mut p = net.host_with(me, store.clone(), limits);
    let gap = |k: u8, nonce: u64| {
        let key = crate::bundle::testing::key(k);
        crate::bundle::testing::sign(
            &key,
            crate::bundle::UnsignedBundle {
                network_id: 7,
                sender: key.address(),
                nonce,
                expiry_height: 1_000_000,
                entries: vec![crate::bundle::BundleEntry {
                    rollup_id: 1,
                    payload: vec![k, nonce as u8],
                }],
            },
        )
    };
    let mut held = Vec::new();
    for k in 100..=110u8 {
        for nonce in 1..=64 {
            let b = gap(k, nonce);
            if p.admit_submission(b.hash(), b.clone()).is_ok() {
                held.push(b.hash());
            }
        }
    }
    assert!(!held.is_empty());
    for n in 1..=20 {
        let b = bundle(n);
        let admitted = p.admit_submission(b.hash(), b);
        assert!(
            matches!(admitted, Ok(crate::mempool::Admission::Added)),
            "an honest ready bundle after the attack: {admitted:?}"
        );
    }
    // The honest bundles took the places of the oldest waiting ones, which are reported rejected.
    let evicted: Vec<&Hash> = held.iter().filter(|h| !p.mempool().contains(h)).collect();
    assert_eq!(evicted.len(), 20);
    for h in &evicted {
        assert!(
            matches!(store.dropped(h).unwrap(), Some(Dropped::Rejected { ref reason, .. }) if reason.contains("evicted")),
            "{:?}",
            store.dropped(h)
        );
    }
    // The rest leave once they have waited `waiting_ttl_ms`, at the next decision; the honest ones are included.
    net.clock.advance(p.limits.mempool_waiting_ttl_ms);
    p.started_round(1, 0).unwrap();
    let (value, _) = p.propose(1, 0).unwrap();
    let block = p.decided(cert(1, 0, value.0)).unwrap();
    assert_eq!(block.bundles.len(), 20);
    assert!(p.mempool().is_empty(), "{} left", p.mempool().len());
    for h in &held {
        assert!(
            matches!(store.dropped(h).unwrap(), Some(Dropped::Rejected { .. })),
            "every waiting bundle has a status"
        );
    }

    // Waiting bundles have a quota of their own, a nonce may not run far ahead, and an expiry may not either.
    let quota = HostLimits {
        mempool_max_waiting: 3,
        ..HostLimits::default()
    };
    let mut q = net.host_with(me, MemStore::default(), quota);
    for nonce in 1..=3 {
        let b = gap(120, nonce);
        q.admit_submission(b.hash(), b).unwrap();
    }
    let b = gap(121, 1);
    let err = q.admit_submission(b.hash(), b).unwrap_err();
    assert!(
        matches!(
            err,
            ConsensusError::MempoolFull(crate::error::MempoolFull::Waiting { .. })
        ),
        "{err}"
    );
    let far = gap(122, q.limits.mempool_max_nonce_gap + 1);
    let err = q.admit_submission(far.hash(), far).unwrap_err();
    assert!(
        matches!(
            err,
            ConsensusError::InvalidBundle(BundleError::NonceGap { first_free: 0, .. })
        ),
        "{err}"
    );
    let key = crate::bundle::testing::key(123);
    let forever = crate::bundle::testing::sign(
        &key,
        crate::bundle::UnsignedBundle {
            network_id: 7,
            sender: key.address(),
            nonce: 0,
            expiry_height: u64::MAX,
            entries: vec![crate::bundle::BundleEntry {
                rollup_id: 1,
                payload: vec![1],
            }],
        },
    );
    let err = q.admit_submission(forever.hash(), forever).unwrap_err();
    assert!(
        matches!(
            err,
            ConsensusError::InvalidBundle(BundleError::ExpiryTooFar { .. })
        ),
        "{err}"
    );
}

/// A peer's checked bundles the mempool refuses are kept aside for proposals that may refer to them; large ones
/// must not pile up past a byte bound (count alone allowed 100,000 × 128 KiB, about 12.5 GiB).
#[test]
fn the_side_cache_is_bounded_in_bytes() {
    let net = Net::new(4);
    let me = net.vs.proposer(1, 0).address;
    let limit = 1024 * 1024;
    let limits = HostLimits {
        side_cache_bytes: limit,
        ..HostLimits::default()
    };
    let mut p = net.host_with(me, MemStore::default(), limits);
    // Each sender's nonce 0 is taken by a small pending bundle; a large twin with the same nonce goes aside.
    let mut twins = Vec::new();
    for k in 1..=40u8 {
        p.admit(bundle(k).hash(), bundle(k)).unwrap();
        let key = crate::bundle::testing::key(k);
        let twin = crate::bundle::testing::sign(
            &key,
            crate::bundle::UnsignedBundle {
                network_id: 7,
                sender: key.address(),
                nonce: 0,
                expiry_height: 1_000,
                entries: vec![crate::bundle::BundleEntry {
                    rollup_id: 1,
                    payload: vec![k; 60 * 1024],
                }],
            },
        );
        twins.push((twin.hash(), twin));
    }
    p.on_gossip(twins).unwrap();
    let (count, bytes) = p.side_cache();
    assert!(count > 0, "twins are kept aside");
    assert!(
        bytes <= limit,
        "{count} bundles, {bytes} bytes kept aside (40 × 60 KiB offered)"
    );
}
