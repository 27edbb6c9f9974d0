//! I1 + I2 through a real crash: a child process writes and reports every
//! acknowledged write, is killed with SIGKILL at a random moment, and the
//! reopened store must hold every acknowledged write and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::{b, config};
use rand::{Rng, SeedableRng};
use strata::store::Store;
use strata::types::Condition;
use strata::wal::FsyncPolicy;

const CHILD_DIR: &str = "STRATA_CRASH_CHILD_DIR";
const CHILD_FSYNC: &str = "STRATA_CRASH_CHILD_FSYNC";
const WRITERS: usize = 8;

/// Each key's value is derived from the key and long enough that a torn
/// write could not pass for a whole one.
fn value_for(key: &str) -> Bytes {
    let unit = format!("{key};");
    b(&unit.repeat(1 + 2000 / unit.len()))
}

/// The child: writes `w{writer}-{n}` keys forever from several tasks,
/// printing `ACK <key>` after each acknowledged write.
#[test]
#[ignore = "child process of the crash test; run by crash_at_random_moments"]
fn crash_child() {
    let dir = std::env::var(CHILD_DIR).expect("child needs its directory");
    let fsync: FsyncPolicy = std::env::var(CHILD_FSYNC).unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let store = Store::open(config(dir.as_ref(), fsync)).unwrap();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("w{w}-{n}");
                    let value = value_for(&key);
                    store
                        .set(b(&key), value, None, Condition::Always)
                        .await
                        .unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

fn parse_key(key: &str) -> (usize, u64) {
    let (w, n) = key.trim_start_matches('w').split_once('-').unwrap();
    (w.parse().unwrap(), n.parse().unwrap())
}

async fn crash_once(fsync: &str, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let kill_after_acks = rng.random_range(50..1500);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .env(CHILD_FSYNC, fsync)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked: Vec<String> = Vec::new();
    while acked.len() < kill_after_acks {
        let line = lines.next().expect("child died early").unwrap();
        if let Some(key) = line.strip_prefix("ACK ") {
            acked.push(key.to_string());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acks the child printed before it died are still in the pipe.
    for line in lines {
        if let Some(key) = line.unwrap().strip_prefix("ACK ") {
            acked.push(key.to_string());
        }
    }

    let store = Store::open(config(dir.path(), fsync.parse().unwrap())).unwrap();
    // I1: every acknowledged write is there, whole.
    let mut highest: HashMap<usize, u64> = HashMap::new();
    for key in &acked {
        let got = store.get(key.as_bytes()).await.unwrap();
        assert_eq!(
            got.map(|e| e.value),
            Some(value_for(key)),
            "seed {seed} fsync {fsync}: acknowledged {key} lost"
        );
        let (w, n) = parse_key(key);
        let h = highest.entry(w).or_default();
        *h = (*h).max(n);
    }
    // I2: nothing else: each writer had at most one write in flight.
    let mut cursor = None;
    loop {
        let page = store.scan(Bytes::new(), cursor, 1000).await.unwrap();
        for (key, entry) in &page.entries {
            let key = std::str::from_utf8(key).unwrap();
            let (w, n) = parse_key(key);
            let limit = highest.get(&w).map_or(0, |h| h + 1);
            assert!(n <= limit, "seed {seed}: {key} was never written");
            assert_eq!(entry.value, value_for(key), "seed {seed}: {key} torn");
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_random_moments() {
    let base: u64 = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed base {base} (set STRATA_TEST_SEED to replay)");
    for (i, fsync) in ["always", "interval:50", "never"].iter().enumerate() {
        for round in 0..2 {
            crash_once(fsync, base.wrapping_add((i * 10 + round) as u64)).await;
        }
    }
}
