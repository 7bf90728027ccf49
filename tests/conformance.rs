//! Conformance tests over the third-party corpus in `fixtures/conformance/`
//! (see `fixtures/README.md` for where each file came from).
//!
//! Every entry of every data set is checked; nothing here touches the
//! network. Where our behaviour deliberately differs from the corpus's
//! expectation, the difference is listed in a table below with its reason,
//! and the test still checks that the difference is exactly the listed one.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use xorrent::bencode::{self, decode, decode_with, Limits, Value};
use xorrent::metainfo::{FileKind, Torrent};
use xorrent::storage::{FileStorage, Storage};

// ---------------------------------------------------------------------------
// Corpus access
// ---------------------------------------------------------------------------

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/conformance")
}

fn read(rel: &str) -> Vec<u8> {
    let p = corpus().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn manifest() -> Vec<Json> {
    let text = read("torrents/manifest.json");
    match serde_json::from_slice(&text).expect("manifest.json is JSON") {
        Json::Array(entries) => entries,
        _ => panic!("manifest.json is not an array"),
    }
}

fn file_of(e: &Json) -> &str {
    e["file"].as_str().expect("every entry names its file")
}

fn torrent_bytes(e: &Json) -> Vec<u8> {
    read(&format!("torrents/{}", file_of(e)))
}

fn flag(e: &Json, key: &str) -> bool {
    e[key].as_bool().unwrap_or(false)
}

fn num(e: &Json, key: &str) -> Option<u64> {
    e[key].as_u64()
}

fn valid(e: &Json) -> bool {
    e["valid"].as_bool().expect("every entry has 'valid'")
}

/// v2-only: `meta version` 2 without v1 `pieces`. We refuse these.
fn v2_only(e: &Json) -> bool {
    flag(e, "v2") && !flag(e, "hybrid")
}

fn has_label(e: &Json, label: &str) -> bool {
    e["security"]
        .as_array()
        .is_some_and(|l| l.iter().any(|x| x == label))
}

/// Labels whose files exercise path sanitising.
const PATH_LABELS: &[&str] = &[
    "path-traversal",
    "absolute-path",
    "separator-in-element",
    "empty-path-element",
    "dot-path-element",
    "duplicate-filenames",
    "symlink",
    "long-name",
    "nul-in-name",
    "invalid-utf8",
    "trailing-space-name",
];

fn path_related(e: &Json) -> bool {
    PATH_LABELS.iter().any(|l| has_label(e, l))
}

/// Parses one fixture, turning a panic into an error message and timing it.
fn load(e: &Json) -> Result<Result<Torrent, xorrent::metainfo::Error>, String> {
    let data = torrent_bytes(e);
    let start = Instant::now();
    let r = std::panic::catch_unwind(|| Torrent::from_bytes(&data))
        .map_err(|_| format!("{}: Torrent::from_bytes panicked", file_of(e)))?;
    // Generous: a debug build parses every fixture in milliseconds. A parse
    // that takes seconds is doing work in proportion to a claimed size.
    if start.elapsed() > Duration::from_secs(10) {
        return Err(format!(
            "{}: parsing took {:?}",
            file_of(e),
            start.elapsed()
        ));
    }
    Ok(r)
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn paths(t: &Torrent) -> Vec<String> {
    t.files.iter().map(|f| path_str(&f.path)).collect()
}

fn symlink_target(t: &Torrent, i: usize) -> Option<String> {
    match &t.files.get(i)?.kind {
        FileKind::Symlink { target } => Some(path_str(target)),
        _ => None,
    }
}

fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{what}: {} problem(s):\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// The .torrent corpus
// ---------------------------------------------------------------------------

#[test]
fn every_fixture_file_matches_the_sha256_and_size_in_the_manifest() {
    let entries = manifest();
    assert_eq!(entries.len(), 123, "the corpus lists 123 torrents");
    let mut failures = Vec::new();
    let mut listed = HashSet::new();
    for e in &entries {
        let name = file_of(e);
        assert!(listed.insert(name.to_string()), "{name} is listed twice");
        let data = torrent_bytes(e);
        let got = hex::encode(Sha256::digest(&data));
        if Some(got.as_str()) != e["sha256"].as_str() {
            failures.push(format!("{name}: sha256 {got}, manifest {}", e["sha256"]));
        }
        if num(e, "size_bytes") != Some(data.len() as u64) {
            failures.push(format!(
                "{name}: {} bytes, manifest {}",
                data.len(),
                e["size_bytes"]
            ));
        }
    }
    for f in std::fs::read_dir(corpus().join("torrents")).unwrap() {
        let f = f.unwrap().file_name().to_string_lossy().into_owned();
        if f.ends_with(".torrent") && !listed.contains(&f) {
            failures.push(format!("{f} is in torrents/ but not in the manifest"));
        }
    }
    for data_set in ["bencode.json", "krpc.json", ".gitattributes"] {
        assert!(corpus().join(data_set).is_file(), "{data_set} is missing");
    }
    assert_no_failures("fixture integrity", &failures);
}

/// The name we expect for `raw` (the manifest's `info.name`): our scheme
/// removes '/', '\' and NUL, and replaces a name that sanitises to nothing
/// (or to `.`/`..`) with the hex info-hash. `None`: too long to keep whole
/// (checked separately).
fn expected_name(raw: &[u8], info_hash_hex: &str) -> Option<String> {
    let cleaned: String = String::from_utf8_lossy(raw)
        .chars()
        .filter(|&c| c != '/' && c != '\\' && c != '\0')
        .collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return Some(info_hash_hex.to_string());
    }
    (cleaned.len() <= xorrent::metainfo::MAX_ELEMENT_LEN).then_some(cleaned)
}

fn manifest_name(e: &Json) -> Option<Vec<u8>> {
    if let Some(n) = e["name"].as_str() {
        return Some(n.as_bytes().to_vec());
    }
    e["name_hex"]
        .as_str()
        .map(|h| hex::decode(h).expect("name_hex is hex"))
}

#[test]
fn every_valid_v1_and_hybrid_torrent_loads_with_the_listed_info_hash() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for e in manifest().iter().filter(|e| valid(e) && !v2_only(e)) {
        let name = file_of(e);
        let t = match load(e) {
            Err(msg) => {
                failures.push(msg);
                continue;
            }
            Ok(Err(err)) => {
                failures.push(format!("{name}: refused ({}): {err}", err.kind()));
                continue;
            }
            Ok(Ok(t)) => t,
        };
        checked += 1;
        let mut check = |what: &str, ok: bool, detail: String| {
            if !ok {
                failures.push(format!("{name}: {what}: {detail}"));
            }
        };
        let hash = t.info_hash.to_hex();
        let want_hash = e["info_hash_v1"].as_str().unwrap_or("");
        check(
            "info_hash_v1",
            hash == want_hash,
            format!("{hash} != {want_hash}"),
        );
        check(
            "piece_length",
            num(e, "piece_length") == Some(u64::from(t.piece_length)),
            format!("{} vs {}", t.piece_length, e["piece_length"]),
        );
        check(
            "num_pieces",
            num(e, "num_pieces") == Some(u64::from(t.num_pieces())),
            format!("{} vs {}", t.num_pieces(), e["num_pieces"]),
        );
        check(
            "files",
            num(e, "files") == Some(t.files.len() as u64),
            format!("{} vs {}", t.files.len(), e["files"]),
        );
        let pads = t.files.iter().filter(|f| f.is_pad()).count() as u64;
        check(
            "pad_files",
            num(e, "pad_files").unwrap_or(0) == pads,
            format!("{pads} vs {}", e["pad_files"]),
        );
        check(
            "payload_length",
            num(e, "payload_length") == Some(t.payload_length),
            format!("{} vs {}", t.payload_length, e["payload_length"]),
        );
        check(
            "v1_total_length",
            num(e, "v1_total_length") == Some(t.total_length),
            format!("{} vs {}", t.total_length, e["v1_total_length"]),
        );
        check(
            "hybrid",
            t.hybrid == flag(e, "hybrid"),
            format!("{} vs {}", t.hybrid, e["hybrid"]),
        );
        check(
            "multi_file",
            t.multi_file == (num(e, "pad_files").is_some()),
            format!(
                "{} (manifest counts pad files only for 'files' lists)",
                t.multi_file
            ),
        );
        if let Some(p) = e["private"].as_u64() {
            check(
                "private",
                t.private == (p == 1),
                format!("{} vs {p}", t.private),
            );
        }
        check(
            "piece hashes",
            t.piece_hashes.len() as u64 == t.total_length.div_ceil(u64::from(t.piece_length)),
            "count does not cover the byte stream".into(),
        );
        // The info-hash is over the exact bytes found, never a re-encoding.
        check(
            "info_bytes",
            hex::encode(sha1_of(&t.info_bytes)) == hash,
            "info_bytes do not hash to info_hash".into(),
        );
        if flag(e, "strict_bencode_ok") {
            // Canonical files: re-encoding the info dict gives the same bytes.
            let mut again = Vec::new();
            match decode(&t.info_bytes) {
                Ok(v) => v.encode(&mut again),
                Err(err) => check("info dict", false, format!("strict decode failed: {err}")),
            }
            check(
                "info dict round trip",
                again == t.info_bytes,
                "re-encoding changed the bytes".into(),
            );
        }
        // Files tile the v1 byte stream in order.
        let mut offset = 0;
        for f in &t.files {
            check(
                "file offsets",
                f.offset == offset,
                format!("{} at {} (expected {offset})", f.path.display(), f.offset),
            );
            offset += f.length;
        }
        match manifest_name(e) {
            None => check("name", false, "manifest has no name".into()),
            Some(raw) => match expected_name(&raw, &hash) {
                Some(want) => check("name", t.name == want, format!("{:?} vs {want:?}", t.name)),
                None => {
                    // Overlong: cut to MAX_ELEMENT_LEN, keeping a short extension.
                    let raw = String::from_utf8_lossy(&raw).into_owned();
                    let ext = &raw[raw.rfind('.').unwrap_or(raw.len())..];
                    let stem = &t.name[..t.name.len() - ext.len()];
                    check(
                        "long name",
                        t.name.len() <= xorrent::metainfo::MAX_ELEMENT_LEN
                            && t.name.ends_with(ext)
                            && raw.starts_with(stem),
                        format!("{:?} ({} bytes)", t.name, t.name.len()),
                    );
                }
            },
        }
        // Single-file torrents are stored under their (sanitised) name.
        if !t.multi_file {
            check(
                "single file path",
                t.files[0].path == Path::new(&t.name),
                format!("{} vs {}", t.files[0].path.display(), t.name),
            );
        }
    }
    assert_no_failures("valid v1/hybrid torrents", &failures);
    assert_eq!(checked, 71, "71 valid v1 or hybrid torrents in the corpus");
}

