//! Making `.torrent` files from files on disk (`xorrent create`).
//!
//! Two steps: [`scan`] walks the path and fixes the file list (cheap, and it
//! reports what was skipped), then [`Layout::hash`] hashes the pieces on all
//! cores and encodes the metainfo. [`create`] does both.
//!
//! # What goes in
//! - A regular file gives a single-file torrent, a directory a multi-file
//!   torrent named after it (`--name` overrides either name).
//! - PATH itself may be a symlink to a file or directory; only that top
//!   link is followed. Below it nothing is followed: a symlink is skipped
//!   with a warning (so a link to a file outside PATH never leaks it in),
//!   and so are sockets, FIFOs and device nodes. Files are opened with
//!   `O_NOFOLLOW`, and one that is no longer a regular file is refused.
//! - Every regular file below a directory is included: hidden files and
//!   empty files too. Empty directories cannot be expressed in BEP-3 and
//!   are left out. The output `.torrent` is skipped if it lies inside PATH.
//! - Names must be UTF-8 (the torrent stores them as UTF-8); another name
//!   is an error naming the path, not a silent skip.
//! - A torrent of zero bytes (only empty files) is refused: clients,
//!   ours included, reject it.
//!
//! # File order
//! Files are sorted by path, compared element by element (directory
//! components), each element compared byte-wise on its UTF-8 bytes. So
//! `a/z` comes before `a-b` (element `a` sorts before `a-b`), `B` before
//! `a`, and the result never depends on the file system's directory order
//! or the locale. The same directory always gives the same info-hash.
//!
//! # Piece length
//! An explicit size is a power of two from 16 KiB to 16 MiB, given as
//! bytes or with a K/M suffix: `262144`, `256K`, `256KiB`, `1M`, `1MiB`
//! (case-insensitive; K = KiB = 1024). `auto` (the default) takes the
//! smallest power of two in that range that gives at most 2500 pieces.
//! Unless the range clamps it, that lands in 1251..=2500 pieces (halving
//! the piece would give more than 2500, so this one gives more than 1250).
//! Below 2500 × 16 KiB (about 39 MiB) it is 16 KiB (fewer pieces); above
//! 2500 × 16 MiB (about 39 GiB) it is 16 MiB (more pieces).
//!
//! # Trackers (BEP-12)
//! Each `-t` value is one tier; URLs separated by the tier separator (`,`
//! unless `--tier-sep` says otherwise) inside one value share that tier.
//! Repeated URLs are dropped. `announce` is the first URL of the first
//! tier; `announce-list` is written only when there is more than one URL.
//!
//! # Output
//! Canonical bencode (dictionary keys sorted byte-wise, BEP-3), from serde
//! structs kept apart from [`super::Torrent`]. `info` holds
//! `files` (a list of `{length, path}`) or `length`, `name`,
//! `piece length`, `pieces`, `private` (`1`, only when set) and `source`
//! (only when given); the top level holds `announce`, `announce-list`,
//! `comment`, `created by` (`xorrent/<version>`), `creation date` and
//! `url-list` (BEP-19), each only when there is something to say. The
//! result is loaded back with [`Torrent::from_bytes`](super::Torrent::from_bytes)
//! and must give the same info-hash before it is returned.
//!
//! # Hashing
//! One worker thread per core takes piece indexes from a shared counter
//! and reads its piece with positional reads across file boundaries into
//! its own piece-sized buffer: memory is threads × piece length, never
//! whole files. A shared byte counter reports progress, a flag cancels.
//! A file that is shorter than scanned, or whose length or modification
//! time changed by the end, is an error: the hashes would be wrong.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use serde::Serialize;
use sha1::{Digest, Sha1};

use super::{sanitize_element, Torrent, MAX_PATH_DEPTH, MAX_PIECES};
use crate::types::InfoHash;

