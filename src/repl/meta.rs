//! The node's place in replication history, kept in `<data-dir>/replication.meta`.
//!
//! File: `[8 magic "STRATREP"][u32 version = 1][u32 len][u32 crc32(body)][postcard body]`,
//! replaced atomically (write a temporary file, fsync, rename, fsync the
//! directory), so a crash leaves the old or the new content, never a mix.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ReplError;
use super::proto::Position;
use crate::types::{Epoch, ReplId};

const MAGIC: &[u8; 8] = b"STRATREP";
const VERSION: u32 = 1;
const FILE: &str = "replication.meta";

/// The history this node's data belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplMeta {
    /// The current history: a primary's own, or the one a replica follows.
    pub repl_id: ReplId,
    /// Its epoch: raised by every promotion.
    pub epoch: Epoch,
    /// The history this one continued at a promotion, and its last seq
    /// (PSYNC2): replicas of it up to that seq continue by WAL.
    pub previous: Option<Position>,
}

impl ReplMeta {
    /// A new history, as a fresh node starts with.
    pub fn fresh() -> ReplMeta {
        ReplMeta {
            repl_id: ReplId(rand::random()),
            epoch: Epoch(0),
            previous: None,
        }
    }

    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(FILE)
    }

    /// Reads the file, or creates a fresh history if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<ReplMeta, ReplError> {
        let path = Self::path(data_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let meta = ReplMeta::fresh();
                meta.save(data_dir)?;
                return Ok(meta);
            }
            Err(source) => return Err(ReplError::Io { path, source }),
        };
        let damaged = |reason: &'static str| ReplError::DamagedMeta {
            path: path.clone(),
            reason,
        };
        if bytes.len() < 20 || &bytes[..8] != MAGIC {
            return Err(damaged("not a replication meta file (bad magic)"));
        }
        let word = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(w)
        };
        if word(8) != VERSION {
            return Err(damaged("unsupported version"));
        }
        let len = word(12) as usize;
        let body = bytes
            .get(20..20 + len)
            .ok_or_else(|| damaged("truncated"))?;
        if crc32fast::hash(body) != word(16) {
            return Err(damaged("checksum mismatch"));
        }
        postcard::from_bytes(body).map_err(|_| damaged("undecodable body"))
    }

    /// Replaces the file atomically and durably.
    pub fn save(&self, data_dir: &Path) -> Result<(), ReplError> {
        let path = Self::path(data_dir);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ReplError::Io { path, source }
        };
        #[expect(clippy::expect_used, reason = "a struct of integers always encodes")]
        let body = postcard::to_allocvec(self).expect("replication meta encodes");
        let mut out = Vec::with_capacity(20 + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        crate::sync::write_atomic(&path, &out, false).map_err(io(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Seq;

    #[test]
    fn saves_loads_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let created = ReplMeta::load_or_create(dir.path()).unwrap();
        assert_eq!(ReplMeta::load_or_create(dir.path()).unwrap(), created);

        let promoted = ReplMeta {
            repl_id: ReplId([9; 16]),
            epoch: Epoch(4),
            previous: Some(Position {
                repl_id: created.repl_id,
                epoch: created.epoch,
                seq: Seq(77),
            }),
        };
        promoted.save(dir.path()).unwrap();
        assert_eq!(ReplMeta::load_or_create(dir.path()).unwrap(), promoted);

        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = ReplMeta::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }
}
