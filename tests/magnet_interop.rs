//! Magnet links against libtorrent (and Transmission and aria2), on loopback: BEP-9 metadata exchange
//! over the BEP-10 extension protocol, in both directions, and BEP-11 peer
//! exchange, in both directions.
//!
//! - `xorrent download MAGNET` fetches the info dictionary and then the
//!   data from a libtorrent seeder found through a `tr=` tracker
//!   (`xorrent tracker`, HTTP and UDP), through the DHT alone (20
//!   libtorrent nodes, a magnet with neither `tr=` nor `x.pe=`), and
//!   through `x.pe=` alone; `--save-torrent` writes a .torrent with the
//!   magnet's info-hash.
//! - A libtorrent leecher given only a magnet link whose `x.pe=` names an
//!   `xorrent seed` gets the info dictionary (three metadata pieces) and
//!   the data from xorrent.
//! - From a Transmission and an aria2 seeder at once, the connections
//!   that fetched the metadata go on to carry the data.
//! - PEX: xorrent, knowing only libtorrent seeder A, learns seeder B from
//!   A's ut_pex messages and downloads from B; a libtorrent leecher that
//!   knows only `xorrent seed` learns another peer from xorrent's.
//!
//! Every file is compared by SHA-1 with its source. Every client has its
//! own address in the test's loopback block (`World::new`), inside a
//! private network namespace; DHT (except in the DHT test, with loopback
//! bootstrap nodes only), LSD, UPnP and NAT-PMP are off everywhere, PEX
//! wherever a test is not about it.
//! Helpers: `tests/interop/lt_peer.py` (seeder, `--pex`,
//! `--report-peers`), `tests/interop/lt_magnet.py` (magnet leecher),
//! `tests/interop/lt_dht.py`; see `tests/interop/README.md` for what
//! libtorrent needs and how fast its PEX is. Needs root and
//! python3-libtorrent: see `interop_ready`.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::*;
use crate::common::*;

