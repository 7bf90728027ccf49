//! `.torrent` parsing (BEP-3, BEP-12 tiers, BEP-19 web seeds, BEP-5 nodes,
//! BEP-47 pad files and symlinks) into a flat, validated [`Torrent`].
//!
//! Two layers: [`RawMeta`]/[`RawInfo`] are views of the bencoded document as
//! found (the serialization side); [`Torrent`] is what the rest of the crate
//! uses. Every path in a `Torrent` is relative and sanitised: no component is
//! empty, `.`, `..`, or holds a separator or NUL, so joining it to an output
//! directory can never leave that directory; `file_list` reads the files
//! and makes their paths so.
//!
//! [`create`] goes the other way: it hashes files on disk into a new
//! `.torrent` (the `xorrent create` command).

pub mod create;
mod file_list;
pub(crate) mod select;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::bencode::{self, Dict, Limits, List, Value};
use crate::types::{Geometry, InfoHash};
pub use file_list::sanitize_element;
use file_list::{attr_has, file_list};

/// Largest .torrent file we read (libtorrent's default).
pub const MAX_TORRENT_FILE: u64 = 10 * 1000 * 1000;
/// Most pieces one torrent may have (libtorrent's default, 0x200000).
pub const MAX_PIECES: u64 = 2_097_152;
/// Largest piece length (32767 blocks, libtorrent's limit).
pub const MAX_PIECE_LEN: i64 = 32_767 * 16_384;
/// Rename attempts before a torrent with colliding paths is refused.
pub const MAX_DUPLICATE_RENAMES: usize = 500;
/// Longest path element we write (bytes); most file systems allow 255.
pub const MAX_ELEMENT_LEN: usize = 240;
/// Deepest directory nesting accepted in a file path.
pub const MAX_PATH_DEPTH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("torrent file is larger than {MAX_TORRENT_FILE} bytes")]
    FileTooLarge,
    #[error("not valid bencode: {0}")]
    Bencode(#[from] bencode::Error),
    #[error("torrent file is not a dictionary")]
    NotADict,
    #[error("missing or invalid 'info' dictionary")]
    MissingInfo,
    #[error("missing or invalid 'piece length' (must be an integer from 1 to {MAX_PIECE_LEN})")]
    InvalidPieceLength,
    #[error("missing or invalid 'pieces' (must be a byte string)")]
    MissingPieces,
    #[error("'pieces' holds {got} bytes, but {expected} pieces need {} bytes", expected * 20)]
    WrongPieceHashCount { expected: u64, got: usize },
    #[error("too many pieces: {count} (at most {MAX_PIECES})")]
    TooManyPieces { count: u64 },
    #[error("missing or invalid 'name'")]
    MissingName,
    #[error("invalid length: {0}")]
    InvalidLength(String),
    #[error("invalid file path: {0}")]
    InvalidPath(String),
    #[error("'files' is empty")]
    NoFiles,
    #[error("too many files with the same path (gave up after {MAX_DUPLICATE_RENAMES} renames)")]
    TooManyDuplicates,
    #[error("BitTorrent v2-only torrents are not supported (this torrent has no v1 'pieces')")]
    UnsupportedV2,
    #[error("hybrid torrent's v1 and v2 parts disagree: {0}")]
    InconsistentHybrid(String),
}

impl Error {
    /// A stable token naming the failure class (the conformance corpus's
    /// `error_kind` vocabulary).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::FileTooLarge => "file_too_large",
            Error::Bencode(bencode::Error::DepthLimit { .. }) => "bencode_depth_exceeded",
            Error::Bencode(bencode::Error::TrailingData { .. }) => "trailing_bytes",
            Error::Bencode(_) => "invalid_bencoding",
            Error::NotADict => "not_a_dict",
            Error::MissingInfo => "missing_info",
            Error::InvalidPieceLength => "missing_piece_length",
            Error::MissingPieces => "missing_pieces",
            Error::WrongPieceHashCount { .. } => "wrong_piece_hash_count",
            Error::TooManyPieces { .. } => "too_many_pieces",
            Error::MissingName => "missing_name",
            Error::InvalidLength(_) => "invalid_length",
            Error::InvalidPath(_) => "invalid_path",
            Error::NoFiles => "no_files",
            Error::TooManyDuplicates => "too_many_duplicate_filenames",
            Error::UnsupportedV2 => "unsupported_v2",
            Error::InconsistentHybrid(_) => "inconsistent_v1_v2_files",
        }
    }
}

