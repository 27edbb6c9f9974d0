//! Replies: one protocol-neutral [`Reply`], encoded by `redis-protocol` as
//! RESP2 or as RESP3 (after `HELLO 3`), and the one mapping from strata's
//! error replies to Redis's error conventions.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::BytesFrame as Frame2;
use redis_protocol::resp3::types::{BytesFrame as Frame3, FrameMap, VerbatimStringFormat};

use crate::proto::{ErrorCode, ErrorReply};

/// The protocol a connection speaks: RESP2 until `HELLO 3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    /// RESP2: nulls are `$-1`/`*-1`, maps are flat arrays.
    #[default]
    Resp2,
    /// RESP3: typed nulls, maps and verbatim strings.
    Resp3,
}

/// A reply, before it is encoded for its connection's protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK` and the like.
    Simple(&'static str),
    /// A whole error line, its code first (`ERR syntax error`).
    Error(String),
    /// `:n`.
    Int(i64),
    /// A binary-safe string.
    Bulk(Bytes),
    /// A missing value: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// An array.
    Array(Vec<Reply>),
    /// A map: a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// Text for people (`INFO`, `CLIENT INFO`): a verbatim string in
    /// RESP3, a bulk string in RESP2.
    Text(String),
    /// A score: a double in RESP3, its text as a bulk string in RESP2.
    Double(f64),
}

/// `+OK`.
pub const OK: Reply = Reply::Simple("OK");

impl Reply {
    /// An error reply from its whole line (`"ERR ..."`, `"WRONGTYPE ..."`).
    pub fn err(line: impl Into<String>) -> Reply {
        Reply::Error(line.into())
    }

