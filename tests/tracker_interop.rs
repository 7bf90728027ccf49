//! Trackers against real, independent programs, over UDP (BEP-15) and HTTP:
//!
//! - xorrent's announce tiers against opentracker, with a dead first tier,
//!   a libtorrent seeder and the log saying which protocol answered;
//! - `xorrent tracker` as the only tracker of a libtorrent seeder, an aria2
//!   leecher and a libtorrent leecher (xorrent moves no data there);
//! - `xorrent seed` and `xorrent download` through `xorrent tracker`.
//!
//! Data is compared byte for byte and scrape counts exactly, asked over
//! both protocols. Every client has its own loopback address inside a
//! private network namespace; DHT, LSD, UPnP, NAT-PMP and PEX are off in
//! all of them (aria2 needs its DHT code on to speak UDP to a tracker: see
//! `tests/interop/aria2_leech.sh`; it has no node to bootstrap from).
//! Needs root and the clients: see `interop_ready`.
//!
//! What each client tells a tracker, and so what the counts must be
//! (found from the clients' logs; `aria2_leech.sh` and
//! `lt_tracked_leech.py` print the announces they send):
//! - libtorrent: `started` (left = size), `completed` (left 0) when done,
//!   `stopped` when the torrent is removed.
//! - aria2 with `--seed-time=0`: `started`, then at once `stopped` with
//!   left 0. It never sends `completed`, so its finished download is not
//!   in the `completed` count, and it leaves the swarm.
//! - xorrent download: `started`, `completed`, `stopped` at exit; xorrent
//!   seed: `started` with left 0, `stopped` on Ctrl-C.

use std::path::Path;
use std::time::Duration;

use crate::common::world::*;
use crate::common::*;

/// One torrent's counts at one tracker, as `xorrent scrape --json` says.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    seeders: u64,
    leechers: u64,
    completed: u64,
}

const fn counts(seeders: u64, leechers: u64, completed: u64) -> Counts {
    Counts {
        seeders,
        leechers,
        completed,
    }
}

/// Asks each of `trackers` about `info_hash` from `host` and checks every
/// one of them answered with `want`.
fn assert_scrape(
    w: &World,
    info_hash: &str,
    trackers: &[&str],
    host: u8,
    want: Counts,
    when: &str,
) {
    let v = w.scrape(info_hash, trackers, host);
    assert_eq!(v["info_hash"].as_str(), Some(info_hash), "{v}");
    let answers = v["trackers"].as_array().unwrap();
    assert_eq!(answers.len(), trackers.len(), "{v}");
    for url in trackers {
        let a = answers
            .iter()
            .find(|a| a["tracker"].as_str() == Some(url))
            .unwrap_or_else(|| panic!("no answer from {url} {when}: {v}"));
        assert!(a.get("error").is_none(), "{url} failed {when}: {v}");
        let got = Counts {
            seeders: a["seeders"].as_u64().unwrap(),
            leechers: a["leechers"].as_u64().unwrap(),
            completed: a["completed"].as_u64().unwrap(),
        };
        assert_eq!(got, want, "scrape of {url} {when}: {v}");
    }
}

/// The `tracker=URL` field of a tracing log line.
fn tracker_field(line: &str) -> Option<&str> {
    line.split_whitespace()
        .find_map(|t| t.strip_prefix("tracker="))
}

/// The trackers xorrent's log says answered an announce, in order.
fn announced(log: &[String]) -> Vec<&str> {
    log.iter()
        .filter(|l| l.contains(" announced "))
        .filter_map(|l| tracker_field(l))
        .collect()
}

/// `ANNOUNCE <event> ...` lines a helper printed, as (event, rest), without
/// regular (`none`) announces.
fn events(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("ANNOUNCE "))
        .map(|l| {
            let (e, rest) = l.split_once(' ').unwrap_or((l, ""));
            (e.to_string(), rest.to_string())
        })
        .filter(|(e, _)| e != "none")
        .collect()
}

