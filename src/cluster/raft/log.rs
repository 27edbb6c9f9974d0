//! The library's log-storage traits over [`LogDb`]: every call runs on the
//! blocking pool, one at a time (the library serialises log writes), and
//! returns once RocksDB has synced it.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageError, StorageIOError};

use super::convert::{self, RaftEntry, RaftLogId, RaftVote, Types};
use super::store::{LogDb, StoreError};

/// Runs `work` on the blocking pool: RocksDB and fsync never run on the
/// async reactor threads.
pub(crate) async fn blocking<T, F>(db: &Arc<LogDb>, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&LogDb) -> Result<T, StoreError> + Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || work(&db))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// The last committed index, plus one (0: nothing committed yet), as the
/// log store last recorded it: for [`super::MetaStatus`].
pub(crate) type CommittedMark = Arc<AtomicU64>;

/// The group's log store.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<LogDb>,
    committed: CommittedMark,
}

impl LogStore {
    pub(crate) fn new(db: Arc<LogDb>, committed: CommittedMark) -> LogStore {
        LogStore { db, committed }
    }
}

fn read_error(e: StoreError) -> StorageError<u64> {
    StorageIOError::read_logs(&e).into()
}

fn write_error(e: StoreError) -> StorageError<u64> {
    StorageIOError::write_logs(&e).into()
}

/// `range` as `from..to` log indexes.
fn index_range<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<Types> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<RaftEntry>, StorageError<u64>> {
        let (from, to) = index_range(&range);
        let entries = blocking(&self.db, move |db| db.entries(from, to))
            .await
            .map_err(read_error)?;
        Ok(entries.into_iter().map(convert::raft_entry).collect())
    }
}

impl RaftLogStorage<Types> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, StorageError<u64>> {
        let (purged, last) = blocking(&self.db, |db| Ok((db.purged()?, db.last()?)))
            .await
            .map_err(read_error)?;
        Ok(LogState {
            last_purged_log_id: convert::opt_log_id(purged),
            last_log_id: convert::opt_log_id(last.or(purged)),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &RaftVote) -> Result<(), StorageError<u64>> {
        let vote = convert::vote_of(vote);
        blocking(&self.db, move |db| db.save_vote(&vote))
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<RaftVote>, StorageError<u64>> {
        let vote = blocking(&self.db, |db| db.vote())
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_vote(&e)))?;
        Ok(vote.map(convert::raft_vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<RaftLogId>,
    ) -> Result<(), StorageError<u64>> {
        let pos = convert::opt_pos(committed.as_ref());
        blocking(&self.db, move |db| db.save_committed(pos))
            .await
            .map_err(write_error)?;
        let mark = committed.map_or(0, |id| id.index.saturating_add(1));
        self.committed.store(mark, Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<RaftLogId>, StorageError<u64>> {
        let pos = blocking(&self.db, |db| db.committed())
            .await
            .map_err(read_error)?;
        let mark = pos.map_or(0, |p| p.index.saturating_add(1));
        self.committed.store(mark, Ordering::Release);
        Ok(convert::opt_log_id(pos))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<Types>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().map(|e| convert::entry_of(&e)).collect();
        // IMPORTANT: the entries are synced before the callback reports
        // them flushed; the library counts this node's vote for them then.
        let result = blocking(&self.db, move |db| db.append(&entries)).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: RaftLogId) -> Result<(), StorageError<u64>> {
        blocking(&self.db, move |db| db.truncate(log_id.index))
            .await
            .map_err(write_error)
    }

    async fn purge(&mut self, log_id: RaftLogId) -> Result<(), StorageError<u64>> {
        let pos = convert::pos_of(&log_id);
        blocking(&self.db, move |db| db.purge(pos))
            .await
            .map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::MapCommand;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn id(term: u64, index: u64) -> RaftLogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> RaftEntry {
        openraft::Entry {
            log_id: id(term, index),
            payload: EntryPayload::Normal(MapCommand::Create { vnodes: 1 }),
        }
    }

    fn open(dir: &std::path::Path) -> LogStore {
        LogStore::new(
            Arc::new(LogDb::open(dir).unwrap()),
            CommittedMark::default(),
        )
    }

    async fn ids(store: &mut LogStore) -> Vec<RaftLogId> {
        let entries = store.try_get_log_entries(..).await.unwrap();
        entries.into_iter().map(|e| e.log_id).collect()
    }

    /// The trait calls the library makes, through a reopen: what the log
    /// state, entries and vote say afterwards is what was written.
    #[tokio::test]
    async fn log_store_through_the_traits_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = open(dir.path());
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, None);
            for i in 0..4 {
                store.append_for_test(vec![entry(1, i)]).await;
            }
            store.truncate(id(1, 2)).await.unwrap();
            store.append_for_test(vec![entry(2, 2), entry(2, 3)]).await;
            store.purge(id(1, 0)).await.unwrap();
            store.save_vote(&RaftVote::new(2, 7)).await.unwrap();
            store.save_committed(Some(id(2, 2))).await.unwrap();
        }
        let mut store = open(dir.path());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(id(1, 0)));
        assert_eq!(state.last_log_id, Some(id(2, 3)));
        assert_eq!(ids(&mut store).await, vec![id(1, 1), id(2, 2), id(2, 3)]);
        let some = store.try_get_log_entries(2..=2).await.unwrap();
        assert_eq!(some.len(), 1);
        assert_eq!(store.read_vote().await.unwrap(), Some(RaftVote::new(2, 7)));
        assert_eq!(store.read_committed().await.unwrap(), Some(id(2, 2)));
        // Everything purged: the last log id is the purged one.
        store.purge(id(2, 3)).await.unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(id(2, 3)));
        assert!(ids(&mut store).await.is_empty());
    }

    impl LogStore {
        /// `append` without the library's flush callback (whose
        /// constructor is the library's own): the same write.
        async fn append_for_test(&mut self, entries: Vec<RaftEntry>) {
            let entries: Vec<_> = entries.iter().map(convert::entry_of).collect();
            blocking(&self.db, move |db| db.append(&entries))
                .await
                .unwrap();
        }
    }
}
