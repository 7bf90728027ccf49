//! UDP tracker client (BEP-15): connect, announce and scrape over one
//! connected socket per tracker, with the connection id reused for a minute
//! and requests re-sent after base·2ⁿ (n ≤ retries).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::udp_wire::{self, Reply};
use super::{AnnounceRequest, AnnounceResponse, ScrapeStats, TrackerError};
use crate::types::InfoHash;

/// How long a connection id is used (BEP-15: one minute).
const CONN_ID_LIFE: Duration = Duration::from_secs(60);
/// Trackers whose sockets are kept; more than a torrent names in practice.
const MAX_TRACKERS: usize = 64;
const RECV_BUF: usize = 16 * 1024;

/// Retransmission schedule: wait `base`, then 2·base, 4·base ...
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpConfig {
    pub base: Duration,
    pub retries: u32,
}

impl Default for UdpConfig {
    fn default() -> Self {
        // BEP-15 says 15·2ⁿ up to n = 8 (over an hour); a CLI user waits
        // 15 + 30 s at most by default.
        UdpConfig {
            base: Duration::from_secs(15),
            retries: 1,
        }
    }
}

struct Conn {
    sock: UdpSocket,
    v6: bool,
    id: Option<(u64, Instant)>,
}

/// The UDP trackers one announcer or scrape talks to.
pub(crate) struct UdpClient {
    bind: Option<IpAddr>,
    cfg: UdpConfig,
    conns: HashMap<String, Conn>,
}

/// `udp://host:port[/path]` → `host:port`.
fn authority(url: &str) -> Result<(String, u16), TrackerError> {
    let bad = || TrackerError::Unsupported(url.to_string());
    let u = url::Url::parse(url).map_err(|_| bad())?;
    if u.scheme() != "udp" {
        return Err(bad());
    }
    let port = u.port().ok_or_else(bad)?;
    let host = match u.host().ok_or_else(bad)? {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => ip.to_string(),
    };
    Ok((host, port))
}

impl UdpClient {
    pub(crate) fn new(bind: Option<IpAddr>, cfg: UdpConfig) -> UdpClient {
        UdpClient {
            bind,
            cfg,
            conns: HashMap::new(),
        }
    }

    pub(crate) async fn announce(
        &mut self,
        url: &str,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        let reply = self
            .transact(url, |id, tid| {
                udp_wire::announce_request(id, tid, req).to_vec()
            })
            .await?;
        match reply {
            Reply::Announce {
                interval,
                leechers,
                seeders,
                mut peers,
                ..
            } => {
                peers.truncate(super::http::MAX_PEERS);
                Ok(AnnounceResponse {
                    interval: Duration::from_secs(u64::from(interval.clamp(1, 86_400))),
                    min_interval: None,
                    peers,
                    warning: None,
                    seeders: Some(seeders),
                    leechers: Some(leechers),
                })
            }
            _ => Err(TrackerError::Malformed(
                "tracker answered an announce with another action".into(),
            )),
        }
    }

    /// Stats in the order of `hashes` (at most 74 of them).
    pub(crate) async fn scrape(
        &mut self,
        url: &str,
        hashes: &[InfoHash],
    ) -> Result<Vec<ScrapeStats>, TrackerError> {
        let reply = self
            .transact(url, |id, tid| udp_wire::scrape_request(id, tid, hashes))
            .await?;
        match reply {
            Reply::Scrape { stats, .. }
                if stats.len() >= hashes.len().min(udp_wire::MAX_SCRAPE_HASHES) =>
            {
                Ok(stats)
            }
            Reply::Scrape { .. } => Err(TrackerError::Malformed(
                "scrape reply lists fewer torrents than asked".into(),
            )),
            _ => Err(TrackerError::Malformed(
                "tracker answered a scrape with another action".into(),
            )),
        }
    }