fn sha1_of(data: &[u8]) -> [u8; 20] {
    // `sha1` is a normal dependency, so integration tests can use it too.
    use sha1::Digest as _;
    sha1::Sha1::digest(data).into()
}

#[test]
fn every_valid_v2_only_torrent_is_refused_as_unsupported_v2() {
    let mut failures = Vec::new();
    let mut count = 0;
    for e in manifest().iter().filter(|e| valid(e) && v2_only(e)) {
        count += 1;
        match load(e) {
            Err(msg) => failures.push(msg),
            Ok(Ok(_)) => failures.push(format!("{}: loaded a v2-only torrent", file_of(e))),
            Ok(Err(err)) if err.kind() == "unsupported_v2" => {
                let msg = err.to_string();
                if !msg.contains("not supported") {
                    failures.push(format!("{}: unclear message {msg:?}", file_of(e)));
                }
            }
            Ok(Err(err)) => failures.push(format!(
                "{}: refused as {} ({err}), expected unsupported_v2",
                file_of(e),
                err.kind()
            )),
        }
    }
    assert_no_failures("valid v2-only torrents", &failures);
    assert_eq!(count, 8, "8 valid v2-only torrents in the corpus");
}

/// Invalid entries whose refusal we classify differently from the corpus's
/// `error_kind`, with the kind we give and why. Everything else must match
/// exactly (for v2 entries see `expected_v2_kind`).
const KNOWN_KIND_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "anacrolix-minimal-trailing-newline.torrent",
        "missing_info",
        "we read .torrent files with Limits::TORRENT, which accepts bytes after the \
         top-level dict (valid libtorrent fixtures rely on it); the file then fails \
         for lacking 'info', as it does in libtorrent 2.1.1",
    ),
    (
        "bad_name.torrent",
        "invalid_bencoding",
        "this fuzzed file repeats a dictionary key; our decoder refuses duplicate \
         keys in every mode (two parsers could disagree on the value), while \
         libtorrent decodes it and only then finds the NUL-only name",
    ),
];

