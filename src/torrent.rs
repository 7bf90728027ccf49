//! One torrent's life inside a [`Session`](crate::session::Session): an
//! actor task that loads the metainfo (or fetches it for a magnet),
//! checks what is on disk (fast resume: files whose size and mtime match
//! the resume record are trusted), and then runs the torrent in *runs*:
//! a run is the engine, the swarm, the choker, the announcer and the DHT
//! lookups under one cancellation token. Pausing ends the run (peers
//! closed, trackers told `stopped`, resume record flushed); resuming
//! starts a new one from the verified pieces. A [`TorrentHandle`] sends
//! the actor commands and reads its [`Status`] snapshots.
//!
//! ```text
//! actor ── run token (child of the torrent's, child of the session's)
//!   ├─ [magnet] metafetch on the run's peer channel
//!   ├─ announcer ── mpsc<Vec<SocketAddr>> (64) ──┐
//!   ├─ DHT lookups ──────────────────────────────┤
//!   ├─ swarm (dials; PEX feeds the same channel) <┘
//!   └─ choker
//! ```

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::SessionConfig;
use crate::dht::node::Dht;
use crate::engine::ratelimit::RatePair;
use crate::engine::{self, checker, Engine, EngineError, Phase, Setup, Stats};
use crate::listener::Registry;
use crate::magnet::Magnet;
use crate::metafetch::{self, FetchConfig, FetchStatus};
use crate::metainfo::select::{self, SelectError};
use crate::metainfo::{self, FileKind, Torrent};
use crate::resume;
use crate::storage::{FileStorage, Storage};
use crate::swarm::{self, Limits};
use crate::tracker::{self, AnnounceConfig, AnnounceReport, Tiers, Totals};
use crate::types::{Bitfield, InfoHash, PeerId};

/// First DHT re-lookup after this, then every `DHT_EVERY`.
const DHT_FIRST_AGAIN: Duration = Duration::from_secs(5 * 60);
const DHT_EVERY: Duration = Duration::from_secs(15 * 60);
/// `left` announced for a magnet before its size is known: a leecher.
const UNKNOWN_LEFT: u64 = 16 * 1024;
/// How long the announcer may take to send `stopped`.
const STOP_ANNOUNCE: Duration = Duration::from_secs(12);

/// Web seeds used at once per torrent (a list may name hundreds).
const MAX_WEB_SEEDS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error(transparent)]
    Metainfo(#[from] metainfo::Error),
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("cannot prepare {path}")]
    Storage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(Arc<EngineError>),
    #[error("{path} is in the way: it holds data that matches no piece of the torrent, and xorrent did not write it; move it away, or pass --overwrite to replace it")]
    Unrelated { path: PathBuf },
    #[error("{bad} of {total} pieces of {path} do not match the torrent: refusing to seed")]
    BadData { bad: u32, total: u32, path: PathBuf },
    #[error("interrupted: {have} of {total} pieces verified and saved; run the same command again to resume")]
    Interrupted { have: u32, total: u32 },
    #[error("interrupted while fetching the metadata from peers; nothing was written")]
    MetadataInterrupted,
    #[error("the fetched metadata does not match the magnet's info-hash")]
    MetadataMismatch,
    #[error("cannot write {path}")]
    SaveTorrent {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a background task of the torrent failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("the torrent was removed")]
    Removed,
}

/// What to add.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// The bytes of a .torrent file.
    Bytes(Vec<u8>),
    /// Already parsed (and perhaps re-rooted, as `seed` does).
    Parsed(Box<Torrent>),
    /// The metadata is fetched from peers first (BEP-9).
    Magnet(Box<Magnet>),
}

impl Source {
    /// The info-hash, parsing the torrent if needed (`None`: a file not
    /// read yet).
    pub fn info_hash(&self) -> Result<Option<InfoHash>, TorrentError> {
        Ok(match self {
            Source::File(_) => None,
            Source::Bytes(b) => Some(Torrent::from_bytes(b)?.info_hash),
            Source::Parsed(t) => Some(t.info_hash),
            Source::Magnet(m) => Some(m.info_hash),
        })
    }
}

/// When seeding stops by itself (otherwise on Ctrl-C).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeedLimits {
    /// Stop once uploaded ≥ ratio × torrent size.
    pub ratio: Option<f64>,
    pub time: Option<Duration>,
}

/// A torrent to add to a session.
#[derive(Debug, Clone)]
pub struct AddTorrent {
    pub source: Source,
    /// The torrent's files go below this directory.
    pub output: PathBuf,
    /// Indexes of the files to download (`--select`, a magnet's `so=`);
    /// `None` downloads every file.
    pub select: Option<Vec<RangeInclusive<u32>>>,
    /// Added but not started.
    pub paused: bool,
    /// Keep seeding after completion, until these limits; `None`: the
    /// torrent finishes when complete.
    pub seed: Option<SeedLimits>,
    /// Seed only: every piece must be there (no file is created or
    /// written); a mismatch refuses.
    pub seed_only: bool,
    /// Also write the metainfo here (for a magnet: once fetched).
    pub save_torrent: Option<PathBuf>,
    /// Peers to dial besides what trackers and the DHT find.
    pub peers: Vec<SocketAddr>,
    /// The torrent's own caps in bytes/s (0: none).
    pub max_upload_rate: u64,
    pub max_download_rate: u64,
    /// Hash everything on disk even if the resume record trusts it.
    pub recheck: bool,
    /// Write over existing files that share no piece with the torrent
    /// (otherwise the torrent fails before anything is written).
    pub overwrite: bool,
    /// Fetch from the torrent's (and magnet's) BEP-19 web seeds.
    pub web_seeds: bool,
}

impl AddTorrent {
    pub fn new(source: Source, output: PathBuf) -> AddTorrent {
        AddTorrent {
            source,
            output,
            select: None,
            paused: false,
            seed: None,
            seed_only: false,
            save_torrent: None,
            peers: Vec::new(),
            max_upload_rate: 0,
            max_download_rate: 0,
            recheck: false,
            overwrite: false,
            web_seeds: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Loading,
    /// A magnet's info dictionary is being fetched from peers.
    Metadata,
    Checking,
    Downloading,
    Finishing,
    Seeding,
    Paused,
    /// Complete and stopped (no seeding asked for), or removed.
    Done,
    Failed,
}

impl Stage {
    /// A run is under way: peers may be connected.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Stage::Metadata | Stage::Downloading | Stage::Finishing | Stage::Seeding
        )
    }
}

/// Progress shared with the UI; everything is read through [`Status::snapshot`].
#[derive(Default)]
pub struct Status {
    stage: Mutex<Option<Stage>>,
    check_done: AtomicU64,
    check_total: AtomicU64,
    /// Name, wanted bytes, pieces.
    torrent: Mutex<Option<(String, u64, u32)>>,
    engine: Mutex<Option<Arc<Engine>>>,
    /// How the last announce round went.
    announce: Mutex<Option<AnnounceReport>>,
    /// Verified pieces as last known (a run's end, a paused torrent's
    /// resume record); a running engine's own bitfield is newer.
    have_view: Mutex<Option<Bitfield>>,
    /// A magnet's name (or info-hash) and its metadata fetch.
    metadata: OnceLock<(String, Arc<FetchStatus>)>,
    stats: Arc<Stats>,
    error: Mutex<Option<Arc<TorrentError>>>,
    /// Rates from the session's sampling.
    rates: Mutex<Rates>,
    /// How the last check went: (fast, seconds, bytes read).
    check: Mutex<Option<CheckReport>>,
    /// The metainfo, the output directory and the resume record's path,
    /// once known: removal works even after the actor ended.
    meta: Mutex<Option<Placed>>,
}

