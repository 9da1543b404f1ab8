//! `ossc`: the command-line tool. Thin: each subcommand parses its flags and
//! calls into the library (`ossc_peer::*`, `ossc_core::*`). Exit codes follow
//! `ossc_peer::cli::exit_code` (listed in `ossc --help`).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use ossc_peer::cli::exit_code::ExitCode;

#[derive(Parser)]
#[command(
    name = "ossc",
    version,
    about = "Fast, transparent model loading from OSS / S3",
    after_help = ossc_peer::cli::exit_code::TABLE
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List objects under an oss:// or s3:// path (credentials and endpoint from OSS_* env).
    Ls {
        path: String,
        /// Print one JSON document (objects with key, size, etag, last_modified; count; bytes).
        #[arg(long)]
        json: bool,
    },
    /// Download every object under a path into a local directory, in parallel.
    Cp {
        path: String,
        dest: PathBuf,
        /// No progress bar (the summary is still printed).
        #[arg(long)]
        quiet: bool,
        /// Print the summary as one JSON document (files, bytes, seconds, gb_per_s, retries,
        /// bytes_by_source).
        #[arg(long)]
        json: bool,
    },
    /// Serve a local directory (one bucket per subdirectory) as an S3/OSS-compatible store.
    ServeStore {
        #[arg(long)]
        root: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
        /// Require signed requests with this key id (with --access-key-secret).
        #[arg(long, env = "OSSC_STORE_ACCESS_KEY_ID")]
        access_key_id: Option<String>,
        #[arg(long, env = "OSSC_STORE_ACCESS_KEY_SECRET")]
        access_key_secret: Option<String>,
        #[arg(long, default_value = "cn-demo")]
        region: String,
        /// Fault injection, as the JSON of FaultConfig (also settable at runtime: PUT /_ossc/faults).
        #[arg(long)]
        faults: Option<String>,
        /// Out-of-bounds ranges: `oss` (whole object, OSS's default) or `s3` (clamped 206, for S3 clients such as s5cmd).
        #[arg(long, default_value = "oss")]
        range_behavior: String,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Generate a synthetic sharded safetensors model (for tests and benchmarks).
    GenModel {
        dir: PathBuf,
        #[arg(long, default_value_t = 512)]
        size_mb: u64,
        #[arg(long, default_value_t = 4)]
        shards: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write the manifest (sizes and SHA-256 of files and tensors).
        #[arg(long)]
        manifest: PathBuf,
    },
    /// Read a model directory like safetensors does (open, mmap, touch) and verify it.
    LoadModel {
        dir: PathBuf,
        /// Verify against this manifest (from gen-model).
        #[arg(long, required_unless_present = "no_manifest")]
        manifest: Option<PathBuf>,
        /// Only load (open, mmap, touch every page); nothing to verify against.
        #[arg(long)]
        no_manifest: bool,
        /// Print the report as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// The quick-start demo: generated model, embedded store, load through the preload library.
    Demo(ossc_peer::cli::demo::DemoArgs),
    /// Run the node agent (normally started by libossc_preload.so).
    Agent(ossc_peer::cli::agent_cli::AgentArgs),
    /// Run the node agent as a standalone node daemon: prefetch OSS_PATH, serve peers, never
    /// exit for lack of clients; applications attach with ENABLE_CONNECTOR=2.
    Peer(ossc_peer::cli::peer_daemon::PeerArgs),
    /// Cluster secrets: `ossc secret generate` prints a new random one.
    Secret(ossc_peer::cli::secret_cli::SecretArgs),
    /// Show the node agent's state.
    Status {
        /// The agent's socket (default: CONNECTOR_UDS_PATH or /tmp/oss-connector/connector.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Make a running agent or `ossc peer` daemon fetch every large file under PATH into memory
    /// (preheat a node before a rollout). PATH: relative to MODEL_DIR, absolute inside it, or an
    /// oss:// URL under OSS_PATH; "" is the whole model.
    Prefetch {
        path: String,
        /// Wait until every file is in memory (or failed) and print a summary.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (the agent goes on fetching).
        #[arg(long, default_value_t = 3600)]
        timeout_sec: u64,
        /// The agent's socket (default: CONNECTOR_UDS_PATH or /tmp/oss-connector/connector.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the agent's report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Drop the cached memory of every large file under PATH that no process uses (files in use
    /// are skipped and listed). PATH as for `prefetch`.
    Evict {
        path: String,
        /// The agent's socket (default: CONNECTOR_UDS_PATH or /tmp/oss-connector/connector.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the agent's report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (e.g. `ossc completions bash > /etc/bash_completion.d/ossc`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("ossc: error: {e:#}");
        std::process::exit(ExitCode::of(&e).code());
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::GenModel {
            dir,
            size_mb,
            shards,
            seed,
            manifest,
        } => ossc_peer::cli::model_files::gen_model(&dir, size_mb, shards, seed, &manifest),
        Command::LoadModel {
            dir,
            manifest,
            no_manifest: _,
            json,
        } => ossc_peer::cli::model_files::load_model(&dir, manifest, json),
        Command::ServeStore {
            root,
            addr,
            access_key_id,
            access_key_secret,
            region,
            faults,
            range_behavior,
            tls_cert,
            tls_key,
        } => {
            ossc_peer::cli::cli_support::init_logging_stderr();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(ossc_peer::cli::cli_support::serve_store(
                root,
                addr,
                access_key_id,
                access_key_secret,
                region,
                faults,
                &range_behavior,
                tls_cert.zip(tls_key),
            ))
        }
        Command::Ls { path, json } => {
            ossc_peer::cli::cli_support::init_logging_stderr();
            tokio::runtime::Runtime::new()?.block_on(ossc_peer::cli::cli_support::ls(&path, json))
        }
        Command::Cp {
            path,
            dest,
            quiet,
            json,
        } => {
            ossc_peer::cli::cli_support::init_logging_stderr();
            tokio::runtime::Runtime::new()?
                .block_on(ossc_peer::cli::cli_support::cp(&path, &dest, !quiet, json))
        }
        Command::Demo(args) => ossc_peer::cli::demo::run(args),
        Command::Agent(args) => ossc_peer::cli::agent_cli::run(args),
        Command::Peer(args) => ossc_peer::cli::peer_daemon::run(args),
        Command::Secret(args) => ossc_peer::cli::secret_cli::run(args),
        Command::Status { socket, json } => ossc_peer::cli::agent_requests::status(socket, json),
        Command::Prefetch {
            path,
            wait,
            timeout_sec,
            socket,
            json,
        } => ossc_peer::cli::agent_requests::prefetch(
            &path,
            wait,
            Duration::from_secs(timeout_sec.max(1)),
            socket,
            json,
        ),
        Command::Evict { path, socket, json } => {
            ossc_peer::cli::agent_requests::evict(&path, socket, json)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ossc", &mut std::io::stdout());
            Ok(())
        }
    }
}
