//! The RESP gateway against a real `strata-server` on loopback, spoken to
//! over raw TCP: every command, pipelining, RESP3, auth and roles, inline
//! commands and binary-safe values.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::node::TestNode;
use common::resp::{Conn, Value, encode};
use tokio::net::TcpStream;

/// A node with the gateway on a port the OS picks.
fn start(dir: &std::path::Path, extra: &[&str]) -> TestNode {
    let mut args = vec!["--resp-listen", "127.0.0.1:0", "--fsync", "never"];
    args.extend_from_slice(extra);
    TestNode::start(dir, &args)
}

async fn connect(node: &TestNode) -> Conn<TcpStream> {
    Conn::connect(node.resp_addr.expect("the gateway is on")).await
}

fn err(text: &str) -> Value {
    Value::Error(text.into())
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

fn bulk(s: &str) -> Value {
    Value::bulk(s)
}

#[tokio::test]
async fn string_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Value::ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, bulk("v"));
    assert_eq!(c.cmd(&["GET", "missing"]).await, Value::Null);
    // NX, XX and GET.
    assert_eq!(c.cmd(&["SET", "k", "w", "NX"]).await, Value::Null);
    assert_eq!(c.cmd(&["SET", "new", "1", "XX"]).await, Value::Null);
    assert_eq!(c.cmd(&["SET", "k", "w", "XX", "GET"]).await, bulk("v"));
    assert_eq!(c.cmd(&["SET", "k", "x", "NX", "GET"]).await, bulk("w"));
    assert_eq!(c.cmd(&["SET", "fresh", "1", "GET"]).await, Value::Null);
    // Expiry options.
    assert_eq!(c.cmd(&["SET", "t", "v", "EX", "100"]).await, Value::ok());
    let Value::Int(ms) = c.cmd(&["PTTL", "t"]).await else {
        panic!()
    };
    assert!((1..=100_000).contains(&ms), "{ms}");
    assert_eq!(c.cmd(&["SET", "t", "v2", "KEEPTTL"]).await, Value::ok());
    let Value::Int(kept) = c.cmd(&["PTTL", "t"]).await else {
        panic!()
    };
    assert!((1..=ms).contains(&kept), "{kept} after {ms}");
    assert_eq!(c.cmd(&["SET", "t", "v3"]).await, Value::ok());
    assert_eq!(
        c.cmd(&["TTL", "t"]).await,
        int(-1),
        "a plain SET clears the TTL"
    );
    assert_eq!(c.cmd(&["SET", "t", "v", "PX", "100000"]).await, Value::ok());
    let far = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH))
        .unwrap()
        .as_secs()
        + 1000;
    let far_s = far.to_string();
    let far_ms = (far * 1000).to_string();
    assert_eq!(c.cmd(&["SET", "t", "v", "EXAT", &far_s]).await, Value::ok());
    let Value::Int(s) = c.cmd(&["TTL", "t"]).await else {
        panic!()
    };
    assert!((1..=1000).contains(&s), "{s}");
    assert_eq!(
        c.cmd(&["SET", "t", "v", "PXAT", &far_ms]).await,
        Value::ok()
    );
    // A time already past sets and removes the key at once.
    assert_eq!(c.cmd(&["SET", "t", "v", "PXAT", "1000"]).await, Value::ok());
    assert_eq!(c.cmd(&["EXISTS", "t"]).await, int(0));
    // Option errors, with Redis's texts.
    let syntax = err("ERR syntax error");
    assert_eq!(c.cmd(&["SET", "k", "v", "NX", "XX"]).await, syntax);
    assert_eq!(
        c.cmd(&["SET", "k", "v", "EX", "1", "PX", "1"]).await,
        syntax
    );
    assert_eq!(
        c.cmd(&["SET", "k", "v", "EX", "1", "KEEPTTL"]).await,
        syntax
    );
    assert_eq!(c.cmd(&["SET", "k", "v", "BOGUS"]).await, syntax);
    assert_eq!(
        c.cmd(&["SET", "k", "v", "EX", "0"]).await,
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        c.cmd(&["SET", "k", "v", "EX", "x"]).await,
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        c.cmd(&["SET", "k", "v", "EX", "9223372036854775807"]).await,
        err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        c.cmd(&["SET", "k"]).await,
        err("ERR wrong number of arguments for 'set' command")
    );

    // SETNX, SETEX, PSETEX, GETSET, GETDEL, GETEX.
    assert_eq!(c.cmd(&["SETNX", "nx", "1"]).await, int(1));
    assert_eq!(c.cmd(&["SETNX", "nx", "2"]).await, int(0));
    assert_eq!(c.cmd(&["GET", "nx"]).await, bulk("1"));
    assert_eq!(c.cmd(&["SETEX", "se", "100", "v"]).await, Value::ok());
    let Value::Int(s) = c.cmd(&["TTL", "se"]).await else {
        panic!()
    };
    assert!((1..=100).contains(&s));
    assert_eq!(
        c.cmd(&["SETEX", "se", "0", "v"]).await,
        err("ERR invalid expire time in 'setex' command")
    );
    assert_eq!(c.cmd(&["PSETEX", "pse", "100000", "v"]).await, Value::ok());
    assert_eq!(
        c.cmd(&["PSETEX", "pse", "-1", "v"]).await,
        err("ERR invalid expire time in 'psetex' command")
    );
    assert_eq!(c.cmd(&["GETSET", "gs", "a"]).await, Value::Null);
    assert_eq!(c.cmd(&["GETSET", "gs", "b"]).await, bulk("a"));
    assert_eq!(c.cmd(&["GETDEL", "gs"]).await, bulk("b"));
    assert_eq!(c.cmd(&["GETDEL", "gs"]).await, Value::Null);
    assert_eq!(c.cmd(&["SET", "ge", "v"]).await, Value::ok());
    assert_eq!(c.cmd(&["GETEX", "ge"]).await, bulk("v"));
    assert_eq!(c.cmd(&["GETEX", "ge", "EX", "100"]).await, bulk("v"));
    let Value::Int(s) = c.cmd(&["TTL", "ge"]).await else {
        panic!()
    };
    assert!((1..=100).contains(&s));
    assert_eq!(c.cmd(&["GETEX", "ge", "PERSIST"]).await, bulk("v"));
    assert_eq!(c.cmd(&["TTL", "ge"]).await, int(-1));
    assert_eq!(c.cmd(&["GETEX", "ge", "PXAT", "1"]).await, bulk("v"));
    assert_eq!(c.cmd(&["GET", "ge"]).await, Value::Null);
    assert_eq!(c.cmd(&["GETEX", "ge", "EX", "1"]).await, Value::Null);
    assert_eq!(c.cmd(&["GETEX", "ge", "EX"]).await, syntax);

    // MGET, MSET, MSETNX.
    assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2"]).await, Value::ok());
    assert_eq!(
        c.cmd(&["MGET", "a", "nope", "b"]).await,
        Value::Array(vec![bulk("1"), Value::Null, bulk("2")])
    );
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b"]).await,
        err("ERR wrong number of arguments for 'mset' command")
    );
    assert_eq!(c.cmd(&["MSETNX", "a", "9", "c", "3"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "c"]).await, int(0));
    assert_eq!(c.cmd(&["MSETNX", "c", "3", "d", "4"]).await, int(1));
    assert_eq!(c.cmd(&["MSETNX", "e", "5"]).await, int(1));
    assert_eq!(
        c.cmd(&["MGET", "c", "d", "e"]).await,
        Value::bulks(&["3", "4", "5"])
    );

    // Counters.
    assert_eq!(c.cmd(&["INCR", "n"]).await, int(1));
    assert_eq!(c.cmd(&["INCRBY", "n", "10"]).await, int(11));
    assert_eq!(c.cmd(&["DECR", "n"]).await, int(10));
    assert_eq!(c.cmd(&["DECRBY", "n", "-5"]).await, int(15));
    let not_int = err("ERR value is not an integer or out of range");
    assert_eq!(c.cmd(&["INCRBY", "n", "1.5"]).await, not_int);
    assert_eq!(c.cmd(&["INCR", "a"]).await, int(2));
    assert_eq!(c.cmd(&["SET", "s", "abc"]).await, Value::ok());
    assert_eq!(c.cmd(&["INCR", "s"]).await, not_int);
    assert_eq!(
        c.cmd(&["SET", "big", "9223372036854775807"]).await,
        Value::ok()
    );
    assert_eq!(
        c.cmd(&["INCR", "big"]).await,
        err("ERR increment or decrement would overflow")
    );
    assert_eq!(
        c.cmd(&["DECRBY", "n", "-9223372036854775808"]).await,
        err("ERR decrement would overflow")
    );
    // A counter keeps its TTL.
    assert_eq!(c.cmd(&["SET", "tn", "1", "EX", "100"]).await, Value::ok());
    assert_eq!(c.cmd(&["INCR", "tn"]).await, int(2));
    let Value::Int(s) = c.cmd(&["TTL", "tn"]).await else {
        panic!()
    };
    assert!((1..=100).contains(&s));

    // APPEND, STRLEN, GETRANGE, SETRANGE.
    assert_eq!(c.cmd(&["APPEND", "ap", "Hello"]).await, int(5));
    assert_eq!(c.cmd(&["APPEND", "ap", " World"]).await, int(11));
    assert_eq!(c.cmd(&["GET", "ap"]).await, bulk("Hello World"));
    assert_eq!(c.cmd(&["STRLEN", "ap"]).await, int(11));
    assert_eq!(c.cmd(&["STRLEN", "nope"]).await, int(0));
    assert_eq!(c.cmd(&["GETRANGE", "ap", "0", "4"]).await, bulk("Hello"));
    assert_eq!(c.cmd(&["GETRANGE", "ap", "-5", "-1"]).await, bulk("World"));
    assert_eq!(c.cmd(&["GETRANGE", "ap", "5", "1"]).await, bulk(""));
    assert_eq!(c.cmd(&["SETRANGE", "ap", "6", "Redis"]).await, int(11));
    assert_eq!(c.cmd(&["GET", "ap"]).await, bulk("Hello Redis"));
    assert_eq!(c.cmd(&["SETRANGE", "sr", "2", "x"]).await, int(3));
    assert_eq!(c.cmd(&["GET", "sr"]).await, Value::Bulk(b"\0\0x".to_vec()));
    assert_eq!(c.cmd(&["SETRANGE", "none", "5", ""]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "none"]).await, int(0));
}

