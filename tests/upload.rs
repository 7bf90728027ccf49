//! The upload side against a scripted leecher: valid requests are served,
//! out-of-range, oversized and not-yet-had ones are refused, and a request
//! flood is cut off, without the client falling over.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::fake_peer::{Behaviour, FakePeer};
use crate::common::*;

const PIECE: usize = 32 * 1024;

/// A hand-driven peer connection.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq)]
enum Got {
    Msg(u8, Vec<u8>),
    Closed,
    Nothing,
}

impl Client {
    fn connect(addr: SocketAddr, ih: [u8; 20]) -> Client {
        let start = Instant::now();
        let mut s = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < Duration::from_secs(30) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("cannot connect to {addr}: {e}"),
            }
        };
        let mut hs = vec![19u8];
        hs.extend_from_slice(b"BitTorrent protocol");
        hs.extend_from_slice(&[0; 8]);
        hs.extend_from_slice(&ih);
        // A peer id per connection: xorrent keeps one connection per peer id.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        hs.extend_from_slice(format!("-TC0001-testclient{n:02}").as_bytes());
        s.write_all(&hs).unwrap();
        let mut theirs = [0u8; 68];
        s.read_exact(&mut theirs).unwrap();
        assert_eq!(&theirs[28..48], &ih);
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, id: u8, body: &[u8]) {
        let mut m = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        m.push(id);
        m.extend_from_slice(body);
        // The peer may already have hung up on a flood.
        let _ = self.s.write_all(&m);
    }

    fn request(&mut self, piece: u32, offset: u32, len: u32) {
        let mut b = piece.to_be_bytes().to_vec();
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.send(6, &b);
    }

    /// The next message other than keep-alive, have and bitfield.
    fn next(&mut self, wait: Duration) -> Got {
        let deadline = Instant::now() + wait;
        loop {
            while self.buf.len() >= 4 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() < 4 + len {
                    break;
                }
                let m: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                if m.is_empty() || m[0] == 4 || m[0] == 5 {
                    continue;
                }
                return Got::Msg(m[0], m[1..].to_vec());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Got::Nothing;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut tmp = [0u8; 65536];
            match self.s.read(&mut tmp) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Got::Nothing
                }
                Err(_) => return Got::Closed,
            }
        }
    }

    /// Sends `interested` and waits to be unchoked.
    fn get_unchoked(&mut self) {
        self.send(2, &[]);
        loop {
            match self.next(Duration::from_secs(15)) {
                Got::Msg(1, _) => return,
                Got::Msg(_, _) => {}
                other => panic!("never unchoked: {other:?}"),
            }
        }
    }

    fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.next(deadline.saturating_duration_since(Instant::now())) {
                Got::Closed => return true,
                Got::Nothing => return false,
                Got::Msg(..) => {}
            }
        }
        false
    }
}

struct Running {
    _dir: tempfile::TempDir,
    _proc: Proc,
    addr: SocketAddr,
    ih: [u8; 20],
}

/// `xorrent seed` of a 40-piece file on a fresh loopback address, port
/// 7100.
fn seeder() -> (Running, Vec<u8>) {
    let ip = loopback_block()(1).to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(40 * PIECE - 100, 61);
    let t = make_torrent(
        "f.bin",
        &[(vec!["f.bin"], data.clone())],
        PIECE,
        None,
        false,
    );
    let ih = xorrent::metainfo::Torrent::from_bytes(&t)
        .unwrap()
        .info_hash
        .0;
    let tp = dir.path().join("f.torrent");
    std::fs::write(&tp, t).unwrap();
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("f.bin"), &data).unwrap();
    let p = Proc::spawn(
        "xorrent seed",
        xorrent_cmd()
            .args(["seed", "-q", "--bind", &ip, "--port", "7100"])
            .arg(&tp)
            .arg(&content),
    );
    let r = Running {
        _dir: dir,
        _proc: p,
        addr: format!("{ip}:7100").parse().unwrap(),
        ih,
    };
    (r, data)
}

