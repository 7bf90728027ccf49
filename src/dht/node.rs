//! A DHT node: one task owning the UDP socket, the routing table, the
//! storage side and the running lookups. Others talk to it through
//! [`Dht`], a cloneable handle over a command channel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::krpc::{self, Body, Message, NodeId, NodeInfo, Query, Response};
use super::lookup::Lookup;
use super::routing::{Insert, RoutingTable, K};
use super::storage::{PeerStore, StoreLimits, Tokens};
use crate::types::InfoHash;

/// Our `v` key: client "XR", version 0.1.
const VERSION: &[u8] = b"XR\x00\x01";
/// Peers put in one get_peers answer (keeps it in one datagram).
const VALUES_PER_REPLY: usize = 50;
/// Queries of ours awaiting an answer; beyond this, new ones wait.
const MAX_PENDING: usize = 4096;
const MAX_PINGED: usize = 4096;
const PING_AGAIN_AFTER: Duration = Duration::from_secs(60);
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

enum LookupKind {
    GetPeers {
        info_hash: InfoHash,
        announce: Option<u16>,
        peers: mpsc::Sender<Vec<SocketAddr>>,
        done: Option<oneshot::Sender<LookupStats>>,
    },
    FindNode {
        done: Option<oneshot::Sender<LookupStats>>,
    },
    /// The lookup of our own id after bootstrap; when it ends, every
    /// bucket is refreshed once.
    Join,
}