    /// A bulk string of text.
    pub fn bulk(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoded reply to `out`.
    pub fn encode(&self, proto: Proto, out: &mut BytesMut) {
        // Encoding into a buffer it sized itself cannot fail; a failure
        // would be a codec bug, answered as an error rather than a panic.
        let encoded = match proto {
            Proto::Resp2 => {
                redis_protocol::resp2::encode::extend_encode(out, &self.resp2(), false).map(drop)
            }
            Proto::Resp3 => {
                redis_protocol::resp3::encode::complete::extend_encode(out, &self.resp3(), false)
                    .map(drop)
            }
        };
        if let Err(e) = encoded {
            out.extend_from_slice(format!("-ERR reply encoding failed: {e}\r\n").as_bytes());
        }
    }

    fn resp2(&self) -> Frame2 {
        match self {
            Reply::Simple(s) => Frame2::SimpleString(Bytes::from_static(s.as_bytes())),
            Reply::Error(line) => Frame2::Error(one_line(line).into()),
            Reply::Int(n) => Frame2::Integer(*n),
            Reply::Bulk(b) => Frame2::BulkString(b.clone()),
            Reply::Null => Frame2::Null,
            Reply::Array(items) => Frame2::Array(items.iter().map(Reply::resp2).collect()),
            Reply::Map(pairs) => Frame2::Array(
                pairs
                    .iter()
                    .flat_map(|(k, v)| [k.resp2(), v.resp2()])
                    .collect(),
            ),
            Reply::Text(t) => Frame2::BulkString(Bytes::from(t.clone())),
            Reply::Double(d) => Frame2::BulkString(Bytes::from(format_double(*d))),
        }
    }

    fn resp3(&self) -> Frame3 {
        match self {
            Reply::Simple(s) => Frame3::SimpleString {
                data: Bytes::from_static(s.as_bytes()),
                attributes: None,
            },
            Reply::Error(line) => Frame3::SimpleError {
                data: one_line(line).into(),
                attributes: None,
            },
            Reply::Int(n) => Frame3::Number {
                data: *n,
                attributes: None,
            },
            Reply::Bulk(b) => Frame3::BlobString {
                data: b.clone(),
                attributes: None,
            },
            Reply::Null => Frame3::Null,
            Reply::Array(items) => Frame3::Array {
                data: items.iter().map(Reply::resp3).collect(),
                attributes: None,
            },
            Reply::Map(pairs) => {
                let mut data = FrameMap::with_capacity(pairs.len());
                for (k, v) in pairs {
                    data.insert(k.resp3(), v.resp3());
                }
                Frame3::Map {
                    data,
                    attributes: None,
                }
            }
            Reply::Text(t) => Frame3::VerbatimString {
                data: Bytes::from(t.clone()),
                format: VerbatimStringFormat::Text,
                attributes: None,
            },
            Reply::Double(d) => Frame3::Double {
                data: *d,
                attributes: None,
            },
        }
    }
}

/// A score as Redis 7.2's `d2string` writes it: `nan`, `inf`, `-inf`,
/// `-0`; an integer within ±2^62 as its digits; else the shortest digits
/// that read back as the same double, written out in full when that adds
/// at most 7 trailing zeros, has at most 6 decimal places, or lies within
/// [0.001, 10000) (`100000000`, `0.000123`, `0.001234567`), with an
/// exponent otherwise (`1.5e+19`, `1.234e-5`).
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".to_string();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if d == 0.0 && d.is_sign_negative() {
        return "-0".to_string();
    }
    // Redis prints these with its integer formatter.
    #[allow(clippy::cast_precision_loss)] // 2^62 exactly, as in Redis
    const WHOLE: f64 = (i64::MAX / 2) as f64;
    if d.fract() == 0.0 && (-WHOLE..=WHOLE).contains(&d) {
        #[allow(clippy::cast_possible_truncation)] // whole and in range
        return (d as i64).to_string();
    }
    // `{:e}` gives the shortest digits: "d.ddd" and the exponent of the first.
    let shortest = format!("{:e}", d.abs());
    let (mantissa, exp) = shortest.split_once('e').unwrap_or((&shortest, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits = mantissa.replace('.', "");
    let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    // The value is digits × 10^shift.
    let shift = exp - (n - 1);
    let sign = if d < 0.0 { "-" } else { "" };
    let zeros = |k: i32| "0".repeat(usize::try_from(k).unwrap_or(0));
    if shift >= 0 && exp < n + 7 {
        return format!("{sign}{digits}{}", zeros(shift));
    }
    if shift < 0 && (shift > -7 || exp.abs() < 4) {
        return match usize::try_from(exp + 1) {
            Ok(whole) if whole > 0 => {
                format!("{sign}{}.{}", &digits[..whole], &digits[whole..])
            }
            _ => format!("{sign}0.{}{digits}", zeros(-exp - 1)),
        };
    }
    let exp_sign = if exp < 0 { '-' } else { '+' };
    format!("{sign}{mantissa}e{exp_sign}{}", exp.abs())
}

/// An error line must stay one line on the wire (Redis maps CR and LF to
/// spaces too).
fn one_line(line: &str) -> String {
    line.replace(['\r', '\n'], " ")
}

/// Redis's error for a command on a key of another kind, word for word.
pub const WRONG_TYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// The Redis error for strata's error reply: the code clients branch on,
/// then strata's message. The one place the two conventions meet.
pub fn from_error(e: &ErrorReply) -> Reply {
    let line = match e.code {
        ErrorCode::Unauthenticated => "NOAUTH Authentication required.".to_string(),
        ErrorCode::PermissionDenied => format!("NOPERM {}", e.message),
        ErrorCode::NotAnInteger => "ERR value is not an integer or out of range".to_string(),
        ErrorCode::Overflow => "ERR increment or decrement would overflow".to_string(),
        ErrorCode::WrongType => WRONG_TYPE.to_string(),
        ErrorCode::ReadOnlyReplica => {
            "READONLY You can't write against a read only replica.".into()
        }
        ErrorCode::StorageFailed => format!("MISCONF {}", e.message),
        ErrorCode::Unavailable => format!("LOADING {}", e.message),
        ErrorCode::ShuttingDown => format!("SHUTDOWN {}", e.message),
        // Only when the gateway found no redirect (resp/cluster.rs).
        ErrorCode::WrongShard => format!("ERR wrong shard: {}", e.message),
        _ => format!("ERR {}", e.message),
    };
    Reply::Error(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply, proto: Proto) -> String {
        let mut out = BytesMut::new();
        reply.encode(proto, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn nulls_maps_and_text_per_protocol() {
        let map = Reply::Map(vec![(Reply::bulk("a"), Reply::Int(1))]);
        assert_eq!(encoded(&map, Proto::Resp2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&map, Proto::Resp3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(encoded(&Reply::Null, Proto::Resp2), "$-1\r\n");
        assert_eq!(encoded(&Reply::Null, Proto::Resp3), "_\r\n");
        let text = Reply::Text("a:1\r\n".into());
        assert_eq!(encoded(&text, Proto::Resp3), "=9\r\ntxt:a:1\r\n\r\n");
        assert_eq!(
            encoded(&Reply::err("ERR a\r\nb"), Proto::Resp2),
            "-ERR a  b\r\n"
        );
        assert_eq!(encoded(&Reply::Double(1.5), Proto::Resp2), "$3\r\n1.5\r\n");
        assert_eq!(encoded(&Reply::Double(1.5), Proto::Resp3), ",1.5\r\n");
    }

    #[test]
    fn doubles_read_back_as_themselves() {
        for (d, text) in [
            (3.0, "3"),
            (-0.25, "-0.25"),
            (0.1, "0.1"),
            (1e20, "1e+20"),
            (1.5e-7, "1.5e-7"),
            (1e8, "100000000"),
            (-0.0, "-0"),
            (1e19, "1e+19"),
            (1.5e19, "1.5e+19"),
            (1.23e25, "1.23e+25"),
            (123.456, "123.456"),
            (0.000_123, "0.000123"),
            (1.234e-5, "1.234e-5"),
            (1e-7, "1e-7"),
            (1.234_567_891_234e-3, "0.001234567891234"),
            (1e-300, "1e-300"),
            (1.5e300, "1.5e+300"),
            (4_611_686_018_427_387_904.0, "4611686018427387904"),
            (f64::NAN, "nan"),
            (1.5e10, "15000000000"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format_double(d), text);
            if d.is_finite() {
                assert_eq!(text.parse::<f64>().unwrap(), d);
            }
        }
    }
}
