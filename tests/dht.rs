//! xorrent DHT nodes among themselves on loopback: bootstrap, tables that
//! fill, announce_peer and get_peers across the network, saved state, and
//! a trackerless download between xorrent processes through them.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use xorrent::dht::krpc::NodeId;
use xorrent::dht::node::{load_state, Dht, DhtConfig};
use xorrent::types::InfoHash;

fn config(ip: [u8; 4], bootstrap: Option<SocketAddr>) -> DhtConfig {
    let mut c = DhtConfig::new(SocketAddr::from((ip, 0)));
    c.bootstrap = bootstrap.iter().map(|a| a.to_string()).collect();
    c.max_queries_per_ip = 100_000;
    c.rpc_timeout = Duration::from_secs(1);
    c
}

async fn network(n: usize, cancel: &CancellationToken) -> Vec<Dht> {
    let first = Dht::start(config([127, 0, 0, 1], None), cancel.clone())
        .await
        .unwrap();
    let boot = first.local_addr();
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(
            Dht::start(config([127, 0, 0, 1], Some(boot)), cancel.clone())
                .await
                .unwrap(),
        );
    }
    // Every node looks itself up at start; give that time to settle.
    for _ in 0..50 {
        let mut all = true;
        for d in &nodes {
            if d.stats().await.unwrap().good < 5 {
                all = false;
            }
        }
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_peers_are_found_across_a_network_of_nodes() {
    let cancel = CancellationToken::new();
    let nodes = network(40, &cancel).await;
    for d in &nodes {
        let s = d.stats().await.unwrap();
        assert!(
            s.good >= 5,
            "node {} knows only {} good nodes",
            d.id(),
            s.good
        );
    }
    let ih = InfoHash(rand::random());
    // Node 7 announces port 51413 for ih; node 31 looks it up.
    let (_peers, done) = nodes[7].get_peers(ih, Some(51413)).await;
    let stats = tokio::time::timeout(Duration::from_secs(20), done)
        .await
        .unwrap()
        .unwrap();
    assert!(stats.announced >= 1, "{stats:?}");
    let (mut found, done) = nodes[31].get_peers(ih, None).await;
    let stats = tokio::time::timeout(Duration::from_secs(20), done)
        .await
        .unwrap()
        .unwrap();
    let mut peers = Vec::new();
    while let Ok(p) = found.try_recv() {
        peers.extend(p);
    }
    let want: SocketAddr = "127.0.0.1:51413".parse().unwrap();
    assert!(peers.contains(&want), "peers {peers:?}, lookup {stats:?}");
    assert!(stats.rounds >= 1 && stats.queries >= 3, "{stats:?}");
    // It converged on the true closest nodes: the closest itself, and (in
    // a network a second old, with tables still filling) nearly all k.
    let mut ids: Vec<NodeId> = nodes.iter().map(Dht::id).collect();
    let target = NodeId(ih.0);
    ids.sort_by_key(|i| i.distance(&target));
    let want: Vec<NodeId> = ids
        .into_iter()
        .filter(|i| *i != nodes[31].id())
        .take(8)
        .collect();
    let got: Vec<NodeId> = stats.closest.iter().map(|n| n.id).collect();
    assert_eq!(got.first(), want.first(), "{got:?} vs {want:?}");
    let common = got.iter().filter(|g| want.contains(g)).count();
    assert!(common >= 6, "{got:?} vs {want:?}");
    cancel.cancel();
}

/// Once the tables have filled, nodes with nothing to look up stay
/// quiet: two nodes whose buckets are full must not ping each other over
/// and over (each querier used to be pinged, so each ping drew a ping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_network_is_quiet() {
    let cancel = CancellationToken::new();
    let nodes = network(60, &cancel).await;
    // Let the join lookups and bucket refreshes finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = |nodes: &[Dht]| {
        let nodes = nodes.to_vec();
        async move {
            let mut n = 0;
            for d in &nodes {
                n += d.stats().await.unwrap().queries_out;
            }
            n
        }
    };
    let before = sent(&nodes).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = sent(&nodes).await - before;
    assert!(idle <= 30, "60 idle nodes sent {idle} queries in 3 s");
    cancel.cancel();
}

