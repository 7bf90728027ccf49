//! Payloads of BEP-10 extended messages: the extended handshake, BEP-9
//! `ut_metadata` and BEP-11 `ut_pex`. Pure codecs over the bytes after
//! `<len><20><ext id>`; framing lives in [`crate::wire`].
//!
//! Decoding is tolerant where the BEPs leave room (unknown keys, optional
//! fields of the wrong type are skipped) and bounded everywhere else: every
//! list taken from a peer has a fixed cap, so a hostile payload costs at most
//! its own length plus small constants.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;

use crate::bencode::{self, Dict, Limits, Value};
use crate::compact::{self, Family};

/// Extended message id of the handshake.
pub const HANDSHAKE: u8 = 0;
pub const UT_METADATA: &str = "ut_metadata";
pub const UT_PEX: &str = "ut_pex";
/// Ids we assign in our own `m` (what peers must use when sending to us).
pub const OUR_UT_METADATA: u8 = 1;
pub const OUR_UT_PEX: u8 = 2;

/// Bytes in one `ut_metadata` piece (BEP-9); only the last may be shorter.
pub const METADATA_PIECE: usize = 16 * 1024;

/// Most `m` entries kept from one handshake; real clients send about ten.
pub const MAX_M_ENTRIES: usize = 64;
/// Longest extension name kept; real ones are under 20 bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest client string (`v`) kept, measured after UTF-8 repair.
pub const MAX_CLIENT_LEN: usize = 256;
/// Most peers taken from one PEX message, IPv4 and IPv6 together, for
/// `added` and for `dropped` each. Four times the sending convention, so
/// generous senders are not cut short.
pub const PEX_MAX_DECODE: usize = 200;
/// Most peers to put in one PEX message's `added` (and in its `dropped`):
/// the Azureus/µTorrent convention, which some clients enforce by
/// disconnecting.
pub const PEX_MAX_SEND: usize = 50;

/// Extension payloads are small, flat dictionaries: nesting and value counts
/// beyond these are garbage. Key order is not enforced (not every client
/// sorts), and bytes after the dictionary are left to the caller.
const LIMITS: Limits = Limits {
    max_depth: 16,
    max_tokens: 8192,
    require_sorted_keys: false,
    allow_trailing: true,
};

/// BEP-11 peer flags (`added.f`, `added6.f`).
pub mod pex_flags {
    /// Prefers encrypted connections.
    pub const ENCRYPTION: u8 = 0x01;
    /// Seed or upload-only.
    pub const SEED: u8 = 0x02;
    pub const UTP: u8 = 0x04;
    /// Advertised `ut_holepunch`.
    pub const HOLEPUNCH: u8 = 0x08;
    /// The sender connected out to it, so it accepts connections.
    pub const REACHABLE: u8 = 0x10;
}

/// Why an extension payload was not usable. The peer is not necessarily
/// misbehaving (BEP-9 says unknown message types are ignored); the caller
/// decides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtError {
    #[error("extension payload is not bencode: {0}")]
    Bencode(#[from] bencode::Error),
    #[error("extension payload is not a dictionary")]
    NotDict,
    #[error("ut_metadata message has no valid `{0}`")]
    MissingField(&'static str),
    #[error("unknown ut_metadata msg_type {0}")]
    UnknownMsgType(i64),
    #[error("ut_metadata piece of {len} bytes, over the {METADATA_PIECE}-byte limit")]
    DataTooLong { len: usize },
}

/// The BEP-10 extended handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// Extension name → the id the sender wants for it; 0 disables it.
    /// Decoding sorts by name (names are unique); `encode` keeps the first
    /// of duplicate names.
    pub m: Vec<(String, u8)>,
    /// `v`: client name and version.
    pub client: Option<String>,
    /// `p`: the sender's TCP listen port.
    pub listen_port: Option<u16>,
    /// `reqq`: how many outstanding requests the sender queues.
    pub reqq: Option<u32>,
    /// `yourip`: our address as the sender sees it.
    pub your_ip: Option<IpAddr>,
    /// BEP-9: bytes in the info dictionary, when the sender has it.
    pub metadata_size: Option<u64>,
    /// BEP-21 `upload_only`.
    pub upload_only: bool,
    /// `e`: the sender prefers encrypted connections (MSE/PE).
    pub encryption: bool,
}

