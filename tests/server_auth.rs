//! Authentication fails closed: a connection that sends a bad Hello loses
//! the role an earlier good Hello gave it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::node::TestNode;
use common::quic::{connect, request};
use strata::proto::{Condition, ErrorCode, Request, Response};

fn hello(token: &str) -> Request {
    Request::Hello {
        protocol: 1,
        token: Some(token.to_string()),
        client_name: None,
    }
}

fn set() -> Request {
    Request::Set {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        ttl_ms: None,
        condition: Condition::Always,
        ack: None,
    }
}

fn code(r: Response) -> Option<ErrorCode> {
    match r {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_hello_drops_the_connections_role() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--token", "read-write:rw-token-123"]);
    let conn = connect(node.addr, &node.fingerprint).await;
    assert_eq!(
        code(request(&conn, &set()).await),
        Some(ErrorCode::Unauthenticated)
    );
    assert!(matches!(
        request(&conn, &hello("rw-token-123")).await,
        Response::Hello(_)
    ));
    assert!(matches!(request(&conn, &set()).await, Response::Written(_)));
    assert_eq!(
        code(request(&conn, &hello("wrong-token!")).await),
        Some(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        code(request(&conn, &set()).await),
        Some(ErrorCode::Unauthenticated)
    );
    // The token never appears in the node's log.
    assert!(node.log_lines().iter().all(|l| !l.contains("rw-token-123")));
}
