//! `xorrent create`: the torrents it writes load in our parser with the
//! right files and piece hashes, match mktorrent's and libtorrent's
//! info-hashes for the same input, load in libtorrent and
//! transmission-show, and the command refuses what it should.
//! The comparisons with other tools need them (and root): see
//! `interop_ready`; everything else runs anywhere.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::*;
use sha1::{Digest, Sha1};
use xorrent::bencode;
use xorrent::metainfo::create::{self, CreateOptions, PieceLength};
use xorrent::metainfo::Torrent;

const LT: &str = "libtorrent";

fn xorrent(cwd: &Path, args: &[&str]) -> Output {
    xorrent_cmd()
        .current_dir(cwd)
        .arg("create")
        .args(args)
        .output()
        .expect("run xorrent create")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "xorrent create failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// A directory of 40 files: nested directories, empty and hidden files,
/// and names whose byte-wise element order differs from whole-string
/// order (`a/…` before `a-b`). Returns the files in the order the torrent
/// must list them, with their contents.
fn sample_dir(root: &Path) -> Vec<(Vec<String>, Vec<u8>)> {
    let mut files: Vec<(Vec<&str>, usize)> = vec![
        (vec![".hidden"], 100),
        (vec!["B"], 16_385),
        (vec!["a", "empty1"], 0),
        (vec!["a", "z"], 5_000),
        (vec!["a-b"], 2_000),
        (vec!["deep", "1", "2", "3", "4", "file.bin"], 70_000),
        (vec!["deep", "empty2"], 0),
    ];
    let many: Vec<String> = (0..30).map(|i| format!("f{i:02}")).collect();
    for (i, m) in many.iter().enumerate() {
        files.push((vec!["many", m.as_str()], (i * 7_919) % 40_000 + 1));
    }
    files.push((vec!["space name é.txt"], 333));
    files.push((vec!["zero", "empty3"], 0));
    files
        .into_iter()
        .enumerate()
        .map(|(i, (path, len))| {
            let data = random_bytes(len, i as u64 + 1);
            write(
                &path.iter().fold(root.to_path_buf(), |p, e| p.join(e)),
                &data,
            );
            (path.into_iter().map(String::from).collect(), data)
        })
        .collect()
}

/// Element paths of a loaded torrent's files, below its name.
fn element_paths(t: &Torrent) -> Vec<Vec<String>> {
    t.files
        .iter()
        .map(|f| {
            f.path
                .iter()
                .skip(1)
                .map(|e| e.to_string_lossy().into_owned())
                .collect()
        })
        .collect()
}

/// SHA-1 of each piece of the files laid end to end.
fn piece_hashes(files: &[(Vec<String>, Vec<u8>)], piece: usize) -> Vec<[u8; 20]> {
    let stream: Vec<u8> = files.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    stream
        .chunks(piece)
        .map(|c| Sha1::digest(c).into())
        .collect()
}

/// The `info` dictionary's keys, in file order.
fn info_keys(torrent: &[u8]) -> Vec<String> {
    let v = bencode::decode(torrent).unwrap();
    v.get("info")
        .and_then(|i| i.as_dict())
        .unwrap()
        .iter()
        .map(|e| String::from_utf8_lossy(e.key).into_owned())
        .collect()
}

fn top_keys(torrent: &[u8]) -> Vec<String> {
    bencode::decode(torrent)
        .unwrap()
        .as_dict()
        .unwrap()
        .iter()
        .map(|e| String::from_utf8_lossy(e.key).into_owned())
        .collect()
}

#[test]
fn a_directory_torrent_lists_every_file_in_byte_wise_element_order_with_correct_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample_dir(&tmp.path().join("pack"));
    let out = ok(xorrent(
        tmp.path(),
        &["pack", "-l", "16K", "-o", "p.torrent", "--quiet"],
    ));
    let t = Torrent::from_file(&tmp.path().join("p.torrent")).unwrap();
    assert_eq!(stdout_lines(&out), vec![t.info_hash.to_hex()]);
    assert!(t.multi_file);
    assert_eq!(t.name, "pack");
    let want: Vec<Vec<String>> = files.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(element_paths(&t), want);
    for (f, (_, data)) in t.files.iter().zip(&files) {
        assert_eq!(f.length, data.len() as u64, "{}", f.path.display());
    }
    assert_eq!(t.piece_length, 16 * 1024);
    assert_eq!(t.piece_hashes, piece_hashes(&files, 16 * 1024));
    assert_eq!(
        info_keys(&std::fs::read(tmp.path().join("p.torrent")).unwrap()),
        ["files", "name", "piece length", "pieces"]
    );
    assert!(out.stderr.is_empty(), "--quiet: {}", stderr(&out));
}

