//! Correcting our clock to the store's.
//!
//! Design: clock skew is corrected, not reported. Signatures carry a time
//! the store checks against its own clock; on
//! [`ServiceErrorKind::ClockSkew`], or any error answer whose `Date` is more
//! than [`MAX_CLOCK_SKEW`] from our corrected clock, the offset to the
//! store's clock is stored and every later signature uses it, so the retry
//! that follows ([`ServiceError::is_retryable`] accepts clock skew)
//! succeeds. The offset is one atomic shared by all requests of a client.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use super::response::header_str;
use super::HttpObjectClient;
use crate::object_client::{ServiceError, ServiceErrorKind};

/// Skew beyond which the store rejects signatures (and we resync).
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

impl HttpObjectClient {
    /// Milliseconds to add to the local clock when signing (store minus local).
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Overrides the clock offset (tests, or a known-skewed host).
    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.clock_offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    /// The store's time as far as we know it: what signatures carry.
    pub(super) fn now(&self) -> SystemTime {
        shift(SystemTime::now(), self.clock_offset_ms())
    }

    /// Adopts the offset to the `Date` of an error answer when the error is
    /// clock skew or the dates differ by more than [`MAX_CLOCK_SKEW`].
    pub(super) fn resync_clock(&self, headers: &HeaderMap, error: &ServiceError) {
        let Some(date) =
            header_str(headers, "date").and_then(|d| httpdate::parse_http_date(d).ok())
        else {
            return;
        };
        let skew_ms = signed_millis(date, SystemTime::now());
        let corrected = skew_ms - self.clock_offset_ms();
        if error.kind() == ServiceErrorKind::ClockSkew
            || corrected.unsigned_abs() > MAX_CLOCK_SKEW.as_millis() as u64
        {
            tracing::warn!(
                offset_ms = skew_ms,
                code = %error.code,
                "correcting clock skew from the store's Date header"
            );
            self.set_clock_offset_ms(skew_ms);
        }
    }
}

/// `t + offset_ms` (offset may be negative).
fn shift(t: SystemTime, offset_ms: i64) -> SystemTime {
    let d = Duration::from_millis(offset_ms.unsigned_abs());
    if offset_ms >= 0 {
        t + d
    } else {
        t.checked_sub(d).unwrap_or(t)
    }
}

/// `a - b` in milliseconds, signed.
fn signed_millis(a: SystemTime, b: SystemTime) -> i64 {
    match a.duration_since(b) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::super::tests::client_at;
    use super::*;

    fn answer(status: u16, code: &str, store_ahead: Duration) -> (HeaderMap, ServiceError) {
        let date = httpdate::fmt_http_date(SystemTime::now() + store_ahead);
        let mut headers = HeaderMap::new();
        headers.insert("date", HeaderValue::from_str(&date).unwrap());
        (headers, ServiceError::sample(status, code))
    }

    #[test]
    fn skew_errors_and_far_dates_move_the_clock() {
        let c = client_at("http://127.0.0.1:9000");
        // A minute off on an ordinary error: left alone.
        let (h, e) = answer(404, "NoSuchKey", Duration::from_secs(60));
        c.resync_clock(&h, &e);
        assert_eq!(c.clock_offset_ms(), 0);
        // The same minute on a skew error: adopted.
        let (h, e) = answer(403, "RequestTimeTooSkewed", Duration::from_secs(60));
        c.resync_clock(&h, &e);
        assert!(
            (58_000..=61_000).contains(&c.clock_offset_ms()),
            "{}",
            c.clock_offset_ms()
        );
        // An hour off on any error: adopted.
        let (h, e) = answer(500, "", Duration::from_secs(3600));
        c.resync_clock(&h, &e);
        assert!(c.clock_offset_ms() > 3_590_000, "{}", c.clock_offset_ms());
    }

    #[test]
    fn clock_helpers_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(signed_millis(shift(t, 1500), t), 1500);
        assert_eq!(signed_millis(shift(t, -1500), t), -1500);
    }
}
