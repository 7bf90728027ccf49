//! A DHT node: one task owning the UDP socket, the routing table, the
//! storage side and the running lookups. Others talk to it through
//! [`Dht`], a cloneable handle over a command channel.
//!
//! This file holds the handle, the node's state, its event loop and the
//! sending side; the node's work is split by what starts it: `incoming`
//! (packets from the network), `lookups` (our lookups and announces),
//! `maintenance` (bootstrap, refresh, expired queries) and `state` (the
//! saved id and nodes).

mod incoming;
mod lookups;
mod maintenance;
mod state;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::krpc::{self, Body, Message, NodeId, NodeInfo, Query};
use super::routing::RoutingTable;
use super::storage::{PeerStore, StoreLimits, Tokens};
use crate::types::InfoHash;
use lookups::{LookupKind, Task};
pub use state::load_state;

/// Our `v` key: client "XR", version 0.1.
const VERSION: &[u8] = b"XR\x00\x01";
/// Queries of ours awaiting an answer; beyond this, new ones wait.
const MAX_PENDING: usize = 4096;
const TICK: Duration = Duration::from_millis(100);
const SAVE_EVERY: Duration = Duration::from_secs(10 * 60);
const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// Lookups wait this long for a bootstrap answer when the table is empty.
const BOOTSTRAP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// IPv4 address and port of the node's socket.
    pub bind: SocketAddr,
    /// `host:port` routers asked for nodes at start.
    pub bootstrap: Vec<String>,
    /// Nodes to ping at start (a torrent's `nodes`, a saved table).
    pub nodes: Vec<SocketAddr>,
    /// Node id; a saved one, or random.
    pub id: Option<NodeId>,
    /// Where the id and good nodes are saved (on exit and every 10 min).
    pub state_file: Option<PathBuf>,
    /// Queries answered per second from one IP; more are dropped.
    pub max_queries_per_ip: u32,
    /// How long a query of ours may go unanswered.
    pub rpc_timeout: Duration,
    pub store: StoreLimits,
}

impl DhtConfig {
    pub fn new(bind: SocketAddr) -> DhtConfig {
        DhtConfig {
            bind,
            bootstrap: Vec::new(),
            nodes: Vec::new(),
            id: None,
            state_file: None,
            max_queries_per_ip: 100,
            rpc_timeout: Duration::from_secs(4),
            store: StoreLimits::default(),
        }
    }
}

/// What a finished lookup did.
#[derive(Debug, Clone, Default)]
pub struct LookupStats {
    pub peers: usize,
    pub queries: u32,
    pub rounds: u32,
    /// Nodes among the k closest that answered.
    pub closest: Vec<NodeInfo>,
    /// announce_peer queries sent.
    pub announced: usize,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct DhtStats {
    pub id: NodeId,
    pub local: Option<SocketAddr>,
    pub good: usize,
    pub questionable: usize,
    pub bad: usize,
    pub buckets: usize,
    pub stored_torrents: usize,
    pub stored_peers: usize,
    pub queries_in: u64,
    pub queries_out: u64,
}

enum Cmd {
    GetPeers {
        info_hash: InfoHash,
        /// Announce ourselves on this port afterwards (0: implied port).
        announce: Option<u16>,
        peers: mpsc::Sender<Vec<SocketAddr>>,
        done: oneshot::Sender<LookupStats>,
    },
    FindNode {
        target: NodeId,
        done: oneshot::Sender<LookupStats>,
    },
    Ping(SocketAddr),
    Stats(oneshot::Sender<DhtStats>),
}

/// A handle on a running node.
#[derive(Clone)]
pub struct Dht {
    tx: mpsc::Sender<Cmd>,
    id: NodeId,
    local: SocketAddr,
}

impl Dht {
    /// Binds the socket and starts the node; it runs until `cancel`.
    pub async fn start(cfg: DhtConfig, cancel: CancellationToken) -> std::io::Result<Dht> {
        if !cfg.bind.is_ipv4() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the DHT needs an IPv4 address (BEP-32 is not implemented)",
            ));
        }
        let sock = UdpSocket::bind(cfg.bind).await?;
        let local = sock.local_addr()?;
        let id = cfg.id.unwrap_or_else(NodeId::random);
        let (tx, rx) = mpsc::channel(256);
        let node = Node::new(cfg, id, Arc::new(sock));
        tokio::spawn(node.run(rx, cancel));
        Ok(Dht { tx, id, local })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Looks `info_hash` up; peers arrive on the returned channel as they
    /// are found, the stats when the lookup (and announce) is over.
    pub async fn get_peers(
        &self,
        info_hash: InfoHash,
        announce: Option<u16>,
    ) -> (
        mpsc::Receiver<Vec<SocketAddr>>,
        oneshot::Receiver<LookupStats>,
    ) {
        let (ptx, prx) = mpsc::channel(64);
        let (dtx, drx) = oneshot::channel();
        let _ = self
            .tx
            .send(Cmd::GetPeers {
                info_hash,
                announce,
                peers: ptx,
                done: dtx,
            })
            .await;
        (prx, drx)
    }

    pub async fn find_node(&self, target: NodeId) -> Option<LookupStats> {
        let (done, rx) = oneshot::channel();
        self.tx.send(Cmd::FindNode { target, done }).await.ok()?;
        rx.await.ok()
    }

    /// Pings a node (a peer's BEP-5 `port` message); it joins the table if
    /// it answers.
    pub async fn ping(&self, addr: SocketAddr) {
        let _ = self.tx.send(Cmd::Ping(addr)).await;
    }

    /// Waits until the node has stopped (and saved its state).
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    pub async fn stats(&self) -> Option<DhtStats> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Stats(tx)).await.ok()?;
        rx.await.ok()
    }
}