fn at(w: &World, host: u8) -> SocketAddr {
    SocketAddr::new((w.ip)(host).into(), 6881)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `magnet:?xt=urn:btih:HEX[&dn=NAME][&tr=URL]...[&x.pe=IP:PORT]...`
fn magnet(ih: &str, name: Option<&str>, trackers: &[&str], peers: &[SocketAddr]) -> String {
    let mut m = format!("magnet:?xt=urn:btih:{ih}");
    if let Some(n) = name {
        m += &format!("&dn={}", pct(n));
    }
    for t in trackers {
        m += &format!("&tr={}", pct(t));
    }
    for p in peers {
        m += &format!("&x.pe={p}");
    }
    m
}

/// Content and its torrent: one file `data/<name>` when `multi` is false
/// (then `files` has one entry), else `data/<name>/<path...>`. Returns the
/// torrent and the data dir (the parent of `<name>`).
fn content(
    w: &World,
    name: &str,
    files: &[(Vec<&str>, Vec<u8>)],
    multi: bool,
    piece_len: usize,
    announce: Option<&str>,
) -> (PathBuf, PathBuf) {
    let data = w.path("data");
    for (path, bytes) in files {
        let mut p = data.join(name);
        if multi {
            for e in path {
                p.push(e);
            }
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    let t = make_torrent(name, files, piece_len, announce, multi);
    let torrent = w.path(&format!("{name}.torrent"));
    std::fs::write(&torrent, t).unwrap();
    (torrent, data)
}

/// One random file of `len` bytes, 64 KiB pieces.
fn single(
    w: &World,
    name: &str,
    len: usize,
    seed: u64,
    announce: Option<&str>,
) -> (PathBuf, PathBuf) {
    let files = [(vec![name], random_bytes(len, seed))];
    content(w, name, &files, false, 64 * 1024, announce)
}

/// A small tree (about 3.8 MB, 64 KiB pieces spanning files): nested
/// directories, an empty file, a one-byte file.
fn tree(w: &World, name: &str, announce: Option<&str>) -> (PathBuf, PathBuf) {
    let files = vec![
        (vec!["a.bin"], random_bytes(1_000_003, 41)),
        (vec!["empty"], Vec::new()),
        (vec!["sub", "one.bin"], random_bytes(1, 42)),
        (vec!["sub", "deeper", "b.bin"], random_bytes(2_100_000, 43)),
        (vec!["sub", "c.bin"], random_bytes(16_385, 44)),
        (vec!["z.bin"], random_bytes(700_000, 45)),
    ];
    content(w, name, &files, true, 64 * 1024, announce)
}

/// 500 small files with long paths (about 2.3 MB, 32 KiB pieces): an info
/// dictionary of more than two 16 KiB metadata pieces, so ut_metadata
/// needs three requests and a short last piece.
fn many_files(w: &World, name: &str) -> (PathBuf, PathBuf) {
    let names: Vec<(String, String)> = (0..500)
        .map(|i| {
            (
                format!("directory-{:02}", i % 17),
                format!("a-file-with-a-rather-long-name-{i:04}.bin"),
            )
        })
        .collect();
    let files: Vec<(Vec<&str>, Vec<u8>)> = names
        .iter()
        .enumerate()
        .map(|(i, (d, f))| {
            (
                vec![d.as_str(), f.as_str()],
                random_bytes((i * 7919) % 9000, 1000 + i as u64),
            )
        })
        .collect();
    let (t, data) = content(w, name, &files, true, 32 * 1024, None);
    let info = info_dict_len(&t);
    assert!(
        info > 2 * 16384 && info < 3 * 16384,
        "info dict {info} bytes"
    );
    (t, data)
}

/// The length of a torrent's bencoded info dictionary (what ut_metadata
/// moves): what follows `4:info` up to the torrent's closing `e`.
fn info_dict_len(torrent: &Path) -> usize {
    let b = std::fs::read(torrent).unwrap();
    let at = b.windows(6).position(|w| w == b"4:info").unwrap() + 6;
    // make_torrent puts `info` last
    b.len() - at - 1
}

/// A helper process with both pipes followed.
struct Helper {
    name: String,
    proc: Proc,
    out: Lines,
    err: Lines,
}

impl Helper {
    fn spawn(name: &str, cmd: &mut Command) -> Helper {
        let mut proc = Proc::spawn(name, cmd.stdout(Stdio::piped()).stderr(Stdio::piped()));
        let out = Lines::follow(proc.child.stdout.take().unwrap());
        let err = Lines::follow(proc.child.stderr.take().unwrap());
        Helper {
            name: name.to_string(),
            proc,
            out,
            err,
        }
    }

    /// The next stdout line for which `want` holds; panics with this
    /// helper's output and `others`' if none comes within `limit`.
    fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        others: &[&dyn Logged],
        want: impl Fn(&str) -> bool,
    ) -> String {
        self.out.wait_for(limit, want).unwrap_or_else(|| {
            panic!(
                "{}: no {what} within {limit:?}\n{}{}",
                self.name,
                self.text(),
                logs(others)
            )
        })
    }

    fn text(&self) -> String {
        format!(
            "--- {} ({}) stdout:\n{}\n--- {} stderr:\n{}\n",
            self.name,
            self.proc.exit_note().unwrap_or_else(|| "running".into()),
            self.out.text(),
            self.name,
            self.err.text()
        )
    }
}

/// Something whose output goes into a failure message.
trait Logged {
    fn log_text(&self) -> String;
}

impl Logged for Helper {
    fn log_text(&self) -> String {
        self.text()
    }
}

impl Logged for LtDht {
    fn log_text(&self) -> String {
        format!("--- lt_dht.py:\n{}\n", self.text())
    }
}

fn logs(others: &[&dyn Logged]) -> String {
    others.iter().map(|h| h.log_text()).collect()
}

/// `lt_peer.py` on `host`:6881 (stdout and stderr followed); a seeder is
/// returned once it prints READY.
fn lt_peer(w: &World, host: u8, torrent: &Path, data: &Path, mode: &str, extra: &[&str]) -> Helper {
    let h = Helper::spawn(
        &format!("lt_peer.py {mode} {}", (w.ip)(host)),
        Command::new("/usr/bin/python3")
            .arg(repo().join("tests/interop/lt_peer.py"))
            .args(["--listen", &at(w, host).to_string(), "--mode", mode])
            .args(["--timeout", "300", "--torrent"])
            .arg(torrent)
            .arg("--save")
            .arg(data)
            .args(extra),
    );
    if mode == "seed" {
        h.wait_for(Duration::from_secs(60), "READY", &[], |l| l == "READY");
    }
    h
}

/// `lt_magnet.py` on `host`:6881 downloading `magnet` into `out`.
fn lt_magnet(w: &World, host: u8, magnet: &str, out: &Path, extra: &[&str]) -> Helper {
    Helper::spawn(
        &format!("lt_magnet.py {}", (w.ip)(host)),
        Command::new("/usr/bin/python3")
            .arg(repo().join("tests/interop/lt_magnet.py"))
            .args(["--listen", &at(w, host).to_string()])
            .args(["--magnet", magnet, "--timeout", "150", "--save"])
            .arg(out)
            .args(extra),
    )
}

/// `xorrent seed` on `host`:6881 at info log level; returns once it
/// accepts TCP connections.
fn xorrent_seed(w: &World, host: u8, torrent: &Path, data: &Path, extra: &[&str]) -> Helper {
    let mut h = Helper::spawn(
        &format!("xorrent seed {}", (w.ip)(host)),
        xorrent_cmd()
            .env("XORRENT_LOG", "xorrent=debug")
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .args(["--bind", &(w.ip)(host).to_string(), "--port", "6881"])
            .args(["--status-interval", "5"])
            .args(extra),
    );
    let addr = at(w, host);
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            panic!("xorrent seed never listened on {addr}\n{}", h.text());
        }
        if let Ok(Some(st)) = h.proc.child.try_wait() {
            panic!("xorrent seed exited with {st}\n{}", h.text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    h
}

/// What `xorrent download MAGNET` left behind.
struct Fetched {
    out: PathBuf,
    summary: serde_json::Value,
    log: String,
    secs: f64,
}

impl Fetched {
    /// Payload bytes the summary credits to `peer`.
    fn bytes_from(&self, peer: SocketAddr) -> u64 {
        self.bytes_where(|a| a == peer)
    }

    /// Payload bytes from any connection with `peer`'s IP: a seeder that
    /// also dialled us sends from an ephemeral port.
    fn bytes_from_host(&self, peer: SocketAddr) -> u64 {
        self.bytes_where(|a| a.ip() == peer.ip())
    }

    fn bytes_where(&self, want: impl Fn(SocketAddr) -> bool) -> u64 {
        self.summary["peers"]
            .as_array()
            .unwrap_or_else(|| panic!("summary without peers: {}", self.summary))
            .iter()
            .filter(|p| {
                p["addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .is_some_and(&want)
            })
            .map(|p| p["bytes"].as_u64().unwrap())
            .sum()
    }
}

/// Runs `xorrent download MAGNET -o OUT --bind IP --port 6881
/// --summary-json S EXTRA...` (DHT off unless `env` turns it on) and
/// waits for it to succeed within `limit`; panics with its log and
/// `others`' otherwise.
fn xorrent_fetch(
    w: &World,
    host: u8,
    magnet: &str,
    extra: &[OsString],
    env: &[(&str, &str)],
    limit: Duration,
    others: &[&dyn Logged],
) -> Fetched {
    let out = w.path(&format!("xorrent-out-{host}"));
    let summary = w.path(&format!("summary-{host}.json"));
    let mut cmd = xorrent_cmd();
    cmd.env("XORRENT_LOG", "xorrent=debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("download")
        .arg(magnet)
        .arg("-o")
        .arg(&out)
        .args(["--bind", &(w.ip)(host).to_string(), "--port", "6881"])
        .args(["--status-interval", "1", "--summary-json"])
        .arg(&summary)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut p = Proc::spawn("xorrent download", &mut cmd);
    let err = Lines::follow(p.child.stderr.take().unwrap());
    let deadline = started + limit;
    let st = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let secs = started.elapsed().as_secs_f64();
    let log = err.all_after_close(Duration::from_secs(3)).join("\n");
    match st {
        Some(st) if st.success() => {}
        Some(st) => panic!(
            "xorrent download {magnet} exited with {st} after {secs:.1} s\n\
             --- xorrent stderr:\n{log}\n{}",
            logs(others)
        ),
        None => panic!(
            "xorrent download {magnet} did not finish within {limit:?}\n\
             --- xorrent stderr:\n{log}\n{}",
            logs(others)
        ),
    }
    let summary = std::fs::read(&summary)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no --summary-json written\n{log}"));
    Fetched {
        out,
        summary,
        log,
        secs,
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// `xorrent info FILE --json`.
fn info_json(torrent: &Path) -> serde_json::Value {
    let o = xorrent_cmd()
        .arg("info")
        .arg(torrent)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "xorrent info {} --json: {}{}",
        torrent.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The torrent `--save-torrent` wrote describes the same content as the
/// original: same info-hash (so the same info dictionary), name, sizes
/// and files.
fn assert_same_torrent(saved: &Path, original: &Path) {
    assert!(
        saved.exists(),
        "--save-torrent wrote no {}",
        saved.display()
    );
    let (a, b) = (info_json(saved), info_json(original));
    for key in [
        "info_hash",
        "name",
        "total_length",
        "piece_length",
        "num_pieces",
        "multi_file",
        "files",
    ] {
        assert_eq!(a[key], b[key], "{key} differs: saved {a}\noriginal {b}");
    }
}

fn same_file(a: &Path, b: &Path) {
    assert_eq!(
        sha1_file(a),
        sha1_file(b),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// `xorrent tracker` on host 1, port 6969; the lt seeder (host 2) finds
/// it in the torrent, xorrent (host 9) only in the magnet's `tr=`.
fn through_a_tracker(test: &str, multi: bool) {
    if !interop_ready(test, &[LT]) {
        return;
    }
    let mut w = World::new();
    let (http, udp) = w.xorrent_tracker(1, 6969, &[]);
    let name = if multi { "tracked-tree" } else { "tracked.bin" };
    let (t, data) = if multi {
        tree(&w, name, Some(&http))
    } else {
        single(&w, name, 3 * 1024 * 1024 + 777, 51, Some(&http))
    };
    let ih = info_hash(&t);
    // READY only after the tracker answered its first announce.
    let seeder = lt_peer(&w, 2, &t, &data, "seed", &[]);
    let link = if multi {
        // Over UDP, while the seeder announced over HTTP (one swarm).
        magnet(&ih, Some(name), &[&udp], &[])
    } else {
        // The magnet link `xorrent info --magnet` prints (tr= from the
        // torrent's announce).
        let o = xorrent_cmd()
            .arg("info")
            .arg(&t)
            .arg("--magnet")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "xorrent info --magnet: {text}");
        let link = text
            .lines()
            .find(|l| l.starts_with("magnet:?"))
            .unwrap_or_else(|| panic!("xorrent info --magnet printed no magnet link:\n{text}"))
            .trim()
            .to_string();
        assert!(
            link.to_ascii_lowercase()
                .contains(&format!("xt=urn:btih:{ih}")),
            "{link}"
        );
        assert!(link.contains("&tr="), "no tracker in {link}");
        link
    };
    let saved = w.path("saved.torrent");
    let mut extra = os(&["--tracker-timeout", "3", "--save-torrent"]);
    extra.push(saved.clone().into());
    let got = xorrent_fetch(
        &w,
        9,
        &link,
        &extra,
        &[],
        Duration::from_secs(90),
        &[&seeder],
    );
    if multi {
        assert_same_tree(&data.join(name), &got.out.join(name));
    } else {
        same_file(&data.join(name), &got.out.join(name));
    }
    assert_same_torrent(&saved, &t);
    let total = info_json(&t)["total_length"].as_u64().unwrap();
    assert_eq!(got.bytes_from(at(&w, 2)), total, "{}", got.summary);
    println!("{test}: {:.1} s", got.secs);
}

#[test]
fn downloads_a_single_file_by_magnet_from_libtorrent_found_through_a_tracker() {
    through_a_tracker(
        "downloads_a_single_file_by_magnet_from_libtorrent_found_through_a_tracker",
        false,
    );
}

#[test]
fn downloads_a_multi_file_torrent_by_magnet_through_a_udp_tracker() {
    through_a_tracker(
        "downloads_a_multi_file_torrent_by_magnet_through_a_udp_tracker",
        true,
    );
}

/// No `tr=`, no `x.pe=`: the seeder can only be found through the DHT.
fn through_the_dht_alone(test: &str, multi: bool) {
    if !interop_ready(test, &[LT]) {
        return;
    }
    let w = World::new();
    let name = if multi {
        "dht-only-tree"
    } else {
        "dht-only.bin"
    };
    let (t, data) = if multi {
        tree(&w, name, None)
    } else {
        single(&w, name, 3 * 1024 * 1024 + 4321, 52, None)
    };
    let ih = info_hash(&t);
    // 20 libtorrent sessions on hosts 10-29; session 0 seeds.
    let net = w.lt_dht(
        10,
        20,
        &[
            OsString::from("--seed"),
            t.clone().into(),
            "--save".into(),
            data.clone().into(),
            "--announce-every".into(),
            "2".into(),
            "--timeout".into(),
            "150".into(),
        ],
    );
    let seeder = net.nodes[0];
    // libtorrent announces to the 8 closest nodes: wait for 3 of them.
    let mut storing = std::collections::BTreeSet::new();
    while storing.len() < 3 {
        let l = net.wait_for(Duration::from_secs(30), "3 nodes storing the seeder", |l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            matches!(w.as_slice(), ["STORED", _, h, p] if *h == ih && *p == seeder.to_string())
        });
        storing.insert(l.split_whitespace().nth(1).unwrap().to_string());
    }
    let link = magnet(&ih, Some(name), &[], &[]);
    // It joins through host 11, not the seeder.
    let mut extra = os(&["--dht-bootstrap", &net.nodes[1].to_string(), "--state-dir"]);
    extra.push(w.path("state").into());
    let got = xorrent_fetch(
        &w,
        2,
        &link,
        &extra,
        &[("XORRENT_NO_DHT", "0")],
        Duration::from_secs(90),
        &[&net],
    );
    if multi {
        assert_same_tree(&data.join(name), &got.out.join(name));
    } else {
        same_file(&data.join(name), &got.out.join(name));
    }
    let total = info_json(&t)["total_length"].as_u64().unwrap();
    assert_eq!(got.bytes_from(seeder), total, "{}", got.summary);
    println!("{test}: {:.1} s", got.secs);
}

#[test]
fn downloads_by_magnet_from_libtorrent_found_through_the_dht_alone() {
    through_the_dht_alone(
        "downloads_by_magnet_from_libtorrent_found_through_the_dht_alone",
        false,
    );
}

#[test]
fn downloads_a_multi_file_torrent_by_magnet_through_the_dht_alone() {
    through_the_dht_alone(
        "downloads_a_multi_file_torrent_by_magnet_through_the_dht_alone",
        true,
    );
}

/// Only `x.pe=`, and no `dn=`: the name comes from the info dictionary.
#[test]
fn downloads_by_magnet_from_its_x_pe_peer_alone_without_a_name() {
    let test = "downloads_by_magnet_from_its_x_pe_peer_alone_without_a_name";
    if !interop_ready(test, &[LT]) {
        return;
    }
    let w = World::new();
    let name = "xpe.bin";
    let (t, data) = single(&w, name, 4 * 1024 * 1024 + 99, 53, None);
    let seeder = lt_peer(&w, 2, &t, &data, "seed", &["--no-tracker"]);
    let link = magnet(&info_hash(&t), None, &[], &[at(&w, 2)]);
    let got = xorrent_fetch(&w, 9, &link, &[], &[], Duration::from_secs(60), &[&seeder]);
    same_file(&data.join(name), &got.out.join(name));
    assert_eq!(got.bytes_from(at(&w, 2)), 4 * 1024 * 1024 + 99);
    println!("{test}: {:.1} s", got.secs);
}

/// Two `x.pe=` seeders, each capped so that both send data, and an info
/// dictionary of three metadata pieces.
#[test]
fn downloads_a_multi_file_torrent_by_magnet_from_two_x_pe_seeders() {
    let test = "downloads_a_multi_file_torrent_by_magnet_from_two_x_pe_seeders";
    if !interop_ready(test, &[LT]) {
        return;
    }
    let w = World::new();
    let name = "many-files";
    let (t, data) = many_files(&w, name);
    let cap = ["--no-tracker", "--upload-limit", "500000"];
    let a = lt_peer(&w, 2, &t, &data, "seed", &cap);
    let b = lt_peer(&w, 3, &t, &data, "seed", &cap);
    let link = magnet(&info_hash(&t), Some(name), &[], &[at(&w, 2), at(&w, 3)]);
    let saved = w.path("saved.torrent");
    let mut extra = os(&["--save-torrent"]);
    extra.push(saved.clone().into());
    let got = xorrent_fetch(
        &w,
        9,
        &link,
        &extra,
        &[],
        Duration::from_secs(60),
        &[&a, &b],
    );
    assert_same_tree(&data.join(name), &got.out.join(name));
    assert_same_torrent(&saved, &t);
    for host in [2, 3] {
        assert!(
            got.bytes_from_host(at(&w, host)) > 0,
            "seeder {} sent nothing: {}",
            at(&w, host),
            got.summary
        );
    }
    println!("{test}: {:.1} s", got.secs);
}

/// libtorrent, given only a magnet link naming `xorrent seed`, gets the
/// info dictionary (three metadata pieces) and all the data from xorrent.
#[test]
fn libtorrent_fetches_metadata_and_data_from_xorrent_seed_by_magnet() {
    let test = "libtorrent_fetches_metadata_and_data_from_xorrent_seed_by_magnet";
    if !interop_ready(test, &[LT]) {
        return;
    }
    let w = World::new();
    let name = "to-lt";
    let (t, data) = many_files(&w, name);
    let ih = info_hash(&t);
    let seed = xorrent_seed(&w, 2, &t, &data, &[]);
    let out = w.path("lt-out");
    let saved = w.path("lt-saved.torrent");
    let link = magnet(&ih, Some(name), &[], &[at(&w, 2)]);
    let started = Instant::now();
    let mut lt = lt_magnet(
        &w,
        3,
        &link,
        &out,
        // Every alert goes to the log: if the connection to the seed is
        // ever lost again, the failure shows who closed it and why.
        &["--save-torrent", saved.to_str().unwrap(), "--verbose"],
    );
    let meta = lt.wait_for(Duration::from_secs(30), "METADATA", &[&seed], |l| {
        l.starts_with("METADATA ")
    });
    assert_eq!(meta.split_whitespace().nth(1), Some(ih.as_str()), "{meta}");
    let done = lt.wait_for(Duration::from_secs(60), "DONE", &[&seed], |l| {
        l.starts_with("DONE")
    });
    assert!(lt.proc.wait_timeout(Duration::from_secs(10)).success());
    println!(
        "{test}: metadata after {} s, done after {} s ({:.1} s wall)",
        meta.split_whitespace().nth(2).unwrap(),
        done.split_whitespace().nth(1).unwrap_or("?"),
        started.elapsed().as_secs_f64()
    );
    assert_same_tree(&data.join(name), &out.join(name));
    assert_same_torrent(&saved, &t);
    let from_seed = lt.out.lines().iter().find_map(|l| {
        l.strip_prefix(&format!("FROM {} ", at(&w, 2)))
            .map(|n| n.parse::<u64>().unwrap())
    });
    assert_eq!(
        from_seed,
        Some(info_json(&t)["total_length"].as_u64().unwrap()),
        "{}",
        lt.text()
    );
}

/// Seeder A (upload capped at 64 KiB/s: 64 s for the file alone) and
/// seeder B are connected to each other before xorrent starts; xorrent
/// knows only A. libtorrent sends its first PEX message at its first
/// one-second tick after the extended handshake, listing every peer it
/// is connected to then (it took about 2 s in lt-to-lt runs), so B must
/// send most of the data. B has PEX off, so it never hears of xorrent
/// from A and cannot connect to it itself: data from B means xorrent
/// dialled an address it learnt through PEX.
#[test]
fn xorrent_learns_a_second_seeder_through_libtorrent_pex() {
    let test = "xorrent_learns_a_second_seeder_through_libtorrent_pex";
    if !interop_ready(test, &[LT]) {
        return;
    }
    let w = World::new();
    let name = "pex-in.bin";
    let len = 4 * 1024 * 1024 + 5;
    let (t, data) = single(&w, name, len, 54, None);
    // Two seeds close their connection to each other unless told not to;
    // then PEX would have nothing to list.
    let keep = "close_redundant_connections=false";
    // lt_peer.py lets up to 1 MiB of blocks wait in a peer's send buffer
    // (send_buffer_low_watermark), and a PEX message queues behind them:
    // 16 s at 64 KiB/s. Keep A's queue to about 1.5 s of data.
    let a = lt_peer(
        &w,
        2,
        &t,
        &data,
        "seed",
        &[
            "--no-tracker",
            "--pex",
            "--upload-limit",
            "65536",
            "--set",
            keep,
            "--set",
            "send_buffer_low_watermark=16384",
        ],
    );
    let a_addr = at(&w, 2).to_string();
    let b = lt_peer(
        &w,
        3,
        &t,
        &data,
        "seed",
        &[
            "--no-tracker",
            "--report-peers",
            "--peer",
            &a_addr,
            "--set",
            keep,
        ],
    );
    b.wait_for(Duration::from_secs(20), "connection to A", &[&a], |l| {
        l.starts_with(&format!("PEER {a_addr} "))
    });
    let link = magnet(&info_hash(&t), Some(name), &[], &[at(&w, 2)]);
    let got = xorrent_fetch(&w, 9, &link, &[], &[], Duration::from_secs(120), &[&a, &b]);
    same_file(&data.join(name), &got.out.join(name));
    let (from_a, from_b) = (got.bytes_from(at(&w, 2)), got.bytes_from(at(&w, 3)));
    println!(
        "{test}: {:.1} s, {from_a} bytes from A, {from_b} from B",
        got.secs
    );
    assert!(
        from_b > 0,
        "nothing came from B ({}), which only A's PEX named; {from_a} bytes from A\n{}\n--- xorrent:\n{}\n{}",
        at(&w, 3),
        got.summary,
        got.log,
        logs(&[&a, &b])
    );
    assert_eq!(from_a + from_b, len as u64, "{}", got.summary);
}

/// libtorrent leecher B (downloading at 16 KiB/s, PEX off) is connected
/// to `xorrent seed` X; then libtorrent leecher L (PEX on), whose magnet
/// names only X, must connect to B at the address X's PEX gave it
/// (`PEER <B> pex`). B dialled X, so X knows B's listen port only from
/// the `p` in B's extended handshake (libtorrent sends `p` on outgoing
/// connections). L downloads at 256 KiB/s (about 16 s) and keeps running
/// after DONE (`--seed`), so a first PEX message as late as a minute
/// after the handshake still counts.
#[test]
fn libtorrent_learns_a_peer_through_xorrent_pex() {
    let test = "libtorrent_learns_a_peer_through_xorrent_pex";
    if !interop_ready(test, &[LT]) {
        return;
    }
    let w = World::new();
    let name = "pex-out.bin";
    let (t, data) = single(&w, name, 4 * 1024 * 1024 + 3, 55, None);
    let seed = xorrent_seed(&w, 2, &t, &data, &[]);
    let x_addr = at(&w, 2).to_string();
    let b = lt_peer(
        &w,
        3,
        &t,
        &w.path("b-out"),
        "leech",
        &[
            "--no-tracker",
            "--report-peers",
            "--peer",
            &x_addr,
            "--download-limit",
            "16384",
        ],
    );
    b.wait_for(Duration::from_secs(20), "connection to X", &[&seed], |l| {
        l.starts_with(&format!("PEER {x_addr} "))
    });
    let out = w.path("l-out");
    let link = magnet(&info_hash(&t), Some(name), &[], &[at(&w, 2)]);
    let started = Instant::now();
    let l = lt_magnet(
        &w,
        4,
        &link,
        &out,
        &["--pex", "--seed", "--download-limit", "262144", "--verbose"],
    );
    // A first PEX message as late as a minute after the handshake counts.
    let b_addr = at(&w, 3).to_string();
    let learnt = l
        .out
        .wait_for(Duration::from_secs(75), |line| {
            line.starts_with(&format!("PEER {b_addr} "))
        })
        .unwrap_or_else(|| {
            panic!(
                "libtorrent never connected to {b_addr}, which only xorrent's PEX could name \
                 (with its listen port from the `p` of B's extended handshake)\n{}",
                logs(&[&l, &seed, &b])
            )
        });
    let learnt_after = started.elapsed();
    if !l.out.lines().iter().any(|line| line.starts_with("DONE")) {
        l.wait_for(
            Duration::from_secs(60).saturating_sub(started.elapsed()),
            "DONE",
            &[&seed, &b],
            |line| line.starts_with("DONE"),
        );
    }
    same_file(&data.join(name), &out.join(name));
    assert!(
        learnt.split_whitespace().nth(2).unwrap().contains("pex"),
        "libtorrent reached B but not through PEX: {learnt}\n{}",
        l.text()
    );
    println!(
        "{test}: libtorrent connected to B through xorrent's PEX after {:.1} s",
        learnt_after.as_secs_f64()
    );
}

/// Transmission (host 2) and aria2 (host 3) seed; xorrent gets only a
/// magnet naming both. Each serves BEP-9 its own way, and each connection
/// that fetched the metadata must go on to carry data: the peer loop takes
/// it over with a second extended handshake and `have`s rather than a
/// bitfield, which neither client may refuse.
#[test]
fn downloads_by_magnet_from_transmission_and_aria2_over_the_metadata_connections() {
    let test = "downloads_by_magnet_from_transmission_and_aria2_over_the_metadata_connections";
    let needs = [
        "transmission-daemon",
        "transmission-remote",
        "aria2c",
        "opentracker",
        "mktorrent",
    ];
    if !interop_ready(test, &needs) {
        return;
    }
    let mut w = World::new();
    let name = "handover.bin";
    let len = 12 * 1024 * 1024 + 99;
    let t = single_file(&w, name, len, 18, 93);
    let ih = info_hash(&t);
    w.tracker(std::slice::from_ref(&ih));
    let data = w.path("data");
    // Capped, so that neither finishes alone before the other joins.
    w.transmission_seed(&t, &data, 2, &["--upload-limit", "1500"]);
    w.aria2_seed(&t, &data, 3, &["--upload-limit", "1500000"]);
    let link = magnet(&ih, Some(name), &[], &[at(&w, 2), at(&w, 3)]);
    let got = xorrent_fetch(&w, 9, &link, &[], &[], Duration::from_secs(120), &[]);
    same_file(&data.join(name), &got.out.join(name));
    for host in [2, 3] {
        let addr = at(&w, host);
        assert!(
            got.bytes_from(addr) > 0,
            "seeder {addr} contributed nothing\n{}",
            got.summary
        );
        // The connection that fetched the metadata was handed to the
        // peer loop, and it was the only one that loop ran with the
        // seeder (each logs one "peer disconnected" when it ends).
        let at_addr = format!("addr={addr} ");
        let count = |what: &str| {
            got.log
                .lines()
                .filter(|l| l.contains(what) && l.contains(&at_addr))
                .count()
        };
        assert_eq!(
            count("metadata connection handed over"),
            1,
            "{addr}\n{}",
            got.log
        );
        assert_eq!(count("peer disconnected"), 1, "{addr}\n{}", got.log);
    }
    println!("{test}: {:.1} s", got.secs);
}
