//! A running `xorrent daemon` for tests, and a small Transmission RPC
//! client over plain TCP (so a test sees every status and header).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

pub struct Daemon {
    pub proc: Proc,
    pub rpc: SocketAddr,
    pub auth: Option<(String, String)>,
    pub download_dir: PathBuf,
    pub err: Lines,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request on a fresh connection and reads the whole answer.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Http {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to rpc");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // A refused body may be cut short by the server; that is fine.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_http(&raw)
}

fn parse_http(raw: &[u8]) -> Http {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(p) = rest.windows(2).position(|w| w == b"\r\n") {
            let n =
                usize::from_str_radix(std::str::from_utf8(&rest[..p]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[p + 2..p + 2 + n]);
            rest = &rest[p + 2 + n + 2..];
        }
        body = out;
    }
    Http {
        status,
        headers,
        body,
    }
}

pub fn basic(auth: &Option<(String, String)>) -> Option<String> {
    use base64::Engine as _;
    auth.as_ref().map(|(u, p)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    })
}

impl Daemon {
    /// Starts a daemon on `ip` (peer port 6881, RPC 9091), DHT off, with
    /// `extra` flags; returns once the RPC answers.
    pub fn start(
        ip: std::net::Ipv4Addr,
        dir: &Path,
        auth: Option<(&str, &str)>,
        extra: &[&str],
    ) -> Daemon {
        let download_dir = dir.join("downloads");
        let state_dir = dir.join("state");
        Daemon::start_with(ip, &download_dir, &state_dir, auth, extra)
    }

    pub fn start_with(
        ip: std::net::Ipv4Addr,
        download_dir: &Path,
        state_dir: &Path,
        auth: Option<(&str, &str)>,
        extra: &[&str],
    ) -> Daemon {
        let rpc = SocketAddr::new(ip.into(), 9091);
        let mut cmd = xorrent_cmd();
        cmd.arg("daemon")
            .arg("--download-dir")
            .arg(download_dir)
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--rpc-bind", &rpc.to_string()])
            .args(["--bind", &ip.to_string(), "--port", "6881", "--no-dht"])
            .args(extra)
            .env("XORRENT_LOG", "xorrent=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((u, p)) = auth {
            cmd.arg("--rpc-auth").arg(format!("{u}:{p}"));
        }
        let mut proc = Proc::spawn("xorrent daemon", &mut cmd);
        let err = Lines::follow(proc.child.stderr.take().unwrap());
        let start = Instant::now();
        while TcpStream::connect_timeout(&rpc, Duration::from_millis(200)).is_err() {
            if let Some(note) = proc.exit_note() {
                panic!("the daemon {note}:\n{}", err.text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon's RPC never listened:\n{}",
                err.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon {
            proc,
            rpc,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            download_dir: download_dir.to_path_buf(),
            err,
        }
    }

    /// An RPC call: the 409 handshake, auth; panics unless HTTP 200.
    pub fn call(&self, method: &str, arguments: Value) -> Value {
        let body = serde_json::to_vec(&json!({"method": method, "arguments": arguments, "tag": 7}))
            .unwrap();
        let auth = basic(&self.auth);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let first = http(self.rpc, "POST", "/transmission/rpc", &headers, &body);
        assert_eq!(first.status, 409, "first request without a session id");
        let id = first
            .header("X-Transmission-Session-Id")
            .expect("session id")
            .to_string();
        headers.push(("X-Transmission-Session-Id", &id));
        let r = http(self.rpc, "POST", "/transmission/rpc", &headers, &body);
        assert_eq!(
            r.status,
            200,
            "{method}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["tag"], 7, "tag echoed: {v}");
        v
    }

    /// `call`, asserting success; returns the arguments.
    pub fn ok(&self, method: &str, arguments: Value) -> Value {
        let v = self.call(method, arguments);
        assert_eq!(v["result"], "success", "{method}: {v}\n{}", self.log());
        v["arguments"].clone()
    }

    pub fn torrents(&self, fields: &[&str]) -> Vec<Value> {
        self.ok("torrent-get", json!({"fields": fields}))["torrents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `want` holds for the torrent list.
    pub fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        fields: &[&str],
        want: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let list = self.torrents(fields);
            if want(&list) {
                return list;
            }
            if start.elapsed() > limit {
                panic!(
                    "{what}: not within {limit:?}; last list {list:#?}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        format!(
            "--- daemon ({}) stderr:\n{}",
            self.proc.exit_note().unwrap_or_else(|| "running".into()),
            self.err.text()
        )
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        unsafe_kill(self.proc.pid(), 15);
        let st = self.proc.wait_timeout(Duration::from_secs(30));
        assert!(st.success(), "daemon exit {st}\n{}", self.err.text());
    }
}
