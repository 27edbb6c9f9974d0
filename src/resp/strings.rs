//! String commands. Those Redis runs as one step over a key's old value
//! (`SET ... GET`, `KEEPTTL`, `APPEND`, `GETDEL`, `GETEX`, `SETRANGE`) are
//! a read, then a write conditioned on the version read
//! ([`Session::update`]), so a concurrent writer makes them retry rather
//! than be lost. A kept TTL is the remaining time at the read, to the
//! millisecond; `EXAT` and `PXAT` are sent as deadlines, exact.

use bytes::{Bytes, BytesMut};

use super::commands::{int_arg, is, syntax_error, wrong_arity};
use super::reply::{OK, Reply};
use super::session::{Change, Session, kept_ttl};
use crate::proto::{Entry, SetEntry};
use crate::types::{Condition, Expiry};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd {
    Get,
    Set,
    SetNx,
    SetEx,
    PSetEx,
    GetSet,
    GetDel,
    GetEx,
    MGet,
    MSet,
    MSetNx,
    Incr,
    IncrBy,
    Decr,
    DecrBy,
    Append,
    Strlen,
    GetRange,
    SetRange,
}

pub(crate) async fn run(cmd: Cmd, s: &mut Session, a: &[Bytes]) -> Reply {
    let result = match cmd {
        Cmd::Get => s.get(&a[1]).await.map(value_of),
        Cmd::Set => set(s, a).await,
        Cmd::SetNx => s
            .set(
                a[1].clone(),
                a[2].clone(),
                Expiry::Never,
                Condition::IfAbsent,
            )
            .await
            .map(|written| Reply::Int(written.into())),
        Cmd::SetEx => set_ex(s, a, 1000, "setex").await,
        Cmd::PSetEx => set_ex(s, a, 1, "psetex").await,
        Cmd::GetSet => {
            let options = SetOptions {
                get: true,
                ..SetOptions::default()
            };
            set_with(s, &a[1], &a[2], options).await
        }
        Cmd::GetDel => get_del(s, &a[1]).await,
        Cmd::GetEx => get_ex(s, a).await,
        Cmd::MGet => s
            .get_many(&a[1..])
            .await
            .map(|values| Reply::Array(values.into_iter().map(value_of).collect())),
        Cmd::MSet => mset(s, a, false).await,
        Cmd::MSetNx => mset(s, a, true).await,
        Cmd::Incr => incr(s, &a[1], 1).await,
        Cmd::Decr => incr(s, &a[1], -1).await,
        Cmd::IncrBy => match int_arg(&a[2]) {
            Ok(n) => incr(s, &a[1], n).await,
            Err(e) => Err(e),
        },
        Cmd::DecrBy => match int_arg(&a[2]).map(i64::checked_neg) {
            Ok(Some(n)) => incr(s, &a[1], n).await,
            Ok(None) => Err(Reply::err("ERR decrement would overflow")),
            Err(e) => Err(e),
        },
        Cmd::Append => append(s, &a[1], &a[2]).await,
        Cmd::Strlen => s
            .get(&a[1])
            .await
            .map(|e| Reply::Int(e.map_or(0, |e| e.value.len() as i64))),
        Cmd::GetRange => get_range(s, a).await,
        Cmd::SetRange => set_range(s, a).await,
    };
    result.unwrap_or_else(|e| e)
}

fn value_of(entry: Option<Entry>) -> Reply {
    entry.map_or(Reply::Null, |e| Reply::Bulk(e.value))
}

fn invalid_expire(command: &str) -> Reply {
    Reply::err(format!("ERR invalid expire time in '{command}' command"))
}

/// What a SET does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewTtl {
    /// Keeps the TTL the key has (`KEEPTTL`).
    Keep,
    /// Gives it this one (`Never` for a plain SET, which removes the old).
    To(Expiry),
}

impl Default for NewTtl {
    fn default() -> NewTtl {
        NewTtl::To(Expiry::Never)
    }
}

