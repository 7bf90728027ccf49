//! `.torrent` parsing: never panics, and every accepted torrent is safe to
//! lay out on disk (see the invariants in `xorrent::metainfo`'s module docs).
#![no_main]

use std::collections::HashSet;
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use xorrent::metainfo::{FileKind, Torrent};

/// Relative, non-empty, only `Normal` components, none of them holding a
/// separator or NUL or being `.`/`..`, none longer than NAME_MAX.
fn check_path(p: &Path, what: &str) {
    assert!(p.is_relative(), "{what} {p:?} is not relative");
    assert!(p.components().next().is_some(), "{what} is empty");
    for c in p.components() {
        let Component::Normal(s) = c else {
            panic!("{what} {p:?} has a non-normal component {c:?}");
        };
        let b = s.as_encoded_bytes();
        assert!(!b.is_empty(), "{what} {p:?} has an empty component");
        assert!(
            !b.iter().any(|&c| c == b'/' || c == b'\\' || c == 0),
            "{what} {p:?} has a separator or NUL in {s:?}"
        );
        assert!(b != b"." && b != b"..", "{what} {p:?} has a dot component");
        assert!(b.len() <= 255, "{what} {p:?} has a {}-byte component", b.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(t) = Torrent::from_bytes(data) else {
        return;
    };

    assert!(!t.name.is_empty());
    assert!(t.piece_length > 0);
    assert!(!t.files.is_empty());
    assert!(t.total_length > 0);

    let pieces = t.total_length.div_ceil(u64::from(t.piece_length));
    assert_eq!(t.piece_hashes.len() as u64, pieces, "piece hash count");
    // The engine builds this from every accepted torrent; it asserts.
    let g = t.geometry();
    assert_eq!(u64::from(g.num_pieces), pieces);

    // Files are in stream order and tile [0, total_length) exactly.
    let mut offset = 0u64;
    for f in &t.files {
        assert_eq!(f.offset, offset, "file {:?} is not contiguous", f.path);
        offset = offset.checked_add(f.length).expect("offsets overflow");
    }
    assert_eq!(offset, t.total_length, "files do not add up to total_length");

    let payload: u64 = t
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Regular)
        .map(|f| f.length)
        .sum();
    assert_eq!(payload, t.payload_length);

    let mut written = HashSet::new();
    for f in &t.files {
        check_path(&f.path, "file path");
        if let FileKind::Symlink { target } = &f.kind {
            check_path(target, "symlink target");
            assert_eq!(f.length, 0, "symlink with payload");
        }
        if !f.is_pad() {
            assert!(written.insert(f.path.clone()), "{:?} is written twice", f.path);
        }
    }
    // No written file is also a directory of another written file.
    for p in &written {
        for a in p.ancestors().skip(1) {
            assert!(!written.contains(a), "{a:?} is both a file and a directory");
        }
    }
    if !t.multi_file {
        assert_eq!(t.files.len(), 1);
    }
});