#[test]
fn a_single_file_torrent_has_length_name_and_the_right_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = random_bytes(1_000_001, 3);
    write(&tmp.path().join("one.bin"), &data);
    let out = ok(xorrent(tmp.path(), &["one.bin", "--piece-length", "32KiB"]));
    // Default output: <name>.torrent in the current directory.
    let bytes = std::fs::read(tmp.path().join("one.bin.torrent")).unwrap();
    let t = Torrent::from_bytes(&bytes).unwrap();
    assert_eq!(stdout_lines(&out), vec![t.info_hash.to_hex()]);
    assert_eq!(t.info_hash.0, <[u8; 20]>::from(Sha1::digest(&t.info_bytes)));
    assert!(!t.multi_file);
    assert_eq!(t.name, "one.bin");
    assert_eq!(t.total_length, data.len() as u64);
    let files = vec![(Vec::new(), data)];
    assert_eq!(t.piece_hashes, piece_hashes(&files, 32 * 1024));
    assert_eq!(
        info_keys(&bytes),
        ["length", "name", "piece length", "pieces"]
    );
    assert_eq!(top_keys(&bytes), ["created by", "creation date", "info"]);
    assert_eq!(
        t.created_by.as_deref(),
        Some(concat!("xorrent/", env!("CARGO_PKG_VERSION")))
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - 600..=now + 5).contains(&t.creation_date.unwrap()));
    assert!(stderr(&out).contains("wrote one.bin.torrent"));
}

#[test]
fn without_creation_date_the_same_input_gives_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    sample_dir(&tmp.path().join("d"));
    for out in ["1.torrent", "2.torrent"] {
        ok(xorrent(tmp.path(), &["d", "--no-creation-date", "-o", out]));
    }
    let one = std::fs::read(tmp.path().join("1.torrent")).unwrap();
    assert_eq!(one, std::fs::read(tmp.path().join("2.torrent")).unwrap());
    assert_eq!(top_keys(&one), ["created by", "info"]);
}

#[test]
fn auto_piece_length_picks_16_kib_for_small_torrents_and_aims_at_2500_pieces() {
    assert_eq!(create::auto_piece_length(3_000_000), 16 * 1024);
    assert_eq!(create::auto_piece_length(1 << 30), 512 * 1024);
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("f"), &random_bytes(100_000, 1));
    ok(xorrent(tmp.path(), &["f", "-q"]));
    let t = Torrent::from_file(&tmp.path().join("f.torrent")).unwrap();
    assert_eq!(t.piece_length, 16 * 1024);
}

#[test]
fn piece_lengths_that_are_not_powers_of_two_in_range_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("f"), b"data");
    for bad in ["100K", "8K", "32M", "1000", "big"] {
        let out = xorrent(tmp.path(), &["f", "-l", bad]);
        assert!(!out.status.success(), "{bad} accepted");
        assert!(
            stderr(&out).contains("power of two from 16 KiB to 16 MiB"),
            "{bad}: {}",
            stderr(&out)
        );
    }
    assert!(!tmp.path().join("f.torrent").exists());
    for good in ["262144", "256K", "256kib", "1M", "1MiB"] {
        ok(xorrent(tmp.path(), &["f", "-l", good, "-f", "-q"]));
        let t = Torrent::from_file(&tmp.path().join("f.torrent")).unwrap();
        assert!(t.piece_length == 256 * 1024 || t.piece_length == 1 << 20);
    }
}