/// Reads `EX s`, `PX ms`, `EXAT t` or `PXAT t` at `a[i]` (the option
/// name): `None` if `a[i]` is another word.
fn expiry_option(
    s: &Session,
    a: &[Bytes],
    i: usize,
    command: &str,
) -> Result<Option<Expiry>, Reply> {
    let (scale, absolute) = match &a[i] {
        o if is(o, "ex") => (1000, false),
        o if is(o, "px") => (1, false),
        o if is(o, "exat") => (1000, true),
        o if is(o, "pxat") => (1, true),
        _ => return Ok(None),
    };
    let n = int_arg(a.get(i + 1).ok_or_else(syntax_error)?)?;
    if n <= 0 {
        return Err(invalid_expire(command));
    }
    let ms = n
        .checked_mul(scale)
        .ok_or_else(|| invalid_expire(command))?;
    // Positive: `n` is.
    let ms = ms as u64;
    Ok(Some(if absolute {
        Expiry::AtMs(ms)
    } else {
        // Redis refuses a relative TTL whose deadline would overflow.
        ms.checked_add(s.now_ms())
            .filter(|&at| at <= i64::MAX as u64)
            .ok_or_else(|| invalid_expire(command))?;
        Expiry::InMs(ms)
    }))
}

#[derive(Debug, Clone, Copy, Default)]
struct SetOptions {
    condition: Condition,
    get: bool,
    expiry: NewTtl,
}

fn set_options(s: &Session, a: &[Bytes]) -> Result<SetOptions, Reply> {
    let mut o = SetOptions::default();
    let mut expiry_given = false;
    let mut i = 3;
    while i < a.len() {
        let arg = &a[i];
        if is(arg, "nx") && o.condition == Condition::Always {
            o.condition = Condition::IfAbsent;
        } else if is(arg, "xx") && o.condition == Condition::Always {
            o.condition = Condition::IfPresent;
        } else if is(arg, "get") {
            o.get = true;
        } else if is(arg, "keepttl") && !expiry_given {
            o.expiry = NewTtl::Keep;
            expiry_given = true;
        } else if let Some(expiry) = expiry_option(s, a, i, "set")? {
            if expiry_given {
                return Err(syntax_error());
            }
            o.expiry = NewTtl::To(expiry);
            expiry_given = true;
            i += 1;
        } else {
            return Err(syntax_error());
        }
        i += 1;
    }
    Ok(o)
}

async fn set(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let options = set_options(s, a)?;
    set_with(s, &a[1], &a[2], options).await
}

async fn set_with(s: &Session, key: &Bytes, value: &Bytes, o: SetOptions) -> Result<Reply, Reply> {
    // The common case is one conditional write.
    let now = s.now_ms();
    if let (false, NewTtl::To(expiry)) = (o.get, o.expiry)
        && !expiry.is_past(now)
    {
        let written = s
            .set(key.clone(), value.clone(), expiry, o.condition)
            .await?;
        return Ok(if written { OK } else { Reply::Null });
    }
    s.update(key, |current| {
        let answer = if o.get {
            value_of(current.cloned())
        } else {
            OK
        };
        let blocked = match o.condition {
            Condition::IfAbsent => current.is_some(),
            Condition::IfPresent => current.is_none(),
            _ => false,
        };
        if blocked {
            return Ok((Change::Keep, if o.get { answer } else { Reply::Null }));
        }
        let expiry = match o.expiry {
            NewTtl::Keep => kept_ttl(current),
            // Already past: the key is set and gone at once.
            NewTtl::To(expiry) if expiry.is_past(now) => {
                return Ok((Change::Delete, answer));
            }
            NewTtl::To(expiry) => expiry,
        };
        let value = value.clone();
        Ok((Change::Write { value, expiry }, answer))
    })
    .await
}

async fn set_ex(s: &Session, a: &[Bytes], scale: i64, command: &str) -> Result<Reply, Reply> {
    let n = int_arg(&a[2])?;
    let ms = match n.checked_mul(scale) {
        Some(ms) if n > 0 && ms.checked_add(s.now_ms() as i64).is_some() => ms,
        _ => return Err(invalid_expire(command)),
    };
    s.set(
        a[1].clone(),
        a[3].clone(),
        Expiry::InMs(ms as u64),
        Condition::Always,
    )
    .await?;
    Ok(OK)
}

async fn get_del(s: &Session, key: &Bytes) -> Result<Reply, Reply> {
    s.update(key, |current| {
        Ok(match current {
            None => (Change::Keep, Reply::Null),
            Some(e) => (Change::Delete, Reply::Bulk(e.value.clone())),
        })
    })
    .await
}

