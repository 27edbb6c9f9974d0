//! strata-server allocates with jemalloc (Cargo.toml says why): the
//! resident memory per hot key the README reports depends on it.

#![cfg(all(target_os = "linux", target_env = "gnu"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// jemalloc reads `MALLOC_CONF`; `stats_print` makes it write its
/// statistics when the process exits. glibc's malloc ignores the variable.
#[test]
fn the_server_allocates_with_jemalloc_and_reads_malloc_conf() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-server"))
        .arg("--version")
        .env("MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("Begin jemalloc statistics"),
        "no jemalloc statistics in:\n{printed}"
    );
}
