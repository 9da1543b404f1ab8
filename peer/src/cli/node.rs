//! What `ossc agent` and `ossc peer` share: their common flags
//! ([`NodeArgs`], flattened into both), where the model is mirrored, the
//! agent's logging and options from the vendor config, and the metrics
//! endpoint.
//!
//! Design decision: one struct holds every flag both commands take, so a flag
//! cannot drift between them (name, env var, parser). `ossc peer` words three
//! of the help texts for its daemon role (`PeerArgs` rewrites them); the flags
//! themselves are the same.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use ossc_core::config::{ConnectorConfig, StoreEnv, StoreSettings};

use crate::agent::AgentOptions;
use crate::cli::cli_support;

/// The flags of `ossc agent` and `ossc peer`.
#[derive(clap::Args, Debug, Default)]
pub struct NodeArgs {
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
    pub metrics_listen: Option<SocketAddr>,
}

impl NodeArgs {
    /// `--model-dir`, else `MODEL_DIR` from `env`, which must be absolute
    /// ([`StoreEnv::model_dir`]); an error when neither is set.
    pub fn model_dir(&self, env: &StoreEnv) -> Result<PathBuf> {
        if let Some(dir) = &self.model_dir {
            return Ok(dir.clone());
        }
        env.model_dir()?
            .context("MODEL_DIR is not set (or pass --model-dir)")
    }

    /// `--socket`, else `CONNECTOR_UDS_PATH`, else the default socket.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(cli_support::default_socket)
    }
}

/// The start and end of `ossc agent` and `ossc peer` around `body`: loads the
/// vendor config (an error in it goes to stderr as `{command}: …`, since
/// logPath is not known yet), sets up logging, runs `body`, and logs why it
/// stopped as `{stopped}: …` (with `echo_stop`, on stderr too).
pub fn run_with_config(
    command: &str,
    stopped: &str,
    echo_stop: bool,
    log_stderr: bool,
    body: impl FnOnce(ConnectorConfig) -> Result<()>,
) -> Result<()> {
    let config = match cli_support::load_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{command}: {e:#}");
            return Err(e);
        }
    };
    init_logging(&config.log_path, config.log_level, log_stderr);
    let result = body(config);
    if let Err(e) = &result {
        tracing::error!("{stopped}: {e:#}");
        if echo_stop {
            eprintln!("{command}: {e:#}");
        }
    }
    result
}

/// Logs go to `logPath` (created if needed) at `logLevel` (0 debug … 3 error);
/// `RUST_LOG` overrides the level. Falls back to stderr when the file can't be opened.
pub fn init_logging(path: &Path, level: u8, force_stderr: bool) {
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
pub fn spawn_metrics(addr: Option<SocketAddr>, socket: &Path) {
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
pub fn agent_options(
    config: &ConnectorConfig,
    settings: &StoreSettings,
    socket: &Path,
    model_dir: &Path,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::agent_cli::AgentArgs;
    use crate::cli::peer_daemon::PeerArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct AgentCli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[derive(Parser)]
    struct PeerCli {
        #[command(flatten)]
        peer: PeerArgs,
    }

    fn env_of(pairs: &[(&str, &str)]) -> StoreEnv {
        StoreEnv::from_lookup(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn both_commands_refuse_a_relative_or_empty_model_dir_alike() {
        let agent = AgentCli::parse_from(["x"]).agent;
        let peer = PeerCli::parse_from(["x"]).peer;
        let refusals = |env: &StoreEnv| {
            let a = agent.node.model_dir(env).unwrap_err().to_string();
            let p = peer.node.model_dir(env).unwrap_err().to_string();
            assert_eq!(a, p);
            a
        };
        assert_eq!(
            refusals(&env_of(&[("MODEL_DIR", "models/qwen")])),
            r#"MODEL_DIR must be an absolute path, got "models/qwen""#
        );
        for empty in ["", "  "] {
            assert_eq!(
                refusals(&env_of(&[("MODEL_DIR", empty)])),
                "MODEL_DIR is not set (or pass --model-dir)"
            );
        }
        assert_eq!(
            refusals(&env_of(&[])),
            refusals(&env_of(&[("MODEL_DIR", "")]))
        );
        // An absolute MODEL_DIR is taken; the flag wins over it.
        let env = env_of(&[("MODEL_DIR", "/models/qwen")]);
        assert_eq!(
            agent.node.model_dir(&env).unwrap(),
            Path::new("/models/qwen")
        );
        assert_eq!(
            peer.node.model_dir(&env).unwrap(),
            Path::new("/models/qwen")
        );
        let flagged = PeerCli::parse_from(["x", "--model-dir", "/elsewhere"]).peer;
        assert_eq!(
            flagged.node.model_dir(&env).unwrap(),
            Path::new("/elsewhere")
        );
    }

    #[test]
    fn both_commands_take_the_same_node_flags() {
        let flags = [
            "x",
            "--socket",
            "/run/a.sock",
            "--oss-path",
            "oss://b/m/",
            "--model-dir",
            "/m",
            "--log-stderr",
            "--metrics-listen",
            "9469",
        ];
        let agent = AgentCli::parse_from(flags).agent.node;
        let peer = PeerCli::parse_from(flags).peer.node;
        assert_eq!(format!("{agent:?}"), format!("{peer:?}"));
        assert_eq!(agent.socket(), Path::new("/run/a.sock"));
        assert_eq!(agent.oss_path.as_deref(), Some("oss://b/m/"));
        assert!(agent.log_stderr);
        assert_eq!(
            agent.metrics_listen,
            Some("127.0.0.1:9469".parse().unwrap())
        );
    }
}
