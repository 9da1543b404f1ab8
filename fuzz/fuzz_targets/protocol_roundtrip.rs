//! The preload's encoder and the agent's parser agree: any OPEN path the
//! hook can send (up to its line buffer) reaches the agent unchanged.
#![no_main]
use ossc_peer::agent::protocol::Request;
use ossc_preload::proto::{encode_open, LineBuf};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let mut line = LineBuf::<8192>::new();
    encode_open(&mut line, 42, path.as_bytes());
    if line.overflowed() {
        return;
    }
    let text = std::str::from_utf8(line.as_bytes()).expect("escaped UTF-8 stays UTF-8");
    let parsed = Request::parse(text.strip_suffix('\n').expect("one line"));
    assert_eq!(
        parsed,
        Ok(Request::Open {
            pid: 42,
            path: path.to_string()
        })
    );
});
