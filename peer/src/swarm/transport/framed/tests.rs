//! The framed transport end to end on loopback: a real [`FramedService`]
//! over a [`ChunkServer`], the [`FramedPuller`], and scripted servers and
//! raw clients for what a well-behaved peer never sends.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ossc_core::object_client::RangeSink;
use ossc_proto::v1;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

use super::client::signed_request;
use super::wire::{
    Marker, RequestHeader, ResponseHeader, GREETING, MAX_REQUEST_BODY_BYTES, REQUEST_HEADER_BYTES,
    RESPONSE_HEADER_BYTES,
};
use super::{FramedIo, FramedPuller, FramedService, FramedTls};
use crate::object_source::{ChunkTarget, VecTarget};
use crate::swarm::admission::{ConnectionGate, ServeLimits};
use crate::swarm::auth::{now_secs, TEST_SECRET};
use crate::swarm::chunk_book::{BookRegistry, ChunkBook, ObjectVersion, RecordingSink};
use crate::swarm::peer_set::{MembershipTiming, PeerSet};
use crate::swarm::tls::{PeerTls, PEER_TLS_NAME};
use crate::swarm::transport::{ChunkPull, ChunkService, PullError};
use crate::swarm::upload::UploadMeter;
use crate::swarm::{ChunkServer, ClusterSecret};

/// Four of the chunk server's 1 MiB frames: one batched segment.
const CHUNK: u64 = 4 << 20;
const SIZE: u64 = 2 * CHUNK + 12_345;
const NODE: &str = "127.0.0.1:9";

struct Node {
    server: Arc<ChunkServer>,
    books: Arc<BookRegistry>,
    service: Arc<FramedService>,
    puller: FramedPuller,
    tls: FramedTls,
    secret: ClusterSecret,
}

async fn node(tls: bool, limits: ServeLimits) -> Node {
    let secret = ClusterSecret::new(TEST_SECRET).unwrap();
    let me: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let peers = PeerSet::new(
        me,
        &[],
        Vec::new(),
        secret.clone(),
        MembershipTiming::default(),
        None,
        crate::swarm::MembershipMode::Heartbeat,
    );
    let books = Arc::new(BookRegistry::default());
    let upload = Arc::new(UploadMeter::new(None));
    let server = Arc::new(ChunkServer::new(books.clone(), Arc::new(peers), upload));
    let node_tls = PeerTls::new(&secret, NODE).unwrap();
    let tls = FramedTls::new(tls.then_some(&node_tls)).unwrap();
    let gate = ConnectionGate::new(limits, Arc::new(|_| false));
    let any = "127.0.0.1:0".parse().unwrap();
    let service = FramedService::start(any, server.clone(), tls.acceptor.clone(), gate).unwrap();
    Node {
        server,
        books,
        service,
        puller: FramedPuller::new(tls.connector.clone()),
        tls,
        secret,
    }
}

fn data() -> Vec<u8> {
    ossc_core::object_client::mock::pseudo_random_bytes(SIZE as usize, 21)
}

fn version() -> ObjectVersion {
    ObjectVersion {
        bucket: "b".into(),
        key: "k".into(),
        etag: "\"e\"".into(),
        size: SIZE,
    }
}

fn request(version: &ObjectVersion, index: u64, wait_ms: u32) -> v1::ChunkRequest {
    v1::ChunkRequest {
        chunk: Some(v1::ChunkId {
            object: Some(version.into()),
            chunk_size: CHUNK,
            index,
        }),
        wait_ms,
        ..Default::default()
    }
}

fn pull<'a>(secret: &'a ClusterSecret, index: u64, wait_ms: u32, stall: Duration) -> ChunkPull<'a> {
    let range = crate::swarm::chunk_book::chunk_range(SIZE, CHUNK, index);
    ChunkPull {
        secret,
        self_id: NODE,
        request: request(&version(), index, wait_ms),
        range,
        answer_timeout: Duration::from_millis(u64::from(wait_ms)) + Duration::from_secs(2),
        stall,
    }
}

