//! Wires one download together: metainfo → storage check → engine, swarm,
//! listener and tracker announcer; reports progress through [`Status`].
//!
//! Task tree (one `CancellationToken` root from `main`, a child here):
//! announcer, swarm (which owns the peer tasks), listener. Completion or a
//! fatal engine error cancels the child; the announcer then sends `stopped`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::{checker, swarm, Engine, EngineConfig, Phase};
use crate::metainfo::{self, Torrent};
use crate::storage::{FileStorage, Storage};
use crate::tracker::{self, AnnounceConfig, Tiers, Totals};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Metainfo(#[from] metainfo::Error),
    #[error("cannot prepare {path}: {source}")]
    Storage {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("interrupted: {have} of {total} pieces verified and saved; run the same command again to resume")]
    Interrupted { have: u32, total: u32 },
}

/// Everything `download` needs; the CLI fills it from flags.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub torrent: PathBuf,
    pub output: PathBuf,
    pub port: Option<u16>,
    pub bind: Option<IpAddr>,
    pub peers: Vec<SocketAddr>,
    pub engine: EngineConfig,
    pub numwant: u32,
    pub tracker_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Loading = 0,
    Checking = 1,
    Downloading = 2,
    Finishing = 3,
    Done = 4,
}

/// Progress shared with the UI; everything is read through [`Status::snapshot`].
#[derive(Default)]
pub struct Status {
    stage: AtomicU8,
    check_done: AtomicU64,
    check_total: AtomicU64,
    torrent: OnceLock<(String, u64, u32)>,
    engine: OnceLock<Arc<Engine>>,
}

/// A consistent-enough copy of the counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub stage: Stage,
    pub name: String,
    pub total_bytes: u64,
    pub num_pieces: u32,
    pub check_done: u64,
    pub check_total: u64,
    /// Verified bytes, resumed ones included.
    pub have_bytes: u64,
    /// Bytes verified this run.
    pub downloaded: u64,
    pub received: u64,
    pub uploaded: u64,
    pub connected: usize,
    pub known: usize,
}

impl Status {
    pub fn new() -> Arc<Status> {
        Arc::new(Status::default())
    }

    fn set_stage(&self, s: Stage) {
        self.stage.store(s as u8, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let stage = match self.stage.load(Ordering::Relaxed) {
            0 => Stage::Loading,
            1 => Stage::Checking,
            2 => Stage::Downloading,
            3 => Stage::Finishing,
            _ => Stage::Done,
        };
        let (name, total_bytes, num_pieces) = self.torrent.get().cloned().unwrap_or_default();
        let mut s = Snapshot {
            stage,
            name,
            total_bytes,
            num_pieces,
            check_done: self.check_done.load(Ordering::Relaxed),
            check_total: self.check_total.load(Ordering::Relaxed),
            have_bytes: 0,
            downloaded: 0,
            received: 0,
            uploaded: 0,
            connected: 0,
            known: 0,
        };
        if let Some(e) = self.engine.get() {
            let st = &e.stats;
            s.downloaded = st.downloaded.load(Ordering::Relaxed);
            s.have_bytes = st.resumed.load(Ordering::Relaxed) + s.downloaded;
            s.received = st.received.load(Ordering::Relaxed);
            s.uploaded = st.uploaded.load(Ordering::Relaxed);
            s.connected = st.connected.load(Ordering::Relaxed);
            s.known = st.known.load(Ordering::Relaxed);
        }
        s
    }
}

/// What a finished download did.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub info_hash: String,
    pub total_bytes: u64,
    pub downloaded: u64,
    pub resumed: u64,
    pub received: u64,
    pub wasted: u64,
    pub hash_failures: u64,
    pub peers: Vec<(SocketAddr, u64)>,
    pub banned: Vec<IpAddr>,
}

