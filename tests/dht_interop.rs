//! xorrent's DHT (BEP-5) against independent implementations, on loopback:
//!
//! - a standalone `xorrent dht node` joins a network of 20 libtorrent DHT
//!   nodes and ends up in their routing tables, under its own id;
//! - `xorrent download` of a torrent that names no tracker finds a
//!   libtorrent seeder through the libtorrent DHT alone;
//! - a libtorrent downloader finds `xorrent seed` through the same kind
//!   of network;
//! - aria2, whose only DHT entry point is an `xorrent dht node`, finds an
//!   `xorrent seed` through xorrent nodes and downloads from it.
//!
//! Every torrent here is trackerless and no client is given a peer's
//! address: data can only flow after a DHT lookup found the seeder. Data
//! is compared byte for byte. The libtorrent nodes live in one process
//! (`tests/interop/lt_dht.py`), each on its own loopback address; every
//! client has LSD, UPnP, NAT-PMP and PEX off and only loopback bootstrap
//! nodes (never the public routers), inside a private network namespace.
//! Needs root and the clients: see `interop_ready`.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::world::*;
use crate::common::*;

/// A random file `data/<name>` and a torrent for it that names no tracker
/// (64 KiB pieces). Returns the torrent, the data dir and the bytes.
fn trackerless(w: &World, name: &str, len: usize, seed: u64) -> (PathBuf, PathBuf, Vec<u8>) {
    let bytes = random_bytes(len, seed);
    let dir = w.path("data");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), &bytes).unwrap();
    let t = make_torrent(name, &[(vec![name], bytes.clone())], 64 * 1024, None, false);
    let torrent = w.path(&format!("{name}.torrent"));
    std::fs::write(&torrent, t).unwrap();
    (torrent, dir, bytes)
}

/// `xorrent SUB ...` with its DHT on, bound to `host`:6881 (TCP peers and
/// the DHT's UDP), joining through `bootstrap` only, keeping its DHT state
/// in the world's temp dir, logging at info.
fn xorrent_dht(w: &World, sub: &str, host: u8, bootstrap: &[SocketAddr]) -> Command {
    assert!(
        !bootstrap.is_empty(),
        "a test node needs a loopback bootstrap"
    );
    let mut c = xorrent_cmd();
    c.env("XORRENT_NO_DHT", "0")
        .env("XORRENT_LOG", "xorrent=info")
        .arg(sub)
        .args(["--bind", &(w.ip)(host).to_string(), "--port", "6881"])
        .arg("--state-dir")
        .arg(w.path(&format!("state-{host}")));
    for b in bootstrap {
        c.args(["--dht-bootstrap", &b.to_string()]);
    }
    c
}

/// The number after `key=` in a log line (`peers=3`).
fn field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let digits: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// `xorrent seed` of `torrent` from `data` on `host`, with its DHT joining
/// through `bootstrap`; returns once its first DHT lookup has announced it
/// to at least one node.
fn xorrent_dht_seed(
    w: &World,
    torrent: &Path,
    data: &Path,
    host: u8,
    bootstrap: &[SocketAddr],
) -> (Proc, Lines) {
    let mut cmd = xorrent_dht(w, "seed", host, bootstrap);
    cmd.arg(torrent)
        .arg(data)
        .args(["--status-interval", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut p = Proc::spawn("xorrent seed", &mut cmd);
    let err = Lines::follow(p.child.stderr.take().unwrap());
    let done = err
        .wait_for(Duration::from_secs(20), |l| l.contains("DHT lookup done"))
        .unwrap_or_else(|| panic!("xorrent seed: no DHT lookup:\n{}", err.text()));
    assert!(
        field(&done, "announced").is_some_and(|n| n >= 1),
        "xorrent seed announced itself to no DHT node: {done}\n{}",
        err.text()
    );
    (p, err)
}

/// A `SEEN addr id n of` line of lt_dht.py: (id, n).
fn seen(line: &str) -> Option<(String, usize)> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["SEEN", _, id, n, _] => Some((id.to_string(), n.parse().ok()?)),
        _ => None,
    }
}

