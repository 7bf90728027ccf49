//! The HTTP announce as a tracker sees it: query encoding, events, BEP-12
//! fall-through past a dead tier, and `stopped` on Ctrl-C. A scripted
//! tracker records every request; a fake peer seeds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::fake_peer::{Behaviour, FakePeer};
use crate::common::fake_tracker::{announce_body, fake_tracker};
use crate::common::*;

const PIECE: usize = 16 * 1024;

fn torrent_with_tiers(data: &[u8], tiers: &[&[&str]]) -> Vec<u8> {
    // Announce-list added around a plain single-file torrent.
    let base = make_torrent(
        "data.bin",
        &[(vec!["data.bin"], data.to_vec())],
        PIECE,
        None,
        false,
    );
    let mut list = b"13:announce-listl".to_vec();
    for tier in tiers {
        list.push(b'l');
        for u in *tier {
            list.extend_from_slice(format!("{}:{}", u.len(), u).as_bytes());
        }
        list.push(b'e');
    }
    list.push(b'e');
    let mut t = b"d".to_vec();
    t.extend_from_slice(&list);
    t.extend_from_slice(&base[1..]);
    t
}

fn query_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let q = line.split_whitespace().nth(1)?.split_once('?')?.1;
    q.split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_started_and_completed_after_skipping_a_dead_tier() {
    let dir = tempfile::tempdir().unwrap();
    let ip = loopback_block();
    let data = random_bytes(300_000, 9);
    let probe = make_torrent(
        "data.bin",
        &[(vec!["data.bin"], data.clone())],
        PIECE,
        None,
        false,
    );
    let ih = xorrent::metainfo::Torrent::from_bytes(&probe)
        .unwrap()
        .info_hash;
    let seeder = FakePeer::start(
        SocketAddr::new(ip(2).into(), 0),
        ih.0,
        Arc::new(data.clone()),
        PIECE,
        Behaviour::Honest,
    )
    .await;
    let (tr, seen) = fake_tracker(&format!("{}:0", ip(3)), announce_body(&[seeder.addr])).await;
    // Tier 1: nothing listens there (and a UDP URL we do not speak yet).
    let dead = format!("http://{}:9/announce", ip(4));
    let dead_udp = format!("udp://{}:9", ip(4));
    let live = format!("http://{tr}/announce");
    let t = torrent_with_tiers(&data, &[&[&dead, &dead_udp], &[&live]]);
    assert_eq!(
        xorrent::metainfo::Torrent::from_bytes(&t)
            .unwrap()
            .info_hash,
        ih
    );
    let path = dir.path().join("t.torrent");
    std::fs::write(&path, &t).unwrap();
    let out = dir.path().join("out");
    let bind = ip(1).to_string();
    let status = tokio::task::spawn_blocking(move || {
        let mut p = Proc::spawn(
            "xorrent",
            xorrent_cmd()
                .arg("download")
                .arg(&path)
                .arg("-o")
                .arg(&out)
                .args(["--bind", &bind, "--port", "7001", "-q"]),
        );
        let st = p.wait_timeout(Duration::from_secs(60));
        (st, std::fs::read(out.join("data.bin")).unwrap())
    })
    .await
    .unwrap();
    assert!(status.0.success());
    assert!(status.1 == data);
    let lines = seen.lock().unwrap().clone();
    assert!(lines.len() >= 3, "{lines:?}");
    let events: Vec<Option<&str>> = lines.iter().map(|l| query_value(l, "event")).collect();
    assert_eq!(events[0], Some("started"), "{lines:?}");
    assert!(events.contains(&Some("completed")), "{lines:?}");
    assert_eq!(*events.last().unwrap(), Some("stopped"), "{lines:?}");
    let first = &lines[0];
    let expect_ih: String =
        ih.0.iter()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (*b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
    assert_eq!(
        query_value(first, "info_hash"),
        Some(expect_ih.as_str()),
        "{first}"
    );
    assert!(
        query_value(first, "peer_id")
            .unwrap()
            .starts_with("%2DXR0001%2D"),
        "{first}"
    );
    assert_eq!(query_value(first, "port"), Some("7001"));
    assert_eq!(query_value(first, "compact"), Some("1"));
    assert_eq!(query_value(first, "left"), Some("300000"));
    assert_eq!(query_value(first, "downloaded"), Some("0"));
    let last = lines.last().unwrap();
    assert_eq!(query_value(last, "left"), Some("0"), "{last}");
    assert_eq!(query_value(last, "downloaded"), Some("300000"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_and_sends_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let ip = loopback_block();
    let data = random_bytes(2_000_000, 10);
    let probe = make_torrent(
        "data.bin",
        &[(vec!["data.bin"], data.clone())],
        PIECE,
        None,
        false,
    );
    let ih = xorrent::metainfo::Torrent::from_bytes(&probe)
        .unwrap()
        .info_hash;
    // A peer that never answers keeps the download from finishing.
    let mute = FakePeer::start(
        SocketAddr::new(ip(2).into(), 0),
        ih.0,
        Arc::new(data.clone()),
        PIECE,
        Behaviour::Silent,
    )
    .await;
    let (tr, seen) = fake_tracker(&format!("{}:0", ip(3)), announce_body(&[mute.addr])).await;
    let t = torrent_with_tiers(&data, &[&[&format!("http://{tr}/announce")]]);
    let path = dir.path().join("t.torrent");
    std::fs::write(&path, &t).unwrap();
    let out = dir.path().join("out");
    let bind = ip(1).to_string();
    let (code, stderr) = tokio::task::spawn_blocking(move || {
        let mut p = Proc::spawn(
            "xorrent",
            xorrent_cmd()
                .arg("download")
                .arg(&path)
                .arg("-o")
                .arg(&out)
                .args(["--bind", &bind, "--port", "7002"])
                .stderr(std::process::Stdio::piped()),
        );
        std::thread::sleep(Duration::from_millis(1500));
        unsafe_kill(p.pid(), 2);
        let (st, err) = p.wait_with_stderr(Duration::from_secs(15));
        (st.code(), err)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    let lines = seen.lock().unwrap().clone();
    assert_eq!(
        query_value(&lines[0], "event"),
        Some("started"),
        "{lines:?}"
    );
    assert_eq!(
        query_value(lines.last().unwrap(), "event"),
        Some("stopped"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracker_failure_reason_is_reported_and_the_download_goes_on_with_known_peers() {
    let dir = tempfile::tempdir().unwrap();
    let ip = loopback_block();
    let data = random_bytes(200_000, 11);
    let probe = make_torrent(
        "data.bin",
        &[(vec!["data.bin"], data.clone())],
        PIECE,
        None,
        false,
    );
    let ih = xorrent::metainfo::Torrent::from_bytes(&probe)
        .unwrap()
        .info_hash;
    let seeder = FakePeer::start(
        SocketAddr::new(ip(2).into(), 0),
        ih.0,
        Arc::new(data.clone()),
        PIECE,
        Behaviour::Honest,
    )
    .await;
    let (tr, seen) = fake_tracker(
        &format!("{}:0", ip(3)),
        b"d14:failure reason12:unregisterede".to_vec(),
    )
    .await;
    let t = torrent_with_tiers(&data, &[&[&format!("http://{tr}/announce")]]);
    let path = dir.path().join("t.torrent");
    std::fs::write(&path, &t).unwrap();
    let out = dir.path().join("out");
    let peer = seeder.addr.to_string();
    let bind = ip(1).to_string();
    let (ok, stderr, got) = tokio::task::spawn_blocking(move || {
        let mut p = Proc::spawn(
            "xorrent",
            xorrent_cmd()
                .arg("download")
                .arg(&path)
                .arg("-o")
                .arg(&out)
                .args(["--bind", &bind, "--port", "7003", "--peer", &peer])
                .stderr(std::process::Stdio::piped()),
        );
        let (st, err) = p.wait_with_stderr(Duration::from_secs(30));
        (
            st.success(),
            err,
            std::fs::read(out.join("data.bin")).unwrap(),
        )
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert!(got == data);
    assert!(stderr.contains("tracker refused: unregistered"), "{stderr}");
    assert!(!seen.lock().unwrap().is_empty());
}
