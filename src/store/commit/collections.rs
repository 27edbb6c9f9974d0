//! The commit thread's evaluation of list, set and hash writes (and the
//! shared pieces sorted sets use, in `scores.rs`): each
//! reads the collection as of the ops ordered so far and returns the
//! mutations that change it.

use std::collections::HashMap;

use bytes::Bytes;

use super::{Applied, BatchState, parse_i64};
use crate::store::disk::holds_collection;
use crate::store::error::{Result, StoreError};
use crate::store::list::ListMeta;
use crate::store::members::MemberMeta;
use crate::store::sorted;
use crate::types::{End, Seq, ValueKind};
use crate::wal::Mutation;

impl BatchState<'_> {
    /// The collection of `kind` at `key` as of the ops ordered so far: its
    /// metadata (read by `decode`) and its expiry; `WrongType` if the key
    /// holds something else.
    pub(super) fn collection_meta<M>(
        &self,
        key: &Bytes,
        kind: ValueKind,
        decode: fn(&[u8], &[u8]) -> Result<M>,
    ) -> Result<Option<(M, u64)>> {
        match self.live(key)? {
            None => Ok(None),
            Some(v) if v.kind == kind => Ok(Some((decode(key, &v.value)?, v.expires_at_ms))),
            Some(_) => Err(StoreError::WrongType),
        }
    }

    pub(super) fn list(&self, key: &Bytes) -> Result<Option<(ListMeta, u64)>> {
        self.collection_meta(key, ValueKind::List, ListMeta::decode)
    }

    pub(super) fn push(
        &self,
        seq: Seq,
        key: &Bytes,
        end: End,
        values: &[Bytes],
        only_if_exists: bool,
    ) -> Result<(Applied, Vec<Mutation>)> {
        let (mut meta, expires_at_ms) = match self.list(key)? {
            Some(found) => found,
            None if only_if_exists => return Ok((Applied::NotFound, vec![])),
            None => (ListMeta::new(seq.0), 0),
        };
        let mut mutations = Vec::with_capacity(values.len() + 1);
        for value in values {
            let pos = match end {
                End::Left => {
                    meta.head = meta.head.wrapping_sub(1);
                    0
                }
                End::Right => meta.len,
            };
            meta.len += 1;
            let element = meta.element(key, pos);
            mutations.push(Mutation::put(element, ValueKind::String, value.clone(), 0));
        }
        mutations.push(Mutation::put(
            key.clone(),
            ValueKind::List,
            meta.encode(),
            expires_at_ms,
        ));
        Ok((Applied::Len(meta.len, seq), mutations))
    }

    pub(super) fn pop(
        &self,
        seq: Seq,
        key: &Bytes,
        end: End,
        count: u64,
        max_bytes: u64,
    ) -> Result<(Applied, Vec<Mutation>)> {
        let Some((mut meta, expires_at_ms)) = self.list(key)? else {
            return Ok((Applied::NotFound, vec![]));
        };
        let taken = count.min(meta.len);
        if taken == 0 {
            return Ok((Applied::Popped(vec![], None), vec![]));
        }
        let mut values = Vec::new();
        let mut mutations = Vec::new();
        let mut bytes = 0;
        for _ in 0..taken {
            let pos = match end {
                End::Left => 0,
                End::Right => meta.len - 1,
            };
            let element = meta.element(key, pos);
            let value = self
                .live(&element)?
                .ok_or_else(|| ListMeta::missing_element(key))?;
            bytes += value.value.len() as u64;
            if bytes > max_bytes && !values.is_empty() {
                break;
            }
            values.push(value.value);
            mutations.push(Mutation::Delete { key: element });
            if end == End::Left {
                meta.head = meta.head.wrapping_add(1);
            }
            meta.len -= 1;
        }
        mutations.push(meta_write(
            key,
            ValueKind::List,
            meta.len,
            meta.encode(),
            expires_at_ms,
        ));
        Ok((Applied::Popped(values, Some(seq)), mutations))
    }

    /// The set, hash or sorted set of `kind` at `key` (see `collection_meta`).
    pub(super) fn collection(
        &self,
        key: &Bytes,
        kind: ValueKind,
    ) -> Result<Option<(MemberMeta, u64)>> {
        self.collection_meta(key, kind, MemberMeta::decode)
    }

    /// Up to `limit` live element keys under `prefix` from `end` (`Left`:
    /// the first in byte order, first; `Right`: the last, last first), as
    /// of the ops ordered so far: the disk's, with this batch's writes
    /// under the prefix laid over them.
    pub(super) fn edge_elements(
        &self,
        prefix: &[u8],
        limit: usize,
        end: End,
    ) -> Result<Vec<Bytes>> {
        let pending: Vec<_> = self
            .overlay
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        // Each pending delete may hide one of the disk's entries at `end`.
        let hidden = pending.iter().filter(|(_, v)| v.is_none()).count();
        let mut found: std::collections::BTreeSet<Bytes> = self
            .disk
            .edge_keys_with_prefix(prefix, limit.saturating_add(hidden), end)?
            .into_iter()
            .filter(|k| !self.overlay.contains_key(k))
            .collect();
        found.extend(
            pending
                .into_iter()
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.clone()),
        );
        Ok(match end {
            End::Left => found.into_iter().take(limit).collect(),
            End::Right => found.into_iter().rev().take(limit).collect(),
        })
    }

    /// The element keys a pop of `count` from `end` under `prefix` takes:
    /// no more than fit `max_bytes` (counting what follows the prefix),
    /// one at least.
    pub(super) fn pop_elements(
        &self,
        prefix: &[u8],
        count: u64,
        end: End,
        max_bytes: u64,
    ) -> Result<Vec<Bytes>> {
        let limit = usize::try_from(count).unwrap_or(usize::MAX);
        let mut taken = self.edge_elements(prefix, limit, end)?;
        let mut bytes = 0;
        if let Some(fit) = taken.iter().position(|element| {
            bytes += (element.len() - prefix.len()) as u64;
            bytes > max_bytes
        }) {
            taken.truncate(fit.max(1));
        }
        Ok(taken)
    }

    pub(super) fn add_members(
        &self,
        seq: Seq,
        key: &Bytes,
        kind: ValueKind,
        members: &[(Bytes, Bytes)],
        only_new: bool,
    ) -> Result<(Applied, Vec<Mutation>)> {
        let (mut meta, expires_at_ms) = self
            .collection(key, kind)?
            .unwrap_or((MemberMeta::new(seq.0), 0));
        // What this op wrote so far, by element key: it sees its own writes.
        let mut written: HashMap<Bytes, Bytes> = HashMap::new();
        let mut added = 0;
        for (name, value) in members {
            let element = meta.member(key, name);
            let current = match written.get(&element) {
                Some(v) => Some(v.clone()),
                None => self.live(&element)?.map(|v| v.value),
            };
            match current {
                Some(_) if only_new => continue,
                Some(v) if v == *value => continue,
                Some(_) => {}
                None => added += 1,
            }
            written.insert(element, value.clone());
        }
        if written.is_empty() {
            return Ok((Applied::Counted(0, None), vec![]));
        }
        meta.len += added;
        let mut mutations: Vec<Mutation> = written
            .into_iter()
            .map(|(element, value)| Mutation::put(element, ValueKind::String, value, 0))
            .collect();
        if added > 0 {
            mutations.push(meta_write(
                key,
                kind,
                meta.len,
                meta.encode(),
                expires_at_ms,
            ));
        }
        Ok((Applied::Counted(added, Some(seq)), mutations))
    }

    pub(super) fn remove_members(
        &self,
        seq: Seq,
        key: &Bytes,
        kind: ValueKind,
        members: &[Bytes],
    ) -> Result<(Applied, Vec<Mutation>)> {
        let Some((mut meta, expires_at_ms)) = self.collection(key, kind)? else {
            return Ok((Applied::Counted(0, None), vec![]));
        };
        let mut removed = std::collections::HashSet::new();
        // A sorted-set member's rank entry, named by its score.
        let mut ranks = Vec::new();
        for name in members {
            let element = match kind {
                ValueKind::SortedSet => meta.member(key, &sorted::score_name(name)),
                _ => meta.member(key, name),
            };
            if removed.contains(&element) {
                continue;
            }
            let Some(found) = self.live(&element)? else {
                continue;
            };
            if kind == ValueKind::SortedSet {
                let score = sorted::decode_score(key, &found.value)?;
                let rank = meta.member(key, &sorted::rank_name(score, name));
                ranks.push(Mutation::Delete { key: rank });
            }
            removed.insert(element);
        }
        if removed.is_empty() {
            return Ok((Applied::Counted(0, None), vec![]));
        }
        let n = removed.len() as u64;
        meta.len = meta.len.saturating_sub(n);
        let mut mutations: Vec<Mutation> = removed
            .into_iter()
            .map(|key| Mutation::Delete { key })
            .collect();
        mutations.extend(ranks);
        mutations.push(meta_write(
            key,
            kind,
            meta.len,
            meta.encode(),
            expires_at_ms,
        ));
        Ok((Applied::Counted(n, Some(seq)), mutations))
    }

    pub(super) fn pop_members(
        &self,
        seq: Seq,
        key: &Bytes,
        count: u64,
        max_bytes: u64,
    ) -> Result<(Applied, Vec<Mutation>)> {
        let Some((mut meta, expires_at_ms)) = self.collection(key, ValueKind::Set)? else {
            return Ok((Applied::NotFound, vec![]));
        };
        let prefix = meta.prefix(key);
        let taken = self.pop_elements(&prefix, count.min(meta.len), End::Left, max_bytes)?;
        if taken.is_empty() {
            return Ok((Applied::Popped(vec![], None), vec![]));
        }
        meta.len = meta.len.saturating_sub(taken.len() as u64);
        let names = taken
            .iter()
            .map(|element| element.slice(prefix.len()..))
            .collect();
        let mut mutations: Vec<Mutation> = taken
            .into_iter()
            .map(|key| Mutation::Delete { key })
            .collect();
        mutations.push(meta_write(
            key,
            ValueKind::Set,
            meta.len,
            meta.encode(),
            expires_at_ms,
        ));
        Ok((Applied::Popped(names, Some(seq)), mutations))
    }

    pub(super) fn incr_field(
        &self,
        seq: Seq,
        key: &Bytes,
        field: &Bytes,
        delta: i64,
    ) -> Result<(Applied, Vec<Mutation>)> {
        let (mut meta, expires_at_ms) = self
            .collection(key, ValueKind::Hash)?
            .unwrap_or((MemberMeta::new(seq.0), 0));
        let element = meta.member(key, field);
        let current = self.live(&element)?;
        let base = match &current {
            Some(v) => parse_i64(&v.value)?,
            None => 0,
        };
        let value = base.checked_add(delta).ok_or(StoreError::Overflow)?;
        let put = Mutation::put(element, ValueKind::String, value.to_string().into(), 0);
        let mut mutations = vec![put];
        if current.is_none() {
            meta.len += 1;
            mutations.push(meta_write(
                key,
                ValueKind::Hash,
                meta.len,
                meta.encode(),
                expires_at_ms,
            ));
        }
        Ok((Applied::Int(value, seq), mutations))
    }

    pub(super) fn reclaim(&self, seq: Seq, elements: &[Bytes]) -> Result<(Applied, Vec<Mutation>)> {
        let mut deletes = Vec::new();
        for element in elements {
            let Some((owner, id)) = crate::store::keys::collection_of(element) else {
                continue;
            };
            let owner = Bytes::copy_from_slice(owner);
            let value = self.current(&owner)?;
            if !holds_collection(&owner, value.as_ref(), id, self.now_ms)? {
                deletes.push(Mutation::Delete {
                    key: element.clone(),
                });
            }
        }
        let n = deletes.len() as u64;
        let seq = (n > 0).then_some(seq);
        Ok((Applied::Counted(n, seq), deletes))
    }

    /// Deletes of the members of the set, hash or sorted set (`kind`)
    /// whose metadata is `meta`.
    pub(super) fn member_deletes(
        &self,
        key: &Bytes,
        kind: ValueKind,
        meta: &[u8],
    ) -> Result<Vec<Mutation>> {
        let meta = MemberMeta::decode(key, meta)?;
        let per_member = match kind {
            ValueKind::SortedSet => sorted::KEYS_PER_MEMBER,
            _ => 1,
        };
        let elements = meta.len.saturating_mul(per_member);
        if elements > EAGER_ELEMENT_DELETES {
            return Ok(vec![]);
        }
        let elements = self.edge_elements(&meta.prefix(key), elements as usize, End::Left)?;
        Ok(elements
            .into_iter()
            .map(|key| Mutation::Delete { key })
            .collect())
    }
}