/// A `STORED node info-hash peer` line of lt_dht.py: a libtorrent node
/// took an announce_peer.
fn stored(line: &str) -> Option<(SocketAddr, String, SocketAddr)> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["STORED", node, ih, peer] => {
            Some((node.parse().ok()?, ih.to_string(), peer.parse().ok()?))
        }
        _ => None,
    }
}

/// The N of `queries N in` in a stats line of `xorrent dht node`.
fn queries_in(line: &str) -> Option<u64> {
    let (before, _) = line.strip_prefix("dht: ")?.split_once(" in, ")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// A `dht: N good, M questionable, ...` stats line of `xorrent dht node`:
/// N.
fn good_nodes(line: &str) -> Option<usize> {
    line.strip_prefix("dht: ")?
        .split(" good")
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Tables of the 20 that must hold xorrent's node.
const JOINED: usize = 5;

#[test]
fn an_xorrent_node_joins_a_libtorrent_dht_and_is_in_their_tables() {
    if !interop_ready(
        "an_xorrent_node_joins_a_libtorrent_dht_and_is_in_their_tables",
        &[LT],
    ) {
        return;
    }
    let w = World::new();
    let me = SocketAddr::new((w.ip)(2).into(), 6881);
    let net = w.lt_dht(10, 20, &["--watch", &me.to_string(), "--timeout", "180"]);
    let started = Instant::now();
    // It knows one libtorrent node and must find the others itself.
    let node = w.xorrent_dht_node(2, &net.nodes[..1]);
    // libtorrent adds a node that queries it, pings it to confirm it and
    // hands it on in its answers, each session a few nodes at a time on
    // its own timer. How many tables end up holding xorrent's node depends
    // on the ids: two CI runs stopped at 8 and at 9 of the 20 (the second
    // reached 9 early and stayed there for 120 s), passing runs at 10 or
    // more, so waiting for half the tables was a coin toss. A quarter
    // proves the join; the deadline is generous for a loaded machine.
    let line = net.wait_for(Duration::from_secs(120), "xorrent in 5 tables", |l| {
        seen(l).is_some_and(|(_, n)| n >= JOINED)
    });
    let (id, n) = seen(&line).unwrap();
    assert_eq!(
        id,
        node.id,
        "libtorrent knows {me} by another id\n{}",
        net.text()
    );
    // And xorrent's table holds the libtorrent nodes that answered it.
    node.err
        .wait_for(Duration::from_secs(20), |l| {
            good_nodes(l).is_some_and(|g| g >= 10)
        })
        .unwrap_or_else(|| {
            panic!(
                "xorrent's table never held 10 good libtorrent nodes:\n{}",
                node.err.text()
            )
        });
    let joined = started.elapsed();
    // libtorrent keeps a node it has not confirmed only until one of its
    // queries to it fails: once it has asked xorrent a few times, xorrent
    // must still be in as many tables (its answers are good KRPC).
    let asked = node
        .err
        .wait_for(Duration::from_secs(30), |l| {
            queries_in(l).is_some_and(|q| q >= 5)
        })
        .unwrap_or_else(|| {
            panic!(
                "libtorrent nodes never queried xorrent's node:\n{}",
                node.err.text()
            )
        });
    // libtorrent's query timeout is a few seconds.
    std::thread::sleep(Duration::from_secs(4));
    let last = net
        .out
        .lines()
        .into_iter()
        .rev()
        .find_map(|l| seen(&l))
        .unwrap();
    assert!(
        last.1 >= n.min(JOINED),
        "xorrent's node left libtorrent's tables after their queries: {last:?}\n{}\n{}",
        node.err.text(),
        net.text()
    );
    assert_eq!(last.0, node.id);
    // How long it took (shown with --nocapture).
    println!(
        "xorrent node {me}: in {n}/20 libtorrent tables after {:.1} s, \
         in {}/20 after `{asked}` at {:.1} s",
        joined.as_secs_f64(),
        last.1,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn xorrent_downloads_from_a_libtorrent_seeder_found_through_the_dht_alone() {
    if !interop_ready(
        "xorrent_downloads_from_a_libtorrent_seeder_found_through_the_dht_alone",
        &[LT],
    ) {
        return;
    }
    let w = World::new();
    let len = 3 * 1024 * 1024 + 4321;
    let (t, data, bytes) = trackerless(&w, "from-lt.bin", len, 31);
    // Session 0 (host 10) seeds and announces itself on the DHT.
    let net = w.lt_dht(
        10,
        20,
        &[
            OsStr::new("--seed"),
            t.as_os_str(),
            OsStr::new("--save"),
            data.as_os_str(),
            OsStr::new("--announce-every"),
            OsStr::new("2"),
            OsStr::new("--timeout"),
            OsStr::new("120"),
        ],
    );
    // Wait until three libtorrent nodes store the seeder (libtorrent
    // announces to the 8 closest to the info-hash).
    let seeder = net.nodes[0];
    let ih = info_hash(&t);
    let mut storing = std::collections::BTreeSet::new();
    while storing.len() < 3 {
        let l = net.wait_for(Duration::from_secs(20), "3 nodes storing the seeder", |l| {
            stored(l).is_some_and(|(_, h, p)| h == ih && p == seeder)
        });
        storing.insert(stored(&l).unwrap().0);
    }
    let out = w.path("out");
    let summary = w.path("summary.json");
    let started = Instant::now();
    // Joins through host 11, which is not the seeder.
    let mut cmd = xorrent_dht(&w, "download", 2, &net.nodes[1..2]);
    cmd.arg(&t)
        .arg("-o")
        .arg(&out)
        .arg("--summary-json")
        .arg(&summary)
        .args(["--status-interval", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut p = Proc::spawn("xorrent download", &mut cmd);
    let err = Lines::follow(p.child.stderr.take().unwrap());
    let st = p.wait_timeout(Duration::from_secs(45));
    let log = err.all_after_close(Duration::from_secs(5)).join("\n");
    assert!(
        st.success(),
        "xorrent download exited with {st}:\n{log}\nlt_dht.py:\n{}",
        net.text()
    );
    println!(
        "xorrent found and downloaded from libtorrent in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // No tracker, no --peer: the seeder can only have come from the DHT.
    let lookup = log
        .lines()
        .find(|l| l.contains("DHT lookup done"))
        .unwrap_or_else(|| panic!("no DHT lookup in the log:\n{log}"));
    assert!(
        field(lookup, "peers").is_some_and(|n| n >= 1),
        "{lookup}\n{log}"
    );
    assert_eq!(std::fs::read(out.join("from-lt.bin")).unwrap(), bytes);
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let from_seeder: u64 = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["addr"].as_str() == Some(&seeder.to_string()))
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(from_seeder, len as u64, "{s}");
}

#[test]
fn a_libtorrent_downloader_finds_xorrent_seed_through_the_dht_alone() {
    if !interop_ready(
        "a_libtorrent_downloader_finds_xorrent_seed_through_the_dht_alone",
        &[LT],
    ) {
        return;
    }
    let w = World::new();
    let (t, data, bytes) = trackerless(&w, "to-lt.bin", 3 * 1024 * 1024 + 99, 32);
    let out = w.path("lt-out");
    // Session 0 (host 10) adds the torrent once the tables are full and
    // looks it up every 2 s until done.
    let net = w.lt_dht(
        10,
        20,
        &[
            OsStr::new("--leech"),
            t.as_os_str(),
            OsStr::new("--save"),
            out.as_os_str(),
            OsStr::new("--announce-every"),
            OsStr::new("2"),
            OsStr::new("--timeout"),
            OsStr::new("120"),
        ],
    );
    let started = Instant::now();
    // Joins through host 11, not the downloader.
    let (_seed, seed_log) = xorrent_dht_seed(&w, &t, &data, 2, &net.nodes[1..2]);
    // libtorrent nodes took xorrent's announce_peer (implied_port: the
    // DHT shares the peer port).
    let me = SocketAddr::new((w.ip)(2).into(), 6881);
    let ih = info_hash(&t);
    if net
        .out
        .wait_for(Duration::from_secs(10), |l| {
            stored(l).is_some_and(|(_, h, p)| h == ih && p == me)
        })
        .is_none()
    {
        panic!(
            "no libtorrent node stored xorrent's announce\nlt_dht.py:\n{}\nxorrent seed:\n{}",
            net.text(),
            seed_log.text()
        );
    }
    if net
        .out
        .wait_for(Duration::from_secs(40), |l| l == "DONE")
        .is_none()
    {
        panic!(
            "libtorrent did not download from xorrent seed\nlt_dht.py:\n{}\nxorrent seed:\n{}",
            net.text(),
            seed_log.text()
        );
    }
    println!(
        "libtorrent found and downloaded from xorrent in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        std::fs::read(out.join("to-lt.bin")).unwrap() == bytes,
        "libtorrent's copy differs"
    );
}

#[test]
fn aria2_finds_xorrent_seed_through_xorrent_dht_nodes() {
    if !interop_ready(
        "aria2_finds_xorrent_seed_through_xorrent_dht_nodes",
        &["aria2c"],
    ) {
        return;
    }
    let w = World::new();
    let (t, data, bytes) = trackerless(&w, "to-aria2.bin", 3 * 1024 * 1024 + 7, 33);
    let at = |host: u8| SocketAddr::new((w.ip)(host).into(), 6881);
    // Three standalone xorrent nodes (hosts 2-4) that know each other
    // only through host 2 or 3, and a seeder that joins through host 3.
    let _nodes = [
        w.xorrent_dht_node(2, &[at(3)]),
        w.xorrent_dht_node(3, &[at(2)]),
        w.xorrent_dht_node(4, &[at(2)]),
    ];
    let (_seed, seed_log) = xorrent_dht_seed(&w, &t, &data, 6, &[at(3)]);
    // aria2's only way in is the entry point, host 2. It finds the seeder
    // within a second but dials peers only at its next 10 s round, and
    // lingers ~2 s at the end: about 15 s in all.
    let work = w.path("aria2");
    let out = w.path("aria2-out");
    std::fs::create_dir_all(&work).unwrap();
    let info = work.join("aria2-info.log");
    let started = Instant::now();
    let mut p = Proc::spawn(
        "aria2c",
        Command::new("aria2c")
            .env("HOME", &work)
            .arg("--no-conf")
            .arg(format!("--dir={}", out.display()))
            .arg(format!("--interface={}", (w.ip)(7)))
            .args(["--listen-port=6881", "--dht-listen-port=6881"])
            .args(["--enable-dht=true", "--enable-dht6=false"])
            .arg(format!("--dht-entry-point={}", at(2)))
            .arg(format!(
                "--dht-file-path={}",
                work.join("dht.dat").display()
            ))
            .args(["--bt-enable-lpd=false", "--enable-peer-exchange=false"])
            .args(["--disable-ipv6=true", "--seed-time=0"])
            .args(["--check-integrity=true", "--file-allocation=none"])
            .args(["--summary-interval=0", "--console-log-level=warn"])
            .arg("--enable-color=false")
            .arg(format!("--log={}", info.display()))
            .arg("--log-level=info")
            .arg(&t)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let st = p.wait_timeout(Duration::from_secs(50));
    let log = std::fs::read_to_string(&info).unwrap_or_default();
    let dht_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("get_peers") || l.contains("Connecting to"))
        .collect();
    assert!(
        st.success(),
        "aria2 exited with {st}; its DHT lines:\n{}\nxorrent seed:\n{}",
        dht_lines.join("\n"),
        seed_log.text()
    );
    println!(
        "aria2 found and downloaded from xorrent in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // An xorrent node answered aria2's get_peers with peers, and aria2
    // connected to the seeder it had from there.
    assert!(
        log.lines()
            .any(|l| l.contains("dht response get_peers")
                && field(l, "values").is_some_and(|n| n >= 1)),
        "no xorrent node answered aria2's get_peers with values:\n{}",
        dht_lines.join("\n")
    );
    assert!(
        log.contains(&format!("Connecting to {}:6881", (w.ip)(6))),
        "aria2 never connected to the seeder:\n{}",
        dht_lines.join("\n")
    );
    assert_eq!(std::fs::read(out.join("to-aria2.bin")).unwrap(), bytes);
}
