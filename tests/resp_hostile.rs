//! Hostile RESP input against a real node: each gets a Redis-style
//! protocol error and a closed connection, and the node goes on serving
//! everyone else. Also the connection limit, slow senders, huge
//! pipelines, and the gateway over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::node::TestNode;
use common::resp::{Conn, Value, encode};
use tokio::io::AsyncWriteExt;

/// A node whose gateway serves at most `max_connections` at once, and
/// gives a begun command `request_timeout_ms` to arrive.
fn start(dir: &std::path::Path, resp: &str) -> TestNode {
    let config = dir.join("strata.toml");
    std::fs::write(
        &config,
        format!("[net]\nrequest_timeout_ms = 2000\n[resp]\n{resp}\n"),
    )
    .unwrap();
    let data = dir.join("data");
    TestNode::start(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--resp-listen",
            "127.0.0.1:0",
            "--fsync",
            "never",
        ],
    )
}

async fn assert_serves(node: &TestNode) {
    let mut c = Conn::connect(node.resp_addr.unwrap()).await;
    assert_eq!(c.cmd(&["PING"]).await, Value::Simple("PONG".into()));
}

/// Sends `input` on a fresh connection and returns every reply until the
/// server closes it.
async fn replies_to(node: &TestNode, input: &[u8]) -> Vec<Value> {
    let mut c = Conn::connect(node.resp_addr.unwrap()).await;
    c.send_raw(input).await;
    c.read_to_close().await
}

fn protocol_error(what: &str) -> Vec<Value> {
    vec![Value::Error(format!("ERR Protocol error: {what}"))]
}

#[tokio::test]
async fn malformed_and_oversized_input_closes_with_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "max_connections = 16");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A 100 GB bulk is refused from its header, not buffered.
        (b"*1\r\n$99999999999\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$-5\r\n".to_vec(), "invalid bulk length"),
        (b"*99999999\r\n".to_vec(), "invalid multibulk length"),
        (b"*x\r\n".to_vec(), "invalid multibulk length"),
        (b"*1\r\n+PING\r\n".to_vec(), "expected '$', got '+'"),
        (
            b"*2\r\n$3\r\nGET\r\n$1\r\nab\r\n".to_vec(),
            "expected CRLF after a bulk string",
        ),
        // Unterminated lines.
        (vec![b'a'; 70_000], "too big inline request"),
        (
            [b"*1\r\n$".to_vec(), vec![b'9'; 100]].concat(),
            "too big bulk count string",
        ),
        (
            [b"*".to_vec(), vec![b'9'; 100]].concat(),
            "too big mbulk count string",
        ),
        // Deep arrays: a nested array is not a command.
        (b"*1\r\n".repeat(100_000), "expected '$', got '*'"),
    ];
    for (input, error) in cases {
        assert_eq!(
            replies_to(&node, &input).await,
            protocol_error(error),
            "{error}"
        );
        assert_serves(&node).await;
    }
    // Commands before the bad bytes are answered first, in order.
    let mut input = encode(&[b"SET", b"k", b"v"]);
    input.extend_from_slice(&encode(&[b"GET", b"k"]));
    input.extend_from_slice(b"*1\r\n$-2\r\n");
    let replies = replies_to(&node, &input).await;
    assert_eq!(
        replies,
        vec![
            Value::ok(),
            Value::bulk("v"),
            Value::Error("ERR Protocol error: invalid bulk length".into())
        ]
    );
    // An argument longer than the node's largest value or key, refused
    // from its header.
    let header = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n${}\r\n", 9 << 20);
    let replies = replies_to(&node, header.as_bytes()).await;
    assert_eq!(replies, protocol_error("invalid bulk length"));
    assert_serves(&node).await;
    let metrics = node.metrics();
    assert!(
        metrics.contains("\nstrata_resp_protocol_errors_total 12\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_slow_sender_is_cut_off_and_the_limit_refuses_more_connections() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "max_connections = 2");
    // A command begun and never finished: closed at the request timeout.
    let mut slow = Conn::connect(node.resp_addr.unwrap()).await;
    slow.send_raw(b"*2\r\n$3\r\nGET\r\n$5\r\nab").await;
    let mut other = Conn::connect(node.resp_addr.unwrap()).await;
    assert_eq!(other.cmd(&["PING"]).await, Value::Simple("PONG".into()));
    // Both slots taken: a third connection is told so and closed.
    let mut third = Conn::connect(node.resp_addr.unwrap()).await;
    assert_eq!(
        third.read_to_close().await,
        vec![Value::Error("ERR max number of clients reached".into())]
    );
    assert_eq!(
        slow.read_to_close().await,
        protocol_error("the command did not arrive within 2000 ms")
    );
    assert_eq!(other.cmd(&["PING"]).await, Value::Simple("PONG".into()));
}

#[tokio::test]
async fn a_huge_pipeline_is_answered_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "max_connections = 16");
    let stream = tokio::net::TcpStream::connect(node.resp_addr.unwrap())
        .await
        .unwrap();
    let (read, mut write) = tokio::io::split(stream);
    // 100,000 commands (2.4 MB) written without reading a reply: the
    // node stops reading while its replies are not taken, and catches up.
    const N: usize = 100_000;
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        for i in 0..N {
            batch.extend_from_slice(&encode(&[b"ECHO", i.to_string().as_bytes()]));
        }
        write.write_all(&batch).await.unwrap();
        write
    });
    let mut c = Conn::new(read);
    for i in 0..N {
        assert_eq!(c.read().await, Value::bulk(&i.to_string()), "reply {i}");
    }
    let _write = writer.await.unwrap();
    assert_serves(&node).await;
}

#[tokio::test]
async fn the_gateway_over_tls_with_the_node_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "tls = true");
    let pin = strata::net::tls::parse_fingerprint(&node.fingerprint).unwrap();
    let config =
        strata::net::tls::client_config(&strata::net::tls::ServerTrust::Pin(pin), &[], None)
            .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(node.resp_addr.unwrap())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let mut c = Conn::new(tls);
    assert_eq!(c.cmd(&["SET", "k", "over tls"]).await, Value::ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, Value::bulk("over tls"));
    // Plain RESP on the TLS port is not a handshake: closed unanswered.
    let mut plain = tokio::net::TcpStream::connect(node.resp_addr.unwrap())
        .await
        .unwrap();
    plain.write_all(&encode(&[b"PING"])).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut plain, &mut got).await;
    assert!(!String::from_utf8_lossy(&got).contains("PONG"));
    assert_serves_tls(&connector, &node).await;
}

async fn assert_serves_tls(connector: &tokio_rustls::TlsConnector, node: &TestNode) {
    let tcp = tokio::net::TcpStream::connect(node.resp_addr.unwrap())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = Conn::new(connector.connect(name, tcp).await.unwrap());
    assert_eq!(c.cmd(&["PING"]).await, Value::Simple("PONG".into()));
}
