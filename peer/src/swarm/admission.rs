//! Bounds on the peer port: who may hold a connection, and for how long.
//!
//! Design decisions:
//! - **Caps before anything else.** Every accepted TCP connection takes a
//!   ticket from the [`ConnectionGate`]: at most
//!   [`ServeLimits::max_connections_per_ip`] per source address and
//!   [`ServeLimits::max_connections`] in all from addresses that are not in
//!   the peer list. Beyond a cap the socket is closed at once, before TLS or
//!   HTTP/2 see a byte, so a flood of idle or garbage connections costs a
//!   bounded number of file descriptors and never starves the agent's own
//!   opens. Listed peers' addresses are exempt from the total cap (not from
//!   the per-address one), so a flood from elsewhere cannot lock them out.
//! - **A connection must earn its keep.** Its reads fail (closing it) when
//!   no *authenticated* request arrived on it within
//!   [`ServeLimits::handshake_timeout`] of accepting it (TLS handshake,
//!   HTTP/2 preface and first request together), or for
//!   [`ServeLimits::idle_timeout`] since the last one. Only the auth layer
//!   ([`super::auth_layer`]) marks a connection active, so HTTP/2 pings or
//!   partial frames from a caller without the secret do not keep it open.
//!   Live peers send a heartbeat every second on the same connection, so
//!   they never come near either limit.
//! - The HTTP/2 limits (concurrent streams, keep-alive, header list size)
//!   and the QUIC ones ([`super::quic`]) are set where each server is built;
//!   their defaults are documented in `docs/configuration.md`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

/// Limits of the peer service (defaults: the documented consts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections from addresses outside the peer list, in all.
    pub max_connections: usize,
    /// Connections from one source address.
    pub max_connections_per_ip: usize,
    /// From accepting a connection to its first authenticated request.
    pub handshake_timeout: Duration,
    /// Longest time without an authenticated request on a connection.
    pub idle_timeout: Duration,
    /// HTTP/2 streams one connection may have open.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping period, and how long an answer may take.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Largest HTTP/2 header list (decoded) a request may carry.
    pub max_header_list_bytes: u32,
    /// Largest request body (peer requests are a few hundred bytes).
    pub max_request_body_bytes: usize,
    /// How long a request's body may take to arrive after its headers.
    pub body_timeout: Duration,
}

/// Default cap on connections from unlisted addresses: far below the
/// agent's usual 1024-descriptor soft limit, far above what a cluster needs
/// (one connection per peer, plus reconnects).
pub const MAX_CONNECTIONS: usize = 256;
/// Default cap per source address (a peer keeps one connection; tests run
/// several nodes on one loopback address).
pub const MAX_CONNECTIONS_PER_IP: usize = 32;
/// Default time to the first authenticated request (also the TLS
/// handshake timeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle time after which a connection is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default HTTP/2 concurrent streams per connection (a node pulls at most
/// 16 chunks at once from all its peers).
pub const MAX_CONCURRENT_STREAMS: u32 = 64;
/// Default HTTP/2 keep-alive period and answer timeout.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Listen backlog of the peer port. A burst of connections beyond the
/// kernel's queue leaves the excess half-open until the queue drains, which
/// also delays legitimate peers; the kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// How long a bind whose port is still held waits for it: an agent restarted
/// at once (systemd `Restart=`, a pod restart, the next phase of a job)
/// finds its predecessor's sockets open until that process has fully
/// exited, which a process killed in the middle of page-cache writes can
/// take a moment to do.
pub const BIND_RETRY_FOR: Duration = Duration::from_secs(5);
/// Pause between binds of a held port.
const BIND_RETRY_EVERY: Duration = Duration::from_millis(100);

/// Runs `bind` until it succeeds, fails with anything but "address in
/// use", or `retry_for` has passed (then the last error); logs once when
/// the port is held.
pub async fn bind_when_free<T, F, Fut>(
    what: &str,
    retry_for: Duration,
    mut bind: F,
) -> io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let until = Instant::now() + retry_for;
    let mut logged = false;
    loop {
        match bind().await {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < until => {
                if !logged {
                    tracing::warn!(what, error = %e, "port still in use (a process that held it may be exiting); retrying");
                    logged = true;
                }
                tokio::time::sleep(BIND_RETRY_EVERY).await;
            }
            done => return done,
        }
    }
}

