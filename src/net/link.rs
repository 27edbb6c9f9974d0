//! Node links: the mutually authenticated QUIC connections nodes open to
//! each other, and the frames they exchange on them.
//!
//! Replication and the cluster-metadata group speak over these, each with
//! its own ALPN: one endpoint may offer several ([`LinkEndpoint::listen_for`])
//! and [`Link::alpn`] tells the acceptor which one a link speaks. What
//! travels is the caller's business (any serde message); how it travels is
//! this module's: QUIC
//! (with `net::server` and `net::client`, the only code that touches
//! quinn), and one frame format:
//!
//! ```text
//! u32 LE body length | u32 LE CRC-32 of the body | postcard body
//! ```
//!
//! A stream carries frames back to back; a clean end of stream between
//! frames ends the conversation.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::tls::{ClusterIdentity, REPL_ALPN, TlsError};
use super::{TransportLimits, endpoint};

/// Bytes before a frame's body.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Largest frame body either side accepts: senders cut batches well below it.
pub const MAX_FRAME_BYTES: u32 = 256 << 20;

/// A malformed frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is above [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes is over the limit of {MAX_FRAME_BYTES}")]
    TooLarge {
        /// The claimed length.
        len: u32,
    },
    /// The length prefix is above the limit the receiver set for this
    /// stream ([`FrameReceiver::recv_bounded`]).
    #[error("frame of {len} bytes is over this stream's limit of {limit}")]
    OverLimit {
        /// The claimed length.
        len: u32,
        /// The receiver's limit.
        limit: u32,
    },
    /// The body does not match its CRC.
    #[error("frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The CRC in the header.
        stored: u32,
        /// The CRC of the bytes received.
        computed: u32,
    },
    /// The body is not a valid message.
    #[error("undecodable frame: {0}")]
    Decode(String),
}

/// Why a link operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The connection or stream broke, or could not be made.
    #[error("{0}")]
    Transport(String),
    /// The peer sent something that is not a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The TLS or QUIC configuration was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Binding the link's socket failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

impl From<quinn::ConnectionError> for LinkError {
    fn from(e: quinn::ConnectionError) -> Self {
        LinkError::Transport(e.to_string())
    }
}

impl From<quinn::WriteError> for LinkError {
    fn from(e: quinn::WriteError) -> Self {
        LinkError::Transport(e.to_string())
    }
}

impl From<quinn::ReadExactError> for LinkError {
    fn from(e: quinn::ReadExactError) -> Self {
        LinkError::Transport(e.to_string())
    }
}

/// Encodes one frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    #[expect(
        clippy::expect_used,
        reason = "postcard into a Vec only fails for types serde cannot express"
    )]
    let mut out =
        postcard::to_extend(msg, vec![0u8; FRAME_HEADER_BYTES]).expect("link message encodes");
    let body_len = out.len() - FRAME_HEADER_BYTES;
    let crc = crc32fast::hash(&out[FRAME_HEADER_BYTES..]);
    out[..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Reads a frame header: `(body length, crc)`.
pub fn decode_header(header: [u8; FRAME_HEADER_BYTES]) -> Result<(u32, u32), FrameError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len });
    }
    Ok((len, crc))
}

/// Checks and decodes a frame body.
pub fn decode_body<T: DeserializeOwned>(crc: u32, body: &[u8]) -> Result<T, FrameError> {
    let computed = crc32fast::hash(body);
    if computed != crc {
        return Err(FrameError::Checksum {
            stored: crc,
            computed,
        });
    }
    postcard::from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))
}

/// A node's link endpoint: accepts links (when it listens) and opens them.
#[derive(Debug, Clone)]
pub struct LinkEndpoint {
    endpoint: quinn::Endpoint,
    identity: ClusterIdentity,
    limits: TransportLimits,
}

impl LinkEndpoint {
    /// Listens on `addr` for replication links ([`REPL_ALPN`]) from nodes
    /// with a certificate of the cluster CA (and opens links from the same
    /// socket).
    pub fn listen(
        addr: SocketAddr,
        identity: ClusterIdentity,
        limits: TransportLimits,
    ) -> Result<LinkEndpoint, LinkError> {
        Self::listen_for(addr, identity, limits, &[REPL_ALPN])
    }

    /// [`Self::listen`] for links speaking any of `alpns`: one UDP port
    /// serves every node-link protocol, and the acceptor dispatches each
    /// link by [`Link::alpn`].
    pub fn listen_for(
        addr: SocketAddr,
        identity: ClusterIdentity,
        limits: TransportLimits,
        alpns: &[&[u8]],
    ) -> Result<LinkEndpoint, LinkError> {
        let server = identity.server_config_for(limits.transport_config(), alpns)?;
        let endpoint =
            endpoint(addr, Some(server)).map_err(|source| LinkError::Bind { addr, source })?;
        Ok(LinkEndpoint {
            endpoint,
            identity,
            limits,
        })
    }

