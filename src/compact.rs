//! Compact addresses, the one codec for them: BEP-23 peers (4 address
//! bytes and a big-endian port), BEP-7 IPv6 peers (16 + 2), BEP-5 node
//! info (a 20-byte id, then a compact IPv4 peer) and bare IPs (BEP-10
//! `yourip`).
//!
//! A list whose length is not a multiple of its entry size is read up to
//! its last whole entry; the ragged tail is ignored. Every caller (tracker
//! responses, UDP tracker replies, PEX, KRPC `nodes`) wants exactly that.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Bytes in one compact IPv4 peer.
pub(crate) const V4_LEN: usize = 6;
/// Bytes in one compact IPv6 peer.
pub(crate) const V6_LEN: usize = 18;
/// Bytes in one compact IPv4 node (id + peer).
pub(crate) const NODE_V4_LEN: usize = 20 + V4_LEN;

/// Which kind of entries a compact list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) const fn entry_len(self) -> usize {
        match self {
            Family::V4 => V4_LEN,
            Family::V6 => V6_LEN,
        }
    }
}

/// Appends the 4 or 16 address bytes of `ip`.
pub(crate) fn encode_ip(ip: IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
}

/// A 4-byte (IPv4) or 16-byte (IPv6) address; any other length is `None`.
pub(crate) fn decode_ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

/// Appends 6 bytes (IPv4) or 18 bytes (IPv6).
pub(crate) fn encode_peer(addr: &SocketAddr, out: &mut Vec<u8>) {
    encode_ip(addr.ip(), out);
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Appends the 6 bytes of an IPv4 peer.
pub(crate) fn encode_v4(addr: &SocketAddrV4, out: &mut Vec<u8>) {
    out.extend_from_slice(&addr.ip().octets());
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// One peer of exactly 6 or 18 bytes; any other length is `None`.
pub(crate) fn decode_peer(b: &[u8]) -> Option<SocketAddr> {
    let (ip, port) = b.split_at(b.len().checked_sub(2)?);
    let port = u16::from_be_bytes([port[0], port[1]]);
    Some(match decode_ip(ip)? {
        IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, port)),
        IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
    })
}

/// The peers of a compact list of one family; a ragged tail is ignored.
pub(crate) fn decode_peers(b: &[u8], family: Family) -> impl Iterator<Item = SocketAddr> + '_ {
    b.chunks_exact(family.entry_len())
        .map(|c| decode_peer(c).expect("an entry of a peer's length"))
}

/// Appends a 26-byte node: `id`, then its compact IPv4 address.
pub(crate) fn encode_node_v4(id: &[u8; 20], addr: &SocketAddrV4, out: &mut Vec<u8>) {
    out.extend_from_slice(id);
    encode_v4(addr, out);
}

/// The (id, address) pairs of a compact node list; a ragged tail is ignored.
pub(crate) fn decode_nodes_v4(b: &[u8]) -> impl Iterator<Item = ([u8; 20], SocketAddrV4)> + '_ {
    b.chunks_exact(NODE_V4_LEN).map(|c| {
        let (id, peer) = c.split_at(20);
        let SocketAddr::V4(addr) = decode_peer(peer).expect("6 bytes") else {
            unreachable!("6 bytes are an IPv4 peer")
        };
        (id.try_into().expect("20 bytes"), addr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn peers_have_the_bep_23_and_bep_7_layout() {
        let mut b = Vec::new();
        encode_peer(&"1.2.3.4:258".parse().unwrap(), &mut b);
        assert_eq!(b, [1, 2, 3, 4, 1, 2]);
        b.clear();
        encode_peer(&"[::1]:6881".parse().unwrap(), &mut b);
        assert_eq!(b.len(), V6_LEN);
        assert_eq!(&b[..16], &Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&b[16..], &6881u16.to_be_bytes());
    }

    #[test]
    fn a_ragged_tail_is_ignored() {
        let mut b = Vec::new();
        encode_peer(&"1.2.3.4:5".parse().unwrap(), &mut b);
        encode_peer(&"5.6.7.8:9".parse().unwrap(), &mut b);
        b.extend_from_slice(&[9, 9, 9]);
        let peers: Vec<SocketAddr> = decode_peers(&b, Family::V4).collect();
        assert_eq!(
            peers,
            ["1.2.3.4:5".parse().unwrap(), "5.6.7.8:9".parse().unwrap()]
        );
        // 15 bytes: no whole IPv6 entry.
        assert_eq!(decode_peers(&b, Family::V6).count(), 0);
        assert_eq!(decode_nodes_v4(&b).count(), 0);
        assert_eq!(decode_peers(&[], Family::V4).count(), 0);
    }

    #[test]
    fn a_single_entry_must_have_a_peer_length() {
        for len in [0, 1, 2, 4, 5, 7, 16, 17, 19, 26] {
            assert_eq!(decode_peer(&vec![1; len]), None, "{len}");
        }
        assert!(decode_peer(&[1; 6]).is_some_and(|a| a.is_ipv4()));
        assert!(decode_peer(&[1; 18]).is_some_and(|a| a.is_ipv6()));
        assert_eq!(decode_ip(&[1; 5]), None);
        assert_eq!(decode_ip(&[127, 0, 0, 1]), Some(Ipv4Addr::LOCALHOST.into()));
    }

    #[test]
    fn nodes_are_an_id_then_a_v4_peer() {
        let addr: SocketAddrV4 = "10.0.0.1:6881".parse().unwrap();
        let mut b = Vec::new();
        encode_node_v4(&[7; 20], &addr, &mut b);
        assert_eq!(b.len(), NODE_V4_LEN);
        assert_eq!(&b[..20], &[7; 20]);
        assert_eq!(decode_nodes_v4(&b).collect::<Vec<_>>(), [([7; 20], addr)]);
    }

    fn any_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            any::<([u8; 4], u16)>().prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            any::<([u8; 16], u16)>().prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    proptest! {
        #[test]
        fn peers_round_trip(addrs in proptest::collection::vec(any_addr(), 0..20), tail in 0usize..6) {
            for family in [Family::V4, Family::V6] {
                let want: Vec<SocketAddr> = addrs
                    .iter()
                    .copied()
                    .filter(|a| a.is_ipv4() == (family == Family::V4))
                    .collect();
                let mut b = Vec::new();
                for a in &want {
                    encode_peer(a, &mut b);
                }
                prop_assert_eq!(b.len(), want.len() * family.entry_len());
                b.resize(b.len() + tail, 0xff);
                prop_assert_eq!(decode_peers(&b, family).collect::<Vec<_>>(), want);
            }
        }

        #[test]
        fn nodes_round_trip(nodes in proptest::collection::vec(any::<([u8; 20], [u8; 4], u16)>(), 0..10)) {
            let want: Vec<([u8; 20], SocketAddrV4)> = nodes
                .iter()
                .map(|&(id, ip, p)| (id, SocketAddrV4::new(ip.into(), p)))
                .collect();
            let mut b = Vec::new();
            for (id, a) in &want {
                encode_node_v4(id, a, &mut b);
            }
            prop_assert_eq!(decode_nodes_v4(&b).collect::<Vec<_>>(), want);
        }
    }
}
