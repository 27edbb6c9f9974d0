//! How a user's key is laid out in the disk tier: behind its cluster slot.
//!
//! ```text
//! [u16 slot, big-endian][key bytes ...]
//! ```
//!
//! Big-endian, so RocksDB's bytewise order is slot order: each slot is one
//! contiguous range, and moving a slot to another shard is a range scan
//! (DESIGN C5). Within a slot, keys sort bytewise. The slot is Redis
//! Cluster's (`cluster::key_slot`), so keys sharing a `{tag}` sit together.
//!
//! A collection's elements are stored under *internal* keys in its key's
//! slot, which no client may name:
//!
//! ```text
//! [ff ff ff ff][u32 BE key length][key][u64 BE collection id][element ...]
//! ```
//!
//! A key greater than `ff ff ff ff` bytewise starts with it, so a slot's
//! internal keys are the tail of its range and a scan of user keys stops
//! at the first one. The id (the seq that created the collection) keeps a
//! deleted collection's leftover elements apart from a new one's.

use crate::cluster::{SLOTS, Slot, hashed_part, key_slot};

/// Bytes in front of every disk-tier key.
pub const SLOT_PREFIX_BYTES: usize = 2;

/// What every internal key starts with; user keys may not.
pub const INTERNAL_PREFIX: [u8; 4] = [0xff; 4];

/// Whether `key` is internal (a collection's element), not a user's key.
pub fn is_internal(key: &[u8]) -> bool {
    key.starts_with(&INTERNAL_PREFIX)
}