/// A book on `node` for [`version`] over an empty target; the sink lands
/// bytes in it as a store download would.
fn book(node: &Node) -> (Arc<ChunkBook>, RecordingSink) {
    let target: Arc<dyn ChunkTarget> = Arc::new(VecTarget::with_len(SIZE as usize));
    let book = node.books.open(version(), CHUNK, &target);
    let sink = RecordingSink {
        target,
        book: book.clone(),
    };
    (book, sink)
}

fn crc_of(d: &[u8], index: u64) -> u64 {
    let r = crate::swarm::chunk_book::chunk_range(SIZE, CHUNK, index);
    ossc_core::crc64::crc64(&d[r.start as usize..r.end as usize])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_chunks_and_one_still_arriving_arrive_exact_over_one_connection() {
    let n = node(true, ServeLimits::default()).await;
    let d = data();
    let (book, sink) = book(&n);
    // Chunks 0 and 2 are complete.
    for i in [0, 2] {
        let r = book.range(i);
        sink.write_at(r.start, &d[r.start as usize..r.end as usize])
            .unwrap();
        book.record(i, crc_of(&d, i));
    }
    let addr = n.service.local_addr();
    let out = VecTarget::with_len(SIZE as usize);
    let stall = Duration::from_secs(5);
    for i in [0, 2] {
        let crc = n
            .puller
            .fetch(addr, &pull(&n.secret, i, 0, stall), &out)
            .await
            .unwrap();
        assert_eq!(crc, crc_of(&d, i));
    }
    // Chunk 1 lands while it is being pulled: half now, the rest later,
    // then its CRC.
    let r = book.range(1);
    let (start, mid) = (r.start as usize, (r.start + CHUNK / 2 + 7) as usize);
    sink.write_at(r.start, &d[start..mid]).unwrap();
    let landing = {
        let (d, book) = (d.clone(), book.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sink.write_at(mid as u64, &d[mid..r.end as usize]).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            book.record(1, crc_of(&d, 1));
            sink // the target stays alive, so the book does
        })
    };
    let crc = n
        .puller
        .fetch(addr, &pull(&n.secret, 1, 5_000, stall), &out)
        .await
        .unwrap();
    let _sink = landing.await.unwrap();
    assert_eq!(crc, crc_of(&d, 1));
    assert_eq!(out.contents(), d);
    // An object this node does not hold: NOT_FOUND, as over gRPC.
    let mut unknown = pull(&n.secret, 0, 0, stall);
    unknown
        .request
        .chunk
        .as_mut()
        .unwrap()
        .object
        .as_mut()
        .unwrap()
        .etag = "\"x\"".into();
    let r = n.puller.fetch(addr, &unknown, &out).await;
    assert!(matches!(r, Err(PullError::NotHeld)), "{r:?}");
    // Every pull, the refused one included, went over the one connection.
    assert_eq!(n.puller.connections_opened.load(Ordering::Relaxed), 1);
    assert_eq!(n.puller.bytes_received.load(Ordering::Relaxed), SIZE);
    assert!(n.server.upload_meter().total() >= SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_chunk_arrives_as_its_status_and_the_connection_stays() {
    let n = node(false, ServeLimits::default()).await;
    let d = data();
    let (book, sink) = book(&n);
    let r = book.range(0);
    sink.write_at(0, &d[..(r.end / 2) as usize]).unwrap();
    let closing = {
        let book = book.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            book.close();
        })
    };
    let addr = n.service.local_addr();
    let out = VecTarget::with_len(SIZE as usize);
    let p = pull(&n.secret, 0, 5_000, Duration::from_secs(5));
    // The server aborts with UNAVAILABLE (the object was released): lost.
    let r = n.puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Lost(m)) if m.contains("no longer held")),
        "{r:?}"
    );
    closing.await.unwrap();
    // Corrupted bytes behind the recorded CRC: Corrupt, on the same
    // connection.
    let (book, sink) = self::book(&n);
    sink.write_at(0, &d).unwrap();
    for i in 0..book.n_chunks() {
        book.record(i, crc_of(&d, i));
    }
    n.server.inject_corruption(true);
    let r = n.puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Corrupt(m)) if m.contains("CRC-64")),
        "{r:?}"
    );
    assert_eq!(n.puller.connections_opened.load(Ordering::Relaxed), 1);
    assert_eq!(n.puller.bytes_received.load(Ordering::Relaxed), 0);
}

