//! The textual parts of a request that carry bytes: percent-encoded keys
//! in paths and queries, and versions in `ETag`/`If-Match`. Pure functions,
//! strict: what is not well-formed is refused, never guessed at.

use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

/// What a key is encoded with in JSON replies: every byte but RFC 3986's
/// unreserved characters as `%XX`, so the text goes into a path or a
/// query unchanged.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a piece of a URL or header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding at byte {at} of {what}")]
    BadPercent {
        /// Which part of the request.
        what: &'static str,
        /// Offset of the `%`.
        at: usize,
    },
    /// A query parameter named twice.
    #[error("query parameter {0:?} given twice")]
    Repeated(String),
    /// A version that is not a quoted decimal number.
    #[error("{0}: expected a version as the ETag gives it, e.g. \"42\"")]
    BadVersion(&'static str),
}

/// Percent-decodes `raw` into bytes (binary-safe). With `plus_is_space`
/// (query strings, as HTML forms write them) `+` stands for a space.
pub fn decode(raw: &str, what: &'static str, plus_is_space: bool) -> Result<Bytes, TextError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
                let (Some(hi), Some(lo)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) else {
                    return Err(TextError::BadPercent { what, at: i });
                };
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(Bytes::from(out))
}

/// A key (or cursor) as JSON replies carry it: see [`KEY_SET`].
pub fn encode_key(key: &[u8]) -> String {
    percent_encode(key, KEY_SET).to_string()
}

/// The parameters of a query string, decoded; a name given twice is refused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query(Vec<(String, Bytes)>);

impl Query {
    /// Parses `a=1&b=%00`; a parameter without `=` has an empty value.
    pub fn parse(raw: Option<&str>) -> Result<Query, TextError> {
        let mut params: Vec<(String, Bytes)> = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = String::from_utf8_lossy(&decode(name, "a query parameter name", true)?)
                .into_owned();
            let value = decode(value, "a query parameter value", true)?;
            if params.iter().any(|(n, _)| *n == name) {
                return Err(TextError::Repeated(name));
            }
            params.push((name, value));
        }
        Ok(Query(params))
    }

    /// The raw bytes of parameter `name`.
    pub fn bytes(&self, name: &str) -> Option<&Bytes> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Parameter `name` as UTF-8 text, `Err` with what is wrong otherwise.
    pub fn text(&self, name: &str) -> Result<Option<&str>, String> {
        self.bytes(name)
            .map(|v| std::str::from_utf8(v).map_err(|_| format!("{name}: not UTF-8")))
            .transpose()
    }

    /// Parameter `name` parsed as `T`.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.text(name)?
            .map(|t| t.parse().map_err(|e| format!("{name}={t:?}: {e}")))
            .transpose()
    }

    /// The names of every parameter given, for refusing unknown ones.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }
}

/// A version as an `ETag` carries it: `"42"`.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// The version in an `If-Match` value: one strong entity tag `"42"` (a bare
/// `42` is taken too); `None` for `*`. Lists and weak tags are refused:
/// a compare-and-set names exactly one version.
pub fn if_match_version(value: &str, what: &'static str) -> Result<Option<u64>, TextError> {
    let value = value.trim();
    if value == "*" {
        return Ok(None);
    }
    let inner = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TextError::BadVersion(what));
    }
    inner
        .parse()
        .map(Some)
        .map_err(|_| TextError::BadVersion(what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_binary_safe_and_strict() {
        assert_eq!(decode("a%00%FFb", "k", false).unwrap(), &b"a\0\xffb"[..]);
        assert_eq!(decode("a+b", "k", false).unwrap(), &b"a+b"[..]);
        assert_eq!(decode("a+b", "k", true).unwrap(), &b"a b"[..]);
        assert_eq!(
            decode("ab%zz", "k", false),
            Err(TextError::BadPercent { what: "k", at: 2 })
        );
        assert!(decode("ab%4", "k", false).is_err());
        assert!(decode("%", "k", false).is_err());
    }

    #[test]
    fn encoded_keys_decode_back() {
        let key = b"user:42/\x00\xff caf\xc3\xa9+%&=?#";
        let text = encode_key(key);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))
        );
        assert_eq!(decode(&text, "k", true).unwrap(), &key[..]);
        assert_eq!(decode(&text, "k", false).unwrap(), &key[..]);
        assert_eq!(encode_key(b"plain-key_1.x~"), "plain-key_1.x~");
    }

    #[test]
    fn queries() {
        let q = Query::parse(Some("prefix=a%2Fb&limit=10&flag")).unwrap();
        assert_eq!(q.bytes("prefix").unwrap(), &b"a/b"[..]);
        assert_eq!(q.parsed::<u32>("limit").unwrap(), Some(10));
        assert_eq!(q.text("flag").unwrap(), Some(""));
        assert_eq!(q.text("none").unwrap(), None);
        assert!(q.parsed::<u32>("prefix").is_err());
        assert_eq!(
            Query::parse(Some("a=1&a=2")),
            Err(TextError::Repeated("a".into()))
        );
        assert!(Query::parse(Some("a=%G0")).is_err());
        assert_eq!(Query::parse(None).unwrap(), Query::default());
    }

    #[test]
    fn versions() {
        assert_eq!(etag(42), "\"42\"");
        assert_eq!(if_match_version("\"42\"", "If-Match"), Ok(Some(42)));
        assert_eq!(if_match_version(" 42 ", "If-Match"), Ok(Some(42)));
        assert_eq!(if_match_version("*", "If-Match"), Ok(None));
        for bad in [
            "W/\"1\"",
            "\"1\", \"2\"",
            "\"\"",
            "-1",
            "\"x\"",
            "99999999999999999999",
        ] {
            assert!(if_match_version(bad, "If-Match").is_err(), "{bad}");
        }
    }
}