enum Purpose {
    Ping,
    Bootstrap,
    Lookup(u64),
    Announce(u64),
}

struct Pending {
    addr: SocketAddr,
    /// The node we expect to answer (unknown for bootstrap routers).
    id: Option<NodeId>,
    sent: Instant,
    purpose: Purpose,
}

struct Node {
    cfg: DhtConfig,
    sock: Arc<UdpSocket>,
    table: RoutingTable,
    tokens: Tokens,
    store: PeerStore,
    pending: HashMap<u16, Pending>,
    next_tid: u16,
    tasks: HashMap<u64, Task>,
    next_task: u64,
    /// Lookups asked for before the table had any node.
    waiting: Vec<Cmd>,
    started: Instant,
    rate: HashMap<IpAddr, u32>,
    rate_window: Instant,
    stats: DhtStats,
    out: Vec<u8>,
    /// Whether the lookup of our own id after bootstrap has started.
    self_lookup: bool,
    /// While the table is empty, bootstrap is retried after this (doubling).
    rebootstrap: Duration,
    last_bootstrap: Instant,
    /// Recent pings of unknown queriers, so a busy querier is pinged once.
    pinged: HashMap<SocketAddrV4, Instant>,
}

impl Node {
    fn new(cfg: DhtConfig, id: NodeId, sock: Arc<UdpSocket>) -> Node {
        let now = Instant::now();
        Node {
            table: RoutingTable::new(id, now),
            tokens: Tokens::new(now),
            store: PeerStore::new(cfg.store),
            cfg,
            sock,
            pending: HashMap::new(),
            next_tid: rand::random(),
            tasks: HashMap::new(),
            next_task: 0,
            waiting: Vec::new(),
            started: now,
            rate: HashMap::new(),
            rate_window: now,
            stats: DhtStats {
                id,
                ..DhtStats::default()
            },
            out: Vec::with_capacity(1500),
            self_lookup: false,
            rebootstrap: Duration::from_secs(5),
            last_bootstrap: now,
            pinged: HashMap::new(),
        }
    }

    fn id(&self) -> NodeId {
        self.table.own_id()
    }

