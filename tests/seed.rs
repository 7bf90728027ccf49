//! `xorrent seed` serving real leechers (libtorrent, aria2, Transmission)
//! through opentracker, and a swarm of xorrent downloaders that trade
//! pieces with each other while the seeder's upload is capped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::world::*;
use crate::common::*;

/// Starts `xorrent seed` on `host`:6881 and waits until it listens and has
/// announced.
fn xorrent_seed(w: &mut World, torrent: &Path, data: &Path, host: u8, extra: &[&str]) -> Proc {
    let ip = (w.ip)(host);
    let p = Proc::spawn(
        "xorrent seed",
        xorrent_cmd()
            .arg("seed")
            .arg(torrent)
            .arg(data)
            .args(["--bind", &ip.to_string(), "--port", "6881", "-q"])
            .arg("--summary-json")
            .arg(w.path(&format!("seed-{host}.json")))
            .args(extra),
    );
    let addr = SocketAddr::new(ip.into(), 6881);
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "xorrent seed never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The first announce goes out as the listener comes up.
    std::thread::sleep(Duration::from_millis(500));
    p
}

fn lt_leech(w: &World, torrent: &Path, out: &Path, host: u8) {
    let listen = format!("{}:6881", (w.ip)(host));
    let mut p = Proc::spawn(
        "libtorrent leecher",
        Command::new("/usr/bin/python3")
            .arg(repo().join("tests/interop/lt_peer.py"))
            .args([
                "--listen",
                &listen,
                "--mode",
                "leech",
                "--timeout",
                "150",
                "--torrent",
            ])
            .arg(torrent)
            .arg("--save")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        p.wait_timeout(Duration::from_secs(170)).success(),
        "libtorrent leecher failed"
    );
}

fn aria2_leech(w: &World, torrent: &Path, out: &Path, host: u8) {
    let home = w.path(&format!("aria2-home-{host}"));
    std::fs::create_dir_all(&home).unwrap();
    let mut p = Proc::spawn(
        "aria2 leecher",
        Command::new("aria2c")
            .env("HOME", &home)
            .args([
                "--no-conf",
                "--interface",
                &(w.ip)(host).to_string(),
                "--listen-port=6881",
            ])
            .args([
                "--enable-dht=false",
                "--enable-dht6=false",
                "--bt-enable-lpd=false",
            ])
            .args([
                "--enable-peer-exchange=false",
                "--disable-ipv6=true",
                "--seed-time=0",
            ])
            .args([
                "--check-integrity=true",
                "--file-allocation=none",
                "--summary-interval=0",
            ])
            .args(["--console-log-level=warn", "--enable-color=false"])
            .arg(format!("--dir={}", out.display()))
            .arg(torrent)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        p.wait_timeout(Duration::from_secs(170)).success(),
        "aria2 leecher failed"
    );
}

