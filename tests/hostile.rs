//! Scripted hostile peers against the real binary: whatever they do, the
//! download completes with the right bytes from an honest peer, and the
//! misbehaving connection is dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::common::fake_peer::{Behaviour, FakePeer};
use crate::common::*;
use sha1::{Digest, Sha1};

const PIECE: usize = 32 * 1024;

struct Setup {
    dir: tempfile::TempDir,
    torrent: std::path::PathBuf,
    data: Arc<Vec<u8>>,
    info_hash: [u8; 20],
    /// The test's loopback block: xorrent on host 1, peers above.
    ip: Box<dyn Fn(u8) -> Ipv4Addr + Send + Sync>,
}

fn setup(len: usize, seed: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(len, seed);
    let t = make_torrent(
        "payload.bin",
        &[(vec!["payload.bin"], data.clone())],
        PIECE,
        None,
        false,
    );
    let parsed = xorrent::metainfo::Torrent::from_bytes(&t).unwrap();
    let torrent = dir.path().join("t.torrent");
    std::fs::write(&torrent, &t).unwrap();
    Setup {
        dir,
        torrent,
        data: Arc::new(data),
        info_hash: parsed.info_hash.0,
        ip: Box::new(loopback_block()),
    }
}

/// Runs `xorrent download` against `peers`; returns the summary JSON.
fn download(s: &Setup, peers: &[SocketAddr], extra: &[&str]) -> serde_json::Value {
    let out = s.dir.path().join("out");
    let summary = s.dir.path().join("summary.json");
    let mut cmd = xorrent_cmd();
    cmd.arg("download")
        .arg(&s.torrent)
        .arg("-o")
        .arg(&out)
        .arg("-q");
    cmd.args(["--bind", &(s.ip)(1).to_string(), "--port", "0"]);
    cmd.arg("--summary-json").arg(&summary);
    for p in peers {
        cmd.arg("--peer").arg(p.to_string());
    }
    cmd.args(extra);
    let mut p = Proc::spawn("xorrent", &mut cmd);
    let status = p.wait_timeout(Duration::from_secs(90));
    assert!(status.success(), "xorrent exited with {status}");
    assert_same(&out.join("payload.bin"), &s.data);
    serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap()
}

fn assert_same(path: &Path, data: &[u8]) {
    let got = std::fs::read(path).unwrap();
    assert_eq!(got.len(), data.len(), "length of {}", path.display());
    assert!(
        Sha1::digest(&got) == Sha1::digest(data),
        "content of {} differs",
        path.display()
    );
}

fn bytes_from(summary: &serde_json::Value, addr: SocketAddr) -> u64 {
    summary["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == addr.to_string())
        .map_or(0, |p| p["bytes"].as_u64().unwrap())
}

async fn peer(s: &Setup, host: u8, b: Behaviour) -> FakePeer {
    let addr = SocketAddr::new((s.ip)(host).into(), 0);
    FakePeer::start(addr, s.info_hash, s.data.clone(), PIECE, b).await
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blocks_are_refetched_from_an_honest_peer_and_the_liar_is_banned() {
    let s = Arc::new(setup(2 * 1024 * 1024 + 1234, 1));
    let bad = peer(&s, 2, Behaviour::Corrupt).await;
    let good = peer(&s, 3, Behaviour::Honest).await;
    let (s2, peers) = (s.clone(), vec![bad.addr, good.addr]);
    let summary = blocking(move || download(&s2, &peers, &[])).await.unwrap();
    assert!(
        bad.seen.bytes_sent.load(Ordering::Relaxed) > 0,
        "the corrupt peer was used"
    );
    assert!(summary["hash_failures"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["banned"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| *b == bad.addr.ip().to_string()),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4_gib_length_prefix_disconnects_the_peer() {
    let s = Arc::new(setup(512 * 1024, 2));
    let bad = peer(&s, 2, Behaviour::HugeLength).await;
    let good = peer(&s, 3, Behaviour::Honest).await;
    let (s2, peers) = (s.clone(), vec![bad.addr, good.addr]);
    let summary = blocking(move || download(&s2, &peers, &[])).await.unwrap();
    assert_eq!(bytes_from(&summary, bad.addr), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        bad.seen.closed_by_client.load(Ordering::Relaxed) >= 1,
        "client hung up on the liar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitfield_of_the_wrong_length_disconnects_the_peer() {
    let s = Arc::new(setup(100 * PIECE + 5, 3));
    let bad = peer(&s, 2, Behaviour::LongBitfield).await;
    let good = peer(&s, 3, Behaviour::Honest).await;
    let (s2, peers) = (s.clone(), vec![bad.addr, good.addr]);
    let summary = blocking(move || download(&s2, &peers, &[])).await.unwrap();
    assert_eq!(
        bad.seen.requests.load(Ordering::Relaxed),
        0,
        "no requests to a broken peer"
    );
    assert_eq!(bytes_from(&summary, bad.addr), 0);
    assert!(bad.seen.closed_by_client.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bitfield_with_spare_bits_set_disconnects_the_peer() {
    let s = Arc::new(setup(13 * PIECE, 4));
    let bad = peer(&s, 2, Behaviour::SpareBits).await;
    let good = peer(&s, 3, Behaviour::Honest).await;
    let (s2, peers) = (s.clone(), vec![bad.addr, good.addr]);
    let summary = blocking(move || download(&s2, &peers, &[])).await.unwrap();
    assert_eq!(bad.seen.requests.load(Ordering::Relaxed), 0);
    assert_eq!(bytes_from(&summary, bad.addr), 0);
    assert!(bad.seen.closed_by_client.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_blocks_are_ignored() {
    let s = Arc::new(setup(1024 * 1024, 5));
    let pushy = peer(&s, 2, Behaviour::Unrequested).await;
    let (s2, peers) = (s.clone(), vec![pushy.addr]);
    let summary = blocking(move || download(&s2, &peers, &[])).await.unwrap();
    // The pushed block (wrong bytes) never reached a piece: no hash failure.
    assert_eq!(summary["hash_failures"].as_u64().unwrap(), 0, "{summary}");
    assert!(summary["wasted"].as_u64().unwrap() >= 16_384, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_of_a_peer_that_stops_answering_go_to_others() {
    let s = Arc::new(setup(1024 * 1024, 6));
    let mute = peer(&s, 2, Behaviour::Silent).await;
    // The honest peer comes up late, so at first only the mute one holds
    // requests; they must time out and move over once it is reachable.
    let good_addr = SocketAddr::new((s.ip)(3).into(), 40031);
    let (s2, m) = (s.clone(), mute.addr);
    let dl = blocking(move || download(&s2, &[m, good_addr], &["--request-timeout", "2"]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let good = FakePeer::start(
        good_addr,
        s.info_hash,
        s.data.clone(),
        PIECE,
        Behaviour::Honest,
    )
    .await;
    let summary = dl.await.unwrap();
    assert!(
        mute.seen.closed_by_client.load(Ordering::Relaxed) >= 1,
        "the mute peer was dropped"
    );
    assert!(
        mute.seen.requests.load(Ordering::Relaxed) > 0,
        "the mute peer was asked"
    );
    assert_eq!(bytes_from(&summary, mute.addr), 0);
    assert_eq!(bytes_from(&summary, good.addr), s.data.len() as u64);
}
