//! Replication state lives in one lock domain: `info`, the `/metrics`
//! rendering, the leader hint refused writes carry, and the read check all
//! run concurrently on a replica without ever waiting on each other for
//! good. (They once took two mutexes in opposite orders, so an `info`
//! request racing a metrics scrape could deadlock two worker threads.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use strata::metrics::{Registry, render};
use strata::net::tls::ClusterTls;
use strata::repl::{ReplConfig, Replication};
use strata::store::Store;
use strata::wal::FsyncPolicy;

/// How many rounds each thread runs: the lock windows are short, so the
/// old code deadlocked well within this on two cores.
const ROUNDS: usize = 100_000;

#[test]
fn info_metrics_and_hints_never_deadlock() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    common::cluster::gen_certs(&certs, &["r1"]);
    let store = Store::open(common::config(&dir.path().join("data"), FsyncPolicy::Never)).unwrap();
    let cfg = ReplConfig {
        // A primary that is not there: the follower keeps reconnecting,
        // which updates the replica state all the while.
        replica_of: Some("127.0.0.1:9".into()),
        tls: Some(ClusterTls {
            ca: certs.join("ca.crt"),
            cert: certs.join("r1.crt"),
            key: certs.join("r1.key"),
        }),
        node_name: Some("r1".into()),
        ..ReplConfig::default()
    };
    let repl = Replication::new(store, cfg, &dir.path().join("data")).unwrap();
    {
        let _guard = runtime.enter();
        repl.start("127.0.0.1:7379").unwrap();
    }

    let mut registry = Registry::default();
    repl.register_metrics(&mut registry);
    let registry = Arc::new(registry);

    let (done_tx, done) = mpsc::channel();
    let jobs: [Box<dyn Fn() + Send>; 3] = [
        {
            let repl = Arc::clone(&repl);
            Box::new(move || assert!(!repl.info().is_empty()))
        },
        {
            let registry = Arc::clone(&registry);
            Box::new(move || assert!(render(&registry).contains("strata_replica_lag_records")))
        },
        {
            let repl = Arc::clone(&repl);
            Box::new(move || {
                assert!(repl.leader_hint().is_some());
                let _ = repl.serves_reads();
                assert!(!repl.is_primary());
            })
        },
    ];
    let count = jobs.len();
    for job in jobs {
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            for _ in 0..ROUNDS {
                job();
            }
            done_tx.send(()).unwrap();
        });
    }
    // A hang detector, not a performance bound: the rounds take well under
    // a second when nothing deadlocks.
    for _ in 0..count {
        if done.recv_timeout(Duration::from_secs(120)).is_err() {
            // Deadlocked threads would keep the runtime from shutting down.
            std::mem::forget(runtime);
            panic!("replication state calls deadlocked");
        }
    }
}
