//! ListObjectsV2 answers: the XML a store sends, as a [`ListPage`].
//!
//! Design decision: keys and continuation tokens are decoded only when the
//! store says it encoded them (`EncodingType=url`), and a token is followed
//! only while the page says it is truncated, so a store that sends a token
//! on its last page does not make the walk go on (see also
//! [`crate::object_client::list_all`], which refuses a repeated token).

use std::time::SystemTime;

use serde::Deserialize;

use crate::http_client::strip_etag;
use crate::object_client::{ClientError, ListPage, ObjectMeta};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResultXml {
    #[serde(default)]
    contents: Vec<ContentsXml>,
    #[serde(default)]
    next_continuation_token: Option<String>,
    #[serde(default)]
    is_truncated: Option<bool>,
    #[serde(default)]
    encoding_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContentsXml {
    key: String,
    #[serde(default)]
    last_modified: Option<String>,
    #[serde(default, rename = "ETag")]
    etag: Option<String>,
    #[serde(default)]
    size: u64,
}

/// One ListObjectsV2 page from its XML (keys decoded when the store says
/// `EncodingType=url`; the continuation token only when truncated).
pub(crate) fn parse_list(xml: &str) -> Result<ListPage, ClientError> {
    let parsed: ListBucketResultXml = quick_xml::de::from_str(xml)
        .map_err(|e| ClientError::BadResponse(format!("unparseable listing: {e}")))?;
    let url_encoded = parsed
        .encoding_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("url"));
    let decode = |s: &str| -> Result<String, ClientError> {
        if !url_encoded {
            return Ok(s.to_string());
        }
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|e| ClientError::BadResponse(format!("listing key {s:?}: {e}")))
    };
    let objects = parsed
        .contents
        .into_iter()
        .map(|c| {
            Ok(ObjectMeta {
                key: decode(&c.key)?,
                size: c.size,
                etag: c
                    .etag
                    .as_deref()
                    .map(strip_etag)
                    .unwrap_or_default()
                    .to_string(),
                last_modified: c.last_modified.as_deref().and_then(|t| {
                    chrono::DateTime::parse_from_rfc3339(t)
                        .ok()
                        .map(SystemTime::from)
                }),
                crc64: None,
                checksums: Default::default(),
            })
        })
        .collect::<Result<Vec<_>, ClientError>>()?;
    let token = match parsed.next_continuation_token {
        Some(t) if !t.is_empty() && parsed.is_truncated != Some(false) => Some(decode(&t)?),
        _ => None,
    };
    Ok(ListPage {
        objects,
        next_continuation_token: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listing_with_url_encoding() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult>
  <Name>b</Name><Prefix>a%2F</Prefix><MaxKeys>2</MaxKeys><EncodingType>url</EncodingType>
  <IsTruncated>true</IsTruncated>
  <Contents><Key>a/x%20y%2Bz%E4%B8%AD</Key><LastModified>2024-05-01T10:20:30.000Z</LastModified>
    <ETag>"ABC"</ETag><Size>12</Size><StorageClass>Standard</StorageClass></Contents>
  <Contents><Key>a/b</Key><ETag>&quot;D&quot;</ETag><Size>0</Size></Contents>
  <NextContinuationToken>tok%2Fen%3D</NextContinuationToken><KeyCount>2</KeyCount>
</ListBucketResult>"#;
        let page = parse_list(xml).unwrap();
        assert_eq!(page.objects.len(), 2);
        assert_eq!(page.objects[0].key, "a/x y+z中");
        assert_eq!(page.objects[0].size, 12);
        assert_eq!(page.objects[0].etag, "ABC");
        let t = page.objects[0].last_modified.unwrap();
        assert_eq!(httpdate::fmt_http_date(t), "Wed, 01 May 2024 10:20:30 GMT");
        assert_eq!(page.objects[1].etag, "D");
        assert_eq!(page.next_continuation_token.as_deref(), Some("tok/en="));

        let empty =
            parse_list("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>")
                .unwrap();
        assert_eq!(empty, ListPage::default());
        assert!(parse_list("<nope").is_err());
    }

    #[test]
    fn plain_listing_is_not_decoded() {
        let xml = "<ListBucketResult><Contents><Key>a%20b</Key><Size>1</Size></Contents>\
                   <IsTruncated>false</IsTruncated><NextContinuationToken>x</NextContinuationToken></ListBucketResult>";
        let page = parse_list(xml).unwrap();
        assert_eq!(page.objects[0].key, "a%20b");
        assert_eq!(page.next_continuation_token, None, "not truncated");
    }
}
