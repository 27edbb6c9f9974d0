//! A node is who its cluster certificate says: a primary knows its
//! replicas by the name in their certificates, refuses a second live
//! session under one name (saying so on both sides), and `Hello` reports
//! the node id derived from that name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{CONVERGE, Member, gen_certs, pairs};
use strata::net::client::{AckPolicy, SetOptions, SetOutcome, WriteReply};
use strata::types::NodeId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_with_the_same_identity_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    let primary = Member::start(root.path(), &certs, "p", &[]);
    let upstream = primary.repl_addr.to_string();
    let first = Member::start(root.path(), &certs, "r1", &["--replica-of", &upstream]);
    primary.await_log("streaming from the WAL", CONVERGE);
    let client = primary.client().await;
    let sync = AckPolicy::Sync { timeout_ms: 30_000 };
    let w = written(
        client
            .set_with("k", "v", SetOptions::new().with_ack(sync))
            .await
            .unwrap(),
    );
    assert_eq!(w.durability.replicas_acked, 1, "{:?}", w.durability);

    // Another node with r1's certificate (another data directory).
    let twin_root = root.path().join("twin");
    let twin = Member::start(&twin_root, &certs, "r1", &["--replica-of", &upstream]);
    let told = twin.await_log("already connected", CONVERGE);
    assert!(told.contains("r1"), "{told}");
    primary.await_log("already connected", CONVERGE);

    // The first replica's session stands: one replica, still acking.
    let info = pairs(client.info().await.unwrap());
    assert_eq!(info["connected_replicas"], "1", "{info:?}");
    let w = written(
        client
            .set_with("k", "w", SetOptions::new().with_ack(sync))
            .await
            .unwrap(),
    );
    assert_eq!(w.durability.replicas_acked, 1);
    assert!(!w.durability.degraded);
    let replica_info = pairs(first.client().await.info().await.unwrap());
    assert_eq!(replica_info["replication_state"], "streaming");
    drop(twin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_reports_the_node_id_of_the_certificate_name() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["node-7"]);
    let member = Member::start(root.path(), &certs, "node-7", &[]);
    let hello = member.client().await.server_info();
    assert_eq!(hello.node_id, Some(NodeId::of_name("node-7")));

    let alone = common::node::TestNode::start(&root.path().join("alone"), &[]);
    let conn = common::quic::connect(alone.addr, &alone.fingerprint).await;
    let hello = strata::proto::Request::Hello {
        protocol: 1,
        token: None,
        client_name: None,
    };
    match common::quic::request(&conn, &hello).await {
        strata::proto::Response::Hello(h) => assert_eq!(h.node_id, None),
        other => panic!("{other:?}"),
    }
}

fn written(outcome: SetOutcome) -> WriteReply {
    match outcome {
        SetOutcome::Written(w) => w,
        other => panic!("{other:?}"),
    }
}
