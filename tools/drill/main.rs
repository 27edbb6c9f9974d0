//! `strata-drill`: crash-recovery drills against real strata nodes.
//!
//! Each scenario starts `strata-server` processes (found next to this
//! executable) in a temporary directory, drives a seeded write workload
//! with self-describing values through the client library, kills nodes
//! with SIGKILL (or lets a crash point abort them, or cuts the power of an
//! in-process store) at random moments, restarts or fails over, and checks
//! every key against the history of acknowledged writes.
//!
//! - [`workload`]: the writers, the history of every write and the checker
//!   (I1/I6: promised writes survive; I2: nothing invented; I4: expired keys
//!   stay expired).
//! - [`node`]: server processes (through `strata::harness`, hence the
//!   `test-util` feature), certificates, digests.
//! - [`scenario`]: the list, the shared context and the single-node drills.
//! - [`cluster`]: replica kills, failovers, a crash mid full sync.
//! - [`sharded`]: a sharded cluster's automatic failover (a primary
//!   SIGKILLed or cut off), the metadata leader killed mid failover, a
//!   node killed mid migration.
//! - [`power`]: power loss on a simulated WAL file layer.
//! - [`report`]: the table and the JSON summary.

mod cluster;
mod node;
mod power;
mod report;
mod scenario;
mod sharded;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use crate::node::{Binaries, Node, Scratch};
use crate::scenario::{Ctx, NEEDS_CRASH_POINTS, SCENARIOS, Settings, Stats, Status};

/// Exit status when a drill found a violation or could not run.
const EXIT_FAILED: u8 = 1;
/// Exit status after Ctrl-C or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;

/// Crash-recovery drills: real strata nodes are killed at random moments
/// under a checked write load, restarted or failed over, and every key is
/// read back.
///
/// Each round runs the load for --duration seconds, then kills at a random
/// moment within the next --duration seconds. After every recovery each key
/// must hold the last write whose acknowledgement promised durability (or a
/// later write), no value that was never written, and no expired value.
///
/// strata-server and strata-admin are taken from this executable's
/// directory (or --bin-dir); build them with --all-features for the crash
/// points (`cargo build --all-features --bins`).
///
/// Exit status: 0 when every scenario passed or was skipped; 1 on any
/// violation or failure (the seed and a command replaying the failing
/// scenarios are printed); 2 on a wrong command line; 130 when interrupted.
#[derive(Debug, Parser)]
#[command(
    name = "strata-drill",
    version,
    about,
    long_about,
    verbatim_doc_comment
)]
struct Args {
    /// Scenario to run (repeatable), or `all`. Default: all. See --list.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Print the scenarios and what each one proves, then exit.
    #[arg(long)]
    list: bool,
    /// Kill/restart cycles per scenario.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds of load per round before the kill window (as long again).
    #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = parse_secs)]
    duration: f64,
    /// Concurrent writers, each with its own keys.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    writers: u16,
    /// Seed of every random choice (default: random; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the results as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Keep the temporary directories (node data and `<node>.log` files) and print where.
    #[arg(long)]
    keep_dirs: bool,
    /// Directory holding strata-server and strata-admin. Default: this executable's.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn parse_secs(text: &str) -> Result<f64, String> {
    let secs: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err("must be within 0.1..3600 seconds".into());
    }
    Ok(secs)
}

