//! The replicated state machine: the [`ClusterMap`], fed the committed
//! entries in log order, and its snapshots.
//!
//! The map lives in memory and is published on a watch channel after
//! every applied batch, so what a watcher sees is always committed and
//! applied (DESIGN §9 C2). Durability comes from the log plus the latest
//! snapshot, a file in `<data-dir>/cluster/` written through
//! [`write_atomic`] (temporary name, fsync, rename, directory fsync): on a
//! restart the map is the snapshot's, and the library re-applies the
//! committed entries after it before the group starts.
//!
//! Snapshot file layout (proto-docs/cluster.md §5):
//!
//! ```text
//! 8 bytes magic "strsnap5" | u32 LE body length | u32 LE CRC-32 | postcard SnapshotFile
//! ```
//!
//! Layouts 4 (`strsnap4`, maps without gateways), 3 (`strsnap3`, also
//! migrations without their V), 2 (`strsnap2`, maps without a ring list or
//! migration) and 1 (`strsnap1`, also without in-sync sets) are still read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::convert::{self, Applied, RaftEntry, RaftLogId, RaftSnapshotMeta, RaftStored, Types};
use super::wire::SnapshotMeta;
use crate::cluster::map::{ClusterMap, MapV1, MapV2, MapV3, MapV4};
use crate::net::link::{FRAME_HEADER_BYTES, FrameError, decode_body, decode_header, encode};
use crate::sync::write_atomic;

/// The first bytes of a snapshot file; the digit is the layout version.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"strsnap5";

/// Layout 4: the same frame, its map without gateways.
const SNAPSHOT_MAGIC_V4: &[u8; 8] = b"strsnap4";

/// Layout 3: the same frame, its map's migration without a V and the map
/// without gateways.
const SNAPSHOT_MAGIC_V3: &[u8; 8] = b"strsnap3";

/// Layout 2: the same frame, its map without a ring list or migration.
const SNAPSHOT_MAGIC_V2: &[u8; 8] = b"strsnap2";

/// Layout 1: layout 2 with its map's shards without in-sync sets.
const SNAPSHOT_MAGIC_V1: &[u8; 8] = b"strsnap1";

/// A layout-1 snapshot file's body.
#[derive(Deserialize)]
struct SnapshotFileV1 {
    meta: SnapshotMeta,
    map: MapV1,
}

/// A layout-4 snapshot file's body.
#[derive(Deserialize)]
struct SnapshotFileV4 {
    meta: SnapshotMeta,
    map: MapV4,
}

/// A layout-3 snapshot file's body.
#[derive(Deserialize)]
struct SnapshotFileV3 {
    meta: SnapshotMeta,
    map: MapV3,
}

/// A layout-2 snapshot file's body.
#[derive(Deserialize)]
struct SnapshotFileV2 {
    meta: SnapshotMeta,
    map: MapV2,
}

/// The snapshot file's name in the group's directory.
const SNAPSHOT_FILE: &str = "snapshot.bin";

/// A snapshot file's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// The map as of `meta.last`.
    pub map: ClusterMap,
}

/// Why a snapshot file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The OS refused.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a snapshot of this layout, or is damaged.
    #[error("snapshot {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A blocking task did not finish.
    #[error("snapshot task failed: {0}")]
    Task(String),
}

/// The snapshot file of one group directory.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    path: PathBuf,
}

impl SnapshotStore {
    /// The snapshot file in `dir`.
    pub fn new(dir: &Path) -> SnapshotStore {
        SnapshotStore {
            path: dir.join(SNAPSHOT_FILE),
        }
    }

