//! The dissemination tap: peers' bundles reach a proposer that is waiting to propose.
//!
//! Malachite hands the application its messages through one host actor (app-channel's connector), which handles
//! them one at a time and, for `GetValue`, holds the actor until the application answers with its value. An idle
//! proposer answers only when it has something to include or its `max_idle_ms` runs out, so while it waits the
//! connector passes nothing else: a bundle that entered another validator reached the proposer only after it had
//! proposed an empty block, and waited a whole idle height (BENCHMARKS.md, T6).
//!
//! The tap is a second subscriber to the engine's network events. While the loop has a proposal in wait (and only
//! then: [`TapHandle::set_waiting`]) it forwards the dissemination messages (`ProposalPart::Bundles`) to the
//! consensus loop, which takes them in as it would from the connector: the sender's share, the verifier pool, the
//! checks. The same message still arrives through the connector once the proposal is out and is taken in again
//! there (the engine's answer goes with it; the signatures are not recovered twice). The tap holds at most
//! `p2p.tap_messages` messages and `p2p.tap_bytes` bytes and drops the rest (`baton_p2p_tap_dropped_total`): the
//! connector's copy is the one that is never lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use malachitebft_app_channel::app::engine::network::{NetworkEvent, NetworkRef, Subscriber};
use malachitebft_app_channel::app::engine::util::output_port::{
    OutputPort, OutputPortSubscriberTrait,
};
use malachitebft_app_channel::app::streaming::StreamContent;
use prometheus_client::metrics::counter::Counter;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use baton_consensus::context::BatonContext;
use baton_consensus::parts::ProposalPart;

use super::ConsensusLoop;
use crate::error::NodeError;

/// The least a held message counts against `tap_bytes`, so that the byte bound also bounds the count of tiny
/// messages waiting in the forwarding actor's mailbox.
const MIN_COST: usize = 1_024;

/// How much the tap holds for the loop (`p2p.tap_messages`, `p2p.tap_bytes`).
#[derive(Clone, Copy, Debug)]
pub struct TapLimits {
    pub messages: usize,
    pub bytes: usize,
}

/// A dissemination message seen by the tap.
#[derive(Debug)]
pub struct Tapped {
    /// The authenticated publisher (the relaying peer when the transport declares none).
    pub publisher: Vec<u8>,
    pub part: ProposalPart,
    /// Its share of `tap_bytes`, given back when the loop is done with it.
    _bytes: OwnedSemaphorePermit,
}

/// The loop's end of the tap.
pub struct TapHandle {
    pub(super) rx: mpsc::Receiver<Tapped>,
    waiting: Arc<AtomicBool>,
    actor: ActorRef<Tapped>,
}

impl TapHandle {
    /// Whether the loop has a proposal in wait: the tap forwards only then.
    pub(super) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }
}

impl Drop for TapHandle {
    fn drop(&mut self) {
        self.actor.stop(None);
    }
}

impl ConsensusLoop {
    /// A peer's dissemination from the tap: taken in as from the connector ([`ConsensusLoop::handle`]), but only
    /// while a proposal waits (the connector is held until it is out); otherwise the connector's copy is enough.
    /// The connector's copy of a tapped message is still taken in as usual once the proposal is out: it answers
    /// the engine (a proposal the bundles complete), retries what the tap could not check for want of room, and
    /// costs only the bundles' hashes (their signatures are in the checked set).
    pub(super) fn take_tapped(&mut self, t: Tapped) {
        if self.pending.is_none() {
            return;
        }
        let size = t.part.size();
        let ProposalPart::Bundles { bundles } = t.part else {
            return;
        };
        if self.hears(&t.publisher, size) {
            self.check_gossip(t.publisher, bundles, None);
        }
    }
}

/// Subscribes a tap to the engine's network actor. `dropped` counts the messages it had no room for.
pub(crate) async fn tap(
    network: &NetworkRef<BatonContext>,
    limits: TapLimits,
    dropped: Counter,
) -> Result<TapHandle, NodeError> {
    let (tx, rx) = mpsc::channel(limits.messages.max(1));
    let (actor, _) = Actor::spawn(None, Forwarder, (tx, dropped.clone()))
        .await
        .map_err(|e| NodeError::Engine(format!("starting the dissemination tap: {e}")))?;
    let waiting = Arc::new(AtomicBool::new(false));
    network
        .cast(
            malachitebft_app_channel::app::engine::network::Msg::Subscribe(Box::new(
                TapSubscriber {
                    actor: actor.clone(),
                    waiting: waiting.clone(),
                    bytes: Arc::new(Semaphore::new(limits.bytes.min(Semaphore::MAX_PERMITS))),
                    dropped,
                },
            )),
        )
        .map_err(|e| NodeError::Engine(format!("subscribing the dissemination tap: {e}")))?;
    Ok(TapHandle { rx, waiting, actor })
}

