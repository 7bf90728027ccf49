//! `xorrent daemon` driven by real Transmission remotes (Debian's
//! transmission-remote, the transmission-rpc Python library), by a real
//! browser, and by hostile requests; killed with SIGKILL and restarted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::daemon::{basic, http, Daemon};
use crate::common::world::*;
use crate::common::*;
use serde_json::{json, Value};

const REMOTE: &str = "transmission-remote";

/// Runs transmission-remote against the daemon; returns its stdout,
/// asserting it exited 0.
fn remote(d: &Daemon, args: &[&str]) -> String {
    let mut cmd = Command::new(REMOTE);
    cmd.arg(d.rpc.to_string());
    if let Some((u, p)) = &d.auth {
        cmd.arg("-n").arg(format!("{u}:{p}"));
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run transmission-remote");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "transmission-remote {args:?}: {}\nstdout: {stdout}\nstderr: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    stdout
}

fn magnet_of(torrent: &Path) -> String {
    let t = xorrent::metainfo::Torrent::from_file(torrent).unwrap();
    format!("magnet:?xt=urn:btih:{}&dn={}", t.info_hash.to_hex(), t.name)
}

/// Waits until transmission-remote's list satisfies `want`.
fn wait_list(d: &Daemon, limit: Duration, what: &str, want: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let l = remote(d, &["-l"]);
        if want(&l) {
            return l;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}; last list:\n{l}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The list row for a torrent name.
fn row<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    list.lines().find(|l| l.trim_end().ends_with(name))
}

/// `python3 -m http.server` on `ip`:8000 serving `dir`, once it listens.
fn serve_dir(dir: &Path, ip: std::net::Ipv4Addr) -> Proc {
    let p = Proc::spawn(
        "http.server",
        Command::new("/usr/bin/python3")
            .args([
                "-m",
                "http.server",
                "8000",
                "--bind",
                &ip.to_string(),
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let addr = std::net::SocketAddr::new(ip.into(), 8000);
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

fn remote_end_to_end(test: &str, auth: Option<(&str, &str)>) {
    if !interop_ready(test, &[LT, REMOTE, "mktorrent"]) {
        return;
    }
    let mut w = World::new();
    let ta = single_file(&w, "alpha.bin", 3 * 1024 * 1024 + 11, 16, 71);
    let tb = single_file(&w, "beta.bin", 2 * 1024 * 1024 + 13, 15, 72);
    let data = w.path("data");
    w.lt_seed(&ta, &data, 2, &["--no-tracker"]);
    w.lt_seed(&tb, &data, 3, &["--no-tracker"]);
    let peers = [format!("{}:6881", (w.ip)(2)), format!("{}:6881", (w.ip)(3))];
    let d = Daemon::start(
        (w.ip)(1),
        w.dir.path(),
        auth,
        &["--peer", &peers[0], "--peer", &peers[1]],
    );

    let si = remote(&d, &["--session-info"]);
    assert!(si.contains("RPC version: 16"), "{si}");
    assert!(si.contains("3.00 (xorrent"), "{si}");

    let added = remote(&d, &["-a", ta.to_str().unwrap()]);
    assert!(added.contains("success"), "{added}");
    let added = remote(&d, &["-a", &magnet_of(&tb)]);
    assert!(added.contains("success"), "{added}");
    // The same torrent again is a duplicate, not a second copy; so is
    // its URL, which the daemon fetches.
    remote(&d, &["-a", ta.to_str().unwrap()]);
    let web = serve_dir(ta.parent().unwrap(), (w.ip)(5));
    let url = format!(
        "http://{}:8000/{}",
        (w.ip)(5),
        ta.file_name().unwrap().to_str().unwrap()
    );
    let by_url = remote(&d, &["-a", &url]);
    assert!(by_url.contains("success"), "{by_url}");
    drop(web);
    let l = remote(&d, &["-l"]);
    assert_eq!(l.matches("alpha.bin").count(), 1, "{l}");

    let list = wait_list(&d, Duration::from_secs(60), "both complete", |l| {
        row(l, "alpha.bin").is_some_and(|r| r.contains("100%"))
            && row(l, "beta.bin").is_some_and(|r| r.contains("100%"))
    });
    println!("{test}: list after completion\n{list}");
    for name in ["alpha.bin", "beta.bin"] {
        assert_eq!(
            sha1_file(&data.join(name)),
            sha1_file(&d.download_dir.join(name)),
            "{name} differs"
        );
    }

    let info = remote(&d, &["-t", "1", "-i"]);
    assert!(
        info.contains(&format!("Hash: {}", info_hash(&ta))),
        "{info}"
    );
    assert!(info.contains("Name: alpha.bin"), "{info}");
    assert!(info.contains("Percent Done: 100%"), "{info}");
    let files = remote(&d, &["-t", "2", "-f"]);
    assert!(files.contains("beta.bin"), "{files}");

    remote(&d, &["-t", "1", "-S"]);
    wait_list(&d, Duration::from_secs(10), "alpha stopped", |l| {
        row(l, "alpha.bin").is_some_and(|r| r.contains("Stopped"))
    });
    remote(&d, &["-t", "1", "-s"]);
    wait_list(&d, Duration::from_secs(10), "alpha started", |l| {
        row(l, "alpha.bin").is_some_and(|r| !r.contains("Stopped") && r.contains("100%"))
    });

    let st = remote(&d, &["-st"]);
    assert!(
        st.contains("CURRENT SESSION") && st.contains("TOTAL"),
        "{st}"
    );
    assert!(st.contains("Downloaded:"), "{st}");
    let si = remote(&d, &["-si"]);
    assert!(si.contains("Download directory:"), "{si}");

    // Remove beta with its data, then everything else without.
    remote(&d, &["-t", "2", "-rad"]);
    wait_list(&d, Duration::from_secs(10), "beta removed", |l| {
        row(l, "beta.bin").is_none()
    });
    assert!(
        !d.download_dir.join("beta.bin").exists(),
        "beta's data stays"
    );
    remote(&d, &["-t", "all", "-r"]);
    let l = wait_list(&d, Duration::from_secs(10), "all removed", |l| {
        row(l, "alpha.bin").is_none()
    });
    assert!(l.contains("Sum:"), "{l}");
    assert!(
        d.download_dir.join("alpha.bin").exists(),
        "-r keeps the data"
    );
}

#[test]
fn transmission_remote_drives_the_daemon_with_auth() {
    remote_end_to_end(
        "transmission_remote_drives_the_daemon_with_auth",
        Some(("alice", "s3cret:pw")),
    );
}

#[test]
fn transmission_remote_drives_the_daemon_without_auth() {
    remote_end_to_end("transmission_remote_drives_the_daemon_without_auth", None);
}

/// `xorrent remote`, for users without transmission-remote: add, list,
/// stop, start, info, remove with data; credentials from the environment.
#[test]
fn xorrent_remote_drives_the_daemon() {
    let test = "xorrent_remote_drives_the_daemon";
    if !interop_ready(test, &[LT, "mktorrent"]) {
        return;
    }
    let mut w = World::new();
    let t = single_file(&w, "remote.bin", 1024 * 1024 + 21, 15, 75);
    let data = w.path("data");
    w.lt_seed(&t, &data, 2, &["--no-tracker"]);
    let d = Daemon::start(
        (w.ip)(1),
        w.dir.path(),
        Some(("rem", "ote")),
        &["--peer", &format!("{}:6881", (w.ip)(2))],
    );
    let url = format!("http://{}/transmission/rpc", d.rpc);
    let run = |args: &[&str], auth: Option<&str>| -> (bool, String) {
        let mut cmd = xorrent_cmd();
        cmd.arg("remote").args(args).env("XORRENT_URL", &url);
        match auth {
            Some(a) => cmd.env("XORRENT_AUTH", a),
            None => cmd.env_remove("XORRENT_AUTH"),
        };
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let ok = |args: &[&str]| -> String {
        let (good, text) = run(args, Some("rem:ote"));
        assert!(good, "xorrent remote {args:?}: {text}\n{}", d.log());
        text
    };
    let (good, text) = run(&["list"], None);
    assert!(!good && text.contains("credentials"), "{text}");
    let added = ok(&["add", t.to_str().unwrap()]);
    assert!(added.starts_with("added: 1 "), "{added}");
    let again = ok(&["add", t.to_str().unwrap()]);
    assert!(again.starts_with("already there: 1"), "{again}");
    let start = Instant::now();
    loop {
        let l = ok(&["list"]);
        if l.contains("100.0%") && l.contains("Seeding") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{l}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    ok(&["stop", "1"]);
    assert!(ok(&["list"]).contains("Stopped"));
    ok(&["start", "all"]);
    let info = ok(&["info", &info_hash(&t)]);
    assert!(
        info.contains("Name: remote.bin") && info.contains("Progress: 100.0%"),
        "{info}"
    );
    assert_eq!(
        sha1_file(&data.join("remote.bin")),
        sha1_file(&d.download_dir.join("remote.bin"))
    );
    ok(&["remove", "1", "--delete"]);
    assert!(!ok(&["list"]).contains("remote.bin"));
    assert!(!d.download_dir.join("remote.bin").exists());
    let (good, text) = run(&["stop", "x1"], Some("rem:ote"));
    assert!(!good && text.contains("not a torrent id"), "{text}");
    d.stop();
}

/// Everything a hostile or broken client can send gets its HTTP status
/// or an RPC error, and the daemon keeps answering.
#[test]
fn bad_input_gets_the_right_status_or_rpc_error() {
    if !interop_ready("bad_input_gets_the_right_status_or_rpc_error", &[]) {
        return;
    }
    let w = World::new();
    // An RPC open beyond loopback without credentials is refused outright.
    let out = xorrent_cmd()
        .args([
            "daemon",
            "--rpc-bind",
            "0.0.0.0:9092",
            "--no-dht",
            "--state-dir",
        ])
        .arg(w.path("open-state"))
        .arg("--download-dir")
        .arg(w.path("open-dl"))
        .env_remove("XORRENT_RPC_AUTH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--rpc-auth"), "{err}");
    let d = Daemon::start((w.ip)(1), w.dir.path(), Some(("u", "p")), &[]);
    let auth = basic(&d.auth).unwrap();
    let post = |headers: &[(&str, &str)], body: &[u8]| {
        http(d.rpc, "POST", "/transmission/rpc", headers, body)
    };

    // No auth, bad auth: 401 with a challenge.
    let r = post(&[], b"{}");
    assert_eq!(r.status, 401);
    assert!(r
        .header("WWW-Authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    assert_eq!(
        post(&[("Authorization", "Basic dTp3cm9uZw==")], b"{}").status,
        401
    );
    // The page needs auth too.
    assert_eq!(http(d.rpc, "GET", "/", &[], b"").status, 401);

    // Session id: 409 for none, a wrong one, a GET and an empty body.
    let r = post(&[("Authorization", &auth)], b"");
    assert_eq!(r.status, 409);
    let sid = r.header("X-Transmission-Session-Id").unwrap().to_string();
    assert_eq!(sid.len(), 48);
    let r = post(
        &[
            ("Authorization", &auth),
            ("X-Transmission-Session-Id", "nope"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 409);
    let r = http(
        d.rpc,
        "GET",
        "/transmission/rpc",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.header("X-Transmission-Session-Id"), Some(sid.as_str()));

    let ok = [
        ("Authorization", auth.as_str()),
        ("X-Transmission-Session-Id", sid.as_str()),
    ];
    // DNS rebinding: a foreign Host name is refused, an IP is fine.
    let mut evil = ok.to_vec();
    evil.push(("Host", "evil.example:9091"));
    assert_eq!(post(&evil, b"{}").status, 421);
    let mut lh = ok.to_vec();
    lh.push(("Host", "localhost:9091"));
    assert_eq!(post(&lh, br#"{"method":"session-stats"}"#).status, 200);

    // A huge body: 413, announced or not.
    let big = vec![b' '; 17 << 20];
    assert_eq!(post(&ok, &big).status, 413);

    let result = |body: &[u8]| -> Value {
        let r = post(&ok, body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let bad = |body: &str, want: &str| {
        let v = result(body.as_bytes());
        let got = v["result"].as_str().unwrap_or_default().to_string();
        assert!(
            got != "success" && got.contains(want),
            "{body}: result {got:?} lacks {want:?}"
        );
        v
    };
    bad("{not json", "invalid JSON");
    bad("[1,2]", "no method");
    bad(r#"{"method": 5}"#, "no method");
    bad(r#"{"method":"torrent-explode","tag":3}"#, "not recognized");
    let v = bad(
        r#"{"method":"torrent-get","arguments":{"fields":["id"],"ids":[{}]},"tag":"x"}"#,
        "ids",
    );
    assert_eq!(v["tag"], "x", "the tag is echoed even on errors");
    bad(
        r#"{"method":"torrent-get","arguments":{"fields":"id"}}"#,
        "fields",
    );
    bad(r#"{"method":"torrent-get","arguments":"all"}"#, "arguments");
    bad(
        r#"{"method":"torrent-add","arguments":{"metainfo":"!!!not base64"}}"#,
        "base64",
    );
    bad(
        r#"{"method":"torrent-add","arguments":{"metainfo":"ZDQ6aW5mb2RlZQ=="}}"#,
        "invalid or corrupt torrent",
    );
    bad(
        r#"{"method":"torrent-add","arguments":{"filename":"magnet:?xt=urn:btih:zz"}}"#,
        "magnet",
    );
    bad(
        r#"{"method":"torrent-add","arguments":{"filename":"/nonexistent/x.torrent"}}"#,
        "cannot read",
    );
    bad(r#"{"method":"torrent-add","arguments":{}}"#, "filename");
    bad(
        r#"{"method":"session-set","arguments":{"speed-limit-down":"fast"}}"#,
        "number",
    );
    bad(
        r#"{"method":"torrent-set","arguments":{"ids":[1],"files-wanted":"all"}}"#,
        "array",
    );
    bad(
        r#"{"method":"session-set","arguments":{"download-dir":"relative/dir"}}"#,
        "absolute",
    );

    // A torrent whose file names try to leave the download directory.
    let evil_torrent = make_torrent(
        "x",
        &[(vec!["..", "..", "escape.txt"], b"gotcha".to_vec())],
        16384,
        None,
        true,
    );
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&evil_torrent);
    let v = result(
        serde_json::to_vec(&json!({"method":"torrent-add","arguments":{"metainfo": b64}}))
            .unwrap()
            .as_slice(),
    );
    if v["result"] == "success" {
        // Accepted only with the path made safe: nothing outside.
        std::thread::sleep(Duration::from_millis(500));
        assert!(!w.dir.path().join("escape.txt").exists());
        assert!(!d.download_dir.parent().unwrap().join("escape.txt").exists());
    }

    // Unknown ids select nothing; the answer is still a success.
    let v = result(br#"{"method":"torrent-get","arguments":{"fields":["id"],"ids":[999,"0000000000000000000000000000000000000000"]}}"#);
    assert_eq!(v["result"], "success");
    assert_eq!(v["arguments"]["torrents"], json!([]));

    // Still serving.
    let v = d.ok("session-get", json!({"fields": ["rpc-version", "version"]}));
    assert_eq!(v["rpc-version"], 16);
    assert!(v.get("download-dir").is_none(), "only the fields asked for");
    assert_eq!(
        http(d.rpc, "GET", "/", &[("Authorization", &auth)], b"").status,
        200
    );
    d.stop();
}

/// A running daemon is SIGKILLed during three downloads and a seed; on
/// restart all four come back, nothing verified is fetched again, and
/// the seed is not read.
#[test]
fn kill_9_during_downloads_and_a_seed_brings_all_back() {
    let test = "kill_9_during_downloads_and_a_seed_brings_all_back";
    if !interop_ready(test, &[LT, "mktorrent"]) {
        return;
    }
    let mut w = World::new();
    let names = ["k1.bin", "k2.bin", "k3.bin", "k4.bin"];
    let torrents: Vec<PathBuf> = names
        .iter()
        .enumerate()
        .map(|(i, n)| single_file(&w, n, 12 * 1024 * 1024 + i * 7, 16, 80 + i as u64))
        .collect();
    let data = w.path("data");
    for (i, t) in torrents[..3].iter().enumerate() {
        w.lt_seed(t, &data, 2 + i as u8, &["--no-tracker"]);
    }
    // The fourth is already complete in the download directory: a seed.
    let downloads = w.path("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::copy(data.join(names[3]), downloads.join(names[3])).unwrap();
    let peers: Vec<String> = (2..5).map(|h| format!("{}:6881", (w.ip)(h))).collect();
    let mut flags: Vec<&str> = Vec::new();
    for p in &peers {
        flags.extend(["--peer", p.as_str()]);
    }
    // Slow enough that the kill lands mid-download.
    flags.extend(["--max-download-rate", "6M", "--resume-every", "1"]);
    let state = w.path("state");
    let d = Daemon::start_with((w.ip)(1), &downloads, &state, None, &flags);
    for t in &torrents {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(t).unwrap());
        d.ok("torrent-add", json!({"metainfo": b64}));
    }
    let fields = [
        "id",
        "name",
        "status",
        "percentDone",
        "haveValid",
        "sizeWhenDone",
    ];
    let before = d.wait_until(
        Duration::from_secs(60),
        "progress on all three downloads, 4 seeding",
        &fields,
        |l| {
            l.len() == 4
                && l[..3]
                    .iter()
                    .all(|t| t["percentDone"].as_f64().unwrap() > 0.2)
                && l[3]["status"] == 6
        },
    );
    // Resume records are flushed each second while pieces complete.
    std::thread::sleep(Duration::from_millis(1500));
    let before = d
        .torrents(&fields)
        .into_iter()
        .zip(before)
        .map(|(a, _)| a)
        .collect::<Vec<_>>();
    println!("{test}: before the kill {before:?}");
    d.kill9();

    let d = Daemon::start_with((w.ip)(1), &downloads, &state, None, &flags);
    let after = d.torrents(&["id", "name", "status", "hashString"]);
    assert_eq!(after.len(), 4, "all four back: {after:?}\n{}", d.log());
    let done = d.wait_until(
        Duration::from_secs(90),
        "all complete and seeding",
        &fields,
        |l| {
            l.iter()
                .all(|t| t["percentDone"] == 1.0 && t["status"] == 6)
        },
    );
    println!("{test}: after restart {done:?}");
    for n in names {
        assert_eq!(
            sha1_file(&data.join(n)),
            sha1_file(&downloads.join(n)),
            "{n}"
        );
    }
    // Nothing verified before the kill came again: what the restarted
    // daemon received is at most what was missing plus what completed
    // since the last flush (a 1 s interval and its fsync, at 6 MiB/s) and
    // pieces in flight. Fetching everything again would be ~36 MiB.
    let got = d.ok("session-stats", json!({}))["current-stats"]["downloadedBytes"]
        .as_u64()
        .unwrap();
    let missing: u64 = before
        .iter()
        .filter(|t| t["name"] != "k4.bin")
        .map(|t| t["sizeWhenDone"].as_u64().unwrap() - t["haveValid"].as_u64().unwrap())
        .sum();
    assert!(
        got <= missing + 12 * 1024 * 1024,
        "re-fetched {got} bytes, but only {missing} were missing at the kill"
    );
    // The seed's start-up check trusted its resume record: nothing hashed.
    let log = d.log();
    let check = log
        .lines()
        .find(|l| l.contains("start-up check") && l.contains("torrent=k4.bin"))
        .unwrap_or_else(|| panic!("no start-up check for k4.bin: {log}"));
    assert!(check.contains(" hashed=0 "), "the seed was hashed: {check}");

    // A clean stop and start: everything as it was (one stopped torrent
    // stays stopped), nothing hashed.
    let k2 = by_id(&done, "k2.bin");
    d.ok("torrent-stop", json!({"ids": [k2]}));
    d.stop();
    let d = Daemon::start_with((w.ip)(1), &downloads, &state, None, &flags);
    d.wait_until(
        Duration::from_secs(30),
        "back after a clean restart",
        &fields,
        |l| {
            l.len() == 4
                && l.iter().all(|t| {
                    if t["name"] == "k2.bin" {
                        t["status"] == 0 && t["percentDone"] == 1.0
                    } else {
                        t["status"] == 6 && t["percentDone"] == 1.0
                    }
                })
        },
    );
    let log = d.log();
    let checks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("start-up check"))
        .collect();
    assert_eq!(checks.len(), 3, "{log}");
    assert!(
        checks.iter().all(|l| l.contains(" hashed=0 ")),
        "{checks:#?}"
    );
    d.stop();
}

/// The id of the torrent named `name` in a torrent list.
fn by_id(list: &[Value], name: &str) -> u64 {
    list.iter()
        .find(|t| t["name"] == name)
        .and_then(|t| t["id"].as_u64())
        .unwrap_or_else(|| panic!("no {name} in {list:?}"))
}

/// A .torrent dropped in the watch folder starts downloading; a file put
/// in the share folder reaches a libtorrent leecher through the magnet
/// link the daemon shows.
#[test]
fn watch_and_share_folders() {
    let test = "watch_and_share_folders";
    if !interop_ready(test, &[LT, "mktorrent"]) {
        return;
    }
    let mut w = World::new();
    let tw = single_file(&w, "watched.bin", 1024 * 1024 + 3, 15, 90);
    let data = w.path("data");
    w.lt_seed(&tw, &data, 2, &["--no-tracker"]);
    let watch = w.path("watch");
    let share = w.path("share");
    std::fs::create_dir_all(&watch).unwrap();
    std::fs::create_dir_all(&share).unwrap();
    let seed_peer = format!("{}:6881", (w.ip)(2));
    let d = Daemon::start(
        (w.ip)(1),
        w.dir.path(),
        None,
        &[
            "--watch-dir",
            watch.to_str().unwrap(),
            "--share-dir",
            share.to_str().unwrap(),
            "--peer",
            &seed_peer,
        ],
    );
    std::fs::copy(&tw, watch.join("dropped.torrent")).unwrap();
    std::fs::write(watch.join("junk.torrent"), b"this is not bencode").unwrap();
    let shared = random_bytes(3 * 1024 * 1024 + 17, 91);
    std::fs::write(share.join("gift.bin"), &shared).unwrap();

    let list = d.wait_until(
        Duration::from_secs(60),
        "watched complete and gift seeding",
        &["name", "percentDone", "status", "magnetLink", "torrentFile"],
        |l| {
            l.iter()
                .any(|t| t["name"] == "watched.bin" && t["percentDone"] == 1.0)
                && l.iter()
                    .any(|t| t["name"] == "gift.bin" && t["status"] == 6)
        },
    );
    assert!(watch.join("dropped.torrent.added").exists());
    assert!(watch.join("junk.torrent.invalid").exists());
    let why = std::fs::read_to_string(watch.join("junk.torrent.invalid.txt")).unwrap();
    assert!(!why.trim().is_empty());
    assert_eq!(
        sha1_file(&data.join("watched.bin")),
        sha1_file(&d.download_dir.join("watched.bin"))
    );
    let gift = list.iter().find(|t| t["name"] == "gift.bin").unwrap();
    let link = gift["magnetLink"].as_str().unwrap().to_string();
    assert!(Path::new(gift["torrentFile"].as_str().unwrap()).exists());

    // libtorrent, given only the link plus the daemon's address.
    let out = w.path("lt-out");
    let mut lt = Proc::spawn(
        "lt_magnet.py",
        Command::new("/usr/bin/python3")
            .arg(repo().join("tests/interop/lt_magnet.py"))
            .args(["--listen", &format!("{}:6881", (w.ip)(3))])
            .args(["--magnet", &link, "--timeout", "60", "--save"])
            .arg(&out)
            .args(["--peer", &format!("{}:6881", (w.ip)(1)), "--no-tracker"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let st = lt.wait_timeout(Duration::from_secs(90));
    assert!(st.success(), "libtorrent leecher {st}\n{}", d.log());
    assert_eq!(
        sha1_file(&out.join("gift.bin")),
        sha1_file(&share.join("gift.bin"))
    );
    d.stop();
}

/// The transmission-rpc Python library (the one Sonarr-style tools are
/// written against) adds, lists, stops, starts and removes torrents and
/// reads every field it models.
#[test]
fn transmission_rpc_python_library_drives_the_daemon() {
    let test = "transmission_rpc_python_library_drives_the_daemon";
    if !interop_ready(test, &[LT, "mktorrent"]) {
        return;
    }
    let have_lib = Command::new("/usr/bin/python3")
        .args(["-c", "import transmission_rpc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_lib {
        assert!(
            std::env::var("XORRENT_REQUIRE_INTEROP").ok().as_deref() != Some("1"),
            "the transmission-rpc Python library is missing"
        );
        eprintln!("SKIPPED {test}: no transmission-rpc Python library");
        return;
    }
    let mut w = World::new();
    let t = single_file(&w, "py.bin", 2 * 1024 * 1024 + 5, 15, 95);
    let tm = single_file(&w, "pymag.bin", 1024 * 1024 + 9, 15, 96);
    let data = w.path("data");
    w.lt_seed(&t, &data, 2, &["--no-tracker"]);
    let d = Daemon::start(
        (w.ip)(1),
        w.dir.path(),
        Some(("py", "thon")),
        &["--peer", &format!("{}:6881", (w.ip)(2))],
    );
    let out = Command::new("/usr/bin/python3")
        .arg(repo().join("tests/rpc/trpc_check.py"))
        .args(["--host", &(w.ip)(1).to_string(), "--port", "9091"])
        .args(["--user", "py", "--password", "thon", "--torrent"])
        .arg(&t)
        .args(["--torrent-hash", &info_hash(&t)])
        .args([
            "--magnet",
            &magnet_of(&tm),
            "--magnet-hash",
            &info_hash(&tm),
        ])
        .args(["--timeout", "90"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{test}:\n{text}");
    assert!(out.status.success(), "{text}\n{}", d.log());
    d.stop();
}

/// The web page in headless Chromium: add a magnet and a .torrent upload,
/// see both reach 100 %, pause, resume, remove; a hostile torrent name
/// renders as text. Screenshots go to target/web-screenshots.
#[test]
fn web_page_in_a_real_browser() {
    let test = "web_page_in_a_real_browser";
    if !interop_ready(test, &[LT, "mktorrent", "chromium", "chromedriver"]) {
        return;
    }
    let mut w = World::new();
    let tu = single_file(&w, "upload.bin", 2 * 1024 * 1024 + 1, 15, 97);
    let tm = single_file(&w, "linked.bin", 1024 * 1024 + 2, 15, 98);
    let xss_name = "<img src=x onerror=alert(1)>";
    let tx = single_file(&w, xss_name, 64 * 1024 + 3, 15, 99);
    let data = w.path("data");
    w.lt_seed(&tu, &data, 2, &["--no-tracker"]);
    w.lt_seed(&tm, &data, 3, &["--no-tracker"]);
    w.lt_seed(&tx, &data, 4, &["--no-tracker"]);
    let mut flags = Vec::new();
    let peers: Vec<String> = (2..5).map(|h| format!("{}:6881", (w.ip)(h))).collect();
    for p in &peers {
        flags.extend(["--peer", p.as_str()]);
    }
    let d = Daemon::start((w.ip)(1), w.dir.path(), None, &flags);
    // The hostile name comes in over RPC, like any remote would add it.
    use base64::Engine as _;
    d.ok(
        "torrent-add",
        json!({"metainfo": base64::engine::general_purpose::STANDARD.encode(std::fs::read(&tx).unwrap())}),
    );
    let shots = repo().join("target/web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("/usr/bin/python3")
        .arg(repo().join("tests/web/browser.py"))
        .args(["--url", &format!("http://{}/", d.rpc)])
        .args([
            "--magnet",
            &magnet_of(&tm),
            "--magnet-hash",
            &info_hash(&tm),
        ])
        .arg("--torrent")
        .arg(&tu)
        .args([
            "--torrent-hash",
            &info_hash(&tu),
            "--xss-hash",
            &info_hash(&tx),
        ])
        .arg("--screenshots")
        .arg(&shots)
        .args(["--timeout", "90"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{test}:\n{text}");
    assert!(out.status.success(), "{text}\n{}", d.log());
    assert!(shots.join("desktop.png").exists() && shots.join("phone.png").exists());
    d.stop();
}