/// What a file entry is (BEP-47 `attr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    /// Alignment padding: zeros that are hashed but never written.
    Pad,
    /// A symlink to another path inside the torrent; takes no payload bytes.
    Symlink {
        target: PathBuf,
    },
}

/// One file of the torrent, placed in the v1 byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Relative to the output directory (includes the torrent's name for
    /// multi-file torrents); sanitised.
    pub path: PathBuf,
    pub length: u64,
    /// Offset of the first byte in the torrent's byte stream.
    pub offset: u64,
    pub kind: FileKind,
}

impl FileInfo {
    pub fn is_pad(&self) -> bool {
        self.kind == FileKind::Pad
    }
}

/// A validated torrent: everything the engine, trackers and UI need.
#[derive(Debug, Clone)]
pub struct Torrent {
    pub info_hash: InfoHash,
    pub name: String,
    pub piece_length: u32,
    pub piece_hashes: Vec<[u8; 20]>,
    pub files: Vec<FileInfo>,
    /// Length of the v1 byte stream (pad files included).
    pub total_length: u64,
    /// Bytes of real content (pad files and symlinks excluded).
    pub payload_length: u64,
    pub multi_file: bool,
    pub private: bool,
    pub hybrid: bool,
    pub trackers: Vec<Vec<String>>,
    pub web_seeds: Vec<String>,
    pub http_seeds: Vec<String>,
    pub nodes: Vec<(String, u16)>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    /// The bencoded info dictionary exactly as found (BEP-9 serves it).
    pub info_bytes: Vec<u8>,
}

impl Torrent {
    pub fn geometry(&self) -> Geometry {
        Geometry::new(self.total_length, self.piece_length)
    }

    pub fn num_pieces(&self) -> u32 {
        u32::try_from(self.piece_hashes.len()).expect("at most MAX_PIECES")
    }

    /// Files are indexed by `u32` (selections, the RPC).
    pub fn num_files(&self) -> u32 {
        u32::try_from(self.files.len()).expect("a bounded .torrent lists fewer than 2^32")
    }

    /// Reads and parses a .torrent file, refusing oversized ones unread.
    pub fn from_file(path: &Path) -> Result<Torrent, Error> {
        use std::io::Read;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let mut data = Vec::new();
        f.take(MAX_TORRENT_FILE + 1)
            .read_to_end(&mut data)
            .map_err(io)?;
        if data.len() as u64 > MAX_TORRENT_FILE {
            return Err(Error::FileTooLarge);
        }
        Torrent::from_bytes(&data)
    }

    pub fn from_bytes(data: &[u8]) -> Result<Torrent, Error> {
        let (root, _end) = bencode::decode_with(data, Limits::TORRENT)?;
        let raw = RawMeta::from_value(&root)?;
        build(&raw)
    }

    /// A torrent from a bare info dictionary (fetched from peers by BEP-9).
    /// `info_hash` is the SHA-1 of exactly these bytes; trackers, web seeds
    /// and the other top-level fields are empty.
    pub fn from_info_bytes(info: &[u8]) -> Result<Torrent, Error> {
        if info.len() as u64 > MAX_TORRENT_FILE {
            return Err(Error::FileTooLarge);
        }
        // Trailing bytes would leave the hash short of the input (or, once
        // wrapped, be read as more top-level keys): refuse them first.
        bencode::decode_with(info, Limits::LENIENT_KEYS)?;
        let mut doc = Dict::with_capacity(info.len() + 8);
        doc.raw("info", info);
        let doc = doc.finish();
        let t = Torrent::from_bytes(&doc)?;
        debug_assert_eq!(t.info_bytes, info);
        Ok(t)
    }

