//! Extension payloads (BEP-10 handshake, BEP-9 ut_metadata, BEP-11 ut_pex):
//! every decoder takes the same bytes and never panics, and whatever decodes
//! re-encodes to bytes that decode to the same value.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use xorrent::bencode;
use xorrent::extension::{ExtHandshake, MetadataMsg, PexMsg};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ExtHandshake::decode(data) {
        let out = h.encode();
        bencode::decode(&out).expect("our handshake is canonical bencode");
        assert_eq!(
            ExtHandshake::decode(&out).expect("our handshake decodes"),
            h
        );
    }
    if let Ok(m) = MetadataMsg::decode(&Bytes::copy_from_slice(data)) {
        let out = Bytes::from(m.encode());
        assert_eq!(MetadataMsg::decode(&out).expect("our message decodes"), m);
    }
    if let Ok(p) = PexMsg::decode(data) {
        let out = p.encode();
        bencode::decode(&out).expect("our PEX message is canonical bencode");
        assert_eq!(PexMsg::decode(&out).expect("our PEX message decodes"), p);
    }
});
