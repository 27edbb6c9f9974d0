//! The client-facing QUIC server: one task per connection, one task per
//! request stream, each stream carrying exactly one request frame and one
//! response frame (proto-docs/wire-protocol.md §4).
//!
//! Hostile input is bounded at every step: connections by a semaphore
//! (excess ones are refused), streams per connection by QUIC flow control,
//! frame length before the body is read, buffered bytes by the QUIC receive
//! windows, and time by a per-request deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use quinn::{RecvStream, SendStream, VarInt};
use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{Config, Role, TokenConfig};
use crate::error::Error;
use crate::metrics::{self, Registry};
use crate::net::tls::{self, Identity};
use crate::net::{
    BodyError, TransportLimits, constant_time_eq, endpoint, quic_server_config, read_body,
};
use crate::proto::{
    ALPN, ErrorCode, ErrorReply, FRAME_HEADER_BYTES, Limits, Op, Request, Response, decode_body,
    encode_response, frame_len, quic_code,
};
use crate::sync::lock;
use crate::types::Cancel;

/// How long a shutdown waits for replies already written to be delivered.
const REPLY_DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a client shed for the request byte budget should wait.
const SHED_RETRY_AFTER_MS: u64 = 100;

/// The `op` label of the per-operation families.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabel {
    op: OpName,
}

/// [`Op`] as a label value: its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OpName(Op);

impl EncodeLabelValue for OpName {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.0.name())
    }
}

/// One operation's members of the per-operation families.
#[derive(Debug)]
struct OpHandles {
    requests: Counter,
    errors: Counter,
    latency: Histogram,
}

/// Request and connection metrics.
#[derive(Debug)]
pub struct ServerMetrics {
    requests: Family<OpLabel, Counter>,
    errors: Family<OpLabel, Counter>,
    latency: Family<OpLabel, Histogram, fn() -> Histogram>,
    /// The families' members by `Op as usize`: owned handles share their
    /// member's state, so recording needs no lookup by label.
    per_op: Vec<OpHandles>,
    /// Requests that never became a valid request (bad frames, timeouts).
    pub rejected_streams: Counter,
    /// Requests shed (`Overloaded`) because the request byte budget was spent.
    pub shed: Counter,
    /// The most request bytes ever charged to the budget at once.
    budget_high_water: Gauge<u64, AtomicU64>,
    /// Connections refused because the limit was reached.
    pub refused_connections: Counter,
    /// Connections accepted.
    pub connections: Counter,
    /// Connections open now.
    open_connections: Gauge,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let requests = Family::<OpLabel, Counter>::default();
        let errors = Family::<OpLabel, Counter>::default();
        let latency = Family::<OpLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            metrics::latency_histogram,
        );
        // Every operation is created up front, so each shows (as zeros)
        // from the first scrape.
        let per_op = Op::ALL
            .iter()
            .map(|&op| {
                let label = OpLabel { op: OpName(op) };
                OpHandles {
                    requests: requests.get_or_create_owned(&label),
                    errors: errors.get_or_create_owned(&label),
                    latency: latency.get_or_create_owned(&label),
                }
            })
            .collect();
        ServerMetrics {
            requests,
            errors,
            latency,
            per_op,
            rejected_streams: Counter::default(),
            shed: Counter::default(),
            budget_high_water: Gauge::default(),
            refused_connections: Counter::default(),
            connections: Counter::default(),
            open_connections: Gauge::default(),
        }
    }
}

impl ServerMetrics {
    fn record(&self, op: Op, ok: bool, took: Duration) {
        let Some(h) = self.per_op.get(op as usize) else {
            return;
        };
        h.requests.inc();
        if !ok {
            h.errors.inc();
        }
        metrics::observe(&h.latency, took);
    }