    /// The bytes of a `.torrent` file for this torrent: `info` is exactly
    /// [`Torrent::info_bytes`] (never re-encoded, so the info-hash holds),
    /// the other fields as held, keys sorted. Set `created_by` and
    /// `creation_date` first to stamp a file made from fetched metadata.
    /// Top-level keys a `Torrent` does not keep (v2 `piece layers`, unknown
    /// ones) are not written.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut d = Dict::with_capacity(self.info_bytes.len() + 512);
        if let Some(first) = self.trackers.iter().flatten().next() {
            d.bytes("announce", first);
        }
        // One URL needs no list (as `create` writes it); the reader takes
        // `announce` alone as one tier.
        if self.trackers.iter().flatten().nth(1).is_some() {
            let mut tiers = List::new();
            for tier in self.trackers.iter().filter(|t| !t.is_empty()) {
                tiers.list(&tier.iter().collect());
            }
            d.list("announce-list", &tiers);
        }
        if let Some(c) = &self.comment {
            d.bytes("comment", c);
        }
        if let Some(c) = &self.created_by {
            d.bytes("created by", c);
        }
        if let Some(date) = self.creation_date {
            d.int("creation date", date);
        }
        if !self.http_seeds.is_empty() {
            d.list("httpseeds", &self.http_seeds.iter().collect());
        }
        d.raw("info", &self.info_bytes);
        if !self.nodes.is_empty() {
            let mut nodes = List::new();
            for (host, port) in &self.nodes {
                let mut node = List::new();
                node.bytes(host).int(i64::from(*port));
                nodes.list(&node);
            }
            d.list("nodes", &nodes);
        }
        if !self.web_seeds.is_empty() {
            d.list("url-list", &self.web_seeds.iter().collect());
        }
        d.finish()
    }
}

/// A torrent over `files` (path, length, kind) laid end to end, for unit
/// tests of code that only needs the layout.
#[cfg(test)]
pub(crate) fn test_torrent(piece_length: u32, files: &[(&str, u64, FileKind)]) -> Torrent {
    let mut offset = 0;
    let files: Vec<FileInfo> = files
        .iter()
        .map(|(p, l, k)| {
            let f = FileInfo {
                path: PathBuf::from(p),
                length: *l,
                offset,
                kind: k.clone(),
            };
            offset += l;
            f
        })
        .collect();
    Torrent {
        info_hash: InfoHash([0; 20]),
        name: "t".into(),
        piece_length,
        piece_hashes: vec![
            [0; 20];
            usize::try_from(offset.div_ceil(u64::from(piece_length))).unwrap()
        ],
        files,
        total_length: offset,
        payload_length: offset,
        multi_file: true,
        private: false,
        hybrid: false,
        trackers: vec![],
        web_seeds: vec![],
        http_seeds: vec![],
        nodes: vec![],
        comment: None,
        created_by: None,
        creation_date: None,
        info_bytes: vec![],
    }
}

/// The top-level dictionary as found in the file.
pub struct RawMeta<'a> {
    pub info: RawInfo<'a>,
    pub info_raw: &'a [u8],
    pub announce: Option<&'a [u8]>,
    pub announce_list: Option<&'a Value<'a>>,
    pub url_list: Option<&'a Value<'a>>,
    pub httpseeds: Option<&'a Value<'a>>,
    pub nodes: Option<&'a Value<'a>>,
    pub comment: Option<&'a [u8]>,
    pub created_by: Option<&'a [u8]>,
    pub creation_date: Option<i64>,
}

/// The info dictionary as found in the file.
pub struct RawInfo<'a> {
    pub dict: &'a Value<'a>,
    pub name: Option<&'a [u8]>,
    pub piece_length: Option<i64>,
    pub pieces: Option<&'a [u8]>,
    pub length: Option<&'a Value<'a>>,
    pub files: Option<&'a Value<'a>>,
    pub private: bool,
    pub meta_version: Option<i64>,
    pub file_tree: Option<&'a Value<'a>>,
}

