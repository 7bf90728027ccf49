//! The daemon's HTTP side: the Transmission RPC on `/transmission/rpc`
//! (legacy JSON protocol, rpc-version 16, see `methods`) and the web page
//! on `/`, which speaks the same RPC.
//!
//! Every request passes, in order: the Host check (DNS rebinding: IP
//! literals, `localhost` and `--rpc-host` names only), Basic auth when
//! configured, then for the RPC the `X-Transmission-Session-Id` check
//! (409 with the id, the CSRF guard every Transmission client expects).
//! Only then is a body read, and never more than [`MAX_BODY`] bytes.

pub(crate) mod fields;
pub(crate) mod methods;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;

/// Largest request body: a 10 MB .torrent in base64 plus the JSON around it.
pub(crate) const MAX_BODY: usize = 16 << 20;
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// Bodies being read at once (bounds memory to a few times `MAX_BODY`).
const MAX_BODIES: usize = 4;

pub(crate) const SESSION_HEADER: &str = "x-transmission-session-id";

#[derive(Debug, Clone)]
pub(crate) struct RpcConfig {
    pub bind: SocketAddr,
    /// `user:password` for HTTP Basic auth.
    pub auth: Option<(String, String)>,
    /// Host names accepted besides IP literals and `localhost`.
    pub hosts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RpcError {
    #[error(
        "refusing to serve the RPC on {0} without --rpc-auth: anyone who can reach it could \
         add, remove and delete torrents (bind to 127.0.0.1, or set --rpc-auth USER:PASS)"
    )]
    OpenWithoutAuth(SocketAddr),
    #[error("cannot listen for RPC on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct Server {
    daemon: Daemon,
    config: RpcConfig,
    session_id: String,
    /// `Basic <base64>` as a client must send it.
    expected_auth: Option<String>,
    bodies: Semaphore,
}

/// Binds the RPC listener; a non-loopback address needs auth.
pub(crate) async fn bind(config: &RpcConfig) -> Result<TcpListener, RpcError> {
    if !config.bind.ip().is_loopback() && config.auth.is_none() {
        return Err(RpcError::OpenWithoutAuth(config.bind));
    }
    TcpListener::bind(config.bind)
        .await
        .map_err(|source| RpcError::Bind {
            addr: config.bind,
            source,
        })
}

/// Serves until `cancel` fires.
pub(crate) async fn serve(
    daemon: Daemon,
    config: RpcConfig,
    listener: TcpListener,
    cancel: CancellationToken,
) {
    let expected_auth = config.auth.as_ref().map(|(u, p)| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    let server = Arc::new(Server {
        daemon,
        config,
        session_id: new_session_id(),
        expected_auth,
        bodies: Semaphore::new(MAX_BODIES),
    });
    let conns = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = conns.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("rpc accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let server = server.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, Infallible>(server.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("rpc connection: {e}");
                    }
                }
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
}

fn new_session_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..48)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

