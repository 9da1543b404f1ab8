//! What every cluster test starts from: [`serial`], the lock that runs them
//! one at a time; [`note!`](crate::note), for measurements that must show in
//! CI logs; and a [`Testbed`], a generated model served by `ossc serve-store`
//! on a fresh cluster.
//!
//! Design decision: the tests of a process take one process-wide lock, so they
//! run one after another even under the default parallel test runner;
//! bandwidth measurements and multi-node loads would otherwise fight over
//! CI's 2 cores and give meaningless numbers.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::netns::{Cluster, ClusterSpec};
use crate::ossc_cluster::{self, Binaries, Model, PhaseOutcome, Store};

/// Prints a measurement straight to the process's stderr, so it shows in CI
/// logs even though the test harness captures `eprintln!` of passing tests.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of this process (see the module note); a test that
/// panicked while holding the lock does not stop the others.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A generated model served by the store of a fresh cluster. Fields drop in
/// order: the store and the cluster (every process) go before the work
/// directory is removed.
pub struct Testbed {
    pub store: Store,
    pub cluster: Cluster,
    pub bins: Binaries,
    pub model: Model,
    /// The work directory: the store's root, the manifest, every node's files.
    pub work: PathBuf,
    _work: tempfile::TempDir,
}

impl Testbed {
    /// Locates the binaries, generates a model of `model_mb` MiB in `shards`
    /// shards in a fresh work directory (see [`ossc_cluster::work_dir`]),
    /// builds the cluster of `spec` and starts the store on it.
    pub fn start(spec: &ClusterSpec, model_mb: u64, shards: u32) -> Result<Testbed> {
        let bins = Binaries::locate().context("ossc binaries")?;
        let work_dir = ossc_cluster::work_dir().context("work dir")?;
        let work = work_dir.path().to_path_buf();
        let model = Model::generate(&bins, &work, model_mb, shards).context("gen-model")?;
        let cluster = Cluster::create(spec).context("cluster")?;
        let store = Store::start(&cluster, &bins, &model).context("store")?;
        Ok(Testbed {
            store,
            cluster,
            bins,
            model,
            work,
            _work: work_dir,
        })
    }

    /// [`ossc_cluster::run_phase_with_config`] on this testbed's cluster,
    /// store and model, under its work directory.
    pub fn run_phase(
        &self,
        phase: &str,
        extra_env: &[(String, String)],
        config_extra: &serde_json::Value,
        timeout: Duration,
    ) -> Result<PhaseOutcome> {
        ossc_cluster::run_phase_with_config(
            &self.cluster,
            &self.bins,
            &self.store,
            &self.model,
            &self.work,
            phase,
            extra_env,
            config_extra,
            timeout,
        )
    }
}
