//! The node's HTTP listener: Prometheus `/metrics`, health probes, and a
//! JSON and raw-bytes API over the keys (proto-docs/http-api.md).
//!
//! axum routes, hyper speaks HTTP/1.1; this module owns the accept loop so
//! that connection counts, header sizes and slow clients are bounded here.
//! Every data request becomes a `proto::Request` run through
//! [`checked_dispatch`], as the QUIC and RESP paths do: the same tokens
//! (as `Authorization: Bearer`), roles, limits, ack policies and cluster
//! checks.
//!
//! ```text
//! socket --hyper http1--> axum Router --keys/info/cluster--> Request --checked_dispatch--> cmd::Node
//!                                    \--metrics/healthz/readyz (no token)
//! ```

pub mod error;
mod io;
mod keys;
pub mod metrics;
pub mod text;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, warn};

use crate::cmd::Node;
use crate::config::{Config, Role, TokenConfig};
use crate::net::server::{authenticate, checked_dispatch};
use crate::proto::{ErrorCode, ErrorReply, Request, Response};
use crate::types::Cancel;
pub use error::ApiError;

/// Renders the node's metrics as Prometheus text.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// A client has this long to send a request's head (and an idle
/// keep-alive connection this long to begin its next one).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most header lines in one request.
pub const MAX_HEADERS: usize = 64;

/// What the HTTP API serves with.
pub struct HttpApi {
    node: Node,
    metrics: Arc<metrics::HttpMetrics>,
    tokens: Vec<TokenConfig>,
    render: RenderMetrics,
    /// A request (its body included) must be served within this.
    request_timeout: Duration,
    max_connections: usize,
    /// Read buffer per connection: bounds a request's head.
    max_head_bytes: usize,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for HttpApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpApi")
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl HttpApi {
    /// The API over `node`, with `config`'s tokens and network limits,
    /// counting its traffic in `metrics`.
    pub fn new(
        config: &Config,
        node: Node,
        render: RenderMetrics,
        metrics: Arc<metrics::HttpMetrics>,
    ) -> HttpApi {
        let max_key = node.limits.max_key_bytes as usize;
        HttpApi {
            node,
            metrics,
            tokens: config.tokens.clone(),
            render,
            request_timeout: Duration::from_millis(config.net.request_timeout_ms),
            max_connections: config.net.max_connections.max(1),
            // A key percent-encoded three times over, and room for headers.
            max_head_bytes: (3 * max_key + (16 << 10)).max(64 << 10),
            shutdown_grace: Duration::from_millis(config.net.shutdown_grace_ms),
        }
    }

    /// The role of the request's bearer token. No header: no role (which
    /// is enough when the node needs no token). A token that matches none
    /// is refused outright, as a failed `Hello` is.
    fn role(&self, headers: &HeaderMap) -> Result<Option<Role>, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            return Err(unauthenticated("Authorization must be `Bearer <token>`"));
        };
        match authenticate(&self.tokens, Some(token)) {
            Some(role) => Ok(Some(role)),
            None if self.node.auth_required => Err(unauthenticated("invalid token")),
            None => Ok(None),
        }
    }

    /// Authenticates and runs `request` through the checked dispatch,
    /// within the request timeout.
    async fn call(&self, headers: &HeaderMap, request: Request) -> Result<Response, ApiError> {
        let role = self.role(headers)?;
        if role.is_none() && self.node.auth_required {
            return Err(unauthenticated(
                "this node requires a token: send `Authorization: Bearer <token>`",
            ));
        }
        let cancel = Cancel::default();
        let dispatch = checked_dispatch(&self.node, role, request, cancel.clone());
        match tokio::time::timeout(self.request_timeout, dispatch).await {
            Ok(Response::Error(e)) => Err(ApiError::from(e)),
            Ok(response) => Ok(response),
            Err(_) => {
                cancel.cancel();
                Err(ApiError::from(ErrorReply::new(
                    ErrorCode::Timeout,
                    format!(
                        "not served within the request timeout ({} ms); a write may have been applied",
                        self.request_timeout.as_millis()
                    ),
                )))
            }
        }
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::from(ErrorReply::new(ErrorCode::Unauthenticated, message))
}

/// A JSON body with its content type.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding JSON: {e}\n"),
        )
            .into_response(),
    }
}

/// The routes.
pub fn router(api: Arc<HttpApi>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/info", get(info))
        .route("/v1/cluster", get(cluster))
        .route("/v1/keys", get(keys::scan))
        .route(
            "/v1/keys/{*key}",
            get(keys::get).put(keys::put).delete(keys::delete),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(api.clone(), count))
        .with_state(api)
}

