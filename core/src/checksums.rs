//! What the store can prove about an object's bytes, beyond CRC-64/XZ.
//!
//! Design decisions:
//! - **Only whole-object values count.** S3 additional checksums
//!   (`x-amz-checksum-*`, asked for with `x-amz-checksum-mode: ENABLED`) are
//!   used when they describe the full object; a composite value (`…-N`,
//!   `x-amz-checksum-type: COMPOSITE`, or no type on a multipart object,
//!   whose ETag ends in `-N`) is a checksum of part checksums and is ignored. OSS's `Content-MD5` is the MD5 of the whole object. An ETag is
//!   taken as an MD5 only when it looks like one (32 hex digits, no `-N`
//!   multipart suffix) and nothing says otherwise: no SSE-KMS or SSE-C header
//!   (their ETags are not MD5s) and an OSS object type of `Normal` (appendable
//!   and multipart objects have other ETags).
//! - **Strongest first.** SHA-256 > SHA-1 > Content-MD5 > MD5 ETag >
//!   CRC-64/NVME > CRC-32C > CRC-32. The first four are cryptographic: a peer
//!   cannot forge bytes that match them, even one that holds the cluster
//!   secret. The CRCs detect corruption and bugs only (CRC is linear).
//! - None of these digests can be combined from ranges, so they are computed
//!   in one sequential pass over the finished object ([`digest_of`]), once,
//!   before it is handed out. CRC-64/XZ stays the cheap per-part check.

use std::fmt;

use base64::Engine as _;
use sha1::Digest as _;

/// Header that asks S3 for its additional checksums on GET/HEAD.
pub const CHECKSUM_MODE_HEADER: &str = "x-amz-checksum-mode";
/// Read size of the sequential digest pass.
const DIGEST_READ: usize = 4 << 20;

/// A digest algorithm, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DigestKind {
    Sha256,
    Sha1,
    /// OSS `Content-MD5` (base64).
    ContentMd5,
    /// The ETag of a single-part object, when it is an MD5 (hex).
    Md5Etag,
    Crc64Nvme,
    Crc32c,
    Crc32,
}

impl DigestKind {
    /// Name used in STATUS, the audit log, metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            DigestKind::Sha256 => "sha256",
            DigestKind::Sha1 => "sha1",
            DigestKind::ContentMd5 => "content-md5",
            DigestKind::Md5Etag => "md5-etag",
            DigestKind::Crc64Nvme => "crc64nvme",
            DigestKind::Crc32c => "crc32c",
            DigestKind::Crc32 => "crc32",
        }
    }

    /// Whether a peer cannot forge bytes matching it.
    pub fn is_cryptographic(self) -> bool {
        matches!(
            self,
            DigestKind::Sha256 | DigestKind::Sha1 | DigestKind::ContentMd5 | DigestKind::Md5Etag
        )
    }

    /// A declared value, not a guess: a mismatch on bytes that all came from
    /// the store is an error (for [`DigestKind::Md5Etag`] it only means the
    /// store's ETag is not an MD5 after all).
    pub fn is_declared(self) -> bool {
        self != DigestKind::Md5Etag
    }
}

/// One whole-object digest the store declared.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreDigest {
    pub kind: DigestKind,
    /// Raw digest bytes (CRCs big-endian, as S3 encodes them).
    pub value: Vec<u8>,
}

impl fmt::Debug for StoreDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), hex::encode(&self.value))
    }
}

/// Every whole-object digest the store declared for one object version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreChecksums {
    /// Strongest first, one per kind.
    pub digests: Vec<StoreDigest>,
}

const AMZ_CHECKSUMS: [(&str, DigestKind, usize); 5] = [
    ("x-amz-checksum-sha256", DigestKind::Sha256, 32),
    ("x-amz-checksum-sha1", DigestKind::Sha1, 20),
    ("x-amz-checksum-crc64nvme", DigestKind::Crc64Nvme, 8),
    ("x-amz-checksum-crc32c", DigestKind::Crc32c, 4),
    ("x-amz-checksum-crc32", DigestKind::Crc32, 4),
];

