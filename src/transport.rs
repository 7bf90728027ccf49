//! A peer connection's byte stream, plaintext or RC4 after an MSE
//! handshake ([`crate::mse`]), and the handshakes that open it: dialling
//! with the plaintext fallback `prefer` allows, and telling an incoming
//! plaintext handshake from an MSE one by its first bytes.
//!
//! Ciphers run in place on the buffers the peer task already owns, on
//! whatever the socket delivered in one read: no extra copy on the hot
//! path.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};

use crate::mse::{self, Cipher, Encryption, Established, Initiator, MseError, Responder};
use crate::types::InfoHash;
use crate::wire::{Handshake, WireError, PROTOCOL};

/// First read's buffer; grows as a fast peer needs.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out connecting")]
    ConnectTimeout,
    #[error("connection closed during the handshake")]
    Closed,
    #[error("timed out waiting for the handshake")]
    Timeout,
    /// The peer closed or went silent during the encrypted handshake:
    /// it probably speaks plaintext only.
    #[error("the peer does not answer the encrypted handshake")]
    MseRefused,
    #[error("encrypted handshake: {0}")]
    Mse(#[from] MseError),
    #[error("a plaintext handshake, and encryption is required")]
    PlaintextRefused,
    #[error("an encrypted handshake, and encryption is disabled")]
    EncryptedRefused,
    #[error("the encrypted handshake named one torrent, the BitTorrent handshake another")]
    SkeyMismatch,
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl LinkError {
    /// Worth one more try in plaintext (`prefer`).
    pub(crate) fn mse_failed(&self) -> bool {
        matches!(self, LinkError::MseRefused | LinkError::Mse(_))
    }
}

/// The connection's stream with its ciphers.
pub(crate) struct Link {
    stream: TcpStream,
    read: Option<Cipher>,
    write: Option<Cipher>,
}

impl Link {
    pub(crate) fn plain(stream: TcpStream) -> Link {
        Link {
            stream,
            read: None,
            write: None,
        }
    }

    fn established(stream: TcpStream, e: Established) -> Link {
        Link {
            stream,
            read: e.read,
            write: e.write,
        }
    }

    /// The payload stream is RC4-encrypted.
    pub(crate) fn encrypted(&self) -> bool {
        self.read.is_some()
    }

    /// Reads and decrypts what the socket has, appended to `buf`.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        read_into(&mut self.stream, self.read.as_mut(), buf).await
    }

    /// Encrypts `data` in place and writes it all. Not cancel-safe: a
    /// write dropped midway leaves the stream out of step with the cipher.
    pub(crate) async fn write_all(&mut self, data: &mut [u8]) -> std::io::Result<()> {
        if let Some(c) = &mut self.write {
            c.apply(data);
        }
        self.stream.write_all(data).await
    }

    pub(crate) fn into_split(self) -> (ReadLink, WriteLink) {
        let (rd, wr) = self.stream.into_split();
        (
            ReadLink {
                rd,
                cipher: self.read,
            },
            WriteLink {
                wr,
                cipher: self.write,
            },
        )
    }
}

/// Cancel-safe: the decryption happens in the poll that completes the
/// read, so a read either happened and was decrypted or did not happen.
async fn read_into<R: AsyncReadExt + Unpin>(
    rd: &mut R,
    cipher: Option<&mut Cipher>,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    let start = buf.len();
    let n = rd.read_buf(buf).await?;
    if let Some(c) = cipher {
        c.apply(&mut buf[start..]);
    }
    Ok(n)
}

pub(crate) struct ReadLink {
    rd: OwnedReadHalf,
    cipher: Option<Cipher>,
}

impl ReadLink {
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> std::io::Result<usize> {
        read_into(&mut self.rd, self.cipher.as_mut(), buf).await
    }
}

pub(crate) struct WriteLink {
    wr: OwnedWriteHalf,
    cipher: Option<Cipher>,
}

impl WriteLink {
    /// Encrypts `data` in place and writes it all. Not cancel-safe: a
    /// write dropped midway leaves the stream out of step with the cipher.
    pub(crate) async fn write_all(&mut self, data: &mut [u8]) -> std::io::Result<()> {
        if let Some(c) = &mut self.cipher {
            c.apply(data);
        }
        self.wr.write_all(data).await
    }

    pub(crate) async fn shutdown(&mut self) -> std::io::Result<()> {
        self.wr.shutdown().await
    }
}

