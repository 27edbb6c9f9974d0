//! The command table: every command the gateway knows, with the arity,
//! flags and key positions `COMMAND` reports, and the checks every
//! command passes before its handler (existence, arity, authentication),
//! in Redis's order and with its texts.

use std::collections::HashMap;
use std::sync::LazyLock;

use bytes::Bytes;

use super::members::Show;
use super::reply::Reply;
use super::session::Session;
use super::{keys, lists, members, server, sorted, strings};
use crate::types::{End, ValueKind};

/// Which handler runs a command.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Run {
    Strings(strings::Cmd),
    Keys(keys::Cmd),
    Server(server::Cmd),
    Lists(lists::Cmd),
    Members(members::Cmd),
    Sorted(sorted::Cmd),
}

/// One command as `COMMAND INFO` describes it.
#[derive(Debug)]
pub(crate) struct Spec {
    /// Lower case, as Redis reports names.
    pub name: &'static str,
    /// Exact argument count with the name (`n`), or at least `-n`.
    pub arity: i64,
    pub flags: &'static [&'static str],
    /// First key, last key (negative: from the end) and step; 0 0 0 for none.
    pub keys: (i64, i64, i64),
    /// `COMMAND DOCS` group.
    pub group: &'static str,
    pub summary: &'static str,
    pub run: Run,
}

const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const D: &[&str] = &["write"];
const DF: &[&str] = &["write", "fast"];
const R: &[&str] = &["readonly"];
const RF: &[&str] = &["readonly", "fast"];
const CONN: &[&str] = &["fast", "stale", "loading"];
const NOAUTH: &[&str] = &["noscript", "loading", "stale", "fast", "no_auth"];
const ADMIN: &[&str] = &["admin", "noscript", "loading", "stale"];
const ONE: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);
const NONE: (i64, i64, i64) = (0, 0, 0);
const PAIRS: (i64, i64, i64) = (1, -1, 2);

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $summary:literal, $run:expr) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            summary: $summary,
            run: $run,
        }
    };
}

use keys::Cmd as K;
use lists::Cmd as L;
use members::Cmd as M;
use server::Cmd as S;
use sorted::Cmd as Z;
use strings::Cmd as T;

