//! Decoding the store's error answers.
//!
//! Design: an error answer becomes a [`ServiceError`] with the store's raw
//! code, message and request id, whatever shape it came in: an XML `<Error>`
//! body (S3 and OSS), for HEAD (which has no body) OSS's base64 XML in
//! `x-oss-err`, or nothing at all. An answer without a parseable code keeps
//! an empty code, and [`ServiceError::kind`] classifies it by its status, so
//! a body-less HEAD 404 is `NotFound` without a made-up `NoSuchKey`. The
//! request id falls back to the `x-oss-request-id`/`x-amz-request-id`
//! headers, and OSS's `EC` detail code is kept in the message.

use base64::Engine as _;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::response::{header_str, read_limited};
use super::HttpObjectClient;
use crate::object_client::ServiceError;

/// Largest error body we read and parse; error XML is a few hundred bytes.
const MAX_ERROR_BODY: usize = 64 * 1024;

impl HttpObjectClient {
    /// Reads an error answer and resyncs the clock when it calls for it.
    pub(super) async fn service_error(
        &self,
        response: reqwest::Response,
        is_head: bool,
    ) -> ServiceError {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = if is_head {
            None
        } else {
            Some(read_limited(response, MAX_ERROR_BODY).await)
        };
        let error = decode(status, &headers, body.as_deref());
        self.resync_clock(&headers, &error);
        error
    }
}

/// The store's error from an answer's status, headers and body (`None` for
/// a HEAD, whose XML can only come in `x-oss-err`).
fn decode(status: u16, headers: &HeaderMap, body: Option<&[u8]>) -> ServiceError {
    let parsed = match body {
        None => header_str(headers, "x-oss-err").and_then(|b64| {
            let xml = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            parse_error_xml(&String::from_utf8_lossy(&xml))
        }),
        Some(body) => parse_error_xml(&String::from_utf8_lossy(body)),
    };
    let mut error = parsed.unwrap_or_else(|| ServiceError {
        status,
        code: String::new(),
        message: String::new(),
        request_id: String::new(),
        string_to_sign: None,
    });
    if error.code.is_empty() && error.message.is_empty() {
        error.message = match header_str(headers, "x-oss-ec") {
            Some(ec) => format!("no error body (EC {ec})"),
            None => "no error body".to_string(),
        };
    }
    if error.request_id.is_empty() {
        error.request_id = header_str(headers, "x-oss-request-id")
            .or_else(|| header_str(headers, "x-amz-request-id"))
            .unwrap_or_default()
            .to_string();
    }
    error.status = status;
    error
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorXml {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    string_to_sign: Option<String>,
    #[serde(default, rename = "EC")]
    ec: Option<String>,
}

/// An `<Error>` document with a non-empty `<Code>`; `status` is left 0 for
/// the caller to fill in.
pub(crate) fn parse_error_xml(xml: &str) -> Option<ServiceError> {
    let e: ErrorXml = quick_xml::de::from_str(xml).ok()?;
    if e.code.is_empty() {
        return None;
    }
    let message = match e.ec {
        Some(ec) if !ec.is_empty() => format!("{} (EC {ec})", e.message),
        _ => e.message,
    };
    Some(ServiceError {
        status: 0,
        code: e.code,
        message,
        request_id: e.request_id,
        string_to_sign: e.string_to_sign,
    })
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;
    use crate::object_client::ServiceErrorKind;

    #[test]
    fn parses_error_xml() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SignatureDoesNotMatch</Code><Message>bad sig</Message>
<RequestId>RID1</RequestId><HostId>h</HostId><StringToSign>GET&#10;x</StringToSign><EC>0002-00000040</EC></Error>"#;
        let e = parse_error_xml(xml).unwrap();
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert_eq!(e.request_id, "RID1");
        assert_eq!(e.string_to_sign.as_deref(), Some("GET\nx"));
        assert!(e.message.contains("bad sig") && e.message.contains("0002-00000040"));
        assert!(parse_error_xml("not xml").is_none());
        assert!(parse_error_xml("<Error><Message>m</Message></Error>").is_none());
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn a_bodyless_head_404_is_not_found_without_a_code() {
        let e = decode(404, &headers(&[("x-amz-request-id", "RID")]), None);
        assert_eq!(e.kind(), ServiceErrorKind::NotFound);
        assert_eq!(e.code, "");
        assert_eq!(e.status, 404);
        assert_eq!(e.request_id, "RID");
        assert_eq!(e.message, "no error body");
        let e = decode(403, &headers(&[("x-oss-ec", "0003-00000001")]), None);
        assert_eq!(e.kind(), ServiceErrorKind::AccessDenied);
        assert_eq!(e.message, "no error body (EC 0003-00000001)");
    }

    #[test]
    fn a_head_error_comes_from_x_oss_err_and_a_get_error_from_its_body() {
        let xml = "<Error><Code>NoSuchBucket</Code><Message>gone</Message>\
                   <RequestId>R1</RequestId></Error>";
        let b64 = base64::engine::general_purpose::STANDARD.encode(xml);
        let head = decode(404, &headers(&[("x-oss-err", &b64)]), None);
        let get = decode(404, &HeaderMap::new(), Some(xml.as_bytes()));
        for e in [head, get] {
            assert_eq!(e.code, "NoSuchBucket");
            assert_eq!(e.message, "gone");
            assert_eq!(e.request_id, "R1");
            assert_eq!(e.status, 404);
            assert_eq!(e.kind(), ServiceErrorKind::NotFound);
        }
        let garbled = decode(503, &HeaderMap::new(), Some(b"<html>busy</html>"));
        assert_eq!(garbled.code, "");
        assert_eq!(garbled.kind(), ServiceErrorKind::Other(String::new()));
        assert!(garbled.is_retryable());
    }
}
