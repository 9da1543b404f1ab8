//! TLS 1.3 application records (RFC 8446 §5.2) sealed and opened in the
//! caller's buffers, under the traffic keys rustls negotiated.
//!
//! Design decisions:
//! - **Who does what**: rustls runs the whole handshake (certificates,
//!   mutual authentication, ALPN, key schedule); afterwards the framed
//!   transport takes the traffic secrets out of it
//!   (`dangerous_extract_secrets`, the interface made for kernel TLS) and
//!   protects records here with ring's AEADs, exactly as kernel TLS would.
//!   This lets a sender seal a record in place where its plaintext was read
//!   and a receiver open a record straight into the plaintext of the
//!   records before it ([`Opener::open`]), so received plaintext is one
//!   contiguous slice in the read buffer: no copy and no allocation per
//!   record (rustls' own record layer copies each record into a fresh
//!   buffer on both sides).
//! - **What is accepted**: only TLS 1.3 records of outer type
//!   application_data, legacy version 0x0303, at most
//!   [`MAX_CIPHERTEXT`] bytes, whose tag verifies under the next sequence
//!   number; inside, application data, or an alert (close_notify ends the
//!   stream, any other alert fails it). Post-handshake handshake messages
//!   are refused: the framed server sends no session tickets, and neither
//!   side sends KeyUpdate; instead a connection is retired before
//!   [`RECORD_LIMIT`] records in either direction, far below the AEAD
//!   limits (2^24.5 records for AES-GCM), and sealing or opening past it
//!   fails.
//! - Sequence numbers never repeat: they only grow, and a failed open
//!   poisons the [`Opener`] (the stream is dead after any bad record).

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::ConnectionTrafficSecrets;

/// Largest plaintext in one record (2^14).
pub const MAX_FRAGMENT: usize = 1 << 14;
/// Record header: type, legacy version, length.
pub const HEADER_BYTES: usize = 5;
/// AEAD tag of every TLS 1.3 suite.
pub const TAG_BYTES: usize = 16;
/// A sealed record's bytes beyond its plaintext: header, inner content
/// type, tag.
pub const RECORD_OVERHEAD: usize = HEADER_BYTES + 1 + TAG_BYTES;
/// Largest record body accepted (RFC 8446: 2^14 + 256).
pub const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// Largest whole record accepted.
pub const MAX_RECORD: usize = HEADER_BYTES + MAX_CIPHERTEXT;
/// Records sealed or opened under one key at most; a connection past half
/// of it is not reused ([`Sealer::worn`], [`Opener::worn`]).
pub const RECORD_LIMIT: u64 = 1 << 23;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const LEGACY_VERSION: [u8; 2] = [3, 3];
const CLOSE_NOTIFY: [u8; 2] = [1, 0];

/// Why a record was refused (the connection is then unusable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record header {0:02x?} is not a TLS 1.3 application record")]
    Header([u8; HEADER_BYTES]),
    #[error("record of {0} bytes exceeds the TLS limit")]
    Oversized(usize),
    #[error("record failed authentication")]
    Forged,
    #[error("record carries no content type")]
    NoContentType,
    #[error("peer sent TLS alert {0:?}")]
    Alert([u8; 2]),
    #[error("peer sent an unsupported post-handshake message")]
    PostHandshake,
    #[error("record of content type {0}")]
    ContentType(u8),
    #[error("record limit of the connection's keys reached")]
    KeysWornOut,
    #[error("negotiated cipher suite has no record protection here")]
    Suite,
}

