//! The tracker's UDP front end (BEP-15).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::store::{PeerAnnounce, Store};
use super::Shared;
use crate::compact;
use crate::tracker::udp_wire::{self, Reply, Request, UdpAnnounce};
use crate::types::InfoHash;

/// How long one epoch of connection ids lasts; an id is accepted in its
/// epoch and the next, so for 1–2 minutes (clients use one for 1 minute).
const EPOCH: Duration = Duration::from_secs(60);

/// Connection ids a client cannot forge without seeing our reply: a keyed
/// SipHash of the client's IP and the epoch number, under a random key
/// chosen at start. Nothing is stored per client.
pub struct ConnIds {
    key: RandomState,
    origin: Instant,
}

impl ConnIds {
    pub fn new(origin: Instant) -> ConnIds {
        ConnIds {
            key: RandomState::new(),
            origin,
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_secs() / EPOCH.as_secs()) + 1
    }

    fn id(&self, ip: IpAddr, epoch: u64) -> u64 {
        self.key.hash_one((ip, epoch))
    }

    pub fn issue(&self, ip: IpAddr, now: Instant) -> u64 {
        self.id(ip, self.epoch(now))
    }

    pub fn valid(&self, id: u64, ip: IpAddr, now: Instant) -> bool {
        let e = self.epoch(now);
        id == self.id(ip, e) || id == self.id(ip, e - 1)
    }
}

/// Answers one packet into `out`; false when it is dropped unanswered
/// (too short to carry a transaction id).
pub fn handle_packet(
    store: &std::sync::Mutex<Store>,
    ids: &ConnIds,
    packet: &[u8],
    from: SocketAddr,
    now: Instant,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let ip = from.ip().to_canonical();
    let reply = match udp_wire::decode_request(packet) {
        Err(e) => match e.tid {
            Some(tid) => Reply::Error {
                tid,
                message: e.msg.to_string(),
            },
            None => return false,
        },
        Ok(Request::Connect { tid }) => Reply::Connect {
            tid,
            conn_id: ids.issue(ip, now),
        },
        Ok(Request::Announce { conn_id, tid, .. } | Request::Scrape { conn_id, tid, .. })
            if !ids.valid(conn_id, ip, now) =>
        {
            Reply::Error {
                tid,
                message: "bad connection id".into(),
            }
        }
        Ok(Request::Announce { tid, announce, .. }) => {
            answer_announce(store, tid, &announce, ip, now, out);
            return true;
        }
        Ok(Request::Scrape { tid, hashes, .. }) => scrape_reply(store, tid, &hashes),
    };
    udp_wire::encode_reply(&reply, out);
    true
}

/// Answers an announce into `out`; the peers are written straight from
/// the store's answer, with no `Vec<SocketAddr>` between.
fn answer_announce(
    store: &std::sync::Mutex<Store>,
    tid: u32,
    announce: &UdpAnnounce,
    ip: IpAddr,
    now: Instant,
    out: &mut Vec<u8>,
) {
    let reply = if announce.port == 0 {
        Reply::Error {
            tid,
            message: "port 0".into(),
        }
    } else {
        let a = PeerAnnounce {
            info_hash: announce.info_hash,
            peer_id: announce.peer_id,
            addr: SocketAddr::new(ip, announce.port),
            left: announce.left,
            event: announce.event,
            numwant: u32::try_from(announce.num_want).ok(),
        };
        let mut peers = Vec::new();
        let mut store = store.lock().expect("tracker store lock");
        let interval = u32::try_from(store.config().interval.as_secs()).unwrap_or(u32::MAX);
        match store.announce(&a, Some(ip.is_ipv6()), now, &mut peers) {
            Ok(st) => {
                drop(store);
                for v in [udp_wire::ANNOUNCE, tid, interval, st.leechers, st.seeders] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                for (p, _) in &peers {
                    compact::encode_peer(p, out);
                }
                return;
            }
            Err(e) => Reply::Error {
                tid,
                message: e.to_string(),
            },
        }
    };
    udp_wire::encode_reply(&reply, out);
}

fn scrape_reply(store: &std::sync::Mutex<Store>, tid: u32, hashes: &[InfoHash]) -> Reply {
    let store = store.lock().expect("tracker store lock");
    if let Some(h) = hashes.iter().find(|h| !store.allowed(h)) {
        Reply::Error {
            tid,
            message: format!("torrent {h} not allowed on this tracker"),
        }
    } else {
        Reply::Scrape {
            tid,
            stats: hashes.iter().map(|h| store.scrape(h)).collect(),
        }
    }
}

/// Packets taken per system call: one `recvmmsg` fills up to this many,
/// one `sendmmsg` answers them. Measured: the per-packet cost halves
/// against one `recv_from`/`send_to` pair per packet through tokio.
const BATCH: usize = 32;
/// Requests are ≤ 16 + 74·20 bytes; anything longer is cut and answered
/// as whatever its head says.
const PACKET: usize = 2048;
/// How often a blocked receive looks at the cancel token.
const POLL: Duration = Duration::from_millis(200);