#[test]
fn an_existing_torrent_is_not_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("f"), b"some data");
    write(&tmp.path().join("f.torrent"), b"precious");
    let out = xorrent(tmp.path(), &["f"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("f.torrent already exists (use --force"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read(tmp.path().join("f.torrent")).unwrap(),
        b"precious"
    );
    ok(xorrent(tmp.path(), &["f", "--force"]));
    Torrent::from_file(&tmp.path().join("f.torrent")).unwrap();
}

#[test]
fn the_output_file_inside_the_directory_is_never_hashed_into_it() {
    let tmp = tempfile::tempdir().unwrap();
    sample_dir(&tmp.path().join("d"));
    let args = ["d", "-o", "d/self.torrent", "--no-creation-date"];
    let first = stdout_lines(&ok(xorrent(tmp.path(), &args)));
    let mut again = args.to_vec();
    again.push("--force");
    let out = ok(xorrent(tmp.path(), &again));
    assert_eq!(stdout_lines(&out), first);
    assert!(
        stderr(&out).contains("it is the output file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn symlinks_inside_the_path_are_skipped_with_a_warning_and_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    write(&outside.join("secret.txt"), b"not for sharing");
    let d = tmp.path().join("d");
    write(&d.join("real.txt"), b"shared");
    symlink(outside.join("secret.txt"), d.join("link-to-file")).unwrap();
    symlink(&outside, d.join("link-to-dir")).unwrap();
    symlink("real.txt", d.join("link-inside")).unwrap();
    symlink("/nonexistent/target", d.join("dangling")).unwrap();
    let out = ok(xorrent(tmp.path(), &["d"]));
    let t = Torrent::from_file(&tmp.path().join("d.torrent")).unwrap();
    assert_eq!(element_paths(&t), vec![vec!["real.txt".to_string()]]);
    assert_eq!(t.total_length, 6);
    let err = stderr(&out);
    for name in ["link-to-file", "link-to-dir", "link-inside", "dangling"] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("warning: skipping symlink") && l.contains(name)),
            "no warning for {name}: {err}"
        );
    }
}

#[test]
fn a_fifo_inside_the_path_is_skipped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    write(&d.join("file"), b"x");
    let made = Command::new("mkfifo").arg(d.join("pipe")).status().unwrap();
    assert!(made.success());
    let out = ok(xorrent(tmp.path(), &["d"]));
    let t = Torrent::from_file(&tmp.path().join("d.torrent")).unwrap();
    assert_eq!(element_paths(&t), vec![vec!["file".to_string()]]);
    assert!(
        stderr(&out).contains("warning: skipping") && stderr(&out).contains("pipe"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_symlink_given_as_the_path_is_followed_and_named_after_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    let data = random_bytes(50_000, 9);
    write(&tmp.path().join("target.bin"), &data);
    symlink("target.bin", tmp.path().join("link.bin")).unwrap();
    sample_dir(&tmp.path().join("realdir"));
    symlink("realdir", tmp.path().join("linkdir")).unwrap();

    ok(xorrent(tmp.path(), &["link.bin", "-q"]));
    let t = Torrent::from_file(&tmp.path().join("link.bin.torrent")).unwrap();
    assert_eq!(t.name, "link.bin");
    assert_eq!(t.piece_hashes, piece_hashes(&[(Vec::new(), data)], 16384));

    ok(xorrent(tmp.path(), &["linkdir", "-q"]));
    let t = Torrent::from_file(&tmp.path().join("linkdir.torrent")).unwrap();
    assert_eq!(t.name, "linkdir");
    assert_eq!(t.files.len(), 39);
}

#[test]
fn a_directory_of_only_empty_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("d/empty"), b"");
    std::fs::create_dir_all(tmp.path().join("d/sub/dir")).unwrap();
    let out = xorrent(tmp.path(), &["d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nothing to share"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("d.torrent").exists());
}

