//! Magnet links: this module parses the URI (BEP-9, with BEP-53 `so` file
//! selection); [`metadata`] assembles the info dictionary the link names
//! from peers' `ut_metadata` pieces (sans-IO) and `fetch` is the
//! metadata phase the swarm's connections run, before they go on to
//! download.
//!
//! [`Magnet::parse`] reads a link into a validated [`Magnet`]; `Display`
//! writes the canonical form back. The two are inverse on everything
//! `parse` returns: `Magnet::parse(&m.to_string()) == Ok(m)`.
//!
//! # What is read
//! - `xt=urn:btih:` (the `urn:btih:` prefix in either case) with the v1
//!   info-hash as 40 hex or 32 base32 (RFC 4648) characters, either case.
//!   The first `btih` counts; others are ignored. A link with only a v2
//!   `urn:btmh:` topic is refused: we cannot join a v2-only swarm.
//! - `dn` (name), `tr` (trackers), `ws` (web seeds, BEP-19), `x.pe` (peers
//!   as `host:port`, IPv6 as `[addr]:port`) and `so` (`0,2,4-6`).
//! - Keys match in either case and may carry an index (`tr.1`, `xt.2`,
//!   BEP-9). Values are percent-decoded as a form would be, so `+` is a
//!   space (common in `dn`). Unknown keys are ignored.
//! - Empty `dn`, `tr`, `ws` and `so` values count as absent; repeated
//!   trackers, web seeds and peers are dropped, first one kept.
//!
//! # Limits
//! A link (and its canonical form) is at most [`MAX_URI_LEN`] bytes and
//! holds at most [`MAX_LIST_LEN`] trackers, web seeds and peers each, so a
//! hostile link costs bounded memory and bounded lookups.
//!
//! # Canonical form
//! `magnet:?xt=urn:btih:<lowercase hex>`, then `dn`, every `tr`, `ws` and
//! `x.pe` in order, then `so`. Values are percent-encoded except for the
//! RFC 3986 unreserved characters; peers are written normalised (IP
//! literals as Rust prints them, ports without leading zeros).

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

pub(crate) mod fetch;
pub mod metadata;

use crate::metainfo::Torrent;
use crate::types::InfoHash;

/// Longest magnet link we read or write, in bytes.
pub const MAX_URI_LEN: usize = 64 * 1024;
/// Most trackers, web seeds and peers (each) one link may carry.
pub const MAX_LIST_LEN: usize = 1000;
/// Longest host name in `x.pe` (the DNS limit).
const MAX_HOST_LEN: usize = 253;
/// Host name lookups run at once in [`Magnet::resolve_peers`].
const LOOKUP_CONCURRENCY: usize = 8;
/// A lookup slower than this is given up (getaddrinfo has no deadline).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Characters written as they are in values: RFC 3986 unreserved.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("magnet link is {len} bytes long (at most {MAX_URI_LEN})")]
    TooLong { len: usize },
    #[error("not a magnet link (it must start with `magnet:?`)")]
    NotMagnet,
    #[error("magnet link has no info-hash (`xt=urn:btih:...`)")]
    MissingInfoHash,
    #[error("magnet link has only a BitTorrent v2 info-hash (`urn:btmh:`); v2-only torrents are not supported")]
    V2Only,
    #[error("invalid info-hash {value:?} in `xt`: {reason}")]
    BadInfoHash { value: String, reason: &'static str },
    #[error("invalid peer address {value:?} in `x.pe`: {reason}")]
    BadPeer { value: String, reason: &'static str },
    #[error("invalid file selection {value:?} in `so`: {reason}")]
    BadSelectOnly { value: String, reason: String },
    #[error("magnet link has more than {MAX_LIST_LEN} `{param}` values")]
    TooMany { param: &'static str },
}

/// A parsed magnet link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    pub info_hash: InfoHash,
    /// `dn`: a name to show until the metadata arrives.
    pub name: Option<String>,
    /// `tr`, in link order.
    pub trackers: Vec<String>,
    /// `x.pe`: `host:port` or `[ipv6]:port`, validated and normalised.
    pub peers: Vec<String>,
    /// `ws` (BEP-19 web seeds).
    pub web_seeds: Vec<String>,
    /// `so` (BEP-53): the file indexes to download; `None` means all.
    pub select_only: Option<Vec<RangeInclusive<u32>>>,
}

/// Whether `s` looks like a magnet link (so a CLI argument can be told from
/// a file name).
pub fn is_magnet(s: &str) -> bool {
    s.trim_start()
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("magnet:?"))
}

