//! Bytes → commands: the multibulk arrays every Redis client sends
//! (decoded by `redis-protocol`) and the inline commands of telnet users
//! and `redis-benchmark`'s PING_INLINE test.
//!
//! A gate walks each multibulk's headers before the codec sees it, for
//! what the codec does not check: lengths against the node's limits (a
//! declared 4 GiB bulk would otherwise be buffered until it arrived) and
//! nesting (the codec parses nested arrays recursively, so a deep one
//! would overflow the stack). A command reaches the codec only whole,
//! within the limits, and as one flat array of bulk strings, which is
//! all Redis itself accepts from clients.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes;
use redis_protocol::resp2::types::BytesFrame;

/// Longest inline command (Redis's `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;

/// Longest `*N` or `$N` header line: a sign, 20 digits, and slack.
const MAX_HEADER_LINE: usize = 32;

/// What one command may be, for the connection it arrives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Most arguments (the command name included).
    pub max_args: usize,
    /// Longest argument.
    pub max_bulk: usize,
    /// Most bytes of one command, framing included.
    pub max_command: usize,
}

/// Input that is not RESP, or that breaks a limit; the connection answers
/// `-ERR Protocol error: <this>` and closes, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// An inline command without a newline in [`MAX_INLINE_BYTES`].
    #[error("too big inline request")]
    InlineTooBig,
    /// An inline command with an open quote.
    #[error("unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A `*N` line without its CRLF in [`MAX_HEADER_LINE`] bytes.
    #[error("too big mbulk count string")]
    CountLineTooBig,
    /// `*N` with N not a number, or over the argument limit.
    #[error("invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$N` line without its CRLF in [`MAX_HEADER_LINE`] bytes.
    #[error("too big bulk count string")]
    BulkLineTooBig,
    /// An element of the array that is not a bulk string.
    #[error("expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// `$N` with N not a number, negative, or over the argument limit.
    #[error("invalid bulk length")]
    InvalidBulkLength,
    /// A bulk string not followed by CRLF.
    #[error("expected CRLF after a bulk string")]
    MissingCrlf,
    /// The command's arguments add up to more than the command limit.
    #[error("command of more than {0} bytes")]
    CommandTooBig(usize),
    /// The codec refused what the gate let through (a bug, reported as
    /// the codec put it).
    #[error("{0}")]
    Codec(String),
}

/// Takes the next whole command off the front of `buf`: its arguments,
/// the name first. `Ok(None)` when more bytes are needed. Empty commands
/// (a blank line, `*0`) are skipped, as in Redis.
///
/// # Errors
///
/// [`ProtocolError`] when the input is not a command or breaks `limits`;
/// the connection cannot recover its framing then.
pub fn next_command(
    buf: &mut BytesMut,
    limits: &InputLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let taken = if first == b'*' {
            take_multibulk(buf, limits)?
        } else {
            take_inline(buf)?
        };
        match taken {
            Taken::Incomplete => return Ok(None),
            Taken::Empty => continue,
            Taken::Command(args) => return Ok(Some(args)),
        }
    }
}

enum Taken {
    Incomplete,
    Empty,
    Command(Vec<Bytes>),
}

/// A header line (`*N` or `$N`) at `at`: its number and where the next
/// line starts, or `None` until the CRLF arrives.
fn header(
    buf: &[u8],
    at: usize,
    too_big: ProtocolError,
    invalid: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[at..buf.len().min(at + MAX_HEADER_LINE)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() == MAX_HEADER_LINE {
            Err(too_big)
        } else {
            Ok(None)
        };
    };
    let line_end = at + cr;
    match buf.get(line_end + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(invalid),
    }
    let digits = &buf[at + 1..line_end];
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(invalid)?;
    Ok(Some((n, line_end + 2)))
}

