//! Bencode decoder: never panics, and every accepted document survives a
//! re-encode/decode round trip.
//!
//! * `Limits::STRICT` (via `decode`) only accepts canonical bencode, so the
//!   canonical re-encoding must reproduce the input byte for byte.
//! * `Limits::TORRENT` accepts unsorted keys and trailing bytes, so the
//!   re-encoding is compared semantically (dictionaries as sorted maps).
//! * Every dictionary entry's `raw` span must decode on its own to the same
//!   value (the info-hash is taken over such a span).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xorrent::bencode::{self, Limits, Value};

fn encode(v: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

/// Equality that ignores dictionary order and `raw` spans.
fn same(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Dict(x), Value::Dict(y)) => {
            if x.len() != y.len() {
                return false;
            }
            let mut x: Vec<_> = x.iter().collect();
            let mut y: Vec<_> = y.iter().collect();
            x.sort_by(|a, b| a.key.cmp(b.key));
            y.sort_by(|a, b| a.key.cmp(b.key));
            x.iter()
                .zip(&y)
                .all(|(x, y)| x.key == y.key && same(&x.value, &y.value))
        }
        _ => false,
    }
}

/// Each entry's raw bytes are exactly one value equal to the entry's value.
fn check_raw_spans(v: &Value<'_>, limits: Limits) {
    match v {
        Value::List(l) => l.iter().for_each(|v| check_raw_spans(v, limits)),
        Value::Dict(d) => {
            for e in d {
                let (again, end) = bencode::decode_with(e.raw, limits)
                    .unwrap_or_else(|err| panic!("raw span {:?} does not decode: {err}", e.raw));
                assert_eq!(end, e.raw.len(), "raw span holds more than one value");
                assert_eq!(again, e.value, "raw span decodes to a different value");
                check_raw_spans(&e.value, limits);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // Strict: canonical in, identical bytes out.
    if let Ok(v) = bencode::decode(data) {
        let out = encode(&v);
        assert_eq!(out, data, "strict decode accepted a non-canonical document");
        let again = bencode::decode(&out).expect("re-encoding does not decode");
        assert_eq!(again, v);
        check_raw_spans(&v, Limits::STRICT);
    }

    // Torrent limits: lenient in, canonical out, same meaning.
    if let Ok((v, end)) = bencode::decode_with(data, Limits::TORRENT) {
        assert!(end <= data.len());
        let out = encode(&v);
        let strict = bencode::decode(&out).expect("canonical re-encoding is not strict bencode");
        assert!(same(&strict, &v), "round trip changed the value");
        let (lenient, end2) =
            bencode::decode_with(&out, Limits::TORRENT).expect("re-encoding does not decode");
        assert_eq!(end2, out.len());
        assert!(same(&lenient, &v));
        assert_eq!(encode(&strict), out, "encoding is not idempotent");
        // Only a fully sorted document round-trips to an identical value.
        if out.len() == end && out == data[..end] {
            assert_eq!(lenient, v);
        }
        check_raw_spans(&v, Limits::TORRENT);
    }
});
