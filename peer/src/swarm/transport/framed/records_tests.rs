//! [`super::records`] against rustls' own record layer: records sealed here
//! open in rustls and the other way round, and every malformed, forged,
//! replayed or unexpected record is refused; [`RecordStream`] carries
//! writes of every kind and fails on a bad record.

use std::io::{IoSlice, Read, Write};

use rand::{Rng, SeedableRng};
use rustls::{ClientConnection, ServerConnection};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::record_stream::RecordStream;
use super::records::{
    take_keys, Opened, Opener, RecordError, Sealer, HEADER_BYTES, MAX_FRAGMENT, RECORD_LIMIT,
    RECORD_OVERHEAD,
};
use super::{FramedTls, ALPN};
use crate::swarm::auth::{ClusterSecret, TEST_SECRET};
use crate::swarm::tls::{PeerTls, PEER_TLS_NAME};

/// A rustls client and server of the framed configuration, handshaken in
/// memory.
fn handshaken() -> (ClientConnection, ServerConnection) {
    let secret = ClusterSecret::new(TEST_SECRET).unwrap();
    let tls = PeerTls::new(&secret, "10.0.0.1:7468").unwrap();
    let framed = FramedTls::new(Some(&tls)).unwrap();
    let server_config = framed.acceptor.unwrap().config().clone();
    let client_config = framed.connector.unwrap().config().clone();
    let name = rustls::pki_types::ServerName::try_from(PEER_TLS_NAME).unwrap();
    let mut client = ClientConnection::new(client_config, name).unwrap();
    let mut server = ServerConnection::new(server_config).unwrap();
    while client.is_handshaking() || server.is_handshaking() {
        transfer(&mut client, &mut server);
        transfer(&mut server, &mut client);
    }
    // Nothing follows the handshake (no session tickets).
    assert!(!server.wants_write() && !client.wants_write());
    (client, server)
}

fn transfer(
    from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
    to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets().unwrap();
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen()).collect()
}

/// Opens every record of `wire` into one contiguous plaintext, as the
/// framed reader does; also whether a close_notify ended it.
fn open_all(opener: &mut Opener, wire: &mut [u8]) -> Result<(Vec<u8>, bool), RecordError> {
    let (mut to, mut at, mut closed) = (0, 0, false);
    while at < wire.len() {
        let len = Opener::record_len(&wire[at..])?.expect("a header");
        match opener.open(wire, to, at)? {
            Opened::Data(n) => to += n,
            Opened::Closed => closed = true,
        }
        at += len;
    }
    Ok((wire[..to].to_vec(), closed))
}

/// Seals `data` in records of at most [`MAX_FRAGMENT`].
fn seal_all(sealer: &mut Sealer, data: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    for piece in data.chunks(MAX_FRAGMENT) {
        let mut record = vec![0u8; piece.len() + RECORD_OVERHEAD];
        record[HEADER_BYTES..HEADER_BYTES + piece.len()].copy_from_slice(piece);
        let n = sealer.seal_data(&mut record, piece.len()).unwrap();
        assert_eq!(n, record.len());
        wire.extend_from_slice(&record);
    }
    wire
}

#[test]
fn records_sealed_here_open_in_rustls_and_rustls_records_open_here() {
    let (client, mut server) = handshaken();
    let (mut sealer, mut opener) = take_keys(client.into(), ALPN).unwrap();

    // rustls → here: many records open into one contiguous plaintext.
    let down = random(5 * MAX_FRAGMENT + 123, 1);
    server.set_buffer_limit(None);
    server.writer().write_all(&down).unwrap();
    server.writer().write_all(b"tail").unwrap();
    server.send_close_notify();
    let mut wire = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut wire).unwrap();
    }
    let (plain, closed) = open_all(&mut opener, &mut wire).unwrap();
    assert_eq!(plain.len(), down.len() + 4);
    assert!(plain[..down.len()] == down[..] && &plain[down.len()..] == b"tail");
    assert!(closed, "close_notify is the end of the stream");

    // here → rustls: every byte arrives, then our close_notify.
    let up = random(3 * MAX_FRAGMENT + 7, 2);
    let mut wire = seal_all(&mut sealer, &up);
    let mut close = vec![0u8; 64];
    let n = sealer.seal_close_notify(&mut close).unwrap();
    wire.extend_from_slice(&close[..n]);
    let (mut rd, mut got, mut eof) = (&wire[..], Vec::new(), false);
    while !eof {
        server.read_tls(&mut rd).unwrap();
        server.process_new_packets().unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match server.reader().read(&mut buf) {
                Ok(0) => eof = true,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            }
            break;
        }
    }
    assert!(rd.is_empty());
    assert!(got == up, "rustls read back what was sealed here");
}

