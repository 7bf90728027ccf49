//! Many torrents in one process: `xorrent download` with several sources
//! shares one port and one DHT node, and the library's torrent handles
//! pause, resume and remove.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::fake_peer::{Behaviour, FakePeer};
use crate::common::fake_tracker::{announce_body, fake_tracker};
use crate::common::world::*;
use crate::common::*;
use xorrent::session::{Session, SessionConfig};
use xorrent::torrent::{AddTorrent, Source, Stage};

/// `/proc/net/{tcp,udp}` lines of sockets bound to `ip` (in `state`, hex;
/// any state when `None`).
fn sockets_on(table: &str, ip: Ipv4Addr, state: Option<&str>) -> Vec<String> {
    let o = ip.octets();
    let hex = format!("{:02X}{:02X}{:02X}{:02X}:", o[3], o[2], o[1], o[0]);
    std::fs::read_to_string(format!("/proc/net/{table}"))
        .unwrap()
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].starts_with(&hex) && state.is_none_or(|s| f[3] == s)
        })
        .map(str::to_string)
        .collect()
}

/// Sends a handshake for `ih` to `addr`; returns the info-hash answered.
fn handshake_answer(addr: SocketAddr, ih: [u8; 20]) -> [u8; 20] {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    hs.extend_from_slice(&ih);
    hs.extend_from_slice(b"-TT0001-abcdefghijkl");
    s.write_all(&hs).unwrap();
    let mut back = [0u8; 68];
    s.read_exact(&mut back).unwrap();
    back[28..48].try_into().unwrap()
}

#[test]
fn three_torrents_in_one_process_share_one_port_and_one_dht_node() {
    if !interop_ready("three_torrents_in_one_process", &[LT, "mktorrent"]) {
        return;
    }
    let mut w = World::new();
    let ta = single_file(&w, "a.bin", 3 * 1024 * 1024 + 5, 16, 31);
    let tb = single_file(&w, "b.bin", 2 * 1024 * 1024 + 7, 16, 32);
    let tc = single_file(&w, "c.bin", 1024 * 1024 + 77, 15, 33);
    let data = w.path("data");
    // A from libtorrent, B from xorrent seed, C (by magnet) from libtorrent.
    w.lt_seed(&ta, &data, 2, &["--no-tracker"]);
    w.lt_seed(&tc, &data, 3, &["--no-tracker"]);
    let mut seed_b = xorrent_cmd();
    seed_b.arg("seed").arg(&tb).arg(&data).args([
        "--bind",
        &(w.ip)(4).to_string(),
        "--port",
        "6881",
        "-q",
    ]);
    w.procs.push(Proc::spawn("xorrent seed", &mut seed_b));
    let node = w.xorrent_dht_node(5, &[SocketAddr::new((w.ip)(6).into(), 6881)]);

    let ih = |t: &PathBuf| {
        let h = info_hash(t);
        let mut b = [0u8; 20];
        hex_decode(&h, &mut b);
        (h, b)
    };
    let ((_, iha), (_, ihb), (hc, ihc)) = (ih(&ta), ih(&tb), ih(&tc));
    let magnet = format!("magnet:?xt=urn:btih:{hc}&x.pe={}:6881", (w.ip)(3));
    let me = (w.ip)(9);
    let out = w.path("out");
    let summary = w.path("summary.json");
    let mut cmd = xorrent_cmd();
    cmd.env("XORRENT_NO_DHT", "0")
        .arg("download")
        .arg(&ta)
        .arg(&tb)
        .arg(&magnet)
        .arg("-o")
        .arg(&out)
        .args(["--bind", &me.to_string(), "--port", "6881"])
        .args(["--peer", &format!("{}:6881", (w.ip)(2))])
        .args(["--peer", &format!("{}:6881", (w.ip)(4))])
        .args(["--dht-bootstrap", &node.addr.to_string()])
        .args(["--seed", "--seed-time", "6s", "--status-interval", "1"])
        .arg("--summary-json")
        .arg(&summary)
        .stderr(Stdio::piped());
    let mut p = Proc::spawn("xorrent download", &mut cmd);
    let err = Lines::follow(p.child.stderr.take().unwrap());
    err.wait_for(Duration::from_secs(120), |l| {
        l.starts_with("seeding all 3 torrents")
    })
    .unwrap_or_else(|| panic!("never seeded all three:\n{}", err.text()));

    // One listening TCP socket and one UDP socket (the DHT) for all three.
    let listening = sockets_on("tcp", me, Some("0A"));
    assert_eq!(listening.len(), 1, "{listening:?}");
    let udp = sockets_on("udp", me, None);
    assert_eq!(udp.len(), 1, "{udp:?}");
    // Each info-hash reaches its own torrent through that one port.
    let addr = SocketAddr::new(me.into(), 6881);
    for h in [iha, ihb, ihc] {
        assert_eq!(handshake_answer(addr, h), h);
    }

    let st = p.wait_timeout(Duration::from_secs(60));
    assert!(st.success(), "xorrent exited with {st}:\n{}", err.text());
    for name in ["a.bin", "b.bin", "c.bin"] {
        assert_eq!(
            sha1_file(&out.join(name)),
            sha1_file(&data.join(name)),
            "{name}"
        );
    }
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["torrents"].as_array().unwrap().len(), 3, "{s}");
}

