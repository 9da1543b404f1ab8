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

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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
/// The bridge's name inside the switch namespace.
const BRIDGE: &str = "br0";
/// Where `ip netns` keeps its namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// tbf: the bucket holds this much time's worth of tokens (large enough for the
/// kernel timer granularity at high rates; small enough that the cap is felt
/// within a few milliseconds).
const TBF_BURST_SECONDS: f64 = 0.004;
/// tbf: the bucket is never smaller than this (one 64 KiB GSO super-packet
/// must fit, or tbf has to segment every packet).
const TBF_MIN_BURST_BYTES: u64 = 64 * 1024;
/// tbf: longest time a packet may wait in the queue (sets the queue length).
const TBF_LATENCY_MS: u32 = 50;
/// How long cleanup waits for killed processes to leave a namespace.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Poll interval while waiting for processes and ports.
const POLL: Duration = Duration::from_millis(20);
/// After a process exits, how long to wait for its output pipes to close
/// (a daemon it started might keep them open).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Connect/read timeout of [`http_request`].
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

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

    fn build(&mut self, spec: &ClusterSpec) -> Result<()> {
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

    /// Every host, store first.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.store).chain(self.nodes.iter())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Hosts first (killing processes), the switch last.
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = remove_netns(ns) {
                eprintln!("netns cleanup: {ns}: {e}");
            }
        }
    }
}

/// Installs (or with `change`, replaces) a tbf qdisc capping `dev`'s egress.
fn set_tbf(ns: &str, dev: &str, rate: Rate, change: bool) -> Result<()> {
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

/// Runs `ip ARGS` (whitespace-separated; every name this harness uses is a
/// single word), returning stdout.
fn ip(args: &str) -> Result<String> {
    run_tool("ip", args)
}

fn run_tool(tool: &str, args: &str) -> Result<String> {
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

/// Pids whose network namespace is `ns` (our own process never counts).
fn netns_pids(ns: &str) -> Result<Vec<i32>> {
    let me = std::process::id() as i32;
    Ok(ip(&format!("netns pids {ns}"))?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != me)
        .collect())
}

fn kill_netns_processes(ns: &str) -> Result<usize> {
    let pids = netns_pids(ns)?;
    for &pid in &pids {
        // SAFETY: kill(2) on a pid that `ip netns pids` just reported as living
        // in a namespace this harness created; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + KILL_WAIT;
    while !netns_pids(ns)?.is_empty() {
        if Instant::now() >= deadline {
            return Err(NetnsError::Timeout(
                format!("killing processes in {ns}"),
                KILL_WAIT,
            ));
        }
        std::thread::sleep(POLL);
    }
    Ok(pids.len())
}

fn remove_netns(ns: &str) -> Result<()> {
    if !netns_path(ns).exists() {
        return Ok(());
    }
    let killed = kill_netns_processes(ns);
    ip(&format!("netns del {ns}"))?;
    killed.map(|_| ())
}

/// Removes namespaces (and their processes) left by test runs whose process
/// is gone (killed without unwinding). Returns how many were removed.
pub fn cleanup_stale() -> usize {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        match remove_netns(&name) {
            Ok(()) => removed += 1,
            Err(e) => eprintln!("netns stale cleanup: {name}: {e}"),
        }
    }
    removed
}

/// Whether `pid` is a running process (a zombie is a dead run too).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Whether this process can build clusters: root, and `ip netns add` works.
/// The probe runs once per process (tests calling this concurrently share it).
pub fn check_available() -> Result<()> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(probe)
        .clone()
        .map_err(NetnsError::Unavailable)
}

/// Why clusters can't be built here, if they can't.
fn probe() -> Result<(), String> {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
    let probe = format!("{NAME_PREFIX}{}-{n}-probe", std::process::id());
    ip(&format!("netns add {probe}")).map_err(|e| e.to_string())?;
    // Everything a cluster needs: veth pairs, bridges and tbf (kernel modules
    // that a stripped-down kernel may lack).
    let result = (|| -> Result<()> {
        ip(&format!("-n {probe} link add p0 type veth peer name p1"))?;
        ip(&format!("-n {probe} link add b0 type bridge"))?;
        set_tbf(&probe, "p0", Rate::mbit(1), false)
    })();
    let _ = ip(&format!("netns del {probe}"));
    result.map_err(|e| e.to_string())
}

