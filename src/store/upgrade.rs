//! Converting a stopped node's disk tier to this build's key layout
//! (`strata-admin upgrade`).
//!
//! The entries are copied into a fresh RocksDB directory beside the old
//! one, which is then swapped in by renames. The steps, and what a crash
//! after each leaves:
//!
//! ```text
//! 1. copy db -> db.upgrade (layout 2, flushed)   crash: db is intact; the next run starts over
//! 2. rename db -> db.v1                          crash: db.upgrade is complete; the next run renames it
//! 3. rename db.upgrade -> db, sync the directory crash: the next run removes db.v1
//! 4. remove db.v1
//! ```
//!
//! A node refuses to start while `db.v1` or `db.upgrade` exists
//! ([`StoreError::InterruptedUpgrade`]), so it never opens a half-made
//! directory or an empty one in place of the data. Our WAL is not
//! touched: it holds user keys, and recovery replays it into the new
//! layout from the copied applied seq.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::disk::{DiskConfig, DiskTier};
use super::error::{Result, StoreError};
use super::lock::DirLock;
use crate::clock::SystemClock;

/// The RocksDB directory inside a data directory.
const DB: &str = "db";
/// The upgrade's new directory, until it is complete and swapped in.
const NEW: &str = "db.upgrade";
/// The old directory, between the two renames and until it is removed.
const OLD: &str = "db.v1";

/// What [`upgrade_layout`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgraded {
    /// The directory already had this build's layout (an interrupted
    /// upgrade's leftovers, if any, were finished or removed).
    AlreadyCurrent,
    /// Entries converted from layout 1.
    Converted {
        /// Entries copied.
        entries: u64,
    },
}

/// Converts the disk tier of `data_dir` (a stopped node's: the directory
/// lock is taken) to this build's layout, finishing an interrupted run
/// first. `progress` hears the entries copied so far.
///
/// # Errors
///
/// [`StoreError::Locked`] while a node runs on it;
/// [`StoreError::UnfinishedInstall`] for a replica caught in a full sync;
/// [`StoreError::NewerLayout`]; RocksDB and file-system failures, after
/// which the old data is still in `db` (or `db.v1`, which the next run
/// uses).
pub fn upgrade_layout(
    data_dir: &Path,
    cfg: &DiskConfig,
    progress: &mut dyn FnMut(u64),
) -> Result<Upgraded> {
    let _lock = DirLock::acquire(data_dir)?;
    let (db, new, old) = (data_dir.join(DB), data_dir.join(NEW), data_dir.join(OLD));
    if !db.exists() && old.exists() {
        // Crashed between the renames (step 2): the copy is complete.
        let from = if new.exists() { &new } else { &old };
        rename(from, &db)?;
        sync_dir(data_dir)?;
    }
    if open_current(&db, cfg)? {
        remove(&new)?;
        remove(&old)?;
        return Ok(Upgraded::AlreadyCurrent);
    }
    remove(&new)?;
    let entries = {
        let fresh = DiskTier::open(&new, cfg, Arc::new(SystemClock))?;
        fresh.import_layout_1(&db, progress)?
    };
    sync_dir(data_dir)?;
    rename(&db, &old)?;
    rename(&new, &db)?;
    sync_dir(data_dir)?;
    remove(&old)?;
    // A primary's leftover full-sync checkpoints are removed at start
    // anyway; these are in the old layout, so go now.
    remove(&data_dir.join("repl-snapshots"))?;
    Ok(Upgraded::Converted { entries })
}

/// Refuses to open a data directory an upgrade left half done.
pub(super) fn check_not_interrupted(data_dir: &Path) -> Result<()> {
    for leftover in [NEW, OLD] {
        let leftover = data_dir.join(leftover);
        if leftover.exists() {
            return Err(StoreError::InterruptedUpgrade {
                data_dir: data_dir.to_path_buf(),
                leftover,
            });
        }
    }
    Ok(())
}

/// Whether `db` is absent or already of this build's layout (opening it
/// stamps a fresh one); `false` for layout 1.
fn open_current(db: &Path, cfg: &DiskConfig) -> Result<bool> {
    if !db.exists() {
        return Ok(true);
    }
    match DiskTier::open(db, cfg, Arc::new(SystemClock)) {
        Ok(_) => Ok(true),
        Err(StoreError::OldLayout { found: 1, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(io_error(from))
}

fn remove(dir: &PathBuf) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(dir)(e)),
        _ => Ok(()),
    }
}