impl<'a> RawMeta<'a> {
    pub fn from_value(root: &'a Value<'a>) -> Result<RawMeta<'a>, Error> {
        if root.as_dict().is_none() {
            return Err(Error::NotADict);
        }
        let info_entry = root.entry("info").ok_or(Error::MissingInfo)?;
        let dict = &info_entry.value;
        if dict.as_dict().is_none() {
            return Err(Error::MissingInfo);
        }
        let info = RawInfo {
            dict,
            name: dict
                .get("name.utf-8")
                .and_then(Value::as_bytes)
                .or_else(|| dict.get("name").and_then(Value::as_bytes)),
            piece_length: dict.get("piece length").and_then(Value::as_int),
            pieces: dict.get("pieces").and_then(Value::as_bytes),
            length: dict.get("length"),
            files: dict.get("files"),
            private: dict.get("private").and_then(Value::as_int) == Some(1),
            meta_version: dict.get("meta version").and_then(Value::as_int),
            file_tree: dict.get("file tree"),
        };
        Ok(RawMeta {
            info,
            info_raw: info_entry.raw,
            announce: root.get("announce").and_then(Value::as_bytes),
            announce_list: root.get("announce-list"),
            url_list: root.get("url-list"),
            httpseeds: root.get("httpseeds"),
            nodes: root.get("nodes"),
            comment: root.get("comment").and_then(Value::as_bytes),
            created_by: root.get("created by").and_then(Value::as_bytes),
            creation_date: root.get("creation date").and_then(Value::as_int),
        })
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn build(raw: &RawMeta<'_>) -> Result<Torrent, Error> {
    let info = &raw.info;
    let info_hash = InfoHash(Sha1::digest(raw.info_raw).into());
    if info.meta_version == Some(2) && info.dict.get("pieces").is_none() {
        return Err(Error::UnsupportedV2);
    }
    let piece_length = info
        .piece_length
        .filter(|&n| n > 0 && n <= MAX_PIECE_LEN)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(Error::InvalidPieceLength)?;
    let pieces = info.pieces.ok_or(Error::MissingPieces)?;
    let name_raw = info.name.ok_or(Error::MissingName)?;
    let mut name = sanitize_element(name_raw);
    if name.is_empty() || name == "_" && name_raw != b"_" {
        // A name that sanitises to nothing (e.g. "..") is replaced, not guessed.
        name = info_hash.to_hex();
    }

    let (files, multi_file) = file_list(info, &name)?;
    let total_length = files.last().map_or(0, |f| f.offset + f.length);
    if total_length == 0 {
        return Err(Error::InvalidLength("the torrent holds no data".into()));
    }
    let hybrid = info.meta_version == Some(2);
    if hybrid {
        // Before the piece count: a hybrid whose layouts disagree also has
        // the wrong number of v1 hashes, and the mismatch is the cause.
        check_hybrid(info, &files, piece_length)?;
    }
    let piece_hashes = piece_hashes(pieces, total_length.div_ceil(u64::from(piece_length)))?;
    let payload_length = files
        .iter()
        .filter(|f| f.kind == FileKind::Regular)
        .map(|f| f.length)
        .sum();

    Ok(Torrent {
        info_hash,
        name,
        piece_length,
        piece_hashes,
        files,
        total_length,
        payload_length,
        multi_file,
        private: info.private,
        hybrid,
        trackers: tracker_tiers(raw),
        web_seeds: url_strings(raw.url_list),
        http_seeds: url_strings(raw.httpseeds),
        nodes: nodes(raw.nodes),
        comment: raw.comment.map(text),
        created_by: raw.created_by.map(text),
        creation_date: raw.creation_date,
        info_bytes: raw.info_raw.to_vec(),
    })
}

/// `pieces` cut into hashes; there must be one for each of `count` pieces.
fn piece_hashes(pieces: &[u8], count: u64) -> Result<Vec<[u8; 20]>, Error> {
    if count > MAX_PIECES {
        return Err(Error::TooManyPieces { count });
    }
    if pieces.len() as u64 != count * 20 {
        return Err(Error::WrongPieceHashCount {
            expected: count,
            got: pieces.len(),
        });
    }
    Ok(pieces
        .chunks_exact(20)
        .map(|c| c.try_into().expect("chunks of 20"))
        .collect())
}

/// BEP-12 tiers, or the single `announce` URL; malformed entries are skipped.
fn tracker_tiers(raw: &RawMeta<'_>) -> Vec<Vec<String>> {
    let mut seen = HashSet::new();
    let mut tiers = Vec::new();
    if let Some(list) = raw.announce_list.and_then(Value::as_list) {
        for tier in list {
            let urls: Vec<String> = tier
                .as_list()
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && seen.insert(s.clone()))
                .collect();
            if !urls.is_empty() {
                tiers.push(urls);
            }
        }
    }
    if tiers.is_empty() {
        if let Some(a) = raw.announce.and_then(|a| std::str::from_utf8(a).ok()) {
            let a = a.trim();
            if !a.is_empty() {
                tiers.push(vec![a.to_string()]);
            }
        }
    }
    tiers
}

