//! The embedded tracker's request handling: UDP packets and HTTP request
//! targets never panic the server, every answered UDP packet gets a reply
//! with its own transaction id, and every HTTP 200 body is valid bencode.
//!
//! The input is split on the byte 0xF5 into requests handled in turn by one
//! store, so state carries over. Each request's first byte picks its kind:
//! bit 0 UDP or HTTP; for UDP, bit 1 patches in a valid connection id (a
//! fuzzer cannot guess a keyed hash) so announces and scrapes are reached.
#![no_main]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use xorrent::bencode;
use xorrent::tracker::server::http::handle_get;
use xorrent::tracker::server::udp::{handle_packet, ConnIds};
use xorrent::tracker::server::{Store, StoreConfig};
use xorrent::tracker::udp_wire::{self, Reply};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let store = Mutex::new(Store::new(StoreConfig {
        max_swarms: 8,
        max_peers_per_swarm: 8,
        max_peers: 32,
        peer_ttl: Duration::from_secs(10),
        ..StoreConfig::default()
    }));
    let ids = ConnIds::new(t0);
    let mut out = Vec::new();
    for (i, req) in data.split(|&b| b == 0xF5).enumerate() {
        let Some((&kind, rest)) = req.split_first() else {
            continue;
        };
        let now = t0 + Duration::from_secs(i as u64);
        // Sources vary so several peers and both families appear.
        let from: SocketAddr = match kind >> 5 {
            0 => "[::1]:6881".parse().unwrap(),
            1 => "[::ffff:127.0.0.9]:6881".parse().unwrap(),
            n => SocketAddr::from(([127, 0, 0, n], 6881)),
        };
        if kind & 1 == 0 {
            let mut packet = rest.to_vec();
            if kind & 2 != 0 && packet.len() >= 8 {
                let id = ids.issue(from.ip().to_canonical(), now);
                packet[..8].copy_from_slice(&id.to_be_bytes());
            }
            let answered = handle_packet(&store, &ids, &packet, from, now, &mut out);
            assert_eq!(answered, packet.len() >= 16);
            if answered {
                let v6 = from.ip().to_canonical().is_ipv6();
                let reply = udp_wire::decode_reply(&out, v6).expect("our reply decodes");
                assert_eq!(reply.tid().to_be_bytes(), packet[12..16]);
                if let Reply::Announce { peers, .. } = reply {
                    assert!(peers.len() <= 200);
                }
            }
        } else {
            let target = String::from_utf8_lossy(rest);
            let r = handle_get(&store, &target, from.ip(), now);
            if r.status == 200 {
                bencode::decode(&r.body).expect("a 200 body is bencode");
            }
        }
        if i % 4 == 3 {
            store.lock().unwrap().sweep(now);
        }
    }
});
