//! BEP-15 packets, both directions: the client encodes requests and decodes
//! replies, the embedded tracker does the reverse. Pure: bytes in, values out.

use std::net::SocketAddr;

use super::{AnnounceRequest, Event, ScrapeStats};
use crate::compact::{self, Family};
use crate::types::{InfoHash, PeerId};

/// The magic connection id of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

pub const CONNECT: u32 = 0;
pub const ANNOUNCE: u32 = 1;
pub const SCRAPE: u32 = 2;
pub const ERROR: u32 = 3;

/// Info-hashes in one scrape: keeps the request and reply under 1500 bytes.
pub const MAX_SCRAPE_HASHES: usize = 74;
/// Fixed part of an announce request; BEP-41 options may follow.
pub const ANNOUNCE_LEN: usize = 98;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct WireError {
    /// The transaction id, when the packet was long enough to carry one:
    /// a server answers such packets with an error reply.
    pub tid: Option<u32>,
    pub msg: &'static str,
}

fn err(tid: Option<u32>, msg: &'static str) -> WireError {
    WireError { tid, msg }
}

/// An announce as a client sent it; the tracker decides what the fields mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpAnnounce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Option<Event>,
    /// Negative: "tracker's default".
    pub num_want: i32,
    pub key: u32,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Connect {
        tid: u32,
    },
    Announce {
        conn_id: u64,
        tid: u32,
        announce: UdpAnnounce,
    },
    Scrape {
        conn_id: u64,
        tid: u32,
        hashes: Vec<InfoHash>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Connect {
        tid: u32,
        conn_id: u64,
    },
    Announce {
        tid: u32,
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape {
        tid: u32,
        stats: Vec<ScrapeStats>,
    },
    Error {
        tid: u32,
        message: String,
    },
}

impl Reply {
    pub fn tid(&self) -> u32 {
        match self {
            Reply::Connect { tid, .. }
            | Reply::Announce { tid, .. }
            | Reply::Scrape { tid, .. }
            | Reply::Error { tid, .. } => *tid,
        }
    }
}

fn event_code(e: Option<Event>) -> u32 {
    match e {
        None => 0,
        Some(Event::Completed) => 1,
        Some(Event::Started) => 2,
        Some(Event::Stopped) => 3,
    }
}

fn event_from(code: u32) -> Option<Option<Event>> {
    Some(match code {
        0 => None,
        1 => Some(Event::Completed),
        2 => Some(Event::Started),
        3 => Some(Event::Stopped),
        _ => return None,
    })
}

pub fn connect_request(tid: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&CONNECT.to_be_bytes());
    b[12..].copy_from_slice(&tid.to_be_bytes());
    b
}

pub fn announce_request(conn_id: u64, tid: u32, req: &AnnounceRequest) -> [u8; ANNOUNCE_LEN] {
    let mut b = [0u8; ANNOUNCE_LEN];
    b[..8].copy_from_slice(&conn_id.to_be_bytes());
    b[8..12].copy_from_slice(&ANNOUNCE.to_be_bytes());
    b[12..16].copy_from_slice(&tid.to_be_bytes());
    b[16..36].copy_from_slice(&req.info_hash.0);
    b[36..56].copy_from_slice(&req.peer_id.0);
    b[56..64].copy_from_slice(&req.downloaded.to_be_bytes());
    b[64..72].copy_from_slice(&req.left.to_be_bytes());
    b[72..80].copy_from_slice(&req.uploaded.to_be_bytes());
    b[80..84].copy_from_slice(&event_code(req.event).to_be_bytes());
    // 84..88: IP 0, "use the packet's source address".
    b[88..92].copy_from_slice(&req.key.to_be_bytes());
    let num_want = i32::try_from(req.numwant).unwrap_or(i32::MAX);
    b[92..96].copy_from_slice(&num_want.to_be_bytes());
    b[96..98].copy_from_slice(&req.port.to_be_bytes());
    b
}

