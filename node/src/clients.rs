//! Per-client limits of the gRPC API, so that one client cannot take it from the others.
//!
//! The node-wide bounds (`grpc.max_subscribers` streams, the ingest queue, the verifier pool) protect the node;
//! these protect the other clients. A client is its address: an IPv4 address, or an IPv6 /64 (one host usually
//! holds a whole /64, so counting single IPv6 addresses would bound nothing). Each may hold at most
//! `grpc.max_streams_per_client` `StreamBatches` streams and `grpc.max_submit_calls_per_client` submission calls
//! (`SubmitBundle` calls in progress plus open `SubmitBundles` streams) at once; beyond that a call is refused with
//! RESOURCE_EXHAUSTED naming the setting. Clients behind one NAT or proxy share a budget: raise the limits there.
//! Usage is counted by guards released when the call or stream ends, so the table only holds clients with
//! something open.

// Refusals are gRPC statuses (large, but built once per refused call).
#![allow(clippy::result_large_err)]

use std::net::{IpAddr, Ipv6Addr};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::Status;

use crate::metrics::KindLabel;
use crate::quota::{Quota, QuotaGuard};

/// What a client holds open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Stream,
    Submit,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::Submit => "submit",
        }
    }
}

/// One open call or stream of a client; frees its slot when dropped.
pub type ClientSlot = QuotaGuard<(IpAddr, Kind)>;

/// The per-client table (cheap to clone).
#[derive(Clone, Debug)]
pub struct ClientLimits {
    max_streams: usize,
    max_submits: usize,
    open: Quota<(IpAddr, Kind)>,
    refused: Family<KindLabel, Counter>,
}

/// The key a client is counted under: its IPv4 address, or its IPv6 /64.
fn client_key(addr: Option<std::net::SocketAddr>) -> IpAddr {
    match addr.map(|a| a.ip()) {
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        Some(v4) => v4,
        // No address (not a TCP connection): one shared budget.
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

impl ClientLimits {
    pub fn new(
        max_streams: usize,
        max_submits: usize,
        refused: Family<KindLabel, Counter>,
    ) -> Self {
        ClientLimits {
            max_streams,
            max_submits,
            open: Quota::default(),
            refused,
        }
    }

    /// Takes a slot of `kind` for the client at `remote`, or refuses with RESOURCE_EXHAUSTED.
    pub fn acquire(
        &self,
        remote: Option<std::net::SocketAddr>,
        kind: Kind,
    ) -> Result<ClientSlot, Status> {
        let client = client_key(remote);
        let (max, setting) = match kind {
            Kind::Stream => (self.max_streams, "grpc.max_streams_per_client"),
            Kind::Submit => (self.max_submits, "grpc.max_submit_calls_per_client"),
        };
        self.open.take(&(client, kind), 1, max).ok_or_else(|| {
            self.refused
                .get_or_create(&KindLabel { kind: kind.label() })
                .inc();
            Status::resource_exhausted(format!(
                "this client ({client}) already has {max} {} open ({setting}); close some or wait for them to end",
                match kind {
                    Kind::Stream => "StreamBatches streams",
                    Kind::Submit => "submission calls (SubmitBundle in progress or SubmitBundles streams)",
                }
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<std::net::SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn each_client_has_its_own_budget_released_when_its_calls_end() {
        let refused = Family::<KindLabel, Counter>::default();
        let limits = ClientLimits::new(2, 1, refused.clone());
        let a1 = limits.acquire(at("10.0.0.1:1000"), Kind::Stream).unwrap();
        let _a2 = limits.acquire(at("10.0.0.1:1001"), Kind::Stream).unwrap();
        let err = limits
            .acquire(at("10.0.0.1:1002"), Kind::Stream)
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("grpc.max_streams_per_client"));
        // Another client, and another kind for the same client, are not affected.
        let _b = limits.acquire(at("10.0.0.2:1000"), Kind::Stream).unwrap();
        let s = limits.acquire(at("10.0.0.1:1003"), Kind::Submit).unwrap();
        assert!(limits.acquire(at("10.0.0.1:1004"), Kind::Submit).is_err());
        drop(a1);
        let _a3 = limits.acquire(at("10.0.0.1:1005"), Kind::Stream).unwrap();
        drop(s);
        let _s2 = limits.acquire(at("10.0.0.1:1006"), Kind::Submit).unwrap();
        assert_eq!(
            refused.get_or_create(&KindLabel { kind: "stream" }).get(),
            1
        );
        assert_eq!(
            refused.get_or_create(&KindLabel { kind: "submit" }).get(),
            1
        );
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_mapped_ipv4_is_ipv4() {
        let limits = ClientLimits::new(1, 1, Family::default());
        let _a = limits.acquire(at("[2001:db8::1]:1"), Kind::Stream).unwrap();
        assert!(limits
            .acquire(at("[2001:db8::ffff:1]:1"), Kind::Stream)
            .is_err());
        let _b = limits
            .acquire(at("[2001:db8:0:1::1]:1"), Kind::Stream)
            .unwrap();
        let _c = limits
            .acquire(at("[::ffff:10.0.0.9]:1"), Kind::Stream)
            .unwrap();
        assert!(limits.acquire(at("10.0.0.9:2"), Kind::Stream).is_err());
    }
}
