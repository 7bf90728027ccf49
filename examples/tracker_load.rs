//! Announce-throughput load generator for BitTorrent trackers on loopback:
//! UDP (BEP-15) or HTTP (BEP-3 with BEP-23 compact replies).
//!
//! `--concurrency` virtual clients each own one socket and keep exactly one
//! announce in flight, so the rate is closed-loop throughput at that
//! concurrency, not an offered load. Client `i` owns simulated peers
//! `i, i+C, i+2C, ...` of `swarms x peers-per-swarm`; peer `p` is in swarm
//! `p / peers-per-swarm`, so consecutive announces hit different swarms.
//! Only announces that complete after the warm-up and before the end count.
//!
//! Bounded by construction: loopback targets only, at most 120 s and 1024
//! clients, a 1 s reply timeout, and stragglers are dropped 3 s after the end.

use std::error::Error;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{sleep, timeout_at, Instant};

const MAX_DURATION_S: f64 = 120.0;
const MAX_PEERS: usize = 10_000_000;
const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// BEP-15 ids live 2 min; renewing early stays clear of trackers that round the edge.
const CONN_ID_TTL: Duration = Duration::from_secs(50);
const UDP_PROTOCOL_ID: u64 = 0x41727101980;
/// Pause after a socket error so a refused port cannot become a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
const MAX_HTTP_HEAD: usize = 16 * 1024;
const MAX_HTTP_BODY: usize = 1024 * 1024;
/// RFC 3986 unreserved characters stay literal; every other byte is `%XX`.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[derive(Parser)]
#[command(about = "Announce-throughput load generator for BitTorrent trackers (loopback only)")]
#[command(group(clap::ArgGroup::new("target").args(["udp", "http"])))]
struct Args {
    /// UDP tracker address (BEP-15)
    #[arg(long)]
    udp: Option<SocketAddr>,
    /// HTTP tracker address; requests go to /announce
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Info-hashes, 40 hex digits a line [default: generated from --seed]
    #[arg(long)]
    hashes: Option<PathBuf>,
    /// Write the info-hashes to FILE (a whitelist); with no target, write and exit
    #[arg(long, value_name = "FILE")]
    write_hashes: Option<PathBuf>,
    /// Number of swarms [default: 1000, or every hash in --hashes]
    #[arg(long)]
    swarms: Option<usize>,
    #[arg(long, default_value_t = 20)]
    peers_per_swarm: usize,
    /// Virtual clients, each with one socket and one announce in flight
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Measured seconds after the warm-up (at most 120)
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds first, to fill the swarms (at most 10)
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many measured announces
    #[arg(long)]
    max_requests: Option<u64>,
    /// Local address of every socket [default: UDP the target family's loopback; TCP unbound]
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Runtime worker threads (1 = single-threaded runtime)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// Seed for generated info-hashes and transaction ids
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    /// HTTP: a new connection per announce (`Connection: close`), as real
    /// clients announcing every half hour do
    #[arg(long)]
    http_close: bool,
}

/// What every client shares: the swarm layout, the measured window and the tally.
struct Ctx {
    target: SocketAddr,
    bind: IpAddr,
    /// Whether TCP sockets bind too: only when asked, because `bind(ip:0)`
    /// cannot share a port with our own TIME_WAIT sockets as `connect` can,
    /// and a client closing first at thousands a second runs out of them.
    bind_tcp: bool,
    hashes: Vec<[u8; 20]>,
    peers_per_swarm: usize,
    concurrency: usize,
    seed: u64,
    start: Instant,
    end: Instant,
    max_requests: Option<u64>,
    http_close: bool,
    t: Tally,
}

#[derive(Default)]
struct Tally {
    successes: AtomicU64,
    /// Including the warm-up, to divide a server's CPU time by.
    all_successes: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    reconnects: AtomicU64,
    connects: AtomicU64,
    stopped: AtomicBool,
    stopped_at: Mutex<Option<Instant>>,
    first_error: Mutex<Option<String>>,
}