impl StoreChecksums {
    /// Reads the digests of an object answer (HEAD, or a whole-object GET)
    /// from its headers (`header(name)`, lower-case names) and its ETag
    /// (quotes stripped). Malformed values are ignored: a digest we cannot
    /// read verifies nothing, and must not fail a load either.
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>, etag: &str) -> Self {
        let b64 = |v: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        };
        let mut digests = Vec::new();
        // A multipart object's checksum is a checksum of part checksums unless
        // the store says FULL_OBJECT; without the type header (older S3 APIs,
        // moto) only a single-part object's checksum is a whole-object value.
        let multipart_etag = etag
            .rsplit_once('-')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let whole_object = match header("x-amz-checksum-type") {
            Some(t) => t.trim().eq_ignore_ascii_case("FULL_OBJECT"),
            None => !multipart_etag,
        };
        if whole_object {
            for (name, kind, len) in AMZ_CHECKSUMS {
                let value = header(name)
                    .filter(|v| !v.contains('-'))
                    .and_then(b64)
                    .filter(|v| v.len() == len);
                if let Some(value) = value {
                    digests.push(StoreDigest { kind, value });
                }
            }
        }
        if let Some(value) = header("content-md5")
            .and_then(b64)
            .filter(|v| v.len() == 16)
        {
            digests.push(StoreDigest {
                kind: DigestKind::ContentMd5,
                value,
            });
        }
        if let Some(value) = md5_etag(&header, etag) {
            digests.push(StoreDigest {
                kind: DigestKind::Md5Etag,
                value,
            });
        }
        digests.sort_by_key(|d| d.kind);
        StoreChecksums { digests }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The strongest digest, if any.
    pub fn strongest(&self) -> Option<&StoreDigest> {
        self.digests.first()
    }

    /// The strongest cryptographic digest, if any.
    pub fn strongest_cryptographic(&self) -> Option<&StoreDigest> {
        self.digests.iter().find(|d| d.kind.is_cryptographic())
    }
}

/// The ETag as MD5 bytes, when it is one (see the module note).
fn md5_etag<'a>(header: &impl Fn(&str) -> Option<&'a str>, etag: &str) -> Option<Vec<u8>> {
    let kms = |v: &str| {
        let v = v.trim().to_ascii_lowercase();
        v.starts_with("aws:kms") || v == "kms"
    };
    let encrypted_otherwise = header("x-amz-server-side-encryption").is_some_and(kms)
        || header("x-oss-server-side-encryption").is_some_and(kms)
        || header("x-amz-server-side-encryption-customer-algorithm").is_some()
        || header("x-oss-server-side-encryption-customer-algorithm").is_some();
    let not_normal = header("x-oss-object-type").is_some_and(|t| !t.trim().eq("Normal"));
    if encrypted_otherwise || not_normal || etag.len() != 32 {
        return None;
    }
    hex::decode(etag).ok()
}

/// A running digest of one kind.
pub enum DigestHasher {
    Sha256(sha2::Sha256),
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Crc64Nvme(crc::Digest<'static, u64, crc::Table<16>>),
    Crc32(crc::Digest<'static, u32, crc::Table<16>>),
}

static CRC64_NVME: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_NVME);
static CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
static CRC32: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);