/// Dials `addr` from `bind_ip` (when of the same family) within `limit`.
pub(crate) async fn dial(
    bind_ip: Option<IpAddr>,
    addr: SocketAddr,
    limit: Duration,
) -> Result<TcpStream, LinkError> {
    let connect = async {
        let sock = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = bind_ip {
            if ip.is_ipv4() == addr.is_ipv4() {
                sock.bind(SocketAddr::new(ip, 0))?;
            }
        }
        sock.connect(addr).await
    };
    match timeout(limit, connect).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(LinkError::Io(e)),
        Err(_) => Err(LinkError::ConnectTimeout),
    }
}

/// How an outgoing connection opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dial {
    Plain,
    /// MSE offering these `crypto_provide` bits.
    Mse(u32),
    /// MSE offering both, then plaintext on a fresh connection if the peer
    /// does not take it.
    MseThenPlain,
}

impl Dial {
    /// What `policy` allows for a peer; `plain_worked`: an earlier MSE
    /// attempt failed where plaintext then succeeded; `prefers_mse`: the
    /// peer is known to want encryption.
    pub(crate) fn choose(policy: Encryption, plain_worked: bool, prefers_mse: bool) -> Dial {
        match policy {
            Encryption::Disable => Dial::Plain,
            Encryption::Require => Dial::Mse(mse::CRYPTO_RC4),
            // The wish comes from other peers (PEX, `e`): a hint that
            // overrides what worked, never a reason to give up plaintext.
            Encryption::Prefer if plain_worked && !prefers_mse => Dial::Plain,
            Encryption::Prefer => Dial::MseThenPlain,
        }
    }
}

pub(crate) struct DialOpts {
    pub bind_ip: Option<IpAddr>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
}

/// An outgoing connection with the remote handshake read.
pub(crate) struct Opened {
    pub link: Link,
    pub theirs: Handshake,
    /// Plaintext bytes that followed the handshake.
    pub buf: BytesMut,
    /// MSE failed and the plaintext retry worked.
    pub fell_back: bool,
}

/// Dials and handshakes as `how` says; `ours` is sent first (inside the
/// MSE handshake when there is one).
pub(crate) async fn open(
    opts: &DialOpts,
    addr: SocketAddr,
    ours: &Handshake,
    how: Dial,
) -> Result<Opened, LinkError> {
    let provide = match how {
        Dial::Plain => None,
        Dial::Mse(bits) => Some(bits),
        Dial::MseThenPlain => Some(mse::CRYPTO_PLAIN | mse::CRYPTO_RC4),
    };
    let stream = dial(opts.bind_ip, addr, opts.connect_timeout).await?;
    match handshake_out(stream, ours, provide, opts.handshake_timeout).await {
        Ok((link, theirs, buf)) => Ok(Opened {
            link,
            theirs,
            buf,
            fell_back: false,
        }),
        Err(e) if how == Dial::MseThenPlain && e.mse_failed() => {
            tracing::debug!(%addr, error = %e, "encrypted handshake failed; trying plaintext");
            let stream = dial(opts.bind_ip, addr, opts.connect_timeout).await?;
            let (link, theirs, buf) =
                handshake_out(stream, ours, None, opts.handshake_timeout).await?;
            Ok(Opened {
                link,
                theirs,
                buf,
                fell_back: true,
            })
        }
        Err(e) => Err(e),
    }
}

/// Our side of an outgoing handshake: MSE first when `provide` is set,
/// then the BitTorrent handshakes, all within `limit`.
pub(crate) async fn handshake_out(
    mut stream: TcpStream,
    ours: &Handshake,
    provide: Option<u32>,
    limit: Duration,
) -> Result<(Link, Handshake, BytesMut), LinkError> {
    let deadline = Instant::now() + limit;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut link = match provide {
        None => {
            timeout_at(deadline, stream.write_all(&ours.encode()))
                .await
                .map_err(|_| LinkError::Timeout)??;
            Link::plain(stream)
        }
        Some(provide) => {
            let mse = async {
                let mut out = Vec::new();
                let mut init = Initiator::new(ours.info_hash, provide, &ours.encode(), &mut out);
                loop {
                    if !out.is_empty() {
                        stream
                            .write_all(&out)
                            .await
                            .map_err(|_| LinkError::MseRefused)?;
                        out.clear();
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return Err(LinkError::MseRefused),
                        Ok(_) => {}
                    }
                    if let Some(e) = init.receive(&mut buf, &mut out)? {
                        if !out.is_empty() {
                            stream
                                .write_all(&out)
                                .await
                                .map_err(|_| LinkError::MseRefused)?;
                        }
                        return Ok(e);
                    }
                    if buf.len() > mse::MAX_HANDSHAKE {
                        return Err(LinkError::Mse(MseError::NoSync));
                    }
                }
            };
            let est = timeout_at(deadline, mse)
                .await
                .map_err(|_| LinkError::MseRefused)??;
            Link::established(stream, est)
        }
    };
    let theirs = timeout_at(deadline, read_handshake(&mut link, &mut buf))
        .await
        .map_err(|_| LinkError::Timeout)??;
    Ok((link, theirs, buf))
}

