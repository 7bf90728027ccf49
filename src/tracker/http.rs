//! HTTP(S) announce (BEP-3, BEP-23 compact peers, BEP-7 `peers6`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use percent_encoding::{percent_encode, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_bytes::ByteBuf;

use super::{AnnounceRequest, AnnounceResponse, BadResponse, ScrapeStats, TrackerError};
use crate::bencode::{self, Limits, Value};
use crate::compact::{self, Family};
use crate::mse::Encryption;
use crate::types::InfoHash;

/// Largest tracker response body read (a 200-peer dictionary list is ~20 KiB).
pub const MAX_RESPONSE: usize = 2 * 1024 * 1024;
/// Most peers taken from one response.
pub const MAX_PEERS: usize = 2_000;

/// The announce URL with the BEP-3 query appended; binary values are
/// percent-encoded byte by byte.
pub fn announce_url(base: &str, req: &AnnounceRequest) -> String {
    let mut u = String::with_capacity(base.len() + 256);
    u.push_str(base);
    u.push(if base.contains('?') { '&' } else { '?' });
    u.push_str("info_hash=");
    u.extend(percent_encode(&req.info_hash.0, NON_ALPHANUMERIC));
    u.push_str("&peer_id=");
    u.extend(percent_encode(&req.peer_id.0, NON_ALPHANUMERIC));
    u.push_str(&format!(
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}&key={:08x}",
        req.port, req.uploaded, req.downloaded, req.left, req.numwant, req.key
    ));
    if let Some(e) = req.event {
        u.push_str("&event=");
        u.push_str(e.as_str());
    }
    // As libtorrent and Transmission say it; trackers that know the keys
    // may list encrypting peers only to those that require it.
    match req.encryption {
        Encryption::Prefer => u.push_str("&supportcrypto=1"),
        Encryption::Require => u.push_str("&supportcrypto=1&requirecrypto=1"),
        Encryption::Disable => {}
    }
    u
}

pub async fn announce(
    client: &reqwest::Client,
    base: &str,
    req: &AnnounceRequest,
    timeout: Duration,
) -> Result<AnnounceResponse, TrackerError> {
    let body = get(client, &announce_url(base, req), timeout).await?;
    parse_response(&body)
}

