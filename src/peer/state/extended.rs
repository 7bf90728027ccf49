//! BEP-10 extended messages in the peer core: the extended handshake,
//! BEP-9 metadata requests and BEP-11 PEX. Malformed payloads and unknown
//! ids are ignored (extensions are optional for both sides).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Action, PeerState, Torrent};
use crate::engine::PEX_MAX;
use crate::extension::{self, pex_flags, ExtHandshake, MetadataMsg, PexMsg};
use crate::wire::Message;

/// The first PEX message goes out this long after the extended handshake,
/// then every `PEX_EVERY` (BEP-11: at most once a minute).
pub(crate) const PEX_FIRST: Duration = Duration::from_secs(3);
pub(crate) const PEX_EVERY: Duration = Duration::from_secs(60);

impl PeerState {
    pub(super) fn on_extended(
        &mut self,
        id: u8,
        payload: &Bytes,
        now: Instant,
        t: &mut impl Torrent,
    ) -> Option<Action> {
        match id {
            extension::HANDSHAKE => {
                if let Ok(hs) = ExtHandshake::decode(payload) {
                    self.on_ext_handshake(&hs, now, t);
                }
            }
            extension::OUR_UT_METADATA => {
                if let (Ok(MetadataMsg::Request { piece }), Some(id)) =
                    (MetadataMsg::decode(payload), self.their_metadata)
                {
                    return Some(Action::Metadata { id, piece });
                }
            }
            extension::OUR_UT_PEX if !self.settings().private => {
                if let Ok(pex) = PexMsg::decode(payload) {
                    let from = self.remote_addr();
                    let addrs: Vec<SocketAddr> = pex
                        .added
                        .into_iter()
                        .filter(|(a, _)| *a != from)
                        .take(PEX_MAX)
                        .map(|(a, flags)| {
                            if flags & pex_flags::ENCRYPTION != 0 {
                                t.note_wants_mse(a);
                            }
                            a
                        })
                        .collect();
                    t.add_pex_peers(addrs);
                }
            }
            _ => {}
        }
        None
    }

    fn on_ext_handshake(&mut self, hs: &ExtHandshake, now: Instant, t: &mut impl Torrent) {
        self.their_metadata = hs.id(extension::UT_METADATA);
        self.their_pex = if self.settings().private {
            None
        } else {
            hs.id(extension::UT_PEX)
        };
        if let Some(q) = hs.reqq {
            self.pipeline_mut().cap(q);
        }
        let remote = *self.remote();
        if hs.encryption {
            let listen = hs.listen_port.map(|p| SocketAddr::new(remote.addr.ip(), p));
            if let Some(a) = listen.or(remote.outgoing.then_some(remote.addr)) {
                t.note_wants_mse(a);
            }
        }
        if let Some(p) = hs.listen_port {
            t.set_listen_port(p);
        }
        if let Some(v) = &hs.client {
            t.set_client(v);
        }
        if self.their_pex.is_some() && self.next_pex.is_none() {
            self.next_pex = Some(now + PEX_FIRST);
        }
    }

    /// Tells the peer which peers joined and left since the last message.
    pub(super) fn send_pex(&mut self, now: Instant, t: &mut impl Torrent) {
        let Some(id) = self.their_pex else {
            return;
        };
        let to = self.remote_addr();
        let view: HashMap<SocketAddr, u8> =
            t.pex_view().into_iter().filter(|(a, _)| *a != to).collect();
        let added: Vec<(SocketAddr, u8)> = view
            .iter()
            .filter(|(a, _)| !self.pex_sent.contains(a))
            .map(|(a, f)| (*a, *f))
            .take(PEX_MAX)
            .collect();
        let dropped: Vec<SocketAddr> = self
            .pex_sent
            .iter()
            .filter(|a| !view.contains_key(a))
            .copied()
            .take(PEX_MAX)
            .collect();
        if added.is_empty() && dropped.is_empty() {
            return;
        }
        for (a, _) in &added {
            self.pex_sent.insert(*a);
        }
        for a in &dropped {
            self.pex_sent.remove(a);
        }
        let payload = Bytes::from(PexMsg { added, dropped }.encode());
        self.send(Message::Extended { id, payload }, now);
    }
}