/// What we answer for an invalid v2 or hybrid entry. v2-only files are
/// refused as unsupported unless the bencoding itself is already bad; the
/// hybrid checks we do implement must name the corpus's kind.
fn expected_v2_kind(e: &Json) -> &'static str {
    let corpus_kind = e["error_kind"].as_str().unwrap_or("");
    match (flag(e, "hybrid"), corpus_kind) {
        // Refused by the decoder before the metainfo is looked at.
        (_, "bencode_depth_exceeded") => "bencode_depth_exceeded",
        // Leading zeros are refused in every mode (see bencode.rs).
        (_, "invalid_bencoding") if has_label(e, "leading-zero-int") => "invalid_bencoding",
        (false, _) => "unsupported_v2",
        (true, "inconsistent_v1_v2_files") => "inconsistent_v1_v2_files",
        // A malformed hybrid file tree: the v1 part is fine, the v2 part
        // cannot be matched against it.
        (true, "file_parse_failed") => "inconsistent_v1_v2_files",
        (true, other) => panic!("no expectation for hybrid error kind {other}"),
    }
}

#[test]
fn every_invalid_torrent_is_refused_with_the_listed_error_kind() {
    let mut failures = Vec::new();
    let mut differences_seen = HashSet::new();
    let mut count = 0;
    for e in manifest().iter().filter(|e| !valid(e)) {
        count += 1;
        let name = file_of(e);
        let corpus_kind = e["error_kind"]
            .as_str()
            .expect("invalid entries have error_kind");
        let err = match load(e) {
            Err(msg) => {
                failures.push(msg);
                continue;
            }
            Ok(Ok(t)) => {
                failures.push(format!(
                    "{name}: loaded (name {:?}, {} files) but must be refused ({corpus_kind})",
                    t.name,
                    t.files.len()
                ));
                continue;
            }
            Ok(Err(err)) => err,
        };
        let want = if flag(e, "v2") {
            expected_v2_kind(e)
        } else if let Some((_, ours, _)) = KNOWN_KIND_DIFFERENCES.iter().find(|d| d.0 == name) {
            differences_seen.insert(name.to_string());
            ours
        } else {
            corpus_kind
        };
        if err.kind() != want {
            failures.push(format!(
                "{name}: kind {} ({err}), expected {want} (corpus: {corpus_kind})",
                err.kind()
            ));
        }
    }
    for (name, _, _) in KNOWN_KIND_DIFFERENCES {
        assert!(
            differences_seen.contains(*name),
            "{name} is no longer a known difference"
        );
    }
    assert_no_failures("invalid torrents", &failures);
    assert_eq!(count, 44, "44 invalid torrents in the corpus");
}

/// The safety invariants for one output path (a file or a symlink target).
fn check_clean_relative(p: &Path, what: &str) -> Result<(), String> {
    if p.is_absolute() || p.has_root() {
        return Err(format!("{what} {} is absolute", p.display()));
    }
    let bytes = p.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(format!("{what} is empty"));
    }
    // Split on '/' ourselves: `components()` would hide "a//b" and "a/./b".
    for element in bytes.split(|&b| b == b'/') {
        if element.is_empty() || element == b"." || element == b".." {
            return Err(format!(
                "{what} {} has an element {:?}",
                p.display(),
                String::from_utf8_lossy(element)
            ));
        }
        if element.contains(&b'\\') || element.contains(&0) {
            return Err(format!(
                "{what} {} has a '\\' or NUL in an element",
                p.display()
            ));
        }
    }
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("{what} {} has a non-normal component", p.display()));
    }
    let root = Path::new("/download/dir");
    match lexical_resolve(&root.join(p)) {
        Some(r) if r.starts_with(root) && r != root => Ok(()),
        _ => Err(format!(
            "{what} {} leaves the download directory",
            p.display()
        )),
    }
}

/// Resolves `.` and `..` without touching the file system; `None` when the
/// path climbs above `/`.
fn lexical_resolve(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

fn check_torrent_paths(t: &Torrent) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(p) = check_clean_relative(Path::new(&t.name), "name") {
        problems.push(p);
    }
    let mut seen = HashSet::new();
    for f in &t.files {
        if let Err(p) = check_clean_relative(&f.path, "path") {
            problems.push(p);
        }
        if let FileKind::Symlink { target } = &f.kind {
            if let Err(p) = check_clean_relative(target, "symlink target") {
                problems.push(p);
            }
            if t.multi_file && !target.starts_with(&t.name) {
                problems.push(format!(
                    "symlink target {} is outside the torrent's directory {}",
                    target.display(),
                    t.name
                ));
            }
        }
        if !f.is_pad() && !seen.insert(f.path.clone()) {
            problems.push(format!("two files share the path {}", f.path.display()));
        }
    }
    // A file cannot also be a directory of another file.
    for f in t.files.iter().filter(|f| !f.is_pad()) {
        for a in f.path.ancestors().skip(1) {
            if seen.contains(a) {
                problems.push(format!(
                    "{} lies under the file {}",
                    f.path.display(),
                    a.display()
                ));
            }
        }
    }
    problems
}

#[test]
fn every_path_security_torrent_yields_contained_unique_relative_paths() {
    let mut failures = Vec::new();
    let mut loaded = 0;
    for e in manifest().iter().filter(|e| path_related(e)) {
        match load(e) {
            Err(msg) => failures.push(msg),
            Ok(Err(_)) => {} // refusing is always safe; other tests check the kind
            Ok(Ok(t)) => {
                loaded += 1;
                for p in check_torrent_paths(&t) {
                    failures.push(format!("{}: {p}", file_of(e)));
                }
            }
        }
    }
    assert_no_failures("path invariants", &failures);
    assert_eq!(loaded, 21, "path-related fixtures that load");
}

/// Everything under `dir`, checking each entry on the way. Symlinks are
/// listed, never followed.
fn walk(
    dir: &Path,
    root: &Path,
    out: &mut Vec<(PathBuf, std::fs::Metadata)>,
) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("read_dir {}: {e}", dir.display()))? {
        let p = entry.map_err(|e| e.to_string())?.path();
        let md = std::fs::symlink_metadata(&p).map_err(|e| e.to_string())?;
        let parent = p
            .parent()
            .unwrap()
            .canonicalize()
            .map_err(|e| e.to_string())?;
        if !parent.starts_with(root) {
            return Err(format!("{} is outside the root", p.display()));
        }
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(&p).map_err(|e| e.to_string())?;
            if target.is_absolute() {
                return Err(format!(
                    "symlink {} points at absolute {}",
                    p.display(),
                    target.display()
                ));
            }
            match lexical_resolve(&parent.join(&target)) {
                Some(r) if r.starts_with(root) => {}
                _ => {
                    return Err(format!(
                        "symlink {} -> {} leads outside the root",
                        p.display(),
                        target.display()
                    ))
                }
            }
            if let Ok(real) = p.canonicalize() {
                if !real.starts_with(root) {
                    return Err(format!(
                        "symlink {} resolves to {}",
                        p.display(),
                        real.display()
                    ));
                }
            }
        } else if !p
            .canonicalize()
            .map_err(|e| e.to_string())?
            .starts_with(root)
        {
            return Err(format!("{} resolves outside the root", p.display()));
        }
        let is_dir = md.is_dir();
        out.push((p.clone(), md));
        if is_dir {
            walk(&p, root, out)?;
        }
    }
    Ok(())
}

