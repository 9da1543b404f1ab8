//! Membership: who the peers are, who is alive, and traffic per peer.
//!
//! Design decisions:
//! - The peer list is a static list (or DNS names resolving to several
//!   addresses, re-resolved every [`RESOLVE_INTERVAL`] so late joiners
//!   behind a headless Service appear). A node's id is the `ip:port` peers
//!   reach its peer service at, so every node computes the same ring from
//!   the same members.
//! - Liveness has two modes ([`MembershipMode`]). **Gossip** (default): the
//!   listed peers are seeds, SWIM over UDP ([`super::membership`]) finds
//!   the rest, and each member's state comes from the gossip task's
//!   published view ([`PeerSet::apply_gossip_view`]); a member is alive
//!   while neither suspected nor down. Members found by gossip become
//!   [`Peer`]s exactly like listed ones, and are dropped again once gossip
//!   forgets them (listed peers stay). **Heartbeat**: every
//!   [`HEARTBEAT_INTERVAL`] this node sends an authenticated `Hello` to each
//!   listed peer; a peer is alive while its last good answer (or its last
//!   good Hello to us) is younger than [`DEAD_AFTER`].
//! - There is no agreement protocol: views may differ for up to the
//!   detection delay, which costs at most a timed-out pull and a store
//!   fallback, never wrong bytes.
//! - A node that stops first *leaves* ([`PeerSet::leave`], see
//!   [`super::leaving`]): its Hellos and Hello answers say so from then on, and
//!   a leaving peer drops out of [`PeerSet::alive_ids`] (no new pulls, no
//!   chunks owned) while it stays alive for the pulls already running from it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use ossc_proto::v1::peer_control_client::PeerControlClient;
use ossc_proto::v1::HelloRequest;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::auth::ClusterSecret;
use super::membership::swim::MemberState;
use super::membership::{GossipCounters, MembershipMode, MAX_MEMBERS};
use super::tls::PeerTls;

/// Heartbeat period (issue 4: failure detection with bounded delay).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A peer with no good exchange for this long is dead: three missed
/// heartbeats, so one lost packet or a GC-like pause does not evict a peer.
pub const DEAD_AFTER: Duration = Duration::from_secs(3);
/// Timeout of one Hello (a heartbeat must not outlive its period).
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(1);
/// TCP connect timeout to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often DNS names in the peer list are resolved again.
pub const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// HTTP/2 stream window for chunk streams: 8 MiB, so one stream can keep a
/// 10 Gbit/s link with ~5 ms RTT busy (the 64 KiB default caps it near
/// 100 Mbit/s at that RTT).
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// HTTP/2 connection window: room for several concurrent chunk streams.
pub const CONNECTION_WINDOW_BYTES: u32 = 64 << 20;

/// Start-up grace: fetches in the first 5 s of the peer layer wait until the
/// listed peers answer (or the 5 s pass), so agents started a few seconds
/// apart (the same job launching on N nodes) split the first objects too.
/// A listed peer that is down at start costs the first fetches this once.
pub const STARTUP_WAIT: Duration = Duration::from_secs(5);
/// Poll period while waiting for peers at start-up.
const STARTUP_POLL: Duration = Duration::from_millis(20);

/// gRPC path of Hello (signed into the auth tag).
pub const HELLO_METHOD: &str = "/ossc.v1.PeerControl/Hello";

