//! The tracker's swarms: who announced what, counts for scrape, expiry.
//! Sans-IO: every call takes the time, so tests drive expiry directly.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::tracker::{Event, ScrapeStats};
use crate::types::{InfoHash, PeerId};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Re-announce interval told to clients.
    pub interval: Duration,
    /// A peer not heard from for this long is dropped.
    pub peer_ttl: Duration,
    /// Peers returned when the client does not say.
    pub default_numwant: u32,
    /// Most peers returned, whatever the client asks.
    pub max_numwant: u32,
    pub max_swarms: usize,
    pub max_peers_per_swarm: usize,
    pub max_peers: usize,
    /// Only these torrents are tracked, when set.
    pub allow: Option<HashSet<InfoHash>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            interval: Duration::from_secs(1800),
            peer_ttl: Duration::from_secs(3600),
            default_numwant: 50,
            max_numwant: 200,
            max_swarms: 100_000,
            max_peers_per_swarm: 20_000,
            // About 100 bytes each: ~100 MB at the cap.
            max_peers: 1_000_000,
            allow: None,
        }
    }
}

/// One announce, already validated by the HTTP or UDP front end.
#[derive(Debug, Clone)]
pub struct PeerAnnounce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    /// Source IP of the request and the port the client gave.
    pub addr: SocketAddr,
    pub left: u64,
    pub event: Option<Event>,
    pub numwant: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("torrent not allowed on this tracker")]
    NotAllowed,
    #[error("tracker is full")]
    Full,
}

#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    peer_id: PeerId,
    seeder: bool,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Swarm {
    /// Dense, so a random window of peers costs O(numwant).
    peers: Vec<Peer>,
    index: HashMap<SocketAddr, usize>,
    seeders: u32,
    completed: u32,
    last_seen: Option<Instant>,
}

impl Swarm {
    /// Up to `want` live peers for `client` into `out`, from a random
    /// start: never the client itself, only one address family when `v6`
    /// says so. A seeder gets the leechers first, then other seeders, as
    /// opentracker does: aria2 announces left=0 while it still fetches a
    /// magnet's metadata, and needs a seeder for that.
    fn sample(
        &self,
        client: SocketAddr,
        seeder: bool,
        want: usize,
        v6: Option<bool>,
        now: Instant,
        out: &mut Vec<(SocketAddr, PeerId)>,
    ) {
        let n = self.peers.len();
        if want == 0 || n == 0 {
            return;
        }
        let start = rand::thread_rng().gen_range(0..n);
        let passes: &[Option<bool>] = if seeder {
            &[Some(false), Some(true)]
        } else {
            &[None]
        };
        for only in passes {
            for i in 0..n {
                let p = &self.peers[(start + i) % n];
                if p.addr == client
                    || p.expires <= now
                    || only.is_some_and(|s| p.seeder != s)
                    || v6.is_some_and(|v6| p.addr.is_ipv6() != v6)
                {
                    continue;
                }
                out.push((p.addr, p.peer_id));
                if out.len() == want {
                    return;
                }
            }
        }
    }

    fn stats(&self) -> ScrapeStats {
        ScrapeStats {
            seeders: self.seeders,
            completed: self.completed,
            leechers: u32::try_from(self.peers.len() - self.seeders as usize).unwrap_or(u32::MAX),
        }
    }

    fn remove(&mut self, i: usize) {
        let p = self.peers.swap_remove(i);
        self.index.remove(&p.addr);
        if let Some(moved) = self.peers.get(i) {
            self.index.insert(moved.addr, i);
        }
        if p.seeder {
            self.seeders -= 1;
        }
    }
}

pub struct Store {
    cfg: StoreConfig,
    swarms: HashMap<InfoHash, Swarm>,
    peers: usize,
}

