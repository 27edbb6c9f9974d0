//! The final summary: a table for people, JSON for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::run::{PreloadReport, RunReport, micros};
use crate::stats::{OpKind, Percentiles};

/// The server's memory-tier hit ratio around the measured run, from `info`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HitRatio {
    /// `memory_hit_ratio` (cumulative since the node started) before the
    /// run.
    pub before: Option<f64>,
    /// The same after the run.
    pub after: Option<f64>,
    /// The ratio over the run alone, when `info` reports the raw
    /// `memory_hits` / `memory_misses` counters.
    pub during: Option<f64>,
}

impl HitRatio {
    /// `None` when `info` has none of the fields (or was not answered).
    pub fn from_info(
        before: Option<&[(String, String)]>,
        after: Option<&[(String, String)]>,
    ) -> Option<HitRatio> {
        let (before, after) = (before?, after?);
        let field = |pairs: &[(String, String)], name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let ratio = |pairs| field(pairs, "memory_hit_ratio").and_then(|v| v.parse::<f64>().ok());
        let counter = |pairs, name| field(pairs, name).and_then(|v: String| v.parse::<u64>().ok());
        let during = match (
            counter(before, "memory_hits"),
            counter(before, "memory_misses"),
            counter(after, "memory_hits"),
            counter(after, "memory_misses"),
        ) {
            (Some(h0), Some(m0), Some(h1), Some(m1)) => {
                let (hits, misses) = (h1.saturating_sub(h0), m1.saturating_sub(m0));
                (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64)
            }
            _ => None,
        };
        let out = HitRatio {
            before: ratio(before),
            after: ratio(after),
            during,
        };
        (out.before.is_some() || out.after.is_some() || out.during.is_some()).then_some(out)
    }
}

/// Everything the summary shows.
pub struct Summary<'a> {
    /// The run's settings, as JSON (also shown in the table's header).
    pub config: Json,
    /// One line describing the settings.
    pub headline: String,
    pub preload: Option<PreloadReport>,
    pub run: &'a RunReport,
    pub hit_ratio: Option<HitRatio>,
}

fn per_sec(n: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

impl Summary<'_> {
    pub fn mismatches(&self) -> u64 {
        self.run.totals.total(|c| c.mismatches)
    }

    pub fn errors(&self) -> u64 {
        self.run.totals.total(|c| c.errors)
    }

    pub fn to_json(&self) -> Json {
        let run = self.run;
        let totals = &run.totals;
        let mut out = json!({
            "config": self.config,
            "elapsed_secs": run.elapsed.as_secs_f64(),
            "interrupted": run.interrupted,
            "warmup_ops": run.warmup_ops,
            "ops": totals.total(|c| c.ok),
            "ops_per_sec": per_sec(totals.total(|c| c.ok), run.elapsed),
            "errors": self.errors(),
            "mismatches": self.mismatches(),
            "preload": self.preload.map(|p| json!({
                "keys": p.keys,
                "secs": p.elapsed.as_secs_f64(),
                "keys_per_sec": per_sec(p.keys, p.elapsed),
            })),
            "memory_hit_ratio": self.hit_ratio.map(|h| json!({
                "before": h.before,
                "after": h.after,
                "delta": h.before.zip(h.after).map(|(b, a)| a - b),
                "during_run": h.during,
            })),
            "error_samples": run.samples.errors,
            "mismatch_samples": run.samples.mismatches,
        });
        for kind in OpKind::ALL {
            let c = totals.counts(kind);
            let p = Percentiles::of(totals.histogram(kind));
            let mut op = json!({
                "ops": c.ok,
                "ops_per_sec": per_sec(c.ok, run.elapsed),
                "errors": c.errors,
                "latency_us": {
                    "min": p.min,
                    "mean": p.mean,
                    "p50": p.p50,
                    "p95": p.p95,
                    "p99": p.p99,
                    "p99_9": p.p999,
                    "max": p.max,
                },
            });
            if kind == OpKind::Get {
                op["hits"] = json!(c.hits);
                op["misses"] = json!(c.misses);
                op["verified"] = json!(c.verified);
                op["mismatches"] = json!(c.mismatches);
            }
            out[kind.name()] = op;
        }
        out
    }

    pub fn to_table(&self) -> String {
        let run = self.run;
        let totals = &run.totals;
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.headline);
        if let Some(p) = self.preload {
            let _ = writeln!(
                s,
                "preload: {} keys in {:.2} s ({:.0} keys/s)",
                p.keys,
                p.elapsed.as_secs_f64(),
                per_sec(p.keys, p.elapsed)
            );
        }
        let _ = writeln!(
            s,
            "measured: {:.2} s{}\n",
            run.elapsed.as_secs_f64(),
            if run.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "{:<5} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
            "op", "ops", "ops/s", "p50", "p95", "p99", "p99.9", "max", "errors"
        );
        for kind in OpKind::ALL {
            let c = totals.counts(kind);
            if c.ok == 0 && c.errors == 0 {
                continue;
            }
            let p = Percentiles::of(totals.histogram(kind));
            let _ = writeln!(
                s,
                "{:<5} {:>10} {:>11.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
                kind.name(),
                c.ok,
                per_sec(c.ok, run.elapsed),
                micros(p.p50),
                micros(p.p95),
                micros(p.p99),
                micros(p.p999),
                micros(p.max),
                c.errors
            );
        }
        let ok = totals.total(|c| c.ok);
        let _ = writeln!(
            s,
            "{:<5} {:>10} {:>11.1}{:>59}",
            "total",
            ok,
            per_sec(ok, run.elapsed),
            self.errors()
        );
        let get = totals.counts(OpKind::Get);
        if get.ok > 0 {
            let _ = writeln!(
                s,
                "\nget: {} hits, {} misses; {} answers verified, {} mismatches",
                get.hits, get.misses, get.verified, get.mismatches
            );
        }
        if let Some(h) = self.hit_ratio {
            let show = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
            let _ = write!(
                s,
                "server memory-tier hit ratio: {} before, {} after (cumulative)",
                show(h.before),
                show(h.after)
            );
            if let Some(d) = h.during {
                let _ = write!(s, "; {d:.4} during the run");
            }
            s.push('\n');
        }
        for (title, list) in [
            ("errors", &run.samples.errors),
            ("mismatches", &run.samples.mismatches),
        ] {
            if !list.is_empty() {
                let _ = writeln!(s, "\nfirst {title}:");
                for line in list {
                    let _ = writeln!(s, "  {line}");
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn hit_ratio_from_info() {
        let before = pairs(&[("memory_hit_ratio", "n/a")]);
        let after = pairs(&[("memory_hit_ratio", "0.9500")]);
        let h = HitRatio::from_info(Some(&before), Some(&after)).unwrap();
        assert_eq!((h.before, h.after, h.during), (None, Some(0.95), None));
        let before = pairs(&[("memory_hits", "10"), ("memory_misses", "10")]);
        let after = pairs(&[("memory_hits", "100"), ("memory_misses", "20")]);
        let h = HitRatio::from_info(Some(&before), Some(&after)).unwrap();
        assert_eq!(h.during, Some(0.9));
        // Counters on one side only give no ratio over the run.
        assert_eq!(HitRatio::from_info(Some(&pairs(&[])), Some(&after)), None);
        assert_eq!(
            HitRatio::from_info(Some(&pairs(&[])), Some(&pairs(&[]))),
            None
        );
        assert_eq!(HitRatio::from_info(None, Some(&after)), None);
    }
}
