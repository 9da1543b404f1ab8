//! The `ossc` command's exit codes.
//!
//! Design decision: a small, documented table that scripts can rely on,
//! derived only from the typed errors already in an error's chain (store
//! errors, configuration errors, the agent client's errors), never from
//! message text. Anything not classified is the generic failure, 1. Usage
//! errors (bad flags) are 2, as clap reports them.

use ossc_core::config::{ConfigError, EnvError};
use ossc_core::object_client::{ClientError, ObjectClientError, ServiceErrorKind};

use crate::cli::agent_client::{AgentError, AgentUnreachable};

/// What `ossc` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    NotFound = 3,
    AccessDenied = 4,
    StoreUnreachable = 5,
    AgentUnreachable = 6,
}

/// The table shown by `ossc --help` (and in docs/configuration.md).
pub const TABLE: &str = "\
Exit codes:
  0  success
  1  failure not listed below (e.g. a CRC-64 mismatch, a local write error)
  2  usage or configuration error (bad flags, OSS_* environment, config file)
  3  not found (bucket, object or path)
  4  access denied or bad credentials
  5  store unreachable or failing (connection errors, 5xx after retries)
  6  no node agent answers on the socket";

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Classifies an error by the first typed cause in its chain.
    pub fn of(error: &anyhow::Error) -> ExitCode {
        for cause in error.chain() {
            if let Some(e) = cause.downcast_ref::<ObjectClientError>() {
                return Self::of_store(e);
            }
            if let Some(e) = cause.downcast_ref::<ClientError>() {
                return Self::of_store(&ObjectClientError::Client(e.clone()));
            }
            if cause.is::<ConfigError>() || cause.is::<EnvError>() {
                return ExitCode::Usage;
            }
            if cause.is::<AgentUnreachable>() {
                return ExitCode::AgentUnreachable;
            }
            if let Some(AgentError { errno, .. }) = cause.downcast_ref::<AgentError>() {
                return match *errno {
                    libc::ENOENT => ExitCode::NotFound,
                    libc::EACCES | libc::EPERM => ExitCode::AccessDenied,
                    libc::EINVAL => ExitCode::Usage,
                    _ => ExitCode::Failure,
                };
            }
        }
        ExitCode::Failure
    }

    fn of_store(e: &ObjectClientError) -> ExitCode {
        match e {
            ObjectClientError::Service(s) => match s.kind() {
                ServiceErrorKind::NotFound => ExitCode::NotFound,
                ServiceErrorKind::AccessDenied
                | ServiceErrorKind::InvalidCredentials
                | ServiceErrorKind::ClockSkew => ExitCode::AccessDenied,
                ServiceErrorKind::Throttled => ExitCode::StoreUnreachable,
                _ if (500..=599).contains(&s.status) => ExitCode::StoreUnreachable,
                _ => ExitCode::Failure,
            },
            ObjectClientError::Client(ClientError::Transport(_)) => ExitCode::StoreUnreachable,
            ObjectClientError::Client(_) => ExitCode::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossc_core::object_client::ServiceError;

    fn service(code: &str, status: u16) -> anyhow::Error {
        anyhow::Error::new(ObjectClientError::Service(ServiceError {
            status,
            code: code.into(),
            message: String::new(),
            request_id: String::new(),
            string_to_sign: None,
        }))
        .context("listing oss://b/p/")
    }

    #[test]
    fn typed_causes_pick_the_code() {
        assert_eq!(
            ExitCode::of(&service("NoSuchBucket", 404)),
            ExitCode::NotFound
        );
        assert_eq!(ExitCode::of(&service("", 404)), ExitCode::NotFound);
        assert_eq!(
            ExitCode::of(&service("SignatureDoesNotMatch", 403)),
            ExitCode::AccessDenied
        );
        assert_eq!(
            ExitCode::of(&service("InternalError", 503)),
            ExitCode::StoreUnreachable
        );
        let transport = anyhow::Error::new(ObjectClientError::Client(ClientError::Transport(
            "connection refused".into(),
        )));
        assert_eq!(ExitCode::of(&transport), ExitCode::StoreUnreachable);
        let crc = anyhow::Error::new(ObjectClientError::Client(ClientError::Crc64Mismatch {
            key: "k".into(),
            expected: 1,
            actual: 2,
        }));
        assert_eq!(ExitCode::of(&crc), ExitCode::Failure);
        let env = anyhow::Error::new(EnvError::MissingPath).context("resolving the store");
        assert_eq!(ExitCode::of(&env), ExitCode::Usage);
        let agent = anyhow::Error::new(AgentUnreachable {
            socket: "/x.sock".into(),
            reason: "No such file or directory".into(),
        });
        assert_eq!(ExitCode::of(&agent), ExitCode::AgentUnreachable);
        let missing = anyhow::Error::new(AgentError {
            errno: libc::ENOENT,
            message: "nothing under x".into(),
        });
        assert_eq!(ExitCode::of(&missing), ExitCode::NotFound);
        assert_eq!(ExitCode::of(&anyhow::anyhow!("other")), ExitCode::Failure);
    }

    #[test]
    fn store_errors_pick_the_code_by_kind() {
        for (code, status, exit) in [
            ("", 403, ExitCode::AccessDenied),
            ("", 401, ExitCode::AccessDenied),
            ("ExpiredToken", 400, ExitCode::AccessDenied),
            ("RequestTimeTooSkewed", 403, ExitCode::AccessDenied),
            ("NoSuchKey", 404, ExitCode::NotFound),
            ("SlowDown", 503, ExitCode::StoreUnreachable),
            ("Throttling", 400, ExitCode::StoreUnreachable),
            ("", 429, ExitCode::StoreUnreachable),
            ("", 500, ExitCode::StoreUnreachable),
            ("PreconditionFailed", 412, ExitCode::Failure),
            ("InvalidArgument", 400, ExitCode::Failure),
        ] {
            assert_eq!(
                ExitCode::of(&service(code, status)),
                exit,
                "{code:?} {status}"
            );
        }
    }

    #[test]
    fn the_table_lists_every_code() {
        for code in [
            ExitCode::Ok,
            ExitCode::Failure,
            ExitCode::Usage,
            ExitCode::NotFound,
            ExitCode::AccessDenied,
            ExitCode::StoreUnreachable,
            ExitCode::AgentUnreachable,
        ] {
            assert!(
                TABLE.contains(&format!("\n  {}  ", code.code())),
                "{code:?} missing from the table"
            );
        }
    }
}
