//! BEP-6 (fast), BEP-9 (metadata) and BEP-10 (extension protocol) against
//! scripted peers, on loopback:
//! - magnets: a peer serving wrong metadata is caught, cut off and never
//!   used for data; an honest peer that fed the same failed attempt is
//!   kept; peers claiming absurd sizes or only rejecting do not stop the
//!   download; a magnet whose only peer lies never writes data;
//! - xorrent downloading from a fast seeder: only allowed-fast pieces are
//!   requested while choked, rejected blocks are asked for again, and
//!   `have all` without the fast bit drops the peer;
//! - `xorrent seed` facing a scripted leecher: `have all`, the BEP-6
//!   allowed-fast set, rejects while choking, one answer per cancelled
//!   request, the info dictionary over ut_metadata, and no fast messages
//!   to a peer without the bit.
//!
//! Every test has its own loopback blocks (`loopback_block`, a /24 each;
//! the leecher its own where the allowed-fast set depends on it), the DHT
//! off, and a bounded wait on every process and socket.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::fake_peer::*;
use crate::common::*;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PIECE: usize = 32 * 1024;
const BLOCK: u32 = 16 * 1024;
/// Magnet and BEP-6 downloads here are a few hundred KiB on loopback.
const DOWNLOAD_LIMIT: Duration = Duration::from_secs(90);

/// `ip` with a port picked by the OS.
fn any_port(ip: Ipv4Addr) -> SocketAddr {
    SocketAddr::new(ip.into(), 0)
}

/// A torrent (no announce), its byte stream and its info dictionary.
struct Content {
    dir: tempfile::TempDir,
    torrent: PathBuf,
    info: Arc<Vec<u8>>,
    ih: [u8; 20],
    data: Arc<Vec<u8>>,
}

/// The info dictionary inside a `make_torrent` file without announce:
/// `d4:info<info>e`.
fn info_of(torrent: &[u8]) -> Vec<u8> {
    assert!(torrent.starts_with(b"d4:info") && torrent.ends_with(b"e"));
    torrent[7..torrent.len() - 1].to_vec()
}

fn content(len: usize, seed: u64) -> Content {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(len, seed);
    let t = make_torrent(
        "payload.bin",
        &[(vec!["payload.bin"], data.clone())],
        PIECE,
        None,
        false,
    );
    let info = info_of(&t);
    let ih: [u8; 20] = Sha1::digest(&info).into();
    let torrent = dir.path().join("t.torrent");
    std::fs::write(&torrent, &t).unwrap();
    Content {
        dir,
        torrent,
        info: Arc::new(info),
        ih,
        data: Arc::new(data),
    }
}

/// Another torrent's info dictionary of exactly `c`'s length (same name
/// and size, other bytes): valid bencode with the wrong hash, the most
/// plausible lie.
fn other_info(c: &Content, seed: u64) -> Arc<Vec<u8>> {
    let other = random_bytes(c.data.len(), seed);
    let t = make_torrent(
        "payload.bin",
        &[(vec!["payload.bin"], other)],
        PIECE,
        None,
        false,
    );
    let lie = info_of(&t);
    assert_eq!(lie.len(), c.info.len());
    assert_ne!(lie, *c.info);
    Arc::new(lie)
}

/// 400 small files with long names, `tree/NNN-nnn…n.bin`, and their
/// torrent: an info dictionary of four ut_metadata pieces (the last
/// short) and 19 data pieces of 32 KiB (the last short).
fn tree() -> (Vec<(String, Vec<u8>)>, Vec<u8>) {
    let files: Vec<(String, Vec<u8>)> = (0..400u64)
        .map(|i| {
            let name = format!("{i:03}-{}.bin", "n".repeat(90));
            (name, random_bytes(1500, 1000 + i))
        })
        .collect();
    let list: Vec<(Vec<&str>, Vec<u8>)> = files
        .iter()
        .map(|(n, d)| (vec![n.as_str()], d.clone()))
        .collect();
    let t = make_torrent("tree", &list, PIECE, None, true);
    let info_len = info_of(&t).len();
    assert!(
        info_len > 3 * 16384 && info_len <= 4 * 16384,
        "{info_len} bytes"
    );
    (files, t)
}

fn magnet(ih: &[u8; 20], peers: &[SocketAddr]) -> String {
    let mut m = format!("magnet:?xt=urn:btih:{}", hex::encode(ih));
    for p in peers {
        m += &format!("&x.pe={p}");
    }
    m
}

struct Run {
    status: ExitStatus,
    stderr: String,
    out: PathBuf,
    summary: PathBuf,
}

/// `xorrent download SOURCE -o DIR/out --summary-json DIR/summary.json`
/// from `bind`; waits at most `limit`, or sends Ctrl-C after
/// `interrupt_after` and waits 15 s more.
fn xorrent_download(
    c: &Content,
    bind: Ipv4Addr,
    source: &str,
    extra: &[&str],
    interrupt_after: Option<Duration>,
) -> Run {
    let out = c.dir.path().join("out");
    let summary = c.dir.path().join("summary.json");
    let mut cmd = xorrent_cmd();
    cmd.arg("download")
        .arg(source)
        .arg("-o")
        .arg(&out)
        .arg("-q")
        .args(["--bind", &bind.to_string(), "--port", "0"])
        .arg("--summary-json")
        .arg(&summary)
        .args(extra)
        .stderr(Stdio::piped());
    let mut p = Proc::spawn("xorrent download", &mut cmd);
    let (status, stderr) = match interrupt_after {
        None => p.wait_with_stderr(DOWNLOAD_LIMIT),
        Some(t) => {
            std::thread::sleep(t);
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "xorrent exited before the interrupt"
            );
            unsafe_kill(p.pid(), 2);
            p.wait_with_stderr(Duration::from_secs(15))
        }
    };
    Run {
        status,
        stderr,
        out,
        summary,
    }
}

