//! Key-space commands. `SCAN` numbers strata's cursors (which are keys)
//! in a node-wide table of recent ones; `KEYS`, `DBSIZE` and `FLUSHALL`
//! walk every page of a scan, so they cost time in the number of keys,
//! and `FLUSHALL` deletes key by key (not one atomic step).

use bytes::Bytes;

use super::commands::{int_arg, is, lossy, parse_i64, syntax_error};
use super::glob;
use super::reply::{OK, Reply};
use super::session::{Change, Session};
use crate::proto::{DeadlineState, TtlState};
use crate::types::{Condition, Expiry, ValueKind};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd {
    Del,
    Exists,
    Expire(ExpireForm),
    Ttl { millis: bool, at: bool },
    Persist,
    Type,
    Scan,
    Keys,
    DbSize,
    Flush,
}

/// How an EXPIRE-family command reads its time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExpireForm {
    scale: i64,
    absolute: bool,
    name: &'static str,
}

impl ExpireForm {
    pub const SECONDS: ExpireForm = ExpireForm {
        scale: 1000,
        absolute: false,
        name: "expire",
    };
    pub const MILLIS: ExpireForm = ExpireForm {
        scale: 1,
        absolute: false,
        name: "pexpire",
    };
    pub const SECONDS_AT: ExpireForm = ExpireForm {
        scale: 1000,
        absolute: true,
        name: "expireat",
    };
    pub const MILLIS_AT: ExpireForm = ExpireForm {
        scale: 1,
        absolute: true,
        name: "pexpireat",
    };
}

/// Keys a `SCAN` page holds by default (Redis's `COUNT` default).
const SCAN_COUNT: u32 = 10;

pub(crate) async fn run(cmd: Cmd, s: &mut Session, a: &[Bytes]) -> Reply {
    let result = match cmd {
        Cmd::Del => del(s, &a[1..]).await,
        Cmd::Exists => s.exists(&a[1..]).await.map(Reply::Int),
        Cmd::Expire(how) => expire(s, a, how).await,
        Cmd::Ttl { millis, at } => ttl(s, &a[1], millis, at).await,
        Cmd::Persist => s.persist(a[1].clone()).await.map(|p| Reply::Int(p.into())),
        Cmd::Type => s
            .kind(a[1].clone())
            .await
            .map(|kind| Reply::Simple(kind.map_or("none", ValueKind::name))),
        Cmd::Scan => scan(s, a).await,
        Cmd::Keys => keys(s, &a[1]).await,
        Cmd::DbSize => db_size(s).await,
        Cmd::Flush => flush(s, a).await,
    };
    result.unwrap_or_else(|e| e)
}

async fn del(s: &Session, keys: &[Bytes]) -> Result<Reply, Reply> {
    let mut deleted = 0;
    for key in keys {
        if s.delete(key.clone(), Condition::Always).await? == Some(true) {
            deleted += 1;
        }
    }
    Ok(Reply::Int(deleted))
}

/// NX, XX, GT and LT of the EXPIRE family (Redis 7).
#[derive(Debug, Clone, Copy, Default)]
struct ExpireIf {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl ExpireIf {
    fn parse(args: &[Bytes]) -> Result<ExpireIf, Reply> {
        let mut f = ExpireIf::default();
        for arg in args {
            match () {
                () if is(arg, "nx") => f.nx = true,
                () if is(arg, "xx") => f.xx = true,
                () if is(arg, "gt") => f.gt = true,
                () if is(arg, "lt") => f.lt = true,
                () => {
                    return Err(Reply::err(format!(
                        "ERR Unsupported option {}",
                        lossy(arg, 128)
                    )));
                }
            }
        }
        if f.nx && (f.xx || f.gt || f.lt) {
            return Err(Reply::err(
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            ));
        }
        if f.gt && f.lt {
            return Err(Reply::err(
                "ERR GT and LT options at the same time are not compatible",
            ));
        }
        Ok(f)
    }

    fn any(&self) -> bool {
        self.nx || self.xx || self.gt || self.lt
    }