/// A torrent, where its files go, and where its resume record is.
type Placed = (Arc<Torrent>, PathBuf, Option<PathBuf>);

/// How the start-up check went, for the summary.
#[derive(Debug, Clone, Copy)]
pub struct CheckReport {
    /// The resume record let some pieces go unhashed.
    pub fast: bool,
    /// Pieces hashed.
    pub hashed: u32,
    pub secs: f64,
}

#[derive(Default)]
struct Rates {
    last: Option<(Instant, u64, u64)>,
    down: f64,
    up: f64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A consistent-enough copy of the counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub stage: Stage,
    pub name: String,
    /// Bytes of the wanted pieces.
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
    /// Connected peers (web seeds not counted).
    pub connected: usize,
    pub known: usize,
    /// Web seeds being fetched from.
    pub web_seeds: usize,
    /// (seeders, leechers) as a tracker last reported them.
    pub swarm: Option<(u32, u32)>,
    /// While fetching a magnet's metadata: bytes received and the size
    /// (0 until a peer names it).
    pub metadata: Option<(u64, u64)>,
    /// Bytes/s over the last few seconds.
    pub down_rate: u64,
    pub up_rate: u64,
    pub error: Option<Arc<TorrentError>>,
}

impl Snapshot {
    /// Seconds to completion at the current rate; `None` when unknown.
    pub fn eta(&self) -> Option<u64> {
        let left = self.total_bytes.saturating_sub(self.have_bytes);
        if left == 0 {
            return Some(0);
        }
        (self.down_rate > 0).then(|| left.div_ceil(self.down_rate))
    }

    /// Uploaded over the torrent's wanted size.
    pub fn ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.uploaded as f64 / self.total_bytes as f64
        }
    }
}

impl Status {
    pub fn new() -> Arc<Status> {
        Arc::new(Status::default())
    }

    fn set_announce(&self, r: AnnounceReport) {
        let mut a = lock(&self.announce);
        // A failed round keeps the counts the last answer gave.
        if let (None, Some(old)) = (&r.url, a.as_ref()) {
            let (seeders, leechers) = (old.seeders, old.leechers);
            *a = Some(AnnounceReport {
                seeders,
                leechers,
                ..r
            });
        } else {
            *a = Some(r);
        }
    }

    fn set_have_view(&self, have: &Bitfield) {
        *lock(&self.have_view) = Some(have.clone());
    }

    fn set_stage(&self, s: Stage) {
        *lock(&self.stage) = Some(s);
    }

    fn stage(&self) -> Stage {
        lock(&self.stage).unwrap_or(Stage::Loading)
    }

    /// Takes a rate sample (the session calls this about once a second).
    pub fn sample(&self) {
        let now = Instant::now();
        let (down, up) = (
            self.stats.received.load(Ordering::Relaxed),
            self.stats.uploaded.load(Ordering::Relaxed),
        );
        let mut r = lock(&self.rates);
        if let Some((t, d0, u0)) = r.last {
            let dt = now.saturating_duration_since(t).as_secs_f64();
            if dt >= 0.2 {
                // An average over about five seconds.
                let a = (dt / 5.0).min(1.0);
                r.down += a * ((down.saturating_sub(d0)) as f64 / dt - r.down);
                r.up += a * ((up.saturating_sub(u0)) as f64 / dt - r.up);
                r.last = Some((now, down, up));
                if let Some(e) = lock(&self.engine).as_ref() {
                    e.sample_peers(dt);
                }
            }
        } else {
            r.last = Some((now, down, up));
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let stage = self.stage();
        let (mut name, total_bytes, num_pieces) = lock(&self.torrent).clone().unwrap_or_default();
        let mut metadata = None;
        let (mut connected, mut known) = (0, 0);
        if let (Stage::Metadata, Some((n, f))) = (stage, self.metadata.get()) {
            name.clone_from(n);
            metadata = Some((
                f.received.load(Ordering::Relaxed),
                f.size.load(Ordering::Relaxed),
            ));
            connected = f.connected.load(Ordering::Relaxed);
            known = f.known.load(Ordering::Relaxed);
        } else if name.is_empty() {
            if let Some((n, _)) = self.metadata.get() {
                name.clone_from(n);
            }
        }
        let st = &self.stats;
        let downloaded = st.downloaded.load(Ordering::Relaxed);
        let web_seeds = st.web_seeds.load(Ordering::Relaxed);
        if stage != Stage::Metadata {
            connected = st
                .connected
                .load(Ordering::Relaxed)
                .saturating_sub(web_seeds);
            known = st.known.load(Ordering::Relaxed);
        }
        let rates = lock(&self.rates);
        Snapshot {
            stage,
            name,
            total_bytes,
            num_pieces,
            check_done: self.check_done.load(Ordering::Relaxed),
            check_total: self.check_total.load(Ordering::Relaxed),
            have_bytes: st.resumed.load(Ordering::Relaxed) + downloaded,
            downloaded,
            received: st.received.load(Ordering::Relaxed),
            uploaded: st.uploaded.load(Ordering::Relaxed),
            connected,
            known,
            web_seeds,
            swarm: lock(&self.announce)
                .as_ref()
                .and_then(|a| a.seeders.zip(a.leechers)),
            metadata,
            down_rate: rates.down.max(0.0) as u64,
            up_rate: rates.up.max(0.0) as u64,
            error: lock(&self.error).clone(),
        }
    }

    pub fn check_report(&self) -> Option<CheckReport> {
        *lock(&self.check)
    }
}

/// What a finished torrent did.
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
    pub peers: Vec<crate::engine::Contribution>,
    pub banned: Vec<std::net::IpAddr>,
    pub check: Option<CheckReport>,
}

enum Cmd {
    Pause(oneshot::Sender<()>),
    Resume,
    Select(
        Option<Vec<RangeInclusive<u32>>>,
        oneshot::Sender<Result<(), TorrentError>>,
    ),
    Remove(bool, oneshot::Sender<Result<(), TorrentError>>),
    /// Hash everything again (now if running, else at the next start).
    Verify,
    /// New seeding limits, from now on.
    SeedLimits(SeedLimits),
}

type Outcome = Option<Result<Report, Arc<TorrentError>>>;

/// A torrent in a session. Cheap to clone; the actor lives until the
/// torrent finishes, fails, is removed, or the session ends.
#[derive(Clone)]
pub struct TorrentHandle {
    id: u64,
    info_hash: Arc<OnceLock<InfoHash>>,
    cmds: mpsc::Sender<Cmd>,
    status: Arc<Status>,
    rates: Arc<RatePair>,
    done: watch::Receiver<Outcome>,
    cancel: CancellationToken,
    added_at: SystemTime,
}

impl std::fmt::Debug for TorrentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorrentHandle")
            .field("id", &self.id)
            .field("info_hash", &self.info_hash.get())
            .finish()
    }
}

