//! What a cluster client pays for a map refresh: `ClusterMap` from one
//! node, decoded, and the 16384-slot table rebuilt from the ring.
//!
//! ```text
//! tools/local-cluster.sh                       # in another terminal
//! cargo run --release --example map_refresh -- --addr 127.0.0.1:7379 \
//!     --ca strata-cluster/certs/ca.crt [--rounds 200]
//! ```
//!
//! Prints the map's version and size, then the refresh time (min, median,
//! max over the rounds) next to the slot-table build alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use strata::cluster::client::{ClusterClient, ClusterClientConfig};
use strata::cluster::{Ring, ShardId};
use strata::net::client::ServerTrust;

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
    let mut refresh = Vec::new();
    let mut table = Vec::new();
    for _ in 0..args.rounds {
        let started = Instant::now();
        client.refresh().await?;
        refresh.push(started.elapsed());
        let started = Instant::now();
        let _ = Ring::new(&ids, map.vnodes)?.slot_table();
        table.push(started.elapsed());
    }
    println!("refresh (request + decode + table): {}", summary(refresh));
    println!("slot table alone:                   {}", summary(table));
    Ok(())
}