#[tokio::test]
async fn key_space_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]).await,
        Value::ok()
    );
    assert_eq!(c.cmd(&["EXISTS", "a", "a", "nope"]).await, int(2));
    assert_eq!(c.cmd(&["TYPE", "a"]).await, Value::Simple("string".into()));
    assert_eq!(c.cmd(&["TYPE", "nope"]).await, Value::Simple("none".into()));
    assert_eq!(c.cmd(&["DEL", "a", "nope"]).await, int(1));
    assert_eq!(c.cmd(&["UNLINK", "b", "c"]).await, int(2));
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(0));

    // The EXPIRE family, TTL, PTTL, PERSIST.
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Value::ok());
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-1));
    assert_eq!(c.cmd(&["TTL", "nope"]).await, int(-2));
    assert_eq!(c.cmd(&["PTTL", "nope"]).await, int(-2));
    assert_eq!(c.cmd(&["EXPIRE", "nope", "10"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "100"]).await, int(1));
    let Value::Int(s) = c.cmd(&["TTL", "k"]).await else {
        panic!()
    };
    assert!((1..=100).contains(&s));
    assert_eq!(c.cmd(&["PEXPIRE", "k", "200000"]).await, int(1));
    let Value::Int(ms) = c.cmd(&["PTTL", "k"]).await else {
        panic!()
    };
    assert!((100_001..=200_000).contains(&ms), "{ms}");
    // NX, XX, GT, LT.
    assert_eq!(c.cmd(&["EXPIRE", "k", "50", "NX"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "50", "GT"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "50", "LT"]).await, int(1));
    assert_eq!(c.cmd(&["EXPIRE", "k", "500", "XX"]).await, int(1));
    assert_eq!(c.cmd(&["PERSIST", "k"]).await, int(1));
    assert_eq!(c.cmd(&["PERSIST", "k"]).await, int(0));
    assert_eq!(c.cmd(&["PERSIST", "nope"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "50", "XX"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "50", "GT"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "k", "50", "LT"]).await, int(1));
    assert_eq!(
        c.cmd(&["EXPIRE", "k", "5", "NX", "XX"]).await,
        err("ERR NX and XX, GT or LT options at the same time are not compatible")
    );
    assert_eq!(
        c.cmd(&["EXPIRE", "k", "5", "GT", "LT"]).await,
        err("ERR GT and LT options at the same time are not compatible")
    );
    assert_eq!(
        c.cmd(&["EXPIRE", "k", "5", "ZZ"]).await,
        err("ERR Unsupported option ZZ")
    );
    assert_eq!(
        c.cmd(&["EXPIRE", "k", "9223372036854775807"]).await,
        err("ERR invalid expire time in 'expire' command")
    );
    let far = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1000;
    // Deadlines travel as deadlines: each is read back exactly.
    assert_eq!(c.cmd(&["EXPIREAT", "k", &far.to_string()]).await, int(1));
    assert_eq!(c.cmd(&["EXPIRETIME", "k"]).await, int(far as i64));
    let far_ms = far * 1000 + 123;
    assert_eq!(
        c.cmd(&["PEXPIREAT", "k", &far_ms.to_string()]).await,
        int(1)
    );
    assert_eq!(c.cmd(&["PEXPIRETIME", "k"]).await, int(far_ms as i64));
    // GT and LT compare times left as read, so a margin for the time
    // between the read and the comparison.
    let (later, sooner) = ((far_ms + 1).to_string(), (far_ms - 1000).to_string());
    assert_eq!(c.cmd(&["PEXPIREAT", "k", &later, "GT"]).await, int(1));
    assert_eq!(c.cmd(&["PEXPIRETIME", "k"]).await, int(far_ms as i64 + 1));
    assert_eq!(c.cmd(&["PEXPIREAT", "k", &sooner, "LT"]).await, int(1));
    assert_eq!(
        c.cmd(&["PEXPIRETIME", "k"]).await,
        int(far_ms as i64 - 1000)
    );
    let at = far_ms.to_string();
    assert_eq!(c.cmd(&["SET", "sk", "v", "PXAT", &at]).await, Value::ok());
    assert_eq!(c.cmd(&["PEXPIRETIME", "sk"]).await, int(far_ms as i64));
    assert_eq!(c.cmd(&["GETEX", "sk", "PXAT", &later]).await, bulk("v"));
    assert_eq!(c.cmd(&["PEXPIRETIME", "sk"]).await, int(far_ms as i64 + 1));
    assert_eq!(c.cmd(&["RPUSH", "lk", "a"]).await, int(1));
    assert_eq!(c.cmd(&["PEXPIREAT", "lk", &at]).await, int(1));
    assert_eq!(c.cmd(&["PEXPIRETIME", "lk"]).await, int(far_ms as i64));
    // The largest deadline rounds to seconds without overflowing.
    let max = i64::MAX.to_string();
    assert_eq!(c.cmd(&["PEXPIREAT", "sk", &max]).await, int(1));
    assert_eq!(c.cmd(&["PEXPIRETIME", "sk"]).await, int(i64::MAX));
    assert_eq!(c.cmd(&["EXPIRETIME", "sk"]).await, int(i64::MAX / 1000 + 1));
    assert_eq!(c.cmd(&["DEL", "sk", "lk"]).await, int(2));
    // A time already past deletes the key.
    assert_eq!(c.cmd(&["EXPIRE", "k", "-1"]).await, int(1));
    assert_eq!(c.cmd(&["EXISTS", "k"]).await, int(0));
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Value::ok());
    assert_eq!(c.cmd(&["PEXPIREAT", "k", "1"]).await, int(1));
    assert_eq!(c.cmd(&["GET", "k"]).await, Value::Null);
    // So is one too far past to subtract from now.
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Value::ok());
    let past = (i64::MIN + 5000).to_string();
    assert_eq!(c.cmd(&["PEXPIREAT", "k", &past]).await, int(1));
    assert_eq!(c.cmd(&["TTL", "k"]).await, int(-2));

    // SCAN (every key once, MATCH, COUNT), KEYS, DBSIZE.
    let mut pairs = vec!["MSET".to_string()];
    for i in 0..50 {
        pairs.push(format!("user:{i}"));
        pairs.push(i.to_string());
        pairs.push(format!("other:{i}"));
        pairs.push(i.to_string());
    }
    let args: Vec<&str> = pairs.iter().map(String::as_str).collect();
    assert_eq!(c.cmd(&args).await, Value::ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(100));
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    let mut pages = 0;
    loop {
        let reply = c
            .cmd(&["SCAN", &cursor, "MATCH", "user:*", "COUNT", "7"])
            .await;
        let Value::Array(parts) = reply else {
            panic!("{reply:?}")
        };
        cursor = parts[0].text();
        let Value::Array(keys) = &parts[1] else {
            panic!()
        };
        assert!(keys.len() <= 7);
        for k in keys {
            assert!(seen.insert(k.text()), "{k:?} twice");
        }
        pages += 1;
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 50);
    assert!(seen.iter().all(|k| k.starts_with("user:")));
    assert!(pages >= 8, "{pages} pages of at most 7");
    assert_eq!(
        c.cmd(&["SCAN", "12345678", "COUNT", "5"]).await,
        err("ERR invalid cursor")
    );
    assert_eq!(
        c.cmd(&["SCAN", "0", "COUNT", "0"]).await,
        err("ERR syntax error")
    );
    let Value::Array(parts) = c.cmd(&["SCAN", "0", "TYPE", "list"]).await else {
        panic!()
    };
    assert_eq!(parts[1], Value::Array(vec![]));
    let Value::Array(keys) = c.cmd(&["KEYS", "user:4?"]).await else {
        panic!()
    };
    let mut keys: Vec<String> = keys.iter().map(Value::text).collect();
    keys.sort();
    let want: Vec<String> = (40..50).map(|i| format!("user:{i}")).collect();
    assert_eq!(keys, want);
    let Value::Array(all) = c.cmd(&["KEYS", "*"]).await else {
        panic!()
    };
    assert_eq!(all.len(), 100);

    // FLUSHDB and FLUSHALL.
    assert_eq!(c.cmd(&["FLUSHDB"]).await, Value::ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(0));
    assert_eq!(c.cmd(&["SET", "x", "1"]).await, Value::ok());
    assert_eq!(c.cmd(&["FLUSHALL", "ASYNC"]).await, Value::ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(0));
    assert_eq!(c.cmd(&["FLUSHALL", "NOW"]).await, err("ERR syntax error"));
}

