//! A staggered phase: every node's daemon (`ossc peer`) is up with
//! `OSS_PATH` at the bucket root, so it lists the bucket and prefetches
//! nothing until a process opens the model's directory; then each node's
//! application (an attached consumer loading `MODEL_DIR/m1`) starts at its
//! own offset of a seeded [`StartSchedule`]. This is a multi-node job whose
//! processes open the model seconds apart (Ray workers, vLLM ranks).
//!
//! Design decisions:
//! - **Daemons first, and joined.** The phase waits until every daemon sees
//!   every other alive before the first consumer starts, so what is
//!   measured is the skew of the opens, not membership forming.
//! - **A schedule spans the whole skew.** In a random order, the first node
//!   opens at 0 and the last at exactly `skew`; the others are uniform in
//!   between. A short draw (every offset near 0) would test nothing.
//! - **Egress counts from before the daemons start** (the store's counters
//!   are reset first), so listings and small files are in it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use super::{
    peer_id, start_attached_consumer_in, start_peer_daemon, Binaries, ConsumerOutcome,
    DaemonSettings, Model, PeerDaemon, PhaseOutcome, RunningConsumer, Store, PREFIX,
};
use crate::netns::Cluster;
use crate::swarm_sim::rng::Rng;

/// How long the daemons may take to see each other alive.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// When each node's application opens the model, relative to the first.
#[derive(Debug, Clone, PartialEq)]
pub struct StartSchedule {
    /// The seed it was drawn from (0 for [`StartSchedule::simultaneous`]).
    pub seed: u64,
    /// Offset of node `i` (index into the cluster's nodes).
    pub offsets: Vec<Duration>,
}

impl StartSchedule {
    /// Every node at once.
    pub fn simultaneous(nodes: usize) -> StartSchedule {
        StartSchedule {
            seed: 0,
            offsets: vec![Duration::ZERO; nodes],
        }
    }

    /// Nodes in a random order (from `seed`): the first at 0, the last at
    /// `skew`, the others uniform in between.
    pub fn random(nodes: usize, skew: Duration, seed: u64) -> StartSchedule {
        let mut rng = Rng::new(seed);
        let mut order: Vec<usize> = (0..nodes).collect();
        for i in (1..nodes).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let mut draws: Vec<f64> = (0..nodes)
            .map(|k| match k {
                0 => 0.0,
                k if k + 1 == nodes => 1.0,
                _ => rng.unit(),
            })
            .collect();
        draws.sort_by(f64::total_cmp);
        let mut offsets = vec![Duration::ZERO; nodes];
        for (node, draw) in order.into_iter().zip(draws) {
            offsets[node] = skew.mul_f64(draw);
        }
        StartSchedule { seed, offsets }
    }

    /// Node indices in the order they start.
    pub fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.offsets.len()).collect();
        order.sort_by_key(|&i| (self.offsets[i], i));
        order
    }

    /// `seed S: node2 +0.00 s, node0 +1.37 s, ...`, in start order.
    pub fn describe(&self, names: &[String]) -> String {
        let starts: Vec<String> = self
            .order()
            .into_iter()
            .map(|i| {
                let name = names.get(i).map_or("?", String::as_str);
                format!("{name} +{:.2} s", self.offsets[i].as_secs_f64())
            })
            .collect();
        format!("seed {}: {}", self.seed, starts.join(", "))
    }
}

