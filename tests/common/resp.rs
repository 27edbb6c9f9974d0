//! A tiny RESP client for the gateway tests: commands out as multibulk
//! arrays (or raw bytes), replies in as [`Value`]s, RESP2 and RESP3.
#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One decoded reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or RESP3's `_`.
    Null,
    Array(Vec<Value>),
    /// RESP3 `%`.
    Map(Vec<(Value, Value)>),
    /// RESP3 `=`: the format, then the text.
    Verbatim(String, String),
    Double(f64),
    Bool(bool),
}

impl Value {
    /// A bulk string of text.
    pub fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    /// An array of bulk strings.
    pub fn bulks(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::bulk(s)).collect())
    }

    /// `+OK`.
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    /// The text of a bulk, simple or verbatim string.
    pub fn text(&self) -> String {
        match self {
            Value::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Simple(s) | Value::Verbatim(_, s) => s.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }

    /// The pairs of a RESP3 map, or of a RESP2 flat array of pairs.
    pub fn pairs(&self) -> Vec<(String, Value)> {
        match self {
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (k.text(), v.clone())).collect(),
            Value::Array(items) => items
                .chunks(2)
                .map(|p| (p[0].text(), p[1].clone()))
                .collect(),
            other => panic!("not a map: {other:?}"),
        }
    }

    /// The value under `key` in [`Value::pairs`].
    pub fn get(&self, key: &str) -> Value {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key:?} in {self:?}"))
            .1
    }
}

/// Encodes a command as a multibulk array.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A connection to a gateway.
pub struct Conn<S> {
    io: BufReader<S>,
}

impl Conn<TcpStream> {
    /// Connects over plain TCP.
    pub async fn connect(addr: SocketAddr) -> Conn<TcpStream> {
        Conn::new(
            TcpStream::connect(addr)
                .await
                .expect("connect to the gateway"),
        )
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// A connection over `stream` (a read half is enough to read replies).
    pub fn new(stream: S) -> Conn<S> {
        Conn {
            io: BufReader::new(stream),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Sends one command and reads its reply.
    pub async fn cmd(&mut self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd_bytes(&args).await
    }

    /// [`Conn::cmd`] with binary arguments.
    pub async fn cmd_bytes(&mut self, args: &[&[u8]]) -> Value {
        self.send_raw(&encode(args)).await;
        self.read().await
    }

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.expect("write");
    }
}

impl<S: AsyncRead + Unpin> Conn<S> {
    /// Reads one reply; panics at the end of the stream.
    pub async fn read(&mut self) -> Value {
        self.try_read().await.expect("a reply before the end")
    }

    /// Reads one reply, or `None` at the end of the stream (or a reset).
    pub async fn try_read(&mut self) -> Option<Value> {
        Box::pin(self.value()).await
    }

    /// Reads until the server closes, returning the replies on the way.
    pub async fn read_to_close(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(v) = self.try_read().await {
            out.push(v);
        }
        out
    }

    async fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        loop {
            let b = self.io.read_u8().await.ok()?;
            if b == b'\n' && line.last() == Some(&b'\r') {
                line.pop();
                return Some(String::from_utf8(line).expect("utf-8 line"));
            }
            line.push(b);
        }
    }

    async fn value(&mut self) -> Option<Value> {
        let line = self.line().await?;
        let (kind, rest) = line.split_at(1);
        let n = || rest.parse::<i64>().expect("a length");
        Some(match kind {
            "+" => Value::Simple(rest.into()),
            "-" => Value::Error(rest.into()),
            ":" => Value::Int(n()),
            "_" => Value::Null,
            "#" => Value::Bool(rest == "t"),
            "," => Value::Double(rest.parse().expect("a double")),
            "$" | "=" if n() < 0 => Value::Null,
            "$" | "=" => {
                let mut body = vec![0; n() as usize + 2];
                self.io.read_exact(&mut body).await.ok()?;
                body.truncate(body.len() - 2);
                if kind == "$" {
                    Value::Bulk(body)
                } else {
                    let text = String::from_utf8(body).expect("utf-8 verbatim");
                    let (format, text) = text.split_at(3);
                    Value::Verbatim(format.into(), text[1..].into())
                }
            }
            "*" | "~" | ">" if n() < 0 => Value::Null,
            "*" | "~" | ">" => {
                let mut items = Vec::new();
                for _ in 0..n() {
                    items.push(Box::pin(self.value()).await?);
                }
                Value::Array(items)
            }
            "%" => {
                let mut pairs = Vec::new();
                for _ in 0..n() {
                    let k = Box::pin(self.value()).await?;
                    let v = Box::pin(self.value()).await?;
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            }
            other => panic!("unknown reply type {other:?} in {line:?}"),
        })
    }
}
