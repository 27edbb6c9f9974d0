//! `strata-admin`: offline operator tools for strata nodes and clusters.
//!
//! One module per subcommand, each with its own `Args` and `run`; `main`
//! only parses the command line and dispatches.
//!
//! - `gen-certs` ([`gen_certs`]): the cluster CA and node certificates for
//!   node-to-node mutual TLS.

mod gen_certs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "strata-admin",
    version,
    about = "Offline operator tools for strata nodes and clusters",
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
}

fn main() -> ExitCode {
    // Usage errors and --help are clap's: exit status 2 and 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::GenCerts(args) => gen_certs::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}