/// Starts a daemon on every node (`settings` plus `--oss-path` at the bucket
/// root, files under `work/<phase>/<node>`), waits until they all see each
/// other, then starts each node's attached consumer of `MODEL_DIR/m1` at its
/// offset in `schedule`; the outcome lists them in node order. Each consumer must exit 0 within `timeout` of its
/// own start with every byte verified. `wall` runs from the first consumer's
/// start to the last one's exit. Afterwards every node's processes are
/// killed.
#[allow(clippy::too_many_arguments)]
pub fn run_staggered_phase(
    cluster: &Cluster,
    bins: &Binaries,
    store: &Store,
    model: &Model,
    work: &Path,
    phase: &str,
    settings: &DaemonSettings,
    schedule: &StartSchedule,
    timeout: Duration,
) -> Result<PhaseOutcome> {
    let nodes = cluster.nodes();
    ensure!(
        schedule.offsets.len() == nodes.len(),
        "a schedule of {} nodes for a cluster of {}",
        schedule.offsets.len(),
        nodes.len()
    );
    store.reset_stats()?;
    let mut settings = settings.clone();
    settings.args.push("--oss-path".into());
    settings.args.push(model.bucket_root());
    let result = (|| {
        let daemons: Vec<PeerDaemon> = nodes
            .iter()
            .map(|n| {
                let dir = work.join(phase).join(&n.name);
                start_peer_daemon(n, bins, store, model, &dir, &settings)
            })
            .collect::<Result<_>>()?;
        wait_joined(&daemons, bins, cluster)?;
        let t0 = Instant::now();
        let mut running: Vec<Option<RunningConsumer>> = nodes.iter().map(|_| None).collect();
        for i in schedule.order() {
            let at = t0 + schedule.offsets[i];
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            let d = &daemons[i];
            running[i] = Some(start_attached_consumer_in(
                d.node(),
                bins,
                model,
                d.dir(),
                PREFIX,
            )?);
        }
        // In node order, so `consumers[i]` opened at `schedule.offsets[i]`.
        let consumers = running
            .into_iter()
            .flatten()
            .map(|c| c.finish(bins, model, timeout))
            .collect::<Vec<Result<ConsumerOutcome>>>();
        let wall = t0.elapsed();
        let stats = store.stats()?;
        let consumers = consumers.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(PhaseOutcome {
            consumers,
            store: stats,
            wall,
        })
    })();
    for node in nodes {
        node.kill_all()?;
    }
    result
}

/// Waits until every daemon's STATUS lists every other node alive.
fn wait_joined(daemons: &[PeerDaemon], bins: &Binaries, cluster: &Cluster) -> Result<()> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let ids: Vec<String> = cluster.nodes().iter().map(peer_id).collect();
    for d in daemons {
        let own = peer_id(d.node());
        loop {
            let alive: Vec<String> = d
                .status(bins)
                .and_then(|s| s["peers"]["alive"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            if ids.iter().all(|id| *id == own || alive.contains(id)) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{}: peers not all alive within {JOIN_TIMEOUT:?} (alive: {alive:?})",
                d.node().name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_schedule_spans_the_skew_in_a_seeded_order() {
        let skew = Duration::from_secs(5);
        let s = StartSchedule::random(8, skew, 42);
        assert_eq!(s, StartSchedule::random(8, skew, 42));
        assert_eq!(s.offsets.iter().min(), Some(&Duration::ZERO));
        assert_eq!(s.offsets.iter().max(), Some(&skew));
        assert!(s.offsets.iter().all(|o| *o <= skew));
        let order = s.order();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..8).collect::<Vec<_>>());
        assert!(order.windows(2).all(|w| s.offsets[w[0]] <= s.offsets[w[1]]));
        // Another seed draws another order.
        assert_ne!(StartSchedule::random(8, skew, 43).order(), order);
    }

    #[test]
    fn simultaneous_and_tiny_schedules() {
        assert!(StartSchedule::simultaneous(3)
            .offsets
            .iter()
            .all(|o| o.is_zero()));
        let one = StartSchedule::random(1, Duration::from_secs(5), 1);
        assert_eq!(one.offsets, vec![Duration::ZERO]);
        let names = vec!["a".to_string(), "b".to_string()];
        let two = StartSchedule::random(2, Duration::from_secs(2), 9);
        let text = two.describe(&names);
        assert!(text.starts_with("seed 9: "), "{text}");
        assert!(
            text.contains("+0.00 s") && text.contains("+2.00 s"),
            "{text}"
        );
    }
}
