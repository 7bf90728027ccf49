//! Wires one download together: metainfo (from a file, or fetched from
//! peers for a magnet) → storage check → engine, swarm, listener, DHT node
//! and tracker announcer; reports progress through [`Status`].
//!
//! A [`Session`] holds what runs before the engine exists — the listener,
//! the DHT node and its lookups, the announcer, and the channel every peer
//! source feeds — so a magnet's metadata phase and the download share them.
//!
//! Task tree (one `CancellationToken` root from `main`, a child here):
//! announcer, DHT, swarm (which owns the peer tasks), listener. Completion
//! or a fatal engine error cancels the child; the announcer then sends
//! `stopped`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::dht::{
    self,
    node::{Dht, DhtConfig},
};
use crate::engine::{checker, swarm, Engine, EngineConfig, Phase};
use crate::listener::{self, Registry};
use crate::magnet::Magnet;
use crate::metafetch::{self, FetchConfig, FetchStatus};
use crate::metainfo::select::{self, SelectError};
use crate::metainfo::{self, FileKind, Torrent};
use crate::storage::{FileStorage, Storage};
use crate::tracker::{self, AnnounceConfig, Tiers, Totals};
use crate::types::{Bitfield, InfoHash};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Metainfo(#[from] metainfo::Error),
    #[error(transparent)]
    Select(#[from] SelectError),
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
    #[error("{bad} of {total} pieces of {path} do not match the torrent: refusing to seed")]
    BadData { bad: u32, total: u32, path: PathBuf },
    #[error("interrupted: {have} of {total} pieces verified and saved; run the same command again to resume")]
    Interrupted { have: u32, total: u32 },
    #[error("interrupted while fetching the metadata from peers; nothing was written")]
    MetadataInterrupted,
    #[error("cannot write {path}: {source}")]
    SaveTorrent {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Network settings shared by `download` and `seed`.
#[derive(Debug, Clone)]
pub struct NetOptions {
    pub port: Option<u16>,
    pub bind: Option<IpAddr>,
    pub peers: Vec<SocketAddr>,
    pub engine: EngineConfig,
    pub numwant: u32,
    /// HTTP tracker timeout, and the first wait before a UDP re-send.
    pub tracker_timeout: Duration,
    /// UDP tracker re-sends (waits double each time).
    pub udp_retries: u32,
    /// The DHT; `None` turns it off (private torrents never use it).
    pub dht: Option<DhtOptions>,
}

/// Where the DHT node listens and how it joins.
#[derive(Debug, Clone, Default)]
pub struct DhtOptions {
    /// UDP port [default: the peer listen port].
    pub port: Option<u16>,
    /// `host:port` nodes asked first.
    pub bootstrap: Vec<String>,
    /// Saved node id and nodes (read at start, written on exit).
    pub state_file: Option<PathBuf>,
}

/// First DHT re-lookup after this, then every `DHT_EVERY`.
const DHT_FIRST_AGAIN: Duration = Duration::from_secs(5 * 60);
const DHT_EVERY: Duration = Duration::from_secs(15 * 60);

/// When seeding stops by itself (otherwise on Ctrl-C).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedLimits {
    /// Stop once uploaded ≥ ratio × torrent size.
    pub ratio: Option<f64>,
    pub time: Option<Duration>,
}

/// What to download.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// The metadata is fetched from peers first (BEP-9).
    Magnet(Box<Magnet>),
}

/// Everything `download` needs; the CLI fills it from flags.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    pub source: Source,
    pub output: PathBuf,
    pub net: NetOptions,
    /// Keep seeding after completion.
    pub seed: Option<SeedLimits>,
    /// Also write the torrent here (for a magnet: the fetched metadata).
    pub save_torrent: Option<PathBuf>,
    /// Indexes of the files to download (`--select`, else a magnet's
    /// `so=`); `None` downloads every file.
    pub select: Option<Vec<RangeInclusive<u32>>>,
    /// Where fetched metadata is kept (`<info-hash>.torrent`), so running
    /// a magnet again resumes without asking peers for it.
    pub metadata_cache: Option<PathBuf>,
}

