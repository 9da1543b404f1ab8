//! The end-to-end check of a finished object against the strongest digest
//! its store declares, before the object is handed out.
//!
//! Design decisions:
//! - **What is checked.** CRC-64/XZ (combined from the parts, no extra pass)
//!   is checked by the fetch engine and the peer layer whenever the store
//!   sends it. When any byte came from a peer, a cryptographic digest
//!   (SHA-256, SHA-1, Content-MD5, MD5 ETag) is checked on top if the store
//!   declares one: a CRC detects corruption, not a peer that holds the
//!   cluster secret and forges a matching CRC. When the store sent no
//!   CRC-64, the strongest digest it declares is checked instead, whatever
//!   the source. Otherwise nothing more is done: the object is "unverified"
//!   (`verified_by: null` in STATUS).
//! - **One sequential pass** over the finished target, on a blocking thread
//!   (docs/benchmarks.md has its cost per GB). The digests come from the
//!   listing's meta when it has them, else from one HEAD (with checksum
//!   mode), which must name the same ETag and size.
//! - A mismatch of bytes that all came from the store is an error (EIO) for
//!   a declared digest; for an MD5 ETag it only shows that the store's ETag
//!   is not an MD5 after all (logged, then treated as absent).

use std::sync::Arc;

use ossc_core::checksums::{digest_of, DigestKind, StoreChecksums, StoreDigest};
use ossc_core::object_client::{ClientError, ObjectClient, ObjectClientError, ObjectMeta};

use super::ChunkTarget;

/// Name reported when CRC-64/XZ was the check.
pub const CRC64: &str = "crc64";

/// The digests the store declares for `meta`'s version: `meta.checksums`, or
/// a HEAD's. A HEAD that names another version is [`ClientError::ObjectChanged`].
pub async fn store_checksums(
    client: &dyn ObjectClient,
    meta: &ObjectMeta,
) -> Result<StoreChecksums, ObjectClientError> {
    if !meta.checksums.is_empty() {
        return Ok(meta.checksums.clone());
    }
    let head = client.head(&meta.key).await?;
    if head.etag != meta.etag || head.size != meta.size {
        return Err(ClientError::ObjectChanged {
            key: meta.key.clone(),
            expected: format!("{} ({} bytes)", meta.etag, meta.size),
            found: format!("{} ({} bytes)", head.etag, head.size),
        }
        .into());
    }
    Ok(head.checksums)
}

/// The digest to compute over the finished object, if any (see the module
/// note): a cryptographic one when peers contributed, else the strongest
/// one when CRC-64/XZ could not be checked.
pub fn digest_to_check(
    checksums: &StoreChecksums,
    crc64_verified: bool,
    from_peers: bool,
) -> Option<&StoreDigest> {
    if from_peers {
        if let Some(d) = checksums.strongest_cryptographic() {
            return Some(d);
        }
    }
    if crc64_verified {
        None
    } else {
        checksums.strongest()
    }
}

/// The result of one digest pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestCheck {
    Matched(DigestKind),
    Mismatch {
        kind: DigestKind,
        expected: Vec<u8>,
        actual: Vec<u8>,
    },
}

impl DigestCheck {
    /// The error a mismatch becomes.
    pub fn into_error(self, key: &str) -> Option<ObjectClientError> {
        match self {
            DigestCheck::Matched(_) => None,
            DigestCheck::Mismatch {
                kind,
                expected,
                actual,
            } => Some(
                ClientError::ChecksumMismatch {
                    key: key.to_string(),
                    algorithm: kind.name(),
                    expected: hex::encode(expected),
                    actual: hex::encode(actual),
                }
                .into(),
            ),
        }
    }
}