/// BEP-48: the scrape URL replaces `announce` at the start of the last
/// path segment with `scrape`; other trackers cannot be scraped.
pub fn scrape_url(announce: &str) -> Option<String> {
    let (path, query) = match announce.find('?') {
        Some(q) => announce.split_at(q),
        None => (announce, ""),
    };
    let slash = path.rfind('/')?;
    let last = &path[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    Some(format!("{}/scrape{rest}{query}", &path[..slash]))
}

/// Scrapes `hashes` (BEP-48); stats come back in the same order, zero for
/// a torrent the tracker does not list.
pub async fn scrape(
    client: &reqwest::Client,
    announce: &str,
    hashes: &[InfoHash],
    timeout: Duration,
) -> Result<Vec<ScrapeStats>, TrackerError> {
    let base = scrape_url(announce)
        .ok_or_else(|| TrackerError::Unsupported(format!("{announce} (no scrape URL: BEP-48)")))?;
    let mut url = base.clone();
    for (i, h) in hashes.iter().enumerate() {
        url.push(if i == 0 && !base.contains('?') {
            '?'
        } else {
            '&'
        });
        url.push_str("info_hash=");
        url.extend(percent_encode(&h.0, NON_ALPHANUMERIC));
    }
    let body = get(client, &url, timeout).await?;
    parse_scrape(&body, hashes)
}

/// Parses a scrape response, picking out `hashes` in order.
pub fn parse_scrape(body: &[u8], hashes: &[InfoHash]) -> Result<Vec<ScrapeStats>, TrackerError> {
    let (v, _) = bencode::decode_with(body, Limits::LENIENT_KEYS).map_err(BadResponse::from)?;
    if let Some(f) = v.get("failure reason") {
        let msg = f.as_bytes().unwrap_or_default();
        return Err(TrackerError::Failure(
            String::from_utf8_lossy(msg).into_owned(),
        ));
    }
    let files = v
        .get("files")
        .and_then(Value::as_dict)
        .ok_or_else(|| TrackerError::Malformed("scrape response without `files`".into()))?;
    let count = |d: &Value, k: &str| {
        d.get(k)
            .and_then(Value::as_int)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    Ok(hashes
        .iter()
        .map(|h| {
            files
                .iter()
                .find(|e| e.key == h.0)
                .map(|e| ScrapeStats {
                    seeders: count(&e.value, "complete"),
                    completed: count(&e.value, "downloaded"),
                    leechers: count(&e.value, "incomplete"),
                })
                .unwrap_or_default()
        })
        .collect())
}

/// GETs `url` and returns the body, read up to [`MAX_RESPONSE`].
async fn get(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Vec<u8>, TrackerError> {
    let fetch = async {
        let mut resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| TrackerError::Request(e.without_url()))?;
        let status = resp.status();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| TrackerError::Request(e.without_url()))?
        {
            if body.len() + chunk.len() > MAX_RESPONSE {
                return Err(TrackerError::Malformed(
                    format!("response larger than {MAX_RESPONSE} bytes").into(),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if !status.is_success() && body.first() != Some(&b'd') {
            return Err(TrackerError::Http(format!("HTTP status {status}")));
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| TrackerError::Timeout)?
}

#[derive(Deserialize)]
struct RawResponse {
    #[serde(rename = "failure reason")]
    failure: Option<ByteBuf>,
    #[serde(rename = "warning message")]
    warning: Option<ByteBuf>,
    interval: Option<i64>,
    #[serde(rename = "min interval")]
    min_interval: Option<i64>,
    complete: Option<i64>,
    incomplete: Option<i64>,
    peers: Option<RawPeers>,
    peers6: Option<ByteBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPeers {
    Compact(ByteBuf),
    Dicts(Vec<RawPeer>),
}

#[derive(Deserialize)]
struct RawPeer {
    ip: ByteBuf,
    port: i64,
}

/// Parses an announce response body.
pub fn parse_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    // Our decoder bounds depth and size before serde sees the bytes.
    bencode::decode_with(body, Limits::LENIENT_KEYS).map_err(BadResponse::from)?;
    let raw: RawResponse = serde_bencode::from_bytes(body).map_err(BadResponse::from)?;
    if let Some(f) = raw.failure {
        return Err(TrackerError::Failure(
            String::from_utf8_lossy(&f).into_owned(),
        ));
    }
    let mut peers = Vec::new();
    match raw.peers {
        Some(RawPeers::Compact(b)) => {
            peers.extend(compact::decode_peers(&b, Family::V4).take(MAX_PEERS))
        }
        Some(RawPeers::Dicts(list)) => {
            for p in list.iter().take(MAX_PEERS) {
                let ip = std::str::from_utf8(&p.ip)
                    .ok()
                    .and_then(|s| s.parse::<IpAddr>().ok());
                if let (Some(ip), Ok(port)) = (ip, u16::try_from(p.port)) {
                    peers.push(SocketAddr::new(ip, port));
                }
            }
        }
        None => {}
    }
    if let Some(b) = raw.peers6 {
        peers.extend(compact::decode_peers(&b, Family::V6).take(MAX_PEERS));
    }
    peers.truncate(MAX_PEERS);
    let secs = |v: Option<i64>| {
        v.filter(|&s| s > 0)
            .map(|s| Duration::from_secs(s.min(86_400) as u64))
    };
    Ok(AnnounceResponse {
        interval: secs(raw.interval).unwrap_or(Duration::from_secs(1800)),
        min_interval: secs(raw.min_interval),
        peers,
        warning: raw
            .warning
            .map(|w| String::from_utf8_lossy(&w).into_owned()),
        seeders: raw.complete.and_then(|n| u32::try_from(n).ok()),
        leechers: raw.incomplete.and_then(|n| u32::try_from(n).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Event;
    use crate::types::{InfoHash, PeerId};

    #[test]
    fn percent_encodes_binary_values_byte_by_byte() {
        let mut ih = [0u8; 20];
        ih[0] = 0x12;
        ih[1] = b'a';
        ih[2] = 0xff;
        let req = AnnounceRequest {
            info_hash: InfoHash(ih),
            peer_id: PeerId(*b"-XR0001-abcdefghijkl"),
            port: 6881,
            uploaded: 0,
            downloaded: 10,
            left: 20,
            event: Some(Event::Started),
            numwant: 50,
            key: 0xdeadbeef,
            encryption: Encryption::Require,
        };
        let u = announce_url("http://t.example/announce?pk=1", &req);
        assert!(u.ends_with("&supportcrypto=1&requirecrypto=1"), "{u}");
        assert!(
            u.starts_with("http://t.example/announce?pk=1&info_hash=%12a%FF%00"),
            "{u}"
        );
        assert!(
            u.contains("&peer_id=%2DXR0001%2Dabcdefghijkl&port=6881"),
            "{u}"
        );
        assert!(
            u.contains("&left=20&compact=1&numwant=50&key=deadbeef&event=started"),
            "{u}"
        );
    }

    #[test]
    fn derives_scrape_urls_per_bep48() {
        let cases = [
            ("http://e.com/announce", Some("http://e.com/scrape")),
            (
                "http://e.com/x/announce?k=1",
                Some("http://e.com/x/scrape?k=1"),
            ),
            ("http://e.com/announce.php", Some("http://e.com/scrape.php")),
            ("http://e.com/a", None),
            ("http://e.com/announce/x", None),
            ("http://e.com/x%064announce", None),
        ];
        for (a, s) in cases {
            assert_eq!(scrape_url(a).as_deref(), s, "{a}");
        }
    }

    #[test]
    fn parses_scrape_responses() {
        let a = InfoHash([b'a'; 20]);
        let b = InfoHash([b'b'; 20]);
        let body =
            b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei3e10:downloadedi9e10:incompletei2eeee";
        let s = parse_scrape(body, &[a, b]).unwrap();
        assert_eq!(
            s[0],
            ScrapeStats {
                seeders: 3,
                completed: 9,
                leechers: 2
            }
        );
        assert_eq!(s[1], ScrapeStats::default());
        assert!(matches!(
            parse_scrape(b"d14:failure reason4:nopee", &[a]),
            Err(TrackerError::Failure(m)) if m == "nope"
        ));
        assert!(parse_scrape(b"de", &[a]).is_err());
        assert!(parse_scrape(b"d5:filesl", &[a]).is_err());
    }

    #[test]
    fn parses_compact_and_dictionary_peers() {
        let r = parse_response(b"d8:intervali900e12:min intervali60e5:peers12:\x7f\x00\x00\x01\x1a\xe1\x7f\x00\x00\x02\x1a\xe2e").unwrap();
        assert_eq!(r.interval, Duration::from_secs(900));
        assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
        assert_eq!(
            r.peers,
            vec![
                "127.0.0.1:6881".parse().unwrap(),
                "127.0.0.2:6882".parse().unwrap()
            ]
        );
        let r = parse_response(b"d8:intervali5e5:peersld2:ip9:127.0.0.37:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti7000eeee").unwrap();
        assert_eq!(r.peers, vec!["127.0.0.3:7000".parse().unwrap()]);
    }

    #[test]
    fn reports_failure_reason_and_malformed_bodies() {
        match parse_response(b"d14:failure reason9:not founde") {
            Err(TrackerError::Failure(m)) => assert_eq!(m, "not found"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_response(b"<html>"),
            Err(TrackerError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(&[b'l'; 5000]),
            Err(TrackerError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(b"d5:peersi3ee"),
            Err(TrackerError::Malformed(_))
        ));
    }
}
