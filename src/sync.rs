//! Small helpers every subsystem shares, each in one place.

use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Locks `m`, going on if a panic elsewhere poisoned it: the data under
/// this crate's mutexes stays consistent between statements, so a poisoned
/// lock only says another thread panicked while holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes a file via a temporary name (`<name>.tmp`), fsyncs it, renames it
/// into place and fsyncs the directory, so a crash leaves the old file or
/// the new one, never a torn one, and the rename itself is durable. With
/// `secret` the file gets mode 0600 (on Unix).
///
/// # Errors
///
/// Whatever the OS says about creating, writing, syncing or renaming.
pub fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // NOTE: a leftover temporary file would keep its old mode through
    // `truncate`; remove it so a key is always created with 0600.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