fn hex_decode(h: &str, out: &mut [u8; 20]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap();
    }
}

fn events(seen: &Mutex<Vec<String>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|l| {
            l.split(['?', '&', ' '])
                .find_map(|kv| kv.strip_prefix("event="))
                .map(str::to_string)
        })
        .collect()
}

async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_remove_through_the_torrent_handle() {
    const PIECE: usize = 64 * 1024;
    let len = 6 * 1024 * 1024 + 321;
    let data = Arc::new(random_bytes(len, 77));
    let dir = tempfile::tempdir().unwrap();
    let probe = make_torrent(
        "p.bin",
        &[(vec!["p.bin"], data.to_vec())],
        PIECE,
        None,
        false,
    );
    let ih = xorrent::metainfo::Torrent::from_bytes(&probe)
        .unwrap()
        .info_hash;
    let seeder = FakePeer::start(
        "127.0.0.1:0".parse().unwrap(),
        ih.0,
        data.clone(),
        PIECE,
        Behaviour::Honest,
    )
    .await;
    let (tracker, seen) = fake_tracker("127.0.0.1:0", announce_body(&[seeder.addr])).await;
    let announce = format!("http://{tracker}/announce");
    let bytes = make_torrent(
        "p.bin",
        &[(vec!["p.bin"], data.to_vec())],
        PIECE,
        Some(&announce),
        false,
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"not the torrent's").unwrap();

    let cancel = tokio_util::sync::CancellationToken::new();
    let config = SessionConfig {
        bind: Some("127.0.0.1".parse().unwrap()),
        port: Some(0),
        state_dir: Some(dir.path().join("state")),
        ..SessionConfig::default()
    };
    let session = Session::start(config, &cancel).await.unwrap();
    let mut add = AddTorrent::new(Source::Bytes(bytes), out.clone());
    add.max_download_rate = 1024 * 1024;
    add.seed = Some(Default::default());
    let h = session.add(add).await.unwrap();
    assert_eq!(h.info_hash(), ih);

    wait_until(Duration::from_secs(30), "1 MiB verified", || {
        h.stats().have_bytes >= 1024 * 1024
    })
    .await;
    h.pause().await;
    let paused = h.stats();
    assert_eq!(paused.stage, Stage::Paused);
    assert_eq!(paused.connected, 0, "peers closed");
    assert_eq!(events(&seen).last().map(String::as_str), Some("stopped"));
    // Nothing moves while paused.
    let sent = seeder.seen.bytes_sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(seeder.seen.bytes_sent.load(Ordering::Relaxed), sent);
    assert_eq!(h.stats().have_bytes, paused.have_bytes);

    // Faster now; the verified pieces are not fetched again.
    h.set_rate_limits(0, 0);
    h.resume().await;
    wait_until(Duration::from_secs(60), "completion", || {
        h.stats().stage == Stage::Seeding
    })
    .await;
    let s = h.stats();
    assert_eq!(s.have_bytes, len as u64);
    let started = events(&seen).iter().filter(|e| *e == "started").count();
    assert_eq!(started, 2, "{:?}", events(&seen));
    // At most the pieces in flight at the pause (64 KiB each) again.
    let fetched = seeder.seen.bytes_sent.load(Ordering::Relaxed);
    assert!(
        fetched <= len as u64 + 2 * 1024 * 1024,
        "{fetched} bytes sent for {len}"
    );
    assert_eq!(std::fs::read(out.join("p.bin")).unwrap(), *data);

    session.remove(&ih, true).await.unwrap();
    assert!(!out.join("p.bin").exists(), "its file is gone");
    assert!(out.join("keep.txt").exists(), "nothing else is touched");
    assert!(session.get(&ih).is_none());
    session.shutdown().await;
}
