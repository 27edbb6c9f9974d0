//! `strata-admin wal-inspect`: prints the records of a stopped node's WAL,
//! one mutation per line (text or JSON lines), and any damage found.
//! Read-only: nothing is truncated or repaired.

use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;
use strata::clock::{Clock, SystemClock};
use strata::store::DirLock;
use strata::types::Seq;
use strata::wal::Mutation;
use strata::wal::inspect::{InspectOptions, Inspection, RecordAt, WalDamage, inspect_dir};

use crate::dump::check_data_dir;

/// `strata-admin wal-inspect`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Prints every record of the write-ahead log of a stopped node's data directory, one line \
per mutation (a multi-set record has several): its seq, the kind (put or delete), the key \
(quoted when it is printable UTF-8, else 0x and hex), the value's length and the absolute \
expiry in Unix ms. Then the damage found, if any: a torn tail (what a crash during a write \
leaves; the node drops it at start) or corruption before the tail, with the segment file \
and byte offset. Nothing is changed.

With --json every line is a JSON object: {\"type\":\"record\", \"seq\", \"index\", \"op\", \
\"key\", \"key_encoding\" (utf8 or hex), \"value_len\", \"expires_at_ms\" (null: none), \
\"segment\", \"offset\"}, then {\"type\":\"damage\", ...} if any and a final \
{\"type\":\"summary\", ...}.

Exit status: 0, also with a torn tail; 1 when the log is corrupt before its tail or cannot \
be read; 2 usage error.

Example: strata-admin wal-inspect --data-dir /var/lib/strata --from 1200 --limit 20")]
pub struct Args {
    /// The data directory of a stopped node.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// Print records from this seq on (earlier ones are still checked in
    /// the segments read).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    from: u64,

    /// Print at most N records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,

    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// Runs `wal-inspect`.
///
/// # Errors
///
/// A directory that is not a data directory or is in use, an unreadable
/// log, or corruption before the tail (after it has been printed).
pub fn run(args: &Args) -> anyhow::Result<()> {
    check_data_dir(&args.data_dir)?;
    let _lock = DirLock::acquire(&args.data_dir)
        .with_context(|| format!("cannot inspect {}", args.data_dir.display()))?;
    let now_ms = SystemClock.now_ms();
    let from = Seq(args.from);
    let mut out = BufWriter::new(io::stdout().lock());
    let mut printed = 0u64;
    // A closed stdout (`| head`) ends the output quietly.
    let mut closed = false;
    let options = InspectOptions {
        from,
        ..InspectOptions::default()
    };
    let wal_dir = args.data_dir.join("wal");
    let found = inspect_dir(&wal_dir, options, |at| {
        if at.record.seq < from {
            return ControlFlow::Continue(());
        }
        if args.limit.is_some_and(|limit| printed >= limit) {
            return ControlFlow::Break(());
        }
        printed += 1;
        if print_record(&mut out, &at, args.json, now_ms).is_err() {
            closed = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })
    .with_context(|| format!("cannot read the wal in {}", wal_dir.display()))?;
    if closed {
        return Ok(());
    }
    if print_end(&mut out, &found, args.json)
        .and_then(|()| out.flush())
        .is_err()
    {
        return Ok(());
    }
    match &found.damage {
        Some(damage) if !damage.is_torn_tail() => bail!("{damage}"),
        _ => Ok(()),
    }
}

fn print_record(
    out: &mut impl Write,
    at: &RecordAt<'_>,
    json: bool,
    now_ms: u64,
) -> io::Result<()> {
    let segment = file_name(at.path);
    for (index, mutation) in at.record.mutations.iter().enumerate() {
        let (op, key, value_len, expires_at_ms) = match mutation {
            Mutation::Put {
                key,
                value,
                expires_at_ms,
            } => ("put", key, Some(value.len()), Some(*expires_at_ms)),
            Mutation::PutTyped {
                key,
                value,
                expires_at_ms,
                ..
            } => ("put_typed", key, Some(value.len()), Some(*expires_at_ms)),
            Mutation::Delete { key } => ("delete", key, None, None),
        };
        if json {
            let (key_text, key_encoding) = match std::str::from_utf8(key) {
                Ok(s) => (s.to_string(), "utf8"),
                Err(_) => (hex::encode(key), "hex"),
            };
            let line = json!({
                "type": "record",
                "seq": at.record.seq.0,
                "index": index,
                "op": op,
                "key": key_text,
                "key_encoding": key_encoding,
                "value_len": value_len,
                "expires_at_ms": expires_at_ms.filter(|&ms| ms != 0),
                "segment": segment,
                "offset": at.offset,
            });
            writeln!(out, "{line}")?;
        } else {
            let mut line = format!("seq={} op={op} key={}", at.record.seq, show_key(key));
            if let Some(len) = value_len {
                line.push_str(&format!(" value_len={len}"));
            }
            match expires_at_ms {
                Some(0) => line.push_str(" expiry=none"),
                Some(ms) if ms <= now_ms => line.push_str(&format!(" expiry={ms} (expired)")),
                Some(ms) => line.push_str(&format!(
                    " expiry={ms} (in {:.1} s)",
                    (ms - now_ms) as f64 / 1000.0
                )),
                None => {}
            }
            line.push_str(&format!(" at={segment}:{}", at.offset));
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

fn print_end(out: &mut impl Write, found: &Inspection, json: bool) -> io::Result<()> {
    if let Some(damage) = &found.damage {
        if json {
            let (kind, reason, dropped) = match damage {
                WalDamage::TornTail {
                    reason, dropped, ..
                } => ("torn_tail", reason.to_string(), Some(*dropped)),
                WalDamage::Corrupt { reason, .. } => ("corrupt", reason.to_string(), None),
                WalDamage::UnsupportedVersion { version, .. } => (
                    "unsupported_version",
                    format!("format version {version}"),
                    None,
                ),
            };
            let line = json!({
                "type": "damage",
                "damage": kind,
                "segment": damage.path().display().to_string(),
                "offset": damage.offset(),
                "reason": reason,
                "bytes_after": dropped,
                "message": damage.to_string(),
            });
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "# {damage}")?;
        }
    }
    if json {
        let line = json!({
            "type": "summary",
            "segments": found.segments.len(),
            "records": found.records,
            "first_seq": found.first_seq.map(|s| s.0),
            "last_seq": found.last_seq.map(|s| s.0),
            "bytes": found.bytes,
            "stopped_early": found.stopped,
        });
        writeln!(out, "{line}")?;
    } else {
        let range = match (found.first_seq, found.last_seq) {
            (Some(first), Some(last)) => format!("seqs {first}..={last}"),
            _ => "no records".to_string(),
        };
        let checked = if found.stopped {
            " (stopped at the limit; later records not checked)"
        } else {
            ""
        };
        writeln!(
            out,
            "# {} segment file(s), {} records read, {range}{checked}",
            found.segments.len(),
            found.records
        )?;
    }
    Ok(())
}

/// A key as text: quoted if printable UTF-8, else `0x` and hex.
fn show_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
        _ => format!("0x{}", hex::encode(key)),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
