//! The three store operations, one attempt each: a ListObjectsV2 page, a
//! HEAD, and a ranged GET streamed into a sink.
//!
//! Design: trust nothing about a ranged answer. A GET must be a 206 whose
//! `Content-Range` is the requested range (clamped only at the object's end),
//! whose `Content-Length` is that range's length and whose ETag is the pinned
//! one; otherwise it is an error before any byte reaches the sink (`412` or a
//! different ETag: [`ClientError::ObjectChanged`]; anything else:
//! [`ClientError::BadResponse`]). The one tolerated 200 is a whole-object
//! answer to a request for exactly the whole object. Body chunks then go
//! from hyper's buffer into the sink at their absolute offsets while the
//! range's CRC-64 is computed on the same bytes: one copy, no per-part
//! buffer. A short body is [`ClientError::Truncated`] (retryable: the retry
//! rewrites the whole range). HEAD sends `x-amz-checksum-mode: ENABLED` and
//! reads every digest the store declares into [`ObjectMeta::checksums`].
//! Retries wrap these calls in the client's `ObjectClient` implementation.

use std::ops::Range;
use std::sync::atomic::Ordering;

use super::response::{
    crc64_of, error_chain, etag_of, header_str, parse_content_range, read_capped,
};
use super::{HttpObjectClient, MAX_LIST_BODY};
use crate::checksums::{StoreChecksums, CHECKSUM_MODE_HEADER};
use crate::crc64::Crc64Hasher;
use crate::object_client::{ClientError, GetRangeMeta, ListPage, ObjectMeta, RangeSink, Result};

