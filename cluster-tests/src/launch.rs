//! The vendor's launch scenarios on a [`Cluster`]: real launchers (Ray's `ray
//! start`, an SGLang-style multi-node server) started on node hosts with the
//! environment the vendor's guides set, and what a test needs to check them
//! from the outside: which processes of a host carry the hook
//! (`/proc/<pid>/maps`, `/proc/<pid>/environ`), which agent serves a node, and
//! whose opens that agent's audit log recorded.
//!
//! Design decision: launchers are started through the scripts users run
//! (`deploy/examples/*.sh`), with a cleared environment holding only what the
//! guide tells a user to export, so a test checks the documented commands
//! rather than a copy of them. Each node still gets its own MODEL_DIR, socket,
//! config and logs under the test's work directory, because the hosts of a
//! cluster share one filesystem. Python (with Ray, safetensors, numpy) comes
//! from `OSSC_TEST_PYTHON`, as scripts/test.sh sets it, else the repository's
//! `.venv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::netns::{Host, HostProcess, ProcessOutput};
use crate::ossc_cluster::{self, Binaries, Model, Store};

/// The repository root (scripts, launchers, the venv).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cluster-tests lives inside the repository")
        .to_path_buf()
}

/// A file under `cluster-tests/launchers/`.
pub fn launcher(name: &str) -> PathBuf {
    repo_root()
        .join("cluster-tests")
        .join("launchers")
        .join(name)
}

/// A script under `deploy/examples/`.
pub fn example(name: &str) -> PathBuf {
    repo_root().join("deploy").join("examples").join(name)
}

/// The test Python: `OSSC_TEST_PYTHON`, else `<repo>/.venv/bin/python`, if it
/// imports every module of `modules`. Otherwise prints a loud skip message and
/// returns `None`, or panics when env `CI` is set (CI installs them all with
/// scripts/setup-env.sh).
pub fn python_or_skip(test: &str, modules: &[&str]) -> Option<PathBuf> {
    let python = std::env::var_os("OSSC_TEST_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv").join("bin").join("python"));
    let probe = std::process::Command::new(&python)
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .env_remove("LD_PRELOAD")
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return Some(python),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("{}: {e}", python.display()),
    };
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: CI is set but {} cannot import {modules:?}: {why}",
            python.display()
        );
    }
    let bar = "!".repeat(78);
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!!! SKIPPED {test}: {} cannot import {modules:?} ({why}).\n!!! Run \
         scripts/setup-env.sh (or set OSSC_TEST_PYTHON); CI runs this test.\n{bar}\n",
        python.display()
    );
    None
}

/// What a launch test needs: clusters ([`crate::netns::available_or_skip`])
/// and the test Python with `modules` ([`python_or_skip`]); the Python when
/// both are there, else `None` after the loud skip message.
pub fn cluster_and_python_or_skip(test: &str, modules: &[&str]) -> Option<PathBuf> {
    if !crate::netns::available_or_skip(test) {
        return None;
    }
    python_or_skip(test, modules)
}

/// A wall-clock budget shared by every step of a test, so the whole test is
/// bounded however its steps split the time.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(budget: Duration) -> Deadline {
        Deadline(Instant::now() + budget)
    }

    /// Time left (zero once passed).
    pub fn left(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// `step` or the time left, whichever is shorter; an error once passed.
    pub fn step(&self, step: Duration) -> Result<Duration> {
        let left = self.left();
        ensure!(!left.is_zero(), "the test's time budget is spent");
        Ok(step.min(left))
    }
}

/// Where one node's connector files live: `dir/model` (MODEL_DIR),
/// `dir/agent/connector.sock`, `dir/config.json`, `dir/connector.log`,
/// `dir/audit.log`.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    pub dir: PathBuf,
}

