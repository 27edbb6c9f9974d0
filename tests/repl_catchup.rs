//! Replicas that were down: caught up from the WAL when it still holds
//! their position, re-seeded by a full sync when it does not, and a full
//! sync cut by a SIGKILL resumes instead of starting over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Member, converged, gen_certs, metric};
use strata::net::client::Client;

/// A value that does not compress away (so transfer rates are real).
fn value(i: u32, len: usize) -> Vec<u8> {
    let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn write(client: &Client, from: u32, n: u32, value_len: usize) {
    let mut tasks = Vec::new();
    for t in 0..4 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (from + t..from + n).step_by(4) {
                client
                    .set(format!("key-{i:06}"), value(i, value_len))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn full_syncs(member: &Member, event: &str) -> f64 {
    metric(
        &member.node.metrics(),
        &format!("strata_full_syncs_total{{event=\"{event}\"}}"),
    )
    .unwrap_or(0.0)
}

fn await_log(member: &Member, needle: &str, within: Duration) -> String {
    member.await_log(needle, within)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_catches_up_from_the_wal() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    let primary = Member::start(root.path(), &certs, "p", &[]);
    let upstream = primary.repl_addr.to_string();
    let mut r1 = Member::start(root.path(), &certs, "r1", &["--replica-of", &upstream]);
    let pc = primary.client().await;
    write(&pc, 0, 400, 100).await;
    converged(&pc, &[&r1.client().await]).await;
    // A fresh replica has a history of its own: its first sync is a full one.
    assert_eq!(full_syncs(&primary, "started"), 1.0);

    r1.node.kill();
    write(&pc, 400, 400, 100).await;
    r1.node.restart();
    let (seq, _, _) = converged(&pc, &[&r1.client().await]).await;
    assert!(seq >= 800);
    assert_eq!(
        full_syncs(&primary, "started"),
        1.0,
        "the restarted replica continued from the WAL"
    );
    let m = r1.node.metrics();
    assert!(
        metric(&m, "strata_replication_records_applied_total").unwrap() >= 400.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_past_the_wal_is_reseeded_by_full_sync() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    // Small segments and a small retention budget, so the WAL moves on fast.
    let conf = root.path().join("p.toml");
    std::fs::write(
        &conf,
        "[store]\nwal_segment_bytes = 16384\ncheckpoint_interval_ms = 0\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let primary = Member::start(
        root.path(),
        &certs,
        "p",
        &["--config", &conf, "--repl-retention-bytes", "65536"],
    );
    let upstream = primary.repl_addr.to_string();
    let mut r1 = Member::start(root.path(), &certs, "r1", &["--replica-of", &upstream]);
    let pc = primary.client().await;
    write(&pc, 0, 100, 100).await;
    converged(&pc, &[&r1.client().await]).await;

    r1.node.kill();
    write(&pc, 100, 2000, 200).await;
    await_log(
        &primary,
        "behind the WAL retention budget",
        Duration::from_secs(30),
    );
    let report = common::cluster::pairs(pc.checkpoint().await.unwrap());
    assert!(
        report["segments_removed"].parse::<u64>().unwrap() > 0,
        "{report:?}"
    );

    r1.node.restart();
    let (seq, keys, _) = converged(&pc, &[&r1.client().await]).await;
    assert!(seq >= 2100 && keys == 2100, "{seq} {keys}");
    assert_eq!(
        full_syncs(&primary, "started"),
        2.0,
        "re-seeded by a full sync"
    );
    assert_eq!(full_syncs(&primary, "completed"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_full_sync_resumes() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    // ~24 MiB of data sent at 6 MB/s: a SIGKILL lands mid-transfer.
    let primary = Member::start(
        root.path(),
        &certs,
        "p",
        &["--fsync", "never", "--full-sync-rate", "6000000"],
    );
    let pc = primary.client().await;
    write(&pc, 0, 6000, 4096).await;
    let upstream = primary.repl_addr.to_string();
    let mut r1 = Member::start(root.path(), &certs, "r1", &["--replica-of", &upstream]);

    // Kill once more than the install's flush interval (8 MiB) has landed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = metric(
            &r1.node.metrics(),
            "strata_full_sync_bytes_done{replica=\"self\"}",
        )
        .unwrap_or(0.0);
        if done > 10e6 {
            break;
        }
        assert!(Instant::now() < deadline, "full sync made no progress");
        // Polled: progress is only visible through metrics.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While it installs, the replica serves no reads.
    match r1.client().await.get("key-000001").await {
        Err(strata::net::client::ClientError::Server { code, .. }) => {
            assert_eq!(code, strata::net::client::ErrorCode::Unavailable)
        }
        other => panic!("expected Unavailable during a full sync, got {other:?}"),
    }
    // Partial data is never promoted.
    match r1.client().await.promote().await {
        Err(strata::net::client::ClientError::Server { code, .. }) => {
            assert_eq!(code, strata::net::client::ErrorCode::Unavailable)
        }
        other => panic!("promoting a replica mid full sync: {other:?}"),
    }
    r1.node.kill();
    r1.node.restart();
    let resumed = await_log(&primary, "full sync resumes", Duration::from_secs(30));
    let done: u64 = resumed
        .split("done_bytes=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no done_bytes in {resumed}"));
    assert!(
        done >= 8 << 20,
        "resumed at {done} bytes, not from the start"
    );
    let (_, keys, _) = converged(&pc, &[&r1.client().await]).await;
    assert_eq!(keys, 6000);
    assert_eq!(
        full_syncs(&primary, "started"),
        1.0,
        "every reconnect continued the first transfer"
    );
    assert!(full_syncs(&primary, "resumed") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_continue_after_the_primary_restarts() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &["p", "r1"]);
    let mut primary = Member::start(root.path(), &certs, "p", &[]);
    let upstream = primary.repl_addr.to_string();
    let r1 = Member::start(root.path(), &certs, "r1", &["--replica-of", &upstream]);
    write(&primary.client().await, 0, 300, 100).await;
    converged(&primary.client().await, &[&r1.client().await]).await;

    // kill -9 and restart the primary (same data, same replication address).
    primary.node.kill();
    primary.node.restart();
    let pc = primary.client().await;
    write(&pc, 300, 300, 100).await;
    let (seq, keys, _) = converged(&pc, &[&r1.client().await]).await;
    assert!(seq >= 600 && keys == 600, "{seq} {keys}");
    // The replica continued by WAL: the restarted primary sent no full sync.
    assert_eq!(full_syncs(&primary, "started"), 0.0);
}
