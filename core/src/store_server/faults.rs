//! Runtime state of fault injection: the seeded generator, the shared
//! bandwidth token bucket and the one-shot `replace_key`.
//!
//! Design decision: one draw per object GET, in arrival order, from a single
//! seeded `StdRng` behind a mutex. Sequential requests therefore fail the same
//! way on every run with the same seed; concurrent ones are reproducible in
//! distribution only.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::config::FaultConfig;

/// Tokens the bandwidth bucket may bank, as seconds of its rate: small, so a
/// pause does not turn into a burst above the cap.
const BURST_SECONDS: f64 = 0.05;

/// What to do to one object GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GetFault {
    None,
    Error {
        status: u16,
        code: String,
    },
    /// Reset the connection after `cut` body bytes.
    Reset {
        cut: usize,
    },
    /// Close cleanly after `cut` of the declared body bytes.
    Truncate {
        cut: usize,
    },
}

/// A token bucket in bytes, shared by every connection. Callers take tokens
/// (going into debt if needed) and sleep off the debt, so the aggregate rate
/// holds however many responses stream at once.
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec as f64;
        Self {
            rate,
            burst: rate * BURST_SECONDS,
            state: Mutex::new((0.0, Instant::now())),
        }
    }

    pub async fn take(&self, n: usize) {
        let wait = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
            st.0 = (st.0 + refill).min(self.burst) - n as f64;
            st.1 = now;
            if st.0 < 0.0 {
                Duration::from_secs_f64(-st.0 / self.rate)
            } else {
                Duration::ZERO
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

pub(crate) struct FaultState {
    config: FaultConfig,
    rng: StdRng,
    bucket: Option<Arc<TokenBucket>>,
    replaced: bool,
}

impl FaultState {
    pub fn new(config: FaultConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let bucket = (config.bandwidth_bytes_per_sec > 0)
            .then(|| Arc::new(TokenBucket::new(config.bandwidth_bytes_per_sec)));
        Self {
            config,
            rng,
            bucket,
            replaced: false,
        }
    }

    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.config.latency_ms)
    }

    pub fn bandwidth(&self) -> Option<Arc<TokenBucket>> {
        self.bucket.clone()
    }

    /// Draws the fault of one object GET whose body is `body_len` bytes.
    pub fn draw_get(&mut self, body_len: usize) -> GetFault {
        let c = &self.config;
        if c.error_rate + c.reset_rate + c.truncate_rate <= 0.0 {
            return GetFault::None;
        }
        let r: f64 = self.rng.gen();
        if r < c.error_rate {
            return GetFault::Error {
                status: c.error_status,
                code: c.error_code.clone(),
            };
        }
        let cut_needed = r < c.error_rate + c.reset_rate + c.truncate_rate;
        if !cut_needed || body_len == 0 {
            // An empty body cannot be cut short.
            return GetFault::None;
        }
        let cut = self.rng.gen_range(0..body_len);
        if r < c.error_rate + c.reset_rate {
            GetFault::Reset { cut }
        } else {
            GetFault::Truncate { cut }
        }
    }

    /// True exactly once: for the first GET of `replace_key`.
    pub fn take_replacement(&mut self, key: &str) -> bool {
        if !self.replaced && self.config.replace_key.as_deref() == Some(key) {
            self.replaced = true;
            true
        } else {
            false
        }
    }
}
