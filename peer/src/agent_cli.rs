//! `ossc agent`: builds the node agent from the vendor's config file and
//! `OSS_*` environment, sets up its log file, and runs it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::agent::{run_agent, AgentOptions};
use crate::cli_support;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Long-lived node daemon: never exit for lack of clients.
    #[arg(long)]
    pub daemon: bool,
    /// The agent's socket (default: CONNECTOR_UDS_PATH or /tmp/oss-connector/connector.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Overrides OSS_PATH.
    #[arg(long)]
    pub oss_path: Option<String>,
    /// Overrides MODEL_DIR.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Log to stderr instead of logPath.
    #[arg(long)]
    pub log_stderr: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics and health at /healthz (off by default).
    /// A bare PORT binds 127.0.0.1; other interfaces must be explicit (0.0.0.0:9469).
    #[arg(long, env = "OSS_CONNECTOR_METRICS_LISTEN", value_parser = crate::prometheus::parse_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

pub fn run(args: AgentArgs) -> Result<()> {
    // Config errors must be visible even before logPath is known.
    let config = match cli_support::load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ossc agent: {e:#}");
            return Err(e);
        }
    };
    init_logging(&config.log_path, config.log_level, args.log_stderr);
    let result = build_and_run(args, config);
    if let Err(e) = &result {
        tracing::error!("agent stopped: {e:#}");
    }
    result
}

fn build_and_run(args: AgentArgs, config: ossc_core::config::ConnectorConfig) -> Result<()> {
    let settings = cli_support::store_settings(&config, args.oss_path.as_deref())?;
    // Peer layer (OSS_CONNECTOR_PEERS …): a configuration error stops the
    // agent here, before any socket exists, with the reason in the log.
    let swarm = crate::swarm::SwarmConfig::resolve(&|k| std::env::var(k).ok(), &config.peer)?;
    let model_dir = args
        .model_dir
        .or_else(|| {
            std::env::var_os("MODEL_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .context("MODEL_DIR is not set")?;
    let socket = args.socket.unwrap_or_else(cli_support::default_socket);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ossc-agent")
        .build()?;
    runtime.block_on(async {
        spawn_metrics(args.metrics_listen, &socket);
        let mut opts = agent_options(
            &config,
            &settings,
            &socket,
            &model_dir,
            Duration::from_secs(config.expire_time_sec),
        )?;
        opts.idle_exit = !args.daemon;
        if let Some(swarm) = &swarm {
            tracing::info!(
                peers = ?swarm.peers,
                listen = %swarm.listen,
                chunk_size = swarm.chunk_size,
                "peer layer configured"
            );
        }
        opts.swarm = swarm;
        tracing::info!(
            socket = %socket.display(),
            model_dir = %model_dir.display(),
            bucket = %settings.bucket,
            prefix = %settings.prefix,
            endpoint = %settings.endpoint,
            signature = ?settings.signature_version,
            in_flight = config.max_in_flight(),
            "node agent starting"
        );
        run_agent(opts).await
    })
}

/// Logs go to `logPath` (created if needed) at `logLevel` (0 debug … 3 error);
/// `RUST_LOG` overrides the level. Falls back to stderr when the file can't be opened.
pub fn init_logging(path: &std::path::Path, level: u8, force_stderr: bool) {
    let level = match level {
        0 => "debug",
        1 => "info",
        2 => "warn",
        _ => "error",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper=warn,reqwest=warn,rustls=warn"))
    });
    let file = (!force_stderr)
        .then(|| {
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        })
        .flatten();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = match file {
        Some(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
}

/// Serves Prometheus metrics for the agent on `socket`, when an address is given.
pub(crate) fn spawn_metrics(addr: Option<std::net::SocketAddr>, socket: &std::path::Path) {
    if let Some(addr) = addr {
        let socket = socket.to_path_buf();
        tokio::spawn(async move {
            if let Err(e) = crate::prometheus::serve(addr, socket).await {
                tracing::error!("metrics endpoint stopped: {e:#}");
            }
        });
    }
}

/// The agent's options from the vendor config and the resolved store, shared by
/// `ossc agent` and `ossc peer` (which differ in idle exit, expiry and peers).
pub(crate) fn agent_options(
    config: &ossc_core::config::ConnectorConfig,
    settings: &ossc_core::config::StoreSettings,
    socket: &std::path::Path,
    model_dir: &std::path::Path,
    expire: Duration,
) -> Result<AgentOptions> {
    let client = cli_support::http_client(settings)?;
    let mut opts = AgentOptions::new(socket, model_dir, settings.prefix.clone(), client);
    opts.fetch = cli_support::fetch_config(config);
    opts.small_file_bytes = config.cache_small_file_bytes;
    opts.memory_limit_bytes = config.cache_memory_limit_bytes;
    opts.expire = expire;
    opts.audit_path = Some(config.audit_path.clone());
    opts.log_path = config.log_path.clone();
    opts.handle_signals = true;
    opts.socket_mode = std::env::var(crate::agent::SOCKET_MODE_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| crate::agent::parse_socket_mode(&v))
        .transpose()?;
    Ok(opts)
}
