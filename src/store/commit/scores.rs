//! The commit thread's evaluation of sorted-set writes (layout in
//! `store/sorted.rs`): a member's score entry and rank entry change
//! together, in the op's one record.

use std::collections::HashMap;

use bytes::Bytes;

use super::collections::meta_write;
use super::{Applied, BatchState};
use crate::store::error::{Result, StoreError};
use crate::store::members::MemberMeta;
use crate::store::sorted;
use crate::types::{End, ScoreRule, Seq, ValueKind};
use crate::wal::Mutation;

/// One sorted-set op's view: the collection, and what the op wrote so far.
struct Scoring {
    meta: MemberMeta,
    expires_at_ms: u64,
    /// Scores this op set, by member: it sees its own writes.
    written: HashMap<Bytes, f64>,
    mutations: Vec<Mutation>,
}

impl BatchState<'_> {
    /// The sorted set at `key`, or a new one whose id is `seq`.
    fn scoring(&self, key: &Bytes, seq: Seq) -> Result<Scoring> {
        let (meta, expires_at_ms) = self
            .collection(key, ValueKind::SortedSet)?
            .unwrap_or((MemberMeta::new(seq.0), 0));
        Ok(Scoring {
            meta,
            expires_at_ms,
            written: HashMap::new(),
            mutations: Vec::new(),
        })
    }

    /// `member`'s score as of the ops ordered so far and this op's writes.
    fn score_of(&self, s: &Scoring, key: &Bytes, member: &Bytes) -> Result<Option<f64>> {
        if let Some(score) = s.written.get(member) {
            return Ok(Some(*score));
        }
        let entry = s.meta.member(key, &sorted::score_name(member));
        match self.live(&entry)? {
            Some(found) => sorted::decode_score(key, &found.value).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn add_scores(
        &self,
        seq: Seq,
        key: &Bytes,
        members: &[(Bytes, f64)],
        rule: ScoreRule,
        count_changed: bool,
    ) -> Result<(Applied, Vec<Mutation>)> {
        let mut s = self.scoring(key, seq)?;
        let mut counted = 0;
        for (member, score) in members {
            let old = self.score_of(&s, key, member)?;
            if old == Some(*score) || !rule.allows(old, *score) {
                continue;
            }
            if old.is_none() || count_changed {
                counted += 1;
            }
            rescore(&mut s, key, member, old, *score);
        }
        Ok(finish(s, key, seq, |seq| Applied::Counted(counted, seq)))
    }

    pub(super) fn incr_score(
        &self,
        seq: Seq,
        key: &Bytes,
        member: &Bytes,
        delta: f64,
        rule: ScoreRule,
    ) -> Result<(Applied, Vec<Mutation>)> {
        let mut s = self.scoring(key, seq)?;
        let old = self.score_of(&s, key, member)?;
        let new = old.unwrap_or(0.0) + delta;
        if new.is_nan() {
            return Err(StoreError::NanScore);
        }
        if !rule.allows(old, new) {
            return Ok((Applied::Score(None, None), vec![]));
        }
        if old != Some(new) {
            rescore(&mut s, key, member, old, new);
        }
        Ok(finish(s, key, seq, |seq| Applied::Score(Some(new), seq)))
    }

    pub(super) fn pop_scores(
        &self,
        seq: Seq,
        key: &Bytes,
        end: End,
        count: u64,
        max_bytes: u64,
    ) -> Result<(Applied, Vec<Mutation>)> {
        let mut s = self.scoring(key, seq)?;
        let prefix = sorted::rank_prefix(&s.meta, key);
        let taken = self.pop_elements(&prefix, count.min(s.meta.len), end, max_bytes)?;
        let mut popped = Vec::with_capacity(taken.len());
        for rank in taken {
            let (member, score) = sorted::split_rank(key, &rank[prefix.len()..])?;
            let entry = s.meta.member(key, &sorted::score_name(&member));
            s.mutations.push(Mutation::Delete { key: rank });
            s.mutations.push(Mutation::Delete { key: entry });
            s.meta.len = s.meta.len.saturating_sub(1);
            popped.push((member, score));
        }
        Ok(finish(s, key, seq, |seq| Applied::Scored(popped, seq)))
    }
}

/// Gives `member` (scored `old`, if there) the score `new`.
fn rescore(s: &mut Scoring, key: &Bytes, member: &Bytes, old: Option<f64>, new: f64) {
    let meta = &mut s.meta;
    match old {
        Some(old) => {
            let stale = meta.member(key, &sorted::rank_name(old, member));
            s.mutations.push(Mutation::Delete { key: stale });
        }
        None => meta.len += 1,
    }
    let entry = meta.member(key, &sorted::score_name(member));
    let rank = meta.member(key, &sorted::rank_name(new, member));
    s.mutations.push(Mutation::put(
        entry,
        ValueKind::String,
        sorted::encode_score(new),
        0,
    ));
    s.mutations
        .push(Mutation::put(rank, ValueKind::String, Bytes::new(), 0));
    s.written.insert(member.clone(), new);
}

/// The op's outcome (`applied`, given its seq when it wrote anything) and
/// its mutations, ending with the metadata write whenever it wrote any.
fn finish(
    mut s: Scoring,
    key: &Bytes,
    seq: Seq,
    applied: impl FnOnce(Option<Seq>) -> Applied,
) -> (Applied, Vec<Mutation>) {
    if s.mutations.is_empty() {
        return (applied(None), vec![]);
    }
    // Always rewritten: cheap, and right whether the count grew or shrank.
    s.mutations.push(meta_write(
        key,
        ValueKind::SortedSet,
        s.meta.len,
        s.meta.encode(),
        s.expires_at_ms,
    ));
    (applied(Some(seq)), s.mutations)
}
