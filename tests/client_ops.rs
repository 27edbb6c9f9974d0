//! The client library against real `strata-server` processes on loopback,
//! over real QUIC and TLS: every operation, authentication, certificate
//! checks, a concurrent pool, and the circuit breaker across a node restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::node::TestNode;
use strata::cluster::key_slot;
use strata::net::client::{
    Client, ClientConfig, ClientError, DeadlineState, DeleteOutcome, End, ErrorCode, Request,
    Response, Score, ScoreRule, ScoreUpdate, ServerTrust, SetEntry, SetOptions, SetOutcome,
    TtlState, ValueKind,
};
use strata::net::tls::parse_fingerprint;
use strata::proto::RequestError;

/// A generous bound for anything polled (TTL expiry, recovery after restart).
const DEADLINE: Duration = Duration::from_secs(30);

fn pinned(node: &TestNode) -> ClientConfig {
    let pin = parse_fingerprint(&node.fingerprint).expect("node prints a fingerprint");
    ClientConfig::new(node.addr, ServerTrust::Pin(pin))
}

async fn connect(node: &TestNode) -> Client {
    Client::connect(pinned(node)).await.expect("connect")
}

fn text(b: &Bytes) -> &str {
    std::str::from_utf8(b).expect("utf-8 value")
}

fn server_code(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn set_get_versions_and_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;

    let info = client.server_info();
    assert_eq!(info.protocol, 1);
    assert!(info.server.starts_with("strata"), "{}", info.server);
    assert!(info.limits.max_frame_bytes > 0);
    client.ping().await.unwrap();

    assert_eq!(client.get("k").await.unwrap(), None);
    let first = client.set("k", "v1").await.unwrap();
    assert!(first.durability.local_synced, "default fsync is always");
    let entry = client.get("k").await.unwrap().expect("written");
    assert_eq!(text(&entry.value), "v1");
    assert_eq!(entry.version, first.version);
    assert_eq!(entry.ttl_ms, None);

    let second = client.set("k", "v2").await.unwrap();
    assert!(second.version > first.version);

    // A compare-and-set on the old version is refused and names the current one.
    let stale = SetOptions::new().if_version(first.version);
    assert_eq!(
        client.set_with("k", "lost", stale).await.unwrap(),
        SetOutcome::NotWritten {
            current_version: Some(second.version)
        }
    );
    assert_eq!(text(&client.get("k").await.unwrap().unwrap().value), "v2");
    let fresh = SetOptions::new().if_version(second.version);
    let third = match client.set_with("k", "v3", fresh).await.unwrap() {
        SetOutcome::Written(reply) => reply,
        other => panic!("{other:?}"),
    };
    assert!(third.version > second.version);
    // CAS on a missing key: no current version.
    assert_eq!(
        client
            .set_with("nope", "x", SetOptions::new().if_version(third.version))
            .await
            .unwrap(),
        SetOutcome::NotWritten {
            current_version: None
        }
    );

    // If-absent creates only; if-present replaces only.
    assert_eq!(
        client
            .set_with("k", "x", SetOptions::new().if_absent())
            .await
            .unwrap(),
        SetOutcome::NotWritten {
            current_version: Some(third.version)
        }
    );
    assert!(
        client
            .set_with("new", "created", SetOptions::new().if_absent())
            .await
            .unwrap()
            .is_written()
    );
    assert_eq!(
        client
            .set_with("absent", "x", SetOptions::new().if_present())
            .await
            .unwrap(),
        SetOutcome::NotWritten {
            current_version: None
        }
    );
    assert_eq!(client.get("absent").await.unwrap(), None);
    assert!(
        client
            .set_with("new", "replaced", SetOptions::new().if_present())
            .await
            .unwrap()
            .is_written()
    );
    assert_eq!(
        text(&client.get("new").await.unwrap().unwrap().value),
        "replaced"
    );

    // Binary keys and values round-trip untouched.
    let key = Bytes::from_static(b"\x00bin\xff");
    let value = Bytes::from_static(b"\xff\x00\x01");
    client.set(key.clone(), value.clone()).await.unwrap();
    assert_eq!(client.get(key).await.unwrap().unwrap().value, value);

    // A request over the server's limits is refused locally, before sending.
    let huge = vec![b'k'; info.limits.max_key_bytes as usize + 1];
    let err = client.get(huge).await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err}");
    assert_eq!(err.code(), Some(ErrorCode::KeyTooLarge));
}

