//! Sorted-set commands. A write is one store request, refused when it
//! names more members than one request carries; `ZRANGE` over more ranks,
//! `ZMSCORE` over more members and counted pops over more take several
//! requests in turn, which, unlike Redis, are not one atomic step over a
//! sorted set that changes meanwhile. Ranges are by rank only.

use bytes::Bytes;

use super::commands::{int_arg, parse_i64, syntax_error};
use super::lists::{read_range, take_chunks};
use super::members::{check_room, remove};
use super::reply::{Proto, Reply};
use super::session::{Session, unexpected};
use crate::proto::{Request, Response};
use crate::types::{End, Score, ScoreRule, ScoreUpdate, ValueKind};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmd {
    /// `ZADD`.
    Add,
    /// `ZINCRBY`.
    IncrBy,
    /// `ZSCORE`.
    Score,
    /// `ZMSCORE`.
    MScore,
    /// `ZCARD`.
    Card,
    /// `ZREM`.
    Rem,
    /// `ZPOPMIN` (`Left`), `ZPOPMAX` (`Right`).
    Pop(End),
    /// `ZRANGE`.
    Range,
    /// `ZREVRANGE`.
    RevRange,
}

pub(crate) async fn run(cmd: Cmd, s: &mut Session, a: &[Bytes]) -> Reply {
    let key = &a[1];
    let result = match cmd {
        Cmd::Add => add(s, a).await,
        Cmd::IncrBy => match score_arg(&a[2]) {
            Ok(delta) => incr(s, key, &a[3], delta, ScoreRule::default()).await,
            Err(e) => Err(e),
        },
        Cmd::Score => scores(s, key, &a[2..3]).await.and_then(|v| {
            v.into_iter()
                .next()
                .ok_or_else(|| Reply::err("ERR the node answered without a score"))
        }),
        Cmd::MScore => scores(s, key, &a[2..]).await.map(Reply::Array),
        Cmd::Card => s
            .count_members(key.clone(), ValueKind::SortedSet)
            .await
            .map(|n| Reply::Int(i64::try_from(n).unwrap_or(i64::MAX))),
        Cmd::Rem => remove(s, key, ValueKind::SortedSet, &a[2..]).await,
        Cmd::Pop(_) if a.len() > 3 => Err(syntax_error()),
        Cmd::Pop(end) => pop(s, key, end, a.get(2)).await,
        Cmd::Range => range(s, a, false).await,
        Cmd::RevRange => range(s, a, true).await,
    };
    result.unwrap_or_else(|e| e)
}