#[test]
fn serves_valid_requests_and_drops_out_of_range_ones() {
    let (r, data) = seeder();
    let mut c = Client::connect(r.addr, r.ih);
    c.get_unchoked();
    c.request(3, 16_384, 16_384);
    match c.next(Duration::from_secs(10)) {
        Got::Msg(7, body) => {
            assert_eq!(&body[..8], &[0, 0, 0, 3, 0, 0, 0x40, 0]);
            assert!(body[8..] == data[3 * PIECE + 16_384..4 * PIECE]);
        }
        other => panic!("{other:?}"),
    }
    // Past the end of the short last piece.
    c.request(39, 16_384, 16_384);
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "out-of-range request must end the connection"
    );
    // The client is still up for others.
    let mut d = Client::connect(r.addr, r.ih);
    d.get_unchoked();
    d.request(40, 0, 16_384);
    assert!(
        d.closed_within(Duration::from_secs(5)),
        "a piece index past the end ends the connection"
    );
}

#[test]
fn drops_oversized_requests() {
    let (r, _) = seeder();
    let mut c = Client::connect(r.addr, r.ih);
    c.get_unchoked();
    c.request(0, 0, 32 * 1024);
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn cuts_off_a_request_flood_and_keeps_serving_others() {
    let (r, data) = seeder();
    let mut c = Client::connect(r.addr, r.ih);
    c.get_unchoked();
    // Far more than the queue limit, in one write, so they arrive faster
    // than any server could answer them.
    let mut flood = Vec::with_capacity(40_000 * 17);
    for i in 0..40_000u32 {
        flood.extend_from_slice(&13u32.to_be_bytes());
        flood.push(6);
        flood.extend_from_slice(&(i % 39).to_be_bytes());
        flood.extend_from_slice(&0u32.to_be_bytes());
        flood.extend_from_slice(&1u32.to_be_bytes());
    }
    let _ = c.s.write_all(&flood);
    assert!(
        c.closed_within(Duration::from_secs(10)),
        "a flood must end the connection"
    );
    let mut d = Client::connect(r.addr, r.ih);
    d.get_unchoked();
    d.request(0, 0, 100);
    match d.next(Duration::from_secs(10)) {
        Got::Msg(7, body) => assert!(body[8..] == data[..100]),
        other => panic!("{other:?}"),
    }
}

/// A downloader that has half the pieces serves those and refuses the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_requests_for_pieces_it_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(20 * PIECE, 62);
    let t = make_torrent(
        "f.bin",
        &[(vec!["f.bin"], data.clone())],
        PIECE,
        None,
        false,
    );
    let ih = xorrent::metainfo::Torrent::from_bytes(&t)
        .unwrap()
        .info_hash
        .0;
    let tp = dir.path().join("f.torrent");
    std::fs::write(&tp, t).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("f.bin"), &data[..10 * PIECE]).unwrap();
    let ip = loopback_block();
    // The only source never answers, so the download stays at half.
    let mute = FakePeer::start(
        SocketAddr::new(ip(2).into(), 0),
        ih,
        Arc::new(data.clone()),
        PIECE,
        Behaviour::Silent,
    )
    .await;
    let listen = SocketAddr::new(ip(1).into(), 7101);
    let _p = Proc::spawn(
        "xorrent download",
        xorrent_cmd()
            .args([
                "download",
                "-q",
                "--bind",
                &listen.ip().to_string(),
                "--port",
                "7101",
                "--peer",
            ])
            .arg(mute.addr.to_string())
            .arg(&tp)
            .arg("-o")
            .arg(&out),
    );
    let data2 = data.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = Client::connect(listen, ih);
        c.get_unchoked();
        c.request(15, 0, 16_384);
        assert_eq!(
            c.next(Duration::from_secs(2)),
            Got::Nothing,
            "no data for a piece it lacks"
        );
        c.request(2, 0, 16_384);
        match c.next(Duration::from_secs(10)) {
            Got::Msg(7, body) => assert!(body[8..] == data2[2 * PIECE..2 * PIECE + 16_384]),
            other => panic!("{other:?}"),
        }
    })
    .await
    .unwrap();
}
