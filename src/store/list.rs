//! Lists: a metadata value under the user's key, one internal key per element.
//!
//! The metadata (`ValueKind::List`, all integers little-endian):
//!
//! ```text
//! [u8 format = 1][u64 id][u64 head][u64 len]
//! ```
//!
//! Element `i` (0 = the left end) is stored under
//! `keys::element_key(key, id, (head + i) as u64 BE)`, so the elements sort
//! in list order and a range is one iterator walk. A new list starts with
//! `head` in the middle of the `u64` range, so either end can grow by
//! 2^63 pushes. `id` is the seq that created the list: a list deleted and
//! made again never meets the old one's elements.

use bytes::Bytes;

use super::error::{Result, StoreError};
use super::keys;

/// The first element index of a new list.
const FIRST_HEAD: u64 = 1 << 63;

const META_FORMAT: u8 = 1;
const META_BYTES: usize = 25;

/// A list's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListMeta {
    /// Tells this list's elements from an earlier list's at the same key.
    pub id: u64,
    /// The index of the element at the left end.
    pub head: u64,
    /// How many elements it holds (never 0: an emptied list is deleted).
    pub len: u64,
}

impl ListMeta {
    /// A new, empty list (filled by the push that creates it).
    pub fn new(id: u64) -> ListMeta {
        ListMeta {
            id,
            head: FIRST_HEAD,
            len: 0,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(META_BYTES);
        out.push(META_FORMAT);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.head.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.into()
    }

    pub fn decode(key: &[u8], raw: &[u8]) -> Result<ListMeta> {
        let field = |at: usize| -> Option<u64> {
            raw.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
        };
        let damaged = || StoreError::DamagedValue {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "list metadata of an unknown format",
        };
        if raw.len() != META_BYTES || raw[0] != META_FORMAT {
            return Err(damaged());
        }
        match (field(1), field(9), field(17)) {
            (Some(id), Some(head), Some(len)) => Ok(ListMeta { id, head, len }),
            _ => Err(damaged()),
        }
    }

    /// The error for an element the metadata counts but the disk lacks.
    pub fn missing_element(key: &[u8]) -> StoreError {
        StoreError::DamagedValue {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "a list element is missing",
        }
    }

    /// The element key of the element at list position `pos` (0-based from the left).
    pub fn element(&self, key: &[u8], pos: u64) -> Bytes {
        keys::element_key(key, self.id, &self.head.wrapping_add(pos).to_be_bytes())
    }

    /// The positions an `LRANGE start stop` covers, Redis's way: negative
    /// indexes count from the right end, both ends inclusive, clamped to
    /// the list; `None` when the range is empty.
    pub fn range(&self, start: i64, stop: i64) -> Option<(u64, u64)> {
        index_range(self.len, start, stop)
    }

    /// The position an `LINDEX index` names, if it is inside the list.
    pub fn position(&self, index: i64) -> Option<u64> {
        let len = i64::try_from(self.len).unwrap_or(i64::MAX);
        let pos = if index < 0 { len + index } else { index };
        (0..len).contains(&pos).then_some(pos as u64)
    }
}

/// The positions `start..=stop` name in a sequence `len` long, with
/// Redis's index rules (`LRANGE`, `ZRANGE`): negative counts from the end,
/// out-of-range ends are clamped; `None` when no position is inside.
pub fn index_range(len: u64, start: i64, stop: i64) -> Option<(u64, u64)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let from = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let to = if stop < 0 {
        len + stop
    } else {
        stop.min(len - 1)
    };
    (from <= to && from < len && to >= 0).then_some((from as u64, to as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(len: u64) -> ListMeta {
        ListMeta {
            id: 9,
            head: FIRST_HEAD,
            len,
        }
    }

    #[test]
    fn metadata_round_trips_and_damage_is_an_error() {
        let meta = list(3);
        assert_eq!(ListMeta::decode(b"k", &meta.encode()).unwrap(), meta);
        assert!(ListMeta::decode(b"k", b"\x01short").is_err());
        let mut other = meta.encode().to_vec();
        other[0] = 2;
        assert!(ListMeta::decode(b"k", &other).is_err());
    }

    #[test]
    fn ranges_follow_redis_index_rules() {
        let l = list(5);
        assert_eq!(l.range(0, -1), Some((0, 4)));
        assert_eq!(l.range(0, 99), Some((0, 4)));
        assert_eq!(l.range(-2, -1), Some((3, 4)));
        assert_eq!(l.range(-100, 1), Some((0, 1)));
        assert_eq!(l.range(3, 1), None);
        assert_eq!(l.range(5, 9), None);
        assert_eq!(l.range(0, -6), None);
        assert_eq!(l.position(0), Some(0));
        assert_eq!(l.position(-1), Some(4));
        assert_eq!(l.position(5), None);
        assert_eq!(l.position(-6), None);
    }

    #[test]
    fn elements_sort_in_list_order_across_the_middle() {
        let mut l = list(2);
        l.head = FIRST_HEAD - 1;
        assert!(l.element(b"k", 0) < l.element(b"k", 1));
        assert!(l.element(b"k", 1) < l.element(b"k", 2));
        assert!(keys::is_internal(&l.element(b"k", 0)));
    }
}