fn same_file(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::metadata(a).unwrap().len(),
        std::fs::metadata(b).unwrap().len(),
        "{} and {} differ in length",
        a.display(),
        b.display()
    );
    assert_eq!(
        sha1_file(a),
        sha1_file(b),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

/// xorrent downloads from a libtorrent seeder found through opentracker.
/// The torrent's tiers: a dead tracker (a closed port on an unused
/// loopback address, over `dead`), then opentracker over `working`, then
/// opentracker over the other protocol. The seeder's own torrent has the
/// same info dictionary but lists only opentracker's HTTP URL, so it is
/// registered before xorrent starts.
fn through_opentracker(test: &str, dead: &str, working: &str) {
    if !interop_ready(test, &[LT, "opentracker", "mktorrent"]) {
        return;
    }
    let mut w = World::new();
    let len = 3 * 1024 * 1024 + 4321;
    let seed_torrent = single_file(&w, "f.bin", len, 16, 31);
    let ot_http = w.announce();
    let ot_udp = ot_http.replacen("http://", "udp://", 1);
    let dead_url = format!("{dead}://{}:6969/announce", (w.ip)(200));
    let (good, other) = if working == "udp" {
        (ot_udp.clone(), ot_http.clone())
    } else {
        (ot_http.clone(), ot_udp.clone())
    };
    let tiers = [dead_url.as_str(), good.as_str(), other.as_str()];
    let t = w.path("tiers.torrent");
    mktorrent_tiers(&w.path("data/f.bin"), &t, 16, &tiers);
    assert_eq!(
        tiers_of(&t),
        tiers.map(|u| vec![u.to_string()]).to_vec(),
        "one tracker per tier, in order"
    );
    let ih = info_hash(&t);
    assert_eq!(ih, info_hash(&seed_torrent));

    w.tracker(std::slice::from_ref(&ih));
    let data = w.path("data");
    w.lt_seed(&seed_torrent, &data, 2, &[]);
    let both = [ot_udp.as_str(), ot_http.as_str()];
    assert_scrape(&w, &ih, &both, 9, counts(1, 0, 0), "before the download");

    let (out, summary, log) = w.xorrent_logged(
        &t,
        9,
        Duration::from_secs(120),
        &["--tracker-timeout", "3", "--udp-retries", "1"],
    );
    same_file(&out.join("f.bin"), &data.join("f.bin"));
    assert_eq!(
        summary["downloaded"].as_u64(),
        Some(len as u64),
        "{summary}"
    );

    // Only the intended protocol answered, and only after the dead tier
    // had been tried and had failed.
    let answered = announced(&log);
    let all = log.join("\n");
    assert!(!answered.is_empty(), "no announce succeeded:\n{all}");
    assert!(
        answered.iter().all(|u| *u == good),
        "expected every announce to go to {good}:\n{all}"
    );
    let first_failure = log
        .iter()
        .position(|l| l.contains("announce failed") && tracker_field(l) == Some(&dead_url))
        .unwrap_or_else(|| panic!("the dead tier {dead_url} was never tried:\n{all}"));
    let first_success = log.iter().position(|l| l.contains(" announced ")).unwrap();
    assert!(
        first_failure < first_success,
        "tier 1 must be tried first:\n{all}"
    );

    // xorrent told opentracker `completed`, then `stopped`; the libtorrent
    // seeder is still there. (opentracker closes each connection after its
    // reply without `Connection: close`: a pooled connection would lose the
    // `stopped` sent right after `completed`, so announces never reuse one.)
    assert_scrape(
        &w,
        &ih,
        &both,
        9,
        counts(1, 0, 1),
        &format!("after the download; xorrent's log:\n{all}\n"),
    );
}

#[test]
fn downloads_through_opentracker_over_udp_after_a_dead_udp_tier() {
    through_opentracker(
        "downloads_through_opentracker_over_udp_after_a_dead_udp_tier",
        "udp",
        "udp",
    );
}

#[test]
fn downloads_through_opentracker_over_http_after_a_dead_http_tier() {
    through_opentracker(
        "downloads_through_opentracker_over_http_after_a_dead_http_tier",
        "http",
        "http",
    );
}

/// A libtorrent seeder, an aria2 leecher and a libtorrent leecher find each
/// other through `xorrent tracker` only (announce URL over `proto`).
fn real_clients_through_xorrent_tracker(test: &str, proto: &str) {
    if !interop_ready(test, &[LT, "aria2c", "mktorrent"]) {
        return;
    }
    let mut w = World::new();
    let (http, udp) = w.xorrent_tracker(1, 6969, &[]);
    let url = if proto == "udp" { &udp } else { &http };
    let len = 5 * 1024 * 1024 + 777;
    let data = w.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f.bin"), random_bytes(len, 41)).unwrap();
    let t = w.path("f.torrent");
    mktorrent_tiers(&data.join("f.bin"), &t, 16, &[url]);
    let ih = info_hash(&t);
    let both = [udp.as_str(), http.as_str()];

    // lt_peer.py prints READY only once the tracker has answered.
    w.lt_seed(&t, &data, 2, &[]);
    assert_scrape(&w, &ih, &both, 9, counts(1, 0, 0), "before the leechers");

    let aria_out = w.path("aria2-out");
    let lt_out = w.path("lt-out");
    let udp_flag: &[&str] = if proto == "udp" {
        &["--udp-trackers"]
    } else {
        &[]
    };
    let (mut aria, aria_lines) = w.spawn_aria2_leech(&t, &aria_out, 3, udp_flag);
    let (mut lt, lt_lines) = w.spawn_lt_tracked_leech(&t, &lt_out, 4);

    let st = aria.wait_timeout(Duration::from_secs(150));
    let aria_said = aria_lines.all_after_close(Duration::from_secs(5));
    assert!(st.success(), "aria2 failed ({st}): {aria_said:?}");
    if lt_lines
        .wait_for(Duration::from_secs(150), |l| l == "DONE")
        .is_none()
    {
        panic!("libtorrent leecher never finished:\n{}", lt_lines.text());
    }
    same_file(&aria_out.join("f.bin"), &data.join("f.bin"));

    // aria2 (seed time 0) sent `started`, then `stopped` with nothing
    // left, and never `completed`.
    let left = |n: usize| {
        if proto == "udp" {
            "-".to_string()
        } else {
            n.to_string()
        }
    };
    assert_eq!(
        events(&aria_said),
        [
            ("started".to_string(), left(len)),
            ("stopped".to_string(), left(0))
        ],
        "aria2's announces"
    );
    // So: the libtorrent seeder and the libtorrent leecher, now seeding;
    // one `completed` (libtorrent's); aria2 gone.
    assert_scrape(&w, &ih, &both, 9, counts(2, 0, 1), "after both finished");

    // The libtorrent leecher quits: `stopped`.
    unsafe_kill(lt.pid(), 15);
    let st = lt.wait_timeout(Duration::from_secs(20));
    let lt_said = lt_lines.all_after_close(Duration::from_secs(5));
    assert!(
        st.success(),
        "libtorrent leecher failed ({st}): {lt_said:?}"
    );
    // Compared once its session is closed and every file with it.
    same_file(&lt_out.join("f.bin"), &data.join("f.bin"));
    assert_eq!(
        events(&lt_said),
        ["started", "completed", "stopped"].map(|e| (e.to_string(), url.clone())),
        "libtorrent's announces"
    );
    assert_scrape(
        &w,
        &ih,
        &both,
        9,
        counts(1, 0, 1),
        "after libtorrent stopped",
    );
}

#[test]
fn libtorrent_and_aria2_swarm_through_xorrent_tracker_over_http() {
    real_clients_through_xorrent_tracker(
        "libtorrent_and_aria2_swarm_through_xorrent_tracker_over_http",
        "http",
    );
}

#[test]
fn libtorrent_and_aria2_swarm_through_xorrent_tracker_over_udp() {
    real_clients_through_xorrent_tracker(
        "libtorrent_and_aria2_swarm_through_xorrent_tracker_over_udp",
        "udp",
    );
}

/// `xorrent seed` and `xorrent download` as processes, announcing to
/// `xorrent tracker` over `proto` only.
/// aria2 announces `left=0` while it still fetches a magnet's metadata:
/// `xorrent tracker` must answer it with the seeder all the same.
#[test]
fn aria2_downloads_a_magnet_through_xorrent_tracker() {
    let test = "aria2_downloads_a_magnet_through_xorrent_tracker";
    if !interop_ready(test, &["aria2c"]) {
        return;
    }
    let mut w = World::new();
    let (http, _) = w.xorrent_tracker(1, 6969, &[]);
    let bytes = random_bytes(3 * 1024 * 1024 + 5, 52);
    let data = w.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("m.bin"), &bytes).unwrap();
    let t = w.path("m.torrent");
    std::fs::write(
        &t,
        make_torrent(
            "m.bin",
            &[(vec!["m.bin"], bytes)],
            65536,
            Some(&http),
            false,
        ),
    )
    .unwrap();
    let (_seed, _log) = w.xorrent_seed_announced(&t, &data, 2, &[]);
    let link = format!(
        "magnet:?xt=urn:btih:{}&dn=m.bin&tr={}",
        info_hash(&t),
        percent_encoding::utf8_percent_encode(&http, percent_encoding::NON_ALPHANUMERIC)
    );
    let out = w.path("aria2-out");
    let (mut aria, lines) = w.spawn_aria2_leech(Path::new(&link), &out, 3, &["--timeout", "60"]);
    let st = aria.wait_timeout(Duration::from_secs(90));
    let said = lines.all_after_close(Duration::from_secs(5));
    assert!(st.success(), "aria2 failed ({st}): {said:?}");
    // It did announce "nothing left" before it had the data.
    assert!(
        events(&said)
            .iter()
            .any(|(e, left)| e == "started" && left == "0"),
        "aria2's announces: {said:?}"
    );
    same_file(&out.join("m.bin"), &data.join("m.bin"));
}