impl ExtHandshake {
    /// What we send: `ut_metadata` (and `ut_pex` when `pex`), our client
    /// name, our listen port (0: not listening) and the address we see
    /// the peer at. Callers add `reqq` and `metadata_size` when they have them.
    pub fn ours(pex: bool, listen_port: u16, peer_ip: IpAddr) -> ExtHandshake {
        let mut m = vec![(UT_METADATA.to_string(), OUR_UT_METADATA)];
        if pex {
            m.push((UT_PEX.to_string(), OUR_UT_PEX));
        }
        ExtHandshake {
            m,
            client: Some(format!("xorrent {}", env!("CARGO_PKG_VERSION"))),
            listen_port: (listen_port != 0).then_some(listen_port),
            your_ip: Some(peer_ip),
            ..ExtHandshake::default()
        }
    }

    /// Only a payload that is not a bencoded dictionary is an error; fields
    /// of the wrong type or out of range read as absent, since the handshake
    /// is advisory and a quirky client is still worth talking to.
    pub fn decode(payload: &[u8]) -> Result<ExtHandshake, ExtError> {
        let (v, _) = bencode::decode_with(payload, LIMITS)?;
        if v.as_dict().is_none() {
            return Err(ExtError::NotDict);
        }
        let mut m: Vec<(String, u8)> = v
            .get("m")
            .and_then(Value::as_dict)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| {
                let name = std::str::from_utf8(e.key).ok()?;
                let id = u8::try_from(e.value.as_int()?).ok()?;
                (name.len() <= MAX_NAME_LEN).then(|| (name.to_owned(), id))
            })
            .take(MAX_M_ENTRIES)
            .collect();
        // The bencode decoder refuses duplicate keys, so names are unique.
        m.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let get_int = |key| v.get(key).and_then(Value::as_int);
        Ok(ExtHandshake {
            m,
            // Some clients send Latin-1; a repaired name beats none.
            client: v
                .get("v")
                .and_then(Value::as_bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .filter(|s| s.len() <= MAX_CLIENT_LEN),
            listen_port: get_int("p")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0),
            reqq: get_int("reqq")
                .and_then(|r| u32::try_from(r).ok())
                .filter(|&r| r != 0),
            your_ip: v
                .get("yourip")
                .and_then(Value::as_bytes)
                .and_then(compact::decode_ip),
            metadata_size: get_int("metadata_size").and_then(|s| u64::try_from(s).ok()),
            upload_only: get_int("upload_only").is_some_and(|u| u != 0),
            encryption: get_int("e").is_some_and(|e| e != 0),
        })
    }

    /// Canonical bencode (keys sorted). `m` is always present, as BEP-10
    /// makes it the one key every handshake carries.
    pub fn encode(&self) -> Vec<u8> {
        // The writer keeps the first of duplicate names.
        let mut m = Dict::with_capacity(16 * self.m.len());
        for (name, id) in &self.m {
            m.int(name, i64::from(*id));
        }
        let mut d = Dict::with_capacity(64 + 16 * self.m.len());
        if self.encryption {
            d.int("e", 1);
        }
        d.dict("m", &m);
        if let Some(size) = self.metadata_size {
            // Sizes past i64 cannot be bencoded for our decoder; no real
            // info dictionary comes near.
            d.int("metadata_size", i64::try_from(size).unwrap_or(i64::MAX));
        }
        if let Some(p) = self.listen_port {
            d.int("p", i64::from(p));
        }
        if let Some(r) = self.reqq {
            d.int("reqq", i64::from(r));
        }
        if self.upload_only {
            d.int("upload_only", 1);
        }
        if let Some(v) = &self.client {
            d.bytes("v", v);
        }
        if let Some(ip) = self.your_ip {
            let mut b = Vec::with_capacity(16);
            compact::encode_ip(ip, &mut b);
            d.bytes("yourip", b);
        }
        d.finish()
    }

    /// The id the sender assigned to extension `name`; `None` when it is
    /// absent or disabled (0).
    pub fn id(&self, name: &str) -> Option<u8> {
        self.m
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, id)| id)
            .filter(|&id| id != 0)
    }
}

