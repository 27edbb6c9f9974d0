//! The client over a bad link: a fault-injecting UDP relay in front of a real
//! node drops, delays, jitters and reorders datagrams, and every read still
//! returns what was written; a partition turns a request into a timeout at
//! its deadline, and the link works again once it heals. A plain-UDP test
//! checks the relay itself: routing per client, pause, and seeded faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::node::TestNode;
use strata::harness::relay::{Faults, UdpRelay};
use strata::net::client::{Client, ClientConfig, ClientError, ServerTrust};
use strata::net::tls::parse_fingerprint;

/// Keys written and read back over the lossy link.
const KEYS: usize = 300;
/// Tasks sharing them (concurrent requests over the client's pool).
const TASKS: usize = 12;
/// The seed used unless `STRATA_TEST_SEED` names another.
const DEFAULT_SEED: u64 = 0x5eed_1055;
/// Request timeout of the client that meets the partition.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);
/// Bound on anything that should finish quickly even on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn seed() -> u64 {
    std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// A client config that reaches `node` through `relay`.
fn via(relay: &UdpRelay, node: &TestNode) -> ClientConfig {
    let pin = parse_fingerprint(&node.fingerprint).expect("node prints a fingerprint");
    ClientConfig::new(relay.local_addr(), ServerTrust::Pin(pin))
}

/// Prints the node's log when the test fails, so that a failure over the
/// link shows the server's side too.
struct LogOnFailure<'a>(&'a TestNode);

impl Drop for LogOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("node log:\n{}", self.0.log_lines().join("\n"));
        }
    }
}

/// A distinct value per key, from a few bytes to a few datagrams long (so
/// that a value's packets get reordered among themselves).
fn value_for(seed: u64, i: usize) -> Bytes {
    let mut value = format!("{seed}:{i}:").into_bytes();
    let len = (i * 37) % 4000;
    value.extend((0..len).map(|j| b'a' + ((i + j) % 26) as u8));
    Bytes::from(value)
}

#[tokio::test]
async fn lossy_link_loses_nothing_and_a_partition_times_out() {
    let seed = seed();
    eprintln!("relay seed {seed} (set STRATA_TEST_SEED to replay it)");
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let _log = LogOnFailure(&node);
    let relay = UdpRelay::start(node.addr, Faults::lossy(seed)).unwrap();
    let started = Instant::now();

    // Retries on (the default): a timed-out idempotent request is resent.
    let config = via(&relay, &node)
        .with_connections(2)
        .with_request_timeout(Duration::from_secs(5));
    let client = Client::connect(config)
        .await
        .expect("connect over the lossy link");
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in (task..KEYS).step_by(TASKS) {
                let key = format!("lossy:{i:04}");
                let value = value_for(seed, i);
                let written = client.set(key.clone(), value.clone()).await.unwrap();
                let entry = client.get(key).await.unwrap().expect("just written");
                assert_eq!(entry.value, value, "key {i}");
                assert_eq!(entry.version, written.version, "key {i}");
            }
        }));
    }
    let all = async {
        for task in tasks {
            task.await.unwrap();
        }
    };
    tokio::time::timeout(DEADLINE, all)
        .await
        .expect("the writers finish over the lossy link");
    // Everything again, after all the writes, page by page.
    let found: BTreeMap<Bytes, Bytes> = client
        .scan_all("lossy:")
        .await
        .unwrap()
        .into_iter()
        .map(|(key, entry)| (key, entry.value))
        .collect();
    let expected: BTreeMap<Bytes, Bytes> = (0..KEYS)
        .map(|i| (Bytes::from(format!("lossy:{i:04}")), value_for(seed, i)))
        .collect();
    let wrong: Vec<&Bytes> = (expected.iter())
        .filter(|(key, value)| found.get(*key) != Some(*value))
        .map(|(key, _)| key)
        .collect();
    assert!(
        wrong.is_empty() && found.len() == KEYS,
        "{} of {KEYS} keys differ from what was written (first {:?}); the scan found {} keys",
        wrong.len(),
        wrong.first(),
        found.len()
    );
    let lossy = relay.stats();
    eprintln!(
        "{KEYS} keys over the lossy link in {:?}: {lossy:?}",
        started.elapsed()
    );
    assert!(lossy.forwarded > 0, "{lossy:?}");
    assert!(lossy.dropped > 0, "the link dropped nothing: {lossy:?}");
    assert!(lossy.reordered > 0, "the link reordered nothing: {lossy:?}");

    // A partition, on a clean link so that only the partition can fail it.
    relay.set_faults(Faults::none()).unwrap();
    let probe_config = via(&relay, &node)
        .with_request_timeout(PROBE_TIMEOUT)
        .with_retries(0);
    let probe = Client::connect(probe_config).await.unwrap();
    probe.ping().await.unwrap();
    relay.pause();
    let before = relay.stats();
    let asked = Instant::now();
    let result = tokio::time::timeout(DEADLINE, probe.get("lossy:0000"))
        .await
        .expect("a partitioned request ends at its own timeout");
    let took = asked.elapsed();
    match result {
        Err(ClientError::Timeout { op, after }) => {
            assert_eq!(op, "get");
            assert_eq!(after, PROBE_TIMEOUT);
        }
        other => panic!("expected a timeout across the partition, got {other:?}"),
    }
    assert!(took >= PROBE_TIMEOUT, "timed out early: {took:?}");
    assert!(
        took < PROBE_TIMEOUT + Duration::from_secs(5),
        "timed out late: {took:?}"
    );
    let during = relay.stats();
    assert_eq!(
        during.forwarded, before.forwarded,
        "nothing crosses a partition"
    );
    assert!(during.dropped > before.dropped, "{during:?}");

    relay.resume();
    // The probe forgot its timed-out connection and connects again; the
    // first client's connections lived through the short partition.
    let entry = probe.get("lossy:0000").await.unwrap().expect("written");
    assert_eq!(entry.value, value_for(seed, 0));
    probe.set("healed", "yes").await.unwrap();
    let entry = client.get("healed").await.unwrap().expect("written");
    assert_eq!(entry.value, Bytes::from("yes"));
    eprintln!("whole test in {:?}", started.elapsed());
}

