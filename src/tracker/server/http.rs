//! The tracker's HTTP front end: `/announce` (BEP-3, BEP-23 compact,
//! BEP-7 `peers6`) and `/scrape` (BEP-48) over HTTP/1.1 with keep-alive.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::store::{PeerAnnounce, Store};
use super::Shared;
use crate::bencode::{Dict, List};
use crate::compact;
use crate::tracker::Event;
use crate::types::{InfoHash, PeerId};

/// Longest request head read; real announces are ~300 bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Most info-hashes in one scrape.
pub const MAX_SCRAPE: usize = 256;
const IDLE: Duration = Duration::from_secs(30);
const MAX_CONNECTIONS: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

fn failure(msg: &str) -> Response {
    let mut d = Dict::new();
    d.bytes("failure reason", msg);
    Response {
        status: 200,
        body: d.finish(),
    }
}

/// Strict percent-decoding: a `%` must be followed by two hex digits.
fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

type Pair = (Vec<u8>, Vec<u8>);

/// `k=v&k=v` pairs, decoded.
fn query_pairs(q: &str) -> Result<Vec<Pair>, &'static str> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (unescape(k.as_bytes()), unescape(v.as_bytes())) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err("invalid percent-encoding"),
            }
        })
        .collect()
}

fn id20(v: &[u8], what: &'static str) -> Result<[u8; 20], &'static str> {
    v.try_into().map_err(|_| what)
}

fn number<T: std::str::FromStr>(v: &[u8], what: &'static str) -> Result<T, &'static str> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(what)
}

struct AnnounceQuery {
    announce: PeerAnnounce,
    compact: bool,
    no_peer_id: bool,
}

fn parse_announce(q: &str, from: IpAddr) -> Result<AnnounceQuery, &'static str> {
    let (mut ih, mut pid, mut port) = (None, None, None);
    let (mut left, mut event, mut numwant) = (1u64, None, None);
    let (mut compact, mut no_peer_id) = (true, false);
    for (k, v) in query_pairs(q)? {
        match &k[..] {
            b"info_hash" => ih = Some(id20(&v, "info_hash must be 20 bytes")?),
            b"peer_id" => pid = Some(id20(&v, "peer_id must be 20 bytes")?),
            b"port" => port = Some(number::<u16>(&v, "invalid port")?),
            b"left" => left = number(&v, "invalid left")?,
            b"uploaded" => number::<u64>(&v, "invalid uploaded").map(drop)?,
            b"downloaded" => number::<u64>(&v, "invalid downloaded").map(drop)?,
            b"numwant" => {
                // Negative: "the tracker's default".
                let n: i64 = number(&v, "invalid numwant")?;
                numwant = u32::try_from(n.min(u32::MAX.into())).ok();
            }
            b"compact" => compact = v != b"0",
            b"no_peer_id" => no_peer_id = v == b"1",
            b"event" => {
                event = match &v[..] {
                    b"started" => Some(Event::Started),
                    b"completed" => Some(Event::Completed),
                    b"stopped" => Some(Event::Stopped),
                    b"" | b"empty" | b"paused" => None,
                    _ => return Err("invalid event"),
                }
            }
            // `ip` is ignored: peers are listed at the address they came from.
            _ => {}
        }
    }
    let port = port.ok_or("missing port")?;
    if port == 0 {
        return Err("invalid port");
    }
    Ok(AnnounceQuery {
        announce: PeerAnnounce {
            info_hash: InfoHash(ih.ok_or("missing info_hash")?),
            peer_id: PeerId(pid.ok_or("missing peer_id")?),
            addr: SocketAddr::new(from, port),
            left,
            event,
            numwant,
        },
        compact,
        no_peer_id,
    })
}

/// Answers one GET request target (path and query).
pub fn handle_get(store: &Mutex<Store>, target: &str, from: IpAddr, now: Instant) -> Response {
    let from = from.to_canonical();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/announce" => announce(store, query, from, now),
        "/scrape" => scrape(store, query),
        _ => Response {
            status: 404,
            body: b"not found: use /announce or /scrape\n".to_vec(),
        },
    }
}

