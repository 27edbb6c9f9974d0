//! `strata-admin upgrade`: converts a stopped node's data directory to the
//! disk layout this build reads.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use strata::store::{DiskConfig, Upgraded, upgrade_layout};

use crate::dump::Progress;

/// `strata-admin upgrade`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Rewrites the disk tier of a data directory written by an older strata into the layout this \
build reads. Layout 2 stores every key behind its cluster slot, so that a slot is one range \
on disk; a node refuses to start on a layout-1 directory and names this command.

Run it with the node stopped (a directory a running node holds is refused). The entries are \
copied into DIR/db.upgrade, then swapped in by renames: the old data stays in place until \
the copy is complete, and an interrupted run is finished by running the command again (the \
node refuses to start until then). It needs free disk space for a second copy of the disk \
tier. The write-ahead log is kept as it is. Running it on a current directory changes nothing.

A replica caught in the middle of a full sync cannot be converted: let the older version \
finish the sync, or empty the directory and let the node sync again.

Example: strata-admin upgrade --data-dir /var/lib/strata")]
pub struct Args {
    /// The stopped node's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

/// Runs `upgrade`.
///
/// # Errors
///
/// A missing or busy directory, an unconvertible one, RocksDB and file
/// system failures (the data is then still in the old layout).
pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = &args.data_dir;
    if !dir.is_dir() {
        bail!("data directory {} does not exist", dir.display());
    }
    if !["db", "db.v1"].iter().any(|d| dir.join(d).is_dir()) {
        bail!(
            "{} is not a strata data directory (it has no db/)",
            dir.display()
        );
    }
    let started = Instant::now();
    let mut progress = Progress::new("upgrade", None);
    let done = upgrade_layout(dir, &DiskConfig::default(), &mut |entries| {
        progress.update(entries, 0);
    })
    .with_context(|| format!("cannot upgrade {}", dir.display()))?;
    progress.finish();
    match done {
        Upgraded::AlreadyCurrent => {
            println!(
                "{} already has the current disk layout; nothing to do",
                dir.display()
            );
        }
        Upgraded::Converted { entries } => println!(
            "converted {entries} entries of {} to disk layout 2 in {:.1} s",
            dir.display(),
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}
