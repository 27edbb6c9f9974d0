//! Helpers shared by the integration tests.
#![allow(dead_code)]

// Real server processes need the harness; tests that use these two list
// `test-util` in their `required-features`.
#[cfg(feature = "test-util")]
pub mod cluster;
#[cfg(feature = "failpoints")]
pub mod hold;
#[cfg(feature = "test-util")]
pub mod node;
pub mod quic;
#[cfg(feature = "test-util")]
pub mod rebalance;
pub mod resp;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use strata::clock::{Clock, ManualClock};
use strata::store::{Env, Store, StoreConfig};
use strata::wal::{FsyncPolicy, StdFs};

/// `Bytes` from a string literal.
pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A small store config in `dir` (no periodic checkpoints unless asked).
pub fn config(dir: &Path, fsync: FsyncPolicy) -> StoreConfig {
    let mut config = StoreConfig::new(dir).with_fsync(fsync);
    config.checkpoint_interval_ms = 0;
    config.memory_budget_bytes = 8 << 20;
    config.disk.block_cache_bytes = 4 << 20;
    config.disk.write_buffer_bytes = 4 << 20;
    config
}

/// Opens a store on the real filesystem with the given clock.
pub fn open_with_clock(config: StoreConfig, clock: Arc<ManualClock>) -> Store {
    let clock: Arc<dyn Clock> = clock;
    let env = Env {
        clock,
        wal_fs: Arc::new(StdFs),
    };
    Store::open_with(config, env).expect("open store").0
}

/// A manual clock at a fixed, realistic time.
pub fn manual_clock() -> Arc<ManualClock> {
    ManualClock::new(1_800_000_000_000)
}