const WRONG_TYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

#[tokio::test]
async fn list_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    // LPUSH a b c leaves c b a; RPUSH appends; the X forms need a list.
    assert_eq!(c.cmd(&["LPUSH", "l", "a", "b", "c"]).await, int(3));
    assert_eq!(c.cmd(&["RPUSH", "l", "x", "y"]).await, int(5));
    assert_eq!(c.cmd(&["LPUSHX", "l", "h"]).await, int(6));
    assert_eq!(c.cmd(&["RPUSHX", "l", "t"]).await, int(7));
    assert_eq!(c.cmd(&["LPUSHX", "nope", "h"]).await, int(0));
    assert_eq!(c.cmd(&["RPUSHX", "nope", "t"]).await, int(0));
    assert_eq!(c.cmd(&["EXISTS", "nope"]).await, int(0));
    assert_eq!(c.cmd(&["LLEN", "l"]).await, int(7));
    assert_eq!(c.cmd(&["LLEN", "nope"]).await, int(0));
    let all = Value::bulks(&["h", "c", "b", "a", "x", "y", "t"]);
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).await, all);
    assert_eq!(c.cmd(&["LRANGE", "l", "-100", "100"]).await, all);
    assert_eq!(
        c.cmd(&["LRANGE", "l", "1", "2"]).await,
        Value::bulks(&["c", "b"])
    );
    assert_eq!(
        c.cmd(&["LRANGE", "l", "-2", "-1"]).await,
        Value::bulks(&["y", "t"])
    );
    assert_eq!(c.cmd(&["LRANGE", "l", "5", "2"]).await, Value::bulks(&[]));
    assert_eq!(
        c.cmd(&["LRANGE", "nope", "0", "-1"]).await,
        Value::bulks(&[])
    );
    assert_eq!(
        c.cmd(&["LRANGE", "l", "a", "1"]).await,
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(c.cmd(&["LINDEX", "l", "0"]).await, bulk("h"));
    assert_eq!(c.cmd(&["LINDEX", "l", "-1"]).await, bulk("t"));
    assert_eq!(c.cmd(&["LINDEX", "l", "7"]).await, Value::Null);
    assert_eq!(c.cmd(&["LINDEX", "nope", "0"]).await, Value::Null);

    // LPOP and RPOP, with and without a count.
    assert_eq!(c.cmd(&["LPOP", "l"]).await, bulk("h"));
    assert_eq!(c.cmd(&["RPOP", "l"]).await, bulk("t"));
    assert_eq!(c.cmd(&["LPOP", "l", "2"]).await, Value::bulks(&["c", "b"]));
    assert_eq!(c.cmd(&["RPOP", "l", "2"]).await, Value::bulks(&["y", "x"]));
    assert_eq!(c.cmd(&["LPOP", "l", "0"]).await, Value::bulks(&[]));
    assert_eq!(
        c.cmd(&["LPOP", "l", "-1"]).await,
        err("ERR value is out of range, must be positive")
    );
    assert_eq!(c.cmd(&["LPOP", "nope"]).await, Value::Null);
    assert_eq!(c.cmd(&["LPOP", "nope", "3"]).await, Value::Null);
    // The last value taken deletes the list.
    assert_eq!(c.cmd(&["RPOP", "l", "10"]).await, Value::bulks(&["a"]));
    assert_eq!(c.cmd(&["EXISTS", "l"]).await, int(0));
    assert_eq!(c.cmd(&["TYPE", "l"]).await, Value::Simple("none".into()));

    // Kinds: WRONGTYPE both ways; SET replaces a list; MGET reads nil.
    assert_eq!(c.cmd(&["RPUSH", "l", "1"]).await, int(1));
    assert_eq!(c.cmd(&["TYPE", "l"]).await, Value::Simple("list".into()));
    assert_eq!(c.cmd(&["SET", "s", "v"]).await, Value::ok());
    for cmd in [
        &["GET", "l"][..],
        &["INCR", "l"],
        &["APPEND", "l", "x"],
        &["ZADD", "l", "1", "m"],
        &["LPUSH", "s", "x"],
        &["LPOP", "s"],
        &["LLEN", "s"],
        &["LRANGE", "s", "0", "-1"],
        &["LINDEX", "s", "0"],
    ] {
        assert_eq!(c.cmd(cmd).await, err(WRONG_TYPE), "{cmd:?}");
    }
    assert_eq!(
        c.cmd(&["MGET", "s", "l"]).await,
        Value::Array(vec![bulk("v"), Value::Null])
    );
    // Pipelined GETs run as one multi-get, and still tell a list apart.
    let mut pipeline = Vec::new();
    for key in ["s", "l", "nope"] {
        pipeline.extend(encode(&[b"GET", key.as_bytes()]));
    }
    c.send_raw(&pipeline).await;
    assert_eq!(c.read().await, bulk("v"));
    assert_eq!(c.read().await, err(WRONG_TYPE));
    assert_eq!(c.read().await, Value::Null);
    assert_eq!(c.cmd(&["EXISTS", "s", "l"]).await, int(2));

    // The EXPIRE family on a list, flags included.
    assert_eq!(c.cmd(&["TTL", "l"]).await, int(-1));
    assert_eq!(c.cmd(&["EXPIRE", "l", "100", "XX"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "l", "100", "NX"]).await, int(1));
    assert_eq!(c.cmd(&["EXPIRE", "l", "50", "GT"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "l", "200", "GT"]).await, int(1));
    let Value::Int(ttl) = c.cmd(&["TTL", "l"]).await else {
        panic!()
    };
    assert!((101..=200).contains(&ttl), "{ttl}");
    assert_eq!(
        c.cmd(&["RPUSH", "l", "2"]).await,
        int(2),
        "pushes keep the TTL"
    );
    assert!(matches!(c.cmd(&["TTL", "l"]).await, Value::Int(101..=200)));
    assert_eq!(c.cmd(&["PERSIST", "l"]).await, int(1));
    assert_eq!(c.cmd(&["TTL", "l"]).await, int(-1));

    // The key space sees lists: SCAN TYPE, KEYS, DBSIZE, FLUSHALL.
    let scan_type = |kind: &'static str| ["SCAN", "0", "COUNT", "100", "TYPE", kind];
    let keys_of = |reply: Value| match reply {
        Value::Array(parts) => parts[1].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        keys_of(c.cmd(&scan_type("list")).await),
        Value::bulks(&["l"])
    );
    assert_eq!(
        keys_of(c.cmd(&scan_type("string")).await),
        Value::bulks(&["s"])
    );
    assert_eq!(keys_of(c.cmd(&scan_type("hash")).await), Value::bulks(&[]));
    let Value::Array(all) = c.cmd(&["KEYS", "*"]).await else {
        panic!()
    };
    assert_eq!(all.len(), 2);
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(2));
    assert_eq!(c.cmd(&["SET", "l", "now a string"]).await, Value::ok());
    assert_eq!(c.cmd(&["TYPE", "l"]).await, Value::Simple("string".into()));
    assert_eq!(c.cmd(&["RPUSH", "l2", "x"]).await, int(1));
    assert_eq!(c.cmd(&["FLUSHALL"]).await, Value::ok());
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(0));
}

