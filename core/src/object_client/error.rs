//! The two levels of an object-client failure, and what a store error means.
//!
//! Design (after Mountpoint for S3's `GetObjectError::NoSuchKey`): a
//! [`ServiceError`] keeps the store's raw code, message and request id for
//! logs, and every decision (errno, exit code, retry, credential re-read,
//! clock resync) matches on its [`ServiceErrorKind`] instead of on code
//! strings. The kind is derived from the code first, because OSS and S3 spell
//! the same condition differently and a code is more precise than a status;
//! an unknown or missing code falls back to the HTTP status alone, so a
//! body-less answer (a HEAD has no body) is still classified without
//! inventing a code. [`ServiceErrorKind::classify`] is the one table that
//! knows code spellings.
//!
//! A [`ClientError`] is everything on our side of the wire (transport,
//! truncation, a changed object, a CRC mismatch). A new variant of either is
//! justified only when a caller must react to it differently.

use std::fmt;

/// What a store error means, independent of how the store spelled it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServiceErrorKind {
    /// The key, version or bucket does not exist.
    NotFound,
    /// The credentials are valid but not allowed to do this.
    AccessDenied,
    /// The store asks us to slow down.
    Throttled,
    /// Our clock is too far from the store's for the signature to count.
    ClockSkew,
    /// An `If-Match` (or other precondition) did not hold.
    PreconditionFailed,
    /// The credentials themselves were rejected: unknown key id, wrong
    /// secret, expired or invalid security token.
    InvalidCredentials,
    /// Anything else; holds the store's code (empty when it sent none).
    Other(String),
}

impl ServiceErrorKind {
    /// Classifies a store answer by its error `code` (OSS and S3 spellings),
    /// or by its HTTP `status` when the code is unknown or empty.
    pub fn classify(status: u16, code: &str) -> Self {
        use ServiceErrorKind::*;
        match code {
            "NoSuchKey" | "NoSuchBucket" | "NoSuchVersion" | "NotFound" => NotFound,
            "AccessDenied" | "Forbidden" | "AllAccessDisabled" => AccessDenied,
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "TooManyRequests"
            | "TooManyRequestsException"
            | "BandwidthLimitExceeded"
            | "DownloadTrafficRateLimitExceeded"
            | "UploadTrafficRateLimitExceeded" => Throttled,
            "RequestTimeTooSkewed" => ClockSkew,
            "PreconditionFailed" => PreconditionFailed,
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "SecurityTokenExpired"
            | "InvalidSecurityToken"
            | "ExpiredToken"
            | "InvalidToken" => InvalidCredentials,
            _ => match status {
                401 => InvalidCredentials,
                403 => AccessDenied,
                404 => NotFound,
                412 => PreconditionFailed,
                429 => Throttled,
                _ => Other(code.to_string()),
            },
        }
    }

    /// A short human description, shown when the store sent no code.
    pub fn describe(&self) -> &'static str {
        match self {
            ServiceErrorKind::NotFound => "not found",
            ServiceErrorKind::AccessDenied => "access denied",
            ServiceErrorKind::Throttled => "throttled",
            ServiceErrorKind::ClockSkew => "clock skew",
            ServiceErrorKind::PreconditionFailed => "precondition failed",
            ServiceErrorKind::InvalidCredentials => "invalid credentials",
            ServiceErrorKind::Other(_) => "store error",
        }
    }
}

/// The store's own error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub status: u16,
    /// `NoSuchKey`, `AccessDenied`, `SignatureDoesNotMatch`, ... as the store
    /// spelled it, for logs. Empty when the store sent no parseable body
    /// (then [`ServiceError::kind`] comes from `status` alone).
    pub code: String,
    pub message: String,
    pub request_id: String,
    /// The server's string-to-sign, echoed on `SignatureDoesNotMatch`.
    pub string_to_sign: Option<String>,
}

impl ServiceError {
    /// What this answer means; see [`ServiceErrorKind::classify`].
    pub fn kind(&self) -> ServiceErrorKind {
        ServiceErrorKind::classify(self.status, &self.code)
    }