/// `left` announced for a magnet before its size is known: a leecher.
const UNKNOWN_LEFT: u64 = 16 * 1024;

/// Everything `seed` needs.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub torrent: PathBuf,
    /// The directory holding `<name>`, or the content itself.
    pub path: PathBuf,
    pub net: NetOptions,
    pub limits: SeedLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Loading = 0,
    Checking = 1,
    Downloading = 2,
    Finishing = 3,
    Seeding = 4,
    Done = 5,
    /// A magnet's info dictionary is being fetched from peers.
    Metadata = 6,
}

/// Progress shared with the UI; everything is read through [`Status::snapshot`].
#[derive(Default)]
pub struct Status {
    stage: AtomicU8,
    check_done: AtomicU64,
    check_total: AtomicU64,
    torrent: OnceLock<(String, u64, u32)>,
    engine: OnceLock<Arc<Engine>>,
    /// (seeders, leechers) as a tracker last reported them.
    swarm: std::sync::Mutex<Option<(u32, u32)>>,
    /// A magnet's name (or info-hash) and its metadata fetch.
    metadata: OnceLock<(String, Arc<FetchStatus>)>,
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
    /// (seeders, leechers) as a tracker last reported them.
    pub swarm: Option<(u32, u32)>,
    /// While fetching a magnet's metadata: bytes received and the size
    /// (0 until a peer names it).
    pub metadata: Option<(u64, u64)>,
}

impl Status {
    pub fn new() -> Arc<Status> {
        Arc::new(Status::default())
    }

    fn set_swarm(&self, seeders: u32, leechers: u32) {
        *self.swarm.lock().expect("status lock") = Some((seeders, leechers));
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
            4 => Stage::Seeding,
            6 => Stage::Metadata,
            _ => Stage::Done,
        };
        let (mut name, total_bytes, num_pieces) = self.torrent.get().cloned().unwrap_or_default();
        let mut metadata = None;
        if let (Stage::Metadata, Some((n, f))) = (stage, self.metadata.get()) {
            name.clone_from(n);
            metadata = Some((
                f.received.load(Ordering::Relaxed),
                f.size.load(Ordering::Relaxed),
            ));
        }
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
            swarm: *self.swarm.lock().expect("status lock"),
            metadata,
        };
        if let (Stage::Metadata, Some((_, f))) = (stage, self.metadata.get()) {
            s.connected = f.connected.load(Ordering::Relaxed);
            s.known = f.known.load(Ordering::Relaxed);
        }
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
    /// Bytes of the wanted pieces: the torrent's size without a selection.
    pub total_bytes: u64,
    /// The whole torrent's byte stream.
    pub torrent_bytes: u64,
    pub downloaded: u64,
    pub resumed: u64,
    pub received: u64,
    pub wasted: u64,
    pub hash_failures: u64,
    pub uploaded: u64,
    /// Seconds from start until every piece was verified (None: not this run).
    pub completed_after: Option<f64>,
    pub peers: Vec<(SocketAddr, u64)>,
    pub banned: Vec<IpAddr>,
}

