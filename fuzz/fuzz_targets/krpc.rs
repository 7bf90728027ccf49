//! KRPC (BEP-5) decoding: never panics, and whatever decodes re-encodes
//! canonically to a packet that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xorrent::bencode;
use xorrent::dht::krpc::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = decode(data) else {
        return;
    };
    let mut out = Vec::new();
    encode(&m, &mut out);
    bencode::decode(&out).expect("our encoding is canonical bencode");
    assert_eq!(decode(&out).expect("our encoding decodes"), m);
});
