//! Consumers: `ossc load-model --manifest` under `libossc_preload.so` on one
//! node, either as the main process that starts the node's agent
//! (`ENABLE_CONNECTOR=1`) or attached to an agent already serving the node's
//! socket (`ENABLE_CONNECTOR=2`); and the check of what each one loaded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use super::node::{
    agent_status, log_tail, ossc_command, socket_in, write_node_config, NodeProcess,
};
use super::{store_env, Binaries, Model, Store};
use crate::netns::{Host, ProcessOutput};

/// What one node's consumer did.
#[derive(Debug, Clone)]
pub struct ConsumerOutcome {
    pub node: String,
    /// The consumer's `--json` report (files, bytes, load_seconds, ...).
    pub report: serde_json::Value,
    /// From spawn to exit (agent start, listing, fetch, load, verify).
    pub wall: Duration,
    /// The node agent's `STATUS` (bytes by source, peers), if it answered.
    pub agent_status: Option<serde_json::Value>,
    /// Where this node's logs are.
    pub dir: PathBuf,
}

impl ConsumerOutcome {
    /// `bytes_by_source.<source>` from the agent's status (0 when unknown).
    pub fn bytes_from(&self, source: &str) -> u64 {
        self.agent_status
            .as_ref()
            .and_then(|s| s["bytes_by_source"][source].as_u64())
            .unwrap_or(0)
    }
}

/// A consumer started on one node by [`start_consumer_with_config`] or
/// [`start_attached_consumer`].
pub type RunningConsumer = NodeProcess<Consumer>;

/// The role of a [`RunningConsumer`].
#[derive(Debug)]
pub enum Consumer {}

/// Starts one consumer (and through the preload library, that node's agent)
/// on `node`, with its MODEL_DIR, socket, config and logs under `dir`,
/// `extra_env` in its environment and `config_extra` merged into its config
/// file (see [`super::merge_config`]). Lets tests start nodes late, kill them
/// mid-load, etc.
pub fn start_consumer_with_config(
    node: &Host,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    dir: &Path,
    extra_env: &[(String, String)],
    config_extra: &serde_json::Value,
) -> Result<RunningConsumer> {
    let config_path = write_node_config(dir, config_extra)?;
    let mut cmd = hooked_load_model(node, bins, model, dir, "1");
    cmd.envs(store_env(store, &model.oss_path()))
        .env("OSS_CONNECTOR_CONFIG", &config_path)
        .env("OSSC_AGENT_BIN", &bins.ossc)
        .envs(extra_env.iter().map(|(k, v)| (k, v)));
    RunningConsumer::spawn(node, dir, cmd)
}

/// Starts a consumer on `node` that attaches to the agent already serving
/// `dir/agent/connector.sock` (a [`super::PeerDaemon`]) with
/// `ENABLE_CONNECTOR=2`. It gets no store credentials, endpoint or OSS_PATH:
/// everything comes through the daemon.
pub fn start_attached_consumer(
    node: &Host,
    bins: &Binaries,
    model: &Model,
    dir: &Path,
) -> Result<RunningConsumer> {
    start_attached_consumer_as(node, bins, model, dir, None)
}

/// [`start_attached_consumer`] for a daemon whose `OSS_PATH` is a parent of
/// the model: the consumer loads `MODEL_DIR/<rel>` (`rel` = [`super::PREFIX`]
/// for a daemon at the bucket root), so its first open there is what starts
/// the daemon's prefetch of the model.
pub fn start_attached_consumer_in(
    node: &Host,
    bins: &Binaries,
    model: &Model,
    dir: &Path,
    rel: &str,
) -> Result<RunningConsumer> {
    let cmd = hooked_load_model_of(node, bins, model, dir, "2", &dir.join("model").join(rel));
    RunningConsumer::spawn(node, dir, cmd)
}

