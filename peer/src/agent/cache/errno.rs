//! What an OPEN reports when a file cannot be served: an errno and a message.
//! Store errors map to the errno an application understands (EACCES, ENOENT,
//! else EIO).

use ossc_core::object_client::ObjectClientError;

/// An error an OPEN reports: errno and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    pub errno: i32,
    pub message: String,
}

/// Maps a store error to the errno an OPEN reports.
pub fn fetch_error(key: &str, e: &ObjectClientError) -> OpenError {
    OpenError {
        errno: errno_for(e),
        message: format!("fetching {key}: {e}"),
    }
}

/// EACCES for permission problems, ENOENT for missing keys/buckets, EIO else
/// (including CRC mismatches and transport failures).
pub fn errno_for(e: &ObjectClientError) -> i32 {
    use ossc_core::object_client::ServiceErrorKind;
    match e.service_kind() {
        Some(ServiceErrorKind::AccessDenied | ServiceErrorKind::InvalidCredentials) => libc::EACCES,
        Some(ServiceErrorKind::NotFound) => libc::ENOENT,
        _ => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ossc_core::object_client::{ClientError, ServiceError};

    fn service(code: &str, status: u16) -> ObjectClientError {
        ObjectClientError::Service(ServiceError {
            status,
            code: code.into(),
            message: String::new(),
            request_id: String::new(),
            string_to_sign: None,
        })
    }

    #[test]
    fn store_errors_map_to_errno() {
        assert_eq!(errno_for(&service("AccessDenied", 403)), libc::EACCES);
        assert_eq!(
            errno_for(&service("SignatureDoesNotMatch", 403)),
            libc::EACCES
        );
        assert_eq!(errno_for(&service("NoSuchBucket", 404)), libc::ENOENT);
        assert_eq!(errno_for(&service("SlowDown", 503)), libc::EIO);
        let crc = ClientError::Crc64Mismatch {
            key: "k".into(),
            expected: 1,
            actual: 2,
        };
        assert_eq!(errno_for(&crc.into()), libc::EIO);
    }
}