impl DigestHasher {
    pub fn new(kind: DigestKind) -> Self {
        match kind {
            DigestKind::Sha256 => DigestHasher::Sha256(sha2::Sha256::new()),
            DigestKind::Sha1 => DigestHasher::Sha1(sha1::Sha1::new()),
            DigestKind::ContentMd5 | DigestKind::Md5Etag => DigestHasher::Md5(md5::Md5::new()),
            DigestKind::Crc64Nvme => DigestHasher::Crc64Nvme(CRC64_NVME.digest()),
            DigestKind::Crc32c => DigestHasher::Crc32(CRC32C.digest()),
            DigestKind::Crc32 => DigestHasher::Crc32(CRC32.digest()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(data),
            DigestHasher::Sha1(h) => h.update(data),
            DigestHasher::Md5(h) => h.update(data),
            DigestHasher::Crc64Nvme(h) => h.update(data),
            DigestHasher::Crc32(h) => h.update(data),
        }
    }

    /// The digest bytes, in the encoding [`StoreDigest::value`] uses.
    pub fn finish(self) -> Vec<u8> {
        match self {
            DigestHasher::Sha256(h) => h.finalize().to_vec(),
            DigestHasher::Sha1(h) => h.finalize().to_vec(),
            DigestHasher::Md5(h) => h.finalize().to_vec(),
            DigestHasher::Crc64Nvme(h) => h.finalize().to_be_bytes().to_vec(),
            DigestHasher::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
        }
    }
}

/// The digest of `kind` over bytes `0..size`, read in order through
/// `read_at(offset, buf)` (which must fill `buf`).
pub fn digest_of(
    kind: DigestKind,
    size: u64,
    mut read_at: impl FnMut(u64, &mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    let mut hasher = DigestHasher::new(kind);
    let mut buf = vec![0u8; DIGEST_READ.min(usize::try_from(size).unwrap_or(DIGEST_READ))];
    let mut offset = 0u64;
    while offset < size {
        let n = buf
            .len()
            .min(usize::try_from(size - offset).unwrap_or(buf.len()));
        read_at(offset, &mut buf[..n])?;
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hasher.finish())
}

/// The digest of `kind` over `data` in memory.
pub fn digest_bytes(kind: DigestKind, data: &[u8]) -> Vec<u8> {
    let mut h = DigestHasher::new(kind);
    h.update(data);
    h.finish()
}

/// `value` as S3 and OSS put it in a header (base64).
pub fn header_value(value: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(headers: &[(&str, &str)], etag: &str) -> StoreChecksums {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        StoreChecksums::from_headers(|n| map.get(n).map(String::as_str), etag)
    }

    #[test]
    fn known_answers() {
        // Check values of the catalogue ("123456789") and RFC test vectors.
        let check = b"123456789";
        let be = |v: u64, n: usize| v.to_be_bytes()[8 - n..].to_vec();
        assert_eq!(
            digest_bytes(DigestKind::Crc64Nvme, check),
            be(0xae8b_1486_0a79_9888, 8)
        );
        assert_eq!(digest_bytes(DigestKind::Crc32c, check), be(0xe306_9283, 4));
        assert_eq!(digest_bytes(DigestKind::Crc32, check), be(0xcbf4_3926, 4));
        assert_eq!(
            hex::encode(digest_bytes(DigestKind::Md5Etag, b"abc")),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            hex::encode(digest_bytes(DigestKind::Sha1, b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let data = crate::object_client::mock::pseudo_random_bytes(10 << 20, 3);
        let read = digest_of(DigestKind::Sha256, data.len() as u64, |o, buf| {
            let o = o as usize;
            buf.copy_from_slice(&data[o..o + buf.len()]);
            Ok(())
        })
        .unwrap();
        assert_eq!(read, digest_bytes(DigestKind::Sha256, &data));
    }

    #[test]
    fn headers_give_whole_object_digests_strongest_first() {
        let sha = digest_bytes(DigestKind::Sha256, b"x");
        let crc = digest_bytes(DigestKind::Crc32c, b"x");
        let md5 = digest_bytes(DigestKind::ContentMd5, b"x");
        let c = parse(
            &[
                ("x-amz-checksum-crc32c", &header_value(&crc)),
                ("x-amz-checksum-sha256", &header_value(&sha)),
                ("x-amz-checksum-type", "FULL_OBJECT"),
                ("content-md5", &header_value(&md5)),
            ],
            "9dd4e461268c8034f5c8564e155c67a6",
        );
        let kinds: Vec<DigestKind> = c.digests.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                DigestKind::Sha256,
                DigestKind::ContentMd5,
                DigestKind::Md5Etag,
                DigestKind::Crc32c
            ]
        );
        assert_eq!(c.strongest().unwrap().value, sha);
        assert_eq!(c.digests[2].value, md5, "the ETag is the MD5 of \"x\"");
    }

    #[test]
    fn composite_multipart_and_encrypted_values_are_not_digests() {
        let sha = header_value(&digest_bytes(DigestKind::Sha256, b"x"));
        let etag = "9dd4e461268c8034f5c8564e155c67a6";
        assert!(parse(&[("x-amz-checksum-sha256", &format!("{sha}-3"))], "e-3").is_empty());
        assert!(parse(
            &[
                ("x-amz-checksum-sha256", &sha),
                ("x-amz-checksum-type", "COMPOSITE")
            ],
            "e"
        )
        .is_empty());
        assert!(parse(&[], "9dd4e461268c8034f5c8564e155c67a6-2").is_empty());
        // A multipart object without a checksum type (moto, older S3 APIs).
        let crc = header_value(&digest_bytes(DigestKind::Crc32, b"x"));
        assert!(parse(&[("x-amz-checksum-crc32", &crc)], "e-3").is_empty());
        assert_eq!(
            parse(
                &[
                    ("x-amz-checksum-crc32", &crc),
                    ("x-amz-checksum-type", "FULL_OBJECT")
                ],
                "e-3"
            )
            .strongest()
            .unwrap()
            .kind,
            DigestKind::Crc32
        );
        assert!(parse(&[("x-amz-server-side-encryption", "aws:kms")], etag).is_empty());
        assert!(parse(&[("x-oss-server-side-encryption", "KMS")], etag).is_empty());
        assert!(parse(
            &[("x-amz-server-side-encryption-customer-algorithm", "AES256")],
            etag
        )
        .is_empty());
        assert!(parse(&[("x-oss-object-type", "Appendable")], etag).is_empty());
        assert!(parse(&[("x-amz-checksum-sha256", "bm90IGEgZGlnZXN0")], "zz").is_empty());
        // SSE-S3 (AES256) keeps MD5 ETags.
        let c = parse(&[("x-amz-server-side-encryption", "AES256")], etag);
        assert_eq!(c.strongest().unwrap().kind, DigestKind::Md5Etag);
        assert_eq!(
            c.strongest_cryptographic().unwrap().kind,
            DigestKind::Md5Etag
        );
        let crc_only = parse(
            &[(
                "x-amz-checksum-crc32",
                &header_value(&digest_bytes(DigestKind::Crc32, b"x")),
            )],
            "e",
        );
        assert_eq!(crc_only.strongest().unwrap().kind, DigestKind::Crc32);
        assert!(crc_only.strongest_cryptographic().is_none());
    }
}