impl Store {
    pub fn new(cfg: StoreConfig) -> Store {
        Store {
            cfg,
            swarms: HashMap::new(),
            peers: 0,
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// (swarms, peers) tracked.
    pub fn size(&self) -> (usize, usize) {
        (self.swarms.len(), self.peers)
    }

    /// Records the announce and fills `out` with peers for the client:
    /// a random window of the swarm, never the client itself, leechers
    /// first for a seeder, and (with `v6 = Some(..)`) one address family
    /// only.
    pub fn announce(
        &mut self,
        a: &PeerAnnounce,
        v6: Option<bool>,
        now: Instant,
        out: &mut Vec<(SocketAddr, PeerId)>,
    ) -> Result<ScrapeStats, Refusal> {
        out.clear();
        if let Some(allow) = &self.cfg.allow {
            if !allow.contains(&a.info_hash) {
                return Err(Refusal::NotAllowed);
            }
        }
        if !self.swarms.contains_key(&a.info_hash) {
            if a.event == Some(Event::Stopped) {
                return Ok(ScrapeStats::default());
            }
            if self.swarms.len() >= self.cfg.max_swarms {
                return Err(Refusal::Full);
            }
        }
        let swarm = self.swarms.entry(a.info_hash).or_default();
        swarm.last_seen = Some(now);
        let seeder = a.left == 0;
        let known = swarm.index.get(&a.addr).copied();
        if a.event == Some(Event::Stopped) {
            if let Some(i) = known {
                swarm.remove(i);
                self.peers -= 1;
            }
            return Ok(swarm.stats());
        }
        let expires = now + self.cfg.peer_ttl;
        let was_seeder = match known {
            Some(i) => {
                let p = &mut swarm.peers[i];
                let was = p.seeder;
                p.peer_id = a.peer_id;
                p.expires = expires;
                p.seeder = seeder;
                match (was, seeder) {
                    (false, true) => swarm.seeders += 1,
                    (true, false) => swarm.seeders -= 1,
                    _ => {}
                }
                was
            }
            None => {
                // At a cap the client still gets peers, it is just not listed.
                if swarm.peers.len() < self.cfg.max_peers_per_swarm
                    && self.peers < self.cfg.max_peers
                {
                    swarm.index.insert(a.addr, swarm.peers.len());
                    swarm.peers.push(Peer {
                        addr: a.addr,
                        peer_id: a.peer_id,
                        seeder,
                        expires,
                    });
                    self.peers += 1;
                    if seeder {
                        swarm.seeders += 1;
                    }
                }
                false
            }
        };
        if a.event == Some(Event::Completed) && !was_seeder {
            swarm.completed = swarm.completed.saturating_add(1);
        }
        let want = a
            .numwant
            .unwrap_or(self.cfg.default_numwant)
            .min(self.cfg.max_numwant) as usize;
        swarm.sample(a.addr, seeder, want, v6, now, out);
        Ok(swarm.stats())
    }

    /// Counts for one torrent; zeros when it is not tracked.
    pub fn scrape(&self, ih: &InfoHash) -> ScrapeStats {
        self.swarms.get(ih).map(Swarm::stats).unwrap_or_default()
    }

    /// Whether scrapes of `ih` are answered at all.
    pub fn allowed(&self, ih: &InfoHash) -> bool {
        self.cfg.allow.as_ref().is_none_or(|a| a.contains(ih))
    }

    /// Drops peers past their time, and swarms empty for a whole TTL.
    /// Returns the number of peers dropped.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let ttl = self.cfg.peer_ttl;
        let mut dropped = 0;
        self.swarms.retain(|_, s| {
            let mut i = 0;
            while i < s.peers.len() {
                if s.peers[i].expires <= now {
                    s.remove(i);
                    dropped += 1;
                } else {
                    i += 1;
                }
            }
            !s.peers.is_empty() || s.last_seen.is_some_and(|t| now.duration_since(t) < ttl)
        });
        self.peers -= dropped;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(ih: u8, port: u16, left: u64, event: Option<Event>) -> PeerAnnounce {
        PeerAnnounce {
            info_hash: InfoHash([ih; 20]),
            peer_id: PeerId([port.to_le_bytes()[0]; 20]),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            left,
            event,
            numwant: None,
        }
    }

    fn addrs(out: &[(SocketAddr, PeerId)]) -> Vec<u16> {
        let mut v: Vec<u16> = out.iter().map(|(a, _)| a.port()).collect();
        v.sort();
        v
    }

    #[test]
    fn counts_and_peer_lists() {
        let mut s = Store::new(StoreConfig::default());
        let t = Instant::now();
        let mut out = Vec::new();
        s.announce(&ann(1, 1, 0, Some(Event::Started)), None, t, &mut out)
            .unwrap();
        assert!(out.is_empty(), "never the client itself");
        s.announce(&ann(1, 2, 10, Some(Event::Started)), None, t, &mut out)
            .unwrap();
        assert_eq!(addrs(&out), [1]);
        let st = s.announce(&ann(1, 3, 10, None), None, t, &mut out).unwrap();
        assert_eq!(
            st,
            ScrapeStats {
                seeders: 1,
                completed: 0,
                leechers: 2
            }
        );
        assert_eq!(addrs(&out), [1, 2]);
        // A seeder with only leechers around gets them all.
        s.announce(&ann(1, 1, 0, None), None, t, &mut out).unwrap();
        assert_eq!(addrs(&out), [2, 3]);
        // Completion: counted once, the peer becomes a seeder.
        s.announce(&ann(1, 2, 0, Some(Event::Completed)), None, t, &mut out)
            .unwrap();
        let st = s
            .announce(&ann(1, 2, 0, Some(Event::Completed)), None, t, &mut out)
            .unwrap();
        assert_eq!(
            st,
            ScrapeStats {
                seeders: 2,
                completed: 1,
                leechers: 1
            }
        );
        // A seeder gets the leecher first, then the other seeder.
        s.announce(&ann(1, 1, 0, None), None, t, &mut out).unwrap();
        assert_eq!(
            out.iter().map(|(a, _)| a.port()).collect::<Vec<_>>(),
            [3, 2]
        );
        let st = s
            .announce(&ann(1, 3, 0, Some(Event::Stopped)), None, t, &mut out)
            .unwrap();
        assert_eq!(
            st,
            ScrapeStats {
                seeders: 2,
                completed: 1,
                leechers: 0
            }
        );
        assert_eq!(s.scrape(&InfoHash([1; 20])), st);
        assert_eq!(s.scrape(&InfoHash([9; 20])), ScrapeStats::default());
        assert_eq!(s.size(), (1, 2));
    }

    #[test]
    fn numwant_is_capped_and_families_filtered() {
        let cfg = StoreConfig {
            max_numwant: 5,
            ..StoreConfig::default()
        };
        let mut s = Store::new(cfg);
        let t = Instant::now();
        let mut out = Vec::new();
        for port in 1..=20 {
            s.announce(&ann(1, port, 1, None), None, t, &mut out)
                .unwrap();
        }
        let mut v6 = ann(1, 100, 1, None);
        v6.addr = "[::1]:100".parse().unwrap();
        v6.numwant = Some(u32::MAX);
        s.announce(&v6, None, t, &mut out).unwrap();
        assert_eq!(out.len(), 5);
        s.announce(&v6, Some(true), t, &mut out).unwrap();
        assert!(out.is_empty(), "no other IPv6 peers");
        let mut a = ann(1, 1, 1, None);
        a.numwant = Some(0);
        s.announce(&a, None, t, &mut out).unwrap();
        assert!(out.is_empty());
        a.numwant = None;
        s.announce(&a, Some(false), t, &mut out).unwrap();
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|(p, _)| p.is_ipv4()));
    }

