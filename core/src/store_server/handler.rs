//! Request handling: routing (path or virtual-hosted), authentication,
//! GET/HEAD object with ranges and conditions, listings, routing to the
//! control plane ([`super::control`]), and the object body stream with its
//! faults.
//!
//! Design decision: object bodies are a stream of zero-copy `Bytes` slices
//! of the file's mapping (1 MiB frames); faults and the bandwidth cap act on
//! that stream, so an injected reset or truncation happens mid-body, after
//! real bytes went out, exactly where a flaky network would cut.

use std::convert::Infallible;

use super::RangeBehavior;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;

use super::faults::{GetFault, TokenBucket};
use super::files::{bucket_dir, list_buckets, object_path, replace_with_complement, walk_prefix};
use super::listing::{paginate, render, ListRequest};
use super::stats::bump;
use super::xml::{error_document, error_ec, iso8601, xml_escape};
use super::{ApiError, State};

/// Largest object frame handed to hyper.
const FRAME_BYTES: usize = 1 << 20;
/// Frame size under a bandwidth cap, so the cap is smooth at low rates.
const THROTTLED_FRAME_BYTES: usize = 64 << 10;
/// Pause before an injected reset/truncation, so the bytes before the cut are
/// flushed to the socket first.
const FAULT_FLUSH_DELAY: Duration = Duration::from_millis(20);
/// Server header, as OSS sends it.
const SERVER_NAME: &str = "AliyunOSS";

type BodyError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type RespBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// What the body stream needs from its connection.
pub(crate) struct ConnInfo {
    /// The connection's socket; open while the connection task (which polls
    /// the body) runs.
    pub fd: RawFd,
}

impl ConnInfo {
    /// Makes the coming close send RST instead of FIN.
    #[allow(unsafe_code)] // setsockopt on a raw fd (see the SAFETY note below)
    fn arm_reset(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `fd` is this connection's socket, kept open by the
        // connection task that is polling us; setsockopt only reads `linger`
        // for the given length.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "SO_LINGER for injected reset failed");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Head,
    List,
    Other,
}

pub(crate) fn empty() -> RespBody {
    Empty::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

pub(crate) fn full(data: impl Into<Bytes>) -> RespBody {
    Full::new(data.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl ApiError {
    fn into_response(self, is_head: bool, request_id: &str, host: &str) -> Response<RespBody> {
        let doc = error_document(
            &self.code,
            &self.message,
            request_id,
            host,
            self.string_to_sign.as_deref(),
        );
        let mut b = Response::builder()
            .status(self.status)
            .header("x-oss-ec", error_ec(&self.code));
        let body = if is_head {
            // OSS: an error HEAD has no body; the error document travels base64 in a header.
            let encoded = base64::engine::general_purpose::STANDARD.encode(doc.as_bytes());
            b = b
                .header("x-oss-err", encoded)
                .header(header::CONTENT_LENGTH, "0");
            empty()
        } else {
            b = b.header(header::CONTENT_TYPE, "application/xml");
            full(doc)
        };
        b.body(body).expect("valid error response")
    }
}

/// Entry point for every request of every connection.
pub(crate) async fn handle(
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let request_id = state.next_request_id();
    let host = header_str(req.headers(), "host")
        .unwrap_or_default()
        .to_string();
    let is_head = req.method() == Method::HEAD;
    let mut resp = match route(&state, &conn, req, &host).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(code = %e.code, status = %e.status, "request failed");
            e.into_response(is_head, &request_id, &host)
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-oss-request-id", v);
    }
    h.insert(header::SERVER, HeaderValue::from_static(SERVER_NAME));
    Ok(resp)
}

/// The bucket named by a virtual-hosted `Host` (first label of a name that
/// is not an IP literal or `localhost`), if that bucket exists.
fn virtual_host_bucket(host: &str, state: &State) -> Option<String> {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if name.parse::<std::net::IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let (label, rest) = name.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    bucket_dir(&state.root, label).map(|_| label.to_string())
}

fn decode_component(raw: &str) -> Result<String, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidURI",
                "path is not valid UTF-8",
            )
        })
}

