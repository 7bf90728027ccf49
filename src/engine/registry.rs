//! The peer registry: connections coming and going, interest and choking
//! as peers report them, bans, turnover of idle peers, PEX.

use super::*;

impl Engine {
    /// The peer told us whether it wants our pieces.
    pub fn peer_interest(&self, key: PeerKey, interested: bool) {
        let mut st = self.state();
        st.choker.set_interested(key, interested);
        if let Some(e) = st.peers.get_mut(&key) {
            e.peer_interested = interested;
        }
    }

    /// Whether we want the peer's pieces (for snubbing).
    pub fn am_interested(&self, key: PeerKey, interested: bool) {
        let mut st = self.state();
        st.choker
            .set_am_interested(key, interested, std::time::Instant::now());
        if let Some(e) = st.peers.get_mut(&key) {
            e.am_interested = interested;
        }
    }

    /// Connected peers at `ip`.
    pub fn peers_from(&self, ip: IpAddr) -> usize {
        self.state().peers.values().filter(|e| e.ip == ip).count()
    }

    /// Connected peers.
    pub fn peer_count(&self) -> usize {
        self.state().peers.len()
    }

    /// Closes up to `n` peers that exchanged nothing lately, to make room:
    /// those neither side wants first, then the longest idle. Returns how
    /// many were closed.
    pub fn evict_idle(&self, n: usize) -> usize {
        let now = Instant::now();
        let st = self.state();
        let mut idle: Vec<(bool, Instant, &PeerEntry)> = st
            .peers
            .values()
            .filter(|e| !e.kill.is_cancelled())
            .filter(|e| {
                let quiet = now.saturating_duration_since(e.last_data) >= IDLE_EVICT;
                let never =
                    !e.exchanged && now.saturating_duration_since(e.connected_at) >= FRESH_GRACE;
                quiet || never
            })
            .map(|e| (e.am_interested || e.peer_interested, e.last_data, e))
            .collect();
        idle.sort_by_key(|&(wanted, last, _)| (wanted, last));
        let mut closed = 0;
        for (_, _, e) in idle.into_iter().take(n) {
            tracing::debug!(addr = %e.addr, "closing an idle peer to make room");
            e.kill.cancel();
            closed += 1;
        }
        closed
    }

    /// Whether the peer chokes us (for snubbing).
    pub fn peer_choking(&self, key: PeerKey, choking: bool) {
        let mut st = self.state();
        st.choker
            .set_peer_choking(key, choking, std::time::Instant::now());
        if let Some(e) = st.peers.get_mut(&key) {
            e.peer_choking = choking;
        }
    }

    /// The peer named its client in its extended handshake.
    pub fn set_client(&self, key: PeerKey, client: &str) {
        if let Some(e) = self.state().peers.get_mut(&key) {
            // Bounded: the name comes from the network.
            e.client = Some(client.chars().take(64).collect());
        }
    }

    /// Per-peer rates from the bytes moved since the last call, `secs`
    /// ago (the session samples once a second).
    // Float to integer saturates, and a fraction of a byte is noise.
    #[allow(clippy::cast_possible_truncation)]
    pub fn sample_peers(&self, secs: f64) {
        if secs <= 0.0 {
            return;
        }
        for e in self.state().peers.values_mut() {
            let (d, u) = (e.down - e.sampled.0, e.up - e.sampled.1);
            e.rates = ((d as f64 / secs) as u64, (u as f64 / secs) as u64);
            e.sampled = (e.down, e.up);
        }
    }

    /// The connected peers, for a user's view.
    pub fn peer_infos(&self) -> Vec<PeerInfo> {
        let st = self.state();
        let n = f64::from(self.geometry.num_pieces.max(1));
        st.peers
            .iter()
            .map(|(k, e)| PeerInfo {
                addr: e.addr,
                client: e.client.clone(),
                incoming: !e.outgoing,
                encrypted: e.encrypted,
                web_seed: e.peer_id.is_web_seed(),
                progress: f64::from(e.has.count()) / n,
                am_choking: st.choker.is_choking(*k),
                am_interested: e.am_interested,
                peer_choking: e.peer_choking,
                peer_interested: e.peer_interested,
                down_rate: e.rates.0,
                up_rate: e.rates.1,
            })
            .collect()
    }