/// Smallest piece length we write (one block).
pub const MIN_PIECE_LENGTH: u32 = 16 * 1024;
/// Largest piece length we write.
pub const MAX_PIECE_LENGTH: u32 = 16 * 1024 * 1024;
/// `auto` picks the smallest piece length giving at most this many pieces.
pub const AUTO_MAX_PIECES: u64 = 2500;
/// The `created by` value.
pub const CREATED_BY: &str = concat!("xorrent/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file or a directory")]
    NotFileOrDir { path: PathBuf },
    #[error("{path}: the name is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("cannot take a torrent name from {path}; give one")]
    NoName { path: PathBuf },
    #[error("invalid torrent name {0:?}: it must be non-empty, not `.` or `..`, without `/`, `\\` or NUL, and at most 240 bytes")]
    InvalidName(String),
    #[error("nothing to share: {path} holds no data (only empty files, or none)")]
    Empty { path: PathBuf },
    #[error("{path} is nested deeper than {MAX_PATH_DEPTH} directories")]
    TooDeep { path: PathBuf },
    #[error("the output file {path} is the file to share")]
    OutputIsInput { path: PathBuf },
    #[error("invalid piece length {0:?}: give `auto` or a power of two from 16 KiB to 16 MiB, as bytes or with a K/KiB/M/MiB suffix (e.g. 262144, 256K, 1MiB)")]
    InvalidPieceLength(String),
    #[error("{count} pieces of {piece_length} bytes are too many (at most {MAX_PIECES}); choose a larger piece length")]
    TooManyPieces { count: u64, piece_length: u32 },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("{path} changed while it was being hashed; try again")]
    Changed { path: PathBuf },
    #[error("interrupted while hashing")]
    Cancelled,
    #[error("cannot encode the torrent: {0}")]
    Encode(String),
    #[error("the new torrent does not load back: {0}")]
    SelfCheck(String),
}

/// `--piece-length`: `auto` or a fixed power of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PieceLength {
    #[default]
    Auto,
    Fixed(u32),
}

impl PieceLength {
    /// The piece length for `total` bytes.
    pub fn resolve(self, total: u64) -> u32 {
        match self {
            PieceLength::Auto => auto_piece_length(total),
            PieceLength::Fixed(n) => n,
        }
    }
}

impl FromStr for PieceLength {
    type Err = CreateError;
    fn from_str(s: &str) -> Result<PieceLength, CreateError> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(PieceLength::Auto)
        } else {
            parse_piece_length(s).map(PieceLength::Fixed)
        }
    }
}

/// Parses `262144`, `256K`, `256KB`, `256KiB`, `1M`, `1MiB` (case-insensitive,
/// K = KB = KiB = 1024) and checks it is a power of two from 16 KiB to 16 MiB.
pub fn parse_piece_length(s: &str) -> Result<u32, CreateError> {
    let bad = || CreateError::InvalidPieceLength(s.to_string());
    let t = s.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let num: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim_start() {
        "" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    let n = num.checked_mul(mult).ok_or_else(bad)?;
    if !n.is_power_of_two() || n < u64::from(MIN_PIECE_LENGTH) || n > u64::from(MAX_PIECE_LENGTH) {
        return Err(bad());
    }
    Ok(n as u32)
}

/// The `auto` rule: the smallest power of two from 16 KiB to 16 MiB giving
/// at most [`AUTO_MAX_PIECES`] pieces (clamped to the range).
pub fn auto_piece_length(total: u64) -> u32 {
    let mut p = MIN_PIECE_LENGTH;
    while p < MAX_PIECE_LENGTH && total.div_ceil(u64::from(p)) > AUTO_MAX_PIECES {
        p *= 2;
    }
    p
}

/// Splits `-t` values into BEP-12 tiers: each value is a tier, `sep`
/// separates URLs within it (an empty `sep` means one URL per value).
/// Blank parts are ignored, repeated URLs dropped, every URL must parse.
pub fn parse_tiers(values: &[String], sep: &str) -> Result<Vec<Vec<String>>, CreateError> {
    let mut seen = HashSet::new();
    let mut tiers = Vec::new();
    for v in values {
        let parts: Vec<&str> = if sep.is_empty() {
            vec![v.as_str()]
        } else {
            v.split(sep).collect()
        };
        let urls: Vec<&str> = parts
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(CreateError::InvalidUrl {
                url: v.clone(),
                reason: "no tracker URL in it".into(),
            });
        }
        let mut tier = Vec::new();
        for u in urls {
            check_url(u)?;
            if seen.insert(u.to_string()) {
                tier.push(u.to_string());
            }
        }
        if !tier.is_empty() {
            tiers.push(tier);
        }
    }
    Ok(tiers)
}