fn announce(store: &Mutex<Store>, query: &str, from: IpAddr, now: Instant) -> Response {
    let q = match parse_announce(query, from) {
        Ok(q) => q,
        Err(e) => return failure(e),
    };
    let mut peers = Vec::new();
    let mut s = store.lock().expect("tracker store lock");
    let interval = s.config().interval.as_secs();
    let st = match s.announce(&q.announce, None, now, &mut peers) {
        Ok(st) => st,
        Err(e) => return failure(&e.to_string()),
    };
    drop(s);
    let mut d = Dict::with_capacity(128 + peers.len() * 24);
    d.int("complete", i64::from(st.seeders))
        .int("downloaded", i64::from(st.completed))
        .int("incomplete", i64::from(st.leechers))
        .int("interval", i64::try_from(interval).unwrap_or(i64::MAX))
        .int(
            "min interval",
            i64::try_from(interval / 2).unwrap_or(i64::MAX).max(1),
        );
    if q.compact {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (p, _) in &peers {
            compact::encode_peer(p, if p.is_ipv4() { &mut v4 } else { &mut v6 });
        }
        d.bytes("peers", v4);
        if !v6.is_empty() {
            d.bytes("peers6", v6);
        }
    } else {
        let mut list = List::new();
        for (p, id) in &peers {
            let mut e = Dict::new();
            e.bytes("ip", p.ip().to_string())
                .int("port", i64::from(p.port()));
            if !q.no_peer_id {
                e.bytes("peer id", id.0);
            }
            list.dict(&e);
        }
        d.list("peers", &list);
    }
    Response {
        status: 200,
        body: d.finish(),
    }
}

fn scrape(store: &Mutex<Store>, query: &str) -> Response {
    let pairs = match query_pairs(query) {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    let mut hashes = Vec::new();
    for (k, v) in pairs {
        if k == b"info_hash" {
            match id20(&v, "info_hash must be 20 bytes") {
                Ok(h) => hashes.push(InfoHash(h)),
                Err(e) => return failure(e),
            }
        }
    }
    if hashes.is_empty() {
        return failure("full scrape is not offered: name an info_hash");
    }
    if hashes.len() > MAX_SCRAPE {
        return failure("too many info_hash values");
    }
    // Each hash is looked up once (the writer sorts the keys).
    hashes.sort();
    hashes.dedup();
    let s = store.lock().expect("tracker store lock");
    if hashes.iter().any(|h| !s.allowed(h)) {
        return failure("torrent not allowed on this tracker");
    }
    let mut files = Dict::new();
    for h in &hashes {
        let st = s.scrape(h);
        let mut e = Dict::new();
        e.int("complete", i64::from(st.seeders))
            .int("downloaded", i64::from(st.completed))
            .int("incomplete", i64::from(st.leechers));
        files.dict(h.0, &e);
    }
    let mut d = Dict::new();
    d.dict("files", &files);
    Response {
        status: 200,
        body: d.finish(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

fn write_response(out: &mut Vec<u8>, r: &Response, close: bool) {
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n",
            r.status,
            reason(r.status),
            r.body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .as_bytes(),
    );
    out.extend_from_slice(&r.body);
}

/// Accepts connections until `cancel`; connections finish their current
/// request and close.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let (stream, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!("tracker accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tasks.spawn(async move {
            if let Err(e) = connection(stream, from, &shared, &cancel).await {
                tracing::debug!(%from, "tracker HTTP connection: {e}");
            }
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    from: SocketAddr,
    shared: &Shared,
    cancel: &CancellationToken,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(1024);
    let mut out = Vec::with_capacity(1024);
    loop {
        let close = answer_buffered(&mut buf, &mut out, from, shared);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close || cancel.is_cancelled() {
            return linger_close(stream).await;
        }
        if buf.len() >= MAX_HEAD {
            write_response(
                &mut out,
                &Response {
                    status: 431,
                    body: b"request head too large\n".to_vec(),
                },
                true,
            );
            stream.write_all(&out).await?;
            return linger_close(stream).await;
        }
        let n = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            r = tokio::time::timeout(IDLE, stream.read_buf(&mut buf)) => match r {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            },
        };
        if n == 0 {
            return Ok(());
        }
    }
}

/// Answers every complete request in `buf` into `out` (pipelining: one
/// write for all of them); true when the connection closes after it.
fn answer_buffered(
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    from: SocketAddr,
    shared: &Shared,
) -> bool {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let (resp, used, close) = match req.parse(buf) {
            Ok(httparse::Status::Partial) => return false,
            Err(_) => {
                let r = Response {
                    status: 400,
                    body: b"malformed HTTP request\n".to_vec(),
                };
                (r, buf.len(), true)
            }
            Ok(httparse::Status::Complete(n)) => {
                let (r, close) = answer_request(&req, from, shared);
                (r, n, close)
            }
        };
        buf.advance(used);
        write_response(out, &resp, close);
        if close {
            return true;
        }
    }
}

