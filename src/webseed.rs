//! BEP-19 (GetRight-style) web seeds: an HTTP server that holds the
//! torrent's files, asked for byte ranges of them.
//!
//! Sans-IO: which URL and byte range hold a span of the torrent's stream
//! ([`requests`]), and whether a response is the one asked for
//! ([`check_response`]). The fetching task lives with the swarm.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::engine::picker::PeerKey;
use crate::engine::{Engine, PeerCommand};
use crate::metainfo::{FileKind, Torrent};
use crate::types::{Bitfield, BlockRef, Geometry, PeerId, PieceIndex};

/// What a path element may keep unescaped: RFC 3986 unreserved characters.
const ELEMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'&')
    .add(b'+')
    .add(b',')
    .add(b'$')
    .add(b'!')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*');

/// The longest wait a server's `Retry-After` may ask for.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WebSeedError {
    #[error("not a usable web seed URL: {0}")]
    BadUrl(String),
    #[error("the server has no such file (HTTP {0})")]
    Gone(u16),
    #[error("the server is busy (HTTP {status}); retry in {after:?}")]
    Busy { status: u16, after: Duration },
    #[error("HTTP {0}")]
    Status(u16),
    #[error("the server ignored the range and sent the whole file")]
    IgnoredRange,
    #[error("the server sent another range than asked: {0}")]
    WrongRange(String),
    #[error("the server's file is {got} bytes, the torrent's {want}")]
    WrongLength { got: u64, want: u64 },
}

impl WebSeedError {
    /// Errors after which the server is not asked again.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(
            self,
            WebSeedError::BadUrl(_)
                | WebSeedError::Gone(_)
                | WebSeedError::IgnoredRange
                | WebSeedError::WrongRange(_)
                | WebSeedError::WrongLength { .. }
        )
    }
}

/// One HTTP request for part of a span of the torrent's stream: bytes
/// `range` of the file at `url`, landing at `at` in the span's buffer.
/// Pad files are not asked for (they are zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub url: Url,
    pub range: Range<u64>,
    /// The whole file's length: a 200 answer is fine when `range` is all
    /// of it.
    pub file_len: u64,
    pub at: usize,
}