#[tokio::test]
async fn delete_and_conditional_delete() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;

    client.set("gone", "x").await.unwrap();
    let deleted = client.delete("gone").await.unwrap();
    assert!(deleted.existed);
    assert!(deleted.durability.is_some());
    assert_eq!(client.get("gone").await.unwrap(), None);
    let again = client.delete("gone").await.unwrap();
    assert!(!again.existed);
    assert_eq!(again.durability, None, "nothing written for an absent key");

    let v1 = client.set("cas", "1").await.unwrap().version;
    let v2 = client.set("cas", "2").await.unwrap().version;
    assert_eq!(
        client.delete_if_version("cas", v1).await.unwrap(),
        DeleteOutcome::NotWritten {
            current_version: Some(v2)
        }
    );
    assert!(client.get("cas").await.unwrap().is_some());
    match client.delete_if_version("cas", v2).await.unwrap() {
        DeleteOutcome::Deleted(d) => assert!(d.existed),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.get("cas").await.unwrap(), None);
    // A CAS delete of an absent key is a failed condition (wire-protocol.md §8).
    match client.delete_if_version("cas", v2).await.unwrap() {
        DeleteOutcome::NotWritten {
            current_version: None,
        } => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn expire_persist_and_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;

    assert_eq!(client.ttl("t").await.unwrap(), TtlState::Missing);
    let opts = SetOptions::new().with_ttl(Duration::from_secs(60));
    assert!(client.set_with("t", "v", opts).await.unwrap().is_written());
    match client.ttl("t").await.unwrap() {
        TtlState::ExpiresIn(ms) => assert!(ms > 0 && ms <= 60_000, "{ms}"),
        other => panic!("{other:?}"),
    }
    let ttl = client
        .get("t")
        .await
        .unwrap()
        .unwrap()
        .ttl_ms
        .expect("has a ttl");
    assert!(ttl <= 60_000);

    let persisted = client.persist("t").await.unwrap();
    assert!(persisted.existed && persisted.durability.is_some());
    assert_eq!(client.ttl("t").await.unwrap(), TtlState::Persistent);
    assert_eq!(client.get("t").await.unwrap().unwrap().ttl_ms, None);
    let noop = client.persist("t").await.unwrap();
    assert!(noop.existed);
    assert_eq!(noop.durability, None, "no ttl to remove: nothing written");

    let before = client.get("t").await.unwrap().unwrap().version;
    let expired = client.expire("t", Duration::from_secs(30)).await.unwrap();
    assert!(expired.existed && expired.durability.is_some());
    match client.ttl("t").await.unwrap() {
        TtlState::ExpiresIn(ms) => assert!(ms > 0 && ms <= 30_000, "{ms}"),
        other => panic!("{other:?}"),
    }
    assert!(client.get("t").await.unwrap().unwrap().version > before);

    let missing = client
        .expire("missing", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!missing.existed);
    assert!(!client.persist("missing").await.unwrap().existed);

    // A zero TTL is refused before it is sent.
    let err = client.expire("t", Duration::ZERO).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
}

