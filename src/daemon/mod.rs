//! `xorrent daemon`: a long-running torrent manager. It holds a
//! [`Session`], remembers its torrents in a [`Store`] so they come back
//! after a restart or a crash, and is driven over the Transmission RPC
//! (`rpc`) by remotes and by the web page.
//!
//! ```text
//! Daemon ── Session (listener, DHT, torrents)
//!   ├─ Store: <state>/daemon.redb (records, metainfo, settings)
//!   ├─ "daemon-tick" (1 s): metadata fetched → stored, completion dates
//!   ├─ "watch-dir" / "share-dir" (2 s polls, see `folders`)
//!   └─ "rpc": HTTP server (see `rpc`)
//! ```
//!
//! Invariant: a torrent's record is committed before its actor starts, and
//! deleted only after the actor is gone, so after any crash every torrent
//! a client was told about is either there or was being removed.

pub mod folders;
pub mod store;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::magnet::{self, Magnet};
use crate::metainfo::Torrent;
use crate::session::{AddError, Session, SessionConfig};
use crate::torrent::{AddTorrent, SeedLimits, Source, Stage, TorrentHandle};
use crate::types::InfoHash;
pub use store::{Record, Settings, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot create {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    #[error("invalid torrent: {0}")]
    BadTorrent(#[from] crate::metainfo::Error),
    #[error("invalid magnet link: {0}")]
    BadMagnet(#[from] magnet::MagnetError),
    #[error("give a .torrent (metainfo) or a magnet link (filename)")]
    NoSource,
    #[error("file index {index} is out of range: the torrent has {count} files")]
    NoSuchFile { index: u32, count: usize },
    #[error("at least one file must be wanted")]
    NothingWanted,
    #[error("download-dir {0} is not an absolute path")]
    NotAbsolute(PathBuf),
    #[error("the torrent's metadata is not known yet")]
    NoMetadata,
    #[error("no torrent with id {0}")]
    NoSuchTorrent(u64),
    #[error("neither metainfo nor a magnet link is stored for it")]
    NothingStored,
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a torrent of {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: crate::metainfo::create::CreateError,
    },
    #[error("a background task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Torrent(#[from] crate::torrent::TorrentError),
}

/// The daemon's own settings; the session's come from the same flags.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub download_dir: PathBuf,
    pub state_dir: PathBuf,
    pub watch_dir: Option<PathBuf>,
    pub share_dir: Option<PathBuf>,
    /// Dialled for every torrent besides what trackers and the DHT find.
    pub peers: Vec<std::net::SocketAddr>,
    pub session: SessionConfig,
}

/// What `torrent-add` asks for.
#[derive(Debug, Clone, Default)]
pub struct AddRequest {
    /// The .torrent file's bytes, or a magnet link.
    pub metainfo: Option<Vec<u8>>,
    pub magnet: Option<String>,
    pub download_dir: Option<PathBuf>,
    pub paused: Option<bool>,
    /// File indexes (`files-wanted` / `files-unwanted`).
    pub wanted: Vec<u32>,
    pub unwanted: Vec<u32>,
    pub labels: Vec<String>,
    pub shared_from: Option<PathBuf>,
}

/// The outcome of an add: the torrent's id, and whether it was new.
#[derive(Debug, Clone)]
pub struct Added {
    pub id: u64,
    pub name: String,
    pub info_hash: InfoHash,
    pub duplicate: bool,
}

/// One torrent the daemon holds.
#[derive(Clone)]
pub struct Entry {
    /// Stable for the daemon's lifetime (Transmission's `id`).
    pub id: u64,
    pub handle: TorrentHandle,
    pub record: Record,
}

impl Entry {
    pub fn info_hash(&self) -> InfoHash {
        InfoHash::from_hex(&self.record.info_hash).unwrap_or(InfoHash([0; 20]))
    }

    /// The torrent's name; before its metainfo is read, the magnet's
    /// `dn` or the info-hash.
    pub fn name(&self) -> String {
        let n = self.handle.stats().name;
        if !n.is_empty() {
            return n;
        }
        self.record
            .magnet
            .as_deref()
            .and_then(|m| Magnet::parse(m).ok())
            .and_then(|m| m.name)
            .unwrap_or_else(|| self.record.info_hash.clone())
    }

    /// Bytes uploaded over every run.
    pub fn uploaded_ever(&self) -> u64 {
        self.record.uploaded_before + self.handle.stats().uploaded
    }

    pub fn downloaded_ever(&self) -> u64 {
        self.record.downloaded_before + self.handle.stats().received
    }
}

/// Which torrents a request names.
#[derive(Debug, Clone, PartialEq)]
pub enum Ids {
    All,
    /// Ids and hex info-hashes, as given.
    Some(Vec<IdOrHash>),
    /// Active in the last minute (Transmission's `recently-active`).
    RecentlyActive,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IdOrHash {
    Id(u64),
    Hash(InfoHash),
}

#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    session: Session,
    store: Store,
    config: DaemonConfig,
    torrents: Mutex<Vec<Entry>>,
    settings: Mutex<Settings>,
    next_id: Mutex<u64>,
    started: Instant,
    /// Ids removed lately, for `recently-active` callers.
    removed: Mutex<Vec<(u64, Instant)>>,
    cancel: CancellationToken,
    /// Added but not yet listed, so a second add of the same torrent
    /// racing the first is a duplicate, not two actors.
    adding: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `RECENT` after its last activity a torrent is no longer "recently active".
const RECENT: Duration = Duration::from_secs(60);

impl Daemon {
    /// Opens the state, starts the session and every stored torrent.
    pub async fn start(
        config: DaemonConfig,
        parent: &CancellationToken,
    ) -> Result<Daemon, DaemonError> {
        for d in [&config.state_dir, &config.download_dir] {
            std::fs::create_dir_all(d).map_err(|source| DaemonError::Dir {
                path: d.clone(),
                source,
            })?;
        }
        let store = Store::open(&config.state_dir.join("daemon.redb"))?;
        let mut settings = store.settings()?;
        settings.session_count += 1;
        store.put_settings(&settings)?;
        let cancel = parent.child_token();
        let mut scfg = config.session.clone();
        scfg.state_dir = Some(config.state_dir.clone());
        let session = Session::start(scfg, &cancel).await?;
        let daemon = Daemon {
            inner: Arc::new(Inner {
                session,
                store,
                config,
                torrents: Mutex::new(Vec::new()),
                settings: Mutex::new(settings),
                next_id: Mutex::new(1),
                started: Instant::now(),
                removed: Mutex::new(Vec::new()),
                cancel,
                adding: tokio::sync::Mutex::new(()),
            }),
        };
        daemon.apply_session_limits();
        for rec in daemon.inner.store.records()? {
            let ih = rec.info_hash.clone();
            if let Err(e) = daemon.restore(rec).await {
                tracing::warn!(torrent = %ih, "not restored: {e}");
            }
        }
        let d = daemon.clone();
        tokio::spawn(async move { d.tick_loop().await });
        folders::spawn(&daemon);
        Ok(daemon)
    }

    pub fn session(&self) -> &Session {
        &self.inner.session
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.inner.config
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    pub fn settings(&self) -> Settings {
        lock(&self.inner.settings).clone()
    }

    /// Changes the session settings and keeps them.
    pub fn update_settings(&self, f: impl FnOnce(&mut Settings)) -> Result<(), DaemonError> {
        let s = {
            let mut s = lock(&self.inner.settings);
            f(&mut s);
            s.clone()
        };
        self.inner.store.put_settings(&s)?;
        self.apply_session_limits();
        Ok(())
    }

    /// The default download directory (`session-set download-dir`).
    pub fn download_dir(&self) -> PathBuf {
        self.settings()
            .download_dir
            .unwrap_or_else(|| self.inner.config.download_dir.clone())
    }

    /// Global caps in bytes/s from the settings (KiB/s when enabled), or
    /// the flags' values.
    fn apply_session_limits(&self) {
        let s = self.settings();
        let flags = &self.inner.config.session;
        let cap = |enabled: Option<bool>, kib: Option<u64>, flag: u64| match enabled {
            Some(true) => kib.unwrap_or(0).saturating_mul(1024),
            Some(false) => 0,
            None => flag,
        };
        self.inner.session.set_rate_limits(
            cap(
                s.speed_limit_up_enabled,
                s.speed_limit_up,
                flags.max_upload_rate,
            ),
            cap(
                s.speed_limit_down_enabled,
                s.speed_limit_down,
                flags.max_download_rate,
            ),
        );
    }

    /// Torrents in id order.
    pub fn entries(&self) -> Vec<Entry> {
        lock(&self.inner.torrents).clone()
    }

    pub fn select(&self, ids: &Ids) -> Vec<Entry> {
        let all = self.entries();
        match ids {
            Ids::All => all,
            Ids::RecentlyActive => all
                .into_iter()
                .filter(|e| {
                    let s = e.handle.stats();
                    s.stage.is_active() && (s.down_rate > 0 || s.up_rate > 0 || s.connected > 0)
                        || matches!(s.stage, Stage::Checking | Stage::Metadata)
                })
                .collect(),
            Ids::Some(list) => all
                .into_iter()
                .filter(|e| {
                    list.iter().any(|i| match i {
                        IdOrHash::Id(n) => *n == e.id,
                        IdOrHash::Hash(h) => *h == e.info_hash(),
                    })
                })
                .collect(),
        }
    }

    /// Ids removed in the last minute.
    pub fn recently_removed(&self) -> Vec<u64> {
        let mut r = lock(&self.inner.removed);
        r.retain(|(_, at)| at.elapsed() < RECENT);
        r.iter().map(|(id, _)| *id).collect()
    }

    /// Adds a torrent: validated like the CLI does, recorded, then started.
    pub async fn add(&self, req: AddRequest) -> Result<Added, DaemonError> {
        let (torrent, magnet) = match (&req.metainfo, &req.magnet) {
            (Some(b), _) => (Some(Torrent::from_bytes(b)?), None),
            (None, Some(m)) => (None, Some(Magnet::parse(m)?)),
            (None, None) => return Err(DaemonError::NoSource),
        };
        let ih = torrent
            .as_ref()
            .map(|t| t.info_hash)
            .or(magnet.as_ref().map(|m| m.info_hash))
            .expect("one of them");
        let name = torrent
            .as_ref()
            .map(|t| t.name.clone())
            .or(magnet.as_ref().and_then(|m| m.name.clone()))
            .unwrap_or_else(|| ih.to_hex());
        let _adding = self.inner.adding.lock().await;
        if let Some(e) = self.entries().into_iter().find(|e| e.info_hash() == ih) {
            return Ok(Added {
                id: e.id,
                name: e.name(),
                info_hash: ih,
                duplicate: true,
            });
        }
        let files = torrent.as_ref().map(|t| t.files.len());
        let mut unwanted: Vec<u32> = req.unwanted.clone();
        if let Some(n) = files {
            // Out-of-range indexes are refused like `--select` does.
            if let Some(bad) = req
                .wanted
                .iter()
                .chain(&req.unwanted)
                .find(|&&i| i as usize >= n)
            {
                return Err(DaemonError::NoSuchFile {
                    index: *bad,
                    count: n,
                });
            }
            unwanted.retain(|i| !req.wanted.contains(i));
            unwanted.sort_unstable();
            unwanted.dedup();
            if unwanted.len() >= n {
                return Err(DaemonError::NothingWanted);
            }
        }
        let paused = req
            .paused
            .unwrap_or(!self.settings().start_added_torrents.unwrap_or(true));
        let record = Record {
            info_hash: ih.to_hex(),
            magnet: req.magnet.clone().filter(|_| torrent.is_none()),
            download_dir: req
                .download_dir
                .clone()
                .unwrap_or_else(|| self.download_dir()),
            paused,
            added: unix_now(),
            order: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
            done: 0,
            unwanted,
            up_limit: None,
            down_limit: None,
            seed_ratio_mode: 0,
            seed_ratio: 2.0,
            labels: req.labels.clone(),
            shared_from: req.shared_from.clone(),
            uploaded_before: 0,
            downloaded_before: 0,
        };
        if !record.download_dir.is_absolute() {
            return Err(DaemonError::NotAbsolute(record.download_dir.clone()));
        }
        match &torrent {
            Some(t) => self
                .inner
                .store
                .put_with_metainfo(&record, &t.to_file_bytes())?,
            None => self.inner.store.put(&record)?,
        }
        self.update_settings(|s| s.files_added += 1)?;
        let source = match (torrent, magnet) {
            (Some(t), _) => Source::Parsed(Box::new(t)),
            (None, Some(m)) => Source::Magnet(Box::new(m)),
            (None, None) => unreachable!("checked above"),
        };
        let entry = self.launch(record, source, None).await?;
        Ok(Added {
            id: entry.id,
            name,
            info_hash: ih,
            duplicate: false,
        })
    }

    /// Brings a stored torrent back.
    async fn restore(&self, rec: Record) -> Result<(), DaemonError> {
        let source = self.stored_source(&rec)?;
        self.launch(rec, source, None).await?;
        Ok(())
    }

    /// What to start a stored torrent from: its metainfo, else its magnet.
    fn stored_source(&self, rec: &Record) -> Result<Source, DaemonError> {
        Ok(match self.inner.store.metainfo(&rec.info_hash)? {
            Some(bytes) => Source::Bytes(bytes),
            None => match &rec.magnet {
                Some(m) => Source::Magnet(Box::new(Magnet::parse(m)?)),
                None => return Err(DaemonError::NothingStored),
            },
        })
    }

    /// Starts a torrent's actor from its record; `reuse` keeps an id.
    async fn launch(
        &self,
        record: Record,
        source: Source,
        reuse: Option<(u64, bool)>,
    ) -> Result<Entry, DaemonError> {
        let (reuse_id, recheck) = reuse.unwrap_or((0, false));
        let mut add = AddTorrent::new(source, record.download_dir.clone());
        add.paused = record.paused;
        add.recheck = recheck;
        add.seed = Some(self.seed_limits(&record));
        add.max_upload_rate = record.up_limit.unwrap_or(0);
        add.max_download_rate = record.down_limit.unwrap_or(0);
        add.peers = self.inner.config.peers.clone();
        if !record.unwanted.is_empty() {
            add.select = Some(wanted_ranges(&record.unwanted, self.file_count(&record)));
        }
        let handle = match self.inner.session.add(add).await {
            Ok(h) => h,
            Err(AddError::Duplicate(h)) => h,
            Err(AddError::Torrent(e)) => return Err(e.into()),
        };
        let mut list = lock(&self.inner.torrents);
        let id = if reuse_id > 0 {
            reuse_id
        } else {
            let mut n = lock(&self.inner.next_id);
            let id = *n;
            *n += 1;
            id
        };
        let entry = Entry { id, handle, record };
        match list.iter_mut().find(|e| e.id == id) {
            Some(e) => *e = entry.clone(),
            None => list.push(entry.clone()),
        }
        Ok(entry)
    }

    fn file_count(&self, record: &Record) -> usize {
        self.inner
            .store
            .metainfo(&record.info_hash)
            .ok()
            .flatten()
            .and_then(|b| Torrent::from_bytes(&b).ok())
            .map_or(0, |t| t.files.len())
    }

    /// The ratio at which a torrent stops seeding (`None`: never).
    fn seed_ratio(&self, r: &Record) -> Option<f64> {
        match r.seed_ratio_mode {
            1 => Some(r.seed_ratio),
            2 => None,
            _ => {
                let s = self.settings();
                s.seed_ratio_limited
                    .unwrap_or(false)
                    .then(|| s.seed_ratio_limit.unwrap_or(2.0))
            }
        }
    }

    /// Saves a changed record.
    fn save(&self, id: u64, f: impl FnOnce(&mut Record)) -> Result<Record, DaemonError> {
        let rec = {
            let mut list = lock(&self.inner.torrents);
            let Some(e) = list.iter_mut().find(|e| e.id == id) else {
                return Err(DaemonError::NoSuchTorrent(id));
            };
            f(&mut e.record);
            e.record.clone()
        };
        self.inner.store.put(&rec)?;
        Ok(rec)
    }

    fn entry(&self, id: u64) -> Option<Entry> {
        lock(&self.inner.torrents)
            .iter()
            .find(|e| e.id == id)
            .cloned()
    }

    pub async fn stop(&self, e: &Entry) -> Result<(), DaemonError> {
        self.save(e.id, |r| r.paused = true)?;
        e.handle.pause().await;
        Ok(())
    }

    /// Starts a paused torrent, or one whose actor ended (finished its
    /// seeding, or failed): that one is started afresh with the same id.
    pub async fn start_torrent(&self, e: &Entry) -> Result<(), DaemonError> {
        self.save(e.id, |r| r.paused = false)?;
        match e.handle.stats().stage {
            Stage::Done | Stage::Failed => self.relaunch(e.id, false).await,
            _ => {
                e.handle.resume().await;
                Ok(())
            }
        }
    }

    pub async fn verify(&self, e: &Entry) -> Result<(), DaemonError> {
        match e.handle.stats().stage {
            Stage::Done | Stage::Failed => self.relaunch(e.id, true).await,
            _ => {
                e.handle.verify().await;
                Ok(())
            }
        }
    }

    /// Stops the actor, keeps its byte counts, starts a new one.
    async fn relaunch(&self, id: u64, recheck: bool) -> Result<(), DaemonError> {
        let Some(e) = self.entry(id) else {
            return Ok(());
        };
        let s = e.handle.stats();
        self.inner.session.forget(&e.info_hash()).await;
        self.save(id, |r| {
            r.uploaded_before += s.uploaded;
            r.downloaded_before += s.received;
        })?;
        self.relaunch_forgotten(id, recheck).await
    }

    /// Starts a new actor for a torrent whose old one is gone.
    async fn relaunch_forgotten(&self, id: u64, recheck: bool) -> Result<(), DaemonError> {
        let Some(rec) = self.entry(id).map(|e| e.record) else {
            return Ok(());
        };
        let source = self.stored_source(&rec)?;
        self.launch(rec, source, Some((id, recheck))).await?;
        Ok(())
    }

    /// Removes a torrent (with `delete`, its files too). The record goes
    /// last: a crash in between brings the torrent back, never loses it
    /// silently.
    pub async fn remove(&self, e: &Entry, delete: bool) -> Result<(), DaemonError> {
        let r = self.inner.session.remove(&e.info_hash(), delete).await;
        lock(&self.inner.torrents).retain(|x| x.id != e.id);
        lock(&self.inner.removed).push((e.id, Instant::now()));
        self.inner.store.delete(&e.record.info_hash)?;
        if let Some(p) = &e.record.shared_from {
            folders::forget_shared(self, p);
        }
        r.map_err(DaemonError::from)
    }

    /// `files-wanted` / `files-unwanted`; an empty list means every file.
    pub async fn set_wanted(
        &self,
        e: &Entry,
        wanted: Option<&[u32]>,
        unwanted: Option<&[u32]>,
    ) -> Result<(), DaemonError> {
        let Some((t, _)) = e.handle.meta() else {
            return Err(DaemonError::NoMetadata);
        };
        let n = t.files.len() as u32;
        let every = |l: &[u32]| -> Vec<u32> {
            if l.is_empty() {
                (0..n).collect()
            } else {
                l.to_vec()
            }
        };
        let (w, u) = (wanted.map(every), unwanted.map(every));
        if let Some(bad) = w.iter().chain(u.iter()).flatten().find(|&&i| i >= n) {
            return Err(DaemonError::NoSuchFile {
                index: *bad,
                count: n as usize,
            });
        }
        let mut set = e.record.unwanted.clone();
        set.retain(|i| !w.as_ref().is_some_and(|w| w.contains(i)));
        set.extend(u.iter().flatten().copied());
        set.sort_unstable();
        set.dedup();
        if set.len() >= n as usize {
            return Err(DaemonError::NothingWanted);
        }
        if set == e.record.unwanted {
            return Ok(());
        }
        let sel = (!set.is_empty()).then(|| wanted_ranges(&set, n as usize));
        e.handle.set_selection(sel).await?;
        self.save(e.id, |r| r.unwanted = set)?;
        Ok(())
    }

    /// `torrent-set-location`: the torrent's files now live in `dir`
    /// (moved there with `moving`, else looked for there).
    pub async fn set_location(
        &self,
        e: &Entry,
        dir: &std::path::Path,
        moving: bool,
    ) -> Result<(), DaemonError> {
        if dir == e.record.download_dir {
            return Ok(());
        }
        let ih = e.info_hash();
        let meta = e.handle.meta();
        let s = e.handle.stats();
        self.inner.session.forget(&ih).await;
        if let (true, Some((t, old))) = (moving, &meta) {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
            // The torrent's top-level entries: its directory, or its file.
            let mut tops: Vec<PathBuf> = t
                .files
                .iter()
                .filter_map(|f| f.path.components().next())
                .map(|c| PathBuf::from(c.as_os_str()))
                .collect();
            tops.dedup();
            for top in tops {
                let from = old.join(&top);
                if from.symlink_metadata().is_ok() {
                    std::fs::rename(&from, dir.join(&top)).map_err(|source| DaemonError::Dir {
                        path: from.clone(),
                        source,
                    })?;
                }
            }
        }
        let dir = dir.to_path_buf();
        self.save(e.id, |r| {
            r.download_dir = dir;
            r.uploaded_before += s.uploaded;
            r.downloaded_before += s.received;
        })?;
        self.relaunch_forgotten(e.id, false).await
    }

    /// Moves torrents in the list (Transmission's queue order).
    pub fn move_in_queue(&self, ids: &[u64], how: &str) {
        let mut list = lock(&self.inner.torrents);
        let chosen = |e: &Entry| ids.contains(&e.id);
        match how {
            "top" | "bottom" => {
                let (mut picked, mut rest): (Vec<Entry>, Vec<Entry>) =
                    list.drain(..).partition(chosen);
                if how == "top" {
                    picked.append(&mut rest);
                    *list = picked;
                } else {
                    rest.append(&mut picked);
                    *list = rest;
                }
            }
            "up" => {
                for i in 1..list.len() {
                    if chosen(&list[i]) && !chosen(&list[i - 1]) {
                        list.swap(i, i - 1);
                    }
                }
            }
            _ => {
                for i in (0..list.len().saturating_sub(1)).rev() {
                    if chosen(&list[i]) && !chosen(&list[i + 1]) {
                        list.swap(i, i + 1);
                    }
                }
            }
        }
    }

    /// The torrent's own caps (bytes/s; `None`: off).
    pub fn set_limits(
        &self,
        e: &Entry,
        up: Option<Option<u64>>,
        down: Option<Option<u64>>,
    ) -> Result<(), DaemonError> {
        let rec = self.save(e.id, |r| {
            if let Some(u) = up {
                r.up_limit = u;
            }
            if let Some(d) = down {
                r.down_limit = d;
            }
        })?;
        e.handle
            .set_rate_limits(rec.up_limit.unwrap_or(0), rec.down_limit.unwrap_or(0));
        Ok(())
    }

    /// Seed ratio, labels: kept; the seed limits apply at once.
    pub async fn set_record(
        &self,
        e: &Entry,
        f: impl FnOnce(&mut Record),
    ) -> Result<(), DaemonError> {
        let rec = self.save(e.id, f)?;
        e.handle.set_seed_limits(self.seed_limits(&rec)).await;
        Ok(())
    }

    /// The session's default ratio changed: torrents that follow it learn.
    pub async fn apply_default_ratio(&self) {
        for e in self.entries() {
            if e.record.seed_ratio_mode == 0 {
                e.handle.set_seed_limits(self.seed_limits(&e.record)).await;
            }
        }
    }

    fn seed_limits(&self, r: &Record) -> SeedLimits {
        SeedLimits {
            ratio: self.seed_ratio(r),
            time: None,
        }
    }

    /// Every second: metadata a magnet fetched is stored (so a restart
    /// needs no peers for it), completion dates are kept.
    async fn tick_loop(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            for e in self.entries() {
                if e.record.magnet.is_some() {
                    if let Some((t, _)) = e.handle.meta() {
                        let mut rec = e.record.clone();
                        rec.magnet = None;
                        match self.inner.store.put_with_metainfo(&rec, &t.to_file_bytes()) {
                            Ok(()) => {
                                let _ = self.save(e.id, |r| r.magnet = None);
                            }
                            Err(err) => tracing::warn!("cannot store fetched metadata: {err}"),
                        }
                    }
                }
                if e.record.done == 0 {
                    let s = e.handle.stats();
                    let complete = s.total_bytes > 0 && s.have_bytes >= s.total_bytes;
                    if complete && matches!(s.stage, Stage::Seeding | Stage::Done) {
                        let _ = self.save(e.id, |r| r.done = unix_now());
                    }
                }
            }
        }
    }

    /// Stops every torrent (trackers told, resume records flushed) and
    /// keeps the byte counts.
    pub async fn shutdown(&self) {
        let entries = self.entries();
        let up: u64 = entries.iter().map(|e| e.handle.stats().uploaded).sum();
        let down: u64 = entries.iter().map(|e| e.handle.stats().received).sum();
        for e in &entries {
            let s = e.handle.stats();
            let _ = self.save(e.id, |r| {
                r.uploaded_before += s.uploaded;
                r.downloaded_before += s.received;
            });
        }
        let secs = self.uptime().as_secs();
        let _ = self.update_settings(|s| {
            s.uploaded_total += up;
            s.downloaded_total += down;
            s.seconds_active += secs;
        });
        self.inner.cancel.cancel();
        self.inner.session.shutdown().await;
    }

    /// Where fetched and shared .torrent files are kept.
    pub fn torrent_file(&self, ih: &InfoHash) -> PathBuf {
        self.inner
            .config
            .state_dir
            .join("torrents")
            .join(format!("{}.torrent", ih.to_hex()))
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// The wanted files as ranges, from the unwanted indexes.
fn wanted_ranges(unwanted: &[u32], files: usize) -> Vec<RangeInclusive<u32>> {
    let mut out = Vec::new();
    let mut start = None;
    for i in 0..files as u32 {
        let want = !unwanted.contains(&i);
        match (want, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(s..=i - 1);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(s..=(files as u32).saturating_sub(1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwanted_indexes_become_wanted_ranges() {
        assert_eq!(wanted_ranges(&[], 3), vec![0..=2]);
        assert_eq!(wanted_ranges(&[1], 4), vec![0..=0, 2..=3]);
        assert_eq!(wanted_ranges(&[0, 3], 4), vec![1..=2]);
        assert_eq!(wanted_ranges(&[0, 1], 3), vec![2..=2]);
    }
}