#[tokio::test]
async fn set_and_hash_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    // Sets: a member named twice counts once; members come in byte order.
    assert_eq!(c.cmd(&["SADD", "s", "b", "a", "c", "a"]).await, int(3));
    assert_eq!(c.cmd(&["SADD", "s", "a", "d"]).await, int(1));
    assert_eq!(c.cmd(&["SCARD", "s"]).await, int(4));
    assert_eq!(c.cmd(&["SCARD", "nope"]).await, int(0));
    assert_eq!(
        c.cmd(&["SMEMBERS", "s"]).await,
        Value::bulks(&["a", "b", "c", "d"])
    );
    assert_eq!(c.cmd(&["SMEMBERS", "nope"]).await, Value::bulks(&[]));
    assert_eq!(c.cmd(&["SISMEMBER", "s", "a"]).await, int(1));
    assert_eq!(c.cmd(&["SISMEMBER", "s", "z"]).await, int(0));
    assert_eq!(
        c.cmd(&["SMISMEMBER", "s", "a", "z"]).await,
        Value::Array(vec![int(1), int(0)])
    );
    assert_eq!(c.cmd(&["SREM", "s", "a", "a", "z"]).await, int(1));
    assert_eq!(c.cmd(&["SPOP", "s"]).await, bulk("b"));
    assert_eq!(c.cmd(&["SPOP", "s", "5"]).await, Value::bulks(&["c", "d"]));
    assert_eq!(
        c.cmd(&["EXISTS", "s"]).await,
        int(0),
        "an emptied set is gone"
    );
    assert_eq!(c.cmd(&["SPOP", "s"]).await, Value::Null);
    assert_eq!(c.cmd(&["SPOP", "s", "2"]).await, Value::bulks(&[]));
    assert_eq!(
        c.cmd(&["SPOP", "s", "-1"]).await,
        err("ERR value is out of range, must be positive")
    );

    // Hashes.
    assert_eq!(
        c.cmd(&["HSET", "h", "name", "ada", "age", "36"]).await,
        int(2)
    );
    assert_eq!(c.cmd(&["HSET", "h", "name", "bob"]).await, int(0));
    assert_eq!(c.cmd(&["HMSET", "h", "city", "Paris"]).await, Value::ok());
    assert_eq!(c.cmd(&["HSETNX", "h", "name", "cy"]).await, int(0));
    assert_eq!(c.cmd(&["HSETNX", "h", "zip", "75"]).await, int(1));
    assert_eq!(
        c.cmd(&["HSET", "h", "odd"]).await,
        err("ERR wrong number of arguments for 'hset' command")
    );
    assert_eq!(
        c.cmd(&["HSET", "h", "a", "1", "b"]).await,
        err("ERR wrong number of arguments for 'hset' command")
    );
    assert_eq!(c.cmd(&["HGET", "h", "name"]).await, bulk("bob"));
    assert_eq!(c.cmd(&["HGET", "h", "nope"]).await, Value::Null);
    assert_eq!(c.cmd(&["HGET", "nope", "f"]).await, Value::Null);
    assert_eq!(
        c.cmd(&["HMGET", "h", "age", "nope", "zip"]).await,
        Value::Array(vec![bulk("36"), Value::Null, bulk("75")])
    );
    assert_eq!(c.cmd(&["HLEN", "h"]).await, int(4));
    assert_eq!(c.cmd(&["HEXISTS", "h", "age"]).await, int(1));
    assert_eq!(c.cmd(&["HEXISTS", "h", "nope"]).await, int(0));
    assert_eq!(c.cmd(&["HSTRLEN", "h", "city"]).await, int(5));
    assert_eq!(c.cmd(&["HSTRLEN", "h", "nope"]).await, int(0));
    assert_eq!(
        c.cmd(&["HGETALL", "h"]).await,
        Value::bulks(&["age", "36", "city", "Paris", "name", "bob", "zip", "75"])
    );
    assert_eq!(
        c.cmd(&["HKEYS", "h"]).await,
        Value::bulks(&["age", "city", "name", "zip"])
    );
    assert_eq!(
        c.cmd(&["HVALS", "h"]).await,
        Value::bulks(&["36", "Paris", "bob", "75"])
    );
    assert_eq!(c.cmd(&["HINCRBY", "h", "age", "4"]).await, int(40));
    assert_eq!(c.cmd(&["HINCRBY", "h", "visits", "-1"]).await, int(-1));
    assert_eq!(
        c.cmd(&["HINCRBY", "h", "name", "1"]).await,
        err("ERR hash value is not an integer")
    );
    assert_eq!(
        c.cmd(&["HINCRBY", "h", "age", "x"]).await,
        err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        c.cmd(&["HINCRBY", "h", "age", "9223372036854775807"]).await,
        err("ERR increment or decrement would overflow")
    );
    assert_eq!(c.cmd(&["HDEL", "h", "age", "nope", "age"]).await, int(1));
    assert_eq!(c.cmd(&["HLEN", "h"]).await, int(4), "city name zip visits");

    // Kinds: TYPE, WRONGTYPE both ways, SCAN TYPE, DEL, EXPIRE.
    assert_eq!(c.cmd(&["SADD", "s", "m"]).await, int(1));
    assert_eq!(c.cmd(&["ZADD", "z", "1", "m"]).await, int(1));
    assert_eq!(c.cmd(&["TYPE", "z"]).await, Value::Simple("zset".into()));
    assert_eq!(c.cmd(&["SADD", "z", "m"]).await, err(WRONG_TYPE));
    assert_eq!(c.cmd(&["ZADD", "s", "1", "m"]).await, err(WRONG_TYPE));
    assert_eq!(c.cmd(&["ZSCORE", "h", "m"]).await, err(WRONG_TYPE));
    assert_eq!(c.cmd(&["DEL", "z"]).await, int(1));
    assert_eq!(c.cmd(&["TYPE", "s"]).await, Value::Simple("set".into()));
    assert_eq!(c.cmd(&["TYPE", "h"]).await, Value::Simple("hash".into()));
    assert_eq!(c.cmd(&["SET", "str", "v"]).await, Value::ok());
    for cmd in [
        &["GET", "s"][..],
        &["HGET", "s", "f"],
        &["SADD", "h", "m"],
        &["SADD", "str", "m"],
        &["HSET", "str", "f", "v"],
        &["LPUSH", "h", "x"],
        &["SMEMBERS", "h"],
        &["HGETALL", "s"],
    ] {
        assert_eq!(c.cmd(cmd).await, err(WRONG_TYPE), "{cmd:?}");
    }
    let scan = |kind: &'static str| ["SCAN", "0", "COUNT", "100", "TYPE", kind];
    let Value::Array(parts) = c.cmd(&scan("hash")).await else {
        panic!()
    };
    assert_eq!(parts[1], Value::bulks(&["h"]));
    assert_eq!(c.cmd(&["EXPIRE", "h", "100", "XX"]).await, int(0));
    assert_eq!(c.cmd(&["EXPIRE", "h", "100", "NX"]).await, int(1));
    assert!(matches!(c.cmd(&["TTL", "h"]).await, Value::Int(1..=100)));
    assert_eq!(c.cmd(&["EXPIRE", "s", "100"]).await, int(1));
    assert_eq!(c.cmd(&["DEL", "h", "s"]).await, int(2));
    assert_eq!(c.cmd(&["DBSIZE"]).await, int(1));

    // RESP3: HGETALL is a map.
    c.cmd(&["HELLO", "3"]).await;
    c.cmd(&["HSET", "h3", "f", "v"]).await;
    let reply = c.cmd(&["HGETALL", "h3"]).await;
    assert!(matches!(reply, Value::Map(_)), "{reply:?}");
    assert_eq!(reply.pairs(), vec![("f".to_string(), bulk("v"))]);
}