/// For tests: `true` when clusters can be built. Otherwise prints a loud skip
/// message and returns `false` — or panics when env `CI` is set (CI runs as
/// root, so a missing capability there is a failure, not a skip).
pub fn available_or_skip(test: &str) -> bool {
    match check_available() {
        Ok(()) => true,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: CI is set but {e}")
        }
        Err(e) => {
            let bar = "!".repeat(78);
            // Straight to the process's stderr: the test harness captures
            // `eprintln!` of passing tests, and a skip must not go unseen.
            let _ = writeln!(
                std::io::stderr(),
                "\n{bar}\n!!! SKIPPED {test}: {e}.\n!!! These tests need root and network \
                 namespaces (ip netns, tc); they run in CI.\n{bar}\n"
            );
            false
        }
    }
}

/// Runs `f` on a fresh thread that has joined network namespace `ns`; the
/// thread ends with `f`, so no other code ever runs in that namespace by
/// accident. Sockets `f` creates belong to `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let handle = File::open(netns_path(ns))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a namespace fd we hold open; it only changes
            // this (dedicated, about-to-exit) thread's network namespace.
            if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(NetnsError::Io(std::io::Error::last_os_error()));
            }
            drop(handle);
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// An HTTP response from [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 client (one request, `Connection: close`; plain and
/// chunked bodies) run from inside `host`, for control planes such as the
/// store's `/_ossc/stats`. No curl or python needed on the machine.
pub fn http_request(
    host: &Host,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<HttpResponse> {
    http_request_with(host, addr, method, path, &[], body)
}

/// [`http_request`] with extra request headers (a signature, say).
pub fn http_request_with(
    host: &Host,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<HttpResponse> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let raw = host.run(|| -> Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
        s.set_read_timeout(Some(HTTP_TIMEOUT))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        Ok(raw)
    })??;
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| NetnsError::Http("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| NetnsError::Http(format!("bad status line in {head:?}")))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| NetnsError::Http("truncated chunk size".into()))?;
        let size_s = String::from_utf8_lossy(&data[..eol]);
        let size_s = size_s.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_s, 16)
            .map_err(|_| NetnsError::Http(format!("bad chunk size {size_s:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(NetnsError::Http("truncated chunk".into()));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Output of a finished [`HostProcess`].
#[derive(Debug, Clone)]
pub struct ProcessOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl ProcessOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A process started inside a host; killed (and reaped) on drop.
pub struct HostProcess {
    label: String,
    child: Child,
    started: Instant,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for HostProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostProcess")
            .field("label", &self.label)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl HostProcess {
    fn spawn(label: String, mut cmd: Command) -> Result<HostProcess> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(collect(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(collect(err, stderr.clone()));
        }
        Ok(HostProcess {
            label,
            child,
            started: Instant::now(),
            stdout,
            stderr,
            readers,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for exit until `timeout` after the process *started*; then kills
    /// it and returns a Timeout error carrying what it printed.
    pub fn wait(mut self, timeout: Duration) -> Result<ProcessOutput> {
        let deadline = self.started + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let out = self.output_so_far();
                return Err(NetnsError::Timeout(
                    format!(
                        "{} (stdout: {:?}, stderr: {:?})",
                        self.label,
                        String::from_utf8_lossy(&out.0),
                        String::from_utf8_lossy(&out.1)
                    ),
                    timeout,
                ));
            }
            std::thread::sleep(POLL);
        };
        let elapsed = self.started.elapsed();
        let drain = Instant::now() + OUTPUT_DRAIN;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < drain {
            std::thread::sleep(POLL);
        }
        let (stdout, stderr) = self.output_so_far();
        Ok(ProcessOutput {
            status,
            stdout,
            stderr,
            elapsed,
        })
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    fn output_so_far(&self) -> (Vec<u8>, Vec<u8>) {
        let take = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map(|v| v.clone()).unwrap_or_default();
        (take(&self.stdout), take(&self.stderr))
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut v) = into.lock() {
                v.extend_from_slice(&buf[..n]);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_of_pids() {
        assert!(process_alive(std::process::id()));
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .expect("pid_max")
            .trim()
            .parse()
            .expect("number");
        assert!(!process_alive(pid_max));
    }

    #[test]
    fn rates_convert() {
        assert_eq!(Rate::mbit(100).bits_per_sec(), 100_000_000);
        assert_eq!(Rate::gbit(1).bytes_per_sec(), 125_000_000.0);
        assert!((Rate::mbit(80).seconds_for(10_000_000) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let r = parse_http_response(plain).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = parse_http_response(chunked).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        .is_err());
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

    #[test]
    fn stale_cleanup_ignores_foreign_and_live_names() {
        // Only names with our prefix and a dead pid are touched; with none of
        // those present this is a no-op that must not fail (also without root).
        let before: Vec<_> = std::fs::read_dir(NETNS_DIR)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        cleanup_stale();
        for name in before {
            let name = name.to_string_lossy().into_owned();
            if !name.starts_with(NAME_PREFIX) {
                assert!(netns_path(&name).exists(), "{name} must survive");
            }
        }
    }
}
