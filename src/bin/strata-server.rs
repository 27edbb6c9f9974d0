//! `strata-server`: runs one strata node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use strata::config::{Config, Role, TokenConfig};
use strata::metrics::{Exposition, render_store};
use strata::net::server::{Server, ServerMetrics, serve_metrics};
use strata::store::Store;
use strata::wal::FsyncPolicy;
use tracing::{error, info};

/// A persistent, tiered cache node: QUIC protocol on --listen, Prometheus
/// metrics on --metrics-listen.
///
/// Settings come from the defaults, then the --config file, then the flags.
/// On first start without a certificate, a self-signed one is written to
/// <data-dir>/tls/ and its SHA-256 fingerprint is logged: give it to clients
/// with `strata-cli --pin <fingerprint>`. SIGINT/SIGTERM stop the node
/// gracefully: no new requests, in-flight ones finish, a checkpoint, exit 0.
#[derive(Debug, Parser)]
#[command(name = "strata-server", version, about, long_about)]
struct Args {
    /// TOML config file (same layout as `Config`; see the README).
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (WAL, RocksDB, TLS identity). Default: ./strata-data.
    #[arg(long, env = "STRATA_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// QUIC listen address for clients. Default: 127.0.0.1:7379.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HTTP address for /metrics, or "off". Default: 127.0.0.1:9379.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Memory-tier budget in bytes (keys + values + ~96 B/entry). Default: 268435456.
    #[arg(long)]
    memory_bytes: Option<u64>,
    /// WAL fsync policy: always | interval:<ms> | never. Default: always.
    #[arg(long)]
    fsync: Option<FsyncPolicy>,
    /// Longest key in bytes. Default: 16384.
    #[arg(long)]
    max_key_bytes: Option<usize>,
    /// Longest value in bytes. Default: 8388608.
    #[arg(long)]
    max_value_bytes: Option<usize>,
    /// Accept this token with a role, as ROLE:TOKEN (read-only, read-write,
    /// admin). Repeatable. With none, clients need no token. Prefer the config
    /// file: flags are visible to other local users.
    #[arg(long = "token", value_name = "ROLE:TOKEN")]
    tokens: Vec<String>,
    /// PEM certificate chain (with --tls-key) instead of the generated one.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(metrics) = &args.metrics_listen {
        config.metrics_listen = match metrics.as_str() {
            "off" => None,
            addr => Some(addr.parse().with_context(|| {
                format!("--metrics-listen {addr:?}: expected HOST:PORT or \"off\"")
            })?),
        };
    }
    if let Some(bytes) = args.memory_bytes {
        config.store.memory_budget_bytes = bytes;
    }
    if let Some(fsync) = args.fsync {
        config.store.fsync = fsync;
    }
    if let Some(max) = args.max_key_bytes {
        config.store.limits.max_key_bytes = max;
    }
    if let Some(max) = args.max_value_bytes {
        config.store.limits.max_value_bytes = max;
    }
    for spec in &args.tokens {
        let (role, token) = spec.split_once(':').with_context(|| {
            "--token expects ROLE:TOKEN, e.g. read-write:s3cret-token".to_string()
        })?;
        let role: Role = role
            .parse()
            .map_err(anyhow::Error::msg)
            .context("--token")?;
        config.tokens.push(TokenConfig {
            token: token.to_string(),
            role,
        });
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        config.tls.cert = args.tls_cert.clone();
        config.tls.key = args.tls_key.clone();
    }
    config.log_json |= args.log_json;
    config.validate()?;
    Ok(config)
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the node");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => info!("SIGINT received"),
            _ = term.recv() => info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("strata-server: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_json);
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("strata-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let store_config = config.store_config();
    let store = tokio::task::spawn_blocking(move || Store::open(store_config))
        .await?
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let metrics = Arc::new(ServerMetrics::default());
    let server = Server::bind(&config, store.clone(), metrics.clone())?;
    let addr = server.local_addr()?;
    info!(
        listen = %addr,
        fingerprint = %server.fingerprint(),
        data_dir = %config.data_dir.display(),
        fsync = %config.store.fsync,
        "strata node serving; clients: strata-cli --addr {addr} --pin {}",
        server.fingerprint()
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = match config.metrics_listen {
        None => None,
        Some(metrics_addr) => {
            let listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("binding the metrics listener {metrics_addr}"))?;
            info!(addr = %listener.local_addr()?, "metrics on http://{}/metrics", listener.local_addr()?);
            let (store, metrics) = (store.clone(), metrics.clone());
            let render = Arc::new(move || {
                let mut e = Exposition::default();
                metrics.render(&mut e);
                render_store(&store, &mut e);
                e.finish()
            });
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(serve_metrics(listener, render, async move {
                let _ = stop.changed().await;
            })))
        }
    };

    server.run(shutdown_signal()).await;
    let _ = stop_tx.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    info!("checkpointing before exit");
    store.close().await.context("closing the store")?;
    info!("stopped cleanly");
    Ok(())
}
