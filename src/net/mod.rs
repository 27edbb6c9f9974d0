//! Everything that touches QUIC (quinn) and TLS (rustls): endpoints, the
//! client-facing server, and the client library. Protocol logic stays in
//! [`crate::proto`]; this layer only moves its frames.

pub mod client;
mod der;
pub mod link;
pub mod server;
pub mod tls;

pub use tls::REPL_ALPN;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// UDP socket buffer size asked for: QUIC bursts overflow the usual
/// 208 KiB default even on loopback (the kernel caps it at `rmem_max`).
const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Splits `host:port` (or `[v6]:port`) into the host, brackets removed
/// (the name a peer's certificate must carry), and the port.
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Transport limits of one QUIC connection.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Concurrent request streams a peer may have open (QUIC flow control:
    /// more simply wait for credit).
    pub max_streams: u32,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Bytes a peer may have in flight on one stream.
    pub stream_window_bytes: u32,
    /// Bytes a peer may have in flight on the whole connection; with the
    /// connection limit this bounds the memory clients can pin.
    pub connection_window_bytes: u32,
    /// Ping period that keeps a quiet connection alive (clients, node links).
    pub keep_alive: Option<Duration>,
    /// Unidirectional streams a peer may open (clients use none; node links
    /// carry full-sync snapshots on them).
    pub max_uni_streams: u32,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_streams: 1024,
            idle_timeout: Duration::from_secs(30),
            stream_window_bytes: 2 << 20,
            // With the connection limit and the request byte budget, this
            // bounds what clients can make a node hold: a flood of 4 MiB
            // values over 16 connections peaked at 835 MB of RSS with
            // 32 MiB here.
            connection_window_bytes: 16 << 20,
            keep_alive: None,
            max_uni_streams: 0,
        }
    }
}

impl TransportLimits {
    /// The quinn transport config for these limits.
    pub fn transport_config(&self) -> Arc<TransportConfig> {
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_window_bytes))
            .receive_window(VarInt::from_u32(self.connection_window_bytes))
            .max_idle_timeout(IdleTimeout::try_from(self.idle_timeout).ok())
            .keep_alive_interval(self.keep_alive)
            // Loopback and datacenter links: start from a realistic RTT
            // rather than the internet default of 333 ms.
            .initial_rtt(Duration::from_millis(10));
        Arc::new(t)
    }
}

/// The quinn client config: TLS per `trust` (and an optional client
/// certificate), offering `alpn`, with `limits`.
pub fn quic_client_config(
    trust: &tls::ServerTrust,
    alpn: &[&[u8]],
    identity: Option<&tls::Identity>,
    limits: &TransportLimits,
) -> Result<quinn::ClientConfig, tls::TlsError> {
    let crypto = tls::client_config(trust, alpn, identity)?;
    quic_client(crypto, limits.transport_config())
}

/// The quinn server config: `identity`, offering `alpn`, client
/// certificates required when `client_ca` is given, with `limits`.
pub fn quic_server_config(
    identity: &tls::Identity,
    alpn: &[&[u8]],
    client_ca: Option<&std::path::Path>,
    limits: &TransportLimits,
) -> Result<quinn::ServerConfig, tls::TlsError> {
    let crypto = tls::server_config(identity, alpn, client_ca)?;
    quic_server(crypto, limits.transport_config())
}

/// Wraps a rustls client config for QUIC, with `transport`.
pub(crate) fn quic_client(
    crypto: rustls::ClientConfig,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, tls::TlsError> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .map_err(|e| tls::TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

/// Wraps a rustls server config for QUIC, with `transport`.
pub(crate) fn quic_server(
    crypto: rustls::ServerConfig,
    transport: Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, tls::TlsError> {
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .map_err(|e| tls::TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport);
    Ok(config)
}

/// Why [`read_body`] found no complete frame body.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The stream carries bytes after the body.
    TooLong,
    /// The stream ended after this many body bytes.
    Short(usize),
    /// The stream failed.
    Read(quinn::ReadError),
}

/// Reads a frame body of `len` bytes and then the stream's end, in order.
///
/// IMPORTANT: in order, like the header before it. Switching a stream to
/// unordered reads after `read_exact` (as `read_to_end` does) can hand back a
/// retransmitted copy of bytes already read on a lossy link, which quinn
/// then miscounts.
pub(crate) async fn read_body(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<Vec<u8>, BodyError> {
    // Grows as data arrives: a bare header must not pin `len` bytes.
    let mut body = Vec::with_capacity(len.min(64 << 10));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => {
                // Grow to at most `len`: doubling could allocate up to
                // twice what the request budget charged for the frame.
                let want = body.len() + chunk.bytes.len();
                if want > body.capacity() {
                    body.reserve_exact(want.max(body.capacity() * 2).min(len) - body.len());
                }
                body.extend_from_slice(&chunk.bytes);
            }
            Ok(None) => return Err(BodyError::Short(body.len())),
            Err(e) => return Err(BodyError::Read(e)),
        }
    }
    match recv.read_chunk(1, true).await {
        Ok(None) => Ok(body),
        Ok(Some(_)) => Err(BodyError::TooLong),
        Err(e) => Err(BodyError::Read(e)),
    }
}

/// Binds a UDP socket with enlarged buffers and wraps it in a quinn endpoint.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // Best effort: dual-stack where the OS allows it.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the kernel may cap or refuse larger buffers.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    let runtime = Arc::new(quinn::TokioRuntime);
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket.into(),
        runtime,
    )
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_host_port("10.0.0.1:6380"), Some(("10.0.0.1", 6380)));
        assert_eq!(split_host_port("[::1]:7000"), Some(("::1", 7000)));
        assert_eq!(split_host_port("cache-1:6379"), Some(("cache-1", 6379)));
        assert_eq!(split_host_port("nope"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }
}
