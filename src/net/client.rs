//! The async client library: a small pool of QUIC connections to one strata
//! server, typed operations, automatic retries of the requests that are safe
//! to resend, and a circuit breaker.
//!
//! It speaks the protocol of `proto-docs/wire-protocol.md` through the
//! sans-io [`crate::proto`] codec: each request gets its own bidirectional
//! QUIC stream (open, write one frame, finish, read one frame back), so
//! requests from many tasks run concurrently over the pool.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use strata::net::client::{Client, ClientConfig, SetOptions, SetOutcome, ServerTrust};
//! use strata::net::tls::parse_fingerprint;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The fingerprint is printed by `strata-server` when it starts.
//! let pin = parse_fingerprint("3f2a...64 hex digits...")?;
//! let config = ClientConfig::new("127.0.0.1:7379", ServerTrust::Pin(pin))
//!     .with_token("s3cret-token")
//!     .with_connections(2)
//!     .with_request_timeout(Duration::from_secs(2));
//! let client = Client::connect(config).await?;
//!
//! let written = client.set("user:42", "hello").await?;
//! let entry = client.get("user:42").await?.expect("just written");
//! assert_eq!(entry.version, written.version);
//!
//! // Compare-and-set: only if nobody wrote the key in between.
//! let opts = SetOptions::new().if_version(entry.version).with_ttl(Duration::from_secs(60));
//! match client.set_with("user:42", "bye", opts).await? {
//!     SetOutcome::Written(reply) => println!("now at version {}", reply.version),
//!     SetOutcome::NotWritten { current_version } => {
//!         println!("lost the race; the key is at {current_version:?}")
//!     }
//! }
//! for (key, entry) in client.scan_all("user:").await? {
//!     println!("{key:?} = {:?} (version {})", entry.value, entry.version);
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Failures, retries and the circuit breaker
//!
//! - A request that certainly did not reach the server (the connection
//!   could not be made, the stream could not be opened, or the frame was not
//!   completely written, so the server never saw its end) is retried,
//!   whatever it is.
//! - A request that may have reached the server (lost reply, timeout, lost
//!   connection) is retried only if [`Request::is_idempotent`].
//! - A server error is retried only if [`ErrorCode::is_retryable`], and then
//!   only if the request is idempotent or the code guarantees nothing was
//!   applied ([`ErrorCode::write_may_have_applied`] is false).
//!   `ReplicationTimeout` is never retried automatically: the write is
//!   already committed on the primary, and resending it would only commit it
//!   again and wait again.
//! - Retries wait an exponential backoff with jitter, at least the server's
//!   `retry_after_ms`.
//! - Every transport failure (no connection, timeout, lost connection)
//!   counts towards the circuit breaker; any reply from the server resets the
//!   count. After [`ClientConfig::with_breaker_failures`] failures in a row
//!   the breaker opens: calls fail at once with [`ClientError::CircuitOpen`]
//!   without touching the network. After the cooldown one call is let
//!   through as a probe; its success closes the breaker, its failure opens
//!   it again.
//! - A connection that is lost, or on which a request timed out, is
//!   forgotten; the next request on its slot connects again (and sends
//!   `Hello` again).

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::{ConnectionError, VarInt};

use crate::net::tls::{Identity, TlsError};
use crate::net::{BodyError, TransportLimits, endpoint, read_body};
use crate::proto::{
    ALPN, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, PROTOCOL_VERSION, RequestError,
    decode_frame, encode_request, frame_len, quic_code,
};

pub use crate::net::tls::ServerTrust;
pub use crate::proto::{
    ClusterMapReply, ClusterNode, ClusterShard, Condition, DeadlineState, Durability, Entry,
    ErrorCode, ErrorReply, HelloReply, KeyPage, Limits, RawSnapshotItem, RawSnapshotPage, Request,
    Response, ScanPage, SetEntry, SnapshotItem, SnapshotPage, TtlState, WriteReply,
};
pub use crate::types::{
    AckPolicy, End, Expiry, OnTimeout, Score, ScoreRule, ScoreUpdate, Seq, ValueKind,
};

/// Why a client call failed.
///
/// Transport failures ([`Connect`](Self::Connect), [`Tls`](Self::Tls),
/// [`Timeout`](Self::Timeout), [`ConnectionLost`](Self::ConnectionLost),
/// [`StreamReset`](Self::StreamReset)) leave the outcome of a write that may
/// have been sent unknown: read the key back before resending a write that is
/// not idempotent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The client configuration cannot work (no address, an empty pool, ...).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The TLS configuration could not be built (for example an unreadable
    /// CA file).
    #[error("tls configuration: {0}")]
    TlsConfig(#[from] TlsError),
    /// The address did not resolve, or no QUIC connection could be made to it
    /// within the connect timeout.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The server address, as configured or resolved.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The TLS handshake failed: the server's certificate does not match the
    /// pinned fingerprint or is not signed by the trusted CA for the server
    /// name, or the server does not speak `strata/1`.
    #[error("tls handshake with {addr} failed: {reason}")]
    Tls {
        /// The server address.
        addr: SocketAddr,
        /// What the handshake reported.
        reason: String,
    },
    /// No reply within the request timeout. The request may or may not have
    /// been executed.
    #[error("{op} timed out after {} ms; its outcome is unknown", after.as_millis())]
    Timeout {
        /// The operation (`get`, `set`, ...).
        op: &'static str,
        /// The timeout that expired.
        after: Duration,
    },
    /// The circuit breaker is open after repeated connection failures: the
    /// call failed at once, without touching the network.
    #[error(
        "circuit breaker open after {failures} consecutive connection failures; \
         not contacting the server for another {} ms",
        retry_in.as_millis()
    )]
    CircuitOpen {
        /// Consecutive failures that opened it.
        failures: u32,
        /// When the next probe will be let through.
        retry_in: Duration,
    },
    /// The connection was closed or lost while the request was in flight;
    /// the request may or may not have been executed.
    #[error("connection lost: {reason}; the request's outcome is unknown")]
    ConnectionLost {
        /// Why, as QUIC reported it.
        reason: String,
    },
    /// The server reset the request stream without a reply; the request may
    /// or may not have been executed.
    #[error(
        "the server reset the request stream (QUIC code {code}); the request's outcome is unknown"
    )]
    StreamReset {
        /// The QUIC application error code.
        code: u64,
    },
    /// The server sent something that is not a valid reply (a bad or
    /// oversized frame, or a reply of the wrong kind).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request breaks one of the server's limits or the protocol's
    /// rules; it was not sent.
    #[error("invalid request (not sent): {0}")]
    InvalidRequest(#[from] RequestError),
    /// The request frame is longer than the server accepts; it was not sent.
    #[error("request frame of {len} bytes exceeds the server's limit of {max} bytes (not sent)")]
    FrameTooLarge {
        /// The encoded body length.
        len: u64,
        /// The server's `max_frame_bytes`.
        max: u32,
    },
    /// The server refused or failed the request.
    #[error("server error {code}: {message}{}", hint_suffix(.leader_hint.as_deref()))]
    Server {
        /// The machine-readable reason (see `proto-docs/errors.md`).
        code: ErrorCode,
        /// The server's explanation.
        message: String,
        /// For `ReadOnlyReplica`: the primary's `host:port`, when known.
        leader_hint: Option<String>,
        /// Wait at least this long before retrying (`Overloaded`, ...).
        retry_after_ms: Option<u64>,
    },
}

fn hint_suffix(hint: Option<&str>) -> String {
    hint.map(|h| format!(" (the primary is {h})"))
        .unwrap_or_default()
}

impl ClientError {
    /// The wire error code: the server's for [`ClientError::Server`], the code
    /// the server would have answered with for [`ClientError::InvalidRequest`]
    /// and [`ClientError::FrameTooLarge`]; `None` for transport failures.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::InvalidRequest(e) => Some(ErrorCode::from(e)),
            ClientError::FrameTooLarge { .. } => Some(ErrorCode::FrameTooLarge),
            _ => None,
        }
    }

    fn from_reply(reply: ErrorReply) -> ClientError {
        ClientError::Server {
            code: reply.code,
            message: reply.message,
            leader_hint: reply.leader_hint,
            retry_after_ms: reply.retry_after_ms,
        }
    }
}

