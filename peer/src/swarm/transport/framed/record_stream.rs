//! A framed connection after its TLS handshake: plaintext in and out of a
//! TCP stream through [`super::records`], with one buffer each way.
//!
//! Design decisions:
//! - **Receiving**: the socket is read into one buffer (a puller's of
//!   [`READ_BUFFER_BYTES`](super::READ_BUFFER_BYTES), a server's of
//!   [`REQUEST_BUFFER_BYTES`](super::REQUEST_BUFFER_BYTES), plus a record); every whole record in it is
//!   opened straight after the plaintext of the records before it, so
//!   [`AsyncBufRead::poll_fill_buf`] hands out up to a buffer of
//!   contiguous plaintext that the puller hashes and writes into its
//!   target from where it was decrypted. Only an incomplete record at the
//!   end of a full buffer moves (to the front) before the next read.
//! - **Sending**: writes are sealed into full records (gathered across the
//!   slices of a vectored write) in one outgoing buffer, which goes to the
//!   socket when it cannot take another record, or on flush: one `write`
//!   per buffer. The buffer's size is the caller's (a server sends chunks,
//!   a puller small requests); a server frees it between answers, so an
//!   idle connection holds only its receive buffer.
//! - A bad record, an alert other than close_notify or a post-handshake
//!   message fails the stream after the plaintext before it was read; the
//!   peer's close_notify, or the TCP stream ending between records, is the
//!   end of the stream. Shutting down sends close_notify.

use std::io::{self, IoSlice, IoSliceMut};
use std::ops::Range;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

use super::records::{
    Opened, Opener, RecordError, Sealer, HEADER_BYTES, MAX_FRAGMENT, MAX_RECORD, RECORD_OVERHEAD,
};

/// A TCP stream (`S`) whose records this side seals and opens.
pub(crate) struct RecordStream<S> {
    io: S,
    sealer: Sealer,
    opener: Opener,
    /// Received bytes: opened plaintext at `plain`, records not yet opened
    /// at `sealed` (never before `plain`).
    inbuf: Box<[u8]>,
    plain: Range<usize>,
    sealed: Range<usize>,
    /// The peer's close_notify came after the plaintext in `plain`.
    peer_closed: bool,
    /// Why the stream failed, after the plaintext in `plain`.
    failed: Option<RecordError>,
    /// Sealed records at `out[out_at..out_len]` wait to be written; empty
    /// between answers ([`RecordStream::release_send_buffer`]).
    out: Vec<u8>,
    /// Size of `out` while sending.
    send_buffer: usize,
    out_at: usize,
    out_len: usize,
    close_sent: bool,
}

impl<S> RecordStream<S> {
    /// `io` protected by `keys` (see [`super::records::take_keys`]),
    /// receiving through a buffer of `receive_buffer` bytes plus a record,
    /// sending through one of `send_buffer` plus a record.
    pub fn new(
        io: S,
        (sealer, opener): (Sealer, Opener),
        receive_buffer: usize,
        send_buffer: usize,
    ) -> RecordStream<S> {
        RecordStream {
            io,
            sealer,
            opener,
            inbuf: vec![0u8; receive_buffer + MAX_RECORD].into_boxed_slice(),
            plain: 0..0,
            sealed: 0..0,
            peer_closed: false,
            failed: None,
            out: Vec::new(),
            send_buffer: send_buffer.max(MAX_RECORD) + MAX_RECORD,
            out_at: 0,
            out_len: 0,
            close_sent: false,
        }
    }

