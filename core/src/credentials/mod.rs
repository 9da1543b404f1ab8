//! Credential providers and the refreshing cache that requests sign with.
//!
//! Design decisions:
//! - **Sign at send time.** A request asks [`CredentialSource::current`] for
//!   the credentials just before it is signed. A refresh replaces the cached
//!   `Arc`; requests already signed with the old one finish undisturbed, so a
//!   load that spans an expiry never stops.
//! - **Refresh before expiry.** Credentials are re-fetched once
//!   `min(REFRESH_MARGIN, lifetime / 4)` before their expiry (a 3-second
//!   lifetime is refreshed 0.75 s early, an hour-long one 5 minutes early),
//!   and never more often than every [`MIN_REFETCH_INTERVAL`] while they are
//!   still valid. One refresh runs at a time: while it runs, other requests
//!   sign with the still-valid credentials; only when there are none (first
//!   use, or expired) do they wait for its result instead of fetching again.
//! - **A failed refresh keeps valid credentials.** If the provider fails while
//!   the cached credentials are still valid, they are kept (one warning) and
//!   the refresh is retried later. Expired credentials are never used: the
//!   request fails with an error that names the provider and the expiry.
//! - **Rejected credentials are re-read once.** When the store's answer is
//!   [`crate::object_client::ServiceErrorKind::InvalidCredentials`] (an
//!   unknown key id, a wrong signature, an expired or invalid security
//!   token), the client calls [`CredentialSource::refresh_after_rejection`]
//!   and retries once if that produced different credentials.
//! - **Never logged.** Secrets and tokens appear in no log line or error;
//!   [`Credentials`]'s `Debug` redacts them.

pub mod chain;
pub mod providers;
pub mod remote;
pub mod sts;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::Value;

use crate::sign::Credentials;

/// Longest margin before expiry at which credentials are refreshed.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Valid credentials are re-fetched at most this often.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(1);
/// Largest credentials document read from a file, a command or a server.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Credentials and when they stop working (`None`: never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedCredentials {
    pub credentials: Credentials,
    pub expires_at: Option<SystemTime>,
}

impl TimedCredentials {
    pub fn never_expiring(credentials: Credentials) -> Self {
        Self {
            credentials,
            expires_at: None,
        }
    }

    fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why no usable credentials could be had. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// Wrong or missing configuration: retrying will not help.
    #[error("{provider}: {message}")]
    Config { provider: String, message: String },
    /// The source could not be reached or answered an error; a retry may work.
    #[error("{provider}: {message}")]
    Unavailable { provider: String, message: String },
    /// The newest credentials the source has are past their expiry.
    #[error("{provider}: the credentials expired at {expired_at}; provide new ones")]
    Expired {
        provider: String,
        expired_at: String,
    },
}

impl CredentialError {
    pub fn config(provider: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Config {
            provider: provider.into(),
            message: message.into(),
        }
    }

    pub fn unavailable(provider: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unavailable {
            provider: provider.into(),
            message: message.into(),
        }
    }

    /// Whether a later attempt may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// One place credentials come from.
#[async_trait]
pub trait CredentialProvider: Send + Sync + std::fmt::Debug {
    /// Short name for logs and errors (`credentials file /root/...`).
    fn name(&self) -> String;

    /// Fetches the newest credentials.
    async fn fetch(&self) -> Result<TimedCredentials, CredentialError>;

    /// Whether [`CredentialProvider::fetch`] can ever return different
    /// credentials (false for fixed keys from the environment).
    fn refreshes(&self) -> bool {
        true
    }
}

/// Fixed credentials (environment variables, tests).
#[derive(Debug)]
pub struct StaticProvider {
    name: &'static str,
    credentials: TimedCredentials,
}

impl StaticProvider {
    pub fn new(name: &'static str, credentials: Credentials) -> Self {
        Self {
            name,
            credentials: TimedCredentials::never_expiring(credentials),
        }
    }
}

#[async_trait]
impl CredentialProvider for StaticProvider {
    fn name(&self) -> String {
        self.name.to_owned()
    }

    async fn fetch(&self) -> Result<TimedCredentials, CredentialError> {
        Ok(self.credentials.clone())
    }

