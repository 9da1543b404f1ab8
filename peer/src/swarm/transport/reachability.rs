//! Whether a transport can reach a peer, as its pulls last found out.
//!
//! Design decision: a transport that cannot connect to a peer (QUIC over
//! filtered UDP, framed to a closed port) hands that peer's pulls to the
//! next transport for a while instead of paying a connect timeout on each;
//! the failure is logged once, and again when connecting works. When the
//! while is over, one pull tries again and the others keep going to the
//! next transport until it knows.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::PullError;

/// One peer as one transport sees it.
#[derive(Debug, Default)]
pub struct PeerReachability {
    /// When connecting last failed (None once it worked).
    failed_at: Mutex<Option<Instant>>,
}

impl PeerReachability {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.failed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Unreachable` while the last failure is younger than `retry_after`;
    /// otherwise the caller may connect (after a failure, this caller alone
    /// until it reports back: the window restarts now).
    pub fn may_connect(&self, retry_after: Duration) -> Result<(), PullError> {
        let mut failed = self.lock();
        if let Some(at) = *failed {
            if at.elapsed() < retry_after {
                return Err(PullError::Unreachable("connecting failed recently".into()));
            }
            *failed = Some(Instant::now());
        }
        Ok(())
    }

    /// A connection opened (logged if it had failed before).
    pub fn connected(&self, transport: &str, peer: SocketAddr) {
        if self.lock().take().is_some() {
            tracing::info!(peer = %peer, "{transport} to this peer works again");
        }
    }

    /// Connecting failed: the peer's pulls go to the next transport for
    /// `retry_after` (logged once until it works again).
    pub fn failed(&self, transport: &str, peer: SocketAddr, error: &str, retry_after: Duration) {
        if self.lock().replace(Instant::now()).is_none() {
            tracing::warn!(
                peer = %peer,
                error,
                retry_after = ?retry_after,
                "{transport} connection to peer failed; pulling from it over gRPC"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_holds_pulls_off_then_lets_one_try_again() {
        let r = PeerReachability::default();
        let peer: SocketAddr = "127.0.0.1:7469".parse().unwrap();
        let retry = Duration::from_millis(50);
        assert!(r.may_connect(retry).is_ok());
        r.failed("framed", peer, "refused", retry);
        assert!(matches!(
            r.may_connect(retry),
            Err(PullError::Unreachable(_))
        ));
        std::thread::sleep(retry);
        // One pull tries; the next is held off while it does.
        assert!(r.may_connect(retry).is_ok());
        assert!(r.may_connect(retry).is_err());
        r.connected("framed", peer);
        assert!(r.may_connect(retry).is_ok());
    }
}
