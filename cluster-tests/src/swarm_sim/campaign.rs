//! The measured points the simulator is checked against, and the runs
//! behind the published predictions (`ossc-swarm-sim calibrate` /
//! `predict`).
//!
//! Design decisions:
//! - **One calibrated constant**, as the fluid model: `t0` (agent start-up,
//!   listing, mirroring) = the measured one-node time − the simulated one
//!   with `t0 = 0`. Every other input is the code's constant or the lab's
//!   setting.
//! - **Placement is a draw.** The measured runs had one ring each (cluster
//!   address and ETags differ per run), so each point is simulated over
//!   several seeds and reported as median and range; a measurement inside
//!   the range is as close as a one-round measurement can be checked.
//!   Where the measurement recorded each node's store bytes (§3), the ring
//!   whose busiest owner is closest to the measured one is reported too:
//!   the same placement, as near as the seeds give.
//! - Ratios where the source gives ratios: the 8- and 16-node labs report
//!   times relative to their own one-node run, so the simulated ratio
//!   (N nodes ÷ one node, same links) is compared.

use std::time::Instant;

use serde_json::{json, Value};

use super::report::{secs, Outcome};
use super::run;
use super::scenario::{HaveMode, Membership, Scenario, Start};

/// One measured point.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: &'static str,
    pub nodes: usize,
    /// Seconds, or a ratio to one node when `ratio` is set.
    pub time: f64,
    pub ratio: bool,
    pub egress: f64,
    pub fallbacks: bool,
    /// The busiest node's store bytes in the measured run, if recorded.
    pub busiest_store: Option<f64>,
    /// How unequal TCP shares are assumed to be (see `Timers::unfairness`).
    pub unfairness: f64,
}

/// The measured points (docs/benchmarks.md §3 and the two labs).
pub fn measured() -> Vec<(Measured, Scenario)> {
    let bench = |n| Scenario::bench266(n, 300.0);
    let point = |name, nodes, time, ratio, egress, busiest_mb: Option<f64>| Measured {
        name,
        nodes,
        time,
        ratio,
        egress,
        fallbacks: egress > 1.01,
        busiest_store: busiest_mb.map(|mb| mb * 1e6),
        unfairness: 1.0,
    };
    let lab134 = |u: f64| {
        let mut m = point(
            "16-node lab, 100 Mbit/s, 134 MB",
            16,
            4.71,
            true,
            3.90,
            None,
        );
        m.unfairness = u;
        (m, Scenario::lab(16, 134_000_000, 4, 100.0))
    };
    let lab61 = |u: f64| {
        let mut m = point("16-node lab, 100 Mbit/s, 61 MB", 16, 16.8, true, 10.9, None);
        m.unfairness = u;
        (m, Scenario::lab(16, 61_000_000, 3, 100.0))
    };
    vec![
        (
            point("§3, 300 Mbit/s", 1, 7.84, false, 1.000, Some(266.0)),
            bench(1),
        ),
        (
            point("§3, 300 Mbit/s", 2, 9.94, false, 1.001, Some(149.0)),
            bench(2),
        ),
        (
            point("§3, 300 Mbit/s", 4, 13.80, false, 1.002, Some(118.0)),
            bench(4),
        ),
        (
            point("§3, 300 Mbit/s", 6, 19.86, false, 1.004, Some(100.0)),
            bench(6),
        ),
        (
            point("8-node lab, 200 Mbit/s", 8, 2.21, true, 1.002, None),
            lab_store(Scenario::bench266(8, 200.0)),
        ),
        lab134(1.0),
        lab61(1.0),
        lab134(3.0),
        lab61(3.0),
    ]
}

/// The third-party S3 server of the labs (slower to first byte).
fn lab_store(mut sc: Scenario) -> Scenario {
    sc.store_latency = 0.01;
    sc
}

/// Runs `sc` once per seed 1..=`seeds`, fastest first.
pub fn each_seed(sc: &Scenario, seeds: u64) -> Vec<Outcome> {
    let mut outs: Vec<Outcome> = (1..=seeds.max(1))
        .map(|seed| run(&Scenario { seed, ..sc.clone() }))
        .collect();
    outs.sort_by(|a, b| a.time_all.total_cmp(&b.time_all));
    outs
}

