//! `strata-admin restore`: a dump file into a data directory.
//!
//! The entries are installed into a fresh store in a temporary sibling of
//! the target directory, through the same install steps a replica uses
//! for a full sync (versions and absolute expiries kept, the applied seq
//! set to the dump's seq). Every frame and the trailer are checked while
//! reading; only a dump verified to its last byte replaces the target, by
//! renames, so a damaged dump leaves the target exactly as it was and no
//! half-restored directory behind.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use strata::dump::{DumpError, DumpReader};
use strata::store::{DirLock, InstallMarker, InstallStep, SnapshotEntry, Store, StoreConfig};

use crate::dump::{Progress, TempPath, human_bytes, parent_of, runtime, sync_dir};

/// Entries per install step, and the byte size that ends a step early.
const CHUNK_ENTRIES: usize = 1024;
const CHUNK_BYTES: u64 = 4 << 20;

/// `strata-admin restore`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Loads a dump made by `strata-admin dump` into DIR, keeping every entry's version and \
absolute expiry, and lists with their elements; the restored store continues after the \
dump's seq. A node started on DIR then serves the dumped data. Reads dump format versions 1 \
to 3 (from version 2, entries are also checked against their slot and (slot, key) order).

DIR must be empty or absent, unless --force is given. A directory a running node holds is \
always refused. The dump is restored into a temporary directory beside DIR first, checking \
every record and the trailer as it goes; only a completely verified dump replaces DIR. A \
damaged or truncated dump is reported with the byte offset of the damage and leaves DIR \
untouched. With --force the old contents of DIR are deleted once the new directory is in \
place; the node's TLS identity (DIR/tls) is kept.

Example: strata-admin restore --in strata-2026-11-22.sdump --data-dir /var/lib/strata")]
pub struct Args {
    /// The dump file to restore.
    #[arg(long = "in", value_name = "FILE")]
    input: PathBuf,

    /// The data directory to restore into (created if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// Replace the contents of a non-empty DIR.
    #[arg(long)]
    force: bool,
}

/// Runs `restore`.
///
/// # Errors
///
/// A damaged dump (with the offset), a non-empty or busy target, store
/// and file-system failures. Whatever fails, DIR is left as it was.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let file = File::open(&args.input)
        .with_context(|| format!("cannot open dump {}", args.input.display()))?;
    let total = file.metadata().map(|m| m.len()).ok();
    // The header is checked before the target is touched.
    let reader = DumpReader::new(BufReader::new(file)).map_err(|e| damaged(&args.input, e))?;

    let dir = &args.data_dir;
    let target = Target::prepare(dir, args.force)?;
    let tmp = TempPath::beside(dir, "restore")?;
    let restored = runtime()?.block_on(install(&args.input, reader, tmp.path(), total))?;
    target.replace_with(tmp)?;

    let header = &restored.header;
    println!(
        "restored {} entries ({} of keys and values) at seq {} from node {:?} into {} in {:.1} s",
        restored.entries,
        human_bytes(restored.data_bytes),
        header.seq,
        header.node,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn damaged(input: &Path, e: DumpError) -> anyhow::Error {
    // Every `DumpError` names the byte offset of the damage.
    anyhow!(
        "dump {} is damaged: {e}; nothing was restored",
        input.display()
    )
}

/// What was installed.
struct Restored {
    header: strata::dump::DumpHeader,
    entries: u64,
    data_bytes: u64,
}

/// Installs every entry of `reader` into a new store in `dir`; succeeds
/// only if the whole dump verified.
async fn install(
    input: &Path,
    mut reader: DumpReader<BufReader<File>>,
    dir: &Path,
    total: Option<u64>,
) -> anyhow::Result<Restored> {
    let header = reader.header().clone();
    if header.seq.0 == u64::MAX {
        bail!(
            "dump {} claims seq {}, after which no write could follow; refusing it",
            input.display(),
            header.seq
        );
    }
    let mut config = StoreConfig::new(dir);
    config.checkpoint_interval_ms = 0;
    config.memory_budget_bytes = 8 << 20;
    let store = Store::open(config)
        .with_context(|| format!("cannot create a store in {}", dir.display()))?;
    let mut marker = InstallMarker {
        snapshot_id: header.created_at_ms,
        seq: header.seq,
        last_key: None,
        entries: 0,
        bytes: 0,
    };
    store
        .install(InstallStep::Begin(marker.clone()))
        .await
        .context("starting the install")?;
    let mut progress = Progress::new("restore", total);
    let mut chunk: Vec<SnapshotEntry> = Vec::with_capacity(CHUNK_ENTRIES);
    let mut chunk_bytes = 0u64;
    loop {
        let at = reader.offset();
        let next = reader.next_entry().map_err(|e| damaged(input, e))?;
        let done = next.is_none();
        if let Some(entry) = next {
            // New writes get seqs after the dump's: a later version would
            // let two different writes share a version.
            if entry.version > header.seq {
                bail!(
                    "dump {} is inconsistent: the entry at byte {at} has version {}, above the \
                     dump's seq {}; nothing was restored",
                    input.display(),
                    entry.version,
                    header.seq
                );
            }
            chunk_bytes += (entry.key.len() + entry.value.len()) as u64;
            chunk.push(entry.into());
        }
        if chunk.len() >= CHUNK_ENTRIES || chunk_bytes >= CHUNK_BYTES || (done && !chunk.is_empty())
        {
            marker.entries += chunk.len() as u64;
            marker.bytes += chunk_bytes;
            marker.last_key = chunk.last().map(|e| e.key.clone());
            let entries = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_ENTRIES));
            chunk_bytes = 0;
            store
                .install(InstallStep::Chunk(entries, marker.clone()))
                .await
                .context("installing entries")?;
            progress.update(reader.entries_read(), reader.offset());
        }
        if done {
            break;
        }
    }
    // IMPORTANT: reaching here means the trailer matched: the whole dump
    // verified. Only now is the install finished.
    let summary = reader
        .summary()
        .context("dump reader ended without a verified trailer")?;
    store
        .install(InstallStep::Finish(header.seq))
        .await
        .context("finishing the install")?;
    store.close().await.context("closing the restored store")?;
    progress.finish();
    Ok(Restored {
        header,
        entries: summary.entries,
        data_bytes: summary.data_bytes,
    })
}