    /// Enters a connected peer; `None` if its address is banned.
    pub fn register(
        &self,
        addr: SocketAddr,
        peer_id: PeerId,
        outgoing: bool,
        encrypted: bool,
        tx: mpsc::Sender<PeerCommand>,
        kill: CancellationToken,
    ) -> Result<PeerKey, Refusal> {
        let mut st = self.state();
        if st.banned.contains(&addr.ip()) {
            return Err(Refusal::Banned);
        }
        // One connection per peer. When both sides dialled at once, each
        // keeps the one the lower peer id opened: the same one.
        let opener = |outgoing: bool| {
            if outgoing {
                self.config.peer_id.0
            } else {
                peer_id.0
            }
        };
        if let Some(old) = st.peers.values().find(|e| e.peer_id == peer_id) {
            if old.outgoing == outgoing || opener(old.outgoing) <= opener(outgoing) {
                return Err(Refusal::Duplicate);
            }
            // Its task unregisters it on the way out.
            old.kill.cancel();
        }
        let key = st.next_key;
        st.next_key += 1;
        st.ips.insert(key, addr.ip());
        if st.met.len() < MAX_REMEMBERED || st.met.contains_key(&addr) {
            st.met.insert(addr, encrypted);
        }
        st.peers.insert(
            key,
            PeerEntry {
                has: Bitfield::new(self.geometry.num_pieces),
                ip: addr.ip(),
                addr,
                peer_id,
                listen: outgoing.then_some(addr),
                outgoing,
                encrypted,
                tx,
                kill,
                connected_at: Instant::now(),
                last_data: Instant::now(),
                exchanged: false,
                peer_interested: false,
                am_interested: false,
                peer_choking: true,
                client: None,
                down: 0,
                up: 0,
                sampled: (0, 0),
                rates: (0, 0),
            },
        );
        st.choker.add_peer(key, std::time::Instant::now());
        self.peer_joined.notify_one();
        self.stats.connected.fetch_add(1, Ordering::Relaxed);
        Ok(key)
    }

    /// A connected peer listens at `addr` (we dialled it, or it named
    /// that port in its extended handshake).
    pub fn connected_to(&self, addr: SocketAddr) -> bool {
        self.state().peers.values().any(|e| e.listen == Some(addr))
    }

    /// An incoming peer named its listening port (extended handshake).
    pub fn set_listen_port(&self, key: PeerKey, port: u16) {
        if let Some(e) = self.state().peers.get_mut(&key) {
            if !e.outgoing && port != 0 {
                e.listen = Some(SocketAddr::new(e.ip, port));
            }
        }
    }

    /// Connected peers others could dial, with BEP-11 flags, leaving out
    /// `except` (the peer the list is for). At most [`PEX_MAX`] * 4.
    pub fn pex_view(&self, except: PeerKey) -> Vec<(SocketAddr, u8)> {
        use crate::extension::pex_flags;
        let st = self.state();
        st.peers
            .iter()
            .filter(|(k, _)| **k != except)
            .filter_map(|(_, e)| {
                let mut flags = 0;
                if e.has.is_full() {
                    flags |= pex_flags::SEED;
                }
                if e.outgoing {
                    flags |= pex_flags::REACHABLE;
                }
                if e.encrypted || e.listen.is_some_and(|l| st.wants_mse.contains(&l)) {
                    flags |= pex_flags::ENCRYPTION;
                }
                e.listen.map(|a| (a, flags))
            })
            .take(PEX_MAX * 4)
            .collect()
    }

    /// Addresses a peer told us about; the swarm dials them within its caps.
    pub fn add_pex_peers(&self, addrs: Vec<SocketAddr>) {
        if let (Some(tx), false) = (self.pex.get(), addrs.is_empty()) {
            // A full channel drops them: PEX repeats every minute.
            let _ = tx.try_send(addrs);
        }
    }

    pub fn unregister(&self, key: PeerKey) {
        let mut st = self.state();
        if let Some(entry) = st.peers.remove(&key) {
            st.picker.remove_availability(&entry.has);
            st.picker.release_all(key);
            st.choker.remove_peer(key);
            self.stats.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
