//! redis-py, a mainstream client library we did not write, against the
//! RESP gateway: `tools/redis-py/check.py` drives a standalone node with
//! `redis.Redis` (RESP3 and RESP2) and a cluster of two shards with
//! `redis.cluster.RedisCluster`, which discovers the shards from one
//! gateway's `CLUSTER SLOTS` and routes every key by itself.
//!
//! The interpreter is `$STRATA_PYTHON` (default `python3`) and must have
//! redis-py installed: `tools/test.sh` makes a virtualenv with the version
//! pinned in `tools/redis-py/requirements.txt` and points this at it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use common::cluster::{Member, create_cluster, eventually, gen_certs};
use common::node::TestNode;
use common::resp::Conn;

fn python() -> String {
    std::env::var("STRATA_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs check.py `mode addr` and returns what it printed; fails the test
/// with the script's traceback if any of its checks failed.
fn check(mode: &str, addr: SocketAddr) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/redis-py/check.py");
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import redis"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        probe.status.success(),
        "redis-py is not importable by {python} (tools/test.sh installs it; or \
         `pip install -r tools/redis-py/requirements.txt` and set STRATA_PYTHON): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let out = Command::new(&python)
        .arg(&script)
        .args([mode, &addr.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "check.py {mode} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn redis_py_uses_a_standalone_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--resp-listen", "127.0.0.1:0"]);
    let out = check("standalone", node.resp_addr.unwrap());
    assert!(out.contains("standalone, RESP3: ok"), "{out}");
    assert!(out.contains("standalone, RESP2: ok"), "{out}");
}

const NAMES: [&str; 4] = ["p1", "p2", "p3", "p4"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_routes_across_a_cluster() {
    let root = tempfile::tempdir().unwrap();
    let certs = root.path().join("certs");
    gen_certs(&certs, &NAMES);
    let settings = "heartbeat_ms = 200\n[resp]\nlisten = \"127.0.0.1:0\"";
    let members: Vec<Member> = NAMES
        .iter()
        .map(|n| Member::start_in_cluster_with(root.path(), &certs, n, Some(settings)))
        .collect();
    create_cluster(&members, &certs, 1);
    let first = members[0].node.resp_addr.unwrap();
    // A client learns gateways from the map: wait until all are in it.
    eventually("every gateway in the map", || async {
        let info = Conn::connect(first).await.cmd(&["CLUSTER", "INFO"]).await;
        info.text().contains("cluster_state:ok")
    })
    .await;
    let out = tokio::task::spawn_blocking(move || check("cluster", first))
        .await
        .unwrap();
    assert!(out.contains("cluster: ok (2 primaries, 4 nodes"), "{out}");
}