    async fn conn(&mut self, url: &str) -> Result<&mut Conn, TrackerError> {
        let (host, port) = authority(url)?;
        let key = format!("{host}:{port}");
        if !self.conns.contains_key(&key) {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let target = addrs
                .into_iter()
                .find(|a| self.bind.is_none_or(|b| b.is_ipv4() == a.is_ipv4()))
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        format!("{host} has no usable address"),
                    )
                })?;
            let local = match (self.bind, target) {
                (Some(ip), _) => SocketAddr::new(ip, 0),
                (None, SocketAddr::V4(_)) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                (None, SocketAddr::V6(_)) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let sock = UdpSocket::bind(local).await?;
            // Connected: an ICMP "port unreachable" fails the request at once.
            sock.connect(target).await?;
            if self.conns.len() >= MAX_TRACKERS {
                self.conns.clear();
            }
            self.conns.insert(
                key.clone(),
                Conn {
                    sock,
                    v6: target.is_ipv6(),
                    id: None,
                },
            );
        }
        Ok(self.conns.get_mut(&key).expect("inserted above"))
    }

    /// Gets a connection id if needed, then sends `build(id, tid)` until a
    /// reply with its transaction id arrives or the retries run out.
    async fn transact(
        &mut self,
        url: &str,
        build: impl Fn(u64, u32) -> Vec<u8>,
    ) -> Result<Reply, TrackerError> {
        let cfg = self.cfg;
        let conn = self.conn(url).await?;
        let mut buf = vec![0u8; RECV_BUF];
        let mut n = 0u32;
        // Whether the id in use was obtained during this call.
        let mut fresh_id = false;
        loop {
            let wait = cfg.base.saturating_mul(1 << n.min(8));
            let fresh = conn.id.filter(|(_, at)| at.elapsed() < CONN_ID_LIFE);
            let (packet, connecting) = match fresh {
                Some((id, _)) => (build(id, rand::random()), false),
                None => (udp_wire::connect_request(rand::random()).to_vec(), true),
            };
            let tid = u32::from_be_bytes(packet[12..16].try_into().expect("16-byte header"));
            conn.sock.send(&packet).await?;
            match tokio::time::timeout(wait, recv_reply(conn, tid, &mut buf)).await {
                Ok(Ok(Reply::Connect { conn_id, .. })) if connecting => {
                    conn.id = Some((conn_id, Instant::now()));
                    fresh_id = true;
                    // A connect that was answered does not use up a retry.
                }
                Ok(Ok(Reply::Error { message, .. })) => {
                    // The tracker may have forgotten an id we still hold
                    // (restarted, shorter lifetime): once, get a fresh one.
                    let cached = conn.id.is_some() && !fresh_id;
                    conn.id = None;
                    if cached && !connecting {
                        fresh_id = true;
                        continue;
                    }
                    return Err(TrackerError::Failure(message));
                }
                Ok(Ok(Reply::Connect { .. })) => {
                    return Err(TrackerError::Malformed(
                        "tracker answered with a connect reply".into(),
                    ))
                }
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    conn.id = None;
                    n += 1;
                    if n > cfg.retries {
                        return Err(TrackerError::Timeout);
                    }
                    tracing::debug!(url, attempt = n, "UDP tracker silent; re-sending");
                }
            }
        }
    }
}