/// A score argument as Redis reads one: `inf`, `-inf` and exponents
/// included; never NaN, nor a number too large or too small for a double
/// (`1e400`, `1e-400`), which Rust would round to infinity or zero.
fn score_arg(arg: &[u8]) -> Result<f64, Reply> {
    let in_range = |text: &str, score: f64| {
        if score.is_infinite() {
            return text.to_ascii_lowercase().contains("inf");
        }
        let mantissa = text.split(['e', 'E']).next().unwrap_or("");
        score != 0.0 || !mantissa.bytes().any(|b| matches!(b, b'1'..=b'9'))
    };
    std::str::from_utf8(arg)
        .ok()
        .and_then(|text| Some((text, text.parse::<f64>().ok()?)))
        .filter(|&(text, score)| !score.is_nan() && in_range(text, score))
        .map(|(_, score)| score)
        .ok_or_else(|| Reply::err("ERR value is not a valid float"))
}

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`.
async fn add(s: &Session, a: &[Bytes]) -> Result<Reply, Reply> {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr_flag) = Default::default();
    let mut at = 2;
    while let Some(flag) = a.get(at) {
        let set = match flag.to_ascii_uppercase().as_slice() {
            b"NX" => &mut nx,
            b"XX" => &mut xx,
            b"GT" => &mut gt,
            b"LT" => &mut lt,
            b"CH" => &mut ch,
            b"INCR" => &mut incr_flag,
            _ => break,
        };
        *set = true;
        at += 1;
    }
    // Redis's checks, in Redis's order.
    let pairs = &a[at..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(syntax_error());
    }
    if nx && xx {
        return Err(Reply::err(
            "ERR XX and NX options at the same time are not compatible",
        ));
    }
    if (gt && lt) || (nx && (gt || lt)) {
        return Err(Reply::err(
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        ));
    }
    if incr_flag && pairs.len() > 2 {
        return Err(Reply::err(
            "ERR INCR option supports a single increment-element pair",
        ));
    }
    let rule = ScoreRule {
        exists: (nx || xx).then_some(xx),
        update: match (gt, lt) {
            (true, _) => ScoreUpdate::Greater,
            (_, true) => ScoreUpdate::Less,
            _ => ScoreUpdate::Any,
        },
    };
    let members = pairs
        .chunks(2)
        .map(|p| Ok((p[1].clone(), score_arg(&p[0])?)))
        .collect::<Result<Vec<_>, Reply>>()?;
    if incr_flag {
        return incr(s, &a[1], &members[0].0, members[0].1, rule).await;
    }
    check_room(s, members.len())?;
    let request = Request::AddScores {
        key: a[1].clone(),
        members: members.into_iter().map(|(m, sc)| (m, Score(sc))).collect(),
        exists: rule.exists,
        update: rule.update,
        count_changed: ch,
        ack: s.ack,
    };
    match s.call(request).await? {
        Response::Counted { count, .. } => Ok(Reply::Int(i64::try_from(count).unwrap_or(i64::MAX))),
        other => Err(unexpected(&other)),
    }
}

/// `ZINCRBY`, `ZADD ... INCR`: the new score, or nil when the rule refused it.
async fn incr(
    s: &Session,
    key: &Bytes,
    member: &Bytes,
    delta: f64,
    rule: ScoreRule,
) -> Result<Reply, Reply> {
    let request = Request::IncrScore {
        key: key.clone(),
        member: member.clone(),
        delta: Score(delta),
        exists: rule.exists,
        update: rule.update,
        ack: s.ack,
    };
    match s.call(request).await? {
        Response::Score { score, .. } => Ok(score.map_or(Reply::Null, |s| Reply::Double(s.0))),
        other => Err(unexpected(&other)),
    }
}

/// One score (or nil) per named member, in requests of a request's worth.
async fn scores(s: &Session, key: &Bytes, members: &[Bytes]) -> Result<Vec<Reply>, Reply> {
    let mut out = Vec::with_capacity(members.len());
    for chunk in members.chunks(s.chunk()) {
        let request = Request::Scores {
            key: key.clone(),
            members: chunk.to_vec(),
        };
        match s.call(request).await? {
            Response::Scores(found) => out.extend(
                found
                    .into_iter()
                    .map(|sc| sc.map_or(Reply::Null, |sc| Reply::Double(sc.0))),
            ),
            other => return Err(unexpected(&other)),
        }
    }
    Ok(out)
}

/// `ZPOPMIN key [count]`: member and score pairs, lowest first (highest
/// for `ZPOPMAX`); an empty array when there is no sorted set.
async fn pop(s: &Session, key: &Bytes, end: End, count: Option<&Bytes>) -> Result<Reply, Reply> {
    let n = match count {
        None => 1,
        Some(arg) => parse_i64(arg)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| Reply::err("ERR value is out of range, must be positive"))?,
    };
    let take = |want: u32| async move {
        let request = Request::PopScores {
            key: key.clone(),
            end,
            count: want,
            ack: s.ack,
        };
        match s.call(request).await? {
            Response::Scored { members, .. } => Ok(Some(members)),
            other => Err(unexpected(&other)),
        }
    };
    let taken = take_chunks(s, n, take, |(m, _)| m.len() + 8).await?;
    // RESP3 nests pairs, except for a pop without a count (Redis does the same).
    Ok(with_scores(
        s.proto,
        taken.unwrap_or_default(),
        count.is_some(),
    ))
}

/// `ZRANGE key start stop [REV] [WITHSCORES]`, `ZREVRANGE key start stop
/// [WITHSCORES]`.
async fn range(s: &Session, a: &[Bytes], rev_command: bool) -> Result<Reply, Reply> {
    let (start, stop) = (int_arg(&a[2])?, int_arg(&a[3])?);
    let (mut rev, mut withscores) = (rev_command, false);
    for flag in &a[4..] {
        match flag.to_ascii_uppercase().as_slice() {
            b"WITHSCORES" => withscores = true,
            b"REV" if !rev => rev = true,
            b"BYSCORE" | b"BYLEX" | b"LIMIT" if !rev_command => {
                return Err(Reply::err(
                    "ERR strata ranges sorted sets by rank only: BYSCORE, BYLEX and LIMIT are \
                     not supported",
                ));
            }
            _ => return Err(syntax_error()),
        }
    }
    let end = if rev { End::Right } else { End::Left };
    let key = &a[1];
    let read = |start: i64| async move {
        let request = Request::ScoreRange {
            key: key.clone(),
            start,
            stop,
            end,
        };
        match s.call(request).await? {
            Response::Scored { members, .. } => Ok(members),
            other => Err(unexpected(&other)),
        }
    };
    let count = || s.count_members(key.clone(), ValueKind::SortedSet);
    let found = read_range(s, start, read, count, |(m, _)| m.len() + 8).await?;
    Ok(match withscores {
        true => with_scores(s.proto, found, true),
        false => Reply::Array(found.into_iter().map(|(m, _)| Reply::Bulk(m)).collect()),
    })
}

/// Members with their scores: a flat array in RESP2 (and in RESP3 unless
/// `nested`), an array of `[member, score]` pairs in RESP3.
fn with_scores(proto: Proto, members: Vec<(Bytes, Score)>, nested: bool) -> Reply {
    let pairs = members
        .into_iter()
        .map(|(m, sc)| [Reply::Bulk(m), Reply::Double(sc.0)]);
    match (proto, nested) {
        (Proto::Resp3, true) => Reply::Array(pairs.map(|p| Reply::Array(p.to_vec())).collect()),
        _ => Reply::Array(pairs.flatten().collect()),
    }
}
