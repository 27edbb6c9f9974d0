//! Sets and hashes: a metadata value under the user's key, one internal
//! key per member. Sorted sets share the metadata (`sorted.rs`).
//!
//! The metadata (`ValueKind::Set`, `Hash` or `SortedSet`, integers
//! little-endian):
//!
//! ```text
//! [u8 format = 1][u64 id][u64 len]
//! ```
//!
//! Member `m` is stored under `keys::element_key(key, id, m)`, holding a
//! hash field's value (nothing for a set's member), so the members sort
//! bytewise and listing them is one iterator walk. `id` is the seq that
//! created the collection, as for lists (`list.rs`).

use bytes::Bytes;

use super::error::{Result, StoreError};
use super::keys;

const META_FORMAT: u8 = 1;
const META_BYTES: usize = 17;

/// A set's or a hash's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberMeta {
    /// Tells this collection's members from an earlier one's at the same key.
    pub id: u64,
    /// How many members it holds (never 0: an emptied collection is deleted).
    pub len: u64,
}

impl MemberMeta {
    /// A new, empty collection (filled by the write that creates it).
    pub fn new(id: u64) -> MemberMeta {
        MemberMeta { id, len: 0 }
    }

    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(META_BYTES);
        out.push(META_FORMAT);
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.into()
    }

    pub fn decode(key: &[u8], raw: &[u8]) -> Result<MemberMeta> {
        let field = |at: usize| -> Option<u64> {
            raw.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
        };
        let damaged = || StoreError::DamagedValue {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "set, hash or sorted-set metadata of an unknown format",
        };
        if raw.len() != META_BYTES || raw[0] != META_FORMAT {
            return Err(damaged());
        }
        match (field(1), field(9)) {
            (Some(id), Some(len)) => Ok(MemberMeta { id, len }),
            _ => Err(damaged()),
        }
    }

    /// The element key of member `member`.
    pub fn member(&self, key: &[u8], member: &[u8]) -> Bytes {
        keys::element_key(key, self.id, member)
    }

    /// What every member's element key starts with.
    pub fn prefix(&self, key: &[u8]) -> Vec<u8> {
        keys::element_prefix(key, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_damage_is_an_error() {
        let meta = MemberMeta { id: 7, len: 3 };
        assert_eq!(MemberMeta::decode(b"k", &meta.encode()).unwrap(), meta);
        assert_eq!(meta.encode().len(), META_BYTES);
        assert!(MemberMeta::decode(b"k", b"\x01short").is_err());
        let mut other = meta.encode().to_vec();
        other[0] = 2;
        assert!(MemberMeta::decode(b"k", &other).is_err());
        let member = meta.member(b"k", b"m");
        assert!(member.starts_with(&meta.prefix(b"k")));
        assert_eq!(keys::collection_of(&member), Some((&b"k"[..], 7)));
    }
}