impl TorrentHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The info-hash (all zeros while a .torrent file is still being read).
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash.get().copied().unwrap_or(InfoHash([0; 20]))
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    pub fn stats(&self) -> Snapshot {
        self.status.snapshot()
    }

    pub fn added_at(&self) -> SystemTime {
        self.added_at
    }

    /// The metainfo and the directory its files go below, once known.
    pub fn meta(&self) -> Option<(Arc<Torrent>, PathBuf)> {
        lock(&self.status.meta)
            .as_ref()
            .map(|(t, root, _)| (t.clone(), root.clone()))
    }

    /// Verified pieces as far as known (`None` before the first check).
    pub fn pieces(&self) -> Option<Bitfield> {
        let running = lock(&self.status.engine)
            .clone()
            .filter(|_| self.status.stage().is_active());
        match running {
            Some(e) => Some(e.have_bitfield()),
            None => lock(&self.status.have_view).clone(),
        }
    }

    /// The connected peers (none unless running).
    pub fn peers(&self) -> Vec<crate::engine::PeerInfo> {
        match lock(&self.status.engine).clone() {
            Some(e) if self.status.stage().is_active() => e.peer_infos(),
            _ => Vec::new(),
        }
    }

    /// How the last announce round went.
    pub fn last_announce(&self) -> Option<AnnounceReport> {
        lock(&self.status.announce).clone()
    }

    /// Keeps seeding until these limits (replacing the ones given at add).
    pub async fn set_seed_limits(&self, limits: SeedLimits) {
        let _ = self.cmds.send(Cmd::SeedLimits(limits)).await;
    }

    /// Hashes all the data again: at once if running, else when resumed.
    pub async fn verify(&self) {
        let _ = self.cmds.send(Cmd::Verify).await;
    }

    /// Closes the peers, tells the trackers `stopped`, flushes the resume
    /// record; returns once that is done.
    pub async fn pause(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Pause(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    pub async fn resume(&self) {
        let _ = self.cmds.send(Cmd::Resume).await;
    }

    /// Downloads only these files from now on (`None`: all).
    pub async fn set_selection(
        &self,
        files: Option<Vec<RangeInclusive<u32>>>,
    ) -> Result<(), TorrentError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Select(files, tx))
            .await
            .map_err(|_| TorrentError::Removed)?;
        rx.await.map_err(|_| TorrentError::Removed)?
    }

    /// The torrent's own caps in bytes/s (0: none), effective at once.
    pub fn set_rate_limits(&self, up: u64, down: u64) {
        self.rates.up.set_rate(up);
        self.rates.down.set_rate(down);
    }

    pub fn rate_limits(&self) -> (u64, u64) {
        (self.rates.up.rate(), self.rates.down.rate())
    }

    pub(crate) async fn remove(&self, delete_data: bool) -> Result<(), TorrentError> {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Remove(delete_data, tx)).await.is_ok() {
            if let Ok(r) = rx.await {
                return r;
            }
        }
        // The actor has ended (finished or failed): clean up here.
        let meta = lock(&self.status.meta).clone();
        let Some((t, root, resume)) = meta else {
            return Ok(());
        };
        remove_files(t, root, resume, delete_data).await
    }

    pub(crate) fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits until the torrent is done (complete and not seeding, seeding
    /// ended, failed, removed, or the session stopped).
    pub async fn wait(&self) -> Result<Report, Arc<TorrentError>> {
        let mut rx = self.done.clone();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return Err(Arc::new(TorrentError::Removed));
            }
        }
    }
}

/// What a torrent's actor sees of the process: built once by the
/// session, shared by every torrent.
pub(crate) struct Context {
    pub config: SessionConfig,
    pub peer_id: PeerId,
    pub listen_port: u16,
    pub registry: Registry,
    pub dht: Option<Dht>,
    /// Peers' DHT nodes (BEP-5 `port`) to ping; bounded, overflow dropped.
    pub dht_pings: Option<mpsc::Sender<SocketAddr>>,
    pub shared: engine::Shared,
    pub limits: Limits,
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
}