/// [`start_attached_consumer`], run as user and group `uid` when given (an
/// application container of another, non-root user that mounts the daemon's
/// directories): it drops root after entering the node's namespace.
pub fn start_attached_consumer_as(
    node: &Host,
    bins: &Binaries,
    model: &Model,
    dir: &Path,
    uid: Option<u32>,
) -> Result<RunningConsumer> {
    let mut cmd = hooked_load_model(node, bins, model, dir, "2");
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the forked child after the namespace hook (hooks
        // run in order) and only makes async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    RunningConsumer::spawn(node, dir, cmd)
}

/// `ossc load-model dir/model --manifest M --json` on `node` under the hook
/// with `ENABLE_CONNECTOR=enable_connector`, MODEL_DIR and the agent socket
/// of `dir`, and nothing else of the test runner's environment.
fn hooked_load_model(
    node: &Host,
    bins: &Binaries,
    model: &Model,
    dir: &Path,
    enable_connector: &str,
) -> Command {
    hooked_load_model_of(node, bins, model, dir, enable_connector, &dir.join("model"))
}

/// [`hooked_load_model`] loading `load` (MODEL_DIR or a directory in it).
fn hooked_load_model_of(
    node: &Host,
    bins: &Binaries,
    model: &Model,
    dir: &Path,
    enable_connector: &str,
    load: &Path,
) -> Command {
    let model_dir = dir.join("model");
    let mut cmd = ossc_command(node, bins);
    cmd.env("LD_PRELOAD", &bins.preload)
        .env("ENABLE_CONNECTOR", enable_connector)
        .env("MODEL_DIR", &model_dir)
        .env("CONNECTOR_UDS_PATH", socket_in(dir))
        .arg("load-model")
        .arg(load)
        .arg("--manifest")
        .arg(&model.manifest_path)
        .arg("--json");
    cmd
}

impl RunningConsumer {
    /// Waits for the consumer (until `timeout` after its start), asks the
    /// agent for its status, and checks that the consumer succeeded with the
    /// whole model.
    pub fn finish(
        self,
        bins: &Binaries,
        model: &Model,
        timeout: Duration,
    ) -> Result<ConsumerOutcome> {
        let socket = self.socket();
        let (node, dir, process) = self.into_parts();
        let out = process.wait(timeout);
        let agent_status = agent_status(bins, &socket);
        let out = out.with_context(|| format!("{}: consumer", node.name))?;
        let report = check_consumer(&node, &dir, &out, model)?;
        Ok(ConsumerOutcome {
            node: node.name,
            report,
            wall: out.elapsed,
            agent_status,
            dir,
        })
    }

    /// [`RunningConsumer::finish`] for a test: a failure panics with the
    /// node's name and the tail of its `connector.log`.
    pub fn expect_finished(
        self,
        bins: &Binaries,
        model: &Model,
        timeout: Duration,
    ) -> ConsumerOutcome {
        let node = self.node().name.clone();
        let dir = self.dir().to_path_buf();
        self.finish(bins, model, timeout).unwrap_or_else(|e| {
            panic!(
                "{node}: {e:#}\n--- connector.log (tail) ---\n{}",
                log_tail(&dir, 30)
            )
        })
    }
}

fn check_consumer(
    node: &Host,
    dir: &Path,
    out: &ProcessOutput,
    model: &Model,
) -> Result<serde_json::Value> {
    if !out.status.success() {
        bail!(
            "{}: consumer failed ({}): {}\n--- connector.log (tail) ---\n{}",
            node.name,
            out.status,
            out.stderr_text(),
            log_tail(dir, 20)
        );
    }
    let stdout = out.stdout_text();
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{}: no JSON report in {stdout:?}", node.name))?;
    let report: serde_json::Value = serde_json::from_str(line)?;
    ensure!(
        report["bytes"].as_u64() == Some(model.total_bytes),
        "{}: loaded {} bytes, the model has {}",
        node.name,
        report["bytes"],
        model.total_bytes
    );
    ensure!(
        report["files"].as_u64() == Some(model.files as u64),
        "{}: loaded {} files, the model has {}",
        node.name,
        report["files"],
        model.files
    );
    Ok(report)
}
