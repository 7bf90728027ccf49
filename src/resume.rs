//! The fast-resume record: which pieces were verified, and a stamp (size,
//! mtime) of every file they live in, so a restart can skip hashing what
//! is provably untouched (as libtorrent, Transmission and rqbit do).
//!
//! - [`save`] is crash-safe (temp file, fsync, rename, fsync of the
//!   directory); [`load`] refuses a record that is truncated, corrupt or
//!   hand-edited (a SHA-1 over its canonical JSON).
//! - [`trusted`] refuses a record written for another torrent or
//!   directory, then trusts a claimed piece only while every file it
//!   overlaps is stamped as recorded; the rest of the claim is rechecked.
//! - [`drop_holes`] moves trusted pieces that lie in a sparse hole (never
//!   written) to the recheck set, without reading data.
//!
//! Callers stamp files and save only after the claimed pieces are written
//! and synced (`Storage::finish`), so the record never runs ahead of the
//! data. Everything here blocks: run it off the reactor.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::metainfo::{FileKind, Torrent};
use crate::types::{Bitfield, InfoHash};

/// Format version written by this build; others are refused.
pub const VERSION: u32 = 1;
/// Largest record we read. 2 Mi pieces take 512 KiB of hex; the rest is
/// room for very large file lists.
pub const MAX_RECORD_LEN: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("cannot read resume file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write resume file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("resume file {path} is {len} bytes (at most {MAX_RECORD_LEN})")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("resume file is not a valid record: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("cannot encode the resume record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("resume file checksum is {stored}, its content hashes to {computed}")]
    BadChecksum { stored: String, computed: String },
    #[error("resume file version {found} is not supported (this build reads {VERSION})")]
    UnsupportedVersion { found: u64 },
    #[error("resume file field '{field}' is not valid hex: {source}")]
    BadHex {
        field: &'static str,
        source: hex::FromHexError,
    },
    #[error("resume bitfield holds {got} bytes, but {num_pieces} pieces need {expected}")]
    BitfieldLength {
        num_pieces: u32,
        expected: usize,
        got: usize,
    },
    #[error("resume bitfield has spare bits set past piece {num_pieces}")]
    SpareBits { num_pieces: u32 },
}

/// Why a record does not describe this torrent in this directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("the resume record is for another torrent ({record}, not {torrent})")]
    OtherTorrent { record: InfoHash, torrent: InfoHash },
    #[error("the resume record is for another directory ({}, not {})", record.display(), given.display())]
    OtherRoot { record: PathBuf, given: PathBuf },
    #[error("the resume record has {record} pieces, the torrent {torrent}")]
    OtherPieceCount { record: u32, torrent: u32 },
    #[error("the resume record has {record}-byte pieces, the torrent {torrent}")]
    OtherPieceLength { record: u32, torrent: u32 },
    #[error("the resume record lists other files than the torrent (from file {index})")]
    OtherFiles { index: usize },
    #[error("the file stamps given do not follow the torrent's files (from file {index})")]
    OtherStamps { index: usize },
}

/// A file's identity on disk when the record was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStamp {
    /// Relative to the root, as in the torrent.
    pub path: PathBuf,
    pub size: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
    /// A regular file was there (size and mtime are 0 otherwise).
    pub present: bool,
}

/// What a torrent's output looked like when its verified pieces were saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRecord {
    pub version: u32,
    pub info_hash: InfoHash,
    pub num_pieces: u32,
    pub piece_length: u32,
    /// The output directory, made absolute.
    pub root: PathBuf,
    /// Verified pieces.
    pub have: Bitfield,
    /// One stamp per regular (non-pad) file, in torrent order.
    pub files: Vec<FileStamp>,
    pub completed: bool,
    /// Unix seconds.
    pub saved_at: u64,
}

impl ResumeRecord {
    /// The record is for downloads into `root`.
    pub fn is_for(&self, root: &Path) -> bool {
        self.root == absolute(root)
    }

    /// `stamps` come from [`stamp_files`], taken after the pieces in `have`
    /// were written and synced.
    pub fn new(
        torrent: &Torrent,
        root: &Path,
        have: &Bitfield,
        stamps: Vec<FileStamp>,
        completed: bool,
    ) -> ResumeRecord {
        let saved_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ResumeRecord {
            version: VERSION,
            info_hash: torrent.info_hash,
            num_pieces: torrent.num_pieces(),
            piece_length: torrent.piece_length,
            root: absolute(root),
            have: have.clone(),
            files: stamps,
            completed,
            saved_at,
        }
    }
}

