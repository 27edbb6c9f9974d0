//! `strata-admin dump`: every live entry of a stopped node's data directory
//! into one dump file (`proto-docs/dump-format.md`), plus the helpers the
//! other offline commands share (progress display, directory checks,
//! durable renames).
//!
//! The store is opened as the node would open it (the WAL replayed into
//! RocksDB), so every acknowledged write is in the dump, and read through
//! a checkpoint of it, entry by stored entry: strings, a list's metadata
//! and its elements. The dump's clock is its `created_at`: entries
//! expired by then are left out, and every other entry's absolute expiry
//! is kept.
//!
//! A dump (format version 3) holds its entries in ascending (slot, key)
//! order, the order of the store's disk tier. The tool streams the
//! checkpoint straight into the writer without sorting (memory stays at
//! one chunk); should a source ever yield another order, the writer
//! refuses the entry and the dump fails with that error, leaving no file.

use std::fs::{self, File};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use strata::clock::{Clock, SystemClock};
use strata::dump::{DUMP_VERSION, DumpEntry, DumpHeader, DumpWriter, MAX_NODE_NAME_BYTES};
use strata::net::client::{Client, ClientConfig, ServerTrust};
use strata::net::tls::parse_fingerprint;
use strata::store::{Env, Store, StoreConfig};
use strata::wal::StdFs;

/// `strata-admin dump`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Opens the data directory as the node would (replaying its write-ahead log, so every \
acknowledged write is included) and writes every live entry (key, value, version, \
absolute expiry and kind: strings, and lists with their elements) to FILE in the portable \
dump format, version 3: entries in ascending (slot, key) order, each tagged with its \
cluster slot. Entries that have expired by the \
time the dump starts are left out. The node must be stopped: a directory a running node \
holds is refused.

FILE is written to a temporary file beside it, fsynced, and renamed into place at the \
end, so FILE is either the complete dump or absent. The header records the node name, \
the seq the data covers and when the dump was taken. `strata-admin verify --dump FILE` \
checks a dump; `strata-admin restore` loads one into a data directory.

Online: with --addr instead of --data-dir, a running node takes a RocksDB checkpoint at \
one seq and sends its live entries page by page over QUIC (admin token if tokens are \
required); writes made meanwhile land after that seq and are not in the dump.

Example: strata-admin dump --data-dir /var/lib/strata --out strata-2026-11-22.sdump
Online:  strata-admin dump --addr 10.0.0.5:7379 --pin <FINGERPRINT> --out live.sdump")]
pub struct Args {
    /// The data directory of a stopped node.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "addr",
        conflicts_with = "addr"
    )]
    data_dir: Option<PathBuf>,

    /// Online instead: ask the running node at HOST:PORT (its client port)
    /// for a consistent snapshot over QUIC. Needs an admin token if the
    /// node requires tokens, and --pin or --ca.
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<String>,

    /// With --addr: the node certificate's SHA-256 fingerprint (hex), as the
    /// node logs it at start.
    #[arg(long, value_name = "SHA256", requires = "addr")]
    pin: Option<String>,

    /// With --addr: a CA file that signed the node's certificate.
    #[arg(long, value_name = "FILE", requires = "addr", conflicts_with = "pin")]
    ca: Option<PathBuf>,

    /// With --addr: an admin token.
    #[arg(long, value_name = "TOKEN", env = "STRATA_TOKEN", requires = "addr")]
    token: Option<String>,

    /// The dump file to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,

    /// Node name recorded in the dump's header (default: the data
    /// directory's name). At most 255 bytes.
    #[arg(long, value_name = "NAME")]
    node: Option<String>,

    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
}