fn materialise(t: &Torrent) -> Result<(), String> {
    let base = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = base.path().join("out");
    let storage = FileStorage::new(&root, t, true).map_err(|e| format!("FileStorage::new: {e}"))?;
    if t.total_length < 64 << 20 {
        storage
            .write_at(0, &vec![0u8; t.total_length as usize])
            .map_err(|e| format!("write_at: {e}"))?;
    }
    storage.finish().map_err(|e| format!("finish: {e}"))?;
    drop(storage);

    let top: Vec<_> = std::fs::read_dir(base.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    if top != [std::ffi::OsString::from("out")] {
        return Err(format!("the temp dir holds {top:?}, not just 'out'"));
    }
    let root = root.canonicalize().map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    walk(&root, &root, &mut found)?;

    let files: BTreeMap<PathBuf, u64> = found
        .iter()
        .filter(|(_, md)| md.is_file())
        .map(|(p, md)| (p.strip_prefix(&root).unwrap().to_path_buf(), md.len()))
        .collect();
    let links: HashSet<PathBuf> = found
        .iter()
        .filter(|(_, md)| md.file_type().is_symlink())
        .map(|(p, _)| p.strip_prefix(&root).unwrap().to_path_buf())
        .collect();
    let regular: Vec<_> = t
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Regular)
        .collect();
    for f in &regular {
        match files.get(&f.path) {
            Some(&len) if len == f.length => {}
            other => {
                return Err(format!(
                    "{}: on disk {other:?}, want {} bytes",
                    f.path.display(),
                    f.length
                ))
            }
        }
    }
    if files.len() != regular.len() {
        return Err(format!(
            "{} files on disk for {} regular entries",
            files.len(),
            regular.len()
        ));
    }
    let symlinks: Vec<_> = t
        .files
        .iter()
        .filter(|f| matches!(f.kind, FileKind::Symlink { .. }))
        .collect();
    for f in &symlinks {
        if !links.contains(&f.path) {
            return Err(format!("symlink {} was not created", f.path.display()));
        }
    }
    if links.len() != symlinks.len() {
        return Err(format!(
            "{} symlinks on disk for {} entries",
            links.len(),
            symlinks.len()
        ));
    }
    Ok(())
}

#[test]
fn path_security_torrents_materialise_only_inside_the_download_directory() {
    let mut failures = Vec::new();
    let mut written = 0;
    for e in manifest().iter().filter(|e| path_related(e)) {
        if let Ok(Ok(t)) = load(e) {
            written += 1;
            if let Err(p) = materialise(&t) {
                failures.push(format!("{}: {p}", file_of(e)));
            }
        }
    }
    assert_no_failures("materialised layouts", &failures);
    assert_eq!(written, 21);
}

/// Path-security fixtures whose sanitised paths we expect to differ from
/// libtorrent 2.1.1's, with the reason.
const KNOWN_PATH_DIFFERENCES: &[(&str, &str)] = &[(
    "long_name.torrent",
    "we cut an overlong element to MAX_ELEMENT_LEN (240) bytes, libtorrent to 249",
)];

#[test]
fn sanitised_paths_match_libtorrent_for_the_path_security_cases() {
    let mut failures = Vec::new();
    for e in manifest()
        .iter()
        .filter(|e| path_related(e) && !v2_only(e) && valid(e))
    {
        let name = file_of(e);
        let Ok(Ok(t)) = load(e) else {
            failures.push(format!("{name}: does not load"));
            continue;
        };
        let observed: Vec<String> = e["observed_libtorrent_2_1_1"]["paths_first"]
            .as_array()
            .expect("libtorrent paths observed")
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        let ours: Vec<String> = paths(&t).into_iter().take(observed.len()).collect();
        let known = KNOWN_PATH_DIFFERENCES.iter().any(|d| d.0 == name);
        if (ours == observed) == known {
            failures.push(format!(
                "{name}: ours {ours:?}, libtorrent {observed:?}{}",
                if known {
                    " (listed as a known difference, but they agree)"
                } else {
                    ""
                }
            ));
        }
    }
    assert_no_failures("sanitised paths vs libtorrent", &failures);
}

fn loaded(file: &str) -> Torrent {
    let e = manifest()
        .into_iter()
        .find(|e| file_of(e) == file)
        .unwrap_or_else(|| panic!("{file} is not in the manifest"));
    match load(&e) {
        Ok(Ok(t)) => t,
        Ok(Err(err)) => panic!("{file}: {err}"),
        Err(msg) => panic!("{msg}"),
    }
}