/// Serves packets on `sock` until `cancel`, on the calling (blocking)
/// thread; several threads may share the socket.
pub fn serve_blocking(sock: &std::net::UdpSocket, shared: &Shared, cancel: &CancellationToken) {
    use std::os::fd::AsRawFd;
    if let Err(e) = sock.set_read_timeout(Some(POLL)) {
        tracing::error!("UDP tracker socket: {e}");
        return;
    }
    let fd = sock.as_raw_fd();
    let mut batch = Batch::new();
    while !cancel.is_cancelled() {
        let Some(got) = batch.receive(fd) else {
            continue;
        };
        let replies = batch.answer(got, shared);
        batch.send(fd, replies);
    }
}

/// The buffers and `mmsghdr`s of one `recvmmsg`/`sendmmsg` round. The
/// headers point into the struct itself, so they are filled again before
/// each call and the struct is not moved in between.
struct Batch {
    bufs: Vec<[u8; PACKET]>,
    outs: Vec<Vec<u8>>,
    names: [libc::sockaddr_storage; BATCH],
    iov: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    out_iov: [libc::iovec; BATCH],
    out_hdrs: [libc::mmsghdr; BATCH],
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: vec![[0u8; PACKET]; BATCH],
            outs: (0..BATCH).map(|_| Vec::with_capacity(PACKET)).collect(),
            // SAFETY: all-zero bytes are valid values of these plain C structs.
            names: unsafe { std::mem::zeroed() },
            iov: unsafe { std::mem::zeroed() },
            hdrs: unsafe { std::mem::zeroed() },
            out_iov: unsafe { std::mem::zeroed() },
            out_hdrs: unsafe { std::mem::zeroed() },
        }
    }

    /// Waits (up to [`POLL`]) for packets; how many came, or `None` on a
    /// timeout or error.
    fn receive(&mut self, fd: std::os::fd::RawFd) -> Option<usize> {
        for i in 0..BATCH {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: PACKET,
            };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen =
                libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_storage>())
                    .expect("128 bytes");
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes
        // owned by this batch; the kernel writes at most those lengths.
        let got = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                libc::c_uint::try_from(BATCH).expect("a small batch"),
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) {
                // ICMP errors from earlier replies surface here; not fatal.
                tracing::debug!("UDP tracker receive: {e}");
            }
            return None;
        }
        Some(got as usize)
    }

    /// Answers the `got` packets received; the replies fill the first
    /// send headers, and their count is returned.
    fn answer(&mut self, got: usize, shared: &Shared) -> usize {
        let now = (shared.clock)();
        let mut replies = 0;
        for i in 0..got {
            let len = (self.hdrs[i].msg_len as usize).min(PACKET);
            let Some(from) = to_socket_addr(&self.names[i]) else {
                continue;
            };
            let answered = handle_packet(
                &shared.store,
                &shared.ids,
                &self.bufs[i][..len],
                from,
                now,
                &mut self.outs[i],
            );
            shared
                .counters
                .udp_packet(answered && is_announce(&self.outs[i]));
            if !answered {
                continue;
            }
            self.out_iov[replies] = libc::iovec {
                iov_base: self.outs[i].as_mut_ptr().cast(),
                iov_len: self.outs[i].len(),
            };
            let h = &mut self.out_hdrs[replies].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = self.hdrs[i].msg_hdr.msg_namelen;
            h.msg_iov = &mut self.out_iov[replies];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            replies += 1;
        }
        replies
    }

    /// Sends the first `replies` answers.
    fn send(&mut self, fd: std::os::fd::RawFd, replies: usize) {
        let mut sent = 0;
        while sent < replies {
            // SAFETY: headers 0..replies point at the reply buffers and
            // source addresses filled by `answer`, untouched since.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.out_hdrs[sent..].as_mut_ptr(),
                    libc::c_uint::try_from(replies - sent).expect("at most BATCH"),
                    0,
                )
            };
            if n <= 0 {
                // One unsendable reply (e.g. EPERM, ICMP error) must not
                // block the rest: skip it.
                tracing::debug!("UDP tracker send: {}", std::io::Error::last_os_error());
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
    }
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

