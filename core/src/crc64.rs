//! CRC-64/XZ, the checksum OSS sends as `x-oss-hash-crc64ecma`.
//!
//! Parameters: poly `0x42F0E1EBA9EA3693` (reflected `0xC96C5795D7870F42`),
//! init and xorout all ones, reflected in and out. The byte-crunching is done
//! by `crc64fast` (PCLMULQDQ / PMULL with a table fallback), whose output is
//! checked against the XZ known-answer vectors below.
//!
//! Design decision: a parallel download computes one CRC per part while
//! streaming and then folds the parts with [`combine`], so verifying a 100 GB
//! model costs no second pass over memory. `combine` is zlib's GF(2) matrix
//! method, but the 64 "append 2^k zero bytes" operators are built once
//! (a 32 KiB table behind a `OnceLock`) instead of being re-squared on every
//! call; a combine then costs one 64x64 matrix-vector product per set bit of
//! the second part's length (at most 64, in practice ~23 for 8 MiB parts).

use std::sync::OnceLock;

/// CRC-64/XZ polynomial in reflected (LSB-first) form.
const POLY_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

/// Bits in the CRC register, i.e. the dimension of the GF(2) operator matrices.
const CRC_BITS: usize = 64;

/// A 64x64 GF(2) matrix: column `i` is the image of the unit vector `1 << i`.
type Gf2Matrix = [u64; CRC_BITS];

/// CRC-64/XZ of `data` in one call.
pub fn crc64(data: &[u8]) -> u64 {
    let mut hasher = Crc64Hasher::new();
    hasher.update(data);
    hasher.finish()
}

/// Incremental CRC-64/XZ: `update` any number of times, `finish` any time
/// (finishing does not consume or reset the state).
#[derive(Clone, Default)]
pub struct Crc64Hasher {
    digest: crc64fast::Digest,
}

impl std::fmt::Debug for Crc64Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crc64Hasher")
            .field("crc64", &format_args!("{:#018x}", self.finish()))
            .finish()
    }
}

impl Crc64Hasher {
    pub fn new() -> Self {
        Self {
            digest: crc64fast::Digest::new(),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.digest.write(data);
    }

    /// CRC of everything passed to `update` so far.
    pub fn finish(&self) -> u64 {
        self.digest.sum64()
    }
}

/// Multiplies `mat` by the column vector `vec` over GF(2).
fn gf2_matrix_times(mat: &Gf2Matrix, mut vec: u64) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

/// `mat * mat`, i.e. the operator applied twice.
fn gf2_matrix_square(mat: &Gf2Matrix) -> Gf2Matrix {
    let mut square = [0u64; CRC_BITS];
    for (n, column) in square.iter_mut().enumerate() {
        *column = gf2_matrix_times(mat, mat[n]);
    }
    square
}

/// `ZERO_BYTE_OPERATORS[k]` advances a (pre-/post-conditioning free) CRC
/// register over `2^k` zero bytes.
fn zero_byte_operators() -> &'static [Gf2Matrix; CRC_BITS] {
    static TABLE: OnceLock<Box<[Gf2Matrix; CRC_BITS]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Operator for one zero bit: shift right, and fold in the polynomial
        // when the bit shifted out was set.
        let mut one_bit = [0u64; CRC_BITS];
        one_bit[0] = POLY_REFLECTED;
        for (n, column) in one_bit.iter_mut().enumerate().skip(1) {
            *column = 1u64 << (n - 1);
        }
        // 1 bit -> 2 -> 4 -> 8 bits = one zero byte.
        let mut op = gf2_matrix_square(&gf2_matrix_square(&gf2_matrix_square(&one_bit)));
        let mut table = Box::new([[0u64; CRC_BITS]; CRC_BITS]);
        for slot in table.iter_mut() {
            *slot = op;
            op = gf2_matrix_square(&op);
        }
        table
    })
}

