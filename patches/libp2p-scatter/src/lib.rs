//! libp2p-scatter 0.3's interface, carried by libp2p-scatter 0.5.
//!
//! Malachite's network crate (arc-malachitebft-network 0.8.2, the newest release) sends every consensus vote,
//! proposal part and dissemination batch of Baton through the broadcast protocol of libp2p-scatter 0.3. That
//! version opens a new yamux substream for every message to every peer: a SYN, a multistream-select negotiation
//! on both sides, the message, and a close. At Baton's message rates this was the largest cost a validator had
//! that was not signature recovery or storage (BENCHMARKS.md, "Where the CPU goes": yamux and the rest of libp2p
//! a fifth of a loaded validator).
//!
//! libp2p-scatter 0.5, by the same authors, keeps one long-lived substream per connection and direction and
//! writes messages on it as length-delimited frames, in order. Its interface differs from 0.3 (fallible
//! `broadcast`, owned topics, another configuration), so Malachite cannot use it directly. This crate is the
//! bridge: the workspace's `[patch.crates-io]` puts it in place of 0.3, it offers the part of 0.3's interface
//! that Malachite calls, and it forwards every call to 0.5 unchanged. It holds no protocol logic of its own.
//!
//! What changes for a node:
//! - Messages to one peer arrive in the order they were sent (0.3 could reorder them, up to eight substreams
//!   being open at once).
//! - The outbound queue of a connection is bounded ([`OUTBOUND_QUEUE_MESSAGES`]); 0.3's was not. Past it a
//!   broadcast to that peer is dropped, as a lost message on a slow link would be; consensus already recovers
//!   from lost messages (round timeouts, value sync).
//! - Peers still on 0.3 (a node of an older build during a rolling upgrade) are served on 0.3's protocol: 0.5's
//!   `legacy_protocol` falls back for them, per connection.

use std::task::{Context, Poll};

use bytes::Bytes;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;

pub use scatter::{Event, Topic};

/// Messages queued for one connection before further broadcasts to that peer are dropped (0.5's default).
pub const OUTBOUND_QUEUE_MESSAGES: usize = 1024;

/// 0.3's configuration: the largest message, in bytes.
#[derive(Clone, Debug)]
pub struct Config {
    pub max_buf_size: usize,
}

impl Default for Config {
    /// 4 MiB, as 0.3.
    fn default() -> Self {
        Self {
            max_buf_size: 4 * 1024 * 1024,
        }
    }
}

impl Config {
    fn scatter(&self) -> scatter::Config {
        scatter::Config::default()
            .max_message_size(self.max_buf_size)
            .max_outbound_queue_size(OUTBOUND_QUEUE_MESSAGES)
            .legacy_protocol(true)
    }
}

/// The broadcast behaviour: 0.3's methods over 0.5's behaviour.
#[derive(Debug)]
pub struct Behaviour {
    inner: scatter::Behaviour,
    /// The topics this node subscribed to, kept here because 0.3's `subscribed` lends them out.
    subscribed: Vec<Topic>,
}

impl Behaviour {
    pub fn new(config: Config) -> Self {
        Self {
            inner: scatter::Behaviour::new(config.scatter()),
            subscribed: Vec::new(),
        }
    }

    pub fn new_with_metrics(config: Config, registry: &mut Registry) -> Self {
        Self {
            inner: scatter::Behaviour::new_with_metrics(config.scatter(), registry),
            subscribed: Vec::new(),
        }
    }

