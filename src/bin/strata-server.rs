//! `strata-server`: runs one strata node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use strata::cluster::node::ClusterNode;
use strata::cmd::Node;
use strata::config::{Config, Role, TokenConfig};
use strata::http::HttpApi;
use strata::http::metrics::HttpMetrics;
use strata::metrics::Registry;
use strata::net::server::{Server, ServerMetrics};
use strata::ready::Ready;
use strata::repl::Replication;
use strata::resp::RespServer;
use strata::store::Store;
use strata::wal::FsyncPolicy;
use tracing::{error, info};

/// jemalloc, for the resident memory per hot key (Cargo.toml says why).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// HTTP address for /metrics, /healthz, /readyz and the HTTP API
    /// (/v1/...), or "off". Default: 127.0.0.1:9379.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Memory-tier budget in bytes (keys + values + 352 B/entry, what an entry
    /// costs in RSS). Default: 268435456.
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
    /// Once serving, print one line of JSON to stdout: the bound client,
    /// metrics and replication addresses, the certificate fingerprint, the
    /// node name and id, and the pid (fields in the README). For whatever
    /// starts nodes: the log's wording is not an interface.
    #[arg(long)]
    ready_json: bool,
    /// Threads serving the network and requests. Default: one per CPU.
    #[arg(long, value_name = "N")]
    worker_threads: Option<usize>,
    /// Accept replicas (node-to-node QUIC, mutual TLS) on this address.
    #[arg(long, value_name = "HOST:PORT")]
    repl_listen: Option<SocketAddr>,
    /// Run as a replica of the primary whose replication address this is.
    #[arg(long, value_name = "HOST:PORT")]
    replica_of: Option<String>,
    /// Cluster CA certificate for node links (from `strata-admin gen-certs`).
    #[arg(long, value_name = "FILE", requires_all = ["repl_cert", "repl_key"])]
    repl_ca: Option<PathBuf>,
    /// This node's cluster certificate.
    #[arg(long, value_name = "FILE", requires_all = ["repl_ca", "repl_key"])]
    repl_cert: Option<PathBuf>,
    /// This node's cluster private key.
    #[arg(long, value_name = "FILE", requires_all = ["repl_ca", "repl_cert"])]
    repl_key: Option<PathBuf>,
    /// This node's name. With cluster certificates the node is known by the
    /// name in its certificate, and this must match it (or be left out).
    /// Without them it only labels logs. Default: the certificate's name,
    /// else the --listen address.
    #[arg(long)]
    node_name: Option<String>,
    /// What writes wait for when they name no policy: async,
    /// semi-sync:K[:TIMEOUT_MS[:fail]] or sync[:TIMEOUT_MS]. Default: async.
    #[arg(long, value_name = "POLICY")]
    default_ack: Option<strata::types::AckPolicy>,
    /// Full-sync transfer limit in bytes/s (0: unlimited). Default: 67108864.
    #[arg(long, value_name = "BYTES")]
    full_sync_rate: Option<u64>,
    /// WAL bytes kept for lagging or disconnected replicas. Default: 1073741824.
    #[arg(long, value_name = "BYTES")]
    repl_retention_bytes: Option<u64>,
    /// Run as a cluster member ([cluster] enabled = true): needs
    /// --repl-listen and the --repl-* certificates; the cluster map, formed
    /// with `strata-admin cluster create`, then says which keys this node
    /// serves and whom it follows.
    #[arg(long)]
    cluster: bool,
    /// Serve Redis clients (RESP2/RESP3) on this TCP address too ([resp]
    /// listen). Default: off.
    #[arg(long, value_name = "HOST:PORT")]
    resp_listen: Option<SocketAddr>,
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
    if args.resp_listen.is_some() {
        config.resp.listen = args.resp_listen;
    }
    config.log_json |= args.log_json;
    config.cluster.enabled |= args.cluster;
    let repl = &mut config.replication;
    if args.repl_listen.is_some() {
        repl.listen = args.repl_listen;
    }
    if args.replica_of.is_some() {
        repl.replica_of = args.replica_of.clone();
    }
    if let (Some(ca), Some(cert), Some(key)) = (&args.repl_ca, &args.repl_cert, &args.repl_key) {
        repl.tls = Some(strata::net::tls::ClusterTls {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if args.node_name.is_some() {
        repl.node_name = args.node_name.clone();
    }
    if let Some(ack) = args.default_ack {
        repl.default_ack = strata::types::AckPolicyText(ack);
    }
    if let Some(rate) = args.full_sync_rate {
        repl.full_sync_bytes_per_sec = rate;
    }
    if let Some(bytes) = args.repl_retention_bytes {
        repl.retention_bytes = bytes;
    }
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

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads {
        runtime.worker_threads(n.max(1));
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(e) => {
            eprintln!("strata-server: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::process::ExitCode {
    let config = match load_config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("strata-server: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    init_logging(config.log_json);
    #[cfg(feature = "failpoints")]
    if let Err(e) = arm_crash_points() {
        eprintln!("strata-server: STRATA_CRASH_AT: {e}");
        return std::process::ExitCode::from(2);
    }
    match run(config, args.ready_json).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("strata-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Crash drills (built with the `failpoints` feature): `STRATA_CRASH_AT=
/// name[@probability][,...]` aborts the process (as abruptly as a SIGKILL)
/// when execution reaches a named point, e.g. `checkpoint_after_flush@0.5`.
/// Points: wal_before_write, wal_after_write_before_sync,
/// commit_after_wal_before_disk, checkpoint_after_flush, wal_segment_removed,
/// install_after_chunk, install_before_finish.
#[cfg(feature = "failpoints")]
fn arm_crash_points() -> anyhow::Result<()> {
    const POINTS: [&str; 7] = [
        "wal_before_write",
        "wal_after_write_before_sync",
        "commit_after_wal_before_disk",
        "checkpoint_after_flush",
        "wal_segment_removed",
        "install_after_chunk",
        "install_before_finish",
    ];
    let Ok(spec) = std::env::var("STRATA_CRASH_AT") else {
        return Ok(());
    };
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        let (name, p) = match item.split_once('@') {
            Some((name, p)) => (name, p.parse::<f64>().context("probability")?),
            None => (item, 1.0),
        };
        anyhow::ensure!(
            POINTS.contains(&name),
            "unknown crash point {name:?}; known: {}",
            POINTS.join(", ")
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&p),
            "probability {p} is not within 0..=1"
        );
        let point = name.to_string();
        fail::cfg_callback(name, move || {
            if rand::random::<f64>() < p {
                eprintln!("crash point {point} reached: aborting");
                std::process::abort();
            }
        })
        .map_err(anyhow::Error::msg)?;
        tracing::warn!(point = name, probability = p, "crash point armed");
    }
    Ok(())
}

async fn run(config: Config, ready_json: bool) -> anyhow::Result<()> {
    let store_config = config.store_config();
    let store = tokio::task::spawn_blocking(move || Store::open(store_config))
        .await?
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    // Reads (and on first start writes and fsyncs) replication.meta and the
    // certificates: blocking file work, kept off the async threads.
    let (repl_store, repl_config, repl_dir) = (
        store.clone(),
        config.replication.clone(),
        config.data_dir.clone(),
    );
    let repl =
        tokio::task::spawn_blocking(move || Replication::new(repl_store, repl_config, &repl_dir))
            .await?
            .context("starting replication")?;
    let metrics = Arc::new(ServerMetrics::default());
    let mut node = Node::new(
        repl.clone(),
        config.announced_limits(),
        !config.tokens.is_empty(),
    );
    let cluster_slot;
    (node, cluster_slot) = if config.cluster.enabled {
        let (node, slot) = node.cluster_member();
        (node, Some(slot))
    } else {
        (node, None)
    };
    let meta_links = cluster_slot
        .as_ref()
        .map(|_| strata::cluster::node::LinkProtocols::accept(&repl));
    let resp = match config.resp.listen {
        Some(_) => Some(RespServer::bind(&config, node.clone()).await?),
        None => None,
    };
    let http_node = node.clone();
    let reclaim = (config.store.reclaim_interval_ms > 0).then(|| {
        let interval = std::time::Duration::from_millis(config.store.reclaim_interval_ms);
        tokio::spawn(node.clone().reclaim_elements_every(interval))
    });
    let server = Server::bind(&config, node, metrics.clone())?;
    let addr = server.local_addr()?;
    let client_addr = match config.cluster.enabled {
        true => ClusterNode::client_addr(&config.cluster, addr)?,
        false => addr.to_string(),
    };
    // Checked before anything starts: an address others cannot dial is a
    // configuration error.
    let resp_addr = match (&resp, config.cluster.enabled) {
        (Some(resp), true) => Some(ClusterNode::resp_addr(&config.cluster, resp.local_addr()?)?),
        _ => None,
    };
    let repl_listen = repl.start(&client_addr).context("starting replication")?;
    if let Some(repl_addr) = repl_listen {
        info!(addr = %repl_addr, "accepting replicas on {repl_addr}");
    }
    let cluster = match (cluster_slot, meta_links, repl_listen) {
        (Some(slot), Some(links), Some(link_addr)) => {
            let member = ClusterNode::start(
                &config.cluster,
                client_addr.clone(),
                &config.data_dir,
                repl.clone(),
                links,
                link_addr,
            )
            .await
            .context("joining the cluster")?;
            member.announce_gateway(resp_addr);
            let _ = slot.set(member.clone());
            Some(member)
        }
        _ => None,
    };
    if let Some(primary) = &config.replication.replica_of {
        info!(%primary, "replica of {primary}");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut metrics_bound = None;
    let metrics_task = match config.metrics_listen {
        None => None,
        Some(metrics_addr) => {
            let listener = tokio::net::TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("binding the metrics listener {metrics_addr}"))?;
            metrics_bound = Some(listener.local_addr()?);
            info!(addr = %listener.local_addr()?, "metrics and the HTTP API on http://{}/", listener.local_addr()?);
            let mut registry = Registry::default();
            metrics.register(&mut registry);
            store.register_metrics(&mut registry);
            repl.register_metrics(&mut registry);
            if let Some(member) = &cluster {
                member.register_metrics(&mut registry);
            }
            if let Some(resp) = &resp {
                resp.register_metrics(&mut registry);
            }
            let http_metrics = Arc::new(HttpMetrics::default());
            http_metrics.register(&mut registry);
            let render = Arc::new(move || strata::metrics::render(&registry));
            let api = Arc::new(HttpApi::new(&config, http_node, render, http_metrics));
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(strata::http::serve(
                listener,
                api,
                async move {
                    let _ = stop.changed().await;
                },
            )))
        }
    };

    let mut resp_bound = None;
    let resp_task = match resp {
        None => None,
        Some(resp) => {
            let addr = resp.local_addr()?;
            resp_bound = Some(addr);
            info!(%addr, tls = config.resp.tls, "Redis clients on {addr}");
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(resp.run(async move {
                let _ = stop.changed().await;
            })))
        }
    };

    let ready = Ready {
        pid: std::process::id(),
        listen: addr,
        fingerprint: server.fingerprint().to_string(),
        metrics_listen: metrics_bound,
        repl_listen,
        node_name: config.replication.node_name.clone(),
        node_id: repl.node_id(),
        resp_listen: resp_bound,
    };
    announce_serving(&config, &ready, ready_json);

    server.run(shutdown_signal()).await;
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    let _ = stop_tx.send(true);
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    // Its connections finish their commands before the store closes.
    if let Some(task) = resp_task {
        let _ = task.await;
    }
    if let Some(task) = reclaim {
        task.abort();
    }
    info!("checkpointing before exit");
    store.close().await.context("closing the store")?;
    info!("stopped cleanly");
    Ok(())
}

/// Says the node serves, once every listener is bound: in the log for
/// people and, with `--ready-json`, as one line on stdout for whatever
/// started it. A starter that stopped reading loses only its line; the
/// node serves on.
fn announce_serving(config: &Config, ready: &Ready, ready_json: bool) {
    info!(
        listen = %ready.listen,
        fingerprint = %ready.fingerprint,
        data_dir = %config.data_dir.display(),
        fsync = %config.store.fsync,
        "strata node serving; clients: strata-cli --addr {} --pin {}",
        ready.listen,
        ready.fingerprint
    );
    if ready_json && let Err(e) = ready.announce(&mut std::io::stdout().lock()) {
        tracing::warn!(error = %e, "cannot write the --ready-json line to stdout");
    }
}