/// Runs `sc` once per seed; (median outcome, min time, max time).
pub fn over_seeds(sc: &Scenario, seeds: u64) -> (Outcome, f64, f64) {
    let mut outs = each_seed(sc, seeds);
    let (lo, hi) = (outs[0].time_all, outs[outs.len() - 1].time_all);
    (outs.swap_remove(outs.len() / 2), lo, hi)
}

/// The run whose busiest node took the nearest to `busiest` store bytes.
fn matching_ring(outs: &[Outcome], busiest: f64) -> &Outcome {
    let store_max = |o: &Outcome| o.per_node.iter().map(|n| n.recv_store).fold(0.0, f64::max);
    outs.iter()
        .min_by(|a, b| {
            (store_max(a) - busiest)
                .abs()
                .total_cmp(&(store_max(b) - busiest).abs())
        })
        .expect("at least one run")
}

/// `t0` that makes the one-node run of `sc` take `measured` seconds.
pub fn calibrate_t0(sc: &Scenario, measured: f64) -> f64 {
    let zero = run(&Scenario {
        nodes: 1,
        t0: 0.0,
        ..sc.clone()
    });
    measured - zero.time_all
}

/// The calibration table (markdown) and its JSON.
pub fn calibration(seeds: u64) -> (String, Value) {
    let points = measured();
    let t0 = calibrate_t0(&points[0].1, points[0].0.time);
    let mut md = format!(
        "t0 = {t0:.2} s (measured one-node time {} s − simulated with t0 = 0)\n\n\
         | setup | N | measured | simulated: median of {seeds} rings (range) | error | ring with the measured busiest owner: time (error) | egress measured / simulated | fallbacks (stalls, NOT_FOUND, waits) |\n\
         |---|---|---|---|---|---|---|---|\n",
        points[0].0.time
    );
    let mut rows = Vec::new();
    for (m, sc) in points {
        let mut sc = Scenario { t0, ..sc };
        sc.timers.unfairness = m.unfairness;
        let outs = each_seed(&sc, seeds);
        let o = &outs[outs.len() / 2];
        let one = if m.ratio {
            run(&Scenario {
                nodes: 1,
                ..sc.clone()
            })
            .time_all
        } else {
            1.0
        };
        let unit = if m.ratio { "×" } else { " s" };
        let (sim, lo, hi) = (
            o.time_all / one,
            outs[0].time_all / one,
            outs[outs.len() - 1].time_all / one,
        );
        let err = sim / m.time - 1.0;
        let matched = m
            .busiest_store
            .map(|b| matching_ring(&outs, b).time_all / one);
        let name = if m.unfairness > 1.0 {
            format!("{}, unfairness {}", m.name, m.unfairness)
        } else {
            m.name.to_string()
        };
        md += &format!(
            "| {name} | {} | {}{unit} | {sim:.2}{unit} ({lo:.2}–{hi:.2}) | {:+.0} % | {} | {:.3} / {:.3} | {} ({}, {}, {}) |\n",
            m.nodes,
            m.time,
            100.0 * err,
            matched.map_or("–".into(), |t| format!("{t:.2}{unit} ({:+.0} %)", 100.0 * (t / m.time - 1.0))),
            m.egress,
            o.egress_over_model,
            o.fallbacks,
            o.stalls,
            o.not_found,
            o.wait_timeouts,
        );
        rows.push(json!({
            "setup": name, "nodes": m.nodes, "measured": m.time, "ratio": m.ratio,
            "simulated": sim, "range": [lo, hi], "error": err, "ring_matched": matched,
            "measured_egress": m.egress, "outcome": o.to_json(false),
        }));
    }
    (md, json!({"t0": t0, "points": rows}))
}

/// CPU seconds this process has run (`/proc/self/schedstat`; wall-clock
/// seconds since `started` where that is missing): what a run costs on a
/// busy machine.
pub fn cpu_seconds(started: Instant) -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(|| started.elapsed().as_secs_f64(), |ns| ns / 1e9)
}

