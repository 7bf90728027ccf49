//! The daemon's state on disk: which torrents it holds, their settings,
//! their metainfo, and the session settings, in one redb database
//! (`<state dir>/daemon.redb`).
//!
//! redb commits are atomic and durable (copy-on-write pages, checksummed
//! roots, fsync on commit), so a `kill -9` at any moment leaves either the
//! old or the new state; each change is one small transaction. The
//! verified pieces are not here: they are the resume records (`resume`),
//! written only once the data they vouch for is on disk.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// Info-hash (hex) → [`Record`] as JSON.
const TORRENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("torrents");
/// Info-hash (hex) → the .torrent file's bytes (for a magnet, once fetched).
const METAINFO: TableDefinition<&str, &[u8]> = TableDefinition::new("metainfo");
/// "session" → [`Settings`] as JSON.
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");

#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("cannot open the state database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    #[error("state database")]
    Db(#[source] Box<redb::Error>),
    #[error("state record")]
    Json(#[from] serde_json::Error),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// One torrent as the daemon keeps it between runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Record {
    /// Hex info-hash.
    pub info_hash: String,
    /// How it was added, while its metainfo is not known (a magnet).
    #[serde(default)]
    pub magnet: Option<String>,
    pub download_dir: PathBuf,
    #[serde(default)]
    pub paused: bool,
    /// Unix seconds.
    pub added: u64,
    /// Add order (unix nanoseconds), so a restart lists torrents as added.
    #[serde(default)]
    pub order: u128,
    /// Unix seconds it completed (0: not yet).
    #[serde(default)]
    pub done: u64,
    /// Indexes of the files not wanted.
    #[serde(default)]
    pub unwanted: Vec<u32>,
    /// The torrent's own caps in bytes/s, when enabled.
    #[serde(default)]
    pub up_limit: Option<u64>,
    #[serde(default)]
    pub down_limit: Option<u64>,
    /// Transmission's `seedRatioMode`: 0 session default, 1 own, 2 none.
    #[serde(default)]
    pub seed_ratio_mode: u8,
    #[serde(default)]
    pub seed_ratio: f64,
    #[serde(default)]
    pub labels: Vec<String>,
    /// Made from a file in the share folder: the path it came from.
    #[serde(default)]
    pub shared_from: Option<PathBuf>,
    /// Uploaded and downloaded in earlier runs (the counters restart).
    #[serde(default)]
    pub uploaded_before: u64,
    #[serde(default)]
    pub downloaded_before: u64,
}

/// Session settings changed over RPC (the flags give the starting values).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Settings {
    /// KiB/s, as Transmission counts them.
    pub speed_limit_down: Option<u64>,
    pub speed_limit_up: Option<u64>,
    pub speed_limit_down_enabled: Option<bool>,
    pub speed_limit_up_enabled: Option<bool>,
    pub seed_ratio_limit: Option<f64>,
    pub seed_ratio_limited: Option<bool>,
    pub download_dir: Option<PathBuf>,
    pub start_added_torrents: Option<bool>,
    /// Bytes moved by every earlier run, and how many runs there were.
    #[serde(default)]
    pub uploaded_total: u64,
    #[serde(default)]
    pub downloaded_total: u64,
    #[serde(default)]
    pub files_added: u64,
    #[serde(default)]
    pub session_count: u64,
    #[serde(default)]
    pub seconds_active: u64,
}

pub(crate) struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database. A second daemon on the same state
    /// directory is refused here (redb locks the file).
    pub(crate) fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let tx = db.begin_write()?;
        tx.open_table(TORRENTS)?;
        tx.open_table(METAINFO)?;
        tx.open_table(SETTINGS)?;
        tx.commit()?;
        Ok(Store { db })
    }

    /// Every record that decodes; one that does not is skipped with a
    /// warning (its torrent is lost, the others are not).
    pub(crate) fn records(&self) -> Result<Vec<Record>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(TORRENTS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            match serde_json::from_slice::<Record>(v.value()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(torrent = k.value(), "state record skipped: {e}"),
            }
        }
        out.sort_by_key(|r| (r.added, r.order));
        Ok(out)
    }

    pub(crate) fn put(&self, r: &Record) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(r)?;
        let tx = self.db.begin_write()?;
        tx.open_table(TORRENTS)?
            .insert(r.info_hash.as_str(), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// The record and its metainfo in one transaction.
    pub(crate) fn put_with_metainfo(&self, r: &Record, metainfo: &[u8]) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(r)?;
        let tx = self.db.begin_write()?;
        tx.open_table(METAINFO)?
            .insert(r.info_hash.as_str(), metainfo)?;
        tx.open_table(TORRENTS)?
            .insert(r.info_hash.as_str(), bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn metainfo(&self, info_hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(METAINFO)?;
        Ok(t.get(info_hash)?.map(|v| v.value().to_vec()))
    }

    pub(crate) fn delete(&self, info_hash: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(TORRENTS)?.remove(info_hash)?;
        tx.open_table(METAINFO)?.remove(info_hash)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn settings(&self) -> Result<Settings, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(SETTINGS)?;
        Ok(t.get("session")?
            .and_then(|v| serde_json::from_slice(v.value()).ok())
            .unwrap_or_default())
    }

    pub(crate) fn put_settings(&self, s: &Settings) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(s)?;
        let tx = self.db.begin_write()?;
        tx.open_table(SETTINGS)?
            .insert("session", bytes.as_slice())?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ih: &str, added: u64) -> Record {
        Record {
            info_hash: ih.into(),
            magnet: None,
            download_dir: "/tmp/x".into(),
            paused: false,
            added,
            order: 0,
            done: 0,
            unwanted: vec![2],
            up_limit: None,
            down_limit: Some(1024),
            seed_ratio_mode: 0,
            seed_ratio: 2.0,
            labels: vec!["a".into()],
            shared_from: None,
            uploaded_before: 0,
            downloaded_before: 0,
        }
    }

    #[test]
    fn records_survive_reopening_and_deletes_take_the_metainfo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        {
            let s = Store::open(&path).unwrap();
            s.put_with_metainfo(&record("bb", 2), b"d4:infod...")
                .unwrap();
            s.put(&record("aa", 1)).unwrap();
            let set = Settings {
                speed_limit_up: Some(5),
                ..Settings::default()
            };
            s.put_settings(&set).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let r = s.records().unwrap();
        assert_eq!(
            r.iter().map(|r| r.info_hash.as_str()).collect::<Vec<_>>(),
            ["aa", "bb"]
        );
        assert_eq!(r[1], record("bb", 2));
        assert_eq!(s.metainfo("bb").unwrap().unwrap(), b"d4:infod...");
        assert_eq!(s.settings().unwrap().speed_limit_up, Some(5));
        s.delete("bb").unwrap();
        assert_eq!(s.records().unwrap().len(), 1);
        assert!(s.metainfo("bb").unwrap().is_none());
    }

    #[test]
    fn a_second_opener_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let _first = Store::open(&path).unwrap();
        assert!(Store::open(&path).is_err());
    }
}