enum Outcome {
    Success,
    Error(String),
    Timeout,
}

impl Ctx {
    fn done(&self, now: Instant) -> bool {
        now >= self.end || self.t.stopped.load(Relaxed)
    }

    fn in_window(&self, now: Instant) -> bool {
        now >= self.start && !self.done(now)
    }

    /// Counts an announce started at `t0` if it completed inside the window.
    fn record(&self, outcome: Outcome, t0: Instant, hist: &mut Hist) {
        let (now, t) = (Instant::now(), &self.t);
        if matches!(outcome, Outcome::Success) && !self.done(now) {
            t.all_successes.fetch_add(1, Relaxed);
        }
        if !self.in_window(now) {
            return;
        }
        match outcome {
            Outcome::Success => {
                t.successes.fetch_add(1, Relaxed);
                hist.record(now - t0);
            }
            Outcome::Error(msg) => {
                t.errors.fetch_add(1, Relaxed);
                let mut first = t.first_error.lock().unwrap();
                if first.is_none() {
                    eprintln!("tracker_load: first error: {msg}");
                    *first = Some(msg);
                }
            }
            Outcome::Timeout => _ = t.timeouts.fetch_add(1, Relaxed),
        }
        if let Some(max) = self.max_requests {
            let n = [&t.successes, &t.errors, &t.timeouts].map(|a| a.load(Relaxed));
            if n.iter().sum::<u64>() >= max && !t.stopped.swap(true, Relaxed) {
                *t.stopped_at.lock().unwrap() = Some(now);
            }
        }
    }

    fn peer(&self, p: usize) -> Peer {
        let mut id = *b"-TL0001-000000000000";
        id[8..].copy_from_slice(format!("{:012}", p % 1_000_000_000_000).as_bytes());
        Peer {
            hash: self.hashes[p / self.peers_per_swarm],
            id,
            // Trackers tell peers apart by address, and all of ours share one IP.
            port: 1024 + (p % 64_000) as u16,
            // Half seeders, so replies mix seeders and leechers.
            left: if (p % self.peers_per_swarm).is_multiple_of(2) {
                0
            } else {
                1 << 20
            },
            key: (p as u32).wrapping_mul(0x9e37_79b9),
        }
    }
}

struct Peer {
    hash: [u8; 20],
    id: [u8; 20],
    port: u16,
    left: u64,
    key: u32,
}

/// Walks one client's share of the simulated peers; the first lap announces `started`.
struct Cursor {
    next: usize,
    first_lap: bool,
}

impl Cursor {
    fn advance(&mut self, client: usize, ctx: &Ctx) {
        self.next += ctx.concurrency;
        if self.next >= ctx.hashes.len() * ctx.peers_per_swarm {
            self.next = client;
            self.first_lap = false;
        }
    }
}

/// Log-linear latency histogram in microseconds: 64 buckets per power of
/// two (under 2 % error) up to 2^35 us keeps memory fixed however long the run.
struct Hist(Vec<u64>);

impl Hist {
    fn new() -> Self {
        Hist(vec![0; 64 * 30])
    }

    fn record(&mut self, d: Duration) {
        let v = d.as_micros().min((1 << 35) - 1) as u64;
        let i = if v < 64 {
            v as usize
        } else {
            let b = 63 - v.leading_zeros() as usize;
            (b - 5) * 64 + ((v >> (b - 6)) & 63) as usize
        };
        self.0[i] += 1;
    }

