//! The embedded tracker: our own HTTP and UDP clients against it in-process
//! with an injected clock (peer expiry), and a malformed-request suite over
//! real sockets against the `xorrent tracker` binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use tokio_util::sync::CancellationToken;
use xorrent::tracker::server::{StoreConfig, Tracker, TrackerOptions};
use xorrent::tracker::udp_wire::{self, Reply};
use xorrent::tracker::{AnnounceRequest, Clients, Event, ScrapeStats, TrackerError};
use xorrent::types::{InfoHash, PeerId};

const IH: InfoHash = InfoHash([0x5a; 20]);

fn announce(port: u16, left: u64, event: Option<Event>) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: IH,
        peer_id: PeerId([port as u8; 20]),
        port,
        uploaded: 0,
        downloaded: 0,
        left,
        event,
        numwant: 50,
        key: u32::from(port),
        encryption: xorrent::mse::Encryption::Prefer,
    }
}

fn ports(peers: &[SocketAddr]) -> Vec<u16> {
    let mut p: Vec<u16> = peers.iter().map(|a| a.port()).collect();
    p.sort();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_clients_over_both_protocols_with_expiry_on_an_injected_clock() {
    let t0 = Instant::now();
    let now = Arc::new(Mutex::new(t0));
    let clock = {
        let now = now.clone();
        Arc::new(move || *now.lock().unwrap())
    };
    let advance = |secs: u64| *now.lock().unwrap() += Duration::from_secs(secs);
    let tracker = Tracker::bind(TrackerOptions {
        http: Some("127.0.0.1:0".parse().unwrap()),
        udp: Some("127.0.0.1:0".parse().unwrap()),
        store: StoreConfig {
            interval: Duration::from_secs(60),
            peer_ttl: Duration::from_secs(120),
            ..StoreConfig::default()
        },
        stats: None,
        clock: Some(clock.clone()),
    })
    .await
    .unwrap();
    let http = format!("http://{}/announce", tracker.http_addr().unwrap());
    let udp = format!("udp://{}/announce", tracker.udp_addr().unwrap());
    let shared = tracker.shared();
    let cancel = CancellationToken::new();
    let server = tokio::spawn(tracker.run(cancel.clone()));
    let mut c = Clients::new(None, Duration::from_secs(5), 1);

    // A seeder over UDP, a leecher over HTTP: each sees the other.
    let r = c
        .announce(&udp, &announce(1001, 0, Some(Event::Started)))
        .await
        .unwrap();
    assert!(r.peers.is_empty());
    assert_eq!((r.seeders, r.leechers), (Some(1), Some(0)));
    assert_eq!(r.interval, Duration::from_secs(60));
    let r = c
        .announce(&http, &announce(1002, 7, Some(Event::Started)))
        .await
        .unwrap();
    assert_eq!(ports(&r.peers), [1001]);
    assert_eq!((r.seeders, r.leechers), (Some(1), Some(1)));

    // 100 s on: a third peer gets both.
    advance(100);
    let r = c
        .announce(&udp, &announce(1003, 7, Some(Event::Started)))
        .await
        .unwrap();
    assert_eq!(ports(&r.peers), [1001, 1002]);

    // 130 s after their last announce, the first two have expired, even
    // though our UDP client's cached connection id is now stale too (it
    // must reconnect once and go on).
    advance(30);
    let r = c.announce(&udp, &announce(1003, 7, None)).await.unwrap();
    assert!(r.peers.is_empty(), "{:?}", r.peers);
    let r = c.announce(&http, &announce(1004, 7, None)).await.unwrap();
    assert_eq!(ports(&r.peers), [1003]);
    // The sweeper's job, on the injected clock: counts drop too.
    assert_eq!(shared.store.lock().unwrap().sweep(clock()), 2);
    let want = ScrapeStats {
        seeders: 0,
        completed: 0,
        leechers: 2,
    };
    assert_eq!(c.scrape(&udp, &[IH]).await.unwrap(), [want]);
    assert_eq!(c.scrape(&http, &[IH]).await.unwrap(), [want]);

    // completed, then stopped, over each protocol.
    c.announce(&udp, &announce(1003, 0, Some(Event::Completed)))
        .await
        .unwrap();
    c.announce(&http, &announce(1004, 0, Some(Event::Completed)))
        .await
        .unwrap();
    c.announce(&http, &announce(1003, 0, Some(Event::Stopped)))
        .await
        .unwrap();
    let s = c.scrape(&udp, &[IH, InfoHash([1; 20])]).await.unwrap();
    assert_eq!(
        s,
        [
            ScrapeStats {
                seeders: 1,
                completed: 2,
                leechers: 0
            },
            ScrapeStats::default()
        ]
    );

    // Forged connection ids are refused with an error the client shows.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let p = udp_wire::announce_request(0xdead_beef, 77, &announce(1005, 1, None));
    let to: SocketAddr = udp
        .trim_start_matches("udp://")
        .trim_end_matches("/announce")
        .parse()
        .unwrap();
    sock.send_to(&p, to).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        udp_wire::decode_reply(&buf[..n], false).unwrap(),
        Reply::Error {
            tid: 77,
            message: "bad connection id".into()
        }
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn allow_list_refusals_reach_the_user() {
    let tracker = Tracker::bind(TrackerOptions {
        http: Some("127.0.0.1:0".parse().unwrap()),
        udp: Some("127.0.0.1:0".parse().unwrap()),
        store: StoreConfig {
            allow: Some([InfoHash([1; 20])].into_iter().collect()),
            ..StoreConfig::default()
        },
        stats: None,
        clock: None,
    })
    .await
    .unwrap();
    let http = format!("http://{}/announce", tracker.http_addr().unwrap());
    let udp = format!("udp://{}", tracker.udp_addr().unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(tracker.run(cancel.clone()));
    let mut c = Clients::new(None, Duration::from_secs(5), 0);
    for url in [&http, &udp] {
        match c.announce(url, &announce(1, 1, None)).await {
            Err(TrackerError::Failure(m)) => {
                assert_eq!(m, "torrent not allowed on this tracker", "{url}")
            }
            other => panic!("{url}: {other:?}"),
        }
        assert!(matches!(
            c.scrape(url, &[IH]).await,
            Err(TrackerError::Failure(_))
        ));
    }
    cancel.cancel();
}

/// `xorrent tracker` as a process on `ip`, HTTP and UDP on `port`.
fn spawn_tracker(ip: &str, port: u16) -> Proc {
    let addr = format!("{ip}:{port}");
    let p = Proc::spawn(
        "xorrent tracker",
        xorrent_cmd()
            .args([
                "tracker",
                "--http",
                &addr,
                "--udp",
                &addr,
                "--max-numwant",
                "20",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let start = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tracker did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    p
}

/// Sends `packet`; the reply if one comes within a short wait.
fn udp_ask(sock: &UdpSocket, packet: &[u8]) -> Option<Reply> {
    sock.send(packet).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => Some(udp_wire::decode_reply(&buf[..n], false).expect("a well-formed reply")),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn udp_connect(sock: &UdpSocket) -> u64 {
    match udp_ask(sock, &udp_wire::connect_request(1)) {
        Some(Reply::Connect { tid: 1, conn_id }) => conn_id,
        other => panic!("connect: {other:?}"),
    }
}

/// A good announce from a fresh peer is answered with the peers so far.
fn udp_good_announce(sock: &UdpSocket, port: u16) -> Vec<SocketAddr> {
    let id = udp_connect(sock);
    match udp_ask(
        sock,
        &udp_wire::announce_request(id, 2, &announce(port, 1, None)),
    ) {
        Some(Reply::Announce { tid: 2, peers, .. }) => peers,
        other => panic!("announce: {other:?}"),
    }
}

#[test]
fn malformed_udp_requests_are_answered_or_dropped() {
    let ip = loopback_block()(1);
    let _t = spawn_tracker(&ip.to_string(), 6969);
    let sock = UdpSocket::bind((ip, 0)).unwrap();
    sock.connect((ip, 6969)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Fill the swarm a little so huge numwant has something to cap.
    for port in 1..=30 {
        udp_good_announce(&sock, port);
    }
    let id = udp_connect(&sock);
    let good = udp_wire::announce_request(id, 9, &announce(100, 1, None));
    let mut wrong_protocol = udp_wire::connect_request(5);
    wrong_protocol[7] ^= 1;
    let mut huge_numwant = good;
    huge_numwant[92..96].copy_from_slice(&i32::MAX.to_be_bytes());
    let mut unknown_event = good;
    unknown_event[83] = 7;
    let mut unknown_action = good;
    unknown_action[11] = 42;
    let mut zero_port = good;
    zero_port[96..98].copy_from_slice(&[0, 0]);
    let bad_id = udp_wire::announce_request(id ^ 0x55, 9, &announce(100, 1, None));
    let scrape_none = udp_wire::scrape_request(id, 9, &[]);
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("empty datagram", vec![], None),
        ("3 bytes", vec![1, 2, 3], None),
        ("15 bytes", good[..15].to_vec(), None),
        (
            "wrong protocol id",
            wrong_protocol.to_vec(),
            Some("wrong protocol id"),
        ),
        (
            "truncated announce",
            good[..97].to_vec(),
            Some("announce shorter than 98 bytes"),
        ),
        (
            "bad connection id",
            bad_id.to_vec(),
            Some("bad connection id"),
        ),
        (
            "unknown event",
            unknown_event.to_vec(),
            Some("unknown event"),
        ),
        (
            "unknown action",
            unknown_action.to_vec(),
            Some("unknown action"),
        ),
        ("port 0", zero_port.to_vec(), Some("port 0")),
        (
            "scrape of nothing",
            scrape_none,
            Some("scrape without info-hashes"),
        ),
        ("huge datagram", vec![0xff; 9000], Some("unknown action")),
    ];
    for (what, packet, want) in cases {
        let got = udp_ask(&sock, &packet);
        match (want, got) {
            (None, None) => {}
            (Some(w), Some(Reply::Error { message, .. })) => assert_eq!(message, w, "{what}"),
            (w, g) => panic!("{what}: wanted error {w:?}, got {g:?}"),
        }
        // The server is still there and serves the next good request.
        assert!(!udp_good_announce(&sock, 200).is_empty(), "{what}");
    }
    match udp_ask(&sock, &huge_numwant) {
        Some(Reply::Announce { peers, .. }) => {
            assert_eq!(peers.len(), 20, "capped at --max-numwant")
        }
        other => panic!("huge numwant: {other:?}"),
    }
}

/// One request on a fresh connection; the whole response as text-ish bytes.
fn http_raw(addr: &str, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    // The server closes after errors; for keep-alive replies read until
    // the body is complete.
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{e} after {:?}", String::from_utf8_lossy(&out)),
        }
        if let Some(head_end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..head_end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if out.len() >= head_end + 4 + len {
                break;
            }
        }
    }
    out
}

fn body(resp: &[u8]) -> &[u8] {
    let at = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    &resp[at + 4..]
}

fn pct(b: &[u8]) -> String {
    b.iter().map(|c| format!("%{c:02x}")).collect()
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

#[test]
fn malformed_http_requests_get_failure_reasons() {
    let ip = loopback_block()(1).to_string();
    let _t = spawn_tracker(&ip, 6970);
    let addr = format!("{ip}:6970");
    let ih = pct(&IH.0);
    let pid = pct(&[b'p'; 20]);
    let good = |port: u16| {
        get(&format!(
            "/announce?info_hash={ih}&peer_id={pid}&port={port}&left=5&compact=1"
        ))
    };
    for port in 1..=30 {
        let r = http_raw(&addr, &good(port));
        assert!(
            r.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&r)
        );
    }
    // A half-sent request holds a connection open meanwhile.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /announce?info_hash=").unwrap();
    let failures = [
        (
            "short info_hash",
            get(&format!("/announce?info_hash=abc&peer_id={pid}&port=1")),
            "info_hash must be 20 bytes",
        ),
        (
            "21-byte info_hash",
            get(&format!("/announce?info_hash={ih}%00&peer_id={pid}&port=1")),
            "info_hash must be 20 bytes",
        ),
        (
            "bad escape",
            get(&format!("/announce?info_hash=%G1{ih}&peer_id={pid}&port=1")),
            "invalid percent-encoding",
        ),
        (
            "cut escape",
            get(&format!("/announce?peer_id={pid}&port=1&info_hash=%4")),
            "invalid percent-encoding",
        ),
        (
            "no port",
            get(&format!("/announce?info_hash={ih}&peer_id={pid}")),
            "missing port",
        ),
        (
            "negative left",
            get(&format!(
                "/announce?info_hash={ih}&peer_id={pid}&port=1&left=-1"
            )),
            "invalid left",
        ),
        (
            "bad event",
            get(&format!(
                "/announce?info_hash={ih}&peer_id={pid}&port=1&event=x"
            )),
            "invalid event",
        ),
        (
            "full scrape",
            get("/scrape"),
            "full scrape is not offered: name an info_hash",
        ),
        (
            "short scrape hash",
            get("/scrape?info_hash=abc"),
            "info_hash must be 20 bytes",
        ),
    ];
    for (what, req, want) in failures {
        let r = http_raw(&addr, &req);
        assert!(r.starts_with(b"HTTP/1.1 200"), "{what}");
        let v = xorrent::bencode::decode(body(&r)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let reason = v.get("failure reason").and_then(|f| f.as_str());
        assert_eq!(reason, Some(want), "{what}");
        assert!(
            http_raw(&addr, &good(99)).starts_with(b"HTTP/1.1 200"),
            "after {what}"
        );
    }
    let statuses: [(&str, Vec<u8>, &[u8]); 5] = [
        (
            "garbage",
            b"\x00\x01\x02 nonsense\r\n\r\n".to_vec(),
            b"HTTP/1.1 400",
        ),
        (
            "POST",
            b"POST /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            b"HTTP/1.1 405",
        ),
        (
            "body on GET",
            b"GET /announce HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            b"HTTP/1.1 400",
        ),
        ("unknown path", get("/x"), b"HTTP/1.1 404"),
        (
            "huge head",
            format!("GET /announce?{} HTTP/1.1\r\n", "a".repeat(20_000)).into_bytes(),
            b"HTTP/1.1 431",
        ),
    ];
    for (what, req, want) in statuses {
        let r = http_raw(&addr, &req);
        assert!(
            r.starts_with(want),
            "{what}: {}",
            String::from_utf8_lossy(&r)
        );
        assert!(
            http_raw(&addr, &good(99)).starts_with(b"HTTP/1.1 200"),
            "after {what}"
        );
    }
    // Huge numwant is capped; the dictionary form works too.
    let r = http_raw(
        &addr,
        &get(&format!(
            "/announce?info_hash={ih}&peer_id={pid}&port=5&numwant=999999999999"
        )),
    );
    let resp = xorrent::tracker::http::parse_response(body(&r)).unwrap();
    assert_eq!(resp.peers.len(), 20);
    let r = http_raw(
        &addr,
        &get(&format!(
            "/announce?info_hash={ih}&peer_id={pid}&port=5&compact=0&numwant=3"
        )),
    );
    let resp = xorrent::tracker::http::parse_response(body(&r)).unwrap();
    assert_eq!(resp.peers.len(), 3);
    // Two pipelined requests on one keep-alive connection: two answers.
    let mut two = good(7);
    two.extend_from_slice(&good(8));
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&two).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(12).filter(|w| w == b"HTTP/1.1 200").count() < 2 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    drop(slow);
}

#[tokio::test]
async fn ipv6_clients_get_ipv6_peers_over_both_protocols() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIP ipv6_clients_get_ipv6_peers_over_both_protocols: no IPv6 loopback");
        return;
    }
    let tracker = Tracker::bind(TrackerOptions {
        http: Some("[::1]:0".parse().unwrap()),
        udp: Some("[::1]:0".parse().unwrap()),
        store: StoreConfig::default(),
        stats: None,
        clock: None,
    })
    .await
    .unwrap();
    let http = format!("http://{}/announce", tracker.http_addr().unwrap());
    let udp = format!("udp://{}/announce", tracker.udp_addr().unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(tracker.run(cancel.clone()));
    let mut c = Clients::new(None, Duration::from_secs(5), 0);
    c.announce(&udp, &announce(2001, 0, None)).await.unwrap();
    let r = c.announce(&http, &announce(2002, 5, None)).await.unwrap();
    assert_eq!(
        r.peers,
        vec!["[::1]:2001".parse().unwrap()],
        "peers6 over HTTP"
    );
    let r = c.announce(&udp, &announce(2003, 5, None)).await.unwrap();
    assert_eq!(ports(&r.peers), [2001, 2002], "18-byte peers over UDP");
    assert!(r.peers.iter().all(SocketAddr::is_ipv6));
    cancel.cancel();
}