/// A UDP socket on loopback that gives up on a read after `DEADLINE`.
fn udp() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    socket
}

fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (len, from) = socket.recv_from(&mut buf).expect("a datagram in time");
    (buf[..len].to_vec(), from)
}

/// Polls `done` until it holds, failing after `DEADLINE`.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Which of 200 numbered datagrams from one client reach the target through
/// a relay dropping half of them with `seed`.
fn survivors(seed: u64) -> BTreeSet<u32> {
    const SENT: u32 = 200;
    let target = udp();
    let faults = Faults {
        drop: 0.5,
        seed,
        ..Faults::none()
    };
    let relay = UdpRelay::start(target.local_addr().unwrap(), faults).unwrap();
    let client = udp();
    for i in 0..SENT {
        client
            .send_to(&i.to_be_bytes(), relay.local_addr())
            .unwrap();
    }
    wait_until("every datagram's fate decided", || {
        let stats = relay.stats();
        stats.forwarded + stats.dropped >= u64::from(SENT)
    });
    let stats = relay.stats();
    assert_eq!(
        stats.forwarded + stats.dropped,
        u64::from(SENT),
        "{stats:?}"
    );
    (0..stats.forwarded)
        .map(|_| u32::from_be_bytes(recv(&target).0.try_into().unwrap()))
        .collect()
}

#[test]
fn relay_routes_per_client_pauses_and_replays_its_seed() {
    let target = udp();
    let relay = UdpRelay::start(target.local_addr().unwrap(), Faults::none()).unwrap();
    let (a, b) = (udp(), udp());
    a.send_to(b"from a", relay.local_addr()).unwrap();
    let (data, a_upstream) = recv(&target);
    assert_eq!(data, b"from a");
    b.send_to(b"from b", relay.local_addr()).unwrap();
    let (data, b_upstream) = recv(&target);
    assert_eq!(data, b"from b");
    assert_ne!(a_upstream, b_upstream, "one upstream socket per client");
    // Replies route back to the client each upstream socket stands for.
    target.send_to(b"to b", b_upstream).unwrap();
    target.send_to(b"to a", a_upstream).unwrap();
    assert_eq!(recv(&a), (b"to a".to_vec(), relay.local_addr()));
    assert_eq!(recv(&b), (b"to b".to_vec(), relay.local_addr()));

    relay.pause();
    a.send_to(b"lost", relay.local_addr()).unwrap();
    target.send_to(b"lost too", a_upstream).unwrap();
    wait_until("both dropped", || relay.stats().dropped == 2);
    relay.resume();
    a.send_to(b"after", relay.local_addr()).unwrap();
    assert_eq!(recv(&target), (b"after".to_vec(), a_upstream));
    target.send_to(b"back", a_upstream).unwrap();
    assert_eq!(recv(&a).0, b"back");
    // A datagram is counted just after it is sent, so maybe after it arrived.
    wait_until("six forwarded", || relay.stats().forwarded >= 6);
    let stats = relay.stats();
    assert_eq!(stats.dropped, 2, "{stats:?}");
    assert_eq!(stats.forwarded, 6, "{stats:?}");

    // The same seed drops the same datagrams; another seed others.
    let first = survivors(7);
    assert!((60..=140).contains(&first.len()), "{} of 200", first.len());
    assert_eq!(survivors(7), first);
    assert_ne!(survivors(8), first);
}