/// Makes renames inside `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rocksdb::{ColumnFamilyDescriptor, DB, Options};

    /// A layout-1 directory as the previous release wrote it: bare keys,
    /// the value header, applied_seq, no layout key.
    fn write_layout_1(db_dir: &Path, entries: &[(&[u8], &[u8])], applied: u64) {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(
            &opts,
            db_dir,
            vec![
                ColumnFamilyDescriptor::new("data", Options::default()),
                ColumnFamilyDescriptor::new("meta", Options::default()),
            ],
        )
        .unwrap();
        let data = db.cf_handle("data").unwrap();
        for (i, (key, value)) in entries.iter().enumerate() {
            let mut raw = vec![1u8];
            raw.extend_from_slice(&(i as u64 + 1).to_le_bytes());
            raw.extend_from_slice(&0u64.to_le_bytes());
            raw.extend_from_slice(value);
            db.put_cf(data, key, raw).unwrap();
        }
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"applied_seq", applied.to_le_bytes())
            .unwrap();
        db.flush_cf(data).unwrap();
        db.flush_cf(meta).unwrap();
    }

    fn open(db_dir: &Path) -> Result<DiskTier> {
        DiskTier::open(db_dir, &DiskConfig::default(), Arc::new(SystemClock))
    }

    #[test]
    fn layout_1_is_refused_then_converted_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let entries: &[(&[u8], &[u8])] = &[(b"foo", b"1"), (b"bar", b"2"), (b"{user}:1", b"3")];
        write_layout_1(&dir.path().join(DB), entries, 3);

        let err = open(&dir.path().join(DB)).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::OldLayout {
                    found: 1,
                    expected: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("strata-admin upgrade --data-dir"),
            "{err}"
        );

        let mut seen = 0;
        let done = upgrade_layout(dir.path(), &DiskConfig::default(), &mut |n| seen = n).unwrap();
        assert_eq!(done, Upgraded::Converted { entries: 3 });
        assert_eq!(seen, 3);
        let disk = open(&dir.path().join(DB)).unwrap();
        assert_eq!(disk.applied_seq().unwrap().0, 3);
        for (key, value) in entries {
            assert_eq!(&disk.get(key).unwrap().unwrap().value[..], *value);
        }
        assert!(!dir.path().join(OLD).exists() && !dir.path().join(NEW).exists());
        drop(disk);
        let again = upgrade_layout(dir.path(), &DiskConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(again, Upgraded::AlreadyCurrent);
    }

    #[test]
    fn an_upgrade_interrupted_between_the_renames_finishes_on_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        write_layout_1(&dir.path().join(DB), &[(b"k", b"v")], 1);
        // Step 1 done, step 2 done, crash before step 3.
        {
            let fresh = open(&dir.path().join(NEW)).unwrap();
            fresh
                .import_layout_1(&dir.path().join(DB), &mut |_| {})
                .unwrap();
        }
        std::fs::rename(dir.path().join(DB), dir.path().join(OLD)).unwrap();

        let err = check_not_interrupted(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::InterruptedUpgrade { .. }),
            "{err}"
        );
        let done = upgrade_layout(dir.path(), &DiskConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(done, Upgraded::AlreadyCurrent);
        check_not_interrupted(dir.path()).unwrap();
        let disk = open(&dir.path().join(DB)).unwrap();
        assert_eq!(&disk.get(b"k").unwrap().unwrap().value[..], b"v");
    }

    #[test]
    fn an_upgrade_interrupted_during_the_copy_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        write_layout_1(&dir.path().join(DB), &[(b"a", b"1"), (b"b", b"2")], 2);
        // A partial copy: the new directory exists with one foreign entry.
        std::fs::create_dir_all(dir.path().join(NEW)).unwrap();
        std::fs::write(dir.path().join(NEW).join("junk"), b"partial").unwrap();
        let done = upgrade_layout(dir.path(), &DiskConfig::default(), &mut |_| {}).unwrap();
        assert_eq!(done, Upgraded::Converted { entries: 2 });
        let disk = open(&dir.path().join(DB)).unwrap();
        assert_eq!(disk.raw_len().unwrap(), 2);
    }

    #[test]
    fn a_layout_newer_than_this_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join(DB);
        drop(open(&db_dir).unwrap());
        {
            let db = DB::open_cf(&Options::default(), &db_dir, ["data", "meta"]).unwrap();
            let meta = db.cf_handle("meta").unwrap();
            db.put_cf(meta, b"layout", 3u32.to_le_bytes()).unwrap();
            db.flush_cf(meta).unwrap();
        }
        let err = open(&db_dir).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerLayout { found: 3, .. }),
            "{err}"
        );
        assert_eq!(super::super::disk::DISK_LAYOUT, 2);
    }
}
