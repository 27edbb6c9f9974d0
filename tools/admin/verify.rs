//! `strata-admin verify`: a read-only health check of a stopped node's data
//! directory (the WAL and the disk tier against it), or of a dump file.
//!
//! Nothing is truncated, repaired or written (the directory's lock file is
//! created if it is missing, as any strata process does).

use std::fs::File;
use std::io::BufReader;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ArgGroup;
use strata::dump::{DUMP_VERSION, DumpError, DumpReader};
use strata::store::{DirLock, SnapshotReader};
use strata::wal::inspect::{InspectOptions, WalDamage, inspect_dir};

use crate::dump::{Progress, check_data_dir, human_bytes};

/// `strata-admin verify`.
#[derive(clap::Args, Debug)]
#[command(
    group(ArgGroup::new("target").required(true).args(["data_dir", "dump"])),
    after_help = "\
With --data-dir: checks a stopped node's data directory without changing it. Every WAL \
segment's header and every record's length, checksum and encoding are checked, and that \
seqs run without gaps within and across segments. The disk tier (RocksDB, opened read-only) \
must have applied everything before the WAL's first record, else acknowledged writes are \
missing. Reports the applied seq, the WAL's range and segment count, and where a torn tail \
starts, if there is one.

A torn tail (the last record of the last segment cut short, as a crash during a write \
leaves it) is reported but counts as healthy: the node drops it at start in its default \
recovery mode. With --strict it counts as damage, as under recovery mode `strict`.

With --dump: checks every record of a dump file and its trailer, and reports the format \
version it read (1 to 3; from version 2 also that every entry carries its key's slot and \
that entries come in ascending (slot, key) order).

Exit status: 0 healthy, 1 damaged (the findings name the file and byte offset) or the \
check could not run, 2 usage error."
)]
pub struct Args {
    /// The data directory of a stopped node.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// A dump file to check instead.
    #[arg(long, value_name = "FILE")]
    dump: Option<PathBuf>,

    /// Count a torn WAL tail as damage.
    #[arg(long, requires = "data_dir")]
    strict: bool,
}

/// Runs `verify`.
///
/// # Errors
///
/// Damage (after the report is printed), or a check that cannot run.
pub fn run(args: &Args) -> anyhow::Result<()> {
    match (&args.data_dir, &args.dump) {
        (Some(dir), _) => verify_dir(dir, args.strict),
        (None, Some(file)) => verify_dump(file),
        (None, None) => bail!("pass --data-dir DIR or --dump FILE"),
    }
}

fn verify_dump(path: &Path) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).ok();
    let mut progress = Progress::new("verify", total);
    // The version, once the header has been read: reported even for a
    // file damaged further on.
    let mut version = None;
    let result = DumpReader::new(BufReader::new(file)).and_then(|mut reader| {
        version = Some(reader.header().version);
        while reader.next_entry()?.is_some() {
            progress.update(reader.entries_read(), reader.offset());
        }
        let header = reader.header().clone();
        let summary = reader.summary().ok_or(DumpError::MissingTrailer {
            offset: reader.offset(),
            entries: reader.entries_read(),
        })?;
        Ok((header, summary))
    });
    progress.finish();
    println!("dump          {}", path.display());
    match result {
        Ok((header, summary)) => {
            println!("format        {}", format_line(header.version));
            println!("node          {:?}", header.node);
            println!("seq           {}", header.seq);
            println!("created at    {} (Unix ms)", header.created_at_ms);
            println!(
                "entries       {} ({} of keys and values, file {})",
                summary.entries,
                human_bytes(summary.data_bytes),
                human_bytes(summary.file_bytes)
            );
            println!("result        healthy");
            Ok(())
        }
        Err(e) => {
            if let Some(version) = version {
                println!("format        {}", format_line(version));
            }
            println!("result        DAMAGED: {e}");
            bail!("dump {} is damaged at byte {}", path.display(), e.offset())
        }
    }
}

/// The `format` line of a dump: its version, and whether this build still
/// writes it.
fn format_line(version: u32) -> String {
    if version == DUMP_VERSION {
        format!("version {version}")
    } else {
        format!(
            "version {version} (an older format, read for compatibility; this build writes version {DUMP_VERSION})"
        )
    }
}

fn verify_dir(dir: &Path, strict: bool) -> anyhow::Result<()> {
    check_data_dir(dir)?;
    let _lock =
        DirLock::acquire(dir).with_context(|| format!("cannot verify {}", dir.display()))?;
    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let wal_dir = dir.join("wal");
    let wal = inspect_dir(&wal_dir, InspectOptions::default(), |_| {
        ControlFlow::Continue(())
    })
    .with_context(|| format!("cannot read the wal in {}", wal_dir.display()))?;
    let torn = match &wal.damage {
        None => None,
        Some(damage @ WalDamage::TornTail { .. }) => {
            if strict {
                problems.push(damage.to_string());
            }
            Some(damage)
        }
        Some(damage) => {
            problems.push(damage.to_string());
            None
        }
    };

    let db_dir = strata::store::disk_dir(dir);
    let applied = if db_dir.is_dir() {
        match SnapshotReader::open(&db_dir) {
            Ok(reader) => Some(reader.seq()),
            Err(e) => {
                problems.push(format!(
                    "the disk tier in {} cannot be opened: {e}",
                    db_dir.display()
                ));
                None
            }
        }
    } else {
        problems.push(format!("no disk tier: {} is missing", db_dir.display()));
        None
    };
    if let (Some(applied), Some(first)) = (applied, wal.first_seq) {
        // IMPORTANT: the store replays the WAL from applied + 1; a WAL that
        // starts later means acknowledged records are in neither tier.
        if first.0 > applied.0.saturating_add(1) {
            problems.push(format!(
                "gap: the wal starts at seq {first} but the disk tier has applied only up to seq \
                 {applied}, so records {}..={} are missing",
                applied.0 + 1,
                first.0 - 1
            ));
        }
    }
    if let (Some(applied), Some(last), None) = (applied, wal.last_seq, &wal.damage)
        && last < applied
    {
        notes.push(format!(
            "the disk tier (seq {applied}) is ahead of the wal's last record (seq {last}); the \
             node continues after seq {applied}"
        ));
    }

    println!("data directory  {}", dir.display());
    println!(
        "disk tier       {}",
        match applied {
            Some(seq) => format!("applied seq {seq}"),
            None => "unreadable".to_string(),
        }
    );
    let range = match (wal.first_seq, wal.last_seq) {
        (Some(first), Some(last)) => format!("seqs {first}..={last} ({} records)", wal.records),
        _ => "no records".to_string(),
    };
    println!(
        "wal             {} segment file(s), {}, {range}",
        wal.segments.len(),
        human_bytes(wal.bytes)
    );
    match torn {
        Some(WalDamage::TornTail {
            path,
            offset,
            dropped,
            ..
        }) => println!(
            "torn tail       {} at byte {offset} ({dropped} bytes the node drops at start)",
            path.display()
        ),
        _ => println!("torn tail       none"),
    }
    for note in &notes {
        println!("note            {note}");
    }
    if problems.is_empty() {
        println!("result          healthy");
        return Ok(());
    }
    println!("result          DAMAGED ({} problem(s))", problems.len());
    for problem in &problems {
        println!("  - {problem}");
    }
    bail!("{} is damaged: {}", dir.display(), problems.join("; "))
}
