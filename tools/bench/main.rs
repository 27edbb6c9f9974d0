//! `strata-bench`: a load generator for one strata node, or (--cluster)
//! for a cluster, every key sent to its shard's primary.
//!
//! `connections × inflight` tasks share one [`Client`] whose pool holds
//! `connections` QUIC connections; the pool hands requests to its
//! connections round-robin, so every connection carries `inflight` requests
//! on average. Each task draws GET or SET by the `--ratio` weights and a key
//! from the `--distribution`, and records the answer's latency in per-kind
//! HDR histograms.
//!
//! - [`workload`]: keys, key distributions (zipf by rejection-inversion),
//!   the op mix, and self-checking values.
//! - [`stats`]: sharded histograms and counters.
//! - [`run`]: the preload pass, the measured run and the progress line.
//! - [`report`]: the final table and the JSON summary.

mod report;
mod run;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, error::ErrorKind};
use serde_json::json;
use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::net::client::{AckPolicy, Client, ClientConfig, ClientError, ServerTrust};
use strata::net::tls::parse_fingerprint;

use crate::report::{HitRatio, Summary};
use crate::run::{RunPlan, Target, Until, Workload};
use crate::workload::{Distribution, KeyChooser, KeySpace, Mix, VALUE_HEADER_BYTES};

/// Exit status for a run that failed (no connection, preload failures,
/// errors above --max-errors, any mismatch).
const EXIT_FAILED: u8 = 1;

/// Load generator for a strata node: GET/SET mixes over a key space,
/// latency percentiles per operation, checked values.
///
/// Starts `--connections` × `--inflight` request tasks over one client pool
/// of `--connections` QUIC connections, optionally writes every key first
/// (--preload), runs a warmup that is not recorded, then measures for
/// --duration seconds or --requests requests. A progress line goes to
/// stderr every second; the summary goes to stdout, as a table or, with
/// --json, as one JSON object.
///
/// Every value written carries a CRC32 of its key and content (and the key
/// itself), so a sample of reads (--verify-ratio) can prove the bytes belong
/// to the key; those reads are also checked against the run's own
/// acknowledged writes (no older version, not absent). This assumes no one
/// else writes the `key:` keys meanwhile. In cluster mode versions are
/// compared only while a key stays on one shard: a migration gives the
/// keys it moves the receiving shard's versions.
///
/// With --cluster, --addr names one or more nodes of a cluster (comma
/// separated) and the load goes through the cluster client: each key to its
/// shard's primary (keys spread over the shards by their slots), the pool
/// of --connections per primary. Needs --ca trusting every node. The
/// summary then adds the requests sent to each shard and leaves out the
/// server hit ratio.
///
/// Exit status: 0 on success; 1 if the run failed (cannot connect, preload
/// failed, more errors than --max-errors, or ANY mismatched value); 2 for a
/// wrong command line.
#[derive(Debug, Parser)]
#[command(
    name = "strata-bench",
    version,
    about,
    long_about,
    verbatim_doc_comment
)]
struct Args {
    /// Server address.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7379",
        env = "STRATA_ADDR"
    )]
    addr: String,
    /// Trust the server whose certificate has this SHA-256 fingerprint (64
    /// hex digits, colons allowed), as printed by strata-server at start.
    #[arg(long, value_name = "SHA256", value_parser = parse_pin, conflicts_with = "ca")]
    pin: Option<[u8; 32]>,
    /// Trust server certificates signed by this PEM CA file (the name
    /// checked is --server-name). Default when neither --pin nor --ca is
    /// given: ./strata-data/tls/server.crt, if it exists.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The name checked against the certificate with --ca.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    server_name: String,
    /// Token to authenticate with (never printed). Prefer the STRATA_TOKEN
    /// environment variable: arguments are visible to other local users.
    #[arg(long, value_name = "T", env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// QUIC connections in the client pool.
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Concurrent requests per connection: C × N request tasks in all.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    inflight: u32,
    /// Worker threads of the async runtime [default: the number of CPUs].
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Operation mix as GET:SET weights, e.g. 90:10, 100:0 (reads only) or
    /// 0:1 (writes only).
    #[arg(long, value_name = "GET:SET", default_value = "90:10")]
    ratio: Mix,
    /// Size of the key space: keys key:0…0 to key:<K-1>.
    #[arg(long, value_name = "K", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
    keys: u64,
    /// Key length in bytes: "key:" then the zero-padded index.
    #[arg(long, value_name = "BYTES", default_value_t = 16)]
    key_size: usize,
    /// Value length in bytes (at least 8: a CRC32 and a generation number
    /// lead every value).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    value_size: usize,
    /// How keys are drawn: uniform, or zipf:S for a zipfian distribution
    /// with exponent S (zipf alone is zipf:0.99). Popular keys are
    /// scattered over the key space, not adjacent.
    #[arg(long, value_name = "DIST", default_value = "uniform")]
    distribution: Distribution,
    /// Measure for this many seconds (after the warmup).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        conflicts_with = "requests"
    )]
    duration: f64,
    /// Measure this many requests instead of a duration.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Run the load this many seconds before measuring (not recorded).
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    warmup: f64,
    /// Acknowledgement policy of the writes: async,
    /// semi-sync:K[:TIMEOUT_MS[:fail]] (K replica acks) or sync[:TIMEOUT_MS]
    /// [default: the server's].
    #[arg(long, value_name = "POLICY", value_parser = parse_ack)]
    ack: Option<AckPolicy>,
    /// Write every key once before the run (batched multi-sets, with
    /// progress), so that reads find values and can all be checked.
    #[arg(long)]
    preload: bool,
    /// Seed of the key, mix and value generators [default: random; the
    /// summary shows the one used].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Share of GET answers checked (0 to 1).
    #[arg(long, value_name = "R", default_value_t = 0.01, value_parser = parse_ratio)]
    verify_ratio: f64,
    /// Give up on a request (or connection attempt) after this many ms; the
    /// request counts as an error.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Client retries of a failed request that is safe to resend. 0 (the
    /// default) shows every failure as an error.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Failed requests tolerated before the exit status becomes 1.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_errors: u64,
    /// Print the summary as one JSON object (config, ops, ops/s, latency
    /// percentiles in µs per operation, errors, mismatches, server hit
    /// ratio) instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Cluster mode: route each key to its shard's primary by the cluster
    /// map (--addr: one or more nodes, comma separated; needs --ca).
    #[arg(long, requires = "ca", conflicts_with = "pin")]
    cluster: bool,
}

