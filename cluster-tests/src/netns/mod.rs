//! Real multi-host clusters on one Linux machine: one network namespace per
//! host (N nodes plus one object-store host), joined by a bridge that lives in
//! its own "switch" namespace, with `tc tbf` bandwidth caps on every link.
//!
//! ```text
//!   ns <id>-n0        ns <id>-sw (switch)            ns <id>-s (store)
//!   eth0 10.231.c.10 ── n0 ─┐                 ┌── s ── eth0 10.231.c.1
//!   ns <id>-n1              ├──── br0 ────────┤
//!   eth0 10.231.c.11 ── n1 ─┘                 ...
//! ```
//!
//! Design decision: nothing is created in the root namespace. Both ends of
//! every veth pair are created directly inside their namespaces
//! (`ip -n SWITCH link add PORT type veth peer name eth0 netns HOST`) and the
//! bridge sits in the switch namespace, so cluster traffic can never reach the
//! machine's real interfaces, clusters of concurrent test runs can't see each
//! other, and deleting the namespaces removes every link. Host namespaces only
//! have a route for 10.231.0.0/16 (no default route), so nothing inside them
//! can leave the cluster either.
//!
//! Bandwidth: a host's upload is capped by a tbf qdisc on its `eth0` (egress),
//! its download by a tbf qdisc on its switch port (the port's egress towards
//! the host). Node links and the store's uplink get separate rates.
//!
//! The test process itself never changes namespace: it runs code inside a host
//! with [`in_netns`] (a dedicated, short-lived thread that `setns`es) and
//! starts programs there with [`Host::command`] (`setns` in a `pre_exec`
//! hook), so processes that daemonise themselves (the node agent) stay in the
//! host's namespace too. Cleanup kills every process whose network namespace
//! is one of the cluster's (`ip netns pids`) before deleting the namespaces;
//! it runs from `Drop` (so also after a panic) and, for runs that died
//! without unwinding, from [`cleanup_stale`] at the next [`Cluster::create`].
//!
//! Rooms: this file (layout: hosts, addresses, the [`Cluster`] value),
//! `links` (namespaces, bridge, veth pairs, `tc` caps, link changes),
//! `process` (running code and programs inside a host), `http` (a minimal
//! client for control planes), `teardown` (killing a namespace's processes,
//! removing namespaces, stale runs) and `availability` (whether this machine
//! can build clusters at all).

mod availability;
mod http;
mod links;
mod process;
mod teardown;

use std::ffi::{CString, OsStr};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use availability::{available_or_skip, check_available};
pub use http::{http_request, http_request_with, HttpResponse};
pub use process::{in_netns, HostProcess, ProcessOutput};
pub use teardown::{cleanup_stale, process_alive};
use teardown::{kill_netns_processes, netns_pids};

/// Every namespace this harness creates starts with this, followed by the
/// creating process's pid: `ossct-<pid>-<cluster>-<host>`.
pub const NAME_PREFIX: &str = "ossct-";
/// First two octets of every cluster address (a private range no real
/// network on CI uses); the third is the cluster index, the fourth the host.
pub const SUBNET: [u8; 2] = [10, 231];
/// Prefix length of the cluster subnet.
pub const PREFIX_LEN: u8 = 16;
/// Host number (last octet) of the object-store host.
pub const STORE_HOST: u8 = 1;
/// Host number of node 0; node i gets `FIRST_NODE_HOST + i`.
pub const FIRST_NODE_HOST: u8 = 10;
/// Most nodes one cluster can have (host numbers stay below 255).
pub const MAX_NODES: usize = 240;
/// The host-side interface name in every host namespace.
pub const HOST_IFACE: &str = "eth0";
/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// Poll interval while waiting for processes and ports.
const POLL: Duration = Duration::from_millis(20);

