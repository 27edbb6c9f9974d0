//! The `strata-cli` binary against real `strata-server` processes: human and
//! JSON output, values from stdin and files, exit statuses, trust options,
//! tokens, and the prompt fed through a pipe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::node::TestNode;
use serde_json::Value as Json;

const CLI: &str = env!("CARGO_BIN_EXE_strata-cli");

/// A `strata-cli` command with no ambient configuration: HOME and the
/// working directory are `home`, and no STRATA_* variables leak in.
fn bare(home: &Path) -> Command {
    let mut cmd = Command::new(CLI);
    cmd.current_dir(home)
        .env("HOME", home)
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ADDR")
        .stdin(Stdio::null());
    cmd
}

/// Runs `strata-cli --addr <node> --pin <fingerprint> <args>`.
fn cli(node: &TestNode, home: &Path, args: &[&str]) -> Output {
    cli_with_stdin(node, home, args, None)
}

fn cli_with_stdin(node: &TestNode, home: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = bare(home);
    cmd.args(["--addr", &node.addr.to_string(), "--pin", &node.fingerprint])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn strata-cli");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).expect("write stdin");
        // Dropping the pipe closes it: the CLI sees end of input.
    }
    child.wait_with_output().expect("wait for strata-cli")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit status and returns stdout.
#[track_caller]
fn expect_status(out: &Output, code: i32) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

#[track_caller]
fn ok(out: &Output) -> String {
    expect_status(out, 0)
}

