//! A scripted BitTorrent peer for tests: an honest seeder, or one of
//! several kinds of misbehaviour. [`FakePeer::start`] is the plain BEP-3
//! seeder; [`FakePeer::start_script`] adds the extensions (BEP-6 fast,
//! BEP-10 with BEP-9 metadata) and choke/reject scripts.
//!
//! Messages are framed and bencoded by hand here, not with xorrent's
//! codecs, so a codec bug cannot hide on both sides of a test.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Serves every request with the right bytes.
    Honest,
    /// Serves every request with flipped bytes.
    Corrupt,
    /// Sends a 4 GiB length prefix after the bitfield.
    HugeLength,
    /// Sends a bitfield one byte too long.
    LongBitfield,
    /// Sends a bitfield with a spare bit set.
    SpareBits,
    /// Sends blocks nobody asked for, then serves honestly.
    Unrequested,
    /// Unchokes, takes requests, never answers.
    Silent,
}

/// How the fake tells the client what it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// A bitfield of every piece.
    Bitfield,
    /// BEP-6 `have all` (sent even without the fast bit, when scripted so).
    HaveAll,
    /// Nothing: the fake has no pieces (requests are refused).
    Nothing,
}

/// When a fake that starts out choking unchokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchoke {
    /// Right after announcing its pieces.
    AtOnce,
    /// Once it has served `served` allowed-fast requests, or after `after`.
    Later { served: u64, after: Duration },
}

/// A BEP-9 metadata offer: what the extended handshake claims, and what
/// ut_metadata requests get.
#[derive(Debug, Clone)]
pub struct MetaOffer {
    /// `metadata_size` in the extended handshake and `total_size` in data.
    pub size: u64,
    /// Sliced into 16 KiB pieces for data messages; `None` rejects every
    /// request (msg_type 2). May be wrong bytes: the fake does not check.
    pub bytes: Option<Arc<Vec<u8>>>,
    /// Wait before sending the extended handshake, so a test can order
    /// which peer the client asks first.
    pub delay: Duration,
    /// Wait before answering ut_metadata requests, so the client asks
    /// other peers meanwhile.
    pub reply_delay: Duration,
}

/// Everything a scripted fake does. [`Script::seeder`] is the behaviour of
/// [`FakePeer::start`].
#[derive(Debug, Clone)]
pub struct Script {
    pub info_hash: [u8; 20],
    pub data: Arc<Vec<u8>>,
    pub piece_len: usize,
    pub behaviour: Behaviour,
    /// Sets the BEP-6 bit (reserved[7] & 0x04).
    pub fast: bool,
    /// Sets the BEP-10 bit (reserved[5] & 0x10) and offers metadata.
    pub metadata: Option<MetaOffer>,
    pub announce: Announce,
    /// BEP-6 `allowed fast` pieces, sent after the announcement; served
    /// while choking.
    pub allowed_fast: Vec<u32>,
    pub unchoke: Unchoke,
    /// While unchoked, rejects every second new request (BEP-6 reject,
    /// 0x10) and serves any re-request of a rejected block.
    pub reject_alternate: bool,
}

impl Script {
    /// A plain BEP-3 seeder with `behaviour`.
    pub fn seeder(
        info_hash: [u8; 20],
        data: Arc<Vec<u8>>,
        piece_len: usize,
        behaviour: Behaviour,
    ) -> Script {
        Script {
            info_hash,
            data,
            piece_len,
            behaviour,
            fast: false,
            metadata: None,
            announce: Announce::Bitfield,
            allowed_fast: Vec::new(),
            unchoke: Unchoke::AtOnce,
            reject_alternate: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Served,
    Rejected,
    /// Dropped without an answer (out of range, silent, BEP-3 choked).
    Ignored,
}

/// One block request the fake received.
#[derive(Debug, Clone)]
pub struct Req {
    pub at: Instant,
    pub piece: u32,
    pub offset: u32,
    /// The fake was choking the client when the request arrived.
    pub choking: bool,
    pub answer: Answer,
}

/// How one connection ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub conn: u64,
    /// From accept to the end.
    pub after: Duration,
    /// The client closed or reset it (not the fake's idle timeout).
    pub by_client: bool,
}

/// What the fake saw, for assertions.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Set when the client closed the connection.
    pub closed_by_client: AtomicU64,
    pub connections: AtomicU64,
    /// ut_metadata requests (msg_type 0) received.
    pub metadata_requests: AtomicU64,
    /// (connection, piece, time since that connection was accepted) of
    /// each ut_metadata request.
    pub metadata_log: Mutex<Vec<(u64, i64, Duration)>>,
    /// Every block request, in arrival order.
    pub log: Mutex<Vec<Req>>,
    /// Messages received, by id.
    pub msgs_in: Mutex<HashMap<u8, u64>>,
    pub ended: Mutex<Vec<Ended>>,
    /// Reserved bytes of the client's handshakes.
    pub client_reserved: Mutex<Vec<[u8; 8]>>,
}