impl NodeFiles {
    /// Creates `dir` and its config file (`config_extra` merged in).
    pub fn create(dir: &Path, config_extra: &serde_json::Value) -> Result<NodeFiles> {
        ossc_cluster::write_node_config(dir, config_extra)?;
        Ok(NodeFiles {
            dir: dir.to_path_buf(),
        })
    }

    pub fn model_dir(&self) -> PathBuf {
        self.dir.join("model")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent").join("connector.sock")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The connector variables of this node: `MODEL_DIR`,
    /// `CONNECTOR_UDS_PATH`, `OSS_CONNECTOR_CONFIG`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("MODEL_DIR".into(), path_text(&self.model_dir())),
            ("CONNECTOR_UDS_PATH".into(), path_text(&self.socket())),
            ("OSS_CONNECTOR_CONFIG".into(), path_text(&self.config())),
        ]
    }
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// What a user exports before running an example script on a node: the store
/// (`OSS_PATH` at the bucket root, as the vendor's guides set it), the node's
/// files, and where the hook is installed (`OSSC_PRELOAD_LIB`; the scripts
/// turn it into `LD_PRELOAD` with `ENABLE_CONNECTOR=1`). `PATH` starts with
/// the test Python's directory (`ray`, `python3`).
pub fn example_env(
    bins: &Binaries,
    store: &Store,
    model: &Model,
    files: &NodeFiles,
    python: &Path,
) -> Vec<(String, String)> {
    let mut env = base_env(python);
    env.extend(ossc_cluster::store_env(store, &model.bucket_root()));
    env.extend(files.env());
    env.push(("OSSC_PRELOAD_LIB".into(), path_text(&bins.preload)));
    env.push(("OSSC_AGENT_BIN".into(), path_text(&bins.ossc)));
    env
}

/// `PATH` (the test Python's directory first) and `HOME`: what every process
/// started on a host gets besides the variables a test names.
pub fn base_env(python: &Path) -> Vec<(String, String)> {
    let mut path = python
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(p) = std::env::var_os("PATH") {
        path.push(':');
        path.push_str(&p.to_string_lossy());
    }
    vec![
        ("PATH".into(), path),
        (
            "HOME".into(),
            std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
        ),
    ]
}