/// The metadata write that leaves the collection of `kind` at `key` `len`
/// long: its new metadata (`meta`, encoded), or its delete once empty.
pub(super) fn meta_write(
    key: &Bytes,
    kind: ValueKind,
    len: u64,
    meta: Bytes,
    expires_at_ms: u64,
) -> Mutation {
    if len == 0 {
        Mutation::Delete { key: key.clone() }
    } else {
        Mutation::put(key.clone(), kind, meta, expires_at_ms)
    }
}

/// Most elements a delete of a list removes in its own record; a longer
/// list's elements stay behind, unreachable (the list's id names them).
const EAGER_ELEMENT_DELETES: u64 = 10_000;

/// Deletes of the elements of the list whose metadata is `meta`.
pub(super) fn list_elements(key: &Bytes, meta: &[u8]) -> Result<Vec<Mutation>> {
    let meta = ListMeta::decode(key, meta)?;
    if meta.len > EAGER_ELEMENT_DELETES {
        return Ok(vec![]);
    }
    Ok((0..meta.len)
        .map(|pos| Mutation::Delete {
            key: meta.element(key, pos),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::BatchState;
    use crate::types::{End, Seq};
    use crate::wal::{Mutation, WalRecord};

    fn put(key: &str) -> Mutation {
        Mutation::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b""),
            expires_at_ms: 0,
        }
    }

    fn delete(key: &str) -> Mutation {
        Mutation::Delete {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    /// A pop from either end sees its batch's earlier writes: pending
    /// deletes hide the disk's entries at that end, pending puts join them.
    #[test]
    fn edge_elements_lay_the_batch_over_the_disk() {
        let (_dir, disk, memory) = super::super::tests::scratch_tiers();
        // One hash tag, so one slot, as a collection's elements share
        // theirs; `{p}0` and `{p}b` lie just outside the prefix `{p}a`.
        let on_disk = ["{p}0", "{p}a1", "{p}a2", "{p}a3", "{p}a4", "{p}a5", "{p}b"]
            .map(put)
            .to_vec();
        disk.apply(&[WalRecord {
            seq: Seq(1),
            mutations: on_disk,
        }])
        .unwrap();
        let mut state = BatchState::new(&disk, &memory, 0);
        let batch = [
            delete("{p}a5"),
            delete("{p}a4"),
            put("{p}a6"),
            delete("{p}a1"),
            put("{p}a0"),
        ];
        state.record(Seq(2), &batch);
        let edge = |end| state.edge_elements(b"{p}a", 2, end).unwrap();
        assert_eq!(edge(End::Right), [&b"{p}a6"[..], b"{p}a3"]);
        assert_eq!(edge(End::Left), [&b"{p}a0"[..], b"{p}a2"]);
    }
}