    /// Registers the request and connection families.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "strata_requests",
            "Requests served, by operation",
            self.requests.clone(),
        );
        registry.register(
            "strata_request_errors",
            "Requests answered with an error, by operation",
            self.errors.clone(),
        );
        registry.register(
            "strata_request_duration_seconds",
            "Time from request start to response, by operation",
            self.latency.clone(),
        );
        registry.register(
            "strata_rejected_streams",
            "Streams closed without a valid request (oversized, malformed, truncated, timed out)",
            self.rejected_streams.clone(),
        );
        registry.register(
            "strata_requests_shed",
            "Requests answered Overloaded before their body was read: the request byte budget was spent",
            self.shed.clone(),
        );
        registry.register(
            "strata_request_bytes_high_water",
            "The most request bytes read or executing at once since start (bounded by net.request_bytes_budget)",
            self.budget_high_water.clone(),
        );
        registry.register(
            "strata_connections",
            "Client connections accepted",
            self.connections.clone(),
        );
        registry.register(
            "strata_refused_connections",
            "Client connections refused at the connection limit",
            self.refused_connections.clone(),
        );
        registry.register(
            "strata_open_connections",
            "Client connections open now",
            self.open_connections.clone(),
        );
    }
}

/// What a server serves: the executor of requests behind the wire
/// (`cmd::Node`). The server owns connections, framing, authentication,
/// budgets and timeouts; the service owns what a request means.
pub trait Service: Send + Sync + 'static {
    /// The limits announced in `Hello` and checked before execution.
    fn limits(&self) -> &Limits;

    /// Whether clients must present a token in `Hello`.
    fn auth_required(&self) -> bool;

    /// Whether a client with `role` (`None` before `Hello`) may run `request`.
    fn check_access(&self, role: Option<Role>, request: &Request) -> Result<(), ErrorReply>;

    /// Executes a request that passed the checks; `cancel` is set when its
    /// client has gone.
    fn dispatch(
        &self,
        request: Request,
        cancel: Cancel,
    ) -> impl std::future::Future<Output = Response> + Send;
}

/// What every connection task shares.
struct Shared<S> {
    node: S,
    tokens: Vec<TokenConfig>,
    max_frame_bytes: u32,
    request_timeout: Duration,
    metrics: Arc<ServerMetrics>,
    budget: BodyBudget,
}

/// Bytes of request frames being read or executed, node-wide: a frame is
/// charged before its body is read and released when its request is done
/// (even past a timeout, while its write is still queued), so that many
/// connections sending large values cannot pin more memory than this.
struct BodyBudget {
    /// For frames up to [`BodyBudget::SMALL`]: small requests keep being
    /// served while large ones are shed.
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    total: u64,
}

impl BodyBudget {
    const SMALL: u32 = 64 << 10;

    fn new(total: u64) -> BodyBudget {
        let small = (total / 4).min(Semaphore::MAX_PERMITS as u64) as usize;
        let large = (total - total / 4).min(Semaphore::MAX_PERMITS as u64) as usize;
        BodyBudget {
            small: Arc::new(Semaphore::new(small)),
            large: Arc::new(Semaphore::new(large)),
            total,
        }
    }

    fn try_charge(&self, len: u32) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let pool = if len <= Self::SMALL {
            &self.small
        } else {
            &self.large
        };
        pool.clone().try_acquire_many_owned(len.max(1)).ok()
    }

    /// Bytes charged now.
    fn in_use(&self) -> u64 {
        let free = self.small.available_permits() + self.large.available_permits();
        self.total.saturating_sub(free as u64)
    }
}

/// The certificate clients see: `[tls] cert`/`key`, or the self-signed
/// pair in the data directory (created on first start).
pub fn client_identity(config: &Config) -> Result<Identity, Error> {
    Ok(match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Identity::load(cert, key)?,
        _ => {
            let (identity, created) = tls::load_or_create(&config.data_dir, &config.tls.names)?;
            let (cert_path, _) = tls::default_paths(&config.data_dir);
            if created {
                info!(cert = %cert_path.display(), "created a self-signed certificate");
            }
            identity
        }
    })
}