/// Computes `digest`'s algorithm over bytes `0..size` of `target` (one
/// sequential pass on a blocking thread) and compares.
pub async fn check_digest(
    digest: &StoreDigest,
    size: u64,
    target: Arc<dyn ChunkTarget>,
) -> Result<DigestCheck, ObjectClientError> {
    let kind = digest.kind;
    let actual = tokio::task::spawn_blocking(move || {
        digest_of(kind, size, |offset, buf| target.read_at(offset, buf))
    })
    .await
    .map_err(|e| ClientError::Sink(format!("digest task failed: {e}")))?
    .map_err(|e| ClientError::Sink(format!("reading back for the {} check: {e}", kind.name())))?;
    Ok(if actual == digest.value {
        DigestCheck::Matched(kind)
    } else {
        DigestCheck::Mismatch {
            kind,
            expected: digest.value.clone(),
            actual,
        }
    })
}

/// Verifies an object whose bytes all came from the store; returns what
/// verified it (`None`: unverified). See the module note.
pub async fn verify_store_bytes(
    client: &dyn ObjectClient,
    meta: &ObjectMeta,
    target: Arc<dyn ChunkTarget>,
    crc64_verified: bool,
) -> Result<Option<&'static str>, ObjectClientError> {
    if crc64_verified {
        return Ok(Some(CRC64));
    }
    let checksums = match store_checksums(client, meta).await {
        Ok(c) => c,
        Err(e @ ObjectClientError::Client(ClientError::ObjectChanged { .. })) => return Err(e),
        Err(e) => {
            tracing::warn!(key = %meta.key, error = %e, "HEAD for the store's checksums failed; the object stays unverified");
            return Ok(None);
        }
    };
    let Some(digest) = digest_to_check(&checksums, false, false) else {
        return Ok(None);
    };
    settle_store_check(
        meta,
        check_digest(digest, meta.size, target).await?,
        crc64_verified,
    )
}

