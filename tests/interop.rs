//! `xorrent download` against real, independent seeders (libtorrent, aria2,
//! Transmission) found through a real tracker (opentracker), each on its
//! own loopback address. Torrents are made by mktorrent. Results are
//! compared byte for byte. Needs root and the clients: see `interop_ready`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const LT: &str = "libtorrent";

/// One test's little world: a temp dir, a block of loopback addresses and
/// an opentracker.
struct World {
    dir: tempfile::TempDir,
    ip: Box<dyn Fn(u8) -> Ipv4Addr>,
    procs: Vec<Proc>,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            ip: Box::new(loopback_block()),
            procs: Vec::new(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn announce(&self) -> String {
        format!("http://{}:6969/announce", (self.ip)(1))
    }

    /// Starts opentracker with `hashes` whitelisted; waits until it listens.
    fn tracker(&mut self, hashes: &[String]) {
        let root = self.path("ot");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("whitelist"), hashes.join("\n") + "\n").unwrap();
        let chmod = |p: &Path, m: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        chmod(self.dir.path(), 0o755);
        chmod(&root, 0o755);
        chmod(&root.join("whitelist"), 0o644);
        let ip = (self.ip)(1).to_string();
        let p = Proc::spawn(
            "opentracker",
            Command::new("opentracker")
                .args([
                    "-i",
                    &ip,
                    "-p",
                    "6969",
                    "-P",
                    "6969",
                    "-w",
                    "/whitelist",
                    "-d",
                ])
                .arg(&root)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.procs.push(p);
        let addr = SocketAddr::new((self.ip)(1).into(), 6969);
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "opentracker did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a helper that prints READY when seeding; waits for it.
    fn seeder(&mut self, name: &str, cmd: &mut Command) {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut p = Proc::spawn(name, cmd);
        let out = p.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.trim() == "READY" {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            panic!("{name} seeder never became ready");
        }
        self.procs.push(p);
    }

    fn lt_seed(&mut self, torrent: &Path, data: &Path, host: u8, extra: &[&str]) {
        let listen = format!("{}:6881", (self.ip)(host));
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(repo().join("tests/interop/lt_peer.py"))
            .args(["--listen", &listen, "--mode", "seed", "--torrent"])
            .arg(torrent)
            .arg("--save")
            .arg(data)
            .args(extra);
        self.seeder("libtorrent", &mut cmd);
    }

    fn aria2_seed(&mut self, torrent: &Path, data: &Path, host: u8, extra: &[&str]) {
        let work = self.path(&format!("aria2-{host}"));
        std::fs::create_dir_all(&work).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("tests/interop/aria2_seed.sh"))
            .arg(torrent)
            .arg(data)
            .arg((self.ip)(host).to_string())
            .arg("6881")
            .arg(&work)
            .args(extra);
        self.seeder("aria2", &mut cmd);
    }

    fn transmission_seed(&mut self, torrent: &Path, data: &Path, host: u8, extra: &[&str]) {
        let cfg = self.path(&format!("transmission-{host}"));
        std::fs::create_dir_all(&cfg).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("tests/interop/transmission_seed.sh"))
            .arg(torrent)
            .arg(data)
            .arg((self.ip)(host).to_string())
            .arg("6881")
            .arg(&cfg)
            .args(extra);
        self.seeder("transmission", &mut cmd);
    }

    /// Runs `xorrent download` bound to `host`; returns its summary.
    fn xorrent(&self, torrent: &Path, host: u8, limit: Duration) -> (PathBuf, serde_json::Value) {
        let out = self.path(&format!("xorrent-out-{host}"));
        let summary = self.path(&format!("summary-{host}.json"));
        let mut p = Proc::spawn(
            "xorrent",
            Command::new(xorrent_bin())
                .arg("download")
                .arg(torrent)
                .arg("-o")
                .arg(&out)
                .args(["--bind", &(self.ip)(host).to_string(), "--port", "6881"])
                .args(["--status-interval", "2"])
                .arg("--summary-json")
                .arg(&summary),
        );
        let st = p.wait_timeout(limit);
        assert!(st.success(), "xorrent exited with {st}");
        let v = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        (out, v)
    }
}

fn info_hash(torrent: &Path) -> String {
    xorrent::metainfo::Torrent::from_file(torrent)
        .unwrap()
        .info_hash
        .to_hex()
}

fn mktorrent(src: &Path, out: &Path, piece_log2: u32, announce: &str) {
    let st = Command::new("mktorrent")
        .args([
            "-t",
            "1",
            "-l",
            &piece_log2.to_string(),
            "-a",
            announce,
            "-o",
        ])
        .arg(out)
        .arg(src)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mktorrent failed");
}

