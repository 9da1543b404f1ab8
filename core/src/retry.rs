//! Retry with full-jitter exponential backoff.
//!
//! Design: one policy type shared by the HTTP client (a small inner budget per
//! request) and the fetch engine (the outer budget per part). Only errors that
//! [`ObjectClientError::is_retryable`] accepts are retried: timeouts and
//! server faults (408, 429, 5xx), errors of kind `Throttled` or `ClockSkew`
//! whatever their status, transport failures and truncated bodies. Permanent
//! answers (403, 404, a changed object, a CRC mismatch) return at once, because
//! repeating them only multiplies load on a store that already said no.
//!
//! Backoff is "full jitter" (AWS architecture blog, 2015): attempt `n` sleeps a
//! uniformly random time in `[0, min(max_delay, base_delay * 2^n)]`, which
//! spreads a thundering herd of throttled parts better than equal or
//! decorrelated jitter at the same mean.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::object_client::{ObjectClientError, Result};

/// Default total attempts (first try included) for one operation.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Default backoff cap for the first retry.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(50);
/// Default ceiling of any single backoff sleep.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);
/// Exponent ceiling, so `base_delay * 2^n` never overflows.
const MAX_BACKOFF_EXPONENT: u32 = 20;

/// How many times, and how patiently, to retry one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (default [`DEFAULT_MAX_ATTEMPTS`] = 10).
    /// `0` is treated as `1`.
    pub max_attempts: u32,
    /// Backoff cap before the first retry (default [`DEFAULT_BASE_DELAY`] = 50 ms);
    /// doubles per retry.
    pub base_delay: Duration,
    /// Upper bound of any one backoff sleep (default [`DEFAULT_MAX_DELAY`] = 5 s).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff cap before retry number `retry` (0 = the first retry):
    /// `min(max_delay, base_delay * 2^retry)`.
    pub fn backoff_cap(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(MAX_BACKOFF_EXPONENT);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// A full-jitter sleep before retry number `retry`: uniform in `[0, cap]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let cap = self.backoff_cap(retry);
        if cap.is_zero() {
            return cap;
        }
        let nanos = rand::thread_rng().gen_range(0..=cap.as_nanos().min(u64::MAX as u128) as u64);
        Duration::from_nanos(nanos)
    }

    fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }
}

/// Runs `op(attempt)` (attempt 0 is the first try) until it succeeds, fails
/// with a non-retryable error, or the policy's attempts are spent; returns the
/// last error then. Each retry is logged at `warn` with the store's code and
/// request id when there is one.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, what: &str, mut op: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let attempts = policy.attempts();
    let mut attempt = 0u32;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt + 1 < attempts => {
                let delay = policy.backoff(attempt);
                log_retry(what, attempt + 1, attempts, delay, &e);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn log_retry(what: &str, attempt: u32, attempts: u32, delay: Duration, e: &ObjectClientError) {
    match e {
        ObjectClientError::Service(s) => tracing::warn!(
            operation = what,
            attempt,
            max_attempts = attempts,
            delay_ms = delay.as_millis() as u64,
            status = s.status,
            code = %s.code,
            kind = ?s.kind(),
            request_id = %s.request_id,
            "retrying after store error: {}",
            s.message
        ),
        ObjectClientError::Client(c) => tracing::warn!(
            operation = what,
            attempt,
            max_attempts = attempts,
            delay_ms = delay.as_millis() as u64,
            "retrying after client error: {c}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::object_client::{ClientError, ServiceError};

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    fn service(status: u16, code: &str) -> ObjectClientError {
        ServiceError::sample(status, code).into()
    }

    #[test]
    fn defaults_are_documented_values() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts, 10);
        assert_eq!(p.base_delay, Duration::from_millis(50));
        assert_eq!(p.max_delay, Duration::from_secs(5));
    }

    #[test]
    fn backoff_is_capped_and_grows() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_cap(0), Duration::from_millis(50));
        assert_eq!(p.backoff_cap(1), Duration::from_millis(100));
        assert_eq!(p.backoff_cap(3), Duration::from_millis(400));
        assert_eq!(p.backoff_cap(10), Duration::from_secs(5));
        assert_eq!(p.backoff_cap(u32::MAX), Duration::from_secs(5));
        for r in 0..40 {
            assert!(p.backoff(r) <= p.backoff_cap(r));
        }
    }

    #[tokio::test]
    async fn retries_retryable_until_success() {
        let calls = AtomicU32::new(0);
        let out = retry(&fast(), "t", |attempt| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            assert_eq!(n, attempt);
            async move {
                if n < 2 {
                    Err(service(503, "SlowDown"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(out, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = retry(&fast(), "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(ClientError::Transport("reset".into()).into()) }
        })
        .await;
        assert_eq!(out, Err(ClientError::Transport("reset".into()).into()));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn never_retries_403_404_or_changed() {
        for err in [
            service(403, "AccessDenied"),
            service(404, "NoSuchKey"),
            ClientError::ObjectChanged {
                key: "k".into(),
                expected: "a".into(),
                found: "b".into(),
            }
            .into(),
        ] {
            let calls = AtomicU32::new(0);
            let out: Result<()> = retry(&fast(), "t", |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = err.clone();
                async move { Err(e) }
            })
            .await;
            assert_eq!(out, Err(err));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn throttles_are_retried_whatever_their_status() {
        for err in [service(400, "Throttling"), service(429, "")] {
            let calls = AtomicU32::new(0);
            let out = retry(&fast(), "t", |a| {
                calls.fetch_add(1, Ordering::SeqCst);
                let e = err.clone();
                async move {
                    if a == 0 {
                        Err(e)
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
            assert_eq!(out, Ok(()), "{err}");
            assert_eq!(calls.load(Ordering::SeqCst), 2, "{err}");
        }
    }

    #[tokio::test]
    async fn skew_is_retried_and_zero_attempts_means_one() {
        let calls = AtomicU32::new(0);
        let p = RetryPolicy {
            max_attempts: 0,
            ..fast()
        };
        let out: Result<()> = retry(&p, "t", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(service(403, "RequestTimeTooSkewed")) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let calls = AtomicU32::new(0);
        let out = retry(&fast(), "t", |a| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if a == 0 {
                    Err(service(403, "RequestTimeTooSkewed"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(out, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