#[tokio::test]
async fn state_is_saved_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state/dht.json");
    let cancel = CancellationToken::new();
    let peers = network(12, &cancel).await;
    let mut c = config([127, 0, 0, 1], Some(peers[0].local_addr()));
    c.state_file = Some(file.clone());
    let own = CancellationToken::new();
    let d = Dht::start(c, own.clone()).await.unwrap();
    for _ in 0..50 {
        if d.stats().await.unwrap().good >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    own.cancel();
    for _ in 0..50 {
        if file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (id, nodes) = load_state(&file);
    assert_eq!(id, Some(d.id()));
    assert!(nodes.len() >= 8, "{nodes:?}");
    // A restart from the saved state alone (no bootstrap) rejoins.
    let mut c = config([127, 0, 0, 1], None);
    c.id = id;
    c.nodes = nodes;
    let again = Dht::start(c, cancel.clone()).await.unwrap();
    assert_eq!(again.id(), d.id());
    let mut good = 0;
    for _ in 0..50 {
        good = again.stats().await.unwrap().good;
        if good >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(good >= 8, "{good}");
    cancel.cancel();
}

/// `xorrent seed` and `xorrent download` of a torrent that names no
/// tracker find each other through a network of xorrent DHT nodes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trackerless_torrent_downloads_through_the_dht_alone() {
    let cancel = CancellationToken::new();
    let nodes = network(20, &cancel).await;
    let boot = nodes[3].local_addr().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = crate::common::random_bytes(3 * 1024 * 1024 + 17, 5);
    let t = crate::common::make_torrent(
        "dht.bin",
        &[(vec!["dht.bin"], data.clone())],
        64 * 1024,
        None,
        false,
    );
    let torrent = dir.path().join("dht.torrent");
    std::fs::write(&torrent, t).unwrap();
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    std::fs::write(seed_dir.join("dht.bin"), &data).unwrap();
    let ip = crate::common::loopback_block();
    let dht_on = |c: &mut std::process::Command, host: u8| {
        c.env("XORRENT_NO_DHT", "0")
            .args(["--bind", &ip(host).to_string(), "--port", "6881"])
            .args(["--dht-bootstrap", &boot, "--state-dir"])
            .arg(dir.path().join(format!("state-{host}")));
    };
    let mut seed = crate::common::xorrent_cmd();
    seed.arg("seed").arg(&torrent).arg(&seed_dir).arg("-q");
    dht_on(&mut seed, 2);
    let _seed = crate::common::Proc::spawn("xorrent seed", &mut seed);
    // Let the seeder's first DHT lookup and announce finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = dir.path().join("out");
    let mut dl = crate::common::xorrent_cmd();
    dl.arg("download")
        .arg(&torrent)
        .arg("-o")
        .arg(&out)
        .arg("-q");
    dl.env("XORRENT_LOG", "xorrent=info")
        .stderr(std::process::Stdio::piped());
    dht_on(&mut dl, 3);
    let mut p = crate::common::Proc::spawn("xorrent download", &mut dl);
    let (st, err) =
        tokio::task::spawn_blocking(move || p.wait_with_stderr(Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(st.success(), "download failed:\n{err}");
    // No tracker, no --peer: the seeder can only have come from the DHT.
    assert!(err.contains("DHT lookup done peers="), "{err}");
    assert_eq!(std::fs::read(out.join("dht.bin")).unwrap(), data);
    cancel.cancel();
}

/// BEP-5 on the peer wire: with its DHT on, xorrent sets the reserved DHT
/// bit, sends `port` to a peer that sets it too, and pings the DHT node a
/// peer's `port` message names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_message_goes_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ip = crate::common::loopback_block();
    let dir = tempfile::tempdir().unwrap();
    let data = crate::common::random_bytes(100_000, 9);
    let t = crate::common::make_torrent("p.bin", &[(vec!["p.bin"], data)], 16 * 1024, None, false);
    let torrent = dir.path().join("p.torrent");
    std::fs::write(&torrent, &t).unwrap();
    let ih = xorrent::metainfo::Torrent::from_bytes(&t)
        .unwrap()
        .info_hash;
    // The peer's DHT node, on the peer's IP: a bare socket.
    let node = tokio::net::UdpSocket::bind((ip(4), 0)).await.unwrap();
    let node_port = node.local_addr().unwrap().port();
    let peer = tokio::net::TcpListener::bind((ip(4), 0)).await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut dl = crate::common::xorrent_cmd();
    dl.env("XORRENT_NO_DHT", "0")
        .arg("download")
        .arg(&torrent)
        .arg("-o")
        .arg(dir.path().join("out"))
        .args(["-q", "--bind", &ip(3).to_string(), "--port", "6881"])
        .args(["--dht-bootstrap", &node.local_addr().unwrap().to_string()])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--peer", &peer_addr.to_string()])
        // The bare peer below speaks plaintext only and takes one connection.
        .args(["--encryption", "disable"]);
    let _p = crate::common::Proc::spawn("xorrent download", &mut dl);

    let (mut s, _) = tokio::time::timeout(Duration::from_secs(10), peer.accept())
        .await
        .unwrap()
        .unwrap();
    let mut hs = [0u8; 68];
    s.read_exact(&mut hs).await.unwrap();
    assert_eq!(hs[27] & 0x01, 1, "xorrent's handshake lacks the DHT bit");
    let mut mine = hs;
    mine[48..68].copy_from_slice(b"-TE0001-portmessage!");
    assert_eq!(&mine[28..48], &ih.0);
    s.write_all(&mine).await.unwrap();
    let mut port_msg = vec![0, 0, 0, 3, 9];
    port_msg.extend_from_slice(&node_port.to_be_bytes());
    s.write_all(&port_msg).await.unwrap();
    // xorrent's `port` names its DHT node: the peer port, over UDP.
    let mut got_port = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got_port.is_none() {
        let mut len = [0u8; 4];
        tokio::time::timeout_at(deadline, s.read_exact(&mut len))
            .await
            .unwrap()
            .unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        if body.first() == Some(&9) {
            got_port = Some(u16::from_be_bytes([body[1], body[2]]));
        }
    }
    assert_eq!(got_port, Some(6881));
    // And our node gets a ping from it (besides the bootstrap find_node).
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, node.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = xorrent::dht::krpc::decode(&buf[..n]).unwrap();
        if let xorrent::dht::krpc::Body::Query {
            query: xorrent::dht::krpc::Query::Ping,
            ..
        } = m.body
        {
            assert_eq!(from, SocketAddr::from((ip(3), 6881)));
            break;
        }
    }
}

/// Malformed KRPC gets error 203 (or 204 for an unknown method) when it
/// carries a transaction id, is dropped otherwise, and never stops the node.
#[tokio::test]
async fn malformed_packets_get_errors_and_the_node_goes_on() {
    use xorrent::dht::krpc::{decode, Body};
    let cancel = CancellationToken::new();
    let node = Dht::start(config([127, 0, 0, 1], None), cancel.clone())
        .await
        .unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(node.local_addr()).await.unwrap();
    let ask = |p: &'static [u8]| {
        let sock = &sock;
        async move {
            sock.send(p).await.unwrap();
            let mut buf = [0u8; 1500];
            let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            // The node pings unknown queriers back: skip its queries.
            loop {
                match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                    Ok(Ok(n)) => match decode(&buf[..n]).unwrap().body {
                        Body::Query { .. } => continue,
                        b => return Some(b),
                    },
                    _ => return None,
                }
            }
        }
    };
    let ping: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:zz1:y1:qe";
    let cases: [(&[u8], Option<i64>); 6] = [
        (b"garbage", None),
        (b"d1:t2:aa1:y1:qe", Some(203)),
        (b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe", Some(203)),
        (b"d1:ad2:id20:abcdefghij0123456789e1:q4:pong1:t2:aa1:y1:qe", Some(204)),
        (b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti1e5:token3:bade1:q13:announce_peer1:t2:aa1:y1:qe", Some(203)),
        (b"li1ee", None),
    ];
    for (p, want) in cases {
        let got = ask(p).await;
        match (want, got) {
            (None, None) => {}
            (Some(code), Some(Body::Error { code: c, .. })) => {
                assert_eq!(c, code, "{:?}", String::from_utf8_lossy(p))
            }
            (w, g) => panic!("{:?}: wanted {w:?}, got {g:?}", String::from_utf8_lossy(p)),
        }
        assert!(
            matches!(ask(ping).await, Some(Body::Response(_))),
            "after {:?}",
            String::from_utf8_lossy(p)
        );
    }
    cancel.cancel();
}