/// A random single file `data/<name>` and its torrent.
fn single_file(w: &World, name: &str, len: usize, piece_log2: u32, seed: u64) -> PathBuf {
    let data = w.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(name), random_bytes(len, seed)).unwrap();
    let t = w.path(&format!("{name}.torrent"));
    mktorrent(&data.join(name), &t, piece_log2, &w.announce());
    t
}

/// `data/tree/...`: 34 files in nested directories, 5 of them empty, sizes
/// chosen so many pieces span several files.
fn multi_file(w: &World, scale: usize, piece_log2: u32) -> PathBuf {
    let root = w.path("data/tree");
    let sizes = [
        0usize, 1, 100, 16_383, 16_384, 16_385, 70_000, 0, 250_000, 3, 65_536, 131_071,
    ];
    for i in 0..34 {
        let dir = match i % 4 {
            0 => root.clone(),
            1 => root.join("a"),
            2 => root.join("a/b/c"),
            _ => root.join(format!("d{}/e", i % 3)),
        };
        std::fs::create_dir_all(&dir).unwrap();
        let len =
            sizes[i % sizes.len()] * scale / 4 + if sizes[i % sizes.len()] == 0 { 0 } else { i };
        std::fs::write(
            dir.join(format!("file{i:02}.bin")),
            random_bytes(len, 100 + i as u64),
        )
        .unwrap();
    }
    let t = w.path("tree.torrent");
    mktorrent(&root, &t, piece_log2, &w.announce());
    t
}

/// Every file under `a` exists under `b` with the same bytes, and vice versa.
fn assert_same_tree(a: &Path, b: &Path) {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let (mut fa, mut fb) = (Vec::new(), Vec::new());
    walk(a, a, &mut fa);
    walk(b, b, &mut fb);
    fa.sort();
    fb.sort();
    assert_eq!(fa, fb, "file lists differ");
    for f in &fa {
        assert_eq!(
            sha1_file(&a.join(f)),
            sha1_file(&b.join(f)),
            "{} differs",
            f.display()
        );
    }
}

fn single_from(kind: &str, len: usize) {
    let needs: &[&str] = match kind {
        "libtorrent" => &[LT, "opentracker", "mktorrent"],
        "aria2" => &["aria2c", "opentracker", "mktorrent"],
        _ => &[
            "transmission-daemon",
            "transmission-remote",
            "opentracker",
            "mktorrent",
        ],
    };
    if !interop_ready(&format!("single_file_from_{kind}"), needs) {
        return;
    }
    let mut w = World::new();
    let t = single_file(&w, "big.bin", len, 20, 7);
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    match kind {
        "libtorrent" => w.lt_seed(&t, &data, 2, &[]),
        "aria2" => w.aria2_seed(&t, &data, 2, &[]),
        _ => w.transmission_seed(&t, &data, 2, &[]),
    }
    let (out, summary) = w.xorrent(&t, 9, Duration::from_secs(240));
    assert_eq!(
        sha1_file(&out.join("big.bin")),
        sha1_file(&data.join("big.bin"))
    );
    assert_eq!(summary["downloaded"].as_u64().unwrap(), len as u64);
}

fn multi_from(kind: &str, scale: usize) {
    let needs: &[&str] = match kind {
        "libtorrent" => &[LT, "opentracker", "mktorrent"],
        "aria2" => &["aria2c", "opentracker", "mktorrent"],
        _ => &[
            "transmission-daemon",
            "transmission-remote",
            "opentracker",
            "mktorrent",
        ],
    };
    if !interop_ready(&format!("multi_file_from_{kind}"), needs) {
        return;
    }
    let mut w = World::new();
    let t = multi_file(&w, scale, 16);
    let parsed = xorrent::metainfo::Torrent::from_file(&t).unwrap();
    assert!(parsed.files.len() >= 30);
    assert!(parsed.files.iter().filter(|f| f.length == 0).count() >= 4);
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    match kind {
        "libtorrent" => w.lt_seed(&t, &data, 2, &[]),
        "aria2" => w.aria2_seed(&t, &data, 2, &[]),
        _ => w.transmission_seed(&t, &data, 2, &[]),
    }
    let (out, _) = w.xorrent(&t, 9, Duration::from_secs(240));
    assert_same_tree(&data.join("tree"), &out.join("tree"));
}

#[test]
fn single_64_mib_file_from_a_libtorrent_seeder() {
    single_from("libtorrent", 64 * 1024 * 1024 + 12_345);
}

#[test]
fn single_64_mib_file_from_an_aria2_seeder() {
    single_from("aria2", 64 * 1024 * 1024 + 777);
}

#[test]
fn single_file_from_a_transmission_seeder() {
    // Transmission moves only tens of MiB/s on loopback: a small payload.
    single_from("transmission", 6 * 1024 * 1024 + 99);
}