/// Transmission will not dial 127.x peers, so it announces first and the
/// xorrent seeder, finding it at the tracker, connects to it.
fn transmission_leech_then_seed(w: &mut World, torrent: &Path, data: &Path, out: &Path) {
    let cfg = w.path("transmission-leech");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::create_dir_all(out).unwrap();
    let mut leech = Proc::spawn(
        "transmission leecher",
        Command::new("bash")
            .arg(repo().join("tests/interop/transmission_leech.sh"))
            .arg(torrent)
            .arg(out)
            .arg((w.ip)(5).to_string())
            .arg("6881")
            .arg(&cfg)
            .args(["--ready-timeout", "150"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = leech.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l == "ANNOUNCED" => break,
            Ok(_) => {}
            Err(_) => panic!("transmission leecher never announced"),
        }
    }
    let _seed = xorrent_seed(w, torrent, data, 2, &[]);
    assert!(
        leech.wait_timeout(Duration::from_secs(170)).success(),
        "transmission leecher failed"
    );
}

fn gate(test: &str, client: &[&str]) -> bool {
    let mut needs = vec!["opentracker", "mktorrent"];
    needs.extend_from_slice(client);
    interop_ready(test, &needs)
}

fn serve_to(kind: &str, multi: bool) {
    let client: &[&str] = match kind {
        "libtorrent" => &[LT],
        "aria2" => &["aria2c"],
        _ => &[
            "transmission-daemon",
            "transmission-remote",
            "transmission-show",
        ],
    };
    if !gate(&format!("{kind}_leecher_from_xorrent_seed"), client) {
        return;
    }
    let mut w = World::new();
    let (t, name) = if multi {
        (
            multi_file(&w, if kind == "transmission" { 2 } else { 8 }, 16),
            "tree",
        )
    } else {
        let len = if kind == "transmission" {
            3 << 20
        } else {
            24 << 20
        };
        (single_file(&w, "big.bin", len + 4321, 18, 31), "big.bin")
    };
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    let out = w.path("leech-out");
    match kind {
        "transmission" => transmission_leech_then_seed(&mut w, &t, &data, &out),
        k => {
            let _seed = xorrent_seed(&mut w, &t, &data, 2, &[]);
            if k == "libtorrent" {
                lt_leech(&w, &t, &out, 5);
            } else {
                aria2_leech(&w, &t, &out, 5);
            }
        }
    }
    let (a, b) = (data.join(name), out.join(name));
    if multi && kind == "transmission" {
        // Transmission 3.00 does not create empty files; all others must match.
        for f in walk_files(&a) {
            let got = b.join(&f);
            if std::fs::metadata(a.join(&f)).unwrap().len() == 0 && !got.exists() {
                continue;
            }
            assert_eq!(sha1_file(&a.join(&f)), sha1_file(&got), "{}", f.display());
        }
    } else if multi {
        assert_same_tree(&a, &b);
    } else {
        assert_eq!(sha1_file(&a), sha1_file(&b));
    }
}

#[test]
fn a_libtorrent_leecher_downloads_a_single_file_from_xorrent_seed() {
    serve_to("libtorrent", false);
}

#[test]
fn a_libtorrent_leecher_downloads_a_multi_file_torrent_from_xorrent_seed() {
    serve_to("libtorrent", true);
}

#[test]
fn an_aria2_leecher_downloads_a_single_file_from_xorrent_seed() {
    serve_to("aria2", false);
}

#[test]
fn an_aria2_leecher_downloads_a_multi_file_torrent_from_xorrent_seed() {
    serve_to("aria2", true);
}

#[test]
fn a_transmission_leecher_downloads_a_single_file_from_xorrent_seed() {
    serve_to("transmission", false);
}

#[test]
fn a_transmission_leecher_downloads_a_multi_file_torrent_from_xorrent_seed() {
    serve_to("transmission", true);
}

#[test]
fn seed_refuses_data_that_does_not_match() {
    let w = World::new();
    let data = w.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let content = random_bytes(300_000, 41);
    let t = make_torrent(
        "f.bin",
        &[(vec!["f.bin"], content.clone())],
        16_384,
        None,
        false,
    );
    let tp = w.path("f.torrent");
    std::fs::write(&tp, t).unwrap();
    let mut bad = content;
    bad[20_000] ^= 1;
    bad[200_000] ^= 1;
    std::fs::write(data.join("f.bin"), bad).unwrap();
    let out = xorrent_cmd()
        .args(["seed", "-q", "--bind", "127.0.0.1", "--port", "0"])
        .arg(&tp)
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("2 of 19 pieces"), "{err}");
}

