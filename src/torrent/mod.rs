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
//!   ├─ [magnet] magnet::fetch on the run's peer channel
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
use crate::magnet::fetch::{FetchStatus, MetadataPhase};
use crate::magnet::Magnet;
use crate::metainfo::select::{self, SelectError};
use crate::metainfo::{self, FileKind, Torrent};
use crate::resume;
use crate::storage::{FileStorage, Storage};
use crate::swarm::{self, Limits};
use crate::tracker::{self, AnnounceConfig, AnnounceReport, Tiers, Totals};
use crate::types::{Bitfield, InfoHash, PeerId};

mod actor;
mod files;
mod status;

use actor::*;
use files::*;
pub use files::{locate_content, save_torrent};
pub use status::*;

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
