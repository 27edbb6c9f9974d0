//! What the load generator sends: the key space and how keys are drawn
//! (uniform or zipfian), the GET:SET mix, and self-checking values.
//!
//! No I/O here: everything is a pure function of its inputs and a seeded
//! [`Rng`], so the unit tests below pin the behaviour down.

use std::fmt;
use std::str::FromStr;

/// Bytes at the start of every value: `[u32 LE crc32][u32 LE generation]`.
/// The CRC covers the key followed by every value byte after it, so a value
/// returned for the wrong key, truncated or altered fails the check.
pub const VALUE_HEADER_BYTES: usize = 8;

/// The key prefix; the rest of the key is the zero-padded key index.
const KEY_PREFIX: &[u8] = b"key:";

/// A fast, seedable generator (splitmix64). Not cryptographic; one per task,
/// so no locking on the hot path.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)` (Lemire's multiply-shift; the bias is below
    /// 2^-32 for any key space this tool accepts).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The splitmix64 finaliser: a bijective 64-bit mix.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The keys `key:000…0` to `key:<K-1>`, all exactly `key_size` bytes.
#[derive(Debug, Clone)]
pub struct KeySpace {
    keys: u64,
    key_size: usize,
}

impl KeySpace {
    /// # Errors
    ///
    /// When `key_size` cannot hold the prefix and the largest index.
    pub fn new(keys: u64, key_size: usize) -> Result<KeySpace, String> {
        if keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        let digits = (keys - 1).to_string().len();
        let min = KEY_PREFIX.len() + digits;
        if key_size < min {
            return Err(format!(
                "--key-size {key_size} is too small for {keys} keys: \"key:\" plus {digits} \
                 digits needs at least {min} bytes"
            ));
        }
        Ok(KeySpace { keys, key_size })
    }

    pub fn len(&self) -> u64 {
        self.keys
    }

    pub fn key_size(&self) -> usize {
        self.key_size
    }

    /// The key with index `index` (`< len()`).
    pub fn key(&self, index: u64) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.key_size);
        key.extend_from_slice(KEY_PREFIX);
        let digits = index.to_string();
        key.resize(self.key_size - digits.len(), b'0');
        key.extend_from_slice(digits.as_bytes());
        key
    }
}

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Key of popularity rank `k` drawn with probability ∝ `1 / k^s`.
    Zipf(f64),
}

impl FromStr for Distribution {
    type Err = String;

