//! The short crash drill: `strata-drill --scenario all --rounds 1` against
//! the built binaries. Every scenario must pass: nodes were killed, and no
//! promised write was lost, no value invented, no expired value returned.
//! (The suite builds with every feature, so no scenario has a reason to be
//! skipped; a skipped one fails the test.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Far above the drill's own bounds; a hung drill fails the test instead
/// of hanging it.
const DRILL_TIMEOUT: Duration = Duration::from_secs(600);

fn list_scenarios() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-drill"))
        .arg("--list")
        .output()
        .expect("run strata-drill --list");
    assert!(out.status.success(), "--list failed: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn every_scenario_passes_a_short_drill() {
    let scenarios = list_scenarios();
    assert!(scenarios.len() >= 10, "scenarios: {scenarios:?}");

    let mut args = vec![
        "--scenario",
        "all",
        "--rounds",
        "1",
        "--duration",
        "1",
        "--json",
    ];
    let seed = std::env::var("STRATA_TEST_SEED").ok();
    if let Some(seed) = &seed {
        args.extend(["--seed", seed]);
    }
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata-drill"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata-drill");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = pipe.read_to_string(&mut out);
            out
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DRILL_TIMEOUT {
            // SIGTERM: the drill kills its nodes and removes its directories.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            panic!("strata-drill ran for more than {DRILL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, log) = (stdout.join().unwrap(), stderr.join().unwrap());
    // The progress lines: shown with --nocapture, and with any failure.
    eprintln!("{log}");
    eprintln!("drill took {:.1} s", started.elapsed().as_secs_f64());
    let summary: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("drill output is not JSON ({e}): {out}\n{log}"));
    assert!(
        status.success(),
        "strata-drill failed ({status}); summary: {summary:#}"
    );
    assert_eq!(summary["ok"], Value::Bool(true), "{summary:#}");

    let results = summary["scenarios"].as_array().expect("scenarios array");
    for name in &scenarios {
        let s = results
            .iter()
            .find(|s| s["name"] == name.as_str())
            .unwrap_or_else(|| panic!("scenario {name} missing from {summary:#}"));
        match s["status"].as_str() {
            Some("passed") => {
                assert!(s["kills"].as_u64().unwrap() > 0, "{name}: no kill: {s:#}");
                assert!(
                    s["acked"].as_u64().unwrap() > 0,
                    "{name}: nothing acked: {s:#}"
                );
                assert_eq!(s["lost"], 0, "{name}: promised writes lost: {s:#}");
                assert_eq!(s["invented"], 0, "{name}: {s:#}");
                assert_eq!(s["expired_returned"], 0, "{name}: {s:#}");
                assert!(s["recovery"]["count"].as_u64().unwrap() > 0, "{s:#}");
            }
            other => panic!("{name}: status {other:?}: {s:#}"),
        }
    }
}
