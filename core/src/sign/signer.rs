//! The client side: the headers that sign a request.
//!
//! Design decision: [`sign`] computes the date from the `now` it is given
//! (never from headers already on the request) and returns the headers the
//! caller must *set*, replacing any existing header of the same name; the
//! canonical form is computed over the request as the server will see it,
//! with those headers in place and no stale `Authorization`.

use std::time::SystemTime;

use super::canonical::{
    oss_v1_string_to_sign, oss_v4_additional_headers, oss_v4_canonical_request,
    s3_canonical_request, s3_default_signed_headers, Headers,
};
use super::signature::{hmac_sha1_base64, iso8601_basic, Scope, OSS_V4, S3_V4};
use super::{
    header, Credentials, RequestToSign, SignatureVersion, OSS_V1_PREFIX, UNSIGNED_PAYLOAD,
};

/// What signing produced: headers to add to the request.
#[derive(Debug, Clone)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    /// The string-to-sign, for debug logging on `SignatureDoesNotMatch`.
    pub string_to_sign: String,
}

/// Optional signing inputs beyond [`sign`]'s arguments.
#[derive(Debug, Clone, Default)]
pub struct SignOptions {
    /// OSS V4 only: extra header names to sign (sent as `AdditionalHeaders`).
    /// Names are lowercased; ones absent from the request, and ones V4 signs
    /// anyway (`content-type`, `content-md5`, `x-oss-*`), are dropped. `host`
    /// is taken from [`RequestToSign::host`] when there is no `Host` header.
    pub additional_headers: Vec<String>,
}

/// Signs `request` with [`SignOptions::default`].
pub fn sign(
    version: SignatureVersion,
    credentials: &Credentials,
    region: &str,
    request: &RequestToSign<'_>,
    now: SystemTime,
) -> Signed {
    sign_with_options(
        version,
        credentials,
        region,
        request,
        now,
        &SignOptions::default(),
    )
}

