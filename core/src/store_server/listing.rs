//! ListObjects (V2 and V1) over the sorted keys of a bucket directory.
//!
//! Design decision: a page is cut from the sorted stream of *items* (keys and
//! rolled-up common prefixes, each compared as its string), and both the V2
//! continuation token and `start-after`/`marker` mean "items strictly greater
//! than this string". A token is the last item of the page, base64 (standard
//! alphabet, like OSS tokens, so `+`, `/` and `=` appear and clients must
//! encode it properly when sending it back). Keys sharing a common prefix are
//! contiguous in byte order, so a prefix never reappears on a later page.

use std::borrow::Cow;

use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::files::ListedObject;
use super::xml::{iso8601, xml_escape};
use super::ApiError;

/// Page size when `max-keys` is absent (OSS's default).
pub const DEFAULT_MAX_KEYS: usize = 100;
/// Largest page; larger requests are clamped (as S3 does).
pub const MAX_MAX_KEYS: usize = 1000;

/// `encoding-type=url`: everything but RFC 3986 unreserved characters and '/'.
const URL_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Which ListObjects dialect a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    V1,
    V2,
}

/// A parsed listing request.
#[derive(Debug, Clone)]
pub(crate) struct ListRequest {
    pub dialect: Dialect,
    pub prefix: String,
    pub delimiter: String,
    pub max_keys: usize,
    /// V2 `start-after` or V1 `marker`, as sent.
    pub start_after: Option<String>,
    /// V2 `continuation-token`, as sent.
    pub continuation_token: Option<String>,
    pub url_encode: bool,
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl ListRequest {
    pub fn parse(query: &[(String, String)]) -> Result<Self, ApiError> {
        let dialect = match param(query, "list-type") {
            Some("2") => Dialect::V2,
            None => Dialect::V1,
            Some(other) => {
                return Err(ApiError::invalid_argument(format!(
                    "list-type {other:?} is not supported"
                )))
            }
        };
        let max_keys = match param(query, "max-keys") {
            None => DEFAULT_MAX_KEYS,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| ApiError::invalid_argument(format!("max-keys {v:?} is not a number")))?
                .min(MAX_MAX_KEYS),
        };
        let url_encode = match param(query, "encoding-type") {
            None => false,
            Some("url") => true,
            Some(other) => {
                return Err(ApiError::invalid_argument(format!(
                    "encoding-type {other:?} is not supported"
                )))
            }
        };
        let (start_after, continuation_token) = match dialect {
            Dialect::V2 => (
                param(query, "start-after").map(str::to_string),
                param(query, "continuation-token").map(str::to_string),
            ),
            Dialect::V1 => (param(query, "marker").map(str::to_string), None),
        };
        Ok(Self {
            dialect,
            prefix: param(query, "prefix").unwrap_or_default().to_string(),
            delimiter: param(query, "delimiter").unwrap_or_default().to_string(),
            max_keys,
            start_after,
            continuation_token,
            url_encode,
        })
    }

    /// Items must be strictly greater than this.
    fn marker(&self) -> Result<Option<String>, ApiError> {
        match &self.continuation_token {
            Some(token) => decode_token(token).map(Some),
            None => Ok(self.start_after.clone().filter(|s| !s.is_empty())),
        }
    }
}

pub(crate) fn encode_token(item: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(item.as_bytes())
}

fn decode_token(token: &str) -> Result<String, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::invalid_argument("The continuation token provided is incorrect"))
}

/// One page.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub objects: Vec<ListedObject>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// Last item of the page when truncated (next marker / token source).
    pub last_item: Option<String>,
}

/// Cuts one page from `all` (sorted, every key already under the prefix).
pub(crate) fn paginate(all: Vec<ListedObject>, req: &ListRequest) -> Result<Page, ApiError> {
    let marker = req.marker()?;
    let mut page = Page::default();
    if req.max_keys == 0 {
        return Ok(page);
    }
    let mut count = 0usize;
    for obj in all {
        let rest = &obj.key[req.prefix.len()..];
        let common = (!req.delimiter.is_empty())
            .then(|| rest.find(&req.delimiter))
            .flatten()
            .map(|i| obj.key[..req.prefix.len() + i + req.delimiter.len()].to_string());
        let item: &str = common.as_deref().unwrap_or(&obj.key);
        if marker.as_deref().is_some_and(|m| item <= m) {
            continue;
        }
        if common.is_some() && page.common_prefixes.last().map(String::as_str) == common.as_deref()
        {
            continue;
        }
        if count == req.max_keys {
            page.truncated = true;
            break;
        }
        count += 1;
        page.last_item = Some(item.to_string());
        match common {
            Some(c) => page.common_prefixes.push(c),
            None => page.objects.push(obj),
        }
    }
    if !page.truncated {
        page.last_item = None;
    }
    Ok(page)
}

/// The `ListBucketResult` document of `page`.
pub(crate) fn render(bucket: &str, req: &ListRequest, page: &Page) -> String {
    let enc = |s: &str| -> String {
        let encoded: Cow<'_, str> = if req.url_encode {
            utf8_percent_encode(s, URL_ENCODE_SET).into()
        } else {
            s.into()
        };
        xml_escape(&encoded).into_owned()
    };
    let mut x = String::with_capacity(256 + page.objects.len() * 256);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult>");
    x.push_str(&format!("<Name>{}</Name>", xml_escape(bucket)));
    x.push_str(&format!("<Prefix>{}</Prefix>", enc(&req.prefix)));
    match req.dialect {
        Dialect::V2 => {
            if let Some(t) = &req.continuation_token {
                x.push_str(&format!(
                    "<ContinuationToken>{}</ContinuationToken>",
                    enc(t)
                ));
            }
            if let Some(s) = &req.start_after {
                x.push_str(&format!("<StartAfter>{}</StartAfter>", enc(s)));
            }
        }
        Dialect::V1 => {
            let marker = req.start_after.as_deref().unwrap_or_default();
            x.push_str(&format!("<Marker>{}</Marker>", enc(marker)));
        }
    }
    x.push_str(&format!("<MaxKeys>{}</MaxKeys>", req.max_keys));
    if !req.delimiter.is_empty() {
        x.push_str(&format!("<Delimiter>{}</Delimiter>", enc(&req.delimiter)));
    }
    if req.url_encode {
        x.push_str("<EncodingType>url</EncodingType>");
    }
    x.push_str(&format!("<IsTruncated>{}</IsTruncated>", page.truncated));
    match (req.dialect, &page.last_item) {
        (Dialect::V2, last) => {
            let key_count = page.objects.len() + page.common_prefixes.len();
            x.push_str(&format!("<KeyCount>{key_count}</KeyCount>"));
            if let Some(last) = last {
                let token = encode_token(last);
                x.push_str(&format!(
                    "<NextContinuationToken>{}</NextContinuationToken>",
                    enc(&token)
                ));
            }
        }
        (Dialect::V1, Some(last)) => {
            x.push_str(&format!("<NextMarker>{}</NextMarker>", enc(last)));
        }
        (Dialect::V1, None) => {}
    }
    for obj in &page.objects {
        x.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag>\
             <Type>Normal</Type><Size>{}</Size><StorageClass>Standard</StorageClass></Contents>",
            enc(&obj.key),
            iso8601(obj.version.modified()),
            xml_escape(&obj.etag),
            obj.version.size(),
        ));
    }
    for p in &page.common_prefixes {
        x.push_str(&format!(
            "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
            enc(p)
        ));
    }
    x.push_str("</ListBucketResult>");
    x
}