#[track_caller]
fn json(out: &Output) -> Json {
    let text = ok(out);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

#[test]
fn human_output_of_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let run = |args: &[&str]| cli(&node, home.path(), args);

    assert_eq!(ok(&run(&["ping"])).trim(), "PONG");

    let set = ok(&run(&["set", "greeting", "hello world"]));
    assert!(set.starts_with("OK version "), "{set}");
    assert!(set.contains("fsynced"), "durability shown: {set}");
    let get = ok(&run(&["get", "greeting"]));
    let mut lines = get.lines();
    assert_eq!(lines.next(), Some("hello world"));
    let meta = lines.next().unwrap();
    assert!(
        meta.contains("version") && meta.contains("no ttl"),
        "{meta}"
    );

    // A missing key is not an error.
    assert_eq!(ok(&run(&["get", "missing"])).trim(), "(nil)");

    // Non-UTF-8 values are shown escaped.
    let out = cli_with_stdin(
        &node,
        home.path(),
        &["set", "bin", "-"],
        Some(b"\x00\xffok"),
    );
    ok(&out);
    assert_eq!(
        ok(&run(&["get", "bin"])).lines().next(),
        Some(r#""\x00\xffok""#)
    );

    let mset = ok(&run(&["mset", "a", "1", "b", "2"]));
    assert!(mset.starts_with("OK 2 keys at version"), "{mset}");
    let mget = ok(&run(&["mget", "a", "missing", "b"]));
    let lines: Vec<&str> = mget.lines().collect();
    assert_eq!(lines.len(), 3, "{mget}");
    assert!(lines[0].starts_with("1) 1 "), "{mget}");
    assert_eq!(lines[1], "2) (nil)");
    assert!(lines[2].starts_with("3) 2 "), "{mget}");
    assert_eq!(ok(&run(&["exists", "a", "b", "missing"])).trim(), "2");

    assert!(ok(&run(&["incr", "n"])).starts_with("1 ("));
    assert!(ok(&run(&["incr", "n", "5"])).starts_with("6 ("));
    assert!(ok(&run(&["incr", "n", "-10"])).starts_with("-4 ("));

    assert!(ok(&run(&["ttl", "missing"])).starts_with("(nil)"));
    assert!(ok(&run(&["ttl", "a"])).starts_with("(no ttl)"));
    ok(&run(&["set", "t", "v", "--ttl-ms", "60000"]));
    let ttl = ok(&run(&["ttl", "t"]));
    let ms: u64 = ttl.trim().trim_end_matches(" ms").parse().expect(&ttl);
    assert!(ms > 0 && ms <= 60_000, "{ttl}");
    assert!(ok(&run(&["get", "t"])).contains("expires in"));
    assert!(ok(&run(&["persist", "t"])).starts_with("OK ttl removed"));
    assert!(ok(&run(&["ttl", "t"])).starts_with("(no ttl)"));
    assert!(ok(&run(&["expire", "t", "30000"])).starts_with("OK ttl set"));
    assert!(ok(&run(&["ttl", "t"])).ends_with(" ms\n"));
    assert_eq!(
        ok(&run(&["expire", "missing", "100"])).trim(),
        "(not found)"
    );
    // Deadlines, exactly as given.
    let at = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .unwrap()
        .as_millis()
        + 600_000;
    let at = at.to_string();
    ok(&run(&["set", "t", "v", "--expires-at-ms", &at]));
    assert_eq!(
        ok(&run(&["deadline", "t"])).trim(),
        format!("expires at {at} (Unix ms)")
    );
    assert!(ok(&run(&["expire-at", "t", "1"])).starts_with("OK deadline set"));
    assert!(ok(&run(&["deadline", "t"])).starts_with("(nil)"));
    assert!(ok(&run(&["deadline", "a"])).starts_with("(no ttl)"));
    let zero = run(&["expire-at", "a", "0"]);
    expect_status(&zero, 2);
    assert!(stderr(&zero).contains("at least 1"), "{}", stderr(&zero));

    assert!(ok(&run(&["del", "a"])).starts_with("deleted"));
    assert_eq!(ok(&run(&["del", "a"])).trim(), "(not found)");
    assert_eq!(ok(&run(&["get", "a"])).trim(), "(nil)");

    // One hash tag: one slot, where a scan goes bytewise.
    for i in 0..5 {
        ok(&run(&["set", &format!("{{p}}:{i}"), &format!("v{i}")]));
    }
    let scan = ok(&run(&["scan", "{p}:"]));
    let lines: Vec<&str> = scan.lines().collect();
    assert_eq!(lines.len(), 6, "{scan}");
    assert!(lines[0].starts_with("{p}:0 = v0  (version"), "{scan}");
    assert_eq!(lines[5], "(5 keys)");
    // One page, then its cursor.
    let page = ok(&run(&["scan", "{p}:", "--limit", "2"]));
    let last = page.lines().last().unwrap();
    assert!(last.contains("--cursor"), "{page}");
    let cursor = last
        .split("--cursor ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let next = ok(&run(&["scan", "{p}:", "--limit", "2", "--cursor", &cursor]));
    assert!(next.starts_with("{p}:2 = v2"), "{next}");
    let all = ok(&run(&["scan", "{p}:", "--limit", "2", "--all"]));
    assert_eq!(all.lines().last(), Some("(5 keys)"), "{all}");

    let info = ok(&run(&["info"]));
    assert!(info.lines().any(|l| l.starts_with("version ")), "{info}");
}

#[test]
fn json_output_parses() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let run = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        cli(&node, home.path(), &all)
    };

    assert_eq!(json(&run(&["ping"]))["reply"], "pong");
    let set = json(&run(&["set", "k", "v", "--ack", "async"]));
    assert_eq!(set["written"], true);
    let version = set["version"].as_u64().unwrap();
    assert_eq!(set["durability"]["local_synced"], true);
    assert_eq!(set["durability"]["ack"], "async");

    let get = json(&run(&["get", "k"]));
    assert_eq!(get["key"], "k");
    assert_eq!(get["value"], "v");
    assert_eq!(get["encoding"], "utf8");
    assert_eq!(get["version"].as_u64(), Some(version));
    assert_eq!(get["ttl_ms"], Json::Null);
    assert_eq!(json(&run(&["get", "nope"]))["value"], Json::Null);

    let mget = json(&run(&["mget", "k", "nope"]));
    let values = mget["values"].as_array().unwrap();
    assert_eq!(values.len(), 2);
    assert_eq!(values[0]["value"], "v");
    assert_eq!(values[1]["value"], Json::Null);
    assert_eq!(json(&run(&["exists", "k", "k", "nope"]))["count"], 2);

    assert_eq!(json(&run(&["incr", "n", "41"]))["value"], 41);
    assert_eq!(json(&run(&["incr", "n"]))["value"], 42);

    assert_eq!(json(&run(&["ttl", "k"]))["ttl"], "persistent");
    assert_eq!(json(&run(&["ttl", "nope"]))["ttl"], "missing");
    json(&run(&["expire", "k", "50000"]));
    let ttl = json(&run(&["ttl", "k"]));
    assert_eq!(ttl["ttl"], "expires");
    assert!(ttl["ttl_ms"].as_u64().unwrap() <= 50_000);
    json(&run(&["expire-at", "k", "4000000000000"]));
    let deadline = json(&run(&["deadline", "k"]));
    assert_eq!(deadline["expires_at_ms"], 4_000_000_000_000u64);
    assert_eq!(json(&run(&["deadline", "nope"]))["ttl"], "missing");

    let mset = json(&run(&["mset", "s:1", "a", "s:2", "b"]));
    assert_eq!(mset["keys"], 2);
    let scan = json(&run(&["scan", "s:"]));
    let entries = scan["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["key"], "s:1");
    assert_eq!(entries[1]["value"], "b");
    assert_eq!(entries[0]["version"], mset["version"]);
    assert_eq!(scan["next_cursor"], Json::Null);
    let page = json(&run(&["scan", "s:", "--limit", "1"]));
    assert!(page["next_cursor"].is_string(), "{page}");

    let info = json(&run(&["info"]));
    assert!(info["info"]["version"].is_string(), "{info}");

    let del = json(&run(&["del", "k"]));
    assert_eq!(del["deleted"], true);
    assert!(del["durability"].is_object());
    assert_eq!(json(&run(&["del", "k"]))["deleted"], false);

    // Errors are JSON too (on stdout), with the message on stderr.
    json(&run(&["set", "word", "abc"]));
    let out = run(&["incr", "word"]);
    let text = expect_status(&out, 1);
    let err: Json = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(err["error"]["code"], "not_an_integer");
    assert_eq!(err["error"]["kind"], "server");
    assert!(stderr(&out).contains("not_an_integer"));
}

#[test]
fn values_from_stdin_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);

    let binary: Vec<u8> = (0..=255u8).collect();
    let out = cli_with_stdin(
        &node,
        home.path(),
        &["set", "from-stdin", "-"],
        Some(&binary),
    );
    ok(&out);
    let get = json(&cli(&node, home.path(), &["--json", "get", "from-stdin"]));
    assert_eq!(get["encoding"], "hex");
    assert_eq!(get["value"], hex::encode(&binary));

    let file = home.path().join("value.txt");
    std::fs::write(&file, "line one\nline two\n").unwrap();
    ok(&cli(
        &node,
        home.path(),
        &["set", "from-file", "--file", file.to_str().unwrap()],
    ));
    let get = json(&cli(&node, home.path(), &["--json", "get", "from-file"]));
    assert_eq!(get["value"], "line one\nline two\n");

    // A file that does not exist is a usage error.
    let missing = home.path().join("missing.bin");
    let out = cli(
        &node,
        home.path(),
        &["set", "k", "--file", missing.to_str().unwrap()],
    );
    expect_status(&out, 2);
    // VALUE and --file together are a usage error.
    let out = cli(
        &node,
        home.path(),
        &["set", "k", "v", "--file", file.to_str().unwrap()],
    );
    expect_status(&out, 2);
}