/// The URL of every file of `t` under the web seed `base` (`None` for pad
/// files and symlinks, which have no bytes on the server). For a
/// single-file torrent `base` is the file itself, or a directory when it
/// ends in `/`; for a multi-file torrent it is the directory holding the
/// torrent's top folder. Path elements are percent-encoded one by one.
pub(crate) fn file_urls(base: &str, t: &Torrent) -> Result<Vec<Option<Url>>, WebSeedError> {
    let url = Url::parse(base).map_err(|e| WebSeedError::BadUrl(format!("{base}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(WebSeedError::BadUrl(base.to_string()));
    }
    let mut out = Vec::with_capacity(t.files.len());
    for f in &t.files {
        if f.kind != FileKind::Regular {
            out.push(None);
            continue;
        }
        if !t.multi_file && !base.ends_with('/') {
            out.push(Some(url.clone()));
            continue;
        }
        // The files go below the base's path; its query stays at the end.
        let mut dir = url.clone();
        dir.set_query(None);
        dir.set_fragment(None);
        let mut s = dir.as_str().to_string();
        if !s.ends_with('/') {
            s.push('/');
        }
        let elements: Vec<String> = f
            .path
            .components()
            .map(|c| utf8_percent_encode(&c.as_os_str().to_string_lossy(), ELEMENT).to_string())
            .collect();
        s.push_str(&elements.join("/"));
        if let Some(q) = url.query() {
            s.push('?');
            s.push_str(q);
        }
        out.push(Some(
            Url::parse(&s).map_err(|e| WebSeedError::BadUrl(format!("{s}: {e}")))?,
        ));
    }
    Ok(out)
}

/// The requests that fetch bytes `span` of the torrent's stream: one per
/// file the span touches, pad files and symlinks left out.
pub(crate) fn requests(t: &Torrent, urls: &[Option<Url>], span: Range<u64>) -> Vec<Request> {
    let start = t
        .files
        .partition_point(|f| f.offset + f.length <= span.start);
    let mut out = Vec::new();
    for (f, url) in t.files.iter().zip(urls).skip(start) {
        if f.offset >= span.end {
            break;
        }
        let (lo, hi) = (span.start.max(f.offset), span.end.min(f.offset + f.length));
        if lo >= hi {
            continue;
        }
        if let Some(url) = url {
            out.push(Request {
                url: url.clone(),
                range: lo - f.offset..hi - f.offset,
                file_len: f.length,
                at: usize::try_from(lo - span.start).expect("a span is held in a buffer"),
            });
        }
    }
    out
}

/// What the headers of a response promise.
#[derive(Debug, Default, Clone)]
pub(crate) struct Head<'a> {
    pub status: u16,
    pub content_range: Option<&'a str>,
    pub content_length: Option<u64>,
    pub retry_after: Option<&'a str>,
}

/// Whether a response answers `req`: 206 with exactly the range asked
/// (and the file's length where the server names it), or 200 when the
/// range is the whole file. The body must then be `req.range` long.
pub(crate) fn check_response(h: &Head<'_>, req: &Request) -> Result<(), WebSeedError> {
    let want_len = req.range.end - req.range.start;
    match h.status {
        206 => {
            let cr = h
                .content_range
                .ok_or_else(|| WebSeedError::WrongRange("no Content-Range".into()))?;
            let (first, last, total) = parse_content_range(cr)
                .ok_or_else(|| WebSeedError::WrongRange(format!("{cr:?}")))?;
            if first != req.range.start || last + 1 != req.range.end {
                return Err(WebSeedError::WrongRange(format!(
                    "{cr:?} for bytes {}-{}",
                    req.range.start,
                    req.range.end - 1
                )));
            }
            if let Some(total) = total.filter(|&t| t != req.file_len) {
                return Err(WebSeedError::WrongLength {
                    got: total,
                    want: req.file_len,
                });
            }
            if let Some(n) = h.content_length.filter(|&n| n != want_len) {
                return Err(WebSeedError::WrongRange(format!(
                    "Content-Length {n} for {want_len} bytes"
                )));
            }
            Ok(())
        }
        200 => {
            if let Some(n) = h.content_length.filter(|&n| n != req.file_len) {
                return Err(WebSeedError::WrongLength {
                    got: n,
                    want: req.file_len,
                });
            }
            if req.range.start == 0 && req.range.end == req.file_len {
                Ok(())
            } else {
                Err(WebSeedError::IgnoredRange)
            }
        }
        404 | 410 => Err(WebSeedError::Gone(h.status)),
        429 | 503 => Err(WebSeedError::Busy {
            status: h.status,
            after: h
                .retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(Duration::from_secs(30))
                .min(MAX_RETRY_AFTER),
        }),
        s => Err(WebSeedError::Status(s)),
    }
}

/// `bytes FIRST-LAST/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let (first, last): (u64, u64) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
    if last < first {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first, last, total))
}