/// A BEP-9 `ut_metadata` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMsg {
    Request {
        piece: u32,
    },
    /// `data` is at most [`METADATA_PIECE`] bytes; whether it has the right
    /// length for `piece` depends on `total_size` and is checked by the
    /// fetcher.
    Data {
        piece: u32,
        total_size: u64,
        data: Bytes,
    },
    Reject {
        piece: u32,
    },
}

impl MetadataMsg {
    /// A data message is a dictionary followed by the raw piece; `data`
    /// shares `payload`'s buffer. Bytes after a request's or reject's
    /// dictionary are ignored.
    pub fn decode(payload: &Bytes) -> Result<MetadataMsg, ExtError> {
        let (v, end) = bencode::decode_with(payload, LIMITS)?;
        if v.as_dict().is_none() {
            return Err(ExtError::NotDict);
        }
        let msg_type = v
            .get("msg_type")
            .and_then(Value::as_int)
            .ok_or(ExtError::MissingField("msg_type"))?;
        let piece = v
            .get("piece")
            .and_then(Value::as_int)
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(ExtError::MissingField("piece"))?;
        match msg_type {
            0 => Ok(MetadataMsg::Request { piece }),
            1 => {
                let total_size = v
                    .get("total_size")
                    .and_then(Value::as_int)
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or(ExtError::MissingField("total_size"))?;
                let len = payload.len() - end;
                if len > METADATA_PIECE {
                    return Err(ExtError::DataTooLong { len });
                }
                Ok(MetadataMsg::Data {
                    piece,
                    total_size,
                    data: payload.slice(end..),
                })
            }
            2 => Ok(MetadataMsg::Reject { piece }),
            other => Err(ExtError::UnknownMsgType(other)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let (msg_type, piece) = match self {
            MetadataMsg::Request { piece } => (0, piece),
            MetadataMsg::Data { piece, .. } => (1, piece),
            MetadataMsg::Reject { piece } => (2, piece),
        };
        let data_len = match self {
            MetadataMsg::Data { data, .. } => data.len(),
            _ => 0,
        };
        let mut d = Dict::new();
        d.int("msg_type", msg_type).int("piece", i64::from(*piece));
        if let MetadataMsg::Data { total_size, .. } = self {
            d.int("total_size", i64::try_from(*total_size).unwrap_or(i64::MAX));
        }
        let mut out = Vec::with_capacity(64 + data_len);
        d.write(&mut out);
        if let MetadataMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }
}

/// A BEP-11 `ut_pex` message. IPv4 and IPv6 peers share one list; the
/// encoder splits them into the `…6` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMsg {
    /// Peers the sender connected to, with their [`pex_flags`].
    pub added: Vec<(SocketAddr, u8)>,
    pub dropped: Vec<SocketAddr>,
}

impl PexMsg {
    /// Keys of the wrong type are skipped, a ragged tail of a compact list
    /// is ignored, entries with port 0 are dropped, and at most
    /// [`PEX_MAX_DECODE`] peers are taken per list (IPv4 first).
    pub fn decode(payload: &[u8]) -> Result<PexMsg, ExtError> {
        let (v, _) = bencode::decode_with(payload, LIMITS)?;
        if v.as_dict().is_none() {
            return Err(ExtError::NotDict);
        }
        let bytes = |k| v.get(k).and_then(Value::as_bytes).unwrap_or_default();
        // Flags line up with entries by position, so pair them before any
        // entry is filtered out; a short `.f` leaves the rest at 0.
        let with_flags = |list: &'static str, flags: &'static str, family| {
            let f = bytes(flags);
            compact::decode_peers(bytes(list), family)
                .enumerate()
                .map(move |(i, a)| (a, f.get(i).copied().unwrap_or(0)))
        };
        let added = with_flags("added", "added.f", Family::V4)
            .chain(with_flags("added6", "added6.f", Family::V6))
            .filter(|(a, _)| a.port() != 0)
            .take(PEX_MAX_DECODE)
            .collect();
        let dropped = compact::decode_peers(bytes("dropped"), Family::V4)
            .chain(compact::decode_peers(bytes("dropped6"), Family::V6))
            .filter(|a| a.port() != 0)
            .take(PEX_MAX_DECODE)
            .collect();
        Ok(PexMsg { added, dropped })
    }

