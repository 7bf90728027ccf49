//! MSE/PE encryption (`--encryption prefer|require|disable`): downloads
//! from, and uploads to, libtorrent, Transmission and aria2 forcing RC4
//! both ways; what each policy accepts, checked with a scripted peer
//! (tests/interop/mse_peer.py); hostile handshakes against both our
//! listener and our dialler. Needs root and the clients: see
//! `interop_ready`.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::*;
use crate::common::*;
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

/// libtorrent settings for MSE with RC4 only, in and out.
const LT_FORCE_RC4: [&str; 6] = [
    "--set",
    "in_enc_policy=0",
    "--set",
    "out_enc_policy=0",
    "--set",
    "allowed_enc_level=2",
];

const TRANSMISSION: [&str; 3] = [
    "transmission-daemon",
    "transmission-remote",
    "transmission-show",
];

/// What a test with these real clients needs installed.
fn ready(test: &str, clients: &[&str]) -> bool {
    let mut needs = vec![PY, "opentracker", "mktorrent"];
    needs.extend_from_slice(clients);
    interop_ready(test, &needs)
}

/// Runs `xorrent download` bound to `host` with `extra` flags; returns its
/// output directory and summary. Panics with its log if it fails.
fn download(w: &World, torrent: &Path, host: u8, extra: &[&str]) -> (PathBuf, Value) {
    let (out, v, _) = w.xorrent_logged(torrent, host, Duration::from_secs(180), extra);
    (out, v)
}

/// The summary's entries for peers at `ip`.
fn entries_at(summary: &Value, ip: Ipv4Addr) -> Vec<Value> {
    let prefix = format!("{ip}:");
    summary["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no peers in {summary}"))
        .iter()
        .filter(|p| p["addr"].as_str().unwrap().starts_with(&prefix))
        .cloned()
        .collect()
}

/// Every connection with `ip` that completed the BitTorrent handshake ran
/// RC4 (or, with `rc4` false, did not), and there was one.
fn assert_encrypted(summary: &Value, ip: Ipv4Addr, rc4: bool) {
    let at = entries_at(summary, ip);
    assert!(!at.is_empty(), "no peer at {ip} in {summary}");
    for e in &at {
        assert_eq!(e["encrypted"], Value::Bool(rc4), "{ip}: {e} in {summary}");
    }
}

/// A random single file `data/<name>` and its torrent without trackers;
/// returns the torrent, the data dir and the info-hash in hex.
fn untracked(w: &World, name: &str, len: usize, seed: u64) -> (PathBuf, PathBuf, String) {
    let data = w.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let content = random_bytes(len, seed);
    let t = make_torrent(
        name,
        &[(vec![name], content.clone())],
        64 * 1024,
        None,
        false,
    );
    std::fs::write(data.join(name), content).unwrap();
    let path = w.path(&format!("{name}.torrent"));
    std::fs::write(&path, t).unwrap();
    let ih = info_hash(&path);
    (path, data, ih)
}

/// `xorrent seed` on `host`:6881 with a summary file (`seed-HOST.json`),
/// once it accepts connections; its stderr is kept for failure messages.
struct Seed {
    proc: Proc,
    log: Lines,
    addr: SocketAddr,
    summary: PathBuf,
}

impl Seed {
    fn start(w: &World, torrent: &Path, data: &Path, host: u8, extra: &[&str]) -> Seed {
        let addr = SocketAddr::new((w.ip)(host).into(), 6881);
        let summary = w.path(&format!("seed-{host}.json"));
        let mut proc = Proc::spawn(
            "xorrent seed",
            xorrent_cmd()
                .env("XORRENT_LOG", "xorrent=debug")
                .arg("seed")
                .arg(torrent)
                .arg(data)
                .args(["--bind", &addr.ip().to_string(), "--port", "6881"])
                .args(["--status-interval", "2", "--summary-json"])
                .arg(&summary)
                .args(extra)
                .stderr(Stdio::piped()),
        );
        let log = Lines::follow(proc.child.stderr.take().unwrap());
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "xorrent seed never listened:\n{}",
                log.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Seed {
            proc,
            log,
            addr,
            summary,
        }
    }

    /// Like [`Seed::start`], then waits until a tracker answered its first
    /// announce, so leechers that ask the tracker find it.
    fn announced(w: &World, torrent: &Path, data: &Path, host: u8, extra: &[&str]) -> Seed {
        let s = Seed::start(w, torrent, data, host, extra);
        if s.log
            .wait_for(Duration::from_secs(60), |l| l.contains(" announced "))
            .is_none()
        {
            panic!("xorrent seed never announced:\n{}", s.log.text());
        }
        s
    }

