//! MSE/PE handshake (`xorrent::mse`): whatever a peer sends, neither side
//! panics, holds more unconsumed input than the state it is in can need,
//! or emits more than the protocol's messages; an honest pair always
//! agrees, whatever the padding and however the bytes are cut.
//!
//! Input: `[chunk, flags, padA hi, padA lo, padB hi, padB lo, IA length,
//! IA..., mask...]`.
//! * With flag 0x40, the whole input after the first byte goes, raw, to a
//!   Responder and to an Initiator as what the other side sent, in
//!   `chunk`-byte reads.
//! * Otherwise an Initiator and a Responder talk to each other in
//!   `chunk`-byte reads, with PadA and PadB replaced in transit by pads of
//!   the chosen lengths (neither side remembers its pad). With flag 0x20 the
//!   mask is XORed into message 3 (first half) and message 4 (second half):
//!   RC4 is a stream cipher, so that edits the plaintext fields (VC,
//!   provide/select, the pad and IA lengths, the IA) as the fuzzer likes.
//!   Without it both must establish (or the responder find no common
//!   method) and agree on the torrent, the IA and the RC4 streams.
//!
//! Flags bits 0-1 pick what the Initiator provides and bits 2-3 what the
//! Responder accepts (0 and 3: both, 1: plaintext, 2: RC4).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use xorrent::mse::{
    Established, Initiator, MseError, Responder, CRYPTO_PLAIN, CRYPTO_RC4, KEY_LEN, MAX_HANDSHAKE,
    MAX_PAD,
};
use xorrent::types::InfoHash;

const SKEY: InfoHash = InfoHash([0xAA; 20]);
/// The verification constant's length (private in `mse`).
const VC_LEN: usize = 8;
/// Message 3 without PadC and IA: req1, req2^req3, VC, provide, two lengths.
const MSG3_FIXED: usize = 20 + 20 + VC_LEN + 4 + 2 + 2;
/// Message 4 as we send it: VC, select, len(PadD) = 0.
const MSG4: usize = VC_LEN + 4 + 2;
/// The most unconsumed input each side may hold while waiting: the
/// Initiator at most a PadB plus the VC it looks for; the Responder at most
/// a whole initial payload (its length is 16 bits).
const INITIATOR_HOLD: usize = MAX_PAD + VC_LEN;
const RESPONDER_HOLD: usize = u16::MAX as usize;

fn lookup(h: &[u8; 20]) -> Option<InfoHash> {
    (*h == xorrent::mse::req2(&SKEY)).then_some(SKEY)
}

fn methods(bits: u8) -> u32 {
    [
        CRYPTO_PLAIN | CRYPTO_RC4,
        CRYPTO_PLAIN,
        CRYPTO_RC4,
        CRYPTO_PLAIN | CRYPTO_RC4,
    ][usize::from(bits & 3)]
}

/// One side of a connection in the exchange below.
#[derive(Default)]
struct Wire {
    /// Bytes sent so far, all of them, as produced.
    sent: Vec<u8>,
    /// How many of them the other side has read.
    delivered: usize,
    /// What the other side read and has not consumed.
    input: BytesMut,
    result: Option<Result<Established, MseError>>,
}

/// Moves up to `chunk` bytes from `from` into `to`'s input, XORing `mask`
/// into the bytes at stream offsets `mask_at..`.
fn deliver(from: &mut Wire, to: &mut BytesMut, chunk: usize, mask: &[u8], mask_at: usize) {
    let end = (from.delivered + chunk).min(from.sent.len());
    for off in from.delivered..end {
        let m = off
            .checked_sub(mask_at)
            .and_then(|i| mask.get(i))
            .copied()
            .unwrap_or(0);
        to.extend_from_slice(&[from.sent[off] ^ m]);
    }
    from.delivered = end;
}

