//! Reading fields of a line: splitting, numbers, and the inverse of [`crate::LineSink::push_escaped`].
//!
//! Design decision: one grammar for both directions. A line may end in `\n`, `\r\n` or neither;
//! fields are split at the first space, the last field being the rest of the line; a number is
//! one or more ASCII digits that fit its type (no sign, no spaces). Decoding accepts any valid
//! `%XX` and keeps an invalid escape literally, so a client that escapes more is still understood
//! and a stray `%` is never an error.

/// Strips one trailing newline, then one carriage return.
pub fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits off the first space-separated field; `None` when the line has no space.
pub(crate) fn split_once(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = line.iter().position(|&b| b == b' ')?;
    Some((&line[..i], &line[i + 1..]))
}

/// Splits off the first space-separated field; the rest (possibly empty) is the last field.
pub fn split_field(line: &[u8]) -> (&[u8], &[u8]) {
    split_once(line).unwrap_or((line, &[]))
}

/// A decimal number of ASCII digits only.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |v, &b| {
        let digit = char::from(b).to_digit(10)?;
        v.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A decimal number that fits `T`.
pub(crate) fn parse_number<T: TryFrom<u64>>(s: &[u8]) -> Option<T> {
    parse_decimal(s).and_then(|v| T::try_from(v).ok())
}

/// The decoded bytes of an escaped field.
#[derive(Debug, Clone)]
pub struct Unescape<'a> {
    rest: &'a [u8],
}

impl<'a> Unescape<'a> {
    /// Decodes `field` as it was sent (escapes included).
    pub fn new(field: &'a [u8]) -> Self {
        Self { rest: field }
    }
}

impl Iterator for Unescape<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&b, tail) = self.rest.split_first()?;
        if let (b'%', [hi, lo, after @ ..]) = (b, tail) {
            let hex = |c: u8| char::from(c).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(*hi), hex(*lo)) {
                self.rest = after;
                return Some((hi * 16 + lo) as u8);
            }
        }
        self.rest = tail;
        Some(b)
    }
}

/// Decodes `%XX` escapes of a field into `out`; returns the decoded length, or `None` when it
/// does not fit. Malformed escapes are kept literally.
pub fn unescape_into(field: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut n = 0;
    for b in Unescape::new(field) {
        *out.get_mut(n)? = b;
        n += 1;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_edge_cases() {
        let mut out = [0u8; 16];
        let n = unescape_into(b"a%0Ab%2", &mut out).unwrap();
        assert_eq!(&out[..n], b"a\nb%2");
        let n = unescape_into(b"%zz%", &mut out).unwrap();
        assert_eq!(&out[..n], b"%zz%");
        let n = unescape_into(b"%0d%0D%2f%ff%", &mut out).unwrap();
        assert_eq!(&out[..n], b"\r\r/\xff%");
        let mut small = [0u8; 2];
        assert_eq!(unescape_into(b"abc", &mut small), None);
        assert_eq!(unescape_into(b"%25%25", &mut small), Some(2));
    }

    #[test]
    fn numbers_are_plain_digits() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"007"), Some(7));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"000000000000000000000042"), Some(42));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1x",
            b"\xd9\xa1",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(parse_number::<u8>(b"255"), Some(255u8));
        assert_eq!(parse_number::<u8>(b"256"), None);
        assert_eq!(parse_number::<u32>(b"4294967296"), None);
    }

    #[test]
    fn lines_and_fields() {
        assert_eq!(trim_line(b"OK\r\n"), b"OK");
        assert_eq!(trim_line(b"OK\n\n"), b"OK\n");
        assert_eq!(trim_line(b"OK\r"), b"OK");
        assert_eq!(split_field(b"OPEN 1 a b"), (&b"OPEN"[..], &b"1 a b"[..]));
        assert_eq!(split_field(b"PASS"), (&b"PASS"[..], &b""[..]));
        assert_eq!(split_once(b"PASS"), None);
        assert_eq!(split_once(b"OPEN "), Some((&b"OPEN"[..], &b""[..])));
    }
}