    fn from_str(text: &str) -> Result<Distribution, String> {
        match text.split_once(':') {
            None if text == "uniform" => Ok(Distribution::Uniform),
            None if text == "zipf" => Ok(Distribution::Zipf(0.99)),
            Some(("zipf", s)) => {
                let s: f64 = s
                    .parse()
                    .map_err(|_| format!("zipf exponent {s:?} is not a number"))?;
                if !(s > 0.0 && s <= 100.0) {
                    return Err(format!(
                        "zipf exponent {s} out of range (0, 100]; use `uniform` for none"
                    ));
                }
                Ok(Distribution::Zipf(s))
            }
            _ => Err(format!(
                "unknown distribution {text:?}: expected uniform, zipf or zipf:S (e.g. zipf:0.99)"
            )),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distribution::Uniform => f.write_str("uniform"),
            Distribution::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// Draws key indexes in `[0, n)` following a [`Distribution`].
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform { n: u64 },
    Zipf { sampler: Zipf, n: u64 },
}

/// A prime above any key count accepted: multiplying by it modulo `n` is a
/// bijection on `[0, n)`, which scatters the popular ranks over the key
/// space (as YCSB's scrambled zipfian does) so that hot keys are not
/// neighbours on disk.
const SCRAMBLE_PRIME: u128 = (1 << 61) - 1;

impl KeyChooser {
    pub fn new(distribution: Distribution, n: u64) -> KeyChooser {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform { n },
            Distribution::Zipf(s) => KeyChooser::Zipf {
                sampler: Zipf::new(n, s),
                n,
            },
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform { n } => rng.below(*n),
            KeyChooser::Zipf { sampler, n } => {
                let rank0 = sampler.sample(rng) - 1;
                (u128::from(rank0) * SCRAMBLE_PRIME % u128::from(*n)) as u64
            }
        }
    }
}

/// Zipf distribution over ranks `1..=n` by rejection-inversion (W. Hörmann
/// and G. Derflinger, "Rejection-inversion to generate variates from
/// monotone discrete distributions", ACM TOMACS 6(3), 1996), as in Apache
/// Commons RNG's `RejectionInversionZipfSampler`: O(1) memory and setup, on
/// average close to one uniform draw per sample, any exponent `s > 0`
/// (including 1).
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    /// The squeeze: accept without evaluating `h` when `k - x <= threshold`.
    threshold: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        assert!(n >= 1 && s > 0.0, "zipf needs n >= 1 and s > 0");
        let mut z = Zipf {
            n: n as f64,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            threshold: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(z.n + 0.5);
        z.threshold = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in `1..=n`, 1 being the most frequent.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    /// `h(x) = 1 / x^s`.
    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    /// An antiderivative of `h`, shifted so that it is continuous in `s`.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

/// The GET:SET mix, as relative weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub get: u32,
    pub set: u32,
}

impl Mix {
    /// Whether the next operation is a GET.
    pub fn next_is_get(&self, rng: &mut Rng) -> bool {
        rng.below(u64::from(self.get) + u64::from(self.set)) < u64::from(self.get)
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let (get, set) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not GET:SET (e.g. 90:10)"))?;
        let weight = |w: &str| {
            w.trim()
                .parse::<u32>()
                .map_err(|_| format!("{w:?} in {text:?} is not a whole number"))
        };
        let mix = Mix {
            get: weight(get)?,
            set: weight(set)?,
        };
        if u64::from(mix.get) + u64::from(mix.set) == 0 {
            return Err("the GET:SET ratio needs at least one non-zero side".into());
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.get, self.set)
    }
}

/// A value of `len` bytes (`len >= VALUE_HEADER_BYTES`) for `key`: the
/// header, then the key itself (as much as fits), then bytes drawn from a
/// generator seeded by the key and `generation`. The content depends only
/// on key, generation and length, so values written by any run (whatever
/// its flags) check out in any later run.
pub fn make_value(key: &[u8], generation: u32, len: usize) -> Vec<u8> {
    debug_assert!(len >= VALUE_HEADER_BYTES);
    let mut value = vec![0u8; len];
    value[4..8].copy_from_slice(&generation.to_le_bytes());
    fill_body(key, generation, &mut value[VALUE_HEADER_BYTES..]);
    let crc = value_crc(key, &value[4..]);
    value[..4].copy_from_slice(&crc.to_le_bytes());
    value
}

/// Why a value read back is not one this tool could have written for its
/// key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadValue(pub String);

impl fmt::Display for BadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `value` is exactly what [`make_value`] makes for `key` at the
/// generation and length the value carries.
///
/// # Errors
///
/// A description of the first problem found.
pub fn check_value(key: &[u8], value: &[u8]) -> Result<(), BadValue> {
    let key_text = String::from_utf8_lossy(key);
    if value.len() < VALUE_HEADER_BYTES {
        return Err(BadValue(format!(
            "key {key_text}: value of {} bytes, shorter than the {VALUE_HEADER_BYTES}-byte header",
            value.len()
        )));
    }
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&value[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let stored = word(0);
    let computed = value_crc(key, &value[4..]);
    if stored != computed {
        let body = &value[VALUE_HEADER_BYTES..];
        let embedded = &body[..key.len().min(body.len())];
        let owner = if embedded != key && embedded.starts_with(KEY_PREFIX) {
            format!(" (a value for key {})", String::from_utf8_lossy(embedded))
        } else {
            String::new()
        };
        return Err(BadValue(format!(
            "key {key_text}: checksum {stored:#010x} stored, {computed:#010x} computed over \
             {} bytes{owner}",
            value.len()
        )));
    }
    let generation = word(4);
    let mut expected = vec![0u8; value.len() - VALUE_HEADER_BYTES];
    fill_body(key, generation, &mut expected);
    if let Some(at) = expected
        .iter()
        .zip(&value[VALUE_HEADER_BYTES..])
        .position(|(a, b)| a != b)
    {
        return Err(BadValue(format!(
            "key {key_text}: checksum matches but byte {} differs from generation \
             {generation}'s content",
            at + VALUE_HEADER_BYTES
        )));
    }
    Ok(())
}

fn value_crc(key: &[u8], rest: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key);
    h.update(rest);
    h.finalize()
}

fn fill_body(key: &[u8], generation: u32, body: &mut [u8]) {
    let n = key.len().min(body.len());
    body[..n].copy_from_slice(&key[..n]);
    let seed = u64::from(crc32fast::hash(key)) << 32 | u64::from(generation);
    let mut rng = Rng::new(mix64(seed));
    for chunk in body[n..].chunks_mut(8) {
        let word = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_to_the_key_size() {
        let space = KeySpace::new(100_000, 16).unwrap();
        assert_eq!(space.key(0), b"key:000000000000");
        assert_eq!(space.key(99_999), b"key:000000099999");
        assert_eq!(KeySpace::new(1000, 7).unwrap().key(999), b"key:999");
        let err = KeySpace::new(1000, 6).unwrap_err();
        assert!(err.contains("at least 7 bytes"), "{err}");
    }

    #[test]
    fn values_check_out_for_their_key_only() {
        let key = b"key:000000000042";
        for len in [8, 9, 16, 24, 100, 1000] {
            let value = make_value(key, 7, len);
            assert_eq!(value.len(), len);
            check_value(key, &value).unwrap();
            assert!(check_value(b"key:000000000043", &value).is_err());
        }
        let value = make_value(key, 7, 100);
        assert_ne!(value, make_value(key, 8, 100), "generations differ");
        let mut flipped = value.clone();
        flipped[60] ^= 1;
        assert!(check_value(key, &flipped).is_err());
        assert!(check_value(key, &value[..99]).is_err(), "truncated");
        assert!(
            check_value(key, &value[..4]).is_err(),
            "shorter than the header"
        );
        let other = make_value(b"key:000000000001", 7, 100);
        let err = check_value(key, &other).unwrap_err().0;
        assert!(
            err.contains("a value for key key:000000000001"),
            "names the owner: {err}"
        );
        let err = check_value(key, b"some other bytes").unwrap_err().0;
        assert!(!err.contains("a value for"), "{err}");
    }

    #[test]
    fn mix_and_distribution_parse() {
        assert_eq!("90:10".parse::<Mix>().unwrap(), Mix { get: 90, set: 10 });
        assert_eq!("0:1".parse::<Mix>().unwrap(), Mix { get: 0, set: 1 });
        assert!("0:0".parse::<Mix>().is_err());
        assert!("90".parse::<Mix>().is_err());
        assert!("a:b".parse::<Mix>().is_err());
        assert_eq!("uniform".parse(), Ok(Distribution::Uniform));
        assert_eq!("zipf".parse(), Ok(Distribution::Zipf(0.99)));
        assert_eq!("zipf:1.2".parse(), Ok(Distribution::Zipf(1.2)));
        assert!("zipf:0".parse::<Distribution>().is_err());
        assert!("zipf:x".parse::<Distribution>().is_err());
        assert!("pareto".parse::<Distribution>().is_err());
    }

    #[test]
    fn mix_follows_the_weights() {
        let mix = Mix { get: 9, set: 1 };
        let mut rng = Rng::new(1);
        let gets = (0..100_000).filter(|_| mix.next_is_get(&mut rng)).count();
        assert!((89_000..91_000).contains(&gets), "{gets}");
        let never = Mix { get: 0, set: 1 };
        assert!((0..1000).all(|_| !never.next_is_get(&mut rng)));
    }

    /// The sampled frequency of each top rank is close to `k^-s / H(n, s)`.
    #[test]
    fn zipf_matches_its_probabilities() {
        for (n, s) in [(1000u64, 0.99), (100, 1.0), (50, 2.0), (10_000, 0.5)] {
            let zipf = Zipf::new(n, s);
            let mut rng = Rng::new(42);
            let draws = 400_000;
            let mut counts = vec![0u64; n as usize + 1];
            for _ in 0..draws {
                let k = zipf.sample(&mut rng);
                assert!((1..=n).contains(&k));
                counts[k as usize] += 1;
            }
            let norm: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
            for k in 1..=5u64 {
                let expected = (k as f64).powf(-s) / norm;
                let got = counts[k as usize] as f64 / draws as f64;
                assert!(
                    (got - expected).abs() < 0.01 + expected * 0.05,
                    "n={n} s={s} rank {k}: {got} vs {expected}"
                );
            }
        }
        // A single key is always rank 1.
        let one = Zipf::new(1, 0.99);
        let mut rng = Rng::new(3);
        assert!((0..100).all(|_| one.sample(&mut rng) == 1));
    }

    #[test]
    fn chooser_stays_in_range_and_scrambles_hot_keys() {
        let n = 1000;
        let chooser = KeyChooser::new(Distribution::Zipf(0.99), n);
        let mut rng = Rng::new(9);
        let mut counts = vec![0u32; n as usize];
        for _ in 0..100_000 {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        let hottest = (0..n as usize).max_by_key(|&i| counts[i]).unwrap();
        assert_eq!(hottest, 0, "rank 1 maps to index 0");
        // Rank 2 is not index 1.
        assert!(counts[1] < counts[0] / 4, "{} vs {}", counts[1], counts[0]);
        let uniform = KeyChooser::new(Distribution::Uniform, 10);
        assert!((0..1000).all(|_| uniform.next(&mut rng) < 10));
    }
}
