//! The server does what proto-docs/wire-protocol.md and errors.md say, in
//! each place where a client written from the spec alone found the two
//! disagreeing. Every request here is raw protocol, as such a client sends
//! it, to a real node.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::node::TestNode;
use common::quic::{connect, decode, request, send_raw};
use strata::cluster::key_slot;
use strata::proto::{
    Condition, DEFAULT_MAX_KEYS_PER_REQUEST, DeadlineState, ErrorCode, Request, Response, quic_code,
};
use strata::types::{AckPolicy, OnTimeout};

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn set(key: &[u8], value: &[u8], ack: Option<AckPolicy>) -> Request {
    Request::Set {
        key: b(key),
        value: b(value),
        ttl_ms: None,
        condition: Condition::Always,
        ack,
    }
}

fn get(key: &[u8]) -> Request {
    Request::Get { key: b(key) }
}

#[track_caller]
fn error_code(r: &Response) -> ErrorCode {
    match r {
        Response::Error(e) => e.code,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn value(r: &Response) -> Option<Bytes> {
    match r {
        Response::Value(e) => e.as_ref().map(|e| e.value.clone()),
        other => panic!("expected a value, got {other:?}"),
    }
}

fn hello(token: Option<&str>) -> Request {
    Request::Hello {
        protocol: 1,
        token: token.map(str::to_string),
        client_name: Some("spec-test".into()),
    }
}

fn write_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("strata.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

/// (1) §5: the default key-count limit is 1024, in `Hello` and in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_key_count_limit_is_1024() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--fsync", "never"]);
    let conn = connect(node.addr, &node.fingerprint).await;
    match request(&conn, &hello(None)).await {
        Response::Hello(h) => {
            assert_eq!(h.limits.max_keys_per_request, DEFAULT_MAX_KEYS_PER_REQUEST);
            assert_eq!(h.limits.max_keys_per_request, 1024);
        }
        other => panic!("{other:?}"),
    }
    let keys = |n: usize| (0..n).map(|i| b(format!("k{i}").as_bytes())).collect();
    assert!(matches!(
        request(&conn, &Request::MultiGet { keys: keys(1024) }).await,
        Response::Values(v) if v.len() == 1024
    ));
    let over = request(&conn, &Request::MultiGet { keys: keys(1025) }).await;
    assert_eq!(error_code(&over), ErrorCode::TooManyKeys);
    let over = request(&conn, &Request::Exists { keys: keys(1025) }).await;
    assert_eq!(error_code(&over), ErrorCode::TooManyKeys);
}

/// (2) §4: a FIN before a whole request frame, wherever it falls, is
/// answered `Error(BadRequest)` rather than a bare FIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fin_before_a_whole_frame_gets_bad_request() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--fsync", "never"]);
    let conn = connect(node.addr, &node.fingerprint).await;
    let mut in_body = 20u32.to_le_bytes().to_vec();
    in_body.extend_from_slice(&[2, 3]);
    for (what, bytes) in [
        ("empty stream", vec![]),
        ("inside the header", vec![9, 0]),
        ("inside the body", in_body),
    ] {
        let reply = send_raw(&conn, &bytes).await;
        assert!(!reply.is_empty(), "{what}: a bare FIN");
        let reply = decode(&reply);
        assert_eq!(error_code(&reply), ErrorCode::BadRequest, "{what}");
    }
    // The connection stays usable.
    assert!(matches!(
        request(&conn, &Request::Ping).await,
        Response::Pong
    ));
}

/// (3) §8: the empty key is a valid key for every keyed operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_key_is_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--fsync", "never"]);
    let conn = connect(node.addr, &node.fingerprint).await;
    assert!(matches!(
        request(&conn, &set(b"", b"nothing", None)).await,
        Response::Written(_)
    ));
    assert_eq!(value(&request(&conn, &get(b"")).await), Some(b(b"nothing")));
    let found = request(&conn, &Request::Exists { keys: vec![b(b"")] }).await;
    assert!(matches!(found, Response::Count(1)), "{found:?}");
    let expire = Request::Expire {
        key: b(b""),
        ttl_ms: 60_000,
        ack: None,
    };
    assert!(matches!(
        request(&conn, &expire).await,
        Response::Updated { existed: true, .. }
    ));
    let ttl = request(&conn, &Request::Ttl { key: b(b"") }).await;
    assert!(matches!(ttl, Response::Ttl(_)), "{ttl:?}");
    let scan = Request::Scan {
        prefix: b(b""),
        cursor: None,
        limit: 0,
    };
    match request(&conn, &scan).await {
        Response::Page(p) => assert_eq!(p.entries[0].0, b(b"")),
        other => panic!("{other:?}"),
    }
    let delete = Request::Delete {
        key: b(b""),
        condition: Condition::Always,
        ack: None,
    };
    assert!(matches!(
        request(&conn, &delete).await,
        Response::Deleted { existed: true, .. }
    ));
    let incr = Request::Incr {
        key: b(b""),
        delta: 3,
        ack: None,
    };
    assert!(matches!(
        request(&conn, &incr).await,
        Response::Int { value: 3, .. }
    ));
}

