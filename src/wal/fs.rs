//! The file operations the WAL needs, behind two small traits so tests can
//! swap in [`SimFs`](super::SimFs), which loses power on demand.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory-level operations of the WAL.
///
/// Implementations must give these durability semantics (those of a POSIX
/// file system, which is what [`StdFs`] relies on): bytes written to a
/// [`WalFile`] survive power loss once its `sync_data` returns; a created or
/// removed directory entry survives power loss once `sync_dir` of its
/// directory returns.
pub trait WalFs: Send + Sync + Debug + 'static {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The files (not directories) directly in `dir`, in any order.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// The whole content of a file. Segments are bounded by `segment_bytes`
    /// plus one batch, so reading one at once is fine.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates a new, empty file for appending; fails if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Cuts a file to `len` bytes and makes the new length durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Deletes a file (durable after `sync_dir` of its directory).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the creations and removals of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// A file open for appending.
pub trait WalFile: Send {
    /// Appends all of `buf`. After an error an unknown prefix of `buf` may
    /// have been written.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// fdatasync: makes everything written so far durable.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The real file system (`std::fs`).
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

/// A [`WalFile`] over a `std::fs::File` opened in append mode.
#[derive(Debug)]
struct StdFile(File);

impl WalFile for StdFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl WalFs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                out.push(entry.path());
            }
        }
        Ok(out)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        // sync_all, not sync_data: the point is the new size (metadata).
        file.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced, which
        // persists its entries.
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_fs_does_what_the_trait_says() {
        let dir = tempfile::tempdir().unwrap();
        let fs = StdFs;
        let sub = dir.path().join("a/b");
        fs.create_dir_all(&sub).unwrap();
        std::fs::create_dir(sub.join("nested")).unwrap();
        let p = sub.join("x");
        let mut f = fs.create(&p).unwrap();
        f.write_all(b"hello").unwrap();
        f.sync_data().unwrap();
        assert_eq!(
            fs.create(&p).err().map(|e| e.kind()),
            Some(io::ErrorKind::AlreadyExists)
        );
        drop(f);
        let mut f = fs.open_append(&p).unwrap();
        f.write_all(b" world").unwrap();
        assert_eq!(fs.read(&p).unwrap(), b"hello world");
        fs.truncate(&p, 5).unwrap();
        assert_eq!(fs.read(&p).unwrap(), b"hello");
        assert_eq!(fs.list(&sub).unwrap(), vec![p.clone()]);
        fs.sync_dir(&sub).unwrap();
        fs.remove(&p).unwrap();
        assert!(fs.list(&sub).unwrap().is_empty());
    }
}
