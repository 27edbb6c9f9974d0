//! Sorted sets: a metadata value under the user's key (a `MemberMeta`,
//! as for sets and hashes), two internal keys per member.
//!
//! Under `keys::element_prefix(key, id)`, member `m` scored `s` has:
//!
//! ```text
//! [u8 0] m                    -> s   (the score entry: 8 bytes, f64 LE)
//! [u8 1] sortable(s) m        -> ""  (the rank entry)
//! ```
//!
//! The score entry answers "what is m's score"; the rank entries sort by
//! score, then by member bytes (Redis's order), so a range by rank, or the
//! lowest and highest members, is one iterator walk from either end.
//! `sortable(s)` is 8 big-endian bytes that sort as the scores do: a
//! non-negative score's bits with the sign bit set, a negative score's bits
//! inverted. `-0.0` is kept as `0.0`; NaN is never stored.

use bytes::Bytes;

use super::commit::{Applied, WriteOp};
use super::error::{Result, StoreError};
use super::list::index_range;
use super::members::MemberMeta;
use super::{Store, WriteAck};
use crate::types::{End, ScoreRule, ValueKind};

/// Internal keys a member takes (its score entry and its rank entry).
pub const KEYS_PER_MEMBER: u64 = 2;

const SCORE_TAG: u8 = 0;
const RANK_TAG: u8 = 1;
const SCORE_BYTES: usize = 8;

/// The name (under the collection's element prefix) of `member`'s score entry.
pub fn score_name(member: &[u8]) -> Vec<u8> {
    let mut name = Vec::with_capacity(1 + member.len());
    name.push(SCORE_TAG);
    name.extend_from_slice(member);
    name
}

/// The name of the rank entry of `member` scored `score`.
pub fn rank_name(score: f64, member: &[u8]) -> Vec<u8> {
    let mut name = Vec::with_capacity(1 + SCORE_BYTES + member.len());
    name.push(RANK_TAG);
    name.extend_from_slice(&sortable(score));
    name.extend_from_slice(member);
    name
}

/// What every rank entry of the sorted set `meta` at `key` starts with.
pub fn rank_prefix(meta: &MemberMeta, key: &[u8]) -> Vec<u8> {
    let mut prefix = meta.prefix(key);
    prefix.push(RANK_TAG);
    prefix
}

/// The score and member a rank entry's key names, from what follows the
/// rank prefix.
pub fn split_rank(key: &[u8], rest: &[u8]) -> Result<(Bytes, f64)> {
    if rest.len() < SCORE_BYTES {
        return Err(damaged(key, "a sorted-set rank entry is too short"));
    }
    let (score, member) = rest.split_at(SCORE_BYTES);
    let bits = u64::from_be_bytes(score.try_into().unwrap_or_default());
    let bits = if bits & SIGN != 0 { bits ^ SIGN } else { !bits };
    Ok((Bytes::copy_from_slice(member), f64::from_bits(bits)))
}

/// A score entry's value.
pub fn encode_score(score: f64) -> Bytes {
    Bytes::copy_from_slice(&(score + 0.0).to_le_bytes())
}

/// The score a score entry's value holds.
pub fn decode_score(key: &[u8], raw: &[u8]) -> Result<f64> {
    let bytes: [u8; SCORE_BYTES] = raw
        .try_into()
        .map_err(|_| damaged(key, "a sorted-set score is not 8 bytes"))?;
    Ok(f64::from_le_bytes(bytes))
}

impl Store {
    /// Scores `members` (name, score) in the sorted set at `key`, creating
    /// it, where `rule` allows: how many are new (with `count_changed`,
    /// also how many changed score), with the write's ack when anything
    /// changed. NaN is refused; `WrongType` on another kind.
    pub async fn add_scores(
        &self,
        key: Bytes,
        members: Vec<(Bytes, f64)>,
        rule: ScoreRule,
        count_changed: bool,
    ) -> Result<(u64, Option<WriteAck>)> {
        self.check_scored(&key, members.iter().map(|(m, _)| m))?;
        if members.is_empty() {
            return Err(StoreError::InvalidArgument(
                "an add needs at least one member",
            ));
        }
        if members.iter().any(|(_, score)| score.is_nan()) {
            return Err(StoreError::InvalidArgument(NAN));
        }
        let op = WriteOp::AddScores {
            key,
            members,
            rule,
            count_changed,
        };
        self.counted(op).await
    }

    /// Adds `delta` to the score of `member` (0 if absent) in the sorted
    /// set at `key`, creating it, where `rule` allows the new score: the
    /// new score (`None` when refused), with the write's ack when anything
    /// changed. A NaN result is refused.
    pub async fn incr_score(
        &self,
        key: Bytes,
        member: Bytes,
        delta: f64,
        rule: ScoreRule,
    ) -> Result<(Option<f64>, Option<WriteAck>)> {
        self.check_scored(&key, std::iter::once(&member))?;
        if delta.is_nan() {
            return Err(StoreError::InvalidArgument(NAN));
        }
        let op = WriteOp::IncrScore {
            key,
            member,
            delta,
            rule,
        };
        match self.submit(op).await? {
            (Applied::Score(score, seq), synced) => {
                Ok((score, seq.map(|seq| WriteAck { seq, synced })))
            }
            other => unreachable!("a score increment scores, got {other:?}"),
        }
    }