impl Server {
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        let mut resp = self.route(req).await;
        let h = resp.headers_mut();
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        if !self.host_allowed(&req) {
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                "<h1>421: Misdirected Request</h1><p>Unknown host name in the Host header; \
                 start the daemon with --rpc-host NAME to allow it.</p>",
            );
        }
        if !self.authorized(&req) {
            let mut r = text(StatusCode::UNAUTHORIZED, "401: Unauthorized");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"xorrent\""),
            );
            return r;
        }
        let path = req.uri().path().to_string();
        match path.as_str() {
            "/transmission/rpc" | "/transmission/rpc/" => self.rpc(req).await,
            "/transmission" | "/transmission/" | "/transmission/web" | "/transmission/web/" => {
                let mut r = text(StatusCode::MOVED_PERMANENTLY, "");
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/"));
                r
            }
            _ if req.method() != Method::GET && req.method() != Method::HEAD => {
                text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed")
            }
            _ => self.asset(&path, accepts_gzip(&req)),
        }
    }

    /// DNS rebinding guard: a page on evil.example resolving to 127.0.0.1
    /// must not drive the daemon.
    fn host_allowed(&self, req: &Request<Incoming>) -> bool {
        let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        else {
            // HTTP/1.0 without Host: not reachable through a browser.
            return true;
        };
        let name = match host.strip_prefix('[') {
            Some(v6) => {
                return v6
                    .split(']')
                    .next()
                    .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
            }
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        let name = name.to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name == "localhost."
            || self
                .config
                .hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&name))
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(want) = &self.expected_auth else {
            return true;
        };
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|got| constant_time_eq(got.trim().as_bytes(), want.as_bytes()))
    }

    async fn rpc(&self, req: Request<Incoming>) -> Resp {
        let id_ok = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|id| id == self.session_id);
        if !id_ok {
            let mut r = text(
                StatusCode::CONFLICT,
                format!(
                    "<h1>409: Conflict</h1><p>Your request had an invalid session-id header.</p>\
                     <p>To fix this, follow these steps:<ol><li> When reading a response, get its \
                     X-Transmission-Session-Id header and remember it<li> Add the updated header to \
                     your outgoing requests<li> When you get this 409 error message, resend your \
                     request with the updated header</ol></p><p><code>{}: {}</code></p>",
                    "X-Transmission-Session-Id", self.session_id
                ),
            );
            r.headers_mut().insert(
                SESSION_HEADER,
                HeaderValue::from_str(&self.session_id).expect("alphanumeric"),
            );
            return r;
        }
        let gzip = accepts_gzip(&req);
        if req.method() != Method::POST {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "405: POST a JSON request");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        let too_big = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_BODY as u64);
        if too_big {
            return text(StatusCode::PAYLOAD_TOO_LARGE, "413: request body too large");
        }
        let body = {
            let Ok(_permit) = self.bodies.acquire().await else {
                return text(StatusCode::SERVICE_UNAVAILABLE, "503: shutting down");
            };
            match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        return text(StatusCode::PAYLOAD_TOO_LARGE, "413: request body too large");
                    }
                    return text(StatusCode::BAD_REQUEST, "400: cannot read the request body");
                }
            }
        };
        let answer = methods::handle(&self.daemon, &body).await;
        let mut r = body_response(Bytes::from(answer), gzip);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        h.insert(
            SESSION_HEADER,
            HeaderValue::from_str(&self.session_id).expect("alphanumeric"),
        );
        r
    }

    fn asset(&self, path: &str, gzip: bool) -> Resp {
        let (body, kind): (&'static str, &str) = match path {
            "/" | "/index.html" => (
                include_str!("../web/index.html"),
                "text/html; charset=utf-8",
            ),
            "/app.js" => (
                include_str!("../web/app.js"),
                "text/javascript; charset=utf-8",
            ),
            "/style.css" => (include_str!("../web/style.css"), "text/css; charset=utf-8"),
            _ => {
                if let Some(r) = self.torrent_file(path) {
                    return r;
                }
                return text(StatusCode::NOT_FOUND, "404: Not Found");
            }
        };
        let mut r = body_response(Bytes::from_static(body.as_bytes()), gzip);
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(kind).expect("ascii"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Torrent names are untrusted: no inline script may ever run.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
            ),
        );
        r
    }

    /// `/torrents/<info-hash>.torrent`: a torrent's metainfo, to share it.
    fn torrent_file(&self, path: &str) -> Option<Resp> {
        let hex = path.strip_prefix("/torrents/")?.strip_suffix(".torrent")?;
        let ih = crate::types::InfoHash::from_hex(hex)?;
        let bytes = self.daemon.store().metainfo(&ih.to_hex()).ok()??;
        let mut r = Response::new(Full::new(Bytes::from(bytes)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-bittorrent"),
        );
        Some(r)
    }
}

fn accepts_gzip(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            // `gzip;q=0` refuses it.
            name.eq_ignore_ascii_case("gzip") && !parts.any(|p| p.trim() == "q=0")
        })
}

/// A 200 response, gzipped when the client takes it and it is worth it
/// (a 1,000-torrent list shrinks ~40×; Transmission does the same).
fn body_response(body: Bytes, gzip: bool) -> Resp {
    use std::io::Write;
    if gzip && body.len() >= 1024 {
        let mut enc = flate2::write::GzEncoder::new(
            Vec::with_capacity(body.len() / 8),
            flate2::Compression::fast(),
        );
        if let Ok(zipped) = enc.write_all(&body).and_then(|()| enc.finish()) {
            let mut r = Response::new(Full::new(Bytes::from(zipped)));
            let h = r.headers_mut();
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            return r;
        }
    }
    Response::new(Full::new(body))
}

/// An error and its causes, for a user: "a: b: c".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
