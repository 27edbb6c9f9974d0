//! Warm restart: the memory tier's keys are saved (periodically and on a
//! clean close) and, at the next open, read back from the disk tier into
//! the memory tier in the background, so a restart does not start cold.
//!
//! `<data-dir>/hot-keys`, replaced atomically:
//!
//! ```text
//! [8 magic "STRATHOT"][u32 version = 1][u32 count]
//! count x ([u32 key length][key bytes])
//! [u32 crc32 of everything before]
//! ```
//!
//! It is only a hint: a missing or damaged file means a cold start, never
//! a failed one, and fills are version-checked like any other (I3).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::checkpoint::Wake;
use super::disk::DiskTier;
use super::memory::MemoryTier;
use crate::clock::Clock;

const FILE: &str = "hot-keys";
const MAGIC: &[u8; 8] = b"STRATHOT";
const VERSION: u32 = 1;

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes up to `max_keys` of the keys the memory tier holds; returns how many.
pub(crate) fn save(dir: &Path, memory: &MemoryTier, max_keys: usize) -> std::io::Result<usize> {
    let keys = memory.keys(max_keys);
    let mut out = Vec::with_capacity(16 + keys.iter().map(|k| k.len() + 4).sum::<usize>());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    for key in &keys {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    // IMPORTANT: through the one atomic writer, which also fsyncs the
    // directory (this file once skipped that, so a crash could lose it).
    crate::sync::write_atomic(&path(dir), &out, false)?;
    Ok(keys.len())
}

/// The saved keys; `None` if there is no usable file (logged when damaged).
fn load(dir: &Path) -> Option<Vec<Bytes>> {
    let bytes = match std::fs::read(path(dir)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the hot-key list; starting cold");
            return None;
        }
    };
    let parsed = parse(&bytes);
    if parsed.is_none() {
        tracing::warn!(file = %path(dir).display(), "damaged hot-key list; starting cold");
    }
    parsed
}

fn parse(bytes: &[u8]) -> Option<Vec<Bytes>> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc || body.get(..8)? != MAGIC {
        return None;
    }
    let word = |at: usize| Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?));
    if word(8)? != VERSION {
        return None;
    }
    let count = word(12)? as usize;
    let mut keys = Vec::with_capacity(count.min(1 << 20));
    let mut at = 16;
    for _ in 0..count {
        let len = word(at)? as usize;
        keys.push(Bytes::copy_from_slice(body.get(at + 4..at + 4 + len)?));
        at += 4 + len;
    }
    (at == body.len()).then_some(keys)
}

/// The warm thread: re-reads the saved keys into the memory tier, then
/// saves the current hot keys every `interval` until the store stops.
pub(crate) struct Warmer<'a> {
    pub dir: &'a Path,
    pub disk: &'a DiskTier,
    pub memory: &'a MemoryTier,
    pub clock: &'a dyn Clock,
    pub wake: &'a (Mutex<Wake>, Condvar),
    pub warmed: &'a AtomicU64,
    pub max_keys: usize,
    pub interval: Option<Duration>,
}

impl Warmer<'_> {
    fn stopping(&self) -> bool {
        self.wake.0.lock().unwrap_or_else(|p| p.into_inner()).stop
    }

    pub fn run(&self) {
        self.warm();
        let Some(interval) = self.interval else {
            return;
        };
        let (state, cvar) = self.wake;
        let mut last = Instant::now();
        loop {
            let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
            while !guard.stop && last.elapsed() < interval {
                let left = interval.saturating_sub(last.elapsed());
                guard = cvar
                    .wait_timeout(guard, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            if guard.stop {
                return;
            }
            drop(guard);
            if let Err(e) = save(self.dir, self.memory, self.max_keys) {
                tracing::warn!(error = %e, "cannot save the hot-key list");
            }
            last = Instant::now();
        }
    }

    fn warm(&self) {
        let Some(keys) = load(self.dir) else { return };
        let started = Instant::now();
        let mut filled = 0u64;
        for (i, key) in keys.into_iter().enumerate() {
            if i % 1024 == 0 && self.stopping() {
                break;
            }
            // IMPORTANT: the token before the disk read, as for any fill (I3).
            let token = self.memory.fill_token(&key);
            match self.disk.get(&key) {
                Ok(Some(value)) if !value.is_expired(self.clock.now_ms()) => {
                    if self.memory.fill(&key, value, token) {
                        filled += 1;
                        self.warmed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "re-warming stopped");
                    break;
                }
            }
        }
        tracing::info!(
            keys = filled,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "memory tier re-warmed from the saved hot keys"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(crate::clock::SystemClock);
        let memory = MemoryTier::new(1 << 20, clock.clone());
        let value = super::super::disk::StoredValue::string(
            crate::types::Seq(1),
            0,
            Bytes::from_static(b"v"),
        );
        for key in ["a", "bb", "ccc"] {
            let token = memory.fill_token(key.as_bytes());
            memory.fill(key.as_bytes(), value.clone(), token);
        }
        assert_eq!(save(dir.path(), &memory, 10).unwrap(), 3);
        let mut keys = load(dir.path()).unwrap();
        keys.sort();
        assert_eq!(
            keys,
            [Bytes::from("a"), Bytes::from("bb"), Bytes::from("ccc")]
        );
        assert_eq!(save(dir.path(), &memory, 2).unwrap(), 2, "bounded");

        let mut bytes = std::fs::read(path(dir.path())).unwrap();
        bytes[17] ^= 1;
        assert!(parse(&bytes).is_none());
        assert!(parse(&bytes[..10]).is_none());
        assert!(parse(&[]).is_none());
    }
}