/// One remote peer.
pub struct Peer {
    pub id: String,
    pub addr: SocketAddr,
    tls: Option<Arc<PeerTls>>,
    /// Made on first use: a gRPC client holds ~12 KB of buffers, and a
    /// member found by gossip may never be talked to.
    client: OnceLock<PeerControlClient<Channel>>,
    last_ok: Mutex<Option<Instant>>,
    /// Bytes this node served to the peer.
    pub bytes_sent: AtomicU64,
    /// Verified bytes this node received from the peer.
    pub bytes_received: AtomicU64,
    /// Failed heartbeats and pulls.
    pub failures: AtomicU64,
    was_alive: AtomicBool,
    /// It said it is leaving the swarm (see the module docs).
    leaving: AtomicBool,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr, tls: Option<Arc<PeerTls>>) -> Peer {
        Peer {
            id: addr.to_string(),
            addr,
            tls,
            client: OnceLock::new(),
            last_ok: Mutex::new(None),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            was_alive: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
        }
    }

    /// Whether the peer said it is leaving the swarm.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// What the peer's last Hello or Hello answer said about leaving (a
    /// restarted node says it no longer is).
    fn note_leaving(&self, leaving: bool) {
        if self.leaving.swap(leaving, Ordering::Relaxed) != leaving {
            if leaving {
                tracing::info!(peer = %self.id, "peer is leaving the swarm; new pulls and its chunks go elsewhere");
            } else {
                tracing::info!(peer = %self.id, "peer is back in the swarm");
            }
        }
    }

    /// A client for this peer (cheap clone of a shared HTTP/2 connection).
    /// Call within a tokio runtime.
    pub fn client(&self) -> PeerControlClient<Channel> {
        self.client
            .get_or_init(|| {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", self.addr))
                    .expect("an ip:port is a valid URI");
                if let Some(t) = &self.tls {
                    endpoint = endpoint
                        .tls_config(t.client_config())
                        .expect("a client TLS config built from our own PEMs is valid");
                }
                let endpoint = endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .initial_stream_window_size(STREAM_WINDOW_BYTES)
                    .initial_connection_window_size(CONNECTION_WINDOW_BYTES);
                PeerControlClient::new(endpoint.connect_lazy())
            })
            .clone()
    }

    fn last_ok(&self) -> Option<Instant> {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_ok(&self) {
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    pub fn is_alive(&self, dead_after: Duration) -> bool {
        self.last_ok().is_some_and(|t| t.elapsed() < dead_after)
    }
}

/// Timing of membership (defaults: the documented consts; tests shorten them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipTiming {
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub hello_timeout: Duration,
    /// Start-up grace for the first fetches ([`PeerSet::wait_for_startup`]).
    pub startup_wait: Duration,
}

impl Default for MembershipTiming {
    fn default() -> Self {
        MembershipTiming {
            heartbeat: HEARTBEAT_INTERVAL,
            dead_after: DEAD_AFTER,
            hello_timeout: HELLO_TIMEOUT,
            startup_wait: STARTUP_WAIT,
        }
    }
}

/// Errors finding peers or this node among them.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("peer list entry {entry:?} is not host:port: {reason}")]
    BadEntry { entry: String, reason: String },
    #[error("this node is not in the peer list {list:?} (listening on {listen}); set OSS_CONNECTOR_PEER_ADVERTISE to the address peers know it by")]
    SelfNotListed {
        list: Vec<String>,
        listen: SocketAddr,
    },
    #[error("several peer list entries {0:?} are local addresses on this node's port; set OSS_CONNECTOR_PEER_ADVERTISE to the one peers know it by")]
    SelfAmbiguous(Vec<String>),
}

