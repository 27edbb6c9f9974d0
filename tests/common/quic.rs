//! A raw QUIC connection to a node, for tests that send bytes the client
//! library never would.
#![allow(dead_code)]

use std::net::SocketAddr;

use strata::net::tls::{self, ServerTrust};
use strata::net::{TransportLimits, quic_client_config};
use strata::proto::{ALPN, Request, Response, decode_frame, encode_request};

/// Connects with the node's pinned fingerprint.
pub async fn connect(addr: SocketAddr, fingerprint: &str) -> quinn::Connection {
    try_connect(addr, fingerprint).await.unwrap()
}

/// Connects with the node's pinned fingerprint, returning a refusal as an error.
pub async fn try_connect(
    addr: SocketAddr,
    fingerprint: &str,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let trust = ServerTrust::Pin(tls::parse_fingerprint(fingerprint).unwrap());
    let config = quic_client_config(&trust, &[ALPN], None, &TransportLimits::default()).unwrap();
    let mut endpoint = strata::net::endpoint("127.0.0.1:0".parse().unwrap(), None).unwrap();
    endpoint.set_default_client_config(config);
    endpoint.connect(addr, "localhost").unwrap().await
}

/// Sends raw bytes on a new stream (finishing it) and reads the whole reply.
/// The server may stop the stream before taking all the bytes (a refused
/// frame); its reply is read all the same.
pub async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    if send.write_all(bytes).await.is_ok() {
        let _ = send.finish();
    }
    recv.read_to_end(64 << 20).await.unwrap_or_default()
}

/// Sends one request and decodes the response.
pub async fn request(conn: &quinn::Connection, req: &Request) -> Response {
    let reply = send_raw(conn, &encode_request(req).unwrap()).await;
    let mut buf = bytes::BytesMut::from(&reply[..]);
    decode_frame::<Response>(&mut buf, 64 << 20)
        .unwrap()
        .expect("a whole response")
}

/// Decodes a raw reply.
pub fn decode(reply: &[u8]) -> Response {
    let mut buf = bytes::BytesMut::from(reply);
    decode_frame::<Response>(&mut buf, 64 << 20)
        .unwrap()
        .expect("a whole response")
}

/// Resident memory of a process, bytes (Linux).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}
