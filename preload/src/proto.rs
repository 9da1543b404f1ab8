//! The node-agent line protocol as the hook speaks it: the client half of [`ossc_wire`]
//! (encoders into fixed [`LineBuf`]s, parsers of replies, field unescaping), under the names the
//! rest of this library uses. The format, its escaping and its caps are described there.

pub use ossc_wire::{
    encode_hello, encode_ident, encode_open, encode_ready, parse_hello_ok, parse_ident, parse_ok,
    parse_open, unescape_into, IdentReply, LineBuf, OkReply, OpenReply, ReplyError, REPLY_CAP,
    REQUEST_CAP,
};

// A path below MODEL_DIR fits a request: the protocol's path cap is this library's.
const _: () = assert!(ossc_wire::PATH_MAX == crate::path::PATH_CAP);
// An `ERR` without a usable errno fails the open with EIO.
const _: () = assert!(ossc_wire::FALLBACK_ERRNO == libc::EIO);
