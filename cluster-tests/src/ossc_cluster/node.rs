//! One node's files and agent, in the layout every consumer and daemon
//! shares under its directory: `model/` (MODEL_DIR), `agent/connector.sock`,
//! `config.json`, `connector.log`, `audit.log`; and what the agent's STATUS
//! says.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::Binaries;
use crate::netns::{Host, HostProcess};

/// A process started on one node whose files live under `dir`; `Role` says
/// which it is, and so what more it can do: a consumer
/// ([`super::RunningConsumer`]) or a daemon ([`super::PeerDaemon`]).
#[derive(Debug)]
pub struct NodeProcess<Role> {
    node: Host,
    dir: PathBuf,
    process: HostProcess,
    role: PhantomData<Role>,
}

impl<Role> NodeProcess<Role> {
    pub(super) fn spawn(node: &Host, dir: &Path, cmd: Command) -> Result<Self> {
        Ok(NodeProcess {
            node: node.clone(),
            dir: dir.to_path_buf(),
            process: node.spawn(cmd)?,
            role: PhantomData,
        })
    }

    pub(super) fn into_parts(self) -> (Host, PathBuf, HostProcess) {
        (self.node, self.dir, self.process)
    }

    pub fn node(&self) -> &Host {
        &self.node
    }

    /// This node's directory (model/, agent/, connector.log, ...).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node agent's socket.
    pub fn socket(&self) -> PathBuf {
        socket_in(&self.dir)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// The node agent's STATUS now (`None` while none answers).
    pub fn agent_status(&self, bins: &Binaries) -> Option<serde_json::Value> {
        agent_status(bins, &self.socket())
    }
}

/// The agent socket of the node directory `dir`.
pub(super) fn socket_in(dir: &Path) -> PathBuf {
    dir.join("agent").join("connector.sock")
}

/// `ossc` on `node` with a cleared environment holding only `PATH` and
/// `HOME`, so nothing from the test runner's environment leaks into a node.
pub(super) fn ossc_command(node: &Host, bins: &Binaries) -> Command {
    let mut cmd = node.command(&bins.ossc);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
        );
    cmd
}

/// Writes a node's connector config file, `dir/config.json` (log and audit
/// log in `dir`, the vendor's defaults otherwise, `config_extra` merged in;
/// see [`merge_config`]), creating `dir`. Returns the file's path, for
/// `OSS_CONNECTOR_CONFIG`.
pub fn write_node_config(dir: &Path, config_extra: &serde_json::Value) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut config = serde_json::json!({
        "logLevel": 1,
        "logPath": dir.join("connector.log"),
        "auditPath": dir.join("audit.log"),
        "expireTimeSec": 120,
        "prefetch": {"vcpus": 4, "workers": 8},
    });
    merge_config(&mut config, config_extra);
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
    Ok(config_path)
}

/// Merges the keys of JSON object `extra` into `config` (one level deep for
/// nested objects, so `{"peer": {...}}` adds a section); `null` merges nothing.
pub fn merge_config(config: &mut serde_json::Value, extra: &serde_json::Value) {
    let (Some(dst), Some(src)) = (config.as_object_mut(), extra.as_object()) else {
        return;
    };
    for (k, v) in src {
        match (
            dst.get_mut(k).and_then(|d| d.as_object_mut()),
            v.as_object(),
        ) {
            (Some(d), Some(v)) => d.extend(v.iter().map(|(a, b)| (a.clone(), b.clone()))),
            _ => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `ossc status --json` for the agent at `socket` (a path, so reachable from
/// any namespace).
pub(super) fn agent_status(bins: &Binaries, socket: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new(&bins.ossc)
        .arg("status")
        .arg("--socket")
        .arg(socket)
        .arg("--json")
        .env_remove("LD_PRELOAD")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// `ossc status --json` of the agent at `socket` (`None` when none answers).
pub fn query_agent_status(bins: &Binaries, socket: &Path) -> Option<serde_json::Value> {
    agent_status(bins, socket)
}

/// From an agent's STATUS: its `peers.peers[]` entry for peer `id`.
pub fn peer_entry<'a>(status: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    status["peers"]["peers"]
        .as_array()?
        .iter()
        .find(|p| p["id"].as_str() == Some(id))
}

/// From an agent's STATUS: `counter` (`bytes_sent`, `bytes_received`,
/// `failures`, ...) of its entry for peer `id`; 0 when absent.
pub fn peer_counter(status: &serde_json::Value, id: &str, counter: &str) -> u64 {
    peer_entry(status, id)
        .and_then(|p| p[counter].as_u64())
        .unwrap_or(0)
}

/// From an agent's STATUS: the bytes it sent to all its peers together.
pub fn bytes_sent_to_peers(status: &serde_json::Value) -> u64 {
    status["peers"]["peers"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["bytes_sent"].as_u64()).sum())
        .unwrap_or(0)
}

/// From an agent's STATUS: the bytes it pulled and kept from relays (peers
/// still receiving the chunk).
pub fn bytes_pulled_from_relays(status: &serde_json::Value) -> u64 {
    status["peers"]["bytes_pulled_by_source"]["relay"]
        .as_u64()
        .unwrap_or(0)
}

/// From an agent's STATUS: the chunk pulls it completed over `transport`
/// ("framed", "grpc", "quic").
pub fn pulls_over_transport(status: &serde_json::Value, transport: &str) -> u64 {
    status["peers"]["pulls_by_transport"][transport]
        .as_u64()
        .unwrap_or(0)
}

/// The fetcher's log line of a pull that fell back to the store.
pub const STORE_FALLBACK_LOG: &str = "pull from peer failed";

/// Pulls of the node whose files are under `dir` that fell back to the
/// store (lines of its `connector.log`).
pub fn store_fallbacks(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("connector.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(STORE_FALLBACK_LOG))
        .count()
}

/// The tail (last `lines` lines) of a node's `connector.log`.
pub fn log_tail(dir: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(dir.join("connector.log")).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
