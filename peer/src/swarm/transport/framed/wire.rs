//! The framed transport's wire format: fixed-size headers, encoded and
//! parsed here only (pure functions, no I/O).
//!
//! Design decision: every header has a fixed size and every length in it
//! is checked against a cap before anything is read past it, so a reader
//! knows how much to read (and refuses what is too large) without parsing
//! a variable-length encoding. Reserved bytes must be zero and the magic
//! must match, so a parser accepts only headers [`encode`](RequestHeader::encode)
//! could have written. The protobuf `ChunkRequest` is the only variable
//! encoding on the wire, and it is decoded only after its HMAC tag passed.
//!
//! - Greeting (server → client, once per connection, after TLS): [`GREETING`].
//! - Request (client → server): a [`RequestHeader`] of
//!   [`REQUEST_HEADER_BYTES`], the caller's node id, then the body (an
//!   encoded `ChunkRequest`).
//! - Response: a [`ResponseHeader`] of [`RESPONSE_HEADER_BYTES`]; an error
//!   answer carries its message and ends there; an OK answer carries the
//!   chunk as segments, each a u32 BE [`Marker`] word: a data length (the
//!   raw bytes follow), 0 for a keep-alive, [`END_OF_CHUNK`] followed by the
//!   chunk's CRC-64 (u64 BE), or [`ABORT`] followed by an error header and
//!   its message.

use tonic::Code;

/// Sent by the server when a connection opens (after TLS): a client that
/// reads anything else has not reached a framed server (plaintext mode, or
/// something else on the port) and treats the peer as unreachable.
pub const GREETING: [u8; 8] = *b"OSSCFRM1";
/// Opens every request header.
pub const REQUEST_MAGIC: [u8; 4] = *b"OFRQ";
/// Request header: magic, body length (u32 BE), node id length (u16 BE),
/// 2 zero bytes, signing time (u64 BE), nonce (16 bytes), HMAC tag (32
/// bytes).
pub const REQUEST_HEADER_BYTES: usize = 4 + 4 + 2 + 2 + 8 + NONCE_BYTES + TAG_BYTES;
/// Response header: status (gRPC code, u8), 3 zero bytes, message length
/// (u32 BE), data length (u64 BE).
pub const RESPONSE_HEADER_BYTES: usize = 16;
/// Raw nonce bytes in a request header (hex in the auth entries).
pub const NONCE_BYTES: usize = crate::swarm::auth::NONCE_BYTES;
/// Raw HMAC-SHA256 tag bytes in a request header.
pub const TAG_BYTES: usize = 32;
/// Longest node id a request may carry (`[ipv6]:port` is at most 47).
pub const MAX_NODE_ID_BYTES: usize = 255;
/// Largest request body accepted (a ChunkRequest is a few hundred bytes; an
/// object key is at most 1 KiB). The server also applies the peer port's
/// request-body cap, whichever is smaller.
pub const MAX_REQUEST_BODY_BYTES: usize = 64 << 10;
/// Largest error message sent or accepted.
pub const MAX_MESSAGE_BYTES: u32 = 4 << 10;
/// Largest data segment sent or accepted.
pub const MAX_SEGMENT_BYTES: u32 = 4 << 20;
/// Segment word that ends a chunk; its CRC-64 (u64 BE) follows.
pub const END_OF_CHUNK: u32 = u32::MAX;
/// Segment word that ends a chunk with an error; an error
/// [`ResponseHeader`] and its message follow.
pub const ABORT: u32 = u32::MAX - 1;

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad magic")]
    Magic,
    #[error("non-zero reserved bytes")]
    Reserved,
    #[error("{what} of {len} bytes is outside 1..={max}")]
    Length {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("unknown status {0}")]
    Status(u8),
    #[error("segment word {0:#x} is not a length, keep-alive, end or abort")]
    Marker(u32),
    #[error("an error answer carries {0} data bytes")]
    ErrorWithData(u64),
}

/// The fixed part of a request: lengths of what follows and its auth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub body_len: u32,
    pub node_len: u16,
    pub time: u64,
    pub nonce: [u8; NONCE_BYTES],
    pub tag: [u8; TAG_BYTES],
}

fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    b.try_into().expect("slice of the header's fixed layout")
}

fn within(what: &'static str, len: u64, max: u64) -> Result<(), WireError> {
    if len == 0 || len > max {
        return Err(WireError::Length { what, len, max });
    }
    Ok(())
}

