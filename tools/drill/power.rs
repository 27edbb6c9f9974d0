//! The power-loss drill, in process: the store's WAL runs on [`SimFs`],
//! which keeps written and synced bytes apart. At a random moment under
//! load the "power fails": from then on no write or sync reaches the WAL's
//! files (writes are cut short, syncs fail, so nothing more is
//! acknowledged), the store is dropped without a checkpoint (RocksDB loses
//! its memtable), and the files keep only their synced bytes plus a
//! pseudo-random prefix of the rest (a torn tail). The store is reopened
//! on what is left and every write is checked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use strata::clock::SystemClock;
use strata::store::{Env, Store, StoreConfig};
use strata::wal::{FsyncPolicy, SimFs};

use crate::scenario::{Ctx, GRACE_LIVE};
use crate::workload::{Load, Promise, Target, Workload};

fn config(ctx: &Ctx) -> StoreConfig {
    let mut cfg = StoreConfig::new(ctx.dir.join("store")).with_fsync(FsyncPolicy::Always);
    // Small segments and frequent checkpoints (by WAL size, so none runs
    // once the power is gone and RocksDB keeps only what a checkpoint
    // flushed before): the loss often lands near a rotation or a segment
    // deletion, and recovery replays the WAL.
    cfg.wal_segment_bytes = 16 << 10;
    cfg.checkpoint_wal_bytes = 256 << 10;
    cfg.checkpoint_interval_ms = 0;
    cfg.memory_budget_bytes = 32 << 20;
    cfg.disk.block_cache_bytes = 8 << 20;
    cfg.disk.write_buffer_bytes = 8 << 20;
    cfg
}

async fn open(cfg: &StoreConfig, fs: &SimFs) -> anyhow::Result<(Store, u64)> {
    let (cfg, env) = (
        cfg.clone(),
        Env {
            clock: Arc::new(SystemClock),
            wal_fs: Arc::new(fs.clone()),
        },
    );
    let (store, report) = tokio::task::spawn_blocking(move || Store::open_with(cfg, env))
        .await
        .context("the open task")??;
    Ok((store, report.replayed_bytes))
}

/// Runs the power-loss rounds.
pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let fs = SimFs::new();
    let cfg = config(ctx);
    let (mut store, _) = open(&cfg, &fs).await.context("opening the store")?;
    let workload = Workload::uniform(ctx.writers, None, Promise::Synced);
    for round in 0..ctx.rounds {
        let load = Load::start(
            Target::Local(store.clone()),
            &workload,
            ctx.history.clone(),
            ctx.seed_for(round, 0),
        );
        // A checkpoint at a random moment too, on top of the periodic ones.
        let delay = ctx.kill_delay();
        let checkpoint_at =
            Duration::from_millis(ctx.rng.random_range(0..delay.as_millis() as u64));
        tokio::time::sleep(checkpoint_at).await;
        store.checkpoint().await.context("checkpoint under load")?;
        tokio::time::sleep(delay - checkpoint_at).await;

        // IMPORTANT: the power fails here; nothing written from now on
        // becomes durable, so nothing more can be acknowledged as synced.
        fs.fail_writes(true);
        fs.fail_syncs(true);
        load.stop(GRACE_LIVE).await;
        drop(store);
        fs.power_loss_torn(ctx.seed_for(round, 1));
        ctx.stats.kills += 1;

        let reopen = Instant::now();
        let (reopened, replayed) = match open(&cfg, &fs).await {
            Ok(opened) => opened,
            Err(e) => {
                ctx.violation(format!(
                    "the store did not reopen after the power loss: {e:#}"
                ));
                return Ok(());
            }
        };
        store = reopened;
        let took = ctx.recovered(reopen, Some(replayed));
        let keys = ctx
            .verify(&Target::Local(store.clone()), "the store")
            .await?;
        ctx.progress(format!(
            "round {}/{}: power lost after {:.2} s; reopened in {} ms (replayed {replayed} WAL bytes); {keys} keys checked, {} writes acknowledged so far",
            round + 1,
            ctx.rounds,
            delay.as_secs_f64(),
            took.as_millis(),
            ctx.acked()
        ));
    }
    store.close().await.context("closing the store")?;
    Ok(())
}