/// (4) and (5) §8: `Expire` with a TTL of 0, `ExpireAt` and `SetAt` with a
/// deadline of 0, and `Delete` with `IfAbsent` or
/// `IfPresent` are `BadRequest`, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused_before_executing() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--fsync", "never"]);
    let conn = connect(node.addr, &node.fingerprint).await;
    request(&conn, &set(b"k", b"v", None)).await;
    let expire = Request::Expire {
        key: b(b"k"),
        ttl_ms: 0,
        ack: None,
    };
    assert_eq!(
        error_code(&request(&conn, &expire).await),
        ErrorCode::BadRequest
    );
    // A deadline of 0 would read as "never" in the stored formats.
    let expire_at = Request::ExpireAt {
        key: b(b"k"),
        at_ms: 0,
        ack: None,
    };
    let set_at = Request::SetAt {
        key: b(b"k"),
        value: b(b"changed"),
        expires_at_ms: 0,
        condition: Condition::Always,
        ack: None,
    };
    for zero in [expire_at, set_at] {
        assert_eq!(
            error_code(&request(&conn, &zero).await),
            ErrorCode::BadRequest
        );
    }
    assert!(matches!(
        request(&conn, &Request::Deadline { key: b(b"k") }).await,
        Response::Deadline(DeadlineState::Persistent)
    ));
    for condition in [Condition::IfPresent, Condition::IfAbsent] {
        let delete = Request::Delete {
            key: b(b"k"),
            condition,
            ack: None,
        };
        assert_eq!(
            error_code(&request(&conn, &delete).await),
            ErrorCode::BadRequest,
            "{condition:?}"
        );
    }
    assert_eq!(value(&request(&conn, &get(b"k")).await), Some(b(b"v")));
    // Zero keys is valid for MultiGet and Exists.
    assert!(matches!(
        request(&conn, &Request::MultiGet { keys: vec![] }).await,
        Response::Values(v) if v.is_empty()
    ));
    assert!(matches!(
        request(&conn, &Request::Exists { keys: vec![] }).await,
        Response::Count(0)
    ));
}

