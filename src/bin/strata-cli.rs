//! `strata-cli`: a command-line client for a strata node, for people and
//! scripts. One command per invocation, or an interactive prompt when no
//! command is given. Built on [`strata::net::client`].

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::{Value as Json, json};
use strata::cluster::client::{ClusterClient, ClusterClientConfig, ClusterClientError};
use strata::cluster::{Ring, ShardId};
use strata::net::client::{
    AckPolicy, Client, ClientConfig, ClientError, ClusterMapReply, Condition, DeadlineState,
    DeleteOutcome, Deleted, Durability, Entry, Incremented, ScanPage, Seq, ServerTrust, SetOptions,
    SetOutcome, TtlState, Updated, WriteReply,
};
use strata::net::tls::parse_fingerprint;

/// Exit status of a command the server refused, a failed connection, or a
/// write whose condition did not hold.
const EXIT_FAILED: u8 = 1;
/// Exit status of a command line that is wrong.
const EXIT_USAGE: u8 = 2;

/// The node's default data directory, checked for its certificate when no
/// trust option is given.
const DEFAULT_DATA_DIR: &str = "strata-data";

const HISTORY_FILE: &str = ".strata_cli_history";

/// Talks to a strata node over QUIC (TLS 1.3).
///
/// Run one command, e.g. `strata-cli --pin <FINGERPRINT> set greeting hello`,
/// or run without a command for an interactive prompt (`strata> `) with line
/// editing and history (kept in ~/.strata_cli_history). At the prompt, type
/// the same commands, `help`, or `quit`.
///
/// The server's certificate is always verified. Give its SHA-256 fingerprint
/// with --pin (strata-server prints it when it starts), or a CA file with
/// --ca. Without either, strata-cli trusts the node's own self-signed
/// certificate as found in <DATA_DIR>/tls/server.crt, from --data-dir, or
/// from ./strata-data when that file exists (handy on the node's machine).
///
/// With --cluster, --addr names one or more nodes of a cluster (comma
/// separated): strata-cli fetches the cluster map from the first that
/// answers and sends each key to the primary of its shard, following
/// redirects; mget, exists and mset are split by shard (an mset is then
/// atomic per shard only; keys sharing a {tag} stay on one shard), scan
/// walks every shard. Node commands (info, digest, promote, ...) go to the
/// first --addr node. Cluster mode needs --ca: one CA that signed every
/// node's certificate (a --pin matches one node only). `cluster-map` prints
/// the map with each shard's share of the ring, with or without --cluster.
///
/// Exit status: 0 on success (a missing key is not an error: `get` prints
/// (nil)), 1 when the server or the connection fails or a conditional write
/// is refused (--nx, --xx, --if-version), 2 for a wrong command line.
#[derive(Debug, Parser)]
#[command(name = "strata-cli", version, about, long_about, verbatim_doc_comment)]
struct Args {
    /// Server address.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:7379",
        env = "STRATA_ADDR"
    )]
    addr: String,
    /// Trust the server certificates signed by this PEM CA file (the name
    /// checked is --server-name). A node's self-signed tls/server.crt works
    /// as its own CA.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "data_dir"])]
    ca: Option<PathBuf>,
    /// Trust the server whose certificate has this SHA-256 fingerprint (64
    /// hex digits, colons allowed), as printed by strata-server at start.
    #[arg(long, value_name = "SHA256", conflicts_with = "data_dir")]
    pin: Option<String>,
    /// Trust the self-signed certificate of the node whose data directory
    /// this is (<DIR>/tls/server.crt). Default when neither --ca nor --pin is
    /// given: ./strata-data, if that certificate exists there.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The name checked against the certificate with --ca or --data-dir.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    server_name: String,
    /// Token to authenticate with (sent in Hello; never printed). Prefer the
    /// STRATA_TOKEN environment variable: arguments are visible to other
    /// local users.
    #[arg(long, value_name = "T", env = "STRATA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print one JSON object per command instead of text.
    #[arg(long)]
    json: bool,
    /// Give up on a request (or a connection attempt) after this many ms.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    timeout_ms: u64,
    /// Cluster mode: route every key to its shard's primary by the cluster
    /// map (--addr: one or more nodes, comma separated; needs --ca).
    #[arg(long, requires = "ca")]
    cluster: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// One line typed at the prompt.