#[test]
fn forged_replayed_malformed_and_unexpected_records_are_refused() {
    let (client, mut server) = handshaken();
    let (_, mut forged) = take_keys(client.into(), ALPN).unwrap();
    server.writer().write_all(&random(100, 3)).unwrap();
    server.writer().write_all(&random(100, 4)).unwrap();
    let mut wire = Vec::new();
    while server.wants_write() {
        server.write_tls(&mut wire).unwrap();
    }
    let first = Opener::record_len(&wire).unwrap().unwrap();
    let good = wire.clone();

    // One flipped bit anywhere in the body: forged, and the opener is dead
    // for the intact record after it.
    wire[HEADER_BYTES + 10] ^= 1;
    assert_eq!(forged.open(&mut wire, 0, 0), Err(RecordError::Forged));
    let mut second = good.clone();
    assert_eq!(forged.open(&mut second, 0, first), Err(RecordError::Forged));

    // A fresh opener: the records in order open; replaying one does not.
    let (client, mut server2) = handshaken();
    let (_, mut o) = take_keys(client.into(), ALPN).unwrap();
    server2.writer().write_all(b"once").unwrap();
    let mut w = Vec::new();
    while server2.wants_write() {
        server2.write_tls(&mut w).unwrap();
    }
    let copy = w.clone();
    assert_eq!(o.open(&mut w, 0, 0), Ok(Opened::Data(4)));
    assert_eq!(&w[..4], b"once");
    let mut replay = copy;
    assert_eq!(o.open(&mut replay, 0, 0), Err(RecordError::Forged));

    // Headers no TLS 1.3 peer sends are refused before the body is read.
    let mut h = good[..HEADER_BYTES].to_vec();
    h[0] = 22;
    assert!(matches!(
        Opener::record_len(&h),
        Err(RecordError::Header(_))
    ));
    let mut h = good[..HEADER_BYTES].to_vec();
    h[1..3].copy_from_slice(&[3, 1]);
    assert!(matches!(
        Opener::record_len(&h),
        Err(RecordError::Header(_))
    ));
    let mut h = good[..HEADER_BYTES].to_vec();
    h[3..5].copy_from_slice(&((MAX_FRAGMENT + 257) as u16).to_be_bytes());
    assert!(matches!(
        Opener::record_len(&h),
        Err(RecordError::Oversized(_))
    ));
    assert_eq!(Opener::record_len(&h[..4]), Ok(None));

    // A post-handshake message (a KeyUpdate rustls sends) is refused.
    let (client, mut server3) = handshaken();
    let (_, mut o) = take_keys(client.into(), ALPN).unwrap();
    server3.refresh_traffic_keys().unwrap();
    let mut w = Vec::new();
    while server3.wants_write() {
        server3.write_tls(&mut w).unwrap();
    }
    assert_eq!(o.open(&mut w, 0, 0), Err(RecordError::PostHandshake));
}

#[test]
fn keys_are_retired_before_their_record_limit() {
    let secrets = rustls::ConnectionTrafficSecrets::Aes256Gcm {
        key: rustls::crypto::cipher::AeadKey::from([7u8; 32]),
        iv: rustls::crypto::cipher::Iv::from([9u8; 12]),
    };
    let mut record = vec![0u8; 1 + RECORD_OVERHEAD];
    let fresh = Sealer::new(0, &secrets).unwrap();
    assert!(!fresh.worn());
    let mut half = Sealer::new(RECORD_LIMIT / 2, &secrets).unwrap();
    assert!(half.worn());
    assert!(half.seal_data(&mut record, 1).is_ok());
    let mut last = Sealer::new(RECORD_LIMIT - 1, &secrets).unwrap();
    assert!(last.seal_data(&mut record, 1).is_ok());
    assert_eq!(
        last.seal_data(&mut record, 1),
        Err(RecordError::KeysWornOut)
    );
    // Sealed and opened under the same key and sequence: the record opens.
    let mut sealer = Sealer::new(5, &secrets).unwrap();
    let mut opener = Opener::new(5, &secrets).unwrap();
    record[HEADER_BYTES] = 0xab;
    sealer.seal_data(&mut record, 1).unwrap();
    assert_eq!(opener.open(&mut record, 0, 0), Ok(Opened::Data(1)));
    assert_eq!(record[0], 0xab);
}