/// Sorted sets: order, ZADD's flags, increments, removes and pops, in
/// RESP2 and RESP3.
#[tokio::test]
async fn sorted_set_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    // Ordered by score, then by member bytes.
    assert_eq!(
        c.cmd(&["ZADD", "z", "2", "b", "1", "a", "2", "aa"]).await,
        int(3)
    );
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]).await,
        Value::bulks(&["a", "1", "aa", "2", "b", "2"])
    );
    assert_eq!(
        c.cmd(&["ZREVRANGE", "z", "0", "0"]).await,
        Value::bulks(&["b"])
    );
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "0", "1", "REV"]).await,
        Value::bulks(&["b", "aa"])
    );
    // ZADD's flags, and Redis's texts for their conflicts.
    assert_eq!(
        c.cmd(&["ZADD", "z", "NX", "9", "a", "3", "c"]).await,
        int(1)
    );
    assert_eq!(
        c.cmd(&["ZADD", "z", "XX", "CH", "5", "a", "7", "new"])
            .await,
        int(1)
    );
    assert_eq!(
        c.cmd(&["ZADD", "z", "GT", "CH", "4", "a", "6", "b"]).await,
        int(1)
    );
    assert_eq!(c.cmd(&["ZADD", "z", "LT", "3", "a"]).await, int(0));
    assert_eq!(c.cmd(&["ZSCORE", "z", "a"]).await, bulk("3"));
    assert_eq!(c.cmd(&["ZSCORE", "z", "b"]).await, bulk("6"));
    assert_eq!(c.cmd(&["ZSCORE", "z", "new"]).await, Value::Null);
    assert_eq!(
        c.cmd(&["ZADD", "z", "NX", "XX", "1", "a"]).await,
        err("ERR XX and NX options at the same time are not compatible")
    );
    assert_eq!(
        c.cmd(&["ZADD", "z", "NX", "GT", "1", "a"]).await,
        err("ERR GT, LT, and/or NX options at the same time are not compatible")
    );
    assert_eq!(
        c.cmd(&["ZADD", "z", "INCR", "1", "a", "2", "b"]).await,
        err("ERR INCR option supports a single increment-element pair")
    );
    assert_eq!(
        c.cmd(&["ZADD", "z", "1", "a", "2"]).await,
        err("ERR syntax error")
    );
    assert_eq!(
        c.cmd(&["ZADD", "z", "x", "a"]).await,
        err("ERR value is not a valid float")
    );
    assert_eq!(
        c.cmd(&["ZADD", "z", "nan", "a"]).await,
        err("ERR value is not a valid float")
    );
    // Increments.
    assert_eq!(c.cmd(&["ZADD", "z", "INCR", "1.5", "a"]).await, bulk("4.5"));
    assert_eq!(
        c.cmd(&["ZADD", "z", "XX", "INCR", "1", "nope"]).await,
        Value::Null
    );
    assert_eq!(c.cmd(&["ZINCRBY", "z", "-0.25", "n"]).await, bulk("-0.25"));
    assert_eq!(c.cmd(&["ZINCRBY", "z", "inf", "i"]).await, bulk("inf"));
    assert_eq!(
        c.cmd(&["ZINCRBY", "z", "-inf", "i"]).await,
        err("ERR resulting score is not a number (NaN)")
    );
    assert_eq!(
        c.cmd(&["ZMSCORE", "z", "a", "nope", "n"]).await,
        Value::Array(vec![bulk("4.5"), Value::Null, bulk("-0.25")])
    );
    assert_eq!(c.cmd(&["ZCARD", "z"]).await, int(6));
    assert_eq!(c.cmd(&["ZCARD", "nope"]).await, int(0));
    // Removes and pops; an emptied sorted set is gone.
    assert_eq!(c.cmd(&["ZREM", "z", "i", "i", "nope"]).await, int(1));
    assert_eq!(
        c.cmd(&["ZPOPMIN", "z"]).await,
        Value::bulks(&["n", "-0.25"])
    );
    assert_eq!(
        c.cmd(&["ZPOPMAX", "z", "2"]).await,
        Value::bulks(&["b", "6", "a", "4.5"])
    );
    assert_eq!(
        c.cmd(&["ZPOPMIN", "z", "9"]).await,
        Value::bulks(&["aa", "2", "c", "3"])
    );
    assert_eq!(c.cmd(&["EXISTS", "z"]).await, int(0));
    assert_eq!(c.cmd(&["ZPOPMIN", "z"]).await, Value::bulks(&[]));
    assert_eq!(
        c.cmd(&["ZPOPMIN", "z", "-1"]).await,
        err("ERR value is out of range, must be positive")
    );
    assert!(matches!(
        c.cmd(&["ZRANGE", "z", "0", "1", "BYSCORE"]).await,
        Value::Error(e) if e.contains("by rank only")
    ));
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "0", "1", "FOO"]).await,
        err("ERR syntax error")
    );
    // RESP3: scores are doubles, and counted pops and WITHSCORES nest pairs.
    c.cmd(&["HELLO", "3"]).await;
    c.cmd(&["ZADD", "z3", "1", "a", "2", "b"]).await;
    assert_eq!(c.cmd(&["ZSCORE", "z3", "b"]).await, Value::Double(2.0));
    assert_eq!(
        c.cmd(&["ZRANGE", "z3", "0", "-1", "WITHSCORES"]).await,
        Value::Array(vec![
            Value::Array(vec![bulk("a"), Value::Double(1.0)]),
            Value::Array(vec![bulk("b"), Value::Double(2.0)]),
        ])
    );
    assert_eq!(
        c.cmd(&["ZPOPMIN", "z3"]).await,
        Value::Array(vec![bulk("a"), Value::Double(1.0)])
    );
}

