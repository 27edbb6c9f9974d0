//! `strata-admin`: offline operator tools for strata nodes and clusters.
//!
//! One module per subcommand, each with its own `Args` and `run`; `main`
//! only parses the command line and dispatches.
//!
//! - `gen-certs` ([`gen_certs`]): the cluster CA and node certificates for
//!   node-to-node mutual TLS.
//! - `dump` ([`dump`]), `restore` ([`restore`]): a stopped node's data to
//!   and from a portable dump file (`proto-docs/dump-format.md`).
//! - `verify` ([`verify`]): a read-only check of a data directory or a dump.
//! - `wal-inspect` ([`wal_inspect`]): prints a data directory's WAL records.
//! - `upgrade` ([`upgrade`]): converts a data directory to this build's
//!   disk layout.
//! - `cluster` ([`cluster`]): forms a cluster of running nodes and changes
//!   its map (online, through the nodes).

mod cluster;
mod dump;
mod gen_certs;
mod restore;
mod upgrade;
mod verify;
mod wal_inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "strata-admin",
    version,
    about = "Operator tools for strata nodes and clusters (most work offline, on a stopped node's data directory)",
    after_help = "Exit status: 0 on success, 1 when the command fails, 2 on a usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the cluster CA and node certificates for node-to-node
    /// (replication) mutual TLS.
    GenCerts(gen_certs::Args),
    /// Write every live entry to a dump file: from a stopped node's data directory, or online from a running node (--addr).
    Dump(dump::Args),
    /// Load a dump file into a data directory.
    Restore(restore::Args),
    /// Check a data directory (WAL and disk tier) or a dump file, read-only.
    Verify(verify::Args),
    /// Print the records of a data directory's write-ahead log, read-only.
    WalInspect(wal_inspect::Args),
    /// Convert a stopped node's data directory to this build's disk layout.
    Upgrade(upgrade::Args),
    /// Form a cluster of running nodes, show it, add or remove nodes (online).
    Cluster(cluster::Args),
}

fn main() -> ExitCode {
    // Usage errors and --help are clap's: exit status 2 and 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::GenCerts(args) => gen_certs::run(args),
        Command::Dump(args) => dump::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Verify(args) => verify::run(args),
        Command::WalInspect(args) => wal_inspect::run(args),
        Command::Upgrade(args) => upgrade::run(args),
        Command::Cluster(args) => cluster::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
