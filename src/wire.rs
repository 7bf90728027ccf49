//! BEP-3 peer wire: the handshake and length-prefixed messages, with the
//! BEP-6 fast extension messages and BEP-10 extended messages (their
//! payloads are decoded in [`crate::extension`]).
//!
//! Pure codecs over `BytesMut`: `decode` returns `Ok(None)` when more bytes
//! are needed and consumes input only when it returns a value. Every length
//! prefix is checked against [`MAX_FRAME`] before anything is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::types::{InfoHash, PeerId};

pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";
pub const HANDSHAKE_LEN: usize = 68;
/// Largest message body accepted: a 128 KiB block plus the piece header.
/// Bitfields of torrents with up to 1,048,576 pieces fit as well.
pub const MAX_FRAME: usize = 128 * 1024 + 9;
/// Largest block we request or serve.
pub const MAX_BLOCK: u32 = 128 * 1024;

/// Reserved-byte bits of the handshake: (byte, mask).
pub const RESERVED_EXTENSION: (usize, u8) = (5, 0x10);
pub const RESERVED_FAST: (usize, u8) = (7, 0x04);
pub const RESERVED_DHT: (usize, u8) = (7, 0x01);

/// Message ids (BEP-3, BEP-6 fast extension, BEP-10 extended).
pub mod id {
    pub const CHOKE: u8 = 0;
    pub const UNCHOKE: u8 = 1;
    pub const INTERESTED: u8 = 2;
    pub const NOT_INTERESTED: u8 = 3;
    pub const HAVE: u8 = 4;
    pub const BITFIELD: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const PIECE: u8 = 7;
    pub const CANCEL: u8 = 8;
    pub const PORT: u8 = 9;
    pub const SUGGEST: u8 = 0x0D;
    pub const HAVE_ALL: u8 = 0x0E;
    pub const HAVE_NONE: u8 = 0x0F;
    pub const REJECT: u8 = 0x10;
    pub const ALLOWED_FAST: u8 = 0x11;
    pub const EXTENDED: u8 = 20;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub reserved: [u8; 8],
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
}

impl Handshake {
    pub fn new(info_hash: InfoHash, peer_id: PeerId) -> Handshake {
        Handshake {
            reserved: [0; 8],
            info_hash,
            peer_id,
        }
    }

    pub fn set(&mut self, (byte, mask): (usize, u8)) {
        self.reserved[byte] |= mask;
    }