async fn route(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    req: Request<Incoming>,
    host: &str,
) -> Result<Response<RespBody>, ApiError> {
    let raw_path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let query: Vec<(String, String)> = url::form_urlencoded::parse(raw_query.as_bytes())
        .into_owned()
        .collect();
    let vbucket = virtual_host_bucket(host, state);
    if vbucket.is_none() && raw_path.starts_with("/_ossc/") {
        if !state.credentials().is_empty() {
            // Signed like a path-style request to bucket `_ossc`.
            let key = decode_component(&raw_path["/_ossc/".len()..])?;
            authenticate(
                state,
                &req,
                host,
                super::control::CONTROL_BUCKET,
                &key,
                &raw_path,
                &query,
            )?;
        }
        return super::control::control(state, req, &raw_path).await;
    }
    let trimmed = raw_path.strip_prefix('/').unwrap_or(&raw_path);
    let (bucket, key) = match vbucket {
        Some(b) => (b, decode_component(trimmed)?),
        None => {
            let (b, k) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            (decode_component(b)?, decode_component(k)?)
        }
    };
    let method = req.method().clone();
    let op = match (&method, bucket.is_empty(), key.is_empty()) {
        (&Method::GET, false, true) if !query.iter().any(|(k, _)| k == "location") => Op::List,
        (&Method::GET, false, false) => Op::Get,
        (&Method::HEAD, false, false) => Op::Head,
        _ => Op::Other,
    };
    let c = &state.counters;
    bump(
        match op {
            Op::Get => &c.get,
            Op::Head => &c.head,
            Op::List => &c.list,
            Op::Other => &c.other,
        },
        1,
    );

    if !state.credentials().is_empty() {
        if let Err(e) = authenticate(state, &req, host, &bucket, &key, &raw_path, &query) {
            bump(&c.auth_failures, 1);
            return Err(e);
        }
    }

    if op != Op::Other {
        let latency = state.faults().latency();
        if !latency.is_zero() {
            bump(&c.fault_delayed, 1);
            tokio::time::sleep(latency).await;
        }
    }

    if bucket.is_empty() {
        return match method {
            Method::GET => list_all_buckets(state),
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    let dir = bucket_dir(&state.root, &bucket).ok_or_else(ApiError::no_such_bucket)?;
    match op {
        Op::Get | Op::Head => {
            get_object(state, conn, dir, &key, req.headers(), op == Op::Head).await
        }
        Op::List => {
            let list = ListRequest::parse(&query)?;
            let prefix = list.prefix.clone();
            let listing_state = state.clone();
            let objects = tokio::task::spawn_blocking(move || {
                let mut objects = walk_prefix(&dir, &prefix)?;
                if listing_state.files.md5_etags() {
                    // The listing names the same ETag as HEAD and GET.
                    for o in &mut objects {
                        if let Some(path) = object_path(&dir, &o.key) {
                            if let Some(file) = listing_state.files.open(&path)? {
                                o.etag = file.etag.clone();
                            }
                        }
                    }
                }
                Ok::<_, std::io::Error>(objects)
            })
            .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let page = paginate(objects, &list)?;
            Ok(xml_response(render(&bucket, &list, &page)))
        }
        Op::Other if key.is_empty() && method == Method::HEAD => Ok(Response::builder()
            .header("x-oss-bucket-region", format!("oss-{}", state.region))
            .body(empty())
            .expect("valid response")),
        Op::Other if key.is_empty() && method == Method::GET => Ok(xml_response(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint>oss-{}</LocationConstraint>",
            xml_escape(&state.region)
        ))),
        Op::Other => Err(ApiError::method_not_allowed()),
    }
}

fn xml_response(doc: String) -> Response<RespBody> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/xml")
        .body(full(doc))
        .expect("valid response")
}

fn list_all_buckets(state: &State) -> Result<Response<RespBody>, ApiError> {
    let buckets = list_buckets(&state.root).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult><Owner><ID>ossc</ID>\
         <DisplayName>ossc</DisplayName></Owner><Buckets>",
    );
    for (name, created) in buckets {
        x.push_str(&format!(
            "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate><Location>oss-{}</Location>\
             <Region>{}</Region><StorageClass>Standard</StorageClass></Bucket>",
            xml_escape(&name),
            iso8601(created),
            xml_escape(&state.region),
            xml_escape(&state.region),
        ));
    }
    x.push_str("</Buckets></ListAllMyBucketsResult>");
    Ok(xml_response(x))
}

/// Region named in a V4 `Authorization` credential scope, if any.
fn v4_scope_region(authorization: &str) -> Option<&str> {
    let rest = authorization
        .strip_prefix("OSS4-HMAC-SHA256")
        .or_else(|| authorization.strip_prefix("AWS4-HMAC-SHA256"))?;
    let cred = rest
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("Credential="))?;
    cred.split('/').nth(2)
}

