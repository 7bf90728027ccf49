//! The file list: `length` or `files` laid out in the byte stream, BEP-47
//! pad files and symlinks read, every path sanitised and joined under the
//! torrent's name, colliding paths renamed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{
    Error, FileInfo, FileKind, RawInfo, MAX_DUPLICATE_RENAMES, MAX_ELEMENT_LEN, MAX_PATH_DEPTH,
};
use crate::bencode::Value;

/// The files, laid out in order, and whether the torrent is multi-file.
pub(super) fn file_list(info: &RawInfo<'_>, name: &str) -> Result<(Vec<FileInfo>, bool), Error> {
    match (info.files, info.length) {
        (Some(list), _) => Ok((multi_files(list, name)?, true)),
        (None, Some(len)) => {
            let length = match len.as_int() {
                Some(n) if n >= 0 => n as u64,
                _ => {
                    return Err(Error::InvalidLength(
                        "'length' is not a non-negative integer".into(),
                    ))
                }
            };
            let file = FileInfo {
                path: PathBuf::from(name),
                length,
                offset: 0,
                kind: FileKind::Regular,
            };
            Ok((vec![file], false))
        }
        (None, None) => Err(Error::InvalidLength(
            "neither 'length' nor 'files' is present".into(),
        )),
    }
}

pub(super) fn attr_has(entry: &Value<'_>, flag: u8) -> bool {
    entry
        .get("attr")
        .and_then(Value::as_bytes)
        .is_some_and(|a| a.contains(&flag))
}

fn path_elements<'a>(v: Option<&'a Value<'a>>, what: &str) -> Result<Vec<&'a [u8]>, Error> {
    let list = v
        .and_then(Value::as_list)
        .ok_or_else(|| Error::InvalidPath(format!("{what} is missing or not a list")))?;
    if list.len() > MAX_PATH_DEPTH {
        return Err(Error::InvalidPath(format!("{what} is nested too deeply")));
    }
    list.iter()
        .map(|e| {
            e.as_bytes()
                .ok_or_else(|| Error::InvalidPath(format!("{what} holds a non-string element")))
        })
        .collect()
}

fn multi_files(list: &Value<'_>, name: &str) -> Result<Vec<FileInfo>, Error> {
    let entries = list
        .as_list()
        .ok_or_else(|| Error::InvalidLength("'files' is not a list".into()))?;
    if entries.is_empty() {
        return Err(Error::NoFiles);
    }
    let mut out = Vec::with_capacity(entries.len());
    let mut names = PathSet::default();
    let mut links = Vec::new();
    let mut offset: u64 = 0;
    for entry in entries {
        let e = file_entry(entry, name)?;
        if let Some(target) = e.link {
            links.push((out.len(), target));
        }
        let path = if e.is_pad {
            e.path
        } else {
            names.claim(e.path)?
        };
        out.push(FileInfo {
            path,
            length: e.length,
            offset,
            kind: e.kind,
        });
        offset = offset
            .checked_add(e.length)
            .filter(|&o| o <= i64::MAX as u64)
            .ok_or_else(|| Error::InvalidLength("file lengths overflow".into()))?;
    }
    resolve_links(&mut out, links, &names);
    Ok(out)
}

/// One `files` entry, read and checked; its path not yet claimed.
struct Entry<'a> {
    kind: FileKind,
    length: u64,
    path: PathBuf,
    is_pad: bool,
    /// A symlink's raw target elements, for [`resolve_links`].
    link: Option<Vec<&'a [u8]>>,
}

fn file_entry<'a>(entry: &'a Value<'a>, name: &str) -> Result<Entry<'a>, Error> {
    if entry.as_dict().is_none() {
        return Err(Error::InvalidPath(
            "a 'files' entry is not a dictionary".into(),
        ));
    }
    let pad = attr_has(entry, b'p');
    let symlink = attr_has(entry, b'l');
    let length = match entry.get("length") {
        Some(Value::Int(n)) if *n >= 0 => *n as u64,
        None if symlink => 0,
        Some(Value::Int(n)) => return Err(Error::InvalidLength(format!("a file has length {n}"))),
        _ => {
            return Err(Error::InvalidLength(
                "a file's 'length' is missing or not an integer".into(),
            ))
        }
    };
    let elements = match entry.get("path.utf-8").or_else(|| entry.get("path")) {
        None if pad => Vec::new(),
        None => return Err(Error::MissingName),
        p => path_elements(p, "'path'")?,
    };
    let is_pad = pad
        || elements
            .last()
            .is_some_and(|e| e.starts_with(b"_____padding_file_"));
    let mut link = None;
    let kind = if is_pad {
        FileKind::Pad
    } else if symlink {
        let target = path_elements(entry.get("symlink path"), "'symlink path'")?;
        let from_root = join_sanitized(name, &target);
        link = Some(target);
        FileKind::Symlink { target: from_root }
    } else {
        FileKind::Regular
    };
    let length = if matches!(kind, FileKind::Symlink { .. }) {
        0
    } else {
        length
    };
    let path = if is_pad && elements.is_empty() {
        PathBuf::from(".pad").join(length.to_string())
    } else {
        join_sanitized(name, &elements)
    };
    Ok(Entry {
        kind,
        length,
        path,
        is_pad,
        link,
    })
}

