//! The RESP gateway: an optional TCP (or TLS) listener that speaks Redis's
//! protocol, RESP2 and, after `HELLO 3`, RESP3, so that Redis clients and
//! tools work against a node unchanged.
//!
//! Every command becomes one or more `proto::Request`s run through the
//! same checks and `cmd::Node::dispatch` as a QUIC client's: tokens and
//! roles, limits, ack policies and cluster checks apply alike. The layers:
//!
//! ```text
//! socket --conn--> codec (gate, redis-protocol, inline) --commands--> strings/keys/server
//!        <-------- reply (RESP2 | RESP3) <------------- session: Request -> Node::dispatch
//! ```
//!
//! The README's "Redis clients (RESP gateway)" section lists the commands
//! and what is out of scope.

mod batch;
mod cluster;
pub mod codec;
mod commands;
mod conn;
mod glob;
mod keys;
mod lists;
mod members;
pub mod metrics;
pub mod reply;
mod server;
mod session;
mod sorted;
mod strings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cmd::Node;
use crate::config::Config;
use crate::error::Error;
use crate::net::tls;
use session::{Gateway, Session};

/// A bound, not yet running, gateway.
pub struct RespServer {
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    slots: Arc<Semaphore>,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for RespServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespServer")
            .field("addr", &self.listener.local_addr().ok())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl RespServer {
    /// Binds `config.resp.listen` (which must be set); with `resp.tls`,
    /// loads the node's client certificate for it.
    ///
    /// # Errors
    /// The address cannot be bound, or the TLS identity cannot be loaded.
    pub async fn bind(config: &Config, node: Node) -> Result<RespServer, Error> {
        let addr = config.resp.listen.ok_or_else(|| Error::Io {
            what: "starting the RESP gateway".into(),
            source: std::io::Error::other("resp.listen is not set"),
        })?;
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            what: format!("binding the RESP listener {addr}"),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| Error::Io {
            what: "reading the RESP listener's address".into(),
            source,
        })?;
        let tls = match config.resp.tls {
            false => None,
            true => {
                let identity = crate::net::server::client_identity(config)?;
                let server_config =
                    tls::server_config(&identity, &[], config.tls.client_ca.as_deref())?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(server_config)))
            }
        };
        Ok(RespServer {
            listener,
            gateway: Arc::new(Gateway::new(config, node, local)),
            tls,
            slots: Arc::new(Semaphore::new(config.resp.max_connections)),
            shutdown_grace: Duration::from_millis(config.net.shutdown_grace_ms),
        })
    }

    /// The bound address (useful with port 0).
    ///
    /// # Errors
    /// As `TcpListener::local_addr`.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Registers the gateway's metrics families.
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        self.gateway.metrics.register(registry);
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets each
    /// connection finish the command it runs (up to the shutdown grace)
    /// and closes them.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (socket, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "RESP accept failed");
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                () = &mut shutdown => break,
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                self.gateway.metrics.refused.inc();
                connections.spawn(refuse(socket));
                continue;
            };
            self.gateway.metrics.connections.inc();
            let (gateway, tls, stop) = (self.gateway.clone(), self.tls.clone(), stop_rx.clone());
            let span = info_span!("resp", remote = %peer);
            connections.spawn(
                async move {
                    let _permit = permit;
                    gateway.metrics.open.inc();
                    accept(socket, peer, gateway.clone(), tls, stop).await;
                    gateway.metrics.open.dec();
                }
                .instrument(span),
            );
        }
        info!("RESP gateway: no new connections; finishing commands in progress");
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("RESP connections did not finish within the shutdown grace");
            connections.abort_all();
        }
    }
}

/// Serves one accepted socket, after its TLS handshake if any.
async fn accept(
    socket: TcpStream,
    peer: SocketAddr,
    gateway: Arc<Gateway>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    let local = socket.local_addr().unwrap_or(gateway.listen);
    let deadline = gateway.facts.request_timeout;
    let session = Session::new(gateway, peer, local);
    match tls {
        None => conn::serve(socket, session, stop).await,
        Some(acceptor) => match tokio::time::timeout(deadline, acceptor.accept(socket)).await {
            Ok(Ok(stream)) => conn::serve(stream, session, stop).await,
            Ok(Err(e)) => debug!(error = %e, "RESP TLS handshake failed"),
            Err(_) => debug!("RESP TLS handshake timed out"),
        },
    }
}

/// Over the connection limit: Redis's text, then close.
async fn refuse(mut socket: TcpStream) {
    debug!("RESP connection limit reached; refusing");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        socket
            .write_all(b"-ERR max number of clients reached\r\n")
            .await?;
        socket.shutdown().await
    })
    .await;
}
