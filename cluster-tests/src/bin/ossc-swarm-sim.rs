//! Event-level scaling simulator of the peer layer (see
//! `ossc_cluster_tests::swarm_sim` and docs/benchmarks.md).
//!
//! ```text
//! ossc-swarm-sim run [--preset bench266|prod140|lab134|lab61] [--nodes 1,32,256] [--relay]
//!                    [--policy owner-only|relay] [--membership all-to-all|gossip]
//!                    [--have rounds|piggyback] [--start eager|lazy] [--open-on-request]
//!                    [--mbit 300 (labs: 100)] [--skew 0] [--t0 0.3] [--piece-mib 1] [--fanout 2]
//!                    [--window-mib 512] [--window-min-files 1] [--store-conc 32] [--pull-conc 16]
//!                    [--store-latency 0.002] [--unfairness 1] [--startup-wait 5] [--shared-cores 2]
//!                    [--verify-gbps 0.64] [--consume-gbps 0.64]
//!                    [--seeds 1] [--seed 1] [--per-node] [--json FILE]
//! ossc-swarm-sim calibrate [--seeds 10] [--json FILE]
//! ossc-swarm-sim predict [--seeds 1] [--nodes 32,256,1024] [--only a|b|b-skew|a-lazy|a-membership]
//!                        [--json FILE]
//! ```

use std::time::Instant;

use anyhow::{bail, Context, Result};
use ossc_cluster_tests::swarm_sim::campaign;
use ossc_cluster_tests::swarm_sim::report::Outcome;
use ossc_cluster_tests::swarm_sim::scenario::{HaveMode, Membership, Policy, Scenario, Start, MIB};
use serde_json::{json, Value};

const USAGE: &str = "usage: ossc-swarm-sim run|calibrate|predict [options] (see the file's docs)";

/// Flags as (name, value) pairs; a flag without a value gets "".
fn flags(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let Some(name) = args[i].strip_prefix("--") else {
            bail!("unexpected argument {:?}\n{USAGE}", args[i]);
        };
        let takes_value = !matches!(name, "relay" | "open-on-request" | "per-node");
        let value = if takes_value {
            i += 1;
            args.get(i)
                .with_context(|| format!("--{name} needs a value"))?
                .clone()
        } else {
            String::new()
        };
        out.push((name.to_string(), value));
        i += 1;
    }
    Ok(out)
}

fn list(v: &str) -> Result<Vec<usize>> {
    v.split(',')
        .map(|x| x.trim().parse().context("a node count"))
        .collect()
}

fn write_json(path: Option<&String>, v: &Value) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)?)
            .with_context(|| format!("writing {p}"))?;
        eprintln!("wrote {p}");
    }
    Ok(())
}

