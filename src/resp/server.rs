//! Connection and server commands: what clients and tools send on their
//! own (`HELLO`, `CLIENT SETINFO`, `COMMAND DOCS`, `CONFIG GET save` ...)
//! answered the way they expect, from the node's real state where it
//! has one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::commands::{self, int_arg, is, lossy, syntax_error, unknown_subcommand, wrong_arity};
use super::glob;
use super::reply::{OK, Proto, Reply};
use super::session::Session;
use crate::proto::{Request, Response};
use crate::types::{AckPolicy, OnTimeout};

/// The Redis version the gateway answers as: the one whose commands and
/// replies it follows. Clients check it to choose features.
pub(crate) const REDIS_VERSION: &str = "7.2.0";

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd {
    Ping,
    Echo,
    Hello,
    Auth,
    Select,
    Quit,
    Reset,
    Client,
    Command,
    Info,
    Config,
    Time,
    Wait,
    Function,
    Cluster,
    ReadOnly,
    ReadWrite,
    /// Cluster-client courtesies with nothing to do here.
    Accept,
}

pub(crate) async fn run(cmd: Cmd, s: &mut Session, a: &[Bytes]) -> Reply {
    let result = match cmd {
        Cmd::Ping => ping(s, a).await,
        Cmd::Echo => Ok(Reply::Bulk(a[1].clone())),
        Cmd::Hello => hello(s, a),
        Cmd::Auth => auth(s, a),
        Cmd::Select => match int_arg(&a[1]) {
            Ok(0) => Ok(OK),
            Ok(_) => Err(Reply::err("ERR DB index is out of range")),
            Err(e) => Err(e),
        },
        Cmd::Quit => {
            s.closing = true;
            Ok(OK)
        }
        Cmd::Reset => {
            s.reset();
            Ok(Reply::Simple("RESET"))
        }
        Cmd::Client => client(s, a),
        Cmd::Command => Ok(command(a)),
        Cmd::Info => info(s, a).await,
        Cmd::Config => config(s, a),
        Cmd::Time => Ok(time()),
        Cmd::Wait => wait(s, a).await,
        Cmd::Function => function(s, a),
        Cmd::Cluster => super::cluster::run(s, a),
        Cmd::ReadOnly | Cmd::ReadWrite => {
            s.readonly = matches!(cmd, Cmd::ReadOnly);
            Ok(OK)
        }
        Cmd::Accept => Ok(OK),
    };
    result.unwrap_or_else(|e| e)
}

async fn ping(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    if a.len() > 2 {
        return Err(wrong_arity("ping"));
    }
    // Through the node, so a PING says it serves.
    s.call(Request::Ping).await?;
    Ok(match a.get(1) {
        Some(message) => Reply::Bulk(message.clone()),
        None => Reply::Simple("PONG"),
    })
}

