//! Torrent byte-stream IO mapped onto files: positional `read_at`/`write_at`
//! on torrent offsets, spanning file boundaries. Pad files are never
//! written and read back as zeros; files outside a selection are never
//! created. Calls block: run them off the reactor.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::metainfo::{FileInfo, FileKind, Torrent};

/// Alignment for O_DIRECT transfers.
pub const DIRECT_ALIGN: usize = 4096;

/// A byte buffer whose start is aligned for O_DIRECT writes. Safe code: a
/// slightly larger `Vec` with the window placed at an aligned address.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        AlignedBuf { raw, start, len }
    }

    /// Reuses the allocation for `len` bytes when it fits; contents are
    /// stale, callers overwrite every byte before reading.
    pub fn reuse(mut self, len: usize) -> AlignedBuf {
        if self.raw.len() - self.start >= len {
            self.len = len;
            self
        } else {
            self.raw = Vec::new();
            AlignedBuf::new(len)
        }
    }

    pub fn capacity(&self) -> usize {
        self.raw.len() - self.start
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// Positional access to a torrent's byte stream.
pub trait Storage: Send + Sync + 'static {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Fills `buf` from `offset`; missing or short files are an error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Makes written data durable (best effort) and finishes the layout.
    fn finish(&self) -> io::Result<()> {
        Ok(())
    }
    /// True when the span cannot hold earlier data (it lies past the end a
    /// file had before we opened it), so a resume check may skip it.
    fn known_missing(&self, _offset: u64, _len: usize) -> bool {
        false
    }
}

struct Slot {
    info: FileInfo,
    abs: PathBuf,
    file: OnceLock<File>,
    /// An O_DIRECT handle for aligned writes; `None` where unsupported.
    direct: OnceLock<Option<File>>,
    /// Length of the file before we touched it (0 if absent).
    initial_len: u64,
    /// Outside the selection: never created, only read if it was there.
    keep_out: bool,
}

/// Files under one output directory.
pub struct FileStorage {
    root: PathBuf,
    slots: Vec<Slot>,
    /// Serialises first opens, so directories are created once.
    open_lock: Mutex<()>,
    writable: bool,
    /// Some file held data before we opened anything.
    existed: bool,
}

impl FileStorage {
    /// Lays out `torrent` under `root`. With `writable`, missing files are
    /// created (empty ones too); otherwise files are opened read-only.
    pub fn new(root: &Path, torrent: &Torrent, writable: bool) -> io::Result<FileStorage> {
        FileStorage::with_files(root, torrent, writable, None)
    }