async fn get_ex(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let expiry = match a.len() {
        2 => return s.get(&a[1]).await.map(value_of),
        3 if is(&a[2], "persist") => Expiry::Never,
        4 => match expiry_option(s, a, 2, "getex")? {
            Some(expiry) => expiry,
            None => return Err(syntax_error()),
        },
        _ => return Err(syntax_error()),
    };
    s.update(&a[1], |current| {
        let Some(e) = current else {
            return Ok((Change::Keep, Reply::Null));
        };
        let answer = Reply::Bulk(e.value.clone());
        Ok(match expiry {
            Expiry::Never if e.ttl_ms.is_none() => (Change::Keep, answer),
            expiry if expiry.is_past(s.now_ms()) => (Change::Delete, answer),
            expiry => {
                let value = e.value.clone();
                (Change::Write { value, expiry }, answer)
            }
        })
    })
    .await
}

async fn mset(s: &Session, a: &[Bytes], if_none_exist: bool) -> Result<Reply, Reply> {
    if a.len().is_multiple_of(2) {
        return Err(wrong_arity(if if_none_exist { "msetnx" } else { "mset" }));
    }
    let pairs = a[1..].chunks_exact(2);
    if if_none_exist {
        if a.len() == 3 {
            // One key: exactly SETNX, atomic.
            let written = s
                .set(
                    a[1].clone(),
                    a[2].clone(),
                    Expiry::Never,
                    Condition::IfAbsent,
                )
                .await?;
            return Ok(Reply::Int(written.into()));
        }
        // Several keys: checked, then written in one batch. A writer that
        // creates one of the keys in between is overwritten: MSETNX over
        // several keys is not atomic against concurrent writers here.
        let keys: Vec<Bytes> = pairs.clone().map(|p| p[0].clone()).collect();
        if s.exists(&keys).await? > 0 {
            return Ok(Reply::Int(0));
        }
    }
    let entries = pairs
        .map(|p| SetEntry {
            key: p[0].clone(),
            value: p[1].clone(),
            ttl_ms: None,
        })
        .collect();
    s.set_many(entries).await?;
    Ok(if if_none_exist { Reply::Int(1) } else { OK })
}

async fn incr(s: &Session, key: &Bytes, delta: i64) -> Result<Reply, Reply> {
    s.incr(key.clone(), delta).await.map(Reply::Int)
}

async fn append(s: &Session, key: &Bytes, tail: &Bytes) -> Result<Reply, Reply> {
    s.update(key, |current| {
        let mut value = BytesMut::new();
        if let Some(e) = current {
            value.extend_from_slice(&e.value);
        }
        value.extend_from_slice(tail);
        let len = value.len() as i64;
        let expiry = kept_ttl(current);
        let value = value.freeze();
        Ok((Change::Write { value, expiry }, Reply::Int(len)))
    })
    .await
}

async fn get_range(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let (mut start, mut end) = (int_arg(&a[2])?, int_arg(&a[3])?);
    // Redis's rules: negative indexes count from the end, and what is
    // left of the range after clamping may be empty.
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::Bulk(Bytes::new()));
    }
    let value = s.get(&a[1]).await?.map(|e| e.value).unwrap_or_default();
    let len = value.len() as i64;
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    let (start, end) = (start.max(0), end.max(0).min(len - 1));
    if len == 0 || start > end {
        return Ok(Reply::Bulk(Bytes::new()));
    }
    Ok(Reply::Bulk(value.slice(start as usize..=end as usize)))
}

async fn set_range(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let offset = int_arg(&a[2])?;
    if offset < 0 {
        return Err(Reply::err("ERR offset is out of range"));
    }
    let offset = offset as usize;
    let patch = &a[3];
    let max = s.gw.node.limits.max_value_bytes as usize;
    if !patch.is_empty() && offset.saturating_add(patch.len()) > max {
        return Err(Reply::err(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
        ));
    }
    s.update(&a[1], |current| {
        let old = current.map(|e| e.value.clone()).unwrap_or_default();
        // An empty patch changes nothing, and creates no key.
        if patch.is_empty() {
            return Ok((Change::Keep, Reply::Int(old.len() as i64)));
        }
        let mut value = BytesMut::from(&old[..]);
        if value.len() < offset + patch.len() {
            value.resize(offset + patch.len(), 0);
        }
        value[offset..offset + patch.len()].copy_from_slice(patch);
        let len = value.len() as i64;
        let expiry = kept_ttl(current);
        let value = value.freeze();
        Ok((Change::Write { value, expiry }, Reply::Int(len)))
    })
    .await
}