/// A plaintext server that greets, reads one request and sends `answer`,
/// then closes (`close`) or holds the connection open.
async fn scripted(answer: Vec<u8>, close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(&GREETING).await.unwrap();
        let mut h = [0u8; REQUEST_HEADER_BYTES];
        s.read_exact(&mut h).await.unwrap();
        let req = RequestHeader::parse(&h, MAX_REQUEST_BODY_BYTES).unwrap();
        let mut rest = vec![0u8; usize::from(req.node_len) + req.body_len as usize];
        s.read_exact(&mut rest).await.unwrap();
        s.write_all(&answer).await.unwrap();
        if !close {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
    addr
}

fn segment(bytes: &[u8]) -> Vec<u8> {
    let mut out = Marker::Data(bytes.len() as u32).encode().to_vec();
    out.extend_from_slice(bytes);
    out
}

fn end(crc: u64) -> Vec<u8> {
    let mut out = Marker::End.encode().to_vec();
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalls_truncations_and_bad_frames_never_count_as_a_chunk() {
    let d = data();
    let secret = ClusterSecret::new(TEST_SECRET).unwrap();
    let puller = FramedPuller::new(None);
    let out = VecTarget::with_len(SIZE as usize);
    let stall = Duration::from_millis(300);
    let p = pull(&secret, 0, 0, stall);
    let chunk = &d[..CHUNK as usize];
    let ok = ResponseHeader::ok(CHUNK).encode().to_vec();
    let half = &chunk[..(CHUNK / 2) as usize];

    // Half the chunk, then silence: lost within the stall bound.
    let addr = scripted([ok.clone(), segment(half)].concat(), false).await;
    let t = Instant::now();
    let r = puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Lost(m)) if m.contains("stalled")),
        "{r:?}"
    );
    assert!(
        t.elapsed() < stall + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );

    // Half the chunk, then the connection closes, between segments or
    // within one: lost, never short.
    let addr = scripted([ok.clone(), segment(half)].concat(), true).await;
    let r = puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Lost(m)) if m.contains("closed")),
        "{r:?}"
    );
    let cut = segment(chunk)[..half.len()].to_vec();
    let addr = scripted([ok.clone(), cut].concat(), true).await;
    let r = puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Lost(m)) if m.contains("truncated")),
        "{r:?}"
    );

    // Half the chunk ended with its own CRC: the chunk is short.
    let crc = ossc_core::crc64::crc64(half);
    let addr = scripted([ok.clone(), segment(half), end(crc)].concat(), false).await;
    let r = puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Corrupt(m)) if m.contains("ended at")),
        "{r:?}"
    );

    // The whole chunk with a CRC that is not its own.
    let crc = ossc_core::crc64::crc64(chunk) ^ 1;
    let addr = scripted([ok.clone(), segment(chunk), end(crc)].concat(), false).await;
    let r = puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Corrupt(m)) if m.contains("CRC-64")),
        "{r:?}"
    );

    // A segment past the chunk's end, a wrong length, a bad segment word.
    let over = [ok.clone(), segment(half), segment(chunk)].concat();
    let wrong_len = ResponseHeader::ok(CHUNK + 1).encode().to_vec();
    let bad_word = [ok.clone(), u32::MAX.wrapping_sub(2).to_be_bytes().to_vec()].concat();
    for answer in [over, wrong_len, bad_word] {
        let addr = scripted(answer, false).await;
        let r = puller.fetch(addr, &p, &out).await;
        assert!(matches!(r, Err(PullError::Corrupt(_))), "{r:?}");
    }

    // The right bytes and CRC: the one success.
    let crc = ossc_core::crc64::crc64(chunk);
    let addr = scripted(
        [ok, segment(half), segment(&chunk[half.len()..]), end(crc)].concat(),
        false,
    )
    .await;
    assert_eq!(puller.fetch(addr, &p, &out).await.unwrap(), crc);
    assert_eq!(puller.bytes_received.load(Ordering::Relaxed), CHUNK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_is_not_a_framed_server_is_unreachable_and_remembered() {
    let secret = ClusterSecret::new(TEST_SECRET).unwrap();
    let puller = FramedPuller::new(None);
    let out = VecTarget::with_len(SIZE as usize);
    let p = pull(&secret, 0, 0, Duration::from_secs(1));
    // Something that talks first, but not our greeting.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let r = puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Unreachable(m)) if m.contains("framed peer server")),
        "{r:?}"
    );
    // Not tried again for a while: the next pull goes elsewhere at once.
    let t = Instant::now();
    let r = puller.fetch(addr, &p, &out).await;
    assert!(
        matches!(&r, Err(PullError::Unreachable(m)) if m.contains("recently")),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_millis(100));
    assert_eq!(puller.unreachable.load(Ordering::Relaxed), 2);
}