fn authenticate(
    state: &State,
    req: &Request<Incoming>,
    host: &str,
    bucket: &str,
    key: &str,
    raw_path: &str,
    query: &[(String, String)],
) -> Result<(), ApiError> {
    let authorization = header_str(req.headers(), "authorization");
    let presigned = query.iter().any(|(k, _)| {
        matches!(
            k.as_str(),
            "Signature" | "x-oss-signature" | "X-Amz-Signature"
        )
    });
    if authorization.is_none() && !presigned {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Anonymous access is forbidden for this operation.",
        ));
    }
    if let (Some(scope), false) = (
        authorization.and_then(v4_scope_region),
        state.region.is_empty(),
    ) {
        let bare = |r: &str| r.strip_prefix("oss-").unwrap_or(r).to_string();
        if bare(scope) != bare(&state.region) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                format!(
                    "the region '{scope}' is wrong; expecting '{}'",
                    state.region
                ),
            ));
        }
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let method = req.method().as_str();
    let to_sign = crate::sign::RequestToSign {
        method,
        host,
        bucket,
        key,
        path: raw_path,
        query,
        headers: &headers,
    };
    let accepted = state.credentials();
    let lookup = |id: &str| accepted.iter().find(|c| c.access_key_id == id).cloned();
    crate::sign::verify(&to_sign, &lookup, SystemTime::now()).map_err(|e| {
        let status = match e.code {
            "InvalidArgument" | "AuthorizationHeaderMalformed" | "InvalidRequest" => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::FORBIDDEN,
        };
        ApiError {
            status,
            code: e.code.to_string(),
            message: e.message,
            string_to_sign: e.string_to_sign,
        }
    })
}

/// Whether an `If-Match` / `If-None-Match` value names `etag` (quoted).
fn etag_matches(condition: &str, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    condition
        .split(',')
        .map(str::trim)
        .any(|c| c == "*" || c.strip_prefix("W/").unwrap_or(c).trim_matches('"') == bare)
}

/// How a `Range` header resolves against an object of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOutcome {
    /// Answer 200 with the whole object.
    Whole,
    /// Answer 206 with bytes `start..=end`.
    Partial(u64, u64),
    /// Answer 416 InvalidRange.
    Unsatisfiable,
}

/// OSS semantics: without `x-oss-range-behavior: standard`, any range that
/// is malformed or reaches outside the object is ignored (200, whole object);
/// with it, an end past the object is clamped and a start past it (or a
/// malformed/multi range) is 416.
pub(crate) fn resolve_range(spec: &str, size: u64, standard: bool) -> RangeOutcome {
    let invalid = if standard {
        RangeOutcome::Unsatisfiable
    } else {
        RangeOutcome::Whole
    };
    let Some(set) = spec
        .trim()
        .strip_prefix("bytes=")
        .filter(|s| !s.contains(','))
    else {
        return invalid;
    };
    let Some((a, b)) = set.split_once('-') else {
        return invalid;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if size == 0 {
        return invalid;
    }
    match (a.trim(), b.trim()) {
        ("", n) => match num(n) {
            Some(0) | None => invalid,
            Some(n) if n > size => {
                if standard {
                    RangeOutcome::Partial(0, size - 1)
                } else {
                    RangeOutcome::Whole
                }
            }
            Some(n) => RangeOutcome::Partial(size - n, size - 1),
        },
        (a, "") => match num(a) {
            Some(a) if a < size => RangeOutcome::Partial(a, size - 1),
            _ => invalid,
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b && a < size => {
                if b < size {
                    RangeOutcome::Partial(a, b)
                } else if standard {
                    RangeOutcome::Partial(a, size - 1)
                } else {
                    RangeOutcome::Whole
                }
            }
            _ => invalid,
        },
    }
}

async fn get_object(
    state: &Arc<State>,
    conn: &Arc<ConnInfo>,
    bucket_dir: PathBuf,
    key: &str,
    headers: &HeaderMap,
    is_head: bool,
) -> Result<Response<RespBody>, ApiError> {
    let path = object_path(&bucket_dir, key).ok_or_else(ApiError::no_such_key)?;
    let file = state
        .files
        .open(&path)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(ApiError::no_such_key)?;
    if let Some(cond) = header_str(headers, "if-match") {
        if !etag_matches(cond, &file.etag) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold.",
            ));
        }
    }
    let not_modified =
        header_str(headers, "if-none-match").is_some_and(|c| etag_matches(c, &file.etag));
    let crc = if state.no_crc64 {
        None
    } else {
        Some(
            file.crc64()
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?,
        )
    };
    let size = file.size();
    let mut b = Response::builder()
        .header(header::ETAG, &file.etag)
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(file.version.modified()),
        )
        .header(header::ACCEPT_RANGES, "bytes")
        .header("x-oss-object-type", "Normal")
        .header("x-oss-storage-class", "Standard");
    if let Some(crc) = crc {
        b = b.header("x-oss-hash-crc64ecma", crc.to_string());
    }
    let checksum_mode = header_str(headers, crate::checksums::CHECKSUM_MODE_HEADER)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("ENABLED"));
    // S3 declares full-object checksums on HEAD and whole-object GETs only.
    if checksum_mode && (is_head || header_str(headers, "range").is_none()) {
        let sums = file
            .s3_checksums()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        b = b
            .header(
                "x-amz-checksum-sha256",
                crate::checksums::header_value(&sums.sha256),
            )
            .header(
                "x-amz-checksum-crc32c",
                crate::checksums::header_value(&sums.crc32c),
            )
            .header("x-amz-checksum-type", "FULL_OBJECT");
    }
    if not_modified {
        return Ok(b
            .status(StatusCode::NOT_MODIFIED)
            .body(empty())
            .expect("valid response"));
    }
    b = b.header(header::CONTENT_TYPE, "application/octet-stream");
    if is_head {
        return Ok(b
            .header(header::CONTENT_LENGTH, size)
            .body(empty())
            .expect("valid response"));
    }

    let standard = state.range_behavior == RangeBehavior::S3
        || header_str(headers, "x-oss-range-behavior")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("standard"));
    let range = match header_str(headers, "range").map(|r| resolve_range(r, size, standard)) {
        None | Some(RangeOutcome::Whole) => None,
        Some(RangeOutcome::Partial(a, z)) => Some((a, z)),
        Some(RangeOutcome::Unsatisfiable) => {
            return Err(ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range cannot be satisfied",
            ))
        }
    };
    let (start, end_excl) = range.map_or((0, size), |(a, z)| (a, z + 1));
    let body_len = usize::try_from(end_excl - start).expect("object fits the address space");

    let (fault, bandwidth, replace) = {
        let mut faults = state.faults();
        (
            faults.draw_get(body_len),
            faults.bandwidth(),
            faults.take_replacement(key),
        )
    };
    if let GetFault::Error { status, code } = &fault {
        bump(&state.counters.fault_errors, 1);
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Err(ApiError::new(
            status,
            code.clone(),
            "Injected fault (ossc embedded store).",
        ));
    }
    if replace {
        let (data, tmp_dir) = (file.data.clone(), state.root.clone());
        let target = path.clone();
        let done =
            tokio::task::spawn_blocking(move || replace_with_complement(&target, &tmp_dir, &data))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
        match done {
            Ok(()) => bump(&state.counters.fault_replacements, 1),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "replace_key rewrite failed")
            }
        }
    }

    if let Some((a, z)) = range {
        b = b
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {a}-{z}/{size}"));
    }
    let data = file
        .data
        .slice(usize::try_from(start).expect("fits")..usize::try_from(end_excl).expect("fits"));
    let body = object_body(data, fault, bandwidth, state.clone(), conn.clone());
    Ok(b.header(header::CONTENT_LENGTH, body_len)
        .body(body)
        .expect("valid response"))
}