/// The corners where a gateway could part from Redis: a member named
/// twice in one ZADD counts as Redis counts it, flags repeat, errors come
/// in Redis's order, out-of-range floats are refused, scores print as
/// Redis 7.2 prints them.
#[tokio::test]
async fn sorted_set_arguments_as_redis_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    assert_eq!(c.cmd(&["ZADD", "d", "1", "a", "2", "a"]).await, int(1));
    assert_eq!(c.cmd(&["ZSCORE", "d", "a"]).await, bulk("2"));
    // Added, then rescored: both count with CH.
    assert_eq!(
        c.cmd(&["ZADD", "d", "CH", "1", "b", "2", "b"]).await,
        int(2)
    );
    assert_eq!(
        c.cmd(&["ZADD", "d", "CH", "3", "a", "3", "a"]).await,
        int(1)
    );
    assert_eq!(
        c.cmd(&["ZADD", "d", "GT", "CH", "5", "a", "4", "a"]).await,
        int(1)
    );
    assert_eq!(c.cmd(&["ZSCORE", "d", "a"]).await, bulk("5"));
    assert_eq!(c.cmd(&["ZADD", "d", "GT", "GT", "9", "a"]).await, int(0));
    assert_eq!(c.cmd(&["ZSCORE", "d", "a"]).await, bulk("9"));
    assert_eq!(
        c.cmd(&["ZADD", "d", "GT", "LT", "1", "a"]).await,
        err("ERR GT, LT, and/or NX options at the same time are not compatible")
    );
    assert_eq!(
        c.cmd(&["ZADD", "d", "INCR", "x", "a", "2", "b"]).await,
        err("ERR INCR option supports a single increment-element pair")
    );
    for out_of_range in ["1e400", "-1e400", "1e-400"] {
        assert_eq!(
            c.cmd(&["ZADD", "d", out_of_range, "a"]).await,
            err("ERR value is not a valid float"),
            "{out_of_range}"
        );
    }
    assert_eq!(c.cmd(&["ZADD", "d", "+inf", "i", "0e9", "z"]).await, int(2));
    assert_eq!(
        c.cmd(&["ZPOPMIN", "d", "1", "extra"]).await,
        err("ERR syntax error")
    );
    for args in [
        &["ZRANGE", "d", "0", "-1", "REV", "REV"][..],
        &["ZREVRANGE", "d", "0", "-1", "REV"],
    ] {
        assert_eq!(c.cmd(args).await, err("ERR syntax error"), "{args:?}");
    }
    for (score, text) in [
        ("100000000", "100000000"),
        ("1.5e19", "1.5e+19"),
        ("0.00001234", "1.234e-5"),
        ("-0.000123", "-0.000123"),
    ] {
        c.cmd(&["ZADD", "f", score, "m"]).await;
        assert_eq!(c.cmd(&["ZSCORE", "f", "m"]).await, bulk(text), "{score}");
    }
}

#[tokio::test]
async fn long_lists_span_several_requests() {
    let dir = tempfile::tempdir().unwrap();
    // A small request limit, so that a few hundred values span requests.
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "[store.limits]\nmax_batch_keys = 100\n").unwrap();
    let node = start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut c = connect(&node).await;
    let values: Vec<String> = (0..250).map(|i| i.to_string()).collect();
    for chunk in values.chunks(50) {
        let mut args = vec!["RPUSH", "l"];
        args.extend(chunk.iter().map(String::as_str));
        c.cmd(&args).await;
    }
    assert_eq!(c.cmd(&["LLEN", "l"]).await, int(250));
    let all: Vec<&str> = values.iter().map(String::as_str).collect();
    assert_eq!(c.cmd(&["LRANGE", "l", "0", "-1"]).await, Value::bulks(&all));
    assert_eq!(
        c.cmd(&["LRANGE", "l", "-230", "-11"]).await,
        Value::bulks(&all[20..240])
    );
    assert_eq!(
        c.cmd(&["LRANGE", "l", "30", "180"]).await,
        Value::bulks(&all[30..=180])
    );
    let many = vec!["x"; 101];
    let mut push = vec!["LPUSH", "other"];
    push.extend(&many);
    assert!(matches!(c.cmd(&push).await, Value::Error(e) if e.starts_with("ERR ")));
    assert_eq!(
        c.cmd(&["LPOP", "l", "240"]).await,
        Value::bulks(&all[..240])
    );
    assert_eq!(c.cmd(&["RPOP", "l", "1000"]).await, {
        let mut rest = all[240..].to_vec();
        rest.reverse();
        Value::bulks(&rest)
    });
    assert_eq!(c.cmd(&["EXISTS", "l"]).await, int(0));

    // Sorted sets span requests the same way.
    for chunk in values.chunks(50) {
        let mut args = vec!["ZADD", "z"];
        for v in chunk {
            args.extend([v.as_str(), v.as_str()]);
        }
        c.cmd(&args).await;
    }
    assert_eq!(c.cmd(&["ZCARD", "z"]).await, int(250));
    assert_eq!(c.cmd(&["ZRANGE", "z", "0", "-1"]).await, Value::bulks(&all));
    assert_eq!(
        c.cmd(&["ZRANGE", "z", "-230", "-11"]).await,
        Value::bulks(&all[20..240])
    );
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(
        c.cmd(&["ZREVRANGE", "z", "10", "200"]).await,
        Value::bulks(&reversed[10..=200])
    );
    let mut mscore = vec!["ZMSCORE", "z"];
    mscore.extend(&all[..150]);
    let Value::Array(scores) = c.cmd(&mscore).await else {
        panic!("an array")
    };
    assert_eq!(scores.len(), 150);
    assert_eq!(scores[149], bulk("149"));
    let Value::Array(popped) = c.cmd(&["ZPOPMIN", "z", "240"]).await else {
        panic!("an array")
    };
    assert_eq!(popped.len(), 480, "member and score, flat in RESP2");
    assert_eq!((&popped[0], &popped[479]), (&bulk("0"), &bulk("239")));
    assert_eq!(c.cmd(&["ZCARD", "z"]).await, int(10));
}