/// Runs `bash script args` on `host` with exactly `env`, and waits for it.
pub fn run_script(
    host: &Host,
    script: &Path,
    args: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<ProcessOutput> {
    let process = spawn_with_env(host, Path::new("bash"), script, args, env)?;
    let out = process
        .wait(timeout)
        .with_context(|| format!("{}: {}", host.name, script.display()))?;
    ensure!(
        out.status.success(),
        "{}: {} {args:?} failed ({}):\n{}\n{}",
        host.name,
        script.display(),
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    Ok(out)
}

/// Starts `program first args...` on `host` with exactly `env`.
pub fn spawn_with_env(
    host: &Host,
    program: &Path,
    first: &Path,
    args: &[String],
    env: &[(String, String)],
) -> Result<HostProcess> {
    let mut cmd = host.command(program);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(first)
        .args(args);
    Ok(host.spawn(cmd)?)
}

/// Whether one process of a host carries the hook.
#[derive(Debug, Clone)]
pub struct ProcHook {
    pub pid: i32,
    /// `/proc/<pid>/comm`.
    pub comm: String,
    /// `/proc/<pid>/cmdline`, arguments joined by spaces, cut at 100 chars.
    pub cmdline: String,
    /// `libossc_preload.so` is mapped (`/proc/<pid>/maps`).
    pub hooked: bool,
    /// `ENABLE_CONNECTOR` in the process's initial environment
    /// (`/proc/<pid>/environ`). Processes that rewrite their title over that
    /// memory (Ray's `ray::*` processes, through setproctitle) may show none
    /// although they have it: such processes report `os.environ` themselves.
    pub enable_connector: Option<String>,
}

/// Every process in `host`'s namespace (pid order) with its hook state.
/// Processes that exit while being read are left out.
pub fn hook_census(host: &Host, library: &Path) -> Result<Vec<ProcHook>> {
    let name = library
        .file_name()
        .context("library path has no file name")?
        .to_string_lossy()
        .into_owned();
    let mut pids = host.pids()?;
    pids.sort_unstable();
    Ok(pids
        .into_iter()
        .filter_map(|pid| proc_hook(pid, &name))
        .collect())
}

fn proc_hook(pid: i32, library_name: &str) -> Option<ProcHook> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    let maps = std::fs::read_to_string(dir.join("maps")).ok()?;
    let environ = std::fs::read(dir.join("environ")).ok()?;
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let mut cmdline: String = String::from_utf8_lossy(&cmdline)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    cmdline.truncate(
        cmdline
            .char_indices()
            .nth(100)
            .map_or(cmdline.len(), |(i, _)| i),
    );
    let enable_connector = environ
        .split(|&b| b == 0)
        .find_map(|e| e.strip_prefix(b"ENABLE_CONNECTOR="))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    Some(ProcHook {
        pid,
        comm: comm.trim().to_string(),
        cmdline,
        hooked: maps
            .lines()
            .any(|l| l.rsplit('/').next() == Some(library_name)),
        enable_connector,
    })
}

/// A census as a table, for the test's output.
pub fn census_table(host: &Host, census: &[ProcHook]) -> String {
    let mut out = format!("{} ({} processes):\n", host.name, census.len());
    for p in census {
        out.push_str(&format!(
            "  {:>7} {:<16} hook={:<5} ENABLE_CONNECTOR={:<4} {}\n",
            p.pid,
            p.comm,
            p.hooked,
            p.enable_connector.as_deref().unwrap_or("-"),
            p.cmdline
        ));
    }
    out
}

/// Opens an agent's audit log recorded, by client pid: `(comm, opens,
/// bytes)`.
pub fn audit_by_pid(path: &Path) -> Result<BTreeMap<u32, (String, u64, u64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading audit log {}", path.display()))?;
    let mut out: BTreeMap<u32, (String, u64, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("audit line {line:?}"))?;
        let Some(pid) = rec["pid"].as_u64() else {
            bail!("audit line without pid: {line}");
        };
        let e = out.entry(pid as u32).or_default();
        e.0 = rec["comm"].as_str().unwrap_or_default().to_string();
        e.1 += 1;
        e.2 += rec["bytes"].as_u64().unwrap_or(0);
    }
    Ok(out)
}

/// The agent serving `socket`: its pid from STATUS. It must be a process in
/// `host`'s namespace, and one without the hook (the hook strips
/// `LD_PRELOAD` and `ENABLE_CONNECTOR` when it starts the agent).
pub fn node_agent(host: &Host, bins: &Binaries, socket: &Path) -> Result<(i32, serde_json::Value)> {
    let status = ossc_cluster::query_agent_status(bins, socket)
        .with_context(|| format!("{}: no agent answers on {}", host.name, socket.display()))?;
    let pid = status["agent_pid"]
        .as_i64()
        .with_context(|| format!("{}: STATUS has no agent_pid", host.name))? as i32;
    ensure!(
        host.pids()?.contains(&pid),
        "{}: agent pid {pid} ({}) is not a process of this host",
        host.name,
        socket.display()
    );
    let name = bins
        .preload
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let me = proc_hook(pid, &name).with_context(|| format!("agent pid {pid} vanished"))?;
    ensure!(
        !me.hooked && me.enable_connector.is_none(),
        "{}: the agent (pid {pid}) runs with the hook: {me:?}",
        host.name
    );
    Ok((pid, status))
}

/// Store egress over the phase as a multiple of `model_bytes`.
pub fn egress_factor(store: &Store, model_bytes: u64) -> Result<(u64, f64)> {
    let served = store.stats()?.bytes_served;
    Ok((served, served as f64 / model_bytes as f64))
}