/// What a digest pass over store bytes means: its name when it matched; an
/// error for a declared digest that did not; for an MD5 ETag that did not,
/// a warning and the CRC-64 verdict.
pub fn settle_store_check(
    meta: &ObjectMeta,
    check: DigestCheck,
    crc64_verified: bool,
) -> Result<Option<&'static str>, ObjectClientError> {
    let fallback = crc64_verified.then_some(CRC64);
    match check {
        DigestCheck::Matched(kind) => Ok(Some(kind.name())),
        DigestCheck::Mismatch { kind, .. } if !kind.is_declared() => {
            tracing::warn!(key = %meta.key, etag = %meta.etag, "the store's ETag is not the MD5 of the object it served; not using it to verify");
            Ok(fallback)
        }
        mismatch => Err(mismatch
            .into_error(&meta.key)
            .expect("a mismatch is an error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_source::VecTarget;
    use ossc_core::checksums::{digest_bytes, header_value};
    use ossc_core::object_client::mock::{pseudo_random_bytes, MockObjectClient};
    use ossc_core::object_client::RangeSink;

    fn target_with(data: &[u8]) -> Arc<dyn ChunkTarget> {
        let t = Arc::new(VecTarget::with_len(data.len()));
        t.write_at(0, data).unwrap();
        t
    }

    #[test]
    fn peers_get_the_cryptographic_digest_and_crc64_spares_a_pass() {
        let sha = header_value(&digest_bytes(DigestKind::Sha256, b"x"));
        let crc = header_value(&digest_bytes(DigestKind::Crc32c, b"x"));
        let headers = [
            ("x-amz-checksum-sha256", sha.as_str()),
            ("x-amz-checksum-crc32c", crc.as_str()),
        ];
        let both = StoreChecksums::from_headers(
            |n| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
            "e",
        );
        let crc_only = StoreChecksums {
            digests: both.digests[1..].to_vec(),
        };
        let kind = |c: &StoreChecksums, v, p| digest_to_check(c, v, p).map(|d| d.kind);
        assert_eq!(kind(&both, true, true), Some(DigestKind::Sha256));
        assert_eq!(
            kind(&both, true, false),
            None,
            "store bytes, CRC-64 checked"
        );
        assert_eq!(kind(&both, false, false), Some(DigestKind::Sha256));
        assert_eq!(kind(&crc_only, true, true), None, "CRC-64 is as good");
        assert_eq!(kind(&crc_only, false, true), Some(DigestKind::Crc32c));
        assert_eq!(kind(&StoreChecksums::default(), false, true), None);
    }

    #[tokio::test]
    async fn store_bytes_without_crc64_are_checked_by_the_head_digest() {
        let d = pseudo_random_bytes(3 << 20, 8);
        let mock = MockObjectClient::new("b")
            .with_crc64_headers(false)
            .with_sha256_headers(true);
        mock.put_object("k", d.clone());
        let mut meta = mock.head("k").await.unwrap();
        meta.checksums = StoreChecksums::default(); // as listed
        let by = verify_store_bytes(&mock, &meta, target_with(&d), false)
            .await
            .unwrap();
        assert_eq!(by, Some("sha256"));
        let mut bad = d.clone();
        bad[12345] ^= 1;
        let e = verify_store_bytes(&mock, &meta, target_with(&bad), false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &e,
                ObjectClientError::Client(ClientError::ChecksumMismatch {
                    algorithm: "sha256",
                    ..
                })
            ),
            "{e}"
        );
        // Without any digest the object is unverified, not failed.
        let plain = MockObjectClient::new("b").with_crc64_headers(false);
        plain.put_object("k", d.clone());
        let meta = plain.head("k").await.unwrap();
        let by = verify_store_bytes(&plain, &meta, target_with(&bad), false)
            .await
            .unwrap();
        assert_eq!(by, None);
    }

    #[test]
    fn a_wrong_md5_etag_on_store_bytes_is_a_warning_not_a_failure() {
        let meta = ObjectMeta {
            key: "k".into(),
            size: 1,
            etag: "e".into(),
            last_modified: None,
            crc64: None,
            checksums: StoreChecksums::default(),
        };
        let mismatch = |kind| DigestCheck::Mismatch {
            kind,
            expected: vec![1],
            actual: vec![2],
        };
        assert_eq!(
            settle_store_check(&meta, mismatch(DigestKind::Md5Etag), true).unwrap(),
            Some(CRC64)
        );
        assert_eq!(
            settle_store_check(&meta, mismatch(DigestKind::Md5Etag), false).unwrap(),
            None
        );
        assert!(settle_store_check(&meta, mismatch(DigestKind::ContentMd5), true).is_err());
    }

    /// CPU time this thread has used (the machine is shared: wall time
    /// alone would measure the neighbours).
    fn thread_cpu() -> std::time::Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call's duration.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0);
        std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// The cost of the digest pass over a finished 1 GiB memfd, per
    /// algorithm, in CPU and wall time (`cargo test -p ossc-peer --lib --
    /// --ignored digest_pass_cost --nocapture`; figures in docs/benchmarks.md).
    #[test]
    #[ignore]
    fn digest_pass_cost_on_a_1_gib_memfd() {
        use crate::object_source::memfd::Memfd;
        let size: u64 = 1 << 30;
        let memfd = Memfd::create("digest-cost", size).unwrap();
        let block = pseudo_random_bytes(8 << 20, 1);
        for off in (0..size).step_by(block.len()) {
            memfd.write_at(off, &block).unwrap();
        }
        for kind in [
            DigestKind::Sha256,
            DigestKind::Sha1,
            DigestKind::Md5Etag,
            DigestKind::Crc64Nvme,
            DigestKind::Crc32c,
        ] {
            let (cpu, wall) = (thread_cpu(), std::time::Instant::now());
            let d = digest_of(kind, size, |o, b| memfd.read_at(o, b)).unwrap();
            let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());
            assert!(!d.is_empty());
            println!(
                "{:>10}: {:.2} s CPU ({:.2} GB/s per core), {:.2} s wall, for 1 GiB",
                kind.name(),
                cpu.as_secs_f64(),
                size as f64 / cpu.as_secs_f64() / 1e9,
                wall.as_secs_f64()
            );
        }
    }
}