    /// The topics this node is subscribed to.
    pub fn subscribed(&self) -> impl Iterator<Item = &Topic> + '_ {
        self.subscribed.iter()
    }

    pub fn subscribe(&mut self, topic: Topic) {
        if self.inner.subscribe(topic) {
            self.subscribed.push(topic);
        }
    }

    pub fn unsubscribe(&mut self, topic: &Topic) {
        if self.inner.unsubscribe(*topic) {
            self.subscribed.retain(|t| t != topic);
        }
    }

    /// Sends `msg` to every connected peer subscribed to `topic`. 0.3 could not refuse a message; a payload
    /// over the configured size is not sent and is logged (Malachite checks the size before it calls this).
    pub fn broadcast(&mut self, topic: &Topic, msg: Bytes) {
        if let Err(e) = self.inner.broadcast(*topic, msg) {
            tracing::warn!(%topic, "broadcast not sent: {e}");
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = <scatter::Behaviour as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        self.inner.on_swarm_event(event)
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer, connection_id, event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::swarm::{Swarm, SwarmEvent};
    use libp2p::{noise, tcp, yamux, SwarmBuilder};

    use super::*;

    fn swarm(max_buf_size: usize) -> Swarm<Behaviour> {
        SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|_| Behaviour::new(Config { max_buf_size }))
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
            .build()
    }

    /// Drives both swarms until `b` reports an event that `want` accepts.
    async fn until<T>(
        a: &mut Swarm<Behaviour>,
        b: &mut Swarm<Behaviour>,
        mut want: impl FnMut(SwarmEvent<Event>) -> Option<T>,
    ) -> T {
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                ev = b.select_next_some() => if let Some(t) = want(ev) { return t; },
            }
        }
    }

    /// Two nodes on loopback TCP, subscribed to one topic and connected, each having seen the other subscribe.
    async fn pair(max_buf_size: usize, topic: Topic) -> (Swarm<Behaviour>, Swarm<Behaviour>) {
        let mut a = swarm(max_buf_size);
        let mut b = swarm(max_buf_size);
        a.behaviour_mut().subscribe(topic);
        b.behaviour_mut().subscribe(topic);
        b.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
            .expect("listen");
        let addr = until(&mut a, &mut b, |ev| match ev {
            SwarmEvent::NewListenAddr { address, .. } => Some(address),
            _ => None,
        })
        .await;
        a.dial(addr).expect("dial");
        let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
        // Each hears the other's subscription (in either order).
        let (mut a_heard, mut b_heard) = (false, false);
        while !(a_heard && b_heard) {
            tokio::select! {
                ev = a.select_next_some() => {
                    a_heard |= matches!(ev, SwarmEvent::Behaviour(Event::Subscribed(p, t)) if p == b_id && t == topic);
                }
                ev = b.select_next_some() => {
                    b_heard |= matches!(ev, SwarmEvent::Behaviour(Event::Subscribed(p, t)) if p == a_id && t == topic);
                }
            }
        }
        (a, b)
    }

    #[tokio::test]
    async fn messages_to_a_peer_arrive_all_and_in_order() {
        let topic = Topic::new(b"/baton/test");
        let (mut a, mut b) = tokio::time::timeout(Duration::from_secs(20), pair(1 << 16, topic))
            .await
            .expect("peers connect and subscribe within 20 s");
        assert_eq!(a.behaviour().subscribed().collect::<Vec<_>>(), vec![&topic]);
        const N: u32 = 500;
        for i in 0..N {
            a.behaviour_mut()
                .broadcast(&topic, Bytes::from(i.to_be_bytes().to_vec()));
        }
        let a_id = *a.local_peer_id();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), async {
            while got.len() < N as usize {
                let msg = until(&mut a, &mut b, |ev| match ev {
                    SwarmEvent::Behaviour(Event::Received(p, t, m)) if p == a_id && t == topic => {
                        Some(m)
                    }
                    _ => None,
                })
                .await;
                got.push(u32::from_be_bytes(msg[..].try_into().expect("4 bytes")));
            }
        })
        .await
        .expect("all messages arrive within 20 s");
        assert_eq!(got, (0..N).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_oversized_message_is_not_sent_and_the_next_one_is() {
        let topic = Topic::new(b"/baton/test");
        let (mut a, mut b) = tokio::time::timeout(Duration::from_secs(20), pair(1024, topic))
            .await
            .expect("peers connect and subscribe within 20 s");
        a.behaviour_mut()
            .broadcast(&topic, Bytes::from(vec![7u8; 1025]));
        a.behaviour_mut()
            .broadcast(&topic, Bytes::from(vec![8u8; 1024]));
        let msg = tokio::time::timeout(
            Duration::from_secs(20),
            until(&mut a, &mut b, |ev| match ev {
                SwarmEvent::Behaviour(Event::Received(_, _, m)) => Some(m),
                _ => None,
            }),
        )
        .await
        .expect("the second message arrives within 20 s");
        assert_eq!(msg, Bytes::from(vec![8u8; 1024]));
    }
}