/// Runs `dump`.
///
/// # Errors
///
/// A directory that is not a data directory or is in use, an existing
/// FILE without `--force`, store and file-system failures.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.data_dir {
        check_data_dir(dir)?;
    }
    if args.out.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it",
            args.out.display()
        );
    }
    if args.out.is_dir() {
        bail!("{} is a directory; --out names a file", args.out.display());
    }
    let node = match (&args.node, &args.data_dir, &args.addr) {
        (Some(node), _, _) => node.clone(),
        (None, Some(dir), _) => dir_name(dir)?,
        (None, None, addr) => addr.clone().unwrap_or_else(|| "strata".into()),
    };
    if node.len() > MAX_NODE_NAME_BYTES {
        bail!(
            "node name is {} bytes; a dump header holds at most {MAX_NODE_NAME_BYTES} (pass a shorter --node)",
            node.len()
        );
    }
    match (&args.data_dir, &args.addr) {
        (Some(dir), _) => runtime()?.block_on(dump(args, dir, node)),
        (None, Some(addr)) => runtime()?.block_on(dump_online(args, addr, node)),
        (None, None) => bail!("give --data-dir DIR (offline) or --addr HOST:PORT (online)"),
    }
}

/// The online variant: pages of a snapshot the node takes at one seq.
async fn dump_online(args: &Args, addr: &str, node: String) -> anyhow::Result<()> {
    let started = Instant::now();
    let trust = match (&args.pin, &args.ca) {
        (Some(pin), _) => ServerTrust::Pin(parse_fingerprint(pin).context("--pin")?),
        (None, Some(ca)) => ServerTrust::CaFile(ca.clone()),
        (None, None) => bail!("--addr needs --pin FINGERPRINT or --ca FILE to verify the node"),
    };
    let mut config = ClientConfig::new(addr, trust).with_connections(1);
    if let Some(token) = &args.token {
        config = config.with_token(token.clone());
    }
    let client = Client::connect(config)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let mut page = client
        .raw_snapshot_page(None, None)
        .await
        .context("asking the node for a snapshot")?;
    let (snapshot, seq) = (page.snapshot, page.seq);
    let header = DumpHeader::new(node, seq, page.created_at_ms);
    let mut out = DumpOut::create(&args.out, &header)?;
    loop {
        for item in page.entries {
            out.write(&DumpEntry {
                key: item.key,
                value: item.value,
                version: item.version,
                expires_at_ms: item.expires_at_ms,
                kind: item.kind,
            })?;
        }
        out.page_done();
        let Some(next) = page.next else { break };
        page = client
            .raw_snapshot_page(Some(snapshot), Some(next))
            .await
            .context("reading the node's snapshot")?;
    }
    out.finish(&args.out, &format!("node {addr}"), started)
}

/// A dump being written: to a temporary file beside its target, renamed
/// into place once complete and fsynced, with progress on the way.
struct DumpOut {
    seq: strata::types::Seq,
    tmp: TempPath,
    writer: DumpWriter<BufWriter<File>>,
    progress: Progress,
}

impl DumpOut {
    fn create(target: &Path, header: &DumpHeader) -> anyhow::Result<DumpOut> {
        let tmp = TempPath::beside(target, "tmp")?;
        let file = File::create_new(tmp.path())
            .with_context(|| format!("cannot create {}", tmp.path().display()))?;
        let writer = DumpWriter::new(BufWriter::with_capacity(1 << 20, file), header)
            .with_context(|| format!("writing {}", tmp.path().display()))?;
        Ok(DumpOut {
            seq: header.seq,
            tmp,
            writer,
            progress: Progress::new("dump", None),
        })
    }