/// The url-list as found in the file (to show we keep web seeds verbatim).
fn raw_url_list(file: &str) -> Vec<String> {
    let data = read(&format!("torrents/{file}"));
    let (root, _) = decode_with(&data, Limits::TORRENT).unwrap();
    match root.get("url-list") {
        Some(Value::Bytes(b)) => vec![String::from_utf8_lossy(b).into_owned()],
        Some(Value::List(l)) => l
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

#[test]
fn facts_asserted_by_the_source_tests_hold() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    assert_eq!(
        paths(&loaded("absolute_filename.torrent")),
        s(&["temp/abcde", "temp/foobar"])
    );
    assert_eq!(
        paths(&loaded("duplicate_files.torrent")),
        s(&["temp/foo/bar.txt", "temp/foo/bar.1.txt"])
    );
    assert_eq!(
        paths(&loaded("invalid_directory_name.torrent")),
        s(&["test2/_/foo", "test2/_/foo.1"])
    );
    assert_eq!(
        paths(&loaded("empty_path_multi.torrent")),
        s(&["temp/abcde", "temp/_", "temp/_.1"])
    );
    assert_eq!(loaded("invalid_filename.torrent").files.len(), 2);
    assert_eq!(
        paths(&loaded("invalid_filename2.torrent")),
        s(&["est2/f", "est2/_/_", "est2/_/_.1"])
    );
    let t = loaded("invalid_name2.torrent");
    assert_eq!(t.name, "b61560c2918f463768cd122b6d2fdd47b77bdb35");
    assert_eq!(t.name, t.info_hash.to_hex());
    assert_eq!(loaded("invalid_name3.torrent").name, "foobar ");
    assert_eq!(paths(&loaded("slash_path.torrent")), s(&["temp/_/_/bar"]));
    assert_eq!(
        paths(&loaded("slash_path2.torrent")),
        s(&["temp/abc....def/_/bar"])
    );
    let t = loaded("slash_path3.torrent");
    assert_eq!(
        (t.name.as_str(), paths(&t)),
        ("temp....abc", s(&["temp....abc"]))
    );

    for file in ["symlink1.torrent", "symlink_zero_size.torrent"] {
        let t = loaded(file);
        assert_eq!(t.files.len(), 2, "{file}");
        assert_eq!(
            symlink_target(&t, 1).as_deref(),
            Some("temp/a/b/bar"),
            "{file}"
        );
    }
    let t = loaded("symlink_filtered_path.torrent");
    assert_eq!(paths(&t)[0], "temp/a/_/bar");
    assert_eq!(symlink_target(&t, 1).as_deref(), Some("temp/a/_/bar"));
    let t = loaded("symlink2.torrent");
    assert_eq!(t.files.len(), 5);
    assert_eq!(
        symlink_target(&t, 0).as_deref(),
        Some("Some.framework/Versions/A/SDL2")
    );
    assert_eq!(
        symlink_target(&t, 4).as_deref(),
        Some("Some.framework/Versions/A")
    );
    let t = loaded("overlapping_symlinks.torrent");
    assert!(t.files.len() > 3);
    for (i, leaf) in ["Headers", "Resources", "SDL2"].iter().enumerate() {
        assert_eq!(
            symlink_target(&t, i),
            Some(format!("SDL2.framework/Versions/Current/{leaf}"))
        );
    }

    let t = loaded("pad_file.torrent");
    assert_eq!(t.files.len(), 2);
    assert!(!t.files[0].is_pad() && t.files[1].is_pad());
    let t = loaded("pad_file_no_path.torrent");
    assert_eq!(paths(&t)[1], ".pad/2124");
    assert!(t.files[1].is_pad());
    let t = loaded("sample.torrent");
    assert_eq!(
        paths(&t),
        s(&[
            "sample/text_file2.txt",
            "sample/.____padding_file/0",
            "sample/text_file.txt"
        ])
    );
    assert!(t.files[1].is_pad());

    assert_eq!(
        loaded("creation_date.torrent").creation_date,
        Some(1_234_567)
    );
    assert_eq!(loaded("no_creation_date.torrent").creation_date, None);
    assert_eq!(
        loaded("dht_nodes.torrent").nodes,
        vec![
            ("127.0.0.1".to_string(), 6881),
            ("192.168.1.1".to_string(), 6881)
        ]
    );
    assert_eq!(
        loaded("anacrolix-issue_65a.torrent").nodes,
        [
            ("185.34.3.132", 5680),
            ("185.34.3.103", 12340),
            ("94.209.253.165", 47232),
            ("78.46.103.11", 34319),
            ("195.154.162.70", 55011),
            ("185.34.3.137", 3732),
        ]
        .iter()
        .map(|(h, p)| (h.to_string(), *p))
        .collect::<Vec<_>>()
    );
    // 'nodes' holds plain strings, not [host, port] pairs: ignored, not fatal.
    assert!(loaded("anacrolix-trackerless.torrent").nodes.is_empty());
    assert_eq!(
        loaded("large_piece_size.torrent").piece_length,
        32_767 * 16_384
    );
    assert_eq!(
        loaded("whitespace_url.torrent").trackers[0][0],
        "udp://test.com/announce"
    );

    let t = loaded("anacrolix-bootstrap.dat.torrent");
    assert_eq!(t.name, "bootstrap.dat");
    assert_eq!(
        t.info_hash.to_hex(),
        "36719ba2cecf9f3bd7c5abfb7a88e939611b536c"
    );
    let all: HashSet<&str> = t.trackers.iter().flatten().map(String::as_str).collect();
    for url in [
        "udp://tracker.openbittorrent.com:80",
        "udp://tracker.publicbt.com:80",
        "udp://coppersurfer.tk:6969/announce",
        "udp://open.demonii.com:1337",
        "http://bttracker.crunchbanglinux.org:6969/announce",
    ] {
        assert!(all.contains(url), "bootstrap.dat trackers lack {url}");
    }
    let t = loaded("anacrolix-SKODAOCTAVIA336x280_archive.torrent");
    assert_eq!(
        t.info_hash.to_hex(),
        "d4b197dff199aad447a9a352e31528adbbd97922"
    );
    assert_eq!(
        t.web_seeds,
        s(&[
            "https://archive.org/download/",
            "http://ia601600.us.archive.org/26/items/",
            "http://ia801600.us.archive.org/26/items/",
        ])
    );
    let all: Vec<&str> = t.trackers.iter().flatten().map(String::as_str).collect();
    assert!(all.iter().any(|u| u.contains("bt1.archive.org:6969")));
    assert!(all.iter().any(|u| u.contains("bt2.archive.org:6969")));
    let t = loaded("anacrolix-flat-url-list.torrent");
    assert_eq!(
        t.info_hash.to_hex(),
        "9da24e606e4ed9c7b91c1772fb5bf98f82bd9687"
    );
    assert_eq!(t.web_seeds, s(&["https://archive.org/download/"]));
    let t = loaded("anacrolix-issue-949.torrent");
    assert!(t.private && t.hybrid);

    // Web seeds: duplicates are dropped (libtorrent keeps 3 of these 8).
    assert_eq!(
        loaded("duplicate_web_seeds.torrent").web_seeds,
        s(&[
            "http://foobar.com/foo",
            "http://foobar.com/foobar",
            "http://foobar.com/bar"
        ])
    );
    // libtorrent also appends '/' to a multi-file torrent's web seed and
    // percent-escapes spaces when it loads the file; we keep the URL as
    // found (a web-seed client builds request URLs from it per BEP 19).
    for file in [
        "url_seed.torrent",
        "url_seed_multi.torrent",
        "url_seed_multi_single_file.torrent",
        "url_seed_multi_space.torrent",
        "url_seed_multi_space_nolist.torrent",
    ] {
        let t = loaded(file);
        assert_eq!(t.web_seeds.len(), 1, "{file}");
        assert_eq!(t.web_seeds, raw_url_list(file), "{file}");
    }
    assert_eq!(
        loaded("url_seed.torrent").web_seeds,
        s(&["http://test.com/file"])
    );
    assert_eq!(
        loaded("url_seed_multi_single_file.torrent").web_seeds,
        s(&["http://test.com/file/temp/foo/bar.txt"])
    );
    // Empty web seeds are dropped.
    let t = loaded("empty_httpseed.torrent");
    assert!(t.web_seeds.is_empty() && t.http_seeds.is_empty());
    assert_eq!(
        loaded("httpseed.torrent").http_seeds,
        s(&["http://foobar.com/"])
    );
}

// ---------------------------------------------------------------------------
// bencode.json
// ---------------------------------------------------------------------------

/// serde_json refuses documents nested deeper than 128 levels, and one
/// vector's `decoded` (64 nested lists, two JSON levels each) is deeper. This
/// parser only finds the structure; strings and numbers go to serde_json.
fn parse_deep_json(text: &str) -> Json {
    struct P<'a> {
        text: &'a str,
        at: usize,
    }
    impl P<'_> {
        fn byte(&self) -> u8 {
            self.text.as_bytes()[self.at]
        }
        fn ws(&mut self) {
            while self.at < self.text.len() && self.byte().is_ascii_whitespace() {
                self.at += 1;
            }
        }
        fn expect(&mut self, b: u8) {
            self.ws();
            assert_eq!(
                self.byte(),
                b,
                "JSON: expected {:?} at {}",
                b as char,
                self.at
            );
            self.at += 1;
        }
        /// After an element: true when the container closes with `close`.
        fn next_or_close(&mut self, close: u8) -> bool {
            self.ws();
            let b = self.byte();
            self.at += 1;
            match b {
                b',' => false,
                _ if b == close => true,
                _ => panic!("JSON: unexpected {:?} at {}", b as char, self.at - 1),
            }
        }
        fn value(&mut self) -> Json {
            self.ws();
            let start = self.at;
            match self.byte() {
                b'{' => {
                    self.at += 1;
                    let mut map = serde_json::Map::new();
                    self.ws();
                    if self.byte() == b'}' {
                        self.at += 1;
                        return Json::Object(map);
                    }
                    loop {
                        let Json::String(key) = self.value() else {
                            panic!("JSON: object key at {} is not a string", self.at)
                        };
                        self.expect(b':');
                        let v = self.value();
                        map.insert(key, v);
                        if self.next_or_close(b'}') {
                            return Json::Object(map);
                        }
                    }
                }
                b'[' => {
                    self.at += 1;
                    let mut items = Vec::new();
                    self.ws();
                    if self.byte() == b']' {
                        self.at += 1;
                        return Json::Array(items);
                    }
                    loop {
                        items.push(self.value());
                        if self.next_or_close(b']') {
                            return Json::Array(items);
                        }
                    }
                }
                b'"' => {
                    self.at += 1;
                    loop {
                        match self.byte() {
                            b'\\' => self.at += 2,
                            b'"' => break,
                            _ => self.at += 1,
                        }
                    }
                    self.at += 1;
                    serde_json::from_str(&self.text[start..self.at]).expect("JSON string")
                }
                _ => {
                    while self.at < self.text.len()
                        && !matches!(self.byte(), b',' | b'}' | b']')
                        && !self.byte().is_ascii_whitespace()
                    {
                        self.at += 1;
                    }
                    serde_json::from_str(&self.text[start..self.at]).expect("JSON scalar")
                }
            }
        }
    }
    let mut p = P { text, at: 0 };
    let v = p.value();
    p.ws();
    assert_eq!(p.at, text.len(), "JSON: trailing text");
    v
}

