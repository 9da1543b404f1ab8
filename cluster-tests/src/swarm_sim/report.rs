//! What a run produced, per node and in sum, as a table row or JSON.

use serde_json::{json, Value};

use super::scenario::{HaveMode, Membership, Policy, Scenario, Start};

/// One node's figures (bytes, counts, and when its consumer finished).
#[derive(Debug, Clone, Default)]
pub struct NodeOutcome {
    pub done: f64,
    /// Bytes uploaded to peers.
    pub sent: f64,
    pub recv_store: f64,
    pub recv_peer: f64,
    /// Bytes received and then dropped (abandoned pulls).
    pub wasted: f64,
    /// Chunks fetched from the store after a peer was tried.
    pub fallbacks: u32,
    pub stalls: u32,
    pub not_found: u32,
    pub wait_timeouts: u32,
}

/// One run's result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub label: String,
    pub nodes: usize,
    /// Large-file bytes (what every node must receive).
    pub large_bytes: u64,
    /// Model bytes, small files included (the egress denominator).
    pub model_bytes: u64,
    /// When the last node finished (infinite if one never did).
    pub time_all: f64,
    pub time_min: f64,
    pub time_p50: f64,
    pub time_p90: f64,
    pub egress_over_model: f64,
    /// Store egress for the large files over their size (every node also
    /// downloads the small files itself).
    pub large_egress_over_large: f64,
    /// Busiest uploader's bytes over the mean upload.
    pub upload_max_over_mean: f64,
    pub fallbacks: u32,
    pub stalls: u32,
    pub not_found: u32,
    pub wait_timeouts: u32,
    /// Largest share of a link that control traffic took.
    pub max_control_share: f64,
    pub events: u64,
    pub per_node: Vec<NodeOutcome>,
}

/// A scenario's policies in a few words ("relay+gossip+piggyback").
pub fn label(sc: &Scenario) -> String {
    let policy = match sc.policy {
        Policy::OwnerOnly => "owner-only",
        Policy::Relay => "relay",
    };
    let membership = match sc.membership {
        Membership::AllToAll => "all-to-all",
        Membership::Gossip => "gossip",
    };
    let have = match sc.have {
        HaveMode::Rounds => "have-rounds",
        HaveMode::Piggyback => "have-piggyback",
    };
    let start = match (sc.start, sc.open_on_request) {
        (Start::Eager, false) => "",
        (Start::Eager, true) => "+open-on-request",
        (Start::Lazy, false) => "+lazy",
        (Start::Lazy, true) => "+lazy+open-on-request",
    };
    format!("{policy}+{membership}+{have}{start}")
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

impl Outcome {
    pub fn new(
        sc: &Scenario,
        large_bytes: u64,
        egress: f64,
        events: u64,
        max_control_share: f64,
        per_node: Vec<NodeOutcome>,
    ) -> Outcome {
        let mut times: Vec<f64> = per_node.iter().map(|n| n.done).collect();
        times.sort_by(f64::total_cmp);
        let sent: Vec<f64> = per_node.iter().map(|n| n.sent).collect();
        let mean = sent.iter().sum::<f64>() / sent.len() as f64;
        let max = sent.iter().cloned().fold(0.0, f64::max);
        let sum = |f: fn(&NodeOutcome) -> u32| per_node.iter().map(f).sum::<u32>();
        Outcome {
            label: label(sc),
            nodes: sc.nodes,
            large_bytes,
            model_bytes: sc.model_bytes(),
            time_all: *times.last().expect("at least one node"),
            time_min: times[0],
            time_p50: quantile(&times, 0.5),
            time_p90: quantile(&times, 0.9),
            egress_over_model: egress / sc.model_bytes() as f64,
            large_egress_over_large: (egress - (sc.nodes as u64 * sc.small_bytes) as f64)
                / large_bytes as f64,
            upload_max_over_mean: if mean > 0.0 { max / mean } else { 0.0 },
            fallbacks: sum(|n| n.fallbacks),
            stalls: sum(|n| n.stalls),
            not_found: sum(|n| n.not_found),
            wait_timeouts: sum(|n| n.wait_timeouts),
            max_control_share,
            events,
            per_node,
        }
    }

    pub fn to_json(&self, per_node: bool) -> Value {
        let mut v = json!({
            "policy": self.label,
            "nodes": self.nodes,
            "model_bytes": self.model_bytes,
            "time_all_s": self.time_all,
            "time_min_s": self.time_min,
            "time_p50_s": self.time_p50,
            "time_p90_s": self.time_p90,
            "egress_over_model": self.egress_over_model,
            "large_egress_over_large": self.large_egress_over_large,
            "upload_max_over_mean": self.upload_max_over_mean,
            "store_fallbacks": self.fallbacks,
            "stalls": self.stalls,
            "not_found": self.not_found,
            "wait_timeouts": self.wait_timeouts,
            "max_control_share": self.max_control_share,
            "events": self.events,
        });
        if per_node {
            v["per_node"] = self
                .per_node
                .iter()
                .map(|n| {
                    json!({
                        "done_s": n.done,
                        "sent": n.sent,
                        "recv_store": n.recv_store,
                        "recv_peer": n.recv_peer,
                        "wasted": n.wasted,
                        "fallbacks": n.fallbacks,
                    })
                })
                .collect();
        }
        v
    }

    /// Table header matching [`Outcome::row`], with `extra` columns after.
    pub fn header(extra: &[&str]) -> String {
        let mut names = vec![
            "N",
            "policy",
            "all loaded s",
            "per node min / p50 / p90 s",
            "egress / model (large files)",
            "busiest upload / mean",
            "fallbacks (stalls, NOT_FOUND, waits)",
            "control share",
        ];
        names.extend_from_slice(extra);
        format!("| {} |\n|{}", names.join(" | "), "---|".repeat(names.len()))
    }

    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} / {} / {} | {:.3} ({:.3}) | {:.2} | {} ({}, {}, {}) | {:.1} % |",
            self.nodes,
            self.label,
            secs(self.time_all),
            secs(self.time_min),
            secs(self.time_p50),
            secs(self.time_p90),
            self.egress_over_model,
            self.large_egress_over_large,
            self.upload_max_over_mean,
            self.fallbacks,
            self.stalls,
            self.not_found,
            self.wait_timeouts,
            100.0 * self.max_control_share,
        )
    }
}

/// Seconds with three significant digits (∞ for a node that never finished).
pub fn secs(t: f64) -> String {
    if !t.is_finite() {
        "∞".into()
    } else if t < 10.0 {
        format!("{t:.2}")
    } else if t < 100.0 {
        format!("{t:.1}")
    } else {
        format!("{t:.0}")
    }
}