fn take_multibulk(buf: &mut BytesMut, limits: &InputLimits) -> Result<Taken, ProtocolError> {
    let Some((end, count)) = multibulk_end(buf, limits)? else {
        return Ok(Taken::Incomplete);
    };
    let frame = buf.split_to(end).freeze();
    // `*0` and `*-1` are no command (Redis skips them too).
    if count <= 0 {
        return Ok(Taken::Empty);
    }
    let disagreed = || ProtocolError::Codec("the codec disagreed with the gate".into());
    match decode_bytes(&frame).map_err(|e| ProtocolError::Codec(e.to_string()))? {
        Some((BytesFrame::Array(items), used)) if used == end => items
            .into_iter()
            .map(|item| match item {
                BytesFrame::BulkString(arg) => Ok(arg),
                _ => Err(disagreed()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Taken::Command),
        _ => Err(disagreed()),
    }
}

/// The gate: where the multibulk at the front of `buf` ends once it is
/// whole, and its declared count, checking every header against `limits`
/// as soon as it arrives.
fn multibulk_end(buf: &[u8], limits: &InputLimits) -> Result<Option<(usize, i64)>, ProtocolError> {
    let Some((count, mut at)) = header(
        buf,
        0,
        ProtocolError::CountLineTooBig,
        ProtocolError::InvalidMultibulkLength,
    )?
    else {
        return Ok(None);
    };
    if count > limits.max_args as i64 {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    for _ in 0..count.max(0) {
        let Some(&kind) = buf.get(at) else {
            return Ok(None);
        };
        if kind != b'$' {
            return Err(ProtocolError::ExpectedBulk(kind));
        }
        let Some((len, data)) = header(
            buf,
            at,
            ProtocolError::BulkLineTooBig,
            ProtocolError::InvalidBulkLength,
        )?
        else {
            return Ok(None);
        };
        if len < 0 || len > limits.max_bulk as i64 {
            return Err(ProtocolError::InvalidBulkLength);
        }
        at = data + len as usize + 2;
        if at > limits.max_command {
            return Err(ProtocolError::CommandTooBig(limits.max_command));
        }
        if at > buf.len() {
            return Ok(None);
        }
        if &buf[at - 2..at] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
    }
    Ok(Some((at, count)))
}

fn take_inline(buf: &mut BytesMut) -> Result<Taken, ProtocolError> {
    let Some(newline) = buf.iter().take(MAX_INLINE_BYTES).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_INLINE_BYTES {
            Err(ProtocolError::InlineTooBig)
        } else {
            Ok(Taken::Incomplete)
        };
    };
    let line = buf.split_to(newline + 1);
    let mut line = &line[..newline];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let args = split_args(line)?;
    Ok(if args.is_empty() {
        Taken::Empty
    } else {
        Taken::Command(args)
    })
}

/// Splits an inline command into arguments as Redis's `sdssplitargs`
/// does: blanks separate, `"..."` takes `\n \r \t \b \a \\ \" \xHH`
/// escapes, `'...'` only `\'`, and a closing quote must end the argument.
pub fn split_args(mut line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    loop {
        while let [first, rest @ ..] = line
            && first.is_ascii_whitespace()
        {
            line = rest;
        }
        if line.is_empty() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        line = match line[0] {
            b'"' => double_quoted(&line[1..], &mut arg)?,
            b'\'' => single_quoted(&line[1..], &mut arg)?,
            _ => {
                let end = line
                    .iter()
                    .position(|b| b.is_ascii_whitespace())
                    .unwrap_or(line.len());
                arg.extend_from_slice(&line[..end]);
                &line[end..]
            }
        };
        args.push(Bytes::from(arg));
    }
}

/// After a closing quote: a blank or the end, else the quotes are unbalanced.
fn after_quote(rest: &[u8]) -> Result<&[u8], ProtocolError> {
    match rest.first() {
        None => Ok(rest),
        Some(b) if b.is_ascii_whitespace() => Ok(rest),
        Some(_) => Err(ProtocolError::UnbalancedQuotes),
    }
}

fn double_quoted<'a>(mut s: &'a [u8], arg: &mut Vec<u8>) -> Result<&'a [u8], ProtocolError> {
    loop {
        match s {
            [] => return Err(ProtocolError::UnbalancedQuotes),
            [b'"', rest @ ..] => return after_quote(rest),
            [b'\\', b'x', h, l, rest @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                arg.push(hex(*h) << 4 | hex(*l));
                s = rest;
            }
            [b'\\', c, rest @ ..] => {
                arg.push(match c {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 0x08,
                    b'a' => 0x07,
                    other => *other,
                });
                s = rest;
            }
            [c, rest @ ..] => {
                arg.push(*c);
                s = rest;
            }
        }
    }
}