/// Every command, in `COMMAND`'s order: one line each.
#[rustfmt::skip]
pub(crate) static TABLE: &[Spec] = &[
    // Strings.
    spec!("get", 2, RF, ONE, "string", "Returns the string value of a key.", Run::Strings(T::Get)),
    spec!("set", -3, W, ONE, "string", "Sets the string value of a key, with options.", Run::Strings(T::Set)),
    spec!("setnx", 3, WF, ONE, "string", "Sets a key only when it does not exist.", Run::Strings(T::SetNx)),
    spec!("setex", 4, W, ONE, "string", "Sets a key with a TTL in seconds.", Run::Strings(T::SetEx)),
    spec!("psetex", 4, W, ONE, "string", "Sets a key with a TTL in milliseconds.", Run::Strings(T::PSetEx)),
    spec!("getset", 3, WF, ONE, "string", "Sets a key, returning its old value.", Run::Strings(T::GetSet)),
    spec!("getdel", 2, DF, ONE, "string", "Returns a key's value and deletes it.", Run::Strings(T::GetDel)),
    spec!("getex", -2, DF, ONE, "string", "Returns a key's value and changes its TTL.", Run::Strings(T::GetEx)),
    spec!("mget", -2, RF, ALL, "string", "Returns the values of keys.", Run::Strings(T::MGet)),
    spec!("mset", -3, W, PAIRS, "string", "Sets several keys atomically.", Run::Strings(T::MSet)),
    spec!("msetnx", -3, W, PAIRS, "string", "Sets several keys only when none exists.", Run::Strings(T::MSetNx)),
    spec!("incr", 2, WF, ONE, "string", "Adds one to a key's integer.", Run::Strings(T::Incr)),
    spec!("incrby", 3, WF, ONE, "string", "Adds to a key's integer.", Run::Strings(T::IncrBy)),
    spec!("decr", 2, WF, ONE, "string", "Subtracts one from a key's integer.", Run::Strings(T::Decr)),
    spec!("decrby", 3, WF, ONE, "string", "Subtracts from a key's integer.", Run::Strings(T::DecrBy)),
    spec!("append", 3, WF, ONE, "string", "Appends to a key's value.", Run::Strings(T::Append)),
    spec!("strlen", 2, RF, ONE, "string", "Returns the length of a key's value.", Run::Strings(T::Strlen)),
    spec!("getrange", 4, R, ONE, "string", "Returns a substring of a key's value.", Run::Strings(T::GetRange)),
    spec!("substr", 4, R, ONE, "string", "Returns a substring of a key's value.", Run::Strings(T::GetRange)),
    spec!("setrange", 4, W, ONE, "string", "Overwrites part of a key's value.", Run::Strings(T::SetRange)),
    // The key space.
    spec!("del", -2, D, ALL, "generic", "Deletes keys.", Run::Keys(K::Del)),
    spec!("unlink", -2, DF, ALL, "generic", "Deletes keys.", Run::Keys(K::Del)),
    spec!("exists", -2, RF, ALL, "generic", "Counts the keys that exist.", Run::Keys(K::Exists)),
    spec!("expire", -3, DF, ONE, "generic", "Sets a key's TTL in seconds.", Run::Keys(K::Expire(keys::ExpireForm::SECONDS))),
    spec!("pexpire", -3, DF, ONE, "generic", "Sets a key's TTL in milliseconds.", Run::Keys(K::Expire(keys::ExpireForm::MILLIS))),
    spec!("expireat", -3, DF, ONE, "generic", "Sets a key's expiry as a Unix time in seconds.", Run::Keys(K::Expire(keys::ExpireForm::SECONDS_AT))),
    spec!("pexpireat", -3, DF, ONE, "generic", "Sets a key's expiry as a Unix time in milliseconds.", Run::Keys(K::Expire(keys::ExpireForm::MILLIS_AT))),
    spec!("ttl", 2, RF, ONE, "generic", "Returns a key's TTL in seconds.", Run::Keys(K::Ttl { millis: false, at: false })),
    spec!("pttl", 2, RF, ONE, "generic", "Returns a key's TTL in milliseconds.", Run::Keys(K::Ttl { millis: true, at: false })),
    spec!("expiretime", 2, RF, ONE, "generic", "Returns a key's expiry as a Unix time in seconds.", Run::Keys(K::Ttl { millis: false, at: true })),
    spec!("pexpiretime", 2, RF, ONE, "generic", "Returns a key's expiry as a Unix time in milliseconds.", Run::Keys(K::Ttl { millis: true, at: true })),
    spec!("persist", 2, DF, ONE, "generic", "Removes a key's TTL.", Run::Keys(K::Persist)),
    spec!("type", 2, RF, ONE, "generic", "Returns the type of a key's value.", Run::Keys(K::Type)),
    spec!("scan", -2, R, NONE, "generic", "Iterates over the key space.", Run::Keys(K::Scan)),
    spec!("keys", 2, R, NONE, "generic", "Returns the keys matching a pattern.", Run::Keys(K::Keys)),
    spec!("dbsize", 1, RF, NONE, "server", "Returns the number of keys.", Run::Keys(K::DbSize)),
    spec!("flushdb", -1, &["write", "admin"], NONE, "server", "Deletes every key.", Run::Keys(K::Flush)),
    spec!("flushall", -1, &["write", "admin"], NONE, "server", "Deletes every key.", Run::Keys(K::Flush)),
    // The connection and the server.
    spec!("ping", -1, CONN, NONE, "connection", "Returns PONG, or its argument.", Run::Server(S::Ping)),
    spec!("echo", 2, CONN, NONE, "connection", "Returns its argument.", Run::Server(S::Echo)),
    spec!("hello", -1, NOAUTH, NONE, "connection", "Chooses the protocol, and authenticates.", Run::Server(S::Hello)),
    spec!("auth", -2, NOAUTH, NONE, "connection", "Authenticates the connection.", Run::Server(S::Auth)),
    spec!("select", 2, CONN, NONE, "connection", "Selects database 0, the only one.", Run::Server(S::Select)),
    spec!("quit", -1, NOAUTH, NONE, "connection", "Closes the connection.", Run::Server(S::Quit)),
    spec!("reset", 1, NOAUTH, NONE, "connection", "Resets the connection.", Run::Server(S::Reset)),
    spec!("client", -2, CONN, NONE, "connection", "Names and describes the connection.", Run::Server(S::Client)),
    spec!("readonly", 1, CONN, NONE, "cluster", "Lets a replica serve this connection's reads of its shard's slots.", Run::Server(S::ReadOnly)),
    spec!("readwrite", 1, CONN, NONE, "cluster", "Sends this connection's reads to each slot's primary again.", Run::Server(S::ReadWrite)),
    spec!("asking", 1, CONN, NONE, "cluster", "Accepted: strata never answers -ASK.", Run::Server(S::Accept)),
    spec!("command", -1, &["loading", "stale"], NONE, "server", "Describes the commands.", Run::Server(S::Command)),
    spec!("info", -1, &["loading", "stale"], NONE, "server", "Returns information about the node.", Run::Server(S::Info)),
    spec!("config", -2, &["loading", "stale"], NONE, "server", "Reads settings; accepts a few harmless ones.", Run::Server(S::Config)),
    spec!("time", 1, CONN, NONE, "server", "Returns the server's time.", Run::Server(S::Time)),
    spec!("wait", 3, &[], NONE, "generic", "Waits for replicas to acknowledge the writes so far.", Run::Server(S::Wait)),
    spec!("function", -2, ADMIN, NONE, "scripting", "FUNCTION FLUSH: there are no functions.", Run::Server(S::Function)),
    spec!("cluster", -2, &["loading", "stale"], NONE, "cluster", "Describes the cluster.", Run::Server(S::Cluster)),
    // Lists.
    spec!("lpush", -3, WF, ONE, "list", "Prepends values to a list.", Run::Lists(L::Push { end: End::Left, only_if_exists: false })),
    spec!("rpush", -3, WF, ONE, "list", "Appends values to a list.", Run::Lists(L::Push { end: End::Right, only_if_exists: false })),
    spec!("lpushx", -3, WF, ONE, "list", "Prepends values to an existing list.", Run::Lists(L::Push { end: End::Left, only_if_exists: true })),
    spec!("rpushx", -3, WF, ONE, "list", "Appends values to an existing list.", Run::Lists(L::Push { end: End::Right, only_if_exists: true })),
    spec!("lpop", -2, WF, ONE, "list", "Takes values from the head of a list.", Run::Lists(L::Pop(End::Left))),
    spec!("rpop", -2, WF, ONE, "list", "Takes values from the tail of a list.", Run::Lists(L::Pop(End::Right))),
    spec!("llen", 2, RF, ONE, "list", "Returns the length of a list.", Run::Lists(L::Len)),
    spec!("lrange", 4, R, ONE, "list", "Returns a range of a list's values.", Run::Lists(L::Range)),
    spec!("lindex", 3, R, ONE, "list", "Returns the value at a position of a list.", Run::Lists(L::Index)),
    // Sets.
    spec!("sadd", -3, WF, ONE, "set", "Adds members to a set.", Run::Members(M::SetAdd)),
    spec!("srem", -3, WF, ONE, "set", "Removes members from a set.", Run::Members(M::Remove(ValueKind::Set))),
    spec!("spop", -2, WF, ONE, "set", "Takes members from a set (the first in byte order).", Run::Members(M::Pop)),
    spec!("smembers", 2, R, ONE, "set", "Returns a set's members.", Run::Members(M::All(ValueKind::Set, Show::Names))),
    spec!("sismember", 3, RF, ONE, "set", "Whether a member is in a set.", Run::Members(M::Has(ValueKind::Set))),
    spec!("smismember", -3, RF, ONE, "set", "Whether each member is in a set.", Run::Members(M::MHas)),
    spec!("scard", 2, RF, ONE, "set", "Returns the number of members of a set.", Run::Members(M::Count(ValueKind::Set))),
    // Hashes.
    spec!("hset", -4, WF, ONE, "hash", "Sets fields of a hash.", Run::Members(M::HashSet { ok: false, only_new: false })),
    spec!("hmset", -4, WF, ONE, "hash", "Sets fields of a hash.", Run::Members(M::HashSet { ok: true, only_new: false })),
    spec!("hsetnx", 4, WF, ONE, "hash", "Sets a field of a hash only when it is new.", Run::Members(M::HashSet { ok: false, only_new: true })),
    spec!("hget", 3, RF, ONE, "hash", "Returns the value of a field of a hash.", Run::Members(M::Get)),
    spec!("hmget", -3, RF, ONE, "hash", "Returns the values of fields of a hash.", Run::Members(M::MGet)),
    spec!("hgetall", 2, R, ONE, "hash", "Returns every field and value of a hash.", Run::Members(M::All(ValueKind::Hash, Show::Pairs))),
    spec!("hkeys", 2, R, ONE, "hash", "Returns the fields of a hash.", Run::Members(M::All(ValueKind::Hash, Show::Names))),
    spec!("hvals", 2, R, ONE, "hash", "Returns the values of a hash.", Run::Members(M::All(ValueKind::Hash, Show::Values))),
    spec!("hdel", -3, WF, ONE, "hash", "Deletes fields of a hash.", Run::Members(M::Remove(ValueKind::Hash))),
    spec!("hlen", 2, RF, ONE, "hash", "Returns the number of fields of a hash.", Run::Members(M::Count(ValueKind::Hash))),
    spec!("hexists", 3, RF, ONE, "hash", "Whether a field is in a hash.", Run::Members(M::Has(ValueKind::Hash))),
    spec!("hincrby", 4, WF, ONE, "hash", "Adds to the integer in a field of a hash.", Run::Members(M::IncrBy)),
    spec!("hstrlen", 3, RF, ONE, "hash", "Returns the length of a field's value.", Run::Members(M::StrLen)),
    // Sorted sets.
    spec!("zadd", -4, WF, ONE, "sorted-set", "Adds members to a sorted set, or updates their scores.", Run::Sorted(Z::Add)),
    spec!("zincrby", 4, WF, ONE, "sorted-set", "Adds to the score of a member of a sorted set.", Run::Sorted(Z::IncrBy)),
    spec!("zscore", 3, RF, ONE, "sorted-set", "Returns the score of a member of a sorted set.", Run::Sorted(Z::Score)),
    spec!("zmscore", -3, RF, ONE, "sorted-set", "Returns the scores of members of a sorted set.", Run::Sorted(Z::MScore)),
    spec!("zcard", 2, RF, ONE, "sorted-set", "Returns the number of members of a sorted set.", Run::Sorted(Z::Card)),
    spec!("zrem", -3, WF, ONE, "sorted-set", "Removes members from a sorted set.", Run::Sorted(Z::Rem)),
    spec!("zpopmin", -2, WF, ONE, "sorted-set", "Takes the members with the lowest scores.", Run::Sorted(Z::Pop(End::Left))),
    spec!("zpopmax", -2, WF, ONE, "sorted-set", "Takes the members with the highest scores.", Run::Sorted(Z::Pop(End::Right))),
    spec!("zrange", -4, R, ONE, "sorted-set", "Returns members of a sorted set by rank.", Run::Sorted(Z::Range)),
    spec!("zrevrange", -4, R, ONE, "sorted-set", "Returns members of a sorted set by rank, highest first.", Run::Sorted(Z::RevRange)),
];

