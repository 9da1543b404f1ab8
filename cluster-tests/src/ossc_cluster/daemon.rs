//! `ossc peer`, the standalone node daemon, on one node: its files in the
//! same layout as a consumer's, so an attached consumer with the same
//! directory reaches it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use super::node::{log_tail, ossc_command, socket_in, write_node_config, NodeProcess};
use super::{store_env, Binaries, Model, Store};
use crate::netns::Host;

/// How long `ossc peer` may take to create its socket.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(30);

/// `ossc peer` (the standalone node daemon) running on one node, with its
/// MODEL_DIR, socket, config and log under `dir` in the same layout as a
/// consumer's (`model/`, `agent/connector.sock`, `connector.log`), so
/// [`super::start_attached_consumer`] with the same `dir` attaches to it.
pub type PeerDaemon = NodeProcess<Daemon>;

/// The role of a [`PeerDaemon`].
#[derive(Debug)]
pub enum Daemon {}

/// What a test adds to `ossc peer`'s defaults.
#[derive(Debug, Clone, Default)]
pub struct DaemonSettings {
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Extra command-line flags.
    pub args: Vec<String>,
    /// Merged into the daemon's config file (see [`super::merge_config`]).
    pub config: serde_json::Value,
}

/// Starts `ossc peer` on `node` for `model` (credentials, endpoint and
/// OSS_PATH in its environment, `extra` on top) and waits until its socket
/// exists.
pub fn start_peer_daemon(
    node: &Host,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    dir: &Path,
    extra: &DaemonSettings,
) -> Result<PeerDaemon> {
    let config_path = write_node_config(dir, &extra.config)?;
    let socket = socket_in(dir);
    let mut cmd = ossc_command(node, bins);
    cmd.envs(store_env(store, &model.oss_path()))
        .env("OSS_CONNECTOR_CONFIG", &config_path)
        .envs(extra.env.iter().map(|(k, v)| (k, v)))
        .arg("peer")
        .arg("--socket")
        .arg(&socket)
        .arg("--model-dir")
        .arg(dir.join("model"))
        .args(&extra.args);
    let mut process = PeerDaemon::spawn(node, dir, cmd)?;
    let deadline = Instant::now() + DAEMON_START_TIMEOUT;
    while !socket.exists() {
        if !process.is_running() {
            bail!(
                "{}: ossc peer exited at start\n--- connector.log (tail) ---\n{}",
                node.name,
                log_tail(dir, 20)
            );
        }
        ensure!(
            Instant::now() < deadline,
            "{}: ossc peer did not create {} within {DAEMON_START_TIMEOUT:?}",
            node.name,
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(process)
}

impl PeerDaemon {
    /// The daemon's STATUS (`None` while it does not answer).
    pub fn status(&self, bins: &Binaries) -> Option<serde_json::Value> {
        self.agent_status(bins)
    }
}
