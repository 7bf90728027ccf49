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

mod hashing;
mod options;

use hashing::*;
pub use options::*;

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
    Encode(#[from] serde_bencode::Error),
    #[error("the new torrent does not load back: {0}")]
    SelfCheck(#[source] crate::metainfo::Error),
    #[error("the new torrent does not load back: the info-hash differs after loading")]
    HashChanged,
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
        let info_bytes = serde_bencode::to_bytes(&info)?;
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
        let bytes = serde_bencode::to_bytes(&meta)?;
        // The embedded info must be exactly the bytes we hashed, and the
        // file must load in our own parser.
        let loaded = Torrent::from_bytes(&bytes).map_err(CreateError::SelfCheck)?;
        if loaded.info_hash != info_hash || loaded.info_bytes != info_bytes {
            return Err(CreateError::HashChanged);
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
