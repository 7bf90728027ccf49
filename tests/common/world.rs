//! A test's little world of real clients on loopback: opentracker,
//! seeders that print READY, torrents made by mktorrent.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

pub const LT: &str = "libtorrent";

/// One test's little world: a temp dir, a block of loopback addresses and
/// an opentracker.
pub struct World {
    pub dir: tempfile::TempDir,
    pub ip: Box<dyn Fn(u8) -> Ipv4Addr>,
    pub procs: Vec<Proc>,
}

impl World {
    pub fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
            ip: Box::new(loopback_block()),
            procs: Vec::new(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn announce(&self) -> String {
        format!("http://{}:6969/announce", (self.ip)(1))
    }

    /// Starts opentracker with `hashes` whitelisted; waits until it listens.
    pub fn tracker(&mut self, hashes: &[String]) {
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
    pub fn seeder(&mut self, name: &str, cmd: &mut Command) {
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

    pub fn lt_seed(&mut self, torrent: &Path, data: &Path, host: u8, extra: &[&str]) {
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

    pub fn aria2_seed(&mut self, torrent: &Path, data: &Path, host: u8, extra: &[&str]) {
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

    pub fn transmission_seed(&mut self, torrent: &Path, data: &Path, host: u8, extra: &[&str]) {
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
    pub fn xorrent(
        &self,
        torrent: &Path,
        host: u8,
        limit: Duration,
    ) -> (PathBuf, serde_json::Value) {
        let out = self.path(&format!("xorrent-out-{host}"));
        let summary = self.path(&format!("summary-{host}.json"));
        let mut p = Proc::spawn(
            "xorrent",
            xorrent_cmd()
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

pub fn info_hash(torrent: &Path) -> String {
    xorrent::metainfo::Torrent::from_file(torrent)
        .unwrap()
        .info_hash
        .to_hex()
}

pub fn mktorrent(src: &Path, out: &Path, piece_log2: u32, announce: &str) {
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
pub fn single_file(w: &World, name: &str, len: usize, piece_log2: u32, seed: u64) -> PathBuf {
    let data = w.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(name), random_bytes(len, seed)).unwrap();
    let t = w.path(&format!("{name}.torrent"));
    mktorrent(&data.join(name), &t, piece_log2, &w.announce());
    t
}

/// `data/tree/...`: 34 files in nested directories, 5 of them empty, sizes
/// chosen so many pieces span several files.
pub fn multi_file(w: &World, scale: usize, piece_log2: u32) -> PathBuf {
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
pub fn assert_same_tree(a: &Path, b: &Path) {
    pub fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
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
    assert_eq!(
        fa,
        fb,
        "file lists differ between {} and {}",
        a.display(),
        b.display()
    );
    for f in &fa {
        assert_eq!(
            sha1_file(&a.join(f)),
            sha1_file(&b.join(f)),
            "{} differs",
            f.display()
        );
    }
}

/// Like [`mktorrent`] with several announce URLs: mktorrent makes each `-a`
/// its own tier (BEP-12), in the order given.
pub fn mktorrent_tiers(src: &Path, out: &Path, piece_log2: u32, tiers: &[&str]) {
    let mut cmd = Command::new("mktorrent");
    cmd.args(["-t", "1", "-l", &piece_log2.to_string()]);
    for url in tiers {
        cmd.args(["-a", url]);
    }
    let st = cmd
        .arg("-o")
        .arg(out)
        .arg(src)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "mktorrent failed");
}

/// A torrent's trackers as xorrent reads them, tier by tier.
pub fn tiers_of(torrent: &Path) -> Vec<Vec<String>> {
    xorrent::metainfo::Torrent::from_file(torrent)
        .unwrap()
        .trackers
}

impl World {
    /// Starts `xorrent tracker` serving HTTP and UDP on `host`:`port`,
    /// waits until it prints both announce URLs, and returns them
    /// (http, udp). It stops with the world.
    pub fn xorrent_tracker(&mut self, host: u8, port: u16, extra: &[&str]) -> (String, String) {
        let addr = format!("{}:{port}", (self.ip)(host));
        let mut p = Proc::spawn(
            "xorrent tracker",
            xorrent_cmd()
                .args(["tracker", "--http", &addr, "--udp", &addr])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let err = Lines::follow(p.child.stderr.take().unwrap());
        let mut urls = (String::new(), String::new());
        for _ in 0..2 {
            let line = err
                .wait_for(Duration::from_secs(10), |l| l.starts_with("tracker: "))
                .unwrap_or_else(|| panic!("xorrent tracker did not start:\n{}", err.text()));
            let url = line["tracker: ".len()..].trim().to_string();
            if url.starts_with("http://") {
                urls.0 = url;
            } else {
                urls.1 = url;
            }
        }
        assert_eq!(urls.0, format!("http://{addr}/announce"));
        assert_eq!(urls.1, format!("udp://{addr}/announce"));
        self.procs.push(p);
        urls
    }

    /// `xorrent scrape --json` sent from `host`, asking `trackers` (all the
    /// torrent's own when empty) about `target` (a .torrent or a hex
    /// info-hash). Panics unless it exits 0.
    pub fn scrape(&self, target: &str, trackers: &[&str], host: u8) -> serde_json::Value {
        let mut cmd = xorrent_cmd();
        cmd.args(["scrape", target, "--json", "--tracker-timeout", "3"])
            .args(["--bind", &(self.ip)(host).to_string()]);
        for t in trackers {
            cmd.args(["-t", t]);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "xorrent scrape failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs `xorrent download` bound to `host` with `extra` flags and
    /// `XORRENT_LOG=xorrent=debug` (`announced tracker=URL` at info, failed
    /// `completed`/`stopped` announces at debug); returns its output
    /// directory, summary and stderr lines. Panics with the log if it fails.
    pub fn xorrent_logged(
        &self,
        torrent: &Path,
        host: u8,
        limit: Duration,
        extra: &[&str],
    ) -> (PathBuf, serde_json::Value, Vec<String>) {
        let out = self.path(&format!("xorrent-out-{host}"));
        let summary = self.path(&format!("summary-{host}.json"));
        let mut p = Proc::spawn(
            "xorrent",
            xorrent_cmd()
                .env("XORRENT_LOG", "xorrent=debug")
                .arg("download")
                .arg(torrent)
                .arg("-o")
                .arg(&out)
                .args(["--bind", &(self.ip)(host).to_string(), "--port", "6881"])
                .args(["--status-interval", "2"])
                .arg("--summary-json")
                .arg(&summary)
                .args(extra)
                .stderr(Stdio::piped()),
        );
        let err = Lines::follow(p.child.stderr.take().unwrap());
        let st = p.wait_timeout(limit);
        let log = err.all_after_close(Duration::from_secs(5));
        assert!(
            st.success(),
            "xorrent exited with {st}:\n{}",
            log.join("\n")
        );
        let v = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        (out, v, log)
    }

    /// Starts `xorrent seed` of `data` on `host`:6881 with
    /// `XORRENT_LOG=xorrent=info` and waits until a tracker has answered
    /// its first announce (the `announced` log line). Returns the process
    /// and its stderr.
    pub fn xorrent_seed_announced(
        &self,
        torrent: &Path,
        data: &Path,
        host: u8,
        extra: &[&str],
    ) -> (Proc, Lines) {
        let mut p = Proc::spawn(
            "xorrent seed",
            xorrent_cmd()
                .env("XORRENT_LOG", "xorrent=info")
                .arg("seed")
                .arg(torrent)
                .arg(data)
                .args(["--bind", &(self.ip)(host).to_string(), "--port", "6881"])
                .args(["--status-interval", "2"])
                .args(extra)
                .stderr(Stdio::piped()),
        );
        let err = Lines::follow(p.child.stderr.take().unwrap());
        if err
            .wait_for(Duration::from_secs(60), |l| l.contains(" announced "))
            .is_none()
        {
            panic!("xorrent seed never announced:\n{}", err.text());
        }
        (p, err)
    }

    /// Starts `tests/interop/aria2_leech.sh` (aria2 downloading `torrent`
    /// into `out` from `host`:6881); returns it and its stdout, where it
    /// lists the announces it sent once aria2 has exited.
    pub fn spawn_aria2_leech(
        &self,
        torrent: &Path,
        out: &Path,
        host: u8,
        extra: &[&str],
    ) -> (Proc, Lines) {
        let work = self.path(&format!("aria2-leech-{host}"));
        std::fs::create_dir_all(&work).unwrap();
        let mut p = Proc::spawn(
            "aria2 leecher",
            Command::new("bash")
                .arg(repo().join("tests/interop/aria2_leech.sh"))
                .arg(torrent)
                .arg(out)
                .arg((self.ip)(host).to_string())
                .arg("6881")
                .arg(&work)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let lines = Lines::follow(p.child.stdout.take().unwrap());
        (p, lines)
    }

    /// Starts `tests/interop/lt_tracked_leech.py` (libtorrent downloading
    /// `torrent` into `out` from `host`:6881, printing each announce it
    /// sends and DONE once the tracker has its `completed`; it stops on
    /// SIGTERM after sending `stopped`). Returns it and its stdout.
    pub fn spawn_lt_tracked_leech(&self, torrent: &Path, out: &Path, host: u8) -> (Proc, Lines) {
        let listen = format!("{}:6881", (self.ip)(host));
        let mut p = Proc::spawn(
            "libtorrent leecher",
            Command::new("/usr/bin/python3")
                .arg(repo().join("tests/interop/lt_tracked_leech.py"))
                .args(["--listen", &listen, "--timeout", "120", "--torrent"])
                .arg(torrent)
                .arg("--save")
                .arg(out)
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let lines = Lines::follow(p.child.stdout.take().unwrap());
        (p, lines)
    }
}

/// A network of libtorrent DHT sessions in one process
/// (`tests/interop/lt_dht.py`): its stdout lines (`NODE`, `READY`, `SEEN`,
/// `ANNOUNCED`, `PEERS`, `DONE`) and its log. It stops when dropped.
pub struct LtDht {
    /// Held so the node ends with the test.
    _proc: Proc,
    pub out: Lines,
    pub err: Lines,
    /// Every session's DHT node (UDP) and peer (TCP) address, in order.
    pub nodes: Vec<SocketAddr>,
}

impl LtDht {
    /// The next stdout line for which `want` holds; panics with the
    /// helper's output if none comes within `limit`.
    pub fn wait_for(&self, limit: Duration, what: &str, want: impl Fn(&str) -> bool) -> String {
        self.out.wait_for(limit, want).unwrap_or_else(|| {
            panic!(
                "lt_dht.py: no {what} within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                self.out.text(),
                self.err.text()
            )
        })
    }

    /// Both of the helper's pipes so far, for assertion messages.
    pub fn text(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.out.text(), self.err.text())
    }
}

/// A standalone `xorrent dht node`, its id and its stderr.
pub struct XorrentDhtNode {
    /// Held so the node ends with the test.
    _proc: Proc,
    pub err: Lines,
    pub addr: SocketAddr,
    pub id: String,
}

impl World {
    /// Starts `count` libtorrent DHT sessions on hosts `first`,
    /// `first + 1`, ... (port 6881), each knowing all the others, with
    /// `extra` flags of `lt_dht.py`; waits until every routing table is
    /// populated (READY).
    pub fn lt_dht<S: AsRef<std::ffi::OsStr>>(&self, first: u8, count: u8, extra: &[S]) -> LtDht {
        let nodes: Vec<SocketAddr> = (0..count)
            .map(|i| SocketAddr::new((self.ip)(first + i).into(), 6881))
            .collect();
        let mut p = Proc::spawn(
            "lt_dht.py",
            Command::new("/usr/bin/python3")
                .arg(repo().join("tests/interop/lt_dht.py"))
                .arg("--listen")
                .arg(nodes[0].to_string())
                .arg("--count")
                .arg(count.to_string())
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let out = Lines::follow(p.child.stdout.take().unwrap());
        let err = Lines::follow(p.child.stderr.take().unwrap());
        let net = LtDht {
            _proc: p,
            out,
            err,
            nodes,
        };
        net.wait_for(Duration::from_secs(30), "READY", |l| l.starts_with("READY"));
        net
    }

    /// Starts `xorrent dht node` on `host`:6881 joining through
    /// `bootstrap` (never the public routers), and waits for its
    /// `dht node up: IP:PORT id HEX` line.
    pub fn xorrent_dht_node(&self, host: u8, bootstrap: &[SocketAddr]) -> XorrentDhtNode {
        let mut cmd = xorrent_cmd();
        cmd.env("XORRENT_NO_DHT", "0")
            .args(["dht", "node", "--bind", &(self.ip)(host).to_string()])
            .args(["--port", "6881", "--stats-interval", "1"]);
        assert!(
            !bootstrap.is_empty(),
            "a test node needs a loopback bootstrap"
        );
        for b in bootstrap {
            cmd.args(["--dht-bootstrap", &b.to_string()]);
        }
        let mut p = Proc::spawn(
            "xorrent dht node",
            cmd.stdout(Stdio::null()).stderr(Stdio::piped()),
        );
        let err = Lines::follow(p.child.stderr.take().unwrap());
        let up = err
            .wait_for(Duration::from_secs(10), |l| l.starts_with("dht node up: "))
            .unwrap_or_else(|| panic!("xorrent dht node did not start:\n{}", err.text()));
        // "dht node up: 127.0.0.2:6881 id 0123..."
        let mut words = up["dht node up: ".len()..].split_whitespace();
        let addr: SocketAddr = words.next().unwrap().parse().unwrap();
        assert_eq!(words.next(), Some("id"), "{up}");
        let id = words.next().unwrap().to_string();
        assert_eq!(addr, SocketAddr::new((self.ip)(host).into(), 6881));
        XorrentDhtNode {
            _proc: p,
            err,
            addr,
            id,
        }
    }
}
