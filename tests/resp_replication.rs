//! The RESP gateway on a primary and its replica: `WAIT` counts the
//! replicas that hold the writes so far, a replica refuses writes as a
//! Redis replica does, and `CLIENT DURABILITY` sets a connection's ack
//! policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cluster::{Member, gen_certs};
use common::resp::{Conn, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_counts_replicas_and_a_replica_refuses_writes() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    let resp = ["--resp-listen", "127.0.0.1:0"];
    let primary = Member::start(root.path(), &certs, "p", &resp);
    let upstream = primary.repl_addr.to_string();
    let replica = Member::start(
        root.path(),
        &certs,
        "r1",
        &["--replica-of", &upstream, "--resp-listen", "127.0.0.1:0"],
    );
    let mut p = Conn::connect(primary.node.resp_addr.unwrap()).await;
    let mut r = Conn::connect(replica.node.resp_addr.unwrap()).await;
    assert_eq!(p.cmd(&["SET", "k", "v"]).await, Value::ok());
    assert_eq!(p.cmd(&["INCR", "n"]).await, Value::Int(1));
    // Timeout 0: until the replica has both writes (bounded by the
    // node's request timeout).
    assert_eq!(p.cmd(&["WAIT", "1", "0"]).await, Value::Int(1));
    // No more replicas than there are, whatever the wait.
    assert_eq!(p.cmd(&["WAIT", "2", "50"]).await, Value::Int(1));
    assert_eq!(
        r.cmd(&["SET", "k", "w"]).await,
        Value::Error("READONLY You can't write against a read only replica.".into())
    );
    assert_eq!(
        r.cmd(&["HELLO", "3"]).await.get("role"),
        Value::bulk("replica")
    );
    let info = r.cmd(&["INFO", "replication"]).await.text();
    assert!(info.contains("role:slave"), "{info}");

    // A connection chooses its writes' ack policy: two replicas asked of
    // a primary that has one, failing on timeout, fails the write's reply.
    assert_eq!(
        p.cmd(&["CLIENT", "DURABILITY"]).await,
        Value::bulk("default")
    );
    let policy = "semi-sync:2:100:fail";
    assert_eq!(p.cmd(&["CLIENT", "DURABILITY", policy]).await, Value::ok());
    assert_eq!(p.cmd(&["CLIENT", "DURABILITY"]).await, Value::bulk(policy));
    match p.cmd(&["SET", "k2", "v"]).await {
        Value::Error(e) => assert!(e.starts_with("ERR ") && e.contains("replica"), "{e}"),
        other => panic!("a write short of its replicas answered {other:?}"),
    }
    assert_eq!(
        p.cmd(&["CLIENT", "DURABILITY", "sync:5000"]).await,
        Value::ok()
    );
    assert_eq!(p.cmd(&["SET", "k3", "v"]).await, Value::ok());
    match p.cmd(&["CLIENT", "DURABILITY", "semi-sync:x"]).await {
        Value::Error(e) => assert!(e.starts_with("ERR invalid durability policy"), "{e}"),
        other => panic!("a bad policy answered {other:?}"),
    }
    // RESET, like a new connection, goes back to the node's default.
    p.cmd(&["RESET"]).await;
    assert_eq!(
        p.cmd(&["CLIENT", "DURABILITY"]).await,
        Value::bulk("default")
    );
    assert_eq!(p.cmd(&["SET", "k4", "v"]).await, Value::ok());
}