/// Clusters created by this process so far (gives unique names and subnets).
static NEXT_CLUSTER: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("network namespaces are not available here: {0}")]
    Unavailable(String),
    #[error("invalid cluster spec: {0}")]
    Spec(String),
    #[error("{0} timed out after {1:?}")]
    Timeout(String, Duration),
    #[error("bad HTTP response: {0}")]
    Http(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

/// A link rate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub u64);

impl Rate {
    pub const fn mbit(m: u64) -> Self {
        Rate(m * 1_000_000)
    }
    pub const fn gbit(g: u64) -> Self {
        Rate(g * 1_000_000_000)
    }
    pub fn bits_per_sec(self) -> u64 {
        self.0
    }
    pub fn bytes_per_sec(self) -> f64 {
        self.0 as f64 / 8.0
    }
    /// Seconds `bytes` take at this rate (payload only; framing adds ~5 %).
    pub fn seconds_for(self, bytes: u64) -> f64 {
        bytes as f64 / self.bytes_per_sec()
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of node hosts (besides the store host).
    pub nodes: usize,
    /// Cap of every node's link, each direction; `None` = uncapped.
    pub node_link: Option<Rate>,
    /// Cap of the store host's uplink, each direction; `None` = uncapped.
    pub store_uplink: Option<Rate>,
}

impl ClusterSpec {
    /// `nodes` nodes, every link (node links and the store uplink) capped at
    /// `rate`.
    pub fn capped(nodes: usize, rate: Rate) -> ClusterSpec {
        ClusterSpec {
            nodes,
            node_link: Some(rate),
            store_uplink: Some(rate),
        }
    }

    /// `nodes` nodes, no link capped.
    pub fn uncapped(nodes: usize) -> ClusterSpec {
        ClusterSpec {
            nodes,
            node_link: None,
            store_uplink: None,
        }
    }
}

/// One host of a cluster: a network namespace with `eth0` on the bridge.
#[derive(Debug, Clone)]
pub struct Host {
    /// `store` or `node<i>`.
    pub name: String,
    /// The network namespace (`ip netns` name).
    pub netns: String,
    /// The address of `eth0`.
    pub ip: Ipv4Addr,
    /// Namespace of the switch this host is plugged into.
    switch_netns: String,
    /// The host's port on the bridge (in the switch namespace).
    switch_port: String,
}

impl Host {
    /// `ip:port` on this host.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.ip, port))
    }

    /// A command that runs `program` inside this host's network namespace
    /// (everything else — filesystem, pids, users — is shared with the test).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let path = CString::new(netns_path(&self.netns).as_os_str().as_bytes())
            .expect("namespace names contain no NUL");
        // SAFETY: the hook runs in the forked child before exec and only makes
        // async-signal-safe system calls (open, setns, close) on memory
        // allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let rc = libc::setns(fd, libc::CLONE_NEWNET);
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if rc != 0 {
                    return Err(err);
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs `f` inside this host's network namespace (see [`in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_netns(&self.netns, f)
    }

    /// Spawns `cmd` (from [`Host::command`]) with its output collected.
    pub fn spawn(&self, cmd: Command) -> Result<HostProcess> {
        HostProcess::spawn(format!("{}:{}", self.name, program_name(&cmd)), cmd)
    }

    /// Waits until something accepts TCP connections on `addr` (from inside this host).
    pub fn wait_for_port(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        self.run(|| {
            let deadline = Instant::now() + timeout;
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(NetnsError::Timeout(format!("waiting for {addr}"), timeout));
                }
                std::thread::sleep(POLL);
            }
        })?
    }

    /// Pids of the processes inside this host's namespace.
    pub fn pids(&self) -> Result<Vec<i32>> {
        netns_pids(&self.netns)
    }

    /// SIGKILLs every process inside this host's namespace (node agents that
    /// daemonised themselves included) and waits until they are gone.
    /// Returns how many were killed.
    pub fn kill_all(&self) -> Result<usize> {
        kill_netns_processes(&self.netns)
    }
}

/// A cluster of hosts; everything it created goes away on drop.
pub struct Cluster {
    id: String,
    index: u8,
    switch: String,
    store: Host,
    nodes: Vec<Host>,
    /// Namespaces created so far (all removed by `Drop`).
    namespaces: Vec<String>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("store", &self.store.ip)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Cluster {
    /// Builds the namespaces, bridge, links, addresses and caps of `spec`.
    /// Removes leftovers of dead test runs first.
    pub fn create(spec: &ClusterSpec) -> Result<Cluster> {
        if spec.nodes == 0 || spec.nodes > MAX_NODES {
            return Err(NetnsError::Spec(format!(
                "nodes must be 1..={MAX_NODES}, got {}",
                spec.nodes
            )));
        }
        cleanup_stale();
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{NAME_PREFIX}{}-{n}", std::process::id());
        // Clusters are isolated by their bridges; distinct subnets only make
        // addresses in logs unambiguous.
        let index = (n % 256) as u8;
        let switch = format!("{id}-sw");
        let host = |name: String, suffix: &str, port: &str, last: u8| Host {
            name,
            netns: format!("{id}-{suffix}"),
            ip: Ipv4Addr::new(SUBNET[0], SUBNET[1], index, last),
            switch_netns: switch.clone(),
            switch_port: port.to_string(),
        };
        let store = host("store".into(), "s", "s", STORE_HOST);
        let nodes = (0..spec.nodes)
            .map(|i| {
                let last = FIRST_NODE_HOST + i as u8;
                host(format!("node{i}"), &format!("n{i}"), &format!("n{i}"), last)
            })
            .collect();
        let mut cluster = Cluster {
            id,
            index,
            switch,
            store,
            nodes,
            namespaces: Vec::new(),
        };
        // On error, `cluster` drops here and removes what was built.
        cluster.build(spec)?;
        Ok(cluster)
    }

    /// The unique id (`ossct-<pid>-<n>`) all namespace names start with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The third octet of this cluster's addresses.
    pub fn index(&self) -> u8 {
        self.index
    }

    pub fn store(&self) -> &Host {
        &self.store
    }

    pub fn nodes(&self) -> &[Host] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &Host {
        &self.nodes[i]
    }

    /// The switch namespace (holds the bridge and the host ports).
    pub fn switch_netns(&self) -> &str {
        &self.switch
    }

    /// Every host, store first.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.store).chain(self.nodes.iter())
    }
}

fn netns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(ns)
}

fn program_name(cmd: &Command) -> String {
    std::path::Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_convert() {
        assert_eq!(Rate::mbit(100).bits_per_sec(), 100_000_000);
        assert_eq!(Rate::gbit(1).bytes_per_sec(), 125_000_000.0);
        assert!((Rate::mbit(80).seconds_for(10_000_000) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn rejects_empty_and_oversized_specs() {
        for nodes in [0, MAX_NODES + 1] {
            let spec = ClusterSpec {
                nodes,
                node_link: None,
                store_uplink: None,
            };
            assert!(matches!(Cluster::create(&spec), Err(NetnsError::Spec(_))));
        }
    }
}
