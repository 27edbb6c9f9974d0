//! The drill's results: a table for the terminal and one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::scenario::{Stats, Status};

/// The p50 and max of `samples`, in ms.
fn p50_max(samples: &[Duration]) -> Option<(u128, u128)> {
    let mut ms: Vec<u128> = samples.iter().map(Duration::as_millis).collect();
    ms.sort_unstable();
    Some((*ms.get((ms.len().checked_sub(1)?) / 2)?, *ms.last()?))
}

fn status_text(status: &Status) -> &'static str {
    match status {
        Status::Passed => "passed",
        Status::Failed => "FAILED",
        Status::Skipped(_) => "skipped",
    }
}

/// The results table, with notes and violations under it.
pub fn table(all: &[Stats]) -> String {
    let mut out = String::new();
    let header = [
        "scenario",
        "status",
        "kills",
        "acked",
        "promised",
        "lost",
        "invented",
        "expired",
        "recovery p50/max",
        "WAL bytes replayed max",
        "async lost",
    ];
    let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for s in all {
        let skipped = matches!(s.status, Status::Skipped(_));
        let num = |n: u64| {
            if skipped {
                "-".to_string()
            } else {
                n.to_string()
            }
        };
        let recovery =
            p50_max(&s.recovery).map_or("-".to_string(), |(p50, max)| format!("{p50} / {max} ms"));
        let replayed = s
            .replayed
            .iter()
            .max()
            .map_or("-".to_string(), u64::to_string);
        let async_lost = if s.reports_async_loss && !skipped {
            s.totals.lost_unpromised.to_string()
        } else {
            "-".to_string()
        };
        rows.push(vec![
            s.name.to_string(),
            status_text(&s.status).to_string(),
            num(s.kills),
            num(s.totals.acked),
            num(s.totals.promised),
            num(s.totals.lost_promised),
            num(s.invented),
            num(s.expired),
            recovery,
            replayed,
            async_lost,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c < 2 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if i == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(out, "{}", rule.join("  "));
        }
    }
    for s in all {
        if s.reports_async_loss && !s.by_mode.is_empty() {
            let modes: Vec<String> = s
                .by_mode
                .iter()
                .map(|(mode, t)| match *mode {
                    "async" => format!("async: {} acked, {} lost", t.acked, t.lost_unpromised),
                    _ => {
                        let degraded = match t.lost_unpromised {
                            0 => String::new(),
                            n => format!(
                                " ({n} lost that their replies did not promise: degraded, or no replica acknowledged)"
                            ),
                        };
                        format!(
                            "{mode}: {} acked, {} lost{degraded}",
                            t.acked, t.lost_promised
                        )
                    }
                })
                .collect();
            let window = p50_max(&s.loss_windows).map_or(String::new(), |(p50, max)| {
                format!("; async loss window p50 {p50} ms, max {max} ms")
            });
            let _ = writeln!(out, "{}: {}{window}", s.name, modes.join("; "));
        }
        if let Status::Skipped(reason) = &s.status {
            let _ = writeln!(out, "{}: skipped: {reason}", s.name);
        }
        for note in &s.notes {
            let _ = writeln!(out, "{}: note: {note}", s.name);
        }
        if s.violation_count > 0 {
            let _ = writeln!(
                out,
                "{}: {} violation(s){}:",
                s.name,
                s.violation_count,
                if s.violation_count as usize > s.violations.len() {
                    format!(", the first {}", s.violations.len())
                } else {
                    String::new()
                }
            );
            for v in &s.violations {
                let _ = writeln!(out, "  - {v}");
            }
        }
    }
    out
}

/// One scenario as JSON.
pub fn scenario_json(s: &Stats, replay: Option<String>) -> Value {
    let (reason, status) = match &s.status {
        Status::Skipped(reason) => (Some(reason.clone()), "skipped"),
        Status::Passed => (None, "passed"),
        Status::Failed => (None, "failed"),
    };
    let recovery = p50_max(&s.recovery).map(|(p50, max)| {
        json!({ "count": s.recovery.len(), "p50_ms": p50 as u64, "max_ms": max as u64 })
    });
    let by_mode: serde_json::Map<String, Value> = s
        .by_mode
        .iter()
        .map(|(mode, t)| {
            let v = json!({
                "acked": t.acked,
                "lost": t.lost_promised,
                "lost_unpromised": t.lost_unpromised,
            });
            (mode.to_string(), v)
        })
        .collect();
    let windows = p50_max(&s.loss_windows).map(|(p50, max)| {
        json!({ "count": s.loss_windows.len(), "p50_ms": p50 as u64, "max_ms": max as u64 })
    });
    json!({
        "name": s.name,
        "status": status,
        "reason": reason,
        "seed": s.seed,
        "kills": s.kills,
        "crash_point_aborts": s.crash_point_aborts,
        "acked": s.totals.acked,
        "promised": s.totals.promised,
        "degraded": s.totals.degraded,
        "unknown_outcome": s.totals.unknown,
        "lost": s.totals.lost_promised,
        "async_lost": if s.reports_async_loss { Some(s.totals.lost_unpromised) } else { None },
        "by_mode": by_mode,
        "async_loss_window": windows,
        "invented": s.invented,
        "expired_returned": s.expired,
        "recovery": recovery,
        "wal_bytes_replayed": {
            "restarts": s.replayed.len(),
            "total": s.replayed.iter().sum::<u64>(),
            "max": s.replayed.iter().max().copied().unwrap_or(0),
        },
        "elapsed_secs": (s.elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "notes": s.notes,
        "violation_count": s.violation_count,
        "violations": s.violations,
        "replay": replay,
    })
}