async fn read_handshake(link: &mut Link, buf: &mut BytesMut) -> Result<Handshake, LinkError> {
    loop {
        if let Some(h) = Handshake::decode(buf)? {
            return Ok(h);
        }
        if link.read_buf(buf).await? == 0 {
            return Err(LinkError::Closed);
        }
    }
}

/// What the first bytes of an incoming connection are: `None` while they
/// could still be either.
fn is_plaintext(first: &[u8]) -> Option<bool> {
    let mut pstr = [19u8; 20];
    pstr[1..].copy_from_slice(PROTOCOL);
    let n = first.len().min(pstr.len());
    if first[..n] != pstr[..n] {
        Some(false)
    } else if n == pstr.len() {
        Some(true)
    } else {
        None
    }
}

/// The accepting side: reads a plaintext or an MSE handshake as `policy`
/// allows, MSE torrents found through `lookup` (`H(req2, SKEY)` → the
/// info-hash). Returns the link and the remote BitTorrent handshake, with
/// the plaintext that followed it; our handshake is not sent yet.
pub(crate) async fn handshake_in(
    mut stream: TcpStream,
    policy: Encryption,
    lookup: impl Fn(&[u8; 20]) -> Option<InfoHash>,
) -> Result<(Link, Handshake, BytesMut), LinkError> {
    let mut buf = BytesMut::with_capacity(1024);
    let plain = loop {
        if !buf.is_empty() {
            if let Some(p) = is_plaintext(&buf) {
                break p;
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(LinkError::Closed);
        }
    };
    let mut link = match (plain, policy) {
        (true, Encryption::Require) => return Err(LinkError::PlaintextRefused),
        (false, Encryption::Disable) => return Err(LinkError::EncryptedRefused),
        (true, _) => Link::plain(stream),
        (false, _) => {
            let mut resp = Responder::new(policy.methods());
            let mut out = Vec::new();
            let est = loop {
                let done = resp.receive(&mut buf, &mut out, &lookup)?;
                if !out.is_empty() {
                    stream.write_all(&out).await?;
                    out.clear();
                }
                if let Some(e) = done {
                    break e;
                }
                if buf.len() > mse::MAX_HANDSHAKE {
                    return Err(LinkError::Mse(MseError::NoSync));
                }
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(LinkError::Closed);
                }
            };
            let skey = est.info_hash;
            let mut link = Link::established(stream, est);
            let theirs = read_handshake(&mut link, &mut buf).await?;
            if theirs.info_hash != skey {
                return Err(LinkError::SkeyMismatch);
            }
            return Ok((link, theirs, buf));
        }
    };
    let theirs = read_handshake(&mut link, &mut buf).await?;
    Ok((link, theirs, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_keeps_the_plaintext_retry_whatever_other_peers_say() {
        use Encryption::*;
        assert_eq!(Dial::choose(Prefer, false, false), Dial::MseThenPlain);
        assert_eq!(Dial::choose(Prefer, true, false), Dial::Plain);
        assert_eq!(Dial::choose(Prefer, true, true), Dial::MseThenPlain);
        assert_eq!(Dial::choose(Prefer, false, true), Dial::MseThenPlain);
        assert_eq!(
            Dial::choose(Require, true, false),
            Dial::Mse(mse::CRYPTO_RC4)
        );
        assert_eq!(Dial::choose(Disable, false, true), Dial::Plain);
    }

    #[test]
    fn first_bytes_tell_plaintext_from_mse() {
        assert_eq!(is_plaintext(&[19]), None);
        assert_eq!(is_plaintext(b"\x13BitTorrent"), None);
        assert_eq!(is_plaintext(b"\x13BitTorrent protocol"), Some(true));
        assert_eq!(is_plaintext(b"\x13BitTorrent protocol\0\0"), Some(true));
        assert_eq!(is_plaintext(&[20]), Some(false));
        assert_eq!(is_plaintext(b"\x13BitTorrenX"), Some(false));
    }
}