    #[test]
    fn peers_expire_after_the_ttl() {
        let cfg = StoreConfig {
            interval: Duration::from_secs(60),
            peer_ttl: Duration::from_secs(120),
            ..StoreConfig::default()
        };
        let mut s = Store::new(cfg);
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.announce(&ann(1, 1, 0, None), None, t0, &mut out).unwrap();
        s.announce(
            &ann(1, 2, 5, None),
            None,
            t0 + Duration::from_secs(60),
            &mut out,
        )
        .unwrap();
        // Before any sweep, an expired peer is no longer handed out.
        s.announce(
            &ann(1, 3, 5, None),
            None,
            t0 + Duration::from_secs(121),
            &mut out,
        )
        .unwrap();
        assert_eq!(addrs(&out), [2]);
        assert_eq!(s.sweep(t0 + Duration::from_secs(121)), 1);
        assert_eq!(s.scrape(&InfoHash([1; 20])).seeders, 0);
        assert_eq!(s.size(), (1, 2));
        let t = t0 + Duration::from_secs(130);
        s.announce(&ann(1, 2, 5, Some(Event::Stopped)), None, t, &mut out)
            .unwrap();
        s.announce(&ann(1, 3, 5, Some(Event::Stopped)), None, t, &mut out)
            .unwrap();
        assert_eq!(s.sweep(t0 + Duration::from_secs(200)), 0);
        assert_eq!(s.size(), (1, 0), "an empty swarm lingers for one TTL");
        s.sweep(t0 + Duration::from_secs(250));
        assert_eq!(s.size(), (0, 0));
    }

    #[test]
    fn allow_list_and_caps() {
        let cfg = StoreConfig {
            allow: Some([InfoHash([1; 20]), InfoHash([2; 20])].into_iter().collect()),
            max_swarms: 1,
            max_peers_per_swarm: 2,
            ..StoreConfig::default()
        };
        let mut s = Store::new(cfg);
        let t = Instant::now();
        let mut out = Vec::new();
        assert_eq!(
            s.announce(&ann(3, 1, 0, None), None, t, &mut out),
            Err(Refusal::NotAllowed)
        );
        s.announce(&ann(1, 1, 0, None), None, t, &mut out).unwrap();
        assert_eq!(
            s.announce(&ann(2, 1, 0, None), None, t, &mut out),
            Err(Refusal::Full)
        );
        s.announce(&ann(1, 2, 1, None), None, t, &mut out).unwrap();
        let st = s.announce(&ann(1, 3, 1, None), None, t, &mut out).unwrap();
        assert_eq!(st.leechers + st.seeders, 2, "third peer not stored");
        assert_eq!(out.len(), 2, "but still served");
        assert!(!s.allowed(&InfoHash([3; 20])));
    }
}