    /// Replaces the snapshot, durably, in one step.
    ///
    /// # Errors
    ///
    /// Whatever the OS says about writing, syncing or renaming.
    pub fn save(&self, file: &SnapshotFile) -> Result<(), SnapshotError> {
        let mut bytes = SNAPSHOT_MAGIC.to_vec();
        bytes.extend_from_slice(&encode(file));
        write_atomic(&self.path, &bytes, false).map_err(|source| SnapshotError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The saved snapshot; `None` before the first.
    ///
    /// # Errors
    ///
    /// An unreadable, foreign or damaged file.
    pub fn load(&self) -> Result<Option<SnapshotFile>, SnapshotError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SnapshotError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| SnapshotError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let layouts = [
            (SNAPSHOT_MAGIC, 5),
            (SNAPSHOT_MAGIC_V4, 4),
            (SNAPSHOT_MAGIC_V3, 3),
            (SNAPSHOT_MAGIC_V2, 2),
            (SNAPSHOT_MAGIC_V1, 1),
        ];
        let (rest, layout) = layouts
            .iter()
            .find_map(|(magic, layout)| bytes.strip_prefix(magic.as_slice()).map(|r| (r, *layout)))
            .ok_or_else(|| corrupt("not a snapshot of a layout this build reads (magic)".into()))?;
        let header: [u8; FRAME_HEADER_BYTES] = rest
            .get(..FRAME_HEADER_BYTES)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| corrupt("truncated header".into()))?;
        let (len, crc) = decode_header(header).map_err(|e| corrupt(e.to_string()))?;
        let body = &rest[FRAME_HEADER_BYTES..];
        if body.len() != len as usize {
            return Err(corrupt(format!(
                "body of {} bytes, header says {len}",
                body.len()
            )));
        }
        let file = match layout {
            1 => decode_body(crc, body).map(|old: SnapshotFileV1| SnapshotFile {
                meta: old.meta,
                map: old.map.0,
            }),
            2 => decode_body(crc, body).map(|old: SnapshotFileV2| SnapshotFile {
                meta: old.meta,
                map: old.map.0,
            }),
            3 => decode_body(crc, body).map(|old: SnapshotFileV3| SnapshotFile {
                meta: old.meta,
                map: old.map.0,
            }),
            4 => decode_body(crc, body).map(|old: SnapshotFileV4| SnapshotFile {
                meta: old.meta,
                map: old.map.0,
            }),
            _ => decode_body(crc, body),
        };
        file.map(Some)
            .map_err(|e: FrameError| corrupt(e.to_string()))
    }

    /// [`Self::save`] on the blocking pool.
    async fn save_async(&self, file: SnapshotFile) -> Result<(), SnapshotError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.save(&file))
            .await
            .map_err(|e| SnapshotError::Task(e.to_string()))?
    }

    /// [`Self::load`] on the blocking pool.
    async fn load_async(&self) -> Result<Option<SnapshotFile>, SnapshotError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| SnapshotError::Task(e.to_string()))?
    }
}

/// The applied state: the map, the last entry applied to it, the group
/// membership as of then.
#[derive(Debug, Clone, Default)]
struct AppliedState {
    map: ClusterMap,
    last: Option<RaftLogId>,
    membership: RaftStored,
}

/// The state machine the library drives.
pub(crate) struct MapMachine {
    state: AppliedState,
    snapshots: SnapshotStore,
    /// The committed, applied map, for everyone who routes by it.
    published: watch::Sender<Arc<ClusterMap>>,
    /// Snapshots built by this process, to name them apart.
    built: u64,
}

impl MapMachine {
    /// The machine as of the saved snapshot in `dir` (empty before one),
    /// and the watch channel it publishes the map on.
    ///
    /// # Errors
    ///
    /// A snapshot file that cannot be read.
    pub(crate) async fn open(
        dir: &Path,
    ) -> Result<(MapMachine, watch::Receiver<Arc<ClusterMap>>), SnapshotError> {
        let snapshots = SnapshotStore::new(dir);
        let state = match snapshots.load_async().await? {
            None => AppliedState::default(),
            Some(file) => state_of(&convert::raft_snapshot_meta(&file.meta), file.map),
        };
        let (published, watch) = watch::channel(Arc::new(state.map.clone()));
        let machine = MapMachine {
            state,
            snapshots,
            published,
            built: 0,
        };
        Ok((machine, watch))
    }