/// rustls' own stream speaks to the server in [`raw`]: the server's record
/// layer interoperates with rustls'.
impl FramedIo for tokio_rustls::client::TlsStream<TcpStream> {}

/// A raw connection to `node`'s framed port, past its greeting.
async fn raw(node: &Node) -> Box<dyn FramedIo> {
    let tcp = TcpStream::connect(node.service.local_addr()).await.unwrap();
    let mut io: Box<dyn FramedIo> = match &node.tls.connector {
        Some(c) => {
            let name = rustls::pki_types::ServerName::try_from(PEER_TLS_NAME).unwrap();
            Box::new(c.connect(name, tcp).await.unwrap())
        }
        None => Box::new(BufReader::new(tcp)),
    };
    let mut greeting = [0u8; GREETING.len()];
    io.read_exact(&mut greeting).await.unwrap();
    assert_eq!(greeting, GREETING);
    io
}

/// Sends `bytes`; the answer header, if one comes (None: the server
/// closed the connection without answering).
async fn send(io: &mut Box<dyn FramedIo>, bytes: &[u8]) -> Option<(ResponseHeader, String)> {
    io.write_all(bytes).await.unwrap();
    io.flush().await.unwrap();
    let mut h = [0u8; RESPONSE_HEADER_BYTES];
    let read = tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut h))
        .await
        .expect("an answer or a close, promptly");
    read.ok()?;
    let header = ResponseHeader::parse(&h).unwrap();
    let mut message = vec![0u8; header.message_len as usize];
    io.read_exact(&mut message).await.unwrap();
    Some((header, String::from_utf8(message).unwrap()))
}