/// Downloads one torrent into `opts.output`. Returns when every piece is
/// verified and written, on a fatal error, or when `cancel` fires.
pub async fn download(
    opts: DownloadOptions,
    status: Arc<Status>,
    cancel: CancellationToken,
) -> Result<Report, AppError> {
    let torrent = Arc::new(Torrent::from_file(&opts.torrent)?);
    let _ = status.torrent.set((
        torrent.name.clone(),
        torrent.total_length,
        torrent.num_pieces(),
    ));
    let storage_err = |source| AppError::Storage {
        path: opts.output.clone(),
        source,
    };
    let storage = {
        let (t, out) = (torrent.clone(), opts.output.clone());
        tokio::task::spawn_blocking(move || FileStorage::new(&out, &t, true))
            .await
            .map_err(|e| AppError::Failed(e.to_string()))?
            .map_err(storage_err)?
    };
    let storage = Arc::new(storage);
    let geo = torrent.geometry();

    // Resume: whatever is already there is verified, never trusted.
    let have = if storage.has_existing_data() {
        status.set_stage(Stage::Checking);
        status.check_total.store(geo.total_len, Ordering::Relaxed);
        let (st, t, s) = (status.clone(), torrent.clone(), storage.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let threads = opts.engine.hash_workers;
        let check = tokio::task::spawn_blocking(move || {
            checker::check(&*s, geo, &t.piece_hashes, threads, &st.check_done, &stop2)
        });
        let guard = cancel.clone().drop_guard();
        let have = tokio::select! {
            h = check => h.map_err(|e| AppError::Failed(e.to_string()))?,
            _ = cancel.cancelled() => {
                stop.store(true, Ordering::Relaxed);
                return Err(AppError::Interrupted { have: 0, total: geo.num_pieces });
            }
        };
        guard.disarm();
        have
    } else {
        crate::types::Bitfield::new(geo.num_pieces)
    };

    let run = cancel.child_token();
    let mut econf = opts.engine.clone();
    econf.bind_ip = opts.bind;
    let listener = bind_listener(opts.bind, opts.port).await?;
    econf.listen_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let engine = Engine::new(
        torrent.info_hash,
        geo,
        torrent.piece_hashes.clone(),
        storage.clone() as Arc<dyn Storage>,
        &have,
        econf,
        run.clone(),
    );
    let _ = status.engine.set(engine.clone());
    status.set_stage(Stage::Downloading);

    let (swarm, swarm_task) = swarm::spawn(engine.clone(), run.clone());
    if !opts.peers.is_empty() {
        swarm.add(opts.peers.clone()).await;
    }
    let listen_task = tokio::spawn(accept_loop(listener, engine.clone(), run.clone()));

    let (complete_tx, complete_rx) = watch::channel(engine.is_complete());
    let announce_cancel = CancellationToken::new();
    let announcer = if torrent.trackers.is_empty() {
        None
    } else {
        let e = engine.clone();
        let totals = Arc::new(move || Totals {
            uploaded: e.stats.uploaded.load(Ordering::Relaxed),
            downloaded: e.stats.downloaded.load(Ordering::Relaxed),
            left: e.left(),
        });
        let cfg = AnnounceConfig {
            info_hash: torrent.info_hash,
            peer_id: engine.config.peer_id,
            port: engine.config.listen_port,
            numwant: opts.numwant,
            timeout: opts.tracker_timeout,
            peers: swarm.sender(),
            totals,
            complete: complete_rx,
        };
        Some(tokio::spawn(tracker::run_announcer(
            Tiers::new(torrent.trackers.clone()),
            cfg,
            announce_cancel.clone(),
        )))
    };

    let mut phase = engine.phase();
    let outcome = loop {
        let p = phase.borrow_and_update().clone();
        match p {
            Phase::Complete => break Ok(()),
            Phase::Failed(msg) => break Err(AppError::Failed(msg)),
            Phase::Running => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => break Err(AppError::Interrupted {
                have: engine.have_count(),
                total: geo.num_pieces,
            }),
            r = phase.changed() => if r.is_err() { break Err(AppError::Failed("engine stopped".into())) },
        }
    };

    // Peers first, so no piece is half-handled while we finish up.
    run.cancel();
    let _ = swarm_task.await;
    let _ = listen_task.await;
    if outcome.is_ok() {
        status.set_stage(Stage::Finishing);
        let s = storage.clone();
        tokio::task::spawn_blocking(move || s.finish())
            .await
            .map_err(|e| AppError::Failed(e.to_string()))?
            .map_err(storage_err)?;
        let _ = complete_tx.send(true);
    }
    if let Some(a) = announcer {
        // The announcer sends `completed` (if due) and `stopped` on its way out.
        announce_cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(12), a).await;
    }
    outcome?;
    status.set_stage(Stage::Done);
    let st = &engine.stats;
    Ok(Report {
        name: torrent.name.clone(),
        info_hash: torrent.info_hash.to_hex(),
        total_bytes: torrent.total_length,
        downloaded: st.downloaded.load(Ordering::Relaxed),
        resumed: st.resumed.load(Ordering::Relaxed),
        received: st.received.load(Ordering::Relaxed),
        wasted: st.wasted.load(Ordering::Relaxed),
        hash_failures: st.hash_failures.load(Ordering::Relaxed),
        peers: engine.contributions(),
        banned: engine.banned(),
    })
}

/// Binds the peer listener: the given port, else 6881–6889, else any.
async fn bind_listener(bind: Option<IpAddr>, port: Option<u16>) -> Result<TcpListener, AppError> {
    let ip = bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if let Some(p) = port {
        let addr = SocketAddr::new(ip, p);
        return TcpListener::bind(addr)
            .await
            .map_err(|source| AppError::Listen { addr, source });
    }
    for p in (6881..=6889).chain([0]) {
        if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, p)).await {
            return Ok(l);
        }
    }
    let addr = SocketAddr::new(ip, 0);
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Listen { addr, source })
}

/// Accepts incoming peers for this torrent while there is room.
async fn accept_loop(listener: TcpListener, engine: Arc<Engine>, cancel: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = listener.accept() => {
                let Ok((stream, addr)) = r else { continue };
                if tasks.len() >= engine.config.max_peers || engine.is_banned(addr.ip()) {
                    continue;
                }
                let (e, c) = (engine.clone(), cancel.child_token());
                tasks.spawn(async move { crate::peer::run(e, stream, addr, c).await });
            }
        }
    }
    tasks.shutdown().await;
}