/// The record as written: hex for the binary fields.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    version: u32,
    info_hash: String,
    num_pieces: u32,
    piece_length: u32,
    root: PathBuf,
    have: String,
    files: Vec<FileStamp>,
    completed: bool,
    saved_at: u64,
}

/// The file: the record and the SHA-1 of its canonical JSON (serde_json's
/// compact form of `record`, which re-serialises identically after a parse).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    record: serde_json::Value,
    sha1: String,
}

fn checksum(record: &serde_json::Value) -> Result<String, serde_json::Error> {
    Ok(hex::encode(Sha1::digest(serde_json::to_vec(record)?)))
}

fn seal(record: serde_json::Value) -> Result<Vec<u8>, serde_json::Error> {
    let sha1 = checksum(&record)?;
    serde_json::to_vec(&Sealed { record, sha1 })
}

fn encode(rec: &ResumeRecord) -> Result<Vec<u8>, serde_json::Error> {
    let stored = Stored {
        version: rec.version,
        info_hash: rec.info_hash.to_hex(),
        num_pieces: rec.num_pieces,
        piece_length: rec.piece_length,
        root: rec.root.clone(),
        have: hex::encode(rec.have.as_bytes()),
        files: rec.files.clone(),
        completed: rec.completed,
        saved_at: rec.saved_at,
    };
    seal(serde_json::to_value(stored)?)
}

fn decode(data: &[u8]) -> Result<ResumeRecord, ResumeError> {
    let sealed: Sealed = serde_json::from_slice(data).map_err(ResumeError::Malformed)?;
    let computed = checksum(&sealed.record).map_err(ResumeError::Malformed)?;
    if computed != sealed.sha1 {
        return Err(ResumeError::BadChecksum {
            stored: sealed.sha1,
            computed,
        });
    }
    // Before the full parse, so a newer format is named as such.
    let found = sealed.record.get("version").and_then(|v| v.as_u64());
    if let Some(found) = found.filter(|&v| v != u64::from(VERSION)) {
        return Err(ResumeError::UnsupportedVersion { found });
    }
    let s: Stored = serde_json::from_value(sealed.record).map_err(ResumeError::Malformed)?;
    let mut hash = [0u8; 20];
    hex::decode_to_slice(&s.info_hash, &mut hash).map_err(|source| ResumeError::BadHex {
        field: "info_hash",
        source,
    })?;
    let bits = hex::decode(&s.have).map_err(|source| ResumeError::BadHex {
        field: "have",
        source,
    })?;
    let expected = (s.num_pieces as usize).div_ceil(8);
    if bits.len() != expected {
        return Err(ResumeError::BitfieldLength {
            num_pieces: s.num_pieces,
            expected,
            got: bits.len(),
        });
    }
    let have = Bitfield::from_bytes(&bits, s.num_pieces).ok_or(ResumeError::SpareBits {
        num_pieces: s.num_pieces,
    })?;
    Ok(ResumeRecord {
        version: s.version,
        info_hash: InfoHash(hash),
        num_pieces: s.num_pieces,
        piece_length: s.piece_length,
        root: s.root,
        have,
        files: s.files,
        completed: s.completed,
        saved_at: s.saved_at,
    })
}

/// Writes `rec` to `path` so that a crash leaves either the old record or
/// the new one: `<path>.tmp` is written and synced, renamed over `path`,
/// and the directory synced. The parent directory is created. One writer
/// per path at a time. A root that is not UTF-8 cannot be encoded
/// ([`ResumeError::Encode`]); callers then hash on the next start.
pub fn save(path: &Path, rec: &ResumeRecord) -> Result<(), ResumeError> {
    let data = encode(rec).map_err(ResumeError::Encode)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let write_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ResumeError::Write { path: p, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(path)(e));
    }
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(dir))
}