/// Whether the server closed `io` (EOF or reset within a few seconds).
async fn closed(io: &mut Box<dyn FramedIo>) -> bool {
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), io.read(&mut b)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_oversized_requests_are_refused_before_parsing() {
    let limits = ServeLimits {
        max_request_body_bytes: 1024,
        ..ServeLimits::default()
    };
    let n = node(true, limits).await;
    let wrong = ClusterSecret::new(b"Wx3Lr8Tq1Nz6Vb0Kf5Hd9Pj2Mc7Gs4Ya").unwrap();
    let garbage = [0xffu8; 40];
    let now = now_secs();

    // Garbage under the right secret is decoded, and refused as such; the
    // connection serves on.
    let mut io = raw(&n).await;
    let signed = signed_request(&n.secret, NODE, &garbage, now, rand::random());
    let (h, m) = send(&mut io, &signed).await.unwrap();
    assert_eq!(h.status, Code::InvalidArgument, "{m}");
    let real = request(&version(), 0, 0).encode_to_vec();
    let once = signed_request(&n.secret, NODE, &real, now, rand::random());
    let (h, _) = send(&mut io, &once).await.unwrap();
    assert_eq!(h.status, Code::NotFound);

    // The same garbage under another secret never reaches the decoder:
    // UNAUTHENTICATED, and the connection closes.
    let mut io = raw(&n).await;
    let forged = signed_request(&wrong, NODE, &garbage, now, rand::random());
    let (h, _) = send(&mut io, &forged).await.unwrap();
    assert_eq!(h.status, Code::Unauthenticated);
    assert!(closed(&mut io).await);

    // A replay of an accepted request, and a stale one.
    for refused in [
        once,
        signed_request(&n.secret, NODE, &real, now - 3600, rand::random()),
    ] {
        let mut io = raw(&n).await;
        let (h, _) = send(&mut io, &refused).await.unwrap();
        assert_eq!(h.status, Code::Unauthenticated);
        assert!(closed(&mut io).await);
    }

    // A body over the cap, a node id of 0 bytes, a bad magic: closed
    // without an answer and without waiting for the announced bytes.
    let big = vec![0u8; 1025];
    let oversized = signed_request(&n.secret, NODE, &big, now, rand::random());
    let mut no_node = signed_request(&n.secret, NODE, &real, now, rand::random());
    no_node[8..10].fill(0);
    let mut bad_magic = signed_request(&n.secret, NODE, &real, now, rand::random());
    bad_magic[0] ^= 1;
    for refused in [oversized, no_node, bad_magic] {
        let mut io = raw(&n).await;
        let t = Instant::now();
        assert!(send(&mut io, &refused[..REQUEST_HEADER_BYTES])
            .await
            .is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    n.service.shutdown(Duration::from_millis(100)).await;
}

/// The records the server seals in place read back in rustls' own client:
/// every byte of a chunk in its segments, then its CRC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_sealed_in_place_reads_back_in_rustls() {
    let n = node(true, ServeLimits::default()).await;
    let d = data();
    let (book, sink) = book(&n);
    let r = book.range(1);
    sink.write_at(r.start, &d[r.start as usize..r.end as usize])
        .unwrap();
    book.record(1, crc_of(&d, 1));
    let mut io = raw(&n).await;
    let body = request(&version(), 1, 0).encode_to_vec();
    let signed = signed_request(&n.secret, NODE, &body, now_secs(), rand::random());
    io.write_all(&signed).await.unwrap();
    io.flush().await.unwrap();
    let mut h = [0u8; RESPONSE_HEADER_BYTES];
    io.read_exact(&mut h).await.unwrap();
    assert_eq!(
        ResponseHeader::parse(&h).unwrap(),
        ResponseHeader::ok(CHUNK)
    );
    let (mut got, mut segments) = (Vec::new(), 0);
    let crc = loop {
        let mut word = [0u8; 4];
        io.read_exact(&mut word).await.unwrap();
        match Marker::parse(word).unwrap() {
            Marker::Data(len) => {
                let at = got.len();
                got.resize(at + len as usize, 0);
                io.read_exact(&mut got[at..]).await.unwrap();
                segments += 1;
            }
            Marker::End => {
                let mut crc = [0u8; 8];
                io.read_exact(&mut crc).await.unwrap();
                break u64::from_be_bytes(crc);
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        got == d[r.start as usize..r.end as usize],
        "the chunk's bytes"
    );
    assert_eq!(crc, crc_of(&d, 1));
    // One segment per 1 MiB frame of the chunk server.
    assert_eq!(
        segments,
        CHUNK.div_ceil(crate::swarm::chunk_server::FRAME_BYTES as u64)
    );
    n.service.shutdown(Duration::from_millis(100)).await;
}