    /// Lower edge of the bucket holding quantile `q`, in milliseconds.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n: u64 = self.0.iter().sum();
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n.max(1));
        let mut seen = 0;
        let i = self.0.iter().position(|&c| {
            seen += c;
            seen >= rank
        })? as u64;
        let us = if i < 64 {
            i
        } else {
            (64 + (i & 63)) << (i / 64 - 1)
        };
        Some(us as f64 / 1000.0)
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracker_load: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, Box<dyn Error>> {
    let hashes = load_hashes(&args)?;
    if let Some(path) = &args.write_hashes {
        let mut text = String::new();
        for h in &hashes {
            h.iter().for_each(|b| _ = write!(text, "{b:02x}"));
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let (udp, target) = match (args.udp, args.http) {
        (Some(a), _) => (true, a),
        (_, Some(a)) => (false, a),
        _ if args.write_hashes.is_some() => return Ok(ExitCode::SUCCESS),
        _ => return Err("give --udp ADDR or --http ADDR (or only --write-hashes FILE)".into()),
    };
    let bind = args.bind.unwrap_or(match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    });
    let total = hashes.len() * args.peers_per_swarm;
    ensure(!args.http_close || !udp, "--http-close with --http only")?;
    ensure(
        target.ip().is_loopback() && bind.is_loopback(),
        "loopback addresses only",
    )?;
    ensure(
        (1e-3..=MAX_DURATION_S).contains(&args.duration),
        "--duration up to 120",
    )?;
    ensure((0.0..=10.0).contains(&args.warmup), "--warmup 0..=10")?;
    ensure(
        (1..=MAX_PEERS).contains(&total),
        "swarms x peers-per-swarm 1..=10^7",
    )?;

    let rt = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.into())
            .enable_all()
            .build()?,
    };
    let start = Instant::now() + Duration::from_secs_f64(args.warmup);
    let ctx = Arc::new(Ctx {
        target,
        bind,
        bind_tcp: args.bind.is_some(),
        hashes,
        peers_per_swarm: args.peers_per_swarm,
        // A client with no peers of its own would have nothing to announce.
        concurrency: usize::from(args.concurrency).min(total),
        seed: args.seed,
        start,
        end: start + Duration::from_secs_f64(args.duration),
        max_requests: args.max_requests,
        http_close: args.http_close,
        t: Tally::default(),
    });
    let hist = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..ctx.concurrency {
            if udp {
                set.spawn(udp_client(ctx.clone(), i));
            } else {
                set.spawn(http_client(ctx.clone(), i));
            }
        }
        let mut hist = Hist::new();
        let cutoff = ctx.end + Duration::from_secs(3);
        while let Ok(Some(joined)) = timeout_at(cutoff, set.join_next()).await {
            let h = joined.unwrap_or_else(|_| Hist::new());
            hist.0.iter_mut().zip(&h.0).for_each(|(a, b)| *a += b);
        }
        hist
    });
    // Dropping the runtime cancels any straggler stuck past the cutoff.
    drop(rt);

    let t = &ctx.t;
    let stop = t.stopped_at.lock().unwrap().unwrap_or(ctx.end);
    let secs = (stop - ctx.start).as_secs_f64().max(1e-9);
    let ok = t.successes.load(Relaxed);
    let (p50, p99) = (hist.quantile_ms(0.5), hist.quantile_ms(0.99));
    let report = serde_json::json!({
        "protocol": if udp { "udp" } else { "http" },
        "target": target.to_string(),
        "swarms": ctx.hashes.len(),
        "peers_per_swarm": ctx.peers_per_swarm,
        "concurrency": ctx.concurrency,
        "seconds": secs,
        "announces_per_s": ok as f64 / secs,
        "successes": ok,
        "successes_incl_warmup": t.all_successes.load(Relaxed),
        "http_close": ctx.http_close,
        "errors": t.errors.load(Relaxed),
        "timeouts": t.timeouts.load(Relaxed),
        "reconnects": t.reconnects.load(Relaxed),
        "udp_connects": t.connects.load(Relaxed),
        "p50_ms": p50,
        "p99_ms": p99,
        "first_error": t.first_error.lock().unwrap().clone(),
    });
    if args.json {
        println!("{report}");
    } else {
        let r = &report;
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3} ms"));
        println!(
            "{} {target}: {} swarms x {} peers, concurrency {}, {secs:.2} s measured",
            r["protocol"].as_str().unwrap_or_default(),
            r["swarms"],
            r["peers_per_swarm"],
            r["concurrency"]
        );
        println!("announces/s {:.0}", ok as f64 / secs);
        println!(
            "successes {ok}  errors {}  timeouts {}  reconnects {}  udp connects {}",
            r["errors"], r["timeouts"], r["reconnects"], r["udp_connects"]
        );
        println!("latency p50 {}  p99 {}", ms(p50), ms(p99));
    }
    Ok(if ok > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn ensure(ok: bool, what: &str) -> Result<(), Box<dyn Error>> {
    match ok {
        true => Ok(()),
        false => Err(format!("allowed: {what}").into()),
    }
}

fn load_hashes(args: &Args) -> Result<Vec<[u8; 20]>, Box<dyn Error>> {
    let Some(path) = &args.hashes else {
        let mut rng = StdRng::seed_from_u64(args.seed);
        let n = args.swarms.unwrap_or(1000).min(MAX_PEERS);
        return Ok((0..n).map(|_| rng.gen()).collect());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines = text.lines().map(str::trim).enumerate();
    let mut out = Vec::new();
    for (n, line) in lines.filter(|(_, l)| !l.is_empty() && !l.starts_with('#')) {
        if line.len() != 40 || !line.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{}:{}: not 40 hex digits", path.display(), n + 1).into());
        }
        let mut h = [0u8; 20];
        for (i, b) in h.iter_mut().enumerate() {
            *b = u8::from_str_radix(&line[2 * i..2 * i + 2], 16).expect("checked hex");
        }
        out.push(h);
    }
    out.truncate(args.swarms.unwrap_or(usize::MAX));
    Ok(out)
}

enum Reply {
    Data(usize),
    Timeout,
    Io(std::io::Error),
}

/// Sends one request and waits for the datagram carrying its transaction id;
/// late replies to requests we gave up on are skipped.
async fn udp_exchange(sock: &UdpSocket, req: &[u8], buf: &mut [u8], ctx: &Ctx) -> Reply {
    if let Err(e) = sock.send(req).await {
        return Reply::Io(e);
    }
    let until = (Instant::now() + REPLY_TIMEOUT).min(ctx.end);
    loop {
        match timeout_at(until, sock.recv(buf)).await {
            Err(_) => return Reply::Timeout,
            Ok(Err(e)) => return Reply::Io(e),
            Ok(Ok(n)) if n >= 8 && buf[4..8] == req[12..16] => return Reply::Data(n),
            Ok(Ok(_)) => {}
        }
    }
}

async fn udp_socket(ctx: &Ctx) -> std::io::Result<UdpSocket> {
    let sock = UdpSocket::bind((ctx.bind, 0)).await?;
    sock.connect(ctx.target).await?;
    Ok(sock)
}

async fn udp_client(ctx: Arc<Ctx>, client: usize) -> Hist {
    let mut hist = Hist::new();
    let sock = match udp_socket(&ctx).await {
        Ok(s) => s,
        Err(e) => {
            ctx.record(
                Outcome::Error(format!("udp socket: {e}")),
                Instant::now(),
                &mut hist,
            );
            return hist;
        }
    };
    let mut rng = StdRng::seed_from_u64(ctx.seed ^ ((client as u64 + 1) << 32));
    let mut cur = Cursor {
        next: client,
        first_lap: true,
    };
    let mut conn: Option<(u64, Instant)> = None;
    let mut buf = [0u8; 2048];
    while !ctx.done(Instant::now()) {
        let t0 = Instant::now();
        let tid: [u8; 4] = rng.gen();
        let conn_id = conn.filter(|c| c.1.elapsed() < CONN_ID_TTL).map(|c| c.0);
        let req = match conn_id {
            Some(id) => {
                let p = ctx.peer(cur.next);
                let event: u32 = if cur.first_lap { 2 } else { 0 };
                [
                    &id.to_be_bytes()[..],
                    &1u32.to_be_bytes(), // action: announce
                    &tid,
                    &p.hash,
                    &p.id,
                    &0u64.to_be_bytes(), // downloaded
                    &p.left.to_be_bytes(),
                    &0u64.to_be_bytes(), // uploaded
                    &event.to_be_bytes(),
                    &0u32.to_be_bytes(), // ip: the sender's
                    &p.key.to_be_bytes(),
                    &50i32.to_be_bytes(), // num_want
                    &p.port.to_be_bytes(),
                ]
                .concat()
            }
            None => {
                if ctx.in_window(t0) {
                    ctx.t.connects.fetch_add(1, Relaxed);
                }
                [&UDP_PROTOCOL_ID.to_be_bytes()[..], &[0; 4], &tid].concat()
            }
        };
        let outcome = match udp_exchange(&sock, &req, &mut buf, &ctx).await {
            Reply::Data(n) if conn_id.is_none() && n >= 16 && buf[..4] == [0; 4] => {
                conn = Some((
                    u64::from_be_bytes(buf[8..16].try_into().unwrap()),
                    Instant::now(),
                ));
                continue;
            }
            Reply::Data(n) if n >= 20 && buf[..4] == [0, 0, 0, 1] => Outcome::Success,
            Reply::Data(n) if n > 8 && buf[..4] == [0, 0, 0, 3] => Outcome::Error(format!(
                "udp error: {}",
                String::from_utf8_lossy(&buf[8..n])
            )),
            Reply::Data(n) => Outcome::Error(format!(
                "udp reply of {n} bytes: {:02x?}",
                &buf[..n.min(24)]
            )),
            Reply::Timeout => {
                conn = None;
                Outcome::Timeout
            }
            Reply::Io(e) => {
                sleep(ERROR_BACKOFF).await;
                Outcome::Error(format!("udp: {e}"))
            }
        };
        ctx.record(outcome, t0, &mut hist);
        if conn_id.is_some() {
            cur.advance(client, &ctx);
        }
    }
    hist
}

enum HttpError {
    /// The connection ended before any byte of a reply: on a kept-alive
    /// connection, the server dropped it and one retry on a fresh one is due.
    Closed,
    Bad(String),
}

async fn http_connect(ctx: &Ctx) -> std::io::Result<TcpStream> {
    let sock = match ctx.bind {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if ctx.bind_tcp {
        sock.bind(SocketAddr::new(ctx.bind, 0))?;
    }
    let s = sock.connect(ctx.target).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Writes one request and reads one reply into `buf`, framed by
/// `Content-Length` or by the end of the stream. Returns the status, whether
/// the server will close, and where the body starts.
async fn http_roundtrip(
    s: &mut TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, bool, usize), HttpError> {
    let bad = |m: String| HttpError::Bad(format!("http: {m}"));
    s.write_all(req).await.map_err(|_| HttpError::Closed)?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HTTP_HEAD {
            return Err(bad("header too long".into()));
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) if buf.is_empty() => return Err(HttpError::Closed),
            Ok(0) => return Err(bad("closed inside the header".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(bad(e.to_string())),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let (version, rest) = status_line.split_once(' ').unwrap_or_default();
    let status = rest.get(..3).and_then(|s| s.parse().ok());
    let Some(status) = status.filter(|_| version.starts_with("http/1.")) else {
        return Err(bad(format!("bad status line {status_line:?}")));
    };
    // HTTP/1.1 stays open unless told otherwise; HTTP/1.0 only if told keep-alive.
    let (mut length, mut close) = (None, version == "http/1.0");
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        let value = value.trim();
        match name.trim() {
            "content-length" => length = value.parse::<usize>().ok(),
            "connection" => close = !value.contains("keep-alive"),
            "transfer-encoding" => return Err(bad("chunked replies are not supported".into())),
            _ => {}
        }
    }
    let want = head_end + length.unwrap_or(MAX_HTTP_BODY).min(MAX_HTTP_BODY);
    while buf.len() < want {
        match s.read(&mut chunk).await {
            Ok(0) if length.is_none() => break,
            Ok(0) => return Err(bad("closed inside the body".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(bad(e.to_string())),
        }
    }
    buf.truncate(want);
    Ok((status, close || length.is_none(), head_end))
}

/// The text of a bencoded `failure reason`, or the whole body if there is none.
fn failure_reason(body: &[u8]) -> String {
    let key = b"14:failure reason";
    let text = body
        .windows(key.len())
        .position(|w| w == key)
        .and_then(|p| {
            let rest = &body[p + key.len()..];
            let colon = rest.iter().position(|&c| c == b':')?;
            let len: usize = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
            rest.get(colon + 1..colon + 1 + len)
        });
    String::from_utf8_lossy(text.unwrap_or(body)).into_owned()
}

async fn http_client(ctx: Arc<Ctx>, client: usize) -> Hist {
    let mut hist = Hist::new();
    let mut cur = Cursor {
        next: client,
        first_lap: true,
    };
    let mut stream: Option<TcpStream> = None;
    let mut connected_before = false;
    let (mut buf, mut req) = (Vec::with_capacity(4096), String::with_capacity(512));
    while !ctx.done(Instant::now()) {
        let t0 = Instant::now();
        let p = ctx.peer(cur.next);
        req.clear();
        _ = write!(
            req,
            "GET /announce?info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left={}\
             &compact=1&numwant=50&key={:08x}{} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            percent_encode(&p.hash, QUERY),
            percent_encode(&p.id, QUERY),
            p.port,
            p.left,
            p.key,
            if cur.first_lap { "&event=started" } else { "" },
            ctx.target,
            if ctx.http_close {
                "Connection: close\r\n"
            } else {
                ""
            },
        );
        // A server that closes after every reply without saying so
        // (opentracker) would otherwise cost a wasted request per announce.
        if let Some(s) = &stream {
            if !matches!(s.try_read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock) {
                stream = None;
            }
        }
        let reused = stream.is_some();
        if stream.is_none() {
            let outcome = match timeout_at(t0 + REPLY_TIMEOUT, http_connect(&ctx)).await {
                Ok(Ok(s)) => {
                    if connected_before && ctx.in_window(Instant::now()) {
                        ctx.t.reconnects.fetch_add(1, Relaxed);
                    }
                    (connected_before, stream) = (true, Some(s));
                    None
                }
                Ok(Err(e)) => Some(Outcome::Error(format!("http connect: {e}"))),
                Err(_) => Some(Outcome::Timeout),
            };
            if let Some(outcome) = outcome {
                ctx.record(outcome, t0, &mut hist);
                sleep(ERROR_BACKOFF).await;
                continue;
            }
        }
        let s = stream.as_mut().expect("connected above");
        let until = (Instant::now() + REPLY_TIMEOUT).min(ctx.end);
        let outcome = match timeout_at(until, http_roundtrip(s, req.as_bytes(), &mut buf)).await {
            Ok(Ok((status, close, body_at))) => {
                if close || ctx.http_close {
                    stream = None;
                }
                let body = &buf[body_at..];
                let failed = body.windows(14).any(|w| w == b"failure reason");
                if status == 200 && body.first() == Some(&b'd') && !failed {
                    Outcome::Success
                } else {
                    Outcome::Error(format!("http {status}: {}", failure_reason(body)))
                }
            }
            Ok(Err(HttpError::Closed)) if reused => {
                // The server dropped an idle kept-alive connection: retry this peer.
                stream = None;
                continue;
            }
            Ok(Err(e)) => {
                stream = None;
                Outcome::Error(match e {
                    HttpError::Closed => "http: closed without a reply".into(),
                    HttpError::Bad(m) => m,
                })
            }
            Err(_) => {
                stream = None;
                Outcome::Timeout
            }
        };
        ctx.record(outcome, t0, &mut hist);
        cur.advance(client, &ctx);
    }
    hist
}
