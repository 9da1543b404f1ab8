//! A cluster's network: the switch namespace with its bridge, one namespace
//! per host with a veth pair into the bridge, addresses, and `tc tbf` caps on
//! both ends of every link; later cap changes and partitions.

use std::process::{Command, Stdio};

use super::{Cluster, ClusterSpec, Host, NetnsError, Rate, Result, HOST_IFACE, PREFIX_LEN};

/// The bridge's name inside the switch namespace.
const BRIDGE: &str = "br0";
/// tbf: the bucket holds this much time's worth of tokens (large enough for the
/// kernel timer granularity at high rates; small enough that the cap is felt
/// within a few milliseconds).
const TBF_BURST_SECONDS: f64 = 0.004;
/// tbf: the bucket is never smaller than this (one 64 KiB GSO super-packet
/// must fit, or tbf has to segment every packet).
const TBF_MIN_BURST_BYTES: u64 = 64 * 1024;
/// tbf: longest time a packet may wait in the queue (sets the queue length).
const TBF_LATENCY_MS: u32 = 50;

impl Cluster {
    pub(super) fn build(&mut self, spec: &ClusterSpec) -> Result<()> {
        let sw = self.switch.clone();
        ip(&format!("netns add {sw}"))?;
        self.namespaces.push(sw.clone());
        ip(&format!("-n {sw} link set lo up"))?;
        ip(&format!(
            "-n {sw} link add {BRIDGE} type bridge forward_delay 0"
        ))?;
        ip(&format!("-n {sw} link set {BRIDGE} up"))?;
        let store = (self.store.clone(), spec.store_uplink);
        let nodes = self.nodes.iter().map(|h| (h.clone(), spec.node_link));
        let hosts: Vec<(Host, Option<Rate>)> = std::iter::once(store).chain(nodes).collect();
        for (host, rate) in hosts {
            let (ns, port, addr) = (&host.netns, &host.switch_port, host.ip);
            ip(&format!("netns add {ns}"))?;
            self.namespaces.push(ns.clone());
            ip(&format!("-n {ns} link set lo up"))?;
            ip(&format!(
                "-n {sw} link add {port} type veth peer name {HOST_IFACE} netns {ns}"
            ))?;
            ip(&format!("-n {sw} link set {port} master {BRIDGE} up"))?;
            ip(&format!(
                "-n {ns} addr add {addr}/{PREFIX_LEN} dev {HOST_IFACE}"
            ))?;
            ip(&format!("-n {ns} link set {HOST_IFACE} up"))?;
            if let Some(rate) = rate {
                set_tbf(ns, HOST_IFACE, rate, false)?;
                set_tbf(&sw, port, rate, false)?;
            }
        }
        Ok(())
    }

    /// Changes (or removes, with `None`) the cap of `host`'s link, both directions.
    pub fn set_link_rate(&self, host: &Host, rate: Option<Rate>) -> Result<()> {
        for (ns, dev) in [
            (host.netns.as_str(), HOST_IFACE),
            (host.switch_netns.as_str(), host.switch_port.as_str()),
        ] {
            match rate {
                Some(rate) => set_tbf(ns, dev, rate, true)?,
                None => {
                    // Deleting the default qdisc fails; that means "no cap" already.
                    let _ = run_tool("tc", &format!("-n {ns} qdisc del dev {dev} root"));
                }
            }
        }
        Ok(())
    }

    /// Takes `host`'s link down or up (a network partition of that host).
    pub fn set_link_up(&self, host: &Host, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&format!(
            "-n {} link set {} {state}",
            host.switch_netns, host.switch_port
        ))?;
        Ok(())
    }
}

/// Installs (or with `change`, replaces) a tbf qdisc capping `dev`'s egress.
pub(super) fn set_tbf(ns: &str, dev: &str, rate: Rate, change: bool) -> Result<()> {
    let burst = ((rate.bytes_per_sec() * TBF_BURST_SECONDS) as u64).max(TBF_MIN_BURST_BYTES);
    let verb = if change { "replace" } else { "add" };
    let bits = rate.bits_per_sec();
    run_tool(
        "tc",
        &format!(
            "-n {ns} qdisc {verb} dev {dev} root tbf rate {bits}bit burst {burst} latency {TBF_LATENCY_MS}ms"
        ),
    )?;
    Ok(())
}

/// Runs `ip ARGS` (whitespace-separated; every name this harness uses is a
/// single word), returning stdout.
pub(super) fn ip(args: &str) -> Result<String> {
    run_tool("ip", args)
}

pub(super) fn run_tool(tool: &str, args: &str) -> Result<String> {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new(tool)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError::Command {
            cmd: format!("{tool} {}", args.join(" ")),
            status: "not started".to_string(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            cmd: format!("{tool} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
