//! What a cluster client pays for a map refresh: a refresh that finds the
//! map unchanged (`ClusterMapSince` answered `ClusterMapCurrent`, what a
//! redirect costs when the client already has the newest map), a whole
//! `ClusterMap` fetched and decoded (what a changed map costs), and the
//! 16384-slot table rebuilt from the ring (also paid for a changed map).
//!
//! ```text
//! tools/local-cluster.sh                       # in another terminal
//! cargo run --release --example map_refresh -- --addr 127.0.0.1:7379 \
//!     --ca strata-cluster/certs/ca.crt [--rounds 200]
//! ```
//!
//! Prints the map's version and size, then each of the three (min, median,
//! max over the rounds).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::cluster::{Ring, ShardId};
use strata::net::client::{Client, ClientConfig, ServerTrust};

/// Times map refreshes of a cluster client.
#[derive(Debug, Parser)]
struct Args {
    /// A node of the cluster (client address).
    #[arg(long, default_value = "127.0.0.1:7379")]
    addr: String,
    /// The CA that signed the nodes' certificates.
    #[arg(long)]
    ca: PathBuf,
    /// Refreshes to time.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "min {:?}  median {:?}  max {:?}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = ClusterClientConfig::with_trust(ServerTrust::CaFile(args.ca.clone()), |c| c);
    let client = ClusterClient::connect(&[args.addr.as_str()], config).await?;
    let map = client.map();
    println!(
        "map version {}: {} shards, {} nodes, V = {}",
        map.version,
        map.shards.len(),
        map.nodes.len(),
        map.vnodes
    );
    let ids: Vec<ShardId> = map.shards.iter().map(|s| ShardId(s.id)).collect();
    let addr = tokio::net::lookup_host(&args.addr)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{} resolves to nothing", args.addr))?;
    let node = Client::connect(ClientConfig::new(
        addr,
        ServerTrust::CaFile(args.ca.clone()),
    ))
    .await?;
    let (mut unchanged, mut fetch, mut table) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        let started = Instant::now();
        client.refresh().await?;
        unchanged.push(started.elapsed());
        let started = Instant::now();
        let whole = node.cluster_map().await?;
        fetch.push(started.elapsed());
        assert_eq!(whole.version, map.version, "the map changed while timing");
        let started = Instant::now();
        let _ = Ring::new(&ids, map.vnodes)?.slot_table();
        table.push(started.elapsed());
    }
    println!(
        "refresh, map unchanged (ClusterMapSince): {}",
        summary(unchanged)
    );
    println!(
        "whole map fetched and decoded (ClusterMap): {}",
        summary(fetch)
    );
    println!(
        "slot table built from the ring:            {}",
        summary(table)
    );
    Ok(())
}