    /// Like [`FileStorage::new`], creating only the files flagged in
    /// `create` (one flag per torrent file). The others are left alone:
    /// read if they already exist (a resume check, seeding what we have),
    /// never created, written or resized; callers write only pieces that
    /// lie in created files.
    pub fn with_files(
        root: &Path,
        torrent: &Torrent,
        writable: bool,
        create: Option<&[bool]>,
    ) -> io::Result<FileStorage> {
        let mut slots = Vec::with_capacity(torrent.files.len());
        for (i, f) in torrent.files.iter().enumerate() {
            check_relative(&f.path)?;
            slots.push(Slot {
                info: f.clone(),
                abs: root.join(&f.path),
                file: OnceLock::new(),
                direct: OnceLock::new(),
                initial_len: std::fs::metadata(root.join(&f.path)).map_or(0, |m| m.len()),
                keep_out: create.is_some_and(|c| !c.get(i).copied().unwrap_or(false)),
            });
        }
        let mut s = FileStorage {
            root: root.to_path_buf(),
            slots,
            open_lock: Mutex::new(()),
            writable,
            existed: false,
        };
        s.existed = s
            .slots
            .iter()
            .any(|s| s.info.kind == FileKind::Regular && s.initial_len > 0);
        if writable {
            std::fs::create_dir_all(root)?;
            for (i, slot) in s.slots.iter().enumerate() {
                if slot.info.kind == FileKind::Regular && !slot.keep_out {
                    s.file(i)?;
                }
            }
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether any regular file of the torrent already exists with data.
    pub fn has_existing_data(&self) -> bool {
        self.existed
    }

    /// Whether the bytes `range` of the torrent's stream all lay in files
    /// that existed, long enough, when the storage was opened: only then
    /// can a piece there verify.
    pub fn was_on_disk(&self, range: std::ops::Range<u64>) -> bool {
        // Only the files the range overlaps: slots are sorted by offset.
        let first = self
            .slots
            .partition_point(|s| s.info.offset + s.info.length <= range.start);
        self.slots[first..]
            .iter()
            .take_while(|s| s.info.offset < range.end)
            .all(|s| {
                let hi = range.end.min(s.info.offset + s.info.length);
                s.info.kind != FileKind::Regular || s.initial_len >= hi - s.info.offset
            })
    }

    /// Regular files that existed, non-empty, when the storage was opened:
    /// their path and their byte range in the torrent's stream (as far as
    /// the file reached).
    pub fn existing_files(&self) -> impl Iterator<Item = (&Path, std::ops::Range<u64>)> {
        self.slots
            .iter()
            .filter(|s| s.info.kind == FileKind::Regular && s.initial_len > 0 && s.info.length > 0)
            .map(|s| {
                let end = s.info.offset + s.initial_len.min(s.info.length);
                (s.abs.as_path(), s.info.offset..end)
            })
    }

    fn direct(&self, i: usize) -> Option<&File> {
        let slot = &self.slots[i];
        slot.direct
            .get_or_init(|| {
                use std::os::unix::fs::OpenOptionsExt;
                // tmpfs and some others refuse O_DIRECT: buffered IO then.
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(&slot.abs)
                    .ok()
            })
            .as_ref()
    }

    /// Writes one file segment: the page-aligned middle through O_DIRECT
    /// (buffered writes cost several times more CPU here, see BENCHMARKS.md),
    /// the ragged ends through the page cache. A page is only ever written
    /// one way, so the two paths never see each other's stale copies.
    fn write_segment(&self, i: usize, at: u64, data: &[u8]) -> io::Result<()> {
        let a = DIRECT_ALIGN as u64;
        let ptr = data.as_ptr() as u64;
        if self.writable && data.len() >= DIRECT_ALIGN && (ptr % a) == (at % a) {
            let head = usize::try_from((a - at % a) % a).expect("below DIRECT_ALIGN");
            let mid = (data.len() - head) / DIRECT_ALIGN * DIRECT_ALIGN;
            if mid > 0 {
                if let Some(d) = self.direct(i) {
                    match d.write_all_at(&data[head..head + mid], at + head as u64) {
                        Ok(()) => {
                            let f = self.file(i)?;
                            f.write_all_at(&data[..head], at)?;
                            let tail = head + mid;
                            return f.write_all_at(&data[tail..], at + tail as u64);
                        }
                        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        self.file(i)?.write_all_at(data, at)
    }

    fn file(&self, i: usize) -> io::Result<&File> {
        let slot = &self.slots[i];
        if let Some(f) = slot.file.get() {
            return Ok(f);
        }
        let _guard = self.open_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = slot.file.get() {
            return Ok(f);
        }
        let f = if self.writable && !slot.keep_out {
            if let Some(parent) = slot.abs.parent() {
                create_dirs_inside(&self.root, parent)?;
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&slot.abs)?;
            if f.metadata()?.len() != slot.info.length {
                // Sparse: no space is taken until written; keeps the file's
                // final size exact, and O_DIRECT writes never extend it.
                f.set_len(slot.info.length)?;
            }
            f
        } else {
            File::open(&slot.abs)?
        };
        Ok(slot.file.get_or_init(|| f))
    }

    /// Calls `op(file index, offset in file, range in buf)` for each file
    /// the span `[offset, offset+len)` touches.
    fn for_span(
        &self,
        offset: u64,
        len: usize,
        mut op: impl FnMut(usize, u64, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = offset + len as u64;
        // Files are sorted by offset; find the first that ends after `offset`.
        let start = self
            .slots
            .partition_point(|s| s.info.offset + s.info.length <= offset);
        for (i, slot) in self.slots.iter().enumerate().skip(start) {
            let (fs, fl) = (slot.info.offset, slot.info.length);
            if fs >= end {
                break;
            }
            if fl == 0 {
                continue;
            }
            let lo = offset.max(fs);
            let hi = end.min(fs + fl);
            let in_buf = |x: u64| usize::try_from(x - offset).expect("at most len");
            op(i, lo - fs, in_buf(lo)..in_buf(hi))?;
        }
        Ok(())
    }
}

impl Storage for FileStorage {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.for_span(offset, data.len(), |i, at, range| {
            if self.slots[i].info.kind != FileKind::Regular {
                return Ok(());
            }
            self.write_segment(i, at, &data[range])
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len();
        self.for_span(offset, len, |i, at, range| {
            if self.slots[i].info.kind != FileKind::Regular {
                buf[range].fill(0);
                return Ok(());
            }
            self.file(i)?.read_exact_at(&mut buf[range], at)
        })
    }

    fn known_missing(&self, offset: u64, len: usize) -> bool {
        let mut missing = false;
        let _ = self.for_span(offset, len, |i, at, range| {
            let slot = &self.slots[i];
            if slot.info.kind == FileKind::Regular && at + range.len() as u64 > slot.initial_len {
                missing = true;
            }
            Ok(())
        });
        missing
    }

    fn finish(&self) -> io::Result<()> {
        for (i, slot) in self.slots.iter().enumerate() {
            match &slot.info.kind {
                FileKind::Regular => {
                    if let Some(Some(d)) = slot.direct.get() {
                        d.sync_data()?;
                    }
                    if slot.keep_out {
                        continue;
                    }
                    if let Some(f) = slot.file.get() {
                        f.sync_data()?;
                    } else if self.writable {
                        self.file(i)?;
                    }
                }
                FileKind::Symlink { target } if self.writable && !slot.keep_out => {
                    make_symlink(&self.root, &slot.info.path, target)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn check_relative(p: &Path) -> io::Result<()> {
    if p.components().all(|c| matches!(c, Component::Normal(_))) && p.components().next().is_some()
    {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing unsafe path {}", p.display()),
        ))
    }
}

/// Creates `dir` (below `root`) refusing to follow a symlink that points
/// outside `root`.
fn create_dirs_inside(root: &Path, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let root = root.canonicalize()?;
    let real = dir.canonicalize()?;
    if !real.starts_with(&root) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} leads outside {}", dir.display(), root.display()),
        ));
    }
    Ok(())
}

/// Creates a relative symlink `link` → `target` (both torrent paths). An
/// existing file at `link` is left alone.
fn make_symlink(root: &Path, link: &Path, target: &Path) -> io::Result<()> {
    check_relative(link)?;
    check_relative(target)?;
    let abs = root.join(link);
    if abs.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = abs.parent() {
        create_dirs_inside(root, parent)?;
    }
    let depth = link.components().count() - 1;
    let mut rel = PathBuf::new();
    for _ in 0..depth {
        rel.push("..");
    }
    rel.push(target);
    std::os::unix::fs::symlink(rel, abs)
}

/// A torrent held in memory, for tests.
pub struct MemStorage {
    data: Mutex<Vec<u8>>,
}

impl MemStorage {
    pub fn new(len: usize) -> MemStorage {
        MemStorage {
            data: Mutex::new(vec![0; len]),
        }
    }

    pub fn from_vec(data: Vec<u8>) -> MemStorage {
        MemStorage {
            data: Mutex::new(data),
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.data.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Storage for MemStorage {
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let span = mem_span(offset, data.len(), d.len())?;
        d[span].copy_from_slice(data);
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let span = mem_span(offset, buf.len(), d.len())?;
        buf.copy_from_slice(&d[span]);
        Ok(())
    }
}

/// `len` bytes at `offset` of a buffer of `size` bytes, if they fit.
fn mem_span(offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| Some(start..start.checked_add(len)?))
        .filter(|r| r.end <= size)
        .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn torrent(files: &[(&str, u64, FileKind)]) -> Torrent {
        crate::metainfo::test_torrent(4, files)
    }

    #[test]
    fn writes_span_files_and_skip_pads() {
        let dir = tempfile::tempdir().unwrap();
        let t = torrent(&[
            ("t/a", 3, FileKind::Regular),
            ("t/empty", 0, FileKind::Regular),
            ("t/.pad/2", 2, FileKind::Pad),
            ("t/d/b", 5, FileKind::Regular),
        ]);
        let s = FileStorage::new(dir.path(), &t, true).unwrap();
        s.write_at(0, b"abcXXdefgh").unwrap();
        assert_eq!(std::fs::read(dir.path().join("t/a")).unwrap(), b"abc");
        assert_eq!(std::fs::read(dir.path().join("t/d/b")).unwrap(), b"defgh");
        assert_eq!(std::fs::read(dir.path().join("t/empty")).unwrap(), b"");
        assert!(!dir.path().join("t/.pad").exists());
        let mut buf = [1u8; 10];
        s.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"abc\0\0defgh");
    }

    #[test]
    fn aligned_writes_round_trip_at_odd_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let t = torrent(&[
            ("t/a", 5000, FileKind::Regular),
            ("t/b", 40_000, FileKind::Regular),
        ]);
        let s = FileStorage::new(dir.path(), &t, true).unwrap();
        let mut buf = AlignedBuf::new(45_000);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = u8::try_from(i % 251).unwrap();
        }
        s.write_at(0, &buf[..20_000]).unwrap();
        s.write_at(20_000, &buf[20_000..]).unwrap();
        let mut back = vec![0u8; 45_000];
        s.read_at(0, &mut back).unwrap();
        assert!(back[..] == buf[..]);
        assert_eq!(
            std::fs::metadata(dir.path().join("t/b")).unwrap().len(),
            40_000
        );
    }

    #[test]
    fn files_outside_the_selection_are_neither_created_nor_changed() {
        let dir = tempfile::tempdir().unwrap();
        let t = torrent(&[
            ("t/a", 6, FileKind::Regular),
            ("t/b", 2, FileKind::Regular),
            ("t/c", 4, FileKind::Regular),
            ("t/e", 0, FileKind::Regular),
        ]);
        // Piece 1 (bytes 4..8) is wanted: it spans a and b; c and e are out.
        let create = [true, true, false, false];
        let s = FileStorage::with_files(dir.path(), &t, true, Some(&create)).unwrap();
        assert!(!s.has_existing_data());
        s.write_at(4, b"efgh").unwrap();
        s.finish().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("t/a")).unwrap(),
            b"\0\0\0\0ef"
        );
        assert_eq!(std::fs::read(dir.path().join("t/b")).unwrap(), b"gh");
        assert!(!dir.path().join("t/c").exists());
        assert!(!dir.path().join("t/e").exists());
        // A resume check skips what is absent instead of creating it.
        assert!(s.known_missing(8, 4));
        let mut buf = [0u8; 4];
        assert!(s.read_at(8, &mut buf).is_err());
        assert!(!dir.path().join("t/c").exists());

        // An unselected file that is there is read, never resized.
        std::fs::write(dir.path().join("t/c"), b"ijk").unwrap();
        let s = FileStorage::with_files(dir.path(), &t, true, Some(&create)).unwrap();
        assert!(s.has_existing_data());
        let mut buf = [0u8; 3];
        s.read_at(8, &mut buf).unwrap();
        assert_eq!(&buf, b"ijk");
        assert!(s.known_missing(8, 4), "its fourth byte was never there");
        s.finish().unwrap();
        assert_eq!(std::fs::read(dir.path().join("t/c")).unwrap(), b"ijk");
    }

    #[test]
    fn refuses_paths_that_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let t = torrent(&[("../evil", 3, FileKind::Regular)]);
        assert!(FileStorage::new(dir.path(), &t, true).is_err());
        let t = torrent(&[("/abs", 3, FileKind::Regular)]);
        assert!(FileStorage::new(dir.path(), &t, true).is_err());
    }

    #[test]
    fn refuses_to_follow_a_symlinked_directory_out_of_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("t/d")).unwrap();
        let t = torrent(&[("t/d/x", 3, FileKind::Regular)]);
        assert!(FileStorage::new(dir.path(), &t, true).is_err());
        assert!(!outside.path().join("x").exists());
    }
}