    /// An endpoint that only opens links, bound to an ephemeral port of
    /// `peer`'s address family.
    pub fn client(
        peer: SocketAddr,
        identity: ClusterIdentity,
        limits: TransportLimits,
    ) -> Result<LinkEndpoint, LinkError> {
        let addr: SocketAddr = if peer.is_ipv6() {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        };
        let endpoint = endpoint(addr, None).map_err(|source| LinkError::Bind { addr, source })?;
        Ok(LinkEndpoint {
            endpoint,
            identity,
            limits,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, LinkError> {
        self.endpoint
            .local_addr()
            .map_err(|e| LinkError::Transport(e.to_string()))
    }

    /// The cluster identity links are made with.
    pub fn identity(&self) -> &ClusterIdentity {
        &self.identity
    }

    /// Closes every link of this endpoint and refuses new ones, then waits
    /// (up to `timeout`) for the peers to learn it, so the socket can be
    /// released once the last clone is dropped.
    pub async fn close(&self, timeout: Duration) {
        self.endpoint.close(0u32.into(), b"endpoint closed");
        let _ = tokio::time::timeout(timeout, self.endpoint.wait_idle()).await;
    }

    /// The next incoming link attempt; `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<Incoming> {
        self.endpoint.accept().await.map(Incoming)
    }

    /// Opens a replication link ([`REPL_ALPN`]) to `addr`, checking that
    /// its certificate names `server_name` (one of its SANs), within
    /// `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        server_name: &str,
        timeout: Duration,
    ) -> Result<Link, LinkError> {
        self.connect_for(addr, server_name, REPL_ALPN, timeout)
            .await
    }

    /// [`Self::connect`] speaking protocol `alpn`; a peer that does not
    /// offer it refuses the handshake.
    pub async fn connect_for(
        &self,
        addr: SocketAddr,
        server_name: &str,
        alpn: &[u8],
        timeout: Duration,
    ) -> Result<Link, LinkError> {
        let config = self
            .identity
            .client_config_for(self.limits.transport_config(), alpn)?;
        let connecting = self
            .endpoint
            .connect_with(config, addr, server_name)
            .map_err(|e| LinkError::Transport(e.to_string()))?;
        let conn = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| {
                LinkError::Transport(format!("no answer from {addr} within {timeout:?}"))
            })??;
        Ok(Link(conn))
    }
}

/// A link attempt not yet through its handshake.
pub struct Incoming(quinn::Incoming);

impl Incoming {
    /// Who is knocking.
    pub fn remote_address(&self) -> SocketAddr {
        self.0.remote_address()
    }

    /// Completes the handshake (the peer's certificate is verified here).
    pub async fn accept(self) -> Result<Link, LinkError> {
        Ok(Link(self.0.await?))
    }
}

/// An established link to a peer node.
#[derive(Debug, Clone)]
pub struct Link(quinn::Connection);

impl Link {
    /// The peer's node name, from the certificate the handshake verified.
    pub fn peer_name(&self) -> Option<String> {
        super::tls::peer_name(&self.0)
    }

    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.0.remote_address()
    }

    /// Whether the link has closed (either end, or idle): a cached link
    /// that has is replaced rather than used.
    pub fn is_closed(&self) -> bool {
        self.0.close_reason().is_some()
    }

    /// The protocol (ALPN) the handshake agreed on: what the link speaks.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        let data = self.0.handshake_data()?;
        let data = data.downcast_ref::<quinn::crypto::rustls::HandshakeData>()?;
        data.protocol.clone()
    }

    /// Opens a two-way stream. The peer sees it when the first frame is sent.
    pub async fn open(&self) -> Result<(FrameSender, FrameReceiver), LinkError> {
        let (send, recv) = self.0.open_bi().await?;
        Ok((FrameSender(send), FrameReceiver(recv)))
    }

    /// Takes the next two-way stream the peer opens.
    pub async fn accept(&self) -> Result<(FrameSender, FrameReceiver), LinkError> {
        let (send, recv) = self.0.accept_bi().await?;
        Ok((FrameSender(send), FrameReceiver(recv)))
    }

    /// Opens a one-way stream (bulk data beside a conversation).
    pub async fn open_one_way(&self) -> Result<FrameSender, LinkError> {
        Ok(FrameSender(self.0.open_uni().await?))
    }

    /// Takes the next one-way stream the peer opens.
    pub async fn accept_one_way(&self) -> Result<FrameReceiver, LinkError> {
        Ok(FrameReceiver(self.0.accept_uni().await?))
    }

    /// Closes the link with an application `code` and a reason the peer
    /// sees. Unsent stream data is dropped: see [`FrameSender::delivered`].
    pub fn close(&self, code: u32, reason: &str) {
        self.0.close(code.into(), reason.as_bytes());
    }
}

/// The sending half of a link stream.
pub struct FrameSender(quinn::SendStream);