/// Resolves `host:port` entries (a name may yield several addresses).
pub async fn resolve(entries: &[String]) -> Result<Vec<SocketAddr>, MembershipError> {
    let mut out = Vec::new();
    for e in entries {
        if let Ok(a) = e.parse::<SocketAddr>() {
            out.push(a);
            continue;
        }
        if e.rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(MembershipError::BadEntry {
                entry: e.clone(),
                reason: "missing or invalid port".into(),
            });
        }
        match tokio::net::lookup_host(e.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            // A name that does not resolve yet (a Service without ready pods)
            // is not fatal: it is tried again every RESOLVE_INTERVAL.
            Err(err) => {
                tracing::warn!(entry = %e, error = %err, "peer name does not resolve (yet)")
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// True when `ip` is an address of this host (binding to it succeeds).
fn is_local(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// This node's id: `advertise` if given, else the one listed address that is
/// local and on the listening port.
pub async fn identify_self(
    listed: &[SocketAddr],
    entries: &[String],
    listen: SocketAddr,
    advertise: Option<&str>,
) -> Result<SocketAddr, MembershipError> {
    if let Some(a) = advertise {
        let found = resolve(&[a.to_string()]).await?;
        return found
            .first()
            .copied()
            .ok_or_else(|| MembershipError::BadEntry {
                entry: a.to_string(),
                reason: "does not resolve".into(),
            });
    }
    let mine: Vec<SocketAddr> = listed
        .iter()
        .copied()
        .filter(|a| a.port() == listen.port())
        .filter(|a| {
            if listen.ip().is_unspecified() {
                is_local(a.ip())
            } else {
                a.ip() == listen.ip()
            }
        })
        .collect();
    match mine.as_slice() {
        [one] => Ok(*one),
        [] => Err(MembershipError::SelfNotListed {
            list: entries.to_vec(),
            listen,
        }),
        many => Err(MembershipError::SelfAmbiguous(
            many.iter().map(|a| a.to_string()).collect(),
        )),
    }
}

/// The peers of this node.
pub struct PeerSet {
    self_id: String,
    secret: ClusterSecret,
    entries: Vec<String>,
    timing: MembershipTiming,
    peers: RwLock<BTreeMap<String, Arc<Peer>>>,
    /// Addresses the peer list resolved to (this node's included).
    listed: RwLock<BTreeSet<SocketAddr>>,
    /// Becomes true once every known peer has answered or failed once
    /// (gossip: once this node has members or two probe periods passed).
    first_round: watch::Sender<bool>,
    created: Instant,
    tls: Option<Arc<PeerTls>>,
    mode: MembershipMode,
    /// Gossip mode: each member's state as last published (only members
    /// that have a [`Peer`]).
    gossip_view: RwLock<HashMap<String, MemberState>>,
    gossip_counters: Arc<GossipCounters>,
    /// This node is leaving the swarm ([`PeerSet::leave`]).
    leaving: AtomicBool,
}

impl PeerSet {
    pub fn new(
        self_addr: SocketAddr,
        listed: &[SocketAddr],
        entries: Vec<String>,
        secret: ClusterSecret,
        timing: MembershipTiming,
        tls: Option<Arc<PeerTls>>,
        mode: MembershipMode,
    ) -> PeerSet {
        let set = PeerSet {
            self_id: self_addr.to_string(),
            secret,
            entries,
            timing,
            peers: RwLock::default(),
            listed: RwLock::default(),
            first_round: watch::channel(false).0,
            created: Instant::now(),
            tls,
            mode,
            gossip_view: RwLock::default(),
            gossip_counters: Arc::default(),
            leaving: AtomicBool::new(false),
        };
        set.add_listed(listed);
        set
    }

    fn add_listed(&self, addrs: &[SocketAddr]) {
        self.listed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(addrs.iter().copied());
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        for a in addrs {
            let id = a.to_string();
            if id != self.self_id && !peers.contains_key(&id) {
                tracing::info!(peer = %id, "peer added");
                peers.insert(id, Arc::new(Peer::new(*a, self.tls.clone())));
            }
        }
    }

    /// Addresses the peer list resolved to so far (this node's included).
    pub fn listed_addrs(&self) -> Vec<SocketAddr> {
        self.listed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// True when the peer list holds DNS names (resolved again regularly).
    pub fn has_names(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.parse::<SocketAddr>().is_err())
    }

    /// Resolves the peer list again and adds new addresses; returns what it
    /// resolved to (None on a bad entry).
    pub async fn resolve_listed(&self) -> Option<Vec<SocketAddr>> {
        let addrs = resolve(&self.entries).await.ok()?;
        self.add_listed(&addrs);
        Some(addrs)
    }

    pub fn membership(&self) -> MembershipMode {
        self.mode
    }

    /// Counters of the gossip socket (all zero in heartbeat mode).
    pub fn gossip_counters(&self) -> Arc<GossipCounters> {
        self.gossip_counters.clone()
    }

    /// Gossip mode: the first join round is over ([`Self::wait_for_startup`]).
    pub fn first_round_done(&self) {
        self.first_round.send_replace(true);
    }

    /// Gossip mode: takes the member list the gossip task published. New
    /// alive or suspected members become [`Peer`]s (up to [`MAX_MEMBERS`]
    /// beyond the listed ones); peers gossip no longer knows are dropped
    /// unless listed.
    pub fn apply_gossip_view(&self, members: &[(SocketAddr, MemberState)]) {
        let listed = self
            .listed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut view = HashMap::with_capacity(members.len());
        {
            let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
            for (addr, state) in members {
                let id = addr.to_string();
                if id == self.self_id {
                    continue;
                }
                if !peers.contains_key(&id) {
                    if *state == MemberState::Down || peers.len() >= MAX_MEMBERS + listed.len() {
                        continue;
                    }
                    tracing::info!(peer = %id, "peer added (gossip)");
                    peers.insert(id.clone(), Arc::new(Peer::new(*addr, self.tls.clone())));
                }
                view.insert(id, *state);
            }
            peers.retain(|id, p| {
                let keep = view.contains_key(id) || listed.contains(&p.addr);
                if !keep {
                    tracing::info!(peer = %id, "peer removed (gossip forgot it)");
                }
                keep
            });
        }
        for p in self.all() {
            let state = view.get(&p.id).copied();
            if state == Some(MemberState::Down) {
                // Gone: a node that starts again at its address is a new
                // member, not a leaving one.
                p.leaving.store(false, Ordering::Relaxed);
            }
            let alive = state == Some(MemberState::Alive);
            if alive != p.was_alive.swap(alive, Ordering::Relaxed) {
                if alive {
                    tracing::info!(peer = %p.id, "peer alive");
                } else {
                    let state = state.map_or("unknown", MemberState::as_str);
                    tracing::warn!(peer = %p.id, state, "peer dead (gossip)");
                }
            }
        }
        *self.gossip_view.write().unwrap_or_else(|p| p.into_inner()) = view;
    }

    /// Gossip mode: `id`'s published state.
    fn gossip_state(&self, id: &str) -> Option<MemberState> {
        self.gossip_view
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    fn peer_alive(&self, p: &Peer) -> bool {
        match self.mode {
            MembershipMode::Heartbeat => p.is_alive(self.timing.dead_after),
            MembershipMode::Gossip => self.gossip_state(&p.id) == Some(MemberState::Alive),
        }
    }

    /// Alive, or under gossip suspected but not yet down (see
    /// [`PeerSet::is_up`]).
    fn peer_up(&self, p: &Peer) -> bool {
        match self.mode {
            MembershipMode::Heartbeat => p.is_alive(self.timing.dead_after),
            MembershipMode::Gossip => matches!(
                self.gossip_state(&p.id),
                Some(MemberState::Alive | MemberState::Suspect)
            ),
        }
    }

    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// How long a silent peer stays alive (the failure-detection delay).
    pub fn dead_after(&self) -> Duration {
        self.timing.dead_after
    }

    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// True when some listed peer has address `ip`.
    pub fn lists_ip(&self, ip: std::net::IpAddr) -> bool {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|p| p.addr.ip() == ip)
    }

    pub fn peer(&self, id: &str) -> Option<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn all(&self) -> Vec<Arc<Peer>> {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// This node plus every peer that is up ([`PeerSet::is_up`]) and not
    /// leaving, sorted: the nodes that own chunks and take new pulls.
    pub fn alive_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = match self.mode {
            MembershipMode::Heartbeat => self
                .all()
                .iter()
                .filter(|p| p.is_alive(self.timing.dead_after))
                .map(|p| p.id.clone())
                .collect(),
            MembershipMode::Gossip => self
                .gossip_view
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, s)| matches!(s, MemberState::Alive | MemberState::Suspect))
                .map(|(id, _)| id.clone())
                .collect(),
        };
        ids.retain(|id| !self.peer(id).is_some_and(|p| p.is_leaving()));
        ids.push(self.self_id.clone());
        ids.sort();
        ids
    }

    /// Whether `id` is alive: heard from within the detection delay
    /// (heartbeats), or alive and not suspected (gossip).
    pub fn is_alive(&self, id: &str) -> bool {
        id == self.self_id || self.peer(id).is_some_and(|p| self.peer_alive(&p))
    }

    /// Whether `id` is still a member: alive, or under gossip suspected but
    /// not yet down. A suspected member keeps its chunks and its streams
    /// (see the membership notes); only a broken stream plus a suspicion,
    /// or down, ends it.
    pub fn is_up(&self, id: &str) -> bool {
        id == self.self_id || self.peer(id).is_some_and(|p| self.peer_up(&p))
    }

    /// A listed peer sent us a valid Hello: it is alive too.
    pub fn note_seen(&self, id: &str) {
        if let Some(p) = self.peer(id) {
            p.mark_ok();
        }
    }

    /// A listed peer's Hello said whether it is leaving.
    pub fn note_leaving(&self, id: &str, leaving: bool) {
        if let Some(p) = self.peer(id) {
            p.note_leaving(leaving);
        }
    }

    /// Whether this node is leaving the swarm.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    /// This node leaves the swarm: from now on its Hellos and Hello answers
    /// say so, and every alive peer is told at once (one Hello each, all
    /// together, bounded by the Hello timeout; heartbeats repeat it). A peer
    /// that does not hear it learns it from the NOT_FOUND of its next pull.
    pub async fn leave(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        let alive: Vec<Arc<Peer>> = self.all().into_iter().filter(|p| self.peer_up(p)).collect();
        let told = alive.iter().map(|p| async move {
            let mut client = p.client();
            let hello = client.hello(self.hello_request());
            let answer = tokio::time::timeout(self.timing.hello_timeout, hello).await;
            if !matches!(answer, Ok(Ok(_))) {
                tracing::debug!(peer = %p.id, "a peer did not hear that this node leaves");
            }
        });
        futures::future::join_all(told).await;
    }

    /// Start-up grace: until `startup_wait` after this set was created,
    /// waits for the first heartbeat (or join) round and then for every
    /// known peer to be alive, so nodes started a moment apart do not each
    /// fetch everything. Later calls return at once.
    pub async fn wait_for_startup(&self) {
        let until = self.created + self.timing.startup_wait;
        let mut rx = self.first_round.subscribe();
        let _ = tokio::time::timeout_at(until.into(), rx.wait_for(|done| *done)).await;
        while Instant::now() < until && self.all().iter().any(|p| !self.peer_alive(p)) {
            tokio::time::sleep(STARTUP_POLL).await;
        }
    }

    /// Heartbeats forever (abort the task to stop).
    pub async fn heartbeat_loop(self: Arc<Self>) {
        let names = self.has_names();
        let mut last_resolve = Instant::now();
        let mut ticker = tokio::time::interval(self.timing.heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if names && last_resolve.elapsed() >= RESOLVE_INTERVAL {
                last_resolve = Instant::now();
                self.resolve_listed().await;
            }
            let round: Vec<_> = self
                .all()
                .into_iter()
                .map(|p| {
                    let set = self.clone();
                    tokio::spawn(async move { set.hello(&p).await })
                })
                .collect();
            for h in round {
                let _ = h.await;
            }
            self.first_round.send_replace(true);
        }
    }

    /// A signed Hello from this node (saying whether it is leaving).
    fn hello_request(&self) -> tonic::Request<HelloRequest> {
        let mut req = tonic::Request::new(HelloRequest {
            node_id: self.self_id.clone(),
            control_addr: self.self_id.clone(),
            leaving: self.is_leaving(),
            ..Default::default()
        });
        self.secret
            .sign_request(&mut req, &self.self_id, HELLO_METHOD);
        req
    }

    async fn hello(&self, peer: &Peer) {
        let req = self.hello_request();
        let mut client = peer.client();
        let result = tokio::time::timeout(self.timing.hello_timeout, client.hello(req)).await;
        match result {
            Ok(Ok(answer)) => {
                peer.mark_ok();
                peer.note_leaving(answer.get_ref().leaving);
                if !peer.was_alive.swap(true, Ordering::Relaxed) {
                    tracing::info!(peer = %peer.id, "peer alive");
                }
            }
            Ok(Err(status)) => self.hello_failed(peer, &status.to_string()),
            Err(_) => self.hello_failed(peer, "timed out"),
        }
    }

    fn hello_failed(&self, peer: &Peer, why: &str) {
        peer.failures.fetch_add(1, Ordering::Relaxed);
        if !peer.is_alive(self.timing.dead_after) && peer.was_alive.swap(false, Ordering::Relaxed) {
            tracing::warn!(peer = %peer.id, error = why, "peer dead (no heartbeat answer)");
        } else {
            tracing::debug!(peer = %peer.id, error = why, "heartbeat failed");
        }
    }

    /// The `peers` section of STATUS.
    pub fn status_json(&self) -> serde_json::Value {
        let gossip = self.mode == MembershipMode::Gossip;
        let peers: Vec<serde_json::Value> = self
            .all()
            .iter()
            .map(|p| {
                let mut v = serde_json::json!({
                    "id": p.id,
                    "alive": self.peer_alive(p),
                    "leaving": p.is_leaving(),
                    "last_seen_ms": p.last_ok().map(|t| t.elapsed().as_millis() as u64),
                    "bytes_sent": p.bytes_sent.load(Ordering::Relaxed),
                    "bytes_received": p.bytes_received.load(Ordering::Relaxed),
                    "failures": p.failures.load(Ordering::Relaxed),
                });
                if gossip {
                    let state = self.gossip_state(&p.id);
                    v["state"] = state.map_or("unknown", MemberState::as_str).into();
                }
                v
            })
            .collect();
        let mut v = serde_json::json!({
            "self": self.self_id,
            "tls": self.tls.is_some(),
            "membership": self.mode.as_str(),
            "leaving": self.is_leaving(),
            "alive": self.alive_ids(),
            "peers": peers,
        });
        if gossip {
            v["gossip"] = self.gossip_counters.to_json();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_members_become_peers_and_only_alive_ones_count() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (me, seed, found) = (
            addr("10.0.0.1:7468"),
            addr("10.0.0.2:7468"),
            addr("10.0.0.3:7468"),
        );
        let set = PeerSet::new(
            me,
            &[me, seed],
            vec![me.to_string(), seed.to_string()],
            ClusterSecret::new(super::super::auth::TEST_SECRET).unwrap(),
            MembershipTiming::default(),
            None,
            MembershipMode::Gossip,
        );
        // Listed is not alive until gossip says so.
        assert_eq!(set.alive_ids(), [me.to_string()]);
        let gone = addr("10.0.0.4:7468");
        set.apply_gossip_view(&[
            (seed, MemberState::Alive),
            (found, MemberState::Suspect),
            (gone, MemberState::Down),
        ]);
        assert!(set.peer(&found.to_string()).is_some(), "found by gossip");
        assert!(
            set.peer(&gone.to_string()).is_none(),
            "down when first heard of"
        );
        // A suspected member keeps its place (its chunks, its streams) until
        // it is down; it is not alive for judging a broken stream.
        let mut up = vec![me.to_string(), seed.to_string(), found.to_string()];
        up.sort();
        assert_eq!(set.alive_ids(), up);
        assert!(!set.is_alive(&found.to_string()), "suspected is not alive");
        assert!(set.is_up(&found.to_string()), "suspected is still up");
        assert!(
            !set.is_up(&gone.to_string()),
            "down (and never known) is not up"
        );
        assert!(set.lists_ip(found.ip()));
        let status = set.status_json();
        assert_eq!(status["membership"], "gossip");
        assert_eq!(status["peers"][1]["state"], "suspect", "{status}");
        // Gossip forgets both: the found peer goes, the listed one stays.
        set.apply_gossip_view(&[]);
        assert!(set.peer(&found.to_string()).is_none());
        assert!(set.peer(&seed.to_string()).is_some());
        assert!(!set.is_alive(&seed.to_string()));
        assert!(!set.is_up(&seed.to_string()));
        assert_eq!(set.status_json()["peers"][0]["state"], "unknown");
    }

    #[tokio::test]
    async fn entries_resolve_and_self_is_found_by_local_address_and_port() {
        let entries: Vec<String> = ["127.0.0.1:7001", "127.0.0.1:7002", "localhost:7003"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let listed = resolve(&entries).await.unwrap();
        assert!(listed.contains(&"127.0.0.1:7001".parse().unwrap()));
        assert!(listed.contains(&"127.0.0.1:7003".parse().unwrap()));
        let listen: SocketAddr = "0.0.0.0:7002".parse().unwrap();
        let me = identify_self(&listed, &entries, listen, None)
            .await
            .unwrap();
        assert_eq!(me, "127.0.0.1:7002".parse().unwrap());
        // 192.0.2.0/24 (TEST-NET-1) is never local.
        let remote: Vec<SocketAddr> = vec!["192.0.2.1:7002".parse().unwrap()];
        assert!(matches!(
            identify_self(&remote, &entries, listen, None).await,
            Err(MembershipError::SelfNotListed { .. })
        ));
        let adv = identify_self(&remote, &entries, listen, Some("192.0.2.1:7002"))
            .await
            .unwrap();
        assert_eq!(adv, remote[0]);
        assert!(matches!(
            resolve(&["nohostport".to_string()]).await,
            Err(MembershipError::BadEntry { .. })
        ));
    }
}