/// How to reach and talk to one server. Built with [`ClientConfig::new`] and
/// the `with_*` setters.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` or a socket address; resolved on every (re)connect.
    addr: String,
    /// The name checked against the certificate with [`ServerTrust::CaFile`].
    server_name: String,
    trust: ServerTrust,
    /// A client certificate, for servers that require mutual TLS.
    identity: Option<Identity>,
    /// Sent in every `Hello`; never logged or printed.
    token: Option<String>,
    client_name: Option<String>,
    connections: usize,
    connect_timeout: Duration,
    request_timeout: Duration,
    retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    breaker_failures: u32,
    breaker_cooldown: Duration,
    /// Applied to typed writes that do not name their own policy.
    default_ack: Option<AckPolicy>,
    transport: TransportLimits,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // NOTE: hand-written so that the token and the client key never
        // reach a log.
        f.debug_struct("ClientConfig")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .field("trust", &self.trust)
            .field("client_certificate", &self.identity.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_name", &self.client_name)
            .field("connections", &self.connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("default_ack", &self.default_ack)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A config for the server at `addr` (a `SocketAddr`, or `"host:port"`
    /// resolved when connecting), trusted as `trust` says. Defaults: server
    /// name `localhost`, no token, 1 connection, 5 s connect timeout, 10 s
    /// request timeout, 3 retries (backoff from 20 ms, doubling, capped at
    /// 1 s, with jitter), breaker after 5 consecutive connection failures
    /// with a 2 s cooldown.
    pub fn new(addr: impl ToString, trust: ServerTrust) -> ClientConfig {
        ClientConfig {
            addr: addr.to_string(),
            server_name: "localhost".into(),
            trust,
            identity: None,
            token: None,
            client_name: None,
            connections: 1,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            retries: 3,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(2),
            default_ack: None,
            transport: TransportLimits {
                // A pool connection may sit idle between bursts; keep it open.
                keep_alive: Some(Duration::from_secs(5)),
                ..TransportLimits::default()
            },
        }
    }

    /// The server address as configured.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The TLS server name: checked against the certificate with
    /// [`ServerTrust::CaFile`] (ignored with a pin). Default `localhost`,
    /// which a node's generated certificate includes.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// How to verify the server's certificate.
    pub fn with_trust(mut self, trust: ServerTrust) -> Self {
        self.trust = trust;
        self
    }

    /// A client certificate, for servers configured for mutual TLS.
    pub fn with_client_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The token sent in `Hello` on every connection.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A name for the server's logs.
    pub fn with_client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// How many QUIC connections to keep (round-robin). One connection is
    /// served by one server task; use more to spread load over server cores.
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = connections;
        self
    }

    /// Limit on making one connection: resolving, the handshake and `Hello`.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit on one attempt of a request, from opening its stream to reading
    /// its reply. A call with retries can take longer.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many times to resend a request that is safe to resend (see the
    /// module docs). 0 disables retries.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The first retry delay (doubled on each retry, with jitter) and the
    /// largest one.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// Consecutive connection failures that open the circuit breaker; 0
    /// disables it.
    pub fn with_breaker_failures(mut self, failures: u32) -> Self {
        self.breaker_failures = failures;
        self
    }

    /// How long an open breaker fails calls before letting a probe through.
    pub fn with_breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.breaker_cooldown = cooldown;
        self
    }

    /// The acknowledgement policy of typed writes that do not name one
    /// (`None`: the server's default).
    pub fn with_default_ack(mut self, ack: Option<AckPolicy>) -> Self {
        self.default_ack = ack;
        self
    }

    /// QUIC transport limits of the client's connections.
    pub fn with_transport(mut self, transport: TransportLimits) -> Self {
        self.transport = transport;
        self
    }
}

/// Options of [`Client::set_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// When the key expires: `Never` stores it without expiry (removing
    /// any previous TTL); a deadline (`AtMs`, read against the server's
    /// clock) is sent as `SetAt`.
    pub expiry: Expiry,
    /// When to write.
    pub condition: Condition,
    /// What to wait for before the reply; `None`: the client's default, else
    /// the server's.
    pub ack: Option<AckPolicy>,
}

impl SetOptions {
    /// An unconditional write without TTL.
    pub fn new() -> SetOptions {
        SetOptions::default()
    }

    /// Expire the key after `ttl`, rounded up to whole milliseconds.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.expiry = Expiry::InMs(ttl_ms(ttl));
        self
    }

    /// Expire the key at the Unix time `at_ms` (ms; above 0). One already
    /// past writes the key expired.
    pub fn expiring_at(mut self, at_ms: u64) -> Self {
        self.expiry = Expiry::AtMs(at_ms);
        self
    }

    /// Write only if `condition` holds.
    pub fn with_condition(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    /// Write only if the key is absent (create).
    pub fn if_absent(self) -> Self {
        self.with_condition(Condition::IfAbsent)
    }

    /// Write only if the key is present (replace).
    pub fn if_present(self) -> Self {
        self.with_condition(Condition::IfPresent)
    }

    /// Write only if the key is at `version` (compare-and-set).
    pub fn if_version(self, version: Seq) -> Self {
        self.with_condition(Condition::IfVersion(version))
    }

    /// Wait for `ack` before the reply.
    pub fn with_ack(mut self, ack: AckPolicy) -> Self {
        self.ack = Some(ack);
        self
    }

    /// The write these options ask for: a `SetAt` with a deadline, else
    /// a `Set`. `ack` is the policy resolved against the client's default.
    pub(crate) fn request(self, key: Bytes, value: Bytes, ack: Option<AckPolicy>) -> Request {
        Request::set_expiring(key, value, self.expiry, self.condition, ack)
    }
}

/// What a conditional [`Client::set_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOutcome {
    /// Written at a new version, with this durability.
    Written(WriteReply),
    /// The condition did not hold; nothing was written.
    NotWritten {
        /// The key's version now, `None` if it is absent.
        current_version: Option<Seq>,
    },
}

impl SetOutcome {
    /// Whether the value was written.
    pub fn is_written(&self) -> bool {
        matches!(self, SetOutcome::Written(_))
    }
}

/// What [`Client::delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Whether the key existed (and so was deleted).
    pub existed: bool,
    /// What the delete reached; `None` when nothing was written.
    pub durability: Option<Durability>,
}

/// What [`Client::delete_if_version`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The key was at the version and is deleted.
    Deleted(Deleted),
    /// The key was not at the version; nothing was deleted.
    NotWritten {
        /// The key's version now, `None` if it is absent.
        current_version: Option<Seq>,
    },
}

/// What [`Client::expire`] and [`Client::persist`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updated {
    /// Whether the key existed.
    pub existed: bool,
    /// What the update reached; `None` when nothing was written (the key is
    /// absent, or `persist` found no TTL).
    pub durability: Option<Durability>,
}

/// What [`Client::incr_with`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incremented {
    /// The value after the increment.
    pub value: i64,
    /// What the write reached.
    pub durability: Durability,
}

/// A cheaply clonable handle on a pool of connections to one server. Clones
/// share the pool; every method may be called from many tasks at once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: ClientConfig,
    endpoint: quinn::Endpoint,
    slots: Box<[Slot]>,
    next_slot: AtomicUsize,
    breaker: Mutex<Breaker>,
    /// The newest `Hello` reply (every connection gets one).
    hello: Mutex<HelloReply>,
}

/// One pool position: the live connection, if any, and a lock held while
/// (re)connecting so that concurrent requests wait for one handshake
/// instead of starting many.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<Session>>,
    connecting: tokio::sync::Mutex<()>,
}

/// A connection that has completed `Hello`.
#[derive(Clone)]
struct Session {
    conn: quinn::Connection,
    /// The frame limit the server reported: the longest reply to accept.
    max_frame_bytes: u32,
}

impl Slot {
    fn live(&self) -> Option<Session> {
        let current = lock(&self.current);
        current
            .as_ref()
            .filter(|s| s.conn.close_reason().is_none())
            .cloned()
    }
}