/// BEP-19 `url-list` / BEP-17 `httpseeds`: one string or a list; empty and
/// repeated URLs are dropped (first one kept).
fn url_strings(v: Option<&Value<'_>>) -> Vec<String> {
    let mut seen = HashSet::new();
    match v {
        Some(Value::Bytes(_)) => v
            .and_then(Value::as_str)
            .map(String::from)
            .into_iter()
            .collect(),
        Some(Value::List(l)) => l
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|s| !s.is_empty() && seen.insert(s.clone()))
    .collect()
}

fn nodes(v: Option<&Value<'_>>) -> Vec<(String, u16)> {
    v.and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(|pair| {
            let pair = pair.as_list()?;
            let host = pair.first()?.as_str()?;
            let port = u16::try_from(pair.get(1)?.as_int()?).ok()?;
            Some((host.to_string(), port))
        })
        .collect()
}

/// A hybrid's v2 file tree must list the same files, in the same order and
/// with the same lengths, as its v1 file list, and pads must align files to
/// piece boundaries.
fn check_hybrid(info: &RawInfo<'_>, files: &[FileInfo], piece_len: u32) -> Result<(), Error> {
    let tree = info
        .file_tree
        .ok_or_else(|| Error::InconsistentHybrid("no 'file tree'".into()))?;
    let mut leaves = Vec::new();
    let mut path = Vec::new();
    walk_tree(tree, &mut path, &mut leaves)?;
    let v1: Vec<&FileInfo> = files.iter().filter(|f| !f.is_pad()).collect();
    if v1.len() != leaves.len() {
        return Err(Error::InconsistentHybrid(format!(
            "{} v1 files but {} v2 files",
            v1.len(),
            leaves.len()
        )));
    }
    let v1_elements = info
        .files
        .and_then(Value::as_list)
        .map(|l| {
            l.iter()
                .filter(|e| {
                    !attr_has(e, b'p')
                        && !e
                            .get("path")
                            .and_then(Value::as_list)
                            .and_then(|p| p.last())
                            .and_then(Value::as_bytes)
                            .is_some_and(|b| b.starts_with(b"_____padding_file_"))
                })
                .map(|e| {
                    e.get("path")
                        .and_then(Value::as_list)
                        .unwrap_or_default()
                        .iter()
                        .filter_map(Value::as_bytes)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        // A single-file v2 tree holds one leaf named after the torrent.
        .unwrap_or_else(|| {
            let name = info
                .dict
                .get("name")
                .and_then(Value::as_bytes)
                .or(info.name);
            vec![name.into_iter().collect()]
        });
    for (i, (f, (leaf_path, leaf_len))) in v1.iter().zip(&leaves).enumerate() {
        if f.length != *leaf_len && !matches!(f.kind, FileKind::Symlink { .. }) {
            return Err(Error::InconsistentHybrid(format!(
                "file {i} is {} bytes in v1 but {leaf_len} in v2",
                f.length
            )));
        }
        if v1_elements.get(i) != Some(leaf_path) {
            return Err(Error::InconsistentHybrid(format!(
                "file {i} has different names"
            )));
        }
    }
    for w in files.windows(2) {
        if w[1].is_pad()
            && w[0].length > 0
            && (w[1].offset + w[1].length) % u64::from(piece_len) != 0
        {
            return Err(Error::InconsistentHybrid(format!(
                "the pad after {} does not end on a piece boundary",
                w[0].path.display()
            )));
        }
    }
    Ok(())
}

fn walk_tree<'a>(
    node: &'a Value<'a>,
    path: &mut Vec<&'a [u8]>,
    leaves: &mut Vec<(Vec<&'a [u8]>, u64)>,
) -> Result<(), Error> {
    let entries = node.as_dict().ok_or_else(|| {
        Error::InconsistentHybrid("a 'file tree' node is not a dictionary".into())
    })?;
    for e in entries {
        if e.key.is_empty() {
            let len = e
                .value
                .get("length")
                .and_then(Value::as_int)
                .filter(|&n| n >= 0)
                .ok_or_else(|| Error::InconsistentHybrid("a v2 file has no valid length".into()))?;
            leaves.push((path.clone(), len as u64));
        } else {
            path.push(e.key);
            walk_tree(&e.value, path, leaves)?;
            path.pop();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_hash_covers_the_raw_info_bytes() {
        // Unsorted keys inside info: a re-encoding would hash differently.
        let data =
            b"d4:infod4:name1:a6:lengthi3e12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee";
        let t = Torrent::from_bytes(data).unwrap();
        let start = 7;
        let raw = &data[start..data.len() - 1];
        assert_eq!(t.info_hash.0, <[u8; 20]>::from(Sha1::digest(raw)));
        assert_eq!(t.total_length, 3);
        assert_eq!(t.files[0].path, PathBuf::from("a"));
    }

    /// Top-level keys in strictly increasing order (`info` may hold any).
    fn assert_top_keys_sorted(bytes: &[u8]) {
        let (v, _) = bencode::decode_with(bytes, Limits::LENIENT_KEYS).unwrap();
        let keys: Vec<&[u8]> = v.as_dict().unwrap().iter().map(|e| e.key).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    fn fixture_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/conformance/torrents")
    }

    #[test]
    fn file_bytes_load_back_as_the_same_torrent_for_every_fixture() {
        let mut checked = 0;
        for entry in std::fs::read_dir(fixture_dir()).unwrap() {
            let path = entry.unwrap().path();
            let Ok(t) = Torrent::from_file(&path) else {
                continue;
            };
            let bytes = t.to_file_bytes();
            assert_top_keys_sorted(&bytes);
            let back = Torrent::from_bytes(&bytes).unwrap();
            // Debug shows every field, so this compares them all.
            assert_eq!(format!("{back:?}"), format!("{t:?}"), "{}", path.display());
            checked += 1;
        }
        assert!(checked > 20, "only {checked} fixtures loaded");
    }

    #[test]
    fn info_bytes_alone_give_the_same_info_hash_and_files() {
        let t = Torrent::from_file(&fixture_dir().join("sample.torrent")).unwrap();
        assert!(t.multi_file);
        let bare = Torrent::from_info_bytes(&t.info_bytes).unwrap();
        assert_eq!(bare.info_hash, t.info_hash);
        assert_eq!(
            bare.info_hash.0,
            <[u8; 20]>::from(Sha1::digest(&t.info_bytes))
        );
        assert_eq!(bare.name, t.name);
        assert_eq!(bare.files, t.files);
        assert_eq!(bare.piece_hashes, t.piece_hashes);
        assert!(bare.trackers.is_empty() && bare.comment.is_none());
    }

    #[test]
    fn a_multi_file_torrent_with_every_top_level_field_survives_the_trip() {
        // Unsorted keys in info: only a byte copy keeps the hash.
        let info = b"d5:filesld4:pathl1:a1:be6:lengthi5eed6:lengthi7e4:pathl1:ceee\
                     4:name3:dir12:piece lengthi16384e6:pieces20:ppppppppppppppppppppe";
        let mut t = Torrent::from_info_bytes(info).unwrap();
        assert_eq!(t.info_hash.0, <[u8; 20]>::from(Sha1::digest(info)));
        assert_eq!(t.files.len(), 2);
        t.trackers = vec![
            vec!["http://a/ann".into(), "udp://b:1".into()],
            vec!["http://c/".into()],
        ];
        t.web_seeds = vec!["http://w/".into()];
        t.http_seeds = vec!["http://h/".into()];
        t.nodes = vec![("n.example".into(), 6881)];
        t.comment = Some("c".into());
        t.created_by = Some("xorrent/test".into());
        t.creation_date = Some(-1);
        let bytes = t.to_file_bytes();
        assert_top_keys_sorted(&bytes);
        let back = Torrent::from_bytes(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{t:?}"));
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(
            text.starts_with("d8:announce12:http://a/ann13:announce-listll"),
            "{text}"
        );

        // One tracker: `announce` only.
        t.trackers = vec![vec!["http://a/".into()]];
        let bytes = t.to_file_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("announce-list"));
        assert_eq!(Torrent::from_bytes(&bytes).unwrap().trackers, t.trackers);
    }

    #[test]
    fn info_bytes_with_anything_after_the_dictionary_are_refused() {
        let info = b"d6:lengthi3e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        assert!(Torrent::from_info_bytes(info).is_ok());
        let mut extra = info.to_vec();
        extra.extend_from_slice(b"1:x1:y");
        assert!(matches!(
            Torrent::from_info_bytes(&extra),
            Err(Error::Bencode(bencode::Error::TrailingData { .. }))
        ));
        assert!(matches!(
            Torrent::from_info_bytes(b"i5e"),
            Err(Error::MissingInfo)
        ));
        assert!(Torrent::from_info_bytes(b"d4:name").is_err());
    }
}