/// `SetAt`, `ExpireAt` and `Deadline`: a deadline named as a Unix time is
/// the one read back, to the millisecond.
#[tokio::test]
async fn absolute_deadlines_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;

    assert_eq!(client.deadline("d").await.unwrap(), DeadlineState::Missing);
    let at = now + 600_123;
    let opts = SetOptions::new().expiring_at(at);
    assert!(client.set_with("d", "v", opts).await.unwrap().is_written());
    assert_eq!(
        client.deadline("d").await.unwrap(),
        DeadlineState::ExpiresAt(at)
    );
    match client.ttl("d").await.unwrap() {
        TtlState::ExpiresIn(ms) => assert!(ms > 0 && ms <= 600_123, "{ms}"),
        other => panic!("{other:?}"),
    }
    // Conditions apply as for Set.
    let again = client
        .set_with("d", "w", SetOptions::new().expiring_at(at).if_absent())
        .await
        .unwrap();
    assert!(!again.is_written());

    let later = now + 900_456;
    let moved = client.expire_at("d", later).await.unwrap();
    assert!(moved.existed && moved.durability.is_some());
    assert_eq!(
        client.deadline("d").await.unwrap(),
        DeadlineState::ExpiresAt(later)
    );
    assert!(!client.expire_at("missing", later).await.unwrap().existed);
    client.persist("d").await.unwrap();
    assert_eq!(
        client.deadline("d").await.unwrap(),
        DeadlineState::Persistent
    );

    // A deadline already past: the write succeeds and the key is gone.
    let past = SetOptions::new().expiring_at(now - 1_000);
    assert!(client.set_with("p", "v", past).await.unwrap().is_written());
    assert_eq!(client.get("p").await.unwrap(), None);
    assert!(client.expire_at("d", 1).await.unwrap().existed);
    assert_eq!(client.get("d").await.unwrap(), None);
    assert_eq!(client.deadline("d").await.unwrap(), DeadlineState::Missing);

    // 0 would mean "never" in the stored format: refused before it is sent.
    let zero = client
        .set_with("z", "v", SetOptions::new().expiring_at(0))
        .await;
    assert_eq!(zero.unwrap_err().code(), Some(ErrorCode::BadRequest));
    let zero = client.expire_at("z", 0).await.unwrap_err();
    assert_eq!(zero.code(), Some(ErrorCode::BadRequest), "{zero}");
}

#[tokio::test]
async fn ttl_expires_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;

    let short = SetOptions::new().with_ttl(Duration::from_millis(300));
    let long = SetOptions::new().with_ttl(Duration::from_secs(600));
    assert!(
        client
            .set_with("short", "s", short)
            .await
            .unwrap()
            .is_written()
    );
    assert!(
        client
            .set_with("long", "l", long)
            .await
            .unwrap()
            .is_written()
    );

    let start = Instant::now();
    while client.get("short").await.unwrap().is_some() {
        assert!(start.elapsed() < DEADLINE, "a 300 ms TTL never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Expired means absent to every operation.
    assert_eq!(client.ttl("short").await.unwrap(), TtlState::Missing);
    assert_eq!(client.exists(["short", "long"]).await.unwrap(), 1);
    assert!(client.get("long").await.unwrap().is_some());
}

#[tokio::test]
async fn incr_and_not_an_integer() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;

    assert_eq!(
        client.incr("n", 5).await.unwrap(),
        5,
        "a missing key counts as 0"
    );
    assert_eq!(client.incr("n", -7).await.unwrap(), -2);
    let done = client.incr_with("n", 1, None).await.unwrap();
    assert_eq!(done.value, -1);
    assert!(done.durability.local_synced);
    assert_eq!(text(&client.get("n").await.unwrap().unwrap().value), "-1");

    client.set("word", "abc").await.unwrap();
    let err = client.incr("word", 1).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAnInteger), "{err}");
    assert!(err.to_string().contains("not_an_integer"), "{err}");
    assert_eq!(
        text(&client.get("word").await.unwrap().unwrap().value),
        "abc"
    );

    client.set("max", i64::MAX.to_string()).await.unwrap();
    assert_eq!(
        server_code(client.incr("max", 1).await),
        ErrorCode::Overflow
    );
}

