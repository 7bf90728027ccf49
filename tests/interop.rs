//! `xorrent download` against real, independent seeders (libtorrent, aria2,
//! Transmission) found through a real tracker (opentracker), each on its
//! own loopback address. Torrents are made by mktorrent. Results are
//! compared byte for byte. Needs root and the clients: see `interop_ready`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::world::*;
use crate::common::*;

/// What a test with a `kind` seeder needs installed.
fn seeder_needs(kind: &str) -> &'static [&'static str] {
    match kind {
        "libtorrent" => &[LT, "opentracker", "mktorrent"],
        "aria2" => &["aria2c", "opentracker", "mktorrent"],
        _ => &[
            "transmission-daemon",
            "transmission-remote",
            "opentracker",
            "mktorrent",
        ],
    }
}

/// Starts a `kind` seeder of `t` on host 2 and waits until it is ready.
fn seed_with(w: &mut World, kind: &str, t: &Path, data: &Path) {
    match kind {
        "libtorrent" => w.lt_seed(t, data, 2, &[]),
        "aria2" => w.aria2_seed(t, data, 2, &[]),
        _ => w.transmission_seed(t, data, 2, &[]),
    }
}

fn single_from(kind: &str, len: usize) {
    let needs = seeder_needs(kind);
    if !interop_ready(&format!("single_file_from_{kind}"), needs) {
        return;
    }
    let mut w = World::new();
    let t = single_file(&w, "big.bin", len, 20, 7);
    w.tracker(&[info_hash(&t)]);
    let data = w.path("data");
    seed_with(&mut w, kind, &t, &data);
    let (out, summary) = w.xorrent(&t, 9, Duration::from_secs(240));
    assert_eq!(
        sha1_file(&out.join("big.bin")),
        sha1_file(&data.join("big.bin"))
    );
    assert_eq!(summary["downloaded"].as_u64().unwrap(), len as u64);
}

fn multi_from(kind: &str, scale: usize) {
    let needs = seeder_needs(kind);
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
    seed_with(&mut w, kind, &t, &data);
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
        let mut c = xorrent_cmd();
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