impl Seen {
    pub fn log(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    pub fn ended(&self) -> Vec<Ended> {
        self.ended.lock().unwrap().clone()
    }

    /// How many messages with this id the client sent.
    pub fn got(&self, id: u8) -> u64 {
        self.msgs_in.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

pub struct FakePeer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl FakePeer {
    /// Listens on `addr` and serves `data` (the torrent's byte stream).
    pub async fn start(
        addr: SocketAddr,
        info_hash: [u8; 20],
        data: Arc<Vec<u8>>,
        piece_len: usize,
        behaviour: Behaviour,
    ) -> FakePeer {
        let script = Script::seeder(info_hash, data, piece_len, behaviour);
        FakePeer::start_script(addr, script).await
    }

    /// Listens on `addr` and plays `script` on every connection.
    pub async fn start_script(addr: SocketAddr, script: Script) -> FakePeer {
        let listener = TcpListener::bind(addr).await.expect("bind fake peer");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let (s, script) = (seen.clone(), Arc::new(script));
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (sc, s2) = (script.clone(), s.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    // A plaintext-only peer: an encrypted (MSE) handshake
                    // is closed at once, uncounted, and the client retries
                    // in plaintext, as with any such peer.
                    let mut pstr = [0u8; 20];
                    if sock.read_exact(&mut pstr).await.is_err()
                        || pstr[0] != 19
                        || &pstr[1..] != b"BitTorrent protocol"
                    {
                        return;
                    }
                    let conn = s2.connections.fetch_add(1, Ordering::Relaxed) + 1;
                    let r = serve(sock, &sc, &s2, conn, start).await;
                    s2.ended.lock().unwrap().push(Ended {
                        conn,
                        after: start.elapsed(),
                        by_client: !matches!(r, Ok(false)),
                    });
                });
            }
        });
        FakePeer { addr, seen }
    }
}

/// Our id for ut_metadata in the fake's `m`; not xorrent's 1, so a client
/// that mixes up the two directions' ids is caught.
pub const FAKE_UT_METADATA: u8 = 3;
const IDLE: Duration = Duration::from_secs(60);