    /// Canonical bencode; empty lists are left out. The caller keeps each
    /// list within [`PEX_MAX_SEND`].
    pub fn encode(&self) -> Vec<u8> {
        let mut added = Vec::new();
        let mut added_f = Vec::new();
        let mut added6 = Vec::new();
        let mut added6_f = Vec::new();
        for (addr, flags) in &self.added {
            match addr {
                SocketAddr::V4(_) => {
                    compact::encode_peer(addr, &mut added);
                    added_f.push(*flags);
                }
                SocketAddr::V6(_) => {
                    compact::encode_peer(addr, &mut added6);
                    added6_f.push(*flags);
                }
            }
        }
        let mut dropped = Vec::new();
        let mut dropped6 = Vec::new();
        for addr in &self.dropped {
            match addr {
                SocketAddr::V4(_) => compact::encode_peer(addr, &mut dropped),
                SocketAddr::V6(_) => compact::encode_peer(addr, &mut dropped6),
            }
        }

        let mut d =
            Dict::with_capacity(64 + added.len() + added_f.len() + added6.len() + added6_f.len());
        for (k, b) in [
            ("added", &added),
            ("added.f", &added_f),
            ("added6", &added6),
            ("added6.f", &added6_f),
            ("dropped", &dropped),
            ("dropped6", &dropped6),
        ] {
            if !b.is_empty() {
                d.bytes(k, b);
            }
        }
        d.finish()
    }
}

/// Serving side of BEP-9: piece `piece` of our info dictionary, or `None`
/// when it is out of range (answer with a reject).
pub fn metadata_piece(info: &[u8], piece: u32) -> Option<&[u8]> {
    let start = usize::try_from(piece).ok()?.checked_mul(METADATA_PIECE)?;
    if start >= info.len() {
        return None;
    }
    Some(&info[start..info.len().min(start + METADATA_PIECE)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode::encode_bytes;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn handshake_round_trips(h: &ExtHandshake) {
        let out = h.encode();
        bencode::decode(&out).expect("canonical bencode");
        assert_eq!(&ExtHandshake::decode(&out).unwrap(), h);
    }

    #[test]
    fn decodes_a_libtorrent_style_handshake() {
        let mut p = b"d12:complete_agoi-1e1:md11:lt_donthavei7e10:share_modei8e11:upload_onlyi3e12:ut_holepunchi4e11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei31235e1:pi6881e4:reqqi500e11:upload_onlyi0e1:v17:libtorrent/2.0.106:yourip4:".to_vec();
        p.extend_from_slice(&[203, 0, 113, 7]);
        p.push(b'e');
        let h = ExtHandshake::decode(&p).unwrap();
        assert_eq!(h.id(UT_METADATA), Some(2));
        assert_eq!(h.id(UT_PEX), Some(1));
        assert_eq!(h.id("lt_donthave"), Some(7));
        assert_eq!(h.id("ut_comment"), None);
        assert_eq!(h.m.len(), 6);
        assert!(h.m.windows(2).all(|w| w[0].0 < w[1].0), "sorted by name");
        assert_eq!(h.client.as_deref(), Some("libtorrent/2.0.10"));
        assert_eq!(h.listen_port, Some(6881));
        assert_eq!(h.reqq, Some(500));
        assert_eq!(h.metadata_size, Some(31235));
        assert_eq!(h.your_ip, Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7))));
        assert!(!h.upload_only);
        handshake_round_trips(&h);
    }