static BY_NAME: LazyLock<HashMap<&'static str, &'static Spec>> =
    LazyLock::new(|| TABLE.iter().map(|spec| (spec.name, spec)).collect());

/// The command named `name`, whatever its case.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut lower = [0u8; 32];
    let lower = lower.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    BY_NAME.get(std::str::from_utf8(lower).ok()?).copied()
}

/// Runs one command: the checks Redis makes first, in its order, then
/// the handler.
pub(crate) async fn execute(s: &mut Session, args: &[Bytes]) -> Reply {
    let Some(spec) = args.first().and_then(|name| lookup(name)) else {
        return unknown_command(args);
    };
    let n = args.len() as i64;
    if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
        return wrong_arity(spec.name);
    }
    if s.role.is_none() && !spec.flags.contains(&"no_auth") {
        return Reply::err("NOAUTH Authentication required.");
    }
    s.last_command = spec.name;
    if let Err(redirect) = super::cluster::route(s, spec, args) {
        return redirect;
    }
    match spec.run {
        Run::Strings(cmd) => strings::run(cmd, s, args).await,
        Run::Keys(cmd) => keys::run(cmd, s, args).await,
        Run::Server(cmd) => server::run(cmd, s, args).await,
        Run::Lists(cmd) => lists::run(cmd, s, args).await,
        Run::Members(cmd) => members::run(cmd, s, args).await,
        Run::Sorted(cmd) => sorted::run(cmd, s, args).await,
    }
}