fn bencode_vectors() -> Json {
    let text = String::from_utf8(read("bencode.json")).expect("bencode.json is UTF-8");
    parse_deep_json(&text)
}

fn input_of(v: &Json) -> Vec<u8> {
    hex::decode(v["input_hex"].as_str().expect("input_hex")).expect("input_hex is hex")
}

fn describe(v: &Json) -> String {
    match v["input_ascii"].as_str() {
        Some(a) if a.len() <= 60 => format!("{a:?}"),
        _ => format!(
            "<{} bytes: {}>",
            input_of(v).len(),
            v["note"].as_str().or(v["why"].as_str()).unwrap_or("")
        ),
    }
}

/// Compares a decoded value with the corpus's typed JSON.
fn typed_eq(want: &Json, got: &Value<'_>) -> Result<(), String> {
    let obj = want
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or("typed JSON must have one key")?;
    let (tag, inner) = obj.iter().next().unwrap();
    match (tag.as_str(), got) {
        ("int", Value::Int(i)) if inner.as_str() == Some(&i.to_string()) => Ok(()),
        ("str", Value::Bytes(b)) if inner.as_str().map(str::as_bytes) == Some(*b) => Ok(()),
        ("hex", Value::Bytes(b))
            if inner.as_str().and_then(|h| hex::decode(h).ok()).as_deref() == Some(*b) =>
        {
            Ok(())
        }
        ("list", Value::List(items)) => {
            let want = inner.as_array().ok_or("list is not an array")?;
            if want.len() != items.len() {
                return Err(format!(
                    "list of {} items, want {}",
                    items.len(),
                    want.len()
                ));
            }
            want.iter().zip(items).try_for_each(|(w, g)| typed_eq(w, g))
        }
        ("dict", Value::Dict(entries)) => {
            let want = inner.as_array().ok_or("dict is not an array")?;
            if want.len() != entries.len() {
                return Err(format!(
                    "dict of {} entries, want {}",
                    entries.len(),
                    want.len()
                ));
            }
            for (w, e) in want.iter().zip(entries) {
                typed_eq(&w[0], &Value::Bytes(e.key))?;
                typed_eq(&w[1], &e.value)?;
                // `raw` is exactly the value's bytes.
                let (again, end) = decode_with(e.raw, Limits::LENIENT_KEYS)
                    .map_err(|err| format!("raw span: {err}"))?;
                if again != e.value || end != e.raw.len() {
                    return Err("an entry's raw span is not its value".into());
                }
            }
            Ok(())
        }
        _ => Err(format!("got {got:?}, want {want}")),
    }
}

