//! BEP-19 web seeds: xorrent downloads from a real HTTP server (Debian's
//! lighttpd) alone and beside a libtorrent seeder, survives servers that
//! misbehave (tests/interop/bad_web_seed.py), and writes a `url-list`
//! that libtorrent and aria2 read; a `mktorrent -w` torrent works too.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::*;
use crate::common::*;
use serde_json::Value;

const PY: &str = "/usr/bin/python3";

fn wait_listening(addr: SocketAddr, what: &str, p: &Proc) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(note) = p.exit_note() {
            panic!("{what} {note}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// lighttpd serving `root` on `host`:8080, `kbps` KiB/s per connection
/// (0: no cap). Returns its base URL.
fn lighttpd(w: &mut World, host: u8, root: &Path, kbps: u32) -> String {
    let ip = (w.ip)(host);
    let conf = w.path(&format!("lighttpd-{host}.conf"));
    let mut text = format!(
        "server.document-root = \"{}\"\nserver.bind = \"{ip}\"\nserver.port = 8080\n\
         server.errorlog = \"{}\"\nmimetype.assign = ( \"\" => \"application/octet-stream\" )\n",
        root.display(),
        w.path(&format!("lighttpd-{host}.log")).display()
    );
    if kbps > 0 {
        text.push_str(&format!("connection.kbytes-per-second = {kbps}\n"));
    }
    std::fs::write(&conf, text).unwrap();
    let p = Proc::spawn(
        "lighttpd",
        Command::new("lighttpd")
            .args(["-D", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(SocketAddr::new(ip.into(), 8080), "lighttpd", &p);
    w.procs.push(p);
    format!("http://{ip}:8080")
}

/// A world whose lighttpd on host 2 serves its `www` dir at `kbps` KiB/s
/// per connection (0: no cap): the world, the dir and the base URL.
fn web_server(kbps: u32) -> (World, PathBuf, String) {
    let mut w = World::new();
    let root = w.path("www");
    std::fs::create_dir_all(&root).unwrap();
    let base = lighttpd(&mut w, 2, &root, kbps);
    (w, root, base)
}

/// [`web_server`] serving one random file `name` of `size` bytes, and
/// its torrent (64 KiB pieces) whose only web seed is the server's
/// directory: the world, the `www` dir and the torrent.
fn web_world(name: &str, size: usize, kbps: u32, seed: u64) -> (World, PathBuf, PathBuf) {
    let (w, root, base) = web_server(kbps);
    let t = torrent_with(
        &w,
        name,
        &[(name, size)],
        65536,
        &[format!("{base}/")],
        seed,
    );
    (w, root, t)
}

/// tests/interop/bad_web_seed.py in `mode` on `host`:8080; its base URL
/// and its request log (stderr).
fn bad_server(w: &mut World, host: u8, root: &Path, mode: &str) -> (String, Lines) {
    let ip = (w.ip)(host);
    let mut p = Proc::spawn(
        "bad_web_seed.py",
        Command::new(PY)
            .arg(repo().join("tests/interop/bad_web_seed.py"))
            .args(["--bind", &ip.to_string(), "--port", "8080", "--mode", mode])
            .arg("--root")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let log = Lines::follow(p.child.stderr.take().unwrap());
    wait_listening(SocketAddr::new(ip.into(), 8080), "bad_web_seed.py", &p);
    w.procs.push(p);
    (format!("http://{ip}:8080"), log)
}

/// A torrent of `files` (relative path, length) below `dir/name`, with
/// these web seeds and no tracker; returns its path.
fn torrent_with(
    w: &World,
    name: &str,
    files: &[(&str, usize)],
    piece: usize,
    web_seeds: &[String],
    seed: u64,
) -> PathBuf {
    let contents: Vec<(Vec<&str>, Vec<u8>)> = files
        .iter()
        .enumerate()
        .map(|(i, (p, len))| (p.split('/').collect(), random_bytes(*len, seed + i as u64)))
        .collect();
    let root = w.path("www");
    let multi = files.len() > 1 || files[0].0 != name;
    for (parts, data) in &contents {
        let mut p = root.clone();
        if multi {
            p.push(name);
        }
        for part in parts {
            p.push(part);
        }
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    let mut bytes = make_torrent(name, &contents, piece, None, multi);
    // `url-list` goes at the end of the root dictionary (keys sorted).
    assert_eq!(bytes.pop(), Some(b'e'));
    bytes.extend_from_slice(b"8:url-listl");
    for u in web_seeds {
        bytes.extend_from_slice(format!("{}:{u}", u.len()).as_bytes());
    }
    bytes.extend_from_slice(b"ee");
    let t = w.path(&format!("{name}.torrent"));
    std::fs::write(&t, bytes).unwrap();
    t
}

/// What `download` leaves behind.
struct Done {
    out: PathBuf,
    summary: Value,
    log: String,
    /// The process's peak resident set (VmHWM), sampled while it ran.
    peak_kib: u64,
}

/// A running `xorrent download` and where it writes.
struct Running {
    p: Proc,
    /// Its stderr.
    err: Lines,
    out: PathBuf,
    summary: PathBuf,
}

/// Starts `xorrent download` from `host`, no peers named.
fn start_download(w: &World, t: &Path, host: u8, extra: &[&str]) -> Running {
    let out = w.path(&format!("out-{host}"));
    let summary = w.path(&format!("summary-{host}.json"));
    let mut p = Proc::spawn(
        "xorrent download",
        xorrent_cmd()
            .arg("download")
            .arg(t)
            .arg("-o")
            .arg(&out)
            .args([
                "--bind",
                &(w.ip)(host).to_string(),
                "--status-interval",
                "2",
            ])
            .arg("--summary-json")
            .arg(&summary)
            .args(extra)
            .stderr(Stdio::piped()),
    );
    let err = Lines::follow(p.child.stderr.take().unwrap());
    Running {
        p,
        err,
        out,
        summary,
    }
}

/// `xorrent download` from `host`, no peers named, to its end.
fn download(w: &World, t: &Path, host: u8, extra: &[&str], limit: u64) -> Done {
    let Running {
        mut p,
        err,
        out,
        summary,
    } = start_download(w, t, host, extra);
    let start = Instant::now();
    let status = format!("/proc/{}/status", p.child.id());
    let mut peak_kib = 0;
    let st = loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            peak_kib = peak_kib.max(vm_hwm_kib(&text));
        }
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(limit) {
            let _ = p.child.kill();
            panic!(
                "xorrent download did not finish within {limit} s:\n{}",
                err.text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = err.all_after_close(Duration::from_secs(5)).join("\n");
    assert!(st.success(), "xorrent download: {st}\n{text}");
    let summary = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    Done {
        out,
        summary,
        log: text,
        peak_kib,
    }
}

fn vm_hwm_kib(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes the summary credits to sources at `ip`.
fn bytes_from(v: &Value, ip: std::net::Ipv4Addr) -> u64 {
    v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["addr"].as_str().unwrap().starts_with(&format!("{ip}:")))
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_single_file_downloads_from_a_web_seed_alone() {
    if !interop_ready(
        "a_single_file_downloads_from_a_web_seed_alone",
        &["lighttpd"],
    ) {
        return;
    }
    let (w, root, base) = web_server(0);
    // Both BEP-19 forms: the file's own URL, and a directory.
    let t = torrent_with(
        &w,
        "one file.bin",
        &[("one file.bin", 3_000_000 + 17)],
        65536,
        &[format!("{base}/one%20file.bin"), format!("{base}/")],
        101,
    );
    let Done {
        out, summary: v, ..
    } = download(&w, &t, 9, &[], 60);
    assert_eq!(
        sha1_file(&out.join("one file.bin")),
        sha1_file(&root.join("one file.bin"))
    );
    assert_eq!(bytes_from(&v, (w.ip)(2)), 3_000_017, "{v}");
}

#[test]
fn a_multi_file_tree_with_empty_files_downloads_from_a_web_seed_alone() {
    if !interop_ready(
        "a_multi_file_tree_downloads_from_a_web_seed_alone",
        &["lighttpd"],
    ) {
        return;
    }
    let (w, root, base) = web_server(0);
    // Small files and an empty one inside pieces, names to escape.
    let files = [
        ("a.bin", 100_000),
        ("empty", 0),
        ("sub dir/b #1.txt", 7),
        ("sub dir/c+d.bin", 250_001),
        ("sub dir/deeper/e%f.bin", 40_000),
        ("z.bin", 65_536),
    ];
    let t = torrent_with(&w, "tree", &files, 32768, &[format!("{base}/")], 102);
    let out = download(&w, &t, 9, &[], 60).out;
    assert_same_tree(&root.join("tree"), &out.join("tree"));
}

#[test]
fn a_web_seed_and_a_libtorrent_seeder_both_contribute() {
    if !interop_ready(
        "a_web_seed_and_a_libtorrent_seeder_both_contribute",
        &["lighttpd", LT],
    ) {
        return;
    }
    let (mut w, root, t) = web_world("both.bin", 8_000_000, 1024, 103);
    w.lt_seed(&t, &root, 3, &["--no-tracker", "--upload-limit", "1048576"]);
    let Done {
        out, summary: v, ..
    } = download(&w, &t, 9, &["--peer", &format!("{}:6881", (w.ip)(3))], 60);
    assert_eq!(
        sha1_file(&out.join("both.bin")),
        sha1_file(&root.join("both.bin"))
    );
    let (web, lt) = (bytes_from(&v, (w.ip)(2)), bytes_from(&v, (w.ip)(3)));
    assert!(web > 0 && lt > 0, "web seed {web}, libtorrent {lt}: {v}");
    assert_eq!(web + lt, 8_000_000, "{v}");
}

/// A magnet's `ws=` is a web seed too: the metadata comes from the
/// libtorrent peer (web seeds do not serve it), then both send pieces.
#[test]
fn a_magnets_ws_is_used_beside_the_peer_that_gave_the_metadata() {
    if !interop_ready(
        "a_magnets_ws_is_used_beside_the_peer_that_gave_the_metadata",
        &["lighttpd", LT],
    ) {
        return;
    }
    let (mut w, root, base) = web_server(1024);
    // The torrent file names no web seed: only the magnet does.
    let t = torrent_with(&w, "ws.bin", &[("ws.bin", 6_000_000)], 65536, &[], 105);
    w.lt_seed(&t, &root, 3, &["--no-tracker", "--upload-limit", "1048576"]);
    let magnet = format!(
        "magnet:?xt=urn:btih:{}&ws={}",
        info_hash(&t),
        url_escape(&format!("{base}/"))
    );
    let peer = format!("{}:6881", (w.ip)(3));
    let Done {
        out, summary: v, ..
    } = download(&w, Path::new(&magnet), 9, &["--peer", &peer], 60);
    assert_eq!(
        sha1_file(&out.join("ws.bin")),
        sha1_file(&root.join("ws.bin"))
    );
    let (web, lt) = (bytes_from(&v, (w.ip)(2)), bytes_from(&v, (w.ip)(3)));
    assert!(web > 0 && lt > 0, "web seed {web}, libtorrent {lt}: {v}");
    assert_eq!(web + lt, 6_000_000, "{v}");
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The daemon downloads from a web seed and shows it as one:
/// `webseedsSendingToUs`, and a "web seed" entry among the peers.
#[test]
fn the_daemon_shows_a_web_seed_that_is_sending() {
    if !interop_ready("the_daemon_shows_a_web_seed_that_is_sending", &["lighttpd"]) {
        return;
    }
    let (w, root, t) = web_world("d.bin", 6_000_000, 1024, 106);
    let d = crate::common::daemon::Daemon::start((w.ip)(9), &w.path("daemon"), None, &[]);
    d.ok("torrent-add", serde_json::json!({"filename": t}));
    let fields = [
        "webseedsSendingToUs",
        "peersSendingToUs",
        "peers",
        "percentDone",
    ];
    let list = d.wait_until(
        Duration::from_secs(60),
        "a web seed sending",
        &fields,
        |l| l.first().is_some_and(|t| t["webseedsSendingToUs"] == 1),
    );
    assert_eq!(list[0]["peersSendingToUs"], 0, "{list:?}");
    let web = (w.ip)(2).to_string();
    assert!(
        list[0]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["clientName"] == "web seed" && p["address"] == web.as_str()),
        "{list:?}"
    );
    d.wait_until(Duration::from_secs(60), "done", &["percentDone"], |l| {
        l.first().is_some_and(|t| t["percentDone"] == 1.0)
    });
    assert_eq!(
        sha1_file(&w.path("daemon/downloads/d.bin")),
        sha1_file(&root.join("d.bin"))
    );
}

/// Five bad web seeds and one honest (slow) one: the download completes
/// from the honest one; each bad one is handled as it deserves.
#[test]
fn bad_web_seeds_are_dropped_and_the_honest_one_finishes() {
    if !interop_ready("bad_web_seeds_are_dropped", &["lighttpd", PY]) {
        return;
    }
    let (mut w, root, honest) = web_server(2048);
    let modes = ["corrupt", "missing", "loop", "busy", "norange"];
    let mut servers = Vec::new();
    for (i, m) in modes.iter().enumerate() {
        servers.push(bad_server(&mut w, 10 + i as u8, &root, m));
    }
    let mut seeds: Vec<String> = servers.iter().map(|(u, _)| format!("{u}/")).collect();
    seeds.push(format!("{honest}/"));
    let t = torrent_with(&w, "bad.bin", &[("bad.bin", 6_000_000)], 65536, &seeds, 104);
    let Done {
        out,
        summary: v,
        log,
        peak_kib,
    } = download(&w, &t, 9, &[], 120);
    assert_eq!(
        sha1_file(&out.join("bad.bin")),
        sha1_file(&root.join("bad.bin"))
    );
    let dropped = |m: &str, why: &str| {
        let url = &servers[modes.iter().position(|x| *x == m).unwrap()].0;
        assert!(
            log.lines()
                .any(|l| l.contains(url.as_str()) && l.contains("dropped") && l.contains(why)),
            "{m}: no \"dropped ... {why}\" for {url} in:\n{log}"
        );
    };
    // Bad data: dropped by the web seed task, or banned by the engine
    // first when the download completes before the task looks again.
    let corrupt_ip = servers[0]
        .0
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap();
    assert!(
        log.lines().any(
            |l| (l.contains(servers[0].0.as_str()) && l.contains("hash check"))
                || (l.contains("banning peer") && l.contains(corrupt_ip))
        ),
        "corrupt: neither dropped nor banned:\n{log}"
    );
    dropped("missing", "404");
    dropped("loop", "redirects");
    dropped("norange", "ignored the range");
    // The busy one was asked again after its Retry-After, and served.
    let busy = &servers[3].1.lines();
    assert!(
        busy.iter().filter(|l| l.ends_with("-> 503")).count() >= 1,
        "{busy:?}"
    );
    assert!(busy.iter().any(|l| l.ends_with("-> 206")), "{busy:?}");
    assert_eq!(
        v["hash_failures"].as_u64().map(|n| n >= 1),
        Some(true),
        "{v}"
    );
    // Whole-file answers and bad data are not buffered beyond one span.
    assert!(
        peak_kib > 0 && peak_kib < 96 * 1024,
        "peak RSS {peak_kib} KiB"
    );
}

/// `xorrent create --web-seed URL` writes a `url-list` that libtorrent and
/// aria2 download from (no peers, no tracker).
#[test]
fn libtorrent_and_aria2_download_from_the_web_seed_xorrent_create_names() {
    if !interop_ready("others_read_our_url_list", &["lighttpd", LT, "aria2c"]) {
        return;
    }
    let (w, root, base) = web_server(0);
    std::fs::write(root.join("ours.bin"), random_bytes(2_000_000, 105)).unwrap();
    let t = w.path("ours.torrent");
    let out = xorrent_cmd()
        .arg("create")
        .arg(root.join("ours.bin"))
        .arg("-o")
        .arg(&t)
        .args(["--web-seed", &format!("{base}/")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let lt_out = w.path("lt-out");
    let mut lt = Proc::spawn(
        "lt_peer.py leech",
        Command::new(PY)
            .arg(repo().join("tests/interop/lt_peer.py"))
            .args(["--listen", &format!("{}:6881", (w.ip)(3))])
            .arg("--torrent")
            .arg(&t)
            .arg("--save")
            .arg(&lt_out)
            .args(["--mode", "leech", "--no-tracker", "--timeout", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    assert!(
        lt.wait_timeout(Duration::from_secs(90)).success(),
        "libtorrent"
    );
    assert_eq!(
        sha1_file(&lt_out.join("ours.bin")),
        sha1_file(&root.join("ours.bin"))
    );

    let aria_out = w.path("aria2-out");
    let (mut aria, said) = w.spawn_aria2_leech(&t, &aria_out, 4, &["--timeout", "60"]);
    let st = aria.wait_timeout(Duration::from_secs(90));
    assert!(
        st.success(),
        "aria2: {:?}",
        said.all_after_close(Duration::from_secs(2))
    );
    assert_eq!(
        sha1_file(&aria_out.join("ours.bin")),
        sha1_file(&root.join("ours.bin"))
    );
}

#[test]
fn a_mktorrent_w_torrent_downloads_from_its_web_seed() {
    if !interop_ready(
        "a_mktorrent_w_torrent_downloads",
        &["lighttpd", "mktorrent"],
    ) {
        return;
    }
    let (w, root, base) = web_server(0);
    std::fs::create_dir_all(root.join("dir/sub")).unwrap();
    std::fs::write(root.join("dir/x.bin"), random_bytes(700_000, 106)).unwrap();
    std::fs::write(root.join("dir/sub/y.bin"), random_bytes(300_001, 107)).unwrap();
    let t = w.path("m.torrent");
    let st = Command::new("mktorrent")
        .args([
            "-l",
            "16",
            "-a",
            "http://127.0.0.1:1/announce",
            "-w",
            &format!("{base}/"),
        ])
        .arg("-o")
        .arg(&t)
        .arg(root.join("dir"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let out = download(&w, &t, 9, &["--tracker-timeout", "1"], 60).out;
    assert_same_tree(&root.join("dir"), &out.join("dir"));
}

#[test]
fn no_web_seeds_ignores_them() {
    if !interop_ready("no_web_seeds_ignores_them", &[PY]) {
        return;
    }
    let mut w = World::new();
    let root = w.path("www");
    std::fs::create_dir_all(&root).unwrap();
    let (base, asked) = bad_server(&mut w, 2, &root, "honest");
    let t = torrent_with(
        &w,
        "n.bin",
        &[("n.bin", 100_000)],
        16384,
        &[format!("{base}/")],
        108,
    );
    let Running { mut p, err, .. } = start_download(&w, &t, 9, &["--no-web-seeds"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        p.exit_note().is_none(),
        "nothing to download from: it waits\n{}",
        err.text()
    );
    unsafe_kill(p.pid(), 2);
    assert_eq!(
        p.wait_timeout(Duration::from_secs(20)).code(),
        Some(130),
        "{}",
        err.text()
    );
    assert!(asked.lines().is_empty(), "{:?}", asked.lines());
    // Without the flag the same server is used.
    let out = download(&w, &t, 10, &[], 60).out;
    assert_eq!(
        sha1_file(&out.join("n.bin")),
        sha1_file(&root.join("n.bin"))
    );
    assert!(!asked.lines().is_empty());
}
