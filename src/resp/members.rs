//! Set and hash commands. A write is one store request, so it is refused
//! when it names more members than one request carries; reads that name
//! or list more (`HMGET`, `SMISMEMBER`, `SMEMBERS`, `HGETALL`, ...) and
//! counted `SPOP`s take several requests in turn, which, unlike Redis,
//! are not one atomic step over a collection that changes meanwhile.

use bytes::Bytes;

use super::commands::{int_arg, not_an_integer, wrong_arity};
use super::reply::{OK, Reply};
use super::session::Session;
use crate::types::ValueKind;

const SET: ValueKind = ValueKind::Set;
const HASH: ValueKind = ValueKind::Hash;

/// What a command lists of each member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Show {
    Names,
    Values,
    Pairs,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd {
    /// `SADD`.
    SetAdd,
    /// `HSET`, `HMSET` (answers OK) and `HSETNX` (one field, if new).
    HashSet { ok: bool, only_new: bool },
    /// `SREM`, `HDEL`.
    Remove(ValueKind),
    /// `SPOP`.
    Pop,
    /// `SMEMBERS`, `HGETALL`, `HKEYS`, `HVALS`.
    All(ValueKind, Show),
    /// `HGET`.
    Get,
    /// `HMGET`.
    MGet,
    /// `SISMEMBER`, `HEXISTS`.
    Has(ValueKind),
    /// `SMISMEMBER`.
    MHas,
    /// `SCARD`, `HLEN`.
    Count(ValueKind),
    /// `HINCRBY`.
    IncrBy,
    /// `HSTRLEN`.
    StrLen,
}

pub(crate) async fn run(cmd: Cmd, s: &mut Session, a: &[Bytes]) -> Reply {
    let key = &a[1];
    let result = match cmd {
        Cmd::SetAdd => {
            let members = a[2..].iter().map(|m| (m.clone(), Bytes::new())).collect();
            add(s, key, SET, members, false).await.map(Reply::Int)
        }
        Cmd::HashSet { ok, only_new } => hash_set(s, a, ok, only_new).await,
        Cmd::Remove(kind) => remove(s, key, kind, &a[2..]).await,
        Cmd::Pop => pop(s, key, a.get(2)).await,
        Cmd::All(kind, show) => all(s, key, kind, show).await,
        Cmd::Get => each_member(s, key, HASH, &a[2..3], value_or_nil)
            .await
            .map(|mut v| v.swap_remove(0)),
        Cmd::MGet => each_member(s, key, HASH, &a[2..], value_or_nil)
            .await
            .map(Reply::Array),
        Cmd::Has(kind) => each_member(s, key, kind, &a[2..3], present)
            .await
            .map(|mut v| v.swap_remove(0)),
        Cmd::MHas => each_member(s, key, SET, &a[2..], present)
            .await
            .map(Reply::Array),
        Cmd::Count(kind) => s
            .count_members(key.clone(), kind)
            .await
            .map(|n| Reply::Int(i64::try_from(n).unwrap_or(i64::MAX))),
        Cmd::IncrBy => incr_by(s, a).await,
        Cmd::StrLen => s
            .member_values(key, HASH, &a[2..3])
            .await
            .map(|v| Reply::Int(v[0].as_ref().map_or(0, |v| v.len() as i64))),
    };
    result.unwrap_or_else(|e| e)
}

/// One store request's worth of members, or Redis-style refusal.
async fn add(
    s: &Session,
    key: &Bytes,
    kind: ValueKind,
    members: Vec<(Bytes, Bytes)>,
    only_new: bool,
) -> Result<i64, Reply> {
    check_room(s, members.len())?;
    let added = s.add_members(key.clone(), kind, members, only_new).await?;
    Ok(i64::try_from(added).unwrap_or(i64::MAX))
}

