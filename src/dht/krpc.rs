//! KRPC (BEP-5): bencoded queries, responses and errors in one UDP packet
//! each. Pure: bytes in, values out.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};

use crate::bencode::{self, Dict, Limits, List, Value};
use crate::compact;
use crate::types::InfoHash;

/// A 160-bit node id; distance is XOR, compared as a big-endian number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    pub fn random() -> NodeId {
        NodeId(rand::random())
    }

    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        d
    }

    /// Leading bits shared with `other` (160 when equal).
    pub fn common_prefix(&self, other: &NodeId) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", hex::encode(&self.0[..6]))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl From<InfoHash> for NodeId {
    fn from(h: InfoHash) -> NodeId {
        NodeId(h.0)
    }
}

/// Compact node info: id and IPv4 address (26 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    pub id: NodeId,
    pub addr: SocketAddrV4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Ping,
    FindNode {
        target: NodeId,
    },
    GetPeers {
        info_hash: InfoHash,
    },
    AnnouncePeer {
        info_hash: InfoHash,
        port: u16,
        implied_port: bool,
        token: Vec<u8>,
    },
}

impl Query {
    pub fn method(&self) -> &'static str {
        match self {
            Query::Ping => "ping",
            Query::FindNode { .. } => "find_node",
            Query::GetPeers { .. } => "get_peers",
            Query::AnnouncePeer { .. } => "announce_peer",
        }
    }
}

/// Every response shape in one: the method is known from the query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub id: NodeId,
    pub nodes: Vec<NodeInfo>,
    pub values: Vec<SocketAddr>,
    pub token: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Query { id: NodeId, query: Query },
    Response(Response),
    Error { code: i64, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Transaction id, echoed by the answer.
    pub t: Vec<u8>,
    /// Client version (`v`), when sent.
    pub v: Option<Vec<u8>>,
    /// BEP-43 read-only node: do not add it to routing tables.
    pub read_only: bool,
    pub body: Body,
}

pub const GENERIC_ERROR: i64 = 201;
pub const SERVER_ERROR: i64 = 202;
pub const PROTOCOL_ERROR: i64 = 203;
pub const METHOD_UNKNOWN: i64 = 204;

/// Why a packet was not a message; `t` is set when an error reply can be
/// addressed (it was a query with a transaction id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KRPC error {code}: {msg}")]
pub struct KrpcError {
    pub t: Option<Vec<u8>>,
    pub code: i64,
    pub msg: &'static str,
}

/// Longest transaction id and token we take; real ones are 2–8 bytes.
const MAX_T: usize = 64;
const MAX_TOKEN: usize = 64;
/// Most peers taken from one `values` list.
pub const MAX_VALUES: usize = 200;

/// KRPC packets are small and shallow.
const KRPC_LIMITS: Limits = Limits {
    max_depth: 8,
    max_tokens: 4096,
    require_sorted_keys: false,
    allow_trailing: false,
};

fn id20(v: Option<&Value<'_>>) -> Option<[u8; 20]> {
    v.and_then(Value::as_bytes).and_then(|b| b.try_into().ok())
}

/// A protocol error, answered to `t` when that is known.
fn bad(t: Option<&[u8]>, msg: &'static str) -> KrpcError {
    KrpcError {
        t: t.map(<[u8]>::to_vec),
        code: PROTOCOL_ERROR,
        msg,
    }
}

pub fn decode(buf: &[u8]) -> Result<Message, KrpcError> {
    let (v, _) = bencode::decode_with(buf, KRPC_LIMITS).map_err(|_| bad(None, "not bencode"))?;
    if v.as_dict().is_none() {
        return Err(bad(None, "not a dictionary"));
    }
    let t = v
        .get("t")
        .and_then(Value::as_bytes)
        .filter(|t| t.len() <= MAX_T)
        .ok_or(bad(None, "missing transaction id"))?;
    let version = v.get("v").and_then(Value::as_bytes).map(<[u8]>::to_vec);
    let read_only = v.get("ro").and_then(Value::as_int) == Some(1);
    let body = match v.get("y").and_then(Value::as_bytes) {
        Some(b"q") => decode_query(&v, t)?,
        Some(b"r") => decode_response(&v)?,
        Some(b"e") => decode_error(&v),
        _ => return Err(bad(None, "unknown message type")),
    };
    Ok(Message {
        t: t.to_vec(),
        v: version,
        read_only,
        body,
    })
}