use crate::sync::lock;

/// Which requests may be sent again after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// The request never reached the server (or the server guarantees it did
    /// nothing): any request may be resent.
    Any,
    /// The request may have been executed: only idempotent ones.
    IfIdempotent,
    /// Not at all.
    Never,
}

/// A failed attempt.
struct Failure {
    error: ClientError,
    resend: Resend,
    /// A transport failure: counts towards the circuit breaker.
    transport: bool,
}

impl Failure {
    fn transport(error: ClientError, resend: Resend) -> Failure {
        Failure {
            error,
            resend,
            transport: true,
        }
    }

    fn fatal(error: ClientError) -> Failure {
        Failure {
            error,
            resend: Resend::Never,
            transport: false,
        }
    }
}

/// Whether a server error code may be retried, and for which requests.
fn resend_for_code(code: ErrorCode) -> Resend {
    if !code.is_retryable() || code == ErrorCode::ReplicationTimeout {
        Resend::Never
    } else if code.write_may_have_applied() {
        Resend::IfIdempotent
    } else {
        Resend::Any
    }
}

fn lost(e: &ConnectionError) -> ClientError {
    ClientError::ConnectionLost {
        reason: e.to_string(),
    }
}

/// Whether a QUIC transport error code is a TLS alert (RFC 9001 §4.8:
/// `CRYPTO_ERROR` is 0x100 + the alert).
fn is_crypto_code(code: u64) -> bool {
    (0x100..0x200).contains(&code)
}

fn handshake_failure(addr: SocketAddr, e: ConnectionError) -> Failure {
    let crypto = match &e {
        ConnectionError::TransportError(t) => is_crypto_code(t.code.into()),
        ConnectionError::ConnectionClosed(c) => is_crypto_code(c.error_code.into()),
        _ => false,
    };
    let error = if crypto {
        ClientError::Tls {
            addr,
            reason: e.to_string(),
        }
    } else {
        ClientError::Connect {
            addr: addr.to_string(),
            reason: e.to_string(),
        }
    };
    Failure::transport(error, Resend::Any)
}

/// Resets a request's send stream if the exchange is abandoned before the
/// request was finished (a timeout or a dropped call), as the protocol asks
/// of a client that gives up; quinn would otherwise finish it on drop.
struct SendGuard {
    send: quinn::SendStream,
    finished: bool,
}

impl Drop for SendGuard {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.send.reset(VarInt::from_u32(quic_code::NO_ERROR));
        }
    }
}

/// Sends one request frame on a new stream of `conn` and reads the reply
/// frame, accepting at most `max_frame_bytes`. `sent` becomes true once the
/// whole request and its FIN are handed to QUIC: from then on the server may
/// execute it.
async fn exchange(
    conn: &quinn::Connection,
    frame: &Bytes,
    max_frame_bytes: u32,
    sent: &AtomicBool,
) -> Result<Response, Failure> {
    let (send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| Failure::transport(lost(&e), Resend::Any))?;
    let mut guard = SendGuard {
        send,
        finished: false,
    };
    match guard.send.write_all(frame).await {
        Ok(()) => {
            // IMPORTANT: only after FIN can the server execute the request
            // (it reads to the end of the stream first); before that a
            // failure proves it was not executed.
            if guard.send.finish().is_ok() {
                guard.finished = true;
                sent.store(true, Ordering::Release);
            }
        }
        // The server stopped reading (FrameTooLarge): its reply follows.
        Err(quinn::WriteError::Stopped(_)) => guard.finished = true,
        Err(quinn::WriteError::ConnectionLost(e)) => {
            return Err(Failure::transport(lost(&e), Resend::Any));
        }
        Err(e) => {
            return Err(Failure::transport(
                ClientError::ConnectionLost {
                    reason: e.to_string(),
                },
                Resend::Any,
            ));
        }
    }
    let resend = if sent.load(Ordering::Acquire) {
        Resend::IfIdempotent
    } else {
        Resend::Any
    };
    read_response(&mut recv, max_frame_bytes, resend).await
}

fn read_failure(e: quinn::ReadError, resend: Resend) -> Failure {
    match e {
        quinn::ReadError::Reset(code) => Failure {
            error: ClientError::StreamReset {
                code: code.into_inner(),
            },
            resend: if resend == Resend::Any {
                Resend::Any
            } else {
                Resend::Never
            },
            transport: false,
        },
        quinn::ReadError::ConnectionLost(e) => Failure::transport(lost(&e), resend),
        other => Failure::fatal(ClientError::Protocol(format!("reading the reply: {other}"))),
    }
}

/// Reads exactly one reply frame and the stream's end.
async fn read_response(
    recv: &mut quinn::RecvStream,
    max_frame_bytes: u32,
    resend: Resend,
) -> Result<Response, Failure> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(Failure::fatal(ClientError::Protocol(format!(
                "the reply stream ended after {n} bytes, before a frame header"
            ))));
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(read_failure(e, resend)),
    }
    let len = frame_len(header);
    if len > max_frame_bytes {
        let _ = recv.stop(VarInt::from_u32(quic_code::FRAME_TOO_LARGE));
        return Err(Failure::fatal(ClientError::Protocol(format!(
            "reply frame of {len} bytes exceeds the limit of {max_frame_bytes} bytes"
        ))));
    }
    let body = match read_body(recv, len as usize).await {
        Ok(body) => body,
        Err(BodyError::TooLong) => {
            let _ = recv.stop(VarInt::from_u32(quic_code::PROTOCOL_VIOLATION));
            return Err(Failure::fatal(ClientError::Protocol(
                "bytes after the reply frame: one reply per stream".into(),
            )));
        }
        Err(BodyError::Read(e)) => return Err(read_failure(e, resend)),
        Err(BodyError::Short(got)) => {
            return Err(Failure::fatal(ClientError::Protocol(format!(
                "the reply stream ended {got} bytes into a frame of {len} bytes"
            ))));
        }
    };
    let mut framed = BytesMut::with_capacity(FRAME_HEADER_BYTES + body.len());
    framed.extend_from_slice(&header);
    framed.extend_from_slice(&body);
    match decode_frame::<Response>(&mut framed, max_frame_bytes) {
        Ok(Some(response)) => Ok(response),
        Ok(None) => Err(Failure::fatal(ClientError::Protocol(
            "incomplete reply frame".into(),
        ))),
        Err(e) => Err(Failure::fatal(ClientError::Protocol(format!(
            "bad reply frame: {e}"
        )))),
    }
}

