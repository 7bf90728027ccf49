//! Packets from the network: queries we answer (within a per-IP budget)
//! and the answers and errors to our own queries, matched by transaction
//! id and address.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::lookups::LookupKind;
use super::{Node, Pending, Purpose, MAX_PENDING};
use crate::dht::krpc::{self, Body, NodeId, NodeInfo, Query, Response};
use crate::dht::routing::{Insert, K};

/// Peers put in one get_peers answer (keeps it in one datagram).
const VALUES_PER_REPLY: usize = 50;
const MAX_PINGED: usize = 4096;
const PING_AGAIN_AFTER: Duration = Duration::from_secs(60);

impl Node {
    /// Per-IP query budget, counted in one-second windows.
    fn over_rate(&mut self, ip: IpAddr) -> bool {
        let now = Instant::now();
        if now.duration_since(self.rate_window) >= Duration::from_secs(1)
            || self.rate.len() > 10_000
        {
            self.rate.clear();
            self.rate_window = now;
        }
        let n = self.rate.entry(ip).or_insert(0);
        *n += 1;
        *n > self.cfg.max_queries_per_ip
    }

    pub(super) async fn on_packet(&mut self, buf: &[u8], from: SocketAddr) {
        let SocketAddr::V4(from4) = from else {
            return;
        };
        match krpc::decode(buf) {
            Err(e) => {
                // Only a query with a transaction id gets an error back.
                if let Some(t) = e.t {
                    if !self.over_rate(from.ip()) {
                        let body = Body::Error {
                            code: e.code,
                            message: e.msg.to_string(),
                        };
                        self.reply(from, t, body).await;
                    }
                }
            }
            Ok(m) => match m.body {
                Body::Query { id, query } => {
                    if self.over_rate(from.ip()) {
                        return;
                    }
                    self.stats.queries_in += 1;
                    self.on_query(m.t, id, query, from4, m.read_only).await;
                }
                Body::Response(r) => self.on_response(&m.t, r, from, from4).await,
                Body::Error { code, message } => {
                    tracing::debug!(%from, code, "DHT error reply: {message}");
                    self.on_error(&m.t, from).await;
                }
            },
        }
    }

    async fn on_query(&mut self, t: Vec<u8>, id: NodeId, q: Query, from: SocketAddrV4, ro: bool) {
        let now = Instant::now();
        if !ro && id != self.id() {
            if let Insert::PingFirst(list) = self.table.on_query(NodeInfo { id, addr: from }, now) {
                self.ping_unlisted(list, now).await;
            }
        }
        let ip = IpAddr::V4(*from.ip());
        let mut r = Response {
            id: self.id(),
            ..Response::default()
        };
        match q {
            Query::Ping => {}
            Query::FindNode { target } => r.nodes = self.table.closest(&target, K, now),
            Query::GetPeers { info_hash } => {
                r.token = Some(self.tokens.issue(ip, now));
                r.values = self.store.get(&info_hash, VALUES_PER_REPLY, now);
                if r.values.is_empty() {
                    r.nodes = self.table.closest(&NodeId::from(info_hash), K, now);
                }
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if !self.tokens.valid(&token, ip, now) {
                    let body = Body::Error {
                        code: krpc::PROTOCOL_ERROR,
                        message: "bad token".into(),
                    };
                    return self.reply(from.into(), t, body).await;
                }
                let port = if implied_port { from.port() } else { port };
                self.store
                    .announce(info_hash, SocketAddr::new(ip, port), now);
            }
        }
        self.reply(from.into(), t, Body::Response(r)).await;
    }

    /// Unknown queriers are pinged before they are listed; busy tables
    /// skip it, and a node is pinged at most once a minute.
    async fn ping_unlisted(&mut self, list: Vec<NodeInfo>, now: Instant) {
        if self.pending.len() >= MAX_PENDING / 2 {
            return;
        }
        if self.pinged.len() >= MAX_PINGED {
            self.pinged
                .retain(|_, at| now.duration_since(*at) < PING_AGAIN_AFTER);
        }
        for n in list.into_iter().take(2) {
            let recent = self
                .pinged
                .get(&n.addr)
                .is_some_and(|at| now.duration_since(*at) < PING_AGAIN_AFTER);
            if recent || self.pinged.len() >= MAX_PINGED {
                continue;
            }
            self.pinged.insert(n.addr, now);
            self.query(n.addr.into(), Some(n.id), Query::Ping, Purpose::Ping)
                .await;
        }
    }

    fn take_pending(&mut self, t: &[u8], from: SocketAddr) -> Option<Pending> {
        let tid = u16::from_be_bytes(t.try_into().ok()?);
        // Only the address we asked may answer.
        if self.pending.get(&tid)?.addr != from {
            return None;
        }
        self.pending.remove(&tid)
    }

    async fn on_response(&mut self, t: &[u8], r: Response, from: SocketAddr, from4: SocketAddrV4) {
        let Some(p) = self.take_pending(t, from) else {
            return;
        };
        if p.id.is_some_and(|want| want != r.id) {
            // Someone else at that address now: the old id is gone.
            if let Some(old) = p.id {
                self.table.on_timeout(&old, Instant::now());
            }
        }
        let now = Instant::now();
        let info = NodeInfo {
            id: r.id,
            addr: from4,
        };
        if let Insert::PingFirst(list) = self.table.on_response(info, now) {
            for n in list.into_iter().take(K) {
                self.query(n.addr.into(), Some(n.id), Query::Ping, Purpose::Ping)
                    .await;
            }
        }
        match p.purpose {
            Purpose::Ping => {}
            Purpose::Bootstrap => {
                // The first answer starts a lookup of our own id, which
                // fills the table near us.
                if !self.self_lookup {
                    self.self_lookup = true;
                    let mut seeds = r.nodes.clone();
                    seeds.push(info);
                    let own = self.id();
                    self.start_lookup(own, seeds, LookupKind::Join).await;
                }
            }
            Purpose::Lookup(task) => self.on_lookup_response(task, r).await,
            Purpose::Announce(task) => self.on_announce_settled(task).await,
        }
    }

    async fn on_error(&mut self, t: &[u8], from: SocketAddr) {
        let Some(p) = self.take_pending(t, from) else {
            return;
        };
        self.on_query_failed(p.purpose, p.id).await;
    }
}
