//! `strata-admin gen-certs` writes a CA and node certificates that complete
//! a mutual-TLS QUIC handshake between two nodes, reuses the CA when nodes
//! are added, and never overwrites a node's files without `--force`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use strata::net::TransportLimits;
use strata::net::tls::ClusterTls;

const BOUND: Duration = Duration::from_secs(10);

fn gen_certs(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata-admin"))
        .arg("gen-certs")
        .arg("--out")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn files(dir: &Path, node: &str) -> ClusterTls {
    ClusterTls {
        ca: dir.join("ca.crt"),
        cert: dir.join(format!("{node}.crt")),
        key: dir.join(format!("{node}.key")),
    }
}

#[cfg(unix)]
fn assert_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
}

#[cfg(not(unix))]
fn assert_private(_: &Path) {}

/// Serves one link as `server` and connects as `client` to "localhost";
/// a byte goes over a bi stream and comes back incremented.
async fn handshake(server: &ClusterTls, client: &ClusterTls) {
    let transport = TransportLimits::default().transport_config();
    let server_config = server
        .load()
        .unwrap()
        .server_config(transport.clone())
        .unwrap();
    let client_config = client.load().unwrap().client_config(transport).unwrap();
    let loopback = "127.0.0.1:0".parse().unwrap();
    let server_endpoint = strata::net::endpoint(loopback, Some(server_config)).unwrap();
    let addr = server_endpoint.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let conn = server_endpoint.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        let mut byte = [0u8; 1];
        recv.read_exact(&mut byte).await.unwrap();
        send.write_all(&[byte[0] + 1]).await.unwrap();
        send.finish().unwrap();
        conn.closed().await;
    });
    let client_endpoint = strata::net::endpoint(loopback, None).unwrap();
    let exchange = async {
        let conn = client_endpoint
            .connect_with(client_config, addr, "localhost")
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[41]).await.unwrap();
        send.finish().unwrap();
        let reply = recv.read_to_end(16).await.unwrap();
        conn.close(0u32.into(), b"done");
        reply
    };
    let reply = tokio::time::timeout(BOUND, exchange)
        .await
        .expect("link in time");
    assert_eq!(reply, vec![42]);
    tokio::time::timeout(BOUND, accept)
        .await
        .expect("server done in time")
        .unwrap();
}

#[tokio::test]
async fn gen_certs_makes_a_working_cluster_and_adds_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    // Created by the tool.
    let dir = tmp.path().join("certs");

    let out = gen_certs(&dir, &["--node", "n1", "--node", "n2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in ["ca.crt", "ca.key", "n1.crt", "n1.key", "n2.crt", "n2.key"] {
        assert!(dir.join(name).is_file(), "{name} missing");
    }
    for key in ["ca.key", "n1.key", "n2.key"] {
        assert_private(&dir.join(key));
    }
    let n1_cert = dir.join("n1.crt");
    assert!(
        stdout.contains(&format!("--repl-cert {}", n1_cert.display())),
        "{stdout}"
    );

    handshake(&files(&dir, "n1"), &files(&dir, "n2")).await;

    // Adding a node reuses the CA.
    let ca_before = std::fs::read(dir.join("ca.crt")).unwrap();
    let out = gen_certs(&dir, &["--node", "n3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_before);
    assert_private(&dir.join("n3.key"));
    files(&dir, "n3").load().unwrap();
    handshake(&files(&dir, "n3"), &files(&dir, "n1")).await;

    // An existing node's files are not overwritten without --force.
    let n1_before = std::fs::read(&n1_cert).unwrap();
    let out = gen_certs(&dir, &["--node", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&n1_cert.display().to_string()) && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(std::fs::read(&n1_cert).unwrap(), n1_before);
}

#[test]
fn gen_certs_force_replaces_the_ca_and_names_stale_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = gen_certs(dir, &["--node", "n1", "--node", "n2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ca_before = std::fs::read(dir.join("ca.crt")).unwrap();

    let out = gen_certs(
        dir,
        &[
            "--node", "n1", "--force", "--san", "10.0.0.7", "--days", "30",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_ne!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_before);
    files(dir, "n1").load().unwrap();
    assert!(
        text(&out.stdout).contains("10.0.0.7"),
        "{}",
        text(&out.stdout)
    );
    // n2 was signed by the replaced CA.
    let stderr = text(&out.stderr);
    assert!(stderr.contains("n2.crt"), "{stderr}");
    assert!(files(dir, "n2").load().is_err());
}

#[test]
fn gen_certs_refuses_bad_names_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, expect) in [
        (&["--node", "ca"][..], "collide"),
        (&["--node", "../n1"][..], "node name"),
        (&["--node", "n1", "--san", "not a host"][..], "not a host"),
        (&["--node", "n1", "--node", "n1"][..], "twice"),
    ] {
        let out = gen_certs(tmp.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Nothing was written by the refused runs.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
