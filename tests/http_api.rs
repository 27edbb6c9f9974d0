#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The HTTP API (proto-docs/http-api.md) against real server processes,
//! spoken through a minimal HTTP/1.1 client on a plain TCP stream.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{Member, admin, gen_certs};
use common::node::TestNode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` name of a JSON error reply, checking its status.
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let body = self.json();
        assert!(body["message"].is_string(), "{body}");
        body["error"].as_str().unwrap().to_string()
    }
}

/// Sends `head` (request line and headers, without the blank line) and
/// `body`, then reads the whole response (the server closes after it).
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = format!("{head}\r\nhost: test\r\nconnection: close\r\n\r\n").into_bytes();
    out.extend_from_slice(body);
    s.write_all(&out).await.unwrap();
    let mut bytes = Vec::new();
    // A server that refuses a request before its body may reset the
    // connection after its reply: keep what arrived.
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Reply {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
    let head = std::str::from_utf8(&bytes[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    }
}

/// A request with `headers` (`name: value` lines) and a body.
async fn call(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &[u8]) -> Reply {
    let mut head = format!("{method} {path} HTTP/1.1");
    for h in headers {
        head.push_str("\r\n");
        head.push_str(h);
    }
    if method == "PUT" {
        head.push_str(&format!("\r\ncontent-length: {}", body.len()));
    }
    raw(addr, &head, body).await
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, "GET", path, &[], b"").await
}

async fn put(addr: SocketAddr, path: &str, headers: &[&str], body: &[u8]) -> Reply {
    call(addr, "PUT", path, headers, body).await
}

/// The percent-encoding the API documents for keys.
fn enc(key: &[u8]) -> String {
    key.iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn etag(r: &Reply) -> String {
    r.header("etag").expect("an ETag").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_round_trip_with_versions_ttl_and_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let a = node.metrics_addr;

    let r = get(a, "/healthz").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"ok\n"[..]));
    let r = get(a, "/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ready"], true);

    // Binary key and value, both ways.
    let key: &[u8] = b"bin/\x00\xff key+%/\xc3";
    let value: Vec<u8> = (0..=255u8).chain(*b"\r\n\r\n").collect();
    let path = format!("/v1/keys/{}", enc(key));
    let r = put(a, &path, &[], &value).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v1 = etag(&r);
    assert_eq!(r.json()["version"].to_string(), v1.trim_matches('"'));
    assert_eq!(r.json()["durability"]["requested"], "async");
    let r = get(a, &path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, value);
    assert_eq!(etag(&r), v1);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("x-strata-ttl-ms"), None);
    // The same key written with a literal `/` (the path keeps every segment).
    assert_eq!(
        get(a, "/v1/keys/bin%2F%00%FF%20key%2B%25/%C3").await.body,
        value
    );
    let r = call(a, "HEAD", &path, &[], b"").await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    let r = call(a, "GET", &path, &[&format!("if-none-match: {v1}")], b"").await;
    assert_eq!(r.status, 304);

    // Compare-and-set on the version.
    let r = put(a, &path, &["if-none-match: *"], b"x").await;
    assert_eq!(r.error(412), "ConditionFailed");
    assert_eq!(
        r.json()["current_version"].to_string(),
        v1.trim_matches('"')
    );
    let r = put(a, &path, &["if-match: \"999999\""], b"x").await;
    assert_eq!(r.error(412), "ConditionFailed");
    let r = put(a, &path, &[&format!("if-match: {v1}")], b"v2").await;
    assert_eq!(r.status, 200);
    let v2 = etag(&r);
    assert_ne!(v1, v2);
    let r = put(a, &path, &[&format!("if-match: {v1}")], b"v3").await;
    assert_eq!(r.error(412), "ConditionFailed");
    assert_eq!(get(a, &path).await.body, b"v2");

    // Only if absent / present, by header or query.
    let r = put(a, "/v1/keys/fresh", &["if-none-match: *"], b"1").await;
    assert_eq!(r.status, 201);
    let r = put(a, "/v1/keys/fresh?if=absent", &[], b"2").await;
    assert_eq!(r.error(412), "ConditionFailed");
    let r = put(a, "/v1/keys/never?if=present", &[], b"2").await;
    assert_eq!(r.error(412), "ConditionFailed");
    assert_eq!(r.json()["current_version"], Value::Null);
    let r = put(a, "/v1/keys/never?if=present", &["if-none-match: *"], b"2").await;
    assert_eq!(r.error(400), "BadRequest");

    // TTL by query and by header; the remaining TTL comes back.
    let r = put(a, "/v1/keys/ttl-q?ttl_ms=600000", &[], b"t").await;
    assert_eq!(r.status, 200);
    let left: u64 = get(a, "/v1/keys/ttl-q")
        .await
        .header("x-strata-ttl-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(left > 0 && left <= 600_000, "{left}");
    put(a, "/v1/keys/ttl-h", &["x-strata-ttl-ms: 600000"], b"t").await;
    assert!(
        get(a, "/v1/keys/ttl-h")
            .await
            .header("x-strata-ttl-ms")
            .is_some()
    );
    let r = put(a, "/v1/keys/ttl-0?ttl_ms=0", &[], b"t").await;
    assert_eq!(r.error(400), "BadRequest");
    let r = put(a, "/v1/keys/ttl-2?ttl_ms=5", &["x-strata-ttl-ms: 5"], b"t").await;
    assert_eq!(r.error(400), "BadRequest");
    let r = put(a, "/v1/keys/typo?ttl=5", &[], b"t").await;
    assert_eq!(r.error(400), "BadRequest");

    // Ack policies parse as the config's text; a node without replicas
    // holds every write as async.
    let r = put(a, "/v1/keys/acked?ack=sync:500", &[], b"a").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["durability"]["requested"], "async");
    let r = put(a, "/v1/keys/acked?ack=sometimes", &[], b"a").await;
    assert_eq!(r.error(400), "BadRequest");

    // Deletes: conditional, then plain, then of nothing.
    let r = call(a, "DELETE", &path, &[&format!("if-match: {v1}")], b"").await;
    assert_eq!(r.error(412), "ConditionFailed");
    let r = call(a, "DELETE", &path, &[&format!("if-match: {v2}")], b"").await;
    assert_eq!((r.status, r.body.len()), (204, 0));
    assert_eq!(get(a, &path).await.error(404), "NotFound");
    let r = call(a, "DELETE", &path, &[], b"").await;
    assert_eq!(r.error(404), "NotFound");

    // Info as JSON; no cluster outside cluster mode; metrics unchanged.
    let info = get(a, "/v1/info").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["role"], "primary");
    assert!(
        info.json()["applied_seq"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 6
    );
    assert_eq!(get(a, "/v1/cluster").await.error(400), "BadRequest");
    assert_eq!(get(a, "/nowhere").await.error(404), "NotFound");
    let r = get(a, "/metrics").await;
    assert_eq!(
        r.header("content-type"),
        Some(strata::metrics::CONTENT_TYPE)
    );
    let text = node.metrics();
    assert!(text.contains("strata_request_duration_seconds"));
    // HTTP traffic is counted by endpoint and status, never by key.
    let count = |series: &str| common::cluster::metric(&text, series).unwrap_or(0.0);
    assert!(count(r#"strata_http_requests_total{endpoint="key",code="412"}"#) >= 6.0);
    assert!(count(r#"strata_http_requests_total{endpoint="healthz",code="200"}"#) >= 1.0);
    assert!(count("strata_http_open_connections") >= 1.0);
    assert!(!text.contains("bin/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_page_through_every_key_with_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let a = node.metrics_addr;
    let mut want: Vec<Vec<u8>> = (0..25)
        .map(|i| format!("scan/{i:02}").into_bytes())
        .collect();
    want.push(b"scan/\x00\xff bin".to_vec());
    for key in &want {
        assert_eq!(
            put(a, &format!("/v1/keys/{}", enc(key)), &[], b"12345")
                .await
                .status,
            200
        );
    }
    put(a, "/v1/keys/other", &[], b"x").await;

    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/v1/keys?prefix=scan%2F&limit=10".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = get(a, &path).await;
        assert_eq!(r.status, 200, "{r:?}");
        let page = r.json();
        let keys = page["keys"].as_array().unwrap();
        assert!(keys.len() <= 10);
        pages += 1;
        for k in keys {
            assert_eq!(k["size"], 5);
            assert!(k["version"].as_u64().unwrap() > 0);
            // The documented encoding is lossless: decode it back.
            let text = k["key"].as_str().unwrap();
            got.push(percent_decode(text));
            // And it addresses the key as it is.
            assert_eq!(get(a, &format!("/v1/keys/{text}")).await.body, b"12345");
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert!(pages >= 3, "{pages} pages");
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(get(a, "/v1/keys?limit=x").await.error(400), "BadRequest");
    assert_eq!(get(a, "/v1/keys?prefix=%zz").await.error(400), "BadRequest");
}

fn percent_decode(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_carry_their_roles() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path(),
        &[
            "--token",
            "read-only:ro-token-1",
            "--token",
            "read-write:rw-token-1",
            "--token",
            "admin:ad-token-1",
        ],
    );
    let a = node.metrics_addr;
    let (ro, rw) = (
        "authorization: Bearer ro-token-1",
        "authorization: Bearer rw-token-1",
    );

    // Probes and metrics need no token.
    assert_eq!(get(a, "/healthz").await.status, 200);
    assert_eq!(get(a, "/readyz").await.status, 200);
    assert_eq!(get(a, "/metrics").await.status, 200);

    let r = put(a, "/v1/keys/k", &[], b"v").await;
    assert_eq!(r.error(401), "Unauthenticated");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(
        put(a, "/v1/keys/k", &["authorization: Bearer nope"], b"v")
            .await
            .error(401),
        "Unauthenticated"
    );
    assert_eq!(
        put(a, "/v1/keys/k", &["authorization: Basic eDp5"], b"v")
            .await
            .error(401),
        "Unauthenticated"
    );
    assert_eq!(
        put(a, "/v1/keys/k", &[ro], b"v").await.error(403),
        "PermissionDenied"
    );
    assert_eq!(put(a, "/v1/keys/k", &[rw], b"v").await.status, 200);
    assert_eq!(get(a, "/v1/keys/k").await.error(401), "Unauthenticated");
    assert_eq!(call(a, "GET", "/v1/keys/k", &[ro], b"").await.body, b"v");
    assert_eq!(call(a, "GET", "/v1/keys", &[ro], b"").await.status, 200);
    assert_eq!(call(a, "GET", "/v1/info", &[ro], b"").await.status, 200);
    assert_eq!(get(a, "/v1/info").await.error(401), "Unauthenticated");
    assert_eq!(
        call(a, "DELETE", "/v1/keys/k", &[ro], b"").await.error(403),
        "PermissionDenied"
    );
    let r = call(
        a,
        "DELETE",
        "/v1/keys/k",
        &["authorization: Bearer ad-token-1"],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(
        dir.path(),
        &["--max-value-bytes", "1024", "--max-key-bytes", "64"],
    );
    let a = node.metrics_addr;

    // A declared body over the value limit: refused before it is sent.
    let r = raw(
        a,
        "PUT /v1/keys/big HTTP/1.1\r\ncontent-length: 100000000",
        b"",
    )
    .await;
    assert_eq!(r.error(413), "ValueTooLarge");
    // A chunked one: refused once the limit is passed.
    let mut chunked = format!("{:x}\r\n", 2000).into_bytes();
    chunked.extend(std::iter::repeat_n(b'x', 2000));
    chunked.extend_from_slice(b"\r\n");
    let r = raw(
        a,
        "PUT /v1/keys/big HTTP/1.1\r\ntransfer-encoding: chunked",
        &chunked,
    )
    .await;
    assert_eq!(r.error(413), "ValueTooLarge");
    assert_eq!(
        put(a, "/v1/keys/fits", &[], &[b'x'; 1024]).await.status,
        200
    );
    assert_eq!(get(a, "/v1/keys/big").await.error(404), "NotFound");

    // Keys: bad percent-encoding, raw non-UTF-8 bytes, too long, empty.
    assert_eq!(get(a, "/v1/keys/a%zz").await.error(400), "BadRequest");
    assert_eq!(get(a, "/v1/keys/a%4").await.error(400), "BadRequest");
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /v1/keys/\xff\xfe HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(
        out.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    let long = "k".repeat(65);
    assert_eq!(
        get(a, &format!("/v1/keys/{long}")).await.error(400),
        "KeyTooLarge"
    );
    assert_eq!(get(a, "/v1/keys/").await.error(404), "NotFound");

    // Methods no endpoint takes.
    assert_eq!(
        call(a, "PATCH", "/v1/keys/k", &[], b"").await.error(405),
        "MethodNotAllowed"
    );
    assert_eq!(
        call(a, "BREW", "/v1/keys/k", &[], b"").await.error(405),
        "MethodNotAllowed"
    );
    assert_eq!(call(a, "POST", "/healthz", &[], b"").await.status, 405);

    // Heads over the bounds.
    let huge = format!("x-pad: {}", "p".repeat(200 << 10));
    assert_eq!(call(a, "GET", "/healthz", &[&huge], b"").await.status, 431);
    let many: Vec<String> = (0..100).map(|i| format!("x-h{i}: 1")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(call(a, "GET", "/healthz", &many, b"").await.status, 431);
    // Garbage instead of HTTP.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"\x16\x03\x01\x00\xa5garbage\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert!(
        out.is_empty() || out.starts_with(b"HTTP/1.1 400"),
        "{out:?}"
    );

    // The node is unharmed.
    assert_eq!(get(a, "/healthz").await.status, 200);
    assert_eq!(get(a, "/v1/keys/fits").await.body.len(), 1024);
}

/// Writes `n` values of `len` bytes that do not compress away.
async fn fill(a: SocketAddr, n: u32, len: usize) {
    for i in 0..n {
        let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let value: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(
            put(a, &format!("/v1/keys/fill-{i:05}"), &[], &value)
                .await
                .status,
            200
        );
    }
}

/// Polls `/readyz` until it answers `status`; `within` only bounds a
/// test that would otherwise hang (readiness is only visible by asking).
async fn await_ready(a: SocketAddr, status: u16, within: Duration) -> Reply {
    let deadline = Instant::now() + within;
    loop {
        let r = get(a, "/readyz").await;
        if r.status == status {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "readyz never answered {status}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_in_a_full_sync_is_not_ready() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    // ~2 MB sent at 400 kB/s: the full sync lasts seconds.
    let primary = Member::start(root.path(), &certs, "p", &["--full-sync-rate", "400000"]);
    let pa = primary.node.metrics_addr;
    fill(pa, 500, 4096).await;
    let upstream = primary.repl_addr.to_string();
    let r1 = Member::start(root.path(), &certs, "r1", &["--replica-of", &upstream]);
    let ra = r1.node.metrics_addr;
    // Polled: the sync's start is only visible by asking (a log line is
    // written a moment before the state it reports).
    let r = await_ready(ra, 503, Duration::from_secs(60)).await;
    assert_eq!(r.json()["ready"], false);
    assert_eq!(r.json()["error"], "Unavailable");
    assert!(
        r.json()["message"].as_str().unwrap().contains("full sync"),
        "{r:?}"
    );
    assert!(
        !r1.node
            .log_lines()
            .iter()
            .any(|l| l.contains("full sync installed"))
    );
    // Reads wait for the sync too.
    assert_eq!(
        get(ra, "/v1/keys/fill-00001").await.error(503),
        "Unavailable"
    );

    await_ready(ra, 200, Duration::from_secs(120)).await;
    assert_eq!(get(ra, "/v1/keys/fill-00499").await.body.len(), 4096);
    // A replica sends writers to its primary.
    let r = put(ra, "/v1/keys/w", &[], b"x").await;
    assert_eq!(r.error(421), "ReadOnlyReplica");
    assert!(r.json()["leader_hint"].is_string(), "{r:?}");
    assert_eq!(get(ra, "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_members_report_readiness_the_map_and_wrong_shards() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["c1", "c2"]);
    let members: Vec<Member> = ["c1", "c2"]
        .iter()
        .map(|n| Member::start_in_cluster(root.path(), &certs, n))
        .collect();
    let http: Vec<SocketAddr> = members.iter().map(|m| m.node.metrics_addr).collect();

    // Before the map names it, a member is up but not ready.
    let r = get(http[0], "/readyz").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.json()["message"].as_str().unwrap().contains("shard"),
        "{r:?}"
    );
    assert_eq!(get(http[0], "/healthz").await.status, 200);
    let r = get(http[0], "/v1/keys/early").await;
    assert_eq!(r.error(503), "Unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["retry_after_ms"], 1000);

    let ca = certs.join("ca.crt").display().to_string();
    let addrs: Vec<String> = members.iter().map(|m| m.node.addr.to_string()).collect();
    let mut args = vec!["cluster", "create", "--replicas", "0", "--ca", &ca];
    args.extend(addrs.iter().map(String::as_str));
    let (ok, text) = admin(&args);
    assert!(ok, "{text}");

    for a in &http {
        await_ready(*a, 200, Duration::from_secs(60)).await;
    }
    let map = get(http[1], "/v1/cluster").await;
    assert_eq!(map.status, 200);
    let map = map.json();
    assert_eq!(map["shards"].as_array().unwrap().len(), 2);
    assert_eq!(map["nodes"].as_array().unwrap().len(), 2);
    assert!(map["version"].as_u64().unwrap() >= 1);
    assert!(get(http[0], "/v1/info").await.json()["cluster_map_version"].is_string());

    // Each key is taken by one member and sent to the other by the other.
    let (mut taken, mut sent) = (0, 0);
    for i in 0..40 {
        let path = format!("/v1/keys/spread-{i}");
        let r = put(http[0], &path, &[], b"v").await;
        match r.status {
            200 => taken += 1,
            421 => {
                assert_eq!(r.error(421), "WrongShard");
                assert_eq!(r.json()["leader_hint"], addrs[1]);
                assert_eq!(put(http[1], &path, &[], b"v").await.status, 200);
                sent += 1;
            }
            _ => panic!("{r:?}"),
        }
    }
    assert!(
        taken > 0 && sent > 0,
        "{taken} taken, {sent} sent elsewhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_unread() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[net]\nmax_connections = 2\n").unwrap();
    let node = TestNode::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let a = node.metrics_addr;

    // Two connections hold the slots, each mid-way through a head; the
    // listener accepts in order, so the third finds none.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(a).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    let mut third = TcpStream::connect(a).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    let mut out = Vec::new();
    let _ = third.read_to_end(&mut out).await;
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));

    // The held ones are served, and once one is done its slot is free.
    let mut first = held.remove(0);
    first
        .write_all(b"host: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    first.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // Polled: the slot is freed when the server's task ends, just after
    // the client saw the connection close.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = TcpStream::connect(a).await.unwrap();
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .await;
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        if out.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