#[test]
fn exit_statuses_for_errors() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);
    let run = |args: &[&str]| cli(&node, home.path(), args);

    let set = json(&run(&["--json", "set", "k", "v1"]));
    let version = set["version"].as_u64().unwrap();

    // A compare-and-set conflict exits 1 and says so.
    let stale = (version + 1000).to_string();
    let out = run(&["set", "k", "v2", "--if-version", &stale]);
    expect_status(&out, 1);
    assert!(
        stderr(&out).contains("version conflict"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("at version {version}")),
        "{}",
        stderr(&out)
    );
    let out = run(&["--json", "set", "k", "v2", "--if-version", &stale]);
    let text = expect_status(&out, 1);
    let body: Json = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(body["written"], false);
    assert_eq!(body["current_version"].as_u64(), Some(version));
    // The right version wins.
    ok(&run(&[
        "set",
        "k",
        "v2",
        "--if-version",
        &version.to_string(),
    ]));
    assert_eq!(ok(&run(&["get", "k"])).lines().next(), Some("v2"));

    // --nx on an existing key, --xx on a missing one.
    expect_status(&run(&["set", "k", "x", "--nx"]), 1);
    expect_status(&run(&["set", "absent", "x", "--xx"]), 1);
    ok(&run(&["set", "created", "x", "--nx"]));
    // A conditional delete on the wrong version.
    let out = run(&["del", "k", "--if-version", &stale]);
    expect_status(&out, 1);
    assert!(
        stderr(&out).contains("version conflict"),
        "{}",
        stderr(&out)
    );

    // Server errors exit 1 with the message on stderr.
    let out = run(&["incr", "k"]);
    expect_status(&out, 1);
    assert!(stderr(&out).contains("not_an_integer"), "{}", stderr(&out));

    // Usage errors exit 2.
    expect_status(&run(&["--bogus", "ping"]), 2);
    expect_status(&run(&["get"]), 2);
    expect_status(&run(&["frobnicate"]), 2);
    expect_status(&run(&["set", "k", "v", "--ack", "sometimes"]), 2);
    expect_status(&run(&["set", "k", "v", "--nx", "--xx"]), 2);
    expect_status(&run(&["mset", "a", "1", "b"]), 2);
    let help = ok(&run(&["--help"]));
    for word in [
        "--pin",
        "--ca",
        "--data-dir",
        "--json",
        "scan",
        "incr",
        "mget",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    assert!(ok(&run(&["set", "--help"])).contains("--if-version"));
}