impl Client {
    /// Connects every connection of the pool, sending `Hello` (with the
    /// token) on each.
    ///
    /// # Errors
    ///
    /// [`ClientError::Config`] / [`ClientError::TlsConfig`] for a config
    /// that cannot work, [`ClientError::Connect`] / [`ClientError::Tls`] if
    /// the server cannot be reached or verified, and
    /// [`ClientError::Server`] if it refuses `Hello` (for example
    /// `Unauthenticated` for a missing or wrong token).
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        if config.connections == 0 {
            return Err(ClientError::Config(
                "the pool needs at least one connection".into(),
            ));
        }
        if config.request_timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(ClientError::Config("timeouts must be above 0".into()));
        }
        let first = resolve(&config.addr, None).await?;
        let client_config = crate::net::quic_client_config(
            &config.trust,
            &[ALPN],
            config.identity.as_ref(),
            &config.transport,
        )?;
        let local: SocketAddr = if first.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = endpoint(local, None).map_err(|e| ClientError::Connect {
            addr: config.addr.clone(),
            reason: format!("binding a local UDP socket: {e}"),
        })?;
        endpoint.set_default_client_config(client_config);
        let slots = (0..config.connections).map(|_| Slot::default()).collect();
        let breaker = Breaker::new(config.breaker_failures, config.breaker_cooldown);
        let placeholder = HelloReply {
            protocol: PROTOCOL_VERSION,
            server: String::new(),
            node_id: None,
            role: None,
            limits: Limits::default(),
        };
        let client = Client {
            inner: Arc::new(Inner {
                config,
                endpoint,
                slots,
                next_slot: AtomicUsize::new(0),
                breaker: Mutex::new(breaker),
                hello: Mutex::new(placeholder),
            }),
        };
        for slot in 0..client.inner.slots.len() {
            if let Err(failure) = client.session(slot).await {
                client.record(&failure);
                return Err(failure.error);
            }
        }
        lock(&client.inner.breaker).on_success();
        Ok(client)
    }

    /// What the server said in its newest `Hello` reply: its version, node
    /// id, role and limits.
    pub fn server_info(&self) -> HelloReply {
        lock(&self.inner.hello).clone()
    }

    /// The configuration the client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Closes every connection of the pool (waiting briefly for the server
    /// to acknowledge). Requests made afterwards connect again.
    pub async fn close(&self) {
        for slot in self.inner.slots.iter() {
            if let Some(session) = lock(&slot.current).take() {
                session
                    .conn
                    .close(VarInt::from_u32(quic_code::NO_ERROR), b"client closing");
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    /// Sends any request and returns the server's reply, with the retries
    /// and breaker of the module docs. The request is checked against the
    /// server's limits first.
    ///
    /// # Errors
    ///
    /// An error reply is returned as [`ClientError::Server`], never as
    /// `Ok(Response::Error(..))`; see [`ClientError`] for the rest.
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let limits = lock(&self.inner.hello).limits;
        request.validate(&limits)?;
        let frame = encode_request(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let body_len = (frame.len() - FRAME_HEADER_BYTES) as u64;
        if body_len > u64::from(limits.max_frame_bytes) {
            return Err(ClientError::FrameTooLarge {
                len: body_len,
                max: limits.max_frame_bytes,
            });
        }
        let idempotent = request.is_idempotent();
        let op = request.op_name();
        let mut attempt = 0u32;
        let mut last: Option<ClientError> = None;
        loop {
            let probe = match lock(&self.inner.breaker).admit(Instant::now()) {
                Ok(probe) => probe,
                Err(open) => {
                    // A call that already tried reports what actually went wrong.
                    return Err(last.unwrap_or(open));
                }
            };
            let (error, resend, retry_after) = match self.attempt(op, &frame).await {
                Ok(Response::Error(reply)) => {
                    lock(&self.inner.breaker).on_success();
                    let resend = resend_for_code(reply.code);
                    let retry_after = reply.retry_after_ms.map(Duration::from_millis);
                    (ClientError::from_reply(reply), resend, retry_after)
                }
                Ok(response) => {
                    lock(&self.inner.breaker).on_success();
                    return Ok(response);
                }
                Err(failure) => {
                    if !failure.transport && probe {
                        // The server answered the probe in some way: it is up.
                        lock(&self.inner.breaker).on_success();
                    }
                    self.record(&failure);
                    (failure.error, failure.resend, None)
                }
            };
            let may_resend = match resend {
                Resend::Any => true,
                Resend::IfIdempotent => idempotent,
                Resend::Never => false,
            };
            if !may_resend || attempt >= self.inner.config.retries {
                return Err(error);
            }
            let delay = backoff(
                self.inner.config.backoff_base,
                self.inner.config.backoff_max,
                attempt,
            )
            .max(retry_after.unwrap_or_default());
            attempt += 1;
            last = Some(error);
            tokio::time::sleep(delay).await;
        }
    }

    fn record(&self, failure: &Failure) {
        if failure.transport {
            lock(&self.inner.breaker).on_failure(Instant::now());
        }
    }

    /// One attempt: pick a connection (connecting if needed), exchange the
    /// frame within the request timeout.
    async fn attempt(&self, op: &'static str, frame: &Bytes) -> Result<Response, Failure> {
        let n = self.inner.slots.len();
        let slot = self.inner.next_slot.fetch_add(1, Ordering::Relaxed) % n;
        let session = self.session(slot).await?;
        let timeout = self.inner.config.request_timeout;
        let sent = AtomicBool::new(false);
        let result = tokio::time::timeout(
            timeout,
            exchange(&session.conn, frame, session.max_frame_bytes, &sent),
        )
        .await;
        match result {
            Ok(Ok(response)) => {
                if matches!(&response, Response::Error(e) if e.code == ErrorCode::ShuttingDown) {
                    // Retry on a new connection (errors.md).
                    self.forget(slot, &session.conn);
                }
                Ok(response)
            }
            Ok(Err(failure)) => {
                if failure.transport {
                    self.forget(slot, &session.conn);
                }
                Err(failure)
            }
            Err(_) => {
                // NOTE: a silent connection (a killed server, a broken path)
                // gives no error until the idle timeout; forgetting it lets
                // the next request on this slot find out with a handshake.
                self.forget(slot, &session.conn);
                let resend = if sent.load(Ordering::Acquire) {
                    Resend::IfIdempotent
                } else {
                    Resend::Any
                };
                Err(Failure::transport(
                    ClientError::Timeout { op, after: timeout },
                    resend,
                ))
            }
        }
    }

    /// Drops `conn` from `slot` if it is still there. Requests in flight on
    /// it keep their handle; the connection closes when the last one ends.
    fn forget(&self, slot: usize, conn: &quinn::Connection) {
        let mut current = lock(&self.inner.slots[slot].current);
        if current
            .as_ref()
            .is_some_and(|s| s.conn.stable_id() == conn.stable_id())
        {
            *current = None;
        }
    }

    /// The slot's live session, connecting (and sending `Hello`) if it has
    /// none.
    async fn session(&self, slot: usize) -> Result<Session, Failure> {
        let slot = &self.inner.slots[slot];
        if let Some(session) = slot.live() {
            return Ok(session);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(session) = slot.live() {
            return Ok(session);
        }
        let timeout = self.inner.config.connect_timeout;
        let (session, hello) = match tokio::time::timeout(timeout, self.establish()).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Failure::transport(
                    ClientError::Connect {
                        addr: self.inner.config.addr.clone(),
                        reason: format!("no connection within {} ms", timeout.as_millis()),
                    },
                    Resend::Any,
                ));
            }
        };
        *lock(&slot.current) = Some(session.clone());
        *lock(&self.inner.hello) = hello;
        Ok(session)
    }

    /// Resolves, handshakes and says `Hello`.
    async fn establish(&self) -> Result<(Session, HelloReply), Failure> {
        let config = &self.inner.config;
        let local = self
            .inner
            .endpoint
            .local_addr()
            .map_err(|e| Failure::fatal(ClientError::Config(e.to_string())))?;
        let addr = resolve(&config.addr, Some(local.is_ipv6()))
            .await
            .map_err(|e| Failure::transport(e, Resend::Any))?;
        let connecting = self
            .inner
            .endpoint
            .connect(addr, &config.server_name)
            .map_err(|e| {
                Failure::fatal(ClientError::Config(format!(
                    "cannot connect to {addr} as {:?}: {e}",
                    config.server_name
                )))
            })?;
        let conn = connecting.await.map_err(|e| handshake_failure(addr, e))?;
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            token: config.token.clone(),
            client_name: config.client_name.clone(),
        };
        let frame = encode_request(&hello)
            .map_err(|e| Failure::fatal(ClientError::Protocol(e.to_string())))?;
        let sent = AtomicBool::new(false);
        // Before Hello, the default frame limit (wire-protocol.md §5).
        let refused = |conn: &quinn::Connection| {
            conn.close(VarInt::from_u32(quic_code::NO_ERROR), b"hello failed");
        };
        let reply = match exchange(&conn, &frame, DEFAULT_MAX_FRAME_BYTES, &sent).await {
            Ok(Response::Hello(reply)) => reply,
            Ok(Response::Error(e)) => {
                refused(&conn);
                let resend = resend_for_code(e.code);
                return Err(Failure {
                    error: ClientError::from_reply(e),
                    resend,
                    transport: false,
                });
            }
            Ok(other) => {
                refused(&conn);
                return Err(Failure::fatal(ClientError::Protocol(format!(
                    "expected a Hello reply, got {other:?}"
                ))));
            }
            Err(mut failure) => {
                refused(&conn);
                // Hello is idempotent: resending it on a new connection is safe.
                if failure.resend == Resend::IfIdempotent {
                    failure.resend = Resend::Any;
                }
                return Err(failure);
            }
        };
        if reply.protocol != PROTOCOL_VERSION {
            refused(&conn);
            return Err(Failure::fatal(ClientError::Protocol(format!(
                "the server speaks protocol {} on a strata/1 connection",
                reply.protocol
            ))));
        }
        let session = Session {
            conn,
            max_frame_bytes: reply.limits.max_frame_bytes,
        };
        Ok((session, reply))
    }

    fn ack(&self, ack: Option<AckPolicy>) -> Option<AckPolicy> {
        ack.or(self.inner.config.default_ack)
    }

    /// Checks that the server is up and answering.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// Reads a key: its value, version and remaining TTL, or `None` if it is
    /// absent (or expired).
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Entry>, ClientError> {
        match self.request(Request::Get { key: key.into() }).await? {
            Response::Value(entry) => Ok(entry),
            other => Err(unexpected("get", &other)),
        }
    }

    /// Reads many keys in one request: one slot per key, in order.
    pub async fn get_many<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<Entry>>, ClientError> {
        let keys: Vec<Bytes> = keys.into_iter().map(Into::into).collect();
        let count = keys.len();
        match self.request(Request::MultiGet { keys }).await? {
            Response::Values(values) if values.len() == count => Ok(values),
            Response::Values(values) => Err(ClientError::Protocol(format!(
                "multi_get of {count} keys answered with {} values",
                values.len()
            ))),
            other => Err(unexpected("multi_get", &other)),
        }
    }

    /// How many of the keys exist (a key named twice counts twice).
    pub async fn exists<K: Into<Bytes>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<u64, ClientError> {
        let keys = keys.into_iter().map(Into::into).collect();
        match self.request(Request::Exists { keys }).await? {
            Response::Count(n) => Ok(n),
            other => Err(unexpected("exists", &other)),
        }
    }

    /// A key's time to live.
    pub async fn ttl(&self, key: impl Into<Bytes>) -> Result<TtlState, ClientError> {
        match self.request(Request::Ttl { key: key.into() }).await? {
            Response::Ttl(state) => Ok(state),
            other => Err(unexpected("ttl", &other)),
        }
    }

    /// When a key expires, as a Unix time in ms.
    pub async fn deadline(&self, key: impl Into<Bytes>) -> Result<DeadlineState, ClientError> {
        match self.request(Request::Deadline { key: key.into() }).await? {
            Response::Deadline(state) => Ok(state),
            other => Err(unexpected("deadline", &other)),
        }
    }

    /// Writes a key unconditionally, without TTL.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<WriteReply, ClientError> {
        match self.set_with(key, value, SetOptions::new()).await? {
            SetOutcome::Written(reply) => Ok(reply),
            SetOutcome::NotWritten { .. } => Err(ClientError::Protocol(
                "an unconditional set was answered NotWritten".into(),
            )),
        }
    }

    /// Writes a key with a TTL, a condition and an acknowledgement policy.
    /// A condition that does not hold is an `Ok(SetOutcome::NotWritten)`,
    /// not an error.
    pub async fn set_with(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        options: SetOptions,
    ) -> Result<SetOutcome, ClientError> {
        let request = options.request(key.into(), value.into(), self.ack(options.ack));
        match self.request(request).await? {
            Response::Written(reply) => Ok(SetOutcome::Written(reply)),
            Response::NotWritten { current_version } => {
                Ok(SetOutcome::NotWritten { current_version })
            }
            other => Err(unexpected("set", &other)),
        }
    }

    /// Writes several keys atomically, all at one version.
    pub async fn set_many<K: Into<Bytes>, V: Into<Bytes>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<WriteReply, ClientError> {
        let entries = entries
            .into_iter()
            .map(|(key, value)| SetEntry {
                key: key.into(),
                value: value.into(),
                ttl_ms: None,
            })
            .collect();
        self.set_many_with(entries, None).await
    }

    /// Writes several entries (each with its own TTL) atomically.
    pub async fn set_many_with(
        &self,
        entries: Vec<SetEntry>,
        ack: Option<AckPolicy>,
    ) -> Result<WriteReply, ClientError> {
        let request = Request::MultiSet {
            entries,
            ack: self.ack(ack),
        };
        match self.request(request).await? {
            Response::Written(reply) => Ok(reply),
            other => Err(unexpected("multi_set", &other)),
        }
    }

    /// Deletes a key.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Deleted, ClientError> {
        let request = Request::Delete {
            key: key.into(),
            condition: Condition::Always,
            ack: self.ack(None),
        };
        match self.request(request).await? {
            Response::Deleted {
                existed,
                durability,
            } => Ok(Deleted {
                existed,
                durability,
            }),
            other => Err(unexpected("delete", &other)),
        }
    }

    /// Deletes a key only if it is at `version`.
    pub async fn delete_if_version(
        &self,
        key: impl Into<Bytes>,
        version: Seq,
    ) -> Result<DeleteOutcome, ClientError> {
        let request = Request::Delete {
            key: key.into(),
            condition: Condition::IfVersion(version),
            ack: self.ack(None),
        };
        match self.request(request).await? {
            Response::Deleted {
                existed,
                durability,
            } => Ok(DeleteOutcome::Deleted(Deleted {
                existed,
                durability,
            })),
            Response::NotWritten { current_version } => {
                Ok(DeleteOutcome::NotWritten { current_version })
            }
            other => Err(unexpected("delete", &other)),
        }
    }

    /// Sets the TTL of an existing key.
    pub async fn expire(
        &self,
        key: impl Into<Bytes>,
        ttl: Duration,
    ) -> Result<Updated, ClientError> {
        let request = Request::Expire {
            key: key.into(),
            ttl_ms: ttl_ms(ttl),
            ack: self.ack(None),
        };
        self.updated("expire", request).await
    }

    /// Sets an existing key to expire at the Unix time `at_ms` (ms, as the
    /// server's clock reads it; above 0). One already past expires it now.
    pub async fn expire_at(
        &self,
        key: impl Into<Bytes>,
        at_ms: u64,
    ) -> Result<Updated, ClientError> {
        let request = Request::ExpireAt {
            key: key.into(),
            at_ms,
            ack: self.ack(None),
        };
        self.updated("expire_at", request).await
    }

    /// Removes the TTL of an existing key.
    pub async fn persist(&self, key: impl Into<Bytes>) -> Result<Updated, ClientError> {
        let request = Request::Persist {
            key: key.into(),
            ack: self.ack(None),
        };
        self.updated("persist", request).await
    }

    async fn updated(&self, op: &str, request: Request) -> Result<Updated, ClientError> {
        match self.request(request).await? {
            Response::Updated {
                existed,
                durability,
            } => Ok(Updated {
                existed,
                durability,
            }),
            other => Err(unexpected(op, &other)),
        }
    }

    /// Adds `delta` to the decimal integer at `key` (a missing key counts as
    /// 0) and returns the new value. Never retried after it may have reached
    /// the server: a resent increment would add twice.
    pub async fn incr(&self, key: impl Into<Bytes>, delta: i64) -> Result<i64, ClientError> {
        Ok(self.incr_with(key, delta, None).await?.value)
    }

    /// [`incr`](Self::incr) with an acknowledgement policy, reporting the
    /// durability reached.
    pub async fn incr_with(
        &self,
        key: impl Into<Bytes>,
        delta: i64,
        ack: Option<AckPolicy>,
    ) -> Result<Incremented, ClientError> {
        let request = Request::Incr {
            key: key.into(),
            delta,
            ack: self.ack(ack),
        };
        match self.request(request).await? {
            Response::Int { value, durability } => Ok(Incremented { value, durability }),
            other => Err(unexpected("incr", &other)),
        }
    }

    /// One page of the keys starting with `prefix`, in (slot, key) order
    /// (a cluster node lists its shard's keys only). Start with `cursor`
    /// None and pass each page's `next_cursor` until it is None. `limit` 0
    /// lets the server choose the page size.
    pub async fn scan(
        &self,
        prefix: impl Into<Bytes>,
        cursor: Option<Bytes>,
        limit: u32,
    ) -> Result<ScanPage, ClientError> {
        let request = Request::Scan {
            prefix: prefix.into(),
            cursor,
            limit,
        };
        match self.request(request).await? {
            Response::Page(page) => Ok(page),
            other => Err(unexpected("scan", &other)),
        }
    }

    /// Every key starting with `prefix`, with its entry, page after page.
    /// Not a snapshot: keys written meanwhile may or may not appear.
    pub async fn scan_all(
        &self,
        prefix: impl Into<Bytes>,
    ) -> Result<Vec<(Bytes, Entry)>, ClientError> {
        let prefix = prefix.into();
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.scan(prefix.clone(), cursor, 0).await?;
            out.extend(page.entries);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Pushes `values`, in order, at `end` of the list at `key`, creating
    /// it unless `only_if_exists`; returns its length (0: `only_if_exists`
    /// found no list). Never retried after it may have reached the server.
    pub async fn push<V: Into<Bytes>>(
        &self,
        key: impl Into<Bytes>,
        end: End,
        values: impl IntoIterator<Item = V>,
        only_if_exists: bool,
    ) -> Result<u64, ClientError> {
        let request = Request::Push {
            key: key.into(),
            end,
            values: values.into_iter().map(Into::into).collect(),
            only_if_exists,
            ack: self.ack(None),
        };
        match self.request(request).await? {
            Response::Length { len, .. } => Ok(len),
            other => Err(unexpected("push", &other)),
        }
    }

    /// Takes up to `count` values from `end` of the list at `key` (`None`:
    /// no list). Never retried after it may have reached the server.
    pub async fn pop(
        &self,
        key: impl Into<Bytes>,
        end: End,
        count: u32,
    ) -> Result<Option<Vec<Bytes>>, ClientError> {
        let request = Request::Pop {
            key: key.into(),
            end,
            count,
            ack: self.ack(None),
        };
        match self.request(request).await? {
            Response::Popped { values, .. } => Ok(values),
            other => Err(unexpected("pop", &other)),
        }
    }

    /// The values at positions `start..=stop` of the list at `key`
    /// (negative from the right end), at most `max_keys_per_request`.
    pub async fn list_range(
        &self,
        key: impl Into<Bytes>,
        start: i64,
        stop: i64,
    ) -> Result<Vec<Bytes>, ClientError> {
        let key = key.into();
        match self
            .request(Request::ListRange { key, start, stop })
            .await?
        {
            Response::Elements(values) => Ok(values),
            other => Err(unexpected("list_range", &other)),
        }
    }

    /// The length of the list at `key` (0: no list).
    pub async fn list_len(&self, key: impl Into<Bytes>) -> Result<u64, ClientError> {
        match self.request(Request::ListLen { key: key.into() }).await? {
            Response::Count(n) => Ok(n),
            other => Err(unexpected("list_len", &other)),
        }
    }

    /// The value at `index` of the list at `key` (negative from the right).
    pub async fn list_index(
        &self,
        key: impl Into<Bytes>,
        index: i64,
    ) -> Result<Option<Bytes>, ClientError> {
        let key = key.into();
        match self.request(Request::ListIndex { key, index }).await? {
            Response::Element(value) => Ok(value),
            other => Err(unexpected("list_index", &other)),
        }
    }

    /// The kind of value at `key` (`None`: absent).
    pub async fn kind(&self, key: impl Into<Bytes>) -> Result<Option<ValueKind>, ClientError> {
        match self.request(Request::Type { key: key.into() }).await? {
            Response::Kind(kind) => Ok(kind),
            other => Err(unexpected("type", &other)),
        }
    }

    /// [`scan`](Self::scan) for keys of every kind (or only `kind`), with
    /// their kinds and without values.
    pub async fn scan_keys(
        &self,
        prefix: impl Into<Bytes>,
        cursor: Option<Bytes>,
        limit: u32,
        kind: Option<ValueKind>,
    ) -> Result<KeyPage, ClientError> {
        let request = Request::ScanKeys {
            prefix: prefix.into(),
            cursor,
            limit,
            kind,
        };
        match self.request(request).await? {
            Response::Keys(page) => Ok(page),
            other => Err(unexpected("scan_keys", &other)),
        }
    }

    /// Adds `members` (name and value; a set's values are empty) to the set
    /// or hash of `kind` at `key`, creating it; returns how many are new.
    /// With `only_new`, members already there keep their values.
    pub async fn add_members(
        &self,
        key: impl Into<Bytes>,
        kind: ValueKind,
        members: Vec<(Bytes, Bytes)>,
        only_new: bool,
    ) -> Result<u64, ClientError> {
        let request = Request::AddMembers {
            key: key.into(),
            kind,
            members,
            only_new,
            ack: self.ack(None),
        };
        self.counted("add_members", request).await
    }

    /// Removes `members` from the set, hash or sorted set of `kind` at `key`; returns
    /// how many were there.
    pub async fn remove_members(
        &self,
        key: impl Into<Bytes>,
        kind: ValueKind,
        members: Vec<Bytes>,
    ) -> Result<u64, ClientError> {
        let request = Request::RemoveMembers {
            key: key.into(),
            kind,
            members,
            ack: self.ack(None),
        };
        self.counted("remove_members", request).await
    }

    async fn counted(&self, op: &str, request: Request) -> Result<u64, ClientError> {
        match self.request(request).await? {
            Response::Counted { count, .. } => Ok(count),
            other => Err(unexpected(op, &other)),
        }
    }

    /// Takes up to `count` members of the set at `key`, the first in byte
    /// order (`None`: no set).
    pub async fn pop_members(
        &self,
        key: impl Into<Bytes>,
        count: u32,
    ) -> Result<Option<Vec<Bytes>>, ClientError> {
        let request = Request::PopMembers {
            key: key.into(),
            count,
            ack: self.ack(None),
        };
        match self.request(request).await? {
            Response::Popped { values, .. } => Ok(values),
            other => Err(unexpected("pop_members", &other)),
        }
    }

    /// Adds `delta` to the decimal integer in `field` of the hash at `key`;
    /// returns the new value.
    pub async fn incr_field(
        &self,
        key: impl Into<Bytes>,
        field: impl Into<Bytes>,
        delta: i64,
    ) -> Result<i64, ClientError> {
        let request = Request::IncrField {
            key: key.into(),
            field: field.into(),
            delta,
            ack: self.ack(None),
        };
        match self.request(request).await? {
            Response::Int { value, .. } => Ok(value),
            other => Err(unexpected("incr_field", &other)),
        }
    }

    /// The values of `members` of the set or hash of `kind` at `key`, in
    /// order (`None` for one it lacks).
    pub async fn member_values(
        &self,
        key: impl Into<Bytes>,
        kind: ValueKind,
        members: Vec<Bytes>,
    ) -> Result<Vec<Option<Bytes>>, ClientError> {
        let key = key.into();
        match self
            .request(Request::MemberValues { key, kind, members })
            .await?
        {
            Response::MemberValues(values) => Ok(values),
            other => Err(unexpected("member_values", &other)),
        }
    }

    /// One page of members (name and value) of the set or hash of `kind`
    /// at `key`, in byte order after `after`; a page shorter than `limit`
    /// (0: the server's choice) is the last.
    pub async fn scan_members(
        &self,
        key: impl Into<Bytes>,
        kind: ValueKind,
        after: Option<Bytes>,
        limit: u32,
    ) -> Result<Vec<(Bytes, Bytes)>, ClientError> {
        let request = Request::ScanMembers {
            key: key.into(),
            kind,
            after,
            limit,
        };
        match self.request(request).await? {
            Response::Members(members) => Ok(members),
            other => Err(unexpected("scan_members", &other)),
        }
    }

    /// How many members the set, hash or sorted set of `kind` at `key` holds.
    pub async fn count_members(
        &self,
        key: impl Into<Bytes>,
        kind: ValueKind,
    ) -> Result<u64, ClientError> {
        let key = key.into();
        match self.request(Request::CountMembers { key, kind }).await? {
            Response::Count(n) => Ok(n),
            other => Err(unexpected("count_members", &other)),
        }
    }

    /// Scores `members` (name, score) in the sorted set at `key`, creating
    /// it, where `rule` allows (Redis's `ZADD` flags); returns how many are
    /// new, and with `count_changed` also how many changed score.
    pub async fn add_scores(
        &self,
        key: impl Into<Bytes>,
        members: Vec<(Bytes, f64)>,
        rule: ScoreRule,
        count_changed: bool,
    ) -> Result<u64, ClientError> {
        let request = Request::AddScores {
            key: key.into(),
            members: members.into_iter().map(|(m, s)| (m, Score(s))).collect(),
            exists: rule.exists,
            update: rule.update,
            count_changed,
            ack: self.ack(None),
        };
        self.counted("add_scores", request).await
    }

    /// Adds `delta` to the score of `member` (0 if absent) in the sorted
    /// set at `key`, where `rule` allows the result; returns the new score
    /// (`None`: refused).
    pub async fn incr_score(
        &self,
        key: impl Into<Bytes>,
        member: impl Into<Bytes>,
        delta: f64,
        rule: ScoreRule,
    ) -> Result<Option<f64>, ClientError> {
        let request = Request::IncrScore {
            key: key.into(),
            member: member.into(),
            delta: Score(delta),
            exists: rule.exists,
            update: rule.update,
            ack: self.ack(None),
        };
        match self.request(request).await? {
            Response::Score { score, .. } => Ok(score.map(|s| s.0)),
            other => Err(unexpected("incr_score", &other)),
        }
    }

    /// The scores of `members` in the sorted set at `key`, in order
    /// (`None` for one it lacks).
    pub async fn scores(
        &self,
        key: impl Into<Bytes>,
        members: Vec<Bytes>,
    ) -> Result<Vec<Option<f64>>, ClientError> {
        let key = key.into();
        match self.request(Request::Scores { key, members }).await? {
            Response::Scores(scores) => Ok(scores.into_iter().map(|s| s.map(|s| s.0)).collect()),
            other => Err(unexpected("scores", &other)),
        }
    }

    /// Takes up to `count` members with their scores from `end` of the
    /// sorted set at `key` (`Left`: the lowest first).
    pub async fn pop_scores(
        &self,
        key: impl Into<Bytes>,
        end: End,
        count: u32,
    ) -> Result<Vec<(Bytes, f64)>, ClientError> {
        let request = Request::PopScores {
            key: key.into(),
            end,
            count,
            ack: self.ack(None),
        };
        self.scored("pop_scores", request).await
    }

    /// The members with their scores at ranks `start..=stop` of the sorted
    /// set at `key`, ranked from `end` (`Left`: rank 0 is the lowest).
    pub async fn score_range(
        &self,
        key: impl Into<Bytes>,
        start: i64,
        stop: i64,
        end: End,
    ) -> Result<Vec<(Bytes, f64)>, ClientError> {
        let request = Request::ScoreRange {
            key: key.into(),
            start,
            stop,
            end,
        };
        self.scored("score_range", request).await
    }

    async fn scored(&self, op: &str, request: Request) -> Result<Vec<(Bytes, f64)>, ClientError> {
        match self.request(request).await? {
            Response::Scored { members, .. } => {
                Ok(members.into_iter().map(|(m, s)| (m, s.0)).collect())
            }
            other => Err(unexpected(op, &other)),
        }
    }

    /// The node's `(name, value)` information pairs.
    pub async fn info(&self) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::Info).await
    }

    /// Admin: promotes this replica to primary (new epoch); returns the new
    /// history's `(name, value)` pairs.
    pub async fn promote(&self) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::Promote).await
    }

    /// Admin: makes the node a replica of `primary` (its replication address).
    pub async fn replica_of(&self, primary: &str) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::ReplicaOf {
            primary: primary.to_string(),
        })
        .await
    }

    /// The node's committed cluster map (`BadRequest` outside cluster mode).
    pub async fn cluster_map(&self) -> Result<ClusterMapReply, ClientError> {
        match self.request(Request::ClusterMap).await? {
            Response::ClusterMap(map) => Ok(map),
            other => Err(unexpected("cluster_map", &other)),
        }
    }

    /// Admin: a planned switchover of `shard` to the replica named `to`
    /// (or the best caught-up one), on the metadata leader; answers once
    /// the map names the new primary (`map_version`, `primary`). It takes
    /// at least twice the cluster's lease: give the client a request
    /// timeout to match.
    pub async fn cluster_failover(
        &self,
        shard: u32,
        to: Option<&str>,
    ) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::ClusterFailover {
            shard,
            to: to.map(str::to_string),
            unclean: false,
            dry_run: false,
        })
        .await
    }

    /// Admin: promotes the best replica that reported (or `to`) of a shard
    /// whose primary failed and that cannot fail over cleanly; with
    /// `dry_run`, only says whom and how far behind (`promote`,
    /// `behind_records`, and `map_version` once done).
    pub async fn cluster_failover_unclean(
        &self,
        shard: u32,
        to: Option<&str>,
        dry_run: bool,
    ) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::ClusterFailover {
            shard,
            to: to.map(str::to_string),
            unclean: true,
            dry_run,
        })
        .await
    }

    /// The node's committed cluster map if it is newer than `version`;
    /// `None` when the node's map is not newer. A node too old to know the
    /// request (it answers `BadRequest`) is asked for its whole map.
    pub async fn cluster_map_since(
        &self,
        version: u64,
    ) -> Result<Option<ClusterMapReply>, ClientError> {
        match self.request(Request::ClusterMapSince { version }).await {
            Ok(Response::ClusterMap(map)) => Ok(Some(map)),
            Ok(Response::ClusterMapCurrent { .. }) => Ok(None),
            Ok(other) => Err(unexpected("cluster_map_since", &other)),
            Err(e) if e.code() == Some(ErrorCode::BadRequest) => {
                let map = self.cluster_map().await?;
                Ok((map.version > version).then_some(map))
            }
            Err(e) => Err(e),
        }
    }

    /// Admin: starts the cluster's metadata group with this node as its
    /// first voter.
    pub async fn cluster_init(&self) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::ClusterInit).await
    }

    /// Admin: commits a cluster-map command (postcard `MapCommand`) on the
    /// metadata leader; returns `map_version`.
    pub async fn cluster_propose(
        &self,
        command: Bytes,
    ) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::ClusterPropose { command }).await
    }

    /// A digest of the node's live data (`seq`, `keys`, `sha256`), leaving
    /// out entries expiring at or before `expired_before_ms` (0: now).
    pub async fn digest(
        &self,
        expired_before_ms: u64,
    ) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::Digest { expired_before_ms }).await
    }

    /// Admin: checkpoints now (`covered`, `segments_removed`).
    pub async fn checkpoint(&self) -> Result<Vec<(String, String)>, ClientError> {
        self.pairs(Request::Checkpoint).await
    }

    /// Admin: one page of a consistent snapshot of every live entry (an
    /// online dump). Start with `(None, None)`; continue with the page's
    /// `snapshot` and `next` until `next` is `None`.
    pub async fn snapshot_page(
        &self,
        snapshot: Option<u64>,
        after: Option<Bytes>,
    ) -> Result<SnapshotPage, ClientError> {
        match self.request(Request::Snapshot { snapshot, after }).await? {
            Response::Snapshot(page) => Ok(page),
            other => Err(unexpected("snapshot", &other)),
        }
    }

    /// Admin: [`snapshot_page`](Self::snapshot_page) of the store's entries
    /// as they are: every kind, with its kind, a list's elements under
    /// their internal keys (what a dump of a node holding lists needs).
    pub async fn raw_snapshot_page(
        &self,
        snapshot: Option<u64>,
        after: Option<Bytes>,
    ) -> Result<RawSnapshotPage, ClientError> {
        match self
            .request(Request::RawSnapshot { snapshot, after })
            .await?
        {
            Response::RawSnapshot(page) => Ok(page),
            other => Err(unexpected("raw_snapshot", &other)),
        }
    }

    async fn pairs(&self, request: Request) -> Result<Vec<(String, String)>, ClientError> {
        let op = request.op_name();
        match self.request(request).await? {
            Response::Info(pairs) => Ok(pairs),
            other => Err(unexpected(op, &other)),
        }
    }
}

