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

mod add;
mod control;
pub(crate) mod folders;
pub(crate) mod store;

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
pub(crate) use store::{Record, Settings, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
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
pub(crate) struct DaemonConfig {
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
pub(crate) struct AddRequest {
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
pub(crate) struct Added {
    pub id: u64,
    pub name: String,
    pub info_hash: InfoHash,
    pub duplicate: bool,
}

/// One torrent the daemon holds.
#[derive(Clone)]
pub(crate) struct Entry {
    /// Stable for the daemon's lifetime (Transmission's `id`).
    pub id: u64,
    pub handle: TorrentHandle,
    pub record: Record,
}

impl Entry {
    pub(crate) fn info_hash(&self) -> InfoHash {
        InfoHash::from_hex(&self.record.info_hash).unwrap_or(InfoHash([0; 20]))
    }

    /// The torrent's name; before its metainfo is read, the magnet's
    /// `dn` or the info-hash.
    pub(crate) fn name(&self) -> String {
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
    pub(crate) fn uploaded_ever(&self) -> u64 {
        self.record.uploaded_before + self.handle.stats().uploaded
    }

    pub(crate) fn downloaded_ever(&self) -> u64 {
        self.record.downloaded_before + self.handle.stats().received
    }
}

/// Which torrents a request names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ids {
    All,
    /// Ids and hex info-hashes, as given.
    Some(Vec<IdOrHash>),
    /// Active in the last minute (Transmission's `recently-active`).
    RecentlyActive,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum IdOrHash {
    Id(u64),
    Hash(InfoHash),
}

#[derive(Clone)]
pub(crate) struct Daemon {
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

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `RECENT` after its last activity a torrent is no longer "recently active".
const RECENT: Duration = Duration::from_secs(60);

impl Daemon {
    /// Opens the state, starts the session and every stored torrent.
    pub(crate) async fn start(
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

    pub(crate) fn session(&self) -> &Session {
        &self.inner.session
    }

    pub(crate) fn config(&self) -> &DaemonConfig {
        &self.inner.config
    }

    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    pub(crate) fn settings(&self) -> Settings {
        lock(&self.inner.settings).clone()
    }

    /// Changes the session settings and keeps them.
    pub(crate) fn update_settings(&self, f: impl FnOnce(&mut Settings)) -> Result<(), DaemonError> {
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
    pub(crate) fn download_dir(&self) -> PathBuf {
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
    pub(crate) fn entries(&self) -> Vec<Entry> {
        lock(&self.inner.torrents).clone()
    }

    pub(crate) fn select(&self, ids: &Ids) -> Vec<Entry> {
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
    pub(crate) fn recently_removed(&self) -> Vec<u64> {
        let mut r = lock(&self.inner.removed);
        r.retain(|(_, at)| at.elapsed() < RECENT);
        r.iter().map(|(id, _)| *id).collect()
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
    pub(crate) async fn shutdown(&self) {
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
    pub(crate) fn torrent_file(&self, ih: &InfoHash) -> PathBuf {
        self.inner
            .config
            .state_dir
            .join("torrents")
            .join(format!("{}.torrent", ih.to_hex()))
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }
}

/// The wanted files as ranges, from the unwanted indexes.
fn wanted_ranges(unwanted: &[u32], files: u32) -> Vec<RangeInclusive<u32>> {
    let mut out = Vec::new();
    let mut start = None;
    for i in 0..files {
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
        out.push(s..=files.saturating_sub(1));
    }
    out
}

/// The files not to fetch, from a request's `files-wanted` and
/// `files-unwanted` (indexes, refused out of range like `--select` does);
/// `count` is the torrent's number of files when known.
fn unwanted_files(req: &AddRequest, count: Option<usize>) -> Result<Vec<u32>, DaemonError> {
    let mut unwanted = req.unwanted.clone();
    let Some(n) = count else {
        return Ok(unwanted);
    };
    if let Some(&index) = req
        .wanted
        .iter()
        .chain(&req.unwanted)
        .find(|&&i| i as usize >= n)
    {
        return Err(DaemonError::NoSuchFile { index, count: n });
    }
    unwanted.retain(|i| !req.wanted.contains(i));
    unwanted.sort_unstable();
    unwanted.dedup();
    if unwanted.len() >= n {
        return Err(DaemonError::NothingWanted);
    }
    Ok(unwanted)
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
