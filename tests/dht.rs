//! xorrent DHT nodes among themselves on loopback: bootstrap, tables that
//! fill, announce_peer and get_peers across the network, saved state.

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
    // The closest nodes it converged on are the true closest.
    let mut ids: Vec<NodeId> = nodes.iter().map(Dht::id).collect();
    let target = NodeId(ih.0);
    ids.sort_by_key(|i| i.distance(&target));
    let got: Vec<NodeId> = stats.closest.iter().map(|n| n.id).collect();
    let want_ids: Vec<NodeId> = ids
        .into_iter()
        .filter(|i| *i != nodes[31].id())
        .take(got.len())
        .collect();
    assert_eq!(got, want_ids);
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
