//! OSS-style XML pieces: escaping, timestamps, and the `<Error>` document.
//!
//! Design decision: documents are written with `format!` and an escape
//! function instead of a serializer; they are small, fixed-shape, and byte
//! layout (element order, no namespace, raw quotes in `ETag`) then matches
//! what OSS sends.

use std::borrow::Cow;
use std::time::SystemTime;

/// Escapes `&`, `<` and `>` (quotes may stay raw in element text, as in OSS's
/// `<ETag>"..."</ETag>`).
pub(crate) fn xml_escape(s: &str) -> Cow<'_, str> {
    quick_xml::escape::partial_escape(s)
}

/// ISO 8601 with milliseconds, UTC (`2024-05-01T12:00:00.000Z`).
pub(crate) fn iso8601(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// OSS's `EC` detail code for an error code. NoSuchKey and NoSuchBucket are
/// the values OSS sends; the others keep OSS's `NNNN-NNNNNNNN` shape but are
/// this store's own. Clients must treat EC as opaque.
pub(crate) fn error_ec(code: &str) -> &'static str {
    match code {
        "NoSuchKey" => "0026-00000001",
        "NoSuchBucket" => "0015-00000101",
        "AccessDenied" => "0003-00000001",
        "SignatureDoesNotMatch" => "0002-00000040",
        "InvalidAccessKeyId" => "0002-00000902",
        "RequestTimeTooSkewed" => "0002-00000504",
        "InvalidRange" => "0003-00001217",
        "PreconditionFailed" => "0026-00000012",
        "MethodNotAllowed" => "0016-00000502",
        "InvalidArgument" => "0017-00000001",
        _ => "0000-00000000",
    }
}

/// `<Error><Code/><Message/><RequestId/><HostId/>[<StringToSign/>]<EC/></Error>`.
pub(crate) fn error_document(
    code: &str,
    message: &str,
    request_id: &str,
    host_id: &str,
    string_to_sign: Option<&str>,
) -> String {
    let mut x = String::with_capacity(256);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>\n");
    x.push_str(&format!("  <Code>{}</Code>\n", xml_escape(code)));
    x.push_str(&format!("  <Message>{}</Message>\n", xml_escape(message)));
    x.push_str(&format!(
        "  <RequestId>{}</RequestId>\n",
        xml_escape(request_id)
    ));
    x.push_str(&format!("  <HostId>{}</HostId>\n", xml_escape(host_id)));
    if let Some(sts) = string_to_sign {
        x.push_str(&format!(
            "  <StringToSign>{}</StringToSign>\n",
            xml_escape(sts)
        ));
    }
    x.push_str(&format!("  <EC>{}</EC>\n", error_ec(code)));
    x.push_str("</Error>\n");
    x
}