/// The scenarios named on the command line, in run order.
fn selected(names: &[String]) -> Result<Vec<&'static str>, String> {
    let all: Vec<&'static str> = SCENARIOS.iter().map(|(n, _)| *n).collect();
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(all);
    }
    for name in names {
        if !all.contains(&name.as_str()) {
            return Err(format!(
                "unknown scenario {name:?}; known: all, {}",
                all.join(", ")
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|n| names.iter().any(|m| m == n))
        .collect())
}

/// Whether the server arms crash points: a node started with one at
/// probability 0 logs "crash point armed" only if it was built with them.
async fn probe_crash_points(bins: &Binaries, root: &std::path::Path) -> bool {
    let dir = root.join("probe");
    let mut node = Node::new("probe", dir.clone(), bins, Vec::new(), None);
    let armed = node.start(&[], Some("wal_before_write@0")).await.is_ok() && node.crash_armed();
    node.kill();
    let _ = std::fs::remove_dir_all(dir);
    armed
}

fn replay_command(args: &Args, seed: u64, names: &[&str]) -> String {
    let exe = std::env::args()
        .next()
        .unwrap_or_else(|| "strata-drill".into());
    let scenarios: String = names.iter().map(|n| format!(" --scenario {n}")).collect();
    format!(
        "{exe}{scenarios} --rounds {} --duration {} --writers {} --seed {seed}",
        args.rounds, args.duration, args.writers
    )
}

async fn drill(args: Args) -> anyhow::Result<ExitCode> {
    let names = match selected(&args.scenarios) {
        Ok(names) => names,
        Err(e) => {
            eprintln!("strata-drill: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let verbose = !args.quiet;
    eprintln!(
        "strata-drill: seed {seed}; {} scenario(s), {} round(s) of {} s",
        names.len(),
        args.rounds,
        args.duration
    );
    let bins = Binaries::locate(args.bin_dir.as_deref())?;
    let root = Scratch::create(&seed.to_string(), args.keep_dirs)?;
    if args.keep_dirs {
        eprintln!("strata-drill: directories kept in {}", root.path.display());
    }
    let needs_probe = names
        .iter()
        .any(|n| NEEDS_CRASH_POINTS.contains(n) || *n == "checkpoint");
    let crash_points = needs_probe && probe_crash_points(&bins, &root.path).await;
    if needs_probe && !crash_points {
        eprintln!(
            "strata-drill: {} has no crash points (build it with --all-features); the scenarios that need them are skipped",
            bins.server.display()
        );
    }

    let settings = Settings {
        rounds: args.rounds,
        duration: Duration::from_secs_f64(args.duration),
        writers: usize::from(args.writers),
        bins: bins.clone(),
        crash_points,
        verbose,
    };
    let mut results = Vec::new();
    for name in &names {
        let mut stats = Stats::new(name, scenario::scenario_seed(seed, name));
        if NEEDS_CRASH_POINTS.contains(name) && !crash_points {
            stats.status = Status::Skipped(
                "strata-server has no crash points (built without the failpoints feature)".into(),
            );
            results.push(stats);
            continue;
        }
        if verbose {
            eprintln!("strata-drill: {name} (seed {})", stats.seed);
        }
        let dir = Scratch {
            path: root.path.join(name),
            keep: args.keep_dirs,
        };
        std::fs::create_dir_all(&dir.path)?;
        let mut ctx = Ctx::new(stats, &settings, dir.path.clone());
        let started = Instant::now();
        if let Err(e) = scenario::run(name, &mut ctx).await {
            ctx.violation(format!("the drill could not go on: {e:#}"));
        }
        let history = ctx.history.clone();
        let mut stats = ctx.stats;
        stats.totals = workload::lock(&history).totals();
        stats.by_mode = workload::lock(&history).by_mode();
        stats.elapsed = started.elapsed();
        if stats.violation_count > 0 {
            stats.status = Status::Failed;
        } else if stats.kills == 0 {
            stats.status = Status::Failed;
            stats.violation_count += 1;
            stats
                .violations
                .push("no node was killed: the drill proved nothing".into());
        }
        if verbose {
            eprintln!(
                "strata-drill: {name} {} in {:.1} s",
                if stats.status == Status::Passed {
                    "passed"
                } else {
                    "FAILED"
                },
                stats.elapsed.as_secs_f64()
            );
        }
        results.push(stats);
        drop(dir);
    }

    let failed: Vec<&str> = results
        .iter()
        .filter(|s| s.status == Status::Failed)
        .map(|s| s.name)
        .collect();
    if args.json {
        let scenarios: Vec<_> = results
            .iter()
            .map(|s| {
                let replay =
                    (s.status == Status::Failed).then(|| replay_command(&args, seed, &[s.name]));
                report::scenario_json(s, replay)
            })
            .collect();
        let summary = json!({
            "seed": seed,
            "rounds": args.rounds,
            "duration_secs": args.duration,
            "writers": args.writers,
            "ok": failed.is_empty(),
            "scenarios": scenarios,
        });
        println!("{summary}");
    } else {
        print!("{}", report::table(&results));
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "strata-drill: FAILED: {} (seed {seed}); replay with:\n  {}",
            failed.join(", "),
            replay_command(&args, seed, &failed)
        );
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for (name, what) in SCENARIOS {
            println!("{name:<20} {what}");
        }
        return ExitCode::SUCCESS;
    }
    // On a signal the drill future is dropped: every node's guard kills its
    // process and the scratch directories remove themselves.
    let outcome = tokio::select! {
        result = drill(args) => Some(result),
        () = interrupted() => None,
    };
    match outcome {
        Some(Ok(code)) => code,
        Some(Err(e)) => {
            eprintln!("strata-drill: {e:#}");
            ExitCode::from(EXIT_FAILED)
        }
        None => {
            eprintln!("strata-drill: interrupted; nodes killed, directories removed");
            ExitCode::from(EXIT_INTERRUPTED)
        }
    }
}