/// Asserts a clean, complete download of `c` and returns the summary.
fn assert_complete(c: &Content, r: &Run) -> serde_json::Value {
    assert!(r.status.success(), "xorrent: {}\n{}", r.status, r.stderr);
    let got = std::fs::read(r.out.join("payload.bin")).unwrap();
    assert!(got == *c.data, "downloaded bytes differ");
    serde_json::from_slice(&std::fs::read(&r.summary).unwrap()).unwrap()
}

fn bytes_from(summary: &serde_json::Value, addr: SocketAddr) -> u64 {
    summary["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["addr"] == addr.to_string())
        .map_or(0, |p| p["bytes"].as_u64().unwrap())
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

/// A full seeder with a metadata offer.
fn meta_seeder(c: &Content, size: u64, bytes: Option<Arc<Vec<u8>>>, delay: Duration) -> Script {
    Script {
        metadata: Some(MetaOffer {
            size,
            bytes,
            delay,
            reply_delay: Duration::ZERO,
        }),
        ..Script::seeder(c.ih, c.data.clone(), PIECE, Behaviour::Honest)
    }
}

// ---------------------------------------------------------------------
// Magnets: lying metadata peers.

/// The liar answers first (the honest peer holds back its extended
/// handshake), so its bytes are hashed and refused before the honest
/// peer's are asked for.
const HONEST_DELAY: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_wrong_metadata_is_cut_off_and_the_honest_peer_completes_the_magnet() {
    let c = Arc::new(content(8 * PIECE + 1000, 81));
    let ip = loopback_block();
    let lie = other_info(&c, 82);
    let size = c.info.len() as u64;
    // The liar also seeds real data: if it were dialled again for the
    // download, it would be asked for blocks.
    let liar = FakePeer::start_script(
        any_port(ip(2)),
        meta_seeder(&c, size, Some(lie), Duration::ZERO),
    )
    .await;
    let honest = FakePeer::start_script(
        any_port(ip(3)),
        meta_seeder(&c, size, Some(c.info.clone()), HONEST_DELAY),
    )
    .await;
    let m = magnet(&c.ih, &[liar.addr, honest.addr]);
    let (c2, saved) = (c.clone(), c.dir.path().join("saved.torrent"));
    let saved2 = saved.clone();
    let run = blocking(move || {
        let save = saved2.to_str().unwrap().to_string();
        xorrent_download(&c2, ip(1), &m, &["--save-torrent", &save], None)
    })
    .await
    .unwrap();
    let summary = assert_complete(&c, &run);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ls = &liar.seen;
    assert!(
        ls.metadata_requests.load(Ordering::Relaxed) >= 1,
        "the liar was asked"
    );
    assert_eq!(
        ls.connections.load(Ordering::Relaxed),
        1,
        "the liar was never dialled again"
    );
    assert_eq!(
        ls.requests.load(Ordering::Relaxed),
        0,
        "no block requests to the liar"
    );
    assert_eq!(bytes_from(&summary, liar.addr), 0);
    assert_eq!(bytes_from(&summary, honest.addr), c.data.len() as u64);
    // Cut off as soon as its metadata failed, not when the fetch ended:
    // the honest peer's metadata connection outlived it by its delay.
    let liar_end = ls.ended();
    assert!(
        liar_end.first().is_some_and(|e| e.by_client),
        "{liar_end:?}"
    );
    assert!(
        liar_end[0].after < HONEST_DELAY / 2,
        "the liar stayed connected {:?}",
        liar_end[0].after
    );
    assert!(honest.seen.metadata_requests.load(Ordering::Relaxed) >= 1);

    let t = xorrent::metainfo::Torrent::from_file(&saved).unwrap();
    assert_eq!(
        t.info_hash.0, c.ih,
        "--save-torrent wrote the magnet's torrent"
    );
    assert!(t.info_bytes == *c.info);
}

/// A liar that names a size the fetcher refuses is never asked for
/// metadata; it has no pieces either, so everything comes from the honest
/// peer.
async fn magnet_despite_a_size_liar(seed: u64, claimed: u64) {
    let c = Arc::new(content(6 * PIECE + 77, seed));
    let ip = loopback_block();
    let liar = FakePeer::start_script(
        any_port(ip(2)),
        Script {
            announce: Announce::Nothing,
            ..meta_seeder(&c, claimed, Some(c.info.clone()), Duration::ZERO)
        },
    )
    .await;
    let size = c.info.len() as u64;
    let honest = FakePeer::start_script(
        any_port(ip(3)),
        meta_seeder(&c, size, Some(c.info.clone()), HONEST_DELAY),
    )
    .await;
    let m = magnet(&c.ih, &[liar.addr, honest.addr]);
    let c2 = c.clone();
    let run = blocking(move || xorrent_download(&c2, ip(1), &m, &[], None))
        .await
        .unwrap();
    let summary = assert_complete(&c, &run);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ls = &liar.seen;
    assert_eq!(
        ls.metadata_requests.load(Ordering::Relaxed),
        0,
        "a size of {claimed} was believed"
    );
    let first = ls.ended();
    assert!(
        first
            .iter()
            .find(|e| e.conn == 1)
            .is_some_and(|e| e.by_client && e.after < HONEST_DELAY / 2),
        "the size liar's metadata connection was not refused at once: {first:?}"
    );
    assert_eq!(bytes_from(&summary, honest.addr), c.data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_a_2_pow_40_byte_info_dictionary_does_not_stop_the_magnet() {
    magnet_despite_a_size_liar(85, 1 << 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_a_size_just_over_the_cap_does_not_stop_the_magnet() {
    magnet_despite_a_size_liar(86, xorrent::magnet::metadata::MAX_SIZE + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_only_rejects_metadata_requests_does_not_stop_the_magnet() {
    let c = Arc::new(content(5 * PIECE + 3, 86));
    let ip = loopback_block();
    let size = c.info.len() as u64;
    let refuser = FakePeer::start_script(
        any_port(ip(2)),
        Script {
            announce: Announce::Nothing,
            ..meta_seeder(&c, size, None, Duration::ZERO)
        },
    )
    .await;
    let honest = FakePeer::start_script(
        any_port(ip(3)),
        meta_seeder(&c, size, Some(c.info.clone()), HONEST_DELAY),
    )
    .await;
    let m = magnet(&c.ih, &[refuser.addr, honest.addr]);
    let c2 = c.clone();
    let run = blocking(move || xorrent_download(&c2, ip(1), &m, &[], None))
        .await
        .unwrap();
    let summary = assert_complete(&c, &run);
    assert!(
        refuser.seen.metadata_requests.load(Ordering::Relaxed) >= 1,
        "the refusing peer was asked first"
    );
    // The reject freed the piece at once, not after the 10 s request
    // timeout: the honest peer was asked as soon as it could be.
    let asked = honest.seen.metadata_log.lock().unwrap().clone();
    assert!(
        asked.first().is_some_and(
            |&(conn, _, after)| conn == 1 && after < HONEST_DELAY + Duration::from_secs(3)
        ),
        "the honest peer was asked late: {asked:?}"
    );
    assert_eq!(bytes_from(&summary, honest.addr), c.data.len() as u64);
}

/// A size inside the cap but wrong, with junk for every piece of it: the
/// attempt at that size fails its hash and the honest size follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_claiming_a_plausible_wrong_size_is_caught_by_the_hash() {
    let c = Arc::new(content(7 * PIECE + 5, 87));
    let ip = loopback_block();
    let claimed = c.info.len() + 20_000;
    let junk = Arc::new(random_bytes(claimed, 88));
    let liar = FakePeer::start_script(
        any_port(ip(2)),
        meta_seeder(&c, claimed as u64, Some(junk), Duration::ZERO),
    )
    .await;
    let honest = FakePeer::start_script(
        any_port(ip(3)),
        meta_seeder(&c, c.info.len() as u64, Some(c.info.clone()), HONEST_DELAY),
    )
    .await;
    let m = magnet(&c.ih, &[liar.addr, honest.addr]);
    let c2 = c.clone();
    let run = blocking(move || xorrent_download(&c2, ip(1), &m, &[], None))
        .await
        .unwrap();
    let summary = assert_complete(&c, &run);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ls = &liar.seen;
    assert!(
        ls.metadata_requests.load(Ordering::Relaxed) >= 2,
        "every piece of the claimed size was asked of the liar"
    );
    assert_eq!(ls.connections.load(Ordering::Relaxed), 1);
    assert_eq!(ls.requests.load(Ordering::Relaxed), 0);
    assert!(ls
        .ended()
        .first()
        .is_some_and(|e| e.after < HONEST_DELAY / 2));
    assert_eq!(bytes_from(&summary, honest.addr), c.data.len() as u64);
}

/// The liar answers late, so the honest peer is asked for the other
/// pieces meanwhile and both feed one attempt. Its mismatch cannot tell
/// them apart: the honest peer must not be dropped with the liar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_peer_that_shared_a_failed_attempt_with_a_liar_still_completes_the_magnet() {
    let (files, t) = tree();
    let info = info_of(&t);
    let dir = tempfile::tempdir().unwrap();
    let torrent = dir.path().join("tree.torrent");
    std::fs::write(&torrent, &t).unwrap();
    let c = Arc::new(Content {
        ih: Sha1::digest(&info).into(),
        data: Arc::new(files.iter().flat_map(|(_, d)| d.clone()).collect()),
        info: Arc::new(info),
        torrent,
        dir,
    });
    let size = c.info.len() as u64;
    let lie = Arc::new(c.info.iter().map(|b| b ^ 0xFF).collect::<Vec<u8>>());
    let ip = loopback_block();
    let liar = FakePeer::start_script(
        any_port(ip(2)),
        Script {
            metadata: Some(MetaOffer {
                size,
                bytes: Some(lie),
                delay: Duration::ZERO,
                reply_delay: Duration::from_secs(1),
            }),
            announce: Announce::Nothing,
            ..Script::seeder(c.ih, c.data.clone(), PIECE, Behaviour::Honest)
        },
    )
    .await;
    let honest = FakePeer::start_script(
        any_port(ip(3)),
        meta_seeder(&c, size, Some(c.info.clone()), Duration::from_millis(300)),
    )
    .await;
    let m = magnet(&c.ih, &[liar.addr, honest.addr]);
    let c2 = c.clone();
    let run = blocking(move || xorrent_download(&c2, ip(1), &m, &[], None))
        .await
        .unwrap();
    assert!(
        run.status.success(),
        "xorrent: {}\n{}",
        run.status,
        run.stderr
    );
    for (name, bytes) in &files {
        let got = std::fs::read(run.out.join("tree").join(name)).unwrap();
        assert!(got == *bytes, "{name} differs");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&run.summary).unwrap()).unwrap();
    assert_eq!(bytes_from(&summary, honest.addr), c.data.len() as u64);

    // The scenario: both were asked before the liar's first answer.
    let first = |s: &Seen| s.metadata_log.lock().unwrap().first().copied();
    assert!(first(&liar.seen).is_some_and(|(conn, _, _)| conn == 1));
    assert!(
        first(&honest.seen)
            .is_some_and(|(conn, _, after)| conn == 1 && after < Duration::from_secs(1)),
        "the honest peer was not asked during the liar's attempt: {:?}",
        honest.seen.metadata_log.lock().unwrap()
    );
}

/// The connection that brought the metadata goes on to bring the data:
/// the peer is dialled once, and what it said before the metadata was
/// known (its bitfield) still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnet_downloads_over_the_connection_that_fetched_its_metadata() {
    let c = Arc::new(content(6 * PIECE + 9, 92));
    let ip = loopback_block();
    let seeder = FakePeer::start_script(
        any_port(ip(2)),
        meta_seeder(
            &c,
            c.info.len() as u64,
            Some(c.info.clone()),
            Duration::ZERO,
        ),
    )
    .await;
    let m = magnet(&c.ih, &[seeder.addr]);
    let c2 = c.clone();
    let run = blocking(move || xorrent_download(&c2, ip(1), &m, &[], None))
        .await
        .unwrap();
    let summary = assert_complete(&c, &run);
    let s = &seeder.seen;
    assert!(s.metadata_requests.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        s.connections.load(Ordering::Relaxed),
        1,
        "the seeder was dialled again for the data"
    );
    assert_eq!(bytes_from(&summary, seeder.addr), c.data.len() as u64);
}

/// A second run of a magnet takes the metadata from the state directory:
/// its only peer then is a plain BEP-3 seeder that could not serve it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnet_run_again_reuses_the_metadata_it_fetched() {
    let c = Arc::new(content(4 * PIECE + 5, 91));
    let size = c.info.len() as u64;
    let state = c.dir.path().join("state");
    let ip = loopback_block();
    let me = ip(1);
    let honest = FakePeer::start_script(
        any_port(ip(2)),
        meta_seeder(&c, size, Some(c.info.clone()), Duration::ZERO),
    )
    .await;
    let m = magnet(&c.ih, &[honest.addr]);
    let (c2, m2, s2) = (c.clone(), m.clone(), state.clone());
    let run = blocking(move || {
        let s = s2.to_string_lossy().to_string();
        xorrent_download(&c2, me, &m2, &["--state-dir", &s], None)
    })
    .await
    .unwrap();
    assert_complete(&c, &run);
    let cached = state
        .join("metadata")
        .join(format!("{}.torrent", hex::encode(c.ih)));
    let t = xorrent::metainfo::Torrent::from_file(&cached).unwrap();
    assert_eq!(t.info_hash.0, c.ih);

    std::fs::remove_dir_all(&run.out).unwrap();
    let plain = FakePeer::start(
        any_port(ip(3)),
        c.ih,
        c.data.clone(),
        PIECE,
        Behaviour::Honest,
    )
    .await;
    let m = magnet(&c.ih, &[plain.addr]);
    let c2 = c.clone();
    let run = blocking(move || {
        let s = state.to_string_lossy().to_string();
        xorrent_download(&c2, me, &m, &["--state-dir", &s], None)
    })
    .await
    .unwrap();
    let summary = assert_complete(&c, &run);
    assert_eq!(bytes_from(&summary, plain.addr), c.data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magnet_whose_only_peer_lies_writes_nothing_and_stops_cleanly() {
    let c = Arc::new(content(4 * PIECE, 89));
    let ip = loopback_block();
    let lie = other_info(&c, 90);
    let liar = FakePeer::start_script(
        any_port(ip(2)),
        meta_seeder(&c, c.info.len() as u64, Some(lie), Duration::ZERO),
    )
    .await;
    let m = magnet(&c.ih, &[liar.addr]);
    let c2 = c.clone();
    let run = blocking(move || xorrent_download(&c2, ip(1), &m, &[], Some(Duration::from_secs(8))))
        .await
        .unwrap();
    assert!(!run.status.success(), "a magnet with only a liar completed");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stderr.contains("metadata"), "{}", run.stderr);
    let written: Vec<_> = std::fs::read_dir(&run.out)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "wrote {written:?}");
    assert!(!run.summary.exists());
    let ls = &liar.seen;
    assert!(ls.metadata_requests.load(Ordering::Relaxed) >= 1);
    assert_eq!(
        ls.connections.load(Ordering::Relaxed),
        1,
        "a caught liar was dialled again"
    );
    assert_eq!(ls.requests.load(Ordering::Relaxed), 0);
}

// ---------------------------------------------------------------------
// BEP-6 with xorrent downloading.

/// `xorrent download FILE.torrent --peer ...` from `bind`.
fn download_from(
    c: &Arc<Content>,
    bind: Ipv4Addr,
    peers: &[SocketAddr],
) -> tokio::task::JoinHandle<Run> {
    let c2 = c.clone();
    let mut args: Vec<String> = Vec::new();
    for p in peers {
        args.push("--peer".into());
        args.push(p.to_string());
    }
    blocking(move || {
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        xorrent_download(&c2, bind, c2.torrent.to_str().unwrap(), &extra, None)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_fast_seeder_chokes_only_its_allowed_fast_pieces_are_requested() {
    let c = Arc::new(content(12 * PIECE, 91));
    let ip = loopback_block();
    let allowed = vec![2u32, 5, 9];
    // Two blocks per piece: unchoke once all six were served.
    let fast = FakePeer::start_script(
        any_port(ip(2)),
        Script {
            fast: true,
            announce: Announce::HaveAll,
            allowed_fast: allowed.clone(),
            unchoke: Unchoke::Later {
                served: 6,
                after: Duration::from_secs(10),
            },
            ..Script::seeder(c.ih, c.data.clone(), PIECE, Behaviour::Honest)
        },
    )
    .await;
    let run = download_from(&c, ip(1), &[fast.addr]).await.unwrap();
    assert_complete(&c, &run);

    let s = &fast.seen;
    let log = s.log();
    let violations: Vec<_> = log
        .iter()
        .filter(|r| r.choking && !allowed.contains(&r.piece))
        .collect();
    assert!(
        violations.is_empty(),
        "{} requests for pieces not allowed fast while choked, the first {:?}",
        violations.len(),
        violations.first()
    );
    let mut choked: Vec<(u32, u32)> = log
        .iter()
        .filter(|r| r.choking)
        .map(|r| (r.piece, r.offset))
        .collect();
    choked.sort_unstable();
    choked.dedup();
    assert_eq!(
        choked.len(),
        6,
        "every block of the allowed-fast pieces was requested while choked"
    );
    assert!(log.iter().any(|r| !r.choking), "the rest after the unchoke");
    assert!(
        s.got(0x0F) >= 1,
        "an empty fast downloader says `have none`"
    );
    assert_eq!(s.got(5), 0, "and sends no bitfield");
    assert!(s.client_reserved.lock().unwrap()[0][7] & 0x04 != 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_are_requested_again_at_once() {
    let c = Arc::new(content(12 * PIECE, 92));
    let ip = loopback_block();
    let fast = FakePeer::start_script(
        any_port(ip(2)),
        Script {
            fast: true,
            reject_alternate: true,
            ..Script::seeder(c.ih, c.data.clone(), PIECE, Behaviour::Honest)
        },
    )
    .await;
    let run = download_from(&c, ip(1), &[fast.addr]).await.unwrap();
    assert_complete(&c, &run);

    let log = fast.seen.log();
    let rejected: Vec<&Req> = log
        .iter()
        .filter(|r| r.answer == Answer::Rejected)
        .collect();
    assert!(
        rejected.len() >= 10,
        "half of 24 blocks were rejected: {}",
        rejected.len()
    );
    for r in &rejected {
        let again = log
            .iter()
            .find(|q| q.at > r.at && (q.piece, q.offset) == (r.piece, r.offset));
        let Some(again) = again else {
            panic!("block {}/{} was never requested again", r.piece, r.offset);
        };
        // Well before the 30 s request timeout would have freed it.
        assert!(
            again.at - r.at < Duration::from_secs(5),
            "block {}/{} re-requested after {:?}",
            r.piece,
            r.offset,
            again.at - r.at
        );
    }
    assert_eq!(
        fast.seen.connections.load(Ordering::Relaxed),
        1,
        "the rejecting peer was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn have_all_without_the_fast_bit_drops_the_peer() {
    let c = Arc::new(content(10 * PIECE + 9, 93));
    let ip = loopback_block();
    // It would serve everything if xorrent took the `have all` for real.
    let bad = FakePeer::start_script(
        any_port(ip(2)),
        Script {
            announce: Announce::HaveAll,
            ..Script::seeder(c.ih, c.data.clone(), PIECE, Behaviour::Honest)
        },
    )
    .await;
    let good = FakePeer::start(
        any_port(ip(3)),
        c.ih,
        c.data.clone(),
        PIECE,
        Behaviour::Honest,
    )
    .await;
    let run = download_from(&c, ip(1), &[bad.addr, good.addr])
        .await
        .unwrap();
    let summary = assert_complete(&c, &run);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let s = &bad.seen;
    assert!(
        s.connections.load(Ordering::Relaxed) >= 1,
        "xorrent dialled it"
    );
    assert_eq!(s.requests.load(Ordering::Relaxed), 0);
    assert_eq!(bytes_from(&summary, bad.addr), 0);
    let ended = s.ended();
    assert!(
        !ended.is_empty()
            && ended
                .iter()
                .all(|e| e.by_client && e.after < Duration::from_secs(3)),
        "every connection is dropped at the `have all`: {ended:?}"
    );
    assert_eq!(bytes_from(&summary, good.addr), c.data.len() as u64);
}

// ---------------------------------------------------------------------
// BEP-6 and BEP-9 with xorrent seeding, against a scripted leecher.

const RESERVED_EXT: (usize, u8) = (5, 0x10);
const RESERVED_FAST: (usize, u8) = (7, 0x04);
/// Our ut_metadata id, told to the seed in our extended handshake.
const OUR_UT_METADATA: u8 = 7;

struct Seed {
    _dir: tempfile::TempDir,
    _proc: Proc,
    addr: SocketAddr,
    ih: [u8; 20],
    info: Vec<u8>,
    data: Vec<u8>,
    num_pieces: u32,
}

impl Seed {
    /// `xorrent seed` on host 1 of a fresh loopback block, `port`, of
    /// [`tree`]: 19 data pieces, more than the 10 allowed fast.
    fn start(port: u16) -> Seed {
        let dir = tempfile::tempdir().unwrap();
        let (files, t) = tree();
        let info = info_of(&t);
        let ih: [u8; 20] = Sha1::digest(&info).into();
        let tp = dir.path().join("tree.torrent");
        std::fs::write(&tp, &t).unwrap();
        let root = dir.path().join("content");
        std::fs::create_dir_all(root.join("tree")).unwrap();
        for (n, d) in &files {
            std::fs::write(root.join("tree").join(n), d).unwrap();
        }
        let data: Vec<u8> = files.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        let num_pieces = data.len().div_ceil(PIECE) as u32;
        let ip = loopback_block()(1);
        let bind = ip.to_string();
        let p = Proc::spawn(
            "xorrent seed",
            xorrent_cmd()
                .args(["seed", "-q", "--bind", &bind, "--port", &port.to_string()])
                .arg(&tp)
                .arg(&root),
        );
        Seed {
            _dir: dir,
            _proc: p,
            addr: SocketAddr::new(ip.into(), port),
            ih,
            info,
            data,
            num_pieces,
        }
    }

    /// The blocks of `piece`, as (piece, offset, length).
    fn blocks(&self, piece: u32) -> Vec<(u32, u32, u32)> {
        let start = piece as usize * PIECE;
        let size = (self.data.len() - start).min(PIECE) as u32;
        (0..size.div_ceil(BLOCK))
            .map(|b| (piece, b * BLOCK, (size - b * BLOCK).min(BLOCK)))
            .collect()
    }

    fn bytes(&self, piece: u32, offset: u32, len: u32) -> &[u8] {
        let start = piece as usize * PIECE + offset as usize;
        &self.data[start..start + len as usize]
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Got {
    Msg(u8, Vec<u8>),
    Closed,
    Nothing,
}

/// A hand-driven leecher bound to its own loopback address.
struct Leecher {
    s: TcpStream,
    buf: Vec<u8>,
    /// Reserved bytes of the seed's handshake.
    theirs: [u8; 8],
    /// Every message id received, in order.
    ids: Vec<u8>,
}

impl Leecher {
    async fn connect(
        from: Ipv4Addr,
        to: SocketAddr,
        ih: [u8; 20],
        bits: &[(usize, u8)],
    ) -> Leecher {
        let start = Instant::now();
        let mut s = loop {
            let sock = TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(from.into(), 0)).unwrap();
            match tokio::time::timeout(Duration::from_millis(500), sock.connect(to)).await {
                Ok(Ok(s)) => break s,
                _ if start.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("cannot connect to {to}: {other:?}"),
            }
        };
        let mut reserved = [0u8; 8];
        for &(byte, mask) in bits {
            reserved[byte] |= mask;
        }
        let mut hs = vec![19u8];
        hs.extend_from_slice(b"BitTorrent protocol");
        hs.extend_from_slice(&reserved);
        hs.extend_from_slice(&ih);
        // A peer id per connection: xorrent keeps one connection per peer id.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        hs.extend_from_slice(format!("-TC0001-extleecher{n:02}").as_bytes());
        s.write_all(&hs).await.unwrap();
        let mut theirs = [0u8; 68];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut theirs))
            .await
            .expect("handshake in time")
            .expect("handshake");
        assert_eq!(&theirs[28..48], &ih);
        Leecher {
            s,
            buf: Vec::new(),
            theirs: theirs[20..28].try_into().unwrap(),
            ids: Vec::new(),
        }
    }

    fn their_bit(&self, (byte, mask): (usize, u8)) -> bool {
        self.theirs[byte] & mask != 0
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn send_ext_handshake(&mut self) {
        let hs = format!("d1:md11:ut_metadatai{OUR_UT_METADATA}eee");
        self.send(&msg(20, &[&[0], hs.as_bytes()].concat())).await;
    }

    /// The next message but keep-alives, within `wait`.
    async fn next(&mut self, wait: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() < 4 + len {
                    break;
                }
                let m: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                if let Some((&id, body)) = m.split_first() {
                    self.ids.push(id);
                    return Got::Msg(id, body.to_vec());
                }
            }
            let mut tmp = vec![0u8; 65536];
            match tokio::time::timeout_at(deadline, self.s.read(&mut tmp)).await {
                Err(_) => return Got::Nothing,
                Ok(Ok(0)) | Ok(Err(_)) => return Got::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// Messages until `wait` passes quietly (or the connection closes).
    async fn drain(&mut self, wait: Duration) -> Vec<(u8, Vec<u8>)> {
        let mut got = Vec::new();
        while let Got::Msg(id, body) = self.next(wait).await {
            got.push((id, body));
        }
        got
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// (piece, offset, length) of a request, cancel or reject body.
fn triple(b: &[u8]) -> (u32, u32, u32) {
    assert_eq!(b.len(), 12, "a 12-byte body");
    (u32_at(b, 0), u32_at(b, 4), u32_at(b, 8))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_seed_xorrent_speaks_bep6_to_a_fast_leecher() {
    let seed = Seed::start(7200);
    // Another /24 than the seed's: the set depends on the leecher's.
    let from = loopback_block()(7);
    let mut l = Leecher::connect(from, seed.addr, seed.ih, &[RESERVED_EXT, RESERVED_FAST]).await;
    assert!(l.their_bit(RESERVED_FAST) && l.their_bit(RESERVED_EXT));
    l.send_ext_handshake().await;

    // What a complete seed says first; we never send `interested`.
    let (mut have_all, mut allowed, mut ext) = (false, Vec::new(), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(have_all && allowed.len() == 10 && ext.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        match l.next(left).await {
            Got::Msg(0x0E, _) => have_all = true,
            Got::Msg(0x11, b) => {
                assert!(have_all, "allowed fast before have all");
                allowed.push(u32_at(&b, 0));
            }
            Got::Msg(20, b) if b.first() == Some(&0) => {
                ext = Some(bdecode(&b[1..]).expect("bencode").0)
            }
            Got::Msg(id @ (1 | 5 | 0x0F), _) => {
                panic!("message {id} from a complete seed to a choked fast peer")
            }
            Got::Msg(..) => {}
            other => panic!("after {:?}: {other:?}", l.ids),
        }
    }
    let want = xorrent::wire::allowed_fast_set(
        from,
        &xorrent::types::InfoHash(seed.ih),
        seed.num_pieces,
        10,
    );
    let (mut got_set, mut want_set) = (allowed.clone(), want);
    got_set.sort_unstable();
    want_set.sort_unstable();
    assert_eq!(got_set, want_set, "the BEP-6 allowed-fast set for {from}");
    let ext = ext.unwrap();
    assert!(ext
        .get("m")
        .and_then(|m| m.get("ut_metadata"))
        .and_then(B::int)
        .is_some_and(|i| i > 0));
    assert_eq!(
        ext.get("metadata_size").and_then(B::int),
        Some(seed.info.len() as i64)
    );

    // Choked: an allowed-fast piece is served, any other is rejected with
    // the request's own triple.
    let a = allowed[0];
    let (p, o, len) = seed.blocks(a)[0];
    l.send(&triple_msg(6, p, o, len)).await;
    match l.next(Duration::from_secs(10)).await {
        Got::Msg(7, b) => {
            assert_eq!((u32_at(&b, 0), u32_at(&b, 4)), (p, o));
            assert!(b[8..] == *seed.bytes(p, o, len), "piece {p} bytes");
        }
        other => panic!("allowed-fast request while choked: {other:?}"),
    }
    let other = (0..seed.num_pieces).find(|p| !allowed.contains(p)).unwrap();
    for req in [(other, 0, BLOCK), (other, 100, 1000)] {
        l.send(&triple_msg(6, req.0, req.1, req.2)).await;
        match l.next(Duration::from_secs(10)).await {
            Got::Msg(0x10, b) => assert_eq!(triple(&b), req),
            got => panic!("request {req:?} while choked: {got:?}"),
        }
    }

    // Every block of every allowed piece, the last three cancelled in the
    // same write: queued behind a 16-block read, they are rejected; every
    // request gets exactly one answer.
    let reqs: Vec<(u32, u32, u32)> = allowed.iter().flat_map(|&p| seed.blocks(p)).collect();
    assert!(reqs.len() >= 16 + 3);
    let cancelled = &reqs[reqs.len() - 3..];
    let mut batch = Vec::new();
    for r in &reqs {
        batch.extend_from_slice(&triple_msg(6, r.0, r.1, r.2));
    }
    for r in cancelled {
        batch.extend_from_slice(&triple_msg(8, r.0, r.1, r.2));
    }
    l.send(&batch).await;
    let mut answers: HashMap<(u32, u32, u32), Vec<u8>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while answers.len() < reqs.len() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match l.next(left).await {
            Got::Msg(7, b) => {
                let key = (u32_at(&b, 0), u32_at(&b, 4), (b.len() - 8) as u32);
                assert!(
                    b[8..] == *seed.bytes(key.0, key.1, key.2),
                    "bytes of {key:?}"
                );
                answers.entry(key).or_default().push(7);
            }
            Got::Msg(0x10, b) => answers.entry(triple(&b)).or_default().push(0x10),
            Got::Msg(id, _) => panic!("unexpected message {id}"),
            other => panic!(
                "{other:?} with {} of {} answered",
                answers.len(),
                reqs.len()
            ),
        }
    }
    // Any second answer would come right behind the first.
    for (id, b) in l.drain(Duration::from_secs(1)).await {
        let key = match id {
            7 => (u32_at(&b, 0), u32_at(&b, 4), (b.len() - 8) as u32),
            0x10 => triple(&b),
            _ => panic!("unexpected message {id}"),
        };
        answers.entry(key).or_default().push(id);
    }
    for r in &reqs {
        let a = answers.get(r).cloned().unwrap_or_default();
        assert_eq!(a.len(), 1, "answers to {r:?}: {a:?}");
        if !cancelled.contains(r) {
            assert_eq!(a, [7], "{r:?} was not cancelled");
        }
    }
    assert_eq!(
        answers.len(),
        reqs.len(),
        "answers to blocks never asked for"
    );
    assert!(
        cancelled.iter().any(|r| answers[r] == [0x10]),
        "a queued request that is cancelled gets a reject"
    );
    assert!(
        !l.ids.iter().any(|&id| id == 1 || id == 5 || id == 0x0F),
        "unchoke, bitfield or have none: {:?}",
        l.ids
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_seed_xorrent_serves_its_info_dictionary_over_ut_metadata() {
    let seed = Seed::start(7201);
    let from = loopback_block()(9);
    let mut l = Leecher::connect(from, seed.addr, seed.ih, &[RESERVED_EXT]).await;
    assert!(l.their_bit(RESERVED_EXT));
    l.send_ext_handshake().await;
    let (their_id, size) = loop {
        match l.next(Duration::from_secs(10)).await {
            Got::Msg(20, b) if b.first() == Some(&0) => {
                let (h, _) = bdecode(&b[1..]).expect("bencode");
                let id = h
                    .get("m")
                    .and_then(|m| m.get("ut_metadata"))
                    .and_then(B::int)
                    .unwrap();
                let size = h.get("metadata_size").and_then(B::int).unwrap();
                break (u8::try_from(id).unwrap(), size as usize);
            }
            Got::Msg(..) => {}
            other => panic!("no extended handshake: {other:?}"),
        }
    };
    assert_eq!(size, seed.info.len());
    let pieces = size.div_ceil(16384);
    assert_eq!(pieces, 4);
    let mut batch = Vec::new();
    let asked: Vec<usize> = (0..pieces).chain([pieces, 1_000_000]).collect();
    for &p in &asked {
        let req = format!("d8:msg_typei0e5:piecei{p}ee");
        batch.extend_from_slice(&msg(20, &[&[their_id], req.as_bytes()].concat()));
    }
    l.send(&batch).await;
    let mut data: HashMap<usize, Vec<u8>> = HashMap::new();
    let mut rejected = Vec::new();
    while data.len() + rejected.len() < asked.len() {
        match l.next(Duration::from_secs(10)).await {
            Got::Msg(20, b) if b.first() == Some(&OUR_UT_METADATA) => {
                let (d, end) = bdecode(&b[1..]).expect("bencode");
                let piece = d.get("piece").and_then(B::int).unwrap() as usize;
                match d.get("msg_type").and_then(B::int) {
                    Some(1) => {
                        assert_eq!(d.get("total_size").and_then(B::int), Some(size as i64));
                        assert!(data.insert(piece, b[1 + end..].to_vec()).is_none());
                    }
                    Some(2) => rejected.push(piece),
                    t => panic!("msg_type {t:?}"),
                }
            }
            Got::Msg(20, b) => panic!("extended message for id {:?}", b.first()),
            Got::Msg(..) => {}
            other => panic!("{other:?}: {} pieces, {rejected:?} rejected", data.len()),
        }
    }
    rejected.sort_unstable();
    assert_eq!(
        rejected,
        [pieces, 1_000_000],
        "out-of-range pieces are rejected"
    );
    let mut whole = Vec::new();
    for p in 0..pieces {
        let d = &data[&p];
        assert_eq!(d.len(), (size - p * 16384).min(16384), "piece {p}");
        whole.extend_from_slice(d);
    }
    let h: [u8; 20] = Sha1::digest(&whole).into();
    assert_eq!(
        h, seed.ih,
        "the served info dictionary hashes to the info-hash"
    );
    assert!(whole == seed.info);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_fast_bit_xorrent_sends_no_fast_messages() {
    let seed = Seed::start(7202);
    let from = loopback_block();
    // A BEP-3-only leecher, then one with BEP-10 but not BEP-6.
    for (host, bits) in [(3u8, &[][..]), (4, &[RESERVED_EXT][..])] {
        let mut l = Leecher::connect(from(host), seed.addr, seed.ih, bits).await;
        if !bits.is_empty() {
            l.send_ext_handshake().await;
        }
        let first = l.drain(Duration::from_millis(1500)).await;
        let bitfield = first.iter().find(|(id, _)| *id == 5).expect("a bitfield");
        let full = (seed.num_pieces as usize).div_ceil(8);
        assert_eq!(bitfield.1.len(), full);
        // Choked and not interested: a request is dropped, not rejected.
        let (p, o, len) = seed.blocks(1)[0];
        l.send(&triple_msg(6, p, o, len)).await;
        l.send(&triple_msg(8, p, o, len)).await;
        let quiet = l.drain(Duration::from_secs(2)).await;
        assert!(
            quiet.is_empty(),
            "answers to a choked BEP-3 peer: {:?}",
            quiet.iter().map(|m| m.0).collect::<Vec<_>>()
        );
        l.send(&msg(2, &[])).await;
        loop {
            match l.next(Duration::from_secs(20)).await {
                Got::Msg(1, _) => break,
                Got::Msg(..) => {}
                other => panic!("never unchoked: {other:?}"),
            }
        }
        l.send(&triple_msg(6, p, o, len)).await;
        match l.next(Duration::from_secs(10)).await {
            Got::Msg(7, b) => assert!(b[8..] == *seed.bytes(p, o, len)),
            other => panic!("{other:?}"),
        }
        let fast: Vec<u8> = l
            .ids
            .iter()
            .copied()
            .filter(|id| (0x0D..=0x11).contains(id))
            .collect();
        assert!(
            fast.is_empty(),
            "fast-extension messages {fast:?} to a peer without the bit"
        );
        assert_eq!(
            l.ids.contains(&20),
            !bits.is_empty(),
            "extended messages only to a BEP-10 peer: {:?}",
            l.ids
        );
    }
}
