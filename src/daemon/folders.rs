//! The watch and share folders, polled every two seconds (no inotify: a
//! poll also works on network file systems, and costs one `readdir`).
//!
//! - `--watch-dir`: a `.torrent` file dropped there is added, then renamed
//!   `NAME.torrent.added`; one that cannot be added is renamed
//!   `NAME.torrent.invalid`, with the reason in `NAME.torrent.invalid.txt`.
//! - `--share-dir`: a file or directory put there is hashed into a
//!   torrent and seeded from where it is; the .torrent is kept under the
//!   state directory and served at `/torrents/<info-hash>.torrent`.
//!
//! Both wait until an entry has not changed for `SETTLE` (2 s), so a file
//! still being copied in is not taken half-written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use super::{AddRequest, Daemon, DaemonError};
use crate::metainfo::create::{self, CreateOptions};

const POLL: Duration = Duration::from_secs(2);
/// How long an entry must stay unchanged before it is taken.
const SETTLE: Duration = Duration::from_secs(2);

pub(super) fn spawn(d: &Daemon) {
    if let Some(dir) = d.config().watch_dir.clone() {
        let d = d.clone();
        tokio::spawn(async move { watch_loop(d, dir).await });
    }
    if let Some(dir) = d.config().share_dir.clone() {
        let d = d.clone();
        tokio::spawn(async move { share_loop(d, dir).await });
    }
}

/// A shared entry was removed over RPC: it is not shared again unless it
/// changes.
pub(super) fn forget_shared(d: &Daemon, path: &Path) {
    let marker = skip_marker(d, path);
    let _ = std::fs::create_dir_all(marker.parent().unwrap_or(Path::new(".")));
    let _ = std::fs::write(marker, path.as_os_str().as_encoded_bytes());
}

fn skip_marker(d: &Daemon, path: &Path) -> PathBuf {
    use sha1::{Digest, Sha1};
    let h = Sha1::digest(path.as_os_str().as_encoded_bytes());
    d.config().state_dir.join("unshared").join(hex::encode(h))
}

/// The newest modification time and total size below `p` (not following
/// symlinks), to tell when it has settled.
fn fingerprint(p: &Path) -> Option<(SystemTime, u64)> {
    let m = p.symlink_metadata().ok()?;
    if m.is_file() {
        return Some((m.modified().ok()?, m.len()));
    }
    if !m.is_dir() {
        return None;
    }
    let mut newest = m.modified().ok()?;
    let mut size = 0;
    let mut stack = vec![p.to_path_buf()];
    let mut seen = 0usize;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).ok()?.flatten() {
            seen += 1;
            if seen > 100_000 {
                return None;
            }
            let Ok(m) = entry.path().symlink_metadata() else {
                continue;
            };
            if let Ok(t) = m.modified() {
                newest = newest.max(t);
            }
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() {
                size += m.len();
            }
        }
    }
    Some((newest, size))
}

fn settled(seen: &mut HashMap<PathBuf, (SystemTime, u64, SystemTime)>, p: &Path) -> bool {
    let Some((mtime, size)) = fingerprint(p) else {
        return false;
    };
    let now = SystemTime::now();
    match seen.get(p) {
        Some(&(m, s, since)) if m == mtime && s == size => {
            now.duration_since(since).unwrap_or_default() >= SETTLE
        }
        _ => {
            seen.insert(p.to_path_buf(), (mtime, size, now));
            false
        }
    }
}

async fn watch_loop(d: Daemon, dir: PathBuf) {
    let mut seen = HashMap::new();
    let cancel = d.cancel_token();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let Ok(list) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in list.flatten() {
            let p = entry.path();
            let is_torrent = p
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("torrent"));
            if !is_torrent || !p.is_file() || !settled(&mut seen, &p) {
                continue;
            }
            seen.remove(&p);
            let outcome = match std::fs::read(&p) {
                Ok(bytes) => d
                    .add(AddRequest {
                        metainfo: Some(bytes),
                        ..AddRequest::default()
                    })
                    .await
                    .map(|_| ()),
                Err(source) => Err(DaemonError::Read {
                    path: p.clone(),
                    source,
                }),
            };
            let mut done = p.clone().into_os_string();
            match outcome {
                Ok(()) => {
                    tracing::info!(file = %p.display(), "added from the watch folder");
                    done.push(".added");
                }
                Err(e) => {
                    tracing::warn!(file = %p.display(), "not added from the watch folder: {e}");
                    done.push(".invalid");
                    let mut why = done.clone();
                    why.push(".txt");
                    let _ = std::fs::write(&why, format!("{e}\n"));
                }
            }
            if let Err(e) = std::fs::rename(&p, &done) {
                tracing::warn!(file = %p.display(), "cannot rename: {e}");
            }
        }
    }
}

async fn share_loop(d: Daemon, dir: PathBuf) {
    let mut seen = HashMap::new();
    let cancel = d.cancel_token();
    loop {
        let Ok(list) = std::fs::read_dir(&dir) else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL) => continue,
            }
        };
        let shared: Vec<PathBuf> = d
            .entries()
            .iter()
            .filter_map(|e| e.record.shared_from.clone())
            .collect();
        for entry in list.flatten() {
            let p = entry.path();
            let hidden = entry.file_name().as_encoded_bytes().first() == Some(&b'.');
            if hidden || shared.contains(&p) || skip_marker(&d, &p).exists() {
                continue;
            }
            if !settled(&mut seen, &p) {
                continue;
            }
            seen.remove(&p);
            match share(&d, &dir, &p).await {
                Ok(()) => tracing::info!(path = %p.display(), "shared"),
                Err(e) => {
                    tracing::warn!(path = %p.display(), "cannot share: {e}");
                    // Not retried until it changes.
                    forget_shared(&d, &p);
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Hashes `p` into a torrent and seeds it from `dir`.
async fn share(d: &Daemon, dir: &Path, p: &Path) -> Result<(), DaemonError> {
    let path = p.to_path_buf();
    let created = tokio::task::spawn_blocking(move || {
        let opts = CreateOptions {
            creation_date: Some(super::unix_now() as i64),
            ..CreateOptions::default()
        };
        create::create(&path, &opts, &AtomicU64::new(0))
    })
    .await
    .map_err(DaemonError::Task)?
    .map_err(|source| DaemonError::Create {
        path: p.to_path_buf(),
        source,
    })?;
    let file = d.torrent_file(&created.info_hash);
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|source| DaemonError::Dir {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    crate::torrent::save_torrent(&created.torrent, &file)?;
    d.add(AddRequest {
        metainfo: Some(created.bytes),
        download_dir: Some(dir.to_path_buf()),
        paused: Some(false),
        shared_from: Some(p.to_path_buf()),
        ..AddRequest::default()
    })
    .await?;
    Ok(())
}