fn single_quoted<'a>(mut s: &'a [u8], arg: &mut Vec<u8>) -> Result<&'a [u8], ProtocolError> {
    loop {
        match s {
            [] => return Err(ProtocolError::UnbalancedQuotes),
            [b'\'', rest @ ..] => return after_quote(rest),
            [b'\\', b'\'', rest @ ..] => {
                arg.push(b'\'');
                s = rest;
            }
            [c, rest @ ..] => {
                arg.push(*c);
                s = rest;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: InputLimits = InputLimits {
        max_args: 8,
        max_bulk: 16,
        max_command: 128,
    };

    fn commands(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(args) = next_command(&mut buf, &LIMITS)? {
            out.push(args);
        }
        Ok(out)
    }

    fn strs(cmds: Vec<Vec<Bytes>>) -> Vec<Vec<String>> {
        cmds.into_iter()
            .map(|c| {
                c.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn multibulk_and_inline_commands_in_one_buffer() {
        let got =
            commands(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n\r\n*0\r\nset a \"b c\"\n").unwrap();
        assert_eq!(
            strs(got),
            vec![vec!["GET", "k"], vec!["PING"], vec!["set", "a", "b c"]]
        );
    }

    #[test]
    fn every_split_point_waits_for_the_rest() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxy\r\n";
        for cut in 0..input.len() {
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(next_command(&mut buf, &LIMITS), Ok(None), "cut at {cut}");
            buf.extend_from_slice(&input[cut..]);
            let args = next_command(&mut buf, &LIMITS).unwrap().unwrap();
            assert_eq!(args[2], Bytes::from_static(b"v\r\nxy"), "binary-safe");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn hostile_headers_fail_before_their_bodies_arrive() {
        let cases: [(&[u8], ProtocolError); 8] = [
            (b"*9\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
            (b"*1\r\n$17\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n$-1\r\n", ProtocolError::InvalidBulkLength),
            (b"*1\r\n*1\r\n*1\r\n", ProtocolError::ExpectedBulk(b'*')),
            (b"*1\r\n:1\r\n", ProtocolError::ExpectedBulk(b':')),
            (b"*1\r\n$1\r\nab\r\n", ProtocolError::MissingCrlf),
            (&[b'*'; 40], ProtocolError::CountLineTooBig),
        ];
        let mut too_big = b"*8\r\n".to_vec();
        for _ in 0..5 {
            too_big.extend_from_slice(b"$16\r\n0123456789abcdef\r\n");
        }
        too_big.extend_from_slice(b"$16\r\n");
        let cases = cases
            .into_iter()
            .chain([(&too_big[..], ProtocolError::CommandTooBig(128))]);
        for (input, want) in cases {
            assert_eq!(
                commands(input),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_inline = vec![b'a'; MAX_INLINE_BYTES];
        assert_eq!(commands(&long_inline), Err(ProtocolError::InlineTooBig));
    }

    #[test]
    fn inline_quoting_follows_redis() {
        let args = split_args(br#"set "a\x41\n" 'it\'s' plain"#).unwrap();
        assert_eq!(args, vec!["set", "aA\n", "it's", "plain"]);
        assert_eq!(
            split_args(b"get \"open"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            split_args(b"get \"a\"b"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(split_args(b"   "), Ok(vec![]));
    }

    proptest::proptest! {
        /// Arbitrary bytes give commands or a protocol error, never a panic,
        /// and never a command over the limits.
        #[test]
        fn arbitrary_input_never_panics(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Ok(cmds) = commands(&input) {
                for args in cmds {
                    proptest::prop_assert!(!args.is_empty());
                }
            }
        }
    }
}