fn unexpected(op: &str, response: &Response) -> ClientError {
    ClientError::Protocol(format!("unexpected reply to {op}: {response:?}"))
}

/// Whole milliseconds, rounded up so that a short positive TTL never becomes
/// the invalid 0.
fn ttl_ms(ttl: Duration) -> u64 {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 && !ttl.is_zero() { 1 } else { ms }
}

/// Resolves `addr`, preferring the given address family (the local
/// endpoint's) when there is a choice.
async fn resolve(addr: &str, want_v6: Option<bool>) -> Result<SocketAddr, ClientError> {
    let failed = |reason: String| ClientError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let found: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| failed(format!("cannot resolve: {e}")))?
        .collect();
    let pick = match want_v6 {
        Some(v6) => found.iter().find(|a| a.is_ipv6() == v6),
        None => found.first(),
    };
    pick.copied()
        .ok_or_else(|| failed("resolves to no usable address".into()))
}

/// The delay before retry number `attempt + 1`: `base * 2^attempt`, capped
/// at `max`, of which a random half is jitter (so clients that failed
/// together do not retry together).
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = exp / 2;
    let jitter_us = u64::try_from(half.as_micros()).unwrap_or(u64::MAX);
    half + Duration::from_micros(rand::random_range(0..=jitter_us))
}