/// BEP-47 symlink targets are relative to the torrent's root, but older
/// torrents (macOS frameworks: `Versions/Current` -> `A`) wrote them
/// relative to the link's directory. Like libtorrent, keep the root
/// reading when it names something in the torrent, else take the
/// link-relative one when that does. Either stays inside the torrent.
fn resolve_links(out: &mut [FileInfo], links: Vec<(usize, Vec<&[u8]>)>, names: &PathSet) {
    for (i, target) in links {
        let FileKind::Symlink { target: from_root } = &out[i].kind else {
            continue;
        };
        if names.taken(from_root) {
            continue;
        }
        let Some(dir) = out[i].path.parent() else {
            continue;
        };
        let mut from_link = dir.to_path_buf();
        for e in &target {
            from_link.push(sanitize_element(e));
        }
        if from_link != out[i].path && names.taken(&from_link) {
            out[i].kind = FileKind::Symlink { target: from_link };
        }
    }
}

fn join_sanitized(name: &str, elements: &[&[u8]]) -> PathBuf {
    let mut p = PathBuf::from(name);
    for e in elements {
        p.push(sanitize_element(e));
    }
    p
}

/// Makes one path element safe: separators and NUL removed, `.`/`..`/empty
/// replaced by `_`, overlong elements cut (keeping a short extension).
pub fn sanitize_element(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let mut out: String = s
        .chars()
        .filter(|&c| c != '/' && c != '\\' && c != '\0')
        .collect();
    if out.is_empty() || out == "." || out == ".." {
        return "_".to_string();
    }
    if out.len() > MAX_ELEMENT_LEN {
        let ext = match out.rfind('.') {
            Some(i) if out.len() - i <= 12 && i > 0 => out[i..].to_string(),
            _ => String::new(),
        };
        let mut cut = MAX_ELEMENT_LEN - ext.len();
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&ext);
    }
    out
}

/// Tracks claimed file paths and their parent directories, renaming
/// collisions `foo.txt` → `foo.1.txt`.
#[derive(Default)]
struct PathSet {
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
    renames: usize,
}

impl PathSet {
    fn taken(&self, p: &Path) -> bool {
        self.files.contains(p)
            || self.dirs.contains(p)
            || p.ancestors().skip(1).any(|a| self.files.contains(a))
    }

    fn claim(&mut self, path: PathBuf) -> Result<PathBuf, Error> {
        let mut candidate = path.clone();
        let mut n = 0;
        while self.taken(&candidate) {
            self.renames += 1;
            n += 1;
            if self.renames > MAX_DUPLICATE_RENAMES {
                return Err(Error::TooManyDuplicates);
            }
            if path.ancestors().skip(1).any(|a| self.files.contains(a)) {
                return Err(Error::InvalidPath(format!(
                    "{} lies under a path that is already a file",
                    path.display()
                )));
            }
            candidate = numbered(&path, n);
        }
        for a in candidate.ancestors().skip(1) {
            if a.as_os_str().is_empty() || !self.dirs.insert(a.to_path_buf()) {
                break;
            }
        }
        self.files.insert(candidate.clone());
        Ok(candidate)
    }
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let renamed = match file.rfind('.') {
        Some(i) if i > 0 => format!("{}.{n}{}", &file[..i], &file[i..]),
        _ => format!("{file}.{n}"),
    };
    path.with_file_name(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode;

    #[test]
    fn sanitises_hostile_elements() {
        assert_eq!(sanitize_element(b".."), "_");
        assert_eq!(sanitize_element(b""), "_");
        assert_eq!(sanitize_element(b"/"), "_");
        assert_eq!(sanitize_element(b"a/../b"), "a..b");
        assert_eq!(sanitize_element(b"a\0b"), "ab");
        let long = vec![b'x'; 300];
        let mut long_ext = long.clone();
        long_ext.extend_from_slice(b".mkv");
        assert_eq!(sanitize_element(&long).len(), MAX_ELEMENT_LEN);
        assert!(sanitize_element(&long_ext).ends_with(".mkv"));
    }

    #[test]
    fn renames_colliding_paths() {
        let mut s = PathSet::default();
        assert_eq!(
            s.claim("t/foo/bar.txt".into()).unwrap(),
            PathBuf::from("t/foo/bar.txt")
        );
        assert_eq!(
            s.claim("t/foo/bar.txt".into()).unwrap(),
            PathBuf::from("t/foo/bar.1.txt")
        );
        assert_eq!(s.claim("t/foo".into()).unwrap(), PathBuf::from("t/foo.1"));
    }

    #[test]
    fn reads_a_symlink_target_relative_to_the_link_when_only_that_exists() {
        let files = b"ld6:lengthi3e4:pathl1:v1:A1:feed4:attr1:l6:lengthi0e4:pathl1:v1:Ce12:symlink pathl1:Aeed4:attr1:l6:lengthi0e4:pathl1:Le12:symlink pathl1:v1:Aeee";
        let list = bencode::decode(files).unwrap();
        let out = multi_files(&list, "t").unwrap();
        let target = |i: usize| match &out[i].kind {
            FileKind::Symlink { target } => target.clone(),
            k => panic!("file {i} is {k:?}"),
        };
        // `t/v/C -> A`: no `t/A` in the torrent, but `t/v/A` is a directory.
        assert_eq!(target(1), PathBuf::from("t/v/A"));
        // Root-relative targets that exist are kept.
        assert_eq!(target(2), PathBuf::from("t/v/A"));
    }
}