    /// Appends `entry`; an entry the format refuses (out of (slot, key)
    /// order, too large) is reported as such, not as an i/o failure.
    fn write(&mut self, entry: &DumpEntry) -> anyhow::Result<()> {
        match self.writer.write_entry(entry) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Err(anyhow::Error::new(e)
                .context(format!(
                    "the source yielded an entry a version-{DUMP_VERSION} dump cannot hold \
                     (a dump holds each key once, in ascending (slot, key) order); no dump was \
                     written"
                ))),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("writing {}", self.tmp.path().display())))
            }
        }
    }

    fn page_done(&mut self) {
        self.progress
            .update(self.writer.entries(), self.writer.bytes_written());
    }

    /// Completes the file, moves it to `target` and prints the summary.
    fn finish(self, target: &Path, source: &str, started: Instant) -> anyhow::Result<()> {
        let DumpOut {
            seq,
            tmp,
            writer,
            mut progress,
        } = self;
        let context = || format!("writing {}", tmp.path().display());
        let (out, summary) = writer.finish().with_context(context)?;
        progress.finish();
        let file = out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(context)?;
        file.sync_all().with_context(context)?;
        drop(file);
        tmp.persist(target)?;
        println!(
            "dumped {} entries ({} of keys and values) at seq {seq} from {source} to {} ({}) in {:.1} s",
            summary.entries,
            human_bytes(summary.data_bytes),
            target.display(),
            human_bytes(summary.file_bytes),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

async fn dump(args: &Args, data_dir: &Path, node: String) -> anyhow::Result<()> {
    let started = Instant::now();
    let created_at_ms = SystemClock.now_ms();
    let mut config = StoreConfig::new(data_dir);
    // Nothing is written, so no periodic checkpoints and a small memory tier.
    config.checkpoint_interval_ms = 0;
    config.memory_budget_bytes = 8 << 20;
    let env = Env {
        clock: Arc::new(FrozenClock(created_at_ms)),
        wal_fs: Arc::new(StdFs),
    };
    let (store, report) = Store::open_with(config, env)
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    if let Some(cut) = &report.wal.truncated {
        eprintln!(
            "note: the wal had a torn tail (a crash during a write); dropped {} bytes of {} from byte {}, as the node does at start",
            cut.bytes_dropped,
            cut.file.display(),
            cut.offset
        );
    }
    if report.install.is_some() {
        store.close().await?;
        bail!(
            "{} holds an unfinished full-sync install: its data is partial. Start the node so \
             it completes the sync, then dump",
            data_dir.display()
        );
    }
    // A checkpoint of the store, read in disk order: every entry as it
    // is, a list's metadata and its elements alike.
    let checkpoint = data_dir.join(CHECKPOINT_DIR);
    let result = match remove_checkpoint(&checkpoint) {
        Ok(()) => dump_checkpoint(&store, &checkpoint, args, node, created_at_ms, started).await,
        Err(e) => Err(e),
    };
    // The dump's own error first; the clean-up's only when the dump went well.
    let removed = remove_checkpoint(&checkpoint);
    let closed = store.close().await.context("closing the store");
    result.and(removed).and(closed)
}

/// Where the offline dump puts its checkpoint, inside the data directory
/// (a checkpoint hard-links the store's files, so it must be on its file
/// system); removed before and after.
const CHECKPOINT_DIR: &str = "dump-checkpoint";

/// Bytes of keys and values read from the checkpoint at a time.
const CHUNK_BYTES: usize = 4 << 20;

fn remove_checkpoint(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("cannot remove {}", dir.display())))
        }
        _ => Ok(()),
    }
}

async fn dump_checkpoint(
    store: &Store,
    checkpoint: &Path,
    args: &Args,
    node: String,
    created_at_ms: u64,
    started: Instant,
) -> anyhow::Result<()> {
    let (reader, _hold) = store
        .snapshot(checkpoint.to_path_buf())
        .await
        .context("taking a checkpoint of the store")?;
    let header = DumpHeader::new(node.clone(), reader.seq(), created_at_ms);
    let mut out = DumpOut::create(&args.out, &header)?;
    let mut after: Option<Bytes> = None;
    loop {
        // The clock is frozen at created_at: what has expired by then is
        // left out, and every other expiry is kept as it is.
        let chunk = reader
            .read_chunk(after.as_deref(), CHUNK_BYTES, created_at_ms)
            .context("reading the store's checkpoint")?;
        let Some(last) = chunk.last() else { break };
        after = Some(last.key.clone());
        for entry in chunk {
            out.write(&DumpEntry::from(entry))?;
        }
        out.page_done();
    }
    out.finish(&args.out, &format!("node {node:?}"), started)
}

/// A clock that stands still: the dump's notion of "now".
#[derive(Debug)]
struct FrozenClock(u64);

impl Clock for FrozenClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

