//! Reading answers: headers, body limits, and the error chain of a failed
//! transfer.
//!
//! Design: nothing about an answer is trusted. Header values that do not
//! parse are errors ([`crc64_of`]) or absent ([`parse_content_range`] gives
//! `None`), never defaults, and every body we buffer has a ceiling: error
//! bodies are cut at their limit ([`read_limited`], the prefix is enough to
//! parse), listing pages fail beyond theirs ([`read_capped`], a bigger page
//! is a broken or hostile store).

use reqwest::header::HeaderMap;

use super::CRC64_HEADER;
use crate::object_client::ClientError;

/// The error and its sources, one line (reqwest's Display hides the cause).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A header as text; `None` when absent or not visible ASCII.
pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The answer's ETag, stripped; empty when it sent none.
pub(super) fn etag_of(headers: &HeaderMap) -> String {
    header_str(headers, "etag")
        .map(strip_etag)
        .unwrap_or_default()
        .to_string()
}

/// An ETag with its quotes and weak marker stripped.
pub(crate) fn strip_etag(etag: &str) -> &str {
    let e = etag.trim();
    let e = e.strip_prefix("W/").unwrap_or(e);
    e.trim_matches('"')
}

/// The whole-object CRC-64 header, when sent; an error when unparseable.
pub(super) fn crc64_of(headers: &HeaderMap) -> Result<Option<u64>, ClientError> {
    match header_str(headers, CRC64_HEADER) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ClientError::BadResponse(format!("bad {CRC64_HEADER} {v:?}"))),
    }
}

/// `bytes a-b/total` -> `(a, b + 1, total)`.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b, total): (u64, u64, u64) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (a <= b && b < total).then_some((a, b + 1, total))
}

/// At most `limit` bytes of the body; the rest, and a failed read, end it.
pub(super) async fn read_limited(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    body
}

/// The whole body, or an error once it exceeds `limit` bytes (checked
/// against `Content-Length` first, then while reading).
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, ClientError> {
    let too_big = || ClientError::BadResponse(format!("{what} is larger than {limit} bytes"));
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ClientError::Transport(error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_and_etag_parsing() {
        assert_eq!(parse_content_range("bytes 0-99/200"), Some((0, 100, 200)));
        assert_eq!(
            parse_content_range("bytes 199-199/200"),
            Some((199, 200, 200))
        );
        assert_eq!(parse_content_range("bytes 5-4/200"), None);
        assert_eq!(parse_content_range("bytes 0-200/200"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(strip_etag("\"abc\""), "abc");
        assert_eq!(strip_etag("W/\"abc\""), "abc");
        assert_eq!(strip_etag("abc"), "abc");
    }
}