fn run_cmd(args: &[(String, String)]) -> Result<()> {
    let get = |k: &str| {
        args.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    let preset = get("preset").unwrap_or_else(|| "bench266".into());
    // The labs' links ran at 100 Mbit/s, the benchmark's at 300.
    let default_mbit = if preset.starts_with("lab") {
        100.0
    } else {
        300.0
    };
    let mbit: f64 = get("mbit").map_or(Ok(default_mbit), |v| v.parse())?;
    let mut sc = match preset.as_str() {
        "bench266" => Scenario::bench266(1, mbit),
        "prod140" => Scenario::prod140(1),
        "lab134" => Scenario::lab(1, 134_000_000, 4, mbit),
        "lab61" => Scenario::lab(1, 61_000_000, 3, mbit),
        p => bail!("unknown preset {p}"),
    };
    let nodes = list(&get("nodes").unwrap_or_else(|| "1".into()))?;
    let seeds: u64 = get("seeds").map_or(Ok(1), |v| v.parse())?;
    for (name, v) in args {
        match name.as_str() {
            "relay" => sc = sc.with_relay(),
            "policy" => {
                sc.policy = match v.as_str() {
                    "owner-only" => Policy::OwnerOnly,
                    "relay" => Policy::Relay,
                    _ => bail!("--policy owner-only|relay"),
                }
            }
            "membership" => {
                sc.membership = match v.as_str() {
                    "all-to-all" => Membership::AllToAll,
                    "gossip" => Membership::Gossip,
                    _ => bail!("--membership all-to-all|gossip"),
                }
            }
            "have" => {
                sc.have = match v.as_str() {
                    "rounds" => HaveMode::Rounds,
                    "piggyback" => HaveMode::Piggyback,
                    _ => bail!("--have rounds|piggyback"),
                }
            }
            "start" => {
                sc.start = match v.as_str() {
                    "eager" => Start::Eager,
                    "lazy" => Start::Lazy,
                    _ => bail!("--start eager|lazy"),
                }
            }
            "open-on-request" => sc.open_on_request = true,
            "skew" => sc.skew = v.parse()?,
            "t0" => sc.t0 = v.parse()?,
            "piece-mib" => sc.piece = (v.parse::<f64>()? * MIB as f64) as u64,
            "fanout" => sc.fanout = v.parse()?,
            "seed" => sc.seed = v.parse()?,
            "shared-cores" => sc.cpu.shared_cores = v.parse()?,
            "verify-gbps" => sc.cpu.verify = v.parse::<f64>()? * 1e9,
            "consume-gbps" => sc.cpu.consume = v.parse::<f64>()? * 1e9,
            "window-mib" => sc.window = (v.parse::<f64>()? * MIB as f64) as u64,
            "store-conc" => sc.store_conc = v.parse()?,
            "pull-conc" => sc.pull_conc = v.parse()?,
            "store-latency" => sc.store_latency = v.parse()?,
            "window-min-files" => sc.window_min_files = v.parse()?,
            "unfairness" => sc.timers.unfairness = v.parse()?,
            "startup-wait" => sc.timers.startup_wait = v.parse()?,
            "preset" | "mbit" | "nodes" | "seeds" | "json" | "per-node" => {}
            _ => bail!("unknown flag --{name}\n{USAGE}"),
        }
    }
    let per_node = get("per-node").is_some();
    println!(
        "{}",
        Outcome::header(&["range over seeds", "CPU s to simulate"])
    );
    let mut out = Vec::new();
    for n in nodes {
        let sc = Scenario {
            nodes: n,
            ..sc.clone()
        };
        let started = Instant::now();
        let cpu = campaign::cpu_seconds(started);
        let (o, lo, hi) = campaign::over_seeds(&sc, seeds);
        let wall = campaign::cpu_seconds(started) - cpu;
        println!("{} {lo:.2}–{hi:.2} s | {wall:.1} s |", o.row());
        let mut j = o.to_json(per_node);
        j["simulation_cpu_s"] = json!(wall);
        out.push(j);
    }
    write_json(get("json").as_ref(), &json!({"runs": out}))
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        bail!("{USAGE}");
    };
    let args = flags(&argv[1..])?;
    let get = |k: &str| {
        args.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    match cmd.as_str() {
        "run" => run_cmd(&args),
        "calibrate" => {
            let seeds = get("seeds").map_or(Ok(10), |v| v.parse())?;
            let (md, j) = campaign::calibration(seeds);
            println!("{md}");
            write_json(get("json").as_ref(), &j)
        }
        "predict" => {
            let seeds = get("seeds").map_or(Ok(1), |v| v.parse())?;
            let only = get("only");
            let points = campaign::measured();
            let t0 = campaign::calibrate_t0(&points[0].1, points[0].0.time);
            let mut all = Vec::new();
            for mut setup in campaign::prediction_setups(t0) {
                if only.as_deref().is_some_and(|o| o != setup.key) {
                    continue;
                }
                if let Some(ns) = get("nodes") {
                    setup.nodes = list(&ns)?;
                }
                println!("### {} (t0 = {t0:.2} s)\n", setup.title);
                let (md, j) = campaign::predictions(&setup, seeds);
                println!("{md}");
                all.push(json!({"setup": setup.title, "table": j}));
            }
            write_json(get("json").as_ref(), &json!({"t0": t0, "setups": all}))
        }
        _ => bail!("{USAGE}"),
    }
}