/// A bound, not yet running, server.
pub struct Server<S> {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared<S>>,
    connection_slots: Arc<Semaphore>,
    shutdown_grace: Duration,
    fingerprint: String,
}

impl<S> std::fmt::Debug for Server<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.endpoint.local_addr().ok())
            .finish()
    }
}

impl<S: Service> Server<S> {
    /// Loads (or creates) the TLS identity and binds the QUIC endpoint.
    pub fn bind(config: &Config, node: S, metrics: Arc<ServerMetrics>) -> Result<Server<S>, Error> {
        let identity = client_identity(config)?;
        let fingerprint = identity.fingerprint();
        let limits = TransportLimits {
            max_streams: config.net.max_streams_per_connection,
            idle_timeout: Duration::from_millis(config.net.idle_timeout_ms),
            ..TransportLimits::default()
        };
        let server_config =
            quic_server_config(&identity, &[ALPN], config.tls.client_ca.as_deref(), &limits)?;
        let endpoint =
            endpoint(config.listen, Some(server_config)).map_err(|source| Error::Io {
                what: format!("binding QUIC listener {}", config.listen),
                source,
            })?;
        Ok(Server {
            endpoint,
            shared: Arc::new(Shared {
                node,
                tokens: config.tokens.clone(),
                max_frame_bytes: config.net.max_frame_bytes,
                request_timeout: Duration::from_millis(config.net.request_timeout_ms),
                metrics,
                budget: BodyBudget::new(config.net.request_bytes_budget),
            }),
            connection_slots: Arc::new(Semaphore::new(config.net.max_connections)),
            shutdown_grace: Duration::from_millis(config.net.shutdown_grace_ms),
            fingerprint,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// SHA-256 fingerprint of the server certificate (for `--pin`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets
    /// in-flight requests finish (up to the grace period) and closes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        // Every connection task holds a clone; recv() returns None once all are gone.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            let incoming = tokio::select! {
                incoming = self.endpoint.accept() => incoming,
                () = &mut shutdown => break,
            };
            let Some(incoming) = incoming else { break };
            let Ok(permit) = self.connection_slots.clone().try_acquire_owned() else {
                self.shared.metrics.refused_connections.inc();
                debug!(remote = %incoming.remote_address(), "connection limit reached; refusing");
                incoming.refuse();
                continue;
            };
            let span = info_span!("connection", remote = %incoming.remote_address());
            let shared = self.shared.clone();
            let (stop_rx, done_tx) = (stop_rx.clone(), done_tx.clone());
            tokio::spawn(
                async move {
                    let _permit = permit;
                    match incoming.await {
                        Ok(conn) => serve_connection(conn, shared, stop_rx, done_tx).await,
                        Err(e) => debug!(error = %e, "handshake failed"),
                    }
                }
                .instrument(span),
            );
        }
        info!("shutting down: no new connections or requests; finishing in-flight requests");
        self.endpoint.set_server_config(None);
        let _ = stop_tx.send(true);
        drop(done_tx);
        if tokio::time::timeout(self.shutdown_grace, done_rx.recv())
            .await
            .is_err()
        {
            warn!(grace = ?self.shutdown_grace, "in-flight requests did not finish in time");
        }
        self.endpoint.close(
            VarInt::from_u32(quic_code::SHUTTING_DOWN),
            b"server shutting down",
        );
        self.endpoint.wait_idle().await;
    }
}

