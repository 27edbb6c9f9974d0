//! A tour of the client library against a running node.
//!
//! ```text
//! strata-server --data-dir ./demo-data        # prints its fingerprint
//! cargo run --example client -- --addr 127.0.0.1:7379 --pin <FINGERPRINT> [--token T]
//! ```
//!
//! It writes a few keys, reads one back, updates it with a compare-and-set
//! (and shows a stale one being refused), and scans them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use strata::net::client::{Client, ClientConfig, ServerTrust, SetOptions, SetOutcome};
use strata::net::tls::parse_fingerprint;

/// Connects to a strata node and runs set / get / compare-and-set / scan.
#[derive(Debug, Parser)]
struct Args {
    /// The node's client address.
    #[arg(long, default_value = "127.0.0.1:7379")]
    addr: String,
    /// SHA-256 fingerprint of the node's certificate (strata-server prints it).
    #[arg(long)]
    pin: String,
    /// Token, if the node requires one.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pin = parse_fingerprint(&args.pin).context("--pin")?;
    let mut config = ClientConfig::new(&args.addr, ServerTrust::Pin(pin))
        .with_client_name("strata-example")
        .with_request_timeout(Duration::from_secs(2));
    if let Some(token) = args.token {
        config = config.with_token(token);
    }
    let client = Client::connect(config)
        .await
        .with_context(|| format!("connecting to {}", args.addr))?;
    let hello = client.server_info();
    println!(
        "connected to {} (role {:?}, longest value {} bytes)",
        hello.server,
        hello.role.as_deref().unwrap_or("?"),
        hello.limits.max_value_bytes
    );

    // Plain writes; each reply says what the write reached.
    for (key, value) in [
        ("demo:apple", "red"),
        ("demo:banana", "yellow"),
        ("demo:cherry", "dark red"),
    ] {
        let written = client.set(key, value).await?;
        println!(
            "set {key} = {value:?}: version {}, fsynced {}",
            written.version, written.durability.local_synced
        );
    }

    // A read gives the value with its version and TTL.
    let entry = client
        .get("demo:apple")
        .await?
        .context("demo:apple vanished")?;
    println!(
        "get demo:apple = {:?} (version {}, ttl {:?})",
        String::from_utf8_lossy(&entry.value),
        entry.version,
        entry.ttl_ms
    );

    // Compare-and-set: succeeds once, then the same (now stale) version is refused.
    let cas = SetOptions::new().if_version(entry.version);
    for attempt in 1..=2 {
        match client.set_with("demo:apple", "green", cas).await? {
            SetOutcome::Written(reply) => {
                println!("cas #{attempt}: written at version {}", reply.version)
            }
            SetOutcome::NotWritten { current_version } => println!(
                "cas #{attempt}: refused, the key is at version {} now, not {}",
                current_version.map_or("(absent)".to_string(), |v| v.to_string()),
                entry.version
            ),
        }
    }

    // A scan lists the keys under a prefix in byte order.
    println!("scan demo:");
    for (key, entry) in client.scan_all("demo:").await? {
        println!(
            "  {} = {:?} (version {})",
            String::from_utf8_lossy(&key),
            String::from_utf8_lossy(&entry.value),
            entry.version
        );
    }
    client.close().await;
    Ok(())
}