pub fn scrape_request(conn_id: u64, tid: u32, hashes: &[InfoHash]) -> Vec<u8> {
    let n = hashes.len().min(MAX_SCRAPE_HASHES);
    let mut b = Vec::with_capacity(16 + 20 * n);
    b.extend_from_slice(&conn_id.to_be_bytes());
    b.extend_from_slice(&SCRAPE.to_be_bytes());
    b.extend_from_slice(&tid.to_be_bytes());
    for h in &hashes[..n] {
        b.extend_from_slice(&h.0);
    }
    b
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn array20(b: &[u8]) -> [u8; 20] {
    b[..20].try_into().expect("20 bytes")
}

/// Decodes a client's packet. Trailing bytes after a connect request and
/// BEP-41 options after an announce are ignored.
pub fn decode_request(b: &[u8]) -> Result<Request, WireError> {
    if b.len() < 16 {
        return Err(err(None, "packet shorter than 16 bytes"));
    }
    let conn_id = u64_at(b, 0);
    let action = u32_at(b, 8);
    let tid = u32_at(b, 12);
    match action {
        CONNECT if conn_id != PROTOCOL_ID => Err(err(Some(tid), "wrong protocol id")),
        CONNECT => Ok(Request::Connect { tid }),
        ANNOUNCE => {
            if b.len() < ANNOUNCE_LEN {
                return Err(err(Some(tid), "announce shorter than 98 bytes"));
            }
            let event = event_from(u32_at(b, 80)).ok_or(err(Some(tid), "unknown event"))?;
            Ok(Request::Announce {
                conn_id,
                tid,
                announce: UdpAnnounce {
                    info_hash: InfoHash(array20(&b[16..])),
                    peer_id: PeerId(array20(&b[36..])),
                    downloaded: u64_at(b, 56),
                    left: u64_at(b, 64),
                    uploaded: u64_at(b, 72),
                    event,
                    key: u32_at(b, 88),
                    num_want: u32_at(b, 92) as i32,
                    port: u16::from_be_bytes([b[96], b[97]]),
                },
            })
        }
        SCRAPE => {
            let hashes: Vec<InfoHash> = b[16..]
                .chunks_exact(20)
                .take(MAX_SCRAPE_HASHES)
                .map(|c| InfoHash(array20(c)))
                .collect();
            if hashes.is_empty() {
                return Err(err(Some(tid), "scrape without info-hashes"));
            }
            Ok(Request::Scrape {
                conn_id,
                tid,
                hashes,
            })
        }
        _ => Err(err(Some(tid), "unknown action")),
    }
}

/// Appends a reply. Announce peers of the other address family than the
/// first one are skipped: one reply carries one family (BEP-15).
pub fn encode_reply(r: &Reply, out: &mut Vec<u8>) {
    let head = |out: &mut Vec<u8>, action: u32, tid: u32| {
        out.extend_from_slice(&action.to_be_bytes());
        out.extend_from_slice(&tid.to_be_bytes());
    };
    match r {
        Reply::Connect { tid, conn_id } => {
            head(out, CONNECT, *tid);
            out.extend_from_slice(&conn_id.to_be_bytes());
        }
        Reply::Announce {
            tid,
            interval,
            leechers,
            seeders,
            peers,
        } => {
            head(out, ANNOUNCE, *tid);
            for v in [interval, leechers, seeders] {
                out.extend_from_slice(&v.to_be_bytes());
            }
            let v6 = peers.first().is_some_and(|p| p.is_ipv6());
            for p in peers.iter().filter(|p| p.is_ipv6() == v6) {
                compact::encode_peer(p, out);
            }
        }
        Reply::Scrape { tid, stats } => {
            head(out, SCRAPE, *tid);
            for s in stats {
                for v in [s.seeders, s.completed, s.leechers] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        Reply::Error { tid, message } => {
            head(out, ERROR, *tid);
            out.extend_from_slice(message.as_bytes());
        }
    }
}

/// Decodes a tracker's reply. `v6`: the tracker was reached over IPv6, so
/// announce peers are 18 bytes each.
pub fn decode_reply(b: &[u8], v6: bool) -> Result<Reply, WireError> {
    if b.len() < 8 {
        return Err(err(None, "reply shorter than 8 bytes"));
    }
    let action = u32_at(b, 0);
    let tid = u32_at(b, 4);
    match action {
        CONNECT if b.len() >= 16 => Ok(Reply::Connect {
            tid,
            conn_id: u64_at(b, 8),
        }),
        ANNOUNCE if b.len() >= 20 => {
            let family = if v6 { Family::V6 } else { Family::V4 };
            let peers = compact::decode_peers(&b[20..], family).collect();
            Ok(Reply::Announce {
                tid,
                interval: u32_at(b, 8),
                leechers: u32_at(b, 12),
                seeders: u32_at(b, 16),
                peers,
            })
        }
        SCRAPE => Ok(Reply::Scrape {
            tid,
            stats: b[8..]
                .chunks_exact(12)
                .map(|c| ScrapeStats {
                    seeders: u32_at(c, 0),
                    completed: u32_at(c, 4),
                    leechers: u32_at(c, 8),
                })
                .collect(),
        }),
        ERROR => Ok(Reply::Error {
            tid,
            message: String::from_utf8_lossy(&b[8..]).into_owned(),
        }),
        CONNECT | ANNOUNCE => Err(err(Some(tid), "truncated reply")),
        _ => Err(err(Some(tid), "unknown action")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([7; 20]),
            peer_id: PeerId(*b"-XR0001-abcdefghijkl"),
            port: 51413,
            uploaded: 1 << 40,
            downloaded: 3,
            left: 0,
            event: Some(Event::Completed),
            numwant: 50,
            key: 0xfeed_f00d,
            encryption: crate::mse::Encryption::Prefer,
        }
    }

    #[test]
    fn connect_request_is_the_documented_bytes() {
        let b = connect_request(0x0102_0304);
        assert_eq!(
            b,
            [0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(
            decode_request(&b),
            Ok(Request::Connect { tid: 0x0102_0304 })
        );
    }

    #[test]
    fn announce_round_trips_and_tolerates_options() {
        let mut b = announce_request(99, 5, &req()).to_vec();
        // BEP-41 URL-data option after the fixed part.
        b.extend_from_slice(&[2, 9]);
        b.extend_from_slice(b"/announce");
        let Request::Announce {
            conn_id,
            tid,
            announce: a,
        } = decode_request(&b).unwrap()
        else {
            panic!()
        };
        assert_eq!((conn_id, tid), (99, 5));
        let r = req();
        assert_eq!(a.info_hash, r.info_hash);
        assert_eq!(a.peer_id, r.peer_id);
        assert_eq!((a.uploaded, a.downloaded, a.left), (1 << 40, 3, 0));
        assert_eq!(a.event, Some(Event::Completed));
        assert_eq!((a.num_want, a.key, a.port), (50, 0xfeed_f00d, 51413));
    }

    #[test]
    fn malformed_requests_carry_the_tid_when_known() {
        assert_eq!(decode_request(&[0; 15]).unwrap_err().tid, None);
        let mut c = connect_request(7);
        c[0] = 1;
        assert_eq!(
            decode_request(&c).unwrap_err(),
            err(Some(7), "wrong protocol id")
        );
        let a = announce_request(1, 8, &req());
        assert_eq!(decode_request(&a[..97]).unwrap_err().tid, Some(8));
        let mut bad_event = a;
        bad_event[83] = 9;
        assert_eq!(decode_request(&bad_event).unwrap_err().msg, "unknown event");
        let s = scrape_request(1, 9, &[]);
        assert_eq!(decode_request(&s).unwrap_err().tid, Some(9));
        let mut unknown = connect_request(10);
        unknown[11] = 77;
        assert_eq!(decode_request(&unknown).unwrap_err().msg, "unknown action");
    }

    #[test]
    fn scrape_is_capped() {
        let hashes: Vec<InfoHash> = (0..100u8).map(|i| InfoHash([i; 20])).collect();
        let b = scrape_request(3, 4, &hashes);
        assert_eq!(b.len(), 16 + 20 * MAX_SCRAPE_HASHES);
        let Request::Scrape { hashes: got, .. } = decode_request(&b).unwrap() else {
            panic!()
        };
        assert_eq!(got, hashes[..MAX_SCRAPE_HASHES]);
    }

    #[test]
    fn replies_round_trip_in_both_families() {
        let v4: Vec<SocketAddr> = vec![
            "127.0.0.2:6881".parse().unwrap(),
            "10.1.2.3:1".parse().unwrap(),
        ];
        let v6: Vec<SocketAddr> = vec!["[::1]:6881".parse().unwrap()];
        let replies = [
            (
                Reply::Connect {
                    tid: 1,
                    conn_id: u64::MAX,
                },
                false,
            ),
            (
                Reply::Announce {
                    tid: 2,
                    interval: 1800,
                    leechers: 3,
                    seeders: 4,
                    peers: v4,
                },
                false,
            ),
            (
                Reply::Announce {
                    tid: 2,
                    interval: 60,
                    leechers: 0,
                    seeders: 1,
                    peers: v6,
                },
                true,
            ),
            (
                Reply::Scrape {
                    tid: 3,
                    stats: vec![
                        ScrapeStats {
                            seeders: 1,
                            completed: 2,
                            leechers: 3
                        };
                        2
                    ],
                },
                false,
            ),
            (
                Reply::Error {
                    tid: 4,
                    message: "no such torrent".into(),
                },
                false,
            ),
        ];
        for (r, v6) in replies {
            let mut out = Vec::new();
            encode_reply(&r, &mut out);
            assert_eq!(decode_reply(&out, v6), Ok(r));
        }
        assert!(decode_reply(&[0, 0, 0, 1, 0, 0, 0, 1, 0], false).is_err());
        assert!(decode_reply(&[0; 7], false).is_err());
    }
}