    /// Seals `prefix`, then `len` bytes that `fill` reads straight into the
    /// records' places in the send buffer, which must be empty (flushed)
    /// and hold them; nothing is sealed if `fill` fails.
    pub fn seal_with(
        &mut self,
        prefix: &[u8],
        len: usize,
        fill: &mut dyn FnMut(&mut [IoSliceMut<'_>]) -> io::Result<()>,
    ) -> io::Result<()> {
        const STRIDE: usize = MAX_FRAGMENT + RECORD_OVERHEAD;
        let total = prefix.len() + len;
        let records = total.div_ceil(MAX_FRAGMENT);
        self.send_buffer_in_use();
        let plain = |i: usize| (total - i * MAX_FRAGMENT).min(MAX_FRAGMENT);
        let bytes = total + records * RECORD_OVERHEAD;
        if self.out_len != 0 || prefix.len() > MAX_FRAGMENT || bytes > self.out.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "sealing in place needs an empty send buffer that holds the records",
            ));
        }
        self.out[HEADER_BYTES..HEADER_BYTES + prefix.len()].copy_from_slice(prefix);
        let mut slots: Vec<IoSliceMut<'_>> = self.out[..bytes]
            .chunks_mut(STRIDE)
            .enumerate()
            .map(|(i, record)| {
                let from = HEADER_BYTES + if i == 0 { prefix.len() } else { 0 };
                IoSliceMut::new(&mut record[from..HEADER_BYTES + plain(i)])
            })
            .collect();
        fill(&mut slots)?;
        drop(slots);
        for i in 0..records {
            let sealed = self
                .sealer
                .seal_data(&mut self.out[i * STRIDE..], plain(i))?;
            self.out_len = i * STRIDE + sealed;
        }
        Ok(())
    }

    /// Frees the send buffer if nothing waits in it (a server between
    /// answers: an idle connection holds no send buffer).
    pub fn release_send_buffer(&mut self) {
        if self.out_len == 0 {
            self.out = Vec::new();
        }
    }

    /// Allocates the send buffer if it was released.
    fn send_buffer_in_use(&mut self) {
        if self.out.is_empty() {
            self.out = vec![0u8; self.send_buffer];
        }
    }

    /// Whether either direction's keys are past half of their record limit
    /// (the connection should then not be reused).
    pub fn worn(&self) -> bool {
        self.sealer.worn() || self.opener.worn()
    }

    /// Opens every whole record received, appending its content to `plain`.
    fn open_records(&mut self) {
        while self.failed.is_none() && !self.peer_closed {
            let len = match Opener::record_len(&self.inbuf[self.sealed.clone()]) {
                Ok(Some(len)) if len <= self.sealed.len() => len,
                Ok(_) => return,
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            };
            match self
                .opener
                .open(&mut self.inbuf, self.plain.end, self.sealed.start)
            {
                Ok(Opened::Data(n)) => self.plain.end += n,
                Ok(Opened::Closed) => self.peer_closed = true,
                Err(e) => self.failed = Some(e),
            }
            self.sealed.start += len;
        }
    }

    /// Room for the next read: the plaintext was consumed; an incomplete
    /// record moves to the front when too little follows it.
    fn make_room(&mut self) {
        self.plain = 0..0;
        if self.sealed.is_empty() {
            self.sealed = 0..0;
        } else if self.inbuf.len() - self.sealed.end < MAX_RECORD {
            let len = self.sealed.len();
            self.inbuf.copy_within(self.sealed.clone(), 0);
            self.sealed = 0..len;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncBufRead for RecordStream<S> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        while this.plain.is_empty() {
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(e.clone().into()));
            }
            if this.peer_closed {
                break;
            }
            this.make_room();
            let mut space = ReadBuf::new(&mut this.inbuf[this.sealed.end..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut space))?;
            let n = space.filled().len();
            if n == 0 {
                if this.sealed.is_empty() {
                    break; // the stream ended between records
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed inside a TLS record",
                )));
            }
            this.sealed.end += n;
            this.open_records();
        }
        Poll::Ready(Ok(&this.inbuf[this.plain.clone()]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        assert!(amt <= this.plain.len(), "consumed more than was read");
        this.plain.start += amt;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let data = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = data.len().min(buf.remaining());
        buf.put_slice(&data[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> RecordStream<S> {
    /// Writes every sealed record waiting.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out_len {
            let n = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_at..self.out_len])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        (self.out_at, self.out_len) = (0, 0);
        Poll::Ready(Ok(()))
    }

    fn room(&self) -> usize {
        self.out.len() - self.out_len
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        this.send_buffer_in_use();
        if this.room() < RECORD_OVERHEAD + total.min(MAX_FRAGMENT) {
            ready!(this.poll_write_out(cx))?;
        }
        // Whole records from the slices in turn, up to the buffer's room.
        let (mut slice, mut at, mut taken) = (0, 0, 0);
        while taken < total && this.room() >= RECORD_OVERHEAD + (total - taken).min(MAX_FRAGMENT) {
            let n = (total - taken).min(MAX_FRAGMENT);
            let record = &mut this.out[this.out_len..];
            let mut filled = 0;
            while filled < n {
                let src = &bufs[slice][at..];
                let k = src.len().min(n - filled);
                let to = HEADER_BYTES + filled;
                record[to..to + k].copy_from_slice(&src[..k]);
                filled += k;
                at += k;
                if at == bufs[slice].len() {
                    (slice, at) = (slice + 1, 0);
                }
            }
            this.out_len += this.sealer.seal_data(record, n)?;
            taken += n;
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.send_buffer_in_use();
            if this.room() < MAX_RECORD {
                ready!(this.poll_write_out(cx))?;
            }
            let at = this.out_len;
            this.out_len += this.sealer.seal_close_notify(&mut this.out[at..])?;
            this.close_sent = true;
        }
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
