//! The shipped alerting rules and dashboard name only metrics a node
//! really exports (checked against a running node's /metrics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::cluster::{Member, gen_certs};
use common::node::TestNode;

/// Every `strata_*` metric name in a text, with histogram suffixes removed.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("strata_") {
        let start = i + pos;
        let preceded_by_ident =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| start + n);
        if !preceded_by_ident {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_string());
        }
        i = end;
    }
    names
}

/// The metric families a node's /metrics declares.
fn exported(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_and_dashboard_use_exported_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(&dir.path().join("single"), &[]);
    let mut exported = exported(&node.metrics());
    // A cluster member leading its metadata group exports the cluster
    // families too.
    let certs = dir.path().join("certs");
    gen_certs(&certs, &["m1"]);
    let member = Member::start_in_cluster(dir.path(), &certs, "m1");
    member.ca_client(&certs).await.cluster_init().await.unwrap();
    exported.extend(self::exported(&member.node.metrics()));
    assert!(
        exported.contains("strata_cluster_heartbeat_age_seconds"),
        "{exported:?}"
    );
    assert!(
        exported.contains("strata_request_duration_seconds"),
        "{exported:?}"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    for file in [
        "ops/prometheus/strata-alerts.yml",
        "ops/grafana/strata-dashboard.json",
    ] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let named = metric_names(&text);
        assert!(named.len() >= 8, "{file} names too few metrics: {named:?}");
        let missing: Vec<_> = named.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics the node does not export: {missing:?}"
        );
    }
    // The thresholds the rules promise are there, compared as numbers (as
    // text, "> 1" would be found inside "> 100").
    let rules =
        std::fs::read_to_string(format!("{root}/ops/prometheus/strata-alerts.yml")).unwrap();
    let found = comparisons(&rules);
    for (op, value) in [
        (">", 0.05),
        (">", 0.1),
        (">", 0.2),
        ("<", 0.8),
        (">", 0.8),
        (">", 1000.0),
        (">", 1.0),
        (">", 100.0),
    ] {
        assert!(
            found.iter().any(|(o, v)| *o == op && *v == value),
            "no rule compares {op} {value}: {found:?}"
        );
    }
}

/// Every `<op> <number>` comparison in the rules' expressions.
fn comparisons(rules: &str) -> Vec<(&str, f64)> {
    let tokens: Vec<&str> = rules.split_whitespace().collect();
    tokens
        .windows(2)
        .filter(|w| matches!(w[0], ">" | "<" | ">=" | "<=" | "==" | "!="))
        .filter_map(|w| Some((w[0], w[1].parse::<f64>().ok()?)))
        .collect()
}