fn raw_responder(stream: &[u8], chunk: usize, accept: u32) {
    let mut r = Responder::new(accept);
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    for part in stream.chunks(chunk) {
        input.extend_from_slice(part);
        let before = input.len();
        let done = r.receive(&mut input, &mut out, lookup);
        assert!(input.len() <= before, "the responder grew its input");
        assert!(
            out.len() <= KEY_LEN + MAX_PAD + MSG4,
            "responder sent {}",
            out.len()
        );
        match done {
            Ok(None) => assert!(input.len() < RESPONDER_HOLD, "holds {}", input.len()),
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

fn raw_initiator(stream: &[u8], chunk: usize, provide: u32, ia: &[u8]) {
    let mut out = Vec::new();
    let mut i = Initiator::new(SKEY, provide, ia, &mut out);
    let first = out.len();
    assert!(
        (KEY_LEN..=KEY_LEN + MAX_PAD).contains(&first),
        "message 1 is {first}"
    );
    let mut input = BytesMut::new();
    for part in stream.chunks(chunk) {
        input.extend_from_slice(part);
        let before = input.len();
        let done = i.receive(&mut input, &mut out);
        assert!(input.len() <= before, "the initiator grew its input");
        assert!(
            out.len() <= first + MSG3_FIXED + ia.len(),
            "initiator sent {}",
            out.len()
        );
        match done {
            Ok(None) => assert!(input.len() < INITIATOR_HOLD, "holds {}", input.len()),
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

struct Pair<'a> {
    chunk: usize,
    provide: u32,
    accept: u32,
    pads: (usize, usize),
    ia: &'a [u8],
    masks: (&'a [u8], &'a [u8]),
}

/// Runs both sides until each is done or nothing moves; returns the two
/// wires (initiator's, responder's).
fn exchange(p: &Pair) -> (Wire, Wire) {
    let (mut a, mut b) = (Wire::default(), Wire::default());
    let mut init = Initiator::new(SKEY, p.provide, p.ia, &mut a.sent);
    // Our own PadA: keep Ya, swap the pad.
    a.sent.truncate(KEY_LEN);
    a.sent.resize(KEY_LEN + p.pads.0, 0x5A);
    let msg3_at = a.sent.len();
    let mut resp = Responder::new(p.accept);
    let mut msg4_at = None;
    loop {
        if b.result.is_none() {
            deliver(&mut a, &mut b.input, p.chunk, p.masks.0, msg3_at);
            let start = b.sent.len();
            let before = b.input.len();
            let r = resp.receive(&mut b.input, &mut b.sent, lookup);
            assert!(b.input.len() <= before);
            if msg4_at.is_none() && b.sent.len() > start {
                // Message 2 just came out: our own PadB in place of its.
                b.sent.truncate(start + KEY_LEN);
                b.sent.resize(start + KEY_LEN + p.pads.1, 0xA5);
                msg4_at = Some(b.sent.len());
            }
            assert!(
                b.sent.len() <= KEY_LEN + p.pads.1 + MSG4,
                "responder sent {}",
                b.sent.len()
            );
            match r {
                Ok(None) => assert!(b.input.len() < RESPONDER_HOLD),
                Ok(Some(e)) => b.result = Some(Ok(e)),
                Err(e) => b.result = Some(Err(e)),
            }
        }
        if a.result.is_none() {
            if let Some(at) = msg4_at {
                deliver(&mut b, &mut a.input, p.chunk, p.masks.1, at);
            }
            let before = a.input.len();
            let r = init.receive(&mut a.input, &mut a.sent);
            assert!(a.input.len() <= before);
            assert!(
                a.sent.len() <= msg3_at + MSG3_FIXED + p.ia.len(),
                "initiator sent {}",
                a.sent.len()
            );
            match r {
                Ok(None) => assert!(a.input.len() < INITIATOR_HOLD),
                Ok(Some(e)) => a.result = Some(Ok(e)),
                Err(e) => a.result = Some(Err(e)),
            }
        }
        // Each side has read and handled all the other sent, or is done.
        if (b.result.is_some() || a.delivered == a.sent.len())
            && (a.result.is_some() || b.delivered == b.sent.len())
        {
            return (a, b);
        }
    }
}

fn honest(p: &Pair) {
    let (a, b) = exchange(p);
    let common = p.provide & p.accept;
    let Some(Ok(mut eb)) = b.result else {
        assert_eq!(common, 0, "responder failed: {:?}", b.result);
        assert_eq!(b.result.unwrap().unwrap_err(), MseError::NoCommonMethod);
        assert!(
            !matches!(a.result, Some(Ok(_))),
            "initiator established alone"
        );
        return;
    };
    let Some(Ok(mut ea)) = a.result else {
        panic!("the responder established, the initiator: {:?}", a.result);
    };
    assert_eq!(ea.info_hash, SKEY);
    assert_eq!(eb.info_hash, SKEY);
    assert_eq!(
        &b.input[..],
        p.ia,
        "the responder hands over exactly the IA"
    );
    assert!(a.input.is_empty());
    assert_eq!(a.delivered, a.sent.len());
    assert_eq!(b.delivered, b.sent.len());
    let rc4 = common & CRYPTO_RC4 != 0;
    for c in [&ea.read, &ea.write, &eb.read, &eb.write] {
        assert_eq!(c.is_some(), rc4, "RC4 is used exactly when both allow it");
    }
    if let (Some(aw), Some(br), Some(bw), Some(ar)) =
        (&mut ea.write, &mut eb.read, &mut eb.write, &mut ea.read)
    {
        let mut msg = p.ia.to_vec();
        msg.extend_from_slice(b"payload after the handshake");
        let mut wire = msg.clone();
        aw.apply(&mut wire);
        br.apply(&mut wire);
        assert_eq!(wire, msg, "A to B");
        bw.apply(&mut wire);
        ar.apply(&mut wire);
        assert_eq!(wire, msg, "B to A");
    }
    assert!(b.delivered <= MAX_HANDSHAKE);
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk) + 1;
    let flags = rest.first().copied().unwrap_or(0);
    let provide = methods(flags);
    let accept = methods(flags >> 2);

    // One part per input: each costs a few 768-bit exponentiations.
    if flags & 0x40 != 0 {
        raw_responder(rest, chunk, accept);
        raw_initiator(rest, chunk, provide, &rest[..rest.len().min(68)]);
        return;
    }
    if rest.len() < 6 {
        return;
    }
    let pad = |hi: u8, lo: u8| usize::from(u16::from_be_bytes([hi, lo])) % (MAX_PAD + 1);
    let pads = (pad(rest[1], rest[2]), pad(rest[3], rest[4]));
    let body = &rest[6..];
    let ia = &body[..usize::from(rest[5]).min(body.len())];
    let mask = &body[ia.len()..];
    let mutate = flags & 0x20 != 0;
    let p = Pair {
        chunk,
        provide,
        accept,
        pads,
        ia,
        masks: if mutate {
            mask.split_at(mask.len() / 2)
        } else {
            (&[], &[])
        },
    };
    if mutate {
        exchange(&p);
    } else {
        honest(&p);
    }
});
