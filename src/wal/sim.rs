//! [`SimFs`]: an in-memory [`WalFs`] that keeps what was written apart from
//! what was made durable, so tests can pull the plug at any point.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::fs::{WalFile, WalFs};

/// A simulated file system with power loss and fault injection.
///
/// Each file keeps its bytes (what a read sees: the page cache) and the
/// length made durable by the last `sync_data`; each directory entry knows
/// whether a `sync_dir` has made its creation durable, and removals are
/// undone by a power loss until their directory is synced. Writes only ever
/// append, so "durable" is always a prefix of the bytes.
///
/// Clones share the same files: keep one handle, drop the `Wal`, call
/// [`SimFs::power_loss`], and open again on the same handle.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    inner: Arc<Mutex<SimState>>,
}

#[derive(Debug, Default)]
struct SimState {
    dirs: BTreeSet<PathBuf>,
    files: BTreeMap<PathBuf, SimNode>,
    /// Removed files whose removal is not durable yet.
    removed: BTreeMap<PathBuf, SimNode>,
    fail_syncs: bool,
    fail_writes: bool,
    syncs: u64,
    dir_syncs: u64,
    next_id: u64,
}

#[derive(Debug, Clone)]
struct SimNode {
    /// Tells a file apart from a later one at the same path.
    id: u64,
    data: Vec<u8>,
    synced_len: usize,
    /// Whether the directory entry survives power loss.
    entry_durable: bool,
}

struct SimFile {
    inner: Arc<Mutex<SimState>>,
    path: PathBuf,
    id: u64,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// splitmix64: a tiny deterministic generator for torn-write lengths.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SimFs {
    /// An empty file system.
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While `fail`, every `sync_data`, `sync_dir` and `truncate` returns an
    /// I/O error and makes nothing durable.
    pub fn fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// While `fail`, every `write_all` writes the first half of its buffer
    /// (a short write, as on a full disk) and then returns an I/O error.
    pub fn fail_writes(&self, fail: bool) {
        self.lock().fail_writes = fail;
    }

    /// Successful file `sync_data` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Successful `sync_dir` calls so far.
    pub fn dir_sync_count(&self) -> u64 {
        self.lock().dir_syncs
    }

    /// Power loss: every file keeps only its synced bytes; files whose
    /// creation was not followed by a `sync_dir` disappear; removals not
    /// followed by a `sync_dir` are undone. Fault injection is switched off
    /// (the machine rebooted).
    pub fn power_loss(&self) {
        self.crash(None);
    }

    /// Like [`SimFs::power_loss`], but each file keeps a pseudo-random
    /// prefix (chosen from `seed`) of its unsynced bytes: a torn write.
    pub fn power_loss_torn(&self, seed: u64) {
        self.crash(Some(seed));
    }

    fn crash(&self, seed: Option<u64>) {
        let mut st = self.lock();
        let mut rng = seed.unwrap_or(0);
        let files = std::mem::take(&mut st.files);
        for (path, mut node) in files {
            if !node.entry_durable {
                continue;
            }
            let unsynced = node.data.len() - node.synced_len;
            let torn = match seed {
                Some(_) if unsynced > 0 => (splitmix(&mut rng) % (unsynced as u64 + 1)) as usize,
                _ => 0,
            };
            node.data.truncate(node.synced_len + torn);
            node.synced_len = node.data.len();
            st.files.insert(path, node);
        }
        let removed = std::mem::take(&mut st.removed);
        for (path, mut node) in removed {
            node.data.truncate(node.synced_len);
            st.files.entry(path).or_insert(node);
        }
        st.fail_syncs = false;
        st.fail_writes = false;
    }

    /// The current bytes of a file (synced or not).
    pub fn file(&self, path: &Path) -> Option<Vec<u8>> {
        self.lock().files.get(path).map(|n| n.data.clone())
    }

    /// Replaces a file's bytes, creating it if needed, all of it durable:
    /// for planting damage.
    pub fn set_file(&self, path: &Path, data: Vec<u8>) {
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        st.dirs.insert(parent(path).to_path_buf());
        let synced_len = data.len();
        st.files.insert(
            path.to_path_buf(),
            SimNode {
                id,
                data,
                synced_len,
                entry_durable: true,
            },
        );
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lock().files.keys().cloned().collect()
    }
}