fn encoded(v: &Value<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

#[test]
fn every_valid_bencode_vector_decodes_to_the_listed_structure() {
    let vectors = bencode_vectors();
    let valid = vectors["valid"].as_array().expect("valid vectors");
    assert_eq!(valid.len(), 36);
    let mut failures = Vec::new();
    for v in valid {
        let input = input_of(v);
        let what = describe(v);
        if v["fits_i64"] == Json::Bool(false) {
            // Valid bencoding, but not representable: out of range, never wrapped.
            for (mode, r) in [
                ("decode", decode(&input).map(|_| ())),
                (
                    "LENIENT_KEYS",
                    decode_with(&input, Limits::LENIENT_KEYS).map(|_| ()),
                ),
                ("TORRENT", decode_with(&input, Limits::TORRENT).map(|_| ())),
            ] {
                if !matches!(r, Err(bencode::Error::IntegerOverflow { .. })) {
                    failures.push(format!("{what}: {mode} gave {r:?}, want IntegerOverflow"));
                }
            }
            continue;
        }
        let canonical = v["canonical"].as_bool().expect("canonical flag");
        if canonical {
            match decode(&input) {
                Err(err) => failures.push(format!("{what}: strict decode failed: {err}")),
                Ok(value) => {
                    if let Err(diff) = typed_eq(&v["decoded"], &value) {
                        failures.push(format!("{what}: {diff}"));
                    }
                    if encoded(&value) != input {
                        failures.push(format!("{what}: re-encoding differs from the input"));
                    }
                }
            }
        } else {
            if !matches!(decode(&input), Err(bencode::Error::UnsortedKeys { .. })) {
                failures.push(format!("{what}: strict decode must refuse unsorted keys"));
            }
            let canon = hex::decode(v["canonical_hex"].as_str().expect("canonical_hex")).unwrap();
            match decode_with(&input, Limits::LENIENT_KEYS) {
                Err(err) => failures.push(format!("{what}: lenient decode failed: {err}")),
                Ok((value, end)) => {
                    if end != input.len() {
                        failures.push(format!("{what}: lenient decode stopped at {end}"));
                    }
                    if let Err(diff) = typed_eq(&v["decoded"], &value) {
                        failures.push(format!("{what}: {diff}"));
                    }
                    if encoded(&value) != canon {
                        failures.push(format!(
                            "{what}: canonical re-encoding differs from canonical_hex"
                        ));
                    }
                }
            }
        }
        // The .torrent mode accepts everything that is valid.
        match decode_with(&input, Limits::TORRENT) {
            Ok((_, end)) if end == input.len() => {}
            other => failures.push(format!("{what}: TORRENT mode gave {other:?}")),
        }
    }
    assert_no_failures("valid bencode vectors", &failures);
}

fn bencode_kind(e: &bencode::Error) -> &'static str {
    use bencode::Error::*;
    match e {
        UnexpectedEof { .. } => "unexpected_eof",
        InvalidTypeByte { .. } => "invalid_type_byte",
        InvalidInteger { .. } => "invalid_integer",
        LeadingZero { .. } => "leading_zero",
        NegativeZero { .. } => "negative_zero",
        IntegerOverflow { .. } => "integer_overflow",
        LengthExceedsInput { .. } => "length_exceeds_input",
        LengthOverflow { .. } => "length_overflow",
        NonStringKey { .. } => "non_string_key",
        MissingValue { .. } => "missing_value",
        DuplicateKey { .. } => "duplicate_key",
        UnsortedKeys { .. } => "unsorted_keys",
        DepthLimit { .. } => "depth_limit",
        TokenLimit { .. } => "token_limit",
        TrailingData { .. } => "trailing_data",
    }
}

/// Invalid vectors we refuse under a different kind, with the reason.
const KNOWN_BENCODE_KIND_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "35208734823ljdahflajhdf",
        "invalid_type_byte",
        "the digits are followed by 'l', not ':', so we report that byte; the \
         corpus files it under the (also true) oversized length",
    ),
    (
        "18446744073709551615:foobar",
        "length_exceeds_input",
        "2^64-1 still fits the u64 we parse lengths into, so we report that it \
         runs past the input; only lengths beyond u64 are length_overflow",
    ),
];

#[test]
fn every_invalid_bencode_vector_is_refused_in_every_mode() {
    let vectors = bencode_vectors();
    let invalid = vectors["invalid"].as_array().expect("invalid vectors");
    assert_eq!(invalid.len(), 48);
    let mut failures = Vec::new();
    let mut differences_seen = HashSet::new();
    for v in invalid {
        let input = input_of(v);
        let what = describe(v);
        let kind = v["kind"].as_str().expect("kind");
        if let Some(n) = num(v, "input_length") {
            assert_eq!(input.len() as u64, n, "{what}: input_length");
        }
        let ascii = v["input_ascii"].as_str().unwrap_or("");
        let want = match KNOWN_BENCODE_KIND_DIFFERENCES
            .iter()
            .find(|d| !ascii.is_empty() && d.0 == ascii)
        {
            Some((_, ours, _)) => {
                differences_seen.insert(ascii.to_string());
                *ours
            }
            None => kind,
        };
        match decode(&input) {
            Ok(value) => failures.push(format!("{what}: strict decode accepted it as {value:?}")),
            Err(err) if bencode_kind(&err) != want => failures.push(format!(
                "{what}: strict decode says {} ({err}), corpus kind {kind}",
                bencode_kind(&err)
            )),
            Err(_) => {}
        }
        if let Ok((value, _)) = decode_with(&input, Limits::LENIENT_KEYS) {
            failures.push(format!("{what}: LENIENT_KEYS accepted it as {value:?}"));
        }
        match (kind, decode_with(&input, Limits::TORRENT)) {
            // By design: bytes after the top-level value are left to the caller.
            ("trailing_data", Ok((_, end))) if end < input.len() => {}
            ("trailing_data", other) => failures.push(format!(
                "{what}: TORRENT mode should stop before the trailing bytes, gave {other:?}"
            )),
            (_, Ok((value, _))) => {
                failures.push(format!("{what}: TORRENT mode accepted it as {value:?}"))
            }
            (_, Err(_)) => {}
        }
    }
    for (ascii, _, _) in KNOWN_BENCODE_KIND_DIFFERENCES {
        assert!(
            differences_seen.contains(*ascii),
            "{ascii} is no longer a known difference"
        );
    }
    assert_no_failures("invalid bencode vectors", &failures);
}

// ---------------------------------------------------------------------------
// krpc.json (BEP 5 examples)
// ---------------------------------------------------------------------------