/// A policy set compared in the predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Today's code: owner-only pulls, all-to-all heartbeats, Have rounds.
    Today,
    /// Today's, except that a request opens the object at its source.
    TodayOpenOnRequest,
    /// The relay design (`Scenario::with_relay`).
    Relay,
    /// The relay design with today's all-to-all heartbeats (have-maps on
    /// them).
    RelayHeartbeats,
    /// The relay design with today's heartbeats and Have rounds.
    RelayAllToAll,
}

impl Design {
    pub fn apply(self, sc: &Scenario) -> Scenario {
        match self {
            Design::Today => sc.clone(),
            Design::TodayOpenOnRequest => Scenario {
                open_on_request: true,
                ..sc.clone()
            },
            Design::Relay => sc.clone().with_relay(),
            Design::RelayHeartbeats => Scenario {
                membership: Membership::AllToAll,
                ..sc.clone().with_relay()
            },
            Design::RelayAllToAll => Scenario {
                membership: Membership::AllToAll,
                have: HaveMode::Rounds,
                ..sc.clone().with_relay()
            },
        }
    }
}

/// One published prediction table.
#[derive(Debug, Clone)]
pub struct Setup {
    pub key: &'static str,
    pub title: &'static str,
    pub base: Scenario,
    pub nodes: Vec<usize>,
    pub designs: Vec<Design>,
}

/// One prediction table: each design at each N, against one node.
pub fn predictions(setup: &Setup, seeds: u64) -> (String, Value) {
    let mut md = format!(
        "{}\n",
        Outcome::header(&["× one node", "CPU s to simulate"])
    );
    let mut rows = Vec::new();
    let one = run(&Scenario {
        nodes: 1,
        ..setup.base.clone()
    });
    md += &format!("{} 1.00 | |\n", one.row());
    for &n in &setup.nodes {
        for design in &setup.designs {
            let sc = design.apply(&Scenario {
                nodes: n,
                ..setup.base.clone()
            });
            let started = Instant::now();
            let cpu = cpu_seconds(started);
            let (o, _, _) = over_seeds(&sc, seeds);
            let wall = (cpu_seconds(started) - cpu) / seeds.max(1) as f64;
            md += &format!(
                "{} {:.2} | {} s |\n",
                o.row(),
                o.time_all / one.time_all,
                secs(wall)
            );
            let mut j = o.to_json(false);
            j["over_one_node"] = json!(o.time_all / one.time_all);
            j["simulation_cpu_s"] = json!(wall);
            rows.push(j);
        }
    }
    (md, json!({"one_node": one.to_json(false), "runs": rows}))
}

/// The published predictions.
pub fn prediction_setups(t0: f64) -> Vec<Setup> {
    let mut bench = Scenario::bench266(1, 300.0);
    bench.t0 = t0;
    // Real nodes: each its own cores.
    bench.cpu.shared_cores = 0.0;
    let mut prod = Scenario::prod140(1);
    prod.t0 = t0;
    let both = vec![Design::Today, Design::Relay];
    vec![
        Setup {
            key: "a",
            title: "(a) 266 MB benchmark model, 300 Mbit/s links and store uplink",
            base: bench.clone(),
            nodes: vec![32, 256, 1024],
            designs: both.clone(),
        },
        Setup {
            key: "b",
            title: "(b) 140 GB in 30 files, 25 Gbit/s links and store account",
            base: prod.clone(),
            nodes: vec![32, 256, 1024],
            designs: both.clone(),
        },
        Setup {
            key: "b-skew",
            title: "(b) with nodes starting 0–5 s apart",
            base: Scenario { skew: 5.0, ..prod },
            nodes: vec![256],
            designs: both,
        },
        Setup {
            key: "a-lazy",
            title: "(a) with lazy owners (bucket-root OSS_PATH, agents up before the job), jobs starting 0–5 s apart",
            base: Scenario {
                start: Start::Lazy,
                skew: 5.0,
                ..bench.clone()
            },
            nodes: vec![32, 256],
            designs: vec![Design::Today, Design::TodayOpenOnRequest, Design::Relay],
        },
        Setup {
            key: "a-membership",
            title: "(a) relay at 256 and 1024 nodes: gossip, all-to-all heartbeats, heartbeats and Have rounds",
            base: bench,
            nodes: vec![256, 1024],
            designs: vec![Design::Relay, Design::RelayHeartbeats, Design::RelayAllToAll],
        },
    ]
}