/// Downloads one torrent into `opts.output`. Returns when every piece is
/// verified and written (or, with `opts.seed`, when seeding ends), on a
/// fatal error, or when `cancel` fires.
pub async fn download(
    mut opts: DownloadOptions,
    status: Arc<Status>,
    cancel: CancellationToken,
) -> Result<Report, AppError> {
    let (torrent, session) = match &opts.source {
        Source::File(path) => (Arc::new(Torrent::from_file(path)?), None),
        Source::Magnet(m) => {
            let cached = opts
                .metadata_cache
                .as_ref()
                .map(|d| d.join(format!("{}.torrent", m.info_hash.to_hex())));
            match cached.as_deref().and_then(|p| cached_metadata(p, m)) {
                Some(t) => {
                    opts.net.peers.extend(m.resolve_peers().await);
                    (Arc::new(t), None)
                }
                None => {
                    let (t, s) = fetch_metadata(m, &opts.net, &status, &cancel).await?;
                    if let Some(p) = &cached {
                        // Only a convenience: a failure costs a re-fetch.
                        let saved = std::fs::create_dir_all(p.parent().unwrap_or(p))
                            .map_err(|source| AppError::SaveTorrent {
                                path: p.clone(),
                                source,
                            })
                            .and_then(|()| save_torrent(&t, p));
                        if let Err(e) = saved {
                            tracing::debug!("metadata not cached: {e}");
                        }
                    }
                    (Arc::new(t), Some(s))
                }
            }
        }
    };
    // Checked before anything is written: a bad index is the user's slip.
    let selected = match &opts.select {
        Some(ranges) => Some(select::select_files(&torrent, ranges)?),
        None => None,
    };
    if let Some(path) = &opts.save_torrent {
        save_torrent(&torrent, path)?;
    }
    let (wanted, create) = match &selected {
        Some(sel) => {
            let wanted = select::wanted_pieces(&torrent, sel);
            let create = select::files_to_create(&torrent, sel, &wanted);
            (wanted, Some(create))
        }
        None => (Bitfield::full(torrent.num_pieces()), None),
    };
    let shown_total = select::piece_bytes(&torrent, &wanted);
    let storage = open_storage(&torrent, &opts.output, true, create).await?;
    // Resume: whatever is already there is verified, never trusted.
    let have = if storage.has_existing_data() {
        check(
            &torrent,
            shown_total,
            &storage,
            &status,
            &opts.net.engine,
            &cancel,
        )
        .await?
    } else {
        Bitfield::new(torrent.num_pieces())
    };
    let session = match session {
        Some(s) => s,
        None => Session::start(&torrent, &opts.net, &cancel).await?,
    };
    run_torrent(
        torrent,
        storage,
        have,
        wanted,
        &opts.output,
        opts.net,
        opts.seed,
        status,
        cancel,
        session,
    )
    .await
}

/// Joins the swarm of a magnet and fetches its info dictionary from peers
/// found through `tr=` trackers, `x.pe=` addresses, `--peer` and the DHT.
/// The session goes on into the download.
async fn fetch_metadata(
    m: &Magnet,
    net: &NetOptions,
    status: &Arc<Status>,
    cancel: &CancellationToken,
) -> Result<(Torrent, Session), AppError> {
    let fstatus = Arc::new(FetchStatus::default());
    let name = m.name.clone().unwrap_or_else(|| m.info_hash.to_hex());
    let _ = status.metadata.set((name, fstatus.clone()));
    status.set_stage(Stage::Metadata);
    let trackers: Vec<Vec<String>> = m.trackers.iter().map(|t| vec![t.clone()]).collect();
    let mut session = Session::begin(m.info_hash, false, &[], net, cancel).await?;
    session.announce(m.info_hash, trackers.clone(), net, status);
    let direct = m.resolve_peers().await;
    if !direct.is_empty() {
        let _ = session.peers_tx.try_send(direct);
    }
    let cfg = FetchConfig {
        info_hash: m.info_hash,
        peer_id: net.engine.peer_id,
        bind_ip: net.bind,
        listen_port: session.listen_port,
        connect_timeout: net.engine.connect_timeout,
        handshake_timeout: net.engine.handshake_timeout,
        max_conns: net.engine.max_peers.min(30),
    };
    let fetched = metafetch::fetch(cfg, &mut session.peers_rx, fstatus, cancel)
        .await
        .map_err(|_| AppError::MetadataInterrupted)?;
    let mut t = Torrent::from_info_bytes(&fetched.info)?;
    if t.info_hash != m.info_hash {
        // The fetcher checked the hash; this guards the parse round trip.
        return Err(AppError::Failed(
            "fetched metadata does not match the magnet's info-hash".into(),
        ));
    }
    t.trackers = trackers;
    t.web_seeds.clone_from(&m.web_seeds);
    if let Some(n) = &m.name {
        tracing::debug!(name = %n, torrent = %t.name, "magnet fetched");
    }
    session.initial = fetched.peers;
    Ok((t, session))
}