/// A single-threaded runtime for the store's async API.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Refuses a path that is not an existing strata data directory (one with
/// `db/` or `wal/`), so a typo never creates an empty store.
pub(crate) fn check_data_dir(dir: &Path) -> anyhow::Result<()> {
    let meta = fs::metadata(dir)
        .with_context(|| format!("data directory {} cannot be read", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if !dir.join("db").is_dir() && !dir.join("wal").is_dir() {
        bail!(
            "{} is not a strata data directory (it has neither db/ nor wal/)",
            dir.display()
        );
    }
    Ok(())
}

/// The last component of `dir`, resolved (so `.` gives a real name).
pub(crate) fn dir_name(dir: &Path) -> anyhow::Result<String> {
    let full =
        fs::canonicalize(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    Ok(full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "strata".to_string()))
}

/// fsyncs a directory, making renames and creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync directory {}", dir.display()))
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A temporary file or directory beside a target path, removed on drop
/// unless persisted.
pub(crate) struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// `.<name>.<what>-<pid>` in the directory of `target`; refuses a
    /// leftover of the same name.
    pub(crate) fn beside(target: &Path, what: &str) -> anyhow::Result<TempPath> {
        let name = target
            .file_name()
            .with_context(|| format!("{} has no file name", target.display()))?
            .to_string_lossy();
        let path = parent_of(target).join(format!(".{name}.{what}-{}", std::process::id()));
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} already exists (left by an interrupted run?); remove it first",
                path.display()
            );
        }
        Ok(TempPath { path, armed: true })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames it to `target` and fsyncs the directory.
    pub(crate) fn persist(mut self, target: &Path) -> anyhow::Result<()> {
        fs::rename(&self.path, target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.path.display(),
                target.display()
            )
        })?;
        self.armed = false;
        sync_dir(&parent_of(target))
    }

    /// Keeps the path: the caller moved or removed it.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.armed {
            let _ = if self.path.is_dir() {
                fs::remove_dir_all(&self.path)
            } else {
                fs::remove_file(&self.path)
            };
        }
    }
}

/// A progress line on stderr: redrawn in place on a terminal, a plain
/// line every few seconds otherwise.
pub(crate) struct Progress {
    label: &'static str,
    total_bytes: Option<u64>,
    started: Instant,
    last: Option<Instant>,
    terminal: bool,
    drawn: bool,
}

impl Progress {
    const TERMINAL_EVERY: Duration = Duration::from_millis(100);
    const PLAIN_EVERY: Duration = Duration::from_secs(10);
    const BAR_WIDTH: usize = 30;

    pub(crate) fn new(label: &'static str, total_bytes: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress {
            label,
            total_bytes,
            started: now,
            last: Some(now),
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    /// Shows `entries` and `bytes` done, if enough time has passed.
    pub(crate) fn update(&mut self, entries: u64, bytes: u64) {
        let every = if self.terminal {
            Self::TERMINAL_EVERY
        } else {
            Self::PLAIN_EVERY
        };
        if self.last.is_some_and(|last| last.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let line = self.line(entries, bytes);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn line(&self, entries: u64, bytes: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
        let tail = format!(
            "{entries} entries  {}/s  {secs:.0} s",
            human_bytes(rate as u64)
        );
        match self.total_bytes {
            Some(total) if total > 0 => {
                let done = bytes.min(total) as f64 / total as f64;
                let filled = (done * Self::BAR_WIDTH as f64) as usize;
                format!(
                    "{} [{}{}] {:>3.0}%  {} of {}  {tail}",
                    self.label,
                    "#".repeat(filled),
                    ".".repeat(Self::BAR_WIDTH - filled),
                    done * 100.0,
                    human_bytes(bytes),
                    human_bytes(total)
                )
            }
            _ => format!("{}: {}  {tail}", self.label, human_bytes(bytes)),
        }
    }

    /// Clears the progress line.
    pub(crate) fn finish(&mut self) {
        if self.terminal && self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Bytes in binary units, e.g. `3.2 MiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