    /// Throttling, timeouts, server faults and clock skew (which the HTTP
    /// client corrects before its retry): worth another try.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 408 | 429 | 500..=599)
            || matches!(
                self.kind(),
                ServiceErrorKind::Throttled | ServiceErrorKind::ClockSkew
            )
    }
}

#[cfg(test)]
impl ServiceError {
    /// An answer with this status and code, message `m` and request id `r`.
    pub(crate) fn sample(status: u16, code: &str) -> Self {
        ServiceError {
            status,
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
            string_to_sign: None,
        }
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = if self.code.is_empty() {
            self.kind().describe()
        } else {
            &self.code
        };
        write!(
            f,
            "{label} (HTTP {}): {} [request id {}]",
            self.status, self.message, self.request_id
        )
    }
}

impl std::error::Error for ServiceError {}

/// Failures on our side of the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("transport error: {0}")]
    Transport(String),
    #[error("body truncated: expected {expected} bytes, got {received}")]
    Truncated { expected: u64, received: u64 },
    #[error("object {key} changed during download (ETag {expected} became {found})")]
    ObjectChanged {
        key: String,
        expected: String,
        found: String,
    },
    #[error("CRC-64 mismatch for {key}: store says {expected:#018x}, data has {actual:#018x}")]
    Crc64Mismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    /// A whole-object digest the store declared (SHA-256, Content-MD5, ...;
    /// see [`crate::checksums`]) does not match the bytes fetched.
    #[error("{algorithm} mismatch for {key}: store says {expected}, data has {actual}")]
    ChecksumMismatch {
        key: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
    },
    #[error("unexpected response: {0}")]
    BadResponse(String),
    #[error("writing to destination failed: {0}")]
    Sink(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Transport(_) | ClientError::Truncated { .. }
        )
    }
}