/// The map HELLO answers with.
fn hello_reply(s: &Session) -> Reply {
    let role = if s.gw.node.repl.is_primary() {
        "master"
    } else {
        "replica"
    };
    let proto = match s.proto {
        Proto::Resp2 => 2,
        Proto::Resp3 => 3,
    };
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
        (Reply::bulk("proto"), Reply::Int(proto)),
        (Reply::bulk("id"), Reply::Int(s.id as i64)),
        (
            Reply::bulk("mode"),
            Reply::bulk(if s.gw.facts.cluster {
                "cluster"
            } else {
                "standalone"
            }),
        ),
        (Reply::bulk("role"), Reply::bulk(role)),
        (Reply::bulk("modules"), Reply::Array(vec![])),
        (
            Reply::bulk("strata_version"),
            Reply::bulk(env!("CARGO_PKG_VERSION")),
        ),
    ])
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`.
fn hello(s: &mut Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let mut proto = s.proto;
    let mut token = None;
    let mut name = None;
    if let Some(version) = a.get(1) {
        proto = match commands::parse_i64(version) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return Err(Reply::err("NOPROTO unsupported protocol version")),
            None => {
                return Err(Reply::err(
                    "ERR Protocol version is not an integer or out of range",
                ));
            }
        };
    }
    let mut i = 2;
    while i < a.len() {
        if is(&a[i], "auth") && i + 2 < a.len() {
            token = Some(a[i + 2].clone());
            i += 3;
        } else if is(&a[i], "setname") && i + 1 < a.len() {
            name = Some(a[i + 1].clone());
            i += 2;
        } else {
            return Err(Reply::err(format!(
                "ERR Syntax error in HELLO option '{}'",
                lossy(&a[i], 128)
            )));
        }
    }
    if let Some(token) = token
        && s.gw.node.auth_required
        && !s.authenticate(&token)
    {
        return Err(wrong_pass());
    }
    if s.role.is_none() {
        return Err(Reply::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
             select the RESP protocol version at the same time",
        ));
    }
    if let Some(name) = name {
        set_name(s, name)?;
    }
    s.proto = proto;
    Ok(hello_reply(s))
}

fn wrong_pass() -> Reply {
    Reply::err("WRONGPASS invalid username-password pair or user is disabled.")
}

/// `AUTH [username] password`: the password is one of the node's tokens;
/// a username is accepted and ignored (tokens have no users).
fn auth(s: &mut Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let token = match a.len() {
        2 => &a[1],
        3 => &a[2],
        _ => return Err(syntax_error()),
    };
    if !s.gw.node.auth_required {
        return Err(Reply::err(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ));
    }
    if s.authenticate(token) {
        Ok(OK)
    } else {
        Err(wrong_pass())
    }
}

fn set_name(s: &mut Session, name: Bytes) -> Result<(), Reply> {
    // Redis's rule: no blanks or control characters.
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(Reply::err(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    s.name = (!name.is_empty()).then_some(name);
    Ok(())
}

/// One line of `CLIENT INFO` / `CLIENT LIST`, in Redis's field order.
fn client_line(s: &Session) -> String {
    let text = |b: &Option<Bytes>| b.as_deref().map(|b| lossy(b, 256)).unwrap_or_default();
    let age = s.since.elapsed().as_secs();
    let resp = if s.proto == Proto::Resp3 { 3 } else { 2 };
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={age} idle=0 flags=N db=0 sub=0 psub=0 \
         ssub=0 multi=-1 cmd=client|info user=default redir=-1 resp={resp} lib-name={} lib-ver={}\n",
        s.id,
        s.peer,
        s.local,
        text(&s.name),
        text(&s.lib_name),
        text(&s.lib_ver),
    )
}

fn client(s: &mut Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let sub = &a[1];
    let arity = |n: usize| {
        if a.len() == n {
            Ok(())
        } else {
            Err(wrong_arity(&format!(
                "client|{}",
                lossy(sub, 32).to_ascii_lowercase()
            )))
        }
    };
    match () {
        () if is(sub, "setname") => {
            arity(3)?;
            set_name(s, a[2].clone())?;
            Ok(OK)
        }
        () if is(sub, "getname") => {
            arity(2)?;
            Ok(s.name.clone().map_or(Reply::Null, Reply::Bulk))
        }
        () if is(sub, "id") => {
            arity(2)?;
            Ok(Reply::Int(s.id as i64))
        }
        () if is(sub, "info") => {
            arity(2)?;
            Ok(Reply::Text(client_line(s)))
        }
        () if is(sub, "list") => Ok(Reply::Text(client_line(s))),
        () if is(sub, "setinfo") => {
            arity(4)?;
            let value = Some(a[3].clone());
            match &a[2] {
                attr if is(attr, "lib-name") => s.lib_name = value,
                attr if is(attr, "lib-ver") => s.lib_ver = value,
                attr => {
                    return Err(Reply::err(format!(
                        "ERR Unrecognized option '{}'",
                        lossy(attr, 128)
                    )));
                }
            }
            Ok(OK)
        }
        // strata's own: the ack policy of this connection's writes.
        () if is(sub, "durability") => durability(s, &a[2..]),
        // Flags of server-side features strata does not have: accepted.
        () if is(sub, "no-evict") || is(sub, "no-touch") => {
            arity(3)?;
            Ok(OK)
        }
        () => Err(unknown_subcommand("client", sub)),
    }
}

/// `CLIENT DURABILITY [POLICY|default]`: shows, or sets, the ack policy of
/// this connection's writes (`async`, `semi-sync:K[:MS[:fail|degrade]]`,
/// `sync[:MS]`, as in the node's config); `default` goes back to the
/// node's `replication.default_ack`.
fn durability(s: &mut Session, a: &[Bytes]) -> Result<Reply, Reply> {
    match a {
        [] => Ok(Reply::Bulk(Bytes::from(
            s.ack.map_or("default".to_string(), |p| p.to_string()),
        ))),
        [policy] if is(policy, "default") => {
            s.ack = None;
            Ok(OK)
        }
        [policy] => {
            let text = std::str::from_utf8(policy)
                .map_err(|_| Reply::err("ERR the durability policy is not UTF-8"))?;
            let policy = text.parse::<AckPolicy>().map_err(|e| {
                Reply::err(format!(
                    "ERR invalid durability policy '{}': {e}",
                    lossy(policy, 64)
                ))
            })?;
            s.ack = Some(policy);
            Ok(OK)
        }
        _ => Err(wrong_arity("client|durability")),
    }
}

/// `COMMAND INFO`'s ten fields for one command (Redis 7's layout).
fn command_info(spec: &commands::Spec) -> Reply {
    let flags = spec.flags.iter().map(|f| Reply::Simple(f)).collect();
    let (first, last, step) = spec.keys;
    Reply::Array(vec![
        Reply::bulk(spec.name),
        Reply::Int(spec.arity),
        Reply::Array(flags),
        Reply::Int(first),
        Reply::Int(last),
        Reply::Int(step),
        Reply::Array(vec![Reply::Simple(acl_category(spec.group))]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
    ])
}

/// The ACL category Redis files a command group under.
fn acl_category(group: &str) -> &'static str {
    match group {
        "string" => "@string",
        "generic" => "@keyspace",
        "connection" => "@connection",
        "scripting" => "@scripting",
        "list" => "@list",
        "set" => "@set",
        "hash" => "@hash",
        "sorted-set" => "@sortedset",
        _ => "@admin",
    }
}

fn command_docs(spec: &commands::Spec) -> Reply {
    Reply::Map(vec![
        (Reply::bulk("summary"), Reply::bulk(spec.summary)),
        (Reply::bulk("since"), Reply::bulk("1.0.0")),
        (Reply::bulk("group"), Reply::bulk(spec.group)),
    ])
}

fn command(a: &[Bytes]) -> Reply {
    let named = |names: &[Bytes]| -> Vec<&'static commands::Spec> {
        if names.is_empty() {
            commands::TABLE.iter().collect()
        } else {
            names.iter().filter_map(|n| commands::lookup(n)).collect()
        }
    };
    let Some(sub) = a.get(1) else {
        return Reply::Array(commands::TABLE.iter().map(command_info).collect());
    };
    match () {
        () if is(sub, "count") => Reply::Int(commands::TABLE.len() as i64),
        () if is(sub, "list") => Reply::Array(
            commands::TABLE
                .iter()
                .map(|spec| Reply::bulk(spec.name))
                .collect(),
        ),
        // Unknown names answer nil, in their places.
        () if is(sub, "info") && a.len() > 2 => Reply::Array(
            a[2..]
                .iter()
                .map(|n| commands::lookup(n).map_or(Reply::Null, command_info))
                .collect(),
        ),
        () if is(sub, "info") => Reply::Array(commands::TABLE.iter().map(command_info).collect()),
        () if is(sub, "docs") => Reply::Map(
            named(&a[2..])
                .into_iter()
                .map(|spec| (Reply::bulk(spec.name), command_docs(spec)))
                .collect(),
        ),
        () => unknown_subcommand("command", sub),
    }
}

/// INFO's sections, in Redis's order, then strata's own.
async fn info(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let Response::Info(node) = s.call(Request::Info).await? else {
        return Err(Reply::err("ERR internal error: INFO got no info"));
    };
    let wanted = |section: &str| {
        a.len() == 1
            || a[1..]
                .iter()
                .any(|w| is(w, section) || is(w, "all") || is(w, "everything") || is(w, "default"))
    };
    let stat = |name: &str| {
        node.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "0".into())
    };
    let g = &s.gw;
    let primary = g.node.repl.is_primary();
    let sections: [(&str, String); 7] = [
        (
            "server",
            format!(
                "redis_version:{REDIS_VERSION}\r\nstrata_version:{}\r\nredis_mode:standalone\r\n\
                 os:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                g.listen.port(),
                g.started.elapsed().as_secs()
            ),
        ),
        (
            "clients",
            format!(
                "connected_clients:{}\r\nmaxclients:{}\r\n",
                g.metrics.open.get(),
                g.facts.max_clients
            ),
        ),
        (
            "memory",
            format!(
                "used_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\n",
                stat("memory_bytes"),
                g.facts.memory_budget
            ),
        ),
        (
            "persistence",
            "loading:0\r\naof_enabled:0\r\nrdb_bgsave_in_progress:0\r\naof_rewrite_in_progress:0\r\n"
                .to_string(),
        ),
        (
            "replication",
            format!(
                "role:{}\r\n",
                if primary { "master" } else { "slave" }
            ),
        ),
        (
            "cluster",
            format!("cluster_enabled:{}\r\n", u8::from(g.facts.cluster)),
        ),
        (
            "strata",
            node.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect(),
        ),
    ];
    let mut text = String::new();
    for (name, body) in sections {
        if wanted(name) {
            let title = format!("{}{}", name[..1].to_ascii_uppercase(), &name[1..]);
            text.push_str(&format!("# {title}\r\n{body}\r\n"));
        }
    }
    Ok(Reply::Text(text))
}

/// The settings `CONFIG GET` reports: what clients and tools ask for.
fn settings(s: &Session) -> Vec<(&'static str, String)> {
    let f = &s.gw.facts;
    let appendfsync = match f.fsync.as_str() {
        "always" => "always",
        "never" => "no",
        _ => "everysec",
    };
    vec![
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("appendfsync", appendfsync.into()),
        ("maxmemory", f.memory_budget.to_string()),
        ("maxmemory-policy", "noeviction".into()),
        ("databases", "1".into()),
        ("maxclients", f.max_clients.to_string()),
        (
            "timeout",
            f.idle_timeout.map_or(0, |t| t.as_secs()).to_string(),
        ),
        ("port", s.gw.listen.port().to_string()),
        ("bind", s.gw.listen.ip().to_string()),
        (
            "proto-max-bulk-len",
            s.gw.node.limits.max_value_bytes.to_string(),
        ),
        (
            "cluster-enabled",
            if f.cluster { "yes" } else { "no" }.into(),
        ),
        ("dir", f.data_dir.clone()),
    ]
}

/// Parameters `CONFIG SET` accepts and ignores: tuning of Redis's own
/// machinery (snapshots, encodings, rehashing) that strata does not have,
/// so that ignoring a value changes no behaviour a client relies on.
const IGNORED_SETTINGS: &[&str] = &[
    "save",
    "appendonly",
    "activerehashing",
    "hz",
    "dynamic-hz",
    "lazyfree-lazy-user-del",
    "lazyfree-lazy-user-flush",
    "lazyfree-lazy-expire",
    "lazyfree-lazy-server-del",
    "latency-tracking",
    "loglevel",
    "slowlog-log-slower-than",
    "slowlog-max-len",
    "lua-time-limit",
    "busy-reply-threshold",
    "list-max-ziplist-size",
    "list-max-listpack-size",
    "hash-max-ziplist-entries",
    "hash-max-listpack-entries",
    "set-max-intset-entries",
    "set-max-listpack-entries",
    "zset-max-ziplist-entries",
    "zset-max-listpack-entries",
];

fn config(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let sub = &a[1];
    match () {
        () if is(sub, "get") => {
            if a.len() < 3 {
                return Err(wrong_arity("config|get"));
            }
            let pairs = settings(s)
                .into_iter()
                .filter(|(name, _)| {
                    a[2..]
                        .iter()
                        .any(|p| glob::matches_nocase(p, name.as_bytes(), true))
                })
                .map(|(name, value)| (Reply::bulk(name), Reply::bulk(value)))
                .collect();
            Ok(Reply::Map(pairs))
        }
        () if is(sub, "set") => {
            if a.len() < 4 || !a.len().is_multiple_of(2) {
                return Err(wrong_arity("config|set"));
            }
            s.require_admin("config set")?;
            for pair in a[2..].chunks_exact(2) {
                let known = IGNORED_SETTINGS.iter().any(|p| is(&pair[0], p));
                if !known {
                    return Err(Reply::err(format!(
                        "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                        lossy(&pair[0], 128)
                    )));
                }
            }
            Ok(OK)
        }
        () if is(sub, "resetstat") => Ok(OK),
        () => Err(unknown_subcommand("config", sub)),
    }
}

fn time() -> Reply {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ])
}

/// `WAIT numreplicas timeout`: how many replicas have every write this
/// node committed so far, waiting up to `timeout` ms for `numreplicas`.
/// A timeout of 0 (Redis: forever) waits at most the request timeout.
async fn wait(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let replicas = int_arg(&a[1])?;
    let timeout = int_arg(&a[2])?;
    if timeout < 0 {
        return Err(Reply::err("ERR timeout is negative"));
    }
    let cap = s.gw.facts.request_timeout;
    let timeout_ms = match timeout {
        0 => cap,
        ms => Duration::from_millis(ms as u64).min(cap),
    }
    .as_millis() as u64;
    let policy = AckPolicy::SemiSync {
        replicas: u32::try_from(replicas.max(0)).unwrap_or(u32::MAX),
        timeout_ms,
        on_timeout: OnTimeout::Degrade,
    };
    // Everything committed so far covers this connection's writes.
    let seq = s.gw.node.store.applied_seq();
    match s.gw.node.repl.await_acks(seq, policy).await {
        Ok(acked) => Ok(Reply::Int(acked.replicas.into())),
        Err(e) => Err(super::reply::from_error(&e)),
    }
}

fn function(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let sub = &a[1];
    if !is(sub, "flush") {
        return Err(unknown_subcommand("function", sub));
    }
    match &a[2..] {
        [] => {}
        [mode] if is(mode, "async") || is(mode, "sync") => {}
        _ => return Err(syntax_error()),
    }
    s.require_admin("function flush")?;
    // There are no functions to flush.
    Ok(OK)
}