impl Magnet {
    pub fn parse(uri: &str) -> Result<Magnet, MagnetError> {
        if uri.len() > MAX_URI_LEN {
            return Err(MagnetError::TooLong { len: uri.len() });
        }
        // Links are pasted with stray whitespace around them.
        let uri = uri.trim();
        let query = uri
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &uri[8..])
            .ok_or(MagnetError::NotMagnet)?;

        let mut info_hash = None;
        let mut saw_btmh = false;
        let mut name = None;
        let mut trackers = Vec::new();
        let mut web_seeds = Vec::new();
        let mut peers = Vec::new();
        let mut select: Vec<RangeInclusive<u32>> = Vec::new();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let key = unindexed(&key);
            let is = |k: &str| key.eq_ignore_ascii_case(k);
            if is("xt") {
                if info_hash.is_some() {
                    continue;
                }
                if let Some(h) = strip_prefix_ci(&value, "urn:btih:") {
                    info_hash = Some(parse_btih(h)?);
                } else if strip_prefix_ci(&value, "urn:btmh:").is_some() {
                    saw_btmh = true;
                }
            } else if is("dn") {
                if name.is_none() && !value.is_empty() {
                    name = Some(value.into_owned());
                }
            } else if is("tr") {
                push_unique(&mut trackers, value.into_owned(), "tr")?;
            } else if is("ws") {
                push_unique(&mut web_seeds, value.into_owned(), "ws")?;
            } else if is("x.pe") {
                push_unique(&mut peers, parse_peer(&value)?, "x.pe")?;
            } else if is("so") {
                parse_select(&value, &mut select)?;
            }
        }
        let info_hash = match info_hash {
            Some(h) => h,
            None if saw_btmh => return Err(MagnetError::V2Only),
            None => return Err(MagnetError::MissingInfoHash),
        };
        let m = Magnet {
            info_hash,
            name,
            trackers,
            peers,
            web_seeds,
            select_only: (!select.is_empty()).then_some(select),
        };
        // Encoding can triple a value; capping the canonical form too keeps
        // every parsed link printable in a form that parses back.
        let mut len = Counter(0);
        write!(len, "{m}").expect("counting cannot fail");
        if len.0 > MAX_URI_LEN {
            return Err(MagnetError::TooLong { len: len.0 });
        }
        Ok(m)
    }

    /// The magnet link for a torrent: its name, every tracker in tier order
    /// and its web seeds.
    pub fn from_torrent(t: &Torrent) -> Magnet {
        let mut trackers: Vec<String> = Vec::new();
        for url in t.trackers.iter().flatten() {
            if trackers.len() < MAX_LIST_LEN && !url.is_empty() && !trackers.contains(url) {
                trackers.push(url.clone());
            }
        }
        let mut web_seeds: Vec<String> = Vec::new();
        for url in &t.web_seeds {
            if web_seeds.len() < MAX_LIST_LEN && !url.is_empty() && !web_seeds.contains(url) {
                web_seeds.push(url.clone());
            }
        }
        Magnet {
            info_hash: t.info_hash,
            name: Some(t.name.clone()).filter(|n| !n.is_empty()),
            trackers,
            peers: Vec::new(),
            web_seeds,
            select_only: None,
        }
    }

    /// Whether the link asks for file `file_index` (BEP-53); every file when
    /// there is no `so`.
    pub fn selects(&self, file_index: u32) -> bool {
        self.select_only
            .as_ref()
            .is_none_or(|s| s.iter().any(|r| r.contains(&file_index)))
    }

    /// The `x.pe` peers given as IP literals.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.peers.iter().filter_map(|p| p.parse().ok()).collect()
    }

    /// Every `x.pe` peer as addresses: literals as they are, host names
    /// looked up (a name that does not resolve is skipped with a warning).
    pub async fn resolve_peers(&self) -> Vec<SocketAddr> {
        let lookups = self.peers.iter().map(|p| async move {
            if let Ok(a) = p.parse::<SocketAddr>() {
                return vec![a];
            }
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(p.as_str())).await {
                Ok(Ok(addrs)) => addrs.collect(),
                Ok(Err(e)) => {
                    tracing::warn!(peer = %p, "cannot resolve magnet peer: {e}");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(peer = %p, "magnet peer lookup timed out");
                    Vec::new()
                }
            }
        });
        let mut found = futures::stream::iter(lookups).buffered(LOOKUP_CONCURRENCY);
        let mut out = Vec::new();
        while let Some(addrs) = found.next().await {
            for a in addrs {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }
}

