//! The storage side of BEP-5: write tokens bound to the querier's IP and
//! the peers announced to us, with expiry and caps. Sans-IO, time injected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use sha1::{Digest, Sha1};

use crate::types::InfoHash;

/// The token secret changes this often; a token is accepted under the
/// current and the previous secret, so for 5–10 minutes.
pub(crate) const SECRET_LIFE: Duration = Duration::from_secs(5 * 60);
/// An announced peer is kept this long.
pub(crate) const PEER_LIFE: Duration = Duration::from_secs(30 * 60);
const TOKEN_LEN: usize = 8;

pub(crate) struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated: Instant,
}

impl Tokens {
    pub(crate) fn new(now: Instant) -> Tokens {
        Tokens {
            current: rand::random(),
            previous: rand::random(),
            rotated: now,
        }
    }

    fn rotate(&mut self, now: Instant) {
        while now.saturating_duration_since(self.rotated) >= SECRET_LIFE {
            self.previous = self.current;
            self.current = rand::random();
            self.rotated += SECRET_LIFE;
            // After a long sleep both secrets are stale: start afresh.
            if now.saturating_duration_since(self.rotated) >= SECRET_LIFE {
                self.previous = rand::random();
                self.rotated = now;
            }
        }
    }

    fn make(secret: &[u8; 16], ip: IpAddr) -> [u8; TOKEN_LEN] {
        let mut h = Sha1::new();
        h.update(secret);
        match ip.to_canonical() {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.finalize()[..TOKEN_LEN].try_into().expect("8 bytes")
    }

    pub(crate) fn issue(&mut self, ip: IpAddr, now: Instant) -> Vec<u8> {
        self.rotate(now);
        Self::make(&self.current, ip).to_vec()
    }

    pub(crate) fn valid(&mut self, token: &[u8], ip: IpAddr, now: Instant) -> bool {
        self.rotate(now);
        token == Self::make(&self.current, ip) || token == Self::make(&self.previous, ip)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct StoreLimits {
    pub per_torrent: usize,
    pub torrents: usize,
    pub total: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            per_torrent: 500,
            torrents: 10_000,
            total: 100_000,
        }
    }
}

/// Peers announced to us, per info-hash.
pub(crate) struct PeerStore {
    limits: StoreLimits,
    peers: HashMap<InfoHash, Vec<(SocketAddr, Instant)>>,
    total: usize,
}

impl PeerStore {
    pub(crate) fn new(limits: StoreLimits) -> PeerStore {
        PeerStore {
            limits,
            peers: HashMap::new(),
            total: 0,
        }
    }

    /// Records an announce; false when a cap refused it.
    pub(crate) fn announce(&mut self, ih: InfoHash, peer: SocketAddr, now: Instant) -> bool {
        let expires = now + PEER_LIFE;
        if let Some(list) = self.peers.get_mut(&ih) {
            if let Some(e) = list.iter_mut().find(|(a, _)| *a == peer) {
                e.1 = expires;
                return true;
            }
            if list.len() >= self.limits.per_torrent || self.total >= self.limits.total {
                return false;
            }
            list.push((peer, expires));
        } else {
            if self.peers.len() >= self.limits.torrents || self.total >= self.limits.total {
                return false;
            }
            self.peers.insert(ih, vec![(peer, expires)]);
        }
        self.total += 1;
        true
    }

    /// Up to `n` live peers for `ih`, in random order.
    pub(crate) fn get(&self, ih: &InfoHash, n: usize, now: Instant) -> Vec<SocketAddr> {
        let Some(list) = self.peers.get(ih) else {
            return Vec::new();
        };
        let live: Vec<SocketAddr> = list
            .iter()
            .filter(|(_, exp)| *exp > now)
            .map(|(a, _)| *a)
            .collect();
        live.choose_multiple(&mut rand::thread_rng(), n)
            .copied()
            .collect()
    }

    /// Drops expired peers and empty torrents.
    pub(crate) fn expire(&mut self, now: Instant) {
        let mut dropped = 0;
        self.peers.retain(|_, list| {
            let before = list.len();
            list.retain(|(_, exp)| *exp > now);
            dropped += before - list.len();
            !list.is_empty()
        });
        self.total -= dropped;
    }

    /// (torrents, peers) stored.
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.peers.len(), self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_ip_and_expire() {
        let t0 = Instant::now();
        let mut tk = Tokens::new(t0);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let tok = tk.issue(ip, t0);
        assert!(tk.valid(&tok, ip, t0 + Duration::from_secs(299)));
        assert!(!tk.valid(&tok, "127.0.0.3".parse().unwrap(), t0));
        // Under the previous secret: still good at 9 minutes.
        assert!(tk.valid(&tok, ip, t0 + Duration::from_secs(9 * 60)));
        assert!(!tk.valid(&tok, ip, t0 + Duration::from_secs(10 * 60)));
        // An IPv4-mapped address is the same IP.
        let tok = tk.issue(ip, t0 + Duration::from_secs(10 * 60));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert!(tk.valid(&tok, mapped, t0 + Duration::from_secs(10 * 60)));
        // After a long sleep old tokens are refused at once.
        assert!(!tk.valid(&tok, ip, t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn peers_expire_and_caps_hold() {
        let t0 = Instant::now();
        let mut s = PeerStore::new(StoreLimits {
            per_torrent: 2,
            torrents: 2,
            total: 3,
        });
        let a = InfoHash([1; 20]);
        let p = |port: u16| SocketAddr::from(([127, 0, 0, 2], port));
        assert!(s.announce(a, p(1), t0));
        assert!(s.announce(a, p(2), t0 + Duration::from_secs(600)));
        assert!(!s.announce(a, p(3), t0), "per-torrent cap");
        assert!(s.announce(a, p(1), t0 + Duration::from_secs(60)), "refresh");
        assert!(s.announce(InfoHash([2; 20]), p(1), t0));
        assert!(!s.announce(InfoHash([3; 20]), p(1), t0), "torrent cap");
        assert_eq!(s.size(), (2, 3));
        let mut got = s.get(&a, 10, t0 + PEER_LIFE + Duration::from_secs(61));
        got.sort();
        assert_eq!(got, [p(2)], "p(1) expired at 31 min");
        s.expire(t0 + PEER_LIFE + Duration::from_secs(61));
        assert_eq!(s.size(), (1, 1));
        assert_eq!(s.get(&a, 1, t0).len(), 1);
    }
}