#[tokio::test]
async fn connection_and_server_commands() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    assert_eq!(c.cmd(&["PING"]).await, Value::Simple("PONG".into()));
    assert_eq!(c.cmd(&["ping", "hi"]).await, bulk("hi"));
    assert_eq!(c.cmd(&["ECHO", "x y"]).await, bulk("x y"));
    assert_eq!(c.cmd(&["SELECT", "0"]).await, Value::ok());
    assert_eq!(
        c.cmd(&["SELECT", "1"]).await,
        err("ERR DB index is out of range")
    );
    let hello = c.cmd(&["HELLO", "2"]).await;
    assert_eq!(hello.get("proto"), int(2));
    assert_eq!(hello.get("server"), bulk("redis"));
    assert_eq!(hello.get("role"), bulk("master"));
    assert_eq!(
        c.cmd(&["HELLO", "4"]).await,
        err("NOPROTO unsupported protocol version")
    );
    // CLIENT.
    let Value::Int(id) = c.cmd(&["CLIENT", "ID"]).await else {
        panic!()
    };
    assert_eq!(hello.get("id"), int(id));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Value::Null);
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "worker-1"]).await, Value::ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, bulk("worker-1"));
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "a b"]).await,
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(
        c.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]).await,
        Value::ok()
    );
    let info = c.cmd(&["CLIENT", "INFO"]).await.text();
    assert!(
        info.starts_with(&format!("id={id} addr=127.0.0.1:")),
        "{info}"
    );
    assert!(
        info.contains(" name=worker-1 ") && info.contains("lib-name=redis-py"),
        "{info}"
    );
    assert_eq!(
        c.cmd(&["CLIENT", "KILL", "x"]).await,
        err("ERR unknown subcommand 'KILL'. Try CLIENT HELP.")
    );
    // COMMAND.
    let Value::Int(count) = c.cmd(&["COMMAND", "COUNT"]).await else {
        panic!()
    };
    assert!(count > 50, "{count}");
    let Value::Array(info) = c.cmd(&["COMMAND", "INFO", "get", "nosuch"]).await else {
        panic!()
    };
    let Value::Array(get) = &info[0] else {
        panic!()
    };
    assert_eq!(
        &get[..6],
        &[bulk("get"), int(2), get[2].clone(), int(1), int(1), int(1)]
    );
    assert_eq!(info[1], Value::Null);
    let docs = c.cmd(&["COMMAND", "DOCS", "set"]).await;
    assert_eq!(docs.get("set").get("group"), bulk("string"));
    let Value::Array(all) = c.cmd(&["COMMAND"]).await else {
        panic!()
    };
    assert_eq!(all.len() as i64, count);
    // INFO, CONFIG, TIME.
    let info = c.cmd(&["INFO"]).await.text();
    for line in [
        "# Server",
        "redis_version:",
        "# Replication",
        "role:master",
        "# Strata",
    ] {
        assert!(info.contains(line), "{line} in {info}");
    }
    let info = c.cmd(&["INFO", "replication"]).await.text();
    assert!(
        info.contains("role:master") && !info.contains("# Server"),
        "{info}"
    );
    let config = c.cmd(&["CONFIG", "GET", "save"]).await;
    assert_eq!(config.pairs(), vec![("save".to_string(), bulk(""))]);
    let config = c.cmd(&["CONFIG", "GET", "appendonly", "max*"]).await;
    let names: Vec<String> = config.pairs().into_iter().map(|(k, _)| k).collect();
    assert!(names.contains(&"appendonly".to_string()));
    assert!(names.contains(&"maxmemory".to_string()) && names.contains(&"maxclients".to_string()));
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "databases"])
            .await
            .get("databases"),
        bulk("1")
    );
    assert_eq!(c.cmd(&["CONFIG", "SET", "save", ""]).await, Value::ok());
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "maxmemory", "1"]).await,
        err("ERR Unknown option or number of arguments for CONFIG SET - 'maxmemory'")
    );
    let Value::Array(time) = c.cmd(&["TIME"]).await else {
        panic!()
    };
    let secs: u64 = time[0].text().parse().unwrap();
    assert!(secs > 1_600_000_000);
    let micros: u64 = time[1].text().parse().unwrap();
    assert!(micros < 1_000_000);
    // WAIT without replicas, FUNCTION FLUSH, cluster courtesies.
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Value::ok());
    assert_eq!(c.cmd(&["WAIT", "0", "0"]).await, int(0));
    assert_eq!(c.cmd(&["WAIT", "1", "10"]).await, int(0));
    assert_eq!(c.cmd(&["FUNCTION", "FLUSH"]).await, Value::ok());
    assert_eq!(c.cmd(&["READONLY"]).await, Value::ok());
    // Unknown commands and types strata does not store.
    assert_eq!(
        c.cmd(&["FOO", "bar", "baz"]).await,
        err("ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' ")
    );
    assert_eq!(c.cmd(&["LPUSH", "k", "x"]).await, err(WRONG_TYPE));
    assert_eq!(c.cmd(&["HGET", "k", "f"]).await, err(WRONG_TYPE));
    assert!(
        matches!(c.cmd(&["XADD", "nokey", "*", "f", "v"]).await, Value::Error(e) if e.starts_with("ERR unknown command 'XADD'"))
    );
    // RESET, then QUIT closes after its reply.
    assert_eq!(c.cmd(&["RESET"]).await, Value::Simple("RESET".into()));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, Value::Null);
    c.send_raw(&encode(&[b"QUIT"])).await;
    c.send_raw(&encode(&[b"PING"])).await;
    assert_eq!(c.read_to_close().await, vec![Value::ok()]);
}

#[tokio::test]
async fn cluster_commands_describe_one_shard_outside_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let addr = node.resp_addr.unwrap();
    let mut c = connect(&node).await;
    // Redis Cluster's own examples.
    assert_eq!(c.cmd(&["CLUSTER", "KEYSLOT", "somekey"]).await, int(11058));
    assert_eq!(
        c.cmd(&["CLUSTER", "KEYSLOT", "foo{hash_tag}"]).await,
        int(2515)
    );
    assert_eq!(
        c.cmd(&["CLUSTER", "KEYSLOT", "bar{hash_tag}"]).await,
        int(2515)
    );
    let id = c.cmd(&["CLUSTER", "MYID"]).await.text();
    assert_eq!(id.len(), 40);
    let slots = c.cmd(&["CLUSTER", "SLOTS"]).await;
    let want = Value::Array(vec![Value::Array(vec![
        int(0),
        int(16383),
        Value::Array(vec![
            bulk("127.0.0.1"),
            int(addr.port().into()),
            bulk(&id),
            Value::Array(vec![]),
        ]),
    ])]);
    assert_eq!(slots, want);
    let nodes = c.cmd(&["CLUSTER", "NODES"]).await.text();
    assert_eq!(
        nodes,
        format!(
            "{id} 127.0.0.1:{}@0 myself,master - 0 0 1 connected 0-16383\n",
            addr.port()
        )
    );
    let Value::Array(shards) = c.cmd(&["CLUSTER", "SHARDS"]).await else {
        panic!()
    };
    assert_eq!(
        shards[0].get("slots"),
        Value::Array(vec![int(0), int(16383)])
    );
    let info = c.cmd(&["CLUSTER", "INFO"]).await.text();
    assert!(info.starts_with("cluster_state:ok\r\n"), "{info}");
}

#[tokio::test]
async fn a_thousand_pipelined_commands_in_one_write_answer_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    let mut batch = Vec::new();
    for i in 0..1000 {
        let (key, value) = (format!("p{}", i / 4), i.to_string());
        batch.extend(match i % 4 {
            0 => encode(&[b"SET", key.as_bytes(), value.as_bytes()]),
            1 => encode(&[b"GET", key.as_bytes()]),
            2 => encode(&[b"INCR", b"counter"]),
            _ => format!("ECHO {i}\r\n").into_bytes(),
        });
    }
    c.send_raw(&batch).await;
    let mut counter = 0;
    for i in 0..1000 {
        let reply = c.read().await;
        let want = match i % 4 {
            0 => Value::ok(),
            // Reads its own pipeline's write.
            1 => bulk(&(i - 1).to_string()),
            2 => {
                counter += 1;
                int(counter)
            }
            _ => bulk(&i.to_string()),
        };
        assert_eq!(reply, want, "reply {i}");
    }
}