/// (6) §8: `Incr` takes an optional `-` and 1 to 19 digits within the i64
/// range, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_follows_the_integer_grammar() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--fsync", "never"]);
    let conn = connect(node.addr, &node.fingerprint).await;
    let incr = |key: &str| Request::Incr {
        key: b(key.as_bytes()),
        delta: 1,
        ack: None,
    };
    let refused: [&[u8]; 7] = [
        b"+5",
        b"00000000000000000005",
        b"9999999999999999999",
        b" 5",
        b"5 ",
        b"-",
        b"",
    ];
    for (i, stored) in refused.iter().enumerate() {
        let key = format!("bad{i}");
        request(&conn, &set(key.as_bytes(), stored, None)).await;
        let reply = request(&conn, &incr(&key)).await;
        assert_eq!(
            error_code(&reply),
            ErrorCode::NotAnInteger,
            "{:?}",
            String::from_utf8_lossy(stored)
        );
        assert_eq!(
            value(&request(&conn, &get(key.as_bytes())).await),
            Some(b(stored)),
            "unchanged"
        );
    }
    let accepted: [(&[u8], i64); 4] = [
        (b"0000000000000000005", 6),
        (b"-0", 1),
        (b"-9223372036854775808", -9223372036854775807),
        (b"41", 42),
    ];
    for (i, (stored, next)) in accepted.iter().enumerate() {
        let key = format!("ok{i}");
        request(&conn, &set(key.as_bytes(), stored, None)).await;
        match request(&conn, &incr(&key)).await {
            Response::Int { value, .. } => assert_eq!(value, *next),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(stored)),
        }
        // Stored back in canonical form.
        assert_eq!(
            value(&request(&conn, &get(key.as_bytes())).await),
            Some(b(next.to_string().as_bytes()))
        );
    }
}

/// (7) §8: one rule for nodes without replicas. A node that accepts no
/// replicas applies every policy as `Async` and says so; a node that
/// accepts replicas holds writes to their policy though none is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_policies_on_a_node_without_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let policies = [
        AckPolicy::Sync { timeout_ms: 200 },
        AckPolicy::SemiSync {
            replicas: 1,
            timeout_ms: 200,
            on_timeout: OnTimeout::Degrade,
        },
        AckPolicy::SemiSync {
            replicas: 1,
            timeout_ms: 200,
            on_timeout: OnTimeout::Fail,
        },
    ];
    // Standalone: no replication listener.
    let alone = TestNode::start(&dir.path().join("alone"), &["--fsync", "never"]);
    let conn = connect(alone.addr, &alone.fingerprint).await;
    for policy in policies {
        match request(&conn, &set(b"k", b"v", Some(policy))).await {
            Response::Written(w) => {
                assert_eq!(w.durability.requested, AckPolicy::Async, "{policy:?}");
                assert!(!w.durability.degraded, "{policy:?}");
                assert_eq!(w.durability.replicas_acked, 0);
            }
            other => panic!("{policy:?}: {other:?}"),
        }
    }
    drop(conn);

    // Accepts replicas, none connected: the policy applies.
    let certs = dir.path().join("certs");
    common::cluster::gen_certs(&certs, &["p"]);
    let primary = common::cluster::Member::start(dir.path(), &certs, "p", &["--fsync", "never"]);
    let conn = connect(primary.node.addr, &primary.node.fingerprint).await;
    for policy in &policies[..2] {
        match request(&conn, &set(b"k", b"v", Some(*policy))).await {
            Response::Written(w) => {
                assert_eq!(w.durability.requested, *policy);
                assert!(w.durability.degraded, "{policy:?}: {:?}", w.durability);
                assert_eq!(w.durability.replicas_acked, 0);
            }
            other => panic!("{policy:?}: {other:?}"),
        }
    }
    let failed = request(&conn, &set(b"k", b"v", Some(policies[2]))).await;
    assert_eq!(error_code(&failed), ErrorCode::ReplicationTimeout);
}

