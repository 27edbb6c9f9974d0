//! The data directory's exclusive lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::error::{Result, StoreError};

/// Holds `<data-dir>/LOCK` locked (an OS advisory lock, released by the
/// kernel even if the process is killed) for as long as it lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Locks `dir`, or fails with [`StoreError::Locked`] if another process holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path: PathBuf = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
                path: dir.to_path_buf(),
                lock: path,
            }),
            Err(TryLockError::Error(source)) => Err(StoreError::Io { path, source }),
        }
    }
}