/// `y=q`: the method and its arguments; errors carry `t` so the querier
/// can be told.
fn decode_query(v: &Value<'_>, t: &[u8]) -> Result<Body, KrpcError> {
    let method = v
        .get("q")
        .and_then(Value::as_bytes)
        .ok_or(bad(Some(t), "missing method"))?;
    let a = v
        .get("a")
        .filter(|a| a.as_dict().is_some())
        .ok_or(bad(Some(t), "missing arguments"))?;
    let id = NodeId(id20(a.get("id")).ok_or(bad(Some(t), "invalid id"))?);
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: NodeId(id20(a.get("target")).ok_or(bad(Some(t), "invalid target"))?),
        },
        b"get_peers" => Query::GetPeers {
            info_hash: InfoHash(id20(a.get("info_hash")).ok_or(bad(Some(t), "invalid info_hash"))?),
        },
        b"announce_peer" => decode_announce(a, t)?,
        _ => {
            return Err(KrpcError {
                t: Some(t.to_vec()),
                code: METHOD_UNKNOWN,
                msg: "method unknown",
            })
        }
    };
    Ok(Body::Query { id, query })
}

/// announce_peer's arguments `a`.
fn decode_announce(a: &Value<'_>, t: &[u8]) -> Result<Query, KrpcError> {
    let info_hash = InfoHash(id20(a.get("info_hash")).ok_or(bad(Some(t), "invalid info_hash"))?);
    let implied_port = a.get("implied_port").and_then(Value::as_int) == Some(1);
    let port = a.get("port").and_then(Value::as_int);
    // With implied_port the source port counts and `port` may be anything;
    // it is kept as given when valid.
    let port = match (implied_port, port.map(u16::try_from)) {
        (_, Some(Ok(p))) if p != 0 => p,
        (true, _) => 0,
        _ => return Err(bad(Some(t), "invalid port")),
    };
    let token = a
        .get("token")
        .and_then(Value::as_bytes)
        .filter(|k| k.len() <= MAX_TOKEN)
        .ok_or(bad(Some(t), "invalid token"))?
        .to_vec();
    Ok(Query::AnnouncePeer {
        info_hash,
        port,
        implied_port,
        token,
    })
}

/// `y=r`: one shape for every method; unusable entries are skipped.
fn decode_response(v: &Value<'_>) -> Result<Body, KrpcError> {
    let r = v
        .get("r")
        .filter(|r| r.as_dict().is_some())
        .ok_or(bad(None, "missing response"))?;
    let id = NodeId(id20(r.get("id")).ok_or(bad(None, "invalid id"))?);
    let nodes = r
        .get("nodes")
        .and_then(Value::as_bytes)
        .map(parse_nodes)
        .unwrap_or_default();
    let values = r
        .get("values")
        .and_then(Value::as_list)
        .unwrap_or_default()
        .iter()
        .filter_map(Value::as_bytes)
        .filter_map(parse_peer)
        .take(MAX_VALUES)
        .collect();
    let token = r
        .get("token")
        .and_then(Value::as_bytes)
        .filter(|k| k.len() <= MAX_TOKEN)
        .map(<[u8]>::to_vec);
    Ok(Body::Response(Response {
        id,
        nodes,
        values,
        token,
    }))
}

/// `y=e`: a malformed error list still reads as a generic error.
fn decode_error(v: &Value<'_>) -> Body {
    let e = v.get("e").and_then(Value::as_list).unwrap_or_default();
    let code = e.first().and_then(Value::as_int).unwrap_or(GENERIC_ERROR);
    let message = e.get(1).and_then(Value::as_bytes).unwrap_or_default();
    Body::Error {
        code,
        message: String::from_utf8_lossy(message).into_owned(),
    }
}

/// Compact node info; a ragged tail is ignored.
pub fn parse_nodes(b: &[u8]) -> Vec<NodeInfo> {
    compact::decode_nodes_v4(b)
        .map(|(id, addr)| NodeInfo {
            id: NodeId(id),
            addr,
        })
        .collect()
}

/// A `values` entry: only a 6-byte (IPv4) peer counts.
fn parse_peer(b: &[u8]) -> Option<SocketAddr> {
    (b.len() == compact::V4_LEN)
        .then(|| compact::decode_peer(b))
        .flatten()
}

/// Canonical encoding (keys in sorted order at every level).
pub fn encode(m: &Message, out: &mut Vec<u8>) {
    let mut d = Dict::with_capacity(128);
    match &m.body {
        Body::Query { id, query } => {
            d.dict("a", &query_args(id, query))
                .bytes("q", query.method());
        }
        Body::Response(r) => {
            d.dict("r", &response_dict(r));
        }
        Body::Error { code, message } => {
            let mut e = List::new();
            e.int(*code).bytes(message);
            d.list("e", &e);
        }
    }
    if m.read_only {
        d.int("ro", 1);
    }
    d.bytes("t", &m.t);
    if let Some(v) = &m.v {
        d.bytes("v", v);
    }
    d.bytes(
        "y",
        match m.body {
            Body::Query { .. } => "q",
            Body::Response(_) => "r",
            Body::Error { .. } => "e",
        },
    );
    d.write(out);
}

