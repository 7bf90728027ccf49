//! Tracker replies as a client reads them: the HTTP announce and scrape
//! parsers and the UDP reply decoder never panic, stay within their caps,
//! and a decoded UDP reply re-encodes to the bytes it came from.
//!
//! The first input byte picks the parser; the rest is the reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xorrent::tracker::http::{parse_response, parse_scrape, MAX_PEERS};
use xorrent::tracker::udp_wire::{decode_reply, encode_reply, Reply};
use xorrent::types::InfoHash;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 4 {
        0 => {
            if let Ok(r) = parse_response(body) {
                assert!(r.peers.len() <= MAX_PEERS);
                assert!(r.interval.as_secs() <= 86_400);
            }
        }
        1 => {
            let hashes = [InfoHash([b'a'; 20]), InfoHash([0; 20])];
            if let Ok(s) = parse_scrape(body, &hashes) {
                assert_eq!(s.len(), hashes.len());
            }
        }
        n => {
            let v6 = n == 3;
            if let Ok(r) = decode_reply(body, v6) {
                let mut out = Vec::new();
                encode_reply(&r, &mut out);
                let used = match &r {
                    Reply::Connect { .. } => 16,
                    Reply::Announce { peers, .. } => 20 + peers.len() * if v6 { 18 } else { 6 },
                    Reply::Scrape { stats, .. } => 8 + 12 * stats.len(),
                    // Messages are decoded lossily; only valid UTF-8 round-trips.
                    Reply::Error { .. } if std::str::from_utf8(&body[8..]).is_err() => return,
                    Reply::Error { .. } => body.len(),
                };
                assert_eq!(out[..], body[..used], "{r:?} re-encodes differently");
            }
        }
    }
});