/// A write naming `n` members fits one store request, or Redis-style refusal.
pub(crate) fn check_room(s: &Session, n: usize) -> Result<(), Reply> {
    let max = s.chunk();
    if n > max {
        return Err(Reply::err(format!(
            "ERR a write takes at most {max} members at once on this node"
        )));
    }
    Ok(())
}

async fn hash_set(s: &Session, a: &[Bytes], ok: bool, only_new: bool) -> Result<Reply, Reply> {
    let pairs = &a[2..];
    if !pairs.len().is_multiple_of(2) {
        return Err(wrong_arity(&String::from_utf8_lossy(&a[0]).to_lowercase()));
    }
    let members = pairs
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect();
    let added = add(s, &a[1], HASH, members, only_new).await?;
    Ok(if ok { OK } else { Reply::Int(added) })
}

/// `SREM`, `HDEL`, `ZREM`: how many of `names` were there.
pub(crate) async fn remove(
    s: &Session,
    key: &Bytes,
    kind: ValueKind,
    names: &[Bytes],
) -> Result<Reply, Reply> {
    check_room(s, names.len())?;
    let removed = s.remove_members(key.clone(), kind, names.to_vec()).await?;
    Ok(Reply::Int(i64::try_from(removed).unwrap_or(i64::MAX)))
}

/// `SPOP key` answers one member or nil; `SPOP key count` an array (empty
/// for no set).
async fn pop(s: &Session, key: &Bytes, count: Option<&Bytes>) -> Result<Reply, Reply> {
    let taken = super::lists::pop_counted(s, count, |n| s.pop_members(key.clone(), n)).await?;
    Ok(taken.unwrap_or(Reply::Array(vec![])))
}

/// Every member, page after page, bounded like any reply (as `KEYS` is).
async fn all(s: &Session, key: &Bytes, kind: ValueKind, show: Show) -> Result<Reply, Reply> {
    let budget = s.gw.node.limits.max_frame_bytes as usize;
    let (mut members, mut bytes) = (Vec::new(), 0);
    loop {
        let after = members
            .last()
            .map(|(name, _): &(Bytes, Bytes)| name.clone());
        let page = s.scan_members(key.clone(), kind, after).await?;
        let full = page.len() >= s.chunk();
        bytes += page
            .iter()
            .map(|(n, v)| n.len() + v.len() + 32)
            .sum::<usize>();
        if bytes > budget {
            return Err(Reply::err(format!(
                "ERR the reply would hold more than {budget} bytes"
            )));
        }
        members.extend(page);
        if !full {
            break;
        }
    }
    let members = members.into_iter();
    Ok(match show {
        Show::Names => Reply::Array(members.map(|(n, _)| Reply::Bulk(n)).collect()),
        Show::Values => Reply::Array(members.map(|(_, v)| Reply::Bulk(v)).collect()),
        Show::Pairs => Reply::Map(
            members
                .map(|(n, v)| (Reply::Bulk(n), Reply::Bulk(v)))
                .collect(),
        ),
    })
}

/// One reply per named member of the set or hash at `key`, made by `show`
/// from the member's value (`None`: not there).
async fn each_member(
    s: &Session,
    key: &Bytes,
    kind: ValueKind,
    names: &[Bytes],
    show: fn(Option<Bytes>) -> Reply,
) -> Result<Vec<Reply>, Reply> {
    let found = s.member_values(key, kind, names).await?;
    Ok(found.into_iter().map(show).collect())
}

fn value_or_nil(value: Option<Bytes>) -> Reply {
    value.map_or(Reply::Null, Reply::Bulk)
}

fn present(value: Option<Bytes>) -> Reply {
    Reply::Int(value.is_some().into())
}

async fn incr_by(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let delta = int_arg(&a[3])?;
    match s.incr_field(a[1].clone(), a[2].clone(), delta).await {
        Ok(value) => Ok(Reply::Int(value)),
        // Redis names what is not an integer: the field's value.
        Err(e) if e == not_an_integer() => Err(Reply::err("ERR hash value is not an integer")),
        Err(e) => Err(e),
    }
}