/// Signs `request`; the returned headers (date, content hash, token,
/// `Authorization`) must be set on the request, replacing same-named ones.
pub fn sign_with_options(
    version: SignatureVersion,
    credentials: &Credentials,
    region: &str,
    request: &RequestToSign<'_>,
    now: SystemTime,
    options: &SignOptions,
) -> Signed {
    let original = Headers::new(request.headers);
    let mut added: Vec<(String, String)> = Vec::new();
    let token_header = match version {
        SignatureVersion::OssV1 | SignatureVersion::OssV4 => header::OSS_SECURITY_TOKEN,
        SignatureVersion::S3V4 => header::AMZ_SECURITY_TOKEN,
    };
    match version {
        SignatureVersion::OssV1 => {
            added.push(("Date".to_owned(), httpdate::fmt_http_date(now)));
        }
        SignatureVersion::OssV4 => {
            added.push((header::OSS_DATE.to_owned(), iso8601_basic(now)));
            if original.get(header::OSS_CONTENT_SHA256).is_none() {
                added.push((
                    header::OSS_CONTENT_SHA256.to_owned(),
                    UNSIGNED_PAYLOAD.to_owned(),
                ));
            }
        }
        SignatureVersion::S3V4 => {
            added.push((header::AMZ_DATE.to_owned(), iso8601_basic(now)));
            if original.get(header::AMZ_CONTENT_SHA256).is_none() {
                added.push((
                    header::AMZ_CONTENT_SHA256.to_owned(),
                    UNSIGNED_PAYLOAD.to_owned(),
                ));
            }
        }
    }
    if let Some(token) = &credentials.security_token {
        added.push((token_header.to_owned(), token.clone()));
    }
    // The headers the server will see: the request's, with ours replacing
    // same-named ones (and no stale Authorization).
    let mut effective: Vec<(String, String)> = request
        .headers
        .iter()
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case(header::AUTHORIZATION)
                && !added.iter().any(|(a, _)| a.eq_ignore_ascii_case(name))
        })
        .cloned()
        .collect();
    effective.extend(added.iter().cloned());
    let headers = Headers::new(&effective);

    let (authorization, string_to_sign) = match version {
        SignatureVersion::OssV1 => {
            let date = headers.get(header::DATE).unwrap_or_default();
            let sts = oss_v1_string_to_sign(request, &headers, &date);
            let signature = hmac_sha1_base64(credentials.access_key_secret.as_bytes(), &sts);
            (
                format!("{OSS_V1_PREFIX}{}:{signature}", credentials.access_key_id),
                sts,
            )
        }
        SignatureVersion::OssV4 => {
            let datetime = headers.get(header::OSS_DATE).unwrap_or_default();
            let additional = oss_v4_additional_headers(&options.additional_headers, &headers);
            let canonical = oss_v4_canonical_request(request, &headers, &additional);
            let scope = Scope::new(&OSS_V4, &datetime, region);
            let sts = scope.string_to_sign(&datetime, &canonical);
            let signature = scope.signature(&credentials.access_key_secret, &sts);
            let mut auth = format!(
                "{} Credential={}/{}",
                OSS_V4.algorithm,
                credentials.access_key_id,
                scope.path()
            );
            if !additional.is_empty() {
                auth.push_str(",AdditionalHeaders=");
                auth.push_str(&additional.join(";"));
            }
            auth.push_str(",Signature=");
            auth.push_str(&signature);
            (auth, sts)
        }
        SignatureVersion::S3V4 => {
            let datetime = headers.get(header::AMZ_DATE).unwrap_or_default();
            let signed_names = s3_default_signed_headers(&headers);
            let canonical = s3_canonical_request(request, &headers, &signed_names);
            let scope = Scope::new(&S3_V4, &datetime, region);
            let sts = scope.string_to_sign(&datetime, &canonical);
            let signature = scope.signature(&credentials.access_key_secret, &sts);
            (
                format!(
                    "{} Credential={}/{}, SignedHeaders={}, Signature={signature}",
                    S3_V4.algorithm,
                    credentials.access_key_id,
                    scope.path(),
                    signed_names.join(";"),
                ),
                sts,
            )
        }
    };
    added.push(("Authorization".to_owned(), authorization));
    Signed {
        headers: added,
        string_to_sign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::test_support::{
        iso_to_time, oss_v4_vector, signature_of, str_field, unix, vectors, Req,
    };

    #[test]
    fn oss_v1_vector_with_request_via_sign() {
        let v = &vectors()["oss_v1"][0];
        let req = Req::from_json(&v["request"]);
        let date = req.header("Date").expect("Date").to_owned();
        let now = httpdate::parse_http_date(&date).unwrap();
        let signed = sign(
            SignatureVersion::OssV1,
            &Credentials::new("ak", str_field(v, "secret")),
            "",
            &req.view(),
            now,
        );
        assert_eq!(signed.string_to_sign, str_field(v, "string_to_sign"));
        let auth = signed
            .headers
            .iter()
            .find(|(n, _)| n == "Authorization")
            .map(|(_, v)| v.as_str());
        assert_eq!(auth, Some(str_field(v, "authorization")));
        assert!(signed
            .headers
            .iter()
            .any(|(n, v)| n == "Date" && *v == date));
    }

    #[test]
    fn oss_v1_api_reference_example_via_sign() {
        let v = &vectors()["oss_v1"][4];
        let req = Req {
            method: "PUT".into(),
            host: "oss-example.oss-cn-hangzhou.aliyuncs.com".into(),
            bucket: "oss-example".into(),
            key: "nelson".into(),
            path: "/nelson".into(),
            query: vec![],
            headers: vec![
                (
                    "Content-MD5".into(),
                    "ODBGOERFMDMzQTczRUY3NUE3NzA5QzdFNUYzMDQxNEM=".into(),
                ),
                ("Content-Type".into(), "text/html".into()),
                ("X-OSS-Meta-Author".into(), "foo@bar.com".into()),
                ("X-OSS-Magic".into(), "abracadabra".into()),
            ],
        };
        let now = httpdate::parse_http_date("Thu, 17 Nov 2005 18:49:58 GMT").unwrap();
        let creds = Credentials::new(str_field(v, "key_id"), str_field(v, "secret"));
        let signed = sign(SignatureVersion::OssV1, &creds, "", &req.view(), now);
        assert_eq!(signed.string_to_sign, str_field(v, "string_to_sign"));
        let expected = format!(
            "OSS {}:{}",
            str_field(v, "key_id"),
            str_field(v, "signature")
        );
        assert!(signed
            .headers
            .iter()
            .any(|(n, v)| n == "Authorization" && *v == expected));
    }

    #[test]
    fn oss_v4_authorization_via_sign() {
        let (v, req) = oss_v4_vector();
        let now = unix(v["unix_time"].as_u64().unwrap());
        assert_eq!(now, iso_to_time(str_field(&v, "x_oss_date")));
        let creds = Credentials::new(str_field(&v, "key_id"), str_field(&v, "secret"));
        let signed = sign(
            SignatureVersion::OssV4,
            &creds,
            str_field(&v, "region"),
            &req.view(),
            now,
        );
        let header = |name: &str| {
            signed
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            header("Authorization").as_deref(),
            Some(str_field(&v, "authorization"))
        );
        assert_eq!(
            header("x-oss-date").as_deref(),
            Some(str_field(&v, "x_oss_date"))
        );
        // The request already carried x-oss-content-sha256: not added twice.
        assert_eq!(header("x-oss-content-sha256"), None);
        assert!(signed
            .string_to_sign
            .ends_with(str_field(&v, "canonical_request_sha256")));
    }

    #[test]
    fn oss_v4_with_security_token_variant() {
        let (v, req) = oss_v4_vector();
        let creds =
            Credentials::new(str_field(&v, "key_id"), str_field(&v, "secret")).with_token("token");
        let signed = sign(
            SignatureVersion::OssV4,
            &creds,
            str_field(&v, "region"),
            &req.view(),
            unix(1_702_784_856),
        );
        let auth = &signed.headers.last().unwrap().1;
        assert_eq!(
            signature_of(auth),
            "b94a3f999cf85bcdc00d332fbd3734ba03e48382c36fa4d5af5df817395bd9ea"
        );
        assert!(signed
            .headers
            .iter()
            .any(|(n, v)| n == "x-oss-security-token" && v == "token"));
    }

    #[test]
    fn oss_v4_with_additional_headers_variant() {
        let (v, req) = oss_v4_vector();
        let creds = Credentials::new(str_field(&v, "key_id"), str_field(&v, "secret"));
        let options = SignOptions {
            // Mixed case, a duplicate, a default-signed and an absent name:
            // all normalised away to `abc;zabc`.
            additional_headers: vec![
                "ZAbc".into(),
                "abc".into(),
                "abc".into(),
                "content-type".into(),
                "not-present".into(),
            ],
        };
        let signed = sign_with_options(
            SignatureVersion::OssV4,
            &creds,
            str_field(&v, "region"),
            &req.view(),
            unix(1_702_747_512),
            &options,
        );
        let auth = &signed.headers.last().unwrap().1;
        assert!(auth.contains(",AdditionalHeaders=abc;zabc,"), "{auth}");
        assert_eq!(
            signature_of(auth),
            "4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f"
        );
    }

    #[test]
    fn s3_every_vector_via_sign() {
        let all = vectors();
        let list = all["s3_sigv4"].as_array().expect("s3 vectors");
        assert_eq!(list.len(), 2);
        for v in list {
            let req = Req::from_json(&v["request"]);
            let now = iso_to_time(str_field(v, "x_amz_date"));
            let creds = Credentials::new(str_field(v, "key_id"), str_field(v, "secret"));
            let signed = sign(
                SignatureVersion::S3V4,
                &creds,
                str_field(v, "region"),
                &req.view(),
                now,
            );
            let auth = &signed.headers.last().unwrap().1;
            let expected = format!(
                "AWS4-HMAC-SHA256 Credential={}/{}/{}/s3/aws4_request, SignedHeaders={}, Signature={}",
                str_field(v, "key_id"),
                &str_field(v, "x_amz_date")[..8],
                str_field(v, "region"),
                str_field(v, "signed_headers"),
                str_field(v, "signature"),
            );
            assert_eq!(auth, &expected);
        }
    }
}