/// (8) and (9) §8, §4: a `Scan` prefix over `max_key_bytes` is
/// `KeyTooLarge`; a page that would pass the frame limit is cut short, and
/// the scan still returns every key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_prefix_limit_and_pages_cut_to_the_frame() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[net]\nmax_frame_bytes = 131072\n[store.limits]\nmax_value_bytes = 65536\n",
    );
    let node = TestNode::start(
        &dir.path().join("data"),
        &["--config", &config, "--fsync", "never"],
    );
    let conn = connect(node.addr, &node.fingerprint).await;
    let long = Request::Scan {
        prefix: Bytes::from(vec![b'p'; 16385]),
        cursor: None,
        limit: 0,
    };
    assert_eq!(
        error_code(&request(&conn, &long).await),
        ErrorCode::KeyTooLarge
    );

    // Five values of 60,000 bytes: no two fit one 128 KiB frame with room
    // for the cursor, so every page is cut short.
    let big = vec![7u8; 60_000];
    for i in 0..5 {
        let reply = request(&conn, &set(format!("big:{i}").as_bytes(), &big, None)).await;
        assert!(matches!(reply, Response::Written(_)), "{reply:?}");
    }
    let mut cursor = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let scan = Request::Scan {
            prefix: b(b"big:"),
            cursor,
            limit: 0,
        };
        let reply = send_raw(&conn, &strata::proto::encode_request(&scan).unwrap()).await;
        assert!(reply.len() - 4 <= 131_072, "a frame over the limit");
        let Response::Page(page) = decode(&reply) else {
            panic!("{:?}", decode(&reply));
        };
        pages += 1;
        assert!(pages <= 10, "the scan does not end");
        seen.extend(page.entries.into_iter().map(|(k, _)| k));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut expect: Vec<Bytes> = (0..5).map(|i| b(format!("big:{i}").as_bytes())).collect();
    // Slot order (§8): by Redis Cluster slot, then bytewise.
    expect.sort_by_key(|k| (key_slot(k), k.clone()));
    assert_eq!(seen, expect);
    assert!(pages >= 3, "pages were not cut short: {pages}");
}

/// (10) §3: with tokens configured, everything but `Hello` (`Ping` too)
/// gets `Unauthenticated` until a good `Hello`; a failed second `Hello`
/// takes the rights away again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_but_hello_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--token", "read-only:ro-token-1234"]);
    let conn = connect(node.addr, &node.fingerprint).await;
    // A large frame before Hello is refused unread, as Unauthenticated.
    let big = set(b"k", &[0u8; 10_000], None);
    assert_eq!(
        error_code(&request(&conn, &big).await),
        ErrorCode::Unauthenticated
    );
    for req in [Request::Ping, Request::Info, get(b"k")] {
        assert_eq!(
            error_code(&request(&conn, &req).await),
            ErrorCode::Unauthenticated,
            "{}",
            req.op_name()
        );
    }
    assert!(matches!(
        request(&conn, &hello(Some("ro-token-1234"))).await,
        Response::Hello(_)
    ));
    assert!(matches!(
        request(&conn, &Request::Ping).await,
        Response::Pong
    ));
    assert_eq!(
        error_code(&request(&conn, &hello(Some("wrong"))).await),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        error_code(&request(&conn, &Request::Ping).await),
        ErrorCode::Unauthenticated
    );
}

/// (11) §1: on SIGTERM the server closes connections with `SHUTTING_DOWN`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_with_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &["--fsync", "never"]);
    let conn = connect(node.addr, &node.fingerprint).await;
    assert!(matches!(
        request(&conn, &Request::Ping).await,
        Response::Pong
    ));
    let status = tokio::task::spawn_blocking(move || node.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(quic_code::SHUTTING_DOWN)
            );
        }
        other => panic!("closed by {other:?}"),
    }
}

/// The request timeout (§1): a frame that does not arrive in time gets
/// `Error(Timeout)` and `STOP_SENDING(REQUEST_TIMEOUT)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_arrives_times_out_with_its_own_code() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[net]\nrequest_timeout_ms = 500\n");
    let node = TestNode::start(&dir.path().join("data"), &["--config", &config]);
    let conn = connect(node.addr, &node.fingerprint).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&[7, 0]).await.unwrap();
    let reply = recv.read_to_end(1 << 20).await.unwrap();
    assert_eq!(error_code(&decode(&reply)), ErrorCode::Timeout);
    let stopped = tokio::time::timeout(Duration::from_secs(30), send.stopped())
        .await
        .expect("the server stops the stream");
    assert_eq!(
        stopped.unwrap(),
        Some(quinn::VarInt::from_u32(quic_code::REQUEST_TIMEOUT))
    );
}
