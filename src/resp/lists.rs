//! List commands. Each is one store request, except where a reply would
//! hold more values than one request carries (`LRANGE`, `LPOP` with a
//! large count): those take several requests in turn, so unlike Redis
//! they are not one atomic step over a list that changes meanwhile.

use bytes::Bytes;

use super::commands::{int_arg, parse_i64};
use super::reply::Reply;
use super::session::Session;
use crate::types::End;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd {
    Push { end: End, only_if_exists: bool },
    Pop(End),
    Len,
    Range,
    Index,
}

pub(crate) async fn run(cmd: Cmd, s: &mut Session, a: &[Bytes]) -> Reply {
    let result = match cmd {
        Cmd::Push {
            end,
            only_if_exists,
        } => push(s, a, end, only_if_exists).await,
        Cmd::Pop(end) => pop(s, a, end).await,
        Cmd::Len => s.list_len(a[1].clone()).await.map(int),
        Cmd::Range => range(s, a).await,
        Cmd::Index => index(s, a).await,
    };
    result.unwrap_or_else(|e| e)
}

fn int(n: u64) -> Reply {
    Reply::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

async fn index(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let index = int_arg(&a[2])?;
    let value = s.list_index(a[1].clone(), index).await?;
    Ok(value.map_or(Reply::Null, Reply::Bulk))
}

async fn push(s: &Session, a: &[Bytes], end: End, only_if_exists: bool) -> Result<Reply, Reply> {
    let values = a[2..].to_vec();
    let max = s.chunk();
    if values.len() > max {
        return Err(Reply::err(format!(
            "ERR a push takes at most {max} values at once on this node"
        )));
    }
    s.push(a[1].clone(), end, values, only_if_exists)
        .await
        .map(int)
}

/// `LPOP key` answers one value or nil; `LPOP key count` an array, or nil
/// for no list.
async fn pop(s: &Session, a: &[Bytes], end: End) -> Result<Reply, Reply> {
    let key = &a[1];
    let taken = pop_counted(s, a.get(2), |n| s.pop(key.clone(), end, n)).await?;
    Ok(taken.unwrap_or(Reply::Null))
}

/// A pop with an optional count (`LPOP`, `SPOP`), by `take` (which pops up
/// to `n`, `None` when there is nothing to pop from). Without a count, the
/// one value taken or nil; with one, an array of up to `count`, taken in
/// requests of at most a request's worth (each of which the store may cut
/// short by bytes) until the reply holds a frame's worth of bytes; `None`
/// when the first found nothing to pop from. Values taken are never
/// dropped: a failing later request ends the array there.
pub(crate) async fn pop_counted<F, Fut>(
    s: &Session,
    count: Option<&Bytes>,
    mut take: F,
) -> Result<Option<Reply>, Reply>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<Bytes>>, Reply>>,
{
    let Some(count) = count else {
        let taken = take(1).await?;
        return Ok(Some(
            taken
                .and_then(|v| v.into_iter().next())
                .map_or(Reply::Null, Reply::Bulk),
        ));
    };
    let count = parse_i64(count)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| Reply::err("ERR value is out of range, must be positive"))?;
    let taken = take_chunks(s, count, take, Bytes::len).await?;
    Ok(taken.map(|values| Reply::Array(values.into_iter().map(Reply::Bulk).collect())))
}

/// Takes up to `count` items by `take` (which takes up to `n`, `None` when
/// there is nothing to take from), in requests of at most a request's
/// worth, until the items hold a frame's worth of bytes (by `bytes_of`);
/// `None` when the first found nothing to take from. Items taken are never
/// dropped: a failing later request ends the list there.
pub(crate) async fn take_chunks<T, F, Fut>(
    s: &Session,
    count: u64,
    mut take: F,
    bytes_of: fn(&T) -> usize,
) -> Result<Option<Vec<T>>, Reply>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Vec<T>>, Reply>>,
{
    let chunk = s.chunk() as u64;
    let budget = s.gw.node.limits.max_frame_bytes as usize;
    let (mut taken, mut bytes) = (Vec::new(), 0);
    // Once even for a count of 0, which tells no collection from an empty take.
    loop {
        let want = (count - taken.len() as u64).min(chunk) as u32;
        let items = match take(want).await {
            Ok(Some(items)) => items,
            // Nothing to take from, unless an earlier request emptied it.
            Ok(None) if taken.is_empty() => return Ok(None),
            Err(e) if taken.is_empty() => return Err(e),
            Ok(None) | Err(_) => break,
        };
        bytes += items.iter().map(bytes_of).sum::<usize>();
        let got = items.len();
        taken.extend(items);
        if got == 0 || taken.len() as u64 >= count || bytes >= budget {
            break;
        }
    }
    Ok(Some(taken))
}

async fn range(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    let key = &a[1];
    let values = read_range(
        s,
        start,
        |start| s.list_range(key.clone(), start, stop),
        || s.list_len(key.clone()),
        Bytes::len,
    )
    .await?;
    Ok(Reply::Array(values.into_iter().map(Reply::Bulk).collect()))
}

/// The positions from `start` of a sequence (a list, a sorted set by
/// rank) up to the stop `read` knows, with Redis's index rules: read by
/// `read(start)`, of which a store request returns at most a request's
/// worth, until it returns less, continuing from absolute positions (`len`
/// resolves a negative start).
/// The reply is bounded like any other (as `KEYS` is), by `bytes_of`.
pub(crate) async fn read_range<T, R, RFut, L, LFut>(
    s: &Session,
    mut start: i64,
    mut read: R,
    mut len: L,
    bytes_of: fn(&T) -> usize,
) -> Result<Vec<T>, Reply>
where
    R: FnMut(i64) -> RFut,
    RFut: std::future::Future<Output = Result<Vec<T>, Reply>>,
    L: FnMut() -> LFut,
    LFut: std::future::Future<Output = Result<u64, Reply>>,
{
    let budget = s.gw.node.limits.max_frame_bytes as usize;
    let chunk = s.chunk();
    let (mut out, mut bytes) = (Vec::new(), 0);
    loop {
        let items = read(start).await?;
        let got = items.len();
        bytes += items.iter().map(|item| bytes_of(item) + 16).sum::<usize>();
        if bytes > budget {
            return Err(Reply::err(format!(
                "ERR the reply would hold more than {budget} bytes; ask for a smaller range"
            )));
        }
        out.extend(items);
        if got < chunk {
            return Ok(out);
        }
        // More may follow: continue from an absolute position.
        if start < 0 {
            let len = i64::try_from(len().await?).unwrap_or(i64::MAX);
            start = (len + start).max(0);
        }
        start += got as i64;
    }
}
