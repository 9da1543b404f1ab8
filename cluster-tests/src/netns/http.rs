//! A minimal HTTP/1.1 client run from inside a host, for control planes such
//! as the store's `/_ossc/stats`: no curl or python needed on the machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{Host, NetnsError, Result};

/// Connect/read timeout of [`http_request`].
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP response from [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 client (one request, `Connection: close`; plain and
/// chunked bodies) run from inside `host`, for control planes such as the
/// store's `/_ossc/stats`. No curl or python needed on the machine.
pub fn http_request(
    host: &Host,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<HttpResponse> {
    http_request_with(host, addr, method, path, &[], body)
}

/// [`http_request`] with extra request headers (a signature, say).
pub fn http_request_with(
    host: &Host,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<HttpResponse> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let raw = host.run(|| -> Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
        s.set_read_timeout(Some(HTTP_TIMEOUT))?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        Ok(raw)
    })??;
    parse_http_response(&raw)
}

fn parse_http_response(raw: &[u8]) -> Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| NetnsError::Http("no end of headers".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| NetnsError::Http(format!("bad status line in {head:?}")))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let rest = &raw[split + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| NetnsError::Http("truncated chunk size".into()))?;
        let size_s = String::from_utf8_lossy(&data[..eol]);
        let size_s = size_s.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_s, 16)
            .map_err(|_| NetnsError::Http(format!("bad chunk size {size_s:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(NetnsError::Http("truncated chunk".into()));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let r = parse_http_response(plain).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let r = parse_http_response(chunked).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_http_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        .is_err());
    }
}