#[test]
fn trust_options_and_tokens() {
    let root = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // The node's data dir is ./strata-data seen from `root`.
    let data_dir = root.path().join("strata-data");
    let node = TestNode::start(
        &data_dir,
        &[
            "--token",
            "read-only:ro-token-123",
            "--token",
            "read-write:rw-token-123",
        ],
    );
    let addr = node.addr.to_string();

    // No trust option and no ./strata-data: a usage error naming --pin.
    let out = bare(home.path())
        .args(["--addr", &addr, "ping"])
        .output()
        .unwrap();
    expect_status(&out, 2);
    assert!(stderr(&out).contains("--pin"), "{}", stderr(&out));

    // In the node's parent directory, ./strata-data/tls/server.crt is trusted.
    let out = bare(root.path())
        .args(["--addr", &addr, "--token", "rw-token-123", "ping"])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "PONG");
    // --data-dir names it from anywhere.
    let out = bare(home.path())
        .args(["--addr", &addr, "--data-dir", data_dir.to_str().unwrap()])
        .args(["--token", "rw-token-123", "ping"])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "PONG");
    // --ca with the same file.
    let cert = data_dir.join("tls/server.crt");
    let out = bare(home.path())
        .args(["--addr", &addr, "--ca", cert.to_str().unwrap()])
        .args(["--token", "rw-token-123", "ping"])
        .output()
        .unwrap();
    assert_eq!(ok(&out).trim(), "PONG");

    // A wrong pin fails the handshake.
    let mut wrong = node.fingerprint.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let out = bare(home.path())
        .args([
            "--addr",
            &addr,
            "--pin",
            std::str::from_utf8(&wrong).unwrap(),
            "ping",
        ])
        .output()
        .unwrap();
    expect_status(&out, 1);
    assert!(stderr(&out).contains("tls"), "{}", stderr(&out));

    // Tokens: none, read-only, read-write (flag and environment).
    let out = cli(&node, home.path(), &["get", "k"]);
    expect_status(&out, 1);
    assert!(stderr(&out).contains("unauthenticated"), "{}", stderr(&out));
    let out = cli(
        &node,
        home.path(),
        &["--token", "ro-token-123", "set", "k", "v"],
    );
    expect_status(&out, 1);
    assert!(
        stderr(&out).contains("permission_denied"),
        "{}",
        stderr(&out)
    );
    ok(&cli(
        &node,
        home.path(),
        &["--token", "rw-token-123", "set", "k", "v"],
    ));
    let out = bare(home.path())
        .args(["--addr", &addr, "--pin", &node.fingerprint, "get", "k"])
        .env("STRATA_TOKEN", "ro-token-123")
        .output()
        .unwrap();
    assert_eq!(ok(&out).lines().next(), Some("v"));
    assert!(!stderr(&out).contains("ro-token-123"));
}