/// CRC of A‖B from crc(A), crc(B) and len(B).
///
/// The all-ones init/xorout cancel out exactly as in zlib's `crc32_combine`,
/// so the plain register shift of crc(A) by `len_b` zero bytes, XOR crc(B),
/// is the answer.
pub fn combine(crc_a: u64, crc_b: u64, len_b: u64) -> u64 {
    if len_b == 0 {
        return crc_a;
    }
    let operators = zero_byte_operators();
    let mut crc = crc_a;
    let mut remaining = len_b;
    let mut k = 0;
    while remaining != 0 {
        if remaining & 1 != 0 {
            crc = gf2_matrix_times(&operators[k], crc);
        }
        remaining >>= 1;
        k += 1;
    }
    crc ^ crc_b
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The shared vectors file, copied into the crate so tests never read
    /// outside it.
    const VECTORS: &str = include_str!("../testdata/signing.json");

    fn xz_vectors() -> Vec<(String, u64)> {
        let json: serde_json::Value = serde_json::from_str(VECTORS).expect("vectors parse");
        let vectors = json["crc64_xz"]["vectors"].as_array().expect("vector list");
        assert!(!vectors.is_empty());
        vectors
            .iter()
            .map(|v| {
                let input = v[0].as_str().expect("input").to_owned();
                let hex = v[1].as_str().expect("crc").trim_start_matches("0x");
                (input, u64::from_str_radix(hex, 16).expect("hex crc"))
            })
            .collect()
    }

    /// Bit-at-a-time reference implementation straight from the definition.
    fn crc64_bitwise(data: &[u8]) -> u64 {
        let mut crc = !0u64;
        for &byte in data {
            crc ^= u64::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY_REFLECTED
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn xz_known_answers() {
        for (input, expected) in xz_vectors() {
            assert_eq!(crc64(input.as_bytes()), expected, "crc64({input:?})");
            assert_eq!(
                crc64_bitwise(input.as_bytes()),
                expected,
                "reference({input:?})"
            );
        }
    }

    #[test]
    fn crc64fast_table_and_simd_paths_agree_with_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [
            0usize, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 4096, 10_007,
        ] {
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut table = crc64fast::Digest::new_table();
            table.write(&data);
            let expected = crc64_bitwise(&data);
            assert_eq!(table.sum64(), expected, "table path, len {len}");
            assert_eq!(crc64(&data), expected, "dispatching path, len {len}");
        }
    }

    #[test]
    fn hasher_is_incremental_and_finish_is_idempotent() {
        let (input, expected) = xz_vectors()
            .into_iter()
            .find(|(s, _)| s.len() > 20)
            .expect("a long vector");
        let mut hasher = Crc64Hasher::new();
        for chunk in input.as_bytes().chunks(3) {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finish(), expected);
        assert_eq!(hasher.finish(), expected);
        assert_eq!(Crc64Hasher::default().finish(), crc64(b""));
    }

    #[test]
    fn combine_known_answers() {
        // "123456789" split at every position must combine to the check value.
        let (input, expected) = xz_vectors()
            .into_iter()
            .find(|(s, _)| s == "123456789")
            .expect("check vector");
        let bytes = input.as_bytes();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                combine(crc64(a), crc64(b), b.len() as u64),
                expected,
                "split {split}"
            );
        }
    }

    #[test]
    fn combine_matches_concatenation_for_random_splits() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x05_5c);
        for _ in 0..300 {
            let len = rng.gen_range(0..5000);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let split = rng.gen_range(0..=len);
            let (a, b) = data.split_at(split);
            assert_eq!(
                combine(crc64(a), crc64(b), b.len() as u64),
                crc64(&data),
                "len {len} split {split}"
            );
        }
    }

    #[test]
    fn combine_folds_many_parts_like_the_fetch_engine() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        let data: Vec<u8> = (0..200_000).map(|_| rng.gen()).collect();
        for _ in 0..20 {
            let mut offset = 0;
            let mut folded = crc64(b"");
            while offset < data.len() {
                let part = rng.gen_range(1..=40_000).min(data.len() - offset);
                let chunk = &data[offset..offset + part];
                folded = combine(folded, crc64(chunk), part as u64);
                offset += part;
            }
            assert_eq!(folded, crc64(&data));
        }
    }

    #[test]
    fn combine_handles_huge_lengths_like_zero_runs() {
        // Appending n zero bytes equals combining with crc64(zeros) of len n;
        // check a length with many set bits against a direct computation.
        let zeros = vec![0u8; 70_001];
        let a = crc64(b"prefix");
        let mut whole = b"prefix".to_vec();
        whole.extend_from_slice(&zeros);
        assert_eq!(combine(a, crc64(&zeros), zeros.len() as u64), crc64(&whole));
        // Lengths near u64::MAX must not panic (shift loop terminates).
        let _ = combine(a, 0, u64::MAX);
    }
}