#[tokio::test]
async fn set_many_is_atomic_and_multi_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;

    let reply = client
        .set_many([("a", "1"), ("b", "2"), ("c", "3")])
        .await
        .unwrap();
    let got = client
        .get_many(["a", "b", "c", "missing", "a"])
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
    for (slot, want) in got.iter().zip(["1", "2", "3"]) {
        let entry = slot.as_ref().expect("written");
        assert_eq!(text(&entry.value), want);
        assert_eq!(entry.version, reply.version, "one write, one version");
    }
    assert_eq!(got[3], None);
    assert_eq!(got[4], got[0], "duplicates allowed, in request order");
    assert_eq!(client.exists(["a", "b", "missing", "a"]).await.unwrap(), 3);

    // Per-entry TTLs.
    let entries = vec![SetEntry {
        key: Bytes::from_static(b"ttl-entry"),
        value: Bytes::from_static(b"x"),
        ttl_ms: Some(60_000),
    }];
    client.set_many_with(entries, None).await.unwrap();
    assert!(matches!(
        client.ttl("ttl-entry").await.unwrap(),
        TtlState::ExpiresIn(_)
    ));

    // An empty batch is refused before it is sent.
    let empty: [(&'static str, &'static str); 0] = [];
    let err = client.set_many(empty).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn scan_pages_with_cursor_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;

    let mut expected: Vec<String> = (0..25).map(|i| format!("scan:{i:02}")).collect();
    for chunk in expected.chunks(10) {
        client
            .set_many(chunk.iter().map(|k| (k.clone(), format!("value of {k}"))))
            .await
            .unwrap();
    }
    client.set("other:1", "x").await.unwrap();
    client.set("scam", "x").await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = client.scan("scan:", cursor, 10).await.unwrap();
        pages += 1;
        assert!(page.entries.len() <= 10);
        for (key, entry) in page.entries {
            let key = String::from_utf8(key.to_vec()).unwrap();
            assert_eq!(text(&entry.value), format!("value of {key}"));
            seen.push(key);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 100, "scan does not end");
    }
    assert!(pages >= 3, "25 keys in pages of 10 take at least 3 pages");
    // Slot order: by Redis Cluster slot, then bytewise.
    expected.sort_by_key(|k| (key_slot(k.as_bytes()), k.clone()));
    assert_eq!(seen, expected, "every key once, in slot order");

    let all = client.scan_all("scan:").await.unwrap();
    assert_eq!(all.len(), 25);
    assert_eq!(client.scan_all("").await.unwrap().len(), 27);
    assert!(client.scan_all("zzz").await.unwrap().is_empty());

    let info = client.info().await.unwrap();
    assert!(!info.is_empty());
    assert!(info.iter().any(|(k, _)| k == "version"), "{info:?}");
}

const TOKENS: [&str; 4] = [
    "--token",
    "read-only:ro-token-123",
    "--token",
    "read-write:rw-token-123",
];

