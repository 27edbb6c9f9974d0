//! The group's durable log and vote: a small RocksDB instance of its own
//! in `<data-dir>/cluster/log/`, its write-ahead log on and every write
//! that Raft's safety rests on synced (`sync = true`), so an acknowledged
//! append or vote survives `kill -9` and power loss alike.
//!
//! Not the store's RocksDB: that one runs with its WAL off (our own WAL
//! makes it durable), which would make every entry here as lost as a
//! memtable. Blocking calls only: the async side runs them on the blocking
//! pool.
//!
//! Keys (values are postcard encodings of `wire.rs` types):
//!
//! ```text
//! m/format     u32 LE: 1
//! m/vote       Vote            synced
//! m/committed  LogPos          not synced (a hint: re-derived if lost)
//! m/purged     LogPos          synced with the purge itself
//! l/<index>    Entry           index as u64 big-endian, so keys sort by index
//! ```

use std::path::{Path, PathBuf};

use rocksdb::{DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::{Entry, LogPos, Vote};

/// The layout version this code writes and reads.
const FORMAT: u32 = 1;

const KEY_FORMAT: &[u8] = b"m/format";
const KEY_VOTE: &[u8] = b"m/vote";
const KEY_COMMITTED: &[u8] = b"m/committed";
const KEY_PURGED: &[u8] = b"m/purged";
const LOG_PREFIX: &[u8] = b"l/";

/// Why the log store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// RocksDB refused an operation.
    #[error("metadata log at {path}: {source}")]
    Rocks {
        /// The database directory.
        path: PathBuf,
        /// What RocksDB said.
        #[source]
        source: rocksdb::Error,
    },
    /// A stored value does not decode.
    #[error("metadata log at {path}: undecodable value under {key}: {reason}")]
    Decode {
        /// The database directory.
        path: PathBuf,
        /// The key, printable.
        key: String,
        /// What postcard said.
        reason: String,
    },
    /// The directory holds a layout this code does not know.
    #[error("metadata log at {path} has layout version {found}; this build reads {FORMAT}")]
    Format {
        /// The database directory.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// A blocking task did not finish (the runtime is shutting down).
    #[error("metadata log task failed: {0}")]
    Task(String),
}

/// The key of the entry at `index`.
fn log_key(index: u64) -> Vec<u8> {
    let mut key = LOG_PREFIX.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The durable log, vote and commit mark of one node's group.
#[derive(Debug)]
pub struct LogDb {
    db: DB,
    path: PathBuf,
}

impl LogDb {
    /// Opens (creating on first start) the store in `dir`.
    ///
    /// # Errors
    ///
    /// RocksDB failing to open, or a layout of another version.
    pub fn open(dir: &Path) -> Result<LogDb, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        // A few KB of metadata: small buffers, no compression, few files.
        options.set_write_buffer_size(1 << 20);
        options.set_max_open_files(64);
        options.set_compression_type(rocksdb::DBCompressionType::None);
        options.set_keep_log_file_num(2);
        let db = DB::open(&options, dir).map_err(|source| StoreError::Rocks {
            path: dir.to_path_buf(),
            source,
        })?;
        let store = LogDb {
            db,
            path: dir.to_path_buf(),
        };
        match store.get_raw(KEY_FORMAT)? {
            None => {
                let mut batch = WriteBatch::default();
                batch.put(KEY_FORMAT, FORMAT.to_le_bytes());
                store.write(batch, true)?;
            }
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_le_bytes)
                    .unwrap_or(u32::MAX);
                if found != FORMAT {
                    return Err(StoreError::Format {
                        path: store.path.clone(),
                        found,
                    });
                }
            }
        }
        Ok(store)
    }

    fn rocks(&self) -> impl FnOnce(rocksdb::Error) -> StoreError + '_ {
        move |source| StoreError::Rocks {
            path: self.path.clone(),
            source,
        }
    }

    fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db.write_opt(batch, &options).map_err(self.rocks())
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(key).map_err(self.rocks())
    }

    fn decode<T: DeserializeOwned>(&self, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| StoreError::Decode {
            path: self.path.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            reason: e.to_string(),
        })
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get_raw(key)?
            .map(|bytes| self.decode(key, &bytes))
            .transpose()
    }

    /// Appends `entries` (consecutive, following the last one or replacing
    /// a truncated tail) and syncs before returning.
    ///
    /// # Errors
    ///
    /// RocksDB failing the write: nothing of it is then acknowledged.
    pub fn append(&self, entries: &[Entry]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put(log_key(entry.pos.index), encode(entry));
        }
        self.write(batch, true)
    }

    /// Removes the entries from `index` on (a conflicting tail), synced.
    ///
    /// # Errors
    ///
    /// RocksDB failing the write.
    pub fn truncate(&self, index: u64) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range(log_key(index), log_key(u64::MAX));
        batch.delete(log_key(u64::MAX));
        self.write(batch, true)
    }

    /// Removes the entries up to and including `upto` (a snapshot holds
    /// them now) and records it as the last purged entry, in one synced
    /// write.
    ///
    /// # Errors
    ///
    /// RocksDB failing the write.
    pub fn purge(&self, upto: LogPos) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.delete_range(log_key(0), log_key(upto.index.saturating_add(1)));
        batch.put(KEY_PURGED, encode(&upto));
        self.write(batch, true)
    }

    /// Saves the vote, synced: a node must never vote twice in a term.
    ///
    /// # Errors
    ///
    /// RocksDB failing the write.
    pub fn save_vote(&self, vote: &Vote) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put(KEY_VOTE, encode(vote));
        self.write(batch, true)
    }

    /// The last saved vote.
    ///
    /// # Errors
    ///
    /// RocksDB failing the read, or an undecodable value.
    pub fn vote(&self) -> Result<Option<Vote>, StoreError> {
        self.get(KEY_VOTE)
    }

    /// Records the last committed entry, unsynced: it only lets a
    /// restarting node re-apply its committed entries before it hears from
    /// a leader; losing it loses nothing that a leader does not resend.
    ///
    /// # Errors
    ///
    /// RocksDB failing the write.
    pub fn save_committed(&self, pos: Option<LogPos>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        match pos {
            Some(pos) => batch.put(KEY_COMMITTED, encode(&pos)),
            None => batch.delete(KEY_COMMITTED),
        }
        self.write(batch, false)
    }

    /// The last recorded committed entry.
    ///
    /// # Errors
    ///
    /// RocksDB failing the read, or an undecodable value.
    pub fn committed(&self) -> Result<Option<LogPos>, StoreError> {
        self.get(KEY_COMMITTED)
    }

    /// The last purged entry.
    ///
    /// # Errors
    ///
    /// RocksDB failing the read, or an undecodable value.
    pub fn purged(&self) -> Result<Option<LogPos>, StoreError> {
        self.get(KEY_PURGED)
    }

    /// The position of the last entry in the log, if any.
    ///
    /// # Errors
    ///
    /// RocksDB failing the read, or an undecodable value.
    pub fn last(&self) -> Result<Option<LogPos>, StoreError> {
        let end = log_key(u64::MAX);
        let mut iter = self
            .db
            .iterator(IteratorMode::From(&end, Direction::Reverse));
        match iter.next() {
            Some(item) => {
                let (key, value) = item.map_err(self.rocks())?;
                if !key.starts_with(LOG_PREFIX) {
                    return Ok(None);
                }
                Ok(Some(self.decode::<Entry>(&key, &value)?.pos))
            }
            None => Ok(None),
        }
    }

    /// The entries with index in `from..to`, in order, from the first one
    /// present (those before were purged); stops at a gap.
    ///
    /// # Errors
    ///
    /// RocksDB failing the read, or an undecodable value.
    pub fn entries(&self, from: u64, to: u64) -> Result<Vec<Entry>, StoreError> {
        let start = log_key(from);
        let mut out = Vec::new();
        let iter = self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward));
        let mut next = None;
        for item in iter {
            let (key, value) = item.map_err(self.rocks())?;
            let Some(index) = key
                .strip_prefix(LOG_PREFIX)
                .and_then(|i| <[u8; 8]>::try_from(i).ok())
                .map(u64::from_be_bytes)
            else {
                break;
            };
            if index >= to || next.is_some_and(|next| next != index) {
                break;
            }
            out.push(self.decode::<Entry>(&key, &value)?);
            next = index.checked_add(1);
        }
        Ok(out)
    }
}