/// The prefix of every element key of the collection `id` at `key`.
pub fn element_prefix(key: &[u8], id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(INTERNAL_PREFIX.len() + 12 + key.len());
    out.extend_from_slice(&INTERNAL_PREFIX);
    // A key is at most `max_key_bytes` (well below 4 GiB) long.
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// The element key `element` of the collection `id` at `key`.
pub fn element_key(key: &[u8], id: u64, element: &[u8]) -> bytes::Bytes {
    let mut out = element_prefix(key, id);
    out.extend_from_slice(element);
    out.into()
}

/// The user key an internal key belongs to; `None` for a user key (or an
/// internal key too short to name one, which only damage makes).
fn owner(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(&INTERNAL_PREFIX)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    rest.get(..u32::from_be_bytes(*len) as usize)
}

/// The user key and collection id an element key belongs to; `None` for a
/// user key or a damaged internal key.
pub fn collection_of(key: &[u8]) -> Option<(&[u8], u64)> {
    let owner = owner(key)?;
    let at = INTERNAL_PREFIX.len() + 4 + owner.len();
    let id = key
        .get(at..at + 8)?
        .try_into()
        .ok()
        .map(u64::from_be_bytes)?;
    Some((owner, id))
}

/// The least key greater than every key that starts with `prefix`, or
/// `None` when there is none (the prefix is all `ff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|b| *b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// The slot a stored key lives in: its own, or for an internal key its
/// owner's, so a collection moves with its key.
pub fn store_slot(key: &[u8]) -> Slot {
    key_slot(owner(key).unwrap_or(key))
}

/// The disk-tier key of `key`.
pub fn disk_key(key: &[u8]) -> Vec<u8> {
    slot_key(store_slot(key), key)
}

/// `key` behind `slot` (the caller vouches that it is the key's slot, or
/// wants a seek position inside that slot's range).
pub fn slot_key(slot: Slot, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_PREFIX_BYTES + key.len());
    out.extend_from_slice(&slot.get().to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The slot and user key of a disk-tier key; `None` for a key too short to
/// hold a slot (damage: every stored key has one).
pub fn split(disk_key: &[u8]) -> Option<(Slot, &[u8])> {
    let (slot, key) = disk_key.split_first_chunk::<SLOT_PREFIX_BYTES>()?;
    Some((Slot::new(u16::from_be_bytes(*slot))?, key))
}

/// The slots a scan for `prefix` must visit: the one slot of its hash tag
/// when the prefix holds a complete `{tag}` (every key starting with it
/// hashes that tag), else all of them.
pub fn scan_slots(prefix: &[u8]) -> (u16, u16) {
    if hashed_part(prefix).len() < prefix.len() {
        let slot = key_slot(prefix).get();
        (slot, slot)
    } else {
        (0, SLOTS - 1)
    }
}

/// Where a scan resumes: the first position after `after` in (slot, key)
/// order, as the slot to start in and, if the start lies inside that
/// slot's prefix range, the key to skip up to (inclusive).
pub fn resume_point<'a>(prefix: &[u8], after: Option<&'a [u8]>) -> (u16, Option<&'a [u8]>) {
    let (first, last) = scan_slots(prefix);
    let Some(after) = after else {
        return (first, None);
    };
    let slot = key_slot(after).get();
    if slot < first {
        (first, None)
    } else if slot > last {
        // Past every slot of the scan: an empty, final page.
        (SLOTS, None)
    } else {
        (slot, Some(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_key_is_the_big_endian_slot_then_the_key() {
        // "foo" is slot 12182 = 0x2f96 in Redis Cluster.
        assert_eq!(disk_key(b"foo"), b"\x2f\x96foo");
        assert_eq!(
            split(b"\x2f\x96foo"),
            Some((Slot::new(12182).unwrap(), &b"foo"[..]))
        );
        assert_eq!(split(b"\x2f"), None);
        assert_eq!(split(b"\xff\xfffoo"), None, "slot 65535 does not exist");
    }

    #[test]
    fn an_element_key_names_its_collection() {
        let element = element_key(b"{user}:list", 7, b"\x01\x02");
        assert_eq!(collection_of(&element), Some((&b"{user}:list"[..], 7)));
        assert_eq!(collection_of(b"{user}:list"), None, "a user key");
        assert_eq!(
            collection_of(&element[..element.len() - 3]),
            None,
            "cut short"
        );
    }

    #[test]
    fn an_element_key_lives_in_its_owners_slot_after_every_user_key() {
        let element = element_key(b"{user}:list", 7, b"\x01");
        assert!(is_internal(&element));
        assert!(!is_internal(b"\xff\xff\xffx"));
        assert_eq!(store_slot(&element), key_slot(b"user"));
        assert_eq!(store_slot(b"{user}:list"), key_slot(b"user"));
        assert!(element.starts_with(&element_prefix(b"{user}:list", 7)));
        let slot = key_slot(b"user");
        assert!(slot_key(slot, b"\xff\xff\xff\xfe\xff") < disk_key(&element));
        // A damaged internal key too short to name its owner keeps its own slot.
        assert_eq!(store_slot(&INTERNAL_PREFIX), key_slot(&INTERNAL_PREFIX));
    }

    #[test]
    fn a_prefix_end_bounds_exactly_the_keys_under_it() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        let end = prefix_end(&[7, 0xfe]).unwrap();
        assert!([7, 0xfe, 0xff, 0xff].as_slice() < end.as_slice());
        assert!(end.as_slice() <= [7, 0xff].as_slice());
    }

    #[test]
    fn slot_order_is_byte_order() {
        let a = slot_key(Slot::new(255).unwrap(), b"zzz");
        let b = slot_key(Slot::new(256).unwrap(), b"aaa");
        assert!(a < b);
    }

    #[test]
    fn a_prefix_with_a_complete_tag_scans_one_slot() {
        let tag = key_slot(b"user").get();
        assert_eq!(scan_slots(b"{user}:"), (tag, tag));
        assert_eq!(scan_slots(b"x{user}"), (tag, tag));
        assert_eq!(scan_slots(b"{user"), (0, SLOTS - 1), "no closing brace");
        assert_eq!(
            scan_slots(b"{}user"),
            (0, SLOTS - 1),
            "an empty tag hashes the whole key"
        );
        assert_eq!(scan_slots(b""), (0, SLOTS - 1));
    }

    #[test]
    fn a_scan_resumes_in_the_cursors_slot() {
        let slot = key_slot(b"user:7").get();
        assert_eq!(
            resume_point(b"user:", Some(b"user:7")),
            (slot, Some(&b"user:7"[..]))
        );
        assert_eq!(resume_point(b"user:", None), (0, None));
        let tag = key_slot(b"t").get();
        // A cursor in an earlier slot than the tag's starts at the tag's slot.
        let before = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| key_slot(k.as_bytes()).get() < tag)
            .unwrap();
        assert_eq!(resume_point(b"{t}", Some(before.as_bytes())), (tag, None));
        let after = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| key_slot(k.as_bytes()).get() > tag)
            .unwrap();
        assert_eq!(resume_point(b"{t}", Some(after.as_bytes())), (SLOTS, None));
    }
}
