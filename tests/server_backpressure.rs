//! Many connections sending large values past the node's request byte
//! budget: the node sheds what does not fit with `Overloaded` (before
//! reading it), keeps what it holds within the budget, keeps serving a
//! well-behaved client, and loses nothing it acknowledged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use common::cluster::metric;
use common::node::TestNode;
use common::quic::{connect, decode, rss_bytes, send_raw};
use strata::net::client::{Client, ClientConfig, ServerTrust};
use strata::net::tls::parse_fingerprint;
use strata::proto::{Condition, ErrorCode, Request, Response, encode_request};

const BUDGET: u64 = 24 << 20;
const CONNECTIONS: usize = 4;
const STREAMS: usize = 16;
const VALUE: usize = 2 << 20;
/// The server's per-connection QUIC receive window (`TransportLimits`).
const CONNECTION_WINDOW: u64 = 32 << 20;

fn value_for(key: &str) -> Bytes {
    let seed = key
        .bytes()
        .fold(0u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    Bytes::from(
        (0..VALUE)
            .map(|i| seed.wrapping_add(i as u8))
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_budget_is_shed_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, format!("[net]\nrequest_bytes_budget = {BUDGET}\n")).unwrap();
    let node = TestNode::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap(), "--fsync", "never"],
    );
    let rss_before = rss_bytes(node.pid());
    let peak = Arc::new(AtomicU64::new(rss_before));
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, flooding, pid) = (peak.clone(), flooding.clone(), node.pid());
        std::thread::spawn(move || {
            while flooding.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                std::thread::yield_now();
            }
        })
    };

    // The flood: every connection opens all its streams at once.
    let mut flood = Vec::new();
    for c in 0..CONNECTIONS {
        let conn = connect(node.addr, &node.fingerprint).await;
        for s in 0..STREAMS {
            let conn = conn.clone();
            flood.push(tokio::spawn(async move {
                let key = format!("flood-{c}-{s}");
                let set = Request::Set {
                    key: Bytes::from(key.clone()),
                    value: value_for(&key),
                    ttl_ms: None,
                    condition: Condition::Always,
                    ack: None,
                };
                (
                    key,
                    decode(&send_raw(&conn, &encode_request(&set).unwrap()).await),
                )
            }));
        }
    }
    // Meanwhile a well-behaved client is served (small requests have their
    // own share of the budget, and the library backs off on Overloaded).
    let pin = parse_fingerprint(&node.fingerprint).unwrap();
    let good = Client::connect(ClientConfig::new(node.addr, ServerTrust::Pin(pin)))
        .await
        .unwrap();
    for i in 0..20 {
        let key = format!("good-{i}");
        good.set(key.clone(), "v").await.unwrap();
        assert_eq!(&good.get(key).await.unwrap().unwrap().value[..], b"v");
    }

    let (mut written, mut shed) = (Vec::new(), 0);
    for task in flood {
        let (key, reply) = task.await.unwrap();
        match reply {
            Response::Written(_) => written.push(key),
            Response::Error(e) if e.code == ErrorCode::Overloaded => {
                assert!(e.retry_after_ms.is_some(), "{e:?}");
                shed += 1;
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    flooding.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(
        shed > 0,
        "nothing was shed: the flood did not pass the budget"
    );
    assert!(!written.is_empty(), "nothing got through");

    // The budget held: never more request bytes at once than it allows, and
    // the memory grew by no more than the limits explain (QUIC receive
    // windows, the budget with a decode copy of each frame, and slack).
    let metrics = node.metrics();
    let high = metric(&metrics, "strata_request_bytes_high_water").unwrap();
    assert!(high > 0.0 && high <= BUDGET as f64, "{high}");
    assert_eq!(
        metric(&metrics, "strata_requests_shed_total").unwrap(),
        shed as f64
    );
    let bound = CONNECTIONS as u64 * CONNECTION_WINDOW + 3 * BUDGET + (128 << 20);
    let grew = peak.load(Ordering::Relaxed).saturating_sub(rss_before);
    assert!(grew < bound, "RSS grew by {grew} bytes, over {bound}");

    // Nothing acknowledged is lost.
    for key in &written {
        let got = good.get(key.clone()).await.unwrap().expect(key);
        assert!(got.value == value_for(key), "{key} came back different");
    }
}