/// The directory being restored into, checked and locked.
struct Target {
    dir: PathBuf,
    /// Held while the directory exists, so no node starts on it meanwhile.
    lock: Option<DirLock>,
    /// Whether this run created `dir/LOCK` (removed again on failure).
    created_lock_file: bool,
}

impl Target {
    /// Refuses a directory a node holds, and a non-empty one without
    /// `force`. Creates the parent directory if needed.
    fn prepare(dir: &Path, force: bool) -> anyhow::Result<Target> {
        match fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = parent_of(dir);
                fs::create_dir_all(&parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
                return Ok(Target {
                    dir: dir.to_path_buf(),
                    lock: None,
                    created_lock_file: false,
                });
            }
            Err(e) => return Err(anyhow!(e).context(format!("cannot read {}", dir.display()))),
            Ok(meta) if meta.file_type().is_symlink() => bail!(
                "{} is a symbolic link; pass the directory it points to",
                dir.display()
            ),
            Ok(meta) if !meta.is_dir() => bail!("{} exists and is not a directory", dir.display()),
            Ok(_) => {}
        }
        let lock_file = dir.join("LOCK");
        let had_lock_file = lock_file.exists();
        let lock = DirLock::acquire(dir)
            .with_context(|| format!("cannot restore into {}", dir.display()))?;
        let mut target = Target {
            dir: dir.to_path_buf(),
            lock: Some(lock),
            created_lock_file: !had_lock_file,
        };
        let mut others: Vec<String> = fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "LOCK")
            .collect();
        if !others.is_empty() && !force {
            target.release();
            others.sort();
            bail!(
                "{} is not empty (it holds {}); pass --force to replace its contents",
                dir.display(),
                others.join(", ")
            );
        }
        Ok(target)
    }

    /// Drops the lock, removing a lock file this run created.
    fn release(&mut self) {
        self.lock = None;
        if self.created_lock_file {
            let _ = fs::remove_file(self.dir.join("LOCK"));
            self.created_lock_file = false;
        }
    }

    /// Puts the restored directory `tmp` in place of the target: moves the
    /// node's `tls/` over, the old directory aside, the new one in, then
    /// deletes the old one.
    fn replace_with(mut self, tmp: TempPath) -> anyhow::Result<()> {
        let parent = parent_of(&self.dir);
        sync_dir(tmp.path())?;
        if self.lock.is_none() {
            tmp.persist(&self.dir)?;
            return Ok(());
        }
        let aside = TempPath::beside(&self.dir, "old")?;
        let tls = self.dir.join("tls");
        let moved_tls = tls.is_dir();
        if moved_tls {
            fs::rename(&tls, tmp.path().join("tls")).with_context(|| {
                format!("cannot move {} into the restored directory", tls.display())
            })?;
        }
        let put_back_tls = || {
            if moved_tls {
                let _ = fs::rename(tmp.path().join("tls"), &tls);
            }
        };
        if let Err(e) = fs::rename(&self.dir, aside.path()) {
            put_back_tls();
            aside.disarm();
            self.release();
            return Err(anyhow!(e).context(format!("cannot move {} aside", self.dir.display())));
        }
        if let Err(e) = fs::rename(tmp.path(), &self.dir) {
            // IMPORTANT: never delete the old data on this path: move it back.
            let _ = fs::rename(aside.path(), &self.dir);
            aside.disarm();
            put_back_tls();
            self.release();
            return Err(anyhow!(e).context(format!(
                "cannot move the restored directory to {}",
                self.dir.display()
            )));
        }
        tmp.disarm();
        // The lock file moved aside with the old directory.
        self.created_lock_file = false;
        sync_dir(&parent)?;
        let removed = fs::remove_dir_all(aside.path());
        let aside_path = aside.path().to_path_buf();
        aside.disarm();
        self.lock = None;
        removed.with_context(|| {
            format!(
                "restored, but cannot delete the old data in {}",
                aside_path.display()
            )
        })
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.release();
    }
}