/// Starts a torrent's actor in the session's task tracker.
pub(crate) fn spawn(
    session: Arc<Context>,
    id: u64,
    add: AddTorrent,
) -> Result<TorrentHandle, TorrentError> {
    let info_hash = Arc::new(OnceLock::new());
    if let Some(ih) = add.source.info_hash()? {
        let _ = info_hash.set(ih);
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (done_tx, done_rx) = watch::channel(None);
    let status = Status::new();
    let rates = Arc::new(RatePair::new(add.max_upload_rate, add.max_download_rate));
    let cancel = session.cancel.child_token();
    let handle = TorrentHandle {
        id,
        info_hash: info_hash.clone(),
        cmds: cmd_tx,
        status: status.clone(),
        rates: rates.clone(),
        done: done_rx,
        cancel: cancel.clone(),
        added_at: SystemTime::now(),
    };
    let actor = Actor {
        session: session.clone(),
        add,
        info_hash,
        status,
        rates,
        cancel,
        cmds: cmd_rx,
        paused: false,
        torrent: None,
        have: None,
        wanted: None,
        create: None,
        root: PathBuf::new(),
        started: tokio::time::Instant::now(),
        completed_after: None,
        recheck_next: false,
    };
    let name = format!("torrent {id}");
    let (registry, ih) = (session.registry.clone(), actor.info_hash.clone());
    if let Some(h) = ih.get() {
        registry.reserve(*h);
    }
    session.tasks.spawn(async move {
        let result = actor.run().await.map_err(Arc::new);
        if let Some(h) = ih.get() {
            registry.forget(h);
        }
        if let Err(e) = &result {
            tracing::debug!(torrent = %name, error = %e, "torrent ended");
        }
        let _ = done_tx.send(Some(result));
    });
    Ok(handle)
}

struct Actor {
    session: Arc<Context>,
    add: AddTorrent,
    info_hash: Arc<OnceLock<InfoHash>>,
    status: Arc<Status>,
    rates: Arc<RatePair>,
    /// The torrent's token: cancelled on removal or session shutdown.
    cancel: CancellationToken,
    cmds: mpsc::Receiver<Cmd>,
    paused: bool,
    torrent: Option<Arc<Torrent>>,
    /// Verified pieces (after the first check).
    have: Option<Bitfield>,
    wanted: Option<Bitfield>,
    /// Which files storage may create (a selection).
    create: Option<Vec<bool>>,
    root: PathBuf,
    started: tokio::time::Instant,
    completed_after: Option<f64>,
    /// A verify was asked for while running.
    recheck_next: bool,
}

/// Why a run ended.
enum RunEnd {
    /// Complete, and no seeding asked for; or seeding limits reached.
    Finished,
    Paused(oneshot::Sender<()>),
    /// The selection changed: start again with the new wanted pieces.
    Reselect,
    Removed(bool, oneshot::Sender<Result<(), TorrentError>>),
    /// The session is stopping.
    Cancelled,
    Failed(TorrentError),
}

/// The tasks of one run.
struct Run {
    token: CancellationToken,
    peers_tx: mpsc::Sender<Vec<SocketAddr>>,
    peers_rx: Option<mpsc::Receiver<Vec<SocketAddr>>>,
    engine: Arc<Mutex<Option<Arc<Engine>>>>,
    complete_tx: watch::Sender<bool>,
    announcer: Option<tokio::task::JoinHandle<()>>,
    announcer_stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Actor {
    async fn run(mut self) -> Result<Report, TorrentError> {
        self.paused = self.add.paused;
        self.status.set_stage(Stage::Loading);
        // Fail fast on a bad .torrent, before anything touches the disk.
        self.load_torrent().await?;
        if self.paused {
            self.preview_resume().await;
        }
        loop {
            if self.paused {
                self.status.set_stage(Stage::Paused);
                if let Some(end) = self.wait_paused().await {
                    return self.finish_end(end).await;
                }
            }
            let end = self.run_once().await;
            match end {
                RunEnd::Paused(reply) => {
                    self.paused = true;
                    self.status.set_stage(Stage::Paused);
                    let _ = reply.send(());
                }
                RunEnd::Reselect => {
                    if std::mem::take(&mut self.recheck_next) {
                        self.forget_verified();
                    }
                }
                other => return self.finish_end(other).await,
            }
        }
    }

    /// While paused: waits for resume, removal or shutdown.
    async fn wait_paused(&mut self) -> Option<RunEnd> {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Some(RunEnd::Cancelled),
                c = self.cmds.recv() => match c {
                    Some(Cmd::Resume) => { self.paused = false; return None; }
                    Some(Cmd::Pause(r)) => { let _ = r.send(()); }
                    Some(Cmd::Select(s, r)) => { let _ = r.send(self.apply_selection(s)); }
                    Some(Cmd::Remove(d, r)) => return Some(RunEnd::Removed(d, r)),
                    Some(Cmd::Verify) => self.forget_verified(),
                    Some(Cmd::SeedLimits(l)) => self.add.seed = Some(l),
                    None => return Some(RunEnd::Cancelled),
                },
            }
        }
    }

    /// The next start hashes everything (`torrent-verify`).
    fn forget_verified(&mut self) {
        self.have = None;
        self.add.recheck = true;
    }

    async fn finish_end(self, end: RunEnd) -> Result<Report, TorrentError> {
        match end {
            RunEnd::Finished => Ok(self.report()),
            RunEnd::Cancelled => {
                if let (Some(t), Some(h)) = (&self.torrent, &self.have) {
                    let wanted = self
                        .wanted
                        .clone()
                        .unwrap_or_else(|| Bitfield::full(t.num_pieces()));
                    let done = wanted.iter_ones().filter(|&p| h.get(p)).count() as u32;
                    if done == wanted.count() {
                        return Ok(self.report());
                    }
                    return Err(TorrentError::Interrupted {
                        have: done,
                        total: wanted.count(),
                    });
                }
                if matches!(self.add.source, Source::Magnet(_)) && self.torrent.is_none() {
                    return Err(TorrentError::MetadataInterrupted);
                }
                Err(TorrentError::Interrupted { have: 0, total: 0 })
            }
            RunEnd::Removed(delete, reply) => {
                let r = self.delete(delete).await;
                self.status.set_stage(Stage::Done);
                let _ = reply.send(r);
                Err(TorrentError::Removed)
            }
            RunEnd::Failed(e) => {
                self.status.set_stage(Stage::Failed);
                Err(e)
            }
            RunEnd::Paused(_) | RunEnd::Reselect => unreachable!("handled by the loop"),
        }
    }

    fn report(&self) -> Report {
        let st = &self.status.stats;
        let engine = lock(&self.status.engine).clone();
        let t = self.torrent.as_deref();
        let total = match (&self.wanted, t) {
            (Some(w), Some(t)) => select::piece_bytes(t, w),
            (None, Some(t)) => t.total_length,
            _ => 0,
        };
        Report {
            name: t.map(|t| t.name.clone()).unwrap_or_default(),
            info_hash: self.info_hash.get().map(|h| h.to_hex()).unwrap_or_default(),
            total_bytes: total,
            torrent_bytes: t.map_or(0, |t| t.total_length),
            downloaded: st.downloaded.load(Ordering::Relaxed),
            resumed: st.resumed.load(Ordering::Relaxed),
            received: st.received.load(Ordering::Relaxed),
            wasted: st.wasted.load(Ordering::Relaxed),
            hash_failures: st.hash_failures.load(Ordering::Relaxed),
            uploaded: st.uploaded.load(Ordering::Relaxed),
            completed_after: self.completed_after,
            peers: engine
                .as_ref()
                .map(|e| e.contributions())
                .unwrap_or_default(),
            banned: engine.as_ref().map(|e| e.banned()).unwrap_or_default(),
            check: self.status.check_report(),
        }
    }

    /// Reads the metainfo (or a magnet's cached metadata).
    async fn load_torrent(&mut self) -> Result<(), TorrentError> {
        let t = match &self.add.source {
            Source::File(path) => {
                let p = path.clone();
                Some(
                    tokio::task::spawn_blocking(move || Torrent::from_file(&p))
                        .await
                        .map_err(TorrentError::Task)??,
                )
            }
            Source::Bytes(b) => Some(Torrent::from_bytes(b)?),
            Source::Parsed(t) => Some((**t).clone()),
            Source::Magnet(m) => {
                let name = m.name.clone().unwrap_or_else(|| m.info_hash.to_hex());
                let _ = self
                    .status
                    .metadata
                    .set((name, Arc::new(FetchStatus::default())));
                self.metadata_cache().and_then(|p| cached_metadata(&p, m))
            }
        };
        if let Some(t) = t {
            self.set_torrent(t)?;
        }
        Ok(())
    }

    /// A torrent that starts paused shows the progress its resume record
    /// vouches for, without hashing anything (the check runs on resume).
    async fn preview_resume(&self) {
        let (Some(t), Some(path)) = (self.torrent.clone(), self.resume_path()) else {
            return;
        };
        let root = self.root.clone();
        let judged = tokio::task::spawn_blocking(move || {
            let rec = resume::load(&path).ok().flatten()?;
            let stamps = resume::stamp_files(&root, &t);
            let mut trust = resume::trusted(&rec, &t, &root, &stamps).ok()?;
            resume::drop_holes(&root, &t, &mut trust.have, &mut trust.recheck);
            let geo = t.geometry();
            let bytes: u64 = trust
                .have
                .iter_ones()
                .map(|p| u64::from(geo.piece_size(p)))
                .sum();
            Some((trust.have, bytes))
        })
        .await;
        if let Ok(Some((have, bytes))) = judged {
            self.status.stats.resumed.store(bytes, Ordering::Relaxed);
            self.status.set_have_view(&have);
        }
    }

    fn metadata_cache(&self) -> Option<PathBuf> {
        let ih = self.info_hash.get()?;
        let dir = self.session.config.state_dir.as_ref()?;
        Some(
            dir.join("metadata")
                .join(format!("{}.torrent", ih.to_hex())),
        )
    }

    /// One task per distinct web seed of the torrent and of its magnet.
    fn start_web_seeds(&self, run: &mut Run, engine: &Arc<Engine>, t: &Arc<Torrent>) {
        let mut bases: Vec<String> = t.web_seeds.clone();
        if let Source::Magnet(m) = &self.add.source {
            bases.extend(m.web_seeds.iter().cloned());
        }
        let mut seen = std::collections::HashSet::new();
        bases.retain(|b| seen.insert(b.clone()));
        if bases.is_empty() {
            return;
        }
        let http = crate::webseed::client(self.session.config.bind);
        for base in bases.into_iter().take(MAX_WEB_SEEDS) {
            let (engine, t, http, token) =
                (engine.clone(), t.clone(), http.clone(), run.token.clone());
            run.tasks.push(tokio::spawn(async move {
                if let Err(e) = crate::webseed::run(engine, t, base.clone(), http, token).await {
                    tracing::warn!("web seed {base} dropped: {e}");
                }
            }));
        }
    }

    /// A resume record says an earlier run downloaded into this root.
    fn wrote_here(&self) -> bool {
        self.resume_path()
            .and_then(|p| resume::load(&p).ok().flatten())
            .is_some_and(|r| r.is_for(&self.root))
    }

    fn resume_path(&self) -> Option<PathBuf> {
        let ih = self.info_hash.get()?;
        let dir = self.session.config.state_dir.as_ref()?;
        Some(dir.join("resume").join(format!("{}.resume", ih.to_hex())))
    }

    /// Adopts the metainfo: checks the selection (a bad index is an error
    /// before anything is written) and saves `--save-torrent`.
    fn set_torrent(&mut self, t: Torrent) -> Result<(), TorrentError> {
        let _ = self.info_hash.set(t.info_hash);
        self.session.registry.reserve(t.info_hash);
        if let Some(path) = &self.add.save_torrent {
            save_torrent(&t, path)?;
        }
        self.root = self.add.output.clone();
        let t = Arc::new(t);
        self.torrent = Some(t.clone());
        *lock(&self.status.meta) = Some((t.clone(), self.root.clone(), self.resume_path()));
        let sel = self.add.select.clone();
        self.apply_selection(sel)?;
        let wanted = self.wanted.as_ref().expect("set by apply_selection");
        *lock(&self.status.torrent) = Some((
            t.name.clone(),
            select::piece_bytes(&t, wanted),
            t.num_pieces(),
        ));
        Ok(())
    }

    fn apply_selection(
        &mut self,
        sel: Option<Vec<RangeInclusive<u32>>>,
    ) -> Result<(), TorrentError> {
        let Some(t) = &self.torrent else {
            self.add.select = sel;
            return Ok(());
        };
        let (wanted, create) = match &sel {
            Some(ranges) => {
                let files = select::select_files(t, ranges)?;
                let wanted = select::wanted_pieces(t, &files);
                let create = select::files_to_create(t, &files, &wanted);
                (wanted, Some(create))
            }
            None => (Bitfield::full(t.num_pieces()), None),
        };
        *lock(&self.status.torrent) = Some((
            t.name.clone(),
            select::piece_bytes(t, &wanted),
            t.num_pieces(),
        ));
        self.add.select = sel;
        self.wanted = Some(wanted);
        self.create = create;
        Ok(())
    }

    /// One run: from start (or resume) until pause, completion, removal,
    /// failure or shutdown.
    async fn run_once(&mut self) -> RunEnd {
        let mut run = self.start_run();
        if self.torrent.is_none() {
            if let Some(end) = self.fetch_metadata(&mut run).await {
                self.stop_run(run).await;
                return end;
            }
        }
        let end = self.run_engine(&mut run).await;
        self.stop_run(run).await;
        end
    }

    fn start_run(&mut self) -> Run {
        let token = self.cancel.child_token();
        let (peers_tx, peers_rx) = mpsc::channel(64);
        let mut run = Run {
            token,
            peers_tx,
            peers_rx: Some(peers_rx),
            engine: Arc::new(Mutex::new(None)),
            complete_tx: watch::channel(false).0,
            announcer: None,
            announcer_stop: CancellationToken::new(),
            tasks: Vec::new(),
        };
        let (ih, private, nodes) = match (&self.torrent, &self.add.source) {
            (Some(t), _) => (t.info_hash, t.private, t.nodes.clone()),
            (None, Source::Magnet(m)) => (m.info_hash, false, Vec::new()),
            (None, _) => unreachable!("only a magnet starts without its metainfo"),
        };
        if let (Some(dht), false) = (&self.session.dht, private) {
            run.tasks.push(tokio::spawn(dht_lookups(
                dht.clone(),
                ih,
                nodes,
                self.session.listen_port,
                run.peers_tx.clone(),
                run.token.clone(),
            )));
        }
        // A magnet announces while it fetches the metadata (`left` a
        // placeholder); a torrent whose size is known waits for its engine.
        if let (None, Source::Magnet(m)) = (&self.torrent, &self.add.source) {
            let trackers = m.trackers.iter().map(|t| vec![t.clone()]).collect();
            self.announce(&mut run, ih, trackers);
        }
        let mut direct = self.add.peers.clone();
        if let Source::Magnet(m) = &self.add.source {
            direct.extend(m.peer_addrs());
        }
        if !direct.is_empty() {
            let _ = run.peers_tx.try_send(direct);
        }
        if let Source::Magnet(m) = &self.add.source {
            // x.pe= may name hosts: resolved in the background.
            let hosts: Vec<String> = m
                .peers
                .iter()
                .filter(|p| p.parse::<SocketAddr>().is_err())
                .cloned()
                .collect();
            let tx = run.peers_tx.clone();
            run.tasks.push(tokio::spawn(async move {
                for h in hosts {
                    let found = tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio::net::lookup_host(h.clone()),
                    )
                    .await;
                    match found {
                        Ok(Ok(addrs)) => {
                            let _ = tx.send(addrs.collect()).await;
                        }
                        _ => tracing::warn!(peer = %h, "cannot resolve magnet peer"),
                    }
                }
            }));
        }
        run
    }

    fn announce(&self, run: &mut Run, info_hash: InfoHash, trackers: Vec<Vec<String>>) {
        if trackers.is_empty() {
            return;
        }
        let slot = run.engine.clone();
        let totals = Arc::new(move || match lock(&slot).as_ref() {
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
        let cfg = &self.session.config;
        let acfg = AnnounceConfig {
            info_hash,
            peer_id: self.session.peer_id,
            port: self.session.listen_port,
            numwant: cfg.numwant,
            timeout: cfg.tracker_timeout,
            udp_retries: cfg.udp_retries,
            bind: cfg.bind,
            peers: run.peers_tx.clone(),
            totals,
            complete: run.complete_tx.subscribe(),
            on_announce: {
                let status = self.status.clone();
                Arc::new(move |r| status.set_announce(r))
            },
            encryption: cfg.engine.encryption,
        };
        run.announcer = Some(tokio::spawn(tracker::run_announcer(
            Tiers::new(trackers),
            acfg,
            run.announcer_stop.clone(),
        )));
    }

    /// Peers first, then the announcer's `completed`/`stopped`.
    async fn stop_run(&mut self, run: Run) {
        run.token.cancel();
        if let Some(ih) = self.info_hash.get() {
            self.session.registry.remove(ih);
        }
        for t in run.tasks {
            let _ = t.await;
        }
        run.announcer_stop.cancel();
        if let Some(a) = run.announcer {
            let _ = tokio::time::timeout(STOP_ANNOUNCE, a).await;
        }
        let engine = lock(&run.engine).take();
        if let Some(e) = engine {
            // Pieces still being written become part of what is kept.
            let _ = tokio::time::timeout(Duration::from_secs(30), e.settle()).await;
            if let Some(h) = &mut self.have {
                *h = e.have_bitfield();
            }
        }
        if let Some(h) = &self.have {
            self.status.set_have_view(h);
        }
        self.flush_resume().await;
    }

    /// Fetches a magnet's info dictionary on the run's peer channel.
    async fn fetch_metadata(&mut self, run: &mut Run) -> Option<RunEnd> {
        let Source::Magnet(m) = &self.add.source else {
            return None;
        };
        let m = m.clone();
        self.status.set_stage(Stage::Metadata);
        let fstatus = self
            .status
            .metadata
            .get()
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        let econf = &self.session.config.engine;
        let cfg = FetchConfig {
            info_hash: m.info_hash,
            peer_id: self.session.peer_id,
            bind_ip: self.session.config.bind,
            listen_port: self.session.listen_port,
            connect_timeout: econf.connect_timeout,
            handshake_timeout: econf.handshake_timeout,
            max_conns: econf.max_peers.min(30),
            encryption: econf.encryption,
        };
        let mut rx = run.peers_rx.take().expect("a fresh run");
        let fetch_cancel = run.token.child_token();
        let fetched = {
            let fetch = metafetch::fetch(cfg, &mut rx, fstatus, &fetch_cancel);
            tokio::pin!(fetch);
            loop {
                tokio::select! {
                    r = &mut fetch => break r,
                    c = self.cmds.recv() => match c {
                        Some(Cmd::Pause(r)) => { fetch_cancel.cancel(); return Some(RunEnd::Paused(r)); }
                        Some(Cmd::Remove(d, r)) => { fetch_cancel.cancel(); return Some(RunEnd::Removed(d, r)); }
                        Some(Cmd::Select(s, r)) => { let _ = r.send(self.apply_selection(s)); }
                        Some(Cmd::SeedLimits(l)) => self.add.seed = Some(l),
                        Some(Cmd::Resume | Cmd::Verify) => {}
                        None => { fetch_cancel.cancel(); return Some(RunEnd::Cancelled); }
                    },
                }
            }
        };
        run.peers_rx = Some(rx);
        let fetched = match fetched {
            Ok(f) => f,
            Err(_) => return Some(RunEnd::Cancelled),
        };
        let mut t = match Torrent::from_info_bytes(&fetched.info) {
            Ok(t) => t,
            Err(e) => return Some(RunEnd::Failed(e.into())),
        };
        if t.info_hash != m.info_hash {
            return Some(RunEnd::Failed(TorrentError::MetadataMismatch));
        }
        t.trackers = m.trackers.iter().map(|u| vec![u.clone()]).collect();
        t.web_seeds.clone_from(&m.web_seeds);
        if let Some(p) = self.metadata_cache() {
            // Only a convenience: a failure costs a re-fetch.
            let saved = std::fs::create_dir_all(p.parent().unwrap_or(&p))
                .map_err(|source| TorrentError::SaveTorrent {
                    path: p.clone(),
                    source,
                })
                .and_then(|()| save_torrent(&t, &p));
            if let Err(e) = saved {
                tracing::debug!("metadata not cached: {e}");
            }
        }
        if !fetched.peers.is_empty() {
            let _ = run.peers_tx.try_send(fetched.peers);
        }
        if let Err(e) = self.set_torrent(t) {
            return Some(RunEnd::Failed(e));
        }
        None
    }

    /// Opens the storage and, on the first run, checks what is on disk.
    async fn prepare(&mut self, run: &Run) -> Result<Arc<FileStorage>, RunEnd> {
        let t = self.torrent.clone().expect("metainfo known");
        let complete_have = self
            .have
            .as_ref()
            .zip(self.wanted.as_ref())
            .is_some_and(|(h, w)| w.iter_ones().all(|p| h.get(p)));
        let writable = !self.add.seed_only && !complete_have;
        // Files we did not write are looked at read-only first: opening
        // them for writing already sets their length.
        let guard = writable && self.have.is_none() && !self.add.overwrite && !self.wrote_here();
        let mut storage = open_storage(&t, &self.root, writable && !guard, self.create.clone())
            .await
            .map_err(RunEnd::Failed)?;
        if self.have.is_none() {
            let have = self.check(&t, &storage, &run.token).await?;
            if guard {
                if let Some(path) = unrelated_file(&t, &storage, &have) {
                    return Err(RunEnd::Failed(TorrentError::Unrelated { path }));
                }
                storage = open_storage(&t, &self.root, true, self.create.clone())
                    .await
                    .map_err(RunEnd::Failed)?;
            }
            if self.add.seed_only {
                let bad = t.num_pieces() - have.count();
                if bad > 0 {
                    return Err(RunEnd::Failed(TorrentError::BadData {
                        bad,
                        total: t.num_pieces(),
                        path: self.root.join(
                            t.files[0]
                                .path
                                .components()
                                .next()
                                .map_or(PathBuf::new(), |c| PathBuf::from(c.as_os_str())),
                        ),
                    }));
                }
            }
            let geo = t.geometry();
            let resumed: u64 = have.iter_ones().map(|p| u64::from(geo.piece_size(p))).sum();
            self.status.stats.resumed.store(resumed, Ordering::Relaxed);
            self.status.set_have_view(&have);
            self.have = Some(have);
            if self.status.check_report().is_some_and(|c| c.hashed > 0) {
                // What was just hashed is kept at once: a crash before the
                // next flush must not cost the same hashing again.
                self.flush_resume().await;
            }
        }
        Ok(storage)
    }

    /// Fast resume: pieces the record vouches for (files unchanged, no
    /// holes) are trusted; the rest of what is on disk is hashed.
    async fn check(
        &mut self,
        t: &Arc<Torrent>,
        storage: &Arc<FileStorage>,
        cancel: &CancellationToken,
    ) -> Result<Bitfield, RunEnd> {
        let started = Instant::now();
        let n = t.num_pieces();
        let mut trusted = Bitfield::new(n);
        let mut only: Option<Bitfield> = None;
        let record = match (&self.resume_path(), self.add.recheck) {
            (Some(p), false) => match resume::load(p) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("resume record ignored: {e}");
                    None
                }
            },
            _ => None,
        };
        if let Some(rec) = record {
            let (t2, root) = (t.clone(), self.root.clone());
            let judged = tokio::task::spawn_blocking(move || {
                let stamps = resume::stamp_files(&root, &t2);
                resume::trusted(&rec, &t2, &root, &stamps).map(|mut trust| {
                    resume::drop_holes(&root, &t2, &mut trust.have, &mut trust.recheck);
                    trust
                })
            })
            .await
            .map_err(|e| RunEnd::Failed(TorrentError::Task(e)))?;
            match judged {
                Ok(trust) => {
                    trusted = trust.have;
                    only = Some(trust.recheck);
                }
                Err(why) => tracing::warn!("resume record ignored: {why}"),
            }
        }
        let need_hash = match &only {
            Some(o) => o.count() > 0,
            None => storage.has_existing_data(),
        };
        let mut have = trusted;
        let mut hashed = 0;
        if need_hash {
            hashed = only.as_ref().map_or(n, |o| o.count());
            let found = self.hash_check(t, storage, cancel, only).await?;
            for p in found.iter_ones() {
                have.set(p);
            }
        }
        let report = CheckReport {
            fast: have.count() > 0 && hashed < n,
            hashed,
            secs: started.elapsed().as_secs_f64(),
        };
        tracing::debug!(
            torrent = %t.name,
            hashed,
            verified = have.count(),
            secs = report.secs,
            "start-up check"
        );
        *lock(&self.status.check) = Some(report);
        Ok(have)
    }

    async fn hash_check(
        &self,
        t: &Arc<Torrent>,
        storage: &Arc<FileStorage>,
        cancel: &CancellationToken,
        only: Option<Bitfield>,
    ) -> Result<Bitfield, RunEnd> {
        let geo = t.geometry();
        self.status.set_stage(Stage::Checking);
        let total = match &only {
            Some(o) => o.iter_ones().map(|p| u64::from(geo.piece_size(p))).sum(),
            None => geo.total_len,
        };
        self.status.check_total.store(total, Ordering::Relaxed);
        self.status.check_done.store(0, Ordering::Relaxed);
        let (st, t, s) = (self.status.clone(), t.clone(), storage.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let threads = self.session.config.engine.hash_workers;
        // The session's hashing budget: one check at a time per permit.
        let permits = self.session.shared.hash_permits.clone();
        let _permit = tokio::select! {
            p = permits.acquire_owned() => p.ok(),
            _ = cancel.cancelled() => return Err(RunEnd::Cancelled),
        };
        let check = tokio::task::spawn_blocking(move || {
            checker::check(
                &*s,
                geo,
                &t.piece_hashes,
                threads,
                &st.check_done,
                &stop2,
                only.as_ref(),
            )
        });
        tokio::select! {
            h = check => h.map_err(|e| RunEnd::Failed(TorrentError::Task(e))),
            _ = cancel.cancelled() => {
                stop.store(true, Ordering::Relaxed);
                Err(RunEnd::Cancelled)
            }
        }
    }

    /// Runs the engine until the run ends.
    async fn run_engine(&mut self, run: &mut Run) -> RunEnd {
        let storage = match self.prepare(run).await {
            Ok(s) => s,
            Err(e) => return e,
        };
        let t = self.torrent.clone().expect("metainfo known");
        let have = self.have.clone().expect("checked");
        let wanted = self.wanted.clone().expect("selection applied");
        let mut config = self.session.config.engine.clone();
        config.connect_when_complete = self.add.seed.is_some() || self.add.seed_only;
        let engine = Engine::new(Setup {
            torrent: t.clone(),
            storage: storage.clone() as Arc<dyn Storage>,
            have,
            wanted,
            config,
            shared: self.session.shared.clone(),
            rates: self.rates.clone(),
            stats: self.status.stats.clone(),
            cancel: run.token.clone(),
        });
        let was_complete = engine.is_complete();
        *lock(&run.engine) = Some(engine.clone());
        *lock(&self.status.engine) = Some(engine.clone());
        self.status.set_stage(if was_complete {
            Stage::Seeding
        } else {
            Stage::Downloading
        });
        if let (Some(dht), Some(pings), false) =
            (&self.session.dht, &self.session.dht_pings, t.private)
        {
            // Before any peer connects, so handshakes carry the DHT bit.
            let _ = engine.dht.set((dht.local_addr().port(), pings.clone()));
        }
        if !t.private {
            let _ = engine.pex.set(run.peers_tx.clone());
        }
        let rx = run.peers_rx.take().expect("taken once a run");
        run.tasks.push(tokio::spawn(swarm::run(
            engine.clone(),
            self.session.limits.clone(),
            rx,
            Vec::new(),
            run.token.clone(),
        )));
        if self.add.web_seeds && !was_complete {
            self.start_web_seeds(run, &engine, &t);
        }
        run.tasks
            .push(tokio::spawn(engine.clone().run_choker(run.token.clone())));
        self.session.registry.add(engine.clone(), run.token.clone());
        run.complete_tx.send_replace(was_complete);
        if run.announcer.is_none() {
            self.announce(run, t.info_hash, t.trackers.clone());
        }

        let mut phase = engine.phase();
        let mut flush = tokio::time::interval(self.session.config.resume_every);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.tick().await;
        let mut flushed_at = engine.have_count();
        let mut seed_since: Option<tokio::time::Instant> =
            was_complete.then(tokio::time::Instant::now);
        let mut seed_tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            let p = phase.borrow_and_update().clone();
            match p {
                Phase::Complete if seed_since.is_none() => {
                    if let Err(e) = self.finish_storage(&storage).await {
                        return RunEnd::Failed(e);
                    }
                    if self.completed_after.is_none() {
                        self.completed_after = Some(self.started.elapsed().as_secs_f64());
                    }
                    self.have = Some(engine.have_bitfield());
                    self.flush_resume().await;
                    let _ = run.complete_tx.send(true);
                    if self.add.seed.is_none() && !self.add.seed_only {
                        self.status.set_stage(Stage::Done);
                        return RunEnd::Finished;
                    }
                    self.status.set_stage(Stage::Seeding);
                    seed_since = Some(tokio::time::Instant::now());
                }
                Phase::Complete
                    if was_complete && self.add.seed.is_none() && !self.add.seed_only =>
                {
                    self.status.set_stage(Stage::Done);
                    return RunEnd::Finished;
                }
                Phase::Failed(e) => {
                    *lock(&self.status.error) = Some(Arc::new(TorrentError::Engine(e.clone())));
                    return RunEnd::Failed(TorrentError::Engine(e));
                }
                _ => {}
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return RunEnd::Cancelled,
                r = phase.changed() => if r.is_err() { return RunEnd::Cancelled },
                c = self.cmds.recv() => match c {
                    Some(Cmd::Pause(r)) => return RunEnd::Paused(r),
                    Some(Cmd::Remove(d, r)) => return RunEnd::Removed(d, r),
                    Some(Cmd::Select(s, r)) => {
                        let res = self.apply_selection(s);
                        let ok = res.is_ok();
                        let _ = r.send(res);
                        if ok { return RunEnd::Reselect; }
                    }
                    Some(Cmd::Resume) => {}
                    // Checked on the next seed tick.
                    Some(Cmd::SeedLimits(l)) => self.add.seed = Some(l),
                    Some(Cmd::Verify) => {
                        // Pieces in flight settle first, then all is hashed.
                        self.recheck_next = true;
                        return RunEnd::Reselect;
                    }
                    None => return RunEnd::Cancelled,
                },
                // Only while pieces arrive: an idle seed costs no wake-ups.
                _ = flush.tick(), if seed_since.is_none() => {
                    let n = engine.have_count();
                    if n != flushed_at {
                        flushed_at = n;
                        self.have = Some(engine.have_bitfield());
                        self.flush_resume().await;
                    }
                }
                _ = seed_tick.tick(), if seed_since.is_some() && self.has_seed_limits() => {
                    if self.seed_limits_reached(&engine, seed_since) {
                        return RunEnd::Finished;
                    }
                }
            }
        }
    }

    fn has_seed_limits(&self) -> bool {
        self.add
            .seed
            .is_some_and(|l| l.ratio.is_some() || l.time.is_some())
    }

    fn seed_limits_reached(&self, engine: &Engine, since: Option<tokio::time::Instant>) -> bool {
        let Some(limits) = self.add.seed else {
            return false;
        };
        if let Some(r) = limits.ratio {
            let total = engine.wanted_bytes();
            if engine.stats.uploaded.load(Ordering::Relaxed) as f64 >= r * total as f64 {
                return true;
            }
        }
        limits
            .time
            .zip(since)
            .is_some_and(|(t, s)| s.elapsed() >= t)
    }

    async fn finish_storage(&self, storage: &Arc<FileStorage>) -> Result<(), TorrentError> {
        self.status.set_stage(Stage::Finishing);
        let s = storage.clone();
        tokio::task::spawn_blocking(move || s.finish())
            .await
            .map_err(TorrentError::Task)?
            .map_err(|source| TorrentError::Storage {
                path: self.root.clone(),
                source,
            })
    }

    /// Writes the resume record: the verified pieces, made durable first.
    async fn flush_resume(&self) {
        let (Some(path), Some(t), Some(have)) = (self.resume_path(), &self.torrent, &self.have)
        else {
            return;
        };
        if self.add.seed_only && have.count() < t.num_pieces() {
            return;
        }
        let (t, have, root) = (t.clone(), have.clone(), self.root.clone());
        let wanted = self.wanted.clone();
        let create = self.create.clone();
        let writable = !self.add.seed_only;
        let r = tokio::task::spawn_blocking(
            move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                // Durable data before the record that vouches for it.
                if writable {
                    sync_files(&root, &t, create.as_deref())?;
                }
                let stamps = resume::stamp_files(&root, &t);
                let completed = wanted.is_some_and(|w| w.iter_ones().all(|p| have.get(p)));
                let rec = resume::ResumeRecord::new(&t, &root, &have, stamps, completed);
                resume::save(&path, &rec)?;
                Ok(())
            },
        )
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot save the resume record: {e}"),
            Err(e) => tracing::warn!("cannot save the resume record: {e}"),
        }
    }

    /// Removal: the resume record goes; with `delete`, the torrent's own
    /// files too (never anything outside its directory).
    async fn delete(&self, delete: bool) -> Result<(), TorrentError> {
        if let Some(p) = self.resume_path() {
            let _ = std::fs::remove_file(p);
        }
        let Some(t) = self.torrent.clone() else {
            return Ok(());
        };
        remove_files(t, self.root.clone(), None, delete).await
    }
}

