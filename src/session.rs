//! What the whole process shares between its torrents: one peer listener
//! (its `Registry` routes each incoming handshake to the torrent it
//! names), one DHT node, the global rate caps and hashing budget, the peer
//! id, the global peer and half-open caps, a task tracker and the root
//! cancellation token.
//!
//! ```text
//! Session::start ── root token (child of the caller's) ── TaskTracker
//!   ├─ "listener": accept, handshake, route by info-hash
//!   ├─ "dht" node task (+ "dht-ping": peers' BEP-5 port messages)
//!   └─ "torrent <hash>": one actor per torrent (see `torrent`)
//! ```
//!
//! [`Session::shutdown`] cancels the root and awaits every task: torrents
//! tell their trackers `stopped` and flush their resume records, the DHT
//! node saves its table.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::{DhtOptions, SessionConfig};
use crate::dht::{
    self,
    node::{Dht, DhtConfig},
};
use crate::engine;
use crate::engine::ratelimit::RatePair;
use crate::listener::{self, Registry};
use crate::swarm::Limits;
use crate::torrent::{self, AddTorrent, Context, TorrentError, TorrentHandle};
use crate::types::InfoHash;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The process's torrents and what they share. Cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    /// What every torrent's actor sees of the session.
    ctx: Arc<Context>,
    torrents: Mutex<Vec<TorrentHandle>>,
    next_id: AtomicU64,
}

impl Inner {
    fn torrents(&self) -> MutexGuard<'_, Vec<TorrentHandle>> {
        self.torrents.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Session {
    /// Binds the listener and starts the DHT node. Socket errors come
    /// back before anything runs.
    pub async fn start(
        config: SessionConfig,
        parent: &CancellationToken,
    ) -> Result<Session, SessionError> {
        let cancel = parent.child_token();
        let tasks = TaskTracker::new();
        let mut econf = config.engine.clone();
        let listener = bind_listener(config.bind, config.port).await?;
        let listen_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        econf.listen_port = listen_port;
        econf.bind_ip = config.bind;
        let dht = match &config.dht {
            Some(d) => start_dht(d, config.bind, listen_port, cancel.clone()).await,
            None => None,
        };
        let dht_pings = dht.as_ref().map(|d| spawn_dht_pings(d, &tasks, &cancel));
        let registry = Registry::default();
        let limits = Limits::new(config.max_peers, config.max_half_open);
        tasks.spawn(listener::run(
            listener,
            registry.clone(),
            limits.clone(),
            econf.encryption,
            cancel.clone(),
        ));
        let shared = engine::Shared {
            rates: Arc::new(RatePair::new(
                config.max_upload_rate,
                config.max_download_rate,
            )),
            hash_permits: Arc::new(Semaphore::new(econf.hash_workers.max(1))),
        };
        let peer_id = econf.peer_id;
        let config = SessionConfig {
            engine: econf,
            ..config
        };
        let session = Session {
            inner: Arc::new(Inner {
                ctx: Arc::new(Context {
                    config,
                    peer_id,
                    listen_port,
                    registry,
                    dht,
                    dht_pings,
                    shared,
                    limits,
                    tasks,
                    cancel,
                }),
                torrents: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
            }),
        };
        session.spawn_sampler();
        Ok(session)
    }

    /// Rates for every torrent: one wake-up a second for the process.
    fn spawn_sampler(&self) {
        let weak = Arc::downgrade(&self.inner);
        let stop = self.inner.ctx.cancel.clone();
        self.inner.ctx.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                for t in inner.torrents().iter() {
                    t.status().sample();
                }
            }
        });
    }

    pub fn listen_port(&self) -> u16 {
        self.inner.ctx.listen_port
    }

    pub fn dht(&self) -> Option<&Dht> {
        self.inner.ctx.dht.as_ref()
    }

    pub fn config(&self) -> &SessionConfig {
        &self.inner.ctx.config
    }

    /// Adds a torrent and starts it (unless `add.paused`). The same
    /// info-hash twice is refused with the handle of the first.
    pub async fn add(&self, mut add: AddTorrent) -> Result<TorrentHandle, AddError> {
        if let torrent::Source::File(path) = &add.source {
            // Read now: a bad file is the caller's error, and the
            // info-hash is needed to refuse a duplicate.
            let p = path.clone();
            let t = tokio::task::spawn_blocking(move || crate::metainfo::Torrent::from_file(&p))
                .await
                .map_err(TorrentError::Task)?
                .map_err(TorrentError::from)?;
            add.source = torrent::Source::Parsed(Box::new(t));
        }
        let ih = add.source.info_hash()?;
        if let Some(h) = ih.and_then(|ih| self.get(&ih)) {
            return Err(AddError::Duplicate(h));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = torrent::spawn(self.inner.ctx.clone(), id, add)?;
        let mut list = self.inner.torrents();
        if list.iter().any(|t| t.info_hash() == handle.info_hash()) {
            handle.cancel();
            return Err(AddError::Duplicate(
                list.iter()
                    .find(|t| t.info_hash() == handle.info_hash())
                    .cloned()
                    .expect("found above"),
            ));
        }
        list.push(handle.clone());
        Ok(handle)
    }

    pub fn torrents(&self) -> Vec<TorrentHandle> {
        self.inner.torrents().clone()
    }

    pub fn get(&self, ih: &InfoHash) -> Option<TorrentHandle> {
        self.inner
            .torrents()
            .iter()
            .find(|t| t.info_hash() == *ih)
            .cloned()
    }

    pub fn get_id(&self, id: u64) -> Option<TorrentHandle> {
        self.inner.torrents().iter().find(|t| t.id() == id).cloned()
    }

    /// Stops a torrent for good and forgets it; with `delete_data` its
    /// files (only those of the torrent, inside its directory) go too.
    pub async fn remove(&self, ih: &InfoHash, delete_data: bool) -> Result<(), TorrentError> {
        let Some(h) = self.get(ih) else {
            return Ok(());
        };
        let r = h.remove(delete_data).await;
        self.inner.torrents().retain(|t| t.info_hash() != *ih);
        r
    }

    /// Stops a torrent and drops it from the session, keeping its files
    /// and resume record (to add it again, e.g. to restart it).
    pub async fn forget(&self, ih: &InfoHash) {
        let Some(h) = self.get(ih) else {
            return;
        };
        h.cancel();
        let _ = h.wait().await;
        self.inner.torrents().retain(|t| t.info_hash() != *ih);
    }

    /// The global caps in bytes/s (0: none), effective at once.
    pub fn set_rate_limits(&self, up: u64, down: u64) {
        self.inner.ctx.shared.rates.up.set_rate(up);
        self.inner.ctx.shared.rates.down.set_rate(down);
    }

    pub fn rate_limits(&self) -> (u64, u64) {
        let r = &self.inner.ctx.shared.rates;
        (r.up.rate(), r.down.rate())
    }

    /// Cancels everything and waits for the tasks to end (trackers told
    /// `stopped`, resume records flushed, DHT table saved).
    pub async fn shutdown(&self) {
        self.inner.ctx.cancel.cancel();
        self.inner.ctx.tasks.close();
        self.inner.ctx.tasks.wait().await;
        if let Some(d) = &self.inner.ctx.dht {
            d.stopped().await;
        }
    }

    /// Torrents whose peers the listener currently accepts.
    pub fn running(&self) -> usize {
        self.inner.ctx.registry.len()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("the torrent is already there")]
    Duplicate(TorrentHandle),
    #[error(transparent)]
    Torrent(#[from] TorrentError),
}

/// The task that pings peers' DHT nodes (BEP-5 `port` messages); its
/// channel is bounded and what does not fit is dropped.
fn spawn_dht_pings(
    d: &Dht,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> mpsc::Sender<SocketAddr> {
    let (tx, mut rx) = mpsc::channel::<SocketAddr>(64);
    let (d, stop) = (d.clone(), cancel.clone());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                a = rx.recv() => match a {
                    Some(a) => d.ping(a).await,
                    None => return,
                },
            }
        }
    });
    tx
}