/// Two [`RecordStream`]s joined in memory, under the keys of one handshake:
/// the puller's end and the server's.
fn stream_pair() -> (
    RecordStream<tokio::io::DuplexStream>,
    RecordStream<tokio::io::DuplexStream>,
) {
    let (client, server) = handshaken();
    let (a, b) = tokio::io::duplex(64 << 10);
    let client_keys = take_keys(client.into(), ALPN).unwrap();
    let server_keys = take_keys(server.into(), ALPN).unwrap();
    (
        RecordStream::new(a, client_keys, 256 << 10, 16 << 10),
        RecordStream::new(b, server_keys, 8 << 10, 1 << 20),
    )
}

/// Reads `io` to its end through `fill_buf`, as the puller does.
async fn read_to_end(io: &mut RecordStream<tokio::io::DuplexStream>) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    loop {
        let buf = io.fill_buf().await?;
        if buf.is_empty() {
            return Ok(got);
        }
        let n = buf.len();
        got.extend_from_slice(buf);
        io.consume(n);
    }
}

#[tokio::test]
async fn streams_carry_vectored_writes_and_records_sealed_in_place_then_close() {
    let (mut puller, mut server) = stream_pair();
    let parts = [random(300_000, 5), random(1, 6), random(70_001, 7)];
    let in_place = random(1 << 20, 8);
    let sending = async {
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut bufs = &mut slices[..];
        while !bufs.is_empty() {
            let n = server.write_vectored(bufs).await.unwrap();
            IoSlice::advance_slices(&mut bufs, n);
        }
        server.flush().await.unwrap();
        server
            .seal_with(b"word", in_place.len(), &mut |slots| {
                let mut at = 0;
                for slot in slots.iter_mut() {
                    let n = slot.len();
                    slot.copy_from_slice(&in_place[at..at + n]);
                    at += n;
                }
                assert_eq!(at, in_place.len());
                Ok(())
            })
            .unwrap();
        // A failed fill seals nothing (and uses no sequence number).
        server.flush().await.unwrap();
        let failed = server.seal_with(b"", 10, &mut |_| Err(std::io::ErrorKind::Other.into()));
        assert!(failed.is_err());
        server.shutdown().await.unwrap();
    };
    let (_, got) = tokio::join!(sending, read_to_end(&mut puller));
    let got = got.unwrap();
    let mut want: Vec<u8> = parts.concat();
    want.extend_from_slice(b"word");
    want.extend_from_slice(&in_place);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "every byte, in order, then close_notify");
}

#[tokio::test]
async fn a_forged_or_cut_record_fails_the_stream_after_the_bytes_before_it() {
    for cut in [false, true] {
        let (client, server) = handshaken();
        let (a, mut raw) = tokio::io::duplex(256 << 10);
        let keys = take_keys(client.into(), ALPN).unwrap();
        let mut puller = RecordStream::new(a, keys, 8 << 10, 16 << 10);
        let (mut sealer, _) = take_keys(server.into(), ALPN).unwrap();
        let good = random(1000, 9);
        let mut wire = seal_all(&mut sealer, &good);
        let next = seal_all(&mut sealer, &random(1000, 10));
        if cut {
            wire.extend_from_slice(&next[..next.len() - 1]);
        } else {
            let mut forged = next.clone();
            forged[HEADER_BYTES + 3] ^= 0x40;
            wire.extend_from_slice(&forged);
        }
        raw.write_all(&wire).await.unwrap();
        drop(raw);
        let buf = puller.fill_buf().await.unwrap();
        assert!(buf == &good[..], "the record before arrives");
        let n = buf.len();
        puller.consume(n);
        let err = puller.fill_buf().await.unwrap_err();
        let want = match cut {
            true => std::io::ErrorKind::UnexpectedEof,
            false => std::io::ErrorKind::InvalidData,
        };
        assert_eq!(err.kind(), want, "{err}");
    }
}