/// Forgets a torrent's resume record and, with `delete`, its files.
async fn remove_files(
    t: Arc<Torrent>,
    root: PathBuf,
    resume: Option<PathBuf>,
    delete: bool,
) -> Result<(), TorrentError> {
    if let Some(p) = resume {
        let _ = std::fs::remove_file(p);
    }
    if !delete {
        return Ok(());
    }
    let r = root.clone();
    tokio::task::spawn_blocking(move || delete_files(&r, &t))
        .await
        .map_err(TorrentError::Task)?
        .map_err(|source| TorrentError::Storage { path: root, source })
}

/// fsyncs the torrent's regular files that exist (and were ours to write).
fn sync_files(root: &Path, t: &Torrent, create: Option<&[bool]>) -> std::io::Result<()> {
    for (i, f) in t.files.iter().enumerate() {
        if f.kind != FileKind::Regular
            || create.is_some_and(|c| !c.get(i).copied().unwrap_or(false))
        {
            continue;
        }
        match std::fs::OpenOptions::new()
            .write(true)
            .open(root.join(&f.path))
        {
            Ok(file) => file.sync_data()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the torrent's files below `root`, then the directories they
/// leave empty (up to, not including, `root`). Paths are the sanitised
/// ones from the metainfo, so none leaves `root`; symlinked directories
/// are not followed.
fn delete_files(root: &Path, t: &Torrent) -> std::io::Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    for f in &t.files {
        if f.kind == FileKind::Pad {
            continue;
        }
        let p = root.join(&f.path);
        // Refuse to follow a symlinked directory on the way.
        let mut cur = root.to_path_buf();
        let mut safe = true;
        for c in f.path.parent().into_iter().flat_map(|p| p.components()) {
            cur.push(c);
            if cur
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                safe = false;
                break;
            }
            dirs.insert(cur.clone());
        }
        if !safe {
            continue;
        }
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    // Deepest first; a directory holding anything else stays.
    for d in dirs.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
    Ok(())
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
pub fn save_torrent(torrent: &Torrent, path: &Path) -> Result<(), TorrentError> {
    let err = |source| TorrentError::SaveTorrent {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("torrent.part");
    std::fs::write(&tmp, torrent.to_file_bytes()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Finds the content for seeding: `PATH/<name>` (what `download -o PATH`
/// writes) or PATH itself naming the file or directory. Returns the root
/// and the torrent with paths relative to it.
pub fn locate_content(mut t: Torrent, path: &Path) -> Result<(PathBuf, Torrent), TorrentError> {
    if path.join(&t.name).exists() {
        return Ok((path.to_path_buf(), t));
    }
    let meta = std::fs::metadata(path).map_err(|source| TorrentError::Storage {
        path: path.to_path_buf(),
        source,
    })?;
    let fits = if t.multi_file {
        meta.is_dir()
    } else {
        meta.is_file()
    };
    let (Some(parent), Some(own), true) = (path.parent(), path.file_name(), fits) else {
        return Err(TorrentError::Storage {
            path: path.join(&t.name),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "content not found"),
        });
    };
    // Re-root every path under PATH's own name (joining an empty rest
    // would add a trailing slash: "file.bin/" names no file).
    let reroot = |p: &Path| {
        let rest: PathBuf = p.components().skip(1).collect();
        if rest.as_os_str().is_empty() {
            PathBuf::from(own)
        } else {
            PathBuf::from(own).join(rest)
        }
    };
    for f in &mut t.files {
        f.path = reroot(&f.path);
        if let FileKind::Symlink { target } = &mut f.kind {
            *target = reroot(target);
        }
    }
    let root = if parent.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        parent.to_path_buf()
    };
    Ok((root, t))
}

/// An existing file with data where no piece verified, though some of
/// its pieces were wholly on disk and could have: someone else's file
/// where the torrent's would go. (A file whose pieces all reach into
/// missing files proves nothing either way.)
fn unrelated_file(t: &Torrent, storage: &FileStorage, have: &Bitfield) -> Option<PathBuf> {
    let plen = u64::from(t.piece_length);
    let total = t.total_length;
    storage
        .existing_files()
        .find(|(path, range)| {
            let mut pieces = range.start / plen..=(range.end - 1) / plen;
            !pieces.clone().any(|p| have.get(p as u32))
                && pieces.any(|p| storage.was_on_disk(p * plen..((p + 1) * plen).min(total)))
                && resume::has_data(path)
        })
        .map(|(path, _)| path.to_path_buf())
}

async fn open_storage(
    torrent: &Arc<Torrent>,
    root: &Path,
    writable: bool,
    create: Option<Vec<bool>>,
) -> Result<Arc<FileStorage>, TorrentError> {
    let (t, out) = (torrent.clone(), root.to_path_buf());
    let s = tokio::task::spawn_blocking(move || {
        FileStorage::with_files(&out, &t, writable, create.as_deref())
    })
    .await
    .map_err(TorrentError::Task)?
    .map_err(|source| TorrentError::Storage {
        path: root.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(s))
}

/// Looks the torrent up on the DHT (announcing our listen port) now, again
/// after 5 minutes, then every 15; found peers go to the swarm. The
/// torrent's own `nodes` are pinged first, so they can join our table.
async fn dht_lookups(
    dht: crate::dht::node::Dht,
    info_hash: InfoHash,
    nodes: Vec<(String, u16)>,
    listen_port: u16,
    peers: mpsc::Sender<Vec<SocketAddr>>,
    cancel: CancellationToken,
) {
    for (host, port) in nodes.iter().take(16) {
        if let Ok(mut addrs) = tokio::net::lookup_host((host.as_str(), *port)).await {
            if let Some(a) = addrs.find(|a| a.is_ipv4()) {
                dht.ping(a).await;
            }
        }
    }
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