impl RequestHeader {
    pub fn encode(&self) -> [u8; REQUEST_HEADER_BYTES] {
        let mut h = [0u8; REQUEST_HEADER_BYTES];
        h[0..4].copy_from_slice(&REQUEST_MAGIC);
        h[4..8].copy_from_slice(&self.body_len.to_be_bytes());
        h[8..10].copy_from_slice(&self.node_len.to_be_bytes());
        h[12..20].copy_from_slice(&self.time.to_be_bytes());
        h[20..36].copy_from_slice(&self.nonce);
        h[36..68].copy_from_slice(&self.tag);
        h
    }

    /// The header, if its magic and reserved bytes are right and the node
    /// id and body fit 1..=[`MAX_NODE_ID_BYTES`] and 1..=`max_body` bytes.
    pub fn parse(
        h: &[u8; REQUEST_HEADER_BYTES],
        max_body: usize,
    ) -> Result<RequestHeader, WireError> {
        if h[0..4] != REQUEST_MAGIC {
            return Err(WireError::Magic);
        }
        if h[10..12] != [0, 0] {
            return Err(WireError::Reserved);
        }
        let r = RequestHeader {
            body_len: u32::from_be_bytes(array(&h[4..8])),
            node_len: u16::from_be_bytes(array(&h[8..10])),
            time: u64::from_be_bytes(array(&h[12..20])),
            nonce: array(&h[20..36]),
            tag: array(&h[36..68]),
        };
        within("request body", r.body_len.into(), max_body as u64)?;
        within("node id", r.node_len.into(), MAX_NODE_ID_BYTES as u64)?;
        Ok(r)
    }
}

/// The fixed part of an answer (and of an abort mid-chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    pub status: Code,
    /// Bytes of error message that follow (error answers only).
    pub message_len: u32,
    /// The chunk's length (OK answers only).
    pub data_len: u64,
}

impl ResponseHeader {
    /// An OK answer for a chunk of `data_len` bytes.
    pub fn ok(data_len: u64) -> ResponseHeader {
        ResponseHeader {
            status: Code::Ok,
            message_len: 0,
            data_len,
        }
    }

    /// An error answer; `message` is cut to [`MAX_MESSAGE_BYTES`], and the
    /// part that is sent returned with the header.
    pub fn error(status: Code, message: &str) -> (ResponseHeader, &[u8]) {
        let m = message.as_bytes();
        let m = &m[..m.len().min(MAX_MESSAGE_BYTES as usize)];
        let h = ResponseHeader {
            status,
            message_len: m.len() as u32,
            data_len: 0,
        };
        (h, m)
    }

    pub fn encode(&self) -> [u8; RESPONSE_HEADER_BYTES] {
        let mut h = [0u8; RESPONSE_HEADER_BYTES];
        h[0] = self.status as i32 as u8;
        h[4..8].copy_from_slice(&self.message_len.to_be_bytes());
        h[8..16].copy_from_slice(&self.data_len.to_be_bytes());
        h
    }

    pub fn parse(h: &[u8; RESPONSE_HEADER_BYTES]) -> Result<ResponseHeader, WireError> {
        if h[1..4] != [0, 0, 0] {
            return Err(WireError::Reserved);
        }
        // Code::from_i32 maps unknown numbers to Unknown: refuse them here.
        if h[0] > Code::Unauthenticated as i32 as u8 {
            return Err(WireError::Status(h[0]));
        }
        let r = ResponseHeader {
            status: Code::from_i32(i32::from(h[0])),
            message_len: u32::from_be_bytes(array(&h[4..8])),
            data_len: u64::from_be_bytes(array(&h[8..16])),
        };
        if r.message_len > MAX_MESSAGE_BYTES {
            return Err(WireError::Length {
                what: "error message",
                len: r.message_len.into(),
                max: MAX_MESSAGE_BYTES.into(),
            });
        }
        if r.status != Code::Ok && r.data_len != 0 {
            return Err(WireError::ErrorWithData(r.data_len));
        }
        Ok(r)
    }
}

/// What a segment word announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// This many raw chunk bytes follow.
    Data(u32),
    KeepAlive,
    /// The chunk's CRC-64 follows.
    End,
    /// An error header and message follow.
    Abort,
}

impl Marker {
    pub fn encode(self) -> [u8; 4] {
        match self {
            Marker::Data(n) => n,
            Marker::KeepAlive => 0,
            Marker::End => END_OF_CHUNK,
            Marker::Abort => ABORT,
        }
        .to_be_bytes()
    }