/// Plays the script; `Ok(true)` when the client hung up, `Ok(false)` when
/// the fake gave up on an idle connection.
async fn serve(
    mut sock: TcpStream,
    sc: &Script,
    seen: &Seen,
    conn: u64,
    accepted: Instant,
) -> std::io::Result<bool> {
    // The protocol string was read already.
    let mut hs = [0u8; 48];
    sock.read_exact(&mut hs).await?;
    seen.client_reserved
        .lock()
        .unwrap()
        .push(hs[..8].try_into().unwrap());
    let mut reserved = [0u8; 8];
    if sc.metadata.is_some() {
        reserved[5] |= 0x10;
    }
    if sc.fast {
        reserved[7] |= 0x04;
    }
    let mut ours = Vec::with_capacity(68);
    ours.push(19);
    ours.extend_from_slice(b"BitTorrent protocol");
    ours.extend_from_slice(&reserved);
    ours.extend_from_slice(&sc.info_hash);
    // A peer id per connection: xorrent keeps one connection per peer id.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10_000;
    ours.extend_from_slice(format!("-FK0001-fakepeer{n:04}").as_bytes());
    sock.write_all(&ours).await?;

    if let Some(m) = &sc.metadata {
        tokio::time::sleep(m.delay).await;
        let hs = format!(
            "d1:md11:ut_metadatai{FAKE_UT_METADATA}ee13:metadata_sizei{}ee",
            m.size
        );
        sock.write_all(&msg(20, &[&[0], hs.as_bytes()].concat()))
            .await?;
    }

    let data = &sc.data;
    let piece_len = sc.piece_len;
    let num_pieces = data.len().div_ceil(piece_len);
    match sc.announce {
        Announce::Bitfield => {
            let mut bits = vec![0u8; num_pieces.div_ceil(8)];
            for i in 0..num_pieces {
                bits[i / 8] |= 0x80 >> (i % 8);
            }
            match sc.behaviour {
                Behaviour::LongBitfield => bits.push(0),
                Behaviour::SpareBits => {
                    if !num_pieces.is_multiple_of(8) {
                        *bits.last_mut().unwrap() |= 1;
                    } else {
                        bits.push(0x80);
                    }
                }
                _ => {}
            }
            sock.write_all(&msg(5, &bits)).await?;
        }
        Announce::HaveAll => sock.write_all(&msg(0x0E, &[])).await?,
        Announce::Nothing => {}
    }
    for &p in &sc.allowed_fast {
        sock.write_all(&msg(0x11, &p.to_be_bytes())).await?;
    }

    match sc.behaviour {
        Behaviour::HugeLength => {
            sock.write_all(&[0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0, 0])
                .await?;
        }
        Behaviour::Unrequested => {
            // A block of piece 0 nobody asked for, with wrong bytes.
            let block = vec![0xAAu8; 16_384.min(data.len())];
            sock.write_all(&piece_msg(0, 0, &block)).await?;
        }
        _ => {}
    }
    let mut choking = true;
    if sc.unchoke == Unchoke::AtOnce {
        sock.write_all(&msg(1, &[])).await?;
        choking = false;
    }

    let started = Instant::now();
    let mut served_fast = 0u64;
    // The client's id for ut_metadata messages we send it.
    let mut client_meta: Option<u8> = None;
    let mut rejected: HashSet<(u32, u32)> = HashSet::new();
    let mut fresh = 0u64;
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 65536];
    loop {
        let unchoke_at = match sc.unchoke {
            Unchoke::Later { after, .. } if choking => Some(started + after),
            _ => None,
        };
        let wait = unchoke_at.map_or(IDLE, |t| t.saturating_duration_since(Instant::now()));
        let n = match tokio::time::timeout(wait, sock.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed_by_client.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
            Ok(Ok(n)) => n,
            Err(_) if unchoke_at.is_some() => {
                sock.write_all(&msg(1, &[])).await?;
                choking = false;
                continue;
            }
            Err(_) => return Ok(false),
        };
        buf.extend_from_slice(&tmp[..n]);
        let mut out = Vec::new();
        let mut meta_replies = false;
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let m: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
            let Some(&id) = m.first() else { continue };
            *seen.msgs_in.lock().unwrap().entry(id).or_default() += 1;
            match id {
                6 if m.len() == 13 => {
                    seen.requests.fetch_add(1, Ordering::Relaxed);
                    let p = u32::from_be_bytes(m[1..5].try_into().unwrap());
                    let off = u32::from_be_bytes(m[5..9].try_into().unwrap());
                    let l = u32::from_be_bytes(m[9..13].try_into().unwrap());
                    let answer = answer_request(
                        sc,
                        (p, off, l),
                        choking,
                        &mut served_fast,
                        &mut rejected,
                        &mut fresh,
                        &mut out,
                        seen,
                    );
                    seen.log.lock().unwrap().push(Req {
                        at: Instant::now(),
                        piece: p,
                        offset: off,
                        choking,
                        answer,
                    });
                }
                20 if m.len() >= 2 => {
                    let Some(offer) = &sc.metadata else { continue };
                    let Some((d, _)) = bdecode(&m[2..]) else {
                        continue;
                    };
                    if m[1] == 0 {
                        client_meta = d
                            .get("m")
                            .and_then(|m| m.get("ut_metadata"))
                            .and_then(B::int)
                            .and_then(|i| u8::try_from(i).ok())
                            .filter(|&i| i != 0);
                    } else if m[1] == FAKE_UT_METADATA
                        && d.get("msg_type").and_then(B::int) == Some(0)
                    {
                        seen.metadata_requests.fetch_add(1, Ordering::Relaxed);
                        let (Some(piece), Some(their)) =
                            (d.get("piece").and_then(B::int), client_meta)
                        else {
                            continue;
                        };
                        seen.metadata_log
                            .lock()
                            .unwrap()
                            .push((conn, piece, accepted.elapsed()));
                        out.extend_from_slice(&metadata_reply(offer, piece, their));
                        meta_replies = true;
                    }
                }
                _ => {}
            }
        }
        if choking {
            if let Unchoke::Later { served, .. } = sc.unchoke {
                if served_fast >= served {
                    out.extend_from_slice(&msg(1, &[]));
                    choking = false;
                }
            }
        }
        if let (true, Some(m)) = (meta_replies, &sc.metadata) {
            tokio::time::sleep(m.reply_delay).await;
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
        }
    }
}