/// Bytes asked of a server at once: whole runs of blocks, so one
/// request carries many pieces when the picker hands out neighbours.
const SPAN_BLOCKS: usize = 64;
/// Failures in a row (timeouts, 5xx) after which a server is dropped.
const MAX_FAILURES: u32 = 5;
/// The longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client web seeds share: from `bind` (`--bind`) when given,
/// bounded redirects (a loop ends as an error), rustls, connection reuse.
pub(crate) fn client(bind: Option<std::net::IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(bind)
        .redirect(reqwest::redirect::Policy::limited(5))
        .connect_timeout(Duration::from_secs(15))
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("xorrent/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Why a web seed stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Ended {
    #[error(transparent)]
    Server(#[from] WebSeedError),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("{url}: the body ended after {got} of {want} bytes")]
    ShortBody { url: Url, got: usize, want: usize },
    #[error("the server sent data that failed the hash check")]
    Banned,
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("{0} failures in a row")]
    Failing(u32),
}

/// A web seed as one more source: a pseudo-peer of the engine that has
/// every piece, takes runs of blocks from the picker, fetches them over
/// HTTP and files them like blocks from a peer (so they are hashed, and a
/// server whose data fails is banned like a peer). Ends when the
/// download is complete, on `cancel`, or with the reason the server was
/// dropped.
pub(crate) async fn run(
    engine: Arc<Engine>,
    t: Arc<Torrent>,
    base: String,
    http: reqwest::Client,
    cancel: CancellationToken,
) -> Result<(), Ended> {
    let urls = file_urls(&base, &t)?;
    let Some(addr) = server_addr(&urls).await? else {
        return Ok(()); // nothing but pads and symlinks
    };
    let (tx, mut commands) = tokio::sync::mpsc::channel(64);
    let kill = cancel.child_token();
    let key = engine
        .register(
            addr,
            PeerId::web_seed(&base),
            false,
            false,
            tx,
            kill.clone(),
        )
        .map_err(|_| Ended::Banned)?;
    engine.stats.web_seeds.fetch_add(1, Ordering::Relaxed);
    let _registered = Unregister(&engine, key);
    engine.on_bitfield(key, Bitfield::full(t.geometry().num_pieces));
    engine.peer_choking(key, false);
    engine.am_interested(key, true);
    let mut seed = Seed {
        engine: &engine,
        t: &t,
        urls,
        http,
        key,
        buf: Vec::new(),
    };
    let mut failures = 0u32;
    let mut blocks = Vec::new();
    loop {
        while let Ok(c) = commands.try_recv() {
            if matches!(c, PeerCommand::Disconnect) {
                return Ok(());
            }
        }
        if engine.is_banned(addr.ip()) {
            return Err(Ended::Banned);
        }
        if kill.is_cancelled() || engine.is_complete() {
            return Ok(());
        }
        seed.pick(&mut blocks);
        let wait = if blocks.is_empty() {
            Duration::from_millis(250)
        } else {
            let fetched = tokio::select! {
                r = seed.fetch(&blocks) => r,
                _ = kill.cancelled() => return Ok(()),
            };
            match fetched {
                Ok(()) => {
                    failures = 0;
                    continue;
                }
                Err(e) => backoff(&base, e, &mut failures)?,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = kill.cancelled() => return Ok(()),
        }
    }
}

/// The server's address, the key it is registered and banned under;
/// `None` when no file has a URL.
async fn server_addr(urls: &[Option<Url>]) -> Result<Option<SocketAddr>, Ended> {
    let Some(url) = urls.iter().flatten().next() else {
        return Ok(None);
    };
    let host = url.host_str().unwrap_or("");
    let port = url.port_or_known_default().unwrap_or(80);
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| Ended::Resolve {
            host: host.to_string(),
            source: Some(e),
        })?
        .next()
        .ok_or_else(|| Ended::Resolve {
            host: host.to_string(),
            source: None,
        })
        .map(Some)
}

/// How long to wait after a failed fetch, or why to give the server up.
fn backoff(base: &str, e: Ended, failures: &mut u32) -> Result<Duration, Ended> {
    match e {
        Ended::Server(e) if e.is_fatal() => Err(e.into()),
        Ended::Server(WebSeedError::Busy { after, .. }) => {
            tracing::debug!(%base, ?after, "web seed busy");
            Ok(after)
        }
        e => {
            *failures += 1;
            tracing::debug!(%base, failures, "web seed request failed: {e}");
            if *failures >= MAX_FAILURES {
                return Err(Ended::Failing(*failures));
            }
            Ok(Duration::from_secs(1 << (*failures).min(5)))
        }
    }
}

/// One web seed's view of the engine while it runs.
struct Seed<'a> {
    engine: &'a Arc<Engine>,
    t: &'a Torrent,
    urls: Vec<Option<Url>>,
    http: reqwest::Client,
    key: PeerKey,
    /// One run of blocks as it comes from the server (at most
    /// `SPAN_BLOCKS` blocks), reused from run to run.
    buf: Vec<u8>,
}

impl Seed<'_> {
    /// Up to `SPAN_BLOCKS` blocks from the picker, in stream order. Runs
    /// of pieces make few, long requests: what the picker chose is
    /// extended with the pieces that follow it.
    fn pick(&self, blocks: &mut Vec<BlockRef>) {
        let geo = self.t.geometry();
        blocks.clear();
        self.engine.pick(self.key, SPAN_BLOCKS, None, blocks);
        if let Some(last) = blocks.iter().map(|b| b.piece).max() {
            if blocks.len() < SPAN_BLOCKS {
                let after = last as usize + 1;
                let next: Vec<PieceIndex> = geo.pieces().skip(after).take(SPAN_BLOCKS).collect();
                let room = SPAN_BLOCKS - blocks.len();
                self.engine.pick(self.key, room, Some(&next), blocks);
            }
        }
        blocks.sort_by_key(|b| geo.block_offset(b));
    }

    /// Fetches each contiguous run of `blocks` and files its blocks with
    /// the engine; blocks not delivered go back to the picker.
    async fn fetch(&mut self, blocks: &[BlockRef]) -> Result<(), Ended> {
        let geo = self.t.geometry();
        let mut done = 0;
        let mut result = Ok(());
        for run in contiguous(&geo, blocks) {
            let first = &run[0];
            let start = geo.block_offset(first);
            let len: usize = run.iter().map(|b| b.len as usize).sum();
            // Zeroed: pad files are not fetched.
            self.buf.clear();
            self.buf.resize(len, 0);
            let span = start..start + len as u64;
            if let Err(e) = fetch_span(&self.http, self.t, &self.urls, span, &mut self.buf).await {
                result = Err(e);
                break;
            }
            self.engine.acquire_download(len as u64).await;
            let mut at = 0usize;
            for b in run {
                let data = &self.buf[at..at + b.len as usize];
                let piece = geo
                    .piece(b.piece)
                    .expect("the picker picks pieces of the torrent");
                self.engine.on_block(self.key, piece, b.offset, data).await;
                at += b.len as usize;
            }
            done += run.len();
        }
        for b in &blocks[done..] {
            self.engine.release(self.key, *b);
        }
        result
    }
}

