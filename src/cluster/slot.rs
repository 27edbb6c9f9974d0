//! Key → slot: Redis Cluster's CRC16 and hash tags, bit for bit, so a key
//! lands in the same slot here as in Redis (proto-docs/cluster.md §1).

use std::fmt;

/// How many slots the key space is cut into: Redis Cluster's number, so
/// slot numbers mean the same thing in both.
pub const SLOTS: u16 = 16384;

/// One of the [`SLOTS`] slots; always below `SLOTS`, so a slot table can be
/// indexed by it without a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u16);

impl Slot {
    /// Slot 0, where the key space starts.
    pub const FIRST: Slot = Slot(0);

    /// The slot numbered `n`, if `n < SLOTS`.
    pub const fn new(n: u16) -> Option<Slot> {
        if n < SLOTS { Some(Slot(n)) } else { None }
    }

    /// The slot's number, `0..SLOTS`.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Every slot, in order.
    pub fn all() -> impl DoubleEndedIterator<Item = Slot> + ExactSizeIterator {
        (0..SLOTS).map(Slot)
    }

    pub(crate) const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A set of slots, one bit each: which slots a scan may list.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet(Box<[u64; SLOTS as usize / 64]>);

impl SlotSet {
    /// No slot.
    pub fn empty() -> SlotSet {
        SlotSet(Box::new([0; SLOTS as usize / 64]))
    }

    /// Adds `slot`.
    pub fn insert(&mut self, slot: Slot) {
        self.0[slot.index() / 64] |= 1 << (slot.index() % 64);
    }

    /// Whether `slot` is in the set.
    pub fn contains(&self, slot: Slot) -> bool {
        self.0[slot.index() / 64] & (1 << (slot.index() % 64)) != 0
    }

    /// The first slot of the set numbered `n` or higher.
    pub fn first_from(&self, n: u16) -> Option<Slot> {
        let mut word = usize::from(n) / 64;
        let mut bits = *self.0.get(word)? & (u64::MAX << (n % 64));
        loop {
            if bits != 0 {
                // Below SLOTS: the word index is below SLOTS / 64.
                return Slot::new((word * 64) as u16 + bits.trailing_zeros() as u16);
            }
            word += 1;
            bits = *self.0.get(word)?;
        }
    }

    /// How many slots the set holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the set holds no slot.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

impl FromIterator<Slot> for SlotSet {
    fn from_iter<I: IntoIterator<Item = Slot>>(iter: I) -> SlotSet {
        let mut set = SlotSet::empty();
        iter.into_iter().for_each(|slot| set.insert(slot));
        set
    }
}

impl fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotSet({} slots)", self.len())
    }
}

/// The slot of `key`: CRC16 of its hashed part ([`hashed_part`]) mod [`SLOTS`].
pub fn key_slot(key: &[u8]) -> Slot {
    // SLOTS is a power of two: the mod is a mask.
    Slot(crc16(hashed_part(key)) & (SLOTS - 1))
}

/// The bytes of `key` that decide its slot (Redis's hash tag rule): when
/// the key has a `{` and, after the first `{`, a `}` with at least one byte
/// between them, only the bytes between that `{` and the first `}` after
/// it; otherwise the whole key. Keys sharing a tag share a slot, which is
/// what lets a multi-key request stay on one shard.
pub fn hashed_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let after_open = &key[open + 1..];
    match after_open.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &after_open[..close],
        _ => key,
    }
}

/// CRC16-CCITT in its XMODEM form, Redis Cluster's key hash: polynomial
/// 0x1021, initial value 0, no reflection, no final xor.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0, |crc, &byte| {
        let index = (crc >> 8) as u8 ^ byte;
        (crc << 8) ^ CRC16_TABLE[usize::from(index)]
    })
}

const CRC16_POLY: u16 = 0x1021;

/// The CRC of each byte value shifted into the top of the register, so
/// [`crc16`] takes one lookup per byte instead of eight shifts.
const CRC16_TABLE: [u16; 256] = crc16_table();

const fn crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ CRC16_POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit-at-a-time definition, to check the table against.
    fn crc16_bitwise(data: &[u8]) -> u16 {
        let mut crc = 0u16;
        for &byte in data {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ CRC16_POLY
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn crc16_check_value() {
        // The catalogued check value of CRC-16/XMODEM, and the one Redis's
        // crc16.c states.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn crc16_table_matches_the_bitwise_definition() {
        for byte in 0..=255u8 {
            assert_eq!(crc16(&[byte]), crc16_bitwise(&[byte]), "byte {byte:#04x}");
        }
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(crc16(&long), crc16_bitwise(&long));
    }

    #[test]
    fn redis_known_slots() {
        assert_eq!(key_slot(b"foo").get(), 12182);
        assert_eq!(key_slot(b"bar").get(), 5061);
        assert_eq!(key_slot(b"hello").get(), 866);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"").get(), 0);
    }

    #[test]
    fn hash_tag_edge_cases() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"foo", b"foo"),
            (b"{user1000}.following", b"user1000"),
            (b"foo{bar}{zap}", b"bar"),
            (b"foo{{bar}}", b"{bar"),
            (b"foo{}{bar}", b"foo{}{bar}"),
            (b"{}", b"{}"),
            (b"{}x", b"{}x"),
            (b"{", b"{"),
            (b"}", b"}"),
            (b"}{a}", b"a"),
            (b"foo{bar", b"foo{bar"),
            (b"foo}bar{", b"foo}bar{"),
            (b"{a}", b"a"),
            (b"a{b}", b"b"),
            (b"{{}}", b"{"),
            (b"", b""),
        ];
        for &(key, hashed) in cases {
            assert_eq!(
                hashed_part(key),
                hashed,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
            assert_eq!(key_slot(key).get(), crc16(hashed) % SLOTS);
        }
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}"), key_slot(b"{bar"));
    }

    #[test]
    fn slot_bounds() {
        assert_eq!(Slot::new(SLOTS - 1).map(Slot::get), Some(SLOTS - 1));
        assert_eq!(Slot::new(SLOTS), None);
        assert_eq!(Slot::all().len(), usize::from(SLOTS));
        assert_eq!(Slot::all().last(), Slot::new(SLOTS - 1));
    }

    #[test]
    fn slot_sets_find_the_next_member() {
        let slot = |n| Slot::new(n).unwrap();
        let set: SlotSet = [0, 63, 64, 700, SLOTS - 1].into_iter().map(slot).collect();
        assert_eq!(set.len(), 5);
        assert!(set.contains(slot(63)) && !set.contains(slot(62)));
        let walk: Vec<u16> = std::iter::successors(set.first_from(0), |s| {
            s.get().checked_add(1).and_then(|n| set.first_from(n))
        })
        .map(Slot::get)
        .collect();
        assert_eq!(walk, [0, 63, 64, 700, SLOTS - 1]);
        assert_eq!(set.first_from(701), Some(slot(SLOTS - 1)));
        assert_eq!(set.first_from(SLOTS), None);
        assert_eq!(SlotSet::empty().first_from(0), None);
        assert!(SlotSet::empty().is_empty());
    }
}
