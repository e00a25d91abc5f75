//! One client must not be able to take the API from the others, on a real node: it cannot hold every
//! `StreamBatches` slot, open submission calls without bound, or pin a stream's buffers by never reading.
//! Clients are told apart by address: the attacker connects from 127.0.0.1, the honest client from 127.0.0.2
//! (both loopback).

#![allow(clippy::unwrap_used)] // a failing step panics the test, which is what it should do

mod common;

use std::net::IpAddr;
use std::time::Duration;

use baton_proto::pb;
use baton_proto::pb::rollup_service_client::RollupServiceClient;
use common::{run, scrape, serial, value, Cluster, User};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

const T: Duration = Duration::from_secs(60);

async fn client_from(cluster: &Cluster, source: &str) -> RollupServiceClient<Channel> {
    let url = format!("http://{}", cluster.net.nodes[0].grpc_addr);
    let channel = Endpoint::from_shared(url)
        .unwrap()
        .local_address(Some(source.parse::<IpAddr>().unwrap()))
        .connect()
        .await
        .unwrap();
    RollupServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
}

fn stream_request() -> pb::StreamBatchesRequest {
    pb::StreamBatchesRequest {
        rollup_id: 1,
        from_height: 1,
        with_proof: false,
    }
}

#[test]
fn one_client_cannot_hold_every_stream_slot() {
    let _g = serial();
    run(Duration::from_secs(120), async {
        let mut cluster = Cluster::prepare(1);
        cluster.edit_config(0, |c| c.grpc.max_subscribers = 256);
        cluster.start_node(0);
        cluster.wait_height(0, 1, T).await;

        // The attacker opens streams until the node refuses, over two connections (a connection carries at most
        // 256 requests at once).
        let mut held = Vec::new();
        let mut refusal = None;
        'open: for _ in 0..2 {
            let mut c = client_from(&cluster, "127.0.0.1").await;
            for _ in 0..200 {
                match c.stream_batches(stream_request()).await {
                    Ok(s) => held.push(s),
                    Err(status) => {
                        refusal = Some(status);
                        break 'open;
                    }
                }
            }
        }
        // Another client still gets a stream, and its first batch.
        let mut honest = client_from(&cluster, "127.0.0.2").await;
        let mut stream = honest
            .stream_batches(stream_request())
            .await
            .unwrap_or_else(|s| {
                panic!(
                    "the honest client was refused after another client opened {} streams: {s}",
                    held.len()
                )
            })
            .into_inner();
        let first = tokio::time::timeout(T, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.height, 1);
        let refusal = refusal.expect("the attacker was refused at some point");
        assert_eq!(refusal.code(), Code::ResourceExhausted);
        assert!(
            refusal.message().contains("grpc.max_streams_per_client"),
            "{refusal:?}"
        );
        assert_eq!(held.len(), 64, "the default per-client limit");
        let m = scrape(cluster.net.nodes[0].metrics_addr).await;
        let refused = value(&m, "baton_grpc_client_refused_total{kind=\"stream\"}").unwrap_or(0.0);
        assert!(refused >= 1.0, "{m}");
    });
}

#[test]
fn one_client_cannot_open_submission_calls_without_bound() {
    let _g = serial();
    run(Duration::from_secs(120), async {
        let cluster = Cluster::start(1);
        cluster.wait_height(0, 1, T).await;
        // SubmitBundles streams opened and left idle: each may hold `submit_stream_inflight` answers.
        let mut held = Vec::new();
        let mut refusal = None;
        'open: for _ in 0..2 {
            let mut c = client_from(&cluster, "127.0.0.1").await;
            for _ in 0..200 {
                let (tx, rx) = tokio::sync::mpsc::channel::<pb::SubmitBundlesRequest>(1);
                match c
                    .submit_bundles(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
                {
                    Ok(s) => held.push((tx, s)),
                    Err(status) => {
                        refusal = Some(status);
                        break 'open;
                    }
                }
            }
        }
        let refusal = refusal.unwrap_or_else(|| {
            panic!(
                "one client opened {} submission streams and was never refused",
                held.len()
            )
        });
        assert_eq!(refusal.code(), Code::ResourceExhausted);
        assert!(
            refusal
                .message()
                .contains("grpc.max_submit_calls_per_client"),
            "{refusal:?}"
        );
        // Another client submits as usual.
        let mut honest = client_from(&cluster, "127.0.0.2").await;
        let b = User::new().bundle(&[(1, b"still served")]);
        honest
            .submit_bundle(pb::SubmitBundleRequest {
                bundle: Some((&b).into()),
            })
            .await
            .unwrap();
        // Closing the streams frees the slots.
        drop(held);
        let mut again = client_from(&cluster, "127.0.0.1").await;
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let (_tx, rx) = tokio::sync::mpsc::channel::<pb::SubmitBundlesRequest>(1);
            if again
                .submit_bundles(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .is_ok()
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "slots never freed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn a_stream_that_is_never_read_is_closed_and_says_where_to_resume() {
    let _g = serial();
    run(Duration::from_secs(120), async {
        let mut cluster = Cluster::prepare(1);
        cluster.edit_config(0, |c| {
            c.grpc.stream_idle_timeout_secs = 2;
            c.grpc.stream_buffer = 2;
        });
        cluster.start_node(0);
        cluster.wait_height(0, 1, T).await;
        let mut reader = client_from(&cluster, "127.0.0.1").await;
        let mut stream = reader
            .stream_batches(stream_request())
            .await
            .unwrap()
            .into_inner();
        // Big batches fill the transport's windows and the stream's buffer while nobody reads.
        let mut user = User::new();
        let payload = vec![7u8; 60 * 1024];
        let mut c = cluster.client(0).await;
        for _ in 0..40 {
            c.submit(&user.bundle(&[(1, &payload[..])])).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let m = scrape(cluster.net.nodes[0].metrics_addr).await;
            if value(&m, "baton_grpc_streams_idle_closed_total").unwrap_or(0.0) >= 1.0 {
                assert_eq!(value(&m, "baton_stream_subscribers"), Some(0.0), "{m}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the unread stream was never closed:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Reading now: what was buffered, then the reason and where to resume.
        let mut last = 0;
        let status = loop {
            match tokio::time::timeout(T, stream.message()).await.unwrap() {
                Ok(Some(b)) => last = b.height,
                Ok(None) => panic!("the stream ended without saying why"),
                Err(s) => break s,
            }
        };
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        assert!(
            status
                .message()
                .contains(&format!("from height {}", last + 1)),
            "{status:?} (last batch read: {last})"
        );
    });
}