    fn publish(&self) {
        self.published
            .send_replace(Arc::new(self.state.map.clone()));
    }

    /// Applies one entry, returning what it did.
    fn apply_one(&mut self, entry: RaftEntry) -> Applied {
        self.state.last = Some(entry.log_id);
        let refused = match entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Normal(cmd) => self.state.map.apply(cmd).err(),
            EntryPayload::Membership(m) => {
                self.state.membership = StoredMembership::new(Some(entry.log_id), m);
                None
            }
        };
        if let Some(e) = &refused {
            tracing::debug!(index = entry.log_id.index, error = %e, "map command refused");
        }
        Applied {
            version: self.state.map.version(),
            refused,
        }
    }
}

fn state_of(meta: &RaftSnapshotMeta, map: ClusterMap) -> AppliedState {
    AppliedState {
        map,
        last: meta.last_log_id,
        membership: meta.last_membership.clone(),
    }
}

fn snapshot_error(e: &SnapshotError) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, e).into()
}

impl RaftStateMachine<Types> for MapMachine {
    type SnapshotBuilder = MapSnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<RaftLogId>, RaftStored), StorageError<u64>> {
        Ok((self.state.last, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = RaftEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let results: Vec<Applied> = entries.into_iter().map(|e| self.apply_one(e)).collect();
        // Not by version: an in-sync set changes the map but not its version.
        if **self.published.borrow() != self.state.map {
            self.publish();
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> MapSnapshotBuilder {
        self.built += 1;
        MapSnapshotBuilder {
            state: self.state.clone(),
            snapshots: self.snapshots.clone(),
            built: self.built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<ClusterMap>, StorageError<u64>> {
        Ok(Box::new(ClusterMap::new()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &RaftSnapshotMeta,
        snapshot: Box<ClusterMap>,
    ) -> Result<(), StorageError<u64>> {
        let file = SnapshotFile {
            meta: convert::snapshot_meta_of(meta),
            map: (*snapshot).clone(),
        };
        // IMPORTANT: durable before the map is replaced: the library may
        // purge the log the snapshot covers as soon as this returns.
        self.snapshots
            .save_async(file)
            .await
            .map_err(|e| snapshot_error(&e))?;
        self.state = state_of(meta, *snapshot);
        tracing::info!(last = ?meta.last_log_id, version = self.state.map.version(), "installed a map snapshot");
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<Types>>, StorageError<u64>> {
        let file = self
            .snapshots
            .load_async()
            .await
            .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &e)))?;
        Ok(file.map(|file| Snapshot {
            meta: convert::raft_snapshot_meta(&file.meta),
            snapshot: Box::new(file.map),
        }))
    }
}

/// Builds a snapshot of the state at the time it was asked for.
pub(crate) struct MapSnapshotBuilder {
    state: AppliedState,
    snapshots: SnapshotStore,
    built: u64,
}

impl RaftSnapshotBuilder<Types> for MapSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Types>, StorageError<u64>> {
        let id = match &self.state.last {
            Some(last) => format!("{}-{}-{}", last.leader_id.term, last.index, self.built),
            None => format!("0-0-{}", self.built),
        };
        let meta = openraft::SnapshotMeta {
            last_log_id: self.state.last,
            last_membership: self.state.membership.clone(),
            snapshot_id: id,
        };
        let file = SnapshotFile {
            meta: convert::snapshot_meta_of(&meta),
            map: self.state.map.clone(),
        };
        // IMPORTANT: durable before the library purges the log it covers.
        self.snapshots
            .save_async(file)
            .await
            .map_err(|e| snapshot_error(&e))?;
        tracing::debug!(snapshot = %meta.snapshot_id, "built a map snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(self.state.map.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::MapCommand;
    use crate::cluster::raft::wire::{LogPos, Membership};
    use crate::types::NodeId;

    fn file() -> SnapshotFile {
        let mut map = ClusterMap::new();
        map.apply(MapCommand::Create { vnodes: 16 }).unwrap();
        SnapshotFile {
            meta: SnapshotMeta {
                last: Some(LogPos {
                    term: 1,
                    leader: NodeId(3),
                    index: 9,
                }),
                membership_pos: None,
                membership: Membership {
                    voters: vec![vec![NodeId(3)]],
                    members: vec![],
                },
                id: "1-9-1".into(),
            },
            map,
        }
    }

    #[test]
    fn snapshot_file_round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        store.save(&file()).unwrap();
        assert_eq!(store.load().unwrap(), Some(file()));
        let path = dir.path().join(SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        std::fs::write(&path, b"strsnap9").unwrap();
        assert!(store.load().is_err());
    }

    /// A snapshot file whose map holds one shard, and that shard's primary.
    fn one_shard_file() -> (SnapshotFile, NodeId) {
        use crate::cluster::map::NodeInfo;
        use crate::cluster::ring::ShardId;
        let mut file = file();
        let info = NodeInfo {
            name: "a".into(),
            client_addr: "a:1".into(),
            link_addr: "a:2".into(),
            shard: ShardId(1),
        };
        let primary = NodeId::of_name("a");
        let cmd = MapCommand::AddShard {
            id: ShardId(1),
            primary,
            info,
        };
        file.map.apply(cmd).unwrap();
        (file, primary)
    }

    /// Loads `want` written in an older layout: `magic`, and the current
    /// body less its last bytes, which must be `dropped` (the fields that
    /// layout lacks).
    fn load_older(want: &SnapshotFile, magic: &[u8; 8], dropped: &[u8]) -> SnapshotFile {
        let body = postcard::to_stdvec(want).unwrap();
        assert_eq!(&body[body.len() - dropped.len()..], dropped);
        let body = &body[..body.len() - dropped.len()];
        let mut bytes = magic.to_vec();
        bytes.extend((body.len() as u32).to_le_bytes());
        bytes.extend(crc32fast::hash(body).to_le_bytes());
        bytes.extend(body);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SNAPSHOT_FILE), &bytes).unwrap();
        SnapshotStore::new(dir.path()).load().unwrap().unwrap()
    }

    #[test]
    fn a_layout_4_snapshot_loads_without_gateways() {
        let (want, primary) = one_shard_file();
        // Layout 4 is layout 5 without the gateways (none: 00).
        let got = load_older(&want, SNAPSHOT_MAGIC_V4, &[0]);
        assert_eq!(got, want);
        assert_eq!(got.map.gateway(primary), None);
    }

    #[test]
    fn a_layout_2_snapshot_loads_with_every_shard_on_the_ring() {
        use crate::cluster::ring::ShardId;
        let (want, _) = one_shard_file();
        // Layout 2 is layout 5 without the ring list (1 shard: 01 01), the
        // migration (none: 00) and the gateways (none: 00).
        let got = load_older(&want, SNAPSHOT_MAGIC_V2, &[1, 1, 0, 0]);
        assert_eq!(got, want);
        assert_eq!(got.map.ring(), [ShardId(1)]);
    }

    #[test]
    fn a_layout_1_snapshot_loads_with_empty_in_sync_sets() {
        use crate::cluster::ring::ShardId;
        let (want, _) = one_shard_file();
        // Layout 1 is layout 5 without the one shard's in-sync set (an
        // empty Vec), the ring list, the migration and the gateways.
        let got = load_older(&want, SNAPSHOT_MAGIC_V1, &[0, 1, 1, 0, 0]);
        assert_eq!(got, want);
        assert!(got.map.shards()[&ShardId(1)].in_sync.is_empty());
    }
}
