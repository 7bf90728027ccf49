//! File selection against the real binary: `xorrent download --select`
//! and a magnet's `so=` fetch only the pieces of the chosen files from an
//! `xorrent seed`, create only the files those pieces touch, and resume.
//! Each test has its own loopback block (`loopback_block`).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use sha1::{Digest, Sha1};

const PIECE: usize = 32 * 1024;
const NAME: &str = "sel";

/// (path below the torrent's root, length). Piece by piece (32 KiB):
/// a 0-1 | b 2-3 | c 3-8 | d 8 | e 8-9 | f 9-12 | g 12 | h empty.
/// Selecting b and d (1,3) wants pieces 2, 3 and 8: b, c, d and e share
/// them, a, f, g and h do not.
const FILES: [(&str, usize); 8] = [
    ("a.bin", 65_536),
    ("b.bin", 50_000),
    ("sub/c.bin", 150_000),
    ("d.bin", 1_000),
    ("e.bin", 30_000),
    ("sub/f.bin", 100_000),
    ("g.bin", 7),
    ("h.empty", 0),
];

struct Setup {
    dir: tempfile::TempDir,
    torrent: PathBuf,
    info_hash: String,
    contents: Vec<Vec<u8>>,
    ip: Box<dyn Fn(u8) -> Ipv4Addr>,
    _seed: Proc,
}

impl Setup {
    /// Writes the content and torrent and starts `xorrent seed` on host 1
    /// of a fresh loopback block, port 6881.
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let contents: Vec<Vec<u8>> = FILES
            .iter()
            .enumerate()
            .map(|(i, (_, len))| random_bytes(*len, 66 + i as u64))
            .collect();
        let files: Vec<(Vec<&str>, Vec<u8>)> = FILES
            .iter()
            .zip(&contents)
            .map(|((p, _), d)| (p.split('/').collect(), d.clone()))
            .collect();
        let bytes = make_torrent(NAME, &files, PIECE, None, true);
        let torrent = dir.path().join("sel.torrent");
        std::fs::write(&torrent, &bytes).unwrap();
        let info_hash = xorrent::metainfo::Torrent::from_bytes(&bytes)
            .unwrap()
            .info_hash
            .to_hex();
        let data = dir.path().join("data");
        for ((p, _), d) in FILES.iter().zip(&contents) {
            let at = data.join(NAME).join(p);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, d).unwrap();
        }
        let ip = Box::new(loopback_block());
        let seed_ip = ip(1);
        let seed = Proc::spawn(
            "xorrent seed",
            xorrent_cmd()
                .arg("seed")
                .arg(&torrent)
                .arg(&data)
                .args(["--bind", &seed_ip.to_string(), "--port", "6881", "-q"])
                .stdout(Stdio::null()),
        );
        let addr = SocketAddr::new(seed_ip.into(), 6881);
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "xorrent seed never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Setup {
            dir,
            torrent,
            info_hash,
            contents,
            ip,
            _seed: seed,
        }
    }

    fn seed_addr(&self) -> String {
        format!("{}:6881", (self.ip)(1))
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// `xorrent download WHAT -o out --bind <host 2> ARGS...`; returns
    /// the exit status, stderr and the summary JSON (if written).
    fn download(
        &self,
        what: &str,
        args: &[&str],
    ) -> (std::process::ExitStatus, String, Option<serde_json::Value>) {
        let summary = self.dir.path().join("summary.json");
        let _ = std::fs::remove_file(&summary);
        let mut p = Proc::spawn(
            "xorrent download",
            xorrent_cmd()
                .arg("download")
                .arg(what)
                .arg("-o")
                .arg(self.out())
                .args(["--bind", &(self.ip)(2).to_string(), "--port", "6881"])
                .arg("--summary-json")
                .arg(&summary)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let (st, err) = p.wait_with_stderr(Duration::from_secs(60));
        let json = std::fs::read(&summary)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap());
        (st, err, json)
    }

    fn path(&self, i: usize) -> PathBuf {
        self.out().join(NAME).join(FILES[i].0)
    }

    fn assert_file(&self, i: usize) {
        let got = std::fs::read(self.path(i))
            .unwrap_or_else(|e| panic!("{}: {e}", self.path(i).display()));
        assert_eq!(
            got.len(),
            self.contents[i].len(),
            "length of {}",
            FILES[i].0
        );
        assert!(
            Sha1::digest(&got) == Sha1::digest(&self.contents[i]),
            "content of {} differs",
            FILES[i].0
        );
    }

    /// Exactly the files in `present` exist below the output directory.
    fn assert_present(&self, present: &[usize]) {
        for (i, (name, _)) in FILES.iter().enumerate() {
            let exists = self.path(i).symlink_metadata().is_ok();
            assert_eq!(
                exists,
                present.contains(&i),
                "{name} {}",
                if exists { "exists" } else { "is missing" }
            );
        }
    }
}

fn ok(st: std::process::ExitStatus, err: &str) {
    assert!(st.success(), "xorrent download exited with {st}\n{err}");
}

/// Pieces 2, 3 and 8.
const WANTED_1_3: u64 = 3 * PIECE as u64;