    pub fn parse(word: [u8; 4]) -> Result<Marker, WireError> {
        match u32::from_be_bytes(word) {
            0 => Ok(Marker::KeepAlive),
            END_OF_CHUNK => Ok(Marker::End),
            ABORT => Ok(Marker::Abort),
            n if n <= MAX_SEGMENT_BYTES => Ok(Marker::Data(n)),
            n => Err(WireError::Marker(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    fn request() -> RequestHeader {
        RequestHeader {
            body_len: 300,
            node_len: 14,
            time: 1_700_000_000,
            nonce: [7; NONCE_BYTES],
            tag: [9; TAG_BYTES],
        }
    }

    #[test]
    fn headers_round_trip_and_bounds_are_checked() {
        let r = request();
        assert_eq!(RequestHeader::parse(&r.encode(), 1024).unwrap(), r);
        let big = RequestHeader {
            body_len: 1025,
            ..request()
        };
        assert!(matches!(
            RequestHeader::parse(&big.encode(), 1024),
            Err(WireError::Length { len: 1025, .. })
        ));
        let no_node = RequestHeader {
            node_len: 0,
            ..request()
        };
        assert!(RequestHeader::parse(&no_node.encode(), 1024).is_err());
        let mut reserved = r.encode();
        reserved[11] = 1;
        assert_eq!(
            RequestHeader::parse(&reserved, 1024),
            Err(WireError::Reserved)
        );

        let ok = ResponseHeader::ok(16 << 20);
        assert_eq!(ResponseHeader::parse(&ok.encode()).unwrap(), ok);
        let long = "x".repeat(10_000);
        let (err, msg) = ResponseHeader::error(Code::NotFound, &long);
        assert_eq!(msg.len(), MAX_MESSAGE_BYTES as usize);
        assert_eq!(ResponseHeader::parse(&err.encode()).unwrap(), err);
        let mut data_on_error = err.encode();
        data_on_error[15] = 1;
        assert_eq!(
            ResponseHeader::parse(&data_on_error),
            Err(WireError::ErrorWithData(1))
        );
        let mut unknown = ok.encode();
        unknown[0] = 17;
        assert_eq!(ResponseHeader::parse(&unknown), Err(WireError::Status(17)));

        for m in [
            Marker::Data(1),
            Marker::Data(MAX_SEGMENT_BYTES),
            Marker::KeepAlive,
            Marker::End,
            Marker::Abort,
        ] {
            assert_eq!(Marker::parse(m.encode()).unwrap(), m);
        }
        assert!(Marker::parse((MAX_SEGMENT_BYTES + 1).to_be_bytes()).is_err());
    }

    /// Random bytes never panic a parser, and whatever a parser accepts is
    /// exactly what encoding it writes back (the format has one spelling).
    #[test]
    fn parsers_accept_only_canonical_headers_of_random_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x05C0_F4A3);
        let mut accepted = [0usize; 3];
        for round in 0..200_000 {
            let mut req = [0u8; REQUEST_HEADER_BYTES];
            rng.fill_bytes(&mut req);
            if round % 2 == 0 {
                // Half the inputs get a valid frame, so the length checks
                // and not just the magic are exercised.
                req[0..4].copy_from_slice(&REQUEST_MAGIC);
                req[10..12].fill(0);
                req[4..6].fill(0);
                req[8] = 0;
            }
            let max_body = rng.gen_range(1..=MAX_REQUEST_BODY_BYTES);
            if let Ok(h) = RequestHeader::parse(&req, max_body) {
                assert_eq!(h.encode(), req);
                assert!((1..=max_body).contains(&(h.body_len as usize)));
                assert!((1..=MAX_NODE_ID_BYTES).contains(&(h.node_len as usize)));
                accepted[0] += 1;
            }
            let mut resp = [0u8; RESPONSE_HEADER_BYTES];
            rng.fill_bytes(&mut resp);
            if round % 2 == 0 {
                resp[0] %= 20;
                resp[1..6].fill(0);
                if resp[0] != 0 {
                    resp[8..16].fill(0);
                }
            }
            if let Ok(h) = ResponseHeader::parse(&resp) {
                assert_eq!(h.encode(), resp);
                assert!(h.message_len <= MAX_MESSAGE_BYTES);
                assert!(h.status == Code::Ok || h.data_len == 0);
                accepted[1] += 1;
            }
            let mut word: [u8; 4] = rng.gen();
            if round % 2 == 0 {
                word[0] = 0;
                word[1] &= 0x7f;
            }
            if let Ok(m) = Marker::parse(word) {
                assert_eq!(m.encode(), word);
                accepted[2] += 1;
            }
        }
        assert!(accepted.iter().all(|n| *n > 1000), "{accepted:?}");
    }
}