/// The circuit breaker's state machine (no I/O; time is passed in).
#[derive(Debug)]
struct Breaker {
    /// Failures in a row that open it; 0 disables it.
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    state: BreakerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is in flight since `since`.
    HalfOpen {
        since: Instant,
    },
}

impl Breaker {
    fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold,
            cooldown,
            failures: 0,
            state: BreakerState::Closed,
        }
    }

    /// Whether a call may go ahead: `Ok(true)` for the probe of a half-open
    /// breaker, `Ok(false)` normally, `Err(CircuitOpen)` to fail it at once.
    fn admit(&mut self, now: Instant) -> Result<bool, ClientError> {
        match self.state {
            BreakerState::Closed => Ok(false),
            BreakerState::Open { until } if now < until => Err(self.open_error(until - now)),
            BreakerState::Open { .. } => {
                self.state = BreakerState::HalfOpen { since: now };
                Ok(true)
            }
            // NOTE: a probe whose call was dropped never reports back; after
            // another cooldown the next call becomes the probe instead.
            BreakerState::HalfOpen { since } if now < since + self.cooldown => {
                Err(self.open_error(since + self.cooldown - now))
            }
            BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::HalfOpen { since: now };
                Ok(true)
            }
        }
    }

    fn open_error(&self, retry_in: Duration) -> ClientError {
        ClientError::CircuitOpen {
            failures: self.failures,
            retry_in,
        }
    }

    fn on_success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
    }

    fn on_failure(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        if self.threshold == 0 {
            return;
        }
        let probe_failed = matches!(self.state, BreakerState::HalfOpen { .. });
        if probe_failed || self.failures >= self.threshold {
            self.state = BreakerState::Open {
                until: now + self.cooldown,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handle is shared across tasks, and its calls can be spawned.
    #[test]
    fn client_and_its_futures_are_send_and_sync() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        fn spawnable<F: std::future::Future + Send>(_: F) {}
        shareable::<Client>();
        shareable::<ClientConfig>();
        #[expect(dead_code, reason = "only type-checked")]
        fn calls(client: Client) {
            spawnable(async move {
                let _ = client.get("k").await;
                let _ = client.set_with("k", "v", SetOptions::new()).await;
                let _ = client.scan_all("").await;
            });
        }
    }

    #[test]
    fn breaker_opens_after_threshold_and_probes_after_cooldown() {
        let t0 = Instant::now();
        let cooldown = Duration::from_secs(2);
        let mut b = Breaker::new(3, cooldown);
        for _ in 0..2 {
            assert!(matches!(b.admit(t0), Ok(false)));
            b.on_failure(t0);
        }
        assert!(
            matches!(b.admit(t0), Ok(false)),
            "still closed below the threshold"
        );
        b.on_failure(t0);
        match b.admit(t0 + Duration::from_millis(500)) {
            Err(ClientError::CircuitOpen { failures, retry_in }) => {
                assert_eq!(failures, 3);
                assert_eq!(retry_in, Duration::from_millis(1500));
            }
            other => panic!("{other:?}"),
        }
        // After the cooldown exactly one probe goes through.
        let t1 = t0 + cooldown;
        assert!(matches!(b.admit(t1), Ok(true)));
        assert!(matches!(b.admit(t1), Err(ClientError::CircuitOpen { .. })));
        // A failed probe opens it again for a whole cooldown.
        b.on_failure(t1);
        assert!(b.admit(t1 + cooldown - Duration::from_millis(1)).is_err());
        assert!(matches!(b.admit(t1 + cooldown), Ok(true)));
        // A successful probe closes it and resets the count.
        b.on_success();
        assert!(matches!(b.admit(t1 + cooldown), Ok(false)));
        b.on_failure(t1 + cooldown);
        assert!(matches!(b.admit(t1 + cooldown), Ok(false)));
    }

    #[test]
    fn lost_probe_is_replaced_after_a_cooldown() {
        let t0 = Instant::now();
        let cooldown = Duration::from_millis(100);
        let mut b = Breaker::new(1, cooldown);
        b.on_failure(t0);
        assert!(matches!(b.admit(t0 + cooldown), Ok(true)));
        // The probe never reports; a later call becomes the probe.
        assert!(b.admit(t0 + cooldown + Duration::from_millis(50)).is_err());
        assert!(matches!(b.admit(t0 + 2 * cooldown), Ok(true)));
    }

    #[test]
    fn disabled_breaker_never_opens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            b.on_failure(t0);
        }
        assert!(matches!(b.admit(t0), Ok(false)));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(20);
        let max = Duration::from_millis(300);
        for attempt in 0..10 {
            let full = (base * (1 << attempt)).min(max);
            for _ in 0..20 {
                let d = backoff(base, max, attempt);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} vs {full:?}"
                );
            }
        }
        assert!(backoff(base, max, u32::MAX) <= max);
    }

    #[test]
    fn resend_classes_follow_errors_md() {
        assert_eq!(resend_for_code(ErrorCode::Overloaded), Resend::Any);
        assert_eq!(resend_for_code(ErrorCode::ShuttingDown), Resend::Any);
        assert_eq!(resend_for_code(ErrorCode::Unavailable), Resend::Any);
        assert_eq!(resend_for_code(ErrorCode::Timeout), Resend::IfIdempotent);
        assert_eq!(
            resend_for_code(ErrorCode::ReplicationTimeout),
            Resend::Never
        );
        assert_eq!(resend_for_code(ErrorCode::NotAnInteger), Resend::Never);
        assert_eq!(resend_for_code(ErrorCode::Unrecognized), Resend::Never);
    }

    #[test]
    fn ttl_rounds_up_to_whole_ms() {
        assert_eq!(ttl_ms(Duration::from_micros(1)), 1);
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::ZERO), 0);
    }

    #[test]
    fn config_debug_hides_the_token() {
        let config = ClientConfig::new("127.0.0.1:1", ServerTrust::Pin([0; 32]))
            .with_token("super-secret-token");
        let text = format!("{config:?}");
        assert!(!text.contains("super-secret-token"), "{text}");
        assert!(text.contains("redacted"));
    }

    #[test]
    fn server_error_message_names_code_and_hint() {
        let e = ClientError::from_reply(
            ErrorReply::new(ErrorCode::ReadOnlyReplica, "read-only replica")
                .with_leader_hint("10.0.0.1:7400"),
        );
        assert_eq!(
            e.to_string(),
            "server error read_only_replica: read-only replica (the primary is 10.0.0.1:7400)"
        );
        assert_eq!(e.code(), Some(ErrorCode::ReadOnlyReplica));
    }
}