/// The commit records a node counted so far.
fn commit_records(node: &TestNode) -> f64 {
    let text = node.metrics();
    let line = text
        .lines()
        .find(|l| l.starts_with("strata_commit_records_total "))
        .unwrap_or_else(|| panic!("no strata_commit_records_total in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Pipelined plain SETs (and GETs) run as one store request per run:
/// fewer commit records than SETs, and still the answers and the final
/// values of running them one by one, an oversized value refused alone.
#[tokio::test]
async fn runs_of_pipelined_sets_and_gets_are_batched_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &["--max-value-bytes", "1000"]);
    let mut c = connect(&node).await;
    let before = commit_records(&node);
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 0..300 {
        let key = format!("r{}", i % 10);
        batch.extend(encode(&[
            b"SET",
            key.as_bytes(),
            format!("v{i}").as_bytes(),
        ]));
        want.push(Value::ok());
    }
    // Within the run: the last SET of a key wins.
    for k in 0..10 {
        batch.extend(encode(&[b"GET", format!("r{k}").as_bytes()]));
        want.push(bulk(&format!("v{}", 290 + k)));
    }
    // A value over the limit leaves the run: only it is refused.
    batch.extend(encode(&[b"SET", b"r0", b"a"]));
    batch.extend(encode(&[b"SET", b"big", &[b'x'; 1001]]));
    batch.extend(encode(&[b"SET", b"r1", b"b"]));
    batch.extend(encode(&[b"GET", b"r0"]));
    batch.extend(encode(&[b"INCR", b"r2"]));
    batch.extend(encode(&[b"GET", b"r1"]));
    batch.extend(encode(&[b"GET", b"big"]));
    want.push(Value::ok());
    let refused = c.cmd_bytes(&[b"SET", b"probe", &[b'x'; 1001]]).await;
    assert!(matches!(refused, Value::Error(_)), "{refused:?}");
    want.push(refused);
    want.push(Value::ok());
    want.push(bulk("a"));
    want.push(err("ERR value is not an integer or out of range"));
    want.push(bulk("b"));
    want.push(Value::Null);
    c.send_raw(&batch).await;
    for (i, want) in want.iter().enumerate() {
        assert_eq!(&c.read().await, want, "reply {i}");
    }
    // One write of 300 SETs arrives in far fewer reads: far fewer records.
    let records = commit_records(&node) - before;
    assert!(records < 100.0, "{records} commit records for 303 SETs");
}

#[tokio::test]
async fn resp3_after_hello_3() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    let hello = c.cmd(&["HELLO", "3", "SETNAME", "r3"]).await;
    let Value::Map(_) = &hello else {
        panic!("a map: {hello:?}")
    };
    assert_eq!(hello.get("proto"), int(3));
    assert_eq!(hello.get("version").text().split('.').count(), 3);
    assert_eq!(c.cmd(&["GET", "nope"]).await, Value::Null);
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Value::ok());
    assert_eq!(
        c.cmd(&["MGET", "k", "nope"]).await,
        Value::Array(vec![bulk("v"), Value::Null])
    );
    assert!(matches!(
        c.cmd(&["CONFIG", "GET", "save"]).await,
        Value::Map(_)
    ));
    assert!(matches!(
        c.cmd(&["INFO", "server"]).await,
        Value::Verbatim(f, t) if f == "txt" && t.contains("redis_version")
    ));
    assert!(matches!(
        c.cmd(&["CLIENT", "INFO"]).await,
        Value::Verbatim(..)
    ));
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]).await, bulk("r3"));
    assert!(matches!(
        c.cmd(&["COMMAND", "DOCS", "get"]).await,
        Value::Map(_)
    ));
    // Back to RESP2.
    assert!(matches!(c.cmd(&["HELLO", "2"]).await, Value::Array(_)));
    assert_eq!(c.cmd(&["GET", "nope"]).await, Value::Null);
}

#[tokio::test]
async fn tokens_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(
        dir.path(),
        &[
            "--token",
            "read-only:reader-secret",
            "--token",
            "read-write:writer-secret",
            "--token",
            "admin:admin-secret",
        ],
    );
    let mut c = connect(&node).await;
    let noauth = err("NOAUTH Authentication required.");
    assert_eq!(c.cmd(&["GET", "k"]).await, noauth);
    assert_eq!(c.cmd(&["PING"]).await, noauth);
    // Existence and arity come first, as in Redis.
    assert!(
        matches!(c.cmd(&["NOSUCH"]).await, Value::Error(e) if e.starts_with("ERR unknown command"))
    );
    assert!(
        matches!(c.cmd(&["HELLO", "3"]).await, Value::Error(e) if e.starts_with("NOAUTH HELLO must be called"))
    );
    let wrongpass = err("WRONGPASS invalid username-password pair or user is disabled.");
    assert_eq!(c.cmd(&["AUTH", "wrong-secret"]).await, wrongpass);
    assert_eq!(c.cmd(&["AUTH", "reader-secret"]).await, Value::ok());
    assert_eq!(c.cmd(&["GET", "k"]).await, Value::Null);
    let Value::Error(e) = c.cmd(&["SET", "k", "v"]).await else {
        panic!()
    };
    assert!(e.starts_with("NOPERM "), "{e}");
    // A failed AUTH drops the role it had.
    assert_eq!(c.cmd(&["AUTH", "default", "wrong-secret"]).await, wrongpass);
    assert_eq!(c.cmd(&["GET", "k"]).await, noauth);
    assert_eq!(
        c.cmd(&["AUTH", "default", "writer-secret"]).await,
        Value::ok()
    );
    assert_eq!(c.cmd(&["SET", "k", "v"]).await, Value::ok());
    let Value::Error(e) = c.cmd(&["FLUSHALL"]).await else {
        panic!()
    };
    assert!(e.starts_with("NOPERM "), "{e}");
    let Value::Error(e) = c.cmd(&["CONFIG", "SET", "save", ""]).await else {
        panic!()
    };
    assert!(e.starts_with("NOPERM "), "{e}");
    // HELLO with AUTH, and RESET forgets the token.
    let mut admin = connect(&node).await;
    let hello = admin
        .cmd(&["HELLO", "3", "AUTH", "default", "admin-secret"])
        .await;
    assert_eq!(hello.get("proto"), int(3));
    assert_eq!(admin.cmd(&["FLUSHALL"]).await, Value::ok());
    assert_eq!(admin.cmd(&["RESET"]).await, Value::Simple("RESET".into()));
    assert_eq!(admin.cmd(&["DBSIZE"]).await, noauth);
    let hello = admin
        .cmd(&["HELLO", "2", "AUTH", "x", "wrong-secret"])
        .await;
    assert_eq!(hello, wrongpass);
    // Unauthenticated connections get Redis's small limits.
    let mut big = connect(&node).await;
    let value = "v".repeat(5000);
    big.send_raw(&encode(&[b"SET", b"k", value.as_bytes()]))
        .await;
    assert_eq!(
        big.read_to_close().await,
        vec![err("ERR Protocol error: invalid bulk length")]
    );
}

#[tokio::test]
async fn auth_without_tokens_is_refused_as_redis_does() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    let Value::Error(e) = c.cmd(&["AUTH", "pw"]).await else {
        panic!()
    };
    assert!(
        e.starts_with("ERR AUTH <password> called without any password configured"),
        "{e}"
    );
    let hello = c.cmd(&["HELLO", "3", "AUTH", "default", "anything"]).await;
    assert_eq!(hello.get("proto"), int(3));
}

#[tokio::test]
async fn inline_commands_and_binary_safe_values() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let mut c = connect(&node).await;
    // redis-benchmark's PING_INLINE, and what a telnet user types.
    c.send_raw(b"PING\r\n").await;
    assert_eq!(c.read().await, Value::Simple("PONG".into()));
    c.send_raw(b"set greeting \"hello\\r\\n world\"\nget greeting\r\n")
        .await;
    assert_eq!(c.read().await, Value::ok());
    assert_eq!(c.read().await, bulk("hello\r\n world"));
    c.send_raw(b"  \r\n").await;
    c.send_raw(b"echo 'it\\'s'\r\n").await;
    assert_eq!(c.read().await, bulk("it's"));
    // Every byte value, CR LF included, in keys and values.
    let all: Vec<u8> = (0..=255).collect();
    let key: Vec<u8> = [b"bin\r\n\0".as_slice(), &all].concat();
    assert_eq!(c.cmd_bytes(&[b"SET", &key, &all]).await, Value::ok());
    assert_eq!(c.cmd_bytes(&[b"GET", &key]).await, Value::Bulk(all.clone()));
    let large: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 256) as u8).collect();
    assert_eq!(c.cmd_bytes(&[b"SET", b"large", &large]).await, Value::ok());
    assert_eq!(c.cmd_bytes(&[b"GET", b"large"]).await, Value::Bulk(large));
    assert_eq!(c.cmd_bytes(&[b"STRLEN", &key]).await, int(256));
    // An unbalanced quote is a protocol error, and closes.
    c.send_raw(b"get \"open\r\n").await;
    assert_eq!(
        c.read_to_close().await,
        vec![err("ERR Protocol error: unbalanced quotes in request")]
    );
}