/// One capped seeder, six xorrent downloaders that keep seeding: they
/// finish close to the best the seeder's cap allows, because they serve
/// each other, and the seeder sends little more than one copy.
#[test]
fn downloaders_share_pieces_so_a_capped_seeder_sends_about_one_copy() {
    if !gate("downloaders_share_pieces", &[]) {
        return;
    }
    let mut w = World::new();
    let len: usize = 128 << 20;
    let cap = 20u64 << 20;
    let t = single_file(&w, "big.bin", len, 18, 51);
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    let mut seeder = xorrent_seed(&mut w, &t, &data, 2, &["--max-upload-rate", "20M"]);
    let mut leechers = Vec::new();
    let mut lines = Vec::new();
    for i in 0..6u8 {
        let host = 10 + i;
        let mut p = Proc::spawn(
            "xorrent leecher",
            xorrent_cmd()
                .arg("download")
                .arg(&t)
                .arg("-o")
                .arg(w.path(&format!("out-{host}")))
                .args([
                    "--bind",
                    &(w.ip)(host).to_string(),
                    "--port",
                    "6881",
                    "--seed",
                ])
                .args(["--status-interval", "1", "--summary-json"])
                .arg(w.path(&format!("leech-{host}.json")))
                .stderr(Stdio::piped()),
        );
        let err = p.child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.starts_with("seeding:") {
                    let _ = tx.send(());
                }
            }
        });
        lines.push(rx);
        leechers.push((host, p));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for rx in &lines {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .expect("a leecher did not finish in time");
    }
    let ideal = len as f64 / cap as f64;
    let mut slowest = 0f64;
    for (host, p) in &mut leechers {
        unsafe_kill(p.pid(), 2);
        assert!(p.wait_timeout(Duration::from_secs(20)).success());
        let out = w.path(&format!("out-{host}"));
        assert_eq!(
            sha1_file(&out.join("big.bin")),
            sha1_file(&data.join("big.bin"))
        );
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(w.path(&format!("leech-{host}.json"))).unwrap())
                .unwrap();
        slowest = slowest.max(s["completed_after_secs"].as_f64().unwrap());
    }
    unsafe_kill(seeder.pid(), 2);
    assert!(seeder.wait_timeout(Duration::from_secs(20)).success());
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("seed-2.json")).unwrap()).unwrap();
    let uploaded = s["uploaded"].as_u64().unwrap() as f64;
    let _ = writeln_stderr(&format!(
        "swarm: seeder uploaded {:.2}x the file, slowest leecher {slowest:.2}s (ideal {ideal:.2}s, {:.2}x)",
        uploaded / len as f64,
        slowest / ideal
    ));
    assert!(
        uploaded <= 1.5 * len as f64,
        "seeder uploaded {uploaded} bytes"
    );
    assert!(
        slowest <= 1.6 * ideal,
        "slowest leecher took {slowest:.2}s, ideal {ideal:.2}s"
    );
}

fn writeln_stderr(s: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{s}")
}

fn walk_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// A directory torrent made by `xorrent create` downloads in libtorrent and
/// in aria2 (served by `xorrent seed`).
#[test]
fn a_torrent_made_by_xorrent_create_downloads_in_libtorrent_and_aria2() {
    if !gate(
        "a_torrent_made_by_xorrent_create_downloads",
        &[LT, "aria2c"],
    ) {
        return;
    }
    let mut w = World::new();
    // Lay out the files with the usual helper, then make our own torrent.
    let _ = multi_file(&w, 8, 16);
    let t = w.path("ours.torrent");
    let st = xorrent_cmd()
        .args([
            "create",
            "-q",
            "--piece-length",
            "32K",
            "-t",
            &w.announce(),
            "-o",
        ])
        .arg(&t)
        .arg(w.path("data/tree"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "xorrent create failed");
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    let _seed = xorrent_seed(&mut w, &t, &data, 2, &[]);
    let lt_out = w.path("lt-out");
    lt_leech(&w, &t, &lt_out, 5);
    assert_same_tree(&data.join("tree"), &lt_out.join("tree"));
    let aria_out = w.path("aria-out");
    aria2_leech(&w, &t, &aria_out, 6);
    assert_same_tree(&data.join("tree"), &aria_out.join("tree"));
}