    /// The scores of `members` in the sorted set at `key`, in order; `None`
    /// for a member it lacks, and for every one when there is no sorted set.
    pub async fn scores(&self, key: Bytes, members: Vec<Bytes>) -> Result<Vec<Option<f64>>> {
        self.check_scored(&key, members.iter())?;
        let inner = self.inner.clone();
        let n = members.len();
        let names: Vec<Bytes> = members.iter().map(|m| score_name(m).into()).collect();
        let owner = key.clone();
        let found = tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_ms();
            let kind = ValueKind::SortedSet;
            inner.disk.member_values(&key, kind, now, &names)
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        let Some((_, values)) = found else {
            return Ok(vec![None; n]);
        };
        values
            .into_iter()
            .map(|v| v.map(|raw| decode_score(&owner, &raw)).transpose())
            .collect()
    }

    /// Takes up to `count` members with their scores from `end` of the
    /// sorted set at `key` (`Left`: the lowest first), deleting it when it
    /// empties; empty when there is none. The write's ack when it took any.
    pub async fn pop_scores(
        &self,
        key: Bytes,
        end: End,
        count: u64,
    ) -> Result<(Vec<(Bytes, f64)>, Option<WriteAck>)> {
        self.check_key(&key)?;
        self.check_batch(usize::try_from(count).unwrap_or(usize::MAX))?;
        let max_bytes = self.pop_bytes();
        let op = WriteOp::PopScores {
            key,
            end,
            count,
            max_bytes,
        };
        match self.submit(op).await? {
            (Applied::Scored(taken, seq), synced) => {
                Ok((taken, seq.map(|seq| WriteAck { seq, synced })))
            }
            other => unreachable!("a sorted-set pop takes some or none, got {other:?}"),
        }
    }

    /// The members with their scores at ranks `start..=stop` of the sorted
    /// set at `key`, ranked from `end` (`Left`: rank 0 is the lowest
    /// score), with Redis's index rules (negative counts from the other
    /// end; clamped); empty for no sorted set, and at most
    /// `max_keys_per_request` members from `start`.
    pub async fn score_range(
        &self,
        key: Bytes,
        start: i64,
        stop: i64,
        end: End,
    ) -> Result<Vec<(Bytes, f64)>> {
        self.check_key(&key)?;
        let max = self.inner.config.limits.max_keys_per_request() as u64;
        let inner = self.inner.clone();
        let found = tokio::task::spawn_blocking(move || {
            let now = inner.clock.now_ms();
            inner.disk.score_range(&key, now, end, |meta| {
                index_range(meta.len, start, stop)
                    .map(|(first, last)| (first, last.min(first + max.max(1) - 1)))
            })
        })
        .await
        .map_err(|_| StoreError::Closed)??;
        Ok(found.unwrap_or_default())
    }

    /// The checks of a sorted-set request naming members.
    fn check_scored<'a>(
        &self,
        key: &[u8],
        names: impl ExactSizeIterator<Item = &'a Bytes>,
    ) -> Result<()> {
        let kind = ValueKind::SortedSet;
        self.check_members(key, &[kind], kind, names)
    }
}

const NAN: &str = "a score must be a number, not NaN";

const SIGN: u64 = 1 << 63;

fn sortable(score: f64) -> [u8; SCORE_BYTES] {
    // `+ 0.0` turns -0.0 into 0.0, so the two sort as one score.
    let bits = (score + 0.0).to_bits();
    let bits = if bits & SIGN == 0 { bits | SIGN } else { !bits };
    bits.to_be_bytes()
}

fn damaged(key: &[u8], reason: &'static str) -> StoreError {
    StoreError::DamagedValue {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ScoreUpdate;

    #[test]
    fn rank_entries_sort_as_their_scores_then_members() {
        let scores = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -f64::MIN_POSITIVE,
            0.0,
            f64::MIN_POSITIVE,
            1.0,
            2.5,
            1e300,
            f64::INFINITY,
        ];
        let names: Vec<Vec<u8>> = scores.iter().map(|s| rank_name(*s, b"m")).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(rank_name(1.0, b"a") < rank_name(1.0, b"b"));
        assert_eq!(rank_name(-0.0, b"m"), rank_name(0.0, b"m"));
        for (score, name) in scores.iter().zip(&names) {
            let (member, back) = split_rank(b"k", &name[1..]).unwrap();
            assert_eq!((&member[..], back.to_bits()), (&b"m"[..], score.to_bits()));
        }
        assert!(split_rank(b"k", b"short").is_err());
    }

    #[test]
    fn scores_round_trip_and_a_bad_one_is_damage() {
        for score in [0.0, -0.0, 1.5, f64::INFINITY] {
            assert_eq!(decode_score(b"k", &encode_score(score)).unwrap(), score);
        }
        assert!(decode_score(b"k", b"1234").is_err());
    }

    #[test]
    fn rules_follow_zadd_flags() {
        let any = ScoreRule::default();
        let nx = ScoreRule {
            exists: Some(false),
            ..any
        };
        let xx_gt = ScoreRule {
            exists: Some(true),
            update: ScoreUpdate::Greater,
        };
        let lt = ScoreRule {
            update: ScoreUpdate::Less,
            ..any
        };
        assert!(any.allows(None, 1.0) && any.allows(Some(2.0), 1.0));
        assert!(nx.allows(None, 1.0) && !nx.allows(Some(2.0), 3.0));
        assert!(!xx_gt.allows(None, 1.0) && xx_gt.allows(Some(1.0), 2.0));
        assert!(!xx_gt.allows(Some(2.0), 1.0));
        assert!(lt.allows(None, 5.0) && lt.allows(Some(2.0), 1.0) && !lt.allows(Some(1.0), 2.0));
    }
}