impl WalFs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        for d in dir.ancestors() {
            st.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let st = self.lock();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .files
            .keys()
            .filter(|p| parent(p) == dir)
            .cloned()
            .collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.lock()
            .files
            .get(path)
            .map(|n| n.data.clone())
            .ok_or_else(|| not_found(path))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let mut st = self.lock();
        if !st.dirs.contains(parent(path)) {
            return Err(not_found(parent(path)));
        }
        if st.files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists", path.display()),
            ));
        }
        st.next_id += 1;
        let id = st.next_id;
        st.files.insert(
            path.to_path_buf(),
            SimNode {
                id,
                data: Vec::new(),
                synced_len: 0,
                entry_durable: false,
            },
        );
        Ok(Box::new(SimFile {
            inner: Arc::clone(&self.inner),
            path: path.to_path_buf(),
            id,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let st = self.lock();
        let node = st.files.get(path).ok_or_else(|| not_found(path))?;
        Ok(Box::new(SimFile {
            inner: Arc::clone(&self.inner),
            path: path.to_path_buf(),
            id: node.id,
        }))
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut st = self.lock();
        if st.fail_syncs {
            return Err(io::Error::other("simulated fsync failure (truncate)"));
        }
        let node = st.files.get_mut(path).ok_or_else(|| not_found(path))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= node.data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "truncate beyond end"))?;
        node.data.truncate(len);
        node.synced_len = len;
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        let node = st.files.remove(path).ok_or_else(|| not_found(path))?;
        if node.entry_durable {
            st.removed.insert(path.to_path_buf(), node);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        if st.fail_syncs {
            return Err(io::Error::other("simulated fsync failure (directory)"));
        }
        for (path, node) in st.files.iter_mut() {
            if parent(path) == dir {
                node.entry_durable = true;
            }
        }
        st.removed.retain(|path, _| parent(path) != dir);
        st.dir_syncs += 1;
        Ok(())
    }
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl WalFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        let fail = st.fail_writes;
        // Writing to a file that was removed meanwhile goes nowhere, as with
        // an unlinked file on POSIX.
        if let Some(node) = st.files.get_mut(&self.path).filter(|n| n.id == self.id) {
            if fail {
                node.data.extend_from_slice(&buf[..buf.len() / 2]);
            } else {
                node.data.extend_from_slice(buf);
            }
        }
        if fail {
            return Err(io::Error::other("simulated write failure"));
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.lock();
        if st.fail_syncs {
            return Err(io::Error::other("simulated fsync failure"));
        }
        if let Some(node) = st.files.get_mut(&self.path).filter(|n| n.id == self.id) {
            node.synced_len = node.data.len();
        }
        st.syncs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_keeps_synced_prefix_and_durable_entries() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let a = dir.join("a");
        let b = dir.join("b");
        let mut fa = fs.create(&a).unwrap();
        fa.write_all(b"synced").unwrap();
        fa.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        fa.write_all(b"+lost").unwrap();
        let mut fb = fs.create(&b).unwrap();
        fb.write_all(b"never durable").unwrap();
        fb.sync_data().unwrap();
        assert_eq!(fs.read(&a).unwrap(), b"synced+lost");
        fs.power_loss();
        assert_eq!(fs.read(&a).unwrap(), b"synced");
        assert!(fs.read(&b).is_err(), "entry without dir sync must vanish");
    }

    #[test]
    fn removal_is_undone_without_dir_sync() {
        let fs = SimFs::new();
        let dir = Path::new("/d");
        let a = dir.join("a");
        fs.set_file(&a, b"x".to_vec());
        fs.remove(&a).unwrap();
        assert!(fs.list(dir).unwrap().is_empty());
        fs.power_loss();
        assert_eq!(fs.list(dir).unwrap(), vec![a.clone()]);
        fs.remove(&a).unwrap();
        fs.sync_dir(dir).unwrap();
        fs.power_loss();
        assert!(fs.list(dir).unwrap().is_empty());
    }

    #[test]
    fn torn_power_loss_keeps_a_prefix_of_unsynced_bytes() {
        let mut kept = BTreeSet::new();
        for seed in 0..32 {
            let fs = SimFs::new();
            let a = Path::new("/d/a");
            fs.set_file(a, b"base".to_vec());
            let mut f = fs.open_append(a).unwrap();
            f.write_all(b"0123456789").unwrap();
            fs.power_loss_torn(seed);
            let data = fs.read(a).unwrap();
            assert!(b"base0123456789".starts_with(&data) && data.len() >= 4);
            kept.insert(data.len());
        }
        assert!(
            kept.len() > 3,
            "seeds should tear at different points: {kept:?}"
        );
    }

    #[test]
    fn faults_are_injected() {
        let fs = SimFs::new();
        let a = Path::new("/d/a");
        fs.set_file(a, Vec::new());
        let mut f = fs.open_append(a).unwrap();
        fs.fail_writes(true);
        assert!(f.write_all(b"abcd").is_err());
        assert_eq!(fs.read(a).unwrap(), b"ab", "short write");
        fs.fail_writes(false);
        fs.fail_syncs(true);
        assert!(f.sync_data().is_err());
        assert!(fs.sync_dir(Path::new("/d")).is_err());
        assert_eq!(fs.sync_count(), 0);
        fs.fail_syncs(false);
        f.sync_data().unwrap();
        assert_eq!(fs.sync_count(), 1);
    }
}
