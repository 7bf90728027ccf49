//! A scripted BitTorrent peer for tests: an honest seeder, or one of
//! several kinds of misbehaviour.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// What the fake saw, for assertions.
#[derive(Default)]
pub struct Seen {
    pub requests: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Set when the client closed the connection.
    pub closed_by_client: AtomicU64,
    pub connections: AtomicU64,
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
        let listener = TcpListener::bind(addr).await.expect("bind fake peer");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::Relaxed);
                let (d, s2) = (data.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, info_hash, d, piece_len, behaviour, s2).await;
                });
            }
        });
        FakePeer { addr, seen }
    }
}

async fn serve(
    mut sock: TcpStream,
    info_hash: [u8; 20],
    data: Arc<Vec<u8>>,
    piece_len: usize,
    behaviour: Behaviour,
    seen: Arc<Seen>,
) -> std::io::Result<()> {
    let mut hs = [0u8; 68];
    sock.read_exact(&mut hs).await?;
    let mut ours = Vec::with_capacity(68);
    ours.push(19);
    ours.extend_from_slice(b"BitTorrent protocol");
    ours.extend_from_slice(&[0; 8]);
    ours.extend_from_slice(&info_hash);
    ours.extend_from_slice(b"-FK0001-fakepeer0000");
    sock.write_all(&ours).await?;

    let num_pieces = data.len().div_ceil(piece_len);
    let mut bits = vec![0u8; num_pieces.div_ceil(8)];
    for i in 0..num_pieces {
        bits[i / 8] |= 0x80 >> (i % 8);
    }
    match behaviour {
        Behaviour::LongBitfield => bits.push(0),
        Behaviour::SpareBits => {
            if num_pieces % 8 != 0 {
                *bits.last_mut().unwrap() |= 1;
            } else {
                bits.push(0x80);
            }
        }
        _ => {}
    }
    let mut msg = ((bits.len() + 1) as u32).to_be_bytes().to_vec();
    msg.push(5);
    msg.extend_from_slice(&bits);
    sock.write_all(&msg).await?;

    match behaviour {
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
    sock.write_all(&[0, 0, 0, 1, 1]).await?; // unchoke

    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(60), sock.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.closed_by_client.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Ok(Ok(n)) => n,
            Err(_) => return Ok(()),
        };
        buf.extend_from_slice(&tmp[..n]);
        let mut out = Vec::new();
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let m: Vec<u8> = buf.drain(..4 + len).skip(4).collect();
            if m.first() == Some(&6) && m.len() == 13 {
                seen.requests.fetch_add(1, Ordering::Relaxed);
                let p = u32::from_be_bytes(m[1..5].try_into().unwrap()) as usize;
                let off = u32::from_be_bytes(m[5..9].try_into().unwrap()) as usize;
                let l = u32::from_be_bytes(m[9..13].try_into().unwrap()) as usize;
                let start = p * piece_len + off;
                if start + l > data.len() {
                    continue;
                }
                let mut block = data[start..start + l].to_vec();
                match behaviour {
                    Behaviour::Silent => continue,
                    Behaviour::Corrupt => block.iter_mut().for_each(|b| *b ^= 0x5a),
                    _ => {}
                }
                seen.bytes_sent.fetch_add(l as u64, Ordering::Relaxed);
                out.extend_from_slice(&piece_msg(p as u32, off as u32, &block));
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
        }
    }
}

fn piece_msg(piece: u32, offset: u32, block: &[u8]) -> Vec<u8> {
    let mut m = ((9 + block.len()) as u32).to_be_bytes().to_vec();
    m.push(7);
    m.extend_from_slice(&piece.to_be_bytes());
    m.extend_from_slice(&offset.to_be_bytes());
    m.extend_from_slice(block);
    m
}