    fn refreshes(&self) -> bool {
        false
    }
}

#[derive(Debug)]
struct Cached {
    credentials: Arc<TimedCredentials>,
    /// When the next request should fetch again.
    refresh_at: Option<SystemTime>,
}

/// The credentials a client signs with, refreshed from one provider.
#[derive(Debug)]
pub struct CredentialSource {
    provider: Box<dyn CredentialProvider>,
    cached: Mutex<Option<Cached>>,
    /// Serialises fetches so concurrent requests share one refresh.
    refreshing: tokio::sync::Mutex<()>,
}

impl CredentialSource {
    pub fn new(provider: Box<dyn CredentialProvider>) -> Self {
        Self {
            provider,
            cached: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// A source that always yields `credentials`.
    pub fn fixed(credentials: Credentials) -> Self {
        Self::new(Box::new(StaticProvider::new(
            "fixed credentials",
            credentials,
        )))
    }

    /// The provider's name (for logs).
    pub fn provider_name(&self) -> String {
        self.provider.name()
    }

    /// Whether the provider can yield new credentials after a rejection.
    pub fn refreshes(&self) -> bool {
        self.provider.refreshes()
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached credentials if they need no refresh at `now`.
    fn fresh(&self, now: SystemTime) -> Option<Arc<TimedCredentials>> {
        let cached = self.cached();
        let c = cached.as_ref()?;
        let due = c.refresh_at.is_some_and(|at| at <= now) || c.credentials.is_expired(now);
        (!due).then(|| c.credentials.clone())
    }

    /// The cached credentials if they have not expired at `now`.
    fn valid(&self, now: SystemTime) -> Option<Arc<TimedCredentials>> {
        let cached = self.cached();
        let c = cached.as_ref()?;
        (!c.credentials.is_expired(now)).then(|| c.credentials.clone())
    }

    /// Credentials to sign a request with now.
    pub async fn current(&self) -> Result<Arc<TimedCredentials>, CredentialError> {
        let now = SystemTime::now();
        if let Some(c) = self.fresh(now) {
            return Ok(c);
        }
        let _guard = match self.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Another request is refreshing: don't wait while these still work.
                if let Some(c) = self.valid(now) {
                    return Ok(c);
                }
                self.refreshing.lock().await
            }
        };
        let now = SystemTime::now();
        if let Some(c) = self.fresh(now) {
            return Ok(c);
        }
        self.fetch_and_store(now).await
    }

    /// Called when the store rejected `rejected`: fetches again unless another
    /// request already replaced them, and returns what to retry with.
    pub async fn refresh_after_rejection(
        &self,
        rejected: &Arc<TimedCredentials>,
    ) -> Result<Arc<TimedCredentials>, CredentialError> {
        let _guard = self.refreshing.lock().await;
        if let Some(c) = self.cached().as_ref() {
            if !Arc::ptr_eq(&c.credentials, rejected) {
                return Ok(c.credentials.clone());
            }
        }
        self.fetch_and_store(SystemTime::now()).await
    }

    async fn fetch_and_store(
        &self,
        now: SystemTime,
    ) -> Result<Arc<TimedCredentials>, CredentialError> {
        match self.provider.fetch().await {
            Ok(fetched) if fetched.is_expired(now) => {
                let error = CredentialError::Expired {
                    provider: self.provider.name(),
                    expired_at: format_time(fetched.expires_at.unwrap_or(now)),
                };
                tracing::error!(provider = %self.provider.name(), %error, "no valid credentials");
                *self.cached() = None;
                Err(error)
            }
            Ok(fetched) => {
                let previous = self.cached().as_ref().map(|c| c.credentials.clone());
                let credentials = match previous {
                    // Keep the same Arc when nothing changed, so a rejection of
                    // these credentials is recognised as such.
                    Some(p) if *p == fetched => p,
                    Some(p) => {
                        tracing::info!(
                            provider = %self.provider.name(),
                            old_key_id = %p.credentials.access_key_id,
                            new_key_id = %fetched.credentials.access_key_id,
                            expires = %fetched.expires_at.map_or("never".into(), format_time),
                            "credentials refreshed"
                        );
                        Arc::new(fetched)
                    }
                    None => Arc::new(fetched),
                };
                let refresh_at = credentials
                    .expires_at
                    .map(|expiry| refresh_time(now, expiry));
                *self.cached() = Some(Cached {
                    credentials: credentials.clone(),
                    refresh_at,
                });
                Ok(credentials)
            }
            Err(error) => {
                let mut cached = self.cached();
                match cached.as_mut() {
                    Some(c) if !c.credentials.is_expired(now) => {
                        tracing::warn!(
                            provider = %self.provider.name(),
                            %error,
                            "credential refresh failed; the current credentials stay in use until they expire"
                        );
                        c.refresh_at = Some(now + MIN_REFETCH_INTERVAL);
                        Ok(c.credentials.clone())
                    }
                    _ => {
                        *cached = None;
                        Err(error)
                    }
                }
            }
        }
    }
}

/// When credentials fetched at `now` and expiring at `expiry` are re-fetched.
fn refresh_time(now: SystemTime, expiry: SystemTime) -> SystemTime {
    let lifetime = expiry.duration_since(now).unwrap_or_default();
    let margin = REFRESH_MARGIN.min(lifetime / 4);
    (expiry - margin).max(now + MIN_REFETCH_INTERVAL.min(lifetime))
}

/// RFC 3339 UTC, second precision.
pub fn format_time(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// An `Expiration` value: RFC 3339 (`2024-08-02T15:04:05Z`, fractions and
/// offsets allowed); empty means never.
pub fn parse_expiration(text: &str) -> Result<Option<SystemTime>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| Some(SystemTime::from(t.to_utc())))
        .map_err(|e| format!("Expiration {text:?} is not an RFC 3339 time: {e}"))
}

/// Reads a credentials JSON document in any of the shapes the vendors use:
/// the vendor file and ECS metadata (`AccessKeyId`, `AccessKeySecret`,
/// `SecurityToken`, `Expiration`), AWS `credential_process` and IMDS
/// (`SecretAccessKey`, `SessionToken`/`Token`).
pub fn parse_credentials_json(text: &[u8]) -> Result<TimedCredentials, String> {
    let value: Value =
        serde_json::from_slice(text).map_err(|e| format!("not a JSON document: {e}"))?;
    credentials_from_json(&value)
}

/// Like [`parse_credentials_json`] on an already parsed object.
pub fn credentials_from_json(value: &Value) -> Result<TimedCredentials, String> {
    let object = value
        .as_object()
        .ok_or_else(|| "expected a JSON object".to_owned())?;
    let field = |names: &[&str]| -> Result<Option<String>, String> {
        for name in names {
            match object.get(*name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(Value::String(s)) => return Ok(Some(s.trim().to_owned())),
                Some(_) => return Err(format!("{name} must be a string")),
            }
        }
        Ok(None)
    };
    if let Some(code) = field(&["Code"])? {
        if code != "Success" {
            return Err(format!("the document reports Code {code:?}"));
        }
    }
    let id = field(&["AccessKeyId"])?.ok_or("AccessKeyId is missing")?;
    let secret =
        field(&["AccessKeySecret", "SecretAccessKey"])?.ok_or("AccessKeySecret is missing")?;
    let token = field(&["SecurityToken", "SessionToken", "Token"])?;
    let expires_at = match field(&["Expiration"])? {
        Some(text) => parse_expiration(&text)?,
        None => None,
    };
    let mut credentials = Credentials::new(id, secret);
    credentials.security_token = token;
    Ok(TimedCredentials {
        credentials,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn parses_every_vendor_shape() {
        let vendor = parse_credentials_json(
            br#"{"AccessKeyId":"ak","AccessKeySecret":"sk","SecurityToken":"tok","Expiration":"2024-08-02T15:04:05Z"}"#,
        )
        .unwrap();
        assert_eq!(
            vendor.credentials,
            Credentials::new("ak", "sk").with_token("tok")
        );
        assert_eq!(
            vendor.expires_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_722_611_045))
        );
        let never = parse_credentials_json(
            br#"{"AccessKeyId":"ak","AccessKeySecret":"sk","SecurityToken":"","Expiration":""}"#,
        )
        .unwrap();
        assert_eq!(
            never,
            TimedCredentials::never_expiring(Credentials::new("ak", "sk"))
        );
        let aws = parse_credentials_json(
            br#"{"Version":1,"Code":"Success","AccessKeyId":"AKIA","SecretAccessKey":"s","Token":"t","Expiration":"2030-01-01T00:00:00.000+00:00"}"#,
        )
        .unwrap();
        assert_eq!(
            aws.credentials,
            Credentials::new("AKIA", "s").with_token("t")
        );
        assert!(aws.expires_at.is_some());
    }

    #[test]
    fn bad_documents_are_named_without_secrets() {
        let cases: &[(&[u8], &str)] = &[
            (b"nope", "not a JSON document"),
            (b"[]", "expected a JSON object"),
            (
                br#"{"AccessKeySecret":"hunter2"}"#,
                "AccessKeyId is missing",
            ),
            (br#"{"AccessKeyId":"a"}"#, "AccessKeySecret is missing"),
            (
                br#"{"AccessKeyId":1,"AccessKeySecret":"hunter2"}"#,
                "AccessKeyId must be a string",
            ),
            (
                br#"{"AccessKeyId":"a","AccessKeySecret":"hunter2","Expiration":"tomorrow"}"#,
                "not an RFC 3339 time",
            ),
            (
                br#"{"Code":"Failed","AccessKeyId":"a","AccessKeySecret":"hunter2"}"#,
                "Code \"Failed\"",
            ),
        ];
        for (doc, want) in cases {
            let e = parse_credentials_json(doc).unwrap_err();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
            assert!(!e.contains("hunter2"), "{e:?} leaks the secret");
        }
    }

    #[test]
    fn refresh_margin_scales_with_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = now + Duration::from_secs(3600);
        assert_eq!(refresh_time(now, hour), hour - REFRESH_MARGIN);
        let short = now + Duration::from_secs(4);
        assert_eq!(refresh_time(now, short), short - Duration::from_secs(1));
        // Already inside the margin: not re-fetched before the minimum interval.
        let tiny = now + Duration::from_millis(1200);
        assert_eq!(refresh_time(now, tiny), now + MIN_REFETCH_INTERVAL);
    }

    /// Yields the queued answers in turn, repeating the last.
    #[derive(Debug)]
    struct Scripted {
        answers: Mutex<Vec<Result<TimedCredentials, CredentialError>>>,
        fetches: Arc<AtomicUsize>,
        delay: Duration,
    }

    #[async_trait]
    impl CredentialProvider for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }
        async fn fetch(&self) -> Result<TimedCredentials, CredentialError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            let mut answers = self.answers.lock().unwrap();
            if answers.len() > 1 {
                answers.remove(0)
            } else {
                answers[0].clone()
            }
        }
    }

    fn scripted(
        answers: Vec<Result<TimedCredentials, CredentialError>>,
    ) -> (CredentialSource, Arc<AtomicUsize>) {
        scripted_with_delay(answers, Duration::from_millis(20))
    }

    fn scripted_with_delay(
        answers: Vec<Result<TimedCredentials, CredentialError>>,
        delay: Duration,
    ) -> (CredentialSource, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let provider = Scripted {
            answers: Mutex::new(answers),
            fetches: fetches.clone(),
            delay,
        };
        (CredentialSource::new(Box::new(provider)), fetches)
    }

    fn expiring(id: &str, in_secs: i64) -> TimedCredentials {
        let now = SystemTime::now();
        let at = if in_secs >= 0 {
            now + Duration::from_secs(in_secs as u64)
        } else {
            now - Duration::from_secs(in_secs.unsigned_abs())
        };
        TimedCredentials {
            credentials: Credentials::new(id, "secret"),
            expires_at: Some(at),
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_and_cache_it() {
        let (source, fetches) = scripted(vec![Ok(expiring("one", 3600))]);
        let source = Arc::new(source);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let s = source.clone();
                tokio::spawn(async move { s.current().await.unwrap() })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().credentials.access_key_id, "one");
        }
        assert_eq!(
            source.current().await.unwrap().credentials.access_key_id,
            "one"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_slow_refresh_does_not_hold_up_requests_while_the_old_credentials_work() {
        let (source, fetches) = scripted_with_delay(
            vec![Ok(expiring("one", 4)), Ok(expiring("two", 3600))],
            Duration::from_millis(400),
        );
        let source = Arc::new(source);
        assert_eq!(
            source.current().await.unwrap().credentials.access_key_id,
            "one"
        );
        // Inside the refresh margin (from about 3.1 s): one caller refreshes
        // (400 ms); another one meanwhile signs with "one", valid until 4 s,
        // instead of waiting for "two".
        tokio::time::sleep(Duration::from_millis(2800)).await;
        let refresher = {
            let s = source.clone();
            tokio::spawn(async move { s.current().await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            source.current().await.unwrap().credentials.access_key_id,
            "one"
        );
        assert_eq!(refresher.await.unwrap().credentials.access_key_id, "two");
        assert_eq!(
            source.current().await.unwrap().credentials.access_key_id,
            "two"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_credentials_are_never_used() {
        let (source, _) = scripted(vec![Ok(expiring("old", -10))]);
        let e = source.current().await.unwrap_err();
        assert!(matches!(e, CredentialError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("expired at"), "{e}");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_valid_credentials_until_they_expire() {
        let (source, fetches) = scripted(vec![
            Ok(expiring("one", 2)),
            Err(CredentialError::unavailable("scripted", "down")),
        ]);
        assert_eq!(
            source.current().await.unwrap().credentials.access_key_id,
            "one"
        );
        // Inside the refresh margin (0.5 s before expiry): the refresh fails,
        // the still-valid credentials are served.
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(
            source.current().await.unwrap().credentials.access_key_id,
            "one"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let e = source.current().await.unwrap_err();
        assert!(e.is_transient(), "{e}");
    }

    #[tokio::test]
    async fn a_rejection_refetches_once_for_all_requests_that_saw_it() {
        let (source, fetches) = scripted(vec![
            Ok(TimedCredentials::never_expiring(Credentials::new(
                "old", "s",
            ))),
            Ok(TimedCredentials::never_expiring(Credentials::new(
                "new", "s",
            ))),
        ]);
        let rejected = source.current().await.unwrap();
        let first = source.refresh_after_rejection(&rejected).await.unwrap();
        let second = source.refresh_after_rejection(&rejected).await.unwrap();
        assert_eq!(first.credentials.access_key_id, "new");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        // Never-expiring credentials are not re-fetched on their own.
        source.current().await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }
}
