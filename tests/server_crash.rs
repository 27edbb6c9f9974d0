//! I1 through the network path: kill -9 the server during a write load from
//! the Client, restart it, and every write the Client saw acknowledged is
//! readable with its value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::node::TestNode;
use rand::{Rng, SeedableRng};
use strata::net::client::{Client, ClientConfig};
use strata::net::tls::{ServerTrust, parse_fingerprint};

fn config(node: &TestNode) -> ClientConfig {
    let trust = ServerTrust::Pin(parse_fingerprint(&node.fingerprint).unwrap());
    ClientConfig::new(node.addr, trust)
        .with_connections(2)
        .with_retries(0)
        .with_request_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_of_the_server() {
    let seed: u64 = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    println!("seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let mut node = TestNode::start(dir.path(), &[]);
    let client = Client::connect(config(&node)).await.unwrap();

    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<(Bytes, Bytes)>();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (client, ack_tx) = (client.clone(), ack_tx.clone());
        writers.push(tokio::spawn(async move {
            for i in 0u64.. {
                let key = Bytes::from(format!("w{w}-{}", i % 50));
                let value = Bytes::from(format!("w{w}-v{i}"));
                // Stop at the first failure: the server is gone.
                if client.set(key.clone(), value.clone()).await.is_err() {
                    break;
                }
                if ack_tx.send((key, value)).is_err() {
                    break;
                }
            }
        }));
    }
    drop(ack_tx);
    // Kill at a random point in the load, measured in acknowledged writes.
    let kill_after = rng.random_range(200..2000);
    let mut acked: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    let mut count = 0;
    while count < kill_after {
        let Some((key, value)) = ack_rx.recv().await else {
            break;
        };
        acked.insert(key, value);
        count += 1;
    }
    node.kill();
    for w in writers {
        w.await.unwrap();
    }
    // Acks that arrived before the kill took effect count too.
    while let Ok((key, value)) = ack_rx.try_recv() {
        acked.insert(key, value);
    }
    assert!(
        count >= kill_after,
        "seed {seed}: the load stopped early at {count}"
    );

    node.restart();
    let client = Client::connect(config(&node)).await.unwrap();
    for (key, value) in &acked {
        // Each writer's later write to a key was acknowledged after its earlier
        // one, so the map holds the last acknowledged value. A write in flight
        // at the kill may have landed after it, so accept only that or newer.
        let got = client.get(key.clone()).await.unwrap().map(|e| e.value);
        let got = got.unwrap_or_else(|| panic!("seed {seed}: acknowledged {key:?} lost"));
        let n = |v: &Bytes| -> u64 {
            std::str::from_utf8(v)
                .unwrap()
                .rsplit('v')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(
            n(&got) >= n(value),
            "seed {seed}: {key:?} went back from {value:?} to {got:?}"
        );
    }
}