#[tokio::test]
async fn lists_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;
    let texts = |values: Vec<Bytes>| {
        values
            .iter()
            .map(|v| text(v).to_string())
            .collect::<Vec<_>>()
    };

    // Push reports the length and what the write reached.
    let reply = client
        .request(Request::Push {
            key: Bytes::from("jobs"),
            end: End::Left,
            values: vec![Bytes::from("a"), Bytes::from("b")],
            only_if_exists: false,
            ack: None,
        })
        .await
        .unwrap();
    let Response::Length {
        len: 2,
        durability: Some(d),
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert!(d.local_synced, "default fsync is always");
    assert_eq!(
        client.push("jobs", End::Right, ["c"], false).await.unwrap(),
        3
    );
    assert_eq!(
        client.push("none", End::Left, ["x"], true).await.unwrap(),
        0
    );
    assert_eq!(
        client.kind("none").await.unwrap(),
        None,
        "pushx made nothing"
    );
    assert_eq!(
        texts(client.list_range("jobs", 0, -1).await.unwrap()),
        ["b", "a", "c"]
    );
    assert_eq!(client.list_len("jobs").await.unwrap(), 3);
    assert_eq!(
        text(&client.list_index("jobs", -1).await.unwrap().unwrap()),
        "c"
    );
    assert_eq!(client.list_index("jobs", 3).await.unwrap(), None);
    assert_eq!(client.kind("jobs").await.unwrap(), Some(ValueKind::List));

    // Kinds do not mix.
    assert_eq!(server_code(client.get("jobs").await), ErrorCode::WrongType);
    client.set("s", "v").await.unwrap();
    assert_eq!(
        server_code(client.push("s", End::Left, ["x"], false).await),
        ErrorCode::WrongType
    );
    assert_eq!(
        server_code(client.list_len("s").await),
        ErrorCode::WrongType
    );
    assert_eq!(client.kind("s").await.unwrap(), Some(ValueKind::String));

    // ScanKeys lists both kinds; Scan, which carries values, only strings.
    let page = client.scan_keys("", None, 0, None).await.unwrap();
    let mut keys: Vec<_> = page.keys.iter().map(|(k, kind)| (text(k), *kind)).collect();
    keys.sort_by_key(|(k, _)| *k);
    assert_eq!(keys, [("jobs", ValueKind::List), ("s", ValueKind::String)]);
    let lists = client
        .scan_keys("", None, 0, Some(ValueKind::List))
        .await
        .unwrap();
    assert_eq!(lists.keys, [(Bytes::from("jobs"), ValueKind::List)]);
    let all = client.scan_all("").await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");

    // Pop in the order taken; the emptied list is gone.
    assert_eq!(
        texts(client.pop("jobs", End::Right, 2).await.unwrap().unwrap()),
        ["c", "a"]
    );
    assert_eq!(
        client.pop("jobs", End::Left, 0).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(
        texts(client.pop("jobs", End::Left, 5).await.unwrap().unwrap()),
        ["b"]
    );
    assert_eq!(client.pop("jobs", End::Left, 1).await.unwrap(), None);
    assert_eq!(client.exists(["jobs"]).await.unwrap(), 0);

    // The server's argument checks, made by the client first.
    let empty = client
        .push("l", End::Left, Vec::<Bytes>::new(), false)
        .await;
    assert!(
        matches!(
            empty,
            Err(ClientError::InvalidRequest(RequestError::EmptyBatch { .. }))
        ),
        "{empty:?}"
    );
    let max = client.server_info().limits.max_keys_per_request;
    let many = client.pop("l", End::Left, max + 1).await;
    assert!(
        matches!(
            many,
            Err(ClientError::InvalidRequest(
                RequestError::TooManyKeys { .. }
            ))
        ),
        "{many:?}"
    );
}

#[tokio::test]
async fn sets_and_hashes_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;
    let (set, hash) = (ValueKind::Set, ValueKind::Hash);
    let member = |m: &str| (Bytes::from(m.to_string()), Bytes::new());
    let field = |f: &str, v: &str| (Bytes::from(f.to_string()), Bytes::from(v.to_string()));
    let reply = client
        .request(Request::AddMembers {
            key: Bytes::from("s"),
            kind: set,
            members: vec![member("b"), member("a")],
            only_new: false,
            ack: None,
        })
        .await
        .unwrap();
    let Response::Counted {
        count: 2,
        durability: Some(d),
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert!(d.local_synced);
    assert_eq!(
        client
            .add_members("s", set, vec![member("a")], false)
            .await
            .unwrap(),
        0
    );
    assert_eq!(client.count_members("s", set).await.unwrap(), 2);
    assert_eq!(client.kind("s").await.unwrap(), Some(ValueKind::Set));
    let page = client.scan_members("s", set, None, 1).await.unwrap();
    assert_eq!(page, [member("a")]);
    let page = client
        .scan_members("s", set, Some(Bytes::from("a")), 0)
        .await
        .unwrap();
    assert_eq!(page, [member("b")]);
    assert_eq!(
        client.pop_members("s", 1).await.unwrap(),
        Some(vec![Bytes::from("a")])
    );

    client
        .add_members("h", hash, vec![field("n", "1"), field("m", "x")], false)
        .await
        .unwrap();
    assert_eq!(client.incr_field("h", "n", 41).await.unwrap(), 42);
    assert_eq!(
        client
            .member_values("h", hash, vec![Bytes::from("n"), Bytes::from("z")])
            .await
            .unwrap(),
        [Some(Bytes::from("42")), None]
    );
    assert_eq!(
        client
            .remove_members("h", hash, vec![Bytes::from("m"), Bytes::from("m")])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        server_code(client.add_members("h", set, vec![member("x")], false).await),
        ErrorCode::WrongType
    );
    assert_eq!(
        server_code(client.pop_members("h", 1).await),
        ErrorCode::WrongType
    );
    // A set member carries no value; the kind must be a set or a hash.
    assert_eq!(
        server_code(
            client
                .add_members("s", set, vec![field("m", "v")], false)
                .await
        ),
        ErrorCode::BadRequest
    );
    let wrong_kind = client.count_members("s", ValueKind::List).await;
    assert!(
        matches!(
            wrong_kind,
            Err(ClientError::InvalidRequest(RequestError::NotMembers { .. }))
        ),
        "{wrong_kind:?}"
    );
    let keys = client.scan_keys("", None, 0, None).await.unwrap();
    assert_eq!(keys.keys.len(), 2, "{keys:?}");
}

#[tokio::test]
async fn sorted_sets_over_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = connect(&node).await;
    let zset = ValueKind::SortedSet;
    let m = |name: &str| Bytes::from(name.to_string());
    let reply = client
        .request(Request::AddScores {
            key: m("z"),
            members: vec![
                (m("b"), Score(2.0)),
                (m("a"), Score(1.0)),
                (m("c"), Score(-3.5)),
            ],
            exists: None,
            update: ScoreUpdate::Any,
            count_changed: false,
            ack: None,
        })
        .await
        .unwrap();
    let Response::Counted {
        count: 3,
        durability: Some(d),
    } = reply
    else {
        panic!("{reply:?}")
    };
    assert!(d.local_synced);
    assert_eq!(client.kind("z").await.unwrap(), Some(zset));
    assert_eq!(client.count_members("z", zset).await.unwrap(), 3);
    let all = client.score_range("z", 0, -1, End::Left).await.unwrap();
    assert_eq!(all, [(m("c"), -3.5), (m("a"), 1.0), (m("b"), 2.0)]);
    let top = client.score_range("z", 0, 0, End::Right).await.unwrap();
    assert_eq!(top, [(m("b"), 2.0)]);
    // GT refuses a lower score; the refused increment writes nothing.
    let gt = ScoreRule {
        exists: None,
        update: ScoreUpdate::Greater,
    };
    assert_eq!(client.incr_score("z", "b", -1.0, gt).await.unwrap(), None);
    let rule = ScoreRule::default();
    assert_eq!(
        client.incr_score("z", "a", 0.5, rule).await.unwrap(),
        Some(1.5)
    );
    let changed = client
        .add_scores("z", vec![(m("a"), 9.0), (m("d"), 0.0)], rule, true)
        .await
        .unwrap();
    assert_eq!(changed, 2, "one changed, one new");
    assert_eq!(
        client.scores("z", vec![m("a"), m("x")]).await.unwrap(),
        [Some(9.0), None]
    );
    let popped = client.pop_scores("z", End::Left, 2).await.unwrap();
    assert_eq!(popped, [(m("c"), -3.5), (m("d"), 0.0)]);
    let removed = client
        .remove_members("z", zset, vec![m("a"), m("b")])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(client.kind("z").await.unwrap(), None, "emptied, so gone");
    assert!(
        client
            .pop_scores("z", End::Right, 1)
            .await
            .unwrap()
            .is_empty()
    );
    // NaN never reaches the server; set and hash requests refuse the kind.
    let nan = client
        .add_scores("z", vec![(m("a"), f64::NAN)], rule, false)
        .await;
    assert!(
        matches!(
            nan,
            Err(ClientError::InvalidRequest(RequestError::NanScore { .. }))
        ),
        "{nan:?}"
    );
    let wrong_kind = client.member_values("z", zset, vec![m("a")]).await;
    assert!(
        matches!(
            wrong_kind,
            Err(ClientError::InvalidRequest(RequestError::NotMembers { .. }))
        ),
        "{wrong_kind:?}"
    );
    client.set("str", "v").await.unwrap();
    let wrong_type = client.scores("str", vec![m("a")]).await;
    assert_eq!(server_code(wrong_type), ErrorCode::WrongType);
}