fn check_url(u: &str) -> Result<(), CreateError> {
    match url::Url::parse(u) {
        Ok(p) if p.has_host() => Ok(()),
        Ok(_) => Err(CreateError::InvalidUrl {
            url: u.to_string(),
            reason: "it has no host".into(),
        }),
        Err(e) => Err(CreateError::InvalidUrl {
            url: u.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// What to put in the torrent besides the files.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Overrides the name taken from the path.
    pub name: Option<String>,
    pub piece_length: PieceLength,
    /// BEP-12 tiers (see [`parse_tiers`]).
    pub trackers: Vec<Vec<String>>,
    /// BEP-19 `url-list`.
    pub web_seeds: Vec<String>,
    pub private: bool,
    pub comment: Option<String>,
    /// `info.source`: makes the info-hash differ per site.
    pub source: Option<String>,
    /// Unix time for `creation date`; `None` leaves it out.
    pub creation_date: Option<i64>,
    /// Hashing threads; 0 means one per core.
    pub threads: usize,
    /// Files never to include (the output .torrent), matched by identity.
    pub exclude: Vec<PathBuf>,
}

/// One file to hash.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path elements below the torrent's directory; empty for a
    /// single-file torrent.
    pub path: Vec<String>,
    pub length: u64,
    /// Offset in the torrent's byte stream.
    pub offset: u64,
    /// Where it is on disk.
    pub disk: PathBuf,
    /// False only for a single file given as a symlink (the top link is
    /// followed); everything else is opened with `O_NOFOLLOW`.
    nofollow: bool,
    modified: Option<SystemTime>,
}

/// The scanned file list, ready to hash.
#[derive(Debug, Clone)]
pub struct Layout {
    pub name: String,
    /// A directory (`files` list) rather than one file (`length`).
    pub multi_file: bool,
    pub files: Vec<SourceFile>,
    pub total: u64,
    /// What was skipped and why, for the user.
    pub warnings: Vec<String>,
}

/// A finished torrent.
#[derive(Debug, Clone)]
pub struct Created {
    /// The bencoded `.torrent` file.
    pub bytes: Vec<u8>,
    pub info_hash: InfoHash,
    pub name: String,
    pub num_pieces: u32,
    pub piece_length: u32,
    pub total: u64,
    pub num_files: usize,
    pub trackers: Vec<Vec<String>>,
    /// The new file as our parser reads it (for the magnet link).
    pub torrent: Torrent,
}

/// Scans `path` and hashes it: [`scan`] then [`Layout::hash`].
pub fn create(
    path: &Path,
    opts: &CreateOptions,
    progress: &AtomicU64,
) -> Result<Created, CreateError> {
    scan(path, opts)?.hash(opts, progress, &AtomicBool::new(false))
}

/// The torrent's name: `name` if given (checked), else the last element of
/// `path` (of its canonical form for `.` and the like).
pub fn torrent_name(path: &Path, name: Option<&str>) -> Result<String, CreateError> {
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let base = match path.file_name() {
                Some(b) => b.to_os_string(),
                None => std::fs::canonicalize(path)
                    .map_err(|source| CreateError::Io {
                        path: path.to_path_buf(),
                        source,
                    })?
                    .file_name()
                    .ok_or_else(|| CreateError::NoName {
                        path: path.to_path_buf(),
                    })?
                    .to_os_string(),
            };
            base.into_string().map_err(|_| CreateError::NotUtf8 {
                path: path.to_path_buf(),
            })?
        }
    };
    if sanitize_element(name.as_bytes()) != name {
        return Err(CreateError::InvalidName(name));
    }
    Ok(name)
}