#[test]
fn name_overrides_the_name_and_the_default_output_file() {
    let tmp = tempfile::tempdir().unwrap();
    sample_dir(&tmp.path().join("d"));
    ok(xorrent(tmp.path(), &["d", "--name", "Other Name", "-q"]));
    let t = Torrent::from_file(&tmp.path().join("Other Name.torrent")).unwrap();
    assert_eq!(t.name, "Other Name");
    assert!(t.files[0].path.starts_with("Other Name"));
    let out = xorrent(tmp.path(), &["d", "--name", "../escape"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid torrent name"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn magnet_prints_the_info_hash_name_and_every_tracker_percent_encoded() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("My Movie (2024).mkv"),
        &random_bytes(40_000, 5),
    );
    let out = ok(xorrent(
        tmp.path(),
        &[
            "My Movie (2024).mkv",
            "--magnet",
            "-t",
            "http://tracker.example/announce?k=a&b",
            "-t",
            "udp://one.example:6969,udp://two.example:80",
        ],
    ));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let hash = &lines[0];
    assert_eq!(
        lines[1],
        format!(
            "magnet:?xt=urn:btih:{hash}&dn=My%20Movie%20%282024%29.mkv\
             &tr=http%3A%2F%2Ftracker.example%2Fannounce%3Fk%3Da%26b\
             &tr=udp%3A%2F%2Fone.example%3A6969&tr=udp%3A%2F%2Ftwo.example%3A80"
        )
    );
    let t = Torrent::from_file(&tmp.path().join("My Movie (2024).mkv.torrent")).unwrap();
    assert_eq!(&t.info_hash.to_hex(), hash);
}

#[test]
fn each_tracker_flag_is_a_tier_and_a_separator_puts_urls_in_one_tier() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("f"), b"data");
    ok(xorrent(
        tmp.path(),
        &["f", "-q", "-t", "http://a/ann", "-t", "udp://b:1,udp://c:2"],
    ));
    let bytes = std::fs::read(tmp.path().join("f.torrent")).unwrap();
    let t = Torrent::from_bytes(&bytes).unwrap();
    assert_eq!(
        t.trackers,
        vec![
            vec!["http://a/ann".to_string()],
            vec!["udp://b:1".to_string(), "udp://c:2".to_string()]
        ]
    );
    let v = bencode::decode(&bytes).unwrap();
    assert_eq!(v.get("announce").unwrap().as_str(), Some("http://a/ann"));

    // Another separator, for URLs that contain commas.
    ok(xorrent(
        tmp.path(),
        &[
            "f",
            "-q",
            "-f",
            "--tier-sep",
            "|",
            "-t",
            "http://a/x?l=1,2|http://b/",
        ],
    ));
    let t = Torrent::from_file(&tmp.path().join("f.torrent")).unwrap();
    assert_eq!(
        t.trackers,
        vec![vec![
            "http://a/x?l=1,2".to_string(),
            "http://b/".to_string()
        ]]
    );

    // One URL: `announce` only.
    ok(xorrent(
        tmp.path(),
        &["f", "-q", "-f", "-t", "http://only/"],
    ));
    let bytes = std::fs::read(tmp.path().join("f.torrent")).unwrap();
    assert!(top_keys(&bytes).contains(&"announce".to_string()));
    assert!(!top_keys(&bytes).contains(&"announce-list".to_string()));

    let out = xorrent(tmp.path(), &["f", "-f", "-t", "not a url"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid URL"), "{}", stderr(&out));
}

#[test]
fn private_source_comment_and_web_seeds_are_written_where_they_belong() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("f"), &random_bytes(20_000, 2));
    let plain = stdout_lines(&ok(xorrent(tmp.path(), &["f", "-o", "plain.torrent"])));
    let out = ok(xorrent(
        tmp.path(),
        &[
            "f",
            "-o",
            "priv.torrent",
            "--private",
            "--source",
            "SITE",
            "--comment",
            "hello",
            "--web-seed",
            "http://ws.example/f",
        ],
    ));
    assert_ne!(stdout_lines(&out), plain, "private changes the info-hash");
    let bytes = std::fs::read(tmp.path().join("priv.torrent")).unwrap();
    assert_eq!(
        info_keys(&bytes),
        [
            "length",
            "name",
            "piece length",
            "pieces",
            "private",
            "source"
        ]
    );
    assert_eq!(
        top_keys(&bytes),
        ["comment", "created by", "creation date", "info", "url-list"]
    );
    let t = Torrent::from_bytes(&bytes).unwrap();
    assert!(t.private);
    assert_eq!(t.comment.as_deref(), Some("hello"));
    assert_eq!(t.web_seeds, ["http://ws.example/f"]);
    let v = bencode::decode(&bytes).unwrap();
    let info = v.get("info").unwrap();
    assert_eq!(info.get("private").unwrap().as_int(), Some(1));
    assert_eq!(info.get("source").unwrap().as_str(), Some("SITE"));
    let plain = std::fs::read(tmp.path().join("plain.torrent")).unwrap();
    assert!(!Torrent::from_bytes(&plain).unwrap().private);
}