/// Either side's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectClientError {
    /// Displays as the inner error alone (no "caused by" repetition in chains).
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ObjectClientError {
    /// 408/429/5xx, throttling, clock skew, connection errors and truncated
    /// bodies. Never 403/404.
    pub fn is_retryable(&self) -> bool {
        match self {
            ObjectClientError::Service(e) => e.is_retryable(),
            ObjectClientError::Client(e) => e.is_retryable(),
        }
    }

    /// What the store's answer means, if this is a service error.
    pub fn service_kind(&self) -> Option<ServiceErrorKind> {
        match self {
            ObjectClientError::Service(e) => Some(e.kind()),
            ObjectClientError::Client(_) => None,
        }
    }

    /// The store's raw error code (for logs and tests), if this is a service
    /// error. Decisions use [`ObjectClientError::service_kind`].
    pub fn service_code(&self) -> Option<&str> {
        match self {
            ObjectClientError::Service(e) => Some(e.code.as_str()),
            ObjectClientError::Client(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ServiceErrorKind::*;
    use super::*;

    fn service(status: u16, code: &str) -> ServiceError {
        ServiceError::sample(status, code)
    }

    #[test]
    fn codes_classify_by_their_oss_and_s3_spellings() {
        let table: &[(u16, &str, ServiceErrorKind)] = &[
            (404, "NoSuchKey", NotFound),
            (404, "NoSuchBucket", NotFound),
            (404, "NoSuchVersion", NotFound),
            (404, "NotFound", NotFound),
            (403, "AccessDenied", AccessDenied),
            (403, "Forbidden", AccessDenied),
            (403, "AllAccessDisabled", AccessDenied),
            (503, "SlowDown", Throttled),
            (400, "Throttling", Throttled),
            (400, "ThrottlingException", Throttled),
            (503, "RequestLimitExceeded", Throttled),
            (503, "RequestThrottled", Throttled),
            (429, "TooManyRequests", Throttled),
            (429, "TooManyRequestsException", Throttled),
            (503, "BandwidthLimitExceeded", Throttled),
            (503, "DownloadTrafficRateLimitExceeded", Throttled),
            (503, "UploadTrafficRateLimitExceeded", Throttled),
            (403, "RequestTimeTooSkewed", ClockSkew),
            (412, "PreconditionFailed", PreconditionFailed),
            (403, "InvalidAccessKeyId", InvalidCredentials),
            (403, "SignatureDoesNotMatch", InvalidCredentials),
            (403, "SecurityTokenExpired", InvalidCredentials),
            (403, "InvalidSecurityToken", InvalidCredentials),
            (400, "ExpiredToken", InvalidCredentials),
            (400, "InvalidToken", InvalidCredentials),
            (400, "InvalidArgument", Other("InvalidArgument".into())),
            (416, "InvalidRange", Other("InvalidRange".into())),
            (500, "InternalError", Other("InternalError".into())),
            (
                503,
                "ServiceUnavailable",
                Other("ServiceUnavailable".into()),
            ),
        ];
        for (status, code, kind) in table {
            assert_eq!(
                ServiceErrorKind::classify(*status, code),
                *kind,
                "{status} {code}"
            );
        }
    }

    #[test]
    fn the_code_wins_over_the_status() {
        // A skewed clock is refused with 403, a missing key may come as 403
        // from a store that hides existence, a throttle as 400.
        assert_eq!(
            ServiceErrorKind::classify(403, "RequestTimeTooSkewed"),
            ClockSkew
        );
        assert_eq!(ServiceErrorKind::classify(403, "NoSuchKey"), NotFound);
        assert_eq!(ServiceErrorKind::classify(400, "SlowDown"), Throttled);
        assert_eq!(
            ServiceErrorKind::classify(403, "SignatureDoesNotMatch"),
            InvalidCredentials
        );
    }

    #[test]
    fn without_a_known_code_the_status_decides() {
        for code in ["", "SomethingNew"] {
            assert_eq!(ServiceErrorKind::classify(404, code), NotFound, "{code:?}");
            assert_eq!(
                ServiceErrorKind::classify(403, code),
                AccessDenied,
                "{code:?}"
            );
            assert_eq!(
                ServiceErrorKind::classify(401, code),
                InvalidCredentials,
                "{code:?}"
            );
            assert_eq!(
                ServiceErrorKind::classify(412, code),
                PreconditionFailed,
                "{code:?}"
            );
            assert_eq!(ServiceErrorKind::classify(429, code), Throttled, "{code:?}");
            assert_eq!(
                ServiceErrorKind::classify(503, code),
                Other(code.into()),
                "a 503 alone is a server fault, not a throttle"
            );
            assert_eq!(ServiceErrorKind::classify(400, code), Other(code.into()));
        }
    }

    #[test]
    fn retry_follows_status_and_kind() {
        assert!(service(503, "SlowDown").is_retryable());
        assert!(service(500, "").is_retryable());
        assert!(service(408, "").is_retryable());
        assert!(service(429, "").is_retryable());
        assert!(service(400, "Throttling").is_retryable());
        assert!(service(403, "RequestTimeTooSkewed").is_retryable());
        assert!(!service(403, "AccessDenied").is_retryable());
        assert!(!service(404, "").is_retryable());
        assert!(!service(403, "InvalidAccessKeyId").is_retryable());
        assert!(!service(412, "PreconditionFailed").is_retryable());
        assert!(!service(400, "InvalidArgument").is_retryable());
    }

    #[test]
    fn an_answer_without_a_code_displays_its_kind() {
        let e = service(404, "");
        assert_eq!(e.kind(), NotFound);
        assert_eq!(e.code, "", "no code is invented");
        assert_eq!(e.to_string(), "not found (HTTP 404): m [request id r]");
        assert_eq!(
            service(403, "AccessDenied").to_string(),
            "AccessDenied (HTTP 403): m [request id r]"
        );
        let wrapped = ObjectClientError::from(service(404, ""));
        assert_eq!(wrapped.service_kind(), Some(NotFound));
        assert_eq!(wrapped.service_code(), Some(""));
        let client = ObjectClientError::from(ClientError::Transport("x".into()));
        assert_eq!(client.service_kind(), None);
    }
}