#[test]
fn prompt_reads_commands_from_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let node = TestNode::start(dir.path(), &[]);

    let script = concat!(
        "set a 1\n",
        "get a\n",
        "\n",
        "set \"my key\" \"two words\"\n",
        "get 'my key'\n",
        "frobnicate\n",
        "incr a 41\n",
        "get missing\n",
        "help\n",
        "quit\n",
        "set after-quit x\n",
    );
    let out = cli_with_stdin(&node, home.path(), &[], Some(script.as_bytes()));
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("OK version"), "{text}");
    assert_eq!(lines[1], "1");
    assert!(lines[2].starts_with("(version"), "{text}");
    assert!(lines[3].starts_with("OK version"), "{text}");
    assert_eq!(lines[4], "two words");
    assert!(lines.iter().any(|l| l.starts_with("42 (")), "{text}");
    assert!(lines.contains(&"(nil)"), "{text}");
    assert!(text.contains("quit"), "help lists quit: {text}");
    // The bad line was reported, and the prompt went on.
    assert!(stderr(&out).contains("frobnicate"), "{}", stderr(&out));
    // Nothing after quit ran.
    let check = cli(&node, home.path(), &["get", "after-quit"]);
    assert_eq!(ok(&check).trim(), "(nil)");

    // The same with --json: one object per command; end of input ends it.
    let out = cli_with_stdin(
        &node,
        home.path(),
        &["--json"],
        Some(b"get a\nexists a missing\n"),
    );
    let text = ok(&out);
    let objects: Vec<Json> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert_eq!(objects.len(), 2, "{text}");
    assert_eq!(objects[0]["value"], "42");
    assert_eq!(objects[1]["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_admin_commands() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path();
    let certs = root.path().join("certs");
    common::cluster::gen_certs(&certs, &["p", "r1"]);
    let primary = common::cluster::Member::start(root.path(), &certs, "p", &[]);
    let upstream = primary.repl_addr.to_string();
    let replica =
        common::cluster::Member::start(root.path(), &certs, "r1", &["--replica-of", &upstream]);
    let out = cli(
        &primary.node,
        home,
        &["set", "k", "v", "--ack", "semi-sync:1:10000"],
    );
    assert!(stdout(&out).contains("1 replica ack"), "{}", stdout(&out));

    // Same digest on both nodes (the replica already acked the only write).
    let digest = |node: &TestNode| -> Json {
        let out = cli(
            node,
            home,
            &["--json", "digest", "--expired-before-ms", "1"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<Json>(&stdout(&out)).unwrap()["digest"].clone()
    };
    let (p, r) = (digest(&primary.node), digest(&replica.node));
    assert_eq!(p["sha256"], r["sha256"], "{p} {r}");
    assert_eq!(p["keys"], "1");

    // info names the role; a replica refuses writes, naming the primary.
    let info = cli(&replica.node, home, &["--json", "info"]);
    let info: Json = serde_json::from_str(&stdout(&info)).unwrap();
    assert_eq!(info["info"]["role"], "replica");
    assert_eq!(info["info"]["replication_state"], "streaming");
    let refused = cli(&replica.node, home, &["set", "k", "w"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains(&primary.node.addr.to_string()),
        "{}",
        stderr(&refused)
    );

    // promote: the replica becomes a primary of epoch 1 and takes writes.
    let promoted = cli(&replica.node, home, &["promote"]);
    assert!(promoted.status.success(), "{}", stderr(&promoted));
    assert!(
        stdout(&promoted).contains("repl_epoch"),
        "{}",
        stdout(&promoted)
    );
    let again = cli(&replica.node, home, &["promote"]);
    assert_eq!(again.status.code(), Some(1), "already a primary");
    let written = cli(&replica.node, home, &["set", "k", "w"]);
    assert!(written.status.success(), "{}", stderr(&written));
}