#[test]
fn the_library_hashes_on_several_threads_and_counts_progress_to_the_total() {
    let tmp = tempfile::tempdir().unwrap();
    let files = sample_dir(&tmp.path().join("d"));
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    let mut results = Vec::new();
    for threads in [1, 4] {
        let opts = CreateOptions {
            piece_length: PieceLength::Fixed(16 * 1024),
            threads,
            ..CreateOptions::default()
        };
        let progress = AtomicU64::new(0);
        let c = create::create(&tmp.path().join("d"), &opts, &progress).unwrap();
        assert_eq!(progress.load(Ordering::Relaxed), total);
        assert_eq!(c.total, total);
        assert_eq!(c.num_files, files.len());
        assert_eq!(u64::from(c.num_pieces), total.div_ceil(16 * 1024));
        let t = Torrent::from_bytes(&c.bytes).unwrap();
        assert_eq!(t.info_hash, c.info_hash);
        assert_eq!(t.piece_hashes, piece_hashes(&files, 16 * 1024));
        results.push(c.bytes);
    }
    assert_eq!(results[0], results[1]);
}

fn mktorrent(args: &[&str], cwd: &Path) {
    let out = Command::new("mktorrent")
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mktorrent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_single_file_gets_the_same_info_hash_as_mktorrent() {
    if !interop_ready("create_matches_mktorrent", &["mktorrent"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("data.bin"),
        &random_bytes(3 * 1024 * 1024 + 12_345, 11),
    );
    for (exp, extra) in [("16", &[][..]), ("18", &[][..]), ("15", &["-p"][..])] {
        let mk_out = format!("mk{exp}.torrent");
        let mut args = vec!["-l", exp, "-o", mk_out.as_str()];
        args.extend_from_slice(extra);
        args.push("data.bin");
        mktorrent(&args, tmp.path());
        let mk = std::fs::read(tmp.path().join(&mk_out)).unwrap();

        let piece = (1u32 << exp.parse::<u32>().unwrap()).to_string();
        let ours_out = format!("xo{exp}.torrent");
        let mut args = vec!["data.bin", "-l", piece.as_str(), "-o", ours_out.as_str()];
        if extra.contains(&"-p") {
            args.push("--private");
        }
        let out = ok(xorrent(tmp.path(), &args));
        let ours = std::fs::read(tmp.path().join(&ours_out)).unwrap();

        assert_eq!(info_keys(&mk), info_keys(&ours), "info keys differ");
        let mk_t = Torrent::from_bytes(&mk).unwrap();
        assert_eq!(stdout_lines(&out), vec![mk_t.info_hash.to_hex()]);
        assert_eq!(
            mk_t.info_bytes,
            Torrent::from_bytes(&ours).unwrap().info_bytes
        );
    }
    // The source string too.
    mktorrent(
        &["-l", "16", "-s", "SITE", "-o", "mks.torrent", "data.bin"],
        tmp.path(),
    );
    let mk_t = Torrent::from_file(&tmp.path().join("mks.torrent")).unwrap();
    let out = ok(xorrent(
        tmp.path(),
        &[
            "data.bin",
            "-l",
            "64K",
            "--source",
            "SITE",
            "-o",
            "xos.torrent",
        ],
    ));
    assert_eq!(stdout_lines(&out), vec![mk_t.info_hash.to_hex()]);
}

#[test]
fn a_directory_gets_the_same_info_hash_as_mktorrent_when_names_sort_alike() {
    // mktorrent orders by the whole path string; we compare element by
    // element. The two agree unless a name is a prefix of a sibling and
    // is followed there by a byte below `/` (`a-b` against `a/z`), so
    // this tree avoids that.
    if !interop_ready("create_dir_matches_mktorrent", &["mktorrent"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    let mut n = 0u64;
    let mut put = |rel: &str, len: usize| {
        n += 1;
        write(&root.join(rel), &random_bytes(len, n));
    };
    put(".hidden", 10);
    put("empty", 0);
    put("d1/x", 40_000);
    put("d10/y", 1);
    put("d1/sub/deeper/z", 100_000);
    put("d1/sub/empty", 0);
    for i in 0..30 {
        put(&format!("many/f{i}"), i * 3_001 + 5);
    }
    mktorrent(&["-l", "15", "-o", "mk.torrent", "tree"], tmp.path());
    let mk = Torrent::from_file(&tmp.path().join("mk.torrent")).unwrap();
    let out = ok(xorrent(tmp.path(), &["tree", "-l", "32K", "-q"]));
    let ours = Torrent::from_file(&tmp.path().join("tree.torrent")).unwrap();
    assert_eq!(element_paths(&ours), element_paths(&mk));
    assert_eq!(stdout_lines(&out), vec![mk.info_hash.to_hex()]);
}

fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const LT_CREATE: &str = r#"
import sys, os, libtorrent as lt
path, piece, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fs = lt.file_storage()
lt.add_files(fs, path)
ct = lt.create_torrent(fs, piece, flags=lt.create_torrent.v1_only)
lt.set_piece_hashes(ct, os.path.dirname(path))
with open(out, "wb") as f:
    f.write(lt.bencode(ct.generate()))
print(lt.torrent_info(out).info_hash())
"#;

#[test]
fn a_single_file_gets_the_same_info_hash_as_libtorrent_v1_only() {
    if !interop_ready("create_matches_libtorrent", &[LT]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data.bin");
    write(&file, &random_bytes(5 * 1024 * 1024 + 777, 12));
    for piece in [16_384u32, 262_144] {
        let lt_out = tmp.path().join(format!("lt{piece}.torrent"));
        let lt_hash = python(LT_CREATE, &[&file, Path::new(&piece.to_string()), &lt_out]);
        let lt_bytes = std::fs::read(&lt_out).unwrap();
        let ours_name = format!("xo{piece}.torrent");
        let out = ok(xorrent(
            tmp.path(),
            &["data.bin", "-l", &piece.to_string(), "-o", &ours_name],
        ));
        assert_eq!(
            info_keys(&lt_bytes),
            info_keys(&std::fs::read(tmp.path().join(&ours_name)).unwrap()),
            "info keys differ"
        );
        assert_eq!(stdout_lines(&out), vec![lt_hash.trim().to_string()]);
    }
}

/// Loads a torrent in libtorrent, lists its files, and checks the data in
/// argv[2] against it (a full recheck in a session with everything that
/// talks to the network off).
const LT_LOAD: &str = r#"
import sys, time, json, libtorrent as lt
ti = lt.torrent_info(sys.argv[1])
fs = ti.files()
files = [[fs.file_path(i), fs.file_size(i), bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)]
         for i in range(fs.num_files())]
ses = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False,
                  "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False})
h = ses.add_torrent({"ti": ti, "save_path": sys.argv[2]})
deadline = time.time() + 60
while time.time() < deadline:
    s = h.status()
    if s.state in (lt.torrent_status.seeding, lt.torrent_status.finished):
        break
    time.sleep(0.05)
s = h.status()
print(json.dumps({"files": files, "info_hash": str(ti.info_hash()), "name": ti.name(),
                  "num_pieces": ti.num_pieces(), "have": s.num_pieces, "seeding": s.is_seeding}))
"#;

#[test]
fn a_directory_torrent_loads_in_libtorrent_with_the_same_files_and_verifies() {
    if !interop_ready("create_dir_loads_in_libtorrent", &[LT]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let files = sample_dir(&tmp.path().join("pack"));
    let out = ok(xorrent(tmp.path(), &["pack", "-l", "16K", "-q"]));
    let v: serde_json::Value = serde_json::from_str(&python(
        LT_LOAD,
        &[&tmp.path().join("pack.torrent"), tmp.path()],
    ))
    .unwrap();
    assert_eq!(v["info_hash"], stdout_lines(&out)[0]);
    assert_eq!(v["name"], "pack");
    let got: Vec<(String, u64, bool)> = v["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f[0].as_str().unwrap().to_string(),
                f[1].as_u64().unwrap(),
                f[2].as_bool().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, bool)> = files
        .iter()
        .map(|(p, d)| (format!("pack/{}", p.join("/")), d.len() as u64, false))
        .collect();
    assert_eq!(got, want);
    assert_eq!(v["have"], v["num_pieces"], "libtorrent found bad pieces");
    assert_eq!(v["seeding"], true);
}

/// `transmission-show`'s size text ("1.02 kB", "123.5 kB", "2.00 MB") as
/// bytes, with the precision shown.
fn parse_tr_size(s: &str) -> (f64, f64) {
    let (num, unit) = s.split_once(' ').unwrap();
    let scale = match unit {
        "B" | "bytes" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => panic!("unit {other}"),
    };
    let decimals = num.split_once('.').map_or(0, |(_, d)| d.len());
    let value: f64 = num.parse().unwrap();
    (value * scale, scale * 0.5 * 10f64.powi(-(decimals as i32)))
}

#[test]
fn a_directory_torrent_loads_in_transmission_show_with_the_same_files() {
    if !interop_ready(
        "create_dir_loads_in_transmission_show",
        &["transmission-show"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let files = sample_dir(&tmp.path().join("pack"));
    let out = ok(xorrent(tmp.path(), &["pack", "-l", "16K", "-q"]));
    let show = Command::new("transmission-show")
        .arg("-u")
        .arg(tmp.path().join("pack.torrent"))
        .output()
        .unwrap();
    assert!(show.status.success());
    let text = String::from_utf8(show.stdout).unwrap();
    assert!(
        text.contains(&format!("Hash: {}", stdout_lines(&out)[0])),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Piece Count: {}",
            piece_hashes(&files, 16384).len()
        )),
        "{text}"
    );
    let listed: Vec<(String, String)> = text
        .lines()
        .skip_while(|l| *l != "FILES")
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (path, size) = l.trim().rsplit_once(" (").unwrap();
            (path.to_string(), size.trim_end_matches(')').to_string())
        })
        .collect();
    assert_eq!(listed.len(), files.len(), "{text}");
    for ((path, size), (want_path, data)) in listed.iter().zip(&files) {
        assert_eq!(path, &format!("pack/{}", want_path.join("/")));
        let (bytes, slack) = parse_tr_size(size);
        assert!(
            (bytes - data.len() as f64).abs() <= slack + 1e-9,
            "{path}: {size} vs {} bytes",
            data.len()
        );
    }
}