struct BodyState {
    data: Bytes,
    pos: usize,
    /// Where to stop early, and whether to reset (else close cleanly).
    cut: Option<(usize, bool)>,
    bandwidth: Option<Arc<TokenBucket>>,
    state: Arc<State>,
    conn: Arc<ConnInfo>,
    done: bool,
}

fn object_body(
    data: Bytes,
    fault: GetFault,
    bandwidth: Option<Arc<TokenBucket>>,
    state: Arc<State>,
    conn: Arc<ConnInfo>,
) -> RespBody {
    let cut = match fault {
        GetFault::Reset { cut } => Some((cut, true)),
        GetFault::Truncate { cut } => Some((cut, false)),
        GetFault::None | GetFault::Error { .. } => None,
    };
    let st = BodyState {
        data,
        pos: 0,
        cut,
        bandwidth,
        state,
        conn,
        done: false,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let limit = st.cut.map_or(st.data.len(), |(c, _)| c);
        if st.pos >= limit {
            st.done = true;
            let (_, reset) = st.cut?;
            tokio::time::sleep(FAULT_FLUSH_DELAY).await;
            let c = &st.state.counters;
            let err: BodyError = if reset {
                st.conn.arm_reset();
                bump(&c.fault_resets, 1);
                "injected connection reset".into()
            } else {
                bump(&c.fault_truncations, 1);
                "injected truncation".into()
            };
            return Some((Err(err), st));
        }
        let frame = if st.bandwidth.is_some() {
            THROTTLED_FRAME_BYTES
        } else {
            FRAME_BYTES
        };
        let n = frame.min(limit - st.pos);
        if let Some(tb) = &st.bandwidth {
            tb.take(n).await;
        }
        let chunk = st.data.slice(st.pos..st.pos + n);
        st.pos += n;
        bump(&st.state.counters.bytes_served, n as u64);
        Some((Ok(Frame::data(chunk)), st))
    });
    StreamBody::new(stream).boxed_unsync()
}
