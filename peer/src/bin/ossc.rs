//! `ossc`: the command-line tool. Thin: each subcommand parses its flags and
//! calls into the library (`ossc_peer::*`, `ossc_core::*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ossc",
    version,
    about = "Fast, transparent model loading from OSS / S3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List objects under an oss:// or s3:// path (credentials and endpoint from OSS_* env).
    Ls { path: String },
    /// Download every object under a path into a local directory, in parallel.
    Cp {
        path: String,
        dest: PathBuf,
        /// No progress bar (the summary is still printed).
        #[arg(long)]
        quiet: bool,
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
    Demo(ossc_peer::demo::DemoArgs),
    /// Run the node agent (normally started by libossc_preload.so).
    Agent(ossc_peer::agent_cli::AgentArgs),
    /// Run the node agent as a standalone node daemon: prefetch OSS_PATH, serve peers, never
    /// exit for lack of clients; applications attach with ENABLE_CONNECTOR=2.
    Peer(ossc_peer::peer_daemon::PeerArgs),
    /// Cluster secrets: `ossc secret generate` prints a new random one.
    Secret(ossc_peer::secret_cli::SecretArgs),
    /// Show the node agent's state.
    Status {
        /// The agent's socket (default: CONNECTOR_UDS_PATH or /tmp/oss-connector/connector.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("ossc: error: {e:#}");
        std::process::exit(1);
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
        } => {
            let spec = ossc_peer::synthetic_model::ModelSpec {
                total_bytes: size_mb << 20,
                shards,
                seed,
            };
            let m = ossc_peer::synthetic_model::generate(&dir, &spec)?;
            ossc_peer::synthetic_model::write_manifest(&manifest, &m)?;
            let bytes: u64 = m.files.values().map(|f| f.size).sum();
            println!(
                "generated {} files, {} tensors, {} bytes in {}",
                m.files.len(),
                m.tensors.len(),
                bytes,
                dir.display()
            );
            Ok(())
        }
        Command::LoadModel {
            dir,
            manifest,
            no_manifest: _,
            json,
        } => {
            let r = match manifest {
                Some(manifest) => {
                    let m = ossc_peer::synthetic_model::read_manifest(&manifest)?;
                    ossc_peer::model_reader::load_and_verify(&dir, &m)?
                }
                None => ossc_peer::model_reader::load_only(&dir)?,
            };
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "loaded {} files, {} bytes in {:.2} s ({:.2} GB/s); verified {} tensors in {:.2} s: all bytes exact",
                    r.files, r.bytes, r.load_seconds, r.load_gbps(), r.tensors_verified, r.verify_seconds
                );
            }
            Ok(())
        }
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
            ossc_peer::cli_support::init_logging_stderr();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(ossc_peer::cli_support::serve_store(
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
        Command::Ls { path } => {
            ossc_peer::cli_support::init_logging_stderr();
            tokio::runtime::Runtime::new()?.block_on(ossc_peer::cli_support::ls(&path))
        }
        Command::Cp { path, dest, quiet } => {
            ossc_peer::cli_support::init_logging_stderr();
            tokio::runtime::Runtime::new()?
                .block_on(ossc_peer::cli_support::cp(&path, &dest, !quiet))
        }
        Command::Demo(args) => ossc_peer::demo::run(args),
        Command::Agent(args) => ossc_peer::agent_cli::run(args),
        Command::Peer(args) => ossc_peer::peer_daemon::run(args),
        Command::Secret(args) => ossc_peer::secret_cli::run(args),
        Command::Status { socket, json } => {
            let socket = socket.unwrap_or_else(ossc_peer::cli_support::default_socket);
            let status = ossc_peer::cli_support::query_status(&socket)
                .with_context(|| format!("asking the agent at {}", socket.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", ossc_peer::cli_support::render_status(&status));
            }
            Ok(())
        }
    }
}