/// The postcard encoding of a stored value.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    #[expect(
        clippy::expect_used,
        reason = "postcard into a Vec only fails for types serde cannot express"
    )]
    postcard::to_stdvec(value).expect("stored value encodes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::MapCommand;
    use crate::cluster::raft::wire::Payload;
    use crate::types::NodeId;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            pos: LogPos {
                term,
                leader: NodeId(1),
                index,
            },
            payload: Payload::Command(MapCommand::Create {
                vnodes: index as u32,
            }),
        }
    }

    fn indexes(db: &LogDb, from: u64, to: u64) -> Vec<(u64, u64)> {
        db.entries(from, to)
            .unwrap()
            .iter()
            .map(|e| (e.pos.term, e.pos.index))
            .collect()
    }

    /// Append, truncate, purge, vote and commit mark, then all of it
    /// again after a reopen.
    #[test]
    fn log_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let vote = Vote {
            term: 3,
            node: NodeId(2),
            committed: true,
        };
        {
            let db = LogDb::open(dir.path()).unwrap();
            assert_eq!(db.last().unwrap(), None);
            assert_eq!(db.vote().unwrap(), None);
            db.append(&(1..=5).map(|i| entry(1, i)).collect::<Vec<_>>())
                .unwrap();
            assert_eq!(db.last().unwrap().map(|p| p.index), Some(5));
            // A conflicting tail from index 4 is replaced by term 2's.
            db.truncate(4).unwrap();
            assert_eq!(db.last().unwrap().map(|p| p.index), Some(3));
            db.append(&[entry(2, 4), entry(2, 5), entry(2, 6)]).unwrap();
            db.purge(entry(1, 2).pos).unwrap();
            db.save_vote(&vote).unwrap();
            db.save_committed(Some(entry(2, 5).pos)).unwrap();
        }
        let db = LogDb::open(dir.path()).unwrap();
        assert_eq!(db.vote().unwrap(), Some(vote));
        assert_eq!(db.committed().unwrap(), Some(entry(2, 5).pos));
        assert_eq!(db.purged().unwrap(), Some(entry(1, 2).pos));
        assert_eq!(db.last().unwrap(), Some(entry(2, 6).pos));
        let all = vec![(1, 3), (2, 4), (2, 5), (2, 6)];
        assert_eq!(indexes(&db, 0, 100), all, "purged entries are gone");
        assert_eq!(indexes(&db, 3, 100), all);
        assert_eq!(indexes(&db, 4, 6), vec![(2, 4), (2, 5)]);
        assert_eq!(db.entries(4, 5).unwrap()[0], entry(2, 4));
        // Purging everything leaves no entry: the last one is the purged mark.
        db.purge(entry(2, 6).pos).unwrap();
        assert_eq!(db.last().unwrap(), None);
        assert_eq!(db.purged().unwrap(), Some(entry(2, 6).pos));
    }

    #[test]
    fn another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = LogDb::open(dir.path()).unwrap();
            db.db.put(KEY_FORMAT, 9u32.to_le_bytes()).unwrap();
        }
        let err = LogDb::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Format { found: 9, .. }), "{err}");
    }
}
