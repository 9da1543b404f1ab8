//! Where encoded lines go: [`LineSink`], implemented by the fixed [`LineBuf`] the hook uses and,
//! with the `alloc` feature, by `Vec<u8>` for the agent.
//!
//! Design decision: a bounded sink keeps the bytes that fit and remembers that some did not;
//! encoders never fail and never panic, and the caller checks [`LineBuf::overflowed`] before
//! sending. Every field is pushed in runs between the bytes that need escaping, so a cut line
//! holds exactly the bytes a byte-by-byte encoder would have kept.

use core::fmt;

/// A destination of encoded bytes.
pub trait LineSink {
    /// Appends raw bytes (a bounded sink keeps as many as fit and flags the overflow).
    fn push(&mut self, bytes: &[u8]);

    /// Appends a number in decimal.
    fn push_u64(&mut self, v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    /// Appends a signed number in decimal (a `-` before a negative one).
    fn push_i64(&mut self, v: i64) {
        if v < 0 {
            self.push(b"-");
        }
        self.push_u64(v.unsigned_abs());
    }

    /// Appends a path field: `%` as `%25`, newline as `%0A`, carriage return as `%0D`.
    fn push_escaped(&mut self, field: &[u8]) {
        push_replacing(self, field, |b| match b {
            b'%' => Some(b"%25"),
            b'\n' => Some(b"%0A"),
            b'\r' => Some(b"%0D"),
            _ => None,
        });
    }

    /// Appends free text (an error message, a JSON document) with its newlines and carriage
    /// returns turned into spaces, so it stays one line.
    fn push_one_line(&mut self, text: &[u8]) {
        push_replacing(self, text, |b| matches!(b, b'\n' | b'\r').then_some(b" "));
    }
}

/// Pushes `bytes` with each byte that `replace` maps written as its replacement.
fn push_replacing<S: LineSink + ?Sized>(
    out: &mut S,
    bytes: &[u8],
    replace: impl Fn(u8) -> Option<&'static [u8]>,
) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(with) = replace(b) {
            out.push(&bytes[start..i]);
            out.push(with);
            start = i + 1;
        }
    }
    out.push(&bytes[start..]);
}

/// A line being built in a fixed buffer. Overflow is remembered, never a panic: protocol
/// encoders check [`LineBuf::overflowed`], log lines are silently cut.
pub struct LineBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> Default for LineBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LineBuf<N> {
    /// An empty line.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            overflow: false,
        }
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// True if some write did not fit.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Appends raw bytes (as many as fit).
    pub fn push(&mut self, bytes: &[u8]) {
        let room = N - self.len;
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if n < bytes.len() {
            self.overflow = true;
        }
    }

    /// Appends a decimal number.
    pub fn push_u64(&mut self, v: u64) {
        LineSink::push_u64(self, v);
    }

    /// Appends a decimal number padded with zeros to `width` digits.
    pub fn push_padded(&mut self, v: u64, width: usize) {
        let mut digits = LineBuf::<20>::new();
        digits.push_u64(v);
        for _ in digits.len..width {
            self.push(b"0");
        }
        self.push(digits.as_bytes());
    }

    /// Appends a path field, escaped (see [`LineSink::push_escaped`]).
    pub fn push_escaped(&mut self, bytes: &[u8]) {
        LineSink::push_escaped(self, bytes);
    }
}

impl<const N: usize> LineSink for LineBuf<N> {
    fn push(&mut self, bytes: &[u8]) {
        LineBuf::push(self, bytes);
    }
}

impl<const N: usize> fmt::Write for LineBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

#[cfg(feature = "alloc")]
impl LineSink for alloc::vec::Vec<u8> {
    fn push(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let mut l = LineBuf::<64>::new();
        l.push_u64(0);
        l.push(b" ");
        l.push_u64(u64::MAX);
        l.push(b" ");
        l.push_padded(7, 3);
        l.push(b" ");
        l.push_padded(1234, 2);
        l.push(b" ");
        l.push_i64(-5);
        l.push(b" ");
        l.push_i64(i64::MIN);
        assert_eq!(
            l.as_bytes(),
            b"0 18446744073709551615 007 1234 -5 -9223372036854775808"
        );
    }

    #[test]
    fn fields_are_escaped_and_text_kept_on_one_line() {
        let mut l = LineBuf::<64>::new();
        l.push_escaped(b"a b%\nc\r\xff");
        l.push(b"|");
        l.push_one_line(b"x\ny\r\nz%");
        assert_eq!(l.as_bytes(), b"a b%25%0Ac%0D\xff|x y  z%");
    }

    #[test]
    fn a_cut_line_keeps_what_a_byte_by_byte_encoder_would() {
        let field = b"ab%cd\nef";
        for cap in 0..16 {
            let mut runs = LineBuf::<16>::new();
            let mut bytewise = LineBuf::<16>::new();
            for _ in 0..(16 - cap) {
                runs.push(b"-");
                bytewise.push(b"-");
            }
            runs.push_escaped(field);
            for &b in field {
                bytewise.push_escaped(&[b]);
            }
            assert_eq!(runs.as_bytes(), bytewise.as_bytes(), "room {cap}");
            assert_eq!(runs.overflowed(), bytewise.overflowed(), "room {cap}");
        }
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn a_vec_holds_what_a_line_buf_holds() {
        let mut v = alloc::vec::Vec::new();
        let mut l = LineBuf::<64>::new();
        for sink in [&mut v as &mut dyn LineSink, &mut l] {
            sink.push(b"ERR ");
            sink.push_i64(-3);
            sink.push(b" ");
            sink.push_escaped(b"a%\n");
            sink.push_one_line(b"\r");
        }
        assert_eq!(v, l.as_bytes());
    }

    #[test]
    fn overflow_is_flagged() {
        let mut l = LineBuf::<4>::new();
        l.push(b"abc");
        assert!(!l.overflowed());
        l.push(b"de");
        assert!(l.overflowed());
        assert_eq!(l.as_bytes(), b"abcd");
    }
}