/// One parsed request's response, and whether the connection closes
/// after it (HTTP/1.0 without keep-alive, `Connection: close`, or a
/// request we refuse).
fn answer_request(
    req: &httparse::Request<'_, '_>,
    from: SocketAddr,
    shared: &Shared,
) -> (Response, bool) {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_body = header("content-length").is_some_and(|v| v != b"0")
        || header("transfer-encoding").is_some();
    let conn = header("connection").map(|v| v.to_ascii_lowercase());
    let close = match req.version {
        Some(1) => conn.as_deref() == Some(b"close"),
        _ => conn.as_deref() != Some(b"keep-alive"),
    };
    if req.method != Some("GET") {
        let r = Response {
            status: 405,
            body: b"only GET is served\n".to_vec(),
        };
        return (r, true);
    }
    if has_body {
        let r = Response {
            status: 400,
            body: b"request bodies are not accepted\n".to_vec(),
        };
        return (r, true);
    }
    let target = req.path.unwrap_or("/");
    let r = handle_get(&shared.store, target, from.ip(), (shared.clock)());
    shared
        .counters
        .http_request(target.starts_with("/announce"));
    (r, close)
}

/// Closing with unread input makes the kernel send a reset, which can
/// destroy the response before the client reads it: send FIN first, then
/// read and discard what the client still sends, briefly and boundedly.
async fn linger_close(mut stream: TcpStream) -> std::io::Result<()> {
    stream.shutdown().await?;
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    let drain = async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode;
    use crate::tracker::http::{parse_response, parse_scrape};
    use crate::tracker::server::store::StoreConfig;

    fn store() -> Mutex<Store> {
        Mutex::new(Store::new(StoreConfig::default()))
    }

    const IH: &str = "%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA";

    fn get(s: &Mutex<Store>, q: &str, ip: &str) -> Response {
        handle_get(s, q, ip.parse().unwrap(), Instant::now())
    }

    fn failure_of(r: &Response) -> String {
        let v = bencode::decode(&r.body).unwrap();
        String::from_utf8(
            v.get("failure reason")
                .unwrap()
                .as_bytes()
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn announce_compact_and_dictionary() {
        let s = store();
        let q = |pid: &str, port: u16, extra: &str| {
            format!("/announce?info_hash={IH}&peer_id={pid}&port={port}&uploaded=0&downloaded=0&left=0{extra}")
        };
        let r = get(
            &s,
            &q("-XR0001-aaaaaaaaaaaa", 1000, "&event=started"),
            "127.0.0.2",
        );
        assert_eq!(r.status, 200);
        let a = parse_response(&r.body).unwrap();
        assert!(a.peers.is_empty());
        assert_eq!(a.seeders, Some(1));
        let r = get(&s, &q("-XR0001-bbbbbbbbbbbb", 2000, "&left=5"), "::1");
        let a = parse_response(&r.body).unwrap();
        assert_eq!(a.peers, vec!["127.0.0.2:1000".parse().unwrap()]);
        assert_eq!((a.seeders, a.leechers), (Some(1), Some(1)));
        // The IPv6 peer arrives in peers6 for a compact IPv4 client...
        let r = get(&s, &q("-XR0001-cccccccccccc", 3000, "&left=5"), "127.0.0.4");
        let a = parse_response(&r.body).unwrap();
        assert_eq!(a.peers.len(), 2);
        assert!(bencode::decode(&r.body).unwrap().get("peers6").is_some());
        // ... and as a dictionary with compact=0.
        let r = get(
            &s,
            &q("-XR0001-cccccccccccc", 3000, "&left=5&compact=0"),
            "127.0.0.4",
        );
        let v = bencode::decode(&r.body).unwrap();
        let list = v.get("peers").unwrap().as_list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0].get("peer id").unwrap().as_bytes().unwrap().len(),
            20
        );
        let a = parse_response(&r.body).unwrap();
        assert!(a.peers.contains(&"[::1]:2000".parse().unwrap()));
    }

    #[test]
    fn malformed_announces_get_a_failure_reason() {
        let s = store();
        let pid = "-XR0001-aaaaaaaaaaaa";
        let cases = [
            (
                format!("/announce?info_hash=abc&peer_id={pid}&port=1"),
                "info_hash must be 20 bytes",
            ),
            (
                format!("/announce?info_hash={IH}&peer_id=short&port=1"),
                "peer_id must be 20 bytes",
            ),
            (
                format!("/announce?info_hash={IH}&peer_id={pid}"),
                "missing port",
            ),
            (
                format!("/announce?info_hash={IH}&peer_id={pid}&port=0"),
                "invalid port",
            ),
            (
                format!("/announce?info_hash={IH}&peer_id={pid}&port=70000"),
                "invalid port",
            ),
            (
                format!("/announce?info_hash=%ZZ&peer_id={pid}&port=1"),
                "invalid percent-encoding",
            ),
            (
                format!("/announce?info_hash=%A&peer_id={pid}&port=1"),
                "invalid percent-encoding",
            ),
            (
                format!("/announce?info_hash={IH}&peer_id={pid}&port=1&event=bogus"),
                "invalid event",
            ),
            (
                format!("/announce?info_hash={IH}&peer_id={pid}&port=1&numwant=x"),
                "invalid numwant",
            ),
            (
                format!("/announce?peer_id={pid}&port=1"),
                "missing info_hash",
            ),
        ];
        for (q, want) in cases {
            let r = get(&s, &q, "127.0.0.2");
            assert_eq!(r.status, 200, "{q}");
            assert_eq!(failure_of(&r), want, "{q}");
        }
        assert_eq!(s.lock().unwrap().size(), (0, 0));
        // Huge numwant is capped, not an error.
        let r = get(
            &s,
            &format!("/announce?info_hash={IH}&peer_id={pid}&port=1&numwant=99999999999999"),
            "127.0.0.2",
        );
        assert!(parse_response(&r.body).is_ok());
        assert_eq!(get(&s, "/other", "127.0.0.2").status, 404);
    }

    #[test]
    fn scrape_lists_sorted_hashes() {
        let s = store();
        let pid = "-XR0001-aaaaaaaaaaaa";
        get(
            &s,
            &format!("/announce?info_hash={IH}&peer_id={pid}&port=1&left=0&event=completed"),
            "127.0.0.2",
        );
        let other = "%01".repeat(20);
        let r = get(
            &s,
            &format!("/scrape?info_hash={IH}&info_hash={other}&info_hash={IH}"),
            "127.0.0.2",
        );
        let a = InfoHash([0xaa; 20]);
        let b = InfoHash([1; 20]);
        let st = parse_scrape(&r.body, &[a, b]).unwrap();
        assert_eq!((st[0].seeders, st[0].completed, st[0].leechers), (1, 1, 0));
        assert_eq!(st[1], Default::default());
        let files = bencode::decode(&r.body).unwrap();
        let keys: Vec<&[u8]> = files
            .get("files")
            .unwrap()
            .as_dict()
            .unwrap()
            .iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, [&b.0[..], &a.0[..]]);
        assert_eq!(
            failure_of(&get(&s, "/scrape", "127.0.0.2")),
            "full scrape is not offered: name an info_hash"
        );
        assert_eq!(
            failure_of(&get(&s, "/scrape?info_hash=%A", "127.0.0.2")),
            "invalid percent-encoding"
        );
    }
}