/// Reads the record at `path`; `None` if there is none.
pub fn load(path: &Path) -> Result<Option<ResumeRecord>, ResumeError> {
    let read_err = |source| ResumeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let len = f.metadata().map_err(read_err)?.len();
    if len > MAX_RECORD_LEN {
        return Err(ResumeError::TooLarge {
            path: path.to_path_buf(),
            len,
        });
    }
    let mut data = Vec::with_capacity(usize::try_from(len).expect("at most MAX_RECORD_LEN"));
    // `take`: the file may grow between the stat and the read.
    f.take(MAX_RECORD_LEN + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > MAX_RECORD_LEN {
        return Err(ResumeError::TooLarge {
            path: path.to_path_buf(),
            len: data.len() as u64,
        });
    }
    decode(&data).map(Some)
}

/// Indexes (into `torrent.files`) of the files that hold payload on disk.
fn regular_files(torrent: &Torrent) -> impl Iterator<Item = usize> + '_ {
    torrent
        .files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.kind == FileKind::Regular)
        .map(|(i, _)| i)
}

/// Stamps every regular non-pad file of `torrent` under `root`. Symlinks
/// are not followed: anything but a regular file counts as absent.
pub fn stamp_files(root: &Path, torrent: &Torrent) -> Vec<FileStamp> {
    regular_files(torrent)
        .map(|i| {
            let path = torrent.files[i].path.clone();
            match std::fs::symlink_metadata(root.join(&path)) {
                Ok(m) if m.file_type().is_file() => FileStamp {
                    path,
                    size: m.len(),
                    mtime_secs: m.mtime(),
                    // The kernel keeps it in [0, 10^9).
                    mtime_nanos: u32::try_from(m.mtime_nsec()).unwrap_or(0),
                    present: true,
                },
                _ => FileStamp {
                    path,
                    size: 0,
                    mtime_secs: 0,
                    mtime_nanos: 0,
                    present: false,
                },
            }
        })
        .collect()
}

/// What a record lets a restart skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// Pieces counted as verified without hashing.
    pub have: Bitfield,
    /// Pieces to hash: claimed ones in files that changed or are gone, and
    /// every piece of a changed file that exists (it may hold new data).
    pub recheck: Bitfield,
    /// Indexes into `torrent.files` whose stamp differs from the record.
    pub changed_files: Vec<usize>,
}

/// Checks `rec` against `torrent` in `root` and the files' stamps now
/// (from [`stamp_files`]). A claimed piece is trusted only if every file
/// it overlaps (pad files aside) is present, stamped as recorded, and long
/// enough to hold it. Unclaimed pieces of unchanged files stay missing.
pub fn trusted(
    rec: &ResumeRecord,
    torrent: &Torrent,
    root: &Path,
    now_stamps: &[FileStamp],
) -> Result<Trust, Mismatch> {
    if rec.info_hash != torrent.info_hash {
        return Err(Mismatch::OtherTorrent {
            record: rec.info_hash,
            torrent: torrent.info_hash,
        });
    }
    let given = absolute(root);
    if rec.root != given {
        return Err(Mismatch::OtherRoot {
            record: rec.root.clone(),
            given,
        });
    }
    let n = torrent.num_pieces();
    if rec.num_pieces != n || rec.have.len() != n {
        return Err(Mismatch::OtherPieceCount {
            record: rec.num_pieces,
            torrent: n,
        });
    }
    if rec.piece_length != torrent.piece_length {
        return Err(Mismatch::OtherPieceLength {
            record: rec.piece_length,
            torrent: torrent.piece_length,
        });
    }
    let regular: Vec<usize> = regular_files(torrent).collect();
    if let Some(index) = first_path_difference(torrent, &regular, &rec.files) {
        return Err(Mismatch::OtherFiles { index });
    }
    if let Some(index) = first_path_difference(torrent, &regular, now_stamps) {
        return Err(Mismatch::OtherStamps { index });
    }

    let geo = torrent.geometry();
    let mut have = rec.have.clone();
    let mut recheck = Bitfield::new(n);
    let mut changed_files = Vec::new();
    for ((&i, then), now) in regular.iter().zip(&rec.files).zip(now_stamps) {
        let f = &torrent.files[i];
        let changed = then != now;
        if changed {
            changed_files.push(i);
        }
        // Bytes we cannot vouch for: the whole file if it changed or is
        // gone, else any tail it lacks.
        let from = if changed || !now.present {
            0
        } else {
            now.size.min(f.length)
        };
        if from >= f.length {
            continue;
        }
        let fresh = changed && now.present;
        for p in geo.pieces_over(f.offset + from..f.offset + f.length) {
            if have.get(p) {
                have.clear(p);
                recheck.set(p);
            } else if fresh {
                recheck.set(p);
            }
        }
    }
    Ok(Trust {
        have,
        recheck,
        changed_files,
    })
}

