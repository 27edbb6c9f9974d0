//! I8 over the network: hostile clients get typed errors or clean refusals,
//! never crash the node, and never stop it serving a well-behaved client;
//! its memory stays bounded meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::node::TestNode;
use common::quic::{connect, decode, request, send_raw, try_connect};
use strata::proto::{Condition, ErrorCode, Request, Response};

fn set(key: &str, value: &str) -> Request {
    Request::Set {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ttl_ms: None,
        condition: Condition::Always,
        ack: None,
    }
}

fn get(key: &str) -> Request {
    Request::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
}

/// A well-behaved client still gets correct answers.
async fn still_serving(good: &quinn::Connection, round: usize) {
    let key = format!("good-{round}");
    assert!(matches!(
        request(good, &set(&key, "v")).await,
        Response::Written(_)
    ));
    match request(good, &get(&key)).await {
        Response::Value(Some(e)) => assert_eq!(&e.value[..], b"v"),
        other => panic!("good client got {other:?}"),
    }
}

fn error_code(reply: &[u8]) -> ErrorCode {
    match decode(reply) {
        Response::Error(e) => e.code,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_do_not_disturb_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path(),
        &["--max-value-bytes", "65536", "--fsync", "never"],
    );
    let good = connect(node.addr, &node.fingerprint).await;
    let bad = connect(node.addr, &node.fingerprint).await;
    still_serving(&good, 0).await;

    // 1. Oversized declared length: refused before any body is sent.
    let reply = send_raw(&bad, &u32::MAX.to_le_bytes()).await;
    assert_eq!(error_code(&reply), ErrorCode::FrameTooLarge);
    still_serving(&good, 1).await;

    // 2. Garbage bodies of many shapes: BadRequest each time.
    for garbage in [
        &[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff][..],
        &[3, 0, 0, 0, 99, 1, 2],
        &[1, 0, 0, 0, 200],
    ] {
        let reply = send_raw(&bad, garbage).await;
        assert_eq!(error_code(&reply), ErrorCode::BadRequest, "{garbage:?}");
    }
    // Two frames on one stream: a protocol violation, answered.
    let mut two = strata::proto::encode_request(&Request::Ping)
        .unwrap()
        .to_vec();
    two.extend_from_slice(&two.clone());
    assert_eq!(
        error_code(&send_raw(&bad, &two).await),
        ErrorCode::BadRequest
    );
    still_serving(&good, 2).await;

    // 3. Half-sent frames: a header promising 1000 bytes, then the stream
    // ends after 10. The node answers BadRequest (§4) without harm.
    let mut half = 1000u32.to_le_bytes().to_vec();
    half.extend_from_slice(&[0u8; 10]);
    assert_eq!(
        error_code(&send_raw(&bad, &half).await),
        ErrorCode::BadRequest
    );
    still_serving(&good, 3).await;

    // 4. Thousands of streams at once, each left half-open (never finished):
    // QUIC stream credit makes the excess wait; nothing is buffered for them.
    let mut held = Vec::new();
    for _ in 0..2000 {
        let Ok(Ok((mut send, recv))) =
            tokio::time::timeout(Duration::from_millis(200), bad.open_bi()).await
        else {
            break;
        };
        let _ = send.write_all(&10_000u32.to_le_bytes()).await;
        held.push((send, recv));
    }
    assert!(held.len() >= 200, "opened {} streams", held.len());
    still_serving(&good, 4).await;

    // 5. Idle connections: many, doing nothing.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(connect(node.addr, &node.fingerprint).await);
    }
    still_serving(&good, 5).await;

    // 6. A value over the limit is a typed error, not a disconnect.
    let big = "x".repeat(70_000);
    match request(&good, &set("big", &big)).await {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::ValueTooLarge),
        other => panic!("{other:?}"),
    }
    still_serving(&good, 6).await;

    // Request bytes held at once stayed within the node's budget (a bound
    // from its configuration, where RSS depends on the allocator): the
    // oversized frame was never charged, the half-open streams only their
    // declared 10,000 bytes each.
    let high = common::cluster::metric(&node.metrics(), "strata_request_bytes_high_water").unwrap();
    let default_budget = strata::config::NetLimits::default().request_bytes_budget as f64;
    assert!(high <= default_budget, "{high}");
    assert!(high <= (held.len() as f64 + 16.0) * 70_016.0, "{high}");
    drop(held);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_streams_time_out_and_connections_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        "[net]\nmax_connections = 3\nrequest_timeout_ms = 300\n",
    )
    .unwrap();
    let node = TestNode::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let good = connect(node.addr, &node.fingerprint).await;

    // A stream that sends half a header and stalls gets a Timeout reply.
    let (mut send, mut recv) = good.open_bi().await.unwrap();
    send.write_all(&[7, 0]).await.unwrap();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    assert_eq!(error_code(&reply), ErrorCode::Timeout);
    still_serving(&good, 0).await;

    // Connection limit: 3 held (good + 2), the 4th is refused cleanly.
    let _a = connect(node.addr, &node.fingerprint).await;
    let _b = connect(node.addr, &node.fingerprint).await;
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        try_connect(node.addr, &node.fingerprint),
    )
    .await
    .unwrap();
    assert!(
        result.is_err(),
        "the connection over the limit was accepted"
    );
    still_serving(&good, 1).await;
    assert!(
        node.metrics()
            .contains("strata_refused_connections_total 1")
    );
}