/// A list deleted with more elements than its delete removes at once
/// leaves them on disk until the node's reclaim pass deletes them.
#[tokio::test]
async fn a_deleted_long_list_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[store]\nreclaim_interval_ms = 100\n").unwrap();
    let node = TestNode::start(
        &dir.path().join("node"),
        &["--config", config.to_str().unwrap()],
    );
    let client = connect(&node).await;
    let values: Vec<Bytes> = (0..10_001).map(|i| Bytes::from(i.to_string())).collect();
    for chunk in values.chunks(1000) {
        client
            .push("big", End::Right, chunk.to_vec(), false)
            .await
            .unwrap();
    }
    assert_eq!(client.list_len("big").await.unwrap(), 10_001);
    client.delete("big").await.unwrap();
    assert_eq!(client.kind("big").await.unwrap(), None);
    let stored = |pairs: Vec<(String, String)>| {
        let keys = pairs.into_iter().find(|(k, _)| k == "keys").expect("keys");
        keys.1.parse::<u64>().unwrap()
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = stored(client.digest(0).await.unwrap());
        if left == 0 {
            break;
        }
        assert!(left <= 10_001, "{left}");
        assert!(Instant::now() < deadline, "{left} elements never reclaimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tokens_authenticate_and_authorize() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &TOKENS);

    let err = Client::connect(pinned(&node)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated), "{err}");
    let err = Client::connect(pinned(&node).with_token("wrong-token"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated), "{err}");
    assert!(
        !err.to_string().contains("wrong-token"),
        "the token is never echoed: {err}"
    );

    let rw = Client::connect(pinned(&node).with_token("rw-token-123"))
        .await
        .unwrap();
    rw.set("auth", "yes").await.unwrap();

    let ro = Client::connect(pinned(&node).with_token("ro-token-123"))
        .await
        .unwrap();
    assert_eq!(text(&ro.get("auth").await.unwrap().unwrap().value), "yes");
    assert_eq!(
        server_code(ro.set("auth", "no").await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        server_code(ro.incr("n", 1).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(text(&rw.get("auth").await.unwrap().unwrap().value), "yes");
}

#[tokio::test]
async fn certificate_must_match_the_pin_or_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);

    // A pin of another certificate: the handshake fails, nothing is sent.
    let mut wrong = parse_fingerprint(&node.fingerprint).unwrap();
    wrong[0] ^= 0xff;
    let config = ClientConfig::new(node.addr, ServerTrust::Pin(wrong)).with_breaker_failures(0);
    let err = Client::connect(config).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");

    // The right pin works.
    connect(&node).await.ping().await.unwrap();

    // The node's self-signed certificate as a CA, checked for the name.
    let cert = dir.path().join("tls/server.crt");
    let by_ca = ClientConfig::new(node.addr, ServerTrust::CaFile(cert.clone()));
    Client::connect(by_ca).await.unwrap().ping().await.unwrap();
    let other_name =
        ClientConfig::new(node.addr, ServerTrust::CaFile(cert)).with_server_name("example.com");
    let err = Client::connect(other_name).await.unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");

    // A CA file that does not exist is a configuration error.
    let missing = ClientConfig::new(node.addr, ServerTrust::CaFile(dir.path().join("nope.pem")));
    let err = Client::connect(missing).await.unwrap_err();
    assert!(matches!(err, ClientError::TlsConfig(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_share_a_pool() {
    const TASKS: usize = 64;
    const SETS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let client = Client::connect(pinned(&node).with_connections(2))
        .await
        .unwrap();

    let mut handles = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..SETS {
                client
                    .set(format!("c:{task}:{i}"), format!("{task}-{i}"))
                    .await
                    .unwrap_or_else(|e| panic!("task {task} set {i}: {e}"));
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    for task in 0..TASKS {
        let keys: Vec<String> = (0..SETS).map(|i| format!("c:{task}:{i}")).collect();
        let got = client.get_many(keys).await.unwrap();
        for (i, entry) in got.into_iter().enumerate() {
            let entry = entry.unwrap_or_else(|| panic!("c:{task}:{i} missing"));
            assert_eq!(text(&entry.value), format!("{task}-{i}"));
        }
    }
    let total = client.scan_all("c:").await.unwrap().len();
    assert_eq!(total, TASKS * SETS);
    let metrics = node.metrics();
    assert!(
        metrics.lines().any(|l| l == "strata_connections_total 2"),
        "the pool uses exactly 2 connections:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("connections"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn breaker_opens_when_the_node_dies_and_recovers_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let cooldown = Duration::from_millis(500);
    let config = pinned(&node)
        .with_connect_timeout(Duration::from_millis(300))
        .with_request_timeout(Duration::from_millis(300))
        .with_retries(1)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(20))
        .with_breaker_failures(3)
        .with_breaker_cooldown(cooldown);
    let client = Client::connect(config).await.unwrap();
    client.set("survivor", "1").await.unwrap();

    node.kill();
    let mut errors = Vec::new();
    let fast = loop {
        let started = Instant::now();
        match client.get("survivor").await {
            Ok(v) => panic!("a killed node answered: {v:?}"),
            Err(ClientError::CircuitOpen { failures, retry_in }) => {
                assert!(failures >= 3, "{failures}");
                assert!(retry_in <= cooldown);
                break started.elapsed();
            }
            Err(e) => errors.push(e),
        }
        assert!(errors.len() < 10, "the breaker never opened: {errors:?}");
    };
    assert!(
        !errors.is_empty(),
        "the first calls fail for real before the breaker opens"
    );
    for e in &errors {
        assert!(
            matches!(
                e,
                ClientError::Timeout { .. }
                    | ClientError::Connect { .. }
                    | ClientError::ConnectionLost { .. }
            ),
            "{e}"
        );
    }
    // `fast` came back as CircuitOpen: refused by the client's own breaker,
    // without a send (its latency is a benchmark's business, not a test's).
    let _ = fast;
    // Still open: writes fail fast too, without being sent.
    assert!(matches!(
        client.incr("n", 1).await,
        Err(ClientError::CircuitOpen { .. })
    ));

    node.restart();
    let start = Instant::now();
    loop {
        match client.get("survivor").await {
            Ok(Some(entry)) => {
                assert_eq!(text(&entry.value), "1");
                break;
            }
            Ok(None) => panic!("an acknowledged write was lost"),
            Err(e) => {
                assert!(start.elapsed() < DEADLINE, "no recovery after restart: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Closed again: writes go through on the new connection.
    client.set("after", "restart").await.unwrap();
    assert_eq!(client.incr("n", 1).await.unwrap(), 1);
}

#[tokio::test]
async fn reconnects_lazily_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let config = pinned(&node)
        .with_request_timeout(Duration::from_millis(500))
        .with_retries(3);
    let client = Client::connect(config).await.unwrap();
    let written = client.set("k", "v").await.unwrap();

    node.restart();
    // The old connection is dead; an idempotent read is retried on a new one.
    let entry = client.get("k").await.unwrap().expect("durable");
    assert_eq!(entry.version, written.version);
    assert_eq!(client.server_info().protocol, 1);
    assert_eq!(client.incr("counter", 2).await.unwrap(), 2);
    let counter = client.get("counter").await.unwrap().expect("written");
    assert!(counter.version > written.version);
}
