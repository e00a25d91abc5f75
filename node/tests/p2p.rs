//! Abuse of the proposal-parts channel by a peer outside the set, on real processes: on a chain with epochs any
//! peer may connect (stakers join without a config change), so an outsider with a fresh libp2p identity dials the
//! four validators and speaks on the channel that carries proposals, dissemination and asks for bundles.
//!
//! What it must not get: a validator answering its ask for bundles (an amplifier pointed at every peer), and its
//! dissemination taken in (bundles entering the mempools and the chain past every gRPC limit, signature checks
//! spent on its bytes). The chain keeps deciding throughout.

#![allow(clippy::unwrap_used)] // a failing step panics the test, which is what it should do

mod common;

use std::str::FromStr;
use std::time::Duration;

use baton_consensus::parts::ProposalPart;
use baton_l1_inclusion::anvil::LocalL1;
use baton_l1_inclusion::watcher::Safety;
use baton_node::devnet::{attach_l1, DevnetL1, DevnetStaking};
use baton_node::keys::peer_id_of;
use baton_proto::client::BundleStatus;
use common::outsider::Outsider;
use common::{run, scrape, serial, value, wait_included, Cluster, User};

fn peer_bytes(public_key: &str) -> Vec<u8> {
    libp2p_identity::PeerId::from_str(&peer_id_of(public_key).unwrap())
        .unwrap()
        .to_bytes()
}

#[test]
fn an_outsider_cannot_use_the_proposal_channel() {
    let _guard = serial();
    run(Duration::from_secs(300), async {
        let anvil = LocalL1 {
            block_time_secs: Some(1),
            ..Default::default()
        }
        .spawn()
        .expect("anvil");
        let mut cluster = Cluster::prepare(4);
        let mut l1 = DevnetL1::local(&anvil, 10);
        l1.origin_safety = Safety::Latest;
        l1.staking = Some(DevnetStaking {
            epoch_length: 30,
            exit_delay: 3,
            ..Default::default()
        });
        attach_l1(&mut cluster.net, &l1).await.expect("attach L1");
        for i in 0..4 {
            // Pending bundles are disseminated again after `reannounce_ms` (to every peer, the outsider too): far
            // beyond this test, so that any bundle node1 sends the outsider below is an answer to its asks.
            cluster.edit_config(i, |c| c.mempool.reannounce_ms = 3_600_000);
            cluster.start_node(i);
        }
        cluster.wait_height(0, 3, Duration::from_secs(60)).await;

        let genesis = cluster.net.genesis.clone();
        let peers: Vec<String> = genesis
            .validators
            .iter()
            .map(|v| format!("{}/p2p/{}", v.p2p_addr, peer_id_of(&v.public_key).unwrap()))
            .collect();
        let mut outsider =
            Outsider::start(&peers, genesis.validator_set().unwrap(), genesis.domain()).await;
        // Connected once node1's messages (its proposals) reach the outsider.
        let node1 = peer_bytes(&genesis.validators[1].public_key);
        let node1_address = genesis.validators[1].to_validator().unwrap().address;
        outsider
            .wait_for_peer(&node1, Duration::from_secs(60))
            .await;

        // 1. The amplifier: a bundle waiting behind a nonce gap stays in every mempool (it is disseminated but never
        //    proposed), so with re-announcement pushed out no validator has a reason to send it again. The outsider asks node1 for it, naming
        //    node1 as proposer.
        let mut user = User::new();
        user.nonce = 3;
        let waiting = user.bundle(&[(1, b"waits behind a gap")]);
        let hash = cluster.client(0).await.submit(&waiting).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(BundleStatus::Pending) = cluster.client(1).await.bundle_status(&hash).await {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node1 never got the waiting bundle"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let height = cluster.height(1).await.unwrap();
        for _ in 0..10 {
            outsider
                .publish(ProposalPart::Want {
                    proposer: node1_address,
                    height: height + 1,
                    round: 0,
                    hashes: vec![hash],
                })
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let answers = outsider
            .received()
            .iter()
            .filter(|(from, part)| {
                *from == node1
                    && matches!(part, ProposalPart::Bundles { bundles } if bundles.iter().any(|b| b.hash() == hash))
            })
            .count();
        assert_eq!(
            answers, 0,
            "node1 answered an outsider's asks for a bundle it holds ({answers} answers to 10 asks)"
        );

        // 2. Dissemination from outside: a well-signed bundle and a forged one, sent on the parts channel.
        let mut stranger = User::new();
        let smuggled = stranger.bundle(&[(1, b"smuggled in over p2p")]);
        let smuggled_hash = smuggled.hash();
        let mut forged = stranger.bundle(&[(1, b"forged")]);
        forged.entries[0].payload = b"altered".to_vec();
        outsider
            .publish(ProposalPart::Bundles {
                bundles: vec![smuggled, forged],
            })
            .await;
        // Give it time to be checked, admitted and decided (a few heights).
        let h = cluster.height(0).await.unwrap();
        cluster
            .wait_height(0, h + 10, Duration::from_secs(30))
            .await;
        for i in 0..4 {
            let status = cluster.client(i).await.bundle_status(&smuggled_hash).await;
            assert!(
                status.is_err(),
                "node{i} took in an outsider's dissemination: {status:?}"
            );
            let m = scrape(cluster.net.nodes[i].metrics_addr).await;
            let refused = value(
                &m,
                "baton_p2p_refused_messages_total{reason=\"not_a_member\"}",
            )
            .unwrap_or(0.0);
            assert!(
                refused >= 1.0,
                "node{i} did not count the outsider's messages as refused:\n{m}"
            );
        }

        // The chain went on, and honest bundles (the gap filled) are all included.
        let mut filler = User {
            key: user.key.clone(),
            nonce: 0,
        };
        let mut hashes = Vec::new();
        for _ in 0..3 {
            let b = filler.bundle(&[(1, b"fills the gap")]);
            hashes.push(cluster.client(2).await.submit(&b).await.unwrap());
        }
        hashes.push(hash);
        let mut c = cluster.client(3).await;
        for h in &hashes {
            wait_included(&mut c, h, Duration::from_secs(30)).await;
        }
    });
}