impl From<RecordError> for std::io::Error {
    fn from(e: RecordError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// One direction's key, IV and next sequence number.
struct Direction {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<Direction, RecordError> {
        let (algorithm, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(RecordError::Suite),
        };
        let key = UnboundKey::new(algorithm, key.as_ref()).map_err(|_| RecordError::Suite)?;
        let iv: [u8; NONCE_LEN] = iv.as_ref().try_into().map_err(|_| RecordError::Suite)?;
        Ok(Direction {
            key: LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The next record's nonce (RFC 8446 §5.3); advances the sequence.
    fn next_nonce(&mut self) -> Result<Nonce, RecordError> {
        if self.seq >= RECORD_LIMIT {
            return Err(RecordError::KeysWornOut);
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// Seals outgoing records.
pub struct Sealer(Direction);

impl Sealer {
    /// The sending direction extracted from rustls: its next sequence
    /// number and secrets.
    pub fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<Sealer, RecordError> {
        Direction::new(seq, secrets).map(Sealer)
    }

    /// Seals the `len` plaintext bytes at `record[HEADER_BYTES..]` (at most
    /// [`MAX_FRAGMENT`]) as one application data record, written over
    /// `record[..len + RECORD_OVERHEAD]`; returns that length.
    pub fn seal_data(&mut self, record: &mut [u8], len: usize) -> Result<usize, RecordError> {
        self.seal(record, len, APPLICATION_DATA)
    }

    /// A close_notify alert record into `record`; returns its length.
    pub fn seal_close_notify(&mut self, record: &mut [u8]) -> Result<usize, RecordError> {
        record[HEADER_BYTES..HEADER_BYTES + 2].copy_from_slice(&CLOSE_NOTIFY);
        self.seal(record, 2, ALERT)
    }

    fn seal(&mut self, record: &mut [u8], len: usize, kind: u8) -> Result<usize, RecordError> {
        assert!(len <= MAX_FRAGMENT, "record plaintext over 2^14");
        let total = len + RECORD_OVERHEAD;
        let body = (len + 1 + TAG_BYTES) as u16;
        let mut header = [APPLICATION_DATA, LEGACY_VERSION[0], LEGACY_VERSION[1], 0, 0];
        header[3..].copy_from_slice(&body.to_be_bytes());
        record[..HEADER_BYTES].copy_from_slice(&header);
        record[HEADER_BYTES + len] = kind;
        let nonce = self.0.next_nonce()?;
        let (inner, tag) = record[HEADER_BYTES..total].split_at_mut(len + 1);
        let sealed = self
            .0
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), inner)
            .map_err(|_| RecordError::Forged)?;
        tag.copy_from_slice(sealed.as_ref());
        Ok(total)
    }

    /// Past half of [`RECORD_LIMIT`]: the connection should not be reused.
    pub fn worn(&self) -> bool {
        self.0.seq >= RECORD_LIMIT / 2
    }
}

/// What an opened record held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// This many bytes of application data.
    Data(usize),
    /// The peer's close_notify: no more data follows.
    Closed,
}

/// Opens incoming records.
pub struct Opener {
    dir: Direction,
    /// A record failed: every later one is refused too.
    failed: bool,
}

impl Opener {
    /// The receiving direction extracted from rustls: its next sequence
    /// number and secrets.
    pub fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<Opener, RecordError> {
        Ok(Opener {
            dir: Direction::new(seq, secrets)?,
            failed: false,
        })
    }

    /// The length of the whole record that `bytes` opens with, once its
    /// header is there (None: fewer than [`HEADER_BYTES`] bytes). An error
    /// for a header no TLS 1.3 peer sends, before its body is awaited.
    pub fn record_len(bytes: &[u8]) -> Result<Option<usize>, RecordError> {
        let Some(header) = bytes.first_chunk::<HEADER_BYTES>() else {
            return Ok(None);
        };
        if header[0] != APPLICATION_DATA || header[1..3] != LEGACY_VERSION {
            return Err(RecordError::Header(*header));
        }
        let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if body > MAX_CIPHERTEXT {
            return Err(RecordError::Oversized(body));
        }
        if body < 1 + TAG_BYTES {
            return Err(RecordError::Header(*header));
        }
        Ok(Some(HEADER_BYTES + body))
    }

    /// Opens the whole record at `buf[at..]` (its length as
    /// [`record_len`](Self::record_len) gave it) and writes its content to
    /// `buf[to..]`, where `to <= at` (the records before it were opened to
    /// just below `to`): one pass, nothing copied.
    pub fn open(&mut self, buf: &mut [u8], to: usize, at: usize) -> Result<Opened, RecordError> {
        if self.failed {
            return Err(RecordError::Forged);
        }
        self.failed = true;
        assert!(to <= at, "records open towards the front of the buffer");
        let len = Self::record_len(&buf[at..])?.expect("a whole record");
        assert!(at + len <= buf.len(), "a whole record");
        let header: [u8; HEADER_BYTES] = *buf[at..].first_chunk().expect("a whole record");
        let nonce = self.dir.next_nonce()?;
        let inner = self
            .dir
            .key
            .open_within(
                nonce,
                Aad::from(header),
                &mut buf[to..at + len],
                at + HEADER_BYTES - to..,
            )
            .map_err(|_| RecordError::Forged)?;
        // Content, content type, zero padding (RFC 8446 §5.2).
        let Some(end) = inner.iter().rposition(|b| *b != 0) else {
            return Err(RecordError::NoContentType);
        };
        let opened = match inner[end] {
            APPLICATION_DATA => Opened::Data(end),
            ALERT if end == 2 && inner[1] == CLOSE_NOTIFY[1] => Opened::Closed,
            ALERT if end == 2 => return Err(RecordError::Alert([inner[0], inner[1]])),
            HANDSHAKE => return Err(RecordError::PostHandshake),
            other => return Err(RecordError::ContentType(other)),
        };
        self.failed = false;
        Ok(opened)
    }

    /// Past half of [`RECORD_LIMIT`]: the connection should not be reused.
    pub fn worn(&self) -> bool {
        self.dir.seq >= RECORD_LIMIT / 2
    }
}

/// Both directions of a connection whose handshake rustls completed, its
/// secrets taken out of `conn` (configured with `enable_secret_extraction`).
/// Refused unless TLS 1.3 was negotiated with `alpn`.
pub fn take_keys(conn: rustls::Connection, alpn: &[u8]) -> std::io::Result<(Sealer, Opener)> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return Err(invalid("TLS 1.3 was not negotiated".into()));
    }
    if conn.alpn_protocol() != Some(alpn) {
        return Err(invalid(
            "the peer did not agree on the framed protocol".into(),
        ));
    }
    let secrets = conn
        .dangerous_extract_secrets()
        .map_err(|e| invalid(format!("TLS secrets: {e}")))?;
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    Ok((Sealer::new(tx_seq, &tx)?, Opener::new(rx_seq, &rx)?))
}
