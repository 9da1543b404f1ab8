//! When a spawned agent exits for lack of users.
//!
//! Design decision: the agent exits once no registered process has been alive for
//! `expireTimeSec`, but never before the first process registered (or [`START_GRACE`] passed
//! without one). The process that spawned the agent says HELLO only after the agent accepted
//! its connection; without this rule `expireTimeSec: 0` ("free the memory as soon as the last
//! user exits") would stop every agent before its first user, and every open would fail.

use std::time::{Duration, Instant};

/// Without any registration, idle exit waits at least this long after start (the preload
/// waits up to 60 s for a new agent to accept connections).
pub const START_GRACE: Duration = Duration::from_secs(60);

/// Whether the agent should exit now: idle since `idle_since` for `expire`, and a first process
/// registered (`registered_once`) or [`START_GRACE`] passed since `started`.
pub fn exit_due(
    registered_once: bool,
    started: Instant,
    idle_since: Instant,
    now: Instant,
    expire: Duration,
) -> bool {
    let idle_long_enough = now.duration_since(idle_since) >= expire;
    idle_long_enough && (registered_once || now.duration_since(started) >= START_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_exit_waits_for_the_start_grace_even_with_expire_zero() {
        let t0 = Instant::now();
        let zero = Duration::ZERO;
        assert!(!exit_due(false, t0, t0, t0, zero), "at once");
        assert!(!exit_due(false, t0, t0, t0 + START_GRACE / 2, zero));
        assert!(exit_due(false, t0, t0, t0 + START_GRACE, zero));
        // Once a process registered and left, 0 means at once.
        let left = t0 + Duration::from_secs(1);
        assert!(exit_due(true, t0, left, left, zero));
        let expire = Duration::from_secs(120);
        assert!(!exit_due(true, t0, left, left + expire / 2, expire));
        assert!(exit_due(true, t0, left, left + expire, expire));
        assert!(!exit_due(false, t0, t0, t0 + START_GRACE, expire));
    }
}
