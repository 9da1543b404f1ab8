//! The node-agent protocol: the lines `libossc_preload.so` and the `ossc` commands exchange with
//! the node agent over its Unix socket (docs/dev/contracts.md, "node agent protocol"). Both sides
//! encode and parse through this crate, so there is one definition of every message.
//!
//! Design decisions:
//!
//! - **A line protocol.** One request line per connection, one reply line (plus an fd passed
//!   with `SCM_RIGHTS` after `FD`). Fields are separated by one space and the last field is the
//!   rest of the line, so a path or a message needs no quoting, only the escaping below. A line
//!   is readable in `strace` and in logs, and a shell one-liner can speak it.
//! - **No allocation, no dependency.** The hook runs inside arbitrary processes: in a `vfork`
//!   child, while an allocator initialises, under a seccomp filter. Requests are encoded into
//!   fixed stack buffers ([`LineBuf`]) and replies parsed into slices of the received bytes;
//!   overflow is a flag, never a panic. The crate is `no_std`; with the `alloc` feature, the
//!   agent encodes into a `Vec<u8>` through the same [`LineSink`] encoders.
//! - **Escaping.** In a path field (`OPEN`, `PREFETCH`, `EVICT`, `HELLO`'s comm, `PLACEHOLDER`,
//!   `HELLO`'s log path) `%` is written `%25`, newline `%0A` and carriage return `%0D` (a reader
//!   strips one `\r` that ends a line, so a name ending in one must not end the line raw). Any
//!   other valid `%XX` is decoded too; an invalid one stays literal. Messages of `ERR` and JSON
//!   documents are not escaped: their newlines and carriage returns become spaces.
//! - **Caps.** A request fits [`REQUEST_CAP`] bytes: an `OPEN` of a [`PATH_MAX`]-byte path with
//!   every byte escaped, plus the verb and pid; the agent refuses longer lines. The hook reads at
//!   most [`REPLY_CAP`] bytes of a reply.
//! - **Versioning.** No line carries a version (`HELLO`'s last field is the rest of the line,
//!   so none can be appended without changing its meaning). [`PROTOCOL_VERSION`]
//!   names the format this crate speaks. It changes only with the bytes, and only by addition (a
//!   new verb or reply, never a changed one): an agent answers a verb it does not know with
//!   `ERR 22`, and a client treats a reply it does not know as a protocol error, so an old peer
//!   fails loudly instead of misreading.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod field;
mod line;
mod reply;
mod request;

pub use field::{split_field, trim_line, unescape_into, Unescape};
pub use line::{LineBuf, LineSink};
pub use reply::{
    encode_document, encode_err, encode_fd, encode_hello_ok, encode_ok, encode_pass,
    encode_placeholder, parse_document, parse_hello_ok, parse_ident, parse_ok, parse_open,
    DocumentReply, IdentReply, OkReply, OpenReply, ReplyError,
};
pub use request::{
    encode_evict, encode_hello, encode_ident, encode_open, encode_prefetch, encode_ready,
    encode_status, parse_request, RequestError, RequestLine,
};

/// The format described above; see "Versioning" for when it changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The agent's socket when `CONNECTOR_UDS_PATH` is unset: the vendor's path, so that existing
/// launch scripts keep working.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/oss-connector/connector.sock";

/// Longest path a path field carries, decoded (Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// Longest request line, newline included: an `OPEN` of a [`PATH_MAX`] path with every byte
/// escaped, plus the verb and pid.
pub const REQUEST_CAP: usize = 3 * PATH_MAX + 64;

/// Longest reply line the hook reads (a log path or an error message plus its header).
pub const REPLY_CAP: usize = 8192;

/// The errno a client reports for an `ERR` whose errno is missing, zero or not a number (`EIO`).
pub const FALLBACK_ERRNO: i32 = 5;
