//! The torrent's files on disk: creating, syncing and deleting them,
//! where a seed's content is, and the metadata cache.

use super::*;

/// Forgets a torrent's resume record and, with `delete`, its files.
pub(super) async fn remove_files(
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
pub(super) fn sync_files(root: &Path, t: &Torrent, create: Option<&[bool]>) -> std::io::Result<()> {
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
pub(super) fn delete_files(root: &Path, t: &Torrent) -> std::io::Result<()> {
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
pub(super) fn cached_metadata(path: &Path, m: &Magnet) -> Option<Torrent> {
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
pub(super) fn unrelated_file(
    t: &Torrent,
    storage: &FileStorage,
    have: &Bitfield,
) -> Option<PathBuf> {
    let geo = t.geometry();
    storage
        .existing_files()
        .find(|(path, range)| {
            let mut pieces = geo.pieces_over(range.clone());
            !pieces.clone().any(|p| have.get(p))
                && pieces.any(|p| storage.was_on_disk(geo.piece_span(p)))
                && resume::has_data(path)
        })
        .map(|(path, _)| path.to_path_buf())
}

pub(super) async fn open_storage(
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