fn xorrent_through_xorrent_tracker(test: &str, proto: &str) {
    if !interop_ready(test, &[]) {
        return;
    }
    let mut w = World::new();
    let (http, udp) = w.xorrent_tracker(1, 6969, &[]);
    let url = if proto == "udp" { &udp } else { &http };
    let len = 4 * 1024 * 1024 + 99;
    let bytes = random_bytes(len, 51);
    let data = w.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("f.bin"), &bytes).unwrap();
    let t = w.path("f.torrent");
    std::fs::write(
        &t,
        make_torrent("f.bin", &[(vec!["f.bin"], bytes)], 65536, Some(url), false),
    )
    .unwrap();
    let ih = info_hash(&t);
    let both = [udp.as_str(), http.as_str()];

    let (mut seed, seed_log) = w.xorrent_seed_announced(&t, &data, 2, &[]);
    assert_eq!(announced(&seed_log.lines()), [url.as_str()]);
    assert_scrape(&w, &ih, &both, 9, counts(1, 0, 0), "before the download");

    let (out, summary, log) = w.xorrent_logged(&t, 3, Duration::from_secs(120), &[]);
    same_file(&out.join("f.bin"), &data.join("f.bin"));
    assert_eq!(
        summary["downloaded"].as_u64(),
        Some(len as u64),
        "{summary}"
    );
    let answered = announced(&log);
    assert!(
        !answered.is_empty() && answered.iter().all(|u| u == url),
        "expected announces to {url} only:\n{}",
        log.join("\n")
    );
    // The download sent `completed` and, at exit, `stopped`.
    assert_scrape(
        &w,
        &ih,
        &both,
        9,
        counts(1, 0, 1),
        &format!("after the download; its log:\n{}\n", log.join("\n")),
    );

    // Ctrl-C ends seeding (exit 0) with `stopped`.
    unsafe_kill(seed.pid(), 2);
    let st = seed.wait_timeout(Duration::from_secs(20));
    assert!(
        st.success(),
        "xorrent seed exited with {st}:\n{}",
        seed_log.text()
    );
    assert_scrape(
        &w,
        &ih,
        &both,
        9,
        counts(0, 0, 1),
        "after the seeder stopped",
    );
}

#[test]
fn xorrent_seed_and_download_through_xorrent_tracker_over_http() {
    xorrent_through_xorrent_tracker(
        "xorrent_seed_and_download_through_xorrent_tracker_over_http",
        "http",
    );
}

#[test]
fn xorrent_seed_and_download_through_xorrent_tracker_over_udp() {
    xorrent_through_xorrent_tracker(
        "xorrent_seed_and_download_through_xorrent_tracker_over_udp",
        "udp",
    );
}