#[derive(Debug, Parser)]
#[command(
    name = "",
    no_binary_name = true,
    disable_version_flag = true,
    after_help = "Also: `help [COMMAND]`, and `quit` or `exit` to leave."
)]
struct Line {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that the server answers (prints PONG).
    Ping,
    /// Read a key: its value, version and TTL; (nil) if it is absent.
    Get {
        /// The key.
        key: String,
    },
    /// Read several keys at once; (nil) for each absent one.
    Mget {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Count how many of the keys exist (a key named twice counts twice).
    Exists {
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Show a key's remaining time to live.
    Ttl {
        /// The key.
        key: String,
    },
    /// Show when a key expires, as a Unix time in ms (exactly as the node
    /// stores it).
    Deadline {
        /// The key.
        key: String,
    },
    /// Write a key; prints its new version and the durability reached.
    Set(SetArgs),
    /// Write several keys atomically, all at one version.
    Mset {
        /// Pairs: KEY VALUE [KEY VALUE ...].
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
        /// Only if the key is at this version (compare-and-delete); exits 1
        /// if it is not.
        #[arg(long, value_name = "V")]
        if_version: Option<u64>,
    },
    /// Set the TTL of an existing key, in milliseconds.
    Expire {
        /// The key.
        key: String,
        /// Time to live in ms (at least 1).
        ms: u64,
    },
    /// Make an existing key expire at a Unix time in ms, as the node's
    /// clock reads it (one already past expires it now).
    ExpireAt {
        /// The key.
        key: String,
        /// Unix time in ms (at least 1).
        unix_ms: u64,
    },
    /// Remove the TTL of an existing key.
    Persist {
        /// The key.
        key: String,
    },
    /// Add DELTA (default 1, may be negative) to the decimal integer at KEY;
    /// a missing key counts as 0.
    Incr {
        /// The key.
        key: String,
        /// What to add.
        #[arg(allow_negative_numbers = true, default_value_t = 1)]
        delta: i64,
    },
    /// List keys starting with PREFIX (all keys without one), one page at a
    /// time; --all fetches every page.
    Scan {
        /// Key prefix.
        #[arg(default_value = "")]
        prefix: String,
        /// Entries per page (default: the server's choice).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue from this cursor (hex, printed after a partial page).
        #[arg(long, value_name = "HEX", conflicts_with = "all")]
        cursor: Option<String>,
        /// Follow the cursor until the scan is complete.
        #[arg(long)]
        all: bool,
    },
    /// Show the node's information (version, role, replication, counters).
    Info,
    /// Admin: promote this replica to primary with a new epoch. Other
    /// replicas then follow it with `replica-of`.
    Promote,
    /// Admin: make the node a replica of the primary at this replication
    /// address (its --repl-listen).
    ReplicaOf {
        /// The primary's replication address, HOST:PORT.
        primary: String,
    },
    /// Print a digest (seq, keys, sha256) of the node's live data; equal
    /// digests at equal seqs prove two nodes hold the same data.
    Digest {
        /// Leave out entries expiring at or before this Unix time in ms
        /// (give every node the same value); default: now.
        #[arg(long, value_name = "UNIX_MS", default_value_t = 0)]
        expired_before_ms: u64,
    },
    /// Admin: checkpoint now (flush the disk tier, drop covered WAL segments).
    Checkpoint,
    /// Print the cluster map: its version, each shard's primary, replicas,
    /// epoch and share of the ring's slots.
    ClusterMap,
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    /// The key.
    key: String,
    /// The value; `-` reads it from standard input. Alternatively --file.
    #[arg(required_unless_present = "file")]
    value: Option<String>,
    /// Read the value from this file.
    #[arg(long, value_name = "PATH", conflicts_with = "value")]
    file: Option<PathBuf>,
    /// Expire the key after this many ms.
    #[arg(long, value_name = "MS")]
    ttl_ms: Option<u64>,
    /// Expire the key at this Unix time in ms, as the node's clock reads it
    /// (one already past writes the key expired).
    #[arg(long, value_name = "UNIX_MS", conflicts_with = "ttl_ms")]
    expires_at_ms: Option<u64>,
    /// Only if the key is absent (create); exits 1 if it exists.
    #[arg(long, conflicts_with_all = ["xx", "if_version"])]
    nx: bool,
    /// Only if the key is present (replace); exits 1 if it is absent.
    #[arg(long, conflicts_with = "if_version")]
    xx: bool,
    /// Only if the key is at this version (compare-and-set); exits 1 if not.
    #[arg(long, value_name = "V")]
    if_version: Option<u64>,
    /// What to wait for before the reply: async, semi-sync:K[:TIMEOUT_MS[:fail]]
    /// (K replica acks), or sync[:TIMEOUT_MS] (every in-sync replica).
    /// Default: the server's policy.
    #[arg(long, value_name = "POLICY", value_parser = parse_ack)]
    ack: Option<AckPolicy>,
}

fn parse_ack(text: &str) -> Result<AckPolicy, String> {
    text.parse()
}

/// Why a command did not succeed.
enum Failure {
    /// The command line is wrong (exit 2).
    Usage(String),
    /// The server or the connection failed (exit 1).
    Client(ClientError),
    /// Cluster mode: the map or a node failed (exit 1).
    Cluster(ClusterClientError),
    /// The server answered, but the command did not do what was asked: a
    /// write whose condition failed (exit 1).
    Refused { message: String, json: Json },
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<ClusterClientError> for Failure {
    fn from(e: ClusterClientError) -> Self {
        match e {
            // The node's own error says it best.
            ClusterClientError::Node { source, .. } => Failure::Client(source),
            other => Failure::Cluster(other),
        }
    }
}

/// What a successful command prints.
struct Report {
    human: String,
    json: Json,
}

/// How the command's value reaches it in interactive mode: there, standard
/// input carries the commands themselves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    OneShot,
    Prompt,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let trust = match resolve_trust(&args) {
        Ok(trust) => trust,
        Err(message) => {
            eprintln!("strata-cli: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let settings = NodeSettings {
        trust,
        server_name: args.server_name.clone(),
        token: args.token.clone(),
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata-cli: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let client = match runtime.block_on(Target::connect(&args, settings)) {
        Ok(client) => client,
        Err(e) => {
            print_failure(&e, args.json);
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = match args.command {
        Some(command) => match runtime.block_on(execute(&client, command, Mode::OneShot)) {
            Ok(report) => {
                print_report(&report, args.json);
                ExitCode::SUCCESS
            }
            Err(failure) => {
                print_failure(&failure, args.json);
                ExitCode::from(exit_code(&failure))
            }
        },
        None => prompt(&runtime, &client, args.json),
    };
    runtime.block_on(client.close());
    code
}

/// How to reach any one node, from the command line.
struct NodeSettings {
    trust: ServerTrust,
    server_name: String,
    token: Option<String>,
    timeout: Duration,
}

impl NodeSettings {
    fn config(&self, addr: &str) -> ClientConfig {
        let mut config = ClientConfig::new(addr, self.trust.clone())
            .with_server_name(&self.server_name)
            .with_client_name("strata-cli")
            .with_connect_timeout(self.timeout)
            .with_request_timeout(self.timeout);
        if let Some(token) = &self.token {
            config = config.with_token(token);
        }
        config
    }
}

/// Where commands go: one node, or a cluster routed by its map.
enum Target {
    Node(Client),
    Cluster {
        cluster: ClusterClient,
        /// The first --addr node, for the commands about a node.
        seed: Client,
    },
}

impl Target {
    async fn connect(args: &Args, settings: NodeSettings) -> Result<Target, Failure> {
        if !args.cluster {
            return Ok(Target::Node(
                Client::connect(settings.config(&args.addr)).await?,
            ));
        }
        let seeds: Vec<String> = args
            .addr
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        let cluster_config = ClusterClientConfig::new(move |addr| settings.config(addr));
        let cluster = ClusterClient::connect(&seeds, cluster_config).await?;
        let first = seeds.first().map(String::as_str).unwrap_or_default();
        let seed = cluster.node_client(first).await?;
        Ok(Target::Cluster { cluster, seed })
    }

    /// The node the node-level commands go to.
    fn node(&self) -> &Client {
        match self {
            Target::Node(client) | Target::Cluster { seed: client, .. } => client,
        }
    }

    async fn close(&self) {
        match self {
            Target::Node(client) => client.close().await,
            Target::Cluster { cluster, .. } => cluster.close().await,
        }
    }

    async fn get(&self, key: Bytes) -> Result<Option<Entry>, Failure> {
        Ok(match self {
            Target::Node(c) => c.get(key).await?,
            Target::Cluster { cluster, .. } => cluster.get(key).await?,
        })
    }

    async fn get_many(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Entry>>, Failure> {
        Ok(match self {
            Target::Node(c) => c.get_many(keys).await?,
            Target::Cluster { cluster, .. } => cluster.get_many(keys).await?,
        })
    }

    async fn exists(&self, keys: Vec<Bytes>) -> Result<u64, Failure> {
        Ok(match self {
            Target::Node(c) => c.exists(keys).await?,
            Target::Cluster { cluster, .. } => cluster.exists(keys).await?,
        })
    }

    async fn ttl(&self, key: Bytes) -> Result<TtlState, Failure> {
        Ok(match self {
            Target::Node(c) => c.ttl(key).await?,
            Target::Cluster { cluster, .. } => cluster.ttl(key).await?,
        })
    }

    async fn set_with(
        &self,
        key: Bytes,
        value: Bytes,
        options: SetOptions,
    ) -> Result<SetOutcome, Failure> {
        Ok(match self {
            Target::Node(c) => c.set_with(key, value, options).await?,
            Target::Cluster { cluster, .. } => cluster.set_with(key, value, options).await?,
        })
    }

    /// One reply per shard written (always one for a single node).
    async fn set_many(&self, entries: Vec<(Bytes, Bytes)>) -> Result<Vec<WriteReply>, Failure> {
        Ok(match self {
            Target::Node(c) => vec![c.set_many(entries).await?],
            Target::Cluster { cluster, .. } => cluster.set_many(entries).await?,
        })
    }

    async fn delete(&self, key: Bytes) -> Result<Deleted, Failure> {
        Ok(match self {
            Target::Node(c) => c.delete(key).await?,
            Target::Cluster { cluster, .. } => cluster.delete(key).await?,
        })
    }

    async fn delete_if_version(&self, key: Bytes, version: Seq) -> Result<DeleteOutcome, Failure> {
        Ok(match self {
            Target::Node(c) => c.delete_if_version(key, version).await?,
            Target::Cluster { cluster, .. } => cluster.delete_if_version(key, version).await?,
        })
    }

    async fn expire(&self, key: Bytes, ttl: Duration) -> Result<Updated, Failure> {
        Ok(match self {
            Target::Node(c) => c.expire(key, ttl).await?,
            Target::Cluster { cluster, .. } => cluster.expire(key, ttl).await?,
        })
    }

    async fn expire_at(&self, key: Bytes, at_ms: u64) -> Result<Updated, Failure> {
        Ok(match self {
            Target::Node(c) => c.expire_at(key, at_ms).await?,
            Target::Cluster { cluster, .. } => cluster.expire_at(key, at_ms).await?,
        })
    }

    async fn deadline(&self, key: Bytes) -> Result<DeadlineState, Failure> {
        Ok(match self {
            Target::Node(c) => c.deadline(key).await?,
            Target::Cluster { cluster, .. } => cluster.deadline(key).await?,
        })
    }

    async fn persist(&self, key: Bytes) -> Result<Updated, Failure> {
        Ok(match self {
            Target::Node(c) => c.persist(key).await?,
            Target::Cluster { cluster, .. } => cluster.persist(key).await?,
        })
    }

    async fn incr_with(&self, key: Bytes, delta: i64) -> Result<Incremented, Failure> {
        Ok(match self {
            Target::Node(c) => c.incr_with(key, delta, None).await?,
            Target::Cluster { cluster, .. } => cluster.incr_with(key, delta, None).await?,
        })
    }

    async fn scan(
        &self,
        prefix: Bytes,
        cursor: Option<Bytes>,
        limit: u32,
    ) -> Result<ScanPage, Failure> {
        Ok(match self {
            Target::Node(c) => c.scan(prefix, cursor, limit).await?,
            Target::Cluster { cluster, .. } => {
                let page = cluster.scan(prefix, cursor, limit).await?;
                ScanPage {
                    entries: page.entries,
                    next_cursor: page.next_cursor,
                }
            }
        })
    }

    async fn cluster_map(&self) -> Result<ClusterMapReply, Failure> {
        Ok(match self {
            Target::Node(c) => c.cluster_map().await?,
            Target::Cluster { cluster, .. } => {
                cluster.refresh().await?;
                cluster.map()
            }
        })
    }
}

/// Which certificate to trust, following the order documented in --help.
fn resolve_trust(args: &Args) -> Result<ServerTrust, String> {
    if let Some(ca) = &args.ca {
        return Ok(ServerTrust::CaFile(ca.clone()));
    }
    if let Some(pin) = &args.pin {
        return parse_fingerprint(pin)
            .map(ServerTrust::Pin)
            .map_err(|e| format!("--pin: {e}"));
    }
    if let Some(dir) = &args.data_dir {
        let (cert, _) = strata::net::tls::default_paths(dir);
        if !cert.is_file() {
            return Err(format!(
                "--data-dir: no node certificate at {}; pass --pin <fingerprint> or --ca <file>",
                cert.display()
            ));
        }
        return Ok(ServerTrust::CaFile(cert));
    }
    let (cert, _) = strata::net::tls::default_paths(Path::new(DEFAULT_DATA_DIR));
    if cert.is_file() {
        return Ok(ServerTrust::CaFile(cert));
    }
    Err(
        "cannot verify the server: pass --pin <fingerprint> (strata-server prints it when it \
         starts) or --ca <file> (or --data-dir <node data dir> on the node's machine)"
            .into(),
    )
}

fn exit_code(failure: &Failure) -> u8 {
    match failure {
        Failure::Usage(_) => EXIT_USAGE,
        Failure::Client(_) | Failure::Cluster(_) | Failure::Refused { .. } => EXIT_FAILED,
    }
}

fn print_report(report: &Report, json: bool) {
    let mut out = std::io::stdout().lock();
    let text = if json {
        report.json.to_string()
    } else {
        report.human.clone()
    };
    // A closed stdout (e.g. piped into `head`) is not worth a panic.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn print_failure(failure: &Failure, json: bool) {
    let (message, object) = match failure {
        Failure::Usage(message) => (
            message.clone(),
            json!({"error": {"kind": "usage", "message": message}}),
        ),
        Failure::Client(e) => (e.to_string(), json!({"error": client_error_json(e)})),
        Failure::Cluster(e) => (
            e.to_string(),
            json!({"error": {"kind": "cluster", "message": e.to_string()}}),
        ),
        Failure::Refused {
            message,
            json: body,
        } => (message.clone(), body.clone()),
    };
    if json {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{object}");
        let _ = out.flush();
    }
    eprintln!("strata-cli: {message}");
}

fn client_error_json(e: &ClientError) -> Json {
    let kind = match e {
        ClientError::Server { .. } => "server",
        ClientError::Timeout { .. } => "timeout",
        ClientError::CircuitOpen { .. } => "circuit_open",
        ClientError::Connect { .. } => "connect",
        ClientError::Tls { .. } | ClientError::TlsConfig(_) => "tls",
        ClientError::ConnectionLost { .. } | ClientError::StreamReset { .. } => "connection_lost",
        ClientError::Protocol(_) => "protocol",
        ClientError::InvalidRequest(_) | ClientError::FrameTooLarge { .. } => "invalid_request",
        _ => "client",
    };
    let mut object = json!({"kind": kind, "message": e.to_string()});
    if let Some(code) = e.code() {
        object["code"] = json!(code.name());
    }
    if let ClientError::Server {
        leader_hint: Some(hint),
        ..
    } = e
    {
        object["leader_hint"] = json!(hint);
    }
    object
}

/// The interactive prompt: line editing and history on a terminal, plain
/// line-by-line reading otherwise (a script piped in). Errors are printed
/// and the prompt goes on.
fn prompt(runtime: &tokio::runtime::Runtime, client: &Target, json: bool) -> ExitCode {
    let run = |line: &str| run_line(runtime, client, json, line);
    if std::io::stdin().is_terminal() {
        prompt_terminal(client, run)
    } else {
        prompt_piped(run)
    }
}

/// Runs one prompt line; false once it asks to quit.
fn run_line(runtime: &tokio::runtime::Runtime, client: &Target, json: bool, line: &str) -> bool {
    match parse_line(line) {
        Parsed::Empty => true,
        Parsed::Quit => false,
        Parsed::Help(text) => {
            println!("{text}");
            true
        }
        Parsed::Error(message) => {
            eprintln!("{message}");
            true
        }
        Parsed::Command(command) => {
            match runtime.block_on(execute(client, *command, Mode::Prompt)) {
                Ok(report) => print_report(&report, json),
                Err(failure) => print_failure(&failure, json),
            }
            true
        }
    }
}

fn prompt_piped(run: impl Fn(&str) -> bool) -> ExitCode {
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(line) => {
                if !run(&line) {
                    break;
                }
            }
            Err(e) => {
                eprintln!("strata-cli: reading standard input: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    ExitCode::SUCCESS
}

fn prompt_terminal(client: &Target, run: impl Fn(&str) -> bool) -> ExitCode {
    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("strata-cli: cannot start the line editor: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(HISTORY_FILE));
    if let Some(path) = &history {
        // A first run has no history yet.
        let _ = editor.load_history(path);
    }
    println!(
        "connected to {} ({}); type `help` for commands, `quit` to leave",
        client.node().config().addr(),
        client.node().server_info().server
    );
    loop {
        match editor.readline("strata> ") {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if !run(&line) {
                    break;
                }
            }
            // Ctrl-C drops the line being typed, as in a shell.
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("strata-cli: {e}");
                break;
            }
        }
    }
    if let Some(path) = &history
        && let Err(e) = editor.save_history(path)
    {
        eprintln!("strata-cli: cannot save history to {}: {e}", path.display());
    }
    ExitCode::SUCCESS
}

enum Parsed {
    Empty,
    Quit,
    Help(String),
    Error(String),
    Command(Box<Command>),
}

/// Splits a prompt line (shell-style quotes) and parses it as a command.
fn parse_line(line: &str) -> Parsed {
    let Some(words) = shlex::split(line) else {
        return Parsed::Error("unbalanced quotes".into());
    };
    match words.first().map(String::as_str) {
        None => Parsed::Empty,
        Some("quit" | "exit") if words.len() == 1 => Parsed::Quit,
        Some("help") if words.len() == 1 => Parsed::Help(Line::command().render_help().to_string()),
        Some(_) => match Line::try_parse_from(&words) {
            Ok(line) => Parsed::Command(Box::new(line.command)),
            Err(e) => {
                let text = e.render().to_string();
                if e.use_stderr() {
                    Parsed::Error(text.trim_end().to_string())
                } else {
                    // `help get`, `get --help`.
                    Parsed::Help(text.trim_end().to_string())
                }
            }
        },
    }
}

fn b(s: String) -> Bytes {
    Bytes::from(s)
}

async fn execute(client: &Target, command: Command, mode: Mode) -> Result<Report, Failure> {
    match command {
        // Reads.
        Command::Ping => ping(client).await,
        Command::Get { key } => get(client, key).await,
        Command::Mget { keys } => mget(client, keys).await,
        Command::Exists { keys } => exists(client, keys).await,
        Command::Ttl { key } => ttl(client, key).await,
        Command::Deadline { key } => deadline(client, key).await,
        // Writes.
        Command::Set(args) => set(client, args, mode).await,
        Command::Mset { pairs } => mset(client, pairs).await,
        Command::Del { key, if_version } => del(client, key, if_version).await,
        Command::Expire { key, ms } => expire(client, key, ms).await,
        Command::ExpireAt { key, unix_ms } => expire_at(client, key, unix_ms).await,
        Command::Persist { key } => persist(client, key).await,
        Command::Incr { key, delta } => incr(client, key, delta).await,
        Command::Scan {
            prefix,
            limit,
            cursor,
            all,
        } => scan(client, prefix, limit.unwrap_or(0), cursor, all).await,
        // Node information, admin and replication.
        Command::Info => pairs_report(client.node().info().await?, "info"),
        Command::Promote => pairs_report(client.node().promote().await?, "promoted"),
        Command::ReplicaOf { primary } => {
            pairs_report(client.node().replica_of(&primary).await?, "replica_of")
        }
        Command::Digest { expired_before_ms } => {
            pairs_report(client.node().digest(expired_before_ms).await?, "digest")
        }
        Command::Checkpoint => pairs_report(client.node().checkpoint().await?, "checkpoint"),
        Command::ClusterMap => cluster_map(client).await,
    }
}

async fn ping(client: &Target) -> Result<Report, Failure> {
    client.node().ping().await?;
    Ok(Report {
        human: "PONG".into(),
        json: json!({"reply": "pong"}),
    })
}

async fn get(client: &Target, key: String) -> Result<Report, Failure> {
    let entry = client.get(b(key.clone())).await?;
    let human = match &entry {
        None => "(nil)".to_string(),
        Some(e) => format!("{}\n({})", show(&e.value), entry_meta(e)),
    };
    Ok(Report {
        human,
        json: entry_json(key.as_bytes(), entry.as_ref()),
    })
}

async fn mget(client: &Target, keys: Vec<String>) -> Result<Report, Failure> {
    let entries = client
        .get_many(keys.iter().cloned().map(b).collect())
        .await?;
    let mut human = Vec::new();
    let mut values = Vec::new();
    for (i, (key, entry)) in keys.iter().zip(&entries).enumerate() {
        human.push(match entry {
            None => format!("{}) (nil)", i + 1),
            Some(e) => format!("{}) {}  ({})", i + 1, show(&e.value), entry_meta(e)),
        });
        values.push(entry_json(key.as_bytes(), entry.as_ref()));
    }
    Ok(Report {
        human: human.join("\n"),
        json: json!({ "values": values }),
    })
}

async fn exists(client: &Target, keys: Vec<String>) -> Result<Report, Failure> {
    let count = client.exists(keys.into_iter().map(b).collect()).await?;
    Ok(Report {
        human: count.to_string(),
        json: json!({ "count": count }),
    })
}

async fn ttl(client: &Target, key: String) -> Result<Report, Failure> {
    let state = client.ttl(b(key)).await?;
    let (human, json) = match state {
        TtlState::Missing => ("(nil): no such key".to_string(), json!({"ttl": "missing"})),
        TtlState::Persistent => (
            "(no ttl): the key does not expire".to_string(),
            json!({"ttl": "persistent"}),
        ),
        TtlState::ExpiresIn(ms) => (format!("{ms} ms"), json!({"ttl": "expires", "ttl_ms": ms})),
    };
    Ok(Report { human, json })
}

async fn deadline(client: &Target, key: String) -> Result<Report, Failure> {
    let (human, json) = match client.deadline(b(key)).await? {
        DeadlineState::Missing => ("(nil): no such key".to_string(), json!({"ttl": "missing"})),
        DeadlineState::Persistent => (
            "(no ttl): the key does not expire".to_string(),
            json!({"ttl": "persistent"}),
        ),
        DeadlineState::ExpiresAt(at) => (
            format!("expires at {at} (Unix ms)"),
            json!({"ttl": "expires", "expires_at_ms": at}),
        ),
    };
    Ok(Report { human, json })
}

async fn mset(client: &Target, pairs: Vec<String>) -> Result<Report, Failure> {
    if !pairs.len().is_multiple_of(2) {
        return Err(Failure::Usage(
            "mset needs KEY VALUE pairs: the last key has no value".into(),
        ));
    }
    let count = pairs.len() / 2;
    let mut it = pairs.into_iter();
    let mut entries = Vec::with_capacity(count);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        entries.push((b(k), b(v)));
    }
    let replies = client.set_many(entries).await?;
    match replies.as_slice() {
        [reply] => Ok(Report {
            human: format!(
                "OK {count} keys at version {} ({})",
                reply.version,
                durability_text(&reply.durability)
            ),
            json: json!({
                "written": true,
                "keys": count,
                "version": reply.version.0,
                "durability": durability_json(&reply.durability),
            }),
        }),
        // Cluster mode, keys of several shards: one atomic write per shard.
        parts => Ok(Report {
            human: format!(
                "OK {count} keys on {} shards (atomic per shard), at versions {}",
                parts.len(),
                parts
                    .iter()
                    .map(|r| r.version.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            json: json!({
                "written": true,
                "keys": count,
                "parts": parts
                    .iter()
                    .map(|r| json!({
                        "version": r.version.0,
                        "durability": durability_json(&r.durability),
                    }))
                    .collect::<Vec<_>>(),
            }),
        }),
    }
}

async fn del(client: &Target, key: String, if_version: Option<u64>) -> Result<Report, Failure> {
    let deleted = match if_version {
        None => client.delete(b(key)).await?,
        Some(v) => match client.delete_if_version(b(key), Seq(v)).await? {
            DeleteOutcome::Deleted(deleted) => deleted,
            DeleteOutcome::NotWritten { current_version } => {
                let message = match current_version {
                    Some(now) => format!(
                        "not deleted: version conflict, the key is at version {now}, not {v}"
                    ),
                    None => "not deleted: the key does not exist".to_string(),
                };
                return Err(Failure::Refused {
                    message,
                    json: json!({
                        "deleted": false,
                        "current_version": current_version.map(|s| s.0),
                    }),
                });
            }
        },
    };
    let human = match (deleted.existed, &deleted.durability) {
        (false, _) => "(not found)".to_string(),
        (true, Some(d)) => format!("deleted ({})", durability_text(d)),
        (true, None) => "deleted".to_string(),
    };
    Ok(Report {
        human,
        json: json!({
            "deleted": deleted.existed,
            "durability": deleted.durability.as_ref().map(durability_json),
        }),
    })
}

async fn expire(client: &Target, key: String, ms: u64) -> Result<Report, Failure> {
    if ms == 0 {
        return Err(Failure::Usage(
            "expire needs a TTL of at least 1 ms (use `del` to remove a key)".into(),
        ));
    }
    let updated = client.expire(b(key), Duration::from_millis(ms)).await?;
    Ok(updated_report(
        updated.existed,
        updated.durability,
        "ttl set",
    ))
}

async fn expire_at(client: &Target, key: String, unix_ms: u64) -> Result<Report, Failure> {
    if unix_ms == 0 {
        return Err(Failure::Usage(
            "expire-at needs a time of at least 1 (Unix ms; 0 would mean never)".into(),
        ));
    }
    let updated = client.expire_at(b(key), unix_ms).await?;
    Ok(updated_report(
        updated.existed,
        updated.durability,
        "deadline set",
    ))
}

async fn persist(client: &Target, key: String) -> Result<Report, Failure> {
    let updated = client.persist(b(key)).await?;
    Ok(updated_report(
        updated.existed,
        updated.durability,
        "ttl removed",
    ))
}

async fn incr(client: &Target, key: String, delta: i64) -> Result<Report, Failure> {
    let done = client.incr_with(b(key), delta).await?;
    Ok(Report {
        human: format!("{} ({})", done.value, durability_text(&done.durability)),
        json: json!({
            "value": done.value,
            "durability": durability_json(&done.durability),
        }),
    })
}

/// Prints `(name, value)` pairs aligned, or as one JSON object under `key`.
fn pairs_report(pairs: Vec<(String, String)>, key: &str) -> Result<Report, Failure> {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let human = pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n");
    let object: serde_json::Map<String, Json> = pairs
        .into_iter()
        .map(|(k, v)| (k, Json::String(v)))
        .collect();
    Ok(Report {
        human,
        json: json!({ key: object }),
    })
}

async fn set(client: &Target, args: SetArgs, mode: Mode) -> Result<Report, Failure> {
    let value = set_value(&args, mode)?;
    if args.ttl_ms == Some(0) {
        return Err(Failure::Usage("--ttl-ms must be at least 1".into()));
    }
    if args.expires_at_ms == Some(0) {
        return Err(Failure::Usage(
            "--expires-at-ms must be at least 1 (Unix ms; 0 would mean never)".into(),
        ));
    }
    let condition = if args.nx {
        Condition::IfAbsent
    } else if args.xx {
        Condition::IfPresent
    } else if let Some(v) = args.if_version {
        Condition::IfVersion(Seq(v))
    } else {
        Condition::Always
    };
    let mut options = SetOptions::new().with_condition(condition);
    if let Some(ms) = args.ttl_ms {
        options = options.with_ttl(Duration::from_millis(ms));
    }
    if let Some(at) = args.expires_at_ms {
        options = options.expiring_at(at);
    }
    if let Some(ack) = args.ack {
        options = options.with_ack(ack);
    }
    match client.set_with(b(args.key), value, options).await? {
        SetOutcome::Written(reply) => Ok(Report {
            human: format!(
                "OK version {} ({})",
                reply.version,
                durability_text(&reply.durability)
            ),
            json: json!({
                "written": true,
                "version": reply.version.0,
                "durability": durability_json(&reply.durability),
            }),
        }),
        SetOutcome::NotWritten { current_version } => Err(set_refused(condition, current_version)),
    }
}

/// The value to write: the argument, --file, or standard input for `-`.
fn set_value(args: &SetArgs, mode: Mode) -> Result<Bytes, Failure> {
    Ok(match (&args.value, &args.file) {
        (_, Some(path)) => std::fs::read(path)
            .map_err(|e| Failure::Usage(format!("--file {}: {e}", path.display())))?
            .into(),
        (Some(v), None) if v == "-" => {
            if mode == Mode::Prompt {
                return Err(Failure::Usage(
                    "at the prompt, standard input carries the commands: use --file PATH for \
                     the value"
                        .into(),
                ));
            }
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Usage(format!("reading the value from stdin: {e}")))?;
            buf.into()
        }
        (Some(v), None) => Bytes::from(v.clone()),
        (None, None) => return Err(Failure::Usage("set needs a VALUE or --file PATH".into())),
    })
}

/// A conditional set that did not write, told in its condition's terms.
fn set_refused(condition: Condition, current_version: Option<Seq>) -> Failure {
    let message = match (condition, current_version) {
        (Condition::IfAbsent, Some(now)) => {
            format!("not written (--nx): the key exists, at version {now}")
        }
        (Condition::IfPresent, _) => "not written (--xx): the key does not exist".into(),
        (Condition::IfVersion(want), Some(now)) => format!(
            "not written: version conflict (compare-and-set), the key is at version \
             {now}, not {want}"
        ),
        (Condition::IfVersion(_), None) => {
            "not written: version conflict (compare-and-set), the key does not exist".into()
        }
        (_, now) => format!("not written: the condition did not hold (version {now:?})"),
    };
    Failure::Refused {
        message,
        json: json!({
            "written": false,
            "current_version": current_version.map(|s| s.0),
        }),
    }
}

async fn scan(
    client: &Target,
    prefix: String,
    limit: u32,
    cursor: Option<String>,
    all: bool,
) -> Result<Report, Failure> {
    let mut cursor = match cursor {
        None => None,
        Some(hex_text) => {
            Some(Bytes::from(hex::decode(&hex_text).map_err(|_| {
                Failure::Usage(format!("--cursor {hex_text:?} is not hex"))
            })?))
        }
    };
    let prefix = b(prefix);
    let mut entries = Vec::new();
    let next = loop {
        let page = client.scan(prefix.clone(), cursor.take(), limit).await?;
        entries.extend(page.entries);
        match page.next_cursor {
            Some(next) if all => cursor = Some(next),
            other => break other,
        }
    };
    let mut lines: Vec<String> = entries
        .iter()
        .map(|(k, e)| format!("{} = {}  ({})", show(k), show(&e.value), entry_meta(e)))
        .collect();
    let count = entries.len();
    let plural = if count == 1 { "" } else { "s" };
    lines.push(match &next {
        None => format!("({count} key{plural})"),
        Some(c) => format!(
            "({count} key{plural} in this page; more with --cursor {}, or use --all)",
            hex::encode(c)
        ),
    });
    let items: Vec<Json> = entries
        .iter()
        .map(|(k, e)| entry_json(k, Some(e)))
        .collect();
    Ok(Report {
        human: lines.join("\n"),
        json: json!({
            "entries": items,
            "next_cursor": next.as_ref().map(hex::encode),
        }),
    })
}

async fn cluster_map(client: &Target) -> Result<Report, Failure> {
    let map = client.cluster_map().await?;
    let ids: Vec<ShardId> = map.shards.iter().map(|s| ShardId(s.id)).collect();
    // An empty or malformed map has no ring; it is still worth printing.
    let shares = Ring::new(&ids, map.vnodes)
        .map(|ring| ring.slot_table().shares())
        .unwrap_or_default();
    let total = f64::from(strata::cluster::SLOTS as u32);
    let node = |id: u64| map.nodes.iter().find(|n| n.id == id);
    let name = |id: u64| match node(id) {
        Some(n) => format!("{} ({})", n.name, n.client_addr),
        None => format!("node {id} (not in the map)"),
    };
    let mut lines = vec![format!(
        "cluster map version {}, {} vnodes per shard, {} nodes, {} shards",
        map.version,
        map.vnodes,
        map.nodes.len(),
        map.shards.len()
    )];
    let mut shards = Vec::new();
    for shard in &map.shards {
        let slots = shares.get(&ShardId(shard.id)).copied().unwrap_or(0);
        let percent = 100.0 * f64::from(slots) / total;
        lines.push(format!(
            "shard {}: epoch {}, {slots} slots ({percent:.1}%), primary {}",
            shard.id,
            shard.epoch,
            name(shard.primary)
        ));
        for r in &shard.replicas {
            lines.push(format!("  replica {}", name(*r)));
        }
        shards.push(json!({
            "id": shard.id,
            "epoch": shard.epoch,
            "slots": slots,
            "primary": node(shard.primary).map(|n| n.name.clone()),
            "primary_addr": node(shard.primary).map(|n| n.client_addr.clone()),
            "replicas": shard
                .replicas
                .iter()
                .map(|r| node(*r).map(|n| n.name.clone()))
                .collect::<Vec<_>>(),
        }));
    }
    let nodes: Vec<Json> = map
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "name": n.name,
                "client_addr": n.client_addr,
                "link_addr": n.link_addr,
                "shard": n.shard,
            })
        })
        .collect();
    Ok(Report {
        human: lines.join("\n"),
        json: json!({
            "cluster_map": {
                "version": map.version,
                "vnodes": map.vnodes,
                "shards": shards,
                "nodes": nodes,
            }
        }),
    })
}

fn updated_report(existed: bool, durability: Option<Durability>, what: &str) -> Report {
    let human = match (existed, &durability) {
        (false, _) => "(not found)".to_string(),
        (true, Some(d)) => format!("OK {what} ({})", durability_text(d)),
        (true, None) => "OK (nothing to change)".to_string(),
    };
    Report {
        human,
        json: json!({
            "existed": existed,
            "updated": durability.is_some(),
            "durability": durability.as_ref().map(durability_json),
        }),
    }
}

/// Bytes for a person: the text itself when it is printable UTF-8,
/// otherwise a quoted, escaped form (`"\x00\xff"`).
fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => s.to_string(),
        _ => {
            let escaped: String = bytes
                .iter()
                .flat_map(|&c| std::ascii::escape_default(c))
                .map(char::from)
                .collect();
            format!("\"{escaped}\"")
        }
    }
}

/// Bytes for JSON: a string and its encoding (`utf8`, or `hex` when the
/// bytes are not UTF-8).
fn bytes_json(bytes: &[u8]) -> (Json, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (json!(s), "utf8"),
        Err(_) => (json!(hex::encode(bytes)), "hex"),
    }
}

fn entry_json(key: &[u8], entry: Option<&Entry>) -> Json {
    let (key, key_encoding) = bytes_json(key);
    match entry {
        None => json!({"key": key, "key_encoding": key_encoding, "value": null}),
        Some(e) => {
            let (value, encoding) = bytes_json(&e.value);
            json!({
                "key": key,
                "key_encoding": key_encoding,
                "value": value,
                "encoding": encoding,
                "version": e.version.0,
                "ttl_ms": e.ttl_ms,
            })
        }
    }
}

fn entry_meta(e: &Entry) -> String {
    match e.ttl_ms {
        None => format!("version {}, no ttl", e.version),
        Some(ms) => format!("version {}, expires in {ms} ms", e.version),
    }
}

fn ack_text(ack: &AckPolicy) -> String {
    ack.to_string()
}

fn durability_text(d: &Durability) -> String {
    let synced = if d.local_synced {
        "fsynced"
    } else {
        "not fsynced yet"
    };
    let acks = match d.replicas_acked {
        1 => "1 replica ack".to_string(),
        n => format!("{n} replica acks"),
    };
    let degraded = if d.degraded {
        "; DEGRADED: fewer replica acks than asked"
    } else {
        ""
    };
    format!("{synced}, {acks}, ack {}{degraded}", ack_text(&d.requested))
}

fn durability_json(d: &Durability) -> Json {
    json!({
        "local_synced": d.local_synced,
        "replicas_acked": d.replicas_acked,
        "ack": ack_text(&d.requested),
        "degraded": d.degraded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata::net::client::OnTimeout;
    use strata::types::DEFAULT_ACK_TIMEOUT_MS;

    #[test]
    fn ack_policies_parse() {
        assert_eq!(parse_ack("async"), Ok(AckPolicy::Async));
        assert_eq!(
            parse_ack("sync"),
            Ok(AckPolicy::Sync {
                timeout_ms: DEFAULT_ACK_TIMEOUT_MS
            })
        );
        assert_eq!(
            parse_ack("sync:250"),
            Ok(AckPolicy::Sync { timeout_ms: 250 })
        );
        assert_eq!(
            parse_ack("semi-sync:2"),
            Ok(AckPolicy::SemiSync {
                replicas: 2,
                timeout_ms: DEFAULT_ACK_TIMEOUT_MS,
                on_timeout: OnTimeout::Degrade
            })
        );
        assert_eq!(
            parse_ack("semi-sync:1:500:fail"),
            Ok(AckPolicy::SemiSync {
                replicas: 1,
                timeout_ms: 500,
                on_timeout: OnTimeout::Fail
            })
        );
        for bad in [
            "",
            "semi-sync",
            "semi-sync:x",
            "sync:1:2",
            "eventually",
            "semi-sync:1:2:maybe",
        ] {
            assert!(parse_ack(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bytes_are_shown_as_text_or_escaped() {
        assert_eq!(show(b"hello world"), "hello world");
        assert_eq!(show("héllo".as_bytes()), "héllo");
        assert_eq!(show(b"\x00\xffab"), "\"\\x00\\xffab\"");
        assert_eq!(bytes_json(b"\x00\xff").0, json!("00ff"));
    }

    #[test]
    fn prompt_lines_split_on_quotes() {
        match parse_line(r#"set "my key" 'two words'"#) {
            Parsed::Command(c) => match *c {
                Command::Set(args) => {
                    assert_eq!(args.key, "my key");
                    assert_eq!(args.value.as_deref(), Some("two words"));
                }
                other => panic!("{other:?}"),
            },
            _ => panic!("not a command"),
        }
        assert!(matches!(parse_line("   "), Parsed::Empty));
        assert!(matches!(parse_line("quit"), Parsed::Quit));
        assert!(matches!(parse_line("exit"), Parsed::Quit));
        assert!(matches!(parse_line("help"), Parsed::Help(_)));
        assert!(matches!(parse_line("help get"), Parsed::Help(_)));
        assert!(matches!(parse_line("set \"open"), Parsed::Error(_)));
        assert!(matches!(parse_line("frobnicate"), Parsed::Error(_)));
        assert!(matches!(
            parse_line("incr counter -3"),
            Parsed::Command(c) if matches!(*c, Command::Incr { delta: -3, .. })
        ));
    }

    #[test]
    fn cli_definition_is_consistent() {
        Args::command().debug_assert();
        Line::command().debug_assert();
    }
}