    /// SIGINT, and the summary it writes on the way out.
    fn stop(mut self) -> Value {
        unsafe_kill(self.proc.pid(), 2);
        let st = self.proc.wait_timeout(Duration::from_secs(20));
        assert!(
            st.success(),
            "xorrent seed exited with {st}:\n{}",
            self.log.text()
        );
        serde_json::from_slice(&std::fs::read(&self.summary).unwrap()).unwrap()
    }

    /// Still running; panics with its log otherwise.
    fn assert_up(&self) {
        if let Some(note) = self.proc.exit_note() {
            panic!("xorrent seed {note}:\n{}", self.log.text());
        }
    }
}

// ------------------------------------------------------------ mse_peer.py --

/// `tests/interop/mse_peer.py` with `args`, started; its stdout lines.
fn spawn_mse_peer(args: &[String]) -> (Proc, Lines) {
    let mut p = Proc::spawn(
        "mse_peer.py",
        Command::new(PY)
            .arg(repo().join("tests/interop/mse_peer.py"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let out = Lines::follow(p.child.stdout.take().unwrap());
    (p, out)
}

/// Its JSON lines once it has exited.
fn results(mut p: Proc, out: Lines, limit: Duration) -> Vec<Value> {
    let st = p.wait_timeout(limit);
    assert!(st.success(), "mse_peer.py exited with {st}");
    out.all_after_close(Duration::from_secs(5))
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Dials `to` from `host` in `mode`, `count` connections at once, with
/// extra flags; starts and returns at once.
fn dial(
    w: &World,
    to: SocketAddr,
    ih: &str,
    mode: &str,
    host: u8,
    extra: &[&str],
) -> (Proc, Lines) {
    let mut args: Vec<String> = [
        "--connect",
        &to.to_string(),
        "--info-hash",
        ih,
        "--mode",
        mode,
        "--bind",
        &(w.ip)(host).to_string(),
        "--timeout",
        "25",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_mse_peer(&args)
}

/// One connection in `mode`; its result.
fn dial_one(w: &World, to: SocketAddr, ih: &str, mode: &str, host: u8, extra: &[&str]) -> Value {
    let (p, out) = dial(w, to, ih, mode, host, extra);
    let mut r = results(p, out, Duration::from_secs(40));
    assert_eq!(r.len(), 1, "{mode}: {r:?}");
    r.pop().unwrap()
}

fn secs(r: &Value) -> f64 {
    r["secs"].as_f64().unwrap()
}

fn received(r: &Value) -> u64 {
    r["received"].as_u64().unwrap()
}

/// The peer finished the BitTorrent handshake for our torrent, over RC4
/// or not as `rc4` says.
fn assert_handshake(r: &Value, rc4: bool) {
    assert_eq!(r["result"], "handshake", "{r}");
    assert_eq!(r["info_hash_ok"], true, "{r}");
    if r["kind"] == "mse" {
        assert_eq!(r["encrypted"], rc4, "{r}");
    }
}

fn assert_closed_within(r: &Value, limit: f64) {
    assert_eq!(r["result"], "closed", "{r}");
    assert!(
        secs(r) <= limit,
        "closed after {}s, bound {limit}s: {r}",
        secs(r)
    );
}

fn vm_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

// ------------------------------------------------ downloads from seeders --

fn from_seeder(kind: &str, multi: bool, policy: &str) {
    let test = format!("download_from_{kind}_forcing_rc4");
    let ok = match kind {
        "libtorrent" => ready(&test, &[LT]),
        "aria2" => ready(&test, &["aria2c"]),
        _ => ready(&test, &TRANSMISSION),
    };
    if !ok {
        return;
    }
    let mut w = World::new();
    let (t, name) = if multi {
        (multi_file(&w, 4, 16), "tree")
    } else {
        let len = if kind == "transmission" {
            3 << 20
        } else {
            8 << 20
        };
        (single_file(&w, "big.bin", len + 4321, 18, 71), "big.bin")
    };
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    match kind {
        "libtorrent" => w.lt_seed(&t, &data, 2, &LT_FORCE_RC4),
        "aria2" => w.aria2_seed(&t, &data, 2, &["--require-crypto"]),
        _ => w.transmission_seed(&t, &data, 2, &["--encryption", "2"]),
    }
    let (out, summary) = download(&w, &t, 9, &["--encryption", policy]);
    assert_same_tree_or_file(&data.join(name), &out.join(name));
    assert_encrypted(&summary, (w.ip)(2), true);
}

fn assert_same_tree_or_file(a: &Path, b: &Path) {
    if a.is_dir() {
        assert_same_tree(a, b);
    } else {
        assert_eq!(sha1_file(a), sha1_file(b), "{} differs", b.display());
    }
}

/// `prefer` (the default) tries MSE first, which is all this seeder takes.
#[test]
fn downloads_from_a_libtorrent_seeder_forcing_rc4_both_ways() {
    from_seeder("libtorrent", false, "prefer");
}

#[test]
fn downloads_a_multi_file_torrent_from_a_libtorrent_seeder_forcing_rc4() {
    from_seeder("libtorrent", true, "require");
}

#[test]
fn downloads_from_a_transmission_seeder_requiring_encryption() {
    from_seeder("transmission", false, "require");
}

#[test]
fn downloads_a_multi_file_torrent_from_a_transmission_seeder_requiring_encryption() {
    from_seeder("transmission", true, "prefer");
}

#[test]
fn downloads_from_an_aria2_seeder_requiring_rc4() {
    from_seeder("aria2", false, "require");
}

#[test]
fn downloads_a_multi_file_torrent_from_an_aria2_seeder_requiring_rc4_with_the_default_policy() {
    from_seeder("aria2", true, "prefer");
}

// -------------------------------------------------- uploads to leechers --

fn to_leecher(kind: &str) {
    let test = format!("{kind}_leecher_forcing_rc4_from_xorrent_seed");
    let ok = match kind {
        "libtorrent" => ready(&test, &[LT]),
        "aria2" => ready(&test, &["aria2c"]),
        _ => ready(&test, &TRANSMISSION),
    };
    if !ok {
        return;
    }
    let mut w = World::new();
    let len = if kind == "transmission" {
        3 << 20
    } else {
        8 << 20
    };
    let t = single_file(&w, "big.bin", len + 99, 18, 73);
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    let out = w.path("leech-out");
    let leecher = (w.ip)(5);
    let require = ["--encryption", "require"];
    let seed = match kind {
        "libtorrent" => {
            let seed = Seed::announced(&w, &t, &data, 2, &require);
            let mut p = Proc::spawn(
                "libtorrent leecher",
                Command::new(PY)
                    .arg(repo().join("tests/interop/lt_peer.py"))
                    .args(["--listen", &format!("{leecher}:6881"), "--mode", "leech"])
                    .args(["--timeout", "150", "--peer", &seed.addr.to_string()])
                    .args(LT_FORCE_RC4)
                    .arg("--torrent")
                    .arg(&t)
                    .arg("--save")
                    .arg(&out)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            let st = p.wait_timeout(Duration::from_secs(170));
            assert!(
                st.success(),
                "libtorrent leecher: {st}\n{}",
                seed.log.text()
            );
            seed
        }
        "aria2" => {
            let seed = Seed::announced(&w, &t, &data, 2, &require);
            let (mut p, _) = w.spawn_aria2_leech(&t, &out, 5, &["--require-crypto"]);
            let st = p.wait_timeout(Duration::from_secs(170));
            assert!(st.success(), "aria2 leecher: {st}\n{}", seed.log.text());
            seed
        }
        _ => {
            // Transmission never dials 127.x: it announces, and the seed,
            // finding it at the tracker, dials it (MSE only).
            let cfg = w.path("transmission-leech");
            std::fs::create_dir_all(&cfg).unwrap();
            std::fs::create_dir_all(&out).unwrap();
            let mut p = Proc::spawn(
                "transmission leecher",
                Command::new("bash")
                    .arg(repo().join("tests/interop/transmission_leech.sh"))
                    .arg(&t)
                    .arg(&out)
                    .arg(leecher.to_string())
                    .arg("6881")
                    .arg(&cfg)
                    .args(["--ready-timeout", "150", "--encryption", "2"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null()),
            );
            let lines = Lines::follow(p.child.stdout.take().unwrap());
            lines
                .wait_for(Duration::from_secs(60), |l| l == "ANNOUNCED")
                .expect("transmission leecher never announced");
            let seed = Seed::announced(&w, &t, &data, 2, &require);
            let st = p.wait_timeout(Duration::from_secs(170));
            assert!(
                st.success(),
                "transmission leecher: {st}\n{}",
                seed.log.text()
            );
            seed
        }
    };
    assert_eq!(
        sha1_file(&data.join("big.bin")),
        sha1_file(&out.join("big.bin"))
    );
    let summary = seed.stop();
    assert_encrypted(&summary, leecher, true);
}

#[test]
fn a_libtorrent_leecher_forcing_rc4_downloads_from_xorrent_seed_requiring_it() {
    to_leecher("libtorrent");
}

#[test]
fn a_transmission_leecher_requiring_encryption_downloads_from_xorrent_seed_requiring_it() {
    to_leecher("transmission");
}

#[test]
fn an_aria2_leecher_requiring_rc4_downloads_from_xorrent_seed_requiring_it() {
    to_leecher("aria2");
}

// ------------------------------------------------------------- policies --

#[test]
fn require_closes_plaintext_without_a_reply_and_takes_rc4() {
    if !interop_ready("require_closes_plaintext", &[PY]) {
        return;
    }
    let w = World::new();
    let (t, data, ih) = untracked(&w, "f.bin", 1 << 20, 74);
    let seed = Seed::start(&w, &t, &data, 2, &["--encryption", "require"]);
    let plain = dial_one(&w, seed.addr, &ih, "plain", 10, &[]);
    assert_closed_within(&plain, 5.0);
    assert_eq!(received(&plain), 0, "no reply to plaintext: {plain}");
    // MSE offering plaintext only: nothing in common.
    let mse_plain = dial_one(&w, seed.addr, &ih, "mse-plain", 11, &[]);
    assert_closed_within(&mse_plain, 5.0);
    assert_handshake(&dial_one(&w, seed.addr, &ih, "mse", 12, &[]), true);
    // A public key starting with 19 is still MSE: only the whole 20-byte
    // protocol string makes a plaintext handshake.
    let r = dial_one(&w, seed.addr, &ih, "mse", 13, &["--ya-first-byte", "19"]);
    assert_eq!(r["ya_first_byte"], 19);
    assert_handshake(&r, true);
    seed.assert_up();
}

#[test]
fn disable_closes_an_encrypted_handshake_within_a_second() {
    if !interop_ready("disable_closes_mse", &[PY]) {
        return;
    }
    let w = World::new();
    let (t, data, ih) = untracked(&w, "f.bin", 1 << 20, 75);
    let seed = Seed::start(&w, &t, &data, 2, &["--encryption", "disable"]);
    for (host, extra) in [(10, &[][..]), (11, &["--ya-first-byte", "19"][..])] {
        let r = dial_one(&w, seed.addr, &ih, "mse", host, extra);
        assert_closed_within(&r, 1.0);
        assert_eq!(received(&r), 0, "no reply to MSE: {r}");
    }
    assert_handshake(&dial_one(&w, seed.addr, &ih, "plain", 12, &[]), false);
    seed.assert_up();
}

/// `prefer` takes plaintext and both MSE variants, and an aria2 leecher
/// (which tries MSE first) ends up encrypted; the summary tells them apart.
#[test]
fn prefer_accepts_both_and_an_aria2_leecher_gets_rc4() {
    if !ready("prefer_accepts_both", &["aria2c"]) {
        return;
    }
    let mut w = World::new();
    let t = single_file(&w, "big.bin", (6 << 20) + 5, 18, 76);
    let ih = info_hash(&t);
    w.tracker(std::slice::from_ref(&ih));
    let data = w.path("data");
    let seed = Seed::announced(&w, &t, &data, 2, &[]);
    let hold = ["--hold", "1"];
    assert_handshake(&dial_one(&w, seed.addr, &ih, "plain", 10, &hold), false);
    assert_handshake(&dial_one(&w, seed.addr, &ih, "mse", 11, &hold), true);
    assert_handshake(&dial_one(&w, seed.addr, &ih, "mse-plain", 12, &hold), false);
    let out = w.path("aria2-out");
    let (mut p, _) = w.spawn_aria2_leech(&t, &out, 5, &[]);
    let st = p.wait_timeout(Duration::from_secs(120));
    assert!(st.success(), "aria2 leecher: {st}\n{}", seed.log.text());
    assert_eq!(
        sha1_file(&data.join("big.bin")),
        sha1_file(&out.join("big.bin"))
    );
    let summary = seed.stop();
    assert_encrypted(&summary, (w.ip)(5), true);
    assert_encrypted(&summary, (w.ip)(10), false);
    assert_encrypted(&summary, (w.ip)(11), true);
    assert_encrypted(&summary, (w.ip)(12), false);
}

/// The daemon takes the policy too: under `require` it says so in
/// `session-get`, refuses a plaintext peer and lists an MSE one as
/// encrypted.
#[test]
fn the_daemon_requires_encryption_when_told() {
    use base64::Engine as _;
    if !interop_ready("daemon_requires_encryption", &[PY]) {
        return;
    }
    let w = World::new();
    let (t, data, ih) = untracked(&w, "f.bin", 1 << 20, 78);
    let ip = (w.ip)(2);
    let d = crate::common::daemon::Daemon::start(
        ip,
        &w.path("daemon"),
        None,
        &["--encryption", "require"],
    );
    let v = d.ok("session-get", serde_json::json!({"fields": ["encryption"]}));
    assert_eq!(v["encryption"], "required");
    let metainfo = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&t).unwrap());
    d.ok(
        "torrent-add",
        serde_json::json!({"metainfo": metainfo, "download-dir": data}),
    );
    d.wait_until(Duration::from_secs(60), "seeding", &["percentDone"], |l| {
        l.first().is_some_and(|t| t["percentDone"] == 1.0)
    });
    let addr = SocketAddr::new(ip.into(), 6881);
    let plain = dial_one(&w, addr, &ih, "plain", 10, &[]);
    assert_closed_within(&plain, 5.0);
    assert_eq!(received(&plain), 0, "no reply to plaintext: {plain}");
    let (p, out) = dial(&w, addr, &ih, "mse", 11, &["--hold", "4"]);
    let peers = d.wait_until(
        Duration::from_secs(20),
        "an MSE peer listed",
        &["peers"],
        |l| {
            l.first()
                .and_then(|t| t["peers"].as_array())
                .is_some_and(|p| !p.is_empty())
        },
    );
    let listed = &peers[0]["peers"][0];
    assert_eq!(listed["address"], (w.ip)(11).to_string(), "{listed}");
    assert_eq!(listed["isEncrypted"], true, "{listed}");
    let r = results(p, out, Duration::from_secs(40));
    assert_handshake(&r[0], true);
    d.stop();
}

// ------------------------------------------------------ hostile handshakes --

/// Each hostile dialling mode and how soon xorrent must close it: at once
/// (with room for a loaded machine), or after its 10 s handshake timeout.
const HOSTILE: [(&str, f64); 12] = [
    ("key0", 5.0),
    ("key1", 5.0),
    ("key-p-minus-1", 5.0),
    ("key-p", 5.0),
    ("key-max", 5.0),
    ("long-pad", 5.0),
    ("pad-c", 5.0),
    ("bad-vc", 5.0),
    ("cut", 5.0),
    ("stall", 15.0),
    ("wrong-skey", 5.0),
    ("random", 5.0),
];

/// Every hostile mode at once, `count` connections each, from hosts
/// `first`, `first + 1`, ...; checks every outcome and returns the
/// slowest close of each mode.
fn hostile_wave(w: &World, to: SocketAddr, ih: &str, count: usize, first: u8) -> Vec<f64> {
    let n = count.to_string();
    let procs: Vec<_> = HOSTILE
        .iter()
        .zip(first..)
        .map(|((mode, _), host)| dial(w, to, ih, mode, host, &["--count", &n]))
        .collect();
    let mut slowest = Vec::new();
    for ((p, out), (mode, bound)) in procs.into_iter().zip(HOSTILE) {
        let rs = results(p, out, Duration::from_secs(40));
        slowest.push(rs.iter().map(secs).fold(0.0, f64::max));
        assert_eq!(rs.len(), count, "{mode}: {rs:?}");
        for r in &rs {
            assert_closed_within(r, bound);
            match mode {
                m if m.starts_with("key") => {
                    assert_eq!(received(r), 0, "a bad key got a reply: {r}")
                }
                // These wait for the responder's key before going on.
                "pad-c" | "bad-vc" | "cut" | "stall" | "wrong-skey" => {
                    assert!(received(r) >= 96, "{r}")
                }
                _ => {}
            }
        }
    }
    slowest
}

#[test]
fn hostile_handshakes_are_closed_promptly_while_an_honest_leecher_completes() {
    if !ready("hostile_handshakes", &[LT]) {
        return;
    }
    let w = World::new();
    let (t, data, ih) = untracked(&w, "big.bin", (16 << 20) + 3, 77);
    // Capped, so the honest download spans the first wave.
    let seed = Seed::start(&w, &t, &data, 2, &["--max-upload-rate", "2M"]);
    let out = w.path("lt-out");
    let mut leech = Proc::spawn(
        "libtorrent leecher",
        Command::new(PY)
            .arg(repo().join("tests/interop/lt_peer.py"))
            .args([
                "--listen",
                &format!("{}:6881", (w.ip)(3)),
                "--mode",
                "leech",
            ])
            .args(["--timeout", "120", "--peer", &seed.addr.to_string()])
            .args(LT_FORCE_RC4)
            .arg("--torrent")
            .arg(&t)
            .arg("--save")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let mut slowest = hostile_wave(&w, seed.addr, &ih, 3, 10);
    let st = leech.wait_timeout(Duration::from_secs(140));
    assert!(
        st.success(),
        "libtorrent leecher: {st}\n{}",
        seed.log.text()
    );
    assert_eq!(
        sha1_file(&data.join("big.bin")),
        sha1_file(&out.join("big.bin"))
    );
    seed.assert_up();

    // Memory held across many more: the first wave warmed the allocator.
    let before = vm_rss_kib(seed.proc.pid());
    for first in [30, 50] {
        let wave = hostile_wave(&w, seed.addr, &ih, 4, first);
        for (s, x) in slowest.iter_mut().zip(wave) {
            *s = s.max(x);
        }
    }
    let after = vm_rss_kib(seed.proc.pid());
    seed.assert_up();
    let closes: Vec<String> = HOSTILE
        .iter()
        .zip(&slowest)
        .map(|((mode, _), s)| format!("{mode} {s:.2}s"))
        .collect();
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "hostile: VmRSS {before} -> {after} KiB; slowest close: {}",
        closes.join(", ")
    );
    assert!(
        after < before + 4 * 1024,
        "VmRSS grew from {before} KiB to {after} KiB"
    );
    assert_handshake(&dial_one(&w, seed.addr, &ih, "mse", 70, &[]), true);
}

/// Listening peers that break the handshake xorrent starts: it drops
/// them and completes from the honest seeder.
#[test]
fn a_download_completes_past_peers_that_attack_its_outgoing_handshake() {
    if !ready("outgoing_hostile_handshakes", &[LT]) {
        return;
    }
    let mut w = World::new();
    let (t, data, _) = untracked(&w, "big.bin", (6 << 20) + 7, 78);
    // Capped, so the download outlasts the prompt closes it must make.
    w.lt_seed(&t, &data, 2, &["--no-tracker", "--upload-limit", "1000000"]);
    let mut listeners = Vec::new();
    let mut peers = vec!["--peer".to_string(), format!("{}:6881", (w.ip)(2))];
    for (host, mode) in [(5, "no-vc"), (6, "silent"), (7, "bad-key")] {
        let addr = format!("{}:6881", (w.ip)(host));
        let args: Vec<String> = ["--listen", &addr, "--mode", mode, "--timeout", "60"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (p, out) = spawn_mse_peer(&args);
        out.wait_for(Duration::from_secs(10), |l| l == "LISTENING")
            .unwrap_or_else(|| panic!("{mode} listener did not start"));
        peers.extend(["--peer".to_string(), addr]);
        listeners.push((mode, p, out));
    }
    let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
    let (out, summary) = download(&w, &t, 9, &peers);
    assert_eq!(
        sha1_file(&data.join("big.bin")),
        sha1_file(&out.join("big.bin"))
    );
    // Connections still open end as xorrent exits; give their lines time.
    std::thread::sleep(Duration::from_millis(500));
    for (mode, p, out) in listeners {
        drop(p);
        let rs: Vec<Value> = out
            .all_after_close(Duration::from_secs(5))
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mse: Vec<&Value> = rs.iter().filter(|r| r["kind"] == "mse").collect();
        assert!(
            !mse.is_empty(),
            "xorrent never tried MSE with {mode}: {rs:?}"
        );
        let bound = if mode == "silent" { 15.0 } else { 5.0 };
        for r in mse {
            assert_closed_within(r, bound);
        }
        for r in &rs {
            assert_ne!(r["result"], "timeout", "{mode}: {r}");
        }
        let host = match mode {
            "no-vc" => 5,
            "silent" => 6,
            _ => 7,
        };
        for e in entries_at(&summary, (w.ip)(host)) {
            assert_eq!(e["bytes"], 0, "{mode}: {e}");
        }
    }
}