impl FrameSender {
    /// Sends one message as a frame.
    pub async fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), LinkError> {
        self.send_encoded(&encode(msg)).await
    }

    /// Sends a frame made by [`encode`] (e.g. off the async threads).
    pub async fn send_encoded(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        self.0.write_all(frame).await?;
        Ok(())
    }

    /// Ends the stream after what was sent.
    pub fn finish(&mut self) {
        let _ = self.0.finish();
    }

    /// Waits (up to `timeout`) until the peer has everything sent, so that
    /// closing the link next does not drop it.
    pub async fn delivered(&mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.0.stopped()).await;
    }
}

/// The receiving half of a link stream.
pub struct FrameReceiver(quinn::RecvStream);

impl FrameReceiver {
    /// Reads one frame; `None` at a clean end of stream between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, LinkError> {
        self.recv_bounded(MAX_FRAME_BYTES).await
    }

    /// [`Self::recv`] refusing a frame whose body is over `limit_bytes`
    /// ([`FrameError::OverLimit`]) before reading it: a protocol of small
    /// messages bounds what one frame can make it hold.
    pub async fn recv_bounded<T: DeserializeOwned>(
        &mut self,
        limit_bytes: u32,
    ) -> Result<Option<T>, LinkError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        match self.0.read_exact(&mut header).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let (len, crc) = decode_header(header)?;
        if len > limit_bytes {
            return Err(FrameError::OverLimit {
                len,
                limit: limit_bytes,
            }
            .into());
        }
        let mut body = vec![0u8; len as usize];
        self.0.read_exact(&mut body).await?;
        Ok(Some(decode_body(crc, &body)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::test_certs::cluster_identities;

    const OTHER_ALPN: &[u8] = b"strata-test/1";
    const BOUND: Duration = Duration::from_secs(10);

    /// One endpoint offers two protocols; each link reports the one its
    /// opener asked for, on both ends, and a third protocol is refused.
    #[tokio::test]
    async fn one_endpoint_serves_two_protocols() {
        let dir = tempfile::tempdir().unwrap();
        let ids = cluster_identities(dir.path(), &["n1", "n2"]);
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let limits = TransportLimits::default();
        let server = LinkEndpoint::listen_for(
            loopback,
            ids[0].clone(),
            limits.clone(),
            &[REPL_ALPN, OTHER_ALPN],
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let incoming = server.accept().await.unwrap();
                seen.push(incoming.accept().await.map(|link| {
                    assert_eq!(link.peer_name().as_deref(), Some("n2"));
                    link.alpn().unwrap()
                }));
            }
            seen
        });
        let client = LinkEndpoint::client(addr, ids[1].clone(), limits).unwrap();
        let repl = client.connect(addr, "localhost", BOUND).await.unwrap();
        assert_eq!(repl.alpn().as_deref(), Some(REPL_ALPN));
        let other = client
            .connect_for(addr, "localhost", OTHER_ALPN, BOUND)
            .await
            .unwrap();
        assert_eq!(other.alpn().as_deref(), Some(OTHER_ALPN));
        assert_eq!(other.peer_name().as_deref(), Some("n1"));
        let refused = client
            .connect_for(addr, "localhost", b"strata-none/1", BOUND)
            .await;
        assert!(refused.is_err(), "an unoffered protocol is refused");
        let seen = tokio::time::timeout(BOUND, accept).await.unwrap().unwrap();
        assert_eq!(seen[0].as_deref().unwrap(), REPL_ALPN);
        assert_eq!(seen[1].as_deref().unwrap(), OTHER_ALPN);
        assert!(seen[2].is_err(), "the acceptor refused it too");
    }

    /// A frame longer than the stream's limit is refused from its header,
    /// before any of its body is read or allocated.
    #[tokio::test]
    async fn bounded_receive_refuses_a_long_frame() {
        let dir = tempfile::tempdir().unwrap();
        let ids = cluster_identities(dir.path(), &["n1", "n2"]);
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let limits = TransportLimits::default();
        let server = LinkEndpoint::listen(loopback, ids[0].clone(), limits.clone()).unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let link = server.accept().await.unwrap().accept().await.unwrap();
            let (_send, mut recv) = link.accept().await.unwrap();
            recv.recv_bounded::<Vec<u8>>(64).await
        });
        let client = LinkEndpoint::client(addr, ids[1].clone(), limits).unwrap();
        let link = client.connect(addr, "localhost", BOUND).await.unwrap();
        let (mut send, _recv) = link.open().await.unwrap();
        // A header claiming 65 bytes, and no body.
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[..4].copy_from_slice(&65u32.to_le_bytes());
        send.send_encoded(&header).await.unwrap();
        let got = tokio::time::timeout(BOUND, accept).await.unwrap().unwrap();
        match got {
            Err(LinkError::Frame(FrameError::OverLimit { len: 65, limit: 64 })) => {}
            other => panic!("a long frame was not refused: {other:?}"),
        }
    }
}