/// Starts the session's DHT node; a failure costs only the DHT.
async fn start_dht(
    d: &DhtOptions,
    bind: Option<IpAddr>,
    listen_port: u16,
    cancel: CancellationToken,
) -> Option<Dht> {
    let ip = match bind {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(ip @ IpAddr::V4(_)) => ip,
        Some(IpAddr::V6(_)) => {
            tracing::warn!("DHT off: it needs an IPv4 --bind address");
            return None;
        }
    };
    let mut cfg = DhtConfig::new(SocketAddr::new(ip, d.port.unwrap_or(listen_port)));
    cfg.bootstrap = d.bootstrap.clone();
    if let Some(f) = &d.state_file {
        let (id, nodes) = dht::node::load_state(f);
        cfg.id = id;
        cfg.nodes = nodes;
        cfg.state_file = Some(f.clone());
    }
    match Dht::start(cfg, cancel).await {
        Ok(dht) => {
            tracing::info!(addr = %dht.local_addr(), id = %dht.id(), "DHT node up");
            Some(dht)
        }
        Err(e) => {
            tracing::warn!("DHT off: {e}");
            None
        }
    }
}

/// Binds the peer listener: the given port, else 6881–6889, else any.
async fn bind_listener(
    bind: Option<IpAddr>,
    port: Option<u16>,
) -> Result<TcpListener, SessionError> {
    let ip = bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if let Some(p) = port {
        let addr = SocketAddr::new(ip, p);
        return TcpListener::bind(addr)
            .await
            .map_err(|source| SessionError::Listen { addr, source });
    }
    for p in (6881..=6889).chain([0]) {
        if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, p)).await {
            return Ok(l);
        }
    }
    let addr = SocketAddr::new(ip, 0);
    TcpListener::bind(addr)
        .await
        .map_err(|source| SessionError::Listen { addr, source })
}

/// Torrents by info-hash, for callers that index them.
pub type ByHash = HashMap<InfoHash, TorrentHandle>;