/// Redis's exact text, which clients (Lettuce among them) match to fall back.
pub(crate) fn unknown_command(args: &[Bytes]) -> Reply {
    let name = args.first().map(|n| lossy(n, 128)).unwrap_or_default();
    let mut rest = String::new();
    for arg in args.iter().skip(1) {
        if rest.len() >= 128 {
            break;
        }
        let room = 128 - rest.len();
        rest.push_str(&format!("'{}' ", lossy(arg, room)));
    }
    Reply::err(format!(
        "ERR unknown command '{name}', with args beginning with: {rest}"
    ))
}

/// Redis's text for a subcommand it does not know.
pub(crate) fn unknown_subcommand(command: &str, sub: &[u8]) -> Reply {
    Reply::err(format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        lossy(sub, 128),
        command.to_ascii_uppercase()
    ))
}

pub(crate) fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub(crate) fn syntax_error() -> Reply {
    Reply::err("ERR syntax error")
}

pub(crate) fn not_an_integer() -> Reply {
    Reply::err("ERR value is not an integer or out of range")
}

/// At most `max` bytes of `b` as text, for error messages.
pub(crate) fn lossy(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

/// Whether `arg` is `word`, ASCII case ignored.
pub(crate) fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// A decimal `i64` as Redis's `string2ll` reads one: no sign but `-`, no
/// blanks, no leading zeros.
pub(crate) fn parse_i64(arg: &[u8]) -> Option<i64> {
    let digits = arg.strip_prefix(b"-").unwrap_or(arg);
    let canonical = match digits {
        [b'0'] => arg.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical || arg.len() > 20 {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// [`parse_i64`], or Redis's error for a bad integer.
pub(crate) fn int_arg(arg: &[u8]) -> Result<i64, Reply> {
    parse_i64(arg).ok_or_else(not_an_integer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_lower_case_and_once() {
        assert_eq!(BY_NAME.len(), TABLE.len());
        for spec in TABLE {
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(lookup(spec.name.to_ascii_uppercase().as_bytes()).is_some());
        }
        assert!(lookup(b"nosuch").is_none());
        assert!(lookup(&[b'a'; 100]).is_none());
    }

    #[test]
    fn integers_read_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn unknown_command_text_is_redis_s() {
        let args: Vec<Bytes> = ["foo", "a", "b"].iter().map(|s| Bytes::from(*s)).collect();
        assert_eq!(
            unknown_command(&args),
            Reply::err("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
        assert_eq!(
            unknown_command(&args[..1]),
            Reply::err("ERR unknown command 'foo', with args beginning with: ")
        );
    }
}