fn is_announce(reply: &[u8]) -> bool {
    reply.get(..4) == Some(&udp_wire::ANNOUNCE.to_be_bytes()[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::server::store::StoreConfig;
    use crate::tracker::{AnnounceRequest, Event, ScrapeStats};
    use crate::types::{InfoHash, PeerId};
    use std::sync::Mutex;

    fn ask(
        store: &Mutex<Store>,
        ids: &ConnIds,
        p: &[u8],
        from: &str,
        now: Instant,
    ) -> Option<Reply> {
        let mut out = Vec::new();
        let from: SocketAddr = from.parse().unwrap();
        handle_packet(store, ids, p, from, now, &mut out)
            .then(|| udp_wire::decode_reply(&out, from.ip().to_canonical().is_ipv6()).unwrap())
    }

    fn announce(port: u16, left: u64) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([5; 20]),
            peer_id: PeerId([port.to_le_bytes()[0]; 20]),
            port,
            uploaded: 0,
            downloaded: 0,
            left,
            event: Some(Event::Started),
            numwant: 50,
            key: 0,
            encryption: crate::mse::Encryption::Prefer,
        }
    }

    #[test]
    fn connection_ids_are_bound_to_ip_and_expire() {
        let t0 = Instant::now();
        let ids = ConnIds::new(t0);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let id = ids.issue(ip, t0);
        assert!(ids.valid(id, ip, t0 + Duration::from_secs(119)));
        assert!(!ids.valid(id, ip, t0 + Duration::from_secs(120)));
        assert!(!ids.valid(id, "127.0.0.3".parse().unwrap(), t0));
        assert!(!ids.valid(id ^ 1, ip, t0));
        // Another tracker instance (another key) does not accept it.
        assert!(!ConnIds::new(t0).valid(id, ip, t0));
    }

    #[test]
    fn connect_announce_scrape() {
        let store = Mutex::new(Store::new(StoreConfig::default()));
        let t = Instant::now();
        let ids = ConnIds::new(t);
        let Some(Reply::Connect { tid: 1, conn_id }) = ask(
            &store,
            &ids,
            &udp_wire::connect_request(1),
            "127.0.0.2:9",
            t,
        ) else {
            panic!()
        };
        let p = udp_wire::announce_request(conn_id, 2, &announce(6881, 0));
        let r = ask(&store, &ids, &p, "127.0.0.2:9", t).unwrap();
        assert!(
            matches!(r, Reply::Announce { tid: 2, seeders: 1, leechers: 0, ref peers, .. } if peers.is_empty())
        );
        // The same id from another IP is refused.
        let p = udp_wire::announce_request(conn_id, 3, &announce(6882, 5));
        let r = ask(&store, &ids, &p, "127.0.0.3:9", t).unwrap();
        assert!(matches!(r, Reply::Error { tid: 3, .. }));
        let Some(Reply::Connect { conn_id: id3, .. }) = ask(
            &store,
            &ids,
            &udp_wire::connect_request(4),
            "127.0.0.3:9",
            t,
        ) else {
            panic!()
        };
        let p = udp_wire::announce_request(id3, 5, &announce(6882, 5));
        let Some(Reply::Announce {
            peers,
            seeders: 1,
            leechers: 1,
            ..
        }) = ask(&store, &ids, &p, "127.0.0.3:9", t)
        else {
            panic!()
        };
        assert_eq!(peers, vec!["127.0.0.2:6881".parse().unwrap()]);
        let s = udp_wire::scrape_request(id3, 6, &[InfoHash([5; 20]), InfoHash([6; 20])]);
        let Some(Reply::Scrape { stats, .. }) = ask(&store, &ids, &s, "127.0.0.3:9", t) else {
            panic!()
        };
        assert_eq!(
            stats,
            [
                ScrapeStats {
                    seeders: 1,
                    completed: 0,
                    leechers: 1
                },
                ScrapeStats::default()
            ]
        );
        // IPv4-mapped source addresses count as IPv4.
        let Some(Reply::Connect { conn_id: m, .. }) = ask(
            &store,
            &ids,
            &udp_wire::connect_request(7),
            "[::ffff:127.0.0.3]:9",
            t,
        ) else {
            panic!()
        };
        assert_eq!(m, id3);
    }

    #[test]
    fn malformed_packets_get_errors_or_are_dropped() {
        let store = Mutex::new(Store::new(StoreConfig::default()));
        let t = Instant::now();
        let ids = ConnIds::new(t);
        assert_eq!(ask(&store, &ids, &[1, 2, 3], "127.0.0.2:9", t), None);
        let mut c = udp_wire::connect_request(8);
        c[3] ^= 0xff;
        assert!(matches!(
            ask(&store, &ids, &c, "127.0.0.2:9", t),
            Some(Reply::Error { tid: 8, .. })
        ));
        let id = ids.issue("127.0.0.2".parse().unwrap(), t);
        let mut p = udp_wire::announce_request(id, 9, &announce(0, 1));
        assert!(matches!(
            ask(&store, &ids, &p, "127.0.0.2:9", t),
            Some(Reply::Error { tid: 9, .. })
        ));
        p[96..98].copy_from_slice(&1u16.to_be_bytes());
        // Huge num_want is capped.
        p[92..96].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            ask(&store, &ids, &p, "127.0.0.2:9", t),
            Some(Reply::Announce { .. })
        ));
        assert!(matches!(
            ask(&store, &ids, &p[..60], "127.0.0.2:9", t),
            Some(Reply::Error { tid: 9, .. })
        ));
    }
}