fn parse_pin(text: &str) -> Result<[u8; 32], String> {
    parse_fingerprint(text).map_err(|e| e.to_string())
}

fn parse_ack(text: &str) -> Result<AckPolicy, String> {
    text.parse::<AckPolicy>()
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

/// Exits with status 2 and clap's usage message.
fn usage_error(message: impl std::fmt::Display) -> ! {
    Args::command()
        .error(ErrorKind::ValueValidation, message)
        .exit()
}

fn seconds(flag: &str, secs: f64, allow_zero: bool) -> Duration {
    let ok = secs.is_finite() && secs >= 0.0 && (allow_zero || secs > 0.0) && secs < 1e9;
    if !ok {
        usage_error(format!(
            "--{flag} {secs}: expected a number of seconds above 0"
        ));
    }
    Duration::from_secs_f64(secs)
}

fn main() -> ExitCode {
    // Usage errors and --help are clap's: exit status 2 and 0.
    let args = Args::parse();
    let space = KeySpace::new(args.keys, args.key_size).unwrap_or_else(|e| usage_error(e));
    if args.value_size < VALUE_HEADER_BYTES {
        usage_error(format!(
            "--value-size {}: values need at least {VALUE_HEADER_BYTES} bytes (checksum and \
             generation)",
            args.value_size
        ));
    }
    let duration = seconds("duration", args.duration, false);
    let warmup = seconds("warmup", args.warmup, true);
    let trust = match (&args.pin, &args.ca) {
        (Some(pin), _) => ServerTrust::Pin(*pin),
        (None, Some(ca)) => ServerTrust::CaFile(ca.clone()),
        (None, None) if local_node_cert().is_file() => ServerTrust::CaFile(local_node_cert()),
        (None, None) => usage_error(
            "cannot verify the server: pass --pin <fingerprint> (strata-server prints it \
             when it starts) or --ca <file>",
        ),
    };
    let tasks = args.connections as usize * args.inflight as usize;
    let seed = args.seed.unwrap_or_else(rand::random);
    let until = match args.requests {
        Some(n) => Until::Requests(n),
        None => Until::Elapsed(duration),
    };
    let workload = Arc::new(Workload {
        chooser: KeyChooser::new(args.distribution, space.len()),
        space,
        mix: args.ratio,
        value_size: args.value_size,
        verify_ratio: args.verify_ratio,
        ack: args.ack,
    });

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads as usize);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata-bench: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let plan = RunPlan {
        tasks,
        warmup,
        until,
        seed,
        quiet: args.quiet,
    };
    match runtime.block_on(bench(&args, trust, workload, plan)) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("strata-bench: {message}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Connects, preloads, runs and prints the summary; the exit status follows
/// the errors and mismatches.
async fn bench(
    args: &Args,
    trust: ServerTrust,
    workload: Arc<Workload>,
    plan: RunPlan,
) -> Result<ExitCode, String> {
    let client = connect(args, trust).await?;
    let limits = client.limits();
    if workload.space.key_size() > limits.max_key_bytes as usize {
        return Err(format!(
            "--key-size {} is above the server's limit of {} bytes",
            workload.space.key_size(),
            limits.max_key_bytes
        ));
    }
    if workload.value_size > limits.max_value_bytes as usize {
        return Err(format!(
            "--value-size {} is above the server's limit of {} bytes",
            workload.value_size, limits.max_value_bytes
        ));
    }
    let acked = run::acked_table(&workload.space, workload.verify_ratio);
    let preload = if args.preload {
        Some(
            run::preload(
                &client, &workload, &acked, plan.tasks, plan.seed, plan.quiet,
            )
            .await?,
        )
    } else {
        None
    };
    let report = run::run(&client, workload.clone(), acked, plan).await?;
    let per_shard = match &client {
        Target::Cluster { cluster, .. } => Some(cluster.requests_by_shard()),
        Target::Node(_) => None,
    };
    client.close().await;

    let config = json!({
        "addr": args.addr,
        "connections": args.connections,
        "inflight": args.inflight,
        "tasks": plan.tasks,
        "ratio": workload.mix.to_string(),
        "keys": workload.space.len(),
        "key_size": workload.space.key_size(),
        "value_size": workload.value_size,
        "distribution": args.distribution.to_string(),
        "duration_secs": args.requests.is_none().then_some(args.duration),
        "requests": args.requests,
        "warmup_secs": args.warmup,
        "ack": args.ack.map(|a| a.to_string()),
        "preload": args.preload,
        "seed": plan.seed,
        "verify_ratio": args.verify_ratio,
        "timeout_ms": args.timeout_ms,
        "retries": args.retries,
        "cluster": args.cluster,
    });
    let headline = format!(
        "strata-bench {}: {} connections x {} in flight, get:set {}, {} keys ({}, {} B keys), \
         {} B values, ack {}, seed {}",
        args.addr,
        args.connections,
        args.inflight,
        workload.mix,
        workload.space.len(),
        args.distribution,
        workload.space.key_size(),
        workload.value_size,
        args.ack
            .map_or("server default".to_string(), |a| a.to_string()),
        plan.seed,
    );
    let summary = Summary {
        config,
        headline,
        preload,
        run: &report,
        hit_ratio: HitRatio::from_info(report.info_before.as_deref(), report.info_after.as_deref()),
    };
    if args.json {
        let mut out = summary.to_json();
        if let Some(shards) = &per_shard {
            let counts: serde_json::Map<String, serde_json::Value> = shards
                .iter()
                .map(|(shard, n)| (shard.0.to_string(), json!(n)))
                .collect();
            out["requests_by_shard"] = json!(counts);
        }
        println!("{out}");
    } else {
        print!("{}", summary.to_table());
        if let Some(shards) = &per_shard {
            let counts: Vec<String> = shards
                .iter()
                .map(|(shard, n)| format!("shard {shard}: {n}"))
                .collect();
            println!("requests by shard: {}", counts.join(", "));
        }
    }
    let (errors, mismatches) = (summary.errors(), summary.mismatches());
    if mismatches > 0 {
        eprintln!(
            "strata-bench: FAILED: {mismatches} reads returned wrong values (see mismatch samples)"
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    if errors > args.max_errors {
        eprintln!(
            "strata-bench: FAILED: {errors} requests failed (--max-errors {})",
            args.max_errors
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    if summary.run.totals.total(|c| c.ok) == 0 {
        eprintln!("strata-bench: FAILED: no request succeeded");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// One node's client, or with --cluster a cluster client seeded by every
/// --addr node.
async fn connect(args: &Args, trust: ServerTrust) -> Result<Target, String> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let (server_name, token) = (args.server_name.clone(), args.token.clone());
    let (connections, retries) = (args.connections as usize, args.retries);
    let node_config = move |addr: &str| {
        let mut config = ClientConfig::new(addr, trust.clone())
            .with_server_name(&server_name)
            .with_client_name("strata-bench")
            .with_connections(connections)
            .with_connect_timeout(timeout)
            .with_request_timeout(timeout)
            .with_retries(retries);
        if let Some(token) = &token {
            config = config.with_token(token);
        }
        config
    };
    if !args.cluster {
        let client = Client::connect(node_config(&args.addr))
            .await
            .map_err(|e| match e {
                // These name the address already.
                ClientError::Connect { .. } | ClientError::Tls { .. } => e.to_string(),
                e => format!("connecting to {}: {e}", args.addr),
            })?;
        return Ok(Target::Node(client));
    }
    let seeds: Vec<&str> = args
        .addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let cluster = ClusterClient::connect(&seeds, ClusterClientConfig::new(node_config))
        .await
        .map_err(|e| format!("connecting to the cluster at {}: {e}", args.addr))?;
    let first = seeds.first().copied().unwrap_or_default();
    let seed = cluster
        .node_client(first)
        .await
        .map_err(|e| format!("connecting to {first}: {e}"))?;
    Ok(Target::Cluster { cluster, seed })
}

/// The certificate a node started in ./strata-data generated for itself.
fn local_node_cert() -> PathBuf {
    strata::net::tls::default_paths(&strata::config::Config::default().data_dir).0
}