#[test]
fn multi_file_torrent_from_a_libtorrent_seeder() {
    multi_from("libtorrent", 16);
}

#[test]
fn multi_file_torrent_from_an_aria2_seeder() {
    multi_from("aria2", 16);
}

#[test]
fn multi_file_torrent_from_a_transmission_seeder() {
    multi_from("transmission", 4);
}

/// libtorrent, aria2 and Transmission seed at once, each capped so that
/// none can finish alone before the others join; every one contributes.
#[test]
fn three_different_seeders_at_once_each_contribute() {
    if !interop_ready(
        "three_different_seeders_at_once_each_contribute",
        &[
            LT,
            "aria2c",
            "transmission-daemon",
            "transmission-remote",
            "opentracker",
            "mktorrent",
        ],
    ) {
        return;
    }
    let mut w = World::new();
    let len = 40 * 1024 * 1024;
    let t = single_file(&w, "big.bin", len, 18, 11);
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    w.lt_seed(&t, &data, 2, &["--upload-limit", "1500000"]);
    w.aria2_seed(&t, &data, 3, &["--upload-limit", "1500000"]);
    w.transmission_seed(&t, &data, 4, &["--upload-limit", "1500"]);
    let (out, summary) = w.xorrent(&t, 9, Duration::from_secs(300));
    assert_eq!(
        sha1_file(&out.join("big.bin")),
        sha1_file(&data.join("big.bin"))
    );
    let peers = summary["peers"].as_array().unwrap();
    for host in [2, 3, 4] {
        let ip = (w.ip)(host).to_string();
        let bytes: u64 = peers
            .iter()
            .filter(|p| p["addr"].as_str().unwrap().starts_with(&format!("{ip}:")))
            .map(|p| p["bytes"].as_u64().unwrap())
            .sum();
        assert!(bytes > 0, "seeder {ip} contributed nothing: {summary}");
    }
}

/// SIGKILL halfway, then run again: the file is right and the second run
/// fetches only what was not yet verified and saved.
#[test]
fn resumes_after_sigkill_fetching_only_the_missing_pieces() {
    if !interop_ready("resumes_after_sigkill", &[LT, "mktorrent"]) {
        return;
    }
    let mut w = World::new();
    let len = 48 * 1024 * 1024;
    let t = single_file(&w, "big.bin", len, 18, 21);
    let data = w.path("data");
    w.lt_seed(&t, &data, 2, &["--no-tracker", "--upload-limit", "6000000"]);
    let seed = format!("{}:6881", (w.ip)(2));
    let out = w.path("out");
    let run = |summary: &Path| {
        let mut c = Command::new(xorrent_bin());
        c.arg("download")
            .arg(&t)
            .arg("-o")
            .arg(&out)
            .args([
                "--bind",
                &(w.ip)(9).to_string(),
                "--port",
                "6881",
                "--peer",
                &seed,
            ])
            .args(["--status-interval", "1", "--summary-json"])
            .arg(summary);
        c
    };
    let mut first = Proc::spawn("xorrent", run(&w.path("s1.json")).stderr(Stdio::piped()));
    let err = first.child.stderr.take().unwrap();
    let mut reached = 0.0f64;
    for line in BufReader::new(err).lines().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("downloading: ") {
            reached = rest.split('%').next().unwrap().trim().parse().unwrap();
            if reached >= 40.0 {
                break;
            }
        }
    }
    assert!(reached >= 40.0, "first run never got to 40%");
    unsafe_kill(first.pid(), 9);
    let st = first.wait_timeout(Duration::from_secs(10));
    assert!(!st.success());
    assert!(!w.path("s1.json").exists(), "killed before finishing");

    let mut second = Proc::spawn("xorrent", run(&w.path("s2.json")).stderr(Stdio::null()));
    assert!(second.wait_timeout(Duration::from_secs(120)).success());
    assert_eq!(
        sha1_file(&out.join("big.bin")),
        sha1_file(&data.join("big.bin"))
    );
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("s2.json")).unwrap()).unwrap();
    let resumed = s["resumed"].as_u64().unwrap();
    let received = s["received"].as_u64().unwrap();
    // Everything verified before the kill survived it (the status line
    // rounds to 0.1 %).
    assert!(
        resumed as f64 >= (reached - 0.1) / 100.0 * len as f64,
        "{s}"
    );
    // The second run fetched only the missing bytes: pieces that were in
    // flight at the kill are among them, nothing verified was fetched again.
    assert_eq!(received, len as u64 - resumed, "{s}");
    assert_eq!(
        s["downloaded"].as_u64().unwrap(),
        len as u64 - resumed,
        "{s}"
    );
}