struct Task {
    lookup: Lookup,
    kind: LookupKind,
    started: Instant,
    /// Announces sent and still awaited; the task ends when they settle.
    announcing: usize,
    announced: usize,
    finishing: bool,
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
                    // Routers may have been down or not up yet: try again.
                    if self.table.is_empty() && now.duration_since(self.last_bootstrap) >= self.rebootstrap {
                        self.rebootstrap = (self.rebootstrap * 2).min(Duration::from_secs(300));
                        self.self_lookup = false;
                        self.bootstrap().await;
                    }
                    if now.duration_since(last_refresh) >= REFRESH_EVERY {
                        last_refresh = now;
                        self.refresh(now).await;
                    }
                    if now.duration_since(last_save) >= SAVE_EVERY {
                        last_save = now;
                        self.save();
                    }
                    if !self.waiting.is_empty()
                        && (!self.table.is_empty() || now.duration_since(self.started) >= BOOTSTRAP_WAIT)
                    {
                        for c in std::mem::take(&mut self.waiting) {
                            self.on_command(c).await;
                        }
                    }
                }
            }
        }
        self.save();
    }

    async fn bootstrap(&mut self) {
        self.last_bootstrap = Instant::now();
        let mut addrs: Vec<SocketAddr> = self.cfg.nodes.clone();
        for host in self.cfg.bootstrap.clone() {
            match tokio::net::lookup_host(host.as_str()).await {
                Ok(found) => addrs.extend(found.filter(SocketAddr::is_ipv4)),
                Err(e) => tracing::warn!("DHT bootstrap {host}: {e}"),
            }
        }
        addrs.sort();
        addrs.dedup();
        let own = self.id();
        for a in addrs {
            let q = Query::FindNode { target: own };
            self.query(a, None, q, Purpose::Bootstrap).await;
        }
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

    async fn start_lookup(&mut self, target: NodeId, extra: Vec<NodeInfo>, kind: LookupKind) {
        let id = self.add_task(target, extra, kind);
        self.drive(id).await;
    }

    /// A new lookup, first driven by the caller or on the next tick.
    fn add_task(&mut self, target: NodeId, extra: Vec<NodeInfo>, kind: LookupKind) -> u64 {
        let mut seeds = self.table.closest(&target, K * 2, Instant::now());
        seeds.extend(extra);
        let id = self.next_task;
        self.next_task += 1;
        self.tasks.insert(
            id,
            Task {
                lookup: Lookup::new(target, seeds),
                kind,
                started: Instant::now(),
                announcing: 0,
                announced: 0,
                finishing: false,
            },
        );
        id
    }

    async fn drive_all(&mut self) {
        let ids: Vec<u64> = self.tasks.keys().copied().collect();
        for id in ids {
            self.drive(id).await;
        }
    }

    /// Sends the lookup's next queries; at the end, its announces; then
    /// reports and forgets it.
    async fn drive(&mut self, id: u64) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if !task.finishing {
            let asks = task.lookup.next_queries();
            let peers = task.lookup.take_peers();
            let target = task.lookup.target();
            if let LookupKind::GetPeers { peers: tx, .. } = &task.kind {
                if !peers.is_empty() {
                    let _ = tx.try_send(peers);
                }
            }
            let get_peers = matches!(task.kind, LookupKind::GetPeers { .. });
            let done = task.lookup.is_done();
            for n in asks {
                let q = if get_peers {
                    Query::GetPeers {
                        info_hash: InfoHash(target.0),
                    }
                } else {
                    Query::FindNode { target }
                };
                if !self
                    .query(n.addr.into(), Some(n.id), q, Purpose::Lookup(id))
                    .await
                {
                    if let Some(t) = self.tasks.get_mut(&id) {
                        t.lookup.on_timeout(&n.id);
                    }
                }
            }
            if !done {
                return;
            }
            let task = self.tasks.get_mut(&id).expect("still here");
            task.finishing = true;
            if let LookupKind::GetPeers {
                info_hash,
                announce: Some(port),
                ..
            } = task.kind
            {
                let targets = task.lookup.closest_with_tokens();
                for (n, token) in targets {
                    let q = Query::AnnouncePeer {
                        info_hash,
                        port: if port == 0 { self.local_port() } else { port },
                        implied_port: port == 0,
                        token,
                    };
                    if self
                        .query(n.addr.into(), Some(n.id), q, Purpose::Announce(id))
                        .await
                    {
                        let t = self.tasks.get_mut(&id).expect("still here");
                        t.announcing += 1;
                        t.announced += 1;
                    }
                }
            }
        }
        let task = self.tasks.get_mut(&id).expect("still here");
        if task.announcing > 0 {
            return;
        }
        let mut task = self.tasks.remove(&id).expect("still here");
        let stats = LookupStats {
            peers: 0,
            queries: task.lookup.queries,
            rounds: task.lookup.rounds,
            closest: task.lookup.closest(),
            announced: task.announced,
            elapsed: task.started.elapsed(),
        };
        match &mut task.kind {
            LookupKind::GetPeers { done, .. } | LookupKind::FindNode { done } => {
                if let Some(d) = done.take() {
                    let _ = d.send(stats);
                }
            }
            LookupKind::Join => {
                for target in self.table.all_targets(Instant::now()) {
                    self.add_task(target, Vec::new(), LookupKind::FindNode { done: None });
                }
            }
        }
    }

    async fn expire_rpcs(&mut self, now: Instant) {
        let limit = self.cfg.rpc_timeout;
        let expired: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent) >= limit)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            let p = self.pending.remove(&t).expect("listed above");
            if let Some(id) = p.id {
                self.table.on_timeout(&id, now);
            }
            match p.purpose {
                Purpose::Lookup(task) => {
                    if let (Some(t), Some(id)) = (self.tasks.get_mut(&task), p.id) {
                        t.lookup.on_timeout(&id);
                    }
                    self.drive(task).await;
                }
                Purpose::Announce(task) => {
                    if let Some(t) = self.tasks.get_mut(&task) {
                        t.announcing = t.announcing.saturating_sub(1);
                    }
                    self.drive(task).await;
                }
                Purpose::Ping | Purpose::Bootstrap => {}
            }
        }
    }

    async fn refresh(&mut self, now: Instant) {
        for target in self.table.refresh_targets(now) {
            self.start_lookup(target, Vec::new(), LookupKind::FindNode { done: None })
                .await;
        }
    }

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

    async fn on_packet(&mut self, buf: &[u8], from: SocketAddr) {
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
                // Unknown queriers are pinged before they are listed; busy
                // tables skip it.
                if self.pending.len() < MAX_PENDING / 2 {
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
            Purpose::Lookup(task) => {
                // We may be among the nodes others know: never ask ourselves.
                let own = self.id();
                let nodes: Vec<NodeInfo> =
                    r.nodes.iter().filter(|n| n.id != own).copied().collect();
                if let Some(tk) = self.tasks.get_mut(&task) {
                    tk.lookup.on_response(&r.id, &nodes, &r.values, r.token);
                }
                self.drive(task).await;
            }
            Purpose::Announce(task) => {
                if let Some(tk) = self.tasks.get_mut(&task) {
                    tk.announcing = tk.announcing.saturating_sub(1);
                }
                self.drive(task).await;
            }
        }
    }

    async fn on_error(&mut self, t: &[u8], from: SocketAddr) {
        let Some(p) = self.take_pending(t, from) else {
            return;
        };
        match p.purpose {
            Purpose::Lookup(task) => {
                if let (Some(tk), Some(id)) = (self.tasks.get_mut(&task), p.id) {
                    tk.lookup.on_timeout(&id);
                }
                self.drive(task).await;
            }
            Purpose::Announce(task) => {
                if let Some(tk) = self.tasks.get_mut(&task) {
                    tk.announcing = tk.announcing.saturating_sub(1);
                }
                self.drive(task).await;
            }
            Purpose::Ping | Purpose::Bootstrap => {}
        }
    }

    /// Writes the id and good nodes (JSON) for the next run.
    fn save(&self) {
        let Some(path) = &self.cfg.state_file else {
            return;
        };
        let nodes: Vec<String> = self
            .table
            .good_nodes(Instant::now())
            .iter()
            .map(|n| format!("{} {}", n.addr, n.id))
            .collect();
        let v = serde_json::json!({"id": self.id().to_string(), "nodes": nodes});
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&tmp, serde_json::to_vec_pretty(&v)?)?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            tracing::warn!("cannot save DHT state to {}: {e}", path.display());
        }
    }
}

/// A saved state: the node id and the nodes to ping at start. A missing
/// or unreadable file is a fresh start, never an error.
pub fn load_state(path: &std::path::Path) -> (Option<NodeId>, Vec<SocketAddr>) {
    let Ok(bytes) = std::fs::read(path) else {
        return (None, Vec::new());
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        tracing::warn!("ignoring unreadable DHT state {}", path.display());
        return (None, Vec::new());
    };
    let id = v["id"].as_str().and_then(|s| {
        let mut b = [0u8; 20];
        hex::decode_to_slice(s, &mut b).ok().map(|_| NodeId(b))
    });
    let nodes = v["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str()?.split(' ').next()?.parse().ok())
                .take(1000)
                .collect()
        })
        .unwrap_or_default();
    (id, nodes)
}