/// Walks `path` and fixes the file list, in the order documented above.
pub fn scan(path: &Path, opts: &CreateOptions) -> Result<Layout, CreateError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| CreateError::Io { path: p, source }
    };
    let name = torrent_name(path, opts.name.as_deref())?;
    let excluded: HashSet<(u64, u64)> = opts
        .exclude
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    // The top path is followed if it is a symlink.
    let top = std::fs::metadata(path).map_err(io(path))?;
    let mut warnings = Vec::new();
    let (multi_file, mut files) = if top.is_file() {
        if excluded.contains(&(top.dev(), top.ino())) {
            return Err(CreateError::OutputIsInput {
                path: path.to_path_buf(),
            });
        }
        let f = SourceFile {
            path: Vec::new(),
            length: top.len(),
            offset: 0,
            disk: path.to_path_buf(),
            nofollow: false,
            modified: top.modified().ok(),
        };
        (false, vec![f])
    } else if top.is_dir() {
        let mut files = Vec::new();
        let mut walk = Walk {
            excluded: &excluded,
            files: &mut files,
            warnings: &mut warnings,
        };
        walk.dir(path, &mut Vec::new())?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        (true, files)
    } else {
        return Err(CreateError::NotFileOrDir {
            path: path.to_path_buf(),
        });
    };
    let mut offset = 0u64;
    for f in &mut files {
        f.offset = offset;
        offset += f.length;
    }
    if offset == 0 {
        return Err(CreateError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(Layout {
        name,
        multi_file,
        files,
        total: offset,
        warnings,
    })
}

struct Walk<'a> {
    excluded: &'a HashSet<(u64, u64)>,
    files: &'a mut Vec<SourceFile>,
    warnings: &'a mut Vec<String>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, rel: &mut Vec<String>) -> Result<(), CreateError> {
        let io = |source| CreateError::Io {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let disk = entry.path();
            let Ok(element) = entry.file_name().into_string() else {
                return Err(CreateError::NotUtf8 { path: disk });
            };
            // `file_type` and `metadata` of a directory entry do not follow
            // symlinks.
            let kind = entry.file_type().map_err(|source| CreateError::Io {
                path: disk.clone(),
                source,
            })?;
            if kind.is_symlink() {
                self.warnings.push(format!(
                    "skipping symlink {} (symlinks are not followed)",
                    disk.display()
                ));
                continue;
            }
            if !kind.is_dir() && !kind.is_file() {
                self.warnings.push(format!(
                    "skipping {} (not a regular file: socket, FIFO or device)",
                    disk.display()
                ));
                continue;
            }
            if rel.len() + 1 > MAX_PATH_DEPTH {
                return Err(CreateError::TooDeep { path: disk });
            }
            if sanitize_element(element.as_bytes()) != element {
                self.warnings.push(format!(
                    "{}: clients will rename this element when they save it",
                    disk.display()
                ));
            }
            rel.push(element);
            if kind.is_dir() {
                self.dir(&disk, rel)?;
            } else {
                let meta = entry.metadata().map_err(|source| CreateError::Io {
                    path: disk.clone(),
                    source,
                })?;
                if self.excluded.contains(&(meta.dev(), meta.ino())) {
                    self.warnings.push(format!(
                        "skipping {} (it is the output file)",
                        disk.display()
                    ));
                } else {
                    self.files.push(SourceFile {
                        path: rel.clone(),
                        length: meta.len(),
                        offset: 0,
                        disk,
                        nofollow: true,
                        modified: meta.modified().ok(),
                    });
                }
            }
            rel.pop();
        }
        Ok(())
    }
}

/// The `info` dictionary as written. Field order does not matter:
/// serde_bencode sorts keys byte-wise.
#[derive(Serialize)]
struct InfoOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<FileOut<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u64>,
    name: &'a str,
    #[serde(rename = "piece length")]
    piece_length: u32,
    #[serde(with = "serde_bytes")]
    pieces: &'a [u8],
    #[serde(skip_serializing_if = "Option::is_none")]
    private: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    length: u64,
    path: &'a [String],
}

/// The top-level dictionary as written.
#[derive(Serialize)]
struct MetaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    announce: Option<&'a str>,
    #[serde(rename = "announce-list", skip_serializing_if = "Option::is_none")]
    announce_list: Option<&'a [Vec<String>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
    #[serde(rename = "created by")]
    created_by: &'a str,
    #[serde(rename = "creation date", skip_serializing_if = "Option::is_none")]
    creation_date: Option<i64>,
    info: &'a InfoOut<'a>,
    #[serde(rename = "url-list", skip_serializing_if = "<[_]>::is_empty")]
    url_list: &'a [String],
}

impl Layout {
    /// Hashes every piece on `opts.threads` threads, adding hashed bytes to
    /// `progress`; setting `cancel` stops the workers.
    pub fn hash(
        &self,
        opts: &CreateOptions,
        progress: &AtomicU64,
        cancel: &AtomicBool,
    ) -> Result<Created, CreateError> {
        for url in &opts.web_seeds {
            check_url(url)?;
        }
        for url in opts.trackers.iter().flatten() {
            check_url(url)?;
        }
        let piece_length = opts.piece_length.resolve(self.total);
        let count = self.total.div_ceil(u64::from(piece_length));
        if count > MAX_PIECES {
            return Err(CreateError::TooManyPieces {
                count,
                piece_length,
            });
        }
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pieces = hash_pieces(
            &self.files,
            self.total,
            piece_length,
            threads,
            progress,
            cancel,
        )?;
        self.check_unchanged()?;
        self.encode(opts, piece_length, &pieces)
    }

