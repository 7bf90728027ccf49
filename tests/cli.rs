//! The command line as a user meets it: `info`, `--help`, and clear errors
//! for bad input (including a full disk).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::fake_peer::{Behaviour, FakePeer};
use crate::common::*;
use xorrent::magnet::Magnet;
use xorrent::metainfo::Torrent;

fn fixture(name: &str) -> std::path::PathBuf {
    repo().join("fixtures/conformance/torrents").join(name)
}

#[test]
fn info_json_shows_the_torrent() {
    let out = xorrent_cmd()
        .args(["info", "--json"])
        .arg(fixture(
            "anacrolix-23516C72685E8DB0C8F15553382A927F185C4F01.torrent",
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["info_hash"], "23516c72685e8db0c8f15553382a927f185c4f01");
    assert_eq!(v["files"].as_array().unwrap().len(), 4);
    assert_eq!(v["trackers"].as_array().unwrap().len(), 10);
    assert_eq!(v["private"], false);
}

#[test]
fn info_text_lists_files_trackers_and_pieces() {
    let out = xorrent_cmd()
        .arg("info")
        .arg(fixture("sample.torrent"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "name:",
        "info hash:",
        "pieces:",
        "private:     no",
        "sample/text_file.txt",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.contains("padding"),
        "pad files are not shown:\n{text}"
    );
}

#[test]
fn info_magnet_prints_one_link_that_parses_back_to_the_torrent() {
    let path = fixture("anacrolix-23516C72685E8DB0C8F15553382A927F185C4F01.torrent");
    let out = xorrent_cmd()
        .args(["info", "--magnet"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let m = Magnet::parse(text.trim_end()).unwrap();
    let t = Torrent::from_file(&path).unwrap();
    assert_eq!(m.info_hash, t.info_hash);
    assert_eq!(m.name.as_deref(), Some(t.name.as_str()));
    let trackers: Vec<String> = t.trackers.concat();
    assert_eq!(m.trackers, trackers);
    assert_eq!(m.trackers.len(), 10);

    let json = xorrent_cmd()
        .args(["info", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["magnet"], text.trim_end());
}

#[test]
fn create_magnet_prints_a_link_with_name_trackers_and_web_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("My Dir")).unwrap();
    std::fs::write(tmp.path().join("My Dir/a b.txt"), random_bytes(5000, 3)).unwrap();
    std::fs::write(tmp.path().join("My Dir/c+d"), b"x").unwrap();
    let out = xorrent_cmd()
        .current_dir(tmp.path())
        .args(["create", "My Dir", "-q", "--magnet"])
        .args([
            "-t",
            "http://t.example/ann?k=a&b",
            "-t",
            "udp://u:1,udp://v:2",
        ])
        .args(["-w", "http://w.example/My Dir/"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let m: Magnet = lines[1].parse().unwrap();
    let t = Torrent::from_file(&tmp.path().join("My Dir.torrent")).unwrap();
    assert_eq!(m.info_hash, t.info_hash);
    assert_eq!(m.info_hash.to_hex(), lines[0]);
    assert_eq!(m.name.as_deref(), Some("My Dir"));
    assert_eq!(
        m.trackers,
        ["http://t.example/ann?k=a&b", "udp://u:1", "udp://v:2"]
    );
    assert_eq!(m.web_seeds, ["http://w.example/My Dir/"]);
}

#[test]
fn info_refuses_json_and_magnet_together() {
    let out = xorrent_cmd()
        .args(["info", "--json", "--magnet"])
        .arg(fixture("sample.torrent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_malformed_torrent_gets_a_clear_error_and_exit_1() {
    let out = xorrent_cmd()
        .arg("info")
        .arg(fixture("unaligned_pieces.torrent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("'pieces' holds 24 bytes"), "{err}");
}

#[test]
fn a_v2_only_torrent_is_refused_as_unsupported() {
    let out = xorrent_cmd()
        .arg("info")
        .arg(fixture("v2_only.torrent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("not supported"));
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        &["--help"][..],
        &["download", "--help"],
        &["info", "--help"],
    ] {
        let out = xorrent_cmd().args(sub).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("Usage:"), "{text}");
    }
    let out = xorrent_cmd().args(["download", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in ["--output", "--port", "--bind", "--max-peers", "--peer"] {
        assert!(text.contains(flag), "{flag} in\n{text}");
    }
}

/// A download onto a 1 MiB tmpfs (in a private mount namespace, so root is
/// needed) stops with a clear "disk full" error and a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_download_with_a_clear_error() {
    if !interop_ready(
        "a_full_disk_stops_the_download_with_a_clear_error",
        &["unshare", "mount"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * 1024 * 1024, 12);
    let t = make_torrent(
        "big.bin",
        &[(vec!["big.bin"], data.clone())],
        64 * 1024,
        None,
        false,
    );
    let ih = xorrent::metainfo::Torrent::from_bytes(&t)
        .unwrap()
        .info_hash;
    let path = dir.path().join("t.torrent");
    std::fs::write(&path, &t).unwrap();
    let ip = loopback_block();
    let seeder = FakePeer::start(
        SocketAddr::new(ip(2).into(), 0),
        ih.0,
        Arc::new(data),
        64 * 1024,
        Behaviour::Honest,
    )
    .await;
    let mnt = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs '{m}' && exec '{bin}' download '{t}' -o '{m}/out' --bind {ip} --port 0 --no-dht --peer {p}",
        ip = ip(1),
        m = mnt.display(),
        bin = xorrent_bin().display(),
        t = path.display(),
        p = seeder.addr
    );
    let (code, err) = tokio::task::spawn_blocking(move || {
        let mut p = Proc::spawn(
            "xorrent on a full disk",
            Command::new("unshare")
                .args(["-m", "sh", "-c", &script])
                .stderr(Stdio::piped()),
        );
        let (st, err) = p.wait_with_stderr(Duration::from_secs(60));
        (st.code(), err)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("disk full"), "{err}");
    // Plain messages, not log lines (those are for --log).
    let raw = |l: &str| {
        l.get(..5)
            .is_some_and(|d| d[..4].bytes().all(|b| b.is_ascii_digit()) && d.ends_with('-'))
            || l.contains(" WARN ")
            || l.contains(" ERROR ")
    };
    assert!(!err.lines().any(raw), "{err}");
}