/// Moves pieces of `have` that lie partly in a sparse hole (or past a
/// file's end) to `recheck`, reading no data. Our files are created sparse
/// and only verified pieces are written, so a claimed piece over a hole was
/// never written. Granularity is the file system's block: a false hole (a
/// file system that stores zero blocks as holes) only costs a hash. Where
/// holes are not reported the file counts as all data; a file that cannot
/// be opened or walked sends its trusted pieces to `recheck`.
pub fn drop_holes(root: &Path, torrent: &Torrent, have: &mut Bitfield, recheck: &mut Bitfield) {
    let geo = torrent.geometry();
    for i in regular_files(torrent) {
        let f = &torrent.files[i];
        if f.length == 0 {
            continue;
        }
        let pieces = geo.pieces_over(f.offset..f.offset + f.length);
        // Walk only up to the end of the last trusted piece in this file.
        let Some(last) = pieces.rev().find(|&p| have.get(p)) else {
            continue;
        };
        let limit = geo.piece_span(last).end.min(f.offset + f.length) - f.offset;
        let mut distrust = |lo: u64, hi: u64| {
            for p in geo.pieces_over(f.offset + lo..f.offset + hi) {
                if have.get(p) {
                    have.clear(p);
                    recheck.set(p);
                }
            }
        };
        let walked = File::open(root.join(&f.path))
            .and_then(|file| for_each_hole(&file, limit, &mut distrust));
        if walked.is_err() {
            distrust(0, limit);
        }
    }
}

/// Whether the file at `path` holds any data (not just holes); a file
/// system that cannot tell counts as data.
pub fn has_data(path: &Path) -> bool {
    match File::open(path).and_then(|f| seek(&f, 0, libc::SEEK_DATA)) {
        Err(e) => e.raw_os_error() != Some(libc::ENXIO) && e.kind() != io::ErrorKind::NotFound,
        Ok(_) => true,
    }
}

/// Calls `hole(lo, hi)` for each hole of `file` below `len`, the part past
/// its end included, walking each data and hole extent once.
fn for_each_hole(file: &File, len: u64, mut hole: impl FnMut(u64, u64)) -> io::Result<()> {
    let mut pos = 0;
    while pos < len {
        let data = match seek(file, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            // No data at or after `pos`: a hole to the end.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                hole(pos, len);
                return Ok(());
            }
            // SEEK_DATA unsupported: all data.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(()),
            Err(e) => return Err(e),
        };
        if data > pos {
            hole(pos, data.min(len));
        }
        if data >= len {
            return Ok(());
        }
        let next = seek(file, data, libc::SEEK_HOLE)?;
        if next <= data {
            return Ok(()); // a file system that cannot say: all data
        }
        pos = next;
    }
    Ok(())
}

fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek on a descriptor `file` keeps open; it touches no memory.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// First position where `stamps` stops naming the torrent's regular files.
fn first_path_difference(
    torrent: &Torrent,
    regular: &[usize],
    stamps: &[FileStamp],
) -> Option<usize> {
    let same = regular
        .iter()
        .zip(stamps)
        .take_while(|(&i, s)| torrent.files[i].path == s.path)
        .count();
    (same != regular.len() || same != stamps.len()).then_some(same)
}