#[test]
fn select_fetches_only_the_chosen_files_and_creates_only_the_files_they_touch() {
    if !in_netns() {
        eprintln!("SKIPPED: needs scripts/netns-run (a private network namespace)");
        return;
    }
    let s = Setup::new();
    let peer = s.seed_addr();
    let (st, err, json) = s.download(
        s.torrent.to_str().unwrap(),
        &["--select", "1,3", "--peer", &peer],
    );
    ok(st, &err);
    s.assert_file(1);
    s.assert_file(3);
    s.assert_present(&[1, 2, 3, 4]);
    let j = json.expect("summary written");
    assert_eq!(j["total_bytes"].as_u64(), Some(WANTED_1_3), "{j}");
    assert_eq!(j["downloaded"].as_u64(), Some(WANTED_1_3), "{j}");
    let all: usize = FILES.iter().map(|f| f.1).sum();
    assert_eq!(j["torrent_bytes"].as_u64(), Some(all as u64), "{j}");
    assert!(!err.contains("not supported"), "{err}");
}

#[test]
fn a_magnet_so_selects_files_like_select() {
    if !in_netns() {
        eprintln!("SKIPPED: needs scripts/netns-run (a private network namespace)");
        return;
    }
    let s = Setup::new();
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&dn={NAME}&so=1,3&x.pe={}",
        s.info_hash,
        s.seed_addr()
    );
    let (st, err, json) = s.download(&magnet, &[]);
    ok(st, &err);
    s.assert_file(1);
    s.assert_file(3);
    s.assert_present(&[1, 2, 3, 4]);
    let j = json.expect("summary written");
    assert_eq!(j["total_bytes"].as_u64(), Some(WANTED_1_3), "{j}");
    assert_eq!(j["downloaded"].as_u64(), Some(WANTED_1_3), "{j}");
    assert!(!err.contains("not supported"), "{err}");

    // --select wins over so=: g alone (piece 12, shared with f).
    let (st, err, json) = s.download(&magnet, &["--select", "6"]);
    ok(st, &err);
    s.assert_file(6);
    s.assert_present(&[1, 2, 3, 4, 5, 6]);
    let j = json.expect("summary written");
    let last = FILES.iter().map(|f| f.1).sum::<usize>() - 12 * PIECE;
    assert_eq!(j["total_bytes"].as_u64(), Some(last as u64), "{j}");
    assert_eq!(j["downloaded"].as_u64(), Some(last as u64), "{j}");
}

#[test]
fn an_index_past_the_last_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let files = vec![(vec!["x"], random_bytes(1000, 1)), (vec!["y"], vec![])];
    let torrent = dir.path().join("t.torrent");
    std::fs::write(&torrent, make_torrent("t", &files, PIECE, None, true)).unwrap();
    let out = dir.path().join("out");
    let run = |sel: &str| {
        xorrent_cmd()
            .arg("download")
            .arg(&torrent)
            .arg("-o")
            .arg(&out)
            .args(["--select", sel, "--bind", "127.0.0.1", "--port", "0"])
            .output()
            .unwrap()
    };
    let o = run("0,2-3");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("names file 2"), "{err}");
    assert!(err.contains("only 2 files"), "{err}");
    assert!(!out.exists(), "nothing is written before the check");
    let o = run("1-0");
    assert_eq!(
        o.status.code(),
        Some(2),
        "a backward range is a usage error"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("backwards"));

    // `info` numbers the files the way --select counts them.
    let o = xorrent_cmd().arg("info").arg(&torrent).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["1", "0", "t/y"]),
        "{text}"
    );
}

#[test]
fn a_selective_download_resumes_and_grows() {
    if !in_netns() {
        eprintln!("SKIPPED: needs scripts/netns-run (a private network namespace)");
        return;
    }
    let s = Setup::new();
    let peer = s.seed_addr();
    let t = s.torrent.to_str().unwrap().to_string();
    let (st, err, _) = s.download(&t, &["--select", "1,3", "--peer", &peer]);
    ok(st, &err);

    // d lost: its piece (8) is fetched again, b's pieces are resumed.
    std::fs::remove_file(s.path(3)).unwrap();
    let (st, err, json) = s.download(&t, &["--select", "1,3", "--peer", &peer]);
    ok(st, &err);
    s.assert_file(1);
    s.assert_file(3);
    s.assert_present(&[1, 2, 3, 4]);
    let j = json.expect("summary written");
    assert_eq!(j["resumed"].as_u64(), Some(2 * PIECE as u64), "{j}");
    assert_eq!(j["downloaded"].as_u64(), Some(PIECE as u64), "{j}");

    // Adding e (pieces 8-9): 8 is on disk, 9 is fetched and brings f.
    let (st, err, json) = s.download(&t, &["--select", "1,3-4", "--peer", &peer]);
    ok(st, &err);
    for i in [1, 3, 4] {
        s.assert_file(i);
    }
    s.assert_present(&[1, 2, 3, 4, 5]);
    let j = json.expect("summary written");
    assert_eq!(j["total_bytes"].as_u64(), Some(4 * PIECE as u64), "{j}");
    assert_eq!(j["resumed"].as_u64(), Some(3 * PIECE as u64), "{j}");
    assert_eq!(j["downloaded"].as_u64(), Some(PIECE as u64), "{j}");
    assert!(!s.path(0).exists() && !s.path(6).exists() && !Path::new(&s.path(7)).exists());
}
