//! The end-to-end check of an object assembled from chunks, before its
//! target is handed out.
//!
//! Design decisions:
//! - The chunk CRCs are combined and compared with the store's whole-object
//!   CRC-64 (the listing's, a store part's header, or a HEAD). Peer bytes
//!   are also checked against the strongest digest the store declares
//!   (SHA-256, SHA-1, Content-MD5, MD5 ETag; `crate::object_source::verify`),
//!   which a peer holding the cluster secret cannot forge.
//! - On any mismatch every peer-sourced chunk is refetched from the store
//!   (its book entry forgotten first, so it is not served on meanwhile) and
//!   the checks repeated; a mismatch left after that is the store's own and
//!   fails the fetch.

use std::collections::BTreeMap;
use std::sync::Arc;

use ossc_core::crc64;
use ossc_core::fetch::{FetchEngine, FetchProgress, FetchedObject};
use ossc_core::object_client::{ClientError, ObjectClientError, ObjectMeta};

use super::chunk_book::{ChunkBook, RecordingSink};
use crate::object_source::verify;
use crate::object_source::{ChunkTarget, FetchOutcome};

/// Where one chunk came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ChunkSource {
    Store { object_crc64: Option<u64> },
    Peer(String),
}

/// One chunk of the object, as fetched.
pub(super) struct ChunkDone {
    pub index: u64,
    pub crc: u64,
    pub source: ChunkSource,
    /// Store bytes spent on this chunk (a failed pull's fallback included).
    pub store_bytes: u64,
}

/// Checks the object `chunks` assembled in `target` against the store (see
/// the module docs), refetching peer chunks on a mismatch; what the fetch
/// reports.
pub(super) async fn settle(
    engine: &FetchEngine,
    meta: &ObjectMeta,
    book: &Arc<ChunkBook>,
    target: &Arc<dyn ChunkTarget>,
    progress: &Arc<FetchProgress>,
    mut chunks: Vec<ChunkDone>,
) -> Result<FetchOutcome, ObjectClientError> {
    let mut crc = combined(&chunks, book);
    let mut expected = meta.crc64.or_else(|| {
        chunks.iter().find_map(|c| match c.source {
            ChunkSource::Store { object_crc64 } => object_crc64,
            ChunkSource::Peer(_) => None,
        })
    });
    let from_peers = chunks
        .iter()
        .any(|c| matches!(c.source, ChunkSource::Peer(_)));
    // Peer bytes are checked against every digest the store declares:
    // one HEAD (unless the meta has them) gives the CRC-64 and the rest.
    let mut checksums = meta.checksums.clone();
    if from_peers && (expected.is_none() || checksums.is_empty()) {
        match engine.client().head(&meta.key).await {
            Ok(head) if head.etag == meta.etag && head.size == meta.size => {
                expected = expected.or(head.crc64);
                if checksums.is_empty() {
                    checksums = head.checksums;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(key = %meta.key, error = %e, "HEAD for the store's checksums failed; checking what the parts declared")
            }
        }
    }
    if expected.is_some_and(|e| e != crc) && from_peers {
        tracing::warn!(
            key = %meta.key,
            peers = ?peer_sources(&chunks),
            expected = format!("{:#018x}", expected.unwrap_or(0)),
            actual = format!("{crc:#018x}"),
            "whole-object CRC-64 mismatch; refetching every peer chunk from the store"
        );
        crc = refetch_peer_chunks(engine, meta, book, target, progress, &mut chunks).await?;
    }
    check_crc64(&meta.key, expected, crc)?;
    let crc64_verified = expected.is_some();
    let mut verified_by = crc64_verified.then_some(verify::CRC64);
    let from_peers = chunks
        .iter()
        .any(|c| matches!(c.source, ChunkSource::Peer(_)));
    if let Some(digest) = verify::digest_to_check(&checksums, crc64_verified, from_peers) {
        let mut check = verify::check_digest(digest, meta.size, target.clone()).await?;
        if matches!(check, verify::DigestCheck::Mismatch { .. }) && from_peers {
            tracing::warn!(
                key = %meta.key,
                peers = ?peer_sources(&chunks),
                digest = digest.kind.name(),
                "whole-object digest mismatch; refetching every peer chunk from the store"
            );
            crc = refetch_peer_chunks(engine, meta, book, target, progress, &mut chunks).await?;
            check_crc64(&meta.key, expected, crc)?;
            check = verify::check_digest(digest, meta.size, target.clone()).await?;
        }
        verified_by = verify::settle_store_check(meta, check, crc64_verified)?;
    }
    let mut by_peer = BTreeMap::new();
    let mut bytes_peer = 0;
    let mut bytes_store = 0;
    for c in &chunks {
        bytes_store += c.store_bytes;
        if let ChunkSource::Peer(p) = &c.source {
            let r = book.range(c.index);
            *by_peer.entry(p.clone()).or_insert(0) += r.end - r.start;
            bytes_peer += r.end - r.start;
        }
    }
    Ok(FetchOutcome {
        fetched: FetchedObject {
            size: meta.size,
            etag: meta.etag.clone(),
            crc64: crc,
            crc64_verified,
        },
        bytes_store,
        bytes_peer,
        by_peer,
        verified_by,
    })
}

/// Refetches every peer-sourced chunk from the store (after an
/// end-to-end mismatch), recording them as store chunks; the object's
/// CRC-64 from the chunks now.
async fn refetch_peer_chunks(
    engine: &FetchEngine,
    meta: &ObjectMeta,
    book: &Arc<ChunkBook>,
    target: &Arc<dyn ChunkTarget>,
    progress: &Arc<FetchProgress>,
    chunks: &mut [ChunkDone],
) -> Result<u64, ObjectClientError> {
    for c in chunks
        .iter_mut()
        .filter(|c| matches!(c.source, ChunkSource::Peer(_)))
    {
        book.forget(c.index);
        let range = book.range(c.index);
        let sink = Arc::new(RecordingSink {
            target: target.clone(),
            book: book.clone(),
        });
        let got = engine
            .fetch_range(meta, range.clone(), sink, progress.clone())
            .await?;
        c.crc = got.crc64;
        c.store_bytes += range.end - range.start;
        c.source = ChunkSource::Store {
            object_crc64: got.object_crc64,
        };
        book.record(c.index, c.crc);
    }
    Ok(combined(chunks, book))
}

/// The peers that sent any of `chunks`, each once.
fn peer_sources(chunks: &[ChunkDone]) -> Vec<String> {
    chunks
        .iter()
        .filter_map(|c| match &c.source {
            ChunkSource::Peer(p) => Some(p.clone()),
            ChunkSource::Store { .. } => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// An error when the store declared a CRC-64 (`expected`) and the
/// object's (`actual`) differs.
fn check_crc64(key: &str, expected: Option<u64>, actual: u64) -> Result<(), ObjectClientError> {
    match expected {
        Some(expected) if expected != actual => Err(ClientError::Crc64Mismatch {
            key: key.to_string(),
            expected,
            actual,
        }
        .into()),
        _ => Ok(()),
    }
}

/// The object's CRC-64 from its chunks' CRCs, in order.
fn combined(chunks: &[ChunkDone], book: &ChunkBook) -> u64 {
    chunks.iter().fold(0u64, |acc, c| {
        let r = book.range(c.index);
        crc64::combine(acc, c.crc, r.end - r.start)
    })
}