/// A magnet's metadata fetched by an earlier run, if it is still there and
/// still hashes to the info-hash; the link's trackers and web seeds apply.
fn cached_metadata(path: &Path, m: &Magnet) -> Option<Torrent> {
    let mut t = Torrent::from_file(path).ok()?;
    if t.info_hash != m.info_hash {
        return None;
    }
    tracing::info!(path = %path.display(), "metadata from an earlier run");
    t.trackers = m.trackers.iter().map(|u| vec![u.clone()]).collect();
    t.web_seeds.clone_from(&m.web_seeds);
    Some(t)
}

/// Writes `torrent` as a .torrent file (through a temporary file, so a
/// failure never leaves half a file).
fn save_torrent(torrent: &Torrent, path: &Path) -> Result<(), AppError> {
    let err = |source| AppError::SaveTorrent {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("torrent.part");
    std::fs::write(&tmp, torrent.to_file_bytes()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Verifies `opts.path` and serves it until Ctrl-C or a seeding limit.
pub async fn seed(
    opts: SeedOptions,
    status: Arc<Status>,
    cancel: CancellationToken,
) -> Result<Report, AppError> {
    let loaded = Torrent::from_file(&opts.torrent)?;
    let (root, torrent) = locate_content(loaded, &opts.path)?;
    let torrent = Arc::new(torrent);
    let storage = open_storage(&torrent, &root, false, None).await?;
    let have = check(
        &torrent,
        torrent.total_length,
        &storage,
        &status,
        &opts.net.engine,
        &cancel,
    )
    .await?;
    let bad = torrent.num_pieces() - have.count();
    if bad > 0 {
        return Err(AppError::BadData {
            bad,
            total: torrent.num_pieces(),
            path: root.join(
                torrent.files[0]
                    .path
                    .components()
                    .next()
                    .map_or(PathBuf::new(), |c| PathBuf::from(c.as_os_str())),
            ),
        });
    }
    let mut net = opts.net;
    net.engine.connect_when_complete = true;
    let session = Session::start(&torrent, &net, &cancel).await?;
    let all = Bitfield::full(torrent.num_pieces());
    run_torrent(
        torrent,
        storage,
        have,
        all,
        &root,
        net,
        Some(opts.limits),
        status,
        cancel,
        session,
    )
    .await
}

/// Finds the content for seeding: `PATH/<name>` (what `download -o PATH`
/// writes) or PATH itself naming the file or directory. Returns the root
/// and the torrent with paths relative to it.
fn locate_content(mut t: Torrent, path: &Path) -> Result<(PathBuf, Torrent), AppError> {
    if path.join(&t.name).exists() {
        return Ok((path.to_path_buf(), t));
    }
    let meta = std::fs::metadata(path).map_err(|source| AppError::Storage {
        path: path.to_path_buf(),
        source,
    })?;
    let fits = if t.multi_file {
        meta.is_dir()
    } else {
        meta.is_file()
    };
    let (Some(parent), Some(own), true) = (path.parent(), path.file_name(), fits) else {
        return Err(AppError::Storage {
            path: path.join(&t.name),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "content not found"),
        });
    };
    // Re-root every path under PATH's own name.
    for f in &mut t.files {
        let rest: PathBuf = f.path.components().skip(1).collect();
        f.path = PathBuf::from(own).join(rest);
        if let FileKind::Symlink { target } = &mut f.kind {
            let rest: PathBuf = target.components().skip(1).collect();
            *target = PathBuf::from(own).join(rest);
        }
    }
    let root = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_path_buf()
    };
    Ok((root, t))
}

async fn open_storage(
    torrent: &Arc<Torrent>,
    root: &Path,
    writable: bool,
    create: Option<Vec<bool>>,
) -> Result<Arc<FileStorage>, AppError> {
    let (t, out) = (torrent.clone(), root.to_path_buf());
    let s = tokio::task::spawn_blocking(move || {
        FileStorage::with_files(&out, &t, writable, create.as_deref())
    })
    .await
    .map_err(|e| AppError::Failed(e.to_string()))?
    .map_err(|source| AppError::Storage {
        path: root.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(s))
}

/// Hashes the data on disk with a progress counter in `status`, which
/// shows `total_bytes` as the size to download.
async fn check(
    torrent: &Arc<Torrent>,
    total_bytes: u64,
    storage: &Arc<FileStorage>,
    status: &Arc<Status>,
    econf: &EngineConfig,
    cancel: &CancellationToken,
) -> Result<Bitfield, AppError> {
    let geo = torrent.geometry();
    let _ = status
        .torrent
        .set((torrent.name.clone(), total_bytes, torrent.num_pieces()));
    status.set_stage(Stage::Checking);
    status.check_total.store(geo.total_len, Ordering::Relaxed);
    let (st, t, s) = (status.clone(), torrent.clone(), storage.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let threads = econf.hash_workers;
    let check = tokio::task::spawn_blocking(move || {
        checker::check(&*s, geo, &t.piece_hashes, threads, &st.check_done, &stop2)
    });
    tokio::select! {
        h = check => h.map_err(|e| AppError::Failed(e.to_string())),
        _ = cancel.cancelled() => {
            stop.store(true, Ordering::Relaxed);
            Err(AppError::Interrupted { have: 0, total: geo.num_pieces })
        }
    }
}

/// What runs before (and beside) the engine: the peer listener, the DHT
/// node with its lookups, the tracker announcer, and the channel all peer
/// sources feed.
struct Session {
    run: CancellationToken,
    listener: Option<TcpListener>,
    listen_port: u16,
    peers_tx: mpsc::Sender<Vec<SocketAddr>>,
    peers_rx: mpsc::Receiver<Vec<SocketAddr>>,
    /// Addresses known before the swarm starts (a magnet's metadata phase).
    initial: Vec<SocketAddr>,
    dht: Option<Dht>,
    /// Stops the DHT node alone: a magnet turns out to be private.
    dht_stop: CancellationToken,
    /// Set once the engine exists; the announcer reads its totals.
    engine: Arc<OnceLock<Arc<Engine>>>,
    complete_tx: watch::Sender<bool>,
    announcer: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
}

impl Session {
    async fn start(
        torrent: &Torrent,
        net: &NetOptions,
        cancel: &CancellationToken,
    ) -> Result<Session, AppError> {
        Session::begin(
            torrent.info_hash,
            torrent.private,
            &torrent.nodes,
            net,
            cancel,
        )
        .await
    }

    async fn begin(
        info_hash: InfoHash,
        private: bool,
        nodes: &[(String, u16)],
        net: &NetOptions,
        cancel: &CancellationToken,
    ) -> Result<Session, AppError> {
        let run = cancel.child_token();
        let listener = bind_listener(net.bind, net.port).await?;
        let listen_port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let (peers_tx, peers_rx) = mpsc::channel(64);
        let dht_stop = run.child_token();
        let dht = match &net.dht {
            Some(d) if !private => {
                start_dht(d, net.bind, listen_port, nodes, dht_stop.clone()).await
            }
            _ => None,
        };
        if let Some(dht) = &dht {
            // Ends with `run`, like the other tasks.
            tokio::spawn(dht_lookups(
                dht.clone(),
                info_hash,
                listen_port,
                peers_tx.clone(),
                dht_stop.clone(),
            ));
        }
        Ok(Session {
            run,
            listener: Some(listener),
            listen_port,
            peers_tx,
            peers_rx,
            initial: net.peers.clone(),
            dht,
            dht_stop,
            engine: Arc::new(OnceLock::new()),
            complete_tx: watch::channel(false).0,
            announcer: None,
        })
    }

    /// Starts announcing (once). Until the engine exists `left` is a
    /// placeholder: a magnet's size is not known yet.
    fn announce(
        &mut self,
        info_hash: InfoHash,
        trackers: Vec<Vec<String>>,
        net: &NetOptions,
        status: &Arc<Status>,
    ) {
        if trackers.is_empty() || self.announcer.is_some() {
            return;
        }
        let slot = self.engine.clone();
        let totals = Arc::new(move || match slot.get() {
            Some(e) => Totals {
                uploaded: e.stats.uploaded.load(Ordering::Relaxed),
                downloaded: e.stats.downloaded.load(Ordering::Relaxed),
                left: e.left(),
            },
            None => Totals {
                uploaded: 0,
                downloaded: 0,
                left: UNKNOWN_LEFT,
            },
        });
        let cfg = AnnounceConfig {
            info_hash,
            peer_id: net.engine.peer_id,
            port: self.listen_port,
            numwant: net.numwant,
            timeout: net.tracker_timeout,
            udp_retries: net.udp_retries,
            bind: net.bind,
            peers: self.peers_tx.clone(),
            totals,
            complete: self.complete_tx.subscribe(),
            on_swarm: {
                let status = status.clone();
                Arc::new(move |s, l| status.set_swarm(s, l))
            },
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(tracker::run_announcer(
            Tiers::new(trackers),
            cfg,
            stop.clone(),
        ));
        self.announcer = Some((task, stop));
    }
}

/// Runs the engine, swarm, listener, choker and announcer for one torrent
/// until it completes (and, with `seed`, until seeding ends).
#[allow(clippy::too_many_arguments)]
async fn run_torrent(
    torrent: Arc<Torrent>,
    storage: Arc<FileStorage>,
    have: Bitfield,
    wanted: Bitfield,
    root: &Path,
    net: NetOptions,
    seed: Option<SeedLimits>,
    status: Arc<Status>,
    cancel: CancellationToken,
    mut session: Session,
) -> Result<Report, AppError> {
    let geo = torrent.geometry();
    let started = tokio::time::Instant::now();
    let run = session.run.clone();
    let mut econf = net.engine.clone();
    econf.bind_ip = net.bind;
    econf.listen_port = session.listen_port;
    let engine = Engine::new(
        torrent.info_hash,
        geo,
        torrent.piece_hashes.clone(),
        Arc::from(torrent.info_bytes.as_slice()),
        torrent.private,
        storage.clone() as Arc<dyn Storage>,
        &have,
        wanted,
        econf,
        run.clone(),
    );
    // Progress and summary count the wanted bytes (a selection's pieces).
    let wanted_bytes = engine.wanted_bytes();
    let _ = status
        .torrent
        .set((torrent.name.clone(), wanted_bytes, torrent.num_pieces()));
    let was_complete = engine.is_complete();
    let _ = session.engine.set(engine.clone());
    let _ = status.engine.set(engine.clone());
    status.set_stage(if engine.is_complete() {
        Stage::Seeding
    } else {
        Stage::Downloading
    });

    // Before any peer connects, so handshakes carry the DHT bit.
    if torrent.private && session.dht.is_some() {
        // Known only now for a magnet: BEP-27 keeps private torrents off
        // the DHT.
        session.dht_stop.cancel();
        session.dht = None;
    }
    if let Some(dht) = &session.dht {
        let (tx, mut rx) = mpsc::channel::<SocketAddr>(64);
        let _ = engine.dht.set((dht.local_addr().port(), tx));
        let (d2, stop) = (dht.clone(), run.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    a = rx.recv() => match a {
                        Some(a) => d2.ping(a).await,
                        None => return,
                    },
                }
            }
        });
    }

    let peers_rx = std::mem::replace(&mut session.peers_rx, mpsc::channel(1).1);
    let (swarm, swarm_task) = swarm::spawn(
        engine.clone(),
        session.peers_tx.clone(),
        peers_rx,
        run.clone(),
    );
    if !session.initial.is_empty() {
        swarm.add(std::mem::take(&mut session.initial)).await;
    }
    let registry = Registry::default();
    registry.add(engine.clone(), run.clone());
    let listener = session.listener.take().expect("the listener is bound once");
    let listen_task = tokio::spawn(listener::run(listener, registry, run.clone()));
    let choker_task = tokio::spawn(engine.clone().run_choker(run.clone()));

    let complete_tx = session.complete_tx.clone();
    complete_tx.send_replace(engine.is_complete());
    session.announce(torrent.info_hash, torrent.trackers.clone(), &net, &status);

    let mut phase = engine.phase();
    let mut outcome = loop {
        let p = phase.borrow_and_update().clone();
        match p {
            Phase::Complete => break Ok(()),
            Phase::Failed(msg) => break Err(AppError::Failed(msg)),
            Phase::Running => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                let (have, total) = engine.wanted_progress();
                break Err(AppError::Interrupted { have, total });
            }
            r = phase.changed() => if r.is_err() { break Err(AppError::Failed("engine stopped".into())) },
        }
    };
    let completed_after =
        (outcome.is_ok() && !was_complete).then(|| started.elapsed().as_secs_f64());
    if outcome.is_ok() && !was_complete {
        status.set_stage(Stage::Finishing);
        let s = storage.clone();
        let synced = tokio::task::spawn_blocking(move || s.finish())
            .await
            .map_err(|e| AppError::Failed(e.to_string()))
            .and_then(|r| {
                r.map_err(|source| AppError::Storage {
                    path: root.to_path_buf(),
                    source,
                })
            });
        if let Err(e) = synced {
            outcome = Err(e);
        } else {
            let _ = complete_tx.send(true);
        }
    }
    if let (Ok(()), Some(limits)) = (&outcome, seed) {
        status.set_stage(Stage::Seeding);
        seed_until(&engine, wanted_bytes, limits, &cancel).await;
    }

    // Peers first, then the announcer's `completed`/`stopped`.
    run.cancel();
    let _ = swarm_task.await;
    let _ = listen_task.await;
    let _ = choker_task.await;
    if let Some((a, stop)) = session.announcer.take() {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(12), a).await;
    }
    outcome?;
    status.set_stage(Stage::Done);
    let st = &engine.stats;
    Ok(Report {
        name: torrent.name.clone(),
        info_hash: torrent.info_hash.to_hex(),
        total_bytes: wanted_bytes,
        torrent_bytes: torrent.total_length,
        downloaded: st.downloaded.load(Ordering::Relaxed),
        resumed: st.resumed.load(Ordering::Relaxed),
        received: st.received.load(Ordering::Relaxed),
        wasted: st.wasted.load(Ordering::Relaxed),
        hash_failures: st.hash_failures.load(Ordering::Relaxed),
        uploaded: st.uploaded.load(Ordering::Relaxed),
        completed_after,
        peers: engine.contributions(),
        banned: engine.banned(),
    })
}