    pub fn has(&self, (byte, mask): (usize, u8)) -> bool {
        self.reserved[byte] & mask != 0
    }

    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut out = [0u8; HANDSHAKE_LEN];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id.0);
        out
    }

    pub fn decode(buf: &mut BytesMut) -> Result<Option<Handshake>, WireError> {
        if let Some(&n) = buf.first() {
            if n != 19 {
                return Err(WireError::BadProtocol);
            }
        }
        let have = buf.len().min(20);
        if have > 1 && buf[1..have] != PROTOCOL[..have - 1] {
            return Err(WireError::BadProtocol);
        }
        if buf.len() < HANDSHAKE_LEN {
            return Ok(None);
        }
        let b = buf.split_to(HANDSHAKE_LEN);
        Ok(Some(Handshake {
            reserved: b[20..28].try_into().expect("8 bytes"),
            info_hash: InfoHash(b[28..48].try_into().expect("20 bytes")),
            peer_id: PeerId(b[48..68].try_into().expect("20 bytes")),
        }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    KeepAlive,
    Choke,
    Unchoke,
    Interested,
    NotInterested,
    Have(u32),
    /// Raw bitfield bytes; the length is checked against the torrent by the peer task.
    Bitfield(Bytes),
    Request {
        piece: u32,
        offset: u32,
        len: u32,
    },
    Piece {
        piece: u32,
        offset: u32,
        data: Bytes,
    },
    Cancel {
        piece: u32,
        offset: u32,
        len: u32,
    },
    /// BEP-5 DHT port.
    Port(u16),
    /// BEP-6: the sender suggests downloading this piece.
    Suggest(u32),
    /// BEP-6: instead of a bitfield, every piece / none.
    HaveAll,
    HaveNone,
    /// BEP-6: the request will not be served.
    Reject {
        piece: u32,
        offset: u32,
        len: u32,
    },
    /// BEP-6: this piece may be requested while choked.
    AllowedFast(u32),
    /// BEP-10: extended message `id` (0 is the extended handshake).
    Extended {
        id: u8,
        payload: Bytes,
    },
    /// An id we do not handle (extensions not negotiated); skipped.
    Unknown(u8),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a BitTorrent handshake")]
    BadProtocol,
    #[error("message of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    FrameTooLarge(usize),
    #[error("message id {id} has a wrong length {len}")]
    BadLength { id: u8, len: usize },
}

/// Length-prefixed message codec with a maximum frame size.
#[derive(Debug, Clone)]
pub struct MessageCodec {
    pub max_frame: usize,
}

impl Default for MessageCodec {
    fn default() -> Self {
        MessageCodec {
            max_frame: MAX_FRAME,
        }
    }
}

impl Decoder for MessageCodec {
    type Item = Message;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, std::io::Error> {
        decode_message(buf, self.max_frame).map_err(std::io::Error::other)
    }
}

/// Decodes one message; see the module notes for the contract.
pub fn decode_message(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Message>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > max_frame {
        return Err(WireError::FrameTooLarge(len));
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    if len == 0 {
        buf.advance(4);
        return Ok(Some(Message::KeepAlive));
    }
    let id = buf[4];
    let fixed = |want: usize| -> Result<(), WireError> {
        if len == want {
            Ok(())
        } else {
            Err(WireError::BadLength { id, len })
        }
    };
    match id {
        id::CHOKE..=id::NOT_INTERESTED | id::HAVE_ALL | id::HAVE_NONE => fixed(1)?,
        id::HAVE | id::SUGGEST | id::ALLOWED_FAST => fixed(5)?,
        id::REQUEST | id::CANCEL | id::REJECT => fixed(13)?,
        id::PIECE if len < 9 => return Err(WireError::BadLength { id, len }),
        id::PORT => fixed(3)?,
        id::EXTENDED if len < 2 => return Err(WireError::BadLength { id, len }),
        _ => {}
    }
    buf.advance(5);
    let mut body = buf.split_to(len - 1);
    let msg = match id {
        id::CHOKE => Message::Choke,
        id::UNCHOKE => Message::Unchoke,
        id::INTERESTED => Message::Interested,
        id::NOT_INTERESTED => Message::NotInterested,
        id::HAVE => Message::Have(body.get_u32()),
        id::BITFIELD => Message::Bitfield(body.freeze()),
        id::REQUEST | id::CANCEL | id::REJECT => {
            let (piece, offset, len) = (body.get_u32(), body.get_u32(), body.get_u32());
            match id {
                id::REQUEST => Message::Request { piece, offset, len },
                id::CANCEL => Message::Cancel { piece, offset, len },
                _ => Message::Reject { piece, offset, len },
            }
        }
        id::PIECE => {
            let (piece, offset) = (body.get_u32(), body.get_u32());
            Message::Piece {
                piece,
                offset,
                data: body.freeze(),
            }
        }
        id::PORT => Message::Port(body.get_u16()),
        id::SUGGEST => Message::Suggest(body.get_u32()),
        id::HAVE_ALL => Message::HaveAll,
        id::HAVE_NONE => Message::HaveNone,
        id::ALLOWED_FAST => Message::AllowedFast(body.get_u32()),
        id::EXTENDED => {
            let ext = body.get_u8();
            Message::Extended {
                id: ext,
                payload: body.freeze(),
            }
        }
        other => Message::Unknown(other),
    };
    Ok(Some(msg))
}

impl Message {
    pub fn encode(&self, out: &mut BytesMut) {
        let simple = |out: &mut BytesMut, msg: u8| {
            out.put_u32(1);
            out.put_u8(msg);
        };
        match self {
            Message::KeepAlive => out.put_u32(0),
            Message::Choke => simple(out, id::CHOKE),
            Message::Unchoke => simple(out, id::UNCHOKE),
            Message::Interested => simple(out, id::INTERESTED),
            Message::NotInterested => simple(out, id::NOT_INTERESTED),
            Message::Have(i) => id_u32(out, id::HAVE, *i),
            Message::Suggest(i) => id_u32(out, id::SUGGEST, *i),
            Message::AllowedFast(i) => id_u32(out, id::ALLOWED_FAST, *i),
            Message::HaveAll => simple(out, id::HAVE_ALL),
            Message::HaveNone => simple(out, id::HAVE_NONE),
            Message::Extended { id, payload } => {
                out.put_u32(frame_len(2 + payload.len()));
                out.put_u8(id::EXTENDED);
                out.put_u8(*id);
                out.put_slice(payload);
            }
            Message::Bitfield(b) => {
                out.put_u32(frame_len(1 + b.len()));
                out.put_u8(id::BITFIELD);
                out.put_slice(b);
            }
            Message::Request { piece, offset, len }
            | Message::Cancel { piece, offset, len }
            | Message::Reject { piece, offset, len } => {
                out.put_u32(13);
                out.put_u8(match self {
                    Message::Request { .. } => id::REQUEST,
                    Message::Cancel { .. } => id::CANCEL,
                    _ => id::REJECT,
                });
                out.put_u32(*piece);
                out.put_u32(*offset);
                out.put_u32(*len);
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                out.put_u32(frame_len(9 + data.len()));
                out.put_u8(id::PIECE);
                out.put_u32(*piece);
                out.put_u32(*offset);
                out.put_slice(data);
            }
            Message::Port(p) => {
                out.put_u32(3);
                out.put_u8(id::PORT);
                out.put_u16(*p);
            }
            Message::Unknown(_) => {}
        }
    }
}

/// The length prefix of a message of `n` bytes.
fn frame_len(n: usize) -> u32 {
    u32::try_from(n).expect("what we send is a block, a bitfield or a small payload")
}

fn id_u32(out: &mut BytesMut, id: u8, v: u32) {
    out.put_u32(5);
    out.put_u8(id);
    out.put_u32(v);
}

/// BEP-6's allowed-fast set: `k` pieces derived from the peer's /24 and
/// the info-hash, so every client computes the same set for a peer.
pub fn allowed_fast_set(
    ip: std::net::Ipv4Addr,
    info_hash: &InfoHash,
    num_pieces: u32,
    k: usize,
) -> Vec<u32> {
    use sha1::{Digest, Sha1};
    let k = k.min(num_pieces as usize);
    let mut out = Vec::with_capacity(k);
    if k == 0 {
        return out;
    }
    let mut x = Vec::with_capacity(24);
    x.extend_from_slice(&(u32::from(ip) & 0xFFFF_FF00).to_be_bytes());
    x.extend_from_slice(&info_hash.0);
    while out.len() < k {
        let h: [u8; 20] = Sha1::digest(&x).into();
        for word in h.chunks_exact(4) {
            if out.len() == k {
                break;
            }
            let index = u32::from_be_bytes(word.try_into().expect("4 bytes")) % num_pieces;
            if !out.contains(&index) {
                out.push(index);
            }
        }
        x = h.to_vec();
    }
    out
}

impl Encoder<Message> for MessageCodec {
    type Error = std::io::Error;

    fn encode(&mut self, msg: Message, out: &mut BytesMut) -> Result<(), std::io::Error> {
        msg.encode(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Message) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        let got = decode_message(&mut buf, MAX_FRAME).unwrap().unwrap();
        assert_eq!(got, m);
        assert!(buf.is_empty());
    }

    #[test]
    fn every_message_round_trips() {
        roundtrip(Message::KeepAlive);
        roundtrip(Message::Choke);
        roundtrip(Message::Unchoke);
        roundtrip(Message::Interested);
        roundtrip(Message::NotInterested);
        roundtrip(Message::Have(7));
        roundtrip(Message::Bitfield(Bytes::from_static(&[0xf0])));
        roundtrip(Message::Request {
            piece: 1,
            offset: 16384,
            len: 16384,
        });
        roundtrip(Message::Cancel {
            piece: 1,
            offset: 0,
            len: 5,
        });
        roundtrip(Message::Piece {
            piece: 2,
            offset: 0,
            data: Bytes::from_static(b"hello"),
        });
        roundtrip(Message::Port(6881));
        roundtrip(Message::Suggest(9));
        roundtrip(Message::HaveAll);
        roundtrip(Message::HaveNone);
        roundtrip(Message::Reject {
            piece: 3,
            offset: 32768,
            len: 16384,
        });
        roundtrip(Message::AllowedFast(1312));
        roundtrip(Message::Extended {
            id: 0,
            payload: Bytes::from_static(b"d1:md11:ut_metadatai1eee"),
        });
        roundtrip(Message::Extended {
            id: 3,
            payload: Bytes::new(),
        });
    }

    #[test]
    fn fast_and_extended_messages_check_their_lengths() {
        // have all with a payload, allowed fast without its index, an
        // extended message without its id.
        for bad in [
            &[0, 0, 0, 2, 0x0E, 0][..],
            &[0, 0, 0, 1, 0x11],
            &[0, 0, 0, 1, 20],
        ] {
            let mut buf = BytesMut::from(bad);
            assert!(decode_message(&mut buf, MAX_FRAME).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn allowed_fast_set_matches_bep6() {
        // The example in BEP-6: 80.4.4.200, info-hash 0xAA x 20, 1313 pieces.
        let ih = InfoHash([0xAA; 20]);
        let ip = std::net::Ipv4Addr::new(80, 4, 4, 200);
        assert_eq!(
            allowed_fast_set(ip, &ih, 1313, 7),
            [1059, 431, 808, 1217, 287, 376, 1188]
        );
        assert_eq!(
            allowed_fast_set(ip, &ih, 1313, 9),
            [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]
        );
        // Fewer pieces than k: every piece, no endless loop.
        let mut all = allowed_fast_set(ip, &ih, 3, 10);
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2]);
    }

    #[test]
    fn waits_for_a_whole_frame_without_consuming() {
        let mut buf = BytesMut::new();
        Message::Have(3).encode(&mut buf);
        let mut part = BytesMut::from(&buf[..6]);
        assert_eq!(decode_message(&mut part, MAX_FRAME).unwrap(), None);
        assert_eq!(part.len(), 6);
    }

    #[test]
    fn rejects_a_4_gib_length_prefix_without_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 7][..]);
        assert_eq!(
            decode_message(&mut buf, MAX_FRAME),
            Err(WireError::FrameTooLarge(0xffff_ffff))
        );
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn rejects_fixed_size_messages_with_wrong_length() {
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 1, 0][..]);
        assert!(decode_message(&mut buf, MAX_FRAME).is_err());
        let mut buf = BytesMut::from(&[0, 0, 0, 4, 7, 0, 0, 0][..]);
        assert!(decode_message(&mut buf, MAX_FRAME).is_err());
    }

    #[test]
    fn handshake_round_trips_and_rejects_other_protocols() {
        let h = Handshake::new(InfoHash([1; 20]), PeerId([2; 20]));
        let mut buf = BytesMut::from(&h.encode()[..]);
        assert_eq!(Handshake::decode(&mut buf).unwrap(), Some(h));
        let mut bad = BytesMut::from(&b"\x13BitTorrent protocoX"[..]);
        assert_eq!(Handshake::decode(&mut bad), Err(WireError::BadProtocol));
        let mut http = BytesMut::from(&b"GET / HTTP/1.1"[..]);
        assert_eq!(Handshake::decode(&mut http), Err(WireError::BadProtocol));
    }
}