impl fmt::Display for Magnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "magnet:?xt=urn:btih:{}", self.info_hash.to_hex())?;
        if let Some(n) = &self.name {
            write!(f, "&dn={}", utf8_percent_encode(n, VALUE))?;
        }
        for (key, list) in [
            ("tr", &self.trackers),
            ("ws", &self.web_seeds),
            ("x.pe", &self.peers),
        ] {
            for v in list {
                write!(f, "&{key}={}", utf8_percent_encode(v, VALUE))?;
            }
        }
        if let Some(s) = self.select_only.as_ref().filter(|s| !s.is_empty()) {
            // Digits, `,` and `-` are all legal in a query: left readable.
            f.write_str("&so=")?;
            for (i, r) in s.iter().enumerate() {
                if i > 0 {
                    f.write_char(',')?;
                }
                if r.start() == r.end() {
                    write!(f, "{}", r.start())?;
                } else {
                    write!(f, "{}-{}", r.start(), r.end())?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for Magnet {
    type Err = MagnetError;
    fn from_str(s: &str) -> Result<Magnet, MagnetError> {
        Magnet::parse(s)
    }
}

/// Counts the bytes a `Display` would write, without keeping them.
struct Counter(usize);

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// `tr.1` → `tr`; `x.pe` stays `x.pe` (its suffix is not an index).
fn unindexed(key: &str) -> &str {
    match key.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => key,
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Error values echo at most this much of the input.
fn clip(s: &str) -> String {
    const SHOWN: usize = 80;
    match s.char_indices().nth(SHOWN) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

fn push_unique(list: &mut Vec<String>, v: String, param: &'static str) -> Result<(), MagnetError> {
    if v.is_empty() || list.contains(&v) {
        return Ok(());
    }
    if list.len() == MAX_LIST_LEN {
        return Err(MagnetError::TooMany { param });
    }
    list.push(v);
    Ok(())
}

fn parse_btih(s: &str) -> Result<InfoHash, MagnetError> {
    let bad = |reason| MagnetError::BadInfoHash {
        value: clip(s),
        reason,
    };
    match s.len() {
        40 => InfoHash::from_hex(s).ok_or_else(|| bad("not hexadecimal")),
        32 => base32_20(s.as_bytes())
            .map(InfoHash)
            .ok_or_else(|| bad("not base32 (letters A-Z and digits 2-7)")),
        _ => Err(bad("expected 40 hex or 32 base32 characters")),
    }
}

/// RFC 4648 base32 of exactly 20 bytes: 32 characters, no padding needed.
fn base32_20(s: &[u8]) -> Option<[u8; 20]> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 20];
    let mut acc: u64 = 0;
    let mut bits = 0;
    let mut n = 0;
    for &c in s {
        let v = match c.to_ascii_uppercase() {
            c @ b'A'..=b'Z' => c - b'A',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = acc << 5 | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            // The low byte is the next one; the bits above were written.
            out[n] = (acc >> bits).to_le_bytes()[0];
            n += 1;
        }
    }
    // 32 × 5 bits are exactly 20 bytes: nothing left over.
    debug_assert!(n == 20 && bits == 0);
    Some(out)
}

/// Checks one `x.pe` value and returns it normalised.
fn parse_peer(v: &str) -> Result<String, MagnetError> {
    let bad = |reason| MagnetError::BadPeer {
        value: clip(v),
        reason,
    };
    let (host, port) = if let Some(rest) = v.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(|| bad("`[` without `]`"))?;
        let port = after.strip_prefix(':').ok_or_else(|| bad("no port"))?;
        let ip: Ipv6Addr = addr
            .parse()
            .map_err(|_| bad("not an IPv6 address inside `[]`"))?;
        (Ok(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = v.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.contains(':') {
            return Err(bad("an IPv6 address must be in brackets: [addr]:port"));
        }
        let ip = host.parse::<std::net::Ipv4Addr>().map(IpAddr::V4);
        if ip.is_err()
            && (host.len() > MAX_HOST_LEN
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)))
        {
            return Err(bad("not a host name or IP address"));
        }
        (ip.map_err(|_| host), port)
    };
    // `u16::from_str` takes a leading `+`; a port is digits only.
    let port: u16 = Some(port)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    Ok(match host {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(name) => format!("{name}:{port}"),
    })
}

/// File indexes in `so` syntax (`0,2,4-6`), for `download --select`; the
/// error is the reason alone.
pub fn parse_file_indexes(v: &str) -> Result<Vec<RangeInclusive<u32>>, String> {
    let mut out = Vec::new();
    match parse_select(v, &mut out) {
        Ok(()) => Ok(out),
        Err(MagnetError::BadSelectOnly { reason, .. }) => Err(reason),
        Err(e) => Err(e.to_string()),
    }
}

/// Adds the ranges of one `so` value (`0,2,4-6`) to `out`.
fn parse_select(v: &str, out: &mut Vec<RangeInclusive<u32>>) -> Result<(), MagnetError> {
    let bad = |reason: String| MagnetError::BadSelectOnly {
        value: clip(v),
        reason,
    };
    let index = |s: &str| -> Result<u32, MagnetError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("{:?} is not a file index", clip(s))));
        }
        s.parse()
            .map_err(|_| bad(format!("file index {} is too large", clip(s))))
    };
    // Empty items (`0,,2` or a trailing comma) are slips, not errors.
    for item in v.split(',').filter(|i| !i.trim().is_empty()) {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (index(a)?, index(b)?),
            None => {
                let n = index(item)?;
                (n, n)
            }
        };
        if a > b {
            return Err(bad(format!("the range {a}-{b} runs backwards")));
        }
        out.push(a..=b);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";

    fn hash() -> InfoHash {
        InfoHash::from_hex(HEX).unwrap()
    }

    fn round_trips(m: &Magnet) {
        let text = m.to_string();
        assert_eq!(Magnet::parse(&text).as_ref(), Ok(m), "{text}");
    }

    #[test]
    fn parses_every_parameter_and_prints_them_back_canonically() {
        let m = Magnet::parse(
            "magnet:?xt=urn:btih:C12FE1C06BBA254A9DC9F519B335AA7C1367A88A&dn=Big+Buck%20Bunny\
             &tr=udp%3A%2F%2Ftracker.example%3A80%2Fannounce&tr=http://t.example/a?k=1\
             &ws=http%3A%2F%2Fw.example%2Ff&x.pe=10.0.0.1:6881&x.pe=%5B::1%5D:51413\
             &x.pe=peer.example:0080&so=0,2,4-6&unknown=whatever",
        )
        .unwrap();
        assert_eq!(m.info_hash, hash());
        assert_eq!(m.name.as_deref(), Some("Big Buck Bunny"));
        // `?k=1` stays in the URL: only `&` separates parameters.
        assert_eq!(
            m.trackers,
            [
                "udp://tracker.example:80/announce",
                "http://t.example/a?k=1"
            ]
        );
        assert_eq!(m.web_seeds, ["http://w.example/f"]);
        assert_eq!(m.peers, ["10.0.0.1:6881", "[::1]:51413", "peer.example:80"]);
        assert_eq!(m.select_only, Some(vec![0..=0, 2..=2, 4..=6]));
        assert_eq!(
            m.to_string(),
            format!(
                "magnet:?xt=urn:btih:{HEX}&dn=Big%20Buck%20Bunny\
                 &tr=udp%3A%2F%2Ftracker.example%3A80%2Fannounce&tr=http%3A%2F%2Ft.example%2Fa%3Fk%3D1\
                 &ws=http%3A%2F%2Fw.example%2Ff\
                 &x.pe=10.0.0.1%3A6881&x.pe=%5B%3A%3A1%5D%3A51413&x.pe=peer.example%3A80\
                 &so=0,2,4-6"
            )
        );
        round_trips(&m);
    }

    #[test]
    fn values_are_percent_encoded_except_unreserved_characters() {
        let m = Magnet {
            info_hash: InfoHash([0xab; 20]),
            name: Some("My File (1).iso".into()),
            trackers: vec![
                "http://t.example/ann?x=1&y=2".into(),
                "udp://u.example:80".into(),
            ],
            peers: Vec::new(),
            web_seeds: Vec::new(),
            select_only: None,
        };
        assert_eq!(
            m.to_string(),
            format!(
                "magnet:?xt=urn:btih:{}&dn=My%20File%20%281%29.iso\
                 &tr=http%3A%2F%2Ft.example%2Fann%3Fx%3D1%26y%3D2&tr=udp%3A%2F%2Fu.example%3A80",
                "ab".repeat(20)
            )
        );
        round_trips(&m);
        let odd = Magnet {
            name: Some("a+b ~é&=%\u{fffd}".into()),
            trackers: vec!["http://x/ a+b".into()],
            ..m
        };
        round_trips(&odd);
    }

    #[test]
    fn reads_base32_info_hashes_in_either_case() {
        // RFC 4648 test vector, padded out to 20 bytes with zeros.
        let mut want = [0u8; 20];
        want[..6].copy_from_slice(b"foobar");
        let b32 = "MZXW6YTBOIAAAAAAAAAAAAAAAAAAAAAA";
        for s in [b32.to_string(), b32.to_lowercase()] {
            let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{s}")).unwrap();
            assert_eq!(m.info_hash, InfoHash(want));
            round_trips(&m);
        }
        let m = Magnet::parse("magnet:?xt=urn:btih:77777777777777777777777777777777").unwrap();
        assert_eq!(m.info_hash.to_hex(), "ff".repeat(20));
        let m = Magnet::parse("magnet:?xt=urn:btih:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB").unwrap();
        assert_eq!(m.info_hash.0[19], 1);
    }

    #[test]
    fn rejects_malformed_info_hashes_and_names_the_parameter() {
        for xt in [
            "urn:btih:",
            "urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88",
            "urn:btih:c12fe1c06bba254a9dc9f519b335aa7c1367a88aa",
            "urn:btih:g12fe1c06bba254a9dc9f519b335aa7c1367a88a",
            "urn:btih:MZXW6YTBOIAAAAAAAAAAAAAAAAAAAAA1",
            "urn:btih:MZXW6YTBOIAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let e = Magnet::parse(&format!("magnet:?xt={xt}")).unwrap_err();
            assert!(matches!(e, MagnetError::BadInfoHash { .. }), "{xt}: {e}");
            assert!(e.to_string().contains("`xt`"), "{e}");
        }
    }

    #[test]
    fn the_first_btih_counts_and_v2_only_links_are_refused() {
        let other = "ff".repeat(20);
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:sha1:XYZ&xt.1=URN:BTIH:{HEX}&xt.2=urn:btih:{other}&xt=urn:btmh:1220aa"
        ))
        .unwrap();
        assert_eq!(m.info_hash, hash());
        let e = Magnet::parse("magnet:?xt=urn:btmh:1220abcd&dn=x").unwrap_err();
        assert_eq!(e, MagnetError::V2Only);
        assert!(e.to_string().contains("v2-only torrents are not supported"));
        assert_eq!(
            Magnet::parse("magnet:?dn=x&tr=http://a/"),
            Err(MagnetError::MissingInfoHash)
        );
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:sha1:abc"),
            Err(MagnetError::MissingInfoHash)
        );
    }

    #[test]
    fn scheme_is_case_insensitive_and_other_uris_are_refused() {
        assert!(Magnet::parse(&format!("  MAGNET:?xt=urn:btih:{HEX}\n")).is_ok());
        for s in ["", "magnet:", "magnet:xt=1", "http://x/?xt=urn:btih:", "é"] {
            assert_eq!(Magnet::parse(s), Err(MagnetError::NotMagnet), "{s:?}");
        }
        assert!(is_magnet("Magnet:?xt"));
        assert!(is_magnet(" magnet:?"));
        assert!(!is_magnet("magnet.torrent"));
        assert!(!is_magnet("magnet"));
        assert!(!is_magnet("éééé"));
    }

    #[test]
    fn indexed_keys_and_repeats_are_collected_in_order() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&tr.1=http://a/&TR.2=http://b/&tr=http://a/&tr=\
             &ws=&dn=&dn=second&DN=third&x.pe.1=1.2.3.4:5&x.pe=1.2.3.4:05"
        ))
        .unwrap();
        assert_eq!(m.trackers, ["http://a/", "http://b/"]);
        assert!(m.web_seeds.is_empty());
        assert_eq!(m.name.as_deref(), Some("second"));
        assert_eq!(m.peers, ["1.2.3.4:5"]);
        round_trips(&m);
    }

    #[test]
    fn rejects_peers_without_a_usable_host_or_port() {
        for pe in [
            "1.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:0",
            "1.2.3.4:65536",
            "1.2.3.4:+80",
            "1.2.3.4:8o",
            ":6881",
            "::1:6881",
            "[::1]",
            "[::1]6881",
            "[::1:6881",
            "[not-v6]:1",
            "host name:1",
            "host/x:1",
        ] {
            let e = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&x.pe={pe}")).unwrap_err();
            assert!(matches!(e, MagnetError::BadPeer { .. }), "{pe}: {e}");
            assert!(e.to_string().contains("`x.pe`"), "{e}");
        }
    }

    #[test]
    fn peer_addrs_are_the_literal_peers() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&x.pe=example.org:1&x.pe=127.0.0.1:2&x.pe=[::1]:3"
        ))
        .unwrap();
        assert_eq!(
            m.peer_addrs(),
            [
                "127.0.0.1:2".parse::<SocketAddr>().unwrap(),
                "[::1]:3".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn resolve_peers_looks_host_names_up() {
        let m = Magnet::parse(&format!(
            "magnet:?xt=urn:btih:{HEX}&x.pe=127.0.0.1:7&x.pe=localhost:9"
        ))
        .unwrap();
        let addrs = m.resolve_peers().await;
        assert_eq!(addrs[0], "127.0.0.1:7".parse().unwrap());
        assert!(
            addrs[1..]
                .iter()
                .any(|a| a.port() == 9 && a.ip().is_loopback()),
            "{addrs:?}"
        );
    }

    #[test]
    fn select_only_takes_indexes_and_inclusive_ranges() {
        let m =
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&so=0,2,4-6,+9-9,&so=12")).unwrap();
        assert_eq!(
            m.select_only,
            Some(vec![0..=0, 2..=2, 4..=6, 9..=9, 12..=12])
        );
        let chosen: Vec<u32> = (0..14).filter(|&i| m.selects(i)).collect();
        assert_eq!(chosen, [0, 2, 4, 5, 6, 9, 12]);
        round_trips(&m);
        let all = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&so=")).unwrap();
        assert_eq!(all.select_only, None);
        assert!(all.selects(u32::MAX));
    }

    #[test]
    fn rejects_backward_ranges_and_non_numbers_in_select_only() {
        for so in ["6-4", "a", "1-", "-1", "1-2-3", "0x1", "4294967296", "1.5"] {
            let e = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&so={so}")).unwrap_err();
            assert!(matches!(e, MagnetError::BadSelectOnly { .. }), "{so}: {e}");
            assert!(e.to_string().contains("`so`"), "{e}");
        }
        let e = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&so=6-4")).unwrap_err();
        assert!(e.to_string().contains("6-4 runs backwards"), "{e}");
    }

    #[test]
    fn hostile_links_hit_the_length_and_count_limits() {
        let long = format!("magnet:?xt=urn:btih:{HEX}&dn={}", "a".repeat(MAX_URI_LEN));
        assert!(matches!(
            Magnet::parse(&long),
            Err(MagnetError::TooLong { .. })
        ));
        // Short enough as given, too long once every byte is escaped.
        let wide = format!("magnet:?xt=urn:btih:{HEX}&dn={}", "(".repeat(30_000));
        assert!(matches!(
            Magnet::parse(&wide),
            Err(MagnetError::TooLong { .. })
        ));
        let mut many = format!("magnet:?xt=urn:btih:{HEX}");
        for i in 0..=MAX_LIST_LEN {
            many.push_str(&format!("&tr=u{i}"));
        }
        assert_eq!(
            Magnet::parse(&many),
            Err(MagnetError::TooMany { param: "tr" })
        );
        // Repeats do not count against the limit.
        let mut repeats = format!("magnet:?xt=urn:btih:{HEX}");
        for _ in 0..=MAX_LIST_LEN {
            repeats.push_str("&x.pe=1.2.3.4:1");
        }
        assert_eq!(Magnet::parse(&repeats).unwrap().peers.len(), 1);
    }

    #[test]
    fn from_torrent_takes_name_trackers_in_tier_order_and_web_seeds() {
        let info =
            b"d6:lengthi3e4:name5:a b+c12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let mut t = Torrent::from_info_bytes(info).unwrap();
        t.trackers = vec![
            vec!["http://a/".into(), "udp://b:1".into()],
            vec!["http://c/".into()],
        ];
        t.web_seeds = vec!["http://w/".into()];
        let m = Magnet::from_torrent(&t);
        assert_eq!(m.info_hash, t.info_hash);
        assert_eq!(m.name.as_deref(), Some("a b+c"));
        assert_eq!(m.trackers, ["http://a/", "udp://b:1", "http://c/"]);
        assert_eq!(m.web_seeds, ["http://w/"]);
        assert!(m.peers.is_empty() && m.select_only.is_none());
        round_trips(&m);
        assert_eq!(m.to_string().parse::<Magnet>(), Ok(m));
    }
}