async fn serve_connection<S: Service>(
    conn: quinn::Connection,
    shared: Arc<Shared<S>>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    shared.metrics.connections.inc();
    let open = &shared.metrics.open_connections;
    open.inc();
    debug!("connection open");
    // Without configured tokens every client may do everything.
    let initial = (!shared.node.auth_required()).then_some(Role::Admin);
    let role = Arc::new(Mutex::new(initial));
    let mut in_flight = tokio::task::JoinSet::new();
    let stopping = loop {
        let stream = tokio::select! {
            stream = conn.accept_bi() => stream,
            _ = stop.changed() => break true,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => continue,
        };
        match stream {
            Ok((send, recv)) => {
                let (shared, role) = (shared.clone(), role.clone());
                in_flight.spawn(handle_stream(send, recv, shared, role).in_current_span());
            }
            Err(e) => {
                debug!(reason = %e, "connection closed");
                break false;
            }
        }
    };
    // Requests already read are answered before the connection goes, and
    // on a shutdown their replies are delivered first: closing drops
    // stream data the peer has not acknowledged.
    let mut replies = Vec::new();
    while let Some(done) = in_flight.join_next().await {
        if let (true, Ok(Some(send))) = (stopping, done) {
            replies.push(send);
        }
    }
    if stopping {
        // The replies are delivered concurrently by the connection; waiting
        // on each in turn ends when the last one is.
        let _ = tokio::time::timeout(REPLY_DELIVERY_TIMEOUT, async {
            for send in &replies {
                let _ = send.stopped().await;
            }
        })
        .await;
        // §1: a connection closed by a shutdown says so, rather than the
        // NO_ERROR an implicit close would send.
        conn.close(
            VarInt::from_u32(quic_code::SHUTTING_DOWN),
            b"server shutting down",
        );
    }
    open.dec();
    drop(done);
}

/// Why a stream did not yield a request.
enum ReadFailure {
    /// Answer with this error, then stop the stream with this QUIC code.
    Reply(ErrorReply, u32),
    /// The peer went away or reset; nobody to answer.
    Gone,
}

/// A FIN before a whole frame (wire-protocol.md §4): the client still
/// reads, so it is told why.
fn truncated(what: String) -> ReadFailure {
    let reply = ErrorReply::new(
        ErrorCode::BadRequest,
        format!("the stream ended {what}: send one whole request frame, then finish"),
    );
    ReadFailure::Reply(reply, quic_code::PROTOCOL_VIOLATION)
}

/// A request as read, with the budget its frame is charged to.
struct Read {
    request: Request,
    charge: tokio::sync::OwnedSemaphorePermit,
}

/// The largest frame a connection that has not authenticated may send
/// (when tokens are required): room for a `Hello`, so that a client
/// without a token cannot spend the request byte budget.
const UNAUTHENTICATED_MAX_FRAME_BYTES: u32 = 4096;