/// Binds the peer port with [`LISTEN_BACKLOG`] (std's listeners use 128 or 1024).
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
/// Default largest header list: 16 KiB.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;
/// Default largest request body: 64 KiB (an object key is at most 1 KiB).
pub const MAX_REQUEST_BODY_BYTES: usize = 64 << 10;
/// Default time for a request body to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: MAX_CONNECTIONS,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            keepalive_interval: KEEPALIVE_INTERVAL,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
            max_header_list_bytes: MAX_HEADER_LIST_BYTES,
            max_request_body_bytes: MAX_REQUEST_BODY_BYTES,
            body_timeout: BODY_TIMEOUT,
        }
    }
}

/// Whether an address belongs to a listed peer.
pub type IsListed = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Counts open connections and refuses those over a cap.
pub struct ConnectionGate {
    limits: ServeLimits,
    is_listed: IsListed,
    state: Mutex<GateState>,
    /// Connections accepted (admitted or not).
    pub accepted: AtomicU64,
    /// Connections closed at once because a cap was reached.
    pub refused: AtomicU64,
    /// Connections closed for not authenticating in time or idling.
    pub timed_out: AtomicU64,
}

#[derive(Default)]
struct GateState {
    open: usize,
    unlisted: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A connection's place in the gate, given back when it closes.
pub struct Ticket {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
    listed: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.gate.lock();
        st.open -= 1;
        if !self.listed {
            st.unlisted -= 1;
        }
        if let Some(n) = st.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.per_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnectionGate {
    pub fn new(limits: ServeLimits, is_listed: IsListed) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            limits,
            is_listed,
            state: Mutex::default(),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limits(&self) -> &ServeLimits {
        &self.limits
    }

    /// A ticket for a connection from `ip`, or None over a cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let listed = (self.is_listed)(ip);
        let mut st = self.lock();
        let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.limits.max_connections_per_ip
            || (!listed && st.unlisted >= self.limits.max_connections)
        {
            drop(st);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        st.open += 1;
        if !listed {
            st.unlisted += 1;
        }
        *st.per_ip.entry(ip).or_insert(0) += 1;
        Some(Ticket {
            gate: self.clone(),
            ip,
            listed,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Accepts from `listener` forever, yielding admitted connections (the
    /// rest are closed at once). Accept errors (out of descriptors) are
    /// logged and retried after a pause, never spun on.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<GatedStream>> + Send + 'static {
        futures::stream::unfold((self, listener), |(gate, listener)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, remote)) => {
                        let Some(ticket) = gate.admit(remote.ip()) else {
                            tracing::debug!(remote = %remote, "peer port: connection cap reached, closed");
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let conn = GatedStream::new(stream, remote, ticket);
                        return Some((Ok(conn), (gate, listener)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "peer port: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    }
}

/// What the service learns about a connection (a request extension).
#[derive(Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    activity: Arc<Activity>,
}

impl ConnInfo {
    /// An authenticated request arrived on this connection.
    pub fn mark_authenticated(&self) {
        let ms = self.activity.opened.elapsed().as_millis() as u64;
        self.activity.last_auth_ms.store(ms, Ordering::Relaxed);
    }
}

struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` of the last authenticated request
    /// (`u64::MAX`: none yet).
    last_auth_ms: AtomicU64,
}

/// An admitted TCP connection whose reads fail once it goes too long
/// without an authenticated request (see the module docs).
pub struct GatedStream {
    io: TcpStream,
    info: ConnInfo,
    limits: ServeLimits,
    gate: Arc<ConnectionGate>,
    check_at: Pin<Box<Sleep>>,
    _ticket: Ticket,
}

impl GatedStream {
    fn new(io: TcpStream, remote: SocketAddr, ticket: Ticket) -> GatedStream {
        let gate = ticket.gate.clone();
        let limits = gate.limits;
        GatedStream {
            io,
            info: ConnInfo {
                remote,
                activity: Arc::new(Activity {
                    opened: Instant::now(),
                    last_auth_ms: AtomicU64::new(u64::MAX),
                }),
            },
            limits,
            gate,
            check_at: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            _ticket: ticket,
        }
    }

    /// When the connection expires unless another request authenticates.
    fn expires_at(&self) -> Instant {
        let a = &self.info.activity;
        match a.last_auth_ms.load(Ordering::Relaxed) {
            u64::MAX => a.opened + self.limits.handshake_timeout,
            ms => a.opened + Duration::from_millis(ms) + self.limits.idle_timeout,
        }
    }

    /// Err once expired; otherwise arms the timer for the expiry.
    fn poll_expiry(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        while self.check_at.as_mut().poll(cx).is_ready() {
            let due = self.expires_at();
            if Instant::now() >= due {
                self.gate.timed_out.fetch_add(1, Ordering::Relaxed);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer connection without an authenticated request in time",
                ));
            }
            self.check_at.as_mut().reset(due.into());
        }
        Ok(())
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Err(e) = this.poll_expiry(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for GatedStream {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod bind_tests {
    use super::*;

    #[tokio::test]
    async fn a_held_port_is_bound_once_its_holder_lets_go_and_not_waited_for_forever() {
        let held = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = held.local_addr().unwrap();
        let t0 = Instant::now();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(held);
        });
        let got = bind_when_free("test", Duration::from_secs(5), || async {
            bind_listener(addr)
        })
        .await
        .expect("bound once the holder let go");
        assert_eq!(got.local_addr().unwrap(), addr);
        assert!(t0.elapsed() >= Duration::from_millis(300));
        release.await.unwrap();

        // Held for good: the error comes back after the bound, not before.
        let t0 = Instant::now();
        let err = bind_when_free("test", Duration::from_millis(300), || async {
            bind_listener(addr)
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
            "{waited:?}"
        );

        // Any other error comes back at once.
        let t0 = Instant::now();
        let err = bind_when_free("test", Duration::from_secs(5), || async {
            Err::<(), _>(io::Error::from(io::ErrorKind::PermissionDenied))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(t0.elapsed() < Duration::from_secs(1));
        drop(got);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_exempt_listed_peers_from_the_total() {
        let limits = ServeLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Default::default()
        };
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let gate = ConnectionGate::new(limits, Arc::new(move |ip| ip == peer));
        let ip = |i: u8| IpAddr::from([192, 0, 2, i]);
        let a1 = gate.admit(ip(1)).unwrap();
        let _a2 = gate.admit(ip(1)).unwrap();
        assert!(gate.admit(ip(1)).is_none(), "per-address cap");
        let _b = gate.admit(ip(2)).unwrap();
        assert!(gate.admit(ip(3)).is_none(), "total cap");
        // A listed peer still gets in, up to its per-address cap.
        let _p1 = gate.admit(peer).unwrap();
        let _p2 = gate.admit(peer).unwrap();
        assert!(gate.admit(peer).is_none());
        assert_eq!(gate.open(), 5);
        assert_eq!(gate.refused.load(Ordering::Relaxed), 3);
        // A closed connection frees its place.
        drop(a1);
        assert!(gate.admit(ip(3)).is_some());
    }

    /// A server-side [`GatedStream`] and the client end of its connection.
    async fn gated_pair(gate: &Arc<ConnectionGate>) -> (GatedStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, remote) = listener.accept().await.unwrap();
        let ticket = gate.admit(remote.ip()).unwrap();
        (GatedStream::new(server, remote, ticket), client)
    }

    #[tokio::test]
    async fn reads_fail_without_an_authenticated_request_in_time_and_after_idling() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limits = ServeLimits {
            handshake_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            ..Default::default()
        };
        let gate = ConnectionGate::new(limits, Arc::new(|_| false));
        let mut buf = [0u8; 64];

        // Bytes that never authenticate do not keep a connection open.
        let (mut server, mut client) = gated_pair(&gate).await;
        let t = Instant::now();
        let chatter = tokio::spawn(async move {
            for _ in 0..10 {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let err = loop {
            match server.read(&mut buf).await {
                Ok(n) if n > 0 => continue,
                other => break other.unwrap_err(),
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(290), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        chatter.abort();
        assert_eq!(gate.timed_out.load(Ordering::Relaxed), 1);
        drop(server);
        assert_eq!(gate.open(), 0, "a closed connection gives its ticket back");

        // Authenticated requests keep it open past the handshake timeout;
        // then it closes after idle_timeout without one.
        let (mut server, _client) = gated_pair(&gate).await;
        let info = server.connect_info();
        let t = Instant::now();
        let keeper = tokio::spawn(async move {
            for _ in 0..4 {
                info.mark_authenticated();
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let lived = t.elapsed();
        // Last mark at ~450 ms, plus 600 ms idle.
        assert!(lived >= Duration::from_millis(1000), "{lived:?}");
        keeper.await.unwrap();
    }
}
