//! The embedded tracker (`xorrent tracker`): HTTP and UDP front ends over
//! one [`store::Store`], a sweeper that expires peers, an optional stats line.

pub mod http;
pub(crate) mod store;
pub mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use store::{Store, StoreConfig};
use udp::ConnIds;

/// The tracker's idea of now; tests inject their own to expire peers.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// What the front ends share.
pub struct Shared {
    pub store: Mutex<Store>,
    pub ids: ConnIds,
    pub counters: Counters,
    pub clock: Clock,
}

#[derive(Default)]
pub struct Counters {
    udp_announces: AtomicU64,
    udp_packets: AtomicU64,
    http_announces: AtomicU64,
    http_requests: AtomicU64,
}

impl Counters {
    fn udp_packet(&self, announce: bool) {
        self.udp_packets.fetch_add(1, Ordering::Relaxed);
        if announce {
            self.udp_announces.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn http_request(&self, announce: bool) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
        if announce {
            self.http_announces.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (UDP announces, HTTP announces) served so far.
    pub fn announces(&self) -> (u64, u64) {
        (
            self.udp_announces.load(Ordering::Relaxed),
            self.http_announces.load(Ordering::Relaxed),
        )
    }
}

#[derive(Clone)]
pub struct TrackerOptions {
    pub http: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
    pub store: StoreConfig,
    /// Print a stats line this often.
    pub stats: Option<Duration>,
    /// `None`: the real clock.
    pub clock: Option<Clock>,
}

/// A tracker with its sockets bound, ready to [`run`](Tracker::run).
pub struct Tracker {
    shared: Arc<Shared>,
    http: Option<TcpListener>,
    udp: Option<Arc<std::net::UdpSocket>>,
    stats: Option<Duration>,
}

impl Tracker {
    pub async fn bind(opts: TrackerOptions) -> std::io::Result<Tracker> {
        let http = match opts.http {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let udp = match opts.udp {
            // Served by blocking threads (batched system calls).
            Some(a) => Some(Arc::new(std::net::UdpSocket::bind(a)?)),
            None => None,
        };
        let clock = opts.clock.unwrap_or_else(|| Arc::new(Instant::now));
        Ok(Tracker {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::new(opts.store)),
                ids: ConnIds::new(clock()),
                counters: Counters::default(),
                clock,
            }),
            http,
            udp,
            stats: opts.stats,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|s| s.local_addr().ok())
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Serves until `cancel`, then lets open HTTP exchanges finish (at most
    /// two seconds).
    pub async fn run(self, cancel: CancellationToken) {
        let tasks = TaskTracker::new();
        if let Some(l) = self.http {
            tasks.spawn(http::serve(
                l,
                self.shared.clone(),
                tasks.clone(),
                cancel.clone(),
            ));
        }
        if let Some(sock) = self.udp {
            // One receive loop per core we may run on, sharing the socket.
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            for _ in 0..workers {
                let (sock, shared, cancel) = (sock.clone(), self.shared.clone(), cancel.clone());
                tasks.spawn_blocking(move || udp::serve_blocking(&sock, &shared, &cancel));
            }
        }
        tasks.spawn(sweeper(self.shared.clone(), cancel.clone()));
        if let Some(every) = self.stats {
            tasks.spawn(stats_line(self.shared.clone(), every, cancel.clone()));
        }
        tasks.close();
        cancel.cancelled().await;
        if tokio::time::timeout(Duration::from_secs(2), tasks.wait())
            .await
            .is_err()
        {
            tracing::debug!("tracker: connections still open at shutdown");
        }
    }
}

async fn sweeper(shared: Arc<Shared>, cancel: CancellationToken) {
    let ttl = shared
        .store
        .lock()
        .expect("tracker store lock")
        .config()
        .peer_ttl;
    let every = (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = (shared.clock)();
        let dropped = shared.store.lock().expect("tracker store lock").sweep(now);
        if dropped > 0 {
            tracing::debug!(dropped, "expired peers");
        }
    }
}

async fn stats_line(shared: Arc<Shared>, every: Duration, cancel: CancellationToken) {
    let mut last = shared.counters.announces();
    let mut at = Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = shared.counters.announces();
        let secs = at.elapsed().as_secs_f64().max(1e-3);
        let (swarms, peers) = shared.store.lock().expect("tracker store lock").size();
        eprintln!(
            "tracker: {swarms} torrents, {peers} peers; announces/s: udp {:.0}, http {:.0}",
            (now.0 - last.0) as f64 / secs,
            (now.1 - last.1) as f64 / secs
        );
        last = now;
        at = Instant::now();
    }
}