    fn check_unchanged(&self) -> Result<(), CreateError> {
        for f in &self.files {
            let meta = if f.nofollow {
                std::fs::symlink_metadata(&f.disk)
            } else {
                std::fs::metadata(&f.disk)
            };
            let same = meta.is_ok_and(|m| m.len() == f.length && m.modified().ok() == f.modified);
            if !same {
                return Err(CreateError::Changed {
                    path: f.disk.clone(),
                });
            }
        }
        Ok(())
    }

    fn encode(
        &self,
        opts: &CreateOptions,
        piece_length: u32,
        pieces: &[u8],
    ) -> Result<Created, CreateError> {
        let enc = |e: serde_bencode::Error| CreateError::Encode(e.to_string());
        let files = self.multi_file.then(|| {
            self.files
                .iter()
                .map(|f| FileOut {
                    length: f.length,
                    path: &f.path,
                })
                .collect()
        });
        let info = InfoOut {
            files,
            length: (!self.multi_file).then_some(self.total),
            name: &self.name,
            piece_length,
            pieces,
            private: opts.private.then_some(1),
            source: opts.source.as_deref(),
        };
        let info_bytes = serde_bencode::to_bytes(&info).map_err(enc)?;
        let info_hash = InfoHash(Sha1::digest(&info_bytes).into());
        let urls = opts.trackers.iter().flatten().count();
        let meta = MetaOut {
            announce: opts.trackers.first().and_then(|t| t.first()).map(|s| &**s),
            announce_list: (urls > 1).then_some(&opts.trackers[..]),
            comment: opts.comment.as_deref(),
            created_by: CREATED_BY,
            creation_date: opts.creation_date,
            info: &info,
            url_list: &opts.web_seeds,
        };
        let bytes = serde_bencode::to_bytes(&meta).map_err(enc)?;
        // The embedded info must be exactly the bytes we hashed, and the
        // file must load in our own parser.
        let loaded =
            Torrent::from_bytes(&bytes).map_err(|e| CreateError::SelfCheck(e.to_string()))?;
        if loaded.info_hash != info_hash || loaded.info_bytes != info_bytes {
            return Err(CreateError::SelfCheck(
                "the info-hash differs after loading".into(),
            ));
        }
        Ok(Created {
            bytes,
            info_hash,
            name: self.name.clone(),
            num_pieces: loaded.num_pieces(),
            piece_length,
            total: self.total,
            num_files: self.files.len(),
            trackers: opts.trackers.clone(),
            torrent: loaded,
        })
    }
}

/// SHA-1 of every piece, concatenated. Workers take indexes from a shared
/// counter; each holds one piece-sized buffer.
fn hash_pieces(
    files: &[SourceFile],
    total: u64,
    piece_length: u32,
    threads: usize,
    progress: &AtomicU64,
    cancel: &AtomicBool,
) -> Result<Vec<u8>, CreateError> {
    let count = total.div_ceil(u64::from(piece_length)) as usize;
    let threads = threads.clamp(1, count.max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let work = || -> Result<Vec<(usize, [u8; 20])>, CreateError> {
        let mut reader = Reader { files, open: None };
        let mut buf = vec![0u8; piece_length as usize];
        let mut out = Vec::new();
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(CreateError::Cancelled);
            }
            if failed.load(Ordering::Relaxed) {
                return Ok(out);
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return Ok(out);
            }
            let start = i as u64 * u64::from(piece_length);
            let len = (total - start).min(u64::from(piece_length)) as usize;
            if let Err(e) = reader.read_at(start, &mut buf[..len]) {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            out.push((i, Sha1::digest(&buf[..len]).into()));
            progress.fetch_add(len as u64, Ordering::Relaxed);
        }
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|_| s.spawn(work)).collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut pieces = vec![0u8; count * 20];
    for r in results {
        for (i, h) in r? {
            pieces[i * 20..(i + 1) * 20].copy_from_slice(&h);
        }
    }
    Ok(pieces)
}