async fn read_request<S: Service>(
    recv: &mut RecvStream,
    shared: &Shared<S>,
    authenticated: bool,
) -> Result<Read, ReadFailure> {
    let max_frame_bytes = if authenticated {
        shared.max_frame_bytes
    } else {
        UNAUTHENTICATED_MAX_FRAME_BYTES
    };
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => {
            return Err(truncated("before any byte of the request frame".into()));
        }
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            return Err(truncated(format!(
                "after {n} of the {FRAME_HEADER_BYTES} frame header bytes"
            )));
        }
        Err(quinn::ReadExactError::ReadError(_)) => return Err(ReadFailure::Gone),
    }
    let len = frame_len(header);
    if len > max_frame_bytes {
        // IMPORTANT: refuse before reading (or buffering) the body.
        let reply = if authenticated {
            ErrorReply::new(
                ErrorCode::FrameTooLarge,
                format!("request frame of {len} bytes exceeds the limit of {max_frame_bytes}"),
            )
        } else {
            ErrorReply::new(
                ErrorCode::Unauthenticated,
                format!(
                    "this server requires a token: send Hello with a valid token first \
                     (until then request frames are limited to {max_frame_bytes} bytes)"
                ),
            )
        };
        return Err(ReadFailure::Reply(reply, quic_code::FRAME_TOO_LARGE));
    }
    // IMPORTANT: charged before the body is read, so memory stays bounded.
    let Some(charge) = shared.budget.try_charge(len) else {
        shared.metrics.shed.inc();
        let reply = ErrorReply::new(
            ErrorCode::Overloaded,
            format!(
                "this node is reading or executing {} bytes of requests, its budget \
                 (net.request_bytes_budget); retry shortly",
                shared.budget.in_use()
            ),
        )
        .with_retry_after_ms(SHED_RETRY_AFTER_MS);
        return Err(ReadFailure::Reply(reply, quic_code::OVERLOADED));
    };
    shared
        .metrics
        .budget_high_water
        .inner()
        .fetch_max(shared.budget.in_use(), Ordering::Relaxed);
    // Exactly `len` bytes, then the end: more means a second frame or junk.
    let body = match read_body(recv, len as usize).await {
        Ok(body) => body,
        Err(BodyError::TooLong) => {
            let reply = ErrorReply::new(
                ErrorCode::BadRequest,
                "bytes after the request frame: one request per stream",
            );
            return Err(ReadFailure::Reply(reply, quic_code::PROTOCOL_VIOLATION));
        }
        Err(BodyError::Short(n)) => {
            return Err(truncated(format!(
                "after {n} of the {len} body bytes the frame header declared"
            )));
        }
        // The client reset the stream: nobody to answer.
        Err(BodyError::Read(_)) => return Err(ReadFailure::Gone),
    };
    // Decoded straight from the body read: no second copy of the frame.
    match decode_body::<Request>(&body) {
        Ok(request) => Ok(Read { request, charge }),
        Err(e) => Err(ReadFailure::Reply(
            ErrorReply::new(ErrorCode::BadRequest, format!("malformed request: {e}")),
            quic_code::PROTOCOL_VIOLATION,
        )),
    }
}

/// Serves one request stream; returns the stream once its reply is
/// written, so that a shutdown can wait until the reply is delivered.
async fn handle_stream<S: Service>(
    mut send: SendStream,
    mut recv: RecvStream,
    shared: Arc<Shared<S>>,
    role: Arc<Mutex<Option<Role>>>,
) -> Option<SendStream> {
    let started = Instant::now();
    let deadline = shared.request_timeout;
    let authenticated = lock(&role).is_some();
    let read = match tokio::time::timeout(deadline, read_request(&mut recv, &shared, authenticated))
        .await
    {
        Ok(Ok(read)) => read,
        Ok(Err(failure)) => {
            shared.metrics.rejected_streams.inc();
            if let ReadFailure::Reply(reply, code) = failure {
                debug!(code = ?reply.code, message = %reply.message, "bad request stream");
                let _ = recv.stop(VarInt::from_u32(code));
                write_response(
                    &mut send,
                    &Response::Error(reply),
                    deadline,
                    shared.max_frame_bytes,
                )
                .await;
            }
            return Some(send);
        }
        Err(_) => {
            shared.metrics.rejected_streams.inc();
            let _ = recv.stop(VarInt::from_u32(quic_code::REQUEST_TIMEOUT));
            let reply = ErrorReply::new(
                ErrorCode::Timeout,
                format!(
                    "the request frame did not arrive within the request timeout ({} ms)",
                    deadline.as_millis()
                ),
            );
            write_response(
                &mut send,
                &Response::Error(reply),
                Duration::from_secs(1),
                shared.max_frame_bytes,
            )
            .await;
            return Some(send);
        }
    };
    let op = read.request.op();
    let cancel = Cancel::default();
    // The work owns the frame's budget charge until it is done. It runs
    // here; if its time is up or its client leaves first, it is finished
    // on a task of its own instead of being dropped, because a write may
    // already be queued (its bytes stay charged until then).
    let mut work = {
        let (shared, cancel) = (shared.clone(), cancel.clone());
        Box::pin(
            async move {
                let response = respond(read.request, &shared, &role, cancel).await;
                drop(read.charge);
                response
            }
            .in_current_span(),
        )
    };
    // A detached request gets one more request timeout; a write still
    // waiting then for replica acks the client chose to wait long for is
    // committed already, and its bytes are gone from the budget's reach.
    let detach = |work| {
        tokio::spawn(async move {
            let _ = tokio::time::timeout(deadline, work).await;
        })
    };
    let response = tokio::select! {
        done = &mut work => done,
        () = tokio::time::sleep(deadline) => {
            cancel.cancel();
            detach(work);
            Response::error(
                ErrorCode::Timeout,
                "request took longer than the server's request timeout",
            )
        }
        _ = send.stopped() => {
            // The client gave up on the request: long operations stop.
            cancel.cancel();
            detach(work);
            shared.metrics.record(op, false, started.elapsed());
            return None;
        }
    };
    let ok = !matches!(response, Response::Error(_));
    write_response(&mut send, &response, deadline, shared.max_frame_bytes).await;
    shared.metrics.record(op, ok, started.elapsed());
    Some(send)
}