    #[test]
    fn decodes_an_unsorted_handshake_with_an_ipv6_yourip() {
        let mut p =
            b"d1:v14:Transmission 41:md6:ut_pexi0e11:ut_metadatai3ee11:upload_onlyi1e6:yourip16:"
                .to_vec();
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.push(b'e');
        let h = ExtHandshake::decode(&p).unwrap();
        assert_eq!(h.id(UT_PEX), None, "id 0 means disabled");
        assert_eq!(h.m[1], ("ut_pex".to_string(), 0), "but the entry is kept");
        assert_eq!(h.id(UT_METADATA), Some(3));
        assert_eq!(h.your_ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(h.upload_only);
        handshake_round_trips(&h);
    }

    #[test]
    fn our_handshake_round_trips_canonically() {
        let h = ExtHandshake {
            m: vec![
                (UT_PEX.into(), OUR_UT_PEX),
                (UT_METADATA.into(), OUR_UT_METADATA),
            ],
            client: Some("xorrent 0.1.0".into()),
            listen_port: Some(51413),
            reqq: Some(250),
            your_ip: Some("192.0.2.1".parse().unwrap()),
            metadata_size: Some(123_456),
            upload_only: true,
            encryption: true,
        };
        let out = h.encode();
        assert!(
            out.starts_with(b"d1:ei1e1:md11:ut_metadatai1e6:ut_pexi2ee13:metadata_sizei123456e")
        );
        let back = ExtHandshake::decode(&out).unwrap();
        assert!(back.encryption);
        assert_eq!(back.id(UT_METADATA), Some(OUR_UT_METADATA));
        assert_eq!(back.client, h.client);
        assert_eq!(back.m.len(), 2);
        handshake_round_trips(&ExtHandshake::default());
        handshake_round_trips(&back);
    }

    #[test]
    fn encoding_keeps_the_first_of_duplicate_names() {
        let h = ExtHandshake {
            m: vec![("a".into(), 1), ("a".into(), 2)],
            ..ExtHandshake::default()
        };
        assert_eq!(ExtHandshake::decode(&h.encode()).unwrap().id("a"), Some(1));
    }

    #[test]
    fn wrong_typed_or_out_of_range_handshake_fields_read_as_absent() {
        let h = ExtHandshake::decode(
            b"d1:md1:ai256e1:bi-1e1:c3:xyz1:di5ee13:metadata_sizei-5e1:pi70000e4:reqqi-1e1:vi7e6:yourip3:abce",
        )
        .unwrap();
        assert_eq!(h.m, vec![("d".to_string(), 5)]);
        assert_eq!(h.metadata_size, None);
        assert_eq!(h.listen_port, None);
        assert_eq!(h.reqq, None);
        assert_eq!(h.client, None);
        assert_eq!(h.your_ip, None);
        let h = ExtHandshake::decode(b"d1:mli1ee1:pi0ee").unwrap();
        assert!(h.m.is_empty());
        assert_eq!(h.listen_port, None, "port 0 is no port");
    }

    #[test]
    fn a_handshake_that_is_not_a_dictionary_is_an_error() {
        assert_eq!(ExtHandshake::decode(b"le"), Err(ExtError::NotDict));
        assert_eq!(ExtHandshake::decode(b"i5e"), Err(ExtError::NotDict));
        assert!(matches!(
            ExtHandshake::decode(b""),
            Err(ExtError::Bencode(_))
        ));
        assert!(matches!(
            ExtHandshake::decode(b"d1:pi99999999999999999999ee"),
            Err(ExtError::Bencode(_))
        ));
    }

    #[test]
    fn handshake_lists_and_strings_are_bounded() {
        let mut p = b"d1:md".to_vec();
        for i in 0..200 {
            let name = format!("ext{i:03}");
            encode_bytes(name.as_bytes(), &mut p);
            p.extend_from_slice(b"i1e");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        encode_bytes(long.as_bytes(), &mut p);
        p.extend_from_slice(b"i1ee1:v");
        encode_bytes("v".repeat(MAX_CLIENT_LEN + 1).as_bytes(), &mut p);
        p.push(b'e');
        let h = ExtHandshake::decode(&p).unwrap();
        assert_eq!(h.m.len(), MAX_M_ENTRIES);
        assert_eq!(h.id(&long), None);
        assert_eq!(h.client, None);
    }

    #[test]
    fn a_latin1_client_name_is_repaired_not_dropped() {
        let h = ExtHandshake::decode(b"d1:v9:\xb5Torrent1e").unwrap();
        assert_eq!(h.client.as_deref(), Some("\u{fffd}Torrent1"));
        handshake_round_trips(&h);
    }

    #[test]
    fn hostile_payloads_never_panic() {
        let mut deep = vec![b'l'; 100_000];
        deep.extend(vec![b'e'; 100_000]);
        let mut many = b"d1:ml".to_vec();
        many.extend(b"i1e".repeat(50_000));
        many.extend_from_slice(b"ee");
        let cases: [&[u8]; 9] = [
            &deep,
            &many,
            b"d1:md11:ut_metadatai99999999999999999999eee",
            b"d8:msg_typei1e5:piecei0e10:total_sizei-1ee",
            b"d8:msg_typei1e5:piecei-1e10:total_sizei1ee",
            b"d8:msg_typei0e5:piecei4294967296ee",
            b"d5:added7:\x01\x02\x03\x04\x00\x01\xff7:added.f1:\x02e",
            b"d5:addedi5e7:droppedle8:added6.f3:abce",
            b"d999999999999:x",
        ];
        for c in cases {
            let _ = ExtHandshake::decode(c);
            let _ = MetadataMsg::decode(&Bytes::copy_from_slice(c));
            let _ = PexMsg::decode(c);
        }
        assert!(matches!(
            MetadataMsg::decode(&Bytes::from_static(
                b"d8:msg_typei1e5:piecei0e10:total_sizei-1ee"
            )),
            Err(ExtError::MissingField("total_size"))
        ));
        assert!(matches!(
            MetadataMsg::decode(&Bytes::from_static(b"d8:msg_typei0e5:piecei4294967296ee")),
            Err(ExtError::MissingField("piece"))
        ));
    }

    #[test]
    fn metadata_messages_round_trip() {
        let data = Bytes::from(vec![0xAB; METADATA_PIECE]);
        for m in [
            MetadataMsg::Request { piece: 0 },
            MetadataMsg::Reject { piece: 7 },
            MetadataMsg::Data {
                piece: 3,
                total_size: 3 * METADATA_PIECE as u64 + 10,
                data: Bytes::from_static(b"0123456789"),
            },
            MetadataMsg::Data {
                piece: 0,
                total_size: 40_000,
                data,
            },
        ] {
            let out = Bytes::from(m.encode());
            assert_eq!(MetadataMsg::decode(&out).unwrap(), m);
        }
        assert_eq!(
            MetadataMsg::Request { piece: 1 }.encode(),
            b"d8:msg_typei0e5:piecei1ee"
        );
    }

    #[test]
    fn a_data_message_keeps_bytes_after_its_dictionary_even_when_they_look_like_bencode() {
        let p = Bytes::from_static(b"d8:msg_typei1e5:piecei0e10:total_sizei8eed1:ae1:");
        let MetadataMsg::Data { data, .. } = MetadataMsg::decode(&p).unwrap() else {
            panic!("a data message");
        };
        assert_eq!(&data[..], b"d1:ae1:");
    }

    #[test]
    fn metadata_data_over_16_kib_and_unknown_types_are_errors() {
        let mut p = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        p.extend(vec![0; METADATA_PIECE + 1]);
        assert_eq!(
            MetadataMsg::decode(&Bytes::from(p)),
            Err(ExtError::DataTooLong {
                len: METADATA_PIECE + 1
            })
        );
        assert_eq!(
            MetadataMsg::decode(&Bytes::from_static(b"d8:msg_typei3e5:piecei0ee")),
            Err(ExtError::UnknownMsgType(3))
        );
        assert_eq!(
            MetadataMsg::decode(&Bytes::from_static(b"d5:piecei0ee")),
            Err(ExtError::MissingField("msg_type"))
        );
        assert_eq!(
            MetadataMsg::decode(&Bytes::from_static(b"d8:msg_typei1e5:piecei0ee")),
            Err(ExtError::MissingField("total_size"))
        );
        assert_eq!(
            MetadataMsg::decode(&Bytes::from_static(b"i1e")),
            Err(ExtError::NotDict)
        );
    }

    #[test]
    fn pex_round_trips_both_families_with_flags() {
        let m = PexMsg {
            added: vec![
                ("10.0.0.1:6881".parse().unwrap(), pex_flags::SEED),
                (
                    "10.0.0.2:51413".parse().unwrap(),
                    pex_flags::ENCRYPTION | pex_flags::UTP | pex_flags::REACHABLE,
                ),
                ("[2001:db8::1]:6881".parse().unwrap(), pex_flags::HOLEPUNCH),
            ],
            dropped: vec![
                "10.0.0.3:1".parse().unwrap(),
                "[2001:db8::2]:2".parse().unwrap(),
            ],
        };
        let out = m.encode();
        bencode::decode(&out).expect("canonical bencode");
        assert_eq!(PexMsg::decode(&out).unwrap(), m);
        assert_eq!(PexMsg::default().encode(), b"de");
        assert_eq!(PexMsg::decode(b"de").unwrap(), PexMsg::default());
    }

    #[test]
    fn pex_tolerates_short_flags_ragged_lists_and_port_zero() {
        let mut p = b"d5:added20:".to_vec();
        p.extend_from_slice(&[1, 2, 3, 4, 0x1a, 0xe1]); // 1.2.3.4:6881
        p.extend_from_slice(&[5, 6, 7, 8, 0, 0]); // port 0: dropped
        p.extend_from_slice(&[9, 9, 9, 9, 0, 80]); // beyond the flags
        p.extend_from_slice(&[1, 1]); // ragged tail
        p.extend_from_slice(b"7:added.f2:\x02\x10");
        p.extend_from_slice(b"7:dropped5:12345e");
        let m = PexMsg::decode(&p).unwrap();
        assert_eq!(
            m.added,
            vec![
                ("1.2.3.4:6881".parse().unwrap(), pex_flags::SEED),
                ("9.9.9.9:80".parse().unwrap(), 0),
            ]
        );
        assert!(m.dropped.is_empty());
    }

    #[test]
    fn pex_decoding_is_capped() {
        let mut p = b"d5:added".to_vec();
        encode_bytes(&[7u8; 6 * 1000], &mut p);
        p.extend_from_slice(b"6:added6");
        encode_bytes(&[7u8; 18 * 10], &mut p);
        p.extend_from_slice(b"7:dropped");
        encode_bytes(&[7u8; 6 * 1000], &mut p);
        p.push(b'e');
        let m = PexMsg::decode(&p).unwrap();
        assert_eq!(m.added.len(), PEX_MAX_DECODE);
        assert!(m.added.iter().all(|(a, _)| a.is_ipv4()));
        assert_eq!(m.dropped.len(), PEX_MAX_DECODE);
    }

    #[test]
    fn serves_16_kib_slices_of_the_info_dictionary() {
        let bytes: Vec<u8> = (0..2 * METADATA_PIECE + 7232)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        assert_eq!(metadata_piece(&bytes, 0), Some(&bytes[..METADATA_PIECE]));
        assert_eq!(metadata_piece(&bytes, 2).map(<[u8]>::len), Some(7232));
        assert_eq!(metadata_piece(&bytes, 3), None);
        assert_eq!(metadata_piece(&bytes, u32::MAX), None);
        assert_eq!(metadata_piece(&[], 0), None);
        let exact = vec![0; METADATA_PIECE];
        assert_eq!(
            metadata_piece(&exact, 0).map(<[u8]>::len),
            Some(METADATA_PIECE)
        );
        assert_eq!(metadata_piece(&exact, 1), None);
    }
}