/// Compares a decoded value with plain JSON (strings are ASCII byte strings,
/// numbers integers, objects dictionaries).
fn plain_eq(want: &Json, got: &Value<'_>) -> Result<(), String> {
    match (want, got) {
        (Json::String(s), Value::Bytes(b)) if s.as_bytes() == *b => Ok(()),
        (Json::Number(n), Value::Int(i)) if n.as_i64() == Some(*i) => Ok(()),
        (Json::Array(items), Value::List(l)) if items.len() == l.len() => {
            items.iter().zip(l).try_for_each(|(w, g)| plain_eq(w, g))
        }
        (Json::Object(map), Value::Dict(entries)) if map.len() == entries.len() => {
            for (k, w) in map {
                let g = got.get(k).ok_or_else(|| format!("no key {k:?}"))?;
                plain_eq(w, g).map_err(|e| format!("{k}: {e}"))?;
            }
            Ok(())
        }
        _ => Err(format!("got {got:?}, want {want}")),
    }
}

#[test]
fn every_bep5_krpc_example_decodes_strictly_with_the_listed_fields() {
    let doc: Json = serde_json::from_slice(&read("krpc.json")).expect("krpc.json is JSON");
    let messages = doc["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 11);
    let mut failures = Vec::new();
    for m in messages {
        let name = m["name"].as_str().unwrap();
        let input = hex::decode(m["bencoded_hex"].as_str().unwrap()).unwrap();
        assert_eq!(
            Some(input.as_slice()),
            m["bencoded_ascii"].as_str().map(str::as_bytes),
            "{name}"
        );
        let value = if m["canonical"] == Json::Bool(true) {
            match decode(&input) {
                Ok(v) => v,
                Err(err) => {
                    failures.push(format!("{name}: strict decode failed: {err}"));
                    continue;
                }
            }
        } else {
            if decode(&input).is_ok() {
                failures.push(format!(
                    "{name}: non-canonical, but the strict decoder took it"
                ));
            }
            decode_with(&input, Limits::LENIENT_KEYS).unwrap().0
        };
        if m["canonical"] == Json::Bool(true) && encoded(&value) != input {
            failures.push(format!("{name}: re-encoding differs"));
        }
        if let Err(diff) = plain_eq(&m["fields"], &value) {
            failures.push(format!("{name}: {diff}"));
        }
        // The envelope: t, y, and the part y names.
        let y = value.get("y").and_then(Value::as_str);
        let (want_y, body) = match m["kind"].as_str().unwrap() {
            "query" => ("q", "a"),
            "response" => ("r", "r"),
            "error" => ("e", "e"),
            other => panic!("{name}: unknown kind {other}"),
        };
        if y != Some(want_y)
            || value.get(body).is_none()
            || value.get("t").and_then(Value::as_bytes).is_none()
        {
            failures.push(format!(
                "{name}: envelope is not y={want_y} with t and {body}"
            ));
        }
        if want_y == "q" && value.get("q").and_then(Value::as_str) != m["method"].as_str() {
            failures.push(format!("{name}: q is not {}", m["method"]));
        }
        for id in [value.get("a"), value.get("r")].into_iter().flatten() {
            if id.get("id").and_then(Value::as_bytes).map(<[u8]>::len) != Some(20) {
                failures.push(format!("{name}: node id is not 20 bytes"));
            }
        }
        if want_y == "e" {
            let e = value.get("e").and_then(Value::as_list).unwrap_or_default();
            if e.first().and_then(Value::as_int) != Some(201)
                || e.get(1).and_then(Value::as_bytes).map(<[u8]>::len) != Some(23)
            {
                failures.push(format!("{name}: error is not [201, 23-byte message]"));
            }
        }
        if let Some(r) = value.get("r") {
            if let Some(nodes) = r.get("nodes").and_then(Value::as_bytes) {
                // The spec's placeholder is not compact node info.
                if nodes.len() % 26 == 0 {
                    failures.push(format!(
                        "{name}: nodes placeholder unexpectedly a multiple of 26"
                    ));
                }
            }
            if let Some(want) = m["values_as_peers"].as_array() {
                let got: Vec<String> = r
                    .get("values")
                    .and_then(Value::as_list)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::as_bytes)
                    .filter(|p| p.len() == 6)
                    .map(|p| {
                        let ip = std::net::Ipv4Addr::new(p[0], p[1], p[2], p[3]);
                        format!("{ip}:{}", u16::from_be_bytes([p[4], p[5]]))
                    })
                    .collect();
                if got
                    .iter()
                    .map(String::as_str)
                    .ne(want.iter().filter_map(Json::as_str))
                {
                    failures.push(format!("{name}: compact peers {got:?}, want {want:?}"));
                }
            }
        }
    }
    // A response names no method: ping and announce_peer answers are equal.
    let bytes_of =
        |n: &str| messages.iter().find(|m| m["name"] == n).unwrap()["bencoded_hex"].clone();
    assert_eq!(
        bytes_of("ping_response"),
        bytes_of("announce_peer_response")
    );
    assert_no_failures("KRPC examples", &failures);
}

/// The DHT's own KRPC decoder takes every BEP-5 example; canonical ones
/// re-encode to the same bytes.
#[test]
fn every_bep5_krpc_example_round_trips_through_the_dht_codec() {
    let doc: Json = serde_json::from_slice(&read("krpc.json")).expect("krpc.json is JSON");
    let mut failures = Vec::new();
    for m in doc["messages"].as_array().expect("messages") {
        let name = m["name"].as_str().unwrap();
        let input = hex::decode(m["bencoded_hex"].as_str().unwrap()).unwrap();
        match xorrent::dht::krpc::decode(&input) {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(msg) => {
                let mut out = Vec::new();
                xorrent::dht::krpc::encode(&msg, &mut out);
                if xorrent::dht::krpc::decode(&out).as_ref() != Ok(&msg) {
                    failures.push(format!("{name}: does not survive a re-encoding"));
                }
                // Byte-equal, except where the example's `nodes` placeholder
                // is not compact node info, and where it omits
                // `implied_port` (we always send the key).
                let placeholder = m["fields"]["r"]["nodes"].is_string();
                let no_implied = m["method"] == "announce_peer"
                    && m["kind"] == "query"
                    && m["fields"]["a"]["implied_port"].is_null();
                if m["canonical"] == Json::Bool(true) && !placeholder && !no_implied && out != input
                {
                    failures.push(format!(
                        "{name}: re-encodes as {}",
                        String::from_utf8_lossy(&out)
                    ));
                }
            }
        }
    }
    assert_no_failures("KRPC examples through dht::krpc", &failures);
}