struct Unregister<'a>(&'a Engine, PeerKey);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.unregister(self.1);
        self.0.stats.web_seeds.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `blocks` (sorted by stream offset) cut into runs without gaps.
fn contiguous<'a>(
    geo: &'a Geometry,
    blocks: &'a [BlockRef],
) -> impl Iterator<Item = &'a [BlockRef]> + 'a {
    let end = |b: &BlockRef| geo.block_offset(b) + u64::from(b.len);
    let start = |b: &BlockRef| geo.block_offset(b);
    blocks.chunk_by(move |a, b| end(a) == start(b))
}

/// Fills `buf` with bytes `span` of the torrent from the server: one
/// request per file, pad files left as zeros.
async fn fetch_span(
    http: &reqwest::Client,
    t: &Torrent,
    urls: &[Option<Url>],
    span: Range<u64>,
    buf: &mut [u8],
) -> Result<(), Ended> {
    for req in requests(t, urls, span) {
        let len = usize::try_from(req.range.end - req.range.start).expect("inside the span");
        let out = &mut buf[req.at..req.at + len];
        let mut resp = http
            .get(req.url.clone())
            .header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", req.range.start, req.range.end - 1),
            )
            .send()
            .await
            .map_err(|e| {
                if e.is_redirect() {
                    Ended::Server(WebSeedError::BadUrl(format!(
                        "{}: too many redirects",
                        req.url
                    )))
                } else {
                    Ended::Http(e)
                }
            })?;
        let h = resp.headers();
        let text = |name| {
            h.get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
        };
        let head = Head {
            status: resp.status().as_u16(),
            content_range: text(reqwest::header::CONTENT_RANGE),
            content_length: resp.content_length(),
            retry_after: text(reqwest::header::RETRY_AFTER),
        };
        check_response(&head, &req)?;
        // Exactly the bytes asked for: never more than `out` holds.
        let mut filled = 0;
        while let Some(chunk) = resp.chunk().await? {
            let room = out.len() - filled;
            if chunk.len() > room {
                return Err(WebSeedError::WrongRange("more bytes than asked".into()).into());
            }
            out[filled..filled + chunk.len()].copy_from_slice(&chunk);
            filled += chunk.len();
        }
        if filled != out.len() {
            return Err(Ended::ShortBody {
                url: req.url,
                got: filled,
                want: out.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Torrent;

    fn torrent(multi: bool, files: &[(&str, u64, FileKind)]) -> Torrent {
        let mut t = crate::metainfo::test_torrent(16384, files);
        t.multi_file = multi;
        t
    }

    fn strs(urls: &[Option<Url>]) -> Vec<Option<&str>> {
        urls.iter()
            .map(|u| u.as_ref().map(|u| u.as_str()))
            .collect()
    }

    #[test]
    fn single_file_urls_are_the_file_or_a_directory_plus_the_name() {
        let t = torrent(false, &[("a file #1.iso", 10, FileKind::Regular)]);
        let u = file_urls("http://h/pub/a.iso", &t).unwrap();
        assert_eq!(strs(&u), [Some("http://h/pub/a.iso")]);
        let u = file_urls("http://h/pub/", &t).unwrap();
        assert_eq!(strs(&u), [Some("http://h/pub/a%20file%20%231.iso")]);
    }

    #[test]
    fn multi_file_urls_join_escaped_elements_and_skip_pads() {
        let t = torrent(
            true,
            &[
                ("Top Dir/a b/c%d.txt", 5, FileKind::Regular),
                ("Top Dir/.pad/5", 3, FileKind::Pad),
                ("Top Dir/é?.bin", 7, FileKind::Regular),
            ],
        );
        for base in ["http://h/m", "http://h/m/"] {
            let u = file_urls(base, &t).unwrap();
            assert_eq!(
                strs(&u),
                [
                    Some("http://h/m/Top%20Dir/a%20b/c%25d.txt"),
                    None,
                    Some("http://h/m/Top%20Dir/%C3%A9%3F.bin"),
                ]
            );
        }
        let u = file_urls("https://h/m?token=x", &t).unwrap();
        assert_eq!(
            u[0].as_ref().unwrap().as_str(),
            "https://h/m/Top%20Dir/a%20b/c%25d.txt?token=x"
        );
        assert!(file_urls("ftp://h/m", &t).is_err());
        assert!(file_urls("not a url", &t).is_err());
    }

    #[test]
    fn a_span_over_several_files_becomes_one_request_each_without_pads() {
        let t = torrent(
            true,
            &[
                ("T/a", 10, FileKind::Regular),
                ("T/empty", 0, FileKind::Regular),
                ("T/.pad/6", 6, FileKind::Pad),
                ("T/b", 20, FileKind::Regular),
            ],
        );
        let urls = file_urls("http://h/", &t).unwrap();
        let r = requests(&t, &urls, 4..30);
        let got: Vec<(&str, Range<u64>, usize)> = r
            .iter()
            .map(|q| (q.url.path(), q.range.clone(), q.at))
            .collect();
        assert_eq!(got, [("/T/a", 4..10, 0), ("/T/b", 0..14, 12)]);
        assert_eq!(r[1].file_len, 20);
        assert!(requests(&t, &urls, 10..16).is_empty(), "only the pad");
    }

    fn req(range: Range<u64>, file_len: u64) -> Request {
        Request {
            url: Url::parse("http://h/f").unwrap(),
            range,
            file_len,
            at: 0,
        }
    }

    fn head(status: u16, cr: Option<&'static str>, len: Option<u64>) -> Head<'static> {
        Head {
            status,
            content_range: cr,
            content_length: len,
            retry_after: None,
        }
    }

    #[test]
    fn responses_must_be_the_range_asked_for() {
        let r = req(100..200, 1000);
        assert_eq!(
            check_response(&head(206, Some("bytes 100-199/1000"), Some(100)), &r),
            Ok(())
        );
        assert_eq!(
            check_response(&head(206, Some("bytes 100-199/*"), None), &r),
            Ok(())
        );
        assert!(matches!(
            check_response(&head(206, Some("bytes 0-99/1000"), Some(100)), &r),
            Err(WebSeedError::WrongRange(_))
        ));
        assert_eq!(
            check_response(&head(206, Some("bytes 100-199/999"), Some(100)), &r),
            Err(WebSeedError::WrongLength {
                got: 999,
                want: 1000
            })
        );
        assert!(check_response(&head(206, None, Some(100)), &r).is_err());
        assert!(check_response(&head(206, Some("bytes 100-199/1000"), Some(5)), &r).is_err());
        assert_eq!(
            check_response(&head(200, None, Some(1000)), &r),
            Err(WebSeedError::IgnoredRange)
        );
        // The whole file: a 200 is as good as a 206.
        assert_eq!(
            check_response(&head(200, None, Some(1000)), &req(0..1000, 1000)),
            Ok(())
        );
        assert_eq!(
            check_response(&head(404, None, None), &r),
            Err(WebSeedError::Gone(404))
        );
        let busy = Head {
            retry_after: Some("7"),
            ..head(503, None, None)
        };
        assert_eq!(
            check_response(&busy, &r),
            Err(WebSeedError::Busy {
                status: 503,
                after: Duration::from_secs(7)
            })
        );
        let greedy = Head {
            retry_after: Some("99999999"),
            ..head(503, None, None)
        };
        assert!(matches!(
            check_response(&greedy, &r),
            Err(WebSeedError::Busy { after, .. }) if after == MAX_RETRY_AFTER
        ));
        assert_eq!(
            check_response(&head(500, None, None), &r),
            Err(WebSeedError::Status(500))
        );
        for bad in ["bytes 5-4/10", "bytes x-4/10", "octets 1-2/3", "bytes 1-2"] {
            assert!(parse_content_range(bad).is_none(), "{bad}");
        }
    }
}
