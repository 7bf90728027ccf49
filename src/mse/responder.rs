//! The side that accepts: finds the torrent from the obfuscated SKEY,
//! then answers the way the initiator offered.

use super::*;

#[derive(Default)]
pub(super) enum Resp {
    /// Waiting for Ya.
    Key,
    /// Looking for H(req1, S) after PadA.
    Sync { secret: Box<[u8; KEY_LEN]> },
    /// Waiting for the obfuscated SKEY.
    Skey { secret: Box<[u8; KEY_LEN]> },
    /// Waiting for VC, crypto_provide and len(PadC).
    Provide {
        skey: InfoHash,
        read: Cipher,
        write: Cipher,
    },
    /// Waiting for PadC and len(IA).
    PadC {
        skey: InfoHash,
        read: Cipher,
        write: Cipher,
        select: u32,
        len: usize,
    },
    /// Waiting for the whole initial payload.
    Ia {
        skey: InfoHash,
        read: Cipher,
        write: Cipher,
        select: u32,
        len: usize,
    },
    #[default]
    Done,
}

/// The side that accepts: finds the torrent from the obfuscated SKEY.
pub struct Responder {
    keys: KeyPair,
    accept: u32,
    pad: usize,
    state: Resp,
}

impl Responder {
    /// Accepts the `crypto_provide` methods in `accept` (RC4 is chosen
    /// when both sides allow it).
    pub fn new(accept: u32) -> Responder {
        let pad = rand::thread_rng().gen_range(0..=MAX_PAD);
        Responder::with(KeyPair::random(), pad, accept)
    }

    pub(super) fn with(keys: KeyPair, pad: usize, accept: u32) -> Responder {
        Responder {
            keys,
            accept,
            pad,
            state: Resp::Key,
        }
    }

    /// Consumes what it can of `input`, appending replies to `out`;
    /// `lookup` maps `H(req2, SKEY)` to a torrent we serve. When done,
    /// `input` holds the plaintext of the initial payload and whatever
    /// followed it.
    pub fn receive(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
        lookup: impl Fn(&[u8; 20]) -> Option<InfoHash>,
    ) -> Result<Option<Established>, MseError> {
        drive(self, input, out, &lookup)
    }
    /// VC, crypto_provide and len(PadC) arrived: picks the method.
    fn provided(
        &self,
        head: [u8; 14],
        skey: InfoHash,
        read: Cipher,
        write: Cipher,
    ) -> Result<Resp, MseError> {
        if head[..VC_LEN] != [0u8; VC_LEN] {
            return Err(MseError::BadVc);
        }
        let provide = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        let len = usize::from(u16::from_be_bytes([head[12], head[13]]));
        if len > MAX_PAD {
            return Err(MseError::PadTooLong);
        }
        let common = provide & self.accept;
        let select = if common & CRYPTO_RC4 != 0 {
            CRYPTO_RC4
        } else if common & CRYPTO_PLAIN != 0 {
            CRYPTO_PLAIN
        } else {
            return Err(MseError::NoCommonMethod);
        };
        Ok(Resp::PadC {
            skey,
            read,
            write,
            select,
            len,
        })
    }
}

impl<F: Fn(&[u8; 20]) -> Option<InfoHash>> Side<F> for Responder {
    type State = Resp;

    fn state(&mut self) -> &mut Resp {
        &mut self.state
    }

    fn step(
        &self,
        state: Resp,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
        lookup: &F,
    ) -> Result<Step<Resp>, MseError> {
        Ok(match state {
            Resp::Key if input.len() < KEY_LEN => Step::Wait(Resp::Key),
            Resp::Key => {
                let secret = self.keys.shared(&input[..KEY_LEN])?;
                input.advance(KEY_LEN);
                out.extend_from_slice(&self.keys.public);
                padding(out, self.pad);
                Step::Next(Resp::Sync {
                    secret: Box::new(secret),
                })
            }
            Resp::Sync { secret } => {
                let req1 = hash(&[b"req1", &secret[..]]);
                match find(input, &req1, MAX_PAD + 20)? {
                    None => Step::Wait(Resp::Sync { secret }),
                    Some(at) => {
                        input.advance(at + 20);
                        Step::Next(Resp::Skey { secret })
                    }
                }
            }
            s @ Resp::Skey { .. } if input.len() < 20 => Step::Wait(s),
            Resp::Skey { secret } => {
                let req3 = hash(&[b"req3", &secret[..]]);
                let skey = lookup(&xor20(&input[..20], &req3)).ok_or(MseError::UnknownTorrent)?;
                input.advance(20);
                Step::Next(Resp::Provide {
                    skey,
                    read: Cipher::new(b"keyA", &secret, &skey),
                    write: Cipher::new(b"keyB", &secret, &skey),
                })
            }
            Resp::Provide {
                skey,
                mut read,
                write,
            } => match take::<14>(input, &mut read) {
                None => Step::Wait(Resp::Provide { skey, read, write }),
                Some(head) => Step::Next(self.provided(head, skey, read, write)?),
            },
            s @ Resp::PadC { len, .. } if input.len() < len + 2 => Step::Wait(s),
            Resp::PadC {
                skey,
                read,
                write,
                select,
                len,
            } => Step::Next(answer(input, out, skey, read, write, select, len)),
            s @ Resp::Ia { len, .. } if input.len() < len => Step::Wait(s),
            Resp::Ia {
                skey,
                read,
                write,
                select,
                len,
            } => Step::Done(Box::new(established(input, skey, read, write, select, len))),
            Resp::Done => Step::Wait(Resp::Done),
        })
    }
}

/// PadC is in: skip it, read the IA's length and send our VC, crypto
/// select and (empty) PadD.
fn answer(
    input: &mut BytesMut,
    out: &mut Vec<u8>,
    skey: InfoHash,
    mut read: Cipher,
    mut write: Cipher,
    select: u32,
    pad_c: usize,
) -> Resp {
    skip(input, &mut read, pad_c);
    let ia = take::<2>(input, &mut read).expect("length checked");
    let start = out.len();
    out.extend_from_slice(&[0u8; VC_LEN]);
    out.extend_from_slice(&select.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // no PadD
    write.apply(&mut out[start..]);
    Resp::Ia {
        skey,
        read,
        write,
        select,
        len: usize::from(u16::from_be_bytes(ia)),
    }
}

/// The IA is in: the handshake is done.
fn established(
    input: &mut BytesMut,
    skey: InfoHash,
    mut read: Cipher,
    write: Cipher,
    select: u32,
    ia: usize,
) -> Established {
    // The IA is always encrypted; what follows only if RC4 was selected.
    let upto = if select == CRYPTO_RC4 {
        input.len()
    } else {
        ia
    };
    read.apply(&mut input[..upto]);
    let (read, write) = if select == CRYPTO_RC4 {
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    Established {
        info_hash: skey,
        read,
        write,
    }
}
