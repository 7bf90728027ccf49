//! Peer wire codecs: never panic, consume nothing when they need more
//! bytes, consume exactly one frame per message, and round-trip.
//!
//! The first input byte picks a chunk size; the rest is decoded twice, all
//! at once and as a stream fed in chunks (as a socket delivers it), and both
//! must yield the same messages and the same error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use xorrent::wire::{decode_message, Handshake, Message, WireError, MAX_FRAME};

/// Decodes all whole messages in `buf`; checks each one as it goes.
fn drain(buf: &mut BytesMut, out: &mut Vec<Message>) -> Result<(), WireError> {
    loop {
        let before = buf.clone();
        match decode_message(buf, MAX_FRAME) {
            Ok(None) => {
                assert_eq!(buf[..], before[..], "Ok(None) consumed or changed input");
                return Ok(());
            }
            Err(e) => return Err(e),
            Ok(Some(msg)) => {
                let used = before.len() - buf.len();
                assert!(used >= 4, "a message consumed {used} bytes");
                assert_eq!(buf[..], before[used..], "decode changed the unread bytes");
                let frame = &before[..used];
                let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
                assert_eq!(used, 4 + len, "consumed a different length than the prefix");
                if !matches!(msg, Message::Unknown(_)) {
                    let mut enc = BytesMut::new();
                    msg.encode(&mut enc);
                    assert_eq!(enc[..], frame[..], "{msg:?} re-encodes differently");
                    let mut enc2 = enc.clone();
                    let again = decode_message(&mut enc2, MAX_FRAME)
                        .expect("re-encoding fails to decode")
                        .expect("re-encoding is incomplete");
                    assert_eq!(again, msg);
                    assert!(enc2.is_empty());
                }
                out.push(msg);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };

    // All at once.
    let mut whole = BytesMut::from(stream);
    let mut msgs = Vec::new();
    let whole_result = drain(&mut whole, &mut msgs);

    // In chunks.
    let chunk = usize::from(first % 64) + 1;
    let mut buf = BytesMut::new();
    let mut streamed = Vec::new();
    let mut stream_result = Ok(());
    for part in stream.chunks(chunk) {
        buf.extend_from_slice(part);
        stream_result = drain(&mut buf, &mut streamed);
        if stream_result.is_err() {
            break;
        }
    }
    if stream.is_empty() {
        stream_result = drain(&mut buf, &mut streamed);
    }
    assert_eq!(msgs, streamed, "chunked decoding yields other messages");
    assert_eq!(whole_result, stream_result, "chunked decoding ends differently");
    if whole_result.is_ok() {
        assert_eq!(whole[..], buf[..]);
    }

    // Handshake.
    let mut hs = BytesMut::from(stream);
    match Handshake::decode(&mut hs) {
        Ok(None) => assert_eq!(hs[..], stream[..], "Ok(None) consumed input"),
        Ok(Some(h)) => {
            assert_eq!(h.encode()[..], stream[..68]);
            assert_eq!(hs[..], stream[68..]);
        }
        Err(_) => {}
    }
});