    /// Whether a key with `current` ms to live (`None`: no TTL, which
    /// counts as infinite) takes a new TTL of `new` ms.
    fn allows(&self, current: Option<u64>, new: i64) -> bool {
        let current = current.map(|ms| ms as i64);
        !((self.nx && current.is_some())
            || (self.xx && current.is_none())
            || (self.gt && current.is_none_or(|c| new <= c))
            || (self.lt && current.is_some_and(|c| new >= c)))
    }
}

async fn expire(s: &Session, a: &[Bytes], how: ExpireForm) -> Result<Reply, Reply> {
    let n = int_arg(&a[2])?;
    let flags = ExpireIf::parse(&a[3..])?;
    let invalid = || Reply::err(format!("ERR invalid expire time in '{}' command", how.name));
    let now = s.now_ms() as i64;
    let ms = n.checked_mul(how.scale).ok_or_else(invalid)?;
    let at = if how.absolute {
        ms
    } else {
        ms.checked_add(now).ok_or_else(invalid)?
    };
    // An absolute time far in the past must not overflow: it is past.
    let in_ms = at.saturating_sub(now);
    // What is sent: the deadline the client named, or its TTL.
    let expiry = match (in_ms, how.absolute) {
        (..=0, _) => None,
        (_, true) => Some(Expiry::AtMs(at as u64)),
        (_, false) => Some(Expiry::InMs(in_ms as u64)),
    };
    let key = &a[1];
    if !flags.any() {
        return Ok(Reply::Int(expire_with(s, key, expiry).await?.into()));
    }
    let collection = s.kind(key.clone()).await?;
    if collection.is_some_and(|kind| kind != ValueKind::String) {
        // A collection has no version a write could be conditioned on: its
        // TTL is read, then set (a concurrent EXPIRE may come in between).
        let current = match s.ttl(key.clone()).await? {
            TtlState::Missing => return Ok(Reply::Int(0)),
            TtlState::Persistent => None,
            TtlState::ExpiresIn(ms) => Some(ms),
        };
        let took = flags.allows(current, in_ms) && expire_with(s, key, expiry).await?;
        return Ok(Reply::Int(took.into()));
    }
    s.update(key, |current| {
        let Some(e) = current else {
            return Ok((Change::Keep, Reply::Int(0)));
        };
        if !flags.allows(e.ttl_ms, in_ms) {
            return Ok((Change::Keep, Reply::Int(0)));
        }
        let change = match expiry {
            None => Change::Delete,
            Some(expiry) => Change::Write {
                value: e.value.clone(),
                expiry,
            },
        };
        Ok((change, Reply::Int(1)))
    })
    .await
}

/// Gives `key` its `expiry`, deleting it when there is none left (a
/// time not in the future, as Redis does); whether it existed.
async fn expire_with(s: &Session, key: &Bytes, expiry: Option<Expiry>) -> Result<bool, Reply> {
    match expiry {
        None => Ok(s.delete(key.clone(), Condition::Always).await? == Some(true)),
        Some(expiry) => s.expire(key.clone(), expiry).await,
    }
}

/// TTL and PTTL, or with `at` EXPIRETIME and PEXPIRETIME (read as the
/// deadline the node holds, not as a TTL added to this node's clock).
async fn ttl(s: &Session, key: &Bytes, millis: bool, at: bool) -> Result<Reply, Reply> {
    let ms = if at {
        match s.deadline(key.clone()).await? {
            DeadlineState::Missing => return Ok(Reply::Int(-2)),
            DeadlineState::Persistent => return Ok(Reply::Int(-1)),
            DeadlineState::ExpiresAt(ms) => ms,
        }
    } else {
        match s.ttl(key.clone()).await? {
            TtlState::Missing => return Ok(Reply::Int(-2)),
            TtlState::Persistent => return Ok(Reply::Int(-1)),
            TtlState::ExpiresIn(ms) => ms,
        }
    };
    // Redis rounds a TTL in seconds to the nearest second. A native
    // client may store a deadline past i64: it is answered as i64::MAX.
    let ms = if millis {
        ms
    } else {
        ms / 1000 + u64::from(ms % 1000 >= 500)
    };
    Ok(Reply::Int(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// SCAN's options.
struct ScanArgs {
    pattern: Option<Bytes>,
    count: u32,
    /// `TYPE`: `None` for any kind, `Some(None)` for a type strata does
    /// not store (nothing matches).
    kind: Option<Option<ValueKind>>,
}

fn scan_args(args: &[Bytes]) -> Result<ScanArgs, Reply> {
    let mut out = ScanArgs {
        pattern: None,
        count: SCAN_COUNT,
        kind: None,
    };
    let mut it = args.iter();
    while let Some(option) = it.next() {
        let value = it.next().ok_or_else(syntax_error)?;
        if is(option, "match") {
            out.pattern = Some(value.clone());
        } else if is(option, "count") {
            let n = int_arg(value)?;
            if n < 1 {
                return Err(syntax_error());
            }
            out.count = u32::try_from(n).unwrap_or(u32::MAX);
        } else if is(option, "type") {
            out.kind = Some(ValueKind::ALL.into_iter().find(|k| is(value, k.name())));
        } else {
            return Err(syntax_error());
        }
    }
    Ok(out)
}

async fn scan(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let invalid = || Reply::err("ERR invalid cursor");
    let number = parse_i64(&a[1])
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(invalid)?;
    let options = scan_args(&a[2..])?;
    let cursor = match number {
        0 => None,
        n => Some(s.gw.cursor(n).ok_or_else(invalid)?),
    };
    let pattern = options.pattern.as_deref();
    let prefix = Bytes::copy_from_slice(pattern.map_or(&b""[..], glob::literal_prefix));
    // A type strata does not store walks the keys and lists none.
    let page = s
        .scan_keys(prefix, cursor, options.count, options.kind.flatten())
        .await?;
    let next = match page.next_cursor {
        Some(c) => s.gw.remember_cursor(c),
        None => 0,
    };
    let keys = page
        .keys
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| options.kind != Some(None) && pattern.is_none_or(|p| glob::matches(p, k)))
        .map(Reply::Bulk)
        .collect();
    Ok(Reply::Array(vec![
        Reply::bulk(next.to_string()),
        Reply::Array(keys),
    ]))
}

/// Calls `each` with every page of keys starting with `prefix`.
async fn every_key(
    s: &Session,
    prefix: Bytes,
    mut each: impl FnMut(Vec<Bytes>) -> Result<(), Reply>,
) -> Result<(), Reply> {
    let mut cursor = None;
    loop {
        let page = s.scan_keys(prefix.clone(), cursor, 0, None).await?;
        each(page.keys.into_iter().map(|(k, _)| k).collect())?;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

async fn keys(s: &Session, pattern: &Bytes) -> Result<Reply, Reply> {
    // The reply is bounded like any other: past the frame limit, SCAN.
    let budget = s.gw.node.limits.max_frame_bytes as usize;
    let mut found = Vec::new();
    let mut bytes = 0;
    let prefix = Bytes::copy_from_slice(glob::literal_prefix(pattern));
    every_key(s, prefix, |page| {
        for key in page {
            if glob::matches(pattern, &key) {
                bytes += key.len() + 16;
                if bytes > budget {
                    return Err(Reply::err(format!(
                        "ERR KEYS would return more than {budget} bytes; use SCAN"
                    )));
                }
                found.push(Reply::Bulk(key));
            }
        }
        Ok(())
    })
    .await?;
    Ok(Reply::Array(found))
}

async fn db_size(s: &Session) -> Result<Reply, Reply> {
    let mut n = 0;
    every_key(s, Bytes::new(), |page| {
        n += page.len() as i64;
        Ok(())
    })
    .await?;
    Ok(Reply::Int(n))
}

async fn flush(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    match &a[1..] {
        [] => {}
        [mode] if is(mode, "async") || is(mode, "sync") => {}
        _ => return Err(syntax_error()),
    }
    s.require_admin(if is(&a[0], "flushdb") {
        "flushdb"
    } else {
        "flushall"
    })?;
    let mut cursor = None;
    loop {
        let page = s.scan_keys(Bytes::new(), cursor, 0, None).await?;
        for (key, _) in &page.keys {
            s.delete(key.clone(), Condition::Always).await?;
        }
        // Deleted keys before the cursor do not move it.
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(OK),
        }
    }
}
