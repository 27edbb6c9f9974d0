//! Opens a store, writes and reads a few keys, and prints what recovery
//! found, so a newcomer can see the storage engine work end to end.
//!
//! `cargo run --example open_store -- [DATA_DIR]` (default `./strata-data`).
//! Run it twice: the second run finds the first run's keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use strata::store::{Env, Store, StoreConfig};
use strata::types::Condition;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "strata-data".into());
    let (store, report) = Store::open_with(StoreConfig::new(&dir), Env::default())?;
    println!(
        "opened {dir}: disk tier at seq {}, replayed {} WAL records, last seq {}",
        report.disk_applied, report.replayed, report.last_seq
    );
    if let Some(previous) = store.get(b"greeting").await? {
        println!(
            "found from an earlier run: greeting = {:?} (version {})",
            previous.value, previous.version
        );
    }
    let runs = store.incr(Bytes::from_static(b"runs"), 1).await?.0;
    store
        .set(
            Bytes::from_static(b"greeting"),
            Bytes::from(format!("hello from run {runs}")),
            Some(Duration::from_secs(3600)),
            Condition::Always,
        )
        .await?;
    let entry = store.get(b"greeting").await?.expect("just written");
    println!(
        "greeting = {:?} (version {}, expires in {} s)",
        entry.value,
        entry.version,
        entry.ttl_ms.unwrap_or(0) / 1000
    );
    store.close().await?;
    Ok(())
}