    fn local_port(&self) -> u16 {
        self.sock.local_addr().map_or(0, |a| a.port())
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Cmd>, cancel: CancellationToken) {
        self.stats.local = self.sock.local_addr().ok();
        self.bootstrap().await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_refresh = Instant::now();
        let mut last_save = Instant::now();
        let mut buf = vec![0u8; 2048];
        let sock = self.sock.clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = sock.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_packet(&buf[..n], from).await,
                    Err(e) => tracing::debug!("DHT receive: {e}"),
                },
                c = rx.recv() => match c {
                    Some(c) => self.on_command(c).await,
                    None => break,
                },
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.expire_rpcs(now).await;
                    self.drive_all().await;
                    self.retry_bootstrap(now).await;
                    if now.duration_since(last_refresh) >= REFRESH_EVERY {
                        last_refresh = now;
                        self.refresh(now).await;
                        // Without this, dead announces fill the caps and
                        // every later announce is refused.
                        self.store.expire(now);
                    }
                    if now.duration_since(last_save) >= SAVE_EVERY {
                        last_save = now;
                        self.save();
                    }
                    self.release_waiting(now).await;
                }
            }
        }
        self.save();
    }

    fn tid(&mut self) -> u16 {
        loop {
            self.next_tid = self.next_tid.wrapping_add(1);
            if !self.pending.contains_key(&self.next_tid) {
                return self.next_tid;
            }
        }
    }

    async fn send(&mut self, to: SocketAddr, m: &Message) {
        self.out.clear();
        krpc::encode(m, &mut self.out);
        tracing::trace!(%to, len = self.out.len(), "DHT send");
        if let Err(e) = self.sock.send_to(&self.out, to).await {
            tracing::debug!(%to, "DHT send: {e}");
        }
    }

    async fn query(
        &mut self,
        to: SocketAddr,
        id: Option<NodeId>,
        query: Query,
        purpose: Purpose,
    ) -> bool {
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        let tid = self.tid();
        let m = Message {
            t: tid.to_be_bytes().to_vec(),
            v: Some(VERSION.to_vec()),
            read_only: false,
            body: Body::Query {
                id: self.id(),
                query,
            },
        };
        self.send(to, &m).await;
        self.stats.queries_out += 1;
        self.pending.insert(
            tid,
            Pending {
                addr: to,
                id,
                sent: Instant::now(),
                purpose,
            },
        );
        true
    }

    async fn reply(&mut self, to: SocketAddr, t: Vec<u8>, body: Body) {
        let m = Message {
            t,
            v: Some(VERSION.to_vec()),
            read_only: false,
            body,
        };
        self.send(to, &m).await;
    }

    async fn on_command(&mut self, c: Cmd) {
        let now = Instant::now();
        match c {
            Cmd::Stats(tx) => {
                let (g, q, b) = self.table.health(now);
                let (t, p) = self.store.size();
                let s = DhtStats {
                    good: g,
                    questionable: q,
                    bad: b,
                    buckets: self.table.bucket_count(),
                    stored_torrents: t,
                    stored_peers: p,
                    ..self.stats.clone()
                };
                let _ = tx.send(s);
            }
            Cmd::Ping(addr) => {
                self.query(addr, None, Query::Ping, Purpose::Ping).await;
            }
            c @ (Cmd::GetPeers { .. } | Cmd::FindNode { .. })
                if self.table.is_empty() && now.duration_since(self.started) < BOOTSTRAP_WAIT =>
            {
                self.waiting.push(c);
            }
            Cmd::GetPeers {
                info_hash,
                announce,
                peers,
                done,
            } => {
                let target = NodeId::from(info_hash);
                let kind = LookupKind::GetPeers {
                    info_hash,
                    announce,
                    peers,
                    done: Some(done),
                };
                self.start_lookup(target, Vec::new(), kind).await;
            }
            Cmd::FindNode { target, done } => {
                let kind = LookupKind::FindNode { done: Some(done) };
                self.start_lookup(target, Vec::new(), kind).await;
            }
        }
    }

    /// Lookups asked for before bootstrap start once the table has a node
    /// or the wait is over.
    async fn release_waiting(&mut self, now: Instant) {
        if !self.waiting.is_empty()
            && (!self.table.is_empty() || now.duration_since(self.started) >= BOOTSTRAP_WAIT)
        {
            for c in std::mem::take(&mut self.waiting) {
                self.on_command(c).await;
            }
        }
    }
}