/// Serves until Ctrl-C, the upload ratio, or the seeding time is reached.
async fn seed_until(engine: &Engine, total: u64, limits: SeedLimits, cancel: &CancellationToken) {
    let started = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(r) = limits.ratio {
            if engine.stats.uploaded.load(Ordering::Relaxed) as f64 >= r * total as f64 {
                return;
            }
        }
        if limits.time.is_some_and(|t| started.elapsed() >= t) {
            return;
        }
    }
}

/// Binds the peer listener: the given port, else 6881–6889, else any.
/// Starts the torrent's DHT node; a failure costs only the DHT.
async fn start_dht(
    d: &DhtOptions,
    bind: Option<IpAddr>,
    listen_port: u16,
    nodes: &[(String, u16)],
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
    cfg.bootstrap
        .extend(nodes.iter().map(|(h, p)| format!("{h}:{p}")));
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

/// Looks the torrent up on the DHT (announcing our listen port) now, again
/// after 5 minutes, then every 15; found peers go to the swarm.
async fn dht_lookups(
    dht: Dht,
    info_hash: InfoHash,
    listen_port: u16,
    peers: tokio::sync::mpsc::Sender<Vec<SocketAddr>>,
    cancel: CancellationToken,
) {
    // implied_port when the DHT shares the peer port: right behind a NAT.
    let announce = if dht.local_addr().port() == listen_port {
        0
    } else {
        listen_port
    };
    let mut wait = DHT_FIRST_AGAIN;
    loop {
        let (mut found, done) = dht.get_peers(info_hash, Some(announce)).await;
        let mut total = 0;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                p = found.recv() => match p {
                    Some(p) => {
                        total += p.len();
                        let _ = peers.send(p).await;
                    }
                    None => break,
                },
            }
        }
        if let Ok(stats) = done.await {
            tracing::info!(
                peers = total,
                queries = stats.queries,
                announced = stats.announced,
                "DHT lookup done"
            );
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = DHT_EVERY;
    }
}

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