async fn respond<S: Service>(
    request: Request,
    shared: &Shared<S>,
    role: &Mutex<Option<Role>>,
    cancel: Cancel,
) -> Response {
    if let Request::Hello { token, .. } = &request
        && shared.node.auth_required()
    {
        // A failed Hello drops whatever role the connection had (fail closed).
        let granted = authenticate(&shared.tokens, token.as_deref());
        *lock(role) = granted;
        if granted.is_none() {
            return Response::error(ErrorCode::Unauthenticated, "invalid or missing token");
        }
    }
    let current = *lock(role);
    checked_dispatch(&shared.node, current, request, cancel).await
}

/// What every client request passes, whatever carried it (QUIC here, RESP
/// in `resp`): the connection's role, then its arguments, then execution.
pub async fn checked_dispatch<S: Service>(
    node: &S,
    role: Option<Role>,
    request: Request,
    cancel: Cancel,
) -> Response {
    if let Err(reply) = node.check_access(role, &request) {
        return Response::Error(reply);
    }
    // §8: arguments are checked before anything is executed.
    if let Err(e) = request.validate(node.limits()) {
        return Response::Error(ErrorReply::new(ErrorCode::from(&e), e.to_string()));
    }
    node.dispatch(request, cancel).await
}

/// The role of the token that matches, comparing every token in constant time.
pub fn authenticate(tokens: &[TokenConfig], offered: Option<&str>) -> Option<Role> {
    let offered = offered?.as_bytes();
    let mut granted = None;
    for t in tokens {
        if constant_time_eq(t.token.as_bytes(), offered) {
            granted = granted.max(Some(t.role));
        }
    }
    granted
}

async fn write_response(
    send: &mut SendStream,
    response: &Response,
    deadline: Duration,
    max_frame_bytes: u32,
) {
    let frame = match encode_response(response) {
        // The protocol promises no reply longer than the announced frame limit.
        Ok(frame) if frame.len() > max_frame_bytes as usize + FRAME_HEADER_BYTES => {
            let reply = Response::error(
                ErrorCode::FrameTooLarge,
                format!(
                    "the reply would be {} bytes, over the frame limit of {max_frame_bytes}; ask for fewer keys",
                    frame.len()
                ),
            );
            match encode_response(&reply) {
                Ok(frame) => frame,
                Err(_) => return,
            }
        }
        Ok(frame) => frame,
        Err(e) => {
            warn!(error = %e, "could not encode a response");
            let _ = send.reset(VarInt::from_u32(quic_code::PROTOCOL_VIOLATION));
            return;
        }
    };
    match tokio::time::timeout(deadline, send.write_all(&frame)).await {
        Ok(Ok(())) => {
            let _ = send.finish();
        }
        _ => {
            let _ = send.reset(VarInt::from_u32(quic_code::PROTOCOL_VIOLATION));
        }
    }
}