/// `root` made absolute without touching the file system beyond the
/// current directory; a failure keeps it as given (it then only mismatches).
fn absolute(root: &Path) -> PathBuf {
    std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::metainfo::test_torrent;
    use crate::storage::{FileStorage, Storage};
    use crate::types::PieceIndex;

    /// Pieces of 4 bytes over a (6), b (5), a pad (1), c (8):
    /// p0 = a[0..4], p1 = a[4..6] b[0..2], p2 = b[2..5] pad,
    /// p3 = c[0..4], p4 = c[4..8].
    fn spanning() -> Torrent {
        test_torrent(
            4,
            &[
                ("t/a", 6, FileKind::Regular),
                ("t/b", 5, FileKind::Regular),
                ("t/.pad/1", 1, FileKind::Pad),
                ("t/c", 8, FileKind::Regular),
            ],
        )
    }

    /// Writes the torrent's regular files under `root`.
    fn lay_out(root: &Path, t: &Torrent) {
        for f in t.files.iter().filter(|f| f.kind == FileKind::Regular) {
            let p = root.join(&f.path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, vec![7u8; usize::try_from(f.length).unwrap()]).unwrap();
        }
    }

    fn bits(len: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(len);
        for &i in ones {
            b.set(PieceIndex::unchecked(i));
        }
        b
    }

    fn ones(b: &Bitfield) -> Vec<u32> {
        b.iter_ones().map(PieceIndex::get).collect()
    }

    /// A record claiming `claimed` over files stamped now.
    fn record(root: &Path, t: &Torrent, claimed: &[u32]) -> ResumeRecord {
        let have = bits(t.num_pieces(), claimed);
        ResumeRecord::new(t, root, &have, stamp_files(root, t), false)
    }

    fn check(rec: &ResumeRecord, root: &Path, t: &Torrent) -> Trust {
        trusted(rec, t, root, &stamp_files(root, t)).unwrap()
    }

    fn stored_value(rec: &ResumeRecord) -> serde_json::Value {
        let sealed: Sealed = serde_json::from_slice(&encode(rec).unwrap()).unwrap();
        sealed.record
    }

    fn set_mtime(p: &Path, t: SystemTime) {
        let f = OpenOptions::new().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn a_saved_record_loads_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let t = spanning();
        lay_out(dir.path(), &t);
        let rec = record(dir.path(), &t, &[0, 3]);
        let path = dir.path().join("state/deep/x.resume");
        save(&path, &rec).unwrap();
        assert_eq!(load(&path).unwrap(), Some(rec.clone()));
        assert_eq!(rec.files.len(), 3, "pad files are not stamped");
        assert!(rec.root.is_absolute());
    }

    #[test]
    fn no_file_loads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn saving_never_leaves_the_temp_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let t = spanning();
        let path = dir.path().join("x.resume");
        let tmp = dir.path().join("x.resume.tmp");
        // A temp file left by a crash is replaced, never read.
        std::fs::write(&tmp, b"half a rec").unwrap();
        save(&path, &record(dir.path(), &t, &[1])).unwrap();
        assert!(!tmp.exists());
        save(&path, &record(dir.path(), &t, &[2])).unwrap();
        assert!(!tmp.exists());
        assert_eq!(ones(&load(&path).unwrap().unwrap().have), [2]);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn corrupt_json_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.resume");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(load(&path), Err(ResumeError::Malformed(_))));
    }

    #[test]
    fn a_truncated_record_is_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.resume");
        save(&path, &record(dir.path(), &spanning(), &[0])).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        assert!(matches!(load(&path), Err(ResumeError::Malformed(_))));
    }

    #[test]
    fn a_flipped_checksum_or_an_edited_field_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.resume");
        save(&path, &record(dir.path(), &spanning(), &[0])).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();

        let mut sealed: serde_json::Value = serde_json::from_str(&text).unwrap();
        let sum = sealed["sha1"].as_str().unwrap().to_owned();
        let flipped = if sum.starts_with('0') { "1" } else { "0" };
        sealed["sha1"] = format!("{flipped}{}", &sum[1..]).into();
        std::fs::write(&path, serde_json::to_vec(&sealed).unwrap()).unwrap();
        assert!(matches!(load(&path), Err(ResumeError::BadChecksum { .. })));

        let edited = text.replace("\"completed\":false", "\"completed\":true");
        assert_ne!(edited, text);
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(load(&path), Err(ResumeError::BadChecksum { .. })));
    }

    #[test]
    fn bad_hex_is_named_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.resume");
        let rec = record(dir.path(), &spanning(), &[0]);
        for field in ["have", "info_hash"] {
            let mut v = stored_value(&rec);
            v[field] = "zz".into();
            std::fs::write(&path, seal(v).unwrap()).unwrap();
            match load(&path) {
                Err(ResumeError::BadHex { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_bitfield_of_the_wrong_length_or_with_spare_bits_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.resume");
        let rec = record(dir.path(), &spanning(), &[0]);
        let mut v = stored_value(&rec);
        v["have"] = "8000".into();
        std::fs::write(&path, seal(v).unwrap()).unwrap();
        assert!(matches!(
            load(&path),
            Err(ResumeError::BitfieldLength {
                num_pieces: 5,
                expected: 1,
                got: 2
            })
        ));
        let mut v = stored_value(&rec);
        v["have"] = "81".into();
        std::fs::write(&path, seal(v).unwrap()).unwrap();
        assert!(matches!(
            load(&path),
            Err(ResumeError::SpareBits { num_pieces: 5 })
        ));
    }

    #[test]
    fn another_version_is_refused_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.resume");
        let mut v = stored_value(&record(dir.path(), &spanning(), &[0]));
        v["version"] = 2.into();
        v["new_field"] = true.into();
        std::fs::write(&path, seal(v).unwrap()).unwrap();
        assert!(matches!(
            load(&path),
            Err(ResumeError::UnsupportedVersion { found: 2 })
        ));
    }

    #[test]
    fn an_oversized_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.resume");
        File::create(&path)
            .unwrap()
            .set_len(MAX_RECORD_LEN + 1)
            .unwrap();
        assert!(matches!(load(&path), Err(ResumeError::TooLarge { .. })));
    }

    #[test]
    fn an_untouched_layout_trusts_exactly_the_claim() {
        let dir = tempfile::tempdir().unwrap();
        let t = spanning();
        lay_out(dir.path(), &t);
        let rec = record(dir.path(), &t, &[0, 1, 3]);
        let trust = check(&rec, dir.path(), &t);
        assert_eq!(ones(&trust.have), [0, 1, 3]);
        assert_eq!(trust.recheck.count(), 0);
        assert!(trust.changed_files.is_empty());
    }

    #[test]
    fn a_record_for_another_torrent_or_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let t = spanning();
        lay_out(dir.path(), &t);
        let rec = record(dir.path(), &t, &[0]);

        let mut t2 = t.clone();
        t2.info_hash = InfoHash([1; 20]);
        let err = trusted(&rec, &t2, dir.path(), &stamp_files(dir.path(), &t2)).unwrap_err();
        assert!(matches!(err, Mismatch::OtherTorrent { .. }));
        assert!(err.to_string().contains("another torrent"));

        let err = trusted(&rec, &t, other.path(), &stamp_files(other.path(), &t)).unwrap_err();
        assert!(matches!(err, Mismatch::OtherRoot { .. }));
        assert!(err.to_string().contains("another directory"));

        let mut t3 = t.clone();
        t3.files[3].path = "t/z".into();
        let err = trusted(&rec, &t3, dir.path(), &stamp_files(dir.path(), &t3)).unwrap_err();
        assert_eq!(err, Mismatch::OtherFiles { index: 2 });

        let t4 = test_torrent(8, &[("t/a", 20, FileKind::Regular)]);
        let err = trusted(&rec, &t4, dir.path(), &stamp_files(dir.path(), &t4)).unwrap_err();
        assert!(matches!(err, Mismatch::OtherPieceCount { .. }));
    }

    #[test]
    fn touching_a_file_rechecks_its_claimed_and_unclaimed_pieces_only() {
        let dir = tempfile::tempdir().unwrap();
        let t = spanning();
        lay_out(dir.path(), &t);
        let rec = record(dir.path(), &t, &[0, 1, 3]);
        let b = dir.path().join("t/b");
        let mtime = std::fs::metadata(&b).unwrap().modified().unwrap();
        set_mtime(&b, mtime + Duration::from_nanos(1500));
        let trust = check(&rec, dir.path(), &t);
        // b spans p1 (claimed) and p2 (unclaimed, may hold new data);
        // p4 in the untouched c stays missing.
        assert_eq!(ones(&trust.have), [0, 3]);
        assert_eq!(ones(&trust.recheck), [1, 2]);
        assert_eq!(trust.changed_files, [1]);
    }

    #[test]
    fn truncating_a_file_rechecks_its_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let t = spanning();
        lay_out(dir.path(), &t);
        let rec = record(dir.path(), &t, &[0, 1, 3]);
        let c = dir.path().join("t/c");
        let mtime = std::fs::metadata(&c).unwrap().modified().unwrap();
        OpenOptions::new()
            .write(true)
            .open(&c)
            .unwrap()
            .set_len(5)
            .unwrap();
        set_mtime(&c, mtime); // size alone must give it away
        let trust = check(&rec, dir.path(), &t);
        assert_eq!(ones(&trust.have), [0, 1]);
        assert_eq!(ones(&trust.recheck), [3, 4]);
        assert_eq!(trust.changed_files, [3]);
    }

    #[test]
    fn a_missing_file_rechecks_only_its_claimed_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let t = spanning();
        lay_out(dir.path(), &t);
        let rec = record(dir.path(), &t, &[1, 3]);
        std::fs::remove_file(dir.path().join("t/a")).unwrap();
        let trust = check(&rec, dir.path(), &t);
        assert_eq!(ones(&trust.have), [3]);
        assert_eq!(ones(&trust.recheck), [1]);
        assert_eq!(trust.changed_files, [0]);
    }

    #[test]
    fn a_file_shorter_than_the_torrent_says_is_trusted_only_where_it_has_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let t = spanning();
        lay_out(dir.path(), &t);
        // c was already short when the record was made (never resized).
        OpenOptions::new()
            .write(true)
            .open(dir.path().join("t/c"))
            .unwrap()
            .set_len(4)
            .unwrap();
        let rec = record(dir.path(), &t, &[3, 4]);
        let trust = check(&rec, dir.path(), &t);
        assert_eq!(ones(&trust.have), [3]);
        assert_eq!(ones(&trust.recheck), [4]);
        assert!(trust.changed_files.is_empty());
    }

    /// Whether the file system under `dir` reports holes in sparse files.
    fn reports_holes(dir: &Path) -> bool {
        let p = dir.join("probe");
        let f = File::create(&p).unwrap();
        f.set_len(1 << 20).unwrap();
        let r = seek(&f, 0, libc::SEEK_DATA);
        std::fs::remove_file(&p).unwrap();
        matches!(r, Err(e) if e.raw_os_error() == Some(libc::ENXIO))
    }

    #[test]
    fn claimed_pieces_over_holes_are_rechecked_and_written_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        if !reports_holes(dir.path()) {
            eprintln!("skipped: this file system does not report holes");
            return;
        }
        // 64 KiB pieces, so holes are whole blocks on any common fs:
        // p0 = a[0..64K], p1 = a[64K..128K], p2 = a[128K..160K] b[0..32K],
        // p3 = b[32K..96K], p4 = b[96K..100K].
        const K: u64 = 1024;
        let t = test_torrent(
            64 * 1024,
            &[
                ("t/a", 160 * K, FileKind::Regular),
                ("t/b", 100 * K, FileKind::Regular),
            ],
        );
        let s = FileStorage::new(dir.path(), &t, true).unwrap();
        let piece = vec![0x5a; 64 * 1024];
        for p in [0, 3] {
            let p = t.geometry().piece(p).unwrap();
            s.write_at(t.geometry().piece_offset(p), &piece).unwrap();
        }
        s.finish().unwrap();
        drop(s);
        let rec = record(dir.path(), &t, &[0, 1, 2, 3, 4]);
        let Trust {
            mut have,
            mut recheck,
            ..
        } = check(&rec, dir.path(), &t);
        assert_eq!(have.count(), 5, "stamps alone cannot tell");
        drop_holes(dir.path(), &t, &mut have, &mut recheck);
        assert_eq!(ones(&have), [0, 3]);
        assert_eq!(ones(&recheck), [1, 2, 4]);
    }

    #[test]
    fn a_fully_written_file_has_no_holes_and_a_missing_one_is_all_hole() {
        let dir = tempfile::tempdir().unwrap();
        let t = spanning();
        lay_out(dir.path(), &t);
        std::fs::remove_file(dir.path().join("t/c")).unwrap();
        let mut have = Bitfield::full(5);
        let mut recheck = Bitfield::new(5);
        drop_holes(dir.path(), &t, &mut have, &mut recheck);
        assert_eq!(ones(&have), [0, 1, 2]);
        assert_eq!(ones(&recheck), [3, 4]);
    }
}
