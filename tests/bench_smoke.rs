//! The `strata-bench` binary against a real `strata-server`: a short
//! preloaded 50:50 run that checks every read, summarised as JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::node::TestNode;
use serde_json::Value as Json;

const BENCH: &str = env!("CARGO_BIN_EXE_strata-bench");

/// The bench stops on its own after warmup + duration; this is only the
/// bound on a hung run (preload included, debug builds).
const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn bench_runs_a_verified_mix_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &["--fsync", "never"]);
    let child = Command::new(BENCH)
        .args(["--addr", &node.addr.to_string(), "--pin", &node.fingerprint])
        .args(["--connections", "2", "--inflight", "4"])
        .args(["--keys", "2000", "--value-size", "64", "--preload"])
        .args(["--ratio", "50:50", "--distribution", "zipf:0.99"])
        .args(["--duration", "2", "--warmup", "0", "--verify-ratio", "1.0"])
        .args(["--seed", "7", "--json", "--quiet"])
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata-bench");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => out.expect("collect strata-bench output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("strata-bench still running after {RUN_LIMIT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "strata-bench failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let summary: Json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{stdout}"));

    assert!(summary["ops"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(summary["ops_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(summary["errors"], 0, "{summary:#}");
    assert_eq!(summary["mismatches"], 0, "{summary:#}");
    assert_eq!(summary["preload"]["keys"], 2000);
    assert_eq!(summary["config"]["ratio"], "50:50");
    assert_eq!(summary["config"]["seed"], 7);
    for kind in ["get", "set"] {
        let op = &summary[kind];
        assert!(op["ops"].as_u64().unwrap() > 0, "{kind}: {op:#}");
        assert_eq!(op["errors"], 0, "{kind}: {op:#}");
        let lat = &op["latency_us"];
        let (p50, p99, max) = (
            lat["p50"].as_u64().unwrap(),
            lat["p99"].as_u64().unwrap(),
            lat["max"].as_u64().unwrap(),
        );
        assert!(p50 > 0 && p50 <= p99 && p99 <= max, "{kind}: {lat:#}");
    }
    // Every key was preloaded and every read checked.
    let get = &summary["get"];
    assert_eq!(get["misses"], 0, "{get:#}");
    assert_eq!(get["verified"], get["ops"], "{get:#}");
}