/// The next reply with transaction id `tid`; others (late answers to
/// earlier attempts, garbage) are skipped.
async fn recv_reply(conn: &Conn, tid: u32, buf: &mut [u8]) -> Result<Reply, TrackerError> {
    loop {
        let n = conn.sock.recv(buf).await?;
        match udp_wire::decode_reply(&buf[..n], conn.v6) {
            Ok(r) if r.tid() == tid => return Ok(r),
            Ok(_) => {}
            Err(e) => tracing::debug!("ignoring malformed UDP tracker reply: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Event;
    use crate::types::PeerId;
    use udp_wire::Request;

    #[test]
    fn parses_udp_urls() {
        assert_eq!(
            authority("udp://tracker.example.org:1337/announce").unwrap(),
            ("tracker.example.org".into(), 1337)
        );
        assert_eq!(authority("udp://[::1]:80").unwrap(), ("::1".into(), 80));
        assert!(authority("udp://host-without-port/announce").is_err());
        assert!(authority("http://a:1/announce").is_err());
    }

    fn request() -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([2; 20]),
            port: 6881,
            uploaded: 0,
            downloaded: 0,
            left: 10,
            event: Some(Event::Started),
            numwant: 10,
            key: 1,
            encryption: crate::mse::Encryption::Prefer,
        }
    }

    /// A scripted tracker: drops the first `drop` packets, then answers.
    async fn fake_tracker(sock: UdpSocket, drop: usize) -> Vec<Request> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        let mut count = 0;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(1500), sock.recv_from(&mut buf)).await
        {
            let req = udp_wire::decode_request(&buf[..n]).unwrap();
            seen.push(req.clone());
            count += 1;
            if count <= drop {
                continue;
            }
            let reply = match req {
                Request::Connect { tid } => Reply::Connect { tid, conn_id: 42 },
                Request::Announce { tid, conn_id, .. } => {
                    assert_eq!(conn_id, 42);
                    Reply::Announce {
                        tid,
                        interval: 900,
                        leechers: 2,
                        seeders: 1,
                        peers: vec!["127.0.0.9:7000".parse().unwrap()],
                    }
                }
                Request::Scrape { tid, hashes, .. } => Reply::Scrape {
                    tid,
                    stats: vec![
                        ScrapeStats {
                            seeders: 5,
                            completed: 6,
                            leechers: 7
                        };
                        hashes.len()
                    ],
                },
            };
            let mut out = Vec::new();
            // A stale reply first: the client must skip it.
            udp_wire::encode_reply(
                &Reply::Error {
                    tid: reply.tid() ^ 1,
                    message: "stale".into(),
                },
                &mut out,
            );
            sock.send_to(&out, from).await.unwrap();
            out.clear();
            udp_wire::encode_reply(&reply, &mut out);
            sock.send_to(&out, from).await.unwrap();
        }
        seen
    }

    #[tokio::test]
    async fn retransmits_then_reuses_the_connection_id() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}/announce", sock.local_addr().unwrap());
        let server = tokio::spawn(fake_tracker(sock, 1));
        let mut c = UdpClient::new(
            None,
            UdpConfig {
                base: Duration::from_millis(200),
                retries: 2,
            },
        );
        let r = c.announce(&url, &request()).await.unwrap();
        assert_eq!(r.peers, vec!["127.0.0.9:7000".parse().unwrap()]);
        assert_eq!((r.seeders, r.leechers), (Some(1), Some(2)));
        assert_eq!(r.interval, Duration::from_secs(900));
        let s = c.scrape(&url, &[InfoHash([1; 20])]).await.unwrap();
        assert_eq!(
            s,
            vec![ScrapeStats {
                seeders: 5,
                completed: 6,
                leechers: 7
            }]
        );
        let seen = server.await.unwrap();
        // Dropped connect, connect, announce, scrape (id reused: no connect).
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(matches!(seen[0], Request::Connect { .. }));
        assert!(matches!(seen[1], Request::Connect { .. }));
        assert!(matches!(seen[2], Request::Announce { .. }));
        assert!(matches!(seen[3], Request::Scrape { .. }));
    }

    #[tokio::test]
    async fn gives_up_after_the_retries() {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let url = format!("udp://{}", sock.local_addr().unwrap());
        let server = tokio::spawn(fake_tracker(sock, usize::MAX));
        let mut c = UdpClient::new(
            None,
            UdpConfig {
                base: Duration::from_millis(50),
                retries: 2,
            },
        );
        let start = Instant::now();
        assert!(matches!(
            c.announce(&url, &request()).await,
            Err(TrackerError::Timeout)
        ));
        // 50 + 100 + 200 ms.
        assert!(start.elapsed() >= Duration::from_millis(350));
        assert_eq!(server.await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_closed_port_fails_fast() {
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let mut c = UdpClient::new(None, UdpConfig::default());
        let start = Instant::now();
        let r = c
            .announce(&format!("udp://127.0.0.1:{port}"), &request())
            .await;
        assert!(matches!(r, Err(TrackerError::Net(_))), "{r:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