/// Decides and encodes the answer to one block request.
#[allow(clippy::too_many_arguments)]
fn answer_request(
    sc: &Script,
    (p, off, l): (u32, u32, u32),
    choking: bool,
    served_fast: &mut u64,
    rejected: &mut HashSet<(u32, u32)>,
    fresh: &mut u64,
    out: &mut Vec<u8>,
    seen: &Seen,
) -> Answer {
    let refuse = |out: &mut Vec<u8>| {
        if sc.fast {
            out.extend_from_slice(&triple_msg(0x10, p, off, l));
            Answer::Rejected
        } else {
            Answer::Ignored
        }
    };
    let start = p as usize * sc.piece_len + off as usize;
    if start + l as usize > sc.data.len() {
        return Answer::Ignored;
    }
    if sc.announce == Announce::Nothing {
        return refuse(out);
    }
    if choking {
        if !sc.allowed_fast.contains(&p) {
            return refuse(out);
        }
        *served_fast += 1;
    } else if sc.reject_alternate && !rejected.contains(&(p, off)) {
        *fresh += 1;
        if (*fresh).is_multiple_of(2) {
            rejected.insert((p, off));
            return refuse(out);
        }
    }
    let mut block = sc.data[start..start + l as usize].to_vec();
    match sc.behaviour {
        Behaviour::Silent => return Answer::Ignored,
        Behaviour::Corrupt => block.iter_mut().for_each(|b| *b ^= 0x5a),
        _ => {}
    }
    seen.bytes_sent.fetch_add(u64::from(l), Ordering::Relaxed);
    out.extend_from_slice(&piece_msg(p, off, &block));
    Answer::Served
}

/// A ut_metadata data message for `piece`, or a reject when there is none.
fn metadata_reply(offer: &MetaOffer, piece: i64, their_id: u8) -> Vec<u8> {
    const PIECE: usize = 16 * 1024;
    let slice = offer.bytes.as_ref().and_then(|b| {
        let start = usize::try_from(piece).ok()?.checked_mul(PIECE)?;
        (start < b.len()).then(|| &b[start..b.len().min(start + PIECE)])
    });
    let mut payload = vec![their_id];
    match slice {
        Some(s) => {
            payload.extend_from_slice(
                format!(
                    "d8:msg_typei1e5:piecei{piece}e10:total_sizei{}ee",
                    offer.size
                )
                .as_bytes(),
            );
            payload.extend_from_slice(s);
        }
        None => {
            payload.extend_from_slice(format!("d8:msg_typei2e5:piecei{piece}ee").as_bytes());
        }
    }
    msg(20, &payload)
}

/// `<len><id><body>`.
pub fn msg(id: u8, body: &[u8]) -> Vec<u8> {
    let mut m = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    m.push(id);
    m.extend_from_slice(body);
    m
}

/// A request (6), cancel (8) or reject (0x10).
pub fn triple_msg(id: u8, piece: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut b = piece.to_be_bytes().to_vec();
    b.extend_from_slice(&offset.to_be_bytes());
    b.extend_from_slice(&len.to_be_bytes());
    msg(id, &b)
}

fn piece_msg(piece: u32, offset: u32, block: &[u8]) -> Vec<u8> {
    let mut m = ((9 + block.len()) as u32).to_be_bytes().to_vec();
    m.push(7);
    m.extend_from_slice(&piece.to_be_bytes());
    m.extend_from_slice(&offset.to_be_bytes());
    m.extend_from_slice(block);
    m
}

/// A decoded bencode value (just enough for extension payloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B {
    Int(i64),
    Str(Vec<u8>),
    List(Vec<B>),
    Dict(Vec<(Vec<u8>, B)>),
}

impl B {
    pub fn get(&self, key: &str) -> Option<&B> {
        match self {
            B::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            B::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Decodes one value from the front of `b`; returns it and the bytes it
/// took (ut_metadata data follows its dictionary).
pub fn bdecode(b: &[u8]) -> Option<(B, usize)> {
    fn go(b: &[u8], at: usize, depth: usize) -> Option<(B, usize)> {
        if depth > 32 {
            return None;
        }
        match *b.get(at)? {
            b'i' => {
                let end = at + b[at..].iter().position(|&c| c == b'e')?;
                let n = std::str::from_utf8(&b[at + 1..end]).ok()?.parse().ok()?;
                Some((B::Int(n), end + 1))
            }
            b'l' | b'd' => {
                let dict = b[at] == b'd';
                let (mut at, mut items, mut pairs) = (at + 1, Vec::new(), Vec::new());
                while *b.get(at)? != b'e' {
                    if dict {
                        let (k, next) = go(b, at, depth + 1)?;
                        let B::Str(k) = k else { return None };
                        let (v, next) = go(b, next, depth + 1)?;
                        pairs.push((k, v));
                        at = next;
                    } else {
                        let (v, next) = go(b, at, depth + 1)?;
                        items.push(v);
                        at = next;
                    }
                }
                let v = if dict { B::Dict(pairs) } else { B::List(items) };
                Some((v, at + 1))
            }
            b'0'..=b'9' => {
                let colon = at + b[at..].iter().position(|&c| c == b':')?;
                let len: usize = std::str::from_utf8(&b[at..colon]).ok()?.parse().ok()?;
                let end = (colon + 1).checked_add(len)?;
                Some((B::Str(b.get(colon + 1..end)?.to_vec()), end))
            }
            _ => None,
        }
    }
    go(b, 0, 0)
}