/// Positional reads of the torrent byte stream, keeping the last file open.
struct Reader<'a> {
    files: &'a [SourceFile],
    open: Option<(usize, File)>,
}

impl Reader<'_> {
    fn read_at(&mut self, mut offset: u64, mut buf: &mut [u8]) -> Result<(), CreateError> {
        while !buf.is_empty() {
            // The file holding `offset`; empty files are passed over.
            let i = self
                .files
                .partition_point(|f| f.offset + f.length <= offset);
            let f = &self.files[i];
            let at = offset - f.offset;
            let n = ((f.length - at) as usize).min(buf.len());
            let (now, rest) = buf.split_at_mut(n);
            let file = self.file(i)?;
            file.read_exact_at(now, at).map_err(|source| {
                if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    CreateError::Changed {
                        path: f.disk.clone(),
                    }
                } else {
                    CreateError::Io {
                        path: f.disk.clone(),
                        source,
                    }
                }
            })?;
            buf = rest;
            offset += n as u64;
        }
        Ok(())
    }

    fn file(&mut self, i: usize) -> Result<&File, CreateError> {
        if self.open.as_ref().map(|(j, _)| *j) != Some(i) {
            let f = &self.files[i];
            let mut o = std::fs::OpenOptions::new();
            o.read(true);
            if f.nofollow {
                // Never through a link; and a FIFO swapped in since the
                // scan must not block the open (it is refused below).
                o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
            }
            let file = o.open(&f.disk).map_err(|source| CreateError::Io {
                path: f.disk.clone(),
                source,
            })?;
            if !file.metadata().is_ok_and(|m| m.is_file()) {
                return Err(CreateError::Changed {
                    path: f.disk.clone(),
                });
            }
            self.open = Some((i, file));
        }
        Ok(&self.open.as_ref().expect("just opened").1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u32 = 1024;
    const M: u32 = 1024 * 1024;

    #[test]
    fn piece_sizes_parse_as_bytes_or_with_binary_suffixes() {
        for (s, want) in [
            ("262144", 256 * K),
            ("256K", 256 * K),
            ("256k", 256 * K),
            ("256KiB", 256 * K),
            ("256kib", 256 * K),
            ("256KB", 256 * K),
            ("1M", M),
            ("1MB", M),
            ("1MiB", M),
            ("1mib", M),
            ("16K", 16 * K),
            ("16M", 16 * M),
            (" 512 KiB ", 512 * K),
        ] {
            assert_eq!(parse_piece_length(s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn piece_sizes_outside_the_range_or_not_powers_of_two_are_refused() {
        for s in [
            "",
            "0",
            "8K",
            "16383",
            "32M",
            "300K",
            "1G",
            "1.5M",
            "256KD",
            "K",
            "-16K",
            "auto2",
            "99999999999999999999",
        ] {
            let e = parse_piece_length(s).unwrap_err();
            assert!(e.to_string().contains("power of two"), "{s}: {e}");
        }
    }

    #[test]
    fn piece_length_flag_takes_auto_or_a_size() {
        assert_eq!("auto".parse::<PieceLength>().unwrap(), PieceLength::Auto);
        assert_eq!("AUTO".parse::<PieceLength>().unwrap(), PieceLength::Auto);
        assert_eq!("1M".parse::<PieceLength>().unwrap(), PieceLength::Fixed(M));
        assert!("fast".parse::<PieceLength>().is_err());
    }

    #[test]
    fn auto_piece_length_aims_at_1251_to_2500_pieces_within_the_range() {
        let pieces = |t: u64| t.div_ceil(u64::from(auto_piece_length(t)));
        // Tiny torrents: the 16 KiB floor.
        assert_eq!(auto_piece_length(1), 16 * K);
        assert_eq!(auto_piece_length(2500 * 16 * 1024), 16 * K);
        assert_eq!(auto_piece_length(2500 * 16 * 1024 + 1), 32 * K);
        // Huge torrents: the 16 MiB ceiling, with more pieces.
        let huge = 100u64 << 40;
        assert_eq!(auto_piece_length(huge), 16 * M);
        assert!(pieces(huge) > 2500);
        // Everything between lands in the target window.
        let mut t = 2500 * 16 * 1024 + 1;
        while t <= 2500 * (16u64 << 20) {
            let p = auto_piece_length(t);
            assert!(p.is_power_of_two() && (16 * K..=16 * M).contains(&p));
            let n = pieces(t);
            assert!((1251..=2500).contains(&n), "{t} bytes: {n} pieces of {p}");
            t = t * 13 / 11 + 7;
        }
        // Examples: 700 MiB -> 512 KiB (1400 pieces), 4 GiB -> 2 MiB (2048).
        assert_eq!(auto_piece_length(700 << 20), 512 * K);
        assert_eq!(auto_piece_length(4 << 30), 2 * M);
    }

    #[test]
    fn each_tracker_value_is_a_tier_and_the_separator_splits_one() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let tiers = parse_tiers(
            &v(&["http://a/ann", "udp://b:1,udp://c:2", " http://d/ , "]),
            ",",
        )
        .unwrap();
        assert_eq!(
            tiers,
            vec![
                v(&["http://a/ann"]),
                v(&["udp://b:1", "udp://c:2"]),
                v(&["http://d/"])
            ]
        );
        let tiers = parse_tiers(&v(&["http://a/x?k=1,2 http://b/"]), " ").unwrap();
        assert_eq!(tiers, vec![v(&["http://a/x?k=1,2", "http://b/"])]);
        // Repeats are dropped, a tier left empty disappears.
        let tiers = parse_tiers(&v(&["http://a/", "http://a/"]), ",").unwrap();
        assert_eq!(tiers, vec![v(&["http://a/"])]);
        assert!(parse_tiers(&v(&[","]), ",").is_err());
        assert!(parse_tiers(&v(&["not a url"]), ",").is_err());
    }

    #[test]
    fn names_that_clients_would_rewrite_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b"] {
            assert!(torrent_name(Path::new("x"), Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(torrent_name(Path::new("/some/dir/"), None).unwrap(), "dir");
        assert_eq!(torrent_name(Path::new("f"), Some("é ok")).unwrap(), "é ok");
    }

    #[test]
    fn output_keys_are_sorted_and_optional_keys_are_left_out() {
        let layout = Layout {
            name: "n".into(),
            multi_file: false,
            files: Vec::new(),
            total: 3,
            warnings: Vec::new(),
        };
        let pieces = [7u8; 20];
        let opts = CreateOptions::default();
        let c = layout.encode(&opts, 16 * K, &pieces).unwrap();
        let want = format!(
            "d10:created by{}:{}4:infod6:lengthi3e4:name1:n12:piece lengthi16384e6:pieces20:{}ee",
            CREATED_BY.len(),
            CREATED_BY,
            "\x07".repeat(20)
        );
        assert_eq!(c.bytes, want.as_bytes());

        let opts = CreateOptions {
            trackers: vec![vec!["http://a/".into(), "http://b/".into()]],
            web_seeds: vec!["http://w/".into()],
            private: true,
            comment: Some("c".into()),
            source: Some("s".into()),
            creation_date: Some(5),
            ..CreateOptions::default()
        };
        let c = layout.encode(&opts, 16 * K, &pieces).unwrap();
        let text = String::from_utf8_lossy(&c.bytes).into_owned();
        let order = [
            "8:announce9:",
            "13:announce-listll",
            "7:comment",
            "10:created by",
            "13:creation datei5e",
            "4:infod6:length",
            "7:privatei1e6:source1:se",
            "8:url-listl9:http://w/e",
        ];
        let at: Vec<usize> = order
            .iter()
            .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}")))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        let t = Torrent::from_bytes(&c.bytes).unwrap();
        assert!(t.private);
        assert_eq!(t.trackers, opts.trackers);
        assert_eq!(t.web_seeds, opts.web_seeds);
        assert_eq!(t.info_hash, c.info_hash);
    }

    #[test]
    fn one_tracker_gives_announce_without_announce_list() {
        let layout = Layout {
            name: "n".into(),
            multi_file: false,
            files: Vec::new(),
            total: 3,
            warnings: Vec::new(),
        };
        let opts = CreateOptions {
            trackers: vec![vec!["http://a/".into()]],
            ..CreateOptions::default()
        };
        let c = layout.encode(&opts, 16 * K, &[0; 20]).unwrap();
        let text = String::from_utf8_lossy(&c.bytes).into_owned();
        assert!(text.contains("8:announce9:http://a/"));
        assert!(!text.contains("announce-list"));
    }
}