impl HttpObjectClient {
    pub(super) async fn list_once(
        &self,
        prefix: &str,
        continuation_token: Option<&str>,
        max_keys: u32,
    ) -> Result<ListPage> {
        let mut query = vec![
            ("list-type".to_string(), "2".to_string()),
            ("max-keys".to_string(), max_keys.to_string()),
            ("prefix".to_string(), prefix.to_string()),
            ("encoding-type".to_string(), "url".to_string()),
        ];
        if let Some(t) = continuation_token {
            query.push(("continuation-token".to_string(), t.to_string()));
        }
        let response = self
            .send(reqwest::Method::GET, "", &query, Vec::new())
            .await?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(ClientError::BadResponse(format!(
                "listing answered {}",
                response.status()
            ))
            .into());
        }
        let body = read_capped(response, MAX_LIST_BODY, "listing page").await?;
        crate::list_xml::parse_list(&String::from_utf8_lossy(&body)).map_err(Into::into)
    }

    pub(super) async fn head_once(&self, key: &str) -> Result<ObjectMeta> {
        let checksum_mode = vec![(CHECKSUM_MODE_HEADER.to_string(), "ENABLED".to_string())];
        let response = self
            .send(reqwest::Method::HEAD, key, &[], checksum_mode)
            .await?;
        let headers = response.headers();
        if response.status() != reqwest::StatusCode::OK {
            return Err(
                ClientError::BadResponse(format!("HEAD answered {}", response.status())).into(),
            );
        }
        let size = header_str(headers, "content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| ClientError::BadResponse("HEAD without Content-Length".into()))?;
        let etag = etag_of(headers);
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            last_modified: header_str(headers, "last-modified")
                .and_then(|d| httpdate::parse_http_date(d).ok()),
            crc64: crc64_of(headers)?,
            checksums: StoreChecksums::from_headers(|n| header_str(headers, n), &etag),
            etag,
        })
    }

    pub(super) async fn get_once(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
        sink: &dyn RangeSink,
    ) -> Result<GetRangeMeta> {
        let mut headers = vec![
            (
                "Range".to_string(),
                format!("bytes={}-{}", range.start, range.end - 1),
            ),
            ("x-oss-range-behavior".to_string(), "standard".to_string()),
            ("Accept-Encoding".to_string(), "identity".to_string()),
        ];
        if let Some(etag) = if_match {
            headers.push(("If-Match".to_string(), format!("\"{etag}\"")));
        }
        let mut response = self.send(reqwest::Method::GET, key, &[], headers).await?;
        let status = response.status();
        let etag = etag_of(response.headers());
        let changed = |found: &str| ClientError::ObjectChanged {
            key: key.to_string(),
            expected: if_match.unwrap_or_default().to_string(),
            found: found.to_string(),
        };
        if status == reqwest::StatusCode::PRECONDITION_FAILED {
            return Err(changed(if etag.is_empty() { "?" } else { &etag }).into());
        }
        if if_match.is_some_and(|p| p != etag) {
            return Err(changed(&etag).into());
        }
        let content_length = response.content_length();
        let (start, end, total) = match status {
            reqwest::StatusCode::PARTIAL_CONTENT => {
                let cr = header_str(response.headers(), "content-range")
                    .ok_or_else(|| ClientError::BadResponse("206 without Content-Range".into()))?;
                parse_content_range(cr).ok_or_else(|| {
                    ClientError::BadResponse(format!("unparseable Content-Range {cr:?}"))
                })?
            }
            // A whole-object answer is fine for a whole-object request only.
            reqwest::StatusCode::OK if range.start == 0 && content_length == Some(range.end) => {
                (0, range.end, range.end)
            }
            other => {
                return Err(ClientError::BadResponse(format!(
                    "ranged GET of {key} {range:?} answered {other}, not 206"
                ))
                .into())
            }
        };
        if start != range.start || end != range.end.min(total) || end <= start {
            return Err(ClientError::BadResponse(format!(
                "asked for bytes {range:?}, store sent {start}..{end} of {total}"
            ))
            .into());
        }
        let expected = end - start;
        if content_length != Some(expected) {
            return Err(ClientError::BadResponse(format!(
                "Content-Length {content_length:?} for a {expected}-byte range"
            ))
            .into());
        }
        let object_crc64 = crc64_of(response.headers())?;
        let mut hasher = Crc64Hasher::new();
        let mut received = 0u64;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(
                        key,
                        received,
                        expected,
                        "body stream failed: {}",
                        error_chain(&e)
                    );
                    break;
                }
            };
            let len = chunk.len() as u64;
            if received + len > expected {
                return Err(ClientError::BadResponse(format!(
                    "body longer than its {expected}-byte range"
                ))
                .into());
            }
            sink.write_at(start + received, &chunk)
                .map_err(|e| ClientError::Sink(e.to_string()))?;
            hasher.update(&chunk);
            received += len;
            self.bytes_received.fetch_add(len, Ordering::Relaxed);
        }
        if received < expected {
            return Err(ClientError::Truncated { expected, received }.into());
        }
        Ok(GetRangeMeta {
            object_size: total,
            etag,
            object_crc64,
            range_crc64: hasher.finish(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{client_at, raw_server};
    use super::*;
    use crate::object_client::{ObjectClient, ObjectClientError};

    #[tokio::test]
    async fn an_oversized_listing_page_fails_clearly() {
        let n = MAX_LIST_BODY + 1;
        for head in [
            format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n"),
            // No length up front: the cap applies while reading.
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_string(),
        ] {
            let addr = raw_server(head.clone(), n).await;
            let c = client_at(&format!("http://{addr}"));
            let e = c.list_page("", None, 1000).await.unwrap_err();
            assert!(
                matches!(&e, ObjectClientError::Client(ClientError::BadResponse(m)) if m.contains("larger than")),
                "{head:?}: {e}"
            );
        }
    }

    #[tokio::test]
    async fn a_bodyless_head_404_is_not_found() {
        let addr = raw_server(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nx-amz-request-id: R404\r\n\r\n"
                .to_string(),
            0,
        )
        .await;
        let c = client_at(&format!("http://{addr}"));
        let e = c.head("missing").await.unwrap_err();
        assert_eq!(
            e.service_kind(),
            Some(crate::object_client::ServiceErrorKind::NotFound),
            "{e}"
        );
        assert_eq!(e.service_code(), Some(""), "no code is invented");
        assert!(!e.is_retryable());
        assert_eq!(c.stats().requests, 1, "a missing key is not retried");
    }
}
