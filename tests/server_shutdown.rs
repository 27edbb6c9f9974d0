//! Graceful shutdown: SIGTERM stops accepting, lets in-flight requests
//! finish, checkpoints and exits 0; every acknowledged write is there after
//! a restart, which replays nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::node::TestNode;
use common::quic::{connect, request};
use strata::proto::{Condition, Request, Response};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_writes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let conn = connect(node.addr, &node.fingerprint).await;
    let mut writers = Vec::new();
    for w in 0..8 {
        let conn = conn.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let key = Bytes::from(format!("w{w}-{i}"));
                let req = Request::Set {
                    key: key.clone(),
                    value: Bytes::from_static(b"v"),
                    ttl_ms: None,
                    condition: Condition::Always,
                    ack: None,
                };
                // After shutdown the connection closes: stop at the first failure.
                let Ok(Ok((mut send, mut recv))) =
                    tokio::time::timeout(std::time::Duration::from_secs(5), conn.open_bi()).await
                else {
                    break;
                };
                let frame = strata::proto::encode_request(&req).unwrap();
                if send.write_all(&frame).await.is_err() || send.finish().is_err() {
                    break;
                }
                let Ok(reply) = recv.read_to_end(1 << 20).await else {
                    break;
                };
                if reply.is_empty() {
                    break;
                }
                match common::quic::decode(&reply) {
                    Response::Written(_) => acked.push(key),
                    _ => break,
                }
            }
            acked
        }));
    }
    // Let the load reach the node, then ask it to stop.
    let probe = request(&conn, &Request::Ping).await;
    assert_eq!(probe, Response::Pong);
    while node
        .metrics()
        .lines()
        .any(|l| l.starts_with("strata_requests_total{op=\"set\"} 0"))
    {
        tokio::task::yield_now().await;
    }
    let status = node.terminate();
    assert!(status.success(), "exit status {status:?}");
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(!acked.is_empty());

    let node = TestNode::start(dir.path(), &[]);
    let conn = connect(node.addr, &node.fingerprint).await;
    for key in &acked {
        match request(&conn, &Request::Get { key: key.clone() }).await {
            Response::Value(Some(_)) => {}
            other => panic!("acknowledged {key:?} missing after graceful restart: {other:?}"),
        }
    }
    // The shutdown checkpointed: the restart replayed nothing.
    let opened = node.await_log("store opened", std::time::Duration::from_secs(60));
    assert!(opened.contains("replayed=0"), "{opened}");
}