/// The dissemination message in a network event, while the loop waits to propose: its publisher and part.
fn tapped(
    event: NetworkEvent<BatonContext>,
    waiting: &AtomicBool,
) -> Option<(Vec<u8>, ProposalPart)> {
    let NetworkEvent::ProposalPart(from, published_by, msg) = event else {
        return None;
    };
    if !waiting.load(Ordering::Relaxed) {
        return None;
    }
    let StreamContent::Data(part @ ProposalPart::Bundles { .. }) = msg.content else {
        return None;
    };
    Some((published_by.unwrap_or(from).to_bytes(), part))
}

struct TapSubscriber {
    actor: ActorRef<Tapped>,
    waiting: Arc<AtomicBool>,
    /// `tap_bytes`, taken when a message is forwarded and given back when the loop drops it.
    bytes: Arc<Semaphore>,
    dropped: Counter,
}

impl OutputPortSubscriberTrait<NetworkEvent<BatonContext>> for TapSubscriber {
    fn subscribe_to_port(&self, port: &OutputPort<NetworkEvent<BatonContext>>) {
        let waiting = self.waiting.clone();
        let bytes = self.bytes.clone();
        let dropped = self.dropped.clone();
        // Runs in the port's forwarding task, for every network event: the filter is cheap before the permit.
        port.subscribe(self.actor.clone(), move |event| {
            let (publisher, part) = tapped(event, &waiting)?;
            let cost = u32::try_from(part.size().max(MIN_COST)).unwrap_or(u32::MAX);
            match bytes.clone().try_acquire_many_owned(cost) {
                Ok(permit) => Some(Tapped {
                    publisher,
                    part,
                    _bytes: permit,
                }),
                Err(_) => {
                    dropped.inc();
                    None
                }
            }
        });
    }
}

impl Subscriber<NetworkEvent<BatonContext>> for TapSubscriber {
    /// The network's replay of its current state to a new subscriber (listening, connected peers): not wanted.
    fn send(&self, _event: NetworkEvent<BatonContext>) {}
}

/// Hands tapped messages to the loop's queue (`tap_messages`), dropping what does not fit; stops when the loop is
/// gone.
struct Forwarder;

#[async_trait::async_trait]
impl Actor for Forwarder {
    type Msg = Tapped;
    type State = (mpsc::Sender<Tapped>, Counter);
    type Arguments = (mpsc::Sender<Tapped>, Counter);

    async fn pre_start(
        &self,
        _myself: ActorRef<Tapped>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Tapped>,
        msg: Tapped,
        (tx, dropped): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                dropped.inc();
                debug!("the dissemination tap is full; the connector's copy will be taken instead")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => myself.stop(None),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use malachitebft_app_channel::app::streaming::{StreamId, StreamMessage};

    fn event(part: ProposalPart) -> NetworkEvent<BatonContext> {
        let peer = malachitebft_app_channel::app::types::PeerId::from_bytes(
            &libp2p_identity::PeerId::random().to_bytes(),
        )
        .expect("a libp2p peer id");
        NetworkEvent::ProposalPart(
            peer,
            None,
            StreamMessage::new(
                StreamId::new(Bytes::from_static(b"g\0\0\0\0\0\0\0\x07")),
                0,
                StreamContent::Data(part),
            ),
        )
    }

    #[test]
    fn forwards_dissemination_only_while_a_proposal_waits() {
        let bundles = || ProposalPart::Bundles { bundles: vec![] };
        let waiting = AtomicBool::new(false);
        assert!(tapped(event(bundles()), &waiting).is_none(), "not waiting");
        waiting.store(true, Ordering::Relaxed);
        let (_, part) = tapped(event(bundles()), &waiting).expect("forwarded while waiting");
        assert_eq!(part, bundles());
        let refs = ProposalPart::Refs { hashes: vec![] };
        assert!(
            tapped(event(refs), &waiting).is_none(),
            "proposal streams and asks stay with the connector"
        );
    }
}