/// A query's `a` dictionary.
fn query_args(id: &NodeId, query: &Query) -> Dict {
    let mut a = Dict::new();
    a.bytes("id", id.0);
    match query {
        Query::Ping => {}
        Query::FindNode { target } => {
            a.bytes("target", target.0);
        }
        Query::GetPeers { info_hash } => {
            a.bytes("info_hash", info_hash.0);
        }
        Query::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        } => {
            a.int("implied_port", i64::from(*implied_port))
                .bytes("info_hash", info_hash.0)
                .int("port", i64::from(*port))
                .bytes("token", token);
        }
    }
    a
}

/// A response's `r` dictionary: compact nodes, and IPv4 peers only.
fn response_dict(r: &Response) -> Dict {
    let mut rd = Dict::new();
    rd.bytes("id", r.id.0);
    if !r.nodes.is_empty() {
        let mut b = Vec::with_capacity(compact::NODE_V4_LEN * r.nodes.len());
        for n in &r.nodes {
            compact::encode_node_v4(&n.id.0, &n.addr, &mut b);
        }
        rd.bytes("nodes", b);
    }
    if let Some(t) = &r.token {
        rd.bytes("token", t);
    }
    let mut values = List::new();
    for a in r.values.iter().filter_map(|a| match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }) {
        let mut b = Vec::with_capacity(compact::V4_LEN);
        compact::encode_v4(a, &mut b);
        values.bytes(b);
    }
    if !values.is_empty() {
        rd.list("values", &values);
    }
    rd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: &Message) {
        let mut out = Vec::new();
        encode(m, &mut out);
        // Our encoding is canonical: the strict decoder takes it.
        bencode::decode(&out).expect("canonical");
        assert_eq!(&decode(&out).unwrap(), m);
    }

    #[test]
    fn bep5_examples_decode() {
        let ping = decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe").unwrap();
        assert_eq!(ping.t, b"aa");
        assert_eq!(
            ping.body,
            Body::Query {
                id: NodeId(*b"abcdefghij0123456789"),
                query: Query::Ping
            }
        );
        let ap = decode(b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe").unwrap();
        assert!(matches!(
            ap.body,
            Body::Query {
                query: Query::AnnouncePeer {
                    implied_port: true,
                    ..
                },
                ..
            }
        ));
        let e = decode(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee").unwrap();
        assert_eq!(
            e.body,
            Body::Error {
                code: 201,
                message: "A Generic Error Ocurred".into()
            }
        );
    }

    #[test]
    fn every_shape_round_trips() {
        let id = NodeId([3; 20]);
        let node = NodeInfo {
            id: NodeId([9; 20]),
            addr: "127.0.0.5:6881".parse().unwrap(),
        };
        let queries = [
            Query::Ping,
            Query::FindNode {
                target: NodeId([1; 20]),
            },
            Query::GetPeers {
                info_hash: InfoHash([2; 20]),
            },
            Query::AnnouncePeer {
                info_hash: InfoHash([2; 20]),
                port: 6881,
                implied_port: false,
                token: b"tok".to_vec(),
            },
        ];
        for q in queries {
            round_trip(&Message {
                t: b"xy".to_vec(),
                v: Some(b"XR01".to_vec()),
                read_only: false,
                body: Body::Query { id, query: q },
            });
        }
        round_trip(&Message {
            t: vec![0, 1],
            v: None,
            read_only: true,
            body: Body::Response(Response {
                id,
                nodes: vec![node; 8],
                values: vec!["127.0.0.9:1".parse().unwrap()],
                token: Some(b"secret".to_vec()),
            }),
        });
        round_trip(&Message {
            t: vec![7],
            v: None,
            read_only: false,
            body: Body::Error {
                code: PROTOCOL_ERROR,
                message: "bad token".into(),
            },
        });
    }

    #[test]
    fn malformed_queries_name_their_error() {
        let err = |b: &[u8]| decode(b).unwrap_err();
        assert_eq!(err(b"garbage").t, None);
        assert_eq!(err(b"le").msg, "not a dictionary");
        let e = err(b"d1:ad2:id20:abcdefghij0123456789e1:q4:pong1:t2:aa1:y1:qe");
        assert_eq!((e.code, e.t.as_deref()), (METHOD_UNKNOWN, Some(&b"aa"[..])));
        let e = err(b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe");
        assert_eq!((e.code, e.msg), (PROTOCOL_ERROR, "invalid id"));
        let e = err(b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti0e5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe");
        assert_eq!(e.msg, "invalid port");
        assert_eq!(err(b"d1:t2:aa1:y1:qe").msg, "missing method");
        assert_eq!(err(b"d1:y1:qe").msg, "missing transaction id");
    }

    #[test]
    fn distance_and_prefix() {
        let a = NodeId([0; 20]);
        let mut b = [0; 20];
        b[1] = 0x10;
        let b = NodeId(b);
        assert_eq!(a.common_prefix(&b), 11);
        assert_eq!(a.common_prefix(&a), 160);
        assert_eq!(a.distance(&b)[1], 0x10);
    }
}