/// Counts every answered request by endpoint and status.
async fn count(
    State(api): State<Arc<HttpApi>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> HttpResponse {
    let endpoint = metrics::endpoint(request.uri().path());
    let response = next.run(request).await;
    api.metrics.answered(endpoint, response.status().as_u16());
    response
}

async fn metrics(State(api): State<Arc<HttpApi>>) -> HttpResponse {
    // As before the move to hyper: one response per connection.
    (
        [
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (header::CONNECTION, "close"),
        ],
        (api.render)(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(api): State<Arc<HttpApi>>) -> HttpResponse {
    #[derive(serde::Serialize)]
    struct NotReady<'a> {
        ready: bool,
        error: &'a str,
        message: String,
    }
    match readiness(&api.node) {
        Ok(()) => json(&serde_json::json!({ "ready": true })),
        Err(message) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json(&NotReady {
                ready: false,
                error: "Unavailable",
                message,
            }),
        )
            .into_response(),
    }
}

/// Whether the node should get traffic: its log is recovered (it serves
/// only once it is), its disk takes writes, no full sync is replacing its
/// data, and in a cluster it is in a shard of the map and, as its shard's
/// primary, holds its write lease. `Err` says why not.
pub fn readiness(node: &Node) -> Result<(), String> {
    if let Some(reason) = node.store.stats().poisoned {
        return Err(format!("the node refuses writes: {reason}"));
    }
    if !node.repl.serves_reads() {
        return Err("a full sync from the primary is replacing this node's data".into());
    }
    let Some(slot) = &node.cluster else {
        return Ok(());
    };
    let Some(cluster) = slot.get() else {
        return Err("the node is still joining its cluster".into());
    };
    let map = cluster.map();
    let Some(me) = map.nodes().get(&cluster.id()) else {
        return Err(format!(
            "the node is not in a shard of the cluster map (version {})",
            map.version()
        ));
    };
    let primary = map
        .shards()
        .get(&me.shard)
        .is_some_and(|s| s.primary == cluster.id());
    if primary && cluster.health().lease_held().is_err() {
        return Err(format!(
            "the primary of shard {} holds no write lease from the metadata leader",
            me.shard.0
        ));
    }
    Ok(())
}

async fn info(State(api): State<Arc<HttpApi>>, headers: HeaderMap) -> HttpResponse {
    match api.call(&headers, Request::Info).await {
        Ok(Response::Info(pairs)) => {
            let map: serde_json::Map<String, serde_json::Value> = pairs
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            json(&map)
        }
        Ok(other) => unexpected(&other).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn cluster(State(api): State<Arc<HttpApi>>, headers: HeaderMap) -> HttpResponse {
    match api.call(&headers, Request::ClusterMap).await {
        Ok(Response::ClusterMap(map)) => json(&map),
        Ok(other) => unexpected(&other).into_response(),
        Err(e) => e.into_response(),
    }
}

/// A reply of the wrong kind: a bug.
fn unexpected(response: &Response) -> ApiError {
    ApiError::from(ErrorReply::new(
        ErrorCode::Internal,
        format!("unexpected reply {response:?}"),
    ))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see proto-docs/http-api.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::http(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "this endpoint does not take that method",
    )
}

/// Serves HTTP on `listener` until `shutdown` resolves, then lets open
/// connections finish their requests (within the shutdown grace).
pub async fn serve(
    listener: TcpListener,
    api: Arc<HttpApi>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(api.max_connections));
    let (closing_tx, closing) = watch::channel(false);
    let service = TowerToHyperService::new(router(api.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the limit the connection is closed unread: cheaper than a reply.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            api.metrics.refused.inc();
            debug!(%peer, "HTTP connection refused: at max_connections");
            continue;
        };
        api.metrics.connections.inc();
        let (service, closing) = (service.clone(), closing.clone());
        let bounds = (api.max_head_bytes, api.request_timeout);
        let open = api.metrics.open.clone();
        tasks.spawn(async move {
            open.inc();
            serve_connection(socket, service, bounds, closing, slot).await;
            open.dec();
        });
        while tasks.try_join_next().is_some() {}
    }
    let _ = closing_tx.send(true);
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(api.shutdown_grace, drained)
        .await
        .is_err()
    {
        tasks.abort_all();
    }
}

async fn serve_connection(
    socket: TcpStream,
    service: TowerToHyperService<Router>,
    (max_head_bytes, write_stall): (usize, Duration),
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = socket.set_nodelay(true);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(max_head_bytes)
        .max_headers(MAX_HEADERS);
    let socket = io::StallTimeout::new(socket, write_stall);
    let conn = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                debug!(error = %e, "HTTP connection ended");
            }
        }
        _ = closing.changed() => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A header's value as text, `400` if it is not visible ASCII.
pub(crate) fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v: &HeaderValue| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("header {name}: not visible ASCII")))
        })
        .transpose()
}
